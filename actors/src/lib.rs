//! Hanzo Twin's actors and the messages they speak.
//!
//! Every twin runs as a [`twin::TwinActor`] owning one engine simulation, supervised
//! by its node's [`host::TwinHost`]. Agents embedded in the same process drive twins
//! through [`TwinNode`] with typed messages; the HTTP API uses the same handle.

pub mod checkpoints;
pub mod children;
pub mod client;
pub mod compare;
pub mod definition;
pub mod direct;
pub mod error;
pub mod gym;
pub mod host;
pub mod inspector;
pub mod jobs;
pub mod live_topology;
pub mod protocol;
pub mod record;
pub mod remote;
pub mod render;
pub mod scenes;
pub mod store;
pub mod sync;
pub mod twin;

pub use client::TwinNode;
pub use definition::{
    DEFAULT_ORGANIZATION, DefinitionError, Format, InfrastructureSpec, Name, TwinDefinition,
    TwinType,
};
pub use direct::RouteCache;
pub use error::TwinError;
pub use host::{HostArgs, HostConfig, HostMsg, Rebalanced, TwinHost};
pub use protocol::{
    Admission, ChaosRequest, Fault, ForkOptions, InfraStatus, JointCommandEntry, LEAST_LOADED,
    Scope, StartOptions, StepReport, SyncStatus, TwinFilter, TwinMsg, TwinOp, TwinOpReply, TwinRef,
    TwinRuntimeInfo, TwinSnapshot,
};
pub use record::{Clock, Lifecycle, TwinId, TwinRecord, TwinResource, TwinStatus};
pub use remote::{ClusterLink, Placement, TwinReply, TwinRequest};
pub use scenes::{SceneFetcher, SceneLoader, SceneReader, in_process_scene_reader};
pub use store::{CheckpointStore, StoreError, TwinStore};

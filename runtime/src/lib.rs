//! Hanzo Twin: a node runtime for live, forkable digital twins.
//!
//! A node runs a ractor supervision tree: a root supervisor, the twin host under
//! it, and one actor per twin owning an engine simulation. [`Node::start`] embeds
//! a node in any Rust program; [`Node::serve`] adds the HTTP API and metrics;
//! the `hanzo-twin` binary wraps both with a CLI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use hanzo_twin::{Node, NodeConfig};
//! use hanzo_twin::actors::{Format, StartOptions, TwinDefinition};
//!
//! let node = Node::start(NodeConfig::default()).await?;
//! let twins = node.twins();
//! let text = std::fs::read_to_string("configs/twins/robot-arm.yaml")?;
//! let twin = twins.create(TwinDefinition::parse(&text, Format::Yaml)?).await?;
//! twins.start(&twin.id.to_string(), StartOptions::default()).await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cli;
pub mod config;
#[cfg(feature = "kubernetes")]
pub mod kube_topology;
pub mod node;
pub mod objects;
pub mod scene_reader;
pub mod scenes;
pub mod store;
pub mod store_pg;
pub mod telemetry;
pub mod timeseries;

pub use config::NodeConfig;
pub use node::Node;

/// The actor protocol: the SDK of embedded agents.
pub use hanzo_twin_actors as actors;
/// The HTTP API: routes, the token guard, the training loop's bodies.
pub use hanzo_twin_api as api;
/// Cluster membership, placement, and the remote client of the SDK.
pub use hanzo_twin_cluster as cluster;
/// Engines, with the scene model they build from.
pub use hanzo_twin_engines as engines;
/// RL tasks and vectorized environments.
pub use hanzo_twin_gym as gym;

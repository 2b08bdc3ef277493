//! `TwinNode`: typed, async access to a node's twins through actor messages. The
//! HTTP API is built on it, and an embedded agent uses it directly — no HTTP in
//! between.

use crate::definition::Name;
use crate::definition::TwinDefinition;
use crate::error::TwinError;
use crate::protocol::{
    Fault, ForkOptions, HostMsg, JointCommandEntry, Reply, Scope, StartOptions, StepReport,
    TwinFilter, TwinMsg, TwinRef, TwinRuntimeInfo,
};
use crate::record::{Clock, TwinRecord};
use hanzo_twin_engines::{JointCommand, Observation, SimState};
use ractor::ActorRef;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a cross-engine comparison may run before the caller gives up.
pub const COMPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long building a batch of RL environments may take.
pub const GYM_CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A handle on a node's twin host. Cheap to clone; every call has a timeout.
/// When the node's supervisor restarts the host, it swaps the new one in here,
/// so handles stay valid.
///
/// A handle sees every twin on the node; [`TwinNode::scoped`] narrows it to one
/// organization, which the host then enforces on every request.
#[derive(Clone)]
pub struct TwinNode {
    host: Arc<RwLock<ActorRef<HostMsg>>>,
    timeout: Duration,
    scope: Scope,
}

impl TwinNode {
    pub fn new(host: ActorRef<HostMsg>, timeout: Duration) -> TwinNode {
        TwinNode {
            host: Arc::new(RwLock::new(host)),
            timeout,
            scope: Scope::Node,
        }
    }

    /// The same node with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> TwinNode {
        TwinNode {
            timeout,
            ..self.clone()
        }
    }

    /// The same node as `organization` sees it: its twins only; any other reads
    /// as not found, and creating twins elsewhere is refused.
    pub fn scoped(&self, organization: Name) -> TwinNode {
        TwinNode {
            scope: Scope::Organization(organization),
            ..self.clone()
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn twin_ref(&self, twin: &str) -> TwinRef {
        TwinRef {
            key: twin.to_string(),
            scope: self.scope.clone(),
        }
    }

    pub fn host(&self) -> ActorRef<HostMsg> {
        // The lock only guards a swap of one reference; a poisoned one still
        // holds a valid reference.
        self.host.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Points this handle (and its clones) at a new host actor.
    pub fn replace_host(&self, host: ActorRef<HostMsg>) {
        *self.host.write().unwrap_or_else(|p| p.into_inner()) = host;
    }

    async fn ask<T: Send + 'static>(
        &self,
        what: &str,
        build: impl FnOnce(Reply<T>) -> HostMsg,
    ) -> Result<T, TwinError> {
        self.ask_within(what, self.timeout, build).await
    }

    async fn ask_within<T: Send + 'static>(
        &self,
        what: &str,
        timeout: std::time::Duration,
        build: impl FnOnce(Reply<T>) -> HostMsg,
    ) -> Result<T, TwinError> {
        match self.host().call(build, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(TwinError::Timeout {
                id: what.to_string(),
                what: "the request",
                timeout_ms: timeout.as_millis() as u64,
            }),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                Err(TwinError::Unavailable(what.to_string()))
            }
        }
    }

    /// Sends `msg` to the twin's actor through the host.
    async fn route<T: Send + 'static>(
        &self,
        twin: &str,
        build: impl FnOnce(Reply<T>) -> TwinMsg,
    ) -> Result<T, TwinError> {
        let target = self.twin_ref(twin);
        self.ask(twin, move |reply| HostMsg::Route {
            twin: target,
            msg: build(reply),
        })
        .await
    }

    pub async fn create(&self, definition: TwinDefinition) -> Result<TwinRecord, TwinError> {
        let scope = self.scope.clone();
        self.ask("create", |reply| HostMsg::Create {
            definition,
            scope,
            reply,
        })
        .await
    }

    /// Runs one scene and one command sequence on several engines and reports
    /// how far each trajectory drifts from the first engine's. Waits up to
    /// [`COMPARE_TIMEOUT`].
    pub async fn compare_engines(
        &self,
        request: crate::protocol::CompareRequest,
    ) -> Result<hanzo_twin_engines::compare::CompareReport, TwinError> {
        let scope = self.scope.clone();
        self.ask_within("engine comparison", COMPARE_TIMEOUT, |reply| {
            HostMsg::CompareEngines {
                request,
                scope,
                reply,
            }
        })
        .await
    }

    /// Builds a batch of RL environments (`owner` is the creator's subject).
    /// Loading scenes and engines may take a while: waits up to
    /// [`GYM_CREATE_TIMEOUT`].
    pub async fn gym_create(
        &self,
        request: crate::gym::GymEnvRequest,
        owner: &str,
    ) -> Result<crate::gym::GymEnvInfo, TwinError> {
        let scope = self.scope.clone();
        let owner = owner.to_string();
        self.ask_within("gym environment creation", GYM_CREATE_TIMEOUT, |reply| {
            HostMsg::CreateGym {
                request,
                owner,
                scope,
                reply,
            }
        })
        .await
    }

    pub async fn gym_list(&self) -> Result<Vec<crate::gym::GymEnvInfo>, TwinError> {
        let scope = self.scope.clone();
        self.ask("gym environments", |reply| HostMsg::ListGym {
            scope,
            reply,
        })
        .await
    }

    pub async fn gym_get(&self, id: &str) -> Result<crate::gym::GymEnvInfo, TwinError> {
        let (id, scope) = (id.to_string(), self.scope.clone());
        self.ask("gym environment", |reply| HostMsg::GetGym {
            id,
            scope,
            reply,
        })
        .await
    }

    pub async fn gym_delete(&self, id: &str) -> Result<(), TwinError> {
        let (id, scope) = (id.to_string(), self.scope.clone());
        self.ask("gym environment", |reply| HostMsg::DeleteGym {
            id,
            scope,
            reply,
        })
        .await
    }

    /// Resets the batch's environments (those in `mask`, or all).
    pub async fn gym_reset(
        &self,
        id: &str,
        seed: Option<u64>,
        mask: Option<Vec<bool>>,
    ) -> Result<hanzo_twin_engines::gym::VecOutput, TwinError> {
        self.gym_route(id, |reply| crate::gym::GymMsg::Reset { seed, mask, reply })
            .await
    }

    /// Steps every environment of the batch with its row of `actions`.
    pub async fn gym_step(
        &self,
        id: &str,
        actions: Vec<f32>,
    ) -> Result<hanzo_twin_engines::gym::VecOutput, TwinError> {
        self.gym_route(id, |reply| crate::gym::GymMsg::Step { actions, reply })
            .await
    }

    /// Asynchronous: queues steps of `env_ids`.
    pub async fn gym_send(
        &self,
        id: &str,
        actions: Vec<f32>,
        env_ids: Vec<usize>,
    ) -> Result<(), TwinError> {
        self.gym_route(id, |reply| crate::gym::GymMsg::Send {
            actions,
            env_ids,
            reply,
        })
        .await
    }

    /// Asynchronous: queues a reset of every environment.
    pub async fn gym_send_reset(&self, id: &str, seed: Option<u64>) -> Result<(), TwinError> {
        self.gym_route(id, |reply| crate::gym::GymMsg::SendReset { seed, reply })
            .await
    }

    /// Asynchronous: the next `count` environments to finish.
    pub async fn gym_recv(
        &self,
        id: &str,
        count: usize,
    ) -> Result<hanzo_twin_engines::gym::VecOutput, TwinError> {
        self.gym_route(id, |reply| crate::gym::GymMsg::Recv { count, reply })
            .await
    }

    async fn gym_route<T: Send + 'static>(
        &self,
        id: &str,
        build: impl FnOnce(Reply<T>) -> crate::gym::GymMsg,
    ) -> Result<T, TwinError> {
        let (key, scope) = (id.to_string(), self.scope.clone());
        self.ask(id, move |reply| HostMsg::RouteGym {
            id: key,
            scope,
            msg: build(reply),
        })
        .await
    }

    /// The node's supervision tree, as this handle's scope sees it.
    pub async fn tree(&self) -> Result<crate::inspector::ActorNode, TwinError> {
        let scope = self.scope.clone();
        self.ask("supervision tree", |reply| HostMsg::Tree { scope, reply })
            .await
    }

    /// Events that change the supervision tree, from now on (every
    /// organization's: filter by `organization`).
    pub async fn watch_tree(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<crate::inspector::TreeEvent>, TwinError> {
        self.ask("supervision tree", |reply| HostMsg::WatchTree { reply })
            .await
    }

    pub async fn get(&self, twin: &str) -> Result<TwinRecord, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Get { twin: t, reply })
            .await
    }

    pub async fn list(&self, filter: TwinFilter) -> Result<Vec<TwinRecord>, TwinError> {
        let scope = self.scope.clone();
        self.ask("list", |reply| HostMsg::List {
            filter,
            scope,
            reply,
        })
        .await
    }

    pub async fn update(
        &self,
        twin: &str,
        patch: serde_json::Value,
    ) -> Result<TwinRecord, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Update {
            twin: t,
            patch,
            reply,
        })
        .await
    }

    pub async fn delete(&self, twin: &str) -> Result<(), TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Delete { twin: t, reply })
            .await
    }

    pub async fn start(&self, twin: &str, options: StartOptions) -> Result<TwinRecord, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Start {
            twin: t,
            options,
            reply,
        })
        .await
    }

    pub async fn stop(&self, twin: &str) -> Result<TwinRecord, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Stop { twin: t, reply })
            .await
    }

    /// Forks the twin's current state into a new ephemeral twin.
    pub async fn fork(&self, twin: &str, options: ForkOptions) -> Result<TwinRecord, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Fork {
            twin: t,
            options,
            reply,
        })
        .await
    }

    /// The twin's complete state: live when running, else its last checkpoint.
    pub async fn checkpoint(&self, twin: &str) -> Result<SimState, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Checkpoint { twin: t, reply })
            .await
    }

    pub async fn restore(&self, twin: &str, state: SimState) -> Result<TwinRecord, TwinError> {
        let t = self.twin_ref(twin);
        self.ask(twin, |reply| HostMsg::Restore {
            twin: t,
            state,
            reply,
        })
        .await
    }

    pub async fn step(&self, twin: &str, steps: u64) -> Result<StepReport, TwinError> {
        self.route(twin, |reply| TwinMsg::Step { steps, reply })
            .await
    }

    pub async fn command(
        &self,
        twin: &str,
        commands: Vec<JointCommandEntry>,
    ) -> Result<(), TwinError> {
        self.route(twin, |reply| TwinMsg::Command { commands, reply })
            .await
    }

    /// Commands one joint.
    pub async fn command_joint(
        &self,
        twin: &str,
        joint: &str,
        command: JointCommand,
    ) -> Result<(), TwinError> {
        let entry = JointCommandEntry {
            joint: joint.to_string(),
            command,
        };
        self.command(twin, vec![entry]).await
    }

    pub async fn observe(&self, twin: &str, path: &str) -> Result<Observation, TwinError> {
        let path = path.to_string();
        self.route(twin, |reply| TwinMsg::Observe { path, reply })
            .await
    }

    pub async fn set_clock(&self, twin: &str, clock: Clock) -> Result<(), TwinError> {
        self.route(twin, |reply| TwinMsg::SetClock { clock, reply })
            .await
    }

    pub async fn info(&self, twin: &str) -> Result<TwinRuntimeInfo, TwinError> {
        self.route(twin, |reply| TwinMsg::Info { reply }).await
    }

    /// The run recorded so far, with the scene it ran in.
    pub async fn recording(
        &self,
        twin: &str,
    ) -> Result<
        (
            Arc<hanzo_twin_engines::SceneModel>,
            hanzo_twin_engines::recording::Recording,
        ),
        TwinError,
    > {
        self.route(twin, |reply| TwinMsg::Recording { reply }).await
    }

    pub async fn inject_fault(&self, twin: &str, fault: Fault) -> Result<(), TwinError> {
        self.route(twin, |reply| TwinMsg::InjectFault { fault, reply })
            .await
    }

    /// Stops every twin with a final checkpoint; they resume when the node starts
    /// again.
    pub async fn shutdown(&self) -> Result<(), TwinError> {
        self.ask("shutdown", |reply| HostMsg::Shutdown { reply })
            .await
    }
}

//! The messages twins and their host understand. This is the SDK an embedded agent
//! links: every request is a typed message with a typed reply.

use crate::definition::{Name, TwinDefinition};
use crate::error::TwinError;
use crate::record::{Clock, TwinId, TwinRecord};
use hanzo_twin_engines::recording::Recording;
use hanzo_twin_engines::{JointCommand, Observation, SceneModel, SimState};
use ractor::{ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub type Reply<T> = RpcReplyPort<Result<T, TwinError>>;

/// A command for one joint, by prim path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointCommandEntry {
    pub joint: String,
    #[serde(flatten)]
    pub command: JointCommand,
}

/// Where a running twin is after a step request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Simulated seconds since the scene was loaded.
    pub time: f64,
    /// Steps since the scene was loaded.
    pub step: u64,
    /// Steps this request took.
    pub steps_taken: u64,
}

/// What a running twin's actor reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinRuntimeInfo {
    pub time: f64,
    pub step: u64,
    pub clock: Clock,
    /// Steps the real-time clock had to skip because the engine fell behind.
    pub skipped_steps: u64,
    /// Seconds of wall time this actor has been up.
    pub uptime_s: f64,
}

/// A running twin as `GET /v1/twins/{id}/state` shows it, answered by the
/// twin's actor alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinSnapshot {
    pub id: TwinId,
    pub name: String,
    pub engine: hanzo_twin_engines::EngineKind,
    pub clock: Clock,
    pub observation: Observation,
}

/// Faults an operator can inject into a twin to exercise supervision (chaos
/// engineering on the twin itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The twin's actor panics while handling the fault, as an engine bug would.
    Panic,
}

/// Messages to one twin's actor.
pub enum TwinMsg {
    /// Step `steps` times now, whatever the clock.
    Step {
        steps: u64,
        reply: Reply<StepReport>,
    },
    /// Apply joint commands; all are checked before any is applied.
    Command {
        commands: Vec<JointCommandEntry>,
        reply: Reply<()>,
    },
    /// Read an observation (`/` for everything).
    Observe {
        path: String,
        reply: Reply<Observation>,
    },
    /// Take the complete simulation state.
    GetState {
        reply: Reply<SimState>,
    },
    /// Replace the simulation state.
    SetState {
        state: SimState,
        reply: Reply<()>,
    },
    SetClock {
        clock: Clock,
        reply: Reply<()>,
    },
    Info {
        reply: Reply<TwinRuntimeInfo>,
    },
    InjectFault {
        fault: Fault,
        reply: Reply<()>,
    },
    /// The recorded run so far, with the scene it ran in.
    Recording {
        reply: Reply<(Arc<SceneModel>, Recording)>,
    },
    /// Who the twin is and everything it observes, in one message.
    Snapshot {
        reply: Reply<TwinSnapshot>,
    },
    /// From the host: the twin's definition was renamed.
    Renamed {
        name: String,
    },
    /// Internal: the clock's heartbeat; stale generations are ignored.
    Tick {
        generation: u64,
    },
    /// Internal: a checkpoint deferred by the wall-clock floor is due.
    CheckpointDue,
}

impl TwinMsg {
    /// Answers the request with `err` without handling it (the twin is not
    /// running, say). Ticks are dropped.
    pub fn reject(self, err: TwinError) {
        // A caller that stopped waiting is not an error here.
        match self {
            TwinMsg::Step { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::Command { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::Observe { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::GetState { reply } => drop(reply.send(Err(err))),
            TwinMsg::SetState { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::SetClock { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::Info { reply } => drop(reply.send(Err(err))),
            TwinMsg::InjectFault { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::Recording { reply } => drop(reply.send(Err(err))),
            TwinMsg::Snapshot { reply } => drop(reply.send(Err(err))),
            TwinMsg::Tick { .. } | TwinMsg::CheckpointDue | TwinMsg::Renamed { .. } => {}
        }
    }
}

/// Whose twins a request may see and touch. The host enforces it on every
/// message, so a twin outside the scope reads exactly like one that does not
/// exist: its existence does not leak.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every twin on the node: the node itself and agents embedded in it.
    Node,
    /// One organization's twins only.
    Organization(Name),
}

impl Scope {
    pub fn admits(&self, record: &TwinRecord) -> bool {
        match self {
            Scope::Node => true,
            Scope::Organization(org) => record.definition.organization() == org.as_str(),
        }
    }
}

/// A twin as a request names it: an id, or a name unique within what `scope`
/// sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinRef {
    pub key: String,
    pub scope: Scope,
}

impl std::fmt::Display for TwinRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

/// Which twins to list, and which page of them: lists are in id order
/// (ids sort by creation time), `after` the last id of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinFilter {
    pub organization: Option<String>,
    /// Twins carrying every one of these tags.
    pub tags: Vec<String>,
    pub engine: Option<hanzo_twin_engines::EngineKind>,
    /// Only twins with a greater id (the cursor of the next page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<TwinId>,
    /// At most this many (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl TwinFilter {
    /// Sorts `records` by id and keeps this filter's page of them.
    pub fn page(&self, records: &mut Vec<TwinRecord>) {
        records.sort_by_key(|r| r.id);
        if let Some(limit) = self.limit {
            records.truncate(limit);
        }
    }

    pub fn matches(&self, r: &TwinRecord) -> bool {
        let d = &r.definition;
        self.after.is_none_or(|after| r.id > after)
            && self
                .organization
                .as_deref()
                .is_none_or(|o| d.organization() == o)
            && self.engine.is_none_or(|e| d.engine.kind == e)
            && self
                .tags
                .iter()
                .all(|t| d.tags.iter().any(|have| have.as_str() == t))
    }
}

/// Options of a start request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartOptions {
    /// How the clock runs; real time unless asked otherwise.
    #[serde(default)]
    pub clock: Clock,
    /// Start from the scene's initial state instead of the last checkpoint.
    #[serde(default)]
    pub reset: bool,
}

/// Options of a fork request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkOptions {
    /// Name of the fork; `<parent>-fork-<n>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The fork's clock. Paused by default, so an agent decides when it moves.
    #[serde(default = "paused")]
    pub clock: Clock,
    /// Where the fork runs: a node id, or `least_loaded`; the parent's node
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `ForkOptions::node` asking for the node that runs the fewest twins.
pub const LEAST_LOADED: &str = "least_loaded";

fn paused() -> Clock {
    Clock::Paused
}

/// Messages to a node's twin host, the one entry point for twins on a node.
// Messages are moved into the mailbox once; boxing the large definitions would
// add an allocation per request for no gain.
#[allow(clippy::large_enum_variant)]
pub enum HostMsg {
    /// A definition without an organization gets the scope's; one naming
    /// another organization than the scope's is refused.
    Create {
        definition: TwinDefinition,
        scope: Scope,
        reply: Reply<TwinRecord>,
    },
    /// Internal: a create whose scene was read off the host's loop.
    Admit {
        checked: Result<TwinDefinition, TwinError>,
        reply: Reply<TwinRecord>,
    },
    Get {
        twin: TwinRef,
        reply: Reply<TwinRecord>,
    },
    List {
        filter: TwinFilter,
        scope: Scope,
        reply: Reply<Vec<TwinRecord>>,
    },
    /// Apply a JSON merge patch (RFC 7396) to the definition.
    Update {
        twin: TwinRef,
        patch: serde_json::Value,
        reply: Reply<TwinRecord>,
    },
    Delete {
        twin: TwinRef,
        reply: Reply<()>,
    },
    Start {
        twin: TwinRef,
        options: StartOptions,
        reply: Reply<TwinRecord>,
    },
    /// Internal: a start whose scene and checkpoint were read off the
    /// host's loop.
    Launch {
        id: TwinId,
        prepared: Result<crate::host::Launch, TwinError>,
        reply: Reply<TwinRecord>,
    },
    Stop {
        twin: TwinRef,
        reply: Reply<TwinRecord>,
    },
    Fork {
        twin: TwinRef,
        options: ForkOptions,
        reply: Reply<TwinRecord>,
    },
    /// Load a checkpoint into a twin: into the running simulation, or as the state
    /// the next start resumes from.
    Restore {
        twin: TwinRef,
        state: SimState,
        reply: Reply<TwinRecord>,
    },
    /// The latest checkpoint: live state when running, the stored one otherwise.
    Checkpoint {
        twin: TwinRef,
        reply: Reply<SimState>,
    },
    /// Deliver `msg` to the twin's actor, or reject it if the twin is not running.
    Route {
        twin: TwinRef,
        msg: TwinMsg,
    },
    /// The running twin's actor, for a caller to message directly
    /// ([`crate::direct`]); an error when it is not running.
    Resolve {
        twin: TwinRef,
        reply: Reply<ActorRef<TwinMsg>>,
    },
    /// Stop every twin with a final checkpoint, keeping their status so the next
    /// start of the node resumes them; answers once checkpoints are durable.
    Shutdown {
        reply: Reply<()>,
    },
    /// Run one scene and one command sequence on several engines and report
    /// how their trajectories diverge. Answers when the runs finish; the host
    /// goes on serving meanwhile.
    CompareEngines {
        request: crate::compare::CompareRequest,
        scope: Scope,
        reply: Reply<hanzo_twin_engines::compare::CompareReport>,
    },
    /// Builds a batch of RL environments and spawns its actor.
    CreateGym {
        request: crate::gym::GymEnvRequest,
        /// Who creates it (their subject), for own-only rights.
        owner: String,
        scope: Scope,
        reply: Reply<crate::gym::GymEnvInfo>,
    },
    ListGym {
        scope: Scope,
        reply: Reply<Vec<crate::gym::GymEnvInfo>>,
    },
    /// The batch's actor and description, for a caller to drive it.
    GetGym {
        id: String,
        scope: Scope,
        reply: Reply<(ActorRef<crate::gym::GymMsg>, crate::gym::GymEnvInfo)>,
    },
    DeleteGym {
        id: String,
        scope: Scope,
        reply: Reply<()>,
    },
    /// A gym batch's actor is up (from its builder).
    GymStarted {
        actor: ActorRef<crate::gym::GymMsg>,
        info: crate::gym::GymEnvInfo,
        messages: crate::inspector::MessageCount,
    },
    /// The node's supervision tree now.
    Tree {
        scope: Scope,
        reply: Reply<crate::inspector::ActorNode>,
    },
    /// Events that change the tree, from now on.
    WatchTree {
        reply: Reply<tokio::sync::broadcast::Receiver<crate::inspector::TreeEvent>>,
    },
    /// What a fork of the twin starts from: the parent's record and state
    /// (live when it runs, else its last checkpoint), for a fork on another node.
    ForkSource {
        twin: TwinRef,
        reply: Reply<(TwinRecord, SimState)>,
    },
    /// Spawn a fork of `parent` (a twin on another node) here from `state`.
    ForkFrom {
        parent: Box<TwinRecord>,
        options: ForkOptions,
        state: SimState,
        reply: Reply<TwinRecord>,
    },
    /// Take over a running fork from another node, keeping its id.
    AdoptFork {
        record: Box<TwinRecord>,
        clock: Clock,
        state: SimState,
        reply: Reply<TwinRecord>,
    },
    /// Stored twins (matching `filter`, as `scope` sees them) that no node in
    /// `members` holds: released mid hand-off, or held by a node that is gone.
    ListUnheld {
        filter: TwinFilter,
        members: Vec<String>,
        scope: Scope,
        reply: Reply<Vec<TwinRecord>>,
    },
    /// How many twins run on this node.
    Load {
        reply: Reply<usize>,
    },
    /// Bring what this node holds in line with placement: hand off up to
    /// `max_moves` twins it no longer owns (checkpoint, stop, release), and
    /// take over the twins it owns that no live node holds.
    Rebalance {
        max_moves: usize,
        reply: Reply<Rebalanced>,
    },
}

impl HostMsg {
    /// The twin a request names, if it names one.
    pub fn twin_ref(&self) -> Option<&TwinRef> {
        match self {
            HostMsg::Get { twin, .. }
            | HostMsg::Update { twin, .. }
            | HostMsg::Delete { twin, .. }
            | HostMsg::Start { twin, .. }
            | HostMsg::Stop { twin, .. }
            | HostMsg::Fork { twin, .. }
            | HostMsg::Restore { twin, .. }
            | HostMsg::Checkpoint { twin, .. }
            | HostMsg::Route { twin, .. }
            | HostMsg::Resolve { twin, .. }
            | HostMsg::ForkSource { twin, .. } => Some(twin),
            _ => None,
        }
    }

    /// Answers a request naming a twin with `err`, unhandled.
    pub fn refuse(self, err: TwinError) {
        // A caller that stopped waiting is not an error here.
        match self {
            HostMsg::Get { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Update { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Delete { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Start { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Stop { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Fork { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Restore { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Checkpoint { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Route { msg, .. } => msg.reject(err),
            HostMsg::Resolve { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::ForkSource { reply, .. } => drop(reply.send(Err(err))),
            other => {
                tracing::error!(
                    "refuse() called on a request that names no twin: {}",
                    std::any::type_name_of_val(&other)
                );
            }
        }
    }
}

/// What one [`HostMsg::Rebalance`] did.
#[derive(Default)]
pub struct Rebalanced {
    /// Lasting twins released for their new owner.
    pub released: Vec<TwinId>,
    /// Twins taken over.
    pub adopted: Vec<TwinId>,
    /// Forks stopped here, to be adopted by their new owner: they live in no
    /// store, so their state travels with them.
    pub forks: Vec<(TwinRecord, Clock, SimState)>,
}

/// Local only: never sent between nodes.
impl ractor::Message for HostMsg {}

/// Local only: never sent between nodes.
impl ractor::Message for TwinMsg {}

//! The messages twins and their host understand. This is the SDK an embedded agent
//! links: every request is a typed message with a typed reply.

use crate::definition::Name;
use crate::error::TwinError;
use crate::record::{Clock, TwinId, TwinRecord};
use hanzo_twin_engines::recording::Recording;
use hanzo_twin_engines::{JointCommand, Observation, SceneModel, SimState};
use ractor::{ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

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

/// Local only: never sent between nodes.
impl ractor::Message for TwinMsg {}

/// Calls an actor (a twin, a gym batch, the host) with a timeout, turning
/// every way it can fail into a `TwinError` about `id` a person can read.
pub(crate) async fn call_actor<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    id: impl std::fmt::Display,
    what: &'static str,
    timeout: Duration,
    build: impl FnOnce(Reply<T>) -> M,
) -> Result<T, TwinError> {
    match actor.call(build, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(ractor::rpc::CallResult::Timeout) => Err(TwinError::Timeout {
            id: id.to_string(),
            what,
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
            Err(TwinError::Unavailable(id.to_string()))
        }
    }
}

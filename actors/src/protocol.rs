//! The messages twins and their host understand. This is the SDK an embedded agent
//! links: every request is a typed message with a typed reply.

use crate::definition::Name;
use crate::error::TwinError;
use crate::record::{Clock, TwinId, TwinRecord};
use hanzo_twin_engines::recording::Recording;
use hanzo_twin_engines::{JointCommand, Observation, SceneModel, SimState};
use ractor::{ActorCell, ActorId, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type Reply<T> = RpcReplyPort<Result<T, TwinError>>;

/// A command for one joint, by prim path.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointCommandEntry {
    pub joint: String,
    #[serde(flatten)]
    pub command: JointCommand,
}

/// Where a running twin is after a step request.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Simulated seconds since the scene was loaded.
    pub time: f64,
    /// Steps since the scene was loaded.
    pub step: u64,
    /// Steps this request took.
    pub steps_taken: u64,
}

/// What a running twin's actor reports about itself.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinSnapshot {
    pub id: TwinId,
    pub name: String,
    pub engine: hanzo_twin_engines::EngineKind,
    pub clock: Clock,
    pub observation: Observation,
}

impl TwinSnapshot {
    /// The JSON body of `GET /v1/twins/{id}/state`: the snapshot with its
    /// observation's fields at the top level.
    pub fn to_state_json(&self) -> bytes::Bytes {
        let body = TwinStateBody {
            id: self.id,
            name: &self.name,
            engine: self.engine,
            clock: self.clock,
            time: self.observation.time,
            step: self.observation.step,
            bodies: &self.observation.bodies,
            joints: &self.observation.joints,
        };
        // Plain data (numbers, strings, enums): serializing it cannot fail.
        serde_json::to_vec(&body)
            .map(bytes::Bytes::from)
            .unwrap_or_default()
    }
}

/// The body of `GET /v1/twins/{id}/state`: a [`TwinSnapshot`] with its
/// observation's fields at the top level.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TwinStateBody<'a> {
    pub id: TwinId,
    pub name: &'a str,
    pub engine: hanzo_twin_engines::EngineKind,
    pub clock: Clock,
    /// Simulated seconds.
    pub time: f64,
    pub step: u64,
    pub bodies: &'a [hanzo_twin_engines::BodyObservation],
    pub joints: &'a [hanzo_twin_engines::JointObservation],
}

/// A twin's children: the actors it supervises ([`crate::children`] keeps
/// their restart state).
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, String>> + Send>>;

/// Spawns `actor` as a child under `supervisor`; a start that fails says
/// why in its own words.
pub fn spawn_child<A>(actor: A, args: A::Arguments, supervisor: ActorCell) -> SpawnFuture
where
    A: ractor::Actor,
{
    Box::pin(async move {
        ractor::Actor::spawn_linked(None, actor, args, supervisor)
            .await
            .map(|(actor, _)| actor.get_cell())
            .map_err(|e| match e {
                ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
                other => other.to_string(),
            })
    })
}

/// What a child needs from its twin when it is (re)spawned.
#[derive(Clone)]
pub struct ChildContext {
    pub twin: ActorRef<TwinMsg>,
    /// Link the child's actor to this cell (the twin's).
    pub supervisor: ActorCell,
    /// Bumped by the child for every message it handles.
    pub messages: crate::inspector::MessageCount,
}

/// How to spawn one child. A twin keeps the spec and spawns from it again on
/// every restart, so whatever must outlive a restart (counters, buffers) is
/// held by the spec, not by the child's actor.
pub trait ChildSpec: Send + Sync + 'static {
    /// Unique among the twin's children, e.g. `sync:0:mqtt`.
    fn name(&self) -> &str;
    /// `sync`, `publish`, `render`.
    fn kind(&self) -> &'static str;
    fn spawn(&self, context: ChildContext) -> SpawnFuture;
}

/// A child as the supervision tree shows it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq)]
pub struct ChildReport {
    pub name: String,
    pub kind: &'static str,
    #[schema(value_type = Option<String>)]
    pub actor_id: Option<ActorId>,
    /// `running`, `restarting`, `failed` or `stopped`.
    pub status: &'static str,
    pub restarts: u32,
    pub messages: u64,
    pub uptime_s: f64,
    pub handling_mean_us: Option<f64>,
    pub last_error: Option<String>,
}

impl ChildReport {
    pub fn tree_node(&self) -> crate::inspector::ActorNode {
        crate::inspector::ActorNode {
            actor_id: self.actor_id.map(|id| id.to_string()),
            name: self.name.clone(),
            kind: self.kind.to_string(),
            status: self.status.to_string(),
            target: self.last_error.clone(),
            restarts: self.restarts,
            messages: self.messages,
            uptime_s: Some(self.uptime_s),
            handling_mean_us: self.handling_mean_us,
            ..crate::inspector::ActorNode::default()
        }
    }
}

/// A measured or commanded value of a synced attribute.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SyncValue {
    Scalar(f64),
    Vector([f64; 3]),
    Pose {
        position: [f64; 3],
        orientation: [f64; 4],
    },
}

/// Something that happened to a twin's sync, as `GET /v1/twins/{id}/sync/history`
/// lists it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncEvent {
    /// Increases by one per event of the twin's run; the page cursor.
    pub seq: u64,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The source it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `connected`, `disconnected`, `refused`, `gap` (a reconnection after
    /// an outage, with its length), `unparsed`, `unmapped`, `drift`,
    /// `drift_cleared`, `recalibrated` or `recalibration_failed`.
    pub kind: String,
    pub detail: String,
    /// For a gap: seconds without a connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Repeats folded into this event (the same kind from the same source,
    /// one after another).
    pub count: u64,
    /// For `recalibrated`: the fitted parameters and the window's error
    /// before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibration: Option<Box<crate::sync::recalibrate::Recalibration>>,
}

/// One page of a twin's sync history, oldest first.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncHistoryPage {
    pub events: Vec<SyncEvent>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
    /// Events older than the history keeps were dropped.
    pub dropped: u64,
}

/// `GET /v1/twins/{id}/sync/status`: how a twin follows its counterpart.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub mode: crate::definition::SyncMode,
    pub sources: Vec<SourceStatus>,
    /// Publishers: `messages` counts what they published.
    pub publishers: Vec<SourceStatus>,
    /// The latest reading of every measured attribute, with what the twin
    /// predicts for it now.
    pub readings: Vec<ReadingStatus>,
    pub buffer: BufferStatus,
}

/// One source's connection and traffic.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    /// `mqtt`, `kafka` or `webhook`.
    pub kind: String,
    /// The broker, without credentials.
    pub endpoint: String,
    pub topic: String,
    /// `connecting`, `connected`, `disconnected` or `refused` (the broker
    /// turned the credentials or certificate down); an alert target is
    /// `idle` until its first alert.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Messages received.
    pub messages: u64,
    /// Messages over the last 10 seconds, per second.
    pub messages_per_s: f64,
    /// Readings taken from them.
    pub readings: u64,
    /// Messages whose payload did not parse.
    pub unparsed: u64,
    /// Messages no mapping names, or that name what the scene lacks.
    pub unmapped: u64,
    pub reconnects: u64,
    /// A publisher's ticks that published nothing (no broker, or it failed).
    #[serde(default)]
    pub skipped: u64,
}

/// The latest reading of one attribute.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingStatus {
    pub target: String,
    pub source: String,
    pub value: SyncValue,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// What the twin's simulation holds for it now, where it models it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted: Option<SyncValue>,
    /// Distance between reading and prediction (metres, radians, or the
    /// attribute's unit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<f64>,
    /// With drift detection: the mean error over the window...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
    /// ...the threshold it is held to...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// ...and whether it is over it now.
    #[serde(default)]
    pub drifting: bool,
}

/// Readings waiting for the twin.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferStatus {
    pub capacity: usize,
    pub queued: usize,
    /// Dropped, oldest first, because the buffer was full.
    pub dropped: u64,
    /// Taken later than the latency budget after they arrived.
    pub late: u64,
}

/// Faults an operator can inject into a twin to exercise supervision (chaos
/// engineering on the twin itself).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The twin's actor panics while handling the fault, as an engine bug would.
    Panic,
}

impl Fault {
    /// Its name as a chaos scenario (the metrics' `scenario` label).
    pub fn scenario(&self) -> &'static str {
        match self {
            Fault::Panic => "panic",
        }
    }
}

/// An operation on a running twin, as data: the one description of it, sent
/// to the twin's actor in-process ([`TwinMsg::Op`]) and carried as is to
/// the node that holds the twin. Adding one means a variant here, its
/// answer in [`TwinOpReply`], and its arm in the twin's handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinOp {
    /// Step `steps` times now, whatever the clock.
    Step {
        steps: u64,
    },
    /// Apply joint commands; all are checked before any is applied.
    Command {
        commands: Vec<JointCommandEntry>,
    },
    /// Read an observation (`/` for everything).
    Observe {
        path: String,
    },
    SetClock {
        clock: Clock,
    },
    Info,
    /// Who the twin is and everything it observes, in one message.
    Snapshot,
    /// A fault in the twin's actor, or (`child`, e.g. `sync:plant`) in one
    /// of its children, whose actor is then killed as a crash would end it.
    InjectFault {
        fault: Fault,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<String>,
    },
    /// How the twin follows its physical counterpart.
    SyncStatus,
    /// Physical parameters (`/Prim/Path.parameter`: a joint's drive
    /// `stiffness` or `damping`, a body's `friction` or `mass`); none named:
    /// every one the engine can tune.
    Parameters {
        names: Vec<String>,
    },
    /// Sets physical parameters, all or none; they hold from the next step.
    SetParameters {
        values: std::collections::BTreeMap<String, f64>,
    },
    /// Its sync events after `after` (a `seq`), at most `limit`.
    SyncHistory {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        limit: usize,
    },
    /// The shapes of its scene's bodies, to draw it.
    Geometry,
    /// A picture of it now, with labels, drawn by the node's render workers.
    Render(Box<RenderRequest>),
    /// Its scene and every body's pose now: what a synthetic dataset is
    /// drawn from.
    SceneNow,
    /// An infrastructure twin: a chaos scenario, starting now.
    InfraInject(Box<ChaosRequest>),
    /// An infrastructure twin: its topology patched from now on (a
    /// what-if fork's).
    InfraPatch(Box<hanzo_twin_engines::infra::TopologyPatch>),
    /// An infrastructure twin's services, faults and assertions now.
    InfraStatus,
}

/// A chaos scenario for an infrastructure twin (`POST
/// /v1/infra/twins/{id}/inject`, `hanzo-twin chaos inject`): one of its
/// definition's by name, or one written here. It starts at the twin's
/// current simulated time.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosRequest {
    /// A scenario of the twin's `failure_injection` (`pod-kill`), whose
    /// settings the fields below override; or the name of a new one.
    #[schema(example = "pod-kill")]
    pub scenario: String,
    /// `deployment/<name>`, `statefulset/<name>`, `service/<name>`, or
    /// `node/<name>` for stop_node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "deployment/api")]
    pub target: Option<String>,
    /// kill_pod, block_traffic, stress_cpu, fill_disk, delay,
    /// packet_loss or stop_node; absent: the definition's scenario's, or
    /// the one its name says (`pod-kill`, `network-partition`,
    /// `cpu-stress`, `disk-full`, `network-delay`, `packet-loss`,
    /// `node-stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// How long it lasts (`30s`, `5m`); absent: to the end of the run (a
    /// kill is instant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// kill_pod: pods killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// stress_cpu: the CPU taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_percent: Option<f64>,
    /// fill_disk: how full; packet_loss: the share lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// delay: added one way (`200ms`), and up to `jitter` more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
}

/// An infrastructure twin now: what its services did so far, the faults
/// scheduled or injected, and each assertion's verdict with its evidence.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfraStatus {
    /// Simulated seconds run, and steps.
    pub time: f64,
    pub step: u64,
    /// Per service and per entry point (timelines left out: see
    /// `hanzo-twin infra simulate` for a run's timeline).
    #[schema(value_type = Object)]
    pub report: hanzo_twin_engines::infra::Report,
    #[schema(value_type = Vec<Object>)]
    pub faults: Vec<hanzo_twin_engines::infra::Fault>,
    #[schema(value_type = Vec<Object>)]
    pub verdicts: Vec<hanzo_twin_engines::infra::Verdict>,
}

/// A twin's scene and its bodies' poses at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneNow {
    pub scene: hanzo_twin_engines::SceneModel,
    /// One per body of `scene`, in its order.
    pub poses: Vec<hanzo_twin_engines::scene::Pose>,
    pub time: f64,
    pub step: u64,
}

/// What to draw a twin as, and how (`GET /v1/twins/{id}/render`).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderRequest {
    /// A camera of the scene, by prim path; none: `eye` and `look_at`
    /// place one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eye: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_at: Option<[f64; 3]>,
    /// Up in the image (default: the scene's up axis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<[f64; 3]>,
    /// Vertical field of view; default the camera's, or 60°.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fov_deg: Option<f64>,
    pub width: u32,
    pub height: u32,
    pub outputs: Vec<hanzo_twin_render::encode::Output>,
    /// Rays a pixel for colour (1–64).
    pub samples_per_pixel: u32,
}

/// One picture of a twin: PNG images and the labels of what they show.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedFrame {
    /// The twin's simulated time and step when its poses were taken.
    pub time: f64,
    pub step: u64,
    pub width: u32,
    pub height: u32,
    pub intrinsics: hanzo_twin_render::Intrinsics,
    pub images: Vec<RenderedImage>,
    /// Every body the view passes through: boxes, pixels, visible fraction.
    pub instances: Vec<hanzo_twin_render::InstanceLabel>,
    /// Semantic class names; class id `i + 1` is `classes[i]`.
    pub classes: Vec<String>,
    /// Metres per step of the depth image's values.
    pub depth_scale_m: f64,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedImage {
    pub output: hanzo_twin_render::encode::Output,
    /// The PNG file.
    pub png: Vec<u8>,
}

impl TwinOp {
    /// Step, commands, observation and clock: the control loop's
    /// operations, which leave the definition alone.
    pub fn name(&self) -> &'static str {
        match self {
            TwinOp::Step { .. } => "step",
            TwinOp::Command { .. } => "command",
            TwinOp::Observe { .. } => "observe",
            TwinOp::SetClock { .. } => "set_clock",
            TwinOp::Info => "info",
            TwinOp::Snapshot => "snapshot",
            TwinOp::InjectFault { .. } => "inject_fault",
            TwinOp::SyncStatus => "sync_status",
            TwinOp::SyncHistory { .. } => "sync_history",
            TwinOp::Parameters { .. } => "parameters",
            TwinOp::SetParameters { .. } => "set_parameters",
            TwinOp::Geometry => "geometry",
            TwinOp::Render(_) => "render",
            TwinOp::SceneNow => "scene_now",
            TwinOp::InfraInject(_) => "infra_inject",
            TwinOp::InfraPatch(_) => "infra_patch",
            TwinOp::InfraStatus => "infra_status",
        }
    }

    /// Whether it only reads the twin.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            TwinOp::Snapshot
                | TwinOp::Info
                | TwinOp::Observe { .. }
                | TwinOp::SyncStatus
                | TwinOp::SyncHistory { .. }
                | TwinOp::Parameters { .. }
                | TwinOp::Geometry
                | TwinOp::Render(_)
                | TwinOp::SceneNow
                | TwinOp::InfraStatus
        )
    }
}

/// What a [`TwinOp`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinOpReply {
    Done,
    Step(StepReport),
    Observation(Box<Observation>),
    Info(TwinRuntimeInfo),
    Snapshot(Box<TwinSnapshot>),
    SyncStatus(Box<SyncStatus>),
    SyncHistory(Box<SyncHistoryPage>),
    /// Parameter values by `/Prim/Path.parameter`.
    Parameters(std::collections::BTreeMap<String, f64>),
    Geometry(Box<hanzo_twin_engines::scene::SceneGeometry>),
    Render(Box<RenderedFrame>),
    SceneNow(Box<SceneNow>),
    Infra(Box<InfraStatus>),
}

/// A running twin's copy of its simulation, with the scene it runs, for a
/// fork to start from.
pub struct LiveCopy {
    /// Only ever moved, never shared: the wrapper makes that Sync.
    pub simulation: sync_wrapper::SyncWrapper<Box<dyn hanzo_twin_engines::Simulation>>,
    pub scene: std::sync::Arc<hanzo_twin_engines::SceneModel>,
}

/// Where a twin hands its [`LiveCopy`], called on the twin's thread.
pub type ForkDelivery = Box<dyn FnOnce(Result<Option<LiveCopy>, TwinError>) + Send + Sync>;

/// Messages to one twin's actor.
pub enum TwinMsg {
    /// An operation from a caller (the API, an agent, another node).
    Op {
        op: TwinOp,
        reply: Reply<TwinOpReply>,
    },
    /// Take the complete simulation state.
    GetState { reply: Reply<SimState> },
    /// Replace the simulation state.
    SetState { state: SimState, reply: Reply<()> },
    /// The recorded run so far, with the scene it ran in.
    Recording {
        reply: Reply<(Arc<SceneModel>, Recording)>,
    },
    /// From the host: the twin's definition was renamed.
    Renamed { name: String },
    /// From the host: the twin's sync block changed; its sources stop and
    /// the new ones start.
    SetSync {
        sync: Box<crate::definition::SyncSpec>,
        reply: Reply<()>,
    },
    /// The twin's children and how they fare.
    Children { reply: Reply<Vec<ChildReport>> },
    /// Internal: the clock's heartbeat; stale generations are ignored.
    Tick { generation: u64 },
    /// Internal: a checkpoint deferred by the wall-clock floor is due.
    CheckpointDue,
    /// Internal: a failed child's backoff has passed ([`crate::children`]).
    RestartChild { index: usize, generation: u64 },
    /// Internal: a source queued readings ([`crate::sync`]).
    SyncReadings,
    /// From the host: an independent copy of the running simulation, for a
    /// fork on this node.
    ForkSimulation {
        reply: Reply<Box<dyn hanzo_twin_engines::Simulation>>,
    },
    /// From a caller that resolved the twin: copy the running simulation
    /// and hand the copy on to `deliver` (the host's fork continuation),
    /// so it does not come back to the caller first. `None` when the engine
    /// does not copy in memory: the host then forks from the twin's state.
    ForkInto { deliver: ForkDelivery },
    /// From a publisher: what the twin predicts now, as it is published.
    Prediction { reply: Reply<serde_json::Value> },
    /// Internal: time to see whether the paused twin has been idle long
    /// enough to be passivated.
    IdleCheck { generation: u64 },
    /// Internal, in batch sync mode: a sync period has passed; apply the
    /// readings queued (`generation` names the sync block it was set for).
    SyncWindow { generation: u64 },
    /// A recalibration the twin started has ended.
    Recalibrated {
        result: Box<Result<crate::sync::recalibrate::Recalibration, String>>,
    },
    /// From the host, before it drains the twin's mailbox to passivate it:
    /// checkpoint the final state when stopping.
    Passivate,
}

impl TwinMsg {
    /// Answers the request with `err` without handling it (the twin is not
    /// running, say). Internal messages are dropped.
    pub fn reject(self, err: TwinError) {
        // A caller that stopped waiting is not an error here.
        match self {
            TwinMsg::Op { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::GetState { reply } => drop(reply.send(Err(err))),
            TwinMsg::SetState { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::Recording { reply } => drop(reply.send(Err(err))),
            TwinMsg::SetSync { reply, .. } => drop(reply.send(Err(err))),
            TwinMsg::Children { reply } => drop(reply.send(Err(err))),
            TwinMsg::Prediction { reply } => drop(reply.send(Err(err))),
            TwinMsg::ForkSimulation { reply } => drop(reply.send(Err(err))),
            // The host forks it its own way, and answers for a twin that is
            // not running.
            TwinMsg::ForkInto { deliver } => deliver(Ok(None)),
            TwinMsg::Tick { .. }
            | TwinMsg::CheckpointDue
            | TwinMsg::Renamed { .. }
            | TwinMsg::RestartChild { .. }
            | TwinMsg::SyncReadings
            | TwinMsg::IdleCheck { .. }
            | TwinMsg::SyncWindow { .. }
            | TwinMsg::Recalibrated { .. }
            | TwinMsg::Passivate => {}
        }
    }

    /// Whether handling this message may change what the twin's state read
    /// answers: everything but reads does (kept conservative: a message
    /// wrongly counted as a change only costs a cached read).
    pub fn may_change_state(&self) -> bool {
        if let TwinMsg::Op { op, .. } = self {
            return !op.is_read();
        }
        !matches!(
            self,
            TwinMsg::GetState { .. }
                | TwinMsg::Recording { .. }
                | TwinMsg::Children { .. }
                | TwinMsg::ForkSimulation { .. }
                | TwinMsg::ForkInto { .. }
        )
    }

    /// Whether a caller sent it (as opposed to the twin's clock, its
    /// sources or its host): what keeps a twin from being idle. Reading the
    /// runtime info shown with the twin's record does not.
    pub fn is_request(&self) -> bool {
        matches!(self, TwinMsg::Op { op, .. } if *op != TwinOp::Info)
            || matches!(
                self,
                TwinMsg::GetState { .. }
                    | TwinMsg::SetState { .. }
                    | TwinMsg::Recording { .. }
                    | TwinMsg::Children { .. }
            )
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
        self.admits_organization(record.definition.organization())
    }

    /// Whether what belongs to `organization` is seen through this scope.
    pub fn admits_organization(&self, organization: &str) -> bool {
        match self {
            Scope::Node => true,
            Scope::Organization(org) => org.as_str() == organization,
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
#[derive(utoipa::ToSchema, Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// An infrastructure twin's what-if: the fork's topology patched from
    /// the fork's first instant (replicas, CPU limits and requests,
    /// workers, Kubernetes objects added or replaced); the parent is not
    /// touched. It keeps the same services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<hanzo_twin_engines::infra::TopologyPatch>,
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
            what: what.into(),
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
            Err(TwinError::Unavailable(id.to_string()))
        }
    }
}

/// How many requests a node has in flight, bounded: every request from a
/// caller holds a permit until it is answered, so the mailboxes callers fill
/// (the host's, each twin's, each gym batch's) hold at most this many of
/// their messages. Past it a request is refused at once
/// ([`TwinError::Overloaded`]) instead of queueing without end.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

/// `server.max_in_flight` unless configured.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

impl Default for Admission {
    fn default() -> Self {
        Admission::new(DEFAULT_MAX_IN_FLIGHT)
    }
}

impl Admission {
    pub fn new(limit: usize) -> Admission {
        let limit = limit.max(1);
        Admission {
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
        }
    }

    /// A permit for one request, held until it is answered.
    pub fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, TwinError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| TwinError::Overloaded { limit: self.limit })
    }

    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

//! The twin actor: owns one engine simulation and its clock.

use crate::checkpoints::Checkpoints;
use crate::children::{ChildBoard, ChildEvent, Children, Followup};
use crate::error::TwinError;
use crate::protocol::{
    Fault, StepReport, TwinMsg, TwinOp, TwinOpReply, TwinRuntimeInfo, TwinSnapshot,
};
use crate::record::{Clock, TwinId};
use hanzo_twin_engines::recording::{RecordedFrame, Recording};
use hanzo_twin_engines::{Engine, EngineConfig, EngineError, SceneModel, SimState, Simulation};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most steps one step request may ask for; larger runs are several requests
/// (or the `fast` clock), so one request never holds a twin for minutes.
pub const MAX_STEPS_PER_REQUEST: u64 = 1_000_000;

/// The real-time clock never tries to catch up more than this much wall time at
/// once; beyond it steps are skipped and counted, so a slow engine cannot spiral.
const MAX_CATCH_UP: Duration = Duration::from_millis(250);

/// The fast clock steps for about this long before yielding to the mailbox.
const FAST_BATCH: Duration = Duration::from_millis(2);
/// How long a `fast` replay waits when its recording's next reading has
/// not been read yet.
const REPLAY_WAIT: Duration = Duration::from_millis(1);

/// A long step request yields to other tasks this often.
const YIELD_EVERY: Duration = Duration::from_millis(5);

/// Everything a twin actor starts from.
pub struct TwinArgs {
    pub id: TwinId,
    /// The definition's name (the host tells the actor of a rename).
    pub name: String,
    pub organization: String,
    pub engine: Arc<dyn Engine>,
    pub scene: Arc<SceneModel>,
    pub config: EngineConfig,
    /// Resume from this state instead of the scene's initial one.
    pub initial_state: Option<Arc<SimState>>,
    /// Or run this simulation, already loaded (a fork's copy of its parent).
    pub simulation: Option<Box<dyn Simulation>>,
    pub clock: Clock,
    /// Take a checkpoint every this many steps (0: never on a step count)...
    pub checkpoint_every_steps: u64,
    /// ...but no more often than this in wall time, so a `fast` clock does
    /// not checkpoint thousands of times a second.
    pub checkpoint_min_interval: Duration,
    /// Record body poses every this many steps (0: never).
    pub record_every_steps: u64,
    /// Frames kept; the oldest go first.
    pub record_capacity: usize,
    /// Where checkpoints go: the twin's latest-wins slot.
    pub checkpoints: Checkpoints,
    /// Counts the messages this actor handles, for the supervision tree.
    pub messages: crate::inspector::MessageCount,
    /// How the twin follows its counterpart; its sources are the children
    /// it supervises, spawned once it has started. Forks are standalone.
    pub sync: crate::definition::SyncSpec,
    /// The node's Kafka stream, for Kafka publishers without brokers of their own.
    pub stream: Arc<crate::sync::StreamSettings>,
    /// Where the twin shows its children to the host's tree.
    pub child_board: ChildBoard,
    /// Watchers of the supervision tree, told when a child starts or fails.
    pub tree_events: Option<crate::inspector::TreeEvents>,
    /// Told (once) when the twin has been paused, childless and without a
    /// request for `passivate_after`, so its supervisor may deactivate it.
    pub passivate_after: Option<Duration>,
    pub on_idle: Option<Arc<dyn Fn() + Send + Sync>>,
    /// What callers read of this twin without a message; told of every
    /// message that may change it.
    pub view: Arc<crate::direct::TwinView>,
    /// The node's render workers, which draw the twin on request.
    pub render: crate::render::RenderWorkers,
}

pub struct TwinActor;

pub struct TwinState {
    id: TwinId,
    name: String,
    engine_kind: hanzo_twin_engines::EngineKind,
    messages: crate::inspector::MessageCount,
    engine_label: String,
    twin_label: String,
    stream: Arc<crate::sync::StreamSettings>,
    step_timings: StepTimings,
    sim: Box<dyn Simulation>,
    step_hz: f64,
    clock: Clock,
    /// Bumped on every clock change; ticks of older generations are ignored.
    generation: u64,
    /// Bumped on every change of the sync block; batch periods scheduled
    /// for an older one are ignored.
    sync_generation: u64,
    /// The pending tick of the real-time clock, aborted on a clock change.
    ticker: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<TwinMsg>>>>,
    /// Real-time clock: when it started and how many steps it has taken since.
    clock_origin: Instant,
    clock_steps: u64,
    skipped_steps: u64,
    started: Instant,
    checkpoint_every_steps: u64,
    checkpoint_min_interval: Duration,
    steps_since_checkpoint: u64,
    last_checkpoint: Instant,
    /// A checkpoint was due inside the wall-clock floor and is scheduled.
    checkpoint_scheduled: bool,
    scene: Arc<SceneModel>,
    record_every_steps: u64,
    record_capacity: usize,
    record_bodies: Vec<String>,
    frames: VecDeque<RecordedFrame>,
    checkpoints: Checkpoints,
    organization: String,
    sync: crate::sync::TwinSync,
    children: Children,
    tree_events: Option<crate::inspector::TreeEvents>,
    passivate_after: Option<Duration>,
    on_idle: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The last request from a caller, for passivation.
    last_request: Instant,
    view: Arc<crate::direct::TwinView>,
    render: crate::render::RenderWorkers,
    /// The scene prepared for drawing, made on the first render.
    render_scene: Option<Arc<hanzo_twin_render::RenderScene>>,
    idle_reported: bool,
    /// Stopping to be passivated: the final state goes to the checkpoint
    /// slot once every queued request is served.
    final_checkpoint: bool,
    _active: ActiveGauge,
}

/// Keeps `hanzo_twin_active_simulations` right however the actor ends, a panic
/// included: the gauge is decremented when the state is dropped.
struct ActiveGauge(String);

impl ActiveGauge {
    fn new(engine: &str) -> ActiveGauge {
        metrics::gauge!("hanzo_twin_active_simulations", "engine" => engine.to_string())
            .increment(1.0);
        ActiveGauge(engine.to_string())
    }
}

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        metrics::gauge!("hanzo_twin_active_simulations", "engine" => self.0.clone()).decrement(1.0);
    }
}

/// Samples of step durations for `hanzo_twin_step_duration_seconds`: at
/// most one per millisecond of wall time. A twin on the real-time clock
/// (a step every few milliseconds) records every step; one on the fast
/// clock (a step every few microseconds) would push hundreds of thousands of
/// samples a second into the recorder's buffers, whose reclamation then
/// lagged behind: the soak's node grew by 80 MB in an hour.
///
/// The histogram's handle is kept, not looked up per step (a lookup costs
/// more than a small scene's physics step), but only for a minute: the
/// exporter drops idle series, and a stale handle would count into nothing.
#[derive(Default)]
struct StepTimings {
    /// The handle, and when it was looked up.
    handle: Option<(Instant, metrics::Histogram)>,
    last_sample: Option<Instant>,
}

impl StepTimings {
    const SAMPLE_EVERY: Duration = Duration::from_millis(1);
    const LOOKUP_EVERY: Duration = Duration::from_secs(60);

    fn record(&mut self, started: Instant, engine: &str) {
        let now = Instant::now();
        if self
            .last_sample
            .is_some_and(|last| now.duration_since(last) < Self::SAMPLE_EVERY)
        {
            return;
        }
        self.last_sample = Some(now);
        let fresh = self
            .handle
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < Self::LOOKUP_EVERY);
        if !fresh {
            let histogram = metrics::histogram!("hanzo_twin_step_duration_seconds", "engine" => engine.to_string());
            self.handle = Some((now, histogram));
        }
        if let Some((_, histogram)) = &self.handle {
            histogram.record(now.duration_since(started).as_secs_f64());
        }
    }
}

impl TwinState {
    /// Hands a picture of the twin as it is now to the node's render
    /// workers, which answer `reply`; what cannot be drawn is answered here.
    fn render(
        &mut self,
        request: crate::protocol::RenderRequest,
        reply: crate::protocol::Reply<TwinOpReply>,
    ) -> Result<(), TwinError> {
        let job = match self.render_job(request) {
            Ok(job) => job,
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                return Err(e);
            }
        };
        let Some(pool) = self.render.pool() else {
            let e = TwinError::Engine {
                kind: crate::error::EngineFailure::NotAvailable,
                field: None,
                message: "this node has no render workers".into(),
            };
            let _ = reply.send(Err(e.clone()));
            return Err(e);
        };
        let answer: crate::render::RenderReply = Box::new(move |result| {
            let _ = reply.send(result.and_then(|outcome| match outcome {
                crate::render::RenderOutcome::Frame(frame) => Ok(TwinOpReply::Render(frame)),
                crate::render::RenderOutcome::Batch(_) => Err(TwinError::invalid(
                    "render",
                    "the render pool answered a frame with a batch",
                )),
            }));
        });
        pool.cast(crate::render::RenderPoolMsg::Render {
            work: crate::render::RenderWork::Frame(Box::new(job)),
            reply: answer,
        })
        .map_err(|_| TwinError::Unavailable("the node's render pool".into()))
    }

    fn render_job(
        &mut self,
        request: crate::protocol::RenderRequest,
    ) -> Result<crate::render::RenderJob, TwinError> {
        let view = crate::render::view_of(&self.scene, &request)?;
        let scene = match &self.render_scene {
            Some(scene) => scene.clone(),
            None => {
                let scene = Arc::new(hanzo_twin_render::RenderScene::new(&self.scene)?);
                self.render_scene = Some(scene.clone());
                scene
            }
        };
        let (poses, time, step) = self.poses_now()?;
        Ok(crate::render::RenderJob {
            scene,
            poses,
            view,
            request,
            time,
            step,
        })
    }

    /// Every body's pose now, in the scene's order, with the time and step;
    /// bodies the engine does not report (static ones) stay where the scene
    /// put them.
    fn poses_now(&self) -> Result<(Vec<hanzo_twin_engines::scene::Pose>, f64, u64), TwinError> {
        let observation = self.sim.observation("/")?;
        let poses = observation.scene_poses(&self.scene);
        Ok((poses, observation.time, observation.step))
    }

    /// In batch sync mode, schedules the end of the next sync period.
    fn schedule_sync_window(&self, myself: &ActorRef<TwinMsg>) {
        if let Some(window) = self.sync.window() {
            let generation = self.sync_generation;
            myself.send_after(window, move || TwinMsg::SyncWindow { generation });
        }
    }

    /// Tells the tree's watchers about the twin's children, and schedules
    /// the restarts the restart policy asks for.
    fn children_changed(
        &self,
        myself: &ActorRef<TwinMsg>,
        events: Vec<ChildEvent>,
        followups: Vec<Followup>,
    ) {
        if let Some(tree) = &self.tree_events {
            for event in events {
                let name = format!("{}/{}", self.name, event.name);
                tree.emit(
                    &self.organization,
                    &name,
                    event.kind,
                    event.event,
                    event.detail,
                );
            }
        }
        for followup in followups {
            if let Followup::RestartAfter {
                delay,
                index,
                generation,
            } = followup
            {
                myself.send_after(delay, move || TwinMsg::RestartChild { index, generation });
            }
        }
    }

    /// Runs one caller's operation.
    async fn op(
        &mut self,
        myself: &ActorRef<TwinMsg>,
        op: TwinOp,
    ) -> Result<TwinOpReply, TwinError> {
        Ok(match op {
            TwinOp::Step { steps } => TwinOpReply::Step(self.step_n(myself, steps).await?),
            TwinOp::Command { commands } => {
                apply_commands(self.sim.as_mut(), &commands)?;
                for c in &commands {
                    self.sync.commanded(self.sim.as_ref(), &c.joint, c.command);
                }
                TwinOpReply::Done
            }
            TwinOp::Observe { path } => {
                TwinOpReply::Observation(Box::new(self.sim.observation(&path)?))
            }
            TwinOp::Geometry => TwinOpReply::Geometry(Box::new(self.scene.geometry())),
            TwinOp::SceneNow => {
                let (poses, time, step) = self.poses_now()?;
                TwinOpReply::SceneNow(Box::new(crate::protocol::SceneNow {
                    scene: (*self.scene).clone(),
                    poses,
                    time,
                    step,
                }))
            }
            TwinOp::InfraStatus => TwinOpReply::Infra(Box::new(self.infra_status()?)),
            TwinOp::InfraInject(request) => {
                self.inject_chaos(&request)?;
                TwinOpReply::Infra(Box::new(self.infra_status()?))
            }
            TwinOp::InfraPatch(patch) => {
                self.patch_topology(*patch)?;
                TwinOpReply::Infra(Box::new(self.infra_status()?))
            }
            // Handled before: the render pool answers it.
            TwinOp::Render(_) => {
                return Err(TwinError::invalid(
                    "op",
                    "render is answered by the render pool",
                ));
            }
            TwinOp::Parameters { names } if names.is_empty() => {
                TwinOpReply::Parameters(all_parameters(self.sim.as_ref())?)
            }
            TwinOp::Parameters { names } => {
                let mut values = std::collections::BTreeMap::new();
                for (i, name) in names.iter().enumerate() {
                    let (target, parameter) = parameter_key(&format!("names[{i}]"), name)?;
                    let value = self
                        .sim
                        .parameter(&target.prim, parameter)
                        .map_err(|e| parameter_error(&format!("names[{i}]"), e))?;
                    values.insert(name.clone(), value);
                }
                TwinOpReply::Parameters(values)
            }
            TwinOp::SetParameters { values } => {
                // All are checked on a copy first, so a bad one sets none.
                let mut trial = self.sim.fork()?;
                let mut parsed = Vec::with_capacity(values.len());
                for (key, value) in &values {
                    let field = format!("values.{key}");
                    let (target, parameter) = parameter_key(&field, key)?;
                    trial
                        .set_parameter(&target.prim, parameter, *value)
                        .map_err(|e| parameter_error(&field, e))?;
                    parsed.push((target, *value));
                }
                drop(trial);
                let mut after = std::collections::BTreeMap::new();
                for ((target, value), key) in parsed.iter().zip(values.keys()) {
                    let parameter = target.attribute.as_deref().unwrap_or_default();
                    self.sim.set_parameter(&target.prim, parameter, *value)?;
                    self.sync
                        .parameter_set(self.sim.as_ref(), &target.prim, parameter, *value);
                    after.insert(key.clone(), self.sim.parameter(&target.prim, parameter)?);
                }
                TwinOpReply::Parameters(after)
            }
            TwinOp::SetClock { clock } => {
                self.set_clock(myself, clock);
                TwinOpReply::Done
            }
            TwinOp::Info => TwinOpReply::Info(TwinRuntimeInfo {
                time: self.sim.time(),
                step: self.sim.step_count(),
                clock: self.clock,
                skipped_steps: self.skipped_steps,
                uptime_s: self.started.elapsed().as_secs_f64(),
            }),
            TwinOp::Snapshot => TwinOpReply::Snapshot(Box::new(TwinSnapshot {
                id: self.id,
                name: self.name.clone(),
                engine: self.engine_kind,
                clock: self.clock,
                observation: self.sim.observation("/")?,
            })),
            TwinOp::InjectFault {
                child: Some(child), ..
            } => {
                self.children
                    .kill(&child)
                    .map_err(|message| TwinError::invalid("child", message))?;
                TwinOpReply::Done
            }
            // Handled before: a panic must not hold the reply.
            TwinOp::InjectFault { child: None, .. } => TwinOpReply::Done,
            TwinOp::SyncHistory { after, limit } => {
                TwinOpReply::SyncHistory(Box::new(self.sync.history(after, limit)))
            }
            TwinOp::SyncStatus => {
                TwinOpReply::SyncStatus(Box::new(self.sync.status(self.sim.as_ref())))
            }
        })
    }

    fn not_infrastructure(&self) -> TwinError {
        TwinError::from(EngineError::Unsupported {
            engine: self.engine_kind,
            feature: format!(
                "chaos scenarios and service reports: twin {} is a physical twin, not an infrastructure twin",
                self.id
            ),
        })
    }

    fn infra_status(&self) -> Result<crate::protocol::InfraStatus, TwinError> {
        let infra = self
            .sim
            .infrastructure()
            .ok_or_else(|| self.not_infrastructure())?;
        let mut report = infra.report();
        // Per-second timelines grow with the run; the status stays small.
        for entry in &mut report.entries {
            entry.timeline = Vec::new();
        }
        Ok(crate::protocol::InfraStatus {
            time: self.sim.time(),
            step: self.sim.step_count(),
            report,
            faults: infra.faults().to_vec(),
            verdicts: infra.verdicts_so_far(),
        })
    }

    /// Patches the running topology from now on: the twin's own objects
    /// with its earlier patches and this one.
    fn patch_topology(
        &mut self,
        patch: hanzo_twin_engines::infra::TopologyPatch,
    ) -> Result<(), TwinError> {
        if self.sim.infrastructure().is_none() {
            return Err(self.not_infrastructure());
        }
        let source = hanzo_twin_engines::infrastructure::twin_source(&self.scene)?;
        let infra_error = |e| TwinError::from(hanzo_twin_engines::infrastructure::infra_error(e));
        patch.check("topology").map_err(infra_error)?;
        let objects =
            hanzo_twin_engines::infra::kubernetes::Objects::from_manifests(&source.manifests)
                .map_err(infra_error)?;
        let not_infrastructure = self.not_infrastructure();
        let sim = self.sim.infrastructure_mut().ok_or(not_infrastructure)?;
        sim.patch(&source.spec, &objects, patch, "topology")
            .map_err(infra_error)
    }

    /// Starts `request`'s scenario now: the definition's scenario of that
    /// name with the request's settings over it, or a new one.
    fn inject_chaos(&mut self, request: &crate::protocol::ChaosRequest) -> Result<(), TwinError> {
        use hanzo_twin_engines::infra::spec::{Scenario, action_named};
        if self.sim.infrastructure().is_none() {
            return Err(self.not_infrastructure());
        }
        let source = hanzo_twin_engines::infrastructure::twin_source(&self.scene)?;
        let declared = source
            .spec
            .failure_injection
            .scenarios
            .into_iter()
            .find(|s| s.name == request.scenario);
        let mut scenario = match declared {
            Some(s) => s,
            None => Scenario {
                name: request.scenario.clone(),
                target: request.target.clone().ok_or_else(|| {
                    TwinError::invalid(
                        "target",
                        format!(
                            "the twin declares no scenario `{}`; give its target (deployment/<name>, statefulset/<name> or service/<name>)",
                            request.scenario
                        ),
                    )
                })?,
                action: match request.action.clone().or_else(|| action_named(&request.scenario).map(String::from)) {
                    Some(a) => a,
                    None => {
                        return Err(TwinError::invalid(
                            "action",
                            format!(
                                "the twin declares no scenario `{}` and its name says no action: give action (kill_pod, block_traffic, stress_cpu, fill_disk, delay, packet_loss or stop_node)",
                                request.scenario
                            ),
                        ));
                    }
                },
                at: None,
                duration: None,
                count: None,
                load_percent: None,
                percent: None,
                latency: None,
                jitter: None,
            },
        };
        macro_rules! over {
            ($($field:ident),*) => {$(
                if let Some(v) = &request.$field {
                    scenario.$field = v.clone();
                }
            )*};
        }
        over!(target, action);
        macro_rules! over_optional {
            ($($field:ident),*) => {$(
                if request.$field.is_some() {
                    scenario.$field = request.$field.clone();
                }
            )*};
        }
        over_optional!(duration, count, load_percent, percent, latency, jitter);
        let now = self.sim.time();
        let invalid = |e: hanzo_twin_engines::infra::InfraError| {
            let hanzo_twin_engines::infra::InfraError::Invalid { field, message } = e;
            // A fault's own names (`duration_s`) read as the request's.
            TwinError::invalid(field.trim_end_matches("_s"), message)
        };
        let fault = scenario.fault("", now).map_err(invalid)?;
        let missing = self.not_infrastructure();
        let infra = self.sim.infrastructure_mut().ok_or(missing)?;
        infra.inject(fault).map_err(|e| {
            let hanzo_twin_engines::infra::InfraError::Invalid { message, .. } = e;
            TwinError::invalid("target", message)
        })?;
        metrics::counter!("hanzo_twin_chaos_injections_total", "scenario" => request.scenario.clone())
            .increment(1);
        Ok(())
    }

    /// A caller's request arrived: the twin is not idle.
    fn touched(&mut self) {
        self.last_request = Instant::now();
        self.idle_reported = false;
    }

    /// While paused and childless, tells the supervisor once the twin has
    /// had no request for `passivate_after`; checks again when it is due.
    fn idle_check(&mut self, myself: &ActorRef<TwinMsg>, generation: u64) {
        let (Some(after), Some(on_idle)) = (self.passivate_after, self.on_idle.clone()) else {
            return;
        };
        if generation != self.generation || self.clock != Clock::Paused || !self.children.is_empty()
        {
            return;
        }
        let last = match self.view.last_read() {
            Some(read) => read.max(self.last_request),
            None => self.last_request,
        };
        let idle = last.elapsed();
        if idle < after {
            myself.send_after(after - idle, move || TwinMsg::IdleCheck { generation });
        } else if !self.idle_reported {
            self.idle_reported = true;
            on_idle();
            // Should the supervisor keep it, a later silence reports again.
            myself.send_after(after, move || TwinMsg::IdleCheck { generation });
        }
    }

    fn step_once(&mut self) -> Result<(), TwinError> {
        if self.sync.replay_due(self.sim.time()) {
            self.sync.take(self.sim.as_mut());
        }
        self.sync.before_step(self.sim.as_ref());
        let t0 = Instant::now();
        let result = self.sim.step();
        self.step_timings.record(t0, &self.engine_label);
        result?;
        self.steps_since_checkpoint += 1;
        if self.record_every_steps > 0
            && self
                .sim
                .step_count()
                .is_multiple_of(self.record_every_steps)
        {
            self.record();
        }
        Ok(())
    }

    /// Appends the poses of every body at the current step. The body paths
    /// are read once; each frame reuses the oldest frame's buffers once the
    /// ring is full, so recording does not allocate in steady state.
    fn record(&mut self) {
        if self.record_every_steps == 0 || self.record_capacity == 0 {
            return;
        }
        if self.record_bodies.is_empty() {
            let Ok(obs) = self.sim.observation("/") else {
                return;
            };
            self.record_bodies = obs.bodies.iter().map(|b| b.path.clone()).collect();
        }
        let step = self.sim.step_count();
        // A restore can move the clock back: frames after it are a new history.
        while self.frames.back().is_some_and(|f| f.step >= step) {
            self.frames.pop_back();
        }
        let mut frame = if self.frames.len() >= self.record_capacity {
            self.frames.pop_front()
        } else {
            None
        }
        .unwrap_or_else(|| RecordedFrame {
            step: 0,
            time: 0.0,
            positions: Vec::with_capacity(self.record_bodies.len()),
            orientations: Vec::with_capacity(self.record_bodies.len()),
        });
        frame.step = step;
        frame.time = self.sim.time();
        frame.positions.clear();
        frame.orientations.clear();
        if self
            .sim
            .body_poses(&mut frame.positions, &mut frame.orientations)
            .is_ok()
        {
            self.frames.push_back(frame);
        }
    }

    fn count_steps(&self, n: u64) {
        if n > 0 {
            metrics::counter!("hanzo_twin_steps_total", "engine" => self.engine_label.clone(), "twin" => self.twin_label.clone())
                .increment(n);
        }
    }

    /// Takes a checkpoint when one is due. Inside the wall-clock floor it is
    /// taken when the floor has passed instead (once), so the newest state
    /// is still checkpointed if the twin then stands still.
    fn maybe_checkpoint(&mut self, myself: &ActorRef<TwinMsg>) {
        if self.checkpoint_every_steps == 0
            || self.steps_since_checkpoint < self.checkpoint_every_steps
            || self.checkpoint_scheduled
        {
            return;
        }
        let since = self.last_checkpoint.elapsed();
        if since >= self.checkpoint_min_interval {
            self.checkpoint();
        } else {
            self.checkpoint_scheduled = true;
            myself.send_after(self.checkpoint_min_interval - since, || {
                TwinMsg::CheckpointDue
            });
        }
    }

    /// Puts the current state in the twin's checkpoint slot.
    fn checkpoint(&mut self) {
        self.steps_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        match self.sim.state() {
            Ok(state) => {
                self.messages.set_state_bytes(state.data.len());
                self.checkpoints.offer(self.id, Arc::new(state))
            }
            Err(e) => tracing::warn!(twin = %self.id, error = %e, "checkpoint failed"),
        }
    }

    fn set_clock(&mut self, myself: &ActorRef<TwinMsg>, clock: Clock) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.generation += 1;
        self.clock = clock;
        self.clock_origin = Instant::now();
        self.clock_steps = 0;
        let generation = self.generation;
        match clock {
            Clock::Paused => {
                if let Some(after) = self.passivate_after {
                    myself.send_after(after, move || TwinMsg::IdleCheck { generation });
                }
            }
            Clock::Fast => {
                let _ = myself.cast(TwinMsg::Tick { generation });
            }
            Clock::Realtime => self.schedule_tick(myself),
        }
    }

    /// The real-time clock's next tick: at the step rate, but no faster than
    /// every 5 ms (each tick takes as many steps as are due, so the rate
    /// stays exact). Each tick schedules the next, so however slow the
    /// engine, one tick at most waits in the mailbox.
    fn schedule_tick(&mut self, myself: &ActorRef<TwinMsg>) {
        let period =
            Duration::from_secs_f64((1.0 / (self.step_hz * self.sync.clock_rate())).max(0.005));
        let generation = self.generation;
        self.ticker = Some(myself.send_after(period, move || TwinMsg::Tick { generation }));
    }

    fn tick(&mut self, myself: &ActorRef<TwinMsg>) -> Result<(), TwinError> {
        match self.clock {
            Clock::Paused => Ok(()),
            Clock::Fast => {
                let generation = self.generation;
                if self.sync.replay_starved() {
                    // Simulated time waits for the recording, so a replay
                    // runs the same however fast the file is read.
                    self.ticker =
                        Some(myself.send_after(REPLAY_WAIT, move || TwinMsg::Tick { generation }));
                    return Ok(());
                }
                let t0 = Instant::now();
                let mut n = 0;
                while t0.elapsed() < FAST_BATCH && !self.sync.replay_starved() {
                    self.step_once()?;
                    n += 1;
                }
                self.count_steps(n);
                self.maybe_checkpoint(myself);
                let _ = myself.cast(TwinMsg::Tick { generation });
                Ok(())
            }
            Clock::Realtime => {
                // A replay plays `clock_rate` simulated seconds per second.
                let rate = self.step_hz * self.sync.clock_rate();
                let target = (self.clock_origin.elapsed().as_secs_f64() * rate) as u64;
                let mut due = target.saturating_sub(self.clock_steps);
                let max_due = (MAX_CATCH_UP.as_secs_f64() * rate).ceil() as u64;
                if due > max_due {
                    self.skipped_steps += due - max_due;
                    self.clock_steps += due - max_due;
                    due = max_due;
                }
                for _ in 0..due {
                    self.step_once()?;
                }
                self.clock_steps += due;
                self.count_steps(due);
                self.maybe_checkpoint(myself);
                self.schedule_tick(myself);
                Ok(())
            }
        }
    }

    async fn step_n(
        &mut self,
        myself: &ActorRef<TwinMsg>,
        steps: u64,
    ) -> Result<StepReport, TwinError> {
        if steps == 0 || steps > MAX_STEPS_PER_REQUEST {
            return Err(TwinError::invalid(
                "steps",
                format!("steps must be between 1 and {MAX_STEPS_PER_REQUEST}, got {steps}"),
            ));
        }
        let mut last_yield = Instant::now();
        let mut taken = 0;
        let result = loop {
            if taken == steps {
                break Ok(());
            }
            if let Err(e) = self.step_once() {
                break Err(e);
            }
            taken += 1;
            if last_yield.elapsed() > YIELD_EVERY {
                tokio::task::yield_now().await;
                last_yield = Instant::now();
            }
        };
        self.count_steps(taken);
        self.maybe_checkpoint(myself);
        result.map(|()| StepReport {
            time: self.sim.time(),
            step: self.sim.step_count(),
            steps_taken: taken,
        })
    }
}

impl Actor for TwinActor {
    type Msg = TwinMsg;
    type State = TwinState;
    type Arguments = TwinArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TwinMsg>,
        args: TwinArgs,
    ) -> Result<TwinState, ActorProcessingErr> {
        let engine_label = args.engine.kind().to_string();
        let has_state = args.initial_state.is_some() || args.simulation.is_some();
        if let Some(initial) = &args.initial_state {
            args.messages.set_state_bytes(initial.data.len());
        }
        let sim = match args.simulation {
            Some(sim) => sim,
            None => {
                let mut sim = args.engine.load_scene(&args.scene, &args.config)?;
                if let Some(state) = &args.initial_state {
                    sim.set_state(state)?;
                }
                sim
            }
        };
        metrics::counter!("hanzo_twin_simulations_total", "engine" => engine_label.clone(), "org" => args.organization.clone())
            .increment(1);
        let (mut sync, children) =
            crate::sync::TwinSync::start(&args.sync, &args.id.to_string(), &args.stream, None);
        sync.attach(myself.clone());
        let mut state = TwinState {
            organization: args.organization.clone(),
            sync,
            children: Children::new(children, args.child_board),
            tree_events: args.tree_events,
            passivate_after: args.passivate_after,
            on_idle: args.on_idle,
            last_request: Instant::now(),
            view: args.view.clone(),
            render: args.render,
            render_scene: None,
            idle_reported: false,
            final_checkpoint: false,
            messages: args.messages.clone(),
            id: args.id,
            name: args.name,
            engine_kind: args.engine.kind(),
            twin_label: args.id.to_string(),
            stream: args.stream.clone(),
            step_timings: StepTimings::default(),
            _active: ActiveGauge::new(&engine_label),
            engine_label,
            sim,
            step_hz: args.config.step_hz,
            clock: Clock::Paused,
            generation: 0,
            sync_generation: 0,
            ticker: None,
            clock_origin: Instant::now(),
            clock_steps: 0,
            skipped_steps: 0,
            started: Instant::now(),
            checkpoint_every_steps: args.checkpoint_every_steps,
            checkpoint_min_interval: args.checkpoint_min_interval,
            steps_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpoint_scheduled: false,
            scene: args.scene.clone(),
            record_every_steps: args.record_every_steps,
            record_capacity: args.record_capacity,
            record_bodies: Vec::new(),
            frames: VecDeque::new(),
            checkpoints: args.checkpoints,
        };
        state.record();
        // A fresh start has no checkpoint yet: take one so a crash before the first
        // periodic checkpoint still restarts from this twin's own state.
        if !has_state {
            state.checkpoint();
        }
        state.set_clock(&myself, args.clock);
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<TwinMsg>,
        state: &mut TwinState,
    ) -> Result<(), ActorProcessingErr> {
        // Children start once the twin runs, so a slow source never holds up
        // the twin's start (a source connects on its own time).
        let (events, followups) = state.children.start_all(&myself).await;
        state.children_changed(&myself, events, followups);
        state.schedule_sync_window(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<TwinMsg>,
        state: &mut TwinState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        if state.final_checkpoint {
            state.checkpoint();
        }
        let events = state.children.stop_all();
        state.children_changed(&myself, events, Vec::new());
        Ok(())
    }

    /// Only the twin's children report here (the host supervises the twin).
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TwinMsg>,
        event: SupervisionEvent,
        state: &mut TwinState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((event, followup)) =
                    state.children.failed(&cell.get_id(), error.to_string())
                {
                    state.children_changed(&myself, vec![event], vec![followup]);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Children the twin stopped are no longer listed; any other
                // end was not asked for.
                let reason = format!(
                    "ended unexpectedly: {}",
                    reason.unwrap_or_else(|| "no reason given".into())
                );
                if let Some((event, followup)) = state.children.failed(&cell.get_id(), reason) {
                    state.children_changed(&myself, vec![event], vec![followup]);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TwinMsg>,
        msg: TwinMsg,
        state: &mut TwinState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.messages.time();
        // Before handling, so no reply sent while handling it can be
        // followed by a cached read of the state it changed.
        if msg.may_change_state() {
            state.view.changed();
        }
        if msg.is_request() {
            state.touched();
        }
        match msg {
            TwinMsg::Tick { generation } => {
                if generation == state.generation {
                    // An engine failure on the clock is a crash of the twin: the
                    // host restarts it from its last checkpoint.
                    state
                        .tick(&myself)
                        .map_err(|e| Box::new(e) as ActorProcessingErr)?;
                }
            }
            TwinMsg::Op { op, reply } => {
                if let TwinOp::InjectFault { fault, .. } = &op {
                    metrics::counter!("hanzo_twin_chaos_injections_total", "scenario" => fault.scenario())
                        .increment(1);
                }
                if let TwinOp::InjectFault {
                    fault: Fault::Panic,
                    child: None,
                } = op
                {
                    let _ = reply.send(Ok(TwinOpReply::Done));
                    panic!("fault injected into twin {}: panic", state.id);
                }
                if let TwinOp::Render(request) = op {
                    // The pool answers; the twin goes on stepping meanwhile.
                    if let Err(e) = state.render(*request, reply) {
                        tracing::debug!(twin = %state.id, "render refused: {e}");
                    }
                    return Ok(());
                }
                let result = state.op(&myself, op).await;
                let _ = reply.send(result.clone());
                fail_if_it_cannot_go_on(result)?;
            }
            TwinMsg::Renamed { name } => state.name = name,
            TwinMsg::IdleCheck { generation } => state.idle_check(&myself, generation),
            TwinMsg::Passivate => state.final_checkpoint = true,
            TwinMsg::RestartChild { index, generation } => {
                if let Some((event, followup)) =
                    state.children.restart(index, generation, &myself).await
                {
                    state.children_changed(&myself, event.into_iter().collect(), vec![followup]);
                }
            }
            TwinMsg::SetSync { sync, reply } => {
                let previous = std::mem::take(&mut state.sync);
                let (sync, children) = crate::sync::TwinSync::start(
                    &sync,
                    &state.twin_label,
                    &state.stream,
                    Some(previous),
                );
                state.sync = sync;
                state.sync.attach(myself.clone());
                let (events, followups) = state.children.replace(children, &myself).await;
                state.children_changed(&myself, events, followups);
                // Readings a batch left queued are due now in realtime; in
                // batch, at the end of the new period.
                state.sync_generation += 1;
                if state.sync.window().is_none() && state.sync.has_queued() {
                    state.sync.take(state.sim.as_mut());
                }
                state.schedule_sync_window(&myself);
                // A replay's speed is the realtime clock's rate: count it
                // from now.
                if state.clock == Clock::Realtime {
                    state.set_clock(&myself, Clock::Realtime);
                }
                let _ = reply.send(Ok(()));
            }
            TwinMsg::SyncReadings => state.sync.take(state.sim.as_mut()),
            TwinMsg::Recalibrated { result } => {
                state.sync.recalibrated(state.sim.as_mut(), *result);
            }
            TwinMsg::SyncWindow { generation } => {
                if generation == state.sync_generation {
                    state.sync.take(state.sim.as_mut());
                    state.schedule_sync_window(&myself);
                }
            }
            TwinMsg::ForkSimulation { reply } => {
                let _ = reply.send(state.sim.fork().map_err(TwinError::from));
            }
            TwinMsg::ForkInto { deliver } => deliver(if state.sim.kind().forks_in_memory() {
                state
                    .sim
                    .fork()
                    .map(|simulation| {
                        Some(crate::protocol::LiveCopy {
                            simulation: sync_wrapper::SyncWrapper::new(simulation),
                            scene: state.scene.clone(),
                        })
                    })
                    .map_err(TwinError::from)
            } else {
                Ok(None)
            }),
            TwinMsg::Prediction { reply } => {
                let _ = reply.send(Ok(state.sync.prediction(state.id, state.sim.as_ref())));
            }
            TwinMsg::Children { reply } => {
                let _ = reply.send(Ok(state.children.reports()));
            }
            TwinMsg::CheckpointDue => {
                state.checkpoint_scheduled = false;
                if state.steps_since_checkpoint > 0 {
                    state.checkpoint();
                }
            }
            TwinMsg::GetState { reply } => {
                let _ = reply.send(state.sim.state().map_err(TwinError::from));
            }
            TwinMsg::SetState {
                state: new_state,
                reply,
            } => {
                let result = state.sim.set_state(&new_state).map_err(TwinError::from);
                if result.is_ok() {
                    state.sync.state_replaced();
                    state.checkpoint();
                    state.record();
                    // The real-time clock restarts from the restored instant.
                    let clock = state.clock;
                    state.set_clock(&myself, clock);
                }
                let _ = reply.send(result);
            }
            TwinMsg::Recording { reply } => {
                let recording = Recording {
                    step_hz: state.step_hz,
                    bodies: state.record_bodies.clone(),
                    frames: state.frames.iter().cloned().collect(),
                };
                let _ = reply.send(Ok((state.scene.clone(), recording)));
            }
        }
        Ok(())
    }
}

/// Validates every command first so a bad one leaves the simulation untouched.
/// Every parameter `sim`'s engine tunes: each joint's drive gains, each
/// body's friction and mass, where it has them.
fn all_parameters(
    sim: &dyn hanzo_twin_engines::Simulation,
) -> Result<std::collections::BTreeMap<String, f64>, TwinError> {
    let scene = sim.observation("/")?;
    let joints = scene
        .joints
        .iter()
        .flat_map(|j| [(j.path.as_str(), "stiffness"), (j.path.as_str(), "damping")]);
    let bodies = scene
        .bodies
        .iter()
        .flat_map(|b| [(b.path.as_str(), "friction"), (b.path.as_str(), "mass")]);
    let mut values = std::collections::BTreeMap::new();
    for (prim, name) in joints.chain(bodies) {
        match sim.parameter(prim, name) {
            // A fixed body's mass is no parameter (it reads 0).
            Ok(v) if v.is_finite() && !(name == "mass" && v <= 0.0) => {
                values.insert(format!("{prim}.{name}"), v);
            }
            Ok(_) | Err(EngineError::Invalid { .. } | EngineError::UnknownPath { .. }) => {}
            Err(EngineError::Unsupported { .. }) => return Ok(values),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(values)
}

/// `/Prim/Path.parameter`, or an error naming `field`.
fn parameter_key<'a>(
    field: &str,
    key: &'a str,
) -> Result<(crate::definition::Target, &'a str), TwinError> {
    let target = crate::definition::Target::parse(key).map_err(|e| TwinError::invalid(field, e))?;
    let parameter = match target.attribute.as_deref() {
        Some(a) => key.len() - a.len(),
        None => {
            return Err(TwinError::invalid(
                field,
                format!("`{key}` names no parameter: write /Prim/Path.parameter"),
            ));
        }
    };
    Ok((target, &key[parameter..]))
}

/// An engine's refusal of a parameter, as an error naming `field`.
fn parameter_error(field: &str, e: EngineError) -> TwinError {
    match e {
        EngineError::Invalid { message, .. } => TwinError::invalid(field, message),
        EngineError::UnknownPath { .. } | EngineError::Unsupported { .. } => {
            TwinError::invalid(field, e.to_string())
        }
        other => other.into(),
    }
}

fn apply_commands(
    sim: &mut dyn Simulation,
    commands: &[crate::protocol::JointCommandEntry],
) -> Result<(), TwinError> {
    if commands.is_empty() {
        return Err(TwinError::invalid("commands", "no commands given"));
    }
    for (i, c) in commands.iter().enumerate() {
        if !c.command.value().is_finite() {
            return Err(TwinError::invalid(
                format!("commands[{i}].value"),
                format!("must be a finite number, got {}", c.command.value()),
            ));
        }
        // Reading the joint proves it exists before anything is applied.
        let is_joint = match sim.observation(&c.joint) {
            Ok(obs) => obs.joints.iter().any(|j| j.path == c.joint),
            Err(EngineError::UnknownPath { .. }) => false,
            Err(other) => return Err(other.into()),
        };
        if !is_joint {
            return Err(TwinError::invalid(
                format!("commands[{i}].joint"),
                format!("no joint at {}", c.joint),
            ));
        }
    }
    for (i, c) in commands.iter().enumerate() {
        sim.set_joint_command(&c.joint, c.command)
            .map_err(|e| match e {
                EngineError::UnknownPath { .. } => TwinError::invalid(
                    format!("commands[{i}].joint"),
                    format!("{} is not a joint", c.joint),
                ),
                other => other.into(),
            })?;
    }
    Ok(())
}

/// A simulation that diverged, or an engine that failed (a dead worker
/// process), leaves nothing to serve: the twin fails too, and the host
/// restarts it from its last good checkpoint.
fn fail_if_it_cannot_go_on<T>(result: Result<T, TwinError>) -> Result<(), ActorProcessingErr> {
    match result {
        Err(e @ TwinError::Engine { kind, .. }) if kind.ends_the_simulation() => Err(Box::new(e)),
        _ => Ok(()),
    }
}

//! The twin host: the one actor on a node that every twin request goes through.
//! It owns the twin records, spawns twin actors as its supervised children,
//! restarts crashed twins from their last checkpoint, and routes messages to
//! running twins by id (the shape of Akka's ShardRegion, so the cluster layer can
//! route to a host on another node without registering every twin cluster-wide).
//!
//! Each part of its state has one owner: `registry` the records held here,
//! `activations` which of them have an actor (and what waits for those
//! changing), `record_writer` every durable write of a record, and
//! `Checkpoints`, `SceneLoader`, `GymEnvs` and `TreeEvents` theirs. This file
//! is the lifecycle (create, start, stop, update, delete, crash and
//! passivation); `forks` is forking; `placement` is which twins a
//! cluster node holds; `messages` is what the host is asked.

mod activations;
mod forks;
mod messages;
mod placement;
mod record_writer;
mod registry;

pub use messages::{HostMsg, Launched, Rebalanced};

use crate::checkpoints::Checkpoints;
use crate::definition::{DEFAULT_ORGANIZATION, Name, TwinDefinition};
use crate::direct::{DirectRoute, RouteCache};
use crate::error::TwinError;
use crate::inspector::TreeEvents;
use crate::protocol::{Reply, Scope, StartOptions, TwinMsg, TwinRef, call_actor};
use crate::record::{Clock, Lifecycle, TwinId, TwinRecord};
use crate::remote::Placement;
use crate::scenes::{SceneFetcher, SceneLoader, SceneReader};
use crate::store::{BoxFuture, CheckpointStore, TwinStore};
use crate::twin::{TwinActor, TwinArgs};
use activations::{Activations, Ended, Running};
use hanzo_twin_engines::{EngineRegistry, SceneModel, SimState};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use record_writer::{Durable, RecordWriter};
use registry::Registry;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a node's twin host behaves.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This node's id, reported in twin status.
    pub node_id: String,
    /// Relative scene URIs resolve here; no scene outside it is opened.
    pub scenes_root: PathBuf,
    /// Simulated seconds between periodic checkpoints of a running twin...
    pub checkpoint_interval_s: f64,
    /// ...and the least wall time between two of them.
    pub checkpoint_min_interval: Duration,
    /// A twin that crashes more than this many times within `restart_window` is
    /// marked failed instead of restarted (Erlang's restart intensity).
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// How long the host waits for a twin's answer.
    pub call_timeout: Duration,
    /// Deactivate a running twin that is paused, has no children, and no
    /// request reached for this long (`None`: never).
    pub passivate_after: Option<Duration>,
    /// Body poses recorded per simulated second for export (0: no recording).
    pub record_hz: f64,
    /// Simulated seconds of recording kept per twin (the newest).
    pub record_seconds: f64,
    /// Gymnasium's `ant.xml`, which the `ant-v5` task runs on.
    pub ant_xml: Option<PathBuf>,
    /// In a cluster: how long a node's heartbeat in the shared store counts;
    /// the twins of a node silent for longer are taken over.
    pub lease: Duration,
    /// The node's Kafka stream, for Kafka publishers.
    pub stream: Arc<crate::sync::StreamSettings>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            node_id: "local".into(),
            scenes_root: PathBuf::from("."),
            checkpoint_interval_s: 5.0,
            checkpoint_min_interval: Duration::from_secs(1),
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            passivate_after: None,
            record_hz: 30.0,
            record_seconds: 120.0,
            ant_xml: None,
            lease: Duration::from_secs(3),
            stream: Default::default(),
        }
    }
}

#[derive(Clone)]
pub struct HostArgs {
    pub config: HostConfig,
    pub engines: EngineRegistry,
    pub store: Arc<dyn TwinStore>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub scene_reader: SceneReader,
    /// Makes scenes of the node's library (`scene://<name>`) readable as local
    /// files; without it such scenes are refused.
    pub scene_fetcher: Option<SceneFetcher>,
    /// Which twins this node should hold, in a cluster; `None`: all of them.
    pub placement: Option<Arc<dyn Placement>>,
    /// Callers' resolved twin actors ([`crate::direct`]), which the host
    /// invalidates when a key may change meaning.
    pub routes: Arc<RouteCache>,
}

pub struct TwinHost;

/// What a twin's start gathered off the host's loop.
pub struct Launch {
    scene: Arc<SceneModel>,
    initial: Option<Arc<SimState>>,
    options: StartOptions,
}

/// What a twin's actor starts from.
enum StartFrom {
    /// The scene's initial state.
    Scene,
    /// A checkpoint or a parent's state message.
    State(Arc<SimState>),
    /// A simulation already loaded: a copy of a fork's parent.
    Live(Box<dyn hanzo_twin_engines::Simulation>),
}

impl StartFrom {
    fn state(state: Option<Arc<SimState>>) -> StartFrom {
        state.map_or(StartFrom::Scene, StartFrom::State)
    }
}

/// What the host keeps of a twin actor it spawns, to record it as running.
pub struct Activation {
    from_checkpoint: bool,
    spawned: Arc<std::sync::OnceLock<ActorId>>,
    messages: crate::inspector::MessageCount,
    children: crate::children::ChildBoard,
    view: Arc<crate::direct::TwinView>,
    scene: Arc<SceneModel>,
    clock: Clock,
    crashes: VecDeque<Instant>,
}

/// Spawns a twin's actor, supervised by the host.
async fn spawn_twin_actor(
    host: &ActorRef<HostMsg>,
    id: TwinId,
    args: TwinArgs,
) -> Result<ActorRef<TwinMsg>, ractor::SpawnErr> {
    Actor::spawn_linked(Some(format!("twin:{id}")), TwinActor, args, host.get_cell())
        .await
        .map(|(actor, _)| actor)
}

/// What a fork starts from.
enum ForkOrigin {
    /// A state message: from a stopped parent, another node, or an engine
    /// whose copy is costly.
    State(Arc<SimState>),
    /// A copy of the running parent's simulation, made by the parent.
    Live(Box<dyn hanzo_twin_engines::Simulation>),
}

pub struct HostState {
    config: HostConfig,
    engines: EngineRegistry,
    store: Arc<dyn TwinStore>,
    /// Every write of a twin record goes through it, in order.
    writer: RecordWriter,
    scenes: SceneLoader,
    records: Registry,
    /// Which twins have an actor, and what waits for those changing.
    activations: Activations,
    /// Durable checkpoints, read when a twin starts without one in memory.
    checkpoint_store: Arc<dyn CheckpointStore>,
    /// The newest checkpoint of each twin held here, and their writer.
    checkpoints: Checkpoints,
    /// What changes the supervision tree, for whoever watches it.
    tree: TreeEvents,
    /// RL environment batches, supervised like twins.
    gym: crate::gym::GymEnvs,
    placement: Option<Arc<dyn Placement>>,
}

fn storage(e: crate::store::StoreError) -> TwinError {
    if e.is_conflict() {
        TwinError::Conflict(e.to_string())
    } else {
        TwinError::Storage(e.to_string())
    }
}

impl HostState {
    /// Finds a twin by id or name among those `twin.scope` admits.
    fn resolve(&self, twin: &TwinRef) -> Result<TwinId, TwinError> {
        self.records.resolve(twin)
    }

    fn record(&self, id: TwinId) -> Result<&TwinRecord, TwinError> {
        self.records
            .get(id)
            .ok_or_else(|| TwinError::NotFound(id.to_string()))
    }

    /// Holds `record` now and queues its durable write behind the host's
    /// earlier ones, so the host's loop never waits for the disk; whoever
    /// answers a caller waits for the returned write (forks have none).
    async fn save_queued(&mut self, mut record: TwinRecord) -> (TwinRecord, Option<Durable>) {
        record.updated_at = chrono::Utc::now();
        let durable = if record.ephemeral {
            None
        } else {
            Some(self.writer.put(record.clone()).await)
        };
        self.hold(record.clone());
        (record, durable)
    }

    /// This node's supervision tree: the node, its host, and under the host
    /// every twin (running or not) and gym batch.
    fn tree(&self, scope: &Scope) -> crate::inspector::ActorNode {
        use crate::inspector::ActorNode;
        let twins = self.records.records().filter(|r| scope.admits(r)).map(|r| {
            let running = self.activations.get(r.id);
            let mut node =
                ActorNode::twin(r, running.map(|x| (x.actor.get_id(), x.messages.get())));
            if let Some(running) = running {
                node.children = running
                    .children
                    .reports()
                    .iter()
                    .map(|c| c.tree_node())
                    .collect();
            }
            node
        });
        ActorNode::node(
            &self.config.node_id,
            twins.collect(),
            self.gym.tree_nodes(scope),
        )
    }

    async fn stored_checkpoint(&self, id: TwinId) -> Result<Option<Arc<SimState>>, TwinError> {
        newest_checkpoint(&self.checkpoints, &self.checkpoint_store, id).await
    }

    /// Spawns the twin's actor and records it as running.
    async fn spawn_twin(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        scene: Arc<SceneModel>,
        clock: Clock,
        from: StartFrom,
        crashes: VecDeque<Instant>,
    ) -> Result<(), TwinError> {
        let (args, activation) = self.twin_args(myself, id, scene, clock, from, crashes)?;
        let spawned = spawn_twin_actor(myself, id, args).await;
        self.activate(id, activation, spawned)
    }

    /// What the twin's actor is spawned with, and what the host keeps of it
    /// once it runs.
    fn twin_args(
        &self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        scene: Arc<SceneModel>,
        clock: Clock,
        from: StartFrom,
        crashes: VecDeque<Instant>,
    ) -> Result<(TwinArgs, Activation), TwinError> {
        let (initial_state, live) = match from {
            StartFrom::Scene => (None, None),
            StartFrom::State(state) => (Some(state), None),
            StartFrom::Live(sim) => (None, Some(sim)),
        };
        let record = self.record(id)?;
        let definition = &record.definition;
        let engine = self.engines.get(definition.engine.kind)?;
        let config = definition.engine.config.to_engine_config();
        let record_every_steps = if self.config.record_hz > 0.0 {
            ((config.step_hz / self.config.record_hz).round() as u64).max(1)
        } else {
            0
        };
        let checkpoint_every_steps =
            ((self.config.checkpoint_interval_s * config.step_hz).ceil() as u64).max(1);
        // The actor's id, known once it is spawned, tells the host which
        // incarnation reported itself idle.
        let spawned = Arc::new(std::sync::OnceLock::<ActorId>::new());
        let activation = Activation {
            from_checkpoint: initial_state.is_some(),
            spawned: spawned.clone(),
            messages: crate::inspector::MessageCount::default(),
            children: crate::children::ChildBoard::default(),
            view: Arc::default(),
            scene: scene.clone(),
            clock,
            crashes,
        };
        let args = TwinArgs {
            id,
            name: definition.name.to_string(),
            organization: definition.organization().to_string(),
            engine,
            scene,
            config,
            initial_state,
            simulation: live,
            clock,
            checkpoint_every_steps,
            record_every_steps,
            record_capacity: (self.config.record_hz * self.config.record_seconds).ceil() as usize,
            checkpoints: self.checkpoints.clone(),
            checkpoint_min_interval: self.config.checkpoint_min_interval,
            messages: activation.messages.clone(),
            stream: self.config.stream.clone(),
            // A fork is standalone: it never follows the parent's sources.
            sync: if record.ephemeral {
                crate::definition::SyncSpec::default()
            } else {
                definition.sync.clone()
            },
            child_board: activation.children.clone(),
            view: activation.view.clone(),
            tree_events: Some(self.tree.clone()),
            passivate_after: self.config.passivate_after,
            on_idle: Some(Arc::new({
                let host = myself.clone();
                move || {
                    if let Some(actor) = spawned.get() {
                        // A host that is gone passivates nothing.
                        let _ = host.send_message(HostMsg::Idle { id, actor: *actor });
                    }
                }
            })),
        };
        Ok((args, activation))
    }

    /// Records the twin's freshly spawned actor as running.
    fn activate(
        &mut self,
        id: TwinId,
        activation: Activation,
        spawned: Result<ActorRef<TwinMsg>, ractor::SpawnErr>,
    ) -> Result<(), TwinError> {
        let actor = spawned.map_err(|e| {
            let mut message = format!("twin {id} failed to start: {e}");
            if activation.from_checkpoint {
                message.push_str(
                    "; if the scene changed since the last checkpoint, start with reset to begin from the scene's initial state",
                );
            }
            TwinError::Failed {
                id: id.to_string(),
                reason: message,
            }
        })?;
        let _ = activation.spawned.set(actor.get_id());
        self.activations.add(
            id,
            Running {
                actor,
                view: activation.view,
                messages: activation.messages,
                scene: activation.scene,
                clock: activation.clock,
                crashes: activation.crashes,
                children: activation.children,
            },
        );
        self.tree.twin(self.record(id)?, "started", None);
        Ok(())
    }

    async fn call_twin<T: Send + 'static>(
        &self,
        id: TwinId,
        what: &'static str,
        build: impl FnOnce(Reply<T>) -> TwinMsg,
    ) -> Result<T, TwinError> {
        let running = self
            .activations
            .get(id)
            .ok_or_else(|| TwinError::NotRunning(id.to_string()))?;
        call_actor(&running.actor, id, what, self.config.call_timeout, build).await
    }

    /// Starts a twin now, waiting here for its scene (used while the host
    /// itself starts, and when it takes a twin over).
    async fn start(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        options: StartOptions,
    ) -> Result<TwinRecord, TwinError> {
        let (id, prepared) = self.prepare_start(twin, options)?;
        let prepared = prepared.await;
        let (record, durable) = self.launch(myself, id, prepared).await?;
        if let Some(durable) = durable {
            durable.wait().await.map_err(storage)?;
        }
        Ok(record)
    }

    /// The first half of a start: checks the twin may start and marks it
    /// starting, and returns the work that reads its scene and checkpoint,
    /// to run anywhere but the host's loop ([`HostState::launch`] finishes).
    fn prepare_start(
        &mut self,
        twin: &TwinRef,
        options: StartOptions,
    ) -> Result<(TwinId, BoxFuture<'static, Result<Launch, TwinError>>), TwinError> {
        let id = self.resolve(twin)?;
        if self.activations.is_running(id) {
            return Err(TwinError::Conflict(format!(
                "twin {twin} is already running"
            )));
        }
        if !self.activations.begin_settling(id) {
            return Err(TwinError::Conflict(format!(
                "twin {twin} is already starting"
            )));
        }
        let definition = self.record(id)?.definition.clone();
        let scenes = self.scenes.clone();
        let (checkpoints, stored) = (self.checkpoints.clone(), self.checkpoint_store.clone());
        Ok((
            id,
            Box::pin(async move {
                let scene = scenes.check_runnable(&definition).await?;
                let initial = if options.reset {
                    None
                } else {
                    newest_checkpoint(&checkpoints, &stored, id).await?
                };
                Ok(Launch {
                    scene,
                    initial,
                    options,
                })
            }),
        ))
    }

    /// The second half of a start: spawns the twin's actor from what
    /// [`HostState::prepare_start`] gathered.
    async fn launch(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        prepared: Result<Launch, TwinError>,
    ) -> Result<Saved, TwinError> {
        self.unpark(myself, id);
        let launch = prepared?;
        // Deleted, or started another way, while its scene was read.
        let mut record = self.record(id)?.clone();
        if self.activations.is_running(id) {
            return Err(TwinError::Conflict(format!("twin {id} is already running")));
        }
        let clock = launch.options.clock;
        let result = self
            .spawn_twin(
                myself,
                id,
                launch.scene,
                clock,
                StartFrom::state(launch.initial),
                VecDeque::new(),
            )
            .await;
        match result {
            Ok(()) => {
                record.status.state = Lifecycle::Running;
                record.status.clock = clock;
                record.status.passivated = false;
                record.status.restarts = 0;
                record.status.last_error = None;
                record.status.node = Some(self.config.node_id.clone());
                Ok(self.save_queued(record).await)
            }
            Err(e) => {
                record.status.state = Lifecycle::Stopped;
                record.status.last_error = Some(e.to_string());
                let (_, durable) = self.save_queued(record).await;
                log_if_not_durable(id, durable, "saving the failed start");
                Err(e)
            }
        }
    }

    /// Stops the twin's actor, keeping its final state as the checkpoint the next
    /// start resumes from.
    async fn stop_actor(&mut self, id: TwinId, keep_state: bool) {
        let Some(running) = self.activations.remove(id) else {
            return;
        };
        if keep_state {
            match call_actor(
                &running.actor,
                id,
                "state",
                self.config.call_timeout,
                |reply| TwinMsg::GetState { reply },
            )
            .await
            {
                Ok(state) => self.remember_checkpoint(id, Arc::new(state)),
                Err(e) => tracing::warn!(twin = %id, error = %e, "no final checkpoint on stop"),
            }
        }
        let _ = running
            .actor
            .stop_and_wait(Some("stopped".into()), Some(self.config.call_timeout))
            .await;
        if let Ok(record) = self.record(id).cloned() {
            self.tree.twin(&record, "stopped", None);
        }
    }

    fn remember_checkpoint(&mut self, id: TwinId, state: Arc<SimState>) {
        self.checkpoints.offer(id, state);
    }

    /// Holds `record` here: its requests are served and its checkpoints
    /// kept (durably unless it is a fork).
    fn hold(&mut self, record: TwinRecord) {
        self.checkpoints.register(record.id, !record.ephemeral);
        self.records.insert(record);
    }

    /// No longer holds the twin (deleted, handed off, held elsewhere): its
    /// record and in-memory checkpoint go; callers' routes to it are stale.
    fn unhold(&mut self, id: TwinId) {
        self.records.remove(id);
        self.checkpoints.release(id);
        self.activations.invalidate_routes();
    }

    /// The first half of an update: applies the merge patch to the
    /// definition and checks what the host knows. A new scene or engine is
    /// checked off the host's loop ([`HostState::finish_update`] ends).
    fn prepare_update(
        &self,
        twin: &TwinRef,
        patch: serde_json::Value,
    ) -> Result<PreparedUpdate, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?;
        if !patch.is_object() {
            return Err(TwinError::invalid(
                "",
                "a merge patch must be a JSON object",
            ));
        }
        let mut value = record.definition.to_value();
        json_patch::merge(&mut value, &patch);
        let definition = TwinDefinition::from_value(value)?;
        if definition.organization() != record.definition.organization() {
            return Err(TwinError::invalid(
                "organization",
                "a twin cannot move to another organization",
            ));
        }
        self.refuse_taken_name(&definition, Some(id))?;
        self.check_publishers(&definition)?;
        let physics_changed = definition.scene != record.definition.scene
            || definition.engine != record.definition.engine;
        if !physics_changed {
            return Ok(PreparedUpdate::Ready(id, Box::new(definition)));
        }
        if self.activations.is_running(id) {
            return Err(TwinError::Conflict(
                "stop the twin before changing its scene or engine".into(),
            ));
        }
        let scenes = self.scenes.clone();
        let base = record.updated_at;
        Ok(PreparedUpdate::CheckScene(
            id,
            base,
            Box::pin(async move {
                scenes.check_runnable(&definition).await?;
                Ok(definition)
            }),
        ))
    }

    /// The second half of an update whose scene was checked: applies it if
    /// the twin has not changed meanwhile.
    async fn finish_update(
        &mut self,
        id: TwinId,
        base: chrono::DateTime<chrono::Utc>,
        checked: Result<TwinDefinition, TwinError>,
    ) -> Result<Saved, TwinError> {
        let definition = checked?;
        let record = self.record(id)?;
        if record.updated_at != base {
            return Err(TwinError::Conflict(
                "the twin changed while its new scene was checked; send the change again".into(),
            ));
        }
        if self.activations.is_running(id) || self.activations.is_settling(id) {
            return Err(TwinError::Conflict(
                "stop the twin before changing its scene or engine".into(),
            ));
        }
        self.refuse_taken_name(&definition, Some(id))?;
        self.apply_update(id, definition).await
    }

    /// Stores the updated definition and tells the running actor what
    /// concerns it.
    async fn apply_update(
        &mut self,
        id: TwinId,
        definition: TwinDefinition,
    ) -> Result<Saved, TwinError> {
        let record = self.record(id)?.clone();
        let renamed = definition.name != record.definition.name;
        let resynced = definition.sync != record.definition.sync;
        let mut record = record;
        record.definition = definition;
        let (record, durable) = self.save_queued(record).await;
        if resynced
            && !record.ephemeral
            && let Some(running) = self.activations.get(id)
        {
            // The twin swaps its sources in its own loop; a failure to reach
            // it is a crash the host restarts with the new definition.
            let sync = record.definition.sync.clone();
            let _ = running.actor.cast(TwinMsg::SetSync {
                sync,
                reply: ractor::concurrency::oneshot().0.into(),
            });
        }
        if renamed {
            // Callers that named the twin by its old name must resolve again.
            self.activations.invalidate_routes();
            if let Some(running) = self.activations.get(id) {
                let name = record.definition.name.to_string();
                let _ = running.actor.cast(TwinMsg::Renamed { name });
            }
        }
        Ok((record, durable))
    }

    async fn crashed(&mut self, myself: &ActorRef<HostMsg>, id: TwinId, reason: String) {
        let Some(running) = self.activations.remove(id) else {
            return;
        };
        tracing::warn!(twin = %id, %reason, "twin crashed");
        metrics::counter!("hanzo_twin_crashes_total").increment(1);
        let mut crashes = running.crashes;
        let now = Instant::now();
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.restart_window)
        {
            crashes.pop_front();
        }
        crashes.push_back(now);
        let Ok(mut record) = self.record(id).cloned() else {
            return;
        };
        record.status.last_error = Some(reason.clone());
        self.tree.twin(&record, "failed", Some(reason.clone()));
        if crashes.len() as u32 > self.config.max_restarts {
            record.status.state = Lifecycle::Failed;
            record.status.last_error = Some(format!(
                "crashed {} times within {} s, not restarted; last error: {reason}",
                crashes.len(),
                self.config.restart_window.as_secs()
            ));
            tracing::error!(twin = %id, "twin exceeded its restart limit and is marked failed");
            self.tree
                .twin(&record, "gave_up", record.status.last_error.clone());
        } else {
            let checkpoint = self.checkpoints.latest(id);
            match self
                .spawn_twin(
                    myself,
                    id,
                    running.scene,
                    running.clock,
                    StartFrom::state(checkpoint),
                    crashes,
                )
                .await
            {
                Ok(()) => {
                    record.status.restarts += 1;
                    record.status.state = Lifecycle::Running;
                    self.tree.twin(&record, "restarted", None);
                    metrics::counter!("hanzo_twin_restarts_total").increment(1);
                }
                Err(e) => {
                    record.status.state = Lifecycle::Failed;
                    record.status.last_error = Some(format!("restart failed: {e}"));
                }
            }
        }
        let (_, durable) = self.save_queued(record).await;
        log_if_not_durable(id, durable, "saving the twin's status after its crash");
    }

    async fn handle_msg(&mut self, myself: &ActorRef<HostMsg>, msg: HostMsg) {
        // Outside a cluster every twin in the store is held here.
        if self.placement.is_some()
            && let Some(twin) = msg.twin_ref()
            && let Some(id) = TwinId::parse(&twin.key)
        {
            let scope = twin.scope.clone();
            if let Err(e) = self.ensure_held(myself, id, &scope).await {
                return msg.refuse(e);
            }
        }
        let changing = msg
            .twin_ref()
            .and_then(|twin| self.resolve(twin).ok())
            .filter(|id| self.activations.is_settling(*id));
        let msg = match changing {
            Some(id) => match self.activations.wait(id, msg) {
                None => return,
                Some(msg) => msg,
            },
            None => msg,
        };
        match msg {
            HostMsg::Create {
                definition,
                scope,
                reply,
            } => match self.prepare_create(definition, &scope) {
                Err(e) => drop(reply.send(Err(e))),
                Ok(check) => off_loop(myself, check, |checked| HostMsg::Admit { checked, reply }),
            },
            HostMsg::Admit { checked, reply } => match self.admit(checked).await {
                Err(e) => drop(reply.send(Err(e))),
                Ok((record, durable)) => {
                    // The disk is waited for here, off the host's loop;
                    // creates arriving meanwhile share the next flush.
                    let host = myself.clone();
                    tokio::spawn(async move {
                        let result = match durable.wait().await {
                            Ok(_) => Ok(record),
                            Err(e) => {
                                let _ = host.cast(HostMsg::Unadmit { id: record.id });
                                Err(storage(e))
                            }
                        };
                        let _ = reply.send(result);
                    });
                }
            },
            HostMsg::Unadmit { id } => {
                // Its record never became durable: the twin was not created.
                if !self.activations.is_running(id) {
                    self.unhold(id);
                }
            }
            HostMsg::CompareEngines {
                request,
                scope,
                reply,
            } => {
                // Reading the scene and minutes of stepping must not stall the host.
                let (scenes, engines) = (self.scenes.clone(), self.engines.clone());
                tokio::spawn(async move {
                    let result = crate::compare::run(&scenes, &engines, &request, &scope).await;
                    let _ = reply.send(result);
                });
            }
            HostMsg::Get { twin, reply } => {
                let result = self.resolve(&twin).and_then(|id| self.record(id).cloned());
                let _ = reply.send(result);
            }
            HostMsg::List {
                filter,
                scope,
                reply,
            } => {
                let _ = reply.send(Ok(self.records.page(&filter, &scope)));
            }
            HostMsg::Update { twin, patch, reply } => match self.prepare_update(&twin, patch) {
                Err(e) => drop(reply.send(Err(e))),
                Ok(PreparedUpdate::Ready(id, definition)) => {
                    let result = self.apply_update(id, *definition).await;
                    answer_when_durable(reply, result);
                }
                Ok(PreparedUpdate::CheckScene(id, base, check)) => {
                    off_loop(myself, check, move |checked| HostMsg::UpdateChecked {
                        id,
                        base,
                        checked,
                        reply,
                    });
                }
            },
            HostMsg::UpdateChecked {
                id,
                base,
                checked,
                reply,
            } => {
                let result = self.finish_update(id, base, checked).await;
                answer_when_durable(reply, result);
            }
            HostMsg::Delete { twin, reply } => match self.delete(myself, &twin).await {
                Err(e) => drop(reply.send(Err(e))),
                Ok(None) => drop(reply.send(Ok(()))),
                Ok(Some(erase)) => {
                    tokio::spawn(async move {
                        let _ = reply.send(erase.await);
                    });
                }
            },
            HostMsg::Rehold { record } => {
                // Its deletion failed: it is still stored, so still held
                // (stopped), unless it came back some other way meanwhile.
                if !self.records.contains(record.id) {
                    let mut record = *record;
                    if record.status.state == Lifecycle::Running {
                        record.status.state = Lifecycle::Stopped;
                    }
                    self.hold(record);
                }
            }
            HostMsg::Start {
                twin,
                options,
                reply,
            } => match self.prepare_start(&twin, options) {
                Err(e) => drop(reply.send(Err(e))),
                Ok((id, prepare)) => off_loop(myself, prepare, move |prepared| HostMsg::Launch {
                    id,
                    prepared,
                    then: Launched::Started(reply),
                }),
            },
            HostMsg::Launch { id, prepared, then } => {
                let result = self.launch(myself, id, prepared).await;
                match then {
                    Launched::Started(reply) => answer_when_durable(reply, result),
                    Launched::Reactivated(reply) => {
                        metrics::counter!("hanzo_twin_reactivations_total").increment(1);
                        let result = result.and_then(|(_, durable)| {
                            // Serving it does not wait for its status.
                            log_if_not_durable(id, durable, "saving the reactivated status");
                            self.activations
                                .get(id)
                                .map(|r| (r.route(), true))
                                .ok_or_else(|| self.not_running(id))
                        });
                        let _ = reply.send(result);
                    }
                }
            }
            HostMsg::Idle { id, actor } => self.passivate(id, actor).await,
            HostMsg::Stop { twin, reply } => {
                let result = self.stop(&twin).await;
                answer_when_durable(reply, result);
            }
            HostMsg::Fork {
                twin,
                options,
                reply,
            } => {
                let result = self.fork(myself, &twin, options).await;
                self.answer_fork(myself, reply, result);
            }
            HostMsg::ForkCopied {
                parent,
                copied,
                options,
                reply,
            } => {
                let result = match copied {
                    Ok(Some(copy)) => self.fork_copy(myself, &parent, copy, options).await,
                    Ok(None) => self.fork(myself, &parent, options).await,
                    Err(e) => Err(e),
                };
                self.answer_fork(myself, reply, result);
            }
            HostMsg::ForkSpawned {
                id,
                activation,
                spawned,
            } => self.fork_spawned(myself, id, *activation, spawned),
            HostMsg::Restore { twin, state, reply } => {
                let result = self.restore(&twin, state).await;
                let _ = reply.send(result);
            }
            HostMsg::Checkpoint { twin, reply } => {
                let result = self.checkpoint(&twin).await;
                let _ = reply.send(result);
            }
            HostMsg::Route { twin, msg } => {
                // A passivated twin comes back first: the request is parked
                // behind its reactivation and delivered once it runs.
                if let Ok(id) = self.resolve(&twin)
                    && !self.activations.is_running(id)
                    && self.is_passivated(id)
                {
                    let (tx, _) = ractor::concurrency::oneshot();
                    self.reactivate(myself, &twin, tx.into());
                    if self.activations.is_settling(id) {
                        if let Some(HostMsg::Route { twin, msg }) =
                            self.activations.wait(id, HostMsg::Route { twin, msg })
                        {
                            self.route(&twin, msg);
                        }
                        return;
                    }
                }
                self.route(&twin, msg)
            }
            HostMsg::Shutdown { reply } => {
                let ids = self.activations.running_ids();
                for id in ids {
                    self.stop_actor(id, true).await;
                }
                self.checkpoints.flush().await;
                if self.placement.is_some() {
                    // In a cluster: let the others take these twins over now,
                    // not when this node's lease runs out.
                    let held: Vec<TwinRecord> = self
                        .records
                        .records()
                        .filter(|r| !r.ephemeral)
                        .cloned()
                        .collect();
                    self.release(held).await;
                    self.records.clear();
                }
                let _ = reply.send(Ok(()));
            }
            HostMsg::Gym(msg) => {
                let records = &self.records;
                let twin = |target: &TwinRef| {
                    let id = records.resolve(target)?;
                    records
                        .get(id)
                        .cloned()
                        .ok_or_else(|| TwinError::NotFound(id.to_string()))
                };
                self.gym.handle(myself, msg, twin, &self.tree);
            }
            HostMsg::Tree { scope, reply } => {
                let _ = reply.send(Ok(self.tree(&scope)));
            }
            HostMsg::WatchTree { reply } => {
                let _ = reply.send(Ok(self.tree.subscribe()));
            }
            HostMsg::Resolve { twin, reply } => {
                let id = match self.resolve(&twin) {
                    Ok(id) => id,
                    Err(e) => return drop(reply.send(Err(e))),
                };
                if let Some(running) = self.activations.get(id) {
                    let _ = reply.send(Ok((running.route(), false)));
                } else if self.is_passivated(id) {
                    self.reactivate(myself, &twin, reply);
                } else {
                    let _ = reply.send(Err(self.not_running(id)));
                }
            }
            HostMsg::ForkSource { twin, reply } => {
                let result = self
                    .fork_source(&twin)
                    .await
                    .map(|(record, state, _)| (record, (*state).clone()));
                let _ = reply.send(result);
            }
            HostMsg::ForkFrom {
                parent,
                options,
                state,
                reply,
            } => {
                let result = self
                    .fork_from(
                        myself,
                        *parent,
                        options,
                        ForkOrigin::State(Arc::new(state)),
                        None,
                    )
                    .await;
                self.answer_fork(myself, reply, result);
            }
            HostMsg::AdoptFork {
                record,
                clock,
                state,
                reply,
            } => {
                let result = self.adopt_fork(myself, *record, clock, state).await;
                let _ = reply.send(result);
            }
            HostMsg::ListUnheld {
                filter,
                members,
                scope,
                reply,
            } => {
                // No node is named "": what no member holds, and not held here.
                let held: Vec<TwinId> = self.records.ids().collect();
                let result = self
                    .store
                    .claimable("", &members, &held)
                    .await
                    .map_err(storage)
                    .map(|all| {
                        let mut unheld = all
                            .into_iter()
                            .filter(|r| scope.admits(r) && filter.matches(r))
                            .collect();
                        filter.page(&mut unheld);
                        unheld
                    });
                let _ = reply.send(result);
            }
            HostMsg::Load { reply } => {
                let _ = reply.send(Ok(self.activations.count()));
            }
            HostMsg::Rebalance { max_moves, reply } => {
                let result = self.rebalance(myself, max_moves).await;
                let _ = reply.send(result);
            }
        }
    }

    /// The first half of a create: the organization and the name are
    /// checked here; the returned work reads the scene (off the host's loop)
    /// and [`HostState::admit`] finishes.
    fn prepare_create(
        &self,
        mut definition: TwinDefinition,
        scope: &Scope,
    ) -> Result<BoxFuture<'static, Result<TwinDefinition, TwinError>>, TwinError> {
        let organization = match (&definition.organization, scope) {
            (Some(declared), Scope::Organization(own)) if declared != own => {
                return Err(TwinError::Forbidden {
                    field: Some("organization".into()),
                    message: format!(
                        "you can only create twins in your own organization `{own}`, not `{declared}`; leave organization out or set it to `{own}`"
                    ),
                });
            }
            (Some(declared), _) => declared.clone(),
            (None, Scope::Organization(own)) => own.clone(),
            (None, Scope::Node) => Name::new(DEFAULT_ORGANIZATION)
                .map_err(|m| TwinError::Storage(format!("default organization: {m}")))?,
        };
        definition.organization = Some(organization);
        self.refuse_taken_name(&definition, None)?;
        self.check_publishers(&definition)?;
        let scenes = self.scenes.clone();
        Ok(Box::pin(async move {
            scenes.check_runnable(&definition).await?;
            Ok(definition)
        }))
    }

    /// The second half of a create: holds the checked definition as a new
    /// twin, unless its name was taken meanwhile, and queues its record's
    /// write. The name is taken from here on; the create is answered once
    /// the write is durable (see `HostMsg::Admit`).
    async fn admit(
        &mut self,
        checked: Result<TwinDefinition, TwinError>,
    ) -> Result<(TwinRecord, Durable), TwinError> {
        let definition = checked?;
        self.refuse_taken_name(&definition, None)?;
        let mut record = TwinRecord::new(definition);
        record.id = self.new_id();
        record.status.node = Some(self.config.node_id.clone());
        let durable = self.writer.put(record.clone()).await;
        self.hold(record.clone());
        Ok((record, durable))
    }

    /// Refuses publishers this node cannot serve (see `StreamSettings::check`).
    fn check_publishers(&self, definition: &TwinDefinition) -> Result<(), TwinError> {
        self.config
            .stream
            .check(&definition.sync)
            .map_err(|(field, message)| TwinError::invalid(&field, message))
    }

    /// Refuses a definition whose name another twin (than `except`) has in
    /// its organization.
    fn refuse_taken_name(
        &self,
        definition: &TwinDefinition,
        except: Option<TwinId>,
    ) -> Result<(), TwinError> {
        if self
            .records
            .name_taken(definition.organization(), definition.name.as_str(), except)
        {
            return Err(TwinError::Conflict(format!(
                "a twin named `{}` already exists in organization {}",
                definition.name,
                definition.organization()
            )));
        }
        Ok(())
    }

    /// Stops the twin and lets go of it; the returned work, run off the
    /// host's loop, waits for its record's deletion and then erases its
    /// checkpoint (none for a fork, which was never stored). A deletion
    /// that fails gives the twin back to the host.
    async fn delete(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
    ) -> Result<Option<BoxFuture<'static, Result<(), TwinError>>>, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?.clone();
        self.stop_actor(id, false).await;
        self.unhold(id);
        if record.ephemeral {
            return Ok(None);
        }
        let durable = self.writer.delete(id).await;
        let (host, checkpoints) = (myself.clone(), self.checkpoints.clone());
        Ok(Some(Box::pin(async move {
            match durable.wait().await {
                Ok(_) => {
                    checkpoints.delete(id).await;
                    Ok(())
                }
                Err(e) => {
                    let _ = host.cast(HostMsg::Rehold {
                        record: Box::new(record),
                    });
                    Err(storage(e))
                }
            }
        })))
    }

    async fn stop(&mut self, twin: &TwinRef) -> Result<Saved, TwinError> {
        let id = self.resolve(twin)?;
        let mut record = self.record(id)?.clone();
        if !self.activations.is_running(id)
            && record.status.state != Lifecycle::Failed
            && !self.is_passivated(id)
        {
            return Err(TwinError::Conflict(format!("twin {twin} is not running")));
        }
        self.stop_actor(id, true).await;
        record.status.state = Lifecycle::Stopped;
        record.status.passivated = false;
        Ok(self.save_queued(record).await)
    }

    async fn restore(&mut self, twin: &TwinRef, state: SimState) -> Result<TwinRecord, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?.clone();
        if state.engine != record.definition.engine.kind {
            return Err(TwinError::invalid(
                "checkpoint",
                format!(
                    "checkpoint is for engine {}, this twin runs {}",
                    state.engine, record.definition.engine.kind
                ),
            ));
        }
        if self.activations.is_running(id) {
            let s = state.clone();
            self.call_twin(id, "restore", |reply| TwinMsg::SetState { state: s, reply })
                .await?;
        } else {
            // Check it fits the scene now rather than at the next start.
            let scene = self.scenes.check_runnable(&record.definition).await?;
            if state.scene_fingerprint != scene.fingerprint() {
                return Err(TwinError::invalid(
                    "checkpoint",
                    "checkpoint belongs to a different scene than this twin's",
                ));
            }
        }
        self.remember_checkpoint(id, Arc::new(state));
        Ok(record)
    }

    async fn checkpoint(&mut self, twin: &TwinRef) -> Result<SimState, TwinError> {
        let id = self.resolve(twin)?;
        if self.activations.is_running(id) {
            return self
                .call_twin(id, "state", |reply| TwinMsg::GetState { reply })
                .await;
        }
        match self.stored_checkpoint(id).await? {
            Some(s) => Ok((*s).clone()),
            None => Err(TwinError::Conflict(format!(
                "twin {twin} has no checkpoint yet; start it first"
            ))),
        }
    }

    fn route(&self, twin: &TwinRef, msg: TwinMsg) {
        let id = match self.resolve(twin) {
            Ok(id) => id,
            Err(e) => return msg.reject(e),
        };
        match self.activations.get(id) {
            Some(running) => {
                if let Err(ractor::MessagingErr::SendErr(msg)) = running.actor.send_message(msg) {
                    msg.reject(TwinError::Unavailable(id.to_string()));
                }
            }
            None => msg.reject(self.not_running(id)),
        }
    }

    /// Handles again, in order, the requests that waited while `id` was
    /// starting or being passivated.
    fn unpark(&mut self, myself: &ActorRef<HostMsg>, id: TwinId) {
        for msg in self.activations.settle(id) {
            // The host's own mailbox: it is gone only when the host is.
            let _ = myself.send_message(msg);
        }
    }

    /// Running as far as its owner knows, with no actor: deactivated.
    fn is_passivated(&self, id: TwinId) -> bool {
        self.records
            .get(id)
            .is_some_and(|r| r.status.state == Lifecycle::Running && r.status.passivated)
    }

    /// Brings a passivated twin back from its checkpoint, paused, and
    /// answers `reply` with its actor once it runs; requests that name it
    /// meanwhile wait for it.
    fn reactivate(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        reply: Reply<(DirectRoute, bool)>,
    ) {
        let options = StartOptions {
            clock: Clock::Paused,
            reset: false,
        };
        match self.prepare_start(twin, options) {
            Err(e) => drop(reply.send(Err(e))),
            Ok((id, prepare)) => off_loop(myself, prepare, move |prepared| HostMsg::Launch {
                id,
                prepared,
                then: Launched::Reactivated(reply),
            }),
        }
    }

    /// Deactivates a twin its actor reported idle: the actor serves what is
    /// already queued, checkpoints its final state and ends; requests that
    /// come meanwhile wait, and the next one reactivates it.
    async fn passivate(&mut self, id: TwinId, actor: ActorId) {
        let Some(running) = self.activations.passivate(id, actor) else {
            return;
        };
        let _ = running.actor.cast(TwinMsg::Passivate);
        running.actor.drain().ok();
        metrics::counter!("hanzo_twin_passivations_total").increment(1);
        if let Ok(mut record) = self.record(id).cloned() {
            record.status.passivated = true;
            self.tree.twin(&record, "passivated", None);
            let (_, durable) = self.save_queued(record).await;
            log_if_not_durable(id, durable, "saving the passivated status");
        }
    }

    /// Why a twin held here that is not running cannot serve a request.
    fn not_running(&self, id: TwinId) -> TwinError {
        match self.records.get(id) {
            Some(r) if r.status.state == Lifecycle::Failed => TwinError::Failed {
                id: id.to_string(),
                reason: r.status.last_error.clone().unwrap_or_default(),
            },
            _ => TwinError::NotRunning(id.to_string()),
        }
    }
}

/// Runs `work` off the host's loop and hands its result back to the host
/// as the message `then` makes of it. A host that stopped meanwhile drops
/// the message, and with it any reply in it: the caller hears the host is
/// unavailable.
fn off_loop<T: Send + 'static>(
    host: &ActorRef<HostMsg>,
    work: BoxFuture<'static, T>,
    then: impl FnOnce(T) -> HostMsg + Send + 'static,
) {
    let host = host.clone();
    tokio::spawn(async move {
        let done = work.await;
        let _ = host.send_message(then(done));
    });
}

/// An update, checked as far as the host's loop goes.
enum PreparedUpdate {
    /// Nothing left to check.
    Ready(TwinId, Box<TwinDefinition>),
    /// A new scene or engine, to check off the loop against the record as it
    /// was last changed at the given time.
    CheckScene(
        TwinId,
        chrono::DateTime<chrono::Utc>,
        BoxFuture<'static, Result<TwinDefinition, TwinError>>,
    ),
}

/// A record held, and its write on the way (none for a fork).
type Saved = (TwinRecord, Option<Durable>);

/// Answers `reply` once the record's write is durable (at once without
/// one), off the host's loop; a write that failed is the answer.
fn answer_when_durable(reply: Reply<TwinRecord>, result: Result<Saved, TwinError>) {
    match result {
        Err(e) => drop(reply.send(Err(e))),
        Ok((record, None)) => drop(reply.send(Ok(record))),
        Ok((record, Some(durable))) => {
            tokio::spawn(async move {
                let result = durable.wait().await.map(|_| record).map_err(storage);
                let _ = reply.send(result);
            });
        }
    }
}

/// Logs a write nobody waits for if it fails.
fn log_if_not_durable(id: TwinId, durable: Option<Durable>, what: &'static str) {
    if let Some(durable) = durable {
        tokio::spawn(async move {
            if let Err(e) = durable.wait().await {
                tracing::error!(twin = %id, error = %e, "{what} failed");
            }
        });
    }
}

/// A twin's newest checkpoint: the one in memory, else the stored one.
async fn newest_checkpoint(
    checkpoints: &Checkpoints,
    stored: &Arc<dyn CheckpointStore>,
    id: TwinId,
) -> Result<Option<Arc<SimState>>, TwinError> {
    if let Some(s) = checkpoints.latest(id) {
        return Ok(Some(s));
    }
    match stored.get(id).await.map_err(storage)? {
        Some(bytes) => Ok(Some(Arc::new(SimState::from_bytes(&bytes)?))),
        None => Ok(None),
    }
}

impl Actor for TwinHost {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        let scenes = SceneLoader::new(
            args.config.scenes_root.clone(),
            args.engines.clone(),
            args.scene_reader,
            args.scene_fetcher,
        );
        let gym = crate::gym::GymEnvs::new(crate::gym::Setting {
            scenes: scenes.clone(),
            engines: args.engines.clone(),
            ant_xml: args.config.ant_xml.clone(),
            node: args.config.node_id.clone(),
        });
        let mut state = HostState {
            config: args.config,
            engines: args.engines,
            writer: RecordWriter::start(args.store.clone()),
            store: args.store,
            checkpoint_store: args.checkpoints.clone(),
            checkpoints: Checkpoints::start(args.checkpoints),
            scenes,
            records: Registry::default(),
            activations: Activations::new(args.routes),
            tree: TreeEvents::default(),
            gym,
            placement: args.placement,
        };
        if state.placement.is_some() {
            // In a cluster: hold only what placement gives this node and no
            // live node holds; the rest is served where it is.
            state.rebalance(&myself, 0).await?;
            return Ok(state);
        }
        let mut resume = Vec::new();
        // Forks are never stored (see `save`), so the store holds only lasting
        // twins. Outside a cluster this node holds every twin it finds.
        let me = state.config.node_id.clone();
        for mut record in state.store.list().await? {
            if record.status.node.as_deref() != Some(me.as_str()) {
                let from = record.status.node.clone();
                match state.store.claim(record.id, &me, from.as_deref()).await? {
                    Some(claimed) => record = claimed,
                    None => continue,
                }
            }
            if record.status.state == Lifecycle::Running && !record.status.passivated {
                resume.push((record.id, record.status.clock));
                // Stopped until it runs again (`start` refuses a running twin).
                record.status.state = Lifecycle::Stopped;
            }
            state.hold(record);
        }
        // Twins that were running when the node went down resume from their last
        // checkpoint; one that cannot is marked stopped with the reason.
        for (id, clock) in resume {
            let options = StartOptions {
                clock,
                reset: false,
            };
            let twin = TwinRef {
                key: id.to_string(),
                scope: Scope::Node,
            };
            if let Err(e) = state.start(&myself, &twin, options).await {
                tracing::error!(twin = %id, error = %e, "could not resume twin");
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<HostMsg>,
        msg: HostMsg,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle_msg(&myself, msg).await;
        Ok(())
    }

    /// ractor's default stops a supervisor when any child exits; a host instead
    /// restarts crashed twins and ignores the exits it asked for.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<HostMsg>,
        event: SupervisionEvent,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        // An actor ends failed (with why) or terminated (perhaps with why).
        let (actor, failure, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let err = err.to_string();
                (cell.get_id(), Some(err.clone()), err)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                None,
                reason.unwrap_or_else(|| "terminated unexpectedly".into()),
            ),
            _ => return Ok(()),
        };
        if state.gym.ended(actor, failure, &state.tree) {
            return Ok(());
        }
        match state.activations.ended(actor) {
            // A passivated twin's actor is done: its final checkpoint is in
            // its slot, and what waited for it is handled again.
            Ended::Passivated(id) => state.unpark(&myself, id),
            Ended::Current(id) => state.crashed(&myself, id, reason).await,
            Ended::Released => {}
        }
        Ok(())
    }
}

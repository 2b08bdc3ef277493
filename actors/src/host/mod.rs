//! The twin host: the one actor on a node that every twin request goes through.
//! It owns the twin records, spawns twin actors as its supervised children,
//! restarts crashed twins from their last checkpoint, and routes messages to
//! running twins by id (the shape of Akka's ShardRegion, so the cluster layer can
//! route to a host on another node without registering every twin cluster-wide).
//!
//! Each part of its state has one owner: `registry` the records held here,
//! `activations` which of them have an actor (and what waits for those
//! changing), `record_writer` every durable write of a record, and
//! `Checkpoints`, `SceneLoader`, `GymEnvs` and `TreeEvents` theirs. The
//! host's requests come in families, each with its module: `lifecycle`
//! (create, update, start, stop, delete, restore, checkpoint, crash and
//! passivation, as [`LifecycleMsg`]), `forks`, `placement` (which twins a
//! cluster node holds) and the RL batches ([`crate::gym`]); `messages` is
//! what the host is asked. This file spawns twin actors, routes to them,
//! draws the tree and dispatches.

mod activations;
mod forks;
mod lifecycle;
mod messages;
mod placement;
mod record_writer;
mod registry;

pub use messages::{HostMsg, Launched, LifecycleMsg, Rebalanced};

use crate::checkpoints::Checkpoints;
use crate::direct::RouteCache;
use crate::error::TwinError;
use crate::inspector::TreeEvents;
use crate::protocol::{Reply, Scope, StartOptions, TwinMsg, TwinRef, call_actor};
use crate::record::{Clock, Lifecycle, TwinId, TwinRecord};
use crate::remote::Placement;
use crate::scenes::{SceneFetcher, SceneLoader, SceneReader};
use crate::store::{CheckpointStore, TwinStore};
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
    /// An RL environment batch no request reached for this long is deleted
    /// (`None`: never).
    pub gym_idle_timeout: Option<Duration>,
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
            gym_idle_timeout: None,
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
    /// The node's render workers, handed to every twin.
    pub render: crate::render::RenderWorkers,
    /// The jobs the node's jobs host runs, for the tree.
    pub jobs: crate::inspector::JobsBoard,
}

pub struct TwinHost;

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
    render: crate::render::RenderWorkers,
    jobs: crate::inspector::JobsBoard,
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
            let mut node = ActorNode::twin(r, running.map(|x| (x.actor.get_id(), &x.messages)));
            if let Some(running) = running {
                node.mailbox = Some(running.view.mailbox.depth());
                node.children = running
                    .children
                    .reports()
                    .iter()
                    .map(|c| ActorNode {
                        organization: node.organization.clone(),
                        ..c.tree_node()
                    })
                    .collect();
            }
            node
        });
        let mut tree = ActorNode::node(
            &self.config.node_id,
            twins.collect(),
            self.gym.tree_nodes(scope),
            self.render.tree_node(),
            self.jobs.tree_node(|org| scope.admits_organization(org)),
        );
        tree.attach_timelines(&self.tree.timelines(), None);
        tree
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
            render: self.render.clone(),
            tree_events: Some(self.tree.clone()),
            passivate_after: self.config.passivate_after,
            on_idle: Some(Arc::new({
                let host = myself.clone();
                move || {
                    if let Some(actor) = spawned.get() {
                        // A host that is gone passivates nothing.
                        let _ = host.send_message(LifecycleMsg::Idle { id, actor: *actor }.into());
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
            // A node at its cap for the engine refuses as such (503), not as
            // a twin that failed.
            if let ractor::SpawnErr::StartupFailed(cause) = &e
                && let Some(hanzo_twin_engines::EngineError::AtCapacity {
                    engine,
                    max,
                    setting,
                }) = cause.downcast_ref()
            {
                return TwinError::from(hanzo_twin_engines::EngineError::AtCapacity {
                    engine: *engine,
                    max: *max,
                    setting: setting.clone(),
                });
            }
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
    /// record and in-memory checkpoint go; callers' routes to it are stale
    /// (its actor, if any is left, is retired; other twins' routes stay).
    fn unhold(&mut self, id: TwinId) {
        self.records.remove(id);
        self.checkpoints.release(id);
        self.activations.retire(id);
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
            HostMsg::Lifecycle(msg) => self.handle_lifecycle(myself, msg).await,
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
            HostMsg::LaunchFork { launch } => {
                // The caller woken by the answer runs first on this thread.
                let launch = launch.into_inner();
                tokio::task::yield_now().await;
                self.launch_fork(myself, *launch);
            }
            HostMsg::ForkSpawned {
                id,
                activation,
                spawned,
            } => self.fork_spawned(myself, id, *activation, spawned),
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
            idle_timeout: args.config.gym_idle_timeout,
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
            render: args.render,
            jobs: args.jobs,
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
        if state.gym.ended(actor, failure, &reason, &state.tree) {
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

//! The twin host: the one actor on a node that every twin request goes through.
//! It owns the twin records, spawns twin actors as its supervised children,
//! restarts crashed twins from their last checkpoint, and routes messages to
//! running twins by id (the shape of Akka's ShardRegion, so the cluster layer can
//! route to a host on another node without registering every twin cluster-wide).

use crate::definition::{DEFAULT_ORGANIZATION, Name, PrimPath, SceneUri, TwinDefinition};
use crate::error::TwinError;
use crate::protocol::{ForkOptions, HostMsg, Reply, Scope, StartOptions, TwinMsg, TwinRef};
use crate::record::{Clock, Lifecycle, TwinId, TwinRecord};
use crate::remote::Placement;
use crate::store::{CheckpointStore, TwinStore};
use crate::twin::{TwinActor, TwinArgs};
use hanzo_twin_engines::{EngineError, EngineRegistry, SceneModel, SimState};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How a node's twin host behaves.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This node's id, reported in twin status.
    pub node_id: String,
    /// Relative scene URIs resolve here; no scene outside it is opened.
    pub scenes_root: PathBuf,
    /// Simulated seconds between periodic checkpoints of a running twin.
    pub checkpoint_interval_s: f64,
    /// A twin that crashes more than this many times within `restart_window` is
    /// marked failed instead of restarted (Erlang's restart intensity).
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// How long the host waits for a twin's answer.
    pub call_timeout: Duration,
    /// Body poses recorded per simulated second for export (0: no recording).
    pub record_hz: f64,
    /// Simulated seconds of recording kept per twin (the newest).
    pub record_seconds: f64,
    /// Gymnasium's `ant.xml`, which the `ant-v5` task runs on.
    pub ant_xml: Option<PathBuf>,
    /// In a cluster: how long a node's heartbeat in the shared store counts;
    /// the twins of a node silent for longer are taken over.
    pub lease: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            node_id: "local".into(),
            scenes_root: PathBuf::from("."),
            checkpoint_interval_s: 5.0,
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            record_hz: 30.0,
            record_seconds: 120.0,
            ant_xml: None,
            lease: Duration::from_secs(3),
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
}

/// A layer that sublayers `root` and references each component file at its
/// prim path (asset paths absolute, so the layer may live anywhere).
fn composed_layer(root: &Path, parts: &[(PrimPath, PathBuf)]) -> String {
    /// One prim of the layer: a component reference, or a parent of some.
    #[derive(Default)]
    struct Spec {
        reference: Option<PathBuf>,
        children: std::collections::BTreeMap<String, Spec>,
    }
    fn write(out: &mut String, name: &str, spec: &Spec, depth: usize) {
        let indent = "    ".repeat(depth);
        match &spec.reference {
            Some(file) => out.push_str(&format!(
                "{indent}def Xform \"{name}\" (\n{indent}    prepend references = @{}@\n{indent})\n",
                file.display()
            )),
            // Typeless `def`: the root's own opinions keep the prim's type.
            None => out.push_str(&format!("{indent}def \"{name}\"\n")),
        }
        out.push_str(&format!("{indent}{{\n"));
        for (child, child_spec) in &spec.children {
            write(out, child, child_spec, depth + 1);
        }
        out.push_str(&format!("{indent}}}\n"));
    }
    let mut tree = Spec::default();
    for (path, file) in parts {
        let mut node = &mut tree;
        for name in path.names() {
            node = node.children.entry(name.to_string()).or_default();
        }
        node.reference = Some(file.clone());
    }
    let mut out = format!(
        "#usda 1.0\n(\n    subLayers = [@{}@]\n)\n\n",
        root.display()
    );
    for (name, spec) in &tree.children {
        write(&mut out, name, spec, 0);
    }
    out
}

/// Fetches version `version` (latest when `None`) of library scene `name` of
/// organization `org` to a local folder, returning its root USD file.
pub type SceneFetcher = Arc<
    dyn Fn(
            String,
            String,
            Option<u32>,
        ) -> crate::store::BoxFuture<'static, Result<PathBuf, TwinError>>
        + Send
        + Sync,
>;

/// Reads a USD file into a scene model. The node daemon reads scenes in a child
/// process, so a file that makes the USD library abort (it can, on corrupt
/// binary files, by asking for absurd allocations) cannot take the node down;
/// embedded nodes trust their own files and read in-process.
pub type SceneReader = Arc<
    dyn Fn(PathBuf) -> crate::store::BoxFuture<'static, Result<SceneModel, EngineError>>
        + Send
        + Sync,
>;

/// Reads scenes on a blocking thread of this process.
pub fn in_process_scene_reader() -> SceneReader {
    Arc::new(|path: PathBuf| {
        Box::pin(async move {
            let file = path.display().to_string();
            tokio::task::spawn_blocking(move || hanzo_twin_engines::scene::read_scene_file(&path))
                .await
                .unwrap_or_else(|e| {
                    Err(EngineError::SceneRead {
                        file,
                        message: format!("the scene reader stopped: {e}"),
                    })
                })
        })
    })
}

pub struct TwinHost;

struct Running {
    actor: ActorRef<TwinMsg>,
    messages: crate::inspector::MessageCount,
    scene: Arc<SceneModel>,
    clock: Clock,
    /// When this twin crashed recently, for the restart-intensity limit.
    crashes: VecDeque<Instant>,
}

enum WriteJob {
    Put(TwinId, Arc<SimState>),
    Delete(TwinId, oneshot::Sender<()>),
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

pub struct HostState {
    config: HostConfig,
    engines: EngineRegistry,
    store: Arc<dyn TwinStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    scene_reader: SceneReader,
    scene_fetcher: Option<SceneFetcher>,
    records: HashMap<TwinId, TwinRecord>,
    running: HashMap<TwinId, Running>,
    by_actor: HashMap<ActorId, TwinId>,
    last_checkpoint: HashMap<TwinId, Arc<SimState>>,
    /// Checkpoint writes go through one task in order, so an older checkpoint can
    /// never overwrite a newer one, and a delete is never undone by a late write.
    writer: mpsc::UnboundedSender<WriteJob>,
    /// What changes the supervision tree, for whoever watches it.
    tree_events: tokio::sync::broadcast::Sender<crate::inspector::TreeEvent>,
    /// RL environment batches, supervised like twins.
    gym: crate::gym::GymEnvs,
    placement: Option<Arc<dyn Placement>>,
    /// Scenes loaded for states that came from other nodes, by fingerprint, so
    /// the next fork from there skips reading the scene again.
    remote_scenes: HashMap<u64, Arc<SceneModel>>,
}

/// Scenes kept in [`HostState::remote_scenes`].
const REMOTE_SCENES_KEPT: usize = 32;

fn storage(e: crate::store::StoreError) -> TwinError {
    if e.is_conflict() {
        TwinError::Conflict(e.to_string())
    } else {
        TwinError::Storage(e.to_string())
    }
}

/// A twin's queued write: the state to put (`None`: delete) and a delete's ack.
type PendingWrite = (TwinId, Option<Arc<SimState>>, Option<oneshot::Sender<()>>);

fn checkpoint_writer(checkpoints: Arc<dyn CheckpointStore>) -> mpsc::UnboundedSender<WriteJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WriteJob>();
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            // Coalesce: of several queued checkpoints of one twin only the newest
            // is worth writing.
            let mut jobs = vec![job];
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            let mut pending: Vec<PendingWrite> = Vec::new();
            let mut flushes = Vec::new();
            for job in jobs {
                let (id, state, ack) = match job {
                    WriteJob::Put(id, s) => (id, Some(s), None),
                    WriteJob::Delete(id, ack) => (id, None, Some(ack)),
                    WriteJob::Flush(ack) => {
                        flushes.push(ack);
                        continue;
                    }
                };
                match pending.iter_mut().find(|(pid, _, _)| *pid == id) {
                    // A later job for the same twin supersedes the earlier one,
                    // but acks of deletes must still be answered.
                    Some(slot) if slot.2.is_none() => *slot = (id, state, ack),
                    _ => pending.push((id, state, ack)),
                }
            }
            for (id, state, ack) in pending {
                match state {
                    Some(state) => {
                        let bytes = state.to_bytes();
                        if let Err(e) = checkpoints.put(id, bytes).await {
                            tracing::error!(twin = %id, error = %e, "writing checkpoint failed");
                        }
                    }
                    None => {
                        if let Err(e) = checkpoints.delete(id).await {
                            tracing::error!(twin = %id, error = %e, "deleting checkpoint failed");
                        }
                    }
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            for ack in flushes {
                let _ = ack.send(());
            }
        }
    });
    tx
}

impl HostState {
    /// Finds a twin by id or name among those `twin.scope` admits; others answer
    /// exactly as a twin that does not exist.
    fn resolve(&self, twin: &TwinRef) -> Result<TwinId, TwinError> {
        let key = twin.key.as_str();
        if let Some(id) = TwinId::parse(key)
            && let Some(r) = self.records.get(&id)
        {
            return if twin.scope.admits(r) {
                Ok(id)
            } else {
                Err(TwinError::NotFound(key.to_string()))
            };
        }
        let mut matches = self
            .records
            .values()
            .filter(|r| r.definition.name.as_str() == key && twin.scope.admits(r));
        match (matches.next(), matches.next()) {
            (Some(r), None) => Ok(r.id),
            (None, _) => Err(TwinError::NotFound(key.to_string())),
            (Some(_), Some(_)) => Err(TwinError::Conflict(format!(
                "name `{twin}` matches twins in several organizations; use the twin's id"
            ))),
        }
    }

    fn record(&self, id: TwinId) -> Result<&TwinRecord, TwinError> {
        self.records
            .get(&id)
            .ok_or_else(|| TwinError::NotFound(id.to_string()))
    }

    fn name_taken(&self, org: &str, name: &Name, except: Option<TwinId>) -> bool {
        self.records.values().any(|r| {
            Some(r.id) != except && r.definition.organization() == org && &r.definition.name == name
        })
    }

    async fn save(&mut self, mut record: TwinRecord) -> Result<TwinRecord, TwinError> {
        record.updated_at = chrono::Utc::now();
        // Forks live and die with this process: nothing about them is worth a
        // durable write (which would dominate fork latency).
        if !record.ephemeral {
            self.store.put(&record).await.map_err(storage)?;
        }
        self.records.insert(record.id, record.clone());
        Ok(record)
    }

    /// Resolves a scene URI inside the scene folder. Paths that leave it are
    /// refused, so a definition cannot make the node read arbitrary files.
    fn scene_path(&self, uri: &str) -> Result<PathBuf, TwinError> {
        let raw = uri.strip_prefix("file://").unwrap_or(uri);
        let path = Path::new(raw);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(TwinError::invalid(
                    "scene.uri",
                    format!("`{uri}` may not contain `..`"),
                ));
            }
            self.config.scenes_root.join(path)
        };
        let root = self.config.scenes_root.canonicalize().map_err(|e| {
            TwinError::Storage(format!(
                "scene folder {} is not readable: {e}",
                self.config.scenes_root.display()
            ))
        })?;
        let resolved = joined.canonicalize().map_err(|e| {
            TwinError::invalid("scene.uri", format!("cannot open scene `{uri}`: {e}"))
        })?;
        if !resolved.starts_with(&root) {
            return Err(TwinError::invalid(
                "scene.uri",
                format!(
                    "`{uri}` is outside this node's scene folder {}",
                    root.display()
                ),
            ));
        }
        Ok(resolved)
    }

    /// A local file for a scene URI: a path under the scene folder, or a
    /// library scene fetched for `org`. Errors name `field`.
    async fn resolve_scene(
        &self,
        org: &str,
        uri: &SceneUri,
        version: Option<u32>,
        field: &str,
    ) -> Result<PathBuf, TwinError> {
        let renamed = |e: TwinError| match e {
            TwinError::Invalid(mut d) => {
                d.field = field.to_string();
                TwinError::Invalid(d)
            }
            other => other,
        };
        match uri.library_ref() {
            Some((name, pinned)) => {
                let fetch = self
                    .scene_fetcher
                    .as_ref()
                    .ok_or_else(|| TwinError::invalid(field, "this node keeps no scene library"))?;
                fetch(org.to_string(), name.to_string(), pinned.or(version))
                    .await
                    .map_err(renamed)
            }
            None => self.scene_path(uri.as_str()).map_err(renamed),
        }
    }

    async fn load_scene(&self, definition: &TwinDefinition) -> Result<Arc<SceneModel>, TwinError> {
        self.load_scene_spec(definition.organization(), &definition.scene)
            .await
    }

    async fn load_scene_spec(
        &self,
        org: &str,
        spec: &crate::definition::SceneSpec,
    ) -> Result<Arc<SceneModel>, TwinError> {
        let root = self
            .resolve_scene(org, &spec.uri, spec.version, "scene.uri")
            .await?;
        if spec.composition.is_empty() {
            return Ok(Arc::new((self.scene_reader)(root).await?));
        }
        if hanzo_twin_engines::scene::is_mjcf(spec.uri.as_str()) {
            return Err(TwinError::invalid(
                "scene.composition",
                "an MJCF model cannot be composed with USD; give a USD root scene",
            ));
        }
        let mut parts = Vec::new();
        for (i, c) in spec.composition.iter().enumerate() {
            let field = format!("scene.composition[{i}]");
            for (j, other) in spec.composition.iter().enumerate().take(i) {
                let (a, b) = (c.path.names(), other.path.names());
                if a.starts_with(&b) || b.starts_with(&a) {
                    return Err(TwinError::invalid(
                        format!("{field}.path"),
                        format!(
                            "{} overlaps composition[{j}] at {}; attach components at separate prims",
                            c.path.as_str(),
                            other.path.as_str()
                        ),
                    ));
                }
            }
            if hanzo_twin_engines::scene::is_mjcf(c.reference.as_str()) {
                return Err(TwinError::invalid(
                    format!("{field}.ref"),
                    "composition attaches USD files; an MJCF model can only be a whole scene",
                ));
            }
            let file = self
                .resolve_scene(org, &c.reference, None, &format!("{field}.ref"))
                .await?;
            parts.push((c.path.clone(), file));
        }
        // The components attach as USD references in a layer over the root, so
        // USD's own composition (and its cycle detection) does the work.
        let wrapper = std::env::temp_dir().join(format!(
            "hanzo-twin-composed-{}.usda",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&wrapper, composed_layer(&root, &parts))
            .map_err(|e| TwinError::Storage(format!("cannot write {}: {e}", wrapper.display())))?;
        let scene = (self.scene_reader)(wrapper.clone()).await;
        let _ = std::fs::remove_file(&wrapper);
        // Errors name the composition, not the node's internal layer.
        let scene = scene.map_err(|e| match TwinError::from(e) {
            TwinError::Engine { kind, message, .. } => TwinError::Engine {
                kind,
                field: Some("scene.composition".into()),
                message: message.replace(
                    &wrapper.display().to_string(),
                    "the composed scene (scene.uri with scene.composition)",
                ),
            },
            other => other,
        })?;
        Ok(Arc::new(scene))
    }

    /// The scene and engines of a comparison, each checked with the field it came from.
    async fn prepare_comparison(
        &self,
        request: &crate::protocol::CompareRequest,
        scope: &Scope,
    ) -> Result<(Arc<SceneModel>, Vec<Arc<dyn hanzo_twin_engines::Engine>>), TwinError> {
        let mut engines = Vec::new();
        for (i, kind) in request.engines.iter().enumerate() {
            if request.engines[..i].contains(kind) {
                return Err(TwinError::invalid(
                    format!("engines[{i}]"),
                    format!("{kind} is named twice"),
                ));
            }
            engines.push(self.engines.get(*kind).map_err(|e| TwinError::Engine {
                kind: "not_available",
                field: Some(format!("engines[{i}]")),
                message: e.to_string(),
            })?);
        }
        let org = match scope {
            Scope::Organization(org) => org.as_str(),
            Scope::Node => crate::definition::DEFAULT_ORGANIZATION,
        };
        let scene = self.load_scene_spec(org, &request.scene).await?;
        if let Some(native) = &scene.native
            && let Some(i) = request
                .engines
                .iter()
                .position(|k| *k != native.format.engine())
        {
            return Err(TwinError::invalid(
                format!("engines[{i}]"),
                format!(
                    "the scene is an MJCF model, which only {} loads; compare engines on a USD scene",
                    native.format.engine()
                ),
            ));
        }
        Ok((scene, engines))
    }

    /// Tells watchers of the supervision tree what happened to a twin's actor.
    fn tree_event(&self, record: &TwinRecord, event: &str, detail: Option<String>) {
        let kind = if record.ephemeral { "fork" } else { "twin" };
        let org = record.definition.organization();
        self.emit_for(org, record.definition.name.as_str(), kind, event, detail);
    }

    /// A gym batch's event.
    fn emit(&self, id: &str, kind: &str, event: &str, detail: Option<String>) {
        let org = self
            .gym
            .envs
            .get(id)
            .map(|(_, info)| info.organization.clone())
            .unwrap_or_default();
        self.emit_for(&org, id, kind, event, detail);
    }

    fn emit_for(&self, org: &str, name: &str, kind: &str, event: &str, detail: Option<String>) {
        // Nobody watching is fine.
        let _ = self.tree_events.send(crate::inspector::TreeEvent {
            at: chrono::Utc::now(),
            organization: org.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            event: event.to_string(),
            detail,
        });
    }

    /// This node's supervision tree: the node, its host, and under the host
    /// every twin (running or not) and gym batch.
    fn tree(&self, scope: &Scope) -> crate::inspector::ActorNode {
        use crate::inspector::ActorNode;
        let mut twins: Vec<ActorNode> = self
            .records
            .values()
            .filter(|r| scope.admits(r))
            .map(|r| {
                let running = self.running.get(&r.id);
                let status = match (running, r.status.state) {
                    (Some(_), _) => "running",
                    (None, Lifecycle::Failed) => "failed",
                    (None, _) => "stopped",
                };
                ActorNode {
                    actor_id: running.map(|x| x.actor.get_id().to_string()),
                    name: r.definition.name.to_string(),
                    kind: if r.ephemeral { "fork" } else { "twin" }.into(),
                    status: status.into(),
                    target: Some(r.id.to_string()),
                    restarts: r.status.restarts,
                    messages: running.map_or(0, |x| x.messages.get()),
                    children: Vec::new(),
                }
            })
            .collect();
        twins.sort_by(|a, b| a.name.cmp(&b.name));
        let gyms = self.gym.list(scope).into_iter().filter_map(|info| {
            let (actor, _) = self.gym.envs.get(&info.id)?;
            Some((info.id.clone(), actor, info))
        });
        let gyms = gyms.map(|(id, actor, info)| ActorNode {
            actor_id: Some(actor.get_id().to_string()),
            name: id.clone(),
            kind: "gym".into(),
            status: "running".into(),
            target: Some(format!("{} × {}", info.task, info.num_envs)),
            restarts: 0,
            messages: self.gym.messages.get(&id).map_or(0, |m| m.get()),
            children: Vec::new(),
        });
        let mut gyms: Vec<ActorNode> = gyms.collect();
        gyms.sort_by(|a, b| a.name.cmp(&b.name));
        twins.extend(gyms);
        let host = ActorNode {
            actor_id: None,
            name: "twin-host".into(),
            kind: "host".into(),
            status: "running".into(),
            target: None,
            restarts: 0,
            messages: 0,
            children: twins,
        };
        ActorNode {
            actor_id: None,
            name: format!("node:{}", self.config.node_id),
            kind: "node".into(),
            status: "running".into(),
            target: None,
            restarts: 0,
            messages: 0,
            children: vec![host],
        }
    }

    /// Resolves what a gym request names (task, scene, engine, randomization)
    /// while the host's state is at hand; the batch is built elsewhere.
    async fn prepare_gym(
        &self,
        request: crate::gym::GymEnvRequest,
        owner: String,
        scope: &Scope,
    ) -> Result<crate::gym::GymBuild, TwinError> {
        use crate::gym::TaskRef;
        if request.num_envs == 0 || request.num_envs > crate::gym::MAX_ENVS {
            return Err(TwinError::invalid(
                "num_envs",
                format!("must be between 1 and {}", crate::gym::MAX_ENVS),
            ));
        }
        if request.threads > 256 {
            return Err(TwinError::invalid(
                "threads",
                "must be at most 256 (0 is one per core)",
            ));
        }
        let organization = match scope {
            Scope::Organization(org) => org.as_str().to_string(),
            Scope::Node => crate::definition::DEFAULT_ORGANIZATION.to_string(),
        };
        let twin = match &request.twin_id {
            Some(key) => {
                let id = self.resolve(&TwinRef {
                    key: key.clone(),
                    scope: scope.clone(),
                })?;
                Some(self.record(id)?.clone())
            }
            None => None,
        };
        let randomization = match (&request.domain_randomization, &twin) {
            (Some(d), _) => d.enabled.then(|| d.parameters.clone()),
            (None, Some(t)) => t
                .definition
                .domain_randomization
                .as_ref()
                .filter(|d| d.enabled)
                .map(|d| d.parameters.clone()),
            (None, None) => None,
        };
        let source = match (&request.task, &twin, &request.scene) {
            (TaskRef::Builtin(name), None, None) => crate::gym::TaskSource::Builtin {
                name: name.clone(),
                engine: request.engine,
                ant_xml: self.config.ant_xml.clone(),
            },
            (TaskRef::Builtin(name), _, _) => {
                return Err(TwinError::invalid(
                    "task",
                    format!(
                        "the built-in task {name} runs on its own scene; give a task spec (observation, action, reward terms) to run on a twin's or a scene's"
                    ),
                ));
            }
            (TaskRef::Spec(_), Some(_), Some(_)) => {
                return Err(TwinError::invalid(
                    "scene",
                    "give twin_id or scene, not both",
                ));
            }
            (TaskRef::Spec(spec), Some(t), None) => {
                let scene = self.load_scene(&t.definition).await?;
                let kind = request.engine.unwrap_or(t.definition.engine.kind);
                crate::gym::TaskSource::Scene {
                    spec: spec.clone(),
                    scene,
                    engine: self.engines.get(kind)?,
                }
            }
            (TaskRef::Spec(spec), None, Some(scene_spec)) => {
                let scene = self.load_scene_spec(&organization, scene_spec).await?;
                let kind = request.engine.unwrap_or(spec.engine);
                crate::gym::TaskSource::Scene {
                    spec: spec.clone(),
                    scene,
                    engine: self.engines.get(kind)?,
                }
            }
            (TaskRef::Spec(_), None, None) => {
                return Err(TwinError::invalid(
                    "scene",
                    "a task spec needs a scene: give twin_id or scene",
                ));
            }
        };
        Ok(crate::gym::GymBuild {
            source,
            config: hanzo_twin_engines::gym::VecEnvConfig {
                num_envs: request.num_envs,
                threads: request.threads,
                autoreset: request.autoreset_mode,
                randomization,
            },
            organization,
            owner,
            twin_id: twin.map(|t| t.id.to_string()),
            node: self.config.node_id.clone(),
        })
    }

    /// Checks what a definition needs from this node: its engine and a readable scene.
    async fn check_runnable(
        &self,
        definition: &TwinDefinition,
    ) -> Result<Arc<SceneModel>, TwinError> {
        let engine = self.engines.get(definition.engine.kind)?;
        engine.check_config(&definition.engine.config.to_engine_config())?;
        let scene = self.load_scene(definition).await?;
        if let Some(native) = &scene.native
            && native.format.engine() != definition.engine.kind
        {
            return Err(TwinError::invalid(
                "engine.type",
                format!(
                    "the scene is an {:?} model, which only the {} engine loads; convert it to USD to run it on {}",
                    native.format,
                    native.format.engine(),
                    definition.engine.kind
                )
                .replace("Mjcf", "MJCF"),
            ));
        }
        Ok(scene)
    }

    async fn stored_checkpoint(&self, id: TwinId) -> Result<Option<Arc<SimState>>, TwinError> {
        if let Some(s) = self.last_checkpoint.get(&id) {
            return Ok(Some(s.clone()));
        }
        match self.checkpoints.get(id).await.map_err(storage)? {
            Some(bytes) => Ok(Some(Arc::new(SimState::from_bytes(&bytes)?))),
            None => Ok(None),
        }
    }

    /// Spawns the twin's actor and records it as running.
    async fn spawn_twin(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        scene: Arc<SceneModel>,
        clock: Clock,
        initial_state: Option<Arc<SimState>>,
        crashes: VecDeque<Instant>,
    ) -> Result<(), TwinError> {
        let record = self.record(id)?.clone();
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
        let from_checkpoint = initial_state.is_some();
        let args = TwinArgs {
            id,
            organization: definition.organization().to_string(),
            engine,
            scene: scene.clone(),
            config,
            initial_state,
            clock,
            checkpoint_every_steps,
            record_every_steps,
            record_capacity: (self.config.record_hz * self.config.record_seconds).ceil() as usize,
            host: myself.clone(),
            messages: crate::inspector::MessageCount::default(),
        };
        let messages = args.messages.clone();
        let (actor, _handle) =
            Actor::spawn_linked(Some(format!("twin:{id}")), TwinActor, args, myself.get_cell())
                .await
                .map_err(|e| {
                    let mut message = format!("twin {id} failed to start: {e}");
                    if from_checkpoint {
                        message.push_str(
                            "; if the scene changed since the last checkpoint, start with reset to begin from the scene's initial state",
                        );
                    }
                    TwinError::Failed {
                        id: id.to_string(),
                        reason: message,
                    }
                })?;
        self.by_actor.insert(actor.get_id(), id);
        self.running.insert(
            id,
            Running {
                actor,
                messages,
                scene,
                clock,
                crashes,
            },
        );
        self.tree_event(&record, "started", None);
        Ok(())
    }

    async fn call_twin<T: Send + 'static>(
        &self,
        id: TwinId,
        what: &'static str,
        build: impl FnOnce(Reply<T>) -> TwinMsg,
    ) -> Result<T, TwinError> {
        let running = self
            .running
            .get(&id)
            .ok_or_else(|| TwinError::NotRunning(id.to_string()))?;
        call_actor(&running.actor, id, what, self.config.call_timeout, build).await
    }

    async fn start(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        options: StartOptions,
    ) -> Result<TwinRecord, TwinError> {
        let id = self.resolve(twin)?;
        if self.running.contains_key(&id) {
            return Err(TwinError::Conflict(format!(
                "twin {twin} is already running"
            )));
        }
        let definition = self.record(id)?.definition.clone();
        let scene = self.check_runnable(&definition).await?;
        let initial = if options.reset {
            None
        } else {
            self.stored_checkpoint(id).await?
        };
        let result = self
            .spawn_twin(myself, id, scene, options.clock, initial, VecDeque::new())
            .await;
        let mut record = self.record(id)?.clone();
        match result {
            Ok(()) => {
                record.status.state = Lifecycle::Running;
                record.status.clock = options.clock;
                record.status.restarts = 0;
                record.status.last_error = None;
                record.status.node = Some(self.config.node_id.clone());
                self.save(record).await
            }
            Err(e) => {
                record.status.state = Lifecycle::Stopped;
                record.status.last_error = Some(e.to_string());
                self.save(record).await?;
                Err(e)
            }
        }
    }

    /// Stops the twin's actor, keeping its final state as the checkpoint the next
    /// start resumes from.
    async fn stop_actor(&mut self, id: TwinId, keep_state: bool) {
        let Some(running) = self.running.remove(&id) else {
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
            self.tree_event(&record, "stopped", None);
        }
    }

    fn remember_checkpoint(&mut self, id: TwinId, state: Arc<SimState>) {
        self.last_checkpoint.insert(id, state.clone());
        if self.records.get(&id).is_some_and(|r| !r.ephemeral) {
            let _ = self.writer.send(WriteJob::Put(id, state));
        }
    }

    async fn forget_checkpoint(&mut self, id: TwinId) {
        self.last_checkpoint.remove(&id);
        let (ack, done) = oneshot::channel();
        if self.writer.send(WriteJob::Delete(id, ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// A fresh twin id that placement puts on this node, so requests for the
    /// new twin are routed here.
    fn new_id(&self) -> TwinId {
        let Some(placement) = &self.placement else {
            return TwinId::new();
        };
        // With n nodes about one id in n is ours; 10k tries never run out in
        // practice, and the fallback only costs a hand-off.
        (0..10_000)
            .map(|_| TwinId::new())
            .find(|id| placement.owns(&id.to_string()))
            .unwrap_or_default()
    }

    /// What a fork of `twin` starts from: its record, its state (live when it
    /// runs, else its last checkpoint) and, when it runs, its loaded scene.
    async fn fork_source(
        &mut self,
        twin: &TwinRef,
    ) -> Result<(TwinRecord, Arc<SimState>, Option<Arc<SceneModel>>), TwinError> {
        let parent_id = self.resolve(twin)?;
        let parent = self.record(parent_id)?.clone();
        match self.running.get(&parent_id) {
            Some(running) => {
                let scene = running.scene.clone();
                let state = self
                    .call_twin(parent_id, "state", |reply| TwinMsg::GetState { reply })
                    .await?;
                Ok((parent, Arc::new(state), Some(scene)))
            }
            None => match self.stored_checkpoint(parent_id).await? {
                Some(state) => Ok((parent, state, None)),
                None => Err(TwinError::NotRunning(parent_id.to_string())),
            },
        }
    }

    async fn fork(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        options: ForkOptions,
    ) -> Result<TwinRecord, TwinError> {
        if let Some(node) = &options.node
            && node != crate::protocol::LEAST_LOADED
            && node != &self.config.node_id
        {
            return Err(TwinError::invalid(
                "node",
                format!(
                    "no node `{node}` here: this node ({}) is not in a cluster",
                    self.config.node_id
                ),
            ));
        }
        let (parent, state, scene) = self.fork_source(twin).await?;
        self.fork_from(myself, parent, options, state, scene).await
    }

    /// Spawns a fork of `parent` from `state` on this node (the parent may
    /// live on another).
    async fn fork_from(
        &mut self,
        myself: &ActorRef<HostMsg>,
        parent: TwinRecord,
        options: ForkOptions,
        state: Arc<SimState>,
        scene: Option<Arc<SceneModel>>,
    ) -> Result<TwinRecord, TwinError> {
        let started = Instant::now();
        let name = match &options.name {
            Some(n) => Name::new(n).map_err(|m| TwinError::invalid("name", m))?,
            None => {
                let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
                let base: String = parent.definition.name.as_str().chars().take(40).collect();
                Name::new(&format!("{base}-fork-{suffix}"))
                    .map_err(|m| TwinError::invalid("name", m))?
            }
        };
        if self.name_taken(parent.definition.organization(), &name, None) {
            return Err(TwinError::Conflict(format!(
                "a twin named `{name}` already exists in organization {}",
                parent.definition.organization()
            )));
        }
        let scene = match scene {
            Some(scene) => scene,
            None => self.scene_for_state(&parent.definition, &state).await?,
        };
        let mut definition = parent.definition.clone();
        definition.name = name;
        let mut record = TwinRecord::new(definition);
        record.id = self.new_id();
        record.parent = Some(parent.id);
        record.ephemeral = true;
        let record = self.save(record).await?;
        let id = record.id;
        if let Err(e) = self
            .spawn_twin(
                myself,
                id,
                scene,
                options.clock,
                Some(state),
                VecDeque::new(),
            )
            .await
        {
            // Nothing half-made stays behind.
            self.records.remove(&id);
            return Err(e);
        }
        let mut record = record;
        record.status.state = Lifecycle::Running;
        record.status.clock = options.clock;
        record.status.node = Some(self.config.node_id.clone());
        let record = self.save(record).await?;
        metrics::histogram!("hanzo_twin_fork_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(record)
    }

    /// The scene a state from another node runs in: one loaded for an earlier
    /// state of the same scene, else the definition's, read now.
    async fn scene_for_state(
        &mut self,
        definition: &TwinDefinition,
        state: &SimState,
    ) -> Result<Arc<SceneModel>, TwinError> {
        if let Some(scene) = self.remote_scenes.get(&state.scene_fingerprint) {
            let engine = self.engines.get(definition.engine.kind)?;
            engine.check_config(&definition.engine.config.to_engine_config())?;
            return Ok(scene.clone());
        }
        let scene = self.check_runnable(definition).await?;
        if self.remote_scenes.len() >= REMOTE_SCENES_KEPT {
            self.remote_scenes.clear();
        }
        self.remote_scenes
            .insert(scene.fingerprint(), scene.clone());
        Ok(scene)
    }

    /// Takes over a running fork handed off by another node.
    async fn adopt_fork(
        &mut self,
        myself: &ActorRef<HostMsg>,
        mut record: TwinRecord,
        clock: Clock,
        state: SimState,
    ) -> Result<TwinRecord, TwinError> {
        let id = record.id;
        if self.records.contains_key(&id) {
            return Err(TwinError::Conflict(format!("fork {id} is already here")));
        }
        let scene = self.scene_for_state(&record.definition, &state).await?;
        record.status.node = Some(self.config.node_id.clone());
        record.status.state = Lifecycle::Running;
        record.status.clock = clock;
        self.records.insert(id, record.clone());
        if let Err(e) = self
            .spawn_twin(
                myself,
                id,
                scene,
                clock,
                Some(Arc::new(state)),
                VecDeque::new(),
            )
            .await
        {
            self.records.remove(&id);
            return Err(e);
        }
        Ok(record)
    }

    /// Hands off up to `max_moves` twins placement moved away, then takes over
    /// the twins placement gives this node that no live node holds.
    async fn rebalance(
        &mut self,
        myself: &ActorRef<HostMsg>,
        max_moves: usize,
    ) -> Result<crate::protocol::Rebalanced, TwinError> {
        let mut done = crate::protocol::Rebalanced::default();
        let Some(placement) = self.placement.clone() else {
            return Ok(done);
        };
        let away: Vec<TwinId> = self
            .records
            .keys()
            .filter(|id| !placement.owns(&id.to_string()))
            .copied()
            .take(max_moves)
            .collect();
        for id in away {
            let record = self.record(id)?.clone();
            let clock = self.running.get(&id).map(|r| r.clock);
            self.stop_actor(id, true).await;
            let state = self.last_checkpoint.remove(&id);
            if record.ephemeral {
                // A fork lives in no store: its state travels with it.
                self.records.remove(&id);
                match (clock, state) {
                    (Some(clock), Some(state)) => {
                        done.forks.push((record, clock, (*state).clone()));
                    }
                    _ => tracing::warn!(fork = %id, "fork had no state to hand off; it is gone"),
                }
                continue;
            }
            // The final checkpoint must be durable before the new owner may
            // start from it.
            let (ack, flushed) = oneshot::channel();
            if self.writer.send(WriteJob::Flush(ack)).is_ok() {
                let _ = flushed.await;
            }
            let mut released = record;
            released.status.node = None;
            released.updated_at = chrono::Utc::now();
            self.records.remove(&id);
            if let Err(e) = self.store.put(&released).await {
                tracing::error!(twin = %id, error = %e, "releasing the twin failed");
            }
            tracing::info!(twin = %id, "twin handed off to its new owner");
            self.tree_event(&released, "handed_off", None);
            metrics::counter!("hanzo_twin_handoffs_total").increment(1);
            done.released.push(id);
        }
        let live = self
            .store
            .live_nodes(self.config.lease)
            .await
            .map_err(storage)?;
        let me = self.config.node_id.clone();
        let mut lost = Vec::new();
        for record in self.store.list().await.map_err(storage)? {
            let id = record.id;
            if self.records.contains_key(&id) {
                if record.status.node.as_deref() != Some(me.as_str()) {
                    lost.push((id, record.status.node.clone()));
                }
                continue;
            }
            if !placement.owns(&id.to_string()) {
                continue;
            }
            let from = match &record.status.node {
                None => None,
                Some(holder) if *holder == me => None,
                Some(holder) => {
                    if live.as_ref().is_some_and(|l| l.contains(holder)) {
                        continue;
                    }
                    Some(holder.clone())
                }
            };
            match self.take_over(myself, id, from).await {
                Ok(true) => done.adopted.push(id),
                Ok(false) => {}
                Err(e) => tracing::error!(twin = %id, error = %e, "claiming the twin failed"),
            }
        }
        // Another node holds these now: this one was silent past its lease
        // (paused, cut off) and they were taken over. Stop them here, writing
        // nothing, so the twin runs once.
        for (id, holder) in lost {
            tracing::warn!(twin = %id, holder = ?holder, "another node took this twin over; stopping it here");
            self.stop_actor(id, false).await;
            self.records.remove(&id);
            self.last_checkpoint.remove(&id);
        }
        Ok(done)
    }

    /// Claims the twin in the store (from `from`, a holder whose lease ran
    /// out, if any) and holds it; `false` when another node got it first.
    async fn take_over(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        from: Option<String>,
    ) -> Result<bool, TwinError> {
        let me = self.config.node_id.clone();
        let Some(claimed) = self
            .store
            .claim(id, &me, from.as_deref())
            .await
            .map_err(storage)?
        else {
            return Ok(false);
        };
        if let Some(dead) = &from {
            tracing::warn!(twin = %id, node = %dead, "taking over a twin from a node that stopped answering");
        }
        self.adopt(myself, claimed).await;
        Ok(true)
    }

    /// Holds a twin claimed from the store; one that was running resumes from
    /// its last checkpoint.
    async fn adopt(&mut self, myself: &ActorRef<HostMsg>, mut record: TwinRecord) {
        let id = record.id;
        let resume = (record.status.state == Lifecycle::Running).then_some(record.status.clock);
        if resume.is_some() {
            record.status.state = Lifecycle::Stopped;
        }
        // A checkpoint cached from an earlier stay here is stale now.
        self.last_checkpoint.remove(&id);
        self.records.insert(id, record.clone());
        tracing::info!(twin = %id, "took the twin over");
        self.tree_event(&record, "adopted", None);
        if let Some(clock) = resume {
            let twin = TwinRef {
                key: id.to_string(),
                scope: Scope::Node,
            };
            let options = StartOptions {
                clock,
                reset: false,
            };
            if let Err(e) = self.start(myself, &twin, options).await {
                tracing::error!(twin = %id, error = %e, "could not resume the twin taken over");
            }
        }
    }

    async fn update(
        &mut self,
        twin: &TwinRef,
        patch: serde_json::Value,
    ) -> Result<TwinRecord, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?.clone();
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
        if self.name_taken(definition.organization(), &definition.name, Some(id)) {
            return Err(TwinError::Conflict(format!(
                "a twin named `{}` already exists in organization {}",
                definition.name,
                definition.organization()
            )));
        }
        let physics_changed = definition.scene != record.definition.scene
            || definition.engine != record.definition.engine;
        if physics_changed {
            if self.running.contains_key(&id) {
                return Err(TwinError::Conflict(
                    "stop the twin before changing its scene or engine".into(),
                ));
            }
            self.check_runnable(&definition).await?;
        }
        let mut record = record;
        record.definition = definition;
        self.save(record).await
    }

    async fn crashed(&mut self, myself: &ActorRef<HostMsg>, id: TwinId, reason: String) {
        let Some(running) = self.running.remove(&id) else {
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
        self.tree_event(&record, "failed", Some(reason.clone()));
        if crashes.len() as u32 > self.config.max_restarts {
            record.status.state = Lifecycle::Failed;
            record.status.last_error = Some(format!(
                "crashed {} times within {} s, not restarted; last error: {reason}",
                crashes.len(),
                self.config.restart_window.as_secs()
            ));
            tracing::error!(twin = %id, "twin exceeded its restart limit and is marked failed");
            self.tree_event(&record, "gave_up", record.status.last_error.clone());
        } else {
            let checkpoint = self.last_checkpoint.get(&id).cloned();
            match self
                .spawn_twin(
                    myself,
                    id,
                    running.scene,
                    running.clock,
                    checkpoint,
                    crashes,
                )
                .await
            {
                Ok(()) => {
                    record.status.restarts += 1;
                    record.status.state = Lifecycle::Running;
                    self.tree_event(&record, "restarted", None);
                    metrics::counter!("hanzo_twin_restarts_total").increment(1);
                }
                Err(e) => {
                    record.status.state = Lifecycle::Failed;
                    record.status.last_error = Some(format!("restart failed: {e}"));
                }
            }
        }
        if let Err(e) = self.save(record).await {
            tracing::error!(twin = %id, error = %e, "saving twin status failed");
        }
    }

    /// In a cluster, a request may name a twin this node does not hold yet
    /// (placement just gave it here) or no longer holds (it just moved). The
    /// shared store decides: a twin placement gives here that nobody live
    /// holds is taken over now; one another node holds is `Moving`.
    async fn ensure_held(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        scope: &Scope,
    ) -> Result<(), TwinError> {
        let Some(placement) = self.placement.clone() else {
            return Ok(());
        };
        if self.records.contains_key(&id) {
            return Ok(());
        }
        let Some(record) = self.store.get(id).await.map_err(storage)? else {
            return Ok(());
        };
        if !scope.admits(&record) {
            // Answered as unknown, like any twin outside the caller's scope.
            return Ok(());
        }
        let me = self.config.node_id.clone();
        let holder = record.status.node.clone();
        let owned = placement.owns(&id.to_string());
        let live = match &holder {
            Some(h) if *h != me => self
                .store
                .live_nodes(self.config.lease)
                .await
                .map_err(storage)?
                // A store this node keeps alone: no other node is alive in it.
                .is_some_and(|l| l.contains(h)),
            _ => false,
        };
        let mut holder = holder;
        if owned && !live {
            if self
                .take_over(myself, id, holder.clone().filter(|h| *h != me))
                .await?
            {
                return Ok(());
            }
            // Another node claimed it first: say which.
            holder = self
                .store
                .get(id)
                .await
                .map_err(storage)?
                .and_then(|r| r.status.node);
        }
        let from = holder.unwrap_or_else(|| "none".into());
        Err(TwinError::Moving {
            twin: id.to_string(),
            from,
            to: if owned { me } else { "its new owner".into() },
        })
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
        match msg {
            HostMsg::Create {
                definition,
                scope,
                reply,
            } => {
                let result = self.create(definition, &scope).await;
                let _ = reply.send(result);
            }
            HostMsg::CompareEngines {
                request,
                scope,
                reply,
            } => match self.prepare_comparison(&request, &scope).await {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok((scene, engines)) => {
                    // Minutes of stepping must not stall the host: run on a blocking thread.
                    let config = request.config.to_engine_config();
                    let run = request.run();
                    tokio::spawn(async move {
                        let result = tokio::task::spawn_blocking(move || {
                            hanzo_twin_engines::compare::compare(&scene, &engines, &config, &run)
                                .map_err(TwinError::from)
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Err(TwinError::Engine {
                                kind: "diverged",
                                field: None,
                                message: format!("an engine failed during the comparison: {e}"),
                            })
                        });
                        let _ = reply.send(result);
                    });
                }
            },
            HostMsg::Get { twin, reply } => {
                let result = self.resolve(&twin).and_then(|id| self.record(id).cloned());
                let _ = reply.send(result);
            }
            HostMsg::List {
                filter,
                scope,
                reply,
            } => {
                let mut list: Vec<TwinRecord> = self
                    .records
                    .values()
                    .filter(|r| scope.admits(r) && filter.matches(r))
                    .cloned()
                    .collect();
                list.sort_by_key(|r| r.id);
                let _ = reply.send(Ok(list));
            }
            HostMsg::Update { twin, patch, reply } => {
                let result = self.update(&twin, patch).await;
                let _ = reply.send(result);
            }
            HostMsg::Delete { twin, reply } => {
                let result = self.delete(&twin).await;
                let _ = reply.send(result);
            }
            HostMsg::Start {
                twin,
                options,
                reply,
            } => {
                let result = self.start(myself, &twin, options).await;
                let _ = reply.send(result);
            }
            HostMsg::Stop { twin, reply } => {
                let result = self.stop(&twin).await;
                let _ = reply.send(result);
            }
            HostMsg::Fork {
                twin,
                options,
                reply,
            } => {
                let result = self.fork(myself, &twin, options).await;
                let _ = reply.send(result);
            }
            HostMsg::Restore { twin, state, reply } => {
                let result = self.restore(&twin, state).await;
                let _ = reply.send(result);
            }
            HostMsg::Checkpoint { twin, reply } => {
                let result = self.checkpoint(&twin).await;
                let _ = reply.send(result);
            }
            HostMsg::Route { twin, msg } => self.route(&twin, msg),
            HostMsg::Shutdown { reply } => {
                let ids: Vec<TwinId> = self.running.keys().copied().collect();
                for id in ids {
                    self.stop_actor(id, true).await;
                }
                let (ack, done) = oneshot::channel();
                if self.writer.send(WriteJob::Flush(ack)).is_ok() {
                    let _ = done.await;
                }
                if self.placement.is_some() {
                    // In a cluster: let the others take these twins over now,
                    // not when this node's lease runs out.
                    let held: Vec<TwinRecord> = self
                        .records
                        .values()
                        .filter(|r| !r.ephemeral)
                        .cloned()
                        .collect();
                    for mut record in held {
                        record.status.node = None;
                        if let Err(e) = self.store.put(&record).await {
                            tracing::error!(twin = %record.id, error = %e, "releasing the twin failed");
                        }
                    }
                    self.records.clear();
                }
                let _ = reply.send(Ok(()));
            }
            HostMsg::CreateGym {
                request,
                owner,
                scope,
                reply,
            } => match self.prepare_gym(request, owner, &scope).await {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(build) => {
                    // Building a batch loads scenes and engines: off the host's loop.
                    let host = myself.clone();
                    tokio::spawn(async move {
                        let result = build.spawn(host).await;
                        let _ = reply.send(result);
                    });
                }
            },
            HostMsg::ListGym { scope, reply } => {
                let _ = reply.send(Ok(self.gym.list(&scope)));
            }
            HostMsg::GetGym { id, scope, reply } => {
                let _ = reply.send(self.gym.get(&id, &scope).cloned());
            }
            HostMsg::DeleteGym { id, scope, reply } => {
                let result = self.gym.get(&id, &scope).map(|_| ());
                if result.is_ok() {
                    self.emit(&id, "gym", "stopped", Some("deleted".into()));
                    if let Some(actor) = self.gym.remove(&id) {
                        actor.stop(Some("deleted".into()));
                    }
                }
                let _ = reply.send(result);
            }
            HostMsg::GymStarted {
                actor,
                info,
                messages,
            } => {
                let (id, task) = (info.id.clone(), info.task.clone());
                self.gym.by_actor.insert(actor.get_id(), id.clone());
                self.gym.messages.insert(id.clone(), messages);
                self.gym.envs.insert(id.clone(), (actor, info));
                self.emit(&id, "gym", "started", Some(task));
            }
            HostMsg::Tree { scope, reply } => {
                let _ = reply.send(Ok(self.tree(&scope)));
            }
            HostMsg::WatchTree { reply } => {
                let _ = reply.send(Ok(self.tree_events.subscribe()));
            }
            HostMsg::Checkpointed { id, state } => {
                if self.running.contains_key(&id) {
                    self.remember_checkpoint(id, state);
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
                    .fork_from(myself, *parent, options, Arc::new(state), None)
                    .await;
                let _ = reply.send(result);
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
                let result = self.store.list().await.map_err(storage).map(|all| {
                    all.into_iter()
                        .filter(|r| {
                            !self.records.contains_key(&r.id)
                                && r.status.node.as_ref().is_none_or(|h| !members.contains(h))
                                && scope.admits(r)
                                && filter.matches(r)
                        })
                        .collect()
                });
                let _ = reply.send(result);
            }
            HostMsg::Load { reply } => {
                let _ = reply.send(Ok(self.running.len()));
            }
            HostMsg::Rebalance { max_moves, reply } => {
                let result = self.rebalance(myself, max_moves).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn create(
        &mut self,
        mut definition: TwinDefinition,
        scope: &Scope,
    ) -> Result<TwinRecord, TwinError> {
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
        if self.name_taken(definition.organization(), &definition.name, None) {
            return Err(TwinError::Conflict(format!(
                "a twin named `{}` already exists in organization {}",
                definition.name,
                definition.organization()
            )));
        }
        self.check_runnable(&definition).await?;
        let mut record = TwinRecord::new(definition);
        record.id = self.new_id();
        record.status.node = Some(self.config.node_id.clone());
        self.save(record).await
    }

    async fn delete(&mut self, twin: &TwinRef) -> Result<(), TwinError> {
        let id = self.resolve(twin)?;
        let ephemeral = self.record(id)?.ephemeral;
        self.stop_actor(id, false).await;
        if ephemeral {
            // Never written durably (see `save`), so nothing to erase.
            self.records.remove(&id);
            self.last_checkpoint.remove(&id);
        } else {
            self.store.delete(id).await.map_err(storage)?;
            self.records.remove(&id);
            self.forget_checkpoint(id).await;
        }
        Ok(())
    }

    async fn stop(&mut self, twin: &TwinRef) -> Result<TwinRecord, TwinError> {
        let id = self.resolve(twin)?;
        let mut record = self.record(id)?.clone();
        if !self.running.contains_key(&id) && record.status.state != Lifecycle::Failed {
            return Err(TwinError::Conflict(format!("twin {twin} is not running")));
        }
        self.stop_actor(id, true).await;
        record.status.state = Lifecycle::Stopped;
        self.save(record).await
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
        if self.running.contains_key(&id) {
            let s = state.clone();
            self.call_twin(id, "restore", |reply| TwinMsg::SetState { state: s, reply })
                .await?;
        } else {
            // Check it fits the scene now rather than at the next start.
            let scene = self.check_runnable(&record.definition).await?;
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
        if self.running.contains_key(&id) {
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
        match self.running.get(&id) {
            Some(running) => {
                if let Err(ractor::MessagingErr::SendErr(msg)) = running.actor.send_message(msg) {
                    msg.reject(TwinError::Unavailable(id.to_string()));
                }
            }
            None => {
                let err = match self.records.get(&id) {
                    Some(r) if r.status.state == Lifecycle::Failed => TwinError::Failed {
                        id: id.to_string(),
                        reason: r.status.last_error.clone().unwrap_or_default(),
                    },
                    _ => TwinError::NotRunning(id.to_string()),
                };
                msg.reject(err)
            }
        }
    }
}

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

impl Actor for TwinHost {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        let writer = checkpoint_writer(args.checkpoints.clone());
        let mut state = HostState {
            config: args.config,
            engines: args.engines,
            store: args.store,
            checkpoints: args.checkpoints,
            scene_reader: args.scene_reader,
            scene_fetcher: args.scene_fetcher,
            records: HashMap::new(),
            running: HashMap::new(),
            by_actor: HashMap::new(),
            last_checkpoint: HashMap::new(),
            writer,
            tree_events: tokio::sync::broadcast::channel(256).0,
            gym: Default::default(),
            placement: args.placement,
            remote_scenes: HashMap::new(),
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
            if record.status.state == Lifecycle::Running {
                resume.push((record.id, record.status.clock));
            }
            state.records.insert(record.id, record);
        }
        // Twins that were running when the node went down resume from their last
        // checkpoint; one that cannot is marked stopped with the reason.
        for (id, clock) in resume {
            let options = StartOptions {
                clock,
                reset: false,
            };
            if let Some(r) = state.records.get_mut(&id) {
                r.status.state = Lifecycle::Stopped;
            }
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
        match event {
            SupervisionEvent::ActorFailed(cell, err)
                if state.gym.by_actor.contains_key(&cell.get_id()) =>
            {
                if let Some(id) = state.gym.by_actor.get(&cell.get_id()).cloned() {
                    tracing::warn!(gym = %id, "gym environment failed: {err}; it is gone");
                    state.emit(&id, "gym", "failed", Some(err.to_string()));
                    state.gym.remove(&id);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _)
                if state.gym.by_actor.contains_key(&cell.get_id()) =>
            {
                if let Some(id) = state.gym.by_actor.get(&cell.get_id()).cloned() {
                    state.gym.remove(&id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id())
                    && state
                        .running
                        .get(&id)
                        .is_some_and(|r| r.actor.get_id() == cell.get_id())
                {
                    state.crashed(&myself, id, err.to_string()).await;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id())
                    && state
                        .running
                        .get(&id)
                        .is_some_and(|r| r.actor.get_id() == cell.get_id())
                {
                    let reason = reason.unwrap_or_else(|| "terminated unexpectedly".into());
                    state.crashed(&myself, id, reason).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

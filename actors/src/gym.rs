//! RL environments as actors: one [`GymEnvActor`] owns a batch of
//! simulations (a [`VecEnv`]) and steps them across the cores in one message,
//! so the hot path never costs one message per environment per step. The
//! node's host spawns and supervises them (`POST /v1/gym/envs`).

use crate::definition::{DomainRandomization, SceneSpec};
use crate::error::TwinError;
use crate::protocol::{Reply, Scope};
use crate::record::TwinRecord;
use hanzo_twin_engines::EngineKind;
use hanzo_twin_gym::scene_task::{ActionMode, TaskSpec};
use hanzo_twin_gym::{AutoReset, BoxSpace, Randomization, RgbImage, VecEnv, VecOutput};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

/// `POST /v1/gym/envs`: which task, on what, how many.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GymEnvRequest {
    /// A built-in task's name (`cartpole-v0`, `ant-v5`) or a task spec.
    /// Left out with `twin_id`: the twin's own control task (every moving
    /// joint's position and velocity observed and driven, no reward terms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// How the twin's control task drives its joints: `effort` (torque or
    /// force, the default), `position` or `velocity`. Only without `task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_mode: Option<ActionMode>,
    /// Observe every scene camera's colour image too, at this size (the
    /// spec's `obs_type="dict"`: joint positions plus camera images; none
    /// when the scene has no camera, as `observation_parts` then shows).
    /// Only without `task`; a task spec names its `camera_rgb` terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_images: Option<CameraImages>,
    /// Environment steps per simulated second, for a task on a scene: the
    /// physics rate divided by it must be a whole number of steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.01)]
    pub step_hz: Option<f64>,
    /// A twin whose scene (and domain randomization, unless given here) a
    /// task spec runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin_id: Option<String>,
    /// A scene for a task spec, as a twin definition gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<SceneSpec>,
    /// The engine, when not the task's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,
    #[serde(default = "one")]
    pub num_envs: usize,
    /// Threads stepping the batch; 0 is one per core.
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub autoreset_mode: AutoReset,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_randomization: Option<DomainRandomization>,
}

fn one() -> usize {
    1
}

/// The size of a control task's camera images, in pixels.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraImages {
    #[schema(minimum = 1, maximum = 512)]
    pub width: u32,
    #[schema(minimum = 1, maximum = 512)]
    pub height: u32,
}

/// Most environments one batch may hold.
pub const MAX_ENVS: usize = 4096;

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskRef {
    Builtin(String),
    Spec(Box<TaskSpec>),
}

/// What a client needs to drive an environment batch.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct GymEnvInfo {
    pub id: String,
    pub organization: String,
    /// The subject that created it.
    pub owner: String,
    pub task: String,
    pub engine: EngineKind,
    pub num_envs: usize,
    pub threads: usize,
    pub autoreset_mode: AutoReset,
    pub observation_space: BoxSpace,
    pub action_space: BoxSpace,
    /// Simulated seconds per step.
    pub dt: f64,
    pub max_episode_steps: u32,
    /// The per-step values in `info`, in order.
    pub info_keys: Vec<String>,
    /// The observation's parts, in order: what a dict observation holds.
    pub observation_parts: Vec<hanzo_twin_gym::ObservationPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_randomization: Option<Randomization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twin_id: Option<String>,
    pub node: String,
}

/// An environment batch as the host resolved it for one caller: its actor
/// and what it is. The training loop talks to the actor directly, so a step
/// passes through the host's mailbox once (to resolve the id), not twice.
#[derive(Clone)]
pub struct GymEnv {
    actor: ActorRef<GymMsg>,
    pub info: GymEnvInfo,
    timeout: std::time::Duration,
    /// The node's bound on requests in flight.
    admission: crate::protocol::Admission,
    /// The batch's requests in flight, which the supervision tree shows.
    mailbox: crate::inspector::Mailbox,
}

impl GymEnv {
    pub(crate) fn new(
        actor: ActorRef<GymMsg>,
        info: GymEnvInfo,
        timeout: std::time::Duration,
        admission: crate::protocol::Admission,
        mailbox: crate::inspector::Mailbox,
    ) -> GymEnv {
        GymEnv {
            admission,
            actor,
            info,
            timeout,
            mailbox,
        }
    }

    /// Resets the batch's environments (those in `mask`, or all).
    pub async fn reset(
        &self,
        seed: Option<u64>,
        mask: Option<Vec<bool>>,
    ) -> Result<VecOutput, TwinError> {
        self.call(|reply| GymMsg::Reset { seed, mask, reply }).await
    }

    /// Steps every environment of the batch with its row of `actions`.
    pub async fn step(&self, actions: Vec<f32>) -> Result<VecOutput, TwinError> {
        self.call(|reply| GymMsg::Step { actions, reply }).await
    }

    /// Asynchronous: queues steps of `env_ids`.
    pub async fn send(&self, actions: Vec<f32>, env_ids: Vec<usize>) -> Result<(), TwinError> {
        self.call(|reply| GymMsg::Send {
            actions,
            env_ids,
            reply,
        })
        .await
    }

    /// Asynchronous: queues a reset of every environment.
    pub async fn send_reset(&self, seed: Option<u64>) -> Result<(), TwinError> {
        self.call(|reply| GymMsg::SendReset { seed, reply }).await
    }

    /// Asynchronous: the next `count` environments to finish.
    pub async fn recv(&self, count: usize) -> Result<VecOutput, TwinError> {
        self.call(|reply| GymMsg::Recv { count, reply }).await
    }

    /// A picture of environment `env` now (Gymnasium's `render()`).
    pub async fn render(
        &self,
        env: usize,
        camera: Option<String>,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, TwinError> {
        self.call(|reply| GymMsg::Render {
            env,
            camera,
            width,
            height,
            reply,
        })
        .await
    }

    /// Deleted or lost since it was resolved reads as unavailable.
    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(Reply<T>) -> GymMsg,
    ) -> Result<T, TwinError> {
        let _permit = self.admission.enter()?;
        let _pending = self.mailbox.sent();
        crate::protocol::call_actor(
            &self.actor,
            &self.info.id,
            "the request",
            self.timeout,
            build,
        )
        .await
    }
}

/// Messages an environment batch takes.
pub enum GymMsg {
    Reset {
        seed: Option<u64>,
        mask: Option<Vec<bool>>,
        reply: Reply<VecOutput>,
    },
    /// One action row per environment.
    Step {
        actions: Vec<f32>,
        reply: Reply<VecOutput>,
    },
    /// Asynchronous: queue steps for some environments.
    Send {
        actions: Vec<f32>,
        env_ids: Vec<usize>,
        reply: Reply<()>,
    },
    /// Asynchronous: queue a reset of every environment.
    SendReset { seed: Option<u64>, reply: Reply<()> },
    /// Asynchronous: the next `count` environments to finish.
    Recv {
        count: usize,
        reply: Reply<VecOutput>,
    },
    /// A picture of environment `env` as it is now: from the scene camera
    /// `camera`, or the task's own view.
    Render {
        env: usize,
        camera: Option<String>,
        width: u32,
        height: u32,
        reply: Reply<RgbImage>,
    },
    /// Whether the batch sat unused past its idle timeout (from itself).
    IdleCheck,
}

pub struct GymEnvActor;

/// A batch's environments, counted in `hanzo_twin_parallel_envs{twin}`
/// while it lives.
struct ParallelEnvs {
    gauge: metrics::Gauge,
    envs: f64,
}

impl ParallelEnvs {
    fn new(twin: String, envs: usize) -> ParallelEnvs {
        let gauge = metrics::gauge!("hanzo_twin_parallel_envs", "twin" => twin);
        gauge.increment(envs as f64);
        ParallelEnvs {
            gauge,
            envs: envs as f64,
        }
    }
}

impl Drop for ParallelEnvs {
    fn drop(&mut self) {
        self.gauge.decrement(self.envs);
    }
}

/// What a batch's actor starts with.
pub struct GymEnvArgs {
    pub id: String,
    pub env: VecEnv,
    pub messages: crate::inspector::MessageCount,
    /// The twin it was made from, if any.
    pub twin: Option<String>,
    /// Stop once no request came for this long.
    pub idle_timeout: Option<std::time::Duration>,
}

pub struct GymEnvState {
    _parallel: Option<ParallelEnvs>,
    idle_timeout: Option<std::time::Duration>,
    last_request: std::time::Instant,
    messages: crate::inspector::MessageCount,
    /// Why the batch is gone (a task panicked while stepping).
    lost: Option<String>,
    /// Taken while a blocking thread steps it.
    env: Option<VecEnv>,
    out: VecOutput,
    id: String,
}

impl Actor for GymEnvActor {
    type Msg = GymMsg;
    type State = GymEnvState;
    type Arguments = GymEnvArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GymMsg>,
        GymEnvArgs {
            id,
            env,
            messages,
            twin,
            idle_timeout,
        }: GymEnvArgs,
    ) -> Result<GymEnvState, ActorProcessingErr> {
        if let Some(after) = idle_timeout {
            myself.send_after(after, || GymMsg::IdleCheck);
        }
        Ok(GymEnvState {
            _parallel: twin.map(|twin| ParallelEnvs::new(twin, env.num_envs())),
            idle_timeout,
            last_request: std::time::Instant::now(),
            messages,
            lost: None,
            env: Some(env),
            out: VecOutput::default(),
            id,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GymMsg>,
        msg: GymMsg,
        state: &mut GymEnvState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = (!matches!(msg, GymMsg::IdleCheck)).then(|| state.messages.time());
        if !matches!(msg, GymMsg::IdleCheck) {
            state.last_request = std::time::Instant::now();
        }
        match msg {
            GymMsg::Reset { seed, mask, reply } => {
                let result = state
                    .run(move |env, out| env.reset(seed, mask.as_deref(), out))
                    .await;
                let _ = reply.send(result.map(|()| state.out.clone()));
            }
            GymMsg::Step { actions, reply } => {
                let result = state.run(move |env, out| env.step(&actions, out)).await;
                let _ = reply.send(result.map(|()| state.out.clone()));
            }
            GymMsg::Send {
                actions,
                env_ids,
                reply,
            } => {
                let result = state.run(move |env, _| env.send(&actions, &env_ids)).await;
                let _ = reply.send(result);
            }
            GymMsg::SendReset { seed, reply } => {
                let result = state.run(move |env, _| env.send_reset(seed)).await;
                let _ = reply.send(result);
            }
            GymMsg::Recv { count, reply } => {
                let result = state.run(move |env, out| env.recv(count, out)).await;
                let _ = reply.send(result.map(|()| state.out.clone()));
            }
            GymMsg::Render {
                env,
                camera,
                width,
                height,
                reply,
            } => {
                let result = state
                    .run(move |batch, _| batch.render(env, camera.as_deref(), width, height))
                    .await;
                let _ = reply.send(result);
            }
            GymMsg::IdleCheck => state.idle_check(&myself),
        }
        if let Some(why) = state.lost.take() {
            // The batch was lost to a panic (the caller has its error): fail,
            // so the supervisor forgets it and later calls find it gone.
            return Err(why.into());
        }
        Ok(())
    }
}

impl GymEnvState {
    /// Stops the batch once no request came for its idle timeout; until
    /// then, looks again when it would be due.
    fn idle_check(&self, myself: &ActorRef<GymMsg>) {
        let Some(after) = self.idle_timeout else {
            return;
        };
        let idle = self.last_request.elapsed();
        if idle < after {
            myself.send_after(after - idle, || GymMsg::IdleCheck);
        } else {
            myself.stop(Some(format!(
                "no request for {} s (gym.idle_timeout_s)",
                idle.as_secs()
            )));
        }
    }

    /// Runs `f` on the batch off the async runtime's hands: stepping is CPU
    /// work that must not hold up other tasks. On a multi-threaded runtime
    /// it runs in place (the runtime moves this worker's other tasks away),
    /// which spares a step two thread hand-offs; elsewhere on a blocking
    /// thread.
    async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut VecEnv, &mut VecOutput) -> Result<T, hanzo_twin_engines::EngineError>
        + Send
        + 'static,
    ) -> Result<T, TwinError> {
        let Some(mut env) = self.env.take() else {
            return Err(TwinError::Unavailable(self.id.clone()));
        };
        let mut out = std::mem::take(&mut self.out);
        let work = move || {
            let result = f(&mut env, &mut out);
            (env, out, result)
        };
        let joined = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tokio::task::block_in_place(work)
                }))
                .map_err(|panic| hanzo_twin_engines::error::panic_text(&*panic))
            }
            _ => tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| e.to_string()),
        };
        match joined {
            Ok((env, out, result)) => {
                self.env = Some(env);
                self.out = out;
                result.map_err(TwinError::from)
            }
            // A panic in a task loses the batch; the actor then fails and its
            // supervisor forgets the environment.
            Err(e) => {
                let message = format!("gym environment {} failed while stepping: {e}", self.id);
                self.lost = Some(message.clone());
                Err(TwinError::Engine {
                    kind: crate::error::EngineFailure::EngineFailed,
                    field: None,
                    message,
                })
            }
        }
    }
}

/// What a host is asked about its RL batches; the host's `GymEnvs` answers.
pub enum BatchMsg {
    /// Builds a batch of RL environments and spawns its actor.
    Create {
        request: GymEnvRequest,
        /// Who creates it (their subject), for own-only rights.
        owner: String,
        scope: Scope,
        reply: Reply<GymEnvInfo>,
    },
    List {
        scope: Scope,
        reply: Reply<Vec<GymEnvInfo>>,
    },
    /// The batch's actor and description, for a caller to drive it.
    Get {
        id: String,
        scope: Scope,
        reply: Reply<(ActorRef<GymMsg>, GymEnvInfo, crate::inspector::Mailbox)>,
    },
    Delete {
        id: String,
        scope: Scope,
        reply: Reply<()>,
    },
    /// A batch's actor is up (from its builder).
    Started(GymStarted),
}

/// One batch a host runs.
struct Batch {
    actor: ActorRef<GymMsg>,
    info: GymEnvInfo,
    messages: crate::inspector::MessageCount,
    /// Requests its callers sent and have no answer to yet.
    mailbox: crate::inspector::Mailbox,
}

/// The environment batches a host runs, and what new ones are set up with.
/// The host hands it every [`BatchMsg`] and every exit of an actor it does
/// not know as a twin's.
pub(crate) struct GymEnvs {
    setting: Setting,
    batches: std::collections::HashMap<String, Batch>,
    by_actor: std::collections::HashMap<ractor::ActorId, String>,
}

impl GymEnvs {
    pub(crate) fn new(setting: Setting) -> GymEnvs {
        GymEnvs {
            setting,
            batches: Default::default(),
            by_actor: Default::default(),
        }
    }

    /// Answers `msg`. A create resolves the twin it names through `twin`
    /// (the host's records), then reads scenes and loads engines off the
    /// host's loop; its actor is linked to `host`, which is told
    /// [`BatchMsg::Started`] once it runs.
    pub(crate) fn handle<M>(
        &mut self,
        host: &ActorRef<M>,
        msg: BatchMsg,
        twin: impl FnOnce(&crate::protocol::TwinRef) -> Result<TwinRecord, TwinError>,
        tree: &crate::inspector::TreeEvents,
    ) where
        M: From<BatchMsg> + ractor::Message,
    {
        match msg {
            BatchMsg::Create {
                request,
                owner,
                scope,
                reply,
            } => {
                let twin = match &request.twin_id {
                    Some(key) => {
                        let target = crate::protocol::TwinRef {
                            key: key.clone(),
                            scope: scope.clone(),
                        };
                        match twin(&target) {
                            Ok(record) => Some(record),
                            Err(e) => return drop(reply.send(Err(e))),
                        }
                    }
                    None => None,
                };
                let (host, setting) = (host.clone(), self.setting.clone());
                tokio::spawn(async move {
                    let result = match setting.prepare(request, owner, &scope, twin).await {
                        Ok(build) => build.spawn(host.get_cell()).await,
                        Err(e) => Err(e),
                    };
                    let result = result.and_then(|started| {
                        let info = started.info.clone();
                        host.send_message(M::from(BatchMsg::Started(started)))
                            .map(|()| info)
                            .map_err(|_| TwinError::Unavailable("the twin host".into()))
                    });
                    let _ = reply.send(result);
                });
            }
            BatchMsg::List { scope, reply } => drop(reply.send(Ok(self.list(&scope)))),
            BatchMsg::Get { id, scope, reply } => {
                let batch = self.get(&id, &scope);
                let _ =
                    reply.send(batch.map(|b| (b.actor.clone(), b.info.clone(), b.mailbox.clone())));
            }
            BatchMsg::Delete { id, scope, reply } => {
                let result = self.get(&id, &scope).map(|_| ());
                if result.is_ok() {
                    self.event(tree, &id, "stopped", Some("deleted".into()));
                    if let Some(actor) = self.remove(&id) {
                        actor.stop(Some("deleted".into()));
                    }
                }
                let _ = reply.send(result);
            }
            BatchMsg::Started(GymStarted {
                actor,
                info,
                messages,
            }) => {
                let (id, task) = (info.id.clone(), info.task.clone());
                self.by_actor.insert(actor.get_id(), id.clone());
                let batch = Batch {
                    actor,
                    info,
                    messages,
                    mailbox: crate::inspector::Mailbox::default(),
                };
                self.batches.insert(id.clone(), batch);
                self.event(tree, &id, "started", Some(task));
            }
        }
    }

    /// Whether `actor` was one of these batches; it is gone either way. A
    /// batch is not restarted: its episodes are its caller's, who sees it
    /// fail and builds another.
    pub(crate) fn ended(
        &mut self,
        actor: ractor::ActorId,
        failure: Option<String>,
        reason: &str,
        tree: &crate::inspector::TreeEvents,
    ) -> bool {
        let Some(id) = self.by_actor.get(&actor).cloned() else {
            return false;
        };
        if let Some(why) = failure {
            tracing::warn!(gym = %id, "gym environment failed: {why}; it is gone");
            self.event(tree, &id, "failed", Some(why));
        } else if self.batches.contains_key(&id) {
            // Stopped by itself (idle), not deleted (which forgets it first).
            tracing::info!(gym = %id, "gym environment deleted: {reason}");
            self.event(tree, &id, "stopped", Some(reason.to_string()));
        }
        self.remove(&id);
        true
    }

    /// The batches `scope` sees, as the supervision tree draws them.
    pub(crate) fn tree_nodes(&self, scope: &Scope) -> Vec<crate::inspector::ActorNode> {
        self.visible(scope)
            .map(|b| crate::inspector::ActorNode {
                mailbox: Some(b.mailbox.depth()),
                ..b.info.tree_node(b.actor.get_id(), &b.messages)
            })
            .collect()
    }

    fn event(
        &self,
        tree: &crate::inspector::TreeEvents,
        id: &str,
        event: &str,
        detail: Option<String>,
    ) {
        let org = self
            .batches
            .get(id)
            .map(|b| b.info.organization.as_str())
            .unwrap_or_default();
        tree.emit(org, id, "gym", event, detail);
    }

    /// The batch `id` if `scope` sees it; any other reads as not found.
    fn get(&self, id: &str, scope: &Scope) -> Result<&Batch, TwinError> {
        self.batches
            .get(id)
            .filter(|b| scope.admits_organization(&b.info.organization))
            .ok_or_else(|| TwinError::EnvNotFound(id.to_string()))
    }

    /// The batches `scope` sees, by id.
    fn visible(&self, scope: &Scope) -> impl Iterator<Item = &Batch> {
        let mut batches: Vec<&Batch> = self
            .batches
            .values()
            .filter(|b| scope.admits_organization(&b.info.organization))
            .collect();
        batches.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        batches.into_iter()
    }

    fn list(&self, scope: &Scope) -> Vec<GymEnvInfo> {
        self.visible(scope).map(|b| b.info.clone()).collect()
    }

    fn remove(&mut self, id: &str) -> Option<ActorRef<GymMsg>> {
        let batch = self.batches.remove(id)?;
        self.by_actor.remove(&batch.actor.get_id());
        Some(batch.actor)
    }
}

/// Where a batch's task comes from.
pub(crate) enum TaskSource {
    Builtin {
        name: String,
        engine: Option<EngineKind>,
        ant_xml: Option<std::path::PathBuf>,
    },
    Scene {
        spec: Box<TaskSpec>,
        scene: std::sync::Arc<hanzo_twin_engines::SceneModel>,
        engine: std::sync::Arc<dyn hanzo_twin_engines::Engine>,
    },
}

/// What a node gives a batch being set up: its scenes, engines and the
/// built-in tasks' model files.
#[derive(Clone)]
pub(crate) struct Setting {
    pub(crate) scenes: crate::scenes::SceneLoader,
    pub(crate) engines: hanzo_twin_engines::EngineRegistry,
    pub(crate) ant_xml: Option<std::path::PathBuf>,
    pub(crate) node: String,
    /// A batch no request reached for this long is deleted (its caller is
    /// gone: a trainer that died, an env runner Ray killed).
    pub(crate) idle_timeout: Option<std::time::Duration>,
}

impl Setting {
    /// Resolves what a gym request names (task, scene, engine,
    /// randomization); `twin` is the twin it names, read by the host.
    pub(crate) async fn prepare(
        &self,
        request: GymEnvRequest,
        owner: String,
        scope: &Scope,
        twin: Option<TwinRecord>,
    ) -> Result<GymBuild, TwinError> {
        if request.num_envs == 0 || request.num_envs > MAX_ENVS {
            return Err(TwinError::invalid(
                "num_envs",
                format!("must be between 1 and {}", MAX_ENVS),
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
        if request.action_mode.is_some() && request.task.is_some() {
            return Err(TwinError::invalid(
                "action_mode",
                "applies to a twin's own control task (twin_id without task); a task spec names each action's mode",
            ));
        }
        if let Some(images) = request.camera_images {
            if request.task.is_some() {
                return Err(TwinError::invalid(
                    "camera_images",
                    "applies to a twin's own control task (twin_id without task); a task spec names its camera_rgb terms",
                ));
            }
            if !(1..=512).contains(&images.width) || !(1..=512).contains(&images.height) {
                return Err(TwinError::invalid(
                    "camera_images",
                    format!(
                        "width and height must each be 1 to 512 pixels, got {}×{}",
                        images.width, images.height
                    ),
                ));
            }
        }
        if let Some(hz) = request.step_hz
            && !(hz.is_finite() && hz >= 0.01)
        {
            return Err(TwinError::invalid(
                "step_hz",
                "environment steps per simulated second: a number of at least 0.01",
            ));
        }
        // The twin's scene, once read for its control task, is the one the
        // batch runs on (each read is a child process).
        let mut twin_scene = None;
        let task = match (request.task.clone(), &twin) {
            (Some(task), _) => task,
            (None, Some(t)) => {
                let hz = t.definition.engine.config.step_hz.0;
                let scene = twin_scene.insert(self.scenes.load_scene(&t.definition).await?);
                let spec = TaskSpec::control(
                    &format!("{}-control", t.definition.name),
                    scene,
                    request.action_mode.unwrap_or(ActionMode::Effort),
                    hz,
                    1,
                    request.camera_images.map(|c| (c.width, c.height)),
                )
                .map_err(TwinError::from)?;
                TaskRef::Spec(Box::new(spec))
            }
            (None, None) => {
                return Err(TwinError::invalid(
                    "task",
                    "name a task (cartpole-v0, ant-v5, or a task spec), or give twin_id to control the twin's joints",
                ));
            }
        };
        // The rate of a task on a scene: whole physics steps per
        // environment step.
        let task = match (task, request.step_hz) {
            (TaskRef::Spec(mut spec), Some(hz)) => {
                let skip = spec.step_hz / hz;
                if (skip - skip.round()).abs() > 1e-9 || skip.round() < 1.0 {
                    return Err(TwinError::invalid(
                        "step_hz",
                        format!(
                            "the physics runs at {} Hz, so an environment step must be a whole number of its steps: {} Hz is not (try {} Hz)",
                            spec.step_hz,
                            hz,
                            spec.step_hz / skip.round().max(1.0)
                        ),
                    ));
                }
                spec.frame_skip = skip.round() as u32;
                TaskRef::Spec(spec)
            }
            (TaskRef::Builtin(name), Some(_)) => {
                return Err(TwinError::invalid(
                    "step_hz",
                    format!("the built-in task {name} keeps its own rate"),
                ));
            }
            (task, None) => task,
        };
        let source = match (&task, &twin, &request.scene) {
            (TaskRef::Builtin(name), None, None) => TaskSource::Builtin {
                name: name.clone(),
                engine: request.engine,
                ant_xml: self.ant_xml.clone(),
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
                let scene = match twin_scene.take() {
                    Some(scene) => scene,
                    None => self.scenes.load_scene(&t.definition).await?,
                };
                let kind = request.engine.unwrap_or(t.definition.engine.kind);
                TaskSource::Scene {
                    spec: spec.clone(),
                    scene,
                    engine: self.engines.get(kind)?,
                }
            }
            (TaskRef::Spec(spec), None, Some(scene_spec)) => {
                let scene = self
                    .scenes
                    .load_scene_spec(&organization, scene_spec)
                    .await?;
                let kind = request.engine.unwrap_or(spec.engine);
                TaskSource::Scene {
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
        Ok(GymBuild {
            source,
            config: hanzo_twin_gym::VecEnvConfig {
                num_envs: request.num_envs,
                threads: request.threads,
                autoreset: request.autoreset_mode,
                randomization,
            },
            organization,
            owner,
            twin_id: twin.map(|t| t.id.to_string()),
            node: self.node.clone(),
            idle_timeout: self.idle_timeout,
        })
    }
}

/// Everything needed to build a batch, resolved by the host.
pub(crate) struct GymBuild {
    pub(crate) source: TaskSource,
    pub(crate) config: hanzo_twin_gym::VecEnvConfig,
    pub(crate) organization: String,
    pub(crate) owner: String,
    pub(crate) twin_id: Option<String>,
    pub(crate) node: String,
    pub(crate) idle_timeout: Option<std::time::Duration>,
}

impl GymBuild {
    /// Builds the batch on a blocking thread and spawns its actor under
    /// `supervisor`, which registers what this returns.
    pub(crate) async fn spawn(
        self,
        supervisor: ractor::ActorCell,
    ) -> Result<GymStarted, TwinError> {
        let GymBuild {
            source,
            config,
            organization,
            owner,
            twin_id,
            node,
            idle_timeout,
        } = self;
        let built = tokio::task::spawn_blocking(move || {
            let task: std::sync::Arc<dyn hanzo_twin_gym::Task> = match source {
                TaskSource::Builtin {
                    name,
                    engine,
                    ant_xml,
                } => hanzo_twin_gym::builtin_task(&name, engine, ant_xml.as_deref())?,
                TaskSource::Scene {
                    spec,
                    scene,
                    engine,
                } => std::sync::Arc::new(hanzo_twin_gym::scene_task::SceneTask::new(
                    *spec,
                    (*scene).clone(),
                    engine,
                )?),
            };
            let env = VecEnv::new(&task, &config)?;
            Ok::<_, hanzo_twin_engines::EngineError>((env, config))
        })
        .await
        .map_err(|e| TwinError::Engine {
            kind: crate::error::EngineFailure::EngineFailed,
            field: None,
            message: format!("building the environments failed: {e}"),
        })?
        .map_err(TwinError::from)?;
        let (env, config) = built;
        let spec = env.spec().clone();
        let id = format!("gym-{}", uuid::Uuid::now_v7().simple());
        let info = GymEnvInfo {
            id: id.clone(),
            organization,
            owner,
            task: spec.name.clone(),
            engine: spec.engine,
            num_envs: env.num_envs(),
            threads: env.threads(),
            autoreset_mode: env.autoreset(),
            observation_space: spec.observation_space.clone(),
            action_space: spec.action_space.clone(),
            dt: spec.dt,
            max_episode_steps: spec.max_episode_steps,
            info_keys: spec.info_keys.clone(),
            observation_parts: spec.observation_parts.clone(),
            domain_randomization: config.randomization,
            twin_id: twin_id.clone(),
            node,
        };
        let messages = crate::inspector::MessageCount::default();
        let (actor, _) = Actor::spawn_linked(
            None,
            GymEnvActor,
            GymEnvArgs {
                id: id.clone(),
                env,
                messages: messages.clone(),
                twin: twin_id,
                idle_timeout,
            },
            supervisor,
        )
        .await
        .map_err(|e| TwinError::Unavailable(format!("gym environment {id}: {e}")))?;
        Ok(GymStarted {
            actor,
            info,
            messages,
        })
    }
}

/// A batch whose actor is up, for its supervisor to register.
pub struct GymStarted {
    pub actor: ActorRef<GymMsg>,
    pub info: GymEnvInfo,
    pub messages: crate::inspector::MessageCount,
}

impl GymEnvInfo {
    /// The batch as the supervision tree draws it.
    pub fn tree_node(
        &self,
        actor: ractor::ActorId,
        messages: &crate::inspector::MessageCount,
    ) -> crate::inspector::ActorNode {
        crate::inspector::ActorNode {
            actor_id: Some(actor.to_string()),
            name: self.id.clone(),
            kind: "gym".into(),
            status: "running".into(),
            target: Some(format!("{} × {}", self.task, self.num_envs)),
            restarts: 0,
            messages: messages.get(),
            uptime_s: Some(messages.uptime_s()),
            handling_mean_us: messages.handling_mean_us(),
            organization: Some(self.organization.clone()),
            ..crate::inspector::ActorNode::default()
        }
    }
}

/// Local only: never sent between nodes.
impl ractor::Message for GymMsg {}

//! The node's render workers: a pool actor that queues frames and hands
//! each to an idle worker actor, which draws it on a blocking thread (the
//! renderer is CPU-bound; the async runtime must keep answering). Workers
//! are the pool's children: one that crashes is started again and its frame
//! is drawn again by the next idle worker, once; a frame that crashes a
//! worker twice is answered with the crash. The queue is bounded: past it a
//! frame is refused as the node being at capacity.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hanzo_twin_engines::scene::Pose;
use hanzo_twin_render::encode::{DEPTH_SCALE_M, encode_png};
use hanzo_twin_render::{CameraView, RenderError, RenderOptions, RenderScene};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::error::{EngineFailure, TwinError};
use crate::protocol::{RenderRequest, RenderedFrame, RenderedImage};

/// A frame to draw: a scene, its bodies' poses, the view and what to write.
pub struct RenderJob {
    pub scene: Arc<RenderScene>,
    pub poses: Vec<Pose>,
    pub view: CameraView,
    pub request: RenderRequest,
    pub time: f64,
    pub step: u64,
}

impl RenderJob {
    /// Draws the frame and encodes its images.
    pub fn run(&self) -> Result<RenderedFrame, TwinError> {
        let started = Instant::now();
        let wants_rgb = self
            .request
            .outputs
            .contains(&hanzo_twin_render::encode::Output::Rgb);
        let frame = self.scene.render(
            &self.poses,
            &self.view,
            &RenderOptions {
                rgb: wants_rgb,
                samples_per_pixel: self.request.samples_per_pixel,
                ..RenderOptions::default()
            },
        )?;
        let images = self
            .request
            .outputs
            .iter()
            .map(|&output| {
                Ok(RenderedImage {
                    output,
                    png: encode_png(&frame, output)?,
                })
            })
            .collect::<Result<Vec<_>, RenderError>>()?;
        metrics::histogram!("hanzo_twin_render_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(RenderedFrame {
            time: self.time,
            step: self.step,
            width: frame.width,
            height: frame.height,
            intrinsics: frame.intrinsics,
            images,
            instances: frame.instances,
            classes: frame.classes,
            depth_scale_m: DEPTH_SCALE_M,
        })
    }
}

/// A batch of a synthetic dataset's frames: each frame varied from the
/// seed, drawn through every camera, and encoded with its COCO annotations.
pub struct SynthBatchJob {
    pub spec: Arc<hanzo_twin_render::synth::SynthSpec>,
    pub scene: Arc<hanzo_twin_engines::SceneModel>,
    pub render: Arc<RenderScene>,
    pub base_poses: Arc<Vec<Pose>>,
    pub frames: std::ops::Range<u64>,
}

impl SynthBatchJob {
    pub fn run(&self) -> Result<hanzo_twin_render::synth::dataset::Batch, TwinError> {
        let started = Instant::now();
        let varier = hanzo_twin_render::synth::vary::Varier::new(
            &self.spec,
            &self.scene,
            &self.render,
            self.base_poses.to_vec(),
        )?;
        let batch = hanzo_twin_render::synth::dataset::draw_batch(
            &self.spec,
            &varier,
            &self.render,
            self.frames.clone(),
        )?;
        let frames = (self.frames.end - self.frames.start).max(1) as f64;
        let per_frame = started.elapsed().as_secs_f64() / frames;
        for _ in self.frames.clone() {
            metrics::histogram!("hanzo_twin_render_duration_seconds").record(per_frame);
        }
        Ok(batch)
    }
}

/// What the render workers draw: a frame on request, or a dataset's batch.
pub enum RenderWork {
    Frame(Box<RenderJob>),
    Batch(Box<SynthBatchJob>),
}

/// What they hand back.
pub enum RenderOutcome {
    Frame(Box<RenderedFrame>),
    Batch(Box<hanzo_twin_render::synth::dataset::Batch>),
}

impl RenderWork {
    fn run(&self) -> Result<RenderOutcome, TwinError> {
        Ok(match self {
            RenderWork::Frame(job) => RenderOutcome::Frame(Box::new(job.run()?)),
            RenderWork::Batch(job) => RenderOutcome::Batch(Box::new(job.run()?)),
        })
    }
}

impl From<RenderError> for TwinError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Invalid { field, message } => TwinError::invalid(field, message),
            RenderError::UnknownCamera(_) => TwinError::Engine {
                kind: EngineFailure::UnknownPath,
                field: Some("camera".into()),
                message: e.to_string(),
            },
            RenderError::Shape { .. } => TwinError::Engine {
                kind: EngineFailure::Scene,
                field: None,
                message: e.to_string(),
            },
        }
    }
}

/// Where a frame's result goes (the caller's reply, wrapped as it needs).
pub type RenderReply = Box<dyn FnOnce(Result<RenderOutcome, TwinError>) + Send>;

/// Messages to the pool.
pub enum RenderPoolMsg {
    Render {
        work: RenderWork,
        reply: RenderReply,
    },
    /// How the pool fares: workers, queue, crashes.
    Status {
        reply: RpcReplyPort<RenderPoolStatus>,
    },
    /// Fault injection: worker `worker` panics on its next frame, as a bug
    /// in the renderer would.
    CrashNext { worker: usize },
    /// From a worker: its frame is drawn (or failed without a crash).
    Done {
        worker: usize,
        result: Result<RenderOutcome, TwinError>,
    },
}

impl ractor::Message for RenderPoolMsg {}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RenderPoolStatus {
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    pub max_queue: usize,
    /// Images drawn since the node started (a dataset frame counts once a
    /// camera).
    pub frames: u64,
    /// Worker crashes since the node started; each was restarted.
    pub worker_restarts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderPoolArgs {
    pub workers: usize,
    pub max_queue: usize,
}

/// The node's render pool, as twins and the API reach it: the node's
/// supervisor swaps in a restarted pool, so holders never keep a dead one.
#[derive(Clone)]
pub struct RenderWorkers {
    pool: Arc<std::sync::RwLock<Option<ActorRef<RenderPoolMsg>>>>,
    pub settings: RenderPoolArgs,
    /// What the supervision tree shows of the pool, kept by the pool.
    board: Arc<std::sync::Mutex<Board>>,
}

/// The pool and its workers as the tree shows them.
#[derive(Default)]
struct Board {
    pool: Option<(ractor::ActorId, crate::inspector::MessageCount)>,
    workers: Vec<WorkerBoard>,
    /// Frames waiting in the pool's queue.
    queued: usize,
}

struct WorkerBoard {
    actor: ractor::ActorId,
    messages: crate::inspector::MessageCount,
    restarts: u32,
    /// It holds a frame (drawing it).
    drawing: bool,
}

impl RenderWorkers {
    pub fn new(settings: RenderPoolArgs) -> RenderWorkers {
        RenderWorkers {
            pool: Arc::default(),
            settings,
            board: Arc::default(),
        }
    }

    /// The pool and its workers for the supervision tree: each with its
    /// actor, messages, mean handling time, uptime and restarts.
    pub fn tree_node(&self) -> Option<crate::inspector::ActorNode> {
        use crate::inspector::ActorNode;
        let board = self.board.lock().ok()?;
        let (pool, messages) = board.pool.as_ref()?;
        let row = |name: String,
                   kind: &str,
                   actor: &ractor::ActorId,
                   m: &crate::inspector::MessageCount,
                   restarts: u32| ActorNode {
            actor_id: Some(actor.to_string()),
            name,
            kind: kind.into(),
            status: "running".into(),
            target: None,
            restarts,
            messages: m.get(),
            uptime_s: Some(m.uptime_s()),
            handling_mean_us: m.handling_mean_us(),
            ..ActorNode::default()
        };
        // Their mailboxes: the frames waiting in the pool, and the one a
        // worker draws (the pool hands each worker one at a time).
        let mut node = row("render".into(), "render_pool", pool, messages, 0);
        node.mailbox = Some(board.queued as u64);
        node.children = board
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| ActorNode {
                mailbox: Some(u64::from(w.drawing)),
                ..row(
                    format!("render/worker:{i}"),
                    "render_worker",
                    &w.actor,
                    &w.messages,
                    w.restarts,
                )
            })
            .collect();
        Some(node)
    }

    /// The live pool; `None` before the node has started it.
    pub fn pool(&self) -> Option<ActorRef<RenderPoolMsg>> {
        self.pool.read().ok().and_then(|p| p.clone())
    }

    pub fn replace(&self, pool: ActorRef<RenderPoolMsg>) {
        if let Ok(mut slot) = self.pool.write() {
            *slot = Some(pool);
        }
    }

    /// Starts the pool under `supervisor` (the node's; none for a pool of
    /// its own) and makes it the live one.
    pub async fn start(
        &self,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<ActorRef<RenderPoolMsg>, ractor::SpawnErr> {
        let args = PoolArgs {
            settings: self.settings,
            board: self.board.clone(),
        };
        let (pool, _) = match supervisor {
            Some(supervisor) => {
                Actor::spawn_linked(Some("render".into()), RenderPool, args, supervisor).await?
            }
            None => Actor::spawn(None, RenderPool, args).await?,
        };
        self.replace(pool.clone());
        Ok(pool)
    }

    /// How the pool fares, for the inspector and tests.
    pub async fn status(&self) -> Option<RenderPoolStatus> {
        let pool = self.pool()?;
        ractor::call_t!(pool, |reply| RenderPoolMsg::Status { reply }, 5000).ok()
    }
}

struct Pending {
    job: Arc<RenderWork>,
    reply: RenderReply,
    /// Workers it has crashed.
    crashes: u32,
}

struct Slot {
    actor: ActorRef<WorkerMsg>,
    /// The frame it is drawing.
    current: Option<Pending>,
}

/// What the pool starts with.
pub struct PoolArgs {
    settings: RenderPoolArgs,
    board: Arc<std::sync::Mutex<Board>>,
}

pub struct RenderPoolState {
    board: Arc<std::sync::Mutex<Board>>,
    messages: crate::inspector::MessageCount,
    slots: Vec<Slot>,
    queue: VecDeque<Pending>,
    max_queue: usize,
    frames: u64,
    worker_restarts: u64,
}

pub struct RenderPool;

impl RenderPool {
    async fn spawn_worker(
        pool: &ActorRef<RenderPoolMsg>,
        index: usize,
        board: &std::sync::Mutex<Board>,
    ) -> Result<ActorRef<WorkerMsg>, ActorProcessingErr> {
        let messages = crate::inspector::MessageCount::default();
        let (worker, _) = Actor::spawn_linked(
            None,
            RenderWorker,
            WorkerArgs {
                pool: pool.clone(),
                index,
                messages: messages.clone(),
            },
            pool.get_cell(),
        )
        .await?;
        if let Ok(mut board) = board.lock() {
            let entry = WorkerBoard {
                actor: worker.get_id(),
                messages,
                restarts: 0,
                drawing: false,
            };
            match board.workers.get_mut(index) {
                Some(old) => {
                    *old = WorkerBoard {
                        restarts: old.restarts + 1,
                        ..entry
                    }
                }
                None => board.workers.push(entry),
            }
        }
        Ok(worker)
    }
}

impl RenderPoolState {
    /// Hands queued frames to idle workers, and shows the tree what waits.
    fn dispatch(&mut self) {
        self.hand_out();
        if let Ok(mut board) = self.board.lock() {
            board.queued = self.queue.len();
            for (slot, worker) in self.slots.iter().zip(board.workers.iter_mut()) {
                worker.drawing = slot.current.is_some();
            }
        }
    }

    fn hand_out(&mut self) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.current.is_some() {
                continue;
            }
            let Some(pending) = self.queue.pop_front() else {
                return;
            };
            let job = pending.job.clone();
            if slot.actor.cast(WorkerMsg::Draw(job)).is_err() {
                // Stopping; its restart will take the frame again.
                self.queue.push_front(pending);
                tracing::warn!(worker = index, "render worker did not take a frame");
                continue;
            }
            slot.current = Some(pending);
        }
    }
}

impl Actor for RenderPool {
    type Msg = RenderPoolMsg;
    type State = RenderPoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RenderPoolMsg>,
        args: PoolArgs,
    ) -> Result<RenderPoolState, ActorProcessingErr> {
        let messages = crate::inspector::MessageCount::default();
        if let Ok(mut board) = args.board.lock() {
            // A restarted pool starts a fresh board.
            *board = Board {
                pool: Some((myself.get_id(), messages.clone())),
                workers: Vec::new(),
                queued: 0,
            };
        }
        let workers = args.settings.workers.max(1);
        let mut slots = Vec::with_capacity(workers);
        for index in 0..workers {
            slots.push(Slot {
                actor: RenderPool::spawn_worker(&myself, index, &args.board).await?,
                current: None,
            });
        }
        Ok(RenderPoolState {
            board: args.board,
            messages,
            slots,
            queue: VecDeque::new(),
            max_queue: args.settings.max_queue,
            frames: 0,
            worker_restarts: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RenderPoolMsg>,
        msg: RenderPoolMsg,
        state: &mut RenderPoolState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.messages.time();
        match msg {
            RenderPoolMsg::Render { work, reply } => {
                if state.queue.len() >= state.max_queue {
                    reply(Err(TwinError::Engine {
                        kind: EngineFailure::AtCapacity,
                        field: None,
                        message: format!(
                            "the node's render queue is full ({} frames waiting); retry shortly",
                            state.queue.len()
                        ),
                    }));
                    return Ok(());
                }
                state.queue.push_back(Pending {
                    job: Arc::new(work),
                    reply,
                    crashes: 0,
                });
                state.dispatch();
            }
            RenderPoolMsg::Done { worker, result } => {
                if let Some(pending) = state.slots.get_mut(worker).and_then(|s| s.current.take()) {
                    state.frames += match &result {
                        Ok(RenderOutcome::Frame(_)) => 1,
                        Ok(RenderOutcome::Batch(b)) => b.coco.images.len() as u64,
                        Err(_) => 0,
                    };
                    (pending.reply)(result);
                }
                state.dispatch();
            }
            RenderPoolMsg::CrashNext { worker } => {
                if let Some(slot) = state.slots.get(worker) {
                    let _ = slot.actor.cast(WorkerMsg::CrashNext);
                }
            }
            RenderPoolMsg::Status { reply } => {
                let _ = reply.send(RenderPoolStatus {
                    workers: state.slots.len(),
                    busy: state.slots.iter().filter(|s| s.current.is_some()).count(),
                    queued: state.queue.len(),
                    max_queue: state.max_queue,
                    frames: state.frames,
                    worker_restarts: state.worker_restarts,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RenderPoolMsg>,
        event: SupervisionEvent,
        state: &mut RenderPoolState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((actor, reason)) = crate::children::ended(&event) else {
            return Ok(());
        };
        let Some(index) = state.slots.iter().position(|s| s.actor.get_id() == actor) else {
            return Ok(());
        };
        tracing::error!(worker = index, %reason, "render worker crashed; starting it again");
        metrics::counter!("hanzo_twin_render_worker_restarts_total").increment(1);
        state.worker_restarts += 1;
        if let Some(mut pending) = state.slots[index].current.take() {
            pending.crashes += 1;
            if pending.crashes >= 2 {
                (pending.reply)(Err(TwinError::Engine {
                    kind: EngineFailure::EngineFailed,
                    field: None,
                    message: format!("the renderer crashed twice drawing this frame: {reason}"),
                }));
            } else {
                // Drawn again first, by whichever worker is free.
                state.queue.push_front(pending);
            }
        }
        state.slots[index].actor = RenderPool::spawn_worker(&myself, index, &state.board).await?;
        state.dispatch();
        Ok(())
    }
}

pub enum WorkerMsg {
    Draw(Arc<RenderWork>),
    CrashNext,
}

impl ractor::Message for WorkerMsg {}

struct WorkerArgs {
    pool: ActorRef<RenderPoolMsg>,
    index: usize,
    messages: crate::inspector::MessageCount,
}

struct WorkerState {
    pool: ActorRef<RenderPoolMsg>,
    index: usize,
    crash_next: bool,
    messages: crate::inspector::MessageCount,
}

struct RenderWorker;

impl Actor for RenderWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState {
            pool: args.pool,
            index: args.index,
            crash_next: false,
            messages: args.messages,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.messages.time();
        match msg {
            WorkerMsg::CrashNext => state.crash_next = true,
            WorkerMsg::Draw(job) => {
                let crash = std::mem::take(&mut state.crash_next);
                let drawn = tokio::task::spawn_blocking(move || {
                    if crash {
                        panic!("fault injected into a render worker");
                    }
                    job.run()
                })
                .await;
                match drawn {
                    Ok(result) => {
                        let _ = state.pool.cast(RenderPoolMsg::Done {
                            worker: state.index,
                            result,
                        });
                    }
                    // The renderer panicked: this worker fails, and the
                    // pool draws the frame again on a fresh one.
                    Err(e) => {
                        let why = if e.is_panic() {
                            hanzo_twin_engines::error::panic_text(&*e.into_panic())
                        } else {
                            e.to_string()
                        };
                        return Err(why.into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The view a request asks for, in a scene whose up axis is `up`.
pub fn view_of(
    scene: &hanzo_twin_engines::SceneModel,
    request: &RenderRequest,
) -> Result<CameraView, TwinError> {
    let (width, height) = (request.width, request.height);
    Ok(match (&request.camera, request.eye, request.look_at) {
        (Some(camera), None, None) => {
            CameraView::from_scene(scene, camera, width, height, request.fov_deg)?
        }
        (None, Some(eye), Some(at)) => CameraView::look_at(
            eye,
            at,
            request.up.unwrap_or_else(|| scene.up_axis.unit()),
            request.fov_deg.unwrap_or(60.0),
            width,
            height,
        )?,
        (Some(_), _, _) => {
            return Err(TwinError::invalid(
                "camera",
                "give a scene camera or eye and look_at, not both",
            ));
        }
        // Nothing said: the scene's first camera.
        (None, None, None) if !scene.cameras.is_empty() => CameraView::from_scene(
            scene,
            &scene.cameras[0].path,
            width,
            height,
            request.fov_deg,
        )?,
        _ => {
            return Err(TwinError::invalid(
                "camera",
                "give a scene camera (a prim path) or both eye and look_at (the scene has no camera of its own)",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_twin_engines::SceneModel;
    use hanzo_twin_engines::scene::{
        Axis, Body, BodyKind, Collider, MassProperties, Material, Shape,
    };
    use hanzo_twin_render::encode::Output;

    fn scene() -> SceneModel {
        SceneModel {
            source: "test.usda".into(),
            up_axis: Axis::Z,
            gravity: None,
            bodies: vec![Body {
                path: "/World/Box".into(),
                kind: BodyKind::Static,
                pose: Pose::IDENTITY,
                mass: MassProperties::default(),
                linear_velocity: [0.0; 3],
                angular_velocity: [0.0; 3],
                colliders: vec![Collider {
                    path: "/World/Box".into(),
                    shape: Shape::Cuboid {
                        half_extents: [0.5; 3],
                    },
                    local_pose: Pose::IDENTITY,
                    material: Material::default(),
                    mass: None,
                    density: None,
                    groups: vec![],
                }],
            }],
            joints: vec![],
            cameras: vec![],
            collision_groups: vec![],
            native: None,
            look: Default::default(),
        }
    }

    fn job(scene: &SceneModel) -> Box<RenderJob> {
        let request = RenderRequest {
            camera: None,
            eye: Some([3.0, 0.0, 0.0]),
            look_at: Some([0.0; 3]),
            up: None,
            fov_deg: None,
            width: 32,
            height: 24,
            outputs: vec![Output::Instance],
            samples_per_pixel: 1,
        };
        Box::new(RenderJob {
            scene: Arc::new(RenderScene::new(scene).expect("drawable")),
            poses: vec![Pose::IDENTITY],
            view: view_of(scene, &request).expect("a view"),
            request,
            time: 0.0,
            step: 0,
        })
    }

    async fn draw(
        pool: &ActorRef<RenderPoolMsg>,
        job: Box<RenderJob>,
    ) -> Result<RenderedFrame, TwinError> {
        match submit(pool, RenderWork::Frame(job)).await? {
            RenderOutcome::Frame(frame) => Ok(*frame),
            RenderOutcome::Batch(_) => panic!("a batch for a frame"),
        }
    }

    async fn submit(
        pool: &ActorRef<RenderPoolMsg>,
        work: RenderWork,
    ) -> Result<RenderOutcome, TwinError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool.cast(RenderPoolMsg::Render {
            work,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })
        .expect("the pool takes work");
        rx.await.expect("the pool answers")
    }

    #[tokio::test]
    async fn a_crashed_worker_is_started_again_and_its_frame_is_drawn_anyway() {
        let workers = RenderWorkers::new(RenderPoolArgs {
            workers: 1,
            max_queue: 4,
        });
        let pool = workers.start(None).await.expect("pool");
        let scene = scene();
        let first = draw(&pool, job(&scene)).await.expect("drawn");
        pool.cast(RenderPoolMsg::CrashNext { worker: 0 })
            .expect("fault");
        let again = draw(&pool, job(&scene))
            .await
            .expect("drawn after the crash");
        assert_eq!(
            again.images, first.images,
            "the redone frame is the same frame"
        );
        assert_eq!(again.instances[0].path, "/World/Box");
        let status = workers.status().await.expect("status");
        assert_eq!(status.worker_restarts, 1);
        assert_eq!(status.frames, 2);
        assert_eq!((status.busy, status.queued), (0, 0));
        // The restarted worker draws on.
        draw(&pool, job(&scene))
            .await
            .expect("drawn by the new worker");
        pool.stop(None);
    }
    #[tokio::test]
    async fn a_datasets_batch_lost_to_a_crash_is_drawn_again_the_same() {
        let scene = hanzo_twin_engines::usd::load_scene(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs/scenes/conveyor/scene.usda"),
        )
        .expect("the conveyor");
        let spec: hanzo_twin_render::synth::SynthSpec = serde_json::from_value(serde_json::json!({
            "twin_id": "belt",
            "output_dataset": "boxes",
            "cameras": [{"path": "/World/Camera", "resolution": [32, 24]}],
            "labels": ["bounding_box_2d", "instance_segmentation", "depth"],
            "randomization": {"lighting": {"vary_intensity": {"min": 0.5, "max": 2.0}}},
            "num_frames": 4,
            "frames_per_gpu": 2,
            "seed": 11
        }))
        .expect("a spec");
        let batch = || SynthBatchJob {
            spec: Arc::new(spec.clone()),
            scene: Arc::new(scene.clone()),
            render: Arc::new(RenderScene::new(&scene).expect("drawable")),
            base_poses: Arc::new(scene.bodies.iter().map(|b| b.pose).collect()),
            frames: 2..4,
        };
        let direct = batch().run().expect("drawn directly");
        let workers = RenderWorkers::new(RenderPoolArgs {
            workers: 1,
            max_queue: 4,
        });
        let pool = workers.start(None).await.expect("pool");
        pool.cast(RenderPoolMsg::CrashNext { worker: 0 })
            .expect("fault");
        let RenderOutcome::Batch(pooled) = submit(&pool, RenderWork::Batch(Box::new(batch())))
            .await
            .expect("drawn after the crash")
        else {
            panic!("a frame for a batch");
        };
        assert_eq!(pooled.files, direct.files);
        assert_eq!(pooled.coco, direct.coco);
        let status = workers.status().await.expect("status");
        assert_eq!((status.worker_restarts, status.frames), (1, 2));
        pool.stop(None);
    }
}

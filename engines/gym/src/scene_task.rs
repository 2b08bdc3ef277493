//! A task on any scene and any engine, through the [`Simulation`] trait:
//! observations, actions, reward and termination are lists of terms
//! ([`TaskSpec`]), written in YAML or JSON. `cartpole-v0`, the classic
//! balancing task on rapier3d, is one such spec over
//! `configs/scenes/cartpole/scene.usda`.
//!
//! Each reset starts from the scene's authored state; with reset noise or a
//! randomization that changes the physics, the episode's scene is rebuilt
//! with the noise and the parameters applied (joints displaced along their
//! axes, masses and frictions changed, gravity tilted).

use crate::{
    ActionDelay, BoxSpace, EnvSpec, EpisodeParams, ObservationPart, Outcome, RgbImage, Task,
    TaskEnv,
};
use hanzo_twin_engines::{
    Engine, EngineConfig, EngineError, EngineKind, JointCommand, RenderParams, SimState, Simulation,
};
use hanzo_twin_render::{CameraView, Frame, RenderError, RenderOptions, RenderScene};
use hanzo_twin_scene::geometry::{cross, quat_conj, quat_mul, quat_rotate, sub};
use hanzo_twin_scene::look::Light;
use hanzo_twin_scene::scene::{BodyKind, JointKind, SceneModel};
use hanzo_twin_scene::tree::{Tree, compose};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A task written as terms.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    /// The engine it runs on unless the environment names another.
    #[serde(default = "default_engine")]
    pub engine: EngineKind,
    /// Physics steps per second.
    #[serde(default = "default_step_hz")]
    pub step_hz: f64,
    /// Physics steps per environment step.
    #[serde(default = "one")]
    pub frame_skip: u32,
    #[serde(default = "default_max_steps")]
    pub max_episode_steps: u32,
    /// The mean episode return at which the task counts as solved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_threshold: Option<f64>,
    pub observation: Vec<ObservationTerm>,
    pub action: Vec<ActionTerm>,
    pub reward: Vec<RewardTerm>,
    #[serde(default)]
    pub termination: Vec<TerminationTerm>,
    #[serde(default)]
    pub reset_noise: ResetNoise,
}

fn default_engine() -> EngineKind {
    EngineKind::Rapier3d
}
fn default_step_hz() -> f64 {
    240.0
}
fn one() -> u32 {
    1
}
fn default_max_steps() -> u32 {
    1000
}

/// What the observation vector holds, term by term, in order.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ObservationTerm {
    JointPosition {
        joint: String,
    },
    JointVelocity {
        joint: String,
    },
    /// World position, 3 values.
    BodyPosition {
        body: String,
    },
    /// World orientation `[x, y, z, w]`, 4 values.
    BodyOrientation {
        body: String,
    },
    /// An inertial sensor fixed to a body, 6 values in the body's frame: the
    /// accelerometer's specific force (acceleration minus gravity over the
    /// last environment step, so +g up at rest) and the gyroscope's angular
    /// velocity.
    Imu {
        body: String,
    },
    BodyLinearVelocity {
        body: String,
    },
    BodyAngularVelocity {
        body: String,
    },
    /// A depth image, `width × height` values in metres (row-major, top row
    /// first), from a scene camera; camera noise applies to it.
    CameraDepth {
        camera: String,
        width: u32,
        height: u32,
    },
    /// A grey image, `width × height` values in 0..1: surfaces lit head-on by
    /// a light at the camera, scaled by the episode's lighting intensity.
    CameraIntensity {
        camera: String,
        width: u32,
        height: u32,
    },
    /// A colour image, `height × width × 3` values in 0..1 (row-major, top
    /// row first, R, G, B), drawn from the scene's materials and lights (the
    /// node's renderer); lighting intensity scales the lights and camera
    /// noise applies. A dict observation gives it as 8-bit pixels.
    CameraRgb {
        camera: String,
        width: u32,
        height: u32,
    },
}

/// How one action value drives a joint.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionTerm {
    pub joint: String,
    pub mode: ActionMode,
    /// The action's bounds (the action space).
    #[serde(default = "minus_one")]
    pub low: f64,
    #[serde(default = "plus_one")]
    pub high: f64,
    /// The command is the (clipped) action times this.
    #[serde(default = "unit")]
    pub scale: f64,
}

fn minus_one() -> f64 {
    -1.0
}
fn plus_one() -> f64 {
    1.0
}
fn unit() -> f64 {
    1.0
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionMode {
    Effort,
    Position,
    Velocity,
}

/// One reward term: `weight × value`. Squared terms are errors, so they
/// take negative weights as penalties.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardTerm {
    /// `weight` every step.
    Alive { weight: f64 },
    /// `weight × (position − target)²`.
    JointPosition {
        joint: String,
        #[serde(default)]
        target: f64,
        weight: f64,
    },
    /// `weight × velocity²`.
    JointVelocity { joint: String, weight: f64 },
    /// `weight × Σ action²`.
    Action { weight: f64 },
    /// `weight × ` the body's velocity along a world axis (progress).
    BodyVelocity {
        body: String,
        axis: hanzo_twin_scene::scene::Axis,
        weight: f64,
    },
    /// `weight × ` the body's height along the up axis.
    BodyHeight { body: String, weight: f64 },
}

/// When an episode ends early (terminated, not truncated).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminationTerm {
    JointPositionOutside { joint: String, low: f64, high: f64 },
    BodyHeightOutside { body: String, low: f64, high: f64 },
}

/// Noise on the initial state of every episode: each moving joint is
/// displaced by a uniform draw within ± `joint_position` and set moving with
/// one within ± `joint_velocity` (joint velocities reach engines that take
/// body velocities from the scene: rapier3d).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetNoise {
    #[serde(default)]
    pub joint_position: f64,
    #[serde(default)]
    pub joint_velocity: f64,
}

const CARTPOLE_SCENE: &str = include_str!("../../../configs/scenes/cartpole/scene.usda");
const CARTPOLE_TASK: &str = include_str!("../../../configs/tasks/cartpole-v0.yaml");

impl TaskSpec {
    /// The built-in cart-pole task (`configs/tasks/cartpole-v0.yaml`).
    pub fn cartpole() -> TaskSpec {
        // The file is part of the build and checked by the tests below.
        TaskSpec::parse(CARTPOLE_TASK).unwrap_or_else(|e| {
            panic!("configs/tasks/cartpole-v0.yaml is part of the build and must parse: {e}")
        })
    }

    /// A twin's own control task: every moving joint's position and
    /// velocity observed, every one driven by an action in -1..1 (`mode`:
    /// effort scaled by the joint's drive limit, a position target scaled
    /// by its range, or a velocity in rad/s or m/s), no reward terms (the
    /// agent brings its own) and no early end; `frame_skip` physics steps at
    /// `step_hz` make one environment step. With `camera_images` (width,
    /// height), every scene camera's colour image is observed too (none
    /// when the scene has no camera; the observation's parts say).
    pub fn control(
        name: &str,
        scene: &SceneModel,
        mode: ActionMode,
        step_hz: f64,
        frame_skip: u32,
        camera_images: Option<(u32, u32)>,
    ) -> Result<TaskSpec, EngineError> {
        let joints: Vec<_> = scene
            .joints
            .iter()
            .filter(|j| j.kind.is_single_axis())
            .collect();
        if joints.is_empty() {
            return Err(invalid(
                "twin_id",
                "the twin's scene has no joint that moves along or about one axis to control; give a task spec".into(),
            ));
        }
        let scale = |j: &hanzo_twin_scene::scene::Joint| -> f64 {
            let positive = |v: f64| (v.is_finite() && v > 0.0).then_some(v);
            match mode {
                ActionMode::Effort => j
                    .drive
                    .as_ref()
                    .and_then(|d| d.max_force)
                    .and_then(positive)
                    .unwrap_or(1.0),
                ActionMode::Position => j
                    .limits
                    .and_then(|(lo, hi)| positive(lo.abs().max(hi.abs())))
                    .unwrap_or(match j.kind {
                        JointKind::Revolute => std::f64::consts::PI,
                        _ => 1.0,
                    }),
                ActionMode::Velocity => 1.0,
            }
        };
        let task = TaskSpec {
            name: name.to_string(),
            engine: default_engine(),
            step_hz,
            frame_skip,
            max_episode_steps: default_max_steps(),
            reward_threshold: None,
            observation: joints
                .iter()
                .map(|j| ObservationTerm::JointPosition {
                    joint: j.path.clone(),
                })
                .chain(joints.iter().map(|j| ObservationTerm::JointVelocity {
                    joint: j.path.clone(),
                }))
                .chain(camera_images.into_iter().flat_map(|(width, height)| {
                    scene
                        .cameras
                        .iter()
                        .map(move |c| ObservationTerm::CameraRgb {
                            camera: c.path.clone(),
                            width,
                            height,
                        })
                }))
                .collect(),
            action: joints
                .iter()
                .map(|j| ActionTerm {
                    joint: j.path.clone(),
                    mode,
                    low: -1.0,
                    high: 1.0,
                    scale: scale(j),
                })
                .collect(),
            reward: Vec::new(),
            termination: Vec::new(),
            reset_noise: ResetNoise::default(),
        };
        task.check()?;
        Ok(task)
    }

    /// Parses a task spec from YAML or JSON, naming the field of any problem.
    pub fn parse(text: &str) -> Result<TaskSpec, EngineError> {
        let value: serde_json::Value =
            serde_yaml_ng::from_str(text).map_err(|e| EngineError::Invalid {
                field: "task".into(),
                message: format!("not YAML or JSON: {e}"),
            })?;
        TaskSpec::from_value(value)
    }

    /// Reads a task spec from JSON (terms are maps of one key: the term's
    /// kind), naming the field of any problem.
    pub fn from_value(value: serde_json::Value) -> Result<TaskSpec, EngineError> {
        serde_path_to_error::deserialize(value).map_err(|e| EngineError::Invalid {
            field: format!("task.{}", e.path()),
            message: e.into_inner().to_string(),
        })
    }

    fn check(&self) -> Result<(), EngineError> {
        let bad = |field: &str, message: String| {
            Err(EngineError::Invalid {
                field: format!("task.{field}"),
                message,
            })
        };
        if !(self.step_hz.is_finite() && self.step_hz > 0.0) {
            return bad("step_hz", "must be a positive number".into());
        }
        if self.frame_skip == 0 || self.max_episode_steps == 0 {
            return bad(
                "frame_skip",
                "frame_skip and max_episode_steps must be at least 1".into(),
            );
        }
        if self.observation.is_empty() {
            return bad("observation", "needs at least one term".into());
        }
        if self.action.is_empty() {
            return bad("action", "needs at least one term".into());
        }
        for (i, a) in self.action.iter().enumerate() {
            if !(a.low.is_finite() && a.high.is_finite() && a.low < a.high && a.scale.is_finite()) {
                return bad(
                    &format!("action[{i}]"),
                    "needs finite low < high and a finite scale".into(),
                );
            }
        }
        let n = &self.reset_noise;
        let scale_ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(scale_ok(n.joint_position) && scale_ok(n.joint_velocity)) {
            return bad("reset_noise", "needs finite, non-negative scales".into());
        }
        Ok(())
    }
}

/// A [`TaskSpec`] bound to a scene and an engine.
pub struct SceneTask {
    task: Arc<TaskSpec>,
    scene: Arc<SceneModel>,
    engine: Arc<dyn Engine>,
    config: EngineConfig,
    spec: EnvSpec,
    drawing: Arc<Drawing>,
}

/// The renderer's copy of the scene, built when an environment first draws
/// and shared by the batch.
type Drawing = std::sync::OnceLock<Result<RenderScene, RenderError>>;

impl SceneTask {
    /// A task on `scene`, run by `engine`. Every path the terms name is
    /// checked against the scene now, so a bad spec fails at creation.
    pub fn new(
        task: TaskSpec,
        scene: SceneModel,
        engine: Arc<dyn Engine>,
    ) -> Result<SceneTask, EngineError> {
        task.check()?;
        let config = EngineConfig {
            step_hz: task.step_hz,
            ..EngineConfig::default()
        };
        // A throwaway simulation proves the scene loads and the paths exist.
        let sim = engine.load_scene(&scene, &config)?;
        let mut obs_len = 0;
        for (i, term) in task.observation.iter().enumerate() {
            let field = format!("task.observation[{i}]");
            match term {
                ObservationTerm::JointPosition { joint }
                | ObservationTerm::JointVelocity { joint } => check_joint(&scene, joint, &field)?,
                ObservationTerm::BodyPosition { body }
                | ObservationTerm::BodyOrientation { body }
                | ObservationTerm::BodyLinearVelocity { body }
                | ObservationTerm::BodyAngularVelocity { body }
                | ObservationTerm::Imu { body } => check_body(&scene, body, &field)?,
                ObservationTerm::CameraDepth {
                    camera,
                    width,
                    height,
                }
                | ObservationTerm::CameraIntensity {
                    camera,
                    width,
                    height,
                }
                | ObservationTerm::CameraRgb {
                    camera,
                    width,
                    height,
                } => {
                    if !scene.cameras.iter().any(|c| &c.path == camera) {
                        return Err(invalid(&field, format!("the scene has no camera {camera}")));
                    }
                    if *width == 0
                        || *height == 0
                        || u64::from(*width) * u64::from(*height) > 512 * 512
                    {
                        return Err(invalid(
                            &field,
                            "width × height must be between 1 and 512 × 512".into(),
                        ));
                    }
                }
            }
            // Counted once checked: an image's size is bounded above.
            obs_len += term_len(term);
        }
        for (i, a) in task.action.iter().enumerate() {
            check_joint(&scene, &a.joint, &format!("task.action[{i}].joint"))?;
        }
        for (i, r) in task.reward.iter().enumerate() {
            let field = format!("task.reward[{i}]");
            match r {
                RewardTerm::JointPosition { joint, .. }
                | RewardTerm::JointVelocity { joint, .. } => check_joint(&scene, joint, &field)?,
                RewardTerm::BodyVelocity { body, .. } | RewardTerm::BodyHeight { body, .. } => {
                    check_body(&scene, body, &field)?
                }
                RewardTerm::Alive { .. } | RewardTerm::Action { .. } => {}
            }
        }
        for (i, t) in task.termination.iter().enumerate() {
            let field = format!("task.termination[{i}]");
            match t {
                TerminationTerm::JointPositionOutside { joint, .. } => {
                    check_joint(&scene, joint, &field)?
                }
                TerminationTerm::BodyHeightOutside { body, .. } => {
                    check_body(&scene, body, &field)?
                }
            }
        }
        if task.reset_noise != ResetNoise::default() {
            Tree::plan(&scene)?;
        }
        drop(sim);
        let has_camera = task.observation.iter().any(|t| {
            matches!(
                t,
                ObservationTerm::CameraDepth { .. }
                    | ObservationTerm::CameraIntensity { .. }
                    | ObservationTerm::CameraRgb { .. }
            )
        });
        let mut randomizable = vec![
            "friction",
            "mass_scale",
            "actuator_delay_ms",
            "gravity_perturbation",
        ];
        if has_camera {
            randomizable.extend(["camera_noise_stddev", "lighting_intensity"]);
        }
        let gravity = scene.default_gravity();
        let spec = EnvSpec {
            name: task.name.clone(),
            engine: engine.kind(),
            observation_space: BoxSpace::unbounded(obs_len),
            observation_parts: observation_parts(&task.observation),
            action_space: BoxSpace {
                low: task.action.iter().map(|a| a.low).collect(),
                high: task.action.iter().map(|a| a.high).collect(),
            },
            dt: f64::from(task.frame_skip) / task.step_hz,
            gravity,
            max_episode_steps: task.max_episode_steps,
            reward_threshold: task.reward_threshold,
            info_keys: task
                .reward
                .iter()
                .map(|r| format!("reward_{}", reward_name(r)))
                .collect(),
            randomizable: randomizable.into_iter().map(String::from).collect(),
        };
        Ok(SceneTask {
            task: Arc::new(task),
            scene: Arc::new(scene),
            engine,
            config,
            spec,
            drawing: Arc::default(),
        })
    }

    /// A built-in task on its own scene (`cartpole-v0`).
    pub fn builtin(task: TaskSpec, engine: EngineKind) -> Result<SceneTask, EngineError> {
        let registry = hanzo_twin_engines::EngineRegistry::with_builtin();
        let engine = registry.get(engine)?;
        let mut file = tempfile::Builder::new()
            .prefix("hanzo-twin-cartpole")
            .suffix(".usda")
            .tempfile()
            .map_err(|e| EngineError::SceneRead {
                file: "cartpole".into(),
                message: format!("cannot write the built-in scene to a temporary file: {e}"),
            })?;
        std::io::Write::write_all(&mut file, CARTPOLE_SCENE.as_bytes()).map_err(|e| {
            EngineError::SceneRead {
                file: "cartpole".into(),
                message: format!("cannot write the built-in scene to a temporary file: {e}"),
            }
        })?;
        let mut scene = hanzo_twin_scene::usd::load_scene(file.path())?;
        scene.source = "configs/scenes/cartpole/scene.usda".into();
        SceneTask::new(task, scene, engine)
    }

    pub fn task(&self) -> &TaskSpec {
        &self.task
    }
}

/// Consecutive terms of one kind make one part; a camera's image is its own.
fn observation_parts(terms: &[ObservationTerm]) -> Vec<ObservationPart> {
    let mut parts: Vec<ObservationPart> = Vec::new();
    for term in terms {
        let name = match term {
            ObservationTerm::JointPosition { .. } => "joint_position".to_string(),
            ObservationTerm::JointVelocity { .. } => "joint_velocity".to_string(),
            ObservationTerm::BodyPosition { .. } => "body_position".to_string(),
            ObservationTerm::BodyOrientation { .. } => "body_orientation".to_string(),
            ObservationTerm::Imu { .. } => "imu".to_string(),
            ObservationTerm::BodyLinearVelocity { .. } => "body_linear_velocity".to_string(),
            ObservationTerm::BodyAngularVelocity { .. } => "body_angular_velocity".to_string(),
            ObservationTerm::CameraDepth { camera, .. } => format!("depth:{camera}"),
            ObservationTerm::CameraIntensity { camera, .. } => format!("intensity:{camera}"),
            ObservationTerm::CameraRgb { camera, .. } => format!("rgb:{camera}"),
        };
        let shape = match term {
            ObservationTerm::CameraDepth { width, height, .. }
            | ObservationTerm::CameraIntensity { width, height, .. } => {
                vec![*height as usize, *width as usize]
            }
            ObservationTerm::CameraRgb { width, height, .. } => {
                vec![*height as usize, *width as usize, 3]
            }
            _ => Vec::new(),
        };
        let camera = name.contains(':');
        match parts.last_mut() {
            Some(last) if last.name == name && !camera => last.size += term_len(term),
            _ => {
                // A kind seen before, after another: its own, numbered part.
                let seen = parts
                    .iter()
                    .filter(|p| p.name == name || p.name.starts_with(&format!("{name}_")))
                    .count();
                let name = if seen == 0 {
                    name
                } else {
                    format!("{name}_{}", seen + 1)
                };
                parts.push(ObservationPart {
                    name,
                    size: term_len(term),
                    shape,
                });
            }
        }
    }
    parts
}

fn term_len(term: &ObservationTerm) -> usize {
    match term {
        ObservationTerm::JointPosition { .. } | ObservationTerm::JointVelocity { .. } => 1,
        ObservationTerm::BodyPosition { .. }
        | ObservationTerm::BodyLinearVelocity { .. }
        | ObservationTerm::BodyAngularVelocity { .. } => 3,
        ObservationTerm::BodyOrientation { .. } => 4,
        ObservationTerm::Imu { .. } => 6,
        ObservationTerm::CameraDepth { width, height, .. }
        | ObservationTerm::CameraIntensity { width, height, .. } => {
            *width as usize * *height as usize
        }
        ObservationTerm::CameraRgb { width, height, .. } => *width as usize * *height as usize * 3,
    }
}

fn reward_name(r: &RewardTerm) -> &'static str {
    match r {
        RewardTerm::Alive { .. } => "alive",
        RewardTerm::JointPosition { .. } => "joint_position",
        RewardTerm::JointVelocity { .. } => "joint_velocity",
        RewardTerm::Action { .. } => "action",
        RewardTerm::BodyVelocity { .. } => "body_velocity",
        RewardTerm::BodyHeight { .. } => "body_height",
    }
}

fn invalid(field: &str, message: String) -> EngineError {
    EngineError::Invalid {
        field: field.to_string(),
        message,
    }
}

fn check_joint(scene: &SceneModel, joint: &str, field: &str) -> Result<(), EngineError> {
    match scene.joints.iter().find(|j| j.path == joint) {
        Some(j) if j.kind.is_single_axis() => Ok(()),
        Some(j) if j.kind == JointKind::Spherical => Err(invalid(
            field,
            format!(
                "{joint} is a spherical joint; a task observes and drives joints that move along or about one axis"
            ),
        )),
        Some(_) => Err(invalid(
            field,
            format!("{joint} is a fixed joint; it does not move"),
        )),
        None => Err(invalid(field, format!("the scene has no joint {joint}"))),
    }
}

fn check_body(scene: &SceneModel, body: &str, field: &str) -> Result<(), EngineError> {
    match scene.body(body) {
        Some(_) => Ok(()),
        None => Err(invalid(
            field,
            format!("the scene has no rigid body {body}"),
        )),
    }
}

impl Task for SceneTask {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn make_env(&self) -> Result<Box<dyn TaskEnv>, EngineError> {
        let sim = self.engine.load_scene(&self.scene, &self.config)?;
        let initial = sim.state()?;
        Ok(Box::new(SceneEnv {
            task: self.task.clone(),
            scene: self.scene.clone(),
            drawing: self.drawing.clone(),
            engine: self.engine.clone(),
            config: self.config.clone(),
            sim,
            initial,
            rebuilt: false,
            delay: ActionDelay::new(0, self.task.frame_skip as usize),
            params: EpisodeParams::default(),
            noise: <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
            command: vec![0.0; self.task.action.len()],
            imu_velocity: Default::default(),
            gravity: self.config.gravity.unwrap_or(self.scene.default_gravity()),
        }))
    }
}

/// One environment of a [`SceneTask`].
struct SceneEnv {
    /// Shared by the batch; read on every step, never copied.
    task: Arc<TaskSpec>,
    scene: Arc<SceneModel>,
    drawing: Arc<Drawing>,
    engine: Arc<dyn Engine>,
    config: EngineConfig,
    sim: Box<dyn Simulation>,
    /// The authored start, for resets that need no rebuild.
    initial: SimState,
    /// Whether `sim` was built from a changed scene (and must be rebuilt to
    /// return to the authored one).
    rebuilt: bool,
    delay: ActionDelay,
    params: EpisodeParams,
    /// Camera noise: a stream seeded from the episode's, so noise is
    /// reproducible too.
    noise: ChaCha8Rng,
    command: Vec<f64>,
    /// Each IMU term's body velocity at the previous observation.
    imu_velocity: std::collections::HashMap<usize, [f64; 3]>,
    /// This episode's gravity, which accelerometers feel.
    gravity: [f64; 3],
}

impl SceneEnv {
    fn observe(&mut self, obs: &mut [f64]) -> Result<(), EngineError> {
        let mut at = 0;
        let task = self.task.clone();
        let terms = &task.observation;
        let dt = f64::from(self.task.frame_skip) / self.task.step_hz;
        for (index, term) in terms.iter().enumerate() {
            let n = term_len(term);
            let out = &mut obs[at..at + n];
            match term {
                ObservationTerm::Imu { body } => {
                    let b = self.body(body)?;
                    let v = b.linear_velocity;
                    // At an episode's first observation: no motion yet.
                    let before = self.imu_velocity.insert(index, v).unwrap_or(v);
                    let g = self.gravity;
                    let specific = [
                        (v[0] - before[0]) / dt - g[0],
                        (v[1] - before[1]) / dt - g[1],
                        (v[2] - before[2]) / dt - g[2],
                    ];
                    let to_body = quat_conj(b.orientation);
                    out[..3].copy_from_slice(&quat_rotate(to_body, specific));
                    out[3..].copy_from_slice(&quat_rotate(to_body, b.angular_velocity));
                }
                ObservationTerm::JointPosition { joint } => out[0] = self.joint(joint)?.0,
                ObservationTerm::JointVelocity { joint } => out[0] = self.joint(joint)?.1,
                ObservationTerm::BodyPosition { body } => {
                    out.copy_from_slice(&self.body(body)?.position)
                }
                ObservationTerm::BodyOrientation { body } => {
                    out.copy_from_slice(&self.body(body)?.orientation)
                }
                ObservationTerm::BodyLinearVelocity { body } => {
                    out.copy_from_slice(&self.body(body)?.linear_velocity)
                }
                ObservationTerm::BodyAngularVelocity { body } => {
                    out.copy_from_slice(&self.body(body)?.angular_velocity)
                }
                ObservationTerm::CameraDepth {
                    camera,
                    width,
                    height,
                } => {
                    let image = self.render(camera, *width, *height)?;
                    for (o, d) in out.iter_mut().zip(&image.depth) {
                        *o = f64::from(*d);
                    }
                    self.add_camera_noise(out);
                }
                ObservationTerm::CameraIntensity {
                    camera,
                    width,
                    height,
                } => {
                    let image = self.render(camera, *width, *height)?;
                    let light = self.params.lighting_intensity.unwrap_or(1.0);
                    shade(&image, light, out);
                    self.add_camera_noise(out);
                }
                ObservationTerm::CameraRgb {
                    camera,
                    width,
                    height,
                } => {
                    let frame = self.picture(Some(camera), *width, *height)?;
                    for (o, c) in out.iter_mut().zip(frame.rgb.iter().flatten()) {
                        *o = f64::from(*c) / 255.0;
                    }
                    self.add_camera_noise(out);
                    for o in out.iter_mut() {
                        *o = o.clamp(0.0, 1.0);
                    }
                }
            }
            at += n;
        }
        Ok(())
    }

    fn render(
        &self,
        camera: &str,
        width: u32,
        height: u32,
    ) -> Result<hanzo_twin_engines::Image, EngineError> {
        let params = RenderParams {
            width,
            height,
            ..RenderParams::default()
        };
        self.sim.render(camera, &params)
    }

    /// A colour frame of the environment now: from the scene camera
    /// `camera`; else the task's first camera, the scene's first, or a view
    /// framing the moving bodies. The episode's lighting intensity scales
    /// the scene's lights.
    fn picture(&self, camera: Option<&str>, width: u32, height: u32) -> Result<Frame, EngineError> {
        let drawing = self
            .drawing
            .get_or_init(|| RenderScene::new(&self.scene))
            .as_ref()
            .map_err(|e| crate::render_error(e.clone()))?;
        let poses = self.sim.observation("/")?.scene_poses(&self.scene);
        let camera = camera
            .or_else(|| {
                self.task.observation.iter().find_map(|t| match t {
                    ObservationTerm::CameraDepth { camera, .. }
                    | ObservationTerm::CameraIntensity { camera, .. }
                    | ObservationTerm::CameraRgb { camera, .. } => Some(camera.as_str()),
                    _ => None,
                })
            })
            .or_else(|| self.scene.cameras.first().map(|c| c.path.as_str()));
        let view = match camera {
            Some(path) => CameraView::from_scene(&self.scene, path, width, height, None),
            None => {
                let moving: Vec<usize> = (self.scene.bodies.iter().enumerate())
                    .filter(|(_, b)| b.kind != BodyKind::Static)
                    .map(|(i, _)| i)
                    .collect();
                drawing.overview(&poses, &moving, self.scene.up_axis.unit(), width, height)
            }
        }
        .map_err(crate::render_error)?;
        let mut options = RenderOptions::default();
        if let Some(factor) = self.params.lighting_intensity {
            options.lights = Some(
                drawing
                    .lights()
                    .iter()
                    .map(|l| Light {
                        intensity: l.intensity * factor,
                        ..l.clone()
                    })
                    .collect(),
            );
        }
        drawing
            .render(&poses, &view, &options)
            .map_err(crate::render_error)
    }

    /// Multiplies each value by `1 + N(0, σ)`, σ the episode's camera noise.
    fn add_camera_noise(&mut self, out: &mut [f64]) {
        let sigma = self.params.camera_noise_stddev.unwrap_or(0.0);
        if sigma == 0.0 {
            return;
        }
        for o in out.iter_mut() {
            *o *= 1.0 + sigma * self.noise.sample::<f64, _>(StandardNormal);
        }
    }

    fn joint(&self, path: &str) -> Result<(f64, f64), EngineError> {
        let o = self.sim.observation(path)?;
        o.joints
            .first()
            .map(|j| (j.position, j.velocity))
            .ok_or_else(|| EngineError::UnknownPath {
                what: "joint",
                path: path.to_string(),
            })
    }

    fn body(&self, path: &str) -> Result<hanzo_twin_engines::BodyObservation, EngineError> {
        let o = self.sim.observation(path)?;
        o.bodies
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::UnknownPath {
                what: "body",
                path: path.to_string(),
            })
    }

    fn send_commands(&mut self, action: &[f32]) -> Result<(), EngineError> {
        for (i, term) in self.task.action.iter().enumerate() {
            let a = f64::from(action[i]).clamp(term.low, term.high) * term.scale;
            self.command[i] = a;
            let cmd = match term.mode {
                ActionMode::Effort => JointCommand::Effort(a),
                ActionMode::Position => JointCommand::Position(a),
                ActionMode::Velocity => JointCommand::Velocity(a),
            };
            self.sim.set_joint_command(&term.joint, cmd)?;
        }
        Ok(())
    }

    fn up(&self) -> usize {
        match self.scene.up_axis {
            hanzo_twin_scene::scene::Axis::X => 0,
            hanzo_twin_scene::scene::Axis::Y => 1,
            hanzo_twin_scene::scene::Axis::Z => 2,
        }
    }
}

impl TaskEnv for SceneEnv {
    fn render(
        &self,
        camera: Option<&str>,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, EngineError> {
        let frame = self.picture(camera, width, height)?;
        Ok(RgbImage {
            width,
            height,
            pixels: frame.rgb.unwrap_or_default(),
        })
    }

    fn reset(
        &mut self,
        rng: &mut ChaCha8Rng,
        params: &EpisodeParams,
        obs: &mut [f64],
        info: &mut [f64],
    ) -> Result<(), EngineError> {
        self.params = *params;
        self.delay = ActionDelay::new(
            params.delay_substeps(1.0 / self.task.step_hz),
            self.task.frame_skip as usize,
        );
        let noise = self.task.reset_noise;
        let noisy = noise.joint_position > 0.0 || noise.joint_velocity > 0.0;
        if noisy || params.changes_model() {
            let mut scene = (*self.scene).clone();
            let mut config = self.config.clone();
            randomize_scene(&mut scene, &mut config, params);
            if noisy {
                displace_joints(&mut scene, noise, rng)?;
            }
            self.sim = self.engine.load_scene(&scene, &config)?;
            self.rebuilt = true;
        } else if self.rebuilt {
            self.sim = self.engine.load_scene(&self.scene, &self.config)?;
            self.rebuilt = false;
        } else {
            self.sim.set_state(&self.initial)?;
        }
        self.command.fill(0.0);
        self.imu_velocity.clear();
        self.gravity = params
            .gravity
            .or(self.config.gravity)
            .unwrap_or(self.scene.default_gravity());
        self.noise = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(rng.random());
        info.fill(0.0);
        self.observe(obs)
    }

    fn step(
        &mut self,
        action: &[f32],
        obs: &mut [f64],
        info: &mut [f64],
    ) -> Result<Outcome, EngineError> {
        let frame_skip = self.task.frame_skip as usize;
        if self.delay.delay() == 0 {
            self.send_commands(action)?;
            for _ in 0..frame_skip {
                self.sim.step()?;
            }
        } else {
            self.delay.push(action);
            for k in 0..frame_skip {
                let delayed = self.delay.at(k).to_vec();
                self.send_commands(&delayed)?;
                self.sim.step()?;
            }
        }
        let mut reward = 0.0;
        let up = self.up();
        let task = self.task.clone();
        for (i, term) in task.reward.iter().enumerate() {
            let value = match term {
                RewardTerm::Alive { weight } => *weight,
                RewardTerm::JointPosition {
                    joint,
                    target,
                    weight,
                } => weight * (self.joint(joint)?.0 - target).powi(2),
                RewardTerm::JointVelocity { joint, weight } => {
                    weight * self.joint(joint)?.1.powi(2)
                }
                RewardTerm::Action { weight } => {
                    weight * action.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>()
                }
                RewardTerm::BodyVelocity { body, axis, weight } => {
                    let v = self.body(body)?.linear_velocity;
                    let k = match axis {
                        hanzo_twin_scene::scene::Axis::X => 0,
                        hanzo_twin_scene::scene::Axis::Y => 1,
                        hanzo_twin_scene::scene::Axis::Z => 2,
                    };
                    weight * v[k]
                }
                RewardTerm::BodyHeight { body, weight } => weight * self.body(body)?.position[up],
            };
            info[i] = value;
            reward += value;
        }
        let mut terminated = false;
        for term in &self.task.termination {
            let (value, low, high) = match term {
                TerminationTerm::JointPositionOutside { joint, low, high } => {
                    (self.joint(joint)?.0, *low, *high)
                }
                TerminationTerm::BodyHeightOutside { body, low, high } => {
                    (self.body(body)?.position[up], *low, *high)
                }
            };
            if !(low..=high).contains(&value) {
                terminated = true;
            }
        }
        self.observe(obs)?;
        Ok(Outcome { reward, terminated })
    }
}

/// Lambert shading with a light at the camera: the cosine between each
/// pixel's surface normal (from the depth of its neighbours) and the ray,
/// times `light`, clipped to 0..1. Pixels that hit nothing are 0.
fn shade(image: &hanzo_twin_engines::Image, light: f64, out: &mut [f64]) {
    let (w, h) = (image.width as usize, image.height as usize);
    let depth = |x: usize, y: usize| f64::from(image.depth[y * w + x]);
    let hit = |x: usize, y: usize| image.instance_id[y * w + x] != u32::MAX;
    for y in 0..h {
        for x in 0..w {
            let o = &mut out[y * w + x];
            if !hit(x, y) {
                *o = 0.0;
                continue;
            }
            let d = depth(x, y);
            // Depth slope across one pixel in each direction, in pixel widths
            // at that distance: a surface facing the camera has none.
            let (xl, xr) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let (yu, yd) = (y.saturating_sub(1), (y + 1).min(h - 1));
            let pixel = (d * 2.0 / w.max(1) as f64).max(1e-9);
            let gx = if hit(xl, y) && hit(xr, y) && xr > xl {
                (depth(xr, y) - depth(xl, y)) / ((xr - xl) as f64 * pixel)
            } else {
                0.0
            };
            let gy = if hit(x, yu) && hit(x, yd) && yd > yu {
                (depth(x, yd) - depth(x, yu)) / ((yd - yu) as f64 * pixel)
            } else {
                0.0
            };
            let cos = 1.0 / (1.0 + gx * gx + gy * gy).sqrt();
            *o = (light * cos).clamp(0.0, 1.0);
        }
    }
}

/// The episode's physics: friction, masses and gravity.
fn randomize_scene(scene: &mut SceneModel, config: &mut EngineConfig, params: &EpisodeParams) {
    for body in &mut scene.bodies {
        if let Some(f) = params.friction {
            for c in &mut body.colliders {
                c.material.static_friction = f;
                c.material.dynamic_friction = f;
            }
        }
        if let Some(s) = params.mass_scale
            && body.kind == BodyKind::Dynamic
        {
            let m = &mut body.mass;
            m.mass = m.mass.map(|v| v * s);
            m.density = m.density.map(|v| v * s);
            m.diagonal_inertia = m.diagonal_inertia.map(|i| [i[0] * s, i[1] * s, i[2] * s]);
            for c in &mut body.colliders {
                c.mass = c.mass.map(|v| v * s);
                c.density = c.density.map(|v| v * s);
            }
            // A body with neither mass nor density takes the engines' default
            // density; scale that too.
            if m.mass.is_none()
                && m.density.is_none()
                && body
                    .colliders
                    .iter()
                    .all(|c| c.mass.is_none() && c.density.is_none())
            {
                m.density = Some(1000.0 * s);
            }
        }
    }
    if let Some(g) = params.gravity {
        config.gravity = Some(g);
    }
}

/// Displaces every moving joint by a uniform draw within the noise scales,
/// parents before children: the joint's child subtree turns about (revolute)
/// or slides along (prismatic) the joint axis, and gets the matching velocity.
fn displace_joints(
    scene: &mut SceneModel,
    noise: ResetNoise,
    rng: &mut ChaCha8Rng,
) -> Result<(), EngineError> {
    let tree = Tree::plan(scene)?;
    let index: std::collections::HashMap<String, usize> = scene
        .bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (b.path.clone(), i))
        .collect();
    // Depth-first from the roots: parents first.
    let mut order = Vec::new();
    let mut stack: Vec<usize> = tree.roots.iter().rev().copied().collect();
    while let Some(b) = stack.pop() {
        order.push(b);
        stack.extend(tree.children[b].iter().rev());
    }
    for &child in &order {
        let Some(j) = tree.parent_joint[child] else {
            continue;
        };
        let joint = scene.joints[j].clone();
        if !joint.kind.is_single_axis() {
            continue;
        }
        let dq = if noise.joint_position > 0.0 {
            rng.random_range(-noise.joint_position..=noise.joint_position)
        } else {
            0.0
        };
        let dv = if noise.joint_velocity > 0.0 {
            rng.random_range(-noise.joint_velocity..=noise.joint_velocity)
        } else {
            0.0
        };
        let parent_pose = joint
            .body0
            .as_ref()
            .and_then(|p| index.get(p))
            .map_or(hanzo_twin_scene::scene::Pose::IDENTITY, |&p| {
                scene.bodies[p].pose
            });
        let frame = compose(&parent_pose, &joint.local_pose0);
        let axis = quat_rotate(frame.rotation, joint.axis.unit());
        let anchor = frame.translation;
        // The child's subtree.
        let mut subtree = Vec::new();
        let mut stack = vec![child];
        while let Some(b) = stack.pop() {
            subtree.push(b);
            stack.extend(tree.children[b].iter());
        }
        for b in subtree {
            let body = &mut scene.bodies[b];
            match joint.kind {
                JointKind::Revolute => {
                    let (s, c) = (dq / 2.0).sin_cos();
                    let q = [axis[0] * s, axis[1] * s, axis[2] * s, c];
                    let r = sub(body.pose.translation, anchor);
                    let r = quat_rotate(q, r);
                    body.pose.translation = [anchor[0] + r[0], anchor[1] + r[1], anchor[2] + r[2]];
                    body.pose.rotation = quat_mul(q, body.pose.rotation);
                    let w = [axis[0] * dv, axis[1] * dv, axis[2] * dv];
                    let v = cross(w, r);
                    for (k, (w, v)) in w.iter().zip(v).enumerate() {
                        body.angular_velocity[k] += w;
                        body.linear_velocity[k] += v;
                    }
                }
                JointKind::Prismatic => {
                    for (k, a) in axis.iter().enumerate() {
                        body.pose.translation[k] += a * dq;
                        body.linear_velocity[k] += a * dv;
                    }
                }
                JointKind::Fixed | JointKind::Spherical => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twins_control_task_observes_and_drives_every_moving_joint() {
        let scene = hanzo_twin_scene::usd::load_scene(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/scenes/robot-arm/scene.usda"
        )))
        .expect("the sample arm");
        let moving = scene
            .joints
            .iter()
            .filter(|j| j.kind.is_single_axis())
            .count();
        assert!(moving >= 2);
        let task = TaskSpec::control("arm-control", &scene, ActionMode::Position, 240.0, 4, None)
            .expect("a control task");
        assert_eq!(task.action.len(), moving);
        assert!(
            task.action
                .iter()
                .all(|a| a.mode == ActionMode::Position && a.scale > 0.0)
        );
        assert!(task.reward.is_empty() && task.termination.is_empty());
        assert_eq!(
            observation_parts(&task.observation),
            [
                ObservationPart {
                    name: "joint_position".into(),
                    size: moving,
                    shape: Vec::new(),
                },
                ObservationPart {
                    name: "joint_velocity".into(),
                    size: moving,
                    shape: Vec::new(),
                },
            ]
        );
        // With camera images: each scene camera's, shaped as an image.
        let task = TaskSpec::control(
            "arm-control",
            &scene,
            ActionMode::Effort,
            240.0,
            4,
            Some((8, 6)),
        )
        .expect("a control task with images");
        let parts = observation_parts(&task.observation);
        assert_eq!(parts.len(), 2 + scene.cameras.len());
        assert!(!scene.cameras.is_empty());
        for (part, camera) in parts[2..].iter().zip(&scene.cameras) {
            assert_eq!(part.name, format!("rgb:{}", camera.path));
            assert_eq!(
                (part.size, part.shape.as_slice()),
                (8 * 6 * 3, &[6, 8, 3][..])
            );
        }
        // A kind coming back after another is its own part; cameras each are.
        let parts = observation_parts(&[
            ObservationTerm::JointPosition { joint: "/a".into() },
            ObservationTerm::BodyPosition { body: "/b".into() },
            ObservationTerm::JointPosition { joint: "/c".into() },
            ObservationTerm::CameraDepth {
                camera: "/Cam".into(),
                width: 4,
                height: 3,
            },
        ]);
        let names: Vec<_> = parts.iter().map(|p| (p.name.as_str(), p.size)).collect();
        assert_eq!(
            names,
            [
                ("joint_position", 1),
                ("body_position", 3),
                ("joint_position_2", 1),
                ("depth:/Cam", 12)
            ]
        );
        // A scene with nothing to move has no control task.
        let mut still = scene.clone();
        still.joints.clear();
        let e = TaskSpec::control("x", &still, ActionMode::Effort, 240.0, 1, None)
            .expect_err("no joints");
        assert!(e.to_string().contains("no joint that moves"), "{e}");
    }

    #[test]
    fn the_builtin_cartpole_spec_parses_and_bad_specs_name_their_field() {
        let spec = TaskSpec::cartpole();
        assert_eq!(spec.name, "cartpole-v0");
        let err = TaskSpec::parse(
            "name: x\nobservation: []\naction: []\nreward: [{alive: {weight: one}}]\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("task.reward[0]"), "{err}");
    }
}

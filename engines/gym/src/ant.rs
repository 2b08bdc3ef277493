//! Gymnasium's Ant-v5 on MuJoCo, written against MuJoCo's arrays directly
//! (the hot path of training): same model file, same observation, reward
//! terms, frame skip, termination and time limit, so results compare like with
//! like (`engines/gym/tests/gym_ant.rs` checks it step by step against Gymnasium
//! itself). Friction, mass, gravity and actuator delay can be randomized.

use crate::{ActionDelay, BoxSpace, EnvSpec, EpisodeParams, Outcome, RgbImage, Task, TaskEnv};
use hanzo_twin_engines::mujoco::drawing::{self, Drawable};
use hanzo_twin_engines::{EngineError, EngineKind};
use hanzo_twin_render::{CameraView, RenderError, RenderOptions, RenderScene};
use mujoco_rs::prelude::{MjData, MjModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::path::Path;
use std::sync::Arc;

/// The values each step reports in `info`, as Gymnasium's Ant-v5 names them.
pub const INFO_KEYS: [&str; 9] = [
    "reward_forward",
    "reward_ctrl",
    "reward_contact",
    "reward_survive",
    "x_position",
    "y_position",
    "distance_from_origin",
    "x_velocity",
    "y_velocity",
];

/// Ant-v5's settings, with Gymnasium's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AntConfig {
    pub frame_skip: u32,
    pub forward_reward_weight: f64,
    pub ctrl_cost_weight: f64,
    pub contact_cost_weight: f64,
    pub healthy_reward: f64,
    pub terminate_when_unhealthy: bool,
    pub healthy_z_range: (f64, f64),
    pub contact_force_range: (f64, f64),
    pub reset_noise_scale: f64,
    /// Steps before an episode is truncated (Gymnasium registers Ant-v5 with 1000).
    pub max_episode_steps: u32,
}

impl Default for AntConfig {
    fn default() -> Self {
        AntConfig {
            frame_skip: 5,
            forward_reward_weight: 1.0,
            ctrl_cost_weight: 0.5,
            contact_cost_weight: 5e-4,
            healthy_reward: 1.0,
            terminate_when_unhealthy: true,
            healthy_z_range: (0.2, 1.0),
            contact_force_range: (-1.0, 1.0),
            reset_noise_scale: 0.1,
            max_episode_steps: 1000,
        }
    }
}

/// The task: the model and the settings, shared by every environment of it.
pub struct AntTask {
    model: Arc<MjModel>,
    config: AntConfig,
    init_qpos: Vec<f64>,
    init_qvel: Vec<f64>,
    nq: usize,
    nv: usize,
    nu: usize,
    nbody: usize,
    spec: EnvSpec,
    drawing: Arc<Drawing>,
}

/// The model as the renderer draws it, built when an environment first
/// draws and shared by the batch (randomization changes no geometry).
type Drawing = std::sync::OnceLock<Result<(Drawable, RenderScene), RenderError>>;

// SAFETY: the model is only read after construction (MjModel is Send + Sync).
unsafe impl Send for AntTask {}
unsafe impl Sync for AntTask {}

/// One step's outcome; the observation is written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AntStep {
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
    pub reward_forward: f64,
    pub reward_ctrl: f64,
    pub reward_contact: f64,
    pub reward_survive: f64,
    pub x_position: f64,
    pub y_position: f64,
    pub x_velocity: f64,
    pub y_velocity: f64,
}

impl AntTask {
    /// Loads Ant-v5's model (Gymnasium's `ant.xml`) from `xml`.
    pub fn load(xml: &Path, config: AntConfig) -> Result<Arc<AntTask>, EngineError> {
        if config.frame_skip == 0 || config.max_episode_steps == 0 {
            return Err(EngineError::Invalid {
                field: "task".into(),
                message: "frame_skip and max_episode_steps must be at least 1".into(),
            });
        }
        let model = MjModel::from_xml(xml).map_err(|e| EngineError::SceneRead {
            file: xml.display().to_string(),
            message: format!("MuJoCo could not load the model: {e}"),
        })?;
        let m = model.ffi();
        let (nq, nv, nu, nbody) = (
            m.nq as usize,
            m.nv as usize,
            m.nu as usize,
            m.nbody as usize,
        );
        if nq != nv + 1 || nbody < 2 || nu == 0 {
            return Err(EngineError::Invalid {
                field: "task".into(),
                message: format!(
                    "{} is not an Ant-like model (a free-floating torso and actuated legs)",
                    xml.display()
                ),
            });
        }
        // SAFETY: qpos0 is nq long; qvel starts at zero.
        let init_qpos = unsafe { std::slice::from_raw_parts(m.qpos0, nq) }.to_vec();
        let ctrl = model.actuator_ctrlrange();
        let action_space = BoxSpace {
            low: ctrl.iter().map(|r| r[0]).collect(),
            high: ctrl.iter().map(|r| r[1]).collect(),
        };
        let spec = EnvSpec {
            name: "ant-v5".into(),
            engine: EngineKind::Mujoco,
            observation_space: BoxSpace::unbounded(nq - 2 + nv + 6 * (nbody - 1)),
            observation_parts: crate::ObservationPart::whole(nq - 2 + nv + 6 * (nbody - 1)),
            action_space,
            dt: m.opt.timestep * f64::from(config.frame_skip),
            gravity: m.opt.gravity,
            max_episode_steps: config.max_episode_steps,
            // Gymnasium's Ant-v5.
            reward_threshold: Some(6000.0),
            info_keys: INFO_KEYS.iter().map(|k| k.to_string()).collect(),
            randomizable: [
                "friction",
                "mass_scale",
                "actuator_delay_ms",
                "gravity_perturbation",
            ]
            .iter()
            .map(|k| k.to_string())
            .collect(),
        };
        Ok(Arc::new(AntTask {
            spec,
            model: Arc::new(model),
            config,
            init_qpos,
            init_qvel: vec![0.0; nv],
            nq,
            nv,
            nu,
            nbody,
            drawing: Arc::default(),
        }))
    }

    /// Observation length: qpos without x and y, qvel, and the clipped external
    /// contact forces of every body but the world.
    pub fn observation_size(&self) -> usize {
        self.nq - 2 + self.nv + 6 * (self.nbody - 1)
    }

    pub fn action_size(&self) -> usize {
        self.nu
    }

    /// Seconds of simulated time per environment step.
    pub fn dt(&self) -> f64 {
        self.model.ffi().opt.timestep * f64::from(self.config.frame_skip)
    }

    pub fn config(&self) -> &AntConfig {
        &self.config
    }
}

impl Task for AntTask {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn make_env(&self) -> Result<Box<dyn TaskEnv>, EngineError> {
        Ok(Box::new(AntEnv::from_task(self)))
    }
}

/// One Ant environment.
pub struct AntEnv {
    /// The task's model, shared; a randomized episode gets a copy of its own.
    base: Arc<MjModel>,
    config: AntConfig,
    init_qpos: Vec<f64>,
    init_qvel: Vec<f64>,
    nbody: usize,
    data: MjData<Arc<MjModel>>,
    /// Whether `data` runs a randomized copy of the model.
    own_model: bool,
    rng: ChaCha8Rng,
    delay: ActionDelay,
    steps: u32,
    drawing: Arc<Drawing>,
}

impl AntEnv {
    pub fn new(task: &Arc<AntTask>) -> AntEnv {
        AntEnv::from_task(task)
    }

    fn from_task(task: &AntTask) -> AntEnv {
        AntEnv {
            base: task.model.clone(),
            config: task.config.clone(),
            init_qpos: task.init_qpos.clone(),
            init_qvel: task.init_qvel.clone(),
            nbody: task.nbody,
            data: MjData::new(task.model.clone()),
            own_model: false,
            rng: ChaCha8Rng::seed_from_u64(0),
            delay: ActionDelay::new(0, task.config.frame_skip as usize),
            steps: 0,
            drawing: task.drawing.clone(),
        }
    }

    /// Starts an episode: the initial pose with uniform noise on positions and
    /// normal noise on velocities. A seed makes the episode, and every episode
    /// after it until the next seed, reproducible.
    pub fn reset(&mut self, seed: Option<u64>, obs: &mut [f64]) {
        if let Some(seed) = seed {
            self.rng = ChaCha8Rng::seed_from_u64(seed);
        }
        let mut rng = self.rng.clone();
        self.reset_from(&mut rng, obs);
        self.rng = rng;
    }

    fn reset_from(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f64]) {
        let s = self.config.reset_noise_scale;
        let qpos: Vec<f64> = self
            .init_qpos
            .iter()
            .map(|q| q + rng.random_range(-s..=s))
            .collect();
        let qvel: Vec<f64> = self
            .init_qvel
            .iter()
            .map(|v| v + s * rng.sample::<f64, _>(StandardNormal))
            .collect();
        self.set_state(&qpos, &qvel, obs);
    }

    /// The model of an episode: the task's own, or a copy with this
    /// episode's friction, masses and gravity.
    fn apply(&mut self, params: &EpisodeParams) {
        let timestep = self.base.ffi().opt.timestep;
        self.delay = ActionDelay::new(
            params.delay_substeps(timestep),
            self.config.frame_skip as usize,
        );
        if !params.changes_model() {
            if self.own_model {
                self.data = MjData::new(self.base.clone());
                self.own_model = false;
            }
            return;
        }
        let mut model = (*self.base).clone();
        if let Some(f) = params.friction {
            for g in model.geom_friction_mut() {
                g[0] = f;
            }
        }
        if let Some(scale) = params.mass_scale {
            for m in model.body_mass_mut() {
                *m *= scale;
            }
            for i in model.body_inertia_mut() {
                for v in i.iter_mut() {
                    *v *= scale;
                }
            }
        }
        if let Some(g) = params.gravity {
            model.opt_mut().gravity = g;
        }
        // Masses change constants MuJoCo derives at load time.
        MjData::new(&mut model).set_const();
        self.data = MjData::new(Arc::new(model));
        self.own_model = true;
    }

    /// Puts the environment at `qpos`, `qvel` (as Gymnasium's reset does: a
    /// fresh MuJoCo state, then forward dynamics), writing the observation.
    pub fn set_state(&mut self, qpos: &[f64], qvel: &[f64], obs: &mut [f64]) {
        self.data.reset();
        self.data.qpos_mut().copy_from_slice(qpos);
        self.data.qvel_mut().copy_from_slice(qvel);
        self.data.forward();
        self.steps = 0;
        self.delay.clear();
        self.observe(obs);
    }

    /// Advances the physics one environment step under `action` (`frame_skip`
    /// MuJoCo steps and the contact forces), computing no observation or reward.
    pub fn simulate(&mut self, action: &[f32]) {
        let frame_skip = self.config.frame_skip as usize;
        if self.delay.delay() == 0 {
            for (ctrl, a) in self.data.ctrl_mut().iter_mut().zip(action) {
                *ctrl = f64::from(*a);
            }
            for _ in 0..frame_skip {
                self.data.step();
            }
        } else {
            self.delay.push(action);
            for k in 0..frame_skip {
                for (ctrl, a) in self.data.ctrl_mut().iter_mut().zip(self.delay.at(k)) {
                    *ctrl = f64::from(*a);
                }
                self.data.step();
            }
        }
        // Contact forces are computed only on request (as Gymnasium does).
        self.data.rne_post_constraint();
    }

    /// One environment step: `frame_skip` MuJoCo steps under `action`.
    pub fn step(&mut self, action: &[f32], obs: &mut [f64]) -> AntStep {
        let before = self.torso_xy();
        self.simulate(action);
        let cfg = &self.config;
        let after = self.torso_xy();
        let dt = self.base.ffi().opt.timestep * f64::from(cfg.frame_skip);
        let x_velocity = (after[0] - before[0]) / dt;
        let y_velocity = (after[1] - before[1]) / dt;
        self.observe(obs);
        let healthy = self.healthy();
        let reward_forward = x_velocity * cfg.forward_reward_weight;
        let reward_survive = if healthy { cfg.healthy_reward } else { 0.0 };
        // Gymnasium's actions are float32 and NumPy sums their squares in
        // float32: do the same, so rewards agree to the last bit that matters.
        let squares: Vec<f32> = action.iter().map(|a| a * a).collect();
        let ctrl_cost = f64::from(cfg.ctrl_cost_weight as f32 * numpy_sum_f32(&squares));
        let contact_cost = cfg.contact_cost_weight * self.contact_sum_sq();
        self.steps += 1;
        let qpos = self.data.qpos();
        AntStep {
            reward: reward_forward + reward_survive - (ctrl_cost + contact_cost),
            terminated: !healthy && cfg.terminate_when_unhealthy,
            truncated: self.steps >= cfg.max_episode_steps,
            reward_forward,
            reward_ctrl: -ctrl_cost,
            reward_contact: -contact_cost,
            reward_survive,
            x_position: qpos[0],
            y_position: qpos[1],
            x_velocity,
            y_velocity,
        }
    }

    fn torso_xy(&self) -> [f64; 2] {
        let p = self.data.xpos()[1];
        [p[0], p[1]]
    }

    fn healthy(&self) -> bool {
        let (lo, hi) = self.config.healthy_z_range;
        let finite = self
            .data
            .qpos()
            .iter()
            .chain(self.data.qvel())
            .all(|v| v.is_finite());
        let z = self.data.qpos()[2];
        finite && lo <= z && z <= hi
    }

    fn contact(&self, v: f64) -> f64 {
        let (lo, hi) = self.config.contact_force_range;
        v.clamp(lo, hi)
    }

    fn contact_sum_sq(&self) -> f64 {
        // SAFETY: cfrc_ext is nbody × 6.
        let f = unsafe { std::slice::from_raw_parts(self.data.ffi().cfrc_ext, self.nbody * 6) };
        f.iter().map(|v| self.contact(*v).powi(2)).sum()
    }

    fn observe(&self, obs: &mut [f64]) {
        let qpos = &self.data.qpos()[2..];
        let qvel = self.data.qvel();
        // SAFETY: cfrc_ext is nbody × 6.
        let f = unsafe { std::slice::from_raw_parts(self.data.ffi().cfrc_ext, self.nbody * 6) };
        let (a, rest) = obs.split_at_mut(qpos.len());
        a.copy_from_slice(qpos);
        let (b, rest) = rest.split_at_mut(qvel.len());
        b.copy_from_slice(qvel);
        for (o, v) in rest.iter_mut().zip(&f[6..]) {
            *o = self.contact(*v);
        }
    }

    /// The positions and velocities now.
    pub fn state(&self) -> (Vec<f64>, Vec<f64>) {
        (self.data.qpos().to_vec(), self.data.qvel().to_vec())
    }

    /// Steps since the episode began.
    pub fn episode_steps(&self) -> u32 {
        self.steps
    }
}

/// NumPy's sum of a float32 array (pairwise: eight running sums over blocks of
/// eight, combined as a tree), for arrays of up to 128 values; longer ones
/// are summed in halves, as NumPy does.
fn numpy_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        return a.iter().fold(0.0, |s, v| s + v);
    }
    if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for block in a[8..whole].chunks(8) {
            for (acc, v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[whole..] {
            res += v;
        }
        return res;
    }
    let half = (n / 2) - (n / 2) % 8;
    numpy_sum_f32(&a[..half]) + numpy_sum_f32(&a[half..])
}

impl TaskEnv for AntEnv {
    /// From the model's camera `camera` (ant.xml has `track`), or a view
    /// that follows the ant (as Gymnasium's default camera does).
    fn render(
        &self,
        camera: Option<&str>,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, EngineError> {
        let (drawable, scene) = self
            .drawing
            .get_or_init(|| {
                let drawable = Drawable::of(&self.base);
                RenderScene::new(&drawable.scene).map(|scene| (drawable, scene))
            })
            .as_ref()
            .map_err(|e| crate::render_error(e.clone()))?;
        let poses = drawable.poses(self.data.ffi());
        let view = match camera {
            Some(name) => {
                let camera =
                    drawing::camera(&self.base, self.data.ffi(), name).ok_or_else(|| {
                        EngineError::UnknownPath {
                            what: "camera",
                            path: name.to_string(),
                        }
                    })?;
                CameraView::of_camera(&camera, width, height, None)
            }
            None => scene.overview(&poses, &[], [0.0, 0.0, 1.0], width, height),
        }
        .map_err(crate::render_error)?;
        let frame = scene
            .render(&poses, &view, &RenderOptions::default())
            .map_err(crate::render_error)?;
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
        self.apply(params);
        self.reset_from(rng, obs);
        let qpos = self.data.qpos();
        let (x, y) = (qpos[0], qpos[1]);
        info.fill(0.0);
        info[4] = x;
        info[5] = y;
        info[6] = x.hypot(y);
        Ok(())
    }

    fn step(
        &mut self,
        action: &[f32],
        obs: &mut [f64],
        info: &mut [f64],
    ) -> Result<Outcome, EngineError> {
        let r = AntEnv::step(self, action, obs);
        info.copy_from_slice(&[
            r.reward_forward,
            r.reward_ctrl,
            r.reward_contact,
            r.reward_survive,
            r.x_position,
            r.y_position,
            r.x_position.hypot(r.y_position),
            r.x_velocity,
            r.y_velocity,
        ]);
        Ok(Outcome {
            reward: r.reward,
            terminated: r.terminated,
        })
    }
}

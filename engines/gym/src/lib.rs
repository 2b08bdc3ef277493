//! Reinforcement-learning environments on engines, Gymnasium's contract in
//! Rust: a [`Task`] says what an environment observes, how actions drive it,
//! and what it is rewarded for; a [`VecEnv`] owns a batch of a task's
//! environments and steps them across the machine's cores in one call, with
//! Gymnasium 1.x's autoreset modes and per-episode domain randomization.
//!
//! Tasks:
//! * [`ant::AntTask`] (feature `mujoco`): Gymnasium's Ant-v5 on its own
//!   `ant.xml`, written against MuJoCo's arrays (the hot path of training);
//! * [`scene_task::SceneTask`]: any scene on any engine, with observations,
//!   actions, rewards and terminations built from weighted terms
//!   ([`scene_task::TaskSpec`]); `cartpole-v0` ships on rapier3d.
//!
//! Reproducibility: environment `i` of a batch reset with seed `s` draws every
//! episode's noise and randomization from its own ChaCha8 stream seeded with
//! `s + i`, so a seed fixes the episodes whichever thread runs them.

#[cfg(feature = "mujoco")]
pub mod ant;
pub mod randomize;
pub mod scene_task;
mod vec_env;

#[cfg(feature = "mujoco")]
pub use ant::{AntConfig, AntEnv, AntStep, AntTask};
pub use randomize::{EpisodeParams, GravityPerturbation, Randomization, Range};
pub use vec_env::{AutoReset, VecEnv, VecEnvConfig, VecOutput};

use hanzo_twin_engines::EngineError;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A box of `f64` (observations) or `f32` (actions) bounds, Gymnasium's `Box`.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxSpace {
    pub low: Vec<f64>,
    pub high: Vec<f64>,
}

impl BoxSpace {
    pub fn unbounded(n: usize) -> BoxSpace {
        BoxSpace {
            low: vec![f64::NEG_INFINITY; n],
            high: vec![f64::INFINITY; n],
        }
    }

    pub fn len(&self) -> usize {
        self.low.len()
    }

    pub fn is_empty(&self) -> bool {
        self.low.is_empty()
    }
}

/// What a task looks like from outside: spaces, timing and the names of the
/// per-step values it reports in `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// The task's name (`ant-v5`, `cartpole-v0`, or a custom task's).
    pub name: String,
    pub engine: hanzo_twin_engines::EngineKind,
    /// Observations are `float64`, as Gymnasium's MuJoCo environments give them.
    pub observation_space: BoxSpace,
    /// Actions are `float32`.
    pub action_space: BoxSpace,
    /// Simulated seconds per environment step.
    pub dt: f64,
    /// The scene's gravity, m/s² (what gravity perturbation tilts).
    pub gravity: [f64; 3],
    /// Steps after which an episode is truncated.
    pub max_episode_steps: u32,
    /// The mean episode return at which the task counts as solved (as
    /// Gymnasium's `EnvSpec.reward_threshold`), when it has one.
    #[serde(default)]
    pub reward_threshold: Option<f64>,
    /// Names of the values every step reports in `info`, in order.
    pub info_keys: Vec<String>,
    /// Which randomization parameters this task can apply.
    pub randomizable: Vec<String>,
    /// The observation vector's parts, in order (a client's dict
    /// observation): `joint_position`, `joint_velocity`, a camera's image…
    pub observation_parts: Vec<ObservationPart>,
}

/// A run of the observation vector holding one kind of value.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservationPart {
    pub name: String,
    pub size: usize,
    /// An image's array shape (`[height, width]`, or `[height, width, 3]`
    /// for colour, whose values are 0..1); empty for a plain vector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
}

impl ObservationPart {
    /// The whole vector as one part, for tasks that name none.
    pub fn whole(size: usize) -> Vec<ObservationPart> {
        vec![ObservationPart {
            name: "observation".into(),
            size,
            shape: Vec::new(),
        }]
    }
}

impl EnvSpec {
    pub fn observation_size(&self) -> usize {
        self.observation_space.len()
    }

    pub fn action_size(&self) -> usize {
        self.action_space.len()
    }
}

/// What one environment step gives besides the observation (which is
/// written into the caller's buffer, as are the `info` values).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcome {
    pub reward: f64,
    pub terminated: bool,
}

/// A task: builds environments that all follow the same [`EnvSpec`].
pub trait Task: Send + Sync {
    fn spec(&self) -> &EnvSpec;

    /// A new environment, not yet reset.
    fn make_env(&self) -> Result<Box<dyn TaskEnv>, EngineError>;
}

/// One environment of a task: one simulation that only its batch's workers
/// touch, one at a time.
pub trait TaskEnv: Send {
    /// Starts an episode: applies `params` (this episode's randomization),
    /// draws the initial-state noise from `rng`, writes the observation and
    /// the `info` values.
    fn reset(
        &mut self,
        rng: &mut ChaCha8Rng,
        params: &EpisodeParams,
        obs: &mut [f64],
        info: &mut [f64],
    ) -> Result<(), EngineError>;

    /// One environment step under `action` (already clipped to the action
    /// space), writing the next observation and the `info` values.
    fn step(
        &mut self,
        action: &[f32],
        obs: &mut [f64],
        info: &mut [f64],
    ) -> Result<Outcome, EngineError>;

    /// A colour picture of the environment as it is now (Gymnasium's
    /// `render_mode="rgb_array"`), seen from the scene camera `camera`, or
    /// the task's own view when `None`.
    fn render(
        &self,
        camera: Option<&str>,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, EngineError>;
}

/// An 8-bit sRGB picture: `height` rows of `width` pixels from the top
/// left, three bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// A renderer's refusal as the engines report theirs.
pub(crate) fn render_error(e: hanzo_twin_render::RenderError) -> EngineError {
    use hanzo_twin_render::RenderError;
    match e {
        RenderError::Invalid { field, message } => EngineError::Invalid { field, message },
        RenderError::UnknownCamera(path) => EngineError::UnknownPath {
            what: "camera",
            path,
        },
        RenderError::Shape { path, message } => EngineError::Invalid {
            field: "scene".into(),
            message: format!("{path} cannot be drawn: {message}"),
        },
    }
}

/// The tasks every node knows by name; `ant-v5` needs MuJoCo and Gymnasium's
/// `ant.xml` (`ant_xml`), `cartpole-v0` needs nothing.
pub fn builtin_task(
    name: &str,
    engine: Option<hanzo_twin_engines::EngineKind>,
    ant_xml: Option<&std::path::Path>,
) -> Result<Arc<dyn Task>, EngineError> {
    match name {
        "cartpole-v0" => {
            let spec = scene_task::TaskSpec::cartpole();
            let engine = engine.unwrap_or(spec.engine);
            Ok(Arc::new(scene_task::SceneTask::builtin(spec, engine)?))
        }
        "ant-v5" => {
            if let Some(e) = engine
                && e != hanzo_twin_engines::EngineKind::Mujoco
            {
                return Err(EngineError::Invalid {
                    field: "engine".into(),
                    message: format!("ant-v5 runs on mujoco (Gymnasium's model), not {e}"),
                });
            }
            ant_task(ant_xml)
        }
        other => Err(EngineError::Invalid {
            field: "task".into(),
            message: format!(
                "unknown task `{other}`; the built-in tasks are ant-v5 and cartpole-v0, or give a task spec"
            ),
        }),
    }
}

#[cfg(feature = "mujoco")]
fn ant_task(ant_xml: Option<&std::path::Path>) -> Result<Arc<dyn Task>, EngineError> {
    let Some(xml) = ant_xml else {
        return Err(EngineError::Invalid {
            field: "task".into(),
            message: "ant-v5 needs Gymnasium's ant.xml: set gym.ant_xml in the node config (or HANZO_TWIN_ANT_XML)".into(),
        });
    };
    Ok(AntTask::load(xml, AntConfig::default())?)
}

#[cfg(not(feature = "mujoco"))]
fn ant_task(_: Option<&std::path::Path>) -> Result<Arc<dyn Task>, EngineError> {
    Err(EngineError::NotAvailable(
        hanzo_twin_engines::EngineKind::Mujoco,
    ))
}

/// Delays actions by a whole number of physics substeps (the spec's
/// actuator delay): substep `k` of a step runs the action that was current
/// `delay` substeps earlier; before the first action, the first one.
#[derive(Debug, Clone, Default)]
pub struct ActionDelay {
    delay: usize,
    frame_skip: usize,
    /// Recent actions, newest last; enough to reach `delay` substeps back.
    history: std::collections::VecDeque<Vec<f32>>,
}

impl ActionDelay {
    pub fn new(delay_substeps: usize, frame_skip: usize) -> ActionDelay {
        ActionDelay {
            delay: delay_substeps,
            frame_skip: frame_skip.max(1),
            history: Default::default(),
        }
    }

    pub fn delay(&self) -> usize {
        self.delay
    }

    /// Records this step's action.
    pub fn push(&mut self, action: &[f32]) {
        let keep = self.delay.div_ceil(self.frame_skip) + 1;
        if self.history.len() == keep
            && let Some(mut old) = self.history.pop_front()
        {
            old.clear();
            old.extend_from_slice(action);
            self.history.push_back(old);
        } else {
            self.history.push_back(action.to_vec());
        }
    }

    /// The action in force at `substep` (0-based) of the step last pushed.
    pub fn at(&self, substep: usize) -> &[f32] {
        let newest = self.history.len().saturating_sub(1);
        // How many steps back the delayed instant falls.
        let back =
            (self.delay + self.frame_skip - 1 - substep.min(self.frame_skip - 1)) / self.frame_skip;
        let back = if self.delay <= substep { 0 } else { back };
        let i = newest.saturating_sub(back);
        self.history.get(i).map_or(&[], |a| a.as_slice())
    }

    pub fn clear(&mut self) {
        self.history.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::ActionDelay;

    #[test]
    fn action_delay_reaches_back_whole_substeps() {
        // frame skip 5, delay 2: substeps 0 and 1 run the previous action.
        let mut d = ActionDelay::new(2, 5);
        d.push(&[1.0]);
        assert_eq!(d.at(0), &[1.0], "before any earlier action, the first one");
        d.push(&[2.0]);
        assert_eq!(d.at(0), &[1.0]);
        assert_eq!(d.at(1), &[1.0]);
        assert_eq!(d.at(2), &[2.0]);
        assert_eq!(d.at(4), &[2.0]);
        // delay 7 with frame skip 5: two steps back for substeps 0 and 1.
        let mut d = ActionDelay::new(7, 5);
        for a in 1..=3 {
            d.push(&[a as f32]);
        }
        assert_eq!(d.at(0), &[1.0]);
        assert_eq!(d.at(1), &[1.0]);
        assert_eq!(d.at(2), &[2.0]);
        assert_eq!(d.at(4), &[2.0]);
        // No delay: always the newest.
        let mut d = ActionDelay::new(0, 5);
        d.push(&[1.0]);
        d.push(&[2.0]);
        assert_eq!(d.at(0), &[2.0]);
    }
}

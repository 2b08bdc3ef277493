//! The engine abstraction layer of Hanzo Twin.
//!
//! [`Engine`] loads a [`SceneModel`] into a running [`Simulation`]; a simulation steps,
//! takes joint commands, reports observations and can hand its whole state out as a
//! [`SimState`] and take one back. Scenes arrive as USD and are read into the
//! engine-neutral [`scene`] model by [`usd`] (the `hanzo-twin-scene` crate);
//! every engine builds from that model. RL tasks on top of engines are the
//! `hanzo-twin-gym` crate.
//!
//! Engines live in their own modules behind cargo features (`rapier` is the default;
//! `mujoco` adds MuJoCo).

pub mod camera;
pub mod compare;
pub mod error;
pub mod findings;
pub mod infrastructure;
pub mod limits;
pub mod registry;
pub mod types;

// The scene model is its own crate; engines build from it, so its modules are
// part of this crate's interface.
pub use hanzo_twin_scene::{SceneError, geometry, look, recording, scene, tree, urdf, usd};

#[cfg(feature = "rapier")]
pub mod rapier;

#[cfg(feature = "mujoco")]
pub mod mujoco;

#[cfg(feature = "pybullet")]
pub mod pybullet;

#[cfg(feature = "physx")]
pub mod physx;

pub use error::EngineError;
pub use hanzo_twin_infra as infra;
pub use registry::EngineRegistry;
pub use scene::SceneModel;
pub use types::*;

/// A physics engine: turns a scene into simulations.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// What this engine supports.
    fn capabilities(&self) -> EngineCapabilities;

    /// Builds a simulation of `scene` with `config`. The scene is already parsed and
    /// composed; the engine reports what it cannot represent as an error rather than
    /// silently dropping it.
    fn load_scene(
        &self,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Box<dyn Simulation>, EngineError>;

    /// Checks `config` without loading anything: the engine-specific settings
    /// in `extensions` especially, so a twin definition is refused when it is
    /// written, not when it starts.
    fn check_config(&self, config: &EngineConfig) -> Result<(), EngineError> {
        match config.extensions.keys().next() {
            None => Ok(()),
            Some(key) => Err(EngineError::Invalid {
                field: format!("engine.config.extensions.{key}"),
                message: format!("{} reads no engine-specific settings", self.kind()),
            }),
        }
    }

    /// How this engine treats each prim of `scene`: simulated as authored,
    /// approximated (and how), or not at all.
    fn findings(&self, scene: &SceneModel) -> Vec<findings::Finding> {
        findings::native_findings(scene, self.kind())
            .unwrap_or_else(|| findings::scene_findings(scene))
    }
}

/// One loaded, running simulation instance. Owned by exactly one twin actor, so no
/// method needs interior synchronisation.
pub trait Simulation: Send {
    /// The engine this simulation runs on.
    fn kind(&self) -> EngineKind;

    /// Advances the simulation by one step of `1 / step_hz` seconds, made of the
    /// configured number of substeps.
    fn step(&mut self) -> Result<(), EngineError>;

    /// Sends a command to the joint at `joint_path` (a USD prim path). The command
    /// holds until replaced.
    fn set_joint_command(&mut self, joint_path: &str, cmd: JointCommand)
    -> Result<(), EngineError>;

    /// Reads the observation at `path`: a body, a joint, or the whole scene for `/`.
    fn observation(&self, path: &str) -> Result<Observation, EngineError>;

    /// The poses of the bodies `observation("/")` lists, in its order, appended
    /// to `positions` and `orientations` (`[x, y, z, w]`). Twins call it while
    /// recording, so engines should answer it without allocating.
    fn body_poses(
        &self,
        positions: &mut Vec<[f64; 3]>,
        orientations: &mut Vec<[f64; 4]>,
    ) -> Result<(), EngineError> {
        for b in self.observation("/")?.bodies {
            positions.push(b.position);
            orientations.push(b.orientation);
        }
        Ok(())
    }

    /// A physical parameter of the prim at `prim` (what recalibration tunes):
    /// a joint's drive `stiffness` or `damping`, a body's `friction` or
    /// `mass` (kg).
    fn parameter(&self, prim: &str, name: &str) -> Result<f64, EngineError> {
        let _ = (prim, name);
        Err(EngineError::Unsupported {
            engine: self.kind(),
            feature: "reading or tuning physical parameters".into(),
        })
    }

    /// Sets a parameter [`Simulation::parameter`] reads; it holds from the
    /// next step, and travels with the state and forks.
    fn set_parameter(&mut self, prim: &str, name: &str, value: f64) -> Result<(), EngineError> {
        let _ = (prim, name, value);
        Err(EngineError::Unsupported {
            engine: self.kind(),
            feature: "reading or tuning physical parameters".into(),
        })
    }

    /// Puts a joint at `position` (rad or m), and at `velocity` if given, by
    /// moving the bodies it carries as one: what a hard reset does with a
    /// measured joint. The joint's parent side stays where it is.
    fn set_joint_state(
        &mut self,
        joint: &str,
        position: f64,
        velocity: Option<f64>,
    ) -> Result<(), EngineError> {
        let _ = (joint, position, velocity);
        Err(EngineError::Unsupported {
            engine: self.kind(),
            feature: "overwriting joint states".into(),
        })
    }

    /// Puts a moving body at `position` (and `orientation`, `[x, y, z, w]`,
    /// if given), keeping its velocity: a hard reset with a measured pose.
    fn set_body_pose(
        &mut self,
        body: &str,
        position: [f64; 3],
        orientation: Option<[f64; 4]>,
    ) -> Result<(), EngineError> {
        let _ = (body, position, orientation);
        Err(EngineError::Unsupported {
            engine: self.kind(),
            feature: "overwriting body poses".into(),
        })
    }

    /// The complete simulation state, enough to continue exactly from here.
    fn state(&self) -> Result<SimState, EngineError>;

    /// Restores a state taken from a simulation of the same scene and engine.
    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError>;

    /// Renders a camera view. `params` places the camera when the scene has none at
    /// `camera_path`.
    fn render(&self, camera_path: &str, params: &RenderParams) -> Result<Image, EngineError>;

    /// An independent copy of this simulation at its current state.
    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError>;

    /// An infrastructure twin's simulator, for what only it does (chaos,
    /// service reports); none for physics.
    fn infrastructure(&self) -> Option<&hanzo_twin_infra::InfraSim> {
        None
    }

    fn infrastructure_mut(&mut self) -> Option<&mut hanzo_twin_infra::InfraSim> {
        None
    }

    /// Simulated seconds since the scene was loaded.
    fn time(&self) -> f64;

    /// Steps taken since the scene was loaded.
    fn step_count(&self) -> u64;

    /// Releases the engine's resources. Dropping does the same; `close` exists so an
    /// engine with an external process can report a failure to shut it down.
    fn close(self: Box<Self>) -> Result<(), EngineError>;
}

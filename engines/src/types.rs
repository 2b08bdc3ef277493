//! The values that cross the engine interface.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The engines the twin schema knows. Not every one is built into every node:
/// ask the [`crate::EngineRegistry`] which are available.
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// rapier3d, pure Rust: the default engine, always built in.
    Rapier3d,
    Mujoco,
    Physx,
    Pybullet,
    Gazebo,
    Omniverse,
    /// Not physics: a service topology as a discrete-event simulation
    /// (an infrastructure twin, `type: infrastructure`).
    Infrastructure,
}

impl EngineKind {
    /// The physics engines: what runs USD scenes.
    pub const PHYSICS: [EngineKind; 6] = [
        EngineKind::Rapier3d,
        EngineKind::Mujoco,
        EngineKind::Physx,
        EngineKind::Pybullet,
        EngineKind::Gazebo,
        EngineKind::Omniverse,
    ];

    /// The physics engines, then the infrastructure simulator.
    pub const ALL: [EngineKind; 7] = {
        let mut all = [EngineKind::Infrastructure; 7];
        let mut i = 0;
        while i < EngineKind::PHYSICS.len() {
            all[i] = EngineKind::PHYSICS[i];
            i += 1;
        }
        all
    };

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Rapier3d => "rapier3d",
            EngineKind::Mujoco => "mujoco",
            EngineKind::Physx => "physx",
            EngineKind::Pybullet => "pybullet",
            EngineKind::Gazebo => "gazebo",
            EngineKind::Omniverse => "omniverse",
            EngineKind::Infrastructure => "infrastructure",
        }
    }

    /// Whether a running simulation copies itself in memory in microseconds
    /// (rapier3d, MuJoCo, the infrastructure simulator), so a fork can start from the live copy. The
    /// others (a PyBullet worker process, PhysX rebuilding its scene) would
    /// hold the parent that long, so their forks start from a state.
    pub fn forks_in_memory(self) -> bool {
        matches!(
            self,
            EngineKind::Rapier3d | EngineKind::Mujoco | EngineKind::Infrastructure
        )
    }

    /// The engine that reads a scene kept in its native format (MJCF: MuJoCo).
    pub fn reading(format: crate::scene::NativeFormat) -> EngineKind {
        match format {
            crate::scene::NativeFormat::Mjcf => EngineKind::Mujoco,
            crate::scene::NativeFormat::Infrastructure => EngineKind::Infrastructure,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = EngineKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown engine `{s}`, expected one of {}", known.join(", "))
            })
    }
}

/// Engine settings from a twin definition's `engine.config`. Already validated:
/// `step_hz > 0`, `substeps >= 1`, gravity finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Physics steps per simulated second.
    pub step_hz: f64,
    /// Substeps per step, for stability.
    pub substeps: u32,
    /// Gravity in m/s². `None` takes the scene's PhysicsScene gravity (or -9.81 along
    /// the scene's up axis when the scene has none).
    pub gravity: Option<[f64; 3]>,
    /// Constraint solver iterations; `None` keeps the engine's default.
    pub solver_iterations: Option<u32>,
    /// Engine-specific settings, passed through untouched.
    #[serde(default)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            step_hz: 240.0,
            substeps: 1,
            gravity: None,
            solver_iterations: None,
            extensions: serde_json::Map::new(),
        }
    }
}

impl EngineConfig {
    /// Seconds one step advances the simulation.
    pub fn dt(&self) -> f64 {
        1.0 / self.step_hz
    }
}

/// What an engine supports (the spec's EngineCapabilities, plus what a state
/// restore preserves).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineCapabilities {
    pub ray_tracing: bool,
    pub soft_body: bool,
    pub fluid: bool,
    pub max_step_hz: u32,
    pub gpu_required: bool,
    pub ros_bridge: bool,
    pub parallel_envs: u32,
    /// A restored or forked state continues bit for bit as the original would have
    /// on the same machine and build.
    pub bitwise_restore: bool,
    /// What `render` produces, empty when the engine cannot render.
    pub render_outputs: Vec<String>,
}

/// A command to one joint. It stays in force until the next command to that joint.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "value", rename_all = "snake_case")]
pub enum JointCommand {
    /// Drive towards this position (radians for revolute, metres for prismatic).
    Position(f64),
    /// Drive towards this velocity (rad/s or m/s).
    Velocity(f64),
    /// Apply this effort directly (N·m or N), bypassing the drive.
    Effort(f64),
}

impl JointCommand {
    pub fn value(self) -> f64 {
        match self {
            JointCommand::Position(v) | JointCommand::Velocity(v) | JointCommand::Effort(v) => v,
        }
    }

    /// The value, or an error naming the command to `joint_path` when it is
    /// not finite.
    pub fn finite_value(self, joint_path: &str) -> Result<f64, crate::EngineError> {
        let value = self.value();
        if value.is_finite() {
            Ok(value)
        } else {
            Err(crate::EngineError::Invalid {
                field: format!("command to {joint_path}"),
                message: format!("{value} is not a finite number"),
            })
        }
    }
}

/// Pose and velocity of one rigid body, in world coordinates.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyObservation {
    pub path: String,
    pub position: [f64; 3],
    /// Unit quaternion as `[x, y, z, w]`.
    pub orientation: [f64; 4],
    pub linear_velocity: [f64; 3],
    pub angular_velocity: [f64; 3],
}

/// Position and velocity of one joint along its axis.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointObservation {
    pub path: String,
    /// Radians for revolute joints, metres for prismatic ones; for a spherical
    /// joint, the angle (radians) its `rotation` turns by.
    pub position: f64,
    /// For a spherical joint, the size of its `angular_velocity`.
    pub velocity: f64,
    /// A spherical joint's rotation, `[x, y, z, w]`: the child's joint frame in
    /// the parent's, with the cone's axis as X. `null` for other joints.
    #[serde(default)]
    pub rotation: Option<[f64; 4]>,
    /// A spherical joint's angular velocity (rad/s), of the child relative to
    /// the parent, in the parent's joint frame. `null` for other joints.
    #[serde(default)]
    pub angular_velocity: Option<[f64; 3]>,
}

impl JointObservation {
    /// A joint that moves along or about one axis.
    pub fn single_axis(path: &str, position: f64, velocity: f64) -> JointObservation {
        JointObservation {
            path: path.to_string(),
            position,
            velocity,
            rotation: None,
            angular_velocity: None,
        }
    }

    /// A spherical joint, from [`crate::tree::spherical_state`].
    pub fn spherical(
        path: &str,
        (rotation, angular_velocity): ([f64; 4], [f64; 3]),
    ) -> JointObservation {
        JointObservation {
            path: path.to_string(),
            position: crate::tree::rotation_angle(rotation),
            velocity: crate::geometry::norm(angular_velocity),
            rotation: Some(rotation),
            angular_velocity: Some(angular_velocity),
        }
    }
}

/// What a simulation reports at one instant.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub time: f64,
    pub step: u64,
    pub bodies: Vec<BodyObservation>,
    pub joints: Vec<JointObservation>,
}

impl Observation {
    /// Every body of `scene` at its observed pose, in the scene's order
    /// (what a renderer draws); bodies the engine does not report (static
    /// ones) stay where the scene put them.
    pub fn scene_poses(&self, scene: &crate::SceneModel) -> Vec<crate::scene::Pose> {
        let reported: std::collections::HashMap<&str, &BodyObservation> =
            self.bodies.iter().map(|b| (b.path.as_str(), b)).collect();
        scene
            .bodies
            .iter()
            .map(|b| match reported.get(b.path.as_str()) {
                Some(o) => crate::scene::Pose {
                    translation: o.position,
                    rotation: o.orientation,
                },
                None => b.pose,
            })
            .collect()
    }
}

/// A complete, engine-specific simulation state: a checkpoint, or the message a fork
/// is spawned from. `data` is opaque outside the engine that made it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    pub engine: EngineKind,
    /// The engine's own format version of `data`.
    pub format: u32,
    /// A fingerprint of the scene the state belongs to; restoring into a simulation
    /// of another scene is refused.
    pub scene_fingerprint: u64,
    pub time: f64,
    pub step: u64,
    pub data: Vec<u8>,
}

impl fmt::Debug for SimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimState")
            .field("engine", &self.engine)
            .field("format", &self.format)
            .field("scene_fingerprint", &self.scene_fingerprint)
            .field("time", &self.time)
            .field("step", &self.step)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Whose a state is: the engine, its data format, and the scene. Engines stamp
/// their states with it ([`SimState::seal`]) and check states against it before
/// reading them ([`SimState::open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateOwner {
    pub engine: EngineKind,
    pub format: u32,
    pub scene_fingerprint: u64,
}

impl SimState {
    /// A state of `owner` whose data is `encoded` behind an FNV-1a checksum, so
    /// that corruption is refused instead of restored.
    pub fn seal(owner: StateOwner, time: f64, step: u64, encoded: &[u8]) -> SimState {
        let mut data = Vec::with_capacity(encoded.len() + 8);
        data.extend_from_slice(&hanzo_twin_scene::fnv1a(encoded).to_le_bytes());
        data.extend_from_slice(encoded);
        SimState {
            engine: owner.engine,
            format: owner.format,
            scene_fingerprint: owner.scene_fingerprint,
            time,
            step,
            data,
        }
    }

    /// The encoded data of a state sealed by `owner`; a state of another
    /// engine, format or scene, or a corrupt one, is a `StateMismatch`.
    pub fn open(&self, owner: &StateOwner) -> Result<&[u8], crate::EngineError> {
        let mismatch = |m: String| Err(crate::EngineError::StateMismatch(m));
        if self.engine != owner.engine {
            return mismatch(format!(
                "state of engine {}, not {}",
                self.engine, owner.engine
            ));
        }
        if self.format != owner.format {
            return mismatch(format!(
                "state format {}, this build reads {}",
                self.format, owner.format
            ));
        }
        if self.scene_fingerprint != owner.scene_fingerprint {
            return mismatch("state of another scene".to_string());
        }
        let Some((sum, encoded)) = self.data.split_first_chunk::<8>() else {
            return mismatch("state data truncated".to_string());
        };
        if u64::from_le_bytes(*sum) != hanzo_twin_scene::fnv1a(encoded) {
            return mismatch("state data corrupted (checksum)".to_string());
        }
        Ok(encoded)
    }

    /// Encodes the state as a self-describing checkpoint file (bincode, standard config).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("SimState encodes")
    }

    /// Decodes a checkpoint made by [`SimState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SimState, crate::EngineError> {
        let (state, used): (SimState, usize) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard())
                .map_err(|e| crate::EngineError::StateMismatch(format!("not a checkpoint: {e}")))?;
        if used != bytes.len() {
            return Err(crate::EngineError::StateMismatch(format!(
                "checkpoint has {} trailing bytes",
                bytes.len() - used
            )));
        }
        Ok(state)
    }
}

/// Where and how to render when the scene has no camera at the requested path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderParams {
    pub width: u32,
    pub height: u32,
    /// Vertical field of view in degrees.
    pub fov_deg: f64,
    pub eye: [f64; 3],
    pub look_at: [f64; 3],
    pub up: [f64; 3],
    /// Rays that hit nothing beyond this distance read as `max_depth`.
    pub max_depth: f64,
}

impl Default for RenderParams {
    fn default() -> Self {
        RenderParams {
            width: 160,
            height: 120,
            fov_deg: 60.0,
            eye: [3.0, -3.0, 2.0],
            look_at: [0.0, 0.0, 0.5],
            up: [0.0, 0.0, 1.0],
            max_depth: 100.0,
        }
    }
}

/// A rendered frame: depth in metres and, per pixel, the index into
/// `instance_paths` of the body hit (`u32::MAX` for none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub depth: Vec<f32>,
    pub instance_id: Vec<u32>,
    pub instance_paths: Vec<String>,
}

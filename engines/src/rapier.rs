//! The default physics engine: [rapier3d](https://rapier.rs) 0.36, pure Rust, f32.
//!
//! # World
//!
//! [`RapierEngine::load_scene`] builds one [`PhysicsWorld`] from a [`SceneModel`]:
//!
//! * every scene body becomes a rigid body (dynamic, fixed, or position-based kinematic) at
//!   its pose, in scene order, with its index in the scene as `user_data`;
//! * colliders carry friction (the scene's dynamic friction), restitution and, as `user_data`,
//!   the index of their body (the renderer's instance id). Rapier's capsules and cylinders
//!   run along Y, so the local pose is rotated for X and Z; a plane is a half-space;
//! * mass properties are computed here, not by rapier: every collider has density 0 and the
//!   body gets the result as its additional mass properties, so the precedence is ours.
//!   Per collider: its own mass, else its density, else the body's density, else 1000 kg/m³.
//!   The body's mass, when given, rescales that sum (inertia scales with it); an explicit
//!   centre of mass or diagonal inertia (with principal axes) replaces the computed one;
//! * joints are impulse joints (revolute, prismatic, fixed) with the scene's joint frames
//!   turned so that rapier's free axis (the frame's X) is the scene axis. A joint to the world
//!   is attached to one fixed, collider-less ground body created for that purpose. Contacts
//!   between the two bodies of a joint are disabled.
//!
//! # Drives and commands
//!
//! A scene drive becomes a force-based motor (USD's `force` drive: stiffness in N·m/rad or
//! N/m, damping in N·m·s/rad or N·s/m, the max force as the motor's max force).
//!
//! * [`JointCommand::Position`] sets the motor's position target, zero velocity target, with
//!   the drive's stiffness and damping.
//! * [`JointCommand::Velocity`] sets the velocity target and drops the position term
//!   (stiffness 0) so that the joint keeps moving instead of being pulled back; the drive's
//!   damping is the velocity gain.
//! * When the joint has no drive, or the gain the command needs is zero, a mass-independent
//!   default drive is used: acceleration-based, stiffness 400 s⁻², damping 40 s⁻¹ (a critically
//!   damped 20 rad/s response). A scene max force still applies.
//! * [`JointCommand::Effort`] switches the motor off and, before every substep, applies the
//!   effort as a torque about (revolute) or force along (prismatic) the joint axis of the
//!   first body's joint frame, on the second body, and the opposite on the first one (a force
//!   pair acts at the second frame's origin, so it adds no net torque). The forces are cleared
//!   after each substep, so a state never carries them.
//!
//! Fixed joints take no commands. Non-finite values, or values beyond f32, are refused. A
//! revolute position target is reached by the shortest way round (rapier's motor compares
//! angles modulo a turn), and joint positions are reported in (-π, π].
//! Kinematic bodies hold their pose: nothing commands them yet.
//!
//! # State
//!
//! [`SimState::data`] is a checksum (FNV-1a, 8 bytes little-endian) followed by the bincode
//! encoding (standard config, serde) of the whole [`PhysicsWorld`] — gravity, integration
//! parameters, island manager, broad phase (BVH), narrow phase (contact graph with manifolds,
//! warm-start impulses and recycling state), bodies, colliders, impulse and multibody joints,
//! soft bodies — plus our substep count and substep length, time, step count, the command
//! table and the divergence flag. Rapier 0.36 defines exactly what a snapshot needs: its
//! serde skips only workspace (the physics and collision pipelines, the CCD solver's target
//! cache, solver scratch buffers), which a restored world rebuilds on its first step with
//! identical results; the tests in `tests/rapier_engine.rs` check this bit for bit. A
//! restored simulation adopts the stepping parameters in the state.
//!
//! The checksum catches corruption, not forgery: a well-formed state with inconsistent
//! contents can make rapier panic, so decoding and stepping catch panics and report them
//! (`StateMismatch`, or `Diverged` after which the simulation refuses to step).
//!
//! # Rendering
//!
//! [`Simulation::render`] casts one ray per pixel through rapier's query pipeline (the broad
//! phase's BVH, which the pipeline brings up to date at the end of every step, and which a
//! zero-length step at load fills).

use crate::geometry::{
    add, cross, dot, quat_conj, quat_from_axis_angle, quat_mul, quat_rotate, scaled, sub,
};
use crate::scene::{
    Axis, BodyKind, Camera, Drive, JointKind, Pose as ScenePose, SceneModel, Shape,
};
use crate::{
    BodyObservation, Engine, EngineCapabilities, EngineConfig, EngineError, EngineKind, Image,
    JointCommand, JointObservation, Observation, RenderParams, SimState, Simulation,
};
use rapier3d::math::{Pose, Real, Rotation, Vector};
use rapier3d::parry::mass_properties::MassProperties;
use rapier3d::prelude::{
    CCDSolver, ColliderBuilder, ColliderHandle, CollisionPipeline, GenericJointBuilder, Group,
    ImpulseJointHandle, InteractionGroups, InteractionTestMode, JointAxesMask, JointAxis,
    MotorModel, PhysicsPipeline, PhysicsWorld, Ray, RigidBody, RigidBodyBuilder, RigidBodyHandle,
    SharedShape,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Version of the layout of [`SimState::data`] this engine writes and reads.
pub const STATE_FORMAT: u32 = 1;

/// Density of a collider when the scene gives neither mass nor density (water, kg/m³).
pub const DEFAULT_DENSITY: f64 = 1000.0;

/// The highest step rate accepted (and reported in the capabilities).
pub const MAX_STEP_HZ: u32 = 10_000;

/// Upper bound for substeps and solver iterations: beyond this a config is a mistake.
const MAX_ITERATIONS: u32 = 1_000;

/// Largest decoded state accepted, so that a corrupt length prefix cannot ask for more.
const MAX_STATE_BYTES: usize = 1 << 30;

/// Gains of the default drive (acceleration-based: 1/s² and 1/s).
const DEFAULT_DRIVE_STIFFNESS: f32 = 400.0;
const DEFAULT_DRIVE_DAMPING: f32 = 40.0;

/// The rapier3d engine.
pub struct RapierEngine;

impl Engine for RapierEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Rapier3d
    }

    fn capabilities(&self) -> EngineCapabilities {
        EngineCapabilities {
            ray_tracing: false,
            soft_body: false,
            fluid: false,
            max_step_hz: MAX_STEP_HZ,
            gpu_required: false,
            ros_bridge: false,
            parallel_envs: 1,
            // Proven by tests/rapier_engine.rs (fork and state round trip, contacts and
            // driven joints active, compared with f64::to_bits).
            bitwise_restore: true,
            render_outputs: vec!["depth".to_string(), "instance_id".to_string()],
        }
    }

    fn findings(&self, scene: &SceneModel) -> Vec<crate::findings::Finding> {
        if let Some(native) = crate::findings::native_findings(scene, EngineKind::Rapier3d) {
            return native;
        }
        let mut out = crate::findings::scene_findings(scene);
        for f in &mut out {
            let note = if f.feature == "camera" {
                Some("renders depth and instance-id images by ray casting; no color")
            } else if f.feature.starts_with("joint: spherical") && f.feature.contains("cone") {
                Some(
                    "the cone is two swing limits (toward each axis), so the swing may reach both at once, past an elliptical cone",
                )
            } else {
                scene
                    .bodies
                    .iter()
                    .flat_map(|b| b.colliders.iter().map(move |c| (b, c)))
                    .find(|(_, c)| c.path == f.prim && f.feature.starts_with("collider"))
                    .and_then(|(body, c)| {
                        let shape = match &c.shape {
                            Shape::TriMesh { .. } if body.kind == BodyKind::Dynamic => Some(
                                "moving triangle meshes do not collide with each other in rapier3d; the convex hull is used",
                            ),
                            Shape::ConvexDecomposition { .. } => Some(
                                "decomposed into convex parts by V-HACD, which approximates concave detail",
                            ),
                            _ => None,
                        };
                        let m = &c.material;
                        shape.or(((m.static_friction - m.dynamic_friction).abs() > 1e-12).then_some(
                            "rapier3d has one friction coefficient; the dynamic friction is used for static contact too",
                        ))
                    })
            };
            if let Some(note) = note {
                f.approximate(note);
            }
        }
        out
    }

    fn load_scene(
        &self,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Box<dyn Simulation>, EngineError> {
        crate::findings::refuse_foreign_native(scene, EngineKind::Rapier3d)?;
        self.check_config(config)?;
        Ok(Box::new(RapierSimulation::load(scene, config)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Layout: what a load derives from the scene and never changes afterwards. Shared by forks.
// ---------------------------------------------------------------------------------------------

struct BodyEntry {
    path: String,
    kind: BodyKind,
    handle: RigidBodyHandle,
}

struct JointEntry {
    path: String,
    kind: JointKind,
    handle: ImpulseJointHandle,
    /// Rapier's first and second body: the scene's body0 (or the ground) and body1.
    body1: RigidBodyHandle,
    body2: RigidBodyHandle,
    drive: Option<Drive>,
}

impl JointEntry {
    /// The motorised degree of freedom, `None` for a fixed joint.
    fn free_axis(&self) -> Option<JointAxis> {
        match self.kind {
            JointKind::Revolute => Some(JointAxis::AngX),
            JointKind::Prismatic => Some(JointAxis::LinX),
            JointKind::Fixed | JointKind::Spherical => None,
        }
    }
}

struct Layout {
    fingerprint: u64,
    bodies: Vec<BodyEntry>,
    body_index: HashMap<String, usize>,
    joints: Vec<JointEntry>,
    joint_index: HashMap<String, usize>,
    cameras: Vec<Camera>,
    ground: Option<RigidBodyHandle>,
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

/// One rapier world loaded from a scene.
pub struct RapierSimulation {
    layout: Arc<Layout>,
    world: PhysicsWorld,
    /// Pipeline calls per step.
    substeps: u32,
    /// Seconds per step (the substep length is in `world.integration_parameters`).
    step_dt: f64,
    time: f64,
    step: u64,
    /// The command in force per joint (scene order), `None` until the first one.
    commands: Vec<Option<JointCommand>>,
    /// Set when a step found non-finite state; the simulation then refuses to step.
    diverged: Option<String>,
    /// Drive gains tuned on this simulation (recalibration), per joint:
    /// (stiffness, damping); `None` keeps the scene's. Friction and mass
    /// live in the world itself.
    tuned: Vec<Option<(f64, f64)>>,
}

/// What [`SimState::data`] holds after the checksum (encoding side, borrowing).
#[derive(Serialize)]
struct PayloadRef<'a> {
    world: &'a PhysicsWorld,
    substeps: u32,
    step_dt: f64,
    time: f64,
    step: u64,
    commands: Vec<Option<StoredCommand>>,
    diverged: &'a Option<String>,
    tuned: &'a [Option<(f64, f64)>],
}

/// What [`SimState::data`] holds after the checksum (decoding side, owning).
#[derive(Deserialize)]
struct Payload {
    world: PhysicsWorld,
    substeps: u32,
    step_dt: f64,
    time: f64,
    step: u64,
    commands: Vec<Option<StoredCommand>>,
    diverged: Option<String>,
    tuned: Vec<Option<(f64, f64)>>,
}

/// A state written before drive gains could be tuned (no `tuned`): still
/// read, as checkpoints outlive upgrades.
#[derive(Deserialize)]
struct PayloadUntuned {
    world: PhysicsWorld,
    substeps: u32,
    step_dt: f64,
    time: f64,
    step: u64,
    commands: Vec<Option<StoredCommand>>,
    diverged: Option<String>,
}

impl From<PayloadUntuned> for Payload {
    fn from(p: PayloadUntuned) -> Self {
        Payload {
            world: p.world,
            substeps: p.substeps,
            step_dt: p.step_dt,
            time: p.time,
            step: p.step,
            commands: p.commands,
            diverged: p.diverged,
            tuned: Vec::new(),
        }
    }
}

/// [`JointCommand`] as stored in a state: `JointCommand`'s serde form is adjacently tagged,
/// which bincode cannot decode (it needs identifiers), so the state uses a plain enum.
#[derive(Serialize, Deserialize)]
enum StoredCommand {
    Position(f64),
    Velocity(f64),
    Effort(f64),
}

impl From<JointCommand> for StoredCommand {
    fn from(c: JointCommand) -> Self {
        match c {
            JointCommand::Position(v) => StoredCommand::Position(v),
            JointCommand::Velocity(v) => StoredCommand::Velocity(v),
            JointCommand::Effort(v) => StoredCommand::Effort(v),
        }
    }
}

impl From<StoredCommand> for JointCommand {
    fn from(c: StoredCommand) -> Self {
        match c {
            StoredCommand::Position(v) => JointCommand::Position(v),
            StoredCommand::Velocity(v) => JointCommand::Velocity(v),
            StoredCommand::Effort(v) => JointCommand::Effort(v),
        }
    }
}

fn no_drive(prim: &str, name: &str) -> EngineError {
    EngineError::Invalid {
        field: format!("{prim}.{name}"),
        message: "a fixed joint has no drive".into(),
    }
}

fn unknown_parameter(prim: &str, name: &str) -> EngineError {
    EngineError::Invalid {
        field: format!("{prim}.{name}"),
        message: format!(
            "rapier3d tunes a joint's `stiffness` and `damping` and a body's `friction` and `mass`, not `{name}`"
        ),
    }
}

impl RapierSimulation {
    /// Builds the world for `scene` (see the module docs).
    pub fn load(scene: &SceneModel, config: &EngineConfig) -> Result<Self, EngineError> {
        let (substeps, step_dt, substep_dt, iterations) = validate_config(config)?;
        let gravity = config.gravity.unwrap_or_else(|| scene.default_gravity());
        let gravity = vec3("gravity", gravity)?;

        let mut world = PhysicsWorld::new();
        world.gravity = gravity;
        world.integration_parameters.dt = substep_dt;
        if let Some(iterations) = iterations {
            world.integration_parameters.num_solver_iterations = iterations;
        }
        // Rapier's default contact prediction (2 cm, for 60 Hz games) makes
        // contacts, with friction, a step or more before a fast body touches:
        // a box dropped flat onto the conveyor's belt landed with a 6 cm
        // sideways kick that no other engine gives. At its allowed linear
        // error (5 mm) it lands where it fell, as on the others; CCD still
        // keeps fast bodies from passing through.
        world.integration_parameters.normalized_prediction_distance = 0.005;

        let groups = GroupBits::new(scene)?;
        let mut bodies = Vec::with_capacity(scene.bodies.len());
        let mut body_index = HashMap::with_capacity(scene.bodies.len());
        for (index, body) in scene.bodies.iter().enumerate() {
            if body_index.insert(body.path.clone(), index).is_some() {
                return Err(prim_error(&body.path, "duplicate body path"));
            }
            let handle = add_body(&mut world, index, body, &groups)?;
            bodies.push(BodyEntry {
                path: body.path.clone(),
                kind: body.kind,
                handle,
            });
        }

        let mut ground = None;
        let mut joints = Vec::with_capacity(scene.joints.len());
        let mut joint_index = HashMap::with_capacity(scene.joints.len());
        for (index, joint) in scene.joints.iter().enumerate() {
            if joint_index.insert(joint.path.clone(), index).is_some()
                || body_index.contains_key(&joint.path)
            {
                return Err(prim_error(&joint.path, "duplicate prim path"));
            }
            let mut side = |path: &Option<String>| -> Result<RigidBodyHandle, EngineError> {
                match path {
                    Some(path) => body_index
                        .get(path)
                        .map(|i| bodies[*i].handle)
                        .ok_or_else(|| prim_error(&joint.path, &format!("no body at {path}"))),
                    None => Ok(*ground.get_or_insert_with(|| {
                        // The world side of joints: a fixed body at the origin, no colliders.
                        world
                            .bodies
                            .insert(RigidBodyBuilder::fixed().user_data(u128::MAX))
                    })),
                }
            };
            if joint.body0.is_none() && joint.body1.is_none() {
                return Err(prim_error(
                    &joint.path,
                    "joint attaches the world to itself",
                ));
            }
            if joint.body0.is_some() && joint.body0 == joint.body1 {
                return Err(prim_error(&joint.path, "joint attaches a body to itself"));
            }
            let body1 = side(&joint.body0)?;
            let body2 = side(&joint.body1)?;
            let data = build_joint(joint)?;
            let handle = world.impulse_joints.insert(body1, body2, data, true);
            joints.push(JointEntry {
                path: joint.path.clone(),
                kind: joint.kind,
                handle,
                body1,
                body2,
                drive: joint.drive,
            });
        }

        let layout = Layout {
            fingerprint: scene.fingerprint(),
            bodies,
            body_index,
            joints,
            joint_index,
            cameras: scene.cameras.clone(),
            ground,
        };
        let commands = vec![None; layout.joints.len()];

        // A zero-length step applies the insertions: the broad phase (and with it the query
        // pipeline the renderer uses) and the contacts are ready before the first real step.
        world.integration_parameters.dt = 0.0;
        world.step();
        world.integration_parameters.dt = substep_dt;

        Ok(RapierSimulation {
            layout: Arc::new(layout),
            world,
            substeps,
            step_dt,
            time: 0.0,
            step: 0,
            tuned: vec![None; commands.len()],
            commands,
            diverged: None,
        })
    }

    /// Collider pairs with at least one active contact, for diagnostics (tests use it to
    /// show that contacts are live when they compare runs).
    pub fn active_contact_pairs(&self) -> usize {
        self.world
            .narrow_phase
            .contact_pairs()
            .filter(|pair| pair.has_any_active_contact())
            .count()
    }

    /// Scene bodies rapier has put to sleep, for diagnostics (tests use it to show that a
    /// restore across falling asleep stays exact).
    pub fn sleeping_bodies(&self) -> usize {
        self.layout
            .bodies
            .iter()
            .filter_map(|b| self.world.bodies.get(b.handle))
            .filter(|rb| rb.is_dynamic() && rb.is_sleeping())
            .count()
    }

    fn body_observation(&self, entry: &BodyEntry) -> Result<BodyObservation, EngineError> {
        let rb = self.rigid_body(entry.handle)?;
        let t = rb.translation();
        let r = rb.rotation();
        let v = rb.linvel();
        let w = rb.angvel();
        Ok(BodyObservation {
            path: entry.path.clone(),
            position: [t.x.into(), t.y.into(), t.z.into()],
            orientation: [r.x.into(), r.y.into(), r.z.into(), r.w.into()],
            linear_velocity: [v.x.into(), v.y.into(), v.z.into()],
            angular_velocity: [w.x.into(), w.y.into(), w.z.into()],
        })
    }

    fn joint_observation(&self, entry: &JointEntry) -> Result<JointObservation, EngineError> {
        let joint = self
            .world
            .impulse_joints
            .get(entry.handle)
            .ok_or_else(|| internal(&entry.path, "joint missing from the world"))?;
        let rb1 = self.rigid_body(entry.body1)?;
        let rb2 = self.rigid_body(entry.body2)?;
        // Joint frames in world coordinates, in f64.
        let (t1, q1) = world_frame(rb1.position(), &joint.data.local_frame1);
        let (t2, q2) = world_frame(rb2.position(), &joint.data.local_frame2);
        let axis = quat_rotate(q1, [1.0, 0.0, 0.0]);
        let w1 = vec_f64(rb1.angvel());
        let w2 = vec_f64(rb2.angvel());
        let (position, velocity) = match entry.kind {
            JointKind::Revolute => {
                // Twist of frame 2 relative to frame 1 about X, as rapier's motor measures it.
                let mut q = quat_mul(quat_conj(q1), q2);
                if q[3] < 0.0 {
                    q = [-q[0], -q[1], -q[2], -q[3]];
                }
                let angle = 2.0 * q[0].atan2(q[3]);
                (angle, dot(sub(w2, w1), axis))
            }
            JointKind::Prismatic => {
                let d = sub(t2, t1);
                let v2 = vec_f64(rb2.velocity_at_point(to_vec(t2)));
                let v1 = vec_f64(rb1.velocity_at_point(to_vec(t1)));
                (
                    dot(d, axis),
                    dot(sub(v2, v1), axis) + dot(d, cross(w1, axis)),
                )
            }
            JointKind::Fixed => (0.0, 0.0),
            JointKind::Spherical => {
                // The rapier frames are the scene's spherical frames.
                let q = |r: &Rotation| [r.x, r.y, r.z, r.w].map(f64::from);
                let state = crate::tree::spherical_state(
                    Some((q(&rb1.position().rotation), w1)),
                    (q(&rb2.position().rotation), w2),
                    &ScenePose {
                        translation: [0.0; 3],
                        rotation: q(&joint.data.local_frame1.rotation),
                    },
                    &ScenePose {
                        translation: [0.0; 3],
                        rotation: q(&joint.data.local_frame2.rotation),
                    },
                );
                return Ok(JointObservation::spherical(&entry.path, state));
            }
        };
        Ok(JointObservation::single_axis(
            &entry.path,
            position,
            velocity,
        ))
    }

    fn rigid_body(&self, handle: RigidBodyHandle) -> Result<&RigidBody, EngineError> {
        self.world
            .bodies
            .get(handle)
            .ok_or_else(|| internal("/", "body missing from the world"))
    }

    /// Applies the effort commands for the coming substep; returns the bodies it pushed.
    fn apply_efforts(&mut self) -> Vec<RigidBodyHandle> {
        let mut pushed = Vec::new();
        for (entry, command) in self.layout.joints.iter().zip(&self.commands) {
            let Some(JointCommand::Effort(effort)) = command else {
                continue;
            };
            let Some(joint) = self.world.impulse_joints.get(entry.handle) else {
                continue;
            };
            let (Some(rb1), Some(rb2)) = (
                self.world.bodies.get(entry.body1),
                self.world.bodies.get(entry.body2),
            ) else {
                continue;
            };
            let frame1 = rb1.position() * joint.data.local_frame1;
            let frame2 = rb2.position() * joint.data.local_frame2;
            let axis = frame1.rotation * Vector::X;
            let effort = *effort as Real;
            let wake = effort != 0.0;
            let vector = axis * effort;
            let point = frame2.translation;
            for (handle, sign) in [(entry.body2, 1.0), (entry.body1, -1.0)] {
                let Some(rb) = self.world.bodies.get_mut(handle) else {
                    continue;
                };
                if !rb.is_dynamic() {
                    continue;
                }
                match entry.kind {
                    JointKind::Revolute => rb.add_torque(vector * sign, wake),
                    JointKind::Prismatic => rb.add_force_at_point(vector * sign, point, wake),
                    JointKind::Fixed | JointKind::Spherical => continue,
                }
                pushed.push(handle);
            }
        }
        pushed
    }

    /// Returns an error naming the first body whose state is not finite.
    fn check_finite(&self) -> Result<(), EngineError> {
        let quarantine = self.world.quarantine();
        if !quarantine.is_empty() {
            let named: Vec<&str> = quarantine
                .bodies()
                .iter()
                .filter_map(|h| self.world.bodies.get(*h))
                .filter_map(|rb| self.layout.bodies.get(rb.user_data as usize))
                .map(|b| b.path.as_str())
                .collect();
            return Err(EngineError::Diverged(format!(
                "non-finite state in {}",
                if named.is_empty() {
                    "colliders".to_string()
                } else {
                    named.join(", ")
                }
            )));
        }
        for entry in &self.layout.bodies {
            let rb = self.rigid_body(entry.handle)?;
            let finite = rb.translation().is_finite()
                && rb.rotation().is_finite()
                && rb.linvel().is_finite()
                && rb.angvel().is_finite();
            if !finite {
                return Err(EngineError::Diverged(format!(
                    "non-finite state in {}",
                    entry.path
                )));
            }
        }
        Ok(())
    }

    /// The motor model and gains (stiffness, damping) a command to joint
    /// `index` drives with: force-based from the scene's drive when it has
    /// the gain the command needs, else the acceleration-based default;
    /// then whatever was tuned.
    fn gains(&self, index: usize, cmd: &JointCommand) -> (MotorModel, Real, Real) {
        let drive = self.layout.joints[index].drive;
        let scene_gain = match cmd {
            JointCommand::Position(_) => drive.map(|d| d.stiffness),
            _ => drive.map(|d| d.damping),
        };
        let (model, k, d) = match (scene_gain, drive) {
            (Some(g), Some(drive)) if g > 0.0 => (
                MotorModel::ForceBased,
                drive.stiffness as Real,
                drive.damping as Real,
            ),
            _ => (
                MotorModel::AccelerationBased,
                DEFAULT_DRIVE_STIFFNESS,
                DEFAULT_DRIVE_DAMPING,
            ),
        };
        match self.tuned.get(index).copied().flatten() {
            Some((k, d)) => (model, k as Real, d as Real),
            None => (model, k, d),
        }
    }

    /// The bodies joint (`body1` → `body2`) carries: `body2` and every body
    /// joined below it. `None` when they reach `body1` (a loop) or the
    /// ground, or `body2` does not move.
    fn carried_by(
        &self,
        body1: RigidBodyHandle,
        body2: RigidBodyHandle,
    ) -> Option<Vec<RigidBodyHandle>> {
        let mut carried = vec![body2];
        let mut i = 0;
        while let Some(&b) = carried.get(i) {
            i += 1;
            for j in &self.layout.joints {
                let next = if j.body1 == b {
                    j.body2
                } else if j.body2 == b && j.body1 != body1 && !carried.contains(&j.body1) {
                    // A joint whose parent side is below: still carried.
                    j.body1
                } else {
                    continue;
                };
                if next == body1 || Some(next) == self.layout.ground {
                    return None;
                }
                if !carried.contains(&next) {
                    carried.push(next);
                }
            }
        }
        let moves = |h: &RigidBodyHandle| self.world.bodies.get(*h).is_some_and(|b| !b.is_fixed());
        carried.iter().all(moves).then_some(carried)
    }

    /// The joint at `prim`'s index and the gains (stiffness, damping) a
    /// position command drives it with; a fixed joint has none.
    fn drive_gains(&self, prim: &str, name: &str) -> Result<(usize, f64, f64), EngineError> {
        let (index, entry) = self.joint_entry(prim)?;
        if entry.free_axis().is_none() {
            return Err(no_drive(prim, name));
        }
        let (_, k, d) = self.gains(index, &JointCommand::Position(0.0));
        Ok((index, f64::from(k), f64::from(d)))
    }

    /// The rigid body at `prim`.
    fn body_handle(&self, prim: &str) -> Result<RigidBodyHandle, EngineError> {
        self.layout
            .body_index
            .get(prim)
            .map(|i| self.layout.bodies[*i].handle)
            .ok_or_else(|| EngineError::UnknownPath {
                what: "body",
                path: prim.to_string(),
            })
    }

    fn joint_entry(&self, path: &str) -> Result<(usize, &JointEntry), EngineError> {
        self.layout
            .joint_index
            .get(path)
            .map(|i| (*i, &self.layout.joints[*i]))
            .ok_or_else(|| EngineError::UnknownPath {
                what: "joint",
                path: path.to_string(),
            })
    }

    /// Checks that a decoded world has every body and joint this layout refers to.
    fn check_world_layout(&self, world: &PhysicsWorld) -> Result<(), EngineError> {
        let mismatch = |what: &str| EngineError::StateMismatch(format!("state {what}"));
        for (index, entry) in self.layout.bodies.iter().enumerate() {
            let rb = world
                .bodies
                .get(entry.handle)
                .ok_or_else(|| mismatch(&format!("lacks body {}", entry.path)))?;
            let kind_matches = match entry.kind {
                BodyKind::Dynamic => rb.is_dynamic(),
                BodyKind::Static => rb.is_fixed(),
                BodyKind::Kinematic => rb.is_kinematic(),
            };
            if rb.user_data != index as u128 || !kind_matches {
                return Err(mismatch(&format!("has another body at {}", entry.path)));
            }
        }
        for entry in &self.layout.joints {
            let joint = world
                .impulse_joints
                .get(entry.handle)
                .ok_or_else(|| mismatch(&format!("lacks joint {}", entry.path)))?;
            if joint.body1() != entry.body1 || joint.body2() != entry.body2 {
                return Err(mismatch(&format!("has another joint at {}", entry.path)));
            }
        }
        if let Some(ground) = self.layout.ground
            && !world.bodies.get(ground).is_some_and(|rb| rb.is_fixed())
        {
            return Err(mismatch("lacks the ground body"));
        }
        for (_, co) in world.colliders.iter() {
            if co.user_data >= self.layout.bodies.len() as u128 {
                return Err(mismatch("has a collider of no known body"));
            }
        }
        Ok(())
    }
}

impl Simulation for RapierSimulation {
    fn kind(&self) -> EngineKind {
        EngineKind::Rapier3d
    }

    fn step(&mut self) -> Result<(), EngineError> {
        if let Some(reason) = &self.diverged {
            return Err(EngineError::Diverged(format!(
                "simulation diverged earlier: {reason}"
            )));
        }
        for _ in 0..self.substeps {
            let pushed = self.apply_efforts();
            // Rapier panics on internally inconsistent data, which only a forged state can
            // bring in (corruption fails the checksum): report it instead of unwinding into
            // the caller, and refuse to step that world again.
            let world = &mut self.world;
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.step()));
            if let Err(panic) = stepped {
                let reason = format!("rapier failed: {}", crate::error::panic_text(&*panic));
                self.diverged = Some(reason.clone());
                return Err(EngineError::Diverged(reason));
            }
            // Efforts are re-applied before every substep: clear them so that they neither
            // accumulate nor end up in a state.
            for handle in pushed {
                if let Some(rb) = self.world.bodies.get_mut(handle) {
                    rb.reset_forces(false);
                    rb.reset_torques(false);
                }
            }
            if let Err(e) = self.check_finite() {
                if let EngineError::Diverged(reason) = &e {
                    self.diverged = Some(reason.clone());
                }
                return Err(e);
            }
        }
        self.step += 1;
        self.time += self.step_dt;
        Ok(())
    }

    fn set_joint_command(
        &mut self,
        joint_path: &str,
        cmd: JointCommand,
    ) -> Result<(), EngineError> {
        let (index, entry) = self.joint_entry(joint_path)?;
        let value = cmd.value();
        if !value.is_finite() || value.abs() > f64::from(f32::MAX) {
            return Err(EngineError::Invalid {
                field: format!("command to {joint_path}"),
                message: format!("{value} is not a finite f32 value"),
            });
        }
        let axis = entry.free_axis().ok_or_else(|| {
            EngineError::not_single_axis(format!("command to {joint_path}"), entry.kind, "commands")
        })?;
        let drive = entry.drive;
        let handle = entry.handle;
        let max_force = drive
            .and_then(|d| d.max_force)
            .map_or(Real::MAX, |f| f.min(f64::from(Real::MAX)) as Real);
        let (model, k, d) = self.gains(index, &cmd);
        let joint = self
            .world
            .impulse_joints
            .get_mut(handle, true)
            .ok_or_else(|| internal(joint_path, "joint missing from the world"))?;
        let data = &mut joint.data;
        let value = value as Real;
        match cmd {
            JointCommand::Position(_) => {
                data.set_motor_model(axis, model)
                    .set_motor(axis, value, 0.0, k, d)
                    .set_motor_max_force(axis, max_force);
            }
            JointCommand::Velocity(_) => {
                data.set_motor_model(axis, model)
                    .set_motor(axis, 0.0, value, 0.0, d)
                    .set_motor_max_force(axis, max_force);
            }
            JointCommand::Effort(_) => {
                // The effort bypasses the drive: switch the motor off.
                data.motor_axes.remove(JointAxesMask::from(axis));
            }
        }
        self.commands[index] = Some(cmd);
        Ok(())
    }

    fn body_poses(
        &self,
        positions: &mut Vec<[f64; 3]>,
        orientations: &mut Vec<[f64; 4]>,
    ) -> Result<(), EngineError> {
        for entry in self
            .layout
            .bodies
            .iter()
            .filter(|e| e.kind != BodyKind::Static)
        {
            let rb = self.rigid_body(entry.handle)?;
            let t = rb.translation();
            let r = rb.rotation();
            positions.push([t.x.into(), t.y.into(), t.z.into()]);
            orientations.push([r.x.into(), r.y.into(), r.z.into(), r.w.into()]);
        }
        Ok(())
    }

    fn observation(&self, path: &str) -> Result<Observation, EngineError> {
        let mut bodies = Vec::new();
        let mut joints = Vec::new();
        if path == "/" {
            for entry in &self.layout.bodies {
                if entry.kind != BodyKind::Static {
                    bodies.push(self.body_observation(entry)?);
                }
            }
            for entry in &self.layout.joints {
                joints.push(self.joint_observation(entry)?);
            }
        } else if let Some(index) = self.layout.body_index.get(path) {
            bodies.push(self.body_observation(&self.layout.bodies[*index])?);
        } else if let Some(index) = self.layout.joint_index.get(path) {
            joints.push(self.joint_observation(&self.layout.joints[*index])?);
        } else {
            return Err(EngineError::UnknownPath {
                what: "body or joint",
                path: path.to_string(),
            });
        }
        Ok(Observation {
            time: self.time,
            step: self.step,
            bodies,
            joints,
        })
    }

    fn parameter(&self, prim: &str, name: &str) -> Result<f64, EngineError> {
        match name {
            "stiffness" | "damping" => {
                let (_, k, d) = self.drive_gains(prim, name)?;
                Ok(if name == "stiffness" { k } else { d })
            }
            "friction" => {
                let body = &self.world.bodies[self.body_handle(prim)?];
                body.colliders()
                    .first()
                    .and_then(|c| self.world.colliders.get(*c))
                    .map(|c| f64::from(c.friction()))
                    .ok_or_else(|| EngineError::Invalid {
                        field: format!("{prim}.friction"),
                        message: "the body has no collider".into(),
                    })
            }
            "mass" => Ok(f64::from(self.world.bodies[self.body_handle(prim)?].mass())),
            other => Err(unknown_parameter(prim, other)),
        }
    }

    fn set_parameter(&mut self, prim: &str, name: &str, value: f64) -> Result<(), EngineError> {
        let field = || format!("{prim}.{name}");
        if !(value.is_finite() && value >= 0.0 && value <= f64::from(Real::MAX)) {
            return Err(EngineError::Invalid {
                field: field(),
                message: format!("{value} is not a finite, non-negative value"),
            });
        }
        match name {
            "stiffness" | "damping" => {
                let (index, k, d) = self.drive_gains(prim, name)?;
                self.tuned[index] = Some(if name == "stiffness" {
                    (value, d)
                } else {
                    (k, value)
                });
                // The command in force drives with the new gains from now.
                if let Some(cmd) = self.commands[index] {
                    self.set_joint_command(prim, cmd)?;
                }
                Ok(())
            }
            "friction" => {
                let handle = self.body_handle(prim)?;
                let colliders = self.world.bodies[handle].colliders().to_vec();
                for c in colliders {
                    if let Some(collider) = self.world.colliders.get_mut(c) {
                        collider.set_friction(value as Real);
                    }
                }
                Ok(())
            }
            "mass" => {
                if value <= 0.0 {
                    return Err(EngineError::Invalid {
                        field: field(),
                        message: "a body's mass must be positive".into(),
                    });
                }
                let handle = self.body_handle(prim)?;
                let body = &mut self.world.bodies[handle];
                if !body.is_dynamic() {
                    return Err(EngineError::Invalid {
                        field: field(),
                        message: "only a dynamic body has a mass to tune".into(),
                    });
                }
                // Colliders carry no mass here (density 0): the body's own
                // mass properties are all of it, inertia scaled along.
                let mut props = body.mass_properties().local_mprops;
                props.set_mass(value as Real, true);
                body.set_additional_mass_properties(props, true);
                // Now, not at the next step, so a read says what was set.
                body.recompute_mass_properties_from_colliders(&self.world.colliders);
                Ok(())
            }
            other => Err(unknown_parameter(prim, other)),
        }
    }

    fn set_joint_state(
        &mut self,
        joint: &str,
        position: f64,
        velocity: Option<f64>,
    ) -> Result<(), EngineError> {
        let field = |what: &str| format!("{joint}.{what}");
        let (_, entry) = self.joint_entry(joint)?;
        if entry.free_axis().is_none() {
            return Err(EngineError::not_single_axis(
                field("position"),
                entry.kind,
                "position to set",
            ));
        }
        for (what, v) in [("position", Some(position)), ("velocity", velocity)] {
            if let Some(v) = v
                && !(v.is_finite() && v.abs() <= f64::from(Real::MAX))
            {
                return Err(EngineError::Invalid {
                    field: field(what),
                    message: format!("{v} is not a finite value"),
                });
            }
        }
        let now = self.joint_observation(entry)?;
        let (kind, body1, body2, handle) = (entry.kind, entry.body1, entry.body2, entry.handle);
        let carried = self.carried_by(body1, body2).ok_or_else(|| EngineError::Invalid {
            field: field("position"),
            message: "the joint closes a loop (its child side reaches its parent): its bodies cannot move as one".into(),
        })?;
        let frame1 = self
            .world
            .impulse_joints
            .get(handle)
            .map(|j| j.data.local_frame1)
            .ok_or_else(|| internal(joint, "joint missing from the world"))?;
        let (anchor, q1) = world_frame(self.rigid_body(body1)?.position(), &frame1);
        let axis = quat_rotate(q1, [1.0, 0.0, 0.0]);
        let delta = position - now.position;
        let dv = velocity.map_or(0.0, |v| v - now.velocity);
        // The carried bodies move as one: turned about (revolute) or slid
        // along (prismatic) the joint's axis, their velocities turned with
        // them plus the joint's change of speed.
        let (turn, shift) = match kind {
            JointKind::Revolute => (quat_from_axis_angle(axis, delta), [0.0; 3]),
            _ => (crate::geometry::IDENTITY, scaled(axis, delta)),
        };
        for handle in carried {
            let body = self
                .world
                .bodies
                .get_mut(handle)
                .ok_or_else(|| internal(joint, "body missing from the world"))?;
            let pose = body.position();
            let p = vec_f64(pose.translation);
            let o = [
                pose.rotation.x,
                pose.rotation.y,
                pose.rotation.z,
                pose.rotation.w,
            ]
            .map(f64::from);
            let p = add(add(anchor, quat_rotate(turn, sub(p, anchor))), shift);
            let o = quat_mul(turn, o);
            body.set_position(Pose::from_parts(to_vec(p), to_rot(o)), true);
            let com = vec_f64(body.center_of_mass());
            let mut w = quat_rotate(turn, vec_f64(body.angvel()));
            let mut v = quat_rotate(turn, vec_f64(body.linvel()));
            match kind {
                JointKind::Revolute => {
                    w = add(w, scaled(axis, dv));
                    v = add(v, cross(scaled(axis, dv), sub(com, anchor)));
                }
                _ => v = add(v, scaled(axis, dv)),
            }
            body.set_angvel(to_vec(w), true);
            body.set_linvel(to_vec(v), true);
        }
        Ok(())
    }

    fn set_body_pose(
        &mut self,
        body: &str,
        position: [f64; 3],
        orientation: Option<[f64; 4]>,
    ) -> Result<(), EngineError> {
        let handle = self.body_handle(body)?;
        let position = finite3(&format!("{body}.position"), position)?;
        let orientation = orientation
            .map(|q| unit_quat(&format!("{body}.orientation"), q))
            .transpose()?;
        let rb = self
            .world
            .bodies
            .get_mut(handle)
            .ok_or_else(|| internal(body, "body missing from the world"))?;
        if rb.is_fixed() {
            return Err(EngineError::Invalid {
                field: format!("{body}.position"),
                message: "a fixed body does not move".into(),
            });
        }
        let rotation = match orientation {
            Some(q) => to_rot(q),
            None => rb.position().rotation,
        };
        rb.set_position(Pose::from_parts(to_vec(position), rotation), true);
        Ok(())
    }

    fn state(&self) -> Result<SimState, EngineError> {
        let payload = PayloadRef {
            world: &self.world,
            substeps: self.substeps,
            step_dt: self.step_dt,
            time: self.time,
            step: self.step,
            commands: self.commands.iter().map(|c| c.map(Into::into)).collect(),
            diverged: &self.diverged,
            tuned: &self.tuned,
        };
        let encoded = bincode::serde::encode_to_vec(&payload, bincode::config::standard())
            .map_err(|e| EngineError::Invalid {
                field: "state".to_string(),
                message: format!("cannot encode the world: {e}"),
            })?;
        Ok(SimState::seal(self.owner(), self.time, self.step, &encoded))
    }

    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError> {
        let encoded = state.open(&self.owner())?;
        let config = bincode::config::standard().with_limit::<MAX_STATE_BYTES>();
        // The checksum rules out corruption; a forged payload could still hold data that
        // makes a decoder panic, which must not unwind into the caller.
        let decoded = std::panic::catch_unwind(|| {
            bincode::serde::decode_from_slice::<Payload, _>(encoded, config).or_else(|e| {
                bincode::serde::decode_from_slice::<PayloadUntuned, _>(encoded, config)
                    .map(|(p, used)| (Payload::from(p), used))
                    .map_err(|_| e)
            })
        })
        .map_err(|_| EngineError::StateMismatch("state data malformed".to_string()))?;
        let (payload, used) = decoded
            .map_err(|e| EngineError::StateMismatch(format!("state data unreadable: {e}")))?;
        if used != encoded.len() {
            return Err(EngineError::StateMismatch(
                "state data has trailing bytes".to_string(),
            ));
        }
        if payload.time.to_bits() != state.time.to_bits() || payload.step != state.step {
            return Err(EngineError::StateMismatch(
                "state header disagrees with its data".to_string(),
            ));
        }
        let sane_stepping = payload.substeps >= 1
            && payload.substeps <= MAX_ITERATIONS
            && payload.step_dt.is_finite()
            && payload.step_dt > 0.0
            && payload.world.integration_parameters.dt > 0.0;
        let tuned_fits =
            payload.tuned.is_empty() || payload.tuned.len() == self.layout.joints.len();
        if !sane_stepping || payload.commands.len() != self.layout.joints.len() || !tuned_fits {
            return Err(EngineError::StateMismatch(
                "state stepping or command table does not fit this scene".to_string(),
            ));
        }
        self.check_world_layout(&payload.world)?;
        self.world = payload.world;
        self.substeps = payload.substeps;
        self.step_dt = payload.step_dt;
        self.time = payload.time;
        self.step = payload.step;
        self.commands = payload
            .commands
            .into_iter()
            .map(|c| c.map(Into::into))
            .collect();
        self.diverged = payload.diverged;
        self.tuned = if payload.tuned.is_empty() {
            vec![None; self.layout.joints.len()]
        } else {
            payload.tuned
        };
        Ok(())
    }

    fn render(&self, camera_path: &str, params: &RenderParams) -> Result<Image, EngineError> {
        let view = crate::camera::View::new(&self.layout.cameras, camera_path, params)?;
        let max_toi = view.max_depth as Real;
        let pixels = view.pixels();
        let query = self.world.query_pipeline();
        let origin = to_vec(view.eye);
        let mut depth = Vec::with_capacity(pixels);
        let mut instance_id = Vec::with_capacity(pixels);
        for row in 0..view.height {
            for col in 0..view.width {
                let ray = Ray::new(origin, to_vec(view.ray(row, col)));
                match query.cast_ray(&ray, max_toi, true) {
                    Some((collider, toi)) => {
                        depth.push(toi);
                        instance_id.push(self.instance_of(collider));
                    }
                    None => {
                        depth.push(max_toi);
                        instance_id.push(u32::MAX);
                    }
                }
            }
        }
        Ok(Image {
            width: params.width,
            height: params.height,
            depth,
            instance_id,
            instance_paths: self.layout.bodies.iter().map(|b| b.path.clone()).collect(),
        })
    }

    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError> {
        // Cloning copies every structure a snapshot holds, plus workspace a snapshot leaves
        // out; the pipelines are workspace only and start fresh, as in a restore.
        let w = &self.world;
        let world = PhysicsWorld {
            gravity: w.gravity,
            integration_parameters: w.integration_parameters,
            physics_pipeline: PhysicsPipeline::new(),
            collision_pipeline: CollisionPipeline::new(),
            islands: w.islands.clone(),
            broad_phase: w.broad_phase.clone(),
            narrow_phase: w.narrow_phase.clone(),
            bodies: w.bodies.clone(),
            colliders: w.colliders.clone(),
            impulse_joints: w.impulse_joints.clone(),
            multibody_joints: w.multibody_joints.clone(),
            soft_bodies: w.soft_bodies.clone(),
            ccd_solver: CCDSolver::new(),
        };
        Ok(Box::new(RapierSimulation {
            layout: Arc::clone(&self.layout),
            world,
            substeps: self.substeps,
            step_dt: self.step_dt,
            time: self.time,
            step: self.step,
            commands: self.commands.clone(),
            diverged: self.diverged.clone(),
            tuned: self.tuned.clone(),
        }))
    }

    fn time(&self) -> f64 {
        self.time
    }

    fn step_count(&self) -> u64 {
        self.step
    }

    fn close(self: Box<Self>) -> Result<(), EngineError> {
        Ok(())
    }
}

impl RapierSimulation {
    fn owner(&self) -> crate::StateOwner {
        crate::StateOwner {
            engine: EngineKind::Rapier3d,
            format: STATE_FORMAT,
            scene_fingerprint: self.layout.fingerprint,
        }
    }

    /// The index in `instance_paths` of the body owning `collider`.
    fn instance_of(&self, collider: ColliderHandle) -> u32 {
        self.world
            .colliders
            .get(collider)
            .and_then(|co| u32::try_from(co.user_data).ok())
            .filter(|i| (*i as usize) < self.layout.bodies.len())
            .unwrap_or(u32::MAX)
    }
}

// ---------------------------------------------------------------------------------------------
// Building the world.
// ---------------------------------------------------------------------------------------------

/// Returns (substeps, step dt, substep dt, solver iterations).
fn validate_config(config: &EngineConfig) -> Result<(u32, f64, Real, Option<usize>), EngineError> {
    let invalid = |field: &str, message: String| EngineError::Invalid {
        field: format!("engine.config.{field}"),
        message,
    };
    if !(config.step_hz.is_finite()
        && config.step_hz > 0.0
        && config.step_hz <= f64::from(MAX_STEP_HZ))
    {
        return Err(invalid(
            "step_hz",
            format!("{} is not in (0, {MAX_STEP_HZ}]", config.step_hz),
        ));
    }
    if !(1..=MAX_ITERATIONS).contains(&config.substeps) {
        return Err(invalid(
            "substeps",
            format!("{} is not in [1, {MAX_ITERATIONS}]", config.substeps),
        ));
    }
    let iterations = match config.solver_iterations {
        Some(n) if !(1..=MAX_ITERATIONS).contains(&n) => {
            return Err(invalid(
                "solver_iterations",
                format!("{n} is not in [1, {MAX_ITERATIONS}]"),
            ));
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    let step_dt = config.dt();
    let substep_dt = (step_dt / f64::from(config.substeps)) as Real;
    if !(substep_dt.is_normal() && substep_dt.is_sign_positive()) {
        return Err(invalid(
            "step_hz",
            format!(
                "its substep length ({step_dt} s / {} substeps) is no usable 32-bit time",
                config.substeps
            ),
        ));
    }
    Ok((config.substeps, step_dt, substep_dt, iterations))
}

/// USD collision groups as rapier interaction groups: one bit per group, and
/// the last bit for colliders in no group.
struct GroupBits {
    bit: HashMap<String, u32>,
    groups: Vec<crate::scene::CollisionGroup>,
}

const UNGROUPED: u32 = 1 << 31;

impl GroupBits {
    fn new(scene: &SceneModel) -> Result<GroupBits, EngineError> {
        if scene.collision_groups.len() > 31 {
            return Err(EngineError::Unsupported {
                feature: format!(
                    "{} collision groups (rapier3d filters at most 31)",
                    scene.collision_groups.len()
                ),
                engine: EngineKind::Rapier3d,
            });
        }
        let bit = scene
            .collision_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.path.clone(), 1u32 << i))
            .collect();
        Ok(GroupBits {
            bit,
            groups: scene.collision_groups.clone(),
        })
    }

    fn bits(&self, paths: &[String]) -> u32 {
        paths
            .iter()
            .filter_map(|p| self.bit.get(p))
            .fold(0, |a, b| a | b)
    }

    /// Memberships and filter of a collider in `member_of`.
    fn interaction(&self, member_of: &[String]) -> InteractionGroups {
        let memberships = match self.bits(member_of) {
            0 => UNGROUPED,
            m => m,
        };
        let mut filter = u32::MAX;
        for g in self.groups.iter().filter(|g| member_of.contains(&g.path)) {
            let listed = self.bits(&g.filtered);
            if g.invert {
                filter &= listed;
            } else {
                filter &= !listed;
            }
        }
        InteractionGroups::new(
            Group::from_bits_retain(memberships),
            Group::from_bits_retain(filter),
            InteractionTestMode::And,
        )
    }
}

fn add_body(
    world: &mut PhysicsWorld,
    index: usize,
    body: &crate::scene::Body,
    groups: &GroupBits,
) -> Result<RigidBodyHandle, EngineError> {
    let path = body.path.as_str();
    let pose = pose(path, &body.pose)?;
    let builder = match body.kind {
        BodyKind::Dynamic => RigidBodyBuilder::dynamic()
            .linvel(vec3(path, body.linear_velocity)?)
            .angvel(vec3(path, body.angular_velocity)?)
            .additional_mass_properties(mass_properties(body)?),
        BodyKind::Static => RigidBodyBuilder::fixed(),
        // Kinematic bodies only move when commanded, and nothing commands them yet.
        BodyKind::Kinematic => RigidBodyBuilder::kinematic_position_based(),
    };
    let handle = world
        .bodies
        .insert(builder.pose(pose).user_data(index as u128));
    for collider in &body.colliders {
        let cpath = collider.path.as_str();
        if matches!(collider.shape, Shape::Plane { .. }) && body.kind == BodyKind::Dynamic {
            return Err(prim_error(cpath, "a plane cannot belong to a dynamic body"));
        }
        let dynamic = body.kind == BodyKind::Dynamic;
        let (shape, local) = shape_and_pose(cpath, &collider.shape, &collider.local_pose, dynamic)?;
        let m = &collider.material;
        let friction = non_negative(cpath, "dynamic_friction", m.dynamic_friction)?;
        let restitution = non_negative(cpath, "restitution", m.restitution)?;
        let co = ColliderBuilder::new(shape)
            .position(local)
            .friction(friction)
            .restitution(restitution)
            // Mass properties are given to the body (see `mass_properties`).
            .density(0.0)
            .collision_groups(groups.interaction(&collider.groups))
            .user_data(index as u128);
        world
            .colliders
            .insert_with_parent(co, handle, &mut world.bodies);
    }
    Ok(handle)
}

/// The rapier shape of a scene shape, and its pose in the body (turned for rapier's Y-axis
/// capsules and cylinders). Triangle meshes cannot collide with each other in
/// rapier, so on a `dynamic` body one becomes its convex hull (reported as an
/// approximation in the engine's findings).
fn shape_and_pose(
    path: &str,
    shape: &Shape,
    local_pose: &ScenePose,
    dynamic: bool,
) -> Result<(SharedShape, Pose), EngineError> {
    let points = |vs: &[[f64; 3]]| -> Result<Vec<Vector>, EngineError> {
        vs.iter().map(|v| finite3(path, *v).map(to_vec)).collect()
    };
    let hull = |vs: &[[f64; 3]]| -> Result<SharedShape, EngineError> {
        SharedShape::convex_hull(&points(vs)?).ok_or_else(|| {
            prim_error(
                path,
                "the mesh's points are degenerate (flat or too few) and have no convex hull",
            )
        })
    };
    let positive = |field: &str, v: f64| -> Result<Real, EngineError> {
        let r = finite(path, field, v)?;
        if r > 0.0 {
            Ok(r)
        } else {
            Err(prim_error(
                path,
                &format!("{field} must be positive, got {v}"),
            ))
        }
    };
    let (shape, along_y) = match shape {
        Shape::Cuboid { half_extents } => (
            SharedShape::cuboid(
                positive("half extent", half_extents[0])?,
                positive("half extent", half_extents[1])?,
                positive("half extent", half_extents[2])?,
            ),
            None,
        ),
        Shape::Sphere { radius } => (SharedShape::ball(positive("radius", *radius)?), None),
        Shape::Capsule {
            radius,
            half_height,
            axis,
        } => (
            SharedShape::capsule_y(
                non_negative(path, "half_height", *half_height)?,
                positive("radius", *radius)?,
            ),
            Some(*axis),
        ),
        Shape::Cylinder {
            radius,
            half_height,
            axis,
        } => (
            SharedShape::cylinder(
                positive("half_height", *half_height)?,
                positive("radius", *radius)?,
            ),
            Some(*axis),
        ),
        Shape::Plane { axis } => {
            let [x, y, z] = axis.unit();
            (
                SharedShape::halfspace(Vector::new(x as Real, y as Real, z as Real)),
                None,
            )
        }
        Shape::TriMesh { vertices, .. } if dynamic => (hull(vertices)?, None),
        Shape::TriMesh {
            vertices,
            triangles,
        } => (
            SharedShape::trimesh(points(vertices)?, triangles.clone())
                .map_err(|e| prim_error(path, &format!("not a usable triangle mesh: {e}")))?,
            None,
        ),
        Shape::ConvexHull { points } => (hull(points)?, None),
        Shape::ConvexDecomposition {
            vertices,
            triangles,
        } => (
            SharedShape::convex_decomposition(&points(vertices)?, triangles),
            None,
        ),
    };
    let q = unit_quat(path, local_pose.rotation)?;
    let q = match along_y {
        Some(axis) => quat_mul(q, y_to(axis)),
        None => q,
    };
    let t = finite3(path, local_pose.translation)?;
    Ok((shape, Pose::from_parts(to_vec(t), to_rot(q))))
}

/// The body's mass properties in its local frame (see the module docs for the precedence).
fn mass_properties(body: &crate::scene::Body) -> Result<MassProperties, EngineError> {
    let path = body.path.as_str();
    let given = &body.mass;
    let body_density = given
        .density
        .map(|d| positive_f64(path, "density", d))
        .transpose()?;
    let mut total = MassProperties::default();
    for collider in &body.colliders {
        let cpath = collider.path.as_str();
        let (shape, local) = shape_and_pose(cpath, &collider.shape, &collider.local_pose, true)?;
        let mut props = match (collider.mass, collider.density) {
            (Some(mass), _) => {
                let mass = positive_f64(cpath, "mass", mass)?;
                let mut unit = shape.mass_properties(1.0);
                if unit.mass() > 0.0 {
                    unit.set_mass(mass as Real, true);
                }
                unit
            }
            (None, Some(density)) => {
                shape.mass_properties(positive_f64(cpath, "density", density)? as Real)
            }
            (None, None) => shape.mass_properties(body_density.unwrap_or(DEFAULT_DENSITY) as Real),
        };
        props = props.transform_by(&local);
        total += props;
    }
    if let Some(mass) = given.mass {
        let mass = positive_f64(path, "mass", mass)? as Real;
        if total.mass() > 0.0 {
            // Keep the colliders' distribution, scaled to the given mass.
            total.set_mass(mass, true);
        } else if given.diagonal_inertia.is_some() {
            total.set_mass(mass, false);
        } else {
            return Err(prim_error(
                path,
                "a mass without colliders needs an explicit inertia",
            ));
        }
    }
    if let Some(com) = given.center_of_mass {
        total.local_com = to_vec(finite3(path, com)?);
    }
    if let Some(inertia) = given.diagonal_inertia {
        let mut principal = [0.0; 3];
        for (p, i) in principal.iter_mut().zip(inertia) {
            *p = non_negative(path, "diagonal_inertia", i)?;
        }
        let frame = match given.principal_axes {
            Some(q) => to_rot(unit_quat(path, q)?),
            None => Rotation::IDENTITY,
        };
        total = MassProperties::with_principal_inertia_frame(
            total.local_com,
            total.mass(),
            Vector::from(principal),
            frame,
        );
    }
    if !(total.mass() > 0.0 && total.mass().is_finite()) {
        return Err(prim_error(path, "a dynamic body needs a positive mass"));
    }
    Ok(total)
}

fn build_joint(
    joint: &crate::scene::Joint,
) -> Result<rapier3d::prelude::GenericJoint, EngineError> {
    let path = joint.path.as_str();
    let frame = |p: &ScenePose| -> Result<Pose, EngineError> {
        Ok(Pose::from_parts(
            to_vec(finite3(path, p.translation)?),
            to_rot(unit_quat(path, p.rotation)?),
        ))
    };
    // Frames turned so the joint's axis is X.
    let (frame0, frame1) = match joint.kind {
        JointKind::Spherical => joint.spherical_frames(),
        _ => {
            let turn = x_to(joint.axis);
            let turned = |p: &ScenePose| ScenePose {
                translation: p.translation,
                rotation: quat_mul(p.rotation, turn),
            };
            (turned(&joint.local_pose0), turned(&joint.local_pose1))
        }
    };
    let (locked, axis) = match joint.kind {
        JointKind::Revolute => (JointAxesMask::LOCKED_REVOLUTE_AXES, Some(JointAxis::AngX)),
        JointKind::Prismatic => (JointAxesMask::LOCKED_PRISMATIC_AXES, Some(JointAxis::LinX)),
        JointKind::Fixed => (JointAxesMask::LOCKED_FIXED_AXES, None),
        JointKind::Spherical => (JointAxesMask::LOCKED_SPHERICAL_AXES, None),
    };
    let mut builder = GenericJointBuilder::new(locked)
        .local_frame1(frame(&frame0)?)
        .local_frame2(frame(&frame1)?)
        .contacts_enabled(false);
    if joint.kind == JointKind::Spherical {
        if joint.limits.is_some() || joint.drive.is_some() {
            return Err(prim_error(
                path,
                "a spherical joint has a cone, not limits, and no drive",
            ));
        }
        // The cone as two swing limits: toward Y is a turn about Z, toward Z
        // one about Y (a box of swings around the cone; twist stays free).
        if let Some(cone) = joint.cone()? {
            for (angle, about) in cone.into_iter().zip([JointAxis::AngZ, JointAxis::AngY]) {
                let angle = angle as Real;
                builder = builder.limits(about, [-angle, angle]);
            }
        }
        return Ok(builder.build());
    }
    let Some(axis) = axis else {
        if joint.limits.is_some() || joint.drive.is_some() {
            return Err(prim_error(
                path,
                "a fixed joint has neither limits nor a drive",
            ));
        }
        return Ok(builder.build());
    };
    if let Some((lo, hi)) = joint.limits {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(prim_error(path, &format!("bad limits [{lo}, {hi}]")));
        }
        // An infinite side is as good as a very distant one (a range wider than a full turn
        // leaves a revolute joint free).
        let clamp = |v: f64| v.clamp(-1.0e6, 1.0e6) as Real;
        if lo.is_finite() || hi.is_finite() {
            builder = builder.limits(axis, [clamp(lo), clamp(hi)]);
        }
    }
    if let Some(drive) = &joint.drive {
        let stiffness = non_negative(path, "drive stiffness", drive.stiffness)?;
        let damping = non_negative(path, "drive damping", drive.damping)?;
        let target_pos = finite(path, "drive target_position", drive.target_position)?;
        let target_vel = finite(path, "drive target_velocity", drive.target_velocity)?;
        let max_force = match drive.max_force {
            Some(f) if f.is_nan() || f < 0.0 => {
                return Err(prim_error(path, &format!("bad drive max_force {f}")));
            }
            Some(f) => f.min(f64::from(Real::MAX)) as Real,
            None => Real::MAX,
        };
        // A motor with both gains zero would be a rigid velocity lock: leave it off.
        if stiffness > 0.0 || damping > 0.0 {
            builder = builder
                .motor_model(axis, MotorModel::ForceBased)
                .set_motor(axis, target_pos, target_vel, stiffness, damping)
                .motor_max_force(axis, max_force);
        }
    }
    Ok(builder.build())
}

// ---------------------------------------------------------------------------------------------
// Checks and conversions.
// ---------------------------------------------------------------------------------------------

fn prim_error(prim: &str, message: &str) -> EngineError {
    EngineError::ScenePrim {
        prim: prim.to_string(),
        message: message.to_string(),
    }
}

/// An inconsistency of our own bookkeeping (never expected).
fn internal(path: &str, message: &str) -> EngineError {
    EngineError::Invalid {
        field: path.to_string(),
        message: format!("internal: {message}"),
    }
}

fn finite(path: &str, field: &str, v: f64) -> Result<Real, EngineError> {
    if v.is_finite() && v.abs() <= f64::from(Real::MAX) {
        Ok(v as Real)
    } else {
        Err(EngineError::Invalid {
            field: format!("{path} {field}"),
            message: format!("{v} is not a finite f32 value"),
        })
    }
}

fn non_negative(path: &str, field: &str, v: f64) -> Result<Real, EngineError> {
    let r = finite(path, field, v)?;
    if r >= 0.0 {
        Ok(r)
    } else {
        Err(prim_error(
            path,
            &format!("{field} must not be negative, got {v}"),
        ))
    }
}

fn positive_f64(path: &str, field: &str, v: f64) -> Result<f64, EngineError> {
    finite(path, field, v)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(prim_error(
            path,
            &format!("{field} must be positive, got {v}"),
        ))
    }
}

fn finite3(path: &str, v: [f64; 3]) -> Result<[f64; 3], EngineError> {
    for c in v {
        finite(path, "vector", c)?;
    }
    Ok(v)
}

fn vec3(path: &str, v: [f64; 3]) -> Result<Vector, EngineError> {
    Ok(to_vec(finite3(path, v)?))
}

/// A unit quaternion `[x, y, z, w]`, normalised; refuses one far from unit length.
fn unit_quat(path: &str, q: [f64; 4]) -> Result<[f64; 4], EngineError> {
    let norm = q.iter().map(|c| c * c).sum::<f64>().sqrt();
    if !norm.is_finite() || (norm - 1.0).abs() > 1.0e-3 {
        return Err(EngineError::Invalid {
            field: format!("{path} rotation"),
            message: format!("{q:?} is not a unit quaternion"),
        });
    }
    Ok(q.map(|c| c / norm))
}

fn pose(path: &str, p: &ScenePose) -> Result<Pose, EngineError> {
    let q = unit_quat(path, p.rotation)?;
    Ok(Pose::from_parts(vec3(path, p.translation)?, to_rot(q)))
}

fn to_vec(v: [f64; 3]) -> Vector {
    Vector::new(v[0] as Real, v[1] as Real, v[2] as Real)
}

fn to_rot(q: [f64; 4]) -> Rotation {
    Rotation::from_xyzw(q[0] as Real, q[1] as Real, q[2] as Real, q[3] as Real).normalize()
}

fn vec_f64(v: Vector) -> [f64; 3] {
    [v.x.into(), v.y.into(), v.z.into()]
}

/// A joint frame in world coordinates: translation and rotation, in f64.
fn world_frame(body: &Pose, local: &Pose) -> ([f64; 3], [f64; 4]) {
    let bq = [
        body.rotation.x,
        body.rotation.y,
        body.rotation.z,
        body.rotation.w,
    ]
    .map(f64::from);
    let lq = [
        local.rotation.x,
        local.rotation.y,
        local.rotation.z,
        local.rotation.w,
    ]
    .map(f64::from);
    let t = add(
        vec_f64(body.translation),
        quat_rotate(bq, vec_f64(local.translation)),
    );
    (t, quat_mul(bq, lq))
}

const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Rotation taking +Y to `axis` (rapier's capsules and cylinders run along Y).
fn y_to(axis: Axis) -> [f64; 4] {
    match axis {
        Axis::X => [0.0, 0.0, -SQRT_HALF, SQRT_HALF],
        Axis::Y => [0.0, 0.0, 0.0, 1.0],
        Axis::Z => [SQRT_HALF, 0.0, 0.0, SQRT_HALF],
    }
}

/// Rotation taking +X to `axis` (rapier's joints move along or about their frame's X).
fn x_to(axis: Axis) -> [f64; 4] {
    match axis {
        Axis::X => [0.0, 0.0, 0.0, 1.0],
        Axis::Y => [0.0, 0.0, SQRT_HALF, SQRT_HALF],
        Axis::Z => [0.0, -SQRT_HALF, 0.0, SQRT_HALF],
    }
}

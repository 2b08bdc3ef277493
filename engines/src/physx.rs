//! The PhysX engine (PhysX 5.1 through physx-sys, built from its vendored
//! source).
//!
//! - Bodies joined by joints become reduced-coordinate articulations, one per
//!   tree of bodies ([`crate::tree::Tree`]); a tree hanging from the world gets
//!   a fixed base. Free bodies are rigid dynamics, static ones rigid statics.
//! - USD drives are PhysX articulation drives (force drives with the USD gains);
//!   commands to joints without one use acceleration drives, as rapier3d's
//!   default motor does. Efforts are torques (forces on sliders) between the two
//!   links, applied before every substep.
//! - PhysX has no whole-world snapshot. A state holds every body's pose and
//!   velocity, every joint's position and velocity, and the commands; a restore
//!   puts those back but not PhysX's contact and solver caches, so it continues
//!   close to, not bit for bit like, the original (`bitwise_restore: false`).
//! - PhysX computes in `f32`.

use crate::camera::View;
use crate::geometry::{quat_mul, quat_rotate};
use crate::scene::{Axis, BodyKind, JointKind, Pose, SceneModel, Shape};
use crate::tree::{
    Tree, authored_coordinate, checked_pose, compose, inverse, joint_zero, positive, volume,
};
use crate::{
    BodyObservation, Engine, EngineCapabilities, EngineConfig, EngineError, EngineKind, Image,
    JointCommand, JointObservation, Observation, RenderParams, SimState, Simulation,
};
use physx_sys::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, OnceLock};

/// Version of the `data` layout in PhysX's [`SimState`]s.
pub const STATE_FORMAT: u32 = 1;

/// Density of colliders that give neither mass nor density (USD's default).
const DEFAULT_DENSITY: f64 = 1000.0;

/// Gains of the acceleration drive that joints without a USD drive get when
/// commanded (1/s² and 1/s, as rapier3d's default motor).
const DEFAULT_DRIVE_STIFFNESS: f32 = 400.0;
const DEFAULT_DRIVE_DAMPING: f32 = 40.0;

/// The keys of `engine.config.extensions` that PhysX reads.
pub const EXTENSION_KEYS: [&str; 4] = [
    "solver",
    "position_iterations",
    "velocity_iterations",
    "gpu",
];

/// The process's one PhysX foundation and physics object: PhysX allows one
/// foundation per process, so every simulation shares them.
struct Sdk {
    physics: *mut PxPhysics,
}

// SAFETY: the PxPhysics object lives as long as the process; creating objects
// through it is serialized by `CREATE`, and each scene is used by one owner.
unsafe impl Send for Sdk {}
unsafe impl Sync for Sdk {}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();
/// Serializes object creation through the shared PxPhysics.
static CREATE: Mutex<()> = Mutex::new(());

fn sdk() -> Result<&'static Sdk, EngineError> {
    SDK.get_or_init(|| {
        // SAFETY: called once per process (OnceLock); physx-sys's helpers create
        // the foundation with its default allocator and error callback.
        unsafe {
            let foundation = physx_create_foundation();
            if foundation.is_null() {
                return Err("PhysX could not create its foundation".to_string());
            }
            let physics = physx_create_physics(foundation);
            if physics.is_null() {
                return Err("PhysX could not create its physics object".to_string());
            }
            Ok(Sdk { physics })
        }
    })
    .as_ref()
    .map_err(|e| EngineError::Failed {
        engine: EngineKind::Physx,
        message: e.clone(),
    })
}

/// The PhysX engine.
pub struct PhysxEngine;

impl Engine for PhysxEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Physx
    }

    fn capabilities(&self) -> EngineCapabilities {
        EngineCapabilities {
            ray_tracing: false,
            soft_body: false,
            fluid: false,
            max_step_hz: 10_000,
            gpu_required: false,
            ros_bridge: false,
            parallel_envs: 1,
            bitwise_restore: false,
            render_outputs: vec!["depth".to_string(), "instance_id".to_string()],
        }
    }

    fn findings(&self, scene: &SceneModel) -> Vec<crate::findings::Finding> {
        let mut out = match crate::findings::tree_findings(scene, EngineKind::Physx) {
            crate::findings::TreeFindings::Native(f) => return f,
            crate::findings::TreeFindings::Scene(f) => f,
        };
        for f in out
            .iter_mut()
            .filter(|f| f.support != crate::findings::Support::Unsupported)
        {
            if let Some((body, c)) = crate::findings::collider_of(scene, f) {
                match &c.shape {
                    Shape::Cylinder { .. } => f.approximate(
                        "PhysX 5.1 has no cylinder; a capsule of the same radius and length is used",
                    ),
                    Shape::TriMesh { .. } | Shape::ConvexDecomposition { .. } => f.approximate(
                        "PhysX collides with the convex hull of the mesh (cooked at load)",
                    ),
                    Shape::Plane { .. } if body.kind != BodyKind::Static => {
                        f.support = crate::findings::Support::Unsupported;
                        f.note = Some("PhysX planes must be static".into());
                    }
                    _ => {}
                }
            } else if f.feature.starts_with("joint: spherical") && f.feature.contains("cone") {
                f.approximate(
                    "the cone is two swing limits (toward each axis), so the swing may reach both at once, past an elliptical cone",
                );
            }
        }
        if !scene.collision_groups.is_empty() {
            out.push(crate::findings::Finding {
                prim: "/".into(),
                feature: "collision groups".into(),
                support: crate::findings::Support::Approximated,
                note: Some(
                    "PhysX switches self-collision per articulation: a robot whose links the groups keep apart gets it off; other group filters are not applied".into(),
                ),
            });
        }
        out
    }

    fn check_config(&self, config: &EngineConfig) -> Result<(), EngineError> {
        Options::read(config).map(|_| ())
    }

    fn load_scene(
        &self,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Box<dyn Simulation>, EngineError> {
        crate::findings::refuse_foreign_native(scene, EngineKind::Physx)?;
        Ok(Box::new(PhysxSimulation::load(scene, config)?))
    }
}

#[derive(Debug, Clone, Copy)]
struct Options {
    substeps: u32,
    step_dt: f64,
    tgs: bool,
    position_iterations: u32,
    velocity_iterations: u32,
}

impl Options {
    fn read(config: &EngineConfig) -> Result<Options, EngineError> {
        let bad = |key: &str, message: String| EngineError::Invalid {
            field: format!("engine.config.extensions.{key}"),
            message,
        };
        if !(config.step_hz.is_finite() && config.step_hz > 0.0) {
            return Err(EngineError::Invalid {
                field: "engine.config.step_hz".into(),
                message: "must be a positive number".into(),
            });
        }
        let mut o = Options {
            substeps: config.substeps.max(1),
            step_dt: config.dt(),
            tgs: false,
            position_iterations: config.solver_iterations.unwrap_or(4).clamp(1, 255),
            velocity_iterations: 1,
        };
        let count = |key: &str, v: &serde_json::Value| {
            v.as_u64()
                .filter(|n| (1..=255).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| bad(key, "must be a whole number from 1 to 255".into()))
        };
        for (key, value) in &config.extensions {
            match key.as_str() {
                "solver" => {
                    o.tgs = match value.as_str() {
                        Some("pgs") => false,
                        Some("tgs") => true,
                        _ => return Err(bad(key, "must be pgs or tgs".into())),
                    }
                }
                "position_iterations" => o.position_iterations = count(key, value)?,
                "velocity_iterations" => o.velocity_iterations = count(key, value)?,
                "gpu" => match value.as_bool() {
                    Some(false) => {}
                    Some(true) => {
                        return Err(bad(
                            key,
                            "this node's PhysX runs on the CPU; GPU dynamics needs a CUDA build of PhysX, which this node does not have".into(),
                        ));
                    }
                    None => return Err(bad(key, "must be true or false".into())),
                },
                _ => {
                    return Err(bad(
                        key,
                        format!(
                            "physx does not read this setting; it reads {}",
                            EXTENSION_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Actor {
    Static(*mut PxRigidStatic),
    Dynamic(*mut PxRigidDynamic),
    Link(*mut PxArticulationLink),
}

impl Actor {
    fn rigid_actor(self) -> *mut PxRigidActor {
        match self {
            Actor::Static(a) => a.cast(),
            Actor::Dynamic(a) => a.cast(),
            Actor::Link(a) => a.cast(),
        }
    }

    fn rigid_body(self) -> Option<*mut PxRigidBody> {
        match self {
            Actor::Static(_) => None,
            Actor::Dynamic(a) => Some(a.cast()),
            Actor::Link(a) => Some(a.cast()),
        }
    }
}

struct JointHandle {
    path: String,
    kind: JointKind,
    joint: *mut PxArticulationJointReducedCoordinate,
    axis: PxArticulationAxis,
    parent: *mut PxRigidBody,
    child: *mut PxRigidBody,
    /// The joint's axis in the child body's frame.
    local_axis: [f64; 3],
    drive: Option<crate::scene::Drive>,
    /// A spherical joint's frames in its bodies, its rotation is read from.
    ball: Option<(Pose, Pose)>,
}

/// A spherical joint's degrees of freedom, in the order a state keeps them.
const BALL_AXES: [PxArticulationAxis; 3] = [
    PxArticulationAxis::Twist,
    PxArticulationAxis::Swing1,
    PxArticulationAxis::Swing2,
];

impl JointHandle {
    /// The articulation axes whose positions and velocities a state keeps.
    fn state_axes(&self) -> &[PxArticulationAxis] {
        if self.ball.is_some() {
            &BALL_AXES
        } else {
            std::slice::from_ref(&self.axis)
        }
    }
}

/// One PhysX scene with everything in it.
pub struct PhysxSimulation {
    /// What the simulation was built from, to build forks.
    scene_model: Arc<SceneModel>,
    config: EngineConfig,
    fingerprint: u64,
    options: Options,
    scene: *mut PxScene,
    dispatcher: *mut PxDefaultCpuDispatcher,
    /// Per scene body, in scene order.
    bodies: Vec<(String, Actor)>,
    /// Articulations and their root links (the root of a floating tree is a body).
    articulations: Vec<*mut PxArticulationReducedCoordinate>,
    /// Free rigid bodies and statics, released with the scene.
    actors: Vec<*mut PxActor>,
    materials: Vec<*mut PxMaterial>,
    joints: Vec<JointHandle>,
    commands: Vec<Option<JointCommand>>,
    cameras: Vec<crate::scene::Camera>,
    /// Actor pointer → index in `bodies`, for rendering.
    instance: HashMap<usize, u32>,
    /// Articulations whose root is a body: (articulation, index in `bodies`).
    roots: Vec<(*mut PxArticulationReducedCoordinate, usize)>,
    time: f64,
    step: u64,
    diverged: Option<String>,
}

// SAFETY: a simulation owns its scene and everything in it, and is used by one
// thread at a time (Simulation takes &mut for anything that changes it).
unsafe impl Send for PhysxSimulation {}

fn v3(v: [f64; 3]) -> PxVec3 {
    PxVec3 {
        x: v[0] as f32,
        y: v[1] as f32,
        z: v[2] as f32,
    }
}

fn from_v3(v: PxVec3) -> [f64; 3] {
    [f64::from(v.x), f64::from(v.y), f64::from(v.z)]
}

fn transform(p: &Pose) -> PxTransform {
    PxTransform {
        p: v3(p.translation),
        q: PxQuat {
            x: p.rotation[0] as f32,
            y: p.rotation[1] as f32,
            z: p.rotation[2] as f32,
            w: p.rotation[3] as f32,
        },
    }
}

fn from_transform(t: &PxTransform) -> Pose {
    Pose {
        translation: from_v3(t.p),
        rotation: [
            f64::from(t.q.x),
            f64::from(t.q.y),
            f64::from(t.q.z),
            f64::from(t.q.w),
        ],
    }
}

/// The rotation taking +X (PhysX's axis for capsules, plane normals and joint
/// axes) to `axis`.
fn x_to(axis: Axis) -> [f64; 4] {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    match axis {
        Axis::X => [0.0, 0.0, 0.0, 1.0],
        Axis::Y => [0.0, 0.0, h, h],
        Axis::Z => [0.0, -h, 0.0, h],
    }
}

/// Frees an articulation joint's axis, or limits it to `range`.
///
/// # Safety
/// `joint` is a live joint of an articulation not yet in a scene.
unsafe fn set_motion(
    joint: *mut PxArticulationJointReducedCoordinate,
    axis: PxArticulationAxis,
    range: Option<(f64, f64)>,
) {
    let motion = match range {
        Some((lo, hi)) => {
            let limit = PxArticulationLimit {
                low: lo.clamp(-1e6, 1e6) as f32,
                high: hi.clamp(-1e6, 1e6) as f32,
            };
            unsafe { PxArticulationJointReducedCoordinate_setLimitParams_mut(joint, axis, &limit) };
            PxArticulationMotion::Limited
        }
        None => PxArticulationMotion::Free,
    };
    unsafe { PxArticulationJointReducedCoordinate_setMotion_mut(joint, axis, motion) };
}

/// Cooks the convex hull of `points` (PhysX collides moving meshes as convex
/// hulls); `None` when PhysX cannot, as for fewer than four points in a plane.
///
/// # Safety
/// `physics` is the live PxPhysics, and creation is serialized by `CREATE`.
unsafe fn convex_mesh(physics: *mut PxPhysics, points: &[[f64; 3]]) -> Option<*mut PxConvexMesh> {
    if points.len() < 4 || points.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }
    let vertices: Vec<PxVec3> = points.iter().map(|p| v3(*p)).collect();
    unsafe {
        let mut desc = PxConvexMeshDesc_new();
        desc.points.stride = std::mem::size_of::<PxVec3>() as u32;
        desc.points.data = vertices.as_ptr().cast();
        desc.points.count = vertices.len() as u32;
        desc.flags = PxConvexFlags::ComputeConvex;
        let params = PxCookingParams_new(PxPhysics_getTolerancesScale(physics));
        let mesh = phys_PxCreateConvexMesh(
            &params,
            &desc,
            PxPhysics_getPhysicsInsertionCallback_mut(physics),
            null_mut(),
        );
        (!mesh.is_null()).then_some(mesh)
    }
}

/// The root link of `art` at `pose`; a fixed base when `fixed`, with a unit
/// mass that its dynamic bodies' masses replace (PhysX wants every link to
/// have one).
///
/// # Safety
/// `art` is a live articulation not yet in a scene, and creation is
/// serialized by `CREATE`.
unsafe fn root_link(
    art: *mut PxArticulationReducedCoordinate,
    pose: &Pose,
    fixed: bool,
) -> Result<*mut PxArticulationLink, EngineError> {
    unsafe {
        if fixed {
            PxArticulationReducedCoordinate_setArticulationFlag_mut(
                art,
                PxArticulationFlag::FixBase,
                true,
            );
        }
        let link =
            PxArticulationReducedCoordinate_createLink_mut(art, null_mut(), &transform(pose));
        if link.is_null() {
            return Err(failed("could not create a link"));
        }
        PxRigidBody_setMass_mut(link.cast(), 1.0);
        PxRigidBody_setMassSpaceInertiaTensor_mut(link.cast(), &v3([1.0; 3]));
        Ok(link)
    }
}

fn failed(message: impl Into<String>) -> EngineError {
    EngineError::Failed {
        engine: EngineKind::Physx,
        message: message.into(),
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    time: f64,
    step: u64,
    /// Per body: position, orientation, linear and angular velocity.
    bodies: Vec<[f64; 13]>,
    /// Per joint: position and velocity.
    joints: Vec<(f64, f64)>,
    /// Per joint: (mode, value), mode 0 position, 1 velocity, 2 effort.
    commands: Vec<Option<(u8, f64)>>,
    diverged: Option<String>,
}

impl PhysxSimulation {
    pub fn load(scene: &SceneModel, config: &EngineConfig) -> Result<Self, EngineError> {
        let options = Options::read(config)?;
        let tree = Tree::plan(scene)?;
        let sdk = sdk()?;
        let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        let physics = sdk.physics;
        let gravity = config.gravity.unwrap_or_else(|| scene.default_gravity());
        // SAFETY: `physics` is the live PxPhysics; every pointer below is created
        // here, checked for null, and owned by the simulation, which releases it.
        unsafe {
            let mut desc = PxSceneDesc_new(PxPhysics_getTolerancesScale(physics));
            desc.gravity = v3(gravity);
            // No worker threads: the calling thread runs the simulation, so the
            // twin actor's thread does the work and results are reproducible.
            let dispatcher = phys_PxDefaultCpuDispatcherCreate(
                0,
                null_mut(),
                PxDefaultCpuDispatcherWaitForWorkMode::WaitForWork,
                0,
            );
            if dispatcher.is_null() {
                return Err(failed("could not create a CPU dispatcher"));
            }
            desc.cpuDispatcher = dispatcher.cast();
            desc.filterShader = get_default_simulation_filter_shader();
            desc.solverType = if options.tgs {
                PxSolverType::Tgs
            } else {
                PxSolverType::Pgs
            };
            let px_scene = PxPhysics_createScene_mut(physics, &desc);
            if px_scene.is_null() {
                PxDefaultCpuDispatcher_release_mut(dispatcher);
                return Err(failed("could not create a scene"));
            }
            let mut sim = PhysxSimulation {
                scene_model: Arc::new(scene.clone()),
                config: config.clone(),
                fingerprint: scene.fingerprint(),
                options,
                scene: px_scene,
                dispatcher,
                bodies: Vec::new(),
                articulations: Vec::new(),
                actors: Vec::new(),
                materials: Vec::new(),
                joints: Vec::new(),
                commands: Vec::new(),
                cameras: scene.cameras.clone(),
                instance: HashMap::new(),
                roots: Vec::new(),
                time: 0.0,
                step: 0,
                diverged: None,
            };
            // On an error below, dropping `sim` releases what was made so far.
            sim.build(physics, scene, &tree)?;
            Ok(sim)
        }
    }

    /// Creates every actor and articulation of `scene`.
    unsafe fn build(
        &mut self,
        physics: *mut PxPhysics,
        scene: &SceneModel,
        tree: &Tree,
    ) -> Result<(), EngineError> {
        let mut actors: Vec<Option<Actor>> = vec![None; scene.bodies.len()];
        let mut initial: Vec<(usize, f64)> = Vec::new();
        for &root in &tree.roots {
            let body = &scene.bodies[root];
            let hangs_from_world = tree.parent_joint[root].is_some();
            if !hangs_from_world && tree.children[root].is_empty() {
                // A free body: a rigid dynamic or static actor.
                let pose = transform(&checked_pose(&body.path, &body.pose)?);
                let actor = match body.kind {
                    BodyKind::Static => {
                        Actor::Static(unsafe { PxPhysics_createRigidStatic_mut(physics, &pose) })
                    }
                    _ => {
                        Actor::Dynamic(unsafe { PxPhysics_createRigidDynamic_mut(physics, &pose) })
                    }
                };
                if actor.rigid_actor().is_null() {
                    return Err(failed("could not create an actor"));
                }
                self.actors.push(actor.rigid_actor().cast());
                unsafe { self.shapes(physics, actor, body, [0.0; 3])? };
                if let (Actor::Dynamic(d), BodyKind::Dynamic) = (actor, body.kind) {
                    unsafe {
                        self.mass(d.cast(), body)?;
                        PxRigidDynamic_setSolverIterationCounts_mut(
                            d,
                            self.options.position_iterations,
                            self.options.velocity_iterations,
                        );
                        PxRigidDynamic_setLinearVelocity_mut(d, &v3(body.linear_velocity), true);
                        PxRigidDynamic_setAngularVelocity_mut(d, &v3(body.angular_velocity), true);
                    }
                } else if let Actor::Dynamic(d) = actor {
                    unsafe {
                        PxRigidBody_setRigidBodyFlag_mut(d.cast(), PxRigidBodyFlag::Kinematic, true)
                    };
                }
                unsafe {
                    PxScene_addActor_mut(self.scene, actor.rigid_actor().cast(), std::ptr::null())
                };
                actors[root] = Some(actor);
                continue;
            }
            // A tree: an articulation.
            let art = unsafe { PxPhysics_createArticulationReducedCoordinate_mut(physics) };
            if art.is_null() {
                return Err(failed("could not create an articulation"));
            }
            self.articulations.push(art);
            unsafe {
                PxArticulationReducedCoordinate_setSolverIterationCounts_mut(
                    art,
                    self.options.position_iterations,
                    self.options.velocity_iterations,
                );
            }
            let (base_link, root_world, stack_start) = if hangs_from_world {
                // A fixed base at the world origin, with no shapes, carries the tree.
                let link = unsafe { root_link(art, &Pose::IDENTITY, true)? };
                (link, Pose::IDENTITY, vec![root])
            } else {
                let world = checked_pose(&body.path, &body.pose)?;
                let link = unsafe { root_link(art, &world, body.kind != BodyKind::Dynamic)? };
                unsafe { self.shapes(physics, Actor::Link(link), body, [0.0; 3])? };
                if body.kind == BodyKind::Dynamic {
                    unsafe { self.mass(link.cast(), body)? };
                }
                actors[root] = Some(Actor::Link(link));
                self.roots.push((art, root));
                (link, world, tree.children[root].clone())
            };
            // Links below, parents before children.
            let mut stack: Vec<(usize, Pose, *mut PxArticulationLink)> = stack_start
                .into_iter()
                .rev()
                .map(|c| (c, root_world, base_link))
                .collect();
            while let Some((b, parent_world, parent_link)) = stack.pop() {
                let Some(j) = tree.parent_joint[b] else {
                    continue;
                };
                let joint = &scene.joints[j];
                let child = &scene.bodies[b];
                let f0 = checked_pose(&joint.path, &joint.local_pose0)?;
                let f1 = checked_pose(&joint.path, &joint.local_pose1)?;
                let authored = checked_pose(&child.path, &child.pose)?;
                let zero = compose(
                    &parent_world,
                    &joint_zero(joint.kind, &parent_world, &f0, &authored, &f1),
                );
                let link = unsafe {
                    PxArticulationReducedCoordinate_createLink_mut(
                        art,
                        parent_link,
                        &transform(&zero),
                    )
                };
                if link.is_null() {
                    return Err(failed("could not create a link"));
                }
                unsafe {
                    self.shapes(physics, Actor::Link(link), child, [0.0; 3])?;
                    self.mass(link.cast(), child)?;
                }
                actors[b] = Some(Actor::Link(link));
                let inbound = unsafe { PxArticulationLink_getInboundJoint(link) };
                if inbound.is_null() {
                    return Err(failed("a link has no inbound joint"));
                }
                let (parent_frame, child_frame) = if joint.kind == JointKind::Spherical {
                    let (frame0, _) = joint.spherical_frames();
                    // The child's frame where it meets the parent's at zero: the
                    // authored turn of the ball is the link's own.
                    let meet = compose(&parent_world, &frame0);
                    (frame0, compose(&inverse(&zero), &meet))
                } else {
                    let turn = x_to(joint.axis);
                    (
                        Pose {
                            translation: f0.translation,
                            rotation: quat_mul(f0.rotation, turn),
                        },
                        Pose {
                            translation: f1.translation,
                            rotation: quat_mul(f1.rotation, turn),
                        },
                    )
                };
                let (jtype, axis) = match joint.kind {
                    JointKind::Revolute => {
                        (PxArticulationJointType::Revolute, PxArticulationAxis::Twist)
                    }
                    JointKind::Prismatic => {
                        (PxArticulationJointType::Prismatic, PxArticulationAxis::X)
                    }
                    JointKind::Fixed => (PxArticulationJointType::Fix, PxArticulationAxis::Twist),
                    JointKind::Spherical => (
                        PxArticulationJointType::Spherical,
                        PxArticulationAxis::Twist,
                    ),
                };
                unsafe {
                    // USD joints have no friction and no speed limit; PhysX's
                    // defaults (0.05, 100 rad/s) would add both.
                    PxArticulationJointReducedCoordinate_setFrictionCoefficient_mut(inbound, 0.0);
                    PxArticulationJointReducedCoordinate_setMaxJointVelocity_mut(inbound, 1e6);
                    PxArticulationJointReducedCoordinate_setJointType_mut(inbound, jtype);
                    PxArticulationJointReducedCoordinate_setParentPose_mut(
                        inbound,
                        &transform(&parent_frame),
                    );
                    PxArticulationJointReducedCoordinate_setChildPose_mut(
                        inbound,
                        &transform(&child_frame),
                    );
                }
                // One handle a moving joint: a ball's frames, or an axis's drive.
                let (local_axis, drive, ball) = if joint.kind == JointKind::Spherical {
                    // Twist is free; the cone is two swing limits: toward Y a
                    // turn about Z (swing 2), toward Z one about Y (swing 1).
                    let cone = joint.cone()?;
                    let swings = [
                        (PxArticulationAxis::Twist, None),
                        (PxArticulationAxis::Swing2, cone.map(|c| c[0])),
                        (PxArticulationAxis::Swing1, cone.map(|c| c[1])),
                    ];
                    for (axis, cone) in swings {
                        unsafe { set_motion(inbound, axis, cone.map(|c| (-c, c))) };
                    }
                    ([1.0, 0.0, 0.0], None, Some(joint.spherical_frames()))
                } else if joint.kind != JointKind::Fixed {
                    let range = match joint.limits {
                        Some((lo, hi)) if lo.is_nan() || hi.is_nan() || lo > hi => {
                            return Err(EngineError::ScenePrim {
                                prim: joint.path.clone(),
                                message: format!("bad limits [{lo}, {hi}]"),
                            });
                        }
                        Some((lo, hi)) if lo.is_finite() || hi.is_finite() => Some((lo, hi)),
                        _ => None,
                    };
                    unsafe { set_motion(inbound, axis, range) };
                    let q = authored_coordinate(
                        joint.kind,
                        joint.axis,
                        &parent_world,
                        &f0,
                        &authored,
                        &f1,
                    );
                    if q.abs() > 1e-12 {
                        initial.push((self.joints.len(), q));
                    }
                    (
                        quat_rotate(f1.rotation, joint.axis.unit()),
                        joint.drive,
                        None,
                    )
                } else {
                    ([0.0; 3], None, None)
                };
                if joint.kind != JointKind::Fixed {
                    self.joints.push(JointHandle {
                        path: joint.path.clone(),
                        kind: joint.kind,
                        joint: inbound,
                        axis,
                        parent: parent_link.cast(),
                        child: link.cast(),
                        local_axis,
                        drive,
                        ball,
                    });
                }
                for &c in tree.children[b].iter().rev() {
                    stack.push((c, zero, link));
                }
            }
            // A robot whose links the collision groups keep apart (URDF imports
            // are): PhysX's switch for self-collision, per articulation.
            let members: Vec<usize> = self
                .bodies_in_tree(tree, root)
                .into_iter()
                .filter(|&b| !scene.bodies[b].colliders.is_empty())
                .collect();
            let apart = members.len() > 1
                && members.iter().enumerate().all(|(i, &a)| {
                    members[i + 1..].iter().all(|&b| {
                        crate::tree::never_touch(scene, &scene.bodies[a], &scene.bodies[b])
                    })
                });
            if apart {
                unsafe {
                    PxArticulationReducedCoordinate_setArticulationFlag_mut(
                        art,
                        PxArticulationFlag::DisableSelfCollision,
                        true,
                    );
                }
            }
            unsafe {
                if !PxScene_addArticulation_mut(self.scene, art) {
                    return Err(failed("PhysX refused an articulation"));
                }
            }
        }
        for (i, body) in scene.bodies.iter().enumerate() {
            let Some(actor) = actors[i] else {
                return Err(failed(format!("{} was not built", body.path)));
            };
            self.instance
                .insert(actor.rigid_actor() as usize, self.bodies.len() as u32);
            self.bodies.push((body.path.clone(), actor));
        }
        self.commands = vec![None; self.joints.len()];
        // Authored joint coordinates, then the USD drives.
        for (j, q) in initial {
            let h = &self.joints[j];
            unsafe {
                PxArticulationJointReducedCoordinate_setJointPosition_mut(h.joint, h.axis, q as f32)
            };
        }
        for &art in &self.articulations {
            unsafe {
                PxArticulationReducedCoordinate_updateKinematic_mut(
                    art,
                    PxArticulationKinematicFlags::Position | PxArticulationKinematicFlags::Velocity,
                )
            };
        }
        for j in 0..self.joints.len() {
            let h = &self.joints[j];
            let Some(d) = h.drive else { continue };
            for (name, v) in [
                ("stiffness", d.stiffness),
                ("damping", d.damping),
                ("target_position", d.target_position),
                ("target_velocity", d.target_velocity),
            ] {
                if !v.is_finite() || (name == "stiffness" || name == "damping") && v < 0.0 {
                    return Err(EngineError::ScenePrim {
                        prim: h.path.clone(),
                        message: format!("bad drive {name} {v}"),
                    });
                }
            }
            if d.stiffness > 0.0 || d.damping > 0.0 {
                unsafe {
                    self.set_drive(
                        j,
                        PxArticulationDriveType::Force,
                        d.stiffness as f32,
                        d.damping as f32,
                        d.target_position,
                        d.target_velocity,
                    )
                };
            }
        }
        Ok(())
    }

    /// The bodies of the tree rooted at `root`, `root` included.
    fn bodies_in_tree(&self, tree: &Tree, root: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(b) = stack.pop() {
            out.push(b);
            stack.extend(tree.children[b].iter().copied());
        }
        out
    }

    /// Attaches `body`'s colliders to `actor`.
    unsafe fn shapes(
        &mut self,
        physics: *mut PxPhysics,
        actor: Actor,
        body: &crate::scene::Body,
        offset: [f64; 3],
    ) -> Result<(), EngineError> {
        for c in &body.colliders {
            let pose = checked_pose(&c.path, &c.local_pose)?;
            let m = &c.material;
            let material = unsafe {
                PxPhysics_createMaterial_mut(
                    physics,
                    m.static_friction as f32,
                    m.dynamic_friction as f32,
                    m.restitution as f32,
                )
            };
            if material.is_null() {
                return Err(failed("could not create a material"));
            }
            self.materials.push(material);
            let unsupported = |what: &str| EngineError::ScenePrim {
                prim: c.path.clone(),
                message: format!("{what} is not supported on physx"),
            };
            let flags = PxShapeFlags::SimulationShape | PxShapeFlags::SceneQueryShape;
            let (shape, turn) = match &c.shape {
                Shape::Cuboid { half_extents: h } => {
                    let g = unsafe { PxBoxGeometry_new(h[0] as f32, h[1] as f32, h[2] as f32) };
                    let s = unsafe {
                        PxRigidActorExt_createExclusiveShape_1(
                            actor.rigid_actor(),
                            (&g as *const PxBoxGeometry).cast(),
                            material,
                            flags,
                        )
                    };
                    (s, [0.0, 0.0, 0.0, 1.0])
                }
                Shape::Sphere { radius } => {
                    let g = unsafe { PxSphereGeometry_new(*radius as f32) };
                    let s = unsafe {
                        PxRigidActorExt_createExclusiveShape_1(
                            actor.rigid_actor(),
                            (&g as *const PxSphereGeometry).cast(),
                            material,
                            flags,
                        )
                    };
                    (s, [0.0, 0.0, 0.0, 1.0])
                }
                Shape::Capsule {
                    radius,
                    half_height,
                    axis,
                }
                | Shape::Cylinder {
                    radius,
                    half_height,
                    axis,
                } => {
                    let g = unsafe { PxCapsuleGeometry_new(*radius as f32, *half_height as f32) };
                    let s = unsafe {
                        PxRigidActorExt_createExclusiveShape_1(
                            actor.rigid_actor(),
                            (&g as *const PxCapsuleGeometry).cast(),
                            material,
                            flags,
                        )
                    };
                    (s, x_to(*axis))
                }
                Shape::Plane { axis } => {
                    if !matches!(actor, Actor::Static(_)) {
                        return Err(unsupported("a plane on a moving or jointed body"));
                    }
                    let g = unsafe { PxPlaneGeometry_new() };
                    let s = unsafe {
                        PxRigidActorExt_createExclusiveShape_1(
                            actor.rigid_actor(),
                            (&g as *const PxPlaneGeometry).cast(),
                            material,
                            flags,
                        )
                    };
                    (s, x_to(*axis))
                }
                Shape::TriMesh { vertices, .. }
                | Shape::ConvexDecomposition { vertices, .. }
                | Shape::ConvexHull { points: vertices } => {
                    let mesh = unsafe { convex_mesh(physics, vertices) }.ok_or_else(|| {
                        EngineError::ScenePrim {
                            prim: c.path.clone(),
                            message: "PhysX could not cook a convex hull of these points".into(),
                        }
                    })?;
                    let scale = unsafe { PxMeshScale_new() };
                    let g = unsafe {
                        PxConvexMeshGeometry_new(mesh, &scale, PxConvexMeshGeometryFlags::empty())
                    };
                    let s = unsafe {
                        PxRigidActorExt_createExclusiveShape_1(
                            actor.rigid_actor(),
                            (&g as *const PxConvexMeshGeometry).cast(),
                            material,
                            flags,
                        )
                    };
                    // The shape holds its own reference to the mesh.
                    unsafe { PxConvexMesh_release_mut(mesh) };
                    (s, [0.0, 0.0, 0.0, 1.0])
                }
            };
            if shape.is_null() {
                return Err(failed(format!("could not create the shape of {}", c.path)));
            }
            let local = Pose {
                translation: [
                    pose.translation[0] - offset[0],
                    pose.translation[1] - offset[1],
                    pose.translation[2] - offset[2],
                ],
                rotation: quat_mul(pose.rotation, turn),
            };
            unsafe { PxShape_setLocalPose_mut(shape, &transform(&local)) };
        }
        Ok(())
    }

    /// Gives `rb` the mass the scene describes: from its colliders' masses and
    /// densities, then the body's own mass, centre of mass and inertia.
    unsafe fn mass(
        &self,
        rb: *mut PxRigidBody,
        body: &crate::scene::Body,
    ) -> Result<(), EngineError> {
        let densities: Vec<f32> = body
            .colliders
            .iter()
            .map(|c| {
                Ok(match (c.mass, c.density.or(body.mass.density)) {
                    (Some(m), _) => {
                        let v = volume(&c.shape);
                        if v > 0.0 {
                            positive(&c.path, "mass", m)? / v
                        } else {
                            DEFAULT_DENSITY
                        }
                    }
                    (None, Some(d)) => positive(&c.path, "density", d)?,
                    (None, None) => DEFAULT_DENSITY,
                } as f32)
            })
            .collect::<Result<_, EngineError>>()?;
        let given = &body.mass;
        unsafe {
            // USD bodies have no velocity damping; PhysX's defaults would add some.
            PxRigidBody_setLinearDamping_mut(rb, 0.0);
            PxRigidBody_setAngularDamping_mut(rb, 0.0);
            if !densities.is_empty() {
                PxRigidBodyExt_updateMassAndInertia(
                    rb,
                    densities.as_ptr(),
                    densities.len() as u32,
                    std::ptr::null(),
                    false,
                );
            }
            if let Some(mass) = given.mass {
                let mass = positive(&body.path, "mass", mass)?;
                let current = f64::from(PxRigidBody_getMass(rb));
                if current > 0.0 {
                    let inertia = from_v3(PxRigidBody_getMassSpaceInertiaTensor(rb));
                    let r = mass / current;
                    PxRigidBody_setMass_mut(rb, mass as f32);
                    PxRigidBody_setMassSpaceInertiaTensor_mut(
                        rb,
                        &v3([inertia[0] * r, inertia[1] * r, inertia[2] * r]),
                    );
                } else if given.diagonal_inertia.is_some() {
                    PxRigidBody_setMass_mut(rb, mass as f32);
                } else {
                    return Err(EngineError::ScenePrim {
                        prim: body.path.clone(),
                        message: "a mass without colliders needs an explicit inertia".into(),
                    });
                }
            }
            let mut frame = from_transform(&PxRigidBody_getCMassLocalPose(rb));
            if let Some(com) = given.center_of_mass {
                frame.translation = com;
            }
            if let Some(inertia) = given.diagonal_inertia {
                frame.rotation = given.principal_axes.unwrap_or([0.0, 0.0, 0.0, 1.0]);
                PxRigidBody_setMassSpaceInertiaTensor_mut(rb, &v3(inertia));
            }
            PxRigidBody_setCMassLocalPose_mut(rb, &transform(&checked_pose(&body.path, &frame)?));
            if PxRigidBody_getMass(rb) <= 0.0 {
                return Err(EngineError::ScenePrim {
                    prim: body.path.clone(),
                    message: "a dynamic body needs a positive mass".into(),
                });
            }
        }
        Ok(())
    }

    /// Sets joint `j`'s drive and its targets.
    unsafe fn set_drive(
        &self,
        j: usize,
        kind: PxArticulationDriveType,
        stiffness: f32,
        damping: f32,
        target: f64,
        velocity: f64,
    ) {
        let h = &self.joints[j];
        let max_force = h
            .drive
            .and_then(|d| d.max_force)
            .map_or(f32::MAX, |f| f.min(f64::from(f32::MAX)) as f32);
        let drive = PxArticulationDrive {
            stiffness,
            damping,
            maxForce: max_force,
            driveType: kind,
        };
        unsafe {
            PxArticulationJointReducedCoordinate_setDriveParams_mut(h.joint, h.axis, &drive);
            PxArticulationJointReducedCoordinate_setDriveTarget_mut(
                h.joint,
                h.axis,
                target as f32,
                true,
            );
            PxArticulationJointReducedCoordinate_setDriveVelocity_mut(
                h.joint,
                h.axis,
                velocity as f32,
                true,
            );
        }
    }

    fn apply_command(&self, j: usize, cmd: JointCommand) {
        let drive = self.joints[j].drive;
        // SAFETY: `j` indexes this simulation's joints, which live in its scene.
        unsafe {
            match cmd {
                JointCommand::Position(p) => match drive {
                    Some(d) if d.stiffness > 0.0 => self.set_drive(
                        j,
                        PxArticulationDriveType::Force,
                        d.stiffness as f32,
                        d.damping as f32,
                        p,
                        0.0,
                    ),
                    _ => self.set_drive(
                        j,
                        PxArticulationDriveType::Acceleration,
                        DEFAULT_DRIVE_STIFFNESS,
                        DEFAULT_DRIVE_DAMPING,
                        p,
                        0.0,
                    ),
                },
                JointCommand::Velocity(v) => match drive {
                    Some(d) if d.damping > 0.0 => self.set_drive(
                        j,
                        PxArticulationDriveType::Force,
                        0.0,
                        d.damping as f32,
                        0.0,
                        v,
                    ),
                    _ => self.set_drive(
                        j,
                        PxArticulationDriveType::Acceleration,
                        0.0,
                        DEFAULT_DRIVE_DAMPING,
                        0.0,
                        v,
                    ),
                },
                // The effort bypasses the drive.
                JointCommand::Effort(_) => {
                    self.set_drive(j, PxArticulationDriveType::Force, 0.0, 0.0, 0.0, 0.0)
                }
            }
        }
    }

    /// Efforts in force: torques (forces on sliders) between the joint's links,
    /// about the joint axis. PhysX clears them after every simulate.
    fn apply_efforts(&self) {
        for (h, cmd) in self.joints.iter().zip(&self.commands) {
            let Some(JointCommand::Effort(e)) = cmd else {
                continue;
            };
            // SAFETY: the links belong to this simulation's scene.
            unsafe {
                let pose = from_transform(&PxRigidActor_getGlobalPose(h.child.cast()));
                let axis = quat_rotate(pose.rotation, h.local_axis);
                let f = [axis[0] * e, axis[1] * e, axis[2] * e];
                let neg = [-f[0], -f[1], -f[2]];
                match h.kind {
                    JointKind::Revolute => {
                        PxRigidBody_addTorque_mut(h.child, &v3(f), PxForceMode::Force, true);
                        PxRigidBody_addTorque_mut(h.parent, &v3(neg), PxForceMode::Force, true);
                    }
                    JointKind::Prismatic => {
                        PxRigidBody_addForce_mut(h.child, &v3(f), PxForceMode::Force, true);
                        PxRigidBody_addForce_mut(h.parent, &v3(neg), PxForceMode::Force, true);
                    }
                    JointKind::Fixed | JointKind::Spherical => {}
                }
            }
        }
    }

    fn body_state(&self, actor: Actor) -> [f64; 13] {
        // SAFETY: the actor belongs to this simulation's scene.
        unsafe {
            let pose = from_transform(&PxRigidActor_getGlobalPose(actor.rigid_actor()));
            let (lin, ang) = match actor.rigid_body() {
                Some(rb) => (
                    from_v3(PxRigidBody_getLinearVelocity(rb)),
                    from_v3(PxRigidBody_getAngularVelocity(rb)),
                ),
                None => ([0.0; 3], [0.0; 3]),
            };
            let [x, y, z] = pose.translation;
            let [qx, qy, qz, qw] = pose.rotation;
            [
                x, y, z, qx, qy, qz, qw, lin[0], lin[1], lin[2], ang[0], ang[1], ang[2],
            ]
        }
    }

    fn joint_state(&self, h: &JointHandle, axis: PxArticulationAxis) -> (f64, f64) {
        // SAFETY: the joint belongs to this simulation's scene.
        unsafe {
            (
                f64::from(PxArticulationJointReducedCoordinate_getJointPosition(
                    h.joint, axis,
                )),
                f64::from(PxArticulationJointReducedCoordinate_getJointVelocity(
                    h.joint, axis,
                )),
            )
        }
    }

    fn owner(&self) -> crate::StateOwner {
        crate::StateOwner {
            engine: EngineKind::Physx,
            format: STATE_FORMAT,
            scene_fingerprint: self.fingerprint,
        }
    }
}

impl Drop for PhysxSimulation {
    fn drop(&mut self) {
        let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: everything released here was created by this simulation and is
        // released once; the scene goes first so nothing refers to the actors.
        unsafe {
            for &art in &self.articulations {
                PxScene_removeArticulation_mut(self.scene, art, true);
                PxArticulationReducedCoordinate_release_mut(art);
            }
            for &actor in &self.actors {
                PxActor_release_mut(actor);
            }
            PxScene_release_mut(self.scene);
            PxDefaultCpuDispatcher_release_mut(self.dispatcher);
            for &m in &self.materials {
                PxRefCounted_release_mut(m.cast());
            }
        }
    }
}

impl Simulation for PhysxSimulation {
    fn kind(&self) -> EngineKind {
        EngineKind::Physx
    }

    fn step(&mut self) -> Result<(), EngineError> {
        if let Some(reason) = &self.diverged {
            return Err(EngineError::Diverged(format!(
                "simulation diverged earlier: {reason}"
            )));
        }
        let dt = (self.options.step_dt / f64::from(self.options.substeps)) as f32;
        for _ in 0..self.options.substeps {
            self.apply_efforts();
            // SAFETY: the scene is this simulation's; simulate then fetch, blocking.
            let ok = unsafe {
                PxScene_simulate_mut(self.scene, dt, null_mut(), null_mut(), 0, true) && {
                    let mut error = 0u32;
                    PxScene_fetchResults_mut(self.scene, true, &mut error) && error == 0
                }
            };
            if !ok {
                return Err(failed("a simulation step failed"));
            }
        }
        for (path, actor) in &self.bodies {
            if self.body_state(*actor).iter().any(|v| !v.is_finite()) {
                let reason = format!("{path} is no longer finite");
                self.diverged = Some(reason.clone());
                return Err(EngineError::Diverged(reason));
            }
        }
        self.step += 1;
        self.time += self.options.step_dt;
        Ok(())
    }

    fn set_joint_command(
        &mut self,
        joint_path: &str,
        cmd: JointCommand,
    ) -> Result<(), EngineError> {
        let value = cmd.finite_value(joint_path)?;
        if value.abs() > f64::from(f32::MAX) {
            return Err(EngineError::Invalid {
                field: format!("command to {joint_path}"),
                message: format!("{value} does not fit PhysX's f32"),
            });
        }
        let j = self
            .joints
            .iter()
            .position(|h| h.path == joint_path)
            .ok_or_else(|| EngineError::UnknownPath {
                what: "commandable joint",
                path: joint_path.to_string(),
            })?;
        if self.joints[j].ball.is_some() {
            return Err(EngineError::not_single_axis(
                format!("command to {joint_path}"),
                JointKind::Spherical,
                "commands",
            ));
        }
        self.apply_command(j, cmd);
        self.commands[j] = Some(cmd);
        Ok(())
    }

    fn observation(&self, path: &str) -> Result<Observation, EngineError> {
        let all = path == "/" || path.is_empty();
        let bodies: Vec<BodyObservation> = self
            .bodies
            .iter()
            .filter(|(p, _)| all || p == path)
            .map(|(p, a)| {
                let s = self.body_state(*a);
                BodyObservation {
                    path: p.clone(),
                    position: [s[0], s[1], s[2]],
                    orientation: [s[3], s[4], s[5], s[6]],
                    linear_velocity: [s[7], s[8], s[9]],
                    angular_velocity: [s[10], s[11], s[12]],
                }
            })
            .collect();
        let joints: Vec<JointObservation> = self
            .joints
            .iter()
            .filter(|h| all || h.path == path)
            .map(|h| match &h.ball {
                Some((frame0, frame1)) => {
                    let turn = |body: *mut PxRigidBody| {
                        let s = self.body_state(Actor::Link(body.cast()));
                        ([s[3], s[4], s[5], s[6]], [s[10], s[11], s[12]])
                    };
                    JointObservation::spherical(
                        &h.path,
                        crate::tree::spherical_state(
                            Some(turn(h.parent)),
                            turn(h.child),
                            frame0,
                            frame1,
                        ),
                    )
                }
                None => {
                    let (position, velocity) = self.joint_state(h, h.axis);
                    JointObservation::single_axis(&h.path, position, velocity)
                }
            })
            .collect();
        if !all && bodies.is_empty() && joints.is_empty() {
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

    fn state(&self) -> Result<SimState, EngineError> {
        let payload = Payload {
            time: self.time,
            step: self.step,
            bodies: self
                .bodies
                .iter()
                .map(|(_, a)| self.body_state(*a))
                .collect(),
            joints: self
                .joints
                .iter()
                .flat_map(|h| h.state_axes().iter().map(|&axis| self.joint_state(h, axis)))
                .collect(),
            commands: self
                .commands
                .iter()
                .map(|c| {
                    c.map(|c| match c {
                        JointCommand::Position(v) => (0, v),
                        JointCommand::Velocity(v) => (1, v),
                        JointCommand::Effort(v) => (2, v),
                    })
                })
                .collect(),
            diverged: self.diverged.clone(),
        };
        let encoded = bincode::serde::encode_to_vec(&payload, bincode::config::standard())
            .map_err(|e| EngineError::StateMismatch(format!("cannot encode the state: {e}")))?;
        Ok(SimState::seal(self.owner(), self.time, self.step, &encoded))
    }

    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError> {
        let body = state.open(&self.owner())?;
        let (payload, _): (Payload, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| EngineError::StateMismatch(format!("cannot decode the state: {e}")))?;
        if payload.bodies.len() != self.bodies.len()
            || payload.joints.len()
                != self
                    .joints
                    .iter()
                    .map(|h| h.state_axes().len())
                    .sum::<usize>()
            || payload.commands.len() != self.joints.len()
        {
            return Err(EngineError::StateMismatch(
                "the state was taken from a different scene".into(),
            ));
        }
        if payload
            .bodies
            .iter()
            .flatten()
            .chain(payload.joints.iter().flat_map(|(a, b)| [a, b]))
            .any(|v| !v.is_finite())
        {
            return Err(EngineError::StateMismatch("the state is not finite".into()));
        }
        let commands = payload
            .commands
            .iter()
            .map(|c| match c {
                None => Ok(None),
                Some((0, v)) => Ok(Some(JointCommand::Position(*v))),
                Some((1, v)) => Ok(Some(JointCommand::Velocity(*v))),
                Some((2, v)) => Ok(Some(JointCommand::Effort(*v))),
                Some((m, _)) => Err(EngineError::StateMismatch(format!(
                    "unknown command mode {m}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pose = |s: &[f64; 13]| Pose {
            translation: [s[0], s[1], s[2]],
            rotation: [s[3], s[4], s[5], s[6]],
        };
        // SAFETY: every actor, articulation and joint belongs to this scene.
        unsafe {
            for ((_, actor), s) in self.bodies.iter().zip(&payload.bodies) {
                if let Actor::Dynamic(d) = actor {
                    PxRigidActor_setGlobalPose_mut(d.cast(), &transform(&pose(s)), true);
                    PxRigidDynamic_setLinearVelocity_mut(*d, &v3([s[7], s[8], s[9]]), true);
                    PxRigidDynamic_setAngularVelocity_mut(*d, &v3([s[10], s[11], s[12]]), true);
                }
            }
            for &(art, b) in &self.roots {
                let s = &payload.bodies[b];
                PxArticulationReducedCoordinate_setRootGlobalPose_mut(
                    art,
                    &transform(&pose(s)),
                    true,
                );
                PxArticulationReducedCoordinate_setRootLinearVelocity_mut(
                    art,
                    &v3([s[7], s[8], s[9]]),
                    true,
                );
                PxArticulationReducedCoordinate_setRootAngularVelocity_mut(
                    art,
                    &v3([s[10], s[11], s[12]]),
                    true,
                );
            }
            let axes = self
                .joints
                .iter()
                .flat_map(|h| h.state_axes().iter().map(move |&axis| (h.joint, axis)));
            for ((joint, axis), (q, qd)) in axes.zip(&payload.joints) {
                PxArticulationJointReducedCoordinate_setJointPosition_mut(joint, axis, *q as f32);
                PxArticulationJointReducedCoordinate_setJointVelocity_mut(joint, axis, *qd as f32);
            }
            for &art in &self.articulations {
                PxArticulationReducedCoordinate_updateKinematic_mut(
                    art,
                    PxArticulationKinematicFlags::Position | PxArticulationKinematicFlags::Velocity,
                );
            }
        }
        for (j, cmd) in commands.iter().enumerate() {
            if let Some(cmd) = cmd {
                self.apply_command(j, *cmd);
            }
        }
        self.commands = commands;
        self.time = payload.time;
        self.step = payload.step;
        self.diverged = payload.diverged;
        Ok(())
    }

    fn render(&self, camera_path: &str, params: &RenderParams) -> Result<Image, EngineError> {
        let view = View::new(&self.cameras, camera_path, params)?;
        let mut depth = Vec::with_capacity(view.pixels());
        let mut instance_id = Vec::with_capacity(view.pixels());
        // SAFETY: the scene is this simulation's; the hit is only read when
        // PhysX reports one.
        unsafe {
            let filter = PxQueryFilterData_new();
            let origin = v3(view.eye);
            for row in 0..view.height {
                for col in 0..view.width {
                    let dir = v3(view.ray(row, col));
                    let mut hit = std::mem::MaybeUninit::<PxRaycastHit>::uninit();
                    let found = PxSceneQueryExt_raycastSingle(
                        self.scene,
                        &origin,
                        &dir,
                        view.max_depth as f32,
                        PxHitFlags::Default,
                        hit.as_mut_ptr(),
                        &filter,
                        null_mut(),
                        null_mut(),
                    );
                    if found {
                        let hit = hit.assume_init();
                        depth.push(hit.distance);
                        instance_id.push(
                            self.instance
                                .get(&(hit.actor as usize))
                                .copied()
                                .unwrap_or(u32::MAX),
                        );
                    } else {
                        depth.push(view.max_depth as f32);
                        instance_id.push(u32::MAX);
                    }
                }
            }
        }
        Ok(Image {
            width: view.width,
            height: view.height,
            depth,
            instance_id,
            instance_paths: self.bodies.iter().map(|(p, _)| p.clone()).collect(),
        })
    }

    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError> {
        // PhysX cannot copy a scene: build the same scene again and load this
        // simulation's state into it.
        let mut fork = PhysxSimulation::load(&self.scene_model, &self.config)?;
        fork.set_state(&self.state()?)?;
        Ok(Box::new(fork))
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

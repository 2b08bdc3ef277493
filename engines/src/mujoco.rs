//! The MuJoCo engine (MuJoCo 3.17 through mujoco-rs).
//!
//! Two kinds of scene load here:
//! - a USD scene model, written out as MJCF ([`scene_to_mjcf`]): bodies become a
//!   kinematic tree along their joints, colliders become geoms, and every revolute
//!   or prismatic joint gets one actuator that plays the role of the USD drive;
//! - an MJCF model read whole ([`crate::scene::NativeScene`]), with its own
//!   bodies, joints and actuators (Gymnasium's ant.xml and humanoid.xml, say).
//!
//! State, forks and checkpoints use MuJoCo's own `mj_getState`/`mj_setState` with
//! `mjSTATE_INTEGRATION`, which holds everything a step reads (warm start
//! included), so a fork continues bit for bit.

pub mod drawing;

use crate::camera::View;
use crate::findings::{Finding, Support};
use crate::geometry::{quat_conj, quat_mul, quat_rotate};
use crate::scene::{Axis, BodyKind, JointKind, NativeFormat, Pose, SceneModel, Shape};
use crate::tree::{
    Tree, authored_coordinate, checked_pose, compose, joint_zero, non_negative, positive, relative,
    unit,
};
use crate::{
    BodyObservation, Engine, EngineCapabilities, EngineConfig, EngineError, EngineKind, Image,
    JointCommand, JointObservation, Observation, RenderParams, SimState, Simulation,
};
use mujoco_rs::mujoco_c as c;
use mujoco_rs::prelude::{MjData, MjModel, MjtObjBase};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Version of the `data` layout in MuJoCo's [`SimState`]s.
pub const STATE_FORMAT: u32 = 1;

/// Gains of the drive that joints without a USD drive get when commanded
/// (acceleration-based, as in rapier3d: 1/s² and 1/s, times the joint's
/// effective inertia).
const DEFAULT_DRIVE_STIFFNESS: f64 = 400.0;
const DEFAULT_DRIVE_DAMPING: f64 = 40.0;

/// What MJCF limits and ranges use for "unbounded".
const UNBOUNDED: f64 = 1.0e6;

/// Largest decoded state accepted, so that a corrupt length cannot ask for more.
const MAX_STATE_BYTES: usize = 1 << 30;

/// The keys of `engine.config.extensions` that MuJoCo reads.
pub const EXTENSION_KEYS: [&str; 7] = [
    "integrator",
    "solver",
    "cone",
    "tolerance",
    "noslip_iterations",
    "impratio",
    "mjcf",
];

/// The MuJoCo engine.
pub struct MujocoEngine;

impl Engine for MujocoEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Mujoco
    }

    fn capabilities(&self) -> EngineCapabilities {
        EngineCapabilities {
            ray_tracing: false,
            // Flexes (cloth, soft bodies) load from MJCF models.
            soft_body: true,
            fluid: false,
            max_step_hz: 100_000,
            gpu_required: false,
            ros_bridge: false,
            parallel_envs: 1,
            // mjSTATE_INTEGRATION holds everything a step reads; tests/mujoco_engine.rs
            // compares forks and restores with f64::to_bits.
            bitwise_restore: true,
            render_outputs: vec!["depth".to_string(), "instance_id".to_string()],
        }
    }

    fn findings(&self, scene: &SceneModel) -> Vec<Finding> {
        let mut out = match crate::findings::tree_findings(scene, EngineKind::Mujoco) {
            crate::findings::TreeFindings::Native(f) => return f,
            crate::findings::TreeFindings::Scene(f) => f,
        };
        for f in out.iter_mut().filter(|f| f.support != Support::Unsupported) {
            if f.feature.starts_with("joint: spherical") && f.feature.contains("cone") {
                f.approximate(
                    "MuJoCo limits a ball joint's whole turn, twist included, to one angle (the cone's wider side), and softly where the child turns easily about the cone's axis",
                );
                continue;
            }
            let Some((body, collider)) = crate::findings::collider_of(scene, f) else {
                if let Some(body) = scene.bodies.iter().find(|b| b.path == f.prim)
                    && body.kind == BodyKind::Kinematic
                {
                    f.approximate(
                        "a mocap body: it holds its pose, and moves only when its pose is set",
                    );
                }
                continue;
            };
            let note = match &collider.shape {
                Shape::TriMesh { .. } => {
                    Some("MuJoCo collides with the convex hull of a mesh".to_string())
                }
                Shape::ConvexDecomposition { .. } => {
                    Some("MuJoCo collides with one convex hull of the whole mesh".to_string())
                }
                Shape::Plane { .. } if body.kind != BodyKind::Static => {
                    f.support = Support::Unsupported;
                    f.note = Some("MuJoCo planes must be static".to_string());
                    continue;
                }
                _ if collider.material.restitution > 0.0 => Some(
                    "MuJoCo contacts have no restitution coefficient; bounces come from the contact softness"
                        .to_string(),
                ),
                _ if (collider.material.static_friction - collider.material.dynamic_friction)
                    .abs()
                    > 1e-12 =>
                {
                    Some("MuJoCo has one sliding friction; the dynamic friction is used".to_string())
                }
                _ => None,
            };
            if let Some(note) = note {
                f.approximate(note);
            }
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
        crate::findings::refuse_foreign_native(scene, EngineKind::Mujoco)?;
        Ok(Box::new(MujocoSimulation::load(scene, config)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Options: engine.config, with MuJoCo's extensions.
// ---------------------------------------------------------------------------------------------

/// `engine.config` as MuJoCo takes it.
#[derive(Debug, Clone)]
struct Options {
    substeps: u32,
    step_dt: f64,
    gravity: Option<[f64; 3]>,
    iterations: Option<u32>,
    integrator: Option<i32>,
    solver: Option<i32>,
    cone: Option<i32>,
    tolerance: Option<f64>,
    noslip_iterations: Option<u32>,
    impratio: Option<f64>,
    /// MJCF elements added to a model written from USD (tendons, actuators,
    /// sensors, equality constraints).
    mjcf: Option<String>,
}

impl Options {
    fn read(config: &EngineConfig) -> Result<Options, EngineError> {
        let field = |key: &str| format!("engine.config.extensions.{key}");
        let bad = |key: &str, message: String| EngineError::Invalid {
            field: field(key),
            message,
        };
        if !(config.step_hz.is_finite() && config.step_hz > 0.0) {
            return Err(EngineError::Invalid {
                field: "engine.config.step_hz".into(),
                message: "must be a positive number".into(),
            });
        }
        let substeps = config.substeps.max(1);
        let mut options = Options {
            substeps,
            step_dt: config.dt(),
            gravity: config.gravity,
            iterations: config.solver_iterations,
            integrator: None,
            solver: None,
            cone: None,
            tolerance: None,
            noslip_iterations: None,
            impratio: None,
            mjcf: None,
        };
        let choice = |key: &str, value: &serde_json::Value, names: &[&str]| {
            let name = value.as_str().unwrap_or_default();
            names
                .iter()
                .position(|n| *n == name)
                .map(|i| i as i32)
                .ok_or_else(|| bad(key, format!("must be one of {}", names.join(", "))))
        };
        let number = |key: &str, value: &serde_json::Value| {
            value
                .as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad(key, "must be a non-negative number".into()))
        };
        let count = |key: &str, value: &serde_json::Value| {
            value
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(key, "must be a whole number".into()))
        };
        for (key, value) in &config.extensions {
            match key.as_str() {
                // The order of MuJoCo's mjtIntegrator, mjtSolver and mjtCone.
                "integrator" => {
                    options.integrator = Some(choice(
                        key,
                        value,
                        &["euler", "rk4", "implicit", "implicitfast"],
                    )?)
                }
                "solver" => options.solver = Some(choice(key, value, &["pgs", "cg", "newton"])?),
                "cone" => options.cone = Some(choice(key, value, &["pyramidal", "elliptic"])?),
                "tolerance" => options.tolerance = Some(number(key, value)?),
                "noslip_iterations" => options.noslip_iterations = Some(count(key, value)?),
                "impratio" => {
                    let v = number(key, value)?;
                    if v <= 0.0 {
                        return Err(bad(key, "must be positive".into()));
                    }
                    options.impratio = Some(v);
                }
                "mjcf" => {
                    options.mjcf = Some(
                        value
                            .as_str()
                            .ok_or_else(|| bad(key, "must be MJCF text".into()))?
                            .to_string(),
                    )
                }
                _ => {
                    return Err(bad(
                        key,
                        format!(
                            "mujoco does not read this setting; it reads {}",
                            EXTENSION_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(options)
    }

    /// Writes the options into a compiled model.
    fn apply(&self, model: &mut MjModel) {
        let opt = model.opt_mut();
        opt.timestep = self.step_dt / f64::from(self.substeps);
        if let Some(g) = self.gravity {
            opt.gravity = g;
        }
        if let Some(i) = self.iterations {
            opt.iterations = i.min(i32::MAX as u32) as i32;
        }
        if let Some(i) = self.integrator {
            opt.integrator = i;
        }
        if let Some(s) = self.solver {
            opt.solver = s;
        }
        if let Some(cone) = self.cone {
            opt.cone = cone;
        }
        if let Some(t) = self.tolerance {
            opt.tolerance = t;
        }
        if let Some(n) = self.noslip_iterations {
            opt.noslip_iterations = n.min(i32::MAX as u32) as i32;
        }
        if let Some(r) = self.impratio {
            opt.impratio = r;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// USD scene model → MJCF.
// ---------------------------------------------------------------------------------------------

/// The MJCF text of a USD scene model, and the initial joint coordinates that
/// reproduce the authored body poses.
struct Written {
    xml: String,
    /// `(joint path, coordinate)` for joints authored away from their zero.
    initial_coordinates: Vec<(String, f64)>,
}

fn scene_to_mjcf(scene: &SceneModel, options: &Options) -> Result<Written, EngineError> {
    let tree = Tree::plan(scene)?;
    let mut w = Writer {
        scene,
        tree: &tree,
        assets: String::new(),
        body: String::new(),
        meshes: 0,
        initial_coordinates: Vec::new(),
    };
    for &root in &tree.roots {
        w.body(root, &Pose::IDENTITY, 2)?;
    }
    let mut xml = String::new();
    let g = scene.default_gravity();
    let _ = writeln!(xml, "<mujoco model=\"{}\">", attr(&scene.source));
    // Angles in radians; MuJoCo computes inertia from geoms where none is given.
    let _ = writeln!(
        xml,
        "  <compiler angle=\"radian\" autolimits=\"true\" inertiafromgeom=\"auto\"/>"
    );
    // implicitfast treats drive damping implicitly, as the joint motors of other
    // engines do; engine.config.extensions.integrator overrides it.
    let _ = writeln!(
        xml,
        "  <option integrator=\"implicitfast\" gravity=\"{}\"/>",
        nums(&g)
    );
    if !w.assets.is_empty() {
        let _ = writeln!(xml, "  <asset>\n{}  </asset>", w.assets);
    }
    let _ = writeln!(xml, "  <worldbody>\n{}  </worldbody>", w.body);
    let excludes = collision_excludes(scene);
    if !excludes.is_empty() {
        let _ = writeln!(xml, "  <contact>");
        for (a, b) in excludes {
            let _ = writeln!(
                xml,
                "    <exclude body1=\"{}\" body2=\"{}\"/>",
                attr(a),
                attr(b)
            );
        }
        let _ = writeln!(xml, "  </contact>");
    }
    let mut actuators = String::new();
    for joint in &scene.joints {
        if !joint.kind.is_single_axis() {
            continue;
        }
        // Gains and bias start at zero (a passive joint); the simulation sets them
        // from the USD drive or a command. The force range is the drive's limit.
        let range = joint
            .drive
            .and_then(|d| d.max_force)
            .map(|f| format!(" forcerange=\"{} {}\"", -f, f))
            .unwrap_or_default();
        let _ = writeln!(
            actuators,
            "    <general name=\"{}\" joint=\"{}\" gaintype=\"fixed\" biastype=\"affine\" gainprm=\"0\" biasprm=\"0 0 0\"{range}/>",
            attr(&joint.path),
            attr(&joint.path)
        );
    }
    if !actuators.is_empty() {
        let _ = writeln!(xml, "  <actuator>\n{actuators}  </actuator>");
    }
    if let Some(extra) = &options.mjcf {
        xml.push_str(extra);
        xml.push('\n');
    }
    xml.push_str("</mujoco>\n");
    Ok(Written {
        xml,
        initial_coordinates: w.initial_coordinates,
    })
}

struct Writer<'a> {
    scene: &'a SceneModel,
    tree: &'a Tree,
    assets: String,
    body: String,
    meshes: usize,
    initial_coordinates: Vec<(String, f64)>,
}

impl Writer<'_> {
    /// Writes body `b` and its subtree, placed in its parent whose world pose
    /// is `parent_world`.
    fn body(&mut self, b: usize, parent_world: &Pose, depth: usize) -> Result<(), EngineError> {
        let body = &self.scene.bodies[b];
        let pad = "  ".repeat(depth);
        let path = body.path.as_str();
        let world = checked_pose(path, &body.pose)?;
        // Where the body sits in its parent when its joint is at zero; a body
        // authored away from zero starts with that joint coordinate.
        let (local, joint) = match self.tree.parent_joint[b] {
            None => (relative(parent_world, &world), None),
            Some(j) => {
                let joint = &self.scene.joints[j];
                let f0 = checked_pose(&joint.path, &joint.local_pose0)?;
                let f1 = checked_pose(&joint.path, &joint.local_pose1)?;
                let zero = joint_zero(joint.kind, parent_world, &f0, &world, &f1);
                let coordinate =
                    authored_coordinate(joint.kind, joint.axis, parent_world, &f0, &world, &f1);
                if coordinate.abs() > 1e-12 {
                    self.initial_coordinates
                        .push((joint.path.clone(), coordinate));
                }
                (zero, Some((joint, f1)))
            }
        };
        let world_zero = compose(parent_world, &local);
        let mocap = if body.kind == BodyKind::Kinematic {
            " mocap=\"true\""
        } else {
            ""
        };
        let _ = writeln!(
            self.body,
            "{pad}<body name=\"{}\" pos=\"{}\" quat=\"{}\"{mocap}>",
            attr(path),
            nums(&local.translation),
            wxyz(local.rotation)
        );
        match joint {
            Some((joint, f1)) => self.joint(joint, &f1, &pad)?,
            None if body.kind == BodyKind::Dynamic => {
                let _ = writeln!(self.body, "{pad}  <freejoint name=\"{}\"/>", attr(path));
            }
            None => {}
        }
        if let (Some(mass), Some(inertia)) = (body.mass.mass, body.mass.diagonal_inertia) {
            let com = body.mass.center_of_mass.unwrap_or([0.0; 3]);
            let axes = body.mass.principal_axes.unwrap_or([0.0, 0.0, 0.0, 1.0]);
            let _ = writeln!(
                self.body,
                "{pad}  <inertial pos=\"{}\" quat=\"{}\" mass=\"{}\" diaginertia=\"{}\"/>",
                nums(&com),
                wxyz(unit(path, axes)?),
                positive(path, "mass", mass)?,
                nums(&inertia)
            );
        }
        for collider in &body.colliders {
            self.geom(body, collider, &pad)?;
        }
        for &child in &self.tree.children[b] {
            self.body(child, &world_zero, depth + 1)?;
        }
        let _ = writeln!(self.body, "{pad}</body>");
        Ok(())
    }

    fn joint(
        &mut self,
        joint: &crate::scene::Joint,
        frame: &Pose,
        pad: &str,
    ) -> Result<(), EngineError> {
        let kind = match joint.kind {
            JointKind::Revolute => "hinge",
            JointKind::Prismatic => "slide",
            JointKind::Spherical => {
                // MuJoCo limits a ball's whole turn: the wider side of the cone.
                let range = joint
                    .cone()?
                    .map(|[a, b]| format!(" range=\"0 {}\"", a.max(b)))
                    .unwrap_or_default();
                let _ = writeln!(
                    self.body,
                    "{pad}  <joint name=\"{}\" type=\"ball\" pos=\"{}\"{range}/>",
                    attr(&joint.path),
                    nums(&frame.translation),
                );
                return Ok(());
            }
            JointKind::Fixed => return Ok(()),
        };
        let axis = quat_rotate(frame.rotation, joint.axis.unit());
        let mut extra = String::new();
        if let Some((lo, hi)) = joint.limits {
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(EngineError::ScenePrim {
                    prim: joint.path.clone(),
                    message: format!("bad limits [{lo}, {hi}]"),
                });
            }
            if lo.is_finite() || hi.is_finite() {
                let _ = write!(
                    extra,
                    " range=\"{} {}\"",
                    lo.clamp(-UNBOUNDED, UNBOUNDED),
                    hi.clamp(-UNBOUNDED, UNBOUNDED)
                );
            }
        }
        let _ = writeln!(
            self.body,
            "{pad}  <joint name=\"{}\" type=\"{kind}\" pos=\"{}\" axis=\"{}\"{extra}/>",
            attr(&joint.path),
            nums(&frame.translation),
            nums(&axis)
        );
        Ok(())
    }

    fn geom(
        &mut self,
        body: &crate::scene::Body,
        collider: &crate::scene::Collider,
        pad: &str,
    ) -> Result<(), EngineError> {
        let path = collider.path.as_str();
        let pose = checked_pose(path, &collider.local_pose)?;
        let along = |axis: Axis| quat_mul(pose.rotation, z_to(axis));
        let mut rotation = pose.rotation;
        let shape = match &collider.shape {
            Shape::Cuboid { half_extents } => {
                format!("type=\"box\" size=\"{}\"", nums(half_extents))
            }
            Shape::Sphere { radius } => format!("type=\"sphere\" size=\"{radius}\""),
            Shape::Capsule {
                radius,
                half_height,
                axis,
            } => {
                rotation = along(*axis);
                format!("type=\"capsule\" size=\"{radius} {half_height}\"")
            }
            Shape::Cylinder {
                radius,
                half_height,
                axis,
            } => {
                rotation = along(*axis);
                format!("type=\"cylinder\" size=\"{radius} {half_height}\"")
            }
            Shape::Plane { axis } => {
                if body.kind != BodyKind::Static {
                    return Err(EngineError::ScenePrim {
                        prim: path.to_string(),
                        message: "MuJoCo planes must be static".into(),
                    });
                }
                rotation = along(*axis);
                "type=\"plane\" size=\"0 0 1\"".to_string()
            }
            Shape::TriMesh {
                vertices,
                triangles,
            }
            | Shape::ConvexDecomposition {
                vertices,
                triangles,
            } => {
                let name = self.mesh(vertices, Some(triangles));
                format!("type=\"mesh\" mesh=\"{name}\"")
            }
            Shape::ConvexHull { points } => {
                let name = self.mesh(points, None);
                format!("type=\"mesh\" mesh=\"{name}\"")
            }
        };
        let m = &collider.material;
        let mut extra = format!(" friction=\"{} 0.005 0.0001\"", m.dynamic_friction.max(0.0));
        // Frictionless: MuJoCo's pyramid of a zero friction is degenerate (a
        // box on a frictionless belt was flung up at 258 m/s); a contact with
        // no friction has one dimension. A pair takes the larger condim, so a
        // frictional partner still gets its friction.
        if m.dynamic_friction <= 0.0 {
            extra.push_str(" condim=\"1\"");
        }
        // Mass as the USD reader gives it: the collider's own mass, its density,
        // or the body's density (MuJoCo's default density is USD's 1000 kg/m³).
        if let Some(mass) = collider.mass {
            let _ = write!(extra, " mass=\"{}\"", positive(path, "mass", mass)?);
        } else if let Some(d) = collider.density.or(body.mass.density) {
            let _ = write!(extra, " density=\"{}\"", positive(path, "density", d)?);
        }
        let _ = writeln!(
            self.body,
            "{pad}  <geom name=\"{}\" {shape} pos=\"{}\" quat=\"{}\"{extra}/>",
            attr(path),
            nums(&pose.translation),
            wxyz(rotation)
        );
        Ok(())
    }

    fn mesh(&mut self, vertices: &[[f64; 3]], triangles: Option<&[[u32; 3]]>) -> String {
        let name = format!("mesh{}", self.meshes);
        self.meshes += 1;
        let flat: Vec<f64> = vertices.iter().flatten().copied().collect();
        let _ = write!(
            self.assets,
            "    <mesh name=\"{name}\" vertex=\"{}\"",
            nums(&flat)
        );
        if let Some(t) = triangles {
            let faces: Vec<String> = t.iter().flatten().map(|i| i.to_string()).collect();
            let _ = write!(self.assets, " face=\"{}\"", faces.join(" "));
        }
        self.assets.push_str("/>\n");
        name
    }
}

/// Body pairs that never touch because of USD collision groups: MuJoCo excludes
/// contacts per body pair.
fn collision_excludes(scene: &SceneModel) -> Vec<(&str, &str)> {
    if scene.collision_groups.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, a) in scene.bodies.iter().enumerate() {
        for b in &scene.bodies[i + 1..] {
            if !a.colliders.is_empty()
                && !b.colliders.is_empty()
                && crate::tree::never_touch(scene, a, b)
            {
                out.push((a.path.as_str(), b.path.as_str()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

/// How a command reaches the model.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// A USD joint's actuator, whose gains this adapter sets per command mode.
    Drive {
        actuator: usize,
        drive: Option<crate::scene::Drive>,
        /// Effective inertia of the joint, scaling the default drive's gains.
        inertia: f64,
    },
    /// An actuator of the model itself (MJCF, or added through `mjcf`): the
    /// command's value is its control input.
    Actuator { actuator: usize, kind: ActuatorKind },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActuatorKind {
    Motor,
    Position,
    Velocity,
    General,
}

impl ActuatorKind {
    fn accepts(self, cmd: JointCommand) -> bool {
        matches!(
            (self, cmd),
            (ActuatorKind::General, _)
                | (ActuatorKind::Motor, JointCommand::Effort(_))
                | (ActuatorKind::Position, JointCommand::Position(_))
                | (ActuatorKind::Velocity, JointCommand::Velocity(_))
        )
    }

    fn mode(self) -> &'static str {
        match self {
            ActuatorKind::Motor => "effort",
            ActuatorKind::Position => "position",
            ActuatorKind::Velocity => "velocity",
            ActuatorKind::General => "any",
        }
    }
}

struct CommandTarget {
    path: String,
    control: Control,
}

struct JointEntry {
    path: String,
    qposadr: usize,
    dofadr: usize,
    /// A ball joint's bodies and frames, which its rotation is read from.
    ball: Option<BallJoint>,
}

struct BallJoint {
    /// The parent body's id; `None` is the world.
    parent: Option<usize>,
    child: usize,
    frame0: Pose,
    frame1: Pose,
}

/// What a load derives and never changes: shared by forks.
struct Layout {
    fingerprint: u64,
    /// Observed bodies: path and MuJoCo body id.
    bodies: Vec<(String, usize)>,
    joints: Vec<JointEntry>,
    targets: Vec<CommandTarget>,
    /// Command target by path (joint paths of single-actuator joints included).
    target_index: HashMap<String, usize>,
    cameras: Vec<crate::scene::Camera>,
    /// Named MJCF cameras: path and camera id.
    model_cameras: Vec<(String, usize)>,
    /// Per geom, the index in `instance_paths` of the body it belongs to.
    geom_instance: Vec<u32>,
    instance_paths: Vec<String>,
    substeps: u32,
    step_dt: f64,
    state_size: usize,
}

/// One MuJoCo simulation: its own model (drive gains live in the model, and
/// change with command modes) and data.
pub struct MujocoSimulation {
    layout: Arc<Layout>,
    data: MjData<Box<MjModel>>,
    commands: Vec<Option<JointCommand>>,
    time: f64,
    step: u64,
    diverged: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    time: f64,
    step: u64,
    /// Commands as (mode, value): 0 position, 1 velocity, 2 effort (bincode
    /// cannot carry JointCommand's tagged form).
    commands: Vec<Option<(u8, f64)>>,
    diverged: Option<String>,
    /// `mj_getState(mjSTATE_INTEGRATION)`.
    state: Vec<f64>,
}

fn load_error(e: impl std::fmt::Display, file: &str) -> EngineError {
    EngineError::SceneRead {
        file: file.to_string(),
        message: format!("MuJoCo could not load the model: {e}"),
    }
}

impl MujocoSimulation {
    pub fn load(scene: &SceneModel, config: &EngineConfig) -> Result<Self, EngineError> {
        let options = Options::read(config)?;
        let (mut model, initial) = match &scene.native {
            Some(native) if native.format == NativeFormat::Mjcf => {
                if options.mjcf.is_some() {
                    return Err(EngineError::Invalid {
                        field: "engine.config.extensions.mjcf".into(),
                        message: "adds to models written from USD; edit the MJCF file itself"
                            .into(),
                    });
                }
                // From the file, so that its includes and meshes resolve next to it.
                let model =
                    MjModel::from_xml(&native.path).map_err(|e| load_error(e, &native.path))?;
                (model, Vec::new())
            }
            _ => {
                let written = scene_to_mjcf(scene, &options)?;
                let model = MjModel::from_xml_string(&written.xml)
                    .map_err(|e| load_error(e, &scene.source))?;
                (model, written.initial_coordinates)
            }
        };
        options.apply(&mut model);
        let native = scene.native.is_some();
        if !native {
            scale_masses(scene, &mut model)?;
        }
        let mut data = MjData::new(Box::new(model));
        if !native {
            // Derived constants (effective inertias among them) after mass changes.
            data.set_const();
        }
        let layout = Layout::new(scene, &data, &options, native)?;
        let mut sim = MujocoSimulation {
            commands: vec![None; layout.targets.len()],
            layout: Arc::new(layout),
            data,
            time: 0.0,
            step: 0,
            diverged: None,
        };
        if !native {
            sim.set_initial(scene, &initial)?;
        }
        sim.refresh();
        Ok(sim)
    }

    /// Authored joint coordinates, body velocities and USD drives.
    fn set_initial(
        &mut self,
        scene: &SceneModel,
        coordinates: &[(String, f64)],
    ) -> Result<(), EngineError> {
        let model = self.data.model().ffi();
        let qposadr = slice(model.jnt_qposadr, model.njnt);
        let dofadr = slice(model.jnt_dofadr, model.njnt);
        let mut qpos = Vec::new();
        let mut qvel = Vec::new();
        for (path, value) in coordinates {
            if let Some(id) = self.data.model().name_to_id(MjtObjBase::mjOBJ_JOINT, path) {
                qpos.push((qposadr[id] as usize, *value));
            }
        }
        for body in scene.bodies.iter().filter(|b| b.kind == BodyKind::Dynamic) {
            let Some(id) = self
                .data
                .model()
                .name_to_id(MjtObjBase::mjOBJ_JOINT, &body.path)
            else {
                continue;
            };
            // A free joint's velocity: linear in the world frame, angular in the body's.
            let dof = dofadr[id] as usize;
            let local_w = quat_rotate(quat_conj(body.pose.rotation), body.angular_velocity);
            for (k, (v, w)) in body.linear_velocity.iter().zip(local_w).enumerate() {
                qvel.push((dof + k, *v));
                qvel.push((dof + 3 + k, w));
            }
        }
        {
            let q = self.data.qpos_mut();
            for (i, v) in qpos {
                q[i] = v;
            }
        }
        {
            let v = self.data.qvel_mut();
            for (i, x) in qvel {
                v[i] = x;
            }
        }
        for i in 0..self.layout.targets.len() {
            let Control::Drive {
                drive: Some(d),
                actuator,
                ..
            } = self.layout.targets[i].control
            else {
                continue;
            };
            let path = &self.layout.targets[i].path;
            let stiffness = non_negative(path, "drive stiffness", d.stiffness)?;
            let damping = non_negative(path, "drive damping", d.damping)?;
            let target = d.stiffness * d.target_position + d.damping * d.target_velocity;
            if !target.is_finite() {
                return Err(EngineError::ScenePrim {
                    prim: path.clone(),
                    message: "the drive's targets must be finite".into(),
                });
            }
            if stiffness > 0.0 || damping > 0.0 {
                self.set_drive(actuator, stiffness, target, damping, d.max_force);
            }
        }
        Ok(())
    }

    /// Sets a drive actuator to `force = bias − stiffness·q − damping·q̇`, limited
    /// to `max_force`. The gains live in the model (MuJoCo's affine bias), so
    /// MuJoCo's implicit integrators treat the damping implicitly.
    fn set_drive(
        &mut self,
        actuator: usize,
        stiffness: f64,
        bias: f64,
        damping: f64,
        max_force: Option<f64>,
    ) {
        // SAFETY: `actuator` is an id of this model (from Layout), and the arrays
        // are nu × mjNGAIN, nu × mjNBIAS and nu × 2 long. Nothing else holds the
        // model while a simulation method runs.
        unsafe {
            let m = self.data.model_mut().ffi_mut();
            *m.actuator_gainprm.add(actuator * NGAIN) = 0.0;
            let b = m.actuator_biasprm.add(actuator * NBIAS);
            *b = bias;
            *b.add(1) = -stiffness;
            *b.add(2) = -damping;
            let f = max_force.unwrap_or(f64::INFINITY);
            *m.actuator_forcerange.add(actuator * 2) = -f;
            *m.actuator_forcerange.add(actuator * 2 + 1) = f;
        }
    }

    /// Recomputes positions and velocities of bodies for observation (mj_step
    /// leaves them one step behind). Touches no state.
    fn refresh(&mut self) {
        self.data.kinematics();
        self.data.com_pos();
        self.data.com_vel();
    }

    fn apply_command(&mut self, index: usize, cmd: JointCommand) {
        match self.layout.targets[index].control {
            Control::Drive { .. } => self.configure_drive(index, cmd),
            Control::Actuator { actuator, .. } => {
                self.data.ctrl_mut()[actuator] = cmd.value();
            }
        }
    }

    /// Sets a USD joint's drive actuator for a command: force-based gains from
    /// the USD drive when it has the one the command needs, else the
    /// acceleration-based default drive.
    fn configure_drive(&mut self, index: usize, cmd: JointCommand) {
        let Control::Drive {
            actuator,
            drive,
            inertia,
        } = self.layout.targets[index].control
        else {
            return;
        };
        let gain = |g: Option<f64>, default: f64| match g {
            Some(g) if g > 0.0 => g,
            _ => default * inertia,
        };
        let max = drive.and_then(|d| d.max_force);
        match cmd {
            JointCommand::Position(p) => {
                let k = gain(drive.map(|d| d.stiffness), DEFAULT_DRIVE_STIFFNESS);
                let d = if drive.is_some_and(|d| d.stiffness > 0.0) {
                    drive.map_or(0.0, |d| d.damping)
                } else {
                    DEFAULT_DRIVE_DAMPING * inertia
                };
                self.set_drive(actuator, k, k * p, d, max);
            }
            JointCommand::Velocity(v) => {
                let d = gain(drive.map(|d| d.damping), DEFAULT_DRIVE_DAMPING);
                self.set_drive(actuator, 0.0, d * v, d, max);
            }
            // The effort bypasses the drive, and its limit.
            JointCommand::Effort(e) => self.set_drive(actuator, 0.0, e, 0.0, None),
        }
    }

    fn body_observation(&self, path: &str, id: usize) -> BodyObservation {
        let d = self.data.ffi();
        let m = self.data.model().ffi();
        let pos = vec3_at(d.xpos, id);
        let q = quat_at(d.xquat, id);
        let mut vel = [0.0; 6];
        // SAFETY: `id` is a body id of this model; derived quantities are current
        // (see `refresh`). res is [angular; linear] at the body origin, world frame.
        unsafe {
            c::mj_objectVelocity(m, d, MjtObjBase::mjOBJ_BODY as i32, id as i32, &mut vel, 0)
        };
        BodyObservation {
            path: path.to_string(),
            position: pos,
            orientation: q,
            linear_velocity: [vel[3], vel[4], vel[5]],
            angular_velocity: [vel[0], vel[1], vel[2]],
        }
    }

    fn joint_observation(&self, entry: &JointEntry) -> JointObservation {
        let d = self.data.ffi();
        // SAFETY: addresses come from the model's jnt_qposadr / jnt_dofadr.
        if let Some(ball) = &entry.ball {
            let turn = |id: usize| {
                let b = self.body_observation("", id);
                (b.orientation, b.angular_velocity)
            };
            let state = crate::tree::spherical_state(
                ball.parent.map(turn),
                turn(ball.child),
                &ball.frame0,
                &ball.frame1,
            );
            return JointObservation::spherical(&entry.path, state);
        }
        let (position, velocity) =
            unsafe { (*d.qpos.add(entry.qposadr), *d.qvel.add(entry.dofadr)) };
        JointObservation::single_axis(&entry.path, position, velocity)
    }

    fn bad_values(&self) -> Option<String> {
        let d = self.data.ffi();
        let warnings = [
            (c::mjtWarning::mjWARN_BADQPOS, "position"),
            (c::mjtWarning::mjWARN_BADQVEL, "velocity"),
            (c::mjtWarning::mjWARN_BADQACC, "acceleration"),
        ];
        warnings.into_iter().find_map(|(w, what)| {
            let stat = &d.warning[w as usize];
            (stat.number > 0).then(|| {
                format!(
                    "MuJoCo found a bad {what} (NaN, infinite or huge) at degree of freedom {}",
                    stat.lastinfo
                )
            })
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EngineError> {
        let mut state = vec![0.0; self.layout.state_size];
        self.data
            .try_read_state_into(c::mjtState::mjSTATE_INTEGRATION as u32, &mut state)
            .map_err(|e| EngineError::StateMismatch(format!("MuJoCo state: {e}")))?;
        let payload = Payload {
            time: self.time,
            step: self.step,
            commands: self
                .commands
                .iter()
                .map(|c| c.map(encode_command))
                .collect(),
            diverged: self.diverged.clone(),
            state,
        };
        bincode::serde::encode_to_vec(&payload, bincode::config::standard())
            .map_err(|e| EngineError::StateMismatch(format!("cannot encode the state: {e}")))
    }

    fn owner(&self) -> crate::StateOwner {
        crate::StateOwner {
            engine: EngineKind::Mujoco,
            format: STATE_FORMAT,
            scene_fingerprint: self.layout.fingerprint,
        }
    }

    fn restore(&mut self, payload: Payload) -> Result<(), EngineError> {
        if payload.commands.len() != self.layout.targets.len()
            || payload.state.len() != self.layout.state_size
        {
            return Err(EngineError::StateMismatch(
                "the state was taken from a different model".into(),
            ));
        }
        self.data
            .set_state(&payload.state, c::mjtState::mjSTATE_INTEGRATION as u32)
            .map_err(|e| EngineError::StateMismatch(format!("MuJoCo refused the state: {e}")))?;
        let commands = payload
            .commands
            .iter()
            .map(|c| c.map(decode_command).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        // Drive gains live in the model, not the state: set them from the
        // commands again (actuator controls came back with the state).
        for (i, cmd) in commands.iter().enumerate() {
            if let Some(cmd) = cmd {
                self.configure_drive(i, *cmd);
            }
        }
        self.commands = commands;
        self.time = payload.time;
        self.step = payload.step;
        self.diverged = payload.diverged;
        self.refresh();
        Ok(())
    }
}

fn encode_command(c: JointCommand) -> (u8, f64) {
    match c {
        JointCommand::Position(v) => (0, v),
        JointCommand::Velocity(v) => (1, v),
        JointCommand::Effort(v) => (2, v),
    }
}

fn decode_command((mode, v): (u8, f64)) -> Result<JointCommand, EngineError> {
    match mode {
        0 => Ok(JointCommand::Position(v)),
        1 => Ok(JointCommand::Velocity(v)),
        2 => Ok(JointCommand::Effort(v)),
        _ => Err(EngineError::StateMismatch(format!(
            "unknown command mode {mode}"
        ))),
    }
}

const NGAIN: usize = c::mjNGAIN as usize;
const NBIAS: usize = c::mjNBIAS as usize;

impl Layout {
    fn new(
        scene: &SceneModel,
        data: &MjData<Box<MjModel>>,
        options: &Options,
        native: bool,
    ) -> Result<Layout, EngineError> {
        let model = data.model();
        let m = model.ffi();
        let name = |kind: MjtObjBase, id: usize, fallback: &str| match model.id_to_name(kind, id) {
            Some(n) if !n.is_empty() => {
                if native && !n.starts_with('/') {
                    format!("/{n}")
                } else {
                    n.to_string()
                }
            }
            _ => format!("/{fallback}{id}"),
        };
        let bodies: Vec<(String, usize)> = if native {
            (1..m.nbody as usize)
                .map(|id| (name(MjtObjBase::mjOBJ_BODY, id, "body"), id))
                .collect()
        } else {
            scene
                .bodies
                .iter()
                .filter_map(|b| {
                    model
                        .name_to_id(MjtObjBase::mjOBJ_BODY, &b.path)
                        .map(|id| (b.path.clone(), id))
                })
                .collect()
        };
        let jnt_type = slice(m.jnt_type, m.njnt);
        let qposadr = slice(m.jnt_qposadr, m.njnt);
        let dofadr = slice(m.jnt_dofadr, m.njnt);
        let jnt_body = slice(m.jnt_bodyid, m.njnt);
        let body_parent = slice(m.body_parentid, m.nbody);
        let body_quat = slice(m.body_quat, m.nbody * 4);
        let spherical: HashMap<&str, &crate::scene::Joint> = scene
            .joints
            .iter()
            .filter(|j| j.kind == JointKind::Spherical)
            .map(|j| (j.path.as_str(), j))
            .collect();
        let joints: Vec<JointEntry> = (0..m.njnt as usize)
            .filter(|&id| {
                let t = jnt_type[id];
                t == c::mjtJoint::mjJNT_HINGE as i32
                    || t == c::mjtJoint::mjJNT_SLIDE as i32
                    || t == c::mjtJoint::mjJNT_BALL as i32
            })
            .map(|id| {
                let path = name(MjtObjBase::mjOBJ_JOINT, id, "joint");
                let ball = (jnt_type[id] == c::mjtJoint::mjJNT_BALL as i32).then(|| {
                    let child = jnt_body[id] as usize;
                    let parent = body_parent[child] as usize;
                    // A scene's joint frames; in a native model, the ball
                    // turns the body from where the model puts it.
                    let (frame0, frame1) = match spherical.get(path.as_str()) {
                        Some(j) => j.spherical_frames(),
                        None => {
                            let q = &body_quat[child * 4..child * 4 + 4];
                            let at_rest = Pose {
                                translation: [0.0; 3],
                                rotation: [q[1], q[2], q[3], q[0]],
                            };
                            (at_rest, Pose::IDENTITY)
                        }
                    };
                    BallJoint {
                        parent: (parent != 0).then_some(parent),
                        child,
                        frame0,
                        frame1,
                    }
                });
                JointEntry {
                    path,
                    qposadr: qposadr[id] as usize,
                    dofadr: dofadr[id] as usize,
                    ball,
                }
            })
            .collect();
        let nu = m.nu as usize;
        let trntype = slice(m.actuator_trntype, m.nu);
        let trnid = slice(m.actuator_trnid, nu * 2);
        let gaintype = slice(m.actuator_gaintype, m.nu);
        let biastype = slice(m.actuator_biastype, m.nu);
        let gainprm = slice(m.actuator_gainprm, nu * NGAIN);
        let biasprm = slice(m.actuator_biasprm, nu * NBIAS);
        let invweight = slice(m.dof_invweight0, m.nv);
        let drives: HashMap<&str, &crate::scene::Joint> = scene
            .joints
            .iter()
            .filter(|j| j.kind.is_single_axis())
            .map(|j| (j.path.as_str(), j))
            .collect();
        let mut targets = Vec::new();
        let mut per_joint: HashMap<usize, Vec<usize>> = HashMap::new();
        for a in 0..nu {
            let path = name(MjtObjBase::mjOBJ_ACTUATOR, a, "actuator");
            let on_joint =
                (trntype[a] == c::mjtTrn::mjTRN_JOINT as i32).then_some(trnid[2 * a] as usize);
            let control = match (native, drives.get(path.as_str()), on_joint) {
                (false, Some(joint), Some(j)) => {
                    let w = invweight[dofadr[j] as usize];
                    Control::Drive {
                        actuator: a,
                        drive: joint.drive,
                        inertia: if w > 0.0 { 1.0 / w } else { 1.0 },
                    }
                }
                _ => {
                    let fixed = gaintype[a] == c::mjtGain::mjGAIN_FIXED as i32;
                    let g = gainprm[a * NGAIN];
                    let b = &biasprm[a * NBIAS..a * NBIAS + 3];
                    let kind = if biastype[a] == c::mjtBias::mjBIAS_NONE as i32 && fixed {
                        ActuatorKind::Motor
                    } else if biastype[a] == c::mjtBias::mjBIAS_AFFINE as i32
                        && fixed
                        && b[0] == 0.0
                        && b[1] == -g
                        && g != 0.0
                    {
                        ActuatorKind::Position
                    } else if biastype[a] == c::mjtBias::mjBIAS_AFFINE as i32
                        && fixed
                        && b[0] == 0.0
                        && b[1] == 0.0
                        && b[2] == -g
                        && g != 0.0
                    {
                        ActuatorKind::Velocity
                    } else {
                        ActuatorKind::General
                    };
                    Control::Actuator { actuator: a, kind }
                }
            };
            if let Some(j) = on_joint {
                per_joint.entry(j).or_default().push(targets.len());
            }
            targets.push(CommandTarget { path, control });
        }
        let mut target_index: HashMap<String, usize> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.path.clone(), i))
            .collect();
        // A joint with one actuator takes commands under its own path too.
        for (j, list) in per_joint {
            if let [only] = list[..] {
                target_index
                    .entry(name(MjtObjBase::mjOBJ_JOINT, j, "joint"))
                    .or_insert(only);
            }
        }
        let model_cameras = (0..m.ncam as usize)
            .filter_map(|id| {
                let n = model.id_to_name(MjtObjBase::mjOBJ_CAMERA, id)?;
                (!n.is_empty()).then(|| (format!("/{}", n.trim_start_matches('/')), id))
            })
            .collect();
        let mut instance_paths: Vec<String> = bodies.iter().map(|(p, _)| p.clone()).collect();
        let mut body_instance = vec![u32::MAX; m.nbody as usize];
        for (i, (_, id)) in bodies.iter().enumerate() {
            body_instance[*id] = i as u32;
        }
        if native {
            // Geoms of the world body (floors, walls) are an instance too.
            body_instance[0] = instance_paths.len() as u32;
            instance_paths.push("/world".to_string());
        }
        let geom_instance = slice(m.geom_bodyid, m.ngeom)
            .iter()
            .map(|&b| body_instance[b as usize])
            .collect();
        Ok(Layout {
            fingerprint: scene.fingerprint(),
            bodies,
            joints,
            targets,
            target_index,
            cameras: scene.cameras.clone(),
            model_cameras,
            geom_instance,
            instance_paths,
            substeps: options.substeps,
            step_dt: options.step_dt,
            state_size: model.state_size(c::mjtState::mjSTATE_INTEGRATION as u32),
        })
    }
}

/// Brings bodies whose mass, centre of mass or inertia the scene gives to those
/// values, over what MuJoCo computed from their geoms (as rapier3d does: a given
/// mass scales the computed inertia).
fn scale_masses(scene: &SceneModel, model: &mut MjModel) -> Result<(), EngineError> {
    for body in &scene.bodies {
        let given = &body.mass;
        if given.diagonal_inertia.is_some() && given.mass.is_some() {
            continue; // written as <inertial>
        }
        if given.mass.is_none()
            && given.center_of_mass.is_none()
            && given.diagonal_inertia.is_none()
        {
            continue;
        }
        let Some(id) = model.name_to_id(MjtObjBase::mjOBJ_BODY, &body.path) else {
            continue;
        };
        // SAFETY: `id` is a body id of this model; the arrays are nbody, nbody × 3
        // and nbody × 4 long.
        unsafe {
            let m = model.ffi_mut();
            if let Some(mass) = given.mass {
                let mass = positive(&body.path, "mass", mass)?;
                let current = *m.body_mass.add(id);
                if current <= 0.0 {
                    return Err(EngineError::ScenePrim {
                        prim: body.path.clone(),
                        message: "a mass without colliders needs an explicit inertia".into(),
                    });
                }
                let ratio = mass / current;
                *m.body_mass.add(id) = mass;
                for k in 0..3 {
                    *m.body_inertia.add(id * 3 + k) *= ratio;
                }
            }
            if let Some(com) = given.center_of_mass {
                for (k, v) in com.iter().enumerate() {
                    *m.body_ipos.add(id * 3 + k) = *v;
                }
            }
            if let Some(inertia) = given.diagonal_inertia {
                for (k, v) in inertia.iter().enumerate() {
                    *m.body_inertia.add(id * 3 + k) = non_negative(&body.path, "inertia", *v)?;
                }
                let axes = unit(
                    &body.path,
                    given.principal_axes.unwrap_or([0.0, 0.0, 0.0, 1.0]),
                )?;
                for (k, v) in [axes[3], axes[0], axes[1], axes[2]].iter().enumerate() {
                    *m.body_iquat.add(id * 4 + k) = *v;
                }
            }
        }
    }
    Ok(())
}

impl Simulation for MujocoSimulation {
    fn kind(&self) -> EngineKind {
        EngineKind::Mujoco
    }

    fn step(&mut self) -> Result<(), EngineError> {
        if let Some(reason) = &self.diverged {
            return Err(EngineError::Diverged(format!(
                "simulation diverged earlier: {reason}"
            )));
        }
        for _ in 0..self.layout.substeps {
            self.data.step();
            // MuJoCo resets a simulation that goes bad and carries on; report it.
            if let Some(reason) = self.bad_values() {
                self.diverged = Some(reason.clone());
                return Err(EngineError::Diverged(reason));
            }
        }
        self.refresh();
        self.step += 1;
        self.time += self.layout.step_dt;
        Ok(())
    }

    fn set_joint_command(
        &mut self,
        joint_path: &str,
        cmd: JointCommand,
    ) -> Result<(), EngineError> {
        cmd.finite_value(joint_path)?;
        if self
            .layout
            .joints
            .iter()
            .any(|j| j.path == joint_path && j.ball.is_some())
        {
            return Err(EngineError::not_single_axis(
                format!("command to {joint_path}"),
                JointKind::Spherical,
                "commands",
            ));
        }
        let index =
            *self
                .layout
                .target_index
                .get(joint_path)
                .ok_or_else(|| EngineError::UnknownPath {
                    what: "commandable joint or actuator",
                    path: joint_path.to_string(),
                })?;
        if let Control::Actuator { kind, .. } = self.layout.targets[index].control
            && !kind.accepts(cmd)
        {
            return Err(EngineError::Invalid {
                field: format!("command to {joint_path}"),
                message: format!(
                    "this actuator of the model takes {} commands (its control input)",
                    kind.mode()
                ),
            });
        }
        self.apply_command(index, cmd);
        self.commands[index] = Some(cmd);
        Ok(())
    }

    fn body_poses(
        &self,
        positions: &mut Vec<[f64; 3]>,
        orientations: &mut Vec<[f64; 4]>,
    ) -> Result<(), EngineError> {
        let d = self.data.ffi();
        for (_, id) in &self.layout.bodies {
            positions.push(vec3_at(d.xpos, *id));
            orientations.push(quat_at(d.xquat, *id));
        }
        Ok(())
    }

    fn observation(&self, path: &str) -> Result<Observation, EngineError> {
        let mut obs = Observation {
            time: self.time,
            step: self.step,
            bodies: Vec::new(),
            joints: Vec::new(),
        };
        if path == "/" || path.is_empty() {
            obs.bodies = self
                .layout
                .bodies
                .iter()
                .map(|(p, id)| self.body_observation(p, *id))
                .collect();
            obs.joints = self
                .layout
                .joints
                .iter()
                .map(|j| self.joint_observation(j))
                .collect();
        } else if let Some((p, id)) = self.layout.bodies.iter().find(|(p, _)| p == path) {
            obs.bodies.push(self.body_observation(p, *id));
        } else if let Some(j) = self.layout.joints.iter().find(|j| j.path == path) {
            obs.joints.push(self.joint_observation(j));
        } else {
            return Err(EngineError::UnknownPath {
                what: "body or joint",
                path: path.to_string(),
            });
        }
        Ok(obs)
    }

    fn state(&self) -> Result<SimState, EngineError> {
        Ok(SimState::seal(
            self.owner(),
            self.time,
            self.step,
            &self.encode()?,
        ))
    }

    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError> {
        let body = state.open(&self.owner())?;
        if body.len() > MAX_STATE_BYTES {
            return Err(EngineError::StateMismatch("the state is too large".into()));
        }
        let (payload, _): (Payload, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| EngineError::StateMismatch(format!("cannot decode the state: {e}")))?;
        self.restore(payload)
    }

    fn render(&self, camera_path: &str, params: &RenderParams) -> Result<Image, EngineError> {
        let cameras = self.cameras();
        let view = View::new(&cameras, camera_path, params)?;
        let m = self.data.model().ffi();
        let d = self.data.ffi();
        let mut depth = Vec::with_capacity(view.pixels());
        let mut instance_id = Vec::with_capacity(view.pixels());
        for row in 0..view.height {
            for col in 0..view.width {
                let dir = view.ray(row, col);
                let mut geom = -1;
                // SAFETY: model and data belong together; `dir` is a unit vector (mj_ray
                // refuses a zero one); no geom group filter, static geoms included.
                let dist = unsafe {
                    c::mj_ray(
                        m,
                        d,
                        &view.eye,
                        &dir,
                        std::ptr::null(),
                        true,
                        -1,
                        &mut geom,
                        std::ptr::null_mut(),
                    )
                };
                if geom >= 0 && dist >= 0.0 && dist <= view.max_depth {
                    depth.push(dist as f32);
                    instance_id.push(
                        self.layout
                            .geom_instance
                            .get(geom as usize)
                            .copied()
                            .unwrap_or(u32::MAX),
                    );
                } else {
                    depth.push(view.max_depth as f32);
                    instance_id.push(u32::MAX);
                }
            }
        }
        Ok(Image {
            width: view.width,
            height: view.height,
            depth,
            instance_id,
            instance_paths: self.layout.instance_paths.clone(),
        })
    }

    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError> {
        let model = Box::new(self.data.model().clone());
        let mut data = MjData::new(model);
        let mut state = vec![0.0; self.layout.state_size];
        self.data
            .try_read_state_into(c::mjtState::mjSTATE_INTEGRATION as u32, &mut state)
            .map_err(|e| EngineError::StateMismatch(format!("MuJoCo state: {e}")))?;
        data.set_state(&state, c::mjtState::mjSTATE_INTEGRATION as u32)
            .map_err(|e| EngineError::StateMismatch(format!("MuJoCo refused the state: {e}")))?;
        let mut fork = MujocoSimulation {
            layout: self.layout.clone(),
            data,
            commands: self.commands.clone(),
            time: self.time,
            step: self.step,
            diverged: self.diverged.clone(),
        };
        fork.refresh();
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

impl MujocoSimulation {
    /// Scene cameras, and the MJCF model's named cameras where they are now.
    fn cameras(&self) -> Vec<crate::scene::Camera> {
        let mut out = self.layout.cameras.clone();
        let m = self.data.model().ffi();
        let d = self.data.ffi();
        for (path, id) in &self.layout.model_cameras {
            let mut quat = [0.0; 4];
            // SAFETY: `id` is a camera id of this model; cam_xmat holds ncam 3×3 matrices.
            let fovy = unsafe {
                let mat = &*(d.cam_xmat.add(id * 9) as *const [f64; 9]);
                c::mju_mat2Quat(&mut quat, mat);
                *m.cam_fovy.add(*id)
            };
            out.push(crate::scene::Camera {
                path: path.clone(),
                pose: Pose {
                    translation: vec3_at(d.cam_xpos, *id),
                    rotation: [quat[1], quat[2], quat[3], quat[0]],
                },
                fov_deg: fovy,
                near: 0.01,
                far: 100.0,
            });
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

/// A model array as a slice.
fn slice<T>(ptr: *const T, len: impl TryInto<usize>) -> &'static [T] {
    let len = len.try_into().unwrap_or(0);
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: callers pass an array of the model with its own length; the slice
    // is used only while the model lives (within one method call).
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

fn vec3_at(ptr: *const f64, i: usize) -> [f64; 3] {
    // SAFETY: `ptr` is an n × 3 array of the data and `i < n` (an id of the model).
    unsafe { [*ptr.add(3 * i), *ptr.add(3 * i + 1), *ptr.add(3 * i + 2)] }
}

/// MuJoCo's `w x y z` as `[x, y, z, w]`.
fn quat_at(ptr: *const f64, i: usize) -> [f64; 4] {
    // SAFETY: as `vec3_at`, for an n × 4 array.
    unsafe {
        [
            *ptr.add(4 * i + 1),
            *ptr.add(4 * i + 2),
            *ptr.add(4 * i + 3),
            *ptr.add(4 * i),
        ]
    }
}

fn attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nums(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    parts.join(" ")
}

fn wxyz(q: [f64; 4]) -> String {
    nums(&[q[3], q[0], q[1], q[2]])
}

/// The rotation taking +Z (MuJoCo's axis for capsules, cylinders and plane
/// normals) to `axis`.
fn z_to(axis: Axis) -> [f64; 4] {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    match axis {
        Axis::Z => [0.0, 0.0, 0.0, 1.0],
        // +Z → +X: 90° about +Y; +Z → +Y: −90° about +X.
        Axis::X => [0.0, h, 0.0, h],
        Axis::Y => [-h, 0.0, 0.0, h],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_to_turns_z_onto_each_axis() {
        for axis in [Axis::X, Axis::Y, Axis::Z] {
            let v = quat_rotate(z_to(axis), [0.0, 0.0, 1.0]);
            let u = axis.unit();
            assert!(
                (0..3).all(|k| (v[k] - u[k]).abs() < 1e-12),
                "{axis:?}: {v:?}"
            );
        }
    }

    #[test]
    fn unknown_extension_names_the_field() {
        let mut config = EngineConfig::default();
        config
            .extensions
            .insert("integrater".into(), serde_json::json!("rk4"));
        let Err(EngineError::Invalid { field, message }) = Options::read(&config) else {
            panic!("accepted an unknown key");
        };
        assert_eq!(field, "engine.config.extensions.integrater");
        assert!(message.contains("integrator"), "{message}");
        config.extensions.clear();
        config
            .extensions
            .insert("integrator".into(), serde_json::json!("rk5"));
        assert!(Options::read(&config).is_err());
    }

    #[test]
    fn authored_hinge_angle_is_recovered() {
        let frame = Pose::IDENTITY;
        let angle: f64 = 0.3;
        let child = Pose {
            translation: [0.0; 3],
            rotation: [0.0, 0.0, (angle / 2.0).sin(), (angle / 2.0).cos()],
        };
        let got = authored_coordinate(
            JointKind::Revolute,
            Axis::Z,
            &Pose::IDENTITY,
            &frame,
            &child,
            &frame,
        );
        assert!((got - angle).abs() < 1e-12, "{got}");
    }
}

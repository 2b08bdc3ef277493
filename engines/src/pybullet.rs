//! The PyBullet engine: each simulation is a Python worker process
//! (`pybullet_worker.py`, embedded in the binary) that this adapter owns.
//!
//! - The scene is planned here as pybullet multibodies, one per tree of bodies
//!   ([`crate::tree::Tree`]), and sent to the worker, which only calls pybullet.
//! - Steps are batched: [`Simulation::step`] only counts, and the steps go to
//!   the worker in one message, with the queued commands, when something reads
//!   the simulation. A thousand steps cost one round trip.
//! - A worker that dies is [`EngineError::Failed`]: the twin fails and its
//!   supervisor restarts it from the last checkpoint with a new worker.
//! - PyBullet cannot restore its contact solver's warm start, so a restored
//!   state keeps poses, velocities, joint states and commands, and continues
//!   close to, not bit for bit like, the original (`bitwise_restore: false`).

use crate::camera::View;
use crate::geometry::{quat_rotate, sub};
use crate::scene::{BodyKind, JointKind, Pose, SceneModel, Shape};
use crate::tree::{
    Tree, authored_coordinate, checked_pose, compose, inverse, joint_zero, positive, volume,
};
use crate::{
    BodyObservation, Engine, EngineCapabilities, EngineConfig, EngineError, EngineKind, Image,
    JointCommand, JointObservation, Observation, RenderParams, SimState, Simulation,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

/// The worker script, run by the configured Python.
const WORKER: &str = include_str!("pybullet_worker.py");

/// Version of the `data` layout in PyBullet's [`SimState`]s.
pub const STATE_FORMAT: u32 = 1;

/// The environment variable naming the Python that has pybullet.
pub const PYTHON_ENV: &str = "HANZO_TWIN_PYBULLET_PYTHON";

/// Density of colliders that give neither mass nor density (USD's default).
const DEFAULT_DENSITY: f64 = 1000.0;

/// Largest frame accepted from a worker.
const MAX_FRAME: usize = 1 << 30;

/// The PyBullet engine, with the Python that runs its workers.
pub struct PybulletEngine {
    python: PathBuf,
}

impl PybulletEngine {
    /// The engine when `HANZO_TWIN_PYBULLET_PYTHON` (or `python3`) imports
    /// pybullet; why not otherwise.
    pub fn detect() -> Result<PybulletEngine, String> {
        let python = std::env::var_os(PYTHON_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        let out = Command::new(&python)
            .args(["-c", "import pybullet"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} cannot import pybullet: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PybulletEngine { python })
    }
}

impl Engine for PybulletEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Pybullet
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
        let mut out = match crate::findings::tree_findings(scene, EngineKind::Pybullet) {
            crate::findings::TreeFindings::Native(f) => return f,
            crate::findings::TreeFindings::Scene(f) => f,
        };
        for f in out
            .iter_mut()
            .filter(|f| f.support != crate::findings::Support::Unsupported)
        {
            if let Some(body) = scene.bodies.iter().find(|b| b.path == f.prim)
                && body.kind == BodyKind::Kinematic
            {
                f.approximate("held where it is: pybullet multibodies have no kinematic mode");
            }
            if f.feature.starts_with("joint: spherical") && f.feature.contains("cone") {
                f.support = crate::findings::Support::Unsupported;
                f.note = Some(CONE_UNSUPPORTED.into());
            }
            if let Some((_, c)) = crate::findings::collider_of(scene, f) {
                match &c.shape {
                    Shape::ConvexDecomposition { .. } | Shape::TriMesh { .. } => f.approximate(
                        "pybullet collides with the convex hull of a mesh on a moving body",
                    ),
                    _ if (c.material.static_friction - c.material.dynamic_friction).abs()
                        > 1e-12 =>
                    {
                        f.approximate("pybullet has one friction; the dynamic friction is used")
                    }
                    _ => {}
                }
            }
        }
        if !scene.collision_groups.is_empty() {
            out.push(crate::findings::Finding {
                prim: "/".into(),
                feature: "collision groups".into(),
                support: crate::findings::Support::Approximated,
                note: Some(
                    "pybullet filters contacts per multibody: only links of one robot skip each other"
                        .into(),
                ),
            });
        }
        out
    }

    fn load_scene(
        &self,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Box<dyn Simulation>, EngineError> {
        crate::findings::refuse_foreign_native(scene, EngineKind::Pybullet)?;
        self.check_config(config)?;
        Ok(Box::new(PybulletSimulation::load(
            &self.python,
            scene,
            config,
        )?))
    }
}

// ---------------------------------------------------------------------------------------------
// The worker process.
// ---------------------------------------------------------------------------------------------

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn failed(message: impl Into<String>) -> EngineError {
    EngineError::Failed {
        engine: EngineKind::Pybullet,
        message: message.into(),
    }
}

impl Worker {
    fn spawn(python: &PathBuf) -> Result<Worker, EngineError> {
        let mut child = Command::new(python)
            // The last argument names the process in `ps`.
            .args(["-u", "-c", WORKER, "hanzo-twin-pybullet-worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", python.display())))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed("the worker's pipes are missing"));
        };
        // pybullet prints a banner and warnings on stderr: into the node's log.
        std::thread::spawn(move || {
            let mut lines = std::io::BufRead::lines(BufReader::new(stderr));
            while let Some(Ok(line)) = lines.next() {
                tracing::debug!(target: "hanzo_twin::pybullet", "{line}");
            }
        });
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    fn call(&mut self, request: &Value) -> Result<Value, EngineError> {
        let gone = |e: std::io::Error| failed(format!("the worker process is gone ({e})"));
        let body = serde_json::to_vec(request)
            .map_err(|e| failed(format!("cannot encode a request: {e}")))?;
        let len = u32::try_from(body.len()).map_err(|_| failed("request too large"))?;
        self.stdin
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.stdin.write_all(&body))
            .and_then(|()| self.stdin.flush())
            .map_err(gone)?;
        let mut header = [0u8; 4];
        self.stdout.read_exact(&mut header).map_err(|e| {
            let code = self.child.try_wait().ok().flatten();
            failed(match code {
                Some(status) => format!("the worker process exited ({status})"),
                None => format!("the worker process stopped answering ({e})"),
            })
        })?;
        let n = u32::from_le_bytes(header) as usize;
        if n > MAX_FRAME {
            return Err(failed(format!("the worker sent a {n}-byte frame")));
        }
        let mut reply = vec![0u8; n];
        self.stdout
            .read_exact(&mut reply)
            .map_err(|e| failed(format!("the worker's reply was cut short ({e})")))?;
        let mut reply: Value = serde_json::from_slice(&reply)
            .map_err(|e| failed(format!("the worker sent bad JSON: {e}")))?;
        if let Some(error) = reply.get("error") {
            return Err(EngineError::Invalid {
                field: "scene".into(),
                message: format!("pybullet: {}", error.as_str().unwrap_or_default()),
            });
        }
        Ok(reply["ok"].take())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin ends the worker's loop; kill it if it lingers.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Planning the scene as multibodies.
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct LinkPlan {
    mass: f64,
    /// Principal inertia; `None` lets pybullet compute it from the colliders.
    inertia: Option<[f64; 3]>,
    com: [f64; 3],
    inertia_axes: [f64; 4],
    colliders: Vec<Value>,
    /// Base: world pose of its frame. Link: pose in the parent link's frame.
    position: [f64; 3],
    orientation: [f64; 4],
    /// 0 for the base, k + 1 for link k.
    parent: i64,
    joint: &'static str,
    axis: [f64; 3],
    limits: Option<(f64, f64)>,
    friction: f64,
    restitution: f64,
    observed: bool,
    velocity: Option<([f64; 3], [f64; 3])>,
    /// The body's own origin in its link frame (the link frame sits at the joint).
    origin: [f64; 3],
}

/// Why a spherical joint's cone does not load on pybullet.
const CONE_UNSUPPORTED: &str = "pybullet limits a spherical joint only when it reads the joint from a URDF file, and this adapter builds its multibodies in code: remove the cone (physics:coneAngle0Limit/1Limit) or run on another engine";

/// A spherical joint, observed from its two bodies.
struct BallLayout {
    path: String,
    /// Scene body paths; `None` is the world.
    parent: Option<String>,
    child: String,
    frame0: Pose,
    frame1: Pose,
}

/// What the adapter keeps of a plan: which worker index is which scene path.
struct Layout {
    fingerprint: u64,
    plan: Value,
    /// Scene body paths in scene order, and for each its index in the worker's list.
    bodies: Vec<(String, usize)>,
    /// Scene joint paths (revolute and prismatic) and their worker joint index.
    joints: Vec<(String, usize)>,
    joint_index: HashMap<String, usize>,
    balls: Vec<BallLayout>,
    cameras: Vec<crate::scene::Camera>,
    step_dt: f64,
}

/// Links, in the worker's order, of the subtrees a multibody's base carries.
#[derive(Default)]
struct Walk {
    links: Vec<LinkPlan>,
    bodies: Vec<String>,
    joints: Vec<String>,
    balls: Vec<BallLayout>,
    drives: Vec<Value>,
    initial: Vec<Value>,
    /// The fastest rate (1/s) of the drives' explicit PD, see [`drive_rate`].
    drive_rate: f64,
}

/// PyBullet applies a drive as an explicit PD torque, computed once per
/// simulation step, where the other engines integrate drives implicitly. An
/// explicit PD is stable only while a step is short next to the drive's
/// time constants: `damping·dt/I` and `√(stiffness/I)·dt` (with `I` what the
/// joint moves) must stay small, or the torque overshoots each step and, at
/// its force limit, chatters around an offset (the robot arm's light elbow
/// settled 0.29 rad off at one step per 1/240 s). This is the rate whose
/// inverse a step must not exceed: each term kept at a quarter.
fn drive_rate(stiffness: f64, damping: f64, inertia: f64) -> f64 {
    let inertia = inertia.max(1e-9);
    (damping / inertia).max((stiffness / inertia).sqrt()) / EXPLICIT_PD_STEP
}

/// The largest `damping·dt/I` and `ω·dt` of a stable explicit PD step.
const EXPLICIT_PD_STEP: f64 = 0.25;
/// Simulation steps per engine step that PyBullet may take for its drives'
/// stability; stiffer drives are then left to the configured substeps.
const MAX_DRIVE_SUBSTEPS: u32 = 32;

/// Plans the bodies below `start` (child, parent body's world pose at zero
/// joint coordinates, the parent's link-frame offset, the parent's index) as
/// links; `first_joint` is the worker index of the first joint they add.
fn walk(
    scene: &SceneModel,
    tree: &Tree,
    mut stack: Vec<(usize, Pose, [f64; 3], i64)>,
    first_joint: usize,
) -> Result<Walk, EngineError> {
    let mut w = Walk::default();
    while let Some((b, parent_world, parent_offset, parent_index)) = stack.pop() {
        let Some(j) = tree.parent_joint[b] else {
            continue;
        };
        let joint = &scene.joints[j];
        let f0 = checked_pose(&joint.path, &joint.local_pose0)?;
        let f1 = checked_pose(&joint.path, &joint.local_pose1)?;
        // Where the body is at joint coordinate zero; the authored pose gives
        // the coordinate it starts at.
        let authored = checked_pose(&scene.bodies[b].path, &scene.bodies[b].pose)?;
        let zero = compose(
            &parent_world,
            &joint_zero(joint.kind, &parent_world, &f0, &authored, &f1),
        );
        let q = authored_coordinate(joint.kind, joint.axis, &parent_world, &f0, &authored, &f1);
        // The link frame: at the joint, turned like the body.
        let link_world = compose(&zero, &Pose::from_translation(f1.translation));
        let parent_frame = compose(&parent_world, &Pose::from_translation(parent_offset));
        let rel = compose(&inverse(&parent_frame), &link_world);
        let kind = joint.kind.name();
        if joint.kind == JointKind::Spherical {
            if joint.cone_limits.is_some() {
                return Err(EngineError::ScenePrim {
                    prim: joint.path.clone(),
                    message: CONE_UNSUPPORTED.into(),
                });
            }
            let (frame0, frame1) = joint.spherical_frames();
            w.balls.push(BallLayout {
                path: joint.path.clone(),
                parent: joint.body0.clone(),
                child: scene.bodies[b].path.clone(),
                frame0,
                frame1,
            });
        }
        let axis = quat_rotate(f1.rotation, joint.axis.unit());
        let mut link = link_plan(
            scene,
            b,
            f1.translation,
            parent_index,
            kind,
            axis,
            joint.limits,
        )?;
        link.position = rel.translation;
        link.orientation = rel.rotation;
        w.links.push(link);
        let index = w.links.len() as i64;
        w.bodies.push(scene.bodies[b].path.clone());
        if joint.kind.is_single_axis() {
            let worker_joint = first_joint + w.joints.len();
            w.joints.push(joint.path.clone());
            let inertia = effective_inertia(scene, tree, b, joint.kind);
            if let Some(d) = &joint.drive {
                let mut about_joint =
                    inertia_about(scene, tree, b, joint.kind, link_world.translation);
                // A parent that hangs from a ball joint turns back against the
                // drive: the two sides share its torque, so what it moves is
                // less than the child's side alone (a humanoid's knee under
                // its free hip chattered at the child's-side rate).
                if let Some(parent) = joint.body0.as_deref().and_then(|p| scene.body_index(p))
                    && tree.parent_joint[parent]
                        .is_some_and(|pj| scene.joints[pj].kind == JointKind::Spherical)
                {
                    let parent_side = body_inertia_about(
                        &scene.bodies[parent],
                        joint.kind,
                        link_world.translation,
                    );
                    about_joint = 1.0 / (1.0 / about_joint + 1.0 / parent_side);
                }
                w.drive_rate = w
                    .drive_rate
                    .max(drive_rate(d.stiffness, d.damping, about_joint));
            }
            let d = joint.drive.unwrap_or(crate::scene::Drive {
                stiffness: 0.0,
                damping: 0.0,
                target_position: 0.0,
                target_velocity: 0.0,
                max_force: None,
            });
            for (name, v) in [
                ("stiffness", d.stiffness),
                ("damping", d.damping),
                ("target_position", d.target_position),
                ("target_velocity", d.target_velocity),
            ] {
                if !v.is_finite() || (name == "stiffness" || name == "damping") && v < 0.0 {
                    return Err(EngineError::ScenePrim {
                        prim: joint.path.clone(),
                        message: format!("bad drive {name} {v}"),
                    });
                }
            }
            w.drives.push(json!({
                "stiffness": d.stiffness, "damping": d.damping,
                "target_position": d.target_position, "target_velocity": d.target_velocity,
                "max_force": d.max_force, "inertia": inertia,
            }));
            if q.abs() > 1e-12 {
                w.initial.push(json!([worker_joint, q]));
            }
        }
        for &c in tree.children[b].iter().rev() {
            stack.push((c, zero, f1.translation, index));
        }
    }
    Ok(w)
}

fn plan_scene(scene: &SceneModel, config: &EngineConfig) -> Result<Layout, EngineError> {
    let tree = Tree::plan(scene)?;
    let mut multibodies = Vec::new();
    let mut all = Walk::default();
    let mut add = |base: LinkPlan, walk: Walk, all: &mut Walk| {
        multibodies.push(json!({ "base": base, "links": walk.links }));
        all.bodies.extend(walk.bodies);
        all.joints.extend(walk.joints);
        all.balls.extend(walk.balls);
        all.drives.extend(walk.drives);
        all.initial.extend(walk.initial);
        all.drive_rate = all.drive_rate.max(walk.drive_rate);
    };
    for &root in &tree.roots {
        let body = &scene.bodies[root];
        if tree.parent_joint[root].is_some() {
            // Hangs from the world: a massless fixed base at the origin, not
            // observed, carries it as a link.
            let base = LinkPlan {
                mass: 0.0,
                inertia: None,
                com: [0.0; 3],
                inertia_axes: [0.0, 0.0, 0.0, 1.0],
                colliders: Vec::new(),
                position: [0.0; 3],
                orientation: [0.0, 0.0, 0.0, 1.0],
                parent: -1,
                joint: "fixed",
                axis: [0.0; 3],
                limits: None,
                friction: 0.5,
                restitution: 0.0,
                observed: false,
                velocity: None,
                origin: [0.0; 3],
            };
            let w = walk(
                scene,
                &tree,
                vec![(root, Pose::IDENTITY, [0.0; 3], 0)],
                all.joints.len(),
            )?;
            add(base, w, &mut all);
            continue;
        }
        let world = checked_pose(&body.path, &body.pose)?;
        let base = LinkPlan {
            position: world.translation,
            orientation: world.rotation,
            velocity: (body.kind == BodyKind::Dynamic)
                .then_some((body.linear_velocity, body.angular_velocity)),
            ..link_plan(scene, root, [0.0; 3], -1, "fixed", [0.0; 3], None)?
        };
        all.bodies.push(body.path.clone());
        let children = tree.children[root]
            .iter()
            .rev()
            .map(|&c| (c, world, [0.0; 3], 0))
            .collect();
        let w = walk(scene, &tree, children, all.joints.len())?;
        add(base, w, &mut all);
    }
    let position = |list: &[String], path: &str| list.iter().position(|p| p == path);
    let bodies = scene
        .bodies
        .iter()
        .filter_map(|b| position(&all.bodies, &b.path).map(|i| (b.path.clone(), i)))
        .collect();
    let joints: Vec<(String, usize)> = scene
        .joints
        .iter()
        .filter(|j| j.kind.is_single_axis())
        .filter_map(|j| position(&all.joints, &j.path).map(|i| (j.path.clone(), i)))
        .collect();
    let gravity = config.gravity.unwrap_or_else(|| scene.default_gravity());
    // Enough substeps for the drives' explicit PD to be stable.
    let for_drives = (all.drive_rate * config.dt())
        .ceil()
        .clamp(1.0, f64::from(MAX_DRIVE_SUBSTEPS));
    let substeps = config.substeps.max(1).max(for_drives as u32);
    let plan = json!({
        "gravity": gravity,
        "dt": config.dt() / f64::from(substeps),
        "substeps": substeps,
        "solver_iterations": config.solver_iterations,
        "multibodies": multibodies,
        "drives": all.drives,
        "initial_coordinates": all.initial,
    });
    Ok(Layout {
        fingerprint: scene.fingerprint(),
        plan,
        joint_index: joints.iter().map(|(p, i)| (p.clone(), *i)).collect(),
        balls: all.balls,
        bodies,
        joints,
        cameras: scene.cameras.clone(),
        step_dt: config.dt(),
    })
}

/// The inertia a joint's drive moves, for the default (acceleration-based)
/// gains: the subtree's mass for a slider, its moment about the axis (point
/// masses at the body origins, plus each body's own inertia) for a hinge.
fn effective_inertia(scene: &SceneModel, tree: &Tree, child: usize, kind: JointKind) -> f64 {
    inertia_about(
        scene,
        tree,
        child,
        kind,
        scene.bodies[child].pose.translation,
    )
}

/// What a joint moves about (or along) `anchor`: the bodies from `child`
/// down, each as its mass at its origin plus its own inertia.
fn inertia_about(
    scene: &SceneModel,
    tree: &Tree,
    child: usize,
    kind: JointKind,
    anchor: [f64; 3],
) -> f64 {
    let mut stack = vec![child];
    let mut total = 0.0;
    while let Some(b) = stack.pop() {
        total += body_inertia_about(&scene.bodies[b], kind, anchor);
        stack.extend(tree.children[b].iter().copied());
    }
    total.max(1e-6)
}

/// What one body adds to [`inertia_about`]: its mass at its origin, plus
/// its own inertia for a turn.
fn body_inertia_about(body: &crate::scene::Body, kind: JointKind, anchor: [f64; 3]) -> f64 {
    let m = body_mass(body).unwrap_or(1.0);
    match kind {
        JointKind::Prismatic => m,
        _ => {
            let d = [
                body.pose.translation[0] - anchor[0],
                body.pose.translation[1] - anchor[1],
                body.pose.translation[2] - anchor[2],
            ];
            let own = body
                .mass
                .diagonal_inertia
                .map_or(m * 0.01, |i| (i[0] + i[1] + i[2]) / 3.0);
            m * (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) + own
        }
    }
    .max(1e-6)
}

/// A body's mass: given, or its colliders' masses and densities.
fn body_mass(body: &crate::scene::Body) -> Result<f64, EngineError> {
    if let Some(m) = body.mass.mass {
        return positive(&body.path, "mass", m).map_err(EngineError::from);
    }
    let mut total = 0.0;
    for c in &body.colliders {
        total += match (c.mass, c.density.or(body.mass.density)) {
            (Some(m), _) => positive(&c.path, "mass", m)?,
            (None, d) => d.unwrap_or(DEFAULT_DENSITY) * volume(&c.shape),
        };
    }
    Ok(total)
}

/// One body as a link (or base) of a multibody; `offset` is where its link
/// frame sits in the body's frame (the joint anchor).
fn link_plan(
    scene: &SceneModel,
    b: usize,
    offset: [f64; 3],
    parent: i64,
    joint: &'static str,
    axis: [f64; 3],
    limits: Option<(f64, f64)>,
) -> Result<LinkPlan, EngineError> {
    let body = &scene.bodies[b];
    let mass = match body.kind {
        BodyKind::Dynamic => body_mass(body)?,
        _ => 0.0,
    };
    if body.kind == BodyKind::Dynamic && mass <= 0.0 {
        return Err(EngineError::ScenePrim {
            prim: body.path.clone(),
            message: "a dynamic body needs a positive mass".into(),
        });
    }
    let com = body.mass.center_of_mass.unwrap_or([0.0; 3]);
    let mut colliders = Vec::new();
    for c in &body.colliders {
        let pose = checked_pose(&c.path, &c.local_pose)?;
        let (shape, turn) = shape_plan(&c.path, &c.shape)?;
        let rotation = crate::geometry::quat_mul(pose.rotation, turn);
        colliders.push(json!({
            "shape": shape,
            "position": sub(pose.translation, offset),
            "orientation": rotation,
        }));
    }
    let material = body
        .colliders
        .first()
        .map(|c| c.material)
        .unwrap_or_default();
    if let Some((lo, hi)) = limits
        && (lo.is_nan() || hi.is_nan() || lo > hi)
    {
        return Err(EngineError::ScenePrim {
            prim: body.path.clone(),
            message: format!("bad joint limits [{lo}, {hi}]"),
        });
    }
    Ok(LinkPlan {
        mass,
        inertia: body.mass.diagonal_inertia,
        com: sub(com, offset),
        inertia_axes: body.mass.principal_axes.unwrap_or([0.0, 0.0, 0.0, 1.0]),
        colliders,
        position: [0.0; 3],
        orientation: [0.0, 0.0, 0.0, 1.0],
        parent,
        joint,
        axis,
        limits: limits.map(|(lo, hi)| (lo.clamp(-1e6, 1e6), hi.clamp(-1e6, 1e6))),
        friction: material.dynamic_friction,
        restitution: material.restitution,
        observed: true,
        velocity: None,
        origin: [-offset[0], -offset[1], -offset[2]],
    })
}

/// A collider shape as the worker takes it, and the turn from pybullet's axis
/// (Z for capsules, cylinders and plane normals) to the shape's.
fn shape_plan(path: &str, shape: &Shape) -> Result<(Value, [f64; 4]), EngineError> {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let z_to = |axis: crate::scene::Axis| match axis {
        crate::scene::Axis::Z => [0.0, 0.0, 0.0, 1.0],
        crate::scene::Axis::X => [0.0, h, 0.0, h],
        crate::scene::Axis::Y => [-h, 0.0, 0.0, h],
    };
    let identity = [0.0, 0.0, 0.0, 1.0];
    Ok(match shape {
        Shape::Cuboid { half_extents } => (
            json!({"kind": "box", "half_extents": half_extents}),
            identity,
        ),
        Shape::Sphere { radius } => (json!({"kind": "sphere", "radius": radius}), identity),
        Shape::Capsule {
            radius,
            half_height,
            axis,
        } => (
            json!({"kind": "capsule", "radius": radius, "half_height": half_height}),
            z_to(*axis),
        ),
        Shape::Cylinder {
            radius,
            half_height,
            axis,
        } => (
            json!({"kind": "cylinder", "radius": radius, "half_height": half_height}),
            z_to(*axis),
        ),
        Shape::Plane { axis } => (json!({"kind": "plane"}), z_to(*axis)),
        Shape::TriMesh {
            vertices,
            triangles,
        }
        | Shape::ConvexDecomposition {
            vertices,
            triangles,
        } => (
            json!({"kind": "mesh", "vertices": vertices,
                   "indices": triangles.iter().flatten().collect::<Vec<_>>()}),
            identity,
        ),
        Shape::ConvexHull { points } => {
            if points.len() < 4 {
                return Err(EngineError::ScenePrim {
                    prim: path.to_string(),
                    message: "a convex hull needs at least four points".into(),
                });
            }
            (json!({"kind": "mesh", "vertices": points}), identity)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

/// One PyBullet simulation: a worker process, and the steps and commands not
/// yet sent to it.
pub struct PybulletSimulation {
    python: PathBuf,
    layout: Arc<Layout>,
    worker: RefCell<Worker>,
    /// Steps taken but not yet sent.
    pending: Cell<u64>,
    /// Commands given since the last message: (worker joint, mode, value).
    queued: RefCell<Vec<(usize, &'static str, f64)>>,
    commands: Vec<Option<JointCommand>>,
    time: f64,
    step: u64,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    time: f64,
    step: u64,
    world: Value,
}

impl PybulletSimulation {
    fn load(
        python: &PathBuf,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Self, EngineError> {
        if !(config.step_hz.is_finite() && config.step_hz > 0.0) {
            return Err(EngineError::Invalid {
                field: "engine.config.step_hz".into(),
                message: "must be a positive number".into(),
            });
        }
        let layout = plan_scene(scene, config)?;
        let mut worker = Worker::spawn(python)?;
        worker.call(&json!({ "op": "load", "plan": layout.plan }))?;
        let joints = layout.joints.len();
        Ok(PybulletSimulation {
            python: python.clone(),
            layout: Arc::new(layout),
            worker: RefCell::new(worker),
            pending: Cell::new(0),
            queued: RefCell::new(Vec::new()),
            commands: vec![None; joints],
            time: 0.0,
            step: 0,
        })
    }

    fn owner(&self) -> crate::StateOwner {
        crate::StateOwner {
            engine: EngineKind::Pybullet,
            format: STATE_FORMAT,
            scene_fingerprint: self.layout.fingerprint,
        }
    }

    /// The worker's process id.
    pub fn worker_pid(&self) -> u32 {
        self.worker.borrow().pid()
    }

    /// Sends the pending steps and queued commands; answers with the worker's
    /// observation when `observe`.
    fn flush(&self, observe: bool) -> Result<Value, EngineError> {
        let n = self.pending.get();
        let commands: Vec<Value> = self
            .queued
            .borrow()
            .iter()
            .map(|(j, mode, v)| json!([j, mode, v]))
            .collect();
        let reply = if n == 0 && commands.is_empty() {
            if !observe {
                return Ok(Value::Null);
            }
            self.worker.borrow_mut().call(&json!({ "op": "observe" }))?
        } else {
            self.worker.borrow_mut().call(&json!({
                "op": "step", "n": n, "commands": commands, "observe": observe,
            }))?
        };
        self.pending.set(0);
        self.queued.borrow_mut().clear();
        Ok(reply)
    }

    fn observe_all(&self) -> Result<(Vec<BodyObservation>, Vec<JointObservation>), EngineError> {
        let reply = self.flush(true)?;
        let bodies_raw = reply["bodies"].as_array().cloned().unwrap_or_default();
        let joints_raw = reply["joints"].as_array().cloned().unwrap_or_default();
        let vec = |v: &Value, n: usize| -> Option<Vec<f64>> {
            let a = v.as_array()?;
            (a.len() == n).then(|| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        };
        let mut bodies = Vec::with_capacity(self.layout.bodies.len());
        for (path, i) in &self.layout.bodies {
            let b = &bodies_raw[*i];
            let (Some(p), Some(q), Some(l), Some(a)) =
                (vec(&b[0], 3), vec(&b[1], 4), vec(&b[2], 3), vec(&b[3], 3))
            else {
                return Err(failed(format!("the worker sent no pose for {path}")));
            };
            if p.iter()
                .chain(&q)
                .chain(&l)
                .chain(&a)
                .any(|v| !v.is_finite())
            {
                return Err(EngineError::Diverged(format!("{path} is not finite")));
            }
            bodies.push(BodyObservation {
                path: path.clone(),
                position: [p[0], p[1], p[2]],
                orientation: [q[0], q[1], q[2], q[3]],
                linear_velocity: [l[0], l[1], l[2]],
                angular_velocity: [a[0], a[1], a[2]],
            });
        }
        let mut joints = Vec::with_capacity(self.layout.joints.len());
        for (path, i) in &self.layout.joints {
            let j = &joints_raw[*i];
            joints.push(JointObservation::single_axis(
                path,
                j[0].as_f64().unwrap_or(f64::NAN),
                j[1].as_f64().unwrap_or(f64::NAN),
            ));
        }
        let turn = |path: &str| {
            bodies
                .iter()
                .find(|b| b.path == path)
                .map(|b| (b.orientation, b.angular_velocity))
                .ok_or_else(|| failed(format!("no observed body {path}")))
        };
        for ball in &self.layout.balls {
            let parent = ball.parent.as_deref().map(turn).transpose()?;
            let state = crate::tree::spherical_state(
                parent,
                turn(&ball.child)?,
                &ball.frame0,
                &ball.frame1,
            );
            joints.push(JointObservation::spherical(&ball.path, state));
        }
        Ok((bodies, joints))
    }

    fn world_state(&self) -> Result<Value, EngineError> {
        self.flush(false)?;
        self.worker.borrow_mut().call(&json!({ "op": "get_state" }))
    }
}

impl Simulation for PybulletSimulation {
    fn kind(&self) -> EngineKind {
        EngineKind::Pybullet
    }

    fn step(&mut self) -> Result<(), EngineError> {
        // The steps go out later, in one batch; a dead worker is noticed now.
        match self.worker.get_mut().child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                return Err(failed(format!("the worker process exited ({status})")));
            }
            Err(e) => return Err(failed(format!("the worker process is gone ({e})"))),
        }
        self.pending.set(self.pending.get() + 1);
        self.step += 1;
        self.time += self.layout.step_dt;
        Ok(())
    }

    fn set_joint_command(
        &mut self,
        joint_path: &str,
        cmd: JointCommand,
    ) -> Result<(), EngineError> {
        let value = cmd.finite_value(joint_path)?;
        if self.layout.balls.iter().any(|b| b.path == joint_path) {
            return Err(EngineError::not_single_axis(
                format!("command to {joint_path}"),
                JointKind::Spherical,
                "commands",
            ));
        }
        let Some(&worker_joint) = self.layout.joint_index.get(joint_path) else {
            return Err(EngineError::UnknownPath {
                what: "commandable joint",
                path: joint_path.to_string(),
            });
        };
        let mode = match cmd {
            JointCommand::Position(_) => "position",
            JointCommand::Velocity(_) => "velocity",
            JointCommand::Effort(_) => "effort",
        };
        // A command takes effect before the next step: send the steps before it first.
        if self.pending.get() > 0 {
            self.flush(false)?;
        }
        self.queued.borrow_mut().push((worker_joint, mode, value));
        if let Some(i) = self.layout.joints.iter().position(|(p, _)| p == joint_path) {
            self.commands[i] = Some(cmd);
        }
        Ok(())
    }

    fn observation(&self, path: &str) -> Result<Observation, EngineError> {
        let (bodies, joints) = self.observe_all()?;
        let mut obs = Observation {
            time: self.time,
            step: self.step,
            bodies,
            joints,
        };
        if !(path == "/" || path.is_empty()) {
            obs.bodies.retain(|b| b.path == path);
            obs.joints.retain(|j| j.path == path);
            if obs.bodies.is_empty() && obs.joints.is_empty() {
                return Err(EngineError::UnknownPath {
                    what: "body or joint",
                    path: path.to_string(),
                });
            }
        }
        Ok(obs)
    }

    fn state(&self) -> Result<SimState, EngineError> {
        let payload = Payload {
            time: self.time,
            step: self.step,
            world: self.world_state()?,
        };
        let encoded = serde_json::to_vec(&payload)
            .map_err(|e| EngineError::StateMismatch(format!("cannot encode the state: {e}")))?;
        Ok(SimState::seal(self.owner(), self.time, self.step, &encoded))
    }

    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError> {
        let body = state.open(&self.owner())?;
        let payload: Payload = serde_json::from_slice(body)
            .map_err(|e| EngineError::StateMismatch(format!("cannot decode the state: {e}")))?;
        let commands = decode_commands(&payload.world, self.layout.joints.len())?;
        self.pending.set(0);
        self.queued.borrow_mut().clear();
        self.worker
            .borrow_mut()
            .call(&json!({ "op": "set_state", "state": payload.world }))
            .map_err(|e| match e {
                EngineError::Invalid { message, .. } => EngineError::StateMismatch(message),
                other => other,
            })?;
        self.commands = commands;
        self.time = payload.time;
        self.step = payload.step;
        Ok(())
    }

    fn render(&self, camera_path: &str, params: &RenderParams) -> Result<Image, EngineError> {
        let view = View::new(&self.layout.cameras, camera_path, params)?;
        let mut dirs = Vec::with_capacity(view.pixels());
        for row in 0..view.height {
            for col in 0..view.width {
                dirs.push(view.ray(row, col));
            }
        }
        self.flush(false)?;
        let mut worker = self.worker.borrow_mut();
        let ids = worker.call(&json!({ "op": "ids" }))?;
        let hits = worker.call(&json!({
            "op": "render", "eye": view.eye, "dirs": dirs, "max_depth": view.max_depth,
        }))?;
        // (multibody, link) of each worker body → its index in the scene's body list.
        let mut instance: HashMap<(i64, i64), u32> = HashMap::new();
        for (scene_index, (_, worker_index)) in self.layout.bodies.iter().enumerate() {
            let id = &ids[*worker_index];
            if let (Some(uid), Some(link)) = (id[0].as_i64(), id[1].as_i64()) {
                instance.insert((uid, link), scene_index as u32);
            }
        }
        let mut depth = Vec::with_capacity(view.pixels());
        let mut instance_id = Vec::with_capacity(view.pixels());
        for hit in hits.as_array().map(Vec::as_slice).unwrap_or_default() {
            match (hit[0].as_i64(), hit[1].as_i64(), hit[2].as_f64()) {
                (Some(uid), Some(link), Some(d)) => {
                    depth.push(d as f32);
                    instance_id.push(instance.get(&(uid, link)).copied().unwrap_or(u32::MAX));
                }
                _ => {
                    depth.push(view.max_depth as f32);
                    instance_id.push(u32::MAX);
                }
            }
        }
        if depth.len() != view.pixels() {
            return Err(failed("the worker returned a short image"));
        }
        Ok(Image {
            width: view.width,
            height: view.height,
            depth,
            instance_id,
            instance_paths: self.layout.bodies.iter().map(|(p, _)| p.clone()).collect(),
        })
    }

    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError> {
        let world = self.world_state()?;
        let mut worker = Worker::spawn(&self.python)?;
        worker.call(&json!({ "op": "load", "plan": self.layout.plan }))?;
        worker.call(&json!({ "op": "set_state", "state": world }))?;
        Ok(Box::new(PybulletSimulation {
            python: self.python.clone(),
            layout: self.layout.clone(),
            worker: RefCell::new(worker),
            pending: Cell::new(0),
            queued: RefCell::new(Vec::new()),
            commands: self.commands.clone(),
            time: self.time,
            step: self.step,
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

/// The commands a worker state holds, in the layout's joint order.
fn decode_commands(world: &Value, joints: usize) -> Result<Vec<Option<JointCommand>>, EngineError> {
    let list = world["commands"].as_array().cloned().unwrap_or_default();
    if list.len() != joints {
        return Err(EngineError::StateMismatch(
            "the state was taken from a different scene".into(),
        ));
    }
    list.iter()
        .map(|c| {
            if c.is_null() {
                return Ok(None);
            }
            let v = c[1].as_f64().unwrap_or(f64::NAN);
            match c[0].as_str() {
                Some("position") => Ok(Some(JointCommand::Position(v))),
                Some("velocity") => Ok(Some(JointCommand::Velocity(v))),
                Some("effort") => Ok(Some(JointCommand::Effort(v))),
                _ => Err(EngineError::StateMismatch(
                    "unknown command in the state".into(),
                )),
            }
        })
        .collect()
}

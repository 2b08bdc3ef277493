//! Scene bodies and joints as a kinematic tree, and the rigid-pose algebra the
//! reduced-coordinate engines (MuJoCo, PyBullet) build their models with.

use crate::SceneError;
use crate::geometry::{normalize_quat, quat_conj, quat_mul, quat_rotate, sub};
use crate::scene::{Axis, BodyKind, JointKind, Pose, SceneModel};
use std::collections::HashMap;

/// Why a scene cannot become a tree of bodies, at which prim.
#[derive(Debug, Clone)]
pub struct PlanError {
    pub prim: String,
    pub message: String,
}

impl From<PlanError> for SceneError {
    fn from(e: PlanError) -> Self {
        SceneError::Prim {
            prim: e.prim,
            message: e.message,
        }
    }
}

/// The kinematic tree that reduced-coordinate engines (MuJoCo, PyBullet) need,
/// from the scene's flat bodies and joints.
pub struct Tree {
    /// For each body, the joint that attaches it to its parent (`None`: a root).
    pub parent_joint: Vec<Option<usize>>,
    /// Children of each body, and of the world (`roots`).
    pub children: Vec<Vec<usize>>,
    pub roots: Vec<usize>,
}

impl Tree {
    pub fn plan(scene: &SceneModel) -> Result<Tree, PlanError> {
        let index: HashMap<&str, usize> = scene
            .bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (b.path.as_str(), i))
            .collect();
        let n = scene.bodies.len();
        let mut parent_joint = vec![None; n];
        let mut parent = vec![None; n];
        for (j, joint) in scene.joints.iter().enumerate() {
            let err = |message: &str| PlanError {
                prim: joint.path.clone(),
                message: message.to_string(),
            };
            let body = |p: &Option<String>| -> Result<Option<usize>, PlanError> {
                match p {
                    None => Ok(None),
                    Some(p) => index
                        .get(p.as_str())
                        .copied()
                        .map(Some)
                        .ok_or_else(|| err(&format!("joins {p}, which is not a rigid body"))),
                }
            };
            let Some(child) = body(&joint.body1)? else {
                return Err(err(
                    "body1 is the world; the tree goes from parent (body0) to child (body1): swap the two",
                ));
            };
            let parent_body = body(&joint.body0)?;
            if scene.bodies[child].kind != BodyKind::Dynamic {
                return Err(err("its body1 must be a dynamic rigid body"));
            }
            if parent_joint[child].is_some() {
                return Err(err(
                    "closes a kinematic loop (its body1 already hangs from another joint); closing loops needs equality constraints, which this adapter does not write",
                ));
            }
            parent_joint[child] = Some(j);
            parent[child] = parent_body;
        }
        // Walk up from every body: a cycle never reaches the world.
        for (start, joint) in parent_joint.iter().enumerate() {
            let mut at = start;
            let mut seen = 0;
            while let Some(p) = parent[at] {
                at = p;
                seen += 1;
                if seen > n {
                    let j = joint.unwrap_or_default();
                    return Err(PlanError {
                        prim: scene.joints[j].path.clone(),
                        message: "is part of a cycle of joints".to_string(),
                    });
                }
            }
        }
        let mut children = vec![Vec::new(); n];
        let mut roots = Vec::new();
        for (b, p) in parent.iter().enumerate() {
            match p {
                Some(p) => children[*p].push(b),
                None => roots.push(b),
            }
        }
        for (b, body) in scene.bodies.iter().enumerate() {
            if body.kind == BodyKind::Kinematic
                && (parent[b].is_some() || parent_joint[b].is_some())
            {
                return Err(PlanError {
                    prim: body.path.clone(),
                    message: "a kinematic body hangs from the world only (it moves only when its pose is set)".into(),
                });
            }
        }
        Ok(Tree {
            parent_joint,
            children,
            roots,
        })
    }
}

/// The joint coordinate at which the child body sits where it was authored.
pub fn authored_coordinate(
    kind: JointKind,
    axis: Axis,
    parent_world: &Pose,
    frame0: &Pose,
    child_world: &Pose,
    frame1: &Pose,
) -> f64 {
    let w0 = compose(parent_world, frame0);
    let w1 = compose(child_world, frame1);
    let a = axis.unit();
    match kind {
        JointKind::Revolute => {
            let q = quat_mul(quat_conj(w0.rotation), w1.rotation);
            let s = q[0] * a[0] + q[1] * a[1] + q[2] * a[2];
            let angle = 2.0 * s.atan2(q[3]);
            // The shorter way round.
            if angle > std::f64::consts::PI {
                angle - std::f64::consts::TAU
            } else if angle < -std::f64::consts::PI {
                angle + std::f64::consts::TAU
            } else {
                angle
            }
        }
        JointKind::Prismatic => {
            let d = sub(w1.translation, w0.translation);
            let world_axis = quat_rotate(w0.rotation, a);
            d[0] * world_axis[0] + d[1] * world_axis[1] + d[2] * world_axis[2]
        }
        JointKind::Fixed | JointKind::Spherical => 0.0,
    }
}

/// Where a joint's child body sits in its parent when the joint is at zero:
/// the parent's joint frame `frame0`, then the child's `frame1` backwards.
/// A spherical joint's zero keeps the rotation the child was authored with
/// (reduced-coordinate engines then start its ball at identity), so its cone
/// is measured from the authored pose there.
pub fn joint_zero(
    kind: JointKind,
    parent_world: &Pose,
    frame0: &Pose,
    child_world: &Pose,
    frame1: &Pose,
) -> Pose {
    let turn = match kind {
        JointKind::Spherical => {
            let w0 = compose(parent_world, frame0);
            let w1 = compose(child_world, frame1);
            quat_mul(quat_conj(w0.rotation), w1.rotation)
        }
        _ => crate::geometry::IDENTITY,
    };
    compose(
        frame0,
        &compose(
            &Pose {
                translation: [0.0; 3],
                rotation: turn,
            },
            &inverse(frame1),
        ),
    )
}

/// A spherical joint's rotation (`[x, y, z, w]`, of the child's joint frame
/// in the parent's, the shorter way round) and angular velocity (of the
/// child relative to the parent, in the parent's joint frame), from the two
/// bodies' world orientations and angular velocities; `None` is the world.
/// `frame0`/`frame1` are [`crate::scene::Joint::spherical_frames`]'s.
pub fn spherical_state(
    parent: Option<([f64; 4], [f64; 3])>,
    child: ([f64; 4], [f64; 3]),
    frame0: &Pose,
    frame1: &Pose,
) -> ([f64; 4], [f64; 3]) {
    let (parent_q, parent_w) = parent.unwrap_or((crate::geometry::IDENTITY, [0.0; 3]));
    let q0 = quat_mul(parent_q, frame0.rotation);
    let q1 = quat_mul(child.0, frame1.rotation);
    let mut r = normalize_quat(quat_mul(quat_conj(q0), q1)).unwrap_or(crate::geometry::IDENTITY);
    if r[3] < 0.0 {
        r = r.map(|v| -v);
    }
    let w = quat_rotate(quat_conj(q0), sub(child.1, parent_w));
    (r, w)
}

/// The angle (radians, 0 to π) a rotation `[x, y, z, w]` turns by.
pub fn rotation_angle(q: [f64; 4]) -> f64 {
    let s = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
    2.0 * s.atan2(q[3].abs())
}

pub fn unit(path: &str, q: [f64; 4]) -> Result<[f64; 4], SceneError> {
    normalize_quat(q).ok_or_else(|| SceneError::Prim {
        prim: path.to_string(),
        message: "has a zero or non-finite rotation".into(),
    })
}

pub fn positive(path: &str, field: &str, v: f64) -> Result<f64, SceneError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(SceneError::Prim {
            prim: path.to_string(),
            message: format!("{field} must be positive, not {v}"),
        })
    }
}

pub fn non_negative(path: &str, field: &str, v: f64) -> Result<f64, SceneError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(SceneError::Prim {
            prim: path.to_string(),
            message: format!("{field} must be zero or more, not {v}"),
        })
    }
}

pub fn checked_pose(path: &str, p: &Pose) -> Result<Pose, SceneError> {
    if !p.translation.iter().all(|v| v.is_finite()) {
        return Err(SceneError::Prim {
            prim: path.to_string(),
            message: "has a non-finite position".into(),
        });
    }
    Ok(Pose {
        translation: p.translation,
        rotation: unit(path, p.rotation)?,
    })
}

pub fn compose(a: &Pose, b: &Pose) -> Pose {
    let t = quat_rotate(a.rotation, b.translation);
    Pose {
        translation: [
            a.translation[0] + t[0],
            a.translation[1] + t[1],
            a.translation[2] + t[2],
        ],
        rotation: quat_mul(a.rotation, b.rotation),
    }
}

pub fn inverse(p: &Pose) -> Pose {
    let r = quat_conj(p.rotation);
    let t = quat_rotate(r, p.translation);
    Pose {
        translation: [-t[0], -t[1], -t[2]],
        rotation: r,
    }
}

pub fn relative(frame: &Pose, world: &Pose) -> Pose {
    compose(&inverse(frame), world)
}

/// The volume of a shape (meshes: of their bounding box, a stated approximation).
pub fn volume(shape: &crate::scene::Shape) -> f64 {
    use crate::scene::Shape;
    use std::f64::consts::PI;
    match shape {
        Shape::Cuboid { half_extents: h } => 8.0 * h[0] * h[1] * h[2],
        Shape::Sphere { radius: r } => 4.0 / 3.0 * PI * r.powi(3),
        Shape::Capsule {
            radius: r,
            half_height: h,
            ..
        } => PI * r * r * (2.0 * h) + 4.0 / 3.0 * PI * r.powi(3),
        Shape::Cylinder {
            radius: r,
            half_height: h,
            ..
        } => PI * r * r * 2.0 * h,
        Shape::Plane { .. } => 0.0,
        Shape::TriMesh { vertices, .. }
        | Shape::ConvexDecomposition { vertices, .. }
        | Shape::ConvexHull { points: vertices } => {
            let mut lo = [f64::INFINITY; 3];
            let mut hi = [f64::NEG_INFINITY; 3];
            for v in vertices {
                for k in 0..3 {
                    lo[k] = lo[k].min(v[k]);
                    hi[k] = hi[k].max(v[k]);
                }
            }
            if vertices.is_empty() {
                0.0
            } else {
                (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])
            }
        }
    }
}

/// Whether USD collision groups keep every collider of `a` from every collider
/// of `b`, so the two bodies never touch.
pub fn never_touch(scene: &SceneModel, a: &crate::scene::Body, b: &crate::scene::Body) -> bool {
    let filters = |x: &[String], y: &[String]| {
        scene
            .collision_groups
            .iter()
            .filter(|g| x.contains(&g.path))
            .any(|g| {
                let listed = y.iter().any(|p| g.filtered.contains(p));
                if g.invert { !listed } else { listed }
            })
    };
    a.colliders.iter().all(|ca| {
        b.colliders
            .iter()
            .all(|cb| filters(&ca.groups, &cb.groups) || filters(&cb.groups, &ca.groups))
    })
}

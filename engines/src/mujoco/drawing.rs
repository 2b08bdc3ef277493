//! A MuJoCo model as a renderer sees it: a scene model whose bodies are the
//! model's bodies and whose colliders are its visible geoms (groups 0–2, as
//! MuJoCo's viewer shows them), coloured by their material's or their own
//! `rgba`. What MuJoCo computes (`xpos`, `xquat`, `cam_xpos`) places them.

use super::{quat_at, slice, vec3_at};
use crate::look::{SceneLook, ShapeLook, Surface};
use crate::scene::{
    Axis, Body, BodyKind, Camera, Collider, MassProperties, Material, Pose, SceneModel, Shape,
};
use mujoco_rs::mujoco_c as c;
use mujoco_rs::prelude::{MjModel, MjtObjBase};

/// Geoms in these groups and above are hidden, as in MuJoCo's viewer.
const HIDDEN_GROUP: i32 = 3;

/// A geom's `rgba` when the model gives none.
const DEFAULT_RGBA: [f32; 4] = [0.5, 0.5, 0.5, 1.0];

/// A model's drawable scene, and which MuJoCo body each of its bodies is.
pub struct Drawable {
    pub scene: SceneModel,
    body_ids: Vec<usize>,
}

impl Drawable {
    pub fn of(model: &MjModel) -> Drawable {
        let m = model.ffi();
        let ngeom = m.ngeom as usize;
        let (types, sizes, pos, bodies) = (
            slice(m.geom_type, ngeom),
            slice(m.geom_size, 3 * ngeom),
            slice(m.geom_pos, 3 * ngeom),
            slice(m.geom_bodyid, ngeom),
        );
        let (groups, matids, rgbas, mat_rgba) = (
            slice(m.geom_group, ngeom),
            slice(m.geom_matid, ngeom),
            slice(m.geom_rgba, 4 * ngeom),
            slice(m.mat_rgba, 4 * m.nmat as usize),
        );
        let body_name = |id: usize| match model.id_to_name(MjtObjBase::mjOBJ_BODY, id) {
            Some(n) if !n.is_empty() => format!("/{}", n.trim_start_matches('/')),
            _ if id == 0 => "/world".to_string(),
            _ => format!("/body{id}"),
        };
        let mut scene_bodies: Vec<Body> = (0..m.nbody as usize)
            .map(|id| Body {
                path: body_name(id),
                kind: if id == 0 {
                    BodyKind::Static
                } else {
                    BodyKind::Dynamic
                },
                pose: Pose::IDENTITY,
                mass: MassProperties::default(),
                linear_velocity: [0.0; 3],
                angular_velocity: [0.0; 3],
                colliders: Vec::new(),
            })
            .collect();
        let mut look = SceneLook::default();
        for g in 0..ngeom {
            if groups[g] >= HIDDEN_GROUP {
                continue;
            }
            // A geom's own rgba wins over its material's unless it is left
            // at MuJoCo's default, as MuJoCo's renderer has it.
            let own = &rgbas[4 * g..4 * g + 4];
            let rgba = match usize::try_from(matids[g]) {
                Ok(mat) if own == DEFAULT_RGBA && 4 * mat + 4 <= mat_rgba.len() => {
                    &mat_rgba[4 * mat..4 * mat + 4]
                }
                _ => own,
            };
            if rgba[3] <= 0.0 {
                continue;
            }
            let size = [sizes[3 * g], sizes[3 * g + 1], sizes[3 * g + 2]];
            let shape = match shape(m, g, types[g], size) {
                Some(shape) => shape,
                None => {
                    look.notes
                        .push(format!("geom {g}: a height field or SDF is not drawn"));
                    continue;
                }
            };
            let Some(body) = scene_bodies.get_mut(bodies[g] as usize) else {
                continue;
            };
            let path = match model.id_to_name(MjtObjBase::mjOBJ_GEOM, g) {
                Some(n) if !n.is_empty() => format!("{}/{}", body.path, n.trim_start_matches('/')),
                _ => format!("{}/geom{g}", body.path),
            };
            // MuJoCo's colours are display values: sRGB, near enough.
            let linear = |v: f32| f64::from(v).clamp(0.0, 1.0).powf(2.2);
            look.shapes.push(ShapeLook {
                collider: path.clone(),
                surface: Surface {
                    diffuse_color: [linear(rgba[0]), linear(rgba[1]), linear(rgba[2])],
                    ..Surface::default()
                },
                class: None,
            });
            body.colliders.push(Collider {
                path,
                shape,
                local_pose: Pose {
                    translation: [pos[3 * g], pos[3 * g + 1], pos[3 * g + 2]],
                    rotation: quat_at(m.geom_quat, g),
                },
                material: Material::default(),
                mass: None,
                density: None,
                groups: Vec::new(),
            });
        }
        // Bodies with nothing to draw are left out (the world keeps its place).
        let body_ids: Vec<usize> = (0..scene_bodies.len())
            .filter(|&id| id == 0 || !scene_bodies[id].colliders.is_empty())
            .collect();
        let mut keep = body_ids.iter().peekable();
        let mut index = 0;
        scene_bodies.retain(|_| {
            let kept = keep.next_if_eq(&&index).is_some();
            index += 1;
            kept
        });
        Drawable {
            scene: SceneModel {
                source: "mujoco model".into(),
                up_axis: Axis::Z,
                gravity: None,
                bodies: scene_bodies,
                joints: Vec::new(),
                cameras: Vec::new(),
                collision_groups: Vec::new(),
                native: None,
                look,
            },
            body_ids,
        }
    }

    /// Each drawn body's world pose in `data` (after `mj_kinematics`, which
    /// every step runs), in the scene's order.
    pub fn poses(&self, data: &c::mjData) -> Vec<Pose> {
        self.body_ids
            .iter()
            .map(|&id| Pose {
                translation: vec3_at(data.xpos, id),
                rotation: quat_at(data.xquat, id),
            })
            .collect()
    }
}

/// The model's camera `name` where it is in `data`, as a scene camera
/// (looking down its local −Z, +Y up).
pub fn camera(model: &MjModel, data: &c::mjData, name: &str) -> Option<Camera> {
    let m = model.ffi();
    let id = (0..m.ncam as usize).find(|&id| {
        model
            .id_to_name(MjtObjBase::mjOBJ_CAMERA, id)
            .is_some_and(|n| n.trim_start_matches('/') == name.trim_start_matches('/'))
    })?;
    let mut quat = [0.0; 4];
    // SAFETY: `id` is a camera of this model; cam_xmat holds ncam 3×3
    // matrices and cam_fovy ncam values.
    let fovy = unsafe {
        let mat = &*(data.cam_xmat.add(id * 9) as *const [f64; 9]);
        c::mju_mat2Quat(&mut quat, mat);
        *m.cam_fovy.add(id)
    };
    Some(Camera {
        path: format!("/{}", name.trim_start_matches('/')),
        pose: Pose {
            translation: vec3_at(data.cam_xpos, id),
            rotation: [quat[1], quat[2], quat[3], quat[0]],
        },
        fov_deg: fovy,
        near: 0.01,
        far: 100.0,
    })
}

/// A geom's shape in its own frame; `None` for what is not drawn.
fn shape(m: &c::mjModel, g: usize, kind: i32, size: [f64; 3]) -> Option<Shape> {
    use c::mjtGeom::*;
    Some(match kind {
        k if k == mjGEOM_PLANE as i32 => Shape::Plane { axis: Axis::Z },
        k if k == mjGEOM_SPHERE as i32 => Shape::Sphere { radius: size[0] },
        k if k == mjGEOM_CAPSULE as i32 => Shape::Capsule {
            radius: size[0],
            half_height: size[1],
            axis: Axis::Z,
        },
        k if k == mjGEOM_CYLINDER as i32 => Shape::Cylinder {
            radius: size[0],
            half_height: size[1],
            axis: Axis::Z,
        },
        k if k == mjGEOM_BOX as i32 => Shape::Cuboid { half_extents: size },
        k if k == mjGEOM_ELLIPSOID as i32 => {
            // Points on the surface; the hull is the ellipsoid to a few percent.
            let (rings, segments) = (8, 16);
            let mut points = Vec::with_capacity(rings * segments + 2);
            points.push([0.0, 0.0, size[2]]);
            points.push([0.0, 0.0, -size[2]]);
            for r in 1..rings {
                let theta = std::f64::consts::PI * r as f64 / rings as f64;
                for s in 0..segments {
                    let phi = std::f64::consts::TAU * s as f64 / segments as f64;
                    points.push([
                        size[0] * theta.sin() * phi.cos(),
                        size[1] * theta.sin() * phi.sin(),
                        size[2] * theta.cos(),
                    ]);
                }
            }
            Shape::ConvexHull { points }
        }
        k if k == mjGEOM_MESH as i32 => {
            let mesh = usize::try_from(*slice(m.geom_dataid, m.ngeom).get(g)?).ok()?;
            let start = usize::try_from(*slice(m.mesh_vertadr, m.nmesh).get(mesh)?).ok()?;
            let count = usize::try_from(*slice(m.mesh_vertnum, m.nmesh).get(mesh)?).ok()?;
            let verts = slice(m.mesh_vert, 3 * m.nmeshvert as usize);
            let points = verts
                .get(3 * start..3 * (start + count))?
                .chunks_exact(3)
                .map(|v| [f64::from(v[0]), f64::from(v[1]), f64::from(v[2])])
                .collect();
            // The collision shape MuJoCo uses for a mesh, too.
            Shape::ConvexHull { points }
        }
        _ => return None,
    })
}

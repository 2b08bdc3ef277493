//! The engine-neutral scene model. USD (and URDF, through USD) is read into this;
//! every engine builds its world from it. MJCF models are kept whole for MuJoCo. Units are SI: metres, kilograms, seconds,
//! radians. Rotations are unit quaternions `[x, y, z, w]`.

use serde::{Deserialize, Serialize};

/// A rigid transform.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub translation: [f64; 3],
    /// Unit quaternion `[x, y, z, w]`.
    pub rotation: [f64; 4],
}

impl Pose {
    pub const IDENTITY: Pose = Pose {
        translation: [0.0; 3],
        rotation: [0.0, 0.0, 0.0, 1.0],
    };

    pub fn from_translation(t: [f64; 3]) -> Pose {
        Pose {
            translation: t,
            rotation: [0.0, 0.0, 0.0, 1.0],
        }
    }
}

impl Default for Pose {
    fn default() -> Self {
        Pose::IDENTITY
    }
}

/// A principal axis, as USD's `axis` tokens name them.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Axis {
    X,
    Y,
    Z,
}

impl Axis {
    pub fn unit(self) -> [f64; 3] {
        match self {
            Axis::X => [1.0, 0.0, 0.0],
            Axis::Y => [0.0, 1.0, 0.0],
            Axis::Z => [0.0, 0.0, 1.0],
        }
    }
}

/// A `PhysicsCollisionGroup`: its colliders do not collide with colliders of
/// the groups it filters (or, inverted, collide only with those).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollisionGroup {
    pub path: String,
    pub filtered: Vec<String>,
    pub invert: bool,
}

/// Collision geometry, in the collider's local frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A box with these half extents along x, y, z (already scaled).
    Cuboid {
        half_extents: [f64; 3],
    },
    Sphere {
        radius: f64,
    },
    /// A capsule whose cylindrical part spans `2 * half_height` along `axis`.
    Capsule {
        radius: f64,
        half_height: f64,
        axis: Axis,
    },
    Cylinder {
        radius: f64,
        half_height: f64,
        axis: Axis,
    },
    /// An infinite plane through the local origin with this normal axis.
    Plane {
        axis: Axis,
    },
    /// A triangle mesh (USD `Mesh` with no approximation), vertices already
    /// scaled. Engines without moving triangle meshes use its convex hull on
    /// dynamic bodies, and say so in their validation findings.
    TriMesh {
        vertices: Vec<[f64; 3]>,
        triangles: Vec<[u32; 3]>,
    },
    /// The convex hull of these points (`convexHull`, `boundingCube`).
    ConvexHull {
        points: Vec<[f64; 3]>,
    },
    /// A mesh split into convex parts (`convexDecomposition`).
    ConvexDecomposition {
        vertices: Vec<[f64; 3]>,
        triangles: Vec<[u32; 3]>,
    },
}

/// Surface properties of a collider.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Material {
    pub static_friction: f64,
    pub dynamic_friction: f64,
    pub restitution: f64,
}

impl Default for Material {
    fn default() -> Self {
        Material {
            static_friction: 0.5,
            dynamic_friction: 0.5,
            restitution: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collider {
    /// The prim the collider came from.
    pub path: String,
    pub shape: Shape,
    /// Pose relative to the owning body.
    pub local_pose: Pose,
    pub material: Material,
    /// Mass contributed by this collider when the body gives none (from MassAPI on
    /// the collider prim, or its density times volume).
    pub mass: Option<f64>,
    pub density: Option<f64>,
    /// Paths of the collision groups this collider belongs to. (No
    /// `skip_serializing_if`: the model travels as bincode, which is not
    /// self-describing.)
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyKind {
    /// Moved by the simulation.
    Dynamic,
    /// Never moves (colliders without a rigid body, or bodies marked static).
    Static,
    /// Moved only by commands (`physics:kinematicEnabled`).
    Kinematic,
}

/// Mass properties given explicitly in the scene. Missing parts are computed from
/// the colliders by the engine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MassProperties {
    pub mass: Option<f64>,
    pub density: Option<f64>,
    pub center_of_mass: Option<[f64; 3]>,
    pub diagonal_inertia: Option<[f64; 3]>,
    /// Rotation of the inertia principal axes, `[x, y, z, w]`.
    pub principal_axes: Option<[f64; 4]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// The prim path, unique in the scene; commands and observations use it.
    pub path: String,
    pub kind: BodyKind,
    /// World pose at load time.
    pub pose: Pose,
    pub mass: MassProperties,
    pub linear_velocity: [f64; 3],
    pub angular_velocity: [f64; 3],
    pub colliders: Vec<Collider>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JointKind {
    /// Rotation about `axis`.
    Revolute,
    /// Translation along `axis`.
    Prismatic,
    /// No relative motion.
    Fixed,
    /// Free rotation about the joint's anchor (a ball joint), optionally
    /// within a cone about `axis`; no translation.
    Spherical,
}

impl JointKind {
    /// Whether the joint moves along or about one axis, so that one number
    /// (its coordinate) says where it is and one command drives it.
    pub fn is_single_axis(self) -> bool {
        matches!(self, JointKind::Revolute | JointKind::Prismatic)
    }

    pub fn name(self) -> &'static str {
        match self {
            JointKind::Revolute => "revolute",
            JointKind::Prismatic => "prismatic",
            JointKind::Fixed => "fixed",
            JointKind::Spherical => "spherical",
        }
    }
}

/// A drive on a joint's free axis (UsdPhysics DriveAPI), in SI units: the angular
/// stiffness of USD (per degree) is converted to per radian.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drive {
    pub stiffness: f64,
    pub damping: f64,
    pub target_position: f64,
    pub target_velocity: f64,
    /// Largest force or torque the drive may apply; `None` is unlimited.
    pub max_force: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joint {
    pub path: String,
    pub kind: JointKind,
    /// Paths of the two bodies; `None` is the world.
    pub body0: Option<String>,
    pub body1: Option<String>,
    /// The joint frame in each body's local frame.
    pub local_pose0: Pose,
    pub local_pose1: Pose,
    pub axis: Axis,
    /// Lower and upper limit (radians or metres), `None` when unlimited.
    pub limits: Option<(f64, f64)>,
    pub drive: Option<Drive>,
    /// A spherical joint's cone (UsdPhysics `coneAngle0Limit`, `coneAngle1Limit`),
    /// in radians: how far `axis` may swing toward the next axis (Y after X,
    /// Z after Y, X after Z) and toward the one after that. `None` is free.
    #[serde(default)]
    pub cone_limits: Option<[f64; 2]>,
}

impl Joint {
    /// A spherical joint's cone, each side checked to lie between 0 and π:
    /// the one check every engine relies on.
    pub fn cone(&self) -> Result<Option<[f64; 2]>, crate::SceneError> {
        match self.cone_limits {
            Some(cone) => {
                for c in cone {
                    if !(0.0..=std::f64::consts::PI).contains(&c) {
                        return Err(crate::SceneError::Prim {
                            prim: self.path.clone(),
                            message: format!("a cone limit of {c} rad is not between 0 and π"),
                        });
                    }
                }
                Ok(Some(cone))
            }
            None => Ok(None),
        }
    }

    /// A spherical joint's frames in each body, turned so that the cone's axis
    /// is X and the next axis Y: the frame every engine builds the joint in
    /// and reports its rotation in.
    pub fn spherical_frames(&self) -> (Pose, Pose) {
        // Cyclic turns keep "the next axis" next: X→Y→Z→X.
        const NEXT: [f64; 4] = [0.5, 0.5, 0.5, 0.5];
        const AFTER_NEXT: [f64; 4] = [-0.5, -0.5, -0.5, 0.5];
        let turn = match self.axis {
            Axis::X => crate::geometry::IDENTITY,
            Axis::Y => NEXT,
            Axis::Z => AFTER_NEXT,
        };
        let turned = |p: &Pose| Pose {
            translation: p.translation,
            rotation: crate::geometry::quat_mul(p.rotation, turn),
        };
        (turned(&self.local_pose0), turned(&self.local_pose1))
    }
}

/// A camera kept for rendering (UsdGeomCamera).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    pub path: String,
    /// World pose; the camera looks down its local -Z with +Y up, as in USD.
    pub pose: Pose,
    /// Vertical field of view in degrees.
    pub fov_deg: f64,
    pub near: f64,
    pub far: f64,
}

/// A whole scene, ready for an engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneModel {
    /// The root file the scene was read from.
    pub source: String,
    pub up_axis: Axis,
    /// Gravity from the scene's PhysicsScene, if it has one.
    pub gravity: Option<[f64; 3]>,
    pub bodies: Vec<Body>,
    pub joints: Vec<Joint>,
    pub cameras: Vec<Camera>,
    /// USD collision groups, for filtering which colliders touch.
    #[serde(default)]
    pub collision_groups: Vec<CollisionGroup>,
    /// A scene in one engine's own format, which only that engine loads (an
    /// MJCF model for MuJoCo). Its bodies and joints are then the engine's to
    /// name, and the engine-neutral lists above stay empty.
    #[serde(default)]
    pub native: Option<NativeScene>,
    /// Surfaces, classes and lights, for rendering (not physics).
    #[serde(default)]
    pub look: crate::look::SceneLook,
}

/// A scene file in an engine's own format, kept whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeScene {
    pub format: NativeFormat,
    /// The file it was read from; files it includes resolve next to it.
    pub path: String,
    /// The file's text, so that the scene's fingerprint covers its content.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeFormat {
    /// MuJoCo's XML model format.
    Mjcf,
    /// An infrastructure twin's services, traffic, chaos and assertions
    /// (JSON of `hanzo_twin_infra::TwinSource`), run by the
    /// discrete-event simulator instead of physics.
    Infrastructure,
}

/// Whether `path` names an MJCF model (`.xml` or `.mjcf`).
pub fn is_mjcf(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".xml") || lower.ends_with(".mjcf")
}

/// Reads a scene file: USD into the engine-neutral model, MJCF kept whole for
/// MuJoCo.
pub fn read_scene_file(path: &std::path::Path) -> Result<SceneModel, crate::SceneError> {
    if is_mjcf(&path.to_string_lossy()) {
        return read_mjcf(path);
    }
    crate::usd::load_scene(path)
}

fn read_mjcf(path: &std::path::Path) -> Result<SceneModel, crate::SceneError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| crate::SceneError::Read {
        file: file.clone(),
        message: format!("cannot read the MJCF file: {e}"),
    })?;
    // MuJoCo parses the model when it loads it; here only check that it is one.
    if !text.contains("<mujoco") {
        return Err(crate::SceneError::Read {
            file,
            message: "not an MJCF model: no <mujoco> element".to_string(),
        });
    }
    Ok(SceneModel {
        source: file.clone(),
        up_axis: Axis::Z,
        gravity: None,
        bodies: Vec::new(),
        joints: Vec::new(),
        cameras: Vec::new(),
        collision_groups: Vec::new(),
        native: Some(NativeScene {
            format: NativeFormat::Mjcf,
            path: file,
            text,
        }),
        look: crate::look::SceneLook::default(),
    })
}

/// What a viewer needs to draw a scene: each body's shapes, without the
/// physics (materials, masses, joints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneGeometry {
    pub up_axis: Axis,
    pub bodies: Vec<BodyGeometry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyGeometry {
    pub path: String,
    pub kind: BodyKind,
    /// The pose the body was authored at (where a still body stays).
    pub pose: Pose,
    pub shapes: Vec<ShapeGeometry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeGeometry {
    pub path: String,
    pub shape: Shape,
    /// In the body's frame.
    pub local_pose: Pose,
}

impl SceneModel {
    /// The scene's bodies and their shapes, for drawing.
    pub fn geometry(&self) -> SceneGeometry {
        SceneGeometry {
            up_axis: self.up_axis,
            bodies: self
                .bodies
                .iter()
                .map(|b| BodyGeometry {
                    path: b.path.clone(),
                    kind: b.kind,
                    pose: b.pose,
                    shapes: b
                        .colliders
                        .iter()
                        .map(|c| ShapeGeometry {
                            path: c.path.clone(),
                            shape: c.shape.clone(),
                            local_pose: c.local_pose,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Gravity to use when the twin definition gives none.
    pub fn default_gravity(&self) -> [f64; 3] {
        self.gravity.unwrap_or_else(|| {
            let u = self.up_axis.unit();
            [-9.81 * u[0], -9.81 * u[1], -9.81 * u[2]]
        })
    }

    /// The index of the body at `path` in `bodies`.
    pub fn body_index(&self, path: &str) -> Option<usize> {
        self.bodies.iter().position(|b| b.path == path)
    }

    pub fn body(&self, path: &str) -> Option<&Body> {
        self.bodies.iter().find(|b| b.path == path)
    }

    /// A stable fingerprint of the scene's content (FNV-1a over its JSON form), used
    /// to refuse restoring a state into a simulation of a different scene.
    pub fn fingerprint(&self) -> u64 {
        // A native scene adds its text; USD scenes keep the fingerprints their
        // checkpoints were made with.
        let json = match &self.native {
            None => serde_json::to_vec(&(&self.bodies, &self.joints)),
            Some(native) => serde_json::to_vec(&(&self.bodies, &self.joints, native)),
        }
        .unwrap_or_default();
        crate::fnv1a(&json)
    }
}

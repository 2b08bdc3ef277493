//! The engine-neutral scene model. USD (and later URDF and MJCF) is read into this;
//! every engine builds its world from it. Units are SI: metres, kilograms, seconds,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl SceneModel {
    /// Gravity to use when the twin definition gives none.
    pub fn default_gravity(&self) -> [f64; 3] {
        self.gravity.unwrap_or_else(|| {
            let u = self.up_axis.unit();
            [-9.81 * u[0], -9.81 * u[1], -9.81 * u[2]]
        })
    }

    pub fn body(&self, path: &str) -> Option<&Body> {
        self.bodies.iter().find(|b| b.path == path)
    }

    /// A stable fingerprint of the scene's content (FNV-1a over its JSON form), used
    /// to refuse restoring a state into a simulation of a different scene.
    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_vec(&(&self.bodies, &self.joints)).unwrap_or_default();
        json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

//! USD → scene model.
//!
//! [`load_scene`] opens a `.usda`, `.usdc` or `.usdz` stage with the `openusd` crate,
//! which composes sublayers, references and payloads (relationship targets are
//! remapped through the arcs), and reads the UsdPhysics subset a robot cell needs:
//!
//! - stage metadata `upAxis` (default Z), `metersPerUnit` and `kilogramsPerUnit`:
//!   every length, mass, velocity, force and inertia is converted to SI;
//! - the first `PhysicsScene`: gravity direction and magnitude, with USD's defaults;
//! - `PhysicsRigidBodyAPI` prims: kind (dynamic, kinematic, disabled = static), world
//!   pose from the composed `xformOp`s, initial velocities, `PhysicsMassAPI`;
//! - `PhysicsCollisionAPI` prims on `Cube`, `Sphere`, `Capsule`, `Cylinder`,
//!   `Plane` and `Mesh` (with `physics:approximation` none, convexHull,
//!   convexDecomposition, boundingCube or meshSimplification), scaled by their world scale, owned by the nearest rigid-body
//!   ancestor-or-self (or made their own static body), with the physics material
//!   bound through `material:binding:physics` or `material:binding`;
//! - revolute, prismatic and fixed joints with limits and `PhysicsDriveAPI` drives
//!   (angles in degrees become radians, angular gains per degree become per radian);
//! - `Camera` prims;
//! - how it looks, for rendering (`looks`): each collider's `UsdPreviewSurface`
//!   bound for the preview purpose (or its `primvars:displayColor`), its
//!   semantic class, and the UsdLux lights.
//!
//! What the scene model cannot represent and would change the physics if dropped
//! (spherical, distance and generic D6 joints, bounding-sphere or SDF mesh approximations, acceleration drives,
//! collision filtering, breakable joints, …) is an [`SceneError::Prim`] naming
//! the prim, never silently ignored. Values are read at the default time, or at the
//! earliest time sample when an attribute is only time-sampled.

pub mod export;
mod looks;
pub(crate) mod math;
mod values;

use std::collections::{HashMap, HashSet};
use std::f64::consts::PI;
use std::panic::{AssertUnwindSafe, catch_unwind};

use openusd::gf::Matrix4d;
use openusd::schemas::geom::{Imageable, Xformable};
use openusd::sdf::{self, Value};
use openusd::usd::{Prim, PrimPredicate, SchemaBase, SchemaKind, Stage, TimeCode};

use crate::SceneError;
use crate::geometry;
use crate::scene::{
    Axis, Body, BodyKind, Camera, Collider, CollisionGroup, Drive, Joint, JointKind,
    MassProperties, Material, Pose, SceneModel, Shape,
};
use math::Decomposed;

/// Degrees to radians.
const DEG: f64 = PI / 180.0;
/// Earth gravity in m/s², USD's meaning of an unauthored `gravityMagnitude`.
const EARTH_GRAVITY: f64 = 9.81;
/// `breakForce`/`breakTorque` at or above this are "unbreakable" (exporters write
/// `FLT_MAX` rather than `inf`).
const UNBREAKABLE: f64 = 1e30;

const API_RIGID_BODY: &str = "PhysicsRigidBodyAPI";
const API_COLLISION: &str = "PhysicsCollisionAPI";
const API_MATERIAL: &str = "PhysicsMaterialAPI";
const API_FILTERED_PAIRS: &str = "PhysicsFilteredPairsAPI";
const API_DRIVE_PREFIX: &str = "PhysicsDriveAPI:";

/// Reads a .usda or .usdc file (with its sublayers and references composed) into a
/// SceneModel.
///
/// A missing, unreadable or unparsable file (or one whose composition fails, such
/// as a reference to a missing file) is [`SceneError::Read`]; a prim with
/// malformed or unsupported physics is [`SceneError::Prim`]. Never panics:
/// a panic inside the USD library is caught and reported as `SceneRead`.
pub fn load_scene(path: &std::path::Path) -> Result<SceneModel, SceneError> {
    let file = path.display().to_string();
    // openusd is young and may panic on inputs it does not expect; a bad scene
    // file must not take the node down. Nothing outlives the closure but the
    // result, so no broken state can be observed after an unwind.
    match catch_unwind(AssertUnwindSafe(|| read_scene(path, &file))) {
        Ok(result) => result,
        Err(payload) => Err(SceneError::Read {
            file,
            message: format!(
                "the USD reader failed on this file: {}",
                crate::panic_text(&*payload)
            ),
        }),
    }
}

fn read_scene(path: &std::path::Path, file: &str) -> Result<SceneModel, SceneError> {
    let read_err = |message: String| SceneError::Read {
        file: file.to_string(),
        message,
    };
    // Checked here for a plain message; openusd's own would name resolver internals.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(read_err("not a file".to_string())),
        Err(e) => return Err(read_err(format!("cannot read the file: {e}"))),
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| read_err("the path is not valid UTF-8".to_string()))?;
    let stage = Stage::open(path_str).map_err(|e| read_err(format!("{e:#}")))?;
    Reader::new(stage, file)?.read()
}

/// Refuses prim names that are not identifiers before anything walks them:
/// openusd's text parser accepts any quoted name, and a name such as `W}rld`
/// reads as a variant selection in a path, whose ancestor walk never ends.
fn check_prim_names(stage: &Stage) -> Result<(), String> {
    let mut stack = vec![sdf::Path::abs_root()];
    while let Some(path) = stack.pop() {
        let names = stage
            .prim(path.clone())
            .child_names()
            .map_err(|e| format!("cannot compose {path}: {e:#}"))?;
        for name in names {
            if !sdf::Path::is_valid_identifier(name.as_str()) {
                return Err(format!(
                    "prim name {:?} under {path} is not a valid identifier",
                    name.as_str()
                ));
            }
            let child = path
                .append_path(name.as_str())
                .map_err(|e| format!("bad prim path under {path}: {e:#}"))?;
            stack.push(child);
        }
    }
    Ok(())
}

/// `path` and its ancestors up to (not including) the pseudo-root, nearest
/// first. Each step must shorten the path, so a malformed path cannot loop.
fn lineage(path: &sdf::Path) -> Vec<sdf::Path> {
    let mut out = Vec::new();
    let mut current = path.clone();
    while !current.is_abs_root() && !current.is_empty() {
        let parent = current.parent();
        out.push(current.clone());
        match parent {
            Some(p) if p.as_str().len() < current.as_str().len() => current = p,
            _ => break,
        }
    }
    out
}

/// What the traversal learned about one composed prim.
struct PrimInfo {
    path: sdf::Path,
    type_name: String,
    apis: Vec<String>,
}

impl PrimInfo {
    fn has_api(&self, api: &str) -> bool {
        self.apis.iter().any(|a| a == api)
    }
}

/// Lets openusd's `xformOpOrder` evaluation run on any prim, whatever its type.
struct AnyXformable(Prim);

impl SchemaBase for AnyXformable {
    const KIND: SchemaKind = SchemaKind::ConcreteTyped;

    fn prim(&self) -> &Prim {
        &self.0
    }
}

impl Imageable for AnyXformable {}
impl Xformable for AnyXformable {}

/// Where one end of a joint attaches.
struct Attachment {
    /// The body, `None` for the world.
    body: Option<String>,
    /// That body's world pose in metres (identity for the world).
    body_pose: Pose,
    /// World matrix (scene units) of the prim the joint's local frame is authored
    /// in; `None` when the relationship is empty and the frame is the world.
    frame: Option<Matrix4d>,
}

struct Reader {
    stage: Stage,
    file: String,
    up_axis: Axis,
    meters_per_unit: f64,
    kilograms_per_unit: f64,
    /// Every composed, active, defined prim, parents before children.
    prims: Vec<PrimInfo>,
    /// Prim path → index into `prims`.
    index: HashMap<String, usize>,
    /// Memoized world matrices (scene units), by prim path.
    world: HashMap<String, Matrix4d>,
}

impl Reader {
    fn new(stage: Stage, file: &str) -> Result<Reader, SceneError> {
        let read_err = |message: String| SceneError::Read {
            file: file.to_string(),
            message,
        };
        check_prim_names(&stage).map_err(read_err)?;
        let mut paths = Vec::new();
        stage
            .traverse(PrimPredicate::DEFAULT_PROXIES, |p| paths.push(p.clone()))
            .map_err(|e| read_err(format!("cannot compose the stage: {e:#}")))?;
        let mut prims = Vec::with_capacity(paths.len());
        for path in paths {
            let prim = stage.prim(path.clone());
            let type_name = prim
                .type_name()
                .map_err(|e| read_err(format!("cannot compose {path}: {e:#}")))?
                .map(|t| t.as_str().to_string())
                .unwrap_or_default();
            let apis = prim
                .api_schemas()
                .map_err(|e| read_err(format!("cannot compose {path}: {e:#}")))?
                .into_iter()
                .map(|t| t.as_str().to_string())
                .collect();
            prims.push(PrimInfo {
                path,
                type_name,
                apis,
            });
        }
        // Composition reports a missing or broken sublayer/reference as a
        // recoverable error and carries on without it; a scene missing part of
        // its content would simulate something else, so it is refused.
        let errors = stage.composition_errors();
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(read_err(format!("composition failed: {}", list.join("; "))));
        }

        let up_axis = match stage.stage_metadata("upAxis") {
            Ok(None) => Axis::Z,
            Ok(Some(v)) => match values::token(&v) {
                Some("Z") => Axis::Z,
                Some("Y") => Axis::Y,
                Some("X") => Axis::X,
                _ => {
                    return Err(read_err(format!(
                        "upAxis must be \"Y\" or \"Z\", found {v:?}"
                    )));
                }
            },
            Err(e) => return Err(read_err(format!("cannot read upAxis: {e:#}"))),
        };
        let unit = |key: &str| -> Result<f64, SceneError> {
            match stage.stage_metadata(key) {
                Ok(None) => Ok(1.0),
                Ok(Some(v)) => match values::scalar(&v) {
                    Some(u) if u.is_finite() && u > 0.0 => Ok(u),
                    _ => Err(read_err(format!(
                        "{key} must be a positive number, found {v:?}"
                    ))),
                },
                Err(e) => Err(read_err(format!("cannot read {key}: {e:#}"))),
            }
        };
        let meters_per_unit = unit("metersPerUnit")?;
        let kilograms_per_unit = unit("kilogramsPerUnit")?;

        let index = prims
            .iter()
            .enumerate()
            .map(|(i, p)| (p.path.as_str().to_string(), i))
            .collect();
        Ok(Reader {
            stage,
            file: file.to_string(),
            up_axis,
            meters_per_unit,
            kilograms_per_unit,
            prims,
            index,
            world: HashMap::new(),
        })
    }

    fn read(mut self) -> Result<SceneModel, SceneError> {
        let mut gravity = None;
        let mut bodies: Vec<Body> = Vec::new();
        // Body path → index into `bodies`.
        let mut body_index: HashMap<String, usize> = HashMap::new();
        let rigid: HashSet<String> = self
            .prims
            .iter()
            .filter(|p| p.has_api(API_RIGID_BODY))
            .map(|p| p.path.as_str().to_string())
            .collect();
        let mut joint_prims = Vec::new();
        let mut cameras = Vec::new();

        for i in 0..self.prims.len() {
            self.check_supported(i)?;
            let info = &self.prims[i];
            let path = info.path.clone();
            let type_name = info.type_name.clone();
            let is_body = info.has_api(API_RIGID_BODY);
            let is_collider = info.has_api(API_COLLISION);

            if type_name == "PhysicsScene" && gravity.is_none() {
                gravity = Some(self.gravity(&path)?);
            }
            if is_body {
                let body = self.body(&path)?;
                body_index.insert(body.path.clone(), bodies.len());
                bodies.push(body);
            }
            if is_collider {
                // Parents come before children, so the owner is already read.
                let owner = lineage(&path)
                    .into_iter()
                    .find(|a| rigid.contains(a.as_str()))
                    .and_then(|a| body_index.get(a.as_str()).copied());
                if let Some(collider) = self.collider(i, owner.map(|b| &bodies[b]))? {
                    match owner {
                        Some(b) => bodies[b].colliders.push(collider),
                        None => {
                            // A collider without a rigid body is static geometry,
                            // its own body at its own pose.
                            let body = Body {
                                path: path.as_str().to_string(),
                                kind: BodyKind::Static,
                                pose: collider.local_pose,
                                mass: MassProperties::default(),
                                linear_velocity: [0.0; 3],
                                angular_velocity: [0.0; 3],
                                colliders: vec![Collider {
                                    local_pose: Pose::IDENTITY,
                                    ..collider
                                }],
                            };
                            body_index.insert(body.path.clone(), bodies.len());
                            bodies.push(body);
                        }
                    }
                }
            }
            match type_name.as_str() {
                "PhysicsRevoluteJoint"
                | "PhysicsPrismaticJoint"
                | "PhysicsFixedJoint"
                | "PhysicsSphericalJoint" => joint_prims.push(i),
                "Camera" => cameras.push(self.camera(&path)?),
                _ => {}
            }
        }

        let mut joints = Vec::new();
        for i in joint_prims {
            if let Some(joint) = self.joint(i, &bodies, &body_index)? {
                joints.push(joint);
            }
        }
        let collision_groups = self.collision_groups(&mut bodies)?;
        let look = self.look(&bodies)?;

        Ok(SceneModel {
            source: self.file.clone(),
            up_axis: self.up_axis,
            gravity,
            bodies,
            joints,
            cameras,
            collision_groups,
            native: None,
            look,
        })
    }

    /// `PhysicsCollisionGroup`s and their members: the colliders at or below the
    /// prims of `collection:colliders:includes`, less those at or below
    /// `collection:colliders:excludes`.
    fn collision_groups(&self, bodies: &mut [Body]) -> Result<Vec<CollisionGroup>, SceneError> {
        let mut groups = Vec::new();
        for info in self
            .prims
            .iter()
            .filter(|p| p.type_name == "PhysicsCollisionGroup")
        {
            let path = &info.path;
            let includes = self.targets(path, "collection:colliders:includes")?;
            let excludes = self.targets(path, "collection:colliders:excludes")?;
            let under = |collider: &str, roots: &[sdf::Path]| {
                roots.iter().any(|r| {
                    let r = r.as_str();
                    collider == r || collider.starts_with(&format!("{}/", r.trim_end_matches('/')))
                })
            };
            for body in bodies.iter_mut() {
                for c in &mut body.colliders {
                    if under(&c.path, &includes) && !under(&c.path, &excludes) {
                        c.groups.push(path.as_str().to_string());
                    }
                }
            }
            groups.push(CollisionGroup {
                path: path.as_str().to_string(),
                filtered: self
                    .targets(path, "physics:filteredGroups")?
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
                invert: self
                    .bool_attr(path, "physics:invertFilteredGroups")?
                    .unwrap_or(false),
            });
        }
        Ok(groups)
    }

    // ----- errors -------------------------------------------------------------

    fn prim_err(&self, path: &sdf::Path, message: impl Into<String>) -> SceneError {
        SceneError::Prim {
            prim: path.as_str().to_string(),
            message: message.into(),
        }
    }

    /// Refuses physics the scene model cannot represent, so it is not dropped
    /// silently.
    fn check_supported(&self, i: usize) -> Result<(), SceneError> {
        let info = &self.prims[i];
        let path = &info.path;
        let t = info.type_name.as_str();
        match t {
            "PhysicsRevoluteJoint"
            | "PhysicsPrismaticJoint"
            | "PhysicsFixedJoint"
            | "PhysicsSphericalJoint" => {}
            "PhysicsDistanceJoint" | "PhysicsJoint" => {
                let what = match t {
                    "PhysicsDistanceJoint" => "distance joints",
                    _ => "generic (D6) joints",
                };
                return Err(self.prim_err(
                    path,
                    format!("{what} are not supported (only revolute, prismatic, spherical and fixed joints)"),
                ));
            }
            _ if t.ends_with("Joint") && (t.starts_with("Physics") || t.starts_with("Physx")) => {
                return Err(self.prim_err(
                    path,
                    format!("joint type {t} is not supported (only revolute, prismatic, spherical and fixed joints)"),
                ));
            }
            "PhysicsCollisionGroup" if self.token_attr(path, "physics:mergeGroup")?.is_some() => {
                return Err(self.prim_err(path, "merged collision groups are not supported"));
            }
            _ => {}
        }
        if info.has_api(API_FILTERED_PAIRS)
            && !self.targets(path, "physics:filteredPairs")?.is_empty()
        {
            return Err(self.prim_err(path, "filtered collision pairs are not supported"));
        }
        Ok(())
    }

    // ----- attribute access ---------------------------------------------------

    /// The attribute's value at the default time (or its earliest time sample);
    /// `None` when unauthored or blocked.
    fn value(&self, path: &sdf::Path, name: &str) -> Result<Option<Value>, SceneError> {
        let attr = path
            .append_property(name)
            .map_err(|e| self.prim_err(path, format!("bad property name {name}: {e:#}")))?;
        match self
            .stage
            .attribute(attr)
            .get_at::<Value>(TimeCode::EARLIEST)
        {
            Ok(Some(Value::ValueBlock)) | Ok(None) => Ok(None),
            Ok(Some(v)) => Ok(Some(v)),
            Err(e) => Err(self.prim_err(path, format!("cannot read {name}: {e:#}"))),
        }
    }

    fn typed<T>(
        &self,
        path: &sdf::Path,
        name: &str,
        what: &str,
        decode: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, SceneError> {
        match self.value(path, name)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).ok_or_else(|| {
                self.prim_err(
                    path,
                    format!("{name} should be {what}, found {}", values::type_name(&v)),
                )
            }),
        }
    }

    fn f64_attr(&self, path: &sdf::Path, name: &str) -> Result<Option<f64>, SceneError> {
        self.typed(path, name, "a number", values::scalar)
    }

    fn vec2_attr(&self, path: &sdf::Path, name: &str) -> Result<Option<[f64; 2]>, SceneError> {
        self.typed(path, name, "a 2-vector", values::vec2)
    }

    fn vec3_attr(&self, path: &sdf::Path, name: &str) -> Result<Option<[f64; 3]>, SceneError> {
        self.typed(path, name, "a 3-vector", values::vec3)
    }

    fn quat_attr(&self, path: &sdf::Path, name: &str) -> Result<Option<[f64; 4]>, SceneError> {
        self.typed(path, name, "a quaternion", values::quat_xyzw)
    }

    fn bool_attr(&self, path: &sdf::Path, name: &str) -> Result<Option<bool>, SceneError> {
        self.typed(path, name, "a bool", values::boolean)
    }

    fn token_attr(&self, path: &sdf::Path, name: &str) -> Result<Option<String>, SceneError> {
        self.typed(path, name, "a token", |v| {
            values::token(v).map(str::to_string)
        })
    }

    /// A finite number, or an error naming the attribute.
    fn finite(&self, path: &sdf::Path, name: &str, v: f64) -> Result<f64, SceneError> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.prim_err(path, format!("{name} must be finite, found {v}")))
        }
    }

    fn finite3(&self, path: &sdf::Path, name: &str, v: [f64; 3]) -> Result<[f64; 3], SceneError> {
        if v.iter().all(|x| x.is_finite()) {
            Ok(v)
        } else {
            Err(self.prim_err(path, format!("{name} must be finite, found {v:?}")))
        }
    }

    fn targets(&self, path: &sdf::Path, name: &str) -> Result<Vec<sdf::Path>, SceneError> {
        let rel = path
            .append_property(name)
            .map_err(|e| self.prim_err(path, format!("bad property name {name}: {e:#}")))?;
        let targets = self
            .stage
            .relationship(rel)
            .targets()
            .map_err(|e| self.prim_err(path, format!("cannot read {name}: {e:#}")))?;
        Ok(targets
            .into_iter()
            .map(|t| {
                if t.is_abs() {
                    t
                } else {
                    path.make_absolute(&t)
                }
            })
            .collect())
    }

    // ----- transforms ---------------------------------------------------------

    /// World matrix of a prim in scene units, honouring `xformOpOrder`,
    /// `!invert!` and `!resetXformStack!`.
    fn world_matrix(&mut self, path: &sdf::Path) -> Result<Matrix4d, SceneError> {
        if path.is_abs_root() {
            return Ok(Matrix4d::IDENTITY);
        }
        if let Some(m) = self.world.get(path.as_str()) {
            return Ok(*m);
        }
        let view = AnyXformable(self.stage.prim(path.clone()));
        // Each op names an attribute; openusd turns it into a property path, and a
        // name that is not an identifier (say `x}ormOp:translate`) sends its path
        // handling into an endless loop, so the names are checked first.
        let order = view
            .xform_op_order()
            .map_err(|e| self.prim_err(path, format!("cannot read xformOpOrder: {e:#}")))?;
        for (i, op) in order.iter().flatten().enumerate() {
            let name = op.strip_prefix("!invert!").unwrap_or(op);
            let valid = (i == 0 && op == "!resetXformStack!")
                || (name.starts_with("xformOp:") && sdf::Path::is_valid_namespace_identifier(name));
            if !valid {
                return Err(self.prim_err(
                    path,
                    format!("xformOpOrder entry {op:?} is not an xformOp attribute name"),
                ));
            }
        }
        let local = view
            .local_to_parent_transform(TimeCode::EARLIEST)
            .map_err(|e| self.prim_err(path, format!("cannot compose its transform: {e:#}")))?;
        let resets = view
            .resets_xform_stack()
            .map_err(|e| self.prim_err(path, format!("cannot read xformOpOrder: {e:#}")))?;
        let parent = match path.parent() {
            // The length check keeps a malformed path from recursing forever.
            Some(parent) if !resets && parent.as_str().len() < path.as_str().len() => {
                self.world_matrix(&parent)?
            }
            _ => Matrix4d::IDENTITY,
        };
        // Row vectors: the local transform applies first, then the parent's.
        let m = local * parent;
        self.world.insert(path.as_str().to_string(), m);
        Ok(m)
    }

    fn decomposed(&mut self, path: &sdf::Path) -> Result<Decomposed, SceneError> {
        let m = self.world_matrix(path)?;
        math::decompose(&m).map_err(|e| self.prim_err(path, e.to_string()))
    }

    /// World pose in metres (scale dropped).
    fn pose_of(&self, d: &Decomposed) -> Pose {
        Pose {
            translation: geometry::scaled(d.translation, self.meters_per_unit),
            rotation: d.rotation,
        }
    }

    // ----- scene --------------------------------------------------------------

    fn gravity(&self, path: &sdf::Path) -> Result<[f64; 3], SceneError> {
        let up = self.up_axis.unit();
        let dir = match self.vec3_attr(path, "physics:gravityDirection")? {
            Some(d) => self.finite3(path, "physics:gravityDirection", d)?,
            None => [0.0; 3],
        };
        let len = (dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]).sqrt();
        // A zero direction means "down", i.e. against the up axis.
        let dir = if len > 0.0 {
            [dir[0] / len, dir[1] / len, dir[2] / len]
        } else {
            [-up[0], -up[1], -up[2]]
        };
        // Unauthored or negative (USD's default is -inf) means earth gravity.
        let magnitude = match self.f64_attr(path, "physics:gravityMagnitude")? {
            Some(m) if m >= 0.0 => {
                self.finite(path, "physics:gravityMagnitude", m)? * self.meters_per_unit
            }
            _ => EARTH_GRAVITY,
        };
        Ok([dir[0] * magnitude, dir[1] * magnitude, dir[2] * magnitude])
    }

    // ----- bodies -------------------------------------------------------------

    fn body(&mut self, path: &sdf::Path) -> Result<Body, SceneError> {
        let enabled = self
            .bool_attr(path, "physics:rigidBodyEnabled")?
            .unwrap_or(true);
        let kinematic = self
            .bool_attr(path, "physics:kinematicEnabled")?
            .unwrap_or(false);
        let kind = if !enabled {
            BodyKind::Static
        } else if kinematic {
            BodyKind::Kinematic
        } else {
            BodyKind::Dynamic
        };
        let d = self.decomposed(path)?;
        let pose = self.pose_of(&d);
        let linear_velocity = match self.vec3_attr(path, "physics:velocity")? {
            Some(v) => geometry::scaled(
                self.finite3(path, "physics:velocity", v)?,
                self.meters_per_unit,
            ),
            None => [0.0; 3],
        };
        let angular_velocity = match self.vec3_attr(path, "physics:angularVelocity")? {
            // USD gives deg/s.
            Some(v) => geometry::scaled(self.finite3(path, "physics:angularVelocity", v)?, DEG),
            None => [0.0; 3],
        };
        let mass = self.body_mass(path, &d)?;
        Ok(Body {
            path: path.as_str().to_string(),
            kind,
            pose,
            mass,
            linear_velocity,
            angular_velocity,
            colliders: Vec::new(),
        })
    }

    /// `physics:mass` in kg; `None` when unauthored or zero (USD's "unset").
    fn mass_attr(&self, path: &sdf::Path) -> Result<Option<f64>, SceneError> {
        match self.f64_attr(path, "physics:mass")? {
            None => Ok(None),
            Some(m) if m.is_finite() && m > 0.0 => Ok(Some(m * self.kilograms_per_unit)),
            Some(0.0) => Ok(None),
            Some(m) => Err(self.prim_err(
                path,
                format!("physics:mass must be positive (or 0 for unset), found {m}"),
            )),
        }
    }

    /// `physics:density` in kg/m³; `None` when unauthored or zero.
    fn density_attr(&self, path: &sdf::Path) -> Result<Option<f64>, SceneError> {
        match self.f64_attr(path, "physics:density")? {
            None => Ok(None),
            Some(d) if d.is_finite() && d > 0.0 => Ok(Some(
                d * self.kilograms_per_unit / self.meters_per_unit.powi(3),
            )),
            Some(0.0) => Ok(None),
            Some(d) => Err(self.prim_err(
                path,
                format!("physics:density must be positive (or 0 for unset), found {d}"),
            )),
        }
    }

    fn body_mass(&self, path: &sdf::Path, d: &Decomposed) -> Result<MassProperties, SceneError> {
        let mpu = self.meters_per_unit;
        let center_of_mass = match self.vec3_attr(path, "physics:centerOfMass")? {
            // USD's fallback (-inf, -inf, -inf) means "compute it".
            Some(c) if c.iter().all(|x| x.is_finite()) => Some([
                c[0] * d.scale[0] * mpu,
                c[1] * d.scale[1] * mpu,
                c[2] * d.scale[2] * mpu,
            ]),
            _ => None,
        };
        let diagonal_inertia = match self.vec3_attr(path, "physics:diagonalInertia")? {
            None => None,
            Some(i) if i == [0.0; 3] => None,
            Some(i) if i.iter().all(|x| x.is_finite() && *x >= 0.0) => {
                let k = self.kilograms_per_unit * mpu * mpu;
                Some([i[0] * k, i[1] * k, i[2] * k])
            }
            Some(i) => {
                return Err(self.prim_err(
                    path,
                    format!("physics:diagonalInertia must be non-negative, found {i:?}"),
                ));
            }
        };
        let principal_axes = match self.quat_attr(path, "physics:principalAxes")? {
            // USD's fallback (0, 0, 0, 0) means "compute it".
            None => None,
            Some(q) if q == [0.0; 4] => None,
            Some(q) => Some(geometry::normalize_quat(q).ok_or_else(|| {
                self.prim_err(
                    path,
                    format!("physics:principalAxes is not a rotation: {q:?}"),
                )
            })?),
        };
        Ok(MassProperties {
            mass: self.mass_attr(path)?,
            density: self.density_attr(path)?,
            center_of_mass,
            diagonal_inertia,
            principal_axes,
        })
    }

    // ----- colliders ----------------------------------------------------------

    /// The collider on prim `i`, owned by `owner` (`None`: it becomes its own
    /// static body and its `local_pose` holds its world pose). `None` when
    /// collision is disabled on it.
    fn collider(&mut self, i: usize, owner: Option<&Body>) -> Result<Option<Collider>, SceneError> {
        let path = self.prims[i].path.clone();
        if self.bool_attr(&path, "physics:collisionEnabled")? == Some(false) {
            return Ok(None);
        }
        let d = self.decomposed(&path)?;
        if d.sheared {
            return Err(self.prim_err(
                &path,
                "its transform is sheared (a non-uniform scale above a rotation), which a collider cannot follow",
            ));
        }
        let shape = self.shape(i, &d)?;
        if matches!(shape, Shape::Plane { .. })
            && owner.is_some_and(|b| b.kind == BodyKind::Dynamic)
        {
            return Err(self.prim_err(
                &path,
                "a Plane collider is an infinite plane and cannot belong to a dynamic body",
            ));
        }
        let world = self.pose_of(&d);
        let local_pose = match owner {
            Some(body) => {
                let (t, r) = geometry::relative(
                    body.pose.translation,
                    body.pose.rotation,
                    world.translation,
                    world.rotation,
                );
                Pose {
                    translation: t,
                    rotation: r,
                }
            }
            None => world,
        };
        let (material, material_density) = self.material(&path)?;
        // MassAPI on the body's own prim describes the body, not this collider.
        let own_prim = owner.is_some_and(|b| b.path == path.as_str());
        let (mass, density) = if own_prim {
            (None, None)
        } else {
            (self.mass_attr(&path)?, self.density_attr(&path)?)
        };
        Ok(Some(Collider {
            groups: Vec::new(),
            path: path.as_str().to_string(),
            shape,
            local_pose,
            material,
            mass,
            density: density.or(material_density),
        }))
    }

    fn positive(&self, path: &sdf::Path, name: &str, v: f64) -> Result<f64, SceneError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.prim_err(path, format!("{name} must be positive, found {v}")))
        }
    }

    fn shape_axis(&self, path: &sdf::Path) -> Result<Axis, SceneError> {
        match self.token_attr(path, "axis")?.as_deref() {
            None | Some("Z") => Ok(Axis::Z),
            Some("X") => Ok(Axis::X),
            Some("Y") => Ok(Axis::Y),
            Some(other) => {
                Err(self.prim_err(path, format!("axis must be X, Y or Z, found {other:?}")))
            }
        }
    }

    /// A radius and half height along `axis`, scaled: the two scales across the
    /// axis must agree, or the cross-section would be an ellipse.
    fn radial(
        &self,
        path: &sdf::Path,
        d: &Decomposed,
        axis: Axis,
        radius: f64,
        height: f64,
    ) -> Result<(f64, f64), SceneError> {
        let (along, across) = match axis {
            Axis::X => (0, [1, 2]),
            Axis::Y => (1, [0, 2]),
            Axis::Z => (2, [0, 1]),
        };
        let (s0, s1) = (d.scale[across[0]], d.scale[across[1]]);
        if (s0 - s1).abs() > math::TOLERANCE * s0.max(s1) {
            return Err(self.prim_err(
                path,
                format!("its scale across the {axis:?} axis is not uniform ({s0} vs {s1})"),
            ));
        }
        let mpu = self.meters_per_unit;
        Ok((radius * s0 * mpu, height / 2.0 * d.scale[along] * mpu))
    }

    /// Capsule_1/Cylinder_1 have separate top and bottom radii; only equal ones
    /// make a capsule or cylinder.
    fn radius_of(
        &self,
        path: &sdf::Path,
        type_name: &str,
        default: f64,
    ) -> Result<f64, SceneError> {
        if type_name.ends_with("_1") {
            let top = self.f64_attr(path, "radiusTop")?.unwrap_or(default);
            let bottom = self.f64_attr(path, "radiusBottom")?.unwrap_or(default);
            if (top - bottom).abs() > math::TOLERANCE * top.abs().max(bottom.abs()) {
                return Err(self.prim_err(
                    path,
                    format!("radiusTop ({top}) and radiusBottom ({bottom}) differ: tapered shapes are not supported"),
                ));
            }
            self.positive(path, "radiusTop", top)
        } else {
            let r = self.f64_attr(path, "radius")?.unwrap_or(default);
            self.positive(path, "radius", r)
        }
    }

    fn shape(&self, i: usize, d: &Decomposed) -> Result<Shape, SceneError> {
        let info = &self.prims[i];
        let path = &info.path;
        let mpu = self.meters_per_unit;
        match info.type_name.as_str() {
            "Cube" => {
                // USD's fallback size is 2.
                let size = self.f64_attr(path, "size")?.unwrap_or(2.0);
                let size = self.positive(path, "Cube size", size)?;
                let h = size / 2.0 * mpu;
                Ok(Shape::Cuboid {
                    half_extents: [h * d.scale[0], h * d.scale[1], h * d.scale[2]],
                })
            }
            "Sphere" => {
                let radius = self.f64_attr(path, "radius")?.unwrap_or(1.0);
                let radius = self.positive(path, "Sphere radius", radius)?;
                let [sx, sy, sz] = d.scale;
                let (lo, hi) = (sx.min(sy).min(sz), sx.max(sy).max(sz));
                if hi - lo > math::TOLERANCE * hi {
                    return Err(self.prim_err(
                        path,
                        format!("a Sphere collider needs a uniform scale, found {:?}", d.scale),
                    ));
                }
                Ok(Shape::Sphere {
                    radius: radius * sx * mpu,
                })
            }
            t @ ("Capsule" | "Capsule_1") => {
                let axis = self.shape_axis(path)?;
                let radius = self.radius_of(path, t, 0.5)?;
                let height = self.f64_attr(path, "height")?.unwrap_or(1.0);
                // A capsule of height 0 is a sphere, which is fine.
                if !(height.is_finite() && height >= 0.0) {
                    return Err(self.prim_err(
                        path,
                        format!("Capsule height must be non-negative, found {height}"),
                    ));
                }
                let (radius, half_height) = self.radial(path, d, axis, radius, height)?;
                Ok(Shape::Capsule {
                    radius,
                    half_height,
                    axis,
                })
            }
            t @ ("Cylinder" | "Cylinder_1") => {
                let axis = self.shape_axis(path)?;
                let radius = self.radius_of(path, t, 1.0)?;
                let height = self.f64_attr(path, "height")?.unwrap_or(2.0);
                let height = self.positive(path, "Cylinder height", height)?;
                let (radius, half_height) = self.radial(path, d, axis, radius, height)?;
                Ok(Shape::Cylinder {
                    radius,
                    half_height,
                    axis,
                })
            }
            "Plane" => Ok(Shape::Plane {
                axis: self.shape_axis(path)?,
            }),
            "Mesh" => self.mesh_shape(path, d),
            other => Err(self.prim_err(
                path,
                format!(
                    "a {} prim cannot be a collider; supported shapes are Cube, Sphere, Capsule, Cylinder and Plane",
                    if other.is_empty() { "typeless" } else { other }
                ),
            )),
        }
    }

    /// A `Mesh` collider, shaped by `physics:approximation`
    /// (PhysicsMeshCollisionAPI): `none` (the default) is the triangle mesh;
    /// `convexHull`, `convexDecomposition` and `boundingCube` are kept as such.
    fn mesh_shape(&self, path: &sdf::Path, d: &Decomposed) -> Result<Shape, SceneError> {
        let points = self
            .typed(path, "points", "a point array", values::vec3_array)?
            .ok_or_else(|| self.prim_err(path, "a Mesh collider has no points"))?;
        let counts = self
            .typed(path, "faceVertexCounts", "an int array", values::int_array)?
            .unwrap_or_default();
        let indices = self
            .typed(path, "faceVertexIndices", "an int array", values::int_array)?
            .unwrap_or_default();
        let mpu = self.meters_per_unit;
        let mut vertices = Vec::with_capacity(points.len());
        for p in &points {
            let v = [
                p[0] * d.scale[0] * mpu,
                p[1] * d.scale[1] * mpu,
                p[2] * d.scale[2] * mpu,
            ];
            vertices.push(self.finite3(path, "points", v)?);
        }
        // Faces become triangle fans; every index must name a point.
        let mut triangles = Vec::new();
        let mut at = 0usize;
        for &n in &counts {
            let n = usize::try_from(n).ok().filter(|n| *n >= 3).ok_or_else(|| {
                self.prim_err(
                    path,
                    format!("faceVertexCounts holds {n}; faces need 3 or more vertices"),
                )
            })?;
            let face = indices.get(at..at + n).ok_or_else(|| {
                self.prim_err(
                    path,
                    "faceVertexIndices is shorter than faceVertexCounts says",
                )
            })?;
            let mut idx = Vec::with_capacity(n);
            for &i in face {
                let i = u32::try_from(i)
                    .ok()
                    .filter(|i| (*i as usize) < vertices.len())
                    .ok_or_else(|| {
                        self.prim_err(
                            path,
                            format!(
                                "faceVertexIndices names point {i}, but there are {}",
                                vertices.len()
                            ),
                        )
                    })?;
                idx.push(i);
            }
            for k in 1..n - 1 {
                triangles.push([idx[0], idx[k], idx[k + 1]]);
            }
            at += n;
        }
        let approximation = self
            .token_attr(path, "physics:approximation")?
            .unwrap_or_else(|| "none".into());
        match approximation.as_str() {
            "none" | "meshSimplification" => {
                if triangles.is_empty() {
                    return Err(self.prim_err(path, "a triangle-mesh collider has no faces"));
                }
                Ok(Shape::TriMesh {
                    vertices,
                    triangles,
                })
            }
            "convexHull" => Ok(Shape::ConvexHull { points: vertices }),
            "convexDecomposition" => {
                if triangles.is_empty() {
                    return Err(self.prim_err(path, "convexDecomposition needs the mesh's faces"));
                }
                Ok(Shape::ConvexDecomposition {
                    vertices,
                    triangles,
                })
            }
            "boundingCube" => {
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for v in &vertices {
                    for k in 0..3 {
                        lo[k] = lo[k].min(v[k]);
                        hi[k] = hi[k].max(v[k]);
                    }
                }
                let points = (0..8)
                    .map(|c| {
                        [
                            if c & 1 == 0 { lo[0] } else { hi[0] },
                            if c & 2 == 0 { lo[1] } else { hi[1] },
                            if c & 4 == 0 { lo[2] } else { hi[2] },
                        ]
                    })
                    .collect();
                Ok(Shape::ConvexHull { points })
            }
            other => Err(self.prim_err(
                path,
                format!(
                    "mesh approximation `{other}` is not supported (use none, convexHull, convexDecomposition, boundingCube or meshSimplification)"
                ),
            )),
        }
    }

    /// The physics material bound to a collider (nearest binding up the
    /// namespace, the physics-purpose binding first), and the material's density.
    fn material(&self, path: &sdf::Path) -> Result<(Material, Option<f64>), SceneError> {
        for prim in lineage(path) {
            for rel in ["material:binding:physics", "material:binding"] {
                let Some(target) = self.targets(&prim, rel)?.into_iter().next() else {
                    continue;
                };
                if !self.index.contains_key(target.as_str()) {
                    if rel == "material:binding:physics" {
                        return Err(self.prim_err(
                            &prim,
                            format!("{rel} points at {target}, which is not a prim in the stage"),
                        ));
                    }
                    // A dangling render binding says nothing about physics.
                    return Ok((Material::default(), None));
                }
                return self.read_material(&target);
            }
        }
        Ok((Material::default(), None))
    }

    fn read_material(&self, path: &sdf::Path) -> Result<(Material, Option<f64>), SceneError> {
        let has_api = self
            .index
            .get(path.as_str())
            .is_some_and(|&i| self.prims[i].has_api(API_MATERIAL));
        if !has_api {
            // A render-only material.
            return Ok((Material::default(), None));
        }
        let default = Material::default();
        let coefficient = |name: &str, fallback: f64| -> Result<f64, SceneError> {
            match self.f64_attr(path, name)? {
                None => Ok(fallback),
                Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
                Some(v) => {
                    Err(self.prim_err(path, format!("{name} must be non-negative, found {v}")))
                }
            }
        };
        let material = Material {
            static_friction: coefficient("physics:staticFriction", default.static_friction)?,
            dynamic_friction: coefficient("physics:dynamicFriction", default.dynamic_friction)?,
            restitution: coefficient("physics:restitution", default.restitution)?,
        };
        Ok((material, self.density_attr(path)?))
    }

    // ----- joints -------------------------------------------------------------

    fn joint(
        &mut self,
        i: usize,
        bodies: &[Body],
        body_index: &HashMap<String, usize>,
    ) -> Result<Option<Joint>, SceneError> {
        let path = self.prims[i].path.clone();
        let kind = match self.prims[i].type_name.as_str() {
            "PhysicsRevoluteJoint" => JointKind::Revolute,
            "PhysicsPrismaticJoint" => JointKind::Prismatic,
            "PhysicsSphericalJoint" => JointKind::Spherical,
            _ => JointKind::Fixed,
        };
        if self.bool_attr(&path, "physics:jointEnabled")? == Some(false) {
            return Ok(None);
        }
        if self.bool_attr(&path, "physics:collisionEnabled")? == Some(true) {
            return Err(self.prim_err(
                &path,
                "physics:collisionEnabled = true (contacts between jointed bodies) is not supported",
            ));
        }
        for name in ["physics:breakForce", "physics:breakTorque"] {
            if let Some(v) = self.f64_attr(&path, name)?
                && v < UNBREAKABLE
            {
                return Err(self.prim_err(
                    &path,
                    format!("breakable joints are not supported ({name} = {v})"),
                ));
            }
        }

        let a0 = self.attachment(&path, "physics:body0", bodies, body_index)?;
        let a1 = self.attachment(&path, "physics:body1", bodies, body_index)?;
        match (&a0.body, &a1.body) {
            (None, None) => {
                return Err(self.prim_err(&path, "the joint attaches to no body at either end"));
            }
            (Some(b0), Some(b1)) if b0 == b1 => {
                return Err(self.prim_err(&path, format!("the joint attaches body {b0} to itself")));
            }
            _ => {}
        }
        let local_pose0 = self.joint_frame(&path, &a0, "0")?;
        let local_pose1 = self.joint_frame(&path, &a1, "1")?;

        let axis = match self.token_attr(&path, "physics:axis")?.as_deref() {
            None | Some("X") => Axis::X,
            Some("Y") => Axis::Y,
            Some("Z") => Axis::Z,
            Some(other) => {
                return Err(self.prim_err(
                    &path,
                    format!("physics:axis must be X, Y or Z, found {other:?}"),
                ));
            }
        };
        // Angles are degrees in USD, distances scene units.
        let unit = match kind {
            JointKind::Revolute => DEG,
            _ => self.meters_per_unit,
        };
        let limits = match kind {
            JointKind::Fixed | JointKind::Spherical => None,
            _ => self.limits(&path, unit)?,
        };
        let cone_limits = match kind {
            JointKind::Spherical => self.cone_limits(&path)?,
            _ => None,
        };
        let drive = self.drive(i, kind)?;
        Ok(Some(Joint {
            path: path.as_str().to_string(),
            kind,
            body0: a0.body,
            body1: a1.body,
            local_pose0,
            local_pose1,
            axis,
            limits,
            drive,
            cone_limits,
        }))
    }

    /// A spherical joint's cone half-angles, degrees in USD, in radians. As
    /// in UsdPhysics, the cone holds when both are non-negative; an angle
    /// given alone is an error, since UsdPhysics would drop it.
    fn cone_limits(&self, path: &sdf::Path) -> Result<Option<[f64; 2]>, SceneError> {
        let mut cone = [None, None];
        for (side, name) in ["physics:coneAngle0Limit", "physics:coneAngle1Limit"]
            .into_iter()
            .enumerate()
        {
            cone[side] = match self.f64_attr(path, name)? {
                None => None,
                Some(v) if v.is_nan() => {
                    return Err(self.prim_err(path, format!("{name} is NaN")));
                }
                Some(v) if v < 0.0 => None,
                Some(v) if v > 180.0 => {
                    return Err(self.prim_err(
                        path,
                        format!("{name} = {v} is more than 180 degrees (a negative angle leaves the joint free)"),
                    ));
                }
                Some(v) => Some(v * DEG),
            };
        }
        match cone {
            [Some(a), Some(b)] => Ok(Some([a, b])),
            [None, None] => Ok(None),
            _ => Err(self.prim_err(
                path,
                "a cone on one side only is not supported; give both physics:coneAngle0Limit and physics:coneAngle1Limit (a negative angle leaves the joint free)",
            )),
        }
    }

    fn attachment(
        &mut self,
        joint: &sdf::Path,
        rel: &str,
        bodies: &[Body],
        body_index: &HashMap<String, usize>,
    ) -> Result<Attachment, SceneError> {
        let targets = self.targets(joint, rel)?;
        let target = match targets.as_slice() {
            [] => {
                return Ok(Attachment {
                    body: None,
                    body_pose: Pose::IDENTITY,
                    frame: None,
                });
            }
            [t] => t.clone(),
            _ => {
                return Err(self.prim_err(
                    joint,
                    format!(
                        "{rel} has {} targets; a joint end attaches to one body",
                        targets.len()
                    ),
                ));
            }
        };
        if target.is_property_path() || !self.index.contains_key(target.as_str()) {
            return Err(self.prim_err(
                joint,
                format!("{rel} points at {target}, which is not an active prim in the stage"),
            ));
        }
        let frame = self.world_matrix(&target)?;
        // The nearest body at or above the target; none means the world (the
        // target is then just a reference frame, as in UsdPhysics).
        let owner = lineage(&target)
            .into_iter()
            .find_map(|a| body_index.get(a.as_str()).copied());
        Ok(match owner {
            Some(b) => Attachment {
                body: Some(bodies[b].path.clone()),
                body_pose: bodies[b].pose,
                frame: Some(frame),
            },
            None => Attachment {
                body: None,
                body_pose: Pose::IDENTITY,
                frame: Some(frame),
            },
        })
    }

    /// `localPos<n>`/`localRot<n>` (authored in the target prim's frame, scale
    /// included) as a pose in the attached body's frame, in metres.
    fn joint_frame(&self, joint: &sdf::Path, a: &Attachment, n: &str) -> Result<Pose, SceneError> {
        let pos_name = format!("physics:localPos{n}");
        let rot_name = format!("physics:localRot{n}");
        let pos = match self.vec3_attr(joint, &pos_name)? {
            Some(p) => self.finite3(joint, &pos_name, p)?,
            None => [0.0; 3],
        };
        let rot = match self.quat_attr(joint, &rot_name)? {
            Some(q) => geometry::normalize_quat(q).ok_or_else(|| {
                self.prim_err(joint, format!("{rot_name} is not a rotation: {q:?}"))
            })?,
            None => [0.0, 0.0, 0.0, 1.0],
        };
        let mpu = self.meters_per_unit;
        let (world_t, world_r) = match &a.frame {
            None => (geometry::scaled(pos, mpu), rot),
            Some(m) => {
                let d = math::decompose(m).map_err(|e| {
                    self.prim_err(joint, format!("the prim its {n} end attaches to: {e}"))
                })?;
                (
                    geometry::scaled(math::transform_point(m, pos), mpu),
                    geometry::quat_mul(d.rotation, rot),
                )
            }
        };
        let (translation, rotation) = geometry::relative(
            a.body_pose.translation,
            a.body_pose.rotation,
            world_t,
            world_r,
        );
        Ok(Pose {
            translation,
            rotation,
        })
    }

    /// `physics:lowerLimit`/`upperLimit` times `unit`; `None` when both are
    /// unbounded (unauthored or infinite).
    fn limits(&self, path: &sdf::Path, unit: f64) -> Result<Option<(f64, f64)>, SceneError> {
        let lower = self.f64_attr(path, "physics:lowerLimit")?;
        let upper = self.f64_attr(path, "physics:upperLimit")?;
        for (name, v) in [("physics:lowerLimit", lower), ("physics:upperLimit", upper)] {
            if v.is_some_and(f64::is_nan) {
                return Err(self.prim_err(path, format!("{name} is NaN")));
            }
        }
        let lower = lower.filter(|v| v.is_finite());
        let upper = upper.filter(|v| v.is_finite());
        match (lower, upper) {
            (None, None) => Ok(None),
            (Some(lo), Some(hi)) if lo <= hi => Ok(Some((lo * unit, hi * unit))),
            (Some(lo), Some(hi)) => Err(self.prim_err(
                path,
                format!("physics:lowerLimit ({lo}) is above physics:upperLimit ({hi})"),
            )),
            _ => Err(self.prim_err(
                path,
                "a limit on one side only is not supported; give both physics:lowerLimit and physics:upperLimit",
            )),
        }
    }

    fn drive(&self, i: usize, kind: JointKind) -> Result<Option<Drive>, SceneError> {
        let info = &self.prims[i];
        let path = &info.path;
        let expected = match kind {
            JointKind::Revolute => "angular",
            JointKind::Prismatic => "linear",
            JointKind::Fixed | JointKind::Spherical => "",
        };
        let mut drive = None;
        for api in &info.apis {
            let Some(name) = api.strip_prefix(API_DRIVE_PREFIX) else {
                continue;
            };
            if name != expected {
                return Err(self.prim_err(
                    path,
                    format!(
                        "PhysicsDriveAPI:{name} does not drive a {} joint{}",
                        kind.name(),
                        if kind == JointKind::Spherical {
                            " (spherical joints are simulated without drives)".to_string()
                        } else if expected.is_empty() {
                            String::new()
                        } else {
                            format!(" (use PhysicsDriveAPI:{expected})")
                        }
                    ),
                ));
            }
            drive = Some(self.read_drive(path, name, kind)?);
        }
        Ok(drive)
    }

    fn read_drive(
        &self,
        path: &sdf::Path,
        dof: &str,
        kind: JointKind,
    ) -> Result<Drive, SceneError> {
        let attr = |sub: &str| format!("drive:{dof}:physics:{sub}");
        match self.token_attr(path, &attr("type"))?.as_deref() {
            None | Some("force") => {}
            Some(other) => {
                return Err(self.prim_err(
                    path,
                    format!(
                        "{} = {other:?} is not supported (only \"force\" drives)",
                        attr("type")
                    ),
                ));
            }
        }
        let non_negative = |sub: &str| -> Result<Option<f64>, SceneError> {
            let name = attr(sub);
            match self.f64_attr(path, &name)? {
                Some(v) if v.is_nan() || v < 0.0 => {
                    Err(self.prim_err(path, format!("{name} must be non-negative, found {v}")))
                }
                v => Ok(v),
            }
        };
        let stiffness = non_negative("stiffness")?.unwrap_or(0.0);
        let damping = non_negative("damping")?.unwrap_or(0.0);
        let max_force = non_negative("maxForce")?.filter(|f| f.is_finite());
        let stiffness = self.finite(path, &attr("stiffness"), stiffness)?;
        let damping = self.finite(path, &attr("damping"), damping)?;
        let target_position = match self.f64_attr(path, &attr("targetPosition"))? {
            Some(v) => self.finite(path, &attr("targetPosition"), v)?,
            None => 0.0,
        };
        let target_velocity = match self.f64_attr(path, &attr("targetVelocity"))? {
            Some(v) => self.finite(path, &attr("targetVelocity"), v)?,
            None => 0.0,
        };
        let (kg, m) = (self.kilograms_per_unit, self.meters_per_unit);
        Ok(match kind {
            // Angular: the gains are per degree (and per deg/s), the targets in
            // degrees; torques are mass·length²/s².
            JointKind::Revolute => Drive {
                stiffness: stiffness / DEG * kg * m * m,
                damping: damping / DEG * kg * m * m,
                target_position: target_position * DEG,
                target_velocity: target_velocity * DEG,
                max_force: max_force.map(|f| f * kg * m * m),
            },
            // Linear: gains are force per length (mass/s²) and per velocity
            // (mass/s), so only the mass unit converts.
            _ => Drive {
                stiffness: stiffness * kg,
                damping: damping * kg,
                target_position: target_position * m,
                target_velocity: target_velocity * m,
                max_force: max_force.map(|f| f * kg * m),
            },
        })
    }

    // ----- cameras ------------------------------------------------------------

    fn camera(&mut self, path: &sdf::Path) -> Result<Camera, SceneError> {
        if let Some(p) = self.token_attr(path, "projection")?
            && p != "perspective"
        {
            return Err(self.prim_err(
                path,
                format!("{p} cameras are not supported (only perspective)"),
            ));
        }
        // USD's fallbacks: a 50 mm lens on a 15.2908 mm (35 mm film) aperture.
        let focal = self.f64_attr(path, "focalLength")?.unwrap_or(50.0);
        let focal = self.positive(path, "focalLength", focal)?;
        let aperture = self.f64_attr(path, "verticalAperture")?.unwrap_or(15.2908);
        let aperture = self.positive(path, "verticalAperture", aperture)?;
        let [near, far] = self
            .vec2_attr(path, "clippingRange")?
            .unwrap_or([1.0, 1_000_000.0]);
        if !(near.is_finite() && far.is_finite() && near > 0.0 && far > near) {
            return Err(self.prim_err(
                path,
                format!("clippingRange must be 0 < near < far, found ({near}, {far})"),
            ));
        }
        let d = self.decomposed(path)?;
        Ok(Camera {
            path: path.as_str().to_string(),
            pose: self.pose_of(&d),
            fov_deg: 2.0 * (aperture / (2.0 * focal)).atan() / DEG,
            near: near * self.meters_per_unit,
            far: far * self.meters_per_unit,
        })
    }
}

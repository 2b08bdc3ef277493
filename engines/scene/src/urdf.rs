//! URDF → USD: a robot description becomes a self-contained `.usda` stage that
//! the USD reader (and pxr) read like any scene.
//!
//! - every link is a rigid body at its world pose with the joints at zero, with
//!   its inertial mass, centre of mass and inertia tensor (diagonalized into
//!   `diagonalInertia` + `principalAxes`);
//! - collision geometry: boxes, spheres, cylinders and capsules as USD gprims;
//!   STL, OBJ and DAE (COLLADA, in its units and up axis) meshes as `Mesh` prims with their convex hull as the collision
//!   approximation (what pybullet and PhysX use for moving links);
//! - visual geometry as render-purpose prims without physics;
//! - revolute, continuous, prismatic and fixed joints with their limits, the
//!   joint frame turned so the URDF axis is the USD joint's X axis, and a
//!   position drive sized for what the joint moves (URDF has no gains), capped
//!   at the URDF effort limit;
//! - spherical joints (pybullet's extension) as free ball joints, without a
//!   limit or a drive, as urdfdom and pybullet's URDF reader take them;
//! - a root link without mass is fixed to the world, as pybullet does;
//! - the links do not collide with each other (a collision group filtering
//!   itself), as in pybullet, unless asked to.
//!
//! What cannot be represented is an error naming the element, never dropped:
//! floating and planar joints, xacro files, meshes in formats other
//! than STL, OBJ and DAE, meshes that cannot be found or read.
//!
//! The reader accepts what ROS's urdfdom accepts where urdf-rs is stricter:
//! a `<geometry>` takes its first shape, and elements after it (robots in the
//! wild put their `<material>` there) are ignored, as urdfdom ignores them.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct UrdfError {
    pub file: String,
    pub message: String,
}

/// Options of a conversion.
#[derive(Debug, Clone, Default)]
pub struct UrdfOptions {
    /// Fix the root link to the world even when it has a mass.
    pub fixed_base: bool,
    /// Let the robot's links collide with each other. Off by default, as in
    /// pybullet: link meshes of real robots overlap at the joints.
    pub self_collision: bool,
}

use crate::geometry::{
    Mat3, Quat, quat_from_matrix, quat_from_rpy, quat_from_x_to, quat_mul, quat_rotate,
    quat_to_matrix,
};

/// The document as urdfdom reads it, for urdf-rs: each `<geometry>` keeps
/// only its first element (the shape urdfdom takes); what follows it inside
/// is dropped. Everything else passes through untouched.
fn as_urdfdom_reads(text: &str) -> Result<String, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(text.len()));
    // The open elements' names; the depth of a subtree being dropped (0:
    // none); whether the open <geometry> has its shape.
    let mut open: Vec<Vec<u8>> = Vec::new();
    let (mut dropping, mut has_shape) = (0usize, false);
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        let in_geometry = open.last().is_some_and(|n| n == b"geometry");
        let keep = match &event {
            Event::Eof => break,
            Event::Start(_) if dropping > 0 => {
                dropping += 1;
                false
            }
            Event::End(_) if dropping > 0 => {
                dropping -= 1;
                false
            }
            _ if dropping > 0 => false,
            Event::Start(_) | Event::Empty(_) if in_geometry && has_shape => {
                // A second element in <geometry>: urdfdom ignores it.
                if matches!(event, Event::Start(_)) {
                    dropping = 1;
                }
                false
            }
            Event::Start(e) => {
                if in_geometry {
                    has_shape = true;
                } else if e.name().as_ref() == b"geometry" {
                    has_shape = false;
                }
                open.push(e.name().as_ref().to_vec());
                true
            }
            Event::Empty(_) => {
                has_shape |= in_geometry;
                true
            }
            Event::End(_) => {
                open.pop();
                true
            }
            _ => true,
        };
        if keep {
            writer
                .write_event(event)
                .map_err(|e| format!("cannot rewrite the document: {e}"))?;
        }
    }
    String::from_utf8(writer.into_inner()).map_err(|e| format!("not UTF-8 text: {e}"))
}

/// The natural frequency of the drives the converter gives joints.
const DRIVE_HZ: f64 = 5.0;

/// A URDF inertia as its symmetric 3×3 tensor.
fn inertia_tensor(i: &urdf_rs::Inertia) -> Mat3 {
    [
        [i.ixx, i.ixy, i.ixz],
        [i.ixy, i.iyy, i.iyz],
        [i.ixz, i.iyz, i.izz],
    ]
}

/// `R T Rᵀ`: a tensor given in a frame rotated by `q`, in the outer frame.
fn rotate_tensor(q: Quat, t: &Mat3) -> Mat3 {
    let r = quat_to_matrix(q);
    let mut out = [[0.0; 3]; 3];
    for (a, row) in out.iter_mut().enumerate() {
        for (b, cell) in row.iter_mut().enumerate() {
            *cell = (0..3)
                .flat_map(|k| (0..3).map(move |l| (k, l)))
                .map(|(k, l)| r[a][k] * t[k][l] * r[b][l])
                .sum();
        }
    }
    out
}

/// Eigen-decomposition of a symmetric 3×3 matrix by Jacobi rotations:
/// eigenvalues, and the eigenvectors as the columns of a rotation.
fn symmetric_eigen(mut a: Mat3) -> ([f64; 3], Mat3) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        if off < 1e-15 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-300 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (rp, rq) = (a[p], a[q]);
            for k in 0..3 {
                a[p][k] = c * rp[k] - s * rq[k];
                a[q][k] = s * rp[k] + c * rq[k];
            }
            for row in v.iter_mut() {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    // A proper rotation: flip one axis if the basis is left-handed.
    let det = v[0][0] * (v[1][1] * v[2][2] - v[1][2] * v[2][1])
        - v[0][1] * (v[1][0] * v[2][2] - v[1][2] * v[2][0])
        + v[0][2] * (v[1][0] * v[2][1] - v[1][1] * v[2][0]);
    if det < 0.0 {
        for row in v.iter_mut() {
            row[2] = -row[2];
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

#[derive(Clone, Copy)]
struct Frame {
    t: [f64; 3],
    q: Quat,
}

impl Frame {
    fn of(pose: &urdf_rs::Pose) -> Frame {
        Frame {
            t: pose.xyz.0,
            q: quat_from_rpy(pose.rpy.0),
        }
    }

    fn then(&self, child: &Frame) -> Frame {
        let r = quat_rotate(self.q, child.t);
        Frame {
            t: [self.t[0] + r[0], self.t[1] + r[1], self.t[2] + r[2]],
            q: quat_mul(self.q, child.q),
        }
    }
}

/// The USD identifier a URDF name becomes (prims are named by it).
pub fn ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    {
        s.insert(0, '_');
    }
    s
}

use crate::usd::export::{quat, v3};

/// A triangle mesh read from a file.
struct MeshData {
    points: Vec<[f64; 3]>,
    triangles: Vec<[u32; 3]>,
}

type Mat4 = [[f64; 4]; 4];

fn mat4_mul(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (0..4).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

const IDENTITY4: Mat4 = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A COLLADA node's transform elements, composed in order.
fn dae_node_matrix(node: &dae_parser::Node) -> Result<Mat4, String> {
    use dae_parser::Transform;
    let mut m = IDENTITY4;
    for t in &node.transforms {
        let step: Mat4 = match t {
            Transform::Matrix(x) => {
                let v = &x.0;
                // Row-major in the file, as written.
                let mut r = [[0.0; 4]; 4];
                for (i, row) in r.iter_mut().enumerate() {
                    for (j, cell) in row.iter_mut().enumerate() {
                        *cell = f64::from(v[i * 4 + j]);
                    }
                }
                r
            }
            Transform::Translate(x) => {
                let v = &x.0;
                let mut r = IDENTITY4;
                for k in 0..3 {
                    r[k][3] = f64::from(v[k]);
                }
                r
            }
            Transform::Scale(x) => {
                let v = &x.0;
                let mut r = IDENTITY4;
                for k in 0..3 {
                    r[k][k] = f64::from(v[k]);
                }
                r
            }
            Transform::Rotate(x) => {
                let v = &x.0;
                let axis = [f64::from(v[0]), f64::from(v[1]), f64::from(v[2])];
                let n = axis.iter().map(|a| a * a).sum::<f64>().sqrt();
                if n == 0.0 {
                    continue;
                }
                let half = f64::from(v[3]).to_radians() / 2.0;
                let q = [
                    axis[0] / n * half.sin(),
                    axis[1] / n * half.sin(),
                    axis[2] / n * half.sin(),
                    half.cos(),
                ];
                let r3 = quat_to_matrix(q);
                let mut r = IDENTITY4;
                for i in 0..3 {
                    r[i][..3].copy_from_slice(&r3[i]);
                }
                r
            }
            other => return Err(format!("node transform {other:?} is not supported")),
        };
        m = mat4_mul(&m, &step);
    }
    Ok(m)
}

/// Every triangle of a COLLADA file's visual scene (or, without one, of its
/// geometries), in metres with Z up.
fn dae_mesh(path: &Path) -> Result<MeshData, String> {
    use dae_parser::{Document, Geometry, GeometryElement, Primitive, Semantic, UpAxis, Url};
    let doc =
        Document::from_file(path).map_err(|e| format!("not a readable COLLADA file: {e:?}"))?;
    let unit = f64::from(doc.asset.unit.meter);
    let unit = if unit.is_finite() && unit > 0.0 {
        unit
    } else {
        1.0
    };
    // The file's up axis onto +Z.
    let up = |p: [f64; 3]| match doc.asset.up_axis {
        UpAxis::YUp => [p[0], -p[2], p[1]],
        UpAxis::XUp => [-p[2], p[1], p[0]],
        UpAxis::ZUp => p,
    };
    let geometries: HashMap<&str, &Geometry> = doc
        .iter::<Geometry>()
        .filter_map(|g| g.id.as_deref().map(|id| (id, g)))
        .collect();
    let mut out = MeshData {
        points: Vec::new(),
        triangles: Vec::new(),
    };
    let mut append = |g: &Geometry, m: &Mat4| -> Result<(), String> {
        let GeometryElement::Mesh(mesh) = &g.element else {
            return Err("only <mesh> geometry is supported".into());
        };
        let vertices = mesh.vertices.as_ref().ok_or("a mesh without <vertices>")?;
        let input = vertices
            .inputs
            .get(vertices.position)
            .ok_or("no POSITION input")?;
        let Url::Fragment(id) = &input.source else {
            return Err("positions in another file are not supported".into());
        };
        let source = mesh
            .sources
            .iter()
            .find(|s| s.id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| format!("no source #{id}"))?;
        let Some(dae_parser::ArrayElement::Float(values)) = &source.array else {
            return Err(format!("source #{id} is not a float array"));
        };
        let acc = &source.accessor;
        let stride = acc.stride.max(3);
        let offset = out.points.len() as u32;
        for i in 0..acc.count {
            let at = acc.offset + i * stride;
            let v = values
                .get(at..at + 3)
                .ok_or("the position array is shorter than its accessor")?;
            let p = [f64::from(v[0]), f64::from(v[1]), f64::from(v[2])];
            let w: Vec<f64> = (0..3)
                .map(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
                .collect();
            out.points.push(up([w[0] * unit, w[1] * unit, w[2] * unit]));
        }
        let count = acc.count as u32;
        let mut emit = |poly: &[u32]| -> Result<(), String> {
            if poly.iter().any(|&i| i >= count) {
                return Err("a primitive names a vertex past the position array".into());
            }
            for k in 1..poly.len().saturating_sub(1) {
                out.triangles
                    .push([offset + poly[0], offset + poly[k], offset + poly[k + 1]]);
            }
            Ok(())
        };
        for prim in &mesh.elements {
            let inputs = match prim {
                Primitive::Triangles(t) => &t.inputs,
                Primitive::PolyList(p) => &p.inputs,
                Primitive::Polygons(p) => &p.inputs,
                Primitive::Lines(_) | Primitive::LineStrips(_) => continue,
                _ => return Err("triangle fans and strips are not supported".into()),
            };
            let vtx = inputs
                .inputs
                .iter()
                .find(|i| i.input.semantic == Semantic::Vertex)
                .ok_or("a primitive without a VERTEX input")?
                .offset as usize;
            let stride = inputs.stride.max(1);
            let pick = |raw: &[u32]| -> Vec<u32> {
                raw.chunks(stride)
                    .filter_map(|c| c.get(vtx).copied())
                    .collect()
            };
            match prim {
                Primitive::Triangles(t) => {
                    let idx = pick(t.data.prim.as_deref().unwrap_or(&[]));
                    for tri in idx.chunks_exact(3) {
                        emit(tri)?;
                    }
                }
                Primitive::PolyList(p) => {
                    let idx = pick(&p.data.prim);
                    let mut at = 0usize;
                    for &n in p.data.vcount.iter() {
                        let n = n as usize;
                        let poly = idx.get(at..at + n).ok_or("vcount runs past the indices")?;
                        emit(poly)?;
                        at += n;
                    }
                }
                Primitive::Polygons(p) => {
                    for ph in &p.data.0 {
                        if !ph.hole.is_empty() {
                            return Err("polygons with holes are not supported".into());
                        }
                        emit(&pick(&ph.verts))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    match doc.get_visual_scene() {
        Some(scene) => {
            fn walk(
                node: &dae_parser::Node,
                parent: &Mat4,
                geometries: &HashMap<&str, &Geometry>,
                append: &mut dyn FnMut(&Geometry, &Mat4) -> Result<(), String>,
            ) -> Result<(), String> {
                if !node.instance_node.is_empty() {
                    return Err("instanced nodes (<instance_node>) are not supported".into());
                }
                let m = mat4_mul(parent, &dae_node_matrix(node)?);
                for inst in &node.instance_geometry {
                    let dae_parser::Url::Fragment(id) = &*inst.url else {
                        return Err("geometry in another file is not supported".into());
                    };
                    let g = geometries
                        .get(id.as_str())
                        .ok_or_else(|| format!("no geometry #{id}"))?;
                    append(g, &m)?;
                }
                for child in &node.children {
                    walk(child, &m, geometries, append)?;
                }
                Ok(())
            }
            for node in &scene.nodes {
                walk(node, &IDENTITY4, &geometries, &mut append)?;
            }
        }
        None => {
            for g in geometries.values() {
                append(g, &IDENTITY4)?;
            }
        }
    }
    if out.triangles.is_empty() {
        return Err("it holds no triangles".into());
    }
    Ok(out)
}

struct Converter<'a> {
    urdf: &'a Path,
    file: String,
    meshes: HashMap<PathBuf, std::rc::Rc<MeshData>>,
}

impl Converter<'_> {
    fn err(&self, message: impl Into<String>) -> UrdfError {
        UrdfError {
            file: self.file.clone(),
            message: message.into(),
        }
    }

    /// Finds a mesh file: relative to the URDF, or `package://<pkg>/…` under a
    /// folder above the URDF named `<pkg>` (or the URDF's own folder).
    fn locate(&self, filename: &str) -> Result<PathBuf, UrdfError> {
        let base = self.urdf.parent().unwrap_or(Path::new("."));
        let mut candidates = Vec::new();
        if let Some(rest) = filename.strip_prefix("package://") {
            let (package, inner) = rest.split_once('/').unwrap_or((rest, ""));
            for dir in base.ancestors() {
                if dir.file_name().is_some_and(|n| n == package) {
                    candidates.push(dir.join(inner));
                }
                candidates.push(dir.join(package).join(inner));
            }
            candidates.push(base.join(inner));
        } else if let Some(abs) = filename.strip_prefix("file://") {
            candidates.push(PathBuf::from(abs));
        } else {
            candidates.push(base.join(filename));
        }
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| self.err(format!("mesh `{filename}` was not found next to the URDF")))
    }

    fn mesh(&mut self, filename: &str) -> Result<std::rc::Rc<MeshData>, UrdfError> {
        let path = self.locate(filename)?;
        if let Some(m) = self.meshes.get(&path) {
            return Ok(m.clone());
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let data = match ext.as_str() {
            "stl" => {
                let mut f = std::fs::File::open(&path)
                    .map_err(|e| self.err(format!("mesh {}: {e}", path.display())))?;
                let m = stl_io::read_stl(&mut f).map_err(|e| {
                    self.err(format!(
                        "mesh {} is not a readable STL: {e}",
                        path.display()
                    ))
                })?;
                MeshData {
                    points: m
                        .vertices
                        .iter()
                        .map(|v| [f64::from(v[0]), f64::from(v[1]), f64::from(v[2])])
                        .collect(),
                    triangles: m
                        .faces
                        .iter()
                        .map(|f| f.vertices.map(|i| i as u32))
                        .collect(),
                }
            }
            "obj" => {
                let options = tobj::LoadOptions {
                    triangulate: true,
                    single_index: true,
                    ..Default::default()
                };
                let (models, _) = tobj::load_obj(&path, &options).map_err(|e| {
                    self.err(format!(
                        "mesh {} is not a readable OBJ: {e}",
                        path.display()
                    ))
                })?;
                let mut data = MeshData {
                    points: Vec::new(),
                    triangles: Vec::new(),
                };
                for model in models {
                    let offset = data.points.len() as u32;
                    data.points.extend(
                        model
                            .mesh
                            .positions
                            .chunks_exact(3)
                            .map(|p| [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]),
                    );
                    data.triangles.extend(
                        model
                            .mesh
                            .indices
                            .chunks_exact(3)
                            .map(|t| [t[0] + offset, t[1] + offset, t[2] + offset]),
                    );
                }
                data
            }
            "dae" => {
                // The COLLADA parser trusts its input in places; a panic there is
                // a bad file, not a crashed node.
                let p = path.clone();
                std::panic::catch_unwind(move || dae_mesh(&p))
                    .unwrap_or_else(|_| Err("the COLLADA parser failed on it".into()))
                    .map_err(|e| self.err(format!("mesh {}: {e}", path.display())))?
            }
            other => {
                return Err(self.err(format!(
                    "mesh {} is a .{other} file; STL, OBJ and DAE meshes are supported",
                    path.display()
                )));
            }
        };
        if data.points.len() < 4 {
            return Err(self.err(format!("mesh {} has fewer than 4 points", path.display())));
        }
        let data = std::rc::Rc::new(data);
        self.meshes.insert(path, data.clone());
        Ok(data)
    }

    /// One geometry as a USD prim; `collision` adds the physics APIs.
    fn geometry(
        &mut self,
        out: &mut String,
        indent: &str,
        name: &str,
        origin: &urdf_rs::Pose,
        geometry: &urdf_rs::Geometry,
        collision: bool,
    ) -> Result<(), UrdfError> {
        let frame = Frame::of(origin);
        let mut scale = [1.0, 1.0, 1.0];
        let (kind, apis, body) = match geometry {
            urdf_rs::Geometry::Box { size } => {
                scale = size.0;
                (
                    "Cube",
                    "\"PhysicsCollisionAPI\"",
                    "double size = 1".to_string(),
                )
            }
            urdf_rs::Geometry::Sphere { radius } => (
                "Sphere",
                "\"PhysicsCollisionAPI\"",
                format!("double radius = {radius}"),
            ),
            urdf_rs::Geometry::Cylinder { radius, length } => (
                "Cylinder",
                "\"PhysicsCollisionAPI\"",
                format!(
                    "double radius = {radius}\n{indent}    double height = {length}\n{indent}    uniform token axis = \"Z\""
                ),
            ),
            urdf_rs::Geometry::Capsule { radius, length } => (
                "Capsule",
                "\"PhysicsCollisionAPI\"",
                format!(
                    "double radius = {radius}\n{indent}    double height = {length}\n{indent}    uniform token axis = \"Z\""
                ),
            ),
            urdf_rs::Geometry::Mesh {
                filename,
                scale: mesh_scale,
            } => {
                if let Some(s) = mesh_scale {
                    scale = s.0;
                }
                let m = self.mesh(filename)?;
                let points = m
                    .points
                    .iter()
                    .map(|p| v3(*p))
                    .collect::<Vec<_>>()
                    .join(", ");
                let counts = vec!["3"; m.triangles.len()].join(", ");
                let indices = m
                    .triangles
                    .iter()
                    .map(|t| format!("{}, {}, {}", t[0], t[1], t[2]))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut body = format!(
                    "point3f[] points = [{points}]\n{indent}    int[] faceVertexCounts = [{counts}]\n{indent}    int[] faceVertexIndices = [{indices}]"
                );
                if collision {
                    body.push_str(&format!(
                        "\n{indent}    uniform token physics:approximation = \"convexHull\""
                    ));
                }
                (
                    "Mesh",
                    "\"PhysicsCollisionAPI\", \"PhysicsMeshCollisionAPI\"",
                    body,
                )
            }
        };
        if collision {
            let _ = writeln!(
                out,
                "{indent}def {kind} \"{name}\" (\n{indent}    prepend apiSchemas = [{apis}]\n{indent})"
            );
        } else {
            let _ = writeln!(out, "{indent}def {kind} \"{name}\"");
        }
        let _ = writeln!(out, "{indent}{{");
        let _ = writeln!(out, "{indent}    {body}");
        if !collision {
            let _ = writeln!(out, "{indent}    uniform token purpose = \"render\"");
        }
        let _ = writeln!(
            out,
            "{indent}    double3 xformOp:translate = {}",
            v3(frame.t)
        );
        let _ = writeln!(out, "{indent}    quatd xformOp:orient = {}", quat(frame.q));
        let _ = writeln!(out, "{indent}    float3 xformOp:scale = {}", v3(scale));
        let _ = writeln!(
            out,
            "{indent}    uniform token[] xformOpOrder = [\"xformOp:translate\", \"xformOp:orient\", \"xformOp:scale\"]"
        );
        let _ = writeln!(out, "{indent}}}");
        Ok(())
    }
}

/// Converts the URDF at `path` into `.usda` text. Meshes are read from files
/// next to it and written into the stage, so the result stands alone.
pub fn urdf_to_usda(path: &Path, options: &UrdfOptions) -> Result<String, UrdfError> {
    let file = path.display().to_string();
    let err = |message: String| UrdfError {
        file: file.clone(),
        message,
    };
    let lower = file.to_ascii_lowercase();
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if lower.ends_with(".xacro") || text.contains("${") || text.contains("$(") {
        return Err(err(
            "this is a xacro file (it has ${…} or $(…) expressions); expand it to plain URDF with `xacro` first".into(),
        ));
    }
    let robot = urdf_rs::read_from_string(&as_urdfdom_reads(&text).map_err(&err)?)
        .map_err(|e| err(format!("not a readable URDF: {e}")))?;
    if robot.links.is_empty() {
        return Err(err("the robot has no links".into()));
    }
    let mut c = Converter {
        urdf: path,
        file: file.clone(),
        meshes: HashMap::new(),
    };
    let link_names: HashMap<&str, usize> = robot
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    // The tree: each link's parent joint.
    let mut parent_joint: HashMap<&str, &urdf_rs::Joint> = HashMap::new();
    for j in &robot.joints {
        for link in [&j.parent.link, &j.child.link] {
            if !link_names.contains_key(link.as_str()) {
                return Err(err(format!(
                    "joint `{}` names an unknown link `{link}`",
                    j.name
                )));
            }
        }
        match j.joint_type {
            urdf_rs::JointType::Revolute
            | urdf_rs::JointType::Continuous
            | urdf_rs::JointType::Prismatic
            | urdf_rs::JointType::Spherical
            | urdf_rs::JointType::Fixed => {}
            ref other => {
                return Err(err(format!(
                    "joint `{}` is {other:?}; revolute, continuous, prismatic, spherical and fixed joints are supported",
                    j.name
                )));
            }
        }
        if parent_joint.insert(j.child.link.as_str(), j).is_some() {
            return Err(err(format!(
                "link `{}` has two parent joints",
                j.child.link
            )));
        }
    }
    let roots: Vec<&urdf_rs::Link> = robot
        .links
        .iter()
        .filter(|l| !parent_joint.contains_key(l.name.as_str()))
        .collect();
    let [root] = roots.as_slice() else {
        return Err(err(format!(
            "a robot has one root link; found {}",
            roots.len()
        )));
    };
    // World frames of every link with all joints at zero.
    let mut world: HashMap<&str, Frame> = HashMap::new();
    fn frame_of<'r>(
        link: &'r str,
        parent_joint: &HashMap<&'r str, &'r urdf_rs::Joint>,
        world: &mut HashMap<&'r str, Frame>,
        depth: usize,
    ) -> Option<Frame> {
        if let Some(f) = world.get(link) {
            return Some(*f);
        }
        if depth > 10_000 {
            return None;
        }
        let f = match parent_joint.get(link) {
            None => Frame {
                t: [0.0; 3],
                q: [0.0, 0.0, 0.0, 1.0],
            },
            Some(j) => frame_of(&j.parent.link, parent_joint, world, depth + 1)?
                .then(&Frame::of(&j.origin)),
        };
        world.insert(link, f);
        Some(f)
    }
    for l in &robot.links {
        frame_of(&l.name, &parent_joint, &mut world, 0)
            .ok_or_else(|| err("the joints form a loop".into()))?;
    }
    // Each link's mass, world centre of mass and world inertia tensor, for the
    // joint drives below.
    let mut mass_world: HashMap<&str, (f64, [f64; 3], Mat3)> = HashMap::new();
    for link in &robot.links {
        let f = world[link.name.as_str()];
        let inertial = &link.inertial;
        let m = inertial.mass.value.max(0.0);
        let com = f.then(&Frame::of(&inertial.origin));
        let w = rotate_tensor(com.q, &inertia_tensor(&inertial.inertia));
        mass_world.insert(link.name.as_str(), (m, com.t, w));
    }
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for j in &robot.joints {
        children
            .entry(j.parent.link.as_str())
            .or_default()
            .push(j.child.link.as_str());
    }
    let subtree = |root: &str| -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![root.to_string()];
        while let Some(l) = stack.pop() {
            if let Some(c) = children.get(l.as_str()) {
                stack.extend(c.iter().map(|s| s.to_string()));
            }
            out.push(l);
        }
        out
    };
    let robot_name = ident(if robot.name.is_empty() {
        "robot"
    } else {
        &robot.name
    });
    let mut out = String::new();
    let _ = writeln!(out, "#usda 1.0\n(");
    let _ = writeln!(
        out,
        "    doc = \"Converted by hanzo-twin from {}\"",
        path.file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("a URDF")
            .replace('"', "'")
    );
    let _ = writeln!(
        out,
        "    defaultPrim = \"{robot_name}\"\n    metersPerUnit = 1\n    kilogramsPerUnit = 1\n    upAxis = \"Z\"\n)\n"
    );
    let _ = writeln!(out, "def Xform \"{robot_name}\"\n{{");
    for link in &robot.links {
        let f = world[link.name.as_str()];
        let name = ident(&link.name);
        let inertial = &link.inertial;
        let mass = inertial.mass.value;
        let is_root = std::ptr::eq(link, *root);
        let fixed = is_root && (options.fixed_base || mass <= 0.0);
        let _ = writeln!(
            out,
            "    def Xform \"{name}\" (\n        prepend apiSchemas = [\"PhysicsRigidBodyAPI\", \"PhysicsMassAPI\"]\n    )\n    {{"
        );
        let _ = writeln!(out, "        double3 xformOp:translate = {}", v3(f.t));
        let _ = writeln!(out, "        quatd xformOp:orient = {}", quat(f.q));
        let _ = writeln!(
            out,
            "        uniform token[] xformOpOrder = [\"xformOp:translate\", \"xformOp:orient\"]"
        );
        if fixed {
            let _ = writeln!(out, "        bool physics:rigidBodyEnabled = 0");
        }
        if mass > 0.0 {
            let frame = Frame::of(&inertial.origin);
            // The tensor in the link frame, then its principal axes.
            let rotated = rotate_tensor(frame.q, &inertia_tensor(&inertial.inertia));
            let (diag, axes) = symmetric_eigen(rotated);
            let _ = writeln!(out, "        float physics:mass = {mass}");
            let _ = writeln!(
                out,
                "        point3f physics:centerOfMass = {}",
                v3(frame.t)
            );
            let _ = writeln!(
                out,
                "        float3 physics:diagonalInertia = {}",
                v3(diag.map(|d| d.max(0.0)))
            );
            let _ = writeln!(
                out,
                "        quatf physics:principalAxes = {}",
                quat(quat_from_matrix(&axes))
            );
        } else if !fixed {
            // A massless moving link (a sensor frame, say): a token mass keeps
            // the solver well-posed; pybullet does the same.
            let _ = writeln!(out, "        float physics:mass = 0.001");
            let _ = writeln!(
                out,
                "        float3 physics:diagonalInertia = (1e-6, 1e-6, 1e-6)"
            );
        }
        for (k, col) in link.collision.iter().enumerate() {
            let prim = format!("collision_{k}");
            c.geometry(
                &mut out,
                "        ",
                &prim,
                &col.origin,
                &col.geometry,
                true,
            )?;
        }
        for (k, vis) in link.visual.iter().enumerate() {
            let prim = format!("visual_{k}");
            c.geometry(
                &mut out,
                "        ",
                &prim,
                &vis.origin,
                &vis.geometry,
                false,
            )?;
        }
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "    def Scope \"joints\"\n    {{");
    for j in &robot.joints {
        let kind = match j.joint_type {
            urdf_rs::JointType::Revolute | urdf_rs::JointType::Continuous => "PhysicsRevoluteJoint",
            urdf_rs::JointType::Prismatic => "PhysicsPrismaticJoint",
            urdf_rs::JointType::Spherical => "PhysicsSphericalJoint",
            _ => "PhysicsFixedJoint",
        };
        // A ball joint turns about every axis: its frames stay the link's.
        let free = matches!(kind, "PhysicsFixedJoint" | "PhysicsSphericalJoint");
        let name = ident(&j.name);
        let parent = ident(&j.parent.link);
        let child = ident(&j.child.link);
        let origin = Frame::of(&j.origin);
        let axis = j.axis.xyz.0;
        let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
        let align = if free || n == 0.0 {
            [0.0, 0.0, 0.0, 1.0]
        } else {
            quat_from_x_to(axis.map(|a| a / n))
        };
        let angular = kind == "PhysicsRevoluteJoint";
        // Angles in USD are degrees.
        let unit = if angular {
            180.0 / std::f64::consts::PI
        } else {
            1.0
        };
        let limit = &j.limit;
        // URDF has no controller gains. A position drive critically damped at
        // DRIVE_HZ for the inertia the joint moves (its whole subtree, about
        // its axis, at the zero pose) makes the robot hold and follow commands
        // out of the box; the URDF effort limit caps it.
        let mut drive = None;
        if !free {
            let joint_world = world[j.parent.link.as_str()].then(&origin);
            let axis_world = quat_rotate(joint_world.q, axis.map(|a| a / n.max(1e-300)));
            let mut inertia = 0.0;
            for link in subtree(&j.child.link) {
                let (m, com, w) = mass_world[link.as_str()];
                if angular {
                    let d: Vec<f64> = (0..3).map(|k| com[k] - joint_world.t[k]).collect();
                    let along: f64 = (0..3).map(|k| d[k] * axis_world[k]).sum();
                    let perp2 = d.iter().map(|x| x * x).sum::<f64>() - along * along;
                    let own: f64 = (0..3)
                        .flat_map(|a| (0..3).map(move |b| (a, b)))
                        .map(|(a, b)| axis_world[a] * w[a][b] * axis_world[b])
                        .sum();
                    inertia += m * perp2.max(0.0) + own.max(0.0);
                } else {
                    inertia += m;
                }
            }
            if inertia > 0.0 {
                let omega = 2.0 * std::f64::consts::PI * DRIVE_HZ;
                drive = Some((
                    if angular { "angular" } else { "linear" },
                    inertia * omega * omega / unit,
                    2.0 * inertia * omega / unit,
                ));
            }
        }
        match drive {
            Some((api, ..)) => {
                let _ = writeln!(
                    out,
                    "        def {kind} \"{name}\" (\n            prepend apiSchemas = [\"PhysicsDriveAPI:{api}\"]\n        )\n        {{"
                );
            }
            None => {
                let _ = writeln!(out, "        def {kind} \"{name}\"\n        {{");
            }
        }
        let _ = writeln!(
            out,
            "            rel physics:body0 = </{robot_name}/{parent}>"
        );
        let _ = writeln!(
            out,
            "            rel physics:body1 = </{robot_name}/{child}>"
        );
        let _ = writeln!(
            out,
            "            point3f physics:localPos0 = {}",
            v3(origin.t)
        );
        let _ = writeln!(
            out,
            "            quatf physics:localRot0 = {}",
            quat(quat_mul(origin.q, align))
        );
        let _ = writeln!(out, "            point3f physics:localPos1 = (0, 0, 0)");
        let _ = writeln!(out, "            quatf physics:localRot1 = {}", quat(align));
        if !free {
            let _ = writeln!(out, "            uniform token physics:axis = \"X\"");
            let limited = matches!(
                j.joint_type,
                urdf_rs::JointType::Revolute | urdf_rs::JointType::Prismatic
            ) && limit.lower.is_finite()
                && limit.upper.is_finite()
                && limit.lower <= limit.upper;
            if limited {
                let _ = writeln!(
                    out,
                    "            float physics:lowerLimit = {}",
                    limit.lower * unit
                );
                let _ = writeln!(
                    out,
                    "            float physics:upperLimit = {}",
                    limit.upper * unit
                );
            }
        }
        if let Some((api, stiffness, damping)) = drive {
            let _ = writeln!(
                out,
                "            uniform token drive:{api}:physics:type = \"force\""
            );
            let _ = writeln!(
                out,
                "            float drive:{api}:physics:stiffness = {stiffness}"
            );
            let _ = writeln!(
                out,
                "            float drive:{api}:physics:damping = {damping}"
            );
            if limit.effort.is_finite() && limit.effort > 0.0 {
                let _ = writeln!(
                    out,
                    "            float drive:{api}:physics:maxForce = {}",
                    limit.effort
                );
            }
        }
        let _ = writeln!(out, "        }}");
    }
    let _ = writeln!(out, "    }}");
    if !options.self_collision {
        // One group holding every link's colliders, filtering itself.
        let _ = writeln!(
            out,
            "    def PhysicsCollisionGroup \"self_collision\"\n    {{\n        rel collection:colliders:includes = </{robot_name}>\n        rel physics:filteredGroups = </{robot_name}/self_collision>\n    }}"
        );
    }
    let _ = writeln!(out, "}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_recovers_a_rotated_diagonal_tensor() {
        let q = quat_from_rpy([0.3, -0.7, 1.1]);
        let r = quat_to_matrix(q);
        let d = [1.0, 2.0, 3.0];
        let mut m = [[0.0; 3]; 3];
        for (a, row) in m.iter_mut().enumerate() {
            for (b, cell) in row.iter_mut().enumerate() {
                *cell = (0..3).map(|k| r[a][k] * d[k] * r[b][k]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(m);
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        for (got, want) in sorted.iter().zip(d) {
            assert!((got - want).abs() < 1e-9, "{values:?}");
        }
        // V diag V^T rebuilds the tensor.
        for a in 0..3 {
            for b in 0..3 {
                let rebuilt: f64 = (0..3)
                    .map(|k| vectors[a][k] * values[k] * vectors[b][k])
                    .sum();
                assert!((rebuilt - m[a][b]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn axis_alignment_maps_x_onto_the_axis() {
        for a in [
            [0.0, 0.0, 1.0],
            [0.0, -1.0, 0.0],
            [-1.0, 0.0, 0.0],
            [0.6, 0.0, 0.8],
        ] {
            let got = quat_rotate(quat_from_x_to(a), [1.0, 0.0, 0.0]);
            for k in 0..3 {
                assert!((got[k] - a[k]).abs() < 1e-12, "{a:?} -> {got:?}");
            }
        }
    }

    #[test]
    fn elements_after_a_geometrys_shape_are_ignored_as_urdfdom_ignores_them() {
        // racecar.urdf's visuals, as pybullet_data ships them.
        let text = r#"<robot name="car" xmlns:xacro="http://www.ros.org/wiki/xacro">
  <link name="laser">
    <visual>
      <geometry>
        <box size="0.1 0.2 0.3"/>
        <material name="grey"><color rgba="0.5 0.5 0.5 1"/></material>
        <sphere radius="9"/>
      </geometry>
      <material name="grey"/>
    </visual>
    <collision><geometry><cylinder radius="0.5" length="2"/></geometry></collision>
  </link>
</robot>"#;
        assert!(
            urdf_rs::read_from_string(text).is_err(),
            "urdf-rs alone refuses it"
        );
        let robot =
            urdf_rs::read_from_string(&as_urdfdom_reads(text).expect("read")).expect("readable");
        let link = &robot.links[0];
        assert!(
            matches!(link.visual[0].geometry, urdf_rs::Geometry::Box { .. }),
            "{:?}",
            link.visual[0].geometry
        );
        assert_eq!(
            link.visual[0].material.as_ref().map(|m| m.name.as_str()),
            Some("grey")
        );
        assert!(matches!(
            link.collision[0].geometry,
            urdf_rs::Geometry::Cylinder { .. }
        ));
        // Broken XML is still an error, with where it broke.
        let e = as_urdfdom_reads("<robot><link name=\"a\"></robot>").expect_err("mismatched");
        assert!(e.contains("not well-formed XML"), "{e}");
    }

    #[test]
    fn xacro_and_unsupported_joints_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let xacro = dir.path().join("arm.urdf");
        std::fs::write(
            &xacro,
            "<robot name=\"a\"><link name=\"${prefix}base\"/></robot>",
        )
        .expect("write");
        let e = urdf_to_usda(&xacro, &UrdfOptions::default()).expect_err("xacro");
        assert!(
            e.to_string().contains("xacro") && e.file.ends_with("arm.urdf"),
            "{e}"
        );
        let planar = dir.path().join("p.urdf");
        std::fs::write(
            &planar,
            "<robot name=\"p\"><link name=\"a\"/><link name=\"b\"/><joint name=\"slide\" type=\"planar\"><parent link=\"a\"/><child link=\"b\"/></joint></robot>",
        )
        .expect("write");
        let e = urdf_to_usda(&planar, &UrdfOptions::default()).expect_err("planar");
        assert!(e.to_string().contains("slide"), "{e}");
    }
}

//! Writes a recorded run as a USD stage (`.usda` text): every recorded body is
//! an Xform whose world pose is time-sampled at its steps (time code = step,
//! `timeCodesPerSecond` = the twin's step rate), with its collision shapes as
//! child geometry so the run can be watched in any USD viewer.

use crate::recording::Recording;
use crate::scene::{Axis, Pose, SceneModel, Shape};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A prim path's parts, checked to be plain USD identifiers.
fn parts(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let ok = !parts.is_empty()
        && parts.iter().all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    ok.then_some(parts)
}

#[derive(Default)]
struct Node {
    /// Index into the recording's bodies when this prim is a recorded body.
    body: Option<usize>,
    children: BTreeMap<String, Node>,
}

fn axis_token(axis: Axis) -> &'static str {
    match axis {
        Axis::X => "X",
        Axis::Y => "Y",
        Axis::Z => "Z",
    }
}

pub(crate) fn v3(v: [f64; 3]) -> String {
    format!("({}, {}, {})", v[0], v[1], v[2])
}

/// USD writes quaternions real part first. Engines that work in f32 hand out
/// quaternions a little off unit length in f64; written normalized.
pub(crate) fn quat(q: [f64; 4]) -> String {
    let n = q.iter().map(|c| c * c).sum::<f64>().sqrt();
    let q = if n > 0.0 && n.is_finite() {
        q.map(|c| c / n)
    } else {
        [0.0, 0.0, 0.0, 1.0]
    };
    format!("({}, {}, {}, {})", q[3], q[0], q[1], q[2])
}

/// A fixed world pose (body poses in the scene model are world poses).
fn world_pose(out: &mut String, indent: &str, pose: &Pose) {
    let _ = writeln!(
        out,
        "{indent}double3 xformOp:translate = {}",
        v3(pose.translation)
    );
    let _ = writeln!(
        out,
        "{indent}quatd xformOp:orient = {}",
        quat(pose.rotation)
    );
    let _ = writeln!(
        out,
        "{indent}uniform token[] xformOpOrder = [\"!resetXformStack!\", \"xformOp:translate\", \"xformOp:orient\"]"
    );
}

fn shapes(out: &mut String, indent: &str, scene: &SceneModel, body_path: &str) {
    let Some(body) = scene.bodies.iter().find(|b| b.path == body_path) else {
        return;
    };
    for (i, collider) in body.colliders.iter().enumerate() {
        let (kind, attrs) = match &collider.shape {
            Shape::Cuboid { half_extents: h } => (
                "Cube",
                format!(
                    "double size = 2\n{indent}    float3 xformOp:scale = {}",
                    v3(*h)
                ),
            ),
            Shape::Sphere { radius } => ("Sphere", format!("double radius = {radius}")),
            Shape::Capsule {
                radius,
                half_height,
                axis,
            } => (
                "Capsule",
                format!(
                    "double radius = {radius}\n{indent}    double height = {}\n{indent}    uniform token axis = \"{}\"",
                    2.0 * half_height,
                    axis_token(*axis)
                ),
            ),
            Shape::Cylinder {
                radius,
                half_height,
                axis,
            } => (
                "Cylinder",
                format!(
                    "double radius = {radius}\n{indent}    double height = {}\n{indent}    uniform token axis = \"{}\"",
                    2.0 * half_height,
                    axis_token(*axis)
                ),
            ),
            // Infinite planes have no finite geometry to show.
            Shape::Plane { .. } => continue,
            Shape::TriMesh {
                vertices,
                triangles,
            }
            | Shape::ConvexDecomposition {
                vertices,
                triangles,
            } => (
                "Mesh",
                format!(
                    "point3f[] points = [{}]\n{indent}    int[] faceVertexCounts = [{}]\n{indent}    int[] faceVertexIndices = [{}]",
                    vertices
                        .iter()
                        .map(|v| v3(*v))
                        .collect::<Vec<_>>()
                        .join(", "),
                    vec!["3"; triangles.len()].join(", "),
                    triangles
                        .iter()
                        .map(|t| format!("{}, {}, {}", t[0], t[1], t[2]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Shape::ConvexHull { points } => (
                "Points",
                format!(
                    "point3f[] points = [{}]",
                    points.iter().map(|v| v3(*v)).collect::<Vec<_>>().join(", ")
                ),
            ),
        };
        let _ = writeln!(out, "{indent}def {kind} \"collider_{i}\"");
        let _ = writeln!(out, "{indent}{{");
        let inner = format!("{indent}    ");
        let _ = writeln!(out, "{inner}{attrs}");
        let p = &collider.local_pose;
        let _ = writeln!(
            out,
            "{inner}double3 xformOp:translate = {}",
            v3(p.translation)
        );
        let _ = writeln!(out, "{inner}quatd xformOp:orient = {}", quat(p.rotation));
        let order = if matches!(collider.shape, Shape::Cuboid { .. }) {
            "[\"xformOp:translate\", \"xformOp:orient\", \"xformOp:scale\"]"
        } else {
            "[\"xformOp:translate\", \"xformOp:orient\"]"
        };
        let _ = writeln!(out, "{inner}uniform token[] xformOpOrder = {order}");
        let _ = writeln!(out, "{indent}}}");
    }
}

fn write_node(
    out: &mut String,
    name: &str,
    node: &Node,
    path: &str,
    depth: usize,
    scene: &SceneModel,
    rec: &Recording,
) {
    let indent = "    ".repeat(depth);
    let inner = "    ".repeat(depth + 1);
    let _ = writeln!(out, "{indent}def Xform \"{name}\"");
    let _ = writeln!(out, "{indent}{{");
    if let Some(b) = node.body {
        // World poses: reset the parent transforms, whatever nests above.
        let _ = writeln!(out, "{inner}double3 xformOp:translate.timeSamples = {{");
        for f in &rec.frames {
            let _ = writeln!(out, "{inner}    {}: {},", f.step, v3(f.positions[b]));
        }
        let _ = writeln!(out, "{inner}}}");
        let _ = writeln!(out, "{inner}quatd xformOp:orient.timeSamples = {{");
        for f in &rec.frames {
            let _ = writeln!(out, "{inner}    {}: {},", f.step, quat(f.orientations[b]));
        }
        let _ = writeln!(out, "{inner}}}");
        let _ = writeln!(
            out,
            "{inner}uniform token[] xformOpOrder = [\"!resetXformStack!\", \"xformOp:translate\", \"xformOp:orient\"]"
        );
        shapes(out, &inner, scene, path);
    } else if let Some(body) = scene.bodies.iter().find(|b| b.path == path) {
        // A body that was not recorded keeps its scene pose.
        world_pose(out, &inner, &body.pose);
        shapes(out, &inner, scene, path);
    }
    for (child, child_node) in &node.children {
        let child_path = format!("{path}/{child}");
        write_node(out, child, child_node, &child_path, depth + 1, scene, rec);
    }
    let _ = writeln!(out, "{indent}}}");
}

/// The run as `.usda` text. Bodies whose paths are not plain identifiers are
/// left out (every path the USD reader produced is one).
pub fn recording_to_usda(scene: &SceneModel, rec: &Recording) -> String {
    let mut root = Node::default();
    for (i, path) in rec.bodies.iter().enumerate() {
        let Some(parts) = parts(path) else { continue };
        let mut node = &mut root;
        for part in parts {
            node = node.children.entry(part.to_string()).or_default();
        }
        node.body = Some(i);
    }
    let start = rec.frames.first().map_or(0, |f| f.step);
    let end = rec.frames.last().map_or(0, |f| f.step);
    let up = match scene.up_axis {
        Axis::Y => "Y",
        _ => "Z",
    };
    let default_prim = root.children.keys().next().cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "#usda 1.0");
    let _ = writeln!(out, "(");
    let _ = writeln!(
        out,
        "    doc = \"A Hanzo Twin run of {} recorded frames; time code = simulation step\"",
        rec.frames.len()
    );
    if !default_prim.is_empty() {
        let _ = writeln!(out, "    defaultPrim = \"{default_prim}\"");
    }
    let _ = writeln!(out, "    metersPerUnit = 1");
    let _ = writeln!(out, "    upAxis = \"{up}\"");
    let _ = writeln!(out, "    startTimeCode = {start}");
    let _ = writeln!(out, "    endTimeCode = {end}");
    let _ = writeln!(out, "    timeCodesPerSecond = {}", rec.step_hz);
    let _ = writeln!(out, ")");
    let _ = writeln!(out);
    for (name, node) in &root.children {
        write_node(&mut out, name, node, &format!("/{name}"), 0, scene, rec);
    }
    out
}

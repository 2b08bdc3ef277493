//! Validation findings: for every prim of a scene, whether an engine simulates
//! it as authored, approximates it, or cannot simulate it.

use crate::scene::{BodyKind, SceneModel, Shape};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    Supported,
    /// Simulated, but not exactly as authored; `note` says how.
    Approximated,
    /// Cannot be simulated; the scene does not load on this engine.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub prim: String,
    /// What was found, e.g. `rigid body (dynamic)`, `collider: triangle mesh`.
    pub feature: String,
    pub support: Support,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Finding {
    pub fn supported(prim: &str, feature: impl Into<String>) -> Finding {
        Finding {
            prim: prim.to_string(),
            feature: feature.into(),
            support: Support::Supported,
            note: None,
        }
    }

    /// Marks the finding approximated, saying how.
    pub fn approximate(&mut self, note: impl Into<String>) {
        self.support = Support::Approximated;
        self.note = Some(note.into());
    }
}

pub fn shape_name(shape: &Shape) -> &'static str {
    match shape {
        Shape::Cuboid { .. } => "box",
        Shape::Sphere { .. } => "sphere",
        Shape::Capsule { .. } => "capsule",
        Shape::Cylinder { .. } => "cylinder",
        Shape::Plane { .. } => "plane",
        Shape::TriMesh { .. } => "triangle mesh",
        Shape::ConvexHull { .. } => "convex hull",
        Shape::ConvexDecomposition { .. } => "convex decomposition",
    }
}

/// Refuses a scene in another engine's own format (an MJCF model outside MuJoCo).
pub fn refuse_foreign_native(
    scene: &SceneModel,
    engine: crate::EngineKind,
) -> Result<(), crate::EngineError> {
    match &scene.native {
        Some(native) if crate::EngineKind::reading(native.format) != engine => {
            Err(crate::EngineError::ScenePrim {
                prim: "/".to_string(),
                message: format!(
                    "{} is an MJCF model, which only {} loads; convert it to USD for {engine}",
                    native.path,
                    crate::EngineKind::reading(native.format)
                ),
            })
        }
        _ => Ok(()),
    }
}

/// For a scene in an engine's own format, its one finding: the whole model,
/// supported by that engine and by no other.
pub fn native_findings(scene: &SceneModel, engine: crate::EngineKind) -> Option<Vec<Finding>> {
    let native = scene.native.as_ref()?;
    let owner = crate::EngineKind::reading(native.format);
    let mut finding = Finding::supported("/", format!("{:?} model", native.format).to_uppercase());
    if owner != engine {
        finding.support = Support::Unsupported;
        finding.note = Some(format!("only {owner} loads this format; convert it to USD"));
    }
    Some(vec![finding])
}

/// Every physics prim of `scene` as a supported finding; engines then mark
/// what they approximate.
pub fn scene_findings(scene: &SceneModel) -> Vec<Finding> {
    let mut out = Vec::new();
    for body in &scene.bodies {
        let kind = match body.kind {
            BodyKind::Dynamic => "dynamic",
            BodyKind::Static => "static",
            BodyKind::Kinematic => "kinematic",
        };
        out.push(Finding::supported(
            &body.path,
            format!("rigid body ({kind})"),
        ));
        for c in &body.colliders {
            out.push(Finding::supported(
                &c.path,
                format!("collider: {}", shape_name(&c.shape)),
            ));
        }
    }
    for joint in &scene.joints {
        let mut feature = format!("joint: {}", joint.kind.name());
        if joint.limits.is_some() {
            feature.push_str(", limits");
        }
        if joint.cone_limits.is_some() {
            feature.push_str(", cone");
        }
        if joint.drive.is_some() {
            feature.push_str(", drive");
        }
        out.push(Finding::supported(&joint.path, feature));
    }
    for camera in &scene.cameras {
        out.push(Finding::supported(&camera.path, "camera"));
    }
    out
}

/// The findings an engine that builds trees of bodies (MuJoCo, PyBullet,
/// PhysX) starts from.
pub enum TreeFindings {
    /// The scene is in an engine's own format: these are complete.
    Native(Vec<Finding>),
    /// The scene's findings, with what cannot become a tree marked unsupported;
    /// the engine adds its own notes to the rest.
    Scene(Vec<Finding>),
}

pub fn tree_findings(scene: &SceneModel, engine: crate::EngineKind) -> TreeFindings {
    if let Some(native) = native_findings(scene, engine) {
        return TreeFindings::Native(native);
    }
    let mut out = scene_findings(scene);
    if let Err(problem) = crate::tree::Tree::plan(scene) {
        for f in out.iter_mut().filter(|f| f.prim == problem.prim) {
            f.support = Support::Unsupported;
            f.note = Some(problem.message.clone());
        }
    }
    TreeFindings::Scene(out)
}

/// The collider a finding is about, with its body.
pub fn collider_of<'a>(
    scene: &'a SceneModel,
    finding: &Finding,
) -> Option<(&'a crate::scene::Body, &'a crate::scene::Collider)> {
    if !finding.feature.starts_with("collider") {
        return None;
    }
    scene
        .bodies
        .iter()
        .flat_map(|b| b.colliders.iter().map(move |c| (b, c)))
        .find(|(_, c)| c.path == finding.prim)
}

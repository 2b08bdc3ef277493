//! Hanzo Twin's renderer.
//!
//! A [`RenderScene`] is built once from a scene model: every collider
//! becomes a parry3d shape with its surface and semantic class, and the
//! scene's UsdLux lights (or a default sun and sky when it has none) light
//! it. [`RenderScene::render`] then draws the bodies at any poses a
//! simulation reports, through a pinhole [`CameraView`], into a [`Frame`]:
//! shaded RGB with shadows, and the labels a vision dataset needs (depth,
//! surface normals, instance and semantic ids, tight and loose 2D boxes and
//! each instance's visible fraction). One primary ray a pixel gives the
//! labels; RGB may take more (`samples_per_pixel`). Rows are traced in
//! parallel; the result depends only on the inputs, never on the thread
//! count.
//!
//! [`encode`] writes frames as PNG: 8-bit sRGB colour, 16-bit depth,
//! normals and ids, with their scales in the files' text chunks. [`synth`]
//! makes labelled datasets: the spec's job configuration, each frame's
//! seeded variation, and COCO annotations.

pub mod camera;
pub mod encode;
mod frame;
mod shading;
pub mod synth;
mod world;

pub use camera::{CameraView, Intrinsics};
pub use frame::{Frame, InstanceLabel};
pub use world::{RenderOptions, RenderScene};

/// What rendering can refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// A request's field is out of range.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No camera at this path in the scene.
    #[error("the scene has no camera {0}")]
    UnknownCamera(String),
    /// A scene shape cannot be drawn.
    #[error("scene shape {path}: {message}")]
    Shape { path: String, message: String },
}

impl RenderError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> RenderError {
        RenderError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

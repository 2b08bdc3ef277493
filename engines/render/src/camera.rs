//! The pinhole camera: where each pixel's ray starts and which way it
//! points, and where a world point lands in the image.

use hanzo_twin_scene::SceneModel;
use hanzo_twin_scene::geometry::{cross, dot, norm, normalize_quat, quat_rotate, scaled, sub};
use serde::{Deserialize, Serialize};

use crate::RenderError;

/// Largest image, in pixels.
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// The camera matrix: pixel `(u, v)` of a point at camera coordinates
/// `(x, y, z)` (x right, y down, z forward) is `(fx·x/z + cx, fy·y/z + cy)`,
/// in pixels from the image's top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

/// A camera placed in the world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraView {
    pub eye: [f64; 3],
    /// Unit vectors: where it looks, image right, image up.
    pub forward: [f64; 3],
    pub right: [f64; 3],
    pub up: [f64; 3],
    pub width: u32,
    pub height: u32,
    /// Vertical field of view, degrees.
    pub fov_deg: f64,
    /// Nothing nearer or farther is drawn.
    pub near: f64,
    pub far: f64,
}

impl CameraView {
    /// The scene's camera at `path` (a USD `Camera`: it looks down its local
    /// -Z with +Y up), with its vertical field of view unless `fov_deg` is given.
    pub fn from_scene(
        scene: &SceneModel,
        path: &str,
        width: u32,
        height: u32,
        fov_deg: Option<f64>,
    ) -> Result<CameraView, RenderError> {
        let camera = scene
            .cameras
            .iter()
            .find(|c| c.path == path)
            .ok_or_else(|| RenderError::UnknownCamera(path.to_string()))?;
        CameraView::of_camera(camera, width, height, fov_deg)
    }

    /// What `camera` sees (it looks down its local -Z with +Y up), with its
    /// vertical field of view unless `fov_deg` is given.
    pub fn of_camera(
        camera: &hanzo_twin_scene::scene::Camera,
        width: u32,
        height: u32,
        fov_deg: Option<f64>,
    ) -> Result<CameraView, RenderError> {
        let q = normalize_quat(camera.pose.rotation)
            .ok_or_else(|| RenderError::invalid("camera", "has no valid orientation"))?;
        CameraView::new(
            camera.pose.translation,
            quat_rotate(q, [0.0, 0.0, -1.0]),
            quat_rotate(q, [0.0, 1.0, 0.0]),
            fov_deg.unwrap_or(camera.fov_deg),
            (width, height),
            (camera.near, camera.far),
        )
    }

    /// A camera at `eye` looking at `at`, `up` being up in the image.
    pub fn look_at(
        eye: [f64; 3],
        at: [f64; 3],
        up: [f64; 3],
        fov_deg: f64,
        width: u32,
        height: u32,
    ) -> Result<CameraView, RenderError> {
        CameraView::new(eye, sub(at, eye), up, fov_deg, (width, height), (1e-3, 1e4))
    }

    fn new(
        eye: [f64; 3],
        forward: [f64; 3],
        up: [f64; 3],
        fov_deg: f64,
        (width, height): (u32, u32),
        (near, far): (f64, f64),
    ) -> Result<CameraView, RenderError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels == 0 || pixels > MAX_PIXELS {
            return Err(RenderError::invalid(
                "resolution",
                format!("must be between 1 and 4096×4096 pixels, got {width}×{height}"),
            ));
        }
        if !(fov_deg.is_finite() && fov_deg > 0.0 && fov_deg < 180.0) {
            return Err(RenderError::invalid(
                "fov_deg",
                format!("must be between 0 and 180 degrees, got {fov_deg}"),
            ));
        }
        if !eye.iter().chain(&forward).chain(&up).all(|v| v.is_finite()) {
            return Err(RenderError::invalid("camera", "its pose must be finite"));
        }
        if !(near.is_finite() && far.is_finite() && near > 0.0 && far > near) {
            return Err(RenderError::invalid(
                "clipping_range",
                format!("must be 0 < near < far, got ({near}, {far})"),
            ));
        }
        let forward = unit(forward)
            .ok_or_else(|| RenderError::invalid("look_at", "must differ from the eye"))?;
        let right = unit(cross(forward, up))
            .ok_or_else(|| RenderError::invalid("up", "must not be parallel to the view"))?;
        Ok(CameraView {
            eye,
            forward,
            right,
            up: cross(right, forward),
            width,
            height,
            fov_deg,
            near,
            far,
        })
    }

    pub fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    pub fn intrinsics(&self) -> Intrinsics {
        let f = f64::from(self.height) / 2.0 / (self.fov_deg.to_radians() / 2.0).tan();
        Intrinsics {
            fx: f,
            fy: f,
            cx: f64::from(self.width) / 2.0,
            cy: f64::from(self.height) / 2.0,
        }
    }

    /// The unit direction of the ray through image point `(u, v)`, in pixels
    /// from the top-left corner (a pixel's centre is at `+0.5`).
    pub fn ray(&self, u: f64, v: f64) -> [f64; 3] {
        let k = self.intrinsics();
        let x = (u - k.cx) / k.fx;
        let y = (k.cy - v) / k.fy;
        let d = [
            self.forward[0] + self.right[0] * x + self.up[0] * y,
            self.forward[1] + self.right[1] * x + self.up[1] * y,
            self.forward[2] + self.right[2] * x + self.up[2] * y,
        ];
        unit(d).unwrap_or(self.forward)
    }

    /// Where a world point lands: `(u, v, depth)`, depth along the view
    /// axis; `None` behind the camera.
    pub fn project(&self, p: [f64; 3]) -> Option<(f64, f64, f64)> {
        let d = sub(p, self.eye);
        let z = dot(d, self.forward);
        if z <= 0.0 {
            return None;
        }
        let k = self.intrinsics();
        Some((
            k.cx + k.fx * dot(d, self.right) / z,
            k.cy - k.fy * dot(d, self.up) / z,
            z,
        ))
    }
}

fn unit(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = norm(a);
    (n.is_finite() && n > 1e-12).then(|| scaled(a, 1.0 / n))
}

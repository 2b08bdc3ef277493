//! The pinhole camera the ray-casting renderers share: where each pixel's ray
//! starts and which way it points, from a scene camera or from render params.

use crate::geometry::{cross, normalize_quat, quat_rotate, sub};
use crate::scene::Camera;
use crate::{EngineError, RenderParams};

/// Largest rendered image, in pixels.
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// A camera placed in the world, ready to cast one ray per pixel.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub eye: [f64; 3],
    forward: [f64; 3],
    right: [f64; 3],
    up: [f64; 3],
    tan_half: f64,
    aspect: f64,
    pub width: u32,
    pub height: u32,
    /// Rays that hit nothing within this distance read as `max_depth`.
    pub max_depth: f64,
}

impl View {
    /// The view from the camera at `camera_path` among `cameras`, or, for `/` or an
    /// empty path, from `params`' eye and look-at point.
    pub fn new(
        cameras: &[Camera],
        camera_path: &str,
        params: &RenderParams,
    ) -> Result<View, EngineError> {
        let invalid = |field: &str, message: &str| EngineError::Invalid {
            field: format!("render {field}"),
            message: message.to_string(),
        };
        let pixels = u64::from(params.width) * u64::from(params.height);
        if pixels == 0 || pixels > MAX_PIXELS {
            return Err(invalid("size", "must be between 1 and 4096×4096 pixels"));
        }
        if !(params.max_depth.is_finite() && params.max_depth > 0.0) {
            return Err(invalid("max_depth", "must be finite and positive"));
        }
        let finite = |field: &str, v: [f64; 3]| {
            if v.iter().all(|x| x.is_finite()) {
                Ok(v)
            } else {
                Err(invalid(field, "must be finite"))
            }
        };
        let (eye, forward, up, fov_deg) =
            if let Some(camera) = cameras.iter().find(|c| c.path == camera_path) {
                let q = normalize_quat(camera.pose.rotation)
                    .ok_or_else(|| invalid("camera", "has no valid orientation"))?;
                (
                    finite("camera position", camera.pose.translation)?,
                    quat_rotate(q, [0.0, 0.0, -1.0]),
                    quat_rotate(q, [0.0, 1.0, 0.0]),
                    camera.fov_deg,
                )
            } else if camera_path.is_empty() || camera_path == "/" {
                let eye = finite("eye", params.eye)?;
                let at = finite("look_at", params.look_at)?;
                let up = finite("up", params.up)?;
                let forward = normalize(sub(at, eye))
                    .ok_or_else(|| invalid("look_at", "must differ from the eye"))?;
                let right = normalize(cross(forward, up))
                    .ok_or_else(|| invalid("up", "must not be parallel to the view"))?;
                (eye, forward, cross(right, forward), params.fov_deg)
            } else {
                return Err(EngineError::UnknownPath {
                    what: "camera",
                    path: camera_path.to_string(),
                });
            };
        if !(fov_deg.is_finite() && fov_deg > 0.0 && fov_deg < 180.0) {
            return Err(invalid("fov_deg", "must be in (0, 180) degrees"));
        }
        Ok(View {
            eye,
            forward,
            right: cross(forward, up),
            up,
            tan_half: (fov_deg.to_radians() / 2.0).tan(),
            aspect: f64::from(params.width) / f64::from(params.height),
            width: params.width,
            height: params.height,
            max_depth: params.max_depth,
        })
    }

    pub fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// The unit direction of the ray through the centre of pixel (`row`, `col`),
    /// rows from the top.
    pub fn ray(&self, row: u32, col: u32) -> [f64; 3] {
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let y = (1.0 - 2.0 * (f64::from(row) + 0.5) / h) * self.tan_half;
        let x = (2.0 * (f64::from(col) + 0.5) / w - 1.0) * self.tan_half * self.aspect;
        let dir = [
            self.forward[0] + self.right[0] * x + self.up[0] * y,
            self.forward[1] + self.right[1] * x + self.up[1] * y,
            self.forward[2] + self.right[2] * x + self.up[2] * y,
        ];
        normalize(dir).unwrap_or(self.forward)
    }
}

fn normalize(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
    (n.is_finite() && n > 1e-12).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

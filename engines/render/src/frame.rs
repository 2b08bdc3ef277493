//! A rendered frame and its labels.

use serde::{Deserialize, Serialize};

use crate::camera::Intrinsics;

/// One camera's view: row-major images from the top-left pixel, and a
/// label per instance. Instances are the scene's bodies: id `i + 1` is
/// body `i`, 0 is nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub intrinsics: Intrinsics,
    /// 8-bit sRGB, three bytes a pixel; `None` when colour was not asked for.
    pub rgb: Option<Vec<u8>>,
    /// Distance from the image plane along the view axis, metres; infinite
    /// where the ray hits nothing before the far plane.
    pub depth: Vec<f32>,
    /// World-space unit surface normal (outward), zero where nothing is hit.
    pub normal: Vec<[f32; 3]>,
    pub instance: Vec<u32>,
    /// Class id: `classes[id - 1]`, 0 for none.
    pub semantic: Vec<u16>,
    /// Every instance the view's rays pass through, by id.
    pub instances: Vec<InstanceLabel>,
    pub classes: Vec<String>,
}

/// What one instance looks like in a frame. Boxes are `[x_min, y_min,
/// x_max, y_max]` in pixels, inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceLabel {
    pub id: u32,
    /// The body's prim path.
    pub path: String,
    pub class: Option<String>,
    pub class_id: u16,
    /// Pixels where it is the nearest surface.
    pub visible_pixels: u64,
    /// Pixels it would cover with nothing in front of it.
    pub projected_pixels: u64,
    /// `visible_pixels / projected_pixels`: 1 unoccluded, 0 hidden.
    pub visible_fraction: f64,
    /// Around its visible pixels; `None` when none is visible.
    pub bbox_tight: Option<[u32; 4]>,
    /// Around all it covers, hidden parts included.
    pub bbox_loose: Option<[u32; 4]>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceStats {
    pub visible: u64,
    pub projected: u64,
    pub tight: Option<[u32; 4]>,
    pub loose: Option<[u32; 4]>,
}

fn grow(b: &mut Option<[u32; 4]>, x: u32, y: u32) {
    *b = Some(match *b {
        None => [x, y, x, y],
        Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
    });
}

fn union(a: &mut Option<[u32; 4]>, b: Option<[u32; 4]>) {
    if let Some([x0, y0, x1, y1]) = b {
        grow(a, x0, y0);
        grow(a, x1, y1);
    }
}

impl InstanceStats {
    pub fn see(&mut self, x: u32, y: u32) {
        self.visible += 1;
        grow(&mut self.tight, x, y);
    }

    pub fn project(&mut self, x: u32, y: u32) {
        self.projected += 1;
        grow(&mut self.loose, x, y);
    }

    pub fn merge(&mut self, other: &InstanceStats) {
        self.visible += other.visible;
        self.projected += other.projected;
        union(&mut self.tight, other.tight);
        union(&mut self.loose, other.loose);
    }
}

impl Frame {
    /// The label of instance `id`.
    pub fn instance_label(&self, id: u32) -> Option<&InstanceLabel> {
        self.instances.iter().find(|l| l.id == id)
    }

    /// The label of the body at `path`.
    pub fn label_of(&self, path: &str) -> Option<&InstanceLabel> {
        self.instances.iter().find(|l| l.path == path)
    }

    /// One pixel's index in the row-major arrays.
    pub fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }
}

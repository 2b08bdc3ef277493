//! Synthetic datasets: the spec's job configuration ([`SynthSpec`]), the
//! seeded variation of each frame ([`vary`]), and the COCO annotation file
//! ([`coco`]). Frame `i` depends only on the spec, the scene and `i` (its
//! random numbers come from the seed's stream `i`), so batches may be drawn
//! in any order, on any worker, and again after a crash, with the same bytes.

pub mod coco;
pub mod dataset;
pub mod vary;

use serde::{Deserialize, Deserializer, Serialize};

use crate::RenderError;

/// The spec's "Synthetic Data Job Configuration".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthSpec {
    /// The twin whose scene (and bodies' current poses) is drawn.
    pub twin_id: String,
    /// The engine the spec names (`omniverse` there); frames are drawn by
    /// this node's renderer whatever it says, and the manifest records it.
    #[serde(default)]
    pub engine: Option<String>,
    /// The dataset's name; each generation is its next version.
    pub output_dataset: String,
    pub cameras: Vec<SynthCamera>,
    /// `bounding_box_2d`, `semantic_segmentation`, `instance_segmentation`,
    /// `depth`, `surface_normal`, `occlusion`.
    pub labels: Vec<Label>,
    #[serde(default)]
    pub randomization: Randomization,
    #[serde(deserialize_with = "count")]
    pub num_frames: u64,
    /// Frames a batch: the unit a render worker draws, and redraws after a
    /// crash (the spec's per-GPU batch).
    #[serde(default = "default_batch", deserialize_with = "count")]
    pub frames_per_gpu: u64,
    #[serde(default)]
    pub output_format: OutputFormat,
    #[serde(default)]
    pub quality: Quality,
    /// Seeds every frame's variation.
    #[serde(default)]
    pub seed: u64,
}

fn default_batch() -> u64 {
    100
}

/// A count written as YAML allows: `100000` or `100_000`.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Count {
        Number(u64),
        Text(String),
    }
    match Count::deserialize(d)? {
        Count::Number(n) => Ok(n),
        Count::Text(t) => t
            .replace('_', "")
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a whole number"))),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthCamera {
    /// A camera of the scene.
    pub path: String,
    /// `[width, height]` in pixels.
    pub resolution: [u32; 2],
    /// Vertical field of view; default the camera's own.
    #[serde(default)]
    pub fov_deg: Option<f64>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    #[serde(rename = "bounding_box_2d")]
    BoundingBox2d,
    SemanticSegmentation,
    InstanceSegmentation,
    Depth,
    SurfaceNormal,
    Occlusion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// COCO JSON (boxes, RLE masks) beside the PNG images.
    #[default]
    Coco,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    /// Rays a pixel for colour (1–64 here; the spec's 256 is for a path
    /// tracer and is refused with the reason).
    #[serde(default = "one")]
    pub samples_per_pixel: u32,
    /// The spec's OptiX denoiser: this renderer has no noise to remove;
    /// `none` or unset only.
    #[serde(default)]
    pub denoiser: Option<String>,
}

fn one() -> u32 {
    1
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            samples_per_pixel: 1,
            denoiser: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Randomization {
    #[serde(default)]
    pub object_placement: Option<ObjectPlacement>,
    #[serde(default)]
    pub materials: Option<MaterialVariation>,
    #[serde(default)]
    pub lighting: Option<LightingVariation>,
    #[serde(default)]
    pub camera: Option<CameraJitter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectPlacement {
    /// `random_within_zone`: the scene's movable bodies are scattered over
    /// the top of the zone.
    pub strategy: PlacementStrategy,
    /// A body or collider of the scene whose top face is the zone.
    pub zone: String,
    /// How many movable bodies each frame shows (the rest are left out).
    pub count: Range<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStrategy {
    RandomWithinZone,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaterialVariation {
    #[serde(default)]
    pub vary_roughness: Option<Range<f64>>,
    #[serde(default)]
    pub vary_color_hue: Option<HueShift>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HueShift {
    pub max_shift_deg: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LightingVariation {
    /// Each light's intensity is scaled by a factor in this range.
    #[serde(default)]
    pub vary_intensity: Option<Range<f64>>,
    /// Each lamp (not the sky) takes a black body's colour at a
    /// temperature in this range, in kelvin.
    #[serde(default)]
    pub vary_color_temperature: Option<Range<f64>>,
    /// Lamps added at random above the scene.
    #[serde(default)]
    pub random_spot_lights: Option<SpotLights>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpotLights {
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraJitter {
    /// The eye moves up to this far, in any direction.
    #[serde(default)]
    pub jitter_position_cm: f64,
    /// The view turns up to this much, about a random axis.
    #[serde(default)]
    pub jitter_rotation_deg: f64,
}

/// The most frames one job may ask for.
pub const MAX_FRAMES: u64 = 10_000_000;

impl SynthSpec {
    /// Checks what serde cannot: ranges, sizes, names. Errors name the field.
    pub fn validate(&self) -> Result<(), RenderError> {
        let bad = |field: &str, message: String| Err(RenderError::invalid(field, message));
        if self.twin_id.trim().is_empty() {
            return bad("twin_id", "must name a twin".into());
        }
        let dataset_ok = !self.output_dataset.is_empty()
            && self.output_dataset.len() <= 128
            && self
                .output_dataset
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !self.output_dataset.starts_with('.');
        if !dataset_ok {
            return bad(
                "output_dataset",
                format!(
                    "`{}` must be 1–128 letters, digits, '-', '_' or '.', not starting with '.'",
                    self.output_dataset
                ),
            );
        }
        if self.cameras.is_empty() {
            return bad("cameras", "name at least one camera".into());
        }
        for (i, c) in self.cameras.iter().enumerate() {
            let [w, h] = c.resolution;
            if !(1..=4096).contains(&w) || !(1..=4096).contains(&h) {
                return bad(
                    &format!("cameras[{i}].resolution"),
                    format!("{w}×{h} is not between 1×1 and 4096×4096"),
                );
            }
            if let Some(f) = c.fov_deg
                && !(f.is_finite() && f > 0.0 && f < 180.0)
            {
                return bad(
                    &format!("cameras[{i}].fov_deg"),
                    format!("{f} is not between 0 and 180"),
                );
            }
        }
        if self.labels.is_empty() {
            return bad("labels", "name at least one label".into());
        }
        if !(1..=MAX_FRAMES).contains(&self.num_frames) {
            return bad(
                "num_frames",
                format!("{} is not between 1 and {MAX_FRAMES}", self.num_frames),
            );
        }
        if !(1..=10_000).contains(&self.frames_per_gpu) {
            return bad(
                "frames_per_gpu",
                format!("{} is not between 1 and 10000", self.frames_per_gpu),
            );
        }
        if !(1..=64).contains(&self.quality.samples_per_pixel) {
            return bad(
                "quality.samples_per_pixel",
                format!(
                    "{} is not between 1 and 64 (this renderer is not a path tracer; more rays only smooth edges)",
                    self.quality.samples_per_pixel
                ),
            );
        }
        if let Some(d) = &self.quality.denoiser
            && d != "none"
        {
            return bad(
                "quality.denoiser",
                format!(
                    "`{d}` is not available: this renderer's frames have no sampling noise to remove; use none"
                ),
            );
        }
        let r = &self.randomization;
        let range = |field: &str, v: &Range<f64>, lo: f64, hi: f64| {
            if v.min.is_finite()
                && v.max.is_finite()
                && lo <= v.min
                && v.min <= v.max
                && v.max <= hi
            {
                Ok(())
            } else {
                Err(RenderError::invalid(
                    field,
                    format!(
                        "needs {lo} ≤ min ≤ max ≤ {hi}, got min {} and max {}",
                        v.min, v.max
                    ),
                ))
            }
        };
        if let Some(p) = &r.object_placement
            && p.count.min > p.count.max
        {
            return bad(
                "randomization.object_placement.count",
                format!("min {} is above max {}", p.count.min, p.count.max),
            );
        }
        if let Some(m) = &r.materials {
            if let Some(v) = &m.vary_roughness {
                range("randomization.materials.vary_roughness", v, 0.0, 1.0)?;
            }
            if let Some(h) = &m.vary_color_hue
                && !(h.max_shift_deg.is_finite() && (0.0..=180.0).contains(&h.max_shift_deg))
            {
                return bad(
                    "randomization.materials.vary_color_hue.max_shift_deg",
                    format!("{} is not between 0 and 180", h.max_shift_deg),
                );
            }
        }
        if let Some(l) = &r.lighting {
            if let Some(v) = &l.vary_intensity {
                range("randomization.lighting.vary_intensity", v, 0.0, 1e6)?;
            }
            if let Some(v) = &l.vary_color_temperature {
                range(
                    "randomization.lighting.vary_color_temperature",
                    v,
                    1000.0,
                    40000.0,
                )?;
            }
            if let Some(s) = &l.random_spot_lights
                && s.count > 64
            {
                return bad(
                    "randomization.lighting.random_spot_lights.count",
                    format!("{} is more than 64", s.count),
                );
            }
        }
        if let Some(c) = &r.camera {
            for (field, v, hi) in [
                (
                    "randomization.camera.jitter_position_cm",
                    c.jitter_position_cm,
                    1e4,
                ),
                (
                    "randomization.camera.jitter_rotation_deg",
                    c.jitter_rotation_deg,
                    180.0,
                ),
            ] {
                if !(v.is_finite() && (0.0..=hi).contains(&v)) {
                    return bad(field, format!("{v} is not between 0 and {hi}"));
                }
            }
        }
        Ok(())
    }

    /// Whether the dataset carries `label`.
    pub fn wants(&self, label: Label) -> bool {
        self.labels.contains(&label)
    }
}

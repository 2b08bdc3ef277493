//! How a scene looks: each shape's surface and semantic class, and the
//! scene's lights, read from USD for rendering and labelling. Physics never
//! reads these, and they are outside the scene's fingerprint, so a scene
//! restyled keeps its checkpoints.

use serde::{Deserialize, Serialize};

use crate::scene::Pose;

/// Everything a renderer needs besides the shapes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SceneLook {
    /// One entry per collider, by collider path; a collider with no entry has
    /// [`Surface::default`] and no class.
    pub shapes: Vec<ShapeLook>,
    pub lights: Vec<Light>,
    /// What the reader met and could not draw (a texture, a shader other than
    /// `UsdPreviewSurface`), each naming its prim.
    pub notes: Vec<String>,
}

impl SceneLook {
    /// The look of the collider at `path`.
    pub fn shape(&self, path: &str) -> Option<&ShapeLook> {
        self.shapes.iter().find(|s| s.collider == path)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeLook {
    /// The collider's prim path.
    pub collider: String,
    pub surface: Surface,
    /// Its semantic class (USD `semantics:labels:class`, or Isaac's older
    /// `semantic:*:params:semanticData` of type `class`), inherited from the
    /// nearest labelled ancestor.
    pub class: Option<String>,
}

/// A `UsdPreviewSurface`'s constant inputs, linear RGB in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Surface {
    pub diffuse_color: [f64; 3],
    pub emissive_color: [f64; 3],
    pub roughness: f64,
    pub metallic: f64,
}

impl Default for Surface {
    /// `UsdPreviewSurface`'s fallbacks: 18% grey, roughness 0.5, dielectric.
    fn default() -> Self {
        Surface {
            diffuse_color: [0.18; 3],
            emissive_color: [0.0; 3],
            roughness: 0.5,
            metallic: 0.0,
        }
    }
}

/// A UsdLux light. `intensity` already includes `2^exposure`; the light's
/// radiance is `intensity · color`, as UsdLux defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Light {
    pub path: String,
    pub kind: LightKind,
    /// World pose; area and distant lights emit along their local -Z.
    pub pose: Pose,
    pub color: [f64; 3],
    pub intensity: f64,
}

/// (Externally tagged: the scene model travels as bincode, which cannot
/// read internally tagged enums.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LightKind {
    /// Parallel light, as from the sun; `angle_deg` is its angular diameter.
    Distant {
        angle_deg: f64,
    },
    Sphere {
        radius: f64,
    },
    Rect {
        width: f64,
        height: f64,
    },
    Disk {
        radius: f64,
    },
    /// Light from the whole sky, the same from every direction (a dome's
    /// texture is not read; see [`SceneLook::notes`]).
    Dome,
}

/// A black body's colour at 1,000–10,000 K in 500 K steps (Rec. 709
/// primaries), from John Walker's "Colour Rendering of Spectra"; the ends
/// repeat so that the spline needs no special cases.
const BLACKBODY: [[f64; 3]; 22] = [
    [1.0, 0.027490, 0.0],
    [1.0, 0.027490, 0.0],
    [1.0, 0.149664, 0.0],
    [1.0, 0.256644, 0.008095],
    [1.0, 0.372033, 0.067450],
    [1.0, 0.476725, 0.153601],
    [1.0, 0.570376, 0.259196],
    [1.0, 0.653480, 0.377155],
    [1.0, 0.726878, 0.501606],
    [1.0, 0.791543, 0.628050],
    [1.0, 0.848462, 0.753228],
    [1.0, 0.898581, 0.874905],
    [1.0, 0.942771, 0.991642],
    [0.906947, 0.890456, 1.0],
    [0.828247, 0.841838, 1.0],
    [0.765791, 0.801896, 1.0],
    [0.715255, 0.768579, 1.0],
    [0.673683, 0.740423, 1.0],
    [0.638992, 0.716359, 1.0],
    [0.609681, 0.695588, 1.0],
    [0.609681, 0.695588, 1.0],
    [0.609681, 0.695588, 1.0],
];

/// The linear RGB of a black body at `kelvin`, with the luminance of white:
/// UsdLux's definition of `colorTemperature` (a Catmull-Rom spline through
/// [`BLACKBODY`], clamped to 1,000–10,000 K), so that a light's colour is
/// what every USD renderer gives it.
pub fn blackbody_rgb(kelvin: f64) -> [f64; 3] {
    let segments = (BLACKBODY.len() - 4) as f64;
    let x = ((kelvin - 1000.0) / 9000.0).clamp(0.0, 1.0) * segments;
    let segment = (x.floor() as usize).min(BLACKBODY.len() - 4);
    let t = x - segment as f64;
    let k = &BLACKBODY[segment..segment + 4];
    let rgb = [0, 1, 2].map(|c| {
        let (p0, p1, p2, p3) = (k[0][c], k[1][c], k[2][c], k[3][c]);
        // Catmull-Rom through p1 (t = 0) and p2 (t = 1).
        let a = -0.5 * p0 + 1.5 * p1 - 1.5 * p2 + 0.5 * p3;
        let b = p0 - 2.5 * p1 + 2.0 * p2 - 0.5 * p3;
        let c1 = -0.5 * p0 + 0.5 * p2;
        ((a * t + b) * t + c1) * t + p1
    });
    let luma = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
    rgb.map(|c| (c / luma).max(0.0))
}

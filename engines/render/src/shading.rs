//! Light and surface: how much light reaches a point from each lamp, what
//! a `UsdPreviewSurface` sends back toward the camera, and the tone curve
//! from scene radiance to display colour.

use hanzo_twin_scene::geometry::{add, dot, norm, quat_rotate, scaled, sub};
use hanzo_twin_scene::look::{Light, LightKind, Surface};

/// Light arriving at a point from one lamp.
pub(crate) struct Incoming {
    /// Unit direction from the point toward the lamp.
    pub to_light: [f64; 3],
    /// How far the lamp is (infinite for distant lights); shadow rays stop there.
    pub distance: f64,
    /// Irradiance on a surface facing the lamp, linear RGB.
    pub irradiance: [f64; 3],
}

/// The direction a distant or area light shines: its local -Z.
fn emit_direction(light: &Light) -> [f64; 3] {
    quat_rotate(light.pose.rotation, [0.0, 0.0, -1.0])
}

/// Light from `light` at `point`, `None` for the dome (see [`dome_radiance`])
/// or when the point is behind an area light.
pub(crate) fn incoming(light: &Light, point: [f64; 3]) -> Option<Incoming> {
    let radiance = scaled(light.color, light.intensity);
    let local = |area: f64, one_sided: bool| {
        let to = sub(light.pose.translation, point);
        let d = norm(to).max(1e-6);
        let to_light = scaled(to, 1.0 / d);
        // An area light emits from its front face only, with Lambert's cosine.
        let facing = if one_sided {
            -dot(emit_direction(light), to_light)
        } else {
            1.0
        };
        (facing > 0.0).then(|| Incoming {
            to_light,
            distance: d,
            irradiance: scaled(radiance, area * facing / (d * d)),
        })
    };
    match light.kind {
        LightKind::Distant { .. } => Some(Incoming {
            to_light: scaled(emit_direction(light), -1.0),
            distance: f64::INFINITY,
            irradiance: radiance,
        }),
        // A sphere of radiance L seen from d subtends π r²/d² (far from it).
        LightKind::Sphere { radius } => local(std::f64::consts::PI * radius * radius, false),
        LightKind::Rect { width, height } => local(width * height, true),
        LightKind::Disk { radius } => local(std::f64::consts::PI * radius * radius, true),
        LightKind::Dome => None,
    }
}

/// The even radiance of the scene's domes.
pub(crate) fn dome_radiance(lights: &[Light]) -> [f64; 3] {
    lights
        .iter()
        .filter(|l| matches!(l.kind, LightKind::Dome))
        .fold([0.0; 3], |acc, l| add(acc, scaled(l.color, l.intensity)))
}

/// The lights drawn when a scene has none: a sun high in the sky and a
/// pale blue sky dome, so that any scene can be seen.
pub(crate) fn default_lights(up: [f64; 3]) -> Vec<Light> {
    use hanzo_twin_scene::geometry::quat_from_x_to;
    use hanzo_twin_scene::scene::Pose;
    // The sun shines down and slightly sideways; a light's local -Z is the
    // direction it shines, so turn -Z (via X) onto that direction.
    let side = if up[2].abs() > 0.5 {
        [0.45, 0.3, 0.0]
    } else {
        [0.45, 0.0, 0.3]
    };
    let shine = scaled(add(scaled(up, 0.85), side), -1.0);
    let shine = scaled(shine, 1.0 / norm(shine));
    // quat_from_x_to turns +X onto `shine`; then turn -Z onto +X first.
    let z_to_x = hanzo_twin_scene::geometry::quat_from_axis_angle(
        [0.0, 1.0, 0.0],
        -std::f64::consts::FRAC_PI_2,
    );
    let rotation = hanzo_twin_scene::geometry::quat_mul(quat_from_x_to(shine), z_to_x);
    vec![
        Light {
            path: "/default/sun".to_string(),
            kind: LightKind::Distant { angle_deg: 0.53 },
            pose: Pose {
                translation: [0.0; 3],
                rotation,
            },
            color: [1.0, 0.98, 0.94],
            intensity: 3.0,
        },
        Light {
            path: "/default/sky".to_string(),
            kind: LightKind::Dome,
            pose: Pose::IDENTITY,
            color: [0.75, 0.85, 1.0],
            intensity: 0.35,
        },
    ]
}

/// The scale from scene radiance to the tone curve's input, fixed by the
/// scene's own lights (not per frame, so a randomized brighter lamp gives a
/// brighter image): a white surface facing all the lights at `centre`
/// maps to about 0.8.
pub(crate) fn exposure(lights: &[Light], centre: [f64; 3]) -> f64 {
    let luminance = |c: [f64; 3]| 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    let mut reference = std::f64::consts::PI * luminance(dome_radiance(lights));
    for light in lights {
        if let Some(i) = incoming(light, centre).or_else(|| {
            // Behind an area light: count it as if faced.
            let turned = Light {
                pose: hanzo_twin_scene::scene::Pose {
                    rotation: hanzo_twin_scene::geometry::quat_mul(
                        light.pose.rotation,
                        [1.0, 0.0, 0.0, 0.0],
                    ),
                    ..light.pose
                },
                ..light.clone()
            };
            incoming(&turned, centre)
        }) {
            reference += luminance(i.irradiance);
        }
    }
    if reference > 0.0 && reference.is_finite() {
        std::f64::consts::PI / reference
    } else {
        1.0
    }
}

/// The radiance leaving a surface toward `to_eye`, from one light's
/// irradiance along `to_light`: Lambert diffuse plus a normalized
/// Blinn-Phong lobe, with `UsdPreviewSurface`'s metallic workflow
/// (4% dielectric reflectance, tinted by the base colour for metals).
pub(crate) fn reflect(
    surface: &Surface,
    normal: [f64; 3],
    to_eye: [f64; 3],
    to_light: [f64; 3],
    irradiance: [f64; 3],
) -> [f64; 3] {
    let n_l = dot(normal, to_light);
    if n_l <= 0.0 {
        return [0.0; 3];
    }
    let base = surface.diffuse_color;
    let m = surface.metallic;
    let diffuse = scaled(base, (1.0 - m) / std::f64::consts::PI);
    let half = add(to_eye, to_light);
    let half = scaled(half, 1.0 / norm(half).max(1e-12));
    let alpha = (surface.roughness * surface.roughness).max(1e-3);
    let shininess = (2.0 / (alpha * alpha) - 2.0).clamp(1.0, 1e4);
    let lobe = (shininess + 8.0) / (8.0 * std::f64::consts::PI)
        * dot(normal, half).max(0.0).powf(shininess);
    let f0 = [0, 1, 2].map(|i| 0.04 * (1.0 - m) + base[i] * m);
    [0, 1, 2].map(|i| (diffuse[i] + f0[i] * lobe) * irradiance[i] * n_l)
}

/// Light from an even sky: Lambert under radiance `l` returns albedo · l.
pub(crate) fn ambient(surface: &Surface, l: [f64; 3]) -> [f64; 3] {
    let m = surface.metallic;
    [0, 1, 2].map(|i| {
        let f0 = 0.04 * (1.0 - m) + surface.diffuse_color[i] * m;
        (surface.diffuse_color[i] * (1.0 - m) + f0) * l[i]
    })
}

/// Scene radiance (already exposed) to an 8-bit sRGB value: the ACES filmic
/// curve (Narkowicz's fit), then the sRGB transfer function.
pub(crate) fn display(x: f64) -> u8 {
    let x = x.max(0.0);
    let mapped = (x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14);
    let c = mapped.clamp(0.0, 1.0);
    let srgb = if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    };
    (srgb * 255.0).round() as u8
}

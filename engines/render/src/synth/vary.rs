//! One frame's variation: where the movable bodies lie, how surfaces and
//! lights differ, and where each camera stands, drawn from the seed's
//! random stream numbered by the frame.

use std::collections::{BTreeMap, BTreeSet};

use hanzo_twin_scene::SceneModel;
use hanzo_twin_scene::geometry::{
    add, cross, dot, norm, quat_from_axis_angle, quat_mul, quat_rotate, scaled, sub,
};
use hanzo_twin_scene::look::{Light, LightKind, blackbody_rgb};
use hanzo_twin_scene::scene::{BodyKind, Pose};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SynthSpec;
use crate::{CameraView, RenderError, RenderOptions, RenderScene};

/// What one frame draws.
pub struct FrameVariation {
    pub poses: Vec<Pose>,
    pub options: RenderOptions,
    /// One view per camera of the spec, in its order.
    pub views: Vec<CameraView>,
}

/// Draws frames' variations for one spec and scene.
pub struct Varier<'a> {
    spec: &'a SynthSpec,
    scene: &'a SceneModel,
    render: &'a RenderScene,
    base_poses: Vec<Pose>,
    base_views: Vec<CameraView>,
    /// Bodies the placement may move (dynamic and kinematic ones).
    movable: Vec<usize>,
    /// The zone's world box.
    zone: Option<([f64; 3], [f64; 3])>,
    up: usize,
}

/// The index of the scene's up axis.
fn up_index(scene: &SceneModel) -> usize {
    let u = scene.up_axis.unit();
    (0..3).find(|&i| u[i] != 0.0).unwrap_or(2)
}

impl<'a> Varier<'a> {
    /// Checks the spec against the scene (its cameras, its zone, enough
    /// movable bodies) and prepares the base views; `base_poses` are the
    /// bodies' poses every frame starts from.
    pub fn new(
        spec: &'a SynthSpec,
        scene: &'a SceneModel,
        render: &'a RenderScene,
        base_poses: Vec<Pose>,
    ) -> Result<Varier<'a>, RenderError> {
        spec.validate()?;
        let mut base_views = Vec::new();
        for (i, c) in spec.cameras.iter().enumerate() {
            let view =
                CameraView::from_scene(scene, &c.path, c.resolution[0], c.resolution[1], c.fov_deg)
                    .map_err(|e| match e {
                        RenderError::UnknownCamera(path) => RenderError::invalid(
                            &format!("cameras[{i}].path"),
                            format!("the scene has no camera {path}"),
                        ),
                        other => other,
                    })?;
            base_views.push(view);
        }
        let movable: Vec<usize> = scene
            .bodies
            .iter()
            .enumerate()
            .filter(|(_, b)| b.kind != BodyKind::Static)
            .map(|(i, _)| i)
            .collect();
        let mut zone = None;
        if let Some(p) = &spec.randomization.object_placement {
            let field = "randomization.object_placement.zone";
            let body = scene
                .bodies
                .iter()
                .position(|b| b.path == p.zone || b.colliders.iter().any(|c| c.path == p.zone))
                .ok_or_else(|| {
                    RenderError::invalid(
                        field,
                        format!("the scene has no body or collider {}", p.zone),
                    )
                })?;
            zone = Some(render.bounds(body, &base_poses[body]).ok_or_else(|| {
                RenderError::invalid(
                    field,
                    format!("{} has no finite shape to place objects on", p.zone),
                )
            })?);
            let available = movable.iter().filter(|&&b| b != body).count();
            if p.count.min as usize > available {
                return Err(RenderError::invalid(
                    "randomization.object_placement.count",
                    format!(
                        "min {} is more than the scene's {available} movable bodies",
                        p.count.min
                    ),
                ));
            }
        }
        Ok(Varier {
            spec,
            scene,
            render,
            base_poses,
            base_views,
            movable,
            zone,
            up: up_index(scene),
        })
    }

    /// The variation of frame `frame`: the same for the same spec, scene and
    /// frame, whatever was drawn before.
    pub fn frame(&self, frame: u64) -> FrameVariation {
        let mut rng = ChaCha8Rng::seed_from_u64(self.spec.seed);
        rng.set_stream(frame);
        let r = &self.spec.randomization;
        let mut poses = self.base_poses.clone();
        let mut hidden = BTreeSet::new();
        if let (Some(p), Some((lo, hi))) = (&r.object_placement, self.zone) {
            let zone_body = self
                .scene
                .bodies
                .iter()
                .position(|b| b.path == p.zone || b.colliders.iter().any(|c| c.path == p.zone));
            let mut candidates: Vec<usize> = self
                .movable
                .iter()
                .copied()
                .filter(|&b| Some(b) != zone_body)
                .collect();
            let max = (p.count.max as usize).min(candidates.len());
            let min = (p.count.min as usize).min(max);
            let shown = rng.random_range(min..=max);
            // A partial Fisher-Yates shuffle: the first `shown` are placed.
            for i in 0..shown {
                let j = rng.random_range(i..candidates.len());
                candidates.swap(i, j);
            }
            let (a, b) = ((self.up + 1) % 3, (self.up + 2) % 3);
            let up_axis = self.scene.up_axis.unit();
            for (k, &body) in candidates.iter().enumerate() {
                if k >= shown {
                    hidden.insert(body);
                    continue;
                }
                let yaw = rng.random_range(0.0..std::f64::consts::TAU);
                let rotation = quat_mul(
                    quat_from_axis_angle(up_axis, yaw),
                    self.base_poses[body].rotation,
                );
                let at_origin = Pose {
                    translation: [0.0; 3],
                    rotation,
                };
                let Some((blo, bhi)) = self.render.bounds(body, &at_origin) else {
                    continue;
                };
                let mut t = [0.0; 3];
                for axis in [a, b] {
                    let (from, to) = (lo[axis] - blo[axis], hi[axis] - bhi[axis]);
                    let u: f64 = rng.random();
                    t[axis] = if to > from {
                        from + u * (to - from)
                    } else {
                        (lo[axis] + hi[axis]) / 2.0
                    };
                }
                // Resting on the zone's top, a millimetre above it.
                t[self.up] = hi[self.up] - blo[self.up] + 1e-3;
                poses[body] = Pose {
                    translation: t,
                    rotation,
                };
            }
        }
        let mut surfaces = BTreeMap::new();
        if let Some(m) = &r.materials {
            for (path, base) in self.render.surfaces() {
                let mut s = base;
                if let Some(v) = &m.vary_roughness {
                    s.roughness = v.min + rng.random::<f64>() * (v.max - v.min);
                }
                if let Some(h) = &m.vary_color_hue {
                    let shift = (rng.random::<f64>() * 2.0 - 1.0) * h.max_shift_deg;
                    s.diffuse_color = shift_hue(s.diffuse_color, shift);
                }
                surfaces.insert(path.to_string(), s);
            }
        }
        let mut lights: Vec<Light> = self.render.lights().to_vec();
        if let Some(l) = &r.lighting {
            for light in &mut lights {
                if let Some(v) = &l.vary_intensity {
                    light.intensity *= v.min + rng.random::<f64>() * (v.max - v.min);
                }
                if let Some(v) = &l.vary_color_temperature
                    && !matches!(light.kind, LightKind::Dome)
                {
                    light.color = blackbody_rgb(v.min + rng.random::<f64>() * (v.max - v.min));
                }
            }
            if let Some(s) = &l.random_spot_lights {
                let centre = self.centre(&poses, &hidden);
                let up = self.scene.up_axis.unit();
                for k in 0..s.count {
                    let height = 2.0 + 2.0 * rng.random::<f64>();
                    let mut position = add(centre, scaled(up, height));
                    for axis in [(self.up + 1) % 3, (self.up + 2) % 3] {
                        position[axis] += rng.random_range(-2.0..2.0);
                    }
                    let d = norm(sub(position, centre)).max(0.1);
                    let radius: f64 = 0.1;
                    // Lights the scene's middle about as a unit distant light would.
                    let intensity = d * d / (std::f64::consts::PI * radius * radius);
                    lights.push(Light {
                        path: format!("/Randomized/Lamp{k}"),
                        kind: LightKind::Sphere { radius },
                        pose: Pose::from_translation(position),
                        color: [1.0; 3],
                        intensity,
                    });
                }
            }
        }
        let views = self
            .base_views
            .iter()
            .map(|view| match &r.camera {
                Some(c) => jitter(
                    view,
                    c.jitter_position_cm / 100.0,
                    c.jitter_rotation_deg,
                    &mut rng,
                ),
                None => *view,
            })
            .collect();
        FrameVariation {
            poses,
            options: RenderOptions {
                rgb: true,
                samples_per_pixel: self.spec.quality.samples_per_pixel,
                lights: r.lighting.as_ref().map(|_| lights),
                surfaces,
                hidden,
            },
            views,
        }
    }

    /// The middle of the shown movable bodies (of all bodies when none moves).
    fn centre(&self, poses: &[Pose], hidden: &BTreeSet<usize>) -> [f64; 3] {
        let shown: Vec<usize> = self
            .movable
            .iter()
            .copied()
            .filter(|b| !hidden.contains(b))
            .collect();
        let picked: Vec<usize> = if shown.is_empty() {
            (0..poses.len()).collect()
        } else {
            shown
        };
        if picked.is_empty() {
            return [0.0; 3];
        }
        scaled(
            picked
                .iter()
                .fold([0.0; 3], |acc, &b| add(acc, poses[b].translation)),
            1.0 / picked.len() as f64,
        )
    }
}

/// The view moved up to `offset` metres and turned up to `degrees`.
fn jitter(view: &CameraView, offset: f64, degrees: f64, rng: &mut ChaCha8Rng) -> CameraView {
    // A uniform point in the unit ball, by rejection.
    let ball = loop {
        let p: [f64; 3] = [0, 1, 2].map(|_| rng.random_range(-1.0..=1.0));
        if dot(p, p) <= 1.0 {
            break p;
        }
    };
    let axis = loop {
        let p: [f64; 3] = [0, 1, 2].map(|_| rng.random_range(-1.0..=1.0));
        let n = norm(p);
        if n > 1e-3 && n <= 1.0 {
            break scaled(p, 1.0 / n);
        }
    };
    let angle = rng.random_range(-1.0..=1.0) * degrees.to_radians();
    let q = quat_from_axis_angle(axis, angle);
    let eye = add(view.eye, scaled(ball, offset));
    let forward = quat_rotate(q, view.forward);
    let up = quat_rotate(q, view.up);
    // Turning keeps forward and up apart, so the jittered view is valid.
    CameraView::look_at(
        eye,
        add(eye, forward),
        cross(cross(forward, up), forward),
        view.fov_deg,
        view.width,
        view.height,
    )
    .map(|v| CameraView {
        near: view.near,
        far: view.far,
        ..v
    })
    .unwrap_or(*view)
}

/// `rgb` with its hue turned by `degrees` (brightness and saturation kept).
fn shift_hue(rgb: [f64; 3], degrees: f64) -> [f64; 3] {
    let max = rgb.iter().copied().fold(f64::MIN, f64::max);
    let min = rgb.iter().copied().fold(f64::MAX, f64::min);
    let chroma = max - min;
    if chroma <= 1e-12 {
        return rgb;
    }
    let h = if max == rgb[0] {
        ((rgb[1] - rgb[2]) / chroma).rem_euclid(6.0)
    } else if max == rgb[1] {
        (rgb[2] - rgb[0]) / chroma + 2.0
    } else {
        (rgb[0] - rgb[1]) / chroma + 4.0
    };
    let h = (h * 60.0 + degrees).rem_euclid(360.0) / 60.0;
    let x = chroma * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    [r + min, g + min, b + min]
}

//! The scene as the renderer holds it, and the per-pixel tracing.

use std::collections::BTreeMap;

use hanzo_twin_scene::SceneModel;
use hanzo_twin_scene::geometry::{add, dot, normalize_quat, quat_mul, quat_rotate, scaled};
use hanzo_twin_scene::look::{Light, Surface};
use hanzo_twin_scene::scene::{Axis, Pose, Shape};
use parry3d::bounding_volume::Aabb;
use parry3d::math::{Pose as ParryPose, Real, Rot3, Vec3};
use parry3d::partitioning::{Bvh, BvhBuildStrategy, TraversalAction};
use parry3d::query::Ray;
use parry3d::shape::SharedShape;
use rayon::prelude::*;

use crate::RenderError;
use crate::camera::CameraView;
use crate::frame::{Frame, InstanceLabel, InstanceStats};
use crate::shading;

/// What to draw besides the labels.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Shade colour (the labels are always made).
    pub rgb: bool,
    /// Rays a pixel for colour, spread over the pixel (1–64); labels take one.
    pub samples_per_pixel: u32,
    /// Lights to use instead of the scene's (a randomized frame's).
    pub lights: Option<Vec<Light>>,
    /// Surfaces to use instead of the scene's, by collider path.
    pub surfaces: BTreeMap<String, Surface>,
    /// Bodies (by index) left out of the frame.
    pub hidden: std::collections::BTreeSet<usize>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            rgb: true,
            samples_per_pixel: 1,
            lights: None,
            surfaces: BTreeMap::new(),
            hidden: Default::default(),
        }
    }
}

enum Geometry {
    /// A finite shape, turned by `turn` in its collider frame (parry's
    /// capsules and cylinders run along Y).
    Solid { shape: SharedShape, turn: [f64; 4] },
    /// An infinite plane through the collider's origin.
    Plane { normal: [f64; 3] },
}

struct DrawnShape {
    path: String,
    body: usize,
    local: Pose,
    geometry: Geometry,
    surface: Surface,
    /// 0: no class.
    class: u16,
}

/// A scene ready to draw at any poses.
pub struct RenderScene {
    shapes: Vec<DrawnShape>,
    bodies: Vec<String>,
    /// The class id of each body (its first classified collider's), 0: none.
    body_classes: Vec<u16>,
    classes: Vec<String>,
    lights: Vec<Light>,
    exposure: f64,
}

/// One frame's shapes at their world poses.
struct Placed<'a> {
    scene: &'a RenderScene,
    /// World pose of each shape (parry's, single precision).
    poses: Vec<ParryPose>,
    /// Solid shapes in a BVH; leaf `i` is shape `solids[i]`.
    bvh: Bvh,
    solids: Vec<usize>,
    /// Planes: shape index, a point on it, its unit normal.
    planes: Vec<(usize, [f64; 3], [f64; 3])>,
    surfaces: Vec<Surface>,
}

struct Hit {
    shape: usize,
    toi: f64,
    normal: [f64; 3],
}

const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// The rotation taking +Y onto `axis`.
fn y_to(axis: Axis) -> [f64; 4] {
    match axis {
        Axis::X => [0.0, 0.0, -SQRT_HALF, SQRT_HALF],
        Axis::Y => [0.0, 0.0, 0.0, 1.0],
        Axis::Z => [SQRT_HALF, 0.0, 0.0, SQRT_HALF],
    }
}

fn v3(a: [f64; 3]) -> Vec3 {
    Vec3::new(a[0] as Real, a[1] as Real, a[2] as Real)
}

fn f64s(v: Vec3) -> [f64; 3] {
    [f64::from(v.x), f64::from(v.y), f64::from(v.z)]
}

fn compose(a: &Pose, b: &Pose) -> Pose {
    Pose {
        translation: add(a.translation, quat_rotate(a.rotation, b.translation)),
        rotation: quat_mul(a.rotation, b.rotation),
    }
}

fn drawn_geometry(path: &str, shape: &Shape) -> Result<Geometry, RenderError> {
    let bad = |message: &str| RenderError::Shape {
        path: path.to_string(),
        message: message.to_string(),
    };
    let points = |vs: &[[f64; 3]]| -> Result<Vec<Vec3>, RenderError> {
        if vs.iter().flatten().all(|x| x.is_finite()) {
            Ok(vs.iter().map(|v| v3(*v)).collect())
        } else {
            Err(bad("its points must be finite"))
        }
    };
    let solid = |shape: SharedShape| Geometry::Solid {
        shape,
        turn: [0.0, 0.0, 0.0, 1.0],
    };
    let positive = |v: f64| -> Result<Real, RenderError> {
        if v.is_finite() && v > 0.0 {
            Ok(v as Real)
        } else {
            Err(bad("its sizes must be positive"))
        }
    };
    Ok(match shape {
        Shape::Cuboid { half_extents: h } => solid(SharedShape::cuboid(
            positive(h[0])?,
            positive(h[1])?,
            positive(h[2])?,
        )),
        Shape::Sphere { radius } => solid(SharedShape::ball(positive(*radius)?)),
        Shape::Capsule {
            radius,
            half_height,
            axis,
        } => Geometry::Solid {
            shape: SharedShape::capsule_y(half_height.max(0.0) as Real, positive(*radius)?),
            turn: y_to(*axis),
        },
        Shape::Cylinder {
            radius,
            half_height,
            axis,
        } => Geometry::Solid {
            shape: SharedShape::cylinder(positive(*half_height)?, positive(*radius)?),
            turn: y_to(*axis),
        },
        Shape::Plane { axis } => Geometry::Plane {
            normal: axis.unit(),
        },
        // Drawn as authored, even where an engine simulates their hull.
        Shape::TriMesh {
            vertices,
            triangles,
        }
        | Shape::ConvexDecomposition {
            vertices,
            triangles,
        } => solid(
            SharedShape::trimesh(points(vertices)?, triangles.clone())
                .map_err(|e| bad(&format!("not a drawable triangle mesh: {e}")))?,
        ),
        Shape::ConvexHull { points: p } => solid(
            SharedShape::convex_hull(&points(p)?)
                .ok_or_else(|| bad("its points are degenerate and have no convex hull"))?,
        ),
    })
}

impl RenderScene {
    /// Prepares `scene` for drawing: its shapes, surfaces, classes and lights.
    pub fn new(scene: &SceneModel) -> Result<RenderScene, RenderError> {
        if scene.native.is_some() {
            return Err(RenderError::invalid(
                "scene",
                "an MJCF scene is MuJoCo's own and has no engine-neutral shapes to draw; render a USD or URDF scene",
            ));
        }
        let mut classes: Vec<String> = scene
            .look
            .shapes
            .iter()
            .filter_map(|s| s.class.clone())
            .collect();
        classes.sort();
        classes.dedup();
        if classes.len() >= usize::from(u16::MAX) {
            return Err(RenderError::invalid(
                "scene",
                "has more than 65,534 semantic classes",
            ));
        }
        let class_id = |name: &Option<String>| -> u16 {
            name.as_ref()
                .and_then(|n| classes.binary_search(n).ok())
                .map_or(0, |i| i as u16 + 1)
        };
        let mut shapes = Vec::new();
        let mut body_classes = vec![0u16; scene.bodies.len()];
        for (b, body) in scene.bodies.iter().enumerate() {
            for collider in &body.colliders {
                let look = scene.look.shape(&collider.path);
                let class = class_id(&look.and_then(|l| l.class.clone()));
                if body_classes[b] == 0 {
                    body_classes[b] = class;
                }
                shapes.push(DrawnShape {
                    path: collider.path.clone(),
                    body: b,
                    local: collider.local_pose,
                    geometry: drawn_geometry(&collider.path, &collider.shape)?,
                    surface: look.map(|l| l.surface).unwrap_or_default(),
                    class,
                });
            }
        }
        let lights = if scene.look.lights.is_empty() {
            shading::default_lights(scene.up_axis.unit())
        } else {
            scene.look.lights.clone()
        };
        let moving: Vec<[f64; 3]> = scene
            .bodies
            .iter()
            .filter(|b| {
                b.colliders
                    .iter()
                    .all(|c| !matches!(c.shape, Shape::Plane { .. }))
            })
            .map(|b| b.pose.translation)
            .collect();
        let centre = if moving.is_empty() {
            [0.0; 3]
        } else {
            scaled(
                moving.iter().fold([0.0; 3], |acc, p| add(acc, *p)),
                1.0 / moving.len() as f64,
            )
        };
        let exposure = shading::exposure(&lights, centre);
        Ok(RenderScene {
            shapes,
            bodies: scene.bodies.iter().map(|b| b.path.clone()).collect(),
            body_classes,
            classes,
            lights,
            exposure,
        })
    }

    /// The body paths, in the order `render` takes their poses.
    pub fn bodies(&self) -> &[String] {
        &self.bodies
    }

    /// The semantic classes; class id `i + 1` is `classes()[i]`, 0 is none.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The lights a frame is lit by unless its options give others.
    pub fn lights(&self) -> &[Light] {
        &self.lights
    }

    /// Each collider's path and the surface it is drawn with.
    pub fn surfaces(&self) -> impl Iterator<Item = (&str, Surface)> {
        self.shapes.iter().map(|s| (s.path.as_str(), s.surface))
    }

    /// The world box `(min, max)` around the finite shapes of body `body`
    /// at `pose` (planes have none); `None` when it has none.
    pub fn bounds(&self, body: usize, pose: &Pose) -> Option<([f64; 3], [f64; 3])> {
        let rotation = normalize_quat(pose.rotation)?;
        let pose = Pose {
            translation: pose.translation,
            rotation,
        };
        let mut out: Option<([f64; 3], [f64; 3])> = None;
        for shape in self.shapes.iter().filter(|s| s.body == body) {
            let Geometry::Solid { shape: s, turn } = &shape.geometry else {
                continue;
            };
            let at = compose(&pose, &shape.local);
            let q = quat_mul(at.rotation, *turn);
            let aabb = s.compute_aabb(&ParryPose::from_parts(
                v3(at.translation),
                Rot3::from_xyzw(q[0] as Real, q[1] as Real, q[2] as Real, q[3] as Real).normalize(),
            ));
            let (lo, hi) = (f64s(aabb.mins), f64s(aabb.maxs));
            out = Some(match out {
                None => (lo, hi),
                Some((a, b)) => (
                    [0, 1, 2].map(|i| a[i].min(lo[i])),
                    [0, 1, 2].map(|i| b[i].max(hi[i])),
                ),
            });
        }
        out
    }

    /// A camera that frames `focus` (body indices; every body when empty)
    /// at `poses`: from the front and a little above (`up` is the scene's
    /// up), far enough that their bounding sphere fits the view. For a
    /// scene with no camera of its own.
    pub fn overview(
        &self,
        poses: &[Pose],
        focus: &[usize],
        up: [f64; 3],
        width: u32,
        height: u32,
    ) -> Result<CameraView, RenderError> {
        const FOV_DEG: f64 = 45.0;
        let all: Vec<usize>;
        let focus = if focus.is_empty() {
            all = (0..self.bodies.len()).collect();
            &all
        } else {
            focus
        };
        let mut bounds: Option<([f64; 3], [f64; 3])> = None;
        for &body in focus {
            let Some((lo, hi)) = poses.get(body).and_then(|p| self.bounds(body, p)) else {
                continue;
            };
            bounds = Some(match bounds {
                None => (lo, hi),
                Some((a, b)) => (
                    [0, 1, 2].map(|i| a[i].min(lo[i])),
                    [0, 1, 2].map(|i| b[i].max(hi[i])),
                ),
            });
        }
        let (lo, hi) = bounds.ok_or_else(|| {
            RenderError::invalid(
                "camera",
                "the scene has no camera and no finite shape to frame",
            )
        })?;
        let center = [0, 1, 2].map(|i| (lo[i] + hi[i]) / 2.0);
        let radius = ([0, 1, 2].map(|i| (hi[i] - lo[i]) / 2.0))
            .iter()
            .map(|d| d * d)
            .sum::<f64>()
            .sqrt()
            .max(0.1);
        // The front: along the horizontal axis after the up axis (−Y for
        // Z up, +Z for Y up), raised by a third.
        let front = match up
            .iter()
            .map(|v| v.abs())
            .enumerate()
            .fold((0, 0.0), |m, (i, v)| if v > m.1 { (i, v) } else { m })
        {
            (2, _) => [0.0, -1.0, 0.0],
            (1, _) => [0.0, 0.0, 1.0],
            _ => [0.0, 1.0, 0.0],
        };
        let direction = [0, 1, 2].map(|i| front[i] + up[i] / 3.0);
        let length = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
        let aspect = f64::from(width.max(1)) / f64::from(height.max(1));
        let half = (FOV_DEG.to_radians() / 2.0).tan() * aspect.min(1.0);
        let distance = radius * (1.0 + half * half).sqrt() / half * 1.05;
        let eye = [0, 1, 2].map(|i| center[i] + direction[i] / length * distance);
        CameraView::look_at(eye, center, up, FOV_DEG, width, height)
    }

    /// Draws the bodies at `poses` (one per body, in [`Self::bodies`]'s
    /// order) as `view` sees them.
    pub fn render(
        &self,
        poses: &[Pose],
        view: &CameraView,
        options: &RenderOptions,
    ) -> Result<Frame, RenderError> {
        if poses.len() != self.bodies.len() {
            return Err(RenderError::invalid(
                "poses",
                format!(
                    "expected {} body poses, got {}",
                    self.bodies.len(),
                    poses.len()
                ),
            ));
        }
        if !(1..=64).contains(&options.samples_per_pixel) {
            return Err(RenderError::invalid(
                "samples_per_pixel",
                format!(
                    "must be between 1 and 64, got {}",
                    options.samples_per_pixel
                ),
            ));
        }
        for (path, surface) in &options.surfaces {
            let valid = surface
                .diffuse_color
                .iter()
                .chain(&surface.emissive_color)
                .all(|c| c.is_finite() && *c >= 0.0)
                && (0.0..=1.0).contains(&surface.roughness)
                && (0.0..=1.0).contains(&surface.metallic);
            if !valid {
                return Err(RenderError::invalid(
                    &format!("surfaces.{path}"),
                    "colours must be non-negative; roughness and metallic between 0 and 1",
                ));
            }
        }
        let placed = self.place(poses, options)?;
        let lights = options.lights.as_deref().unwrap_or(&self.lights);
        let dome = shading::dome_radiance(lights);
        let rows: Vec<Row> = (0..view.height)
            .into_par_iter()
            .map(|row| placed.row(view, row, options, lights, dome))
            .collect();
        Ok(self.assemble(view, rows, options.rgb))
    }

    fn place(&self, poses: &[Pose], options: &RenderOptions) -> Result<Placed<'_>, RenderError> {
        let mut world = Vec::with_capacity(self.shapes.len());
        let mut solids = Vec::new();
        let mut aabbs: Vec<Aabb> = Vec::new();
        let mut planes = Vec::new();
        for (i, shape) in self.shapes.iter().enumerate() {
            if options.hidden.contains(&shape.body) {
                world.push(ParryPose::IDENTITY);
                continue;
            }
            let body = &poses[shape.body];
            let rotation = normalize_quat(body.rotation)
                .filter(|_| body.translation.iter().all(|x| x.is_finite()));
            let Some(rotation) = rotation else {
                return Err(RenderError::invalid(
                    &format!("poses[{}]", shape.body),
                    format!("the pose of {} is not finite", self.bodies[shape.body]),
                ));
            };
            let at = compose(
                &Pose {
                    translation: body.translation,
                    rotation,
                },
                &shape.local,
            );
            let parry_pose = match &shape.geometry {
                Geometry::Solid { shape: s, turn } => {
                    let q = quat_mul(at.rotation, *turn);
                    let pose = ParryPose::from_parts(
                        v3(at.translation),
                        Rot3::from_xyzw(q[0] as Real, q[1] as Real, q[2] as Real, q[3] as Real)
                            .normalize(),
                    );
                    solids.push(i);
                    aabbs.push(s.compute_aabb(&pose));
                    pose
                }
                Geometry::Plane { normal } => {
                    planes.push((i, at.translation, quat_rotate(at.rotation, *normal)));
                    ParryPose::IDENTITY
                }
            };
            world.push(parry_pose);
        }
        let bvh = Bvh::from_leaves(BvhBuildStrategy::Binned, &aabbs);
        let surfaces = self
            .shapes
            .iter()
            .map(|s| options.surfaces.get(&s.path).copied().unwrap_or(s.surface))
            .collect();
        Ok(Placed {
            scene: self,
            poses: world,
            bvh,
            solids,
            planes,
            surfaces,
        })
    }

    fn assemble(&self, view: &CameraView, rows: Vec<Row>, rgb: bool) -> Frame {
        let n = view.pixels();
        let mut frame = Frame {
            width: view.width,
            height: view.height,
            intrinsics: view.intrinsics(),
            rgb: rgb.then(|| Vec::with_capacity(n * 3)),
            depth: Vec::with_capacity(n),
            normal: Vec::with_capacity(n),
            instance: Vec::with_capacity(n),
            semantic: Vec::with_capacity(n),
            instances: Vec::new(),
            classes: self.classes.clone(),
        };
        let mut stats: BTreeMap<u32, InstanceStats> = BTreeMap::new();
        for row in rows {
            if let Some(rgb) = frame.rgb.as_mut() {
                rgb.extend_from_slice(&row.rgb);
            }
            frame.depth.extend_from_slice(&row.depth);
            frame.normal.extend_from_slice(&row.normal);
            frame.instance.extend_from_slice(&row.instance);
            frame.semantic.extend_from_slice(&row.semantic);
            for (id, s) in row.stats {
                stats.entry(id).or_default().merge(&s);
            }
        }
        frame.instances = stats
            .into_iter()
            .map(|(id, s)| {
                let body = id as usize - 1;
                let class_id = self.body_classes[body];
                InstanceLabel {
                    id,
                    path: self.bodies[body].clone(),
                    class: (class_id > 0).then(|| self.classes[usize::from(class_id) - 1].clone()),
                    class_id,
                    visible_pixels: s.visible,
                    projected_pixels: s.projected,
                    visible_fraction: if s.projected == 0 {
                        0.0
                    } else {
                        s.visible as f64 / s.projected as f64
                    },
                    bbox_tight: s.tight,
                    bbox_loose: s.loose,
                }
            })
            .collect();
        frame
    }
}

/// One image row's pixels and label tallies.
struct Row {
    rgb: Vec<u8>,
    depth: Vec<f32>,
    normal: Vec<[f32; 3]>,
    instance: Vec<u32>,
    semantic: Vec<u16>,
    stats: BTreeMap<u32, InstanceStats>,
}

/// Sub-pixel offsets for colour samples: the R2 low-discrepancy sequence
/// (Roberts), fixed so that frames are reproducible.
fn sample_offset(k: u32) -> (f64, f64) {
    if k == 0 {
        return (0.5, 0.5);
    }
    const G: f64 = 1.324_717_957_244_746;
    let k = f64::from(k);
    ((0.5 + k / G).fract(), (0.5 + k / (G * G)).fract())
}

impl Placed<'_> {
    fn row(
        &self,
        view: &CameraView,
        row: u32,
        options: &RenderOptions,
        lights: &[Light],
        dome: [f64; 3],
    ) -> Row {
        let w = view.width as usize;
        let mut out = Row {
            rgb: Vec::with_capacity(if options.rgb { w * 3 } else { 0 }),
            depth: Vec::with_capacity(w),
            normal: Vec::with_capacity(w),
            instance: Vec::with_capacity(w),
            semantic: Vec::with_capacity(w),
            stats: BTreeMap::new(),
        };
        let mut crossed: Vec<u32> = Vec::new();
        let exposure = self.scene.exposure;
        for col in 0..view.width {
            let (origin, dir, start, max) =
                self.camera_ray(view, f64::from(col) + 0.5, f64::from(row) + 0.5);
            crossed.clear();
            let hit = self.first_hit(origin, dir, start, max, Some(&mut crossed));
            crossed.sort_unstable();
            crossed.dedup();
            for &id in &crossed {
                out.stats.entry(id).or_default().project(col, row);
            }
            match &hit {
                Some(h) => {
                    let shape = &self.scene.shapes[h.shape];
                    let id = shape.body as u32 + 1;
                    out.stats.entry(id).or_default().see(col, row);
                    out.depth.push((h.toi * dot(dir, view.forward)) as f32);
                    out.normal.push(h.normal.map(|x| x as f32));
                    out.instance.push(id);
                    out.semantic.push(shape.class);
                }
                None => {
                    out.depth.push(f32::INFINITY);
                    out.normal.push([0.0; 3]);
                    out.instance.push(0);
                    out.semantic.push(0);
                }
            }
            if options.rgb {
                let mut sum = self.radiance(origin, dir, hit.as_ref(), lights, dome);
                for k in 1..options.samples_per_pixel {
                    let (du, dv) = sample_offset(k);
                    let (o, d, s, m) =
                        self.camera_ray(view, f64::from(col) + du, f64::from(row) + dv);
                    let h = self.first_hit(o, d, s, m, None);
                    sum = add(sum, self.radiance(o, d, h.as_ref(), lights, dome));
                }
                let n = f64::from(options.samples_per_pixel);
                for c in sum {
                    out.rgb.push(shading::display(c / n * exposure));
                }
            }
        }
        out
    }

    /// The ray through image point `(u, v)`, clipped to the near and far
    /// planes: origin, direction, and the range of distances along it.
    fn camera_ray(&self, view: &CameraView, u: f64, v: f64) -> ([f64; 3], [f64; 3], f64, f64) {
        let dir = view.ray(u, v);
        let along = dot(dir, view.forward).max(1e-9);
        (view.eye, dir, view.near / along, view.far / along)
    }

    /// The nearest surface along the ray between `start` and `max`; with
    /// `crossed`, also every body the ray passes through in that range.
    fn first_hit(
        &self,
        origin: [f64; 3],
        dir: [f64; 3],
        start: f64,
        max: f64,
        mut crossed: Option<&mut Vec<u32>>,
    ) -> Option<Hit> {
        let from = add(origin, scaled(dir, start));
        let ray = Ray::new(v3(from), v3(dir));
        let span = (max - start) as Real;
        let mut best: Option<Hit> = None;
        let mut best_toi = span;
        let collect = crossed.is_some();
        if !self.solids.is_empty() {
            self.bvh.traverse(|node| {
                let limit = if collect { span } else { best_toi };
                if node.cast_ray(&ray, limit) >= limit {
                    return TraversalAction::Prune;
                }
                if let Some(leaf) = node.leaf_data() {
                    let i = self.solids[leaf as usize];
                    let Geometry::Solid { shape, .. } = &self.scene.shapes[i].geometry else {
                        return TraversalAction::Continue;
                    };
                    if let Some(hit) =
                        shape.cast_ray_and_get_normal(&self.poses[i], &ray, span, true)
                    {
                        if let Some(c) = crossed.as_deref_mut() {
                            c.push(self.scene.shapes[i].body as u32 + 1);
                        }
                        if hit.time_of_impact < best_toi {
                            best_toi = hit.time_of_impact;
                            best = Some(Hit {
                                shape: i,
                                toi: f64::from(hit.time_of_impact),
                                normal: f64s(hit.normal),
                            });
                        }
                    }
                }
                TraversalAction::Continue
            });
        }
        for &(i, point, normal) in &self.planes {
            let denom = dot(dir, normal);
            if denom.abs() < 1e-12 {
                continue;
            }
            let t = dot(hanzo_twin_scene::geometry::sub(point, from), normal) / denom;
            // Seen from either side; its solid half lies below the normal.
            if t >= 0.0 && t < f64::from(span) {
                if let Some(c) = crossed.as_deref_mut() {
                    c.push(self.scene.shapes[i].body as u32 + 1);
                }
                if t < f64::from(best_toi) {
                    best_toi = t as Real;
                    best = Some(Hit {
                        shape: i,
                        toi: t,
                        normal,
                    });
                }
            }
        }
        best.map(|h| Hit {
            toi: h.toi + start,
            ..h
        })
    }

    /// Whether anything lies on the segment from `from` along `dir` for `distance`.
    fn blocked(&self, from: [f64; 3], dir: [f64; 3], distance: f64) -> bool {
        let span = distance.min(1e6) as Real;
        let ray = Ray::new(v3(from), v3(dir));
        let mut blocked = false;
        if !self.solids.is_empty() {
            self.bvh.traverse(|node| {
                if node.cast_ray(&ray, span) >= span {
                    return TraversalAction::Prune;
                }
                if let Some(leaf) = node.leaf_data() {
                    let i = self.solids[leaf as usize];
                    if let Geometry::Solid { shape, .. } = &self.scene.shapes[i].geometry
                        && shape.intersects_ray(&self.poses[i], &ray, span)
                    {
                        blocked = true;
                        return TraversalAction::EarlyExit;
                    }
                }
                TraversalAction::Continue
            });
        }
        blocked
            || self.planes.iter().any(|&(_, point, normal)| {
                let denom = dot(dir, normal);
                denom.abs() > 1e-12 && {
                    let t = dot(hanzo_twin_scene::geometry::sub(point, from), normal) / denom;
                    t > 0.0 && t < f64::from(span)
                }
            })
    }

    /// The light leaving the hit point toward the camera (the sky where the
    /// ray hits nothing).
    fn radiance(
        &self,
        origin: [f64; 3],
        dir: [f64; 3],
        hit: Option<&Hit>,
        lights: &[Light],
        dome: [f64; 3],
    ) -> [f64; 3] {
        let Some(hit) = hit else {
            return dome;
        };
        let surface = &self.surfaces[hit.shape];
        let to_eye = scaled(dir, -1.0);
        // Shade the side the camera sees.
        let normal = if dot(hit.normal, to_eye) < 0.0 {
            scaled(hit.normal, -1.0)
        } else if hit.normal == [0.0; 3] {
            to_eye
        } else {
            hit.normal
        };
        let point = add(origin, scaled(dir, hit.toi));
        let lifted = add(point, scaled(normal, 1e-4 * (1.0 + hit.toi)));
        let mut colour = add(surface.emissive_color, shading::ambient(surface, dome));
        for light in lights {
            let Some(incoming) = shading::incoming(light, point) else {
                continue;
            };
            if dot(normal, incoming.to_light) <= 0.0
                || self.blocked(lifted, incoming.to_light, incoming.distance)
            {
                continue;
            }
            colour = add(
                colour,
                shading::reflect(
                    surface,
                    normal,
                    to_eye,
                    incoming.to_light,
                    incoming.irradiance,
                ),
            );
        }
        colour
    }
}

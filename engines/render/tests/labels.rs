//! The renderer's labels against analytic ground truth: where a box at a
//! known pose must land in the image, how deep it is and which way it
//! faces, how much of it an occluder hides, and its class; then colour
//! (lit, shadowed, tinted), reproducibility and the PNG files.

use hanzo_twin_render::encode::{DEPTH_SCALE_M, Output, encode_png};
use hanzo_twin_render::{CameraView, RenderOptions, RenderScene};
use hanzo_twin_scene::SceneModel;
use hanzo_twin_scene::look::{Light, LightKind, SceneLook, ShapeLook, Surface};
use hanzo_twin_scene::scene::{
    Axis, Body, BodyKind, Collider, MassProperties, Material, Pose, Shape,
};

fn body(path: &str, position: [f64; 3], shape: Shape) -> Body {
    Body {
        path: path.to_string(),
        kind: BodyKind::Static,
        pose: Pose::from_translation(position),
        mass: MassProperties::default(),
        linear_velocity: [0.0; 3],
        angular_velocity: [0.0; 3],
        colliders: vec![Collider {
            path: format!("{path}/Geom"),
            shape,
            local_pose: Pose::IDENTITY,
            material: Material::default(),
            mass: None,
            density: None,
            groups: vec![],
        }],
    }
}

fn cube(path: &str, position: [f64; 3], half: f64) -> Body {
    body(
        path,
        position,
        Shape::Cuboid {
            half_extents: [half; 3],
        },
    )
}

fn scene(bodies: Vec<Body>, look: SceneLook) -> SceneModel {
    SceneModel {
        source: "test.usda".to_string(),
        up_axis: Axis::Z,
        gravity: None,
        bodies,
        joints: vec![],
        cameras: vec![],
        collision_groups: vec![],
        native: None,
        look,
    }
}

fn poses(scene: &SceneModel) -> Vec<Pose> {
    scene.bodies.iter().map(|b| b.pose).collect()
}

/// A camera on the Z axis at height `h`, looking straight down, image
/// right = +X, image up = +Y.
fn overhead(h: f64, width: u32, height: u32) -> CameraView {
    CameraView::look_at(
        [0.0, 0.0, h],
        [0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        60.0,
        width,
        height,
    )
    .expect("a valid camera")
}

/// The pixels whose centres fall inside `[lo, hi]` (image coordinates).
fn covered(lo: f64, hi: f64) -> (u32, u32) {
    ((lo - 0.5).ceil() as u32, (hi - 0.5).floor() as u32)
}

fn labels_only() -> RenderOptions {
    RenderOptions {
        rgb: false,
        ..RenderOptions::default()
    }
}

#[test]
fn a_box_at_a_known_pose_covers_its_projected_rectangle_at_its_depth_facing_the_camera() {
    // A 1 m cube centred 0.3 m off the axis; its top face is 4.5 m below the camera.
    let s = scene(
        vec![cube("/World/Box", [0.3, -0.2, 0.0], 0.5)],
        SceneLook::default(),
    );
    let view = overhead(5.0, 320, 240);
    let frame = RenderScene::new(&s)
        .expect("drawable")
        .render(&poses(&s), &view, &labels_only())
        .expect("rendered");

    // The top face's corners project through the camera matrix.
    let k = view.intrinsics();
    let z = 4.5;
    let (x0, x1) = covered(k.cx + k.fx * (0.3 - 0.5) / z, k.cx + k.fx * (0.3 + 0.5) / z);
    // Image rows grow downward, world +Y is up in the image.
    let (y0, y1) = covered(
        k.cy - k.fy * (-0.2 + 0.5) / z,
        k.cy - k.fy * (-0.2 - 0.5) / z,
    );
    let label = frame.label_of("/World/Box").expect("the box is in view");
    assert_eq!(label.bbox_tight, Some([x0, y0, x1, y1]), "intrinsics {k:?}");
    assert_eq!(label.bbox_loose, label.bbox_tight);
    assert_eq!(
        label.visible_pixels,
        u64::from((x1 - x0 + 1) * (y1 - y0 + 1))
    );
    assert_eq!(label.visible_fraction, 1.0);

    for y in y0..=y1 {
        for x in x0..=x1 {
            let i = frame.index(x, y);
            assert_eq!(frame.instance[i], label.id);
            assert!(
                (f64::from(frame.depth[i]) - z).abs() < 1e-4,
                "depth {} at ({x}, {y})",
                frame.depth[i]
            );
            let n = frame.normal[i];
            assert!(
                (n[2] - 1.0).abs() < 1e-5 && n[0].abs() < 1e-5 && n[1].abs() < 1e-5,
                "normal {n:?}"
            );
        }
    }
    // Just outside the rectangle is background.
    assert_eq!(frame.instance[frame.index(x0 - 1, y0)], 0);
    assert_eq!(frame.instance[frame.index(x1 + 1, y1)], 0);
    assert!(frame.depth[frame.index(0, 0)].is_infinite());
}

#[test]
fn an_occluder_hides_the_fraction_it_covers_and_the_loose_box_keeps_the_hidden_part() {
    // A 2 m wide target face 6 m from the camera; a plate 3 m from the camera
    // covers the target's left half exactly in projection (half the size at
    // half the distance) and nothing else of it.
    let target = cube("/World/Target", [0.0, 0.0, -1.0], 1.0); // top face at z = 0
    let plate = body(
        "/World/Plate",
        [-0.25, 0.0, 3.0],
        Shape::Cuboid {
            half_extents: [0.25, 0.5, 0.001],
        },
    );
    let s = scene(vec![target, plate], SceneLook::default());
    let view = overhead(6.0, 400, 400);
    let frame = RenderScene::new(&s)
        .expect("drawable")
        .render(&poses(&s), &view, &labels_only())
        .expect("rendered");
    let target = frame.label_of("/World/Target").expect("in view");
    let plate = frame.label_of("/World/Plate").expect("in view");
    let k = view.intrinsics();
    let (x0, x1) = covered(k.cx - k.fx * 1.0 / 6.0, k.cx + k.fx * 1.0 / 6.0);
    let (y0, y1) = covered(k.cy - k.fy * 1.0 / 6.0, k.cy + k.fy * 1.0 / 6.0);
    assert_eq!(target.bbox_loose, Some([x0, y0, x1, y1]));
    let [tx0, ty0, tx1, ty1] = target.bbox_tight.expect("half is visible");
    assert_eq!((ty0, tx1, ty1), (y0, x1, y1), "the right half stays");
    assert!(
        (f64::from(tx0) - k.cx).abs() <= 1.0,
        "tight box starts mid-image, at {tx0}"
    );
    // Half hidden, to within a pixel column of the target's width.
    let column = 1.0 / f64::from(x1 - x0 + 1);
    assert!(
        (target.visible_fraction - 0.5).abs() <= column,
        "visible {}",
        target.visible_fraction
    );
    assert_eq!(plate.visible_fraction, 1.0);
    assert_eq!(
        target.visible_pixels + plate.visible_pixels,
        target.projected_pixels
    );
}

fn classed(collider: &str, class: &str, colour: [f64; 3]) -> ShapeLook {
    ShapeLook {
        collider: collider.to_string(),
        surface: Surface {
            diffuse_color: colour,
            ..Surface::default()
        },
        class: Some(class.to_string()),
    }
}

#[test]
fn semantic_ids_follow_the_classes_and_instances_stay_apart() {
    let look = SceneLook {
        shapes: vec![
            classed("/World/A/Geom", "box", [0.8, 0.1, 0.1]),
            classed("/World/B/Geom", "box", [0.8, 0.1, 0.1]),
            classed("/World/C/Geom", "ball", [0.1, 0.1, 0.8]),
        ],
        ..SceneLook::default()
    };
    let s = scene(
        vec![
            cube("/World/A", [-1.0, 0.0, 0.0], 0.3),
            cube("/World/B", [1.0, 0.0, 0.0], 0.3),
            body("/World/C", [0.0, 1.0, 0.0], Shape::Sphere { radius: 0.3 }),
        ],
        look,
    );
    let frame = RenderScene::new(&s)
        .expect("drawable")
        .render(&poses(&s), &overhead(5.0, 200, 200), &labels_only())
        .expect("rendered");
    assert_eq!(frame.classes, vec!["ball".to_string(), "box".to_string()]);
    for (path, class) in [("/World/A", 2), ("/World/B", 2), ("/World/C", 1)] {
        let label = frame.label_of(path).expect("in view");
        assert_eq!(label.class_id, class);
        let mut pixels = 0;
        for (i, id) in frame.instance.iter().enumerate() {
            if *id == label.id {
                assert_eq!(frame.semantic[i], class);
                pixels += 1;
            }
        }
        assert_eq!(pixels, label.visible_pixels);
    }
    // A sphere's disc: π r² in pixels at its distance, to within its rim.
    let ball = frame.label_of("/World/C").expect("in view");
    let k = overhead(5.0, 200, 200).intrinsics();
    let r_px = k.fx * 0.3 / (4.7f64.powi(2) - 0.09).sqrt();
    let disc = std::f64::consts::PI * r_px * r_px;
    assert!(
        (ball.visible_pixels as f64 - disc).abs() < 2.0 * std::f64::consts::PI * r_px,
        "{} vs {disc}",
        ball.visible_pixels
    );
}

fn pixel(frame: &hanzo_twin_render::Frame, x: u32, y: u32) -> [u8; 3] {
    let rgb = frame.rgb.as_ref().expect("colour");
    let i = frame.index(x, y) * 3;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

fn luma(c: [u8; 3]) -> f64 {
    0.2126 * f64::from(c[0]) + 0.7152 * f64::from(c[1]) + 0.0722 * f64::from(c[2])
}

#[test]
fn colour_shows_the_material_and_a_shadow_falls_under_a_ball_lit_from_above() {
    let sun = Light {
        path: "/World/Sun".to_string(),
        kind: LightKind::Distant { angle_deg: 0.53 },
        // Identity: shines down its local -Z, straight down.
        pose: Pose::IDENTITY,
        color: [1.0; 3],
        intensity: 2.0,
    };
    let look = SceneLook {
        shapes: vec![
            classed("/World/Ball/Geom", "ball", [0.9, 0.05, 0.05]),
            ShapeLook {
                collider: "/World/Floor/Geom".to_string(),
                surface: Surface {
                    diffuse_color: [0.6; 3],
                    ..Surface::default()
                },
                class: None,
            },
        ],
        lights: vec![sun],
        notes: vec![],
    };
    let s = scene(
        vec![
            body("/World/Floor", [0.0; 3], Shape::Plane { axis: Axis::Z }),
            body(
                "/World/Ball",
                [1.0, 0.0, 1.0],
                Shape::Sphere { radius: 0.4 },
            ),
        ],
        look,
    );
    // Looking down from the side so that the floor right under the ball shows.
    let view = CameraView::look_at(
        [-3.0, 0.0, 4.0],
        [0.5, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        50.0,
        240,
        180,
    )
    .expect("camera");
    let frame = RenderScene::new(&s)
        .expect("drawable")
        .render(&poses(&s), &view, &RenderOptions::default())
        .expect("rendered");
    let at = |p: [f64; 3]| {
        let (u, v, _) = view.project(p).expect("in front");
        (u as u32, v as u32)
    };
    // The ball's top is red (with a white highlight's share of green and blue).
    let (bx, by) = at([1.0, 0.0, 1.3]);
    let ball = pixel(&frame, bx, by);
    assert!(
        i32::from(ball[0]) - i32::from(ball[1].max(ball[2])) > 60,
        "ball {ball:?}"
    );
    // The floor straight under the ball is in its shadow; beside it, lit.
    let (sx, sy) = at([1.0, 0.0, 0.0]);
    let (lx, ly) = at([1.0, 1.2, 0.0]);
    let shadow = frame.index(sx, sy);
    assert_eq!(
        frame.instance[shadow],
        frame.label_of("/World/Floor").expect("floor").id
    );
    let (shade, lit) = (luma(pixel(&frame, sx, sy)), luma(pixel(&frame, lx, ly)));
    assert!(lit > 4.0 * shade.max(1.0), "lit {lit} vs shadow {shade}");
    let floor = pixel(&frame, lx, ly);
    assert!(
        floor[0].abs_diff(floor[1]) <= 2 && floor[1].abs_diff(floor[2]) <= 2,
        "grey floor {floor:?}"
    );
}

#[test]
fn frames_are_the_same_byte_for_byte_whatever_the_thread_count() {
    let s = scene(
        vec![
            body("/World/Floor", [0.0; 3], Shape::Plane { axis: Axis::Z }),
            cube("/World/Box", [0.0, 0.0, 0.5], 0.5),
            body(
                "/World/Rod",
                [1.0, 0.5, 0.5],
                Shape::Capsule {
                    radius: 0.1,
                    half_height: 0.4,
                    axis: Axis::X,
                },
            ),
        ],
        SceneLook::default(),
    );
    let view = CameraView::look_at([3.0, -3.0, 3.0], [0.0; 3], [0.0, 0.0, 1.0], 45.0, 160, 120)
        .expect("camera");
    let options = RenderOptions {
        samples_per_pixel: 4,
        ..RenderOptions::default()
    };
    let scene = RenderScene::new(&s).expect("drawable");
    let many = scene.render(&poses(&s), &view, &options).expect("rendered");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool")
        .install(|| scene.render(&poses(&s), &view, &options))
        .expect("rendered");
    assert_eq!(many, one);
    assert!(many.instances.len() == 3, "{:?}", many.instances);
}

#[test]
fn png_files_carry_depth_in_millimetres_and_say_so() {
    let s = scene(
        vec![cube("/World/Box", [0.0; 3], 0.5)],
        SceneLook::default(),
    );
    let frame = RenderScene::new(&s)
        .expect("drawable")
        .render(
            &poses(&s),
            &overhead(3.0, 64, 48),
            &RenderOptions::default(),
        )
        .expect("rendered");
    let bytes = encode_png(&frame, Output::Depth).expect("encoded");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let info = reader.info();
    assert_eq!(
        (info.width, info.height, info.bit_depth),
        (64, 48, png::BitDepth::Sixteen)
    );
    let scale: f64 = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "depth_scale_m")
        .map(|t| t.text.parse().expect("a number"))
        .expect("the scale is written");
    assert_eq!(scale, DEPTH_SCALE_M);
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    reader.next_frame(&mut buf).expect("pixels");
    let centre = frame.index(32, 24) * 2;
    let stored = u16::from_be_bytes([buf[centre], buf[centre + 1]]);
    assert_eq!(f64::from(stored) * scale, 2.5);
    assert_eq!(
        u16::from_be_bytes([buf[0], buf[1]]),
        0,
        "nothing hit reads 0"
    );
    for output in Output::ALL {
        let png = encode_png(&frame, output).expect("encoded");
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[test]
fn bad_requests_are_refused_with_the_field_named() {
    let s = scene(
        vec![cube("/World/Box", [0.0; 3], 0.5)],
        SceneLook::default(),
    );
    let scene_ = RenderScene::new(&s).expect("drawable");
    let err = scene_
        .render(&[], &overhead(3.0, 8, 8), &RenderOptions::default())
        .expect_err("no poses");
    assert!(err.to_string().starts_with("poses:"), "{err}");
    let err = CameraView::look_at([0.0; 3], [0.0; 3], [0.0, 0.0, 1.0], 60.0, 8, 8)
        .expect_err("eye = target");
    assert!(err.to_string().starts_with("look_at:"), "{err}");
    let err = CameraView::look_at([0.0, 0.0, 1.0], [0.0; 3], [0.0, 0.0, 1.0], 60.0, 8, 8)
        .expect_err("up along view");
    assert!(err.to_string().starts_with("up:"), "{err}");
    let err = overhead_checked(0, 8).expect_err("no pixels");
    assert!(err.to_string().starts_with("resolution:"), "{err}");
    let mut bad = poses(&s);
    bad[0].translation[0] = f64::NAN;
    let err = scene_
        .render(&bad, &overhead(3.0, 8, 8), &RenderOptions::default())
        .expect_err("NaN");
    assert!(err.to_string().contains("/World/Box"), "{err}");
}

fn overhead_checked(width: u32, height: u32) -> Result<CameraView, hanzo_twin_render::RenderError> {
    CameraView::look_at(
        [0.0, 0.0, 3.0],
        [0.0; 3],
        [0.0, 1.0, 0.0],
        60.0,
        width,
        height,
    )
}

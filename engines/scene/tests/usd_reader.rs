//! The USD reader against files written by the reference implementation (pxr,
//! usd-core 26.11: tests/fixtures/usd, copied from the project's shared fixtures)
//! and against the sample scenes.

use hanzo_twin_scene::SceneError;
use hanzo_twin_scene::scene::{Axis, BodyKind, JointKind, Pose, SceneModel, Shape};
use hanzo_twin_scene::usd::load_scene;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/usd")
        .join(name)
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/scenes")
        .join(name)
        .join("scene.usda")
}

fn load(path: &Path) -> SceneModel {
    load_scene(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

fn close3(a: [f64; 3], b: [f64; 3]) -> bool {
    (0..3).all(|i| close(a[i], b[i]))
}

fn close4(a: [f64; 4], b: [f64; 4]) -> bool {
    (0..4).all(|i| close(a[i], b[i]))
}

/// Writes `text` to a fresh file and reads it.
fn read_text(name: &str, text: &str) -> Result<SceneModel, SceneError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    load_scene(&path)
}

/// A body-local point in the world, by the body's pose.
fn to_world(pose: &Pose, p: [f64; 3]) -> [f64; 3] {
    let [x, y, z, w] = pose.rotation;
    let u = [x, y, z];
    let cross = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let uv = cross(u, p);
    let uuv = cross(u, uv);
    let t = pose.translation;
    [
        t[0] + p[0] + 2.0 * (w * uv[0] + uuv[0]),
        t[1] + p[1] + 2.0 * (w * uv[1] + uuv[1]),
        t[2] + p[2] + 2.0 * (w * uv[2] + uuv[2]),
    ]
}

/// Paths with a root prefix removed, so scenes composed under other roots compare.
fn shape_of(scene: &SceneModel, prefix: &str) -> String {
    let mut s = scene.clone();
    for b in &mut s.bodies {
        b.path = b.path.replacen(prefix, "", 1);
        for c in &mut b.colliders {
            c.path = c.path.replacen(prefix, "", 1);
        }
    }
    for j in &mut s.joints {
        j.path = j.path.replacen(prefix, "", 1);
        j.body0 = j.body0.as_ref().map(|p| p.replacen(prefix, "", 1));
        j.body1 = j.body1.as_ref().map(|p| p.replacen(prefix, "", 1));
    }
    serde_json::to_string(&(&s.bodies, &s.joints)).expect("json")
}

#[test]
fn reads_the_reference_scene() {
    let scene = load(&fixture("scene.usda"));
    let g = scene.gravity.expect("PhysicsScene gravity");
    assert!(
        close(g[0], 0.0) && close(g[1], 0.0) && close(g[2], -9.81),
        "{g:?}"
    );
    assert_eq!(scene.up_axis, Axis::Z);

    let dynamic: Vec<_> = scene
        .bodies
        .iter()
        .filter(|b| b.kind == BodyKind::Dynamic)
        .collect();
    assert!(
        dynamic
            .iter()
            .any(|b| b.mass.mass.is_some_and(|m| close(m, 2.5))),
        "no 2.5 kg body in {:#?}",
        scene.bodies
    );
    let ground = scene
        .bodies
        .iter()
        .find(|b| b.kind == BodyKind::Static)
        .expect("static ground");
    assert!(matches!(ground.colliders[0].shape, Shape::Cuboid { .. }));

    let joint = scene
        .joints
        .iter()
        .find(|j| j.kind == JointKind::Revolute)
        .expect("revolute joint");
    assert_eq!(joint.axis, Axis::Y);
    let (lo, hi) = joint.limits.expect("limits");
    assert!(close(lo, -PI / 2.0) && close(hi, PI / 2.0), "{lo} {hi}");
    let drive = joint.drive.expect("drive");
    // USD's angular gains are per degree; the scene model's per radian.
    assert!(
        close(drive.stiffness, 100.0 * 180.0 / PI),
        "{}",
        drive.stiffness
    );
    assert!(close(drive.damping, 5.0 * 180.0 / PI), "{}", drive.damping);
    assert!(
        close(drive.target_position, PI / 6.0),
        "{}",
        drive.target_position
    );
    for body in [&joint.body0, &joint.body1].into_iter().flatten() {
        assert!(
            scene.body(body).is_some(),
            "joint names unknown body {body}"
        );
    }
    assert!(close(drive.target_velocity, 0.0) && drive.max_force.is_none());

    // The exact facts of the fixture, as pxr's UsdPhysics parser reads them.
    assert_eq!(joint.path, "/World/Box/hinge");
    assert_eq!(joint.body0.as_deref(), Some("/World/Box"));
    assert_eq!(joint.body1.as_deref(), Some("/World/Arm"));
    assert!(close3(joint.local_pose0.translation, [0.25, 0.0, 0.0]));
    assert!(close3(joint.local_pose1.translation, [-0.25, 0.0, 0.0]));
    let b = scene.body("/World/Box").expect("box");
    assert!(close3(b.pose.translation, [0.0, 0.0, 1.0]));
    assert_eq!(b.pose.rotation, [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(b.colliders.len(), 1);
    assert!(
        matches!(b.colliders[0].shape, Shape::Cuboid { half_extents } if close3(half_extents, [0.25; 3]))
    );
    let ground = scene.body("/World/Ground").expect("ground");
    assert_eq!(ground.kind, BodyKind::Static);
    assert!(close3(ground.pose.translation, [0.0, 0.0, -0.05]));
    assert!(
        matches!(ground.colliders[0].shape, Shape::Cuboid { half_extents } if close3(half_extents, [10.0, 10.0, 0.05]))
    );
    assert_eq!(
        scene.body("/World/Arm").and_then(|a| a.mass.mass),
        Some(0.5)
    );
    assert_eq!(scene.bodies.len(), 3);
    assert_eq!(scene.joints.len(), 1);
}

#[test]
fn binary_sublayered_and_referenced_forms_read_the_same() {
    let text = load(&fixture("scene.usda"));
    let binary = load(&fixture("scene.usdc"));
    assert_eq!(shape_of(&text, ""), shape_of(&binary, ""));
    assert_eq!(text.gravity, binary.gravity);

    let composed = load(&fixture("composed.usda"));
    assert_eq!(shape_of(&text, ""), shape_of(&composed, ""));

    // ref.usda references /World of scene.usdc under /Robot: every path, and
    // every joint's body relationship, is remapped there.
    let referenced = load(&fixture("ref.usda"));
    assert!(!referenced.bodies.is_empty());
    for b in &referenced.bodies {
        assert!(b.path.starts_with("/Robot/"), "{}", b.path);
    }
    for j in &referenced.joints {
        assert!(j.path.starts_with("/Robot/"), "{}", j.path);
        for body in [&j.body0, &j.body1].into_iter().flatten() {
            assert!(body.starts_with("/Robot/"), "{body}");
            assert!(referenced.body(body).is_some(), "{body} missing");
        }
    }
    assert_eq!(shape_of(&text, "/World"), shape_of(&referenced, "/Robot"));
}

#[test]
fn reads_planes_and_pendulums() {
    let scene = load(&fixture("simple_physics.usda"));
    assert!(
        scene.bodies.iter().any(|b| b
            .colliders
            .iter()
            .any(|c| matches!(c.shape, Shape::Plane { .. }))),
        "no ground plane"
    );
    let hinge = scene
        .joints
        .iter()
        .find(|j| j.kind == JointKind::Revolute)
        .expect("pendulum hinge");
    assert!(hinge.body0.is_some() || hinge.body1.is_some());
    assert_eq!(
        scene.body("/World/Pendulum/Base").map(|b| b.kind),
        Some(BodyKind::Kinematic)
    );
    // localPos1 (0, 0, 0.5) is authored in the link's frame, which is scaled by
    // (0.05, 0.05, 0.5): 0.25 m in the unscaled body frame, the link's top end.
    assert!(close3(hinge.local_pose1.translation, [0.0, 0.0, 0.25]));
    assert!(close3(hinge.local_pose0.translation, [0.0, 0.0, -0.05]));
    let link = scene.body("/World/Pendulum/Link").expect("link");
    assert!(
        matches!(link.colliders[0].shape, Shape::Cuboid { half_extents } if close3(half_extents, [0.025, 0.025, 0.25]))
    );
    assert_eq!(link.mass.center_of_mass, Some([0.0; 3]));
}

#[test]
fn sample_scenes_hold_what_the_twins_expect() {
    let arm = load(&sample("robot-arm"));
    let names: Vec<&str> = arm.joints.iter().map(|j| j.path.as_str()).collect();
    for joint in [
        "/World/Arm/shoulder_yaw",
        "/World/Arm/shoulder_pitch",
        "/World/Arm/elbow",
    ] {
        let j = arm
            .joints
            .iter()
            .find(|j| j.path == joint)
            .unwrap_or_else(|| panic!("{joint} missing from {names:?}"));
        assert_eq!(j.kind, JointKind::Revolute);
        assert!(j.limits.is_some() && j.drive.is_some(), "{joint}");
    }
    assert!(arm.body("/World/Arm/Link3").is_some());
    assert!(!arm.cameras.is_empty(), "the arm scene has a camera");

    let belt = load(&sample("conveyor"));
    let boxes = belt
        .bodies
        .iter()
        .filter(|b| b.kind == BodyKind::Dynamic)
        .count();
    assert_eq!(boxes, 6);
    for b in belt.bodies.iter().filter(|b| b.kind == BodyKind::Dynamic) {
        assert!(b.mass.mass.is_some_and(|m| close(m, 1.0)), "{}", b.path);
        assert!(
            b.pose.translation[2] > 0.5,
            "{} starts above the belt",
            b.path
        );
    }
}

#[test]
fn robot_arm_sample_is_assembled_as_authored() {
    let arm = load(&sample("robot-arm"));
    assert!(close3(arm.gravity.expect("gravity"), [0.0, 0.0, -9.81]));
    // Four links (base included) plus the static ground and table.
    assert_eq!(arm.bodies.len(), 6, "{:#?}", arm.bodies);
    assert_eq!(arm.joints.len(), 4);
    for link in ["Link1", "Link2", "Link3"] {
        let b = arm.body(&format!("/World/Arm/{link}")).expect(link);
        assert_eq!(b.kind, BodyKind::Dynamic);
        let m = b.mass.mass.expect("explicit mass");
        assert!((1.0..=3.0).contains(&m), "{link}: {m} kg");
        assert_eq!(b.colliders.len(), 1);
        let mat = b.colliders[0].material;
        assert!(close(mat.static_friction, 0.5) && close(mat.dynamic_friction, 0.4));
    }
    // Link3's collider is a child prim, scaled on its own.
    let link3 = arm.body("/World/Arm/Link3").expect("link3");
    assert_eq!(link3.colliders[0].path, "/World/Arm/Link3/Collision");
    assert!(
        matches!(link3.colliders[0].shape, Shape::Cuboid { half_extents } if close3(half_extents, [0.03, 0.03, 0.15]))
    );

    let table = arm.body("/World/Table").expect("table");
    assert_eq!(table.kind, BodyKind::Static);
    let Shape::Cuboid { half_extents } = table.colliders[0].shape else {
        panic!("table is a cube")
    };
    assert!(
        close(table.pose.translation[2] + half_extents[2], 0.75),
        "table top"
    );
    assert!(close(table.colliders[0].material.static_friction, 0.6));
    let ground = arm.body("/World/Ground").expect("ground");
    assert!(matches!(
        ground.colliders[0].shape,
        Shape::Plane { axis: Axis::Z }
    ));

    let mount = arm
        .joints
        .iter()
        .find(|j| j.path == "/World/Arm/base_mount")
        .expect("mount");
    assert_eq!(mount.kind, JointKind::Fixed);
    assert_eq!(mount.body0, None);
    assert_eq!(mount.body1.as_deref(), Some("/World/Arm/Base"));

    let pitch = arm
        .joints
        .iter()
        .find(|j| j.path == "/World/Arm/shoulder_pitch")
        .expect("pitch");
    assert_eq!(pitch.axis, Axis::Y);
    let (lo, hi) = pitch.limits.expect("limits");
    assert!(close(lo, -110.0 * PI / 180.0) && close(hi, 110.0 * PI / 180.0));
    let drive = pitch.drive.expect("drive");
    assert!(
        close(drive.stiffness, 8.0 * 180.0 / PI),
        "{}",
        drive.stiffness
    );
    assert!(close(drive.damping, 0.8 * 180.0 / PI), "{}", drive.damping);
    assert_eq!(drive.max_force, Some(80.0));
    let yaw = arm
        .joints
        .iter()
        .find(|j| j.path == "/World/Arm/shoulder_yaw")
        .expect("yaw");
    assert_eq!(yaw.axis, Axis::Z);

    // Every joint's two frames meet at one world point, so nothing jumps at start.
    for j in &arm.joints {
        let end = |body: &Option<String>, local: &Pose| match body {
            Some(b) => to_world(&arm.body(b).expect("body").pose, local.translation),
            None => local.translation,
        };
        let (a, b) = (end(&j.body0, &j.local_pose0), end(&j.body1, &j.local_pose1));
        assert!(close3(a, b), "{}: {a:?} vs {b:?}", j.path);
    }
    // No two links' shapes touch at rest: they are stacked along z with gaps.
    let mut spans: Vec<(f64, f64)> = ["Base", "Link1", "Link2", "Link3"]
        .iter()
        .map(|l| {
            let b = arm.body(&format!("/World/Arm/{l}")).expect(l);
            let c = &b.colliders[0];
            let half = match c.shape {
                Shape::Cuboid { half_extents } => half_extents[2],
                Shape::Capsule {
                    radius,
                    half_height,
                    ..
                } => half_height + radius,
                Shape::Cylinder { half_height, .. } => half_height,
                _ => panic!("{l}: unexpected shape"),
            };
            let z = b.pose.translation[2] + c.local_pose.translation[2];
            (z - half, z + half)
        })
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(close(spans[0].0, 0.75), "the base stands on the table");
    for w in spans.windows(2) {
        assert!(
            w[1].0 - w[0].1 >= 0.015,
            "links overlap or touch: {spans:?}"
        );
    }

    let camera = &arm.cameras[0];
    assert_eq!(camera.path, "/World/Camera");
    let fov = 2.0 * (15.2908f64 / 48.0).atan() * 180.0 / PI;
    assert!(close(camera.fov_deg, fov), "{}", camera.fov_deg);
    assert!(close(camera.near, 0.05) && close(camera.far, 100.0));
}

#[test]
fn conveyor_sample_drops_boxes_onto_the_belt() {
    let scene = load(&sample("conveyor"));
    assert_eq!(scene.bodies.len(), 8, "six boxes, the belt and the ground");
    assert!(scene.joints.is_empty());
    let belt = scene.body("/World/Conveyor").expect("belt");
    assert_eq!(belt.kind, BodyKind::Static);
    let Shape::Cuboid {
        half_extents: belt_half,
    } = belt.colliders[0].shape
    else {
        panic!("belt is a cube")
    };
    assert!(
        close(belt.pose.translation[2] + belt_half[2], 0.5),
        "belt top"
    );
    assert!(close(belt.colliders[0].material.static_friction, 0.9));
    let mut heights = Vec::new();
    for i in 1..=6 {
        let b = scene.body(&format!("/World/Boxes/Box{i}")).expect("box");
        assert_eq!(b.kind, BodyKind::Dynamic);
        assert_eq!(b.mass.mass, Some(1.0));
        let c = &b.colliders[0];
        assert!(
            matches!(c.shape, Shape::Cuboid { half_extents } if close3(half_extents, [0.1; 3]))
        );
        assert!(close(c.material.restitution, 0.1) && close(c.material.static_friction, 0.6));
        let [x, y, z] = b.pose.translation;
        assert!(
            x.abs() + 0.15 < belt_half[0] && y.abs() + 0.15 < belt_half[1],
            "{x} {y} over the belt"
        );
        heights.push(z - 0.5);
    }
    assert!(
        close(heights[0], 1.0) && close(heights[5], 2.5),
        "{heights:?}"
    );
    assert!(
        heights.windows(2).all(|w| w[1] > w[0]),
        "staggered: {heights:?}"
    );
    // Box2 is yawed 15 degrees by xformOp:rotateXYZ.
    let half = 7.5f64.to_radians();
    let q = scene.body("/World/Boxes/Box2").expect("box2").pose.rotation;
    assert!(close4(q, [0.0, 0.0, half.sin(), half.cos()]), "{q:?}");
}

fn bad(name: &str, text: &str) -> SceneError {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    match load_scene(&path) {
        Ok(_) => panic!("{name} should be refused"),
        Err(e) => e,
    }
}

#[test]
fn bad_files_are_clear_errors() {
    let missing = load_scene(Path::new("/nonexistent/scene.usda")).expect_err("missing");
    assert!(
        matches!(&missing, SceneError::Read { file, .. } if file.contains("/nonexistent/scene.usda")),
        "{missing}"
    );
    for (name, text) in [
        (
            "unclosed.usda",
            "#usda 1.0\ndef Xform \"W\" {\n    double3 xformOp:translate = (0, 0\n}\n",
        ),
        ("not-usd.usda", "not usd at all"),
        ("garbage.usdc", "PXR-USDC garbage garbage garbage garbage"),
        (
            "missing-ref.usda",
            "#usda 1.0\ndef Xform \"W\" (\n    prepend references = @missing.usda@</X>\n) {}\n",
        ),
    ] {
        let e = bad(name, text);
        assert!(
            matches!(&e, SceneError::Read { file, .. } if file.ends_with(name)),
            "{name}: {e}"
        );
    }
}

const JOINT_TO_NOWHERE: &str = r#"#usda 1.0
(
    upAxis = "Z"
)
def Xform "World"
{
    def Cube "Box" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsCollisionAPI"]
    )
    {
        double size = 1
    }
    def PhysicsRevoluteJoint "Hinge"
    {
        rel physics:body0 = </World/Box>
        rel physics:body1 = </World/Ghost>
        uniform token physics:axis = "X"
    }
}
"#;

#[test]
fn bad_physics_names_the_prim() {
    let e = bad("ghost.usda", JOINT_TO_NOWHERE);
    assert!(
        matches!(&e, SceneError::Prim { prim, .. } if prim == "/World/Hinge"),
        "{e}"
    );
    let e = bad(
        "flat.usda",
        &JOINT_TO_NOWHERE
            .replace("double size = 1", "double size = -1")
            .replace("rel physics:body1 = </World/Ghost>", ""),
    );
    assert!(
        matches!(&e, SceneError::Prim { prim, .. } if prim == "/World/Box"),
        "{e}"
    );
    let e = bad(
        "rope.usda",
        &JOINT_TO_NOWHERE
            .replace("PhysicsRevoluteJoint", "PhysicsDistanceJoint")
            .replace("rel physics:body1 = </World/Ghost>", ""),
    );
    assert!(
        matches!(&e, SceneError::Prim { prim, .. } if prim == "/World/Hinge"),
        "unsupported joints are errors, not dropped: {e}"
    );
}

#[test]
fn truncated_text_never_panics() {
    let text = std::fs::read_to_string(sample("robot-arm")).expect("sample");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.usda");
    for cut in (0..text.len()).step_by(97) {
        std::fs::write(&path, &text.as_bytes()[..cut]).expect("write");
        // Either a scene or an error; a panic fails the test.
        let _ = load_scene(&path);
    }
}

#[test]
fn transforms_compose_through_parents() {
    // A parent turned 90 degrees about z and moved along x; a body inside it with
    // its own orient (USD's quaternions are w first); a collider child offset
    // along the body's x.
    let scene = read_text(
        "xform.usda",
        r#"#usda 1.0
(
    upAxis = "Z"
)
def Xform "World"
{
    double3 xformOp:translate = (1, 0, 0)
    float xformOp:rotateZ = 90
    uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:rotateZ"]

    def Xform "Body" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI"]
    )
    {
        double3 xformOp:translate = (1, 0, 0)
        quatf xformOp:orient = (0.70710677, 0.70710677, 0, 0)
        uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:orient"]
        vector3f physics:angularVelocity = (0, 0, 180)

        def Sphere "Ball" (
            prepend apiSchemas = ["PhysicsCollisionAPI"]
        )
        {
            double radius = 0.1
            float3 xformOp:scale = (2, 2, 2)
            double3 xformOp:translate = (0.5, 0, 0)
            uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:scale"]
        }
    }
}
"#,
    )
    .expect("reads");
    let body = scene.body("/World/Body").expect("body");
    // (1, 0, 0) turned 90 degrees about z is (0, 1, 0), plus the parent's (1, 0, 0).
    assert!(
        close3(body.pose.translation, [1.0, 1.0, 0.0]),
        "{:?}",
        body.pose
    );
    // 90 degrees about z, then (inside) 90 degrees about x.
    let expected = [0.5, 0.5, 0.5, 0.5];
    assert!(
        close4(body.pose.rotation, expected),
        "{:?} vs {expected:?}",
        body.pose.rotation
    );
    assert!(
        close3(body.angular_velocity, [0.0, 0.0, PI]),
        "deg/s become rad/s"
    );
    let ball = &body.colliders[0];
    assert!(close3(ball.local_pose.translation, [0.5, 0.0, 0.0]));
    assert!(close4(ball.local_pose.rotation, [0.0, 0.0, 0.0, 1.0]));
    assert!(matches!(ball.shape, Shape::Sphere { radius } if close(radius, 0.2)));
    assert_eq!(scene.gravity, None, "no PhysicsScene, no gravity");
}

#[test]
fn units_convert_to_metres_and_kilograms() {
    let scene = read_text(
        "cm.usda",
        r#"#usda 1.0
(
    metersPerUnit = 0.01
    kilogramsPerUnit = 0.001
    upAxis = "Y"
)
def PhysicsScene "Scene"
{
}
def Cube "Box" (
    prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsCollisionAPI", "PhysicsMassAPI"]
)
{
    double size = 20
    float physics:mass = 500
    vector3f physics:velocity = (100, 0, 0)
    double3 xformOp:translate = (0, 150, 0)
    uniform token[] xformOpOrder = ["xformOp:translate"]
}
def PhysicsPrismaticJoint "Slide" (
    prepend apiSchemas = ["PhysicsDriveAPI:linear"]
)
{
    rel physics:body1 = </Box>
    point3f physics:localPos0 = (0, 150, 0)
    float physics:lowerLimit = -10
    float physics:upperLimit = 30
    float drive:linear:physics:stiffness = 1000
    float drive:linear:physics:targetPosition = 5
}
"#,
    )
    .expect("reads");
    assert_eq!(scene.up_axis, Axis::Y);
    // Unauthored gravity is earth gravity against the up axis, in m/s².
    assert!(close3(scene.gravity.expect("gravity"), [0.0, -9.81, 0.0]));
    let b = scene.body("/Box").expect("box");
    assert!(close3(b.pose.translation, [0.0, 1.5, 0.0]));
    assert!(close3(b.linear_velocity, [1.0, 0.0, 0.0]));
    assert!(close(b.mass.mass.expect("mass"), 0.5));
    assert!(
        matches!(b.colliders[0].shape, Shape::Cuboid { half_extents } if close3(half_extents, [0.1; 3]))
    );
    let j = &scene.joints[0];
    assert_eq!(j.kind, JointKind::Prismatic);
    assert_eq!(j.body0, None);
    assert!(close3(j.local_pose0.translation, [0.0, 1.5, 0.0]));
    let (lo, hi) = j.limits.expect("limits");
    assert!(close(lo, -0.1) && close(hi, 0.3));
    let d = j.drive.expect("drive");
    // N/cm in scene units of g: 1000 g/s² = 1 kg/s²; the target is 5 cm.
    assert!(
        close(d.stiffness, 1.0) && close(d.target_position, 0.05),
        "{d:?}"
    );
}

const BOX: &str = r#"#usda 1.0
def Xform "World"
{
    def Cube "Box" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsCollisionAPI", "PhysicsMassAPI"]
    )
    {
        double size = 1
    }
}
"#;

#[test]
fn unsupported_or_malformed_physics_is_refused() {
    let cases = [
        ("negative mass", BOX.replace("double size = 1", "double size = 1\n        float physics:mass = -2"), "/World/Box"),
        ("mesh collider", BOX.replace("def Cube", "def Mesh"), "/World/Box"),
        (
            "stretched sphere",
            BOX.replace("def Cube", "def Sphere")
                .replace("double size = 1", "float3 xformOp:scale = (1, 2, 1)\n        uniform token[] xformOpOrder = [\"xformOp:scale\"]"),
            "/World/Box",
        ),
        (
            "one-sided limit",
            BOX.replace(
                "    }\n}\n",
                "    }\n    def PhysicsRevoluteJoint \"J\"\n    {\n        rel physics:body1 = </World/Box>\n        float physics:lowerLimit = -30\n    }\n}\n",
            ),
            "/World/J",
        ),
        (
            "acceleration drive",
            BOX.replace(
                "    }\n}\n",
                "    }\n    def PhysicsRevoluteJoint \"J\" (\n        prepend apiSchemas = [\"PhysicsDriveAPI:angular\"]\n    )\n    {\n        rel physics:body1 = </World/Box>\n        uniform token drive:angular:physics:type = \"acceleration\"\n    }\n}\n",
            ),
            "/World/J",
        ),
        (
            "D6 joint",
            BOX.replace("    }\n}\n", "    }\n    def PhysicsJoint \"J\"\n    {\n        rel physics:body1 = </World/Box>\n    }\n}\n"),
            "/World/J",
        ),
    ];
    for (what, text, prim) in cases {
        match read_text("case.usda", &text) {
            Err(SceneError::Prim { prim: p, message }) => {
                assert_eq!(p, prim, "{what}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{what}: expected a ScenePrim error, got {other:?}"),
        }
    }
    // The unmodified scene reads, so each error above is the edit's doing.
    assert_eq!(read_text("box.usda", BOX).expect("reads").bodies.len(), 1);
}

#[test]
fn odd_names_and_broken_files_are_errors_not_hangs() {
    // openusd's parser takes any quoted name; `}` in one would make path
    // ancestry loop, so the reader refuses it up front.
    let e = read_text("name.usda", &BOX.replace("\"Box\"", "\"B}ox\"")).expect_err("bad name");
    assert!(
        matches!(&e, SceneError::Read { message, .. } if message.contains("B}ox")),
        "{e}"
    );

    // Truncated binary files: errors (or a scene), never a panic.
    let usdc = std::fs::read(fixture("scene.usdc")).expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.usdc");
    for cut in (0..usdc.len()).step_by(53) {
        std::fs::write(&path, &usdc[..cut]).expect("write");
        let _ = load_scene(&path);
    }
    // Single-character edits of a text scene: no panic, no hang.
    let text = std::fs::read_to_string(fixture("scene.usda")).expect("fixture");
    let path = dir.path().join("edit.usda");
    for (n, i) in (0..text.len()).step_by(41).enumerate() {
        let mut bytes = text.clone().into_bytes();
        bytes[i] = [b'}', b'"', b'(', b'-', b'<', b'@', b'9'][n % 7];
        std::fs::write(&path, &bytes).expect("write");
        let _ = load_scene(&path);
    }
}

const BALL_JOINTS: &str = r#"#usda 1.0
(
    defaultPrim = "World"
    metersPerUnit = 1
    upAxis = "Z"
)
def Xform "World"
{
    def Cube "A" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsCollisionAPI"]
    )
    {
        double size = 0.2
    }
    def PhysicsSphericalJoint "Ball"
    {
        rel physics:body1 = </World/A>
        uniform token physics:axis = "Y"
        float physics:coneAngle0Limit = 30
        float physics:coneAngle1Limit = 45
    }
    def PhysicsSphericalJoint "Free"
    {
        rel physics:body1 = </World/A>
        float physics:coneAngle0Limit = -1
    }
}
"#;

#[test]
fn spherical_joints_read_with_their_cone_in_radians() {
    let scene = read_text("ball.usda", BALL_JOINTS).expect("reads");
    let ball = &scene.joints[0];
    assert_eq!(ball.kind, JointKind::Spherical);
    assert_eq!(ball.axis, Axis::Y);
    let [a, b] = ball.cone_limits.expect("a cone");
    assert!(close(a, 30f64.to_radians()) && close(b, 45f64.to_radians()));
    assert_eq!(ball.limits, None);
    // The frames engines build it in: the cone's axis (Y) as X, the next
    // axis (Z) as Y.
    let (frame0, _) = ball.spherical_frames();
    let along = |v| hanzo_twin_scene::geometry::quat_rotate(frame0.rotation, v);
    assert!(close3(along([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0]));
    assert!(close3(along([0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]));
    assert_eq!(
        scene.joints[1].cone_limits, None,
        "a negative angle is free"
    );

    // A cone on one side only (UsdPhysics would drop it), angles past 180°
    // and drives are errors naming the joint.
    for (text, says) in [
        (
            BALL_JOINTS.replace("float physics:coneAngle1Limit = 45\n", ""),
            "both",
        ),
        (BALL_JOINTS.replace("= 45", "= 200"), "180"),
        (
            BALL_JOINTS.replace(
                "def PhysicsSphericalJoint \"Ball\"",
                "def PhysicsSphericalJoint \"Ball\" (\n        prepend apiSchemas = [\"PhysicsDriveAPI:rotX\"]\n    )",
            ),
            "without drives",
        ),
    ] {
        let e = bad("ball.usda", &text);
        assert!(
            matches!(&e, SceneError::Prim { prim, message } if prim == "/World/Ball" && message.contains(says)),
            "{e}"
        );
    }
}

#[test]
fn looks_are_read_with_inheritance_purposes_and_notes_for_what_is_not_drawn() {
    let scene = load(&fixture("looks.usda"));
    let look = &scene.look;
    let hull = look
        .shape("/World/Robot/Hull")
        .expect("the hull inherits paint");
    assert_eq!(hull.class.as_deref(), Some("robot"));
    assert!(close3(hull.surface.diffuse_color, [0.1, 0.5, 0.9]));
    let sensor = look
        .shape("/World/Robot/Sensor")
        .expect("the sensor's own look");
    // The preview binding colours it; the physics binding does not.
    assert!(close(sensor.surface.roughness, 0.05));
    assert_eq!(sensor.class.as_deref(), Some("sensor"));
    let crate_ = look.shape("/World/Crate").expect("displayColor");
    assert_eq!(crate_.class.as_deref(), Some("crate"));
    assert!(close3(crate_.surface.diffuse_color, [0.6, 0.4, 0.2]));
    assert_eq!(look.lights.len(), 4);
    let notes = look.notes.join("\n");
    assert!(
        notes.contains("/World/Looks/Wood") && notes.contains("wood.png"),
        "{notes}"
    );
    assert!(notes.contains("/World/Sky"), "{notes}");
    // The physics is untouched: the sensor is still rubber.
    let robot = scene.body("/World/Robot").expect("robot");
    let rubber = robot
        .colliders
        .iter()
        .find(|c| c.path == "/World/Robot/Sensor")
        .expect("sensor");
    assert!(close(rubber.material.dynamic_friction, 0.9));
}

#[test]
fn lights_written_before_usd_21_and_bad_colours_are_handled() {
    let old = read_text(
        "old.usda",
        r#"#usda 1.0
(
    upAxis = "Z"
)
def SphereLight "Lamp"
{
    float intensity = 50
    float exposure = 1
    color3f color = (1, 0.5, 0.25)
    float radius = 0.3
}
"#,
    )
    .expect("reads");
    let lamp = &old.look.lights[0];
    assert!(close(lamp.intensity, 100.0));
    assert!(close3(lamp.color, [1.0, 0.5, 0.25]));
    let err = read_text(
        "bad.usda",
        r#"#usda 1.0
def Cube "Box" (
    prepend apiSchemas = ["PhysicsCollisionAPI"]
)
{
    color3f[] primvars:displayColor = [(-1, 0, 0)]
}
"#,
    )
    .expect_err("a negative colour");
    assert!(
        err.to_string().contains("/Box") && err.to_string().contains("displayColor"),
        "{err}"
    );
}

#[test]
fn the_sample_scenes_have_materials_classes_and_lights() {
    for name in ["conveyor", "robot-arm", "cartpole"] {
        let scene = load(&sample(name));
        let colliders = scene.bodies.iter().flat_map(|b| &b.colliders).count();
        let classed = scene
            .look
            .shapes
            .iter()
            .filter(|s| s.class.is_some())
            .count();
        assert!(classed > 0, "{name}: no classes");
        assert_eq!(scene.look.lights.len(), 2, "{name}");
        assert!(
            scene.look.notes.is_empty(),
            "{name}: {:?}",
            scene.look.notes
        );
        assert!(scene.look.shapes.len() <= colliders);
    }
}

/// The scene reader runs in a child process and sends the model back as
/// bincode, which is not self-describing: every part must survive it.
#[test]
fn a_scene_with_looks_survives_bincode() {
    let scene = load(&fixture("looks.usda"));
    let bytes =
        bincode::serde::encode_to_vec(&scene, bincode::config::standard()).expect("encodes");
    let (back, _): (SceneModel, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decodes");
    assert_eq!(back, scene);
}

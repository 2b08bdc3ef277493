//! Scene builders and comparisons shared by the engine tests. Scenes are built
//! directly as `SceneModel`s (Z up, SI units).
#![allow(dead_code)]

use hanzo_twin_engines::scene::{
    Axis, Body, BodyKind, Collider, Drive, Joint, JointKind, MassProperties, Material, Pose,
    SceneModel, Shape,
};
use hanzo_twin_engines::{Engine, EngineConfig, JointCommand, Observation, Simulation};

pub const G: f64 = 9.81;

// ---------------------------------------------------------------------------------------------
// Scene building.
// ---------------------------------------------------------------------------------------------

pub fn scene(bodies: Vec<Body>, joints: Vec<Joint>) -> SceneModel {
    SceneModel {
        source: "test.usda".to_string(),
        up_axis: Axis::Z,
        gravity: Some([0.0, 0.0, -G]),
        bodies,
        joints,
        cameras: vec![],
        collision_groups: vec![],
        native: None,
        look: Default::default(),
    }
}

pub fn collider(path: &str, shape: Shape) -> Collider {
    Collider {
        path: path.to_string(),
        shape,
        local_pose: Pose::IDENTITY,
        material: Material::default(),
        mass: None,
        density: None,
        groups: vec![],
    }
}

pub fn ground() -> Body {
    Body {
        path: "/World/Ground".to_string(),
        kind: BodyKind::Static,
        pose: Pose::IDENTITY,
        mass: MassProperties::default(),
        linear_velocity: [0.0; 3],
        angular_velocity: [0.0; 3],
        colliders: vec![collider(
            "/World/Ground/Plane",
            Shape::Plane { axis: Axis::Z },
        )],
    }
}

pub fn cuboid(path: &str, kind: BodyKind, position: [f64; 3], half: [f64; 3], mass: f64) -> Body {
    Body {
        path: path.to_string(),
        kind,
        pose: Pose::from_translation(position),
        mass: MassProperties {
            mass: (kind == BodyKind::Dynamic).then_some(mass),
            ..MassProperties::default()
        },
        linear_velocity: [0.0; 3],
        angular_velocity: [0.0; 3],
        colliders: vec![collider(
            &format!("{path}/Collision"),
            Shape::Cuboid { half_extents: half },
        )],
    }
}

pub fn revolute(path: &str, body0: Option<&str>, body1: &str, axis: Axis) -> Joint {
    Joint {
        path: path.to_string(),
        kind: JointKind::Revolute,
        body0: body0.map(str::to_string),
        body1: Some(body1.to_string()),
        local_pose0: Pose::IDENTITY,
        local_pose1: Pose::IDENTITY,
        axis,
        limits: None,
        drive: None,
        cone_limits: None,
    }
}

/// A ball joint between `body0` (or the world) and `body1`, its cone's axis X.
pub fn spherical(path: &str, body0: Option<&str>, body1: &str) -> Joint {
    Joint {
        kind: JointKind::Spherical,
        ..revolute(path, body0, body1, Axis::X)
    }
}

pub fn drive(stiffness: f64, damping: f64) -> Drive {
    Drive {
        stiffness,
        damping,
        target_position: 0.0,
        target_velocity: 0.0,
        max_force: None,
    }
}

pub fn load_on(engine: &dyn Engine, scene: &SceneModel) -> Box<dyn Simulation> {
    engine
        .load_scene(scene, &EngineConfig::default())
        .unwrap_or_else(|e| panic!("{} loads the scene: {e}", engine.kind()))
}

pub fn body<'a>(obs: &'a Observation, path: &str) -> &'a hanzo_twin_engines::BodyObservation {
    obs.bodies
        .iter()
        .find(|b| b.path == path)
        .expect("body observed")
}

pub fn joint_position(sim: &dyn Simulation, path: &str) -> f64 {
    sim.observation(path).expect("joint observed").joints[0].position
}

/// The scene of the determinism tests: a pile of boxes falling onto each other and the
/// ground, and a two-link arm under gravity with position drives on both joints.
pub fn pile_and_arm() -> SceneModel {
    let mut bodies = vec![ground()];
    for i in 0..3 {
        for j in 0..3 {
            // Staggered so that the boxes land on each other at different times and topple.
            let x = 0.13 * f64::from(i) + 0.02 * f64::from(j);
            let y = 0.05 * f64::from(j) - 0.04 * f64::from(i);
            let z = 0.15 + 0.35 * f64::from(j) + 0.1 * f64::from(i);
            bodies.push(cuboid(
                &format!("/World/Box_{i}_{j}"),
                BodyKind::Dynamic,
                [x, y, z],
                [0.1, 0.1, 0.1],
                1.0 + 0.1 * f64::from(i + j),
            ));
        }
    }
    // Arm: link1 hangs from the world at (2, 0, 1.5) about Y, link2 hangs from link1.
    bodies.push(cuboid(
        "/World/Arm/Link1",
        BodyKind::Dynamic,
        [2.0, 0.0, 1.25],
        [0.03, 0.03, 0.25],
        1.0,
    ));
    bodies.push(cuboid(
        "/World/Arm/Link2",
        BodyKind::Dynamic,
        [2.0, 0.0, 0.75],
        [0.03, 0.03, 0.25],
        0.5,
    ));
    let mut shoulder = revolute("/World/Arm/Shoulder", None, "/World/Arm/Link1", Axis::Y);
    shoulder.local_pose0 = Pose::from_translation([2.0, 0.0, 1.5]);
    shoulder.local_pose1 = Pose::from_translation([0.0, 0.0, 0.25]);
    shoulder.drive = Some(drive(60.0, 6.0));
    let mut elbow = revolute(
        "/World/Arm/Elbow",
        Some("/World/Arm/Link1"),
        "/World/Arm/Link2",
        Axis::Y,
    );
    elbow.local_pose0 = Pose::from_translation([0.0, 0.0, -0.25]);
    elbow.local_pose1 = Pose::from_translation([0.0, 0.0, 0.25]);
    elbow.drive = Some(drive(20.0, 2.0));
    elbow.limits = Some((-2.0, 2.0));
    scene(bodies, vec![shoulder, elbow])
}

/// Commands of the determinism tests at a given step (`variant` changes them).
pub fn arm_commands(sim: &mut dyn Simulation, step: u64, variant: f64) {
    let t = step as f64 / 240.0;
    sim.set_joint_command(
        "/World/Arm/Shoulder",
        JointCommand::Position(variant * (2.0 * t).sin()),
    )
    .expect("shoulder command");
    let elbow = if step % 120 < 60 {
        JointCommand::Velocity(1.5 * variant)
    } else {
        JointCommand::Effort(-0.8 * variant)
    };
    sim.set_joint_command("/World/Arm/Elbow", elbow)
        .expect("elbow command");
}

/// Every value of a full observation, as bits.
pub fn bits(obs: &Observation) -> Vec<u64> {
    let mut out = vec![obs.time.to_bits(), obs.step];
    for b in &obs.bodies {
        out.extend(b.position.iter().map(|v| v.to_bits()));
        out.extend(b.orientation.iter().map(|v| v.to_bits()));
        out.extend(b.linear_velocity.iter().map(|v| v.to_bits()));
        out.extend(b.angular_velocity.iter().map(|v| v.to_bits()));
    }
    for j in &obs.joints {
        out.push(j.position.to_bits());
        out.push(j.velocity.to_bits());
    }
    out
}

pub fn assert_bitwise_equal(a: &dyn Simulation, b: &dyn Simulation, step: u64, what: &str) {
    let (oa, ob) = (a.observation("/").unwrap(), b.observation("/").unwrap());
    if bits(&oa) != bits(&ob) {
        panic!("{what}: observations differ at step {step}:\n{oa:?}\nvs\n{ob:?}");
    }
}

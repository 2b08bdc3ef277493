//! The rapier3d engine: physics against analytic results, drives, commands, and — the point
//! of the twin runtime — bit-for-bit fork and state-restore determinism.
//!
//! Scenes are built directly as `SceneModel`s (Z up, SI units).

use hanzo_twin_engines::rapier::{RapierEngine, RapierSimulation};
use hanzo_twin_engines::scene::{
    Axis, BodyKind, Camera, JointKind, MassProperties, Pose, SceneModel, Shape,
};
use hanzo_twin_engines::{
    Engine, EngineConfig, EngineError, EngineKind, JointCommand, Observation, RenderParams,
    SimState, Simulation,
};
use std::time::Instant;

mod common;
use common::*;

fn load(scene: &SceneModel) -> Box<dyn Simulation> {
    load_on(&RapierEngine, scene)
}

// (1) Free fall and (2) the pendulum's period run on every engine, rapier3d
// included, in engine_conformance.rs.

// ---------------------------------------------------------------------------------------------
// (3) Drives and commands.
// ---------------------------------------------------------------------------------------------

/// An arm turning about the vertical axis (so gravity does not load the drive).
fn turntable(with_drive: bool) -> SceneModel {
    let arm = cuboid(
        "/World/Arm",
        BodyKind::Dynamic,
        [0.25, 0.0, 1.0],
        [0.25, 0.05, 0.05],
        1.0,
    );
    let mut joint = revolute("/World/Turn", None, "/World/Arm", Axis::Z);
    joint.local_pose0 = Pose::from_translation([0.0, 0.0, 1.0]);
    joint.local_pose1 = Pose::from_translation([-0.25, 0.0, 0.0]);
    if with_drive {
        joint.drive = Some(drive(20.0, 4.0));
    }
    scene(vec![arm], vec![joint])
}

#[test]
fn position_drive_reaches_its_target() {
    let mut sim = load(&turntable(true));
    sim.set_joint_command("/World/Turn", JointCommand::Position(1.0))
        .unwrap();
    for _ in 0..480 {
        sim.step().unwrap();
    }
    let pos = joint_position(sim.as_ref(), "/World/Turn");
    println!("position drive: {pos:.5} rad after 2 s (target 1.0)");
    assert!((pos - 1.0).abs() < 0.01, "joint at {pos}");
    // The observed angle agrees with the body's own orientation (rotation about +Z).
    let o = sim.observation("/World/Arm").unwrap().bodies[0].orientation;
    let yaw = 2.0 * o[2].atan2(o[3]);
    assert!((yaw - pos).abs() < 1e-3, "yaw {yaw} vs joint {pos}");
}

#[test]
fn velocity_and_effort_commands_move_the_joint() {
    // A velocity command holds the joint speed.
    let mut sim = load(&turntable(true));
    sim.set_joint_command("/World/Turn", JointCommand::Velocity(0.5))
        .unwrap();
    for _ in 0..240 {
        sim.step().unwrap();
    }
    let vel = sim.observation("/World/Turn").unwrap().joints[0].velocity;
    println!("velocity command: {vel:.4} rad/s (target 0.5)");
    assert!((vel - 0.5).abs() < 0.01, "joint speed {vel}");

    // Without a scene drive, a position command uses the default drive.
    let mut sim = load(&turntable(false));
    sim.set_joint_command("/World/Turn", JointCommand::Position(-0.5))
        .unwrap();
    for _ in 0..480 {
        sim.step().unwrap();
    }
    let pos = joint_position(sim.as_ref(), "/World/Turn");
    println!("default drive: {pos:.5} rad (target -0.5)");
    assert!((pos + 0.5).abs() < 0.01, "joint at {pos}");

    // An effort bypasses the drive: a constant torque τ on inertia I gives θ = τ t² / (2 I).
    let mut sim = load(&turntable(true));
    let torque = 0.2;
    sim.set_joint_command("/World/Turn", JointCommand::Effort(torque))
        .unwrap();
    for _ in 0..120 {
        sim.step().unwrap();
    }
    let pos = joint_position(sim.as_ref(), "/World/Turn");
    // Box 0.5 × 0.1 × 0.1, 1 kg, turning about its end: I = m (a² + b²)/12 + m (a/2)².
    let inertia = (0.5f64.powi(2) + 0.1f64.powi(2)) / 12.0 + 0.25f64.powi(2);
    let expected = torque * 0.25 / (2.0 * inertia);
    println!("effort: {pos:.5} rad after 0.5 s, expected {expected:.5}");
    assert!((pos - expected).abs() / expected < 0.02, "joint at {pos}");
}

// ---------------------------------------------------------------------------------------------
// (4) Fork determinism.
// ---------------------------------------------------------------------------------------------

#[test]
fn fork_continues_bit_for_bit_and_diverges_with_other_commands() {
    let s = pile_and_arm();
    let mut original = RapierSimulation::load(&s, &EngineConfig::default()).unwrap();
    for step in 0..100 {
        arm_commands(&mut original, step, 1.0);
        original.step().unwrap();
    }
    let contacts_at_fork = original.active_contact_pairs();
    let mut fork = original.fork().unwrap();
    let mut other = original.fork().unwrap();
    assert_bitwise_equal(&original, fork.as_ref(), 100, "fresh fork");

    for step in 100..400 {
        arm_commands(&mut original, step, 1.0);
        arm_commands(fork.as_mut(), step, 1.0);
        arm_commands(other.as_mut(), step, -1.0);
        original.step().unwrap();
        fork.step().unwrap();
        other.step().unwrap();
        assert_bitwise_equal(&original, fork.as_ref(), step + 1, "fork");
        assert!(
            original.state().unwrap() == fork.state().unwrap(),
            "fork: states differ at step {}",
            step + 1
        );
    }
    println!(
        "fork: {contacts_at_fork} active contact pairs at the fork, {} at the end",
        original.active_contact_pairs()
    );
    assert!(contacts_at_fork > 3, "the pile must be in contact");
    assert_eq!(fork.step_count(), 400);
    // The states agree byte for byte too.
    assert_eq!(original.state().unwrap(), fork.state().unwrap());
    // Other commands, other motion.
    let (a, b) = (
        original.observation("/").unwrap(),
        other.observation("/").unwrap(),
    );
    assert_ne!(bits(&a), bits(&b));
    let elbow = |o: &Observation| o.joints[1].position;
    assert!(
        (elbow(&a) - elbow(&b)).abs() > 1e-3,
        "the arms should differ"
    );
}

// ---------------------------------------------------------------------------------------------
// (5) State round trip into a freshly loaded simulation.
// ---------------------------------------------------------------------------------------------

#[test]
fn restored_state_continues_bit_for_bit() {
    let s = pile_and_arm();
    let mut original = RapierSimulation::load(&s, &EngineConfig::default()).unwrap();
    for step in 0..100 {
        arm_commands(&mut original, step, 1.0);
        original.step().unwrap();
    }
    let bytes = original.state().unwrap().to_bytes();
    let state = SimState::from_bytes(&bytes).unwrap();
    assert_eq!(state.step, 100);

    let mut restored = RapierSimulation::load(&s, &EngineConfig::default()).unwrap();
    restored.set_state(&state).unwrap();
    assert_eq!(restored.step_count(), 100);
    assert_eq!(restored.time().to_bits(), original.time().to_bits());
    assert_bitwise_equal(&original, &restored, 100, "restore");
    assert!(restored.active_contact_pairs() > 3);

    // 1200 steps (5 s): the pile lands, settles and falls asleep while the arm keeps moving.
    // Besides every observed value, the states themselves (the whole serialized world)
    // must stay byte-identical at every step.
    let mut min_contacts = usize::MAX;
    for step in 100..1300 {
        arm_commands(&mut original, step, 1.0);
        arm_commands(&mut restored, step, 1.0);
        original.step().unwrap();
        restored.step().unwrap();
        assert_bitwise_equal(&original, &restored, step + 1, "restore");
        assert!(
            original.state().unwrap() == restored.state().unwrap(),
            "states differ at step {}",
            step + 1
        );
        min_contacts = min_contacts.min(original.active_contact_pairs());
    }
    let sleeping = original.sleeping_bodies();
    println!(
        "restore: at least {min_contacts} active contact pairs throughout, {sleeping} bodies asleep at the end"
    );
    assert!(min_contacts > 3, "contacts active throughout");
    assert!(
        sleeping >= 5,
        "the pile should have fallen asleep ({sleeping})"
    );
    assert_eq!(sleeping, restored.sleeping_bodies());
    // Scene queries agree too.
    let params = RenderParams::default();
    assert_eq!(
        original.render("/", &params).unwrap(),
        restored.render("/", &params).unwrap()
    );
}

#[test]
fn restore_is_exact_at_awkward_moments() {
    let s = pile_and_arm();
    let run = |sim: &mut dyn Simulation, from: u64, to: u64| {
        for step in from..to {
            arm_commands(sim, step, 1.0);
            sim.step().unwrap();
        }
    };
    let check = |a: &mut dyn Simulation, b: &mut dyn Simulation, from: u64, what: &str| {
        for step in from..from + 200 {
            arm_commands(a, step, 1.0);
            arm_commands(b, step, 1.0);
            a.step().unwrap();
            b.step().unwrap();
            assert_bitwise_equal(a, b, step + 1, what);
        }
        assert!(
            a.state().unwrap() == b.state().unwrap(),
            "{what}: states differ"
        );
    };

    // Right after loading, before any step.
    let mut a = load(&s);
    let mut b = load(&s);
    b.set_state(&a.state().unwrap()).unwrap();
    check(a.as_mut(), b.as_mut(), 0, "state at step 0");

    // Between a command and the step it applies to (the joint was just modified and its
    // bodies queued for wake-up), with an effort in force.
    let mut a = load(&s);
    run(a.as_mut(), 0, 150);
    a.set_joint_command("/World/Arm/Elbow", JointCommand::Effort(0.5))
        .unwrap();
    a.set_joint_command("/World/Arm/Shoulder", JointCommand::Velocity(-0.7))
        .unwrap();
    let mid = a.state().unwrap();
    let mut b = load(&s);
    b.set_state(&mid).unwrap();
    let mut f = a.fork().unwrap();
    a.step().unwrap();
    b.step().unwrap();
    f.step().unwrap();
    assert_bitwise_equal(a.as_ref(), b.as_ref(), 151, "mid-command state");
    assert_bitwise_equal(a.as_ref(), f.as_ref(), 151, "mid-command fork");
    for step in 151..351 {
        for sim in [&mut a, &mut b, &mut f] {
            arm_commands(sim.as_mut(), step, 1.0);
            sim.step().unwrap();
        }
        assert_bitwise_equal(a.as_ref(), b.as_ref(), step + 1, "mid-command state");
        assert_bitwise_equal(a.as_ref(), f.as_ref(), step + 1, "mid-command fork");
    }
    assert!(a.state().unwrap() == b.state().unwrap());
    assert!(a.state().unwrap() == f.state().unwrap());

    // A fork of a restored simulation, and a restore of a fork.
    let fork = b.fork().unwrap();
    let mut c = load(&s);
    c.set_state(&fork.state().unwrap()).unwrap();
    check(
        a.as_mut(),
        c.as_mut(),
        351,
        "restore of a fork of a restore",
    );

    // The state carries the stepping: a state of a 2-substep simulation makes a simulation
    // loaded with 1 substep continue as the 2-substep one.
    let two = EngineConfig {
        substeps: 2,
        ..EngineConfig::default()
    };
    let mut a = RapierEngine.load_scene(&s, &two).unwrap();
    run(a.as_mut(), 0, 60);
    let mut b = load(&s);
    b.set_state(&a.state().unwrap()).unwrap();
    check(a.as_mut(), b.as_mut(), 60, "substeps from the state");
}

#[test]
fn state_size_and_timing() {
    let s = pile_and_arm();
    let mut sim = RapierSimulation::load(&s, &EngineConfig::default()).unwrap();
    for step in 0..100 {
        arm_commands(&mut sim, step, 1.0);
        sim.step().unwrap();
    }
    let runs = 50;
    let start = Instant::now();
    let mut size = 0;
    for _ in 0..runs {
        size = sim.state().unwrap().data.len();
    }
    let state_us = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
    let state = sim.state().unwrap();
    let start = Instant::now();
    for _ in 0..runs {
        let mut fresh = load(&s);
        fresh.set_state(&state).unwrap();
    }
    let restore_us = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
    let start = Instant::now();
    for _ in 0..runs {
        let fork = sim.fork().unwrap();
        drop(fork);
    }
    let fork_us = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
    let start = Instant::now();
    for _ in 0..runs {
        sim.step().unwrap();
    }
    let step_us = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
    println!(
        "{} bodies, {} joints: state {size} bytes, state() {state_us:.0} µs, \
         load+set_state {restore_us:.0} µs, fork() {fork_us:.0} µs, step() {step_us:.0} µs",
        s.bodies.len(),
        s.joints.len()
    );
    assert!(size > 0);
}

// ---------------------------------------------------------------------------------------------
// (6) Refused states.
// ---------------------------------------------------------------------------------------------

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn assert_mismatch(result: Result<(), EngineError>, what: &str) {
    match result {
        Err(EngineError::StateMismatch(message)) => println!("{what}: {message}"),
        other => panic!("{what}: expected StateMismatch, got {other:?}"),
    }
}

#[test]
fn foreign_or_corrupt_states_are_refused() {
    let s = pile_and_arm();
    let mut sim = load(&s);
    for step in 0..20 {
        arm_commands(sim.as_mut(), step, 1.0);
        sim.step().unwrap();
    }
    let good = sim.state().unwrap();
    let before = bits(&sim.observation("/").unwrap());

    // Another scene.
    let mut other_scene = load(&turntable(true));
    assert_mismatch(other_scene.set_state(&good), "other scene");
    let other_state = other_scene.state().unwrap();
    assert_mismatch(sim.set_state(&other_state), "other scene's state");

    // Another engine, another format.
    let mut wrong = good.clone();
    wrong.engine = EngineKind::Mujoco;
    assert_mismatch(sim.set_state(&wrong), "other engine");
    let mut wrong = good.clone();
    wrong.format += 1;
    assert_mismatch(sim.set_state(&wrong), "other format");

    // Corrupted bytes: every position of a sample, flipped.
    let len = good.data.len();
    for i in (0..len).step_by(len / 97 + 1).chain([0, 7, 8, len - 1]) {
        let mut bad = good.clone();
        bad.data[i] ^= 0x5a;
        assert!(matches!(
            sim.set_state(&bad),
            Err(EngineError::StateMismatch(_))
        ));
    }
    // Truncated, empty, extended.
    let mut bad = good.clone();
    bad.data.truncate(len / 2);
    assert_mismatch(sim.set_state(&bad), "truncated");
    let mut bad = good.clone();
    bad.data.clear();
    assert_mismatch(sim.set_state(&bad), "empty");
    let mut bad = good.clone();
    bad.data.push(0);
    assert_mismatch(sim.set_state(&bad), "extended");

    // Garbage with a valid checksum reaches the decoder, which must refuse it cleanly.
    for seed in 0..64u64 {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let garbage: Vec<u8> = (0..(seed as usize * 37 + 5))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut bad = good.clone();
        bad.data = fnv1a(&garbage).to_le_bytes().to_vec();
        bad.data.extend_from_slice(&garbage);
        assert!(matches!(
            sim.set_state(&bad),
            Err(EngineError::StateMismatch(_))
        ));
    }
    // The payload of a good state, cut short but re-checksummed.
    let mut bad = good.clone();
    let payload = &good.data[8..good.data.len() - 40];
    bad.data = fnv1a(payload).to_le_bytes().to_vec();
    bad.data.extend_from_slice(payload);
    assert_mismatch(sim.set_state(&bad), "short payload");
    // A header that disagrees with its data.
    let mut bad = good.clone();
    bad.step += 1;
    assert_mismatch(sim.set_state(&bad), "edited header");

    // Checkpoint files: garbage is an error, not a panic.
    assert!(SimState::from_bytes(&[1, 2, 3]).is_err());
    assert!(SimState::from_bytes(&good.to_bytes()[..50]).is_err());

    // Nothing of the refused states leaked in.
    assert_eq!(bits(&sim.observation("/").unwrap()), before);
    sim.step().unwrap();
}

// ---------------------------------------------------------------------------------------------
// (7) Unknown paths, (9) invalid values.
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_paths_are_reported() {
    let mut sim = load(&pile_and_arm());
    let unknown = |r: Result<(), EngineError>| matches!(r, Err(EngineError::UnknownPath { .. }));
    assert!(unknown(sim.set_joint_command(
        "/World/Arm/Wrist",
        JointCommand::Position(0.0)
    )));
    // A body is not a joint.
    assert!(unknown(sim.set_joint_command(
        "/World/Arm/Link1",
        JointCommand::Position(0.0)
    )));
    assert!(matches!(
        sim.observation("/World/Nothing"),
        Err(EngineError::UnknownPath { .. })
    ));
    assert!(matches!(
        sim.observation(""),
        Err(EngineError::UnknownPath { .. })
    ));
    assert!(matches!(
        sim.render("/World/NoCamera", &RenderParams::default()),
        Err(EngineError::UnknownPath { .. })
    ));

    // What exists is observed: one body, one joint, everything.
    let obs = sim.observation("/World/Box_0_0").unwrap();
    assert_eq!((obs.bodies.len(), obs.joints.len()), (1, 0));
    let obs = sim.observation("/World/Arm/Elbow").unwrap();
    assert_eq!((obs.bodies.len(), obs.joints.len()), (0, 1));
    let obs = sim.observation("/").unwrap();
    // Every non-static body (9 boxes, 2 links; not the ground) and both joints.
    assert_eq!((obs.bodies.len(), obs.joints.len()), (11, 2));
    assert!(obs.bodies.iter().all(|b| b.path != "/World/Ground"));
}

#[test]
fn invalid_command_values_are_refused() {
    let mut sim = load(&pile_and_arm());
    let before = bits(&sim.observation("/").unwrap());
    for cmd in [
        JointCommand::Position(f64::NAN),
        JointCommand::Velocity(f64::NAN),
        JointCommand::Effort(f64::NAN),
        JointCommand::Position(f64::INFINITY),
        JointCommand::Effort(f64::NEG_INFINITY),
        JointCommand::Effort(1e300),
    ] {
        match sim.set_joint_command("/World/Arm/Shoulder", cmd) {
            Err(EngineError::Invalid { .. }) => {}
            other => panic!("{cmd:?}: expected Invalid, got {other:?}"),
        }
    }
    sim.step().unwrap();
    assert_ne!(bits(&sim.observation("/").unwrap()), before);

    // A fixed joint takes no commands.
    let mut s = turntable(false);
    s.joints[0].kind = JointKind::Fixed;
    let mut fixed = load(&s);
    assert!(matches!(
        fixed.set_joint_command("/World/Turn", JointCommand::Position(0.1)),
        Err(EngineError::Invalid { .. })
    ));
    for _ in 0..240 {
        fixed.step().unwrap();
    }
    let arm = &fixed.observation("/World/Arm").unwrap().bodies[0];
    assert!(
        (arm.position[2] - 1.0).abs() < 1e-3,
        "fixed joint holds the arm"
    );
}

#[test]
fn invalid_configs_and_scenes_are_refused() {
    let s = turntable(true);
    let bad_configs = [
        EngineConfig {
            step_hz: 0.0,
            ..EngineConfig::default()
        },
        EngineConfig {
            step_hz: f64::NAN,
            ..EngineConfig::default()
        },
        EngineConfig {
            step_hz: f64::INFINITY,
            ..EngineConfig::default()
        },
        EngineConfig {
            substeps: 0,
            ..EngineConfig::default()
        },
        EngineConfig {
            solver_iterations: Some(0),
            ..EngineConfig::default()
        },
        EngineConfig {
            gravity: Some([0.0, f64::NAN, 0.0]),
            ..EngineConfig::default()
        },
    ];
    for config in bad_configs {
        assert!(
            matches!(
                RapierEngine.load_scene(&s, &config),
                Err(EngineError::Invalid { .. })
            ),
            "{config:?} accepted"
        );
    }

    let mut nan_pose = turntable(true);
    nan_pose.bodies[0].pose.translation[1] = f64::NAN;
    assert!(
        RapierEngine
            .load_scene(&nan_pose, &EngineConfig::default())
            .is_err()
    );
    let mut bad_quat = turntable(true);
    bad_quat.bodies[0].pose.rotation = [0.0, 0.0, 0.0, 2.0];
    assert!(
        RapierEngine
            .load_scene(&bad_quat, &EngineConfig::default())
            .is_err()
    );
    let mut negative = turntable(true);
    negative.bodies[0].colliders[0].shape = Shape::Sphere { radius: -1.0 };
    assert!(
        RapierEngine
            .load_scene(&negative, &EngineConfig::default())
            .is_err()
    );
    let mut dangling = turntable(true);
    dangling.joints[0].body1 = Some("/World/Missing".to_string());
    assert!(
        RapierEngine
            .load_scene(&dangling, &EngineConfig::default())
            .is_err()
    );
    let mut massless = turntable(true);
    massless.bodies[0].colliders.clear();
    massless.bodies[0].mass = MassProperties::default();
    assert!(
        RapierEngine
            .load_scene(&massless, &EngineConfig::default())
            .is_err()
    );
}

#[test]
fn substeps_and_gravity_config_are_used() {
    // Gravity from the config overrides the scene's; substeps keep the step length.
    let s = scene(
        vec![cuboid(
            "/World/Box",
            BodyKind::Dynamic,
            [0.0, 0.0, 10.0],
            [0.1; 3],
            1.0,
        )],
        vec![],
    );
    let config = EngineConfig {
        step_hz: 100.0,
        substeps: 4,
        gravity: Some([0.0, -2.0, 0.0]),
        ..EngineConfig::default()
    };
    let mut sim = RapierEngine.load_scene(&s, &config).unwrap();
    for _ in 0..100 {
        sim.step().unwrap();
    }
    assert!((sim.time() - 1.0).abs() < 1e-9);
    let b = &sim.observation("/World/Box").unwrap().bodies[0];
    assert!(
        (b.linear_velocity[1] + 2.0).abs() < 1e-3,
        "{:?}",
        b.linear_velocity
    );
    assert!((b.position[1] + 1.0).abs() < 0.01, "{:?}", b.position);
    assert!((b.position[2] - 10.0).abs() < 1e-6);
}

#[test]
fn mass_properties_follow_the_scene() {
    // Same torque, same box: the explicit mass doubles the angular acceleration's
    // denominator; an explicit inertia replaces it.
    let run = |mass: MassProperties| {
        let mut s = turntable(false);
        s.bodies[0].mass = mass;
        let mut sim = load(&s);
        sim.set_joint_command("/World/Turn", JointCommand::Effort(0.1))
            .unwrap();
        for _ in 0..60 {
            sim.step().unwrap();
        }
        joint_position(sim.as_ref(), "/World/Turn")
    };
    let one_kg = run(MassProperties {
        mass: Some(1.0),
        ..MassProperties::default()
    });
    let two_kg = run(MassProperties {
        mass: Some(2.0),
        ..MassProperties::default()
    });
    assert!((one_kg / two_kg - 2.0).abs() < 0.02, "{one_kg} vs {two_kg}");
    // Density 1000 kg/m³ by default: 0.5 × 0.1 × 0.1 m³ = 5 kg.
    let default_density = run(MassProperties::default());
    assert!(
        (one_kg / default_density - 5.0).abs() < 0.05,
        "{default_density}"
    );
    let explicit = run(MassProperties {
        mass: Some(1.0),
        center_of_mass: Some([0.0; 3]),
        diagonal_inertia: Some([0.01, 0.01, 0.01]),
        ..MassProperties::default()
    });
    // I about the pivot: 0.01 + m (0.25)² = 0.0725 versus the box's 0.084167.
    let ratio = explicit / one_kg;
    assert!((ratio - 0.084167 / 0.0725).abs() < 0.02, "ratio {ratio}");
}

// ---------------------------------------------------------------------------------------------
// (8) Rendering.
// ---------------------------------------------------------------------------------------------

#[test]
fn render_sees_the_box_at_its_distance() {
    let mut s = scene(
        vec![
            ground(),
            cuboid(
                "/World/Box",
                BodyKind::Static,
                [0.0, 0.0, 1.0],
                [0.5; 3],
                1.0,
            ),
        ],
        vec![],
    );
    // Looks along +Y from 5 m away: local -Z → world +Y, local +Y → world +Z.
    let h = std::f64::consts::FRAC_1_SQRT_2;
    s.cameras.push(Camera {
        path: "/World/Camera".to_string(),
        pose: Pose {
            translation: [0.0, -5.0, 1.0],
            rotation: [h, 0.0, 0.0, h],
        },
        fov_deg: 60.0,
        near: 0.01,
        far: 100.0,
    });
    let sim = load(&s);
    let params = RenderParams {
        width: 41,
        height: 31,
        fov_deg: 60.0,
        eye: [0.0, -5.0, 1.0],
        look_at: [0.0, 0.0, 1.0],
        up: [0.0, 0.0, 1.0],
        max_depth: 50.0,
    };
    for camera in ["/World/Camera", "/"] {
        let image = sim.render(camera, &params).unwrap();
        assert_eq!(image.depth.len(), 41 * 31);
        assert_eq!(image.instance_id.len(), 41 * 31);
        let at = |col: u32, row: u32| (row * image.width + col) as usize;
        let centre = at(20, 15);
        let d = image.depth[centre];
        println!("render from {camera}: centre depth {d}");
        assert!((d - 4.5).abs() < 1e-4, "centre depth {d}");
        let id = image.instance_id[centre] as usize;
        assert_eq!(image.instance_paths[id], "/World/Box");
        // The bottom centre sees the ground 30° down: 1 m / sin(30°) (minus half a pixel).
        let bottom = at(20, 30);
        assert_eq!(
            image.instance_paths[image.instance_id[bottom] as usize],
            "/World/Ground"
        );
        assert!(
            (image.depth[bottom] - 2.0).abs() < 0.1,
            "{}",
            image.depth[bottom]
        );
        // The top centre sees nothing.
        let top = at(20, 0);
        assert_eq!(image.instance_id[top], u32::MAX);
        assert_eq!(image.depth[top], 50.0);
    }
    assert!(matches!(
        sim.render(
            "/",
            &RenderParams {
                width: 0,
                ..params.clone()
            }
        ),
        Err(EngineError::Invalid { .. })
    ));
}

#[test]
fn render_follows_moving_bodies() {
    let s = scene(
        vec![
            ground(),
            cuboid(
                "/World/Box",
                BodyKind::Dynamic,
                [0.0, 0.0, 2.0],
                [0.2; 3],
                1.0,
            ),
        ],
        vec![],
    );
    let mut sim = load(&s);
    // Straight down from above: the top face of the box.
    let params = RenderParams {
        width: 11,
        height: 11,
        fov_deg: 20.0,
        eye: [0.0, 0.0, 5.0],
        look_at: [0.0, 0.0, 0.0],
        up: [0.0, 1.0, 0.0],
        max_depth: 50.0,
    };
    let before = sim.render("", &params).unwrap();
    assert!(
        (before.depth[60] - 2.8).abs() < 1e-4,
        "{}",
        before.depth[60]
    );
    for _ in 0..120 {
        sim.step().unwrap();
    }
    let z = sim.observation("/World/Box").unwrap().bodies[0].position[2];
    let after = sim.render("", &params).unwrap();
    let expected = (5.0 - (z + 0.2)) as f32;
    assert!(
        (after.depth[60] - expected).abs() < 1e-3,
        "{} vs {expected}",
        after.depth[60]
    );
    assert_eq!(
        after.instance_paths[after.instance_id[60] as usize],
        "/World/Box"
    );
}

// ---------------------------------------------------------------------------------------------
// Divergence, capabilities.
// ---------------------------------------------------------------------------------------------

#[test]
fn capabilities_are_reported() {
    let caps = RapierEngine.capabilities();
    assert_eq!(RapierEngine.kind(), EngineKind::Rapier3d);
    assert!(caps.bitwise_restore);
    assert_eq!(caps.render_outputs, vec!["depth", "instance_id"]);
    assert!(!caps.gpu_required);
    let sim = load(&turntable(true));
    assert_eq!(sim.kind(), EngineKind::Rapier3d);
    sim.close().unwrap();
}

#[test]
fn divergence_is_reported() {
    // A light body pushed by the largest effort f32 allows leaves the finite range.
    let mut s = turntable(false);
    s.bodies[0].mass.mass = Some(1e-6);
    let mut sim = load(&s);
    sim.set_joint_command("/World/Turn", JointCommand::Effort(3.0e38))
        .unwrap();
    let mut result = Ok(());
    for _ in 0..50 {
        result = sim.step();
        if result.is_err() {
            break;
        }
    }
    match result {
        Err(EngineError::Diverged(message)) => {
            println!("diverged: {message}");
            // And it stays refused.
            assert!(matches!(sim.step(), Err(EngineError::Diverged(_))));
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
}

/// Two boxes dropped onto each other: a collision group that filters itself
/// lets its members pass through each other; without it they stack.
#[test]
fn collision_groups_filter_contacts() {
    let stacked = |grouped: bool| {
        let mut upper = cuboid(
            "/World/Upper",
            BodyKind::Dynamic,
            [0.0, 0.0, 1.0],
            [0.1; 3],
            1.0,
        );
        let mut lower = cuboid(
            "/World/Lower",
            BodyKind::Dynamic,
            [0.0, 0.0, 0.1],
            [0.1; 3],
            1.0,
        );
        let mut s = scene(vec![ground(), lower.clone(), upper.clone()], vec![]);
        if grouped {
            let group = "/World/NoSelf".to_string();
            upper.colliders[0].groups = vec![group.clone()];
            lower.colliders[0].groups = vec![group.clone()];
            s.bodies = vec![ground(), lower, upper];
            s.collision_groups = vec![hanzo_twin_engines::scene::CollisionGroup {
                path: group.clone(),
                filtered: vec![group],
                invert: false,
            }];
        }
        let mut sim = load(&s);
        for _ in 0..240 {
            sim.step().expect("step");
        }
        let obs = sim.observation("/").expect("observation");
        body(&obs, "/World/Upper").position[2]
    };
    let apart = stacked(false);
    let through = stacked(true);
    assert!((apart - 0.3).abs() < 0.02, "stacked box at {apart}");
    // Filtered from its neighbour, the upper box falls to the ground beside it.
    assert!((through - 0.1).abs() < 0.02, "filtered box at {through}");
}

#[test]
fn tuned_parameters_change_the_physics_and_travel_with_forks_and_states() {
    let mut sim = load(&turntable(true));
    assert_eq!(sim.parameter("/World/Turn", "stiffness").unwrap(), 20.0);
    assert_eq!(sim.parameter("/World/Turn", "damping").unwrap(), 4.0);
    let mass = sim.parameter("/World/Arm", "mass").unwrap();
    assert!((mass - 1.0).abs() < 1e-6, "mass {mass}");

    // The same command, with ten times the damping: the joint lags.
    let mut damped = sim.fork().unwrap();
    damped
        .set_parameter("/World/Turn", "damping", 40.0)
        .unwrap();
    assert_eq!(damped.parameter("/World/Turn", "damping").unwrap(), 40.0);
    assert_eq!(damped.parameter("/World/Turn", "stiffness").unwrap(), 20.0);
    for s in [&mut sim, &mut damped] {
        s.set_joint_command("/World/Turn", JointCommand::Position(1.0))
            .unwrap();
        for _ in 0..60 {
            s.step().unwrap();
        }
    }
    let (free, lagging) = (
        joint_position(sim.as_ref(), "/World/Turn"),
        joint_position(damped.as_ref(), "/World/Turn"),
    );
    assert!(lagging < free * 0.8, "damped {lagging} vs {free}");

    // A tuning made after the command holds at once; forks and states keep it.
    damped.set_parameter("/World/Turn", "damping", 8.0).unwrap();
    damped.set_parameter("/World/Arm", "mass", 2.0).unwrap();
    damped.set_parameter("/World/Arm", "friction", 0.3).unwrap();
    let state = damped.state().unwrap();
    let mut restored = load(&turntable(true));
    restored.set_state(&state).unwrap();
    let copy = damped.fork().unwrap();
    for s in [&restored, &copy] {
        assert_eq!(s.parameter("/World/Turn", "damping").unwrap(), 8.0);
        assert!((s.parameter("/World/Arm", "mass").unwrap() - 2.0).abs() < 1e-6);
        assert!((s.parameter("/World/Arm", "friction").unwrap() - 0.3).abs() < 1e-6);
    }
    for s in [&mut damped, &mut restored] {
        for _ in 0..30 {
            s.step().unwrap();
        }
    }
    assert_eq!(
        joint_position(damped.as_ref(), "/World/Turn").to_bits(),
        joint_position(restored.as_ref(), "/World/Turn").to_bits()
    );

    // Bad names and values are refused, naming the field.
    for (prim, name, value) in [
        ("/World/Turn", "springiness", 1.0),
        ("/World/Turn", "damping", f64::NAN),
        ("/World/Turn", "damping", -1.0),
        ("/World/Arm", "mass", 0.0),
    ] {
        match sim.set_parameter(prim, name, value) {
            Err(EngineError::Invalid { field, .. }) => assert_eq!(field, format!("{prim}.{name}")),
            other => panic!("{prim}.{name} = {value}: {other:?}"),
        }
    }
    assert!(matches!(
        sim.set_parameter("/World/Nope", "friction", 1.0),
        Err(EngineError::UnknownPath { .. })
    ));
}

#[test]
fn a_joint_set_to_a_measured_state_moves_what_it_carries_and_runs_on_from_there() {
    let mut sim = load(&turntable(true));
    sim.set_joint_command("/World/Turn", JointCommand::Position(0.0))
        .unwrap();
    sim.set_joint_state("/World/Turn", 1.0, Some(0.5)).unwrap();
    let j = sim.observation("/World/Turn").unwrap().joints[0].clone();
    assert!((j.position - 1.0).abs() < 1e-5, "position {}", j.position);
    assert!((j.velocity - 0.5).abs() < 1e-4, "velocity {}", j.velocity);
    // The arm turned with it, about the joint's anchor.
    let arm = sim.observation("/World/Arm").unwrap().bodies[0].clone();
    let yaw = 2.0 * arm.orientation[2].atan2(arm.orientation[3]);
    assert!((yaw - 1.0).abs() < 1e-5, "yaw {yaw}");
    let expected = [0.25 * 1.0f64.cos(), 0.25 * 1.0f64.sin(), 1.0];
    for (a, e) in arm.position.iter().zip(expected) {
        assert!((a - e).abs() < 1e-5, "{:?} vs {expected:?}", arm.position);
    }
    // The drive then brings it back to its target, from there.
    for _ in 0..480 {
        sim.step().unwrap();
    }
    let pos = joint_position(sim.as_ref(), "/World/Turn");
    assert!(pos.abs() < 0.02, "back at {pos}");

    assert!(matches!(
        sim.set_joint_state("/World/Turn", f64::NAN, None),
        Err(EngineError::Invalid { .. })
    ));
    assert!(matches!(
        sim.set_joint_state("/World/Nope", 0.0, None),
        Err(EngineError::UnknownPath { .. })
    ));
    sim.set_body_pose("/World/Arm", [0.0, 0.25, 1.0], None)
        .unwrap();
    let arm = sim.observation("/World/Arm").unwrap().bodies[0].clone();
    assert!((arm.position[1] - 0.25).abs() < 1e-6, "{:?}", arm.position);
}

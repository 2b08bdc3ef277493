//! MJCF models loaded whole by MuJoCo: Gymnasium's own ant.xml and
//! humanoid.xml load, step, take commands through their actuators, and fork
//! bit for bit.
#![cfg(feature = "mujoco")]

use hanzo_twin_engines::mujoco::MujocoEngine;
use hanzo_twin_engines::scene::read_scene_file;
use hanzo_twin_engines::{Engine, EngineConfig, EngineError, JointCommand, Simulation};
use std::path::PathBuf;

/// Gymnasium's MuJoCo assets, from the test Python (scripts/test.sh installs
/// gymnasium into ./.venv and sets HANZO_TWIN_TEST_PYTHON).
fn gymnasium_assets() -> Option<PathBuf> {
    let Ok(python) = std::env::var("HANZO_TWIN_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: HANZO_TWIN_TEST_PYTHON is not set; run scripts/test.sh, which installs gymnasium"
        );
        return None;
    };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import gymnasium.envs.mujoco as m, os; print(os.path.join(os.path.dirname(m.__file__), 'assets'))",
        ])
        .output()
        .expect("the test Python runs");
    assert!(out.status.success(), "gymnasium is not importable: {out:?}");
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Gymnasium's Ant-v5 timing: MuJoCo's 0.01 s step, five per environment step.
fn ant_config() -> EngineConfig {
    EngineConfig {
        step_hz: 20.0,
        substeps: 5,
        ..EngineConfig::default()
    }
}

fn load(file: &std::path::Path, config: &EngineConfig) -> Box<dyn Simulation> {
    let scene = read_scene_file(file).expect("the MJCF file reads");
    MujocoEngine
        .load_scene(&scene, config)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

const ANT_MOTORS: [&str; 8] = [
    "/hip_4", "/ankle_4", "/hip_1", "/ankle_1", "/hip_2", "/ankle_2", "/hip_3", "/ankle_3",
];

fn drive_ant(sim: &mut dyn Simulation, step: u64, sign: f64) {
    for (i, motor) in ANT_MOTORS.iter().enumerate() {
        let phase = step as f64 * 0.3 + i as f64;
        sim.set_joint_command(motor, JointCommand::Effort(sign * phase.sin()))
            .expect("motor command");
    }
}

#[test]
fn gymnasium_ant_loads_steps_and_forks_bit_for_bit() {
    let Some(assets) = gymnasium_assets() else {
        return;
    };
    let file = assets.join("ant.xml");
    let mut ant = load(&file, &ant_config());
    let obs = ant.observation("/").unwrap();
    let names: Vec<&str> = obs.bodies.iter().map(|b| b.path.as_str()).collect();
    assert!(names.contains(&"/torso"), "bodies {names:?}");
    assert_eq!(obs.joints.len(), 8, "the ant's eight hinge joints");
    let start = obs.bodies[0].position;
    for step in 0..100 {
        drive_ant(ant.as_mut(), step, 1.0);
        ant.step().unwrap();
    }
    assert!((ant.time() - 5.0).abs() < 1e-9, "100 steps of 0.05 s");
    let moved = ant.observation("/torso").unwrap().bodies[0].position;
    assert_ne!(start, moved, "the ant's torso moved");

    let mut fork = ant.fork().unwrap();
    let saved = ant.state().unwrap();
    let mut restored = load(&file, &ant_config());
    restored.set_state(&saved).unwrap();
    for step in 100..300 {
        for sim in [&mut ant, &mut fork, &mut restored] {
            drive_ant(sim.as_mut(), step, 1.0);
            sim.step().unwrap();
        }
    }
    let bits = |s: &dyn Simulation| {
        let o = s.observation("/").unwrap();
        let mut v: Vec<u64> = o
            .bodies
            .iter()
            .flat_map(|b| {
                b.position
                    .into_iter()
                    .chain(b.orientation)
                    .chain(b.linear_velocity)
            })
            .map(f64::to_bits)
            .collect();
        v.extend(
            o.joints
                .iter()
                .flat_map(|j| [j.position.to_bits(), j.velocity.to_bits()]),
        );
        v
    };
    assert_eq!(bits(ant.as_ref()), bits(fork.as_ref()), "fork diverged");
    assert_eq!(
        bits(ant.as_ref()),
        bits(restored.as_ref()),
        "restore diverged"
    );
    let mut other = ant.fork().unwrap();
    for step in 300..320 {
        drive_ant(ant.as_mut(), step, 1.0);
        drive_ant(other.as_mut(), step, -1.0);
        ant.step().unwrap();
        other.step().unwrap();
    }
    assert_ne!(bits(ant.as_ref()), bits(other.as_ref()));
    println!(
        "ant: state {} bytes, bitwise over 200 steps",
        saved.data.len()
    );

    // The ant's actuators are motors: they take efforts, and say so otherwise.
    let err = ant
        .set_joint_command("/hip_1", JointCommand::Position(0.2))
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid { message, .. } if message.contains("effort")),
        "{err}"
    );
}

#[test]
fn gymnasium_humanoid_loads_and_steps() {
    let Some(assets) = gymnasium_assets() else {
        return;
    };
    let mut humanoid = load(&assets.join("humanoid.xml"), &ant_config());
    let z0 = humanoid.observation("/torso").unwrap().bodies[0].position[2];
    for _ in 0..40 {
        humanoid.step().unwrap();
    }
    // Uncontrolled, it falls over within two seconds.
    let z = humanoid.observation("/torso").unwrap().bodies[0].position[2];
    println!("humanoid torso from {z0:.3} m to {z:.3} m");
    assert!(z < z0 - 0.3, "torso at {z} from {z0}");
}

#[test]
fn mjcf_options_come_from_engine_config() {
    let Some(assets) = gymnasium_assets() else {
        return;
    };
    let scene = read_scene_file(&assets.join("ant.xml")).unwrap();
    let mut config = ant_config();
    config
        .extensions
        .insert("integrator".into(), serde_json::json!("rk4"));
    config
        .extensions
        .insert("solver".into(), serde_json::json!("cg"));
    MujocoEngine
        .load_scene(&scene, &config)
        .expect("loads with rk4 and cg");
    config
        .extensions
        .insert("mjcf".into(), serde_json::json!("<tendon/>"));
    let Err(EngineError::Invalid { field, .. }) = MujocoEngine.load_scene(&scene, &config) else {
        panic!("mjcf additions to an MJCF file were accepted");
    };
    assert_eq!(field, "engine.config.extensions.mjcf");
    // A broken MJCF file is a clear scene error, not a crash.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.xml");
    std::fs::write(
        &broken,
        "<mujoco><worldbody><body><geom type='box'/></body></worldbody>",
    )
    .unwrap();
    let scene = read_scene_file(&broken).unwrap();
    let err = MujocoEngine
        .load_scene(&scene, &EngineConfig::default())
        .err()
        .expect("a broken model is refused");
    assert!(matches!(err, EngineError::SceneRead { .. }), "{err}");
    println!("broken MJCF: {err}");
}

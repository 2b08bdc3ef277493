//! The infrastructure engine: the shop twin of configs/twins/shop-infra.yaml
//! run through the `Engine`/`Simulation` traits; a saved state and a fork
//! go on exactly as the original does, and what physics alone does is
//! refused with a clear error.

use hanzo_twin_engines::infra::spec::{InfraTwinSpec, TwinSource};
use hanzo_twin_engines::infrastructure::{InfrastructureEngine, scene_of};
use hanzo_twin_engines::{
    Engine, EngineConfig, EngineError, JointCommand, SceneModel, SimState, Simulation,
};
use std::path::Path;

fn shop() -> SceneModel {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/twins");
    let text = std::fs::read_to_string(root.join("shop-infra.yaml")).expect("the shop twin");
    let spec = InfraTwinSpec::parse(&text).expect("a valid definition");
    let manifests = spec.manifests(&root).expect("its manifests");
    let traffic = spec.traffic().expect("constant traffic");
    scene_of(&TwinSource {
        spec,
        manifests,
        traffic,
    })
}

fn config(step_hz: f64) -> EngineConfig {
    EngineConfig {
        step_hz,
        ..EngineConfig::default()
    }
}

fn run(sim: &mut dyn Simulation, steps: u64) {
    for _ in 0..steps {
        sim.step().expect("a step");
    }
}

/// Everything a run measured, to compare two runs exactly.
fn measured(sim: &dyn Simulation) -> String {
    let infra = sim.infrastructure().expect("an infrastructure simulation");
    serde_json::to_string(&(
        infra.report(),
        infra.verdicts(),
        infra.events_handled(),
        sim.time().to_bits(),
        sim.step_count(),
    ))
    .expect("plain data")
}

#[test]
fn a_step_advances_simulated_time_and_runs_the_requests_in_it() {
    let scene = shop();
    let mut sim = InfrastructureEngine
        .load_scene(&scene, &config(2.0))
        .expect("the shop loads");
    run(sim.as_mut(), 120);
    assert_eq!(sim.time(), 60.0);
    assert_eq!(sim.step_count(), 120);
    let report = sim.infrastructure().expect("infrastructure").report();
    let gateway = report
        .services
        .iter()
        .find(|s| s.name == "gateway")
        .expect("the gateway");
    // 150 requests a second for a minute, give or take Poisson's spread.
    assert!(
        (8_000..10_000).contains(&gateway.arrivals),
        "{} gateway arrivals in 60 s at 150/s",
        gateway.arrivals
    );
}

#[test]
fn a_restored_state_and_a_fork_go_on_exactly_as_the_original() {
    let scene = shop();
    let engine = InfrastructureEngine;
    let mut original = engine.load_scene(&scene, &config(1.0)).expect("loads");
    // Into the pod kill at 10 minutes, with requests queued and in flight.
    run(original.as_mut(), 610);
    let saved: SimState = original.state().expect("a state");
    let mut fork = original.fork().expect("a fork");
    let mut restored = engine.load_scene(&scene, &config(1.0)).expect("loads");
    restored.set_state(&saved).expect("restores");
    assert_eq!(measured(restored.as_ref()), measured(original.as_ref()));
    for sim in [&mut original, &mut fork, &mut restored] {
        // Past the partition at 30 minutes.
        run(sim.as_mut(), 1400);
    }
    let want = measured(original.as_ref());
    assert_eq!(measured(fork.as_ref()), want, "the fork diverged");
    assert_eq!(
        measured(restored.as_ref()),
        want,
        "the restored state diverged"
    );
}

#[test]
fn a_state_of_another_topology_or_a_corrupt_one_is_refused() {
    let scene = shop();
    let engine = InfrastructureEngine;
    let mut sim = engine.load_scene(&scene, &config(1.0)).expect("loads");
    run(sim.as_mut(), 5);
    let mut state = sim.state().expect("a state");
    let mut other = scene.clone();
    if let Some(native) = other.native.as_mut() {
        native.text = native.text.replace("\"rps\":150.0", "\"rps\":151.0");
    }
    assert_ne!(other.fingerprint(), scene.fingerprint());
    let mut elsewhere = engine.load_scene(&other, &config(1.0)).expect("loads");
    assert!(matches!(
        elsewhere.set_state(&state),
        Err(EngineError::StateMismatch(_))
    ));
    let last = state.data.len() - 1;
    state.data[last] ^= 0xff;
    assert!(matches!(
        sim.set_state(&state),
        Err(EngineError::StateMismatch(m)) if m.contains("checksum")
    ));
}

#[test]
fn joints_bodies_and_pictures_are_refused_by_name() {
    let mut sim = InfrastructureEngine
        .load_scene(&shop(), &config(1.0))
        .expect("loads");
    let err = sim
        .set_joint_command("/World/Arm/joint", JointCommand::Position(0.1))
        .expect_err("no joints");
    assert!(
        err.to_string().contains("services, not bodies or joints"),
        "{err}"
    );
    assert!(sim.observation("/World/Arm").is_err());
    let whole = sim.observation("/").expect("the whole twin");
    assert!(whole.bodies.is_empty() && whole.joints.is_empty());
    let err = InfrastructureEngine
        .check_config(&config(5000.0))
        .expect_err("too fine");
    assert!(err.to_string().contains("step_hz"), "{err}");
    let physics = SceneModel {
        native: None,
        ..shop()
    };
    let err = InfrastructureEngine
        .load_scene(&physics, &config(1.0))
        .err()
        .expect("not an infrastructure scene");
    assert!(err.to_string().contains("type: infrastructure"), "{err}");
}

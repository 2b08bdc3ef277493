//! Steps per second of every engine built in, on the same scenes with the same
//! engine config, side by side in one run, with each engine's ratio to
//! rapier3d. Two figures per engine: stepping with an observation every 100
//! steps (how fast the physics runs), and an observation after every step (the
//! per-request cost, which PyBullet's worker process pays in a round trip).
//!
//!   cargo bench --features mujoco,pybullet --bench engines
//!
//! Run as a test (`cargo test --benches`), it takes a few steps of each only.

mod common;

use hanzo_twin::engines::{EngineKind, EngineRegistry, Simulation, usd};
use std::time::{Duration, Instant};

/// Steps per second over at least `budget` of wall time.
fn rate(sim: &mut dyn Simulation, observe_every: u64, budget: Duration, min_steps: u64) -> f64 {
    let t0 = Instant::now();
    let mut steps = 0u64;
    while steps < min_steps || t0.elapsed() < budget {
        sim.step().expect("step");
        steps += 1;
        if steps.is_multiple_of(observe_every) {
            std::hint::black_box(sim.observation("/").expect("observation"));
        }
    }
    steps as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let (budget, min_steps) = if benchmarking {
        (Duration::from_secs(2), 200)
    } else {
        (Duration::ZERO, 10)
    };
    let registry = EngineRegistry::with_builtin();
    let engines: Vec<_> = EngineKind::PHYSICS
        .into_iter()
        .filter_map(|k| registry.get(k).ok())
        .collect();
    println!(
        "{:<10} {:<10} {:>16} {:>8} {:>18} {:>8}",
        "scene", "engine", "steps/s (batch)", "ratio", "steps/s (observe)", "ratio"
    );
    for (def_file, scene_file) in common::SAMPLES {
        let scene = usd::load_scene(&common::repo().join("configs/scenes").join(scene_file))
            .expect("scene");
        let config = common::definition(def_file)
            .engine
            .config
            .to_engine_config();
        let mut baseline = None;
        for engine in &engines {
            let mut sim = engine.load_scene(&scene, &config).expect("load");
            // Warm up, then measure both ways on the same simulation.
            rate(sim.as_mut(), 1, Duration::ZERO, min_steps.min(50));
            let batch = rate(sim.as_mut(), 100, budget, min_steps);
            let observed = rate(sim.as_mut(), 1, budget, min_steps);
            let (b0, o0) = *baseline.get_or_insert((batch, observed));
            println!(
                "{:<10} {:<10} {:>16.0} {:>8.2} {:>18.0} {:>8.2}",
                def_file.trim_end_matches(".yaml"),
                engine.kind().as_str(),
                batch,
                batch / b0,
                observed,
                observed / o0
            );
        }
    }
}

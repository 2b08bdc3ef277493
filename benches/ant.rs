//! Ant-v5 environment steps per second: raw MuJoCo stepping of Gymnasium's
//! ant.xml on every core (frame skip 5, no observation or reward: the physical
//! limit here) against the Ant task's batch (`VecEnv`, observations,
//! rewards and terminations included) at N = 2, 8 and 32, in one run, with
//! the ratio to the limit. EnvPool and Gymnasium's vector envs come with the
//! Python package (issue 7).
//!
//!   cargo bench --features mujoco --bench ant
//!
//! It needs Gymnasium's ant.xml: HANZO_TWIN_TEST_PYTHON names a Python with
//! gymnasium (scripts/test.sh sets it). Run as a test, it takes a few steps.

use hanzo_twin::gym::{AntConfig, AntTask, Task, VecEnv, VecEnvConfig, VecOutput};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

fn main() {
    let (_, xml) = match common::gymnasium_ant_xml() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let budget = if benchmarking {
        Duration::from_secs(3)
    } else {
        Duration::ZERO
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let task = AntTask::load(&xml, AntConfig::default()).expect("task");
    let nu = task.action_size();
    let raw = common::raw_ant_limit(&task, budget);
    println!("raw MuJoCo Ant on {cores} cores: {raw:.0} env-steps/s (the limit)");
    let task: Arc<dyn Task> = task;
    for n in [2usize, 8, 32] {
        let mut batch = VecEnv::new(
            &task,
            &VecEnvConfig {
                num_envs: n,
                ..VecEnvConfig::default()
            },
        )
        .expect("batch");
        let mut out = VecOutput::default();
        batch.reset(Some(0), None, &mut out).expect("reset");
        let actions: Vec<f32> = (0..n * nu).map(|i| ((i as f32) * 0.37).sin()).collect();
        let t0 = Instant::now();
        let mut steps = 0u64;
        // Episodes that end start again on the next step (NEXT_STEP autoreset).
        while steps < 20 || t0.elapsed() < budget {
            batch.step(&actions, &mut out).expect("step");
            steps += n as u64;
        }
        let rate = steps as f64 / t0.elapsed().as_secs_f64();
        println!(
            "VecEnv N={n:<2}: {rate:>8.0} env-steps/s, {:.2} of the limit ({} threads)",
            rate / raw,
            batch.threads()
        );
    }
}

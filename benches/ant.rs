//! Ant-v5 environment steps per second: raw MuJoCo stepping of Gymnasium's
//! ant.xml on every core (frame skip 5, no observation or reward: the physical
//! limit here) against the Ant task's batch (`AntBatch`, observations,
//! rewards and terminations included) at N = 2, 8 and 32, in one run, with
//! the ratio to the limit. EnvPool and Gymnasium's vector envs come with the
//! Python package (issue 7).
//!
//!   cargo bench --features mujoco --bench ant
//!
//! It needs Gymnasium's ant.xml: HANZO_TWIN_TEST_PYTHON names a Python with
//! gymnasium (scripts/test.sh sets it). Run as a test, it takes a few steps.

use hanzo_twin::engines::gym::{AntBatch, AntConfig, AntEnv, AntStep, AntTask};
use std::time::{Duration, Instant};

fn main() {
    let Ok(python) = std::env::var("HANZO_TWIN_TEST_PYTHON") else {
        eprintln!("SKIPPED: HANZO_TWIN_TEST_PYTHON is not set; scripts/test.sh sets it");
        return;
    };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import gymnasium.envs.mujoco as m, os; print(os.path.join(os.path.dirname(m.__file__), 'assets', 'ant.xml'))",
        ])
        .output()
        .expect("python runs");
    let xml = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let budget = if benchmarking {
        Duration::from_secs(3)
    } else {
        Duration::ZERO
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());

    // The limit: each core advances its own Ant, five MuJoCo steps per env
    // step, with no observation, reward or reset.
    let task = AntTask::load(&xml, AntConfig::default()).expect("task");
    let (n_obs, nu) = (task.observation_size(), task.action_size());
    let raw = {
        let t0 = Instant::now();
        let steps: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cores)
                .map(|_| {
                    let task = task.clone();
                    s.spawn(move || {
                        let mut env = AntEnv::new(&task);
                        let action = vec![0.0f32; nu];
                        let mut n = 0u64;
                        while n < 20 || t0.elapsed() < budget {
                            env.simulate(&action);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        steps as f64 / t0.elapsed().as_secs_f64()
    };
    println!("raw MuJoCo Ant on {cores} cores: {raw:.0} env-steps/s (the limit)");
    for n in [2usize, 8, 32] {
        let mut batch = AntBatch::new(&task, n, 0);
        let mut obs = vec![0.0; n * n_obs];
        let mut out = vec![AntStep::default(); n];
        batch.reset(Some(0), &mut obs);
        let actions: Vec<f32> = (0..n * nu).map(|i| ((i as f32) * 0.37).sin()).collect();
        let t0 = Instant::now();
        let mut steps = 0u64;
        while steps < 20 || t0.elapsed() < budget {
            batch.step(&actions, &mut obs, &mut out);
            steps += n as u64;
            // Episodes that end start again, as a vector env does.
            for (i, r) in out.iter().enumerate() {
                if (r.terminated || r.truncated)
                    && let Some(env) = batch.env_mut(i)
                {
                    env.reset(None, &mut obs[i * n_obs..(i + 1) * n_obs]);
                }
            }
        }
        let rate = steps as f64 / t0.elapsed().as_secs_f64();
        println!(
            "AntBatch N={n:<2}: {rate:>8.0} env-steps/s, {:.2} of the limit",
            rate / raw
        );
    }
}

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

use hanzo_twin::engines::gym::{AntConfig, AntEnv, AntTask, Task, VecEnv, VecEnvConfig, VecOutput};
use std::sync::Arc;
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
    let nu = task.action_size();
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

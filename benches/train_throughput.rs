//! Training throughput with the learner included (benches/train_throughput.py):
//! Stable-Baselines3 PPO on Ant-v5 over a training job's environments (one
//! natively stepped hanzo_twin batch, as `python -m hanzo_twin.train` builds
//! them) against the same trainer on EnvPool's Ant-v5, side by side in one
//! run, as a ratio.
//!
//!   cargo bench --features mujoco --bench train_throughput
//!
//! Needs the test venv (scripts/test.sh: hanzo_twin, stable-baselines3,
//! envpool). Run as a test, one short pass at 4 environments.

mod common;

fn main() {
    let (python, xml) = match common::gymnasium_ant_xml() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut script = std::process::Command::new(&python);
    script
        .arg(common::repo().join("benches/train_throughput.py"))
        .env("HANZO_TWIN_ANT_XML", &xml);
    if !benchmarking {
        script.arg("--quick");
    }
    let status = script.status().expect("python runs");
    assert!(
        status.success(),
        "benches/train_throughput.py failed: {status}"
    );
}

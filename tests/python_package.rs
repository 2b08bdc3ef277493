//! The `hanzo_twin` Python package (python/, built by maturin into the test
//! venv by scripts/test.sh): Gymnasium's env checker, the vector env's
//! autoreset modes and seeding, the EnvPool-style interface, embedded and
//! against a running node, and Stable-Baselines3's PPO learning a shipped
//! task. The checks themselves are in tests/python/gym_package.py.

mod common;

use common::{TestNode, repo};
use std::process::Command;

/// The venv's Python, when it has the package.
fn python() -> Option<String> {
    common::venv_python("hanzo_twin")
}

fn run(python: &str, args: &[&str], env: &[(&str, &str)]) {
    let script = repo().join("tests/python/gym_package.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "gym_package.py {args:?} failed:\n{text}"
    );
}

#[test]
fn embedded_environments_pass_gymnasiums_checks() {
    let Some(python) = python() else { return };
    run(&python, &["embedded"], &[]);
}

#[tokio::test]
async fn remote_environments_step_on_a_node_as_embedded_ones_do() {
    let Some(python) = python() else { return };
    let node = TestNode::start().await;
    let token = node
        .token
        .clone()
        .expect("a development node mints a token");
    let url = node.url("");
    tokio::task::spawn_blocking(move || {
        run(&python, &["remote", &url], &[("HANZO_TWIN_TOKEN", &token)]);
    })
    .await
    .expect("python finished");
}

#[test]
fn stable_baselines3_ppo_learns_cartpole() {
    let Some(python) = python() else { return };
    run(&python, &["ppo"], &[]);
}

/// The spec's RL section as written: `hanzo_twin.make(twin_id=…,
/// engine="mujoco", obs_type="dict", action_type="joint", step_hz=60,
/// domain_randomization=True)` reaching the node through HANZO_TWIN_API and
/// HANZO_TWIN_TOKEN, its Gymnasium loop with a Stable-Baselines3 agent,
/// `make_vec(…, num_envs=64, num_envs_per_worker=8)`, and the registered ids.
#[tokio::test]
async fn the_specs_rl_snippet_runs_against_a_twin_on_a_node() {
    let Some(python) = python() else { return };
    let node = TestNode::start().await;
    let twin = node
        .create_sample("robot-arm.yaml", "twin-warehouse-east")
        .await;
    node.start_twin(&twin, "paused").await;
    let token = node
        .token
        .clone()
        .expect("a development node mints a token");
    let url = node.url("");
    tokio::task::spawn_blocking(move || {
        run(
            &python,
            &["spec", "twin-warehouse-east"],
            &[("HANZO_TWIN_API", &url), ("HANZO_TWIN_TOKEN", &token)],
        );
    })
    .await
    .expect("python finished");
}

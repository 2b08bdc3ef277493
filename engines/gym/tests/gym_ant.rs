//! The Ant-v5 task against Gymnasium's own Ant-v5 (same model file, same
//! MuJoCo): the same state and actions give the same observations, rewards
//! and terminations. Also: seeding reproduces episodes, the time limit
//! truncates, and a batch steps exactly as the environments would alone.
#![cfg(feature = "mujoco")]

use hanzo_twin_gym::{
    AntConfig, AntEnv, AntStep, AntTask, EpisodeParams, GravityPerturbation, Randomization, Range,
    Task, VecEnv, VecEnvConfig, VecOutput,
};
use std::path::PathBuf;
use std::sync::Arc;

fn python() -> Option<String> {
    match std::env::var("HANZO_TWIN_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) => {
            eprintln!(
                "SKIPPED: HANZO_TWIN_TEST_PYTHON is not set; run scripts/test.sh, which installs gymnasium"
            );
            None
        }
    }
}

fn ant_xml(python: &str) -> PathBuf {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import gymnasium.envs.mujoco as m, os; print(os.path.join(os.path.dirname(m.__file__), 'assets', 'ant.xml'))",
        ])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().into()
}

fn task(python: &str) -> Arc<AntTask> {
    AntTask::load(&ant_xml(python), AntConfig::default()).expect("ant loads")
}

/// Actions in [-1, 1] from a fixed sequence (no RNG needed to reproduce).
fn action(step: usize, nu: usize) -> Vec<f32> {
    (0..nu)
        .map(|j| ((step * 7 + j * 13) as f32 * 0.37).sin())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn ant_matches_gymnasium_step_by_step() {
    let Some(python) = python() else { return };
    let task = task(&python);
    let (n_obs, nu) = (task.observation_size(), task.action_size());
    assert_eq!(n_obs, 105, "Ant-v5's observation has 105 values");
    assert_eq!(nu, 8);
    let mut env = AntEnv::new(&task);
    let mut obs = vec![0.0; n_obs];
    env.reset(Some(7), &mut obs);
    let steps = 120;
    let actions: Vec<Vec<f32>> = (0..steps).map(|s| action(s, nu)).collect();
    // The state our reset drew, for Gymnasium to start from, read from a twin
    // of the environment reset with the same seed.
    let mut twin = AntEnv::new(&task);
    let mut twin_obs = vec![0.0; n_obs];
    twin.reset(Some(7), &mut twin_obs);
    assert_eq!(obs, twin_obs, "the same seed gives the same start");
    let (qpos, qvel) = twin.state();
    let request = serde_json::json!({ "qpos": qpos, "qvel": qvel, "actions": actions });
    let peer = repo().join("tests/peers/ant_v5_rollout.py");
    let mut child = std::process::Command::new(&python)
        .arg(&peer)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the Gymnasium peer starts");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "peer failed");
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    let ref_reset: Vec<f64> = serde_json::from_value(reference["reset_obs"].clone()).unwrap();
    assert!(
        ref_reset.iter().zip(&obs).all(|(a, b)| close(*a, *b)),
        "reset observation differs"
    );
    let mut worst: f64 = 0.0;
    let mut terminated_at = None;
    for (s, a) in actions.iter().enumerate() {
        let r: AntStep = env.step(a, &mut obs);
        let expected = &reference["steps"][s];
        let ref_obs: Vec<f64> = serde_json::from_value(expected["obs"].clone()).unwrap();
        for (i, (x, y)) in obs.iter().zip(&ref_obs).enumerate() {
            assert!(
                close(*x, *y),
                "step {s}, observation {i}: {x} vs Gymnasium {y}"
            );
            worst = worst.max((x - y).abs());
        }
        let reward = expected["reward"].as_f64().unwrap();
        assert!(
            close(r.reward, reward),
            "step {s}: reward {} vs {reward}",
            r.reward
        );
        assert!(close(
            r.reward_contact,
            expected["info"]["reward_contact"].as_f64().unwrap()
        ));
        assert!(close(
            r.x_velocity,
            expected["info"]["x_velocity"].as_f64().unwrap()
        ));
        assert_eq!(
            r.terminated,
            expected["terminated"].as_bool().unwrap(),
            "step {s}"
        );
        if r.terminated && terminated_at.is_none() {
            terminated_at = Some(s);
        }
    }
    println!(
        "Ant-v5: {steps} steps match Gymnasium, largest observation difference {worst:.1e}; terminated at {terminated_at:?}"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn seeds_reproduce_episodes_and_the_time_limit_truncates() {
    let Some(python) = python() else { return };
    let config = AntConfig {
        max_episode_steps: 50,
        ..AntConfig::default()
    };
    let task = AntTask::load(&ant_xml(&python), config).unwrap();
    let (n_obs, nu) = (task.observation_size(), task.action_size());
    let run = |seed: u64| {
        let mut env = AntEnv::new(&task);
        let mut obs = vec![0.0; n_obs];
        env.reset(Some(seed), &mut obs);
        let mut trace = obs.clone();
        let mut last = None;
        for s in 0..50 {
            let r = env.step(&action(s, nu), &mut obs);
            trace.extend_from_slice(&obs);
            last = Some(r);
        }
        (trace, last.unwrap())
    };
    let (a, last) = run(3);
    let (b, _) = run(3);
    let (c, _) = run(4);
    assert_eq!(a, b, "a seed fully determines an episode");
    assert_ne!(a, c, "another seed, another episode");
    assert!(last.truncated, "step 50 of 50 is truncated");
}

#[test]
fn a_batch_steps_exactly_as_its_environments_alone() {
    let Some(python) = python() else { return };
    let task = task(&python);
    let (n_obs, nu) = (task.observation_size(), task.action_size());
    let n = 6;
    let dyn_task: Arc<dyn Task> = task.clone();
    let mut batch = VecEnv::new(
        &dyn_task,
        &VecEnvConfig {
            num_envs: n,
            threads: 2,
            ..VecEnvConfig::default()
        },
    )
    .expect("batch");
    let mut out = VecOutput::default();
    batch.reset(Some(100), None, &mut out).expect("reset");
    let mut alone: Vec<AntEnv> = (0..n).map(|_| AntEnv::new(&task)).collect();
    let mut alone_obs = vec![0.0; n * n_obs];
    for (i, (env, o)) in alone
        .iter_mut()
        .zip(alone_obs.chunks_mut(n_obs))
        .enumerate()
    {
        env.reset(Some(100 + i as u64), o);
    }
    assert_eq!(out.obs, alone_obs);
    for s in 0..30 {
        let actions: Vec<f32> = (0..n).flat_map(|i| action(s + i, nu)).collect();
        batch.step(&actions, &mut out).expect("step");
        for (i, (env, o)) in alone
            .iter_mut()
            .zip(alone_obs.chunks_mut(n_obs))
            .enumerate()
        {
            let r: AntStep = env.step(&action(s + i, nu), o);
            assert_eq!(r.reward, out.reward[i], "env {i} at step {s}");
            assert_eq!(r.terminated, out.terminated[i], "env {i} at step {s}");
            assert_eq!(r.x_velocity, out.info[i * 9 + 7], "env {i} at step {s}");
        }
        assert_eq!(out.obs, alone_obs, "step {s}");
    }
}

#[test]
fn randomized_ant_episodes_report_their_parameters_and_change_the_physics() {
    let Some(python) = python() else { return };
    let task: Arc<dyn Task> = task(&python);
    let randomization = Randomization {
        friction: Some(Range { min: 0.3, max: 0.9 }),
        mass_scale: Some(Range { min: 0.5, max: 0.6 }),
        actuator_delay_ms: Some(Range {
            min: 10.0,
            max: 20.0,
        }),
        gravity_perturbation: Some(GravityPerturbation { max_angle_deg: 2.0 }),
        ..Randomization::default()
    };
    let run = |randomization: Option<Randomization>| {
        let mut env = VecEnv::new(
            &task,
            &VecEnvConfig {
                num_envs: 2,
                threads: 1,
                randomization,
                ..VecEnvConfig::default()
            },
        )
        .expect("batch");
        let mut out = VecOutput::default();
        env.reset(Some(5), None, &mut out).expect("reset");
        let params = out.episode_params.clone();
        let nu = env.spec().action_size();
        for s in 0..20 {
            let actions: Vec<f32> = (0..2).flat_map(|i| action(s + i, nu)).collect();
            env.step(&actions, &mut out).expect("step");
        }
        (params, out.obs.clone())
    };
    let (plain_params, plain) = run(None);
    let (params, randomized) = run(Some(randomization.clone()));
    let (again_params, again) = run(Some(randomization.clone()));
    assert_eq!(plain_params[0], EpisodeParams::default());
    let p = params[0];
    assert!((0.3..=0.9).contains(&p.friction.unwrap_or(-1.0)), "{p:?}");
    assert!((0.5..=0.6).contains(&p.mass_scale.unwrap_or(-1.0)), "{p:?}");
    assert!(
        p.gravity.is_some() && p.actuator_delay_ms.is_some(),
        "{p:?}"
    );
    assert_ne!(
        params[0], params[1],
        "each environment draws its own episode"
    );
    assert_eq!(params, again_params, "a seed fixes the randomization");
    assert_eq!(randomized, again, "and the episode");
    assert_ne!(
        plain, randomized,
        "lighter legs and delayed actuators move differently"
    );
    // A task refuses what it cannot apply, naming the parameter.
    let err = VecEnv::new(
        &task,
        &VecEnvConfig {
            randomization: Some(Randomization {
                lighting_intensity: Some(Range { min: 0.5, max: 2.0 }),
                ..Randomization::default()
            }),
            ..VecEnvConfig::default()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("domain_randomization.parameters.lighting_intensity"),
        "{err}"
    );
}

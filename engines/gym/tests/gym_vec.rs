//! RL environments on rapier3d, no Python: the built-in cart-pole task, the
//! batch's autoreset modes, seeding, the asynchronous interface and domain
//! randomization.

use hanzo_twin_engines::EngineKind;
use hanzo_twin_gym::scene_task::{SceneTask, TaskSpec};
use hanzo_twin_gym::{
    AutoReset, GravityPerturbation, Randomization, Range, Task, VecEnv, VecEnvConfig, VecOutput,
    builtin_task,
};
use std::sync::Arc;

fn cartpole() -> Arc<dyn Task> {
    builtin_task("cartpole-v0", None, None).expect("cartpole-v0 builds")
}

fn batch(task: &Arc<dyn Task>, n: usize, threads: usize, autoreset: AutoReset) -> VecEnv {
    VecEnv::new(
        task,
        &VecEnvConfig {
            num_envs: n,
            threads,
            autoreset,
            randomization: None,
        },
    )
    .expect("batch")
}

/// A linear balancing controller: push towards where the pole leans.
fn balance(obs: &[f64]) -> f32 {
    let (x, v, theta, omega) = (obs[0], obs[1], obs[2], obs[3]);
    (0.1 * x + 0.3 * v + 8.0 * theta + 1.5 * omega).clamp(-1.0, 1.0) as f32
}

#[test]
fn cartpole_starts_near_upright_falls_when_left_alone_and_balances_under_control() {
    let task = cartpole();
    let spec = task.spec();
    assert_eq!(spec.engine, EngineKind::Rapier3d);
    assert_eq!(spec.observation_size(), 4);
    assert_eq!(spec.action_size(), 1);
    assert_eq!(spec.max_episode_steps, 500);
    let mut env = batch(&task, 1, 1, AutoReset::Disabled);
    let mut out = VecOutput::default();
    env.reset(Some(1), None, &mut out).expect("reset");
    assert!(out.obs[0].abs() <= 0.05 + 1e-6, "{:?}", out.obs);
    assert!(out.obs[2].abs() <= 0.05 + 1e-6, "{:?}", out.obs);
    assert!(out.obs[2] != 0.0, "reset noise displaces the hinge");
    // Left alone, the pole falls past 12 degrees and the episode terminates.
    let mut steps = 0;
    loop {
        env.step(&[0.0], &mut out).expect("step");
        steps += 1;
        assert_eq!(out.reward[0], 1.0);
        if out.terminated[0] {
            break;
        }
        assert!(steps < 200, "an uncontrolled pole falls within 4 s");
    }
    assert!(out.obs[2].abs() > 0.2095, "{:?}", out.obs);
    // Under control it stays up until the time limit truncates the episode.
    env.reset(Some(2), None, &mut out).expect("reset");
    let mut ret = 0.0;
    for s in 0..500 {
        let a = balance(&out.obs);
        env.step(&[a], &mut out).expect("step");
        ret += out.reward[0];
        assert!(
            !out.terminated[0],
            "balanced, yet terminated at step {s}: {:?}",
            out.obs
        );
    }
    assert!(out.truncated[0], "step 500 truncates");
    assert_eq!(ret, 500.0);
}

#[test]
fn a_seed_fixes_every_episode_whichever_threads_run_them() {
    let task = cartpole();
    let trace = |threads: usize| {
        let mut env = batch(&task, 4, threads, AutoReset::NextStep);
        let mut out = VecOutput::default();
        env.reset(Some(42), None, &mut out).expect("reset");
        let mut trace = out.obs.clone();
        for s in 0..120 {
            let actions: Vec<f32> = (0..4)
                .map(|i| ((s * 3 + i * 5) as f32 * 0.7).sin())
                .collect();
            env.step(&actions, &mut out).expect("step");
            trace.extend_from_slice(&out.obs);
            trace.extend(out.episode.iter().map(|e| *e as f64));
        }
        trace
    };
    let one = trace(1);
    assert_eq!(one, trace(2), "two threads give what one does");
    assert_eq!(one, trace(4));
    let mut env = batch(&task, 2, 1, AutoReset::NextStep);
    let mut out = VecOutput::default();
    env.reset(Some(42), None, &mut out).expect("reset");
    assert_ne!(
        out.obs[..4],
        out.obs[4..],
        "environments get their own seeds"
    );
}

/// Steps with no push until environment 0's episode ends; returns the steps.
fn until_env0_ends(env: &mut VecEnv, out: &mut VecOutput) -> usize {
    let n = env.num_envs();
    for s in 1..300 {
        env.step(&vec![0.0; n], out).expect("step");
        if out.terminated[0] || out.truncated[0] {
            return s;
        }
    }
    panic!("the pole never fell");
}

#[test]
fn next_step_autoreset_resets_on_the_step_after_the_end_ignoring_its_action() {
    let task = cartpole();
    let mut env = batch(&task, 2, 2, AutoReset::NextStep);
    let mut out = VecOutput::default();
    env.reset(Some(7), None, &mut out).expect("reset");
    until_env0_ends(&mut env, &mut out);
    assert!(out.terminated[0]);
    assert!(
        out.obs[2].abs() > 0.2095,
        "the last observation of the episode"
    );
    assert_eq!(out.episode[0], 1);
    env.step(&[1.0, 0.0], &mut out).expect("step");
    assert_eq!(out.episode[0], 2, "a new episode");
    assert_eq!(out.reward[0], 0.0);
    assert!(!out.terminated[0] && !out.truncated[0]);
    assert_eq!(out.elapsed[0], 0);
    assert!(
        out.obs[2].abs() <= 0.05 + 1e-6,
        "the first observation: {:?}",
        out.obs
    );
    assert!(
        out.obs[1].abs() <= 0.05 + 1e-6,
        "the push of the reset step was not applied"
    );
}

#[test]
fn same_step_autoreset_gives_the_final_observation_beside_the_first() {
    let task = cartpole();
    let mut env = batch(&task, 2, 2, AutoReset::SameStep);
    let mut out = VecOutput::default();
    env.reset(Some(7), None, &mut out).expect("reset");
    until_env0_ends(&mut env, &mut out);
    assert!(out.terminated[0] && out.has_final[0]);
    assert_eq!(out.reward[0], 1.0, "the reward of the final step");
    assert!(out.final_obs[2].abs() > 0.2095, "{:?}", &out.final_obs[..4]);
    assert!(out.obs[2].abs() <= 0.05 + 1e-6, "already the next episode");
    assert_eq!(out.episode[0], 2);
    env.step(&[0.0, 0.0], &mut out).expect("step");
    assert!(!out.has_final[0]);
    assert_eq!(out.elapsed[0], 1);
}

#[test]
fn disabled_autoreset_refuses_to_step_an_ended_episode_until_it_is_reset() {
    let task = cartpole();
    let mut env = batch(&task, 2, 1, AutoReset::Disabled);
    let mut out = VecOutput::default();
    env.reset(Some(7), None, &mut out).expect("reset");
    // Environment 0 is left alone; environment 1 is balanced and goes on.
    loop {
        let balance_1 = balance(&out.obs[4..8]);
        env.step(&[0.0, balance_1], &mut out).expect("step");
        assert!(!out.terminated[1]);
        if out.terminated[0] {
            break;
        }
    }
    let err = env
        .step(&[0.0, 0.0], &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("actions[0]") && err.contains("reset"), "{err}");
    let before = out.episode[1];
    env.reset(None, Some(&[true, false]), &mut out)
        .expect("masked reset");
    assert_eq!(out.episode[0], 2);
    assert_eq!(out.episode[1], before, "environment 1 goes on");
    let balance_1 = balance(&out.obs[4..8]);
    env.step(&[0.0, balance_1], &mut out).expect("steps again");
}

#[test]
fn the_asynchronous_interface_gives_whichever_environments_finish_first() {
    let task = cartpole();
    let mut env = batch(&task, 4, 2, AutoReset::NextStep);
    let mut out = VecOutput::default();
    env.send_reset(Some(3)).expect("reset sent");
    env.recv(2, &mut out).expect("two");
    let mut first: Vec<usize> = out.env_ids.clone();
    env.recv(2, &mut out).expect("two more");
    first.extend(&out.env_ids);
    first.sort();
    assert_eq!(first, vec![0, 1, 2, 3]);
    // Results match the synchronous interface row for row.
    let mut sync = batch(&task, 4, 1, AutoReset::NextStep);
    let mut expect = VecOutput::default();
    sync.reset(Some(3), None, &mut expect).expect("reset");
    sync.step(&[0.5, 0.5, 0.5, 0.5], &mut expect).expect("step");
    env.send(&[0.5, 0.5], &[2, 0]).expect("send");
    let err = env
        .send(&[0.5], &[2])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("env_ids[0]") && err.contains("in flight"),
        "{err}"
    );
    env.send(&[0.5, 0.5], &[1, 3]).expect("send");
    for _ in 0..2 {
        env.recv(2, &mut out).expect("recv");
        for (row, &i) in out.env_ids.iter().enumerate() {
            assert_eq!(
                out.obs[row * 4..row * 4 + 4],
                expect.obs[i * 4..i * 4 + 4],
                "env {i}"
            );
        }
    }
    let err = env
        .recv(1, &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("batch_size"), "{err}");
}

#[test]
fn bad_actions_are_refused_naming_the_value() {
    let task = cartpole();
    let mut env = batch(&task, 2, 1, AutoReset::NextStep);
    let mut out = VecOutput::default();
    let err = env
        .step(&[0.0, 0.0], &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("reset"), "stepping before a reset: {err}");
    env.reset(Some(0), None, &mut out).expect("reset");
    let err = env
        .step(&[0.0, f32::NAN], &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("actions[1][0]"), "{err}");
    let err = env
        .step(&[0.0], &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("actions") && err.contains("2 environments"),
        "{err}"
    );
    env.step(&[0.0, 0.0], &mut out).expect("still usable");
}

#[test]
fn randomized_cartpole_episodes_differ_and_reproduce() {
    let task = cartpole();
    let randomization = Randomization {
        mass_scale: Some(Range { min: 2.0, max: 3.0 }),
        friction: Some(Range { min: 0.3, max: 0.9 }),
        actuator_delay_ms: Some(Range {
            min: 20.0,
            max: 40.0,
        }),
        gravity_perturbation: Some(GravityPerturbation { max_angle_deg: 5.0 }),
        ..Randomization::default()
    };
    let run = |r: Option<Randomization>| {
        let mut env = VecEnv::new(
            &task,
            &VecEnvConfig {
                num_envs: 2,
                threads: 2,
                randomization: r,
                ..VecEnvConfig::default()
            },
        )
        .expect("batch");
        let mut out = VecOutput::default();
        env.reset(Some(9), None, &mut out).expect("reset");
        let params = out.episode_params.clone();
        for _ in 0..15 {
            env.step(&[1.0, 1.0], &mut out).expect("step");
        }
        (params, out.obs.clone())
    };
    let (_, plain) = run(None);
    let (params, a) = run(Some(randomization.clone()));
    let (params_again, b) = run(Some(randomization.clone()));
    assert_eq!(params, params_again);
    assert_eq!(a, b, "a seed fixes randomized episodes");
    let scale = params[0].mass_scale.unwrap_or_default();
    assert!((2.0..=3.0).contains(&scale));
    // A heavier cart moves less under the same push.
    assert!(
        a[1].abs() < plain[1].abs(),
        "heavier: {a:?}, nominal: {plain:?}"
    );
    let err = VecEnv::new(
        &task,
        &VecEnvConfig {
            randomization: Some(Randomization {
                camera_noise_stddev: Some(Range { min: 0.0, max: 0.1 }),
                ..Randomization::default()
            }),
            ..VecEnvConfig::default()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("camera_noise_stddev") && err.contains("cartpole-v0"),
        "{err}"
    );
}

#[test]
fn camera_observations_take_noise_and_lighting() {
    let mut spec = TaskSpec::cartpole();
    spec.name = "cartpole-camera".into();
    spec.observation = serde_json::from_value(serde_json::json!([
        { "camera_depth": { "camera": "/World/Camera", "width": 32, "height": 24 } },
        { "camera_intensity": { "camera": "/World/Camera", "width": 32, "height": 24 } },
    ]))
    .expect("terms");
    let task: Arc<dyn Task> =
        Arc::new(SceneTask::builtin(spec, EngineKind::Rapier3d).expect("camera task"));
    assert_eq!(task.spec().observation_size(), 2 * 32 * 24);
    let observe = |r: Option<Randomization>| {
        let mut env = VecEnv::new(
            &task,
            &VecEnvConfig {
                num_envs: 1,
                randomization: r,
                ..VecEnvConfig::default()
            },
        )
        .expect("batch");
        let mut out = VecOutput::default();
        env.reset(Some(1), None, &mut out).expect("reset");
        (out.obs.clone(), out.episode_params[0])
    };
    let (plain, _) = observe(None);
    let (depth, intensity) = plain.split_at(32 * 24);
    assert!(
        depth.iter().any(|d| *d < 10.0),
        "the camera sees the cart-pole: {depth:?}"
    );
    assert!(intensity.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(intensity.iter().any(|v| *v > 0.5), "lit surfaces");
    let dim = Randomization {
        lighting_intensity: Some(Range { min: 0.5, max: 0.5 }),
        ..Randomization::default()
    };
    let (dimmed, params) = observe(Some(dim));
    assert_eq!(params.lighting_intensity, Some(0.5));
    assert_eq!(&dimmed[..32 * 24], depth, "light does not move depth");
    for (d, p) in dimmed[32 * 24..].iter().zip(intensity) {
        assert!(
            *d <= p * 0.5 + 1e-12,
            "half the light, at most half as bright"
        );
    }
    let noisy = Randomization {
        camera_noise_stddev: Some(Range {
            min: 0.05,
            max: 0.05,
        }),
        ..Randomization::default()
    };
    let (a, _) = observe(Some(noisy.clone()));
    let (b, _) = observe(Some(noisy));
    assert_eq!(a, b, "seeded noise");
    assert_ne!(&a[..32 * 24], depth, "noise moves depth");
}

#[test]
fn task_specs_are_checked_against_the_scene() {
    let mut spec = TaskSpec::cartpole();
    spec.action[0].joint = "/World/CartPole/nope".into();
    let err = SceneTask::builtin(spec, EngineKind::Rapier3d)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("task.action[0].joint") && err.contains("/World/CartPole/nope"),
        "{err}"
    );
    let err = builtin_task("walker-v9", None, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("walker-v9") && err.contains("cartpole-v0"),
        "{err}"
    );
}

#[test]
fn an_imu_on_the_pole_feels_gravity_and_the_swing() {
    let mut spec = TaskSpec::cartpole();
    spec.name = "cartpole-imu".into();
    spec.reset_noise = Default::default();
    spec.observation = serde_json::from_value(serde_json::json!([
        { "imu": { "body": "/World/CartPole/Pole" } },
        { "imu": { "body": "/World/CartPole/Cart" } },
    ]))
    .expect("terms");
    let task: Arc<dyn Task> =
        Arc::new(SceneTask::builtin(spec, EngineKind::Rapier3d).expect("imu task"));
    let mut env = batch(&task, 1, 1, AutoReset::Disabled);
    let mut out = VecOutput::default();
    env.reset(Some(0), None, &mut out).expect("reset");
    // At rest and upright: +g along the body's up axis, no rotation.
    let (pole, cart) = (&out.obs[..6], &out.obs[6..12]);
    for imu in [pole, cart] {
        assert!((imu[2] - 9.81).abs() < 1e-6, "{imu:?}");
        assert!(
            imu[0].abs() < 1e-6 && imu[1].abs() < 1e-6 && imu[3..].iter().all(|w| w.abs() < 1e-6)
        );
    }
    // Pushed, the cart's accelerometer reads the push along +x (about
    // F / (m_cart + m_pole)) while the pole starts to swing about y.
    env.step(&[1.0], &mut out).expect("step");
    let (pole, cart) = (&out.obs[..6], &out.obs[6..12]);
    assert!(
        cart[0] > 4.0 && cart[0] < 12.0,
        "cart accelerometer {cart:?}"
    );
    assert!(
        pole[4].abs() > 1e-3,
        "the pole's gyroscope sees the swing: {pole:?}"
    );
}

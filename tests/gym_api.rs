//! RL environments through a running node (`/v1/gym/envs`): the built-in
//! cart-pole batch, autoreset, randomization, the asynchronous forms, a task
//! spec on a twin's scene, Ant-v5 on MuJoCo, and clear errors for bad input.

mod common;

use common::{TestNode, repo};
use serde_json::{Value, json};

async fn create(node: &TestNode, body: Value) -> (u16, Value) {
    node.post("/v1/gym/envs", body).await
}

fn rows(v: &Value, key: &str) -> Vec<Vec<f64>> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .map(|r| {
            r.as_array()
                .map(|r| r.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn a_cartpole_batch_resets_steps_and_autoresets_over_http() {
    let node = TestNode::start().await;
    let (status, info) = create(
        &node,
        json!({
            "task": "cartpole-v0", "num_envs": 4, "autoreset_mode": "same_step",
            "domain_randomization": { "enabled": true, "parameters": { "mass_scale": { "min": 0.8, "max": 1.2 } } },
        }),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    let id = info["id"].as_str().expect("id").to_string();
    assert_eq!(info["engine"], "rapier3d");
    assert_eq!(info["num_envs"], 4);
    assert_eq!(info["autoreset_mode"], "same_step");
    assert_eq!(
        info["observation_space"]["low"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(info["action_space"]["high"], json!([1.0]));
    assert_eq!(info["max_episode_steps"], 500);

    // Stepping before a reset says what to do.
    let (status, v) = node
        .post(
            &format!("/v1/gym/envs/{id}/step"),
            json!({ "actions": [[0.0], [0.0], [0.0], [0.0]] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("reset"),
        "{v}"
    );

    let (status, first) = node
        .post(&format!("/v1/gym/envs/{id}/reset"), json!({ "seed": 11 }))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(rows(&first, "observations").len(), 4);
    let scales = first["info"]["randomization"]
        .as_array()
        .expect("randomization reported")
        .iter()
        .filter_map(|p| p["mass_scale"].as_f64())
        .collect::<Vec<_>>();
    assert_eq!(scales.len(), 4);
    assert!(scales.iter().all(|s| (0.8..=1.2).contains(s)), "{scales:?}");
    let (_, again) = node
        .post(&format!("/v1/gym/envs/{id}/reset"), json!({ "seed": 11 }))
        .await;
    assert_eq!(
        first["observations"], again["observations"],
        "a seed fixes the episodes"
    );

    // No push: poles fall; the step that ends an episode carries its final
    // observation beside the next episode's first (SAME_STEP).
    let mut ended = None;
    for _ in 0..200 {
        let (status, v) = node
            .post(
                &format!("/v1/gym/envs/{id}/step"),
                json!({ "actions": [[0.0], [0.0], [0.0], [0.0]] }),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["info"]["reward_alive"].as_array().map(Vec::len), Some(4));
        if v["terminated"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == true))
        {
            ended = Some(v);
            break;
        }
    }
    let v = ended.expect("a pole falls");
    let terminated: Vec<bool> = v["terminated"]
        .as_array()
        .map(|t| t.iter().map(|x| x == true).collect())
        .unwrap_or_default();
    let i = terminated.iter().position(|t| *t).unwrap_or(0);
    let final_obs = &v["final_observations"][i];
    assert!(final_obs[2].as_f64().unwrap_or(0.0).abs() > 0.2095, "{v}");
    assert!(
        v["observations"][i][2].as_f64().unwrap_or(1.0).abs() <= 0.05 + 1e-6,
        "{v}"
    );
    // Two resets, then the autoreset: the third episode.
    assert_eq!(v["info"]["episode"][i], 3);

    // Asynchronous: send some, receive whichever finish.
    let (status, v) = node
        .post(
            &format!("/v1/gym/envs/{id}/send"),
            json!({ "env_ids": [3, 1], "actions": [[0.5], [-0.5]] }),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = node
        .post(
            &format!("/v1/gym/envs/{id}/recv"),
            json!({ "batch_size": 2 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mut ids: Vec<u64> = v["env_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 3]);

    // Bad input names the field.
    for (body, field) in [
        (json!({ "actions": [[0.0], [0.0]] }), "actions"),
        (
            json!({ "actions": [[0.0], [0.0], [0.0], [0.0, 1.0]] }),
            "actions[3]",
        ),
        (json!({ "acts": [] }), ""),
    ] {
        let (status, v) = node.post(&format!("/v1/gym/envs/{id}/step"), body).await;
        assert_eq!(status, 400, "{v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{v}");
        }
    }
    let (status, v) = node
        .post(
            &format!("/v1/gym/envs/{id}/recv"),
            json!({ "batch_size": 1 }),
        )
        .await;
    assert_eq!(status, 400, "nothing in flight: {v}");
    assert_eq!(v["error"]["field"], "batch_size");

    let (status, list) = node.get("/v1/gym/envs").await;
    assert_eq!(status, 200);
    assert!(
        list["envs"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["id"] == id.as_str()))
    );
    let (status, _) = node.delete(&format!("/v1/gym/envs/{id}")).await;
    assert_eq!(status, 204);
    let (status, v) = node.get(&format!("/v1/gym/envs/{id}")).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("gym environment"),
        "{v}"
    );
}

#[tokio::test]
async fn bad_environment_requests_are_refused_naming_the_field() {
    let node = TestNode::start().await;
    for (body, field) in [
        (json!({ "task": "cartpole-v0", "num_envs": 0 }), "num_envs"),
        (json!({ "task": "walker-v9" }), "task"),
        (
            json!({ "task": "cartpole-v0", "autoreset_mode": "sometimes" }),
            "autoreset_mode",
        ),
        (
            json!({ "task": "cartpole-v0", "domain_randomization": { "enabled": true, "parameters": { "lighting_intensity": { "min": 0.5, "max": 2 } } } }),
            "domain_randomization.parameters.lighting_intensity",
        ),
        (
            json!({ "task": "cartpole-v0", "domain_randomization": { "enabled": true, "parameters": { "friction": { "min": 2, "max": 1 } } } }),
            "domain_randomization.parameters.friction",
        ),
        (
            json!({ "task": { "name": "x", "observation": [], "action": [], "reward": [] } }),
            "scene",
        ),
    ] {
        let (status, v) = create(&node, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        let got = v["error"]["field"].as_str().unwrap_or("");
        assert!(
            got.starts_with(field),
            "{body}: field {got}, want {field}: {v}"
        );
    }
}

#[tokio::test]
async fn a_task_spec_runs_on_a_twins_scene() {
    let node = TestNode::start().await;
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let (status, twin) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, "gym-arm"),
        )
        .await;
    assert_eq!(status, 201, "{twin}");
    let arm = "/World/Arm";
    let task = json!({
        "name": "arm-reach",
        "step_hz": 240, "frame_skip": 8, "max_episode_steps": 40,
        "observation": [
            { "joint_position": { "joint": format!("{arm}/shoulder_pitch") } },
            { "joint_velocity": { "joint": format!("{arm}/shoulder_pitch") } },
        ],
        "action": [
            { "joint": format!("{arm}/shoulder_pitch"), "mode": "position", "low": -1, "high": 1 },
        ],
        "reward": [
            { "joint_position": { "joint": format!("{arm}/shoulder_pitch"), "target": 0.4, "weight": -1.0 } },
        ],
    });
    let (status, info) = create(
        &node,
        json!({ "task": task, "twin_id": "gym-arm", "num_envs": 2 }),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["task"], "arm-reach");
    assert_eq!(info["twin_id"], twin["id"]);
    assert_eq!(info["info_keys"], json!(["reward_joint_position"]));
    let id = info["id"].as_str().expect("id").to_string();
    let (status, _) = node
        .post(&format!("/v1/gym/envs/{id}/reset"), json!({}))
        .await;
    assert_eq!(status, 200);
    let mut rewards = Vec::new();
    for _ in 0..30 {
        let (status, v) = node
            .post(
                &format!("/v1/gym/envs/{id}/step"),
                json!({ "actions": [[0.4], [0.4]] }),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        rewards.push(v["rewards"][0].as_f64().unwrap_or(f64::NAN));
    }
    assert!(
        rewards[29] > rewards[0],
        "driving to the target raises the reward: {rewards:?}"
    );
    assert!(rewards[29] > -0.01, "{rewards:?}");

    // A term naming a joint the scene lacks is refused at creation.
    let mut bad = task.clone();
    bad["action"][0]["joint"] = json!("/World/Arm/wrist");
    let (status, v) = create(&node, json!({ "task": bad, "twin_id": "gym-arm" })).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "task.action[0].joint");
}

#[cfg(feature = "mujoco")]
#[tokio::test]
async fn ant_v5_runs_on_mujoco_through_the_api() {
    if std::env::var_os("HANZO_TWIN_ANT_XML").is_none() {
        eprintln!(
            "SKIPPED: HANZO_TWIN_ANT_XML is not set; scripts/test.sh sets it to Gymnasium's ant.xml"
        );
        return;
    }
    let node = TestNode::start().await;
    let (status, info) = create(&node, json!({ "task": "ant-v5", "num_envs": 2 })).await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["engine"], "mujoco");
    assert_eq!(
        info["observation_space"]["low"].as_array().map(Vec::len),
        Some(105)
    );
    let id = info["id"].as_str().expect("id").to_string();
    let (status, v) = node
        .post(&format!("/v1/gym/envs/{id}/reset"), json!({ "seed": 0 }))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = node
        .post(
            &format!("/v1/gym/envs/{id}/step"),
            json!({ "actions": [vec![0.1; 8], vec![-0.1; 8]] }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["info"]["x_velocity"]
            .as_array()
            .is_some_and(|x| x.len() == 2)
    );
    let (status, v) = create(&node, json!({ "task": "ant-v5", "engine": "rapier3d" })).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "engine");
}

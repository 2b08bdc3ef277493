//! RL environments through a running node (`/v1/gym/envs`): the built-in
//! cart-pole batch, autoreset, randomization, the asynchronous forms, a task
//! spec on a twin's scene, Ant-v5 on MuJoCo, the training loop's
//! safetensors form, and clear errors for bad input.

mod common;

use common::{TestNode, repo};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
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
    let metrics = node.metrics().await;
    let parallel = format!(
        "hanzo_twin_parallel_envs{{twin=\"{}\"}} 2",
        twin["id"].as_str().expect("twin id")
    );
    assert!(
        metrics.lines().any(|l| l == parallel),
        "{parallel}: {metrics}"
    );
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

const TENSORS: &str = "application/x-safetensors";

/// Named arrays as a safetensors buffer.
fn tensors(arrays: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = arrays
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                *name,
                TensorView::new(*dtype, shape.clone(), data).expect("a tensor"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("a buffer")
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// POSTs `body` (safetensors when `binary`, else JSON) asking for a
/// safetensors answer: the status and the raw answer.
async fn post_tensors(node: &TestNode, path: &str, body: Vec<u8>, binary: bool) -> (u16, Vec<u8>) {
    let r = node
        .http
        .post(node.url(path))
        .header(
            "content-type",
            if binary { TENSORS } else { "application/json" },
        )
        .header("accept", TENSORS)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    if status < 300 {
        let media = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.bytes().await.expect("body").to_vec();
        assert!(body.is_empty() || media == TENSORS, "answered {media}");
        (status, body)
    } else {
        (status, r.bytes().await.expect("body").to_vec())
    }
}

fn f64s(t: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let v = t.tensor(name).expect(name);
    assert_eq!(v.dtype(), Dtype::F64, "{name}");
    v.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

fn bools(t: &SafeTensors<'_>, name: &str) -> Vec<bool> {
    let v = t.tensor(name).expect(name);
    assert_eq!(v.dtype(), Dtype::BOOL, "{name}");
    v.data().iter().map(|b| *b != 0).collect()
}

fn flat(v: &Value, key: &str) -> Vec<f64> {
    rows(v, key).concat()
}

#[tokio::test]
async fn the_training_loop_trades_safetensors_buffers_with_the_values_json_has() {
    let node = TestNode::start().await;
    let spec = json!({ "task": "cartpole-v0", "num_envs": 3, "autoreset_mode": "same_step" });
    let (_, a) = create(&node, spec.clone()).await;
    let (_, b) = create(&node, spec).await;
    let (json_id, bin_id) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    let reset = json!({ "seed": 11 }).to_string().into_bytes();
    let (_, first) = node
        .post(
            &format!("/v1/gym/envs/{json_id}/reset"),
            json!({ "seed": 11 }),
        )
        .await;
    let (status, raw) =
        post_tensors(&node, &format!("/v1/gym/envs/{bin_id}/reset"), reset, false).await;
    assert_eq!(status, 200);
    let t = SafeTensors::deserialize(&raw).expect("a safetensors answer");
    assert_eq!(f64s(&t, "observations"), flat(&first, "observations"));
    assert_eq!(t.tensor("observations").expect("obs").shape(), &[3, 4]);
    let (_, metadata) = SafeTensors::read_metadata(&raw).expect("header");
    let keys = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("info_keys"))
        .expect("info_keys in the metadata");
    assert_eq!(
        serde_json::from_str::<Value>(keys).expect("JSON"),
        a["info_keys"]
    );

    // No push: the poles fall; both forms agree on every step, and on the
    // final observation of the step that ends an episode.
    let mut ended = false;
    for step in 0..300 {
        let actions = [0.0f32; 3];
        let (_, j) = node
            .post(
                &format!("/v1/gym/envs/{json_id}/step"),
                json!({ "actions": [[0.0], [0.0], [0.0]] }),
            )
            .await;
        let body = tensors(&[("actions", Dtype::F32, vec![3, 1], f32_bytes(&actions))]);
        let (status, raw) =
            post_tensors(&node, &format!("/v1/gym/envs/{bin_id}/step"), body, true).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
        let t = SafeTensors::deserialize(&raw).expect("a safetensors answer");
        assert_eq!(
            f64s(&t, "observations"),
            flat(&j, "observations"),
            "step {step}"
        );
        let rewards: Vec<f64> = j["rewards"]
            .as_array()
            .expect("rewards")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(f64s(&t, "rewards"), rewards);
        let terminated: Vec<bool> = j["terminated"]
            .as_array()
            .expect("terminated")
            .iter()
            .filter_map(Value::as_bool)
            .collect();
        assert_eq!(bools(&t, "terminated"), terminated);
        if let Some(finals) = j["final_observations"].as_array() {
            let has_final = bools(&t, "has_final");
            let final_obs = f64s(&t, "final_observations");
            for (r, row) in finals.iter().enumerate() {
                assert_eq!(has_final[r], !row.is_null(), "row {r}");
                if let Some(row) = row.as_array() {
                    let row: Vec<f64> = row.iter().filter_map(Value::as_f64).collect();
                    assert_eq!(final_obs[r * 4..(r + 1) * 4], row[..]);
                    ended = true;
                }
            }
        } else {
            assert!(
                t.tensor("has_final").is_err(),
                "no episode ended, no final arrays"
            );
        }
        if ended {
            break;
        }
    }
    assert!(ended, "an episode ended within 300 steps");

    // The asynchronous form: ids and actions as arrays.
    let ids: Vec<u8> = [2i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let body = tensors(&[
        ("actions", Dtype::F32, vec![2, 1], f32_bytes(&[0.5, -0.5])),
        ("env_ids", Dtype::I64, vec![2], ids),
    ]);
    let (status, _) = post_tensors(&node, &format!("/v1/gym/envs/{bin_id}/send"), body, true).await;
    assert_eq!(status, 202);
    let recv = json!({ "batch_size": 2 }).to_string().into_bytes();
    let (status, raw) =
        post_tensors(&node, &format!("/v1/gym/envs/{bin_id}/recv"), recv, false).await;
    assert_eq!(status, 200);
    let t = SafeTensors::deserialize(&raw).expect("a safetensors answer");
    let mut got: Vec<i64> = t
        .tensor("env_ids")
        .expect("env_ids")
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    got.sort();
    assert_eq!(got, vec![0, 2]);

    // Bad buffers are refused naming the field, in JSON.
    let neg: Vec<u8> = (-1i64).to_le_bytes().to_vec();
    for (path, body, field) in [
        ("step", b"not tensors".to_vec(), ""),
        (
            "step",
            tensors(&[("actions", Dtype::F64, vec![3, 1], vec![0; 24])]),
            "actions",
        ),
        (
            "step",
            tensors(&[("actions", Dtype::F32, vec![2, 1], vec![0; 8])]),
            "actions",
        ),
        (
            "step",
            tensors(&[("acts", Dtype::F32, vec![3, 1], vec![0; 12])]),
            "actions",
        ),
        (
            "step",
            tensors(&[(
                "actions",
                Dtype::F32,
                vec![3, 1],
                f32_bytes(&[0.0, f32::NAN, 0.0]),
            )]),
            "actions[1][0]",
        ),
        (
            "send",
            tensors(&[("actions", Dtype::F32, vec![1, 1], vec![0; 4])]),
            "env_ids",
        ),
        (
            "send",
            tensors(&[
                ("actions", Dtype::F32, vec![1, 1], vec![0; 4]),
                ("env_ids", Dtype::I64, vec![1], neg),
            ]),
            "env_ids[0]",
        ),
    ] {
        let (status, raw) =
            post_tensors(&node, &format!("/v1/gym/envs/{bin_id}/{path}"), body, true).await;
        assert_eq!(
            status,
            400,
            "{path} {field}: {}",
            String::from_utf8_lossy(&raw)
        );
        let v: Value = serde_json::from_slice(&raw).expect("a JSON error");
        assert_eq!(v["error"]["field"].as_str().unwrap_or(""), field, "{v}");
    }
    // Reset and recv take JSON only, and say so.
    for path in ["reset", "recv"] {
        let body = tensors(&[("actions", Dtype::F32, vec![3, 1], vec![0; 12])]);
        let (status, raw) =
            post_tensors(&node, &format!("/v1/gym/envs/{bin_id}/{path}"), body, true).await;
        assert_eq!(status, 415, "{path}: {}", String::from_utf8_lossy(&raw));
        let v: Value = serde_json::from_slice(&raw).expect("a JSON error");
        assert_eq!(v["error"]["field"], "content-type", "{v}");
    }
}

/// A batch whose caller is gone (a trainer killed mid-run) is deleted after
/// `gym.idle_timeout_s` without a request; one in use is not.
#[tokio::test]
async fn a_batch_no_request_reaches_is_deleted_after_the_idle_timeout_and_one_in_use_stays() {
    let node = TestNode::start_with(&[("HANZO_TWIN_GYM_IDLE_TIMEOUT_S", "3")], "").await;
    let batch = |body: Value| {
        let node = &node;
        async move {
            let (status, info) = create(node, body).await;
            assert_eq!(status, 201, "{info}");
            info["id"].as_str().expect("id").to_string()
        }
    };
    let abandoned = batch(json!({ "task": "cartpole-v0", "num_envs": 2 })).await;
    let used = batch(json!({ "task": "cartpole-v0", "num_envs": 2 })).await;
    let (status, _) = node
        .post(&format!("/v1/gym/envs/{used}/reset"), json!({ "seed": 1 }))
        .await;
    assert_eq!(status, 200);
    // The used one is stepped, never 3 s apart, until the other is gone.
    let started = std::time::Instant::now();
    loop {
        let (status, out) = node
            .post(
                &format!("/v1/gym/envs/{used}/step"),
                json!({ "actions": [[0.0], [0.0]] }),
            )
            .await;
        assert_eq!(status, 200, "the batch in use answers: {out}");
        let (status, _) = node.get(&format!("/v1/gym/envs/{abandoned}")).await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the idle batch is still there\n{}",
            node.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Past its own timeout since creation, the one in use still steps.
    while started.elapsed() < std::time::Duration::from_secs(4) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, _) = node
            .post(
                &format!("/v1/gym/envs/{used}/step"),
                json!({ "actions": [[0.0], [0.0]] }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, list) = node.get("/v1/gym/envs").await;
    let ids: Vec<&str> = list["envs"]
        .as_array()
        .expect("envs")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, [used.as_str()], "{list}");
    assert!(
        node.log().contains("no request for"),
        "the deletion is logged with its reason\n{}",
        node.log()
    );
}

fn decode_png(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("pixels");
    buf.truncate(info.buffer_size());
    (info, buf)
}

/// Gymnasium's `render()` through the node: one environment as a PNG; a
/// task's `camera_rgb` term observes the same picture as values in 0..1,
/// shaped as an image in `observation_parts`; a twin's control task with
/// `camera_images` observes each scene camera.
#[tokio::test]
async fn an_environment_renders_as_a_png_and_observes_camera_images() {
    let node = TestNode::start().await;
    let twin = node.create_sample("robot-arm.yaml", "gym-eye").await;
    let camera = "/World/Camera";
    let task = json!({
        "name": "arm-eye", "step_hz": 240, "frame_skip": 4,
        "observation": [
            { "joint_position": { "joint": "/World/Arm/shoulder_pitch" } },
            { "camera_rgb": { "camera": camera, "width": 32, "height": 24 } },
        ],
        "action": [{ "joint": "/World/Arm/shoulder_pitch", "mode": "position" }],
        "reward": [{ "alive": { "weight": 1.0 } }],
    });
    let (status, info) = create(
        &node,
        json!({ "task": task, "twin_id": twin, "num_envs": 2 }),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(
        info["observation_parts"][1],
        json!({ "name": format!("rgb:{camera}"), "size": 32 * 24 * 3, "shape": [24, 32, 3] })
    );
    let id = info["id"].as_str().expect("id").to_string();
    let get = |query: String| {
        let url = node.url(&format!("/v1/gym/envs/{id}/render{query}"));
        let http = node.http.clone();
        async move {
            let response = http.get(url).send().await.expect("render");
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, kind, response.bytes().await.expect("body").to_vec())
        }
    };
    let (status, v) = node
        .post(&format!("/v1/gym/envs/{id}/reset"), json!({ "seed": 2 }))
        .await;
    assert_eq!(status, 200, "{v}");
    let mut last = Value::Null;
    for _ in 0..5 {
        let (status, v) = node
            .post(
                &format!("/v1/gym/envs/{id}/step"),
                json!({ "actions": [[0.8], [-0.8]] }),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        last = v;
    }
    let observed = rows(&last, "observations");
    for (env, row) in observed.iter().enumerate() {
        let (status, kind, body) =
            get(format!("?env={env}&camera={camera}&width=32&height=24")).await;
        assert_eq!((status, kind.as_str()), (200, "image/png"));
        let (png_info, pixels) = decode_png(&body);
        assert_eq!(
            (png_info.width, png_info.height, png_info.color_type),
            (32, 24, png::ColorType::Rgb)
        );
        assert_eq!(row.len(), 1 + 32 * 24 * 3);
        let seen: Vec<u8> = row[1..].iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(seen, pixels, "env {env}: the observation is the picture");
    }
    // Arms driven apart look different.
    let (_, _, a) = get("?env=0&width=64&height=48".into()).await;
    let (_, _, b) = get("?env=1&width=64&height=48".into()).await;
    assert_ne!(decode_png(&a).1, decode_png(&b).1);
    // The default: 480×480 from the task's camera.
    let (status, _, body) = get(String::new()).await;
    assert_eq!(status, 200);
    assert_eq!(
        (decode_png(&body).0.width, decode_png(&body).0.height),
        (480, 480)
    );
    // Bad requests name the field.
    for (query, field) in [
        ("?env=2", "env"),
        ("?env=first", "env"),
        ("?width=0", "width"),
        ("?height=5000", "height"),
    ] {
        let (status, _, body) = get(query.into()).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    let (status, _, body) = get("?camera=/World/Nowhere".into()).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert!((400..500).contains(&status), "{v}");
    assert!(v.to_string().contains("/World/Nowhere"), "{v}");

    // The twin's control task with camera images: each scene camera's.
    let (status, info) = create(
        &node,
        json!({ "twin_id": twin, "camera_images": { "width": 16, "height": 12 } }),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    let parts = info["observation_parts"].as_array().expect("parts");
    assert_eq!(
        parts.last(),
        Some(
            &json!({ "name": format!("rgb:{camera}"), "size": 16 * 12 * 3, "shape": [12, 16, 3] })
        )
    );
    for (body, field) in [
        (
            json!({ "twin_id": twin, "camera_images": { "width": 0, "height": 12 } }),
            "camera_images",
        ),
        (
            json!({ "task": "cartpole-v0", "camera_images": { "width": 8, "height": 8 } }),
            "camera_images",
        ),
    ] {
        let (status, v) = create(&node, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
}

//! Authentication, organization isolation, the spec's RBAC table, the audit log,
//! rate limits, TLS and the development token, all against real node processes.

mod common;

use common::jwt::{AUDIENCE, ISSUER, claims, fixture, jwt_auth_yaml, jwt_node, sign, token};
use common::{NodeOptions, TestNode, bin, repo, shop_infra_definition};
use hanzo_twin_api::guard::Access;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

enum Body {
    None,
    Json(Value),
    Yaml(String),
    Bytes(Vec<u8>),
    Tar(Vec<u8>),
}

async fn send(
    node: &TestNode,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = node.anonymous.request(method, node.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req = match body {
        Body::None => req,
        Body::Json(v) => req.json(&v),
        Body::Yaml(y) => req.header("content-type", "application/yaml").body(y),
        Body::Bytes(b) => req
            .header("content-type", "application/octet-stream")
            .body(b),
        Body::Tar(b) => req.header("content-type", "application/x-tar").body(b),
    };
    let r = req.send().await.expect("request");
    let headers = r.headers().clone();
    let status = r.status().as_u16();
    // An event stream that was granted never ends: its status is the answer.
    let streaming = status == 200 && path.ends_with("/events");
    let bytes = if streaming {
        Default::default()
    } else {
        r.bytes().await.unwrap_or_default()
    };
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, headers)
}

/// The arm sample without its organization line, so the caller's applies.
fn arm_yaml(name: &str) -> String {
    let text =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    common::rename(&text, name)
        .lines()
        .filter(|l| !l.starts_with("organization:"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Creates a twin as `token`'s organization; starts it (paused) when `running`.
async fn make_twin(node: &TestNode, token: &str, name: &str, running: bool) -> String {
    let (status, body, _) = send(
        node,
        Method::POST,
        "/v1/twins",
        Some(token),
        Body::Yaml(arm_yaml(name)),
    )
    .await;
    assert_eq!(status, 201, "create {name}: {body}");
    let id = body["id"].as_str().expect("id").to_string();
    if running {
        let (status, body, _) = send(
            node,
            Method::POST,
            &format!("/v1/twins/{id}/start"),
            Some(token),
            Body::Json(json!({ "clock": "paused" })),
        )
        .await;
        assert_eq!(status, 200, "start {name}: {body}");
    }
    id
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// No twin in the path.
    NoTwin,
    /// The organization's shared twin (reads change nothing).
    Shared,
    /// A fresh twin per call, stopped or running.
    FreshStopped,
    FreshRunning,
    /// The organization's shared scene.
    SharedScene,
    /// A fresh scene per call.
    FreshScene,
    /// The organization's shared gym environment batch (8 cart-poles).
    SharedGym,
    /// A gym environment the caller itself made (own-only deletes).
    OwnGym,
    /// The organization's shared job (queued behind a long one).
    SharedJob,
    /// A job the caller itself submitted (own-only cancels).
    OwnJob,
    /// The organization's running infrastructure twin (chaos adds faults
    /// to it; reads change nothing).
    SharedInfra,
}

struct Case {
    method: Method,
    path: &'static str,
    /// The spec's table, written out independently of the node's code.
    allowed: &'static [&'static str],
    ok: u16,
    target: Target,
    body: fn(&Ctx) -> Body,
}

struct Ctx {
    checkpoint: Vec<u8>,
    scene_tar: Vec<u8>,
    counter: std::sync::atomic::AtomicU32,
}

impl Ctx {
    fn next(&self) -> u32 {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn unique(&self, base: &str) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{base}-{n}")
    }
}

/// A comparison needs MuJoCo beside rapier3d: 422 (not available) in a build
/// without it.
const COMPARE_OK: u16 = if cfg!(feature = "mujoco") { 200 } else { 422 };

const ALL: &[&str] = &["twin-admin", "twin-operator", "twin-viewer"];
const ADMIN: &[&str] = &["twin-admin"];
const RUNNERS: &[&str] = &["twin-admin", "twin-operator"];

fn no_body(_: &Ctx) -> Body {
    Body::None
}

fn cases() -> Vec<Case> {
    use Target::*;
    vec![
        Case {
            method: Method::GET,
            path: "/v1/engines",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/engines/compare",
            allowed: RUNNERS,
            ok: COMPARE_OK,
            target: NoTwin,
            body: |_| {
                Body::Json(json!({
                    "scene": { "uri": "robot-arm/scene.usda" },
                    "engines": ["rapier3d", "mujoco"],
                    "steps": 5,
                }))
            },
        },
        Case {
            method: Method::GET,
            path: "/v1/gym/envs",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/gym/envs",
            allowed: RUNNERS,
            ok: 201,
            target: NoTwin,
            body: |_| Body::Json(json!({ "task": "cartpole-v0", "num_envs": 1 })),
        },
        Case {
            method: Method::GET,
            path: "/v1/gym/envs/{id}",
            allowed: ALL,
            ok: 200,
            target: SharedGym,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/gym/envs/{id}/render?width=8&height=8",
            allowed: ALL,
            ok: 200,
            target: SharedGym,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/gym/envs/{id}/reset",
            allowed: RUNNERS,
            ok: 200,
            target: SharedGym,
            body: |_| Body::Json(json!({ "seed": 3 })),
        },
        Case {
            method: Method::POST,
            path: "/v1/gym/envs/{id}/step",
            allowed: RUNNERS,
            ok: 200,
            target: SharedGym,
            body: |_| Body::Json(json!({ "actions": vec![[0.0]; 8] })),
        },
        Case {
            method: Method::POST,
            path: "/v1/gym/envs/{id}/send",
            allowed: RUNNERS,
            ok: 202,
            target: SharedGym,
            // Each call steps another environment, so none is in flight twice.
            body: |ctx| Body::Json(json!({ "env_ids": [ctx.next() % 8], "actions": [[0.0]] })),
        },
        Case {
            method: Method::POST,
            path: "/v1/gym/envs/{id}/recv",
            allowed: RUNNERS,
            ok: 200,
            target: SharedGym,
            body: |_| Body::Json(json!({ "batch_size": 1 })),
        },
        Case {
            method: Method::DELETE,
            path: "/v1/gym/envs/{id}",
            allowed: RUNNERS,
            ok: 204,
            target: OwnGym,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/jobs",
            allowed: RUNNERS,
            ok: 201,
            target: NoTwin,
            body: |_| Body::Json(queued_job()),
        },
        // The guard's answer is what counts here: an allowed caller reaches
        // the handler, which finds no such twin or dataset (tests/synthdata.rs
        // runs generations through).
        Case {
            method: Method::POST,
            path: "/v1/synthdata",
            allowed: RUNNERS,
            ok: 404,
            target: NoTwin,
            body: |_| Body::Json(synthdata_spec("no-such-twin")),
        },
        Case {
            method: Method::GET,
            path: "/v1/synthdata/{id}",
            allowed: ALL,
            ok: 404,
            target: SharedJob,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/synthdata/{id}/dataset",
            allowed: ALL,
            ok: 404,
            target: SharedJob,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/jobs",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/jobs/{id}",
            allowed: ALL,
            ok: 200,
            target: SharedJob,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/jobs/{id}/cancel",
            allowed: RUNNERS,
            ok: 200,
            target: OwnJob,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/jobs/{id}/logs?follow=false",
            allowed: ALL,
            ok: 200,
            target: SharedJob,
            body: no_body,
        },
        // The queued job has produced nothing yet: not found to those who
        // may read it, forbidden to the others.
        Case {
            method: Method::GET,
            path: "/v1/jobs/{id}/artifacts/{name}",
            allowed: ALL,
            ok: 404,
            target: SharedJob,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/cluster/tree",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/cluster/tree/events",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/cluster/stats",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/whoami",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/cluster/nodes",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/audit",
            allowed: ADMIN,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/twins",
            allowed: ADMIN,
            ok: 201,
            target: NoTwin,
            body: |c| Body::Yaml(arm_yaml(&c.unique("matrix-created"))),
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::PATCH,
            path: "/v1/twins/{id}",
            allowed: ADMIN,
            ok: 200,
            target: FreshStopped,
            body: |_| Body::Json(json!({ "tags": ["patched"] })),
        },
        Case {
            method: Method::DELETE,
            path: "/v1/twins/{id}",
            allowed: ADMIN,
            ok: 204,
            target: FreshStopped,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/start",
            allowed: RUNNERS,
            ok: 200,
            target: FreshStopped,
            body: |_| Body::Json(json!({ "clock": "paused" })),
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/stop",
            allowed: RUNNERS,
            ok: 200,
            target: FreshRunning,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/state",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/fork",
            allowed: ADMIN,
            ok: 201,
            target: FreshRunning,
            body: |_| Body::Json(json!({})),
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/step",
            allowed: RUNNERS,
            ok: 200,
            target: FreshRunning,
            body: |_| Body::Json(json!({ "steps": 2 })),
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/commands",
            allowed: RUNNERS,
            ok: 204,
            target: FreshRunning,
            body: |_| {
                Body::Json(
                    json!({ "commands": [{ "joint": "/World/Arm/elbow", "mode": "position", "value": 0.3 }] }),
                )
            },
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/observation",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/geometry",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/poses/events",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/render",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/clock",
            allowed: RUNNERS,
            ok: 200,
            target: FreshRunning,
            body: |_| Body::Json(json!({ "clock": "paused" })),
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/parameters",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::PUT,
            path: "/v1/twins/{id}/parameters",
            allowed: ADMIN,
            ok: 200,
            target: FreshRunning,
            body: |_| Body::Json(json!({ "values": { "/World/Arm/elbow.damping": 12.0 } })),
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/sync/status",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/sync/history",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/checkpoint",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::PUT,
            path: "/v1/twins/{id}/checkpoint",
            allowed: ADMIN,
            ok: 200,
            target: FreshRunning,
            body: |c| Body::Bytes(c.checkpoint.clone()),
        },
        Case {
            method: Method::POST,
            path: "/v1/twins/{id}/faults",
            allowed: ADMIN,
            ok: 202,
            target: FreshRunning,
            body: |_| Body::Json(json!({ "fault": "panic" })),
        },
        Case {
            method: Method::GET,
            path: "/v1/infra/twins",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/infra/twins/{id}",
            allowed: ALL,
            ok: 200,
            target: SharedInfra,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/infra/twins/{id}/inject",
            allowed: ADMIN,
            ok: 202,
            target: SharedInfra,
            body: |_| Body::Json(json!({ "scenario": "pod-kill", "target": "deployment/gateway" })),
        },
        Case {
            method: Method::POST,
            path: "/v1/infra/twins/{id}/replay",
            allowed: RUNNERS,
            ok: 201,
            target: SharedInfra,
            body: |_| {
                Body::Json(json!({ "from": "2026-02-20T00:00:00Z", "to": "2026-02-21T00:00:00Z" }))
            },
        },
        Case {
            method: Method::GET,
            path: "/v1/twins/{id}/export",
            allowed: ALL,
            ok: 200,
            target: Shared,
            body: no_body,
        },
        Case {
            method: Method::GET,
            path: "/v1/scenes",
            allowed: ALL,
            ok: 200,
            target: NoTwin,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/scenes?name=uploaded",
            allowed: ADMIN,
            ok: 201,
            target: NoTwin,
            body: |c| Body::Tar(c.scene_tar.clone()),
        },
        Case {
            method: Method::GET,
            path: "/v1/scenes/{id}",
            allowed: ALL,
            ok: 200,
            target: SharedScene,
            body: no_body,
        },
        Case {
            method: Method::DELETE,
            path: "/v1/scenes/{id}",
            allowed: ADMIN,
            ok: 204,
            target: FreshScene,
            body: no_body,
        },
        Case {
            method: Method::POST,
            path: "/v1/scenes/{id}/validate",
            allowed: ALL,
            ok: 200,
            target: SharedScene,
            body: |_| Body::Json(json!({ "engine": "rapier3d" })),
        },
        Case {
            method: Method::GET,
            path: "/v1/scenes/{id}/download",
            allowed: ALL,
            ok: 200,
            target: SharedScene,
            body: no_body,
        },
    ]
}

/// A training job that stays queued while the node's one job slot is taken.
fn synthdata_spec(twin: &str) -> Value {
    json!({
        "twin_id": twin,
        "output_dataset": "matrix",
        "cameras": [{"path": "/World/Camera", "resolution": [16, 12]}],
        "labels": ["bounding_box_2d"],
        "num_frames": 1
    })
}

fn queued_job() -> Value {
    json!({ "kind": "train", "task": "cartpole-v0", "total_steps": 1000, "num_envs": 1 })
}

/// Submits a job as `token`'s caller.
async fn make_job(node: &TestNode, token: &str, spec: Value) -> String {
    let (status, body, _) = send(
        node,
        Method::POST,
        "/v1/jobs",
        Some(token),
        Body::Json(spec),
    )
    .await;
    assert_eq!(status, 201, "job: {body}");
    body["id"].as_str().expect("id").to_string()
}

/// Makes a batch of `n` cart-poles as `token`'s caller and resets it.
async fn make_gym(node: &TestNode, token: &str, n: usize) -> String {
    let (status, body, _) = send(
        node,
        Method::POST,
        "/v1/gym/envs",
        Some(token),
        Body::Json(json!({ "task": "cartpole-v0", "num_envs": n })),
    )
    .await;
    assert_eq!(status, 201, "gym: {body}");
    let id = body["id"].as_str().expect("id").to_string();
    let (status, body, _) = send(
        node,
        Method::POST,
        &format!("/v1/gym/envs/{id}/reset"),
        Some(token),
        Body::Json(json!({ "seed": 1 })),
    )
    .await;
    assert_eq!(status, 200, "gym reset: {body}");
    id
}

/// A tar of the robot arm's scene folder.
pub fn arm_scene_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_dir_all(".", repo().join("configs/scenes/robot-arm"))
        .expect("pack");
    builder.into_inner().expect("tar")
}

async fn make_scene(node: &TestNode, token: &str, name: &str, tar: &[u8]) {
    let (status, body, _) = send(
        node,
        Method::POST,
        &format!("/v1/scenes?name={name}"),
        Some(token),
        Body::Tar(tar.to_vec()),
    )
    .await;
    assert_eq!(status, 201, "upload {name}: {body}");
}

const ORGS: [&str; 2] = ["acme", "globex"];

#[tokio::test]
async fn every_endpoint_enforces_the_spec_roles_per_organization() {
    // One job slot, taken by a long training job, so every other job stays
    // queued (cancellable) throughout; its worker runs at low priority.
    let python = std::env::var("HANZO_TWIN_TEST_PYTHON").ok();
    let auth = jwt_auth_yaml();
    let mut env = vec![("HANZO_TWIN_SCHEDULER_MAX_CONCURRENT_JOBS", "1")];
    if let Some(p) = &python {
        env.push(("HANZO_TWIN_SCHEDULER_PYTHON", p));
    } else {
        eprintln!(
            "SKIPPED: cancelling jobs in the matrix needs HANZO_TWIN_TEST_PYTHON (a trainer that keeps the job slot); run scripts/test.sh"
        );
    }
    let node = TestNode::start_opts(NodeOptions {
        auth_yaml: &auth,
        env: &env,
        ..Default::default()
    })
    .await;
    let cases = cases();

    // The test's table covers exactly the node's routes: a new route fails
    // here until its row is written.
    let ours: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| {
            let path = c.path.split('?').next().unwrap_or(c.path);
            (c.method.to_string(), path.to_string())
        })
        .collect();
    let routes: BTreeSet<(String, String)> = hanzo_twin_api::endpoints()
        .iter()
        .filter(|e| e.access != Access::Public)
        .map(|e| (e.method.to_string(), e.path.to_string()))
        .collect();
    assert_eq!(ours, routes, "the matrix must list every protected route");
    let public: Vec<_> = hanzo_twin_api::endpoints()
        .into_iter()
        .filter(|e| e.access == Access::Public)
        .map(|e| e.path)
        .collect();
    assert_eq!(
        public,
        [
            "/alive",
            "/ready",
            "/v1/openapi.json",
            "/docs",
            // Pages and their scripts: no data without a token.
            "/inspector",
            "/inspector/twins/{id}",
            "/inspector/assets/{file}"
        ]
    );

    let shared: Vec<String> = {
        let mut ids = Vec::new();
        for org in ORGS {
            ids.push(
                make_twin(
                    &node,
                    &token(org, "twin-admin"),
                    &format!("{org}-shared"),
                    true,
                )
                .await,
            );
        }
        ids
    };
    let (status, _, _) = send(
        &node,
        Method::GET,
        &format!("/v1/twins/{}/checkpoint", shared[0]),
        Some(&token("acme", "twin-admin")),
        Body::None,
    )
    .await;
    assert_eq!(status, 200);
    let checkpoint = node
        .anonymous
        .get(node.url(&format!("/v1/twins/{}/checkpoint", shared[0])))
        .bearer_auth(token("acme", "twin-admin"))
        .send()
        .await
        .expect("checkpoint")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let scene_tar = arm_scene_tar();
    for org in ORGS {
        make_scene(
            &node,
            &token(org, "twin-admin"),
            &format!("{org}-scene"),
            &scene_tar,
        )
        .await;
    }
    let mut shared_gyms = Vec::new();
    for org in ORGS {
        shared_gyms.push(make_gym(&node, &token(org, "twin-admin"), 8).await);
    }
    let mut blocker = queued_job();
    blocker["total_steps"] = json!(100_000_000);
    let blocker = make_job(&node, &token("acme", "twin-admin"), blocker).await;
    let mut shared_jobs = Vec::new();
    for org in ORGS {
        shared_jobs.push(make_job(&node, &token(org, "twin-admin"), queued_job()).await);
    }
    let mut shared_infra = Vec::new();
    for org in ORGS {
        let admin = token(org, "twin-admin");
        let (status, body, _) = send(
            &node,
            Method::POST,
            "/v1/twins",
            Some(&admin),
            Body::Json(shop_infra_definition(&format!("{org}-infra"))),
        )
        .await;
        assert_eq!(status, 201, "create {org}'s infrastructure twin: {body}");
        let id = body["id"].as_str().expect("id").to_string();
        let (status, body, _) = send(
            &node,
            Method::POST,
            &format!("/v1/twins/{id}/start"),
            Some(&admin),
            Body::Json(json!({ "clock": "paused" })),
        )
        .await;
        assert_eq!(status, 200, "start {org}'s infrastructure twin: {body}");
        shared_infra.push(id);
    }
    let ctx = Ctx {
        checkpoint,
        scene_tar,
        counter: Default::default(),
    };

    let mut checked = 0;
    for case in &cases {
        if case.target == Target::OwnJob && python.is_none() {
            continue;
        }
        for (org_index, org) in ORGS.iter().enumerate() {
            let other = 1 - org_index;
            for role in ALL {
                let caller = token(org, role);
                let allowed = case.allowed.contains(role);
                let what = format!("{role}@{org} {} {}", case.method, case.path);
                // Own organization.
                let own_id = match case.target {
                    Target::NoTwin => None,
                    Target::Shared => Some(shared[org_index].clone()),
                    Target::SharedScene => Some(format!("{org}-scene")),
                    Target::SharedGym => Some(shared_gyms[org_index].clone()),
                    Target::OwnGym if !allowed => Some(shared_gyms[org_index].clone()),
                    Target::OwnGym => Some(make_gym(&node, &caller, 1).await),
                    Target::SharedJob => Some(shared_jobs[org_index].clone()),
                    Target::SharedInfra => Some(shared_infra[org_index].clone()),
                    Target::OwnJob if !allowed => Some(shared_jobs[org_index].clone()),
                    Target::OwnJob => Some(make_job(&node, &caller, queued_job()).await),
                    // A refused call must not touch anything: aim it at the
                    // shared twin or scene, which the later checks read back.
                    Target::FreshScene if !allowed => Some(format!("{org}-scene")),
                    _ if !allowed => Some(shared[org_index].clone()),
                    Target::FreshScene => {
                        let name = ctx.unique(&format!("{org}-s"));
                        make_scene(&node, &token(org, "twin-admin"), &name, &ctx.scene_tar).await;
                        Some(name)
                    }
                    Target::FreshStopped | Target::FreshRunning => {
                        let admin = token(org, "twin-admin");
                        let running = case.target == Target::FreshRunning;
                        Some(
                            make_twin(&node, &admin, &ctx.unique(&format!("{org}-m")), running)
                                .await,
                        )
                    }
                };
                let path = match &own_id {
                    Some(id) => case.path.replace("{id}", id),
                    None => case.path.to_string(),
                };
                let (status, body, _) = send(
                    &node,
                    case.method.clone(),
                    &path,
                    Some(&caller),
                    (case.body)(&ctx),
                )
                .await;
                let expected = if allowed { case.ok } else { 403 };
                assert_eq!(status, expected, "{what} (own org): {body}");
                if !allowed {
                    assert_eq!(body["error"]["code"], "forbidden", "{what}");
                    let message = body["error"]["message"].as_str().unwrap_or("");
                    assert!(
                        message.contains(role) && message.contains("twin-admin"),
                        "{what}: {message}"
                    );
                }
                checked += 1;
                // Another organization's twin: as if it did not exist.
                if case.target != Target::NoTwin {
                    let foreign = match case.target {
                        Target::SharedScene | Target::FreshScene => {
                            format!("{}-scene", ORGS[other])
                        }
                        Target::SharedGym | Target::OwnGym => shared_gyms[other].clone(),
                        Target::SharedJob | Target::OwnJob => shared_jobs[other].clone(),
                        Target::SharedInfra => shared_infra[other].clone(),
                        _ => shared[other].clone(),
                    };
                    let path = case.path.replace("{id}", &foreign);
                    let (status, body, _) = send(
                        &node,
                        case.method.clone(),
                        &path,
                        Some(&caller),
                        (case.body)(&ctx),
                    )
                    .await;
                    let expected = if allowed { 404 } else { 403 };
                    assert_eq!(status, expected, "{what} (other org's twin): {body}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 150, "{checked} calls checked");

    // Operators cancel their own jobs only; refused calls changed nothing.
    if python.is_some() {
        let (status, body, _) = send(
            &node,
            Method::POST,
            &format!("/v1/jobs/{}/cancel", shared_jobs[0]),
            Some(&token("acme", "twin-operator")),
            Body::None,
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("only your own jobs")),
            "{body}"
        );
    }
    for (i, org) in ORGS.iter().enumerate().filter(|_| python.is_some()) {
        let (status, body, _) = send(
            &node,
            Method::GET,
            &format!("/v1/jobs/{}", shared_jobs[i]),
            Some(&token(org, "twin-viewer")),
            Body::None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["state"], "queued", "{body}");
    }
    let (status, body, _) = send(
        &node,
        Method::POST,
        &format!("/v1/jobs/{blocker}/cancel"),
        Some(&token("acme", "twin-admin")),
        Body::None,
    )
    .await;
    assert!(status == 200 || python.is_none(), "{body}");

    // The shared twins were only read, never changed, by refused calls.
    for (i, org) in ORGS.iter().enumerate() {
        let (status, body, _) = send(
            &node,
            Method::GET,
            &format!("/v1/twins/{}", shared[i]),
            Some(&token(org, "twin-viewer")),
            Body::None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["status"]["state"], "running", "{body}");
        assert_eq!(body["tags"], json!(["robot", "arm", "demo"]), "{body}");
    }

    // Unauthenticated and badly authenticated calls fail on every protected
    // route, before anything happens.
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims("acme", &["twin-admin"], "admin@acme");
    expired["exp"] = json!(now - 120);
    expired["iat"] = json!(now - 3600);
    let mut wrong_audience = claims("acme", &["twin-admin"], "admin@acme");
    wrong_audience["aud"] = json!("someone-else");
    let bad_tokens: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "needs a bearer token"),
        (
            "expired",
            Some(sign("rsa-signing.pem", Algorithm::RS256, None, &expired)),
            "expired",
        ),
        (
            "unknown key",
            Some(sign(
                "rogue-rsa-signing.pem",
                Algorithm::RS256,
                None,
                &claims("acme", &["twin-admin"], "x"),
            )),
            "signature does not verify",
        ),
        (
            "unknown kid",
            Some(sign(
                "rogue-ec-signing.pem",
                Algorithm::ES256,
                Some("rogue-1"),
                &claims("acme", &["twin-admin"], "x"),
            )),
            "unknown key",
        ),
        (
            "wrong audience",
            Some(sign(
                "rsa-signing.pem",
                Algorithm::RS256,
                None,
                &wrong_audience,
            )),
            "audience",
        ),
    ];
    for case in &cases {
        let path = case.path.replace("{id}", &shared[0]);
        for (label, bad, expect) in &bad_tokens {
            let (status, body, headers) = send(
                &node,
                case.method.clone(),
                &path,
                bad.as_deref(),
                (case.body)(&ctx),
            )
            .await;
            assert_eq!(status, 401, "{label} {} {}: {body}", case.method, case.path);
            assert_eq!(body["error"]["code"], "unauthenticated");
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(message.contains(expect), "{label}: {message}");
            assert!(
                headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{label}: WWW-Authenticate"
            );
        }
    }
    for path in ["/alive", "/ready", "/v1/openapi.json", "/docs"] {
        let (status, _, _) = send(&node, Method::GET, path, None, Body::None).await;
        assert_eq!(status, 200, "{path} is public");
    }
    // The API's description is served as it is built, and names every route.
    let (_, doc, _) = send(&node, Method::GET, "/v1/openapi.json", None, Body::None).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    for e in hanzo_twin_api::endpoints() {
        assert!(
            doc["paths"][e.path][e.method.to_ascii_lowercase()].is_object(),
            "{} {} is not in /v1/openapi.json",
            e.method,
            e.path
        );
    }
}

#[tokio::test]
async fn organizations_see_only_their_own_twins() {
    let node = jwt_node().await;
    let acme_admin = token("acme", "twin-admin");
    let globex_admin = token("globex", "twin-admin");
    let acme_twin = make_twin(&node, &acme_admin, "cell", true).await;
    let globex_twin = make_twin(&node, &globex_admin, "cell", true).await;
    // The same name in two organizations is fine.
    assert_ne!(acme_twin, globex_twin);

    // Lists hold only the caller's organization, whatever the filter says.
    for (org, own) in [("acme", &acme_twin), ("globex", &globex_twin)] {
        let viewer = token(org, "twin-viewer");
        let (_, body, _) = send(&node, Method::GET, "/v1/twins", Some(&viewer), Body::None).await;
        let twins = body["twins"].as_array().expect("twins");
        assert_eq!(twins.len(), 1, "{body}");
        assert_eq!(&twins[0]["id"], own);
        assert_eq!(twins[0]["organization"], org);
        let other = if org == "acme" { "globex" } else { "acme" };
        let (_, body, _) = send(
            &node,
            Method::GET,
            &format!("/v1/twins?org={other}"),
            Some(&viewer),
            Body::None,
        )
        .await;
        assert_eq!(body["twins"], json!([]), "{body}");
    }

    // By name, a twin resolves within the caller's organization only.
    let (status, body, _) = send(
        &node,
        Method::GET,
        "/v1/twins/cell",
        Some(&acme_admin),
        Body::None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], json!(acme_twin));

    // Another organization's twin reads exactly like one that does not exist.
    let (status, foreign, _) = send(
        &node,
        Method::GET,
        &format!("/v1/twins/{globex_twin}"),
        Some(&acme_admin),
        Body::None,
    )
    .await;
    let ghost = "0190c0de-0000-7000-8000-000000000000";
    let (ghost_status, missing, _) = send(
        &node,
        Method::GET,
        &format!("/v1/twins/{ghost}"),
        Some(&acme_admin),
        Body::None,
    )
    .await;
    assert_eq!((status, ghost_status), (404, 404));
    assert_eq!(
        foreign["error"]["message"]
            .as_str()
            .map(|m| m.replace(&globex_twin, "ID")),
        missing["error"]["message"]
            .as_str()
            .map(|m| m.replace(ghost, "ID")),
    );

    // Forks belong to their parent's organization.
    let (status, fork, _) = send(
        &node,
        Method::POST,
        &format!("/v1/twins/{acme_twin}/fork"),
        Some(&acme_admin),
        Body::Json(json!({ "name": "acme-fork" })),
    )
    .await;
    assert_eq!(status, 201, "{fork}");
    assert_eq!(fork["organization"], "acme");
    let fork_id = fork["id"].as_str().expect("fork id");
    let (status, _, _) = send(
        &node,
        Method::POST,
        &format!("/v1/twins/{fork_id}/step"),
        Some(&globex_admin),
        Body::Json(json!({ "steps": 1 })),
    )
    .await;
    assert_eq!(status, 404);

    // Creating into another organization is refused, naming the field.
    let text = common::rename(
        &std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample"),
        "intruder",
    )
    .replace("organization: default", "organization: globex");
    let (status, body, _) = send(
        &node,
        Method::POST,
        "/v1/twins",
        Some(&acme_admin),
        Body::Yaml(text),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["field"], "organization");
    // A definition naming the caller's own organization is fine.
    let text = arm_yaml("explicit").replace("name: explicit", "name: explicit\norganization: acme");
    let (status, body, _) = send(
        &node,
        Method::POST,
        "/v1/twins",
        Some(&acme_admin),
        Body::Yaml(text),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Moving a twin between organizations by PATCH is refused.
    let (status, body, _) = send(
        &node,
        Method::PATCH,
        &format!("/v1/twins/{acme_twin}"),
        Some(&acme_admin),
        Body::Json(json!({ "organization": "globex" })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "organization");
}

#[tokio::test]
async fn other_token_problems_are_explained() {
    let node = jwt_node().await;
    let now = chrono::Utc::now().timestamp();
    let path = "/v1/twins";
    let check = |token: String, expect: &'static str| {
        let node = &node;
        async move {
            let (status, body, _) = send(node, Method::GET, path, Some(&token), Body::None).await;
            assert_eq!(status, 401, "{expect}: {body}");
            let message = body["error"]["message"].as_str().unwrap_or("").to_string();
            assert!(message.contains(expect), "{expect}: {message}");
        }
    };
    let mut c = claims("acme", &["twin-admin"], "a");
    c["iss"] = json!("https://elsewhere");
    check(
        sign("rsa-signing.pem", Algorithm::RS256, None, &c),
        "issuer",
    )
    .await;
    let mut c = claims("acme", &["twin-admin"], "a");
    c.as_object_mut().expect("object").remove("org");
    check(
        sign("rsa-signing.pem", Algorithm::RS256, None, &c),
        "no `org` claim",
    )
    .await;
    let mut c = claims("acme", &["twin-admin"], "a");
    c["org"] = json!("../etc");
    check(
        sign("rsa-signing.pem", Algorithm::RS256, None, &c),
        "`org` claim is invalid",
    )
    .await;
    let mut c = claims("acme", &["twin-admin"], "a");
    c["nbf"] = json!(now + 600);
    check(
        sign("rsa-signing.pem", Algorithm::RS256, None, &c),
        "not valid yet",
    )
    .await;
    let c = claims("acme", &["twin-admin"], "a");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    check(hs, "RS256 or ES256").await;
    check("a.b.c".into(), "not a well-formed JWT").await;
    // A key from the JWKS used without its kid still verifies (kid-less keys
    // are tried), but a kid naming the PEM-only key's family does not help a
    // forged signature.
    let (status, body, _) = send(
        &node,
        Method::GET,
        path,
        Some(&sign(
            "ec-signing.pem",
            Algorithm::ES256,
            Some("test-ec-1"),
            &claims("globex", &["twin-viewer"], "v"),
        )),
        Body::None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = send(&node, Method::GET, path, None, Body::None).await;
    assert_eq!(status, 401);
    let r = node
        .anonymous
        .get(node.url(path))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);

    // A valid token without any of the spec's roles may do nothing.
    let c = claims("acme", &["billing"], "nobody");
    let (status, body, _) = send(
        &node,
        Method::GET,
        path,
        Some(&sign("rsa-signing.pem", Algorithm::RS256, None, &c)),
        Body::None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no twin role")
    );

    // Roles may also come as one space-separated string.
    let mut c = claims("acme", &[], "spaces");
    c["roles"] = json!("twin-viewer other");
    let (status, _, _) = send(
        &node,
        Method::GET,
        path,
        Some(&sign("rsa-signing.pem", Algorithm::RS256, None, &c)),
        Body::None,
    )
    .await;
    assert_eq!(status, 200);
}

async fn audit(node: &TestNode, token: &str, query: &str) -> (u16, Value) {
    let (status, body, _) = send(
        node,
        Method::GET,
        &format!("/v1/audit{query}"),
        Some(token),
        Body::None,
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn changes_are_audited_durably_and_admins_read_their_organization() {
    let mut node = jwt_node().await;
    let admin = token("acme", "twin-admin");
    let operator = token("acme", "twin-operator");
    let started = chrono::Utc::now();

    let id = make_twin(&node, &admin, "audited", true).await;
    let (status, fork, _) = send(
        &node,
        Method::POST,
        &format!("/v1/twins/{id}/fork"),
        Some(&admin),
        Body::Json(json!({})),
    )
    .await;
    assert_eq!(status, 201);
    let fork_id = fork["id"].as_str().expect("id").to_string();
    // Refused, and failed, attempts are recorded too.
    let (status, _, _) = send(
        &node,
        Method::DELETE,
        &format!("/v1/twins/{id}"),
        Some(&operator),
        Body::None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = send(
        &node,
        Method::POST,
        &format!("/v1/twins/{id}/start"),
        Some(&operator),
        Body::Json(json!({})),
    )
    .await;
    assert_eq!(status, 409, "already running");
    let (status, _, _) = send(
        &node,
        Method::POST,
        &format!("/v1/twins/{fork_id}/faults"),
        Some(&admin),
        Body::Json(json!({ "fault": "panic" })),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, _) = send(
        &node,
        Method::POST,
        &format!("/v1/twins/{id}/stop"),
        Some(&operator),
        Body::None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        &node,
        Method::DELETE,
        &format!("/v1/twins/{id}"),
        Some(&admin),
        Body::None,
    )
    .await;
    assert_eq!(status, 204);
    // Reads and the control loop are not audited; another organization's
    // changes are not visible here.
    step_as(&node, &admin, &fork_id).await;
    make_twin(&node, &token("globex", "twin-admin"), "theirs", false).await;

    let expected = [
        ("twins.create", "ok", 201, "twin-admin@acme"),
        ("twins.start", "ok", 200, "twin-admin@acme"),
        ("twins.fork", "ok", 201, "twin-admin@acme"),
        ("twins.delete", "denied", 403, "twin-operator@acme"),
        ("twins.start", "failed", 409, "twin-operator@acme"),
        ("infra.inject_chaos", "ok", 202, "twin-admin@acme"),
        ("twins.stop", "ok", 200, "twin-operator@acme"),
        ("twins.delete", "ok", 204, "twin-admin@acme"),
    ];
    let check = |body: &Value| {
        let mut entries = body["entries"].as_array().expect("entries").clone();
        entries.reverse(); // oldest first
        let got: Vec<(String, String, u64, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or("").to_string(),
                    e["outcome"].as_str().unwrap_or("").to_string(),
                    e["status"].as_u64().unwrap_or(0),
                    e["actor"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, u64, String)> = expected
            .iter()
            .map(|(a, o, s, who)| (a.to_string(), o.to_string(), *s as u64, who.to_string()))
            .collect();
        assert_eq!(got, want, "{body}");
        for e in &entries {
            assert_eq!(e["organization"], "acme");
            assert!(e["time"].as_str().is_some());
        }
        assert_eq!(
            entries[0]["created"],
            json!(id),
            "create names the new twin"
        );
        assert_eq!(entries[2]["target"], json!(id));
        assert_eq!(entries[2]["created"], json!(fork_id), "fork names the fork");
        assert_eq!(entries[4]["error"], "conflict");
        assert_eq!(entries[5]["permission"], "infra:inject_chaos");
    };
    let (status, body) = audit(&node, &admin, "").await;
    assert_eq!(status, 200, "{body}");
    check(&body);

    // Filters: actor, action, outcome, time, and paging.
    let (_, body) = audit(&node, &admin, "?actor=twin-operator@acme").await;
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(3), "{body}");
    let (_, body) = audit(&node, &admin, "?action=twins.fork").await;
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, body) = audit(&node, &admin, "?outcome=denied").await;
    assert_eq!(body["entries"][0]["action"], "twins.delete");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, body) = audit(&node, &admin, &format!("?since={}", urlencode(&future))).await;
    assert_eq!(body["entries"], json!([]));
    let (_, body) = audit(
        &node,
        &admin,
        &format!("?until={}", urlencode(&started.to_rfc3339())),
    )
    .await;
    assert_eq!(body["entries"], json!([]));
    let (_, page1) = audit(&node, &admin, "?limit=5").await;
    assert_eq!(page1["entries"].as_array().map(Vec::len), Some(5));
    let before = page1["next_before"].as_u64().expect("next page");
    let (_, page2) = audit(&node, &admin, &format!("?limit=5&before={before}")).await;
    assert_eq!(
        page2["entries"].as_array().map(Vec::len),
        Some(3),
        "{page2}"
    );
    assert_eq!(page2["next_before"], Value::Null);

    // Bad filters name the field.
    for (query, field) in [
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
        ("?limit=lots", "limit"),
        ("?outcome=maybe", "outcome"),
    ] {
        let (status, body) = audit(&node, &admin, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    // Only admins read the log, and only their organization's.
    for role in ["twin-operator", "twin-viewer"] {
        let (status, _) = audit(&node, &token("acme", role), "").await;
        assert_eq!(status, 403, "{role}");
    }
    let (_, body) = audit(&node, &token("globex", "twin-admin"), "").await;
    let theirs = body["entries"].as_array().expect("entries");
    assert_eq!(theirs.len(), 1, "{body}");
    assert_eq!(theirs[0]["organization"], "globex");

    // Durable: a kill -9 loses nothing that was acknowledged.
    node.restart(true).await;
    let (_, body) = audit(&node, &admin, "").await;
    check(&body);
    // And ids keep increasing across the restart.
    let newest = body["entries"][0]["id"].as_u64().expect("id");
    make_twin(&node, &admin, "after-restart", false).await;
    let (_, body) = audit(&node, &admin, "?limit=1").await;
    assert!(body["entries"][0]["id"].as_u64().expect("id") > newest);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn step_as(node: &TestNode, token: &str, id: &str) {
    let (status, body, _) = send(
        node,
        Method::POST,
        &format!("/v1/twins/{id}/step"),
        Some(token),
        Body::Json(json!({ "steps": 1 })),
    )
    .await;
    // The fork restarted after its injected panic; it may still be coming
    // back, but either way stepping is not audited.
    assert!(matches!(status, 200 | 409 | 503), "{status}: {body}");
}

#[tokio::test]
async fn tokens_are_rate_limited_each_on_their_own() {
    let auth = format!(
        "{}  rate_limit:\n    per_second: 1\n    burst: 3\n    control_per_second: 1\n    control_burst: 6\n",
        jwt_auth_yaml()
    );
    let node = TestNode::start_opts(NodeOptions {
        auth_yaml: &auth,
        ..Default::default()
    })
    .await;
    let busy = token("acme", "twin-viewer");
    let quiet = token("globex", "twin-viewer");
    for _ in 0..3 {
        let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&busy), Body::None).await;
        assert_eq!(status, 200);
    }
    let (status, body, headers) =
        send(&node, Method::GET, "/v1/twins", Some(&busy), Body::None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1, "{retry}");
    // Another token is not slowed by this one.
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&quiet), Body::None).await;
    assert_eq!(status, 200);
    // Probes are never limited.
    let (status, _, _) = send(&node, Method::GET, "/alive", None, Body::None).await;
    assert_eq!(status, 200);
    // Nor is the gym training loop: a trainer steps far past the rate.
    let trainer = token("acme", "twin-operator");
    let (status, env, _) = send(
        &node,
        Method::POST,
        "/v1/gym/envs",
        Some(&trainer),
        Body::Json(json!({ "task": "cartpole-v0" })),
    )
    .await;
    assert_eq!(status, 201, "{env}");
    let id = env["id"].as_str().expect("id").to_string();
    let (status, _, _) = send(
        &node,
        Method::POST,
        &format!("/v1/gym/envs/{id}/reset"),
        Some(&trainer),
        Body::Json(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..20 {
        let (status, body, _) = send(
            &node,
            Method::POST,
            &format!("/v1/gym/envs/{id}/step"),
            Some(&trainer),
            Body::Json(json!({ "actions": [[0.0]] })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // A running twin's control loop draws on a budget of its own: a token
    // whose CRUD budget is spent still steps and reads state, up to the
    // control limit.
    let admin = token("acme", "twin-admin");
    let twin = make_twin(&node, &admin, "controlled", true).await;
    let mut crud_spent = false;
    for _ in 0..100 {
        let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&admin), Body::None).await;
        if status == 429 {
            crud_spent = true;
            break;
        }
    }
    assert!(crud_spent, "the CRUD budget runs out");
    let mut served = 0;
    let mut limited = None;
    for i in 0..200 {
        let (status, body, _) = if i % 2 == 0 {
            send(
                &node,
                Method::POST,
                &format!("/v1/twins/{twin}/step"),
                Some(&admin),
                Body::Json(json!({ "steps": 1 })),
            )
            .await
        } else {
            let path = format!("/v1/twins/{twin}/state");
            send(&node, Method::GET, &path, Some(&admin), Body::None).await
        };
        match status {
            200 => served += 1,
            429 => {
                limited = Some(body);
                break;
            }
            _ => panic!("control request {i}: {status} {body}"),
        }
    }
    // The whole burst, and then the control budget's own limit.
    assert!(served >= 6, "{served} control requests served");
    let limited = limited.expect("the control budget runs out too");
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    // After the wait it asked for, the token gets through again.
    tokio::time::sleep(Duration::from_millis(retry * 1000 + 200)).await;
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&busy), Body::None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn jwks_url_keys_rotate_without_a_restart() {
    use axum::routing::get;
    use std::sync::{Arc, RwLock};

    let served = Arc::new(RwLock::new(
        std::fs::read_to_string(fixture("jwks.json")).expect("jwks"),
    ));
    let doc = served.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let doc = doc.clone();
            async move {
                let body = doc.read().map(|d| d.clone()).unwrap_or_default();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let auth = format!(
        "auth:\n  mode: jwt\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  jwks_url: http://{addr}/.well-known/jwks.json\n  jwks_refresh_s: 1\n"
    );
    let node = TestNode::start_opts(NodeOptions {
        auth_yaml: &auth,
        ..Default::default()
    })
    .await;
    let current = sign(
        "ec-signing.pem",
        Algorithm::ES256,
        Some("test-ec-1"),
        &claims("acme", &["twin-viewer"], "v"),
    );
    let rotated = sign(
        "ec-rotated-signing.pem",
        Algorithm::ES256,
        Some("test-ec-2"),
        &claims("acme", &["twin-viewer"], "v"),
    );
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&current), Body::None).await;
    assert_eq!(status, 200);
    let (status, body, _) = send(&node, Method::GET, "/v1/twins", Some(&rotated), Body::None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("test-ec-2"),
        "{body}"
    );

    // The identity provider publishes the new key (beside an encryption key
    // the node must skip); the node picks it up on its own.
    *served.write().expect("lock") =
        std::fs::read_to_string(fixture("jwks-rotated.json")).expect("jwks");
    let mut accepted = false;
    for _ in 0..100 {
        let (status, _, _) =
            send(&node, Method::GET, "/v1/twins", Some(&rotated), Body::None).await;
        if status == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "the rotated key was never accepted:\n{}",
        node.log()
    );
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&current), Body::None).await;
    assert_eq!(status, 200, "the old key is still published");

    // The provider withdraws the old key: tokens it signed stop working, even
    // ones the node has already verified and remembers.
    let rotated_doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks-rotated.json")).expect("jwks"))
            .expect("json");
    let only_new: Vec<Value> = rotated_doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["kid"] != "test-ec-1")
        .cloned()
        .collect();
    *served.write().expect("lock") = json!({ "keys": only_new }).to_string();
    let mut refused = false;
    for _ in 0..100 {
        let (status, _, _) =
            send(&node, Method::GET, "/v1/twins", Some(&current), Body::None).await;
        if status == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a withdrawn key kept vouching for its tokens");
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&rotated), Body::None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_remembered_token_still_expires() {
    let node = jwt_node().await;
    let mut c = claims("acme", &["twin-viewer"], "short-lived");
    c["exp"] = json!(chrono::Utc::now().timestamp() + 2);
    let short = sign("rsa-signing.pem", Algorithm::RS256, None, &c);
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&short), Body::None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body, _) = send(&node, Method::GET, "/v1/twins", Some(&short), Body::None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired")
    );
}

#[test]
fn misconfigured_auth_stops_the_node_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |config: &str| {
        let path = dir.path().join("node.yaml");
        std::fs::write(
            &path,
            format!(
                "data_dir: {}\nmetrics:\n  enabled: false\n{config}",
                dir.path().join("data").display()
            ),
        )
        .expect("write");
        let out = std::process::Command::new(bin())
            .args(["serve", "--config", path.to_str().expect("path")])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{config}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Development mode beyond loopback is refused before anything listens.
    let err = run("server:\n  host: 0.0.0.0\n  port: 1\n");
    assert!(
        err.contains("beyond loopback") && err.contains("allow_non_loopback"),
        "{err}"
    );
    let err = run("auth:\n  mode: jwt\n");
    assert!(err.contains("no key is configured"), "{err}");
    let err = run("auth:\n  verify_tokens: false\n");
    assert!(
        err.contains("verify_tokens") && err.contains("auth.mode: dev"),
        "{err}"
    );
    let err = run(
        "server:\n  port: 1\nauth:\n  mode: jwt\n  jwks_url: http://example.invalid/jwks.json\n",
    );
    assert!(err.contains("must use https"), "{err}");
    let err = run(&format!(
        "server:\n  port: 1\nauth:\n  mode: jwt\n  public_keys: [{}]\n",
        fixture("README.md").display()
    ));
    assert!(
        err.contains("README.md") && err.contains("not an RSA or EC public key"),
        "{err}"
    );
    let err = run("server:\n  tls:\n    cert: /nonexistent.pem\n");
    assert!(
        err.contains("server.tls.cert and server.tls.key go together"),
        "{err}"
    );
}

#[tokio::test]
async fn development_mode_mints_a_local_admin_token() {
    let mut node = TestNode::start().await;
    let path = node.dev_token_path();
    let token = node.token.clone().expect("a development token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "only the node's user may read the token"
        );
    }
    let log = node.log();
    assert!(
        log.contains("export HANZO_TWIN_TOKEN=$(cat") && log.contains(path.to_str().expect("path")),
        "{log}"
    );
    // An admin of the default organization: it may create twins there.
    let (status, body) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["organization"], "default");
    let (status, body) = node.get("/v1/audit").await;
    assert_eq!(status, 200);
    assert_eq!(body["entries"][0]["actor"], "local-admin");
    // The signing key persists, so the old token survives a restart.
    node.restart(false).await;
    let (status, _, _) = send(&node, Method::GET, "/v1/twins", Some(&token), Body::None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_api_serves_tls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca) = common::self_signed_tls(dir.path());
    let node = TestNode::start_opts(NodeOptions {
        server_yaml: &server,
        ca_pem: Some(&ca),
        ..Default::default()
    })
    .await;
    assert!(node.api().starts_with("https://"));
    let (status, body) = node.get("/v1/twins").await;
    assert_eq!(status, 200, "{body}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = node
        .anonymous
        .get(format!("http://127.0.0.1:{}/alive", node.api_port))
        .send()
        .await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));

    // The CLI over TLS: with the CA it works; without it, it says what to do.
    let token = node.token.clone().expect("token");
    let run = |extra: &[&str]| {
        std::process::Command::new(bin())
            .args(["list", "--api", &node.api(), "--token", &token])
            .args(extra)
            .env_remove("HANZO_TWIN_CA_CERT")
            .output()
            .expect("run")
    };
    let out = run(&[
        "--ca-cert",
        dir.path().join("cert.pem").to_str().expect("path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-cert"), "{err}");
}

#[tokio::test]
async fn the_cli_explains_refusals_in_plain_words() {
    let node = jwt_node().await;
    let viewer = token("acme", "twin-viewer");
    let arm = repo().join("configs/twins/robot-arm.yaml");
    let out = std::process::Command::new(bin())
        .args([
            "create",
            "--config",
            arm.to_str().expect("path"),
            "--api",
            &node.api(),
        ])
        .env("HANZO_TWIN_TOKEN", &viewer)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 403")
            && err.contains("twin-viewer")
            && err.contains("twins:create")
            && err.contains("ask an admin"),
        "{err}"
    );
    let mut expired = claims("acme", &["twin-admin"], "a");
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 600);
    let out = std::process::Command::new(bin())
        .args(["list", "--api", &node.api()])
        .env(
            "HANZO_TWIN_TOKEN",
            sign("rsa-signing.pem", Algorithm::RS256, None, &expired),
        )
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token has expired") && err.contains("HTTP 401") && err.contains("fresh one"),
        "{err}"
    );
    // An admin reads the audit log from the CLI.
    let out = std::process::Command::new(bin())
        .args(["audit", "--api", &node.api(), "--action", "twins.create"])
        .env("HANZO_TWIN_TOKEN", token("acme", "twin-admin"))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("twins.create") && text.contains("denied"),
        "{text}"
    );
}

#[tokio::test]
async fn an_identity_provider_is_found_from_its_iam_url() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let jwks = std::fs::read_to_string(fixture("jwks.json")).expect("jwks");
    let discovery = json!({
        "issuer": ISSUER,
        "jwks_uri": format!("http://{addr}/keys"),
        "authorization_endpoint": format!("http://{addr}/authorize"),
    })
    .to_string();
    let app = axum::Router::new()
        .route(
            "/iam/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { ([("content-type", "application/json")], d) }
            }),
        )
        .route(
            "/keys",
            get(move || {
                let k = jwks.clone();
                async move { ([("content-type", "application/json")], k) }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let auth =
        format!("auth:\n  mode: jwt\n  audience: {AUDIENCE}\n  iam_url: http://{addr}/iam/\n");
    let node = TestNode::start_opts(NodeOptions {
        auth_yaml: &auth,
        ..Default::default()
    })
    .await;
    let good = sign(
        "ec-signing.pem",
        Algorithm::ES256,
        Some("test-ec-1"),
        &claims("acme", &["twin-viewer"], "v"),
    );
    let (status, body, _) = send(&node, Method::GET, "/v1/twins", Some(&good), Body::None).await;
    assert_eq!(status, 200, "{body}");
    let mut other = claims("acme", &["twin-viewer"], "v");
    other["iss"] = json!("https://someone-else.test");
    let bad = sign(
        "ec-signing.pem",
        Algorithm::ES256,
        Some("test-ec-1"),
        &other,
    );
    let (status, body, _) = send(&node, Method::GET, "/v1/twins", Some(&bad), Body::None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(ISSUER),
        "{body}"
    );
}

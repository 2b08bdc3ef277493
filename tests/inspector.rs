//! The live supervision-tree inspector: GET /v1/cluster/tree, its event
//! stream, and the web page in a real browser (Debian's Chromium driven by
//! playwright-core, both installed by scripts/test.sh), which shows a twin's
//! actor fail and come back.

mod common;

use common::{TestNode, repo};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn running_twin(node: &TestNode, name: &str) -> String {
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let (status, v) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, name),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let (status, v) = node
        .post(
            &format!("/v1/twins/{id}/start"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    id
}

fn find<'a>(tree: &'a Value, name: &str) -> Option<&'a Value> {
    if tree["name"] == name {
        return Some(tree);
    }
    tree["children"]
        .as_array()?
        .iter()
        .find_map(|c| find(c, name))
}

async fn tree(node: &TestNode) -> Value {
    let (status, v) = node.get("/v1/cluster/tree").await;
    assert_eq!(status, 200, "{v}");
    v["nodes"][0]["tree"].clone()
}

#[tokio::test]
async fn the_tree_shows_twins_under_the_host_and_their_restarts() {
    let node = TestNode::start().await;
    let id = running_twin(&node, "tree-arm").await;
    for _ in 0..3 {
        let (status, _) = node
            .post(&format!("/v1/twins/{id}/step"), json!({ "steps": 10 }))
            .await;
        assert_eq!(status, 200);
    }
    let t = tree(&node).await;
    assert_eq!(t["kind"], "node");
    let host = &t["children"][0];
    assert_eq!(host["kind"], "host");
    let twin = find(host, "tree-arm")
        .expect("the twin under the host")
        .clone();
    assert_eq!(twin["status"], "running");
    assert_eq!(twin["restarts"], 0);
    assert_eq!(twin["target"], id.as_str());
    assert!(twin["messages"].as_u64().unwrap_or(0) >= 3, "{twin}");
    // Its actor's figures: how long it has run and how long a message took.
    assert!(twin["uptime_s"].as_f64().is_some_and(|s| s > 0.0), "{twin}");
    assert!(
        twin["handling_mean_us"].as_f64().is_some_and(|us| us > 0.0),
        "{twin}"
    );
    // Whose it is, the engine state it holds (its start's checkpoint), and
    // nothing waiting in its mailbox.
    assert_eq!(twin["organization"], "default");
    assert!(
        twin["state_bytes"].as_u64().is_some_and(|b| b > 0),
        "{twin}"
    );
    assert_eq!(twin["mailbox"], 0, "{twin}");
    assert_eq!(twin["timeline"], json!([]), "{twin}");
    // A long step waits at the twin: the tree (answered by the host) counts
    // it in the twin's mailbox until its answer comes.
    let stepping = {
        let http = node.http.clone();
        let url = node.url(&format!("/v1/twins/{id}/step"));
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({ "steps": 100_000 }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let stepping = seen_in_flight(
        &node,
        stepping,
        "the step waiting in the twin's mailbox",
        |t| {
            find(t, "tree-arm").is_some_and(|twin| twin["mailbox"].as_u64().is_some_and(|m| m >= 1))
        },
    )
    .await;
    assert_eq!(stepping, 200);
    assert_eq!(
        find(&tree(&node).await, "tree-arm").expect("twin")["mailbox"],
        0
    );
    let before = find(&tree(&node).await, "tree-arm").expect("twin")["actor_id"].clone();

    // A gym batch appears beside the twins.
    let (status, gym) = node
        .post(
            "/v1/gym/envs",
            json!({ "task": "cartpole-v0", "num_envs": 2 }),
        )
        .await;
    assert_eq!(status, 201, "{gym}");
    let t = tree(&node).await;
    let batch = find(&t, gym["id"].as_str().unwrap_or(""))
        .expect("the gym batch")
        .clone();
    assert_eq!(batch["kind"], "gym");
    assert_eq!(batch["target"], "cartpole-v0 × 2");
    assert!(batch["uptime_s"].as_f64().is_some(), "{batch}");
    assert_eq!(batch["mailbox"], 0, "{batch}");
    // A large picture of it is drawn in the batch's actor: its mailbox
    // counts the request until the answer.
    let gym_id = gym["id"].as_str().unwrap_or("").to_string();
    let rendering = {
        let http = node.http.clone();
        let url = node.url(&format!(
            "/v1/gym/envs/{gym_id}/render?env=0&width=4096&height=4096"
        ));
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let status = seen_in_flight(
        &node,
        rendering,
        "the render in the gym batch's mailbox",
        |t| find(t, &gym_id).is_some_and(|b| b["mailbox"].as_u64().is_some_and(|m| m >= 1)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        find(&tree(&node).await, &gym_id).expect("the batch")["mailbox"],
        0
    );

    // Crash the twin's actor: the supervisor restarts it under a new actor.
    let (status, _) = node
        .post(
            &format!("/v1/twins/{id}/faults"),
            json!({ "fault": "panic" }),
        )
        .await;
    assert!(status == 200 || status == 202 || status == 503, "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = tree(&node).await;
        let twin = find(&t, "tree-arm").expect("twin").clone();
        if twin["restarts"] == 1 && twin["status"] == "running" {
            assert_ne!(twin["actor_id"], before, "a new actor");
            // Its timeline: the failure with its reason, then the restart.
            let timeline = twin["timeline"].as_array().expect("timeline");
            let events: Vec<&str> = timeline
                .iter()
                .filter_map(|e| e["event"].as_str())
                .collect();
            assert_eq!(events, ["failed", "restarted"], "{twin}");
            assert!(
                timeline[0]["detail"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{twin}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no restart seen: {twin}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = node.post(&format!("/v1/twins/{id}/stop"), json!({})).await;
    assert_eq!(status, 200);
    let t = tree(&node).await;
    assert_eq!(find(&t, "tree-arm").expect("twin")["status"], "stopped");
}

/// Reads server-sent events until `want` returns true for one.
async fn read_events(
    response: &mut reqwest::Response,
    seen: &mut Vec<(String, Value)>,
    want: impl Fn(&str, &Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buffer = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "event not seen; saw {seen:?}");
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .expect("in time")
            .expect("stream")
            .expect("not closed");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut kind = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim());
                }
            }
            if data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            let hit = want(&kind, &value);
            seen.push((kind, value));
            if hit {
                return;
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_sends_the_tree_then_every_change() {
    let node = TestNode::start().await;
    let id = running_twin(&node, "stream-arm").await;
    let mut response = node
        .http
        .get(node.url("/v1/cluster/tree/events"))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let mut seen = Vec::new();
    read_events(&mut response, &mut seen, |kind, v| {
        kind == "tree" && find(v, "stream-arm").is_some()
    })
    .await;
    let (status, _) = node
        .post(
            &format!("/v1/twins/{id}/faults"),
            json!({ "fault": "panic" }),
        )
        .await;
    assert!(status < 500 || status == 503);
    read_events(&mut response, &mut seen, |kind, v| {
        kind == "change" && v["name"] == "stream-arm" && v["event"] == "failed"
    })
    .await;
    read_events(&mut response, &mut seen, |kind, v| {
        kind == "change" && v["name"] == "stream-arm" && v["event"] == "restarted"
    })
    .await;
    read_events(&mut response, &mut seen, |kind, v| {
        kind == "tree"
            && find(v, "stream-arm").is_some_and(|t| t["restarts"] == 1 && t["status"] == "running")
    })
    .await;
}

#[tokio::test]
async fn the_inspector_page_shows_a_twin_fail_and_come_back_in_chromium() {
    let Ok(playwright) = std::env::var("HANZO_TWIN_PLAYWRIGHT") else {
        eprintln!(
            "SKIPPED: HANZO_TWIN_PLAYWRIGHT is not set; scripts/test.sh installs playwright-core and Chromium and sets it"
        );
        return;
    };
    let node = TestNode::start().await;
    running_twin(&node, "page-arm").await;
    let token = node.token.clone().expect("development token");
    let url = node.url("");
    let shot = std::env::temp_dir().join("hanzo-twin-inspector.png");
    let text =
        common::inspector_page_check(&playwright, &url, &token, "page-arm", None, Some(&shot))
            .await;
    eprintln!("{text}");
    assert!(text.contains("1 restart"), "{text}");
    assert!(text.contains("the steps chart moves"), "{text}");
    assert!(text.contains("its timeline:"), "{text}");
    assert!(text.contains("graph view:"), "{text}");
}

fn playwright() -> Option<String> {
    let found = std::env::var("HANZO_TWIN_PLAYWRIGHT").ok();
    if found.is_none() {
        eprintln!(
            "SKIPPED: HANZO_TWIN_PLAYWRIGHT is not set; scripts/test.sh installs playwright-core and Chromium and sets it"
        );
    }
    found
}

/// The console on a node with 1,000 twins (`HANZO_TWIN_CONSOLE_TWINS` for
/// another count), served over TLS: every row arrives, only those in sight
/// are in the page, scrolling and the search reach the last twin, a status
/// filter keeps the stopped ones. Prints how long the page took.
#[tokio::test]
async fn the_console_lists_a_thousand_twins_over_tls_in_chromium() {
    let Some(playwright) = playwright() else {
        return;
    };
    let twins: usize = std::env::var("HANZO_TWIN_CONSOLE_TWINS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca) = common::self_signed_tls(dir.path());
    let node = TestNode::start_opts(common::NodeOptions {
        server_yaml: &server,
        ca_pem: Some(&ca),
        auth_yaml: "auth:\n  rate_limit:\n    per_second: 0\n",
        ..Default::default()
    })
    .await;
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let names: Vec<String> = (0..twins).map(|i| format!("load-{i:05}")).collect();
    let node_ref = &node;
    let yaml_ref = &yaml;
    let created = futures_util::stream::iter(names.iter())
        .map(|name| async move {
            node_ref
                .post_raw(
                    "/v1/twins",
                    "application/yaml",
                    &common::rename(yaml_ref, name),
                )
                .await
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (status, v) in &created {
        assert_eq!(*status, 201, "{v}");
    }
    let token = node.token.clone().expect("development token");
    let text = common::browser_check(
        &playwright,
        "console_load.cjs",
        &[
            node.url(""),
            token,
            twins.to_string(),
            names[twins - 1].clone(),
        ],
        &[],
    )
    .await;
    eprintln!("{text}");
    assert!(text.contains("is drawn"), "{text}");
    assert!(text.contains("stopped twins"), "{text}");
}

/// A viewer's token on a twin's page: every control but the checkpoint
/// download is off, saying which permission and roles it needs.
#[tokio::test]
async fn a_viewers_controls_are_disabled_with_the_reason_in_chromium() {
    let Some(playwright) = playwright() else {
        return;
    };
    let node = common::jwt::jwt_node().await;
    let admin = common::client(Some(&common::jwt::token("acme", "twin-admin")), None);
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    // The sample's organization is `default`; this one is acme's.
    let yaml =
        common::rename(&yaml, "viewed-arm").replace("organization: default", "organization: acme");
    let r = admin
        .post(node.url("/v1/twins"))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("create");
    let (status, v) = common::status_json(r).await;
    assert_eq!(status, 201, "{v}");
    let r = admin
        .post(node.url("/v1/twins/viewed-arm/start"))
        .json(&json!({ "clock": "paused" }))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 200);
    let viewer = common::jwt::token("acme", "twin-viewer");
    let text = common::browser_check(
        &playwright,
        "viewer_controls.cjs",
        &[node.url(""), viewer, "viewed-arm".into()],
        &[],
    )
    .await;
    eprintln!("{text}");
    assert!(text.contains("step: disabled, needs twins:start"), "{text}");
    assert!(text.contains("downloaded the checkpoint"), "{text}");
}

/// The charts' figures: a running twin's steps, the API's requests and
/// their latency, counted a second from the node's own metrics; and who
/// the token is.
#[tokio::test]
async fn the_node_stats_count_steps_and_requests_and_whoami_says_what_a_token_may_do() {
    let node = TestNode::start().await;
    let id = running_twin(&node, "stats-arm").await;
    let (status, v) = node
        .post(
            &format!("/v1/twins/{id}/clock"),
            json!({ "clock": "realtime" }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let point = loop {
        let (status, v) = node.get("/v1/cluster/stats").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["interval_s"], 1.0);
        let found = v["points"].as_array().and_then(|points| {
            points
                .iter()
                .find(|p| {
                    p["steps_per_s"].as_f64().is_some_and(|s| s > 0.0)
                        && p["requests_per_s"].as_f64().is_some_and(|r| r > 0.0)
                })
                .cloned()
        });
        if let Some(point) = found {
            break point;
        }
        assert!(
            Instant::now() < deadline,
            "no point with steps and requests: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (p50, p99) = (
        point["latency_p50_ms"].as_f64().expect("p50"),
        point["latency_p99_ms"].as_f64().expect("p99"),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{point}");
    assert!(
        point["active_simulations"]
            .as_f64()
            .is_some_and(|a| a >= 1.0),
        "{point}"
    );
    // Only newer points after `since_ms`.
    let at = point["at_ms"].as_i64().expect("at_ms");
    let (status, v) = node.get(&format!("/v1/cluster/stats?since_ms={at}")).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["points"]
            .as_array()
            .expect("points")
            .iter()
            .all(|p| p["at_ms"].as_i64() > Some(at)),
        "{v}"
    );
    let (status, v) = node.get("/v1/cluster/stats?since_ms=soon").await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("since_ms"), "{v}");

    let (status, me) = node.get("/v1/whoami").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["organization"], "default");
    assert_eq!(me["roles"], json!(["twin-admin"]));
    let held = |name: &str| {
        me["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .find(|p| p["permission"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {me}"))
    };
    assert_eq!(held("twins:start")["grant"], "any");
    assert_eq!(held("infra:inject_chaos")["roles"], json!(["twin-admin"]));
}

/// A twin's 3D view in Chromium: it draws the running conveyor's bodies and
/// follows them; paused, every body is drawn where `GET /state` puts it at
/// the same step; a fork ticked in the list is drawn beside it. The screenshot
/// is the one in the docs.
#[tokio::test]
async fn the_twin_view_draws_each_body_where_the_state_puts_it_in_chromium() {
    let Ok(playwright) = std::env::var("HANZO_TWIN_PLAYWRIGHT") else {
        eprintln!(
            "SKIPPED: HANZO_TWIN_PLAYWRIGHT is not set; scripts/test.sh installs playwright-core and Chromium and sets it"
        );
        return;
    };
    let node = TestNode::start().await;
    let belt = node.create_sample("conveyor.yaml", "view-belt").await;
    node.start_twin(&belt, "paused").await;
    let (status, fork) = node
        .post(&format!("/v1/twins/{belt}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{fork}");
    let fork = fork["id"].as_str().expect("id").to_string();
    let (status, v) = node
        .post(
            &format!("/v1/twins/{belt}/clock"),
            json!({ "clock": "realtime" }),
        )
        .await;
    assert!((200..300).contains(&status), "{v}");
    let token = node.token.clone().expect("development token");
    let shot = std::env::temp_dir().join("hanzo-twin-twin-view.png");
    let text = common::browser_check(
        &playwright,
        "twin_view.cjs",
        &[node.url(""), token, belt, fork, shot.display().to_string()],
        &[],
    )
    .await;
    eprintln!("{text}");
    assert!(text.contains("where GET /state puts it"), "{text}");
    assert!(text.contains("the view followed"), "{text}");
}

#[tokio::test]
async fn geometry_and_the_pose_stream_describe_a_running_twin() {
    let node = TestNode::start().await;
    let belt = node.create_sample("conveyor.yaml", "shapes-belt").await;
    // Not running: no geometry, with the reason.
    let (status, v) = node.get(&format!("/v1/twins/{belt}/geometry")).await;
    assert_eq!(status, 409, "{v}");
    node.start_twin(&belt, "paused").await;
    let (status, g) = node.get(&format!("/v1/twins/{belt}/geometry")).await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["up_axis"], "Z");
    let bodies = g["bodies"].as_array().expect("bodies");
    let box1 = bodies
        .iter()
        .find(|b| b["path"] == "/World/Boxes/Box1")
        .expect("Box1");
    assert_eq!(box1["kind"], "Dynamic");
    let half = &box1["shapes"][0]["shape"]["Cuboid"]["half_extents"];
    assert_eq!(half, &json!([0.1, 0.1, 0.1]), "{box1}");

    // Bad rates are refused, naming the field.
    for hz in ["0", "31", "-1", "1e3"] {
        let (status, v) = node
            .get(&format!("/v1/twins/{belt}/poses/events?hz={hz}"))
            .await;
        assert_eq!(status, 400, "hz={hz}: {v}");
        assert_eq!(v["error"]["field"], "hz", "{v}");
    }
    // The stream: the poses now, in the geometry's order, then each step.
    let mut response = node
        .http
        .get(node.url(&format!("/v1/twins/{belt}/poses/events?hz=30")))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut seen = Vec::new();
    read_events(&mut response, &mut seen, |kind, _| kind == "poses").await;
    let first = seen.pop().expect("an event").1;
    assert_eq!(first["step"], 0);
    assert_eq!(
        first["poses"].as_array().expect("poses").len(),
        bodies.len()
    );
    let i = bodies
        .iter()
        .position(|b| b["path"] == "/World/Boxes/Box1")
        .expect("index");
    assert_eq!(first["poses"][i][2], json!(1.5), "{first}");
    node.step(&belt, 24).await;
    read_events(&mut response, &mut seen, |kind, _| kind == "poses").await;
    let later = seen.pop().expect("an event").1;
    assert_eq!(later["step"], 24, "{later}");
    let (_, state) = node
        .get(&format!(
            "/v1/twins/{belt}/observation?path=/World/Boxes/Box1"
        ))
        .await;
    assert_eq!(
        later["poses"][i][2], state["bodies"][0]["position"][2],
        "{later}"
    );
}

/// The pages' libraries are the pinned npm releases scripts/vendor-web.sh
/// recorded, and the node serves them itself (no CDN).
#[tokio::test]
async fn the_vendored_libraries_match_their_checksums_and_are_served() {
    use sha2::{Digest, Sha256};
    let dir = repo().join("api/src/inspector/vendor");
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut files = 0;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got, sum,
            "{name} differs from what scripts/vendor-web.sh vendored"
        );
        files += 1;
    }
    assert!(files >= 6, "{sums}");
    let node = TestNode::start().await;
    let served = node
        .http
        .get(node.url("/inspector/assets/three.module.min.js"))
        .send()
        .await
        .expect("asset");
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "text/javascript");
    let body = served.bytes().await.expect("body");
    let file = std::fs::read(dir.join("three/three.module.min.js")).expect("file");
    assert!(body[..] == file[..], "the node serves another three.js");
    let missing = node
        .http
        .get(node.url("/inspector/assets/jquery.js"))
        .send()
        .await
        .expect("asset");
    assert_eq!(missing.status(), 404);
}

/// The render pool stands beside the twin host, with its workers; a frame
/// drawn shows in their figures.
#[tokio::test]
async fn the_tree_shows_the_render_pool_and_its_workers() {
    let node = TestNode::start().await;
    let belt = node.create_sample("conveyor.yaml", "tree-belt").await;
    node.start_twin(&belt, "paused").await;
    let t = tree(&node).await;
    let pool = t["children"]
        .as_array()
        .expect("the node's children")
        .iter()
        .find(|c| c["kind"] == "render_pool")
        .unwrap_or_else(|| panic!("no render pool: {t}"))
        .clone();
    let workers = pool["children"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "render.workers' default: {pool}");
    assert!(
        workers
            .iter()
            .all(|w| w["kind"] == "render_worker" && w["status"] == "running")
    );
    let drawn_before: u64 = workers
        .iter()
        .map(|w| w["messages"].as_u64().unwrap_or(0))
        .sum();
    let (status, v) = node
        .get(&format!(
            "/v1/twins/{belt}/render?outputs=instance&format=json&width=32&height=24"
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    // A worker's message counts once handled: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = tree(&node).await;
        let pool = t["children"]
            .as_array()
            .expect("children")
            .iter()
            .find(|c| c["kind"] == "render_pool")
            .expect("the pool")
            .clone();
        let drawn_after: u64 = pool["children"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["messages"].as_u64().unwrap_or(0))
            .sum();
        if drawn_after == drawn_before + 1 && pool["messages"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(drawn_after <= drawn_before + 1, "{pool}");
        assert!(
            std::time::Instant::now() < deadline,
            "the frame never showed: {pool}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A large frame: a worker holds it (its mailbox 1) until it is drawn.
    let pool_of = |t: &Value| {
        t["children"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["kind"] == "render_pool"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let drawing = {
        let http = node.http.clone();
        let url = node.url(&format!("/v1/twins/{belt}/render?width=4096&height=4096"));
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let status = seen_in_flight(&node, drawing, "a worker holding the frame", |t| {
        pool_of(t)["children"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["mailbox"] == 1))
    })
    .await;
    assert_eq!(status, 200);
    let pool = pool_of(&tree(&node).await);
    assert_eq!(pool["mailbox"], 0, "{pool}");
    assert!(
        pool["children"]
            .as_array()
            .is_some_and(|w| w.iter().all(|w| w["mailbox"] == 0)),
        "{pool}"
    );
}

/// Polls the tree until `seen` holds while `request` (a spawned HTTP
/// request) is in flight; its status once answered. Fails when the
/// request ends before it is seen.
async fn seen_in_flight(
    node: &TestNode,
    request: tokio::task::JoinHandle<reqwest::Result<u16>>,
    what: &str,
    seen: impl Fn(&Value) -> bool,
) -> u16 {
    loop {
        if seen(&tree(node).await) {
            break;
        }
        assert!(
            !request.is_finished(),
            "{what} was never seen: it was answered first"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    request.await.expect("join").expect("the request")
}

/// An infrastructure twin's page in Chromium: its services, faults and
/// verdicts as `GET /v1/infra/twins/{id}` gives them, following the twin.
#[tokio::test]
async fn an_infrastructure_twin_page_shows_its_services_and_verdicts_in_chromium() {
    let Ok(playwright) = std::env::var("HANZO_TWIN_PLAYWRIGHT") else {
        eprintln!(
            "SKIPPED: HANZO_TWIN_PLAYWRIGHT is not set; scripts/test.sh installs playwright-core and Chromium and sets it"
        );
        return;
    };
    let node = TestNode::start().await;
    let (status, body) = node
        .post("/v1/twins", common::shop_infra_definition("view-shop"))
        .await;
    assert_eq!(status, 201, "{body}");
    node.start_twin("view-shop", "paused").await;
    node.step("view-shop", 660).await;
    let token = node.token.clone().expect("development token");
    let shot = std::env::temp_dir().join("hanzo-twin-infra-view.png");
    let out = tokio::process::Command::new("node")
        .arg(repo().join("tests/browser/infra_view.cjs"))
        .args([&node.url(""), &token, "view-shop"])
        .arg(&shot)
        .env("HANZO_TWIN_PLAYWRIGHT", playwright)
        .output()
        .await
        .expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser check failed:\n{text}");
    eprintln!("{text}");
    assert!(text.contains("and follows it to 690 s"), "{text}");
}

//! Nodes forming a cluster over ractor_cluster, as three node processes on
//! 127.0.0.1: joining through a seed (the mesh closes transitively), the
//! members each node lists, a member killed with SIGKILL leaving the others'
//! lists, and a node with the wrong cookie kept out.

mod common;

use common::{NodeOptions, TestNode, free_ports, repo};
use serde_json::Value;
use std::time::{Duration, Instant};

/// What every member of one test's cluster shares: a PostgreSQL schema for
/// definitions and a folder for checkpoints (object storage on one machine).
struct Shared {
    postgres: String,
    schema: String,
    objects: tempfile::TempDir,
}

fn shared() -> Option<Shared> {
    let postgres = match std::env::var("HANZO_TWIN_TEST_POSTGRES_URL") {
        Ok(url) => url,
        Err(_) => {
            eprintln!(
                "SKIPPED: a cluster shares definitions in PostgreSQL, and HANZO_TWIN_TEST_POSTGRES_URL is not set; scripts/test.sh starts PostgreSQL and sets it"
            );
            return None;
        }
    };
    Some(Shared {
        postgres,
        schema: format!("cluster_{}", uuid::Uuid::new_v4().simple()),
        objects: tempfile::tempdir().expect("tempdir"),
    })
}

async fn member(
    shared: &Shared,
    id: &str,
    listen: u16,
    cookie: &str,
    seeds: &[u16],
    extra: &[(&str, &str)],
) -> TestNode {
    let listen = format!("127.0.0.1:{listen}");
    let seeds = format!(
        "[{}]",
        seeds
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let objects = shared.objects.path().to_string_lossy().to_string();
    let mut env = vec![
        ("HANZO_TWIN_NODE_ID", id),
        ("HANZO_TWIN_CLUSTER_LISTEN", listen.as_str()),
        ("HANZO_TWIN_CLUSTER_COOKIE", cookie),
        ("HANZO_TWIN_CLUSTER_SEEDS", seeds.as_str()),
        ("HANZO_TWIN_CLUSTER_REFRESH_MS", "200"),
        ("HANZO_TWIN_CLUSTER_LEASE_MS", "1500"),
        ("HANZO_TWIN_METADATA_BACKEND", "postgres"),
        ("HANZO_TWIN_METADATA_POSTGRES_URL", shared.postgres.as_str()),
        (
            "HANZO_TWIN_METADATA_POSTGRES_SCHEMA",
            shared.schema.as_str(),
        ),
        ("HANZO_TWIN_STORAGE_ROOT", objects.as_str()),
        ("HANZO_TWIN_TWINS_CHECKPOINT_INTERVAL_S", "0.1"),
    ];
    env.extend_from_slice(extra);
    TestNode::start_opts(NodeOptions {
        env: &env,
        ..Default::default()
    })
    .await
}

/// The ids `node` lists, once it lists `count` of them.
async fn members(node: &TestNode, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = node.get("/v1/cluster/nodes").await;
        assert_eq!(status, 200, "{v}");
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() == count {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} members, still see {v}\nlog:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_nodes_join_through_seeds_and_see_a_killed_member_leave() {
    let Some(sh) = shared() else { return };
    let [pa, pb, pc] = free_ports::<3>();
    let a = member(&sh, "node-a", pa, "shared-secret", &[], &[]).await;
    let b = member(&sh, "node-b", pb, "shared-secret", &[pa], &[]).await;
    // C knows only B, and meets A through it.
    let c = member(&sh, "node-c", pc, "shared-secret", &[pb], &[]).await;
    for node in [&a, &b, &c] {
        let nodes = members(node, 3).await;
        let mut ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["node-a", "node-b", "node-c"]);
        // Each lists itself first, and every member's API address.
        assert_eq!(nodes[0]["local"], true);
        for n in &nodes {
            let api = n["api_addr"].as_str().unwrap_or("");
            assert!(api.starts_with("127.0.0.1:"), "{n}");
        }
    }
    let b_api = members(&a, 3)
        .await
        .iter()
        .find(|n| n["id"] == "node-b")
        .and_then(|n| n["api_addr"].as_str().map(String::from))
        .expect("node-b listed");
    assert_eq!(b_api, format!("127.0.0.1:{}", b.api_port));

    // kill -9 one member: the others drop it.
    drop(c);
    for node in [&a, &b] {
        let nodes = members(node, 2).await;
        assert!(nodes.iter().all(|n| n["id"] != "node-c"), "{nodes:?}");
    }
    let log = a.log();
    assert!(log.contains("node joined the cluster"), "{log}");
    assert!(log.contains("node left the cluster"), "{log}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", a.metrics_port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("hanzo_twin_cluster_nodes 2"), "{metrics}");
    assert!(
        metrics.contains("hanzo_twin_cluster_leaves_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_node_with_another_cookie_is_kept_out() {
    let Some(sh) = shared() else { return };
    let [pa, pb] = free_ports::<2>();
    let a = member(&sh, "node-a", pa, "right-secret", &[], &[]).await;
    let b = member(&sh, "node-b", pb, "wrong-secret", &[pa], &[]).await;
    // Give the handshake time to fail, then both still stand alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(members(&a, 1).await.len(), 1);
    assert_eq!(members(&b, 1).await.len(), 1);
}

/// `hanzo-twin serve --join` with `env`: it must refuse to start, saying why.
fn refused_start(env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--join", "127.0.0.1:1"])
        .env("HANZO_TWIN_CLUSTER_LISTEN", "127.0.0.1:0")
        .env(
            "HANZO_TWIN_DATA_DIR",
            std::env::temp_dir().join("hanzo-twin-refused"),
        )
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn clustering_without_a_cookie_or_shared_definitions_is_refused_with_a_reason() {
    let text = refused_start(&[]);
    assert!(text.contains("cluster.cookie"), "{text}");
    // With a cookie but each node's own sled store, twins could not move.
    let text = refused_start(&[("HANZO_TWIN_CLUSTER_COOKIE", "s3cret")]);
    assert!(text.contains("metadata.backend: postgres"), "{text}");
    // With shared definitions but checkpoints in each node's own folder, a
    // twin that moves would restart from its scene.
    let text = refused_start(&[
        ("HANZO_TWIN_CLUSTER_COOKIE", "s3cret"),
        ("HANZO_TWIN_METADATA_BACKEND", "postgres"),
        (
            "HANZO_TWIN_METADATA_POSTGRES_URL",
            "postgres://nobody@127.0.0.1:1/x",
        ),
    ]);
    assert!(
        text.contains("checkpoints every node can read") && text.contains("storage.root"),
        "{text}"
    );
}

#[tokio::test]
async fn nodes_started_at_once_against_an_empty_database_all_come_up() {
    let Some(sh) = shared() else { return };
    // Kubernetes starts replicas together: every node migrates the schema at
    // the same moment. Ten rounds, each on a schema nobody made yet.
    for round in 0..10 {
        let sh = Shared {
            schema: format!("{}_{round}", sh.schema),
            postgres: sh.postgres.clone(),
            objects: tempfile::tempdir().expect("tempdir"),
        };
        let [pa, pb, pc] = free_ports::<3>();
        // One seed list for every node, each its own among them, as a
        // Deployment's pods share one.
        let seeds = [pa, pb, pc];
        let (a, b, c) = tokio::join!(
            member(&sh, "node-a", pa, "s3cret", &seeds, &[]),
            member(&sh, "node-b", pb, "s3cret", &seeds, &[]),
            member(&sh, "node-c", pc, "s3cret", &seeds, &[]),
        );
        for n in [&a, &b, &c] {
            members(n, 3).await;
        }
    }
}

fn contains_twin(tree: &Value, name: &str) -> bool {
    (tree["kind"] == "twin" && tree["name"] == name && tree["status"] == "running")
        || tree["children"]
            .as_array()
            .is_some_and(|c| c.iter().any(|t| contains_twin(t, name)))
}

#[tokio::test]
async fn any_member_shows_every_members_supervision_tree() {
    let Some(sh) = shared() else { return };
    let [pa, pb] = free_ports::<2>();
    let a = member(&sh, "node-a", pa, "shared-secret", &[], &[]).await;
    let _b = member(&sh, "node-b", pb, "shared-secret", &[pa], &[]).await;
    members(&a, 2).await;
    // Twins until one lands on B (placement decides), started paused.
    let mut on_b = None;
    for i in 0..20 {
        let (id, node) = create(&a, &format!("arm-{i}")).await;
        a.start_twin(&id, "paused").await;
        if node == "node-b" {
            on_b = Some(format!("arm-{i}"));
            break;
        }
    }
    let on_b = on_b.expect("placement puts some twin on node-b");
    // A answers with its own tree first, then B's, asked over the cluster.
    let (status, v) = a.get("/v1/cluster/tree").await;
    assert_eq!(status, 200, "{v}");
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 2, "{v}");
    assert_eq!(nodes[0]["node"], "node-a");
    assert!(!contains_twin(&nodes[0]["tree"], &on_b), "{v}");
    assert_eq!(nodes[1]["node"], "node-b");
    assert!(contains_twin(&nodes[1]["tree"], &on_b), "{v}");

    // A's inspector page draws B's tree too, and follows B's twin as it is
    // crashed (through A's API, routed to B) and restarted there.
    let Ok(playwright) = std::env::var("HANZO_TWIN_PLAYWRIGHT") else {
        eprintln!(
            "SKIPPED the browser part: HANZO_TWIN_PLAYWRIGHT is not set; scripts/test.sh installs playwright-core and Chromium and sets it"
        );
        return;
    };
    let token = a.token.clone().expect("development token");
    let text =
        common::inspector_page_check(&playwright, &a.url(""), &token, &on_b, Some("node-b"), None)
            .await;
    assert!(text.contains("1 restart"), "{text}");
}

/// Creates a robot-arm twin named `name` through `node`; returns its id and
/// the node placement put it on.
async fn create(node: &TestNode, name: &str) -> (String, String) {
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let (status, twin) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, name),
        )
        .await;
    assert_eq!(status, 201, "{twin}");
    (
        twin["id"].as_str().expect("id").to_string(),
        twin["status"]["node"].as_str().expect("holder").to_string(),
    )
}

/// How many times a running twin called `name` appears in the cluster's trees.
async fn activations(node: &TestNode, name: &str) -> usize {
    let (status, v) = node.get("/v1/cluster/tree").await;
    assert_eq!(status, 200, "{v}");
    fn count(tree: &Value, name: &str) -> usize {
        let twin = tree["kind"] == "twin" || tree["kind"] == "fork";
        usize::from(twin && tree["name"] == name && tree["status"] == "running")
            + tree["children"]
                .as_array()
                .map(|c| c.iter().map(|t| count(t, name)).sum())
                .unwrap_or(0)
    }
    v["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().map(|n| count(&n["tree"], name)).sum())
        .unwrap_or(0)
}

/// The step a node's `GET …/state` of twin `id` shows.
async fn state_step(node: &TestNode, id: &str) -> u64 {
    let (status, v) = node.get(&format!("/v1/twins/{id}/state")).await;
    assert_eq!(status, 200, "{v}");
    v["step"].as_u64().expect("step")
}

#[tokio::test]
async fn any_node_serves_any_twin_through_its_one_owner() {
    let Some(sh) = shared() else { return };
    let [pa, pb, pc] = free_ports::<3>();
    // Small frames, so checkpoints and fork states cross nodes in parts; a
    // short call timeout, so a frozen node is reported quickly.
    let extra = [
        ("HANZO_TWIN_CLUSTER_MAX_FRAME_BYTES", "4096"),
        ("HANZO_TWIN_TWINS_CALL_TIMEOUT_MS", "1000"),
    ];
    let a = member(&sh, "node-a", pa, "s3cret", &[], &extra).await;
    let b = member(&sh, "node-b", pb, "s3cret", &[pa], &extra).await;
    let c = member(&sh, "node-c", pc, "s3cret", &[pa], &extra).await;
    for n in [&a, &b, &c] {
        members(n, 3).await;
    }
    let nodes = [&a, &b, &c];
    let names = ["node-a", "node-b", "node-c"];
    let node_named = |id: &str| nodes[names.iter().position(|n| *n == id).expect("known node")];

    // Twins created through A land on their owners, all over the cluster (six
    // at least, and more until two nodes hold some: ids are random).
    let mut twins: Vec<(String, String, String)> = Vec::new();
    let spread = |twins: &[(String, String, String)]| {
        let mut holders: Vec<&str> = twins.iter().map(|t| t.2.as_str()).collect();
        holders.sort();
        holders.dedup();
        holders.len()
    };
    for i in 0..40 {
        if twins.len() >= 6 && spread(&twins) >= 2 {
            break;
        }
        let (id, holder) = create(&a, &format!("cell-{i}")).await;
        twins.push((format!("cell-{i}"), id, holder));
    }
    assert!(spread(&twins) >= 2, "placement spread the twins: {twins:?}");

    // Started and stepped through every node: each request reaches the one
    // actor of that twin, so the steps add up.
    for (i, (_, id, _)) in twins.iter().enumerate() {
        nodes[i % 3].start_twin(id, "paused").await;
    }
    for (name, id, holder) in &twins {
        for (k, n) in nodes.iter().enumerate() {
            // Every node reads the state first, so each holds a cached read
            // that the step must overturn.
            for reader in nodes {
                state_step(reader, id).await;
            }
            let report = n.step(id, 1).await;
            let step = k as u64 + 1;
            assert_eq!(report["step"], step, "{name}: {report}");
            // The node that stepped it reads its own write at once; the
            // others as soon as the owner's word of the change arrives, and
            // never an older step after a newer one.
            assert_eq!(
                state_step(n, id).await,
                step,
                "{name} read through its stepper"
            );
            for reader in nodes {
                let mut seen = 0;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    let now = state_step(reader, id).await;
                    assert!(
                        now >= seen,
                        "{name}: a read went back from step {seen} to {now}"
                    );
                    seen = now;
                    if now == step {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{name}: reads stayed at step {now}, not {step}"
                    );
                    tokio::task::yield_now().await;
                }
            }
        }
        assert_eq!(activations(&b, name).await, 1, "{name} runs exactly once");
        // By name, from a node that does not hold it.
        let (status, v) = node_named(if holder == "node-a" {
            "node-b"
        } else {
            "node-a"
        })
        .get(&format!("/v1/twins/{name}"))
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["id"].as_str(), Some(id.as_str()));
        assert_eq!(v["status"]["node"].as_str(), Some(holder.as_str()));
    }
    // Every node lists every twin.
    for n in nodes {
        let (status, v) = n.get("/v1/twins").await;
        assert_eq!(status, 200, "{v}");
        let mut listed: Vec<&str> = v["twins"]
            .as_array()
            .expect("twins")
            .iter()
            .filter_map(|t| t["id"].as_str())
            .collect();
        listed.sort();
        let mut expected: Vec<&str> = twins.iter().map(|t| t.1.as_str()).collect();
        expected.sort();
        assert_eq!(listed, expected);
    }
    // A name is unique in the cluster, whichever node is asked.
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    for n in nodes {
        let (status, v) = n
            .post_raw(
                "/v1/twins",
                "application/yaml",
                &common::rename(&yaml, "cell-3"),
            )
            .await;
        assert_eq!(status, 409, "{v}");
    }

    // A fork on another node than its parent's, asked through a third: it
    // starts from the parent's exact state.
    let (_, parent, parent_node) = &twins[0];
    let target = names
        .iter()
        .find(|n| *n != parent_node)
        .expect("another node");
    let asked = nodes
        .iter()
        .zip(names)
        .find(|(_, n)| n != parent_node && n != target)
        .map(|(t, _)| *t)
        .expect("a third node");
    let (status, fork) = asked
        .post(
            &format!("/v1/twins/{parent}/fork"),
            serde_json::json!({ "name": "cross-fork", "node": target }),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    assert_eq!(fork["status"]["node"].as_str(), Some(*target));
    assert_eq!(fork["parent"].as_str(), Some(parent.as_str()));
    let fork_id = fork["id"].as_str().expect("id");
    assert_eq!(
        a.observation_text(fork_id).await,
        a.observation_text(parent).await,
        "the fork continues from the parent's state"
    );
    assert_eq!(activations(&c, "cross-fork").await, 1);
    // The least loaded node takes a fork asked for that way.
    let (_, v) = a.get("/v1/twins").await;
    let mut load = std::collections::HashMap::<String, usize>::new();
    for n in names {
        load.insert(n.to_string(), 0);
    }
    for t in v["twins"].as_array().expect("twins") {
        if t["status"]["state"] == "running" {
            *load
                .entry(t["status"]["node"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    let least = *load.values().min().expect("loads");
    let (status, fork) = b
        .post(
            &format!("/v1/twins/{parent}/fork"),
            serde_json::json!({ "node": "least_loaded" }),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    let went = fork["status"]["node"].as_str().expect("node");
    assert_eq!(load[went], least, "{went} of {load:?}");
    // A node that is not a member is refused, naming the field.
    let (status, v) = b
        .post(
            &format!("/v1/twins/{parent}/fork"),
            serde_json::json!({ "node": "node-z" }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "node");

    // A checkpoint larger than one frame, out through one non-holder and back
    // in through another.
    let (_, id, holder) = &twins[1];
    let others: Vec<&TestNode> = nodes
        .iter()
        .zip(names)
        .filter(|(_, n)| n != holder)
        .map(|(t, _)| *t)
        .collect();
    let before = a.observation_text(id).await;
    let r = others[0]
        .http
        .get(others[0].url(&format!("/v1/twins/{id}/checkpoint")))
        .send()
        .await
        .expect("checkpoint");
    assert_eq!(r.status().as_u16(), 200);
    let checkpoint = r.bytes().await.expect("bytes");
    assert!(
        checkpoint.len() > 4096,
        "more than one frame: {} bytes",
        checkpoint.len()
    );
    node_named(holder).step(id, 5).await;
    assert_ne!(a.observation_text(id).await, before);
    let r = others[1]
        .http
        .put(others[1].url(&format!("/v1/twins/{id}/checkpoint")))
        .body(checkpoint.to_vec())
        .send()
        .await
        .expect("restore");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    assert_eq!(a.observation_text(id).await, before, "restored exactly");

    // A frozen node: requests for its twins fail within the call timeout with
    // a 503 naming the twin and the node, and nothing hangs. The holder is
    // read now: a twin may have moved since it was created.
    let (_, id, _) = &twins[2];
    let (status, v) = a.get(&format!("/v1/twins/{id}")).await;
    assert_eq!(status, 200, "{v}");
    let holder = &v["status"]["node"].as_str().expect("holder").to_string();
    let frozen = node_named(holder);
    let asker = nodes
        .iter()
        .zip(names)
        .find(|(_, n)| n != holder)
        .map(|(t, _)| *t)
        .expect("another node");
    let pid = frozen.pid().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    // A stop takes effect thread by thread (one in the middle of a system
    // call stops when it returns): wait until every thread has stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_threads_stopped(&pid) {
        assert!(Instant::now() < deadline, "{holder} did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, v) = asker
        .post(
            &format!("/v1/twins/{id}/step"),
            serde_json::json!({ "steps": 1 }),
        )
        .await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    if status != 503 {
        let (_, tree) = asker.get("/v1/cluster/tree").await;
        panic!(
            "{status} {v}: frozen {holder} (pid {pid}), asked {}\ntree: {tree}\nnode-a:\n{}\nnode-b:\n{}\nnode-c:\n{}",
            asker.api(),
            a.log(),
            b.log(),
            c.log()
        );
    }
    // Unanswered (or, once the others dropped the frozen node, moving to a
    // new owner that cannot take it before the lease runs out).
    assert!(
        v["error"]["code"] == "node_unavailable" || v["error"]["code"] == "moving",
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(id.as_str()) && message.contains(holder.as_str()),
        "{message}"
    );
}

/// Whether every thread of process `pid` is stopped (state `T`).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name, which is in parentheses.
                let (_, rest) = stat.rsplit_once(')')?;
                rest.trim_start().chars().next()
            })
            .is_some_and(|state| state == 'T' || state == 't')
    })
}

/// Waits until every twin in `ids` answers through `node` as running on a
/// node other than `not_on`; returns their records.
async fn all_running(node: &TestNode, ids: &[String], not_on: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    'again: loop {
        assert!(
            Instant::now() < deadline,
            "twins did not all come back:\n{}",
            node.log()
        );
        let mut records = Vec::new();
        for id in ids {
            let (status, v) = node.get(&format!("/v1/twins/{id}/state")).await;
            let (rstatus, record) = node.get(&format!("/v1/twins/{id}")).await;
            if status != 200
                || rstatus != 200
                || record["status"]["state"] != "running"
                || record["status"]["node"] == not_on
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'again;
            }
            records.push(serde_json::json!({ "record": record, "state": v }));
        }
        return records;
    }
}

#[tokio::test]
async fn twins_of_a_killed_node_come_back_on_the_survivors_and_a_new_node_takes_its_share() {
    let Some(sh) = shared() else { return };
    let [pa, pb, pc, pd] = free_ports::<4>();
    // The client polling through the hand-off below asks as fast as it can;
    // request rate limiting (tested elsewhere) would only get in its way.
    let extra = [
        ("HANZO_TWIN_CLUSTER_MAX_MOVES", "2"),
        ("HANZO_TWIN_AUTH_RATE_LIMIT_PER_SECOND", "0"),
    ];
    let a = member(&sh, "node-a", pa, "s3cret", &[], &extra).await;
    let b = member(&sh, "node-b", pb, "s3cret", &[pa], &extra).await;
    let mut c = member(&sh, "node-c", pc, "s3cret", &[pa], &extra).await;
    for n in [&a, &b, &c] {
        members(n, 3).await;
    }
    // Nine twins at least, and more until node-c holds some and node-d (to
    // join later) will own some: ids are random.
    let mut ids: Vec<String> = Vec::new();
    let mut on_c = Vec::new();
    let later = ["node-a", "node-b", "node-d"];
    let d_owns = |ids: &[String]| {
        ids.iter().any(|id| {
            hanzo_twin::cluster::rendezvous_owner(&later, id).map(|i| later[i]) == Some("node-d")
        })
    };
    for i in 0..40 {
        if ids.len() >= 9 && !on_c.is_empty() && d_owns(&ids) {
            break;
        }
        let (id, holder) = create(&a, &format!("line-{i}")).await;
        a.start_twin(&id, "paused").await;
        // Past a few checkpoints (every 0.1 s of simulated time).
        a.step(&id, 100).await;
        if holder == "node-c" {
            on_c.push(id.clone());
        }
        ids.push(id);
    }
    assert!(!on_c.is_empty(), "placement put nothing on node-c");
    // Checkpoints are written in the background (a file appears whole, by
    // rename): wait until each of node-c's twins has one past step 24 (the
    // first is written at step 0, when the twin starts).
    let bucket = sh.objects.path().join("hanzo-twin-checkpoints");
    let checkpointed_step = |id: &str| {
        let bytes = std::fs::read(bucket.join(format!("{id}.ckpt"))).ok()?;
        hanzo_twin::engines::SimState::from_bytes(&bytes)
            .ok()
            .map(|s| s.step)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(id) = on_c
        .iter()
        .find(|id| checkpointed_step(id).is_none_or(|step| step < 24))
    {
        assert!(
            Instant::now() < deadline,
            "node-c wrote no checkpoint of {id}:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kill -9 node-c while its twins run.
    let killed = Instant::now();
    c.stop(true);
    // Its twins never drop out of the list, even before they come back.
    members(&a, 2).await;
    let (_, v) = a.get("/v1/twins").await;
    assert_eq!(v["twins"].as_array().map(Vec::len), Some(ids.len()), "{v}");
    let back = all_running(&a, &ids, "node-c").await;
    eprintln!(
        "{} twins of the killed node answered on the survivors after {:?}",
        on_c.len(),
        killed.elapsed()
    );
    for entry in &back {
        let id = entry["record"]["id"].as_str().unwrap_or("");
        let step = entry["state"]["step"].as_u64().unwrap_or(0);
        // Resumed from its last checkpoint, not from the scene's start.
        assert!(step >= 24, "{id} came back at step {step}: {entry}");
        assert_eq!(
            activations(&b, entry["record"]["name"].as_str().unwrap_or("")).await,
            1
        );
    }
    // No definition lost.
    let (_, v) = b.get("/v1/twins").await;
    assert_eq!(v["twins"].as_array().map(Vec::len), Some(ids.len()), "{v}");
    let log = format!("{}{}", a.log(), b.log());
    assert!(
        log.contains("taking over a twin from a node that stopped answering"),
        "{log}"
    );

    // A new node joins and takes over its share, a few at a time, each with a
    // clean hand-off; every twin still runs exactly once.
    // Meanwhile a client keeps asking for every twin through A: a twin in
    // transit may answer 503 (moving), never 404 or anything else.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (http, api, ids, stop) = (a.http.clone(), a.api(), ids.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &ids {
                    let r = http
                        .get(format!("{api}/v1/twins/{id}/state"))
                        .send()
                        .await
                        .expect("request");
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or_default();
                    let key = match status {
                        200 => "200".to_string(),
                        _ => format!("{status} {}", body["error"]["code"]),
                    };
                    *seen.entry(key).or_default() += 1;
                }
            }
            seen
        })
    };
    let d = member(&sh, "node-d", pd, "s3cret", &[pb], &extra).await;
    members(&d, 3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = d.get("/v1/twins").await;
        let on_d = v["twins"]
            .as_array()
            .map(|t| t.iter().filter(|t| t["status"]["node"] == "node-d").count())
            .unwrap_or(0);
        if on_d > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-d took nothing over:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = all_running(&d, &ids, "node-c").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.await.expect("watcher");
    eprintln!("answers while node-d took over: {seen:?}");
    for (answer, count) in &seen {
        assert!(
            answer == "200" || answer == "503 \"moving\"",
            "{count} answers `{answer}` during the hand-off: {seen:?}"
        );
    }
    for entry in &back {
        let name = entry["record"]["name"].as_str().unwrap_or("");
        assert_eq!(activations(&a, name).await, 1, "{name}");
        assert!(
            entry["state"]["step"].as_u64().unwrap_or(0) >= 24,
            "{entry}"
        );
    }
    let metrics = format!("{}{}", a.metrics().await, b.metrics().await);
    assert!(metrics.contains("hanzo_twin_handoffs_total"), "{metrics}");
    assert!(d.log().contains("took the twin over"), "{}", d.log());
}

/// Nodes A and B of a cluster that run training jobs, once A lists both;
/// `None` (said loudly) without the venv's Python.
async fn job_nodes(sh: &Shared) -> Option<(TestNode, TestNode)> {
    let python = common::job_python()?;
    let [pa, pb] = free_ports::<2>();
    let scheduler = [("HANZO_TWIN_SCHEDULER_PYTHON", python.as_str())];
    let a = member(sh, "node-a", pa, "shared-secret", &[], &scheduler).await;
    let b = member(sh, "node-b", pb, "shared-secret", &[pa], &scheduler).await;
    members(&a, 2).await;
    Some((a, b))
}

/// A long cart-pole training job, with `extra` settings, submitted to node
/// A, placed on node B and training there; its id. Placement picks a job's node by its id,
/// as it does a twin's: jobs that land on A are cancelled and the submit
/// tried again (each lands on B with even odds).
async fn train_on_b(a: &TestNode, extra: Value) -> String {
    let mut spec = serde_json::json!({
        "kind": "train", "task": "cartpole-v0", "num_envs": 1, "total_steps": 10_000_000,
        "hyperparameters": { "n_steps": 64, "batch_size": 64, "n_epochs": 1 }
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    for _ in 0..40 {
        let (status, job) = a.post("/v1/jobs", spec.clone()).await;
        assert_eq!(status, 201, "{job}");
        let id = job["id"].as_str().expect("id").to_string();
        if job["node"] == "node-b" {
            // A reads the record from the shared store while B trains.
            common::wait_job(a, &id, "progress on node-b", |j| {
                j["progress"]["steps"].as_u64() > Some(0)
            })
            .await;
            return id;
        }
        assert_eq!(job["node"], "node-a", "{job}");
        let (status, cancelled) = a
            .post(&format!("/v1/jobs/{id}/cancel"), serde_json::json!({}))
            .await;
        assert_eq!(status, 200, "{cancelled}");
    }
    panic!(
        "40 jobs submitted to node-a, none placed on node-b\n{}",
        a.log()
    );
}

/// A job runs on the node placement gives it to, whichever node it was
/// submitted to; any other node of the cluster reads its record, streams
/// its log (read on the job's node) and cancels it there.
#[tokio::test]
async fn any_node_follows_and_cancels_a_job_running_on_another() {
    let Some(sh) = shared() else { return };
    let Some((a, b)) = job_nodes(&sh).await else {
        return;
    };
    let id = train_on_b(&a, serde_json::json!({})).await;
    // Its log is on B's disk only; A serves it.
    let so_far = common::log_events(&a, &id, None, false).await;
    let lines: Vec<&(String, Option<u64>, serde_json::Value)> =
        so_far.iter().filter(|e| e.0 == "log").collect();
    assert!(
        lines.iter().any(|e| e.2["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("started on node-b"))),
        "{so_far:#?}"
    );
    assert_eq!(
        so_far.last().map(|e| e.0.as_str()),
        Some("end"),
        "{so_far:#?}"
    );
    let last = lines.last().and_then(|e| e.1).expect("numbered lines");

    // A follows the log from there, live, while A cancels the job on B: the
    // stream carries B's new lines and ends with the cancelled job.
    let cancel = format!("/v1/jobs/{id}/cancel");
    let (followed, (status, cancelled)) = tokio::join!(
        common::log_events(&a, &id, Some(last), true),
        a.post(&cancel, serde_json::json!({}))
    );
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(
        followed
            .iter()
            .filter(|e| e.0 == "log")
            .all(|e| e.1.is_some_and(|n| n > last)),
        "{followed:#?}"
    );
    assert!(
        followed.iter().any(|e| e.2["message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled by"))),
        "{followed:#?}"
    );
    let end = followed.last().expect("events");
    assert_eq!(end.0, "end", "{followed:#?}");
    assert_eq!(end.2["state"], "cancelled", "{followed:#?}");
    // The worker on B is gone, as B's own view says.
    let (status, job) = b.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["state"], "cancelled", "{job}");
}

/// A job whose node dies resumes on a survivor, from its latest checkpoint
/// in the shared object storage, its log numbered on from the lines the
/// dead node wrote.
#[tokio::test]
async fn a_job_of_a_killed_node_resumes_on_a_survivor_from_its_checkpoint() {
    let Some(sh) = shared() else { return };
    let Some((a, mut b)) = job_nodes(&sh).await else {
        return;
    };
    let id = train_on_b(&a, serde_json::json!({ "checkpoint_every_steps": 5000 })).await;
    let newest = |j: &serde_json::Value| {
        j["artifacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["steps"].as_u64())
            .max()
    };
    let job = common::wait_job(&a, &id, "a checkpoint on node-b", |j| newest(j).is_some()).await;
    let kept = newest(&job).unwrap_or_default();
    assert_eq!(job["node"], "node-b", "{job}");

    // kill -9 node-b while it trains.
    b.stop(true);
    let job = common::wait_job(
        &a,
        &id,
        "the job training on node-a past its checkpoint",
        |j| {
            j["node"] == "node-a"
                && j["state"] == "running"
                && j["progress"]["steps"].as_u64() > Some(kept)
        },
    )
    .await;
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(
        a.log()
            .contains("took over a job of a node that stopped answering"),
        "{}",
        a.log()
    );
    let events = common::log_events(&a, &id, None, false).await;
    let lines: Vec<&(String, Option<u64>, serde_json::Value)> =
        events.iter().filter(|e| e.0 == "log").collect();
    let first = lines.first().expect("lines on node-a");
    assert!(
        first.2["message"].as_str().is_some_and(|m| m
            .contains("node-b stopped answering and node-a took it over")
            && m.contains("resume from its checkpoint")),
        "{events:#?}"
    );
    assert!(
        first.1 > Some(1),
        "numbered on from node-b's lines: {events:#?}"
    );
    assert!(lines.windows(2).all(|w| w[0].1 < w[1].1), "{events:#?}");
    assert!(
        lines.iter().any(|e| e.2["message"]
            .as_str()
            .is_some_and(|m| m.contains("resuming from policy-"))),
        "{events:#?}"
    );
    let (status, cancelled) = a
        .post(&format!("/v1/jobs/{id}/cancel"), serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
}

/// Whether node `pid` has a training worker running (its child process).
fn has_worker(pid: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-P", pid, "-f", "hanzo_twin.train"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A node cut off long enough to be taken for dead (frozen here) finds, once
/// back, that a survivor holds its job: the shared store refuses its
/// writes, and it stops its copy of the worker instead of training twice.
#[tokio::test]
async fn a_cut_off_node_that_comes_back_stops_its_copy_of_a_job_taken_over() {
    let Some(sh) = shared() else { return };
    let Some((a, b)) = job_nodes(&sh).await else {
        return;
    };
    let id = train_on_b(&a, serde_json::json!({})).await;
    let pid = b.pid().expect("pid").to_string();
    assert!(has_worker(&pid), "node-b trains in a worker of its own");

    // Frozen past its lease: node-a takes the job over.
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let taken = common::wait_job(&a, &id, "node-a taking the job over", |j| {
        j["node"] == "node-a" && j["state"] == "running" && j["attempts"] == 2
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert_eq!(taken["node"], "node-a", "{taken}");

    // Back, node-b's next record write is refused and its worker stops.
    let deadline = Instant::now() + Duration::from_secs(120);
    while has_worker(&pid) {
        assert!(
            Instant::now() < deadline,
            "node-b still trains a job node-a holds\nnode-b:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        b.log().contains("its worker here stops"),
        "node-b:\n{}",
        b.log()
    );
    let (_, job) = a.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["node"], "node-a", "{job}");
    assert_eq!(job["state"], "running", "{job}");
    let (status, cancelled) = a
        .post(&format!("/v1/jobs/{id}/cancel"), serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
}

#[tokio::test]
async fn an_agent_drives_cluster_twins_by_id_through_a_client_that_hosts_none() {
    use hanzo_twin::actors::{Clock, ForkOptions, Format, StartOptions, TwinDefinition};
    use hanzo_twin::cluster::mesh::{Mesh, MeshConfig};
    let Some(sh) = shared() else { return };
    let [pa, pb, pclient] = free_ports::<3>();
    let a = member(&sh, "node-a", pa, "s3cret", &[], &[]).await;
    let b = member(&sh, "node-b", pb, "s3cret", &[pa], &[]).await;
    members(&a, 2).await;
    members(&b, 2).await;

    // The agent's process joins as a client: it knows one seed and the cookie.
    let (mesh, twins) = Mesh::connect_client(
        MeshConfig {
            listen: format!("127.0.0.1:{pclient}"),
            cookie: "s3cret".into(),
            seeds: vec![format!("127.0.0.1:{pa}")],
            refresh: Duration::from_millis(200),
            lease: Duration::from_secs(3),
            max_moves: 1,
            max_frame: 1 << 20,
            tls: None,
        },
        "agent-1",
        Duration::from_secs(10),
        Duration::from_secs(20),
    )
    .await
    .expect("the client joins");
    // It waits until both nodes are known before placing anything.
    let deadline = Instant::now() + Duration::from_secs(20);
    while mesh.link().peers().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the client met only {:?}",
            mesh.link().peers()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let mut ids = Vec::new();
    for i in 0..4 {
        let definition = TwinDefinition::parse(
            &common::rename(&yaml, &format!("agent-arm-{i}")),
            Format::Yaml,
        )
        .expect("definition");
        let record = twins.create(definition).await.expect("create");
        let holder = record.status.node.clone().unwrap_or_default();
        assert!(holder == "node-a" || holder == "node-b", "{holder}");
        let id = record.id.to_string();
        twins
            .start(
                &id,
                StartOptions {
                    clock: Clock::Paused,
                    reset: false,
                },
            )
            .await
            .expect("start");
        let report = twins.step(&id, 10).await.expect("step");
        assert_eq!(report.step, 10);
        ids.push((id, holder));
    }
    // The same twins, through the HTTP API of each node.
    for (id, holder) in &ids {
        let (status, v) = a.get(&format!("/v1/twins/{id}")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["status"]["node"].as_str(), Some(holder.as_str()));
        assert_eq!(b.step(id, 1).await["step"], 11);
    }
    let (id, holder) = &ids[0];
    let observed = twins.observe(id, "/").await.expect("observe");
    assert_eq!(observed.step, 11);
    let other = if holder == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let fork = twins
        .fork(
            id,
            ForkOptions {
                name: Some("agent-fork".into()),
                clock: Clock::Paused,
                node: Some(other.into()),
                ..ForkOptions::default()
            },
        )
        .await
        .expect("fork");
    assert_eq!(fork.status.node.as_deref(), Some(other));
    let forked = twins
        .observe(&fork.id.to_string(), "/")
        .await
        .expect("observe fork");
    assert_eq!(forked, observed, "the fork starts from the parent's state");
    let listed = twins.list(Default::default()).await.expect("list");
    assert_eq!(listed.len(), 5, "{listed:?}");
    // The client hosts nothing and is no member.
    assert_eq!(members(&a, 2).await.len(), 2);
    let err = twins.get("no-such-twin").await.expect_err("unknown");
    assert!(
        matches!(err, hanzo_twin::actors::TwinError::NotFound(_)),
        "{err}"
    );
    twins
        .delete(&fork.id.to_string())
        .await
        .expect("delete the fork");
    mesh.stop();
}

/// A CA and a certificate it signs for `hanzo-twin`, as PEM files in `dir`:
/// (cert, key, ca).
fn cluster_certs(dir: &std::path::Path, tag: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("test CA {tag}"));
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["hanzo-twin".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let write = |name: &str, pem: String| {
        let path = dir.join(format!("{tag}-{name}.pem"));
        std::fs::write(&path, pem).expect("write");
        path.to_string_lossy().to_string()
    };
    (
        write("cert", cert.pem()),
        write("key", key.serialize_pem()),
        write("ca", ca.pem()),
    )
}

#[tokio::test]
async fn nodes_linked_by_mutual_tls_form_a_cluster_that_keeps_others_out() {
    let Some(sh) = shared() else { return };
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = cluster_certs(certs.path(), "cluster");
    let tls = [
        ("HANZO_TWIN_CLUSTER_TLS_CERT", cert.as_str()),
        ("HANZO_TWIN_CLUSTER_TLS_KEY", key.as_str()),
        ("HANZO_TWIN_CLUSTER_TLS_CA", ca.as_str()),
    ];
    let [pa, pb, pc, pplain, pforeign] = free_ports::<5>();
    let a = member(&sh, "node-a", pa, "s3cret", &[], &tls).await;
    let b = member(&sh, "node-b", pb, "s3cret", &[pa], &tls).await;
    // C knows only B; with TLS the nodes close the mesh themselves.
    let c = member(&sh, "node-c", pc, "s3cret", &[pb], &tls).await;
    for n in [&a, &b, &c] {
        members(n, 3).await;
    }
    // Requests cross the encrypted links.
    let mut placed = Vec::new();
    for i in 0..40 {
        if i >= 6 && placed.len() >= 2 {
            break;
        }
        let (id, holder) = create(&c, &format!("tls-{i}")).await;
        a.start_twin(&id, "paused").await;
        assert_eq!(b.step(&id, 2).await["step"], 2);
        placed.push(holder);
        placed.sort();
        placed.dedup();
    }
    assert!(placed.len() >= 2, "{placed:?}");

    // A node without TLS, and one whose certificate another CA signed, get
    // nowhere, even with the right cookie.
    let plain = member(&sh, "node-plain", pplain, "s3cret", &[pa], &[]).await;
    let (fcert, fkey, fca) = cluster_certs(certs.path(), "foreign");
    let foreign_tls = [
        ("HANZO_TWIN_CLUSTER_TLS_CERT", fcert.as_str()),
        ("HANZO_TWIN_CLUSTER_TLS_KEY", fkey.as_str()),
        ("HANZO_TWIN_CLUSTER_TLS_CA", fca.as_str()),
    ];
    let foreign = member(&sh, "node-foreign", pforeign, "s3cret", &[pa], &foreign_tls).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(members(&plain, 1).await.len(), 1);
    assert_eq!(members(&foreign, 1).await.len(), 1);
    assert_eq!(members(&a, 3).await.len(), 3);
}

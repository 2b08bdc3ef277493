//! Nodes forming a cluster over ractor_cluster, as three node processes on
//! 127.0.0.1: joining through a seed (the mesh closes transitively), the
//! members each node lists, a member killed with SIGKILL leaving the others'
//! lists, and a node with the wrong cookie kept out.

mod common;

use common::{NodeOptions, TestNode, free_ports, repo};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn member(id: &str, listen: u16, cookie: &str, seeds: &[u16]) -> TestNode {
    let listen = format!("127.0.0.1:{listen}");
    let seeds = format!(
        "[{}]",
        seeds
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let env = [
        ("HANZO_TWIN_NODE_ID", id),
        ("HANZO_TWIN_CLUSTER_LISTEN", listen.as_str()),
        ("HANZO_TWIN_CLUSTER_COOKIE", cookie),
        ("HANZO_TWIN_CLUSTER_SEEDS", seeds.as_str()),
        ("HANZO_TWIN_CLUSTER_REFRESH_MS", "200"),
    ];
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
    let [pa, pb, pc] = free_ports::<3>();
    let a = member("node-a", pa, "shared-secret", &[]).await;
    let b = member("node-b", pb, "shared-secret", &[pa]).await;
    // C knows only B, and meets A through it.
    let c = member("node-c", pc, "shared-secret", &[pb]).await;
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
    let [pa, pb] = free_ports::<2>();
    let a = member("node-a", pa, "right-secret", &[]).await;
    let b = member("node-b", pb, "wrong-secret", &[pa]).await;
    // Give the handshake time to fail, then both still stand alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(members(&a, 1).await.len(), 1);
    assert_eq!(members(&b, 1).await.len(), 1);
}

#[test]
fn clustering_without_a_cookie_is_refused_with_a_reason() {
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--join", "127.0.0.1:1"])
        .env("HANZO_TWIN_CLUSTER_LISTEN", "127.0.0.1:0")
        .env(
            "HANZO_TWIN_DATA_DIR",
            std::env::temp_dir().join("hanzo-twin-no-cookie"),
        )
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cluster.cookie"), "{text}");
}

fn contains_twin(tree: &Value, name: &str) -> bool {
    (tree["kind"] == "twin" && tree["name"] == name && tree["status"] == "running")
        || tree["children"]
            .as_array()
            .is_some_and(|c| c.iter().any(|t| contains_twin(t, name)))
}

#[tokio::test]
async fn any_member_shows_every_members_supervision_tree() {
    let [pa, pb] = free_ports::<2>();
    let a = member("node-a", pa, "shared-secret", &[]).await;
    let b = member("node-b", pb, "shared-secret", &[pa]).await;
    members(&a, 2).await;
    // A twin on B, through B's own API.
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let (status, twin) = b
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, "b-arm"),
        )
        .await;
    assert_eq!(status, 201, "{twin}");
    let id = twin["id"].as_str().expect("id").to_string();
    let (status, _) = b
        .post(
            &format!("/v1/twins/{id}/start"),
            serde_json::json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 200);
    // A answers with its own tree first, then B's, asked over the cluster.
    let (status, v) = a.get("/v1/cluster/tree").await;
    assert_eq!(status, 200, "{v}");
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 2, "{v}");
    assert_eq!(nodes[0]["node"], "node-a");
    assert!(!contains_twin(&nodes[0]["tree"], "b-arm"), "{v}");
    assert_eq!(nodes[1]["node"], "node-b");
    assert!(contains_twin(&nodes[1]["tree"], "b-arm"), "{v}");
}

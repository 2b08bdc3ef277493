//! `GET /v1/twins/{id}/state` throughput of a node under `wrk -t2 -c64`,
//! against a bare axum server answering the same bytes on the same cores, in
//! one run: what the node's API, auth, routing and twin actor cost per request,
//! as a ratio to the floor an HTTP server on this machine sets.
//!
//!   cargo bench --bench state_throughput     (10 s a side)
//!
//! Run as a test (`cargo test --benches`) it loads each side for one second.
//! Needs `wrk` (Debian's package; scripts/test.sh installs it).

mod common;

use hanzo_twin::Node;
use std::time::Duration;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if !common::has_wrk() {
        eprintln!(
            "SKIPPED state_throughput: `wrk` is not installed (apt-get install wrk; scripts/test.sh does)"
        );
        return;
    }
    let seconds = if benchmarking { 10 } else { 1 };
    let rt = common::runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let (config, api_port) = common::api_node_config(data.path());
    let (token, id, running_id, body, stop) = rt.block_on(async {
        let node = Node::start(config).await.expect("node");
        let twins = node.twins();
        let id = common::create_started(
            &twins,
            common::definition("robot-arm.yaml"),
            hanzo_twin::actors::Clock::Paused,
        )
        .await;
        // A twin whose clock runs changes 60 times a second: most reads of
        // it find its last answer stale and go to its actor.
        let mut running = common::definition("robot-arm.yaml");
        running.name = hanzo_twin::actors::Name::new("running-arm").expect("name");
        let running_id =
            common::create_started(&twins, running, hanzo_twin::actors::Clock::Realtime).await;
        let (token, stop) = common::serve_api(node, api_port).await;
        let url = format!("http://127.0.0.1:{api_port}/v1/twins/{id}/state");
        let http = reqwest::Client::new();
        let body = loop {
            match http.get(&url).bearer_auth(&token).send().await {
                Ok(r) if r.status().is_success() => break r.bytes().await.expect("body"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        (token, id, running_id, body, stop)
    });
    // The floor: the same bytes from a bare axum route on the same runtime.
    let bare_port = common::start_bare(&rt, body);
    let bare = common::wrk(
        &format!("http://127.0.0.1:{bare_port}/state"),
        None,
        seconds,
    );
    let node = common::wrk(
        &format!("http://127.0.0.1:{api_port}/v1/twins/{id}/state"),
        Some(&token),
        seconds,
    );
    let running = common::wrk(
        &format!("http://127.0.0.1:{api_port}/v1/twins/{running_id}/state"),
        Some(&token),
        seconds,
    );
    println!("state_throughput (wrk -t2 -c64, {seconds} s each, same 2 cores):");
    println!("  bare axum, same bytes          {bare:>10.0} req/s");
    println!("  node, GET …/state (paused)     {node:>10.0} req/s");
    println!("  node, GET …/state (realtime)   {running:>10.0} req/s");
    println!("  ratio paused / bare            {:>10.2}", node / bare);
    println!("  ratio realtime / bare          {:>10.2}", running / bare);
    let _ = stop.send(());
}

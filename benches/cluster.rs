//! Cluster routing, side by side in one run: a step request for a twin on
//! this node against one for a twin on another node (routed over the mesh to
//! its owner's host), and a fork on the parent's node against a fork spawned
//! on another node from the parent's state message. This process embeds node
//! A; node B is a `hanzo-twin serve` process on 127.0.0.1. Both share
//! definitions in PostgreSQL (HANZO_TWIN_TEST_POSTGRES_URL, which
//! scripts/test.sh starts).
//!
//! `cargo bench --bench cluster` prints mean, p50 and p99 latencies and the
//! remote/local ratios.

mod common;

use hanzo_twin::actors::{Clock, ForkOptions, TwinNode};
use hanzo_twin::config::MetadataBackend;
use hanzo_twin::{Node, NodeConfig};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    Stats {
        mean: samples.iter().sum::<Duration>() / n as u32,
        p50: samples[n / 2],
        p99: samples[(n * 99 / 100).min(n - 1)],
    }
}

fn row(what: &str, s: &Stats) {
    println!(
        "{what:<28} mean {:>9.1} µs   p50 {:>9.1} µs   p99 {:>9.1} µs",
        s.mean.as_secs_f64() * 1e6,
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6
    );
}

/// Creates sample twins until one lands on `node` (placement decides), and
/// starts it paused.
async fn twin_on(twins: &TwinNode, node: &str, tag: &str) -> String {
    twin_on_with(twins, node, tag, Clock::Paused).await
}

async fn twin_on_with(twins: &TwinNode, node: &str, tag: &str, clock: Clock) -> String {
    for i in 0..64 {
        let mut definition = common::definition("robot-arm.yaml");
        definition.name = hanzo_twin::actors::Name::new(&format!("bench-{tag}-{i}")).expect("name");
        let record = twins.create(definition).await.expect("create");
        let id = record.id.to_string();
        if record.status.node.as_deref() == Some(node) {
            common::start(twins, &id, clock).await;
            return id;
        }
        twins.delete(&id).await.expect("delete");
    }
    panic!("placement never chose {node}");
}

/// Latencies of `n` calls of `request`.
async fn time_requests(n: usize, mut request: impl AsyncFnMut()) -> Stats {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        request().await;
        samples.push(t0.elapsed());
    }
    stats(samples)
}

/// Prints a local and a remote measurement and their ratio.
fn compare(local: (&str, &Stats), remote: (&str, &Stats), ratio: &str) {
    row(local.0, local.1);
    row(remote.0, remote.1);
    println!(
        "{ratio}: mean {:.2}x, p50 {:.2}x",
        remote.1.mean.as_secs_f64() / local.1.mean.as_secs_f64(),
        remote.1.p50.as_secs_f64() / local.1.p50.as_secs_f64()
    );
}

async fn time_forks(twins: &TwinNode, id: &str, node: Option<&str>, n: usize) -> Stats {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let options = ForkOptions {
            name: None,
            clock: Clock::Paused,
            node: node.map(String::from),
            ..ForkOptions::default()
        };
        let t0 = Instant::now();
        let fork = twins.fork(id, options).await.expect("fork");
        samples.push(t0.elapsed());
        // Discarding the fork is not part of its latency.
        twins.delete(&fork.id.to_string()).await.expect("delete");
    }
    stats(samples)
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let Ok(postgres) = std::env::var("HANZO_TWIN_TEST_POSTGRES_URL") else {
        eprintln!(
            "SKIPPED: the cluster bench shares definitions in PostgreSQL; set HANZO_TWIN_TEST_POSTGRES_URL (scripts/test.sh starts one)"
        );
        return;
    };
    // `cargo test --benches` runs every bench once as a smoke test: keep it short.
    let quick = std::env::args().all(|a| a != "--bench");
    let (steps, forks) = if quick { (50, 10) } else { (3000, 300) };
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = dir.path().join("objects");
    let [mesh_a, mesh_b, api_a, api_b] = [
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut config = NodeConfig {
        data_dir: dir.path().join("a"),
        ..Default::default()
    };
    config.node.id = Some("node-a".into());
    config.server.port = api_a;
    config.scenes.root = common::repo().join("configs/scenes");
    config.metrics.enabled = false;
    config.storage.root = Some(objects.clone());
    config.metadata.backend = MetadataBackend::Postgres;
    config.metadata.postgres.url = Some(postgres.clone());
    config.metadata.postgres.schema = schema.clone();
    config.cluster.listen = Some(format!("127.0.0.1:{mesh_a}"));
    config.cluster.cookie = Some("bench".into());
    config.cluster.refresh_ms = 200;
    let node = rt.block_on(Node::start(config)).expect("node A");
    let twins = node.twins();

    let b_yaml = format!(
        "node:\n  id: node-b\nserver:\n  host: 127.0.0.1\n  port: {api_b}\nmetrics:\n  enabled: false\ndata_dir: {data}\nscenes:\n  root: {scenes}\nstorage:\n  root: {objects}\nmetadata:\n  backend: postgres\n  postgres:\n    url: {postgres}\n    schema: {schema}\ncluster:\n  listen: 127.0.0.1:{mesh_b}\n  cookie: bench\n  seeds: [\"127.0.0.1:{mesh_a}\"]\n  refresh_ms: 200\nauth:\n  rate_limit:\n    per_second: 0\n    control_per_second: 0\nlogging:\n  level: warn\n",
        data = dir.path().join("b").display(),
        scenes = common::repo().join("configs/scenes").display(),
        objects = objects.display(),
    );
    let b_config = dir.path().join("b.yaml");
    std::fs::write(&b_config, b_yaml).expect("config");
    let _peer = Peer(
        Command::new(env!("CARGO_BIN_EXE_hanzo-twin"))
            .args(["serve", "--config"])
            .arg(&b_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node B"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while node_count(&node) < 2 {
        assert!(Instant::now() < deadline, "node B did not join");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (local, remote, running) = rt.block_on(async {
        let local = twin_on(&twins, "node-a", "local").await;
        let remote = twin_on(&twins, "node-b", "remote").await;
        let step = |id: &str| {
            let (twins, id) = (twins.clone(), id.to_string());
            async move || {
                twins.step(&id, 1).await.expect("step");
            }
        };
        let get = |id: &str| {
            let (twins, id) = (twins.clone(), id.to_string());
            async move || {
                twins.get(&id).await.expect("get");
            }
        };
        // Warm both paths.
        time_requests(20, step(&local)).await;
        time_requests(20, step(&remote)).await;
        println!(
            "cluster routing: robot-arm twin (rapier3d), one step per request, {steps} requests"
        );
        let l = time_requests(steps, step(&local)).await;
        let r = time_requests(steps, step(&remote)).await;
        compare(
            ("step, twin on this node", &l),
            ("step, twin on node B", &r),
            "remote / local",
        );
        let l = time_requests(steps, get(&local)).await;
        let r = time_requests(steps, get(&remote)).await;
        compare(
            ("get record, on this node", &l),
            ("get record, on node B", &r),
            "remote / local",
        );
        println!("\nfork latency: parent on this node, {forks} forks each");
        let l = time_forks(&twins, &local, None, forks).await;
        let r = time_forks(&twins, &local, Some("node-b"), forks).await;
        compare(
            ("fork on the parent's node", &l),
            ("fork on node B", &r),
            "cross-node / local",
        );
        // Changes 60 times a second: each change costs a cached read.
        let running = twin_on_with(&twins, "node-a", "running", Clock::Realtime).await;
        (local, remote, running)
    });
    if common::has_wrk() {
        let on_a = [local.as_str(), running.as_str()];
        state_throughput(&rt, &dir.path().join("b"), api_b, on_a, &remote, quick);
    } else {
        eprintln!(
            "SKIPPED the routed state throughput: `wrk` is not installed (scripts/test.sh installs it)"
        );
    }
    rt.block_on(node.shutdown());
}

/// `GET …/state` under `wrk -t2 -c64` through node B's API: for B's own twin
/// and for a paused and a realtime one on node A (routed over the mesh),
/// against a bare axum server answering the same bytes, all on the same
/// cores.
fn state_throughput(
    rt: &tokio::runtime::Runtime,
    b_data: &std::path::Path,
    api_b: u16,
    [on_a, running_on_a]: [&str; 2],
    on_b: &str,
    quick: bool,
) {
    let seconds = if quick { 1 } else { 10 };
    let token = std::fs::read_to_string(b_data.join("auth/dev-token")).expect("B's dev token");
    let token = token.trim();
    let url = |id: &str| format!("http://127.0.0.1:{api_b}/v1/twins/{id}/state");
    let body = rt.block_on(async {
        let http = reqwest::Client::new();
        let answer = http
            .get(url(on_a))
            .bearer_auth(token)
            .send()
            .await
            .expect("B answers");
        assert!(
            answer.status().is_success(),
            "routed state: {}",
            answer.status()
        );
        answer.bytes().await.expect("body")
    });
    let bare_port = common::start_bare(rt, body);
    let bare = common::wrk(
        &format!("http://127.0.0.1:{bare_port}/state"),
        None,
        seconds,
    );
    let own = common::wrk(&url(on_b), Some(token), seconds);
    let routed = common::wrk(&url(on_a), Some(token), seconds);
    let running = common::wrk(&url(running_on_a), Some(token), seconds);
    println!("\nGET …/state through node B's API (wrk -t2 -c64, {seconds} s each, same 2 cores):");
    println!("  bare axum, same bytes          {bare:>10.0} req/s");
    println!(
        "  twin on node B (its own)       {own:>10.0} req/s   {:.2}x bare",
        own / bare
    );
    println!(
        "  twin on node A (routed)        {routed:>10.0} req/s   {:.2}x bare",
        routed / bare
    );
    println!(
        "  realtime twin on A (routed)    {running:>10.0} req/s   {:.2}x bare",
        running / bare
    );
}

fn node_count(node: &Node) -> usize {
    node.membership().nodes().len()
}

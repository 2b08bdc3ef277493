//! One node holding many twins, each phase in its own process so its
//! resident memory is its own:
//!
//! - `defined`: 100,000 twin definitions on one node (sled). Creates one at a
//!   time (each its own flush) against 64 in flight (sharing flushes: the
//!   group commit), as a ratio; list-page latency at random cursors; 1,000 of
//!   them started, left idle until passivated, then brought back by a step
//!   (reactivation latency); the node's RSS after each stage.
//! - `restart`: how long a node restarted on those takes to serve again.
//! - `active`: 10,000 running, paused rapier3d twins of the sample scenes,
//!   and the RSS each costs.
//!
//!   cargo bench --bench many_twins
//!   HANZO_TWIN_DEFINED=20000 HANZO_TWIN_ACTIVE=1000 HANZO_TWIN_PAUSED=2000 cargo bench --bench many_twins
//!
//! Run as a test (`cargo test --benches`) it uses a few hundred twins.

mod common;

use hanzo_twin::Node;
use hanzo_twin::actors::protocol::TwinOp;
use hanzo_twin::actors::{Clock, Name, StartOptions, TwinFilter, TwinId, TwinNode};
use std::time::{Duration, Instant};

const PHASE: &str = "HANZO_TWIN_MANY_TWINS_PHASE";
/// The data folder the `defined` phase fills and `restart` reopens.
const DATA: &str = "HANZO_TWIN_MANY_TWINS_DATA";

fn count(var: &str, bench: usize, test: usize) -> usize {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benchmarking { bench } else { test })
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A sample twin's definition under a name of its own.
fn definition(i: usize) -> hanzo_twin::actors::TwinDefinition {
    let (file, _) = common::SAMPLES[i % common::SAMPLES.len()];
    let mut definition = common::definition(file);
    definition.name = Name::new(&format!("twin-{i}")).expect("name");
    definition
}

/// Creates twins `range` with `in_flight` creates at a time; their ids, and
/// creates per second.
async fn create_all(
    twins: &TwinNode,
    range: std::ops::Range<usize>,
    in_flight: usize,
) -> (Vec<TwinId>, f64) {
    let started = Instant::now();
    let n = range.len();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (twins, next, end) = (twins.clone(), next.clone(), range.end);
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= end {
                    return ids;
                }
                ids.push(twins.create(definition(i)).await.expect("create").id);
            }
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for worker in workers {
        ids.extend(worker.await.expect("worker"));
    }
    (ids, n as f64 / started.elapsed().as_secs_f64())
}

async fn start_all(twins: &TwinNode, ids: &[TwinId], in_flight: usize) -> f64 {
    let started = Instant::now();
    let options = StartOptions {
        clock: Clock::Paused,
        reset: true,
    };
    for chunk in ids.chunks(in_flight) {
        let starts = chunk.iter().map(|id| {
            let twins = twins.clone();
            let id = id.to_string();
            tokio::spawn(async move { twins.start(&id, options).await.expect("start") })
        });
        for start in starts.collect::<Vec<_>>() {
            start.await.expect("start task");
        }
    }
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

fn defined() {
    let defined = count("HANZO_TWIN_DEFINED", 100_000, 300);
    let active = count("HANZO_TWIN_ACTIVE", 1_000, 20).min(defined);
    let one_by_one = (defined / 10).min(500);
    let rt = common::runtime();
    let data = std::env::var(DATA).expect("a data folder");
    let mut config = common::node_config(std::path::Path::new(&data));
    config.twins.passivate_after_s = 1;
    config.logging.level = "warn".into();
    rt.block_on(async {
        let node = Node::start(config).await.expect("node");
        let twins = node.twins();
        let base = common::rss_kib();
        println!("many_twins/defined: {defined} twin definitions on one node (sled), {active} active");

        let (mut ids, alone) = create_all(&twins, 0..one_by_one, 1).await;
        let (more, grouped) = create_all(&twins, one_by_one..defined, 64).await;
        ids.extend(more);
        ids.sort();
        let after_create = common::rss_kib();
        println!(
            "  creates/s: {alone:>8.0} one in flight (a flush each)   {grouped:>8.0} with 64 in flight (group commit)   ratio {:.1}x",
            grouped / alone
        );
        println!(
            "  RSS with {defined} defined: {} MiB ({:.2} KiB per definition)",
            after_create / 1024,
            (after_create.saturating_sub(base)) as f64 / defined as f64
        );

        // A page of 100 from random cursors.
        let mut pages = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let after = ids[(seed % ids.len() as u64) as usize];
            let filter = TwinFilter {
                after: Some(after),
                limit: Some(100),
                ..Default::default()
            };
            let t = Instant::now();
            let page = twins.list(filter).await.expect("list");
            pages.push(t.elapsed());
            assert!(page.first().is_none_or(|r| r.id > after), "page starts past its cursor");
        }
        println!(
            "  list page of 100 at a random cursor: p50 {:.3} ms  p99 {:.3} ms",
            ms(percentile(&mut pages, 0.5)),
            ms(percentile(&mut pages, 0.99))
        );

        let stride = (defined / active.max(1)).max(1);
        let chosen: Vec<TwinId> = ids.iter().step_by(stride).take(active).copied().collect();
        let starts = start_all(&twins, &chosen, 16).await;
        let with_active = common::rss_kib();
        println!(
            "  starts/s: {starts:.0}   RSS with {} active: {} MiB",
            chosen.len(),
            with_active / 1024
        );

        // Paused and idle, each is passivated after a second.
        let deadline = Instant::now() + Duration::from_secs(600);
        for id in &chosen {
            loop {
                let record = twins.get(&id.to_string()).await.expect("get");
                if record.status.passivated {
                    break;
                }
                assert!(Instant::now() < deadline, "twin {id} was never passivated");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!(
            "  RSS with all {} passivated: {} MiB",
            chosen.len(),
            common::rss_kib() / 1024
        );

        let mut reactivations = Vec::new();
        for id in chosen.iter().take(200) {
            let t = Instant::now();
            let (_, reactivated) = twins
                .op_outcome(&id.to_string(), TwinOp::Step { steps: 1 })
                .await
                .expect("step");
            reactivations.push(t.elapsed());
            assert!(reactivated, "twin {id} was not passivated");
        }
        println!(
            "  reactivation (a step to a passivated twin): p50 {:.3} ms  p99 {:.3} ms over {}",
            ms(percentile(&mut reactivations, 0.5)),
            ms(percentile(&mut reactivations, 0.99)),
            reactivations.len()
        );
        node.shutdown().await;
    });
}

/// A node restarted on what `defined` left: it reads every definition back
/// (and resumes the twins that were running) before it serves.
fn restart() {
    let data = std::env::var(DATA).expect("the defined phase's data folder");
    let defined = count("HANZO_TWIN_DEFINED", 100_000, 300);
    let rt = common::runtime();
    let mut config = common::node_config(std::path::Path::new(&data));
    config.logging.level = "warn".into();
    rt.block_on(async {
        let t = Instant::now();
        let node = Node::start(config).await.expect("node restarts");
        let boot = t.elapsed();
        let first = node
            .twins()
            .list(TwinFilter {
                limit: Some(100),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(first.len(), 100.min(defined), "the definitions came back");
        println!(
            "many_twins/restart: a node with {defined} definitions serves again after {:.2} s, RSS {} MiB",
            boot.as_secs_f64(),
            common::rss_kib() / 1024
        );
        node.shutdown().await;
    });
}

fn active() {
    let paused = count("HANZO_TWIN_PAUSED", 10_000, 20);
    let rt = common::runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = common::node_config(data.path());
    config.twins.passivate_after_s = 0;
    config.logging.level = "warn".into();
    rt.block_on(async {
        let node = Node::start(config).await.expect("node");
        let twins = node.twins();
        let (ids, _) = create_all(&twins, 0..paused, 64).await;
        let base = common::rss_kib();
        let starts = start_all(&twins, &ids, 16).await;
        let after = common::rss_kib();
        let running = twins
            .list(TwinFilter::default())
            .await
            .expect("list")
            .iter()
            .filter(|r| r.status.state == hanzo_twin::actors::Lifecycle::Running)
            .count();
        assert_eq!(running, paused, "every twin runs");
        println!(
            "many_twins/active: {paused} running, paused rapier3d sample twins: starts/s {starts:.0}, RSS {} MiB, {:.1} KiB per twin",
            after / 1024,
            after.saturating_sub(base) as f64 / paused as f64
        );
        node.shutdown().await;
    });
}

fn main() {
    match std::env::var(PHASE).as_deref() {
        Ok("defined") => return defined(),
        Ok("active") => return active(),
        Ok("restart") => return restart(),
        _ => {}
    }
    let me = std::env::current_exe().expect("this bench's path");
    let data = tempfile::tempdir().expect("tempdir");
    for phase in ["defined", "restart", "active"] {
        let status = std::process::Command::new(&me)
            .args(std::env::args_os().skip(1))
            .env(PHASE, phase)
            .env(DATA, data.path())
            .status()
            .expect("run a phase");
        assert!(status.success(), "phase {phase} failed: {status}");
    }
}

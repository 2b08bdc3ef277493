//! Soak: the sample twins on the `fast` clock, checkpointing as often as a
//! node allows, while the node's resident memory is sampled. A node whose
//! memory grows under a fast clock runs out of it within minutes; this shows
//! whether it stays flat.
//!
//!   cargo bench --bench fast_clock_soak                       (one hour)
//!   HANZO_TWIN_SOAK_S=300 cargo bench --bench fast_clock_soak (five minutes)
//!
//! Run as a test (`cargo test --benches`) it soaks for a few seconds.

mod common;

use hanzo_twin::Node;
use hanzo_twin::actors::Clock;
use std::time::{Duration, Instant};

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let soak = std::env::var("HANZO_TWIN_SOAK_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(if benchmarking {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(4)
        });
    let rt = common::runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = common::node_config(data.path());
    // A checkpoint is due every few steps: only the wall-clock floor and the
    // latest-wins slots keep this bounded.
    config.twins.checkpoint_interval_s = 0.05;
    config.logging.level = "warn".into();
    rt.block_on(async {
        let node = Node::start(config).await.expect("node");
        let twins = node.twins();
        let mut ids = Vec::new();
        for copy in 0..4 {
            for (file, _) in common::SAMPLES {
                let mut definition = common::definition(file);
                definition.name =
                    hanzo_twin::actors::Name::new(&format!("{}-{copy}", definition.name))
                        .expect("name");
                ids.push(common::create_started(&twins, definition, Clock::Fast).await);
            }
        }
        let started = Instant::now();
        // Past start-up allocations (engines, caches, the first writes).
        let warm = soak.min(Duration::from_secs(60)) / 4;
        tokio::time::sleep(warm).await;
        let baseline = common::rss_kib();
        let samples = 10u32;
        let mut peak = baseline;
        let mut last = baseline;
        println!(
            "fast_clock_soak: {} fast twins, checkpoint every 0.05 s simulated, {:?}",
            ids.len(),
            soak
        );
        println!(
            "  after {:>7.1} s  RSS {:>8} KiB",
            warm.as_secs_f64(),
            baseline
        );
        for _ in 0..samples {
            tokio::time::sleep(soak.saturating_sub(warm) / samples).await;
            last = common::rss_kib();
            peak = peak.max(last);
            println!(
                "  after {:>7.1} s  RSS {:>8} KiB",
                started.elapsed().as_secs_f64(),
                last
            );
        }
        let mut steps = 0;
        for id in &ids {
            steps += twins.info(id).await.expect("info").step;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "  {steps} steps in all; RSS growth after warm-up {} KiB (peak {} KiB), {:.1} KiB/min",
            last as i64 - baseline as i64,
            peak,
            (last as f64 - baseline as f64) / (seconds - warm.as_secs_f64()).max(1.0) * 60.0
        );
        node.shutdown().await;
    });
}

//! What the operations console's streams cost a node holding many running
//! twins: the node's CPU time (its whole process, every thread) over a
//! window with nobody watching, then over as long a window with the
//! console's own requests (the tree's event stream, read to the end of each
//! event, and the charts' stats polled every 2 s, from a client inside the
//! process, so its own cost counts too), and, where Chromium and
//! playwright-core are installed, with the console page open in a real
//! browser (a process of its own). Printed as a share of one core, side by
//! side.
//!
//!   cargo bench --bench console_cost
//!   HANZO_TWIN_CONSOLE_TWINS=10000 cargo bench --bench console_cost
//!
//! Run as a test (`cargo test --benches`) it uses 50 twins, 2 s windows and
//! no browser.

mod common;

use hanzo_twin::Node;
use hanzo_twin::actors::{Clock, Name};
use std::time::{Duration, Instant};

/// CPU seconds this process has used, all threads (utime + stime of
/// /proc/self/stat, in USER_HZ = 100 ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name may hold spaces; fields count from after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("ticks");
    (ticks(11) + ticks(12)) / 100.0
}

/// The share of one core the process used while `during` ran for `window`.
async fn core_share<F: std::future::Future<Output = ()>>(window: Duration, during: F) -> f64 {
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let _ = tokio::time::timeout(window, during).await;
    let (cpu1, t1) = (cpu_seconds(), Instant::now());
    (cpu1 - cpu0) / t1.duration_since(t0).as_secs_f64()
}

/// The console's requests: the tree stream, read as it comes, and the stats
/// every 2 s. Runs until dropped.
async fn console_client(base: String, token: String) {
    let http = reqwest::Client::new();
    let stream = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            loop {
                let Ok(mut r) = http
                    .get(format!("{base}/v1/cluster/tree/events"))
                    .bearer_auth(&token)
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while let Ok(Some(_chunk)) = r.chunk().await {}
            }
        }
    };
    let stats = async move {
        loop {
            let _ = http
                .get(format!("{base}/v1/cluster/stats"))
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.bytes());
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    tokio::join!(stream, stats);
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let twins_wanted: usize = std::env::var("HANZO_TWIN_CONSOLE_TWINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benchmarking { 1000 } else { 50 });
    let window = Duration::from_secs(if benchmarking { 20 } else { 2 });
    let rt = common::runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let (config, api_port) = common::api_node_config(data.path());
    // The charts' figures come from the metrics recorder, which every node
    // installs; the /metrics server itself is off, as in the other benches.
    rt.block_on(async {
        let node = Node::start(config).await.expect("node");
        let twins = node.twins();
        let started = Instant::now();
        for i in 0..twins_wanted {
            let (file, _) = common::SAMPLES[i % common::SAMPLES.len()];
            let mut definition = common::definition(file);
            definition.name = Name::new(&format!("console-{i}")).expect("name");
            common::create_started(&twins, definition, Clock::Paused).await;
        }
        eprintln!(
            "{twins_wanted} paused twins running after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let (token, stop) = common::serve_api(node, api_port).await;
        let base = format!("http://127.0.0.1:{api_port}");
        // Settle: the start's checkpoints and writes are behind us.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let idle = core_share(window, std::future::pending()).await;
        let streamed = core_share(window, console_client(base.clone(), token.clone())).await;
        let browser = match std::env::var("HANZO_TWIN_PLAYWRIGHT") {
            Ok(playwright) if benchmarking => {
                let mut child = tokio::process::Command::new("node")
                    .arg(common::repo().join("tests/browser/console_idle.cjs"))
                    .args([&base, &token, &twins_wanted.to_string()])
                    .env("HANZO_TWIN_PLAYWRIGHT", playwright)
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("node runs");
                // The window starts once the page shows every twin (the
                // script says "ready").
                use tokio::io::AsyncBufReadExt;
                let mut lines =
                    tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
                let ready = tokio::time::timeout(Duration::from_secs(120), async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.starts_with("ready") {
                            return true;
                        }
                    }
                    false
                })
                .await;
                let share = if ready == Ok(true) {
                    Some(core_share(window, std::future::pending()).await)
                } else {
                    eprintln!("the console page did not show every twin in Chromium");
                    None
                };
                let _ = child.kill().await;
                share
            }
            _ => {
                if benchmarking {
                    eprintln!(
                        "the browser window is skipped: HANZO_TWIN_PLAYWRIGHT is not set (scripts/test.sh sets it)"
                    );
                }
                None
            }
        };
        println!(
            "console_cost ({twins_wanted} paused twins, {} s windows, 2 cores):",
            window.as_secs()
        );
        println!("  nobody watching                  {:>6.2}% of a core", idle * 100.0);
        println!(
            "  console streams (in process)     {:>6.2}% of a core  (+{:.2} points)",
            streamed * 100.0,
            (streamed - idle) * 100.0
        );
        if let Some(browser) = browser {
            println!(
                "  console page open in Chromium    {:>6.2}% of a core  (+{:.2} points)",
                browser * 100.0,
                (browser - idle) * 100.0
            );
        }
        let _ = stop.send(());
    });
}

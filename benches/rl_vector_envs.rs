//! Ant-v5 through Python, side by side in one run (benches/rl_vector_envs.py):
//! hanzo_twin's make_vec embedded and remote (against a node this binary
//! serves on 127.0.0.1) and make_pool, EnvPool sync and async, Gymnasium's
//! sync and async vector envs, at N = 2, 8 and 32, each as a ratio to raw
//! MuJoCo stepping on every core. This binary measures the raw rate whenever
//! the script asks (before and after every measurement, with Python idle),
//! because this shared VM's speed drifts by more than the margins compared.
//!
//!   cargo bench --features mujoco --bench rl_vector_envs
//!
//! Needs the test venv (scripts/test.sh: hanzo_twin, envpool, gymnasium).
//! Run as a test, every column runs briefly at N = 2.

mod common;

use hanzo_twin::gym::{AntConfig, AntTask};
use hanzo_twin::{Node, NodeConfig};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

fn main() {
    let (python, xml) = match common::gymnasium_ant_xml() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let task = AntTask::load(&xml, AntConfig::default()).expect("task");
    let raw_budget = Duration::from_millis(if benchmarking { 500 } else { 0 });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let data = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = NodeConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    config.server.port = port;
    config.metrics.enabled = false;
    config.gym.ant_xml = Some(xml.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (token, served) = runtime.block_on(async {
        let node = Node::start(config).await.expect("node");
        let api = node.api().await.expect("api");
        let token = api
            .dev_token
            .as_ref()
            .map(|t| t.token.clone())
            .expect("dev token");
        let served = tokio::spawn(node.serve_api(api, async move {
            let _ = stopped.await;
        }));
        (token, served)
    });
    // The node answers once its listener is up.
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let (sizes, seconds, rounds) = if benchmarking {
        ("2,8,32", "1", "4")
    } else {
        ("2", "0.05", "1")
    };
    let mut script = std::process::Command::new(&python)
        .arg(common::repo().join("benches/rl_vector_envs.py"))
        .args([
            "--n",
            sizes,
            "--seconds",
            seconds,
            "--rounds",
            rounds,
            "--url",
            &url,
        ])
        .env("HANZO_TWIN_TOKEN", &token)
        .env("HANZO_TWIN_ANT_XML", &xml)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    // The script prints its table, and `raw?` when it wants the limit now.
    let mut answers = script.stdin.take().expect("stdin");
    let lines = BufReader::new(script.stdout.take().expect("stdout")).lines();
    for line in lines {
        let line = line.expect("the script's output");
        if line == "raw?" {
            let raw = common::raw_ant_limit(&task, raw_budget);
            writeln!(answers, "{raw}").expect("answer the script");
        } else {
            println!("{line}");
        }
    }
    let status = script.wait().expect("python runs");
    let _ = stop.send(());
    let _ = runtime.block_on(served);
    assert!(status.success(), "benches/rl_vector_envs.py failed");
}

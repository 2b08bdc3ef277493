//! Shared set-up of the benchmarks: an embedded node and the sample scenes.

#![allow(dead_code)]

use hanzo_twin::actors::{Clock, Format, StartOptions, TwinDefinition, TwinNode};
use hanzo_twin::engines::{Engine, EngineConfig, Simulation, rapier::RapierEngine, usd};
use hanzo_twin::{Node, NodeConfig};
use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The two sample twins: (definition file, scene file).
pub const SAMPLES: [(&str, &str); 2] = [
    ("robot-arm.yaml", "robot-arm/scene.usda"),
    ("conveyor.yaml", "conveyor/scene.usda"),
];

pub fn definition(file: &str) -> TwinDefinition {
    let text = std::fs::read_to_string(repo().join("configs/twins").join(file))
        .expect("sample definition");
    TwinDefinition::parse(&text, Format::Yaml).expect("valid sample")
}

/// A simulation of a sample scene, loaded directly with no actor around it.
pub fn direct_simulation(def_file: &str, scene: &str) -> Box<dyn Simulation> {
    let model = usd::load_scene(&repo().join("configs/scenes").join(scene)).expect("scene");
    let config: EngineConfig = definition(def_file).engine.config.to_engine_config();
    RapierEngine.load_scene(&model, &config).expect("load")
}

/// The runtime the benches measure on: two workers, as on the 2-core
/// machines the figures come from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A node's configuration for a bench: its data in `data`, the sample
/// scenes, no metrics server.
pub fn node_config(data: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig {
        data_dir: data.to_path_buf(),
        ..Default::default()
    };
    config.scenes.root = repo().join("configs/scenes");
    config.metrics.enabled = false;
    config
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A node's configuration for a bench of its HTTP API (see [`serve_api`]):
/// [`node_config`] on a free port, with no per-token rate limits (the bench
/// measures the server, not the limits) and quiet logs; and the port.
pub fn api_node_config(data: &std::path::Path) -> (NodeConfig, u16) {
    let port = free_port();
    let mut config = node_config(data);
    config.server.port = port;
    config.auth.rate_limit.per_second = 0;
    config.auth.rate_limit.control_per_second = 0;
    config.logging.level = "warn".into();
    (config, port)
}

/// An embedded node with one sample twin running on a paused clock.
pub async fn node_with_twin(def_file: &str, data: &std::path::Path) -> (Node, TwinNode, String) {
    let node = Node::start(node_config(data)).await.expect("node");
    let twins = node.twins();
    let id = create_started(&twins, definition(def_file), Clock::Paused).await;
    (node, twins, id)
}

/// Serves `node`'s HTTP API (on `port`, its configured one) until the
/// returned sender is used or dropped; the development token, once the API
/// answers `/ready`.
pub async fn serve_api(node: Node, port: u16) -> (String, tokio::sync::oneshot::Sender<()>) {
    let api = node.api().await.expect("api");
    let token = api.dev_token.as_ref().expect("dev token").token.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = node
            .serve_api(api, async {
                let _ = stopped.await;
            })
            .await;
    });
    let http = reqwest::Client::new();
    while !http
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (token, stop)
}

/// Creates a twin and starts it from its scene's initial state on `clock`;
/// its id.
pub async fn create_started(twins: &TwinNode, definition: TwinDefinition, clock: Clock) -> String {
    let id = twins
        .create(definition)
        .await
        .expect("create")
        .id
        .to_string();
    start(twins, &id, clock).await;
    id
}

/// Starts a twin from its scene's initial state on `clock`.
pub async fn start(twins: &TwinNode, id: &str, clock: Clock) {
    let options = StartOptions { clock, reset: true };
    twins.start(id, options).await.expect("start");
}

/// Gymnasium's ant.xml, from the Python that HANZO_TWIN_TEST_PYTHON names
/// (scripts/test.sh sets it); `None` says why it is missing.
pub fn gymnasium_ant_xml() -> Result<(String, PathBuf), String> {
    let python = std::env::var("HANZO_TWIN_TEST_PYTHON")
        .map_err(|_| "HANZO_TWIN_TEST_PYTHON is not set; scripts/test.sh sets it".to_string())?;
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import gymnasium.envs.mujoco as m, os; print(os.path.join(os.path.dirname(m.__file__), 'assets', 'ant.xml'))",
        ])
        .output()
        .map_err(|e| format!("{python} does not run: {e}"))?;
    if !out.status.success() {
        return Err(format!("{python} has no gymnasium[mujoco]"));
    }
    let xml = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok((python, xml))
}

/// Raw MuJoCo stepping of Ant on every core: each core advances its own
/// Ant, five MuJoCo steps per env step, with no observation, reward or
/// reset. Env steps per second (the physical limit here).
#[cfg(feature = "mujoco")]
pub fn raw_ant_limit(
    task: &std::sync::Arc<hanzo_twin::gym::AntTask>,
    budget: std::time::Duration,
) -> f64 {
    use hanzo_twin::gym::AntEnv;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let nu = task.action_size();
    let t0 = std::time::Instant::now();
    let steps: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                s.spawn(move || {
                    let mut env = AntEnv::new(task);
                    let action = vec![0.0f32; nu];
                    let mut n = 0u64;
                    while n < 20 || t0.elapsed() < budget {
                        env.simulate(&action);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    steps as f64 / t0.elapsed().as_secs_f64()
}

/// This process's resident set, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether `wrk` (Debian's package; scripts/test.sh installs it) is here.
pub fn has_wrk() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// Requests per second `wrk` reached against `url`.
pub fn wrk(url: &str, token: Option<&str>, seconds: u64) -> f64 {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(url).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every answer must be the 200 being measured, not an error page.
    assert!(
        !text.contains("Non-2xx"),
        "{url} answered errors under load:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"))
}

/// The floor of an HTTP read: `body` from a bare axum route at `/state`,
/// listening before this returns (so a load generator started next finds
/// it); its port.
pub fn start_bare(rt: &tokio::runtime::Runtime, body: bytes::Bytes) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let app = axum::Router::new().route(
        "/state",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        axum::serve(listener, app).await.expect("serve");
    });
    port
}

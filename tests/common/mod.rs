//! Starts real `hanzo-twin` node processes for whole-system tests.

#![allow(dead_code)]

pub mod jwt;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hanzo-twin"))
}

/// Runs the binary as `command` is set up (arguments, environment) and
/// gives its exit status, standard output and standard error.
pub fn output_of(command: &mut Command) -> (Option<i32>, String, String) {
    let out = command.output().expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The test PostgreSQL (`HANZO_TWIN_TEST_POSTGRES_URL`), or `None` with a
/// loud skip.
pub fn postgres_url() -> Option<String> {
    match std::env::var("HANZO_TWIN_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            eprintln!(
                "SKIPPED: HANZO_TWIN_TEST_POSTGRES_URL is not set; scripts/test.sh starts PostgreSQL and sets it"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports, none handed out before in this test process:
/// the kernel may give a released port out again before the node it was
/// meant for binds it, and two nodes of one test would then collide.
pub fn free_ports<const N: usize>() -> [u16; N] {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < N {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            ports.push(port);
        }
        // Held until all are chosen, so the kernel picks another each time.
        held.push(listener);
    }
    std::array::from_fn(|i| ports[i])
}

/// A self-signed certificate for 127.0.0.1 and localhost, written into
/// `dir`: the `server:` lines that make a node serve TLS with it, and the
/// certificate (PEM) for clients to trust.
pub fn self_signed_tls(dir: &Path) -> (String, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let server = format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        cert_path.display(),
        key_path.display()
    );
    (server, cert.cert.pem().into_bytes())
}

/// How to start a test node.
#[derive(Default)]
pub struct NodeOptions<'a> {
    pub env: &'a [(&'a str, &'a str)],
    /// Appended to the `twins:` section (indented two spaces).
    pub twins_yaml: &'a str,
    /// Appended to the `server:` section (indented two spaces).
    pub server_yaml: &'a str,
    /// A whole `auth:` section; development mode when empty.
    pub auth_yaml: &'a str,
    pub scenes_root: Option<&'a Path>,
    /// A PEM CA certificate to trust when the node serves TLS.
    pub ca_pem: Option<&'a [u8]>,
}

/// A node process on loopback with its own data folder. Killed when dropped.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub metrics_port: u16,
    child: Option<Child>,
    /// Sends the development token (when the node is in development mode).
    pub http: reqwest::Client,
    /// Sends no token unless given one per request.
    pub anonymous: reqwest::Client,
    /// The development token, if the node minted one.
    pub token: Option<String>,
    scheme: &'static str,
    ca_pem: Option<Vec<u8>>,
    extra_env: Vec<(String, String)>,
}

/// rustls needs its crypto provider chosen once per process.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client, with a default bearer token and trusting `ca_pem`.
pub fn client(token: Option<&str>, ca_pem: Option<&[u8]>) -> reqwest::Client {
    install_crypto();
    let mut builder = reqwest::Client::builder();
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        builder = builder.default_headers(headers);
    }
    if let Some(pem) = ca_pem {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA certificate"));
    }
    builder.build().expect("HTTP client")
}

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_opts(NodeOptions::default()).await
    }

    /// `env` is passed to the process; `twins_yaml` is appended to the node's
    /// `twins:` config section (indented two spaces).
    pub async fn start_with(env: &[(&str, &str)], twins_yaml: &str) -> TestNode {
        TestNode::start_opts(NodeOptions {
            env,
            twins_yaml,
            ..Default::default()
        })
        .await
    }

    /// A node reading scenes from `scenes_root`.
    pub async fn start_full(
        env: &[(&str, &str)],
        twins_yaml: &str,
        scenes_root: &Path,
    ) -> TestNode {
        TestNode::start_opts(NodeOptions {
            env,
            twins_yaml,
            scenes_root: Some(scenes_root),
            ..Default::default()
        })
        .await
    }

    pub async fn start_opts(opts: NodeOptions<'_>) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let [api_port, metrics_port] = free_ports::<2>();
        let default_scenes = repo().join("configs/scenes");
        let config = format!(
            "node:\n  id: test-node\nserver:\n  host: 127.0.0.1\n  port: {api_port}\n  workers: 2\n{server}metrics:\n  host: 127.0.0.1\n  port: {metrics_port}\ndata_dir: {data}\nscenes:\n  root: {scenes}\ntwins:\n  call_timeout_ms: 20000\n{twins}{auth}logging:\n  level: info\n",
            data = dir.path().join("data").display(),
            scenes = opts.scenes_root.unwrap_or(&default_scenes).display(),
            server = opts.server_yaml,
            twins = opts.twins_yaml,
            auth = opts.auth_yaml,
        );
        std::fs::write(dir.path().join("node.yaml"), config).expect("write config");
        let mut node = TestNode {
            dir,
            api_port,
            metrics_port,
            child: None,
            http: client(None, opts.ca_pem),
            anonymous: client(None, opts.ca_pem),
            token: None,
            scheme: if opts.ca_pem.is_some() {
                "https"
            } else {
                "http"
            },
            ca_pem: opts.ca_pem.map(<[u8]>::to_vec),
            extra_env: opts
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.spawn().await;
        node
    }

    /// Where a development node writes its admin token.
    pub fn dev_token_path(&self) -> PathBuf {
        self.dir.path().join("data/auth/dev-token")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.yaml")
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("node.log")).expect("log file");
        let child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .envs(self.extra_env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hanzo-twin serve");
        self.child = Some(child);
        self.wait_ready().await;
        // A development node has written its token before it serves.
        self.token = std::fs::read_to_string(self.dev_token_path()).ok();
        self.http = client(self.token.as_deref(), self.ca_pem.as_deref());
    }

    /// The node process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn api(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.api_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api(), path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("node exited with {status} before ready:\n{}", self.log());
            }
            if let Ok(r) = self.http.get(self.url("/ready")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node not ready in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process: SIGKILL when `hard`, else SIGTERM (a clean shutdown).
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            if hard {
                let _ = child.kill();
            } else {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
            }
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit;
    /// its exit status, or `None` if it was still running (then killed).
    pub fn terminate_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub async fn restart(&mut self, hard: bool) {
        self.stop(hard);
        self.spawn().await;
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        status_json(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        status_json(r).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        status_json(r).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("PATCH");
        status_json(r).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        status_json(r).await
    }

    /// Creates a twin from a YAML file in configs/twins, renamed, and returns its id.
    pub async fn create_sample(&self, file: &str, name: &str) -> String {
        let text = std::fs::read_to_string(repo().join("configs/twins").join(file))
            .expect("sample definition");
        let text = rename(&text, name);
        let (status, body) = self.post_raw("/v1/twins", "application/yaml", &text).await;
        assert_eq!(status, 201, "create {name}: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn start_twin(&self, id: &str, clock: &str) {
        let (status, body) = self
            .post(
                &format!("/v1/twins/{id}/start"),
                serde_json::json!({ "clock": clock }),
            )
            .await;
        assert_eq!(status, 200, "start: {body}");
    }

    pub async fn step(&self, id: &str, steps: u64) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/twins/{id}/step"),
                serde_json::json!({ "steps": steps }),
            )
            .await;
        assert_eq!(status, 200, "step: {body}");
        body
    }

    pub async fn command(&self, id: &str, joint: &str, mode: &str, value: f64) {
        let (status, body) = self
            .post(
                &format!("/v1/twins/{id}/commands"),
                serde_json::json!({ "commands": [{ "joint": joint, "mode": mode, "value": value }] }),
            )
            .await;
        assert_eq!(status, 204, "command: {body}");
    }

    /// The observation of every body and joint, as the raw JSON text: serde_json
    /// prints floats so they parse back to the same bits, so equal text means
    /// bitwise-equal state.
    pub async fn observation_text(&self, id: &str) -> String {
        let r = self
            .http
            .get(self.url(&format!("/v1/twins/{id}/observation")))
            .send()
            .await
            .expect("GET observation");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("body")
    }

    /// A request with an explicit token (or none), whatever the node's mode.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.anonymous.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let headers = r.headers().clone();
        let (status, value) = status_json(r).await;
        (status, value, headers)
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop(true);
    }
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// The shop of configs/twins/shop-infra.yaml as an API client sends it:
/// its manifests written inline (a node reads no files of the client's),
/// named `name`.
pub fn shop_infra_definition(name: &str) -> Value {
    let twins = repo().join("configs/twins");
    let text = std::fs::read_to_string(twins.join("shop-infra.yaml")).expect("the shop twin");
    let mut definition: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let mut manifests = String::new();
    for file in ["apps.yaml", "database.yaml"] {
        let path = repo().join("configs/infra/shop").join(file);
        manifests += &std::fs::read_to_string(&path).expect("a shop manifest");
        manifests += "\n---\n";
    }
    definition["name"] = Value::String(name.to_string());
    let topology = &mut definition["topology"];
    if let Some(t) = topology.as_object_mut() {
        t.remove("paths");
    }
    topology["manifests"] = Value::String(manifests);
    definition
}

/// The shop's database policy (configs/infra/shop) replaced: only the
/// gateway may reach PostgreSQL, so the API's writes are dropped. A what-if.
pub const GATEWAY_ONLY_POLICY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: postgres-from-api }
spec:
  podSelector: { matchLabels: { app: postgres } }
  policyTypes: [Ingress]
  ingress: [{ from: [{ podSelector: { matchLabels: { app: gateway } } }] }]
";

/// Replaces the `name:` line of a YAML definition.
pub fn rename(yaml: &str, name: &str) -> String {
    yaml.lines()
        .map(|l| {
            if l.starts_with("name:") {
                format!("name: {name}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Runs tests/browser/inspector.cjs in headless Chromium against the node at
/// `url`: the page shows `twin` running, then crashed and back (on `peer`'s
/// tree when given). Asserts it succeeded; returns what it printed.
pub async fn inspector_page_check(
    playwright: &str,
    url: &str,
    token: &str,
    twin: &str,
    peer: Option<&str>,
    screenshot: Option<&Path>,
) -> String {
    let mut args = vec![url.to_string(), token.to_string(), twin.to_string()];
    if let Some(shot) = screenshot {
        args.push(shot.display().to_string());
    }
    let env: Vec<(&str, &str)> = peer
        .map(|p| vec![("HANZO_TWIN_INSPECT_NODE", p)])
        .unwrap_or_default();
    browser_check(playwright, "inspector.cjs", &args, &env).await
}

/// Runs `tests/browser/<script>` (playwright-core driving Chromium) with
/// `args` and `env`; its output, or a failed assertion with it.
pub async fn browser_check(
    playwright: &str,
    script: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> String {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("tests/browser").join(script))
        .args(args)
        .env("HANZO_TWIN_PLAYWRIGHT", playwright);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser check {script} failed:\n{text}"
    );
    text
}

/// The venv's Python (`HANZO_TWIN_TEST_PYTHON`), which must import
/// `modules` (scripts/test.sh installs them). `None`, said loudly, when it is
/// not set; a failed assertion when it lacks a module.
pub fn venv_python(modules: &str) -> Option<String> {
    let Ok(python) = std::env::var("HANZO_TWIN_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: HANZO_TWIN_TEST_PYTHON is not set; run scripts/test.sh, which installs {modules} into the venv"
        );
        return None;
    };
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import {modules}; scripts/test.sh installs them (hanzo_twin with `maturin develop`)"
    );
    Some(python)
}

/// The venv's Python, with `hanzo_twin` and Stable-Baselines3: what a
/// node's training jobs run.
pub fn job_python() -> Option<String> {
    venv_python("hanzo_twin.train, stable_baselines3")
}

/// The job's log from line `after` on, as (event name, id, data), until
/// the stream ends (with `follow`, when the job has finished).
pub async fn log_events(
    node: &TestNode,
    id: &str,
    after: Option<u64>,
    follow: bool,
) -> Vec<(String, Option<u64>, Value)> {
    let mut request = node
        .http
        .get(node.url(&format!("/v1/jobs/{id}/logs?follow={follow}")));
    if let Some(after) = after {
        request = request.header("Last-Event-ID", after.to_string());
    }
    let response = request.send().await.expect("logs");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    use futures_util::StreamExt;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), stream.next())
        .await
        .expect("the log ends within 10 minutes")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let (mut name, mut seq, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().into();
                } else if let Some(v) = line.strip_prefix("id:") {
                    seq = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (
                name,
                seq,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            )
        })
        .collect()
}

/// Polls the job until `done` holds (at most 10 minutes).
pub async fn wait_job(
    node: &TestNode,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, job) = node.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held: {job:#}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

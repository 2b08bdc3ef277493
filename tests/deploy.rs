//! The container image: its Dockerfile passes hadolint, and a node runs with
//! exactly the configuration and environment the image gives it
//! (deploy/config.yaml; the API and metrics on 0.0.0.0, tokens verified).
//! Only the paths that are the image's own folders are pointed at this
//! machine's, through the same environment overrides an operator uses.
//! No container daemon runs here, so the image itself is not built.

mod common;

use common::jwt::{AUDIENCE, ISSUER, fixture, token};
use common::{bin, client, free_ports, repo};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tool the test script installs into the venv, beside its Python; `None`
/// (said loudly) only outside the test script.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let python = std::env::var("HANZO_TWIN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv/bin/python"));
    let tool = python.with_file_name(name);
    if tool.exists() {
        return Some(tool);
    }
    assert!(
        std::env::var("HANZO_TWIN_TEST_PYTHON").is_err(),
        "scripts/test.sh installs {name} from scripts/requirements-test.txt; {} is missing",
        tool.display()
    );
    eprintln!("SKIPPED: {name} is not in .venv (run scripts/test.sh)");
    None
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = venv_tool("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's config names its own folders; the test points those at this
/// machine's with the environment overrides, and leaves every other key as
/// the image has it.
#[test]
fn the_image_config_names_the_folders_the_dockerfile_makes() {
    let config = std::fs::read_to_string(repo().join("deploy/config.yaml")).expect("config");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    for (key, folder) in [
        ("data_dir:", "/var/lib/hanzo-twin"),
        ("root:", "/usr/share/hanzo-twin/scenes"),
        ("public_keys:", "/etc/hanzo-twin/jwt"),
    ] {
        assert!(
            config
                .lines()
                .any(|l| l.trim_start().starts_with(key) && l.contains(folder)),
            "deploy/config.yaml: {key} {folder}"
        );
        assert!(dockerfile.contains(folder), "the Dockerfile makes {folder}");
    }
    assert!(dockerfile.contains("COPY deploy/config.yaml /etc/hanzo-twin/config.yaml"));
}

#[tokio::test]
async fn a_node_runs_with_the_image_config_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [api, metrics] = free_ports::<2>();
    let log = dir.path().join("node.log");
    let public_keys = format!("[{}]", fixture("rsa-public.pem").display());
    let mut node = Command::new(bin())
        .args(["serve", "--config"])
        .arg(repo().join("deploy/config.yaml"))
        // The image's folders, here.
        .env("HANZO_TWIN_DATA_DIR", dir.path().join("data"))
        .env("HANZO_TWIN_SCENES_ROOT", repo().join("configs/scenes"))
        .env("HANZO_TWIN_AUTH_PUBLIC_KEYS", &public_keys)
        // What an installation sets: its issuer, its ports.
        .env("HANZO_TWIN_AUTH_ISSUER", ISSUER)
        .env("HANZO_TWIN_AUTH_AUDIENCE", AUDIENCE)
        .env("HANZO_TWIN_SERVER_PORT", api.to_string())
        .env("HANZO_TWIN_METRICS_PORT", metrics.to_string())
        .env("HANZO_TWIN_NODE_ID", "hanzo-twin-0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("hanzo-twin serve");
    let anonymous = client(None, None);
    let url = |path: &str| format!("http://127.0.0.1:{api}{path}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = node.try_wait() {
            panic!(
                "the node exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(r) = anonymous.get(url("/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = anonymous.get(url("/alive")).send().await.expect("alive");
    assert_eq!(alive.status(), 200);
    // Beyond loopback, nothing but the probes answers without a token.
    let refused = anonymous.get(url("/v1/twins")).send().await.expect("twins");
    assert_eq!(refused.status(), 401);
    let reader = client(Some(&token("acme", "twin-viewer")), None);
    let listed = reader.get(url("/v1/twins")).send().await.expect("twins");
    assert_eq!(listed.status(), 200);
    let scraped = anonymous
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(scraped.status(), 200);
    // Logs are JSON lines, as the image's config asks.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not a JSON log line: {first}"
    );
    let _ = node.kill();
    let _ = node.wait();
}

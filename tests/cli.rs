//! The CLI against a real node: readable output, JSON output, and errors a person
//! can act on.

mod common;

use common::{TestNode, bin, repo};
use std::process::Output;

/// Runs the CLI against `node` with the node's development token in
/// HANZO_TWIN_TOKEN.
fn cli(node: &TestNode, args: &[&str]) -> Output {
    cli_with_token(node, node.token.as_deref(), args)
}

fn cli_with_token(node: &TestNode, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .arg("--api")
        .arg(node.api())
        .env_remove("HANZO_TWIN_API")
        .env_remove("HANZO_TWIN_TOKEN")
        .env_remove("HANZO_TWIN_TOKEN_FILE");
    if let Some(t) = token {
        cmd.env("HANZO_TWIN_TOKEN", t);
    }
    cmd.output().expect("run hanzo-twin")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("--output json prints JSON")
}

#[tokio::test]
async fn cli_drives_a_twin_through_its_life() {
    let node = TestNode::start().await;
    let arm = repo().join("configs/twins/robot-arm.yaml");
    let arm = arm.to_str().expect("path");

    let out = ok(&cli(&node, &["create", "--config", arm]));
    assert!(
        out.contains("created twin") && out.contains("robot-arm-cell"),
        "{out}"
    );
    let listed = json(&cli(&node, &["list", "--output", "json"]));
    assert_eq!(listed["twins"][0]["name"], "robot-arm-cell");
    let table = ok(&cli(&node, &["list", "--tag", "robot"]));
    assert!(
        table.starts_with("ID") && table.contains("robot-arm-cell"),
        "{table}"
    );
    assert!(ok(&cli(&node, &["list", "--tag", "nope"])).contains("no twins"));

    let started = json(&cli(
        &node,
        &["start", "robot-arm-cell", "--clock", "paused", "-o", "json"],
    ));
    assert_eq!(started["status"]["state"], "running");
    let stepped = ok(&cli(&node, &["step", "robot-arm-cell", "--steps", "48"]));
    assert!(stepped.contains("step 48"), "{stepped}");
    let status = ok(&cli(&node, &["status", "robot-arm-cell"]));
    assert!(
        status.contains("state:        running") && status.contains("48 steps"),
        "{status}"
    );

    let fork = json(&cli(
        &node,
        &[
            "fork",
            "robot-arm-cell",
            "--name",
            "what-if",
            "--output",
            "json",
        ],
    ));
    assert_eq!(fork["name"], "what-if");
    assert_eq!(fork["parent"], started["id"]);
    let fork_status = json(&cli(&node, &["status", "what-if", "-o", "json"]));
    assert_eq!(fork_status["runtime"]["step"], 48);

    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = dir.path().join("arm.ckpt");
    let saved = ok(&cli(
        &node,
        &[
            "checkpoint",
            "robot-arm-cell",
            "--out",
            ckpt.to_str().expect("path"),
        ],
    ));
    assert!(saved.contains("saved"), "{saved}");
    ok(&cli(&node, &["step", "robot-arm-cell", "--steps", "10"]));
    ok(&cli(
        &node,
        &[
            "restore",
            "robot-arm-cell",
            "--file",
            ckpt.to_str().expect("path"),
        ],
    ));
    let status = json(&cli(&node, &["status", "robot-arm-cell", "-o", "json"]));
    assert_eq!(status["runtime"]["step"], 48);

    let stopped = ok(&cli(&node, &["stop", "robot-arm-cell"]));
    assert!(stopped.contains("stopped"), "{stopped}");
    ok(&cli(&node, &["delete", "what-if"]));
    ok(&cli(&node, &["delete", "robot-arm-cell"]));
    assert!(ok(&cli(&node, &["list"])).contains("no twins"));
}

#[tokio::test]
async fn cli_errors_say_what_to_do() {
    let node = TestNode::start().await;
    let out = cli(&node, &["status", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("twin ghost not found") && err.contains("hanzo-twin list"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml"))
        .expect("sample")
        .replace("step_hz: 240", "step_hz: 0");
    std::fs::write(&bad, text).expect("write");
    let out = cli(&node, &["create", "--config", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("engine.config.step_hz") && err.contains("line 9"),
        "{err}"
    );

    let arm = repo().join("configs/twins/robot-arm.yaml");
    ok(&cli(
        &node,
        &["create", "--config", arm.to_str().expect("path")],
    ));
    let out = cli(&node, &["step", "robot-arm-cell"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.contains("hanzo-twin start"),
        "{err}"
    );

    // No token, a token that is not a JWT, and the token as a flag or a file.
    let out = cli_with_token(&node, None, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 401")
            && err.contains("no token was given")
            && err.contains("--token")
            && err.contains("dev-token"),
        "{err}"
    );
    let out = cli_with_token(&node, Some("not-a-jwt"), &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a well-formed JWT") && err.contains("HTTP 401"),
        "{err}"
    );
    let token = node.token.clone().expect("development token");
    ok(&cli_with_token(&node, None, &["list", "--token", &token]));
    let token_file = node.dev_token_path();
    ok(&cli_with_token(
        &node,
        None,
        &["list", "--token-file", token_file.to_str().expect("path")],
    ));

    let out = std::process::Command::new(bin())
        .args(["list", "--api", "http://127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the node"), "{err}");

    let out = std::process::Command::new(bin())
        .args(["serve", "--config", "/nonexistent/node.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/node.yaml"), "{err}");
}

#[tokio::test]
async fn cli_uploads_validates_and_runs_library_scenes() {
    let node = TestNode::start().await;
    let arm = repo().join("configs/scenes/robot-arm");
    let out = ok(&cli(
        &node,
        &[
            "scene",
            "upload",
            "--name",
            "cell",
            "--path",
            arm.to_str().expect("path"),
        ],
    ));
    assert!(out.contains("uploaded cell version 1"), "{out}");
    let listed = ok(&cli(&node, &["scene", "list"]));
    assert!(
        listed.starts_with("NAME") && listed.contains("cell"),
        "{listed}"
    );
    let shown = ok(&cli(&node, &["scene", "show", "cell"]));
    assert!(
        shown.contains("scene.usda") && shown.contains("local-admin"),
        "{shown}"
    );
    let valid = ok(&cli(
        &node,
        &[
            "scene", "validate", "--name", "cell", "--engine", "rapier3d",
        ],
    ));
    assert!(valid.contains("loads and steps on rapier3d"), "{valid}");
    let out = cli(
        &node,
        &["scene", "validate", "--name", "cell", "--engine", "gazebo"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not available"),
        "{out:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = dir.path().join("cell.tar");
    ok(&cli(
        &node,
        &[
            "scene",
            "download",
            "--name",
            "cell",
            "--out",
            tar.to_str().expect("path"),
        ],
    ));
    assert!(std::fs::metadata(&tar).expect("tar").len() > 1000);
    // A folder that is not a scene is refused with the reason.
    let out = cli(
        &node,
        &[
            "scene",
            "upload",
            "--name",
            "cell",
            "--path",
            dir.path().to_str().expect("path"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no USD file") && err.contains("root"), "{err}");
    ok(&cli(&node, &["scene", "delete", "cell"]));
    assert!(ok(&cli(&node, &["scene", "list"])).contains("no scenes"));
}

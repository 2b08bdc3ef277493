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

#[test]
fn cli_converts_urdf_and_names_what_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let urdf = dir.path().join("pendulum.urdf");
    std::fs::write(
        &urdf,
        r#"<robot name="pendulum">
  <link name="base"/>
  <link name="arm">
    <inertial><origin xyz="0 0 -0.5"/><mass value="2"/><inertia ixx="0.2" iyy="0.2" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>
    <collision><origin xyz="0 0 -0.5"/><geometry><cylinder radius="0.05" length="1"/></geometry></collision>
  </link>
  <joint name="hinge" type="revolute">
    <parent link="base"/><child link="arm"/><origin xyz="0 0 2"/><axis xyz="0 1 0"/>
    <limit lower="-1.5" upper="1.5" effort="50" velocity="2"/>
  </joint>
</robot>"#,
    )
    .expect("write");
    let out = dir.path().join("pendulum.usda");
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .output()
            .expect("run")
    };
    let done = run(&[
        "urdf-to-usd",
        urdf.to_str().expect("path"),
        "--out",
        out.to_str().expect("path"),
    ]);
    assert!(done.status.success(), "{done:?}");
    let scene = hanzo_twin::engines::usd::load_scene(&out).expect("the USD reads");
    assert_eq!(scene.joints.len(), 1);
    let hinge = &scene.joints[0];
    assert_eq!(hinge.path, "/pendulum/joints/hinge");
    let (lo, hi) = hinge.limits.expect("limits");
    assert!(
        (lo + 1.5).abs() < 1e-5 && (hi - 1.5).abs() < 1e-5,
        "{lo} {hi}"
    );
    let arm = scene
        .bodies
        .iter()
        .find(|b| b.path == "/pendulum/arm")
        .expect("arm");
    assert_eq!(arm.mass.mass, Some(2.0));

    std::fs::write(&urdf, "<robot name=\"x\"><link name=\"${name}\"/></robot>").expect("write");
    let failed = run(&[
        "urdf-to-usd",
        urdf.to_str().expect("path"),
        "--out",
        out.to_str().expect("path"),
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("pendulum.urdf") && err.contains("xacro"),
        "{err}"
    );
}

/// `hanzo-twin completions <shell>`: bash loads the script and completes a
/// subcommand from it; zsh and fish get scripts of their own; a shell it
/// does not know is an error listing those it does.
#[test]
fn completion_scripts_complete_subcommands() {
    let completions = |shell: &str| {
        std::process::Command::new(bin())
            .args(["completions", shell])
            .output()
            .expect("run hanzo-twin completions")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("hanzo-twin.bash");
    std::fs::write(&script, ok(&completions("bash"))).expect("write the script");
    let complete = |word: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(
                "source \"$0\"; COMP_WORDS=(hanzo-twin \"$1\"); COMP_CWORD=1; \
                 _hanzo__twin hanzo-twin \"$1\" hanzo-twin; printf '%s\\n' \"${COMPREPLY[@]}\"",
            )
            .arg(&script)
            .arg(word)
            .output()
            .expect("run bash");
        ok(&out)
    };
    assert_eq!(complete("fo").trim(), "fork");
    assert_eq!(complete("compl").trim(), "completions");
    assert!(complete("s").lines().any(|l| l == "serve"));
    assert!(ok(&completions("zsh")).starts_with("#compdef hanzo-twin"));
    assert!(ok(&completions("fish")).contains("complete -c hanzo-twin"));
    let wrong = completions("tcsh");
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("fish"),
        "{stderr}"
    );
}

/// The scene-reading child caps its own address space: a scene of 20,000
/// prims reads within a 1 GiB allowance and cannot within 1 MiB, where the
/// child dies alone (the node turns that into a clear error; see
/// tests/twins_api.rs).
#[test]
fn the_scene_reader_child_is_held_to_its_memory_allowance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scene = dir.path().join("many.usda");
    let mut text = String::from("#usda 1.0\ndef Xform \"World\" {\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "  def Xform \"P{i}\" {{ double3 xformOp:translate = ({i}, 0, 0) }}\n"
        ));
    }
    text.push_str("}\n");
    std::fs::write(&scene, text).expect("write the scene");
    let read = |allowance: u64| {
        std::process::Command::new(bin())
            .arg("internal-read-scene")
            .arg(&scene)
            .args(["--max-memory-bytes", &allowance.to_string()])
            .output()
            .expect("run the scene reader")
    };
    let roomy = read(1 << 30);
    assert!(
        roomy.status.success() && !roomy.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&roomy.stderr)
    );
    let tight = read(1 << 20);
    assert!(!tight.status.success(), "read within 1 MiB");
    let stderr = String::from_utf8_lossy(&tight.stderr);
    assert!(stderr.contains("memory allocation of"), "{stderr}");
}

/// `hanzo-twin synthdata generate --config` with the sample configuration
/// (made small), followed to its end and unpacked.
#[tokio::test]
async fn synthdata_generate_follows_the_job_and_unpacks_the_dataset() {
    let node = TestNode::start().await;
    let belt = node.create_sample("conveyor.yaml", "cli-belt").await;
    node.start_twin(&belt, "paused").await;
    let sample = std::fs::read_to_string(repo().join("configs/synthdata/conveyor-boxes.yaml"))
        .expect("the sample configuration");
    let small = sample
        .replace("twin_id: conveyor-line", &format!("twin_id: {belt}"))
        .replace("resolution: [640, 480]", "resolution: [48, 36]")
        .replace("num_frames: 200", "num_frames: 3")
        .replace("samples_per_pixel: 4", "samples_per_pixel: 1");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("synthdata-config.yaml");
    std::fs::write(&config, small).expect("write");
    let out_dir = dir.path().join("dataset");
    let out = cli(
        &node,
        &[
            "synthdata",
            "generate",
            "--config",
            config.to_str().expect("utf-8"),
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
    );
    let text = ok(&out);
    assert!(text.contains("succeeded"), "{text}");
    let coco: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("annotations.json")).expect("annotations.json"),
    )
    .expect("COCO JSON");
    assert_eq!(coco["images"].as_array().expect("images").len(), 3);
    assert!(out_dir.join("rgb/cam0-Camera/00000002.png").exists());

    // A configuration that is not one says what it lacks.
    std::fs::write(&config, "cameras: []\n").expect("write");
    let out = cli(
        &node,
        &[
            "synthdata",
            "generate",
            "--config",
            config.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("twin_id"), "{err}");
}

/// `hanzo-twin infra simulate`: the demo shop twin run offline, its
/// verdicts printed and failing ones in the exit status; a what-if by flag;
/// JSON for tools; bad input named.
#[test]
fn cli_simulates_an_infrastructure_twin_and_judges_its_assertions() {
    let definition = repo().join("configs/twins/shop-infra.yaml");
    let run = |args: &[&str]| {
        common::output_of(
            std::process::Command::new(bin())
                .args(["infra", "simulate"])
                .arg(&definition)
                .args(args),
        )
    };
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAIL api p99 latency below 300ms before pod-kill"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS gateway responds within 5s during pod-kill"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ConfigMap shop/api-settings [not_simulated]"),
        "{stdout}"
    );
    // Two more api replicas pass the latency assertion.
    let (_, stdout, _) = run(&["--replicas", "api=5"]);
    assert!(
        stdout.contains("PASS api p99 latency below 300ms before pod-kill"),
        "{stdout}"
    );
    // JSON: the report and the verdicts with their evidence.
    let (_, stdout, _) = run(&["--output", "json", "--duration", "20m"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["report"]["time_s"], 1200.0);
    assert_eq!(v["verdicts"].as_array().map(Vec::len), Some(4));
    // The partition at 30 m is past a 20 m run: that is said, not passed.
    assert_eq!(v["verdicts"][1]["passed"], false);
    assert!(
        v["verdicts"][1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("before the window")),
        "{}",
        v["verdicts"][1]
    );
    for (args, words) in [
        (&["--replicas", "api"][..], "expected SERVICE=N"),
        (&["--replicas", "ghost=2"][..], "no service `ghost`"),
        (&["--duration", "soon"][..], "simulation.duration"),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn cli_injects_chaos_into_an_infrastructure_twin_as_the_spec_writes_it() {
    let node = TestNode::start().await;
    let (status, body) = node
        .post(
            "/v1/twins",
            common::shop_infra_definition("twin-hanzo-cloud"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = node
        .post(
            "/v1/twins/twin-hanzo-cloud/start",
            serde_json::json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    node.step("twin-hanzo-cloud", 90).await;
    // The spec's command, against this shop's gateway.
    let out = cli(
        &node,
        &[
            "chaos",
            "inject",
            "twin-hanzo-cloud",
            "--scenario",
            "pod-kill",
            "--target",
            "deployment/gateway",
        ],
    );
    let text = ok(&out);
    assert!(
        text.starts_with(
            "injected pod-kill into twin-hanzo-cloud at 90 s (simulated): kill_pod on deployment/gateway"
        ),
        "{text}"
    );
    assert!(
        text.contains("gateway responds within 5s during pod-kill"),
        "{text}"
    );
    let (_, now) = node.get("/v1/infra/twins/twin-hanzo-cloud").await;
    let last = now["faults"].as_array().and_then(|f| f.last()).cloned();
    assert_eq!(
        last.map(|f| (f["name"].clone(), f["target"].clone(), f["at_s"].clone())),
        Some((
            "pod-kill".into(),
            "deployment/gateway".into(),
            serde_json::json!(90.0)
        ))
    );
    // The twin's report, faults and verdicts; the exit status says whether
    // every assertion holds.
    let out = cli(&node, &["infra", "status", "twin-hanzo-cloud"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("twin-hanzo-cloud: 90 simulated s, step 90"),
        "{text}"
    );
    assert!(
        text.contains("fault pod-kill on deployment/gateway at 90 s"),
        "{text}"
    );
    assert!(
        text.contains("SERVICE") && text.contains("gateway"),
        "{text}"
    );
    let failing = now["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .filter(|v| v["passed"] == false && v["pending"] == false)
        .count();
    assert_eq!(
        out.status.code(),
        Some(if failing > 0 { 3 } else { 0 }),
        "{failing} failing: {text}"
    );
    // A mistake names the option to fix.
    let out = cli(
        &node,
        &[
            "chaos",
            "inject",
            "twin-hanzo-cloud",
            "--scenario",
            "flood",
            "--target",
            "deployment/api",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("action") && err.contains("kill_pod"), "{err}");
}

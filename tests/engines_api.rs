//! Engines through a running node: what GET /v1/engines says, twins on MuJoCo
//! (USD and MJCF scenes), and cross-engine comparison through the API and the
//! CLI.

mod common;

#[cfg(feature = "mujoco")]
use common::bin;
use common::{TestNode, repo};
use serde_json::{Value, json};

/// A scene folder holding the falling box and a copy of the sample arm.
fn scene_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("tests/fixtures/scenes/falling-box", "falling-box"),
        ("configs/scenes/robot-arm", "robot-arm"),
    ] {
        std::fs::create_dir(dir.path().join(to)).unwrap();
        std::fs::copy(
            repo().join(from).join("scene.usda"),
            dir.path().join(to).join("scene.usda"),
        )
        .unwrap();
    }
    dir
}

/// Creates the sample arm twin on `engine` as `name`, and answers its id.
#[cfg(any(feature = "mujoco", feature = "pybullet", feature = "physx"))]
async fn sample_arm_on(node: &TestNode, engine: &str, name: &str) -> String {
    let yaml = std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml"))
        .unwrap()
        .replace("type: rapier3d", &format!("type: {engine}"));
    let (status, v) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, name),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn engines_report_availability_and_what_absent_ones_need() {
    let node = TestNode::start().await;
    let (status, v) = node.get("/v1/engines").await;
    assert_eq!(status, 200, "{v}");
    let engines = v["engines"].as_array().expect("a list");
    let find = |name: &str| {
        engines
            .iter()
            .find(|e| e["engine"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {v}"))
    };
    assert_eq!(find("rapier3d")["available"], true);
    assert_eq!(find("rapier3d")["capabilities"]["bitwise_restore"], true);
    let mujoco = find("mujoco");
    assert_eq!(mujoco["available"], cfg!(feature = "mujoco"), "{mujoco}");
    if cfg!(feature = "mujoco") {
        assert_eq!(mujoco["capabilities"]["bitwise_restore"], true);
        assert_eq!(mujoco["capabilities"]["soft_body"], true);
    } else {
        assert!(mujoco["requires"].as_str().unwrap().contains("mujoco"));
    }
    let physx = find("physx");
    assert_eq!(physx["available"], cfg!(feature = "physx"), "{physx}");
    if cfg!(feature = "physx") {
        assert_eq!(physx["capabilities"]["bitwise_restore"], false, "{physx}");
    }
    // Infrastructure twins' discrete-event simulator is always built in.
    let infrastructure = find("infrastructure");
    assert_eq!(infrastructure["available"], true, "{infrastructure}");
    assert_eq!(
        infrastructure["capabilities"]["bitwise_restore"], true,
        "{infrastructure}"
    );
    for absent in ["gazebo", "omniverse"] {
        let e = find(absent);
        assert_eq!(e["available"], false);
        assert!(e["requires"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    }
}

/// Gymnasium's assets folder, from the test Python.
#[cfg(feature = "mujoco")]
fn gymnasium_assets() -> std::path::PathBuf {
    let python = std::env::var("HANZO_TWIN_TEST_PYTHON")
        .expect("HANZO_TWIN_TEST_PYTHON (scripts/test.sh sets it, with gymnasium installed)");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import gymnasium.envs.mujoco as m, os; print(os.path.join(os.path.dirname(m.__file__), 'assets'))",
        ])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().into()
}

#[cfg(feature = "mujoco")]
#[tokio::test]
async fn twins_run_and_fork_on_mujoco_from_usd_and_mjcf() {
    // A scene folder with the sample arm and Gymnasium's ant.
    let scenes = scene_folder();
    std::fs::copy(
        gymnasium_assets().join("ant.xml"),
        scenes.path().join("ant.xml"),
    )
    .unwrap();
    let node = TestNode::start_full(&[], "", scenes.path()).await;
    // The sample arm, on MuJoCo instead of rapier3d.
    let arm = sample_arm_on(&node, "mujoco", "arm-on-mujoco").await;
    node.start_twin(&arm, "paused").await;
    node.command(&arm, "/World/Arm/shoulder_pitch", "position", 0.3)
        .await;
    let stepped = node.step(&arm, 240).await;
    assert_eq!(stepped["step"], 240, "{stepped}");
    let (status, fork) = node
        .post(
            &format!("/v1/twins/{arm}/fork"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    let fork = fork["id"].as_str().unwrap().to_string();
    // Parent and fork take the same steps and agree exactly.
    node.step(&arm, 120).await;
    node.step(&fork, 120).await;
    let (a, b) = (
        node.observation_text(&arm).await,
        node.observation_text(&fork).await,
    );
    assert_eq!(a, b, "fork on mujoco diverged from its parent");

    // Gymnasium's ant, loaded as MJCF, driven through its motors.
    let def = json!({
        "name": "ant",
        "scene": { "uri": "ant.xml" },
        "engine": { "type": "mujoco", "config": { "step_hz": 20, "substeps": 5 } },
    });
    let (status, v) = node.post("/v1/twins", def.clone()).await;
    assert_eq!(status, 201, "{v}");
    let ant_id = v["id"].as_str().unwrap().to_string();
    node.start_twin(&ant_id, "paused").await;
    node.command(&ant_id, "/hip_1", "effort", 1.0).await;
    let stepped = node.step(&ant_id, 10).await;
    assert_eq!(stepped["step"], 10, "{stepped}");
    let obs = node.observation_text(&ant_id).await;
    assert!(obs.contains("/torso"), "{obs}");

    // The same MJCF on rapier3d is refused, naming the field.
    let mut on_rapier = def.clone();
    on_rapier["name"] = json!("ant-on-rapier");
    on_rapier["engine"]["type"] = json!("rapier3d");
    let (status, v) = node.post("/v1/twins", on_rapier).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "engine.type", "{v}");
    // A setting MuJoCo does not read names itself.
    let mut bad = def;
    bad["name"] = json!("ant-bad-setting");
    bad["engine"]["config"]["extensions"] = json!({ "integrater": "rk4" });
    let (status, v) = node.post("/v1/twins", bad).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["field"], "engine.config.extensions.integrater",
        "{v}"
    );
}

fn falling_box(engines: &[&str], tolerance: f64) -> Value {
    json!({
        "scene": { "uri": "falling-box/scene.usda" },
        "engines": engines,
        "config": { "step_hz": 240 },
        "steps": 120,
        "position_tolerance_m": tolerance,
    })
}

#[cfg(feature = "mujoco")]
#[tokio::test]
async fn comparison_reports_divergence_per_body_and_joint() {
    let scenes = scene_folder();
    let node = TestNode::start_full(&[], "", scenes.path()).await;
    let (status, v) = node
        .post(
            "/v1/engines/compare",
            falling_box(&["rapier3d", "mujoco"], 0.02),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reference"], "rapier3d");
    assert_eq!(v["samples"], 120);
    assert_eq!(v["runs"].as_array().unwrap().len(), 2, "{v}");
    let body = v["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["path"] == "/World/Box")
        .unwrap_or_else(|| panic!("no /World/Box in {v}"));
    assert_eq!(body["engine"], "mujoco");
    let max = body["max_position_error_m"].as_f64().unwrap();
    // Each engine stays within the first-order integration error g·dt·t/2
    // (≈ 5.1 mm at 0.5 s) of the parabola (tests engine_conformance), so they
    // differ by less than twice that, and not by nothing.
    assert!(max > 0.0 && max < 0.0103, "max divergence {max}");
    assert_eq!(v["within_tolerance"], true, "{v}");

    // A tolerance the engines cannot meet: where it was first exceeded.
    let (status, v) = node
        .post(
            "/v1/engines/compare",
            falling_box(&["rapier3d", "mujoco"], 1e-6),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["within_tolerance"], false);
    let at = v["bodies"][0]["exceeded_at_step"].as_u64();
    assert!(at.is_some_and(|s| s < 120), "{v}");

    // The arm with commands: joints are compared too.
    let arm = json!({
        "scene": { "uri": "robot-arm/scene.usda" },
        "engines": ["rapier3d", "mujoco"],
        "steps": 240,
        "sample_every": 10,
        "commands": [
            { "step": 0, "joint": "/World/Arm/shoulder_pitch", "command": { "mode": "position", "value": 0.4 } },
            { "step": 120, "joint": "/World/Arm/elbow", "command": { "mode": "velocity", "value": 0.5 } },
        ],
    });
    let (status, v) = node.post("/v1/engines/compare", arm).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["samples"], 24);
    let joints: Vec<&str> = v["joints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["path"].as_str().unwrap())
        .collect();
    assert!(joints.contains(&"/World/Arm/elbow"), "{v}");
}

#[tokio::test]
async fn comparison_requests_are_checked_field_by_field() {
    let scenes = scene_folder();
    let node = TestNode::start_full(&[], "", scenes.path()).await;
    let cases = [
        (json!({ "engines": ["rapier3d"], "steps": 1 }), "scene"),
        (falling_box(&["rapier3d", "bullet"], 0.1), "engines[1]"),
        (falling_box(&["rapier3d", "rapier3d"], 0.1), "engines[1]"),
        (falling_box(&["rapier3d"], 0.1), "engines"),
        (falling_box(&["rapier3d", "gazebo"], 0.1), "engines[1]"),
        (
            {
                let mut r = falling_box(&["rapier3d", "gazebo"], 0.1);
                r["steps"] = json!(0);
                r
            },
            "engines[1]",
        ),
        (
            {
                let mut r = falling_box(&["rapier3d", "mujoco"], 0.1);
                r["commands"] = json!([{ "step": 500, "joint": "/x", "command": { "mode": "position", "value": 1 } }]);
                r
            },
            if cfg!(feature = "mujoco") {
                "commands[0].step"
            } else {
                "engines[1]"
            },
        ),
        (
            {
                let mut r = falling_box(&["rapier3d", "mujoco"], 0.1);
                r["extra"] = json!(1);
                r
            },
            "",
        ),
    ];
    for (request, field) in cases {
        let (status, v) = node.post("/v1/engines/compare", request.clone()).await;
        assert!(
            status == 400 || status == 422,
            "{request} answered {status}: {v}"
        );
        let got = v["error"]["field"].as_str().unwrap_or_default();
        assert!(
            got == field
                || (field.is_empty() && v["error"]["message"].as_str().unwrap().contains("extra")),
            "{request}: field {got:?}, expected {field:?}: {v}"
        );
    }
}

#[cfg(feature = "mujoco")]
#[tokio::test]
async fn cli_compares_engines_and_fails_beyond_tolerance() {
    let scenes = scene_folder();
    let node = TestNode::start_full(&[], "", scenes.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("compare.yaml");
    std::fs::write(
        &request,
        "scene:\n  uri: falling-box/scene.usda\nengines: [rapier3d, mujoco]\nsteps: 120\nposition_tolerance_m: 0.02\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(bin())
            .arg("compare")
            .arg(&request)
            .args(extra)
            .args(["--api", &node.api()])
            .env("HANZO_TWIN_TOKEN", node.token.as_deref().unwrap())
            .output()
            .expect("the CLI runs")
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("/World/Box") && text.contains("mujoco"),
        "{text}"
    );
    assert!(text.contains("STEPS/S"), "{text}");
    // The flags override the file: MuJoCo as the reference, fewer steps.
    let out = run(&[
        "--engine", "mujoco", "--engine", "rapier3d", "--steps", "60",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("reference mujoco; 60 steps"), "{text}");
    // Unmeetable tolerance: exit status 3, and why.
    std::fs::write(
        &request,
        "scene:\n  uri: falling-box/scene.usda\nengines: [rapier3d, mujoco]\nsteps: 120\nposition_tolerance_m: 0.000001\n",
    )
    .unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tolerance"));
}

/// Process ids of the PyBullet workers the node `parent` started.
#[cfg(feature = "pybullet")]
fn pybullet_workers(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // stat: pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent)
            && String::from_utf8_lossy(&cmdline).contains("hanzo-twin-pybullet-worker")
        {
            out.push(pid);
        }
    }
    out
}

#[cfg(feature = "pybullet")]
#[tokio::test]
async fn a_dead_pybullet_worker_is_a_twin_crash_that_its_supervisor_restarts() {
    let node = TestNode::start_with(&[], "  max_restarts: 3\n  restart_window_s: 600\n").await;
    let arm = sample_arm_on(&node, "pybullet", "arm-on-pybullet").await;
    node.start_twin(&arm, "paused").await;
    node.command(&arm, "/World/Arm/shoulder_pitch", "position", 0.3)
        .await;
    // Many steps in one request are one round trip to the worker.
    assert_eq!(node.step(&arm, 240).await["step"], 240);
    let workers = pybullet_workers(node.pid().unwrap());
    assert_eq!(workers.len(), 1, "one worker per simulation: {workers:?}");
    let status = std::process::Command::new("kill")
        .args(["-9", &workers[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Until the kernel has ended it, the worker still looks alive.
    for _ in 0..200 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", workers[0])).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state.is_none_or(|s| s == "Z") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The next request that reaches the worker finds it gone: 503, and the
    // twin restarts. A step notices at once; should it race the kernel's
    // bookkeeping, the observation after it (which talks to the worker) does.
    let (status, v) = node
        .post(&format!("/v1/twins/{arm}/step"), json!({ "steps": 1 }))
        .await;
    let (status, v) = if status == 200 {
        let r = node
            .http
            .get(node.url(&format!("/v1/twins/{arm}/observation")))
            .send()
            .await
            .unwrap();
        common::status_json(r).await
    } else {
        (status, v)
    };
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "engine_failed", "{v}");
    let mut restarted = Value::Null;
    for _ in 0..200 {
        let (_, t) = node.get(&format!("/v1/twins/{arm}")).await;
        if t["status"]["restarts"] == 1 && t["status"]["state"] == "running" {
            restarted = t;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(restarted["status"]["restarts"], 1, "{}", node.log());
    assert!(
        restarted["status"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("pybullet failed"),
        "{restarted}"
    );
    // A new worker, and the twin steps again.
    let after = node.step(&arm, 10).await;
    assert!(after["step"].as_u64().is_some(), "{after}");
    let workers_now = pybullet_workers(node.pid().unwrap());
    assert_eq!(workers_now.len(), 1, "{workers_now:?}");
    assert_ne!(workers_now, workers);
}

#[cfg(feature = "physx")]
#[tokio::test]
async fn twins_run_on_physx_and_its_settings_are_checked() {
    let node = TestNode::start().await;
    let arm = sample_arm_on(&node, "physx", "arm-on-physx").await;
    node.start_twin(&arm, "paused").await;
    node.command(&arm, "/World/Arm/shoulder_pitch", "position", 0.3)
        .await;
    assert_eq!(node.step(&arm, 240).await["step"], 240);
    let obs: Value = serde_json::from_str(&node.observation_text(&arm).await).unwrap();
    let pitch = obs["joints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["path"] == "/World/Arm/shoulder_pitch")
        .unwrap_or_else(|| panic!("{obs}"))["position"]
        .as_f64()
        .unwrap();
    assert!(
        (pitch - 0.3).abs() < 0.1,
        "shoulder_pitch at {pitch}: {obs}"
    );
    let (status, fork) = node
        .post(
            &format!("/v1/twins/{arm}/fork"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    // GPU dynamics is named and refused: this node's PhysX runs on the CPU.
    let yaml = std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml"))
        .unwrap()
        .replace("type: rapier3d", "type: physx");
    let gpu = yaml.replace(
        "    solver_iterations: 8\n",
        "    solver_iterations: 8\n    extensions:\n      gpu: true\n",
    );
    assert_ne!(gpu, yaml, "the sample's config changed shape");
    let (status, v) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&gpu, "gpu"),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "engine.config.extensions.gpu", "{v}");
}

/// An MJCF model in the scene library: stored when named as the root, and a
/// twin on MuJoCo runs from it by `scene://` name.
#[cfg(feature = "mujoco")]
#[tokio::test]
async fn mjcf_models_live_in_the_scene_library() {
    let node = TestNode::start().await;
    let pendulum = br#"<mujoco model="pendulum">
  <worldbody>
    <body name="bob" pos="0 0 1">
      <joint name="hinge" type="hinge" axis="0 1 0" pos="0 0 1"/>
      <geom type="sphere" size="0.05" mass="1"/>
    </body>
  </worldbody>
  <actuator><motor name="hinge" joint="hinge"/></actuator>
</mujoco>
"#;
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(pendulum.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "pendulum.xml", &pendulum[..])
        .unwrap();
    let archive = builder.into_inner().unwrap();
    let r = node
        .http
        .post(node.url("/v1/scenes?name=mjcf-pendulum&root=pendulum.xml"))
        .header("content-type", "application/x-tar")
        .body(archive.clone())
        .send()
        .await
        .unwrap();
    let (status, v) = common::status_json(r).await;
    assert_eq!(status, 201, "{v}");
    // Without root=, XML is not taken for a scene.
    let r = node
        .http
        .post(node.url("/v1/scenes?name=mjcf-unnamed"))
        .header("content-type", "application/x-tar")
        .body(archive)
        .send()
        .await
        .unwrap();
    let (status, v) = common::status_json(r).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "root", "{v}");
    let def = json!({
        "name": "library-pendulum",
        "scene": { "uri": "scene://mjcf-pendulum" },
        "engine": { "type": "mujoco" },
    });
    let (status, v) = node.post("/v1/twins", def).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    node.start_twin(&id, "paused").await;
    node.command(&id, "/hinge", "effort", 0.5).await;
    assert_eq!(node.step(&id, 24).await["step"], 24);
    let obs = node.observation_text(&id).await;
    assert!(obs.contains("/bob") && obs.contains("/hinge"), "{obs}");
}

/// `engines.<name>.enabled: false` and `max_instances`, set through the
/// environment: the turned-off engine is refused naming its key, and the
/// capped one answers 503 `at_capacity` past its cap until a simulation of
/// it goes away.
#[tokio::test]
async fn engine_settings_turn_engines_off_and_cap_their_simulations() {
    let node = TestNode::start_with(
        &[
            ("HANZO_TWIN_ENGINES_RAPIER3D_MAX_INSTANCES", "2"),
            ("HANZO_TWIN_ENGINES_PHYSX_ENABLED", "false"),
        ],
        "",
    )
    .await;
    let engine = |v: &Value, name: &str| {
        v["engines"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["engine"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} missing from {v}"))
    };
    let (_, v) = node.get("/v1/engines").await;
    let physx = engine(&v, "physx");
    assert_eq!(physx["available"], false, "{physx}");
    assert!(
        physx["requires"]
            .as_str()
            .is_some_and(|r| r.contains("engines.physx.enabled")),
        "{physx}"
    );
    assert_eq!(engine(&v, "rapier3d")["max_instances"], 2);
    let yaml = std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).unwrap();
    let (status, err) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, "on-physx").replace("type: rapier3d", "type: physx"),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "not_available");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("engines.physx.enabled")),
        "{err}"
    );

    // One running twin and one fork take both slots.
    let arm = node.create_sample("robot-arm.yaml", "capped").await;
    node.start_twin(&arm, "paused").await;
    let (status, fork) = node.post(&format!("/v1/twins/{arm}/fork"), json!({})).await;
    assert_eq!(status, 201, "{fork}");
    let (status, err) = node.post(&format!("/v1/twins/{arm}/fork"), json!({})).await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "at_capacity");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("engines.rapier3d.max_instances")),
        "{err}"
    );
    let other = node.create_sample("robot-arm.yaml", "waiting").await;
    let (status, err) = node
        .post(&format!("/v1/twins/{other}/start"), json!({}))
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "at_capacity");

    // Deleting the fork gives its slot back, once its simulation is gone.
    let (status, _) = node
        .delete(&format!("/v1/twins/{}", fork["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 204);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, v) = node.get("/v1/engines").await;
        if engine(&v, "rapier3d")["live_instances"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = node
        .post(&format!("/v1/twins/{other}/start"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
}

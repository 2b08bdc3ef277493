//! URDF import on the real robots pybullet ships (pybullet_data): each converts
//! to USD, pxr reads the USD and sees the joints, limits and masses pybullet
//! reads from the URDF, and the result simulates like any scene.

mod common;

use common::{TestNode, repo};
use hanzo_twin::engines::urdf::{UrdfOptions, ident, urdf_to_usda};
use hanzo_twin::engines::{Engine, EngineConfig, rapier::RapierEngine, usd};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with usd-core and pybullet (scripts/test.sh installs both).
fn python() -> Option<PathBuf> {
    let p = match std::env::var("HANZO_TWIN_TEST_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => repo().join(".venv/bin/python"),
    };
    let ok = Command::new(&p)
        .args(["-c", "import pxr, pybullet"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

fn run_json(python: &Path, script: &str, args: &[&Path]) -> Value {
    let out = Command::new(python)
        .arg(repo().join("tests/peers").join(script))
        .args(args)
        .output()
        .expect("run peer");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pybullet prints a banner line before the JSON.
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{').expect("JSON on stdout");
    serde_json::from_str(&text[start..]).expect("JSON")
}

fn data_path(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .arg(repo().join("tests/peers/urdf_reference.py"))
        .arg("--data-path")
        .output()
        .expect("run peer");
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().expect("a path").trim())
}

const ROBOTS: [&str; 6] = [
    "kuka_iiwa/model.urdf",
    "franka_panda/panda.urdf",
    "r2d2.urdf",
    "a1/a1.urdf",
    // A <material> inside <geometry>: outside the URDF schema, but urdfdom
    // (ROS) and pybullet load it, and so do we.
    "racecar/racecar.urdf",
    // Spherical joints (pybullet's URDF extension) and capsules.
    "humanoid/humanoid.urdf",
];

#[test]
fn pybullet_robots_convert_and_pxr_agrees_with_pybullet() {
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED pybullet_robots_convert_and_pxr_agrees_with_pybullet: no Python with usd-core and pybullet. \
             Run scripts/test.sh, which installs them into ./.venv. ***\n"
        );
        return;
    };
    let data = data_path(&python);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let urdfs: Vec<PathBuf> = ROBOTS.iter().map(|r| data.join(r)).collect();
    let reference = run_json(
        &python,
        "urdf_reference.py",
        &urdfs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    );
    for urdf in &urdfs {
        let key = urdf.to_str().expect("utf-8");
        let usda =
            urdf_to_usda(urdf, &UrdfOptions::default()).unwrap_or_else(|e| panic!("{key}: {e}"));
        let stem = urdf.file_stem().and_then(|s| s.to_str()).expect("stem");
        let usd_path = out_dir.path().join(format!("{stem}.usda"));
        std::fs::write(&usd_path, &usda).expect("write");

        // pxr's UsdPhysics parser against pybullet's URDF parser.
        let pxr = run_json(
            &python,
            "usd_physics_summary.py",
            &[Path::new("--json"), &usd_path],
        );
        let pxr = &pxr[usd_path.to_str().expect("utf-8")];
        let want = &reference[key];
        let robot = {
            let any_body = pxr["bodies"]
                .as_object()
                .expect("bodies")
                .keys()
                .next()
                .expect("a body");
            any_body.split('/').nth(1).expect("robot prim").to_string()
        };
        let joints = want["joints"].as_object().expect("joints");
        // pybullet reports continuous joints as revolute, and keeps limits a
        // URDF gives them; the URDF spec says continuous joints have none.
        let urdf_text = std::fs::read_to_string(urdf).expect("urdf");
        let continuous =
            |name: &str| urdf_text.contains(&format!("name=\"{name}\" type=\"continuous\""));
        assert!(!joints.is_empty(), "{key}: no joints");
        for (name, j) in joints {
            let path = format!("/{robot}/joints/{}", ident(name));
            let got = &pxr["joints"][&path];
            let expected_type = match j["type"].as_str() {
                Some("revolute") => "RevoluteJoint",
                Some("prismatic") => "PrismaticJoint",
                Some("fixed") => "FixedJoint",
                Some("spherical") => "SphericalJoint",
                other => panic!("{key}: unexpected joint type {other:?}"),
            };
            assert_eq!(got["type"], expected_type, "{key} {name}: {got}");
            assert_eq!(
                got["body1"].as_str(),
                Some(format!("/{robot}/{}", ident(j["child"].as_str().expect("child"))).as_str()),
                "{key} {name}"
            );
            let (lo, hi) = (
                j["lower"].as_f64().expect("lower"),
                j["upper"].as_f64().expect("upper"),
            );
            let single_axis = matches!(expected_type, "RevoluteJoint" | "PrismaticJoint");
            if single_axis && lo < hi && !continuous(name) {
                let limits = got["limits"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{key} {name}: no limits in {got}"));
                let (glo, ghi) = (
                    limits[0].as_f64().expect("lo"),
                    limits[1].as_f64().expect("hi"),
                );
                assert!(
                    (glo - lo).abs() < 1e-5 && (ghi - hi).abs() < 1e-5,
                    "{key} {name}: limits [{glo}, {ghi}] vs pybullet [{lo}, {hi}]"
                );
            } else if expected_type == "RevoluteJoint" {
                assert!(
                    got.get("limits").is_none(),
                    "{key} {name}: continuous joint has limits {got}"
                );
            }
        }
        for (link, mass) in want["links"].as_object().expect("links") {
            let mass = mass.as_f64().expect("mass");
            let body = &pxr["bodies"][format!("/{robot}/{}", ident(link))];
            assert!(body.is_object(), "{key}: no body for link {link}");
            if mass > 0.0 {
                let got = body["mass"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{key} {link}: no mass"));
                assert!(
                    (got - mass).abs() <= 1e-6 * mass.max(1.0),
                    "{key} {link}: mass {got} vs pybullet {mass}"
                );
            } else if link == want["base"].as_str().expect("base") {
                // pybullet fixes a massless base to the world; so do we.
                assert_eq!(body["kind"], "Static", "{key} {link}");
            } else {
                // A massless link (a frame for a tool or sensor) gets a token mass.
                let got = body["mass"].as_f64().unwrap_or(0.0);
                assert!(
                    got > 0.0 && got <= 1.001e-3,
                    "{key} {link}: token mass {got}"
                );
            }
        }

        // Our reader reads it and rapier3d runs it, steadily.
        let scene = usd::load_scene(&usd_path).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(scene.joints.len(), joints.len(), "{key}");
        let config = EngineConfig {
            step_hz: 240.0,
            ..Default::default()
        };
        let mut sim = RapierEngine
            .load_scene(&scene, &config)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        for _ in 0..240 {
            sim.step().unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        let obs = sim.observation("/").expect("observation");
        assert!(
            obs.bodies
                .iter()
                .all(|b| b.position.iter().all(|v| v.is_finite())),
            "{key}: the simulation blew up"
        );
    }
}

#[tokio::test]
async fn a_urdf_package_uploads_as_a_usd_scene_and_runs() {
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED a_urdf_package_uploads_as_a_usd_scene_and_runs: no Python with pybullet (for pybullet_data). \
             Run scripts/test.sh. ***\n"
        );
        return;
    };
    let data = data_path(&python);
    let node = TestNode::start().await;
    // The kuka folder: the URDF and its meshes (and files the URDF does not use).
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_path_with_name(data.join("kuka_iiwa/model.urdf"), "model.urdf")
        .expect("add");
    builder
        .append_dir_all("meshes", data.join("kuka_iiwa/meshes"))
        .expect("add");
    let archive = builder.into_inner().expect("tar");
    let r = node
        .http
        .post(node.url("/v1/scenes?name=iiwa&root=model.urdf"))
        .header("content-type", "application/x-tar")
        .body(archive)
        .send()
        .await
        .expect("upload");
    let (status, body) = common::status_json(r).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["root"], "model.usda");
    assert_eq!(body["contents"]["joints"], 7);
    let twin = "name: iiwa\nscene:\n  uri: scene://iiwa\nengine:\n  type: rapier3d\n  config:\n    step_hz: 240\n    substeps: 4\n    solver_iterations: 50\n";
    let (status, created) = node.post_raw("/v1/twins", "application/yaml", twin).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    node.start_twin(&id, "paused").await;
    // URDF joints have no drives: each holds what it is commanded (undriven,
    // uncommanded joints are passive). Joint 2 to 0.5 rad, the rest at 0.
    for k in 1..=7 {
        let target = if k == 2 { 0.5 } else { 0.0 };
        node.command(
            &id,
            &format!("/lbr_iiwa/joints/lbr_iiwa_joint_{k}"),
            "position",
            target,
        )
        .await;
    }
    node.step(&id, 240).await;
    let (_, obs) = node
        .get(&format!(
            "/v1/twins/{id}/observation?path=/lbr_iiwa/joints/lbr_iiwa_joint_2"
        ))
        .await;
    let q = obs["joints"][0]["position"].as_f64().expect("position");
    assert!(
        (q - 0.5).abs() < 0.1,
        "joint 2 should follow its command: {q}"
    );

    // A URDF whose mesh is missing stores nothing and names the mesh.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_path_with_name(data.join("kuka_iiwa/model.urdf"), "model.urdf")
        .expect("add");
    let r = node
        .http
        .post(node.url("/v1/scenes?name=broken&root=model.urdf"))
        .header("content-type", "application/x-tar")
        .body(builder.into_inner().expect("tar"))
        .send()
        .await
        .expect("upload");
    let (status, body) = common::status_json(r).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("link_0.stl"),
        "{body}"
    );
    let (status, _) = node.get("/v1/scenes/broken").await;
    assert_eq!(status, 404);
}

/// The same duck as COLLADA (centimetres, Y up) and as OBJ (Y up, no units):
/// the DAE loader honours the file's unit and up axis, so its extents are the
/// OBJ's, turned Y-up to Z-up.
#[test]
fn dae_meshes_load_in_their_units_and_up_axis() {
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED dae_meshes_load_in_their_units_and_up_axis: no Python with pybullet (for pybullet_data). \
             Run scripts/test.sh. ***\n"
        );
        return;
    };
    let data = data_path(&python);
    let dir = tempfile::tempdir().expect("tempdir");
    let extents = |mesh: &str| -> [f64; 3] {
        std::fs::copy(data.join(mesh), dir.path().join(mesh)).expect("copy mesh");
        let urdf = dir.path().join(format!("{mesh}.urdf"));
        std::fs::write(
            &urdf,
            format!(
                "<robot name=\"duck\"><link name=\"body\"><inertial><mass value=\"0.1\"/><inertia ixx=\"1e-3\" iyy=\"1e-3\" izz=\"1e-3\" ixy=\"0\" ixz=\"0\" iyz=\"0\"/></inertial><collision><geometry><mesh filename=\"{mesh}\"/></geometry></collision></link></robot>"
            ),
        )
        .expect("write");
        let usd = dir.path().join(format!("{mesh}.usda"));
        std::fs::write(
            &usd,
            urdf_to_usda(&urdf, &UrdfOptions::default()).expect("convert"),
        )
        .expect("write");
        let scene = usd::load_scene(&usd).expect("read");
        let hanzo_twin::engines::scene::Shape::ConvexHull { points } =
            &scene.bodies[0].colliders[0].shape
        else {
            panic!("a mesh collider becomes its convex hull");
        };
        let mut out = [0.0; 3];
        for (k, e) in out.iter_mut().enumerate() {
            let lo = points.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
            let hi = points
                .iter()
                .map(|p| p[k])
                .fold(f64::NEG_INFINITY, f64::max);
            *e = hi - lo;
        }
        out
    };
    let dae = extents("duck.dae");
    let obj = extents("duck.obj");
    // OBJ's Y (up) is the DAE's Z after conversion; its Z is the DAE's Y.
    let expected = [obj[0], obj[2], obj[1]];
    for k in 0..3 {
        assert!(
            (dae[k] - expected[k]).abs() < 1e-3,
            "DAE extents {dae:?} vs OBJ {obj:?} turned Z-up"
        );
    }
    assert!(
        dae[2] > 1.5 && dae[2] < 1.6,
        "a 0.01 m unit applied: {dae:?}"
    );
}

/// pybullet's humanoid (eight ball joints, four hinges, capsules) loads and
/// runs on every engine built in. With nothing to touch, its centre of mass
/// falls freely: g·t²/2 after t, within the first-order integrators'
/// g·dt·t/2. Gravity alone bends no joint, so its ball joints stay where they
/// started (PyBullet's explicit drives on the knees and elbows once shook
/// them loose: a free hip halves what a knee's drive moves).
#[test]
fn the_ball_jointed_humanoid_falls_freely_on_every_engine() {
    use hanzo_twin::engines::EngineRegistry;
    use hanzo_twin::engines::geometry::quat_rotate;
    use hanzo_twin::engines::scene::JointKind;
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED the_ball_jointed_humanoid_falls_freely_on_every_engine: no Python with pybullet (pybullet_data). \
             Run scripts/test.sh, which installs it into ./.venv. ***\n"
        );
        return;
    };
    let urdf = data_path(&python).join("humanoid/humanoid.urdf");
    let usda = urdf_to_usda(&urdf, &UrdfOptions::default()).expect("humanoid converts");
    let dir = tempfile::tempdir().expect("tempdir");
    let usd_path = dir.path().join("humanoid.usda");
    std::fs::write(&usd_path, &usda).expect("write");
    let scene = usd::load_scene(&usd_path).expect("humanoid reads");
    let balls: Vec<&str> = scene
        .joints
        .iter()
        .filter(|j| j.kind == JointKind::Spherical)
        .map(|j| j.path.as_str())
        .collect();
    assert_eq!(balls.len(), 8, "{balls:?}");
    let mass: f64 = scene.bodies.iter().filter_map(|b| b.mass.mass).sum();
    let com = |obs: &hanzo_twin::engines::Observation| -> [f64; 3] {
        let mut sum = [0.0; 3];
        for b in &scene.bodies {
            let (Some(m), Some(o)) = (b.mass.mass, obs.bodies.iter().find(|o| o.path == b.path))
            else {
                continue;
            };
            let c = quat_rotate(o.orientation, b.mass.center_of_mass.unwrap_or([0.0; 3]));
            for k in 0..3 {
                sum[k] += m * (o.position[k] + c[k]) / mass;
            }
        }
        sum
    };
    let config = EngineConfig {
        step_hz: 240.0,
        ..Default::default()
    };
    let registry = EngineRegistry::with_builtin();
    let engines: Vec<_> = hanzo_twin::engines::EngineKind::PHYSICS
        .into_iter()
        .filter_map(|k| registry.get(k).ok())
        .collect();
    for engine in engines {
        let kind = engine.kind();
        let mut sim = engine
            .load_scene(&scene, &config)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let start = com(&sim.observation("/").expect("observation"));
        let mut worst: f64 = 0.0;
        for _ in 0..120 {
            sim.step().unwrap_or_else(|e| panic!("{kind}: {e}"));
            let t = sim.time();
            let now = com(&sim.observation("/").expect("observation"));
            let fall = [0.0, 0.0, -9.81 * t * t / 2.0];
            let off = (0..3)
                .map(|k| (now[k] - start[k] - fall[k]).powi(2))
                .sum::<f64>()
                .sqrt();
            worst = worst.max(off / (9.81 * t / 240.0 / 2.0 * 1.01 + 1e-6));
        }
        let obs = sim.observation("/").expect("observation");
        let turned: Vec<f64> = balls
            .iter()
            .map(|b| {
                let j = obs
                    .joints
                    .iter()
                    .find(|j| j.path == *b)
                    .unwrap_or_else(|| panic!("{kind}: {b} not observed"));
                assert!(j.rotation.is_some(), "{kind}: {b} has no rotation");
                j.position
            })
            .collect();
        println!(
            "{kind}: humanoid centre of mass off free fall by ≤ {worst:.3} of the first-order bound; ball joints at {turned:.3?} rad"
        );
        assert!(
            worst <= 1.0,
            "{kind}: the centre of mass left free fall ({worst} × the bound)"
        );
        assert!(
            turned.iter().all(|a| *a < 1e-3),
            "{kind}: ball joints turned {turned:?}"
        );
    }
}

/// `compare` of pybullet's robots, converted, across every engine built in:
/// fixed to the world, each joint commanded 0.2 rad (or 2 cm) from zero, or
/// from the nearer end of a range zero lies outside (a1's knees), into its
/// range; 4 s at 240 Hz. Settled, MuJoCo, PhysX and PyBullet agree to 1e-4
/// (the drives hold each link where stiffness balances gravity). rapier3d's
/// position motors sag further under load (rapier does not warm-start joint
/// motors in 3-D, and 4 solver iterations bring a damped motor only part of
/// the way: a 1 kg arm of 1 m held by k = 1000, d = 100 sags 0.30 rad, not
/// 0.0098), which puts the panda's fingertips 2.3 cm from the others;
/// docs/engines.md has it. Bodies are held
/// to 3 cm of rapier3d's and joints to 0.05 rad, and the other three to 2 mm
/// of each other. (On the way they differ more where a robot starts outside
/// its limits: each engine pushes a violated limit back its own way.)
#[test]
fn converted_robots_settle_alike_on_every_engine() {
    use hanzo_twin::engines::EngineRegistry;
    use hanzo_twin::engines::JointCommand;
    use hanzo_twin::engines::compare::{CompareRun, TimedCommand, compare};
    use hanzo_twin::engines::scene::JointKind;
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED converted_robots_settle_alike_on_every_engine: no Python with pybullet (pybullet_data). \
             Run scripts/test.sh, which installs it into ./.venv. ***\n"
        );
        return;
    };
    let registry = EngineRegistry::with_builtin();
    let engines: Vec<_> = hanzo_twin::engines::EngineKind::PHYSICS
        .into_iter()
        .filter_map(|k| registry.get(k).ok())
        .collect();
    if engines.len() < 2 {
        eprintln!("SKIPPED: one engine built in; build with --features mujoco,pybullet,physx");
        return;
    }
    let data = data_path(&python);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = UrdfOptions {
        fixed_base: true,
        ..Default::default()
    };
    // The humanoid's ball joints take no commands; it falls freely above.
    for robot in ROBOTS.iter().filter(|r| !r.starts_with("humanoid")) {
        let urdf = data.join(robot);
        let usda = urdf_to_usda(&urdf, &options).unwrap_or_else(|e| panic!("{robot}: {e}"));
        let path = dir.path().join("robot.usda");
        std::fs::write(&path, &usda).expect("write");
        let scene = usd::load_scene(&path).unwrap_or_else(|e| panic!("{robot}: {e}"));
        let commands = scene
            .joints
            .iter()
            .filter(|j| j.kind.is_single_axis())
            .map(|j| {
                let step: f64 = if j.kind == JointKind::Revolute {
                    0.2
                } else {
                    0.02
                };
                let (lo, hi) = j.limits.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
                let start = 0f64.clamp(lo, hi);
                let target = if start + step <= hi {
                    start + step
                } else {
                    (start - step).max(lo)
                };
                TimedCommand {
                    step: 0,
                    joint: j.path.clone(),
                    command: JointCommand::Position(target),
                }
            })
            .collect();
        let run = CompareRun {
            steps: 960,
            sample_every: 10,
            commands,
            position_tolerance_m: None,
            joint_tolerance: None,
        };
        let config = EngineConfig {
            step_hz: 240.0,
            ..Default::default()
        };
        let report =
            compare(&scene, &engines, &config, &run).unwrap_or_else(|e| panic!("{robot}: {e}"));
        let fold = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
        let body_max = fold(
            report
                .bodies
                .iter()
                .map(|b| b.max_position_error_m)
                .collect(),
        );
        let body_end = fold(
            report
                .bodies
                .iter()
                .map(|b| b.final_position_error_m)
                .collect(),
        );
        let joint_max = fold(report.joints.iter().map(|j| j.max_error).collect());
        let joint_end = fold(report.joints.iter().map(|j| j.final_error).collect());
        println!(
            "{robot}: settled within {body_end:.1e} m and {joint_end:.1e} (on the way {body_max:.1e} m, {joint_max:.1e})"
        );
        for b in &report.bodies {
            assert!(
                b.final_position_error_m < 0.03,
                "{robot}: {} on {} settles {} m from {}",
                b.path,
                b.engine,
                b.final_position_error_m,
                report.reference
            );
        }
        // The three other engines against each other: the same gap to rapier3d.
        for path in report.bodies.iter().map(|b| &b.path) {
            let gaps: Vec<f64> = report
                .bodies
                .iter()
                .filter(|b| &b.path == path)
                .map(|b| b.final_position_error_m)
                .collect();
            let spread = gaps.iter().cloned().fold(f64::MIN, f64::max)
                - gaps.iter().cloned().fold(f64::MAX, f64::min);
            assert!(
                spread < 0.002,
                "{robot}: {path}: MuJoCo, PhysX and PyBullet settle {gaps:?} from rapier3d"
            );
        }
        for j in &report.joints {
            assert!(
                j.final_error < 0.05,
                "{robot}: {} on {} settles {} from {}",
                j.path,
                j.engine,
                j.final_error,
                report.reference
            );
        }
    }
}

//! Our USD reader against the reference implementation: pxr (usd-core) opens the
//! same files and its own UsdPhysics parser must see the same bodies, masses,
//! poses, joints, limits and drives.

mod common;

use hanzo_twin::engines::geometry::quat_rotate;
use hanzo_twin::engines::look::LightKind;
use hanzo_twin::engines::scene::{BodyKind, JointKind, SceneModel};
use hanzo_twin::engines::usd::load_scene;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

use common::repo;

/// The Python with usd-core: `HANZO_TWIN_TEST_PYTHON` (set by scripts/test.sh,
/// where a failure to run it fails the test) or ./.venv.
fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HANZO_TWIN_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv/bin/python");
    let has_pxr = venv.exists()
        && Command::new(&venv)
            .args(["-c", "import pxr"])
            .status()
            .is_ok_and(|s| s.success());
    has_pxr.then_some(venv)
}

fn close(a: f64, b: f64) -> bool {
    // pxr hands back float32 values widened to double.
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

fn close3(a: &[f64], b: &Value) -> bool {
    a.iter()
        .zip(b.as_array().expect("array"))
        .all(|(x, y)| close(*x, y.as_f64().expect("number")))
}

fn compare(file: &str, ours: &SceneModel, pxr: &Value) {
    let g = ours.gravity.expect("gravity");
    assert!(
        close3(&g, &pxr["gravity"]),
        "{file}: gravity {g:?} vs {}",
        pxr["gravity"]
    );

    let rigid: Vec<_> = ours
        .bodies
        .iter()
        .filter(|b| pxr["bodies"].get(&b.path).is_some())
        .collect();
    assert_eq!(
        rigid.len(),
        pxr["bodies"].as_object().expect("bodies").len(),
        "{file}: rigid bodies differ"
    );
    for body in rigid {
        let p = &pxr["bodies"][&body.path];
        let kind = match body.kind {
            BodyKind::Dynamic => "Dynamic",
            BodyKind::Static => "Static",
            BodyKind::Kinematic => "Kinematic",
        };
        assert_eq!(p["kind"], kind, "{file}: {}", body.path);
        assert!(
            close3(&body.pose.translation, &p["position"]),
            "{file}: {} position",
            body.path
        );
        assert!(
            close3(&body.pose.rotation, &p["rotation"]),
            "{file}: {} rotation",
            body.path
        );
        if let Some(mass) = p["mass"].as_f64().filter(|m| *m > 0.0) {
            assert!(
                body.mass.mass.is_some_and(|m| close(m, mass)),
                "{file}: {} mass {:?} vs {mass}",
                body.path,
                body.mass.mass
            );
        }
        let mut colliders: Vec<&str> = body.colliders.iter().map(|c| c.path.as_str()).collect();
        colliders.sort();
        let theirs: Vec<&str> = p["colliders"]
            .as_array()
            .expect("colliders")
            .iter()
            .map(|c| c.as_str().expect("path"))
            .collect();
        assert_eq!(colliders, theirs, "{file}: {} colliders", body.path);
    }

    let joints = pxr["joints"].as_object().expect("joints");
    assert_eq!(ours.joints.len(), joints.len(), "{file}: joint count");
    for joint in &ours.joints {
        let p = joints
            .get(&joint.path)
            .unwrap_or_else(|| panic!("{file}: pxr has no joint {}", joint.path));
        let kind = match joint.kind {
            JointKind::Revolute => "RevoluteJoint",
            JointKind::Prismatic => "PrismaticJoint",
            JointKind::Fixed => "FixedJoint",
            JointKind::Spherical => "SphericalJoint",
        };
        assert_eq!(p["type"], kind, "{file}: {}", joint.path);
        assert_eq!(
            p["body0"].as_str(),
            joint.body0.as_deref(),
            "{file}: {} body0",
            joint.path
        );
        assert_eq!(
            p["body1"].as_str(),
            joint.body1.as_deref(),
            "{file}: {} body1",
            joint.path
        );
        assert!(
            close3(&joint.local_pose0.translation, &p["local_pos0"]),
            "{file}: {}",
            joint.path
        );
        assert!(
            close3(&joint.local_pose1.translation, &p["local_pos1"]),
            "{file}: {}",
            joint.path
        );
        if joint.kind == JointKind::Fixed {
            continue;
        }
        assert_eq!(
            p["axis"],
            format!("{:?}", joint.axis),
            "{file}: {} axis",
            joint.path
        );
        // pxr gives a spherical joint's cone as its limit, in degrees.
        let limits = match joint.kind {
            JointKind::Spherical => joint.cone_limits.map(|[a, b]| (a, b)),
            _ => joint.limits,
        };
        match (limits, p.get("limits")) {
            (Some((lo, hi)), Some(l)) => {
                assert!(close3(&[lo, hi], l), "{file}: {} limits", joint.path)
            }
            (None, None) => {}
            (ours, theirs) => panic!("{file}: {} limits {ours:?} vs {theirs:?}", joint.path),
        }
        match (joint.drive, p.get("drive")) {
            (Some(d), Some(t)) => {
                assert!(
                    close(d.stiffness, t["stiffness"].as_f64().expect("k")),
                    "{file}: {}",
                    joint.path
                );
                assert!(
                    close(d.damping, t["damping"].as_f64().expect("c")),
                    "{file}: {}",
                    joint.path
                );
                assert!(
                    close(d.target_position, t["target_position"].as_f64().expect("x")),
                    "{file}: {}",
                    joint.path
                );
            }
            (None, None) => {}
            (ours, theirs) => panic!("{file}: {} drive {ours:?} vs {theirs:?}", joint.path),
        }
    }
}

#[test]
fn reader_agrees_with_pxr_usdphysics() {
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED reader_agrees_with_pxr_usdphysics: no Python with usd-core (pxr). \
             Run scripts/test.sh, which installs it into ./.venv. ***\n"
        );
        return;
    };
    let files: Vec<PathBuf> = vec![
        repo().join("configs/scenes/robot-arm/scene.usda"),
        repo().join("configs/scenes/conveyor/scene.usda"),
        repo().join("tests/fixtures/usd/scene.usda"),
        repo().join("tests/fixtures/usd/scene.usdc"),
        repo().join("tests/fixtures/usd/composed.usda"),
        repo().join("tests/fixtures/usd/ref.usda"),
        repo().join("tests/fixtures/usd/simple_physics.usda"),
        repo().join("tests/fixtures/usd/spherical.usda"),
        repo().join("tests/fixtures/usd/looks.usda"),
    ];
    let out = Command::new(&python)
        .arg(repo().join("tests/peers/usd_physics_summary.py"))
        .arg("--json")
        .args(&files)
        .output()
        .expect("run the pxr peer");
    assert!(
        out.status.success(),
        "pxr peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summaries: Value = serde_json::from_slice(&out.stdout).expect("peer prints JSON");
    for file in &files {
        let key = file.to_str().expect("utf-8 path");
        let ours = load_scene(file).unwrap_or_else(|e| panic!("{key}: {e}"));
        compare(key, &ours, &summaries[key]);
        compare_looks(key, &ours, &summaries[key]);
    }
}

/// How the scene looks: pxr's UsdShade resolves the same material for
/// each collider (preview purpose, then all), its UsdPreviewSurface gives
/// the same inputs (or the displayColor does), the same semantic class is
/// inherited, and UsdLux gives the same lights.
fn compare_looks(file: &str, ours: &SceneModel, pxr: &Value) {
    let colliders: Vec<_> = ours.bodies.iter().flat_map(|b| &b.colliders).collect();
    for collider in colliders {
        let Some(theirs) = pxr["looks"].get(&collider.path) else {
            continue;
        };
        let look = ours.look.shape(&collider.path);
        assert_eq!(
            look.and_then(|l| l.class.as_deref()),
            theirs["class"].as_str(),
            "{file}: {} class",
            collider.path
        );
        match (look, theirs["surface"].as_object()) {
            (_, None) => assert!(
                look.is_none_or(|l| l.surface == Default::default()),
                "{file}: {} has a surface pxr does not see",
                collider.path
            ),
            (None, Some(_)) => panic!("{file}: {} has no surface; pxr sees one", collider.path),
            (Some(l), Some(t)) => {
                let s = &l.surface;
                assert!(
                    close3(&s.diffuse_color, &t["diffuse_color"]),
                    "{file}: {} diffuse {:?} vs {}",
                    collider.path,
                    s.diffuse_color,
                    t["diffuse_color"]
                );
                assert!(close(
                    s.roughness,
                    t["roughness"].as_f64().expect("roughness")
                ));
                assert!(close(s.metallic, t["metallic"].as_f64().expect("metallic")));
            }
        }
    }
    let lights = pxr["lights"].as_object().expect("lights");
    assert_eq!(ours.look.lights.len(), lights.len(), "{file}: lights");
    for light in &ours.look.lights {
        let t = &lights[&light.path];
        let kind = match light.kind {
            LightKind::Distant { .. } => "DistantLight",
            LightKind::Sphere { .. } => "SphereLight",
            LightKind::Rect { .. } => "RectLight",
            LightKind::Disk { .. } => "DiskLight",
            LightKind::Dome => "DomeLight",
        };
        assert_eq!(t["type"], kind, "{file}: {}", light.path);
        assert!(
            close(light.intensity, t["intensity"].as_f64().expect("intensity")),
            "{file}: {} intensity",
            light.path
        );
        assert!(
            close3(&light.color, &t["color"]),
            "{file}: {} colour {:?} vs {}",
            light.path,
            light.color,
            t["color"]
        );
        assert!(
            close3(&light.pose.translation, &t["position"]),
            "{file}: {} position",
            light.path
        );
        let shine = quat_rotate(light.pose.rotation, [0.0, 0.0, -1.0]);
        assert!(
            close3(&shine, &t["shine"]),
            "{file}: {} shines {shine:?} vs {}",
            light.path,
            t["shine"]
        );
    }
}

/// A twin's run exported as USD: pxr opens it and finds each body at the pose
/// the twin reported at that step.
#[tokio::test]
async fn exported_runs_replay_in_pxr_at_the_recorded_poses() {
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED exported_runs_replay_in_pxr_at_the_recorded_poses: no Python with usd-core (pxr). \
             Run scripts/test.sh, which installs it into ./.venv. ***\n"
        );
        return;
    };
    let node = common::TestNode::start().await;
    let id = node.create_sample("robot-arm.yaml", "recorded-arm").await;
    node.start_twin(&id, "paused").await;
    node.command(&id, "/World/Arm/elbow", "position", 0.8).await;
    node.command(&id, "/World/Arm/shoulder_yaw", "position", -0.6)
        .await;
    // 240 Hz stepping recorded at 30 Hz: a frame every 8 steps.
    let mut expected = Vec::new();
    for steps in [8, 8, 16, 48] {
        let report = node.step(&id, steps).await;
        let (_, obs) = node.get(&format!("/v1/twins/{id}/observation")).await;
        expected.push((report["step"].as_u64().expect("step"), obs));
    }
    let r = node
        .http
        .get(node.url(&format!("/v1/twins/{id}/export")))
        .send()
        .await
        .expect("export");
    assert_eq!(r.status().as_u16(), 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.usda");
    std::fs::write(&path, r.text().await.expect("text")).expect("write");

    let bodies: Vec<String> = expected[0].1["bodies"]
        .as_array()
        .expect("bodies")
        .iter()
        .map(|b| b["path"].as_str().expect("path").to_string())
        .collect();
    assert!(bodies.iter().any(|b| b == "/World/Arm/Link3"), "{bodies:?}");
    let times: Vec<String> = expected.iter().map(|(s, _)| s.to_string()).collect();
    let out = Command::new(&python)
        .arg(repo().join("tests/peers/read_run.py"))
        .arg(&path)
        .arg(bodies.join(","))
        .arg(times.join(","))
        .output()
        .expect("run the pxr peer");
    assert!(
        out.status.success(),
        "pxr could not read the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pxr: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(pxr["time_codes_per_second"], 240.0);
    assert_eq!(pxr["start"], 0.0);
    assert_eq!(pxr["end"], 80.0);
    assert_eq!(pxr["up_axis"], "Z");
    assert_eq!(pxr["meters_per_unit"], 1.0);
    let mut moved = false;
    for (step, obs) in &expected {
        for body in obs["bodies"].as_array().expect("bodies") {
            let name = body["path"].as_str().expect("path");
            let at = &pxr["poses"][name][step.to_string()];
            let p = &at["position"];
            for k in 0..3 {
                let ours = body["position"][k].as_f64().expect("number");
                let theirs = p[k].as_f64().expect("number");
                assert!(
                    (ours - theirs).abs() < 1e-9,
                    "{name} at step {step}: position {} vs pxr {p}",
                    body["position"]
                );
            }
            // q and -q are the same rotation; the engine's f32 quaternions are
            // compared at unit length, as USD stores them.
            let q: Vec<f64> = (0..4)
                .map(|k| body["orientation"][k].as_f64().expect("number"))
                .collect();
            let norm = q.iter().map(|c| c * c).sum::<f64>().sqrt();
            let q: Vec<f64> = q.iter().map(|c| c / norm).collect();
            let r: Vec<f64> = (0..4)
                .map(|k| at["orientation"][k].as_f64().expect("number"))
                .collect();
            let dot: f64 = q.iter().zip(&r).map(|(a, b)| a * b).sum();
            assert!(
                (dot.abs() - 1.0).abs() < 1e-9,
                "{name} at step {step}: orientation {q:?} vs pxr {r:?}"
            );
        }
        moved |= obs["bodies"].as_array().expect("bodies").iter().any(|b| {
            b["path"] == "/World/Arm/Link3"
                && b["position"] != expected[0].1["bodies"][0]["position"]
        });
    }
    assert!(moved, "the arm should have moved during the recording");

    // A format the node cannot write is refused, naming the field.
    let (status, body) = node
        .get(&format!("/v1/twins/{id}/export?format=usdc"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "format");
}

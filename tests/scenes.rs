//! The scene library against real nodes: versioned, atomic uploads to object
//! storage (local folders, and a real S3-protocol server), twins running from
//! library scenes, downloads, validation, and bad input that stores nothing.

mod common;

use common::{NodeOptions, TestNode, repo};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", dir).expect("pack");
    builder.into_inner().expect("tar")
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // `append_data` refuses `..`; write the name raw to build hostile archives.
        let name = header.as_gnu_mut().expect("gnu header");
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).expect("append");
    }
    builder.into_inner().expect("tar")
}

async fn upload(node: &TestNode, name: &str, query: &str, tar: Vec<u8>) -> (u16, Value) {
    let r = node
        .http
        .post(node.url(&format!("/v1/scenes?name={name}{query}")))
        .header("content-type", "application/x-tar")
        .body(tar)
        .send()
        .await
        .expect("upload");
    common::status_json(r).await
}

fn arm_definition(name: &str, scene: &str, version: Option<u32>) -> String {
    let text =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let version = version
        .map(|v| format!("\n  version: {v}"))
        .unwrap_or_default();
    common::rename(&text, name).replace(
        "uri: robot-arm/scene.usda",
        &format!("uri: scene://{scene}{version}"),
    )
}

/// Every object stored under `root`, as paths relative to it.
fn stored_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Checks the library on `node`, whose scenes bucket is the folder `bucket`.
async fn exercise_library(node: &TestNode, bucket: &Path) {
    let arm = repo().join("configs/scenes/robot-arm");
    let (status, v1) = upload(node, "arm", "", tar_of_dir(&arm)).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["root"], "scene.usda");
    assert_eq!(v1["contents"]["joints"], 4);
    let source = std::fs::read(arm.join("scene.usda")).expect("scene");
    assert_eq!(
        v1["files"][0]["sha256"],
        format!("{:x}", Sha256::digest(&source))
    );
    let (status, v2) = upload(node, "arm", "&root=scene.usda", tar_of_dir(&arm)).await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["version"], 2);

    let (status, list) = node.get("/v1/scenes").await;
    assert_eq!(status, 200);
    assert_eq!(list["scenes"][0]["name"], "arm");
    assert_eq!(list["scenes"][0]["latest_version"], 2);
    let (_, scene) = node.get("/v1/scenes/arm").await;
    assert_eq!(scene["versions"].as_array().map(Vec::len), Some(2));

    // Downloads give back exactly the files uploaded.
    let r = node
        .http
        .get(node.url("/v1/scenes/arm/download?version=1"))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status().as_u16(), 200);
    let archive = r.bytes().await.expect("bytes");
    let mut tar = tar::Archive::new(archive.as_ref());
    let mut entries = tar.entries().expect("entries");
    let mut first = entries.next().expect("one file").expect("entry");
    assert_eq!(first.path().expect("path").to_str(), Some("scene.usda"));
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut first, &mut data).expect("read");
    assert_eq!(data, source);

    // Validation per engine.
    let (status, report) = node
        .post("/v1/scenes/arm/validate", json!({ "engine": "rapier3d" }))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["version"], 2);
    let (_, report) = node
        .post(
            "/v1/scenes/arm/validate",
            json!({ "engine": "gazebo", "version": 1 }),
        )
        .await;
    assert_eq!(report["available"], false);
    assert!(
        report["error"]
            .as_str()
            .unwrap_or("")
            .contains("not available"),
        "{report}"
    );

    // A twin runs from a library scene, pinned to a version.
    let (status, twin) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &arm_definition("lib-arm", "arm", Some(1)),
        )
        .await;
    assert_eq!(status, 201, "{twin}");
    let id = twin["id"].as_str().expect("id").to_string();
    node.start_twin(&id, "paused").await;
    assert_eq!(node.step(&id, 24).await["step"], 24);
    let (status, body) = node
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &arm_definition("ghost-arm", "arm", Some(9)),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "scene.uri");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("version 9"),
        "{body}"
    );

    // Bad uploads store nothing.
    let before = stored_files(bucket);
    // One flipped byte in a pxr-written binary scene crashes the USD library;
    // the node reads uploads in a child process and names the file.
    let mut corrupt = std::fs::read(repo().join("tests/fixtures/usd/scene.usdc")).expect("fixture");
    corrupt[93] ^= 0x5a;
    let missing_ref =
        b"#usda 1.0\ndef Xform \"World\" (\n    references = @./parts/missing.usda@\n)\n{\n}\n";
    let bad: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "not a tar",
            b"hello, not a tar archive at all".to_vec(),
            "archive",
            "",
        ),
        (
            "escaping path",
            tar_of(&[("../evil.usda", b"#usda 1.0\n")]),
            "archive",
            "evil.usda",
        ),
        ("no USD", tar_of(&[("readme.txt", b"hi")]), "root", ""),
        (
            "two roots",
            tar_of(&[("a.usda", b"#usda 1.0\n"), ("b.usda", b"#usda 1.0\n")]),
            "root",
            "",
        ),
        (
            "corrupt USD",
            tar_of(&[("scene.usdc", &corrupt)]),
            "archive",
            "scene.usdc",
        ),
        (
            "missing reference",
            tar_of(&[("scene.usda", missing_ref)]),
            "archive",
            "missing.usda",
        ),
    ];
    for (label, tar, field, names) in bad {
        let (status, body) = upload(node, "arm", "", tar).await;
        assert_eq!(status, 400, "{label}: {body}");
        assert_eq!(body["error"]["field"], field, "{label}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(names), "{label}: {message}");
    }
    let (status, body) = upload(node, "arm", "&root=nope.usda", tar_of_dir(&arm)).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (400, &json!("root")),
        "{body}"
    );
    let (status, body) = upload(node, "../arm", "", tar_of_dir(&arm)).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (400, &json!("name")),
        "{body}"
    );
    assert_eq!(
        stored_files(bucket),
        before,
        "a failed upload left objects behind"
    );
    let (_, scene) = node.get("/v1/scenes/arm").await;
    assert_eq!(scene["latest_version"], 2);

    // Deleting a version removes it; the scene stays with the other one.
    let (status, _) = node.delete("/v1/scenes/arm?version=2").await;
    assert_eq!(status, 204);
    let (_, scene) = node.get("/v1/scenes/arm").await;
    assert_eq!(scene["latest_version"], 1);
    let (status, _) = node.get("/v1/scenes/nothing-here").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn scenes_are_versioned_in_local_object_storage() {
    let node = TestNode::start().await;
    let bucket = node.dir.path().join("data/objects/hanzo-twin-scenes");
    exercise_library(&node, &bucket).await;
    // A folder cannot sign URLs; the node says what can.
    let (status, body) = node.get("/v1/scenes/arm/download?presign=true").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "presign");
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_whole() {
    let node = TestNode::start_opts(NodeOptions {
        env: &[("HANZO_TWIN_SCENES_MAX_UPLOAD_BYTES", "4096")],
        ..Default::default()
    })
    .await;
    let big = tar_of_dir(&repo().join("configs/scenes/conveyor"));
    assert!(big.len() > 4096);
    let (status, body) = upload(&node, "conveyor", "", big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    let (status, _) = node.get("/v1/scenes/conveyor").await;
    assert_eq!(status, 404);
}

/// The S3-protocol server the test script installs (s3s-fs).
fn s3s_fs() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HANZO_TWIN_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").ok()?;
    let p = PathBuf::from(home).join(".cache/hanzo-twin/tools/bin/s3s-fs");
    p.exists().then_some(p)
}

struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_s3(bin: &Path) -> S3Server {
    let root = tempfile::tempdir().expect("tempdir");
    for bucket in [
        "hanzo-twin-scenes",
        "hanzo-twin-datasets",
        "hanzo-twin-checkpoints",
    ] {
        std::fs::create_dir_all(root.path().join(bucket)).expect("bucket");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "test-access", "--secret-key", "test-secret"])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    S3Server { child, port, root }
}

#[tokio::test]
async fn scenes_and_checkpoints_live_in_s3_when_configured() {
    let Some(bin) = s3s_fs() else {
        eprintln!(
            "SKIPPED: scenes_and_checkpoints_live_in_s3_when_configured needs the s3s-fs S3 server; scripts/test.sh installs it (or set HANZO_TWIN_S3S_FS)"
        );
        return;
    };
    let s3 = start_s3(&bin).await;
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let env = [
        ("HANZO_TWIN_STORAGE_BACKEND", "s3"),
        ("HANZO_TWIN_STORAGE_ENDPOINT", endpoint.as_str()),
        ("HANZO_TWIN_STORAGE_ALLOW_HTTP", "true"),
        ("HANZO_TWIN_STORAGE_ACCESS_KEY", "test-access"),
        ("HANZO_TWIN_STORAGE_SECRET_KEY", "test-secret"),
    ];
    let mut node = TestNode::start_opts(NodeOptions {
        env: &env,
        ..Default::default()
    })
    .await;
    exercise_library(&node, &s3.root.path().join("hanzo-twin-scenes")).await;
    // Pre-signed URLs fetch the files straight from S3, with no credentials.
    let (status, signed) = node
        .get("/v1/scenes/arm/download?presign=true&version=1&expires_s=60")
        .await;
    assert_eq!(status, 200, "{signed}");
    let file = &signed["files"][0];
    assert_eq!(file["path"], "scene.usda");
    let url = file["url"].as_str().expect("url");
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let fetched = reqwest::get(url).await.expect("GET signed URL");
    assert_eq!(fetched.status().as_u16(), 200);
    let bytes = fetched.bytes().await.expect("bytes");
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        file["sha256"].as_str().expect("sha256")
    );
    let (status, body) = node
        .get("/v1/scenes/arm/download?presign=true&expires_s=0")
        .await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (400, &json!("expires_s"))
    );
    // Nothing went to the local folders.
    assert!(!node.dir.path().join("data/objects").exists());

    // Checkpoints go to the checkpoints bucket, and a restarted node resumes
    // from them.
    let (_, twins) = node.get("/v1/twins").await;
    let id = twins["twins"][0]["id"].as_str().expect("id").to_string();
    node.step(&id, 100).await;
    node.restart(false).await;
    let checkpoint = s3
        .root
        .path()
        .join("hanzo-twin-checkpoints")
        .join(format!("{id}.ckpt"));
    assert!(checkpoint.exists(), "no checkpoint object in S3");
    let (_, state) = node.get(&format!("/v1/twins/{id}")).await;
    assert_eq!(state["status"]["state"], "running", "{state}");
    assert_eq!(state["runtime"]["step"], 124, "{state}");

    // Wrong credentials are a clear storage error, not a hang.
    drop(node);
    let env = [
        ("HANZO_TWIN_STORAGE_BACKEND", "s3"),
        ("HANZO_TWIN_STORAGE_ENDPOINT", endpoint.as_str()),
        ("HANZO_TWIN_STORAGE_ALLOW_HTTP", "true"),
        ("HANZO_TWIN_STORAGE_ACCESS_KEY", "test-access"),
        ("HANZO_TWIN_STORAGE_SECRET_KEY", "wrong"),
    ];
    let node = TestNode::start_opts(NodeOptions {
        env: &env,
        ..Default::default()
    })
    .await;
    let (status, body) = upload(
        &node,
        "arm",
        "",
        tar_of_dir(&repo().join("configs/scenes/robot-arm")),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "storage");
}

const GROUND: &str = r#"#usda 1.0
(
    defaultPrim = "World"
    metersPerUnit = 1
    upAxis = "Z"
)

def Xform "World"
{
    def PhysicsScene "PhysicsScene"
    {
        vector3f physics:gravityDirection = (0, 0, -1)
        float physics:gravityMagnitude = 9.81
    }

    def Plane "Ground" (
        prepend apiSchemas = ["PhysicsCollisionAPI"]
    )
    {
        uniform token axis = "Z"
    }
}
"#;

/// A 1 kg, 0.2 m box at (`x`, 0, `height`), as a component with its own
/// default prim.
fn box_component(x: f64, height: f64) -> String {
    format!(
        r#"#usda 1.0
(
    defaultPrim = "Box"
    metersPerUnit = 1
    upAxis = "Z"
)

def Xform "Box" (
    prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsMassAPI"]
)
{{
    float physics:mass = 1
    double3 xformOp:translate = ({x}, 0, {height})
    uniform token[] xformOpOrder = ["xformOp:translate"]

    def Cube "Shape" (
        prepend apiSchemas = ["PhysicsCollisionAPI"]
    )
    {{
        double size = 0.2
    }}
}}
"#
    )
}

fn referencing(name: &str, other: &str) -> String {
    format!(
        "#usda 1.0\n(\n    defaultPrim = \"{name}\"\n)\n\ndef Xform \"{name}\" (\n    prepend references = @./{other}@\n)\n{{\n}}\n"
    )
}

fn composed_definition(name: &str, composition: &[(&str, &str)]) -> String {
    let mut text = format!("name: {name}\nscene:\n  uri: ground.usda\n  composition:\n");
    for (reference, path) in composition {
        text.push_str(&format!("    - ref: {reference}\n      path: {path}\n"));
    }
    text.push_str("engine:\n  type: rapier3d\n  config:\n    step_hz: 240\n");
    text
}

#[tokio::test]
async fn twins_compose_components_at_prim_paths() {
    let scenes = tempfile::tempdir().expect("tempdir");
    let dir = scenes.path();
    std::fs::write(dir.join("ground.usda"), GROUND).expect("write");
    std::fs::write(dir.join("box.usda"), box_component(0.0, 1.0)).expect("write");
    std::fs::write(dir.join("a.usda"), referencing("A", "b.usda")).expect("write");
    std::fs::write(dir.join("b.usda"), referencing("B", "a.usda")).expect("write");
    let node = TestNode::start_opts(NodeOptions {
        scenes_root: Some(dir),
        ..Default::default()
    })
    .await;
    // A component from the library, pinned to a version.
    let lib = tempfile::tempdir().expect("tempdir");
    std::fs::write(lib.path().join("box.usda"), box_component(1.0, 2.0)).expect("write");
    let (status, body) = upload(&node, "tall-box", "", tar_of_dir(lib.path())).await;
    assert_eq!(status, 201, "{body}");

    let text = composed_definition(
        "two-boxes",
        &[
            ("box.usda", "/World/Box_01"),
            ("scene://tall-box@1", "/World/Shelf/Box_02"),
        ],
    );
    let (status, twin) = node.post_raw("/v1/twins", "application/yaml", &text).await;
    assert_eq!(status, 201, "{twin}");
    let id = twin["id"].as_str().expect("id").to_string();
    node.start_twin(&id, "paused").await;
    let (_, before) = node.get(&format!("/v1/twins/{id}/observation")).await;
    let z = |obs: &Value, path: &str| -> f64 {
        obs["bodies"]
            .as_array()
            .expect("bodies")
            .iter()
            .find(|b| b["path"] == path)
            .unwrap_or_else(|| panic!("no body {path} in {obs}"))["position"][2]
            .as_f64()
            .expect("z")
    };
    assert_eq!(z(&before, "/World/Box_01"), 1.0);
    assert_eq!(z(&before, "/World/Shelf/Box_02"), 2.0);
    node.step(&id, 480).await;
    let (_, after) = node.get(&format!("/v1/twins/{id}/observation")).await;
    // Both fell and came to rest on the ground (box half height 0.1).
    for path in ["/World/Box_01", "/World/Shelf/Box_02"] {
        let rest = z(&after, path);
        assert!((rest - 0.1).abs() < 0.02, "{path} at z = {rest}");
    }

    // Overlapping attachment points, a composition cycle, a missing file.
    let cases = [
        (
            composed_definition(
                "overlap",
                &[("box.usda", "/World/Box"), ("box.usda", "/World/Box/Inner")],
            ),
            "scene.composition[1].path",
            "overlaps",
        ),
        (
            composed_definition("cycle", &[("a.usda", "/World/Loop")]),
            "scene.composition",
            "cycle",
        ),
        (
            composed_definition("missing", &[("nowhere.usda", "/World/Gone")]),
            "scene.composition[0].ref",
            "nowhere.usda",
        ),
        (
            composed_definition("unknown-lib", &[("scene://no-such-scene", "/World/Gone")]),
            "scene.composition[0].ref",
            "no-such-scene",
        ),
    ];
    for (text, field, says) in cases {
        let (status, body) = node.post_raw("/v1/twins", "application/yaml", &text).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{field}: {message}");
        assert!(
            !message.contains("hanzo-twin-composed"),
            "internal file leaked: {message}"
        );
    }
}

/// A unit cube as a USD Mesh (8 points, 6 quads), centred on its prim.
const CUBE_MESH: &str = r#"point3f[] points = [(-0.5, -0.5, -0.5), (0.5, -0.5, -0.5), (0.5, 0.5, -0.5), (-0.5, 0.5, -0.5), (-0.5, -0.5, 0.5), (0.5, -0.5, 0.5), (0.5, 0.5, 0.5), (-0.5, 0.5, 0.5)]
        int[] faceVertexCounts = [4, 4, 4, 4, 4, 4]
        int[] faceVertexIndices = [0, 3, 2, 1, 4, 5, 6, 7, 0, 1, 5, 4, 1, 2, 6, 5, 2, 3, 7, 6, 3, 0, 4, 7]"#;

fn validation_scene() -> String {
    format!(
        r#"#usda 1.0
(
    defaultPrim = "World"
    metersPerUnit = 1
    upAxis = "Z"
)

def Xform "World"
{{
    def PhysicsScene "PhysicsScene"
    {{
    }}

    def Material "Rubber" (
        prepend apiSchemas = ["PhysicsMaterialAPI"]
    )
    {{
        float physics:staticFriction = 0.9
        float physics:dynamicFriction = 0.6
    }}

    def Mesh "Floor" (
        prepend apiSchemas = ["PhysicsCollisionAPI"]
    )
    {{
        {CUBE_MESH}
        double3 xformOp:translate = (0, 0, -0.5)
        float3 xformOp:scale = (10, 10, 1)
        uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:scale"]
    }}

    def Mesh "Rock" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsMassAPI", "PhysicsCollisionAPI"]
    )
    {{
        {CUBE_MESH}
        float physics:mass = 2
        double3 xformOp:translate = (0, 0, 1)
        float3 xformOp:scale = (0.4, 0.4, 0.4)
        uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:scale"]
    }}

    def Cube "Crate" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsCollisionAPI", "MaterialBindingAPI"]
    )
    {{
        rel material:binding:physics = </World/Rubber>
        double size = 0.3
        double3 xformOp:translate = (2, 0, 1)
        uniform token[] xformOpOrder = ["xformOp:translate"]
    }}

    def Camera "Overview"
    {{
        double3 xformOp:translate = (0, -5, 2)
        uniform token[] xformOpOrder = ["xformOp:translate"]
    }}
}}
"#
    )
}

const DISTANCE_JOINT: &str = r#"#usda 1.0
(
    defaultPrim = "World"
)

def Xform "World"
{
    def Cube "A" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsCollisionAPI"]
    )
    {
        double size = 0.2
    }

    def PhysicsDistanceJoint "Rope"
    {
        rel physics:body0 = </World/A>
    }
}
"#;

#[tokio::test]
async fn validation_reports_each_prim_and_mesh_colliders_simulate() {
    let node = TestNode::start().await;
    let pkg = tempfile::tempdir().expect("tempdir");
    std::fs::write(pkg.path().join("scene.usda"), validation_scene()).expect("write");
    let (status, body) = upload(&node, "yard", "", tar_of_dir(pkg.path())).await;
    assert_eq!(status, 201, "{body}");
    let (status, report) = node
        .post("/v1/scenes/yard/validate", json!({ "engine": "rapier3d" }))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let finding = |prim: &str, feature: &str| -> Value {
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["prim"] == prim && f["feature"].as_str().unwrap_or("").starts_with(feature))
            .cloned()
            .unwrap_or_else(|| panic!("no finding {feature} for {prim} in {report}"))
    };
    assert_eq!(
        finding("/World/Floor", "collider: triangle mesh")["support"],
        "supported"
    );
    let rock = finding("/World/Rock", "collider: triangle mesh");
    assert_eq!(rock["support"], "approximated");
    assert!(
        rock["note"].as_str().unwrap_or("").contains("convex hull"),
        "{rock}"
    );
    assert_eq!(
        finding("/World/Rock", "rigid body (dynamic)")["support"],
        "supported"
    );
    let crate_ = finding("/World/Crate", "collider: box");
    assert_eq!(crate_["support"], "approximated");
    assert!(
        crate_["note"].as_str().unwrap_or("").contains("friction"),
        "{crate_}"
    );
    assert_eq!(
        finding("/World/Overview", "camera")["support"],
        "approximated"
    );
    assert_eq!(report["unsupported"], 0);
    assert_eq!(report["approximated"], 3);

    // The mesh-shaped rock falls and rests on the mesh floor.
    let twin = "name: yard\nscene:\n  uri: scene://yard\nengine:\n  type: rapier3d\n  config:\n    step_hz: 240\n";
    let (status, created) = node.post_raw("/v1/twins", "application/yaml", twin).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    node.start_twin(&id, "paused").await;
    node.step(&id, 480).await;
    let (_, obs) = node
        .get(&format!("/v1/twins/{id}/observation?path=/World/Rock"))
        .await;
    let z = obs["bodies"][0]["position"][2].as_f64().expect("z");
    assert!((z - 0.2).abs() < 0.02, "the rock rests at z = {z}");

    // Physics the scene model cannot represent: stored, reported, not runnable.
    let pkg = tempfile::tempdir().expect("tempdir");
    std::fs::write(pkg.path().join("scene.usda"), DISTANCE_JOINT).expect("write");
    let (status, body) = upload(&node, "rope", "", tar_of_dir(pkg.path())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["contents"]["unsupported"]["prim"], "/World/Rope");
    let (_, report) = node
        .post("/v1/scenes/rope/validate", json!({ "engine": "rapier3d" }))
        .await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["unsupported"], 1);
    assert_eq!(report["findings"][0]["prim"], "/World/Rope");
    assert!(
        report["findings"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("distance"),
        "{report}"
    );
    let twin = "name: rope\nscene:\n  uri: scene://rope\nengine:\n  type: rapier3d\n";
    let (status, body) = node.post_raw("/v1/twins", "application/yaml", twin).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("/World/Rope"),
        "{body}"
    );
}

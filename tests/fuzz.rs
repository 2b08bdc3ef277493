//! Fuzz targets for every parser that takes a user's bytes: twin definitions
//! (YAML and JSON), USD scenes (text and binary), URDF robots with their
//! meshes, checkpoints, the training loop's safetensors bodies, scene tar
//! archives and bearer tokens.
//!
//! Each target feeds its parser two kinds of input: byte edits of valid
//! files (the shipped samples: deep paths are reached at once) and raw
//! bytes. A parser must answer `Ok` or `Err`; a panic fails the target, and
//! so does an allocation over [`ALLOCATION_CAP`] (it aborts the binary, as
//! an unbounded allocation in the node would).
//!
//! Under `cargo test` each target runs a short random pass
//! (`BOLERO_RANDOM_ITERATIONS` sets how many inputs; the default is below).
//! The long, coverage-guided run is `cargo bolero test --test fuzz
//! <target>` with libFuzzer; see docs/fuzzing.md.

use bolero::check;
use hanzo_twin::actors::{Format, TwinDefinition};
use hanzo_twin::engines::{Engine, SimState, rapier::RapierEngine, usd};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};

/// No input may make a parser ask for more than this in one allocation.
const ALLOCATION_CAP: usize = 1 << 30;

/// The system allocator, refusing any single allocation over the cap: the
/// process then aborts with "memory allocation of N bytes failed".
struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Inputs per target in the short pass (CI runs on 2 loaded cores).
const SHORT_PASS: usize = 1000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fuzz input: which seed, byte edits (position, value), an optional cut,
/// or, when `raw` is set, `bytes` alone.
type Input = (u8, Vec<(u32, u8)>, Option<u32>, bool, Vec<u8>);

/// The bytes an input stands for, given the target's valid seeds.
fn bytes_of(input: &Input, seeds: &[Vec<u8>]) -> Vec<u8> {
    let (seed, edits, cut, raw, bytes) = input;
    if *raw || seeds.is_empty() {
        return bytes.clone();
    }
    let mut out = seeds[*seed as usize % seeds.len()].clone();
    for (at, value) in edits {
        if !out.is_empty() {
            let at = *at as usize % out.len();
            out[at] = *value;
        }
    }
    // Inserted bytes reach states a same-length edit cannot.
    if !bytes.is_empty() && !out.is_empty() {
        let at = edits.first().map_or(0, |(at, _)| *at as usize % out.len());
        out.splice(at..at, bytes.iter().copied().take(64));
    }
    if let Some(cut) = cut {
        out.truncate(*cut as usize % (out.len() + 1));
    }
    out
}

#[test]
fn twin_definitions() {
    let yaml: Vec<Vec<u8>> = [
        "configs/twins/robot-arm.yaml",
        "configs/twins/conveyor.yaml",
    ]
    .iter()
    .map(|p| read(p))
    .collect();
    let json: Vec<Vec<u8>> = yaml
        .iter()
        .map(|y| {
            let value: serde_json::Value =
                serde_yaml_ng::from_slice(y).expect("sample definitions are YAML");
            serde_json::to_vec(&value).expect("as JSON")
        })
        .collect();
    check!()
        .with_iterations(SHORT_PASS)
        .with_type::<(bool, Input)>()
        .for_each(|(as_json, input)| {
            let (seeds, format) = if *as_json {
                (&json, Format::Json)
            } else {
                (&yaml, Format::Yaml)
            };
            let text = String::from_utf8_lossy(&bytes_of(input, seeds)).into_owned();
            let _ = TwinDefinition::parse(&text, format);
        });
}

/// A scene file written where the reader reads it: `load_scene` takes paths.
fn scene_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the scene");
    path
}

/// USD files reach the node only through its scene reader: a child process
/// with an address-space limit (`scenes.reader_memory_bytes`), so a file
/// that makes the USD library ask for terabytes (this target finds such
/// .usdc files within seconds) costs one child, and the node gets an error.
#[test]
fn usd_scenes() {
    let text: Vec<Vec<u8>> = ["robot-arm", "conveyor", "cartpole"]
        .iter()
        .map(|s| read(&format!("configs/scenes/{s}/scene.usda")))
        .collect();
    let binary = vec![read("tests/fixtures/usd/scene.usdc")];
    let dir = tempfile::tempdir().expect("tempdir");
    // A file that makes the USD library loop is killed after the timeout
    // (two minutes in the node); here after a few seconds, so the pass
    // stays short, and such files are kept to report.
    let reader =
        std::panic::AssertUnwindSafe(hanzo_twin::scene_reader::isolated_scene_reader_within(
            PathBuf::from(env!("CARGO_BIN_EXE_hanzo-twin")),
            512 << 20,
            std::time::Duration::from_secs(3),
        ));
    let slow = std::sync::atomic::AtomicUsize::new(0);
    let rt = std::panic::AssertUnwindSafe(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    );
    check!()
        .with_iterations(SHORT_PASS)
        .with_type::<(bool, Input)>()
        .for_each(|(as_binary, input)| {
            let (seeds, name) = if *as_binary {
                (&binary, "scene.usdc")
            } else {
                (&text, "scene.usda")
            };
            let bytes = bytes_of(input, seeds);
            let path = scene_file(dir.path(), name, &bytes);
            // Ok or an error; a child that died or ran out of time says so.
            if let Err(e) = rt.block_on(reader(path))
                && e.to_string().contains("reading took longer")
            {
                let n = slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let kept = std::env::temp_dir().join(format!("hanzo-twin-fuzz-slow-{n}-{name}"));
                let _ = std::fs::write(&kept, &bytes);
                eprintln!(
                    "usd_scenes: a scene the reader could not finish in time, kept at {}",
                    kept.display()
                );
            }
        });
}

/// A robot with a box, a cylinder, an STL and an OBJ mesh, and a revolute,
/// a prismatic and a fixed joint.
const ROBOT: &str = r#"<?xml version="1.0"?>
<robot name="fuzz">
  <link name="base">
    <inertial><mass value="2"/><inertia ixx="0.1" iyy="0.1" izz="0.1" ixy="0" ixz="0" iyz="0"/></inertial>
    <visual><geometry><box size="0.4 0.4 0.1"/></geometry></visual>
    <collision><geometry><box size="0.4 0.4 0.1"/></geometry></collision>
  </link>
  <link name="arm">
    <inertial><origin xyz="0 0 0.25"/><mass value="1"/><inertia ixx="0.02" iyy="0.02" izz="0.001" ixy="0" ixz="0" iyz="0"/></inertial>
    <collision><geometry><cylinder radius="0.05" length="0.5"/></geometry></collision>
    <visual><geometry><mesh filename="arm.stl" scale="1 1 1"/></geometry></visual>
  </link>
  <link name="slider">
    <inertial><mass value="0.5"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>
    <collision><geometry><mesh filename="slider.obj"/></geometry></collision>
  </link>
  <link name="tool"><visual><geometry><sphere radius="0.03"/></geometry></visual></link>
  <joint name="shoulder" type="revolute">
    <parent link="base"/><child link="arm"/><origin xyz="0 0 0.1" rpy="0 0 0"/>
    <axis xyz="0 1 0"/><limit lower="-1.5" upper="1.5" effort="50" velocity="2"/>
    <dynamics damping="0.1" friction="0.01"/>
  </joint>
  <joint name="rail" type="prismatic">
    <parent link="arm"/><child link="slider"/><origin xyz="0 0 0.5"/>
    <axis xyz="1 0 0"/><limit lower="-0.2" upper="0.2" effort="20" velocity="1"/>
  </joint>
  <joint name="mount" type="fixed"><parent link="slider"/><child link="tool"/></joint>
</robot>
"#;

const STL: &str = "solid arm
facet normal 0 0 1
 outer loop
  vertex 0 0 0
  vertex 0.1 0 0
  vertex 0 0.1 0.5
 endloop
endfacet
facet normal 0 1 0
 outer loop
  vertex 0 0 0
  vertex 0 0.1 0.5
  vertex 0.1 0.1 0
 endloop
endfacet
endsolid arm
";

const OBJ: &str = "o slider
v 0 0 0
v 0.1 0 0
v 0 0.1 0
v 0 0 0.1
f 1 2 3
f 1 2 4
f 1 3 4
f 2 3 4
";

#[test]
fn urdf_robots_and_meshes() {
    let seeds = [ROBOT, STL, OBJ].map(|s| vec![s.as_bytes().to_vec()]);
    let dir = tempfile::tempdir().expect("tempdir");
    check!()
        .with_iterations(SHORT_PASS)
        .with_type::<(u8, Input)>()
        .for_each(|(which, input)| {
            // One of the three files is fuzzed; the others stay valid.
            let which = *which as usize % 3;
            for (k, (name, valid)) in [("robot.urdf", ROBOT), ("arm.stl", STL), ("slider.obj", OBJ)]
                .iter()
                .enumerate()
            {
                let bytes = if k == which {
                    bytes_of(input, &seeds[k])
                } else {
                    valid.as_bytes().to_vec()
                };
                std::fs::write(dir.path().join(name), bytes).expect("write");
            }
            let options = hanzo_twin::engines::urdf::UrdfOptions::default();
            let _ =
                hanzo_twin::engines::urdf::urdf_to_usda(&dir.path().join("robot.urdf"), &options);
        });
}

#[test]
fn checkpoints() {
    let model =
        usd::load_scene(&repo().join("configs/scenes/robot-arm/scene.usda")).expect("scene");
    let config = hanzo_twin::engines::EngineConfig::default();
    let mut sim = RapierEngine.load_scene(&model, &config).expect("load");
    for _ in 0..30 {
        sim.step().expect("step");
    }
    let seeds = vec![sim.state().expect("state").to_bytes()];
    // Shared with the target's closure, which must be unwind-safe.
    let sim = std::sync::Mutex::new(sim);
    check!()
        .with_iterations(SHORT_PASS)
        .with_type::<Input>()
        .for_each(|input| {
            if let Ok(state) = SimState::from_bytes(&bytes_of(input, &seeds)) {
                // A checkpoint that decodes is restored into a live twin:
                // it is refused or taken, never a panic.
                let mut sim = sim.lock().unwrap_or_else(|p| p.into_inner());
                if sim.set_state(&state).is_ok() {
                    let _ = sim.step();
                }
            }
        });
}

#[test]
fn gym_tensor_bodies() {
    use hanzo_twin::api::gym_tensors;
    let info: hanzo_twin::actors::gym::GymEnvInfo = serde_json::from_value(serde_json::json!({
        "id": "gym-fuzz", "organization": "acme", "owner": "fuzz", "task": "cartpole-v0",
        "engine": "rapier3d", "num_envs": 4, "threads": 1, "autoreset_mode": "next_step",
        "observation_space": {"shape": [4], "low": [-10.0, -10.0, -10.0, -10.0], "high": [10.0, 10.0, 10.0, 10.0]},
        "action_space": {"shape": [1], "low": [-1.0], "high": [1.0]},
        "dt": 0.02, "max_episode_steps": 500, "info_keys": [], "node": "node-1",
        "observation_parts": [{"name": "observation", "size": 4}]
    }))
    .expect("a batch's info");
    let actions: Vec<u8> = [0.5f32, -0.5, 1.0, 0.0]
        .iter()
        .flat_map(|a| a.to_le_bytes())
        .collect();
    let ids: Vec<u8> = [0i64, 3].iter().flat_map(|i| i.to_le_bytes()).collect();
    let valid = safetensors::serialize(
        [
            (
                "actions",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 1], &actions)
                    .expect("view"),
            ),
            (
                "env_ids",
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &ids)
                    .expect("view"),
            ),
        ],
        None,
    )
    .expect("a valid body");
    let seeds = vec![valid];
    check!()
        .with_iterations(SHORT_PASS * 4)
        .with_type::<(u8, Input)>()
        .for_each(|(rows, input)| {
            let body = bytes_of(input, &seeds);
            if let Ok(tensors) = gym_tensors::parse(&body) {
                let _ = gym_tensors::env_ids(&tensors);
                let _ = gym_tensors::actions(&tensors, &info, *rows as usize % 8);
            }
        });
}

#[test]
fn scene_archives() {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("scene.usda", read("configs/scenes/robot-arm/scene.usda")),
        ("meshes/arm.stl", STL.as_bytes().to_vec()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .expect("append");
    }
    let seeds = vec![builder.into_inner().expect("tar")];
    check!()
        .with_iterations(SHORT_PASS)
        .with_type::<Input>()
        .for_each(|input| {
            let dir = tempfile::tempdir().expect("tempdir");
            let unpacked =
                hanzo_twin::scenes::SceneLibrary::unpack(&bytes_of(input, &seeds), dir.path());
            // Whatever it accepted lies inside the folder it was given.
            if let Ok(files) = unpacked {
                for (_, path) in files {
                    assert!(path.starts_with(dir.path()), "{} escaped", path.display());
                }
            }
        });
}

#[test]
fn bearer_tokens() {
    use hanzo_twin::api::auth::{AuthSettings, KeySource, TokenVerifier};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = AuthSettings {
        issuer: "https://iam.example.test".into(),
        audience: "hanzo-twin".into(),
        leeway_s: 30,
        organization_claim: "org".into(),
        roles_claim: "roles".into(),
    };
    let key = repo().join("tests/fixtures/auth/rsa-public.pem");
    let verifier = rt
        .block_on(TokenVerifier::new(
            settings,
            vec![KeySource::PublicKeyPem(key)],
        ))
        .expect("verifier");
    // A panic in a verification leaves nothing half-changed that a later
    // input could observe (the cache holds only verified tokens).
    let (rt, verifier) = (
        std::panic::AssertUnwindSafe(rt),
        std::panic::AssertUnwindSafe(verifier),
    );
    // A well-formed RS256 token's shape (its signature does not verify).
    let seeds = vec![
        b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZ2VudCIsIm9yZyI6ImFjbWUiLCJyb2xlcyI6WyJ0d2luLWFkbWluIl0sImV4cCI6NDEwMjQ0NDgwMCwiaXNzIjoiaHR0cHM6Ly9pYW0uZXhhbXBsZS50ZXN0IiwiYXVkIjoiaGFuem8tdHdpbiJ9.c2lnbmF0dXJl"
            .to_vec(),
    ];
    check!()
        .with_iterations(SHORT_PASS * 4)
        .with_type::<Input>()
        .for_each(|input| {
            let token = String::from_utf8_lossy(&bytes_of(input, &seeds)).into_owned();
            let header = format!("Bearer {token}");
            // Nothing here is signed by the key: every one is refused.
            assert!(rt.block_on(verifier.verify_header(Some(&header))).is_err());
        });
}

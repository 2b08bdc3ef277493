use hanzo_twin_engines::usd::load_scene;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/usd").join(name)
}

#[test]
fn dump() {
    let mut all = serde_json::Map::new();
    let mut files: Vec<PathBuf> = ["scene.usda", "scene.usdc", "composed.usda", "ref.usda", "simple_physics.usda"].iter().map(|f| fixture(f)).collect();
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenes/robot-arm/scene.usda"));
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenes/conveyor/scene.usda"));
    files.push(PathBuf::from("/tmp/usdx/stress.usda"));
    for f in files {
        let key = std::fs::canonicalize(&f).unwrap().display().to_string();
        match load_scene(&f) {
            Ok(s) => { all.insert(key, serde_json::to_value(&s).unwrap()); }
            Err(e) => { all.insert(key, serde_json::Value::String(e.to_string())); }
        }
    }
    std::fs::write("/tmp/rust_dump.json", serde_json::to_string_pretty(&all).unwrap()).unwrap();
}

#[test]
fn probe_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bad1.usda", "#usda 1.0\ndef Xform \"W\" {\n    double3 xformOp:translate = (0, 0\n}\n"),
        ("bad2.usda", "#usda 1.0\n(\n upAxis = \"Z\"\n)\ndef Xform \"W\" {\n  def Cube \"C\" {\n    double size = \n  }\n}\n"),
        ("bad3.usda", "not usd at all"),
        ("bad4.usda", "#usda 1.0\ndef Xform \"W\" (prepend references = @missing.usda@</X>) {}\n"),
        ("bad5.usdc", "PXR-USDC garbage garbage garbage garbage"),
    ];
    for (name, text) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        println!("{name}: {:?}", load_scene(&p).map(|_| ()));
    }
    let usdc = std::fs::read(fixture("scene.usdc")).unwrap();
    let mut panics = 0;
    let mut oks = 0;
    for cut in (0..usdc.len()).step_by(7) {
        let p = dir.path().join("cut.usdc");
        std::fs::write(&p, &usdc[..cut]).unwrap();
        match load_scene(&p) { Ok(_) => oks += 1, Err(e) => if e.to_string().contains("failed on this file") { panics += 1 } }
    }
    println!("cut done: panics {panics} oks {oks}");
    let mut flips = 0;
    for i in (0..usdc.len()).step_by(3) {
        let mut b = usdc.clone();
        b[i] ^= 0x5a;
        eprintln!("flip {i}");
        let p = dir.path().join("flip.usdc");
        std::fs::write(&p, &b).unwrap();
        if let Err(e) = load_scene(&p) { if e.to_string().contains("failed on this file") { flips += 1 } }
    }
    println!("len {} cut panics {panics} oks {oks} flip panics {flips}", usdc.len());
}

#[test]
fn probe_usda() {
    let dir = tempfile::tempdir().unwrap();
    let mut texts = vec![];
    for f in ["scene.usda", "simple_physics.usda"] { texts.push(std::fs::read_to_string(fixture(f)).unwrap()); }
    texts.push(std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenes/robot-arm/scene.usda")).unwrap());
    let (mut ok, mut err, mut pan) = (0, 0, 0);
    for t in &texts {
        let b = t.as_bytes();
        for cut in (0..b.len()).step_by(3) {
            let p = dir.path().join("c.usda");
            std::fs::write(&p, &b[..cut]).unwrap(); eprintln!("TRY cut {cut}");
            match load_scene(&p) { Ok(_) => ok += 1, Err(e) => if e.to_string().contains("failed on this file") { pan += 1; eprintln!("PANIC cut {cut}: {e}") } else { err += 1 } }
        }
        for i in (0..b.len()).step_by(2) {
            for rep in [b'"', b'(', b'}', b'-', b'9', b'@', b'<', b'['] {
                let mut v = b.to_vec(); v[i] = rep;
                let p = dir.path().join("f.usda");
                std::fs::write(&p, &v).unwrap(); eprintln!("TRY flip {i} {}", rep as char);
                match load_scene(&p) { Ok(_) => ok += 1, Err(e) => if e.to_string().contains("failed on this file") { pan += 1; eprintln!("PANIC flip {i} {}: {e}", rep as char) } else { err += 1 } }
            }
        }
    }
    println!("usda ok {ok} err {err} panics {pan}");
}

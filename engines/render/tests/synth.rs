//! Synthetic datasets: the spec's configuration as written, each frame's
//! seeded variation (the same bytes for the same seed however frames are
//! batched), placement inside the zone, and COCO annotations that the
//! reference COCO API (pycocotools) loads and scores perfectly against
//! themselves.

use hanzo_twin_render::RenderScene;
use hanzo_twin_render::synth::dataset::draw_batch;
use hanzo_twin_render::synth::vary::Varier;
use hanzo_twin_render::synth::{Label, SynthSpec};
use hanzo_twin_scene::SceneModel;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn conveyor() -> SceneModel {
    hanzo_twin_scene::usd::load_scene(&repo().join("configs/scenes/conveyor/scene.usda"))
        .expect("the conveyor scene")
}

/// The spec's example, verbatim under its heading.
const SPEC_EXAMPLE: &str = r#"
Synthetic Data Job Configuration:
  twin_id: "twin-warehouse-east"
  engine: omniverse                  # Ray tracing required
  output_dataset: "warehouse-defect-detection-v4"

  cameras:
    - path: "/World/Camera_Overhead"
      resolution: [1920, 1080]
      fov_deg: 60
    - path: "/World/Camera_Side"
      resolution: [1280, 720]
      fov_deg: 45

  labels:                            # What to annotate
    - bounding_box_2d                # 2D object detection
    - semantic_segmentation          # Per-pixel class labels
    - instance_segmentation          # Per-pixel instance IDs
    - depth                          # Depth map
    - surface_normal                 # Normal map
    - occlusion                      # Visibility percentage

  randomization:                     # Per-frame randomization
    object_placement:
      strategy: random_within_zone
      zone: "/World/ConveyorZone"
      count: { min: 5, max: 20 }
    materials:
      vary_roughness: { min: 0.1, max: 0.9 }
      vary_color_hue: { max_shift_deg: 15 }
    lighting:
      vary_intensity: { min: 0.3, max: 3.0 }
      vary_color_temperature: { min: 3000, max: 7000 }
      random_spot_lights: { count: 3 }
    camera:
      jitter_position_cm: 5.0
      jitter_rotation_deg: 3.0

  num_frames: 100_000
  frames_per_gpu: 500              # Batch size per GPU
  output_format: coco               # COCO JSON + images

  quality:
    samples_per_pixel: 256          # Ray tracing quality
    denoiser: optix                 # NVIDIA OptiX denoiser
"#;

fn spec_example() -> SynthSpec {
    let doc: std::collections::BTreeMap<String, SynthSpec> =
        serde_yaml_ng::from_str(SPEC_EXAMPLE).expect("the spec's configuration parses");
    doc.into_values().next().expect("one configuration")
}

#[test]
fn the_specs_configuration_parses_and_what_this_renderer_cannot_do_is_refused_by_name() {
    let spec = spec_example();
    assert_eq!(spec.num_frames, 100_000);
    assert_eq!(spec.frames_per_gpu, 500);
    assert_eq!(spec.labels.len(), 6);
    let err = spec.validate().expect_err("256 samples");
    assert!(
        err.to_string().starts_with("quality.samples_per_pixel:"),
        "{err}"
    );
    let mut spec = spec;
    spec.quality.samples_per_pixel = 4;
    let err = spec.validate().expect_err("optix");
    assert!(err.to_string().starts_with("quality.denoiser:"), "{err}");
    spec.quality.denoiser = None;
    spec.validate().expect("the rest is valid");
    // The scene must have what the spec names.
    let scene = conveyor();
    let render = RenderScene::new(&scene).expect("drawable");
    let poses: Vec<_> = scene.bodies.iter().map(|b| b.pose).collect();
    let err = Varier::new(&spec, &scene, &render, poses)
        .err()
        .expect("no such camera");
    assert!(err.to_string().starts_with("cameras[0].path:"), "{err}");
}

/// The spec's example pointed at the conveyor: its belt is the zone, its
/// camera both cameras (at two sizes), six frames.
fn conveyor_spec(seed: u64) -> SynthSpec {
    let mut spec = spec_example();
    spec.twin_id = "conveyor-line".into();
    spec.output_dataset = "boxes-on-a-belt".into();
    spec.cameras[0].path = "/World/Camera".into();
    spec.cameras[0].resolution = [96, 72];
    spec.cameras[1].path = "/World/Camera".into();
    spec.cameras[1].resolution = [64, 48];
    spec.randomization
        .object_placement
        .as_mut()
        .expect("placement")
        .zone = "/World/Conveyor".into();
    spec.randomization
        .object_placement
        .as_mut()
        .expect("placement")
        .count
        .min = 2;
    spec.num_frames = 6;
    spec.frames_per_gpu = 3;
    spec.quality.samples_per_pixel = 1;
    spec.quality.denoiser = None;
    spec.seed = seed;
    spec
}

#[test]
fn a_frame_is_the_same_whatever_batch_draws_it_and_the_seed_changes_it() {
    let scene = conveyor();
    let render = RenderScene::new(&scene).expect("drawable");
    let poses: Vec<_> = scene.bodies.iter().map(|b| b.pose).collect();
    let spec = conveyor_spec(7);
    let varier = Varier::new(&spec, &scene, &render, poses.clone()).expect("valid");
    let whole = draw_batch(&spec, &varier, &render, 0..6).expect("drawn");
    let tail = draw_batch(&spec, &varier, &render, 3..6).expect("drawn");
    for (path, bytes) in &tail.files {
        let same = whole
            .files
            .iter()
            .find(|(p, _)| p == path)
            .expect("the same file");
        assert_eq!(&same.1, bytes, "{path} differs between batches");
    }
    let other_spec = conveyor_spec(8);
    let other = Varier::new(&other_spec, &scene, &render, poses).expect("valid");
    let reseeded = draw_batch(&other_spec, &other, &render, 3..6).expect("drawn");
    assert_ne!(reseeded.files, tail.files, "another seed, other frames");

    // Placed boxes rest on the belt's top, inside its edges; the rest are left out.
    let belt = scene.body_index("/World/Conveyor").expect("belt");
    let (lo, hi) = render
        .bounds(belt, &scene.bodies[belt].pose)
        .expect("belt bounds");
    for frame in 0..6 {
        let v = varier.frame(frame);
        let boxes: Vec<usize> = (0..scene.bodies.len())
            .filter(|&b| scene.bodies[b].path.starts_with("/World/Boxes/"))
            .collect();
        let shown: Vec<usize> = boxes
            .iter()
            .copied()
            .filter(|b| !v.options.hidden.contains(b))
            .collect();
        assert!(
            (2..=6).contains(&shown.len()),
            "frame {frame}: {} boxes",
            shown.len()
        );
        for b in shown {
            let (blo, bhi) = render.bounds(b, &v.poses[b]).expect("box bounds");
            assert!(
                blo[0] >= lo[0] - 1e-9 && bhi[0] <= hi[0] + 1e-9,
                "frame {frame}: x {blo:?}..{bhi:?}"
            );
            assert!(
                blo[1] >= lo[1] - 1e-9 && bhi[1] <= hi[1] + 1e-9,
                "frame {frame}: y"
            );
            assert!(
                (blo[2] - hi[2] - 1e-3).abs() < 1e-6,
                "frame {frame}: resting {} vs top {}",
                blo[2],
                hi[2]
            );
        }
    }
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HANZO_TWIN_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv/bin/python");
    let ok = venv.exists()
        && std::process::Command::new(&venv)
            .args(["-c", "import pycocotools"])
            .status()
            .is_ok_and(|s| s.success());
    ok.then_some(venv)
}

#[test]
fn coco_annotations_load_and_score_perfectly_in_pycocotools() {
    let Some(python) = python() else {
        eprintln!(
            "\n*** SKIPPED coco_annotations_load_and_score_perfectly_in_pycocotools: no Python with pycocotools. \
             Run scripts/test.sh, which installs it into ./.venv. ***\n"
        );
        return;
    };
    let scene = conveyor();
    let render = RenderScene::new(&scene).expect("drawable");
    let poses: Vec<_> = scene.bodies.iter().map(|b| b.pose).collect();
    let spec = conveyor_spec(3);
    assert!(spec.wants(Label::InstanceSegmentation));
    let varier = Varier::new(&spec, &scene, &render, poses).expect("valid");
    let dir = tempfile::tempdir().expect("temp dir");
    // Two batches joined, as a job does.
    let mut coco = hanzo_twin_render::synth::coco::CocoBuilder::new(
        spec.output_dataset.clone(),
        render.classes(),
    );
    for range in [0..3, 3..6] {
        let batch = draw_batch(&spec, &varier, &render, range).expect("drawn");
        for (path, bytes) in batch.files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        coco.merge(batch.coco);
    }
    let file = coco.finish();
    assert_eq!(file.images.len(), 12);
    assert!(
        file.annotations.len() >= 12,
        "{} annotations",
        file.annotations.len()
    );
    std::fs::write(
        dir.path().join("annotations.json"),
        serde_json::to_vec(&file).expect("json"),
    )
    .expect("write");
    let out = std::process::Command::new(&python)
        .arg(repo().join("tests/peers/coco_check.py"))
        .arg(dir.path())
        .output()
        .expect("run the COCO peer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pycocotools talks on stdout; the summary is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("no JSON summary ({e}): {stdout}"));
    assert_eq!(summary["images"], 12, "{summary}");
    assert_eq!(summary["annotations"], file.annotations.len(), "{summary}");
    assert_eq!(summary["area_mismatches"], 0, "{summary}");
    assert_eq!(summary["mask_mismatches"], 0, "{summary}");
    assert_eq!(summary["missing_files"], 0, "{summary}");
    assert!(
        summary["categories"]
            .as_array()
            .expect("names")
            .iter()
            .any(|c| c == "box"),
        "{summary}"
    );
    for kind in ["ap_bbox", "ap_segm"] {
        let ap = summary[kind].as_f64().expect("AP");
        assert!((ap - 1.0).abs() < 1e-9, "{kind} {ap}: {summary}");
    }
}

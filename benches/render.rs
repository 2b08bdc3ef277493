//! Frames a second of the CPU renderer on the conveyor scene, at 640×480
//! and 1920×1080: labels only (depth, normals, instance and semantic ids,
//! boxes, occlusion), then with shaded colour, then with every image
//! encoded as PNG. The baseline, in the same run, is rapier3d's own ray
//! cast (`Simulation::render`: nearest hit's depth and body id, nothing
//! else), and each figure is given as a ratio to it.
//!
//!   cargo bench --bench render
//!
//! Run as a test (`cargo test --benches`), it draws one small frame of each.

mod common;

use hanzo_twin::engines::{EngineConfig, EngineKind, EngineRegistry, RenderParams, usd};
use hanzo_twin_render::encode::{Output, encode_png};
use hanzo_twin_render::{CameraView, RenderOptions, RenderScene};
use std::time::{Duration, Instant};

/// Frames a second of `draw` over at least `budget` and `min` frames.
fn rate(budget: Duration, min: u32, mut draw: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut frames = 0u32;
    while frames < min || t0.elapsed() < budget {
        draw();
        frames += 1;
    }
    f64::from(frames) / t0.elapsed().as_secs_f64()
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let (budget, min, sizes): (_, _, &[(u32, u32)]) = if benchmarking {
        (Duration::from_secs(3), 3, &[(640, 480), (1920, 1080)])
    } else {
        (Duration::ZERO, 1, &[(64, 48)])
    };
    let path = common::repo().join("configs/scenes/conveyor/scene.usda");
    let scene = usd::load_scene(&path).expect("the conveyor scene");
    let sim = EngineRegistry::with_builtin()
        .get(EngineKind::Rapier3d)
        .expect("rapier3d")
        .load_scene(&scene, &EngineConfig::default())
        .expect("loads");
    let renderer = RenderScene::new(&scene).expect("drawable");
    let poses: Vec<_> = scene.bodies.iter().map(|b| b.pose).collect();
    let camera = &scene.cameras[0];
    println!(
        "render: conveyor scene, {} threads; frames/s (ratio to rapier3d's depth+id ray cast)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for &(w, h) in sizes {
        let params = RenderParams {
            width: w,
            height: h,
            ..RenderParams::default()
        };
        let baseline = rate(budget, min, || {
            std::hint::black_box(sim.render(&camera.path, &params).expect("render"));
        });
        let view = CameraView::from_scene(&scene, &camera.path, w, h, None).expect("camera");
        let labels = RenderOptions {
            rgb: false,
            ..RenderOptions::default()
        };
        let labels_only = rate(budget, min, || {
            std::hint::black_box(renderer.render(&poses, &view, &labels).expect("render"));
        });
        let full = RenderOptions::default();
        let with_rgb = rate(budget, min, || {
            std::hint::black_box(renderer.render(&poses, &view, &full).expect("render"));
        });
        let encoded = rate(budget, min, || {
            let frame = renderer.render(&poses, &view, &full).expect("render");
            for output in Output::ALL {
                std::hint::black_box(encode_png(&frame, output).expect("png"));
            }
        });
        println!("  {w}×{h}");
        println!("    rapier3d ray cast (depth, id)   {baseline:8.1}   1.00");
        for (name, fps) in [
            ("labels (all six)", labels_only),
            ("labels + rgb", with_rgb),
            ("labels + rgb + 5 PNGs", encoded),
        ] {
            println!("    {name:<32}{fps:8.1}   {:.2}", fps / baseline);
        }
    }
}

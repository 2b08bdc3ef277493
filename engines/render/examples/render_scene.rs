//! Renders a scene file as authored, through one of its cameras, into PNG
//! files: `render_scene <scene.usda> <camera path> <out prefix> [WxH] [spp]`
//! writes `<prefix>-rgb.png`, `-depth.png`, `-normal.png`, `-instance.png`,
//! `-semantic.png` and `-labels.json`. The docs' images come from here.

use hanzo_twin_render::encode::{Output, encode_png};
use hanzo_twin_render::{CameraView, RenderOptions, RenderScene};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [scene_path, camera, prefix, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: render_scene <scene.usda> <camera path> <out prefix> [WxH] [spp]".into(),
        );
    };
    let (width, height) = match rest.first() {
        Some(size) => {
            let (w, h) = size
                .split_once('x')
                .ok_or("size must be WxH, e.g. 640x480")?;
            (w.parse()?, h.parse()?)
        }
        None => (640, 480),
    };
    let spp = rest.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let scene = hanzo_twin_scene::scene::read_scene_file(std::path::Path::new(scene_path))?;
    for note in &scene.look.notes {
        eprintln!("note: {note}");
    }
    let renderer = RenderScene::new(&scene)?;
    let view = CameraView::from_scene(&scene, camera, width, height, None)?;
    let poses: Vec<_> = scene.bodies.iter().map(|b| b.pose).collect();
    let started = std::time::Instant::now();
    let frame = renderer.render(
        &poses,
        &view,
        &RenderOptions {
            samples_per_pixel: spp,
            ..RenderOptions::default()
        },
    )?;
    eprintln!(
        "rendered {width}×{height} at {spp} samples a pixel in {:?}",
        started.elapsed()
    );
    for output in Output::ALL {
        std::fs::write(
            format!("{prefix}-{}.png", output.name()),
            encode_png(&frame, output)?,
        )?;
    }
    std::fs::write(
        format!("{prefix}-labels.json"),
        serde_json::to_string_pretty(&frame.instances)?,
    )?;
    Ok(())
}

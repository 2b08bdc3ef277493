//! A dataset's files: per frame and camera the colour image and the label
//! images the spec asks for, and the COCO annotations of the frames drawn.
//!
//! ```text
//! rgb/<camera>/<frame>.png          8-bit sRGB
//! depth/<camera>/<frame>.png        16-bit, millimetres (depth_scale_m in the PNG and manifest)
//! normal/<camera>/<frame>.png       16-bit world-space normals
//! instance/<camera>/<frame>.png     16-bit body ids (instance_segmentation)
//! semantic/<camera>/<frame>.png     16-bit class ids (semantic_segmentation)
//! annotations.json                  COCO: boxes, RLE masks, visible fraction
//! manifest.json                     the spec, seed, scene, renderer, counts
//! ```
//!
//! `<camera>` is `cam<i>-<name>` (the spec's camera `i`, its prim's name);
//! `<frame>` is the frame number, eight digits.

use super::coco::{CocoBuilder, CocoFile, CocoImage};
use super::vary::Varier;
use super::{Label, SynthSpec};
use crate::encode::{Output, encode_png};
use crate::{RenderError, RenderScene};

/// What a batch of frames adds to a dataset.
pub struct Batch {
    /// Path in the dataset → file.
    pub files: Vec<(String, Vec<u8>)>,
    /// The batch's images and annotations, to join into `annotations.json`.
    pub coco: CocoFile,
}

/// The folder name of the spec's camera `i`.
pub fn camera_dir(spec: &SynthSpec, i: usize) -> String {
    let name = spec.cameras[i]
        .path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("camera");
    format!("cam{i}-{name}")
}

/// The images a spec's labels ask for, besides colour.
pub fn outputs(spec: &SynthSpec) -> Vec<Output> {
    let mut out = vec![Output::Rgb];
    for (label, output) in [
        (Label::Depth, Output::Depth),
        (Label::SurfaceNormal, Output::Normal),
        (Label::InstanceSegmentation, Output::Instance),
        (Label::SemanticSegmentation, Output::Semantic),
    ] {
        if spec.wants(label) {
            out.push(output);
        }
    }
    out
}

/// Draws `frames` (each through every camera) and encodes their files.
pub fn draw_batch(
    spec: &SynthSpec,
    varier: &Varier<'_>,
    render: &RenderScene,
    frames: std::ops::Range<u64>,
) -> Result<Batch, RenderError> {
    let outputs = outputs(spec);
    let mut files = Vec::new();
    let mut coco = CocoBuilder::new(spec.output_dataset.clone(), render.classes());
    let cameras = spec.cameras.len() as u64;
    for frame in frames {
        let variation = varier.frame(frame);
        for (i, view) in variation.views.iter().enumerate() {
            let drawn = render.render(&variation.poses, view, &variation.options)?;
            let dir = camera_dir(spec, i);
            for &output in &outputs {
                files.push((
                    format!("{}/{dir}/{frame:08}.png", output.name()),
                    encode_png(&drawn, output)?,
                ));
            }
            coco.add(
                CocoImage {
                    id: frame * cameras + i as u64 + 1,
                    file_name: format!("rgb/{dir}/{frame:08}.png"),
                    width: drawn.width,
                    height: drawn.height,
                    frame,
                    camera: spec.cameras[i].path.clone(),
                },
                &drawn,
            );
        }
    }
    Ok(Batch {
        files,
        coco: coco.finish(),
    })
}

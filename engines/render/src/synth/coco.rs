//! COCO annotation files: images, one annotation per visible labelled
//! instance (tight box, area, RLE mask), and the categories. The reference
//! COCO API (pycocotools) loads and evaluates what this writes
//! (`engines/render/tests/synth.rs`).

use serde::{Deserialize, Serialize};

use crate::Frame;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoFile {
    pub info: CocoInfo,
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoInfo {
    pub description: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
    /// The dataset's frame and the camera that saw it.
    pub frame: u64,
    pub camera: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// Tight box around the visible pixels: `[x, y, width, height]`.
    pub bbox: [f64; 4],
    /// Visible pixels.
    pub area: f64,
    pub segmentation: Rle,
    pub iscrowd: u8,
    /// Around the whole instance, hidden parts included (`[x, y, w, h]`).
    pub bbox_loose: [f64; 4],
    /// Visible over projected pixels: the spec's occlusion label.
    pub visible_fraction: f64,
    /// The body's prim path.
    pub instance: String,
}

/// COCO's uncompressed run-length mask: runs of 0s and 1s alternating,
/// starting with 0s, down the columns (column-major), over `size` = `[height, width]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rle {
    pub size: [u32; 2],
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
    pub supercategory: String,
}

fn xywh(b: [u32; 4]) -> [f64; 4] {
    [
        f64::from(b[0]),
        f64::from(b[1]),
        f64::from(b[2] - b[0] + 1),
        f64::from(b[3] - b[1] + 1),
    ]
}

/// The run-length mask of the pixels of `frame` whose instance is `id`.
pub fn rle(frame: &Frame, id: u32) -> Rle {
    let (w, h) = (frame.width, frame.height);
    let mut counts = Vec::new();
    let mut current = false;
    let mut run = 0u64;
    for x in 0..w {
        for y in 0..h {
            let inside = frame.instance[frame.index(x, y)] == id;
            if inside != current {
                counts.push(run);
                run = 0;
                current = inside;
            }
            run += 1;
        }
    }
    counts.push(run);
    Rle {
        size: [h, w],
        counts,
    }
}

/// The annotation file, built image by image.
pub struct CocoBuilder {
    file: CocoFile,
}

impl CocoBuilder {
    /// `classes`: the scene's class names (category `i + 1` is `classes[i]`,
    /// the renderer's semantic ids).
    pub fn new(description: String, classes: &[String]) -> CocoBuilder {
        CocoBuilder {
            file: CocoFile {
                info: CocoInfo {
                    description,
                    version: "1.0".into(),
                },
                images: Vec::new(),
                annotations: Vec::new(),
                categories: classes
                    .iter()
                    .enumerate()
                    .map(|(i, name)| CocoCategory {
                        id: i as u64 + 1,
                        name: name.clone(),
                        supercategory: "object".into(),
                    })
                    .collect(),
            },
        }
    }

    /// Adds an image and an annotation for each labelled instance visible in
    /// it; ids are given by the caller so that batches drawn apart join up
    /// (`image_id` unique per image; annotation ids `image_id · 65536 + k`).
    pub fn add(&mut self, image: CocoImage, frame: &Frame) {
        let image_id = image.id;
        let mut k = 0;
        for label in &frame.instances {
            let (Some(tight), Some(loose)) = (label.bbox_tight, label.bbox_loose) else {
                continue;
            };
            if label.class_id == 0 || label.visible_pixels == 0 {
                continue;
            }
            k += 1;
            self.file.annotations.push(CocoAnnotation {
                id: image_id * 65536 + k,
                image_id,
                category_id: u64::from(label.class_id),
                bbox: xywh(tight),
                area: label.visible_pixels as f64,
                segmentation: rle(frame, label.id),
                iscrowd: 0,
                bbox_loose: xywh(loose),
                visible_fraction: label.visible_fraction,
                instance: label.path.clone(),
            });
        }
        self.file.images.push(image);
    }

    /// Joins another builder's images and annotations (a batch drawn apart).
    pub fn merge(&mut self, other: CocoFile) {
        self.file.images.extend(other.images);
        self.file.annotations.extend(other.annotations);
    }

    pub fn finish(mut self) -> CocoFile {
        self.file.images.sort_by_key(|i| i.id);
        self.file.annotations.sort_by_key(|a| a.id);
        self.file
    }
}

//! Frames as PNG files. Colour is 8-bit sRGB; depth, normals and ids are
//! 16-bit, and each file says in a text chunk how to read its values back.

use crate::RenderError;
use crate::frame::Frame;

/// The images a frame can be written as.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    Rgb,
    Depth,
    Normal,
    Instance,
    Semantic,
}

impl Output {
    pub const ALL: [Output; 5] = [
        Output::Rgb,
        Output::Depth,
        Output::Normal,
        Output::Instance,
        Output::Semantic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Output::Rgb => "rgb",
            Output::Depth => "depth",
            Output::Normal => "normal",
            Output::Instance => "instance",
            Output::Semantic => "semantic",
        }
    }

    /// Reads a name as [`Self::name`] writes it (`instance_segmentation`,
    /// `semantic_segmentation` and `surface_normal`, the spec's label names,
    /// too).
    pub fn parse(name: &str) -> Option<Output> {
        Some(match name {
            "rgb" => Output::Rgb,
            "depth" => Output::Depth,
            "normal" | "normals" | "surface_normal" => Output::Normal,
            "instance" | "instance_segmentation" => Output::Instance,
            "semantic" | "semantic_segmentation" => Output::Semantic,
            _ => return None,
        })
    }
}

/// Depth is stored in steps of this many metres (1 mm: up to 65.534 m).
pub const DEPTH_SCALE_M: f64 = 0.001;

fn png(
    (width, height): (u32, u32),
    colour: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    text: &[(&str, String)],
) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    let failed = |e: png::EncodingError| RenderError::invalid("png", e.to_string());
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(colour);
        encoder.set_depth(depth);
        for (key, value) in text {
            encoder
                .add_text_chunk(key.to_string(), value.clone())
                .map_err(failed)?;
        }
        let mut writer = encoder.write_header().map_err(failed)?;
        writer.write_image_data(data).map_err(failed)?;
    }
    Ok(out)
}

fn u16s(values: impl Iterator<Item = u16>) -> Vec<u8> {
    values.flat_map(u16::to_be_bytes).collect()
}

/// A 16-bit id image, with its legend (`id=name` lines) under `key`.
fn id_image<'a>(
    frame: &Frame,
    ids: impl Iterator<Item = u16>,
    key: &str,
    legend: impl Iterator<Item = (u64, &'a str)>,
) -> Result<Vec<u8>, RenderError> {
    let legend = legend
        .map(|(id, name)| format!("{id}={name}"))
        .collect::<Vec<_>>()
        .join("\n");
    png(
        (frame.width, frame.height),
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &u16s(ids),
        &[(key, legend)],
    )
}

/// An 8-bit sRGB picture (`height` rows of `width` pixels, three bytes
/// each) as a PNG file.
pub fn encode_rgb_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, RenderError> {
    png(
        (width, height),
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        rgb,
        &[],
    )
}

/// The frame's `output` as a PNG file, or an error when the frame lacks it
/// (colour not rendered) or ids overflow 16 bits.
pub fn encode_png(frame: &Frame, output: Output) -> Result<Vec<u8>, RenderError> {
    match output {
        Output::Rgb => {
            let rgb = frame.rgb.as_deref().ok_or_else(|| {
                RenderError::invalid("outputs", "rgb was not rendered for this frame")
            })?;
            encode_rgb_png(frame.width, frame.height, rgb)
        }
        Output::Depth => {
            let data = u16s(frame.depth.iter().map(|&d| {
                if d.is_finite() {
                    (f64::from(d) / DEPTH_SCALE_M).round().clamp(1.0, 65535.0) as u16
                } else {
                    0
                }
            }));
            png(
                (frame.width, frame.height),
                png::ColorType::Grayscale,
                png::BitDepth::Sixteen,
                &data,
                &[
                    ("depth_scale_m", DEPTH_SCALE_M.to_string()),
                    (
                        "depth_meaning",
                        "metres from the image plane = value * depth_scale_m; 0 = nothing within the far plane".to_string(),
                    ),
                ],
            )
        }
        Output::Normal => {
            let data = u16s(frame.normal.iter().flat_map(|n| {
                n.map(|c| {
                    ((f64::from(c) + 1.0) / 2.0 * 65535.0)
                        .round()
                        .clamp(0.0, 65535.0) as u16
                })
            }));
            png(
                (frame.width, frame.height),
                png::ColorType::Rgb,
                png::BitDepth::Sixteen,
                &data,
                &[(
                    "normal_meaning",
                    "world-space unit normal = value / 65535 * 2 - 1 per channel (x, y, z); the zero vector where nothing is hit".to_string(),
                )],
            )
        }
        Output::Instance => {
            if frame.instance.iter().any(|&id| id > u32::from(u16::MAX)) {
                return Err(RenderError::invalid(
                    "outputs",
                    "instance ids above 65535 do not fit a 16-bit PNG",
                ));
            }
            let ids = frame.instance.iter().map(|&id| id as u16);
            let legend = frame
                .instances
                .iter()
                .map(|l| (u64::from(l.id), l.path.as_str()));
            id_image(frame, ids, "instances", legend)
        }
        Output::Semantic => {
            let legend = (1..).zip(frame.classes.iter().map(String::as_str));
            id_image(frame, frame.semantic.iter().copied(), "classes", legend)
        }
    }
}

//! A twin's recorded run: body poses sampled while it steps, exportable as a
//! USD stage with time samples (see [`crate::usd::export`]).

use serde::{Deserialize, Serialize};

/// The poses of every body at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedFrame {
    pub step: u64,
    /// Simulated seconds.
    pub time: f64,
    /// One per entry of [`Recording::bodies`]: `[x, y, z]` and `[x, y, z, w]`.
    pub positions: Vec<[f64; 3]>,
    pub orientations: Vec<[f64; 4]>,
}

/// Frames of a run, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// Steps per simulated second: a step number is a USD time code at this rate.
    pub step_hz: f64,
    /// Prim paths of the recorded bodies.
    pub bodies: Vec<String>,
    pub frames: Vec<RecordedFrame>,
}

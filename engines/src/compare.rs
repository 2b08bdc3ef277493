//! Cross-engine validation: one scene and one command sequence on several
//! engines, and how far each engine's trajectory drifts from the first's, per
//! body and per joint.

use crate::{Engine, EngineConfig, EngineError, EngineKind, JointCommand, Observation, SceneModel};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Most steps one comparison may run per engine.
pub const MAX_STEPS: u64 = 1_000_000;

/// A command that takes effect before step `step` (0 is before the first).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedCommand {
    pub step: u64,
    pub joint: String,
    pub command: JointCommand,
}

/// How a comparison runs.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRun {
    pub steps: u64,
    /// Compare every this many steps (1: every step).
    pub sample_every: u64,
    pub commands: Vec<TimedCommand>,
    /// Position divergence (metres) beyond which a body counts as diverged.
    pub position_tolerance_m: Option<f64>,
    /// Joint divergence (radians or metres) beyond which a joint counts as diverged.
    pub joint_tolerance: Option<f64>,
}

/// The result: each engine's run, and its divergence from the reference (the
/// first engine).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub reference: EngineKind,
    pub steps: u64,
    pub step_dt: f64,
    pub samples: u64,
    pub runs: Vec<EngineRun>,
    pub bodies: Vec<BodyDivergence>,
    pub joints: Vec<JointDivergence>,
    /// Whether every body and joint stayed within the given tolerances (`None`
    /// when no tolerance was given).
    pub within_tolerance: Option<bool>,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineRun {
    pub engine: EngineKind,
    /// Wall-clock seconds the engine took for the steps.
    pub seconds: f64,
    pub steps_per_second: f64,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyDivergence {
    pub path: String,
    pub engine: EngineKind,
    pub max_position_error_m: f64,
    pub rms_position_error_m: f64,
    pub final_position_error_m: f64,
    pub max_orientation_error_rad: f64,
    /// First sampled step at which the position error passed the tolerance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceeded_at_step: Option<u64>,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointDivergence {
    pub path: String,
    pub engine: EngineKind,
    pub max_error: f64,
    pub rms_error: f64,
    pub final_error: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceeded_at_step: Option<u64>,
}

/// Errors name the request field they come from.
fn invalid(field: impl Into<String>, message: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Runs `scene` on every engine of `engines` (at least two) with the same
/// config and commands, and reports how far each drifts from the first.
pub fn compare(
    scene: &SceneModel,
    engines: &[Arc<dyn Engine>],
    config: &EngineConfig,
    run: &CompareRun,
) -> Result<CompareReport, EngineError> {
    compare_watched(scene, engines, config, run, &mut |_, _| true)?
        .ok_or_else(|| invalid("steps", "the comparison was stopped"))
}

/// [`compare`], telling `watch` each step done (the engine's index, the
/// step) before the next; when `watch` answers false the run stops and the
/// answer is `None`.
pub fn compare_watched(
    scene: &SceneModel,
    engines: &[Arc<dyn Engine>],
    config: &EngineConfig,
    run: &CompareRun,
    watch: &mut dyn FnMut(usize, u64) -> bool,
) -> Result<Option<CompareReport>, EngineError> {
    if engines.len() < 2 {
        return Err(invalid("engines", "name at least two engines to compare"));
    }
    if run.steps == 0 || run.steps > MAX_STEPS {
        return Err(invalid("steps", format!("must be from 1 to {MAX_STEPS}")));
    }
    if run.sample_every == 0 {
        return Err(invalid("sample_every", "must be at least 1"));
    }
    for (name, tolerance) in [
        ("position_tolerance_m", run.position_tolerance_m),
        ("joint_tolerance", run.joint_tolerance),
    ] {
        if tolerance.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
            return Err(invalid(name, "must be a non-negative number"));
        }
    }
    // Command indices in step order (stable: same-step commands keep their order).
    let mut by_step: Vec<usize> = (0..run.commands.len()).collect();
    by_step.sort_by_key(|&i| run.commands[i].step);
    for (i, c) in run.commands.iter().enumerate() {
        if c.step >= run.steps {
            return Err(invalid(
                format!("commands[{i}].step"),
                format!("{} is past the last step ({})", c.step, run.steps - 1),
            ));
        }
    }

    // Each engine's observations at the sampled steps.
    let mut trajectories: Vec<Vec<Observation>> = Vec::new();
    let mut runs = Vec::new();
    for (e, engine) in engines.iter().enumerate() {
        let field = format!("engines[{e}]");
        let kind = engine.kind();
        let mut sim = engine.load_scene(scene, config).map_err(|err| match err {
            EngineError::Invalid { .. } => err,
            other => invalid(
                field.clone(),
                format!("{kind} cannot load the scene: {other}"),
            ),
        })?;
        let mut samples = Vec::new();
        let mut next = by_step.iter().peekable();
        let started = std::time::Instant::now();
        for step in 0..run.steps {
            while let Some(i) = next.next_if(|&&i| run.commands[i].step == step) {
                let c = &run.commands[*i];
                sim.set_joint_command(&c.joint, c.command)
                    .map_err(|err| invalid(format!("commands[{i}]"), format!("{kind}: {err}")))?;
            }
            sim.step()
                .map_err(|err| invalid(field.clone(), format!("{kind} at step {step}: {err}")))?;
            if (step + 1) % run.sample_every == 0 || step + 1 == run.steps {
                samples.push(sim.observation("/")?);
            }
            if !watch(e, step) {
                return Ok(None);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        runs.push(EngineRun {
            engine: kind,
            seconds,
            steps_per_second: run.steps as f64 / seconds.max(1e-9),
        });
        trajectories.push(samples);
    }

    let reference = &trajectories[0];
    let mut bodies = Vec::new();
    let mut joints = Vec::new();
    for (e, trajectory) in trajectories.iter().enumerate().skip(1) {
        let engine = engines[e].kind();
        let mut body_stats: HashMap<&str, Stats> = HashMap::new();
        let mut joint_stats: HashMap<&str, Stats> = HashMap::new();
        let mut body_angle: HashMap<&str, f64> = HashMap::new();
        for (a, b) in reference.iter().zip(trajectory) {
            for rb in &a.bodies {
                let Some(ob) = b.bodies.iter().find(|x| x.path == rb.path) else {
                    continue;
                };
                let d = distance(rb.position, ob.position);
                body_stats
                    .entry(&rb.path)
                    .or_default()
                    .add(d, a.step, run.position_tolerance_m);
                let angle = angle_between(rb.orientation, ob.orientation);
                let worst = body_angle.entry(&rb.path).or_default();
                *worst = worst.max(angle);
            }
            for rj in &a.joints {
                let Some(oj) = b.joints.iter().find(|x| x.path == rj.path) else {
                    continue;
                };
                joint_stats.entry(&rj.path).or_default().add(
                    (rj.position - oj.position).abs(),
                    a.step,
                    run.joint_tolerance,
                );
            }
        }
        for rb in reference
            .first()
            .map(|o| o.bodies.as_slice())
            .unwrap_or(&[])
        {
            if let Some(s) = body_stats.get(rb.path.as_str()) {
                bodies.push(BodyDivergence {
                    path: rb.path.clone(),
                    engine,
                    max_position_error_m: s.max,
                    rms_position_error_m: s.rms(),
                    final_position_error_m: s.last,
                    max_orientation_error_rad: body_angle
                        .get(rb.path.as_str())
                        .copied()
                        .unwrap_or_default(),
                    exceeded_at_step: s.exceeded_at,
                });
            }
        }
        for rj in reference
            .first()
            .map(|o| o.joints.as_slice())
            .unwrap_or(&[])
        {
            if let Some(s) = joint_stats.get(rj.path.as_str()) {
                joints.push(JointDivergence {
                    path: rj.path.clone(),
                    engine,
                    max_error: s.max,
                    rms_error: s.rms(),
                    final_error: s.last,
                    exceeded_at_step: s.exceeded_at,
                });
            }
        }
    }
    let tolerances = run.position_tolerance_m.is_some() || run.joint_tolerance.is_some();
    let within_tolerance = tolerances.then(|| {
        bodies.iter().all(|b| b.exceeded_at_step.is_none())
            && joints.iter().all(|j| j.exceeded_at_step.is_none())
    });
    Ok(Some(CompareReport {
        reference: engines[0].kind(),
        steps: run.steps,
        step_dt: config.dt(),
        samples: reference.len() as u64,
        runs,
        bodies,
        joints,
        within_tolerance,
    }))
}

#[derive(Default)]
struct Stats {
    max: f64,
    sum_sq: f64,
    n: u64,
    last: f64,
    exceeded_at: Option<u64>,
}

impl Stats {
    fn add(&mut self, error: f64, step: u64, tolerance: Option<f64>) {
        self.max = self.max.max(error);
        self.sum_sq += error * error;
        self.n += 1;
        self.last = error;
        if self.exceeded_at.is_none() && tolerance.is_some_and(|t| error > t) {
            self.exceeded_at = Some(step);
        }
    }

    fn rms(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.sum_sq / self.n as f64).sqrt()
        }
    }
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The rotation angle between two unit quaternions.
fn angle_between(a: [f64; 4], b: [f64; 4]) -> f64 {
    let dot = (a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]).abs();
    2.0 * dot.min(1.0).acos()
}

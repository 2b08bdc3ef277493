//! The spec's `auto_recalibrate`: Nelder-Mead over the drift window's
//! prediction/reality pairs.
//!
//! While recalibration is configured, the twin keeps a tape of what
//! happened to its simulation since a copy taken at the start of the window
//! ([`Recorder`]): every step, every joint command and every measured
//! reading, in order. A recalibration ([`Job`]) replays that tape on forks
//! of the copy, one per candidate set of parameters, and scores each by how
//! far its predictions fall from the readings. The live twin is never
//! touched until the best candidate is applied; the fitting runs on a
//! blocking thread, off the twin's loop.

use crate::definition::{Bounds, DriftDetection, Target};
use crate::protocol::SyncValue;
use argmin::core::{CostFunction, Executor};
use argmin::solver::neldermead::NelderMead;
use hanzo_twin_engines::{JointCommand, Simulation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Events one segment of the tape holds at most (about 2 MiB): a twin on
/// a fast clock rolls its segments early rather than grow without bound.
const MAX_EVENTS: usize = 50_000;

/// What happened to the simulation, in order.
#[derive(Clone)]
enum Event {
    Step,
    Command(String, JointCommand),
    /// Boxed: most events are steps, and stay small.
    Measure(Box<(Target, SyncValue)>),
    /// A caller set a parameter (prim, name, value).
    Parameter(String, String, f64),
}

/// The copy a segment starts from, and what followed it.
struct Segment {
    start: Box<dyn Simulation>,
    events: Vec<Event>,
    began: Instant,
}

/// The tape of the last one to two windows: the segment before the current
/// one, and the current one, which rolls over once it spans a window.
pub struct Recorder {
    window: Duration,
    older: Option<Segment>,
    current: Option<Segment>,
}

impl Recorder {
    pub fn new(window: Duration) -> Recorder {
        Recorder {
            window,
            older: None,
            current: None,
        }
    }

    /// Before the simulation steps.
    pub fn step(&mut self, sim: &dyn Simulation) {
        self.push(sim, Event::Step);
    }

    /// A joint command was applied.
    pub fn command(&mut self, sim: &dyn Simulation, joint: &str, command: JointCommand) {
        self.push(sim, Event::Command(joint.to_string(), command));
    }

    /// A reading was measured against what the simulation predicts now.
    pub fn measure(&mut self, sim: &dyn Simulation, target: &Target, value: &SyncValue) {
        self.push(
            sim,
            Event::Measure(Box::new((target.clone(), value.clone()))),
        );
    }

    /// A caller set a physical parameter.
    pub fn parameter(&mut self, sim: &dyn Simulation, prim: &str, name: &str, value: f64) {
        self.push(
            sim,
            Event::Parameter(prim.to_string(), name.to_string(), value),
        );
    }

    /// The simulation's state was replaced (a restore): the tape no longer
    /// leads to it.
    pub fn clear(&mut self) {
        self.older = None;
        self.current = None;
    }

    fn push(&mut self, sim: &dyn Simulation, event: Event) {
        let roll = self
            .current
            .as_ref()
            .is_none_or(|s| s.began.elapsed() >= self.window || s.events.len() >= MAX_EVENTS);
        if roll {
            // A simulation that cannot be copied (an engine without forks)
            // records nothing; recalibration then says so.
            let Ok(start) = sim.fork() else {
                self.clear();
                return;
            };
            let next = Segment {
                start,
                events: Vec::new(),
                began: Instant::now(),
            };
            self.older = self.current.replace(next);
        }
        if let Some(current) = &mut self.current {
            current.events.push(event);
        }
    }

    /// A recalibration of `parameters` over the tape, starting from `live`'s
    /// values of them. `None` when the tape holds no measurement yet.
    pub fn job(
        &self,
        live: &dyn Simulation,
        parameters: &[(Target, Bounds)],
        drift: &DriftDetection,
        max_evaluations: usize,
    ) -> Result<Option<Job>, String> {
        let Some(first) = self.older.as_ref().or(self.current.as_ref()) else {
            return Ok(None);
        };
        let events: Vec<Event> = self
            .older
            .iter()
            .chain(self.current.iter())
            .flat_map(|s| s.events.iter().cloned())
            .collect();
        if !events.iter().any(|e| matches!(e, Event::Measure(..))) {
            return Ok(None);
        }
        let mut x0 = Vec::with_capacity(parameters.len());
        for (target, _) in parameters {
            let name = target.attribute.as_deref().unwrap_or_default();
            let value = live
                .parameter(&target.prim, name)
                .map_err(|e| format!("{target}: {e}"))?;
            x0.push(value);
        }
        Ok(Some(Job {
            start: first.start.fork().map_err(|e| e.to_string())?,
            spans_s: first.began.elapsed().as_secs_f64(),
            events,
            parameters: parameters.to_vec(),
            x0,
            drift: drift.clone(),
            max_evaluations,
        }))
    }
}

/// One recalibration, ready to run off the twin's loop.
pub struct Job {
    start: Box<dyn Simulation>,
    /// Seconds of wall time the tape covers.
    spans_s: f64,
    events: Vec<Event>,
    parameters: Vec<(Target, Bounds)>,
    x0: Vec<f64>,
    drift: DriftDetection,
    max_evaluations: usize,
}

/// What a recalibration found: the fitted parameters, and the window's
/// error with the parameters before and after (root mean square of each
/// reading's error over its threshold: 1.0 is at the threshold).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalibration {
    /// Per parameter, its value before and the fitted one.
    pub parameters: BTreeMap<String, ParameterFit>,
    pub error_before: f64,
    pub error_after: f64,
    /// Replays run.
    pub evaluations: usize,
    /// Readings in the window.
    pub readings: usize,
    /// Wall-clock seconds of the twin's run the window covered.
    pub window_seconds: f64,
    /// Seconds the fitting took.
    pub took_seconds: f64,
    /// Whether the fitted parameters were applied (only when they lower
    /// the error).
    pub applied: bool,
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParameterFit {
    pub before: f64,
    pub after: f64,
}

/// The replay's score of candidate parameters.
struct Replay<'a> {
    job: &'a Job,
    evaluations: &'a AtomicUsize,
    /// The best candidate scored (clamped) and its score, whatever the
    /// solver's state when the budget runs out.
    best: &'a std::sync::Mutex<Option<(Vec<f64>, f64)>>,
}

/// The solver stopped because `max_evaluations` replays ran.
const BUDGET_SPENT: &str = "the evaluation budget is spent";

impl Replay<'_> {
    /// The mean squared error over thresholds of the window's readings, and
    /// how many there were, replayed with the parameters at `values`.
    fn score(&self, values: &[f64]) -> Result<(f64, usize), String> {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let mut sim = self.job.start.fork().map_err(|e| e.to_string())?;
        for ((target, _), &v) in self.job.parameters.iter().zip(values) {
            let name = target.attribute.as_deref().unwrap_or_default();
            sim.set_parameter(&target.prim, name, v)
                .map_err(|e| format!("{target}: {e}"))?;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for event in &self.job.events {
            match event {
                Event::Step => {
                    if sim.step().is_err() {
                        // Parameters the physics cannot take score worst.
                        return Ok((f64::MAX / 4.0, n));
                    }
                }
                Event::Command(joint, command) => {
                    let _ = sim.set_joint_command(joint, *command);
                }
                Event::Parameter(prim, name, value) => {
                    let _ = sim.set_parameter(prim, name, *value);
                }
                Event::Measure(measure) => {
                    let (target, measured) = &**measure;
                    let Some(threshold) = target
                        .attribute
                        .as_deref()
                        .and_then(|a| self.job.drift.threshold_for(a))
                    else {
                        continue;
                    };
                    let Ok(observation) = sim.observation("/") else {
                        continue;
                    };
                    if let Some(error) = super::predicted(&observation, target)
                        .and_then(|p| super::distance(&p, measured))
                    {
                        sum += (error / threshold).powi(2);
                        n += 1;
                    }
                }
            }
        }
        if n == 0 {
            return Err("no reading of the window maps to what the simulation predicts".into());
        }
        Ok((sum / n as f64, n))
    }
}

impl CostFunction for Replay<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    /// The score of the candidate clamped into its bounds, plus a penalty
    /// for how far it strayed, so the simplex comes back inside.
    fn cost(&self, x: &Self::Param) -> Result<f64, argmin::core::Error> {
        if self.evaluations.load(Ordering::Relaxed) >= self.job.max_evaluations {
            return Err(argmin::core::Error::msg(BUDGET_SPENT));
        }
        let mut penalty = 0.0;
        let clamped: Vec<f64> = x
            .iter()
            .zip(&self.job.parameters)
            .map(|(v, (_, b))| {
                let c = v.clamp(b.min, b.max);
                penalty += ((v - c) / (b.max - b.min)).powi(2);
                c
            })
            .collect();
        let (score, _) = self.score(&clamped).map_err(argmin::core::Error::msg)?;
        let mut best = self.best.lock().unwrap_or_else(|p| p.into_inner());
        if best.as_ref().is_none_or(|(_, b)| score < *b) {
            *best = Some((clamped, score));
        }
        Ok(score + penalty)
    }
}

impl Job {
    /// Fits the parameters. Blocking: replays run the engine.
    pub fn run(self) -> Result<Recalibration, String> {
        let began = Instant::now();
        let evaluations = AtomicUsize::new(0);
        let best = std::sync::Mutex::new(None);
        let replay = || Replay {
            job: &self,
            evaluations: &evaluations,
            best: &best,
        };
        let (before, readings) = replay().score(&self.x0)?;
        // The first simplex: the live values, and each moved a tenth of its
        // range towards the middle of its bounds.
        let x0: Vec<f64> = self
            .x0
            .iter()
            .zip(&self.parameters)
            .map(|(v, (_, b))| v.clamp(b.min, b.max))
            .collect();
        let mut simplex = vec![x0.clone()];
        for (i, (_, b)) in self.parameters.iter().enumerate() {
            let mut vertex = x0.clone();
            let step = (b.max - b.min) / 10.0;
            vertex[i] = if x0[i] + step <= b.max {
                x0[i] + step
            } else {
                x0[i] - step
            };
            simplex.push(vertex);
        }
        let solver = NelderMead::new(simplex)
            .with_sd_tolerance(1e-6)
            .map_err(|e| e.to_string())?;
        let max_iters = self.max_evaluations as u64;
        match Executor::new(replay(), solver)
            .configure(|state| state.max_iters(max_iters))
            .run()
        {
            Ok(_) => {}
            // The best candidate so far stands.
            Err(e) if e.to_string().contains(BUDGET_SPENT) => {}
            Err(e) => return Err(e.to_string()),
        }
        let (fitted, after) = best
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or((x0, before));
        let applied = after < before;
        let parameters = self
            .parameters
            .iter()
            .zip(self.x0.iter().zip(&fitted))
            .map(|((t, _), (b, a))| {
                (
                    t.to_string(),
                    ParameterFit {
                        before: *b,
                        after: if applied { *a } else { *b },
                    },
                )
            })
            .collect();
        Ok(Recalibration {
            parameters,
            error_before: before.sqrt(),
            error_after: if applied { after.sqrt() } else { before.sqrt() },
            evaluations: evaluations.load(Ordering::Relaxed),
            readings,
            window_seconds: self.spans_s,
            took_seconds: began.elapsed().as_secs_f64(),
            applied,
        })
    }
}

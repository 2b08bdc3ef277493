//! A twin's drift: detecting it as readings are taken, and responding to
//! it (alerts, hard resets, recalibrations).

use super::{FITS, TwinSync, distance, predicted, recalibrate};
use crate::definition::{DriftResponse, Target};
use crate::protocol::SyncValue;
use chrono::Utc;
use hanzo_twin_engines::Simulation;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

impl TwinSync {
    /// Starts a recalibration when the twin drifts and none ran for a
    /// window: the tape is copied and fitted on a blocking thread, and the
    /// result comes back to the twin.
    pub(super) fn maybe_recalibrate(&mut self, sim: &dyn Simulation) {
        let (Some(drift), Some(recorder), Some(twin)) = (&self.drift, &self.recorder, &self.twin)
        else {
            return;
        };
        let Some(spec) = &drift.recalibrate else {
            return;
        };
        let window = Duration::from_secs_f64(drift.window_seconds);
        if self.recalibrating
            || self.drifting.is_empty()
            || self.responded_at.is_some_and(|t| t.elapsed() < window)
        {
            return;
        }
        let job = match recorder.job(sim, &spec.targets(), drift, spec.max_evaluations) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                self.history.record(None, "recalibration_failed", e, None);
                self.responded_at = Some(Instant::now());
                return;
            }
        };
        self.recalibrating = true;
        let twin = twin.clone();
        tokio::spawn(async move {
            // Fits run one per core at most, however many twins drift.
            let permit = FITS.acquire().await;
            let result = tokio::task::spawn_blocking(move || job.run())
                .await
                .unwrap_or_else(|e| Err(format!("the fit ended abnormally: {e}")));
            drop(permit);
            let _ = twin.cast(crate::protocol::TwinMsg::Recalibrated {
                result: Box::new(result),
            });
        });
    }

    /// With `hard_reset`, while the twin drifts (at most once a window):
    /// every measured joint and body is put where its latest reading says,
    /// and the history records the errors before and after.
    pub(super) fn maybe_hard_reset(&mut self, sim: &mut dyn Simulation) {
        let Some(drift) = &self.drift else {
            return;
        };
        let window = Duration::from_secs_f64(drift.window_seconds);
        if drift.response != DriftResponse::HardReset
            || self.drifting.is_empty()
            || self.responded_at.is_some_and(|t| t.elapsed() < window)
        {
            return;
        }
        let before = self.mean_error(sim);
        let mut joints: BTreeMap<&str, (Option<f64>, Option<f64>)> = BTreeMap::new();
        let mut poses = Vec::new();
        for (target, latest) in &self.latest {
            match (target.attribute.as_deref(), &latest.value) {
                (Some("position"), SyncValue::Scalar(v)) => {
                    joints.entry(&target.prim).or_default().0 = Some(*v);
                }
                (Some("velocity"), SyncValue::Scalar(v)) => {
                    joints.entry(&target.prim).or_default().1 = Some(*v);
                }
                (
                    Some("pose"),
                    SyncValue::Pose {
                        position,
                        orientation,
                    },
                ) => {
                    poses.push((&target.prim, *position, Some(*orientation)));
                }
                (Some("position" | "xformOp:translate"), SyncValue::Vector(p)) => {
                    poses.push((&target.prim, *p, None));
                }
                _ => {}
            }
        }
        let observation = sim.observation("/").ok();
        let mut set = Vec::new();
        let mut failed = Vec::new();
        for (joint, (position, velocity)) in joints {
            // A velocity alone keeps the joint where it is.
            let position = position.or_else(|| {
                observation
                    .as_ref()
                    .and_then(|o| o.joints.iter().find(|j| j.path == joint))
                    .map(|j| j.position)
            });
            let Some(position) = position else {
                continue;
            };
            match sim.set_joint_state(joint, position, velocity) {
                Ok(()) => set.push(joint.to_string()),
                Err(e) => failed.push(format!("{joint}: {e}")),
            }
        }
        for (body, position, orientation) in poses {
            match sim.set_body_pose(body, position, orientation) {
                Ok(()) => set.push(body.to_string()),
                Err(e) => failed.push(format!("{body}: {e}")),
            }
        }
        self.responded_at = Some(Instant::now());
        if let Some(recorder) = &mut self.recorder {
            recorder.clear();
        }
        let after = self.mean_error(sim);
        self.errors.clear();
        let detail = format!(
            "{} set from their latest readings ({}); error {:.4} → {:.4}{}",
            set.len(),
            set.join(", "),
            before,
            after,
            if failed.is_empty() {
                String::new()
            } else {
                format!("; not set: {}", failed.join("; "))
            }
        );
        tracing::warn!(twin = %self.twin_label, %detail, "hard reset");
        metrics::counter!("hanzo_twin_sync_hard_resets_total", "twin" => self.twin_label.clone())
            .increment(1);
        self.history.record(None, "hard_reset", detail, None);
    }

    /// The mean distance between each measured attribute's latest reading
    /// and what `sim` predicts for it now.
    fn mean_error(&self, sim: &dyn Simulation) -> f64 {
        let Ok(observation) = sim.observation("/") else {
            return f64::NAN;
        };
        let errors: Vec<f64> = self
            .latest
            .iter()
            .filter_map(|(t, l)| predicted(&observation, t).and_then(|p| distance(&p, &l.value)))
            .collect();
        errors.iter().sum::<f64>() / errors.len().max(1) as f64
    }

    /// A recalibration ended: its parameters go into `sim` when they lower
    /// the error, and the history says what was found either way. The
    /// drift windows start afresh, so drift is judged on the new physics.
    pub fn recalibrated(
        &mut self,
        sim: &mut dyn Simulation,
        result: Result<recalibrate::Recalibration, String>,
    ) {
        self.recalibrating = false;
        self.responded_at = Some(Instant::now());
        let mut found = match result {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(twin = %self.twin_label, error = %e, "recalibration failed");
                self.history.record(None, "recalibration_failed", e, None);
                return;
            }
        };
        if found.applied {
            for (key, fit) in &found.parameters {
                let Ok(target) = Target::parse(key) else {
                    continue;
                };
                let name = target.attribute.as_deref().unwrap_or_default();
                if let Err(e) = sim.set_parameter(&target.prim, name, fit.after) {
                    found.applied = false;
                    self.history
                        .record(None, "recalibration_failed", format!("{key}: {e}"), None);
                }
            }
            self.errors.clear();
        }
        let fitted: Vec<String> = found
            .parameters
            .iter()
            .map(|(k, f)| format!("{k} {:.4} → {:.4}", f.before, f.after))
            .collect();
        let detail = format!(
            "{}: window error {:.3} → {:.3} of the threshold over {} readings, {} replays",
            if found.applied {
                "applied"
            } else {
                "kept (no better fit)"
            },
            found.error_before,
            found.error_after,
            found.readings,
            found.evaluations
        ) + &format!("; {}", fitted.join(", "));
        tracing::info!(twin = %self.twin_label, %detail, "recalibrated");
        metrics::counter!("hanzo_twin_sync_recalibrations_total", "twin" => self.twin_label.clone(), "applied" => found.applied.to_string())
            .increment(1);
        self.history.record_recalibration(detail, found);
    }

    /// Adds the measured attributes' errors now to their windows, and tells
    /// the history (and the metrics) when one starts or stops drifting.
    pub(super) fn detect_drift(&mut self, sim: &dyn Simulation, mut measured: Vec<Target>) {
        let Some(drift) = self.drift.clone() else {
            return;
        };
        let Ok(observation) = sim.observation("/") else {
            return;
        };
        measured.sort();
        measured.dedup();
        let window = Duration::from_secs_f64(drift.window_seconds);
        let now = Instant::now();
        for target in measured {
            let Some(threshold) = target
                .attribute
                .as_deref()
                .and_then(|a| drift.threshold_for(a))
            else {
                continue;
            };
            let Some(latest) = self.latest.get(&target) else {
                continue;
            };
            let Some(error) =
                predicted(&observation, &target).and_then(|p| distance(&p, &latest.value))
            else {
                continue;
            };
            let errors = self.errors.entry(target.clone()).or_default();
            errors.push_back((now, error));
            while errors
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > window)
            {
                errors.pop_front();
            }
            let mean = errors.iter().map(|(_, e)| e).sum::<f64>() / errors.len() as f64;
            metrics::gauge!("hanzo_twin_sync_drift", "twin" => self.twin_label.clone(), "dimension" => target.to_string())
                .set(mean);
            let source = self
                .sources
                .get(latest.source)
                .map(|s| s.name())
                .unwrap_or_default();
            if mean > threshold && self.drifting.insert(target.clone()) {
                let detail = format!(
                    "{target}: mean error {mean:.4} over {:.0} s exceeds {threshold}",
                    drift.window_seconds
                );
                tracing::warn!(twin = %self.twin_label, %detail, "drift");
                self.history.record(Some(&source), "drift", detail, None);
                self.alert("drift", &target, mean, threshold, drift.window_seconds);
            } else if mean <= threshold && self.drifting.remove(&target) {
                let detail = format!(
                    "{target}: mean error {mean:.4} over {:.0} s is back within {threshold}",
                    drift.window_seconds
                );
                self.history
                    .record(Some(&source), "drift_cleared", detail, None);
                self.alert(
                    "drift_cleared",
                    &target,
                    mean,
                    threshold,
                    drift.window_seconds,
                );
            }
        }
    }

    /// Hands a drift alert to the alert child, never waiting: with its
    /// queue full the alert is dropped and counted.
    fn alert(&self, kind: &str, target: &Target, mean: f64, threshold: f64, window: f64) {
        let Some(queue) = &self.alerts else {
            return;
        };
        let alert = serde_json::json!({
            "kind": kind,
            "twin_id": self.twin_label,
            "target": target.to_string(),
            "mean_error": mean,
            "threshold": threshold,
            "window_seconds": window,
            "at": Utc::now(),
        });
        if queue.try_send(alert).is_err() {
            for stats in self
                .publishers
                .iter()
                .filter(|p| p.name().starts_with("drift-"))
            {
                stats.update(|s| s.skipped += 1);
            }
        }
    }

    /// The drift of a measured attribute now: its mean error over the window
    /// and its threshold, when drift detection covers it.
    pub(super) fn drift_of(&self, target: &Target) -> Option<(f64, f64, bool)> {
        let drift = self.drift.as_ref()?;
        let threshold = drift.threshold_for(target.attribute.as_deref()?)?;
        let errors = self.errors.get(target).filter(|e| !e.is_empty())?;
        let mean = errors.iter().map(|(_, e)| e).sum::<f64>() / errors.len() as f64;
        Some((mean, threshold, self.drifting.contains(target)))
    }
}

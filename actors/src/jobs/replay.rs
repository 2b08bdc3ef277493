//! A replay job: recorded load from the timeseries database run through an
//! infrastructure twin's topology, faults and assertions from time 0 over
//! the recorded span, inside the node; its report and verdicts are the
//! job's result, and with `experiment` they are written back.

use super::{ReplaySpec, Timeseries};
use crate::definition::TwinType;
use hanzo_twin_engines::infra::kubernetes::Objects;
use hanzo_twin_engines::infra::{InfraError, TrafficModel};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Chunks the span runs in: progress and `stop` are looked at between them.
const CHUNKS: u64 = 100;

pub(super) struct ReplayRun {
    pub spec: ReplaySpec,
    pub organization: String,
    pub twins: Arc<std::sync::OnceLock<crate::TwinNode>>,
    pub scenes: crate::scenes::SceneLoader,
    pub timeseries: Option<Arc<dyn Timeseries>>,
}

fn named(e: InfraError) -> String {
    let InfraError::Invalid { field, message } = e;
    format!("{field}: {message}")
}

impl ReplayRun {
    /// The result, `Ok(None)` when stopped.
    pub async fn run(
        self,
        mut progress: impl FnMut(u64) + Send,
        stop: Arc<AtomicBool>,
    ) -> Result<Option<Value>, String> {
        let timeseries = self.timeseries.clone().ok_or(
            "this node has no timeseries database to replay from: set timeseries.url in its configuration (HANZO_TWIN_TIMESERIES_URL)",
        )?;
        let twins = super::node_twins(&self.twins).await?;
        let org = crate::definition::Name::new(&self.organization)
            .map_err(|e| format!("organization: {e}"))?;
        let record = twins
            .scoped(org)
            .get(&self.spec.twin)
            .await
            .map_err(|e| format!("twin: {e}"))?;
        if record.definition.kind != TwinType::Infrastructure {
            return Err(format!(
                "twin: {} is a physical twin; replays run through infrastructure twins",
                self.spec.twin
            ));
        }
        let scene = self
            .scenes
            .load_scene(&record.definition)
            .await
            .map_err(|e| e.to_string())?;
        let source =
            hanzo_twin_engines::infrastructure::twin_source(&scene).map_err(|e| e.to_string())?;
        let objects = Objects::from_manifests(&source.manifests).map_err(named)?;
        // The services the rows may name: the topology's.
        let model = source
            .spec
            .prepare_objects(&objects, TrafficModel::default(), None, |_| Ok(()))
            .map_err(named)?
            .sim
            .model()
            .clone();
        let (from, to) = self
            .spec
            .window()
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        let query = self
            .spec
            .query
            .clone()
            .unwrap_or_else(|| super::METRICS_QUERY.to_string());
        let recorded = timeseries.read(query, from, to, model).await?;
        let mut spec = source.spec.clone();
        spec.simulation.duration = Some(format!("{}s", recorded.span_s));
        let mut prepared = spec
            .prepare_objects(&objects, recorded.traffic.clone(), None, |_| Ok(()))
            .map_err(named)?;
        let duration = prepared.duration_s;
        // The simulation is CPU work: off the async workers, in chunks.
        let mut done = 0;
        while done < CHUNKS {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            done += 1;
            let until = duration * done as f64 / CHUNKS as f64;
            let mut sim = prepared.sim;
            prepared.sim = tokio::task::spawn_blocking(move || {
                sim.run_until(until);
                sim
            })
            .await
            .map_err(|e| format!("the replay stopped: {e}"))?;
            progress(done);
        }
        let sim = prepared.sim;
        let report = sim.report();
        let verdicts = sim.verdicts();
        let breaches = verdicts.iter().filter(|v| !v.passed).count();
        let rows = match &self.spec.experiment {
            Some(experiment) => Some(
                timeseries
                    .write(
                        experiment.clone(),
                        record.definition.name.to_string(),
                        recorded.start,
                        report.clone(),
                        breaches,
                    )
                    .await?,
            ),
            None => None,
        };
        let mut summary = report;
        for entry in &mut summary.entries {
            entry.timeline = Vec::new();
        }
        let start = chrono::DateTime::from_timestamp_millis((recorded.start * 1000.0) as i64)
            .map(|t| t.to_rfc3339());
        Ok(Some(json!({
            "twin": record.definition.name,
            "replay": {
                "start": start,
                "span_s": recorded.span_s,
                "buckets": recorded.buckets,
                "unknown_services": recorded.unknown,
            },
            "report": summary,
            "verdicts": verdicts,
            "breaches": breaches,
            "experiment": self.spec.experiment,
            "experiment_rows": rows,
        })))
    }
}

//! A replay job: recorded load from the timeseries database run through an
//! infrastructure twin's topology, faults and assertions from time 0 over
//! the recorded span, inside the node, beside any what-if variants of the
//! twin on the same load; the reports, verdicts and their comparison are
//! the job's result, a plot of them its artifact, and with `experiment`
//! every run is written back.

use super::{ArtifactStore, JobId, ReplaySpec, Timeseries};
use crate::definition::TwinType;
use hanzo_twin_engines::infra::compare::{ComparisonRow, plot_svg};
use hanzo_twin_engines::infra::kubernetes::Objects;
use hanzo_twin_engines::infra::whatif::check_variants;
use hanzo_twin_engines::infra::{InfraError, TopologyPatch, TrafficModel};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Chunks the span runs in: progress and `stop` are looked at between them.
const CHUNKS: u64 = 100;

/// The job's artifact: every run's latency and failures over the span.
pub const PLOT: &str = "comparison.svg";

pub(super) struct ReplayRun {
    pub spec: ReplaySpec,
    pub organization: String,
    pub twins: Arc<std::sync::OnceLock<crate::TwinNode>>,
    pub scenes: crate::scenes::SceneLoader,
    pub timeseries: Option<Arc<dyn Timeseries>>,
    /// Where the plot goes, as this job's artifact.
    pub artifacts: Arc<dyn ArtifactStore>,
    pub job: JobId,
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
        stored: impl FnOnce(super::Artifact) + Send,
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
        let base_name = record.definition.name.to_string();
        check_variants(&self.spec.variants, "variants", &base_name).map_err(named)?;
        let mut spec = source.spec.clone();
        spec.simulation.duration = Some(format!("{}s", recorded.span_s));
        // The twin itself, then each what-if: the same traffic, the same
        // seed, each a topology patch of the twin's.
        let base = TopologyPatch::default();
        let runs: Vec<(String, &TopologyPatch, String)> =
            std::iter::once((base_name.clone(), &base, String::new()))
                .chain(
                    self.spec
                        .variants
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.name.clone(), &v.patch, format!("variants[{i}].patch"))),
                )
                .collect();
        let mut sims = Vec::with_capacity(runs.len());
        let mut duration = 0.0;
        for (_, patch, field) in &runs {
            let prepared = patch
                .prepare(&spec, &objects, recorded.traffic.clone(), None, field)
                .map_err(named)?;
            duration = prepared.duration_s;
            sims.push(prepared.sim);
        }
        // The simulations are CPU work: off the async workers, each on its
        // own blocking thread, in chunks.
        let mut done = 0;
        while done < CHUNKS {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            done += 1;
            let until = duration * done as f64 / CHUNKS as f64;
            let chunk: Vec<_> = sims
                .into_iter()
                .map(|mut sim| {
                    tokio::task::spawn_blocking(move || {
                        sim.run_until(until);
                        sim
                    })
                })
                .collect();
            sims = Vec::with_capacity(chunk.len());
            for run in chunk {
                sims.push(run.await.map_err(|e| format!("the replay stopped: {e}"))?);
            }
            progress(done);
        }
        let mut results = Vec::with_capacity(runs.len());
        for ((name, _, _), sim) in runs.iter().zip(&sims) {
            let report = sim.report();
            let verdicts = sim.verdicts();
            let rows = match &self.spec.experiment {
                Some(experiment) => Some(
                    timeseries
                        .write(
                            experiment.clone(),
                            name.clone(),
                            recorded.start,
                            report.clone(),
                            verdicts.iter().filter(|v| !v.passed).count(),
                        )
                        .await?,
                ),
                None => None,
            };
            results.push((name.as_str(), report, verdicts, rows));
        }
        let plot = {
            let lines: Vec<(&str, &hanzo_twin_engines::infra::Report)> = results
                .iter()
                .map(|(name, report, _, _)| (*name, report))
                .collect();
            plot_svg(
                &format!(
                    "{base_name}: recorded load replayed, {:.1} h",
                    recorded.span_s / 3600.0
                ),
                &lines,
            )
            .map_err(named)?
        };
        let bytes = plot.len() as u64;
        self.artifacts
            .put(self.job, PLOT, plot.into_bytes())
            .await
            .map_err(|e| format!("cannot store {PLOT}: {e}"))?;
        stored(super::Artifact {
            name: PLOT.to_string(),
            steps: 0,
            bytes,
            created_at: chrono::Utc::now(),
        });
        let comparison: Vec<ComparisonRow> = results
            .iter()
            .map(|(name, report, verdicts, _)| ComparisonRow::of(name, report, verdicts))
            .collect();
        let mut variants = results
            .into_iter()
            .map(|(name, mut report, verdicts, rows)| {
                // Per-second timelines are for the plot; the result stays small.
                for entry in &mut report.entries {
                    entry.timeline = Vec::new();
                }
                let breaches = verdicts.iter().filter(|v| !v.passed).count();
                json!({
                    "variant": name,
                    "report": report,
                    "verdicts": verdicts,
                    "breaches": breaches,
                    "experiment_rows": rows,
                })
            });
        let Some(mut base) = variants.next() else {
            return Err("the replay ran nothing".into());
        };
        let start = chrono::DateTime::from_timestamp_millis((recorded.start * 1000.0) as i64)
            .map(|t| t.to_rfc3339());
        base["twin"] = json!(base_name);
        base["replay"] = json!({
            "start": start,
            "span_s": recorded.span_s,
            "buckets": recorded.buckets,
            "unknown_services": recorded.unknown,
        });
        base["experiment"] = json!(self.spec.experiment);
        base["variants"] = json!(variants.collect::<Vec<_>>());
        base["comparison"] = json!(comparison);
        base["plot"] = json!(PLOT);
        Ok(Some(base))
    }
}

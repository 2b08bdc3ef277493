//! A synthetic-data job inside the node: the twin's scene and poses are
//! taken once, then the dataset is drawn in small batches by the node's
//! render workers, a few at a time, each batch's files streamed to object
//! storage as it comes back, in order. Progress is the frames finished in a
//! row from the first, saved with the job's record, so a job resumed after
//! a restart starts at the first batch not finished: frames are a function
//! of the seed and their number, and a batch drawn twice writes the same bytes.
//!
//! ```text
//! <organization>/<dataset>/<job id>/rgb/...            the images (see synth::dataset)
//! <organization>/<dataset>/<job id>/annotations/...    each batch's COCO part
//! <organization>/<dataset>/<job id>/annotations.json   all of them, once finished
//! <organization>/<dataset>/<job id>/manifest.json      spec, seed, scene, version
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hanzo_twin_render::RenderScene;
use hanzo_twin_render::synth::SynthSpec;
use hanzo_twin_render::synth::coco::{CocoBuilder, CocoFile};

use crate::render::{RenderOutcome, RenderPoolMsg, RenderWork, RenderWorkers, SynthBatchJob};
use crate::store::BoxFuture;
use crate::store::StoreResult;

/// Where datasets are kept (the node's datasets bucket).
pub trait DatasetStore: Send + Sync + 'static {
    fn put(&self, key: &str, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>>;
    /// Every key under `prefix`, sorted.
    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>>;
}

/// Where a batch's outcome arrives.
type BatchAnswer = tokio::sync::oneshot::Receiver<Result<RenderOutcome, crate::TwinError>>;

/// Frames a render worker draws at once: the spec's per-GPU batch, but
/// never so many that a batch's images crowd the node's memory.
pub const MAX_FRAMES_A_BATCH: u64 = 8;

/// The folder of one generation.
pub fn prefix(organization: &str, dataset: &str, job: super::JobId) -> String {
    format!("{organization}/{dataset}/{job}/")
}

/// Everything the run needs from the node.
pub struct SynthRun {
    pub spec: SynthSpec,
    pub organization: String,
    pub job: super::JobId,
    /// Frames finished before (a resumed job).
    pub done: u64,
    /// The node's twins, set once the node has started them (a job resumed
    /// at start may run before).
    pub twins: Arc<std::sync::OnceLock<crate::TwinNode>>,
    pub render: RenderWorkers,
    pub datasets: Arc<dyn DatasetStore>,
    pub node: String,
}

impl SynthRun {
    /// Draws the dataset; `progress(frames)` after each batch stored;
    /// `stop()` is asked before each batch. `Ok(None)`: stopped.
    pub async fn run(
        self,
        mut progress: impl FnMut(u64, f64) + Send,
        stop: impl Fn() -> bool + Send,
    ) -> Result<Option<serde_json::Value>, String> {
        let spec = Arc::new(self.spec);
        let twins = super::node_twins(&self.twins).await?;
        let now = twins
            .scene_now(&spec.twin_id)
            .await
            .map_err(|e| format!("twin_id: {e}"))?;
        let fingerprint = now.scene.fingerprint();
        let scene = Arc::new(now.scene);
        let render = Arc::new(RenderScene::new(&scene).map_err(|e| e.to_string())?);
        let poses = Arc::new(now.poses);
        // Checked against the scene before anything is drawn.
        hanzo_twin_render::synth::vary::Varier::new(&spec, &scene, &render, poses.to_vec())
            .map_err(|e| e.to_string())?;
        let pool = self
            .render
            .pool()
            .ok_or("this node's render workers are not running")?;
        let root = prefix(&self.organization, &spec.output_dataset, self.job);
        let chunk = spec.frames_per_gpu.clamp(1, MAX_FRAMES_A_BATCH);
        let total = spec.num_frames;
        let mut next = (self.done / chunk) * chunk;
        let mut done = next;
        let window = self.render.settings.workers.max(1);
        let mut in_flight: VecDeque<(std::ops::Range<u64>, BatchAnswer)> = VecDeque::new();
        let started = Instant::now();
        let first = done;
        loop {
            while in_flight.len() < window && next < total {
                if stop() {
                    return Ok(None);
                }
                let frames = next..(next + chunk).min(total);
                next = frames.end;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let work = RenderWork::Batch(Box::new(SynthBatchJob {
                    spec: spec.clone(),
                    scene: scene.clone(),
                    render: render.clone(),
                    base_poses: poses.clone(),
                    frames: frames.clone(),
                }));
                pool.cast(RenderPoolMsg::Render {
                    work,
                    reply: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                })
                .map_err(|_| "the node's render pool stopped".to_string())?;
                in_flight.push_back((frames, rx));
            }
            let Some((frames, rx)) = in_flight.pop_front() else {
                break;
            };
            let outcome = rx
                .await
                .map_err(|_| "the render pool dropped a batch".to_string())?
                .map_err(|e| format!("frames {}–{}: {e}", frames.start, frames.end - 1))?;
            let RenderOutcome::Batch(batch) = outcome else {
                return Err("the render pool answered a batch with a frame".into());
            };
            for (path, bytes) in batch.files {
                self.datasets
                    .put(&format!("{root}{path}"), bytes)
                    .await
                    .map_err(|e| format!("cannot store {path}: {e}"))?;
            }
            let part = serde_json::to_vec(&batch.coco).map_err(|e| e.to_string())?;
            self.datasets
                .put(&format!("{root}annotations/{:08}.json", frames.start), part)
                .await
                .map_err(|e| format!("cannot store annotations: {e}"))?;
            let count = frames.end - frames.start;
            metrics::counter!("hanzo_twin_synthdata_frames_total", "twin" => spec.twin_id.clone())
                .increment(count);
            done = frames.end;
            let rate = (done - first) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress(done, rate);
        }
        // Every batch's part, joined in frame order.
        let mut coco = CocoBuilder::new(spec.output_dataset.clone(), render.classes());
        let parts = self
            .datasets
            .list(&format!("{root}annotations/"))
            .await
            .map_err(|e| e.to_string())?;
        for key in parts {
            let bytes = self
                .datasets
                .get(&key)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{key} vanished"))?;
            let part: CocoFile =
                serde_json::from_slice(&bytes).map_err(|e| format!("{key}: {e}"))?;
            coco.merge(part);
        }
        let coco = coco.finish();
        let annotations = coco.annotations.len();
        let images = coco.images.len();
        self.datasets
            .put(
                &format!("{root}annotations.json"),
                serde_json::to_vec(&coco).map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
        // Generations of a dataset are numbered in the order their jobs
        // were submitted (job ids are time-ordered).
        let family = self
            .datasets
            .list(&format!("{}/{}/", self.organization, spec.output_dataset))
            .await
            .map_err(|e| e.to_string())?;
        let mut generations: Vec<&str> =
            family.iter().filter_map(|k| k.split('/').nth(2)).collect();
        generations.dedup();
        let job = self.job.to_string();
        let version = generations
            .iter()
            .position(|g| *g == job)
            .map_or(1, |i| i + 1);
        let manifest = serde_json::json!({
            "dataset": spec.output_dataset,
            "version": version,
            "job": job,
            "organization": self.organization,
            "twin_id": spec.twin_id,
            "scene": {"source": scene.source, "fingerprint": format!("{fingerprint:016x}"), "step": now.step, "time": now.time},
            "seed": spec.seed,
            "frames": total,
            "images": images,
            "annotations": annotations,
            "renderer": {"name": "hanzo-twin-render", "version": env!("CARGO_PKG_VERSION"), "device": "cpu", "node": self.node},
            "depth_scale_m": hanzo_twin_render::encode::DEPTH_SCALE_M,
            "config": &*spec,
        });
        self.datasets
            .put(
                &format!("{root}manifest.json"),
                serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(serde_json::json!({
            "dataset": spec.output_dataset,
            "version": version,
            "prefix": root,
            "frames": total,
            "images": images,
            "annotations": annotations,
        })))
    }
}

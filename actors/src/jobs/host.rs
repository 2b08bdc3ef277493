//! The jobs host: one per node. It keeps the queue, starts at most
//! `max_concurrent` job actors, supervises them, and at start resumes the
//! jobs the node was running when it stopped.

use super::actor::{JobActor, JobActorArgs, JobMsg};
use super::log::{LogFollowers, LogWriter};
use super::{ArtifactStore, JobError, JobId, JobKind, JobRecord, JobSpec, JobState, JobStore};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the node runs jobs (`scheduler` in its configuration).
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub node_id: String,
    /// The Python with `hanzo_twin` and Stable-Baselines3 that runs trainers.
    pub python: PathBuf,
    /// Jobs running at once; the excess waits in the queue.
    pub max_concurrent: usize,
    /// The node's API, which a job on a twin reaches its environments through.
    pub api_url: String,
    /// How long a cancelled worker has to save and stop before it is killed.
    pub cancel_grace: Duration,
    /// The Ray cluster `backend: rllib` jobs train on (`RAY_ADDRESS` for
    /// the worker, Ray's driver); none refuses such jobs.
    pub ray_address: Option<String>,
}

impl JobsConfig {
    /// The Ray cluster of `backend: rllib` jobs, or why this node has none.
    pub fn ray(&self) -> Result<&str, String> {
        self.ray_address.as_deref().ok_or_else(|| {
            format!(
                "node {} has no Ray cluster for backend rllib: set scheduler.ray_address in its configuration, or train with backend sb3",
                self.node_id
            )
        })
    }
}

#[derive(Clone)]
pub struct JobsArgs {
    pub config: Arc<JobsConfig>,
    pub store: Arc<dyn JobStore>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub logs: Arc<LogFollowers>,
    /// Scenes and engines, for work done inside the node (comparisons).
    pub scenes: crate::scenes::SceneLoader,
    pub engines: hanzo_twin_engines::EngineRegistry,
    /// The node's twins (set once the node has started them), whose scenes
    /// synthetic-data jobs draw.
    pub twins: Arc<std::sync::OnceLock<crate::TwinNode>>,
    /// The render workers that draw synthetic data.
    pub render: crate::render::RenderWorkers,
    /// The datasets bucket.
    pub datasets: Arc<dyn super::DatasetStore>,
    /// The timeseries database replays read and write back, when the node
    /// has one (`timeseries.url`).
    pub timeseries: Option<Arc<dyn super::Timeseries>>,
    /// The running jobs, as the supervision tree shows them.
    pub board: crate::inspector::JobsBoard,
}

pub enum JobsMsg {
    Submit {
        record: Box<JobRecord>,
        token: Option<String>,
        reply: RpcReplyPort<Result<JobRecord, JobError>>,
    },
    Cancel {
        id: JobId,
        by: String,
        reply: RpcReplyPort<Result<JobRecord, JobError>>,
    },
    /// A running training job's latest rate, for the node's metrics.
    Rate { id: JobId, steps_per_second: f64 },
    /// Takes over the unfinished jobs of nodes outside `live` (their lease
    /// ran out) that placement gives this node (`owns`, by job id).
    AdoptOrphans {
        live: Vec<String>,
        owns: Box<dyn Fn(&str) -> bool + Send + Sync>,
    },
}

/// Local only: never sent between nodes.
impl ractor::Message for JobsMsg {}

pub struct JobsHost;

struct Pending {
    record: JobRecord,
    token: Option<String>,
    log: LogWriter,
}

struct Running {
    actor: ActorRef<JobMsg>,
    kind: JobKind,
    /// The twin (or `task:<name>`) a training job steps, and how many
    /// environments.
    envs: Option<(String, u32)>,
    steps_per_second: f64,
}

pub struct JobsState {
    args: JobsArgs,
    queue: VecDeque<Pending>,
    running: HashMap<JobId, Running>,
    by_actor: HashMap<ActorId, JobId>,
    /// Twins given a `hanzo_twin_parallel_envs` value, so a finished job's
    /// goes back to 0.
    env_gauges: std::collections::HashSet<String>,
}

impl JobsState {
    /// Starts queued jobs while there is room.
    async fn start_queued(&mut self, myself: &ActorRef<JobsMsg>) {
        while self.running.len() < self.args.config.max_concurrent.max(1) {
            let Some(pending) = self.queue.pop_front() else {
                break;
            };
            let id = pending.record.id;
            let kind = pending.record.kind;
            let envs = match &pending.record.spec {
                JobSpec::Train(t) => {
                    let target = match (&t.twin, &t.task) {
                        (Some(twin), _) => twin.clone(),
                        (None, task) => format!("task:{}", task.as_deref().unwrap_or("?")),
                    };
                    Some((target, t.num_envs))
                }
                JobSpec::Evaluate(_)
                | JobSpec::Compare(_)
                | JobSpec::Synthdata(_)
                | JobSpec::Replay(_) => None,
            };
            let (organization, attempts) =
                (pending.record.organization.clone(), pending.record.attempts);
            let target = match &envs {
                Some((on, n)) => format!("{} {on} × {n}", kind.as_str()),
                None => kind.as_str().to_string(),
            };
            let args = JobActorArgs {
                record: pending.record,
                token: pending.token,
                log: pending.log,
                jobs: self.args.clone(),
                host: myself.clone(),
            };
            match Actor::spawn_linked(Some(format!("job:{id}")), JobActor, args, myself.get_cell())
                .await
            {
                Ok((actor, _)) => {
                    self.by_actor.insert(actor.get_id(), id);
                    self.args.board.started(
                        &id.to_string(),
                        actor.get_id(),
                        &organization,
                        target,
                        attempts,
                    );
                    self.running.insert(
                        id,
                        Running {
                            actor,
                            kind,
                            envs,
                            steps_per_second: 0.0,
                        },
                    );
                }
                // The actor's start cannot fail (a worker that does not
                // start fails the job from inside it); a spawn refused by
                // the runtime leaves the job as stored, resumed at restart.
                Err(e) => tracing::error!(job = %id, "cannot spawn the job's actor: {e}"),
            }
        }
        self.publish_gauges();
    }

    fn publish_gauges(&mut self) {
        for kind in JobKind::ALL {
            let running = self.running.values().filter(|r| r.kind == kind).count();
            let queued = self.queue.iter().filter(|p| p.record.kind == kind).count();
            metrics::gauge!("hanzo_twin_jobs", "kind" => kind.as_str(), "state" => "running")
                .set(running as f64);
            metrics::gauge!("hanzo_twin_jobs", "kind" => kind.as_str(), "state" => "queued")
                .set(queued as f64);
        }
        let mut envs: HashMap<String, u32> = HashMap::new();
        for (target, n) in self.running.values().filter_map(|r| r.envs.as_ref()) {
            *envs.entry(target.clone()).or_default() += n;
        }
        for gone in self.env_gauges.iter().filter(|t| !envs.contains_key(*t)) {
            metrics::gauge!("hanzo_twin_parallel_envs", "twin" => gone.clone()).set(0.0);
        }
        for (target, n) in &envs {
            metrics::gauge!("hanzo_twin_parallel_envs", "twin" => target.clone())
                .set(f64::from(*n));
        }
        self.env_gauges = envs.into_keys().collect();
        metrics::gauge!("hanzo_twin_training_steps_per_second").set(
            self.running
                .values()
                .filter(|r| r.kind == JobKind::Train)
                .map(|r| r.steps_per_second)
                .sum::<f64>(),
        );
    }

    async fn submit(
        &mut self,
        myself: &ActorRef<JobsMsg>,
        mut record: JobRecord,
        token: Option<String>,
    ) -> Result<JobRecord, JobError> {
        if record.spec.backend() == Some(super::Backend::Rllib)
            && let Err(message) = self.args.config.ray()
        {
            return Err(JobError::Invalid(super::SpecError {
                field: "backend".into(),
                message,
            }));
        }
        record.node = Some(self.args.config.node_id.clone());
        self.args.store.put(&record).await?;
        let mut log = self
            .args
            .logs
            .writer(record.id)
            .map_err(|e| JobError::Store(format!("cannot open the job's log: {e}")))?;
        log.append(
            "node",
            format!(
                "queued on {} ({} running, {} waiting)",
                self.args.config.node_id,
                self.running.len(),
                self.queue.len()
            ),
            None,
        );
        metrics::counter!("hanzo_twin_jobs_total", "kind" => record.kind.as_str(), "state" => "queued")
            .increment(1);
        let answer = record.clone();
        self.queue.push_back(Pending { record, token, log });
        self.start_queued(myself).await;
        Ok(answer)
    }

    async fn cancel_queued(&mut self, id: JobId, by: &str) -> Option<Result<JobRecord, JobError>> {
        let at = self.queue.iter().position(|p| p.record.id == id)?;
        let mut pending = self.queue.remove(at)?;
        let record = &mut pending.record;
        record.state = JobState::Cancelled;
        record.finished_at = Some(chrono::Utc::now());
        record.error = Some(format!("cancelled by {by} before it started"));
        pending
            .log
            .append("node", format!("cancelled by {by} while queued"), None);
        metrics::counter!("hanzo_twin_jobs_total", "kind" => record.kind.as_str(), "state" => "cancelled")
            .increment(1);
        self.publish_gauges();
        Some(
            self.args
                .store
                .put(record)
                .await
                .map(|()| pending.record)
                .map_err(JobError::from),
        )
    }

    /// Queues the jobs this node was running or holding when it stopped. (A
    /// job whose environments live on a twin needs its submitter's token,
    /// which never outlives the node: its actor fails it, saying so.)
    async fn resume(&mut self, myself: &ActorRef<JobsMsg>) -> Result<(), JobError> {
        let mut unfinished = self
            .args
            .store
            .unfinished(&self.args.config.node_id)
            .await?;
        unfinished.sort_by_key(|r| r.id);
        for record in unfinished {
            self.requeue(record, "the node restarted").await?;
        }
        self.start_queued(myself).await;
        Ok(())
    }

    /// Takes over the unfinished jobs of nodes outside `live` that `owns`
    /// gives this node. Each is claimed in the store first: of two nodes
    /// that try at once, one gets it.
    async fn adopt_orphans(
        &mut self,
        myself: &ActorRef<JobsMsg>,
        live: &[String],
        owns: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<(), JobError> {
        let me = self.args.config.node_id.clone();
        let mut orphans = self.args.store.orphaned(live).await?;
        orphans.sort_by_key(|r| r.id);
        for orphan in orphans {
            if !owns(&orphan.id.to_string()) {
                continue;
            }
            let from = orphan.node.clone().unwrap_or_default();
            let Some(record) = self.args.store.claim(orphan.id, &me, Some(&from)).await? else {
                continue;
            };
            tracing::info!(job = %record.id, from = %from, "took over a job of a node that stopped answering");
            metrics::counter!("hanzo_twin_jobs_taken_over_total").increment(1);
            self.requeue(
                record,
                &format!("its node {from} stopped answering and {me} took it over"),
            )
            .await?;
        }
        self.start_queued(myself).await;
        Ok(())
    }

    /// Queues an unfinished job again on this node, saying why in its log: a
    /// training job resumes from its latest checkpoint, other kinds start
    /// over.
    async fn requeue(&mut self, mut record: JobRecord, why: &str) -> Result<(), JobError> {
        let Ok(mut log) = self.args.logs.writer_after(record.id, record.log_lines) else {
            return Ok(());
        };
        let how = match record.latest_policy() {
            Some(p) if record.kind == JobKind::Train => {
                format!("from its checkpoint at {} steps", p.steps)
            }
            _ => "from the start".to_string(),
        };
        log.append(
            "node",
            format!("{why}; the job is queued to resume {how}"),
            None,
        );
        record.state = JobState::Queued;
        record.node = Some(self.args.config.node_id.clone());
        record.log_lines = log.lines();
        self.args.store.put(&record).await?;
        self.queue.push_back(Pending {
            record,
            token: None,
            log,
        });
        Ok(())
    }
}

impl Actor for JobsHost {
    type Msg = JobsMsg;
    type State = JobsState;
    type Arguments = JobsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<JobsMsg>,
        args: JobsArgs,
    ) -> Result<JobsState, ActorProcessingErr> {
        // A restarted host runs nothing yet: the jobs its predecessor ran
        // ended with it (the ones it resumes come back as they start).
        args.board.clear();
        Ok(JobsState {
            args,
            queue: VecDeque::new(),
            running: HashMap::new(),
            by_actor: HashMap::new(),
            env_gauges: Default::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<JobsMsg>,
        state: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = state.resume(&myself).await {
            tracing::error!("cannot resume the node's jobs: {e}");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<JobsMsg>,
        msg: JobsMsg,
        state: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobsMsg::Submit {
                record,
                token,
                reply,
            } => {
                let _ = reply.send(state.submit(&myself, *record, token).await);
            }
            JobsMsg::Cancel { id, by, reply } => {
                if let Some(done) = state.cancel_queued(id, &by).await {
                    let _ = reply.send(done);
                } else if let Some(running) = state.running.get(&id) {
                    // The job answers once its worker has stopped.
                    if let Err(e) = running.actor.cast(JobMsg::Cancel { by, reply }) {
                        tracing::warn!(job = %id, "the job's actor is gone: {e}");
                    }
                } else {
                    let _ = reply.send(Err(JobError::Conflict(format!(
                        "job {id} is not running on this node ({}); its node cancels it",
                        state.args.config.node_id
                    ))));
                }
            }
            JobsMsg::AdoptOrphans { live, owns } => {
                if let Err(e) = state.adopt_orphans(&myself, &live, &*owns).await {
                    tracing::warn!(error = %e, "taking over the jobs of departed nodes failed");
                }
            }
            JobsMsg::Rate {
                id,
                steps_per_second,
            } => {
                if let Some(r) = state.running.get_mut(&id) {
                    r.steps_per_second = steps_per_second;
                    state.publish_gauges();
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobsMsg>,
        event: SupervisionEvent,
        state: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(id) = state.by_actor.remove(&actor) else {
            return Ok(());
        };
        state.running.remove(&id);
        state.args.board.ended(&id.to_string());
        if let Some(err) = failure {
            // The actor's own end records the outcome; a panic skipped it.
            tracing::error!(job = %id, "the job's actor failed: {err}");
            if let Ok(Some(mut record)) = state.args.store.get(id).await
                && !record.state.is_final()
            {
                record.state = JobState::Failed;
                record.error = Some(format!("the job's actor failed: {err}"));
                record.finished_at = Some(chrono::Utc::now());
                if let Err(e) = state.args.store.put(&record).await {
                    tracing::error!(job = %id, "cannot record the failure: {e}");
                }
            }
        }
        state.start_queued(&myself).await;
        Ok(())
    }
}

//! Jobs: long-running work a caller submits and watches (`/v1/jobs`), each a
//! supervised actor under the node's jobs host.
//!
//! ```text
//! jobs                      JobsHost: the queue, at most scheduler.max_concurrent_jobs running
//! ├── job:<id>              JobActor: owns the job's record while it runs
//! │   └── worker process    python -m hanzo_twin.train (Stable-Baselines3)
//! └── job:<id>
//! ```
//!
//! A job's record is kept in the node's store (sled or PostgreSQL), its log
//! as JSON lines in the node's data folder, and what it produces (policy
//! checkpoints) in object storage. A node that restarts resumes the jobs it
//! was running: a training job from its latest checkpoint.

mod actor;
mod host;
pub mod log;
mod remote;
mod replay;
pub mod spec;
pub mod synthdata;

pub use host::{JobsArgs, JobsConfig, JobsHost, JobsMsg};
pub use log::{JobLogLine, LogCursor, LogFollowers};
pub use remote::LogPage;
pub use spec::*;
pub use synthdata::DatasetStore;

use remote::{JobReply, JobRequest, JobsCluster};

use crate::store::{BoxFuture, StoreResult};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;

/// Recorded load, ready to replay.
#[derive(Debug, Clone)]
pub struct RecordedTraffic {
    pub traffic: hanzo_twin_engines::infra::TrafficModel,
    /// The first bucket (Unix seconds): the replay's time 0.
    pub start: f64,
    /// Seconds from the first bucket to the end of the last.
    pub span_s: f64,
    pub buckets: usize,
    /// Services in the rows that the topology lacks (their load is left out).
    pub unknown: Vec<String>,
}

/// The timeseries database (HIP-0059) that replays read recorded load from
/// and write their results back to; the node's runtime provides it.
pub trait Timeseries: Send + Sync + 'static {
    /// Runs `query` within `[from, to)` (Unix seconds) as traffic for the
    /// services of `model`.
    fn read(
        &self,
        query: String,
        from: Option<f64>,
        to: Option<f64>,
        model: hanzo_twin_engines::infra::InfraModel,
    ) -> BoxFuture<'static, Result<RecordedTraffic, String>>;

    /// Writes a run to `twin_experiments`, tagged; the rows written.
    fn write(
        &self,
        experiment: String,
        variant: String,
        start: f64,
        report: hanzo_twin_engines::infra::Report,
        breaches: usize,
    ) -> BoxFuture<'static, Result<u64, String>>;
}

/// Durable job records.
pub trait JobStore: Send + Sync + 'static {
    /// Writes the record. A shared store refuses, with a conflict error, a
    /// write from a node other than the one holding the job now.
    fn put(&self, record: &JobRecord) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, id: JobId) -> BoxFuture<'_, StoreResult<Option<JobRecord>>>;
    /// Newest first: the jobs `filter` admits that are older than `after`
    /// (the last id of the previous page), at most `limit`.
    fn page<'a>(
        &'a self,
        filter: &'a JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRecord>>>;
    /// The jobs not yet finished that `node` holds or that no node holds:
    /// what a starting node resumes.
    fn unfinished<'a>(&'a self, node: &'a str) -> BoxFuture<'a, StoreResult<Vec<JobRecord>>>;
    /// The jobs not yet finished that a node outside `live` holds (its lease
    /// ran out): what the survivors of a cluster take over. A store one
    /// node keeps alone has none.
    fn orphaned<'a>(&'a self, _live: &'a [String]) -> BoxFuture<'a, StoreResult<Vec<JobRecord>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Makes `node` the holder of an unfinished job that `from` holds: the
    /// record as stored when the claim took, `None` when another node took
    /// it first or it has finished. A shared store does this atomically.
    fn claim<'a>(
        &'a self,
        id: JobId,
        node: &'a str,
        from: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<JobRecord>>> {
        Box::pin(async move {
            let Some(mut record) = self.get(id).await? else {
                return Ok(None);
            };
            if record.state.is_final() || record.node.as_deref() != from {
                return Ok(None);
            }
            record.node = Some(node.to_string());
            self.put(&record).await?;
            Ok(Some(record))
        })
    }
}

/// What jobs produce, by job and file name (object storage:
/// `jobs/<id>/<name>` in the checkpoints bucket).
pub trait ArtifactStore: Send + Sync + 'static {
    fn put(&self, job: JobId, name: &str, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, job: JobId, name: &str) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>>;
}

/// Why a job request failed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobError {
    #[error("{0}")]
    Invalid(#[from] SpecError),
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The caller may not act on this job (an operator cancelling another's).
    #[error("{0}")]
    Forbidden(String),
    /// The job cannot take this request in its state.
    #[error("{0}")]
    Conflict(String),
    #[error("the job store failed: {0}")]
    Store(String),
    #[error("the jobs host did not answer: {0}")]
    Unavailable(String),
}

impl From<crate::store::StoreError> for JobError {
    fn from(e: crate::store::StoreError) -> Self {
        JobError::Store(e.to_string())
    }
}

/// How callers reach the node's jobs: submits and cancels through the jobs
/// host, reads straight from the store and the log files.
#[derive(Clone)]
pub struct JobsNode {
    /// Swapped by the node's supervisor when it restarts the jobs host.
    host: Arc<std::sync::RwLock<ActorRef<JobsMsg>>>,
    store: Arc<dyn JobStore>,
    artifacts: Arc<dyn ArtifactStore>,
    logs: Arc<LogFollowers>,
    /// Other nodes, for jobs that run there.
    cluster: JobsCluster,
}

/// How long a caller waits for the jobs host; a cancel waits for its job's
/// worker to stop as well (a second, then it is killed).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl JobsNode {
    pub fn new(
        host: ActorRef<JobsMsg>,
        store: Arc<dyn JobStore>,
        artifacts: Arc<dyn ArtifactStore>,
        logs: Arc<LogFollowers>,
    ) -> JobsNode {
        JobsNode {
            host: Arc::new(std::sync::RwLock::new(host)),
            store,
            artifacts,
            logs,
            cluster: JobsCluster::default(),
        }
    }

    /// Takes over the unfinished jobs of nodes outside `live` (a cluster's
    /// nodes whose lease ran out) that placement gives this node (`owns`, by
    /// job id). Done on the jobs host's loop; this returns at once.
    pub fn adopt_orphans(&self, live: Vec<String>, owns: Box<dyn Fn(&str) -> bool + Send + Sync>) {
        let host = self.host.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Err(e) = host.cast(JobsMsg::AdoptOrphans { live, owns }) {
            tracing::warn!("the jobs host is gone: {e}");
        }
    }

    /// Lets this node cancel, and follow the logs of, jobs that run on the
    /// other nodes of its cluster.
    pub fn attach_cluster(&self, link: Arc<dyn crate::remote::ClusterLink>) {
        self.cluster.attach(link);
    }

    /// Points this handle (and its clones) at a restarted jobs host.
    pub fn replace_host(&self, host: ActorRef<JobsMsg>) {
        *self.host.write().unwrap_or_else(|p| p.into_inner()) = host;
    }

    /// Queues a job. `token` is the submitter's bearer token. It is kept
    /// only for a job that reaches its environments through the API as its
    /// submitter would: one on a twin (training on one, or evaluating a
    /// policy trained on one) and RLlib training, whose env runners run
    /// outside the node. It is held in memory only, never stored or logged.
    pub async fn submit(
        &self,
        spec: JobSpec,
        owner: String,
        organization: String,
        token: Option<String>,
    ) -> Result<JobRecord, JobError> {
        spec.check()?;
        let mut through_api = spec.trains_through_api();
        if let JobSpec::Evaluate(eval) = &spec {
            // The policy must exist for the submitter to see, and be one.
            let trained = match self.store.get(eval.policy_job).await? {
                Some(r) if r.organization == organization => r,
                _ => {
                    return Err(JobError::Invalid(SpecError {
                        field: "policy_job".into(),
                        message: format!("job {} not found", eval.policy_job),
                    }));
                }
            };
            if trained.kind != JobKind::Train || trained.latest_policy().is_none() {
                return Err(JobError::Invalid(SpecError {
                    field: "policy_job".into(),
                    message: format!(
                        "job {} has no policy to evaluate (a {} job, {})",
                        trained.id,
                        trained.kind.as_str(),
                        trained.state.as_str()
                    ),
                }));
            }
            // An evaluation steps its environments in the worker itself.
            through_api = matches!(&trained.spec, JobSpec::Train(t) if t.twin.is_some());
        }
        let record = Box::new(JobRecord::new(spec, owner, organization));
        let token = token.filter(|_| through_api);
        // Placed as a twin is, by id: jobs spread over the cluster's nodes.
        if let Some((link, node)) = self.cluster.placed(&record.id.to_string()) {
            let request = JobRequest::Submit {
                record: record.clone(),
                token: token.clone(),
            };
            match JobsCluster::call(&*link, &node, &request, Duration::ZERO).await {
                Ok(JobReply::Submitted(record)) => return Ok(*record),
                Ok(other) => return Err(unexpected(&node, &other)),
                // Placement's node is out of reach: the job runs here rather
                // than not at all (it stays here; placement moves only the
                // jobs of nodes that died).
                Err(JobError::Unavailable(why)) => {
                    // Unless it got there and only the answer was lost.
                    if let Some(stored) = self.store.get(record.id).await? {
                        return Ok(stored);
                    }
                    tracing::warn!(job = %record.id, node = %node, "placed on an unreachable node ({why}); running it here");
                }
                Err(refused) => return Err(refused),
            }
        }
        self.submit_here(record, token).await
    }

    /// Queues a job on this node.
    async fn submit_here(
        &self,
        record: Box<JobRecord>,
        token: Option<String>,
    ) -> Result<JobRecord, JobError> {
        self.call(|reply| JobsMsg::Submit {
            record,
            token,
            reply,
        })
        .await
    }

    /// Cancels a job the caller may act on (`may_act_on(owner)`), and
    /// answers once it has stopped.
    pub async fn cancel(
        &self,
        id: JobId,
        organization: &str,
        by: &str,
        may_act_on: impl Fn(&str) -> bool,
    ) -> Result<JobRecord, JobError> {
        let record = self.get(id, organization).await?;
        if !may_act_on(&record.owner) {
            return Err(JobError::Forbidden(format!(
                "job {id} is {}'s; your roles cancel only your own jobs",
                record.owner
            )));
        }
        if record.state.is_final() {
            return Err(JobError::Conflict(format!(
                "job {id} is {} already",
                record.state.as_str()
            )));
        }
        let by = by.to_string();
        match self.cluster.towards(record.node.as_deref()) {
            Some((link, node)) => {
                let request = JobRequest::Cancel { id, by };
                match JobsCluster::call(&*link, &node, &request, CALL_TIMEOUT).await? {
                    JobReply::Cancelled(record) => Ok(*record),
                    other => Err(unexpected(&node, &other)),
                }
            }
            None => self.cancel_here(id, by).await,
        }
    }

    /// Cancels a job of this node.
    async fn cancel_here(&self, id: JobId, by: String) -> Result<JobRecord, JobError> {
        self.call(|reply| JobsMsg::Cancel { id, by, reply }).await
    }

    /// The lines of `record`'s log from `cursor` on, read on the node the
    /// job runs on, and whether the job still writes it. With `wait`, and
    /// no line yet, waits that long for one.
    pub async fn read_log(
        &self,
        record: &JobRecord,
        cursor: LogCursor,
        wait: Option<Duration>,
    ) -> Result<LogPage, JobError> {
        match self.cluster.towards(record.node.as_deref()) {
            Some((link, node)) => {
                let request = JobRequest::ReadLog {
                    id: record.id,
                    offset: cursor.offset(),
                    wait_ms: wait.map(|w| w.as_millis() as u64),
                };
                let waited = wait.unwrap_or_default();
                match JobsCluster::call(&*link, &node, &request, waited).await? {
                    JobReply::Log(page) => Ok(page),
                    other => Err(unexpected(&node, &other)),
                }
            }
            None => self.read_log_here(record.id, cursor, wait).await,
        }
    }

    /// [`JobsNode::read_log`] of a job of this node.
    async fn read_log_here(
        &self,
        id: JobId,
        cursor: LogCursor,
        wait: Option<Duration>,
    ) -> Result<LogPage, JobError> {
        // Asked before reading: a log that is not live has all its lines.
        let live = self.logs.live(id);
        let page = self.read_page(id, cursor, live.is_some()).await?;
        match (live, wait) {
            (Some(mut signal), Some(wait)) if page.lines.is_empty() => {
                // A new line, the writer gone (the job ended), or the wait.
                let _ = tokio::time::timeout(wait, signal.changed()).await;
                let live = self.logs.live(id).is_some();
                self.read_page(id, cursor, live).await
            }
            _ => Ok(page),
        }
    }

    async fn read_page(
        &self,
        id: JobId,
        cursor: LogCursor,
        live: bool,
    ) -> Result<LogPage, JobError> {
        match self.logs.read(id, cursor, remote::MAX_PAGE_BYTES).await {
            Ok((lines, cursor)) => Ok(LogPage {
                lines,
                cursor,
                live,
            }),
            // Queued and not started: no log yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LogPage {
                lines: Vec::new(),
                cursor,
                live,
            }),
            Err(e) => Err(JobError::Unavailable(format!(
                "cannot read the job's log: {e}"
            ))),
        }
    }

    /// A job of `organization` (others' answer not found).
    pub async fn get(&self, id: JobId, organization: &str) -> Result<JobRecord, JobError> {
        match self.store.get(id).await? {
            Some(r) if r.organization == organization => Ok(r),
            _ => Err(JobError::NotFound(id)),
        }
    }

    pub async fn page(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        Ok(self.store.page(filter, after, limit).await?)
    }

    /// An artifact of a job of `organization`.
    pub async fn artifact(
        &self,
        id: JobId,
        organization: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, JobError> {
        let record = self.get(id, organization).await?;
        if !record.artifacts.iter().any(|a| a.name == name) {
            return Ok(None);
        }
        Ok(self.artifacts.get(id, name).await?)
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(ractor::RpcReplyPort<Result<T, JobError>>) -> JobsMsg,
    ) -> Result<T, JobError> {
        let host = self.host.read().unwrap_or_else(|p| p.into_inner()).clone();
        match host.call(msg, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => Err(JobError::Unavailable(format!(
                "no answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                Err(JobError::Unavailable("the jobs host stopped".into()))
            }
        }
    }
}

/// An answer of another node that does not fit the request.
fn unexpected(node: &str, reply: &JobReply) -> JobError {
    JobError::Unavailable(format!(
        "the job's node {node} answered another request: {reply:?}"
    ))
}

/// The node's twins, for a job that works on them: a job resumed at the
/// node's start may run before the node has set them, so it waits for them,
/// 60 s at most.
pub(crate) async fn node_twins(
    twins: &std::sync::OnceLock<crate::TwinNode>,
) -> Result<crate::TwinNode, String> {
    let waiting = std::time::Instant::now();
    loop {
        if let Some(twins) = twins.get() {
            return Ok(twins.clone());
        }
        if waiting.elapsed() > std::time::Duration::from_secs(60) {
            return Err("the node's twins did not start within 60 s".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

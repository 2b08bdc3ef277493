//! Job requests between the nodes of a cluster. A job runs on the node
//! placement gives it to (as a twin is placed, by its id), whichever node it
//! was submitted to; its record is in the shared store, so any node reads
//! it, but submitting, cancelling it and reading its log go to its node.
//! They travel as small JSON frames over the cluster's link
//! ([`ClusterLink::call_jobs`]).

use super::log::LogCursor;
use super::{JobError, JobId, JobLogLine, JobRecord, JobsNode};
use crate::remote::ClusterLink;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// One request for the node a job runs on.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum JobRequest {
    /// Queue a job placed on this node. `token` is the submitter's, for a
    /// job that reaches its environments through the API.
    Submit {
        record: Box<JobRecord>,
        token: Option<String>,
    },
    /// Cancel the job (the caller's rights were checked where it asked).
    Cancel { id: JobId, by: String },
    /// The log's lines from `offset`; with `wait_ms`, wait that long for a
    /// line when there is none yet.
    ReadLog {
        id: JobId,
        offset: u64,
        wait_ms: Option<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum JobReply {
    Submitted(Box<JobRecord>),
    Cancelled(Box<JobRecord>),
    Log(LogPage),
}

/// Lines of a job's log, where the next read starts, and whether the job
/// is still writing it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<JobLogLine>,
    pub cursor: LogCursor,
    pub live: bool,
}

/// Most of a log one answer carries: frames between nodes stay small, and a
/// reader asks again for the rest.
pub(super) const MAX_PAGE_BYTES: usize = 256 * 1024;

/// How long a call to another node may take beyond the wait it asks for.
const CALL_MARGIN: Duration = Duration::from_secs(10);

/// The cluster as the jobs see it, once the node has joined one.
#[derive(Clone, Default)]
pub(super) struct JobsCluster(Arc<std::sync::RwLock<Option<Arc<dyn ClusterLink>>>>);

impl JobsCluster {
    pub fn attach(&self, link: Arc<dyn ClusterLink>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    fn link(&self) -> Option<Arc<dyn ClusterLink>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The link, when `node` is another node of the cluster than this one.
    pub fn towards(&self, node: Option<&str>) -> Option<(Arc<dyn ClusterLink>, String)> {
        let link = self.link()?;
        let node = node?;
        (node != link.local_node()).then(|| (link, node.to_string()))
    }

    /// The other node placement gives `key` (a job's id) to; `None` when it
    /// is this node's, or there is no cluster.
    pub fn placed(&self, key: &str) -> Option<(Arc<dyn ClusterLink>, String)> {
        let owner = self.link()?.owner(key)?;
        self.towards(Some(&owner))
    }

    /// Sends `request` to `node`'s jobs and returns its answer.
    pub async fn call(
        link: &dyn ClusterLink,
        node: &str,
        request: &JobRequest,
        wait: Duration,
    ) -> Result<JobReply, JobError> {
        let frame = serde_json::to_vec(request)
            .map_err(|e| JobError::Unavailable(format!("cannot encode the request: {e}")))?;
        let answer = link
            .call_jobs(node, frame, wait + CALL_MARGIN)
            .await
            .map_err(|e| JobError::Unavailable(format!("the job's node {node}: {e}")))?;
        serde_json::from_slice::<Result<JobReply, JobError>>(&answer).map_err(|e| {
            JobError::Unavailable(format!("the job's node {node} answered garbled: {e}"))
        })?
    }
}

impl JobsNode {
    /// Serves a request from another node of the cluster: its answer, as a
    /// frame.
    pub async fn serve_frame(&self, frame: &[u8]) -> Vec<u8> {
        let answer: Result<JobReply, JobError> = match serde_json::from_slice(frame) {
            Ok(JobRequest::Submit { record, token }) => self
                .submit_here(record, token)
                .await
                .map(|r| JobReply::Submitted(Box::new(r))),
            Ok(JobRequest::Cancel { id, by }) => self
                .cancel_here(id, by)
                .await
                .map(|r| JobReply::Cancelled(Box::new(r))),
            Ok(JobRequest::ReadLog {
                id,
                offset,
                wait_ms,
            }) => self
                .read_log_here(
                    id,
                    LogCursor::at(offset),
                    wait_ms.map(Duration::from_millis),
                )
                .await
                .map(JobReply::Log),
            Err(e) => Err(JobError::Unavailable(format!(
                "not a job request this node knows: {e}"
            ))),
        };
        serde_json::to_vec(&answer).unwrap_or_else(|e| {
            serde_json::to_vec(&Err::<JobReply, _>(JobError::Unavailable(e.to_string())))
                .unwrap_or_default()
        })
    }
}

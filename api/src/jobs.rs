//! `/v1/jobs`: submit, list, read, cancel and follow long-running work
//! (training and evaluation), with the spec's `jobs:*` permissions. A job
//! is its organization's; an operator cancels only their own.

use crate::error::ApiError;
use crate::guard::{Caller, Created, GET, POST, Routes};
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, ApiState, paging, parse_json};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use hanzo_twin_actors::jobs::log::LogCursor;
use hanzo_twin_actors::jobs::{
    JobError, JobFilter, JobId, JobKind, JobRecord, JobSpec, JobState, JobsNode,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

const JOBS_READ: Permission = Permission::new(Resource::Jobs, Action::Read);
const JOBS_SUBMIT: Permission = Permission::new(Resource::Jobs, Action::Submit);
const JOBS_CANCEL: Permission = Permission::new(Resource::Jobs, Action::Cancel);

pub(crate) fn routes() -> Routes {
    Routes::new()
        .audited(POST, "/v1/jobs", JOBS_SUBMIT, "jobs.submit", submit)
        .protected(GET, "/v1/jobs", JOBS_READ, list)
        .protected(GET, "/v1/jobs/{id}", JOBS_READ, get_job)
        .audited(
            POST,
            "/v1/jobs/{id}/cancel",
            JOBS_CANCEL,
            "jobs.cancel",
            cancel,
        )
        .protected(GET, "/v1/jobs/{id}/logs", JOBS_READ, logs)
        .protected(GET, "/v1/jobs/{id}/artifacts/{name}", JOBS_READ, artifact)
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Invalid(s) => ApiError::invalid(s.field, s.message),
            JobError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            JobError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            JobError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            JobError::Store(_) | JobError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

pub(crate) fn job_id(raw: &str) -> Result<JobId, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::invalid("id", "not a job id (a UUID)"))
}

/// The bearer token of the request, which a job on a twin acts with.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

#[utoipa::path(post, path = "/v1/jobs", operation_id = "jobs_submit", tag = "jobs", request_body(content = JobSpec, content_type = "application/json"), responses((status = 201, description = "The job, queued (or running already)", body = JobRecord), Errors))]
pub(crate) async fn submit(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: JobSpec = parse_json(&body, false)?;
    // The jobs keep the token only for a job on a twin.
    let record = state
        .jobs
        .submit(
            spec,
            caller.principal.subject.clone(),
            caller.principal.organization.to_string(),
            bearer(&headers),
        )
        .await?;
    let mut response = (StatusCode::CREATED, axum::Json(&record)).into_response();
    response
        .extensions_mut()
        .insert(Created(record.id.to_string()));
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobListQuery {
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    state: Option<String>,
    /// `train`, `evaluate`, `compare`, `synthdata` or `replay`.
    kind: Option<String>,
    /// Only jobs this subject submitted.
    owner: Option<String>,
    /// Jobs per page, 1 to 1000 (default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of jobs, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobPage {
    jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs", operation_id = "jobs_list", tag = "jobs", params(JobListQuery), responses((status = 200, description = "One page of the organization's jobs, newest first", body = JobPage), Errors))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<JobListQuery>,
) -> ApiResult {
    let filter = JobFilter {
        organization: Some(caller.principal.organization.to_string()),
        state: match q.state.as_deref() {
            Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "state",
                    "one of queued, running, succeeded, failed, cancelled",
                )
            })?),
            None => None,
        },
        kind: match q.kind.as_deref() {
            Some(k) => Some(JobKind::parse(k).ok_or_else(|| {
                ApiError::invalid("kind", "one of train, evaluate, compare, synthdata, replay")
            })?),
            None => None,
        },
        owner: q.owner,
    };
    let limit = paging::limit(q.limit.as_deref(), 100, 1000)?;
    let after = paging::cursor(q.cursor.as_deref(), |c| uuid::Uuid::parse_str(c).ok())?;
    let page = state.jobs.page(&filter, after, limit).await?;
    let next_cursor = paging::next_cursor(&page, limit, |r| r.id.to_string());
    Ok(axum::Json(JobPage {
        jobs: page,
        next_cursor,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "jobs_get", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job's id")), responses((status = 200, description = "The job: its state, progress, result and artifacts", body = JobRecord), Errors))]
pub(crate) async fn get_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let record = state
        .jobs
        .get(job_id(&id)?, caller.principal.organization.as_str())
        .await?;
    Ok(axum::Json(record).into_response())
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "jobs_cancel", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job's id")), responses((status = 200, description = "The job, stopped: what it produced is kept", body = JobRecord), Errors))]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let record = state
        .jobs
        .cancel(
            job_id(&id)?,
            caller.principal.organization.as_str(),
            &caller.principal.subject,
            |owner| caller.may_act_on(owner),
        )
        .await?;
    Ok(axum::Json(record).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Start after this line (as the `Last-Event-ID` header does).
    after: Option<u64>,
    /// `false`: the lines written so far, then `end` with the job as it
    /// stands; default `true`: on until the job has finished.
    follow: Option<bool>,
}

/// One server-sent event of `GET /v1/jobs/{id}/logs`: `event` is `log`
/// (`data` a [`JobLogLine`], `id` its number) or, last, `end` (`data` the
/// finished [`JobRecord`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the stream; events are written as text.
pub(crate) struct LogStreamEvent {
    event: Option<String>,
    data: String,
    id: Option<String>,
}

/// How long a follower waits for a line before it checks the job again.
const FOLLOW_POLL: Duration = Duration::from_secs(15);

#[utoipa::path(get, path = "/v1/jobs/{id}/logs", operation_id = "jobs_logs", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job's id"), LogQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this line")), responses((status = 200, description = "Server-sent events: each line of the job's log (`log`, its id the line's number), then `end` with the job once it has finished", body = LogStreamEvent, content_type = "text/event-stream"), Errors))]
pub(crate) async fn logs(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = job_id(&id)?;
    let organization = caller.principal.organization.to_string();
    let node = state.jobs.clone();
    // The job must be the caller's organization's.
    let record = node.get(id, &organization).await?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::invalid("Last-Event-ID", "must be the number of a line of the log")
            })?,
        None => q.after.unwrap_or(0),
    };
    let follow = Follow {
        node,
        record,
        organization,
        after,
        cursor: LogCursor::default(),
        queue: VecDeque::new(),
        follow: q.follow.unwrap_or(true),
        done: false,
    };
    let stream = stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(event) = f.queue.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            f.next().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A reader of a job's log, on whichever node of the cluster the job runs.
struct Follow {
    node: JobsNode,
    /// The job as last read: where it runs, and whether it has finished.
    record: JobRecord,
    organization: String,
    after: u64,
    cursor: LogCursor,
    queue: VecDeque<Event>,
    follow: bool,
    done: bool,
}

impl Follow {
    /// Queues the lines written since the last read; waits for more while
    /// the job writes its log, and ends with the job's record once it does
    /// not.
    async fn next(&mut self) {
        let wait = self.follow.then_some(FOLLOW_POLL);
        let page = match self.node.read_log(&self.record, self.cursor, wait).await {
            Ok(page) => page,
            Err(e) => {
                self.fail(e.to_string());
                return;
            }
        };
        self.cursor = page.cursor;
        let after = self.after;
        for line in page.lines.into_iter().filter(|l| l.seq > after) {
            self.after = line.seq;
            self.queue.push_back(
                Event::default()
                    .event("log")
                    .id(line.seq.to_string())
                    .json_data(&line)
                    .unwrap_or_default(),
            );
        }
        if !self.queue.is_empty() || (page.live && self.follow) {
            return;
        }
        match self.node.get(self.record.id, &self.organization).await {
            Ok(r) if r.state.is_final() || !self.follow => {
                self.queue.push_back(
                    Event::default()
                        .event("end")
                        .json_data(&r)
                        .unwrap_or_default(),
                );
                self.done = true;
            }
            // Not finished, and its log not written: it is queued, or
            // between a node's restart and its resume.
            Ok(r) => {
                self.record = r;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, why: String) {
        self.queue
            .push_back(Event::default().event("error").data(why));
        self.done = true;
    }
}

#[utoipa::path(get, path = "/v1/jobs/{id}/artifacts/{name}", operation_id = "jobs_artifact", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job's id"), ("name" = String, Path, description = "The artifact's name, as the job lists it")), responses((status = 200, description = "The artifact's bytes: a policy (a Stable-Baselines3 zip), or a replay's plot (`comparison.svg`, image/svg+xml)", content((Vec<u8> = "application/octet-stream"), (String = "image/svg+xml"))), Errors))]
pub(crate) async fn artifact(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult {
    let id = job_id(&id)?;
    let bytes = state
        .jobs
        .artifact(id, caller.principal.organization.as_str(), &name)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "job {id} has no artifact {}",
                    hanzo_twin_actors::definition::shortened(&name)
                ),
            )
        })?;
    let disposition = format!("attachment; filename=\"{id}-{name}\"");
    // A plot opens in a browser; policies and the rest are downloads.
    let content_type = if name.ends_with(".svg") {
        "image/svg+xml"
    } else {
        "application/octet-stream"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

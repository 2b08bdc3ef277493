//! `/v1/synthdata`: labelled image datasets drawn from a twin, as the
//! spec's Synthetic Data Generation section configures them. Each request
//! is a job (kind `synthdata`, also listed under `/v1/jobs`) that the
//! node's render workers draw; the dataset lands in the datasets bucket,
//! under the twin's organization, and downloads as a tar archive. The
//! spec's `synthdata:*` permissions apply, and generation is audited.

use crate::error::ApiError;
use crate::guard::{Caller, Created, GET, POST, Routes, Twins};
use crate::jobs::job_id;
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, ApiState, attachment, parse_json};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use hanzo_twin_actors::jobs::{JobKind, JobRecord, JobSpec, JobState};
use hanzo_twin_render::synth::SynthSpec;
use serde::Serialize;

const SYNTHDATA_GENERATE: Permission = Permission::new(Resource::Synthdata, Action::Generate);
const SYNTHDATA_READ: Permission = Permission::new(Resource::Synthdata, Action::Read);

/// The largest dataset served as one archive; bigger ones are read from
/// the datasets bucket directly.
const MAX_ARCHIVE_BYTES: usize = 1 << 30;

pub(crate) fn routes() -> Routes {
    Routes::new()
        .audited(
            POST,
            "/v1/synthdata",
            SYNTHDATA_GENERATE,
            "synthdata.generate",
            generate,
        )
        .protected(GET, "/v1/synthdata/{id}", SYNTHDATA_READ, status)
        .protected(GET, "/v1/synthdata/{id}/dataset", SYNTHDATA_READ, dataset)
}

/// A dataset's generation: where it stands and what it made.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SynthdataStatus {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    state: JobState,
    twin_id: String,
    dataset: String,
    frames_done: u64,
    num_frames: u64,
    /// Frames a second since the job (re)started.
    frames_per_second: Option<f64>,
    /// Once finished: the dataset's version, its folder in the datasets
    /// bucket, and its image and annotation counts.
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    error: Option<String>,
    #[schema(value_type = String)]
    created_at: chrono::DateTime<chrono::Utc>,
}

fn status_of(record: &JobRecord) -> Result<SynthdataStatus, ApiError> {
    let JobSpec::Synthdata(spec) = &record.spec else {
        return Err(not_a_dataset(record.id));
    };
    Ok(SynthdataStatus {
        id: record.id,
        state: record.state,
        twin_id: spec.twin_id.clone(),
        dataset: spec.output_dataset.clone(),
        frames_done: record.progress.steps,
        num_frames: record.progress.total_steps,
        frames_per_second: record.progress.steps_per_second,
        result: record.result.clone(),
        error: record.error.clone(),
        created_at: record.created_at,
    })
}

fn not_a_dataset(id: uuid::Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("synthetic dataset job {id} not found"),
    )
}

/// Submits the spec's synthetic data job configuration (as JSON). The twin
/// must be one the caller can see; it is drawn as it stands when the job
/// starts, varied per frame as `randomization` says.
#[utoipa::path(post, path = "/v1/synthdata", operation_id = "synthdata_generate", tag = "synthdata", request_body(content = SynthSpec, content_type = "application/json"), responses((status = 201, description = "The generation, queued or running", body = SynthdataStatus), Errors))]
pub(crate) async fn generate(
    State(state): State<ApiState>,
    Twins(node): Twins,
    caller: Caller,
    body: Bytes,
) -> ApiResult {
    let spec: SynthSpec = parse_json(&body, false)?;
    // One mapping of a render error to an answer: the twin API's.
    spec.validate()
        .map_err(|e| ApiError::from(hanzo_twin_actors::TwinError::from(e)))?;
    // The twin must exist for the caller (its organization's) and run.
    node.info(&spec.twin_id)
        .await
        .map_err(|e| ApiError::from(e).with_field("twin_id"))?;
    let record = state
        .jobs
        .submit(
            JobSpec::Synthdata(spec),
            caller.principal.subject.clone(),
            caller.principal.organization.to_string(),
            None,
        )
        .await?;
    let mut response = (StatusCode::CREATED, axum::Json(status_of(&record)?)).into_response();
    response
        .extensions_mut()
        .insert(Created(record.id.to_string()));
    Ok(response)
}

async fn record(state: &ApiState, caller: &Caller, id: &str) -> Result<JobRecord, ApiError> {
    let id = job_id(id)?;
    let record = state
        .jobs
        .get(id, caller.principal.organization.as_str())
        .await
        .map_err(|_| not_a_dataset(id))?;
    if record.kind != JobKind::Synthdata {
        return Err(not_a_dataset(id));
    }
    Ok(record)
}

/// Progress (frames done, rate) and, once finished, the dataset's version.
#[utoipa::path(get, path = "/v1/synthdata/{id}", operation_id = "synthdata_get", tag = "synthdata", params(("id" = String, Path, format = Uuid, description = "The generation's id")), responses((status = 200, description = "The generation", body = SynthdataStatus), Errors))]
pub(crate) async fn status(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let record = record(&state, &caller, &id).await?;
    Ok(axum::Json(status_of(&record)?).into_response())
}

/// The finished dataset as one tar archive: images, label images,
/// `annotations.json` (COCO) and `manifest.json`.
#[utoipa::path(get, path = "/v1/synthdata/{id}/dataset", operation_id = "synthdata_dataset", tag = "synthdata", params(("id" = String, Path, format = Uuid, description = "The generation's id")), responses((status = 200, description = "The dataset", content((Vec<u8> = "application/x-tar"))), Errors))]
pub(crate) async fn dataset(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let record = record(&state, &caller, &id).await?;
    if record.state != JobState::Succeeded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_finished",
            format!(
                "the dataset is {}; it downloads once the generation has succeeded",
                serde_json::to_value(record.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        ));
    }
    let JobSpec::Synthdata(spec) = &record.spec else {
        return Err(not_a_dataset(record.id));
    };
    let store = state.datasets.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node keeps no datasets",
        )
    })?;
    let prefix = hanzo_twin_actors::jobs::synthdata::prefix(
        &record.organization,
        &spec.output_dataset,
        record.id,
    );
    let storage = |e: hanzo_twin_actors::StoreError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("datasets bucket: {e}"),
        )
    };
    let keys = store.list(&prefix).await.map_err(storage)?;
    let mut archive = tar::Builder::new(Vec::new());
    let mut size = 0usize;
    for key in keys {
        let Some(name) = key.strip_prefix(&prefix) else {
            continue;
        };
        // The per-batch parts are joined in annotations.json.
        if name.starts_with("annotations/") {
            continue;
        }
        let Some(bytes) = store.get(&key).await.map_err(storage)? else {
            continue;
        };
        size += bytes.len();
        if size > MAX_ARCHIVE_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the dataset is over {} MiB; read it from the datasets bucket under {prefix}",
                    MAX_ARCHIVE_BYTES >> 20
                ),
            ));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "archive", e.to_string())
            })?;
    }
    let bytes = archive
        .into_inner()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "archive", e.to_string()))?;
    let version = record
        .result
        .as_ref()
        .and_then(|r| r["version"].as_u64())
        .unwrap_or(1);
    Ok(attachment(
        "application/x-tar",
        &format!("{}-v{version}.tar", spec.output_dataset),
        bytes,
    ))
}

//! `/v1/infra/twins`: the spec's infrastructure twin endpoints. An
//! infrastructure twin is a twin (created, started, forked and stepped
//! through `/v1/twins`); these routes list them and reach what only they
//! have: the services' report with the assertions' verdicts, and chaos.

use crate::error::ApiError;
use crate::guard::{Caller, Created, GET, POST, Routes, Twins};
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, ApiState, parse_json};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use hanzo_twin_actors::{
    ChaosRequest, InfraStatus, TwinNode, TwinOp, TwinOpReply, TwinRecord, TwinType,
};
use hanzo_twin_engines::EngineKind;
use serde::Deserialize;

const fn infra(action: Action) -> Permission {
    Permission::new(Resource::Infra, action)
}

/// Reading is `infra:read`; chaos is the admin's (`infra:inject_chaos`),
/// audited as the spec asks, since what it reveals is sensitive.
pub(crate) fn routes() -> Routes {
    use Action::*;
    Routes::new()
        .protected(GET, "/v1/infra/twins", infra(Read), list)
        .protected(GET, "/v1/infra/twins/{id}", infra(Read), status)
        .audited(
            POST,
            "/v1/infra/twins/{id}/inject",
            infra(InjectChaos),
            "infra.inject_chaos",
            inject,
        )
        .audited(
            POST,
            "/v1/infra/twins/{id}/replay",
            infra(Replay),
            "infra.replay",
            replay,
        )
}

/// What to replay (`POST /v1/infra/twins/{id}/replay`): the recorded load
/// between two times, read by the spec's `metrics_1m` query or another.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// The recorded load from this time (RFC 3339)…
    #[schema(example = "2026-02-20T00:00:00Z")]
    from: Option<String>,
    /// …to this one, not included.
    #[schema(example = "2026-02-21T00:00:00Z")]
    to: Option<String>,
    /// The SQL that reads it: rows of `(bucket, metric, service,
    /// avg_value)`; absent: the spec's `metrics_1m` query.
    query: Option<String>,
    /// Write every run back to `twin_experiments` under this name (the
    /// twin's variant is its name).
    experiment: Option<String>,
    /// What-ifs replayed beside the twin on the same load, each the twin
    /// with a topology patch; at most 8.
    #[serde(default)]
    variants: Vec<hanzo_twin_engines::infra::Variant>,
}

/// Replays the load the timeseries database recorded through the twin's
/// topology, faults and assertions, and through each what-if variant, as
/// a job (`GET /v1/jobs/{id}` follows it; its result is the report and
/// verdicts of each run and their comparison, its artifact
/// `comparison.svg` a plot of them). The node needs `timeseries.url`.
#[utoipa::path(post, path = "/v1/infra/twins/{id}/replay", operation_id = "infra_replay", tag = "infra", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "shop-infra")), request_body(content = ReplayRequest, content_type = "application/json"), responses((status = 201, description = "The replay job, queued or running", body = hanzo_twin_actors::jobs::JobRecord), Errors))]
pub(crate) async fn replay(
    State(state): State<ApiState>,
    Twins(node): Twins,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: ReplayRequest = parse_json(&body, true)?;
    let record = infrastructure_twin(&node, &id).await?;
    let spec = hanzo_twin_actors::jobs::ReplaySpec {
        twin: record.id.to_string(),
        from: request.from,
        to: request.to,
        query: request.query,
        experiment: request.experiment,
        variants: request.variants,
    };
    let job = state
        .jobs
        .submit(
            hanzo_twin_actors::jobs::JobSpec::Replay(spec),
            caller.principal.subject.clone(),
            caller.principal.organization.to_string(),
            None,
        )
        .await?;
    let mut response = (StatusCode::CREATED, axum::Json(&job)).into_response();
    response
        .extensions_mut()
        .insert(Created(job.id.to_string()));
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct InfraListQuery {
    org: Option<String>,
    /// Comma-separated; a twin must carry all of them.
    tags: Option<String>,
    /// Twins per page, 1 to 10000; 1000 when absent.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The infrastructure twins the caller's organization may see, as `GET
/// /v1/twins` lists twins.
#[utoipa::path(get, path = "/v1/infra/twins", operation_id = "infra_list", tag = "infra", params(InfraListQuery), responses((status = 200, description = "A page of infrastructure twins", body = crate::twins::TwinPage), Errors))]
pub(crate) async fn list(Twins(node): Twins, Query(q): Query<InfraListQuery>) -> ApiResult {
    let engine = Some(EngineKind::Infrastructure);
    crate::twins::page(&node, q.org, q.tags, engine, q.limit, q.cursor).await
}

/// The twin `id` names, if it is an infrastructure twin.
async fn infrastructure_twin(node: &TwinNode, id: &str) -> Result<TwinRecord, ApiError> {
    let record = node.get(id).await?;
    if record.definition.kind != TwinType::Infrastructure {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "twin {id} is a physical twin, not an infrastructure twin (see /v1/twins/{id})"
            ),
        ));
    }
    Ok(record)
}

async fn infra_op(node: &TwinNode, id: &str, op: TwinOp) -> Result<InfraStatus, ApiError> {
    let record = infrastructure_twin(node, id).await?;
    match node.op(&record.id.to_string(), op).await? {
        TwinOpReply::Infra(status) => Ok(*status),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the twin answered {other:?} to an infrastructure request"),
        )),
    }
}

/// What the twin's services did so far, its faults, and each assertion's
/// verdict with evidence. The twin must be running.
#[utoipa::path(get, path = "/v1/infra/twins/{id}", operation_id = "infra_status", tag = "infra", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "shop-infra")), responses((status = 200, description = "The twin now", body = InfraStatus), Errors))]
pub(crate) async fn status(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    let status = infra_op(&node, &id, TwinOp::InfraStatus).await?;
    Ok((StatusCode::OK, axum::Json(status)).into_response())
}

/// Starts a chaos scenario now, in simulated time: one the twin's
/// definition declares (by name, its settings overridable here), or a new
/// one with a target and an action. Admin only, audited, and counted in
/// `hanzo_twin_chaos_injections_total{scenario}`.
#[utoipa::path(post, path = "/v1/infra/twins/{id}/inject", operation_id = "infra_inject", tag = "infra", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "shop-infra")), request_body(content = ChaosRequest, content_type = "application/json"), responses((status = 202, description = "Injected; the twin with the new fault last in `faults`", body = InfraStatus), Errors))]
pub(crate) async fn inject(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let request: ChaosRequest = parse_json(&body, false)?;
    let status = infra_op(&node, &id, TwinOp::InfraInject(Box::new(request))).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(status)).into_response())
}

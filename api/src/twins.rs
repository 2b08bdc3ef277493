//! `/v1/twins`: the spec's twin endpoints, plus stepping, commands, observations,
//! clocks, checkpoints and fault injection.

use crate::error::ApiError;
use crate::guard::{Created, DELETE, GET, PATCH, POST, PUT, Routes, Twins};
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, attachment, paging, parse_json};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hanzo_twin_actors::{
    Clock, Fault, ForkOptions, Format, JointCommandEntry, Lifecycle, StartOptions, TwinDefinition,
    TwinError, TwinFilter, TwinId, TwinOp, TwinOpReply, TwinRecord, TwinResource,
};
use hanzo_twin_engines::{EngineKind, SimState};
use serde::Deserialize;
use std::time::Duration;

const fn twins(action: Action) -> Permission {
    Permission::new(Resource::Twins, action)
}

/// Which permission each twin route needs. Stepping, commanding, clocking and
/// reading a running twin are its control loop (operators run twins:
/// `twins:start`); they are not audited and draw on the token's control
/// budget, since an agent may call them thousands of times a second.
/// Lifecycle changes are audited.
pub(crate) fn routes() -> Routes {
    use Action::*;
    Routes::new()
        .protected(GET, "/v1/twins", twins(Read), list)
        .audited(POST, "/v1/twins", twins(Create), "twins.create", create)
        .protected(GET, "/v1/twins/{id}", twins(Read), get_twin)
        .audited(
            PATCH,
            "/v1/twins/{id}",
            twins(Update),
            "twins.update",
            update,
        )
        .audited(
            DELETE,
            "/v1/twins/{id}",
            twins(Delete),
            "twins.delete",
            delete,
        )
        .audited(
            POST,
            "/v1/twins/{id}/start",
            twins(Start),
            "twins.start",
            start,
        )
        .audited(POST, "/v1/twins/{id}/stop", twins(Stop), "twins.stop", stop)
        .control_loop(GET, "/v1/twins/{id}/state", twins(Read), state)
        .audited(
            POST,
            "/v1/twins/{id}/fork",
            twins(Create),
            "twins.fork",
            fork,
        )
        .control_loop(POST, "/v1/twins/{id}/step", twins(Start), step)
        .control_loop(POST, "/v1/twins/{id}/commands", twins(Start), commands)
        .control_loop(GET, "/v1/twins/{id}/observation", twins(Read), observation)
        .control_loop(POST, "/v1/twins/{id}/clock", twins(Start), clock)
        .protected(GET, "/v1/twins/{id}/parameters", twins(Read), parameters)
        .audited(
            PUT,
            "/v1/twins/{id}/parameters",
            twins(Update),
            "twins.set_parameters",
            set_parameters,
        )
        .protected(GET, "/v1/twins/{id}/sync/status", twins(Read), sync_status)
        .protected(
            GET,
            "/v1/twins/{id}/sync/history",
            twins(Read),
            sync_history,
        )
        .protected(
            GET,
            "/v1/twins/{id}/checkpoint",
            twins(Read),
            download_checkpoint,
        )
        .protected(GET, "/v1/twins/{id}/export", twins(Read), export)
        .audited(
            PUT,
            "/v1/twins/{id}/checkpoint",
            twins(Update),
            "twins.restore",
            restore_checkpoint,
        )
        .audited(
            POST,
            "/v1/twins/{id}/faults",
            Permission::new(Resource::Infra, InjectChaos),
            "infra.inject_chaos",
            inject_fault,
        )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

fn record(status: StatusCode, r: &TwinRecord) -> Response {
    let mut response = json(status, r.to_api_json());
    if status == StatusCode::CREATED {
        response.extensions_mut().insert(Created(r.id.to_string()));
    }
    response
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    org: Option<String>,
    /// Comma-separated; a twin must carry all of them.
    tags: Option<String>,
    engine: Option<String>,
    /// Twins per page, 1 to [`MAX_PAGE`]; [`DEFAULT_PAGE`] when absent.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Twins in one page of `GET /v1/twins` unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 1000;
/// The most a page may hold.
pub const MAX_PAGE: usize = 10_000;

#[utoipa::path(get, path = "/v1/twins", operation_id = "twins_list", tag = "twins", params(ListQuery), responses((status = 200, description = "One page of twins, in id order", body = TwinPage), Errors))]
pub(crate) async fn list(Twins(node): Twins, Query(q): Query<ListQuery>) -> ApiResult {
    let engine = match q.engine.as_deref() {
        Some(e) => Some(
            e.parse::<EngineKind>()
                .map_err(|m| ApiError::invalid("engine", m))?,
        ),
        None => None,
    };
    page(&node, q.org, q.tags, engine, q.limit, q.cursor).await
}

/// One page of the twins `node` lets the caller see: of `org`, carrying
/// every one of the comma-separated `tags`, on `engine`, from `cursor`.
/// `GET /v1/infra/twins` lists with it too.
pub(crate) async fn page(
    node: &hanzo_twin_actors::TwinNode,
    org: Option<String>,
    tags: Option<String>,
    engine: Option<EngineKind>,
    limit: Option<String>,
    cursor: Option<String>,
) -> ApiResult {
    let filter = TwinFilter {
        organization: org,
        tags: tags
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        engine,
        after: paging::cursor(cursor.as_deref(), TwinId::parse)?,
        limit: Some(paging::limit(limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?),
    };
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    let twins = node.list(filter).await?;
    let next_cursor = paging::next_cursor(&twins, limit, |r| r.id.to_string());
    let page = TwinPage {
        twins: twins.iter().map(TwinRecord::resource).collect(),
        next_cursor,
    };
    Ok((StatusCode::OK, axum::Json(page)).into_response())
}

/// One page of `GET /v1/twins`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct TwinPage {
    twins: Vec<TwinResource>,
    /// The cursor of the next page; absent after the last full page.
    next_cursor: Option<String>,
}

/// YAML when the content type says so, JSON otherwise.
fn definition_format(headers: &HeaderMap) -> Format {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("yaml") {
        Format::Yaml
    } else {
        Format::Json
    }
}

#[utoipa::path(post, path = "/v1/twins", operation_id = "twins_create", tag = "twins", request_body(description = "A twin definition (the spec's Twin Schema), as JSON or YAML", content(
    (TwinDefinition = "application/json", example = json!({
        "name": "example-arm",
        "scene": { "uri": "robot-arm/scene.usda" },
        "engine": { "type": "rapier3d", "config": { "step_hz": 240, "substeps": 2 } },
        "tags": ["robot", "arm"]
    })),
    (TwinDefinition = "application/yaml")
)), responses((status = 201, description = "Created", body = TwinResource, links(
    ("get" = (operation_id = "twins_get_twin", parameters(("id" = "$response.body#/id")))),
    ("start" = (operation_id = "twins_start", parameters(("id" = "$response.body#/id")))),
    ("fork" = (operation_id = "twins_fork", parameters(("id" = "$response.body#/id")))),
    ("delete" = (operation_id = "twins_delete", parameters(("id" = "$response.body#/id")))),
)), Errors))]
pub(crate) async fn create(Twins(node): Twins, headers: HeaderMap, body: Bytes) -> ApiResult {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("", "the definition is not UTF-8 text"))?;
    let definition = TwinDefinition::parse(text, definition_format(&headers))
        .map_err(|e| ApiError::from(TwinError::Invalid(e)))?;
    let r = node.create(definition).await?;
    Ok(record(StatusCode::CREATED, &r))
}

#[utoipa::path(get, path = "/v1/twins/{id}", operation_id = "twins_get_twin", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "The twin, with live figures when it runs", body = TwinResource), Errors))]
pub(crate) async fn get_twin(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    let r = node.get(&id).await?;
    let mut body = r.resource();
    // A twin busy with a long step request should not hold up reading its
    // record: live info is added only if the twin answers promptly. Reading
    // a passivated twin's record does not bring it back.
    if r.status.state == Lifecycle::Running
        && !r.status.passivated
        && let Ok(info) = node
            .with_timeout(Duration::from_millis(500))
            .info(&r.id.to_string())
            .await
    {
        body.runtime = Some(info);
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

#[utoipa::path(patch, path = "/v1/twins/{id}", operation_id = "twins_update", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = Object, description = "A JSON merge patch of the definition", content_type = "application/json"), responses((status = 200, description = "Updated", body = TwinResource), Errors))]
pub(crate) async fn update(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let patch: serde_json::Value = parse_json(&body, false)?;
    let r = node.update(&id, patch).await?;
    Ok(record(StatusCode::OK, &r))
}

#[utoipa::path(delete, path = "/v1/twins/{id}", operation_id = "twins_delete", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 204, description = "Deleted"), Errors))]
pub(crate) async fn delete(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    node.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/twins/{id}/start", operation_id = "twins_start", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = Option<StartOptions>, content_type = "application/json"), responses((status = 200, description = "Running", body = TwinResource), Errors))]
pub(crate) async fn start(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let options: StartOptions = parse_json(&body, true)?;
    let r = node.start(&id, options).await?;
    Ok(record(StatusCode::OK, &r))
}

#[utoipa::path(post, path = "/v1/twins/{id}/stop", operation_id = "twins_stop", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "Stopped, with its final checkpoint durable", body = TwinResource), Errors))]
pub(crate) async fn stop(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    let r = node.stop(&id).await?;
    Ok(record(StatusCode::OK, &r))
}

/// The current simulation state for people and agents: clock, time, step and the
/// observation of every body and joint. The binary checkpoint is at
/// `/checkpoint`.
#[utoipa::path(get, path = "/v1/twins/{id}/state", operation_id = "twins_state", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "Id, name, engine, clock, time, step, and every body and joint", body = hanzo_twin_actors::protocol::TwinStateBody), Errors))]
pub(crate) async fn state(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    // Answered by the twin's actor wherever it runs, or from its view when it
    // runs here and has not changed since its last read.
    let (json, reactivated) = node.state_json(&id).await?;
    let response = ([(header::CONTENT_TYPE, "application/json")], json).into_response();
    Ok(activation(response, reactivated))
}

/// Runs a control-loop operation and answers with what it returned; a
/// request that brought a passivated twin back says so in the
/// `hanzo-twin-activation: reactivated` header.
async fn control(node: &hanzo_twin_actors::TwinNode, id: &str, op: TwinOp) -> ApiResult {
    let (reply, reactivated) = node.op_outcome(id, op).await?;
    let response = match reply {
        TwinOpReply::Done => StatusCode::NO_CONTENT.into_response(),
        TwinOpReply::Step(report) => json(StatusCode::OK, serde_json::json!(report)),
        TwinOpReply::Observation(o) => json(StatusCode::OK, serde_json::json!(o)),
        TwinOpReply::SyncStatus(s) => json(StatusCode::OK, serde_json::json!(s)),
        TwinOpReply::Parameters(values) => {
            json(StatusCode::OK, serde_json::json!({ "values": values }))
        }
        other => return Err(unexpected(other)),
    };
    Ok(activation(response, reactivated))
}

fn activation(mut response: Response, reactivated: bool) -> Response {
    if reactivated {
        response.headers_mut().insert(
            "hanzo-twin-activation",
            axum::http::HeaderValue::from_static("reactivated"),
        );
    }
    response
}

fn unexpected(reply: TwinOpReply) -> ApiError {
    ApiError::from(TwinError::Storage(format!(
        "the twin answered with an unexpected reply: {reply:?}"
    )))
}

/// Per source: connection, traffic and errors; per measured attribute: the
/// latest reading beside the twin's prediction.
#[utoipa::path(get, path = "/v1/twins/{id}/sync/status", operation_id = "twins_sync_status", tag = "sync", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "Each source's connection and traffic; each attribute's reading beside the prediction", body = hanzo_twin_actors::protocol::SyncStatus), Errors))]
pub(crate) async fn sync_status(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    control(&node, &id, TwinOp::SyncStatus).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    limit: Option<usize>,
    cursor: Option<u64>,
}

/// Most sync events one page holds.
const MAX_HISTORY_PAGE: usize = 1000;

/// Connections, gaps, refusals and messages that could not be read, oldest
/// first, in pages of `limit` (1–1,000, default 100) from `cursor`.
#[utoipa::path(get, path = "/v1/twins/{id}/sync/history", operation_id = "twins_sync_history", tag = "sync", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell"), HistoryQuery), responses((status = 200, description = "One page of sync events, oldest first", body = hanzo_twin_actors::protocol::SyncHistoryPage), Errors))]
pub(crate) async fn sync_history(
    Twins(node): Twins,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_HISTORY_PAGE}, got {limit}"),
        ));
    }
    let (reply, reactivated) = node
        .op_outcome(
            &id,
            TwinOp::SyncHistory {
                after: q.cursor,
                limit,
            },
        )
        .await?;
    let TwinOpReply::SyncHistory(page) = reply else {
        return Err(unexpected(reply));
    };
    let response = json(StatusCode::OK, serde_json::json!(page));
    Ok(activation(response, reactivated))
}

#[utoipa::path(post, path = "/v1/twins/{id}/fork", operation_id = "twins_fork", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = Option<ForkOptions>, content_type = "application/json"), responses((status = 201, description = "The fork, running", body = TwinResource, links(
    ("get" = (operation_id = "twins_get_twin", parameters(("id" = "$response.body#/id")))),
    ("state" = (operation_id = "twins_state", parameters(("id" = "$response.body#/id")))),
    ("delete" = (operation_id = "twins_delete", parameters(("id" = "$response.body#/id")))),
)), Errors))]
pub(crate) async fn fork(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let options: ForkOptions = parse_json(&body, true)?;
    let r = node.fork(&id, options).await?;
    Ok(record(StatusCode::CREATED, &r))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepRequest {
    #[serde(default = "one")]
    steps: u64,
}

fn one() -> u64 {
    1
}

#[utoipa::path(post, path = "/v1/twins/{id}/step", operation_id = "twins_step", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = Option<StepRequest>, content_type = "application/json"), responses((status = 200, description = "Stepped", body = hanzo_twin_actors::protocol::StepReport), Errors))]
pub(crate) async fn step(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: StepRequest = parse_json(&body, true)?;
    control(&node, &id, TwinOp::Step { steps: req.steps }).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandRequest {
    commands: Vec<JointCommandEntry>,
}

#[utoipa::path(post, path = "/v1/twins/{id}/commands", operation_id = "twins_commands", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = CommandRequest, content_type = "application/json"), responses((status = 204, description = "Applied, all or none"), Errors))]
pub(crate) async fn commands(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: CommandRequest = parse_json(&body, false)?;
    let commands = req.commands;
    control(&node, &id, TwinOp::Command { commands }).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ObservationQuery {
    path: Option<String>,
}

#[utoipa::path(get, path = "/v1/twins/{id}/observation", operation_id = "twins_observation", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell"), ObservationQuery), responses((status = 200, description = "Bodies and joints under the path", body = hanzo_twin_engines::Observation), Errors))]
pub(crate) async fn observation(
    Twins(node): Twins,
    Path(id): Path<String>,
    Query(q): Query<ObservationQuery>,
) -> ApiResult {
    let path = q.path.unwrap_or_else(|| "/".into());
    control(&node, &id, TwinOp::Observe { path }).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ParametersQuery {
    /// Comma-separated `/Prim/Path.parameter` names: a joint's drive
    /// `stiffness` or `damping`, a body's `friction` or `mass`. Without
    /// it, every parameter the twin's engine can tune.
    #[param(example = "/World/Arm/elbow.damping")]
    names: Option<String>,
}

/// Physical parameter values, by `/Prim/Path.parameter`, in SI units
/// (N·m/rad and N·m·s/rad for an angular drive, kg for a mass).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParameterValues {
    #[schema(example = json!({ "/World/Arm/elbow.damping": 11.5 }))]
    values: std::collections::BTreeMap<String, f64>,
}

#[utoipa::path(get, path = "/v1/twins/{id}/parameters", operation_id = "twins_parameters", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell"), ParametersQuery), responses((status = 200, description = "The running twin's values", body = ParameterValues), Errors))]
pub(crate) async fn parameters(
    Twins(node): Twins,
    Path(id): Path<String>,
    Query(q): Query<ParametersQuery>,
) -> ApiResult {
    let names: Vec<String> = q
        .names
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    if q.names.is_some() && names.is_empty() {
        return Err(ApiError::invalid(
            "names",
            "name at least one parameter, e.g. names=/World/Arm/elbow.damping, or leave names out for all",
        ));
    }
    control(&node, &id, TwinOp::Parameters { names }).await
}

#[utoipa::path(put, path = "/v1/twins/{id}/parameters", operation_id = "twins_set_parameters", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = ParameterValues, content_type = "application/json"), responses((status = 200, description = "Set, all or none; the values now", body = ParameterValues), Errors))]
pub(crate) async fn set_parameters(
    Twins(node): Twins,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: ParameterValues = parse_json(&body, false)?;
    if req.values.is_empty() {
        return Err(ApiError::invalid("values", "set at least one parameter"));
    }
    let values = req.values;
    control(&node, &id, TwinOp::SetParameters { values }).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClockRequest {
    clock: Clock,
}

#[utoipa::path(post, path = "/v1/twins/{id}/clock", operation_id = "twins_clock", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = ClockRequest, content_type = "application/json"), responses((status = 200, description = "The clock now", body = ClockRequest), Errors))]
pub(crate) async fn clock(Twins(node): Twins, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: ClockRequest = parse_json(&body, false)?;
    let clock = req.clock;
    let (_, reactivated) = node.op_outcome(&id, TwinOp::SetClock { clock }).await?;
    let response = json(StatusCode::OK, serde_json::json!({ "clock": clock }));
    Ok(activation(response, reactivated))
}

#[utoipa::path(get, path = "/v1/twins/{id}/checkpoint", operation_id = "twins_download_checkpoint", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "The twin's latest state, as a checkpoint file", body = Vec<u8>, content_type = "application/octet-stream"), Errors))]
pub(crate) async fn download_checkpoint(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    let r = node.get(&id).await?;
    let state = node.checkpoint(&r.id.to_string()).await?;
    let filename = format!("{}-step{}.ckpt", r.definition.name, state.step);
    Ok(attachment(
        "application/octet-stream",
        &filename,
        state.to_bytes(),
    ))
}

#[utoipa::path(put, path = "/v1/twins/{id}/checkpoint", operation_id = "twins_restore_checkpoint", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = Vec<u8>, description = "A checkpoint file from GET …/checkpoint", content_type = "application/octet-stream"), responses((status = 200, description = "Restored", body = TwinResource), Errors))]
pub(crate) async fn restore_checkpoint(
    Twins(node): Twins,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let state =
        SimState::from_bytes(&body).map_err(|e| ApiError::invalid("checkpoint", e.to_string()))?;
    let r = node.restore(&id, state).await?;
    Ok(record(StatusCode::OK, &r))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    fault: Fault,
    /// One of the twin's children (`sync:<source>`), instead of the twin.
    #[serde(default)]
    child: Option<String>,
}

#[utoipa::path(post, path = "/v1/twins/{id}/faults", operation_id = "twins_inject_fault", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), request_body(content = FaultRequest, content_type = "application/json"), responses((status = 202, description = "Injected", body = FaultInjected), Errors))]
pub(crate) async fn inject_fault(
    Twins(node): Twins,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: FaultRequest = parse_json(&body, false)?;
    node.inject_fault(&id, req.fault, req.child.clone()).await?;
    let injected = FaultInjected {
        injected: req.fault,
        child: req.child,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(injected)).into_response())
}

/// What `POST …/faults` injected, and into which child (none: the twin).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct FaultInjected {
    injected: Fault,
    child: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    format: Option<String>,
}

/// The twin's recorded run as a USD stage with time-sampled body poses.
#[utoipa::path(get, path = "/v1/twins/{id}/export", operation_id = "twins_export", tag = "twins", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell"), ExportQuery), responses((status = 200, description = "The recorded run as a USD stage with time-sampled poses", body = String, content_type = "model/vnd.usda"), Errors))]
pub(crate) async fn export(
    Twins(node): Twins,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult {
    match q.format.as_deref() {
        None | Some("usda") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!(
                    "cannot export as `{other}`; the node writes usda (pxr converts it to usdc)"
                ),
            ));
        }
    }
    let r = node.get(&id).await?;
    let (scene, recording) = node.recording(&r.id.to_string()).await?;
    if recording.frames.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing_recorded",
            "this twin has recorded no frames (is twins.record_hz 0?)",
        ));
    }
    let text = tokio::task::spawn_blocking(move || {
        hanzo_twin_engines::usd::export::recording_to_usda(&scene, &recording)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let filename = format!("{}-run.usda", r.definition.name);
    Ok(attachment("model/vnd.usda", &filename, text))
}

//! The HTTP API of a Hanzo Twin node (port 8082 by default).
//!
//! Handlers are thin: they parse and check the request, then speak to the node's
//! twin host through [`TwinNode`], scoped to the caller's organization. Every
//! route is added through [`guard::Routes`] with its access rule; every failure
//! is JSON with a fitting status.

pub mod audit;
pub mod auth;
pub mod console;
pub mod error;
pub mod guard;
mod gym;
pub mod gym_tensors;
mod infra;
mod inspector;
mod jobs;
pub mod openapi;
mod paging;
pub mod rbac;
pub mod scenes;
mod synthdata;
mod twin_view;
mod twins;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use error::{ApiError, ErrorResponse};
use guard::{AuthState, Caller, Endpoint, GET, POST, Routes, Twins};
use hanzo_twin_actors::{DefinitionError, TwinError, TwinNode};
use hanzo_twin_cluster::Membership;
use hanzo_twin_engines::EngineRegistry;
use openapi::Errors;
use rbac::{Action, Permission, Resource};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What every handler can reach. One allocation shared by every request:
/// axum clones the state for each one.
#[derive(Clone)]
pub struct ApiState(Arc<ApiShared>);

impl From<ApiShared> for ApiState {
    fn from(shared: ApiShared) -> Self {
        ApiState(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

pub struct ApiShared {
    pub node: TwinNode,
    pub engines: EngineRegistry,
    pub membership: Membership,
    /// False until the node has finished starting, and again while it shuts down.
    pub ready: Arc<AtomicBool>,
    pub auth: Arc<AuthState>,
    /// The scene library, when this node keeps one.
    pub scenes: Option<Arc<dyn scenes::SceneCatalog>>,
    /// The node's jobs.
    pub jobs: hanzo_twin_actors::jobs::JobsNode,
    /// Synthetic datasets, when this node keeps them.
    pub datasets: Option<Arc<dyn hanzo_twin_actors::jobs::DatasetStore>>,
}

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body, in bytes (checkpoint uploads are the big ones).
    pub max_body_bytes: usize,
    /// Largest scene upload, in bytes.
    pub max_scene_upload_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 64 * 1024 * 1024,
            max_scene_upload_bytes: 256 * 1024 * 1024,
        }
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

const TWINS_READ: Permission = Permission::new(Resource::Twins, Action::Read);
const INFRA_READ: Permission = Permission::new(Resource::Infra, Action::Read);
const AUDIT_READ: Permission = Permission::new(Resource::Audit, Action::Read);
/// A comparison is compute the caller submits, like a job.
const JOBS_SUBMIT: Permission = Permission::new(Resource::Jobs, Action::Submit);

fn routes(config: &ApiConfig) -> Routes {
    Routes::new()
        .public(GET, "/alive", alive)
        .public(GET, "/ready", ready)
        .public(GET, "/v1/openapi.json", openapi::openapi_json)
        .public(GET, "/docs", openapi::docs_page)
        .protected(GET, "/v1/engines", TWINS_READ, engines)
        .audited(
            POST,
            "/v1/engines/compare",
            JOBS_SUBMIT,
            "engines.compare",
            compare_engines,
        )
        .protected(GET, "/v1/cluster/nodes", INFRA_READ, cluster_nodes)
        .protected(GET, "/v1/audit", AUDIT_READ, audit::list)
        .merge(twins::routes())
        .merge(infra::routes())
        .merge(twin_view::routes())
        .merge(gym::routes())
        .merge(jobs::routes())
        .merge(synthdata::routes())
        .merge(inspector::routes())
        .merge(scenes::routes(config.max_scene_upload_bytes))
}

/// Every route of the API with its access rule.
pub fn endpoints() -> Vec<Endpoint> {
    routes(&ApiConfig::default()).endpoints()
}

/// The whole API as an axum router.
pub fn router(state: ApiState, config: &ApiConfig) -> Router {
    routes(config)
        .into_router(&state)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}

/// How long `/alive` waits for the twin host: a host that cannot answer a
/// trivial message this fast is stuck, and the node should be restarted.
const ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[utoipa::path(get, path = "/alive", tag = "probes", security(()), responses((status = 200, description = "The twin host answers", body = String, content_type = "text/plain"), (status = 503, description = "The twin host does not answer", body = ErrorResponse)))]
pub(crate) async fn alive(State(state): State<ApiState>) -> Response {
    match state.node.alive(ALIVE_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, "alive\n").into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_alive",
            format!("the twin host is not answering: {e}"),
        )
        .into_response(),
    }
}

#[utoipa::path(get, path = "/ready", tag = "probes", security(()), responses((status = 200, description = "The node serves requests", body = String, content_type = "text/plain"), (status = 503, description = "Starting or shutting down", body = ErrorResponse)))]
pub(crate) async fn ready(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "node is not ready",
        )
        .into_response()
    }
}

#[utoipa::path(get, path = "/v1/engines", tag = "cluster", responses((status = 200, description = "Engines this node knows, and whether each is available", body = EngineList), Errors))]
pub(crate) async fn engines(State(state): State<ApiState>, _: Caller) -> Response {
    axum::Json(EngineList {
        engines: state.engines.describe(),
    })
    .into_response()
}

/// `GET /v1/engines`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct EngineList {
    engines: Vec<hanzo_twin_engines::registry::EngineInfo>,
}

/// Runs one scene and one command sequence on several engines and answers
/// with each body's and joint's divergence from the first engine.
#[utoipa::path(post, path = "/v1/engines/compare", tag = "cluster", request_body(content = hanzo_twin_actors::compare::CompareRequest, content_type = "application/json"), responses((status = 200, description = "Each engine's run and its divergence from the first", body = hanzo_twin_engines::compare::CompareReport), Errors))]
pub(crate) async fn compare_engines(Twins(node): Twins, body: Bytes) -> ApiResult {
    let request: hanzo_twin_actors::compare::CompareRequest = parse_json(&body, false)?;
    let report = node.compare_engines(request).await?;
    Ok(axum::Json(report).into_response())
}

#[utoipa::path(get, path = "/v1/cluster/nodes", tag = "cluster", responses((status = 200, description = "The cluster's members, this node first", body = NodeList), Errors))]
pub(crate) async fn cluster_nodes(State(state): State<ApiState>, _: Caller) -> Response {
    axum::Json(NodeList {
        nodes: state.membership.nodes(),
    })
    .into_response()
}

/// `GET /v1/cluster/nodes`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct NodeList {
    nodes: Vec<hanzo_twin_cluster::NodeInfo>,
}

async fn not_found(req: Request) -> ApiError {
    metrics::counter!("hanzo_twin_api_unmatched_requests_total").increment(1);
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Around every route: its duration goes to
/// `hanzo_twin_api_request_duration_seconds{endpoint}`, and rejections made by
/// axum itself (a malformed query string, a body over the limit, a wrong
/// method) come as plain text and are rewritten into the API's JSON error
/// shape, so clients meet one format everywhere.
async fn observe(State(observed): State<guard::Observed>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = json_errors(next.run(req).await).await;
    observed.record(started);
    if response.status().is_server_error() {
        metrics::counter!("hanzo_twin_api_server_errors_total").increment(1);
    }
    response
}

async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Framework rejections are short; anything longer is cut, not buffered whole.
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "invalid",
        _ => "internal",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut e = ApiError::new(parts.status, code, message);
    if status == StatusCode::BAD_REQUEST && e.body.message.contains("query") {
        e.body.field = Some("query".into());
    }
    e.into_response()
}

/// A file download: the body with its content type and a file name.
pub(crate) fn attachment(
    content_type: &'static str,
    filename: &str,
    body: impl Into<axum::body::Body>,
) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", filename.replace('"', "'"));
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_string()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body.into(),
    )
        .into_response()
}

/// Parses a JSON body into `T`, naming the field and line of any problem. An
/// empty body reads as `{}` when `empty_ok`.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes, empty_ok: bool) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            b"{}"
        } else {
            return Err(ApiError::invalid(
                "",
                "request body is empty; send a JSON object",
            ));
        }
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        json_error(field, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(String::new(), e))?;
    Ok(value)
}

fn json_error(field: String, inner: serde_json::Error) -> ApiError {
    TwinError::Invalid(DefinitionError::from_json(field, inner)).into()
}

//! The live supervision-tree inspector: `GET /v1/cluster/tree` (this node's
//! actor tree as JSON), `GET /v1/cluster/tree/events` (server-sent events: the
//! tree, then every change and a fresh tree after it, and every other
//! member's tree every few seconds), and `GET /inspector`, a page that draws
//! the trees and updates live. Callers see their own organization's twins and
//! environments.

use crate::guard::{Caller, GET, Routes, Twins};
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, ApiState};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use hanzo_twin_actors::TwinNode;
use hanzo_twin_actors::inspector::TreeEvent;
use serde_json::json;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::{Receiver, error::RecvError};

const INFRA_READ: Permission = Permission::new(Resource::Infra, Action::Read);
const TWINS_READ: Permission = Permission::new(Resource::Twins, Action::Read);
const PAGE: &str = include_str!("page.html");
const TWIN_PAGE: &str = include_str!("twin.html");
/// A fresh tree at least this often, for the message counts.
const REFRESH: Duration = Duration::from_secs(2);

/// One server-sent event of `GET /v1/cluster/tree/events`: `event` says
/// what `data` (JSON text) holds.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the stream; events are written as text.
pub(crate) struct TreeStreamEvent {
    event: Option<String>,
    data: String,
    id: Option<String>,
}

pub(crate) fn routes() -> Routes {
    Routes::new()
        .public(GET, "/inspector", page)
        .public(GET, "/inspector/twins/{id}", twin_page)
        .public(GET, "/inspector/assets/{file}", asset)
        .protected(GET, "/v1/cluster/tree", INFRA_READ, tree)
        .protected(GET, "/v1/cluster/tree/events", INFRA_READ, events)
        .protected(GET, "/v1/cluster/stats", INFRA_READ, stats)
        .protected(GET, "/v1/whoami", TWINS_READ, whoami)
}

/// `GET /v1/cluster/stats`'s query.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    /// Only points taken after this instant (ms since the Unix epoch), so
    /// a chart asks for what it has not drawn yet.
    since_ms: Option<i64>,
}

/// The node's figures a second over the last five minutes, from its own
/// metrics: steps, API requests and latency percentiles, active
/// simulations, forks, 5xx answers and twin crashes.
#[utoipa::path(get, path = "/v1/cluster/stats", operation_id = "inspector_stats", tag = "cluster", params(StatsQuery), responses((status = 200, description = "Points a second, oldest first", body = crate::console::Stats), Errors))]
pub(crate) async fn stats(
    _: Caller,
    axum::extract::Query(query): axum::extract::Query<StatsQuery>,
) -> axum::Json<crate::console::Stats> {
    axum::Json(crate::console::stats(query.since_ms))
}

/// One permission as the caller holds it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct HeldPermission {
    /// `resource:action`, as errors and the README name it.
    permission: String,
    /// `any`, `own_only` (what the caller made) or `denied`.
    #[schema(value_type = String)]
    grant: crate::rbac::Grant,
    /// The roles that hold it, for saying why a control is off.
    roles: Vec<String>,
}

/// `GET /v1/whoami`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Whoami {
    subject: String,
    organization: String,
    roles: Vec<String>,
    /// Every permission, with the caller's grant.
    permissions: Vec<HeldPermission>,
}

/// Who the token speaks for and what it may do: pages turn off the
/// controls it may not use, and say why.
#[utoipa::path(get, path = "/v1/whoami", operation_id = "whoami", tag = "cluster", responses((status = 200, description = "The caller's identity and permissions", body = Whoami), Errors))]
pub(crate) async fn whoami(caller: Caller) -> axum::Json<Whoami> {
    let roles = &caller.principal.roles;
    let names = |roles: &[crate::rbac::Role]| -> Vec<String> {
        roles.iter().map(|r| r.to_string()).collect()
    };
    axum::Json(Whoami {
        subject: caller.principal.subject.clone(),
        organization: caller.principal.organization.to_string(),
        roles: names(roles),
        permissions: crate::rbac::permissions()
            .into_iter()
            .map(|p| HeldPermission {
                permission: p.to_string(),
                grant: crate::rbac::grant(roles, p),
                roles: names(&crate::rbac::roles_with(p)),
            })
            .collect(),
    })
}

/// The page holds no data: it asks the API, with the caller's token.
#[utoipa::path(get, path = "/inspector", operation_id = "inspector_page", tag = "cluster", security(()), responses((status = 200, description = "The live supervision-tree page", body = String, content_type = "text/html")))]
pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// A twin's live 3D view (three.js, drawn from `GET /v1/twins/{id}/geometry`
/// and moved by `GET /v1/twins/{id}/poses/events`), with its forks beside
/// it on request. Like the tree page it holds no data.
#[utoipa::path(get, path = "/inspector/twins/{id}", operation_id = "inspector_twin_page", tag = "cluster", security(()), params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "The twin's live 3D view", body = String, content_type = "text/html")))]
pub(crate) async fn twin_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        TWIN_PAGE,
    )
        .into_response()
}

/// The pages' shared script and the browser libraries they use, pinned npm
/// releases kept in the repository (`scripts/vendor-web.sh`,
/// `vendor/VERSIONS`): served by the node, so the console works with no
/// outside network.
const ASSETS: &[(&str, &str, &[u8])] = &[
    // The pages' own shared code.
    (
        "console.js",
        "text/javascript",
        include_bytes!("console.js"),
    ),
    (
        "three.module.min.js",
        "text/javascript",
        include_bytes!("vendor/three/three.module.min.js"),
    ),
    (
        "OrbitControls.js",
        "text/javascript",
        include_bytes!("vendor/three/addons/controls/OrbitControls.js"),
    ),
    (
        "ConvexGeometry.js",
        "text/javascript",
        include_bytes!("vendor/three/addons/geometries/ConvexGeometry.js"),
    ),
    (
        "ConvexHull.js",
        "text/javascript",
        include_bytes!("vendor/three/addons/math/ConvexHull.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript",
        include_bytes!("vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css",
        include_bytes!("vendor/uplot/uPlot.min.css"),
    ),
    (
        "d3-hierarchy.min.js",
        "text/javascript",
        include_bytes!("vendor/d3-hierarchy/d3-hierarchy.min.js"),
    ),
];

/// One of the pages' libraries; they change only with the node's version.
#[utoipa::path(get, path = "/inspector/assets/{file}", operation_id = "inspector_asset", tag = "cluster", security(()), params(("file" = String, Path, description = "A library file the pages load", example = "three.module.min.js")), responses((status = 200, description = "The file", body = String, content_type = "text/javascript"), (status = 404, description = "No such file", body = crate::error::ErrorResponse)))]
pub(crate) async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => crate::error::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no library file {file}; the pages load {}",
                ASSETS
                    .iter()
                    .map(|(n, ..)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into_response(),
    }
}

/// How long another member may take to send its tree.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's tree, then every other member's (asked over the cluster, as
/// the caller's organization); a member that cannot answer is listed with
/// the reason.
#[utoipa::path(get, path = "/v1/cluster/tree", operation_id = "inspector_tree", tag = "cluster", responses((status = 200, description = "Every member's supervision tree", body = Object), Errors))]
pub(crate) async fn tree(
    State(state): State<ApiState>,
    caller: Caller,
    Twins(node): Twins,
) -> ApiResult {
    let tree = node.tree().await?;
    let mut nodes = vec![json!({ "node": state.membership.local().id, "tree": tree })];
    nodes.extend(peer_trees(&caller.principal.organization.to_string()).await);
    Ok(axum::Json(json!({ "nodes": nodes })).into_response())
}

/// Every other member's tree as `organization` sees it, or why there is none.
async fn peer_trees(organization: &str) -> Vec<serde_json::Value> {
    hanzo_twin_cluster::mesh::peer_trees(organization, PEER_TIMEOUT)
        .await
        .into_iter()
        .map(|(id, tree)| match tree {
            Ok(tree) => json!({ "node": id, "tree": tree }),
            Err(error) => json!({ "node": id, "error": error }),
        })
        .collect()
}

struct Watch {
    node: TwinNode,
    organization: String,
    events: Receiver<TreeEvent>,
    queue: VecDeque<Event>,
    tick: tokio::time::Interval,
    closed: bool,
}

impl Watch {
    async fn snapshot(&mut self) {
        match self.node.tree().await {
            Ok(tree) => self.queue.push_back(
                Event::default()
                    .event("tree")
                    .json_data(tree)
                    .unwrap_or_default(),
            ),
            // The host is restarting: say so and let the client reconnect.
            Err(e) => {
                self.queue
                    .push_back(Event::default().event("error").data(e.to_string()));
                self.closed = true;
            }
        }
    }
}

#[utoipa::path(get, path = "/v1/cluster/tree/events", operation_id = "inspector_events", tag = "cluster", responses((status = 200, description = "Server-sent events: the tree, then each change", body = TreeStreamEvent, content_type = "text/event-stream"), Errors))]
pub(crate) async fn events(
    caller: Caller,
    Twins(node): Twins,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, crate::error::ApiError> {
    let events = node.watch_tree().await?;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The interval's first tick is immediate: it sends the first tree.
    let watch = Watch {
        node,
        organization: caller.principal.organization.to_string(),
        events,
        queue: VecDeque::new(),
        tick,
        closed: false,
    };
    let stream = stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(event) = w.queue.pop_front() {
                return Some((Ok(event), w));
            }
            if w.closed {
                return None;
            }
            tokio::select! {
                received = w.events.recv() => match received {
                    Ok(e) if e.organization == w.organization => {
                        w.queue.push_back(Event::default().event("change").json_data(&e).unwrap_or_default());
                        w.snapshot().await;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => w.snapshot().await,
                    Err(RecvError::Closed) => {
                        w.queue.push_back(Event::default().event("error").data("the node's host restarted; reconnect"));
                        w.closed = true;
                    }
                },
                _ = w.tick.tick() => {
                    w.snapshot().await;
                    // Other members send no events here: their trees are
                    // polled, so the page follows them within `REFRESH`.
                    let peers = peer_trees(&w.organization).await;
                    if !peers.is_empty() {
                        w.queue.push_back(Event::default().event("peers").json_data(peers).unwrap_or_default());
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

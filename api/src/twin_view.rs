//! What a viewer needs to draw a twin live: `GET /v1/twins/{id}/geometry`
//! (its scene's bodies and their shapes) and `GET /v1/twins/{id}/poses/events`
//! (server-sent events: the bodies' poses, in the geometry's order, each time
//! the twin has stepped, at most `hz` times a second). The inspector's 3D view
//! reads both; any client may.

use crate::error::ApiError;
use crate::guard::{GET, Routes, Twins};
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use axum::extract::{Path, Query};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use hanzo_twin_actors::TwinNode;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

const TWINS_READ: Permission = Permission::new(Resource::Twins, Action::Read);
/// The most pose events a second a stream sends: a screen's frame rate is
/// more than a person follows a twin at, and each event is one observation.
const MAX_HZ: f64 = 30.0;

pub(crate) fn routes() -> Routes {
    Routes::new()
        .protected(GET, "/v1/twins/{id}/geometry", TWINS_READ, geometry)
        .protected(GET, "/v1/twins/{id}/poses/events", TWINS_READ, pose_events)
}

/// The shapes of a twin's scene, per body, in the body's frame: `Cuboid`
/// (half extents), `Sphere`, `Capsule` and `Cylinder` (radius, half height,
/// axis), `Plane` (normal axis), `TriMesh` and `ConvexDecomposition`
/// (vertices, triangles), `ConvexHull` (points). A scene in an engine's own
/// format (MJCF) lists no bodies.
#[utoipa::path(get, path = "/v1/twins/{id}/geometry", operation_id = "twins_geometry", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell")), responses((status = 200, description = "Up axis and bodies with their shapes", body = Object), Errors))]
pub(crate) async fn geometry(
    Twins(node): Twins,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(node.geometry(&id).await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PoseStreamQuery {
    /// The most events a second, above 0 and up to 30 (the default).
    #[param(example = 30)]
    hz: Option<f64>,
}

/// One server-sent event of `GET /v1/twins/{id}/poses/events`: `poses`
/// (data: `{"step", "time", "poses": [[x, y, z, qx, qy, qz, qw] or null]}`,
/// one per body of the twin's geometry, in its order), or `error` (the twin
/// stopped answering; the stream ends).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the stream; events are written as text.
pub(crate) struct PoseStreamEvent {
    event: Option<String>,
    data: String,
}

struct PoseStream {
    node: TwinNode,
    twin: String,
    /// Geometry order: a body's place in each event.
    order: HashMap<String, usize>,
    tick: tokio::time::Interval,
    last_step: Option<u64>,
    done: bool,
}

#[utoipa::path(get, path = "/v1/twins/{id}/poses/events", operation_id = "twins_pose_events", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell"), PoseStreamQuery), responses((status = 200, description = "Server-sent events: the bodies' poses each time the twin steps", body = PoseStreamEvent, content_type = "text/event-stream"), Errors))]
pub(crate) async fn pose_events(
    Twins(node): Twins,
    Path(id): Path<String>,
    Query(q): Query<PoseStreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let hz = q.hz.unwrap_or(MAX_HZ);
    if !(hz > 0.0 && hz <= MAX_HZ) {
        return Err(ApiError::invalid(
            "hz",
            format!("{hz} is not between 0 (excluded) and {MAX_HZ} events a second"),
        ));
    }
    // A twin that does not exist, or is not running, is an error now, not
    // an empty stream.
    let geometry = node.geometry(&id).await?;
    node.observe(&id, "/").await?;
    let order = geometry
        .bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (b.path.clone(), i))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let watch = PoseStream {
        node,
        twin: id,
        order,
        tick,
        last_step: None,
        done: false,
    };
    let stream = stream::unfold(watch, |mut w| async move {
        if w.done {
            return None;
        }
        loop {
            w.tick.tick().await;
            match w.node.observe(&w.twin, "/").await {
                // Nothing moved: nothing to send (a paused twin costs one
                // read per tick and no traffic).
                Ok(o) if w.last_step == Some(o.step) => continue,
                Ok(o) => {
                    w.last_step = Some(o.step);
                    let mut poses = vec![serde_json::Value::Null; w.order.len()];
                    for b in &o.bodies {
                        if let Some(&i) = w.order.get(&b.path) {
                            let [x, y, z] = b.position;
                            let [qx, qy, qz, qw] = b.orientation;
                            poses[i] = json!([x, y, z, qx, qy, qz, qw]);
                        }
                    }
                    let data = json!({ "step": o.step, "time": o.time, "poses": poses });
                    let event = Event::default().event("poses").json_data(data);
                    return Some((Ok(event.unwrap_or_default()), w));
                }
                Err(e) => {
                    w.done = true;
                    let event = Event::default().event("error").data(e.to_string());
                    return Some((Ok(event), w));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

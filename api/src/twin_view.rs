//! What a viewer needs to draw a twin live: `GET /v1/twins/{id}/geometry`
//! (its scene's bodies and their shapes) and `GET /v1/twins/{id}/poses/events`
//! (server-sent events: the bodies' poses, in the geometry's order, each time
//! the twin has stepped, at most `hz` times a second). The inspector's 3D view
//! reads both; any client may. `GET /v1/twins/{id}/render` draws the twin
//! as it is now (PNG images and their labels), on the node's render workers.

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
        .protected(GET, "/v1/twins/{id}/render", TWINS_READ, render)
}

/// `GET /v1/twins/{id}/render`'s query. Numbers and vectors are read here,
/// not by the extractor, so that a bad one is refused by name.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RenderQuery {
    /// A camera of the scene, by prim path (e.g. `/World/Camera`); or give
    /// `eye` and `look_at` instead. Neither: the scene's first camera.
    #[param(example = "/World/Camera")]
    camera: Option<String>,
    /// Where a camera without a scene prim stands: `x,y,z` in metres.
    #[param(example = "3,-3,2")]
    eye: Option<String>,
    /// What it looks at: `x,y,z`.
    #[param(example = "0,0,0.5")]
    look_at: Option<String>,
    /// Up in the image: `x,y,z` (default: the scene's up axis).
    up: Option<String>,
    /// Vertical field of view in degrees (default: the camera's, or 60).
    fov_deg: Option<String>,
    /// Pixels, 1–4096 each (default 640×480).
    width: Option<String>,
    height: Option<String>,
    /// Comma-separated: `rgb`, `depth`, `normal`, `instance`, `semantic`
    /// (default `rgb`).
    #[param(example = "rgb,depth")]
    outputs: Option<String>,
    /// Rays a pixel for colour, 1–64 (default 1).
    spp: Option<String>,
    /// `png` (one output only; the default then) or `json` (every image as
    /// base64 PNG, with the labels; the default for several outputs).
    format: Option<String>,
}

pub(crate) fn number<T: std::str::FromStr>(
    field: &str,
    raw: &Option<String>,
    default: T,
) -> Result<T, ApiError> {
    match raw {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| {
            ApiError::invalid(
                field,
                format!("`{text}` is not a number of the expected kind"),
            )
        }),
    }
}

/// A picture's `width` and `height` query values, 1–4096 pixels each.
pub(crate) fn picture_size(
    width: &Option<String>,
    height: &Option<String>,
    (default_width, default_height): (u32, u32),
) -> Result<(u32, u32), ApiError> {
    let width: u32 = number("width", width, default_width)?;
    let height: u32 = number("height", height, default_height)?;
    for (field, v) in [("width", width), ("height", height)] {
        if !(1..=4096).contains(&v) {
            return Err(ApiError::invalid(
                field,
                format!("{v} is not between 1 and 4096 pixels"),
            ));
        }
    }
    Ok((width, height))
}

fn vector(field: &str, raw: &Option<String>) -> Result<Option<[f64; 3]>, ApiError> {
    let Some(text) = raw else {
        return Ok(None);
    };
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::invalid(field, format!("`{text}` is not three numbers x,y,z")))?;
    match parts.as_slice() {
        [x, y, z] if parts.iter().all(|v| v.is_finite()) => Ok(Some([*x, *y, *z])),
        _ => Err(ApiError::invalid(
            field,
            format!("`{text}` is not three finite numbers x,y,z"),
        )),
    }
}

/// The picture as JSON: each image a base64 PNG, with the labels.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct RenderedJson {
    time: f64,
    step: u64,
    width: u32,
    height: u32,
    intrinsics: hanzo_twin_render::Intrinsics,
    /// Output name → base64 PNG.
    images: std::collections::BTreeMap<String, String>,
    instances: Vec<hanzo_twin_render::InstanceLabel>,
    classes: Vec<String>,
    depth_scale_m: f64,
}

/// Draws the twin as it is now, through a scene camera or one placed by
/// `eye` and `look_at`. Colour is shaded from the scene's materials and
/// lights with shadows; depth (16-bit, millimetres from the image plane),
/// normals (16-bit, world space), instance ids (bodies) and semantic ids
/// (classes) are 16-bit PNGs. As JSON, the labels come too: each body's
/// tight and loose 2D box, pixels and visible fraction.
#[utoipa::path(get, path = "/v1/twins/{id}/render", operation_id = "twins_render", tag = "control", params(("id" = String, Path, description = "The twin's id, or its unique name", example = "robot-arm-cell"), RenderQuery), responses((status = 200, description = "One PNG image, or (format=json) every image with the labels", content((Vec<u8> = "image/png"), (RenderedJson = "application/json"))), Errors))]
pub(crate) async fn render(
    Twins(node): Twins,
    Path(id): Path<String>,
    Query(q): Query<RenderQuery>,
) -> Result<Response, ApiError> {
    use hanzo_twin_render::encode::Output;
    let outputs = match &q.outputs {
        None => vec![Output::Rgb],
        Some(list) => {
            let mut outputs = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let output = Output::parse(name).ok_or_else(|| {
                    ApiError::invalid(
                        "outputs",
                        format!("`{name}` is not an output; use rgb, depth, normal, instance or semantic"),
                    )
                })?;
                if !outputs.contains(&output) {
                    outputs.push(output);
                }
            }
            if outputs.is_empty() {
                return Err(ApiError::invalid("outputs", "name at least one output"));
            }
            outputs
        }
    };
    let json = match q.format.as_deref() {
        None => outputs.len() > 1,
        Some("json") => true,
        Some("png") if outputs.len() == 1 => false,
        Some("png") => {
            return Err(ApiError::invalid(
                "format",
                "png holds one image; ask for one output, or format=json",
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("`{other}` is not png or json"),
            ));
        }
    };
    let (width, height) = picture_size(&q.width, &q.height, (640, 480))?;
    let request = hanzo_twin_actors::protocol::RenderRequest {
        camera: q.camera.clone(),
        eye: vector("eye", &q.eye)?,
        look_at: vector("look_at", &q.look_at)?,
        up: vector("up", &q.up)?,
        fov_deg: q
            .fov_deg
            .as_ref()
            .map(|_| number("fov_deg", &q.fov_deg, 0.0))
            .transpose()?,
        width,
        height,
        outputs,
        samples_per_pixel: number("spp", &q.spp, 1)?,
    };
    let frame = node.render(&id, request).await?;
    if !json {
        let png = frame
            .images
            .into_iter()
            .next()
            .map(|i| i.png)
            .unwrap_or_default();
        return Ok((
            [
                (axum::http::header::CONTENT_TYPE, "image/png".to_string()),
                (
                    axum::http::header::HeaderName::from_static("x-hanzo-twin-step"),
                    frame.step.to_string(),
                ),
            ],
            png,
        )
            .into_response());
    }
    use base64::Engine as _;
    let images = frame
        .images
        .into_iter()
        .map(|i| {
            (
                i.output.name().to_string(),
                base64::engine::general_purpose::STANDARD.encode(i.png),
            )
        })
        .collect();
    Ok(axum::Json(RenderedJson {
        time: frame.time,
        step: frame.step,
        width: frame.width,
        height: frame.height,
        intrinsics: frame.intrinsics,
        images,
        instances: frame.instances,
        classes: frame.classes,
        depth_scale_m: frame.depth_scale_m,
    })
    .into_response())
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

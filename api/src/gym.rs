//! `/v1/gym/envs`: Gymnasium-compatible RL environments (HIP-0082's Gym
//! endpoints). One id is a batch of `num_envs` environments; reset and step
//! take and give every environment's row at once, and `send` / `recv` are
//! the asynchronous (EnvPool-style) forms. Those routes also trade batches
//! as safetensors buffers instead of JSON (`gym_tensors`).
//!
//! Environments are compute a caller submits, like jobs: creating and
//! driving them needs `jobs:submit`, reading `jobs:read`, deleting
//! `jobs:cancel` (operators: their own only). Stepping is the training loop:
//! only creation and deletion are audited, and the loop's routes are not
//! rate limited.

use crate::error::ApiError;
use crate::guard::{Caller, Created, DELETE, GET, POST, Routes, Twins};
use crate::gym_tensors;
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, parse_json};
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hanzo_twin_actors::gym::{GymEnvInfo, GymEnvRequest};
use hanzo_twin_gym::VecOutput;
use serde::Deserialize;
use serde_json::{Map, Value, json};

const fn jobs(action: Action) -> Permission {
    Permission::new(Resource::Jobs, action)
}

pub(crate) fn routes() -> Routes {
    use Action::*;
    Routes::new()
        .protected(GET, "/v1/gym/envs", jobs(Read), list)
        .audited(POST, "/v1/gym/envs", jobs(Submit), "gym.create", create)
        .protected(GET, "/v1/gym/envs/{id}", jobs(Read), get_env)
        .protected(GET, "/v1/gym/envs/{id}/render", jobs(Read), render)
        .audited(
            DELETE,
            "/v1/gym/envs/{id}",
            jobs(Cancel),
            "gym.delete",
            delete,
        )
        .training_loop(POST, "/v1/gym/envs/{id}/reset", jobs(Submit), reset)
        .training_loop(POST, "/v1/gym/envs/{id}/step", jobs(Submit), step)
        .training_loop(POST, "/v1/gym/envs/{id}/send", jobs(Submit), send)
        .training_loop(POST, "/v1/gym/envs/{id}/recv", jobs(Submit), recv)
}

#[utoipa::path(get, path = "/v1/gym/envs", operation_id = "gym_list", tag = "gym", responses((status = 200, description = "The caller's environment batches", body = GymEnvList), Errors))]
pub(crate) async fn list(Twins(node): Twins) -> ApiResult {
    let envs = node.gym_list().await?;
    Ok(axum::Json(GymEnvList { envs }).into_response())
}

/// `GET /v1/gym/envs`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct GymEnvList {
    envs: Vec<GymEnvInfo>,
}

#[utoipa::path(post, path = "/v1/gym/envs", operation_id = "gym_create", tag = "gym", request_body(content = GymEnvRequest, content_type = "application/json"), responses((status = 201, description = "Created", body = GymEnvInfo), Errors))]
pub(crate) async fn create(caller: Caller, Twins(node): Twins, body: Bytes) -> ApiResult {
    let request: GymEnvRequest = parse_json(&body, false)?;
    let info = node.gym_create(request, &caller.principal.subject).await?;
    let mut response = (StatusCode::CREATED, axum::Json(&info)).into_response();
    response.extensions_mut().insert(Created(info.id.clone()));
    Ok(response)
}

#[utoipa::path(get, path = "/v1/gym/envs/{id}", operation_id = "gym_get_env", tag = "gym", params(("id" = String, Path, description = "The environment batch's id")), responses((status = 200, description = "The batch: spaces, task, engine", body = GymEnvInfo), Errors))]
pub(crate) async fn get_env(Twins(node): Twins, Path(id): Path<String>) -> ApiResult {
    Ok(axum::Json(node.gym_get(&id).await?).into_response())
}

/// `GET /v1/gym/envs/{id}/render`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct GymRenderQuery {
    /// Which environment of the batch (default 0).
    env: Option<String>,
    /// A camera of the scene (a USD prim path, or an MJCF camera's name);
    /// default: the task's first camera, the scene's first, or a view that
    /// frames the moving bodies.
    #[param(example = "/World/Camera")]
    camera: Option<String>,
    /// Pixels, 1–4096 each (default 480×480, as Gymnasium's MuJoCo
    /// environments).
    width: Option<String>,
    height: Option<String>,
}

/// One environment as it is now, as an 8-bit sRGB PNG: what Gymnasium's
/// `render_mode="rgb_array"` shows.
#[utoipa::path(get, path = "/v1/gym/envs/{id}/render", operation_id = "gym_render", tag = "gym", params(("id" = String, Path, description = "The environment batch's id"), GymRenderQuery), responses((status = 200, description = "The picture", content((Vec<u8> = "image/png"))), Errors))]
pub(crate) async fn render(
    Twins(node): Twins,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<GymRenderQuery>,
) -> ApiResult {
    use crate::twin_view::{number, picture_size};
    let env_index: usize = number("env", &q.env, 0)?;
    let (width, height) = picture_size(&q.width, &q.height, (480, 480))?;
    let env = node.gym_open(&id).await?;
    let image = env.render(env_index, q.camera, width, height).await?;
    let png = hanzo_twin_render::encode::encode_rgb_png(image.width, image.height, &image.pixels)
        .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the picture: {e}"),
        )
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}

#[utoipa::path(delete, path = "/v1/gym/envs/{id}", operation_id = "gym_delete", tag = "gym", params(("id" = String, Path, description = "The environment batch's id")), responses((status = 204, description = "Deleted"), Errors))]
pub(crate) async fn delete(
    caller: Caller,
    Twins(node): Twins,
    Path(id): Path<String>,
) -> ApiResult {
    let info = node.gym_get(&id).await?;
    if !caller.may_act_on(&info.owner) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "gym environment {id} was created by {}; a twin-operator may delete only environments it created (a twin-admin may delete any)",
                info.owner
            ),
        ));
    }
    node.gym_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetRequest {
    #[serde(default)]
    seed: Option<u64>,
    /// Which environments to reset (all when absent).
    #[serde(default)]
    reset_mask: Option<Vec<bool>>,
}

#[utoipa::path(post, path = "/v1/gym/envs/{id}/reset", operation_id = "gym_reset", tag = "gym", params(("id" = String, Path, description = "The environment batch's id")), request_body(content = Option<ResetRequest>, content_type = "application/json"), responses((status = 200, description = "Observations and infos of every environment (safetensors when accepted)", content((Object = "application/json"), (Vec<u8> = "application/x-safetensors"))), Errors))]
pub(crate) async fn reset(
    Twins(node): Twins,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    gym_tensors::json_only(&headers, "reset")?;
    let req: ResetRequest = parse_json(&body, true)?;
    let env = node.gym_open(&id).await?;
    let out = env.reset(req.seed, req.reset_mask).await?;
    respond(&headers, &env.info, &out)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepRequest {
    /// One row per environment (`num_envs × action size`).
    actions: Vec<Vec<f32>>,
}

#[utoipa::path(post, path = "/v1/gym/envs/{id}/step", operation_id = "gym_step", tag = "gym", params(("id" = String, Path, description = "The environment batch's id")), request_body(content((StepRequest = "application/json"), (Vec<u8> = "application/x-safetensors"))), responses((status = 200, description = "Observations, rewards, terminations, truncations and infos (safetensors when accepted)", content((Object = "application/json"), (Vec<u8> = "application/x-safetensors"))), Errors))]
pub(crate) async fn step(
    Twins(node): Twins,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let env = node.gym_open(&id).await?;
    let info = &env.info;
    let actions = if gym_tensors::is_request(&headers) {
        gym_tensors::actions(&gym_tensors::parse(&body)?, info, info.num_envs)?
    } else {
        let req: StepRequest = parse_json(&body, false)?;
        flatten(&req.actions, info, info.num_envs)?
    };
    let out = env.step(actions).await?;
    respond(&headers, info, &out)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// Steps for these environments, one action row each; or, with
    /// `reset: true` and no actions, a reset of every environment.
    #[serde(default)]
    env_ids: Vec<usize>,
    #[serde(default)]
    actions: Vec<Vec<f32>>,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    seed: Option<u64>,
}

#[utoipa::path(post, path = "/v1/gym/envs/{id}/send", operation_id = "gym_send", tag = "gym", params(("id" = String, Path, description = "The environment batch's id")), request_body(content((SendRequest = "application/json"), (Vec<u8> = "application/x-safetensors"))), responses((status = 202, description = "Queued"), Errors))]
pub(crate) async fn send(
    Twins(node): Twins,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let env = node.gym_open(&id).await?;
    if gym_tensors::is_request(&headers) {
        // Steps only: a reset has no arrays to send.
        let tensors = gym_tensors::parse(&body)?;
        let env_ids = gym_tensors::env_ids(&tensors)?;
        let actions = gym_tensors::actions(&tensors, &env.info, env_ids.len())?;
        env.send(actions, env_ids).await?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let req: SendRequest = parse_json(&body, false)?;
    if req.reset {
        if !req.actions.is_empty() || !req.env_ids.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "a reset goes to every environment; leave env_ids and actions out",
            )
            .with_field("reset"));
        }
        env.send_reset(req.seed).await?;
    } else {
        if req.env_ids.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "name the environments to step (or send reset: true)",
            )
            .with_field("env_ids"));
        }
        let actions = flatten(&req.actions, &env.info, req.env_ids.len())?;
        env.send(actions, req.env_ids).await?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecvRequest {
    /// How many finished environments to wait for.
    batch_size: usize,
}

#[utoipa::path(post, path = "/v1/gym/envs/{id}/recv", operation_id = "gym_recv", tag = "gym", params(("id" = String, Path, description = "The environment batch's id")), request_body(content = RecvRequest, content_type = "application/json"), responses((status = 200, description = "The next finished environments' results (safetensors when accepted)", content((Object = "application/json"), (Vec<u8> = "application/x-safetensors"))), Errors))]
pub(crate) async fn recv(
    Twins(node): Twins,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    gym_tensors::json_only(&headers, "recv")?;
    let req: RecvRequest = parse_json(&body, false)?;
    let env = node.gym_open(&id).await?;
    let out = env.recv(req.batch_size).await?;
    respond(&headers, &env.info, &out)
}

/// A batch as the caller accepts it: safetensors, or JSON.
fn respond(headers: &HeaderMap, info: &GymEnvInfo, out: &VecOutput) -> ApiResult {
    if gym_tensors::is_accepted(headers) {
        gym_tensors::batch(info, out)
    } else {
        Ok(batch(info, out))
    }
}

/// Rows of actions as one flat array, checking the shape.
fn flatten(rows: &[Vec<f32>], info: &GymEnvInfo, expected: usize) -> Result<Vec<f32>, ApiError> {
    let width = info.action_space.len();
    if rows.len() != expected {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("expected {expected} action rows, got {}", rows.len()),
        )
        .with_field("actions"));
    }
    let mut flat = Vec::with_capacity(expected * width);
    for (i, row) in rows.iter().enumerate() {
        if row.len() != width {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("expected {width} values, got {}", row.len()),
            )
            .with_field(format!("actions[{i}]")));
        }
        flat.extend_from_slice(row);
    }
    Ok(flat)
}

/// One batch's results as JSON: a row per environment, `info` by key.
fn batch(info: &GymEnvInfo, out: &VecOutput) -> Response {
    let nobs = info.observation_space.len();
    let keys = &info.info_keys;
    let rows = out.env_ids.len();
    let obs: Vec<&[f64]> = out.obs.chunks(nobs.max(1)).take(rows).collect();
    let mut infos = Map::new();
    for (k, key) in keys.iter().enumerate() {
        let values: Vec<f64> = (0..rows).map(|r| out.info[r * keys.len() + k]).collect();
        infos.insert(key.clone(), json!(values));
    }
    infos.insert("episode".into(), json!(out.episode));
    infos.insert("elapsed_steps".into(), json!(out.elapsed));
    if out.episode_params.iter().any(|p| *p != Default::default()) {
        infos.insert("randomization".into(), json!(out.episode_params));
    }
    let mut body = json!({
        "env_ids": out.env_ids,
        "observations": obs,
        "rewards": out.reward,
        "terminated": out.terminated,
        "truncated": out.truncated,
        "info": Value::Object(infos),
    });
    if out.has_final.iter().any(|f| *f) {
        let final_obs: Vec<Value> = (0..rows)
            .map(|r| {
                if out.has_final[r] {
                    json!(&out.final_obs[r * nobs..(r + 1) * nobs])
                } else {
                    Value::Null
                }
            })
            .collect();
        let mut final_info = Map::new();
        for (k, key) in keys.iter().enumerate() {
            let values: Vec<Value> = (0..rows)
                .map(|r| {
                    if out.has_final[r] {
                        json!(out.final_info[r * keys.len() + k])
                    } else {
                        Value::Null
                    }
                })
                .collect();
            final_info.insert(key.clone(), Value::Array(values));
        }
        body["final_observations"] = Value::Array(final_obs);
        body["final_info"] = Value::Object(final_info);
    }
    axum::Json(body).into_response()
}

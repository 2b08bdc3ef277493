//! The binary form of the training loop's routes: batches as safetensors
//! buffers (a JSON header naming each array's dtype and shape, then the raw
//! little-endian arrays), which a client turns into NumPy arrays without
//! parsing a number. A request whose `Content-Type` is [`MEDIA_TYPE`] sends
//! its actions so; a response comes so when `Accept` names it. JSON stays
//! the default, and errors are JSON either way.
//!
//! Response tensors: `env_ids` (i64, k), `observations` (f64, k × obs size),
//! `rewards` (f64, k), `terminated` and `truncated` (bool, k), `info` (f64,
//! k × the `info_keys`, in the environment's order), `episode` (u64, k),
//! `elapsed_steps` (u32, k); when an episode ended this step in SAME_STEP
//! mode, `has_final` (bool, k), `final_observations` and `final_info` (zeros
//! in rows without one). Metadata: `info_keys` (a JSON array) and, when
//! randomizing, `randomization` (a JSON array of each row's parameters).

use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hanzo_twin_actors::gym::GymEnvInfo;
use hanzo_twin_gym::VecOutput;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;

pub(crate) const MEDIA_TYPE: &str = "application/x-safetensors";

/// Whether the request body is a safetensors buffer.
pub(crate) fn is_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim() == MEDIA_TYPE))
}

/// Whether the caller accepts a safetensors response.
pub(crate) fn is_accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.split(';').next().is_some_and(|t| t.trim() == MEDIA_TYPE))
}

/// Refuses a safetensors body on a route whose request is JSON (reset and
/// recv take no arrays).
pub(crate) fn json_only(headers: &HeaderMap, route: &str) -> Result<(), ApiError> {
    if is_request(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{route} takes a JSON body; only step and send take safetensors (send Accept: {MEDIA_TYPE} for a binary answer)"
            ),
        )
        .with_field("content-type"));
    }
    Ok(())
}

/// The request's tensors.
pub fn parse(body: &[u8]) -> Result<SafeTensors<'_>, ApiError> {
    SafeTensors::deserialize(body)
        .map_err(|e| ApiError::invalid("", format!("the body is not a safetensors buffer: {e}")))
}

/// Tensor `name` of `dtype`, with the shape `expected` accepts.
fn tensor<'a>(
    tensors: &SafeTensors<'a>,
    name: &str,
    dtype: Dtype,
    expected: impl Fn(&[usize]) -> Result<(), String>,
) -> Result<TensorView<'a>, ApiError> {
    let t = tensors
        .tensor(name)
        .map_err(|_| ApiError::invalid(name, "missing from the safetensors buffer"))?;
    if t.dtype() != dtype {
        return Err(ApiError::invalid(
            name,
            format!("has dtype {}, expected {dtype}", t.dtype()),
        ));
    }
    expected(t.shape()).map_err(|want| {
        ApiError::invalid(name, format!("has shape {:?}, expected {want}", t.shape()))
    })?;
    Ok(t)
}

/// Actions, `rows` × the action size, as float32 (what the action space is).
pub fn actions(
    tensors: &SafeTensors<'_>,
    info: &GymEnvInfo,
    rows: usize,
) -> Result<Vec<f32>, ApiError> {
    let want = [rows, info.action_space.len()];
    let t = tensor(tensors, "actions", Dtype::F32, |shape| {
        (shape == want).then_some(()).ok_or(format!("{want:?}"))
    })?;
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Environment ids (int64, one dimension).
pub fn env_ids(tensors: &SafeTensors<'_>) -> Result<Vec<usize>, ApiError> {
    let t = tensor(tensors, "env_ids", Dtype::I64, |shape| {
        (shape.len() == 1)
            .then_some(())
            .ok_or("one dimension".into())
    })?;
    t.data()
        .chunks_exact(8)
        .enumerate()
        .map(|(k, b)| {
            let id = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            usize::try_from(id)
                .map_err(|_| ApiError::invalid(format!("env_ids[{k}]"), "ids are never negative"))
        })
        .collect()
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// One named array of a response: dtype, shape and little-endian bytes.
struct Array {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Array {
    fn new<T: Copy, const N: usize>(
        name: &'static str,
        dtype: Dtype,
        shape: Vec<usize>,
        values: &[T],
        to_le: fn(T) -> [u8; N],
    ) -> Array {
        let data = values.iter().flat_map(|v| to_le(*v)).collect();
        Array {
            name,
            dtype,
            shape,
            data,
        }
    }

    fn f64s(name: &'static str, shape: Vec<usize>, values: &[f64]) -> Array {
        Array::new(name, Dtype::F64, shape, values, f64::to_le_bytes)
    }

    fn flags(name: &'static str, values: &[bool]) -> Array {
        Array::new(name, Dtype::BOOL, vec![values.len()], values, |b| {
            [u8::from(b)]
        })
    }
}

/// One batch's results as a safetensors buffer.
pub(crate) fn batch(info: &GymEnvInfo, out: &VecOutput) -> Result<Response, ApiError> {
    let rows = out.env_ids.len();
    let (nobs, ninfo) = (info.observation_space.len(), info.info_keys.len());
    let ids: Vec<i64> = out.env_ids.iter().map(|&i| i as i64).collect();
    let mut arrays = vec![
        Array::new("env_ids", Dtype::I64, vec![rows], &ids, i64::to_le_bytes),
        Array::f64s("observations", vec![rows, nobs], &out.obs),
        Array::f64s("rewards", vec![rows], &out.reward),
        Array::flags("terminated", &out.terminated),
        Array::flags("truncated", &out.truncated),
        Array::f64s("info", vec![rows, ninfo], &out.info),
        Array::new(
            "episode",
            Dtype::U64,
            vec![rows],
            &out.episode,
            u64::to_le_bytes,
        ),
        Array::new(
            "elapsed_steps",
            Dtype::U32,
            vec![rows],
            &out.elapsed,
            u32::to_le_bytes,
        ),
    ];
    if out.has_final.iter().any(|f| *f) {
        arrays.push(Array::flags("has_final", &out.has_final));
        arrays.push(Array::f64s(
            "final_observations",
            vec![rows, nobs],
            &out.final_obs,
        ));
        arrays.push(Array::f64s(
            "final_info",
            vec![rows, ninfo],
            &out.final_info,
        ));
    }
    let encoding = |e: safetensors::SafeTensorError| {
        internal(format!("cannot encode the batch as safetensors: {e}"))
    };
    let views = arrays
        .iter()
        .map(|a| TensorView::new(a.dtype, a.shape.clone(), &a.data).map(|v| (a.name, v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(encoding)?;
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| internal(format!("cannot encode the batch's metadata: {e}")))
    };
    let mut metadata = HashMap::new();
    metadata.insert(
        "info_keys".to_string(),
        json(serde_json::to_string(&info.info_keys))?,
    );
    if out.episode_params.iter().any(|p| *p != Default::default()) {
        metadata.insert(
            "randomization".to_string(),
            json(serde_json::to_string(&out.episode_params))?,
        );
    }
    let body = safetensors::serialize(views, Some(metadata)).map_err(encoding)?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE))],
        body,
    )
        .into_response())
}

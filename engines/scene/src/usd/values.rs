//! Loose decoding of authored `sdf::Value`s: USD lets a schema attribute be
//! authored at any precision (`half`, `float`, `double`), so the reader accepts
//! each numeric spelling and widens it to `f64`.

use openusd::gf::f16;
use openusd::sdf::Value;

/// Widens an `f32` to the `f64` with the same shortest decimal spelling, so a
/// `float` authored as `9.81` reads as 9.81 rather than 9.8100004196167.
fn widen(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    // Display of f32 is the shortest string that round-trips, so it parses.
    f.to_string().parse().unwrap_or(f64::from(f))
}

fn widen_half(h: f16) -> f64 {
    widen(h.to_f32())
}

pub(crate) fn scalar(v: &Value) -> Option<f64> {
    Some(match v {
        Value::Double(d) => *d,
        Value::Float(f) => widen(*f),
        Value::Half(h) => widen_half(*h),
        Value::Int(i) => f64::from(*i),
        Value::Uint(i) => f64::from(*i),
        Value::Uchar(i) => f64::from(*i),
        // Precision loss past 2^53 is irrelevant for physical quantities.
        Value::Int64(i) => *i as f64,
        Value::Uint64(i) => *i as f64,
        _ => return None,
    })
}

pub(crate) fn vec2(v: &Value) -> Option<[f64; 2]> {
    Some(match v {
        Value::Vec2d(a) => [a.x, a.y],
        Value::Vec2f(a) => [widen(a.x), widen(a.y)],
        Value::Vec2h(a) => [widen_half(a.x), widen_half(a.y)],
        Value::Vec2i(a) => [f64::from(a.x), f64::from(a.y)],
        _ => return None,
    })
}

pub(crate) fn vec3(v: &Value) -> Option<[f64; 3]> {
    Some(match v {
        Value::Vec3d(a) => [a.x, a.y, a.z],
        Value::Vec3f(a) => [widen(a.x), widen(a.y), widen(a.z)],
        Value::Vec3h(a) => [widen_half(a.x), widen_half(a.y), widen_half(a.z)],
        Value::Vec3i(a) => [f64::from(a.x), f64::from(a.y), f64::from(a.z)],
        _ => return None,
    })
}

/// A quaternion as USD stores it, `(w, x, y, z)`, reordered to `[x, y, z, w]`.
pub(crate) fn quat_xyzw(v: &Value) -> Option<[f64; 4]> {
    Some(match v {
        Value::Quatd(q) => [q.x, q.y, q.z, q.w],
        Value::Quatf(q) => [widen(q.x), widen(q.y), widen(q.z), widen(q.w)],
        Value::Quath(q) => [
            widen_half(q.x),
            widen_half(q.y),
            widen_half(q.z),
            widen_half(q.w),
        ],
        _ => return None,
    })
}

/// A point array (mesh vertices). Precision beyond f32 is irrelevant here, so
/// floats are widened directly.
pub(crate) fn vec3_array(v: &Value) -> Option<Vec<[f64; 3]>> {
    Some(match v {
        Value::Vec3fVec(a) => a
            .iter()
            .map(|p| [f64::from(p.x), f64::from(p.y), f64::from(p.z)])
            .collect(),
        Value::Vec3dVec(a) => a.iter().map(|p| [p.x, p.y, p.z]).collect(),
        _ => return None,
    })
}

pub(crate) fn int_array(v: &Value) -> Option<Vec<i64>> {
    Some(match v {
        Value::IntVec(a) => a.iter().map(|i| i64::from(*i)).collect(),
        Value::UintVec(a) => a.iter().map(|i| i64::from(*i)).collect(),
        Value::Int64Vec(a) => a.clone(),
        _ => return None,
    })
}

pub(crate) fn token(v: &Value) -> Option<&str> {
    match v {
        Value::Token(t) => Some(t.as_str()),
        Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

pub(crate) fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        // Some exporters write flags as ints.
        Value::Int(i) => Some(*i != 0),
        _ => None,
    }
}

/// A short name of the value's type, for error messages.
pub(crate) fn type_name(v: &Value) -> String {
    let debug = format!("{v:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("value")
        .to_string()
}

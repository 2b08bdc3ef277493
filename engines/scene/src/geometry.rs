//! Rotations and frames: the one place the engines crate does quaternion and
//! vector math. Quaternions are `[x, y, z, w]` (USD's `GfQuat` order is
//! `w` first; readers convert at the edge), rotation matrices act on column
//! vectors, and every function works on plain arrays so adapters can use it
//! whatever their engine's own types.

/// A unit quaternion `[x, y, z, w]`.
pub type Quat = [f64; 4];
/// A 3×3 matrix, rows first.
pub type Mat3 = [[f64; 3]; 3];

pub const IDENTITY: Quat = [0.0, 0.0, 0.0, 1.0];

/// Hamilton product `a * b` (apply `b`, then `a`).
pub fn quat_mul(a: Quat, b: Quat) -> Quat {
    let [ax, ay, az, aw] = a;
    let [bx, by, bz, bw] = b;
    [
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ]
}

/// The rotation by `angle` radians about the unit vector `axis`.
pub fn quat_from_axis_angle(axis: [f64; 3], angle: f64) -> Quat {
    let (s, c) = (angle / 2.0).sin_cos();
    [axis[0] * s, axis[1] * s, axis[2] * s, c]
}

/// The inverse of a unit quaternion.
pub fn quat_conj(q: Quat) -> Quat {
    [-q[0], -q[1], -q[2], q[3]]
}

/// `v` rotated by the unit quaternion `q`.
pub fn quat_rotate(q: Quat, v: [f64; 3]) -> [f64; 3] {
    let u = [q[0], q[1], q[2]];
    let w = q[3];
    // v + 2w(u × v) + 2 u × (u × v)
    let uv = cross(u, v);
    let uuv = cross(u, uv);
    [
        v[0] + 2.0 * (w * uv[0] + uuv[0]),
        v[1] + 2.0 * (w * uv[1] + uuv[1]),
        v[2] + 2.0 * (w * uv[2] + uuv[2]),
    ]
}

/// `q` scaled to unit length; `None` for a zero or non-finite quaternion.
pub fn normalize_quat(q: Quat) -> Option<Quat> {
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    if !n.is_finite() || n < 1e-9 {
        return None;
    }
    Some([q[0] / n, q[1] / n, q[2] / n, q[3] / n])
}

/// The quaternion of a proper rotation matrix, with `w >= 0` so equal
/// rotations give equal quaternions.
pub fn quat_from_matrix(r: &Mat3) -> Quat {
    let trace = r[0][0] + r[1][1] + r[2][2];
    let q = if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        [
            (r[2][1] - r[1][2]) / s,
            (r[0][2] - r[2][0]) / s,
            (r[1][0] - r[0][1]) / s,
            0.25 * s,
        ]
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        [
            0.25 * s,
            (r[0][1] + r[1][0]) / s,
            (r[0][2] + r[2][0]) / s,
            (r[2][1] - r[1][2]) / s,
        ]
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        [
            (r[0][1] + r[1][0]) / s,
            0.25 * s,
            (r[1][2] + r[2][1]) / s,
            (r[0][2] - r[2][0]) / s,
        ]
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        [
            (r[0][2] + r[2][0]) / s,
            (r[1][2] + r[2][1]) / s,
            0.25 * s,
            (r[1][0] - r[0][1]) / s,
        ]
    };
    let q = normalize_quat(q).unwrap_or(IDENTITY);
    if q[3] < 0.0 { q.map(|c| -c) } else { q }
}

/// The rotation matrix of a unit quaternion.
pub fn quat_to_matrix(q: Quat) -> Mat3 {
    let [x, y, z, w] = q;
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - z * w),
            2.0 * (x * z + y * w),
        ],
        [
            2.0 * (x * y + z * w),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - x * w),
        ],
        [
            2.0 * (x * z - y * w),
            2.0 * (y * z + x * w),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// Roll, pitch, yaw as URDF and ROS mean them: about fixed X, then Y, then Z.
pub fn quat_from_rpy(rpy: [f64; 3]) -> Quat {
    let half = |a: f64| ((a / 2.0).sin(), (a / 2.0).cos());
    let (sr, cr) = half(rpy[0]);
    let (sp, cp) = half(rpy[1]);
    let (sy, cy) = half(rpy[2]);
    quat_mul(
        quat_mul([0.0, 0.0, sy, cy], [0.0, sp, 0.0, cp]),
        [sr, 0.0, 0.0, cr],
    )
}

/// The shortest rotation taking +X onto the unit vector `a`.
pub fn quat_from_x_to(a: [f64; 3]) -> Quat {
    let d = a[0]; // dot((1,0,0), a)
    if d > 1.0 - 1e-12 {
        return IDENTITY;
    }
    if d < -1.0 + 1e-12 {
        return [0.0, 0.0, 1.0, 0.0]; // half turn about Z
    }
    // Axis (1,0,0) × a = (0, -a.z, a.y).
    normalize_quat([0.0, -a[2], a[1], 1.0 + d]).unwrap_or(IDENTITY)
}

/// The pose `(world_t, world_r)` expressed in the frame `(frame_t, frame_r)`.
pub fn relative(
    frame_t: [f64; 3],
    frame_r: Quat,
    world_t: [f64; 3],
    world_r: Quat,
) -> ([f64; 3], Quat) {
    let inv = quat_conj(frame_r);
    let t = quat_rotate(inv, sub(world_t, frame_t));
    let r = normalize_quat(quat_mul(inv, world_r)).unwrap_or(IDENTITY);
    (t, r)
}

/// The angle in radians between two orientations (0 to π).
pub fn angle_between(a: Quat, b: Quat) -> f64 {
    let d = quat_mul(quat_conj(a), b);
    let v = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    2.0 * v.atan2(d[3].abs())
}

pub fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub fn scaled(v: [f64; 3], s: f64) -> [f64; 3] {
    [v[0] * s, v[1] * s, v[2] * s]
}

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn a_quarter_turn_about_z_takes_x_to_y_and_back() {
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let q = [0.0, 0.0, h, h];
        assert!(close(&quat_rotate(q, [1.0, 0.0, 0.0]), &[0.0, 1.0, 0.0]));
        assert!(close(
            &quat_rotate(quat_conj(q), [0.0, 1.0, 0.0]),
            &[1.0, 0.0, 0.0]
        ));
        assert!(close(&quat_mul(q, quat_conj(q)), &IDENTITY));
        assert!((angle_between(IDENTITY, q) - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
    }

    #[test]
    fn matrices_and_quaternions_round_trip_with_a_canonical_sign() {
        let q = quat_from_rpy([0.3, -0.7, 1.1]);
        let back = quat_from_matrix(&quat_to_matrix(q));
        let q = if q[3] < 0.0 { q.map(|c| -c) } else { q };
        assert!(close(&back, &q), "{back:?} vs {q:?}");
        let flipped = quat_from_matrix(&quat_to_matrix(q.map(|c| -c)));
        assert!(close(&flipped, &q));
    }

    #[test]
    fn rpy_composes_fixed_axes_x_then_y_then_z() {
        let [r, p, y] = [0.2, 0.4, -0.6];
        let composed = quat_mul(
            quat_mul(quat_from_rpy([0.0, 0.0, y]), quat_from_rpy([0.0, p, 0.0])),
            quat_from_rpy([r, 0.0, 0.0]),
        );
        assert!(close(&composed, &quat_from_rpy([r, p, y])));
    }

    #[test]
    fn x_is_turned_onto_any_axis() {
        for a in [
            [0.0, 1.0, 0.0],
            [0.0, 0.0, -1.0],
            [-1.0, 0.0, 0.0],
            [0.6, 0.0, 0.8],
        ] {
            assert!(
                close(&quat_rotate(quat_from_x_to(a), [1.0, 0.0, 0.0]), &a),
                "{a:?}"
            );
        }
    }
}

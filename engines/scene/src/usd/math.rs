//! Splitting USD's 4×4 transforms into a rigid pose plus scale (rotations and
//! frames themselves are in [`crate::geometry`]).
//!
//! USD matrices (`gf::Matrix4d`) are row-major and act on row vectors
//! (`p' = p · M`), so a matrix's first three rows are the images of the local
//! x, y and z axes and its last row is the translation.

use crate::geometry::{cross, dot, norm, quat_from_matrix, sub};
use openusd::gf::Matrix4d;

/// Relative tolerance for "these scales are equal" and "this matrix has no shear".
pub(crate) const TOLERANCE: f64 = 1e-6;

/// A world transform split into a rigid part and a per-axis scale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decomposed {
    pub translation: [f64; 3],
    /// Unit quaternion `[x, y, z, w]`.
    pub rotation: [f64; 4],
    /// Length of each local axis after the transform (always positive; a mirror
    /// is folded into the rotation, which shapes symmetric about their origin
    /// do not notice).
    pub scale: [f64; 3],
    /// Whether the axes were not orthogonal (a non-uniform scale under a
    /// rotated parent), which no pose plus scale can represent exactly.
    pub sheared: bool,
}

/// Why a matrix could not be split into a pose and a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecomposeError {
    /// A zero scale collapses an axis; the rotation is undefined.
    Degenerate,
    /// The last column is not (0, 0, 0, 1): a projective matrix.
    Projective,
    NotFinite,
}

impl std::fmt::Display for DecomposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecomposeError::Degenerate => "its transform has a zero scale",
            DecomposeError::Projective => "its transform is projective, not affine",
            DecomposeError::NotFinite => "its transform is not finite",
        })
    }
}

pub(crate) fn transform_point(m: &Matrix4d, p: [f64; 3]) -> [f64; 3] {
    let m = &m.0;
    [
        p[0] * m[0] + p[1] * m[4] + p[2] * m[8] + m[12],
        p[0] * m[1] + p[1] * m[5] + p[2] * m[9] + m[13],
        p[0] * m[2] + p[1] * m[6] + p[2] * m[10] + m[14],
    ]
}

pub(crate) fn decompose(m: &Matrix4d) -> Result<Decomposed, DecomposeError> {
    if m.0.iter().any(|v| !v.is_finite()) {
        return Err(DecomposeError::NotFinite);
    }
    let a = &m.0;
    if a[3].abs() > TOLERANCE || a[7].abs() > TOLERANCE || a[11].abs() > TOLERANCE {
        return Err(DecomposeError::Projective);
    }
    let rows = [[a[0], a[1], a[2]], [a[4], a[5], a[6]], [a[8], a[9], a[10]]];
    let scale = [norm(rows[0]), norm(rows[1]), norm(rows[2])];
    let largest = scale.iter().cloned().fold(0.0, f64::max);
    if scale.iter().any(|&s| s <= 1e-12 * largest.max(1.0)) {
        return Err(DecomposeError::Degenerate);
    }
    // Gram-Schmidt: the rotation keeps the direction of the x axis exactly.
    let u0 = div(rows[0], scale[0]);
    let v1 = sub(rows[1], mul(u0, dot(rows[1], u0)));
    let n1 = norm(v1);
    if n1 <= 1e-9 * scale[1] {
        return Err(DecomposeError::Degenerate);
    }
    let u1 = div(v1, n1);
    // A mirrored transform (negative determinant) keeps a proper rotation; the
    // mirror only flips the z axis of shapes, which are symmetric.
    let u2 = cross(u0, u1);
    if dot(rows[2], u2).abs() <= 1e-9 * scale[2] {
        return Err(DecomposeError::Degenerate);
    }
    let sheared = dot(rows[0], rows[1]).abs() > TOLERANCE * scale[0] * scale[1]
        || dot(rows[0], rows[2]).abs() > TOLERANCE * scale[0] * scale[2]
        || dot(rows[1], rows[2]).abs() > TOLERANCE * scale[1] * scale[2];
    // Column-vector rotation matrix: its columns are the rotated local axes.
    let r = [
        [u0[0], u1[0], u2[0]],
        [u0[1], u1[1], u2[1]],
        [u0[2], u1[2], u2[2]],
    ];
    Ok(Decomposed {
        translation: [a[12], a[13], a[14]],
        rotation: quat_from_matrix(&r),
        scale,
        sheared,
    })
}

fn mul(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn div(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] / s, a[1] / s, a[2] / s]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{quat_rotate, relative};

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn decomposes_translate_rotate_scale() {
        // scale (1, 2, 3), then 90° about z, then translate (4, 5, 6): S · R · T.
        let m = Matrix4d::scale([1.0, 2.0, 3.0])
            * Matrix4d::rotation_z(std::f64::consts::FRAC_PI_2)
            * Matrix4d::translation([4.0, 5.0, 6.0]);
        let d = decompose(&m).expect("decomposes");
        assert!(close(&d.translation, &[4.0, 5.0, 6.0]));
        assert!(close(&d.scale, &[1.0, 2.0, 3.0]));
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!(close(&d.rotation, &[0.0, 0.0, h, h]), "{:?}", d.rotation);
        assert!(!d.sheared);
        // The rotation turns local x into world y.
        assert!(close(
            &quat_rotate(d.rotation, [1.0, 0.0, 0.0]),
            &[0.0, 1.0, 0.0]
        ));
    }

    #[test]
    fn rejects_zero_scale() {
        let m = Matrix4d::scale([1.0, 0.0, 1.0]);
        assert_eq!(decompose(&m).unwrap_err(), DecomposeError::Degenerate);
    }

    #[test]
    fn relative_pose_inverts_the_frame() {
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let frame_r = [0.0, 0.0, h, h];
        let (t, r) = relative([1.0, 0.0, 0.0], frame_r, [1.0, 1.0, 0.0], frame_r);
        assert!(close(&t, &[1.0, 0.0, 0.0]), "{t:?}");
        assert!(close(&r, &[0.0, 0.0, 0.0, 1.0]));
    }
}

//! Real spherical harmonics with svox2's constants, ordering and signs, degrees 0 to 4.
//!
//! Basis `l² + l + m` (for `m = -l..=l`) is the real harmonic `Y_l^m` *with* the Condon–Shortley
//! phase, so odd-`m` functions carry a minus sign: degree 1 is `[-C1·y, C1·z, -C1·x]`. This is
//! svox2's `utils.eval_sh_bases` (constants from google/spherical-harmonics) and its CUDA
//! `calc_sh`; the CUDA kernel stops at degree 2 (9 bases) and svox2's `SparseGrid` accepts at
//! most 9, degrees 3 and 4 follow the Python function.

use candle_core::{Result, Tensor};

/// `1 / (2√π)`.
pub const SH_C0: f64 = 0.282_094_791_773_878_14;
/// `√3 / (2√π)`.
pub const SH_C1: f64 = 0.488_602_511_902_919_9;
/// Degree-2 constants, `m = -2..=2`.
pub const SH_C2: [f64; 5] = [
    1.092_548_430_592_079_2,
    -1.092_548_430_592_079_2,
    0.315_391_565_252_520_05,
    -1.092_548_430_592_079_2,
    0.546_274_215_296_039_6,
];
/// Degree-3 constants, `m = -3..=3`.
pub const SH_C3: [f64; 7] = [
    -0.590_043_589_926_643_5,
    2.890_611_442_640_554,
    -0.457_045_799_464_465_8,
    0.373_176_332_590_115_4,
    -0.457_045_799_464_465_8,
    1.445_305_721_320_277,
    -0.590_043_589_926_643_5,
];
/// Degree-4 constants, `m = -4..=4`.
pub const SH_C4: [f64; 9] = [
    2.503_342_941_796_704_6,
    -1.770_130_769_779_930_4,
    0.946_174_695_757_560_1,
    -0.669_046_543_557_289_2,
    0.105_785_546_915_204_31,
    -0.669_046_543_557_289_2,
    0.473_087_347_878_780_04,
    -1.770_130_769_779_930_4,
    0.625_835_735_449_176_1,
];

/// Highest supported degree.
pub const MAX_SH_DEGREE: usize = 4;
/// Bases at the highest degree, `(MAX_SH_DEGREE + 1)²`.
pub const MAX_SH_BASES: usize = (MAX_SH_DEGREE + 1) * (MAX_SH_DEGREE + 1);

/// Number of bases `K = (degree + 1)²`; saturates at `usize::MAX` for degrees far above
/// [`MAX_SH_DEGREE`] rather than overflowing (callers check the degree first).
pub fn num_bases(degree: usize) -> usize {
    let side = degree.saturating_add(1);
    side.saturating_mul(side)
}

/// The degree whose basis count is `bases`, if it is a supported square (1, 4, 9, 16, 25).
pub fn degree_of(bases: usize) -> Option<usize> {
    (0..=MAX_SH_DEGREE).find(|&d| num_bases(d) == bases)
}

/// Writes the first `out.len()` bases (1, 4, 9, 16 or 25) at the unit direction `dir`.
///
/// Other lengths write only the leading complete degrees; callers pass a length from
/// [`num_bases`]. Degrees ≥ 2 use `x² + y² + z² = 1`, as svox2 does, so `dir` must be unit.
pub fn eval_sh_bases_into(dir: [f64; 3], out: &mut [f64]) {
    let [x, y, z] = dir;
    let n = out.len();
    if n >= 1 {
        out[0] = SH_C0;
    }
    if n >= 4 {
        out[1] = -SH_C1 * y;
        out[2] = SH_C1 * z;
        out[3] = -SH_C1 * x;
    }
    let (xx, yy, zz) = (x * x, y * y, z * z);
    let (xy, yz, xz) = (x * y, y * z, x * z);
    if n >= 9 {
        out[4] = SH_C2[0] * xy;
        out[5] = SH_C2[1] * yz;
        out[6] = SH_C2[2] * (2.0 * zz - xx - yy);
        out[7] = SH_C2[3] * xz;
        out[8] = SH_C2[4] * (xx - yy);
    }
    if n >= 16 {
        out[9] = SH_C3[0] * y * (3.0 * xx - yy);
        out[10] = SH_C3[1] * xy * z;
        out[11] = SH_C3[2] * y * (4.0 * zz - xx - yy);
        out[12] = SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy);
        out[13] = SH_C3[4] * x * (4.0 * zz - xx - yy);
        out[14] = SH_C3[5] * z * (xx - yy);
        out[15] = SH_C3[6] * x * (xx - 3.0 * yy);
    }
    if n >= 25 {
        out[16] = SH_C4[0] * xy * (xx - yy);
        out[17] = SH_C4[1] * yz * (3.0 * xx - yy);
        out[18] = SH_C4[2] * xy * (7.0 * zz - 1.0);
        out[19] = SH_C4[3] * yz * (7.0 * zz - 3.0);
        out[20] = SH_C4[4] * (zz * (35.0 * zz - 30.0) + 3.0);
        out[21] = SH_C4[5] * xz * (7.0 * zz - 3.0);
        out[22] = SH_C4[6] * (xx - yy) * (7.0 * zz - 1.0);
        out[23] = SH_C4[7] * xz * (xx - 3.0 * yy);
        out[24] = SH_C4[8] * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy));
    }
}

/// svox2's `eval_sh_bases`: the `K = (degree + 1)²` bases at each direction.
///
/// `dirs` is `[N, 3]` (any float dtype; each row is normalised first, so non-unit directions
/// are accepted); returns `[N, K]` in the dtype of `dirs`. Not differentiable in `dirs`.
pub fn eval_sh_bases(degree: usize, dirs: &Tensor) -> Result<Tensor> {
    if degree > MAX_SH_DEGREE {
        candle_core::bail!("eval_sh_bases: degree {degree} is above the supported {MAX_SH_DEGREE}");
    }
    let (n, three) = dirs.dims2()?;
    if three != 3 {
        candle_core::bail!(
            "eval_sh_bases: directions must be [N, 3], got {:?}",
            dirs.dims()
        );
    }
    let k = num_bases(degree);
    let rows: Vec<f64> = dirs
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    let mut out = vec![0.0f64; n * k];
    for (row, bases) in rows.chunks_exact(3).zip(out.chunks_exact_mut(k)) {
        eval_sh_bases_into(unit([row[0], row[1], row[2]]), bases);
    }
    Tensor::from_vec(out, (n, k), dirs.device())?.to_dtype(dirs.dtype())
}

/// `v / |v|`, or `v` unchanged when its length is zero or not finite.
pub(crate) fn unit(v: [f64; 3]) -> [f64; 3] {
    let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if norm > 0.0 && norm.is_finite() {
        [v[0] / norm, v[1] / norm, v[2] / norm]
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real SH are orthonormal on the sphere: a Fibonacci-lattice quadrature of `Y_i·Y_j`
    /// gives the identity up to the quadrature error.
    #[test]
    fn bases_are_orthonormal() {
        let n = 20_000;
        let mut gram = vec![0.0f64; MAX_SH_BASES * MAX_SH_BASES];
        let mut b = [0.0f64; MAX_SH_BASES];
        let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
        for i in 0..n {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let phi = golden * i as f64;
            eval_sh_bases_into([r * phi.cos(), r * phi.sin(), z], &mut b);
            for p in 0..MAX_SH_BASES {
                for q in 0..MAX_SH_BASES {
                    gram[p * MAX_SH_BASES + q] += b[p] * b[q];
                }
            }
        }
        let scale = 4.0 * std::f64::consts::PI / n as f64;
        for p in 0..MAX_SH_BASES {
            for q in 0..MAX_SH_BASES {
                let want = if p == q { 1.0 } else { 0.0 };
                let got = gram[p * MAX_SH_BASES + q] * scale;
                assert!((got - want).abs() < 1e-3, "<Y{p}, Y{q}> = {got}");
            }
        }
    }

    #[test]
    fn degree_one_signs_follow_svox2() {
        let mut b = [0.0; 4];
        eval_sh_bases_into([1.0, 0.0, 0.0], &mut b);
        assert_eq!(b, [SH_C0, 0.0, 0.0, -SH_C1]);
        eval_sh_bases_into([0.0, 1.0, 0.0], &mut b);
        assert_eq!(b, [SH_C0, -SH_C1, 0.0, 0.0]);
        assert_eq!(degree_of(16), Some(3));
        assert_eq!(degree_of(10), None);
    }
}

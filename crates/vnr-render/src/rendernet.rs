//! RenderNet's camera pose and its voxel-to-camera resampling.
//!
//! RenderNet (Nguyen-Phuoc et al. 2018) does not ray-march: it rotates the object's voxel grid
//! into camera space, enlarges it (64³ → 128³ so the rotated object is not cut off) and lets
//! its 3D convolutions and projection unit do the rest. This module reproduces that resampling
//! exactly as the original TensorFlow code does it (`tools/resampling_voxel_grid.py`,
//! `tf_rotation_around_grid_centroid` and `tf_resampling`), differentiably with respect to the
//! voxels and to the pose, through [`vnr_ops::grid_sample::grid_sample3d`].
//!
//! # Pose
//! The original demo turns (azimuth°, elevation°, radius) into the view parameters
//! `[φ, θ, s] = [az·π/180, (90 − el)·π/180, 3.3 / radius]` ([`RenderNetPose::view_params`]).
//!
//! # Resampling
//! With `a = φ − π/2`, `e = θ`, the forward transform of a voxel position `v` (homogeneous) is
//! `T_new⁻¹ · S(s) · R_z(e) · R_y(a) · T_old · v`, where `T_old` moves the input grid's centre
//! `size/2` to the origin, `T_new⁻¹` moves the origin to the output grid's centre `out/2`, and
//!
//! ```text
//! R_y(a) = [ cos a  0  −sin a ]     R_z(e) = [  cos e  sin e  0 ]
//!          [   0    1     0   ]              [ −sin e  cos e  0 ]
//!          [ sin a  0   cos a ]              [    0      0    1 ]
//! ```
//!
//! Each output voxel is filled by backward warping: its source position is the inverse
//! transform of its index, sampled trilinearly. Positions are voxel indices (so the "centre"
//! `size/2 = 32` sits half a voxel off the true centre 31.5, as in the original: kept for
//! weight compatibility).
//!
//! # Axes
//! The original's tensors are `[B, d1, d2, d3, C]` and its `x`, `y`, `z` index `d3`, `d2`, `d1`
//! (x fastest). Here voxels are `[B, C, D, H, W]` with `D, H, W = d1, d2, d3`, so `x` indexes
//! W, `y` H and `z` D — the same convention as `grid_sample3d`. A binvox grid read with
//! [`vnr_formats::binvox::BinvoxGrid::to_tensor`] (`[X, Y, Z]`) is laid out exactly as the
//! original loads it (`binvox_rw.read_as_3d_array`), so `[X, Y, Z] → [1, 1, X, Y, Z]` is the
//! original's input.
//!
//! # The dropped last slice
//! The original clamps both corner indices of each axis into `[0, size − 1]` but keeps the
//! unclamped weights, so a sample whose position along any axis is outside `[0, size − 1)` reads
//! exactly zero: besides samples in the one-voxel margin outside the grid (which zero padding
//! would blend with the border voxels), this drops the grid's last slice on every axis (a
//! position of exactly 63 reads 0). [`ResampleConfig::drop_last_slice`] (default on, as trained
//! weights expect) reproduces that; off, the resampling is plain trilinear with zero padding.

use candle_core::{bail, DType, Device, Result, Tensor, D};
use vnr_ops::grid_sample::{grid_sample3d, GridPaddingMode, GridSampleMode, GridSampleParams};

/// A RenderNet camera pose: azimuth and elevation in degrees, and the camera's distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderNetPose {
    /// Azimuth in degrees.
    pub azimuth_deg: f64,
    /// Elevation in degrees.
    pub elevation_deg: f64,
    /// Camera distance; the original's training data used 3.3, its demo allows 2.5..4.5.
    pub radius: f64,
}

impl RenderNetPose {
    /// The original demo's view parameters `[φ, θ, s] = [az·π/180, (90 − el)·π/180, 3.3/radius]`.
    pub fn view_params(&self) -> [f64; 3] {
        [
            self.azimuth_deg.to_radians(),
            (90.0 - self.elevation_deg).to_radians(),
            3.3 / self.radius,
        ]
    }
}

/// The view parameters of several poses as an f32 tensor `[B, 3]`.
pub fn view_params_tensor(poses: &[RenderNetPose], device: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = poses
        .iter()
        .flat_map(|p| p.view_params().map(|v| v as f32))
        .collect();
    Tensor::from_vec(flat, (poses.len(), 3), device)
}

/// How [`resample_to_camera`] builds its output grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResampleConfig {
    /// Output grid side `N` (the original: 128 for 64³ inputs).
    pub out_size: usize,
    /// Reproduce the original's clamping, which zeroes samples outside `[0, size − 1)` on any
    /// axis and so drops the last slice (see the [module docs](self)).
    pub drop_last_slice: bool,
}

impl Default for ResampleConfig {
    fn default() -> Self {
        Self {
            out_size: 128,
            drop_last_slice: true,
        }
    }
}

/// The source positions of every output voxel, in input voxel indices: `[B, N, N, N, 3]` with
/// the last axis `(x, y, z)` (x indexing W), output axes `(z, y, x)`.
///
/// `view_params` is `[B, 3]` (`φ, θ, s`); `in_dims` is the input's `[D, H, W]`. Differentiable
/// with respect to `view_params`. An error when `B·N³·3` is above [`crate::MAX_ELEMENTS`].
pub fn source_positions(
    view_params: &Tensor,
    in_dims: [usize; 3],
    out_size: usize,
) -> Result<Tensor> {
    let (b, three) = view_params.dims2()?;
    if three != 3 {
        bail!(
            "rendernet: view parameters must be [B, 3] (φ, θ, s), got {:?}",
            view_params.dims()
        );
    }
    if out_size == 0 || in_dims.contains(&0) {
        bail!("rendernet: empty grid (input {in_dims:?}, output {out_size})");
    }
    let n = out_size;
    crate::capped_elements(
        "rendernet",
        "batch × out_size³ × 3 source positions",
        &[b, n, n, n, 3],
    )?;
    let n_u32 = u32::try_from(n)
        .map_err(|_| candle_core::Error::Msg(format!("rendernet: out_size {n} exceeds u32")))?;
    let dev = view_params.device();
    let dtype = view_params.dtype();
    let param = |i: usize| -> Result<Tensor> { view_params.narrow(1, i, 1)?.reshape((b, 1, 1, 1)) };
    // π/2 rounded to the parameters' dtype, as the original's float32 constant: at the identity
    // pose the azimuth is then exactly 0 and the resampling an exact integer shift.
    let quarter_turn = Tensor::new(std::f64::consts::FRAC_PI_2, dev)?.to_dtype(dtype)?;
    let azimuth = param(0)?.broadcast_sub(&quarter_turn)?;
    let (cos_a, sin_a) = (azimuth.cos()?, azimuth.sin()?);
    let elevation = param(1)?;
    let (cos_e, sin_e) = (elevation.cos()?, elevation.sin()?);
    let scale = param(2)?;

    // Output voxel indices relative to the output centre, divided by the scale: `S⁻¹ T_new⁻¹`.
    let half = n as f64 * 0.5;
    let axis = |shape: (usize, usize, usize)| -> Result<Tensor> {
        let idx = (Tensor::arange(0u32, n_u32, dev)?.to_dtype(dtype)? - half)?;
        idx.reshape(shape)?.broadcast_as((n, n, n))?.unsqueeze(0)
    };
    let px = axis((1, 1, n))?.broadcast_div(&scale)?;
    let py = axis((1, n, 1))?.broadcast_div(&scale)?;
    let pz = axis((n, 1, 1))?.broadcast_div(&scale)?;
    // R_z(e)ᵀ, then R_y(a)ᵀ.
    let qx = (px.broadcast_mul(&cos_e)? - py.broadcast_mul(&sin_e)?)?;
    let qy = (px.broadcast_mul(&sin_e)? + py.broadcast_mul(&cos_e)?)?;
    let rx = (qx.broadcast_mul(&cos_a)? + pz.broadcast_mul(&sin_a)?)?;
    let rz = (pz.broadcast_mul(&cos_a)? - qx.broadcast_mul(&sin_a)?)?;
    // T_old⁻¹: back to input indices around the input centre size/2.
    let [d, h, w] = in_dims;
    let x = (rx + w as f64 * 0.5)?;
    let y = (qy + h as f64 * 0.5)?;
    let z = (rz + d as f64 * 0.5)?;
    Tensor::stack(&[x, y, z], D::Minus1)
}

/// Rotates and scales voxels `[B, C, D, H, W]` into RenderNet's camera space `[B, C, N, N, N]`
/// (`N = cfg.out_size`) for the view parameters `[B, 3]` (see [`RenderNetPose::view_params`]).
///
/// Differentiable with respect to the voxels and the view parameters (RenderNet's inverse
/// rendering optimises the pose through this). An error when the output `B·C·N³` or the
/// source positions `B·N³·3` are above [`crate::MAX_ELEMENTS`].
///
/// ```
/// # use candle_core::{Device, Tensor, DType};
/// use vnr_render::rendernet::{resample_to_camera, view_params_tensor, RenderNetPose, ResampleConfig};
/// let voxels = Tensor::ones((1, 1, 8, 8, 8), DType::F32, &Device::Cpu)?;
/// // The identity pose: φ = π/2, θ = 0, s = 1.
/// let pose = RenderNetPose { azimuth_deg: 90.0, elevation_deg: 90.0, radius: 3.3 };
/// let params = view_params_tensor(&[pose], &Device::Cpu)?;
/// let cfg = ResampleConfig { out_size: 16, ..Default::default() };
/// let out = resample_to_camera(&voxels, &params, &cfg)?;
/// assert_eq!(out.dims(), &[1, 1, 16, 16, 16]);
/// // The original's clamping drops the last slice on each axis: 7³ voxels survive.
/// assert_eq!(out.sum_all()?.to_scalar::<f32>()?, 343.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn resample_to_camera(
    voxels: &Tensor,
    view_params: &Tensor,
    cfg: &ResampleConfig,
) -> Result<Tensor> {
    let (b, c, d, h, w) = voxels.dims5()?;
    if view_params.dim(0)? != b {
        bail!(
            "rendernet: {} view parameter rows for a batch of {b} grids",
            view_params.dim(0)?
        );
    }
    let n = cfg.out_size;
    crate::capped_elements(
        "rendernet",
        "batch × channels × out_size³ output",
        &[b, c, n, n, n],
    )?;
    let dtype = voxels.dtype();
    let src = source_positions(&view_params.to_dtype(dtype)?, [d, h, w], cfg.out_size)?;
    // Voxel indices → grid_sample's [-1, 1] with corner alignment: index i ↦ 2i/(size−1) − 1.
    let extent = |size: usize| {
        if size > 1 {
            2.0 / (size - 1) as f64
        } else {
            0.0
        }
    };
    let factors =
        Tensor::new(&[extent(w), extent(h), extent(d)], voxels.device())?.to_dtype(dtype)?;
    let grid = (src.broadcast_mul(&factors)? - 1.0)?;
    let params = GridSampleParams {
        mode: GridSampleMode::Bilinear,
        padding_mode: GridPaddingMode::Zeros,
        align_corners: true,
    };
    let sampled = grid_sample3d(voxels, &grid, &params)?;
    if !cfg.drop_last_slice {
        return Ok(sampled);
    }
    // Keep a sample only where every coordinate lies in [0, size − 1).
    let limits = Tensor::new(
        &[w as f32 - 1.0, h as f32 - 1.0, d as f32 - 1.0],
        voxels.device(),
    )?
    .to_dtype(dtype)?;
    let src = src.detach();
    let inside = src
        .ge(0.0)?
        .to_dtype(DType::U8)?
        .mul(&src.broadcast_lt(&limits)?)?
        .to_dtype(dtype)?;
    let keep = inside
        .narrow(D::Minus1, 0, 1)?
        .mul(&inside.narrow(D::Minus1, 1, 1)?)?
        .mul(&inside.narrow(D::Minus1, 2, 1)?)?
        .squeeze(D::Minus1)?
        .unsqueeze(1)?;
    sampled.broadcast_mul(&keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: (usize, usize, usize, usize, usize)) -> Result<Tensor> {
        let n = dims.0 * dims.1 * dims.2 * dims.3 * dims.4;
        let values: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        Tensor::from_vec(values, dims, &Device::Cpu)
    }

    /// The original's numpy/TF formula, point by point: clamp both corners, keep the raw weights.
    fn original_sample(v: &[f32], [d, h, w]: [usize; 3], [x, y, z]: [f32; 3]) -> f32 {
        let corners = |c: f32, size: usize| {
            let max = size as i64 - 1;
            let c0 = c.floor() as i64;
            let (i0, i1) = (c0.clamp(0, max), (c0 + 1).clamp(0, max));
            (i0 as usize, i1 as usize, i1 as f32 - c, c - i0 as f32)
        };
        let (x0, x1, wx0, wx1) = corners(x, w);
        let (y0, y1, wy0, wy1) = corners(y, h);
        let (z0, z1, wz0, wz1) = corners(z, d);
        let at = |zi: usize, yi: usize, xi: usize| v[(zi * h + yi) * w + xi];
        let mut out = 0.0;
        for (zi, wz) in [(z0, wz0), (z1, wz1)] {
            for (yi, wy) in [(y0, wy0), (y1, wy1)] {
                for (xi, wx) in [(x0, wx0), (x1, wx1)] {
                    out += wx * wy * wz * at(zi, yi, xi);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_original_formula_at_a_general_pose() -> Result<()> {
        let (d, h, w) = (6, 7, 8);
        let voxels = ramp((1, 1, d, h, w))?;
        let params = Tensor::new(&[[0.7f32, 0.4, 1.3]], &Device::Cpu)?;
        let cfg = ResampleConfig {
            out_size: 10,
            drop_last_slice: true,
        };
        let ours = resample_to_camera(&voxels, &params, &cfg)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let src = source_positions(&params, [d, h, w], 10)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let v = voxels.flatten_all()?.to_vec1::<f32>()?;
        for (i, ours) in ours.iter().enumerate() {
            let p = [src[3 * i], src[3 * i + 1], src[3 * i + 2]];
            let want = original_sample(&v, [d, h, w], p);
            assert!(
                (ours - want).abs() < 1e-5,
                "voxel {i} at {p:?}: {ours} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn identity_pose_is_a_shift_to_the_centre() -> Result<()> {
        let voxels = ramp((1, 2, 4, 4, 4))?;
        let params = Tensor::new(&[[std::f32::consts::FRAC_PI_2, 0.0, 1.0]], &Device::Cpu)?;
        let cfg = ResampleConfig {
            out_size: 8,
            drop_last_slice: false,
        };
        let out = resample_to_camera(&voxels, &params, &cfg)?;
        // Output index i reads input index i − (8 − 4)/2 = i − 2.
        let got = out.narrow(2, 2, 4)?.narrow(3, 2, 4)?.narrow(4, 2, 4)?;
        let diff = (got - &voxels)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }

    #[test]
    fn azimuth_rotates_about_the_vertical_axis() -> Result<()> {
        // A quarter turn of azimuth maps the x axis onto the z axis and leaves y alone.
        let params = Tensor::new(&[[std::f32::consts::PI, 0.0, 1.0]], &Device::Cpu)?;
        let src = source_positions(&params, [4, 4, 4], 4)?;
        // Output voxel (z, y, x) = (2, 1, 3): relative (x, y, z) = (1, −1, 0).
        let p = src.get(0)?.get(2)?.get(1)?.get(3)?.to_vec1::<f32>()?;
        assert!(
            (p[0] - 2.0).abs() < 1e-6 && (p[1] - 1.0).abs() < 1e-6 && (p[2] - 1.0).abs() < 1e-6,
            "{p:?}"
        );
        Ok(())
    }

    #[test]
    fn gradients_reach_the_pose() -> Result<()> {
        let voxels = ramp((1, 1, 5, 5, 5))?;
        let params = candle_core::Var::new(&[[1.1f32, 0.3, 1.2]], &Device::Cpu)?;
        let cfg = ResampleConfig {
            out_size: 7,
            drop_last_slice: true,
        };
        let out = resample_to_camera(&voxels, params.as_tensor(), &cfg)?;
        let grads = out.sqr()?.sum_all()?.backward()?;
        let g = grads.get(params.as_tensor()).expect("pose gradient");
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        assert!(
            g.iter().all(|v| v.is_finite()) && g.iter().any(|v| v.abs() > 1e-4),
            "{g:?}"
        );
        Ok(())
    }

    #[test]
    fn bad_shapes_are_refused() -> Result<()> {
        let voxels = ramp((2, 1, 4, 4, 4))?;
        let one = Tensor::new(&[[0f32, 0., 1.]], &Device::Cpu)?;
        assert!(resample_to_camera(&voxels, &one, &ResampleConfig::default()).is_err());
        let two_cols = Tensor::new(&[[0f32, 0.], [0., 0.]], &Device::Cpu)?;
        assert!(resample_to_camera(&voxels, &two_cols, &ResampleConfig::default()).is_err());
        Ok(())
    }
}

//! Point clouds splatted into volumes: PyTorch3D's `add_pointclouds_to_volumes` and
//! `add_points_features_to_volume_densities_features` (`pytorch3d/ops/points_to_volumes.py`,
//! the arithmetic of `csrc/points_to_volumes/points_to_volumes_cpu.cpp`).
//!
//! Each point casts votes into the volume: its 8 neighbouring voxels with trilinear weights, or
//! its nearest voxel with weight 1. Densities accumulate the votes, features accumulate
//! `vote · feature`; with `rescale_features` the features are then divided by the accumulated
//! density (clamped below at `min_weight` for trilinear, at 1 for nearest).
//!
//! A point's index-space position along an axis of `n` voxels is `(p + 1) / 2 · (n − 1)` with
//! `align_corners` and `(p + 1) / 2 · n − 1/2` without.
//!
//! **Deliberate fix:** the lower corner of the trilinear neighbourhood is `floor(position)`.
//! PyTorch3D's C++ uses `modf`, which truncates towards zero, so a point between `−1` and `0` in
//! index space (just outside the first voxel) gets weights `1 − r > 1` and `r < 0` on voxels 0
//! and 1; with `floor` it gives voxel 0 its proper weight `1 − (position + 1) ∈ (0, 1)` and
//! never a negative one. Inside the grid both agree. Nearest mode rounds half away from zero
//! (`lround`), as PyTorch3D's C++.
//!
//! Implemented with candle tensor ops (`index_add`, whose backward is exact), so it runs on any
//! device and is differentiable in the point features, the initial densities and features and,
//! in trilinear mode, the point positions.

use crate::volumes::{VolumeError, Volumes};
use candle_core::{DType, Tensor};

type Result<T> = std::result::Result<T, VolumeError>;

/// How a point casts its votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplatMode {
    /// Into its 8 neighbouring voxels with trilinear weights (differentiable in positions).
    #[default]
    Trilinear,
    /// All of it into the nearest voxel.
    Nearest,
}

/// Options of [`add_points_features_to_volume_densities_features`]; the default is
/// PyTorch3D's (trilinear, `min_weight = 1e-4`, rescaled features, aligned corners).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplatConfig {
    /// Trilinear or nearest votes.
    pub mode: SplatMode,
    /// Lower clamp of the accumulated density that features are divided by (trilinear only).
    pub min_weight: f64,
    /// Divide the accumulated features by the accumulated density (an average), or keep sums.
    pub rescale_features: bool,
    /// As `grid_sample`'s: whether local `±1` are the centres of the corner voxels.
    pub align_corners: bool,
}

impl Default for SplatConfig {
    fn default() -> Self {
        Self {
            mode: SplatMode::Trilinear,
            min_weight: 1e-4,
            rescale_features: true,
            align_corners: true,
        }
    }
}

/// `x` rounded to the nearest integer, halves away from zero (C's `lround`), without the
/// `x + 0.5` rounding error.
fn round_half_away(x: f64) -> f64 {
    let lo = x.floor();
    let frac = x - lo;
    if frac > 0.5 || (frac == 0.5 && x >= 0.0) {
        lo + 1.0
    } else {
        lo
    }
}

/// The votes of all points: for each of `corners` neighbour slots (8 or 1) and each point, the
/// flat voxel index into `[B · D · H · W]` (0 where the vote falls outside or the point is
/// masked) and whether the vote counts; plus, for trilinear, the lower corner per point.
struct Votes {
    corners: usize,
    index: Vec<u32>,
    valid: Vec<u8>,
    lower: Vec<f32>,
}

/// Computes the vote targets of points at index-space positions `positions` `[B, N, 3]`
/// (`(x, y, z)`, row-major) into grids of `[D, H, W]` voxels.
fn votes(
    positions: &[f64],
    mask: &[bool],
    batch: usize,
    grid: [usize; 3],
    cfg: &SplatConfig,
) -> Result<Votes> {
    let [d, h, w] = grid;
    let sizes = [w, h, d];
    let voxels = d * h * w;
    if batch
        .checked_mul(voxels)
        .is_none_or(|total| total > u32::MAX as usize)
    {
        return Err(VolumeError::SplatShape(format!(
            "{batch} volumes of {voxels} voxels exceed the 2^32 voxel index range"
        )));
    }
    let n_points = mask.len();
    let per_batch = n_points / batch.max(1);
    let corners = match cfg.mode {
        SplatMode::Trilinear => 8,
        SplatMode::Nearest => 1,
    };
    let mut index = vec![0u32; corners * n_points];
    let mut valid = vec![0u8; corners * n_points];
    let mut lower = vec![0f32; if corners == 8 { n_points * 3 } else { 0 }];
    for (i, (pos, &used)) in positions.chunks_exact(3).zip(mask).enumerate() {
        let b = i / per_batch.max(1);
        let mut base = [0f64; 3];
        for a in 0..3 {
            base[a] = match cfg.mode {
                SplatMode::Trilinear => pos[a].floor(),
                SplatMode::Nearest => round_half_away(pos[a]),
            };
            if corners == 8 {
                lower[i * 3 + a] = base[a] as f32;
            }
        }
        for c in 0..corners {
            let mut voxel = [0usize; 3];
            let mut inside = used;
            for a in 0..3 {
                let v = base[a] + ((c >> a) & 1) as f64;
                // NaN positions fail the comparison: they vote nowhere.
                inside &= v >= 0.0 && v < sizes[a] as f64;
                voxel[a] = if inside { v as usize } else { 0 };
            }
            if inside {
                let flat = b * voxels + (voxel[2] * h + voxel[1]) * w + voxel[0];
                // In range: checked against u32::MAX above.
                index[c * n_points + i] = flat as u32;
                valid[c * n_points + i] = 1;
            }
        }
    }
    Ok(Votes {
        corners,
        index,
        valid,
        lower,
    })
}

/// Trilinear vote weights `[8, B·N]` of index-space positions `pos` `[B·N, 3]` whose lower
/// corners are `lower`: corner `c` takes `r` on axes whose bit is set in `c`, `1 − r` elsewhere.
fn trilinear_weights(pos: &Tensor, lower: &Tensor) -> Result<Tensor> {
    let r = (pos - lower)?;
    let one_minus = r.affine(-1.0, 1.0)?;
    let axis = |t: &Tensor, a: usize| t.narrow(1, a, 1);
    let mut rows = Vec::with_capacity(8);
    for c in 0..8 {
        let pick = |a: usize| {
            if (c >> a) & 1 == 1 {
                axis(&r, a)
            } else {
                axis(&one_minus, a)
            }
        };
        rows.push((pick(0)? * pick(1)?)?.mul(&pick(2)?)?.squeeze(1)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Adds points to volume densities and features (PyTorch3D's
/// `add_points_features_to_volume_densities_features`).
///
/// - `points_3d`: local coordinates `[B, N, 3]` (`[-1, 1]` spans the volume, see the module docs).
/// - `points_features`: `[B, N, F]`.
/// - `volume_densities`: initial densities `[B, 1, D, H, W]` the votes are added to.
/// - `volume_features`: initial features `[B, F, D, H, W]`, zeros when `None`.
/// - `mask`: `[B, N]`, points where it is 0 are skipped; all points count when `None`.
///
/// Returns `(features [B, F, D, H, W], densities [B, 1, D, H, W])`, PyTorch3D's order.
pub fn add_points_features_to_volume_densities_features(
    points_3d: &Tensor,
    points_features: &Tensor,
    volume_densities: &Tensor,
    volume_features: Option<&Tensor>,
    mask: Option<&Tensor>,
    cfg: &SplatConfig,
) -> Result<(Tensor, Tensor)> {
    let shape_error = |what: &str| {
        VolumeError::SplatShape(format!(
            "{what}: points {:?}, point features {:?}, densities {:?}, features {:?}, mask {:?}",
            points_3d.dims(),
            points_features.dims(),
            volume_densities.dims(),
            volume_features.map(|f| f.dims().to_vec()),
            mask.map(|m| m.dims().to_vec()),
        ))
    };
    let (&[b, n, 3], &[bf, nf, f]) = (points_3d.dims(), points_features.dims()) else {
        return Err(shape_error(
            "points must be [B, N, 3] and features [B, N, F]",
        ));
    };
    let &[bd, 1, d, h, w] = volume_densities.dims() else {
        return Err(shape_error("densities must be [B, 1, D, H, W]"));
    };
    if (bf, nf, bd) != (b, n, b) {
        return Err(shape_error("batch sizes and point counts must agree"));
    }
    if volume_features.is_some_and(|vf| vf.dims() != [b, f, d, h, w]) {
        return Err(shape_error("volume features must be [B, F, D, H, W]"));
    }
    if mask.is_some_and(|m| m.dims() != [b, n]) {
        return Err(shape_error("the mask must be [B, N]"));
    }
    let (dtype, device) = (volume_densities.dtype(), volume_densities.device());
    let used: Vec<bool> = match mask {
        Some(m) => m
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|v| v != 0.0)
            .collect(),
        None => vec![true; b * n],
    };
    let pos = local_to_index_positions(&points_3d.to_dtype(dtype)?, [d, h, w], cfg.align_corners)?
        .reshape((b * n, 3))?;
    // Corners are chosen from the same rounded positions the weights are computed from.
    let pos_values = pos.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let votes = votes(&pos_values, &used, b, [d, h, w], cfg)?;
    let count = votes.corners * b * n;
    let valid = Tensor::from_vec(votes.valid, (count, 1), device)?;
    let weights = match cfg.mode {
        SplatMode::Trilinear => {
            let lower = Tensor::from_vec(votes.lower, (b * n, 3), device)?.to_dtype(dtype)?;
            trilinear_weights(&pos, &lower)?.reshape((count, 1))?
        }
        SplatMode::Nearest => Tensor::ones((count, 1), dtype, device)?,
    };
    // Every vote adds [w, w · features] to its voxel's [density, features] row.
    let feats = points_features
        .to_dtype(dtype)?
        .reshape((1, b * n, f))?
        .broadcast_as((votes.corners, b * n, f))?
        .reshape((count, f))?;
    let source = Tensor::cat(&[&weights, &feats.broadcast_mul(&weights)?], 1)?;
    // Selected rather than multiplied by 0, so NaN points and masked NaN features add nothing.
    let source = valid
        .broadcast_as(source.shape())?
        .where_cond(&source, &source.zeros_like()?)?;
    let index = Tensor::from_vec(votes.index, count, device)?;
    let voxels = d * h * w;
    let accumulated = Tensor::zeros((b * voxels, 1 + f), dtype, device)?
        .index_add(&index, &source, 0)?
        .reshape((b, voxels, 1 + f))?
        .transpose(1, 2)?
        .reshape((b, 1 + f, d, h, w))?;
    let densities = (volume_densities + accumulated.narrow(1, 0, 1)?)?;
    let mut features = accumulated.narrow(1, 1, f)?;
    if let Some(vf) = volume_features {
        features = (features + vf.to_dtype(dtype)?)?;
    }
    if cfg.rescale_features {
        let floor = match cfg.mode {
            SplatMode::Trilinear => cfg.min_weight,
            SplatMode::Nearest => 1.0,
        };
        // torch's clamp(min): the gradient passes where density >= floor (candle's `maximum`
        // would halve it at equality, which nearest mode hits for every single-point voxel).
        let floor_t = densities.ones_like()?.affine(floor, 0.0)?;
        let divisor = densities.ge(floor)?.where_cond(&densities, &floor_t)?;
        features = features.broadcast_div(&divisor)?;
    }
    Ok((features, densities))
}

/// Index-space positions `[B, N, 3]` of local points `[B, N, 3]` (see the module docs), as
/// tensor ops so gradients reach the points.
fn local_to_index_positions(
    points: &Tensor,
    grid: [usize; 3],
    align_corners: bool,
) -> Result<Tensor> {
    let [d, h, w] = grid;
    let sizes = [w as f64, h as f64, d as f64];
    let (scale, offset): (Vec<f64>, f64) = if align_corners {
        (sizes.iter().map(|s| 0.5 * (s - 1.0)).collect(), 0.0)
    } else {
        (sizes.iter().map(|s| 0.5 * s).collect(), 0.5)
    };
    let scale = Tensor::from_vec(scale, (1, 1, 3), points.device())?.to_dtype(points.dtype())?;
    Ok(((points + 1.0)?.broadcast_mul(&scale)? - offset)?)
}

/// Adds point clouds (world coordinates) to `initial` volumes (PyTorch3D's
/// `add_pointclouds_to_volumes`): points `[B, N, 3]` are mapped to each volume's local
/// coordinates, splatted with the volumes' `align_corners`, and the result returned as new
/// volumes on the same grid. `initial` must have one density channel; features missing from
/// `initial` start at 0. `mask` `[B, N]`: points where it is 0 are skipped (padded clouds).
pub fn add_pointclouds_to_volumes(
    points: &Tensor,
    features: &Tensor,
    mask: Option<&Tensor>,
    initial: &Volumes,
    mode: SplatMode,
    min_weight: f64,
    rescale_features: bool,
) -> Result<Volumes> {
    let local = initial.world_to_local_coords(points)?;
    let cfg = SplatConfig {
        mode,
        min_weight,
        rescale_features,
        align_corners: initial.align_corners(),
    };
    let initial_features = initial.features()?;
    let (features, densities) = add_points_features_to_volume_densities_features(
        &local,
        features,
        &initial.densities()?,
        initial_features.as_ref(),
        mask,
        &cfg,
    )?;
    initial.update_padded(&densities, Some(&features))
}

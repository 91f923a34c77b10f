//! svox2's total-variation regulariser on sparse grids (`SparseGrid.inplace_tv_grad`,
//! `inplace_tv_color_grad`; CUDA `tv_grad_sparse_kernel` in `svox2/csrc/loss_kernel.cu`).
//!
//! For each cell `(x, y, z)` of a chosen set and each data channel, with `v` the voxel's value
//! and `v_a` the value of its `+1` neighbour along axis `a`:
//!
//! `tv = sqrt(ε + Σ_a (s_a · (v_a − v))²)`, `s_a = reso_a / 256`, `ε =` [`TV_EPSILON`].
//!
//! Empty voxels (negative links) count as value 0 and receive no gradient, as in svox2 (its
//! default `ignore_edge = false`). A neighbour past the last voxel of an axis contributes no
//! difference: svox2 reads data row 0 there (an artefact of its link lookup), which would tie
//! the border of the grid to an arbitrary voxel.
//!
//! svox2 writes the gradient `s_a·d_a / sqrt(1e-9 + Σ d²)` directly instead of differentiating
//! its value; for a cubic grid that equals the exact derivative of the `tv` above (the `s`
//! factors cancel), which is what is computed here, so value and gradient agree.

use std::ops::Range;

use candle_core::{Device, Tensor};

use super::grad::SparseRows;
use super::{PlenoxelError, PlenoxelGrid};

/// `ε` under the square root: keeps the gradient finite where a voxel equals its neighbours.
pub const TV_EPSILON: f64 = 1e-9;

/// Which data a total-variation term is computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TvTarget {
    /// Density, `[N, 1]`.
    Density,
    /// Every SH coefficient of every colour channel, `[N, 3K]`, each channel on its own.
    Sh,
}

impl PlenoxelGrid {
    /// Total variation of the density or SH data over the cells with flat (C-order) voxel
    /// indices `cells` (clipped to `X·Y·Z`), summed over cells and channels, and its gradient
    /// with the shape of the data (`[N, 1]` or `[N, 3K]`, f32). See the [module docs](self).
    pub fn total_variation(
        &self,
        target: TvTarget,
        cells: Range<usize>,
    ) -> Result<(f64, Tensor), PlenoxelError> {
        let data = match target {
            TvTarget::Density => &self.density,
            TvTarget::Sh => &self.sh,
        };
        let width = data.dims()[1];
        let values: Vec<f32> = data
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let mut grad = SparseRows::new(self.capacity(), width);
        let value = total_variation_into(
            self.links(),
            self.dims(),
            &values,
            width,
            cells,
            1.0,
            &mut grad,
        );
        let grad = Tensor::from_vec(grad.into_dense(), (self.capacity(), width), &Device::Cpu)?;
        Ok((value, grad))
    }
}

/// `scale ·` TV of `data [N, width]` over `cells`, adding `scale · ∂TV/∂data` to `grad
/// [N, width]` (only the rows of the cells and their `+1` neighbours). `links` has
/// `dims[0]·dims[1]·dims[2]` entries, each `< N`.
pub(crate) fn total_variation_into(
    links: &[i32],
    dims: [usize; 3],
    data: &[f32],
    width: usize,
    cells: Range<usize>,
    scale: f64,
    grad: &mut SparseRows<f32>,
) -> f64 {
    let [nx, ny, nz] = dims;
    let strides = [ny * nz, nz, 1];
    let scaling = dims.map(|d| d as f64 / 256.0);
    let end = cells.end.min(links.len());
    let read = |link: i32, ch: usize| -> f64 {
        if link >= 0 {
            f64::from(data[link as usize * width + ch])
        } else {
            0.0
        }
    };
    let mut total = 0.0;
    for cell in cells.start..end {
        let voxel = [cell / strides[0], (cell / nz) % ny, cell % nz];
        let own = links[cell];
        // Links of the +x, +y, +z neighbours, `None` past the last voxel.
        let neighbours: [Option<i32>; 3] = std::array::from_fn(|a| {
            (voxel[a] + 1 < [nx, ny, nz][a]).then(|| links[cell + strides[a]])
        });
        for ch in 0..width {
            let v = read(own, ch);
            let diffs: [f64; 3] = std::array::from_fn(|a| {
                neighbours[a].map_or(0.0, |l| scaling[a] * (read(l, ch) - v))
            });
            let norm = (TV_EPSILON + diffs.iter().map(|d| d * d).sum::<f64>()).sqrt();
            total += norm;
            let mut own_grad = 0.0;
            for a in 0..3 {
                let g = scale * scaling[a] * diffs[a] / norm;
                own_grad -= g;
                if let Some(l) = neighbours[a].filter(|&l| l >= 0) {
                    grad.row_mut(l as usize)[ch] += g as f32;
                }
            }
            if own >= 0 {
                grad.row_mut(own as usize)[ch] += own_grad as f32;
            }
        }
    }
    scale * total
}

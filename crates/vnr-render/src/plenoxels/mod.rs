//! Plenoxel grids: svox2's `SparseGrid`, its `ckpt.npz` checkpoints, spherical harmonics and
//! differentiable sparse trilinear volume rendering.
//!
//! A grid of resolution `[X, Y, Z]` stores `links [X, Y, Z]` (index of each voxel's row in the
//! data arrays, negative = empty), `density [N, 1]` and SH coefficients `sh [N, 3·K]`
//! (`K = (degree + 1)²`, channel-major: `sh[n, ch·K + k]`). World points map to grid
//! coordinates as in svox2's `world2grid` (see [`PlenoxelGrid::world_to_grid`]): voxel centres
//! at integers, the box `center ± radius` spanning `[-0.5, reso − 0.5]`.
//!
//! Rendering follows svox2's `volume_render_cuvol` (CUDA `trace_ray_cuvol`): rays clipped to
//! the box, samples every `step_size` voxels, trilinear density kept only above `sigma_thresh`
//! (so non-positive densities are dropped: svox2's ReLU), `α = 1 − exp(−σ·δ)` with `δ` the
//! world length of one step, colour `max(Σ_k SH_k(dir)·c_k + 0.5, 0)`, early termination when
//! the transmittance falls below `stop_thresh`, and `T · background_brightness` added last.
//!
//! **Empty corners.** A trilinear lookup whose corner has a negative link uses 0 for that
//! corner's density and SH, exactly as svox2's `trilerp_cuvol_one` does. An earlier JAX port
//! stored empty voxels as a −999 sentinel that leaked into the interpolation and darkened
//! samples near empty space (black dots); here empty corners are skipped, never read.
//!
//! **Optimisation** ([`optimize`]): svox2's `opt.py` loop (RMSProp on density and SH, sparse
//! total variation ([`tv`]), coarse-to-fine [`PlenoxelGrid::resample`] with pruning) fits a
//! grid to a [`crate::multiview::MultiViewDataset`]; see [`fit`] and [`PlenoxelOptimizer`].
//!
//! Differences from svox2, all deliberate: directions need not be unit (they are normalised,
//! as svox2's own `gen_rays` does before calling its kernel); a ray parallel to a face and
//! outside the box misses it (svox2 clamps it onto the border voxels); the ray length is not
//! capped at 2000 voxels; sample depths are `tmin + k·step` rather than a running sum; all
//! arithmetic is f64. Unsupported: the MSI background model, learned (3D texture) and MLP
//! bases, `last_sample_opaque`, NDC and spheric clipping, CUDA.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use vnr_render::plenoxels::{PlenoxelGrid, RenderOptions};
//!
//! let grid = PlenoxelGrid::read("ckpt.npz")?;
//! let origins = Tensor::new(&[[0f32, 0.0, -3.0]], &Device::Cpu)?;
//! let directions = Tensor::new(&[[0f32, 0.1, 1.0]], &Device::Cpu)?;
//! let rgb = grid.render_rays(&origins, &directions, &RenderOptions::default())?; // [1, 3]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
mod grad;
mod march;
pub mod optimize;
mod render;
mod resample;
pub mod sh;
pub mod tv;

use std::sync::Arc;

use candle_core::{DType, Tensor};

use march::{Geometry, SparseLinks};
pub use optimize::{fit, LrSchedule, OptimizeConfig, PlenoxelOptimizer, StepStats};
pub use render::{RenderOptions, BACKWARD_MEMORY_BUDGET};
pub use resample::{PruneOptions, MAX_RESAMPLE_VOXELS};
pub use tv::TvTarget;

/// Errors from building, reading or writing a [`PlenoxelGrid`].
#[derive(Debug, thiserror::Error)]
pub enum PlenoxelError {
    /// The npz container or one of its arrays could not be read or written.
    #[error(transparent)]
    Npz(#[from] vnr_formats::npz::NpzError),
    /// A required array is absent.
    #[error("{path}: svox2 checkpoint has no '{key}' array (arrays: {available:?})")]
    MissingKey {
        path: String,
        key: &'static str,
        available: Vec<String>,
    },
    /// An array has the wrong shape.
    #[error("plenoxel grid: '{key}' has shape {shape:?}, expected {expected}")]
    BadShape {
        key: &'static str,
        shape: Vec<usize>,
        expected: String,
    },
    /// An array has the wrong element type.
    #[error("plenoxel grid: '{key}' has dtype {dtype}, expected {expected}")]
    BadDtype {
        key: &'static str,
        dtype: String,
        expected: &'static str,
    },
    /// A link points past the data arrays.
    #[error(
        "plenoxel grid: link {link} at voxel {voxel:?} is out of range (data has {capacity} rows)"
    )]
    LinkOutOfRange {
        voxel: [usize; 3],
        link: i64,
        capacity: usize,
    },
    /// A basis other than spherical harmonics.
    #[error("plenoxel grid: basis type {code} ({name}) is not supported, only 1 (SH)")]
    UnsupportedBasis { code: i64, name: &'static str },
    /// The checkpoint carries svox2's multi-sphere-image background model.
    #[error(
        "{path}: svox2 background model (arrays 'background_links'/'background_data') is not \
         supported; refusing to load a grid that would render without it"
    )]
    BackgroundModel { path: String },
    /// `radius` or `center` is not finite, or a radius is not positive.
    #[error("plenoxel grid: {what} must be finite{}, got {value:?}", if *.what == "radius" { " and > 0" } else { "" })]
    BadBox { what: &'static str, value: [f32; 3] },
    /// Density or SH data are not on the CPU.
    #[error("plenoxel grid: '{key}' is on {device}, only CPU tensors are supported")]
    NotOnCpu { key: &'static str, device: String },
    /// candle failed while building or converting a tensor.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Optimisation settings are out of range.
    #[error("plenoxel optimisation: {0}")]
    BadConfig(String),
    /// The training or evaluation dataset failed.
    #[error(transparent)]
    Dataset(#[from] crate::multiview::MultiViewError),
}

/// An svox2 sparse Plenoxel grid with SH colour (see the [module docs](self)).
///
/// `density` and `sh` are plain tensors, so they can be swapped for `Var`s
/// ([`PlenoxelGrid::with_data`]) to optimise them; renders are differentiable in both.
#[derive(Debug, Clone)]
pub struct PlenoxelGrid {
    sparse: Arc<SparseLinks>,
    geometry: Geometry,
    radius: [f32; 3],
    center: [f32; 3],
    density: Tensor,
    sh: Tensor,
    basis_dim: usize,
}

impl PlenoxelGrid {
    /// A grid from its parts, all checked: `dims` each ≥ 2, `links.len() = X·Y·Z` with every
    /// link `< N` (negative = empty; svox2's `accelerate()` writes −1, −2, … and they all mean
    /// empty), `density [N, 1]` and `sh [N, 3K]` float CPU tensors with `K` in 1, 4, 9, 16, 25,
    /// `radius > 0`. The SH tensor keeps its dtype (f16 halves memory; sums run in f64).
    pub fn new(
        dims: [usize; 3],
        links: Vec<i32>,
        density: Tensor,
        sh: Tensor,
        radius: [f32; 3],
        center: [f32; 3],
    ) -> Result<Self, PlenoxelError> {
        let basis_dim = check_data(&density, &sh)?;
        let capacity = density.dims()[0];
        let voxels = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if dims.iter().any(|&d| d < 2) || voxels != Some(links.len()) {
            return Err(PlenoxelError::BadShape {
                key: "links",
                shape: dims.to_vec(),
                expected: format!(
                    "[X, Y, Z] with each side >= 2 and {} links in total",
                    links.len()
                ),
            });
        }
        if let Some((index, &link)) = links
            .iter()
            .enumerate()
            .find(|(_, &l)| l >= 0 && l as usize >= capacity)
        {
            let [_, ny, nz] = dims;
            return Err(PlenoxelError::LinkOutOfRange {
                voxel: [index / (ny * nz), (index / nz) % ny, index % nz],
                link: i64::from(link),
                capacity,
            });
        }
        check_box("radius", radius, true)?;
        check_box("center", center, false)?;
        Ok(Self {
            sparse: Arc::new(SparseLinks::new(dims, links)),
            geometry: Geometry::new(dims, radius, center),
            radius,
            center,
            density,
            sh,
            basis_dim,
        })
    }

    /// The same grid structure with other data (e.g. `Var`s being optimised, or the SH
    /// converted to f32): `density [N, 1]`, `sh [N, 3K']` with the same `N`.
    pub fn with_data(&self, density: Tensor, sh: Tensor) -> Result<Self, PlenoxelError> {
        let basis_dim = check_data(&density, &sh)?;
        if density.dims()[0] != self.capacity() {
            return Err(PlenoxelError::BadShape {
                key: "density_data",
                shape: density.dims().to_vec(),
                expected: format!("[{}, 1] (the grid's capacity)", self.capacity()),
            });
        }
        Ok(Self {
            density,
            sh,
            basis_dim,
            ..self.clone()
        })
    }

    /// Resolution `[X, Y, Z]`.
    pub fn dims(&self) -> [usize; 3] {
        self.sparse.dims
    }

    /// Links `[X, Y, Z]` in C order (negative = empty), e.g. to find TV neighbours.
    pub fn links(&self) -> &[i32] {
        &self.sparse.links
    }

    /// Links as an i32 tensor `[X, Y, Z]`.
    pub fn links_tensor(&self) -> candle_core::Result<Tensor> {
        Tensor::from_slice(
            self.links(),
            self.dims().to_vec(),
            &candle_core::Device::Cpu,
        )
    }

    /// Number of data rows `N`.
    pub fn capacity(&self) -> usize {
        self.density.dims()[0]
    }

    /// Densities `[N, 1]` (raw, before svox2's ReLU).
    pub fn density(&self) -> &Tensor {
        &self.density
    }

    /// SH coefficients `[N, 3K]`, channel-major.
    pub fn sh(&self) -> &Tensor {
        &self.sh
    }

    /// SH bases per channel, `K`.
    pub fn basis_dim(&self) -> usize {
        self.basis_dim
    }

    /// SH degree (`K = (degree + 1)²`).
    pub fn sh_degree(&self) -> usize {
        sh::degree_of(self.basis_dim).unwrap_or(0)
    }

    /// Half side lengths of the box.
    pub fn radius(&self) -> [f32; 3] {
        self.radius
    }

    /// Centre of the box.
    pub fn center(&self) -> [f32; 3] {
        self.center
    }

    /// svox2's `world2grid`: `p · 0.5 / radius · reso + 0.5 · (1 − center / radius) · reso − 0.5`.
    pub fn world_to_grid(&self, p: [f64; 3]) -> [f64; 3] {
        self.geometry.world_to_grid(p)
    }
}

/// Checks `density [N, 1]` and `sh [N, 3K]` (float, CPU) and returns `K`.
fn check_data(density: &Tensor, sh: &Tensor) -> Result<usize, PlenoxelError> {
    for (key, t) in [("density_data", density), ("sh_data", sh)] {
        if !matches!(
            t.dtype(),
            DType::F16 | DType::BF16 | DType::F32 | DType::F64
        ) {
            return Err(PlenoxelError::BadDtype {
                key,
                dtype: format!("{:?}", t.dtype()),
                expected: "a float type (f16, bf16, f32, f64)",
            });
        }
        if !t.device().is_cpu() {
            return Err(PlenoxelError::NotOnCpu {
                key,
                device: format!("{:?}", t.device().location()),
            });
        }
    }
    let n = match density.dims() {
        &[n, 1] => n,
        other => {
            return Err(PlenoxelError::BadShape {
                key: "density_data",
                shape: other.to_vec(),
                expected: "[N, 1]".into(),
            })
        }
    };
    match sh.dims() {
        &[rows, width] if rows == n && width % 3 == 0 => sh::degree_of(width / 3)
            .map(|_| width / 3)
            .ok_or_else(|| PlenoxelError::BadShape {
                key: "sh_data",
                shape: sh.dims().to_vec(),
                expected: format!("[{n}, 3K] with K in 1, 4, 9, 16, 25"),
            }),
        other => Err(PlenoxelError::BadShape {
            key: "sh_data",
            shape: other.to_vec(),
            expected: format!("[{n}, 3K] with K in 1, 4, 9, 16, 25"),
        }),
    }
}

fn check_box(what: &'static str, value: [f32; 3], positive: bool) -> Result<(), PlenoxelError> {
    if value
        .iter()
        .all(|v| v.is_finite() && (!positive || *v > 0.0))
    {
        Ok(())
    } else {
        Err(PlenoxelError::BadBox { what, value })
    }
}

//! Building grids for optimisation and svox2's coarse-to-fine `SparseGrid.resample`: trilinear
//! resampling of density and SH onto another resolution, keeping only the voxels whose
//! resampled density is above a threshold (dilated), so storage follows occupied space.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::march::Corners;
use super::sh::{num_bases, MAX_SH_DEGREE, SH_C0};
use super::{check_box, PlenoxelError, PlenoxelGrid};

/// Which voxels [`PlenoxelGrid::resample`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruneOptions {
    /// Voxels whose resampled density is `≤` this are dropped (svox2's `density_thresh`,
    /// used by its `thresh_type = "sigma"`). `f32::NEG_INFINITY` keeps every voxel.
    pub density_threshold: f32,
    /// Times the kept set grows by its 26 neighbours afterwards (svox2's `dilate = 2`), so
    /// surfaces keep a margin of free voxels to grow into.
    pub dilate: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            density_threshold: 5.0,
            dilate: 2,
        }
    }
}

/// Largest grid [`PlenoxelGrid::dense`] and [`PlenoxelGrid::resample`] build, in voxels.
pub const MAX_RESAMPLE_VOXELS: usize = 1 << 30;

fn voxel_count(dims: [usize; 3]) -> Result<usize, PlenoxelError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_RESAMPLE_VOXELS && dims.iter().all(|&d| d >= 2))
        .ok_or_else(|| PlenoxelError::BadShape {
            key: "links",
            shape: dims.to_vec(),
            expected: format!("each side >= 2 and at most {MAX_RESAMPLE_VOXELS} voxels"),
        })
}

/// Checks that `rows` rows of SH data `width` wide (plus the density column) fit in memory:
/// a grid within [`MAX_RESAMPLE_VOXELS`] at a high SH degree would still need hundreds of GiB.
fn check_data_size(op: &str, rows: usize, width: usize) -> Result<(), PlenoxelError> {
    crate::capped_elements(op, "voxels × (3·SH bases + 1) floats", &[rows, width + 1])?;
    Ok(())
}

impl PlenoxelGrid {
    /// A fully occupied grid, as svox2's optimisation starts from: every voxel linked (C
    /// order), density `init_density`, SH zero (grey 0.5 after the `+ 0.5` shift), f32 data.
    ///
    /// Errors: a side below 2 or more than [`MAX_RESAMPLE_VOXELS`] voxels, `sh_degree` above
    /// [`MAX_SH_DEGREE`], or data (`voxels · (3K + 1)` floats) above [`crate::MAX_ELEMENTS`].
    pub fn dense(
        dims: [usize; 3],
        radius: [f32; 3],
        center: [f32; 3],
        sh_degree: usize,
        init_density: f32,
    ) -> Result<Self, PlenoxelError> {
        let n = voxel_count(dims)?;
        if sh_degree > MAX_SH_DEGREE {
            return Err(PlenoxelError::BadShape {
                key: "sh_data",
                shape: vec![n, num_bases(sh_degree).saturating_mul(3)],
                expected: format!("SH degree 0 to {MAX_SH_DEGREE}, got sh_degree {sh_degree}"),
            });
        }
        let width = 3 * num_bases(sh_degree);
        check_data_size("PlenoxelGrid::dense", n, width)?;
        let links = (0..n as i32).collect();
        let density = Tensor::full(init_density, (n, 1), &Device::Cpu)?;
        let sh = Tensor::zeros((n, width), DType::F32, &Device::Cpu)?;
        Self::new(dims, links, density, sh, radius, center)
    }

    /// A degree-0 (diffuse) grid built from a function of world position returning
    /// `(density, rgb)`, evaluated at every voxel centre; voxels with density `≤ 0` stay empty.
    /// The colour is stored as the SH DC coefficient `(rgb − 0.5) / C0`, so it renders as `rgb`.
    pub fn from_fn(
        dims: [usize; 3],
        radius: [f32; 3],
        center: [f32; 3],
        field: impl Fn([f64; 3]) -> (f32, [f32; 3]) + Sync,
    ) -> Result<Self, PlenoxelError> {
        let n = voxel_count(dims)?;
        check_box("radius", radius, true)?;
        check_box("center", center, false)?;
        let [_, ny, nz] = dims;
        let world = |index: usize| -> [f64; 3] {
            let voxel = [index / (ny * nz), (index / nz) % ny, index % nz];
            std::array::from_fn(|a| {
                let (r, c) = (f64::from(radius[a]), f64::from(center[a]));
                c + r * (2.0 * (voxel[a] as f64 + 0.5) / dims[a] as f64 - 1.0)
            })
        };
        let values: Vec<(f32, [f32; 3])> =
            (0..n).into_par_iter().map(|i| field(world(i))).collect();
        let mut links = vec![-1i32; n];
        let mut density = Vec::new();
        let mut sh = Vec::new();
        for (i, (d, rgb)) in values.into_iter().enumerate() {
            if d > 0.0 {
                links[i] = density.len() as i32;
                density.push(d);
                sh.extend(rgb.map(|c| ((f64::from(c) - 0.5) / SH_C0) as f32));
            }
        }
        let kept = density.len();
        Self::new(
            dims,
            links,
            Tensor::from_vec(density, (kept, 1), &Device::Cpu)?,
            Tensor::from_vec(sh, (kept, 3), &Device::Cpu)?,
            radius,
            center,
        )
    }

    /// The grid resampled to resolution `dims` over the same box: density and SH trilinearly
    /// interpolated at the new voxel centres (grid coordinate `(i + ½)·old/new − ½` on each
    /// axis, clamped; empty corners count as 0), keeping only voxels selected by `prune`
    /// (links rebuilt in C order). Resampling to the grid's own resolution reads every voxel
    /// exactly, so it only prunes. Data become f32.
    pub fn resample(&self, dims: [usize; 3], prune: &PruneOptions) -> Result<Self, PlenoxelError> {
        let n = voxel_count(dims)?;
        let old = self.dims();
        let density: Vec<f32> = self
            .density
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let sh: Vec<f32> = self.sh.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let width = 3 * self.basis_dim();
        let [_, ny, nz] = dims;
        let position = |index: usize| -> [f64; 3] {
            let voxel = [index / (ny * nz), (index / nz) % ny, index % nz];
            std::array::from_fn(|a| (voxel[a] as f64 + 0.5) * old[a] as f64 / dims[a] as f64 - 0.5)
        };
        let sparse = &self.sparse;
        let resampled_density: Vec<f64> = (0..n)
            .into_par_iter()
            .map(|i| Corners::at(sparse, position(i)).0.density(&density))
            .collect();
        let threshold = f64::from(prune.density_threshold);
        let mut keep: Vec<bool> = resampled_density.iter().map(|&d| d > threshold).collect();
        // After as many dilations as the longest side every voxel within reach of a kept one
        // is kept, so more change nothing: bound the loop by that, not by `dilate` alone.
        let longest = dims.into_iter().max().unwrap_or(0);
        for _ in 0..prune.dilate.min(longest) {
            keep = dilate(&keep, dims);
        }
        let mut links = vec![-1i32; n];
        let mut rows = Vec::new();
        for (i, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
            links[i] = rows.len() as i32;
            rows.push(i);
        }
        check_data_size("PlenoxelGrid::resample", rows.len(), width)?;
        let new_density: Vec<f32> = rows.iter().map(|&i| resampled_density[i] as f32).collect();
        let new_sh: Vec<f32> = rows
            .par_iter()
            .flat_map_iter(|&i| {
                let mut out = vec![0.0f64; width];
                Corners::at(sparse, position(i)).0.channels(&sh, &mut out);
                out.into_iter().map(|v| v as f32)
            })
            .collect();
        let kept = rows.len();
        Self::new(
            dims,
            links,
            Tensor::from_vec(new_density, (kept, 1), &Device::Cpu)?,
            Tensor::from_vec(new_sh, (kept, width), &Device::Cpu)?,
            self.radius,
            self.center,
        )
    }
}

/// `mask` grown by one voxel in each of the 26 directions.
fn dilate(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let range = |v: usize, n: usize| v.saturating_sub(1)..=(v + 1).min(n - 1);
    (0..mask.len())
        .into_par_iter()
        .map(|i| {
            let (x, y, z) = (i / (ny * nz), (i / nz) % ny, i % nz);
            range(x, nx)
                .any(|a| range(y, ny).any(|b| range(z, nz).any(|c| mask[(a * ny + b) * nz + c])))
        })
        .collect()
}

//! Per-ray marching through a sparse grid: ray–box clipping, sparse trilinear corners, the
//! coarse occupancy grid that skips empty space, and svox2's `cuvol` compositing forward and
//! backward. Everything is computed in f64 whatever the storage type (f16, f32 or f64).
//!
//! Source of the formulas: svox2 `csrc/render_lerp_kernel_cuvol.cu` (`trace_ray_cuvol`,
//! `trace_ray_cuvol_backward`) and `csrc/include/render_util.cuh` (`ray_find_bounds`,
//! `_get_delta_scale`, `trilerp_cuvol_one`).

use std::ops::ControlFlow;
use std::sync::OnceLock;

use half::{bf16, f16};

use super::grad::SparseRows;
use super::sh::{eval_sh_bases_into, unit, MAX_SH_BASES};
use super::RenderOptions;

/// Storage element of the density and SH arrays.
pub(crate) trait GridValue: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
}

impl GridValue for f16 {
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(f16_table()[usize::from(self.to_bits())])
    }
}

/// All 65536 f16 values as f32: a table lookup is several times faster than `half`'s
/// conversion (runtime CPU-feature dispatch on every call) in the per-sample loops, and
/// svox2 checkpoints store SH as f16.
fn f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect())
}

impl GridValue for bf16 {
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
}

impl GridValue for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl GridValue for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// Edge of an occupancy block, in cells.
pub(crate) const OCCUPANCY_BLOCK: usize = 8;

/// The sparse structure shared by every render of a grid: resolution, links and the coarse
/// occupancy grid built from them.
#[derive(Debug)]
pub(crate) struct SparseLinks {
    /// `[X, Y, Z]`, each ≥ 2.
    pub dims: [usize; 3],
    /// `X·Y·Z` links in C order; negative = empty.
    pub links: Vec<i32>,
    /// Blocks per axis.
    blocks: [usize; 3],
    /// Whether block `(bx, by, bz)` holds a cell with at least one non-empty corner.
    occupied: Vec<bool>,
}

impl SparseLinks {
    /// Builds the occupancy grid. `dims` must be ≥ 2 each and `links.len()` their product
    /// (checked by the callers that read links from files).
    pub fn new(dims: [usize; 3], links: Vec<i32>) -> Self {
        // Cells (lower corners of trilinear lookups) run 0..=dims-2 on each axis.
        let blocks = dims.map(|d| (d - 1).div_ceil(OCCUPANCY_BLOCK));
        let mut occupied = vec![false; blocks[0] * blocks[1] * blocks[2]];
        let [_, ny, nz] = dims;
        for (index, _) in links.iter().enumerate().filter(|(_, &l)| l >= 0) {
            let voxel = [index / (ny * nz), (index / nz) % ny, index % nz];
            // A voxel is a corner of the cells v-1 and v along each axis (those that exist).
            let cell_blocks = |axis: usize| {
                let v = voxel[axis];
                let lo = v.saturating_sub(1) / OCCUPANCY_BLOCK;
                let hi = v.min(dims[axis] - 2) / OCCUPANCY_BLOCK;
                lo..=hi
            };
            for bx in cell_blocks(0) {
                for by in cell_blocks(1) {
                    for bz in cell_blocks(2) {
                        occupied[(bx * blocks[1] + by) * blocks[2] + bz] = true;
                    }
                }
            }
        }
        Self {
            dims,
            links,
            blocks,
            occupied,
        }
    }

    fn block_of(&self, cell: [usize; 3]) -> [usize; 3] {
        cell.map(|c| c / OCCUPANCY_BLOCK)
    }

    fn block_is_empty(&self, block: [usize; 3]) -> bool {
        !self.occupied[(block[0] * self.blocks[1] + block[1]) * self.blocks[2] + block[2]]
    }
}

/// World → grid transform of svox2's `world2grid`: `g = p · scaling + offset` with
/// `scaling = 0.5 / radius · reso` and `offset = 0.5 · (1 − center / radius) · reso − 0.5`,
/// so voxel centres sit at integer grid coordinates and the box spans `[-0.5, reso − 0.5]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub scaling: [f64; 3],
    pub offset: [f64; 3],
}

impl Geometry {
    pub fn new(dims: [usize; 3], radius: [f32; 3], center: [f32; 3]) -> Self {
        let mut scaling = [0.0; 3];
        let mut offset = [0.0; 3];
        for i in 0..3 {
            let (r, c, n) = (f64::from(radius[i]), f64::from(center[i]), dims[i] as f64);
            scaling[i] = 0.5 / r * n;
            offset[i] = 0.5 * (1.0 - c / r) * n - 0.5;
        }
        Self { scaling, offset }
    }

    pub fn world_to_grid(&self, p: [f64; 3]) -> [f64; 3] {
        std::array::from_fn(|i| p[i] * self.scaling[i] + self.offset[i])
    }
}

/// A ray clipped to the grid box, in grid coordinates.
pub(crate) struct Ray {
    origin: [f64; 3],
    /// Unit length in grid (voxel) units, so `t` counts voxels.
    dir: [f64; 3],
    /// World length of one step: σ is integrated over this.
    pub world_step: f64,
    tmin: f64,
    tmax: f64,
    /// SH bases at the (world) viewing direction; the first `K` are used.
    pub basis: [f64; MAX_SH_BASES],
}

impl Ray {
    /// Clips the world ray `origin + t · dir` to the box, or `None` when it misses it (or has a
    /// zero or non-finite direction). `dir` need not be unit: it is normalised first, as
    /// svox2's rays are.
    pub fn new(
        geometry: &Geometry,
        dims: [usize; 3],
        origin: [f64; 3],
        dir: [f64; 3],
        basis_dim: usize,
        opts: &RenderOptions,
    ) -> Option<Self> {
        let view = unit(dir);
        let view_len = (view[0] * view[0] + view[1] * view[1] + view[2] * view[2]).sqrt();
        if !(view_len > 0.5 && view_len < 2.0) || origin.iter().any(|o| !o.is_finite()) {
            return None;
        }
        let mut basis = [0.0; MAX_SH_BASES];
        eval_sh_bases_into(view, &mut basis[..basis_dim]);
        let grid_dir: [f64; 3] = std::array::from_fn(|i| view[i] * geometry.scaling[i]);
        // `_get_delta_scale`: world length of one voxel-unit of t along this ray.
        let delta_scale = 1.0
            / (grid_dir[0] * grid_dir[0] + grid_dir[1] * grid_dir[1] + grid_dir[2] * grid_dir[2])
                .sqrt();
        let dir = grid_dir.map(|g| g * delta_scale);
        let origin = geometry.world_to_grid(origin);
        let step = f64::from(opts.step_size);
        let world_step = delta_scale * step;
        let mut tmin = f64::from(opts.near_clip) / delta_scale;
        let mut tmax = f64::INFINITY;
        for i in 0..3 {
            let (lo, hi) = (-0.5, dims[i] as f64 - 0.5);
            if dir[i] != 0.0 {
                let t1 = (lo - origin[i]) / dir[i];
                let t2 = (hi - origin[i]) / dir[i];
                tmin = tmin.max(t1.min(t2));
                tmax = tmax.min(t1.max(t2));
            } else if origin[i] < lo || origin[i] > hi {
                // svox2 ignores this axis and clamps such rays onto the border voxels; a ray
                // parallel to a face and outside the box misses it.
                return None;
            }
        }
        (tmin <= tmax).then_some(Self {
            origin,
            dir,
            world_step,
            tmin,
            tmax,
            basis,
        })
    }
}

impl Ray {
    /// Grid position of sample `k`, at `t = tmin + k · step`, or `None` past the box.
    pub fn sample_point(&self, k: u64, step: f64) -> Option<[f64; 3]> {
        let t = self.tmin + k as f64 * step;
        (t <= self.tmax).then(|| std::array::from_fn(|i| self.origin[i] + t * self.dir[i]))
    }
}

/// The eight corners of one trilinear lookup, in the order `(dx, dy, dz)` = `000, 001, ...,
/// 111`, with their links (negative = empty) and weights.
pub(crate) struct Corners {
    pub links: [i32; 8],
    pub weights: [f64; 8],
}

impl Corners {
    /// Trilinear corners of grid point `pos`, clamped to the grid as svox2 does.
    pub fn at(sparse: &SparseLinks, pos: [f64; 3]) -> (Self, [usize; 3]) {
        let dims = sparse.dims;
        let mut cell = [0usize; 3];
        let mut frac = [0.0f64; 3];
        for i in 0..3 {
            let p = pos[i].clamp(0.0, dims[i] as f64 - 1.0);
            let p = if p.is_nan() { 0.0 } else { p };
            cell[i] = (p as usize).min(dims[i] - 2);
            frac[i] = p - cell[i] as f64;
        }
        let [_, ny, nz] = dims;
        let base = (cell[0] * ny + cell[1]) * nz + cell[2];
        let mut links = [-1i32; 8];
        let mut weights = [0.0f64; 8];
        for (corner, (link, weight)) in links.iter_mut().zip(weights.iter_mut()).enumerate() {
            let (dx, dy, dz) = (corner >> 2, (corner >> 1) & 1, corner & 1);
            *link = sparse.links[base + (dx * ny + dy) * nz + dz];
            let w = |d: usize, f: f64| if d == 1 { f } else { 1.0 - f };
            *weight = w(dx, frac[0]) * w(dy, frac[1]) * w(dz, frac[2]);
        }
        (Self { links, weights }, cell)
    }

    /// Non-empty corners as `(index into the data arrays, weight)`. Empty corners count as
    /// value 0: they are left out, never read through a sentinel.
    pub fn filled(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.links
            .iter()
            .zip(self.weights)
            .filter(|(l, _)| **l >= 0)
            .map(|(&l, w)| (l as usize, w))
    }

    /// Trilinear value of a one-channel array.
    pub fn density<D: GridValue>(&self, density: &[D]) -> f64 {
        self.filled().map(|(l, w)| w * density[l].to_f64()).sum()
    }

    /// Trilinear values of the `out.len()` channels of a row-major `[N, out.len()]` array.
    pub fn channels<S: GridValue>(&self, data: &[S], out: &mut [f64]) {
        let width = out.len();
        out.fill(0.0);
        for (l, w) in self.filled() {
            for (o, v) in out.iter_mut().zip(&data[l * width..(l + 1) * width]) {
                *o += w * v.to_f64();
            }
        }
    }
}

/// Walks the samples `t_k = tmin + k · step_size` (`t_k ≤ tmax`) and hands the corners of each
/// to `visit` until it breaks. With `skip_empty`, samples inside empty occupancy blocks are
/// jumped over: their corners are all empty, so they would add nothing and the image is
/// unchanged (samples are indexed by `k`, never accumulated, so positions agree bit for bit).
pub(crate) fn march(
    ray: &Ray,
    sparse: &SparseLinks,
    step: f64,
    skip_empty: bool,
    mut visit: impl FnMut(&Corners) -> ControlFlow<()>,
) {
    let mut k: u64 = 0;
    loop {
        let Some(pos) = ray.sample_point(k, step) else {
            return;
        };
        let (corners, cell) = Corners::at(sparse, pos);
        if skip_empty {
            let block = sparse.block_of(cell);
            if sparse.block_is_empty(block) {
                match next_sample_outside(ray, sparse, block, step, k) {
                    Some(next) => {
                        k = next;
                        continue;
                    }
                    None => return,
                }
            }
        }
        if visit(&corners).is_break() {
            return;
        }
        k += 1;
    }
}

/// First sample index after `k` that may lie outside `block` (`None` when the ray ends first).
fn next_sample_outside(
    ray: &Ray,
    sparse: &SparseLinks,
    block: [usize; 3],
    step: f64,
    k: u64,
) -> Option<u64> {
    let mut t_exit = f64::INFINITY;
    for (i, &b) in block.iter().enumerate() {
        // The block's cells cover grid positions [lo, hi); positions are clamped into the grid
        // first, so the first and last blocks extend to infinity.
        let lo = if b == 0 {
            f64::NEG_INFINITY
        } else {
            (b * OCCUPANCY_BLOCK) as f64
        };
        let hi = if b + 1 == sparse.blocks[i] {
            f64::INFINITY
        } else {
            ((b + 1) * OCCUPANCY_BLOCK) as f64
        };
        let d = ray.dir[i];
        let t = if d > 0.0 {
            (hi - ray.origin[i]) / d
        } else if d < 0.0 {
            (lo - ray.origin[i]) / d
        } else {
            f64::INFINITY
        };
        t_exit = t_exit.min(t);
    }
    if t_exit.is_nan() || t_exit > ray.tmax {
        return None;
    }
    // Samples strictly before the exit (less a margin far above rounding) are in the block.
    let margin = 1e-6 * t_exit.abs().max(1.0);
    let steps = ((t_exit - margin - ray.tmin) / step).ceil();
    let next = if steps.is_finite() && steps > k as f64 {
        steps as u64
    } else {
        k + 1
    };
    Some(next.max(k + 1))
}

/// Borrowed grid data for one render: structure, geometry, density `[N]` and SH `[N, 3K]`.
pub(crate) struct GridView<'a, D, S> {
    pub sparse: &'a SparseLinks,
    pub geometry: &'a Geometry,
    pub density: &'a [D],
    pub sh: &'a [S],
    pub basis_dim: usize,
}

impl<D: GridValue, S: GridValue> GridView<'_, D, S> {
    pub fn ray(&self, origin: [f64; 3], dir: [f64; 3], opts: &RenderOptions) -> Option<Ray> {
        Ray::new(
            self.geometry,
            self.sparse.dims,
            origin,
            dir,
            self.basis_dim,
            opts,
        )
    }

    /// Colour of one sample before activation: `Σ_k basis_k · sh[ch, k]` per channel.
    fn raw_colour(&self, corners: &Corners, basis: &[f64]) -> [f64; 3] {
        let k = self.basis_dim;
        let mut coeffs = [0.0; 3 * MAX_SH_BASES];
        corners.channels(self.sh, &mut coeffs[..3 * k]);
        std::array::from_fn(|ch| {
            coeffs[ch * k..(ch + 1) * k]
                .iter()
                .zip(basis)
                .map(|(c, b)| c * b)
                .sum::<f64>()
        })
    }

    /// svox2's forward for one ray: `Σ T_i (1 − e^{−σ_i δ}) · max(raw_i + 0.5, 0)` over the
    /// samples with `σ_i > sigma_thresh`, stopping once `T < stop_thresh` (then `T = 0`),
    /// plus `T · background_brightness`.
    pub fn trace(&self, ray: Option<&Ray>, opts: &RenderOptions, skip_empty: bool) -> [f64; 3] {
        let background = f64::from(opts.background_brightness);
        let Some(ray) = ray else {
            return [background; 3];
        };
        let (sigma_thresh, stop_thresh) =
            (f64::from(opts.sigma_thresh), f64::from(opts.stop_thresh));
        let mut out = [0.0f64; 3];
        let mut log_transmit = 0.0f64;
        march(
            ray,
            self.sparse,
            f64::from(opts.step_size),
            skip_empty,
            |c| {
                let sigma = c.density(self.density);
                if sigma <= sigma_thresh {
                    return ControlFlow::Continue(());
                }
                let raw = self.raw_colour(c, &ray.basis[..self.basis_dim]);
                let pcnt = ray.world_step * sigma;
                let weight = log_transmit.exp() * (1.0 - (-pcnt).exp());
                log_transmit -= pcnt;
                for (o, r) in out.iter_mut().zip(raw) {
                    *o += weight * (r + 0.5).max(0.0);
                }
                if log_transmit.exp() < stop_thresh {
                    log_transmit = f64::NEG_INFINITY;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        );
        out.map(|o| o + log_transmit.exp() * background)
    }

    /// Backward of [`GridView::trace`] for one ray, re-marching it as svox2's backward does:
    /// adds `∂L/∂density` to `grad_density [N, 1]` and `∂L/∂sh` to `grad_sh [N, 3K]` (only the
    /// rows of the corners it samples), given the forward colour `colour` and the output
    /// gradient `grad_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn trace_backward(
        &self,
        ray: Option<&Ray>,
        opts: &RenderOptions,
        skip_empty: bool,
        colour: [f64; 3],
        grad_out: [f64; 3],
        grad_density: &mut SparseRows<f64>,
        grad_sh: &mut SparseRows<f64>,
    ) {
        let Some(ray) = ray else {
            return;
        };
        let k = self.basis_dim;
        let (sigma_thresh, stop_thresh) =
            (f64::from(opts.sigma_thresh), f64::from(opts.stop_thresh));
        // What the rest of the ray (later samples and the background) adds to L.
        let mut accum: f64 = colour.iter().zip(grad_out).map(|(c, g)| c * g).sum();
        let mut log_transmit = 0.0f64;
        march(
            ray,
            self.sparse,
            f64::from(opts.step_size),
            skip_empty,
            |c| {
                let sigma = c.density(self.density);
                if sigma <= sigma_thresh {
                    return ControlFlow::Continue(());
                }
                let raw = self.raw_colour(c, &ray.basis[..k]);
                let pcnt = ray.world_step * sigma;
                let weight = log_transmit.exp() * (1.0 - (-pcnt).exp());
                log_transmit -= pcnt;
                let transmit = log_transmit.exp();
                let mut grad_dot_colour = 0.0;
                for ch in 0..3 {
                    let shifted = raw[ch] + 0.5;
                    grad_dot_colour += shifted.max(0.0) * grad_out[ch];
                    // d max(x, 0)/dx taken as 1 at x = 0, as svox2 does.
                    if shifted >= 0.0 {
                        let g = weight * grad_out[ch];
                        for (l, w) in c.filled() {
                            let row = &mut grad_sh.row_mut(l)[ch * k..(ch + 1) * k];
                            for (dst, b) in row.iter_mut().zip(&ray.basis[..k]) {
                                *dst += w * g * b;
                            }
                        }
                    }
                }
                accum -= weight * grad_dot_colour;
                let grad_sigma = ray.world_step * (grad_dot_colour * transmit - accum);
                for (l, w) in c.filled() {
                    grad_density.row_mut(l)[0] += w * grad_sigma;
                }
                if transmit < stop_thresh {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_voxel(dims: [usize; 3], voxel: [usize; 3]) -> SparseLinks {
        let mut links = vec![-1; dims.iter().product()];
        links[(voxel[0] * dims[1] + voxel[1]) * dims[2] + voxel[2]] = 0;
        SparseLinks::new(dims, links)
    }

    #[test]
    fn occupancy_marks_every_block_whose_cells_touch_a_voxel() {
        // Voxel 8 is a corner of cells 7 (block 0) and 8 (block 1) on each axis.
        let sparse = one_voxel([20, 20, 20], [8, 8, 8]);
        assert_eq!(sparse.blocks, [3, 3, 3]);
        for b in 0..27 {
            let block = [b / 9, (b / 3) % 3, b % 3];
            let want = block.iter().all(|&c| c <= 1);
            assert_eq!(!sparse.block_is_empty(block), want, "{block:?}");
        }
        // The last voxel only touches the last cell.
        let sparse = one_voxel([17, 17, 17], [16, 16, 16]);
        assert_eq!(sparse.blocks, [2, 2, 2]);
        assert!(!sparse.block_is_empty([1, 1, 1]));
        assert!(sparse.block_is_empty([0, 1, 1]));
    }

    #[test]
    fn skipping_visits_fewer_samples_and_the_same_non_empty_ones() {
        let dims = [40, 40, 40];
        let sparse = one_voxel(dims, [30, 20, 21]);
        let geometry = Geometry::new(dims, [1.0; 3], [0.0; 3]);
        let opts = RenderOptions::default();
        let ray = Ray::new(
            &geometry,
            dims,
            [-2.0, 0.02, 0.07],
            [1.0, 0.01, 0.02],
            1,
            &opts,
        )
        .expect("the ray crosses the box");
        let walk = |skip: bool| {
            let mut visited = 0;
            let mut filled = Vec::new();
            march(&ray, &sparse, 0.5, skip, |c| {
                visited += 1;
                if c.filled().next().is_some() {
                    filled.push((c.links, c.weights));
                }
                ControlFlow::Continue(())
            });
            (visited, filled)
        };
        let (all, filled_all) = walk(false);
        let (skipped, filled_skipped) = walk(true);
        assert!(!filled_all.is_empty());
        assert_eq!(filled_all, filled_skipped);
        assert!(skipped * 4 < all, "{skipped} of {all} samples visited");
    }

    #[test]
    fn rays_parallel_to_a_face_outside_the_box_miss() {
        let dims = [4, 4, 4];
        let geometry = Geometry::new(dims, [1.0; 3], [0.0; 3]);
        let opts = RenderOptions::default();
        let miss = Ray::new(&geometry, dims, [-3.0, 1.5, 0.0], [1.0, 0.0, 0.0], 1, &opts);
        assert!(miss.is_none());
        let hit = Ray::new(&geometry, dims, [-3.0, 0.5, 0.0], [1.0, 0.0, 0.0], 1, &opts);
        assert!(hit.is_some());
        let zero = Ray::new(&geometry, dims, [0.0; 3], [0.0; 3], 1, &opts);
        assert!(zero.is_none());
    }
}

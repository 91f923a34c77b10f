//! 3D grid sampling (PyTorch's `F.grid_sample` on 5-D inputs) with gradients for the input and
//! the grid.
//!
//! Coordinates follow PyTorch exactly: the grid's last axis holds `(x, y, z)` in [-1, 1] with `x`
//! indexing W, `y` H and `z` D; unnormalisation is `((c + 1) / 2) (size − 1)` with
//! `align_corners` and `((c + 1) size − 1) / 2` without; border padding clamps to
//! `[0, size − 1]` and, as in PyTorch, passes no gradient to the grid at or beyond the clamp;
//! nearest mode rounds half to even.
//!
//! A grid coordinate that is NaN samples nothing (zero) and gets no gradient, in both padding
//! modes. This differs from PyTorch 2.15's CPU kernel under border padding only, on purpose:
//! there its forward clamps NaN to the last voxel but its backward treats the point as outside
//! (no gradient to the input either), so its two passes disagree.
//!
//! With the `cuda` feature both passes also run on CUDA devices (`kernels/grid_sample.cu`,
//! mirroring the CPU kernels here).

use crate::dispatch::{checked_elements, kernel_dtype, run_cpu, Float, Kernel};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Interpolation of [`grid_sample3d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GridSampleMode {
    /// Trilinear interpolation of the 8 surrounding voxels (PyTorch calls it bilinear).
    #[default]
    Bilinear,
    /// The nearest voxel, rounding half to even.
    Nearest,
}

/// What samples outside the volume read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GridPaddingMode {
    /// Voxels outside the volume read 0.
    #[default]
    Zeros,
    /// Coordinates are clamped to the volume's border voxels.
    Border,
}

/// Parameters of [`grid_sample3d`]; the default is PyTorch's (bilinear, zeros, no corner
/// alignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GridSampleParams {
    /// Trilinear or nearest interpolation.
    pub mode: GridSampleMode,
    /// What samples outside the volume read.
    pub padding_mode: GridPaddingMode,
    /// When true, -1 and 1 are the centres of the corner voxels; when false, their outer edges.
    pub align_corners: bool,
}

/// Sizes of one sampling problem: input `[n, c, d, h, w]`, output `[n, c, od, oh, ow]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleDims {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input depth (indexed by the grid's z).
    pub d: usize,
    /// Input height (indexed by y).
    pub h: usize,
    /// Input width (indexed by x).
    pub w: usize,
    /// Output depth.
    pub od: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl SampleDims {
    /// Checks an input `[N, C, D, H, W]` against a grid `[N, Do, Ho, Wo, 3]`; sizes whose
    /// element counts overflow are errors.
    pub fn new(input: &[usize], grid: &[usize]) -> Result<Self> {
        let &[n, c, d, h, w] = input else {
            bail!("grid_sample3d: input must be [N, C, D, H, W], got shape {input:?}");
        };
        let &[gn, od, oh, ow, three] = grid else {
            bail!("grid_sample3d: grid must be [N, Do, Ho, Wo, 3], got shape {grid:?}");
        };
        if three != 3 {
            bail!("grid_sample3d: the grid's last dim must be 3 (x, y, z), got shape {grid:?}");
        }
        if gn != n {
            bail!("grid_sample3d: batch mismatch, input has {n} and grid has {gn}");
        }
        if d == 0 || h == 0 || w == 0 {
            bail!("grid_sample3d: input spatial dims must be non-empty, got shape {input:?}");
        }
        // `points`, `voxels` and the buffers they size must not overflow (the sides alone too,
        // for empty batches or channels).
        checked_elements("grid_sample3d", "input sides", &[d, h, w])?;
        checked_elements("grid_sample3d", "output sides", &[od, oh, ow])?;
        checked_elements("grid_sample3d", "input", input)?;
        checked_elements("grid_sample3d", "grid", grid)?;
        checked_elements("grid_sample3d", "output", &[n, c, od, oh, ow])?;
        Ok(Self {
            n,
            c,
            d,
            h,
            w,
            od,
            oh,
            ow,
        })
    }

    /// Output points per batch item.
    pub fn points(&self) -> usize {
        self.od * self.oh * self.ow
    }

    /// Input voxels per channel.
    pub fn voxels(&self) -> usize {
        self.d * self.h * self.w
    }

    /// The output's shape, `[N, C, Do, Ho, Wo]`.
    pub fn output_shape(&self) -> Shape {
        Shape::from((self.n, self.c, self.od, self.oh, self.ow))
    }
}

/// Source coordinate in voxels along an axis of `size` voxels, and its derivative with respect
/// to the normalised grid coordinate (0 where border clamping holds it).
#[inline]
fn source_coordinate<T: Float>(coord: T, size: usize, p: &GridSampleParams) -> (T, T) {
    let two = T::from_f64(2.0);
    let (x, grad) = if p.align_corners {
        let scale = T::from_f64((size - 1) as f64);
        (((coord + T::one()) / two) * scale, scale / two)
    } else {
        let scale = T::from_f64(size as f64);
        (((coord + T::one()) * scale - T::one()) / two, scale / two)
    };
    if p.padding_mode == GridPaddingMode::Zeros {
        return (x, grad);
    }
    // PyTorch counts the border itself as outside for the gradient.
    let max = T::from_f64((size - 1) as f64);
    if x <= T::zero() {
        (T::zero(), T::zero())
    } else if x >= max {
        (max, T::zero())
    } else {
        (x, grad)
    }
}

/// Whether the integral float `voxel` indexes an axis of `size` voxels; compared in float so
/// that huge or NaN coordinates never reach an integer conversion.
fn in_range<T: Float>(voxel: T, size: usize) -> bool {
    voxel >= T::zero() && voxel < T::from_f64(size as f64)
}

/// The in-range voxels one sample reads (at most 8), in PyTorch's accumulation order (z, then
/// y, then x; low before high), with their weights and, when built with gradients, the
/// weights' derivatives with respect to the grid coordinates.
///
/// Computed once per point and reused for every channel: building taps dominates the cost of
/// few-channel inputs. Fixed-size arrays keep the corner loop free of allocation and branches
/// on the axis counts.
struct Taps<T> {
    len: usize,
    voxel: [usize; 8],
    weight: [T; 8],
    /// `d(weight)/d(grid x, y, z)` (source-coordinate scale folded in); zero without gradients.
    dgrid: [[T; 3]; 8],
}

impl<T: Float> Taps<T> {
    fn empty() -> Self {
        Self {
            len: 0,
            voxel: [0; 8],
            weight: [T::zero(); 8],
            dgrid: [[T::zero(); 3]; 8],
        }
    }

    /// Replaces the taps with those of the sample at `point` = `[x, y, z]`; `GRAD` also fills
    /// `dgrid`. Updated in place: returning the struct by value cost a memcpy per point.
    #[inline(always)]
    fn set<const GRAD: bool>(&mut self, point: [T; 3], dims: &SampleDims, p: &GridSampleParams) {
        let taps = self;
        taps.len = 0;
        let (sx, gx) = source_coordinate(point[0], dims.w, p);
        let (sy, gy) = source_coordinate(point[1], dims.h, p);
        let (sz, gz) = source_coordinate(point[2], dims.d, p);
        match p.mode {
            GridSampleMode::Nearest => {
                let (ix, iy, iz) = (
                    sx.round_half_even(),
                    sy.round_half_even(),
                    sz.round_half_even(),
                );
                if in_range(ix, dims.w) && in_range(iy, dims.h) && in_range(iz, dims.d) {
                    taps.voxel[0] = flat_voxel(dims, ix, iy, iz);
                    taps.weight[0] = T::one();
                    taps.len = 1;
                }
            }
            GridSampleMode::Bilinear => {
                let x = AxisCorners::new(sx, dims.w);
                let y = AxisCorners::new(sy, dims.h);
                let z = AxisCorners::new(sz, dims.d);
                // Bit 0 of `k` picks x's high voxel, bit 1 y's, bit 2 z's.
                let corner = |taps: &mut Self, at: usize, k: usize| {
                    let (a, b, c) = (k & 1, (k >> 1) & 1, (k >> 2) & 1);
                    taps.voxel[at] = (z.index[c] * dims.h + y.index[b]) * dims.w + x.index[a];
                    taps.weight[at] = x.weight[a] * y.weight[b] * z.weight[c];
                    if GRAD {
                        // d(weight of the low/high voxel)/d(source) is -1/+1.
                        let signed = |w: T, high: usize| if high == 1 { w } else { -w };
                        taps.dgrid[at] = [
                            signed(y.weight[b] * z.weight[c], a) * gx,
                            signed(x.weight[a] * z.weight[c], b) * gy,
                            signed(x.weight[a] * y.weight[b], c) * gz,
                        ];
                    }
                };
                let all = |axis: &AxisCorners<T>| axis.valid[0] && axis.valid[1];
                if all(&x) && all(&y) && all(&z) {
                    // Interior points (most of them): fixed slots the compiler unrolls.
                    for k in 0..8 {
                        corner(taps, k, k);
                    }
                    taps.len = 8;
                } else {
                    for k in 0..8 {
                        let (a, b, c) = (k & 1, (k >> 1) & 1, (k >> 2) & 1);
                        if x.valid[a] && y.valid[b] && z.valid[c] {
                            let at = taps.len;
                            corner(taps, at, k);
                            taps.len += 1;
                        }
                    }
                }
            }
        }
    }
}

impl<T: Copy> Taps<T> {
    /// Calls `f(voxel, weight, dgrid)` for every tap; the full case is a fixed-length loop so
    /// that it unrolls.
    #[inline(always)]
    fn each(&self, mut f: impl FnMut(usize, T, &[T; 3])) {
        if self.len == 8 {
            for k in 0..8 {
                f(self.voxel[k], self.weight[k], &self.dgrid[k]);
            }
        } else {
            for k in 0..self.len.min(8) {
                f(self.voxel[k], self.weight[k], &self.dgrid[k]);
            }
        }
    }
}

/// Flat voxel index of in-range integral coordinates.
#[inline(always)]
fn flat_voxel<T: Float>(dims: &SampleDims, x: T, y: T, z: T) -> usize {
    let (x, y, z) = (
        x.to_f64() as usize,
        y.to_f64() as usize,
        z.to_f64() as usize,
    );
    (z * dims.h + y) * dims.w + x
}

/// The low and high voxel of a trilinear sample along one axis: index (0 when out of range),
/// whether it is in range, and its weight.
struct AxisCorners<T> {
    index: [usize; 2],
    valid: [bool; 2],
    weight: [T; 2],
}

impl<T: Float> AxisCorners<T> {
    #[inline(always)]
    fn new(s: T, size: usize) -> Self {
        let lo = s.floor();
        let hi = lo + T::one();
        let valid = [in_range(lo, size), in_range(hi, size)];
        // Converted only when in range, so NaN or huge coordinates never reach an integer.
        let index = |v: T, ok: bool| if ok { v.to_f64() as usize } else { 0 };
        Self {
            index: [index(lo, valid[0]), index(hi, valid[1])],
            valid,
            weight: [hi - s, s - lo],
        }
    }
}

/// Grid point `pi` of a `[P, 3]` grid slice.
#[inline(always)]
fn grid_point<T: Copy>(grid: &[T], pi: usize) -> [T; 3] {
    [grid[pi * 3], grid[pi * 3 + 1], grid[pi * 3 + 2]]
}

/// Nearest mode: the voxel each point of the grid `[N, P, 3]` reads, `usize::MAX` (so that
/// `get` finds nothing) where it falls outside the volume.
fn nearest_voxels<T: Float>(grid: &[T], dims: &SampleDims, p: &GridSampleParams) -> Vec<usize> {
    let mut voxels = vec![usize::MAX; dims.n * dims.points()];
    voxels
        .par_chunks_mut(POINT_TILE)
        .zip(grid.par_chunks(POINT_TILE * 3))
        .for_each(|(slots, points)| {
            let mut taps = Taps::empty();
            for (i, slot) in slots.iter_mut().enumerate() {
                taps.set::<false>(grid_point(points, i), dims, p);
                if taps.len == 1 {
                    *slot = taps.voxel[0];
                }
            }
        });
    voxels
}

/// Points one nearest-mode gather task copies.
const GATHER_CHUNK: usize = 8192;

/// Nearest-mode forward: each point's voxel is found once, then each channel plane is gathered
/// on its own (channel-outer), so that its reads stay within one plane's cache footprint and
/// are independent of each other.
fn nearest_forward<T: Float>(
    input: &[T],
    grid: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Vec<T> {
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    let mut out = vec![T::zero(); dims.n * channels * points];
    if out.is_empty() {
        return out;
    }
    let at = nearest_voxels(grid, dims, p);
    out.par_chunks_mut(points)
        .enumerate()
        .for_each(|(plane_index, plane_out)| {
            let plane = &input[plane_index * voxels..(plane_index + 1) * voxels];
            let b = plane_index / channels;
            let at = &at[b * points..(b + 1) * points];
            plane_out
                .par_chunks_mut(GATHER_CHUNK)
                .zip(at.par_chunks(GATHER_CHUNK))
                .for_each(|(o, at)| {
                    for (o, &v) in o.iter_mut().zip(at) {
                        *o = plane.get(v).copied().unwrap_or(T::zero());
                    }
                });
        });
    out
}

/// Nearest-mode input gradient, added to `grad_input`: each channel plane's scatter-add runs
/// over all points on its own, one task per (batch, channel) plane. The grid gradient of
/// nearest sampling is zero.
fn nearest_backward<T: Float>(
    grid: &[T],
    grad_out: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
    grad_input: &mut [T],
) {
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    let at = nearest_voxels(grid, dims, p);
    grad_input
        .par_chunks_mut(voxels)
        .zip(grad_out.par_chunks(points))
        .enumerate()
        .for_each(|(plane_index, (plane_grad, g))| {
            let b = plane_index / channels;
            for (&v, &g) in at[b * points..(b + 1) * points].iter().zip(g) {
                if let Some(slot) = plane_grad.get_mut(v) {
                    *slot += g;
                }
            }
        });
}

/// Output points one forward task computes.
const POINT_TILE: usize = 512;

/// Forward kernel: input `[N, C, D, H, W]`, grid `[N, P, 3]` → `[N, C, P]`.
///
/// Parallel over (batch item, tile of points): a task computes each point's taps once and
/// applies them to every channel, writing disjoint pieces of the channel planes.
pub fn forward_kernel<T: Float>(
    input: &[T],
    grid: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Vec<T> {
    if p.mode == GridSampleMode::Nearest {
        return nearest_forward(input, grid, dims, p);
    }
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    let mut out = vec![T::zero(); dims.n * channels * points];
    if out.is_empty() {
        return out;
    }
    // One task per (batch item, point tile), holding that tile's slice of every channel.
    let mut tasks: Vec<(usize, usize, Vec<&mut [T]>)> = Vec::new();
    for (b, out_b) in out.chunks_mut(channels * points).enumerate() {
        let mut tiles: Vec<Vec<&mut [T]>> = (0..points.div_ceil(POINT_TILE))
            .map(|_| Vec::with_capacity(channels))
            .collect();
        for plane in out_b.chunks_mut(points) {
            for (tile, piece) in tiles.iter_mut().zip(plane.chunks_mut(POINT_TILE)) {
                tile.push(piece);
            }
        }
        tasks.extend(
            tiles
                .into_iter()
                .enumerate()
                .map(|(t, pieces)| (b, t * POINT_TILE, pieces)),
        );
    }
    // Channels-last rows of every batch item, where they pay (see `channels_last`).
    let rows = channels_last(dims).then(|| to_channels_last(input, channels, voxels));
    tasks.into_par_iter().for_each(|(b, first, mut pieces)| {
        let input_b = &input[b * channels * voxels..(b + 1) * channels * voxels];
        let grid_b = &grid[b * points * 3..(b + 1) * points * 3];
        let len = pieces.first().map_or(0, |piece| piece.len());
        let mut taps = Taps::empty();
        let mut acc = vec![T::zero(); channels];
        let rows_b = rows
            .as_ref()
            .map(|rows| &rows[b * channels * voxels..(b + 1) * channels * voxels]);
        for i in 0..len {
            taps.set::<false>(grid_point(grid_b, first + i), dims, p);
            if let Some(rows_b) = rows_b {
                acc.fill(T::zero());
                taps.each(|v, w, _| {
                    for (a, &x) in acc
                        .iter_mut()
                        .zip(&rows_b[v * channels..(v + 1) * channels])
                    {
                        *a += x * w;
                    }
                });
                for (piece, &a) in pieces.iter_mut().zip(&acc) {
                    piece[i] = a;
                }
                continue;
            }
            for (ch, piece) in pieces.iter_mut().enumerate() {
                let plane = &input_b[ch * voxels..(ch + 1) * voxels];
                let mut acc = T::zero();
                taps.each(|v, w, _| acc += plane[v] * w);
                piece[i] = acc;
            }
        }
    });
    out
}

/// Whether trilinear sampling reads the input channels-last, `[N, D·H·W, C]`: with at least
/// two channels and at least one point per four voxels (so the copy costs less than the
/// sampling). Each tap then reads (and its gradient adds to) one run of `C` values instead of
/// `C` scattered ones, one cache line for up to 16 channels of f32 instead of up to 16.
/// Forward + backward on 2 threads (`benches/grid_sample.rs`): `[4, 8, 32³]` volumes at 32³
/// border-padded points 25–30 → 21–22 ms; `[1, 16, 64³]` at 4096×32 ray points 95 → 54 ms.
fn channels_last(dims: &SampleDims) -> bool {
    dims.c >= 2 && 4 * dims.points() >= dims.voxels()
}

/// `[N, C, V]` planes as `[N, V, C]` rows.
fn to_channels_last<T: Float>(planes: &[T], channels: usize, voxels: usize) -> Vec<T> {
    let mut rows = vec![T::zero(); planes.len()];
    rows.par_chunks_mut(TRANSPOSE_VOXELS * channels)
        .enumerate()
        .for_each(|(chunk, out)| {
            for (r, row) in out.chunks_mut(channels).enumerate() {
                let flat = chunk * TRANSPOSE_VOXELS + r;
                let (b, v) = (flat / voxels, flat % voxels);
                for (c, x) in row.iter_mut().enumerate() {
                    *x = planes[(b * channels + c) * voxels + v];
                }
            }
        });
    rows
}

/// Voxels per task of [`to_channels_last`].
const TRANSPOSE_VOXELS: usize = 4096;

/// Adds the channels-last rows `[V, C]` of one batch item into its planes `[C, V]`.
fn add_channels_first<T: Float>(rows: &[T], channels: usize, planes: &mut [T]) {
    let voxels = planes.len() / channels.max(1);
    planes
        .par_chunks_mut(voxels.max(1))
        .enumerate()
        .for_each(|(c, plane)| {
            for (v, x) in plane.iter_mut().enumerate() {
                *x += rows[v * channels + c];
            }
        });
}

/// Adds the gradients of points `range` of one batch item, for a block of channels, in one
/// pass: each point's taps are built once and serve the input's scatter-add and the grid's
/// reduction over the channels.
///
/// `input` and `grad_input` are `[count, voxels]`, `grad_out` `[count, points]`, `grid`
/// `[points, 3]`, `grad_grid` `[range.len(), 3]` (written, not added to). `GRAD` selects
/// whether the grid gradient is computed (trilinear) or left untouched (nearest).
#[allow(clippy::too_many_arguments)]
fn backward_points<T: Float, const GRAD: bool>(
    input: &[T],
    grid: &[T],
    grad_out: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
    range: std::ops::Range<usize>,
    grad_input: &mut [T],
    grad_grid: &mut [T],
) {
    let (points, voxels) = (dims.points(), dims.voxels());
    let count = grad_input.len() / voxels;
    let mut taps = Taps::empty();
    for (pi, gg) in range.zip(grad_grid.chunks_exact_mut(3)) {
        taps.set::<GRAD>(grid_point(grid, pi), dims, p);
        let mut sum = [T::zero(); 3];
        for ch in 0..count {
            let plane = &input[ch * voxels..(ch + 1) * voxels];
            let plane_grad = &mut grad_input[ch * voxels..(ch + 1) * voxels];
            let g = grad_out[ch * points + pi];
            let mut s = [T::zero(); 3];
            taps.each(|v, w, dw| {
                plane_grad[v] += w * g;
                if GRAD {
                    let value = plane[v];
                    s[0] += value * dw[0];
                    s[1] += value * dw[1];
                    s[2] += value * dw[2];
                }
            });
            if GRAD {
                for (acc, s) in sum.iter_mut().zip(s) {
                    *acc += s * g;
                }
            }
        }
        if GRAD {
            gg.copy_from_slice(&sum);
        }
    }
}

/// Fused backward kernel: input `[N, C, D, H, W]`, grid `[N, P, 3]` and output gradient
/// `[N, C, P]` → `grad_input` `[N, C, D, H, W]` and `grad_grid` `[N, P, 3]` (zero in nearest
/// mode), both added to: they must start at zero.
///
/// Nearest mode with at least as many (batch, channel) planes as threads runs
/// `nearest_backward`, one scatter task per plane; trilinear sampling of channels-last rows
/// (`channels_last`) runs `backward_channels_last`. Otherwise one pass over the points
/// computes both, channel plane by plane. Race-free: tasks own disjoint blocks of channels of
/// one batch item, so their input-gradient planes are their own; each block writes its share
/// of the grid gradient into its own `[N, P, 3]` slab (the first block into `grad_grid`
/// itself), and the slabs are added afterwards. With fewer (batch, channel) planes than
/// threads, a block's points are split further, each part after the first summed into its own
/// accumulator (about one per thread) and added at the end.
pub fn backward_kernel<T: Float>(
    input: &[T],
    grid: &[T],
    grad_out: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
    grad_input: &mut [T],
    grad_grid: &mut [T],
) {
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    if dims.n == 0 || channels == 0 || points == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    if p.mode == GridSampleMode::Nearest && dims.n * channels >= threads {
        return nearest_backward(grid, grad_out, dims, p, grad_input);
    }
    if p.mode == GridSampleMode::Bilinear && channels_last(dims) {
        return backward_channels_last(input, grid, grad_out, dims, p, grad_input, grad_grid);
    }
    let block = (dims.n * channels).div_ceil(threads).clamp(1, channels);
    let blocks = channels.div_ceil(block);
    let parts = (threads / (dims.n * blocks)).clamp(1, points);
    let per_part = points.div_ceil(parts);
    let slab = grad_grid.len();
    let mut extra_slabs = vec![T::zero(); (blocks - 1) * slab];

    let run =
        |b: usize, first: usize, range: std::ops::Range<usize>, gi: &mut [T], gg: &mut [T]| {
            let count = gi.len() / voxels;
            let planes = b * channels + first..b * channels + first + count;
            let (input, grad_out) = (
                &input[planes.start * voxels..planes.end * voxels],
                &grad_out[planes.start * points..planes.end * points],
            );
            let grid = &grid[b * points * 3..(b + 1) * points * 3];
            match p.mode {
                GridSampleMode::Bilinear => {
                    backward_points::<T, true>(input, grid, grad_out, dims, p, range, gi, gg)
                }
                GridSampleMode::Nearest => {
                    backward_points::<T, false>(input, grid, grad_out, dims, p, range, gi, gg)
                }
            }
        };

    let mut tasks: Vec<(usize, usize, &mut [T], &mut [T])> = Vec::new();
    let mut slabs: Vec<std::slice::ChunksMut<'_, T>> = std::iter::once(&mut *grad_grid)
        .chain(extra_slabs.chunks_mut(slab))
        .map(|s| s.chunks_mut(points * 3))
        .collect();
    for (b, gi_b) in grad_input.chunks_mut(channels * voxels).enumerate() {
        for ((j, gi), gg) in gi_b
            .chunks_mut(block * voxels)
            .enumerate()
            .zip(slabs.iter_mut().filter_map(|s| s.next()))
        {
            tasks.push((b, j * block, gi, gg));
        }
    }
    tasks.into_par_iter().for_each(|(b, first, gi, gg)| {
        let (gg_first, gg_rest) = gg.split_at_mut(per_part * 3);
        let len = gi.len();
        let ((), partials) = rayon::join(
            || run(b, first, 0..per_part, gi, gg_first),
            || {
                gg_rest
                    .par_chunks_mut(per_part * 3)
                    .enumerate()
                    .map(|(i, gg_part)| {
                        let start = (i + 1) * per_part;
                        let mut acc = vec![T::zero(); len];
                        run(
                            b,
                            first,
                            start..start + gg_part.len() / 3,
                            &mut acc,
                            gg_part,
                        );
                        acc
                    })
                    .collect::<Vec<_>>()
            },
        );
        for acc in partials {
            for (d, a) in gi.iter_mut().zip(acc) {
                *d += a;
            }
        }
    });
    for extra in extra_slabs.chunks_exact(slab) {
        for (d, e) in grad_grid.iter_mut().zip(extra) {
            *d += *e;
        }
    }
}

/// The trilinear backward on channels-last rows ([`channels_last`]), adding to both
/// gradients. Per batch item, the points are split into about one part per thread; each part
/// adds into its own channels-last input gradient (summed, then added into `grad_input`'s
/// planes) and adds to the grid gradient of its own points. At each tap one pass over the
/// channels adds `w·dy` to the input gradient's row and takes the dot product of the input's
/// row with `dy`, which the tap's weight derivatives turn into the grid gradient.
fn backward_channels_last<T: Float>(
    input: &[T],
    grid: &[T],
    grad_out: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
    grad_input: &mut [T],
    grad_grid: &mut [T],
) {
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    let rows = to_channels_last(input, channels, voxels);
    let parts = (rayon::current_num_threads() / dims.n).clamp(1, points);
    let per_part = points.div_ceil(parts);
    grad_input
        .par_chunks_mut(channels * voxels)
        .zip(grad_grid.par_chunks_mut(points * 3))
        .enumerate()
        .for_each(|(b, (gi, gg))| {
            let rows_b = &rows[b * channels * voxels..(b + 1) * channels * voxels];
            let grid_b = &grid[b * points * 3..(b + 1) * points * 3];
            let dy_b = &grad_out[b * channels * points..(b + 1) * channels * points];
            let partials: Vec<Vec<T>> = gg
                .par_chunks_mut(per_part * 3)
                .enumerate()
                .map(|(part, gg_part)| {
                    let mut acc = vec![T::zero(); channels * voxels];
                    let mut dy = vec![T::zero(); channels];
                    let mut taps = Taps::empty();
                    for (i, gg_point) in gg_part.chunks_exact_mut(3).enumerate() {
                        let pi = part * per_part + i;
                        for (c, d) in dy.iter_mut().enumerate() {
                            *d = dy_b[c * points + pi];
                        }
                        taps.set::<true>(grid_point(grid_b, pi), dims, p);
                        let mut sum = [T::zero(); 3];
                        taps.each(|v, w, dw| {
                            let row = v * channels..(v + 1) * channels;
                            let mut dot = T::zero();
                            let pairs = acc[row.clone()].iter_mut().zip(&rows_b[row]);
                            for ((a, &x), &d) in pairs.zip(&dy) {
                                *a += w * d;
                                dot += x * d;
                            }
                            for (s, &dw) in sum.iter_mut().zip(dw) {
                                *s += dot * dw;
                            }
                        });
                        for (g, s) in gg_point.iter_mut().zip(sum) {
                            *g += s;
                        }
                    }
                    acc
                })
                .collect();
            let mut partials = partials.into_iter();
            if let Some(mut total) = partials.next() {
                for part in partials {
                    for (t, v) in total.iter_mut().zip(part) {
                        *t += v;
                    }
                }
                add_channels_first(&total, channels, gi);
            }
        });
}

/// Dims of a contiguous input/grid pair (grid viewed as `[N, P, 3]`).
fn dims_of(input: &Layout, grid: &Layout) -> Result<SampleDims> {
    SampleDims::new(input.dims(), grid.dims())
}

/// One sampling problem on the CPU: the forward from `(input, grid)`, the backward from
/// `(input, grid, grad_out)` giving `[grad_input (flattened), grad_grid (flattened)]`.
struct Sampling(SampleDims, GridSampleParams);

impl Kernel<2> for Sampling {
    fn run<T: Float>(&self, [input, grid]: [&[T]; 2]) -> Result<Vec<T>> {
        Ok(forward_kernel(input, grid, &self.0, &self.1))
    }
}

impl Kernel<3> for Sampling {
    fn run<T: Float>(&self, [input, grid, grad_out]: [&[T]; 3]) -> Result<Vec<T>> {
        // Zeroed here, once: the kernel adds to both gradients.
        let mut both = vec![T::zero(); input.len() + grid.len()];
        let (gi, gg) = both.split_at_mut(input.len());
        backward_kernel(input, grid, grad_out, &self.0, &self.1, gi, gg);
        Ok(both)
    }
}

/// The forward op `(input, grid) -> output`; records its backward.
struct GridSample(GridSampleParams);

impl CustomOp2 for GridSample {
    fn name(&self) -> &'static str {
        "grid_sample3d"
    }

    fn cpu_fwd(
        &self,
        is: &CpuStorage,
        il: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = dims_of(il, gl)?;
        let out = run_cpu(self.name(), &Sampling(dims, self.0), [(is, il), (gs, gl)])?;
        Ok((out, dims.output_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        is: &candle_core::CudaStorage,
        il: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = dims_of(il, gl)?;
        let out = crate::cuda::grid_sample_forward((is, il), (gs, gl), &dims, &self.0)?;
        Ok((out, dims.output_shape()))
    }

    fn bwd(
        &self,
        input: &Tensor,
        grid: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_res = grad_res.contiguous()?;
        // One fused pass yields both gradients, concatenated; the narrows are views.
        let both = input.apply_op3_no_bwd(grid, &grad_res, &GridSampleBackward(self.0))?;
        let (ni, ng) = (input.elem_count(), grid.elem_count());
        let grad_input = both.narrow(0, 0, ni)?.reshape(input.shape())?;
        let grad_grid = both.narrow(0, ni, ng)?.reshape(grid.shape())?;
        Ok((Some(grad_input), Some(grad_grid)))
    }
}

/// `(input, grid, grad_out) -> [grad_input (flattened), grad_grid (flattened)]` in one flat
/// tensor; records no backward.
struct GridSampleBackward(GridSampleParams);

impl CustomOp3 for GridSampleBackward {
    fn name(&self) -> &'static str {
        "grid_sample3d-backward"
    }

    fn cpu_fwd(
        &self,
        is: &CpuStorage,
        il: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        os: &CpuStorage,
        ol: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dims, ni, ng) = self.dims(il, gl, ol)?;
        let sampling = Sampling(dims, self.0);
        let out = run_cpu(self.name(), &sampling, [(is, il), (gs, gl), (os, ol)])?;
        Ok((out, Shape::from(ni + ng)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        is: &candle_core::CudaStorage,
        il: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        os: &candle_core::CudaStorage,
        ol: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (dims, ni, ng) = self.dims(il, gl, ol)?;
        let out = crate::cuda::grid_sample_backward((is, il), (gs, gl), (os, ol), &dims, &self.0)?;
        Ok((out, Shape::from(ni + ng)))
    }
}

impl GridSampleBackward {
    /// Dims of the input/grid pair, checking the output gradient against them, and the
    /// element counts of the input and the grid.
    fn dims(&self, il: &Layout, gl: &Layout, ol: &Layout) -> Result<(SampleDims, usize, usize)> {
        let dims = dims_of(il, gl)?;
        if ol.dims() != dims.output_shape().dims() {
            bail!(
                "{}: gradient shape {:?} does not match the output",
                CustomOp3::name(self),
                ol.dims()
            );
        }
        Ok((dims, il.shape().elem_count(), gl.shape().elem_count()))
    }
}

/// Samples `input` `[N, C, D, H, W]` at `grid` `[N, Do, Ho, Wo, 3]` → `[N, C, Do, Ho, Wo]`, as
/// PyTorch's `F.grid_sample` does on 5-D inputs. Differentiable in the input and (trilinear
/// mode) the grid. Both must share a dtype; f16/bf16 run in f32.
pub fn grid_sample3d(input: &Tensor, grid: &Tensor, p: &GridSampleParams) -> Result<Tensor> {
    SampleDims::new(input.dims(), grid.dims())?;
    if input.dtype() != grid.dtype() {
        bail!(
            "grid_sample3d: input ({:?}) and grid ({:?}) must share a dtype",
            input.dtype(),
            grid.dtype()
        );
    }
    let dtype = kernel_dtype("grid_sample3d", input.dtype())?;
    let x = input.to_dtype(dtype)?.contiguous()?;
    let g = grid.to_dtype(dtype)?.contiguous()?;
    x.apply_op2(&g, GridSample(*p))?.to_dtype(input.dtype())
}

/// Plain loops over every (batch, channel, point, corner), for testing the fast kernels.
pub mod reference {
    use super::{source_coordinate, GridSampleMode, GridSampleParams, SampleDims};
    use crate::dispatch::Float;

    /// The voxel (flat index) and weight of corner `corner` (bit 0: x high, 1: y high, 2: z
    /// high) of the sample at source coordinates `s`, or `None` outside the volume; with
    /// `dweight[a]` = d(weight)/d(s[a]).
    fn corner<T: Float>(
        s: [T; 3],
        sizes: [usize; 3],
        corner: usize,
        mode: GridSampleMode,
    ) -> Option<(usize, T, [T; 3])> {
        let mut voxel = [0usize; 3];
        let mut w = [T::one(); 3];
        let mut dw = [T::zero(); 3];
        for a in 0..3 {
            let high = (corner >> a) & 1 == 1;
            let v = match mode {
                GridSampleMode::Nearest if high => return None,
                GridSampleMode::Nearest => s[a].round_half_even(),
                GridSampleMode::Bilinear => {
                    let lo = s[a].floor();
                    if high {
                        w[a] = s[a] - lo;
                        dw[a] = T::one();
                        lo + T::one()
                    } else {
                        w[a] = lo + T::one() - s[a];
                        dw[a] = -T::one();
                        lo
                    }
                }
            };
            if !(v >= T::zero() && v < T::from_f64(sizes[a] as f64)) {
                return None;
            }
            voxel[a] = v.to_f64() as usize;
        }
        let flat = (voxel[2] * sizes[1] + voxel[1]) * sizes[0] + voxel[0];
        let weight = w[0] * w[1] * w[2];
        let grads = [
            dw[0] * w[1] * w[2],
            w[0] * dw[1] * w[2],
            w[0] * w[1] * dw[2],
        ];
        Some((flat, weight, grads))
    }

    /// Source coordinates, their grid derivatives and the axis sizes (x, y, z order) of
    /// point `pi` of batch item `b`.
    fn sample_point<T: Float>(
        grid: &[T],
        dims: &SampleDims,
        p: &GridSampleParams,
        b: usize,
        pi: usize,
    ) -> ([T; 3], [T; 3], [usize; 3]) {
        let sizes = [dims.w, dims.h, dims.d];
        let at = (b * dims.points() + pi) * 3;
        let mut s = [T::zero(); 3];
        let mut ds = [T::zero(); 3];
        for a in 0..3 {
            (s[a], ds[a]) = source_coordinate(grid[at + a], sizes[a], p);
        }
        (s, ds, sizes)
    }

    /// Forward: input `[N, C, D, H, W]`, grid `[N, P, 3]` → `[N, C, P]`.
    pub fn grid_sample3d<T: Float>(
        input: &[T],
        grid: &[T],
        dims: &SampleDims,
        p: &GridSampleParams,
    ) -> Vec<T> {
        let (points, voxels) = (dims.points(), dims.voxels());
        let mut out = vec![T::zero(); dims.n * dims.c * points];
        for b in 0..dims.n {
            for ch in 0..dims.c {
                let plane = (b * dims.c + ch) * voxels;
                for pi in 0..points {
                    let (s, _, sizes) = sample_point(grid, dims, p, b, pi);
                    let mut acc = T::zero();
                    for k in 0..8 {
                        if let Some((v, w, _)) = corner(s, sizes, k, p.mode) {
                            acc += input[plane + v] * w;
                        }
                    }
                    out[(b * dims.c + ch) * points + pi] = acc;
                }
            }
        }
        out
    }

    /// Backward: gradients `([N, C, D, H, W], [N, P, 3])` of the input and the grid given the
    /// output gradient `[N, C, P]`.
    pub fn grid_sample3d_backward<T: Float>(
        input: &[T],
        grid: &[T],
        grad_out: &[T],
        dims: &SampleDims,
        p: &GridSampleParams,
    ) -> (Vec<T>, Vec<T>) {
        let (points, voxels) = (dims.points(), dims.voxels());
        let mut grad_input = vec![T::zero(); input.len()];
        let mut grad_grid = vec![T::zero(); grid.len()];
        for b in 0..dims.n {
            for ch in 0..dims.c {
                let plane = (b * dims.c + ch) * voxels;
                for pi in 0..points {
                    let (s, ds, sizes) = sample_point(grid, dims, p, b, pi);
                    let g = grad_out[(b * dims.c + ch) * points + pi];
                    for k in 0..8 {
                        if let Some((v, w, dw)) = corner(s, sizes, k, p.mode) {
                            grad_input[plane + v] += w * g;
                            for a in 0..3 {
                                grad_grid[(b * points + pi) * 3 + a] +=
                                    input[plane + v] * g * dw[a] * ds[a];
                            }
                        }
                    }
                }
            }
        }
        (grad_input, grad_grid)
    }
}

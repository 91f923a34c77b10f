//! 3D grid sampling (PyTorch's `F.grid_sample` on 5-D inputs) with gradients for the input and
//! the grid.
//!
//! Coordinates follow PyTorch exactly: the grid's last axis holds `(x, y, z)` in [-1, 1] with `x`
//! indexing W, `y` H and `z` D; unnormalisation is `((c + 1) / 2) (size − 1)` with
//! `align_corners` and `((c + 1) size − 1) / 2` without; border padding clamps to
//! `[0, size − 1]` and, as in PyTorch, passes no gradient to the grid at or beyond the clamp;
//! nearest mode rounds half to even. A grid coordinate that is NaN samples nothing (zero).

use crate::conv::kernel_dtype;
use crate::cumulative::with_float_slices;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
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

/// Float types the sampling kernels run in.
pub trait GridFloat: WithDType + std::ops::Neg<Output = Self> {
    /// Largest integer not above `self`.
    fn floor(self) -> Self;
    /// Nearest integer, ties to even (C's `nearbyint` in the default rounding mode).
    fn round_half_even(self) -> Self;
    /// Whether `self` is neither NaN nor infinite.
    fn is_finite(self) -> bool;
}

// `floor` and `round_ties_even` are libm calls on baseline x86-64 (no SSE4.1) and dominated the
// kernels' profile. Below 2^(mantissa bits) the integer conversion is exact; at or above it
// every float is already an integer (and NaN/inf pass through unchanged).
macro_rules! impl_grid_float {
    ($t:ty, $integral_from:expr) => {
        impl GridFloat for $t {
            #[inline]
            fn floor(self) -> Self {
                if self.is_nan() || self.abs() >= $integral_from {
                    return self;
                }
                let truncated = self as i64 as $t;
                if truncated > self {
                    truncated - 1.0
                } else {
                    truncated
                }
            }
            #[inline]
            fn round_half_even(self) -> Self {
                if self.is_nan() || self.abs() >= $integral_from {
                    return self;
                }
                let lo = GridFloat::floor(self);
                // Exact: the fractional part of a float is representable.
                let frac = self - lo;
                let lo_is_even = (lo as i64) % 2 == 0;
                if frac > 0.5 || (frac == 0.5 && !lo_is_even) {
                    lo + 1.0
                } else {
                    lo
                }
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}
impl_grid_float!(f32, 8_388_608.0); // 2^23
impl_grid_float!(f64, 4_503_599_627_370_496.0); // 2^52

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
    /// Checks an input `[N, C, D, H, W]` against a grid `[N, Do, Ho, Wo, 3]`.
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
}

/// Source coordinate in voxels along an axis of `size` voxels, and its derivative with respect
/// to the normalised grid coordinate (0 where border clamping holds it).
#[inline]
fn source_coordinate<T: GridFloat>(coord: T, size: usize, p: &GridSampleParams) -> (T, T) {
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
fn in_range<T: GridFloat>(voxel: T, size: usize) -> bool {
    voxel >= T::zero() && voxel < T::from_f64(size as f64)
}

/// The voxels one axis of a sample reads: up to two, each with its weight and the weight's
/// derivative with respect to the source coordinate.
#[derive(Debug, Clone, Copy)]
struct AxisTaps<T> {
    index: [usize; 2],
    weight: [T; 2],
    dweight: [T; 2],
    count: usize,
}

impl<T: GridFloat> AxisTaps<T> {
    /// Taps for source coordinate `x` on an axis of `size` voxels; out-of-range voxels are
    /// dropped (zero padding; border coordinates are already clamped into range).
    #[inline]
    fn new(x: T, size: usize, mode: GridSampleMode) -> Self {
        let mut taps = Self {
            index: [0; 2],
            weight: [T::zero(); 2],
            dweight: [T::zero(); 2],
            count: 0,
        };
        let mut push = |voxel: T, weight: T, dweight: T| {
            if in_range(voxel, size) {
                taps.index[taps.count] = voxel.to_f64() as usize;
                taps.weight[taps.count] = weight;
                taps.dweight[taps.count] = dweight;
                taps.count += 1;
            }
        };
        match mode {
            GridSampleMode::Nearest => push(x.round_half_even(), T::one(), T::zero()),
            GridSampleMode::Bilinear => {
                let lo = x.floor();
                let hi = lo + T::one();
                push(lo, hi - x, -T::one());
                push(hi, x - lo, T::one());
            }
        }
        taps
    }

    fn iter(&self) -> impl Iterator<Item = (usize, T, T)> + '_ {
        (0..self.count).map(|i| (self.index[i], self.weight[i], self.dweight[i]))
    }
}

/// All taps of one sample, and the derivatives of its source coordinates with respect to the
/// grid coordinates.
struct PointTaps<T> {
    x: AxisTaps<T>,
    y: AxisTaps<T>,
    z: AxisTaps<T>,
    /// `d(source)/d(grid)` for x, y, z.
    scale: [T; 3],
    /// Voxel strides of the y and z axes.
    stride_y: usize,
    stride_z: usize,
}

impl<T: GridFloat> PointTaps<T> {
    /// Taps of the sample at `grid_point` = `[x, y, z]`.
    #[inline]
    fn new(grid_point: &[T], dims: &SampleDims, p: &GridSampleParams) -> Self {
        let (sx, gx) = source_coordinate(grid_point[0], dims.w, p);
        let (sy, gy) = source_coordinate(grid_point[1], dims.h, p);
        let (sz, gz) = source_coordinate(grid_point[2], dims.d, p);
        Self {
            x: AxisTaps::new(sx, dims.w, p.mode),
            y: AxisTaps::new(sy, dims.h, p.mode),
            z: AxisTaps::new(sz, dims.d, p.mode),
            scale: [gx, gy, gz],
            stride_y: dims.w,
            stride_z: dims.h * dims.w,
        }
    }

    /// Calls `f(voxel, weight, [dw/dsx, dw/dsy, dw/dsz])` for every in-range tap, in PyTorch's
    /// accumulation order (z, then y, then x; low before high).
    #[inline]
    fn for_each(&self, mut f: impl FnMut(usize, T, [T; 3])) {
        for (iz, wz, dz) in self.z.iter() {
            for (iy, wy, dy) in self.y.iter() {
                for (ix, wx, dx) in self.x.iter() {
                    let voxel = iz * self.stride_z + iy * self.stride_y + ix;
                    f(
                        voxel,
                        wx * wy * wz,
                        [dx * wy * wz, wx * dy * wz, wx * wy * dz],
                    );
                }
            }
        }
    }
}

/// Output points one forward task computes.
const POINT_TILE: usize = 512;

/// Forward kernel: input `[N, C, D, H, W]`, grid `[N, P, 3]` → `[N, C, P]`.
///
/// Parallel over (batch item, tile of points): a task computes each point's taps once and
/// applies them to every channel, writing disjoint pieces of the channel planes.
pub fn forward_kernel<T: GridFloat>(
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
    tasks.into_par_iter().for_each(|(b, first, mut pieces)| {
        let input_b = &input[b * channels * voxels..(b + 1) * channels * voxels];
        let len = pieces.first().map_or(0, |piece| piece.len());
        let mut taps: Vec<(usize, T)> = Vec::with_capacity(8);
        for i in 0..len {
            let at = (b * points + first + i) * 3;
            taps.clear();
            PointTaps::new(&grid[at..at + 3], dims, p).for_each(|v, w, _| taps.push((v, w)));
            for (piece, plane) in pieces.iter_mut().zip(input_b.chunks(voxels)) {
                let mut acc = T::zero();
                for &(v, w) in &taps {
                    acc += plane[v] * w;
                }
                piece[i] = acc;
            }
        }
    });
    out
}

/// Gradient with respect to the grid: input `[N, C, D, H, W]`, grid `[N, P, 3]`, output
/// gradient `[N, C, P]` → `[N, P, 3]` (zero in nearest mode). Parallel over points.
pub fn grid_backward_kernel<T: GridFloat>(
    input: &[T],
    grid: &[T],
    grad_out: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Vec<T> {
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    let mut grad = vec![T::zero(); grid.len()];
    if p.mode == GridSampleMode::Nearest {
        return grad;
    }
    grad.par_chunks_mut(3).enumerate().for_each(|(np, g)| {
        let (b, pi) = (np / points, np % points);
        let taps = PointTaps::new(&grid[np * 3..np * 3 + 3], dims, p);
        let mut sum = [T::zero(); 3];
        taps.for_each(|v, _, dw| {
            for ch in b * channels..(b + 1) * channels {
                let gv = grad_out[ch * points + pi] * input[ch * voxels + v];
                for (s, d) in sum.iter_mut().zip(dw) {
                    *s += gv * d;
                }
            }
        });
        for ((g, s), scale) in g.iter_mut().zip(sum).zip(taps.scale) {
            *g = s * scale;
        }
    });
    grad
}

/// Gradient with respect to the input: grid `[N, P, 3]`, output gradient `[N, C, P]` →
/// `[N, C, D, H, W]`.
///
/// Scatter-add without races: tasks own disjoint blocks of channels of one batch item and
/// compute each point's taps once per block. When there are fewer (batch, channel) planes than
/// threads, each plane's points are split further, each part summed into its own plane-sized
/// accumulator (at most about one per thread) and the parts added afterwards.
pub fn input_backward_kernel<T: GridFloat>(
    grid: &[T],
    grad_out: &[T],
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Vec<T> {
    let (points, voxels, channels) = (dims.points(), dims.voxels(), dims.c);
    let mut grad = vec![T::zero(); dims.n * channels * voxels];
    if grad.is_empty() {
        return grad;
    }
    let threads = rayon::current_num_threads().max(1);
    let block = (dims.n * channels).div_ceil(threads).clamp(1, channels);
    let tasks = dims.n * channels.div_ceil(block);
    let parts = (threads / tasks).clamp(1, points.max(1));
    // Adds the taps of points `range` for channels `first..first + count` of batch item `b`
    // into `acc` (`count` planes).
    let scatter = |b: usize, first: usize, range: std::ops::Range<usize>, acc: &mut [T]| {
        let count = acc.len() / voxels;
        for pi in range {
            let at = (b * points + pi) * 3;
            PointTaps::new(&grid[at..at + 3], dims, p).for_each(|v, w, _| {
                for k in 0..count {
                    let ch = b * channels + first + k;
                    acc[k * voxels + v] += w * grad_out[ch * points + pi];
                }
            });
        }
    };
    grad.par_chunks_mut(channels * voxels)
        .enumerate()
        .flat_map(|(b, grad_b)| {
            grad_b
                .par_chunks_mut(block * voxels)
                .enumerate()
                .map(move |(j, dst)| (b, j * block, dst))
        })
        .for_each(|(b, first, dst)| {
            if parts == 1 {
                scatter(b, first, 0..points, dst);
                return;
            }
            let per_part = points.div_ceil(parts);
            let partials: Vec<Vec<T>> = (0..parts)
                .into_par_iter()
                .map(|part| {
                    let mut acc = vec![T::zero(); dst.len()];
                    let end = ((part + 1) * per_part).min(points);
                    scatter(b, first, (part * per_part).min(end)..end, &mut acc);
                    acc
                })
                .collect();
            for acc in partials {
                for (d, a) in dst.iter_mut().zip(acc) {
                    *d += a;
                }
            }
        });
    grad
}

/// Dims of a contiguous input/grid pair (grid viewed as `[N, P, 3]`).
fn dims_of(input: &Layout, grid: &Layout) -> Result<SampleDims> {
    SampleDims::new(input.dims(), grid.dims())
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
        let out = with_float_slices!(
            "grid_sample3d",
            [(input, is, il), (grid, gs, gl)],
            forward_kernel(input, grid, &dims, &self.0)
        );
        Ok((
            out,
            Shape::from((dims.n, dims.c, dims.od, dims.oh, dims.ow)),
        ))
    }

    fn bwd(
        &self,
        input: &Tensor,
        grid: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_res = grad_res.contiguous()?;
        let dims = SampleDims::new(input.dims(), grid.dims())?;
        let grad_input =
            grid.apply_op2_no_bwd(&grad_res, &GridSampleInputBackward(self.0, dims))?;
        let grad_grid = input.apply_op3_no_bwd(grid, &grad_res, &GridSampleGridBackward(self.0))?;
        Ok((Some(grad_input), Some(grad_grid)))
    }
}

/// `(grid, grad_out) -> grad_input`; records no backward.
struct GridSampleInputBackward(GridSampleParams, SampleDims);

impl CustomOp2 for GridSampleInputBackward {
    fn name(&self) -> &'static str {
        "grid_sample3d-backward-input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        os: &CpuStorage,
        ol: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.1;
        let expected = [dims.n, dims.c, dims.od, dims.oh, dims.ow];
        if ol.dims() != expected || gl.dims() != [dims.n, dims.od, dims.oh, dims.ow, 3] {
            bail!(
                "{}: gradient shape {:?} does not match the output",
                self.name(),
                ol.dims()
            );
        }
        let out = with_float_slices!(
            self.name(),
            [(grid, gs, gl), (grad_out, os, ol)],
            input_backward_kernel(grid, grad_out, &dims, &self.0)
        );
        Ok((out, Shape::from((dims.n, dims.c, dims.d, dims.h, dims.w))))
    }
}

/// `(input, grid, grad_out) -> grad_grid`; records no backward.
struct GridSampleGridBackward(GridSampleParams);

impl CustomOp3 for GridSampleGridBackward {
    fn name(&self) -> &'static str {
        "grid_sample3d-backward-grid"
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
        let dims = dims_of(il, gl)?;
        if ol.dims() != [dims.n, dims.c, dims.od, dims.oh, dims.ow] {
            bail!(
                "{}: gradient shape {:?} does not match the output",
                self.name(),
                ol.dims()
            );
        }
        let out = with_float_slices!(
            self.name(),
            [(input, is, il), (grid, gs, gl), (grad_out, os, ol)],
            grid_backward_kernel(input, grid, grad_out, &dims, &self.0)
        );
        Ok((out, gl.shape().clone()))
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
    use super::{source_coordinate, GridFloat, GridSampleMode, GridSampleParams, SampleDims};

    /// The voxel (flat index) and weight of corner `corner` (bit 0: x high, 1: y high, 2: z
    /// high) of the sample at source coordinates `s`, or `None` outside the volume; with
    /// `dweight[a]` = d(weight)/d(s[a]).
    fn corner<T: GridFloat>(
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
    fn sample_point<T: GridFloat>(
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
    pub fn grid_sample3d<T: GridFloat>(
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
    pub fn grid_sample3d_backward<T: GridFloat>(
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

//! 3D max and average pooling for candle, with PyTorch's semantics and gradients.
//!
//! The fast forwards are separable: a box max (or sum) over `kd·kh·kw` voxels is three 1D passes
//! along W, H and D, each vectorising over the contiguous trailing axes. Max pooling's forward
//! carries each running maximum's flat input index through the passes when the input needs a
//! gradient, as PyTorch's `return_indices` does, and the backward scatters the output gradient
//! to those winners.

use crate::dispatch::{kernel_dtype, run_cpu, Float, Kernel};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::OnceLock;

/// Parameters of [`max_pool3d`] and [`avg_pool3d`], with PyTorch's names (`ceil_mode=False`).
/// Per-axis values are ordered `[D, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool3dParams {
    /// Window size `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    /// Step between windows (PyTorch's default is the kernel size).
    pub stride: [usize; 3],
    /// Implicit padding on both sides, at most half the kernel (-inf for max, zeros for average).
    pub padding: [usize; 3],
    /// Average pooling only: whether padded voxels count in the divisor (PyTorch's default: true).
    pub count_include_pad: bool,
}

impl Pool3dParams {
    /// Cubic window `kernel³`, stride and padding equal on every axis, padding counted in
    /// averages (PyTorch's defaults).
    pub fn cubic(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel: [kernel; 3],
            stride: [stride; 3],
            padding: [padding; 3],
            count_include_pad: true,
        }
    }
}

/// Sizes of one pooling: `planes` independent `[D, H, W]` volumes (batch × channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Number of independent volumes, `N·C`.
    pub planes: usize,
    /// Input spatial size `[D, H, W]`.
    pub input: [usize; 3],
    /// Output spatial size `[Do, Ho, Wo]`.
    pub output: [usize; 3],
    /// Window size.
    pub kernel: [usize; 3],
    /// Step between windows.
    pub stride: [usize; 3],
    /// Implicit padding on both sides, at most half the window.
    pub padding: [usize; 3],
}

impl PoolGeometry {
    fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    fn output_volume(&self) -> usize {
        self.output.iter().product()
    }

    /// Input range `[lo, hi)` covered by window `o` along `axis`, clipped to the input; never
    /// empty because the padding is at most half the kernel.
    pub fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let start = o * self.stride[axis];
        let lo = start.saturating_sub(self.padding[axis]);
        let hi = (start + self.kernel[axis])
            .saturating_sub(self.padding[axis])
            .min(self.input[axis]);
        (lo, hi)
    }

    /// Number of voxels averaged by window `o` along `axis`: the clipped window, or with
    /// `count_include_pad` the window clipped to the padded input instead.
    pub fn divisor(&self, axis: usize, o: usize, count_include_pad: bool) -> usize {
        if count_include_pad {
            let start = o * self.stride[axis];
            let end = (start + self.kernel[axis]).min(self.input[axis] + 2 * self.padding[axis]);
            end - start
        } else {
            let (lo, hi) = self.window(axis, o);
            hi - lo
        }
    }
}

/// 3D max pooling, as PyTorch's `max_pool3d` (`ceil_mode=False`, dilation 1).
///
/// `x`: `[N, C, D, H, W]` (or unbatched `[C, D, H, W]`); returns `[N, C, Do, Ho, Wo]` with
/// `Do = (D + 2·padding - kernel) / stride + 1`. The gradient goes to the first maximum of each
/// window in `(kd, kh, kw)` order (the last NaN where the window holds one). When `x` is tracked
/// for gradients the CPU forward records the winners, kept until the graph is dropped: one byte
/// per output for windows of up to 256 voxels, else a `u32` index (4 bytes); a `[D, H, W]`
/// volume must then hold fewer than 2^32 voxels.
pub fn max_pool3d(x: &Tensor, p: &Pool3dParams) -> Result<Tensor> {
    pool("max_pool3d", x, p, |t, g| {
        t.apply_op1(MaxPool {
            geometry: g,
            save_indices: t.track_op(),
            indices: OnceLock::new(),
        })
    })
}

/// 3D average pooling, as PyTorch's `avg_pool3d` (`ceil_mode=False`, no divisor override).
///
/// `x`: `[N, C, D, H, W]` (or unbatched `[C, D, H, W]`); returns `[N, C, Do, Ho, Wo]`.
pub fn avg_pool3d(x: &Tensor, p: &Pool3dParams) -> Result<Tensor> {
    pool("avg_pool3d", x, p, |t, g| {
        t.apply_op1(AvgPool {
            geometry: g,
            count_include_pad: p.count_include_pad,
            backward: false,
        })
    })
}

/// `max_pool3d(LeakyReLU(x + bias))` with a per-channel `bias` `[C]` (`x`: `[N, C, D, H, W]`),
/// as one CPU op for f32 and f64 and a slope ≥ 0: each volume is biased and activated into a
/// worker's buffer and pooled from there, so neither the biased nor the activated tensor is
/// ever kept. The backward needs only the recorded winners and the output: the activation's
/// slope at a winner is read from the output's sign (`y > 0` exactly where `x + bias > 0`, for
/// a slope ≥ 0), and the bias gradient is the per-channel sum of the scaled output gradient.
///
/// Outputs and winners are those of the composition [`bias_leaky_relu_max_pool3d_reference`];
/// gradients agree with it up to rounding (each output's gradient is scaled before, not
/// after, the sum at a shared winner). Why: ConvDeconv's first scale at 256³ input kept its
/// activated `[64, 128³]` tensor (512 MiB) only as the pooling's input. Other devices, dtypes
/// and negative slopes run that composition.
pub fn bias_leaky_relu_max_pool3d(
    x: &Tensor,
    bias: &Tensor,
    slope: f64,
    p: &Pool3dParams,
) -> Result<Tensor> {
    const OP: &str = "bias_leaky_relu_max_pool3d";
    if x.rank() != 5 {
        candle_core::bail!(
            "{OP}: input must have rank 5 [N, C, D, H, W], got {:?}",
            x.dims()
        );
    }
    let channels = crate::channelwise::channels(OP, x, bias)?;
    let fused = crate::channelwise::fusable(x, &[bias]) && slope >= 0.0 && slope.is_finite();
    if !fused {
        return bias_leaky_relu_max_pool3d_reference(x, bias, slope, p);
    }
    pool(OP, x, p, |x, geometry| {
        x.contiguous()?.apply_op2(
            &bias.contiguous()?,
            BiasLeakyMaxPool {
                geometry,
                channels,
                slope,
                save_winners: x.track_op() || bias.track_op(),
                winners: OnceLock::new(),
            },
        )
    })
}

/// The composition [`bias_leaky_relu_max_pool3d`] replaces and is checked against:
/// [`bias_leaky_relu`](crate::channelwise::bias_leaky_relu) (PyTorch's gradient at 0 and NaN,
/// which the plain `maximum` of its own reference does not give), then [`max_pool3d`]; any
/// device and dtype.
pub fn bias_leaky_relu_max_pool3d_reference(
    x: &Tensor,
    bias: &Tensor,
    slope: f64,
    p: &Pool3dParams,
) -> Result<Tensor> {
    max_pool3d(&crate::channelwise::bias_leaky_relu(x, bias, slope)?, p)
}

/// Validates the shapes, computes the geometry and runs `f` in the kernel dtype.
fn pool(
    op: &str,
    x: &Tensor,
    p: &Pool3dParams,
    f: impl FnOnce(&Tensor, PoolGeometry) -> Result<Tensor>,
) -> Result<Tensor> {
    let dims = x.dims();
    if !(4..=5).contains(&dims.len()) {
        candle_core::bail!(
            "{op}: input must have rank 5 [N, C, D, H, W] or 4 [C, D, H, W], got shape {dims:?}"
        );
    }
    let (lead, spatial) = dims.split_at(dims.len() - 3);
    let input = [spatial[0], spatial[1], spatial[2]];
    // As PyTorch: padding could make an empty axis's output non-empty, but its windows would hold
    // no voxel at all.
    if input.contains(&0) {
        candle_core::bail!("{op}: input spatial dims {input:?} must be positive");
    }
    let mut output = [0; 3];
    for a in 0..3 {
        let (k, s, pad) = (p.kernel[a], p.stride[a], p.padding[a]);
        if k == 0 || s == 0 {
            candle_core::bail!(
                "{op}: kernel {:?} and stride {:?} must be positive",
                p.kernel,
                p.stride
            );
        }
        if pad > k / 2 {
            candle_core::bail!(
                "{op}: padding {pad} along axis {a} must be at most half the kernel size {k}"
            );
        }
        // `2·pad ≤ k` cannot overflow; the padded extent can.
        let padded = input[a].checked_add(2 * pad);
        output[a] = match padded {
            Some(padded) if padded >= k => (padded - k) / s + 1,
            None => candle_core::bail!("{op}: padding {pad} along axis {a} is too large"),
            _ => candle_core::bail!(
                "{op}: output size along axis {a} would be zero or negative: input {} + 2·padding {pad} < kernel {k}",
                input[a]
            ),
        };
    }
    let geometry = PoolGeometry {
        planes: lead.iter().product(),
        input,
        output,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
    };
    let dtype = kernel_dtype(op, x.dtype())?;
    f(&x.to_dtype(dtype)?, geometry)?.to_dtype(x.dtype())
}

/// Result dims of a pooling pass that maps `in_dims` (`[..., D, H, W]`) to `spatial`.
fn with_spatial(in_dims: &[usize], spatial: [usize; 3]) -> Shape {
    let lead = &in_dims[..in_dims.len().saturating_sub(3)];
    Shape::from([lead, &spatial[..]].concat())
}

/// Checks that `layout` is `planes` volumes of `spatial` voxels.
fn check_layout(op: &str, layout: &Layout, planes: usize, spatial: [usize; 3]) -> Result<()> {
    let dims = layout.dims();
    let ok = dims.len() >= 3
        && dims[dims.len() - 3..] == spatial
        && dims[..dims.len() - 3].iter().product::<usize>() == planes;
    if !ok {
        candle_core::bail!(
            "{op}: operand shape {dims:?}, expected {planes} volumes of {spatial:?}"
        );
    }
    Ok(())
}

/// Runs the one-operand CPU kernel `kernel` of op `name` on `planes` volumes of `from` voxels,
/// giving as many volumes of `to` voxels.
fn run_pool_pass(
    name: &str,
    kernel: &impl Kernel<1>,
    (s, l): (&CpuStorage, &Layout),
    planes: usize,
    [from, to]: [[usize; 3]; 2],
) -> Result<(CpuStorage, Shape)> {
    check_layout(name, l, planes, from)?;
    let out = run_cpu(name, kernel, [(s, l)])?;
    Ok((out, with_spatial(l.dims(), to)))
}

/// Visits the element ranges of one pooling pass along `axis` of `dims` volumes (row-major, so
/// each output row along `axis` is a contiguous run of the trailing axes' elements).
///
/// `visit(seed, dst, src)` receives equal-length ranges of the pass's output and input: first,
/// with `seed` true, each output row paired with the first input row of its window; then, with
/// `seed` false, every later row of each window, window offsets in increasing order. Applying a
/// running reduction in visit order therefore scans each window in order, once per voxel. With
/// stride 1, consecutive output rows read consecutive input rows and are visited as one range.
/// Only output rows `outs` (of `0..g.output[axis]`) are visited.
fn axis_pass(
    dims: [usize; 3],
    axis: usize,
    g: &PoolGeometry,
    outs: Range<usize>,
    mut visit: impl FnMut(bool, Range<usize>, Range<usize>),
) {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let (len, out_len) = (dims[axis], g.output[axis]);
    let (kernel, stride, pad) = (g.kernel[axis], g.stride[axis], g.padding[axis]);
    for b in 0..outer {
        let (dst0, src0) = (b * out_len, b * len);
        // Output rows `o0..o1` read input rows `o·stride + k - pad`, all in range, except that at
        // offset 0 windows starting in the padding begin at input row 0.
        let mut rows = |seed: bool, o0: usize, o1: usize, k: usize| {
            let (o0, o1) = (o0.max(outs.start), o1.min(outs.end));
            let clipped = if k == 0 {
                pad.div_ceil(stride).min(o1)
            } else {
                o0
            };
            for o in o0..clipped {
                let dst = (dst0 + o) * inner..(dst0 + o + 1) * inner;
                visit(seed, dst, src0 * inner..(src0 + 1) * inner);
            }
            let o0 = o0.max(clipped);
            if o0 >= o1 {
                return;
            }
            let src_row = |o: usize| src0 + o * stride + k - pad;
            if stride == 1 {
                let dst = (dst0 + o0) * inner..(dst0 + o1) * inner;
                visit(
                    seed,
                    dst,
                    src_row(o0) * inner..(src_row(o1 - 1) + 1) * inner,
                );
            } else {
                for o in o0..o1 {
                    let dst = (dst0 + o) * inner..(dst0 + o + 1) * inner;
                    visit(seed, dst, src_row(o) * inner..(src_row(o) + 1) * inner);
                }
            }
        };
        rows(true, 0, out_len, 0);
        // Offset k ≥ 1 reads row o·stride + k - pad of every window where that row lies in
        // 1..len (row 0 is never past a window's first row).
        for k in 1..kernel {
            let o0 = (pad + 1).saturating_sub(k).div_ceil(stride);
            let o1 = (len + pad).saturating_sub(k).div_ceil(stride).min(out_len);
            rows(false, o0, o1, k);
        }
    }
}

/// Whether `v` replaces the running maximum `best`: PyTorch's rule, a larger value or a NaN, so
/// the first maximum of a window wins and NaN propagates (the last NaN).
#[inline(always)]
fn takes_over<T: Float>(best: T, v: T) -> bool {
    // Non-short-circuit `|`: no branch, so the callers' loops vectorise.
    (v > best) | v.is_nan()
}

/// One pass of a running reduction `step` over `src` into `dst`, for output rows `outs`.
fn fold_axis<T: Float>(
    src: &[T],
    dims: [usize; 3],
    axis: usize,
    g: &PoolGeometry,
    outs: Range<usize>,
    dst: &mut [T],
    step: impl Fn(T, T) -> T,
) {
    axis_pass(dims, axis, g, outs, |seed, d, s| {
        if seed {
            dst[d].copy_from_slice(&src[s]);
        } else {
            for (acc, &v) in dst[d].iter_mut().zip(&src[s]) {
                *acc = step(*acc, v);
            }
        }
    })
}

/// The running maximum of one pass over `src`, for output rows `outs`; the winners' plane
/// indices are carried from `src_idx` to `dst_idx` when `indices` is given.
fn max_axis<T: Float>(
    src: &[T],
    dims: [usize; 3],
    axis: usize,
    g: &PoolGeometry,
    outs: Range<usize>,
    dst: &mut [T],
    indices: Option<(&[u32], &mut [u32])>,
) {
    let Some((src_idx, dst_idx)) = indices else {
        let max = |best, v| if takes_over(best, v) { v } else { best };
        return fold_axis(src, dims, axis, g, outs, dst, max);
    };
    axis_pass(dims, axis, g, outs, |seed, d, s| {
        if seed {
            dst[d.clone()].copy_from_slice(&src[s.clone()]);
            dst_idx[d].copy_from_slice(&src_idx[s]);
        } else {
            let best = dst[d.clone()].iter_mut().zip(&mut dst_idx[d]);
            for ((best, best_i), (&v, &i)) in best.zip(src[s.clone()].iter().zip(&src_idx[s])) {
                let take = takes_over(*best, v);
                // The index by mask: two `if` selects in one loop stay scalar branches.
                let mask = u32::from(take).wrapping_neg();
                *best_i = (i & mask) | (*best_i & !mask);
                *best = if take { v } else { *best };
            }
        }
    })
}

/// The adjoint of a summing [`fold_axis`]: adds each row of `src` (the pass's output side) to every input
/// row of its window in `dst` (the input side, `dims`), which must start at zero.
fn spread_axis<T: Float>(
    src: &[T],
    dims: [usize; 3],
    axis: usize,
    g: &PoolGeometry,
    dst: &mut [T],
) {
    axis_pass(dims, axis, g, 0..g.output[axis], |_, d, s| {
        for (acc, &v) in dst[s].iter_mut().zip(&src[d]) {
            *acc += v;
        }
    })
}

/// The buffers between the separable passes, made once per worker and reused for every volume
/// it pools: one depth slice after the W pass (`[H, Wo]`) and the whole volume after the H
/// pass (`[D, Ho, Wo]`).
struct Scratch<T> {
    w: Vec<T>,
    h: Vec<T>,
    /// Winner indices after W and after H: empty unless indices are recorded.
    w_idx: Vec<u32>,
    h_idx: Vec<u32>,
}

impl<T: Float> Scratch<T> {
    fn new(g: &PoolGeometry, indices: bool) -> Self {
        let [d, h, _] = g.input;
        let [_, oh, ow] = g.output;
        let (w, h) = (h * ow, d * oh * ow);
        let index_buffer = |n: usize| if indices { vec![0; n] } else { Vec::new() };
        Self {
            w: vec![T::zero(); w],
            h: vec![T::zero(); h],
            w_idx: index_buffer(w),
            h_idx: index_buffer(h),
        }
    }
}

/// Drives the separable pooling of one volume slice by slice: `slice(scratch, id)` pools input
/// depth slice `id` along W and H into its slice of `scratch.h`; then `depth(scratch, outs)`
/// pools along D the output slices `outs` whose windows end at that slice. Each pass so reads
/// data that the previous one has just written, still in cache.
fn stream_slices<T: Float>(
    g: &PoolGeometry,
    scratch: &mut Scratch<T>,
    mut slice: impl FnMut(&mut Scratch<T>, usize),
    mut depth: impl FnMut(&mut Scratch<T>, Range<usize>),
) {
    let mut next = 0;
    for id in 0..g.input[0] {
        slice(scratch, id);
        let first = next;
        while next < g.output[0] && g.window(0, next).1 == id + 1 {
            next += 1;
        }
        if next > first {
            depth(scratch, first..next);
        }
    }
}

/// Separable max pooling of one volume `x` into `y`. With `indices = (iota, idx)`, where `iota`
/// holds `0..volume` and `scratch` was made with indices, also records in `idx` each output's
/// winner as a flat index into the volume.
fn max_pool_volume<T: Float>(
    g: &PoolGeometry,
    scratch: &mut Scratch<T>,
    x: &[T],
    y: &mut [T],
    indices: Option<(&[u32], &mut [u32])>,
) {
    let [d, h, w] = g.input;
    let [_, oh, ow] = g.output;
    let (slice_in, slice_out) = (h * w, oh * ow);
    let (ws, hs) = (0..ow, 0..oh);
    let at = |id: usize, n: usize| id * n..(id + 1) * n;
    match indices {
        None => stream_slices(
            g,
            scratch,
            |s, id| {
                let x = &x[at(id, slice_in)];
                max_axis(x, [1, h, w], 2, g, ws.clone(), &mut s.w, None);
                let h_slice = &mut s.h[at(id, slice_out)];
                max_axis(&s.w, [1, h, ow], 1, g, hs.clone(), h_slice, None);
            },
            |s, outs| max_axis(&s.h, [d, oh, ow], 0, g, outs, y, None),
        ),
        Some((iota, idx)) => stream_slices(
            g,
            scratch,
            |s, id| {
                let (x, iota) = (&x[at(id, slice_in)], &iota[at(id, slice_in)]);
                let w_pass = Some((iota, &mut s.w_idx[..]));
                max_axis(x, [1, h, w], 2, g, ws.clone(), &mut s.w, w_pass);
                let h_slice = &mut s.h[at(id, slice_out)];
                let h_pass = Some((&s.w_idx[..], &mut s.h_idx[at(id, slice_out)]));
                max_axis(&s.w, [1, h, ow], 1, g, hs.clone(), h_slice, h_pass);
            },
            |s, outs| {
                let d_pass = Some((&s.h_idx[..], &mut idx[..]));
                max_axis(&s.h, [d, oh, ow], 0, g, outs, y, d_pass);
            },
        ),
    }
}

/// Separable pooling of one volume `x` into `y` by window sums, as [`max_pool_volume`].
fn sum_pool_volume<T: Float>(g: &PoolGeometry, scratch: &mut Scratch<T>, x: &[T], y: &mut [T]) {
    let [d, h, w] = g.input;
    let [_, oh, ow] = g.output;
    let (slice_in, slice_out) = (h * w, oh * ow);
    let add = |a: T, b: T| a + b;
    stream_slices(
        g,
        scratch,
        |s, id| {
            let x = &x[id * slice_in..(id + 1) * slice_in];
            fold_axis(x, [1, h, w], 2, g, 0..ow, &mut s.w, add);
            let h_slice = &mut s.h[id * slice_out..(id + 1) * slice_out];
            fold_axis(&s.w, [1, h, ow], 1, g, 0..oh, h_slice, add);
        },
        |s, outs| fold_axis(&s.h, [d, oh, ow], 0, g, outs, y, add),
    );
}

/// Divisor of every output voxel, `[Do, Ho, Wo]`, as a product of per-axis counts.
fn divisors<T: Float>(g: &PoolGeometry, count_include_pad: bool) -> Vec<T> {
    let per_axis: Vec<Vec<usize>> = (0..3)
        .map(|a| {
            (0..g.output[a])
                .map(|o| g.divisor(a, o, count_include_pad))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(g.output_volume());
    for &dd in &per_axis[0] {
        for &dh in &per_axis[1] {
            for &dw in &per_axis[2] {
                out.push(T::from_f64((dd * dh * dw) as f64));
            }
        }
    }
    out
}

/// Fast max pooling forward: `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
pub fn max_pool_forward<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<T> {
    max_pool_planes(g, x, None, None).0
}

/// Fast max pooling forward that also records each output's winner (the voxel its gradient
/// goes to) as a flat index into its `[D, H, W]` volume: `[planes, Do, Ho, Wo]` values and
/// indices. An error when a volume holds more voxels than a `u32` index can address.
pub fn max_pool_forward_with_indices<T: Float>(
    g: &PoolGeometry,
    x: &[T],
) -> Result<(Vec<T>, Vec<u32>)> {
    Ok(max_pool_planes(g, x, Some(&flat_indices(g)?), None))
}

/// `0..volume`, the flat index of every voxel of one `[D, H, W]` volume, from which the passes
/// of [`max_pool_volume`] carry the winners; an error when a volume holds more voxels than a
/// `u32` index can address.
fn flat_indices(g: &PoolGeometry) -> Result<Vec<u32>> {
    let Ok(volume) = u32::try_from(g.input_volume()) else {
        candle_core::bail!(
            "max_pool3d: volumes of {:?} voxels exceed the 2^32 that a winner's index can address",
            g.input
        );
    };
    Ok((0..volume).collect())
}

/// A function applied to each `[D, H, W]` volume before it is pooled: `map(plane, x, out)`
/// writes the mapped values of volume `plane` of the input into `out`.
type PlaneMap<'a, T> = &'a (dyn Fn(usize, &[T], &mut [T]) + Sync);

/// Max pools every volume of `x` (mapped first by `map`, when given), in parallel over volumes:
/// the outputs and, with `iota` (from [`flat_indices`]), each output's winner as a flat index
/// into its volume (empty without).
fn max_pool_planes<T: Float>(
    g: &PoolGeometry,
    x: &[T],
    iota: Option<&[u32]>,
    map: Option<PlaneMap<'_, T>>,
) -> (Vec<T>, Vec<u32>) {
    let (in_vol, out_vol) = (g.input_volume(), g.output_volume());
    let mut y = vec![T::zero(); g.planes * out_vol];
    let mut idx = vec![0u32; if iota.is_some() { y.len() } else { 0 }];
    if y.is_empty() {
        return (y, idx);
    }
    // One (possibly empty) winner slice per volume, so both cases share one parallel loop.
    let idx_planes: Vec<&mut [u32]> = match iota {
        Some(_) => idx.chunks_mut(out_vol).collect(),
        None => (0..g.planes).map(|_| <&mut [u32]>::default()).collect(),
    };
    y.par_chunks_mut(out_vol)
        .zip(idx_planes)
        .zip(x.par_chunks(in_vol))
        .enumerate()
        .for_each_init(
            || {
                let mapped = vec![T::zero(); if map.is_some() { in_vol } else { 0 }];
                (Scratch::new(g, iota.is_some()), mapped)
            },
            |(scratch, mapped), (plane, ((yp, ip), xp))| {
                let src = match map {
                    Some(map) => {
                        map(plane, xp, mapped);
                        &mapped[..]
                    }
                    None => xp,
                };
                max_pool_volume(g, scratch, src, yp, iota.map(|iota| (iota, ip)));
            },
        );
    (y, idx)
}

/// Calls `f(output index, flat index of its window's first voxel)` for every output of one
/// plane, in order; the origin is signed because windows start in the padding.
fn for_each_window_origin(g: &PoolGeometry, mut f: impl FnMut(usize, isize)) {
    let [_, h, w] = g.input.map(|v| v as isize);
    let start = |axis: usize, o: usize| (o * g.stride[axis]) as isize - g.padding[axis] as isize;
    let mut o = 0;
    for od in 0..g.output[0] {
        let plane_origin = start(0, od) * h * w;
        for oh in 0..g.output[1] {
            let row_origin = plane_origin + start(1, oh) * w;
            for ow in 0..g.output[2] {
                f(o, row_origin + start(2, ow));
                o += 1;
            }
        }
    }
}

/// The winners a max pooling forward recorded for its backward. Where a window holds at most
/// 256 voxels and fits the input along H and W, each winner is kept as one byte, its place
/// `(jd·kh + jh)·kw + jw` in its window (ConvDeconv's 3³ windows at 256³: 180 MiB of winners
/// instead of 720 as `u32` indices); otherwise as flat `u32` volume indices.
enum Winners {
    /// Places in the window, `[planes, Do, Ho, Wo]`, and each place's offset from the window's
    /// first voxel in the flat volume.
    InWindow {
        places: Vec<u8>,
        offsets: Vec<isize>,
    },
    /// Flat volume indices, `[planes, Do, Ho, Wo]`.
    Flat(Vec<u32>),
}

impl Winners {
    /// Compacts the flat indices of [`max_pool_forward_with_indices`] where the window allows.
    fn new(g: &PoolGeometry, flat: Vec<u32>) -> Self {
        let [kd, kh, kw] = g.kernel;
        let [_, h, w] = g.input;
        if kd * kh * kw > 256 || kh > h || kw > w {
            return Self::Flat(flat);
        }
        // With kh ≤ H and kw ≤ W, distinct places of a window are distinct flat offsets.
        let offsets: Vec<isize> = (0..kd)
            .flat_map(|jd| (0..kh).flat_map(move |jh| (0..kw).map(move |jw| (jd, jh, jw))))
            .map(|(jd, jh, jw)| ((jd * h + jh) * w + jw) as isize)
            .collect();
        let span = offsets.last().map_or(0, |&last| last as usize + 1);
        let mut place_of = vec![0u8; span];
        for (place, &offset) in offsets.iter().enumerate() {
            place_of[offset as usize] = place as u8;
        }
        let vol = g.output_volume();
        let mut places = vec![0u8; flat.len()];
        places
            .par_chunks_mut(vol.max(1))
            .zip(flat.par_chunks(vol.max(1)))
            .for_each(|(pp, fp)| {
                for_each_window_origin(g, |o, origin| {
                    pp[o] = place_of[(fp[o] as isize - origin) as usize];
                });
            });
        Self::InWindow { places, offsets }
    }

    /// `dx[planes, D, H, W]` from `dy[planes, Do, Ho, Wo]`: each output's gradient added at
    /// its winner.
    fn scatter<T: Float>(&self, g: &PoolGeometry, dy: &[T]) -> Vec<T> {
        scatter_planes(g, dy, |plane, dyp, dxp| {
            self.scatter_plane(g, plane, dyp, dxp)
        })
    }

    /// Adds each output gradient `dy[Do, Ho, Wo]` of volume `plane` at its winner in that
    /// volume's `dx[D, H, W]`.
    fn scatter_plane<T: Float>(&self, g: &PoolGeometry, plane: usize, dy: &[T], dx: &mut [T]) {
        let vol = g.output_volume();
        match self {
            Self::Flat(indices) => add_at(&indices[plane * vol..(plane + 1) * vol], dy, dx),
            Self::InWindow { places, offsets } => {
                let places = &places[plane * vol..(plane + 1) * vol];
                for_each_window_origin(g, |o, origin| {
                    dx[(origin + offsets[places[o] as usize]) as usize] += dy[o];
                });
            }
        }
    }
}

/// `dx[planes, D, H, W]`, zeroed, then `scatter(plane, dy of the plane, dx of the plane)` for
/// every volume in parallel.
fn scatter_planes<T: Float>(
    g: &PoolGeometry,
    dy: &[T],
    scatter: impl Fn(usize, &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut dx = vec![T::zero(); g.planes * g.input_volume()];
    if dx.is_empty() || dy.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(g.input_volume())
        .zip(dy.par_chunks(g.output_volume()))
        .enumerate()
        .for_each(|(plane, (dxp, dyp))| scatter(plane, dyp, dxp));
    dx
}

/// `dx[winners[o]] += dy[o]` for every output `o` of one volume.
fn add_at<T: Float>(winners: &[u32], dy: &[T], dx: &mut [T]) {
    for (&i, &d) in winners.iter().zip(dy) {
        dx[i as usize] += d;
    }
}

/// Max pooling backward from recorded winners: `dx[planes, D, H, W]` with each
/// `dy[planes, Do, Ho, Wo]` added at its winner's flat index.
pub fn max_pool_scatter<T: Float>(g: &PoolGeometry, indices: &[u32], dy: &[T]) -> Vec<T> {
    let vol = g.output_volume();
    scatter_planes(g, dy, |plane, dyp, dxp| {
        add_at(&indices[plane * vol..(plane + 1) * vol], dyp, dxp)
    })
}

/// Max pooling backward without recorded winners: finds them again from `x` (the first maximum
/// of each window in `(kd, kh, kw)` order, or the last NaN), then scatters `dy` to them. An
/// error where [`max_pool_forward_with_indices`] is one.
pub fn max_pool_backward<T: Float>(g: &PoolGeometry, x: &[T], dy: &[T]) -> Result<Vec<T>> {
    Ok(max_pool_scatter(
        g,
        &max_pool_forward_with_indices(g, x)?.1,
        dy,
    ))
}

/// Fast average pooling forward: `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
pub fn avg_pool_forward<T: Float>(g: &PoolGeometry, x: &[T], count_include_pad: bool) -> Vec<T> {
    let mut y = vec![T::zero(); g.planes * g.output_volume()];
    if y.is_empty() {
        return y;
    }
    let div = divisors::<T>(g, count_include_pad);
    y.par_chunks_mut(g.output_volume())
        .zip(x.par_chunks(g.input_volume()))
        .for_each_init(
            || Scratch::new(g, false),
            |scratch, (yp, xp)| {
                sum_pool_volume(g, scratch, xp, yp);
                for (o, &d) in yp.iter_mut().zip(&div) {
                    *o /= d;
                }
            },
        );
    y
}

/// Fast average pooling backward: `dx[planes, D, H, W]` from `dy[planes, Do, Ho, Wo]`.
pub fn avg_pool_backward<T: Float>(g: &PoolGeometry, dy: &[T], count_include_pad: bool) -> Vec<T> {
    let mut dx = vec![T::zero(); g.planes * g.input_volume()];
    if dx.is_empty() || dy.is_empty() {
        return dx;
    }
    let div = divisors::<T>(g, count_include_pad);
    let [d, h, _] = g.input;
    let [_, oh, ow] = g.output;
    dx.par_chunks_mut(g.input_volume())
        .zip(dy.par_chunks(g.output_volume()))
        .for_each_init(
            || {
                let buffer = |n: usize| vec![T::zero(); n];
                (
                    buffer(g.output_volume()),
                    buffer(d * oh * ow),
                    buffer(d * h * ow),
                )
            },
            |(scaled, h_pass, w_pass), (dxp, dyp)| {
                for ((s, &v), &q) in scaled.iter_mut().zip(dyp).zip(&div) {
                    *s = v / q;
                }
                // The adjoints of the D, H and W passes, each adding into zeros.
                h_pass.fill(T::zero());
                w_pass.fill(T::zero());
                spread_axis(scaled, [d, oh, ow], 0, g, h_pass);
                spread_axis(h_pass, [d, h, ow], 1, g, w_pass);
                spread_axis(w_pass, g.input, 2, g, dxp);
            },
        );
    dx
}

/// Plain per-voxel pooling loops: the yardstick for the fast kernels.
pub mod reference {
    use super::PoolGeometry;
    use crate::dispatch::Float;

    /// Calls `f(plane, output index, input index)` for every valid voxel of every window, in
    /// `(kd, kh, kw)` order.
    fn for_each_window_voxel(g: &PoolGeometry, mut f: impl FnMut(usize, usize, usize)) {
        let [d, h, w] = g.input;
        let [od_n, oh_n, ow_n] = g.output;
        let [kd_n, kh_n, kw_n] = g.kernel;
        let index = |o: usize, k: usize, a: usize| {
            (o * g.stride[a] + k)
                .checked_sub(g.padding[a])
                .filter(|&i| i < g.input[a])
        };
        for plane in 0..g.planes {
            for od in 0..od_n {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let o = ((plane * od_n + od) * oh_n + oh) * ow_n + ow;
                        for kd in 0..kd_n {
                            for kh in 0..kh_n {
                                for kw in 0..kw_n {
                                    if let (Some(id), Some(ih), Some(iw)) =
                                        (index(od, kd, 0), index(oh, kh, 1), index(ow, kw, 2))
                                    {
                                        f(plane, o, ((plane * d + id) * h + ih) * w + iw);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Index of the winning input voxel of every output voxel.
    fn argmax<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<Option<usize>> {
        let mut best: Vec<Option<usize>> =
            vec![None; g.planes * g.output.iter().product::<usize>()];
        for_each_window_voxel(g, |_, o, i| {
            best[o] = match best[o] {
                // PyTorch's rule: a larger value or a NaN takes over.
                Some(b) if !(x[i] > x[b] || x[i].is_nan()) => Some(b),
                _ => Some(i),
            };
        });
        best
    }

    /// Max pooling forward, `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
    pub fn max_pool_forward<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<T> {
        argmax(g, x)
            .into_iter()
            .map(|i| i.map_or(T::zero(), |i| x[i]))
            .collect()
    }

    /// Max pooling backward: each `dy` goes to its window's winner.
    pub fn max_pool_backward<T: Float>(g: &PoolGeometry, x: &[T], dy: &[T]) -> Vec<T> {
        let mut dx = vec![T::zero(); x.len()];
        for (o, i) in argmax(g, x).into_iter().enumerate() {
            if let Some(i) = i {
                dx[i] += dy[o];
            }
        }
        dx
    }

    /// Divisor of output voxel `o` (flat index within a plane).
    fn divisor(g: &PoolGeometry, o: usize, count_include_pad: bool) -> f64 {
        let [_, oh_n, ow_n] = g.output;
        let (od, oh, ow) = (o / (oh_n * ow_n), (o / ow_n) % oh_n, o % ow_n);
        (g.divisor(0, od, count_include_pad)
            * g.divisor(1, oh, count_include_pad)
            * g.divisor(2, ow, count_include_pad)) as f64
    }

    /// Average pooling forward, `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
    pub fn avg_pool_forward<T: Float>(
        g: &PoolGeometry,
        x: &[T],
        count_include_pad: bool,
    ) -> Vec<T> {
        let per_plane: usize = g.output.iter().product();
        let mut y = vec![T::zero(); g.planes * per_plane];
        for_each_window_voxel(g, |_, o, i| y[o] += x[i]);
        for (o, v) in y.iter_mut().enumerate() {
            *v /= T::from_f64(divisor(g, o % per_plane, count_include_pad));
        }
        y
    }

    /// Average pooling backward: `dx[planes, D, H, W]` from `dy[planes, Do, Ho, Wo]`.
    pub fn avg_pool_backward<T: Float>(
        g: &PoolGeometry,
        dy: &[T],
        count_include_pad: bool,
    ) -> Vec<T> {
        let per_plane: usize = g.output.iter().product();
        let mut dx = vec![T::zero(); g.planes * g.input.iter().product::<usize>()];
        for_each_window_voxel(g, |_, o, i| {
            dx[i] += dy[o] / T::from_f64(divisor(g, o % per_plane, count_include_pad))
        });
        dx
    }
}

/// Max pooling forward as a candle op. When `save_indices` is set (the input is tracked for
/// gradients) the CPU forward records each output's winner and the backward scatters to them
/// ([`MaxPoolScatter`]); after the CUDA forward, which records none, the backward finds the
/// winners again ([`MaxPoolBackward`]).
struct MaxPool {
    geometry: PoolGeometry,
    save_indices: bool,
    /// The winners recorded by the CPU forward.
    indices: OnceLock<Winners>,
}

impl Kernel<1> for MaxPool {
    fn run<T: Float>(&self, [x]: [&[T]; 1]) -> Result<Vec<T>> {
        let winners = self.save_indices.then_some(&self.indices);
        pool_and_record("max_pool3d", &self.geometry, x, winners, None)
    }
}

/// Max pools `x` (each volume mapped by `map` first, when given) and, with `winners`, records
/// each output's winner there; an error if that cell was already set (an op instance's forward
/// runs once).
fn pool_and_record<T: Float>(
    op: &str,
    g: &PoolGeometry,
    x: &[T],
    winners: Option<&OnceLock<Winners>>,
    map: Option<PlaneMap<'_, T>>,
) -> Result<Vec<T>> {
    let Some(cell) = winners else {
        return Ok(max_pool_planes(g, x, None, map).0);
    };
    let (y, flat) = max_pool_planes(g, x, Some(&flat_indices(g)?), map);
    if cell.set(Winners::new(g, flat)).is_err() {
        candle_core::bail!("{op}: an op instance ran its forward twice");
    }
    Ok(y)
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        run_pool_pass(self.name(), self, (s, l), g.planes, [g.input, g.output])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geometry;
        check_layout(self.name(), l, g.planes, g.input)?;
        let out = crate::cuda::max_pool_forward(s, l, g)?;
        Ok((out, with_spatial(l.dims(), g.output)))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let geometry = self.geometry;
        let dx = match self.indices.get() {
            Some(indices) => grad.apply_op1_no_bwd(&MaxPoolScatter { geometry, indices })?,
            None => x.apply_op3_no_bwd(y, grad, &MaxPoolBackward { geometry })?,
        };
        Ok(Some(dx))
    }
}

/// `dy → dx` of max pooling, from the winners its CPU forward recorded.
struct MaxPoolScatter<'a> {
    geometry: PoolGeometry,
    indices: &'a Winners,
}

impl Kernel<1> for MaxPoolScatter<'_> {
    fn run<T: Float>(&self, [dy]: [&[T]; 1]) -> Result<Vec<T>> {
        Ok(self.indices.scatter(&self.geometry, dy))
    }
}

impl CustomOp1 for MaxPoolScatter<'_> {
    fn name(&self) -> &'static str {
        "max_pool3d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        run_pool_pass(self.name(), self, (s, l), g.planes, [g.output, g.input])
    }
}

/// `(x, y, dy) → dx` of max pooling.
struct MaxPoolBackward {
    geometry: PoolGeometry,
}

impl MaxPoolBackward {
    /// Checks that `x` holds the input and `y`, `dy` the output volumes.
    fn check_layouts(&self, x: &Layout, y: &Layout, dy: &Layout) -> Result<()> {
        let (g, name) = (&self.geometry, self.name());
        check_layout(name, x, g.planes, g.input)?;
        check_layout(name, y, g.planes, g.output)?;
        check_layout(name, dy, g.planes, g.output)
    }
}

impl Kernel<3> for MaxPoolBackward {
    /// On the CPU the winners are found again from `x`; `y` serves the CUDA kernel only.
    fn run<T: Float>(&self, [x, _y, dy]: [&[T]; 3]) -> Result<Vec<T>> {
        max_pool_backward(&self.geometry, x, dy)
    }
}

impl CustomOp3 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max_pool3d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check_layouts(l1, l2, l3)?;
        let out = run_cpu(self.name(), self, [(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.check_layouts(l1, l2, l3)?;
        let out = crate::cuda::max_pool_backward((s1, l1), (s2, l2), (s3, l3), &self.geometry)?;
        Ok((out, l1.shape().clone()))
    }
}

/// The fused op of [`bias_leaky_relu_max_pool3d`] on `(x, bias)`; with `save_winners` (an
/// operand is tracked for gradients) the forward records each output's winner.
struct BiasLeakyMaxPool {
    geometry: PoolGeometry,
    channels: usize,
    slope: f64,
    save_winners: bool,
    winners: OnceLock<Winners>,
}

impl Kernel<2> for BiasLeakyMaxPool {
    fn run<T: Float>(&self, [x, bias]: [&[T]; 2]) -> Result<Vec<T>> {
        let (g, channels) = (&self.geometry, self.channels);
        let (zero, slope) = (T::zero(), T::from_f64(self.slope));
        let activate = |plane: usize, x: &[T], out: &mut [T]| {
            let b = bias[plane % channels];
            for (o, &x) in out.iter_mut().zip(x) {
                let v = x + b;
                // As `bias_leaky_relu`'s forward, so the pooled values are bit for bit its.
                *o = if v > zero { v } else { v * slope };
            }
        };
        let winners = self.save_winners.then_some(&self.winners);
        pool_and_record(self.name(), g, x, winners, Some(&activate))
    }
}

impl CustomOp2 for BiasLeakyMaxPool {
    fn name(&self) -> &'static str {
        "bias_leaky_relu_max_pool3d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        check_layout(self.name(), xl, g.planes, g.input)?;
        let out = run_cpu(self.name(), self, [(xs, xl), (bs, bl)])?;
        Ok((out, with_spatial(xl.dims(), g.output)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(winners) = self.winners.get() else {
            candle_core::bail!("bias_leaky_relu_max_pool3d: backward without recorded winners");
        };
        let packed = y.apply_op2_no_bwd(
            &grad.contiguous()?,
            &BiasLeakyMaxPoolGrad {
                geometry: self.geometry,
                channels: self.channels,
                slope: self.slope,
                winners,
            },
        )?;
        let (dx, dbias) = crate::channelwise::unpack_grads(&packed, x.shape(), bias.elem_count())?;
        Ok((Some(dx), Some(dbias)))
    }
}

/// The backward of [`BiasLeakyMaxPool`] on `(y, dy)`: `[dx (flattened), dbias]`, where each
/// output's gradient, scaled by the activation's slope at its winner, is added at the winner
/// and summed per channel.
struct BiasLeakyMaxPoolGrad<'a> {
    geometry: PoolGeometry,
    channels: usize,
    slope: f64,
    winners: &'a Winners,
}

impl Kernel<2> for BiasLeakyMaxPoolGrad<'_> {
    fn run<T: Float>(&self, [y, dy]: [&[T]; 2]) -> Result<Vec<T>> {
        let (g, channels) = (&self.geometry, self.channels);
        let (in_vol, out_vol) = (g.input_volume(), g.output_volume());
        let (zero, slope) = (T::zero(), T::from_f64(self.slope));
        let mut out = vec![zero; g.planes * in_vol + channels];
        let (dx, dbias) = out.split_at_mut(g.planes * in_vol);
        if in_vol == 0 || out_vol == 0 {
            return Ok(out);
        }
        let sums: Vec<f64> = dx
            .par_chunks_mut(in_vol)
            .zip(y.par_chunks(out_vol).zip(dy.par_chunks(out_vol)))
            .enumerate()
            .map_init(
                || vec![zero; out_vol],
                |scaled, (plane, (dxp, (yp, dyp)))| {
                    for ((s, &y), &d) in scaled.iter_mut().zip(yp).zip(dyp) {
                        *s = if y > zero { d } else { d * slope };
                    }
                    self.winners.scatter_plane(g, plane, scaled, dxp);
                    crate::channelwise::lane_sum(scaled)
                },
            )
            .collect();
        dbias.copy_from_slice(&crate::channelwise::channel_totals(&sums, channels));
        Ok(out)
    }
}

impl CustomOp2 for BiasLeakyMaxPoolGrad<'_> {
    fn name(&self) -> &'static str {
        "bias_leaky_relu_max_pool3d-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        check_layout(self.name(), yl, g.planes, g.output)?;
        check_layout(self.name(), gl, g.planes, g.output)?;
        let out = run_cpu(self.name(), self, [(ys, yl), (gs, gl)])?;
        Ok((
            out,
            Shape::from(g.planes * g.input_volume() + self.channels),
        ))
    }
}

/// Average pooling forward (`backward: false`) or its adjoint; each is the other's backward.
#[derive(Clone, Copy)]
struct AvgPool {
    geometry: PoolGeometry,
    count_include_pad: bool,
    backward: bool,
}

impl AvgPool {
    /// Checks that `l` holds this pass's source volumes and returns the result shape.
    fn result_shape(&self, l: &Layout) -> Result<Shape> {
        let g = &self.geometry;
        let (from, to) = if self.backward {
            (g.output, g.input)
        } else {
            (g.input, g.output)
        };
        check_layout(self.name(), l, g.planes, from)?;
        Ok(with_spatial(l.dims(), to))
    }
}

impl Kernel<1> for AvgPool {
    /// This pass on the CPU: `[planes, from volume]` values to `[planes, to volume]`.
    fn run<T: Float>(&self, [v]: [&[T]; 1]) -> Result<Vec<T>> {
        let (g, inc) = (&self.geometry, self.count_include_pad);
        Ok(if self.backward {
            avg_pool_backward(g, v, inc)
        } else {
            avg_pool_forward(g, v, inc)
        })
    }
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        if self.backward {
            "avg_pool3d-backward"
        } else {
            "avg_pool3d"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = self.result_shape(l)?;
        let out = run_cpu(self.name(), self, [(s, l)])?;
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let shape = self.result_shape(l)?;
        let out =
            crate::cuda::avg_pool(s, l, &self.geometry, self.count_include_pad, self.backward)?;
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.apply_op1(AvgPool {
            backward: !self.backward,
            ..*self
        })?))
    }
}

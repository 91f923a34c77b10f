//! Fast CPU convolution kernels: vol2col + gemm, tiled over output rows so the column buffer
//! stays small and cache-resident, with rayon over samples (large batches) or inside each sample.
//! Unit-stride input gradients run as the forward of the flipped convolution ([`flipped`]), so
//! col2vol's scattered adds are left to strided layers; where output planes are shifted input
//! planes (SAME convolutions) vol2col copies whole planes ([`fill_shifted`]). f32 layers with
//! few output channels run the direct kernels of [`super::direct`] instead (forward and weight
//! gradient); this is their plain path.
//!
//! Pure functions over contiguous slices and a [`ConvGeometry`], so a GPU port can mirror them.

use super::{direct, ConvGeometry};
use crate::dispatch::Float;
use candle_core::Result;
use rayon::prelude::*;
use std::any::TypeId;

/// Target size of one column tile. Small enough that vol2col writes it and the gemm reads it
/// back from cache (a whole column matrix would be 27× the input for 3³ kernels and go through
/// memory twice), large enough that each gemm call amortises its packing.
const COL_TILE_BYTES: usize = 1 << 20;

/// Least number of output voxels per tile: with many input channels the cache-sized tile would
/// be a few columns wide, and the weight-gradient gemm (whose inner dimension is this width)
/// would spend its time re-reading the whole weight gradient.
const MIN_TILE_COLUMNS: usize = 512;

/// Below this many output channels (per group) the forward runs the direct kernel where it
/// applies, else its gemm transposed (see [`forward_gemm`]); with more, the weight fills gemm's
/// register tiles and the usual orientation is faster (ConvDeconv's 256→512 layers).
const FEW_OUTPUT_CHANNELS: usize = 64;

/// Hard cap on one column tile, whatever the layer.
const COL_MAX_BYTES: usize = 64 << 20;

/// A strided matrix inside a slice: element `(r, c)` is at `offset + r·row_stride + c·col_stride`.
#[derive(Debug, Clone, Copy)]
struct MatView {
    offset: usize,
    row_stride: usize,
    col_stride: usize,
}

impl MatView {
    fn new(offset: usize, row_stride: usize, col_stride: usize) -> Self {
        Self {
            offset,
            row_stride,
            col_stride,
        }
    }

    /// Fails unless a `rows × cols` matrix fits in a slice of `len` elements, so the unsafe gemm
    /// call below can never read or write out of bounds.
    fn check(&self, len: usize, rows: usize, cols: usize) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = (rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| {
                (cols - 1)
                    .checked_mul(self.col_stride)
                    .and_then(|c| r.checked_add(c))
            })
            .and_then(|rc| rc.checked_add(self.offset));
        match last {
            Some(last) if last < len => Ok(()),
            _ => candle_core::bail!(
                "conv3d: internal error, {rows}×{cols} matrix {self:?} exceeds {len} elements"
            ),
        }
    }
}

/// `dst (+)= lhs · rhs` for `dst` m×n, `lhs` m×k and `rhs` k×n; accumulates when `accumulate`.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_view: MatView,
    accumulate: bool,
    lhs: &[T],
    lhs_view: MatView,
    rhs: &[T],
    rhs_view: MatView,
    parallel: bool,
) -> Result<()> {
    dst_view.check(dst.len(), m, n)?;
    lhs_view.check(lhs.len(), m, k)?;
    rhs_view.check(rhs.len(), k, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[dst_view.offset + r * dst_view.row_stride + c * dst_view.col_stride] =
                        T::zero();
                }
            }
        }
        return Ok(());
    }
    // SAFETY: the three views were checked above to lie inside their slices, and `dst` is
    // borrowed mutably so it aliases neither operand.
    unsafe {
        gemm_raw(
            (m, n, k),
            (dst.as_mut_ptr(), dst_view),
            accumulate,
            (lhs.as_ptr(), lhs_view),
            (rhs.as_ptr(), rhs_view),
            parallel,
        )
    };
    Ok(())
}

/// gemm on raw views: `dst (+)= lhs · rhs`, k > 0.
///
/// # Safety
/// Every element of the three m×n, m×k and k×n views must lie inside its allocation, and the
/// elements of `dst`'s view must be written by no one else while this runs and overlap neither
/// operand.
unsafe fn gemm_raw<T: Float>(
    (m, n, k): (usize, usize, usize),
    (dst, dst_view): (*mut T, MatView),
    accumulate: bool,
    (lhs, lhs_view): (*const T, MatView),
    (rhs, rhs_view): (*const T, MatView),
    parallel: bool,
) {
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; T is f32 or f64 (`Float` is sealed), which gemm
    // dispatches on. Strides fit isize because they index inside an allocation.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.add(dst_view.offset),
            dst_view.col_stride as isize,
            dst_view.row_stride as isize,
            accumulate,
            lhs.add(lhs_view.offset),
            lhs_view.col_stride as isize,
            lhs_view.row_stride as isize,
            rhs.add(rhs_view.offset),
            rhs_view.col_stride as isize,
            rhs_view.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst = lhs · rhs` (no accumulation) for `dst` m×n with unit column stride, as [`matmul`];
/// with `parallel`, the n columns are split into one range per thread, each a single-threaded
/// gemm. Pointwise layers multiply a small weight (inner size = channels, e.g. 64) by a long
/// run of voxels, where gemm's own rayon split measured slower (ConvDeconv's 64→64 1×1 layer
/// at 32³, forward + backward on 2 threads: 25.3 → 21.7 ms).
fn matmul_split_columns<T: Float>(
    (m, n, k): (usize, usize, usize),
    (dst, dst_view): (&mut [T], MatView),
    (lhs, lhs_view): (&[T], MatView),
    (rhs, rhs_view): (&[T], MatView),
    parallel: bool,
) -> Result<()> {
    let threads = rayon::current_num_threads();
    let split = parallel && threads > 1 && n >= 2 * MIN_TILE_COLUMNS && dst_view.col_stride == 1;
    if !split || m == 0 || k == 0 {
        return matmul(
            (m, n, k),
            dst,
            dst_view,
            false,
            lhs,
            lhs_view,
            rhs,
            rhs_view,
            parallel,
        );
    }
    dst_view.check(dst.len(), m, n)?;
    lhs_view.check(lhs.len(), m, k)?;
    rhs_view.check(rhs.len(), k, n)?;
    let per_range = n.div_ceil(threads);
    let starts: Vec<usize> = (0..n).step_by(per_range).collect();
    let dst = SendPtr(dst.as_mut_ptr());
    starts.into_par_iter().for_each(|c0| {
        let column =
            |v: MatView| MatView::new(v.offset + c0 * v.col_stride, v.row_stride, v.col_stride);
        // SAFETY: the views were checked above; each task writes only the columns
        // [c0, c0 + nc) of `dst`'s view, disjoint from every other task's, and `dst` was
        // borrowed mutably, so it overlaps neither operand.
        unsafe {
            gemm_raw(
                (m, per_range.min(n - c0), k),
                (dst.get(), column(dst_view)),
                false,
                (lhs.as_ptr(), lhs_view),
                (rhs.as_ptr(), column(rhs_view)),
                false,
            )
        }
    });
    Ok(())
}

/// A raw pointer that may cross threads; users guarantee disjoint writes.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only used to hand disjoint column ranges of one buffer to rayon tasks.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Whether to spread samples over threads (each sample then runs single-threaded) rather than
/// parallelising inside each sample: better when there are at least as many samples as threads.
fn samples_in_parallel(g: &ConvGeometry) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && g.batch >= threads
}

/// Output rows (one `(od, oh)` pair, `Wo` voxels each) per column tile: near
/// [`COL_TILE_BYTES`] but at least [`MIN_TILE_COLUMNS`] voxels, and never over
/// [`COL_MAX_BYTES`] (always at least one row).
fn row_tile<T>(g: &ConvGeometry) -> usize {
    let rows = g.group_in_channels() * g.kernel_volume();
    let row_bytes = (rows * g.output[2] * std::mem::size_of::<T>()).max(1);
    let wanted = (COL_TILE_BYTES / row_bytes).max(MIN_TILE_COLUMNS.div_ceil(g.output[2].max(1)));
    wanted
        .min(COL_MAX_BYTES / row_bytes)
        .clamp(1, (g.output[0] * g.output[1]).max(1))
}

/// Kernel tap `(kd, kh, kw)` of flat tap index `tap`.
fn unflatten_tap(g: &ConvGeometry, tap: usize) -> [usize; 3] {
    let [_, kh, kw] = g.kernel;
    [tap / (kh * kw), (tap / kw) % kh, tap % kw]
}

/// Splits one column row (one input channel at kernel tap `tap`, output rows
/// `r0..r0 + nr` with `r = od·Ho + oh`) into segments: `f(col_start, len, Some((input_start,
/// input_step)))` for runs that read the input channel, `f(col_start, len, None)` for runs in the
/// padding. Adjacent padding runs (the end of a row and the start of the next, whole rows in
/// the padding) are reported as one.
fn for_each_segment(
    g: &ConvGeometry,
    tap: [usize; 3],
    (r0, nr): (usize, usize),
    mut f: impl FnMut(usize, usize, Option<(usize, usize)>),
) {
    let [_, h, w] = g.input;
    let [_, oh_n, ow_n] = g.output;
    let (w_lo, w_hi) = g.valid_outputs(2, tap[2]);
    let w_start = g.input_index(2, w_lo, tap[2]).filter(|_| w_hi > w_lo);
    // Start of the padding run not yet reported, if any (it always extends to `here`).
    let mut zeros: Option<usize> = None;
    let (mut od, mut oh) = (r0 / oh_n.max(1), r0 % oh_n.max(1));
    let mut id = g.input_index(0, od, tap[0]);
    for t in 0..nr {
        let row_start = t * ow_n;
        match (id, g.input_index(1, oh, tap[1]), w_start) {
            (Some(id), Some(ih), Some(iw)) => {
                let run_start = zeros.take().unwrap_or(row_start);
                if row_start + w_lo > run_start {
                    f(run_start, row_start + w_lo - run_start, None);
                }
                f(
                    row_start + w_lo,
                    w_hi - w_lo,
                    Some(((id * h + ih) * w + iw, g.stride[2])),
                );
                if ow_n > w_hi {
                    zeros = Some(row_start + w_hi);
                }
            }
            _ => {
                zeros.get_or_insert(row_start);
            }
        }
        oh += 1;
        if oh == oh_n {
            oh = 0;
            od += 1;
            id = g.input_index(0, od, tap[0]);
        }
    }
    if let Some(start) = zeros {
        f(start, nr * ow_n - start, None);
    }
}

/// Fills `col[(c·K + tap), p]` for the group's input channels `xg` and the output rows
/// `rows = (r0, nr)`; `p` runs over the tile's `nr·Wo` output voxels.
fn vol2col<T: Float>(
    g: &ConvGeometry,
    xg: &[T],
    out_rows: (usize, usize),
    col: &mut [T],
    parallel: bool,
) {
    let row_len = out_rows.1 * g.output[2];
    let (taps, volume) = (g.kernel_volume(), g.input_volume());
    let aligned = rows_align(g);
    let fill = |(row, col_row): (usize, &mut [T])| {
        let channel = &xg[(row / taps) * volume..(row / taps + 1) * volume];
        let tap = unflatten_tap(g, row % taps);
        if aligned {
            fill_shifted(g, channel, tap, out_rows, col_row);
        } else {
            fill_segments(g, channel, tap, out_rows, col_row);
        }
    };
    if parallel {
        col.par_chunks_mut(row_len).enumerate().for_each(fill);
    } else {
        col.chunks_mut(row_len).enumerate().for_each(fill);
    }
}

/// One column row of [`vol2col`] (input channel `channel` at kernel tap `tap`), segment by
/// segment of [`for_each_segment`]: any geometry.
fn fill_segments<T: Float>(
    g: &ConvGeometry,
    channel: &[T],
    tap: [usize; 3],
    out_rows: (usize, usize),
    col_row: &mut [T],
) {
    for_each_segment(g, tap, out_rows, |start, len, src| {
        let dst = &mut col_row[start..start + len];
        match src {
            None => dst.fill(T::zero()),
            Some((i0, 1)) => dst.copy_from_slice(&channel[i0..i0 + len]),
            // Stride 2 (ConvDeconv's encoder): pairs of a known size, which vectorise.
            Some((i0, 2)) => {
                for (d, pair) in dst.iter_mut().zip(channel[i0..i0 + 2 * len - 1].chunks(2)) {
                    *d = pair[0];
                }
            }
            Some((i0, step)) => {
                for (d, &s) in dst.iter_mut().zip(channel[i0..].iter().step_by(step)) {
                    *d = s;
                }
            }
        }
    });
}

/// Whether each output plane's voxels are a shifted copy of an input plane's: unit stride along
/// H and W, and input and output of one size along both (SAME convolutions such as RenderNet's
/// residual blocks, and every flipped input gradient of one).
fn rows_align(g: &ConvGeometry) -> bool {
    g.stride[1] == 1 && g.stride[2] == 1 && g.input[1..] == g.output[1..]
}

/// What [`fill_segments`] writes, where [`rows_align`]: per output depth, one copy of the tap's
/// input plane shifted by the tap's offset (a few long copies instead of one short copy per
/// output row), then zeros over the voxels that read padding. With `H × W` planes the tile
/// position `(oh, ow)` of a depth reads input `(oh + dh, ow + dw)`, a constant shift in flat
/// indices, so the copy is exact wherever the tap is inside the input; it reads neighbouring
/// rows' voxels only where the tap is in the padding, and those are zeroed after.
fn fill_shifted<T: Float>(
    g: &ConvGeometry,
    channel: &[T],
    tap: [usize; 3],
    (r0, nr): (usize, usize),
    col_row: &mut [T],
) {
    let [_, h, w] = g.input;
    let (h_lo, h_hi) = g.valid_outputs(1, tap[1]);
    let (w_lo, w_hi) = g.valid_outputs(2, tap[2]);
    // Flat input index of output (oh, ow) = 0 at this depth, relative to the input depth.
    let offset = |axis: usize| (tap[axis] * g.dilation[axis]) as isize - g.pad[axis] as isize;
    let (dh, dw) = (offset(1), offset(2));
    let (end, mut r) = (r0 + nr, r0);
    while r < end {
        let (od, oh0) = (r / h, r % h);
        let oh1 = h.min(oh0 + end - r);
        let block = &mut col_row[(r - r0) * w..(r - r0 + oh1 - oh0) * w];
        let lo = h_lo.clamp(oh0, oh1);
        let hi = h_hi.clamp(lo, oh1);
        match g.input_index(0, od, tap[0]) {
            Some(id) if hi > lo && w_hi > w_lo => {
                block[..(lo - oh0) * w].fill(T::zero());
                block[(hi - oh0) * w..].fill(T::zero());
                let rows = &mut block[(lo - oh0) * w..(hi - oh0) * w];
                let shift = ((id * h + lo) * w) as isize + dh * w as isize + dw;
                let first = (-shift).max(0) as usize;
                let last = (channel.len() as isize - shift).clamp(0, rows.len() as isize) as usize;
                if last > first {
                    let src = (shift + first as isize) as usize;
                    rows[first..last].copy_from_slice(&channel[src..src + last - first]);
                }
                for row in rows.chunks_mut(w) {
                    row[..w_lo].fill(T::zero());
                    row[w_hi..].fill(T::zero());
                }
            }
            _ => block.fill(T::zero()),
        }
        r += oh1 - oh0;
    }
}

/// Adds the column tile back into the group's input channels `dxg`: the adjoint of [`vol2col`].
fn col2vol<T: Float>(
    g: &ConvGeometry,
    col: &[T],
    out_rows: (usize, usize),
    dxg: &mut [T],
    parallel: bool,
) {
    let row_len = out_rows.1 * g.output[2];
    let taps = g.kernel_volume();
    // Parallel over channels: the rows of one channel only ever write into that channel.
    let add = |(c, channel): (usize, &mut [T])| {
        for tap in 0..taps {
            let row = c * taps + tap;
            let col_row = &col[row * row_len..(row + 1) * row_len];
            for_each_segment(g, unflatten_tap(g, tap), out_rows, |start, len, src| {
                if let Some((i0, step)) = src {
                    for (d, &s) in channel[i0..]
                        .iter_mut()
                        .step_by(step)
                        .zip(&col_row[start..start + len])
                    {
                        *d += s;
                    }
                }
            });
        }
    };
    if parallel {
        dxg.par_chunks_mut(g.input_volume())
            .enumerate()
            .for_each(add);
    } else {
        dxg.chunks_mut(g.input_volume()).enumerate().for_each(add);
    }
}

/// Calls `f(group, (r0, nr), col)` for every group and tile of output rows of one sample, with
/// `col` sized `[C/groups · K, nr·Wo]`.
fn for_each_tile<T: Float>(
    g: &ConvGeometry,
    mut f: impl FnMut(usize, (usize, usize), &mut [T]) -> Result<()>,
) -> Result<()> {
    let tile = row_tile::<T>(g);
    let rows = g.group_in_channels() * g.kernel_volume();
    let (out_rows, wo) = (g.output[0] * g.output[1], g.output[2]);
    let mut col = vec![T::zero(); rows * tile * wo];
    for group in 0..g.groups {
        for r0 in (0..out_rows).step_by(tile) {
            let nr = tile.min(out_rows - r0);
            f(group, (r0, nr), &mut col[..rows * nr * wo])?;
        }
    }
    Ok(())
}

/// Runs `f(sample_a, sample_b, sample_out, parallel_inside)` over the samples, in parallel
/// across samples or sequentially with parallel work inside each.
fn for_each_sample<T: Float>(
    g: &ConvGeometry,
    (a, a_len): (&[T], usize),
    (out, out_len): (&mut [T], usize),
    f: impl Fn(&[T], &mut [T], bool) -> Result<()> + Sync,
) -> Result<()> {
    if a_len == 0 || out_len == 0 {
        out.fill(T::zero());
        return Ok(());
    }
    if samples_in_parallel(g) {
        out.par_chunks_mut(out_len)
            .zip(a.par_chunks(a_len))
            .try_for_each(|(o, s)| f(s, o, false))
    } else {
        out.chunks_mut(out_len)
            .zip(a.chunks(a_len))
            .try_for_each(|(o, s)| f(s, o, true))
    }
}

/// Convolution forward: `y[N, O, Do, Ho, Wo]` from `x[N, C, D, H, W]` and
/// `w[O, C/groups, kd, kh, kw]`, all contiguous.
pub fn forward<T: Float>(g: &ConvGeometry, x: &[T], w: &[T], y: &mut [T]) -> Result<()> {
    if let (Some(x), Some(w), Some(y)) = (as_f32(x), as_f32(w), as_f32_mut(y)) {
        // Direct kernel: RenderNet's 32→32 3³ forward 163 → 100 ms CPU (module doc of `direct`).
        if direct::applies(g, FEW_OUTPUT_CHANNELS) {
            return for_each_sample(
                g,
                (x, g.in_channels * g.input_volume()),
                (y, g.out_channels * g.output_volume()),
                |xs, ys, par| {
                    direct::forward(g, xs, w, ys, par);
                    Ok(())
                },
            );
        }
    }
    forward_gemm(g, x, w, y)
}

/// `data` as f32, when `T` is f32.
fn as_f32<T: Float>(data: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same type id), so the cast is the identity.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len()) })
}

/// `data` as f32, when `T` is f32.
fn as_f32_mut<T: Float>(data: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (same type id), so the cast is the identity.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), data.len()) })
}

/// The forward as vol2col + gemm, for every geometry and dtype.
fn forward_gemm<T: Float>(g: &ConvGeometry, x: &[T], w: &[T], y: &mut [T]) -> Result<()> {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let (in_vol, out_vol) = (g.input_volume(), g.output_volume());
    let rows = cg * g.kernel_volume();
    for_each_sample(
        g,
        (x, g.in_channels * in_vol),
        (y, g.out_channels * out_vol),
        |xs, ys, par| {
            if g.is_pointwise() {
                for group in 0..g.groups {
                    matmul_split_columns(
                        (og, out_vol, cg),
                        (ys, MatView::new(group * og * out_vol, out_vol, 1)),
                        (w, MatView::new(group * og * cg, cg, 1)),
                        (xs, MatView::new(group * cg * in_vol, in_vol, 1)),
                        par,
                    )?;
                }
                return Ok(());
            }
            for_each_tile(g, |group, (r0, nr), col| {
                let xg = &xs[group * cg * in_vol..(group + 1) * cg * in_vol];
                vol2col(g, xg, (r0, nr), col, par);
                let p = col.len() / rows;
                let y_view = MatView::new(group * og * out_vol + r0 * g.output[2], out_vol, 1);
                let (w_view, col_view) = (
                    MatView::new(group * og * rows, rows, 1),
                    MatView::new(0, p, 1),
                );
                if og < FEW_OUTPUT_CHANNELS {
                    // As `yᵀ = colᵀ · wᵀ`: the column tile is then gemm's column-major left
                    // operand, read in place rather than packed, and the tile's voxels fill
                    // whole register tiles however few the output channels.
                    let t = |v: MatView| MatView::new(v.offset, v.col_stride, v.row_stride);
                    matmul(
                        (p, og, rows),
                        ys,
                        t(y_view),
                        false,
                        col,
                        t(col_view),
                        w,
                        t(w_view),
                        par,
                    )
                } else {
                    matmul(
                        (og, p, rows),
                        ys,
                        y_view,
                        false,
                        w,
                        w_view,
                        col,
                        col_view,
                        par,
                    )
                }
            })
        },
    )
}

/// The convolution whose forward is `g`'s input gradient, where `g` has unit stride, is not
/// pointwise and pads no more than its dilated kernel's reach `dilation·(k − 1)` before each
/// axis: the correlation of `dy` with the kernel flipped in space and transposed in channels
/// ([`flip_weight`]), padded by `dilation·(k − 1) − pad` before each axis. Its vol2col copies
/// runs of `dy`, where the general input gradient's col2vol adds every column back into `dx`.
fn flipped(g: &ConvGeometry) -> Option<ConvGeometry> {
    if g.stride != [1; 3] || g.is_pointwise() {
        return None;
    }
    let mut pad = [0; 3];
    for (a, p) in pad.iter_mut().enumerate() {
        *p = (g.dilation[a] * (g.kernel[a] - 1)).checked_sub(g.pad[a])?;
    }
    Some(ConvGeometry {
        in_channels: g.out_channels,
        out_channels: g.in_channels,
        input: g.output,
        output: g.input,
        pad,
        ..*g
    })
}

/// `g`'s weight `[O, C/groups, K]` as the weight of [`flipped`]`(g)`, `[C, O/groups, K]`:
/// `w'[group·cg + c, o, K − 1 − t] = w[group·og + o, c, t]` (reversing the flat tap index
/// reverses all three kernel axes).
fn flip_weight<T: Float>(g: &ConvGeometry, w: &[T]) -> Vec<T> {
    let (cg, og, taps) = (
        g.group_in_channels(),
        g.group_out_channels(),
        g.kernel_volume(),
    );
    let mut flipped = vec![T::zero(); w.len()];
    for group in 0..g.groups {
        for o in 0..og {
            for c in 0..cg {
                let src = ((group * og + o) * cg + c) * taps;
                let dst = ((group * cg + c) * og + o) * taps;
                for t in 0..taps {
                    flipped[dst + taps - 1 - t] = w[src + t];
                }
            }
        }
    }
    flipped
}

/// Input gradient `dx[N, C, D, H, W]` from `dy[N, O, Do, Ho, Wo]` and the weight; also the
/// forward of the transposed convolution. Unit-stride geometries run as the forward of their
/// [`flipped`] convolution; the rest as gemm + col2vol.
pub fn backward_input<T: Float>(g: &ConvGeometry, dy: &[T], w: &[T], dx: &mut [T]) -> Result<()> {
    if let Some(f) = flipped(g) {
        return forward(&f, dy, &flip_weight(g, w), dx);
    }
    backward_input_col2vol(g, dy, w, dx)
}

/// The general input gradient: gemm into column tiles, added back into `dx` by [`col2vol`].
fn backward_input_col2vol<T: Float>(
    g: &ConvGeometry,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) -> Result<()> {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let (in_vol, out_vol) = (g.input_volume(), g.output_volume());
    let rows = cg * g.kernel_volume();
    for_each_sample(
        g,
        (dy, g.out_channels * out_vol),
        (dx, g.in_channels * in_vol),
        |dys, dxs, par| {
            if g.is_pointwise() {
                for group in 0..g.groups {
                    matmul_split_columns(
                        (cg, in_vol, og),
                        (dxs, MatView::new(group * cg * in_vol, in_vol, 1)),
                        (w, MatView::new(group * og * cg, 1, cg)),
                        (dys, MatView::new(group * og * out_vol, out_vol, 1)),
                        par,
                    )?;
                }
                return Ok(());
            }
            dxs.fill(T::zero());
            for_each_tile(g, |group, (r0, nr), col| {
                let p = col.len() / rows;
                matmul(
                    (rows, p, og),
                    col,
                    MatView::new(0, p, 1),
                    false,
                    w,
                    MatView::new(group * og * rows, 1, rows),
                    dys,
                    MatView::new(group * og * out_vol + r0 * g.output[2], out_vol, 1),
                    par,
                )?;
                col2vol(
                    g,
                    col,
                    (r0, nr),
                    &mut dxs[group * cg * in_vol..(group + 1) * cg * in_vol],
                    par,
                );
                Ok(())
            })
        },
    )
}

/// Adds the weight gradient of the given samples into `dw[O, C/groups, kd, kh, kw]`.
fn accumulate_weight_grad<T: Float>(
    g: &ConvGeometry,
    (x, dy): (&[T], &[T]),
    dw: &mut [T],
    par: bool,
) -> Result<()> {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let (in_vol, out_vol) = (g.input_volume(), g.output_volume());
    let rows = cg * g.kernel_volume();
    let samples = x
        .chunks(g.in_channels * in_vol)
        .zip(dy.chunks(g.out_channels * out_vol));
    // Direct kernel where the forward runs one: no column tiles (module doc of `direct`).
    let direct = direct::applies(g, FEW_OUTPUT_CHANNELS);
    for (xs, dys) in samples {
        if let (true, Some(xs), Some(dys), Some(dw)) =
            (direct, as_f32(xs), as_f32(dys), as_f32_mut(dw))
        {
            direct::accumulate_weight_grad(g, xs, dys, dw, par);
            continue;
        }
        if g.is_pointwise() {
            pointwise_weight_grad(g, (xs, dys), dw, par)?;
            continue;
        }
        for_each_tile(g, |group, (r0, nr), col| {
            let xg = &xs[group * cg * in_vol..(group + 1) * cg * in_vol];
            vol2col(g, xg, (r0, nr), col, par);
            let p = col.len() / rows;
            matmul(
                (og, rows, p),
                dw,
                MatView::new(group * og * rows, rows, 1),
                true,
                dys,
                MatView::new(group * og * out_vol + r0 * g.output[2], out_vol, 1),
                col,
                MatView::new(0, 1, p),
                par,
            )
        })?;
    }
    Ok(())
}

/// Adds one sample's pointwise (1×1×1, unit stride, unpadded) weight gradient into `dw`:
/// `dw_g += dy_g · x_gᵀ` per group, a product whose inner size is the voxel count. gemm
/// parallelises over output tiles, of which a 64×64 `dw` has one, so with `par` the voxels are
/// split into one range per thread, each summed into its own partial (ConvDeconv's 64→64 1×1
/// layer at 32³, forward + backward on 2 threads: 32.3 → 25.3 ms).
fn pointwise_weight_grad<T: Float>(
    g: &ConvGeometry,
    (xs, dys): (&[T], &[T]),
    dw: &mut [T],
    par: bool,
) -> Result<()> {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let vol = g.output_volume();
    let add_range = |dw: &mut [T], (v0, nv): (usize, usize)| -> Result<()> {
        for group in 0..g.groups {
            matmul(
                (og, cg, nv),
                dw,
                MatView::new(group * og * cg, cg, 1),
                true,
                dys,
                MatView::new(group * og * vol + v0, vol, 1),
                xs,
                MatView::new(group * cg * vol + v0, 1, vol),
                false,
            )?;
        }
        Ok(())
    };
    let threads = rayon::current_num_threads();
    if !par || threads < 2 || vol < 2 * MIN_TILE_COLUMNS {
        return add_range(dw, (0, vol));
    }
    let per_range = vol.div_ceil(threads);
    let ranges = (0..vol)
        .step_by(per_range)
        .map(|v0| (v0, per_range.min(vol - v0)));
    add_partials(dw, ranges.collect(), add_range)
}

/// Adds to `dw` the sum of one zero-started partial per item, computed in parallel by `add`.
fn add_partials<T: Float, I: Send>(
    dw: &mut [T],
    items: Vec<I>,
    add: impl Fn(&mut [T], I) -> Result<()> + Sync,
) -> Result<()> {
    let partials = items
        .into_par_iter()
        .map(|item| {
            let mut partial = vec![T::zero(); dw.len()];
            add(&mut partial, item)?;
            Ok(partial)
        })
        .collect::<Result<Vec<_>>>()?;
    for partial in partials {
        for (d, p) in dw.iter_mut().zip(partial) {
            *d += p;
        }
    }
    Ok(())
}

/// Weight gradient `dw[O, C/groups, kd, kh, kw]` from `x[N, C, D, H, W]` and
/// `dy[N, O, Do, Ho, Wo]`.
pub fn backward_weight<T: Float>(g: &ConvGeometry, x: &[T], dy: &[T], dw: &mut [T]) -> Result<()> {
    dw.fill(T::zero());
    let (x_len, dy_len) = (
        g.in_channels * g.input_volume(),
        g.out_channels * g.output_volume(),
    );
    if x_len == 0 || dy_len == 0 || g.batch == 0 {
        return Ok(());
    }
    if !samples_in_parallel(g) {
        return accumulate_weight_grad(g, (x, dy), dw, true);
    }
    // One partial gradient per thread over a contiguous run of samples, then a sum.
    let threads = rayon::current_num_threads();
    let per_chunk = g.batch.div_ceil(threads);
    let runs = x
        .chunks(per_chunk * x_len)
        .zip(dy.chunks(per_chunk * dy_len))
        .collect();
    add_partials(dw, runs, |partial, run| {
        accumulate_weight_grad(g, run, partial, false)
    })
}

#[cfg(test)]
mod tests {
    use super::super::{conv3d_geometry, Conv3dParams};
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 2001) as f64 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn flipped_input_gradient_matches_col2vol() -> Result<()> {
        // (C, O, groups, input, kernel, dilation, pad before, pad after)
        let cases = [
            (
                3,
                4,
                1,
                [5, 6, 7],
                [3, 3, 3],
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
            ),
            (
                4,
                6,
                2,
                [6, 5, 8],
                [2, 3, 4],
                [2, 1, 1],
                [2, 0, 1],
                [0, 3, 2],
            ),
            (
                2,
                2,
                1,
                [4, 4, 4],
                [4, 1, 3],
                [1, 1, 2],
                [3, 0, 4],
                [0, 0, 0],
            ),
        ];
        for (c, o, groups, input, kernel, dilation, before, after) in cases {
            let p = Conv3dParams {
                stride: [1; 3],
                padding: std::array::from_fn(|a| [before[a], after[a]]),
                dilation,
                groups,
            };
            let x = [2, c, input[0], input[1], input[2]];
            let w = [o, c / groups, kernel[0], kernel[1], kernel[2]];
            let g = conv3d_geometry(x, w, &p)?;
            assert!(flipped(&g).is_some(), "{g:?}");
            let dy = values(g.batch * o * g.output_volume(), 1);
            let w = values(o * (c / groups) * g.kernel_volume(), 2);
            let n = g.batch * c * g.input_volume();
            let (mut fast, mut plain) = (vec![0.0; n], vec![0.0; n]);
            backward_input(&g, &dy, &w, &mut fast)?;
            backward_input_col2vol(&g, &dy, &w, &mut plain)?;
            for (i, (a, b)) in fast.iter().zip(&plain).enumerate() {
                assert!((a - b).abs() < 1e-12, "{g:?} at {i}: {a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn shifted_plane_copies_match_segments() {
        // (input [D, H, W], kernel, dilation, pad, depth stride): output H, W = input H, W.
        let cases = [
            ([5, 4, 6], [3, 3, 3], [1, 1, 1], [1, 1, 1], 1),
            ([4, 5, 3], [2, 4, 3], [1, 1, 2], [0, 2, 3], 2),
            ([1, 6, 6], [1, 3, 3], [1, 2, 1], [0, 2, 1], 1),
            ([3, 2, 2], [3, 5, 5], [1, 1, 1], [1, 2, 2], 1),
        ];
        for (input, kernel, dilation, pad, sd) in cases {
            let depth = (input[0] + 2 * pad[0] - dilation[0] * (kernel[0] - 1) - 1) / sd + 1;
            let g = ConvGeometry {
                batch: 1,
                in_channels: 1,
                out_channels: 1,
                groups: 1,
                input,
                output: [depth, input[1], input[2]],
                kernel,
                stride: [sd, 1, 1],
                dilation,
                pad,
            };
            assert!(rows_align(&g), "{g:?}");
            let channel = values(g.input_volume(), 3);
            let out_rows = depth * input[1];
            for t in 0..g.kernel_volume() {
                let tap = unflatten_tap(&g, t);
                for (r0, nr) in [(0, out_rows), (1, out_rows - 1), (0, 1), (2, out_rows / 2)] {
                    let len = nr * input[2];
                    let (mut fast, mut plain) = (vec![f64::NAN; len], vec![f64::NAN; len]);
                    fill_shifted(&g, &channel, tap, (r0, nr), &mut fast);
                    fill_segments(&g, &channel, tap, (r0, nr), &mut plain);
                    assert_eq!(fast, plain, "{g:?} tap {tap:?} rows {r0}+{nr}");
                }
            }
        }
    }

    #[test]
    fn forward_matches_reference_in_both_gemm_orientations() -> Result<()> {
        for out_channels in [FEW_OUTPUT_CHANNELS - 1, FEW_OUTPUT_CHANNELS] {
            let g = ConvGeometry {
                batch: 2,
                in_channels: 3,
                out_channels,
                groups: 1,
                input: [4, 5, 3],
                output: [2, 5, 3],
                kernel: [3, 3, 3],
                stride: [2, 1, 1],
                dilation: [1; 3],
                pad: [1; 3],
            };
            let x = values(g.batch * 3 * g.input_volume(), 4);
            let w = values(out_channels * 3 * g.kernel_volume(), 5);
            let mut y = vec![0.0; g.batch * out_channels * g.output_volume()];
            forward(&g, &x, &w, &mut y)?;
            let want = super::super::reference::conv3d_forward(&g, &x, &w);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-12,
                    "{out_channels} channels at {i}: {a} vs {b}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn padding_beyond_the_kernel_reach_is_not_flipped() {
        let g = ConvGeometry {
            batch: 1,
            in_channels: 1,
            out_channels: 1,
            groups: 1,
            input: [4; 3],
            output: [8; 3],
            kernel: [3; 3],
            stride: [1; 3],
            dilation: [1; 3],
            pad: [3; 3],
        };
        assert!(flipped(&g).is_none());
        assert!(flipped(&ConvGeometry { pad: [2; 3], ..g }).is_some());
        assert!(flipped(&ConvGeometry {
            stride: [1, 2, 1],
            ..g
        })
        .is_none());
    }
}

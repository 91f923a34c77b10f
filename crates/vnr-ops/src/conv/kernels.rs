//! Fast CPU convolution kernels: vol2col + gemm, tiled over output rows so the column buffer
//! stays small and cache-resident, with rayon over samples (large batches) or inside each sample.
//!
//! Pure functions over contiguous slices and a [`ConvGeometry`], so a GPU port can mirror them.

use super::ConvGeometry;
use candle_core::{Result, WithDType};
use rayon::prelude::*;

/// Target size of one column tile. Small enough that vol2col writes it and the gemm reads it
/// back from cache (a whole column matrix would be 27× the input for 3³ kernels and go through
/// memory twice), large enough that each gemm call amortises its packing.
const COL_TILE_BYTES: usize = 1 << 20;

/// Least number of output voxels per tile: with many input channels the cache-sized tile would
/// be a few columns wide, and the weight-gradient gemm (whose inner dimension is this width)
/// would spend its time re-reading the whole weight gradient.
const MIN_TILE_COLUMNS: usize = 512;

/// Hard cap on one column tile, whatever the layer.
const COL_MAX_BYTES: usize = 64 << 20;

/// Element types the gemm kernels run on (crate-private, so only f32 and f64 ever reach the
/// unsafe gemm call).
pub trait GemmElement: WithDType {}
impl GemmElement for f32 {}
impl GemmElement for f64 {}

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
fn matmul<T: GemmElement>(
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
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three views were checked above to lie inside their slices, `dst` is borrowed
    // mutably so it aliases neither operand, and T is f32 or f64 (GemmElement), which gemm
    // dispatches on. Strides fit isize because they index inside an allocated slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_view.offset),
            dst_view.col_stride as isize,
            dst_view.row_stride as isize,
            accumulate,
            lhs.as_ptr().add(lhs_view.offset),
            lhs_view.col_stride as isize,
            lhs_view.row_stride as isize,
            rhs.as_ptr().add(rhs_view.offset),
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
    Ok(())
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
/// padding.
fn for_each_segment(
    g: &ConvGeometry,
    tap: [usize; 3],
    (r0, nr): (usize, usize),
    mut f: impl FnMut(usize, usize, Option<(usize, usize)>),
) {
    let [_, h, w] = g.input;
    let [_, oh_n, ow_n] = g.output;
    let (w_lo, w_hi) = g.valid_outputs(2, tap[2]);
    let w_start = g.input_index(2, w_lo, tap[2]);
    for t in 0..nr {
        let row_start = t * ow_n;
        let (od, oh) = ((r0 + t) / oh_n, (r0 + t) % oh_n);
        let (Some(id), Some(ih), Some(iw)) = (
            g.input_index(0, od, tap[0]),
            g.input_index(1, oh, tap[1]),
            w_start,
        ) else {
            f(row_start, ow_n, None);
            continue;
        };
        if w_lo > 0 {
            f(row_start, w_lo, None);
        }
        if w_hi > w_lo {
            f(
                row_start + w_lo,
                w_hi - w_lo,
                Some(((id * h + ih) * w + iw, g.stride[2])),
            );
        }
        if ow_n > w_hi {
            f(row_start + w_hi, ow_n - w_hi, None);
        }
    }
}

/// Fills `col[(c·K + tap), p]` for the group's input channels `xg` and the output rows
/// `rows = (r0, nr)`; `p` runs over the tile's `nr·Wo` output voxels.
fn vol2col<T: GemmElement>(
    g: &ConvGeometry,
    xg: &[T],
    out_rows: (usize, usize),
    col: &mut [T],
    parallel: bool,
) {
    let row_len = out_rows.1 * g.output[2];
    let (taps, volume) = (g.kernel_volume(), g.input_volume());
    let fill = |(row, col_row): (usize, &mut [T])| {
        let channel = &xg[(row / taps) * volume..(row / taps + 1) * volume];
        for_each_segment(
            g,
            unflatten_tap(g, row % taps),
            out_rows,
            |start, len, src| {
                let dst = &mut col_row[start..start + len];
                match src {
                    None => dst.fill(T::zero()),
                    Some((i0, 1)) => dst.copy_from_slice(&channel[i0..i0 + len]),
                    Some((i0, step)) => {
                        for (d, &s) in dst.iter_mut().zip(channel[i0..].iter().step_by(step)) {
                            *d = s;
                        }
                    }
                }
            },
        );
    };
    if parallel {
        col.par_chunks_mut(row_len).enumerate().for_each(fill);
    } else {
        col.chunks_mut(row_len).enumerate().for_each(fill);
    }
}

/// Adds the column tile back into the group's input channels `dxg`: the adjoint of [`vol2col`].
fn col2vol<T: GemmElement>(
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
fn for_each_tile<T: GemmElement>(
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
fn for_each_sample<T: GemmElement>(
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
pub fn forward<T: GemmElement>(g: &ConvGeometry, x: &[T], w: &[T], y: &mut [T]) -> Result<()> {
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
                    matmul(
                        (og, out_vol, cg),
                        ys,
                        MatView::new(group * og * out_vol, out_vol, 1),
                        false,
                        w,
                        MatView::new(group * og * cg, cg, 1),
                        xs,
                        MatView::new(group * cg * in_vol, in_vol, 1),
                        par,
                    )?;
                }
                return Ok(());
            }
            for_each_tile(g, |group, (r0, nr), col| {
                let xg = &xs[group * cg * in_vol..(group + 1) * cg * in_vol];
                vol2col(g, xg, (r0, nr), col, par);
                let p = col.len() / rows;
                matmul(
                    (og, p, rows),
                    ys,
                    MatView::new(group * og * out_vol + r0 * g.output[2], out_vol, 1),
                    false,
                    w,
                    MatView::new(group * og * rows, rows, 1),
                    col,
                    MatView::new(0, p, 1),
                    par,
                )
            })
        },
    )
}

/// Input gradient `dx[N, C, D, H, W]` from `dy[N, O, Do, Ho, Wo]` and the weight; also the
/// forward of the transposed convolution.
pub fn backward_input<T: GemmElement>(
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
                    matmul(
                        (cg, in_vol, og),
                        dxs,
                        MatView::new(group * cg * in_vol, in_vol, 1),
                        false,
                        w,
                        MatView::new(group * og * cg, 1, cg),
                        dys,
                        MatView::new(group * og * out_vol, out_vol, 1),
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
fn accumulate_weight_grad<T: GemmElement>(
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
    for (xs, dys) in samples {
        if g.is_pointwise() {
            for group in 0..g.groups {
                matmul(
                    (og, cg, out_vol),
                    dw,
                    MatView::new(group * og * cg, cg, 1),
                    true,
                    dys,
                    MatView::new(group * og * out_vol, out_vol, 1),
                    xs,
                    MatView::new(group * cg * in_vol, 1, in_vol),
                    par,
                )?;
            }
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

/// Weight gradient `dw[O, C/groups, kd, kh, kw]` from `x[N, C, D, H, W]` and
/// `dy[N, O, Do, Ho, Wo]`.
pub fn backward_weight<T: GemmElement>(
    g: &ConvGeometry,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
) -> Result<()> {
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
    let partials = x
        .par_chunks(per_chunk * x_len)
        .zip(dy.par_chunks(per_chunk * dy_len))
        .map(|(xs, dys)| {
            let mut partial = vec![T::zero(); dw.len()];
            accumulate_weight_grad(g, (xs, dys), &mut partial, false)?;
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

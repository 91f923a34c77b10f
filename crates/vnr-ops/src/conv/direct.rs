//! Direct f32 convolution for few output channels on AVX2 + FMA: no column matrix.
//!
//! The input of one sample and group is copied once into a zero-padded volume `xp[c, Dp, Hp,
//! Wp]` laid out so that output voxel `(od, oh, ow)` reads `xp[c, od·sd + kd·dd, oh + kh·dh,
//! ow + kw·dw]` at tap `(kd, kh, kw)`: every tap is then a constant offset in `xp`'s flat index,
//! and a run of output voxels along W reads a contiguous run of `xp`.
//!
//! With stride `sw` along W each padded row is stored as `sw` phases, so strided layers
//! (RenderNet's `(1, 1, 2)`) read contiguous runs too.
//!
//! - Forward ([`forward`], also every unit-stride input gradient, as the flipped convolution's
//!   forward): a register-blocked microkernel keeps `OR` output channels × `VW` vectors of 8
//!   voxels in accumulators and walks input channels and taps, so each tap's input run is
//!   loaded once per `OR` channels and the weights are broadcast from a packed `[c, tap, OR]`
//!   copy.
//! - Weight gradient ([`accumulate_weight_grad`]): `OW` output channels × `TB` taps of one input
//!   channel in accumulators, summed over tiles of output rows that stay in L2.
//!
//! Why: vol2col + gemm spent a third of its time building and re-reading column tiles and ran
//! its gemm on 32-wide operands. On RenderNet's 32→32 3³ layer (64×64×32) the forward went
//! from 163 to 100 ms of CPU (44 → 73 GFLOP per CPU-second) and forward + backward from 494 to
//! 330; on the small config's 8→8 layer (32×32×16) forward + backward from 10.9 to 2.7 ms
//! (a loaded 2-core machine, so CPU time rather than wall time).
//!
//! vol2col + gemm ([`super::kernels`]) stays the plain path beside it: f64, CPUs without
//! AVX2/FMA, rows under 8 output voxels, pointwise and wide layers, where gemm's
//! own blocking wins. The tests below and `tests/conv.rs` hold the two to the reference loops.

use super::ConvGeometry;
use rayon::prelude::*;

/// f32 lanes per AVX register.
const LANES: usize = 8;
/// Output channels per microkernel call.
const OR: usize = 4;
/// Bytes of input rows one forward microkernel call may read: half of a core's 32 KiB L1, so
/// they stay there while every block of output channels reads them (all 32 channels of
/// RenderNet's 3³ layers at once overflowed L1).
const L1_ROWS_BYTES: usize = 16 << 10;
/// Vectors of [`LANES`] output voxels along W per microkernel call.
const VW: usize = 2;
/// Output voxels along W per microkernel call.
const CHUNK: usize = LANES * VW;

/// Whether [`forward`] runs `g`: f32 on a CPU with AVX2 and FMA (any stride, dilation and
/// padding), at least one vector of output voxels per row, not pointwise (gemm reads that input
/// in place), and fewer than `max_group_out` output channels per group (wider layers fill
/// gemm's tiles).
pub(super) fn applies(g: &ConvGeometry, max_group_out: usize) -> bool {
    g.output[2] >= LANES
        && g.group_out_channels() < max_group_out
        && !g.is_pointwise()
        && has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2_fma() -> bool {
    false
}

/// Sizes of the padded input volume of one channel. With stride `sw` along W each padded row
/// is stored as `sw` phases (voxels `pw ≡ 0, 1, … mod sw`, each `sub` long), so output voxels
/// `ow, ow + 1, …` at one tap read consecutive elements of one phase.
#[derive(Debug, Clone, Copy)]
struct Padded {
    /// `[Dp, Hp, Wp]`.
    dims: [usize; 3],
    /// Elements per phase of a row, `ceil(Wp / sw)`.
    sub: usize,
    /// Elements per stored row, `sw · sub`.
    row: usize,
    /// Elements from one channel to the next: `Dp·Hp·Wp` rounded up to an odd number of
    /// 64-byte lines, so the same voxel of successive channels, which the microkernels read
    /// together, falls in different cache sets (a power-of-two stride, 32³, measured 1.6×
    /// slower).
    chan_stride: usize,
}

impl Padded {
    fn new(g: &ConvGeometry) -> Self {
        let reach = |a: usize| (g.kernel[a] - 1) * g.dilation[a];
        let dims: [usize; 3] =
            std::array::from_fn(|a| (g.output[a] - 1) * g.stride[a] + reach(a) + 1);
        let sub = dims[2].div_ceil(g.stride[2]);
        let row = sub * g.stride[2];
        Self {
            dims,
            sub,
            row,
            chan_stride: ((dims[0] * dims[1] * row).div_ceil(16) | 1) * 16,
        }
    }

    /// Flat index of padded voxel `(pd, ph, pw)` in its channel.
    fn index(&self, g: &ConvGeometry, [pd, ph, pw]: [usize; 3]) -> usize {
        (pd * self.dims[1] + ph) * self.row + (pw % g.stride[2]) * self.sub + pw / g.stride[2]
    }

    /// Flat index of the voxel that output row `r = od·Ho + oh` reads at `ow = 0`, tap 0.
    fn row_base(&self, g: &ConvGeometry, r: usize) -> usize {
        let (od, oh) = (r / g.output[1], r % g.output[1]);
        self.index(g, [od * g.stride[0], oh * g.stride[1], 0])
    }

    /// Flat offset of every kernel tap, in the weight's tap order.
    fn tap_offsets(&self, g: &ConvGeometry) -> Vec<usize> {
        let [kd, kh, kw] = g.kernel;
        let mut offsets = Vec::with_capacity(kd * kh * kw);
        for a in 0..kd {
            for b in 0..kh {
                for c in 0..kw {
                    let tap = [a * g.dilation[0], b * g.dilation[1], c * g.dilation[2]];
                    offsets.push(self.index(g, tap));
                }
            }
        }
        offsets
    }
}

/// Copies the input channels `x[C', D, H, W]` into `xp[C', Dp, Hp, Wp]` (zeros around), plus
/// [`CHUNK`] zeros of slack that the last row's partial chunk may read.
fn pad_input(g: &ConvGeometry, p: &Padded, x: &[f32], xp: &mut Vec<f32>, parallel: bool) {
    let channels = x.len() / g.input_volume();
    xp.clear();
    xp.resize(channels * p.chan_stride + CHUNK, 0.0);
    let [d, h, w] = g.input;
    let [dp, hp, wp] = p.dims;
    let copy = |(c, dst): (usize, &mut [f32])| {
        let src = &x[c * d * h * w..(c + 1) * d * h * w];
        // Input voxel i lands at i + pad where that is inside the padded volume (a strided
        // depth axis may leave trailing input depths unread).
        let w_len = w.min(wp - g.pad[2]);
        for id in (0..d).take_while(|id| id + g.pad[0] < dp) {
            for ih in (0..h).take_while(|ih| ih + g.pad[1] < hp) {
                let s = &src[(id * h + ih) * w..][..w_len];
                let t = p.index(g, [id + g.pad[0], ih + g.pad[1], g.pad[2]]);
                if g.stride[2] == 1 {
                    dst[t..t + w_len].copy_from_slice(s);
                } else {
                    for (iw, &v) in s.iter().enumerate() {
                        dst[p.index(g, [id + g.pad[0], ih + g.pad[1], iw + g.pad[2]])] = v;
                    }
                }
            }
        }
    };
    let body = &mut xp[..channels * p.chan_stride];
    if parallel {
        body.par_chunks_mut(p.chan_stride)
            .enumerate()
            .for_each(copy);
    } else {
        body.chunks_mut(p.chan_stride).enumerate().for_each(copy);
    }
}

/// The group's weight `w[og, cg, taps]` as `[ceil(og / OR), cg, taps, OR]`, zero-filled past the
/// last output channel.
fn pack_weight(og: usize, cg: usize, taps: usize, w: &[f32]) -> Vec<f32> {
    let blocks = og.div_ceil(OR);
    let mut packed = vec![0.0; blocks * cg * taps * OR];
    for o in 0..og {
        let (block, lane) = (o / OR, o % OR);
        for c in 0..cg {
            for t in 0..taps {
                packed[((block * cg + c) * taps + t) * OR + lane] = w[(o * cg + c) * taps + t];
            }
        }
    }
    packed
}

/// `y[N, O, Do, Ho, Wo]` from `x[N, C, D, H, W]` and `w[O, C/groups, kd, kh, kw]` where
/// [`applies`]; `par` spreads output rows over threads.
pub(super) fn forward(g: &ConvGeometry, xs: &[f32], w: &[f32], ys: &mut [f32], par: bool) {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let (in_vol, out_vol, taps) = (g.input_volume(), g.output_volume(), g.kernel_volume());
    let p = Padded::new(g);
    let offsets = p.tap_offsets(g);
    let mut xp = Vec::new();
    for group in 0..g.groups {
        pad_input(
            g,
            &p,
            &xs[group * cg * in_vol..(group + 1) * cg * in_vol],
            &mut xp,
            par,
        );
        let packed = pack_weight(og, cg, taps, &w[group * og * cg * taps..][..og * cg * taps]);
        let yg = &mut ys[group * og * out_vol..(group + 1) * og * out_vol];
        let rows = g.output[0] * g.output[1];
        let tasks = if par {
            (rayon::current_num_threads() * 4).min(rows)
        } else {
            1
        };
        let bounds: Vec<usize> = (0..=tasks).map(|t| t * rows / tasks).collect();
        // Task t owns output rows bounds[t]..bounds[t + 1] of every channel.
        let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(og)).collect();
        let row_len = g.output[2];
        for mut channel in yg.chunks_mut(out_vol) {
            for (t, piece) in pieces.iter_mut().enumerate() {
                let (head, tail) = channel.split_at_mut((bounds[t + 1] - bounds[t]) * row_len);
                piece.push(head);
                channel = tail;
            }
        }
        let run = |(t, mut piece): (usize, Vec<&mut [f32]>)| {
            rows_task(g, &p, &offsets, &xp, &packed, (bounds[t], &mut piece));
        };
        if par {
            pieces.into_par_iter().enumerate().for_each(run);
        } else {
            pieces.into_iter().enumerate().for_each(run);
        }
    }
}

/// Computes output rows `first..first + n` (`r = od·Ho + oh`) of every output channel of one
/// group into `y[o]` (each `n·Wo` long).
fn rows_task(
    g: &ConvGeometry,
    p: &Padded,
    offsets: &[usize],
    xp: &[f32],
    packed: &[f32],
    (first, y): (usize, &mut [&mut [f32]]),
) {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let wo = g.output[2];
    let n = y.first().map_or(0, |c| c.len() / wo);
    let max_offset = offsets.iter().copied().max().unwrap_or(0);
    let Some(last) = (first + n).checked_sub(1) else {
        return;
    };
    // Every read of the microkernel lies below this.
    let reach = (cg - 1) * p.chan_stride
        + p.row_base(g, last)
        + (wo - 1) / CHUNK * CHUNK
        + max_offset
        + CHUNK;
    assert!(
        reach <= xp.len(),
        "conv3d: direct kernel would read past the padded input"
    );
    let blocks = og.div_ceil(OR);
    let per_channel = offsets.len() * OR;
    let group = channel_group(g);
    let mut sums = vec![[[0f32; CHUNK]; OR]; blocks];
    for r in first..first + n {
        let base = p.row_base(g, r);
        for ow in (0..wo).step_by(CHUNK) {
            let valid = CHUNK.min(wo - ow);
            // Channels in groups whose input rows stay in L1 while every block reads them.
            for c0 in (0..cg).step_by(group) {
                let cn = group.min(cg - c0);
                for (block, acc) in sums.iter_mut().enumerate() {
                    let w_block = &packed[(block * cg + c0) * per_channel..][..cn * per_channel];
                    // SAFETY: `applies` checked AVX2 and FMA; the assert above bounds every read
                    // of `xp` (base + ow grows with r and ow), and `w_block` holds
                    // `cn · taps · OR` weights.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        microkernel(
                            xp.as_ptr().add(c0 * p.chan_stride + base + ow),
                            p.chan_stride,
                            cn,
                            offsets,
                            w_block,
                            (c0 > 0, acc),
                        );
                    }
                }
            }
            for (block, acc) in sums.iter().enumerate() {
                for (lane, acc_row) in acc.iter().enumerate() {
                    let o = block * OR + lane;
                    let at = (r - first) * wo + ow;
                    match y.get_mut(o) {
                        // A copy of constant length, inlined (a memmove call per chunk: 5 %).
                        Some(y) if valid == CHUNK => y[at..at + CHUNK].copy_from_slice(acc_row),
                        Some(y) => y[at..at + valid].copy_from_slice(&acc_row[..valid]),
                        None => {}
                    }
                }
            }
        }
    }
}

/// Input channels per microkernel call: as many as keep the input rows one call reads (every
/// tap's run of [`CHUNK`] voxels, of each channel) within [`L1_ROWS_BYTES`].
fn channel_group(g: &ConvGeometry) -> usize {
    let span = CHUNK + (g.kernel[2] - 1) * g.dilation[2] + LANES;
    let bytes = g.kernel[0] * g.kernel[1] * span * std::mem::size_of::<f32>();
    (L1_ROWS_BYTES / bytes).clamp(1, g.group_in_channels())
}

/// `acc[o][v] (+)= Σ_c Σ_tap w[c, tap, o] · x[c·chan_stride + offsets[tap] + v]` for `OR`
/// output channels and [`CHUNK`] voxels, adding to `acc` when `accumulate`.
///
/// # Safety
/// AVX2 and FMA must be available, `x + c·chan_stride + offsets[tap] + CHUNK` must stay in the
/// allocation for every `c < cg`, and `w` must hold `cg · offsets.len() · OR` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn microkernel(
    x: *const f32,
    chan_stride: usize,
    cg: usize,
    offsets: &[usize],
    w: &[f32],
    (accumulate, acc_out): (bool, &mut [[f32; CHUNK]; OR]),
) {
    use std::arch::x86_64::*;
    debug_assert_eq!(w.len(), cg * offsets.len() * OR);
    let mut acc = [[_mm256_setzero_ps(); VW]; OR];
    if accumulate {
        for (acc_o, src) in acc.iter_mut().zip(acc_out.iter()) {
            for (v, a) in acc_o.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(src.as_ptr().add(v * LANES));
            }
        }
    }
    let mut wp = w.as_ptr();
    for c in 0..cg {
        let xc = x.add(c * chan_stride);
        for &off in offsets {
            let src = xc.add(off);
            let mut xv = [_mm256_setzero_ps(); VW];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = _mm256_loadu_ps(src.add(v * LANES));
            }
            for acc_o in acc.iter_mut() {
                let b = _mm256_broadcast_ss(&*wp);
                wp = wp.add(1);
                for (a, &xv) in acc_o.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(b, xv, *a);
                }
            }
        }
    }
    for (dst, acc_o) in acc_out.iter_mut().zip(&acc) {
        for (v, a) in acc_o.iter().enumerate() {
            _mm256_storeu_ps(dst.as_mut_ptr().add(v * LANES), *a);
        }
    }
}

/// Output channels per weight-gradient microkernel call.
const OW: usize = 4;
/// Kernel taps per weight-gradient microkernel call.
const TB: usize = 3;
/// Target size of the rows of `dy` and `x` that one weight-gradient tile reads (about half of
/// a core's L2), so each is read from cache by every (output block, channel, taps) call.
const WEIGHT_TILE_BYTES: usize = 256 << 10;

/// Adds the weight gradient of one sample, `x[C, D, H, W]` and `dy[O, Do, Ho, Wo]`, into
/// `dw[O, C/groups, kd, kh, kw]` where [`applies`]; `par` spreads output rows over threads
/// (each with its own partial gradient).
pub(super) fn accumulate_weight_grad(
    g: &ConvGeometry,
    xs: &[f32],
    dys: &[f32],
    dw: &mut [f32],
    par: bool,
) {
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let (in_vol, out_vol, taps) = (g.input_volume(), g.output_volume(), g.kernel_volume());
    let p = Padded::new(g);
    let offsets = p.tap_offsets(g);
    let [_, ho, wo] = g.output;
    let rows = g.output[0] * ho;
    let row_len = wo.next_multiple_of(LANES);
    let bases: Vec<usize> = (0..rows).map(|r| p.row_base(g, r)).collect();
    // Two tasks per thread, so a thread slowed by other work can be relieved.
    let tasks = if par {
        (2 * rayon::current_num_threads()).min(rows)
    } else {
        1
    };
    let bounds: Vec<usize> = (0..=tasks).map(|t| t * rows / tasks).collect();
    let (mut xp, mut dy_buf) = (Vec::new(), Vec::new());
    for group in 0..g.groups {
        pad_input(
            g,
            &p,
            &xs[group * cg * in_vol..][..cg * in_vol],
            &mut xp,
            par,
        );
        let dyg = &dys[group * og * out_vol..][..og * out_vol];
        // Read in place when rows are whole vectors and channels whole blocks.
        let dyp = if wo == row_len && og % OW == 0 {
            dyg
        } else {
            pad_rows(
                dyg,
                (og, wo),
                (og.next_multiple_of(OW), row_len),
                &mut dy_buf,
            );
            &dy_buf
        };
        let task = |t: usize| {
            let mut partial = vec![0.0; og * cg * taps];
            let ctx = WeightTask {
                g,
                chan_stride: p.chan_stride,
                offsets: &offsets,
                bases: &bases,
                xp: &xp,
                dyp,
                row_len,
                rows,
            };
            ctx.run(bounds[t]..bounds[t + 1], &mut partial);
            partial
        };
        let partials: Vec<Vec<f32>> = if par {
            (0..tasks).into_par_iter().map(task).collect()
        } else {
            (0..tasks).map(task).collect()
        };
        let dwg = &mut dw[group * og * cg * taps..][..og * cg * taps];
        for partial in partials {
            for (d, v) in dwg.iter_mut().zip(partial) {
                *d += v;
            }
        }
    }
}

/// Copies `channels` rows-of-`wo` of `src` into `dst[padded_channels, rows, row_len]`, zeros
/// after each row and in the extra channels, so the weight-gradient microkernel reads whole
/// vectors that add nothing past the row.
fn pad_rows(
    src: &[f32],
    (channels, wo): (usize, usize),
    (padded_channels, row_len): (usize, usize),
    dst: &mut Vec<f32>,
) {
    let rows = src.len() / (channels * wo);
    dst.clear();
    dst.resize(padded_channels * rows * row_len, 0.0);
    // Channel-major in both, so source row i is destination row i.
    for (d, s) in dst.chunks_mut(row_len).zip(src.chunks(wo)) {
        d[..wo].copy_from_slice(s);
    }
}

/// What one weight-gradient task reads: the padded input and output gradient of one group.
struct WeightTask<'a> {
    g: &'a ConvGeometry,
    /// Elements from one padded input channel to the next.
    chan_stride: usize,
    offsets: &'a [usize],
    /// Flat index in the padded input of the first voxel each output row reads.
    bases: &'a [usize],
    xp: &'a [f32],
    dyp: &'a [f32],
    row_len: usize,
    rows: usize,
}

impl WeightTask<'_> {
    /// Adds the gradient from output rows `range` into `dw[og, cg, taps]`.
    fn run(&self, range: std::ops::Range<usize>, dw: &mut [f32]) {
        let g = self.g;
        let (cg, og, taps) = (
            g.group_in_channels(),
            g.group_out_channels(),
            self.offsets.len(),
        );
        let blocks = og.div_ceil(OW);
        let chan = self.rows * self.row_len;
        let Some(last) = range.end.checked_sub(1) else {
            return;
        };
        let max_offset = self.offsets.iter().copied().max().unwrap_or(0);
        assert!(
            (cg - 1) * self.chan_stride + self.bases[last] + max_offset + self.row_len
                <= self.xp.len()
                && blocks * OW * chan <= self.dyp.len(),
            "conv3d: direct weight gradient would read past its buffers"
        );
        let tile_rows =
            (WEIGHT_TILE_BYTES / ((blocks * OW + cg) * self.row_len * 4)).clamp(1, range.len());
        for t0 in range.clone().step_by(tile_rows) {
            let t1 = (t0 + tile_rows).min(range.end);
            for block in 0..blocks {
                for c in 0..cg {
                    for t in (0..taps).step_by(TB) {
                        let mut offs = [0; TB];
                        for (i, o) in offs.iter_mut().enumerate() {
                            *o = self.offsets[(t + i).min(taps - 1)];
                        }
                        let mut out = [[0f32; TB]; OW];
                        // SAFETY: `applies` checked AVX2 and FMA; the assert above bounds the
                        // reads of `xp` (rows up to `last`) and of `dyp` (all its blocks).
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            weight_microkernel(
                                self.dyp.as_ptr().add(block * OW * chan + t0 * self.row_len),
                                chan,
                                self.xp.as_ptr().add(c * self.chan_stride),
                                offs,
                                &self.bases[t0..t1],
                                self.row_len / LANES,
                                &mut out,
                            );
                        }
                        for (lane, sums) in out.iter().enumerate() {
                            let o = block * OW + lane;
                            if o < og {
                                let at = (o * cg + c) * taps + t;
                                let n = TB.min(taps - t);
                                for (d, s) in dw[at..at + n].iter_mut().zip(sums) {
                                    *d += s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `out[o][t] = Σ_rows Σ_voxels dy[o·dy_chan + i·vectors·8 + v] · x[bases[i] + offs[t] + v]`
/// for `OW` output channels and [`TB`] taps over the rows `bases` (`vectors` vectors each).
///
/// # Safety
/// AVX2 and FMA must be available; `dy` must hold `OW` channels `dy_chan` apart of
/// `bases.len() · vectors · 8` values, and `x + bases[i] + offs[t] + vectors · 8` must stay in
/// the allocation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_microkernel(
    dy: *const f32,
    dy_chan: usize,
    x: *const f32,
    offs: [usize; TB],
    bases: &[usize],
    vectors: usize,
    out: &mut [[f32; TB]; OW],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); TB]; OW];
    for (i, &base) in bases.iter().enumerate() {
        let dy_row = dy.add(i * vectors * LANES);
        let x_row = x.add(base);
        for v in 0..vectors {
            let mut xv = [_mm256_setzero_ps(); TB];
            for (xv, &off) in xv.iter_mut().zip(&offs) {
                *xv = _mm256_loadu_ps(x_row.add(off + v * LANES));
            }
            for (o, acc_o) in acc.iter_mut().enumerate() {
                let d = _mm256_loadu_ps(dy_row.add(o * dy_chan + v * LANES));
                for (a, &xv) in acc_o.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(d, xv, *a);
                }
            }
        }
    }
    for (dst, acc_o) in out.iter_mut().zip(&acc) {
        for (d, a) in dst.iter_mut().zip(acc_o) {
            let mut lanes = [0f32; LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            *d = lanes.iter().sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{conv3d_geometry, reference, Conv3dParams};
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let values = crate::gradcheck::deterministic_values(n, seed, -1.0, 1.0);
        values.into_iter().map(|v| v as f32).collect()
    }

    /// Geometries `([N, C, O, groups], [input, kernel, stride, dilation, pad before, pad
    /// after])`: odd sizes, rows shorter and longer than one chunk, channel counts off the block
    /// size, groups, dilation, strides (RenderNet's `(1, 1, 2)`, stride > kernel) and
    /// asymmetric padding.
    #[rustfmt::skip]
    const CASES: [([usize; 4], [[usize; 3]; 6]); 8] = [
        ([1, 3, 5, 1], [[5, 6, 9], [3; 3], [1; 3], [1; 3], [1; 3], [1; 3]]),
        ([2, 4, 6, 2], [[4, 5, 19], [2, 3, 4], [1; 3], [2, 1, 1], [2, 0, 1], [0, 3, 2]]),
        ([1, 2, 8, 1], [[7, 3, 8], [3, 1, 3], [2, 1, 1], [1; 3], [1, 0, 1], [1, 0, 1]]),
        ([3, 1, 4, 1], [[3, 4, 17], [5; 3], [1; 3], [1; 3], [2; 3], [2; 3]]),
        ([1, 6, 3, 3], [[4, 4, 33], [1, 3, 1], [3, 1, 1], [1, 2, 1], [0, 2, 0], [2, 2, 0]]),
        ([2, 2, 2, 1], [[6, 2, 8], [3; 3], [2, 1, 1], [1; 3], [1; 3], [0, 1, 1]]),
        ([1, 3, 4, 1], [[5, 6, 33], [3; 3], [1, 1, 2], [1; 3], [1; 3], [1, 1, 2]]),
        ([2, 2, 5, 1], [[6, 7, 50], [5, 3, 2], [2, 3, 3], [1, 2, 2], [2, 0, 1], [2, 3, 0]]),
    ];

    /// The geometry of one of [`CASES`].
    fn geometry(case: usize) -> ConvGeometry {
        let ([n, c, o, groups], [input, kernel, stride, dilation, before, after]) = CASES[case];
        let p = Conv3dParams {
            stride,
            padding: std::array::from_fn(|a| [before[a], after[a]]),
            dilation,
            groups,
        };
        let x = [n, c, input[0], input[1], input[2]];
        let w = [o, c / groups, kernel[0], kernel[1], kernel[2]];
        conv3d_geometry(x, w, &p).expect("a valid test geometry")
    }

    #[test]
    fn direct_weight_gradient_matches_reference() {
        if !has_avx2_fma() {
            eprintln!("SKIPPED: no AVX2/FMA");
            return;
        }
        for case in 0..CASES.len() {
            let g = geometry(case);
            assert!(applies(&g, 64), "{g:?}");
            let (c, o) = (g.in_channels, g.out_channels);
            let x = values(g.batch * c * g.input_volume(), 3);
            let dy = values(g.batch * o * g.output_volume(), 4);
            let want = reference::conv3d_backward_weight(&g, &x, &dy);
            for par in [false, true] {
                let mut dw = vec![0.0; want.len()];
                let samples = x
                    .chunks(c * g.input_volume())
                    .zip(dy.chunks(o * g.output_volume()));
                for (xs, dys) in samples {
                    accumulate_weight_grad(&g, xs, dys, &mut dw, par);
                }
                for (i, (a, b)) in dw.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-3, "{g:?} par {par} at {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn direct_forward_matches_reference() {
        if !has_avx2_fma() {
            eprintln!("SKIPPED: no AVX2/FMA");
            return;
        }
        for case in 0..CASES.len() {
            let g = geometry(case);
            let (n, c, o, groups) = (g.batch, g.in_channels, g.out_channels, g.groups);
            assert!(applies(&g, 64), "{g:?}");
            let x = values(n * c * g.input_volume(), 1);
            let w = values(o * (c / groups) * g.kernel_volume(), 2);
            let want = reference::conv3d_forward(&g, &x, &w);
            for par in [false, true] {
                let mut y = vec![f32::NAN; want.len()];
                let per = o * g.output_volume();
                for (xs, ys) in x.chunks(c * g.input_volume()).zip(y.chunks_mut(per)) {
                    forward(&g, xs, &w, ys, par);
                }
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-4, "{g:?} par {par} at {i}: {a} vs {b}");
                }
            }
        }
    }
}

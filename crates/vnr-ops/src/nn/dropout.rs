//! Dropout with counter-based masks, and a fused bias + ReLU + dropout for the rows of an MLP.
//!
//! A mask element is a pure function of a 64-bit key (one per dropout call, from
//! [`DropoutKeys`]) and the element's index `i`: a 32-bit half (the low one for even `i`) of
//! the `⌊i/2⌋`-th output of SplitMix64 started at the key, kept when it is at least `p · 2³²`.
//! Masks are therefore reproducible, independent of how many threads build them, and cost no
//! sequential generator: each element is kept with probability `1 − p` (to 2⁻³²)
//! independently, as `torch.nn.functional.dropout`.
//!
//! [`bias_relu_dropout`] computes `dropout(relu(x + bias))` on `x` `[N, C]` in one parallel pass
//! on the CPU (f32, f64) and keeps only its output for backward: since the kept values are
//! scaled by `1 / (1 − p) > 0`, an output is positive exactly where `x + bias > 0` and the
//! element was kept, so `dx = dy / (1 − p)` there and 0 elsewhere, and `dbias` is the column
//! sum of `dx`, computed in the same pass. The composition it replaces (broadcast add, ReLU, a
//! mask tensor and a product) keeps four tensors of `x`'s size and its backward makes six more.
//! Other devices and dtypes run [`bias_relu_dropout_reference`], which it is tested against.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::channelwise::unpack_grads;
use crate::dispatch::{capped_elements, run_cpu, Float, Kernel};

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The per-element draws of one dropout call (see the [module docs](self)): element `i` is
/// kept when its draw is at least `threshold = p · 2³²`.
#[derive(Debug, Clone, Copy)]
struct Mask {
    key: u64,
    threshold: u32,
}

/// Elements whose draws the fused kernel makes at a time (a stack buffer).
const DRAW_BLOCK: usize = 256;

impl Mask {
    fn new(key: u64, drop_prob: f64) -> Self {
        // `as` saturates; `drop_prob < 1` keeps the product below 2³² anyway.
        let threshold = (drop_prob * 4_294_967_296.0) as u32;
        Self { key, threshold }
    }

    /// The SplitMix64 output that elements `2·pair` and `2·pair + 1` take their draws from.
    #[inline]
    fn pair(self, pair: usize) -> u64 {
        mix(self
            .key
            .wrapping_add((pair as u64).wrapping_add(1).wrapping_mul(GOLDEN)))
    }

    /// The draw of element `index`: the plain definition that [`Mask::draws`] must match.
    #[inline]
    fn draw(self, index: usize) -> u32 {
        (self.pair(index / 2) >> (32 * (index % 2))) as u32
    }

    /// Whether element `index` is kept.
    fn keeps(self, index: usize) -> bool {
        self.draw(index) >= self.threshold
    }

    /// The draws of elements `start, start + 1, …` into `out`, one SplitMix64 output per two
    /// elements.
    #[inline]
    fn draws(self, start: usize, out: &mut [u32]) {
        // An odd start takes the high half of the pair it falls in.
        let skip = (start % 2).min(out.len());
        if skip == 1 {
            out[0] = self.draw(start);
        }
        let mut index = start + skip;
        let mut pairs = out[skip..].chunks_exact_mut(2);
        for two in &mut pairs {
            let h = self.pair(index / 2);
            two[0] = h as u32;
            two[1] = (h >> 32) as u32;
            index += 2;
        }
        if let [last] = pairs.into_remainder() {
            *last = self.draw(index);
        }
    }
}

/// Checks a dropout probability and returns the scale `1 / (1 − p)` of kept elements.
fn keep_scale(op: &str, drop_prob: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&drop_prob) {
        bail!("{op}: probability {drop_prob} must be in [0, 1)");
    }
    Ok(1.0 / (1.0 - drop_prob))
}

/// The keys of successive dropout calls: a seed and a call counter, so that a model restarted
/// with [`reseed`](Self::reseed) draws the same masks in the same order. Shared by reference
/// (interior mutability), as a module's forward takes `&self`.
#[derive(Debug)]
pub struct DropoutKeys {
    seed: AtomicU64,
    calls: AtomicU64,
}

impl DropoutKeys {
    /// Keys starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed: AtomicU64::new(seed),
            calls: AtomicU64::new(0),
        }
    }

    /// Restarts the key sequence from `seed`.
    pub fn reseed(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
    }

    /// The key of the next dropout call.
    pub fn next_key(&self) -> u64 {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        mix(self.seed.load(Ordering::Relaxed) ^ mix(call.wrapping_add(GOLDEN)))
    }
}

impl Clone for DropoutKeys {
    /// A copy at the same position of the same sequence.
    fn clone(&self) -> Self {
        Self {
            seed: AtomicU64::new(self.seed.load(Ordering::Relaxed)),
            calls: AtomicU64::new(self.calls.load(Ordering::Relaxed)),
        }
    }
}

/// The dropout mask of call `key` for a tensor of `shape`: each element `1 / (1 − p)` with
/// probability `1 − p`, else 0 (row-major element order), as `dtype` on `device`. A shape of
/// more than [`MAX_PARAMETER_ELEMENTS`](crate::dispatch::MAX_PARAMETER_ELEMENTS) elements is an
/// error.
pub fn dropout_mask(
    key: u64,
    shape: impl Into<Shape>,
    drop_prob: f64,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let scale = keep_scale("dropout", drop_prob)? as f32;
    let shape = shape.into();
    // Before `Shape::elem_count`, which overflows, and before allocating.
    capped_elements("dropout", "mask", shape.dims())?;
    let mask = Mask::new(key, drop_prob);
    let values: Vec<f32> = (0..shape.elem_count())
        .into_par_iter()
        .with_min_len(1 << 14)
        .map(|i| if mask.keeps(i) { scale } else { 0.0 })
        .collect();
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// Dropout of `x` (any shape, device, float dtype) with the mask of call `key`
/// ([`dropout_mask`]); the identity when `drop_prob` is 0.
pub fn dropout(x: &Tensor, drop_prob: f64, key: u64) -> Result<Tensor> {
    if drop_prob == 0.0 {
        return Ok(x.clone());
    }
    x.mul(&dropout_mask(
        key,
        x.shape(),
        drop_prob,
        x.dtype(),
        x.device(),
    )?)
}

/// `dropout(relu(x + bias))` for `x` `[N, C]` and `bias` `[C]`, with the mask of call `key`
/// ([`dropout_mask`]); `drop_prob` 0 gives `relu(x + bias)`. One fused op on the CPU for f32 and
/// f64 (see the [module docs](self)); other devices and dtypes run
/// [`bias_relu_dropout_reference`].
pub fn bias_relu_dropout(x: &Tensor, bias: &Tensor, drop_prob: f64, key: u64) -> Result<Tensor> {
    let channels = columns(x, bias)?;
    let scale = keep_scale("bias_relu_dropout", drop_prob)?;
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && bias.dtype() == x.dtype();
    if !fused {
        return bias_relu_dropout_reference(x, bias, drop_prob, key);
    }
    x.contiguous()?.apply_op2(
        &bias.contiguous()?,
        BiasReluDropout {
            channels,
            scale,
            mask: Mask::new(key, drop_prob),
        },
    )
}

/// The plain composition [`bias_relu_dropout`] is checked against: `x + bias`, ReLU, then
/// [`dropout`]; any device and dtype.
pub fn bias_relu_dropout_reference(
    x: &Tensor,
    bias: &Tensor,
    drop_prob: f64,
    key: u64,
) -> Result<Tensor> {
    columns(x, bias)?;
    dropout(&x.broadcast_add(bias)?.relu()?, drop_prob, key)
}

/// Checks that `x` is `[N, C]` and `bias` `[C]`, and returns `C`.
fn columns(x: &Tensor, bias: &Tensor) -> Result<usize> {
    match (x.dims(), bias.dims()) {
        ([_, c], [n]) if c == n => Ok(*c),
        (xd, bd) => {
            bail!("bias_relu_dropout: expected x [N, C] and bias [C], got {xd:?} and {bd:?}")
        }
    }
}

/// Rows per rayon task at least (about 64 KiB of f32 for 512 columns).
fn min_rows(channels: usize) -> usize {
    (16_384 / channels.max(1)).max(1)
}

/// The fused forward on `(x [N, C], bias [C])`.
struct BiasReluDropout {
    channels: usize,
    scale: f64,
    mask: Mask,
}

impl Kernel<2> for BiasReluDropout {
    fn run<T: Float>(&self, [x, bias]: [&[T]; 2]) -> Result<Vec<T>> {
        let (zero, scale, mask) = (T::zero(), T::from_f64(self.scale), self.mask);
        let c = self.channels;
        let mut out = vec![zero; x.len()];
        if c == 0 {
            return Ok(out);
        }
        let draw = mask.threshold > 0;
        out.par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .enumerate()
            .with_min_len(min_rows(c))
            .for_each(|(row, (o, xs))| {
                let mut draws = [0u32; DRAW_BLOCK];
                let blocks = o.chunks_mut(DRAW_BLOCK).zip(xs.chunks(DRAW_BLOCK));
                for (k, ((o, xs), bias)) in blocks.zip(bias.chunks(DRAW_BLOCK)).enumerate() {
                    let draws = &mut draws[..o.len()];
                    if draw {
                        mask.draws(row * c + k * DRAW_BLOCK, draws);
                    }
                    // The product before the test keeps the loop branch-free and vectorised
                    // (about half the values are negative, at random).
                    for (((o, &x), &b), &r) in o.iter_mut().zip(xs).zip(bias).zip(&*draws) {
                        let v = x + b;
                        let scaled = v * scale;
                        *o = if (v > zero) & (r >= mask.threshold) {
                            scaled
                        } else {
                            zero
                        };
                    }
                }
            });
        Ok(out)
    }
}

impl CustomOp2 for BiasReluDropout {
    fn name(&self) -> &'static str {
        "bias_relu_dropout"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = run_cpu(self.name(), self, [(xs, xl), (bs, bl)])?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _bias: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = y.apply_op2_no_bwd(
            &grad.contiguous()?,
            &BiasReluDropoutGrad {
                channels: self.channels,
                scale: self.scale,
            },
        )?;
        let (dx, dbias) = unpack_grads(&packed, x.shape(), self.channels)?;
        Ok((Some(dx), Some(dbias)))
    }
}

/// The fused backward on `(y, dy)`: `[dx (flattened), dbias]`, `N·C + C` elements, with
/// `dx = y > 0 ? dy·scale : 0` and `dbias` its column sums (accumulated in f64 per block of
/// rows).
struct BiasReluDropoutGrad {
    channels: usize,
    scale: f64,
}

/// Rows of one partial column sum of the bias gradient.
const SUM_ROWS: usize = 256;

impl Kernel<2> for BiasReluDropoutGrad {
    fn run<T: Float>(&self, [y, grad]: [&[T]; 2]) -> Result<Vec<T>> {
        let (zero, scale) = (T::zero(), T::from_f64(self.scale));
        let c = self.channels;
        let mut out = vec![zero; y.len() + c];
        if c == 0 {
            return Ok(out);
        }
        let (dx, dbias) = out.split_at_mut(y.len());
        let block = SUM_ROWS * c;
        let partial: Vec<Vec<f64>> = dx
            .par_chunks_mut(block)
            .zip(y.par_chunks(block))
            .zip(grad.par_chunks(block))
            .map(|((d, ys), gs)| {
                let mut sums = vec![zero; c];
                for ((d, ys), gs) in d.chunks_mut(c).zip(ys.chunks(c)).zip(gs.chunks(c)) {
                    for (((d, &y), &g), s) in d.iter_mut().zip(ys).zip(gs).zip(&mut sums) {
                        // Product first: a branch-free, vectorised loop.
                        let scaled = g * scale;
                        *d = if y > zero { scaled } else { zero };
                        *s += *d;
                    }
                }
                sums.into_iter().map(|s| s.to_f64()).collect()
            })
            .collect();
        for (j, d) in dbias.iter_mut().enumerate() {
            *d = T::from_f64(partial.iter().map(|p| p[j]).sum());
        }
        Ok(out)
    }
}

impl CustomOp2 for BiasReluDropoutGrad {
    fn name(&self) -> &'static str {
        "bias_relu_dropout-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = run_cpu(self.name(), self, [(ys, yl), (gs, gl)])?;
        Ok((out, Shape::from(yl.shape().elem_count() + self.channels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_draws_match_the_plain_definition() {
        let mask = Mask::new(77, 0.3);
        for (start, len) in [(0, 7), (1, 6), (5, 1), (10, 0), (3, 256)] {
            let mut out = vec![0; len];
            mask.draws(start, &mut out);
            let want: Vec<u32> = (start..start + len).map(|i| mask.draw(i)).collect();
            assert_eq!(out, want, "start {start}, len {len}");
        }
    }

    #[test]
    fn masks_drop_about_p_and_depend_on_the_key() {
        let (a, b) = (Mask::new(1, 0.2), Mask::new(2, 0.2));
        let n = 100_000;
        let dropped = (0..n).filter(|&i| !a.keeps(i)).count() as f64 / n as f64;
        assert!((dropped - 0.2).abs() < 0.01, "dropped {dropped}");
        let differ = (0..n).filter(|&i| a.keeps(i) != b.keeps(i)).count();
        // Independent masks differ on 2·0.2·0.8 = 32 % of the elements.
        assert!((differ as f64 / n as f64 - 0.32).abs() < 0.01);
        assert!((0..n).all(|i| Mask::new(3, 0.0).keeps(i)));
    }

    #[test]
    fn keys_restart_with_the_seed() {
        let keys = DropoutKeys::new(5);
        let first = [keys.next_key(), keys.next_key()];
        assert_ne!(first[0], first[1]);
        keys.reseed(5);
        assert_eq!(first, [keys.next_key(), keys.next_key()]);
        keys.reseed(6);
        assert_ne!(first[0], keys.next_key());
    }
}

//! Per-channel element-wise ops on `[B, C, …]` tensors, with one parameter per channel along
//! dim 1: a bias add, a bias add fused with LeakyReLU, and PReLU.
//!
//! On the CPU (f32, f64) each is one fused op whose forward and backward are single passes over
//! contiguous `(b, c)` planes, the backward giving the input's gradient and the per-channel
//! parameter's gradient together. The compositions they replace keep several tensors of the
//! input's size for backward, and candle sums the gradient of a broadcast `[1, C, 1, …]`
//! parameter with a per-element index computation (12–17% of a RenderNet training step).
//! Other devices and dtypes run the plain compositions (`*_reference`), which the fused ops are
//! tested against.

use crate::dispatch::{run_cpu, Float, Kernel};
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

/// `x + bias` (`x` `[B, C, …]`, `bias` `[C]` along dim 1): [`bias_leaky_relu`] with slope 1.
/// Its backward sums the bias gradient over contiguous planes.
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    bias_leaky_relu(x, bias, 1.0)
}

/// LeakyReLU of `x + bias` (`x` `[B, C, …]`, `bias` `[C]` along dim 1): `v` where `v > 0`,
/// `slope·v` elsewhere, as one fused CPU op. It keeps no intermediate tensor for backward, and
/// its backward is one pass, `dv = dy · (v > 0 ? 1 : slope)`, summing the bias gradient per
/// plane as it goes. The gradient at exactly 0 is `slope`, as PyTorch's. Other devices and
/// dtypes run [`bias_leaky_relu_reference`].
pub fn bias_leaky_relu(x: &Tensor, bias: &Tensor, slope: f64) -> Result<Tensor> {
    apply("bias_leaky_relu", x, bias, Kind::BiasLeakyRelu { slope })
        .unwrap_or_else(|| bias_leaky_relu_reference(x, bias, slope))
}

/// The plain composition [`bias_leaky_relu`] is checked against: `v = x + bias`, then
/// `max(v, slope·v)` (`min` for a slope above 1); any device and dtype.
pub fn bias_leaky_relu_reference(x: &Tensor, bias: &Tensor, slope: f64) -> Result<Tensor> {
    let v = x.broadcast_add(&per_channel("bias_leaky_relu", x, bias)?)?;
    let scaled = v.affine(slope, 0.0)?;
    if slope <= 1.0 {
        v.maximum(&scaled)
    } else {
        v.minimum(&scaled)
    }
}

/// PReLU with one slope per channel (`x` `[B, C, …]`, `alpha` `[C]` along dim 1): `x` where
/// `x > 0`, `alpha[c]·x` elsewhere, as one fused CPU op whose backward computes `dx` and
/// `dalpha = Σ_{x ≤ 0} x·dy` in one pass per plane. The gradient at exactly 0 is `alpha`, as
/// PyTorch's. Other devices and dtypes run [`prelu_reference`].
pub fn prelu(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    apply("prelu", x, alpha, Kind::PRelu).unwrap_or_else(|| prelu_reference(x, alpha))
}

/// The plain composition [`prelu`] is checked against: `x > 0 ? x : alpha·x`; any device
/// and dtype.
pub fn prelu_reference(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let scaled = x.broadcast_mul(&per_channel("prelu", x, alpha)?)?;
    x.gt(0.0)?.where_cond(x, &scaled)
}

/// Checks that `param` is `[C]` for `x` `[B, C, …]` and returns `C`.
fn channels(op: &str, x: &Tensor, param: &Tensor) -> Result<usize> {
    match (x.dims(), param.dims()) {
        ([_, c, ..], [n]) if c == n => Ok(*c),
        (xd, pd) => bail!("{op}: expected x [B, C, …] and a parameter [C], got {xd:?} and {pd:?}"),
    }
}

/// `param` `[C]` as `[1, C, 1, …]` in `x`'s dtype, for broadcasting against `x` `[B, C, …]`.
fn per_channel(op: &str, x: &Tensor, param: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[1] = channels(op, x, param)?;
    param.to_dtype(x.dtype())?.reshape(shape)
}

/// Runs the fused op, or `None` where it does not apply (another device or dtype) and the
/// caller runs its reference instead. Shape errors are reported either way.
fn apply(op: &str, x: &Tensor, param: &Tensor, kind: Kind) -> Option<Result<Tensor>> {
    let channels = match channels(op, x, param) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && param.dtype() == x.dtype();
    fused.then(|| {
        x.contiguous()?.apply_op2(
            &param.contiguous()?,
            Channelwise {
                kind,
                channels,
                plane: x.dims()[2..].iter().product(),
            },
        )
    })
}

/// Which per-channel function a fused op computes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `v = x + p`, `y = v > 0 ? v : slope·v`.
    BiasLeakyRelu { slope: f64 },
    /// `y = x > 0 ? x : p·x`.
    PRelu,
}

/// Planes per rayon task at least, so that small planes (`[B, C]` inputs) are not one task
/// each.
fn min_planes(plane: usize) -> usize {
    (16_384 / plane.max(1)).max(1)
}

/// `f(x, p)` for every element of `x` `[B, C, S]` (`S = plane`), `p` its channel's parameter,
/// in parallel over planes.
fn forward_planes<T: WithDType>(
    x: &[T],
    param: &[T],
    plane: usize,
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if plane == 0 || param.is_empty() {
        return out;
    }
    let channels = param.len();
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .with_min_len(min_planes(plane))
        .for_each(|(i, (o, xs))| {
            let p = param[i % channels];
            for (o, &x) in o.iter_mut().zip(xs) {
                *o = f(x, p);
            }
        });
    out
}

/// The backward pass: `(dx, dp) = f(x, p, dy)` for every element, returning `dx` (as `x`)
/// followed by the per-channel sums of `dp` (`[C]`), in one pass over planes. Plane sums are
/// accumulated in f64.
fn backward_planes<T: WithDType>(
    x: &[T],
    param: &[T],
    grad: &[T],
    plane: usize,
    f: impl Fn(T, T, T) -> (T, T) + Sync,
) -> Vec<T> {
    let channels = param.len();
    let mut out = vec![T::zero(); x.len() + channels];
    if plane == 0 || channels == 0 {
        return out;
    }
    let (dx, dparam) = out.split_at_mut(x.len());
    let mut sums = vec![0f64; x.len() / plane];
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .zip(grad.par_chunks(plane))
        .zip(sums.par_iter_mut())
        .enumerate()
        .with_min_len(min_planes(plane))
        .for_each(|(i, (((d, xs), gs), sum))| {
            let p = param[i % channels];
            // Sums of 256 elements in T (vectorisable), added up in f64.
            for ((d, xs), gs) in d.chunks_mut(256).zip(xs.chunks(256)).zip(gs.chunks(256)) {
                let mut block = T::zero();
                for ((d, &x), &g) in d.iter_mut().zip(xs).zip(gs) {
                    let (dx, dp) = f(x, p, g);
                    *d = dx;
                    block += dp;
                }
                *sum += block.to_f64();
            }
        });
    let mut totals = vec![0f64; channels];
    for (i, s) in sums.iter().enumerate() {
        totals[i % channels] += s;
    }
    for (d, t) in dparam.iter_mut().zip(totals) {
        *d = T::from_f64(t);
    }
    out
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::BiasLeakyRelu { .. } => "bias_leaky_relu",
            Kind::PRelu => "prelu",
        }
    }
}

/// One fused op on the CPU, for planes of `plane` elements.
struct Planes {
    kind: Kind,
    plane: usize,
}

impl Kernel<2> for Planes {
    /// The forward, from `(x, param)`.
    fn run<T: Float>(&self, [x, p]: [&[T]; 2]) -> Result<Vec<T>> {
        let zero = T::zero();
        Ok(match self.kind {
            Kind::BiasLeakyRelu { slope } => {
                let slope = T::from_f64(slope);
                forward_planes(x, p, self.plane, |x, b| {
                    let v = x + b;
                    if v > zero {
                        v
                    } else {
                        v * slope
                    }
                })
            }
            Kind::PRelu => {
                forward_planes(x, p, self.plane, |x, a| if x > zero { x } else { a * x })
            }
        })
    }
}

impl Kernel<3> for Planes {
    /// The backward (see [`backward_planes`]), from `(x, param, dy)`.
    fn run<T: Float>(&self, [x, p, g]: [&[T]; 3]) -> Result<Vec<T>> {
        let zero = T::zero();
        Ok(match self.kind {
            Kind::BiasLeakyRelu { slope } => {
                let slope = T::from_f64(slope);
                backward_planes(x, p, g, self.plane, |x, b, g| {
                    let d = if x + b > zero { g } else { g * slope };
                    (d, d)
                })
            }
            Kind::PRelu => backward_planes(x, p, g, self.plane, |x, a, g| {
                if x > zero {
                    (g, zero)
                } else {
                    (a * g, x * g)
                }
            }),
        })
    }
}

/// The fused forward op on `(x [B, C, …], param [C])`.
struct Channelwise {
    kind: Kind,
    channels: usize,
    plane: usize,
}

impl CustomOp2 for Channelwise {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let planes = Planes {
            kind: self.kind,
            plane: self.plane,
        };
        let out = run_cpu(self.kind.name(), &planes, [(xs, xl), (ps, pl)])?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        param: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(
            param,
            &grad.contiguous()?,
            &ChannelwiseGrad {
                kind: self.kind,
                plane: self.plane,
            },
        )?;
        let (dx, dparam) = unpack_grads(&packed, x.shape(), self.channels)?;
        Ok((Some(dx), Some(dparam)))
    }
}

/// Splits the packed output of a fused per-channel backward, `[dx (flattened), dparam]`, into
/// `dx` with the input's `shape` and `dparam` `[C]`. One output keeps the backward a single
/// pass over the input that also accumulates the per-channel sums.
pub(crate) fn unpack_grads(
    packed: &Tensor,
    shape: &Shape,
    channels: usize,
) -> Result<(Tensor, Tensor)> {
    let n = shape.elem_count();
    Ok((
        packed.narrow(0, 0, n)?.reshape(shape)?,
        packed.narrow(0, n, channels)?,
    ))
}

/// The fused backward op on `(x, param, dy)`: `[dx (flattened), dparam]`, one vector of
/// `x.elem_count() + C` elements.
struct ChannelwiseGrad {
    kind: Kind,
    plane: usize,
}

impl CustomOp3 for ChannelwiseGrad {
    fn name(&self) -> &'static str {
        "channelwise-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let planes = Planes {
            kind: self.kind,
            plane: self.plane,
        };
        let out = run_cpu(self.name(), &planes, [(xs, xl), (ps, pl), (gs, gl)])?;
        let len = xl.shape().elem_count() + pl.shape().elem_count();
        Ok((out, Shape::from(len)))
    }
}

//! Per-channel element-wise ops on `[B, C, …]` tensors, with parameters per channel along
//! dim 1: a bias add, a bias add fused with LeakyReLU, PReLU, a bias add fused with PReLU, and a
//! bias add fused with a residual add.
//!
//! On the CPU (f32, f64) each is one fused op whose forward and backward are single passes over
//! contiguous `(b, c)` planes, the backward giving the input's gradient and the per-channel
//! parameters' gradients together (the adds pass the output gradient through unchanged and only
//! sum it per channel). The compositions they replace keep several tensors of the input's size
//! for backward, and candle sums the gradient of a broadcast `[1, C, 1, …]` parameter with a
//! per-element index computation (12–17% of a RenderNet training step); every extra node of the
//! graph also costs candle's backward a zeroed gradient buffer and an add of the input's size.
//! Per-channel sums run in vectorisable lanes of 8 over 256-element blocks, added up in f64.
//! Other devices and dtypes run the plain compositions (`*_reference`), which the fused ops are
//! tested against.

use crate::dispatch::{run_cpu, Float, Kernel};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    WithDType,
};
use rayon::prelude::*;

/// `x + bias` (`x` `[B, C, …]`, `bias` `[C]` along dim 1) as one fused CPU op; its backward
/// passes the output gradient to `x` as it is and sums it per channel for `bias`. Other devices
/// and dtypes run [`bias_add_reference`].
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    apply("bias_add", x, &[bias], Kind::BiasAdd).unwrap_or_else(|| bias_add_reference(x, bias))
}

/// The plain composition [`bias_add`] is checked against: a broadcast add; any device and
/// dtype.
pub fn bias_add_reference(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.broadcast_add(&per_channel("bias_add", x, bias)?)
}

/// LeakyReLU of `x + bias` (`x` `[B, C, …]`, `bias` `[C]` along dim 1): `v` where `v > 0`,
/// `slope·v` elsewhere, as one fused CPU op. It keeps no intermediate tensor for backward, and
/// its backward is one pass, `dv = dy · (v > 0 ? 1 : slope)`, summing the bias gradient per
/// plane as it goes. The gradient at exactly 0 is `slope`, as PyTorch's. Other devices and
/// dtypes run [`bias_leaky_relu_reference`].
pub fn bias_leaky_relu(x: &Tensor, bias: &Tensor, slope: f64) -> Result<Tensor> {
    apply("bias_leaky_relu", x, &[bias], Kind::BiasLeakyRelu { slope })
        .unwrap_or_else(|| bias_leaky_relu_reference(x, bias, slope))
}

/// The plain composition [`bias_leaky_relu`] is checked against: `v = x + bias`, then
/// `max(v, slope·v)` (`min` for a slope above 1); any device and dtype.
pub fn bias_leaky_relu_reference(x: &Tensor, bias: &Tensor, slope: f64) -> Result<Tensor> {
    let v = bias_add_reference(x, bias)?;
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
    apply("prelu", x, &[alpha], Kind::PRelu).unwrap_or_else(|| prelu_reference(x, alpha))
}

/// The plain composition [`prelu`] is checked against: `x > 0 ? x : alpha·x`; any device
/// and dtype.
pub fn prelu_reference(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let scaled = x.broadcast_mul(&per_channel("prelu", x, alpha)?)?;
    x.gt(0.0)?.where_cond(x, &scaled)
}

/// PReLU of `x + bias` (`x` `[B, C, …]`, `bias` and `alpha` `[C]` along dim 1): `v` where
/// `v > 0`, `alpha[c]·v` elsewhere, as one fused CPU op (a convolution's bias and its
/// activation in one pass). Its backward is one pass giving `dx = dv = dy · (v > 0 ? 1 :
/// alpha)`, `dbias = Σ dv` and `dalpha = Σ_{v ≤ 0} v·dy`. The gradient at exactly 0 is `alpha`,
/// as PyTorch's. Other devices and dtypes run [`bias_prelu_reference`].
pub fn bias_prelu(x: &Tensor, bias: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    apply("bias_prelu", x, &[bias, alpha], Kind::BiasPRelu)
        .unwrap_or_else(|| bias_prelu_reference(x, bias, alpha))
}

/// The plain composition [`bias_prelu`] is checked against: [`bias_add_reference`], then
/// [`prelu_reference`]; any device and dtype.
pub fn bias_prelu_reference(x: &Tensor, bias: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    prelu_reference(&bias_add_reference(x, bias)?, alpha)
}

/// `x + bias + skip` (`x` and `skip` `[B, C, …]`, `bias` `[C]` along dim 1): a convolution's
/// bias and a residual connection in one fused CPU op. Its backward passes the output gradient
/// to `x` and `skip` as it is and sums it per channel for `bias`. Other devices and dtypes run
/// [`bias_residual_add_reference`].
pub fn bias_residual_add(x: &Tensor, bias: &Tensor, skip: &Tensor) -> Result<Tensor> {
    const OP: &str = "bias_residual_add";
    let channels = channels(OP, x, bias)?;
    if skip.dims() != x.dims() {
        bail!(
            "{OP}: the skip {:?} must have the input's shape {:?}",
            skip.dims(),
            x.dims()
        );
    }
    if !fusable(x, &[bias, skip]) {
        return bias_residual_add_reference(x, bias, skip);
    }
    x.contiguous()?.apply_op3(
        &bias.contiguous()?,
        &skip.contiguous()?,
        Residual {
            channels,
            plane: plane_len(x),
        },
    )
}

/// The plain composition [`bias_residual_add`] is checked against: [`bias_add_reference`],
/// then an add; any device and dtype.
pub fn bias_residual_add_reference(x: &Tensor, bias: &Tensor, skip: &Tensor) -> Result<Tensor> {
    bias_add_reference(x, bias)? + skip
}

/// Checks that `param` is `[C]` for `x` `[B, C, …]` and returns `C`.
pub(crate) fn channels(op: &str, x: &Tensor, param: &Tensor) -> Result<usize> {
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

/// Elements of one `(b, c)` plane of `x` `[B, C, …]`.
fn plane_len(x: &Tensor) -> usize {
    x.dims()[2..].iter().product()
}

/// Whether the fused CPU kernels apply: `x` on the CPU in f32 or f64, the other operands in
/// the same dtype.
pub(crate) fn fusable(x: &Tensor, others: &[&Tensor]) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && others.iter().all(|t| t.dtype() == x.dtype())
}

/// Runs the fused op with the per-channel `params` (each `[C]`, concatenated), or `None` where
/// it does not apply (another device or dtype) and the caller runs its reference instead. Shape
/// errors are reported either way.
fn apply(op: &str, x: &Tensor, params: &[&Tensor], kind: Kind) -> Option<Result<Tensor>> {
    let mut channels = 0;
    for p in params {
        match self::channels(op, x, p) {
            Ok(c) => channels = c,
            Err(e) => return Some(Err(e)),
        }
    }
    fusable(x, params).then(|| {
        let param = match params {
            [p] => p.contiguous()?,
            _ => Tensor::cat(params, 0)?,
        };
        x.contiguous()?.apply_op2(
            &param,
            Channelwise {
                kind,
                channels,
                plane: plane_len(x),
            },
        )
    })
}

/// Which per-channel function a fused op computes; `p` and `q` are a channel's parameters.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `y = x + p`.
    BiasAdd,
    /// `v = x + p`, `y = v > 0 ? v : slope·v`.
    BiasLeakyRelu { slope: f64 },
    /// `y = x > 0 ? x : p·x`.
    PRelu,
    /// `v = x + p`, `y = v > 0 ? v : q·v` (parameters `[bias; alpha]`, `2C`).
    BiasPRelu,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::BiasAdd => "bias_add",
            Kind::BiasLeakyRelu { .. } => "bias_leaky_relu",
            Kind::PRelu => "prelu",
            Kind::BiasPRelu => "bias_prelu",
        }
    }
}

/// Planes per rayon task at least, so that small planes (`[B, C]` inputs) are not one task
/// each.
fn min_planes(plane: usize) -> usize {
    (16_384 / plane.max(1)).max(1)
}

/// Block of a plane whose per-channel partials are summed in the element type before being
/// added up in f64.
const BLOCK: usize = 256;

/// Independent accumulators of [`lane_sum`], so that the sum vectorises.
const LANES: usize = 8;

/// `Σ values` in f64: blocks of [`BLOCK`] summed in [`LANES`] lanes of `T`.
pub(crate) fn lane_sum<T: WithDType>(values: &[T]) -> f64 {
    let mut total = 0f64;
    for block in values.chunks(BLOCK) {
        let mut acc = [T::zero(); LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += v;
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += v;
        }
        total += acc.iter().map(|a| a.to_f64()).sum::<f64>();
    }
    total
}

/// Channel `c`'s parameters `[p, q]` from `param` (`[C]` or `[2C]`; `q` is 0 for one
/// parameter per channel).
fn channel_params<T: WithDType>(param: &[T], channels: usize, c: usize) -> [T; 2] {
    [
        param[c],
        param.get(channels + c).copied().unwrap_or_else(T::zero),
    ]
}

/// `f(x, skip, channel parameters)` for every element of `x` `[B, C, S]` (`S = plane`) and of
/// `skip` (`x`'s shape; `f` gets 0 without one), in parallel over planes.
fn forward_planes<T: WithDType>(
    x: &[T],
    skip: Option<&[T]>,
    param: &[T],
    channels: usize,
    plane: usize,
    f: impl Fn(T, T, [T; 2]) -> T + Send + Sync + Copy,
) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if plane == 0 || channels == 0 {
        return out;
    }
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .with_min_len(min_planes(plane))
        .for_each(move |(i, (o, xs))| {
            let p = channel_params(param, channels, i % channels);
            match skip {
                None => {
                    for (o, &x) in o.iter_mut().zip(xs) {
                        *o = f(x, T::zero(), p);
                    }
                }
                Some(skip) => {
                    let ss = &skip[i * plane..i * plane + xs.len()];
                    for ((o, &x), &s) in o.iter_mut().zip(xs).zip(ss) {
                        *o = f(x, s, p);
                    }
                }
            }
        });
    out
}

/// The backward pass: `(dx, [dp, dq]) = f(x, [p, q], dy)` for every element, returning `dx`
/// (as `x`) followed by the per-channel sums of `dp` (`[C]`) and, for two parameters per
/// channel, of `dq`, in one pass over planes.
fn backward_planes<T: WithDType>(
    x: &[T],
    param: &[T],
    grad: &[T],
    channels: usize,
    plane: usize,
    f: impl Fn(T, [T; 2], T) -> (T, [T; 2]) + Send + Sync + Copy,
) -> Vec<T> {
    let mut out = vec![T::zero(); x.len() + param.len()];
    if plane == 0 || channels == 0 {
        return out;
    }
    let (dx, dparam) = out.split_at_mut(x.len());
    let mut sums = vec![[0f64; 2]; x.len() / plane];
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .zip(grad.par_chunks(plane))
        .zip(sums.par_iter_mut())
        .enumerate()
        .with_min_len(min_planes(plane))
        .for_each(move |(i, (((d, xs), gs), sum))| {
            let p = channel_params(param, channels, i % channels);
            let mut partial = [[T::zero(); BLOCK]; 2];
            for ((d, xs), gs) in d
                .chunks_mut(BLOCK)
                .zip(xs.chunks(BLOCK))
                .zip(gs.chunks(BLOCK))
            {
                let n = d.len();
                let [dp, dq] = &mut partial;
                let (dp, dq) = (&mut dp[..n], &mut dq[..n]);
                let partials = dp.iter_mut().zip(dq.iter_mut());
                for (((d, &x), &g), (dp, dq)) in d.iter_mut().zip(xs).zip(gs).zip(partials) {
                    let (dx, [a, b]) = f(x, p, g);
                    *d = dx;
                    *dp = a;
                    *dq = b;
                }
                sum[0] += lane_sum(dp);
                sum[1] += lane_sum(dq);
            }
        });
    let per_channel = param.len() / channels;
    let mut totals = vec![0f64; param.len()];
    for (i, s) in sums.iter().enumerate() {
        for (k, &v) in s.iter().enumerate().take(per_channel) {
            totals[k * channels + i % channels] += v;
        }
    }
    for (d, t) in dparam.iter_mut().zip(totals) {
        *d = T::from_f64(t);
    }
    out
}

/// One fused op on the CPU, for planes of `plane` elements.
struct Planes {
    kind: Kind,
    channels: usize,
    plane: usize,
}

impl Kernel<2> for Planes {
    /// The forward, from `(x, param)`.
    fn run<T: Float>(&self, [x, param]: [&[T]; 2]) -> Result<Vec<T>> {
        let zero = T::zero();
        let (c, s) = (self.channels, self.plane);
        Ok(match self.kind {
            Kind::BiasAdd => forward_planes(x, None, param, c, s, move |x, _, [b, _]| x + b),
            Kind::BiasLeakyRelu { slope } => {
                let slope = T::from_f64(slope);
                forward_planes(x, None, param, c, s, move |x, _, [b, _]| {
                    let v = x + b;
                    if v > zero {
                        v
                    } else {
                        v * slope
                    }
                })
            }
            Kind::PRelu => forward_planes(
                x,
                None,
                param,
                c,
                s,
                move |x, _, [a, _]| {
                    if x > zero {
                        x
                    } else {
                        a * x
                    }
                },
            ),
            Kind::BiasPRelu => forward_planes(x, None, param, c, s, move |x, _, [b, a]| {
                let v = x + b;
                if v > zero {
                    v
                } else {
                    a * v
                }
            }),
        })
    }
}

impl Kernel<3> for Planes {
    /// The backward (see [`backward_planes`]), from `(x, param, dy)`.
    fn run<T: Float>(&self, [x, param, g]: [&[T]; 3]) -> Result<Vec<T>> {
        let zero = T::zero();
        let (c, s) = (self.channels, self.plane);
        Ok(match self.kind {
            // Its backward is the gradient itself and its channel sums (`Channelwise::bwd`).
            Kind::BiasAdd => bail!("bias_add: no per-element backward pass"),
            Kind::BiasLeakyRelu { slope } => {
                let slope = T::from_f64(slope);
                backward_planes(x, param, g, c, s, move |x, [b, _], g| {
                    let d = if x + b > zero { g } else { g * slope };
                    (d, [d, zero])
                })
            }
            Kind::PRelu => backward_planes(x, param, g, c, s, move |x, [a, _], g| {
                if x > zero {
                    (g, [zero, zero])
                } else {
                    (a * g, [x * g, zero])
                }
            }),
            Kind::BiasPRelu => backward_planes(x, param, g, c, s, move |x, [b, a], g| {
                let v = x + b;
                if v > zero {
                    (g, [g, zero])
                } else {
                    let d = a * g;
                    (d, [d, v * g])
                }
            }),
        })
    }
}

/// The fused forward op on `(x [B, C, …], param [C] or [2C])`.
struct Channelwise {
    kind: Kind,
    channels: usize,
    plane: usize,
}

impl Channelwise {
    fn planes(&self) -> Planes {
        Planes {
            kind: self.kind,
            channels: self.channels,
            plane: self.plane,
        }
    }
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
        let out = run_cpu(self.kind.name(), &self.planes(), [(xs, xl), (ps, pl)])?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        param: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if let Kind::BiasAdd = self.kind {
            let dbias = channel_sums(grad, self.channels, self.plane)?;
            return Ok((Some(grad.clone()), Some(dbias)));
        }
        let packed = x.apply_op3_no_bwd(
            param,
            &grad.contiguous()?,
            &ChannelwiseGrad {
                planes: self.planes(),
            },
        )?;
        let (dx, dparam) = unpack_grads(&packed, x.shape(), param.elem_count())?;
        Ok((Some(dx), Some(dparam)))
    }
}

/// Splits the packed output of a fused per-channel backward, `[dx (flattened), dparam]`, into
/// `dx` with the input's `shape` and `dparam` (`params` elements). One output keeps the
/// backward a single pass over the input that also accumulates the per-channel sums.
pub(crate) fn unpack_grads(
    packed: &Tensor,
    shape: &Shape,
    params: usize,
) -> Result<(Tensor, Tensor)> {
    let n = shape.elem_count();
    Ok((
        packed.narrow(0, 0, n)?.reshape(shape)?,
        packed.narrow(0, n, params)?,
    ))
}

/// The fused backward op on `(x, param, dy)`: `[dx (flattened), dparam]`, one vector of
/// `x.elem_count() + param.elem_count()` elements.
struct ChannelwiseGrad {
    planes: Planes,
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
        let out = run_cpu(self.name(), &self.planes, [(xs, xl), (ps, pl), (gs, gl)])?;
        let len = xl.shape().elem_count() + pl.shape().elem_count();
        Ok((out, Shape::from(len)))
    }
}

/// The per-channel sums `[C]` of `g` `[B, C, …]` (planes of `plane` elements): the gradient of
/// a per-channel bias.
fn channel_sums(g: &Tensor, channels: usize, plane: usize) -> Result<Tensor> {
    g.contiguous()?
        .apply_op1_no_bwd(&ChannelSums { channels, plane })
}

/// The op of [`channel_sums`].
struct ChannelSums {
    channels: usize,
    plane: usize,
}

impl Kernel<1> for ChannelSums {
    fn run<T: Float>(&self, [g]: [&[T]; 1]) -> Result<Vec<T>> {
        let sums: Vec<f64> = if self.plane > 0 && self.channels > 0 {
            g.par_chunks(self.plane)
                .with_min_len(min_planes(self.plane))
                .map(lane_sum)
                .collect()
        } else {
            Vec::new()
        };
        Ok(channel_totals(&sums, self.channels))
    }
}

/// The per-channel totals `[C]` of per-plane sums of a `[B, C, …]` tensor (plane `i` is
/// channel `i mod C`), added in f64 and converted once.
pub(crate) fn channel_totals<T: WithDType>(plane_sums: &[f64], channels: usize) -> Vec<T> {
    let mut totals = vec![0f64; channels];
    for (i, s) in plane_sums.iter().enumerate() {
        totals[i % channels] += s;
    }
    totals.into_iter().map(T::from_f64).collect()
}

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = run_cpu(self.name(), self, [(s, l)])?;
        Ok((out, Shape::from(self.channels)))
    }
}

/// The fused op of [`bias_residual_add`] on `(x, bias, skip)`.
struct Residual {
    channels: usize,
    plane: usize,
}

impl Kernel<3> for Residual {
    fn run<T: Float>(&self, [x, bias, skip]: [&[T]; 3]) -> Result<Vec<T>> {
        Ok(forward_planes(
            x,
            Some(skip),
            bias,
            self.channels,
            self.plane,
            |x, s, [b, _]| x + b + s,
        ))
    }
}

impl CustomOp3 for Residual {
    fn name(&self) -> &'static str {
        "bias_residual_add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = run_cpu(self.name(), self, [(xs, xl), (bs, bl), (ss, sl)])?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _bias: &Tensor,
        _skip: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dbias = channel_sums(grad, self.channels, self.plane)?;
        Ok((Some(grad.clone()), Some(dbias), Some(grad.clone())))
    }
}

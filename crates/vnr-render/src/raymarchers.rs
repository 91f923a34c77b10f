//! Ray marchers: per-ray densities and features along the samples → rendered features, opacity,
//! expected depth and per-sample weights.
//!
//! - [`EmissionAbsorptionRaymarcher`]: PyTorch3D's `EmissionAbsorptionRaymarcher`
//!   (`pytorch3d/renderer/implicit/raymarching.py`), densities are opacities in `[0, 1]`.
//! - [`AbsorptionOnlyRaymarcher`]: PyTorch3D's `AbsorptionOnlyRaymarcher`, silhouettes only.
//! - [`NerfRaymarcher`]: NeRF's quadrature, densities are volume densities `σ ≥ 0` integrated
//!   over the steps between samples (PyTorch3D's NeRF project: `projects/nerf/nerf/
//!   implicit_function.py` turns σ into opacities, `raymarcher.py` composites them).
//!
//! All are differentiable in densities, features and ray lengths. Expected depth is
//! `Σ_k w_k t_k` with the rendering weights `w` (not divided by the opacity, as PyTorch3D's
//! implicitron). A background colour, off by default as in PyTorch3D, is composited as
//! `c + (1 − opacity) · bg`.
//!
//! Two implementations compute the same values. On the CPU (f32, f64) one fused pass per ray
//! computes features, opacity, depth and weights, and one fused backward pass writes contiguous
//! gradients of all inputs: candle's generic autograd over a composition of ops spends most of
//! its time on intermediate tensors and strided gradient copies (about 2× slower on 64k rays ×
//! 128 samples, forward + backward). The per-ray recurrence of both passes is vnr-ops'
//! [`kernel::Ray`], the one that `vnr_ops::raymarch::ea_raymarch` runs too. Elsewhere, and as
//! the reference the fused kernels are tested against, `march_composed` composes
//! `vnr_ops::raymarch::ea_raymarch` (features and opacity) with `vnr_ops::cumulative::cumprod`
//! (weights) and tensor ops.

use std::sync::{Arc, Mutex};

use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType, D,
};
use rayon::prelude::*;
use vnr_ops::cumulative::cumprod;
use vnr_ops::raymarch::{ea_raymarch, kernel, EaRaymarchParams};

/// The result of marching a batch of rays.
#[derive(Debug, Clone)]
pub struct RenderedRays {
    /// Rendered features, `[..., F]` (`F = 0` for the absorption-only marcher).
    pub features: Tensor,
    /// Accumulated opacity `1 − Π_k (1 − α_k)`, `[..., 1]`.
    pub opacity: Tensor,
    /// Expected depth `Σ_k w_k t_k` in units of the ray lengths, `[..., 1]`.
    pub depth: Tensor,
    /// Rendering weight of each sample, `[..., P]`.
    pub weights: Tensor,
}

/// Composites per-sample densities and features along rays.
pub trait RayMarcher {
    /// Marches rays: `densities` `[..., P, 1]`, `features` `[..., P, F]` and the sample depths
    /// `ray_lengths` `[..., P]` (`P ≥ 1`) → [`RenderedRays`].
    fn march(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays>;
}

/// The step `δ` given to the last sample of each ray by [`NerfRaymarcher`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NerfLastStep {
    /// A fixed step (≥ 0); the NeRF paper (and PyTorch3D's NeRF) use `1e10`, so the last sample
    /// is opaque wherever σ > 0 (a far background).
    Constant(f64),
    /// The same step as the previous sample (the bin width), so the last sample is integrated
    /// like the others; needs `P ≥ 2`.
    PreviousStep,
}

impl Default for NerfLastStep {
    fn default() -> Self {
        Self::Constant(1e10)
    }
}

/// How densities become per-sample opacities `α`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Alpha {
    /// The densities are the opacities, in `[0, 1]`.
    Direct,
    /// `α = 1 − exp(−σ δ)` with the steps `δ` between samples.
    Nerf(NerfLastStep),
}

/// What distinguishes the marchers: `A_k = Π_{i ≤ k − s} (1 + eps − α_i)`, `w_k = α_k A_k`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MarchParams {
    alpha: Alpha,
    surface_thickness: usize,
    eps: f64,
}

impl MarchParams {
    /// The emission-absorption parameters of the opacities.
    fn ea(&self) -> EaRaymarchParams {
        EaRaymarchParams {
            surface_thickness: self.surface_thickness,
            eps: self.eps,
        }
    }

    fn check(&self) -> Result<()> {
        if self.surface_thickness == 0 {
            bail!("ray marcher: surface_thickness must be at least 1");
        }
        if !self.eps.is_finite() {
            bail!("ray marcher: eps must be finite, got {}", self.eps);
        }
        if let Alpha::Nerf(NerfLastStep::Constant(c)) = self.alpha {
            if !(0.0..).contains(&c) {
                bail!("NeRF ray marcher: the last step must be >= 0, got {c}");
            }
        }
        Ok(())
    }
}

/// Checks `densities` `[..., P, 1]`, `features` `[..., P, F]`, `lengths` `[..., P]`; returns
/// the ray dims.
fn check_inputs(densities: &Tensor, features: &Tensor, lengths: &Tensor) -> Result<RayDims> {
    let (d, f, l) = (densities.dims(), features.dims(), lengths.dims());
    let ok = d.len() >= 2
        && d[d.len() - 1] == 1
        && f.len() == d.len()
        && f[..f.len() - 1] == d[..d.len() - 1]
        && l == &d[..d.len() - 1];
    if !ok {
        bail!(
            "ray marcher: expected densities [..., P, 1], features [..., P, F] and lengths \
             [..., P], got {d:?}, {f:?} and {l:?}"
        );
    }
    let points = d[d.len() - 2];
    if points == 0 {
        bail!("ray marcher: rays need at least one sample, got densities {d:?}");
    }
    Ok(RayDims {
        rays: d[..d.len() - 2].iter().product(),
        points,
        features: f[f.len() - 1],
    })
}

/// Marches with `params` (fused on the CPU, composed elsewhere) and composites `background`.
fn march_with(
    params: MarchParams,
    densities: &Tensor,
    features: &Tensor,
    lengths: &Tensor,
    background: Option<&[f64]>,
) -> Result<RenderedRays> {
    params.check()?;
    let dims = check_inputs(densities, features, lengths)?;
    let features = features.to_dtype(densities.dtype())?;
    let lengths = lengths.to_dtype(densities.dtype())?;
    let fused = densities.device().is_cpu()
        && matches!(
            densities.dtype(),
            candle_core::DType::F32 | candle_core::DType::F64
        );
    let rendered = if fused {
        march_fused(params, dims, densities, &features, &lengths)?
    } else {
        march_composed(params, densities, &features, &lengths)?
    };
    Ok(RenderedRays {
        features: composite_background(rendered.features, &rendered.opacity, background)?,
        ..rendered
    })
}

/// `features + (1 − opacity) · background`, or `features` when there is no background.
fn composite_background(
    features: Tensor,
    opacity: &Tensor,
    background: Option<&[f64]>,
) -> Result<Tensor> {
    let Some(bg) = background else {
        return Ok(features);
    };
    let f = features.dim(D::Minus1)?;
    if bg.len() != f {
        bail!(
            "ray marcher: background has {} channels, features have {f}",
            bg.len()
        );
    }
    let bg = Tensor::new(bg, features.device())?.to_dtype(features.dtype())?;
    let transmitted = opacity.affine(-1.0, 1.0)?;
    features.broadcast_add(&transmitted.broadcast_mul(&bg)?)
}

/// The steps `δ` `[..., P]` between the samples `lengths` `[..., P]` (see [`NerfLastStep`]).
fn nerf_steps(lengths: &Tensor, last_step: NerfLastStep) -> Result<Tensor> {
    let last = lengths.rank().saturating_sub(1);
    let p = lengths.dim(last)?;
    if p == 0 {
        bail!("NeRF ray marcher: rays need at least one sample");
    }
    let diffs = (lengths.narrow(last, 1, p - 1)? - lengths.narrow(last, 0, p - 1)?)?;
    let final_step = match last_step {
        NerfLastStep::Constant(v) => (lengths.narrow(last, 0, 1)?.zeros_like()? + v)?,
        NerfLastStep::PreviousStep if p >= 2 => diffs.narrow(last, p - 2, 1)?,
        NerfLastStep::PreviousStep => {
            bail!("NeRF ray marcher: the previous-step last step needs at least 2 samples")
        }
    };
    Tensor::cat(&[&diffs, &final_step], last)
}

/// `A_k = Π_{i ≤ k − shift} q_i` along the last axis of `q` `[..., P]`: the exclusive cumulative
/// product delayed by `shift − 1` more samples, ones in front (PyTorch3D's `_shifted_cumprod`).
fn shifted_cumprod(q: &Tensor, shift: usize) -> Result<Tensor> {
    let last = q.rank() - 1;
    let p = q.dim(last)?;
    let exclusive = cumprod(q, last, true)?;
    let lead = shift.saturating_sub(1).min(p);
    if lead == 0 {
        return Ok(exclusive);
    }
    let ones = q.narrow(last, 0, lead)?.ones_like()?;
    Tensor::cat(&[&ones, &exclusive.narrow(last, 0, p - lead)?], last)
}

/// The marcher as a composition of tensor ops: `ea_raymarch` for features and opacity,
/// `cumprod` for the weights. Runs on any device; the reference of the fused CPU kernels.
fn march_composed(
    params: MarchParams,
    densities: &Tensor,
    features: &Tensor,
    lengths: &Tensor,
) -> Result<RenderedRays> {
    let d = densities.squeeze(D::Minus1)?;
    let alpha = match params.alpha {
        Alpha::Direct => d,
        Alpha::Nerf(last_step) => {
            let steps = nerf_steps(lengths, last_step)?;
            (d * steps)?.neg()?.exp()?.affine(-1.0, 1.0)?
        }
    };
    let fused = ea_raymarch(&alpha.unsqueeze(D::Minus1)?, features, &params.ea())?;
    let f = fused.dim(D::Minus1)? - 1;
    let absorption = shifted_cumprod(
        &alpha.affine(-1.0, 1.0 + params.eps)?,
        params.surface_thickness,
    )?;
    let weights = (&alpha * absorption)?;
    Ok(RenderedRays {
        features: fused.narrow(D::Minus1, 0, f)?,
        opacity: fused.narrow(D::Minus1, f, 1)?,
        depth: (&weights * lengths)?.sum_keepdim(D::Minus1)?,
        weights,
    })
}

/// The marcher through the fused CPU ops: one pass per ray computes `[..., F + 2]` (features,
/// opacity, depth) and the weights `[..., P]`, one backward pass the gradients of all inputs.
///
/// The inputs go to the ops as they are (no reshape node): every node between an input and
/// the op costs candle's backward a zero-filled gradient and an addition of its size.
fn march_fused(
    params: MarchParams,
    dims: RayDims,
    densities: &Tensor,
    features: &Tensor,
    lengths: &Tensor,
) -> Result<RenderedRays> {
    let d = densities.contiguous()?;
    let fe = features.contiguous()?;
    let t = lengths.contiguous()?;
    let handoff = Arc::new(Mutex::new(None));
    let summary = d.apply_op3(
        &fe,
        &t,
        FusedSummary {
            params,
            dims,
            shape: Shape::from([&t.dims()[..t.rank() - 1], &[dims.features + 2]].concat()),
            weights: Arc::clone(&handoff),
        },
    )?;
    let weights = d.apply_op2(
        &t,
        FusedWeights {
            params,
            dims,
            precomputed: handoff,
        },
    )?;
    let f = dims.features;
    Ok(RenderedRays {
        features: summary.narrow(D::Minus1, 0, f)?,
        opacity: summary.narrow(D::Minus1, f, 1)?,
        depth: summary.narrow(D::Minus1, f + 1, 1)?,
        weights,
    })
}

/// `R` rays of `P` samples with `F` feature channels.
#[derive(Debug, Clone, Copy)]
struct RayDims {
    rays: usize,
    points: usize,
    features: usize,
}

/// Float types of the fused kernels.
trait MarchFloat: WithDType {
    fn exp(self) -> Self;
}

impl MarchFloat for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl MarchFloat for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Fails unless the densities are valid for `params`: opacities in `[0, 1]`, or NeRF
/// densities `σ ≥ 0` along non-decreasing lengths (NaN fails both).
fn validate<T: MarchFloat>(d: &[T], t: &[T], dims: RayDims, params: &MarchParams) -> Result<()> {
    let (zero, one) = (T::zero(), T::one());
    match params.alpha {
        Alpha::Direct => {
            if let Some((i, v)) = d
                .iter()
                .enumerate()
                .find(|(_, v)| !(zero..=one).contains(*v))
            {
                bail!("ray marcher: density {v} at flat index {i} is outside [0, 1]");
            }
        }
        Alpha::Nerf(last_step) => {
            if let Some((i, v)) = d.iter().enumerate().find(|(_, v)| !(zero..).contains(*v)) {
                bail!("NeRF ray marcher: density {v} at flat index {i} is negative or NaN");
            }
            let p = dims.points;
            if last_step == NerfLastStep::PreviousStep && p < 2 {
                bail!("NeRF ray marcher: the previous-step last step needs at least 2 samples");
            }
            for (r, row) in t.chunks_exact(p).enumerate() {
                if row.windows(2).any(|w| !(w[0]..).contains(&w[1])) {
                    bail!("NeRF ray marcher: the lengths of ray {r} are not non-decreasing");
                }
            }
        }
    }
    Ok(())
}

/// One ray in the fused kernels: vnr-ops' emission-absorption [`kernel::Ray`] loaded with the
/// opacities of `params`, and the NeRF steps `δ_k`.
struct Ray<T> {
    ea: kernel::Ray<T>,
    /// `δ_k` (NeRF only).
    step: Vec<T>,
}

impl<T: MarchFloat> Ray<T> {
    fn new(points: usize, params: &MarchParams) -> Self {
        Self {
            ea: kernel::Ray::new(points, &params.ea()),
            step: vec![T::zero(); points],
        }
    }

    /// Loads the ray with densities `d` and lengths `t`.
    fn prepare(&mut self, d: &[T], t: &[T], params: &MarchParams) {
        let Alpha::Nerf(last_step) = params.alpha else {
            self.ea.set_opacities(d);
            return;
        };
        let p = d.len();
        for k in 0..p {
            self.step[k] = match (t.get(k + 1), last_step) {
                (Some(&next), _) => next - t[k],
                (None, NerfLastStep::Constant(c)) => T::from_f64(c),
                // validate() guarantees p >= 2 here.
                (None, NerfLastStep::PreviousStep) => t[k] - t[k - 1],
            };
            // 1 − α = exp(−σ δ), kept without cancellation.
            let clear = (T::zero() - d[k] * self.step[k]).exp();
            self.ea.clear[k] = clear;
            self.ea.alpha[k] = T::one() - clear;
        }
        self.ea.accumulate();
    }
}

/// The forward pass: `[R, F + 2]` (features, opacity `1 − Π (1 − α)` and depth `Σ w t` of
/// every ray) and the weights `w_k = α_k A_k` `[R, P]`.
fn forward_kernel<T: MarchFloat>(
    (d, f, t): (&[T], &[T], &[T]),
    dims: RayDims,
    params: &MarchParams,
) -> (Vec<T>, Vec<T>) {
    let RayDims {
        rays,
        points,
        features,
    } = dims;
    let width = features + 2;
    let mut summary = vec![T::zero(); rays * width];
    let mut weights = vec![T::zero(); rays * points];
    summary
        .par_chunks_mut(width)
        .zip(weights.par_chunks_mut(points))
        .enumerate()
        .for_each_init(
            || Ray::new(points, params),
            |ray, (r, (o, w))| {
                let tr = &t[r * points..(r + 1) * points];
                ray.prepare(&d[r * points..(r + 1) * points], tr, params);
                let (feat, rest) = o.split_at_mut(features);
                let mut depth = T::zero();
                let fr = &f[r * points * features..(r + 1) * points * features];
                ray.ea.composite(fr, feat, |k, wk| {
                    depth += wk * tr[k];
                    w[k] = wk;
                });
                rest[0] = ray.ea.opacity();
                rest[1] = depth;
            },
        );
    (summary, weights)
}

/// Validates the inputs and runs [`forward_kernel`] into CPU storages.
fn forward_storages<T: MarchFloat>(
    (d, f, t): (&[T], &[T], &[T]),
    dims: RayDims,
    params: &MarchParams,
) -> Result<(CpuStorage, CpuStorage)> {
    validate(d, t, dims, params)?;
    let (summary, weights) = forward_kernel((d, f, t), dims, params);
    Ok((
        T::to_cpu_storage_owned(summary),
        T::to_cpu_storage_owned(weights),
    ))
}

/// Upstream gradients of the fused outputs: of the summary `[R, F + 2]` and/or the weights
/// `[R, P]`.
struct Upstream<'a, T> {
    summary: Option<&'a [T]>,
    weights: Option<&'a [T]>,
}

/// Where [`backward_kernel`] writes: the gradients of the densities `[R, P]` and, when
/// wanted, of the features `[R, P, F]` and lengths `[R, P]`.
struct Gradients<'a, T> {
    densities: &'a mut [T],
    features: Option<&'a mut [T]>,
    lengths: Option<&'a mut [T]>,
}

/// Gradients of the densities, features and lengths of every ray.
///
/// The gradient of each weight is `h_k = g_f · f_k + g_depth t_k + g_{w_k}`, from which
/// [`kernel::Ray::backward`] gives `∂L/∂α_k`; `∂L/∂f_k = w_k g_f`, `∂L/∂t_k ∋ g_depth w_k`; for
/// NeRF `∂α/∂σ = δ (1 − α)`, `∂α/∂δ = σ (1 − α)` and `δ` is a difference of lengths.
fn backward_kernel<T: MarchFloat>(
    (d, f, t): (&[T], &[T], &[T]),
    dims: RayDims,
    params: &MarchParams,
    up: &Upstream<T>,
    out: Gradients<T>,
) {
    let RayDims {
        points, features, ..
    } = dims;
    let no_summary = vec![T::zero(); features + 2];
    // Rays are indexed: the optional outputs are split into per-ray chunks alongside.
    let f_rows: Vec<Option<&mut [T]>> = match out.features {
        Some(g) if features > 0 => g.chunks_mut(points * features).map(Some).collect(),
        _ => (0..dims.rays).map(|_| None).collect(),
    };
    let t_rows: Vec<Option<&mut [T]>> = match out.lengths {
        Some(g) => g.chunks_mut(points).map(Some).collect(),
        None => (0..dims.rays).map(|_| None).collect(),
    };
    out.densities
        .par_chunks_mut(points)
        .zip(f_rows)
        .zip(t_rows)
        .enumerate()
        .for_each_init(
            || Ray::new(points, params),
            |ray, (r, ((gd, mut gf), mut gt))| {
                let dr = &d[r * points..(r + 1) * points];
                let tr = &t[r * points..(r + 1) * points];
                ray.prepare(dr, tr, params);
                let gs = match up.summary {
                    Some(g) => &g[r * (features + 2)..(r + 1) * (features + 2)],
                    None => &no_summary[..],
                };
                let (g_feat, g_opacity, g_depth) =
                    (&gs[..features], gs[features], gs[features + 1]);
                let fr = &f[r * points * features..(r + 1) * points * features];
                ray.ea.set_feature_gradient(fr, g_feat);
                for (hk, &tk) in ray.ea.h.iter_mut().zip(tr) {
                    *hk += g_depth * tk;
                }
                if let Some(g) = up.weights {
                    for (hk, &gw) in ray.ea.h.iter_mut().zip(&g[r * points..(r + 1) * points]) {
                        *hk += gw;
                    }
                }
                let Ray { ea, step } = ray;
                ea.backward(g_opacity, |k, g_alpha, w| {
                    if let Some(gf) = gf.as_deref_mut() {
                        for (g, &gfc) in gf[k * features..(k + 1) * features].iter_mut().zip(g_feat)
                        {
                            *g = w * gfc;
                        }
                    }
                    let g_step = match params.alpha {
                        Alpha::Direct => {
                            gd[k] = g_alpha;
                            T::zero()
                        }
                        Alpha::Nerf(_) => {
                            let clear = ea.clear[k];
                            gd[k] = g_alpha * step[k] * clear;
                            g_alpha * dr[k] * clear
                        }
                    };
                    if let Some(gt) = gt.as_deref_mut() {
                        gt[k] += g_depth * w;
                        // δ_k = t_{k+1} − t_k; the last step copies the previous one or is a
                        // constant.
                        let span = match params.alpha {
                            Alpha::Nerf(_) if k + 1 < points => Some((k, k + 1)),
                            Alpha::Nerf(NerfLastStep::PreviousStep) => Some((k - 1, k)),
                            _ => None,
                        };
                        if let Some((lo, hi)) = span {
                            gt[hi] += g_step;
                            gt[lo] -= g_step;
                        }
                    }
                });
            },
        );
}

/// The contiguous slice of a CPU storage.
fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("fused ray marcher: inputs must be contiguous");
    };
    Ok(&s.as_slice::<T>()?[start..end])
}

/// The f32 or f64 slices of the densities, features and lengths given to a fused op, passed to
/// `run` with the float type bound.
macro_rules! with_march_slices {
    ($what:literal, ($ds:expr, $dl:expr), ($fs:expr, $fl:expr), ($ts:expr, $tl:expr), |$d:ident, $f:ident, $t:ident| $body:expr) => {
        match candle_core::backend::BackendStorage::dtype($ds) {
            candle_core::DType::F32 => {
                let ($d, $f, $t) = (
                    contiguous::<f32>($ds, $dl)?,
                    contiguous::<f32>($fs, $fl)?,
                    contiguous::<f32>($ts, $tl)?,
                );
                $body
            }
            candle_core::DType::F64 => {
                let ($d, $f, $t) = (
                    contiguous::<f64>($ds, $dl)?,
                    contiguous::<f64>($fs, $fl)?,
                    contiguous::<f64>($ts, $tl)?,
                );
                $body
            }
            dt => bail!("{}: unsupported dtype {dt:?}", $what),
        }
    };
}

/// The backward of both fused ops: `(densities [..., P, 1], features [..., P, F], lengths
/// [..., P])` → one flat buffer holding the density gradient, then (if wanted) the feature
/// gradient, then (if wanted) the length gradient, so each is a contiguous view of it.
struct FusedBackward {
    params: MarchParams,
    dims: RayDims,
    summary: Option<Tensor>,
    weights: Option<Tensor>,
    want_features: bool,
    want_lengths: bool,
}

impl FusedBackward {
    /// Lengths of the three parts of the output buffer.
    fn sizes(&self) -> (usize, usize, usize) {
        let n = self.dims.rays * self.dims.points;
        let nf = if self.want_features {
            n * self.dims.features
        } else {
            0
        };
        (n, nf, if self.want_lengths { n } else { 0 })
    }

    fn run<T: MarchFloat>(&self, d: &[T], f: &[T], t: &[T]) -> Result<CpuStorage> {
        let upstream = |g: &Option<Tensor>| -> Result<Option<Vec<T>>> {
            g.as_ref()
                .map(|g| g.flatten_all()?.to_vec1::<T>())
                .transpose()
        };
        let (summary, weights) = (upstream(&self.summary)?, upstream(&self.weights)?);
        let (n, nf, nt) = self.sizes();
        let mut buf = vec![T::zero(); n + nf + nt];
        let (gd, rest) = buf.split_at_mut(n);
        let (gf, gt) = rest.split_at_mut(nf);
        let out = Gradients {
            densities: gd,
            features: self.want_features.then_some(gf),
            lengths: self.want_lengths.then_some(gt),
        };
        let up = Upstream {
            summary: summary.as_deref(),
            weights: weights.as_deref(),
        };
        backward_kernel((d, f, t), self.dims, &self.params, &up, out);
        Ok(T::to_cpu_storage_owned(buf))
    }

    /// Runs the op and returns the gradients in the shapes of `d`, `f` and `t` (`None` where
    /// not wanted).
    fn apply(
        self,
        d: &Tensor,
        f: &Tensor,
        t: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let (n, nf, nt) = self.sizes();
        let flat = d.apply_op3_no_bwd(f, t, &self)?;
        let grad_d = flat.narrow(0, 0, n)?.reshape(d.shape())?;
        let grad_f = self
            .want_features
            .then(|| flat.narrow(0, n, nf)?.reshape(f.shape()))
            .transpose()?;
        let grad_t = self
            .want_lengths
            .then(|| flat.narrow(0, n + nf, nt)?.reshape(t.shape()))
            .transpose()?;
        Ok((grad_d, grad_f, grad_t))
    }
}

impl CustomOp3 for FusedBackward {
    fn name(&self) -> &'static str {
        "fused-march-backward"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        fs: &CpuStorage,
        fl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = with_march_slices!(
            "fused-march-backward",
            (ds, dl),
            (fs, fl),
            (ts, tl),
            |d, f, t| self.run(d, f, t)?
        );
        let (n, nf, nt) = self.sizes();
        Ok((out, Shape::from(n + nf + nt)))
    }
}

/// Weights computed by [`FusedSummary`]'s pass, handed to [`FusedWeights`] so that the rays
/// are marched once.
type WeightsHandoff = Arc<Mutex<Option<CpuStorage>>>;

/// `(densities [..., P, 1], features [..., P, F], lengths [..., P]) → [..., F + 2]`; leaves
/// the weights of the same pass in `weights`.
struct FusedSummary {
    params: MarchParams,
    dims: RayDims,
    /// `[..., F + 2]`.
    shape: Shape,
    weights: WeightsHandoff,
}

impl CustomOp3 for FusedSummary {
    fn name(&self) -> &'static str {
        "fused-march-summary"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        fs: &CpuStorage,
        fl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dims, p) = (self.dims, &self.params);
        let (summary, weights) = with_march_slices!(
            "fused-march-summary",
            (ds, dl),
            (fs, fl),
            (ts, tl),
            |d, f, t| forward_storages((d, f, t), dims, p)?
        );
        *self.weights.lock().unwrap_or_else(|e| e.into_inner()) = Some(weights);
        Ok((summary, self.shape.clone()))
    }

    fn bwd(
        &self,
        d: &Tensor,
        f: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let backward = FusedBackward {
            params: self.params,
            dims: self.dims,
            summary: Some(grad.clone()),
            weights: None,
            want_features: f.track_op(),
            want_lengths: t.track_op(),
        };
        let (gd, gf, gt) = backward.apply(d, f, t)?;
        Ok((Some(gd), gf, gt))
    }
}

/// `(densities [..., P, 1], lengths [..., P]) → weights [..., P]`, taken from the
/// [`FusedSummary`] pass that precedes it.
struct FusedWeights {
    params: MarchParams,
    dims: RayDims,
    precomputed: WeightsHandoff,
}

impl CustomOp2 for FusedWeights {
    fn name(&self) -> &'static str {
        "fused-march-weights"
    }

    fn cpu_fwd(
        &self,
        _ds: &CpuStorage,
        _dl: &Layout,
        _ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let taken = self
            .precomputed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match taken {
            Some(weights) => Ok((weights, tl.shape().clone())),
            None => bail!("fused ray marcher: the weights op ran without its summary pass"),
        }
    }

    fn bwd(
        &self,
        d: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let no_features = Tensor::zeros(0, d.dtype(), d.device())?;
        let backward = FusedBackward {
            params: self.params,
            dims: RayDims {
                features: 0,
                ..self.dims
            },
            summary: None,
            weights: Some(grad.clone()),
            want_features: false,
            want_lengths: t.track_op(),
        };
        let (gd, _, gt) = backward.apply(d, &no_features, t)?;
        Ok((Some(gd), gt))
    }
}

/// Emission-absorption ray marching of opacities `α ∈ [0, 1]` (PyTorch3D's
/// `EmissionAbsorptionRaymarcher`): absorption `A_k = Π_{i ≤ k − s} (1 + eps − α_i)`,
/// weights `w_k = α_k A_k`, features `Σ w_k f_k`, opacity `1 − Π (1 − α_k)`.
///
/// Densities outside `[0, 1]` are an error (PyTorch3D only warns).
#[derive(Debug, Clone, PartialEq)]
pub struct EmissionAbsorptionRaymarcher {
    /// How many samples the absorption lags behind the density `s` (≥ 1); PyTorch3D's
    /// default 1.
    pub surface_thickness: usize,
    /// Added to `1 − α` in the absorption so it never reaches 0; PyTorch3D's default `1e-10`.
    pub eps: f64,
    /// Background colour (one value per feature channel), or none (PyTorch3D).
    pub background: Option<Vec<f64>>,
}

impl Default for EmissionAbsorptionRaymarcher {
    fn default() -> Self {
        Self {
            surface_thickness: 1,
            eps: 1e-10,
            background: None,
        }
    }
}

impl EmissionAbsorptionRaymarcher {
    fn params(&self) -> MarchParams {
        MarchParams {
            alpha: Alpha::Direct,
            surface_thickness: self.surface_thickness,
            eps: self.eps,
        }
    }

    /// [`RayMarcher::march`] composed of tensor ops (`ea_raymarch`, `cumprod`) on any device:
    /// what non-CPU devices run, and the reference of the fused CPU kernels.
    pub fn march_composed(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays> {
        composed_with_background(
            self.params(),
            densities,
            features,
            ray_lengths,
            self.background.as_deref(),
        )
    }
}

impl RayMarcher for EmissionAbsorptionRaymarcher {
    fn march(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays> {
        march_with(
            self.params(),
            densities,
            features,
            ray_lengths,
            self.background.as_deref(),
        )
    }
}

/// [`march_composed`] with the input checks and background of [`march_with`].
fn composed_with_background(
    params: MarchParams,
    densities: &Tensor,
    features: &Tensor,
    lengths: &Tensor,
    background: Option<&[f64]>,
) -> Result<RenderedRays> {
    params.check()?;
    check_inputs(densities, features, lengths)?;
    let features = features.to_dtype(densities.dtype())?;
    let rendered = march_composed(
        params,
        densities,
        &features,
        &lengths.to_dtype(densities.dtype())?,
    )?;
    Ok(RenderedRays {
        features: composite_background(rendered.features, &rendered.opacity, background)?,
        ..rendered
    })
}

/// Absorption-only ray marching (PyTorch3D's `AbsorptionOnlyRaymarcher`): opacity
/// `1 − Π (1 − α_k)` of opacities `α ∈ [0, 1]`, for silhouettes. Features are ignored and
/// rendered as `[..., 0]`; the weights `α_k Π_{i<k} (1 − α_i)` are the share of the light
/// absorbed at each sample (they sum to the opacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbsorptionOnlyRaymarcher;

impl AbsorptionOnlyRaymarcher {
    const PARAMS: MarchParams = MarchParams {
        alpha: Alpha::Direct,
        surface_thickness: 1,
        eps: 0.0,
    };

    /// See [`EmissionAbsorptionRaymarcher::march_composed`].
    pub fn march_composed(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays> {
        let none = features.narrow(D::Minus1, 0, 0)?;
        composed_with_background(Self::PARAMS, densities, &none, ray_lengths, None)
    }
}

impl RayMarcher for AbsorptionOnlyRaymarcher {
    fn march(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays> {
        let none = features.narrow(D::Minus1, 0, 0)?;
        march_with(Self::PARAMS, densities, &none, ray_lengths, None)
    }
}

/// NeRF's volume rendering quadrature of densities `σ ≥ 0`: `δ_k = t_{k+1} − t_k` (the last
/// step per [`NerfLastStep`]), `α_k = 1 − exp(−σ_k δ_k)`, transmittance
/// `T_k = Π_{i<k} (1 − α_i + eps)`, weights `w_k = α_k T_k`, features `Σ w_k f_k` and opacity
/// `1 − Π (1 − α_k)`.
///
/// Steps are in units of the ray lengths: with non-unit ray directions, scale σ by the
/// direction's norm to integrate over world distance. Negative σ and decreasing lengths are
/// errors.
#[derive(Debug, Clone, PartialEq)]
pub struct NerfRaymarcher {
    /// Added to `1 − α` in the transmittance, as in PyTorch3D; default `1e-10`.
    pub eps: f64,
    /// The step of the last sample; default `1e10`.
    pub last_step: NerfLastStep,
    /// Background colour (one value per feature channel), or none.
    pub background: Option<Vec<f64>>,
}

impl Default for NerfRaymarcher {
    fn default() -> Self {
        Self {
            eps: 1e-10,
            last_step: NerfLastStep::default(),
            background: None,
        }
    }
}

impl NerfRaymarcher {
    fn params(&self) -> MarchParams {
        MarchParams {
            alpha: Alpha::Nerf(self.last_step),
            surface_thickness: 1,
            eps: self.eps,
        }
    }

    /// The steps `δ` `[..., P]` between the samples `lengths` `[..., P]`.
    pub fn steps(&self, lengths: &Tensor) -> Result<Tensor> {
        nerf_steps(lengths, self.last_step)
    }

    /// See [`EmissionAbsorptionRaymarcher::march_composed`].
    pub fn march_composed(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays> {
        composed_with_background(
            self.params(),
            densities,
            features,
            ray_lengths,
            self.background.as_deref(),
        )
    }
}

impl RayMarcher for NerfRaymarcher {
    fn march(
        &self,
        densities: &Tensor,
        features: &Tensor,
        ray_lengths: &Tensor,
    ) -> Result<RenderedRays> {
        march_with(
            self.params(),
            densities,
            features,
            ray_lengths,
            self.background.as_deref(),
        )
    }
}

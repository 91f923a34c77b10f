//! Fused emission-absorption ray marching (PyTorch3D's `EmissionAbsorptionRaymarcher`).
//!
//! Per ray with densities `d_j ∈ [0, 1]` and features `f_j`, `j < P`:
//! `q_j = (1 + eps) − d_j`, absorption `A_j = Π_{i ≤ j − s} q_i` (1 for `j < s`, where
//! `s = surface_thickness`), weights `w_j = d_j A_j`, rendered features `Σ_j w_j f_j` and
//! opacity `1 − Π_j (1 − d_j)`. Forward and backward are O(P) per ray; the backward uses
//! prefix products and a reverse recurrence instead of dividing by `q` or `1 − d`.
//!
//! The per-ray recurrence is public as [`kernel::Ray`], so that vnr-render's fused ray marchers
//! (NeRF opacities, depth, weights) run the same code rather than a copy of it.

use crate::cumulative::cumprod;
use crate::dispatch::{kernel_dtype, run_cpu, Float, Kernel};
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType, D,
};
use rayon::prelude::*;

/// Parameters of [`ea_raymarch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EaRaymarchParams {
    /// How many samples the absorption lags behind the density (PyTorch3D's
    /// `surface_thickness`); at least 1.
    pub surface_thickness: usize,
    /// Added to `1 − density` before the cumulative product so that it never reaches 0.
    pub eps: f64,
}

impl EaRaymarchParams {
    /// The absorption lag on rays of `points` samples: `surface_thickness`, clamped to the ray
    /// length. Any thickness from the length up gives the same result (every absorption is 1),
    /// and the clamp keeps `k + shift` from overflowing.
    pub fn shift(&self, points: usize) -> usize {
        self.surface_thickness.min(points)
    }
}

impl Default for EaRaymarchParams {
    fn default() -> Self {
        Self {
            surface_thickness: 1,
            eps: 1e-10,
        }
    }
}

/// Shape of a ray batch: `rays` rays of `points` samples with `features` channels.
#[derive(Debug, Clone, Copy)]
struct RayDims {
    rays: usize,
    points: usize,
    features: usize,
}

/// Checks the shapes of `densities` `[..., P, 1]` and `features` `[..., P, F]`.
fn ray_dims(densities: &[usize], features: &[usize]) -> Result<RayDims> {
    let rank = densities.len();
    if rank < 2 {
        bail!("ea_raymarch: densities must have shape [..., P, 1], got {densities:?}");
    }
    if densities[rank - 1] != 1 {
        bail!("ea_raymarch: the last dim of densities must be 1, got shape {densities:?}");
    }
    if features.len() != rank || features[..rank - 1] != densities[..rank - 1] {
        bail!(
            "ea_raymarch: features {features:?} must be [..., P, F] with the leading dims of \
             densities {densities:?}"
        );
    }
    Ok(RayDims {
        rays: densities[..rank - 2].iter().product(),
        points: densities[rank - 2],
        features: features[rank - 1],
    })
}

/// Checks the forward operands and returns their ray dims with the result shape `[..., F + 1]`.
fn forward_shape(densities: &Layout, features: &Layout) -> Result<(RayDims, Shape)> {
    let dims = ray_dims(densities.dims(), features.dims())?;
    let mut out_dims = features.dims().to_vec();
    out_dims.pop();
    out_dims.pop();
    out_dims.push(dims.features + 1);
    Ok((dims, Shape::from(out_dims)))
}

/// Checks the backward operands and returns their ray dims with the gradient shape
/// `[..., P, F + 1]`.
fn backward_shape(
    densities: &Layout,
    features: &Layout,
    grad_out: &Layout,
) -> Result<(RayDims, Shape)> {
    let dims = ray_dims(densities.dims(), features.dims())?;
    if grad_out.shape().elem_count() != dims.rays * (dims.features + 1) {
        bail!(
            "ea_raymarch-backward: gradient shape {:?} does not match the output",
            grad_out.shape()
        );
    }
    let mut out_dims = features.dims().to_vec();
    out_dims.pop();
    out_dims.push(dims.features + 1);
    Ok((dims, Shape::from(out_dims)))
}

/// The kernel launch parameters of one CUDA ray-marching call.
#[cfg(feature = "cuda")]
fn cuda_launch(dims: RayDims, p: &EaRaymarchParams) -> crate::cuda::RaymarchLaunch {
    crate::cuda::RaymarchLaunch {
        rays: dims.rays,
        points: dims.points,
        features: dims.features,
        shift: p.shift(dims.points),
        eps: p.eps,
    }
}

/// Fails unless every density lies in [0, 1] (NaN included).
fn check_density_bounds<T: WithDType>(densities: &[T]) -> Result<()> {
    let (zero, one) = (T::zero(), T::one());
    if let Some((i, d)) = densities
        .iter()
        .enumerate()
        .find(|(_, &d)| !(d >= zero && d <= one))
    {
        bail!("ea_raymarch: density {d} at flat index {i} is outside [0, 1]");
    }
    Ok(())
}

/// Per-ray building blocks of emission-absorption marching: the fused op of this module and
/// the fused ray marchers of `vnr-render` (which add NeRF opacities, expected depth and
/// per-sample weights) both march through [`kernel::Ray`].
pub mod kernel {
    use super::EaRaymarchParams;
    use candle_core::WithDType;

    /// One ray of `P` samples: its opacities `α_k`, transmissions `1 − α_k`, the exclusive
    /// prefix products `Π_{i<k} q_i` (`q_i = 1 + eps − α_i`) and `Π_{i<k} (1 − α_i)`, and the
    /// per-sample weight gradients `h_k` of the backward. Allocated once per thread and
    /// refilled for every ray.
    #[derive(Debug, Clone)]
    pub struct Ray<T> {
        /// `α_k ∈ [0, 1]`, `[P]`.
        pub alpha: Vec<T>,
        /// `1 − α_k`, `[P]` (a caller computing `α = 1 − exp(−x)` stores `exp(−x)` here, free of
        /// cancellation).
        pub clear: Vec<T>,
        /// `∂L/∂w_k`, the gradient of each rendering weight, `[P]`: filled by
        /// [`Ray::set_feature_gradient`], to which a caller may add its own terms before
        /// [`Ray::backward`].
        pub h: Vec<T>,
        excl_q: Vec<T>,
        excl_t: Vec<T>,
        transmittance: T,
        shift: usize,
        one_plus_eps: T,
    }

    impl<T: WithDType> Ray<T> {
        /// Scratch for rays of `points` samples marched with `params`.
        pub fn new(points: usize, params: &EaRaymarchParams) -> Self {
            let zeros = || vec![T::zero(); points];
            Self {
                alpha: zeros(),
                clear: zeros(),
                h: zeros(),
                excl_q: zeros(),
                excl_t: zeros(),
                transmittance: T::one(),
                shift: params.shift(points),
                one_plus_eps: T::from_f64(1.0 + params.eps),
            }
        }

        /// Loads a ray whose densities `d` `[P]` are the opacities.
        pub fn set_opacities(&mut self, d: &[T]) {
            for ((a, c), &dk) in self.alpha.iter_mut().zip(&mut self.clear).zip(d) {
                *a = dk;
                *c = T::one() - dk;
            }
            self.accumulate();
        }

        /// Computes the prefix products of `alpha` and `clear`; call after filling them.
        pub fn accumulate(&mut self) {
            let (mut q, mut t) = (T::one(), T::one());
            for k in 0..self.alpha.len() {
                self.excl_q[k] = q;
                self.excl_t[k] = t;
                q *= self.one_plus_eps - self.alpha[k];
                t *= self.clear[k];
            }
            self.transmittance = t;
        }

        /// The opacity `1 − Π_k (1 − α_k)`.
        pub fn opacity(&self) -> T {
            T::one() - self.transmittance
        }

        /// The absorption `A_k = Π_{i ≤ k − s} q_i` before sample `k`.
        pub fn absorption(&self, k: usize) -> T {
            self.excl_q[(k + 1).saturating_sub(self.shift)]
        }

        /// The rendering weight `w_k = α_k A_k`.
        pub fn weight(&self, k: usize) -> T {
            self.alpha[k] * self.absorption(k)
        }

        /// Adds `Σ_k w_k f_k` of the features `f` `[P, F]` to `out` `[F]` and calls
        /// `each(k, w_k)` for every sample.
        pub fn composite(&self, f: &[T], out: &mut [T], mut each: impl FnMut(usize, T)) {
            let features = out.len();
            for k in 0..self.alpha.len() {
                let w = self.weight(k);
                for (acc, &v) in out.iter_mut().zip(&f[k * features..(k + 1) * features]) {
                    *acc += w * v;
                }
                each(k, w);
            }
        }

        /// Sets `h_k = g_feat · f_k` from the features `f` `[P, F]` and the gradient of the
        /// rendered features `g_feat` `[F]`.
        pub fn set_feature_gradient(&mut self, f: &[T], g_feat: &[T]) {
            let features = g_feat.len();
            for (k, hk) in self.h.iter_mut().enumerate() {
                *hk = f[k * features..(k + 1) * features]
                    .iter()
                    .zip(g_feat)
                    .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
            }
        }

        /// The backward pass of the ray from the weight gradients `h` and the opacity gradient
        /// `g_opacity`: calls `each(k, ∂L/∂α_k, w_k)` from the last sample to the first.
        ///
        /// With `u_m = α_{m+s} h_{m+s}` (0 past the end) and `S_k = u_k + q_{k+1} S_{k+1}`:
        /// `∂L/∂α_k = A_k h_k − Π_{i<k} q_i · S_k + g_opacity Π_{i≠k} (1 − α_i)`, a reverse
        /// recurrence that never divides by `q` or `1 − α`.
        pub fn backward(&self, g_opacity: T, mut each: impl FnMut(usize, T, T)) {
            let (alpha, h, shift) = (&self.alpha, &self.h, self.shift);
            let mut s_next = T::zero();
            let mut suffix_clear = T::one();
            for k in (0..alpha.len()).rev() {
                let u = match alpha.get(k + shift) {
                    Some(&a) => a * h[k + shift],
                    None => T::zero(),
                };
                let s = match alpha.get(k + 1) {
                    Some(&a) => u + (self.one_plus_eps - a) * s_next,
                    None => u,
                };
                let absorption = self.absorption(k);
                let g_alpha = absorption * h[k] - self.excl_q[k] * s
                    + g_opacity * self.excl_t[k] * suffix_clear;
                each(k, g_alpha, alpha[k] * absorption);
                s_next = s;
                suffix_clear *= self.clear[k];
            }
        }
    }
}

/// Forward kernel: densities `[R, P]`, features `[R, P, F]` → `[R, F + 1]`.
fn forward_kernel<T: WithDType>(d: &[T], f: &[T], dims: RayDims, p: &EaRaymarchParams) -> Vec<T> {
    let RayDims {
        rays,
        points,
        features,
    } = dims;
    let mut out = vec![T::zero(); rays * (features + 1)];
    if points == 0 {
        return out;
    }
    // Rays are indexed rather than zipped: with F = 0 `features` has no chunks to zip with.
    out.par_chunks_mut(features + 1).enumerate().for_each_init(
        || kernel::Ray::new(points, p),
        |ray, (r, o)| {
            ray.set_opacities(&d[r * points..(r + 1) * points]);
            let (feat, opacity) = o.split_at_mut(features);
            ray.composite(
                &f[r * points * features..(r + 1) * points * features],
                feat,
                |_, _| {},
            );
            opacity[0] = ray.opacity();
        },
    );
    out
}

/// Backward kernel: densities `[R, P]`, features `[R, P, F]`, output gradient `[R, F + 1]` →
/// `[R, P, F + 1]` holding the density gradient in column 0 and the feature gradient after
/// (see [`kernel::Ray::backward`]; `∂L/∂f_k = w_k g_f`).
fn backward_kernel<T: WithDType>(
    d: &[T],
    f: &[T],
    grad_out: &[T],
    dims: RayDims,
    p: &EaRaymarchParams,
) -> Vec<T> {
    let RayDims {
        rays,
        points,
        features,
    } = dims;
    let width = features + 1;
    let mut grads = vec![T::zero(); rays * points * width];
    if points == 0 {
        return grads;
    }
    grads
        .par_chunks_mut(points * width)
        .enumerate()
        .for_each_init(
            || kernel::Ray::new(points, p),
            |ray, (r, gr)| {
                ray.set_opacities(&d[r * points..(r + 1) * points]);
                let go = &grad_out[r * width..(r + 1) * width];
                let (g_feat, g_opacity) = (&go[..features], go[features]);
                ray.set_feature_gradient(
                    &f[r * points * features..(r + 1) * points * features],
                    g_feat,
                );
                ray.backward(g_opacity, |k, g_alpha, w| {
                    let row = &mut gr[k * width..(k + 1) * width];
                    row[0] = g_alpha;
                    for (gf, &g) in row[1..].iter_mut().zip(g_feat) {
                        *gf = w * g;
                    }
                });
            },
        );
    grads
}

/// One marching problem on the CPU: the forward from `(densities, features)` (checking the
/// densities' range), the backward from `(densities, features, grad_out)`.
struct March(RayDims, EaRaymarchParams);

impl Kernel<2> for March {
    fn run<T: Float>(&self, [d, f]: [&[T]; 2]) -> Result<Vec<T>> {
        check_density_bounds(d)?;
        Ok(forward_kernel(d, f, self.0, &self.1))
    }
}

impl Kernel<3> for March {
    fn run<T: Float>(&self, [d, f, g]: [&[T]; 3]) -> Result<Vec<T>> {
        Ok(backward_kernel(d, f, g, self.0, &self.1))
    }
}

/// The forward op; records its backward.
struct EaRaymarch(EaRaymarchParams);

impl CustomOp2 for EaRaymarch {
    fn name(&self) -> &'static str {
        "ea_raymarch"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        fs: &CpuStorage,
        fl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dims, shape) = forward_shape(dl, fl)?;
        let out = run_cpu("ea_raymarch", &March(dims, self.0), [(ds, dl), (fs, fl)])?;
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
        fs: &candle_core::CudaStorage,
        fl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (dims, shape) = forward_shape(dl, fl)?;
        let out = crate::cuda::ea_raymarch_forward((ds, dl), (fs, fl), cuda_launch(dims, &self.0))?;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        densities: &Tensor,
        features: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grads = densities.apply_op3_no_bwd(
            features,
            &grad_res.contiguous()?,
            &EaRaymarchBackward(self.0),
        )?;
        let n_features = features.dim(D::Minus1)?;
        let grad_d = grads.narrow(D::Minus1, 0, 1)?;
        let grad_f = grads.narrow(D::Minus1, 1, n_features)?;
        Ok((Some(grad_d), Some(grad_f)))
    }
}

/// `(densities, features, grad_out) -> [..., P, F + 1]` gradients; records no backward.
struct EaRaymarchBackward(EaRaymarchParams);

impl CustomOp3 for EaRaymarchBackward {
    fn name(&self) -> &'static str {
        "ea_raymarch-backward"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        fs: &CpuStorage,
        fl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dims, shape) = backward_shape(dl, fl, gl)?;
        let march = March(dims, self.0);
        let out = run_cpu(
            "ea_raymarch-backward",
            &march,
            [(ds, dl), (fs, fl), (gs, gl)],
        )?;
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
        fs: &candle_core::CudaStorage,
        fl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (dims, shape) = backward_shape(dl, fl, gl)?;
        let out = crate::cuda::ea_raymarch_backward(
            (ds, dl),
            (fs, fl),
            (gs, gl),
            cuda_launch(dims, &self.0),
        )?;
        Ok((out, shape))
    }
}

fn check_params(p: &EaRaymarchParams) -> Result<()> {
    if p.surface_thickness == 0 {
        bail!("ea_raymarch: surface_thickness must be at least 1");
    }
    if !p.eps.is_finite() {
        bail!("ea_raymarch: eps must be finite, got {}", p.eps);
    }
    Ok(())
}

/// Emission-absorption ray marching, fused: `densities` `[..., P, 1]` in [0, 1] (an error
/// otherwise) and `features` `[..., P, F]` → `[..., F + 1]` (rendered features, then opacity).
/// Differentiable in both inputs; f16/bf16 run in f32.
pub fn ea_raymarch(densities: &Tensor, features: &Tensor, p: &EaRaymarchParams) -> Result<Tensor> {
    check_params(p)?;
    ray_dims(densities.dims(), features.dims())?;
    if densities.dtype() != features.dtype() {
        bail!(
            "ea_raymarch: densities ({:?}) and features ({:?}) must share a dtype",
            densities.dtype(),
            features.dtype()
        );
    }
    let dtype = kernel_dtype("ea_raymarch", densities.dtype())?;
    let d = densities.to_dtype(dtype)?.contiguous()?;
    let f = features.to_dtype(dtype)?.contiguous()?;
    d.apply_op2(&f, EaRaymarch(*p))?.to_dtype(densities.dtype())
}

/// The same computation as [`ea_raymarch`] composed of tensor ops (PyTorch3D's formulation,
/// with this crate's [`cumprod`]): the reference the fused op is tested against.
pub mod reference {
    use super::*;

    /// Emission-absorption ray marching as PyTorch3D writes it; same contract as
    /// [`ea_raymarch`](super::ea_raymarch).
    pub fn ea_raymarch(
        densities: &Tensor,
        features: &Tensor,
        p: &EaRaymarchParams,
    ) -> Result<Tensor> {
        check_params(p)?;
        let dims = ray_dims(densities.dims(), features.dims())?;
        let d = densities.squeeze(D::Minus1)?;
        let last = d.rank() - 1;
        let q = d.affine(-1.0, 1.0 + p.eps)?;
        let cum = cumprod(&q, last, false)?;
        let shift = p.shift(dims.points);
        let ones = d.narrow(last, 0, shift)?.ones_like()?;
        let absorption = Tensor::cat(&[&ones, &cum.narrow(last, 0, dims.points - shift)?], last)?;
        let weights = (d.clone() * absorption)?.unsqueeze(D::Minus1)?;
        let rendered = features.broadcast_mul(&weights)?.sum(last)?;
        let transmittance = cumprod(&d.affine(-1.0, 1.0)?, last, false)?;
        let opacity = if dims.points == 0 {
            rendered.sum_keepdim(D::Minus1)?.zeros_like()?
        } else {
            transmittance
                .narrow(last, dims.points - 1, 1)?
                .affine(-1.0, 1.0)?
        };
        Tensor::cat(&[&rendered, &opacity], D::Minus1)
    }
}

//! PyTorch3D's NeRF tutorial model (`docs/tutorials/fit_simple_neural_radiance_field.ipynb`,
//! class `NeuralRadianceField`), with the tutorial's parameter names so weights cross over, and
//! the NeRF paper's density form.
//!
//! For points `x` `[..., P, 3]` and ray directions `d` `[..., 3]`:
//! - `γ(x)` = [`harmonic_embedding`] without the appended input (PyTorch3D's layout, frequencies
//!   `omega_0 · 2^k`, `k < n`): `[..., P, 6n]`;
//! - `h = softplus₁₀(mlp.2(softplus₁₀(mlp.0(γ(x)))))` `[..., P, H]` (Softplus with β = 10);
//! - `raw = softplus₁₀(density_layer.0(h))` `[..., P, 1]`, the bias of `density_layer.0` starting
//!   at −1.5; the density is `1 − exp(−raw)` (an opacity in `[0, 1)`, for the
//!   emission–absorption marcher) in [`DensityMode::Opacity`] (the tutorial), or `σ = raw ≥ 0`
//!   in [`DensityMode::Sigma`] (the paper's volume density, integrated over step lengths by
//!   [`vnr_render::raymarchers::NerfRaymarcher`]);
//! - colours `sigmoid(color_layer.2(softplus₁₀(color_layer.0([h, γ(d / ‖d‖)]))))` `[..., P, 3]`.
//!
//! `color_layer.0` is applied as `W_h h + W_d γ(d̂) + b` with its weight split by columns, which
//! equals the tutorial's concatenation but evaluates the direction part once per ray instead of
//! once per sample.
//!
//! Parameters (PyTorch `nn.Linear` layout `weight [out, in]`, `bias [out]`, default uniform
//! `±1/√in` init): `mlp.0`, `mlp.2`, `density_layer.0`, `color_layer.0`, `color_layer.2`. The
//! tutorial's `harmonic_embedding.frequencies` buffer is not a parameter here (it follows from
//! the config).

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor, D,
};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vnr_ops::embedding::{harmonic_embedding, HarmonicEmbeddingParams};
use vnr_render::field::{Field, FieldSamples};

use crate::layers::torch_uniform;
use crate::limits::{at_most, MAX_CHANNELS};
use crate::seeded::seeded_var_builder;
use vnr_ops::dispatch::capped_elements;

/// Most harmonic frequencies of a [`NerfConfig`]: 1,024 (the tutorial uses 60; frequencies
/// `omega_0 · 2^k` beyond `k ≈ 1024` are not finite in f64).
pub const MAX_HARMONIC_FUNCTIONS: usize = 1024;

/// What the density head's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DensityMode {
    /// The tutorial: `1 − exp(−raw)`, an opacity per sample (emission–absorption marcher).
    #[default]
    Opacity,
    /// The NeRF paper: `σ = raw`, a volume density integrated over the steps between samples.
    Sigma,
}

/// Hyper-parameters of [`NeuralRadianceField`]; `Default` is the tutorial's (60 harmonics,
/// `omega_0 = 0.1`, 256 hidden units, opacity densities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NerfConfig {
    /// Number of harmonic frequencies `n` (points and directions alike).
    pub n_harmonic_functions: usize,
    /// Base frequency of the embedding.
    pub omega_0: f64,
    /// Hidden width `H`.
    pub n_hidden_neurons: usize,
    /// How the density head's output is read.
    pub density: DensityMode,
}

impl Default for NerfConfig {
    fn default() -> Self {
        Self {
            n_harmonic_functions: 60,
            omega_0: 0.1,
            n_hidden_neurons: 256,
            density: DensityMode::Opacity,
        }
    }
}

impl NerfConfig {
    /// A small model for CPU experiments and tests: 10 harmonics with base frequency 1 (so the
    /// highest frequency resolves about 1/500 of a unit scene), 64 hidden units.
    pub fn small() -> Self {
        Self {
            n_harmonic_functions: 10,
            omega_0: 1.0,
            n_hidden_neurons: 64,
            density: DensityMode::Opacity,
        }
    }

    /// The embedding's parameters (PyTorch3D's tutorial embedding has no appended input).
    pub fn embedding(&self) -> HarmonicEmbeddingParams {
        HarmonicEmbeddingParams {
            n_harmonic_functions: self.n_harmonic_functions,
            omega_0: self.omega_0,
            logspace: true,
            append_input: false,
        }
    }

    /// Width of the embedding of a 3-vector, `6n`, or an error when that overflows.
    pub fn embedding_dim(&self) -> Result<usize> {
        self.embedding().get_output_dim(3)
    }

    /// Refuses sizes that build no network, non-finite frequencies, more than
    /// [`MAX_HARMONIC_FUNCTIONS`] frequencies or [`MAX_CHANNELS`] hidden neurons, and layers
    /// too large to allocate.
    pub fn validate(&self) -> Result<()> {
        if self.n_harmonic_functions == 0 || self.n_hidden_neurons == 0 {
            bail!(
                "NeRF config: n_harmonic_functions ({}) and n_hidden_neurons ({}) must be at least 1",
                self.n_harmonic_functions,
                self.n_hidden_neurons
            );
        }
        if !(self.omega_0.is_finite() && self.omega_0 > 0.0) {
            bail!(
                "NeRF config: omega_0 must be finite and > 0, got {}",
                self.omega_0
            );
        }
        at_most(
            "NeRF config: n_harmonic_functions",
            self.n_harmonic_functions,
            MAX_HARMONIC_FUNCTIONS,
        )
        .and_then(|_| {
            at_most(
                "NeRF config: n_hidden_neurons",
                self.n_hidden_neurons,
                MAX_CHANNELS,
            )
        })
        .map_err(candle_core::Error::wrap)?;
        for (name, in_dim, out_dim, _) in layer_specs(self)? {
            capped_elements("NeRF config", &format!("{name} weight"), &[out_dim, in_dim])?;
        }
        Ok(())
    }
}

/// `torch.nn.Softplus(beta)`: `log(1 + exp(β x)) / β` of any shape, differentiable.
///
/// On the CPU (f32, f64) one fused pass per element (forward) and `grad · sigmoid(β x)`
/// (backward): the composition in [`softplus_reference`] costs eight tensors and their
/// gradients per activation, most of a small MLP's time. Elsewhere the reference runs.
pub fn softplus(x: &Tensor, beta: f64) -> Result<Tensor> {
    if !(beta.is_finite() && beta > 0.0) {
        bail!("softplus: beta must be finite and > 0, got {beta}");
    }
    match (x.device(), x.dtype()) {
        (Device::Cpu, DType::F32 | DType::F64) => x.contiguous()?.apply_op1(Softplus { beta }),
        _ => softplus_reference(x, beta),
    }
}

/// [`softplus`] composed of tensor ops, `relu(x) + log(1 + exp(−β|x|)) / β`, so large inputs
/// neither overflow nor lose precision (torch switches to `x` above `β x > 20`; the two differ
/// by less than `1e-9 / β` there). Any device; the reference of the fused CPU op.
pub fn softplus_reference(x: &Tensor, beta: f64) -> Result<Tensor> {
    let tail = ((x.abs()? * -beta)?.exp()? + 1.0)?.log()?;
    x.relu()? + (tail / beta)?
}

/// The fused CPU softplus.
struct Softplus {
    beta: f64,
}

/// Elements per rayon task.
const SOFTPLUS_GRAIN: usize = 1 << 14;

/// `f` over `src`, in parallel chunks.
fn map_slice<T: Copy + Default + Send + Sync>(src: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::default(); src.len()];
    out.par_chunks_mut(SOFTPLUS_GRAIN)
        .zip(src.par_chunks(SOFTPLUS_GRAIN))
        .for_each(|(o, s)| {
            for (o, &x) in o.iter_mut().zip(s) {
                *o = f(x);
            }
        });
    out
}

impl CustomOp1 for Softplus {
    fn name(&self) -> &'static str {
        "softplus"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("softplus: the input must be contiguous");
        };
        let out = match storage {
            CpuStorage::F32(v) => {
                let b = self.beta as f32;
                CpuStorage::F32(map_slice(&v[start..end], |x| {
                    let z = b * x;
                    (z.max(0.0) + (-z.abs()).exp().ln_1p()) / b
                }))
            }
            CpuStorage::F64(v) => {
                let b = self.beta;
                CpuStorage::F64(map_slice(&v[start..end], |x| {
                    let z = b * x;
                    (z.max(0.0) + (-z.abs()).exp().ln_1p()) / b
                }))
            }
            other => bail!("softplus: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let slope = candle_nn::ops::sigmoid(&(arg.detach() * self.beta)?)?;
        Ok(Some(grad.mul(&slope)?))
    }
}

/// PyTorch's `nn.Linear(in_dim, out_dim)` under `vb` (`weight`, `bias`), uniform `±1/√in`
/// init; the bias starts at `bias_init` when given.
fn torch_linear(
    in_dim: usize,
    out_dim: usize,
    bias_init: Option<f64>,
    vb: VarBuilder,
) -> Result<Linear> {
    let init = torch_uniform(in_dim);
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = vb.get_with_hints(out_dim, "bias", bias_init.map_or(init, Init::Const))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Applies `layer` to `x` `[..., in]` viewed as rows `[M, in]` → `[..., out]`.
fn rows(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let (lead, last) = dims.split_at(dims.len() - 1);
    let m: usize = lead.iter().product();
    let y = layer.forward(&x.reshape((m, last[0]))?)?;
    let mut out = lead.to_vec();
    out.push(y.dim(1)?);
    y.reshape(out)
}

/// The tutorial's `NeuralRadianceField` (see the module docs).
#[derive(Debug, Clone)]
pub struct NeuralRadianceField {
    cfg: NerfConfig,
    mlp: [Linear; 2],
    density_layer: Linear,
    color_layer: [Linear; 2],
}

/// Softplus β of every hidden activation (the tutorial's `Softplus(beta=10.0)`).
const BETA: f64 = 10.0;
/// Initial bias of the density head (the tutorial's `density_layer[0].bias.data[0] = -1.5`).
const DENSITY_BIAS: f64 = -1.5;

/// A linear layer: checkpoint name, `in`, `out` and the bias init when not the default.
type LayerSpec = (&'static str, usize, usize, Option<f64>);

/// The linear layers, in checkpoint order.
fn layer_specs(cfg: &NerfConfig) -> Result<[LayerSpec; 5]> {
    let (e, h) = (cfg.embedding_dim()?, cfg.n_hidden_neurons);
    let Some(color_in) = h.checked_add(e) else {
        bail!("NeRF: {h} hidden neurons and a {e}-wide embedding are too many");
    };
    Ok([
        ("mlp.0", e, h, None),
        ("mlp.2", h, h, None),
        ("density_layer.0", h, 1, Some(DENSITY_BIAS)),
        ("color_layer.0", color_in, h, None),
        ("color_layer.2", h, 3, None),
    ])
}

impl NeuralRadianceField {
    /// Builds (or loads, from a `VarBuilder` over saved tensors) the model.
    pub fn new(cfg: NerfConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let [mlp0, mlp2, density, color0, color2] =
            layer_specs(&cfg)?.map(|(name, i, o, bias)| torch_linear(i, o, bias, vb.pp(name)));
        Ok(Self {
            cfg,
            mlp: [mlp0?, mlp2?],
            density_layer: density?,
            color_layer: [color0?, color2?],
        })
    }

    /// Builds the model with its parameters in `vars`, initialised from `seed` (PyTorch's
    /// default init, drawn by [`seeded_var_builder`] so a seed reproduces the run; candle's own
    /// CPU initialisers cannot be seeded). Parameters already in `vars` are kept.
    pub fn seeded(cfg: NerfConfig, vars: &VarMap, seed: u64, device: &Device) -> Result<Self> {
        Self::new(cfg, seeded_var_builder(vars, seed, DType::F32, device))
    }

    /// The configuration.
    pub fn config(&self) -> &NerfConfig {
        &self.cfg
    }

    /// Number of parameter values: `(6n + 1)H + (H + 1)H + (H + 1) + (H + 6n + 1)H + 3(H + 1)`.
    pub fn param_count(&self) -> usize {
        let linear = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, |b| b.elem_count());
        self.mlp
            .iter()
            .chain(&self.color_layer)
            .map(linear)
            .sum::<usize>()
            + linear(&self.density_layer)
    }

    /// Point features `h` `[..., P, H]` of points `[..., P, 3]`.
    pub fn features(&self, points: &Tensor) -> Result<Tensor> {
        let embedded = harmonic_embedding(points, &self.cfg.embedding())?;
        let h = softplus(&rows(&self.mlp[0], &embedded)?, BETA)?;
        softplus(&rows(&self.mlp[1], &h)?, BETA)
    }

    /// Densities `[..., P, 1]` from features `[..., P, H]` (see [`DensityMode`]).
    pub fn densities(&self, features: &Tensor) -> Result<Tensor> {
        let raw = softplus(&rows(&self.density_layer, features)?, BETA)?;
        match self.cfg.density {
            DensityMode::Opacity => 1.0 - raw.neg()?.exp()?,
            DensityMode::Sigma => Ok(raw),
        }
    }

    /// Colours `[..., P, 3]` in `(0, 1)` from features `[..., P, H]` and ray directions
    /// `[..., 3]` (any length; normalised as torch's `F.normalize`).
    pub fn colours(&self, features: &Tensor, directions: &Tensor) -> Result<Tensor> {
        let h = self.cfg.n_hidden_neurons;
        let first = &self.color_layer[0];
        let weight = first.weight();
        let norm = directions
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .maximum(1e-12)?;
        let unit = directions.broadcast_div(&norm)?;
        let embedded = harmonic_embedding(&unit, &self.cfg.embedding())?;
        let w_h = Linear::new(weight.narrow(1, 0, h)?, first.bias().cloned());
        let w_d = Linear::new(weight.narrow(1, h, weight.dim(1)? - h)?, None);
        let per_ray = rows(&w_d, &embedded)?.unsqueeze(D::Minus2)?;
        let hidden = softplus(&rows(&w_h, features)?.broadcast_add(&per_ray)?, BETA)?;
        candle_nn::ops::sigmoid(&rows(&self.color_layer[1], &hidden)?)
    }

    /// Densities `[..., P, 1]` and colours `[..., P, 3]` of points `[..., P, 3]` seen along
    /// directions `[..., 3]` (the tutorial's `forward` on a ray bundle's points).
    pub fn forward(&self, points: &Tensor, directions: &Tensor) -> Result<(Tensor, Tensor)> {
        let pd = points.dims();
        let dd = directions.dims();
        if pd.len() < 2 || pd[pd.len() - 1] != 3 || dd != [&pd[..pd.len() - 2], &[3]].concat() {
            bail!(
                "NeuralRadianceField: points must be [..., P, 3] and directions [..., 3], got {pd:?} and {dd:?}"
            );
        }
        let features = self.features(points)?;
        Ok((
            self.densities(&features)?,
            self.colours(&features, directions)?,
        ))
    }
}

impl Field for NeuralRadianceField {
    /// Needs the ray directions (the colour head is view dependent).
    fn query(&self, points: &Tensor, directions: Option<&Tensor>) -> Result<FieldSamples> {
        let Some(directions) = directions else {
            bail!("NeuralRadianceField: the colour head needs ray directions");
        };
        let (densities, features) = self.forward(points, directions)?;
        Ok(FieldSamples {
            densities,
            features,
        })
    }

    fn feature_dim(&self) -> usize {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_matches_torch_formula_and_is_stable() -> Result<()> {
        let x = Tensor::new(&[-100f32, -1.0, 0.0, 0.05, 1.0, 100.0], &Device::Cpu)?;
        let y = softplus(&x, 10.0)?.to_vec1::<f32>()?;
        let want: Vec<f32> = [-100f64, -1.0, 0.0, 0.05, 1.0, 100.0]
            .iter()
            .map(|&v| {
                if v * 10.0 > 20.0 {
                    v as f32
                } else {
                    ((1.0 + (10.0 * v).exp()).ln() / 10.0) as f32
                }
            })
            .collect();
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn fused_softplus_agrees_with_the_reference_and_finite_differences() -> Result<()> {
        let v = vnr_ops::gradcheck::deterministic_values(3000, 5, -3.0, 3.0);
        let x = Tensor::from_vec(v, (30, 100), &Device::Cpu)?.to_dtype(DType::F32)?;
        for dtype in [DType::F32, DType::F64] {
            let x = x.to_dtype(dtype)?;
            let fused = softplus(&x, 10.0)?.to_dtype(DType::F64)?;
            let reference = softplus_reference(&x, 10.0)?.to_dtype(DType::F64)?;
            let err = (fused - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-6, "{dtype:?}: {err}");
        }
        // A strided input is made contiguous first.
        let t = x.t()?;
        let err = (softplus(&t, 2.0)? - softplus_reference(&t, 2.0)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(err < 1e-6);
        let small = x.narrow(0, 0, 2)?.narrow(1, 0, 10)?.to_dtype(DType::F64)?;
        vnr_ops::gradcheck::check_gradients(
            |t| softplus(&t[0], 10.0),
            &[small],
            &vnr_ops::gradcheck::GradCheckConfig::default(),
        )?;
        assert!(softplus(&x, 0.0).is_err());
        Ok(())
    }

    #[test]
    fn default_model_has_the_tutorial_size_and_density_bias() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = NeuralRadianceField::new(NerfConfig::default(), vb)?;
        // torch: sum(p.numel() for p in NeuralRadianceField().parameters())
        let (e, h) = (360, 256);
        let want = (e + 1) * h + (h + 1) * h + (h + 1) + (h + e + 1) * h + (h + 1) * 3;
        assert_eq!(m.param_count(), want);
        let bias = m.density_layer.bias().expect("bias").to_vec1::<f32>()?;
        assert_eq!(bias, [-1.5]);
        Ok(())
    }
}

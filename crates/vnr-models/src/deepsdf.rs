//! DeepSDF's auto-decoder (`networks/deep_sdf_decoder.py`) and its latent code table.
//!
//! Layer widths are `[latent + 3, dims…, 1]`; a row of the input is `[latent…, x, y, z]`.
//! Layer `l` is `lin{l}`; before a layer listed in `latent_in` the whole input row is
//! concatenated again (so the layer before it outputs `dims[l] − (latent + 3)`); with
//! `xyz_in_all`, `x, y, z` are concatenated before every other layer after the first (and the
//! layer before outputs 3 fewer). Hidden layers: (LayerNorm `bn{l}` when the layer is in
//! `norm_layers` without weight norm) → ReLU → dropout (layers in `dropout`, train only).
//! A hidden layer's bias, ReLU and dropout run as one fused op
//! ([`bias_relu_dropout`]) with counter-based masks:
//! one key per dropout call, in layer order, from `dropout_seed` or
//! [`DeepSdfDecoder::reseed_dropout`], so a reseeded decoder repeats its masks whatever the
//! thread count.
//! Layers in `norm_layers` use weight norm when `weight_norm` (`lin{l}.weight_g`,
//! `lin{l}.weight_v`, `lin{l}.bias`), others `lin{l}.weight`, `lin{l}.bias`. `use_tanh` adds a
//! tanh after the last layer, and — as the original code does — a final tanh (`th`) is applied
//! in every case, so with `use_tanh` the output is `tanh(tanh(·))`.
//!
//! The reference specs (latent 256, 8×512, latent injected at layer 4, weight norm on lin0–7)
//! give 1,843,195 parameters.

use std::collections::HashSet;
use std::path::Path;

use candle_core::{bail, DType, Module, ModuleT, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vnr_ops::nn::dropout::{bias_relu_dropout, dropout, DropoutKeys};
use vnr_ops::nn::linear::{weight_norm_linear, WeightNormLinear};
use vnr_ops::nn::norm::{layer_norm, LayerNorm};

use crate::config::{parse_json, read_text};
use crate::limits::{at_most, config_elements, MAX_BLOCKS, MAX_CHANNELS};
use crate::seeded::standard_normal;
use crate::summary::Summary;
use crate::ConfigError;
use vnr_ops::dispatch::capped_elements;

/// DeepSDF decoder hyper-parameters: `CodeLength` and the `NetworkSpecs` of a `specs.json`.
/// `Default` is the reference chairs/NeoRender specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepSdfConfig {
    /// Length of a latent code (`CodeLength`).
    pub latent_size: usize,
    /// Hidden layer widths.
    pub dims: Vec<usize>,
    /// Hidden layers followed by dropout.
    pub dropout: Vec<usize>,
    /// Dropout probability.
    pub dropout_prob: f64,
    /// Layers with weight norm (or LayerNorm when `weight_norm` is off).
    pub norm_layers: Vec<usize>,
    /// Layers whose input gets the whole input row concatenated.
    pub latent_in: Vec<usize>,
    /// Concatenate `x, y, z` before every layer after the first.
    pub xyz_in_all: bool,
    /// Extra tanh after the last layer (before the always-applied final tanh).
    pub use_tanh: bool,
    /// Dropout (p = 0.2) on the latent part of the input.
    pub latent_dropout: bool,
    /// Weight norm on the layers in `norm_layers`.
    pub weight_norm: bool,
    /// Seed of the dropout masks.
    pub dropout_seed: u64,
}

impl Default for DeepSdfConfig {
    fn default() -> Self {
        Self::with_widths(256, 512)
    }
}

/// `NetworkSpecs` keys this decoder understands (DeepSDF passes them as keyword arguments).
const SPEC_KEYS: [&str; 9] = [
    "dims",
    "dropout",
    "dropout_prob",
    "norm_layers",
    "latent_in",
    "xyz_in_all",
    "use_tanh",
    "latent_dropout",
    "weight_norm",
];

impl DeepSdfConfig {
    /// The reference layout with latent `latent` and 8 hidden layers of `width`.
    fn with_widths(latent: usize, width: usize) -> Self {
        Self {
            latent_size: latent,
            dims: vec![width; 8],
            dropout: (0..8).collect(),
            dropout_prob: 0.2,
            norm_layers: (0..8).collect(),
            latent_in: vec![4],
            xyz_in_all: false,
            use_tanh: false,
            latent_dropout: false,
            weight_norm: true,
            dropout_seed: 0,
        }
    }

    /// NeoRender's narrow preset: latent 16, 8×32.
    pub fn narrow16() -> Self {
        Self::with_widths(16, 32)
    }

    /// NeoRender's narrow preset: latent 32, 8×64.
    pub fn narrow32() -> Self {
        Self::with_widths(32, 64)
    }

    /// A named preset: `deepsdf` (the reference), `narrow16`, `narrow32`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "deepsdf" | "default" => Some(Self::default()),
            "narrow16" | "deepsdf-narrow16" => Some(Self::narrow16()),
            "narrow32" | "deepsdf-narrow32" => Some(Self::narrow32()),
            _ => None,
        }
    }

    /// From the text of a DeepSDF `specs.json`: `CodeLength` and `NetworkSpecs` (missing
    /// optional keys take the `Decoder` constructor's defaults: no dropout, no norm, no latent
    /// re-injection, no weight norm). `what` names the document in errors.
    pub fn from_specs(text: &str, what: &str) -> std::result::Result<Self, ConfigError> {
        let root: Value = parse_json(text, what)?;
        if let Some(arch) = root.get("NetworkArch") {
            if arch.as_str() != Some("deep_sdf_decoder") {
                return Err(ConfigError::field(
                    what,
                    "NetworkArch",
                    format!("is {arch}, only \"deep_sdf_decoder\" is this network"),
                ));
            }
        }
        let latent = root
            .get("CodeLength")
            .ok_or_else(|| ConfigError::field(what, "CodeLength", "is missing"))?;
        let latent_size = latent
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                ConfigError::field(
                    what,
                    "CodeLength",
                    format!("must be a non-negative integer, got {latent}"),
                )
            })?;
        let specs = root
            .get("NetworkSpecs")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ConfigError::field(what, "NetworkSpecs", "is missing or not an object")
            })?;
        if let Some(unknown) = specs.keys().find(|k| !SPEC_KEYS.contains(&k.as_str())) {
            return Err(ConfigError::field(
                what,
                &format!("NetworkSpecs.{unknown}"),
                "is not a parameter of deep_sdf_decoder",
            ));
        }
        let field = |key: &str| specs.get(key).filter(|v| !v.is_null());
        let list = |key: &str| -> std::result::Result<Vec<usize>, ConfigError> {
            match field(key) {
                None => Ok(Vec::new()),
                Some(v) => v
                    .as_array()
                    .and_then(|items| {
                        items
                            .iter()
                            .map(|i| i.as_u64().and_then(|u| usize::try_from(u).ok()))
                            .collect()
                    })
                    .ok_or_else(|| {
                        ConfigError::field(
                            what,
                            &format!("NetworkSpecs.{key}"),
                            format!("must be a list of non-negative integers, got {v}"),
                        )
                    }),
            }
        };
        let flag = |key: &str| -> std::result::Result<bool, ConfigError> {
            match field(key) {
                None => Ok(false),
                Some(v) => v.as_bool().ok_or_else(|| {
                    ConfigError::field(
                        what,
                        &format!("NetworkSpecs.{key}"),
                        format!("must be true or false, got {v}"),
                    )
                }),
            }
        };
        if field("dims").is_none() {
            return Err(ConfigError::field(what, "NetworkSpecs.dims", "is missing"));
        }
        let dropout_prob = match field("dropout_prob") {
            None => 0.0,
            Some(v) => v.as_f64().ok_or_else(|| {
                ConfigError::field(
                    what,
                    "NetworkSpecs.dropout_prob",
                    format!("must be a number, got {v}"),
                )
            })?,
        };
        let cfg = Self {
            latent_size,
            dims: list("dims")?,
            dropout: list("dropout")?,
            dropout_prob,
            norm_layers: list("norm_layers")?,
            latent_in: list("latent_in")?,
            xyz_in_all: flag("xyz_in_all")?,
            use_tanh: flag("use_tanh")?,
            latent_dropout: flag("latent_dropout")?,
            weight_norm: flag("weight_norm")?,
            dropout_seed: 0,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a DeepSDF `specs.json`.
    pub fn from_specs_file(path: &Path) -> std::result::Result<Self, ConfigError> {
        Self::from_specs(&read_text(path)?, &path.display().to_string())
    }

    /// Reads a DeepSDF `specs.json` (recognised by its `NetworkSpecs` key) or a JSON or TOML
    /// (`.toml`) file of this struct.
    pub fn from_file(path: &Path) -> std::result::Result<Self, ConfigError> {
        if crate::config::is_toml(path) {
            let cfg: Self = crate::config::read_struct(path)?;
            cfg.validate()?;
            return Ok(cfg);
        }
        let text = read_text(path)?;
        let what = path.display().to_string();
        let root: Value = parse_json(&text, &what)?;
        if root.get("NetworkSpecs").is_some() {
            return Self::from_specs(&text, &what);
        }
        let cfg: Self =
            serde_json::from_value(root).map_err(|source| ConfigError::Json { what, source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Widths `[latent + 3, dims…, 1]` (`latent + 3` saturates for a `latent_size` that
    /// [`Self::validate`] refuses).
    pub fn layer_widths(&self) -> Vec<usize> {
        let mut widths = Vec::with_capacity(self.dims.len() + 2);
        widths.push(self.latent_size.saturating_add(3));
        widths.extend_from_slice(&self.dims);
        widths.push(1);
        widths
    }

    /// `(in, out)` of each linear layer, with the re-injection and `xyz_in_all` reductions; an
    /// error when a layer leaves no outputs or its weight is too large to allocate.
    pub fn linear_shapes(&self) -> std::result::Result<Vec<(usize, usize)>, ConfigError> {
        let widths = self.layer_widths();
        let last = widths.len() - 2;
        (0..=last)
            .map(|layer| {
                let next = widths[layer + 1];
                let taken = if self.latent_in.contains(&(layer + 1)) {
                    widths[0]
                } else if self.xyz_in_all && layer != last {
                    3
                } else {
                    0
                };
                match next.checked_sub(taken) {
                    Some(out) if out > 0 => {
                        let what = format!("lin{layer} weight");
                        config_elements("deepsdf", &what, &[out, widths[layer]])?;
                        Ok((widths[layer], out))
                    }
                    _ => Err(ConfigError::invalid(format!(
                        "deepsdf: layer {} is {next} wide, which leaves nothing after the {taken} concatenated inputs",
                        layer + 1
                    ))),
                }
            })
            .collect()
    }

    /// Checks widths, indices and the dropout probability. `latent_size` and the hidden widths
    /// are at most [`MAX_CHANNELS`], the hidden layers at most [`MAX_BLOCKS`].
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        // Caps first: they keep `latent + 3` and the weight sizes below from overflowing.
        at_most(
            "deepsdf: latent_size (CodeLength)",
            self.latent_size,
            MAX_CHANNELS,
        )?;
        at_most(
            "deepsdf: the number of hidden layers",
            self.dims.len(),
            MAX_BLOCKS,
        )?;
        if let Some(&widest) = self.dims.iter().max() {
            at_most("deepsdf: a hidden width", widest, MAX_CHANNELS)?;
        }
        if self.dims.contains(&0) {
            return Err(ConfigError::invalid(
                "deepsdf: hidden widths must be positive",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout_prob) {
            return Err(ConfigError::invalid(format!(
                "deepsdf: dropout_prob {} must be in [0, 1)",
                self.dropout_prob
            )));
        }
        if self.latent_in.contains(&0) {
            return Err(ConfigError::invalid(
                "deepsdf: latent_in cannot hold layer 0 (it already takes the input)",
            ));
        }
        let layers = self.dims.len() + 1;
        if let Some(l) = self.latent_in.iter().find(|&&l| l >= layers) {
            return Err(ConfigError::invalid(format!(
                "deepsdf: latent_in layer {l} does not exist ({layers} layers)"
            )));
        }
        self.linear_shapes().map(|_| ())
    }
}

/// One linear layer, weight-normed or plain (`nn.Linear`: `weight` `[out, in]`, `bias`
/// `[out]`).
#[derive(Debug, Clone)]
enum DecoderLinear {
    Plain { weight: Tensor, bias: Tensor },
    WeightNorm(WeightNormLinear),
}

impl DecoderLinear {
    /// `x Wᵀ` `[N, out]` for rows `x` `[N, in]`, without the bias (the caller fuses it with
    /// what follows).
    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let weight = match self {
            Self::Plain { weight, .. } => weight.clone(),
            Self::WeightNorm(l) => l.weight()?,
        };
        x.matmul(&weight.t()?)
    }

    fn bias(&self) -> &Tensor {
        match self {
            Self::Plain { bias, .. } => bias,
            Self::WeightNorm(l) => l.bias(),
        }
    }

    fn param_count(&self) -> usize {
        match self {
            Self::Plain { weight, bias } => weight.elem_count() + bias.elem_count(),
            Self::WeightNorm(l) => {
                l.weight_g().elem_count() + l.weight_v().elem_count() + l.bias().elem_count()
            }
        }
    }

    fn device(&self) -> &candle_core::Device {
        self.bias().device()
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "Linear",
            Self::WeightNorm(_) => "WeightNormLinear",
        }
    }
}

/// PyTorch's `nn.Linear` (parameters `weight`, `bias`, uniform `±1/√in` init).
fn torch_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<DecoderLinear> {
    let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(DecoderLinear::Plain { weight, bias })
}

/// The DeepSDF decoder: rows `[N, latent + 3]` (`[latent…, x, y, z]`) → SDF `[N, 1]` in
/// `(−1, 1)`.
#[derive(Debug, Clone)]
pub struct DeepSdfDecoder {
    cfg: DeepSdfConfig,
    linears: Vec<DecoderLinear>,
    layer_norms: Vec<Option<LayerNorm>>,
    dropout: DropoutKeys,
}

/// Probability of the latent dropout, fixed in the original.
const LATENT_DROPOUT: f64 = 0.2;

impl DeepSdfDecoder {
    /// Builds the decoder; parameter names as the original `state_dict` (`lin0.weight_g`, …).
    pub fn new(cfg: DeepSdfConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let shapes = cfg.linear_shapes().map_err(candle_core::Error::wrap)?;
        let mut linears = Vec::with_capacity(shapes.len());
        let mut layer_norms = Vec::with_capacity(shapes.len());
        for (layer, &(in_dim, out_dim)) in shapes.iter().enumerate() {
            let normed = cfg.norm_layers.contains(&layer);
            let lin_vb = vb.pp(format!("lin{layer}"));
            linears.push(if cfg.weight_norm && normed {
                DecoderLinear::WeightNorm(weight_norm_linear(in_dim, out_dim, lin_vb)?)
            } else {
                torch_linear(in_dim, out_dim, lin_vb)?
            });
            // The original creates `bn{l}` for any listed layer, the last included, but only
            // applies those of hidden layers; creating it keeps checkpoints loadable.
            layer_norms.push(if !cfg.weight_norm && normed {
                Some(layer_norm(out_dim, 1e-5, vb.pp(format!("bn{layer}")))?)
            } else {
                None
            });
        }
        let dropout = DropoutKeys::new(cfg.dropout_seed);
        Ok(Self {
            cfg,
            linears,
            layer_norms,
            dropout,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DeepSdfConfig {
        &self.cfg
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &candle_core::Device {
        // `validate` guarantees at least one layer.
        self.linears[0].device()
    }

    /// Restarts the dropout masks from `seed`.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout.reseed(seed);
    }

    /// Decodes `latents` `[N, latent]` at points `xyz` `[N, 3]`.
    pub fn decode(&self, latents: &Tensor, xyz: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(&Tensor::cat(&[latents, xyz], 1)?, train)
    }

    /// Describes every layer for `batch` input rows.
    pub fn summary(&self, batch: usize) -> Result<Summary> {
        let mut s = Summary::new("DeepSdfDecoder", &[batch, self.cfg.latent_size + 3]);
        let widths = self.cfg.layer_widths();
        let shapes = self.cfg.linear_shapes().map_err(candle_core::Error::wrap)?;
        let mut width = widths[0];
        for ((layer, lin), &(_, out_dim)) in self.linears.iter().enumerate().zip(&shapes) {
            if self.cfg.latent_in.contains(&layer) {
                width += widths[0];
                s.push("latent_in", "Concat", &[batch, width], 0);
            } else if layer != 0 && self.cfg.xyz_in_all {
                width += 3;
                s.push("xyz_in", "Concat", &[batch, width], 0);
            }
            width = out_dim;
            s.push(
                &format!("lin{layer}"),
                lin.kind(),
                &[batch, width],
                lin.param_count(),
            );
            if let Some(Some(norm)) = self.layer_norms.get(layer) {
                s.push(
                    &format!("bn{layer}"),
                    "LayerNorm",
                    &[batch, width],
                    norm.weight().elem_count() + norm.bias().elem_count(),
                );
            }
        }
        Ok(s)
    }
}

impl ModuleT for DeepSdfDecoder {
    /// `[N, latent + 3]` → `[N, 1]`.
    fn forward_t(&self, input: &Tensor, train: bool) -> Result<Tensor> {
        let (_, width) = input.dims2()?;
        let expected = self.cfg.latent_size + 3;
        if width != expected {
            bail!(
                "deepsdf: input rows must be [latent({}), x, y, z] = {expected} wide, got {width}",
                self.cfg.latent_size
            );
        }
        let xyz = input.narrow(1, self.cfg.latent_size, 3)?;
        let mut x = if train && self.cfg.latent_dropout && self.cfg.latent_size > 0 {
            let latent = input.narrow(1, 0, self.cfg.latent_size)?;
            let latent = dropout(&latent, LATENT_DROPOUT, self.dropout.next_key())?;
            Tensor::cat(&[&latent, &xyz], 1)?
        } else {
            input.clone()
        };
        let last = self.linears.len() - 1;
        for (layer, lin) in self.linears.iter().enumerate() {
            if self.cfg.latent_in.contains(&layer) {
                x = Tensor::cat(&[&x, input], 1)?;
            } else if layer != 0 && self.cfg.xyz_in_all {
                x = Tensor::cat(&[&x, &xyz], 1)?;
            }
            x = lin.matmul(&x)?;
            if layer == last {
                x = x.broadcast_add(lin.bias())?;
                if self.cfg.use_tanh {
                    x = x.tanh()?;
                }
            } else {
                // Dropout is drawn only in training, one key per layer in order, so that a
                // reseeded decoder repeats its masks.
                let (p, key) = if train && self.cfg.dropout.contains(&layer) {
                    (self.cfg.dropout_prob, self.dropout.next_key())
                } else {
                    (0.0, 0)
                };
                x = match self.layer_norms.get(layer) {
                    Some(Some(norm)) => {
                        let normed = norm.forward(&x.broadcast_add(lin.bias())?)?;
                        let no_bias =
                            Tensor::zeros(normed.dim(1)?, normed.dtype(), normed.device())?;
                        bias_relu_dropout(&normed, &no_bias, p, key)?
                    }
                    _ => bias_relu_dropout(&x, lin.bias(), p, key)?,
                };
            }
        }
        x.tanh()
    }
}

/// The per-shape latent codes: an embedding table `[num_codes, latent]` (parameter `weight`,
/// as `torch.nn.Embedding`), initialised `N(0, (std/√latent)²)` and, like
/// `nn.Embedding(max_norm=…)`, renormalising every looked-up row whose L2 norm exceeds the
/// bound to `max_norm / (norm + 1e-7)` times itself, in place, before the lookup.
#[derive(Debug, Clone)]
pub struct LatentCodes {
    weight: Tensor,
    max_norm: Option<f64>,
}

impl LatentCodes {
    /// Fresh codes drawn from `rng` (DeepSDF: `CodeInitStdDev` 1, `CodeBound` 1) and stored
    /// under `vb` as `weight`, or loaded from it when `vb` already holds them. A table of
    /// more than [`MAX_ELEMENTS`](crate::limits::MAX_ELEMENTS) values is an error.
    pub fn new(
        num_codes: usize,
        latent_size: usize,
        init_std: f64,
        max_norm: Option<f64>,
        rng: &mut impl Rng,
        vb: VarBuilder,
    ) -> Result<Self> {
        if latent_size == 0 {
            bail!("latent codes: latent_size must be positive");
        }
        if !(init_std.is_finite() && init_std >= 0.0) {
            bail!("latent codes: init_std {init_std} must be finite and non-negative");
        }
        let count = capped_elements(
            "latent codes",
            "table [num_codes, latent_size]",
            &[num_codes, latent_size],
        )?;
        let std = init_std / (latent_size as f64).sqrt();
        let fresh = !vb.contains_tensor("weight");
        let weight = vb.get_with_hints((num_codes, latent_size), "weight", Init::Const(0.0))?;
        if fresh {
            let values: Vec<f32> = (0..count)
                .map(|_| (std * standard_normal(rng)) as f32)
                .collect();
            let fresh = Tensor::from_vec(values, (num_codes, latent_size), weight.device())?
                .to_dtype(weight.dtype())?;
            weight.slice_set(&fresh, 0, 0)?;
        }
        Ok(Self { weight, max_norm })
    }

    /// The table `[num_codes, latent]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Looks up `indices` (u32/i64, any shape) → `[..., latent]`, first renormalising the
    /// referenced rows whose norm exceeds `max_norm` (in place, outside the gradient, as torch).
    pub fn forward(&self, indices: &Tensor) -> Result<Tensor> {
        let flat = indices.flatten_all()?.to_dtype(DType::U32)?;
        let (num_codes, latent) = self.weight.dims2()?;
        let ids = flat.to_vec1::<u32>()?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= num_codes) {
            bail!("latent codes: index {bad} out of range for {num_codes} codes");
        }
        if let Some(max_norm) = self.max_norm {
            let unique: HashSet<u32> = ids.iter().copied().collect();
            for id in unique {
                let row = self.weight.detach().narrow(0, id as usize, 1)?;
                let norm = row
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .sqrt()?
                    .to_scalar::<f64>()?;
                if norm > max_norm {
                    let scaled = row.affine(max_norm / (norm + 1e-7), 0.0)?;
                    self.weight.slice_set(&scaled, 0, id as usize)?;
                }
            }
        }
        let mut shape = indices.dims().to_vec();
        shape.push(latent);
        self.weight.index_select(&flat, 0)?.reshape(shape)
    }
}

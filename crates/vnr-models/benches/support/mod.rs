//! The training steps the `train_step` benches run: forward, the original's loss, backward
//! and the original's optimiser update (the trainer's `Optimizer`), on deterministic inputs of
//! the same sizes as `tools/bench/train_step_peer.py`'s PyTorch models.

use candle_core::{Device, Tensor};
use vnr_models::convdeconv::ConvDeconvConfig;
use vnr_models::convdeconv_train::{self, ConvDeconvModel};
use vnr_models::rendernet::{bce_loss, RenderNetConfig};
use vnr_models::rendernet_train::{self, RenderNetModel};
use vnr_train::config::TrainConfig;
use vnr_train::metrics::l1;
use vnr_train::optim::{param_groups, Optimizer};
use vnr_train::Model;

/// Errors of building or running a step.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Seed of the weights (the timings do not depend on it).
const SEED: u64 = 0;

/// The named cases: `(name, what it is)`. `convdeconv_v001_256` (48 M parameters) is for the
/// peak-memory measurement only.
pub const CASES: [(&str, &str); 4] = [
    (
        "rendernet_small_b4",
        "RenderNet small, batch 4, 32-voxel patch: [4, 1, 32, 32, 64] → [4, 1, 64, 64], BCE, Adam β1 0.5",
    ),
    (
        "convdeconv_small32_b8",
        "ConvDeconv small32, batch 8: [8, 1, 32³] → [8, 1, 32, 32], L1, Adam",
    ),
    (
        "convdeconv_small64_b4",
        "ConvDeconv small64, batch 4: [4, 1, 64³] → [4, 1, 256, 256], L1, Adam",
    ),
    (
        "convdeconv_v001_256_b1",
        "ConvDeconv v001 (reference), batch 1: [1, 1, 256³] → [1, 1, 256, 256], L1, Adam",
    ),
];

/// Deterministic values in `[0, 1)` of this shape: `torch_peer.filled` mapped from `[-1, 1)`
/// (`((i·7919) mod 2001) / 2000`), the same sequence the PyTorch side uses.
pub fn filled01(shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as u64 * 7919) % 2001) as f32 / 2000.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// One case ready to step: the loss closure and the optimiser over its parameters.
pub struct Step {
    loss: Box<dyn Fn() -> Result<Tensor>>,
    optimizer: Optimizer,
}

impl Step {
    /// The case named `name` (one of [`CASES`]).
    pub fn new(name: &str) -> Result<Self> {
        match name {
            "rendernet_small_b4" => rendernet(RenderNetConfig::small(), 4, 32),
            "convdeconv_small32_b8" => convdeconv(ConvDeconvConfig::small32(), 8),
            "convdeconv_small64_b4" => convdeconv(ConvDeconvConfig::small64(), 4),
            "convdeconv_v001_256_b1" => convdeconv(ConvDeconvConfig::v001(), 1),
            _ => Err(format!("unknown case {name}; one of {:?}", CASES.map(|c| c.0)).into()),
        }
    }

    /// Forward, loss, backward and one optimiser update; returns the loss.
    pub fn run(&mut self) -> Result<f32> {
        let loss = (self.loss)()?;
        let grads = loss.backward()?;
        self.optimizer.step(&grads)?;
        Ok(loss.to_scalar::<f32>()?)
    }
}

fn optimizer(model: &impl Model, config: TrainConfig) -> Result<Optimizer> {
    let groups = param_groups(model.vars(), &config.groups)?;
    Ok(Optimizer::new(config.optimizer, groups)?)
}

/// RenderNet on an image-aligned patch `[B, 1, p, p, N]` (as a training step sees it after
/// the resampling and the crop) against the `(p·f)²` image patch.
fn rendernet(cfg: RenderNetConfig, batch: usize, patch: usize) -> Result<Step> {
    let (n, r) = (cfg.resampled_size, cfg.output_size());
    let f = r / n;
    let model = RenderNetModel::new(cfg, Some(patch), SEED, &Device::Cpu)?;
    let optimizer = optimizer(&model, rendernet_train::train_config(1, batch, 1e-3, 200)?)?;
    let grid = filled01(&[batch, 1, patch, patch, n])?;
    let target = filled01(&[batch, 1, patch * f, patch * f])?;
    Ok(Step {
        loss: Box::new(move || {
            let pred = model.net().forward_aligned(&grid, true)?;
            Ok(bce_loss(&pred, &target)?)
        }),
        optimizer,
    })
}

/// ConvDeconv on volumes `[B, 1, S, S, S]` against images `[B, 1, R, R]`.
fn convdeconv(cfg: ConvDeconvConfig, batch: usize) -> Result<Step> {
    let input = filled01(&cfg.input_dims(batch))?;
    let r = cfg.output_size();
    let target = filled01(&[batch, 1, r, r])?;
    let model = ConvDeconvModel::new(cfg, SEED, &Device::Cpu)?;
    let optimizer = optimizer(&model, convdeconv_train::train_config(1, batch))?;
    Ok(Step {
        loss: Box::new(move || Ok(l1(&model.predict(&input)?, &target)?)),
        optimizer,
    })
}

//! Training [`ConvDeconv`] with the [`vnr_train::Trainer`], as VoxelNeuralRender does: L1
//! loss, Adam at `3e-4` ([`train_config`]).
//!
//! A batch is a [`Batch`] of VoxelNeuralRender's chunk files (as
//! [`crate::generated::write_convdeconv`] writes them): `inputs` camera-space volumes
//! `[B, 1, S, S, S]` and `targets` images `[B, R, R, 1]` (channels last, as the original
//! stores them; `[B, 1, R, R]` is accepted too). Metrics: the mean per-image PSNR.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use vnr_formats::dataset::Batch;
use vnr_train::config::TrainConfig;
use vnr_train::metrics::l1;
use vnr_train::optim::{AdamConfig, GroupConfig, OptimizerConfig};
use vnr_train::schedule::LrSchedule;
use vnr_train::{Model, StepOutput, TrainError};

use crate::convdeconv::{ConvDeconv, ConvDeconvConfig};
use crate::rendernet_train::mean_image_psnr;
use crate::seeded::seeded_var_builder;

/// Result with the trainer's error.
type Result<T> = std::result::Result<T, TrainError>;

/// VoxelNeuralRender's learning rate.
pub const LEARNING_RATE: f64 = 3e-4;

/// ConvDeconv as a trainable [`Model`].
pub struct ConvDeconvModel {
    net: ConvDeconv,
    vars: VarMap,
}

impl ConvDeconvModel {
    /// A freshly initialised network on `device`, its weights drawn from `seed` (PyTorch's
    /// default init, see [`crate::seeded`]).
    pub fn new(cfg: ConvDeconvConfig, seed: u64, device: &Device) -> Result<Self> {
        let vars = VarMap::new();
        let net = ConvDeconv::new(cfg, seeded_var_builder(&vars, seed, DType::F32, device))?;
        Ok(Self { net, vars })
    }

    /// The network.
    pub fn net(&self) -> &ConvDeconv {
        &self.net
    }

    /// Images `[B, 1, R, R]` for volumes `[B, 1, S, S, S]`.
    pub fn predict(&self, volumes: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward(&volumes.to_dtype(DType::F32)?)?)
    }
}

/// Targets as `[B, 1, R, R]`, from channels-last `[B, R, R, 1]` or already channels-first.
pub fn targets_chw(targets: &Tensor, size: usize) -> Result<Tensor> {
    let t = targets.to_dtype(DType::F32)?;
    match t.dims() {
        [_, h, w, 1] if [*h, *w] == [size, size] => Ok(t.permute((0, 3, 1, 2))?.contiguous()?),
        [_, 1, h, w] if [*h, *w] == [size, size] => Ok(t),
        dims => Err(TrainError::Config(format!(
            "convdeconv targets must be [B, {size}, {size}, 1] or [B, 1, {size}, {size}], got {dims:?}"
        ))),
    }
}

impl Model for ConvDeconvModel {
    type Batch = Batch;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// ConvDeconv has no dropout: training and evaluation compute the same.
    fn set_training(&mut self, _training: bool) {}

    fn step(&self, batch: &Batch, _rng: &mut ChaCha8Rng) -> Result<StepOutput> {
        let target = targets_chw(&batch.targets, self.net.config().output_size())?;
        let pred = self.predict(&batch.inputs)?;
        let loss = l1(&pred, &target)?;
        let psnr = mean_image_psnr(&pred.detach().clamp(0.0, 1.0)?, &target)?;
        Ok(StepOutput {
            loss,
            metrics: vec![("psnr".into(), psnr)],
        })
    }
}

/// VoxelNeuralRender's optimisation for `steps` steps: Adam at [`LEARNING_RATE`], batches of
/// `batch_size`.
pub fn train_config(steps: u64, batch_size: usize) -> TrainConfig {
    TrainConfig {
        steps: Some(steps),
        batch_size,
        optimizer: OptimizerConfig::Adam(AdamConfig::default()),
        groups: vec![GroupConfig {
            name: "all".into(),
            params: Vec::new(),
            schedule: LrSchedule::Constant { lr: LEARNING_RATE },
        }],
        ..TrainConfig::default()
    }
}

//! Training [`ConvDeconv`] with the [`vnr_train::Trainer`], as VoxelNeuralRender does: L1
//! loss, Adam at `3e-4` ([`train_config`]).
//!
//! [`ConvDeconvLoss::Mse`] is the other choice. L1 is minimised by the per-pixel *median* of
//! what the network cannot tell apart, MSE by the *mean*; PSNR scores MSE. On the generated
//! scenes (a static ground and sky, the shape covering about a tenth of the image) `small32`
//! trained with L1 at 3e-4 stays near the median background for thousands of steps, below the
//! mean image's PSNR; with MSE (and a higher rate) it passes the mean image within 600 steps.
//! `examples/convdeconv.rs` has the measurements.
//!
//! A batch is a [`Batch`] of VoxelNeuralRender's chunk files (as
//! [`crate::generated::write_convdeconv`] writes them): `inputs` camera-space volumes
//! `[B, 1, S, S, S]` and `targets` images `[B, R, R, 1]` (channels last, as the original
//! stores them; `[B, 1, R, R]` is accepted too). Metrics: the mean per-image PSNR.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vnr_formats::dataset::Batch;
use vnr_train::config::TrainConfig;
use vnr_train::metrics::{l1, mse};
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

/// The training loss, averaged over pixels and images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvDeconvLoss {
    /// Mean absolute error: VoxelNeuralRender's loss.
    #[default]
    L1,
    /// Mean squared error: the loss PSNR measures.
    Mse,
}

impl ConvDeconvLoss {
    /// Parses `l1` or `mse`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "l1" => Some(Self::L1),
            "mse" => Some(Self::Mse),
            _ => None,
        }
    }

    /// The loss of `pred` against `target` (same shapes), a differentiable scalar.
    pub fn compute(self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::L1 => l1(pred, target)?,
            Self::Mse => mse(pred, target)?,
        })
    }
}

/// ConvDeconv as a trainable [`Model`].
pub struct ConvDeconvModel {
    net: ConvDeconv,
    vars: VarMap,
    loss: ConvDeconvLoss,
}

impl ConvDeconvModel {
    /// A freshly initialised network on `device`, its weights drawn from `seed` (PyTorch's
    /// default init, see [`crate::seeded`]), trained with the L1 loss.
    pub fn new(cfg: ConvDeconvConfig, seed: u64, device: &Device) -> Result<Self> {
        let vars = VarMap::new();
        let net = ConvDeconv::new(cfg, seeded_var_builder(&vars, seed, DType::F32, device))?;
        Ok(Self {
            net,
            vars,
            loss: ConvDeconvLoss::default(),
        })
    }

    /// The same model trained with `loss`.
    pub fn with_loss(self, loss: ConvDeconvLoss) -> Self {
        Self { loss, ..self }
    }

    /// The training loss.
    pub fn loss(&self) -> ConvDeconvLoss {
        self.loss
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
        let loss = self.loss.compute(&pred, &target)?;
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

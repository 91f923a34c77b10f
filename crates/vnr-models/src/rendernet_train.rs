//! Training [`RenderNet`] with the [`vnr_train::Trainer`], as the original does.
//!
//! A batch is a [`Batch`] of a RenderNet dataset ([`crate::generated::write_rendernet`]):
//! `inputs` voxels `[B, 1, V, V, V]`, `targets` images `[B, C, R, R]` and the extra field
//! `poses`, the view parameters `[B, 3]`. Each step resamples the voxels into camera space
//! and aligns them with the image; in training mode with a patch size `p`, one random crop is
//! drawn for the whole batch, as the original: `p × p` rows and columns of the aligned grid
//! (all of its depth) and the matching `(p·f) × (p·f)` image patch, `f = R / N` (4 for the
//! original's 128³ grids and 512² images). Crop offsets are even, so the strided convolutions
//! see the same sampling phase as on the whole grid. The loss is the original's: binary
//! cross-entropy summed over each image and averaged over the batch for grey images, the mean
//! squared error for RGB or normal maps ([`bce_loss`], [`mse_loss`]). Evaluation (validation)
//! runs on whole images and reports the mean per-image PSNR.
//!
//! [`train_config`] is the original's optimiser: Adam with β1 = 0.5 and a learning rate decayed
//! by 0.96 every `decay_steps` steps, staircase.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vnr_formats::dataset::Batch;
use vnr_formats::image::ImageF32;
use vnr_render::rendernet::{resample_to_camera, ResampleConfig};
use vnr_train::config::TrainConfig;
use vnr_train::metrics::psnr;
use vnr_train::originals;
use vnr_train::{Model, StepOutput, TrainError};

use crate::generated::POSES_FIELD;
use crate::rendernet::{align_to_image, bce_loss, mse_loss, RenderNet, RenderNetConfig};

/// Result with the trainer's error.
type Result<T> = std::result::Result<T, TrainError>;

/// Mean over the batch of each image's PSNR (`pred`, `target`: `[B, …]` in `[0, 1]`).
pub fn mean_image_psnr(pred: &Tensor, target: &Tensor) -> Result<f64> {
    let b = pred.dim(0)?;
    let mut total = 0.0;
    for i in 0..b {
        total += psnr(&pred.get(i)?, &target.get(i)?, 1.0)?;
    }
    Ok(total / b.max(1) as f64)
}

/// Predictions beside their references, one pair per row: `pred`, `target` `[B, C, H, W]`
/// (C = 1 or 3, values clamped to `[0, 1]` when written) → an image `B·H × 2W`.
pub fn side_by_side(pred: &Tensor, target: &Tensor) -> Result<ImageF32> {
    let pairs = Tensor::cat(&[pred.clamp(0.0, 1.0)?, target.to_dtype(pred.dtype())?], 3)?;
    let (b, c, h, w) = pairs.dims4()?;
    let rows = pairs.permute((1, 0, 2, 3))?.reshape((c, b * h, w))?;
    Ok(ImageF32::from_tensor(&rows)?)
}

/// RenderNet as a trainable [`Model`].
pub struct RenderNetModel {
    net: RenderNet,
    vars: VarMap,
    patch: Option<usize>,
    training: bool,
}

impl RenderNetModel {
    /// A freshly initialised network on `device`; `patch`: the voxel crop side for training
    /// (`None`: whole images). The patch must be even, at most the resampled size, and the
    /// image must be a whole multiple of the resampled grid.
    pub fn new(cfg: RenderNetConfig, patch: Option<usize>, device: &Device) -> Result<Self> {
        let (n, r) = (cfg.resampled_size, cfg.output_size());
        if let Some(p) = patch {
            if p == 0 || p % 2 != 0 || p > n {
                return Err(TrainError::Config(format!(
                    "rendernet patch {p} must be even, positive and at most the resampled size {n}"
                )));
            }
            if r % n != 0 {
                return Err(TrainError::Config(format!(
                    "rendernet patches need an image size ({r}) that is a multiple of the resampled size ({n})"
                )));
            }
        }
        let vars = VarMap::new();
        let net = RenderNet::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        Ok(Self {
            net,
            vars,
            patch,
            training: true,
        })
    }

    /// The network.
    pub fn net(&self) -> &RenderNet {
        &self.net
    }

    /// The image-aligned camera-space grids `[B, 1, N, N, N]` of voxels `[B, 1, V, V, V]` seen
    /// with view parameters `[B, 3]`.
    pub fn aligned_grid(&self, voxels: &Tensor, poses: &Tensor) -> Result<Tensor> {
        let cfg = self.net.config();
        let resample = ResampleConfig {
            out_size: cfg.resampled_size,
            drop_last_slice: cfg.drop_last_slice,
        };
        Ok(align_to_image(&resample_to_camera(
            &voxels.to_dtype(DType::F32)?,
            &poses.to_dtype(DType::F32)?,
            &resample,
        )?)?)
    }

    /// Whole images `[B, C, R, R]` for voxels and view parameters, in evaluation mode.
    pub fn predict(&self, voxels: &Tensor, poses: &Tensor) -> Result<Tensor> {
        let grid = self.aligned_grid(voxels, poses)?;
        Ok(self.net.forward_aligned(&grid, false)?)
    }

    /// The loss of `pred` against `target`: BCE for one channel, MSE otherwise.
    fn loss(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(if self.net.config().out_channels == 1 {
            bce_loss(pred, target)?
        } else {
            mse_loss(pred, target)?
        })
    }
}

/// The `poses` field of a batch.
fn batch_poses(batch: &Batch) -> Result<&Tensor> {
    batch
        .extra
        .iter()
        .find(|(name, _)| name == POSES_FIELD)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            TrainError::Config(format!(
                "a RenderNet batch needs the `{POSES_FIELD}` field (view parameters [B, 3])"
            ))
        })
}

impl Model for RenderNetModel {
    type Batch = Batch;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn step(&self, batch: &Batch, rng: &mut ChaCha8Rng) -> Result<StepOutput> {
        let cfg = self.net.config();
        let (n, r) = (cfg.resampled_size, cfg.output_size());
        let target = batch.targets.to_dtype(DType::F32)?;
        let expected = [batch.len(), cfg.out_channels, r, r];
        if target.dims() != expected {
            return Err(TrainError::Config(format!(
                "rendernet targets must be {expected:?}, got {:?}",
                target.dims()
            )));
        }
        let grid = self.aligned_grid(&batch.inputs, batch_poses(batch)?)?;
        let (grid, target) = match self.patch.filter(|_| self.training) {
            Some(p) => {
                let f = r / n;
                let (row, col) = (
                    2 * rng.random_range(0..=(n - p) / 2),
                    2 * rng.random_range(0..=(n - p) / 2),
                );
                (
                    grid.narrow(2, row, p)?.narrow(3, col, p)?,
                    target
                        .narrow(2, row * f, p * f)?
                        .narrow(3, col * f, p * f)?,
                )
            }
            None => (grid, target),
        };
        if self.training && cfg.keep_prob < 1.0 {
            self.net.reseed_dropout(rng.random());
        }
        let pred = self.net.forward_aligned(&grid, self.training)?;
        let loss = self.loss(&pred, &target)?;
        let psnr = mean_image_psnr(&pred.detach(), &target)?;
        Ok(StepOutput {
            loss,
            metrics: vec![("psnr".into(), psnr)],
        })
    }
}

/// The original's optimisation for `steps` steps: Adam (β1 0.5) at `initial_lr`, times 0.96
/// every `decay_steps` steps (staircase), batches of `batch_size`: the trainer config of an
/// original `config_RenderNet.json` with these values, limited by steps instead of epochs.
pub fn train_config(
    steps: u64,
    batch_size: usize,
    initial_lr: f64,
    decay_steps: u64,
) -> Result<TrainConfig> {
    let original = serde_json::json!({
        "batch_size": batch_size,
        "max_epochs": 1,
        "threshold": 0.5,
        "e_eta": initial_lr,
        "keep_prob": 1.0,
        "decay_steps": decay_steps,
    });
    let mut config =
        originals::RenderNetConfig::from_json_str(&original.to_string())?.to_train_config()?;
    config.epochs = None;
    config.steps = Some(steps);
    config.validate()?;
    Ok(config)
}

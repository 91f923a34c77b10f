//! What a trainable model provides, and seeded dropout for models to use.

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, TrainError};

/// The result of running the model on one batch.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Scalar loss (rank 0, or one element) to minimise; gradients flow from it.
    pub loss: Tensor,
    /// Named scalar metrics to log (e.g. `("psnr", 23.1)`), in display order.
    pub metrics: Vec<(String, f64)>,
}

/// A model the [`crate::trainer::Trainer`] can fit.
///
/// The model owns its parameters in a [`VarMap`] whose names are the original checkpoints' keys
/// (build layers with `vb.pp("name")`), so `model.safetensors` loads in the original tools'
/// naming.
pub trait Model {
    /// What one step consumes (e.g. [`vnr_formats::dataset::Batch`]).
    type Batch;

    /// The trainable parameters, by checkpoint name.
    fn vars(&self) -> &VarMap;

    /// Switches between training (dropout active) and evaluation behaviour.
    fn set_training(&mut self, training: bool);

    /// Loss and metrics of `batch`. All randomness (dropout, sampling) must come from `rng`,
    /// whose state the trainer checkpoints so a resumed run draws the same numbers.
    fn step(&self, batch: &Self::Batch, rng: &mut ChaCha8Rng) -> Result<StepOutput>;
}

/// Inverted dropout: zeroes each element with probability `p` and scales the survivors by
/// `1 / (1 − p)`, drawing from `rng` (candle's own dropout uses an unseedable generator).
/// `x` may have any shape; `p` must be in `[0, 1]`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut impl Rng) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(TrainError::Config(format!(
            "dropout probability {p} is not in [0, 1]"
        )));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let keep_scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let mask: Vec<f64> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f64>() < p {
                0.0
            } else {
                keep_scale
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// Reads a scalar loss tensor (rank 0 or one element) as `f64`.
pub(crate) fn scalar_value(t: &Tensor) -> Result<f64> {
    if t.elem_count() != 1 {
        return Err(TrainError::Config(format!(
            "the loss must be a single value, got shape {:?}",
            t.dims()
        )));
    }
    Ok(t.flatten_all()?
        .to_dtype(DType::F64)?
        .get(0)?
        .to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dropout_is_seeded_and_keeps_the_mean() {
        let x = Tensor::ones((200, 50), DType::F32, &candle_core::Device::Cpu).unwrap();
        let a = dropout(&x, 0.2, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let b = dropout(&x, 0.2, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((zeros - 0.2).abs() < 0.02, "dropped fraction {zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || v == 1.25));
        assert!(dropout(&x, 1.5, &mut ChaCha8Rng::seed_from_u64(0)).is_err());
    }
}

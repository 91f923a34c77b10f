//! Where batches come from: the [`DataSource`] trait, in-memory tensors and chunked datasets.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_formats::dataset::{Batch, ChunkedDataset, SampleId};

use crate::error::{Result, TrainError};

/// A stream of batches.
pub type BatchIter<'a, B> = Box<dyn Iterator<Item = Result<B>> + 'a>;

/// A source of training and validation batches.
///
/// The order of an epoch must depend only on the source's own settings (seed) and the epoch
/// number, never on timing: the trainer resumes an interrupted epoch by asking for it again and
/// skipping the batches already trained on.
pub trait DataSource {
    /// The batch type (the model's [`crate::model::Model::Batch`]).
    type Batch;

    /// Training epoch `epoch` (0-based) without its first `skip` batches.
    fn epoch(&self, epoch: u64, skip: u64) -> Result<BatchIter<'_, Self::Batch>>;

    /// The validation split (empty when there is none).
    fn validation(&self) -> Result<BatchIter<'_, Self::Batch>>;
}

impl DataSource for ChunkedDataset {
    type Batch = Batch;

    /// Streams [`ChunkedDataset::epoch`]; skipped batches are still decoded (the order of the
    /// pool draws depends on every earlier draw).
    fn epoch(&self, epoch: u64, skip: u64) -> Result<BatchIter<'_, Batch>> {
        let skip = usize::try_from(skip)
            .map_err(|_| TrainError::Config(format!("cannot skip {skip} batches")))?;
        let batches = ChunkedDataset::epoch(self, epoch)?;
        Ok(Box::new(
            batches.skip(skip).map(|b| b.map_err(TrainError::from)),
        ))
    }

    fn validation(&self) -> Result<BatchIter<'_, Batch>> {
        let batches = ChunkedDataset::validation(self)?;
        Ok(Box::new(batches.map(|b| b.map_err(TrainError::from))))
    }
}

/// Samples held as tensors `inputs [N, ...]` and `targets [N, ...]`, cut into batches
/// (optionally shuffled per epoch from a seed), with an optional validation set. Batches are
/// [`vnr_formats::dataset::Batch`]es whose sample ids have `chunk` 0.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    train: (Tensor, Tensor),
    validation: Option<(Tensor, Tensor)>,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
}

/// Checks that `inputs` and `targets` have the same, non-zero, number of rows.
fn sample_count(inputs: &Tensor, targets: &Tensor) -> Result<usize> {
    let n = inputs.dim(0)?;
    if targets.dim(0)? != n {
        return Err(TrainError::Config(format!(
            "inputs have {n} samples but targets {}",
            targets.dim(0)?
        )));
    }
    Ok(n)
}

impl InMemoryDataset {
    /// Batches of `batch_size` samples in order (see [`InMemoryDataset::shuffled`]).
    pub fn new(inputs: Tensor, targets: Tensor, batch_size: usize) -> Result<Self> {
        if sample_count(&inputs, &targets)? == 0 || batch_size == 0 {
            return Err(TrainError::Config(
                "an in-memory dataset needs at least one sample and a batch size >= 1".into(),
            ));
        }
        Ok(Self {
            train: (inputs, targets),
            validation: None,
            batch_size,
            shuffle_seed: None,
            drop_last: false,
        })
    }

    /// Adds a validation set (streamed in order, every sample once).
    pub fn with_validation(mut self, inputs: Tensor, targets: Tensor) -> Result<Self> {
        sample_count(&inputs, &targets)?;
        self.validation = Some((inputs, targets));
        Ok(self)
    }

    /// Shuffles each epoch's order from `(seed, epoch)`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Drops the last training batch when it is smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Training batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.train.0.dims().first().copied().unwrap_or(0);
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.train.0.dims().first().copied().unwrap_or(0);
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(seed) = self.shuffle_seed {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(epoch);
            order.shuffle(&mut rng);
        }
        order
    }
}

/// The batches of `(inputs, targets)` taking rows in `order`, `batch_size` at a time.
fn batches_of(
    data: &(Tensor, Tensor),
    order: Vec<usize>,
    batch_size: usize,
) -> impl Iterator<Item = Result<Batch>> + '_ {
    let chunks: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    chunks.into_iter().map(move |rows| {
        let index = rows
            .iter()
            .map(|&r| u32::try_from(r))
            .collect::<std::result::Result<Vec<u32>, _>>()
            .map_err(|_| TrainError::Config("more than 2^32 in-memory samples".into()))?;
        let index = Tensor::new(index, data.0.device())?;
        Ok(Batch {
            inputs: data.0.index_select(&index, 0)?,
            targets: data.1.index_select(&index, 0)?,
            extra: Vec::new(),
            samples: rows
                .iter()
                .map(|&index| SampleId { chunk: 0, index })
                .collect(),
        })
    })
}

impl DataSource for InMemoryDataset {
    type Batch = Batch;

    fn epoch(&self, epoch: u64, skip: u64) -> Result<BatchIter<'_, Batch>> {
        let mut order = self.order(epoch);
        let keep = self.batches_per_epoch().saturating_mul(self.batch_size);
        order.truncate(keep);
        let skipped = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.batch_size)
            .min(order.len());
        order.drain(..skipped);
        Ok(Box::new(batches_of(&self.train, order, self.batch_size)))
    }

    fn validation(&self) -> Result<BatchIter<'_, Batch>> {
        match &self.validation {
            Some(v) => {
                let order = (0..v.0.dim(0)?).collect();
                Ok(Box::new(batches_of(v, order, self.batch_size)))
            }
            None => Ok(Box::new(std::iter::empty())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ramp(n: usize) -> Tensor {
        Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap()
    }

    fn epoch_rows(d: &InMemoryDataset, epoch: u64, skip: u64) -> Vec<Vec<usize>> {
        d.epoch(epoch, skip)
            .unwrap()
            .map(|b| b.unwrap().samples.iter().map(|s| s.index).collect())
            .collect()
    }

    #[test]
    fn shuffled_epochs_are_seeded_and_skipping_resumes_the_same_order() {
        let d = InMemoryDataset::new(ramp(10), ramp(10), 3)
            .unwrap()
            .shuffled(7);
        let e0 = epoch_rows(&d, 0, 0);
        assert_eq!(e0.len(), 4);
        assert_eq!(e0, epoch_rows(&d, 0, 0));
        assert_ne!(e0, epoch_rows(&d, 1, 0));
        assert_eq!(epoch_rows(&d, 0, 2), e0[2..].to_vec());
        let mut all: Vec<usize> = e0.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let dropped = d.clone().drop_last(true);
        assert_eq!(epoch_rows(&dropped, 0, 0).len(), 3);
        assert!(InMemoryDataset::new(ramp(3), ramp(4), 1).is_err());
    }
}

//! One training loop for every vnr model (ConvDeconv, RenderNet, DeepSDF, NeRF, Plenoxels).
//!
//! * [`model::Model`]: the model owns its named parameters and computes a loss and metrics for
//!   a batch; [`data::DataSource`] yields batches (in memory, or a
//!   [`vnr_formats::dataset::ChunkedDataset`]).
//! * [`optim`]: SGD, Adam, AdamW and RMSProp with PyTorch's update formulas, parameter groups,
//!   state saved by parameter name; [`schedule`]: learning-rate schedules.
//! * [`trainer::Trainer`]: the loop, with clipping, NaN stops, validation, atomic checkpoints
//!   and exact resume; [`log`] and [`plot`]: `log.jsonl`, progress bar, `loss.png`.
//! * [`metrics`]: L1, MSE, PSNR, SSIM. [`config::TrainConfig`] (TOML/JSON) and
//!   [`originals`]: RenderNet's and DeepSDF's own config files.
//!
//! ```no_run
//! # use vnr_train::{config::TrainConfig, data::InMemoryDataset, trainer::Trainer};
//! # fn demo<M: vnr_train::model::Model<Batch = vnr_formats::dataset::Batch>>(
//! #     model: M, data: InMemoryDataset) -> vnr_train::error::Result<()> {
//! let config = TrainConfig::load("train.toml")?;
//! let mut trainer = Trainer::new(model, config, "runs/exp1")?;
//! trainer.resume_latest()?; // --resume
//! let summary = trainer.run(&data)?;
//! println!("{} steps, last loss {:?}", summary.steps, summary.last_loss);
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod log;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod originals;
pub mod plot;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use model::{Model, StepOutput};
pub use trainer::Trainer;

/// Process-wide settings for a binary that trains on the CPU; see
/// [`vnr_ops::configure_process_for_training`].
pub use vnr_ops::configure_process_for_training;

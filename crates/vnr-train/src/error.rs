//! The one error type of the trainer.

use std::path::PathBuf;

/// Everything that can stop training, loading a config or a checkpoint. Each variant names what
/// was wrong (the file, the parameter, the step).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed (shape mismatch, device error, …).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The dataset could not be opened or streamed.
    #[error(transparent)]
    Dataset(#[from] vnr_formats::dataset::DatasetError),
    /// The loss plot could not be written.
    #[error(transparent)]
    Image(#[from] vnr_formats::image::ImageError),
    /// The loss was NaN or infinite; nothing of this step was applied or saved.
    #[error("loss is {value} at step {step}: training stopped, the last checkpoint is untouched")]
    NonFiniteLoss {
        /// The step whose loss it is (the number of updates done before it).
        step: u64,
        /// The loss value.
        value: f64,
    },
    /// A gradient held NaN or infinite values; the parameters were not updated.
    #[error(
        "gradient of parameter '{name}' is not finite at step {step}: training stopped, the last \
         checkpoint is untouched"
    )]
    NonFiniteGradient {
        /// The step (the number of updates done before it).
        step: u64,
        /// The parameter's name.
        name: String,
    },
    /// A configuration is inconsistent (the message says which field and why).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A config or state file could not be parsed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A checkpoint is missing a file or holds state that does not fit the model or optimiser.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

/// Attaches `path` to an I/O error.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}

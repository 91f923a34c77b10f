//! Caps on the sizes that configs, files and command-line parameters choose.
//!
//! Sizes reach the models from JSON/TOML configs, DeepSDF `specs.json` and CLI flags. Each
//! cap is far above what the reference configurations use (noted per constant), and low
//! enough that the arithmetic on capped values cannot overflow and no single tensor sized from
//! them exceeds [`MAX_ELEMENTS`]: a bad value is an error naming it, not an overflow panic, an
//! aborted allocation or a loop without end.

use crate::ConfigError;
use vnr_ops::dispatch::capped_elements;

/// Most channels (or hidden units, or latent code values) of one layer: 65,536 (the reference
/// models use at most 1,024).
pub const MAX_CHANNELS: usize = 1 << 16;
/// Most voxels along a side of a model's input or resampled grid: 4,096 (the reference models
/// use at most 256).
pub const MAX_GRID_SIDE: usize = 4096;
/// Most pixels along a side of a model's output image: 65,536 (the reference models give at
/// most 512).
pub const MAX_IMAGE_SIDE: usize = 1 << 16;
/// Most repeated blocks in one stage of a model: 1,024 (RenderNet uses 10).
pub const MAX_BLOCKS: usize = 1024;
/// Most SDF sample rows per scene and batch or per reconstruction step: 2²² (DeepSDF draws
/// 16,384 per scene and 8,000 per reconstruction step).
pub const MAX_SAMPLES: usize = 1 << 22;
/// Most optimisation iterations of a latent reconstruction: 2²⁰ (DeepSDF runs 800).
pub const MAX_ITERATIONS: usize = 1 << 20;
/// Most elements of one tensor whose size a config or parameter decides (a layer's weight,
/// the latent code table, a batch of sample rows): vnr-ops' limit, 2³², 16 GiB of f32 (the
/// reference models' largest weight has 2²⁵).
pub use vnr_ops::dispatch::MAX_PARAMETER_ELEMENTS as MAX_ELEMENTS;

/// `value` when it is at most `max`, else an error naming `what` and the value.
pub(crate) fn at_most(
    what: &str,
    value: usize,
    max: usize,
) -> std::result::Result<usize, ConfigError> {
    if value > max {
        return Err(ConfigError::invalid(format!(
            "{what} is {value}, more than the {max} allowed"
        )));
    }
    Ok(value)
}

/// [`capped_elements`] with the crate's config error, for `validate` methods.
pub(crate) fn config_elements(
    op: &str,
    what: &str,
    dims: &[usize],
) -> std::result::Result<usize, ConfigError> {
    capped_elements(op, what, dims).map_err(|e| ConfigError::invalid(e.to_string()))
}

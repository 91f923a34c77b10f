//! 3D ops for candle, each with a backward, a plain CPU reference beside the fast CPU path,
//! and CUDA kernels behind the `cuda` feature.

pub mod allocator;
pub mod channelwise;
pub mod conformance;
pub mod conv;
#[cfg(feature = "cuda")]
mod cuda;
pub mod cumulative;
pub mod dispatch;
pub mod embedding;
pub mod gradcheck;
pub mod grid_sample;
pub mod nn;
pub mod pool;
pub mod raymarch;
pub mod threads;

/// Process-wide settings for a binary that trains or benchmarks on the CPU: candle's element-wise
/// ops run on the calling thread instead of a second, spinning pool beside rayon's
/// ([`threads::single_pool`]), and large freed blocks are kept for reuse instead of being
/// unmapped and faulted in again ([`allocator::keep_freed_memory`]).
///
/// A library never calls this for its user. Call it first thing in `main`, before any other
/// thread starts and before the first candle op.
pub fn configure_process_for_training() {
    threads::single_pool();
    allocator::keep_freed_memory();
}

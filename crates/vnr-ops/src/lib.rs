//! 3D ops for candle, each with a backward, a plain CPU reference beside the fast CPU path,
//! and CUDA kernels behind the `cuda` feature.

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

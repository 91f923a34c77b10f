//! Layers in candle-nn style, built on this crate's ops.

pub mod activation;
pub mod conv;
pub mod dropout;
pub mod linear;
pub mod norm;

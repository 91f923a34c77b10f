//! Layers in candle-nn style, built on this crate's ops.

use crate::dispatch::capped_elements;
use candle_core::Result;

pub mod activation;
pub mod conv;
pub mod dropout;
pub mod linear;
pub mod norm;

/// Refuses a layer whose weight `[rows, fan_in dims…]` or bias `[bias_len]` is too large to
/// allocate ([`MAX_PARAMETER_ELEMENTS`](crate::dispatch::MAX_PARAMETER_ELEMENTS)), before a
/// `VarBuilder` tries; returns the weight's fan-in, the product of `weight[1..]`.
pub fn check_layer_parameters(layer: &str, weight: &[usize], bias_len: usize) -> Result<usize> {
    capped_elements(layer, "weight", weight)?;
    capped_elements(layer, "bias", &[bias_len])?;
    capped_elements(layer, "fan-in", weight.get(1..).unwrap_or_default())
}

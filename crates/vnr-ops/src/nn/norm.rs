//! Layer normalisation whose gradient flows (candle-nn's fused `layer_norm` records none).

use crate::dispatch::{capped_elements, kernel_dtype};
use candle_core::{bail, Module, Result, Shape, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// `y = (x − mean) / √(var + eps) · weight + bias` over the last dims of `x` matching
/// `weight`'s shape (`torch.nn.LayerNorm(normalized_shape)`; biased variance). Composed of
/// candle ops, so it is differentiable in the input, `weight` and `bias`; f16/bf16 are
/// normalised in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// A layer from `weight` and `bias` (same shape: the normalised trailing dims).
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        if weight.dims() != bias.dims() || weight.rank() == 0 || weight.elem_count() == 0 {
            bail!(
                "layer_norm: weight {:?} and bias {:?} must share a non-empty shape",
                weight.dims(),
                bias.dims()
            );
        }
        Ok(Self { weight, bias, eps })
    }

    /// `weight`, shaped like the normalised dims.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `bias`, shaped like the normalised dims.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let k = self.weight.rank();
        let rank = xs.rank();
        if rank < k || xs.dims()[rank - k..] != *self.weight.dims() {
            bail!(
                "layer_norm: input {:?} must end with the normalised shape {:?}",
                xs.dims(),
                self.weight.dims()
            );
        }
        let dtype = kernel_dtype("layer_norm", xs.dtype())?;
        // Flatten the normalised dims into one so that the statistics are a last-dim reduction.
        let x = xs.to_dtype(dtype)?.flatten_from(rank - k)?;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let weight = self.weight.to_dtype(dtype)?.flatten_all()?;
        let bias = self.bias.to_dtype(dtype)?.flatten_all()?;
        normed
            .broadcast_mul(&weight)?
            .broadcast_add(&bias)?
            .reshape(xs.shape())?
            .to_dtype(xs.dtype())
    }
}

/// A [`LayerNorm`] over trailing dims `normalized_shape` from `vb` (`weight` ones, `bias`
/// zeros when fresh). A shape over
/// [`MAX_PARAMETER_ELEMENTS`](crate::dispatch::MAX_PARAMETER_ELEMENTS) is an error.
pub fn layer_norm<S: Into<Shape>>(
    normalized_shape: S,
    eps: f64,
    vb: VarBuilder,
) -> Result<LayerNorm> {
    let shape: Shape = normalized_shape.into();
    // Before `Shape::elem_count`, which overflows, and before allocating.
    capped_elements("layer_norm", "normalized_shape", shape.dims())?;
    let weight = vb.get_with_hints(shape.clone(), "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(shape, "bias", Init::Const(0.0))?;
    LayerNorm::new(weight, bias, eps)
}

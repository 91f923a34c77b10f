//! PReLU with a learnable slope (`torch.nn.PReLU`), on the fused [`channelwise::prelu`].

use crate::channelwise;
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// `y = x` where `x > 0`, `α x` elsewhere, with one `α` shared by all channels or one per
/// channel (dim 1 of inputs of rank ≥ 2, dim 0 of rank-1 inputs). Parameter `weight` `[α]`.
/// Gradients flow to the input and to `α`.
#[derive(Debug, Clone)]
pub struct PReLU {
    weight: Tensor,
}

impl PReLU {
    /// A layer from its slopes `weight` `[num_parameters]`.
    pub fn new(weight: Tensor) -> Result<Self> {
        if weight.rank() != 1 || weight.dim(0)? == 0 {
            bail!(
                "prelu: weight must be [num_parameters ≥ 1], got {:?}",
                weight.dims()
            );
        }
        Ok(Self { weight })
    }

    /// The slopes `[num_parameters]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for PReLU {
    /// `xs` `[B, C, …]` (slopes along dim 1), `[C]` (along dim 0) or a scalar; one slope
    /// applies to any shape. Runs the fused [`channelwise::prelu`].
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let n = self.weight.dim(0)?;
        // Rank 0 and 1 inputs run as [1, C] (a scalar as [1, 1]).
        let x = match xs.rank() {
            0 => xs.reshape((1, 1))?,
            1 => xs.unsqueeze(0)?,
            _ => xs.clone(),
        };
        let channels = x.dim(1)?;
        let alpha = if n == 1 {
            self.weight.broadcast_as(channels)?
        } else if n == channels {
            self.weight.clone()
        } else {
            let channel_dim = usize::from(xs.rank() >= 2);
            bail!(
                "prelu: {n} slopes but the input {:?} has no dim {channel_dim} of that size",
                xs.dims()
            );
        };
        channelwise::prelu(&x, &alpha.to_dtype(x.dtype())?)?.reshape(xs.shape())
    }
}

/// A [`PReLU`] from `vb` (`weight` `[num_parameters]`, initialised to `init`; PyTorch uses 0.25).
/// `num_parameters` over [`MAX_PARAMETER_ELEMENTS`](crate::dispatch::MAX_PARAMETER_ELEMENTS) is
/// an error.
pub fn prelu(num_parameters: usize, init: f64, vb: VarBuilder) -> Result<PReLU> {
    if num_parameters == 0 {
        bail!("prelu: num_parameters must be at least 1");
    }
    crate::dispatch::capped_elements("prelu", "weight", &[num_parameters])?;
    PReLU::new(vb.get_with_hints(num_parameters, "weight", Init::Const(init))?)
}

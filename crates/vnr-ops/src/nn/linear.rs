//! Weight-normalised linear layer (`torch.nn.utils.weight_norm(nn.Linear(..))`, dim 0), as
//! DeepSDF uses it.

use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// `y = x Wᵀ + b` with `W = g · v / ‖v‖` row by row: `weight_g` `[out, 1]`, `weight_v`
/// `[out, in]`, `bias` `[out]`, named as in PyTorch checkpoints. Input `[..., in]` →
/// `[..., out]`.
#[derive(Debug, Clone)]
pub struct WeightNormLinear {
    weight_g: Tensor,
    weight_v: Tensor,
    bias: Tensor,
}

impl WeightNormLinear {
    /// A layer from its parameters, checking that their shapes agree.
    pub fn new(weight_g: Tensor, weight_v: Tensor, bias: Tensor) -> Result<Self> {
        let (out_dim, _) = weight_v.dims2()?;
        if weight_g.dims() != [out_dim, 1] || bias.dims() != [out_dim] {
            bail!(
                "weight_norm_linear: weight_g {:?} must be [{out_dim}, 1] and bias {:?} [{out_dim}] \
                 for weight_v {:?}",
                weight_g.dims(),
                bias.dims(),
                weight_v.dims()
            );
        }
        Ok(Self {
            weight_g,
            weight_v,
            bias,
        })
    }

    /// The effective weight `g · v / ‖v‖` `[out, in]` (norms over each row).
    pub fn weight(&self) -> Result<Tensor> {
        let norms = row_norms(&self.weight_v)?;
        self.weight_v
            .broadcast_mul(&self.weight_g.broadcast_div(&norms)?)
    }

    /// `weight_g` `[out, 1]`.
    pub fn weight_g(&self) -> &Tensor {
        &self.weight_g
    }

    /// `weight_v` `[out, in]`.
    pub fn weight_v(&self) -> &Tensor {
        &self.weight_v
    }

    /// `bias` `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

/// Euclidean norm of each row of `v` `[out, in]` → `[out, 1]` (PyTorch's `norm_except_dim(v, 2, 0)`).
fn row_norms(v: &Tensor) -> Result<Tensor> {
    v.sqr()?.sum_keepdim(D::Minus1)?.sqrt()
}

impl Module for WeightNormLinear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::Linear::new(self.weight()?, Some(self.bias.clone())).forward(xs)
    }
}

/// A [`WeightNormLinear`] from `vb` (`weight_g`, `weight_v`, `bias`). Fresh parameters follow
/// PyTorch: `v` and `bias` uniform in ±1/√in (nn.Linear's default), then `g = ‖v‖` so that the
/// initial weight equals `v`. A weight `[out_dim, in_dim]` over
/// [`MAX_PARAMETER_ELEMENTS`](crate::dispatch::MAX_PARAMETER_ELEMENTS) is an error.
pub fn weight_norm_linear(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> Result<WeightNormLinear> {
    if in_dim == 0 {
        bail!("weight_norm_linear: in_dim must be positive");
    }
    crate::dispatch::capped_elements("weight_norm_linear", "weight_v", &[out_dim, in_dim])?;
    let bound = 1.0 / (in_dim as f64).sqrt();
    let uniform = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let fresh_g = !vb.contains_tensor("weight_g");
    let weight_v = vb.get_with_hints((out_dim, in_dim), "weight_v", uniform)?;
    let weight_g = vb.get_with_hints((out_dim, 1), "weight_g", Init::Const(1.0))?;
    if fresh_g {
        // The init depends on `v`, which no `Init` can express: overwrite the new variable in
        // place (it shares storage with the one the VarMap holds).
        weight_g.slice_set(&row_norms(&weight_v)?, 0, 0)?;
    }
    let bias = vb.get_with_hints(out_dim, "bias", uniform)?;
    WeightNormLinear::new(weight_g, weight_v, bias)
}

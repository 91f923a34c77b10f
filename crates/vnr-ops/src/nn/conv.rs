//! 3D convolution and pooling layers in candle-nn style.
//!
//! Parameter names (`weight`, `bias`) and shapes are PyTorch's, so a `VarBuilder` over a
//! converted checkpoint loads them by name; fresh parameters get PyTorch's default init
//! (kaiming-uniform with a = √5, i.e. uniform in ±1/√fan_in, and the same bound for the bias).

use crate::conv::{self, Conv3dParams, ConvTranspose3dParams};
use crate::pool::{self, Pool3dParams};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// Options of [`conv3d`], equal on every axis as in PyTorch's `nn.Conv3d(..., padding=p)`.
/// Per-axis or asymmetric settings: build the layer with [`Conv3d::new`] and [`Conv3dParams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dConfig {
    /// Zero padding on both sides of every axis.
    pub padding: usize,
    /// Step between output voxels.
    pub stride: usize,
    /// Step between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
        }
    }
}

impl From<Conv3dConfig> for Conv3dParams {
    fn from(c: Conv3dConfig) -> Self {
        Self {
            stride: [c.stride; 3],
            padding: [[c.padding; 2]; 3],
            dilation: [c.dilation; 3],
            groups: c.groups,
        }
    }
}

/// Options of [`conv_transpose3d`], equal on every axis as in PyTorch's `nn.ConvTranspose3d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose3dConfig {
    /// Removed from both sides of every output axis.
    pub padding: usize,
    /// Extra output voxels after the last; smaller than the stride or the dilation.
    pub output_padding: usize,
    /// Step between input voxels, in output voxels.
    pub stride: usize,
    /// Step between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose3dConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            output_padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
        }
    }
}

impl From<ConvTranspose3dConfig> for ConvTranspose3dParams {
    fn from(c: ConvTranspose3dConfig) -> Self {
        Self {
            stride: [c.stride; 3],
            padding: [c.padding; 3],
            output_padding: [c.output_padding; 3],
            dilation: [c.dilation; 3],
            groups: c.groups,
        }
    }
}

/// 3D convolution layer: weight `[O, C/groups, kd, kh, kw]`, optional bias `[O]`;
/// maps `[N, C, D, H, W]` to `[N, O, Do, Ho, Wo]`.
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: Conv3dParams,
}

impl Conv3d {
    /// A layer from existing parameters (shapes are checked when it runs).
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: Conv3dParams) -> Self {
        Self {
            weight,
            bias,
            params,
        }
    }

    /// `[O, C/groups, kd, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `[O]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation and groups.
    pub fn params(&self) -> &Conv3dParams {
        &self.params
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv::conv3d(x, &self.weight, self.bias.as_ref(), &self.params)
    }
}

/// 3D transposed convolution layer: weight `[C, O/groups, kd, kh, kw]`, optional bias `[O]`;
/// maps `[N, C, D, H, W]` to `[N, O, Do, Ho, Wo]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose3d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvTranspose3dParams,
}

impl ConvTranspose3d {
    /// A layer from existing parameters (shapes are checked when it runs).
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: ConvTranspose3dParams) -> Self {
        Self {
            weight,
            bias,
            params,
        }
    }

    /// `[C, O/groups, kd, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `[O]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, output padding, dilation and groups.
    pub fn params(&self) -> &ConvTranspose3dParams {
        &self.params
    }
}

impl Module for ConvTranspose3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv::conv_transpose3d(x, &self.weight, self.bias.as_ref(), &self.params)
    }
}

/// PyTorch's default init for a weight and bias with this fan-in: uniform in ±1/√fan_in.
fn default_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Fails unless `channels` splits into `groups` groups.
fn check_groups(layer: &str, in_channels: usize, out_channels: usize, groups: usize) -> Result<()> {
    if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
        candle_core::bail!(
            "{layer}: {in_channels} input and {out_channels} output channels must both be divisible by groups={groups}"
        );
    }
    Ok(())
}

/// Weight `[O, C/groups, k, k, k]` and optional bias `[O]` of a convolution, loaded or created
/// under `vb`, plus the fan-in used for their init.
fn conv3d_parameters(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv3dConfig,
    with_bias: bool,
    vb: &VarBuilder,
) -> Result<Conv3d> {
    check_groups("Conv3d", in_channels, out_channels, cfg.groups)?;
    let group_in = in_channels / cfg.groups;
    let k = kernel_size;
    let fan_in =
        super::check_layer_parameters("Conv3d", &[out_channels, group_in, k, k, k], out_channels)?;
    let init = default_init(fan_in);
    let weight = vb.get_with_hints((out_channels, group_in, k, k, k), "weight", init)?;
    let bias = if with_bias {
        Some(vb.get_with_hints(out_channels, "bias", init)?)
    } else {
        None
    };
    Ok(Conv3d::new(weight, bias, cfg.into()))
}

/// A [`Conv3d`] with a cubic `kernel_size³` kernel and a bias, its parameters under `vb`.
pub fn conv3d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv3dConfig,
    vb: VarBuilder,
) -> Result<Conv3d> {
    conv3d_parameters(in_channels, out_channels, kernel_size, cfg, true, &vb)
}

/// A [`Conv3d`] with a cubic `kernel_size³` kernel and no bias, its weight under `vb`.
pub fn conv3d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv3dConfig,
    vb: VarBuilder,
) -> Result<Conv3d> {
    conv3d_parameters(in_channels, out_channels, kernel_size, cfg, false, &vb)
}

fn conv_transpose3d_parameters(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose3dConfig,
    with_bias: bool,
    vb: &VarBuilder,
) -> Result<ConvTranspose3d> {
    check_groups("ConvTranspose3d", in_channels, out_channels, cfg.groups)?;
    let group_out = out_channels / cfg.groups;
    let k = kernel_size;
    let fan_in = super::check_layer_parameters(
        "ConvTranspose3d",
        &[in_channels, group_out, k, k, k],
        out_channels,
    )?;
    // PyTorch computes the fan-in from the weight's dim 1, here O/groups.
    let init = default_init(fan_in);
    let weight = vb.get_with_hints((in_channels, group_out, k, k, k), "weight", init)?;
    let bias = if with_bias {
        Some(vb.get_with_hints(out_channels, "bias", init)?)
    } else {
        None
    };
    Ok(ConvTranspose3d::new(weight, bias, cfg.into()))
}

/// A [`ConvTranspose3d`] with a cubic `kernel_size³` kernel and a bias, its parameters under `vb`.
pub fn conv_transpose3d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose3dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose3d> {
    conv_transpose3d_parameters(in_channels, out_channels, kernel_size, cfg, true, &vb)
}

/// A [`ConvTranspose3d`] with a cubic `kernel_size³` kernel and no bias, its weight under `vb`.
pub fn conv_transpose3d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose3dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose3d> {
    conv_transpose3d_parameters(in_channels, out_channels, kernel_size, cfg, false, &vb)
}

/// 3D max pooling layer, as PyTorch's `nn.MaxPool3d` (no parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool3d {
    /// Window, stride and padding.
    pub params: Pool3dParams,
}

impl MaxPool3d {
    /// Cubic window, as `nn.MaxPool3d(kernel, stride, padding)`.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            params: Pool3dParams::cubic(kernel, stride, padding),
        }
    }
}

impl Module for MaxPool3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        pool::max_pool3d(x, &self.params)
    }
}

/// 3D average pooling layer, as PyTorch's `nn.AvgPool3d` (no parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool3d {
    /// Window, stride, padding and whether padding counts in the divisor.
    pub params: Pool3dParams,
}

impl AvgPool3d {
    /// Cubic window, as `nn.AvgPool3d(kernel, stride, padding, count_include_pad=...)`.
    pub fn new(kernel: usize, stride: usize, padding: usize, count_include_pad: bool) -> Self {
        Self {
            params: Pool3dParams {
                count_include_pad,
                ..Pool3dParams::cubic(kernel, stride, padding)
            },
        }
    }
}

impl Module for AvgPool3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        pool::avg_pool3d(x, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use std::collections::HashMap;

    #[test]
    fn layers_load_weights_by_name() -> Result<()> {
        let dev = Device::Cpu;
        let enc_w = Tensor::arange(0f32, 2. * 3. * 8., &dev)?.reshape((2, 3, 2, 2, 2))?;
        let enc_b = Tensor::new(&[0.5f32, -0.5], &dev)?;
        let dec_w = Tensor::arange(0f32, 2. * 4. * 27., &dev)?.reshape((2, 4, 3, 3, 3))?;
        let tensors = HashMap::from([
            ("enc.weight".to_string(), enc_w.clone()),
            ("enc.bias".to_string(), enc_b.clone()),
            ("dec.weight".to_string(), dec_w.clone()),
        ]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let enc = conv3d(3, 2, 2, Conv3dConfig::default(), vb.pp("enc"))?;
        let dec =
            conv_transpose3d_no_bias(2, 4, 3, ConvTranspose3dConfig::default(), vb.pp("dec"))?;
        let same =
            |a: &Tensor, b: &Tensor| -> Result<f32> { a.sub(b)?.abs()?.max_all()?.to_scalar() };
        assert_eq!(same(enc.weight(), &enc_w)?, 0.0);
        assert_eq!(same(enc.bias().expect("bias loaded"), &enc_b)?, 0.0);
        assert_eq!(same(dec.weight(), &dec_w)?, 0.0);
        assert!(dec.bias().is_none());
        // A wrong shape in the checkpoint is an error, not a silent reshape.
        assert!(conv3d(3, 2, 3, Conv3dConfig::default(), vb.pp("enc")).is_err());
        let y = dec.forward(&enc.forward(&Tensor::ones((1, 3, 4, 4, 4), DType::F32, &dev)?)?)?;
        assert_eq!(y.dims(), [1, 4, 5, 5, 5]);
        Ok(())
    }

    #[test]
    fn fresh_parameters_use_pytorch_default_bounds() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = Conv3dConfig {
            groups: 2,
            ..Default::default()
        };
        let c = conv3d(4, 6, 3, cfg, vb.pp("c"))?;
        let t = conv_transpose3d(4, 6, 2, ConvTranspose3dConfig::default(), vb.pp("t"))?;
        assert_eq!(c.weight().dims(), [6, 2, 3, 3, 3]);
        assert_eq!(t.weight().dims(), [4, 6, 2, 2, 2]);
        let names: Vec<String> = {
            let mut n: Vec<String> = varmap
                .data()
                .lock()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                .keys()
                .cloned()
                .collect();
            n.sort();
            n
        };
        assert_eq!(names, ["c.bias", "c.weight", "t.bias", "t.weight"]);
        // Within the bound; the hundreds of weights also reach close to it (the 6 biases need
        // not: all of them below half the bound has probability 1/64).
        for (p, fan_in, many) in [
            (c.weight(), 2 * 27, true),
            (c.bias().expect("bias"), 2 * 27, false),
            (t.weight(), 6 * 8, true),
        ] {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let max = p.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(max <= bound, "max {max} above bound {bound}");
            assert!(
                !many || max > 0.5 * bound,
                "max {max} far below bound {bound}"
            );
        }
        assert!(conv3d(3, 2, 3, cfg, vb.pp("bad")).is_err());
        Ok(())
    }
}

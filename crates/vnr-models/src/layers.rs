//! Building blocks shared by the models: 2D/3D convolutions with explicit, PyTorch or
//! TensorFlow "SAME" padding, transposed convolutions with TensorFlow's output cropping
//! (their bias added by `vnr_ops`' fused per-channel ops, alone, with LeakyReLU or PReLU, or
//! with a residual add), and dropout driven by a seedable generator.
//!
//! 2D layers run on `vnr_ops`' 3D kernels with a depth axis of 1: one implementation (and one
//! tested backward) for both ranks, and asymmetric padding for free.

use candle_core::{bail, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use vnr_ops::channelwise::{bias_add, bias_leaky_relu, bias_prelu, bias_residual_add};
use vnr_ops::conv::{conv3d, conv_transpose3d, Conv3dParams, ConvTranspose3dParams};
use vnr_ops::nn::check_layer_parameters;
use vnr_ops::nn::conv::MaxPool3d;
use vnr_ops::pool::bias_leaky_relu_max_pool3d;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Zeros `[before, after]` per spatial axis (`[D, H, W]`; for 2D only `H, W` are used).
    Explicit([[usize; 2]; 3]),
    /// TensorFlow's "SAME": `ceil(input / stride)` outputs, the odd padding voxel after.
    TfSame,
}

/// How a transposed convolution crops its full output `(in − 1)·stride + kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    /// PyTorch's `padding`: this many removed from both sides of every axis.
    Symmetric(usize),
    /// TensorFlow's `conv2d_transpose(padding="SAME")`: output `in·stride`, cropped as the
    /// "SAME" padding of the forward convolution from `in·stride` to `in` (odd voxel after).
    TfSame,
}

/// Glorot/Xavier uniform bound `√(6 / (fan_in + fan_out))`, TensorFlow's
/// `xavier_initializer()` (the default of `slim.conv2d` and of RenderNet's 3D convolutions).
pub fn xavier_uniform(fan_in: usize, fan_out: usize) -> Init {
    let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// PyTorch's default init for a layer with this fan-in: uniform in `±1/√fan_in`.
pub fn torch_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Names and initialisers of a convolution's parameters: the original frameworks differ
/// (PyTorch `weight`/`bias`, TensorFlow `weights`/`biases`).
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Name of the kernel.
    pub weight_name: &'static str,
    /// Name of the bias.
    pub bias_name: &'static str,
    /// Kernel init.
    pub weight_init: Init,
    /// Bias init.
    pub bias_init: Init,
}

impl ParamSpec {
    /// PyTorch's `nn.ConvNd` names and init (uniform `±1/√fan_in` for both).
    pub fn torch(fan_in: usize) -> Self {
        let init = torch_uniform(fan_in);
        Self {
            weight_name: "weight",
            bias_name: "bias",
            weight_init: init,
            bias_init: init,
        }
    }

    /// TensorFlow variable names (`weights`, `biases`), Xavier kernels and a constant bias
    /// (RenderNet's `layer_util` uses 0.001, `slim` layers 0).
    pub fn tf(fan_in: usize, fan_out: usize, bias: f64) -> Self {
        Self {
            weight_name: "weights",
            bias_name: "biases",
            weight_init: xavier_uniform(fan_in, fan_out),
            bias_init: Init::Const(bias),
        }
    }
}

/// Spatial rank of a layer's input: 2 (`[B, C, H, W]`) or 3 (`[B, C, D, H, W]`).
fn spatial_dims(op: &str, rank: usize, dims: &[usize]) -> Result<[usize; 3]> {
    match (rank, dims) {
        (2, [_, _, h, w]) => Ok([1, *h, *w]),
        (3, [_, _, d, h, w]) => Ok([*d, *h, *w]),
        _ => bail!("{op}: expected a rank-{} input, got {dims:?}", rank + 2),
    }
}

/// A 2D or 3D convolution: weight `[O, C, kh, kw]` or `[O, C, kd, kh, kw]`, bias `[O]`;
/// `[B, C, (D,) H, W]` → `[B, O, (Do,) Ho, Wo]`.
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: [usize; 3],
    padding: Padding,
    rank: usize,
}

impl Conv {
    /// A convolution of spatial rank `kernel.len()` (2 or 3) with parameters under `vb`.
    /// `stride` has one entry per kernel axis. A weight over
    /// [`MAX_ELEMENTS`](crate::limits::MAX_ELEMENTS) is an error.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        stride: &[usize],
        padding: Padding,
        spec: ParamSpec,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (rank, stride3) = rank_and_stride3("conv", kernel, stride)?;
        let mut shape = vec![out_channels, in_channels];
        shape.extend_from_slice(kernel);
        check_layer_parameters("conv", &shape, out_channels)?;
        let weight = vb.get_with_hints(shape, spec.weight_name, spec.weight_init)?;
        let bias = vb.get_with_hints(out_channels, spec.bias_name, spec.bias_init)?;
        Ok(Self {
            weight,
            bias,
            stride: stride3,
            padding,
            rank,
        })
    }

    /// The kernel, `[O, C, (kd,) kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Number of parameters (kernel and bias).
    pub fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    fn params(&self, input: [usize; 3]) -> Result<Conv3dParams> {
        let kernel = spatial_dims("conv weight", self.rank, self.weight.dims())?;
        Ok(match self.padding {
            Padding::Explicit(mut padding) => {
                if self.rank == 2 {
                    padding[0] = [0, 0];
                }
                Conv3dParams {
                    stride: self.stride,
                    padding,
                    ..Conv3dParams::default()
                }
            }
            Padding::TfSame => {
                // `tf_same` adds the kernel to the input side: refuse sides where that overflows.
                if input
                    .iter()
                    .zip(&kernel)
                    .any(|(i, k)| i.checked_add(*k).is_none())
                {
                    bail!("conv: input sides {input:?} are too large for the kernel {kernel:?}");
                }
                Conv3dParams::tf_same(input, kernel, self.stride, [1; 3])
            }
        })
    }

    /// The output dims for input dims `[B, C, (D,) H, W]`, without running the convolution;
    /// an error when the padded input overflows.
    pub fn output_dims(&self, input: &[usize]) -> Result<Vec<usize>> {
        let spatial = spatial_dims("conv", self.rank, input)?;
        let p = self.params(spatial)?;
        let kernel = spatial_dims("conv weight", self.rank, self.weight.dims())?;
        let mut out = vec![input[0], self.weight.dim(0)?];
        for a in 3 - self.rank..3 {
            let [before, after] = p.padding[a];
            let Some(padded) = spatial[a]
                .checked_add(before)
                .and_then(|n| n.checked_add(after))
            else {
                bail!(
                    "conv: input {input:?} with padding {:?} is too large",
                    p.padding
                );
            };
            if padded < kernel[a] {
                bail!("conv: input {input:?} is smaller than the kernel {kernel:?}");
            }
            out.push((padded - kernel[a]) / p.stride[a] + 1);
        }
        Ok(out)
    }
}

impl Conv {
    /// The convolution without the bias, `[B, O, (Do,) Ho, Wo]`.
    fn unbiased(&self, x: &Tensor) -> Result<Tensor> {
        let spatial = spatial_dims("conv", self.rank, x.dims())?;
        let p = self.params(spatial)?;
        if self.rank == 2 {
            let y = conv3d(&x.unsqueeze(2)?, &self.weight.unsqueeze(2)?, None, &p)?;
            y.squeeze(2)
        } else {
            conv3d(x, &self.weight, None, &p)
        }
    }

    /// `LeakyReLU(conv(x) + bias)` with the bias fused into the activation
    /// ([`bias_leaky_relu`]).
    pub fn forward_leaky(&self, x: &Tensor, slope: f64) -> Result<Tensor> {
        bias_leaky_relu(&self.unbiased(x)?, &self.bias, slope)
    }

    /// `max_pool3d(LeakyReLU(conv(x) + bias))` for a 3D convolution, the bias, the activation
    /// and the pooling fused into one op ([`bias_leaky_relu_max_pool3d`]), so the activated
    /// tensor is never kept for backward.
    pub fn forward_leaky_max_pool(
        &self,
        x: &Tensor,
        slope: f64,
        pool: &MaxPool3d,
    ) -> Result<Tensor> {
        bias_leaky_relu_max_pool3d(&self.unbiased(x)?, &self.bias, slope, &pool.params)
    }

    /// `PReLU(conv(x) + bias)` with slopes `alpha` `[O]`, the bias fused into the activation
    /// ([`bias_prelu`]).
    pub fn forward_prelu(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        bias_prelu(&self.unbiased(x)?, &self.bias, alpha)
    }

    /// `conv(x) + bias + skip` (`skip` of the output's shape), the bias fused into the
    /// residual add ([`bias_residual_add`]).
    pub fn forward_residual(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        bias_residual_add(&self.unbiased(x)?, &self.bias, skip)
    }
}

impl candle_core::Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        bias_add(&self.unbiased(x)?, &self.bias)
    }
}

/// A 2D or 3D transposed convolution: weight `[C, O, (kd,) kh, kw]` (PyTorch's layout), bias
/// `[O]`; `[B, C, (D,) H, W]` → `[B, O, (Do,) Ho, Wo]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose {
    weight: Tensor,
    bias: Tensor,
    stride: [usize; 3],
    crop: Crop,
    rank: usize,
}

impl ConvTranspose {
    /// A transposed convolution of spatial rank `kernel.len()` (2 or 3), parameters under `vb`.
    /// A weight over [`MAX_ELEMENTS`](crate::limits::MAX_ELEMENTS) is an error.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        stride: &[usize],
        crop: Crop,
        spec: ParamSpec,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (rank, stride3) = rank_and_stride3("conv_transpose", kernel, stride)?;
        let mut shape = vec![in_channels, out_channels];
        shape.extend_from_slice(kernel);
        check_layer_parameters("conv_transpose", &shape, out_channels)?;
        let weight = vb.get_with_hints(shape, spec.weight_name, spec.weight_init)?;
        let bias = vb.get_with_hints(out_channels, spec.bias_name, spec.bias_init)?;
        Ok(Self {
            weight,
            bias,
            stride: stride3,
            crop,
            rank,
        })
    }

    /// The kernel, `[C, O, (kd,) kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Number of parameters (kernel and bias).
    pub fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    /// The full output `(in − 1)·stride + kernel` along axis `a` for an input side `input`, or
    /// an error when it overflows.
    fn full_extent(&self, a: usize, input: usize, kernel: usize) -> Result<usize> {
        let stride = self.stride[a];
        match (input.max(1) - 1)
            .checked_mul(stride)
            .and_then(|n| n.checked_add(kernel))
        {
            Some(full) => Ok(full),
            None => Err(extent_overflow(input, stride)),
        }
    }

    /// Per axis of `[D, H, W]`: `[start, kept, zeros_after]` — the output is `kept` voxels of
    /// the full output `(in − 1)·stride + kernel` from `start`, then `zeros_after` zeros.
    fn placement(&self, input: [usize; 3]) -> Result<[[usize; 3]; 3]> {
        let kernel = spatial_dims("conv_transpose weight", self.rank, self.weight.dims())?;
        let mut placement = [[0, 1, 0]; 3];
        for a in 3 - self.rank..3 {
            let full = self.full_extent(a, input[a], kernel[a])?;
            let (start, size) = match self.crop {
                // `full − 2p` without forming `2p`, which overflows for huge crops.
                Crop::Symmetric(p) => (p, full.saturating_sub(p).saturating_sub(p)),
                Crop::TfSame => {
                    // The transpose of the SAME convolution from `in·stride` down to `in`:
                    // its leading padding is cropped; a stride larger than the kernel leaves
                    // positions no tap reaches, which TF fills with zeros (plus the bias).
                    let target = input[a]
                        .checked_mul(self.stride[a])
                        .filter(|t| t.checked_add(kernel[a]).is_some());
                    let Some(target) = target else {
                        return Err(extent_overflow(input[a], self.stride[a]));
                    };
                    let mut size = [1; 3];
                    size[a] = target;
                    let mut k = [1; 3];
                    k[a] = kernel[a];
                    let mut s = [1; 3];
                    s[a] = self.stride[a];
                    (
                        Conv3dParams::tf_same(size, k, s, [1; 3]).padding[a][0],
                        target,
                    )
                }
            };
            let kept = full.saturating_sub(start).min(size);
            if kept == 0 {
                bail!("conv_transpose: cropping from {start} leaves nothing of the {full}-voxel output");
            }
            placement[a] = [start, kept, size - kept];
        }
        Ok(placement)
    }

    /// The output dims for input dims `[B, C, (D,) H, W]`, without running the convolution;
    /// an error when they overflow.
    pub fn output_dims(&self, input: &[usize]) -> Result<Vec<usize>> {
        let spatial = spatial_dims("conv_transpose", self.rank, input)?;
        let placement = self.placement(spatial)?;
        let mut out = vec![input[0], self.weight.dim(1)?];
        out.extend(
            placement[3 - self.rank..]
                .iter()
                .map(|[_, kept, zeros]| kept + zeros),
        );
        Ok(out)
    }
}

impl ConvTranspose {
    /// The transposed convolution and its crop, without the bias, `[B, O, (Do,) Ho, Wo]`.
    fn unbiased(&self, x: &Tensor) -> Result<Tensor> {
        let spatial = spatial_dims("conv_transpose", self.rank, x.dims())?;
        let placement = self.placement(spatial)?;
        let kernel = spatial_dims("conv_transpose weight", self.rank, self.weight.dims())?;
        // The kernel crops the symmetric part itself (PyTorch's `padding`), so that only an
        // asymmetric remainder (TF "SAME" at stride 1) needs a strided view of its output.
        let mut padding = [0; 3];
        for a in 0..3 {
            let full = self.full_extent(a, spatial[a], kernel[a])?;
            let [start, kept, _] = placement[a];
            padding[a] = start.min(full - start - kept);
        }
        let p = ConvTranspose3dParams {
            stride: self.stride,
            padding,
            ..ConvTranspose3dParams::default()
        };
        let (x, w) = if self.rank == 2 {
            (x.unsqueeze(2)?, self.weight.unsqueeze(2)?)
        } else {
            (x.clone(), self.weight.clone())
        };
        let mut y = conv_transpose3d(&x, &w, None, &p)?;
        for (a, &[start, kept, zeros]) in placement.iter().enumerate() {
            let dim = a + 2;
            let start = start - padding[a];
            if start > 0 || kept < y.dim(dim)? {
                y = y.narrow(dim, start, kept)?;
            }
            y = y.pad_with_zeros(dim, 0, zeros)?;
        }
        if self.rank == 2 {
            y.squeeze(2)
        } else {
            Ok(y)
        }
    }

    /// `LeakyReLU(conv_transpose(x) + bias)` with the bias fused into the activation
    /// ([`bias_leaky_relu`]).
    pub fn forward_leaky(&self, x: &Tensor, slope: f64) -> Result<Tensor> {
        bias_leaky_relu(&self.unbiased(x)?, &self.bias, slope)
    }

    /// `PReLU(conv_transpose(x) + bias)` with slopes `alpha` `[O]`, the bias fused into the
    /// activation ([`bias_prelu`]).
    pub fn forward_prelu(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        bias_prelu(&self.unbiased(x)?, &self.bias, alpha)
    }
}

impl candle_core::Module for ConvTranspose {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The bias comes after the crop so that TF's zero-filled positions get it too.
        bias_add(&self.unbiased(x)?, &self.bias)
    }
}

/// Folds one spatial axis (`depth_axis`, 2, 3 or 4) of `[B, C, D, H, W]` into channels:
/// `[B, depth·C, …the two other axes in order]`, feature index `d·C + c`. With
/// `depth_axis = 4` this is TensorFlow's reshape of `[B, H, W, D, C]` to `[B, H, W, D·C]`,
/// RenderNet's projection unit.
pub fn fold_into_channels(x: &Tensor, depth_axis: usize) -> Result<Tensor> {
    let dims = folded_dims(x.dims(), depth_axis)?;
    let rest: Vec<usize> = (2..5).filter(|&a| a != depth_axis).collect();
    x.permute(vec![0, depth_axis, 1, rest[0], rest[1]])?
        .reshape(dims)
}

/// The shape [`fold_into_channels`] gives for `dims` `[B, C, D, H, W]`; an error when the
/// folded channel count overflows.
pub fn folded_dims(dims: &[usize], depth_axis: usize) -> Result<Vec<usize>> {
    if dims.len() != 5 || !(2..5).contains(&depth_axis) {
        bail!("fold_into_channels: expected [B, C, D, H, W] and a spatial axis, got {dims:?} and axis {depth_axis}");
    }
    let Some(channels) = dims[depth_axis].checked_mul(dims[1]) else {
        bail!("fold_into_channels: folding {dims:?} along axis {depth_axis} overflows");
    };
    let mut out = vec![dims[0], channels];
    out.extend((2..5).filter(|&a| a != depth_axis).map(|a| dims[a]));
    Ok(out)
}

/// Checks a 2D or 3D kernel/stride pair and returns the rank and the stride as 3 axes
/// (2D strides padded with a leading 1).
fn rank_and_stride3(kind: &str, kernel: &[usize], stride: &[usize]) -> Result<(usize, [usize; 3])> {
    let rank = kernel.len();
    if !(2..=3).contains(&rank)
        || stride.len() != rank
        || stride.contains(&0)
        || kernel.contains(&0)
    {
        bail!("{kind}: kernel {kernel:?} and stride {stride:?} must both have 2 or 3 positive entries");
    }
    let mut stride3 = [1; 3];
    stride3[3 - rank..].copy_from_slice(stride);
    Ok((rank, stride3))
}

/// The error of a transposed convolution whose output side overflows.
fn extent_overflow(input: usize, stride: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "conv_transpose: input side {input} at stride {stride} overflows the output size"
    ))
}

//! 3D convolution and transposed convolution for candle, with gradients for input, weight and
//! bias.
//!
//! Both ops run on three kernels of one [`ConvGeometry`]: the forward, the input gradient and the
//! weight gradient. A transposed convolution's forward is the input gradient of the convolution
//! it transposes, and each kernel's backward is made of the other two, so there is one
//! implementation of each and every pass gets a second derivative for free.
//!
//! On the CPU, f32 layers with few output channels run direct AVX2/FMA kernels (`direct.rs`:
//! padded input, register-blocked microkernels, no column matrix); every other layer, and
//! those on CPUs without AVX2, vol2col + gemm (`kernels.rs`).
//!
//! With the `cuda` feature each kernel also runs on CUDA devices: vol2col / col2vol kernels
//! around cuBLAS matrix products, tiled like the CPU path (docs/cuda.md).

mod direct;
mod geometry;
mod kernels;
pub mod reference;

pub use geometry::{ColumnTile, ConvGeometry};

use crate::dispatch::{checked_elements, kernel_dtype, run_cpu, Float, Kernel};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Parameters of [`conv3d`], with PyTorch's names. Per-axis values are ordered `[D, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dParams {
    /// Step between output voxels, in input voxels.
    pub stride: [usize; 3],
    /// Zero padding `[before, after]` per axis; asymmetric padding ports TensorFlow "SAME".
    pub padding: [[usize; 2]; 3],
    /// Step between kernel taps, in input voxels.
    pub dilation: [usize; 3],
    /// Channel groups: input and output channels split into `groups` independent convolutions.
    pub groups: usize,
}

impl Default for Conv3dParams {
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [[0; 2]; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

impl Conv3dParams {
    /// Unit stride and dilation, one group, `pad` on both sides of every axis.
    pub fn symmetric(pad: usize) -> Self {
        Self {
            padding: [[pad; 2]; 3],
            ..Self::default()
        }
    }

    /// TensorFlow's "SAME" padding for an input of spatial size `input`: the output has
    /// `ceil(input / stride)` voxels per axis and the odd padding voxel goes after.
    pub fn tf_same(
        input: [usize; 3],
        kernel: [usize; 3],
        stride: [usize; 3],
        dilation: [usize; 3],
    ) -> Self {
        let mut padding = [[0; 2]; 3];
        for a in 0..3 {
            let s = stride[a].max(1);
            let span = dilation[a] * kernel[a].saturating_sub(1) + 1;
            let needed =
                (input[a].div_ceil(s).saturating_sub(1) * s + span).saturating_sub(input[a]);
            padding[a] = [needed / 2, needed - needed / 2];
        }
        Self {
            stride,
            padding,
            dilation,
            groups: 1,
        }
    }
}

/// Parameters of [`conv_transpose3d`], with PyTorch's names and semantics. Per-axis values are
/// ordered `[D, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose3dParams {
    /// Step between input voxels, in output voxels.
    pub stride: [usize; 3],
    /// Removed from both sides of the output (the padding of the transposed convolution).
    pub padding: [usize; 3],
    /// Extra output voxels after the last; must be smaller than the stride or the dilation.
    pub output_padding: [usize; 3],
    /// Step between kernel taps, in output voxels.
    pub dilation: [usize; 3],
    /// Channel groups: input and output channels split into `groups` independent convolutions.
    pub groups: usize,
}

impl Default for ConvTranspose3dParams {
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [0; 3],
            output_padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

/// 3D cross-correlation, as PyTorch's `conv3d`.
///
/// `x`: `[N, C, D, H, W]`, `w`: `[O, C/groups, kd, kh, kw]`, `bias`: `[O]`; returns
/// `[N, O, Do, Ho, Wo]` with `Do = (D + pad_before + pad_after - dilation·(kd-1) - 1) / stride + 1`.
/// f32 and f64 run natively, f16/bf16 in f32.
pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv3dParams) -> Result<Tensor> {
    let geometry = conv3d_geometry(dims5(CONV3D, "input", x)?, dims5(CONV3D, "weight", w)?, p)?;
    run_conv(CONV3D, x, w, bias, geometry, Pass::Forward)
}

const CONV3D: &str = "conv3d";

/// The geometry of [`conv3d`] for input dims `[N, C, D, H, W]`, weight dims
/// `[O, C/groups, kd, kh, kw]` and `p`, or an error for channels, groups or sizes that do not fit.
pub(crate) fn conv3d_geometry(
    [batch, in_channels, d, h, wd]: [usize; 5],
    [out_channels, group_in, kd, kh, kw]: [usize; 5],
    p: &Conv3dParams,
) -> Result<ConvGeometry> {
    const OP: &str = CONV3D;
    let kernel = [kd, kh, kw];
    check_common(OP, p.groups, p.stride, p.dilation, kernel)?;
    check_channels(OP, in_channels, out_channels, p.groups)?;
    if group_in * p.groups != in_channels {
        candle_core::bail!(
            "{OP}: weight expects {group_in} input channels per group ({} with groups={}), input has {in_channels}",
            group_in * p.groups,
            p.groups
        );
    }
    let input = [d, h, wd];
    let mut output = [0; 3];
    for a in 0..3 {
        let [before, after] = p.padding[a];
        let padded = input[a]
            .checked_add(before)
            .and_then(|v| v.checked_add(after));
        let span = (kernel[a] - 1)
            .checked_mul(p.dilation[a])
            .and_then(|v| v.checked_add(1));
        output[a] = match (padded, span) {
            (Some(padded), Some(span)) if padded >= span => (padded - span) / p.stride[a] + 1,
            (None, _) | (_, None) => candle_core::bail!(
                "{OP}: padding {before}+{after} or dilation {} along {} is too large (its extent \
                 overflows)",
                p.dilation[a],
                AXES[a]
            ),
            _ => candle_core::bail!(
                "{OP}: output size along {} would be negative: input {} + padding {before}+{after} is \
                 smaller than the dilated kernel {}·({}-1)+1",
                AXES[a],
                input[a],
                p.dilation[a],
                kernel[a]
            ),
        };
    }
    let [od, oh, ow] = output;
    checked_elements(OP, "output", &[batch, out_channels, od, oh, ow])?;
    Ok(ConvGeometry {
        batch,
        in_channels,
        out_channels,
        groups: p.groups,
        input,
        output,
        kernel,
        stride: p.stride,
        dilation: p.dilation,
        pad: [p.padding[0][0], p.padding[1][0], p.padding[2][0]],
    })
}

/// 3D transposed convolution, as PyTorch's `conv_transpose3d` (the gradient of [`conv3d`] with
/// respect to its input).
///
/// `x`: `[N, C, D, H, W]`, `w`: `[C, O/groups, kd, kh, kw]`, `bias`: `[O]`; returns
/// `[N, O, Do, Ho, Wo]` with
/// `Do = (D-1)·stride - 2·padding + dilation·(kd-1) + output_padding + 1`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &ConvTranspose3dParams,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose3d";
    let [batch, in_channels, d, h, wd] = dims5(OP, "input", x)?;
    let [w_in, group_out, kd, kh, kw] = dims5(OP, "weight", w)?;
    let kernel = [kd, kh, kw];
    check_common(OP, p.groups, p.stride, p.dilation, kernel)?;
    let out_channels = group_out.checked_mul(p.groups).unwrap_or(0);
    check_channels(OP, in_channels, out_channels, p.groups)?;
    if w_in != in_channels {
        candle_core::bail!("{OP}: weight has {w_in} input channels, input has {in_channels}");
    }
    let input = [d, h, wd];
    let mut output = [0; 3];
    for a in 0..3 {
        let op = p.output_padding[a];
        if op >= p.stride[a] && op >= p.dilation[a] {
            candle_core::bail!(
                "{OP}: output_padding {op} along {} must be smaller than the stride {} or the dilation {}",
                AXES[a],
                p.stride[a],
                p.dilation[a]
            );
        }
        let full = (input[a] - 1)
            .checked_mul(p.stride[a])
            .and_then(|v| v.checked_add((kernel[a] - 1).checked_mul(p.dilation[a])?))
            .and_then(|v| v.checked_add(op + 1));
        let cropped = p.padding[a].checked_mul(2);
        output[a] = match (full, cropped) {
            (Some(full), Some(cropped)) if full > cropped => full - cropped,
            _ => candle_core::bail!(
                "{OP}: output size along {} would be zero or negative (input {}, stride {}, kernel {}, \
                 dilation {}, padding {}, output_padding {op})",
                AXES[a],
                input[a],
                p.stride[a],
                kernel[a],
                p.dilation[a],
                p.padding[a]
            ),
        };
    }
    let [od, oh, ow] = output;
    checked_elements(OP, "output", &[batch, out_channels, od, oh, ow])?;
    // The convolution this op transposes: from our output to our input.
    let geometry = ConvGeometry {
        batch,
        in_channels: out_channels,
        out_channels: in_channels,
        groups: p.groups,
        input: output,
        output: input,
        kernel,
        stride: p.stride,
        dilation: p.dilation,
        pad: p.padding,
    };
    run_conv(OP, x, w, bias, geometry, Pass::BackwardInput)
}

const AXES: [&str; 3] = ["D", "H", "W"];

fn dims5(op: &str, what: &str, t: &Tensor) -> Result<[usize; 5]> {
    match *t.dims() {
        [a, b, c, d, e] => Ok([a, b, c, d, e]),
        ref dims => {
            candle_core::bail!("{op}: {what} must have rank 5 [N, C, D, H, W], got shape {dims:?}")
        }
    }
}

fn check_common(
    op: &str,
    groups: usize,
    stride: [usize; 3],
    dilation: [usize; 3],
    kernel: [usize; 3],
) -> Result<()> {
    if groups == 0 {
        candle_core::bail!("{op}: groups must be at least 1");
    }
    if stride.contains(&0) || dilation.contains(&0) {
        candle_core::bail!("{op}: stride {stride:?} and dilation {dilation:?} must be positive");
    }
    if kernel.contains(&0) {
        candle_core::bail!("{op}: kernel size {kernel:?} must be positive");
    }
    Ok(())
}

fn check_channels(op: &str, in_channels: usize, out_channels: usize, groups: usize) -> Result<()> {
    if in_channels == 0 || out_channels == 0 {
        candle_core::bail!(
            "{op}: {in_channels} input and {out_channels} output channels; both must be positive"
        );
    }
    if in_channels % groups != 0 || out_channels % groups != 0 {
        candle_core::bail!(
            "{op}: {in_channels} input and {out_channels} output channels must both be divisible by groups={groups}"
        );
    }
    Ok(())
}

fn run_conv(
    op: &str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    geometry: ConvGeometry,
    pass: Pass,
) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        candle_core::bail!(
            "{op}: input is {:?} but weight is {:?}",
            x.dtype(),
            w.dtype()
        );
    }
    let channels = match pass {
        Pass::BackwardInput => geometry.in_channels,
        _ => geometry.out_channels,
    };
    // Checked before the (expensive) convolution runs.
    if let Some(b) = bias {
        if b.dims() != [channels] {
            candle_core::bail!(
                "{op}: bias must have shape [{channels}], got {:?}",
                b.dims()
            );
        }
    }
    let dtype = kernel_dtype(op, x.dtype())?;
    let y = x
        .to_dtype(dtype)?
        .apply_op2(&w.to_dtype(dtype)?, ConvOp { geometry, pass })?
        .to_dtype(x.dtype())?;
    match bias {
        Some(b) => crate::channelwise::bias_add(&y, &b.to_dtype(y.dtype())?),
        None => Ok(y),
    }
}

/// Which of the three convolution kernels an op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// `(x, w) → y`.
    Forward,
    /// `(dy, w) → dx`; the transposed convolution's forward.
    BackwardInput,
    /// `(x, dy) → dw`.
    BackwardWeight,
}

/// One convolution kernel as a candle op; its backward is made of the other two.
#[derive(Debug, Clone, Copy)]
struct ConvOp {
    geometry: ConvGeometry,
    pass: Pass,
}

impl ConvOp {
    /// Dims of the two operands and of the result.
    fn dims(&self) -> ([usize; 5], [usize; 5], [usize; 5]) {
        let g = &self.geometry;
        match self.pass {
            Pass::Forward => (g.input_dims(), g.weight_dims(), g.output_dims()),
            Pass::BackwardInput => (g.output_dims(), g.weight_dims(), g.input_dims()),
            Pass::BackwardWeight => (g.input_dims(), g.output_dims(), g.weight_dims()),
        }
    }

    fn with_pass(&self, pass: Pass) -> Self {
        Self { pass, ..*self }
    }

    /// Checks the operands' dims and returns the result's shape.
    fn result_shape(&self, l1: &Layout, l2: &Layout) -> Result<Shape> {
        let (d1, d2, d_out) = self.dims();
        if l1.dims() != d1 || l2.dims() != d2 {
            candle_core::bail!(
                "{}: operands {:?} and {:?}, expected {d1:?} and {d2:?}",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        Ok(Shape::from(d_out.to_vec()))
    }
}

impl Kernel<2> for ConvOp {
    fn run<T: Float>(&self, [a, b]: [&[T]; 2]) -> Result<Vec<T>> {
        let mut out = vec![T::zero(); self.dims().2.iter().product()];
        let g = &self.geometry;
        match self.pass {
            Pass::Forward => kernels::forward(g, a, b, &mut out)?,
            Pass::BackwardInput => kernels::backward_input(g, a, b, &mut out)?,
            Pass::BackwardWeight => kernels::backward_weight(g, a, b, &mut out)?,
        }
        Ok(out)
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "conv3d",
            Pass::BackwardInput => "conv3d-backward-input",
            Pass::BackwardWeight => "conv3d-backward-weight",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.result_shape(l1, l2)?;
        let out = run_cpu(self.name(), self, [(s1, l1), (s2, l2)])?;
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let shape = self.result_shape(l1, l2)?;
        let out = crate::cuda::conv(self.pass, &self.geometry, (s1, l1), (s2, l2))?;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Which kernel gives each operand's gradient, and from which two tensors. An operand
        // that no variable depends on (e.g. the data fed to a first layer) gets none, which
        // skips a whole pass.
        let (for_a, for_b) = match self.pass {
            // (x, w) → y: dx = BI(dy, w), dw = BW(x, dy).
            Pass::Forward => (
                (Pass::BackwardInput, grad, b),
                (Pass::BackwardWeight, a, grad),
            ),
            // (dy, w) → dx: d(dy) = F(g, w), dw = BW(g, dy).
            Pass::BackwardInput => ((Pass::Forward, grad, b), (Pass::BackwardWeight, grad, a)),
            // (x, dy) → dw: dx = BI(dy, g), d(dy) = F(x, g).
            Pass::BackwardWeight => ((Pass::BackwardInput, b, grad), (Pass::Forward, a, grad)),
        };
        let run = |operand: &Tensor, (pass, lhs, rhs): (Pass, &Tensor, &Tensor)| {
            operand
                .track_op()
                .then(|| lhs.apply_op2(rhs, self.with_pass(pass)))
                .transpose()
        };
        Ok((run(a, for_a)?, run(b, for_b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn tf_same_gives_ceil_output() -> Result<()> {
        for (input, k, s) in [
            (7usize, 3usize, 2usize),
            (8, 4, 2),
            (5, 1, 1),
            (6, 3, 1),
            (9, 5, 3),
        ] {
            let p = Conv3dParams::tf_same([input; 3], [k; 3], [s; 3], [1; 3]);
            let x = Tensor::zeros((1, 1, input, input, input), DType::F32, &Device::Cpu)?;
            let w = Tensor::zeros((1, 1, k, k, k), DType::F32, &Device::Cpu)?;
            let y = conv3d(&x, &w, None, &p)?;
            assert_eq!(
                y.dims()[2..],
                [input.div_ceil(s); 3],
                "input {input} k {k} s {s}"
            );
        }
        Ok(())
    }
}

//! Sizes of one 3D convolution, shared by the fast kernels and the reference.

/// Every size of one convolution, always described in the direction of the forward `conv3d`:
/// input `[N, C, D, H, W]` → output `[N, O, Do, Ho, Wo]` through weight
/// `[O, C/groups, kd, kh, kw]`.
///
/// A transposed convolution is this convolution's input gradient, so it is described by the
/// geometry of the convolution it transposes (its output is the `input` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// `N`.
    pub batch: usize,
    /// `C`, channels of the convolution's input.
    pub in_channels: usize,
    /// `O`, channels of the convolution's output.
    pub out_channels: usize,
    /// Channel groups; both channel counts are multiples of it.
    pub groups: usize,
    /// Input spatial size `[D, H, W]`.
    pub input: [usize; 3],
    /// Output spatial size `[Do, Ho, Wo]`.
    pub output: [usize; 3],
    /// Kernel size `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    /// Step between output voxels, in input voxels.
    pub stride: [usize; 3],
    /// Step between kernel taps, in input voxels.
    pub dilation: [usize; 3],
    /// Zero padding before the first input element, per axis. Padding after the last element is
    /// implied by `output` (taps beyond the input read zeros).
    pub pad: [usize; 3],
}

impl ConvGeometry {
    /// Input channels per group.
    pub fn group_in_channels(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub fn group_out_channels(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Number of input voxels per channel, `D·H·W`.
    pub fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    /// Number of output voxels per channel, `Do·Ho·Wo`.
    pub fn output_volume(&self) -> usize {
        self.output.iter().product()
    }

    /// Number of kernel taps, `kd·kh·kw`.
    pub fn kernel_volume(&self) -> usize {
        self.kernel.iter().product()
    }

    /// `[N, C, D, H, W]`.
    pub fn input_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.input;
        [self.batch, self.in_channels, d, h, w]
    }

    /// `[N, O, Do, Ho, Wo]`.
    pub fn output_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.output;
        [self.batch, self.out_channels, d, h, w]
    }

    /// `[O, C/groups, kd, kh, kw]`.
    pub fn weight_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.kernel;
        [self.out_channels, self.group_in_channels(), d, h, w]
    }

    /// True when the convolution is a plain matrix product per sample: 1×1×1 kernel, stride 1,
    /// no padding, and output size equal to input size.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1; 3]
            && self.stride == [1; 3]
            && self.pad == [0; 3]
            && self.input == self.output
    }

    /// Input index along `axis` read by output index `o` at kernel tap `k`, if inside the input.
    pub fn input_index(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.pad[axis])
            .filter(|&i| i < self.input[axis])
    }

    /// Range `[lo, hi)` of output indices along `axis` whose tap `k` lands inside the input.
    /// Lets the kernels split every output row into zero / valid / zero segments without a
    /// bounds test per element.
    pub fn valid_outputs(&self, axis: usize, k: usize) -> (usize, usize) {
        let stride = self.stride[axis];
        let offset = k * self.dilation[axis];
        let pad = self.pad[axis];
        // First o with o·stride + offset ≥ pad.
        let lo = pad.saturating_sub(offset).div_ceil(stride);
        // First o with o·stride + offset ≥ pad + len.
        let hi = (pad + self.input[axis])
            .saturating_sub(offset)
            .div_ceil(stride)
            .min(self.output[axis]);
        (lo.min(hi), hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(
        input: usize,
        output: usize,
        k: usize,
        s: usize,
        d: usize,
        p: usize,
    ) -> ConvGeometry {
        ConvGeometry {
            batch: 1,
            in_channels: 1,
            out_channels: 1,
            groups: 1,
            input: [input; 3],
            output: [output; 3],
            kernel: [k; 3],
            stride: [s; 3],
            dilation: [d; 3],
            pad: [p; 3],
        }
    }

    #[test]
    fn valid_outputs_agree_with_input_index() {
        for (input, output, k, s, d, p) in [
            (5, 3, 3, 2, 1, 1),
            (7, 9, 2, 1, 2, 4),
            (4, 2, 3, 3, 1, 0),
            (3, 8, 3, 1, 1, 6),
            (6, 1, 1, 5, 1, 0),
        ] {
            let g = geometry(input, output, k, s, d, p);
            for tap in 0..k {
                let (lo, hi) = g.valid_outputs(0, tap);
                for o in 0..output {
                    let inside = g.input_index(0, o, tap).is_some();
                    assert_eq!(inside, (lo..hi).contains(&o), "{g:?} tap {tap} o {o}");
                }
            }
        }
    }
}

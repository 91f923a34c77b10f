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
    /// Checked, because kernels also ask one output past the end, where a huge stride would
    /// overflow.
    pub fn input_index(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        o.checked_mul(self.stride[axis])?
            .checked_add(k.checked_mul(self.dilation[axis])?)?
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

    /// Rows of the column matrix of one group, `C/groups · kd·kh·kw` (one per input channel and
    /// kernel tap).
    pub fn column_rows(&self) -> usize {
        self.group_in_channels() * self.kernel_volume()
    }

    /// Splits the column matrix of every sample into tiles of at most `max_elements` entries
    /// (`column_rows()` × the tile's output voxels), in order: whole samples at a time when
    /// a sample fits, else runs of output rows (`(od, oh)` pairs of `Wo` voxels) of one sample.
    /// A single output row is the smallest tile, even if it alone is larger. Together the tiles
    /// cover every (sample, output row) exactly once; none when the batch is empty.
    pub fn column_tiles(&self, max_elements: usize) -> Vec<ColumnTile> {
        let out_rows = self.output[0] * self.output[1];
        let row_elements = (self.column_rows() * self.output[2]).max(1);
        let fit = (max_elements / row_elements).max(1);
        if out_rows == 0 {
            return Vec::new();
        }
        if fit >= out_rows {
            let per_tile = (fit / out_rows).max(1);
            return (0..self.batch)
                .step_by(per_tile)
                .map(|first_sample| ColumnTile {
                    first_sample,
                    samples: per_tile.min(self.batch - first_sample),
                    first_row: 0,
                    rows: out_rows,
                })
                .collect();
        }
        (0..self.batch)
            .flat_map(|sample| {
                (0..out_rows).step_by(fit).map(move |first_row| ColumnTile {
                    first_sample: sample,
                    samples: 1,
                    first_row,
                    rows: fit.min(out_rows - first_row),
                })
            })
            .collect()
    }

    /// Range `[lo, hi)` of input depths that the output rows `first_row..first_row + rows`
    /// (`r = od·Ho + oh`) read; the adjoint of vol2col only touches these.
    pub fn input_depths(&self, first_row: usize, rows: usize) -> (usize, usize) {
        let oh = self.output[1].max(1);
        if rows == 0 {
            return (0, 0);
        }
        let (od_lo, od_hi) = (first_row / oh, (first_row + rows - 1) / oh);
        let lo = (od_lo * self.stride[0]).saturating_sub(self.pad[0]);
        let reach = od_hi * self.stride[0] + (self.kernel[0] - 1) * self.dilation[0] + 1;
        let hi = reach.saturating_sub(self.pad[0]).min(self.input[0]);
        (lo.min(hi), hi)
    }
}

/// One tile of a column matrix: samples `first_sample..first_sample + samples` × output rows
/// `first_row..first_row + rows` (see [`ConvGeometry::column_tiles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnTile {
    /// First sample of the tile.
    pub first_sample: usize,
    /// Number of samples; more than one only when the tile holds all output rows.
    pub samples: usize,
    /// First output row, `od·Ho + oh`.
    pub first_row: usize,
    /// Number of output rows.
    pub rows: usize,
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

    /// One-axis cases `(input, output, kernel, stride, dilation, padding)`: stride > kernel,
    /// dilation, padding beyond the kernel, a single output.
    const AXIS_CASES: [(usize, usize, usize, usize, usize, usize); 5] = [
        (5, 3, 3, 2, 1, 1),
        (7, 9, 2, 1, 2, 4),
        (4, 2, 3, 3, 1, 0),
        (3, 8, 3, 1, 1, 6),
        (6, 1, 1, 5, 1, 0),
    ];

    #[test]
    fn valid_outputs_agree_with_input_index() {
        for (input, output, k, s, d, p) in AXIS_CASES {
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

    #[test]
    fn column_tiles_cover_every_sample_and_row_once() {
        let mut g = geometry(9, 5, 3, 2, 1, 1);
        g.batch = 3;
        g.in_channels = 2;
        let out_rows = 25;
        let row_elements = g.column_rows() * 5;
        for max_elements in [
            0,
            1,
            row_elements,
            3 * row_elements,
            25 * row_elements,
            60 * row_elements,
            usize::MAX / 2,
        ] {
            let mut seen = vec![0; 3 * out_rows];
            for t in g.column_tiles(max_elements) {
                assert!(
                    t.samples == 1 || (t.first_row == 0 && t.rows == out_rows),
                    "{t:?}"
                );
                assert!(
                    t.rows == 1 || t.samples * t.rows * row_elements <= max_elements,
                    "{t:?}"
                );
                for n in t.first_sample..t.first_sample + t.samples {
                    for r in t.first_row..t.first_row + t.rows {
                        seen[n * out_rows + r] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "max {max_elements}: {seen:?}");
        }
        g.batch = 0;
        assert!(g.column_tiles(100).is_empty());
    }

    #[test]
    fn input_depths_hold_every_depth_read() {
        for (input, output, k, s, d, p) in AXIS_CASES {
            let g = geometry(input, output, k, s, d, p);
            for first_row in 0..output * output {
                for rows in 1..=output * output - first_row {
                    let (lo, hi) = g.input_depths(first_row, rows);
                    for r in first_row..first_row + rows {
                        for tap in 0..k {
                            if let Some(i) = g.input_index(0, r / output, tap) {
                                assert!((lo..hi).contains(&i), "{g:?} rows {first_row}+{rows}");
                            }
                        }
                    }
                }
            }
        }
    }
}

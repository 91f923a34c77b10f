//! Plain, obviously-correct convolution loops: the yardstick for the fast kernels.
//!
//! All three functions walk the same set of taps (output voxel × input channel of its group ×
//! kernel offset that lands inside the input) and differ only in which operand they accumulate.

use super::ConvGeometry;
use candle_core::WithDType;

/// Flat indices `(input, weight, output)` of every tap of the convolution, in a fixed order.
fn for_each_tap(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let [d, h, w] = g.input;
    let [od_n, oh_n, ow_n] = g.output;
    let [kd_n, kh_n, kw_n] = g.kernel;
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    for n in 0..g.batch {
        for o in 0..g.out_channels {
            let group = o / og;
            for od in 0..od_n {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let y = (((n * g.out_channels + o) * od_n + od) * oh_n + oh) * ow_n + ow;
                        for c in 0..cg {
                            let channel = group * cg + c;
                            for kd in 0..kd_n {
                                let Some(id) = g.input_index(0, od, kd) else {
                                    continue;
                                };
                                for kh in 0..kh_n {
                                    let Some(ih) = g.input_index(1, oh, kh) else {
                                        continue;
                                    };
                                    for kw in 0..kw_n {
                                        let Some(iw) = g.input_index(2, ow, kw) else {
                                            continue;
                                        };
                                        let x = (((n * g.in_channels + channel) * d + id) * h + ih)
                                            * w
                                            + iw;
                                        let wi =
                                            (((o * cg + c) * kd_n + kd) * kh_n + kh) * kw_n + kw;
                                        f(x, wi, y);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y[N, O, Do, Ho, Wo]` from `x[N, C, D, H, W]` and `w[O, C/groups, kd, kh, kw]` (contiguous).
pub fn conv3d_forward<T: WithDType>(g: &ConvGeometry, x: &[T], w: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); g.batch * g.out_channels * g.output_volume()];
    for_each_tap(g, |xi, wi, yi| y[yi] += w[wi] * x[xi]);
    y
}

/// Gradient of the input `[N, C, D, H, W]` from the output gradient `dy[N, O, Do, Ho, Wo]`;
/// also the forward of the transposed convolution.
pub fn conv3d_backward_input<T: WithDType>(g: &ConvGeometry, dy: &[T], w: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); g.batch * g.in_channels * g.input_volume()];
    for_each_tap(g, |xi, wi, yi| dx[xi] += w[wi] * dy[yi]);
    dx
}

/// Gradient of the weight `[O, C/groups, kd, kh, kw]` from the input and the output gradient.
pub fn conv3d_backward_weight<T: WithDType>(g: &ConvGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    let mut dw = vec![T::zero(); g.weight_dims().iter().product()];
    for_each_tap(g, |xi, wi, yi| dw[wi] += x[xi] * dy[yi]);
    dw
}

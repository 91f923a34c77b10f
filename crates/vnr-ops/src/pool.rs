//! 3D max and average pooling for candle, with PyTorch's semantics and gradients.
//!
//! The fast forwards are separable: a box max (or sum) over `kd·kh·kw` voxels is three 1D passes
//! along W, H and D, each vectorising over the contiguous trailing axes. Max pooling's backward
//! recomputes the winner of each window from the saved output instead of storing indices.

use crate::dispatch::{kernel_dtype, run_cpu, Float, Kernel};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Parameters of [`max_pool3d`] and [`avg_pool3d`], with PyTorch's names (`ceil_mode=False`).
/// Per-axis values are ordered `[D, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool3dParams {
    /// Window size `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    /// Step between windows (PyTorch's default is the kernel size).
    pub stride: [usize; 3],
    /// Implicit padding on both sides, at most half the kernel (-inf for max, zeros for average).
    pub padding: [usize; 3],
    /// Average pooling only: whether padded voxels count in the divisor (PyTorch's default: true).
    pub count_include_pad: bool,
}

impl Pool3dParams {
    /// Cubic window `kernel³`, stride and padding equal on every axis, padding counted in
    /// averages (PyTorch's defaults).
    pub fn cubic(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel: [kernel; 3],
            stride: [stride; 3],
            padding: [padding; 3],
            count_include_pad: true,
        }
    }
}

/// Sizes of one pooling: `planes` independent `[D, H, W]` volumes (batch × channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Number of independent volumes, `N·C`.
    pub planes: usize,
    /// Input spatial size `[D, H, W]`.
    pub input: [usize; 3],
    /// Output spatial size `[Do, Ho, Wo]`.
    pub output: [usize; 3],
    /// Window size.
    pub kernel: [usize; 3],
    /// Step between windows.
    pub stride: [usize; 3],
    /// Implicit padding on both sides, at most half the window.
    pub padding: [usize; 3],
}

impl PoolGeometry {
    fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    fn output_volume(&self) -> usize {
        self.output.iter().product()
    }

    /// Input range `[lo, hi)` covered by window `o` along `axis`, clipped to the input; never
    /// empty because the padding is at most half the kernel.
    pub fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let start = o * self.stride[axis];
        let lo = start.saturating_sub(self.padding[axis]);
        let hi = (start + self.kernel[axis])
            .saturating_sub(self.padding[axis])
            .min(self.input[axis]);
        (lo, hi)
    }

    /// Number of voxels averaged by window `o` along `axis`: the clipped window, or with
    /// `count_include_pad` the window clipped to the padded input instead.
    pub fn divisor(&self, axis: usize, o: usize, count_include_pad: bool) -> usize {
        if count_include_pad {
            let start = o * self.stride[axis];
            let end = (start + self.kernel[axis]).min(self.input[axis] + 2 * self.padding[axis]);
            end - start
        } else {
            let (lo, hi) = self.window(axis, o);
            hi - lo
        }
    }
}

/// PyTorch's running max: a larger value or a NaN takes over, so NaN propagates.
fn max_step<T: Float>(best: T, v: T) -> T {
    if v > best || v.is_nan() {
        v
    } else {
        best
    }
}

/// 3D max pooling, as PyTorch's `max_pool3d` (`ceil_mode=False`, dilation 1).
///
/// `x`: `[N, C, D, H, W]` (or unbatched `[C, D, H, W]`); returns `[N, C, Do, Ho, Wo]` with
/// `Do = (D + 2·padding - kernel) / stride + 1`. The gradient goes to the first maximum of each
/// window in `(kd, kh, kw)` order.
pub fn max_pool3d(x: &Tensor, p: &Pool3dParams) -> Result<Tensor> {
    pool("max_pool3d", x, p, |t, g| {
        t.apply_op1(MaxPool { geometry: g })
    })
}

/// 3D average pooling, as PyTorch's `avg_pool3d` (`ceil_mode=False`, no divisor override).
///
/// `x`: `[N, C, D, H, W]` (or unbatched `[C, D, H, W]`); returns `[N, C, Do, Ho, Wo]`.
pub fn avg_pool3d(x: &Tensor, p: &Pool3dParams) -> Result<Tensor> {
    pool("avg_pool3d", x, p, |t, g| {
        t.apply_op1(AvgPool {
            geometry: g,
            count_include_pad: p.count_include_pad,
            backward: false,
        })
    })
}

/// Validates the shapes, computes the geometry and runs `f` in the kernel dtype.
fn pool(
    op: &str,
    x: &Tensor,
    p: &Pool3dParams,
    f: impl FnOnce(&Tensor, PoolGeometry) -> Result<Tensor>,
) -> Result<Tensor> {
    let dims = x.dims();
    if !(4..=5).contains(&dims.len()) {
        candle_core::bail!(
            "{op}: input must have rank 5 [N, C, D, H, W] or 4 [C, D, H, W], got shape {dims:?}"
        );
    }
    let (lead, spatial) = dims.split_at(dims.len() - 3);
    let input = [spatial[0], spatial[1], spatial[2]];
    // As PyTorch: padding could make an empty axis's output non-empty, but its windows would hold
    // no voxel at all.
    if input.contains(&0) {
        candle_core::bail!("{op}: input spatial dims {input:?} must be positive");
    }
    let mut output = [0; 3];
    for a in 0..3 {
        let (k, s, pad) = (p.kernel[a], p.stride[a], p.padding[a]);
        if k == 0 || s == 0 {
            candle_core::bail!(
                "{op}: kernel {:?} and stride {:?} must be positive",
                p.kernel,
                p.stride
            );
        }
        if pad > k / 2 {
            candle_core::bail!(
                "{op}: padding {pad} along axis {a} must be at most half the kernel size {k}"
            );
        }
        if input[a] + 2 * pad < k {
            candle_core::bail!(
                "{op}: output size along axis {a} would be zero or negative: input {} + 2·padding {pad} < kernel {k}",
                input[a]
            );
        }
        output[a] = (input[a] + 2 * pad - k) / s + 1;
    }
    let geometry = PoolGeometry {
        planes: lead.iter().product(),
        input,
        output,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
    };
    let dtype = kernel_dtype(op, x.dtype())?;
    f(&x.to_dtype(dtype)?, geometry)?.to_dtype(x.dtype())
}

/// Result dims of a pooling pass that maps `in_dims` (`[..., D, H, W]`) to `spatial`.
fn with_spatial(in_dims: &[usize], spatial: [usize; 3]) -> Shape {
    let lead = &in_dims[..in_dims.len().saturating_sub(3)];
    Shape::from([lead, &spatial[..]].concat())
}

/// Checks that `layout` is `planes` volumes of `spatial` voxels.
fn check_layout(op: &str, layout: &Layout, planes: usize, spatial: [usize; 3]) -> Result<()> {
    let dims = layout.dims();
    let ok = dims.len() >= 3
        && dims[dims.len() - 3..] == spatial
        && dims[..dims.len() - 3].iter().product::<usize>() == planes;
    if !ok {
        candle_core::bail!(
            "{op}: operand shape {dims:?}, expected {planes} volumes of {spatial:?}"
        );
    }
    Ok(())
}

/// Reduces axis `axis` of each `dims` volume in `src` with `step`, over the pooling windows.
fn reduce_axis<T: Float>(
    src: &[T],
    dims: [usize; 3],
    axis: usize,
    g: &PoolGeometry,
    step: impl Fn(T, T) -> T,
) -> (Vec<T>, [usize; 3]) {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let (len, out_len) = (dims[axis], g.output[axis]);
    let mut out_dims = dims;
    out_dims[axis] = out_len;
    let mut dst = vec![T::zero(); outer * out_len * inner];
    for b in 0..outer {
        let src_block = &src[b * len * inner..(b + 1) * len * inner];
        for o in 0..out_len {
            let (lo, hi) = g.window(axis, o);
            let row = &mut dst[(b * out_len + o) * inner..(b * out_len + o + 1) * inner];
            row.copy_from_slice(&src_block[lo * inner..(lo + 1) * inner]);
            for i in lo + 1..hi {
                for (r, &v) in row.iter_mut().zip(&src_block[i * inner..(i + 1) * inner]) {
                    *r = step(*r, v);
                }
            }
        }
    }
    (dst, out_dims)
}

/// Separable pooling of one volume: `step` along W, then H, then D.
fn separable_pool<T: Float>(
    g: &PoolGeometry,
    volume: &[T],
    step: impl Fn(T, T) -> T + Copy,
) -> Vec<T> {
    let (w_pass, dims) = reduce_axis(volume, g.input, 2, g, step);
    let (h_pass, dims) = reduce_axis(&w_pass, dims, 1, g, step);
    reduce_axis(&h_pass, dims, 0, g, step).0
}

/// Divisor of every output voxel, `[Do, Ho, Wo]`, as a product of per-axis counts.
fn divisors<T: Float>(g: &PoolGeometry, count_include_pad: bool) -> Vec<T> {
    let per_axis: Vec<Vec<usize>> = (0..3)
        .map(|a| {
            (0..g.output[a])
                .map(|o| g.divisor(a, o, count_include_pad))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(g.output_volume());
    for &dd in &per_axis[0] {
        for &dh in &per_axis[1] {
            for &dw in &per_axis[2] {
                out.push(T::from_f64((dd * dh * dw) as f64));
            }
        }
    }
    out
}

/// Fast max pooling forward: `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
pub fn max_pool_forward<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); g.planes * g.output_volume()];
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(g.output_volume())
        .zip(x.par_chunks(g.input_volume()))
        .for_each(|(yp, xp)| yp.copy_from_slice(&separable_pool(g, xp, max_step)));
    y
}

/// Fast average pooling forward: `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
pub fn avg_pool_forward<T: Float>(g: &PoolGeometry, x: &[T], count_include_pad: bool) -> Vec<T> {
    let mut y = vec![T::zero(); g.planes * g.output_volume()];
    if y.is_empty() {
        return y;
    }
    let div = divisors::<T>(g, count_include_pad);
    y.par_chunks_mut(g.output_volume())
        .zip(x.par_chunks(g.input_volume()))
        .for_each(|(yp, xp)| {
            for ((o, s), &d) in yp
                .iter_mut()
                .zip(separable_pool(g, xp, |a, b| a + b))
                .zip(&div)
            {
                *o = s / d;
            }
        });
    y
}

/// Adds each `src` row of axis `axis` to every input row of its window: the adjoint of a
/// summing [`reduce_axis`]. `dims` are the input dims of that pass.
fn spread_axis<T: Float>(src: &[T], dims: [usize; 3], axis: usize, g: &PoolGeometry) -> Vec<T> {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let (len, out_len) = (dims[axis], g.output[axis]);
    let mut dst = vec![T::zero(); outer * len * inner];
    for b in 0..outer {
        let dst_block = &mut dst[b * len * inner..(b + 1) * len * inner];
        for o in 0..out_len {
            let (lo, hi) = g.window(axis, o);
            let row = &src[(b * out_len + o) * inner..(b * out_len + o + 1) * inner];
            for i in lo..hi {
                for (d, &v) in dst_block[i * inner..(i + 1) * inner].iter_mut().zip(row) {
                    *d += v;
                }
            }
        }
    }
    dst
}

/// Fast average pooling backward: `dx[planes, D, H, W]` from `dy[planes, Do, Ho, Wo]`.
pub fn avg_pool_backward<T: Float>(g: &PoolGeometry, dy: &[T], count_include_pad: bool) -> Vec<T> {
    let mut dx = vec![T::zero(); g.planes * g.input_volume()];
    if dx.is_empty() || dy.is_empty() {
        return dx;
    }
    let div = divisors::<T>(g, count_include_pad);
    let [d, h, w] = g.input;
    let oh = g.output[1];
    dx.par_chunks_mut(g.input_volume())
        .zip(dy.par_chunks(g.output_volume()))
        .for_each(|(dxp, dyp)| {
            let scaled: Vec<T> = dyp.iter().zip(&div).map(|(&v, &q)| v / q).collect();
            let d_pass = spread_axis(&scaled, [d, oh, g.output[2]], 0, g);
            let h_pass = spread_axis(&d_pass, [d, h, g.output[2]], 1, g);
            dxp.copy_from_slice(&spread_axis(&h_pass, [d, h, w], 2, g));
        });
    dx
}

/// Fast max pooling backward: routes each `dy` to the first voxel of its window (in
/// `(kd, kh, kw)` order) equal to the saved output `y`, or PyTorch's choice (the last NaN) when
/// the output is NaN.
pub fn max_pool_backward<T: Float>(g: &PoolGeometry, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); g.planes * g.input_volume()];
    if dx.is_empty() || dy.is_empty() {
        return dx;
    }
    let [_, h, w] = g.input;
    let [od_n, oh_n, ow_n] = g.output;
    let planes = dx
        .par_chunks_mut(g.input_volume())
        .zip(x.par_chunks(g.input_volume()))
        .zip(
            y.par_chunks(g.output_volume())
                .zip(dy.par_chunks(g.output_volume())),
        );
    planes.for_each(|((dxp, xp), (yp, dyp))| {
        let mut o = 0;
        for od in 0..od_n {
            let (d0, d1) = g.window(0, od);
            for oh in 0..oh_n {
                let (h0, h1) = g.window(1, oh);
                for ow in 0..ow_n {
                    let (w0, w1) = g.window(2, ow);
                    let target = yp[o];
                    let mut winner = None;
                    'search: for id in d0..d1 {
                        for ih in h0..h1 {
                            let row = (id * h + ih) * w;
                            for (iw, &v) in xp[row + w0..row + w1].iter().enumerate() {
                                if target.is_nan() {
                                    if v.is_nan() {
                                        winner = Some(row + w0 + iw);
                                    }
                                } else if v == target {
                                    winner = Some(row + w0 + iw);
                                    break 'search;
                                }
                            }
                        }
                    }
                    if let Some(i) = winner {
                        dxp[i] += dyp[o];
                    }
                    o += 1;
                }
            }
        }
    });
    dx
}

/// Plain per-voxel pooling loops: the yardstick for the fast kernels.
pub mod reference {
    use super::PoolGeometry;
    use crate::dispatch::Float;

    /// Calls `f(plane, output index, input index)` for every valid voxel of every window, in
    /// `(kd, kh, kw)` order.
    fn for_each_window_voxel(g: &PoolGeometry, mut f: impl FnMut(usize, usize, usize)) {
        let [d, h, w] = g.input;
        let [od_n, oh_n, ow_n] = g.output;
        let [kd_n, kh_n, kw_n] = g.kernel;
        let index = |o: usize, k: usize, a: usize| {
            (o * g.stride[a] + k)
                .checked_sub(g.padding[a])
                .filter(|&i| i < g.input[a])
        };
        for plane in 0..g.planes {
            for od in 0..od_n {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let o = ((plane * od_n + od) * oh_n + oh) * ow_n + ow;
                        for kd in 0..kd_n {
                            for kh in 0..kh_n {
                                for kw in 0..kw_n {
                                    if let (Some(id), Some(ih), Some(iw)) =
                                        (index(od, kd, 0), index(oh, kh, 1), index(ow, kw, 2))
                                    {
                                        f(plane, o, ((plane * d + id) * h + ih) * w + iw);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Index of the winning input voxel of every output voxel.
    fn argmax<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<Option<usize>> {
        let mut best: Vec<Option<usize>> =
            vec![None; g.planes * g.output.iter().product::<usize>()];
        for_each_window_voxel(g, |_, o, i| {
            best[o] = match best[o] {
                // PyTorch's rule: a larger value or a NaN takes over.
                Some(b) if !(x[i] > x[b] || x[i].is_nan()) => Some(b),
                _ => Some(i),
            };
        });
        best
    }

    /// Max pooling forward, `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
    pub fn max_pool_forward<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<T> {
        argmax(g, x)
            .into_iter()
            .map(|i| i.map_or(T::zero(), |i| x[i]))
            .collect()
    }

    /// Max pooling backward: each `dy` goes to its window's winner.
    pub fn max_pool_backward<T: Float>(g: &PoolGeometry, x: &[T], dy: &[T]) -> Vec<T> {
        let mut dx = vec![T::zero(); x.len()];
        for (o, i) in argmax(g, x).into_iter().enumerate() {
            if let Some(i) = i {
                dx[i] += dy[o];
            }
        }
        dx
    }

    /// Divisor of output voxel `o` (flat index within a plane).
    fn divisor(g: &PoolGeometry, o: usize, count_include_pad: bool) -> f64 {
        let [_, oh_n, ow_n] = g.output;
        let (od, oh, ow) = (o / (oh_n * ow_n), (o / ow_n) % oh_n, o % ow_n);
        (g.divisor(0, od, count_include_pad)
            * g.divisor(1, oh, count_include_pad)
            * g.divisor(2, ow, count_include_pad)) as f64
    }

    /// Average pooling forward, `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
    pub fn avg_pool_forward<T: Float>(
        g: &PoolGeometry,
        x: &[T],
        count_include_pad: bool,
    ) -> Vec<T> {
        let per_plane: usize = g.output.iter().product();
        let mut y = vec![T::zero(); g.planes * per_plane];
        for_each_window_voxel(g, |_, o, i| y[o] += x[i]);
        for (o, v) in y.iter_mut().enumerate() {
            *v /= T::from_f64(divisor(g, o % per_plane, count_include_pad));
        }
        y
    }

    /// Average pooling backward: `dx[planes, D, H, W]` from `dy[planes, Do, Ho, Wo]`.
    pub fn avg_pool_backward<T: Float>(
        g: &PoolGeometry,
        dy: &[T],
        count_include_pad: bool,
    ) -> Vec<T> {
        let per_plane: usize = g.output.iter().product();
        let mut dx = vec![T::zero(); g.planes * g.input.iter().product::<usize>()];
        for_each_window_voxel(g, |_, o, i| {
            dx[i] += dy[o] / T::from_f64(divisor(g, o % per_plane, count_include_pad))
        });
        dx
    }
}

/// Max pooling forward as a candle op; backward by [`MaxPoolBackward`].
struct MaxPool {
    geometry: PoolGeometry,
}

impl Kernel<1> for MaxPool {
    fn run<T: Float>(&self, [x]: [&[T]; 1]) -> Result<Vec<T>> {
        Ok(max_pool_forward(&self.geometry, x))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        check_layout(self.name(), l, g.planes, g.input)?;
        let out = run_cpu(self.name(), self, [(s, l)])?;
        Ok((out, with_spatial(l.dims(), g.output)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geometry;
        check_layout(self.name(), l, g.planes, g.input)?;
        let out = crate::cuda::max_pool_forward(s, l, g)?;
        Ok((out, with_spatial(l.dims(), g.output)))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(
            y,
            grad,
            &MaxPoolBackward {
                geometry: self.geometry,
            },
        )?))
    }
}

/// `(x, y, dy) → dx` of max pooling.
struct MaxPoolBackward {
    geometry: PoolGeometry,
}

impl MaxPoolBackward {
    /// Checks that `x` holds the input and `y`, `dy` the output volumes.
    fn check_layouts(&self, x: &Layout, y: &Layout, dy: &Layout) -> Result<()> {
        let (g, name) = (&self.geometry, self.name());
        check_layout(name, x, g.planes, g.input)?;
        check_layout(name, y, g.planes, g.output)?;
        check_layout(name, dy, g.planes, g.output)
    }
}

impl Kernel<3> for MaxPoolBackward {
    fn run<T: Float>(&self, [x, y, dy]: [&[T]; 3]) -> Result<Vec<T>> {
        Ok(max_pool_backward(&self.geometry, x, y, dy))
    }
}

impl CustomOp3 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max_pool3d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check_layouts(l1, l2, l3)?;
        let out = run_cpu(self.name(), self, [(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.check_layouts(l1, l2, l3)?;
        let out = crate::cuda::max_pool_backward((s1, l1), (s2, l2), (s3, l3), &self.geometry)?;
        Ok((out, l1.shape().clone()))
    }
}

/// Average pooling forward (`backward: false`) or its adjoint; each is the other's backward.
#[derive(Clone, Copy)]
struct AvgPool {
    geometry: PoolGeometry,
    count_include_pad: bool,
    backward: bool,
}

impl AvgPool {
    /// Checks that `l` holds this pass's source volumes and returns the result shape.
    fn result_shape(&self, l: &Layout) -> Result<Shape> {
        let g = &self.geometry;
        let (from, to) = if self.backward {
            (g.output, g.input)
        } else {
            (g.input, g.output)
        };
        check_layout(self.name(), l, g.planes, from)?;
        Ok(with_spatial(l.dims(), to))
    }
}

impl Kernel<1> for AvgPool {
    /// This pass on the CPU: `[planes, from volume]` values to `[planes, to volume]`.
    fn run<T: Float>(&self, [v]: [&[T]; 1]) -> Result<Vec<T>> {
        let (g, inc) = (&self.geometry, self.count_include_pad);
        Ok(if self.backward {
            avg_pool_backward(g, v, inc)
        } else {
            avg_pool_forward(g, v, inc)
        })
    }
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        if self.backward {
            "avg_pool3d-backward"
        } else {
            "avg_pool3d"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = self.result_shape(l)?;
        let out = run_cpu(self.name(), self, [(s, l)])?;
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let shape = self.result_shape(l)?;
        let out =
            crate::cuda::avg_pool(s, l, &self.geometry, self.count_include_pad, self.backward)?;
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.apply_op1(AvgPool {
            backward: !self.backward,
            ..*self
        })?))
    }
}

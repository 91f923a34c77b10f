//! O(n) cumulative sum and product along one dimension, with backward.
//!
//! candle's own `cumsum` multiplies by a triangular matrix (O(n²)) and it has no cumprod. These
//! ops scan each row once. The cumprod gradient is computed with prefix products and a reverse
//! recurrence, never by dividing by `x`, so it stays exact where `x` holds zeros (as PyTorch's).

use crate::dispatch::{kernel_dtype, run_cpu, Float, Kernel};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

/// Splits `dims` around `dim` into `(outer, len, inner)`: the tensor is viewed as
/// `[outer, len, inner]` with the scan running over the middle axis.
fn split_dims(op: &str, dims: &[usize], dim: usize) -> Result<(usize, usize, usize)> {
    if dim >= dims.len() {
        bail!(
            "{op}: dim {dim} out of range for a tensor of rank {}",
            dims.len()
        );
    }
    let outer = dims[..dim].iter().product();
    let inner = dims[dim + 1..].iter().product();
    Ok((outer, dims[dim], inner))
}

/// Which running reduction a scan computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanKind {
    Sum,
    Prod,
}

/// Scans every row of a `[outer, len, inner]` buffer along the middle axis.
///
/// `exclusive`: element `k` combines elements before `k` only (identity at `k = 0`).
/// `reverse`: the scan runs from the end (used by the cumsum backward).
fn scan_kernel<T: WithDType>(
    x: &[T],
    (outer, len, inner): (usize, usize, usize),
    kind: ScanKind,
    exclusive: bool,
    reverse: bool,
) -> Vec<T> {
    let identity = match kind {
        ScanKind::Sum => T::zero(),
        ScanKind::Prod => T::one(),
    };
    let mut out = vec![identity; x.len()];
    let row = len * inner;
    if row == 0 || outer == 0 {
        return out;
    }
    out.par_chunks_mut(row)
        .zip(x.par_chunks(row))
        .for_each(|(out_row, x_row)| {
            // The running value for all `inner` columns at once: the inner loop is contiguous.
            let mut acc = vec![identity; inner];
            for step in 0..len {
                let k = if reverse { len - 1 - step } else { step };
                let xs = &x_row[k * inner..(k + 1) * inner];
                let os = &mut out_row[k * inner..(k + 1) * inner];
                for ((o, a), &v) in os.iter_mut().zip(acc.iter_mut()).zip(xs) {
                    if exclusive {
                        *o = *a;
                    }
                    match kind {
                        ScanKind::Sum => *a += v,
                        ScanKind::Prod => *a *= v,
                    }
                    if !exclusive {
                        *o = *a;
                    }
                }
            }
        });
    out
}

/// Gradient of `cumprod(x)` (inclusive or exclusive) given the output gradient `g`, both
/// `[outer, len, inner]`, in O(len) per row and without dividing by `x`.
///
/// With `E_k = Π_{i<k} x_i`:
/// - inclusive: `dx_k = E_k · S_k`, `S_k = g_k + x_{k+1} S_{k+1}`, `S_{len-1} = g_{len-1}`;
/// - exclusive: `dx_k = E_k · T_k`, `T_k = g_{k+1} + x_{k+1} T_{k+1}`, `T_{len-1} = 0`.
pub(crate) fn cumprod_backward_kernel<T: WithDType>(
    x: &[T],
    g: &[T],
    (outer, len, inner): (usize, usize, usize),
    exclusive: bool,
) -> Vec<T> {
    // E_k: the exclusive prefix products.
    let mut dx = scan_kernel(x, (outer, len, inner), ScanKind::Prod, true, false);
    let row = len * inner;
    if row == 0 || outer == 0 {
        return dx;
    }
    dx.par_chunks_mut(row)
        .zip(x.par_chunks(row).zip(g.par_chunks(row)))
        .for_each(|(dx_row, (x_row, g_row))| {
            let mut suffix = vec![T::zero(); inner];
            for k in (0..len).rev() {
                let cols = k * inner..(k + 1) * inner;
                let next = (k + 1) * inner..(k + 2) * inner;
                for (c, s) in suffix.iter_mut().enumerate() {
                    let has_next = k + 1 < len;
                    *s = if exclusive {
                        if has_next {
                            g_row[next.start + c] + x_row[next.start + c] * *s
                        } else {
                            T::zero()
                        }
                    } else if has_next {
                        g_row[cols.start + c] + x_row[next.start + c] * *s
                    } else {
                        g_row[cols.start + c]
                    };
                    dx_row[cols.start + c] *= *s;
                }
            }
        });
    dx
}

/// One scan on the CPU: `(x)` → the scan of `x` viewed as `dims` (`[outer, len, inner]`).
struct Scan {
    dims: (usize, usize, usize),
    kind: ScanKind,
    exclusive: bool,
    reverse: bool,
}

impl Kernel<1> for Scan {
    fn run<T: Float>(&self, [x]: [&[T]; 1]) -> Result<Vec<T>> {
        Ok(scan_kernel(
            x,
            self.dims,
            self.kind,
            self.exclusive,
            self.reverse,
        ))
    }
}

/// The cumprod gradient on the CPU: `(x, grad_out)` → `grad_x`, both viewed as `dims`.
struct ScanProdGrad {
    dims: (usize, usize, usize),
    exclusive: bool,
}

impl Kernel<2> for ScanProdGrad {
    fn run<T: Float>(&self, [x, g]: [&[T]; 2]) -> Result<Vec<T>> {
        Ok(cumprod_backward_kernel(x, g, self.dims, self.exclusive))
    }
}

/// Cumulative sum along `dim` (forward or reverse), as a custom op.
struct CumSum {
    dim: usize,
    exclusive: bool,
    reverse: bool,
}

impl CustomOp1 for CumSum {
    fn name(&self) -> &'static str {
        "cumsum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = split_dims("cumsum", layout.dims(), self.dim)?;
        let scan = Scan {
            dims,
            kind: ScanKind::Sum,
            exclusive: self.exclusive,
            reverse: self.reverse,
        };
        let out = run_cpu("cumsum", &scan, [(storage, layout)])?;
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = split_dims("cumsum", layout.dims(), self.dim)?;
        let out = crate::cuda::scan(
            "cumsum",
            storage,
            layout,
            dims,
            self.exclusive,
            self.reverse,
        )?;
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // d/dx_k Σ_{j≥k} (or j>k) g_j: the same scan run the other way.
        let reversed = CumSum {
            dim: self.dim,
            exclusive: self.exclusive,
            reverse: !self.reverse,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1(reversed)?))
    }
}

/// Cumulative product along `dim`, as a custom op.
struct CumProd {
    dim: usize,
    exclusive: bool,
}

impl CustomOp1 for CumProd {
    fn name(&self) -> &'static str {
        "cumprod"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = split_dims("cumprod", layout.dims(), self.dim)?;
        let scan = Scan {
            dims,
            kind: ScanKind::Prod,
            exclusive: self.exclusive,
            reverse: false,
        };
        let out = run_cpu("cumprod", &scan, [(storage, layout)])?;
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = split_dims("cumprod", layout.dims(), self.dim)?;
        let out = crate::cuda::scan("cumprod", storage, layout, dims, self.exclusive, false)?;
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let backward = CumProdBackward {
            dim: self.dim,
            exclusive: self.exclusive,
        };
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad_res.contiguous()?, &backward)?,
        ))
    }
}

/// `(x, grad_out) -> grad_x` of [`CumProd`]; records no backward itself.
struct CumProdBackward {
    dim: usize,
    exclusive: bool,
}

impl CumProdBackward {
    /// `[outer, len, inner]` of the operands, which must share a shape.
    fn dims(&self, x_layout: &Layout, g_layout: &Layout) -> Result<(usize, usize, usize)> {
        if x_layout.shape() != g_layout.shape() {
            bail!(
                "cumprod-backward: gradient shape {:?} differs from input shape {:?}",
                g_layout.shape(),
                x_layout.shape()
            );
        }
        split_dims("cumprod-backward", x_layout.dims(), self.dim)
    }
}

impl CustomOp2 for CumProdBackward {
    fn name(&self) -> &'static str {
        "cumprod-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(x_layout, g_layout)?;
        let grad = ScanProdGrad {
            dims,
            exclusive: self.exclusive,
        };
        let out = run_cpu("cumprod-backward", &grad, [(x, x_layout), (g, g_layout)])?;
        Ok((out, x_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        g: &candle_core::CudaStorage,
        g_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = self.dims(x_layout, g_layout)?;
        let out =
            crate::cuda::cumprod_backward((x, x_layout), (g, g_layout), dims, self.exclusive)?;
        Ok((out, x_layout.shape().clone()))
    }
}

/// Runs a scan op in the kernel dtype (f16/bf16 widened to f32) and casts back.
fn run_scan<C: CustomOp1 + Send + Sync + 'static>(
    name: &str,
    x: &Tensor,
    dim: usize,
    op: C,
) -> Result<Tensor> {
    split_dims(name, x.dims(), dim)?;
    let dtype = kernel_dtype(name, x.dtype())?;
    let out = x.to_dtype(dtype)?.contiguous()?.apply_op1(op)?;
    out.to_dtype(x.dtype())
}

/// Cumulative sum of `x` along `dim` in O(n), differentiable.
///
/// `exclusive`: element `k` sums the elements before `k` (0 first), like
/// `torch.cumsum(x, dim) - x` but without the cancellation.
pub fn cumsum(x: &Tensor, dim: usize, exclusive: bool) -> Result<Tensor> {
    let op = CumSum {
        dim,
        exclusive,
        reverse: false,
    };
    run_scan("cumsum", x, dim, op)
}

/// Cumulative product of `x` along `dim` in O(n), differentiable, with a gradient that is
/// exact where `x` contains zeros.
///
/// `exclusive`: element `k` multiplies the elements before `k` (1 first).
pub fn cumprod(x: &Tensor, dim: usize, exclusive: bool) -> Result<Tensor> {
    run_scan("cumprod", x, dim, CumProd { dim, exclusive })
}

/// Plain loop implementations for testing the fast paths: O(n²) per row, obviously correct.
pub mod reference {
    use candle_core::WithDType;

    /// Index of element `k` of row `(o, i)` in a `[outer, len, inner]` buffer.
    fn at(o: usize, k: usize, i: usize, len: usize, inner: usize) -> usize {
        (o * len + k) * inner + i
    }

    /// Elements of row `(o, i)` that element `k` of an (exclusive) scan combines.
    fn terms(k: usize, exclusive: bool) -> std::ops::Range<usize> {
        if exclusive {
            0..k
        } else {
            0..k + 1
        }
    }

    /// Cumulative sum of a `[outer, len, inner]` buffer over the middle axis.
    pub fn cumsum<T: WithDType>(
        x: &[T],
        (outer, len, inner): (usize, usize, usize),
        exclusive: bool,
    ) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        for o in 0..outer {
            for i in 0..inner {
                for k in 0..len {
                    let mut acc = T::zero();
                    for j in terms(k, exclusive) {
                        acc += x[at(o, j, i, len, inner)];
                    }
                    out[at(o, k, i, len, inner)] = acc;
                }
            }
        }
        out
    }

    /// Cumulative product of a `[outer, len, inner]` buffer over the middle axis.
    pub fn cumprod<T: WithDType>(
        x: &[T],
        (outer, len, inner): (usize, usize, usize),
        exclusive: bool,
    ) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        for o in 0..outer {
            for i in 0..inner {
                for k in 0..len {
                    let mut acc = T::one();
                    for j in terms(k, exclusive) {
                        acc *= x[at(o, j, i, len, inner)];
                    }
                    out[at(o, k, i, len, inner)] = acc;
                }
            }
        }
        out
    }

    /// Gradient of [`cumprod`]: `dx_k = Σ_j g_j Π_{i ∈ terms(j), i ≠ k} x_i` over the `j` whose
    /// product contains `x_k` (O(n³) per row).
    pub fn cumprod_backward<T: WithDType>(
        x: &[T],
        g: &[T],
        (outer, len, inner): (usize, usize, usize),
        exclusive: bool,
    ) -> Vec<T> {
        let mut dx = vec![T::zero(); x.len()];
        for o in 0..outer {
            for i in 0..inner {
                for k in 0..len {
                    let mut acc = T::zero();
                    for j in 0..len {
                        if !terms(j, exclusive).contains(&k) {
                            continue;
                        }
                        let mut prod = g[at(o, j, i, len, inner)];
                        for m in terms(j, exclusive).filter(|&m| m != k) {
                            prod *= x[at(o, m, i, len, inner)];
                        }
                        acc += prod;
                    }
                    dx[at(o, k, i, len, inner)] = acc;
                }
            }
        }
        dx
    }
}

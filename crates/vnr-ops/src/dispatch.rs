//! The one f32/f64 dispatch of the CPU kernels.
//!
//! A kernel is written once, generically over [`Float`], as a `Kernel` of `N` operands;
//! `run_cpu` checks that the operands share a float dtype, views each as its row-major elements
//! (copying strided layouts) and runs the matching instantiation. Ops whose kernels compute in
//! f32 for half-precision inputs convert first with `kernel_dtype`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, WithDType};
use std::borrow::Cow;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The float types the CPU kernels run in: f32 and f64 only (sealed, so only they ever reach the
/// unsafe gemm calls of the convolution kernels).
pub trait Float: WithDType + std::ops::Neg<Output = Self> + sealed::Sealed {
    /// Whether the value is NaN (max pooling propagates NaN as PyTorch does).
    fn is_nan(self) -> bool;
    /// Whether `self` is neither NaN nor infinite.
    fn is_finite(self) -> bool;
    /// Largest integer not above `self`.
    fn floor(self) -> Self;
    /// Nearest integer, ties to even (C's `nearbyint` in the default rounding mode).
    fn round_half_even(self) -> Self;
    /// The correctly rounded square root (IEEE 754, as candle's `sqrt`).
    fn sqrt(self) -> Self;
}

// `floor` and `round_ties_even` are libm calls on baseline x86-64 (no SSE4.1) and dominated the
// grid-sampling kernels' profile. Below 2^(mantissa bits) the integer conversion is exact; at or
// above it every float is already an integer (and NaN/inf pass through unchanged).
macro_rules! impl_float {
    ($t:ty, $integral_from:expr) => {
        impl Float for $t {
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn floor(self) -> Self {
                if self.is_nan() || self.abs() >= $integral_from {
                    return self;
                }
                let truncated = self as i64 as $t;
                if truncated > self {
                    truncated - 1.0
                } else {
                    truncated
                }
            }
            #[inline]
            fn round_half_even(self) -> Self {
                if self.is_nan() || self.abs() >= $integral_from {
                    return self;
                }
                let lo = Float::floor(self);
                // Exact: the fractional part of a float is representable.
                let frac = self - lo;
                let lo_is_even = (lo as i64) % 2 == 0;
                if frac > 0.5 || (frac == 0.5 && !lo_is_even) {
                    lo + 1.0
                } else {
                    lo
                }
            }
        }
    };
}
impl_float!(f32, 8_388_608.0); // 2^23
impl_float!(f64, 4_503_599_627_370_496.0); // 2^52

/// A CPU kernel of `N` operands, written once for both float types.
pub(crate) trait Kernel<const N: usize> {
    /// The result's row-major elements from the operands' row-major elements.
    fn run<T: Float>(&self, operands: [&[T]; N]) -> Result<Vec<T>>;
}

/// Runs `kernel` on `N` CPU storages that must all be f32 or all f64 (an error naming `op`
/// otherwise), wrapping the result in a storage of the same dtype.
pub(crate) fn run_cpu<const N: usize>(
    op: &str,
    kernel: &impl Kernel<N>,
    operands: [(&CpuStorage, &Layout); N],
) -> Result<CpuStorage> {
    let dtypes = operands.map(|(s, _)| s.dtype());
    if dtypes.iter().any(|d| *d != dtypes[0]) {
        bail!("{op}: operands must share a dtype, got {dtypes:?}");
    }
    match dtypes.first() {
        Some(DType::F32) => Ok(CpuStorage::F32(run_typed(op, kernel, operands)?)),
        Some(DType::F64) => Ok(CpuStorage::F64(run_typed(op, kernel, operands)?)),
        other => bail!("{op}: expected f32 or f64 operands, got {other:?}"),
    }
}

fn run_typed<T: Float, const N: usize>(
    op: &str,
    kernel: &impl Kernel<N>,
    operands: [(&CpuStorage, &Layout); N],
) -> Result<Vec<T>> {
    let mut data = Vec::with_capacity(N);
    for (s, l) in operands {
        data.push(contiguous_data(op, s.as_slice::<T>()?, l)?);
    }
    kernel.run(std::array::from_fn(|i| &*data[i]))
}

/// Number of elements of a tensor of `dims` that an op is about to allocate, or an error when
/// it does not fit in memory at all (the product overflows, or its f64 bytes exceed
/// `isize::MAX`, Rust's limit for one allocation): sizes computed from parameters (a stride, a
/// frequency count) become errors here rather than an overflow or an aborted allocation.
///
/// ```
/// use vnr_ops::dispatch::checked_elements;
/// assert_eq!(checked_elements("op", "output", &[2, 3, 4]).unwrap(), 24);
/// assert!(checked_elements("op", "output", &[1 << 40, 1 << 40]).is_err());
/// ```
pub fn checked_elements(op: &str, what: &str, dims: &[usize]) -> Result<usize> {
    let limit = isize::MAX as usize / std::mem::size_of::<f64>();
    match dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(n) if n <= limit => Ok(n),
        _ => bail!("{op}: the {what} {dims:?} is too large to allocate"),
    }
}

/// Most elements of one buffer that a call sizes from its parameters (image sizes, ray, sample
/// and batch counts, grid sides, channel counts from a config): 2³², 16 GiB of `f32`. Far above
/// what the reference models and renderers use, and low enough that a bad value is an error
/// rather than an allocation that aborts the process ([`checked_elements`] alone lets sizes up
/// to `isize::MAX` bytes through).
pub const MAX_PARAMETER_ELEMENTS: usize = 1 << 32;

/// [`checked_elements`] that also refuses more than [`MAX_PARAMETER_ELEMENTS`]: for sizes that
/// parameters choose, checked where they are first known.
///
/// ```
/// use vnr_ops::dispatch::capped_elements;
/// assert_eq!(capped_elements("op", "rays", &[1024, 3]).unwrap(), 3072);
/// assert!(capped_elements("op", "rays", &[1 << 40, 3]).is_err());
/// ```
pub fn capped_elements(op: &str, what: &str, dims: &[usize]) -> Result<usize> {
    let n = checked_elements(op, what, dims)?;
    if n > MAX_PARAMETER_ELEMENTS {
        bail!(
            "{op}: the {what} {dims:?} has {n} elements, more than the {MAX_PARAMETER_ELEMENTS} allowed"
        );
    }
    Ok(n)
}

/// The dtype the kernels run in for `dtype`: f16/bf16 are computed in f32.
pub(crate) fn kernel_dtype(op: &str, dtype: DType) -> Result<DType> {
    match dtype {
        DType::F32 | DType::F64 => Ok(dtype),
        DType::F16 | DType::BF16 => Ok(DType::F32),
        other => bail!("{op}: unsupported dtype {other:?}, expected a float type"),
    }
}

/// The elements of a tensor's storage in row-major order, borrowed when already contiguous.
pub(crate) fn contiguous_data<'a, T: Copy>(
    op: &str,
    data: &'a [T],
    layout: &Layout,
) -> Result<Cow<'a, [T]>> {
    let short = || {
        candle_core::Error::Msg(format!(
            "{op}: storage is shorter than its layout {layout:?}"
        ))
    };
    if let Some((start, end)) = layout.contiguous_offsets() {
        return data.get(start..end).map(Cow::Borrowed).ok_or_else(short);
    }
    let (dims, strides) = (layout.dims(), layout.stride());
    let count = layout.shape().elem_count();
    let mut out = Vec::with_capacity(count);
    let mut index = vec![0usize; dims.len()];
    let mut offset = layout.start_offset();
    for _ in 0..count {
        out.push(*data.get(offset).ok_or_else(short)?);
        // Odometer step: bump the last axis, carrying into earlier ones.
        for a in (0..dims.len()).rev() {
            index[a] += 1;
            offset += strides[a];
            if index[a] < dims[a] {
                break;
            }
            offset -= strides[a] * dims[a];
            index[a] = 0;
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Sums its operands element-wise.
    struct Sum;

    impl Kernel<2> for Sum {
        fn run<T: Float>(&self, [a, b]: [&[T]; 2]) -> Result<Vec<T>> {
            Ok(a.iter().zip(b).map(|(&a, &b)| a + b).collect())
        }
    }

    fn storage(t: &Tensor) -> (CpuStorage, Layout) {
        let (s, l) = t.storage_and_layout();
        match &*s {
            candle_core::Storage::Cpu(s) => (s.clone(), l.clone()),
            _ => unreachable!("CPU tensors only"),
        }
    }

    #[test]
    fn runs_both_dtypes_and_reads_strided_operands() -> Result<()> {
        let a = Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((2, 3))?;
        let b = Tensor::ones((3, 2), DType::F32, &Device::Cpu)?.t()?;
        let (sa, la) = storage(&a);
        let (sb, lb) = storage(&b);
        let out = run_cpu("sum", &Sum, [(&sa, &la), (&sb, &lb)])?;
        assert_eq!(out.as_slice::<f32>()?, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let (a64, b64) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?.t()?.t()?);
        let ((sa, la), (sb, lb)) = (storage(&a64), storage(&b64));
        let out = run_cpu("sum", &Sum, [(&sa, &la), (&sb, &lb)])?;
        assert_eq!(out.as_slice::<f64>()?, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        Ok(())
    }

    #[test]
    fn refuses_mixed_and_integer_dtypes() -> Result<()> {
        let a = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
        let b = Tensor::zeros(3, DType::F64, &Device::Cpu)?;
        let c = Tensor::zeros(3, DType::U32, &Device::Cpu)?;
        let ((sa, la), (sb, lb), (sc, lc)) = (storage(&a), storage(&b), storage(&c));
        let mixed = run_cpu("sum", &Sum, [(&sa, &la), (&sb, &lb)]).unwrap_err();
        assert!(mixed.to_string().contains("share a dtype"), "{mixed}");
        let ints = run_cpu("sum", &Sum, [(&sc, &lc), (&sc, &lc)]).unwrap_err();
        assert!(ints.to_string().contains("expected f32 or f64"), "{ints}");
        Ok(())
    }
}

//! CUDA launches of this crate's kernels (`kernels/*.cu`, compiled to PTX by `build.rs` and
//! embedded here), called from the ops' `cuda_fwd`. Convolutions ([`conv`]) add cuBLAS matrix
//! products around their vol2col / col2vol kernels; grid sampling lives in [`grid_sample`].
//!
//! Every kernel has an `_f32` and an `_f64` entry point, walks its work items with a
//! grid-stride loop and mirrors the CPU kernel of the same op formula for formula. Inputs with
//! strided layouts are first copied to a contiguous buffer on the device.

use crate::pool::PoolGeometry;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, DeviceRepr, LaunchArgs, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, WithDType};
use std::sync::Arc;

/// A PTX module built from one `kernels/*.cu` file.
struct Module {
    /// Key under which candle caches the loaded module.
    name: &'static str,
    ptx: &'static str,
}

const CUMULATIVE: Module = Module {
    name: "vnr_ops_cumulative",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/cumulative.ptx")),
};

const RAYMARCH: Module = Module {
    name: "vnr_ops_raymarch",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/raymarch.ptx")),
};

const POOL: Module = Module {
    name: "vnr_ops_pool",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/pool.ptx")),
};

/// Element types with kernels: the entry point of kernel `k` is `k_{SUFFIX}`.
trait CudaFloat: CudaDType + DeviceRepr + ValidAsZeroBits + WithDType {
    const SUFFIX: &'static str;
}

impl CudaFloat for f32 {
    const SUFFIX: &'static str = "f32";
}

impl CudaFloat for f64 {
    const SUFFIX: &'static str = "f64";
}

/// Calls `$f::<T>(args)` with `T` the element type of `$dtype` (f32 or f64).
macro_rules! with_float_type {
    ($op:expr, $dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::F64 => $f::<f64>($($arg),*),
            other => {
                candle_core::bail!("{}: unsupported dtype {other:?} on CUDA (f32 or f64)", $op)
            }
        }
    };
}

mod conv;
mod grid_sample;

pub(crate) use conv::conv;
pub(crate) use grid_sample::{grid_sample_backward, grid_sample_forward};

/// The dtype shared by all `storages`, or an error naming the op.
fn common_dtype(op: &str, storages: &[&CudaStorage]) -> Result<DType> {
    let dtypes: Vec<DType> = storages.iter().map(|s| s.dtype()).collect();
    match dtypes.first() {
        Some(&first) if dtypes.iter().all(|&d| d == first) => Ok(first),
        _ => bail!("{op}: inputs must share a dtype, got {dtypes:?}"),
    }
}

/// A loaded kernel and the device stream it runs on (candle's own stream, so launches are
/// ordered with candle's work).
struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// Loads entry point `{kernel}_{T::SUFFIX}` of `module` (candle caches the module per device).
    fn load<T: CudaFloat>(dev: &CudaDevice, module: &Module, kernel: &str) -> Result<Self> {
        let name = format!("{kernel}_{}", T::SUFFIX);
        let func = dev.get_or_load_custom_func(&name, module.name, module.ptx)?;
        Ok(Self {
            func: func.into_cuda_function(),
            stream: dev.cuda_stream(),
        })
    }

    fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// Device buffer of `len` elements whose contents the next kernel writes entirely. At least
/// one element is allocated so that empty tensors never request a zero-byte allocation.
fn alloc_output<T: CudaFloat>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: callers launch a kernel that writes all `len` elements before anything reads them.
    unsafe { dev.alloc::<T>(len.max(1)) }
}

/// Zero-filled device buffer of `len` elements (at least one, see [`alloc_output`]).
fn alloc_zeros<T: CudaFloat>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    dev.alloc_zeros::<T>(len.max(1))
}

/// The row-major data of `storage` seen through `layout`: a view when the layout is
/// contiguous, otherwise a contiguous copy kept alive in `copy`.
fn contiguous_view<'a, T: CudaFloat>(
    storage: &'a CudaStorage,
    layout: &Layout,
    copy: &'a mut Option<CudaStorage>,
) -> Result<CudaView<'a, T>> {
    let (source, range) = match layout.contiguous_offsets() {
        Some((start, end)) => (storage, start..end),
        None => {
            let len = layout.shape().elem_count();
            let dev = storage.device();
            let buffer = alloc_output::<T>(dev, len)?;
            let copied = copy.insert(CudaStorage::wrap_cuda_slice(buffer, dev.clone()));
            storage.copy_strided_src(copied, 0, layout)?;
            let copied: &'a CudaStorage = copied;
            (copied, 0..len)
        }
    };
    match source.as_cuda_slice::<T>()?.try_slice(range.clone()) {
        Some(view) => Ok(view),
        None => bail!("CUDA storage is shorter than its layout needs ({range:?}, {layout:?})"),
    }
}

/// Launches a grid-stride kernel over `items` work items; nothing when there are none.
///
/// # Safety
/// The arguments pushed on `builder` must match the kernel's parameters in type and order,
/// and every buffer must hold as many elements as the kernel reads or writes for `items`.
unsafe fn launch(builder: &mut LaunchArgs<'_>, items: usize) -> Result<()> {
    const THREADS: usize = 256;
    // The grid-stride loops cover what a capped grid does not.
    const MAX_BLOCKS: usize = 1 << 20;
    if items == 0 {
        return Ok(());
    }
    let blocks = items.div_ceil(THREADS).min(MAX_BLOCKS);
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    builder.launch(cfg).w()?;
    Ok(())
}

/// Cumulative sum (`kernel = "cumsum"`) or product (`"cumprod"`) of a `[outer, len, inner]`
/// tensor along the middle axis; see `cumulative::scan_kernel`.
pub(crate) fn scan(
    kernel: &'static str,
    storage: &CudaStorage,
    layout: &Layout,
    dims: (usize, usize, usize),
    exclusive: bool,
    reverse: bool,
) -> Result<CudaStorage> {
    with_float_type!(
        kernel,
        storage.dtype(),
        scan_typed(kernel, storage, layout, dims, exclusive, reverse)
    )
}

fn scan_typed<T: CudaFloat>(
    kernel: &'static str,
    storage: &CudaStorage,
    layout: &Layout,
    (outer, len, inner): (usize, usize, usize),
    exclusive: bool,
    reverse: bool,
) -> Result<CudaStorage> {
    let dev = storage.device();
    let mut copy = None;
    let x = contiguous_view::<T>(storage, layout, &mut copy)?;
    let out = alloc_output::<T>(dev, outer * len * inner)?;
    let func = Kernel::load::<T>(dev, &CUMULATIVE, kernel)?;
    let (exclusive, reverse) = (i32::from(exclusive), i32::from(reverse));
    let mut builder = func.builder();
    builder.arg(&x).arg(&out).arg(&outer).arg(&len).arg(&inner);
    builder.arg(&exclusive).arg(&reverse);
    // SAFETY: matches `cumsum_*`/`cumprod_*` in kernels/cumulative.cu; both buffers hold
    // `outer·len·inner` elements.
    unsafe { launch(&mut builder, outer * inner)? };
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Gradient of cumprod from `x` and the output gradient `g`, both `[outer, len, inner]`;
/// see `cumulative::cumprod_backward_kernel`.
pub(crate) fn cumprod_backward(
    (xs, xl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    dims: (usize, usize, usize),
    exclusive: bool,
) -> Result<CudaStorage> {
    const OP: &str = "cumprod-backward";
    with_float_type!(
        OP,
        common_dtype(OP, &[xs, gs])?,
        cumprod_backward_typed(xs, xl, gs, gl, dims, exclusive)
    )
}

fn cumprod_backward_typed<T: CudaFloat>(
    xs: &CudaStorage,
    xl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    (outer, len, inner): (usize, usize, usize),
    exclusive: bool,
) -> Result<CudaStorage> {
    let dev = xs.device();
    let (mut x_copy, mut g_copy) = (None, None);
    let x = contiguous_view::<T>(xs, xl, &mut x_copy)?;
    let g = contiguous_view::<T>(gs, gl, &mut g_copy)?;
    let dx = alloc_output::<T>(dev, outer * len * inner)?;
    let func = Kernel::load::<T>(dev, &CUMULATIVE, "cumprod_backward")?;
    let exclusive = i32::from(exclusive);
    let mut builder = func.builder();
    builder.arg(&x).arg(&g).arg(&dx);
    builder.arg(&outer).arg(&len).arg(&inner).arg(&exclusive);
    // SAFETY: matches `cumprod_backward_*` in kernels/cumulative.cu; all three buffers hold
    // `outer·len·inner` elements.
    unsafe { launch(&mut builder, outer * inner)? };
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

/// Sizes and parameters of one ray-marching launch: `rays` rays of `points` samples with
/// `features` channels, absorption lagging `shift` samples, `eps` added to `1 − density`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RaymarchLaunch {
    pub rays: usize,
    pub points: usize,
    pub features: usize,
    pub shift: usize,
    pub eps: f64,
}

/// Emission-absorption forward: densities `[R, P]`, features `[R, P, F]` → `[R, F + 1]`,
/// failing (as the CPU op) when a density lies outside [0, 1].
pub(crate) fn ea_raymarch_forward(
    (ds, dl): (&CudaStorage, &Layout),
    (fs, fl): (&CudaStorage, &Layout),
    p: RaymarchLaunch,
) -> Result<CudaStorage> {
    const OP: &str = "ea_raymarch";
    with_float_type!(
        OP,
        common_dtype(OP, &[ds, fs])?,
        ea_raymarch_forward_typed(ds, dl, fs, fl, p)
    )
}

/// Fails unless every density lies in [0, 1]; reads one index (and value) back to the host.
fn check_density_bounds<T: CudaFloat>(dev: &CudaDevice, d: &CudaView<'_, T>) -> Result<()> {
    let n = d.len();
    if n == 0 {
        return Ok(());
    }
    let bad = dev.clone_htod(&vec![n as u64])?;
    let func = Kernel::load::<T>(dev, &RAYMARCH, "ea_raymarch_check")?;
    let mut builder = func.builder();
    builder.arg(d).arg(&n).arg(&bad);
    // SAFETY: matches `ea_raymarch_check_*` in kernels/raymarch.cu; `d` holds `n` elements.
    unsafe { launch(&mut builder, n)? };
    let first_bad = dev.clone_dtoh(&bad)?.first().copied().unwrap_or(n as u64);
    let index = usize::try_from(first_bad).unwrap_or(n);
    if index < n {
        let value = match d.try_slice(index..index + 1) {
            Some(v) => dev.clone_dtoh(&v)?,
            None => Vec::new(),
        };
        match value.first() {
            Some(v) => bail!("ea_raymarch: density {v} at flat index {index} is outside [0, 1]"),
            None => bail!("ea_raymarch: density at flat index {index} is outside [0, 1]"),
        }
    }
    Ok(())
}

fn ea_raymarch_forward_typed<T: CudaFloat>(
    ds: &CudaStorage,
    dl: &Layout,
    fs: &CudaStorage,
    fl: &Layout,
    p: RaymarchLaunch,
) -> Result<CudaStorage> {
    let dev = ds.device();
    let (mut d_copy, mut f_copy) = (None, None);
    let d = contiguous_view::<T>(ds, dl, &mut d_copy)?;
    let f = contiguous_view::<T>(fs, fl, &mut f_copy)?;
    check_density_bounds(dev, &d)?;
    let RaymarchLaunch {
        rays,
        points,
        features,
        shift,
        eps,
    } = p;
    let items = rays * (features + 1);
    let out = alloc_output::<T>(dev, items)?;
    let one_plus_eps = T::from_f64(1.0 + eps);
    let func = Kernel::load::<T>(dev, &RAYMARCH, "ea_raymarch_forward")?;
    let mut builder = func.builder();
    builder.arg(&d).arg(&f).arg(&out);
    builder.arg(&rays).arg(&points).arg(&features).arg(&shift);
    builder.arg(&one_plus_eps);
    // SAFETY: matches `ea_raymarch_forward_*` in kernels/raymarch.cu; `d` holds R·P, `f`
    // R·P·F and `out` R·(F + 1) elements.
    unsafe { launch(&mut builder, items)? };
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Emission-absorption backward: densities `[R, P]`, features `[R, P, F]`, output gradient
/// `[R, F + 1]` → `[R, P, F + 1]` (density gradient in column 0, feature gradient after).
pub(crate) fn ea_raymarch_backward(
    (ds, dl): (&CudaStorage, &Layout),
    (fs, fl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    p: RaymarchLaunch,
) -> Result<CudaStorage> {
    const OP: &str = "ea_raymarch-backward";
    with_float_type!(
        OP,
        common_dtype(OP, &[ds, fs, gs])?,
        ea_raymarch_backward_typed(ds, dl, fs, fl, gs, gl, p)
    )
}

fn ea_raymarch_backward_typed<T: CudaFloat>(
    ds: &CudaStorage,
    dl: &Layout,
    fs: &CudaStorage,
    fl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    p: RaymarchLaunch,
) -> Result<CudaStorage> {
    let dev = ds.device();
    let (mut d_copy, mut f_copy, mut g_copy) = (None, None, None);
    let d = contiguous_view::<T>(ds, dl, &mut d_copy)?;
    let f = contiguous_view::<T>(fs, fl, &mut f_copy)?;
    let g = contiguous_view::<T>(gs, gl, &mut g_copy)?;
    let RaymarchLaunch {
        rays,
        points,
        features,
        shift,
        eps,
    } = p;
    let samples = rays * points;
    let one_plus_eps = T::from_f64(1.0 + eps);
    // Per-sample scratch: the projected feature gradient and the two exclusive prefix products.
    let h = alloc_output::<T>(dev, samples)?;
    let excl_q = alloc_output::<T>(dev, samples)?;
    let excl_t = alloc_output::<T>(dev, samples)?;
    let grads = alloc_output::<T>(dev, samples * (features + 1))?;

    let project = Kernel::load::<T>(dev, &RAYMARCH, "ea_raymarch_project")?;
    let mut builder = project.builder();
    builder.arg(&f).arg(&g).arg(&h);
    builder.arg(&rays).arg(&points).arg(&features);
    // SAFETY: matches `ea_raymarch_project_*`; `f` holds R·P·F, `g` R·(F + 1), `h` R·P.
    unsafe { launch(&mut builder, samples)? };

    let density = Kernel::load::<T>(dev, &RAYMARCH, "ea_raymarch_backward_density")?;
    let mut builder = density.builder();
    builder
        .arg(&d)
        .arg(&h)
        .arg(&g)
        .arg(&excl_q)
        .arg(&excl_t)
        .arg(&grads);
    builder.arg(&rays).arg(&points).arg(&features).arg(&shift);
    builder.arg(&one_plus_eps);
    // SAFETY: matches `ea_raymarch_backward_density_*`; `d`, `h`, `excl_q`, `excl_t` hold
    // R·P, `g` R·(F + 1) and `grads` R·P·(F + 1) elements.
    unsafe { launch(&mut builder, rays)? };

    let feature = Kernel::load::<T>(dev, &RAYMARCH, "ea_raymarch_backward_features")?;
    let mut builder = feature.builder();
    builder.arg(&d).arg(&excl_q).arg(&g).arg(&grads);
    builder.arg(&rays).arg(&points).arg(&features).arg(&shift);
    // SAFETY: matches `ea_raymarch_backward_features_*`; sizes as above. Runs after the
    // density kernel (same stream), which fills `excl_q`.
    unsafe { launch(&mut builder, samples * features)? };
    Ok(CudaStorage::wrap_cuda_slice(grads, dev.clone()))
}

/// [`PoolGeometry`] as the kernels receive it (`struct PoolGeometry` in kernels/pool.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PoolGeometryArg {
    planes: u64,
    input: [u64; 3],
    output: [u64; 3],
    kernel: [u64; 3],
    stride: [u64; 3],
    padding: [u64; 3],
}

// SAFETY: a `repr(C)` struct of `u64`s, laid out exactly as the kernels' `PoolGeometry`.
unsafe impl DeviceRepr for PoolGeometryArg {}

impl PoolGeometryArg {
    fn new(g: &PoolGeometry) -> Self {
        let wide = |v: [usize; 3]| v.map(|x| x as u64);
        Self {
            planes: g.planes as u64,
            input: wide(g.input),
            output: wide(g.output),
            kernel: wide(g.kernel),
            stride: wide(g.stride),
            padding: wide(g.padding),
        }
    }
}

fn input_count(g: &PoolGeometry) -> usize {
    g.planes * g.input.iter().product::<usize>()
}

fn output_count(g: &PoolGeometry) -> usize {
    g.planes * g.output.iter().product::<usize>()
}

/// Max pooling forward: `[planes, D, H, W]` → `[planes, Do, Ho, Wo]`.
pub(crate) fn max_pool_forward(
    storage: &CudaStorage,
    layout: &Layout,
    g: &PoolGeometry,
) -> Result<CudaStorage> {
    with_float_type!(
        "max_pool3d",
        storage.dtype(),
        max_pool_forward_typed(storage, layout, g)
    )
}

fn max_pool_forward_typed<T: CudaFloat>(
    storage: &CudaStorage,
    layout: &Layout,
    g: &PoolGeometry,
) -> Result<CudaStorage> {
    let dev = storage.device();
    let mut copy = None;
    let x = contiguous_view::<T>(storage, layout, &mut copy)?;
    let y = alloc_output::<T>(dev, output_count(g))?;
    let geometry = PoolGeometryArg::new(g);
    let func = Kernel::load::<T>(dev, &POOL, "max_pool3d_forward")?;
    let mut builder = func.builder();
    builder.arg(&x).arg(&y).arg(&geometry);
    // SAFETY: matches `max_pool3d_forward_*` in kernels/pool.cu; `x` holds the input and `y`
    // the output volumes of `g`.
    unsafe { launch(&mut builder, output_count(g))? };
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// Max pooling backward: `(x, y, dy)` → `dx`, each `dy` routed to its window's winner.
pub(crate) fn max_pool_backward(
    (xs, xl): (&CudaStorage, &Layout),
    (ys, yl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    g: &PoolGeometry,
) -> Result<CudaStorage> {
    const OP: &str = "max_pool3d-backward";
    with_float_type!(
        OP,
        common_dtype(OP, &[xs, ys, gs])?,
        max_pool_backward_typed(xs, xl, ys, yl, gs, gl, g)
    )
}

fn max_pool_backward_typed<T: CudaFloat>(
    xs: &CudaStorage,
    xl: &Layout,
    ys: &CudaStorage,
    yl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    g: &PoolGeometry,
) -> Result<CudaStorage> {
    let dev = xs.device();
    let (mut x_copy, mut y_copy, mut g_copy) = (None, None, None);
    let x = contiguous_view::<T>(xs, xl, &mut x_copy)?;
    let y = contiguous_view::<T>(ys, yl, &mut y_copy)?;
    let dy = contiguous_view::<T>(gs, gl, &mut g_copy)?;
    // Accumulated with atomic adds: overlapping windows may share a winner.
    let dx = alloc_zeros::<T>(dev, input_count(g))?;
    let geometry = PoolGeometryArg::new(g);
    let func = Kernel::load::<T>(dev, &POOL, "max_pool3d_backward")?;
    let mut builder = func.builder();
    builder.arg(&x).arg(&y).arg(&dy).arg(&dx).arg(&geometry);
    // SAFETY: matches `max_pool3d_backward_*` in kernels/pool.cu; `x`, `dx` hold the input
    // and `y`, `dy` the output volumes of `g`.
    unsafe { launch(&mut builder, output_count(g))? };
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

/// Average pooling forward (`[planes, D, H, W]` → `[planes, Do, Ho, Wo]`) or, with
/// `backward`, its adjoint (output gradient → input gradient).
pub(crate) fn avg_pool(
    storage: &CudaStorage,
    layout: &Layout,
    g: &PoolGeometry,
    count_include_pad: bool,
    backward: bool,
) -> Result<CudaStorage> {
    with_float_type!(
        "avg_pool3d",
        storage.dtype(),
        avg_pool_typed(storage, layout, g, count_include_pad, backward)
    )
}

fn avg_pool_typed<T: CudaFloat>(
    storage: &CudaStorage,
    layout: &Layout,
    g: &PoolGeometry,
    count_include_pad: bool,
    backward: bool,
) -> Result<CudaStorage> {
    let dev = storage.device();
    let mut copy = None;
    let src = contiguous_view::<T>(storage, layout, &mut copy)?;
    // The backward gathers: one work item per input voxel, no atomics.
    let (kernel, items) = if backward {
        ("avg_pool3d_backward", input_count(g))
    } else {
        ("avg_pool3d_forward", output_count(g))
    };
    let dst = alloc_output::<T>(dev, items)?;
    let geometry = PoolGeometryArg::new(g);
    let count_include_pad = i32::from(count_include_pad);
    let func = Kernel::load::<T>(dev, &POOL, kernel)?;
    let mut builder = func.builder();
    builder
        .arg(&src)
        .arg(&dst)
        .arg(&geometry)
        .arg(&count_include_pad);
    // SAFETY: matches `avg_pool3d_{forward,backward}_*` in kernels/pool.cu; `src` holds the
    // volumes the kernel reads and `dst` its `items` outputs.
    unsafe { launch(&mut builder, items)? };
    Ok(CudaStorage::wrap_cuda_slice(dst, dev.clone()))
}

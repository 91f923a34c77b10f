//! 3D grid sampling on the GPU (`kernels/grid_sample.cu`): one thread per output point builds
//! the point's taps once and applies them to every channel, as the CPU kernel does.

use super::{
    alloc_output, alloc_zeros, common_dtype, contiguous_view, launch, CudaFloat, Kernel, Module,
};
use crate::grid_sample::{GridPaddingMode, GridSampleMode, GridSampleParams, SampleDims};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::{CudaStorage, Layout, Result};

const GRID_SAMPLE: Module = Module {
    name: "vnr_ops_grid_sample",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/grid_sample.ptx")),
};

/// Sizes and parameters as the kernels receive them (`struct GridSampleArg` in
/// kernels/grid_sample.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GridSampleArg {
    n: u64,
    c: u64,
    d: u64,
    h: u64,
    w: u64,
    points: u64,
    nearest: i32,
    border: i32,
    align_corners: i32,
}

// SAFETY: a `repr(C)` struct of `u64`s then `i32`s, laid out exactly as the kernels'
// `GridSampleArg` (same field order and types, hence the same padding).
unsafe impl DeviceRepr for GridSampleArg {}

impl GridSampleArg {
    fn new(dims: &SampleDims, p: &GridSampleParams) -> Self {
        Self {
            n: dims.n as u64,
            c: dims.c as u64,
            d: dims.d as u64,
            h: dims.h as u64,
            w: dims.w as u64,
            points: dims.points() as u64,
            nearest: i32::from(p.mode == GridSampleMode::Nearest),
            border: i32::from(p.padding_mode == GridPaddingMode::Border),
            align_corners: i32::from(p.align_corners),
        }
    }
}

/// Forward: input `[N, C, D, H, W]`, grid `[N, P, 3]` → `[N, C, P]`.
pub(crate) fn grid_sample_forward(
    (is, il): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Result<CudaStorage> {
    const OP: &str = "grid_sample3d";
    with_float_type!(
        OP,
        common_dtype(OP, &[is, gs])?,
        forward_typed(is, il, gs, gl, dims, p)
    )
}

fn forward_typed<T: CudaFloat>(
    is: &CudaStorage,
    il: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Result<CudaStorage> {
    let dev = is.device();
    let (mut i_copy, mut g_copy) = (None, None);
    let input = contiguous_view::<T>(is, il, &mut i_copy)?;
    let grid = contiguous_view::<T>(gs, gl, &mut g_copy)?;
    let out = alloc_output::<T>(dev, dims.n * dims.c * dims.points())?;
    let arg = GridSampleArg::new(dims, p);
    let func = Kernel::load::<T>(dev, &GRID_SAMPLE, "grid_sample3d_forward")?;
    let mut builder = func.builder();
    builder.arg(&input).arg(&grid).arg(&out).arg(&arg);
    // SAFETY: matches `grid_sample3d_forward_*` in kernels/grid_sample.cu; `input` holds
    // N·C·D·H·W, `grid` N·P·3 and `out` N·C·P elements.
    unsafe { launch(&mut builder, dims.n * dims.points())? };
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Backward: input, grid and output gradient `[N, C, P]` → the input gradient (flattened)
/// followed by the grid gradient (flattened, zero in nearest mode), in one buffer.
pub(crate) fn grid_sample_backward(
    (is, il): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    (os, ol): (&CudaStorage, &Layout),
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Result<CudaStorage> {
    const OP: &str = "grid_sample3d-backward";
    with_float_type!(
        OP,
        common_dtype(OP, &[is, gs, os])?,
        backward_typed(is, il, gs, gl, os, ol, dims, p)
    )
}

#[allow(clippy::too_many_arguments)]
fn backward_typed<T: CudaFloat>(
    is: &CudaStorage,
    il: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    os: &CudaStorage,
    ol: &Layout,
    dims: &SampleDims,
    p: &GridSampleParams,
) -> Result<CudaStorage> {
    let dev = is.device();
    let (mut i_copy, mut g_copy, mut o_copy) = (None, None, None);
    let input = contiguous_view::<T>(is, il, &mut i_copy)?;
    let grid = contiguous_view::<T>(gs, gl, &mut g_copy)?;
    let grad_out = contiguous_view::<T>(os, ol, &mut o_copy)?;
    let (ni, ng) = (dims.n * dims.c * dims.voxels(), dims.n * dims.points() * 3);
    // Zeroed: the input gradient is accumulated with atomic adds, and nearest mode leaves
    // the grid gradient untouched.
    let mut both = alloc_zeros::<T>(dev, ni + ng)?;
    {
        let (mut grad_input, mut grad_grid) = both.split_at_mut(ni);
        let arg = GridSampleArg::new(dims, p);
        let func = Kernel::load::<T>(dev, &GRID_SAMPLE, "grid_sample3d_backward")?;
        let mut builder = func.builder();
        builder.arg(&input).arg(&grid).arg(&grad_out);
        builder.arg(&mut grad_input).arg(&mut grad_grid).arg(&arg);
        // SAFETY: matches `grid_sample3d_backward_*` in kernels/grid_sample.cu; `input` and
        // `grad_input` hold N·C·D·H·W, `grid` and `grad_grid` N·P·3, `grad_out` N·C·P
        // elements.
        unsafe { launch(&mut builder, dims.n * dims.points())? };
    }
    Ok(CudaStorage::wrap_cuda_slice(both, dev.clone()))
}

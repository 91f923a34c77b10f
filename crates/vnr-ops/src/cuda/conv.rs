//! 3D convolution on the GPU: vol2col / col2vol kernels (`kernels/conv.cu`) around cuBLAS
//! matrix products, tiled over samples or output rows ([`ConvGeometry::column_tiles`]) so the
//! column workspace stays bounded, as the CPU kernels in `conv/kernels.rs` are.
//!
//! For group `g` of a tile the column matrix `col` is `[C/groups · K, np]` per sample (`K` kernel
//! taps, `np` the tile's output voxels) and, with `W_g` the group's `[O/groups, C/groups · K]`
//! weight rows and `dy_g` its output-gradient rows:
//! - forward: `y_g = W_g · col`,
//! - input gradient: `col = W_gᵀ · dy_g`, then col2vol adds `col` into `dx`,
//! - weight gradient: `dW_g += dy_g · colᵀ`, summed over the samples.
//!
//! Pointwise convolutions (1×1×1, stride 1, no padding) use the input itself as `col`.

use super::{
    alloc_output, alloc_zeros, common_dtype, contiguous_view, launch, CudaFloat, Kernel, Module,
};
use crate::conv::{ColumnTile, ConvGeometry, Pass};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::sys::cublasOperation_t;
use candle_core::cuda_backend::cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result};

const CONV: Module = Module {
    name: "vnr_ops_conv",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/conv.ptx")),
};

/// Largest column workspace of one convolution pass, in bytes.
const COL_MAX_BYTES: usize = 256 << 20;

/// [`ConvGeometry`] as the kernels receive it (`struct ConvGeometry` in kernels/conv.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ConvGeometryArg {
    batch: u64,
    in_channels: u64,
    out_channels: u64,
    groups: u64,
    input: [u64; 3],
    output: [u64; 3],
    kernel: [u64; 3],
    stride: [u64; 3],
    dilation: [u64; 3],
    pad: [u64; 3],
}

// SAFETY: a `repr(C)` struct of `u64`s, laid out exactly as the kernels' `ConvGeometry`.
unsafe impl DeviceRepr for ConvGeometryArg {}

impl ConvGeometryArg {
    fn new(g: &ConvGeometry) -> Self {
        let wide = |v: [usize; 3]| v.map(|x| x as u64);
        Self {
            batch: g.batch as u64,
            in_channels: g.in_channels as u64,
            out_channels: g.out_channels as u64,
            groups: g.groups as u64,
            input: wide(g.input),
            output: wide(g.output),
            kernel: wide(g.kernel),
            stride: wide(g.stride),
            dilation: wide(g.dilation),
            pad: wide(g.pad),
        }
    }
}

/// A [`ColumnTile`] of one channel group (`struct ColumnTile` in kernels/conv.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ColumnTileArg {
    first_sample: u64,
    samples: u64,
    first_row: u64,
    rows: u64,
    group: u64,
}

// SAFETY: a `repr(C)` struct of `u64`s, laid out exactly as the kernels' `ColumnTile`.
unsafe impl DeviceRepr for ColumnTileArg {}

/// A row-major matrix operand of [`gemm`] inside a device buffer: entry `(r, c)` of the
/// stored matrix of batch item `b` is at `offset + b·batch_stride + r·ld + c`. The stored
/// matrix is the operand itself, or its transpose when `transposed`.
#[derive(Debug, Clone, Copy)]
struct Operand {
    offset: usize,
    ld: usize,
    batch_stride: usize,
    transposed: bool,
}

impl Operand {
    /// A single (or batch-broadcast) matrix with rows `ld` apart.
    fn new(offset: usize, ld: usize) -> Self {
        Self {
            offset,
            ld,
            batch_stride: 0,
            transposed: false,
        }
    }

    fn batched(self, batch_stride: usize) -> Self {
        Self {
            batch_stride,
            ..self
        }
    }

    fn transposed(self) -> Self {
        Self {
            transposed: true,
            ..self
        }
    }

    /// Fails unless `batch` operands of `rows × cols` lie inside `len` elements, with rows
    /// at least as long as the stored matrix's, so cuBLAS never reads or writes out of bounds.
    fn check(&self, len: usize, (rows, cols): (usize, usize), batch: usize) -> Result<()> {
        let (stored_rows, stored_cols) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let last = (batch - 1)
            .checked_mul(self.batch_stride)
            .and_then(|b| b.checked_add((stored_rows - 1).checked_mul(self.ld)?))
            .and_then(|v| v.checked_add(self.offset + stored_cols - 1));
        match last {
            Some(last) if last < len && stored_cols <= self.ld => Ok(()),
            _ => bail!(
                "conv3d (cuda): internal error, {batch} × {rows}×{cols} operand {self:?} exceeds {len} elements"
            ),
        }
    }
}

fn int(v: usize) -> Result<i32> {
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("conv3d (cuda): matrix size {v} exceeds cuBLAS's 32-bit limit"),
    }
}

fn long(v: usize) -> Result<i64> {
    match i64::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("conv3d (cuda): matrix stride {v} exceeds 64 bits"),
    }
}

fn op(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// cuBLAS's arguments for `c = a · b` (or `c += a · b` when `accumulate`): `batch` products of
/// an `m × k` by a `k × n` matrix, all row-major, with the operands' offsets left out.
///
/// cuBLAS is column-major, where a row-major matrix reads as its transpose, so the product
/// is computed as `cᵀ = bᵀ · aᵀ`: cuBLAS's first operand is `b`, its second `a`, and `m` and
/// `n` swap.
fn gemm_config<T: CudaFloat>(
    (m, n, k, batch): (usize, usize, usize, usize),
    a: Operand,
    b: Operand,
    c: Operand,
    accumulate: bool,
) -> Result<StridedBatchedConfig<T>> {
    if c.transposed {
        bail!("conv3d (cuda): internal error, transposed gemm output");
    }
    Ok(StridedBatchedConfig {
        gemm: GemmConfig {
            transa: op(b.transposed),
            transb: op(a.transposed),
            m: int(n)?,
            n: int(m)?,
            k: int(k)?,
            alpha: T::from_f64(1.0),
            lda: int(b.ld)?,
            ldb: int(a.ld)?,
            beta: T::from_f64(if accumulate { 1.0 } else { 0.0 }),
            ldc: int(c.ld)?,
        },
        batch_size: int(batch)?,
        stride_a: long(b.batch_stride)?,
        stride_b: long(a.batch_stride)?,
        stride_c: long(c.batch_stride)?,
    })
}

/// `c = a · b` (or `c += a · b` when `accumulate`) on the device; see [`gemm_config`].
fn gemm<T: CudaFloat>(
    blas: &CudaBlas,
    product: (usize, usize, usize, usize),
    (a, a_op): (&CudaView<'_, T>, Operand),
    (b, b_op): (&CudaView<'_, T>, Operand),
    (c, c_op): (&mut CudaSlice<T>, Operand),
    accumulate: bool,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    let (m, n, k, batch) = product;
    if m == 0 || n == 0 || k == 0 || batch == 0 {
        bail!("conv3d (cuda): internal error, empty {m}×{n}×{k} product of {batch}");
    }
    a_op.check(a.len(), (m, k), batch)?;
    b_op.check(b.len(), (k, n), batch)?;
    c_op.check(c.len(), (m, n), batch)?;
    let cfg = gemm_config(product, a_op, b_op, c_op, accumulate)?;
    let (a, b) = (a.slice(a_op.offset..), b.slice(b_op.offset..));
    let mut c = c.slice_mut(c_op.offset..);
    // SAFETY: the three operands were checked above to lie inside their buffers with valid
    // leading dimensions; `c` is borrowed mutably, so it aliases neither input. cuBLAS runs
    // on candle's stream, ordered with the kernels.
    unsafe { blas.gemm_strided_batched(cfg, &b, &a, &mut c) }.w()?;
    Ok(())
}

/// One convolution pass on the GPU: `(x, w) → y`, `(dy, w) → dx` or `(x, dy) → dw`, with
/// operands laid out as [`ConvGeometry`] describes.
pub(crate) fn conv(
    pass: Pass,
    g: &ConvGeometry,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    const OP: &str = "conv3d";
    with_float_type!(
        OP,
        common_dtype(OP, &[s1, s2])?,
        conv_typed(pass, g, (s1, l1), (s2, l2))
    )
}

fn conv_typed<T: CudaFloat>(
    pass: Pass,
    g: &ConvGeometry,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
) -> Result<CudaStorage>
where
    CudaBlas: Gemm<T>,
{
    let dev = s1.device();
    let (mut c1, mut c2) = (None, None);
    let a = contiguous_view::<T>(s1, l1, &mut c1)?;
    let b = contiguous_view::<T>(s2, l2, &mut c2)?;
    let ctx = ConvContext::new::<T>(dev, g);
    let out = match pass {
        Pass::Forward => ctx.forward(&a, &b)?,
        Pass::BackwardInput => ctx.backward_input(&a, &b)?,
        Pass::BackwardWeight => ctx.backward_weight(&a, &b)?,
    };
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// What every pass of one convolution shares.
struct ConvContext<'a> {
    dev: &'a CudaDevice,
    g: &'a ConvGeometry,
    arg: ConvGeometryArg,
    tiles: Vec<ColumnTile>,
    blas: std::sync::Arc<CudaBlas>,
}

impl<'a> ConvContext<'a> {
    /// The context of element type `T`, whose workspace is at most [`COL_MAX_BYTES`].
    fn new<T: CudaFloat>(dev: &'a CudaDevice, g: &'a ConvGeometry) -> Self {
        Self {
            dev,
            g,
            arg: ConvGeometryArg::new(g),
            tiles: g.column_tiles(COL_MAX_BYTES / std::mem::size_of::<T>()),
            blas: dev.cublas_handle(),
        }
    }

    /// Output voxels of tile `t` (per sample) and the first one.
    fn tile_columns(&self, t: &ColumnTile) -> (usize, usize) {
        (t.rows * self.g.output[2], t.first_row * self.g.output[2])
    }

    /// The column workspace: `None` for pointwise convolutions, which read the input directly.
    fn workspace<T: CudaFloat>(&self) -> Result<Option<CudaSlice<T>>> {
        if self.g.is_pointwise() {
            return Ok(None);
        }
        let widest = self
            .tiles
            .iter()
            .map(|t| t.samples * self.tile_columns(t).0)
            .max()
            .unwrap_or(0);
        alloc_output::<T>(self.dev, self.g.column_rows() * widest).map(Some)
    }

    /// The column matrix of tile `t` and `group` as a [`gemm`] operand (`column_rows × np`
    /// per sample): the input itself when pointwise, else `col` filled by vol2col from `x`.
    fn columns<'b, T: CudaFloat>(
        &self,
        x: &'b CudaView<'_, T>,
        col: &'b mut Option<CudaSlice<T>>,
        t: &ColumnTile,
        group: usize,
    ) -> Result<(CudaView<'b, T>, Operand)> {
        let g = self.g;
        let (np, p0) = self.tile_columns(t);
        let Some(col) = col else {
            let volume = g.input_volume();
            let offset = (t.first_sample * g.in_channels + group * g.group_in_channels()) * volume;
            let operand = Operand::new(offset + p0, volume).batched(g.in_channels * volume);
            return Ok((x.slice(..), operand));
        };
        let func = Kernel::load::<T>(self.dev, &CONV, "vol2col")?;
        let tile = tile_arg(t, group);
        let mut builder = func.builder();
        builder.arg(x).arg(&*col).arg(&self.arg).arg(&tile);
        let items = g.column_rows() * t.samples * np;
        if items > col.len() {
            bail!("conv3d (cuda): internal error, tile {t:?} exceeds the column workspace");
        }
        // SAFETY: matches `vol2col_*` in kernels/conv.cu; `x` holds the convolution's input
        // and `col` at least the tile's `items` entries (checked above).
        unsafe { launch(&mut builder, items)? };
        let operand = Operand::new(0, t.samples * np).batched(np);
        Ok((col.slice(..), operand))
    }

    /// `y[N, O, Do, Ho, Wo]` from `x[N, C, D, H, W]` and `w[O, C/groups, kd, kh, kw]`.
    fn forward<T: CudaFloat>(
        &self,
        x: &CudaView<'_, T>,
        w: &CudaView<'_, T>,
    ) -> Result<CudaSlice<T>>
    where
        CudaBlas: Gemm<T>,
    {
        let g = self.g;
        let (og, rows, volume) = (g.group_out_channels(), g.column_rows(), g.output_volume());
        let mut y = alloc_output::<T>(self.dev, g.batch * g.out_channels * volume)?;
        let mut col = self.workspace::<T>()?;
        for t in &self.tiles {
            let (np, p0) = self.tile_columns(t);
            for group in 0..g.groups {
                let (cols, cols_op) = self.columns(x, &mut col, t, group)?;
                let y_offset = (t.first_sample * g.out_channels + group * og) * volume + p0;
                gemm(
                    &self.blas,
                    (og, np, rows, t.samples),
                    (w, Operand::new(group * og * rows, rows)),
                    (&cols, cols_op),
                    (
                        &mut y,
                        Operand::new(y_offset, volume).batched(g.out_channels * volume),
                    ),
                    false,
                )?;
            }
        }
        Ok(y)
    }

    /// `dx[N, C, D, H, W]` from `dy[N, O, Do, Ho, Wo]` and the weight; also the transposed
    /// convolution's forward.
    fn backward_input<T: CudaFloat>(
        &self,
        dy: &CudaView<'_, T>,
        w: &CudaView<'_, T>,
    ) -> Result<CudaSlice<T>>
    where
        CudaBlas: Gemm<T>,
    {
        let g = self.g;
        let (og, cg, rows) = (
            g.group_out_channels(),
            g.group_in_channels(),
            g.column_rows(),
        );
        let (in_volume, out_volume) = (g.input_volume(), g.output_volume());
        // Zeroed: col2vol adds every tile's share.
        let mut dx = alloc_zeros::<T>(self.dev, g.batch * g.in_channels * in_volume)?;
        let mut col = self.workspace::<T>()?;
        let col2vol = Kernel::load::<T>(self.dev, &CONV, "col2vol")?;
        for t in &self.tiles {
            let (np, p0) = self.tile_columns(t);
            for group in 0..g.groups {
                let w_op = Operand::new(group * og * rows, rows).transposed();
                let dy_offset = (t.first_sample * g.out_channels + group * og) * out_volume + p0;
                let dy_op =
                    Operand::new(dy_offset, out_volume).batched(g.out_channels * out_volume);
                let product = (rows, np, og, t.samples);
                let Some(col) = col.as_mut() else {
                    // Pointwise: the product is the input gradient itself.
                    let offset = (t.first_sample * g.in_channels + group * cg) * in_volume + p0;
                    let dx_op = Operand::new(offset, in_volume).batched(g.in_channels * in_volume);
                    gemm(
                        &self.blas,
                        product,
                        (w, w_op),
                        (dy, dy_op),
                        (&mut dx, dx_op),
                        false,
                    )?;
                    continue;
                };
                let col_op = Operand::new(0, t.samples * np).batched(np);
                gemm(
                    &self.blas,
                    product,
                    (w, w_op),
                    (dy, dy_op),
                    (col, col_op),
                    false,
                )?;
                let (depth_lo, depth_hi) = g.input_depths(t.first_row, t.rows);
                let tile = tile_arg(t, group);
                let mut builder = col2vol.builder();
                builder.arg(&*col).arg(&dx).arg(&self.arg).arg(&tile);
                builder.arg(&depth_lo).arg(&depth_hi);
                let items = t.samples * cg * (depth_hi - depth_lo) * g.input[1] * g.input[2];
                // SAFETY: matches `col2vol_*` in kernels/conv.cu; `col` holds the tile just
                // written by the product and `dx` the whole input gradient.
                unsafe { launch(&mut builder, items)? };
            }
        }
        Ok(dx)
    }

    /// `dw[O, C/groups, kd, kh, kw]` from `x[N, C, D, H, W]` and `dy[N, O, Do, Ho, Wo]`.
    fn backward_weight<T: CudaFloat>(
        &self,
        x: &CudaView<'_, T>,
        dy: &CudaView<'_, T>,
    ) -> Result<CudaSlice<T>>
    where
        CudaBlas: Gemm<T>,
    {
        let g = self.g;
        let (og, rows, volume) = (g.group_out_channels(), g.column_rows(), g.output_volume());
        // Zeroed: every tile and sample adds its share.
        let mut dw = alloc_zeros::<T>(self.dev, g.out_channels * rows)?;
        let mut col = self.workspace::<T>()?;
        for t in &self.tiles {
            let (np, p0) = self.tile_columns(t);
            for group in 0..g.groups {
                let (cols, cols_op) = self.columns(x, &mut col, t, group)?;
                // One product per sample: a batched product would race on `dw`.
                for j in 0..t.samples {
                    let sample = t.first_sample + j;
                    let dy_offset = (sample * g.out_channels + group * og) * volume + p0;
                    let sample_cols = Operand {
                        offset: cols_op.offset + j * cols_op.batch_stride,
                        ..cols_op
                    };
                    gemm(
                        &self.blas,
                        (og, rows, np, 1),
                        (dy, Operand::new(dy_offset, volume)),
                        (&cols, sample_cols.transposed()),
                        (&mut dw, Operand::new(group * og * rows, rows)),
                        true,
                    )?;
                }
            }
        }
        Ok(dw)
    }
}

fn tile_arg(t: &ColumnTile, group: usize) -> ColumnTileArg {
    ColumnTileArg {
        first_sample: t.first_sample as u64,
        samples: t.samples as u64,
        first_row: t.first_row as u64,
        rows: t.rows as u64,
        group: group as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's column-major strided-batched GEMM on host slices, as its documentation defines
    /// it: `C_b = α·op(A_b)·op(B_b) + β·C_b`, `op` transposing when asked.
    fn host_gemm(cfg: &StridedBatchedConfig<f64>, a: &[f64], b: &[f64], c: &mut [f64]) {
        let g = &cfg.gemm;
        let n_op = |t: cublasOperation_t| matches!(t, cublasOperation_t::CUBLAS_OP_N);
        let dim = |v: i32| v as usize;
        let (lda, ldb, ldc) = (dim(g.lda), dim(g.ldb), dim(g.ldc));
        for batch in 0..cfg.batch_size as usize {
            let (sa, sb, sc) = (
                batch * cfg.stride_a as usize,
                batch * cfg.stride_b as usize,
                batch * cfg.stride_c as usize,
            );
            for i in 0..dim(g.m) {
                for j in 0..dim(g.n) {
                    let mut sum = 0.0;
                    for l in 0..dim(g.k) {
                        let av = if n_op(g.transa) {
                            a[sa + i + l * lda]
                        } else {
                            a[sa + l + i * lda]
                        };
                        let bv = if n_op(g.transb) {
                            b[sb + l + j * ldb]
                        } else {
                            b[sb + j + l * ldb]
                        };
                        sum += av * bv;
                    }
                    let at = sc + i + j * ldc;
                    c[at] = g.alpha * sum + g.beta * c[at];
                }
            }
        }
    }

    /// Stores `batch` row-major `rows × cols` matrices (entry `(b, r, c)` = `value(b, r, c)`)
    /// as `op` describes, in a buffer with `len` elements of padding around them.
    fn store(
        op: Operand,
        (batch, rows, cols): (usize, usize, usize),
        len: usize,
        value: impl Fn(usize, usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut buffer = vec![f64::NAN; len];
        for b in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    let (sr, sc) = if op.transposed { (c, r) } else { (r, c) };
                    buffer[op.offset + b * op.batch_stride + sr * op.ld + sc] = value(b, r, c);
                }
            }
        }
        buffer
    }

    #[test]
    fn gemm_config_computes_row_major_products() -> Result<()> {
        let (m, n, k, batch) = (3, 4, 5, 2);
        let a_val = |b: usize, r: usize, c: usize| (b * 100 + r * 10 + c) as f64 * 0.5 - 7.0;
        let b_val = |b: usize, r: usize, c: usize| ((b + 1) * (r + 2 * c)) as f64 * 0.25 - 3.0;
        for (a_t, b_t, accumulate) in [
            (false, false, false),
            (true, false, true),
            (false, true, false),
            (true, true, true),
        ] {
            // Padded rows, offsets and batch strides, as the convolution passes use them.
            let a_op = Operand::new(2, if a_t { m + 1 } else { k + 2 }).batched(40);
            let a_op = if a_t { a_op.transposed() } else { a_op };
            let b_op = Operand::new(1, if b_t { k + 3 } else { n + 1 }).batched(50);
            let b_op = if b_t { b_op.transposed() } else { b_op };
            let c_op = Operand::new(3, n + 2).batched(30);
            let a = store(a_op, (batch, m, k), 100, a_val);
            let b = store(b_op, (batch, k, n), 120, b_val);
            let mut c = store(c_op, (batch, m, n), 80, |_, r, c| (r + c) as f64);
            a_op.check(a.len(), (m, k), batch)?;
            b_op.check(b.len(), (k, n), batch)?;
            c_op.check(c.len(), (m, n), batch)?;
            let cfg = gemm_config::<f64>((m, n, k, batch), a_op, b_op, c_op, accumulate)?;
            host_gemm(
                &cfg,
                &b[b_op.offset..],
                &a[a_op.offset..],
                &mut c[c_op.offset..],
            );
            for bi in 0..batch {
                for r in 0..m {
                    for col in 0..n {
                        let mut want: f64 =
                            (0..k).map(|l| a_val(bi, r, l) * b_val(bi, l, col)).sum();
                        if accumulate {
                            want += (r + col) as f64;
                        }
                        let got = c[c_op.offset + bi * c_op.batch_stride + r * c_op.ld + col];
                        assert_eq!(got, want, "a_t {a_t} b_t {b_t} batch {bi} ({r}, {col})");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn operand_check_rejects_out_of_bounds_and_short_rows() {
        let op = Operand::new(2, 4).batched(12);
        assert!(op.check(2 + 12 + 2 * 4 + 4, (3, 4), 2).is_ok());
        assert!(op.check(2 + 12 + 2 * 4 + 3, (3, 4), 2).is_err());
        assert!(op.check(1000, (3, 5), 1).is_err(), "row longer than ld");
        // Transposed: a 4×5 operand stored as 5×4.
        assert!(op.transposed().check(1000, (4, 5), 1).is_ok());
        assert!(op.transposed().check(1000, (5, 4), 1).is_err());
    }
}

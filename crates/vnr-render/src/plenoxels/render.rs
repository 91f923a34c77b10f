//! Rendering and sampling Plenoxel grids as candle custom ops (forward and backward on the CPU,
//! multi-threaded over rays with rayon), the plain single-threaded reference renderer, and the
//! [`Field`] implementation.

use std::ops::Range;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
    D,
};
use half::{bf16, f16};
use rayon::prelude::*;

use super::grad::SparseRows;
use super::march::{Corners, Geometry, GridValue, GridView, Ray, SparseLinks};
use super::sh::{eval_sh_bases, SH_C0};
use super::PlenoxelGrid;
use crate::field::{Field, FieldSamples};
use crate::rays::RayBundle;

/// svox2's `RenderOptions` for the `cuvol` backend, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderOptions {
    /// Distance between samples, in voxels (svox2: "1 = 1 voxel width").
    pub step_size: f32,
    /// Samples with interpolated density `≤ sigma_thresh` are skipped (svox2's ReLU).
    pub sigma_thresh: f32,
    /// Stop marching once the transmittance is below this; what remains is dropped.
    pub stop_thresh: f32,
    /// Grey level of the background seen through the remaining transmittance, in `[0, 1]`.
    pub background_brightness: f32,
    /// Samples nearer than this world distance from the origin are skipped.
    pub near_clip: f32,
    /// Jump over empty `8³`-cell blocks (never changes the image, only the time).
    pub skip_empty: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            step_size: 0.5,
            sigma_thresh: 1e-10,
            stop_thresh: 1e-7,
            background_brightness: 1.0,
            near_clip: 0.0,
            skip_empty: true,
        }
    }
}

/// Smallest accepted step, in voxels: bounds the samples per ray.
const MIN_STEP_SIZE: f32 = 1e-3;

impl RenderOptions {
    fn validate(&self) -> Result<()> {
        let finite = [
            self.step_size,
            self.sigma_thresh,
            self.stop_thresh,
            self.background_brightness,
            self.near_clip,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite
            || self.step_size < MIN_STEP_SIZE
            || !(0.0..=1.0).contains(&self.stop_thresh)
            || self.near_clip < 0.0
        {
            bail!(
                "plenoxel render options: need finite values, step_size >= {MIN_STEP_SIZE}, \
                 stop_thresh in [0, 1] and near_clip >= 0, got {self:?}"
            );
        }
        Ok(())
    }
}

/// Largest total size of the per-chunk gradient buffers of a backward pass, in bytes, were every
/// chunk to touch every row (each holds only the rows its rays touch; a
/// [`super::PlenoxelOptimizer`] keeps them between steps).
/// Chunks depend only on the ray count and the grid size, never on the thread count, so
/// gradients are bitwise reproducible on any machine.
pub const BACKWARD_MEMORY_BUDGET: usize = 512 << 20;
/// Most ray chunks a backward pass splits into.
const MAX_BACKWARD_CHUNKS: usize = 8;
/// Fewest rays per backward chunk worth a separate gradient buffer.
const MIN_RAYS_PER_CHUNK: usize = 256;
/// Rays per rayon task in forward passes.
const FORWARD_RAYS_PER_TASK: usize = 64;

/// Something to run on the grid's density and SH slices, whatever their element types.
trait GridTask {
    type Output;
    fn run<D: GridValue, S: GridValue>(self, density: &[D], sh: &[S]) -> Result<Self::Output>;
}

fn contiguous_slice<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => data.get(start..end).ok_or_else(|| {
            candle_core::Error::Msg("plenoxels: storage shorter than layout".into())
        }),
        None => bail!("plenoxels: grid data must be contiguous"),
    }
}

/// Runs `task` on the slices of `density` and `sh`, dispatching on both dtypes.
fn dispatch<T: GridTask>(
    density: (&CpuStorage, &Layout),
    sh: (&CpuStorage, &Layout),
    task: T,
) -> Result<T::Output> {
    macro_rules! with_sh {
        ($d:ty) => {{
            let d = contiguous_slice::<$d>(density.0, density.1)?;
            match sh.0.dtype() {
                DType::F16 => task.run(d, contiguous_slice::<f16>(sh.0, sh.1)?),
                DType::BF16 => task.run(d, contiguous_slice::<bf16>(sh.0, sh.1)?),
                DType::F32 => task.run(d, contiguous_slice::<f32>(sh.0, sh.1)?),
                DType::F64 => task.run(d, contiguous_slice::<f64>(sh.0, sh.1)?),
                other => bail!("plenoxels: unsupported SH dtype {other:?}"),
            }
        }};
    }
    match density.0.dtype() {
        DType::F16 => with_sh!(f16),
        DType::BF16 => with_sh!(bf16),
        DType::F32 => with_sh!(f32),
        DType::F64 => with_sh!(f64),
        other => bail!("plenoxels: unsupported density dtype {other:?}"),
    }
}

/// The CPU storage behind a tensor (the grid's data live on the CPU).
fn with_cpu_storage<R>(t: &Tensor, f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu, layout),
        _ => bail!("plenoxels: grid data must be on the CPU"),
    }
}

/// f64 output when both inputs are f64 (for gradient checks), f32 otherwise.
fn output_dtype(a: DType, b: DType) -> DType {
    if a == DType::F64 && b == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn storage_of(values: Vec<f64>, dtype: DType) -> CpuStorage {
    if dtype == DType::F64 {
        CpuStorage::F64(values)
    } else {
        CpuStorage::F32(values.into_iter().map(|v| v as f32).collect())
    }
}

/// Rows of a `[..., 3]` tensor as f64 triples.
fn triples(t: &Tensor, what: &str) -> Result<Vec<[f64; 3]>> {
    if t.dims().last() != Some(&3) {
        bail!("plenoxels: {what} must be [..., 3], got {:?}", t.dims());
    }
    let flat: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
}

/// Reusable gradient buffers of a backward pass: one [`SparseRows`] pair (density `[N, 1]`,
/// SH `[N, 3K]`, f64) per ray chunk. Items (rays or points) are split into a fixed number of
/// contiguous chunks, a function of the item count and the grid size only (never the thread
/// count), accumulated in parallel and summed in chunk order, so gradients are bitwise
/// reproducible. Buffers are kept between passes and hold only the rows written, so a pass
/// costs (in time and memory) the rows its rays touch, not the grid.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackwardWorkspace {
    chunks: Vec<(SparseRows<f64>, SparseRows<f64>)>,
}

impl BackwardWorkspace {
    /// Runs `accumulate` on the chunks of `0..items` and leaves the summed density `[N, 1]`
    /// and SH `[N, width]` gradients in [`BackwardWorkspace::sums`]; their touched rows are the
    /// union of the chunks'.
    fn accumulate(
        &mut self,
        items: usize,
        rows: usize,
        width: usize,
        accumulate: impl Fn(Range<usize>, &mut SparseRows<f64>, &mut SparseRows<f64>) + Sync,
    ) {
        let bytes_per_chunk = (rows * (1 + width)).max(1) * std::mem::size_of::<f64>();
        let chunks = (BACKWARD_MEMORY_BUDGET / bytes_per_chunk)
            .min(MAX_BACKWARD_CHUNKS)
            .min(items.div_ceil(MIN_RAYS_PER_CHUNK))
            .max(1);
        if self
            .chunks
            .first()
            .is_some_and(|(d, s)| !d.has_shape(rows, 1) || !s.has_shape(rows, width))
        {
            self.chunks.clear();
        }
        while self.chunks.len() < chunks {
            self.chunks
                .push((SparseRows::new(rows, 1), SparseRows::new(rows, width)));
        }
        let per_chunk = items.div_ceil(chunks).max(1);
        self.chunks[..chunks]
            .par_iter_mut()
            .enumerate()
            .for_each(|(c, (gd, gs))| {
                gd.clear();
                gs.clear();
                let start = (c * per_chunk).min(items);
                let end = ((c + 1) * per_chunk).min(items);
                accumulate(start..end, gd, gs);
            });
        let (first, rest) = self.chunks[..chunks]
            .split_first_mut()
            .expect("at least one chunk");
        for (pd, ps) in rest {
            first.0.add_rows_of(pd);
            first.1.add_rows_of(ps);
            pd.clear();
            ps.clear();
        }
    }

    /// The density and SH gradients of the last pass (zero before the first).
    pub fn sums(&self) -> Option<(&SparseRows<f64>, &SparseRows<f64>)> {
        self.chunks.first().map(|(d, s)| (d, s))
    }

    /// The gradients of one pass as tensors `[N, 1]`, `[N, 3K]` in the dtypes of the inputs
    /// they belong to (for the candle custom ops).
    fn into_tensors(
        mut self,
        density: &Tensor,
        sh: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gd, gs) = self.chunks.swap_remove(0);
        let gd = Tensor::from_vec(gd.into_dense(), density.shape(), &Device::Cpu)?
            .to_dtype(density.dtype())?;
        let gs =
            Tensor::from_vec(gs.into_dense(), sh.shape(), &Device::Cpu)?.to_dtype(sh.dtype())?;
        Ok((Some(gd), Some(gs)))
    }
}

/// What both custom ops need of the grid besides its data.
#[derive(Clone)]
struct GridStructure {
    sparse: Arc<SparseLinks>,
    geometry: Geometry,
    basis_dim: usize,
}

impl GridStructure {
    fn of(grid: &PlenoxelGrid) -> Self {
        Self {
            sparse: grid.sparse.clone(),
            geometry: grid.geometry,
            basis_dim: grid.basis_dim,
        }
    }

    fn view<'a, D, S>(&'a self, density: &'a [D], sh: &'a [S]) -> Result<GridView<'a, D, S>> {
        let rows = density.len();
        if sh.len() != rows * 3 * self.basis_dim {
            bail!(
                "plenoxels: {} density rows but {} SH values (expected {})",
                rows,
                sh.len(),
                rows * 3 * self.basis_dim
            );
        }
        Ok(GridView {
            sparse: &self.sparse,
            geometry: &self.geometry,
            density,
            sh,
            basis_dim: self.basis_dim,
        })
    }
}

/// `(density [N, 1], sh [N, 3K]) → colours [R, 3]` for fixed rays.
struct RenderOp {
    grid: GridStructure,
    /// `(origin, direction)` per ray, world coordinates.
    rays: Vec<([f64; 3], [f64; 3])>,
    opts: RenderOptions,
}

impl RenderOp {
    fn ray<D: GridValue, S: GridValue>(&self, view: &GridView<D, S>, i: usize) -> Option<Ray> {
        let (origin, dir) = self.rays[i];
        view.ray(origin, dir, &self.opts)
    }
}

struct RenderForward<'a>(&'a RenderOp);

impl GridTask for RenderForward<'_> {
    type Output = Vec<f64>;
    fn run<D: GridValue, S: GridValue>(self, density: &[D], sh: &[S]) -> Result<Vec<f64>> {
        let op = self.0;
        let view = op.grid.view(density, sh)?;
        let mut out = vec![0.0f64; op.rays.len() * 3];
        out.par_chunks_mut(FORWARD_RAYS_PER_TASK * 3)
            .enumerate()
            .for_each(|(task, colours)| {
                for (j, colour) in colours.chunks_exact_mut(3).enumerate() {
                    let ray = op.ray(&view, task * FORWARD_RAYS_PER_TASK + j);
                    colour.copy_from_slice(&view.trace(ray.as_ref(), &op.opts, op.opts.skip_empty));
                }
            });
        Ok(out)
    }
}

struct RenderBackward<'a> {
    op: &'a RenderOp,
    colours: &'a [f64],
    grad_out: &'a [f64],
    workspace: &'a mut BackwardWorkspace,
}

impl GridTask for RenderBackward<'_> {
    type Output = ();
    fn run<D: GridValue, S: GridValue>(self, density: &[D], sh: &[S]) -> Result<()> {
        let op = self.op;
        let view = op.grid.view(density, sh)?;
        let triple = |v: &[f64], i: usize| [v[3 * i], v[3 * i + 1], v[3 * i + 2]];
        let width = 3 * op.grid.basis_dim;
        self.workspace
            .accumulate(op.rays.len(), density.len(), width, |rays, gd, gs| {
                for i in rays {
                    let ray = op.ray(&view, i);
                    view.trace_backward(
                        ray.as_ref(),
                        &op.opts,
                        op.opts.skip_empty,
                        triple(self.colours, i),
                        triple(self.grad_out, i),
                        gd,
                        gs,
                    );
                }
            });
        Ok(())
    }
}

impl CustomOp2 for RenderOp {
    fn name(&self) -> &'static str {
        "plenoxel-render"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch((ds, dl), (ss, sl), RenderForward(self))?;
        let dtype = output_dtype(ds.dtype(), ss.dtype());
        Ok((storage_of(out, dtype), Shape::from((self.rays.len(), 3))))
    }

    fn bwd(
        &self,
        density: &Tensor,
        sh: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let colours: Vec<f64> = res.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let grad_out: Vec<f64> = grad_res.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let mut workspace = BackwardWorkspace::default();
        with_cpu_storage(density, |ds, dl| {
            with_cpu_storage(sh, |ss, sl| {
                dispatch(
                    (ds, dl),
                    (ss, sl),
                    RenderBackward {
                        op: self,
                        colours: &colours,
                        grad_out: &grad_out,
                        workspace: &mut workspace,
                    },
                )
            })
        })?;
        workspace.into_tensors(density, sh)
    }
}

/// The rays of one optimisation step, rendered straight from the optimiser's f32 data: the
/// same forward and backward as [`PlenoxelGrid::render_rays`] and its autograd (bit for bit),
/// without tensors, copies of the grid or whole-grid gradient buffers.
pub(crate) struct StepRays(RenderOp);

impl StepRays {
    /// Colours `[M · 3]` on `density [N]` and `sh [N · 3K]`, rounded to f32 as
    /// [`PlenoxelGrid::render_rays`] returns them.
    pub fn forward(&self, density: &[f32], sh: &[f32]) -> Result<Vec<f32>> {
        let out = RenderForward(&self.0).run(density, sh)?;
        Ok(out.into_iter().map(|v| v as f32).collect())
    }

    /// Accumulates `∂L/∂density` and `∂L/∂sh` into `workspace` (see
    /// [`BackwardWorkspace::sums`]) given the forward `colours [M · 3]` and `grad_out [M · 3]`.
    pub fn backward(
        &self,
        density: &[f32],
        sh: &[f32],
        colours: &[f32],
        grad_out: &[f32],
        workspace: &mut BackwardWorkspace,
    ) -> Result<()> {
        let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        RenderBackward {
            op: &self.0,
            colours: &to_f64(colours),
            grad_out: &to_f64(grad_out),
            workspace,
        }
        .run(density, sh)
    }
}

/// `(density [N, 1], sh [N, 3K]) → [M, 1 + 3K]` raw trilinear values at fixed points.
struct SampleOp {
    grid: GridStructure,
    /// Grid coordinates of the points.
    points: Vec<[f64; 3]>,
}

struct SampleForward<'a>(&'a SampleOp);

impl GridTask for SampleForward<'_> {
    type Output = Vec<f64>;
    fn run<D: GridValue, S: GridValue>(self, density: &[D], sh: &[S]) -> Result<Vec<f64>> {
        let op = self.0;
        let view = op.grid.view(density, sh)?;
        let width = 1 + 3 * view.basis_dim;
        let mut out = vec![0.0f64; op.points.len() * width];
        out.par_chunks_mut(width)
            .zip(op.points.par_iter())
            .for_each(|(row, &p)| {
                let (corners, _) = Corners::at(view.sparse, p);
                row[0] = corners.density(view.density);
                corners.channels(view.sh, &mut row[1..]);
            });
        Ok(out)
    }
}

impl CustomOp2 for SampleOp {
    fn name(&self) -> &'static str {
        "plenoxel-sample"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch((ds, dl), (ss, sl), SampleForward(self))?;
        let dtype = output_dtype(ds.dtype(), ss.dtype());
        let shape = Shape::from((self.points.len(), 1 + 3 * self.grid.basis_dim));
        Ok((storage_of(out, dtype), shape))
    }

    fn bwd(
        &self,
        density: &Tensor,
        sh: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let width = 1 + 3 * self.grid.basis_dim;
        let grad_out: Vec<f64> = grad_res.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let mut workspace = BackwardWorkspace::default();
        workspace.accumulate(
            self.points.len(),
            density.elem_count(),
            width - 1,
            |points, gd, gs| {
                for i in points {
                    let (corners, _) = Corners::at(&self.grid.sparse, self.points[i]);
                    let g = &grad_out[i * width..(i + 1) * width];
                    for (l, w) in corners.filled() {
                        gd.row_mut(l)[0] += w * g[0];
                        for (dst, src) in gs.row_mut(l).iter_mut().zip(&g[1..]) {
                            *dst += w * src;
                        }
                    }
                }
            },
        );
        workspace.into_tensors(density, sh)
    }
}

impl PlenoxelGrid {
    /// The batch shape `...` of `origins` and `directions` `[..., 3]`, which must agree.
    fn ray_batch_dims(origins: &Tensor, directions: &Tensor) -> Result<Vec<usize>> {
        match origins.dims().split_last() {
            Some((3, batch)) if origins.dims() == directions.dims() => Ok(batch.to_vec()),
            _ => bail!(
                "plenoxels: origins {:?} and directions {:?} must both be [..., 3]",
                origins.dims(),
                directions.dims()
            ),
        }
    }

    /// The render op of `origins` and `directions` `[..., 3]`, and their batch shape `...`.
    fn render_op(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        opts: &RenderOptions,
    ) -> Result<(RenderOp, Vec<usize>)> {
        opts.validate()?;
        let shape = Self::ray_batch_dims(origins, directions)?;
        let origins = triples(origins, "origins")?;
        let directions = triples(directions, "directions")?;
        let op = RenderOp {
            grid: GridStructure::of(self),
            rays: origins.into_iter().zip(directions).collect(),
            opts: *opts,
        };
        Ok((op, shape))
    }

    /// `origins` and `directions` `[M, 3]` prepared for an optimisation step on this grid's
    /// structure (see [`StepRays`]).
    pub(crate) fn step_rays(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        opts: &RenderOptions,
    ) -> Result<StepRays> {
        Ok(StepRays(self.render_op(origins, directions, opts)?.0))
    }

    /// Renders rays with svox2's `volume_render_cuvol` (see the [module docs](super)):
    /// `origins` and `directions` `[..., 3]` in world coordinates → colours `[..., 3]` (f32, or
    /// f64 when density and SH are both f64). Differentiable w.r.t. [`PlenoxelGrid::density`]
    /// and [`PlenoxelGrid::sh`]: the backward re-marches each ray as svox2's does. Rays that
    /// miss the box, or have a zero or non-finite direction or origin, see the background.
    pub fn render_rays(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        opts: &RenderOptions,
    ) -> Result<Tensor> {
        let (op, mut shape) = self.render_op(origins, directions, opts)?;
        let colours = self
            .density
            .contiguous()?
            .apply_op2(&self.sh.contiguous()?, op)?;
        shape.push(3);
        colours.reshape(shape)
    }

    /// [`PlenoxelGrid::render_rays`] on a bundle's origins and directions (svox2 places its own
    /// samples, so the bundle's `lengths` are not used): `[..., 3]`.
    pub fn render_bundle(&self, bundle: &RayBundle, opts: &RenderOptions) -> Result<Tensor> {
        self.render_rays(&bundle.origins, &bundle.directions, opts)
    }

    /// The plain single-threaded renderer the fast one is tested against: no occupancy
    /// skipping, no custom op, no autograd, svox2's nested lerps written out per sample and
    /// composited afterwards. `[..., 3]` → `[..., 3]` f64.
    pub fn render_rays_reference(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        opts: &RenderOptions,
    ) -> Result<Tensor> {
        opts.validate()?;
        let mut shape = Self::ray_batch_dims(origins, directions)?;
        let density: Vec<f64> = self
            .density
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let sh: Vec<f64> = self.sh.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let structure = GridStructure::of(self);
        let view = structure.view(&density, &sh)?;
        let mut out = Vec::new();
        for (origin, dir) in triples(origins, "origins")?
            .into_iter()
            .zip(triples(directions, "directions")?)
        {
            out.extend(reference_trace(&view, view.ray(origin, dir, opts), opts));
        }
        shape.push(3);
        Tensor::from_vec(out, shape, &Device::Cpu)
    }

    /// svox2's `SparseGrid.sample`: raw trilinear density `[M, 1]` and SH `[M, 3K]` at world
    /// points `[M, 3]` (clamped into the grid; empty corners count as 0). Differentiable
    /// w.r.t. the grid's density and SH.
    pub fn sample(&self, points: &Tensor) -> Result<(Tensor, Tensor)> {
        let points = triples(points, "points")?;
        let op = SampleOp {
            grid: GridStructure::of(self),
            points: points.into_iter().map(|p| self.world_to_grid(p)).collect(),
        };
        let both = self
            .density
            .contiguous()?
            .apply_op2(&self.sh.contiguous()?, op)?;
        let width = 3 * self.basis_dim;
        Ok((both.narrow(1, 0, 1)?, both.narrow(1, 1, width)?))
    }
}

/// One ray of the reference renderer: every sample's density and colour first, then
/// front-to-back compositing, as svox2's Python `_volume_render_gradcheck_lerp` does.
fn reference_trace(view: &GridView<f64, f64>, ray: Option<Ray>, opts: &RenderOptions) -> [f64; 3] {
    let background = f64::from(opts.background_brightness);
    let Some(ray) = ray else {
        return [background; 3];
    };
    let dims = view.sparse.dims;
    let k = view.basis_dim;
    let step = f64::from(opts.step_size);
    let read = |x: usize, y: usize, z: usize, channel: Option<usize>| -> f64 {
        let link = view.sparse.links[(x * dims[1] + y) * dims[2] + z];
        if link < 0 {
            return 0.0;
        }
        let l = link as usize;
        match channel {
            None => view.density[l],
            Some(c) => view.sh[l * 3 * k + c],
        }
    };
    let lerp = |a: f64, b: f64, w: f64| a + w * (b - a);
    let mut samples: Vec<(f64, [f64; 3])> = Vec::new();
    let mut i = 0u64;
    while let Some(pos) = ray.sample_point(i, step) {
        i += 1;
        let mut l = [0usize; 3];
        let mut w = [0.0f64; 3];
        for a in 0..3 {
            let p = pos[a].clamp(0.0, dims[a] as f64 - 1.0);
            l[a] = (p.floor() as usize).min(dims[a] - 2);
            w[a] = p - l[a] as f64;
        }
        let trilerp = |channel: Option<usize>| {
            let [x, y, z] = l;
            let c00 = lerp(read(x, y, z, channel), read(x, y, z + 1, channel), w[2]);
            let c01 = lerp(
                read(x, y + 1, z, channel),
                read(x, y + 1, z + 1, channel),
                w[2],
            );
            let c10 = lerp(
                read(x + 1, y, z, channel),
                read(x + 1, y, z + 1, channel),
                w[2],
            );
            let c11 = lerp(
                read(x + 1, y + 1, z, channel),
                read(x + 1, y + 1, z + 1, channel),
                w[2],
            );
            lerp(lerp(c00, c01, w[1]), lerp(c10, c11, w[1]), w[0])
        };
        let sigma = trilerp(None);
        let colour = std::array::from_fn(|ch| {
            let raw: f64 = (0..k)
                .map(|b| ray.basis[b] * trilerp(Some(ch * k + b)))
                .sum();
            (raw + 0.5).max(0.0)
        });
        samples.push((sigma, colour));
    }
    let mut out = [0.0; 3];
    let mut transmit = 1.0f64;
    for (sigma, colour) in samples {
        if sigma <= f64::from(opts.sigma_thresh) {
            continue;
        }
        let alpha = 1.0 - (-ray.world_step * sigma).exp();
        for (o, c) in out.iter_mut().zip(colour) {
            *o += transmit * alpha * c;
        }
        transmit *= 1.0 - alpha;
        if transmit < f64::from(opts.stop_thresh) {
            transmit = 0.0;
            break;
        }
    }
    out.map(|o| o + transmit * background)
}

impl Field for PlenoxelGrid {
    /// Trilinear density after svox2's ReLU, `[..., P, 1]`, and colour
    /// `max(Σ_k SH_k(dir)·c_k + 0.5, 0)`, `[..., P, 3]`. `directions` may be `None` only for
    /// degree-0 grids (the colour does not depend on direction then).
    fn query(&self, points: &Tensor, directions: Option<&Tensor>) -> Result<FieldSamples> {
        let dims = points.dims().to_vec();
        let (p, rays) = match dims.as_slice() {
            [.., p, 3] => (*p, points.elem_count() / (3 * (*p).max(1))),
            _ => bail!("plenoxels: points must be [..., P, 3], got {dims:?}"),
        };
        let (density, sh) = self.sample(&points.reshape(((), 3))?)?;
        let k = self.basis_dim;
        let basis = match directions {
            Some(d) => eval_sh_bases(self.sh_degree(), &d.reshape((rays, 3))?)?,
            None if k == 1 => Tensor::full(SH_C0, (rays, 1), &Device::Cpu)?,
            None => bail!(
                "plenoxels: a degree-{} grid needs viewing directions",
                self.sh_degree()
            ),
        };
        let basis = basis.to_dtype(sh.dtype())?.reshape((rays, 1, 1, k))?;
        let raw = sh
            .reshape((rays, p, 3, k))?
            .broadcast_mul(&basis)?
            .sum(D::Minus1)?;
        let colour = (raw + 0.5)?.relu()?;
        let mut density_shape = dims.clone();
        let last = density_shape.len() - 1;
        density_shape[last] = 1;
        Ok(FieldSamples {
            densities: density.relu()?.reshape(density_shape)?,
            features: colour.reshape(dims)?,
        })
    }

    fn feature_dim(&self) -> usize {
        3
    }
}

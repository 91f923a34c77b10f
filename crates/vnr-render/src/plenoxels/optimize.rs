//! Fitting Plenoxel grids to posed images, as svox2's `opt/opt.py` does.
//!
//! Each step renders a batch of random training rays with the differentiable
//! [`PlenoxelGrid::render_rays`], takes the MSE to the pixel colours (`F.mse_loss`, mean over
//! rays and channels), adds the total-variation gradients of density and SH on a random
//! contiguous slab of cells ([`super::tv`]) and updates density and SH with svox2's RMSProp
//! (`rmsprop_step` in `svox2/csrc/optim_kernel.cu`):
//!
//! `r ← g²` on a row's first update, else `r ← β·r + (1 − β)·g²`; `x ← x − lr·g / (√r + ε)`,
//!
//! applied only to rows (voxels) with a non-zero gradient, as svox2 masks its step with the
//! voxels the rays and TV touched. A step costs the rows it touches, not the grid: the data stay
//! in place as f32 (svox2's dtype), rays are rendered and differentiated straight from them
//! (no tensors of the grid, no autograd through it), and gradients accumulate into reused
//! sparse buffers that hold only the rows written, so accumulating, updating and zeroing them
//! follows those rows only. The result is bit for bit that of [`PlenoxelGrid::render_rays`]
//! with candle's autograd and a dense RMSProp sweep. Learning rates follow svox2's `get_expon_lr_func`
//! ([`LrSchedule`]). Every `upsample_every` steps the grid moves to the next resolution of
//! `resolutions` with [`PlenoxelGrid::resample`] (pruned by density, RMSProp state reset) and,
//! with `tv_early_only`, TV is switched off, as in svox2.
//!
//! Everything random (rays, TV cells) comes from the caller's seeded RNG, and the renderer's
//! gradients are bitwise reproducible, so a run is a function of its seed.
//!
//! Differences from svox2: its default upsampling threshold is a rendering weight over the
//! training cameras (`thresh_type = "weight"`), here the density (`"sigma"`); rays are drawn
//! with replacement rather than by epoch permutation; no sphere-bounded initial links; the
//! density is not clamped from below (svox2 clamps the RMSProp result at its `minval`).

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::grad::SparseRows;
use super::render::{BackwardWorkspace, RenderOptions};
use super::resample::PruneOptions;
use super::sh::MAX_SH_DEGREE;
use super::tv::total_variation_into;
use super::{PlenoxelError, PlenoxelGrid};
use crate::multiview::{MultiViewDataset, RayBatch};

/// svox2's `get_expon_lr_func`: a log-linear decay from `initial` to `last` over
/// `decay_steps`, multiplied during the first `delay_steps` by a warm-up rising from
/// `delay_mult` to 1 along `sin(π/2 · step / delay_steps)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// Learning rate at step 0 (before the warm-up factor).
    pub initial: f64,
    /// Learning rate at `decay_steps` and after.
    pub last: f64,
    /// Warm-up length in steps (0 = none).
    pub delay_steps: usize,
    /// Warm-up factor at step 0.
    pub delay_mult: f64,
    /// Steps of the log-linear decay.
    pub decay_steps: usize,
}

impl LrSchedule {
    /// The learning rate at `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if self.initial == 0.0 && self.last == 0.0 {
            return 0.0;
        }
        let delay = if self.delay_steps > 0 {
            let t = (step as f64 / self.delay_steps as f64).clamp(0.0, 1.0);
            self.delay_mult + (1.0 - self.delay_mult) * (0.5 * std::f64::consts::PI * t).sin()
        } else {
            1.0
        };
        let t = (step as f64 / self.decay_steps.max(1) as f64).clamp(0.0, 1.0);
        delay * (self.initial.ln() * (1.0 - t) + self.last.ln() * t).exp()
    }
}

/// Settings of a Plenoxel fit; `Default` is svox2's `opt.py` (NeRF-synthetic scale: 256³ then
/// 512³, 128,000 steps), far beyond a CPU's reach: CPU runs set smaller resolutions and steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizeConfig {
    /// Resolutions, coarse to fine; the fit starts dense at the first.
    pub resolutions: Vec<[usize; 3]>,
    /// Steps between resolution changes.
    pub upsample_every: usize,
    /// Total steps.
    pub steps: usize,
    /// Rays per step (`batch_rays · 3` at most [`crate::MAX_ELEMENTS`]).
    pub batch_rays: usize,
    /// Half side lengths of the grid box (world units).
    pub radius: [f32; 3],
    /// Centre of the grid box.
    pub center: [f32; 3],
    /// SH degree (svox2's `sh_dim = 9` is degree 2), at most [`super::sh::MAX_SH_DEGREE`].
    pub sh_degree: usize,
    /// Initial density of every voxel.
    pub init_density: f32,
    /// Density learning rate.
    pub lr_density: LrSchedule,
    /// SH learning rate.
    pub lr_sh: LrSchedule,
    /// RMSProp averaging factor `β`.
    pub rms_beta: f64,
    /// RMSProp `ε`.
    pub rms_epsilon: f64,
    /// Weight of the density TV.
    pub lambda_tv_density: f64,
    /// Fraction of the cells the density TV is taken over each step.
    pub tv_density_fraction: f64,
    /// Weight of the SH TV.
    pub lambda_tv_sh: f64,
    /// Fraction of the cells the SH TV is taken over each step.
    pub tv_sh_fraction: f64,
    /// Turn TV off after the first resolution change.
    pub tv_early_only: bool,
    /// Which voxels survive a resolution change.
    pub prune: PruneOptions,
    /// Rendering settings (background brightness 1 = white, as NeRF-synthetic).
    pub render: RenderOptions,
}

impl Default for OptimizeConfig {
    fn default() -> Self {
        Self {
            resolutions: vec![[256; 3], [512; 3]],
            upsample_every: 3 * 12_800,
            steps: 10 * 12_800,
            batch_rays: 5000,
            radius: [1.0; 3],
            center: [0.0; 3],
            sh_degree: 2,
            init_density: 0.1,
            lr_density: LrSchedule {
                initial: 3e1,
                last: 5e-2,
                delay_steps: 15_000,
                delay_mult: 1e-2,
                decay_steps: 250_000,
            },
            lr_sh: LrSchedule {
                initial: 1e-2,
                last: 5e-6,
                delay_steps: 0,
                delay_mult: 1e-2,
                decay_steps: 250_000,
            },
            rms_beta: 0.95,
            rms_epsilon: 1e-8,
            lambda_tv_density: 1e-5,
            tv_density_fraction: 0.01,
            lambda_tv_sh: 1e-3,
            tv_sh_fraction: 0.01,
            tv_early_only: true,
            prune: PruneOptions::default(),
            render: RenderOptions {
                sigma_thresh: 1e-8,
                ..RenderOptions::default()
            },
        }
    }
}

impl OptimizeConfig {
    /// svox2's optimiser at CPU scale, for 128×128 views of an object inside the unit box:
    /// 64³ for 1,000 steps, then 128³ (pruned) for 2,000 more, 5,000 rays per step, svox2's
    /// learning rates, TV weights and RMSProp, with the density warm-up and both decays
    /// shortened in proportion to the run.
    pub fn cpu_128() -> Self {
        let steps = 3000;
        let defaults = Self::default();
        Self {
            resolutions: vec![[64; 3], [128; 3]],
            upsample_every: 1000,
            steps,
            lr_density: LrSchedule {
                delay_steps: 300,
                decay_steps: 2 * steps,
                ..defaults.lr_density
            },
            lr_sh: LrSchedule {
                decay_steps: 2 * steps,
                ..defaults.lr_sh
            },
            ..defaults
        }
    }

    fn validate(&self) -> Result<(), PlenoxelError> {
        let bad = |what: String| Err(PlenoxelError::BadConfig(what));
        if self.resolutions.is_empty() {
            return bad("resolutions is empty".into());
        }
        if self.batch_rays == 0 || self.upsample_every == 0 {
            return bad("batch_rays and upsample_every must be > 0".into());
        }
        if let Err(e) = crate::multiview::check_ray_count(self.batch_rays) {
            return bad(format!("batch_rays: {e}"));
        }
        if self.sh_degree > MAX_SH_DEGREE {
            return bad(format!(
                "sh_degree {} is above the supported {MAX_SH_DEGREE}",
                self.sh_degree
            ));
        }
        let fractions = [self.tv_density_fraction, self.tv_sh_fraction];
        if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
            return bad(format!("TV fractions must be in [0, 1], got {fractions:?}"));
        }
        let positive = [
            self.lr_density.initial,
            self.lr_density.last,
            self.lr_sh.initial,
            self.lr_sh.last,
            self.rms_epsilon,
        ];
        if positive.iter().any(|v| !(v.is_finite() && *v > 0.0))
            || !(0.0..1.0).contains(&self.rms_beta)
        {
            return bad(format!(
                "learning rates and rms_epsilon must be finite and > 0 and rms_beta in [0, 1), \
                 got lr_density {:?}, lr_sh {:?}, rms_beta {}, rms_epsilon {}",
                self.lr_density, self.lr_sh, self.rms_beta, self.rms_epsilon
            ));
        }
        Ok(())
    }
}

/// What one optimisation step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Steps done, this one included.
    pub step: usize,
    /// MSE of the batch (before the update).
    pub mse: f64,
    /// `−10·log10(mse)`.
    pub psnr: f64,
    /// Weighted density TV (0 when off).
    pub tv_density: f64,
    /// Weighted SH TV (0 when off).
    pub tv_sh: f64,
    /// Learning rates used.
    pub lr_density: f64,
    /// Learning rates used.
    pub lr_sh: f64,
    /// Occupied voxels after the step (changes at resolution changes).
    pub capacity: usize,
    /// Density rows the step updated (those the rays or the density TV gave a non-zero
    /// gradient).
    pub updated_density_rows: usize,
    /// SH rows the step updated (those the rays or the SH TV gave a non-zero gradient).
    pub updated_sh_rows: usize,
}

/// svox2's RMSProp state for one data array `[N, width]`.
#[derive(Debug, Clone)]
struct RmsProp {
    width: usize,
    average: Vec<f32>,
}

impl RmsProp {
    fn new(len: usize, width: usize) -> Self {
        Self {
            width,
            average: vec![0.0; len],
        }
    }

    /// Updates the rows of `data` among `grad`'s touched rows whose gradient is not all zero;
    /// returns how many.
    fn step(
        &mut self,
        data: &mut [f32],
        grad: &SparseRows<f32>,
        lr: f64,
        beta: f64,
        epsilon: f64,
    ) -> usize {
        let w = self.width;
        let mut updated = 0;
        for (row, g_row) in grad.iter() {
            if g_row.iter().all(|&g| g == 0.0) {
                continue;
            }
            updated += 1;
            let span = row * w..(row + 1) * w;
            for ((x, &g), avg) in data[span.clone()]
                .iter_mut()
                .zip(g_row)
                .zip(&mut self.average[span])
            {
                let (g, r) = (f64::from(g), f64::from(*avg));
                let r = if r == 0.0 {
                    g * g
                } else {
                    beta * r + (1.0 - beta) * g * g
                };
                *avg = r as f32;
                *x = (f64::from(*x) - lr * g / (r.sqrt() + epsilon)) as f32;
            }
        }
        updated
    }
}

/// A Plenoxel fit in progress: the grid structure, its f32 data, RMSProp state and schedule
/// position. Drive it with [`PlenoxelOptimizer::step`] (or [`fit`]).
#[derive(Debug, Clone)]
pub struct PlenoxelOptimizer {
    structure: PlenoxelGrid,
    density: Vec<f32>,
    sh: Vec<f32>,
    rms_density: RmsProp,
    rms_sh: RmsProp,
    /// Render gradients (f64, per ray chunk), reused across steps.
    workspace: BackwardWorkspace,
    /// The step's f32 gradients `[N, 1]`, `[N, 3K]`, reused across steps; empty between steps.
    grad_density: SparseRows<f32>,
    grad_sh: SparseRows<f32>,
    config: OptimizeConfig,
    steps_done: usize,
    stage: usize,
}

impl PlenoxelOptimizer {
    /// Starts from `grid` (e.g. [`PlenoxelGrid::dense`], or a checkpoint to refine), which is
    /// taken to be at stage 0 of `config.resolutions` whatever its resolution.
    pub fn new(grid: PlenoxelGrid, config: OptimizeConfig) -> Result<Self, PlenoxelError> {
        config.validate()?;
        let density: Vec<f32> = grid
            .density()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let sh: Vec<f32> = grid.sh().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let width = 3 * grid.basis_dim();
        Ok(Self {
            rms_density: RmsProp::new(density.len(), 1),
            rms_sh: RmsProp::new(sh.len(), width),
            workspace: BackwardWorkspace::default(),
            grad_density: SparseRows::new(density.len(), 1),
            grad_sh: SparseRows::new(density.len(), width),
            structure: grid,
            density,
            sh,
            config,
            steps_done: 0,
            stage: 0,
        })
    }

    /// A dense grid at `config.resolutions[0]` in `config`'s box, ready to fit.
    pub fn from_config(config: OptimizeConfig) -> Result<Self, PlenoxelError> {
        config.validate()?;
        let grid = PlenoxelGrid::dense(
            config.resolutions[0],
            config.radius,
            config.center,
            config.sh_degree,
            config.init_density,
        )?;
        Self::new(grid, config)
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// The settings.
    pub fn config(&self) -> &OptimizeConfig {
        &self.config
    }

    /// The current grid (f32 density and SH; plain tensors, not tracked).
    pub fn grid(&self) -> Result<PlenoxelGrid, PlenoxelError> {
        let (n, width) = (self.structure.capacity(), 3 * self.structure.basis_dim());
        let density = Tensor::from_slice(&self.density, (n, 1), &Device::Cpu)?;
        let sh = Tensor::from_slice(&self.sh, (n, width), &Device::Cpu)?;
        self.structure.with_data(density, sh)
    }

    /// One step on `batch` (see the [module docs](self)); resamples to the next resolution
    /// when the step count reaches a multiple of `upsample_every`.
    pub fn step(
        &mut self,
        batch: &RayBatch,
        rng: &mut impl Rng,
    ) -> Result<StepStats, PlenoxelError> {
        let cfg = &self.config;
        let rays = self
            .structure
            .step_rays(&batch.origins, &batch.directions, &cfg.render)?;
        let colours = rays.forward(&self.density, &self.sh)?;
        // The loss on the `[M, 3]` colours goes through candle's autograd (small), the grid's
        // part through the sparse backward.
        let predicted = Var::from_tensor(&Tensor::from_slice(
            &colours,
            batch.colours.shape(),
            &Device::Cpu,
        )?)?;
        let mse = predicted
            .as_tensor()
            .sub(&batch.colours.to_dtype(DType::F32)?)?
            .sqr()?
            .mean_all()?;
        let grad_out: Vec<f32> = match mse.backward()?.get(predicted.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; colours.len()],
        };
        let mse = f64::from(mse.to_scalar::<f32>()?);
        rays.backward(
            &self.density,
            &self.sh,
            &colours,
            &grad_out,
            &mut self.workspace,
        )?;
        if let Some((gd, gs)) = self.workspace.sums() {
            for (sums, grad) in [(gd, &mut self.grad_density), (gs, &mut self.grad_sh)] {
                for (row, values) in sums.iter() {
                    for (g, &v) in grad.row_mut(row).iter_mut().zip(values) {
                        *g = v as f32;
                    }
                }
            }
        }

        let tv_on = !(cfg.tv_early_only && self.stage > 0);
        let links = self.structure.links();
        let dims = self.structure.dims();
        let mut tv =
            |lambda: f64, fraction: f64, data: &[f32], width: usize, grad: &mut SparseRows<f32>| {
                if !tv_on || lambda <= 0.0 || fraction <= 0.0 {
                    return 0.0;
                }
                let cells = tv_cells(links.len(), fraction, rng);
                total_variation_into(links, dims, data, width, cells, lambda, grad)
            };
        let tv_density = tv(
            cfg.lambda_tv_density,
            cfg.tv_density_fraction,
            &self.density,
            1,
            &mut self.grad_density,
        );
        let tv_sh = tv(
            cfg.lambda_tv_sh,
            cfg.tv_sh_fraction,
            &self.sh,
            3 * self.structure.basis_dim(),
            &mut self.grad_sh,
        );

        let lr_density = cfg.lr_density.at(self.steps_done);
        let lr_sh = cfg.lr_sh.at(self.steps_done);
        let (beta, eps) = (cfg.rms_beta, cfg.rms_epsilon);
        let updated_density_rows =
            self.rms_density
                .step(&mut self.density, &self.grad_density, lr_density, beta, eps);
        let updated_sh_rows = self
            .rms_sh
            .step(&mut self.sh, &self.grad_sh, lr_sh, beta, eps);
        self.grad_density.clear();
        self.grad_sh.clear();
        self.steps_done += 1;

        if self.steps_done % self.config.upsample_every == 0
            && self.stage + 1 < self.config.resolutions.len()
        {
            self.stage += 1;
            let dims = self.config.resolutions[self.stage];
            self.resample(dims)?;
        }
        Ok(StepStats {
            step: self.steps_done,
            mse,
            psnr: psnr_of_mse(mse),
            tv_density,
            tv_sh,
            lr_density,
            lr_sh,
            capacity: self.structure.capacity(),
            updated_density_rows,
            updated_sh_rows,
        })
    }

    /// Resamples the grid to `dims` with the configured pruning; RMSProp state restarts.
    pub fn resample(&mut self, dims: [usize; 3]) -> Result<(), PlenoxelError> {
        let grid = self.grid()?.resample(dims, &self.config.prune)?;
        let steps_done = self.steps_done;
        let stage = self.stage;
        *self = Self::new(grid, self.config.clone())?;
        self.steps_done = steps_done;
        self.stage = stage;
        Ok(())
    }
}

/// A random contiguous run of `fraction · total` cells (svox2's `tv_contiguous`).
fn tv_cells(total: usize, fraction: f64, rng: &mut impl Rng) -> std::ops::Range<usize> {
    let count = ((total as f64 * fraction) as usize).clamp(1, total.max(1));
    let start = rng.random_range(0..=total.saturating_sub(count));
    start..start + count
}

/// `−10·log10(mse)` for images in `[0, 1]`.
pub fn psnr_of_mse(mse: f64) -> f64 {
    -10.0 * mse.log10()
}

/// Renders frame `frame` of `dataset`: `[H, W, 3]` f32.
pub fn render_view(
    grid: &PlenoxelGrid,
    dataset: &MultiViewDataset,
    frame: usize,
    opts: &RenderOptions,
) -> Result<Tensor, PlenoxelError> {
    let rays = dataset.image_rays(frame)?;
    let rgb = grid.render_rays(&rays.origins, &rays.directions, opts)?;
    let i = dataset.intrinsics;
    Ok(rgb.reshape((i.height, i.width, 3))?)
}

/// Mean over the frames of `dataset` of each frame's PSNR (colours clamped to `[0, 1]` first,
/// as svox2's evaluation compares them), as svox2's `eval_step` averages.
pub fn evaluate_psnr(
    grid: &PlenoxelGrid,
    dataset: &MultiViewDataset,
    opts: &RenderOptions,
) -> Result<f64, PlenoxelError> {
    let mut total = 0.0;
    for frame in 0..dataset.len() {
        let rendered = render_view(grid, dataset, frame, opts)?.clamp(0f32, 1f32)?;
        let target = dataset.images.get(frame)?;
        let mse = rendered
            .sub(&target)?
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()?;
        total += psnr_of_mse(f64::from(mse));
    }
    Ok(total / dataset.len().max(1) as f64)
}

/// Fits a grid to `dataset` from scratch: [`PlenoxelOptimizer::from_config`], then
/// `config.steps` steps of `config.batch_rays` random rays, calling `on_step` after each.
pub fn fit(
    dataset: &MultiViewDataset,
    config: OptimizeConfig,
    rng: &mut impl Rng,
    mut on_step: impl FnMut(&StepStats),
) -> Result<PlenoxelGrid, PlenoxelError> {
    let mut optimizer = PlenoxelOptimizer::from_config(config)?;
    for _ in 0..optimizer.config.steps {
        let batch = dataset.sample_rays(optimizer.config.batch_rays, rng)?;
        let stats = optimizer.step(&batch, rng)?;
        on_step(&stats);
    }
    optimizer.grid()
}

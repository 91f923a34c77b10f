//! Fitting a [`NeuralRadianceField`] to a posed multi-view dataset with the
//! [`vnr_train::Trainer`], and rendering held-out views to measure it.
//!
//! As PyTorch3D's NeRF tutorial: Adam at `1e-3`, multiplied by `0.1` at 75 % of the iterations;
//! each step renders a Monte Carlo draw of rays with the emission–absorption marcher (samples
//! at `linspace(near, far, P)` jittered within their bins) and minimises the tutorial's Huber
//! error of the colours plus that of the silhouettes (the marcher's opacity against the
//! frames' alpha, when the frames have one). Differences from the tutorial, by design:
//! - rays go through pixel centres drawn from all training frames, a shuffled pass over every
//!   pixel per epoch (NeRF's own batching), so target colours are exact pixel values instead
//!   of bilinear samples at continuous NDC points;
//! - the marcher composites the dataset's background colour behind the field, so frames
//!   composited on white (NeRF-synthetic) are fitted as they are.
//!
//! With [`DensityMode::Sigma`] (the paper's form) directions are normalised, sample lengths are
//! world distances, and [`NerfRaymarcher`] integrates σ over the steps (the last sample gets the
//! previous step, so the background shows through).
//!
//! Held-out views are rendered by [`render_view`] in chunks of rays without keeping the graph.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vnr_formats::image::ImageF32;
use vnr_render::multiview::{MultiViewDataset, MultiViewError, RayBatch, Split};
use vnr_render::raymarchers::{
    EmissionAbsorptionRaymarcher, NerfLastStep, NerfRaymarcher, RayMarcher, RenderedRays,
};
use vnr_render::rays::RayBundle;
use vnr_render::renderer::render_rays;
use vnr_render::samplers::jiggle_within_stratas;
use vnr_train::config::TrainConfig;
use vnr_train::data::{BatchIter, DataSource};
use vnr_train::metrics::psnr;
use vnr_train::optim::{GroupConfig, OptimizerConfig};
use vnr_train::schedule::LrSchedule;
use vnr_train::trainer::RunSummary;
use vnr_train::{Model, StepOutput, TrainError, Trainer};

use crate::nerf::{DensityMode, NerfConfig, NeuralRadianceField};

/// Errors of NeRF training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum NerfError {
    /// A setting out of range.
    #[error("NeRF training config: {0}")]
    Config(String),
    /// The dataset could not be read or holds nothing to train on.
    #[error(transparent)]
    Data(#[from] MultiViewError),
    /// The training loop stopped.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A rendered view could not be written.
    #[error(transparent)]
    Image(#[from] vnr_formats::image::ImageError),
}

/// The colour and silhouette error of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PhotoLoss {
    /// The tutorial's `huber`: `mean(|(√(1 + (x − y)² / s²) − 1) · s|)` (pseudo-Huber, the
    /// radicand clamped at `1e-4`).
    Huber {
        /// Scale `s` (the tutorial's 0.1).
        scaling: f64,
    },
    /// Mean squared error.
    Mse,
}

impl PhotoLoss {
    /// The loss between `x` and `y` (same shape), a scalar tensor.
    pub fn apply(&self, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        let diff_sq = x.sub(y)?.sqr()?;
        match *self {
            PhotoLoss::Huber { scaling } => {
                let r = ((diff_sq / (scaling * scaling))? + 1.0)?
                    .clamp(1e-4, f64::INFINITY)?
                    .sqrt()?;
                ((r - 1.0)? * scaling)?.abs()?.mean_all()
            }
            PhotoLoss::Mse => diff_sq.mean_all(),
        }
    }
}

/// How rays are sampled and marched (training and rendering alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaySettings {
    /// Depth of the first sample (view depth; world distance in [`DensityMode::Sigma`]).
    pub near: f32,
    /// Depth of the last sample.
    pub far: f32,
    /// Samples per ray `P`.
    pub samples_per_ray: usize,
    /// Jitter samples within their bins while training (stratified sampling).
    pub stratified: bool,
    /// Rays per field evaluation (bounds memory).
    pub chunk_rays: usize,
    /// Background colour composited behind the field, and the one RGBA frames are composited
    /// on when loaded.
    pub background: [f32; 3],
}

/// Most samples per ray of [`RaySettings`]: 65,536 (the tutorial uses 128).
pub const MAX_SAMPLES_PER_RAY: usize = 1 << 16;

impl RaySettings {
    /// Checks `0 ≤ near < far`, `2 ≤ samples_per_ray ≤` [`MAX_SAMPLES_PER_RAY`],
    /// `chunk_rays ≥ 1` and a background in `[0, 1]`.
    pub fn validate(&self) -> Result<(), NerfError> {
        let bad = |m: String| Err(NerfError::Config(m));
        if !(self.near.is_finite()
            && self.far.is_finite()
            && 0.0 <= self.near
            && self.near < self.far)
        {
            return bad(format!(
                "need 0 <= near < far, got {} and {}",
                self.near, self.far
            ));
        }
        if !(2..=MAX_SAMPLES_PER_RAY).contains(&self.samples_per_ray) {
            return bad(format!(
                "samples_per_ray {} must be in 2..={MAX_SAMPLES_PER_RAY}",
                self.samples_per_ray
            ));
        }
        if self.chunk_rays == 0 {
            return bad("chunk_rays must be at least 1".into());
        }
        if self.background.iter().any(|c| !(0.0..=1.0).contains(c)) {
            return bad(format!("background {:?} is not in [0, 1]", self.background));
        }
        Ok(())
    }
}

impl Default for RaySettings {
    /// The tutorial's: 128 samples between depths 0.1 and 3, stratified, black background.
    fn default() -> Self {
        Self {
            near: 0.1,
            far: 3.0,
            samples_per_ray: 128,
            stratified: true,
            chunk_rays: 1024,
            background: [0.0; 3],
        }
    }
}

/// Everything `vnr train nerf` reads from its TOML/JSON config; `Default` is the tutorial's
/// training (model, 20,000 iterations of 4,500 rays, Adam `1e-3` decayed ×0.1 at 75 %).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NerfTrainConfig {
    /// Dataset root in the NeRF-synthetic layout (`transforms_{train,val,test}.json`).
    pub dataset: PathBuf,
    /// Run directory: `log.jsonl`, `loss.png`, `checkpoints/`, `test/` renders.
    pub output: PathBuf,
    /// The model.
    pub model: NerfConfig,
    /// Training steps.
    pub iterations: u64,
    /// Rays per step (the tutorial's 6 cameras × 750 rays).
    pub rays_per_step: usize,
    /// Ray sampling and marching.
    pub rays: RaySettings,
    /// Adam's initial learning rate.
    pub lr: f64,
    /// The learning rate is multiplied by `lr_decay_factor` every `lr_decay_at · iterations`
    /// steps (once, for values above 0.5).
    pub lr_decay_at: f64,
    /// See `lr_decay_at`.
    pub lr_decay_factor: f64,
    /// Colour (and silhouette) error.
    pub loss: PhotoLoss,
    /// Weight of the silhouette error (0 disables it).
    pub silhouette_weight: f64,
    /// Seed of the initial weights, the ray draws and the jitter.
    pub seed: u64,
    /// Render this many `val` views every this many steps (logged as validation).
    pub validate_every: Option<u64>,
    /// Validation views.
    pub validation_views: usize,
    /// Checkpoint every this many steps (one is always written at the end).
    pub checkpoint_every: Option<u64>,
    /// Held-out `test` views rendered and scored after training (0: none).
    pub test_views: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

impl Default for NerfTrainConfig {
    fn default() -> Self {
        Self {
            dataset: PathBuf::from("data"),
            output: PathBuf::from("runs/nerf"),
            model: NerfConfig::default(),
            iterations: 20_000,
            rays_per_step: 4_500,
            rays: RaySettings::default(),
            lr: 1e-3,
            lr_decay_at: 0.75,
            lr_decay_factor: 0.1,
            loss: PhotoLoss::Huber { scaling: 0.1 },
            silhouette_weight: 1.0,
            seed: 0,
            validate_every: None,
            validation_views: 2,
            checkpoint_every: Some(1_000),
            test_views: 4,
            progress: true,
        }
    }
}

impl NerfTrainConfig {
    /// Reads a `.toml` or `.json` config (by extension); relative `dataset` and `output`
    /// paths are taken relative to the config file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, NerfError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| NerfError::Config(format!("{}: {e}", path.display())))?;
        let parsed: Self = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => toml::from_str(&text).map_err(|e| e.to_string()),
            Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string()),
            _ => Err("expected a .toml or .json file".to_string()),
        }
        .map_err(|e| NerfError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = parsed;
        config.dataset = base.join(&config.dataset);
        config.output = base.join(&config.output);
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), NerfError> {
        let bad = |m: String| Err(NerfError::Config(m));
        self.model.validate()?;
        self.rays.validate()?;
        if self.rays_per_step == 0 {
            return bad("rays_per_step must be at least 1".into());
        }
        if self.iterations == 0 {
            return bad("iterations must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be > 0, got {}", self.lr));
        }
        let decay_ok = (self.lr_decay_at > 0.0 && self.lr_decay_at <= 1.0)
            && (self.lr_decay_factor.is_finite() && self.lr_decay_factor > 0.0);
        if !decay_ok {
            return bad(format!(
                "need lr_decay_at in (0, 1] and lr_decay_factor > 0, got {} and {}",
                self.lr_decay_at, self.lr_decay_factor
            ));
        }
        if let PhotoLoss::Huber { scaling } = self.loss {
            if !(scaling.is_finite() && scaling > 0.0) {
                return bad(format!("huber scaling must be > 0, got {scaling}"));
            }
        }
        if !(self.silhouette_weight.is_finite() && self.silhouette_weight >= 0.0) {
            return bad(format!(
                "silhouette_weight must be >= 0, got {}",
                self.silhouette_weight
            ));
        }
        Ok(())
    }

    /// The trainer's settings: Adam, one group with the step decay, the intervals.
    pub fn train_config(&self) -> TrainConfig {
        let interval = ((self.iterations as f64 * self.lr_decay_at).round() as u64).max(1);
        TrainConfig {
            steps: Some(self.iterations),
            batch_size: self.rays_per_step,
            optimizer: OptimizerConfig::default(),
            groups: vec![GroupConfig {
                name: "all".into(),
                params: Vec::new(),
                schedule: LrSchedule::Step {
                    initial: self.lr,
                    interval,
                    factor: self.lr_decay_factor,
                },
            }],
            validate_every: self.validate_every,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
            progress: self.progress,
            ..TrainConfig::default()
        }
    }
}

/// Rays with their targets: `origins`, `directions`, `colours` `[M, 3]` and the silhouette
/// `alpha` `[M, 1]` when the frames have one.
#[derive(Debug, Clone)]
pub struct RayTargets {
    /// Rays and colours.
    pub rays: RayBatch,
    /// Target opacity, `[M, 1]`.
    pub alpha: Option<Tensor>,
}

/// Rays and targets of the pixels with flat indices `indices` into `[N, H, W]` of `data`.
pub fn ray_targets(data: &MultiViewDataset, indices: &[usize]) -> Result<RayTargets, NerfError> {
    let rays = data.rays_for_pixels(indices)?;
    let alpha = match &data.alpha {
        Some(alpha) => {
            let picks: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
            let picks = Tensor::from_vec(picks, indices.len(), alpha.device())?;
            Some(
                alpha
                    .flatten_all()?
                    .index_select(&picks, 0)?
                    .reshape((indices.len(), 1))?,
            )
        }
        None => None,
    };
    Ok(RayTargets { rays, alpha })
}

/// Training batches: each epoch is a pass over every training pixel in an order shuffled from
/// `(seed, epoch)`, `rays_per_step` rays a batch; validation renders whole `val` frames.
#[derive(Debug, Clone)]
pub struct NerfRays {
    train: MultiViewDataset,
    validation: Option<MultiViewDataset>,
    validation_views: usize,
    rays_per_step: usize,
    seed: u64,
}

impl NerfRays {
    /// A source over `train` (and whole frames of `validation`, at most `validation_views`).
    pub fn new(
        train: MultiViewDataset,
        validation: Option<MultiViewDataset>,
        validation_views: usize,
        rays_per_step: usize,
        seed: u64,
    ) -> Result<Self, NerfError> {
        if rays_per_step == 0 {
            return Err(NerfError::Config("rays_per_step must be at least 1".into()));
        }
        Ok(Self {
            train,
            validation,
            validation_views,
            rays_per_step,
            seed,
        })
    }

    /// The training split.
    pub fn train(&self) -> &MultiViewDataset {
        &self.train
    }
}

fn data_error(e: NerfError) -> TrainError {
    match e {
        NerfError::Train(e) => e,
        NerfError::Candle(e) => TrainError::Candle(e),
        other => TrainError::Config(other.to_string()),
    }
}

impl DataSource for NerfRays {
    type Batch = RayTargets;

    fn epoch(&self, epoch: u64, skip: u64) -> vnr_train::Result<BatchIter<'_, RayTargets>> {
        let (w, h) = (self.train.intrinsics.width, self.train.intrinsics.height);
        let mut order: Vec<usize> = (0..self.train.len() * w * h).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
        let skip = usize::try_from(skip)
            .map_err(|_| TrainError::Config(format!("cannot skip {skip} batches")))?;
        let r = self.rays_per_step;
        let batches = order.len().div_ceil(r);
        Ok(Box::new((skip.min(batches)..batches).map(move |b| {
            let indices = &order[b * r..((b + 1) * r).min(order.len())];
            ray_targets(&self.train, indices).map_err(data_error)
        })))
    }

    fn validation(&self) -> vnr_train::Result<BatchIter<'_, RayTargets>> {
        let Some(val) = &self.validation else {
            return Ok(Box::new(std::iter::empty()));
        };
        let per_frame = val.intrinsics.width * val.intrinsics.height;
        let views = self.validation_views.min(val.len());
        Ok(Box::new((0..views).map(move |frame| {
            let indices: Vec<usize> = (frame * per_frame..(frame + 1) * per_frame).collect();
            ray_targets(val, &indices).map_err(data_error)
        })))
    }
}

/// A NeRF with its parameters, ray settings and loss: the [`Model`] the trainer fits.
pub struct NerfModel {
    vars: VarMap,
    field: NeuralRadianceField,
    rays: RaySettings,
    loss: PhotoLoss,
    silhouette_weight: f64,
    training: bool,
}

impl NerfModel {
    /// A freshly initialised model (weights drawn from `seed`); invalid `rays`
    /// ([`RaySettings::validate`]) are an error.
    pub fn new(
        cfg: NerfConfig,
        rays: RaySettings,
        loss: PhotoLoss,
        silhouette_weight: f64,
        seed: u64,
    ) -> Result<Self, NerfError> {
        // `bundle` divides by `samples_per_ray − 1` and `render_eval` steps by `chunk_rays`.
        rays.validate()?;
        let vars = VarMap::new();
        let field = NeuralRadianceField::seeded(cfg, &vars, seed, &Device::Cpu)?;
        Ok(Self {
            vars,
            field,
            rays,
            loss,
            silhouette_weight,
            training: true,
        })
    }

    /// The model of a training config.
    pub fn from_config(cfg: &NerfTrainConfig) -> Result<Self, NerfError> {
        cfg.validate()?;
        Self::new(
            cfg.model.clone(),
            cfg.rays.clone(),
            cfg.loss,
            cfg.silhouette_weight,
            cfg.seed,
        )
    }

    /// The field.
    pub fn field(&self) -> &NeuralRadianceField {
        &self.field
    }

    /// The ray settings.
    pub fn ray_settings(&self) -> &RaySettings {
        &self.rays
    }

    fn marcher(&self) -> Box<dyn RayMarcher> {
        let background = Some(self.rays.background.iter().map(|&c| c as f64).collect());
        match self.field.config().density {
            DensityMode::Opacity => Box::new(EmissionAbsorptionRaymarcher {
                background,
                ..Default::default()
            }),
            DensityMode::Sigma => Box::new(NerfRaymarcher {
                last_step: NerfLastStep::PreviousStep,
                background,
                ..Default::default()
            }),
        }
    }

    /// The bundle of rays `origins`, `directions` `[M, 3]` with `P` samples each (jittered
    /// when `jitter`).
    fn bundle(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        jitter: Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<RayBundle> {
        let m = origins.dim(0)?;
        let p = self.rays.samples_per_ray;
        let directions = match self.field.config().density {
            DensityMode::Opacity => directions.clone(),
            DensityMode::Sigma => {
                let norm = directions.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
                directions.broadcast_div(&norm.maximum(1e-12)?)?
            }
        };
        let (near, far) = (self.rays.near as f64, self.rays.far as f64);
        let step = (far - near) / (p - 1) as f64;
        let depths: Vec<f32> = (0..p).map(|k| (near + step * k as f64) as f32).collect();
        let depths = Tensor::from_vec(depths, (1, p), origins.device())?.broadcast_as((m, p))?;
        let lengths = match jitter {
            Some(rng) => jiggle_within_stratas(&depths.contiguous()?, rng)?,
            None => depths,
        };
        let xys = Tensor::zeros((m, 2), DType::F32, origins.device())?;
        RayBundle::new(origins.clone(), directions, lengths, xys)
    }

    /// Renders rays `origins`, `directions` `[M, 3]` with gradients (features `[M, 3]`,
    /// opacity `[M, 1]`, depth `[M, 1]`, weights `[M, P]`); samples jittered from `rng`
    /// when stratified.
    pub fn render_train(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<RenderedRays> {
        let jitter = self.rays.stratified.then_some(rng);
        let bundle = self.bundle(origins, directions, jitter)?;
        render_rays(
            &self.field,
            self.marcher().as_ref(),
            &bundle,
            self.rays.chunk_rays,
        )
    }

    /// Renders rays without jitter, chunk by chunk, keeping no graph: colours `[M, 3]` and
    /// opacity `[M, 1]`.
    pub fn render_eval(
        &self,
        origins: &Tensor,
        directions: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let marcher = self.marcher();
        let m = origins.dim(0)?;
        let chunk = self.rays.chunk_rays;
        let mut colours = Vec::with_capacity(m.div_ceil(chunk));
        let mut opacity = Vec::with_capacity(m.div_ceil(chunk));
        for start in (0..m).step_by(chunk) {
            let len = chunk.min(m - start);
            let bundle = self.bundle(
                &origins.narrow(0, start, len)?,
                &directions.narrow(0, start, len)?,
                None,
            )?;
            let out = render_rays(&self.field, marcher.as_ref(), &bundle, chunk)?;
            colours.push(out.features.detach());
            opacity.push(out.opacity.detach());
        }
        Ok((Tensor::cat(&colours, 0)?, Tensor::cat(&opacity, 0)?))
    }

    /// Loss and metrics of rendered `colours`, `opacity` against `batch`.
    fn score(
        &self,
        colours: &Tensor,
        opacity: &Tensor,
        batch: &RayTargets,
    ) -> vnr_train::Result<StepOutput> {
        let target = &batch.rays.colours;
        let colour_err = self.loss.apply(colours, target)?;
        let mut metrics = vec![("psnr".to_string(), psnr(&colours.detach(), target, 1.0)?)];
        let loss = match (&batch.alpha, self.silhouette_weight > 0.0) {
            (Some(alpha), true) => {
                let sil_err = self.loss.apply(opacity, alpha)?;
                metrics.push(("colour_err".into(), scalar(&colour_err)?));
                metrics.push(("silhouette_err".into(), scalar(&sil_err)?));
                (colour_err + (sil_err * self.silhouette_weight)?)?
            }
            _ => colour_err,
        };
        Ok(StepOutput { loss, metrics })
    }
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

impl Model for NerfModel {
    type Batch = RayTargets;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn step(&self, batch: &RayTargets, rng: &mut ChaCha8Rng) -> vnr_train::Result<StepOutput> {
        let (o, d) = (&batch.rays.origins, &batch.rays.directions);
        if self.training {
            let out = self.render_train(o, d, rng)?;
            self.score(&out.features, &out.opacity, batch)
        } else {
            let (colours, opacity) = self.render_eval(o, d)?;
            self.score(&colours, &opacity, batch)
        }
    }
}

/// A rendered held-out view.
#[derive(Debug, Clone)]
pub struct RenderedView {
    /// Rendered colours, `[H, W, 3]`.
    pub image: Tensor,
    /// PSNR against the frame (dB, data range 1).
    pub psnr: f64,
}

/// Renders frame `frame` of `data` (every pixel, no jitter) and scores it.
pub fn render_view(
    model: &NerfModel,
    data: &MultiViewDataset,
    frame: usize,
) -> Result<RenderedView, NerfError> {
    let rays = data.image_rays(frame)?;
    let (colours, _) = model.render_eval(&rays.origins, &rays.directions)?;
    let (w, h) = (data.intrinsics.width, data.intrinsics.height);
    let value = psnr(&colours, &rays.colours, 1.0)?;
    Ok(RenderedView {
        image: colours.reshape((h, w, 3))?,
        psnr: value,
    })
}

/// Held-out scores of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// PSNR of each view rendered (dB).
    pub psnr: Vec<f64>,
    /// Their mean.
    pub mean_psnr: f64,
    /// Rendering throughput, rays per second.
    pub rays_per_second: f64,
}

/// Renders the first `views` frames of `data`, writing `out_dir/r_{i}.png` when given.
pub fn evaluate(
    model: &NerfModel,
    data: &MultiViewDataset,
    views: usize,
    out_dir: Option<&Path>,
) -> Result<Evaluation, NerfError> {
    let views = views.min(data.len());
    if views == 0 {
        return Err(NerfError::Config("no views to evaluate".into()));
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| NerfError::Config(format!("{}: {e}", dir.display())))?;
    }
    let start = Instant::now();
    let mut scores = Vec::with_capacity(views);
    for frame in 0..views {
        let view = render_view(model, data, frame)?;
        if let Some(dir) = out_dir {
            let (h, w, _) = view.image.dims3()?;
            let pixels = view.image.clamp(0f32, 1f32)?.flatten_all()?.to_vec1()?;
            ImageF32::new(w, h, 3, pixels)?.write_png(dir.join(format!("r_{frame}.png")))?;
        }
        scores.push(view.psnr);
    }
    let rays = (views * data.intrinsics.width * data.intrinsics.height) as f64;
    Ok(Evaluation {
        mean_psnr: scores.iter().sum::<f64>() / views as f64,
        psnr: scores,
        rays_per_second: rays / start.elapsed().as_secs_f64(),
    })
}

/// What [`fit`] reports.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The trainer's summary.
    pub summary: RunSummary,
    /// Wall-clock training seconds of this session.
    pub train_seconds: f64,
    /// Training rays per second (rays per step × steps of this session / seconds).
    pub train_rays_per_second: f64,
    /// Held-out scores, when test views were given.
    pub test: Option<Evaluation>,
}

/// Trains `cfg`'s model on `data` in `cfg.output` (resuming its newest checkpoint when
/// `resume`), then scores `cfg.test_views` frames of `test`, writing them to `output/test/`.
/// Returns the trained model with the report.
pub fn fit(
    cfg: &NerfTrainConfig,
    data: NerfRays,
    test: Option<&MultiViewDataset>,
    resume: bool,
) -> Result<(NerfModel, FitReport), NerfError> {
    cfg.validate()?;
    let model = NerfModel::from_config(cfg)?;
    let mut trainer = Trainer::new(model, cfg.train_config(), &cfg.output)?;
    let first_step = if resume {
        trainer.resume_latest()?.unwrap_or(0)
    } else {
        0
    };
    let start = Instant::now();
    let summary = trainer.run(&data)?;
    let train_seconds = start.elapsed().as_secs_f64();
    let rays = (summary.steps - first_step) as f64 * cfg.rays_per_step as f64;
    let mut model = trainer.into_model();
    model.set_training(false);
    let test = match test {
        Some(test) if cfg.test_views > 0 => Some(evaluate(
            &model,
            test,
            cfg.test_views,
            Some(&cfg.output.join("test")),
        )?),
        _ => None,
    };
    Ok((
        model,
        FitReport {
            summary,
            train_seconds,
            train_rays_per_second: rays / train_seconds.max(1e-9),
            test,
        },
    ))
}

/// Reads `cfg.dataset` (NeRF-synthetic layout: the `train` split, `val` and `test` when
/// present) composited on `cfg.rays.background`, and runs [`fit`].
pub fn fit_from_disk(
    cfg: &NerfTrainConfig,
    resume: bool,
) -> Result<(NerfModel, FitReport), NerfError> {
    cfg.validate()?;
    let bg = cfg.rays.background;
    let read = |split| MultiViewDataset::read_blender(&cfg.dataset, split, bg);
    let train = read(Split::Train)?;
    let optional = |split: Split| -> Result<Option<MultiViewDataset>, NerfError> {
        let json = cfg
            .dataset
            .join(format!("transforms_{}.json", split.as_str()));
        Ok(if json.is_file() {
            Some(read(split)?)
        } else {
            None
        })
    };
    let val = optional(Split::Val)?;
    let test = optional(Split::Test)?;
    let data = NerfRays::new(
        train,
        val,
        cfg.validation_views,
        cfg.rays_per_step,
        cfg.seed,
    )?;
    fit(cfg, data, test.as_ref(), resume)
}

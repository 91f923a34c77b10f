//! DeepSDF end to end: auto-decoder training (`train_deep_sdf.py`) through
//! [`vnr_train::Trainer`], latent reconstruction of an unseen shape from its samples
//! (`reconstruct.py`), and decoding a latent code to a mesh (`create_mesh`).
//!
//! * [`DeepSdfExperiment`] reads a `specs.json` as DeepSDF does (decoder, `CodeLength`,
//!   `ClampingDistance`, `CodeRegularization`/`Lambda`, `CodeBound`, `CodeInitStdDev`,
//!   `LearningRateSchedule`, `SamplesPerScene`, `ScenesPerBatch`, `NumEpochs`,
//!   `SnapshotFrequency`, `AdditionalSnapshots`, `DataSource`, `TrainSplit`) and finds the
//!   samples of the split. As `train_deep_sdf.py` does, it keeps a snapshot after every
//!   `SnapshotFrequency`-th epoch and after each epoch listed in `AdditionalSnapshots` (the
//!   run directory's `checkpoints/step-N/`, `N` = epoch × batches per epoch; see
//!   [`snapshot_steps`]), plus the final one.
//! * [`SceneDataset`] draws, per epoch, the scenes in a seeded random order, `ScenesPerBatch`
//!   at a time (an incomplete last batch is dropped, as DeepSDF's loader does), and for each
//!   scene `SamplesPerScene / 2` positive and as many negative rows, with replacement.
//! * [`AutoDecoder`] holds the decoder (checkpoint names as DeepSDF's `state_dict`) and the
//!   codes (`lat_vecs.weight`); its loss is DeepSDF's:
//!   `Σ|clamp(f(z, x)) − clamp(s)| / n + λ·min(1, epoch / 100)·Σᵢ‖z_{scene(i)}‖ / n` over the
//!   `n` rows of a batch, epochs counted from 1.
//! * [`reconstruct_latent`] fits one code to a shape's samples with the decoder frozen, and
//!   [`decode_mesh`] runs marching cubes on the decoded SDF over `[-1, 1]³`.
//!
//! Differences, on purpose: a split entry's samples are looked up as DeepSDF stores them
//! (`DataSource/SdfSamples/DATASET/CLASS/NAME.npz`) and, failing that, as `vnr sdf sample`
//! writes them (`DataSource/SdfSamples/NAME.npz`); a missing file is an error instead of a
//! warning. `BatchSplit` only splits a batch to save memory in the original (the gradient is
//! the same), so it is ignored.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use vnr_formats::mesh::TriangleMesh;
use vnr_geom::deepsdf_samples::{read_samples_npz, SamplingError, SAMPLES_DIR};
use vnr_geom::marching_cubes::{
    marching_cubes, DenseField, MarchingCubesConfig, MarchingCubesError,
};
use vnr_train::checkpoint::{latest_checkpoint, MODEL_TENSORS};
use vnr_train::data::{BatchIter, DataSource};
use vnr_train::optim::{param_groups, AdamConfig, GroupConfig, Optimizer, OptimizerConfig};
use vnr_train::originals::{DeepSdfSpecs, DEEPSDF_LATENT_PREFIX};
use vnr_train::schedule::LrSchedule;
use vnr_train::{Model, StepOutput, TrainConfig, TrainError};

use crate::deepsdf::{DeepSdfConfig, DeepSdfDecoder, LatentCodes};
use crate::limits::{MAX_ITERATIONS, MAX_SAMPLES};
use crate::seeded::seeded_var_builder;
use crate::ConfigError;
use vnr_ops::dispatch::capped_elements;

/// Epochs over which the code regularisation ramps up (`min(1, epoch / 100)` in DeepSDF).
pub const REGULARIZATION_RAMP_EPOCHS: f64 = 100.0;
/// The ChaCha8 stream of [`AutoDecoder::new`]'s seed that the latent codes are drawn from (the
/// decoder's weights take stream 0).
const CODES_STREAM: u64 = 1;
/// The file a trained run keeps its `specs.json` under (the experiment directory's own name).
pub const SPECS_FILE: &str = "specs.json";

/// Errors of DeepSDF training, reconstruction and meshing.
#[derive(Debug, thiserror::Error)]
pub enum DeepSdfError {
    /// The decoder part of the specs is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The training part of the specs, or the training itself, failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A samples file could not be read.
    #[error(transparent)]
    Samples(#[from] SamplingError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Marching cubes failed.
    #[error(transparent)]
    MarchingCubes(#[from] MarchingCubesError),
    /// A file of the experiment is missing or malformed.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A setting is out of range.
    #[error("deepsdf: {0}")]
    Invalid(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, DeepSdfError>;

/// The auto-decoder's settings beyond the decoder layout. `Default` is DeepSDF's chairs specs.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoDecoderConfig {
    /// The decoder (`NetworkSpecs`, `CodeLength`).
    pub decoder: DeepSdfConfig,
    /// Predictions and targets are clamped to `±` this (`ClampingDistance`).
    pub clamping_distance: f64,
    /// Weight of the code-norm penalty (`CodeRegularizationLambda`); `None` when
    /// `CodeRegularization` is off.
    pub code_regularization: Option<f64>,
    /// Largest norm of a looked-up code (`CodeBound`).
    pub code_bound: Option<f64>,
    /// Codes start as `N(0, (std/√latent)²)` (`CodeInitStdDev`).
    pub code_init_std: f64,
    /// Rows drawn per scene and batch, half positive, half negative (`SamplesPerScene`).
    pub samples_per_scene: usize,
    /// Scenes per batch (`ScenesPerBatch`).
    pub scenes_per_batch: usize,
}

impl Default for AutoDecoderConfig {
    fn default() -> Self {
        Self {
            decoder: DeepSdfConfig::default(),
            clamping_distance: 0.1,
            code_regularization: Some(1e-4),
            code_bound: Some(1.0),
            code_init_std: 1.0,
            samples_per_scene: 16_384,
            scenes_per_batch: 64,
        }
    }
}

impl AutoDecoderConfig {
    /// From the parsed specs and the decoder read from the same text.
    pub fn from_specs(specs: &DeepSdfSpecs, decoder: DeepSdfConfig) -> Result<Self> {
        let cfg = Self {
            decoder,
            clamping_distance: specs.clamping_distance,
            code_regularization: specs
                .code_regularization
                .then_some(specs.code_regularization_lambda),
            code_bound: specs.code_bound,
            code_init_std: specs.code_init_std_dev,
            samples_per_scene: specs.samples_per_scene,
            scenes_per_batch: specs.scenes_per_batch,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the settings; `samples_per_scene` must be in `2..=`[`MAX_SAMPLES`] and a batch's
    /// rows allocatable (see [`SceneDataset::new`]).
    pub fn validate(&self) -> Result<()> {
        self.decoder.validate()?;
        if !(self.clamping_distance.is_finite() && self.clamping_distance > 0.0) {
            return Err(DeepSdfError::Invalid(format!(
                "ClampingDistance {} must be finite and positive",
                self.clamping_distance
            )));
        }
        if self.scenes_per_batch == 0 {
            return Err(DeepSdfError::Invalid(
                "ScenesPerBatch must be at least 1".into(),
            ));
        }
        check_batch_rows(self.scenes_per_batch, self.samples_per_scene)?;
        if self
            .code_regularization
            .is_some_and(|l| !(l.is_finite() && l >= 0.0))
            || self.code_bound.is_some_and(|b| !(b.is_finite() && b > 0.0))
        {
            return Err(DeepSdfError::Invalid(
                "CodeRegularizationLambda must be >= 0 and CodeBound > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Checks `SamplesPerScene` (`2..=`[`MAX_SAMPLES`]) and that a batch of `ScenesPerBatch ×
/// SamplesPerScene` rows can be allocated, before an epoch draws them.
fn check_batch_rows(scenes_per_batch: usize, samples_per_scene: usize) -> Result<()> {
    if !(2..=MAX_SAMPLES).contains(&samples_per_scene) {
        return Err(DeepSdfError::Invalid(format!(
            "SamplesPerScene {samples_per_scene} must be in 2..={MAX_SAMPLES}"
        )));
    }
    capped_elements(
        "batch",
        "rows [ScenesPerBatch, SamplesPerScene, 4]",
        &[scenes_per_batch, samples_per_scene, 4],
    )
    .map_err(|e| DeepSdfError::Invalid(e.to_string()))?;
    Ok(())
}

/// One shape's SDF samples (rows `x, y, z, sdf` in its normalised space).
#[derive(Debug, Clone, PartialEq)]
pub struct SceneSamples {
    /// Rows with `sdf > 0`.
    pub pos: Vec<[f32; 4]>,
    /// Rows with `sdf ≤ 0`.
    pub neg: Vec<[f32; 4]>,
}

impl SceneSamples {
    /// Reads a samples `.npz`; both halves must be non-empty.
    pub fn read(path: &Path) -> Result<Self> {
        let (pos, neg) = read_samples_npz(path)?;
        Self::new(pos, neg).map_err(|e| match e {
            DeepSdfError::Invalid(problem) => DeepSdfError::File {
                path: path.to_owned(),
                problem,
            },
            other => other,
        })
    }

    /// From rows; both halves must be non-empty.
    pub fn new(pos: Vec<[f32; 4]>, neg: Vec<[f32; 4]>) -> Result<Self> {
        if pos.is_empty() || neg.is_empty() {
            return Err(DeepSdfError::Invalid(format!(
                "a shape needs positive and negative samples, got {} and {}",
                pos.len(),
                neg.len()
            )));
        }
        Ok(Self { pos, neg })
    }

    /// `count / 2` random positive rows then as many negative ones, drawn with replacement
    /// (DeepSDF's `unpack_sdf_samples`), appended to `out`.
    pub fn draw(&self, count: usize, rng: &mut impl Rng, out: &mut Vec<[f32; 4]>) {
        let half = count / 2;
        for rows in [&self.pos, &self.neg] {
            out.extend((0..half).map(|_| rows[rng.random_range(0..rows.len())]));
        }
    }
}

/// Splits rows `[x, y, z, sdf]` into `xyz [N, 3]` and `sdf [N, 1]`.
fn rows_to_tensors(rows: &[[f32; 4]], device: &Device) -> Result<(Tensor, Tensor)> {
    let xyz: Vec<f32> = rows.iter().flat_map(|r| [r[0], r[1], r[2]]).collect();
    let sdf: Vec<f32> = rows.iter().map(|r| r[3]).collect();
    Ok((
        Tensor::from_vec(xyz, (rows.len(), 3), device)?,
        Tensor::from_vec(sdf, (rows.len(), 1), device)?,
    ))
}

/// One training batch.
#[derive(Debug, Clone)]
pub struct SceneBatch {
    /// The epoch it belongs to (0-based).
    pub epoch: u64,
    /// Code indices of the batch's scenes `[S]` (u32).
    pub scenes: Tensor,
    /// Points `[S·P, 3]`, scene by scene.
    pub xyz: Tensor,
    /// Target SDF `[S·P, 1]`.
    pub sdf: Tensor,
}

/// The training scenes, batched as DeepSDF's loader does (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SceneDataset {
    scenes: Vec<SceneSamples>,
    scenes_per_batch: usize,
    samples_per_scene: usize,
    seed: u64,
    device: Device,
}

impl SceneDataset {
    /// Scenes in code order; at least `scenes_per_batch` of them. `samples_per_scene` must be
    /// in `2..=`[`MAX_SAMPLES`] and a batch's rows allocatable.
    pub fn new(
        scenes: Vec<SceneSamples>,
        scenes_per_batch: usize,
        samples_per_scene: usize,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        if scenes_per_batch == 0 || scenes.len() < scenes_per_batch {
            return Err(DeepSdfError::Invalid(format!(
                "{} scenes cannot fill one batch of ScenesPerBatch = {scenes_per_batch}",
                scenes.len()
            )));
        }
        check_batch_rows(scenes_per_batch, samples_per_scene)?;
        Ok(Self {
            scenes,
            scenes_per_batch,
            samples_per_scene,
            seed,
            device,
        })
    }

    /// Number of scenes (codes).
    pub fn len(&self) -> usize {
        self.scenes.len()
    }

    /// Whether there are no scenes (never: the constructor refuses that).
    pub fn is_empty(&self) -> bool {
        self.scenes.is_empty()
    }

    /// Batches per epoch (the incomplete last one is dropped).
    pub fn batches_per_epoch(&self) -> usize {
        self.scenes.len() / self.scenes_per_batch
    }

    /// A generator for `(epoch, batch)`, independent of every other batch (so an epoch can be
    /// resumed part-way).
    fn rng(&self, epoch: u64, batch: Option<u64>) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        if let Some(b) = batch {
            rng.set_word_pos(u128::from(b + 1) << 40);
        }
        rng
    }

    fn batch(&self, epoch: u64, index: u64, scenes: &[usize]) -> Result<SceneBatch> {
        let mut rng = self.rng(epoch, Some(index));
        let mut rows = Vec::with_capacity(scenes.len() * self.samples_per_scene);
        for &s in scenes {
            self.scenes[s].draw(self.samples_per_scene, &mut rng, &mut rows);
        }
        let (xyz, sdf) = rows_to_tensors(&rows, &self.device)?;
        let ids: Vec<u32> = scenes.iter().map(|&s| s as u32).collect();
        Ok(SceneBatch {
            epoch,
            scenes: Tensor::from_vec(ids, scenes.len(), &self.device)?,
            xyz,
            sdf,
        })
    }
}

impl DataSource for SceneDataset {
    type Batch = SceneBatch;

    fn epoch(&self, epoch: u64, skip: u64) -> vnr_train::Result<BatchIter<'_, SceneBatch>> {
        let mut order: Vec<usize> = (0..self.scenes.len()).collect();
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut self.rng(epoch, None));
        let batches: Vec<Vec<usize>> = order
            .chunks_exact(self.scenes_per_batch)
            .map(<[usize]>::to_vec)
            .collect();
        Ok(Box::new(
            batches
                .into_iter()
                .enumerate()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .map(move |(i, scenes)| {
                    self.batch(epoch, i as u64, &scenes)
                        .map_err(|e| TrainError::Config(e.to_string()))
                }),
        ))
    }

    fn validation(&self) -> vnr_train::Result<BatchIter<'_, SceneBatch>> {
        Ok(Box::new(std::iter::empty()))
    }
}

/// The trainable auto-decoder: decoder parameters at the root of the [`VarMap`] (`lin0.weight_g`,
/// …) and the codes at `lat_vecs.weight` `[scenes, latent]`.
pub struct AutoDecoder {
    vars: VarMap,
    decoder: DeepSdfDecoder,
    codes: LatentCodes,
    cfg: AutoDecoderConfig,
    training: bool,
}

/// The terms of one loss evaluation.
#[derive(Debug, Clone)]
pub struct AutoDecoderLoss {
    /// The total (scalar tensor, differentiable).
    pub total: Tensor,
    /// The clamped L1 term.
    pub sdf: f64,
    /// The code regularisation term (0 without regularisation).
    pub regularization: f64,
}

impl AutoDecoder {
    /// A fresh decoder and `num_scenes` codes, all decided by `seed`: each linear layer as
    /// PyTorch initialises it (weight and bias uniform in `±1/√in`; with weight norm
    /// `weight_v` is that weight and `weight_g` its row norms), drawn in layer order through
    /// [`seeded_var_builder`] (candle's own initialiser cannot be seeded on the CPU), and the
    /// codes `N(0, (CodeInitStdDev/√latent)²)` from another stream of the same seed.
    pub fn new(
        cfg: AutoDecoderConfig,
        num_scenes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let vars = VarMap::new();
        let vb = seeded_var_builder(&vars, seed, DType::F32, device);
        let decoder = DeepSdfDecoder::new(cfg.decoder.clone(), vb.clone())?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(CODES_STREAM);
        let codes = LatentCodes::new(
            num_scenes,
            cfg.decoder.latent_size,
            cfg.code_init_std,
            cfg.code_bound,
            &mut rng,
            vb.pp(DEEPSDF_LATENT_PREFIX),
        )?;
        Ok(Self {
            vars,
            decoder,
            codes,
            cfg,
            training: true,
        })
    }

    /// The decoder.
    pub fn decoder(&self) -> &DeepSdfDecoder {
        &self.decoder
    }

    /// The code table.
    pub fn codes(&self) -> &LatentCodes {
        &self.codes
    }

    /// The settings.
    pub fn config(&self) -> &AutoDecoderConfig {
        &self.cfg
    }

    /// DeepSDF's loss on `batch` (dropout active when `train`).
    pub fn loss(&self, batch: &SceneBatch, train: bool) -> Result<AutoDecoderLoss> {
        let codes = self.codes.forward(&batch.scenes)?; // [S, L]
        let (scenes, latent) = codes.dims2()?;
        let rows = batch.xyz.dim(0)?;
        if scenes == 0 || rows % scenes != 0 {
            return Err(DeepSdfError::Invalid(format!(
                "a batch of {scenes} scenes cannot hold {rows} rows"
            )));
        }
        let per_scene = rows / scenes;
        let row_codes = codes
            .unsqueeze(1)?
            .broadcast_as((scenes, per_scene, latent))?
            .reshape((rows, latent))?;
        let d = self.cfg.clamping_distance;
        let pred = self
            .decoder
            .decode(&row_codes, &batch.xyz, train)?
            .clamp(-d, d)?;
        let target = batch.sdf.clamp(-d, d)?;
        let n = rows as f64;
        let sdf = (pred - target)?.abs()?.sum_all()?.affine(1.0 / n, 0.0)?;
        let Some(lambda) = self.cfg.code_regularization else {
            let value = sdf.to_scalar::<f32>()? as f64;
            return Ok(AutoDecoderLoss {
                total: sdf,
                sdf: value,
                regularization: 0.0,
            });
        };
        let ramp = ((batch.epoch + 1) as f64 / REGULARIZATION_RAMP_EPOCHS).min(1.0);
        // Σ over rows of ‖z‖ = per_scene · Σ over scenes of ‖z‖.
        let reg = codes
            .sqr()?
            .sum(1)?
            .sqrt()?
            .sum_all()?
            .affine(lambda * ramp * per_scene as f64 / n, 0.0)?;
        Ok(AutoDecoderLoss {
            sdf: sdf.to_scalar::<f32>()? as f64,
            regularization: reg.to_scalar::<f32>()? as f64,
            total: (sdf + reg)?,
        })
    }
}

impl Model for AutoDecoder {
    type Batch = SceneBatch;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn step(&self, batch: &SceneBatch, rng: &mut ChaCha8Rng) -> vnr_train::Result<StepOutput> {
        self.decoder.reseed_dropout(rng.random());
        let loss = self.loss(batch, self.training).map_err(|e| match e {
            DeepSdfError::Candle(c) => TrainError::Candle(c),
            other => TrainError::Config(other.to_string()),
        })?;
        Ok(StepOutput {
            loss: loss.total,
            metrics: vec![
                ("sdf_l1".into(), loss.sdf),
                ("code_reg".into(), loss.regularization),
            ],
        })
    }
}

/// A DeepSDF experiment: the specs, what they configure, and the training scenes' files.
#[derive(Debug, Clone)]
pub struct DeepSdfExperiment {
    /// The specs as read.
    pub specs: DeepSdfSpecs,
    /// The auto-decoder settings.
    pub config: AutoDecoderConfig,
    /// The trainer settings (epochs, two Adam groups with the step schedules, snapshots).
    pub train: TrainConfig,
    /// `(name, samples file)` of each training scene, in code order.
    pub scenes: Vec<(String, PathBuf)>,
}

/// The trainer steps of DeepSDF's snapshots for `batches` updates per epoch: every
/// `SnapshotFrequency` epochs (as `checkpoint_every`, in steps), and the ends of the
/// `AdditionalSnapshots` epochs that fall within `1..=NumEpochs` and off that period (as
/// `checkpoint_steps`, sorted, without repeats). `train_deep_sdf.py` saves `{epoch}.pth` after
/// the epochs in the union of both lists; epochs outside `1..=NumEpochs` never come.
pub fn snapshot_steps(specs: &DeepSdfSpecs, batches: u64) -> (u64, Vec<u64>) {
    let (frequency, batches) = (specs.snapshot_frequency.max(1), batches.max(1));
    let mut extra: Vec<u64> = specs
        .additional_snapshots
        .iter()
        .filter(|&&epoch| (1..=specs.num_epochs).contains(&epoch) && epoch % frequency != 0)
        .map(|&epoch| epoch.saturating_mul(batches))
        .collect();
    extra.sort_unstable();
    extra.dedup();
    (frequency.saturating_mul(batches), extra)
}

/// A relative path taken from the working directory if it exists there, else from `base`.
fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() || p.exists() {
        p
    } else {
        base.join(p)
    }
}

impl DeepSdfExperiment {
    /// Reads `specs.json`, the split it names and checks every samples file exists. Relative
    /// `DataSource` and `TrainSplit` paths are taken from the working directory, as DeepSDF
    /// does, or else from the specs' directory.
    pub fn load(specs_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(specs_path).map_err(|e| DeepSdfError::File {
            path: specs_path.to_owned(),
            problem: e.to_string(),
        })?;
        let what = specs_path.display().to_string();
        let specs = DeepSdfSpecs::from_json_str(&text).map_err(|e| DeepSdfError::File {
            path: specs_path.to_owned(),
            problem: e.to_string(),
        })?;
        let config =
            AutoDecoderConfig::from_specs(&specs, DeepSdfConfig::from_specs(&text, &what)?)?;
        let base = specs_path.parent().unwrap_or(Path::new("."));
        let missing = |key: &str| DeepSdfError::File {
            path: specs_path.to_owned(),
            problem: format!("{key} is missing"),
        };
        let source = resolve(
            base,
            specs
                .data_source
                .as_deref()
                .ok_or_else(|| missing("DataSource"))?,
        );
        let split = resolve(
            base,
            specs
                .train_split
                .as_deref()
                .ok_or_else(|| missing("TrainSplit"))?,
        );
        let scenes = split_samples(&split, &source)?;
        let mut train = specs.to_train_config()?;
        let batches = (scenes.len() / config.scenes_per_batch) as u64;
        let (every, steps) = snapshot_steps(&specs, batches);
        train.checkpoint_every = Some(every);
        train.checkpoint_steps = steps;
        train.keep_checkpoints = usize::MAX;
        Ok(Self {
            specs,
            config,
            train,
            scenes,
        })
    }

    /// Reads every scene's samples (in parallel) into a [`SceneDataset`].
    pub fn dataset(&self, seed: u64, device: &Device) -> Result<SceneDataset> {
        use rayon::prelude::*;
        let scenes = self
            .scenes
            .par_iter()
            .map(|(_, path)| SceneSamples::read(path))
            .collect::<Result<Vec<_>>>()?;
        SceneDataset::new(
            scenes,
            self.config.scenes_per_batch,
            self.config.samples_per_scene,
            seed,
            device.clone(),
        )
    }
}

/// The samples files of a DeepSDF split JSON `{dataset: {class: [names]}}` under `source`:
/// `source/SdfSamples/dataset/class/name.npz`, or `source/SdfSamples/name.npz` (the layout of
/// `vnr sdf sample`). Names as `dataset/class/name`.
pub fn split_samples(split: &Path, source: &Path) -> Result<Vec<(String, PathBuf)>> {
    let file_error = |path: &Path, problem: String| DeepSdfError::File {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read_to_string(split).map_err(|e| file_error(split, e.to_string()))?;
    type Split =
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;
    let parsed: Split = serde_json::from_str(&text).map_err(|e| {
        file_error(
            split,
            format!("not a split {{dataset: {{class: [names]}}}}: {e}"),
        )
    })?;
    let mut scenes = Vec::new();
    let root = source.join(SAMPLES_DIR);
    for (dataset, classes) in &parsed {
        for (class, names) in classes {
            for name in names {
                let nested = root.join(dataset).join(class).join(format!("{name}.npz"));
                let flat = root.join(format!("{name}.npz"));
                let path = if nested.is_file() {
                    nested
                } else if flat.is_file() {
                    flat
                } else {
                    return Err(file_error(
                        split,
                        format!(
                            "no samples for {dataset}/{class}/{name}: neither {} nor {} exists",
                            nested.display(),
                            flat.display()
                        ),
                    ));
                };
                scenes.push((format!("{dataset}/{class}/{name}"), path));
            }
        }
    }
    if scenes.is_empty() {
        return Err(file_error(split, "the split names no shapes".into()));
    }
    Ok(scenes)
}

/// A trained decoder (frozen: its weights are plain tensors) and the training codes.
#[derive(Debug, Clone)]
pub struct TrainedDecoder {
    /// The decoder.
    pub decoder: DeepSdfDecoder,
    /// The training codes `[scenes, latent]`, when the checkpoint holds them.
    pub codes: Option<Tensor>,
}

/// The `model.safetensors` of `path`: the file itself, a checkpoint folder, or a run directory
/// (its newest checkpoint).
pub fn checkpoint_tensors(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    let direct = path.join(MODEL_TENSORS);
    if direct.is_file() {
        return Ok(direct);
    }
    match latest_checkpoint(path)? {
        Some((_, dir)) => Ok(dir.join(MODEL_TENSORS)),
        None => Err(DeepSdfError::File {
            path: path.to_owned(),
            problem: format!("neither a {MODEL_TENSORS} file, a checkpoint nor a run directory"),
        }),
    }
}

/// The `specs.json` nearest above `path` (a run directory keeps a copy).
pub fn find_specs(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .map(|dir| dir.join(SPECS_FILE))
        .find(|p| p.is_file())
}

impl TrainedDecoder {
    /// Loads the decoder described by `cfg` from a `model.safetensors`.
    pub fn load(cfg: DeepSdfConfig, tensors: &Path, device: &Device) -> Result<Self> {
        let map =
            candle_core::safetensors::load(tensors, device).map_err(|e| DeepSdfError::File {
                path: tensors.to_owned(),
                problem: e.to_string(),
            })?;
        let codes = map.get(&format!("{DEEPSDF_LATENT_PREFIX}.weight")).cloned();
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        let decoder = DeepSdfDecoder::new(cfg, vb).map_err(|e| DeepSdfError::File {
            path: tensors.to_owned(),
            problem: format!("does not hold this decoder: {e}"),
        })?;
        Ok(Self { decoder, codes })
    }

    /// Training code `index` `[latent]`.
    pub fn code(&self, index: usize) -> Result<Tensor> {
        let codes = self
            .codes
            .as_ref()
            .ok_or_else(|| DeepSdfError::Invalid("the checkpoint holds no latent codes".into()))?;
        let n = codes.dim(0)?;
        if index >= n {
            return Err(DeepSdfError::Invalid(format!(
                "code {index} does not exist ({n} codes)"
            )));
        }
        Ok(codes.get(index)?)
    }
}

/// Settings of [`reconstruct_latent`]; `Default` is DeepSDF's `reconstruct.py`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReconstructOptions {
    /// Adam iterations (800).
    pub iterations: usize,
    /// Initial learning rate (5e-3), divided by `decrease_by` (10) at the midpoint.
    pub lr: f64,
    /// Divisor of the learning rate after half the iterations.
    pub decrease_by: f64,
    /// The code starts as `N(0, init_std²)` (0.01).
    pub init_std: f64,
    /// Rows drawn per iteration, half positive, half negative (8,000).
    pub samples: usize,
    /// Clamping distance (0.1).
    pub clamping_distance: f64,
    /// Weight of `mean(z²)` (1e-4); 0 turns it off.
    pub l2_reg: f64,
    /// Seed of the code's initial value and the row draws.
    pub seed: u64,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        Self {
            iterations: 800,
            lr: 5e-3,
            decrease_by: 10.0,
            init_std: 0.01,
            samples: 8000,
            clamping_distance: 0.1,
            l2_reg: 1e-4,
            seed: 0,
        }
    }
}

/// A fitted code and the loss of every iteration.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    /// The code `[latent]`.
    pub latent: Tensor,
    /// Loss per iteration.
    pub losses: Vec<f64>,
}

/// Fits a code to `scene` with the decoder frozen (evaluation mode): Adam on
/// `mean|clamp(f(z, x)) − clamp(s)| + l2_reg·mean(z²)`, as DeepSDF's `reconstruct`.
/// `iterations` must be in `1..=`[`MAX_ITERATIONS`] and `samples` in `2..=`[`MAX_SAMPLES`].
pub fn reconstruct_latent(
    decoder: &DeepSdfDecoder,
    scene: &SceneSamples,
    options: &ReconstructOptions,
) -> Result<Reconstruction> {
    if !(1..=MAX_ITERATIONS).contains(&options.iterations)
        || !(2..=MAX_SAMPLES).contains(&options.samples)
    {
        return Err(DeepSdfError::Invalid(format!(
            "reconstruction needs iterations in 1..={MAX_ITERATIONS} and samples in 2..={MAX_SAMPLES}, got {} and {}",
            options.iterations, options.samples
        )));
    }
    if !(options.lr.is_finite() && options.lr > 0.0 && options.decrease_by > 0.0) {
        return Err(DeepSdfError::Invalid(
            "the learning rate and its divisor must be positive".into(),
        ));
    }
    let device = decoder.device().clone();
    let latent_size = decoder.config().latent_size;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
    // `LatentCodes` with std·√latent gives N(0, std²), DeepSDF's `normal_(0, stat)`.
    let code = LatentCodes::new(
        1,
        latent_size,
        options.init_std * (latent_size as f64).sqrt(),
        None,
        &mut rng,
        vb.pp("latent"),
    )?;
    let schedule = LrSchedule::Step {
        initial: options.lr,
        interval: (options.iterations / 2).max(1) as u64,
        factor: 1.0 / options.decrease_by,
    };
    let groups = param_groups(
        &vars,
        &[GroupConfig {
            name: "latent".into(),
            params: Vec::new(),
            schedule: schedule.clone(),
        }],
    )?;
    let mut adam = Optimizer::new(OptimizerConfig::Adam(AdamConfig::default()), groups)?;
    let d = options.clamping_distance;
    // Grown as used, not reserved from the options.
    let mut losses = Vec::new();
    let mut rows = Vec::new();
    let half = options.samples / 2;
    for it in 0..options.iterations {
        adam.set_lr(0, schedule.lr_at(it as u64));
        rows.clear();
        scene.draw(options.samples, &mut rng, &mut rows);
        let (xyz, sdf) = rows_to_tensors(&rows, &device)?;
        let z = code.weight();
        let pred = decoder
            .decode(&z.broadcast_as((2 * half, latent_size))?, &xyz, false)?
            .clamp(-d, d)?;
        let mut loss = (pred - sdf.clamp(-d, d)?)?.abs()?.mean_all()?;
        if options.l2_reg > 0.0 {
            loss = (loss + z.sqr()?.mean_all()?.affine(options.l2_reg, 0.0)?)?;
        }
        losses.push(loss.to_scalar::<f32>()? as f64);
        adam.step(&loss.backward()?)?;
    }
    Ok(Reconstruction {
        latent: code.weight().get(0)?.detach(),
        losses,
    })
}

/// DeepSDF's `create_mesh` grid: the SDF of `latent` `[latent]` at `resolution³` points evenly
/// spanning `[-1, 1]³` (`x` slowest, `z` fastest), decoded `max_batch` points at a time;
/// `resolution` in `2..=1024`.
pub fn decode_sdf_grid(
    decoder: &DeepSdfDecoder,
    latent: &Tensor,
    resolution: usize,
    max_batch: usize,
) -> Result<Vec<f32>> {
    if !(2..=1024).contains(&resolution) || max_batch == 0 {
        return Err(DeepSdfError::Invalid(format!(
            "grid resolution {resolution} must be in 2..=1024 and the batch positive"
        )));
    }
    let latent_size = decoder.config().latent_size;
    let latent = latent.flatten_all()?.to_dtype(DType::F32)?;
    if latent.dim(0)? != latent_size {
        return Err(DeepSdfError::Invalid(format!(
            "the code has {} values, the decoder takes {latent_size}",
            latent.dim(0)?
        )));
    }
    let device = latent.device().clone();
    let step = 2.0 / (resolution - 1) as f32;
    let total = resolution * resolution * resolution;
    let mut values = Vec::with_capacity(total);
    let mut start = 0;
    while start < total {
        let count = max_batch.min(total - start);
        let xyz: Vec<f32> = (start..start + count)
            .flat_map(|n| {
                let idx = [
                    n / (resolution * resolution),
                    (n / resolution) % resolution,
                    n % resolution,
                ];
                idx.map(|i| -1.0 + i as f32 * step)
            })
            .collect();
        let xyz = Tensor::from_vec(xyz, (count, 3), &device)?;
        let z = latent.unsqueeze(0)?.broadcast_as((count, latent_size))?;
        let sdf = decoder.decode(&z, &xyz, false)?;
        values.extend(sdf.flatten_all()?.to_vec1::<f32>()?);
        start += count;
    }
    Ok(values)
}

/// The zero level set of [`decode_sdf_grid`], in the normalised space `[-1, 1]³`.
pub fn decode_mesh(
    decoder: &DeepSdfDecoder,
    latent: &Tensor,
    resolution: usize,
    max_batch: usize,
) -> Result<TriangleMesh> {
    let values = decode_sdf_grid(decoder, latent, resolution, max_batch)?;
    let voxel = 2.0 / (resolution - 1) as f64;
    let field = DenseField {
        values: &values,
        dims: [resolution; 3],
        origin: [-1.0; 3],
        voxel_size: [voxel; 3],
    };
    Ok(marching_cubes(&field, &MarchingCubesConfig::default())?)
}

//! Typed readers for the original projects' training configs, exactly as those files are:
//! RenderNet's `config_RenderNet*.json` / `config_reconstruction_RenderNet.json` and DeepSDF's
//! `specs.json`. Each converts into a [`TrainConfig`]; the model-specific fields stay on the
//! typed struct. Fields the reader does not know are kept (in `unknown`) rather than refused,
//! and [`unknown_fields`](RenderNetConfig::unknown_fields) lists them so callers can report
//! them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::config::TrainConfig;
use crate::error::{io_at, Result, TrainError};
use crate::optim::{AdamConfig, GroupConfig, OptimizerConfig, SgdConfig};
use crate::schedule::{LrSchedule, ScheduleUnit};

/// Fields of an original config this crate does not interpret, with their JSON values.
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

fn read_original<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    parse_original(&text).map_err(|e| match e {
        TrainError::Parse { message, .. } => TrainError::Parse {
            path: path.to_owned(),
            message,
        },
        other => other,
    })
}

fn parse_original<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| TrainError::Parse {
        path: "<json>".into(),
        message: e.to_string(),
    })
}

/// RenderNet writes booleans as Python strings (`"is_greyscale": "True"`) and tests them with
/// `.lower() == "true"`; accept those and JSON booleans, refuse anything else.
fn python_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrString {
        Bool(bool),
        Text(String),
    }
    match Option::<BoolOrString>::deserialize(d)? {
        None => Ok(None),
        Some(BoolOrString::Bool(b)) => Ok(Some(b)),
        Some(BoolOrString::Text(s)) => match s.to_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "expected \"True\" or \"False\", got {s:?}"
            ))),
        },
    }
}

/// RenderNet's learning-rate decay factor: `tf.train.exponential_decay(e_eta, global_step,
/// decay_steps, 0.96, staircase=True)` in its training scripts.
pub const RENDERNET_DECAY_RATE: f64 = 0.96;
/// RenderNet's Adam β1 (`tf.train.AdamOptimizer(learning_rate, beta1=0.5)`; β2 and ε are
/// TensorFlow's defaults, 0.999 and 1e-8).
pub const RENDERNET_ADAM_BETA1: f64 = 0.5;

/// RenderNet's training config (`config_RenderNet.json`, `config_RenderNet_texture.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RenderNetConfig {
    /// Training images archive.
    pub image_path: Option<String>,
    /// Validation images archive.
    pub image_path_valid: Option<String>,
    /// Folder of binvox models.
    pub model_path: Option<String>,
    /// Folder of normal maps (texture variant).
    pub normal_path: Option<String>,
    /// Folder of textures (texture variant).
    pub texture_path: Option<String>,
    /// Greyscale images with a cross-entropy loss (`"True"`), else RGB with MSE.
    #[serde(default, deserialize_with = "python_bool")]
    pub is_greyscale: Option<bool>,
    /// CUDA device index.
    pub gpu: Option<i64>,
    /// Samples per batch.
    pub batch_size: usize,
    /// Epochs to train.
    pub max_epochs: u64,
    /// Batches loaded per data chunk.
    pub batches_chunk: Option<u64>,
    /// Occupancy threshold of the voxel input.
    pub threshold: f64,
    /// Initial learning rate.
    pub e_eta: f64,
    /// Dropout keep probability (dropout = 1 − keep_prob).
    pub keep_prob: f64,
    /// Steps per learning-rate decay by [`RENDERNET_DECAY_RATE`].
    pub decay_steps: u64,
    /// Name of the saved model.
    pub trained_model_name: Option<String>,
    /// Folder for sample renders.
    pub sample_save: Option<String>,
    /// Seconds between checkpoints (time-based; not mapped to the step-based trainer).
    pub checkpoint_secs: Option<u64>,
    /// Fields not listed above.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl RenderNetConfig {
    /// Reads a RenderNet training config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        read_original(path.as_ref())
    }

    /// Parses a RenderNet training config.
    pub fn from_json_str(text: &str) -> Result<Self> {
        parse_original(text)
    }

    /// Names of the fields this reader does not know.
    pub fn unknown_fields(&self) -> Vec<&str> {
        self.unknown.keys().map(String::as_str).collect()
    }

    /// The original schedule: Adam(β1 0.5) with `e_eta · 0.96^⌊step / decay_steps⌋`, for
    /// `max_epochs` epochs. (TensorFlow's Adam puts ε outside the bias correction, PyTorch's
    /// inside; with ε = 1e-8 the two differ only while the second moment is tiny.)
    pub fn to_train_config(&self) -> Result<TrainConfig> {
        let config = TrainConfig {
            epochs: Some(self.max_epochs),
            batch_size: self.batch_size,
            optimizer: OptimizerConfig::Adam(AdamConfig {
                beta1: RENDERNET_ADAM_BETA1,
                ..AdamConfig::default()
            }),
            groups: vec![GroupConfig {
                name: "all".into(),
                params: Vec::new(),
                schedule: LrSchedule::ExponentialDecay {
                    initial: self.e_eta,
                    decay_steps: self.decay_steps,
                    rate: RENDERNET_DECAY_RATE,
                    staircase: true,
                },
            }],
            schedule_unit: ScheduleUnit::Step,
            ..TrainConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// RenderNet's inverse-rendering config (`config_reconstruction_RenderNet.json`): four plain
/// gradient-descent optimisers over the shape code, pose, texture and light variables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RenderNetReconstructionConfig {
    /// Target albedo image.
    pub target_albedo: Option<String>,
    /// Target normal map.
    pub target_normal: Option<String>,
    /// Light azimuth of the target, degrees.
    pub target_azimuth_light: Option<f64>,
    /// Light elevation of the target, degrees.
    pub target_elevation_light: Option<f64>,
    /// Pretrained RenderNet weights.
    pub weight_dir: Option<String>,
    /// Pretrained shape decoder weights.
    pub weight_dir_decoder: Option<String>,
    /// CUDA device index.
    pub gpu: Option<i64>,
    /// Samples per batch.
    pub batch_size: usize,
    /// Shape code length.
    pub z_dim: usize,
    /// Optimisation steps per outer iteration.
    pub inner_step: u64,
    /// Outer iterations.
    pub max_epochs: u64,
    /// Occupancy threshold.
    pub threshold: f64,
    /// Learning rate of the shape code (`initial_vector` variables).
    pub shape_eta: f64,
    /// Learning rate of the pose (`initial_param` variables).
    pub pose_eta: f64,
    /// Learning rate of the texture (`initial_texture` variables).
    pub tex_eta: f64,
    /// Learning rate of the light (`initial_light` variables).
    pub light_eta: f64,
    /// Dropout keep probability.
    pub keep_prob: f64,
    /// Decay steps (present in the file; the reconstruction script uses constant rates).
    pub decay_steps: Option<u64>,
    /// Name of the saved model.
    pub trained_model_name: Option<String>,
    /// Folder for sample renders.
    pub sample_save: Option<String>,
    /// Seconds between checkpoints.
    pub checkpoint_secs: Option<u64>,
    /// Fields not listed above.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl RenderNetReconstructionConfig {
    /// Reads the reconstruction config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        read_original(path.as_ref())
    }

    /// Parses the reconstruction config.
    pub fn from_json_str(text: &str) -> Result<Self> {
        parse_original(text)
    }

    /// Names of the fields this reader does not know.
    pub fn unknown_fields(&self) -> Vec<&str> {
        self.unknown.keys().map(String::as_str).collect()
    }

    /// Plain SGD with one constant-rate group per variable kind, named `shape`, `pose`,
    /// `texture`, `light` and selecting parameters by the original variable name prefixes
    /// (`initial_vector`, `initial_param`, `initial_texture`, `initial_light`); `max_epochs`
    /// epochs.
    pub fn to_train_config(&self) -> Result<TrainConfig> {
        let group = |name: &str, prefix: &str, lr: f64| GroupConfig {
            name: name.into(),
            params: vec![prefix.into()],
            schedule: LrSchedule::Constant { lr },
        };
        let config = TrainConfig {
            epochs: Some(self.max_epochs),
            batch_size: self.batch_size,
            optimizer: OptimizerConfig::Sgd(SgdConfig::default()),
            groups: vec![
                group("shape", "initial_vector", self.shape_eta),
                group("pose", "initial_param", self.pose_eta),
                group("texture", "initial_texture", self.tex_eta),
                group("light", "initial_light", self.light_eta),
            ],
            ..TrainConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// One entry of DeepSDF's `LearningRateSchedule` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "Type")]
pub enum DeepSdfSchedule {
    /// `Initial · Factor^⌊epoch / Interval⌋`.
    Step {
        /// Initial rate.
        #[serde(rename = "Initial")]
        initial: f64,
        /// Epochs between decays.
        #[serde(rename = "Interval")]
        interval: u64,
        /// Decay factor.
        #[serde(rename = "Factor")]
        factor: f64,
    },
    /// Linear from `Initial` to `Final` over `Length` epochs, then `Final`.
    Warmup {
        /// Rate at epoch 0.
        #[serde(rename = "Initial")]
        initial: f64,
        /// Rate after the warm-up.
        #[serde(rename = "Final")]
        final_lr: f64,
        /// Warm-up epochs.
        #[serde(rename = "Length")]
        length: u64,
    },
    /// A constant rate.
    Constant {
        /// The rate.
        #[serde(rename = "Value")]
        value: f64,
    },
}

impl DeepSdfSchedule {
    /// The equivalent [`LrSchedule`] (counted in epochs from 1, see [`ScheduleUnit::Epoch`]).
    pub fn to_schedule(&self) -> LrSchedule {
        match *self {
            Self::Step {
                initial,
                interval,
                factor,
            } => LrSchedule::Step {
                initial,
                interval,
                factor,
            },
            Self::Warmup {
                initial,
                final_lr,
                length,
            } => LrSchedule::Warmup {
                initial,
                length,
                then: Box::new(LrSchedule::Constant { lr: final_lr }),
            },
            Self::Constant { value } => LrSchedule::Constant { lr: value },
        }
    }
}

/// DeepSDF's `NetworkSpecs`: the keyword arguments of its `Decoder` (defaults as there).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeepSdfNetworkSpecs {
    /// Widths of the hidden layers.
    pub dims: Vec<usize>,
    /// Layers followed by dropout.
    #[serde(default)]
    pub dropout: Option<Vec<usize>>,
    /// Dropout probability.
    #[serde(default)]
    pub dropout_prob: f64,
    /// Layers with (weight or layer) normalisation.
    #[serde(default)]
    pub norm_layers: Vec<usize>,
    /// Layers that receive the latent code (and xyz) again.
    #[serde(default)]
    pub latent_in: Vec<usize>,
    /// Feed xyz to every layer.
    #[serde(default)]
    pub xyz_in_all: Option<bool>,
    /// tanh on the output.
    #[serde(default)]
    pub use_tanh: bool,
    /// Dropout on the latent input.
    #[serde(default)]
    pub latent_dropout: bool,
    /// Weight normalisation on the `norm_layers` (else layer norm).
    #[serde(default)]
    pub weight_norm: bool,
    /// Fields not listed above.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

fn default_true() -> bool {
    true
}
fn default_code_regularization_lambda() -> f64 {
    1e-4
}
fn default_one() -> f64 {
    1.0
}
fn default_batch_split() -> usize {
    1
}

/// `Description` is a list of strings in DeepSDF's examples; a single string is accepted too.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Prefix of the latent-code parameters in DeepSDF conversions (its `lat_vecs` embedding).
pub const DEEPSDF_LATENT_PREFIX: &str = "lat_vecs";

/// DeepSDF's experiment `specs.json` (defaults as in its `train_deep_sdf.py`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeepSdfSpecs {
    /// Free-text description lines.
    #[serde(default, deserialize_with = "one_or_many")]
    pub description: Vec<String>,
    /// Root of the SDF samples.
    pub data_source: Option<String>,
    /// Training split file.
    pub train_split: Option<String>,
    /// Test split file.
    pub test_split: Option<String>,
    /// Decoder module name.
    pub network_arch: Option<String>,
    /// Decoder hyper-parameters.
    pub network_specs: DeepSdfNetworkSpecs,
    /// Latent code length.
    pub code_length: usize,
    /// Epochs to train.
    pub num_epochs: u64,
    /// Epochs between snapshots.
    pub snapshot_frequency: u64,
    /// Extra snapshot epochs.
    #[serde(default)]
    pub additional_snapshots: Vec<u64>,
    /// Schedules: `[decoder, latent codes]`.
    pub learning_rate_schedule: Vec<DeepSdfSchedule>,
    /// SDF samples drawn per shape and batch.
    pub samples_per_scene: usize,
    /// Shapes per batch.
    pub scenes_per_batch: usize,
    /// Loader threads.
    pub data_loader_threads: Option<usize>,
    /// SDF values are clamped to ±this.
    pub clamping_distance: f64,
    /// L2 penalty on the latent codes.
    #[serde(default = "default_true")]
    pub code_regularization: bool,
    /// Weight of the code penalty.
    #[serde(default = "default_code_regularization_lambda")]
    pub code_regularization_lambda: f64,
    /// Max norm of each latent code (`nn.Embedding(max_norm)`).
    pub code_bound: Option<f64>,
    /// Standard deviation of the initial codes (scaled by 1/√CodeLength in DeepSDF).
    #[serde(default = "default_one")]
    pub code_init_std_dev: f64,
    /// Sub-batches per batch (gradient accumulation).
    #[serde(default = "default_batch_split")]
    pub batch_split: usize,
    /// Epochs between log lines.
    pub log_frequency: Option<u64>,
    /// Clip gradients to this norm.
    pub gradient_clip_norm: Option<f64>,
    /// Fields not listed above.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl DeepSdfSpecs {
    /// Reads a `specs.json` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        read_original(path.as_ref())
    }

    /// Parses a `specs.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        parse_original(text)
    }

    /// Names of the unknown fields, of the specs and of `NetworkSpecs` (as
    /// `NetworkSpecs.name`).
    pub fn unknown_fields(&self) -> Vec<String> {
        self.unknown
            .keys()
            .cloned()
            .chain(
                self.network_specs
                    .unknown
                    .keys()
                    .map(|k| format!("NetworkSpecs.{k}")),
            )
            .collect()
    }

    /// DeepSDF's training: Adam (PyTorch defaults) with two groups, `decoder` (every
    /// parameter not under [`DEEPSDF_LATENT_PREFIX`]) on schedule 0 and `latent_codes` on
    /// schedule 1, rates set per epoch (counted from 1); `NumEpochs` epochs of
    /// `ScenesPerBatch` shapes; `GradientClipNorm` if given.
    pub fn to_train_config(&self) -> Result<TrainConfig> {
        let [decoder, latent, ..] = self.learning_rate_schedule.as_slice() else {
            return Err(TrainError::Config(format!(
                "DeepSDF needs two LearningRateSchedule entries (decoder, latent codes), got {}",
                self.learning_rate_schedule.len()
            )));
        };
        let config = TrainConfig {
            epochs: Some(self.num_epochs),
            batch_size: self.scenes_per_batch,
            optimizer: OptimizerConfig::Adam(AdamConfig::default()),
            groups: vec![
                GroupConfig {
                    name: "decoder".into(),
                    params: Vec::new(),
                    schedule: decoder.to_schedule(),
                },
                GroupConfig {
                    name: "latent_codes".into(),
                    params: vec![DEEPSDF_LATENT_PREFIX.into()],
                    schedule: latent.to_schedule(),
                },
            ],
            schedule_unit: ScheduleUnit::Epoch,
            clip_grad_norm: self.gradient_clip_norm,
            ..TrainConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

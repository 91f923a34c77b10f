//! The training loop: steps or epochs, learning-rate schedules, gradient clipping, NaN/Inf
//! stops, validation, atomic checkpoints with exact resume, logs and the loss plot.
//!
//! Resuming is exact: a run interrupted after a checkpoint and resumed from it computes the same
//! losses, bit for bit, as an uninterrupted run. That holds because everything a step depends
//! on is in the checkpoint: the parameters, the optimiser's buffers and step counts, the
//! trainer's random generator (its seed, stream and word position), and the data order (the
//! epoch and how many of its batches were consumed; a [`DataSource`] orders an epoch from its
//! seed and the epoch number alone). Validation draws from its own generator so it never shifts
//! the training stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    checkpoint_dir, latest_checkpoint, load_model, prune_checkpoints, read_json, save_model,
    write_dir_atomically, write_json, MODEL_TENSORS, TRAINER_JSON,
};
use crate::config::TrainConfig;
use crate::data::DataSource;
use crate::error::{io_at, Result, TrainError};
use crate::log::{progress_bar, read_log, JsonLog, LogRecord, Phase, LOG_FILE};
use crate::model::{scalar_value, Model};
use crate::optim::{clip_grads, grad_square_norms, param_groups, Optimizer};
use crate::plot::{write_loss_plot, PlotConfig};
use crate::schedule::ScheduleUnit;

/// File name of the loss plot inside a run directory.
pub const LOSS_PLOT: &str = "loss.png";
/// Stream of the validation generator (the training generator uses stream 0).
const VALIDATION_STREAM: u64 = u64::MAX;

/// The position of a [`ChaCha8Rng`], enough to recreate it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key.
    pub seed: [u8; 32],
    /// Stream number.
    pub stream: u64,
    /// Word position, in decimal (JSON numbers cannot carry 128 bits).
    pub word_pos: String,
}

impl RngState {
    /// Captures `rng`'s position.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// A generator at the captured position.
    pub fn restore(&self) -> Result<ChaCha8Rng> {
        let word_pos: u128 = self.word_pos.parse().map_err(|_| {
            TrainError::Config(format!(
                "RNG word position '{}' is not a number",
                self.word_pos
            ))
        })?;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }
}

/// Where training stands; saved in `trainer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Updates done.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Batches of the current epoch already trained on (the data-order state).
    pub batch_in_epoch: u64,
    /// Wall-clock training seconds, summed over sessions.
    pub seconds: f64,
    /// The trainer's random generator.
    pub rng: RngState,
}

/// The content of `trainer.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerFile {
    state: TrainerState,
    config: TrainConfig,
}

/// What [`Trainer::run`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Updates done in total.
    pub steps: u64,
    /// Epoch reached (0-based; equals `epochs` after an epoch-limited run).
    pub epoch: u64,
    /// Loss of the last training step, if any step ran.
    pub last_loss: Option<f64>,
    /// The last validation pass, if any.
    pub last_validation: Option<LogRecord>,
    /// The checkpoint written at the end.
    pub checkpoint: PathBuf,
}

/// Trains a [`Model`]; owns the model, the optimiser and the run directory's files (`log.jsonl`,
/// `loss.png`, `checkpoints/step-N/`).
pub struct Trainer<M: Model> {
    model: M,
    optimizer: Optimizer,
    config: TrainConfig,
    run_dir: PathBuf,
    state: TrainerState,
    rng: ChaCha8Rng,
    /// The step through which `log.jsonl` and the checkpoints belong to this trainer's run:
    /// the step resumed from, or the last step of a finished [`Trainer::run`]. `None` for a
    /// fresh run, which must not mix with another run's files.
    log_through: Option<u64>,
}

impl<M: Model> Trainer<M> {
    /// A trainer starting from step 0 with the model's current parameters.
    pub fn new(model: M, config: TrainConfig, run_dir: impl Into<PathBuf>) -> Result<Self> {
        config.validate()?;
        let groups = param_groups(model.vars(), &config.groups)?;
        let optimizer = Optimizer::new(config.optimizer.clone(), groups)?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let run_dir = run_dir.into();
        std::fs::create_dir_all(&run_dir).map_err(io_at(&run_dir))?;
        Ok(Self {
            model,
            optimizer,
            state: TrainerState {
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                seconds: 0.0,
                rng: RngState::capture(&rng),
            },
            rng,
            config,
            run_dir,
            log_through: None,
        })
    }

    /// `--resume`: loads the newest checkpoint of the run directory, if there is one, and
    /// returns its step. The configured limits (`steps`, `epochs`, intervals) stay those given
    /// to [`Trainer::new`], so a finished run can be extended.
    pub fn resume_latest(&mut self) -> Result<Option<u64>> {
        match latest_checkpoint(&self.run_dir)? {
            Some((_, dir)) => self.load_checkpoint(&dir).map(Some),
            None => Ok(None),
        }
    }

    /// Loads the checkpoint folder `dir` (parameters, optimiser, trainer state); returns its step.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<u64> {
        let file: TrainerFile = read_json(&dir.join(TRAINER_JSON))?;
        load_model(self.model.vars(), &dir.join(MODEL_TENSORS))?;
        self.optimizer.load(dir)?;
        self.rng = file.state.rng.restore()?;
        self.state = file.state;
        self.log_through = Some(self.state.step);
        Ok(self.state.step)
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Gives the model back.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// Where training stands.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn steps_done(&self) -> bool {
        self.config.steps.is_some_and(|s| self.state.step >= s)
    }

    fn epochs_done(&self) -> bool {
        self.config.epochs.is_some_and(|e| self.state.epoch >= e)
    }

    /// Trains until `steps` or `epochs` is reached, validating and checkpointing at the
    /// configured intervals and at the end, then draws `loss.png`.
    ///
    /// A NaN/Inf loss (or gradient, with `check_gradients`) stops with
    /// [`TrainError::NonFiniteLoss`] / [`TrainError::NonFiniteGradient`] before any parameter
    /// changes; the checkpoints already written are left as they are.
    ///
    /// A fresh trainer (not resumed) refuses a run directory that already holds checkpoints.
    pub fn run<D: DataSource<Batch = M::Batch>>(&mut self, data: &D) -> Result<RunSummary> {
        if self.log_through.is_none() && latest_checkpoint(&self.run_dir)?.is_some() {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints of another run: resume it or use a new directory",
                self.run_dir.display()
            )));
        }
        let log_path = self.run_dir.join(LOG_FILE);
        let mut log = JsonLog::open(&log_path, self.log_through)?;
        let session_start = Instant::now();
        let seconds_before = self.state.seconds;
        let bar = progress_bar(self.config.steps, self.state.step, self.config.progress);
        let mut last_loss = None;
        let mut last_validation = None;
        let mut last_checkpoint = self.log_through;
        while !self.steps_done() && !self.epochs_done() {
            let mut batches = data.epoch(self.state.epoch, self.state.batch_in_epoch)?;
            let mut any = false;
            while !self.steps_done() {
                let Some(batch) = batches.next() else { break };
                any = true;
                self.state.seconds = seconds_before + session_start.elapsed().as_secs_f64();
                let record = self.train_step(&batch?)?;
                last_loss = Some(record.loss);
                log.write(&record)?;
                bar.set_position(self.state.step);
                bar.set_message(format!("loss {:.4e}", record.loss));
                let step = self.state.step;
                if self.config.validate_every.is_some_and(|n| step % n == 0) {
                    last_validation = self.validate(data, &mut log)?.or(last_validation);
                }
                if self.config.checkpoint_every.is_some_and(|n| step % n == 0)
                    || self.config.checkpoint_steps.contains(&step)
                {
                    self.save_checkpoint()?;
                    last_checkpoint = Some(step);
                }
            }
            if self.steps_done() {
                break;
            }
            if !any && self.state.batch_in_epoch == 0 {
                return Err(TrainError::Config(format!(
                    "the data source yielded no training batch in epoch {}",
                    self.state.epoch
                )));
            }
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
        }
        self.state.seconds = seconds_before + session_start.elapsed().as_secs_f64();
        let validated_now = last_validation
            .as_ref()
            .is_some_and(|r: &LogRecord| r.step == self.state.step);
        if self.config.validate_every.is_some() && !validated_now {
            last_validation = self.validate(data, &mut log)?.or(last_validation);
        }
        let checkpoint = checkpoint_dir(&self.run_dir, self.state.step);
        if last_checkpoint != Some(self.state.step) || !checkpoint.is_dir() {
            self.save_checkpoint()?;
        }
        self.log_through = Some(self.state.step);
        bar.finish_and_clear();
        let plot = PlotConfig {
            log_scale: self.config.plot_log_scale,
            ..PlotConfig::default()
        };
        write_loss_plot(&read_log(&log_path)?, &plot, &self.run_dir.join(LOSS_PLOT))?;
        Ok(RunSummary {
            steps: self.state.step,
            epoch: self.state.epoch,
            last_loss,
            last_validation,
            checkpoint,
        })
    }

    /// Learning rate of every group by name, as currently set.
    fn learning_rates(&self) -> BTreeMap<String, f64> {
        self.optimizer
            .groups()
            .iter()
            .map(|g| (g.name.clone(), g.lr))
            .collect()
    }

    /// One update on `batch`.
    fn train_step(&mut self, batch: &M::Batch) -> Result<LogRecord> {
        let t = match self.config.schedule_unit {
            ScheduleUnit::Step => self.state.step,
            ScheduleUnit::Epoch => self.state.epoch + 1,
        };
        for (i, group) in self.config.groups.iter().enumerate() {
            self.optimizer.set_lr(i, group.schedule.lr_at(t));
        }
        self.model.set_training(true);
        let out = self.model.step(batch, &mut self.rng)?;
        let loss = scalar_value(&out.loss)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step,
                value: loss,
            });
        }
        let mut grads = out.loss.backward()?;
        if self.config.check_gradients || self.config.clip_grad_norm.is_some() {
            let norms = grad_square_norms(&grads, self.optimizer.params())?;
            if self.config.check_gradients {
                if let Some((name, _)) = norms
                    .iter()
                    .find(|(_, n)| n.is_some_and(|v| !v.is_finite()))
                {
                    return Err(TrainError::NonFiniteGradient {
                        step: self.state.step,
                        name: name.to_string(),
                    });
                }
            }
            if let Some(max_norm) = self.config.clip_grad_norm {
                let total = norms.iter().filter_map(|(_, n)| *n).sum::<f64>().sqrt();
                clip_grads(&mut grads, self.optimizer.params(), total, max_norm)?;
            }
        }
        self.optimizer.step(&grads)?;
        self.state.step += 1;
        self.state.batch_in_epoch += 1;
        Ok(LogRecord {
            phase: Phase::Train,
            step: self.state.step,
            epoch: self.state.epoch,
            loss,
            metrics: out.metrics.into_iter().collect(),
            lr: self.learning_rates(),
            seconds: self.state.seconds,
        })
    }

    /// Mean loss and metrics over the validation batches (`None` when there are none), logged.
    fn validate<D: DataSource<Batch = M::Batch>>(
        &mut self,
        data: &D,
        log: &mut JsonLog,
    ) -> Result<Option<LogRecord>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(VALIDATION_STREAM);
        self.model.set_training(false);
        let mut loss_sum = 0.0;
        let mut metric_sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut batches = 0usize;
        let mut outcome = Ok(());
        for batch in data.validation()? {
            let out = match batch.and_then(|b| self.model.step(&b, &mut rng)) {
                Ok(out) => out,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            loss_sum += scalar_value(&out.loss)?;
            for (name, value) in out.metrics {
                *metric_sums.entry(name).or_default() += value;
            }
            batches += 1;
        }
        self.model.set_training(true);
        outcome?;
        if batches == 0 {
            return Ok(None);
        }
        let loss = loss_sum / batches as f64;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step,
                value: loss,
            });
        }
        let record = LogRecord {
            phase: Phase::Validation,
            step: self.state.step,
            epoch: self.state.epoch,
            loss,
            metrics: metric_sums
                .into_iter()
                .map(|(k, v)| (k, v / batches as f64))
                .collect(),
            lr: self.learning_rates(),
            seconds: self.state.seconds,
        };
        log.write(&record)?;
        Ok(Some(record))
    }

    /// Writes `checkpoints/step-N/` atomically, then removes checkpoints beyond
    /// `keep_checkpoints`.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        self.state.rng = RngState::capture(&self.rng);
        let dir = checkpoint_dir(&self.run_dir, self.state.step);
        let file = TrainerFile {
            state: self.state.clone(),
            config: self.config.clone(),
        };
        write_dir_atomically(&dir, |tmp| {
            save_model(self.model.vars(), &tmp.join(MODEL_TENSORS))?;
            self.optimizer.save(tmp)?;
            write_json(&tmp.join(TRAINER_JSON), &file)
        })?;
        prune_checkpoints(&self.run_dir, self.config.keep_checkpoints)?;
        Ok(dir)
    }
}

//! [`TrainConfig`]: everything the training loop needs, readable from TOML or JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_at, Result, TrainError};
use crate::optim::{GroupConfig, OptimizerConfig};
use crate::schedule::{LrSchedule, ScheduleUnit};

/// Training settings. Every field has a default (`Default`), but at least one of `steps` and
/// `epochs` must be set; with both, training stops at whichever comes first.
///
/// ```toml
/// steps = 10000
/// seed = 7
/// clip_grad_norm = 1.0
/// validate_every = 500
/// checkpoint_every = 1000
/// optimizer = { type = "adam", beta1 = 0.5 }
/// [[groups]]
/// name = "all"
/// schedule = { type = "exponential_decay", initial = 1e-4, decay_steps = 1000, rate = 0.96, staircase = true }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Stop after this many updates.
    pub steps: Option<u64>,
    /// Stop after this many passes over the training data.
    pub epochs: Option<u64>,
    /// Samples per batch, for whoever builds the data source (the loop itself takes the
    /// batches it is given).
    pub batch_size: usize,
    /// Optimiser and its hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// Parameter groups, each with its learning rate schedule.
    pub groups: Vec<GroupConfig>,
    /// What the schedules' counter counts.
    pub schedule_unit: ScheduleUnit,
    /// Clip gradients to this global L2 norm (`torch.nn.utils.clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// Stop on NaN/Inf gradients too (costs one reduction per parameter and step; the loss is
    /// always checked).
    pub check_gradients: bool,
    /// Run the validation split every this many steps (and at the end).
    pub validate_every: Option<u64>,
    /// Write a checkpoint every this many steps (one is always written at the end).
    pub checkpoint_every: Option<u64>,
    /// Also write a checkpoint after each of these steps (DeepSDF's `AdditionalSnapshots`).
    pub checkpoint_steps: Vec<u64>,
    /// Checkpoints kept in the run directory (at least 1).
    pub keep_checkpoints: usize,
    /// Seed of the trainer's random generator (dropout, sampling inside the model).
    pub seed: u64,
    /// Show a progress bar (only ever drawn on a terminal).
    pub progress: bool,
    /// Draw the loss plot with a logarithmic loss axis.
    pub plot_log_scale: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: None,
            epochs: None,
            batch_size: 32,
            optimizer: OptimizerConfig::default(),
            groups: vec![GroupConfig {
                name: "all".into(),
                params: Vec::new(),
                schedule: LrSchedule::Constant { lr: 1e-3 },
            }],
            schedule_unit: ScheduleUnit::Step,
            clip_grad_norm: None,
            check_gradients: true,
            validate_every: None,
            checkpoint_every: None,
            checkpoint_steps: Vec::new(),
            keep_checkpoints: 2,
            seed: 0,
            progress: true,
            plot_log_scale: false,
        }
    }
}

impl TrainConfig {
    /// Parses TOML and validates.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| TrainError::Parse {
            path: "<toml>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses JSON and validates.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| TrainError::Parse {
            path: "<json>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file (by extension).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        let parsed = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::from_toml_str(&text),
            Some("json") => Self::from_json_str(&text),
            _ => {
                return Err(TrainError::Parse {
                    path: path.to_owned(),
                    message: "expected a .toml or .json file".into(),
                })
            }
        };
        parsed.map_err(|e| match e {
            TrainError::Parse { message, .. } => TrainError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_none() && self.epochs.is_none() {
            return Err(TrainError::Config("set `steps` or `epochs`".into()));
        }
        if self.batch_size == 0 {
            return Err(TrainError::Config("batch_size must be at least 1".into()));
        }
        if self.groups.is_empty() {
            return Err(TrainError::Config("at least one parameter group".into()));
        }
        if let Some(clip) = self.clip_grad_norm {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(TrainError::Config(format!(
                    "clip_grad_norm must be finite and > 0, got {clip}"
                )));
            }
        }
        if self.validate_every == Some(0) || self.checkpoint_every == Some(0) {
            return Err(TrainError::Config(
                "validate_every and checkpoint_every must be at least 1".into(),
            ));
        }
        self.optimizer.validate()?;
        for g in &self.groups {
            g.schedule.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, SgdConfig};

    #[test]
    fn toml_and_json_give_the_same_config() {
        let toml_text = r#"
            steps = 100
            seed = 9
            clip_grad_norm = 1.0
            checkpoint_every = 10
            optimizer = { type = "sgd", momentum = 0.9, nesterov = true }
            [[groups]]
            name = "decoder"
            schedule = { type = "step", initial = 5e-4, interval = 500, factor = 0.5 }
            [[groups]]
            name = "latent"
            params = ["lat_vecs"]
            schedule = { type = "constant", lr = 1e-3 }
        "#;
        let json_text = r#"{
            "steps": 100, "seed": 9, "clip_grad_norm": 1.0, "checkpoint_every": 10,
            "optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": true},
            "groups": [
              {"name": "decoder", "schedule": {"type": "step", "initial": 5e-4, "interval": 500, "factor": 0.5}},
              {"name": "latent", "params": ["lat_vecs"], "schedule": {"type": "constant", "lr": 1e-3}}
            ]}"#;
        let a = TrainConfig::from_toml_str(toml_text).unwrap();
        let b = TrainConfig::from_json_str(json_text).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.optimizer,
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                ..Default::default()
            })
        );
        assert_eq!(a.keep_checkpoints, 2);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        assert!(TrainConfig::from_toml_str("seed = 1").is_err());
        assert!(TrainConfig::from_toml_str("steps = 1\nunknown_key = 3").is_err());
        let nesterov = "steps = 1\noptimizer = { type = \"sgd\", nesterov = true }";
        assert!(TrainConfig::from_toml_str(nesterov).is_err());
        let betas = "steps = 1\noptimizer = { type = \"adamw\", beta1 = 1.0 }";
        assert!(TrainConfig::from_toml_str(betas).is_err());
        let adam = TrainConfig::from_toml_str("epochs = 2\noptimizer = { type = \"adamw\" }");
        assert_eq!(
            adam.unwrap().optimizer,
            OptimizerConfig::AdamW(AdamConfig::default())
        );
    }
}

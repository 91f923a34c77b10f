//! Learning-rate schedules: a pure function from a counter (steps or epochs, see
//! [`ScheduleUnit`]) to a learning rate.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What a schedule's counter `t` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleUnit {
    /// Updates done before this one: 0 for the first update, like TensorFlow's `global_step`.
    #[default]
    Step,
    /// The number of the epoch being trained, counted from 1, like DeepSDF's
    /// `adjust_learning_rate(lr_schedules, optimizer, epoch)` (its loop starts at epoch 1).
    Epoch,
}

/// A learning rate as a function of a counter `t` (see [`ScheduleUnit`]).
///
/// Serialised with a `type` tag, e.g. TOML
/// `schedule = { type = "step", initial = 5e-4, interval = 500, factor = 0.5 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `lr` at every `t`.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// `initial · factor^⌊t / interval⌋` (DeepSDF's `StepLearningRateSchedule`).
    Step {
        /// Rate at `t = 0`.
        initial: f64,
        /// Counter values between two decays (at least 1).
        interval: u64,
        /// Multiplier applied at each decay.
        factor: f64,
    },
    /// `initial · rate^(t / decay_steps)`, with the exponent floored when `staircase`
    /// (TensorFlow's `tf.train.exponential_decay`; RenderNet uses `staircase=True`, rate 0.96).
    ExponentialDecay {
        /// Rate at `t = 0`.
        initial: f64,
        /// Counter values per factor of `rate` (at least 1).
        decay_steps: u64,
        /// Decay factor per `decay_steps`.
        rate: f64,
        /// Floor the exponent (decay in steps instead of continuously).
        #[serde(default)]
        staircase: bool,
    },
    /// Linear from `initial` at `t = 0` to `then`'s value at `t = length`, then `then` (which
    /// sees the absolute counter, so its own decays are not shifted by the warm-up). With
    /// `then = Constant { lr: final }` this is DeepSDF's `WarmupLearningRateSchedule`.
    Warmup {
        /// Rate at `t = 0`.
        initial: f64,
        /// Counter values the warm-up lasts (0 behaves as 1, as in DeepSDF).
        length: u64,
        /// The schedule after the warm-up.
        then: Box<LrSchedule>,
    },
}

impl LrSchedule {
    /// The learning rate at counter value `t`.
    pub fn lr_at(&self, t: u64) -> f64 {
        match self {
            Self::Constant { lr } => *lr,
            Self::Step {
                initial,
                interval,
                factor,
            } => initial * factor.powf((t / (*interval).max(1)) as f64),
            Self::ExponentialDecay {
                initial,
                decay_steps,
                rate,
                staircase,
            } => {
                let steps = (*decay_steps).max(1);
                let exponent = if *staircase {
                    (t / steps) as f64
                } else {
                    t as f64 / steps as f64
                };
                initial * rate.powf(exponent)
            }
            Self::Warmup {
                initial,
                length,
                then,
            } => {
                let length = (*length).max(1);
                if t >= length {
                    then.lr_at(t)
                } else {
                    let target = then.lr_at(length);
                    initial + (target - initial) * t as f64 / length as f64
                }
            }
        }
    }

    /// Checks the parameters: finite, non-negative rates, positive intervals.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(TrainError::Config(format!("schedule {self:?}: {what}")));
        let rate_ok = |v: f64| v.is_finite() && v >= 0.0;
        match self {
            Self::Constant { lr } if !rate_ok(*lr) => bad("lr must be finite and >= 0"),
            Self::Step {
                initial,
                interval,
                factor,
            } => {
                if !rate_ok(*initial) || !rate_ok(*factor) {
                    bad("initial and factor must be finite and >= 0")
                } else if *interval == 0 {
                    bad("interval must be at least 1")
                } else {
                    Ok(())
                }
            }
            Self::ExponentialDecay {
                initial,
                decay_steps,
                rate,
                ..
            } => {
                if !rate_ok(*initial) || !rate_ok(*rate) {
                    bad("initial and rate must be finite and >= 0")
                } else if *decay_steps == 0 {
                    bad("decay_steps must be at least 1")
                } else {
                    Ok(())
                }
            }
            Self::Warmup { initial, then, .. } => {
                if !rate_ok(*initial) {
                    bad("initial must be finite and >= 0")
                } else {
                    then.validate()
                }
            }
            Self::Constant { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_halves_every_interval() {
        let s = LrSchedule::Step {
            initial: 5e-4,
            interval: 500,
            factor: 0.5,
        };
        assert_eq!(s.lr_at(0), 5e-4);
        assert_eq!(s.lr_at(499), 5e-4);
        assert_eq!(s.lr_at(500), 2.5e-4);
        assert_eq!(s.lr_at(1999), 5e-4 * 0.125);
    }

    #[test]
    fn staircase_exponential_decay_matches_tensorflow() {
        let s = LrSchedule::ExponentialDecay {
            initial: 1e-5,
            decay_steps: 100,
            rate: 0.96,
            staircase: true,
        };
        assert_eq!(s.lr_at(99), 1e-5);
        assert_eq!(s.lr_at(100), 1e-5 * 0.96);
        assert_eq!(s.lr_at(250), 1e-5 * 0.96f64.powf(2.0));
        let smooth = LrSchedule::ExponentialDecay {
            initial: 1.0,
            decay_steps: 100,
            rate: 0.5,
            staircase: false,
        };
        assert!((smooth.lr_at(50) - 0.5f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn warmup_is_linear_then_hands_over() {
        // DeepSDF's Warmup(initial 0, final 1e-3, length 10).
        let s = LrSchedule::Warmup {
            initial: 0.0,
            length: 10,
            then: Box::new(LrSchedule::Constant { lr: 1e-3 }),
        };
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(5) - 5e-4).abs() < 1e-18);
        assert_eq!(s.lr_at(10), 1e-3);
        assert_eq!(s.lr_at(1000), 1e-3);
        // The wrapped schedule keeps its absolute counter.
        let stepped = LrSchedule::Warmup {
            initial: 0.0,
            length: 4,
            then: Box::new(LrSchedule::Step {
                initial: 1.0,
                interval: 10,
                factor: 0.1,
            }),
        };
        assert_eq!(stepped.lr_at(2), 0.5);
        assert_eq!(stepped.lr_at(9), 1.0);
        assert!((stepped.lr_at(10) - 0.1).abs() < 1e-16);
    }

    #[test]
    fn schedules_read_from_toml_and_reject_zero_intervals() {
        #[derive(Deserialize)]
        struct Holder {
            schedule: LrSchedule,
        }
        let h: Holder = toml::from_str(
            "schedule = { type = \"warmup\", initial = 0.0, length = 5, \
             then = { type = \"constant\", lr = 0.1 } }",
        )
        .unwrap();
        assert_eq!(h.schedule.lr_at(5), 0.1);
        let zero = LrSchedule::Step {
            initial: 1.0,
            interval: 0,
            factor: 0.5,
        };
        assert!(zero.validate().is_err());
        assert!(LrSchedule::Constant { lr: f64::NAN }.validate().is_err());
    }
}

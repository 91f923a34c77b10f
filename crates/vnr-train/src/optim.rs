//! Optimisers with PyTorch's update formulas (SGD, Adam, AdamW, RMSProp), parameter groups with
//! their own learning rate, and state that is saved and restored by parameter name.
//!
//! Each update follows the single-tensor code path of `torch.optim` (the one PyTorch takes for
//! CPU tensors), operation by operation, in the parameter's dtype: only the order of rounding
//! inside fused kernels (PyTorch's vectorised `lerp` uses a fused multiply-add) can differ in
//! the last bit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vnr_ops::dispatch::Float;

use crate::checkpoint::{read_json, read_safetensors, write_json, write_safetensors};
use crate::error::{Result, TrainError};
use crate::schedule::LrSchedule;

/// `torch.optim.SGD` hyper-parameters (without the learning rate, which comes from the group's
/// schedule). `Default` is PyTorch's: no momentum, no dampening, no Nesterov, no weight decay.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum factor (0 disables the buffer).
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer.
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

/// `torch.optim.Adam` / `AdamW` hyper-parameters. `Default` is PyTorch's: β = (0.9, 0.999),
/// eps 1e-8, weight decay 0 for Adam and 0.01 for AdamW (when `weight_decay` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay; `None` takes PyTorch's default for the variant.
    pub weight_decay: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: None,
        }
    }
}

impl AdamConfig {
    /// The weight decay in effect: the configured one, or PyTorch's default for the variant
    /// (0.01 for AdamW, whose decay is `decoupled`, 0 for Adam).
    fn effective_weight_decay(&self, decoupled: bool) -> f64 {
        self.weight_decay
            .unwrap_or(if decoupled { 0.01 } else { 0.0 })
    }
}

/// `torch.optim.RMSprop` hyper-parameters. `Default` is PyTorch's: alpha 0.99, eps 1e-8, no
/// momentum, not centered, no weight decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsPropConfig {
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Momentum factor (0 disables the buffer).
    pub momentum: f64,
    /// Normalise by the gradient's estimated variance instead of its second moment.
    pub centered: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }
}

/// Which optimiser, with its hyper-parameters. Serialised with a `type` tag:
/// `{ type = "adam", beta1 = 0.5 }`, `"sgd"`, `"adamw"`, `"rmsprop"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Stochastic gradient descent with optional (Nesterov) momentum.
    Sgd(SgdConfig),
    /// Adam, weight decay added to the gradient (L2).
    Adam(AdamConfig),
    /// AdamW: Adam with weight decay applied to the parameter (decoupled).
    AdamW(AdamConfig),
    /// RMSProp.
    RmsProp(RmsPropConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::Adam(AdamConfig::default())
    }
}

impl OptimizerConfig {
    /// Checks ranges the way `torch.optim` constructors do.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(TrainError::Config(format!("optimizer {self:?}: {what}")));
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        match self {
            Self::Sgd(c) => {
                if !non_negative(c.momentum) || !non_negative(c.weight_decay) {
                    return bad("momentum and weight_decay must be finite and >= 0");
                }
                if !c.dampening.is_finite() {
                    return bad("dampening must be finite");
                }
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return bad("Nesterov momentum requires a momentum and zero dampening");
                }
            }
            Self::Adam(c) | Self::AdamW(c) => {
                if !(0.0..1.0).contains(&c.beta1) || !(0.0..1.0).contains(&c.beta2) {
                    return bad("beta1 and beta2 must be in [0, 1)");
                }
                if !non_negative(c.eps) || !c.weight_decay.is_none_or(non_negative) {
                    return bad("eps and weight_decay must be finite and >= 0");
                }
            }
            Self::RmsProp(c) => {
                if !non_negative(c.alpha)
                    || !non_negative(c.eps)
                    || !non_negative(c.momentum)
                    || !non_negative(c.weight_decay)
                {
                    return bad("alpha, eps, momentum and weight_decay must be finite and >= 0");
                }
            }
        }
        Ok(())
    }
}

/// Which parameters a group holds and how its learning rate evolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group name (in logs and `optimizer.json`).
    pub name: String,
    /// Name prefixes of its parameters; empty means "every parameter no other group claims".
    /// A parameter joins the first group with a matching prefix.
    #[serde(default)]
    pub params: Vec<String>,
    /// The group's learning rate schedule.
    pub schedule: LrSchedule,
}

/// A group of named parameters sharing a learning rate.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Group name.
    pub name: String,
    /// Current learning rate (set from the schedule before each update).
    pub lr: f64,
    /// `(name, variable)` pairs, sorted by name.
    pub params: Vec<(String, Var)>,
}

/// Splits the variables of `vars` into groups per [`GroupConfig`]; the learning rates start at
/// each schedule's value at 0. Every parameter must land in exactly one group, and every group
/// must get at least one parameter.
pub fn param_groups(vars: &VarMap, configs: &[GroupConfig]) -> Result<Vec<ParamGroup>> {
    let all: BTreeMap<String, Var> = vars
        .data()
        .lock()
        .map_err(|_| TrainError::Config("the model's VarMap lock is poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if configs.is_empty() {
        return Err(TrainError::Config(
            "at least one parameter group is needed".into(),
        ));
    }
    let mut groups: Vec<ParamGroup> = configs
        .iter()
        .map(|c| ParamGroup {
            name: c.name.clone(),
            lr: c.schedule.lr_at(0),
            params: Vec::new(),
        })
        .collect();
    let catch_all = configs.iter().position(|c| c.params.is_empty());
    for (name, var) in all {
        let by_prefix = configs
            .iter()
            .position(|c| c.params.iter().any(|p| name.starts_with(p.as_str())));
        let Some(group) = by_prefix.or(catch_all) else {
            return Err(TrainError::Config(format!(
                "parameter '{name}' matches no group's prefixes and no group catches the rest"
            )));
        };
        groups[group].params.push((name, var));
    }
    if let Some(empty) = groups.iter().find(|g| g.params.is_empty()) {
        return Err(TrainError::Config(format!(
            "parameter group '{}' has no parameters",
            empty.name
        )));
    }
    Ok(groups)
}

/// Per-parameter state: the update count and PyTorch's named buffers (`momentum_buffer`,
/// `exp_avg`, `exp_avg_sq`, `square_avg`, `grad_avg`).
#[derive(Debug, Clone, Default)]
struct ParamState {
    step: u64,
    buffers: BTreeMap<String, Tensor>,
}

impl ParamState {
    /// The buffer `name`, zero-initialised like `p` on first use.
    fn zeroed(&mut self, name: &str, p: &Tensor) -> Result<Tensor> {
        if let Some(b) = self.buffers.get(name) {
            return Ok(b.clone());
        }
        Ok(p.zeros_like()?)
    }
}

/// What `optimizer.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedOptimizer {
    config: OptimizerConfig,
    groups: Vec<SavedGroup>,
    /// Update count per parameter name.
    steps: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedGroup {
    name: String,
    lr: f64,
    params: Vec<String>,
}

/// An optimiser over named parameter groups.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    groups: Vec<ParamGroup>,
    state: BTreeMap<String, ParamState>,
}

/// File names inside a checkpoint.
pub const OPTIMIZER_TENSORS: &str = "optimizer.safetensors";
/// See [`OPTIMIZER_TENSORS`].
pub const OPTIMIZER_JSON: &str = "optimizer.json";

impl Optimizer {
    /// An optimiser with fresh state. Parameter names must be unique across groups.
    pub fn new(config: OptimizerConfig, groups: Vec<ParamGroup>) -> Result<Self> {
        config.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for (name, _) in groups.iter().flat_map(|g| &g.params) {
            if !seen.insert(name.as_str()) {
                return Err(TrainError::Config(format!(
                    "parameter '{name}' is in two groups"
                )));
            }
        }
        Ok(Self {
            config,
            groups,
            state: BTreeMap::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Sets group `group`'s learning rate (out of range: no effect and `false`).
    pub fn set_lr(&mut self, group: usize, lr: f64) -> bool {
        match self.groups.get_mut(group) {
            Some(g) => {
                g.lr = lr;
                true
            }
            None => false,
        }
    }

    /// Every parameter, sorted by group then name.
    pub fn params(&self) -> impl Iterator<Item = &(String, Var)> {
        self.groups.iter().flat_map(|g| &g.params)
    }

    /// Updates count of parameter `name` (0 before its first update).
    pub fn param_steps(&self, name: &str) -> u64 {
        self.state.get(name).map_or(0, |s| s.step)
    }

    /// One update of every parameter that has a gradient in `grads` (parameters without one are
    /// left alone and their state does not advance, as in PyTorch).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for group in &self.groups {
            for (name, var) in &group.params {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let state = self.state.entry(name.clone()).or_default();
                state.step += 1;
                let p = var.as_tensor().detach();
                let grad = grad.detach();
                let updated = match &self.config {
                    OptimizerConfig::Sgd(c) => sgd_update(c, group.lr, &p, grad, state)?,
                    OptimizerConfig::Adam(c) => adam_update(c, false, group.lr, p, grad, state)?,
                    OptimizerConfig::AdamW(c) => adam_update(c, true, group.lr, p, grad, state)?,
                    OptimizerConfig::RmsProp(c) => rmsprop_update(c, group.lr, &p, grad, state)?,
                };
                var.set(&updated)?;
            }
        }
        Ok(())
    }

    /// Writes `optimizer.safetensors` (buffers, keyed `PARAM/BUFFER`) and `optimizer.json`
    /// (hyper-parameters, groups, update counts) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        let mut steps = BTreeMap::new();
        for (name, state) in &self.state {
            steps.insert(name.clone(), state.step);
            for (buffer, t) in &state.buffers {
                tensors.insert(format!("{name}/{buffer}"), t.clone());
            }
        }
        write_safetensors(&dir.join(OPTIMIZER_TENSORS), &tensors)?;
        let saved = SavedOptimizer {
            config: self.config.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| SavedGroup {
                    name: g.name.clone(),
                    lr: g.lr,
                    params: g.params.iter().map(|(n, _)| n.clone()).collect(),
                })
                .collect(),
            steps,
        };
        write_json(&dir.join(OPTIMIZER_JSON), &saved)
    }

    /// Restores state saved by [`Optimizer::save`]. The saved hyper-parameters and groups must
    /// equal this optimiser's, and every buffer must match its parameter's shape and dtype.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let json_path = dir.join(OPTIMIZER_JSON);
        let saved: SavedOptimizer = read_json(&json_path)?;
        let mismatch = |message: String| TrainError::Checkpoint {
            path: json_path.clone(),
            message,
        };
        // Compare after the same JSON round trip the saved value went through, so float
        // parsing cannot make equal settings differ.
        let configured: OptimizerConfig = serde_json::to_string(&self.config)
            .and_then(|text| serde_json::from_str(&text))
            .map_err(|e| mismatch(format!("optimizer settings do not serialise: {e}")))?;
        if saved.config != configured {
            return Err(mismatch(format!(
                "saved optimizer {:?} differs from the configured {:?}",
                saved.config, self.config
            )));
        }
        let layout = |groups: &[ParamGroup]| -> Vec<(String, Vec<String>)> {
            groups
                .iter()
                .map(|g| {
                    (
                        g.name.clone(),
                        g.params.iter().map(|(n, _)| n.clone()).collect(),
                    )
                })
                .collect()
        };
        let saved_layout: Vec<(String, Vec<String>)> = saved
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.params.clone()))
            .collect();
        if saved_layout != layout(&self.groups) {
            return Err(mismatch(
                "saved parameter groups differ from the model's (names or membership)".into(),
            ));
        }
        let tensor_path = dir.join(OPTIMIZER_TENSORS);
        let device = self
            .params()
            .next()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut tensors = read_safetensors(&tensor_path, &device)?;
        let params: BTreeMap<&str, &Var> = self.params().map(|(n, v)| (n.as_str(), v)).collect();
        let mut state: BTreeMap<String, ParamState> = BTreeMap::new();
        for (name, step) in saved.steps {
            if !params.contains_key(name.as_str()) {
                return Err(mismatch(format!("state for unknown parameter '{name}'")));
            }
            state.insert(
                name,
                ParamState {
                    step,
                    buffers: BTreeMap::new(),
                },
            );
        }
        let keys: Vec<String> = tensors.keys().cloned().collect();
        for key in keys {
            let bad = |message: String| TrainError::Checkpoint {
                path: tensor_path.clone(),
                message,
            };
            let (param, buffer) = key
                .rsplit_once('/')
                .ok_or_else(|| bad(format!("tensor '{key}' is not named PARAM/BUFFER")))?;
            let var = params
                .get(param)
                .ok_or_else(|| bad(format!("buffer '{key}' of an unknown parameter")))?;
            let t = tensors
                .remove(&key)
                .ok_or_else(|| bad(format!("tensor '{key}' vanished")))?;
            if t.dims() != var.dims() || t.dtype() != var.dtype() {
                return Err(bad(format!(
                    "buffer '{key}' is {:?} {:?}, its parameter {:?} {:?}",
                    t.dtype(),
                    t.dims(),
                    var.dtype(),
                    var.dims()
                )));
            }
            let entry = state
                .get_mut(param)
                .ok_or_else(|| bad(format!("buffer '{key}' of a parameter with no step count")))?;
            entry.buffers.insert(buffer.to_string(), t);
        }
        for (group, saved_group) in self.groups.iter_mut().zip(&saved.groups) {
            group.lr = saved_group.lr;
        }
        self.state = state;
        Ok(())
    }
}

/// `t / s` with a true division (candle's `Tensor / f64` multiplies by the reciprocal, which
/// rounds differently from PyTorch's division).
fn div_scalar(t: &Tensor, s: f64) -> Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    Ok(t.broadcast_div(&s)?)
}

/// `torch.lerp(start, end, weight)`: `start + w·(end − start)` for |w| < 0.5, else
/// `end − (end − start)·(1 − w)`, the two forms PyTorch picks between for accuracy.
fn lerp(start: &Tensor, end: &Tensor, weight: f64) -> Result<Tensor> {
    let diff = (end - start)?;
    Ok(if weight.abs() < 0.5 {
        (start + (diff * weight)?)?
    } else {
        (end - (diff * (1.0 - weight))?)?
    })
}

/// `a·b·value + base` in PyTorch's `addcmul` order: `base + (value·a)·b`.
fn addcmul(base: &Tensor, a: &Tensor, b: &Tensor, value: f64) -> Result<Tensor> {
    Ok((base + ((a * value)? * b)?)?)
}

/// `torch.optim.SGD`, `_single_tensor_sgd`.
fn sgd_update(
    c: &SgdConfig,
    lr: f64,
    p: &Tensor,
    grad: Tensor,
    state: &mut ParamState,
) -> Result<Tensor> {
    let mut d = grad;
    if c.weight_decay != 0.0 {
        d = (d + (p * c.weight_decay)?)?;
    }
    if c.momentum != 0.0 {
        let buf = match state.buffers.get("momentum_buffer") {
            None => d.clone(),
            Some(b) => ((b * c.momentum)? + (&d * (1.0 - c.dampening))?)?,
        };
        state.buffers.insert("momentum_buffer".into(), buf.clone());
        d = if c.nesterov {
            (d + (&buf * c.momentum)?)?
        } else {
            buf
        };
    }
    Ok((p + (d * -lr)?)?)
}

/// `torch.optim.Adam` (`decoupled = false`) and `AdamW`: on the CPU in f32 or f64 one fused,
/// rayon-parallel pass per parameter ([`adam_fused`]) instead of a dozen tensor ops; elsewhere
/// [`adam_update_reference`], whose results the fused pass reproduces bit for bit.
fn adam_update(
    c: &AdamConfig,
    decoupled: bool,
    lr: f64,
    p: Tensor,
    grad: Tensor,
    state: &mut ParamState,
) -> Result<Tensor> {
    match p.dtype() {
        DType::F32 if p.device().is_cpu() => adam_fused::<f32>(c, decoupled, lr, &p, &grad, state),
        DType::F64 if p.device().is_cpu() => adam_fused::<f64>(c, decoupled, lr, &p, &grad, state),
        _ => adam_update_reference(c, decoupled, lr, p, grad, state),
    }
}

/// Parameters per rayon task of the fused update.
const ADAM_CHUNK: usize = 16 * 1024;

/// [`adam_update_reference`] as one pass over the elements: the same operations in the same
/// order and precision (candle's `t * s` is `t·T(s) + 0`, its `t + s` is `t·1 + T(s)`), so
/// parameters and moments match it exactly. Moments are zero on a parameter's first step.
fn adam_fused<T: Float>(
    c: &AdamConfig,
    decoupled: bool,
    lr: f64,
    p: &Tensor,
    grad: &Tensor,
    state: &mut ParamState,
) -> Result<Tensor> {
    let values =
        |t: &Tensor| -> Result<Vec<T>> { Ok(t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()?) };
    let mut p_new = values(p)?;
    let g = values(grad)?;
    let moment = |name: &str| -> Result<Vec<T>> {
        match state.buffers.get(name) {
            Some(b) => values(b),
            None => Ok(vec![T::zero(); p_new.len()]),
        }
    };
    let (mut m, mut v) = (moment("exp_avg")?, moment("exp_avg_sq")?);
    if g.len() != p_new.len() || m.len() != p_new.len() || v.len() != p_new.len() {
        return Err(TrainError::Candle(candle_core::Error::Msg(format!(
            "adam: parameter {:?}, gradient and moments differ in size",
            p.shape()
        ))));
    }
    let t = T::from_f64;
    let zero = T::zero();
    let weight_decay = c.effective_weight_decay(decoupled);
    let decay = if decoupled {
        1.0 - lr * weight_decay
    } else {
        weight_decay
    };
    let w1 = 1.0 - c.beta1;
    let (lerp_small, w1_t, w1_rest) = (w1.abs() < 0.5, t(w1), t(1.0 - w1));
    let (beta2, w2) = (t(c.beta2), t(1.0 - c.beta2));
    let step = state.step as f64;
    let step_size = t(-(lr / (1.0 - c.beta1.powf(step))));
    let bias2_sqrt = t((1.0 - c.beta2.powf(step)).sqrt());
    let (one, eps, decay) = (T::one(), t(c.eps), t(decay));
    p_new
        .par_chunks_mut(ADAM_CHUNK)
        .zip(m.par_chunks_mut(ADAM_CHUNK))
        .zip(v.par_chunks_mut(ADAM_CHUNK))
        .zip(g.par_chunks(ADAM_CHUNK))
        .for_each(|(((ps, ms), vs), gs)| {
            for (((p, m), v), &g) in ps.iter_mut().zip(ms).zip(vs).zip(gs) {
                let mut g = g;
                if weight_decay != 0.0 {
                    if decoupled {
                        *p = *p * decay + zero;
                    } else {
                        g += *p * decay + zero;
                    }
                }
                let diff = g - *m;
                *m = if lerp_small {
                    *m + (diff * w1_t + zero)
                } else {
                    g - (diff * w1_rest + zero)
                };
                *v = (*v * beta2 + zero) + ((g * w2 + zero) * g);
                let denom = (v.sqrt() / bias2_sqrt) * one + eps;
                *p += (*m * step_size + zero) / denom;
            }
        });
    let tensor = |data: Vec<T>| Tensor::from_vec(data, p.shape(), p.device());
    state.buffers.insert("exp_avg".into(), tensor(m)?);
    state.buffers.insert("exp_avg_sq".into(), tensor(v)?);
    Ok(tensor(p_new)?)
}

/// `torch.optim.Adam` (`decoupled = false`) and `AdamW`, `_single_tensor_adam` without amsgrad,
/// as tensor ops on any device and dtype.
fn adam_update_reference(
    c: &AdamConfig,
    decoupled: bool,
    lr: f64,
    mut p: Tensor,
    mut grad: Tensor,
    state: &mut ParamState,
) -> Result<Tensor> {
    let weight_decay = c.effective_weight_decay(decoupled);
    if weight_decay != 0.0 {
        if decoupled {
            p = (p * (1.0 - lr * weight_decay))?;
        } else {
            grad = (grad + (&p * weight_decay)?)?;
        }
    }
    let exp_avg = lerp(&state.zeroed("exp_avg", &p)?, &grad, 1.0 - c.beta1)?;
    let exp_avg_sq = addcmul(
        &(state.zeroed("exp_avg_sq", &p)? * c.beta2)?,
        &grad,
        &grad,
        1.0 - c.beta2,
    )?;
    let step = state.step as f64;
    let bias_correction1 = 1.0 - c.beta1.powf(step);
    let bias_correction2 = 1.0 - c.beta2.powf(step);
    let step_size = lr / bias_correction1;
    let denom = (div_scalar(&exp_avg_sq.sqrt()?, bias_correction2.sqrt())? + c.eps)?;
    let updated = (&p + ((&exp_avg * -step_size)? / &denom)?)?;
    state.buffers.insert("exp_avg".into(), exp_avg);
    state.buffers.insert("exp_avg_sq".into(), exp_avg_sq);
    Ok(updated)
}

/// `torch.optim.RMSprop`, `_single_tensor_rmsprop`.
fn rmsprop_update(
    c: &RmsPropConfig,
    lr: f64,
    p: &Tensor,
    mut grad: Tensor,
    state: &mut ParamState,
) -> Result<Tensor> {
    if c.weight_decay != 0.0 {
        grad = (grad + (p * c.weight_decay)?)?;
    }
    let square_avg = addcmul(
        &(state.zeroed("square_avg", p)? * c.alpha)?,
        &grad,
        &grad,
        1.0 - c.alpha,
    )?;
    let avg = if c.centered {
        let grad_avg = lerp(&state.zeroed("grad_avg", p)?, &grad, 1.0 - c.alpha)?;
        let centered = addcmul(&square_avg, &grad_avg, &grad_avg, -1.0)?.sqrt()?;
        state.buffers.insert("grad_avg".into(), grad_avg);
        centered
    } else {
        square_avg.sqrt()?
    };
    let avg = (avg + c.eps)?;
    state.buffers.insert("square_avg".into(), square_avg);
    if c.momentum > 0.0 {
        let buf = ((state.zeroed("momentum_buffer", p)? * c.momentum)? + (grad / &avg)?)?;
        let updated = (p + (&buf * -lr)?)?;
        state.buffers.insert("momentum_buffer".into(), buf);
        Ok(updated)
    } else {
        Ok((p + ((grad * -lr)? / &avg)?)?)
    }
}

/// Sum of squares of each parameter's gradient, in `f64` (`None` for a parameter without a
/// gradient), in the order of `params`.
pub fn grad_square_norms<'a>(
    grads: &GradStore,
    params: impl IntoIterator<Item = &'a (String, Var)>,
) -> Result<Vec<(&'a str, Option<f64>)>> {
    params
        .into_iter()
        .map(|(name, var)| {
            let norm = match grads.get(var.as_tensor()) {
                Some(g) => Some(
                    g.to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?,
                ),
                None => None,
            };
            Ok((name.as_str(), norm))
        })
        .collect()
}

/// Scales every gradient of `params` by `min(1, max_norm / (total_norm + 1e-6))`, as
/// `torch.nn.utils.clip_grad_norm_` does, given the global norm `total_norm`.
pub fn clip_grads<'a>(
    grads: &mut GradStore,
    params: impl IntoIterator<Item = &'a (String, Var)>,
    total_norm: f64,
    max_norm: f64,
) -> Result<()> {
    let coefficient = max_norm / (total_norm + 1e-6);
    if coefficient >= 1.0 {
        return Ok(());
    }
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            let scaled = (g * coefficient)?;
            grads.insert(var.as_tensor(), scaled);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn one_param_groups(value: f32) -> Vec<ParamGroup> {
        let vars = VarMap::new();
        let t = Tensor::new(&[value, -value], &Device::Cpu).unwrap();
        vars.data()
            .lock()
            .unwrap()
            .insert("w".into(), Var::from_tensor(&t).unwrap());
        let config = GroupConfig {
            name: "all".into(),
            params: Vec::new(),
            schedule: LrSchedule::Constant { lr: 0.1 },
        };
        param_groups(&vars, &[config]).unwrap()
    }

    #[test]
    fn fused_adam_matches_the_tensor_ops_exactly() {
        // Several rayon chunks, the last one partial; a 2-D parameter.
        let n = 7 * (ADAM_CHUNK / 4 + 3);
        let wave = |phase: f64| {
            let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37 + phase).sin()).collect();
            Tensor::from_vec(v, (n / 7, 7), &Device::Cpu).unwrap()
        };
        let configs = [
            (AdamConfig::default(), false),
            (
                AdamConfig {
                    beta1: 0.5,
                    weight_decay: Some(1e-2),
                    ..AdamConfig::default()
                },
                false,
            ),
            (AdamConfig::default(), true),
            (
                AdamConfig {
                    beta1: 0.2,
                    ..AdamConfig::default()
                },
                true,
            ),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (c, decoupled) in &configs {
                let (mut fused, mut plain) = (ParamState::default(), ParamState::default());
                let mut p_fused = wave(0.0).to_dtype(dtype).unwrap();
                let mut p_plain = p_fused.clone();
                for k in 0..3 {
                    let g = wave(1.0 + k as f64).to_dtype(dtype).unwrap();
                    fused.step += 1;
                    plain.step += 1;
                    p_fused =
                        adam_update(c, *decoupled, 1e-2, p_fused, g.clone(), &mut fused).unwrap();
                    p_plain =
                        adam_update_reference(c, *decoupled, 1e-2, p_plain, g, &mut plain).unwrap();
                    let bits = |t: &Tensor| -> Vec<f64> {
                        t.to_dtype(DType::F64)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap()
                    };
                    let what = format!("{dtype:?} {c:?} decoupled {decoupled} step {k}");
                    assert_eq!(p_fused.shape(), p_plain.shape(), "{what}");
                    assert_eq!(bits(&p_fused), bits(&p_plain), "{what}: parameter");
                    for b in ["exp_avg", "exp_avg_sq"] {
                        let (f, r) = (&fused.buffers[b], &plain.buffers[b]);
                        assert_eq!(f.dtype(), dtype, "{what}: {b}");
                        assert_eq!(bits(f), bits(r), "{what}: {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn stateless_sgd_saves_an_empty_state_and_loads_it_back() {
        let mut opt = Optimizer::new(
            OptimizerConfig::Sgd(SgdConfig::default()),
            one_param_groups(1.0),
        )
        .unwrap();
        let w = opt.params().next().unwrap().1.clone();
        let grads = w.as_tensor().sum_all().unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        assert_eq!(w.to_vec1::<f32>().unwrap(), [0.9, -1.1]);
        let dir = tempfile::tempdir().unwrap();
        opt.save(dir.path()).unwrap();
        let mut fresh = Optimizer::new(
            OptimizerConfig::Sgd(SgdConfig::default()),
            one_param_groups(5.0),
        )
        .unwrap();
        fresh.load(dir.path()).unwrap();
        assert_eq!(fresh.param_steps("w"), 1);
    }

    #[test]
    fn groups_must_cover_every_parameter_once() {
        let vars = VarMap::new();
        for name in ["decoder.w", "lat_vecs.weight"] {
            let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
            vars.data()
                .lock()
                .unwrap()
                .insert(name.into(), Var::from_tensor(&t).unwrap());
        }
        let group = |name: &str, params: &[&str]| GroupConfig {
            name: name.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
            schedule: LrSchedule::Constant { lr: 1.0 },
        };
        let groups = param_groups(
            &vars,
            &[group("decoder", &[]), group("latent", &["lat_vecs"])],
        )
        .unwrap();
        assert_eq!(groups[0].params[0].0, "decoder.w");
        assert_eq!(groups[1].params[0].0, "lat_vecs.weight");
        assert!(param_groups(&vars, &[group("latent", &["lat_vecs"])]).is_err());
        assert!(param_groups(&vars, &[group("a", &[]), group("none", &["xyz"])]).is_err());
    }
}

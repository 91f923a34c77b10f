//! Finite-difference gradient checks for ops that record a backward.
//!
//! [`check_gradients`] evaluates `f` in f64 on the CPU, projects its output on a fixed
//! pseudo-random tensor so every output element contributes, and compares candle's backprop
//! gradient of that scalar with central differences, element by element.

use candle_core::{DType, Device, Result, Tensor, Var};

/// Tolerances and step of a gradient check.
#[derive(Debug, Clone)]
pub struct GradCheckConfig {
    /// Central-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, against the numerical gradient.
    pub rtol: f64,
    /// Inputs (by index) whose gradient is not checked, e.g. a sampling grid in nearest mode.
    pub skip_inputs: Vec<usize>,
}

impl Default for GradCheckConfig {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            skip_inputs: Vec::new(),
        }
    }
}

/// Largest absolute and relative errors seen for one input.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradError {
    pub max_abs: f64,
    pub max_rel: f64,
}

/// `n` deterministic pseudo-random values in `[lo, hi)` from a 64-bit LCG, so that checks and
/// tests built on them reproduce exactly; different seeds give different sequences.
///
/// ```
/// let a = vnr_ops::gradcheck::deterministic_values(4, 7, -1.0, 1.0);
/// assert_eq!(a, vnr_ops::gradcheck::deterministic_values(4, 7, -1.0, 1.0));
/// assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
/// ```
pub fn deterministic_values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lo + (hi - lo) * ((state >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn projected_loss<F>(f: &F, inputs: &[Tensor], weights: &Tensor) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let out = f(inputs)?;
    out.flatten_all()?.mul(weights)?.sum_all()
}

/// Checks the backward of `f` against central finite differences in f64.
///
/// Returns the per-input errors on success, and an error naming the input, the element and both
/// values at the first mismatch.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
/// let x = Tensor::new(&[0.5f64, -1.0, 2.0], &Device::Cpu)?;
/// check_gradients(|v| v[0].sqr()?.exp(), &[x], &GradCheckConfig::default())?;
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn check_gradients<F>(f: F, inputs: &[Tensor], cfg: &GradCheckConfig) -> Result<Vec<GradError>>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let inputs: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_device(&Device::Cpu)?.to_dtype(DType::F64))
        .collect::<Result<_>>()?;
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let var_tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();

    let n_out = f(&inputs)?.elem_count();
    let weights = Tensor::from_vec(
        deterministic_values(n_out, 1, -1.0, 1.0),
        n_out,
        &Device::Cpu,
    )?;
    let grads = projected_loss(&f, &var_tensors, &weights)?.backward()?;

    let mut errors = Vec::with_capacity(inputs.len());
    for (i, var) in vars.iter().enumerate() {
        let mut err = GradError::default();
        if cfg.skip_inputs.contains(&i) {
            errors.push(err);
            continue;
        }
        let analytic: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; inputs[i].elem_count()],
        };
        let base: Vec<f64> = inputs[i].flatten_all()?.to_vec1()?;
        let shape = inputs[i].shape().clone();
        for j in 0..base.len() {
            let eval_at = |delta: f64| -> Result<f64> {
                let mut moved = base.clone();
                moved[j] += delta;
                let mut args = inputs.clone();
                args[i] = Tensor::from_vec(moved, shape.clone(), &Device::Cpu)?;
                projected_loss(&f, &args, &weights)?.to_scalar::<f64>()
            };
            let numeric = (eval_at(cfg.eps)? - eval_at(-cfg.eps)?) / (2.0 * cfg.eps);
            let abs = (analytic[j] - numeric).abs();
            let rel = abs / numeric.abs().max(f64::MIN_POSITIVE);
            err.max_abs = err.max_abs.max(abs);
            if numeric != 0.0 {
                err.max_rel = err.max_rel.max(rel);
            }
            if abs > cfg.atol + cfg.rtol * numeric.abs() {
                candle_core::bail!(
                    "gradient mismatch for input {i} (shape {shape:?}) at flat index {j}: \
                     backward gives {}, finite differences give {numeric}",
                    analytic[j]
                );
            }
        }
        errors.push(err);
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_wrong_backward() -> Result<()> {
        let x = Tensor::new(&[0.3f64, 0.7], &Device::Cpu)?;
        // candle's own ops are right: the check passes.
        check_gradients(
            |v| v[0].sin(),
            std::slice::from_ref(&x),
            &GradCheckConfig::default(),
        )?;
        // A detached path has zero backward gradient but a non-zero numerical one: the check fails.
        let failed = check_gradients(|v| v[0].detach().sin(), &[x], &GradCheckConfig::default());
        assert!(failed.is_err());
        Ok(())
    }
}

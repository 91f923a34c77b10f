//! Helpers shared by the model tests: golden files, parameter maps and gradient coverage.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use serde_json::Value;

/// A golden JSON from `tools/golden/models/` (written by `tools/golden/models_torch.py`).
pub fn golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/golden/models")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

/// `{"shape": [...], "data": [...]}` → an f32 tensor.
pub fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
}

/// The golden's `params` object as named tensors.
pub fn params(v: &Value) -> HashMap<String, Tensor> {
    v.as_object()
        .expect("params")
        .iter()
        .map(|(k, t)| (k.clone(), tensor(t)))
        .collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    a.sub(b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff")
}

/// Sorted parameter names of a `VarMap`.
pub fn names(varmap: &VarMap) -> Vec<String> {
    let mut n: Vec<String> = varmap
        .data()
        .lock()
        .expect("varmap")
        .keys()
        .cloned()
        .collect();
    n.sort();
    n
}

/// Total number of parameter values in a `VarMap`.
pub fn param_total(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Backpropagates `loss` and asserts that every variable got a finite, non-zero gradient.
pub fn assert_grads_reach_all(varmap: &VarMap, loss: &Tensor) -> Result<()> {
    let grads = loss.backward()?;
    let data = varmap.data().lock().expect("varmap");
    let vars: Vec<(&String, &Var)> = data.iter().collect();
    assert!(!vars.is_empty());
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g = g.to_dtype(DType::F64)?.abs()?;
        let total = g.sum_all()?.to_scalar::<f64>()?;
        assert!(
            total.is_finite() && total > 0.0,
            "gradient of {name} is {total}"
        );
    }
    Ok(())
}

/// Deterministic values in `[lo, hi)` of this shape.
pub fn values(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = vnr_ops::gradcheck::deterministic_values(n, seed, lo, hi)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("values")
}

/// Every parameter by name, flattened to f32.
pub type Snapshot = std::collections::BTreeMap<String, Vec<f32>>;

/// Every parameter of a `VarMap` by name, flattened to f32 (for bit-exact comparisons).
pub fn snapshot(varmap: &VarMap) -> Snapshot {
    let data = varmap.data().lock().expect("varmap");
    data.iter()
        .map(|(name, var)| {
            let v = var
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1())
                .expect("values");
            (name.clone(), v)
        })
        .collect()
}

/// Standard deviation of `values` about their mean.
pub fn std_dev(values: &[f32]) -> f64 {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// Builds a model's parameters with `vnr_models::seeded::seeded_var_builder` from `seed`
/// twice and from `seed + 1` once; asserts the two same-seed builds are bit-identical and
/// returns the first build's `VarMap` with the snapshots of seeds `seed` and `seed + 1`.
pub fn seeded_builds<T>(
    seed: u64,
    build: impl Fn(candle_nn::VarBuilder<'static>) -> Result<T>,
) -> Result<(VarMap, Snapshot, Snapshot)> {
    let seeded = |seed| -> Result<VarMap> {
        let vars = VarMap::new();
        build(vnr_models::seeded::seeded_var_builder(
            &vars,
            seed,
            DType::F32,
            &Device::Cpu,
        ))?;
        Ok(vars)
    };
    let vars = seeded(seed)?;
    let first = snapshot(&vars);
    assert_eq!(
        first,
        snapshot(&seeded(seed)?),
        "same seed, different weights"
    );
    let other = snapshot(&seeded(seed + 1)?);
    Ok((vars, first, other))
}

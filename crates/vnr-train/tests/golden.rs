//! Golden tests against PyTorch (`tools/golden/optim_torch.py`) and scikit-image
//! (`tools/golden/metrics_skimage.py`); the JSON files are committed, no Python is needed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::Deserialize;
use vnr_train::metrics::{psnr, ssim, SsimConfig};
use vnr_train::optim::{param_groups, GroupConfig, Optimizer, OptimizerConfig};
use vnr_train::schedule::LrSchedule;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/golden/train")
        .join(name)
}

#[derive(Deserialize)]
struct OptimGolden {
    steps: usize,
    cases: Vec<OptimCase>,
}

#[derive(Deserialize)]
struct OptimCase {
    name: String,
    optimizer: OptimizerConfig,
    groups: Vec<GoldenGroup>,
    shapes: BTreeMap<String, Vec<usize>>,
    init: BTreeMap<String, Vec<f64>>,
    grads: Vec<BTreeMap<String, Option<Vec<f64>>>>,
    expected: Vec<BTreeMap<String, Vec<f64>>>,
}

#[derive(Deserialize)]
struct GoldenGroup {
    name: String,
    params: Vec<String>,
    lr: Vec<f64>,
}

/// Runs one case in `dtype`; returns the largest error relative to `1 + |expected|` over all
/// steps and parameters.
fn run_optim_case(case: &OptimCase, steps: usize, dtype: DType) -> f64 {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let mut handles = BTreeMap::new();
    for (name, shape) in &case.shapes {
        let t = Tensor::from_vec(case.init[name].clone(), shape.as_slice(), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let var = Var::from_tensor(&t).unwrap();
        vars.data()
            .lock()
            .unwrap()
            .insert(name.clone(), var.clone());
        handles.insert(name.clone(), var);
    }
    let configs: Vec<GroupConfig> = case
        .groups
        .iter()
        .map(|g| GroupConfig {
            name: g.name.clone(),
            params: g.params.clone(),
            schedule: LrSchedule::Constant { lr: g.lr[0] },
        })
        .collect();
    let groups = param_groups(&vars, &configs).unwrap();
    let mut opt = Optimizer::new(case.optimizer.clone(), groups).unwrap();
    let mut worst: f64 = 0.0;
    for step in 0..steps {
        for (i, g) in case.groups.iter().enumerate() {
            assert!(opt.set_lr(i, g.lr[step]));
        }
        // loss = Σ p·g, so d loss / d p = g exactly; a parameter without gradient is left out.
        let mut loss = Tensor::zeros((), dtype, &dev).unwrap();
        for (name, grad) in &case.grads[step] {
            if let Some(g) = grad {
                let g = Tensor::from_vec(g.clone(), case.shapes[name].as_slice(), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let term = (handles[name].as_tensor() * g).unwrap().sum_all().unwrap();
                loss = (loss + term).unwrap();
            }
        }
        opt.step(&loss.backward().unwrap()).unwrap();
        for (name, want) in &case.expected[step] {
            let got = handles[name]
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w).abs() / (1.0 + w.abs()));
            }
        }
    }
    worst
}

#[test]
fn optimisers_match_torch_optim_for_five_steps() {
    let text = std::fs::read_to_string(golden("optim_torch.json")).unwrap();
    let golden: OptimGolden = serde_json::from_str(&text).unwrap();
    assert!(golden.cases.len() >= 10);
    for case in &golden.cases {
        let f64_error = run_optim_case(case, golden.steps, DType::F64);
        assert!(
            f64_error < 1e-15,
            "{} (f64): error {f64_error:e}",
            case.name
        );
        let f32_error = run_optim_case(case, golden.steps, DType::F32);
        assert!(f32_error < 2e-7, "{} (f32): error {f32_error:e}", case.name);
        eprintln!(
            "{}: max error f64 {f64_error:e}, f32 {f32_error:e}",
            case.name
        );
    }
}

#[derive(Deserialize)]
struct MetricsGolden {
    cases: Vec<MetricsCase>,
}

#[derive(Deserialize)]
struct MetricsCase {
    name: String,
    shape: Vec<usize>,
    data_range: f64,
    a: Vec<f64>,
    b: Vec<f64>,
    psnr: f64,
    ssim: f64,
    ssim_sample_covariance: f64,
}

#[test]
fn ssim_and_psnr_match_scikit_image() {
    let text = std::fs::read_to_string(golden("metrics_skimage.json")).unwrap();
    let golden: MetricsGolden = serde_json::from_str(&text).unwrap();
    for case in &golden.cases {
        let tensor = |v: &Vec<f64>| {
            Tensor::from_vec(v.clone(), case.shape.as_slice(), &Device::Cpu).unwrap()
        };
        let (a, b) = (tensor(&case.a), tensor(&case.b));
        let p = psnr(&a, &b, case.data_range).unwrap();
        assert!(
            (p - case.psnr).abs() < 1e-10,
            "{}: psnr {p} vs {}",
            case.name,
            case.psnr
        );
        for (sample_covariance, want) in [(false, case.ssim), (true, case.ssim_sample_covariance)] {
            let config = SsimConfig {
                data_range: case.data_range,
                sample_covariance,
                ..SsimConfig::default()
            };
            let got = ssim(&a, &b, &config).unwrap();
            assert!(
                (got - want).abs() < 1e-10,
                "{} (sample cov {sample_covariance}): ssim {got} vs {want}",
                case.name
            );
            // Float32 images give the same score to float32 precision.
            let got32 = ssim(
                &a.to_dtype(DType::F32).unwrap(),
                &b.to_dtype(DType::F32).unwrap(),
                &config,
            )
            .unwrap();
            assert!(
                (got32 - want).abs() < 1e-5,
                "{}: f32 ssim {got32} vs {want}",
                case.name
            );
        }
    }
}

//! NeRF: the tutorial model against PyTorch (forward, marched colours, loss, gradients), the
//! `Field` contract, configs, and a tiny fit on a rendered scene.

use std::path::PathBuf;

use crate::support::{max_abs_diff, names, params, tensor};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use vnr_models::nerf::{DensityMode, NerfConfig, NeuralRadianceField};
use vnr_models::nerf_train::{
    evaluate, fit, NerfError, NerfModel, NerfRays, NerfTrainConfig, PhotoLoss, RaySettings,
};
use vnr_render::field::Field;
use vnr_render::multiview::MultiViewDataset;
use vnr_render::raymarchers::{EmissionAbsorptionRaymarcher, RayMarcher};
use vnr_render::scenes::{generate_multiview, GeneratedViews, MultiViewGenConfig};
use vnr_train::{Model, TrainError};

fn golden() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/golden/nerf/tutorial.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

fn golden_config(g: &Value, density: DensityMode) -> NerfConfig {
    let c = &g["config"];
    NerfConfig {
        n_harmonic_functions: c["n_harmonic_functions"].as_u64().expect("n") as usize,
        omega_0: c["omega_0"].as_f64().expect("omega"),
        n_hidden_neurons: c["n_hidden_neurons"].as_u64().expect("h") as usize,
        density,
    }
}

#[test]
fn tutorial_model_matches_pytorch_forward_march_loss_and_gradients() -> Result<()> {
    let g = golden();
    // Trainable copies of the torch weights, so gradients can be compared.
    let vars = VarMap::new();
    for (name, t) in params(&g["params"]) {
        vars.data()
            .lock()
            .expect("lock")
            .insert(name, candle_core::Var::from_tensor(&t)?);
    }
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let model = NeuralRadianceField::new(golden_config(&g, DensityMode::Opacity), vb)?;
    let points = tensor(&g["points"]);
    let directions = tensor(&g["directions"]);
    let out = model.query(&points, Some(&directions))?;
    assert!(max_abs_diff(&out.densities, &tensor(&g["densities"])) < 1e-6);
    assert!(max_abs_diff(&out.features, &tensor(&g["colours"])) < 1e-6);

    let marched = EmissionAbsorptionRaymarcher::default().march(
        &out.densities,
        &out.features,
        &Tensor::zeros((2, 3, 5), DType::F32, &Device::Cpu)?,
    )?;
    assert!(max_abs_diff(&marched.features, &tensor(&g["marched_colours"])) < 1e-6);
    assert!(max_abs_diff(&marched.opacity, &tensor(&g["marched_opacity"])) < 1e-6);
    let huber = PhotoLoss::Huber { scaling: 0.1 };
    let loss = (huber.apply(&marched.features, &tensor(&g["target_colours"]))?
        + huber.apply(&marched.opacity, &tensor(&g["target_alpha"]))?)?;
    let want = g["loss"].as_f64().expect("loss");
    let got = loss.to_scalar::<f32>()? as f64;
    assert!((got - want).abs() < 1e-6, "loss {got} vs {want}");

    let grads = loss.backward()?;
    let data = vars.data().lock().expect("lock");
    for (name, var) in data.iter() {
        let want = tensor(&g["grads"][name]);
        let got = grads.get(var.as_tensor()).expect("gradient");
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
        let err = max_abs_diff(got, &want) / scale;
        assert!(err < 1e-4, "gradient of {name}: relative error {err}");
    }
    Ok(())
}

#[test]
fn sigma_mode_returns_the_raw_density_head() -> Result<()> {
    let g = golden();
    let vb = VarBuilder::from_tensors(params(&g["params"]), DType::F32, &Device::Cpu);
    let model = NeuralRadianceField::new(golden_config(&g, DensityMode::Sigma), vb)?;
    let (sigma, _) = model.forward(&tensor(&g["points"]), &tensor(&g["directions"]))?;
    assert!(max_abs_diff(&sigma, &tensor(&g["raw_densities"])) < 1e-6);
    Ok(())
}

#[test]
fn parameter_names_are_the_tutorial_state_dict_keys() -> Result<()> {
    let vars = VarMap::new();
    let model = NeuralRadianceField::seeded(NerfConfig::small(), &vars, 3, &Device::Cpu)?;
    let want: Vec<String> = [
        "color_layer.0.bias",
        "color_layer.0.weight",
        "color_layer.2.bias",
        "color_layer.2.weight",
        "density_layer.0.bias",
        "density_layer.0.weight",
        "mlp.0.bias",
        "mlp.0.weight",
        "mlp.2.bias",
        "mlp.2.weight",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(names(&vars), want);
    assert_eq!(model.feature_dim(), 3);
    // Seeded init is reproducible and differs across seeds.
    let again = VarMap::new();
    NeuralRadianceField::seeded(NerfConfig::small(), &again, 3, &Device::Cpu)?;
    let other = VarMap::new();
    NeuralRadianceField::seeded(NerfConfig::small(), &other, 4, &Device::Cpu)?;
    let w = |m: &VarMap| {
        m.data().lock().expect("lock")["mlp.0.weight"]
            .as_tensor()
            .clone()
    };
    assert_eq!(max_abs_diff(&w(&vars), &w(&again)), 0.0);
    assert!(max_abs_diff(&w(&vars), &w(&other)) > 0.0);
    Ok(())
}

#[test]
fn field_refuses_missing_directions_and_bad_shapes() -> Result<()> {
    let vars = VarMap::new();
    let model = NeuralRadianceField::seeded(NerfConfig::small(), &vars, 0, &Device::Cpu)?;
    let points = Tensor::zeros((4, 7, 3), DType::F32, &Device::Cpu)?;
    let err = model.query(&points, None).unwrap_err().to_string();
    assert!(err.contains("directions"), "{err}");
    let wrong = Tensor::zeros((5, 3), DType::F32, &Device::Cpu)?;
    assert!(model.query(&points, Some(&wrong)).is_err());
    let dirs = Tensor::ones((4, 3), DType::F32, &Device::Cpu)?;
    let out = model.query(&points, Some(&dirs))?;
    assert_eq!(out.densities.dims(), &[4, 7, 1]);
    assert_eq!(out.features.dims(), &[4, 7, 3]);
    Ok(())
}

#[test]
fn config_errors_name_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nerf.toml");
    std::fs::write(&path, "iterations = 10\n[rays]\nnear = 2.0\nfar = 1.0\n").expect("write");
    let err = NerfTrainConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("near < far"), "{err}");
    std::fs::write(&path, "iterations = 10\nlearning_rate = 1.0\n").expect("write");
    let err = NerfTrainConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("learning_rate"), "{err}");
    std::fs::write(&path, "iterations = 10\ndataset = \"scene\"\n").expect("write");
    let cfg = NerfTrainConfig::load(&path).expect("valid config");
    assert_eq!(cfg.dataset, dir.path().join("scene"));
    assert_eq!(cfg.train_config().steps, Some(10));
}

/// The procedural `shapes` scene at `res²`, `train` training views, one val and one test view.
fn views(train: usize, res: usize, background: [f32; 3]) -> GeneratedViews {
    generate_multiview(&MultiViewGenConfig {
        train_views: train,
        val_views: 1,
        test_views: 1,
        resolution: res,
        supersample: 1,
        background,
        ..MultiViewGenConfig::default()
    })
    .expect("generated views")
}

fn tiny_config(output: PathBuf) -> NerfTrainConfig {
    NerfTrainConfig {
        output,
        model: NerfConfig {
            n_harmonic_functions: 6,
            omega_0: 1.0,
            n_hidden_neurons: 32,
            density: DensityMode::Opacity,
        },
        iterations: 100,
        rays_per_step: 256,
        rays: RaySettings {
            near: 2.4,
            far: 5.6,
            samples_per_ray: 24,
            chunk_rays: 4096,
            ..RaySettings::default()
        },
        lr: 5e-3,
        checkpoint_every: None,
        test_views: 1,
        progress: false,
        ..NerfTrainConfig::default()
    }
}

#[test]
fn tiny_fit_on_rendered_shapes_beats_the_untrained_model() {
    let generated = views(8, 12, [0.0; 3]);
    let (train, test) = (generated.train.dataset, generated.test.dataset);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path().join("run"));
    let untrained = NerfModel::from_config(&cfg).expect("model");
    fn score(m: &NerfModel, d: &MultiViewDataset) -> f64 {
        evaluate(m, d, 1, None).expect("evaluate").mean_psnr
    }
    let (train_before, test_before) = (score(&untrained, &train), score(&untrained, &test));
    let data = NerfRays::new(train, None, 0, cfg.rays_per_step, cfg.seed).expect("data");
    let (model, report) = fit(&cfg, data.clone(), Some(&test), false).expect("fit");
    let train_after = score(&model, data.train());
    let after = report.test.expect("test scores").mean_psnr;
    eprintln!(
        "train {train_before:.2} -> {train_after:.2} dB, test {test_before:.2} -> {after:.2} dB"
    );
    assert!(train_after > train_before + 2.5);
    assert!(after > test_before + 1.0);
    assert_eq!(report.summary.steps, 100);
    assert!(dir.path().join("run/test/r_0.png").is_file());
    // The learning rate was decayed ×0.1 at 75 % (step 75).
    let log = std::fs::read_to_string(dir.path().join("run/log.jsonl")).expect("log");
    let last: Value = serde_json::from_str(log.lines().last().expect("a record")).expect("json");
    let lr = last["lr"]["all"].as_f64().expect("lr");
    assert!((lr - 5e-4).abs() < 1e-12, "final lr {lr}");
    // Rendering is deterministic.
    let again = evaluate(&model, &test, 1, None)
        .expect("evaluate")
        .mean_psnr;
    assert_eq!(again, after);
}

#[test]
fn sigma_mode_takes_finite_steps_with_silhouettes() {
    let train = views(2, 8, [1.0; 3]).train.dataset;
    let mut cfg = tiny_config(PathBuf::new());
    cfg.model.density = DensityMode::Sigma;
    cfg.rays.background = [1.0; 3];
    let model = NerfModel::from_config(&cfg).expect("model");
    let data = NerfRays::new(train, None, 0, 64, 0).expect("data");
    let batch = vnr_train::data::DataSource::epoch(&data, 0, 0)
        .expect("epoch")
        .next()
        .expect("a batch")
        .expect("batch");
    assert!(batch.alpha.is_some());
    let out = model
        .step(&batch, &mut ChaCha8Rng::seed_from_u64(0))
        .expect("step");
    let loss = out.loss.to_scalar::<f32>().expect("scalar");
    assert!(loss.is_finite() && loss > 0.0);
    let names: Vec<&str> = out.metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["psnr", "colour_err", "silhouette_err"]);
    let grads = out.loss.backward().expect("backward");
    for var in model.vars().all_vars() {
        assert!(grads.get(var.as_tensor()).is_some());
    }
}

#[test]
fn a_run_directory_of_another_run_is_refused() {
    let train = views(2, 8, [0.0; 3]).train.dataset;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = tiny_config(dir.path().to_path_buf());
    cfg.iterations = 2;
    cfg.test_views = 0;
    let data = NerfRays::new(train, None, 0, 32, 0).expect("data");
    fit(&cfg, data.clone(), None, false).expect("first run");
    match fit(&cfg, data.clone(), None, false) {
        Err(NerfError::Train(TrainError::Config(m))) => assert!(m.contains("resume"), "{m}"),
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|(_, r)| r.summary)
        ),
    }
    cfg.iterations = 3;
    let (_, report) = fit(&cfg, data, None, true).expect("resumed run");
    assert_eq!(report.summary.steps, 3);
}

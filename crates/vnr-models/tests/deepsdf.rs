//! DeepSDF decoder: parameter count and names, latent re-injection against PyTorch, specs
//! reading, dropout, gradients, and the latent code table's max-norm lookup.

use crate::support::{
    assert_grads_reach_all, golden, max_abs_diff, names, param_total, params, tensor, values,
};
use candle_core::{DType, Device, ModuleT, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_models::deepsdf::{DeepSdfConfig, DeepSdfDecoder, LatentCodes};
use vnr_ops::nn::dropout::{bias_relu_dropout_reference, DropoutKeys};

fn build(cfg: DeepSdfConfig) -> Result<(VarMap, DeepSdfDecoder)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = DeepSdfDecoder::new(cfg, vb)?;
    Ok((varmap, model))
}

#[test]
fn reference_decoder_has_1843195_parameters_and_the_original_names() -> Result<()> {
    let (varmap, model) = build(DeepSdfConfig::default())?;
    assert_eq!(param_total(&varmap), 1_843_195);
    assert_eq!(model.summary(16384)?.total_params(), 1_843_195);
    let mut expected: Vec<String> = (0..8)
        .flat_map(|i| ["bias", "weight_g", "weight_v"].map(|p| format!("lin{i}.{p}")))
        .chain(["lin8.bias".to_string(), "lin8.weight".to_string()])
        .collect();
    expected.sort();
    assert_eq!(names(&varmap), expected);
    let data = varmap.data().lock().expect("varmap");
    // lin3 makes room for the re-injected input row: 512 − (256 + 3) = 253 outputs.
    assert_eq!(data["lin3.weight_v"].as_tensor().dims(), [253, 512]);
    assert_eq!(data["lin3.weight_g"].as_tensor().dims(), [253, 1]);
    assert_eq!(data["lin4.weight_v"].as_tensor().dims(), [512, 512]);
    assert_eq!(data["lin0.weight_v"].as_tensor().dims(), [512, 259]);
    assert_eq!(data["lin8.weight"].as_tensor().dims(), [1, 512]);
    Ok(())
}

#[test]
fn narrow_presets_have_the_hand_counted_sizes() -> Result<()> {
    // narrow16: dims [19, 32×8, 1], lin3 → 32 − 19 = 13. lin0 19·32+32+32 = 672; lin1, lin2
    // 1,088 each; lin3 32·13+13+13 = 442; lin4..lin7 1,088 each; lin8 33: 7,675.
    let (varmap, model) = build(DeepSdfConfig::preset("deepsdf-narrow16").expect("preset"))?;
    assert_eq!(param_total(&varmap), 7_675);
    let y = model.forward_t(&values(&[7, 19], 1, -1.0, 1.0), false)?;
    assert_eq!(y.dims(), [7, 1]);
    // narrow32: dims [35, 64×8, 1], lin3 → 29. lin0 35·64+128 = 2,368; lin1, lin2 4,224
    // each; lin3 64·29+58 = 1,914; lin4..lin7 4,224 each; lin8 65: 29,691.
    let (varmap, _) = build(DeepSdfConfig::narrow32())?;
    assert_eq!(param_total(&varmap), 29_691);
    Ok(())
}

#[test]
fn latent_reinjection_matches_pytorch() -> Result<()> {
    let g = golden("deepsdf.json");
    let cfg: DeepSdfConfig = serde_json::from_value(g["config"].clone()).expect("config");
    let vb = VarBuilder::from_tensors(params(&g["params"]), DType::F32, &Device::Cpu);
    let model = DeepSdfDecoder::new(cfg, vb)?;
    let input = tensor(&g["input"]);
    let y = model.forward_t(&input, false)?;
    let err = max_abs_diff(&y, &tensor(&g["output"]));
    assert!(err < 1e-5, "max abs error {err}");
    // decode(latents, xyz) is the same rows split in two.
    let split = model.decode(&input.narrow(1, 0, 3)?, &input.narrow(1, 3, 3)?, false)?;
    assert_eq!(max_abs_diff(&y, &split), 0.0);
    // The summary shows the concatenation before lin2 (10 − 6 = 4 wide from lin1, + 6).
    let s = model.summary(5)?;
    let concat = s
        .layers
        .iter()
        .position(|l| l.name == "latent_in")
        .expect("latent_in row");
    assert_eq!(s.layers[concat].output_shape, [5, 10]);
    assert_eq!(s.layers[concat + 1].name, "lin2");
    assert_eq!(s.layers[concat - 1].output_shape, [5, 4]);
    Ok(())
}

#[test]
fn xyz_in_all_and_layer_norm_variants_build_and_run() -> Result<()> {
    let cfg = DeepSdfConfig {
        latent_size: 4,
        dims: vec![16, 16, 16],
        xyz_in_all: true,
        weight_norm: false,
        latent_in: vec![2],
        norm_layers: vec![0, 1],
        use_tanh: true,
        latent_dropout: true,
        ..DeepSdfConfig::default()
    };
    // lin0 7→16−3 = 13 (xyz appended next), lin1 16→16−7 = 9 (input re-injected next),
    // lin2 16→13, lin3 16→1.
    assert_eq!(
        cfg.linear_shapes().expect("shapes"),
        [(7, 13), (16, 9), (16, 13), (16, 1)]
    );
    let (varmap, model) = build(cfg)?;
    assert!(names(&varmap).contains(&"bn0.weight".to_string()));
    assert!(names(&varmap).contains(&"lin0.weight".to_string()));
    let x = values(&[6, 7], 2, -1.0, 1.0);
    let y = model.forward_t(&x, true)?;
    assert_eq!(y.dims(), [6, 1]);
    assert_eq!(model.summary(6)?.total_params(), param_total(&varmap));
    Ok(())
}

#[test]
fn gradients_reach_every_parameter() -> Result<()> {
    let (varmap, model) = build(DeepSdfConfig::narrow16())?;
    model.reseed_dropout(4);
    let y = model.forward_t(&values(&[64, 19], 3, -1.0, 1.0), true)?;
    assert_grads_reach_all(&varmap, &y.sum_all()?)
}

#[test]
fn dropout_follows_the_seed_and_is_off_in_eval() -> Result<()> {
    let (_, model) = build(DeepSdfConfig::narrow16())?;
    let x = values(&[32, 19], 5, -1.0, 1.0);
    model.reseed_dropout(1);
    let a = model.forward_t(&x, true)?;
    model.reseed_dropout(1);
    let b = model.forward_t(&x, true)?;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let e = model.forward_t(&x, false)?;
    assert!(max_abs_diff(&a, &e) > 0.0);
    assert_eq!(max_abs_diff(&e, &model.forward_t(&x, false)?), 0.0);
    Ok(())
}

/// The decoder fuses bias, ReLU and dropout (`bias_relu_dropout`); in training it must still be
/// the plain layer-by-layer composition with the same masks (one key per dropout call, in layer
/// order).
#[test]
fn fused_training_forward_is_the_plain_composition() -> Result<()> {
    let (varmap, model) = build(DeepSdfConfig::narrow16())?;
    let x = values(&[48, 19], 8, -1.0, 1.0);
    model.reseed_dropout(7);
    let fused = model.forward_t(&x, true)?;
    let keys = DropoutKeys::new(7);
    let data = varmap.data().lock().expect("varmap");
    let get = |name: String| data[&name].as_tensor().clone();
    let mut h = x.clone();
    for layer in 0..9 {
        if layer == 4 {
            h = Tensor::cat(&[&h, &x], 1)?;
        }
        let bias = get(format!("lin{layer}.bias"));
        if layer == 8 {
            let w = get(format!("lin{layer}.weight"));
            h = h.matmul(&w.t()?)?.broadcast_add(&bias)?;
            break;
        }
        let v = get(format!("lin{layer}.weight_v"));
        let g = get(format!("lin{layer}.weight_g"));
        let w = v.broadcast_mul(&g.broadcast_div(&v.sqr()?.sum_keepdim(1)?.sqrt()?)?)?;
        h = bias_relu_dropout_reference(&h.matmul(&w.t()?)?, &bias, 0.2, keys.next_key())?;
    }
    assert!(max_abs_diff(&fused, &h.tanh()?) < 1e-6);
    Ok(())
}

#[test]
fn output_is_always_tanh_bounded() -> Result<()> {
    let (_, model) = build(DeepSdfConfig::narrow16())?;
    let y = model.forward_t(&values(&[100, 19], 6, -50.0, 50.0), false)?;
    let max = y.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(max <= 1.0);
    assert!(model
        .forward_t(&values(&[3, 18], 6, -1.0, 1.0), false)
        .is_err());
    Ok(())
}

#[test]
fn specs_fixtures_give_the_reference_decoder() {
    for name in ["deepsdf/chairs-specs.json", "deepsdf/neorender-specs.json"] {
        let Some(path) = vnr_formats::testing::fixture(name) else {
            return;
        };
        let cfg = DeepSdfConfig::from_specs_file(&path).expect("specs");
        assert_eq!(cfg, DeepSdfConfig::default(), "{name}");
    }
}

#[test]
fn specs_errors_name_the_field() {
    let cases = [
        (r#"{"NetworkSpecs": {"dims": [8]}}"#, "CodeLength"),
        (r#"{"CodeLength": 4}"#, "NetworkSpecs"),
        (
            r#"{"CodeLength": 4, "NetworkSpecs": {"dims": [8], "depth": 3}}"#,
            "NetworkSpecs.depth",
        ),
        (
            r#"{"CodeLength": 4, "NetworkSpecs": {"dims": "wide"}}"#,
            "NetworkSpecs.dims",
        ),
        (
            r#"{"CodeLength": -1, "NetworkSpecs": {"dims": [8]}}"#,
            "CodeLength",
        ),
        (
            r#"{"CodeLength": 4, "NetworkSpecs": {"dims": [8], "weight_norm": "yes"}}"#,
            "weight_norm",
        ),
        (
            r#"{"CodeLength": 4, "NetworkArch": "other", "NetworkSpecs": {"dims": [8]}}"#,
            "NetworkArch",
        ),
        // latent_in at layer 1 with width 5 < 4 + 3: nothing left for lin0.
        (
            r#"{"CodeLength": 4, "NetworkSpecs": {"dims": [5, 8], "latent_in": [1]}}"#,
            "layer 1",
        ),
        ("[", "not valid"),
    ];
    for (text, needle) in cases {
        let err = DeepSdfConfig::from_specs(text, "specs")
            .expect_err(text)
            .to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
    // Missing optional keys take the Decoder's defaults.
    let cfg = DeepSdfConfig::from_specs(
        r#"{"CodeLength": 8, "NetworkSpecs": {"dims": [16, 16]}}"#,
        "specs",
    )
    .expect("minimal");
    assert!(!cfg.weight_norm && cfg.latent_in.is_empty() && cfg.dropout.is_empty());
}

#[test]
fn latent_codes_renormalise_looked_up_rows_like_torch_max_norm() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let codes = LatentCodes::new(4, 3, 1.0, Some(1.0), &mut rng, vb.pp("lat_vecs"))?;
    assert_eq!(names(&varmap), ["lat_vecs.weight"]);
    // Rows 0 and 2 get norms 5 and 0.5.
    codes
        .weight()
        .slice_set(&Tensor::new(&[[3f32, 4.0, 0.0]], &Device::Cpu)?, 0, 0)?;
    codes
        .weight()
        .slice_set(&Tensor::new(&[[0.3f32, 0.0, 0.4]], &Device::Cpu)?, 0, 2)?;
    let row1_before = codes.weight().narrow(0, 1, 1)?.to_vec2::<f32>()?;
    let ids = Tensor::new(&[[0u32, 2], [0, 0]], &Device::Cpu)?;
    let looked = codes.forward(&ids)?;
    assert_eq!(looked.dims(), [2, 2, 3]);
    let rows = looked.reshape((4, 3))?.to_vec2::<f32>()?;
    let scale = 1.0 / (5.0 + 1e-7);
    for (got, want) in rows[0].iter().zip([3.0 * scale, 4.0 * scale, 0.0]) {
        assert!((got - want as f32).abs() < 1e-6);
    }
    assert_eq!(
        rows[1],
        [0.3, 0.0, 0.4],
        "rows within the bound are untouched"
    );
    assert_eq!(rows[2], rows[0]);
    // In place, as torch: the table now holds the renormalised row; row 1 was not looked up.
    let table = codes.weight().to_vec2::<f32>()?;
    assert_eq!(table[0], rows[0]);
    assert_eq!(vec![table[1].clone()], row1_before);
    assert!(codes.forward(&Tensor::new(&[4u32], &Device::Cpu)?).is_err());
    Ok(())
}

#[test]
fn latent_codes_init_is_seeded_with_std_one_over_sqrt_latent() -> Result<()> {
    let draw = |seed: u64| -> Result<Vec<f32>> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let codes = LatentCodes::new(500, 64, 1.0, None, &mut rng, vb)?;
        codes.weight().flatten_all()?.to_vec1::<f32>()
    };
    let a = draw(3)?;
    assert_eq!(a, draw(3)?);
    assert_ne!(a, draw(4)?);
    let n = a.len() as f64;
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((std - 0.125).abs() < 0.005, "std {std} vs 1/√64");
    Ok(())
}

//! ConvDeconv: parameter counts, shapes, the bottleneck reshape order, a PyTorch golden
//! forward, gradients and config handling.

use crate::support::{
    assert_grads_reach_all, golden, max_abs_diff, names, param_total, params, seeded_builds,
    std_dev, tensor, values,
};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use vnr_models::convdeconv::{
    bottleneck_to_image, ConvDeconv, ConvDeconvConfig, ConvDeconvVersion,
};

fn build(cfg: ConvDeconvConfig) -> Result<(VarMap, ConvDeconv)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ConvDeconv::new(cfg, vb)?;
    Ok((varmap, model))
}

#[test]
fn v001_matches_the_original_torchinfo_table() -> Result<()> {
    // Zero-filled parameters: counting needs no random init of 48M values.
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = ConvDeconv::new(ConvDeconvConfig::v001(), vb)?;
    let s = model.summary(1)?;
    assert_eq!(s.total_params(), 48_271_745);
    assert_eq!(s.trainable_params(), 48_271_745);
    assert_eq!(s.output_shape, [1, 1, 256, 256]);
    // The original README's torchinfo rows (layers with parameters).
    let expected: [(&str, &[usize], usize); 11] = [
        ("conv3d_s2_1", &[1, 64, 128, 128, 128], 4_160),
        ("conv3d_s1_1", &[1, 64, 128, 128, 128], 4_160),
        ("conv3d_s2_2", &[1, 128, 64, 64, 64], 524_416),
        ("conv3d_s1_2", &[1, 128, 64, 64, 64], 16_512),
        ("conv3d_s2_3", &[1, 512, 32, 32, 32], 4_194_816),
        ("conv3d_s1_3", &[1, 512, 32, 32, 32], 262_656),
        ("conv3d_s2_4", &[1, 1024, 16, 16, 16], 33_555_456),
        ("conv3d_s1_4", &[1, 1024, 16, 16, 16], 1_049_600),
        ("deconv2d_s2_1", &[1, 512, 128, 128], 8_389_120),
        ("deconv2d_s1_1", &[1, 512, 128, 128], 262_656),
        ("deconv2d_s2_2", &[1, 1, 256, 256], 8_193),
    ];
    let with_params: Vec<_> = s.layers.iter().filter(|l| l.params > 0).collect();
    assert_eq!(with_params.len(), expected.len());
    for (layer, (name, shape, count)) in with_params.iter().zip(expected) {
        assert_eq!(layer.name, name);
        assert_eq!(layer.output_shape, shape, "{name}");
        assert_eq!(layer.params, count, "{name}");
    }
    let reshape = s
        .layers
        .iter()
        .find(|l| l.name == "reshape")
        .expect("reshape row");
    assert_eq!(reshape.output_shape, [1, 1024, 64, 64]);
    Ok(())
}

#[test]
fn v002_at_256_gets_skips_from_scales_2_and_1() -> Result<()> {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = ConvDeconv::new(ConvDeconvConfig::v002(), vb)?;
    let s = model.summary(1)?;
    let skip2 = s
        .layers
        .iter()
        .find(|l| l.name == "skip_2")
        .expect("skip from scale 2");
    // 1×1×1 conv 128 → 4, depth 64 folded: 256 channels at 64×64.
    assert_eq!(skip2.output_shape, [1, 4 * 64, 64, 64]);
    assert_eq!(skip2.params, 128 * 4 + 4);
    let skip1 = s
        .layers
        .iter()
        .find(|l| l.name == "skip_1")
        .expect("skip from scale 1");
    assert_eq!(skip1.output_shape, [1, 4 * 128, 128, 128]);
    assert_eq!(s.output_shape, [1, 1, 256, 256]);
    // v001 + skips + the wider decoder inputs: deconv2d_s2_1 takes 1024 + 256 channels,
    // deconv2d_s1_1 512 + 512.
    let extra = (128 * 4 + 4) + (64 * 4 + 4) + 256 * 512 * 16 + 512 * 512;
    assert_eq!(s.total_params(), 48_271_745 + extra);
    Ok(())
}

#[test]
fn reshape_is_row_major_and_mixes_depth_and_height() -> Result<()> {
    // N = 4 → M = 8. One hot voxel per channel at (d, h, w); it must land at flat index
    // d·16 + h·4 + w of the 8×8 map.
    let cases = [(0usize, 0usize, 0usize), (1, 2, 3), (3, 3, 3), (2, 0, 1)];
    let mut data = vec![0f32; cases.len() * 64];
    for (c, &(d, h, w)) in cases.iter().enumerate() {
        data[c * 64 + d * 16 + h * 4 + w] = 1.0;
    }
    let x = Tensor::from_vec(data, (1, cases.len(), 4, 4, 4), &Device::Cpu)?;
    let img = bottleneck_to_image(&x)?;
    assert_eq!(img.dims(), [1, cases.len(), 8, 8]);
    let planes = bottleneck_to_image(&x)?.squeeze(0)?.to_vec3::<f32>()?;
    for (c, &(d, h, w)) in cases.iter().enumerate() {
        let flat = d * 16 + h * 4 + w;
        let (row, col) = (flat / 8, flat % 8);
        assert_eq!(
            planes[c][row][col],
            1.0,
            "channel {c}: voxel {:?}",
            (d, h, w)
        );
        // Depth and height share rows: d = 1, h = 2 is row 3 (= 1·2 + 2/2), not row 1 or 2.
        let total: f32 = planes[c].iter().flatten().sum();
        assert_eq!(total, 1.0);
    }
    assert_eq!((16 + 2 * 4 + 3) / 8, 3);
    assert!(
        bottleneck_to_image(&Tensor::zeros((1, 1, 2, 2, 2), DType::F32, &Device::Cpu)?).is_err()
    );
    Ok(())
}

#[test]
fn tiny_v001_matches_pytorch() -> Result<()> {
    let g = golden("convdeconv.json");
    let cfg: ConvDeconvConfig = serde_json::from_value(g["config"].clone()).expect("config");
    let vb = VarBuilder::from_tensors(params(&g["params"]), DType::F32, &Device::Cpu);
    let model = ConvDeconv::new(cfg, vb)?;
    let y = model.forward(&tensor(&g["input"]))?;
    let expected = tensor(&g["output"]);
    assert_eq!(y.dims(), [2, 1, 32, 32]);
    let err = max_abs_diff(&y, &expected);
    assert!(err < 1e-5, "max abs error {err}");
    Ok(())
}

#[test]
fn parameter_names_are_the_state_dict_keys() -> Result<()> {
    let (varmap, _) = build(ConvDeconvConfig::preset("small32").expect("preset"))?;
    let mut expected: Vec<String> = Vec::new();
    for i in 1..=3 {
        for kind in ["s2", "s1"] {
            for p in ["weight", "bias"] {
                expected.push(format!("conv3d_{kind}_{i}.{p}"));
            }
        }
    }
    for layer in ["deconv2d_s2_1", "deconv2d_s1_1", "deconv2d_s2_2"] {
        for p in ["weight", "bias"] {
            expected.push(format!("{layer}.{p}"));
        }
    }
    expected.sort();
    assert_eq!(names(&varmap), expected);
    Ok(())
}

#[test]
fn small_presets_have_the_documented_shapes_and_counts() -> Result<()> {
    // small32: conv 1→8 k4 (520) + 8→8 1×1 (72); 8→16 k4 (8,208) + 16→16 (272);
    // 16→32 k4 (32,800) + 32→32 (1,056); deconv 32→16 k4 (8,208), 16→16 1×1 (272),
    // 16→1 k4 (257): 51,665.
    let (varmap, model) = build(ConvDeconvConfig::small32())?;
    assert_eq!(param_total(&varmap), 51_665);
    assert_eq!(model.summary(2)?.total_params(), 51_665);
    let x = values(&[2, 1, 32, 32, 32], 1, 0.0, 1.0);
    let y = model.forward(&x)?;
    assert_eq!(y.dims(), [2, 1, 32, 32]);
    assert_eq!(model.summary(2)?.output_shape, y.dims());
    // small64 (shapes only: its 256×256 decoder is for training, not for a debug test).
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let small64 = ConvDeconv::new(ConvDeconvConfig::small64(), vb)?;
    let s = small64.summary(1)?;
    assert_eq!(s.output_shape, [1, 1, 256, 256]);
    // 1→16 k4 (1,040) + 16→16 (272); 16→32 k4 (32,800) + 32→32 (1,056); deconv 32→32 k4
    // (16,416), 32→16 1×1 (528), 16→1 k4 (257): 52,369.
    assert_eq!(s.total_params(), 52_369);
    // small32-wide-v002 (the example's model): the same network in PyTorch (encoder 16/32/64,
    // decoder 32/32, 1×1×1 skips to 4 channels from scales 2 and 1) has 223,465 parameters.
    let cfg = ConvDeconvConfig::preset("small32-wide-v002").unwrap();
    assert_eq!(cfg.version, ConvDeconvVersion::V002);
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let s = ConvDeconv::new(cfg, vb)?.summary(1)?;
    assert_eq!(s.total_params(), 223_465);
    assert_eq!(s.output_shape, [1, 1, 32, 32]);
    Ok(())
}

#[test]
fn v002_small_forward_matches_its_summary_and_trains() -> Result<()> {
    let cfg = ConvDeconvConfig::preset("small32-v002").expect("preset");
    assert_eq!(cfg.version, ConvDeconvVersion::V002);
    let (varmap, model) = build(cfg)?;
    let s = model.summary(1)?;
    // 32³ with 3 scales: sides 16, 8, 4; M = 8 → skips from scale 2 (8³) and scale 1 (16³).
    assert!(s.layers.iter().any(|l| l.name == "skip_2"));
    assert!(s.layers.iter().any(|l| l.name == "skip_1"));
    assert_eq!(s.total_params(), param_total(&varmap));
    let x = values(&[1, 1, 32, 32, 32], 2, 0.0, 1.0);
    let y = model.forward(&x)?;
    assert_eq!(y.dims(), s.output_shape.as_slice());
    assert_grads_reach_all(&varmap, &y.sqr()?.sum_all()?)
}

#[test]
fn gradients_reach_every_parameter() -> Result<()> {
    let cfg = ConvDeconvConfig {
        input_size: 16,
        encoder_channels: vec![2, 3],
        decoder_channels: [3, 2],
        ..ConvDeconvConfig::default()
    };
    let (varmap, model) = build(cfg)?;
    let x = values(&[2, 1, 16, 16, 16], 3, -1.0, 1.0);
    let y = model.forward(&x)?;
    assert_eq!(y.dims(), [2, 1, 32, 32]);
    assert_grads_reach_all(&varmap, &y.sqr()?.sum_all()?)
}

#[test]
fn configs_that_cannot_reshape_are_refused() -> Result<()> {
    let bad = [
        ConvDeconvConfig {
            input_size: 32,
            encoder_channels: vec![8, 16, 32, 64],
            ..ConvDeconvConfig::default()
        },
        ConvDeconvConfig {
            input_size: 48,
            ..ConvDeconvConfig::default()
        },
        ConvDeconvConfig {
            input_size: 64,
            encoder_channels: vec![8, 16, 32],
            ..ConvDeconvConfig::default()
        },
        ConvDeconvConfig {
            encoder_channels: vec![],
            ..ConvDeconvConfig::default()
        },
    ];
    for cfg in bad {
        let err = cfg.validate().expect_err("must be refused");
        assert!(!err.to_string().is_empty());
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        assert!(ConvDeconv::new(cfg, vb).is_err());
    }
    // A wrong input size is an error, not a panic.
    let (_, model) = build(ConvDeconvConfig::small32())?;
    assert!(model
        .forward(&Tensor::zeros(
            (1, 1, 16, 16, 16),
            DType::F32,
            &Device::Cpu
        )?)
        .is_err());
    Ok(())
}

#[test]
fn config_json_round_trips_and_rejects_unknown_fields() {
    let cfg = ConvDeconvConfig::v002();
    let text = serde_json::to_string(&cfg).expect("serialise");
    assert!(text.contains("\"version\":\"v002\""));
    let back: ConvDeconvConfig = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, cfg);
    let partial: ConvDeconvConfig =
        serde_json::from_str(r#"{"input_size": 64, "encoder_channels": [16, 32]}"#)
            .expect("partial");
    assert_eq!(partial.decoder_channels, [512, 512]);
    assert!(serde_json::from_str::<ConvDeconvConfig>(r#"{"input_sise": 64}"#).is_err());
}

#[test]
fn config_files_read_as_toml_or_json_by_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml_path = dir.path().join("small.toml");
    std::fs::write(
        &toml_path,
        "version = \"v002\"\ninput_size = 64\nencoder_channels = [8, 16]\n",
    )
    .expect("write");
    let cfg = ConvDeconvConfig::from_file(&toml_path).expect("toml config");
    assert_eq!(cfg.input_size, 64);
    assert_eq!(cfg.encoder_channels, [8, 16]);
    let json_path = dir.path().join("small.json");
    std::fs::write(&json_path, serde_json::to_string(&cfg).expect("json")).expect("write");
    assert_eq!(
        ConvDeconvConfig::from_file(&json_path).expect("json config"),
        cfg
    );
    std::fs::write(&toml_path, "input_sise = 32\n").expect("write");
    let err = ConvDeconvConfig::from_file(&toml_path).expect_err("unknown field");
    assert!(err.to_string().contains("input_sise"), "{err}");
}

#[test]
fn seeded_init_repeats_per_seed_and_keeps_pytorchs_default_distribution() -> Result<()> {
    let (vars, first, other) =
        seeded_builds(11, |vb| ConvDeconv::new(ConvDeconvConfig::small32(), vb))?;
    let data = vars.data().lock().expect("varmap");
    let mut checked = 0;
    for (name, v) in &first {
        assert_ne!(v, &other[name], "{name} is the same under another seed");
        // PyTorch's default (kaiming_uniform with a = √5): weight and bias uniform in
        // ±1/√fan_in, fan_in = weight.size(1)·taps for Conv3d [O, C, k…] and for
        // ConvTranspose2d [C, O, k…] alike.
        let layer = name.rsplit_once('.').expect("layer.param").0;
        let w = data[&format!("{layer}.weight")].dims().to_vec();
        let fan_in = w[1] * w[2..].iter().product::<usize>();
        let bound = 1.0 / (fan_in as f64).sqrt();
        assert!(
            v.iter().all(|x| f64::from(x.abs()) <= bound * 1.000_001),
            "{name} outside ±{bound}"
        );
        if v.len() >= 1000 {
            let (got, want) = (std_dev(v), bound / 3f64.sqrt());
            assert!(
                (got / want - 1.0).abs() < 0.1,
                "{name}: std {got} vs {want}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} tensors large enough to test");
    Ok(())
}

#[test]
fn training_loss_is_l1_by_default_and_mse_on_request() -> Result<()> {
    use rand::SeedableRng;
    use vnr_formats::dataset::Batch;
    use vnr_models::convdeconv_train::{ConvDeconvLoss, ConvDeconvModel};
    use vnr_train::Model;

    assert_eq!(ConvDeconvLoss::from_name("l1"), Some(ConvDeconvLoss::L1));
    assert_eq!(ConvDeconvLoss::from_name("mse"), Some(ConvDeconvLoss::Mse));
    assert_eq!(ConvDeconvLoss::from_name("l2"), None);
    let cfg = ConvDeconvConfig {
        input_size: 16,
        encoder_channels: vec![2, 2],
        decoder_channels: [2, 2],
        ..ConvDeconvConfig::default()
    };
    let inputs = values(&[2, 1, 16, 16, 16], 7, 0.0, 1.0);
    let targets = values(&[2, 32, 32, 1], 8, 0.0, 1.0);
    let batch = Batch {
        inputs: inputs.clone(),
        targets: targets.clone(),
        extra: Vec::new(),
        samples: Vec::new(),
    };
    let model = ConvDeconvModel::new(cfg, 1, &Device::Cpu).map_err(candle_core::Error::wrap)?;
    assert_eq!(model.loss(), ConvDeconvLoss::L1);
    let diff = (model.predict(&inputs).map_err(candle_core::Error::wrap)?
        - targets.permute((0, 3, 1, 2))?)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let loss = |m: &ConvDeconvModel, rng: &mut rand_chacha::ChaCha8Rng| -> Result<f32> {
        let out = m.step(&batch, rng).map_err(candle_core::Error::wrap)?;
        out.loss.to_scalar::<f32>()
    };
    let l1 = diff.abs()?.mean_all()?.to_scalar::<f32>()?;
    assert!((loss(&model, &mut rng)? - l1).abs() <= 1e-6 * l1);
    let model = model.with_loss(ConvDeconvLoss::Mse);
    let mse = diff.sqr()?.mean_all()?.to_scalar::<f32>()?;
    assert!((loss(&model, &mut rng)? - mse).abs() <= 1e-6 * mse);
    let json = serde_json::to_string(&ConvDeconvLoss::Mse).unwrap();
    assert_eq!(json, "\"mse\"");
    Ok(())
}

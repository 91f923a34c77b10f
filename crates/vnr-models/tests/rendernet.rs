//! RenderNet: TF "SAME" padding and transposed cropping, the projection unit's feature order,
//! the image alignment, shapes and parameter counts, gradients (into the pose too), dropout
//! reproducibility, losses, Phong shading against the original numpy, config readers.

use crate::support::{
    assert_grads_reach_all, golden, max_abs_diff, names, param_total, seeded_builds, std_dev,
    tensor, values,
};
use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use vnr_models::layers::{fold_into_channels, Conv, ConvTranspose, Crop, Padding, ParamSpec};
use vnr_models::rendernet::{
    align_to_image, bce_loss, generate_light_pos, mse_loss, phong_composite, Background,
    PhongParams, RenderNet, RenderNetConfig,
};
use vnr_models::shape_only_var_builder;

/// A RenderNet small enough for a debug-build backward: 4³ voxels → 8³, a 16×16 image.
fn tiny() -> RenderNetConfig {
    RenderNetConfig {
        voxel_size: 4,
        resampled_size: 8,
        drop_last_slice: false,
        conv3d_channels: [2, 2, 2],
        res3d_blocks: 1,
        projection_channels: 4,
        res2d_blocks: 1,
        conv5_channels: 3,
        res_mid_blocks: 1,
        conv6_channels: 2,
        deconv_channels: [2, 2, 2, 2, 2],
        deconv_strides: [2, 1, 2, 1, 1],
        out_channels: 1,
        keep_prob: 1.0,
        dropout_seed: 0,
    }
}

fn build(cfg: RenderNetConfig) -> Result<(VarMap, RenderNet)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = RenderNet::new(cfg, vb)?;
    Ok((varmap, model))
}

fn spec() -> ParamSpec {
    ParamSpec::tf(1, 1, 0.0)
}

#[test]
fn tf_same_pads_the_odd_voxel_after() -> Result<()> {
    // k4 s1 on a length-4 row of ones with a ones kernel: TF pads (1, 2), so the window sums
    // are 3, 4, 3, 2 (PyTorch-style (2, 1) would give 2, 3, 4, 3).
    let w = Tensor::ones((1, 1, 1, 4), DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
    let vb = VarBuilder::from_tensors(
        [("c.weights".to_string(), w), ("c.biases".to_string(), b)].into(),
        DType::F32,
        &Device::Cpu,
    );
    let conv = Conv::new(1, 1, &[1, 4], &[1, 1], Padding::TfSame, spec(), vb.pp("c"))?;
    let y = conv.forward(&Tensor::ones((1, 1, 1, 4), DType::F32, &Device::Cpu)?)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [3.0, 4.0, 3.0, 2.0]);
    Ok(())
}

#[test]
fn tf_same_output_shapes() -> Result<()> {
    let vb = shape_only_var_builder(DType::F32, &Device::Cpu);
    // ceil(in / stride) on every axis, whatever the kernel.
    for (k, stride, input, out) in [
        (5, [2, 2, 2], [128, 128, 128], [64, 64, 64]),
        (5, [2, 2, 2], [127, 9, 1], [64, 5, 1]),
        (3, [1, 1, 2], [64, 64, 64], [64, 64, 32]),
        (3, [1, 1, 2], [64, 64, 63], [64, 64, 32]),
    ] {
        let conv = Conv::new(1, 1, &[k; 3], &stride, Padding::TfSame, spec(), vb.clone())?;
        let dims = conv.output_dims(&[1, 1, input[0], input[1], input[2]])?;
        assert_eq!(dims[2..], out, "k{k} s{stride:?} on {input:?}");
        let x = Tensor::zeros(
            (1, 1, input[0].min(9), input[1].min(9), input[2].min(9)),
            DType::F32,
            &Device::Cpu,
        )?;
        let real = conv.forward(&x)?;
        assert_eq!(real.dims(), conv.output_dims(x.dims())?.as_slice());
    }
    // Transposed "SAME": in · stride.
    for (stride, input) in [(2, 7), (1, 7), (2, 64), (1, 1)] {
        let deconv = ConvTranspose::new(
            1,
            1,
            &[4, 4],
            &[stride, stride],
            Crop::TfSame,
            spec(),
            vb.clone(),
        )?;
        let dims = deconv.output_dims(&[1, 1, input, input])?;
        assert_eq!(dims, [1, 1, input * stride, input * stride]);
    }
    Ok(())
}

/// ⟨conv_same(x), y⟩ = ⟨x, conv_transpose_same(y)⟩ with one kernel: TF's transposed SAME
/// convolution is the adjoint of the SAME convolution from `in·stride` to `in`, which pins
/// down its (asymmetric) cropping.
#[test]
fn tf_same_transposed_conv_is_the_adjoint_of_same_conv() -> Result<()> {
    // (2, 3, 4): a stride larger than the kernel, where TF zero-fills what no tap reaches.
    for (k, stride, small) in [
        (4, 1, 5),
        (4, 2, 5),
        (3, 2, 4),
        (5, 2, 3),
        (4, 1, 6),
        (2, 3, 4),
    ] {
        let big = small * stride;
        let w = values(&[3, 2, k, k], 11, -1.0, 1.0);
        let zero = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu);
        let vb = VarBuilder::from_tensors(
            [
                ("c.weights".to_string(), w.clone()),
                ("c.biases".to_string(), zero(3)?),
                ("t.weights".to_string(), w),
                ("t.biases".to_string(), zero(2)?),
            ]
            .into(),
            DType::F32,
            &Device::Cpu,
        );
        let conv = Conv::new(
            2,
            3,
            &[k, k],
            &[stride, stride],
            Padding::TfSame,
            spec(),
            vb.pp("c"),
        )?;
        let deconv = ConvTranspose::new(
            3,
            2,
            &[k, k],
            &[stride, stride],
            Crop::TfSame,
            spec(),
            vb.pp("t"),
        )?;
        let x = values(&[1, 2, big, big], 12, -1.0, 1.0);
        let y = values(&[1, 3, small, small], 13, -1.0, 1.0);
        let cx = conv.forward(&x)?;
        assert_eq!(cx.dims(), y.dims());
        let ty = deconv.forward(&y)?;
        assert_eq!(ty.dims(), x.dims());
        let lhs = cx.mul(&y)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = x.mul(&ty)?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "k{k} s{stride}: {lhs} vs {rhs}"
        );
    }
    Ok(())
}

#[test]
fn projection_unit_feature_index_is_depth_times_channels_plus_channel() -> Result<()> {
    // [B, C, rows, cols, depth] with C = 3, depth = 4: value = 1000c + 100r + 10col + d.
    let (c_n, r_n, col_n, d_n) = (3usize, 2usize, 2usize, 4usize);
    let mut data = Vec::new();
    for c in 0..c_n {
        for r in 0..r_n {
            for col in 0..col_n {
                for d in 0..d_n {
                    data.push((1000 * c + 100 * r + 10 * col + d) as f32);
                }
            }
        }
    }
    let x = Tensor::from_vec(data, (1, c_n, r_n, col_n, d_n), &Device::Cpu)?;
    let folded = fold_into_channels(&x, 4)?;
    assert_eq!(folded.dims(), [1, d_n * c_n, r_n, col_n]);
    let f = folded.squeeze(0)?.to_vec3::<f32>()?;
    for (feature, plane) in f.iter().enumerate() {
        let (d, c) = (feature / c_n, feature % c_n);
        for (r, row) in plane.iter().enumerate() {
            for (col, &v) in row.iter().enumerate() {
                assert_eq!(v, (1000 * c + 100 * r + 10 * col + d) as f32);
            }
        }
    }
    Ok(())
}

#[test]
fn align_to_image_swaps_and_flips_like_the_original() -> Result<()> {
    // Original: transpose [0, 2, 1, 3, 4] then [:, ::-1]: out[i, j, k] = in[j, N-1-i, k].
    let n = 3;
    let x = Tensor::arange(0f32, 27.0, &Device::Cpu)?.reshape((1, 1, n, n, n))?;
    let y = align_to_image(&x)?
        .squeeze(0)?
        .squeeze(0)?
        .to_vec3::<f32>()?;
    let src = x.squeeze(0)?.squeeze(0)?.to_vec3::<f32>()?;
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                assert_eq!(y[i][j][k], src[j][n - 1 - i][k]);
            }
        }
    }
    Ok(())
}

#[test]
fn reference_config_shapes_and_parameter_count() -> Result<()> {
    let model = RenderNet::new(
        RenderNetConfig::default(),
        shape_only_var_builder(DType::F32, &Device::Cpu),
    )?;
    let s = model.summary(1)?;
    // By hand, conv(cin, cout, k, rank) = cin·cout·k^rank + cout, PReLU adds cout:
    // e_conv1..3: 1,008+8 + 3,472+16 + 13,856+32; res1: 20 × 27,680 + skip 27,680;
    // e_conv4: 1,049,600+1,024; res2: 20 × 9,438,208 + skip 9,438,208;
    // e_conv5: 8,389,120+512; res3: 10 × 2,359,808 + skip 2,359,808; e_conv6: 2,097,408+256;
    // e_conv7..10: 524,416+128, 262,272+128, 131,136+64, 32,800+32, 8,208+16; e_conv11: 257.
    assert_eq!(s.total_params(), 237_257_305);
    let shape_of = |name: &str| {
        s.layers
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.output_shape.clone())
    };
    assert_eq!(
        shape_of("resample_to_camera"),
        Some(vec![1, 1, 128, 128, 128])
    );
    assert_eq!(shape_of("e_conv1"), Some(vec![1, 8, 64, 64, 64]));
    // Stride (1, 1, 2): the depth axis (last) is halved.
    assert_eq!(shape_of("e_conv2"), Some(vec![1, 16, 64, 64, 32]));
    assert_eq!(shape_of("projection_fold"), Some(vec![1, 1024, 64, 64]));
    assert_eq!(shape_of("e_conv5"), Some(vec![1, 512, 64, 64]));
    assert_eq!(shape_of("e_conv6"), Some(vec![1, 256, 64, 64]));
    assert_eq!(shape_of("e_conv7"), Some(vec![1, 128, 128, 128]));
    assert_eq!(shape_of("e_conv9"), Some(vec![1, 32, 512, 512]));
    assert_eq!(s.output_shape, [1, 1, 512, 512]);
    let rgb = RenderNet::new(
        RenderNetConfig::rgb(),
        shape_only_var_builder(DType::F32, &Device::Cpu),
    )?;
    assert_eq!(rgb.summary(2)?.output_shape, [2, 3, 512, 512]);
    Ok(())
}

#[test]
fn parameter_names_follow_the_tf_scopes() -> Result<()> {
    let (varmap, _) = build(tiny())?;
    let n = names(&varmap);
    for expected in [
        "encoder.e_conv1.e_conv1.weights",
        "encoder.e_conv1.e_conv1.biases",
        "encoder.e_conv1.alpha",
        "encoder.e_conv2.e_conv2.weights",
        "encoder.res1_1.con1_3X3.weights",
        "encoder.res1_1.conv2_3x3.biases",
        "encoder.res1_skip.con1_3X3.weights",
        "encoder.e_conv4.e_conv4.weights",
        "encoder.e_conv4.alpha",
        "encoder.res2_1.con1_3X3.weights",
        "encoder.res2_skip.con1_3X3.biases",
        "encoder.e_conv5.e_conv5.weights",
        "encoder.res3_1.conv2_3x3.weights",
        "encoder.res3_skip.con1_3X3.weights",
        "encoder.e_conv6.alpha",
        "encoder.e_conv7.e_conv7.weights",
        "encoder.e_conv7_1.e_conv7_1.weights",
        "encoder.e_conv8.alpha",
        "encoder.e_conv10.e_conv10.biases",
        "encoder.e_conv11.weights",
        "encoder.e_conv11.biases",
    ] {
        assert!(
            n.iter().any(|k| k == expected),
            "missing {expected} in {n:?}"
        );
    }
    // PReLU slopes start at 0 (a ReLU), as the original's constant_initializer(0.0).
    let data = varmap.data().lock().expect("varmap");
    let alpha = data["encoder.e_conv1.alpha"]
        .as_tensor()
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?;
    assert_eq!(alpha, 0.0);
    Ok(())
}

#[test]
fn small_preset_renders_128_pixels_and_matches_its_summary() -> Result<()> {
    let cfg = RenderNetConfig::preset("rendernet-small").expect("preset");
    let (varmap, model) = build(cfg)?;
    let s = model.summary(1)?;
    // Counted by hand as in the reference test.
    assert_eq!(s.total_params(), 304_597);
    assert_eq!(param_total(&varmap), 304_597);
    assert_eq!(s.output_shape, [1, 1, 128, 128]);
    let voxels = values(&[1, 1, 32, 32, 32], 4, 0.0, 1.0)
        .ge(0.7)?
        .to_dtype(DType::F32)?;
    let params = Tensor::new(&[[1.2f32, 0.3, 1.0]], &Device::Cpu)?;
    let y = model.forward_voxels(&voxels, &params, false)?;
    assert_eq!(y.dims(), s.output_shape.as_slice());
    let (lo, hi) = (
        y.min_all()?.to_scalar::<f32>()?,
        y.max_all()?.to_scalar::<f32>()?,
    );
    assert!(lo >= 0.0 && hi <= 1.0, "sigmoid output in [{lo}, {hi}]");
    Ok(())
}

#[test]
fn gradients_reach_every_parameter_and_the_pose() -> Result<()> {
    let (varmap, model) = build(tiny())?;
    let voxels = values(&[2, 1, 4, 4, 4], 5, 0.0, 1.0);
    let pose = Var::from_tensor(&Tensor::new(
        &[[1.3f32, 0.4, 1.1], [0.2, -0.3, 0.9]],
        &Device::Cpu,
    )?)?;
    let y = model.forward_voxels(&voxels, pose.as_tensor(), true)?;
    assert_eq!(y.dims(), [2, 1, 16, 16]);
    let target = values(&[2, 1, 16, 16], 6, 0.0, 1.0);
    let loss = bce_loss(&y, &target)?;
    assert_grads_reach_all(&varmap, &loss)?;
    let grads = loss.backward()?;
    let g = grads
        .get(pose.as_tensor())
        .expect("pose gradient")
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?;
    assert!(g > 0.0, "no gradient reaches the pose");
    Ok(())
}

#[test]
fn dropout_is_reproducible_from_its_seed_and_off_in_eval() -> Result<()> {
    let cfg = RenderNetConfig {
        keep_prob: 0.5,
        dropout_seed: 9,
        ..tiny()
    };
    let (_, model) = build(cfg)?;
    let grid = values(&[1, 1, 8, 8, 8], 7, 0.0, 1.0);
    let a = model.forward_t(&grid, true)?;
    model.reseed_dropout(9);
    let b = model.forward_t(&grid, true)?;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let c = model.forward_t(&grid, true)?;
    assert!(max_abs_diff(&a, &c) > 0.0, "a new mask each call");
    let e1 = model.forward_t(&grid, false)?;
    let e2 = model.forward_t(&grid, false)?;
    assert_eq!(max_abs_diff(&e1, &e2), 0.0);
    Ok(())
}

#[test]
fn losses_match_their_formulas() -> Result<()> {
    let dev = Device::Cpu;
    let pred = Tensor::new(
        &[[[[0.25f32, 0.5], [0.75, 0.9]]], [[[0.1, 0.2], [0.3, 0.4]]]],
        &dev,
    )?;
    let target = Tensor::new(
        &[[[[1f32, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [1.0, 1.0]]]],
        &dev,
    )?;
    let p = pred.flatten_all()?.to_vec1::<f32>()?;
    let t = target.flatten_all()?.to_vec1::<f32>()?;
    let per_image = |i: usize| -> f64 {
        (0..4)
            .map(|j| {
                let (p, t) = (p[i * 4 + j] as f64, t[i * 4 + j] as f64);
                -(t * (1e-6 + p).ln() + (1.0 - t) * (1e-6 + 1.0 - p).ln())
            })
            .sum()
    };
    let expected = (per_image(0) + per_image(1)) / 2.0;
    let bce = bce_loss(&pred, &target)?.to_scalar::<f32>()? as f64;
    assert!((bce - expected).abs() < 1e-5, "{bce} vs {expected}");
    let mse = mse_loss(&pred, &target)?.to_scalar::<f32>()? as f64;
    let expected: f64 = p
        .iter()
        .zip(&t)
        .map(|(p, t)| ((p - t) as f64).powi(2))
        .sum::<f64>()
        / 8.0;
    assert!((mse - expected).abs() < 1e-6);
    Ok(())
}

#[test]
fn phong_matches_the_original_numpy() -> Result<()> {
    let g = golden("phong.json");
    let normals = tensor(&g["normals_nchw"]);
    let light = tensor(&g["light_dir"]);
    // generate_light_pos reproduces the library function.
    let args = g["light_pos_args"].as_array().expect("args");
    let rows = light.to_vec2::<f32>()?;
    for (arg, row) in args.iter().zip(&rows) {
        let (e, a) = (arg[0].as_f64().expect("e"), arg[1].as_f64().expect("a"));
        let pos = generate_light_pos(e, a);
        for (p, r) in pos.iter().zip(row) {
            assert!((*p as f32 - r).abs() < 1e-6);
        }
    }
    for case in g["cases"].as_array().expect("cases") {
        let params = PhongParams {
            background: if case["background"] == "White" {
                Background::White
            } else {
                Background::Black
            },
            with_mask: case["with_mask"].as_bool().expect("with_mask"),
            ..PhongParams::default()
        };
        let out = phong_composite(&normals, &light, &params)?;
        let err = max_abs_diff(&out, &tensor(&case["output_nchw"]));
        assert!(err < 1e-5, "{params:?}: max abs error {err}");
    }
    assert!(phong_composite(&normals.narrow(1, 0, 2)?, &light, &PhongParams::default()).is_err());
    Ok(())
}

#[test]
fn phong_is_differentiable_in_the_normals() -> Result<()> {
    let normals = Var::from_tensor(&values(&[1, 3, 4, 4], 8, 0.2, 0.9))?;
    let light = Tensor::new(
        &[generate_light_pos(60.0, 250.0).map(|v| v as f32)],
        &Device::Cpu,
    )?;
    let out = phong_composite(
        normals.as_tensor(),
        &light,
        &PhongParams {
            with_mask: false,
            ..PhongParams::default()
        },
    )?;
    let grads = out.sum_all()?.backward()?;
    let g = grads
        .get(normals.as_tensor())
        .expect("gradient")
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?;
    assert!(g > 0.0);
    Ok(())
}

#[test]
fn original_config_files_are_read() {
    let Some(path) = vnr_formats::testing::fixture("rendernet/config_RenderNet.json") else {
        return;
    };
    let cfg = RenderNetConfig::from_original_file(&path).expect("shader config");
    assert_eq!(cfg.out_channels, 1, "is_greyscale True");
    assert_eq!(cfg.keep_prob, 1.0);
    assert_eq!(cfg.resampled_size, 128);
    let Some(texture) = vnr_formats::testing::fixture("rendernet/config_RenderNet_texture.json")
    else {
        return;
    };
    let cfg = RenderNetConfig::from_original_file(&texture).expect("texture config");
    assert_eq!(cfg.out_channels, 3, "no is_greyscale: RGB");
}

#[test]
fn bad_configs_are_typed_errors() {
    assert!(RenderNetConfig::from_original("{", "t").is_err());
    assert!(RenderNetConfig::from_original(r#"{"is_greyscale": 3}"#, "t").is_err());
    assert!(RenderNetConfig::from_original(r#"{"keep_prob": 0}"#, "t").is_err());
    assert!(RenderNetConfig::from_original(r#"[1]"#, "t").is_err());
    let missing = std::path::Path::new("/nonexistent/config.json");
    assert!(RenderNetConfig::from_original_file(missing).is_err());
    let zero = RenderNetConfig {
        conv5_channels: 0,
        ..RenderNetConfig::default()
    };
    assert!(zero.validate().is_err());
}

#[test]
fn seeded_init_repeats_per_seed_and_keeps_the_original_distributions() -> Result<()> {
    let (vars, first, other) = seeded_builds(7, |vb| RenderNet::new(RenderNetConfig::small(), vb))?;
    let data = vars.data().lock().expect("varmap");
    let mut checked = 0;
    for (name, v) in &first {
        let dims = data[name].dims();
        if name.ends_with(".weights") {
            assert_ne!(v, &other[name], "{name} is the same under another seed");
            // Xavier-uniform: conv kernels [O, C, k…] and transposed ones [C, O, k…] both have
            // fan_in + fan_out = (O + C)·taps, so std = √(2 / ((O + C)·taps)).
            let taps: usize = dims[2..].iter().product();
            let want = (2.0 / ((dims[0] + dims[1]) * taps) as f64).sqrt();
            if v.len() >= 2000 {
                let got = std_dev(v);
                assert!(
                    (got / want - 1.0).abs() < 0.1,
                    "{name}: std {got} vs {want}"
                );
                checked += 1;
            }
            let bound = (want * 3f64.sqrt()) as f32 * 1.000_001;
            assert!(
                v.iter().all(|x| x.abs() <= bound),
                "{name} outside ±{bound}"
            );
        } else {
            // Biases are constants (0.001 for layer_util layers, 0 for slim ones), PReLU α 0.
            assert!(v.iter().all(|&x| x == v[0]), "{name} is not constant");
            let want: &[f32] = if name.ends_with("alpha") {
                &[0.0]
            } else {
                &[0.0, 0.001]
            };
            assert!(want.contains(&v[0]), "{name} = {}", v[0]);
            assert_eq!(v, &other[name], "{name} depends on the seed");
        }
    }
    assert!(checked >= 10, "only {checked} kernels large enough to test");
    Ok(())
}

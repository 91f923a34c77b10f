//! WeightNormLinear, PReLU, LayerNorm: parameter names, init, values, gradients.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use vnr_ops::gradcheck::deterministic_values as values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_ops::nn::activation::{prelu, PReLU};
use vnr_ops::nn::linear::{weight_norm_linear, WeightNormLinear};
use vnr_ops::nn::norm::{layer_norm, LayerNorm};

fn tensor(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Result<Tensor> {
    Tensor::from_vec(
        values(shape.iter().product(), seed, lo, hi),
        shape,
        &Device::Cpu,
    )
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
}

#[test]
fn weight_norm_linear_names_init_and_forward() -> Result<()> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
    let layer = weight_norm_linear(5, 3, vb.pp("lin0"))?;
    let mut names: Vec<String> = map.data().lock().expect("varmap").keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["lin0.bias", "lin0.weight_g", "lin0.weight_v"]);
    // g = ‖v‖ at init, so the effective weight is v, within nn.Linear's ±1/√in bound.
    assert_eq!(layer.weight_g().dims(), [3, 1]);
    assert!(max_diff(&layer.weight()?, layer.weight_v())? < 1e-12);
    let bound = 1.0 / 5f64.sqrt();
    let v_max = layer
        .weight_v()
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    assert!(v_max <= bound);
    // The stored variable itself was initialised (not a copy).
    let stored = map.data().lock().expect("varmap")["lin0.weight_g"]
        .as_tensor()
        .clone();
    assert!(max_diff(&stored, layer.weight_g())? == 0.0);
    // Forward on [2, 4, 5]: x Wᵀ + b with W = g v / ‖v‖.
    let x = tensor(&[2, 4, 5], 1, -1.0, 1.0)?;
    let g = tensor(&[3, 1], 2, 0.5, 2.0)?;
    let v = tensor(&[3, 5], 3, -1.0, 1.0)?;
    let b = tensor(&[3], 4, -1.0, 1.0)?;
    let layer = WeightNormLinear::new(g.clone(), v.clone(), b.clone())?;
    let w = v.broadcast_mul(&g.broadcast_div(&v.sqr()?.sum_keepdim(1)?.sqrt()?)?)?;
    let want = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
    assert!(max_diff(&layer.forward(&x)?, &want)? < 1e-12);
    assert!(WeightNormLinear::new(g.reshape(3)?, v.clone(), b.clone()).is_err());
    Ok(())
}

#[test]
fn weight_norm_linear_gradients() -> Result<()> {
    let inputs = [
        tensor(&[3, 4], 5, -1.0, 1.0)?,
        tensor(&[2, 1], 6, 0.5, 2.0)?,
        tensor(&[2, 4], 7, -1.0, 1.0)?,
        tensor(&[2], 8, -1.0, 1.0)?,
    ];
    check_gradients(
        |v| WeightNormLinear::new(v[1].clone(), v[2].clone(), v[3].clone())?.forward(&v[0]),
        &inputs,
        &GradCheckConfig::default(),
    )?;
    Ok(())
}

#[test]
fn prelu_values_channels_and_gradients() -> Result<()> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
    let act = prelu(3, 0.25, vb.pp("act"))?;
    assert!(map
        .data()
        .lock()
        .expect("varmap")
        .contains_key("act.weight"));
    let x = Tensor::new(&[[[-2f64, 0.0], [1.0, -4.0], [3.0, -1.0]]], &Device::Cpu)?;
    let y: Vec<Vec<Vec<f64>>> = act.forward(&x)?.to_vec3()?;
    assert_eq!(y, [[[-0.5, 0.0], [1.0, -1.0], [3.0, -0.25]]]);
    // Wrong channel count is an error; a single slope broadcasts anywhere.
    assert!(act.forward(&x.t()?).is_err());
    let single = PReLU::new(Tensor::new(&[0.1f64], &Device::Cpu)?)?;
    assert_eq!(single.forward(&x.t()?)?.dims(), [1, 2, 3]);
    // Per-channel slopes over dim 1 of [N, C, D, H, W], and a rank-1 input (channels on dim 0).
    let x5 = tensor(&[2, 3, 2, 1, 3], 9, -1.0, 1.0)?;
    let alpha = tensor(&[3], 10, 0.0, 0.5)?;
    check_gradients(
        |v| PReLU::new(v[1].clone())?.forward(&v[0]),
        &[x5, alpha.clone()],
        &GradCheckConfig::default(),
    )?;
    check_gradients(
        |v| PReLU::new(v[1].clone())?.forward(&v[0]),
        &[tensor(&[3], 11, -1.0, 1.0)?, alpha],
        &GradCheckConfig::default(),
    )?;
    Ok(())
}

#[test]
fn layer_norm_values_and_gradients() -> Result<()> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
    let ln = layer_norm(4, 1e-5, vb.pp("ln"))?;
    let x = Tensor::new(&[[1f64, 2., 3., 6.]], &Device::Cpu)?;
    let y: Vec<Vec<f64>> = ln.forward(&x)?.to_vec2()?;
    // mean 3, biased variance 3.5.
    let s = (3.5f64 + 1e-5).sqrt();
    for (g, w) in y[0].iter().zip([-2.0 / s, -1.0 / s, 0.0, 3.0 / s]) {
        assert!((g - w).abs() < 1e-12);
    }
    assert!(ln
        .forward(&Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?)
        .is_err());
    // Two normalised dims, gradients for input, weight and bias.
    let inputs = [
        tensor(&[2, 3, 2, 4], 12, -2.0, 2.0)?,
        tensor(&[2, 4], 13, 0.5, 1.5)?,
        tensor(&[2, 4], 14, -1.0, 1.0)?,
    ];
    check_gradients(
        |v| LayerNorm::new(v[1].clone(), v[2].clone(), 1e-5)?.forward(&v[0]),
        &inputs,
        &GradCheckConfig {
            atol: 1e-5,
            ..Default::default()
        },
    )?;
    // f32 and bf16 run and keep their dtype.
    let ln2 = layer_norm(
        (2, 4),
        1e-5,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu).pp("ln2"),
    )?;
    let x32 = inputs[0].to_dtype(DType::F32)?;
    assert_eq!(ln2.forward(&x32)?.dtype(), DType::F32);
    assert_eq!(
        ln2.forward(&x32.to_dtype(DType::BF16)?)?.dtype(),
        DType::BF16
    );
    Ok(())
}

/// `x` `[B, C, …]` in f32 whose elements, shifted by `shift` `[C]` (the bias, or zeros),
/// are at least 0.125 away from 0, where the gradients are defined.
fn away_from_kinks(shape: &[usize], seed: u64, shift: &Tensor) -> Result<Tensor> {
    let x = tensor(shape, seed, -2.0, 2.0)?.to_dtype(DType::F32)?;
    let mut s = vec![1; shape.len()];
    s[1] = shape[1];
    let v = x.broadcast_add(&shift.reshape(s)?)?;
    &x + v.gt(0.0)?.to_dtype(DType::F32)?.affine(0.25, -0.125)?
}

/// Checks a fused per-channel op on `[x, params…]` against its reference on `x` and on a
/// strided copy of it (values exactly, gradients of every operand to 1e-5), and its gradients
/// by finite differences in f64.
fn check_channelwise(
    fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
    x: &Tensor,
    params: &[Tensor],
) -> Result<()> {
    let r = tensor(x.dims(), 9, -1.0, 1.0)?.to_dtype(DType::F32)?;
    let last = x.rank() - 1;
    for input in [
        x.clone(),
        x.transpose(last - 1, last)?
            .contiguous()?
            .transpose(last - 1, last)?,
    ] {
        let vars = std::iter::once(&input)
            .chain(params)
            .map(candle_core::Var::from_tensor)
            .collect::<Result<Vec<_>>>()?;
        let operands: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let ours = fused(&operands)?;
        let want = reference(&operands)?;
        assert_eq!(
            max_diff(&ours.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)?,
            0.0
        );
        let g_ours = (&ours * &r)?.sum_all()?.backward()?;
        let g_want = (&want * &r)?.sum_all()?.backward()?;
        for t in &operands {
            let (a, b) = (g_ours.get(t).expect("grad"), g_want.get(t).expect("grad"));
            let scale = b
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let diff = max_diff(&a.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?)?;
            assert!(diff <= 1e-5 * scale.max(1.0), "gradient differs by {diff}");
        }
    }
    let f64_operands = std::iter::once(x)
        .chain(params)
        .map(|t| t.to_dtype(DType::F64))
        .collect::<Result<Vec<_>>>()?;
    check_gradients(fused, &f64_operands, &GradCheckConfig::default())?;
    Ok(())
}

#[test]
fn fused_bias_leaky_relu_agrees_with_its_reference_and_finite_differences() -> Result<()> {
    use vnr_ops::channelwise::{
        bias_add, bias_add_reference, bias_leaky_relu, bias_leaky_relu_reference,
    };
    let bias = Tensor::new(&[0.3f32, -0.2, 0.05], &Device::Cpu)?;
    let x = away_from_kinks(&[2, 3, 4, 5], 4, &bias)?;
    for slope in [0.01, 0.0, -0.3, 1.0, 2.5] {
        check_channelwise(
            |v| bias_leaky_relu(&v[0], &v[1], slope),
            |v| bias_leaky_relu_reference(&v[0], &v[1], slope),
            &x,
            std::slice::from_ref(&bias),
        )?;
    }
    check_channelwise(
        |v| bias_add(&v[0], &v[1]),
        |v| bias_add_reference(&v[0], &v[1]),
        &x,
        std::slice::from_ref(&bias),
    )?;
    // PyTorch's gradient at exactly 0 is the slope; a bias of the wrong size is an error.
    let zero = candle_core::Var::zeros((1, 2), DType::F32, &Device::Cpu)?;
    let no_bias = Tensor::zeros(2, DType::F32, &Device::Cpu)?;
    let g = bias_leaky_relu(zero.as_tensor(), &no_bias, 0.01)?
        .sum_all()?
        .backward()?;
    assert_eq!(
        g.get(zero.as_tensor()).expect("grad").to_vec2::<f32>()?,
        [[0.01; 2]]
    );
    assert!(bias_leaky_relu(zero.as_tensor(), &bias, 0.01).is_err());
    assert!(bias_add(&bias, &bias).is_err());
    Ok(())
}

#[test]
fn fused_prelu_agrees_with_its_reference_and_finite_differences() -> Result<()> {
    use vnr_ops::channelwise::{prelu as fused_prelu, prelu_reference};
    let alpha = Tensor::new(&[0.25f32, -0.1, 1.5], &Device::Cpu)?;
    let zeros = alpha.zeros_like()?;
    // Planes of several sizes: [B, C] (one element each), 3D volumes, and planes longer than
    // the kernel's 256-element summation blocks.
    for shape in [&[5, 3][..], &[2, 3, 2, 3, 4], &[1, 3, 700]] {
        let x = away_from_kinks(shape, 5, &zeros)?;
        check_channelwise(
            |v| fused_prelu(&v[0], &v[1]),
            |v| prelu_reference(&v[0], &v[1]),
            &x,
            std::slice::from_ref(&alpha),
        )?;
    }
    // At exactly 0 PyTorch's input gradient is α and α's gradient gets nothing.
    let x = candle_core::Var::zeros((2, 3, 2), DType::F32, &Device::Cpu)?;
    let a = candle_core::Var::from_tensor(&alpha)?;
    let g = fused_prelu(x.as_tensor(), a.as_tensor())?
        .sum_all()?
        .backward()?;
    let dx = g.get(x.as_tensor()).expect("grad");
    assert_eq!(
        max_diff(
            &dx.to_dtype(DType::F64)?,
            &alpha.broadcast_as((2, 2, 3))?.t()?.to_dtype(DType::F64)?
        )?,
        0.0
    );
    assert_eq!(
        g.get(a.as_tensor()).expect("grad").to_vec1::<f32>()?,
        [0.0; 3]
    );
    // Empty planes give empty outputs and zero gradients; wrong parameter sizes are errors.
    let empty = candle_core::Var::zeros((2, 3, 0), DType::F32, &Device::Cpu)?;
    let g = fused_prelu(empty.as_tensor(), a.as_tensor())?
        .sum_all()?
        .backward()?;
    assert_eq!(
        g.get(a.as_tensor()).expect("grad").to_vec1::<f32>()?,
        [0.0; 3]
    );
    // Other dtypes (and mixed ones) run the reference composition.
    let x3 = away_from_kinks(&[2, 3, 4], 6, &zeros)?;
    let want = prelu_reference(&x3, &alpha)?;
    let half = fused_prelu(&x3.to_dtype(DType::F16)?, &alpha.to_dtype(DType::F16)?)?;
    assert!(max_diff(&half.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)? < 1e-2);
    let mixed = fused_prelu(&x3, &alpha.to_dtype(DType::F64)?)?;
    assert_eq!(mixed.dtype(), DType::F32);
    assert_eq!(
        max_diff(&mixed.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)?,
        0.0
    );
    assert!(fused_prelu(x.as_tensor(), &alpha.narrow(0, 0, 2)?).is_err());
    assert!(fused_prelu(&alpha, &alpha).is_err());
    Ok(())
}

#[test]
fn fused_bias_prelu_agrees_with_its_reference_and_finite_differences() -> Result<()> {
    use vnr_ops::channelwise::{bias_prelu, bias_prelu_reference};
    let bias = Tensor::new(&[0.3f32, -0.2, 0.05], &Device::Cpu)?;
    let alpha = Tensor::new(&[0.25f32, -0.1, 1.5], &Device::Cpu)?;
    // [B, C] planes of one element, 3D volumes, and planes longer than the 256-element
    // summation blocks (with a remainder that is not a multiple of the 8 lanes).
    for shape in [&[5, 3][..], &[2, 3, 2, 3, 4], &[1, 3, 700]] {
        let x = away_from_kinks(shape, 7, &bias)?;
        check_channelwise(
            |v| bias_prelu(&v[0], &v[1], &v[2]),
            |v| bias_prelu_reference(&v[0], &v[1], &v[2]),
            &x,
            &[bias.clone(), alpha.clone()],
        )?;
    }
    // At exactly 0 (x = −bias) the input gradient is α, as PyTorch's PReLU.
    let x = candle_core::Var::from_tensor(&bias.neg()?.reshape((1, 3))?)?;
    let g = bias_prelu(x.as_tensor(), &bias, &alpha)?
        .sum_all()?
        .backward()?;
    assert_eq!(
        g.get(x.as_tensor()).expect("grad").to_vec2::<f32>()?,
        [alpha.to_vec1::<f32>()?]
    );
    // Other dtypes run the reference; parameters of the wrong size are errors.
    let x3 = away_from_kinks(&[2, 3, 4], 8, &bias)?;
    let want = bias_prelu_reference(&x3, &bias, &alpha)?;
    let half = bias_prelu(
        &x3.to_dtype(DType::F16)?,
        &bias.to_dtype(DType::F16)?,
        &alpha.to_dtype(DType::F16)?,
    )?;
    assert!(max_diff(&half.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)? < 1e-2);
    assert!(bias_prelu(&x3, &bias, &alpha.narrow(0, 0, 2)?).is_err());
    assert!(bias_prelu(&x3, &bias.narrow(0, 0, 2)?, &alpha).is_err());
    Ok(())
}

#[test]
fn fused_bias_residual_add_agrees_with_its_reference_and_finite_differences() -> Result<()> {
    use vnr_ops::channelwise::{bias_residual_add, bias_residual_add_reference};
    let bias = Tensor::new(&[0.3f32, -0.2, 0.05], &Device::Cpu)?;
    for shape in [&[5, 3][..], &[2, 3, 2, 3, 4], &[1, 3, 700]] {
        let x = tensor(shape, 10, -1.0, 1.0)?.to_dtype(DType::F32)?;
        let skip = tensor(shape, 11, -1.0, 1.0)?.to_dtype(DType::F32)?;
        check_channelwise(
            |v| bias_residual_add(&v[0], &v[1], &v[2]),
            |v| bias_residual_add_reference(&v[0], &v[1], &v[2]),
            &x,
            &[bias.clone(), skip],
        )?;
    }
    // A strided skip, other dtypes, and shapes that do not match.
    let x = tensor(&[2, 3, 4, 5], 12, -1.0, 1.0)?.to_dtype(DType::F32)?;
    let skip = tensor(&[2, 3, 5, 4], 13, -1.0, 1.0)?
        .to_dtype(DType::F32)?
        .transpose(2, 3)?;
    let f64 = |t: &Tensor| t.to_dtype(DType::F64);
    let want = f64(&bias_residual_add_reference(&x, &bias, &skip)?)?;
    assert_eq!(
        max_diff(&f64(&bias_residual_add(&x, &bias, &skip)?)?, &want)?,
        0.0
    );
    let half = bias_residual_add(
        &x.to_dtype(DType::F16)?,
        &bias.to_dtype(DType::F16)?,
        &skip.to_dtype(DType::F16)?,
    )?;
    assert!(max_diff(&f64(&half)?, &want)? < 1e-2);
    assert!(bias_residual_add(&x, &bias, &x.narrow(3, 0, 4)?).is_err());
    assert!(bias_residual_add(&x, &bias.narrow(0, 0, 2)?, &x).is_err());
    Ok(())
}

#[test]
fn huge_layer_sizes_are_errors_not_aborted_allocations() {
    use vnr_ops::nn::conv::{
        conv3d, conv3d_no_bias, conv_transpose3d, conv_transpose3d_no_bias, Conv3dConfig,
        ConvTranspose3dConfig,
    };
    use vnr_ops::nn::dropout::dropout_mask;
    const BIG: usize = 1 << 40;
    const HALF: usize = usize::MAX / 2 + 1;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let (c, t) = (Conv3dConfig::default(), ConvTranspose3dConfig::default());
    // Kernel sides whose cube overflowed, channel counts whose product overflowed, and weights
    // of 2^40 elements that aborted the allocation.
    for (i, o, k) in [
        (2, 2, usize::MAX),
        (2, 2, 1 << 22),
        (BIG, BIG, 1),
        (HALF, 2, 3),
        (1 << 20, 1 << 20, 1),
    ] {
        assert!(
            conv3d(i, o, k, c, vb.pp("c")).is_err(),
            "conv3d {i} {o} {k}"
        );
        assert!(conv3d_no_bias(i, o, k, c, vb.pp("c")).is_err());
        assert!(conv_transpose3d(i, o, k, t, vb.pp("t")).is_err());
        assert!(conv_transpose3d_no_bias(i, o, k, t, vb.pp("t")).is_err());
    }
    let err = conv3d(BIG, 1, 1, c, vb.pp("c")).unwrap_err().to_string();
    assert!(
        err.contains("Conv3d") && err.contains("1099511627776"),
        "{err}"
    );
    assert!(prelu(BIG, 0.25, vb.pp("p")).is_err());
    for (i, o) in [(BIG, BIG), (1, BIG), (HALF, 2)] {
        assert!(weight_norm_linear(i, o, vb.pp("l")).is_err(), "{i} {o}");
    }
    assert!(layer_norm(BIG, 1e-5, vb.pp("n")).is_err());
    assert!(layer_norm((BIG, BIG), 1e-5, vb.pp("n")).is_err());
    assert!(layer_norm((HALF, 2, 2), 1e-5, vb.pp("n")).is_err());
    assert!(dropout_mask(0, BIG, 0.5, DType::F32, &dev).is_err());
    assert!(dropout_mask(0, (BIG, BIG), 0.5, DType::F32, &dev).is_err());
    // Nothing was created for the refused layers; ordinary sizes still work.
    assert!(varmap.all_vars().is_empty());
    assert!(conv3d(2, 3, 3, c, vb.pp("ok")).is_ok());
}

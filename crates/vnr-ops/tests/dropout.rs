//! Counter-based dropout and the fused bias + ReLU + dropout: agreement with the plain
//! composition, finite-difference gradients, reproducibility across thread counts.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::deterministic_values as values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_ops::nn::dropout::{
    bias_relu_dropout, bias_relu_dropout_reference, dropout, dropout_mask, DropoutKeys,
};

fn tensor(shape: &[usize], seed: u64, lo: f64, hi: f64, dtype: DType) -> Result<Tensor> {
    Tensor::from_vec(
        values(shape.iter().product(), seed, lo, hi),
        shape,
        &Device::Cpu,
    )?
    .to_dtype(dtype)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

#[test]
fn fused_matches_the_composition_forward_and_backward() -> Result<()> {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        for p in [0.0, 0.2, 0.5] {
            let x = Var::from_tensor(&tensor(&[300, 37], 1, -1.0, 1.0, dtype)?)?;
            let b = Var::from_tensor(&tensor(&[37], 2, -0.5, 0.5, dtype)?)?;
            let w = tensor(&[300, 37], 3, -1.0, 1.0, dtype)?;
            let fused = bias_relu_dropout(&x, &b, p, 9)?;
            let plain = bias_relu_dropout_reference(&x, &b, p, 9)?;
            assert_eq!(max_diff(&fused, &plain)?, 0.0, "{dtype:?} p = {p}");
            let gf = (fused * &w)?.sum_all()?.backward()?;
            let gp = (plain * &w)?.sum_all()?.backward()?;
            for v in [&x, &b] {
                let (f, r) = (gf.get(v).expect("grad"), gp.get(v).expect("grad"));
                assert!(max_diff(f, r)? <= tol, "{dtype:?} p = {p}");
            }
        }
    }
    Ok(())
}

#[test]
fn fused_gradients_match_finite_differences() -> Result<()> {
    let x = tensor(&[40, 9], 4, -1.0, 1.0, DType::F64)?;
    let b = tensor(&[9], 5, -0.3, 0.3, DType::F64)?;
    for p in [0.0, 0.3] {
        check_gradients(
            |v| bias_relu_dropout(&v[0], &v[1], p, 11),
            &[x.clone(), b.clone()],
            &GradCheckConfig::default(),
        )?;
    }
    Ok(())
}

#[test]
fn masks_follow_the_key_not_the_thread_count() -> Result<()> {
    let x = tensor(&[2048, 64], 6, -1.0, 1.0, DType::F32)?;
    let b = tensor(&[64], 7, -0.1, 0.1, DType::F32)?;
    let many = bias_relu_dropout(&x, &b, 0.2, 42)?;
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(candle_core::Error::wrap)?
        .install(|| bias_relu_dropout(&x, &b, 0.2, 42))?;
    assert_eq!(max_diff(&many, &one)?, 0.0);
    assert!(max_diff(&many, &bias_relu_dropout(&x, &b, 0.2, 43)?)? > 0.0);
    // About p of the elements are dropped, the rest scaled by 1 / (1 − p).
    let mask = dropout_mask(42, (2048, 64), 0.2, DType::F32, &Device::Cpu)?;
    let kept = mask
        .gt(0.0)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    assert!((kept - 0.8).abs() < 0.01, "kept {kept}");
    assert_eq!(mask.max_all()?.to_scalar::<f32>()?, 1.25);
    Ok(())
}

#[test]
fn plain_dropout_and_keys_reproduce() -> Result<()> {
    let x = tensor(&[64, 8], 8, 0.5, 1.0, DType::F32)?;
    let keys = DropoutKeys::new(3);
    let a = dropout(&x, 0.5, keys.next_key())?;
    keys.reseed(3);
    assert_eq!(max_diff(&a, &dropout(&x, 0.5, keys.next_key())?)?, 0.0);
    assert_eq!(max_diff(&x, &dropout(&x, 0.0, 1)?)?, 0.0);
    Ok(())
}

#[test]
fn bad_shapes_and_probabilities_are_errors() -> Result<()> {
    let x = tensor(&[4, 3], 9, -1.0, 1.0, DType::F32)?;
    assert!(bias_relu_dropout(&x, &tensor(&[4], 1, 0.0, 1.0, DType::F32)?, 0.1, 0).is_err());
    assert!(bias_relu_dropout(&x.unsqueeze(0)?, &x.get(0)?, 0.1, 0).is_err());
    assert!(bias_relu_dropout(&x, &x.get(0)?, 1.0, 0).is_err());
    assert!(dropout(&x, -0.1, 0).is_err());
    Ok(())
}

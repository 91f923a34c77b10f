//! cumsum / cumprod: fast == reference, gradients by finite differences (zeros included), errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::cumulative::{cumprod, cumsum, reference};
use vnr_ops::gradcheck::deterministic_values as values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};

fn split(dims: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        dims[..dim].iter().product(),
        dims[dim],
        dims[dim + 1..].iter().product(),
    )
}

fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "index {i}: {x} vs {y}"
        );
    }
}

#[test]
fn fast_matches_reference_on_every_dim() -> Result<()> {
    let dims = [3usize, 17, 5, 4];
    let data = values(dims.iter().product(), 1, 0.5, 1.5);
    let x = Tensor::from_vec(data.clone(), &dims[..], &Device::Cpu)?;
    for dim in 0..dims.len() {
        for exclusive in [false, true] {
            let s = split(&dims, dim);
            let got = cumsum(&x, dim, exclusive)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            assert_close(&got, &reference::cumsum(&data, s, exclusive), 1e-12);
            let got = cumprod(&x, dim, exclusive)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            assert_close(&got, &reference::cumprod(&data, s, exclusive), 1e-12);
            // f32 runs the same kernel.
            let got32 = cumprod(&x.to_dtype(DType::F32)?, dim, exclusive)?
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            assert_close(&got32, &reference::cumprod(&data, s, exclusive), 1e-4);
        }
    }
    Ok(())
}

#[test]
fn known_values_and_exclusive_identity() -> Result<()> {
    let x = Tensor::new(&[[2f32, 3., 0., 5.]], &Device::Cpu)?;
    assert_eq!(cumprod(&x, 1, false)?.to_vec2::<f32>()?, [[2., 6., 0., 0.]]);
    assert_eq!(cumprod(&x, 1, true)?.to_vec2::<f32>()?, [[1., 2., 6., 0.]]);
    assert_eq!(cumsum(&x, 1, false)?.to_vec2::<f32>()?, [[2., 5., 5., 10.]]);
    assert_eq!(cumsum(&x, 1, true)?.to_vec2::<f32>()?, [[0., 2., 5., 5.]]);
    // f16 runs in f32 and comes back as f16.
    let h = cumsum(&x.to_dtype(DType::F16)?, 1, false)?;
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(
        h.to_dtype(DType::F32)?.to_vec2::<f32>()?,
        [[2., 5., 5., 10.]]
    );
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let cfg = GradCheckConfig::default();
    // Odd sizes, batch > 1, zeros (single and adjacent) in the scanned rows.
    let mut data = values(3 * 7 * 2, 2, -1.5, 1.5);
    for i in [0usize, 5, 6, 13, 20, 21, 41] {
        data[i] = 0.0;
    }
    let x = Tensor::from_vec(data, (3, 7, 2), &Device::Cpu)?;
    for dim in 0..3 {
        for exclusive in [false, true] {
            check_gradients(
                |v| cumprod(&v[0], dim, exclusive),
                std::slice::from_ref(&x),
                &cfg,
            )?;
            check_gradients(
                |v| cumsum(&v[0], dim, exclusive),
                std::slice::from_ref(&x),
                &cfg,
            )?;
        }
    }
    // A non-contiguous input.
    check_gradients(|v| cumprod(&v[0].t()?, 0, false), &[x.get(0)?], &cfg)?;
    Ok(())
}

#[test]
fn cumprod_backward_matches_reference_with_zeros() -> Result<()> {
    let dims = (4usize, 9usize, 3usize);
    let mut data = values(4 * 9 * 3, 3, -2.0, 2.0);
    for i in (0..data.len()).step_by(7) {
        data[i] = 0.0;
    }
    data[30] = 0.0;
    data[33] = 0.0;
    let grad_out = values(data.len(), 4, -1.0, 1.0);
    for exclusive in [false, true] {
        let var = Var::from_vec(data.clone(), dims, &Device::Cpu)?;
        let g = Tensor::from_vec(grad_out.clone(), dims, &Device::Cpu)?;
        let loss = (cumprod(var.as_tensor(), 1, exclusive)? * &g)?.sum_all()?;
        let grads = loss.backward()?;
        let got = grads
            .get(var.as_tensor())
            .expect("gradient of x")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let want = reference::cumprod_backward(&data, &grad_out, dims, exclusive);
        assert_close(&got, &want, 1e-12);
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    assert!(cumsum(&x, 2, false).is_err());
    assert!(cumprod(&x, 5, true).is_err());
    let ints = Tensor::zeros((2, 3), DType::U32, &Device::Cpu)?;
    assert!(cumprod(&ints, 0, false).is_err());
    let scalar = Tensor::new(1f32, &Device::Cpu)?;
    assert!(cumsum(&scalar, 0, false).is_err());
    // Empty dims are fine.
    let empty = Tensor::zeros((0, 3), DType::F32, &Device::Cpu)?;
    assert_eq!(cumprod(&empty, 0, false)?.dims(), [0, 3]);
    Ok(())
}

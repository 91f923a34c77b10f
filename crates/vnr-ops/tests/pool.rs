//! max_pool3d / avg_pool3d: finite-difference gradients (f64), fast kernels against the plain
//! reference (f32), PyTorch's tie and NaN rules, and shape errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::deterministic_values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_ops::pool::{avg_pool3d, max_pool3d, reference, Pool3dParams, PoolGeometry};

/// Deterministic values in [-1, 1), so failures reproduce.
fn det(dims: &[usize], seed: u64, dtype: DType) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values = deterministic_values(n, seed, -1.0, 1.0);
    Tensor::from_vec(values, dims, &Device::Cpu)?.to_dtype(dtype)
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

fn assert_close(what: &str, got: &Tensor, want: &[f32]) -> Result<()> {
    let got = values(got)?;
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}: element {i}: fast {g}, reference {w}"
        );
    }
    Ok(())
}

const CASES: [([usize; 5], Pool3dParams); 5] = [
    // ConvDeconv's MaxPool3d(3, 1, 1).
    (
        [2, 3, 6, 5, 7],
        Pool3dParams {
            kernel: [3; 3],
            stride: [1; 3],
            padding: [1; 3],
            count_include_pad: true,
        },
    ),
    // Non-overlapping 2³, odd sizes drop the remainder.
    (
        [1, 2, 5, 7, 4],
        Pool3dParams {
            kernel: [2; 3],
            stride: [2; 3],
            padding: [0; 3],
            count_include_pad: true,
        },
    ),
    // Stride larger than the kernel, per-axis values, padding excluded from averages.
    (
        [1, 3, 9, 8, 7],
        Pool3dParams {
            kernel: [2, 3, 1],
            stride: [3, 4, 2],
            padding: [1, 1, 0],
            count_include_pad: false,
        },
    ),
    // Overlapping windows with padding on every side.
    (
        [2, 1, 7, 6, 9],
        Pool3dParams {
            kernel: [4, 3, 5],
            stride: [2, 1, 3],
            padding: [2, 1, 2],
            count_include_pad: false,
        },
    ),
    (
        [1, 2, 6, 6, 6],
        Pool3dParams {
            kernel: [4, 2, 3],
            stride: [2, 2, 1],
            padding: [2, 1, 1],
            count_include_pad: true,
        },
    ),
];

fn geometry(x: [usize; 5], y: &[usize], p: &Pool3dParams) -> PoolGeometry {
    PoolGeometry {
        planes: x[0] * x[1],
        input: [x[2], x[3], x[4]],
        output: [y[2], y[3], y[4]],
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
    }
}

#[test]
fn fast_pooling_matches_reference() -> Result<()> {
    for (i, (dims, p)) in CASES.iter().enumerate() {
        let x = Var::from_tensor(&det(dims, 40 + i as u64, DType::F32)?)?;
        for max in [true, false] {
            let y = if max {
                max_pool3d(x.as_tensor(), p)?
            } else {
                avg_pool3d(x.as_tensor(), p)?
            };
            let dy = det(y.dims(), 70 + i as u64, DType::F32)?;
            let dx = y
                .mul(&dy)?
                .sum_all()?
                .backward()?
                .remove(&x)
                .expect("input gradient");
            let g = geometry(*dims, y.dims(), p);
            let (xs, dys) = (values(&x)?, values(&dy)?);
            let what = format!("{} {dims:?} {p:?}", if max { "max" } else { "avg" });
            if max {
                assert_close(
                    &format!("{what} y"),
                    &y,
                    &reference::max_pool_forward(&g, &xs),
                )?;
                assert_close(
                    &format!("{what} dx"),
                    &dx,
                    &reference::max_pool_backward(&g, &xs, &dys),
                )?;
            } else {
                let inc = p.count_include_pad;
                assert_close(
                    &format!("{what} y"),
                    &y,
                    &reference::avg_pool_forward(&g, &xs, inc),
                )?;
                assert_close(
                    &format!("{what} dx"),
                    &dx,
                    &reference::avg_pool_backward(&g, &dys, inc),
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn pooling_gradients_match_finite_differences() -> Result<()> {
    let cfg = GradCheckConfig::default();
    for (i, (dims, p)) in CASES.iter().enumerate() {
        // Small copies of the cases; distinct random values make every max unique.
        let small = [dims[0], 1, dims[2].min(5), dims[3].min(5), dims[4].min(5)];
        if (0..3).any(|a| small[a + 2] + 2 * p.padding[a] < p.kernel[a]) {
            continue;
        }
        let x = det(&small, 90 + i as u64, DType::F64)?;
        check_gradients(|v| max_pool3d(&v[0], p), std::slice::from_ref(&x), &cfg)?;
        check_gradients(|v| avg_pool3d(&v[0], p), &[x], &cfg)?;
    }
    // Non-contiguous input: channels-last, permuted inside.
    let p = Pool3dParams::cubic(3, 2, 1);
    let x = det(&[2, 5, 4, 3, 2], 99, DType::F64)?;
    check_gradients(
        |v| max_pool3d(&v[0].permute((0, 4, 1, 2, 3))?, &p),
        std::slice::from_ref(&x),
        &cfg,
    )?;
    check_gradients(
        |v| avg_pool3d(&v[0].permute((0, 4, 1, 2, 3))?, &p),
        &[x],
        &cfg,
    )?;
    Ok(())
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum() -> Result<()> {
    // All-equal window: PyTorch routes the gradient to the first voxel in (kd, kh, kw) order.
    let x = Var::from_tensor(&Tensor::ones((1, 1, 2, 2, 2), DType::F32, &Device::Cpu)?)?;
    let y = max_pool3d(x.as_tensor(), &Pool3dParams::cubic(2, 2, 0))?;
    let dx = y.sum_all()?.backward()?.remove(&x).expect("input gradient");
    assert_eq!(values(&dx)?, [1., 0., 0., 0., 0., 0., 0., 0.]);
    // A tie between a later voxel and an earlier one also goes to the earlier one.
    let x = Var::from_tensor(
        &Tensor::new(&[0f32, 3., 1., 3., 2., 3., 0., 0.], &Device::Cpu)?
            .reshape((1, 1, 2, 2, 2))?,
    )?;
    let y = max_pool3d(x.as_tensor(), &Pool3dParams::cubic(2, 2, 0))?;
    let dx = y.sum_all()?.backward()?.remove(&x).expect("input gradient");
    assert_eq!(values(&dx)?, [0., 1., 0., 0., 0., 0., 0., 0.]);
    Ok(())
}

#[test]
fn max_pool_propagates_nan() -> Result<()> {
    let x = Tensor::new(&[1f32, f32::NAN, 5., 2., 0., 0., 0., 0.], &Device::Cpu)?
        .reshape((1, 1, 2, 2, 2))?;
    let y = max_pool3d(&x, &Pool3dParams::cubic(2, 2, 0))?;
    assert!(values(&y)?[0].is_nan());
    Ok(())
}

#[test]
fn pooling_keeps_shape_and_averages_padding_as_pytorch() -> Result<()> {
    let x = Tensor::ones((1, 2, 4, 5, 3), DType::F32, &Device::Cpu)?;
    // MaxPool3d(3, 1, 1) keeps the size; unbatched [C, D, H, W] input works as well.
    assert_eq!(
        max_pool3d(&x, &Pool3dParams::cubic(3, 1, 1))?.dims(),
        [1, 2, 4, 5, 3]
    );
    assert_eq!(
        max_pool3d(&x.squeeze(0)?, &Pool3dParams::cubic(3, 1, 1))?.dims(),
        [2, 4, 5, 3]
    );
    // A corner window of AvgPool3d(3, 1, 1) sees 2³ ones out of 3³ voxels.
    let with_pad = avg_pool3d(&x, &Pool3dParams::cubic(3, 1, 1))?;
    let corner: f32 = with_pad.flatten_all()?.get(0)?.to_scalar()?;
    assert!((corner - 8.0 / 27.0).abs() < 1e-6);
    let without = avg_pool3d(
        &x,
        &Pool3dParams {
            count_include_pad: false,
            ..Pool3dParams::cubic(3, 1, 1)
        },
    )?;
    assert!(values(&without)?.iter().all(|v| (v - 1.0).abs() < 1e-6));
    Ok(())
}

#[test]
fn bad_pooling_parameters_are_errors() -> Result<()> {
    let x = Tensor::zeros((1, 1, 4, 4, 4), DType::F32, &Device::Cpu)?;
    let msg = |r: Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(max_pool3d(&x, &Pool3dParams::cubic(3, 1, 2))).contains("at most half"));
    assert!(msg(avg_pool3d(&x, &Pool3dParams::cubic(5, 1, 0))).contains("negative"));
    assert!(msg(max_pool3d(&x.flatten_to(2)?, &Pool3dParams::cubic(2, 2, 0))).contains("rank"));
    assert!(max_pool3d(&x, &Pool3dParams::cubic(2, 0, 0)).is_err());
    assert!(avg_pool3d(&x, &Pool3dParams::cubic(0, 1, 0)).is_err());
    Ok(())
}

#[test]
fn empty_spatial_axis_is_an_error_even_with_padding() -> Result<()> {
    // Padding would make the output non-empty, with windows holding no voxel: PyTorch refuses.
    let x = Tensor::zeros((1, 2, 0, 3, 3), DType::F32, &Device::Cpu)?;
    let p = Pool3dParams::cubic(2, 1, 1);
    for result in [max_pool3d(&x, &p), avg_pool3d(&x, &p)] {
        let message = result.expect_err("empty axis").to_string();
        assert!(message.contains("must be positive"), "{message}");
    }
    Ok(())
}

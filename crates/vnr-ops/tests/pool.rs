//! max_pool3d / avg_pool3d: finite-difference gradients (f64), fast kernels against the plain
//! reference (f32), PyTorch's tie and NaN rules, and shape errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::deterministic_values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_ops::pool::{
    avg_pool3d, bias_leaky_relu_max_pool3d, bias_leaky_relu_max_pool3d_reference, max_pool3d,
    max_pool_backward, reference, Pool3dParams, PoolGeometry,
};

/// Deterministic values in [-1, 1), so failures reproduce.
fn det(dims: &[usize], seed: u64, dtype: DType) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values = deterministic_values(n, seed, -1.0, 1.0);
    Tensor::from_vec(values, dims, &Device::Cpu)?.to_dtype(dtype)
}

/// The gradient of `sum(y · dy)` with respect to `x`, through the graph from `x` to `y`.
fn input_gradient(x: &Var, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    Ok(y.mul(dy)?
        .sum_all()?
        .backward()?
        .remove(x)
        .expect("input gradient"))
}

/// The input gradient of `sum(max_pool3d(x))` for one 2³ window holding `x` (`MaxPool3d(2)`).
fn window_gradient(x: [f32; 8]) -> Result<Vec<f32>> {
    let x = Var::from_tensor(&Tensor::new(&x, &Device::Cpu)?.reshape((1, 1, 2, 2, 2))?)?;
    let y = max_pool3d(x.as_tensor(), &Pool3dParams::cubic(2, 2, 0))?;
    values(&y.sum_all()?.backward()?.remove(&x).expect("input gradient"))
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
            let dx = input_gradient(&x, &y, &dy)?;
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
    assert_eq!(window_gradient([1.; 8])?, [1., 0., 0., 0., 0., 0., 0., 0.]);
    // A tie between a later voxel and an earlier one also goes to the earlier one.
    let tie = [0., 3., 1., 3., 2., 3., 0., 0.];
    assert_eq!(window_gradient(tie)?, [0., 1., 0., 0., 0., 0., 0., 0.]);
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

/// Equal as pooling results within a relative `tol`: close values, or both NaN.
fn assert_same(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: fast {g}, reference {w}");
    }
}

/// Values on a coarse lattice (many ties within a window) with a few NaNs.
fn tied_with_nans(n: usize, seed: u64) -> Vec<f64> {
    deterministic_values(n, seed, -1.0, 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 37 == 5 {
                f64::NAN
            } else {
                (v * 4.0).round() / 4.0
            }
        })
        .collect()
}

#[test]
fn max_pool_recorded_and_recomputed_winners_match_reference_with_ties_and_nans() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (i, (dims, p)) in CASES.iter().enumerate() {
            let n: usize = dims.iter().product();
            let xs = tied_with_nans(n, 110 + i as u64);
            let x = Tensor::from_vec(xs.clone(), dims, &Device::Cpu)?.to_dtype(dtype)?;
            let what = format!("{dtype:?} {dims:?} {p:?}");
            // f64 sums the gradients in the reference's order; f32 rounds differently.
            let tol = if dtype == DType::F64 { 0.0 } else { 1e-6 };
            // Tracked input: the forward records the winners, the backward scatters to them.
            let xv = Var::from_tensor(&x)?;
            let y = max_pool3d(xv.as_tensor(), p)?;
            let g = geometry(*dims, y.dims(), p);
            let dys = deterministic_values(y.elem_count(), 130 + i as u64, -1.0, 1.0);
            let dy = Tensor::from_vec(dys.clone(), y.dims(), &Device::Cpu)?.to_dtype(dtype)?;
            let dx = input_gradient(&xv, &y, &dy)?;
            let flat = |t: &Tensor| -> Result<Vec<f64>> {
                t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()
            };
            let want_y = reference::max_pool_forward(&g, &xs);
            let want_dx = reference::max_pool_backward(&g, &xs, &dys);
            assert_same(&format!("{what} y"), &flat(&y)?, &want_y, tol);
            assert_same(&format!("{what} dx"), &flat(&dx)?, &want_dx, tol);
            // Untracked input: the forward records nothing and gives the same values.
            assert_same(
                &format!("{what} y untracked"),
                &flat(&max_pool3d(&x, p)?)?,
                &want_y,
                tol,
            );
            // The backward without recorded winners (as after a CUDA forward) finds them again.
            assert_same(
                &format!("{what} dx recomputed"),
                &max_pool_backward(&g, &xs, &dys)?,
                &want_dx,
                0.0,
            );
        }
    }
    Ok(())
}

#[test]
fn max_pool_nan_window_routes_gradient_to_its_last_nan() -> Result<()> {
    // PyTorch's running max lets every NaN take over, so the last NaN of the window wins.
    let nans = [f32::NAN, 7., f32::NAN, 2., 9., 0., 0., 0.];
    assert_eq!(window_gradient(nans)?, [0., 0., 1., 0., 0., 0., 0., 0.]);
    Ok(())
}

#[test]
fn max_pool_strided_input_with_batch_matches_reference() -> Result<()> {
    // Channels-last storage permuted to [N, C, D, H, W]: the kernels read a copy in row-major
    // order and the gradient comes back in the input's shape.
    let p = Pool3dParams::cubic(3, 1, 1);
    let stored = det(&[3, 4, 5, 6, 2], 150, DType::F32)?;
    let xv = Var::from_tensor(&stored)?;
    let x = xv.as_tensor().permute((0, 4, 1, 2, 3))?;
    let y = max_pool3d(&x, &p)?;
    let dy = det(y.dims(), 151, DType::F32)?;
    let dx = input_gradient(&xv, &y, &dy)?;
    let xs = values(&x.contiguous()?)?;
    let g = geometry([3, 2, 4, 5, 6], y.dims(), &p);
    let want = reference::max_pool_backward(&g, &xs, &values(&dy)?);
    // Back to the stored channels-last order for comparison.
    let want = Tensor::from_vec(want, (3, 2, 4, 5, 6), &Device::Cpu)?.permute((0, 2, 3, 4, 1))?;
    assert_close("dx", &dx, &values(&want.contiguous()?)?)?;
    assert_close("y", &y, &reference::max_pool_forward(&g, &xs))?;
    Ok(())
}

/// Windows whose winners do not fit one byte — wider than the input along W, or over 256
/// voxels — keep flat indices; both kinds send the gradient where the reference does.
#[test]
fn max_pool_winners_outside_one_byte_windows_match_reference() -> Result<()> {
    let cases = [
        ([1, 2, 5, 4, 2], Pool3dParams::cubic(3, 1, 1)),
        ([1, 1, 8, 8, 8], Pool3dParams::cubic(7, 1, 3)),
    ];
    for (i, (dims, p)) in cases.iter().enumerate() {
        let x = Var::from_tensor(&det(dims, 170 + i as u64, DType::F32)?)?;
        let y = max_pool3d(x.as_tensor(), p)?;
        let dy = det(y.dims(), 180 + i as u64, DType::F32)?;
        let dx = input_gradient(&x, &y, &dy)?;
        let g = geometry(*dims, y.dims(), p);
        let want = reference::max_pool_backward(&g, &values(&x)?, &values(&dy)?);
        assert_close(&format!("{dims:?} {p:?} dx"), &dx, &want)?;
    }
    Ok(())
}

/// Output, input gradient and bias gradient of `sum(f(x, bias) · dy)`.
fn fused_pool_results(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    (x, bias): (&Tensor, &Tensor),
    seed: u64,
) -> Result<[Vec<f64>; 3]> {
    let (xv, bv) = (Var::from_tensor(x)?, Var::from_tensor(bias)?);
    let y = f(xv.as_tensor(), bv.as_tensor())?;
    let dys = tied_with_nans(y.elem_count(), seed);
    let dy = Tensor::from_vec(dys, y.dims(), &Device::Cpu)?.to_dtype(x.dtype())?;
    let grads = y.mul(&dy)?.sum_all()?.backward()?;
    let flat =
        |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(DType::F64)?.flatten_all()?.to_vec1() };
    Ok([
        flat(&y)?,
        flat(grads.get(&xv).expect("input gradient"))?,
        flat(grads.get(&bv).expect("bias gradient"))?,
    ])
}

/// The fused bias + LeakyReLU + max pooling gives the composition's outputs bit for bit (and so
/// routes gradients to the same winners, ties and NaNs included) and its gradients up to
/// rounding, for f32 and f64, one-byte and flat winners, slopes 0 (ReLU), 0.01 and 1.
#[test]
fn bias_leaky_relu_max_pool_matches_composition() -> Result<()> {
    let mut cases = CASES.to_vec();
    cases.push(([1, 1, 8, 8, 8], Pool3dParams::cubic(7, 1, 3)));
    for dtype in [DType::F32, DType::F64] {
        for (i, (dims, p)) in cases.iter().enumerate() {
            for slope in [0.0, 0.01, 1.0] {
                let n: usize = dims.iter().product();
                let x = Tensor::from_vec(tied_with_nans(n, 200 + i as u64), dims, &Device::Cpu)?
                    .to_dtype(dtype)?;
                let bias = det(&[dims[1]], 210 + i as u64, dtype)?;
                let fused = |x: &Tensor, b: &Tensor| bias_leaky_relu_max_pool3d(x, b, slope, p);
                let plain =
                    |x: &Tensor, b: &Tensor| bias_leaky_relu_max_pool3d_reference(x, b, slope, p);
                let [y, dx, db] = fused_pool_results(fused, (&x, &bias), 220 + i as u64)?;
                let [want_y, want_dx, want_db] =
                    fused_pool_results(plain, (&x, &bias), 220 + i as u64)?;
                let what = format!("{dtype:?} {dims:?} {p:?} slope {slope}");
                assert_same(&format!("{what} y"), &y, &want_y, 0.0);
                let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                assert_same(&format!("{what} dx"), &dx, &want_dx, tol);
                assert_same(&format!("{what} dbias"), &db, &want_db, tol * 10.0);
                // Untracked: no winners recorded, same values.
                let untracked = bias_leaky_relu_max_pool3d(&x, &bias, slope, p)?;
                let untracked = untracked.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                assert_same(&format!("{what} y untracked"), &untracked, &want_y, 0.0);
            }
        }
    }
    Ok(())
}

#[test]
fn bias_leaky_relu_max_pool_gradients_match_finite_differences() -> Result<()> {
    let cfg = GradCheckConfig::default();
    let p = Pool3dParams::cubic(3, 1, 1);
    let x = det(&[2, 3, 4, 5, 3], 230, DType::F64)?;
    let bias = det(&[3], 231, DType::F64)?;
    check_gradients(
        |v| bias_leaky_relu_max_pool3d(&v[0], &v[1], 0.01, &p),
        &[x.clone(), bias.clone()],
        &cfg,
    )?;
    // Non-contiguous input (channels-last storage, permuted inside) and a strided pooling.
    let stored = det(&[2, 4, 5, 3, 3], 232, DType::F64)?;
    let p = Pool3dParams::cubic(2, 2, 1);
    check_gradients(
        |v| bias_leaky_relu_max_pool3d(&v[0].permute((0, 4, 1, 2, 3))?, &v[1], 0.2, &p),
        &[stored, bias],
        &cfg,
    )?;
    Ok(())
}

#[test]
fn bias_leaky_relu_max_pool_bad_shapes_are_errors_and_negative_slopes_compose() -> Result<()> {
    let p = Pool3dParams::cubic(3, 1, 1);
    let x = det(&[1, 2, 4, 4, 4], 240, DType::F32)?;
    let wrong_bias = det(&[3], 241, DType::F32)?;
    let message = bias_leaky_relu_max_pool3d(&x, &wrong_bias, 0.01, &p)
        .expect_err("bias of the wrong length")
        .to_string();
    assert!(message.contains("[C]"), "{message}");
    let unbatched = det(&[2, 4, 4, 4], 242, DType::F32)?;
    let bias = det(&[2], 243, DType::F32)?;
    let message = bias_leaky_relu_max_pool3d(&unbatched, &bias, 0.01, &p)
        .expect_err("rank 4")
        .to_string();
    assert!(message.contains("rank 5"), "{message}");
    // A negative slope is not monotonic, so pooling cannot read the slope from the output: the
    // composition runs instead, and still matches the reference.
    let got = bias_leaky_relu_max_pool3d(&x, &bias, -0.5, &p)?;
    let want = bias_leaky_relu_max_pool3d_reference(&x, &bias, -0.5, &p)?;
    assert_close("negative slope", &got, &values(&want)?)?;
    Ok(())
}

#[test]
fn huge_parameters_are_errors_not_overflows() -> Result<()> {
    let x = det(&[1, 2, 4, 4, 4], 1, DType::F32)?;
    let big = usize::MAX;
    // Padding at most half the kernel, but the padded extent overflows.
    let p = Pool3dParams::cubic(big, 1, big / 2);
    for e in [max_pool3d(&x, &p), avg_pool3d(&x, &p)] {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
    }
    // A huge stride is valid: one window.
    let p = Pool3dParams::cubic(2, big, 0);
    assert_eq!(max_pool3d(&x, &p)?.dims(), [1, 2, 1, 1, 1]);
    assert_eq!(avg_pool3d(&x, &p)?.dims(), [1, 2, 1, 1, 1]);
    Ok(())
}

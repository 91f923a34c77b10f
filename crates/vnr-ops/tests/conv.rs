//! conv3d / conv_transpose3d: finite-difference gradients (f64), fast kernels against the plain
//! reference (f32), and shape errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::conv::{
    conv3d, conv_transpose3d, reference, Conv3dParams, ConvGeometry, ConvTranspose3dParams,
};
use vnr_ops::gradcheck::deterministic_values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};

/// Deterministic values in [-1, 1), so failures reproduce.
fn det(dims: &[usize], seed: u64, dtype: DType) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values = deterministic_values(n, seed, -1.0, 1.0);
    Tensor::from_vec(values, dims, &Device::Cpu)?.to_dtype(dtype)
}

/// Compares with a tolerance of `tol` times the largest reference magnitude (at least 1).
fn assert_close(what: &str, got: &Tensor, want: &[f32], tol: f32) -> Result<()> {
    let got: Vec<f32> = got.flatten_all()?.to_vec1()?;
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}: element {i}: fast {g}, reference {w} (scale {scale})"
        );
    }
    Ok(())
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

/// Runs `conv3d` forward and backward on deterministic f32 data and compares output, input
/// gradient and weight gradient with the reference loops.
fn conv3d_matches_reference(
    x_dims: [usize; 5],
    w_dims: [usize; 5],
    p: &Conv3dParams,
    seed: u64,
    tol: f32,
) -> Result<()> {
    let x = Var::from_tensor(&det(&x_dims, seed, DType::F32)?)?;
    let w = Var::from_tensor(&det(&w_dims, seed + 1, DType::F32)?)?;
    let y = conv3d(x.as_tensor(), w.as_tensor(), None, p)?;
    let dy = det(y.dims(), seed + 2, DType::F32)?;
    let grads = y.mul(&dy)?.sum_all()?.backward()?;
    let g = ConvGeometry {
        batch: x_dims[0],
        in_channels: x_dims[1],
        out_channels: w_dims[0],
        groups: p.groups,
        input: [x_dims[2], x_dims[3], x_dims[4]],
        output: [y.dims()[2], y.dims()[3], y.dims()[4]],
        kernel: [w_dims[2], w_dims[3], w_dims[4]],
        stride: p.stride,
        dilation: p.dilation,
        pad: p.padding.map(|[before, _]| before),
    };
    let (xs, ws, dys) = (values(&x)?, values(&w)?, values(&dy)?);
    let ctx = format!("conv3d {x_dims:?} {w_dims:?} {p:?}");
    assert_close(
        &format!("{ctx} y"),
        &y,
        &reference::conv3d_forward(&g, &xs, &ws),
        tol,
    )?;
    let dx = grads.get(&x).expect("input gradient");
    assert_close(
        &format!("{ctx} dx"),
        dx,
        &reference::conv3d_backward_input(&g, &dys, &ws),
        tol,
    )?;
    let dw = grads.get(&w).expect("weight gradient");
    assert_close(
        &format!("{ctx} dw"),
        dw,
        &reference::conv3d_backward_weight(&g, &xs, &dys),
        tol,
    )
}

/// The same for `conv_transpose3d`, whose passes are the reference's passes permuted.
fn conv_transpose3d_matches_reference(
    x_dims: [usize; 5],
    w_dims: [usize; 5],
    p: &ConvTranspose3dParams,
    seed: u64,
    tol: f32,
) -> Result<()> {
    let x = Var::from_tensor(&det(&x_dims, seed, DType::F32)?)?;
    let w = Var::from_tensor(&det(&w_dims, seed + 1, DType::F32)?)?;
    let y = conv_transpose3d(x.as_tensor(), w.as_tensor(), None, p)?;
    let dy = det(y.dims(), seed + 2, DType::F32)?;
    let grads = y.mul(&dy)?.sum_all()?.backward()?;
    let g = ConvGeometry {
        batch: x_dims[0],
        in_channels: y.dims()[1],
        out_channels: x_dims[1],
        groups: p.groups,
        input: [y.dims()[2], y.dims()[3], y.dims()[4]],
        output: [x_dims[2], x_dims[3], x_dims[4]],
        kernel: [w_dims[2], w_dims[3], w_dims[4]],
        stride: p.stride,
        dilation: p.dilation,
        pad: p.padding,
    };
    let (xs, ws, dys) = (values(&x)?, values(&w)?, values(&dy)?);
    let ctx = format!("conv_transpose3d {x_dims:?} {w_dims:?} {p:?}");
    assert_close(
        &format!("{ctx} y"),
        &y,
        &reference::conv3d_backward_input(&g, &xs, &ws),
        tol,
    )?;
    let dx = grads.get(&x).expect("input gradient");
    assert_close(
        &format!("{ctx} dx"),
        dx,
        &reference::conv3d_forward(&g, &dys, &ws),
        tol,
    )?;
    let dw = grads.get(&w).expect("weight gradient");
    assert_close(
        &format!("{ctx} dw"),
        dw,
        &reference::conv3d_backward_weight(&g, &dys, &xs),
        tol,
    )
}

#[test]
fn conv3d_fast_matches_reference() -> Result<()> {
    let cases = [
        // ConvDeconv's first layer shape (1→8 k4 s2 p1), one sample: parallel inside the sample.
        (
            [1, 1, 12, 10, 9],
            [8, 1, 4, 4, 4],
            Conv3dParams {
                stride: [2; 3],
                ..Conv3dParams::symmetric(1)
            },
        ),
        // Residual block 3³, batch 3: parallel over samples.
        ([3, 6, 7, 6, 5], [6, 6, 3, 3, 3], Conv3dParams::symmetric(1)),
        // 1×1×1 stride 1: straight to gemm, with groups.
        (
            [2, 8, 5, 4, 3],
            [6, 4, 1, 1, 1],
            Conv3dParams {
                groups: 2,
                ..Default::default()
            },
        ),
        // Groups, dilation, asymmetric padding, stride > kernel.
        (
            [2, 6, 9, 8, 11],
            [4, 3, 2, 3, 2],
            Conv3dParams {
                stride: [3, 1, 4],
                padding: [[0, 2], [1, 0], [3, 1]],
                dilation: [2, 1, 3],
                groups: 2,
            },
        ),
        // 1×1×1 with stride 2 takes the vol2col path.
        (
            [1, 3, 6, 5, 4],
            [5, 3, 1, 1, 1],
            Conv3dParams {
                stride: [2; 3],
                ..Default::default()
            },
        ),
    ];
    for (i, (x, w, p)) in cases.iter().enumerate() {
        conv3d_matches_reference(*x, *w, p, 100 + 10 * i as u64, 2e-5)?;
    }
    Ok(())
}

/// Layers with rows of at least 8 output voxels and few output channels run the direct f32
/// kernels (on CPUs with AVX2 and FMA); f64 runs vol2col + gemm.
const DIRECT_CASES: [([usize; 5], [usize; 5], Conv3dParams); 5] = [
    // RenderNet's residual block shape, batch 2 (samples in parallel).
    (
        [2, 5, 4, 6, 19],
        [7, 5, 3, 3, 3],
        Conv3dParams {
            stride: [1; 3],
            padding: [[1; 2]; 3],
            dilation: [1; 3],
            groups: 1,
        },
    ),
    // RenderNet's depth-stride layer with TF "SAME" padding (odd voxel after), one sample.
    (
        [1, 3, 7, 5, 9],
        [9, 3, 3, 3, 3],
        Conv3dParams {
            stride: [2, 1, 1],
            padding: [[1, 1], [1, 1], [1, 1]],
            dilation: [1; 3],
            groups: 1,
        },
    ),
    // RenderNet's `(1, 1, 2)` stride along W (TF "SAME": the odd padding voxel after).
    (
        [1, 3, 6, 5, 34],
        [5, 3, 3, 3, 3],
        Conv3dParams {
            stride: [1, 1, 2],
            padding: [[1, 1], [1, 1], [0, 1]],
            dilation: [1; 3],
            groups: 1,
        },
    ),
    // 5³ kernel, groups, dilation, asymmetric padding, rows longer than one chunk.
    (
        [1, 4, 6, 5, 21],
        [6, 2, 2, 3, 5],
        Conv3dParams {
            stride: [1; 3],
            padding: [[2, 0], [0, 3], [4, 1]],
            dilation: [2, 1, 2],
            groups: 2,
        },
    ),
    // 1×1 in depth and height, a single chunk per row.
    (
        [3, 2, 2, 3, 8],
        [4, 2, 1, 1, 3],
        Conv3dParams {
            stride: [1; 3],
            padding: [[0; 2], [0; 2], [1; 2]],
            dilation: [1; 3],
            groups: 1,
        },
    ),
];

#[test]
fn direct_kernel_matches_reference_and_f64_gemm_path() -> Result<()> {
    for (i, (x_dims, w_dims, p)) in DIRECT_CASES.iter().enumerate() {
        let seed = 900 + 10 * i as u64;
        conv3d_matches_reference(*x_dims, *w_dims, p, seed, 2e-5)?;
        // The same layer in f64 (vol2col + gemm) agrees with the f32 fast path.
        let mut outputs = Vec::new();
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&det(x_dims, seed, dtype)?)?;
            let w = Var::from_tensor(&det(w_dims, seed + 1, dtype)?)?;
            let y = conv3d(x.as_tensor(), w.as_tensor(), None, p)?;
            let grads = y
                .mul(&det(y.dims(), seed + 2, dtype)?)?
                .sum_all()?
                .backward()?;
            let dx = grads.get(&x).expect("input gradient");
            let dw = grads.get(&w).expect("weight gradient");
            outputs.push([
                y.to_dtype(DType::F32)?,
                dx.to_dtype(DType::F32)?,
                dw.to_dtype(DType::F32)?,
            ]);
        }
        for (name, (fast, plain)) in ["y", "dx", "dw"]
            .iter()
            .zip(outputs[0].iter().zip(&outputs[1]))
        {
            assert_close(
                &format!("case {i} {name} f32 vs f64"),
                fast,
                &values(plain)?,
                2e-5,
            )?;
        }
    }
    // The unit-stride transposed convolution runs the direct kernel as the flipped forward.
    conv_transpose3d_matches_reference(
        [2, 6, 3, 4, 11],
        [6, 5, 3, 3, 3],
        &ConvTranspose3dParams {
            padding: [1; 3],
            ..Default::default()
        },
        990,
        2e-5,
    )
}

/// One sample of a 1×1×1 layer with over a thousand voxels: its forward, input gradient and
/// weight gradient split the voxels into one range per thread; the ranges' seams (odd volumes,
/// unequal ranges) and groups must not change the result.
#[test]
fn pointwise_layers_split_over_voxel_ranges_match_reference() -> Result<()> {
    let grouped = Conv3dParams {
        groups: 2,
        ..Default::default()
    };
    conv3d_matches_reference(
        [1, 6, 9, 11, 13],
        [4, 6, 1, 1, 1],
        &Default::default(),
        7,
        2e-5,
    )?;
    conv3d_matches_reference([1, 8, 10, 11, 12], [6, 4, 1, 1, 1], &grouped, 8, 2e-5)
}

#[test]
fn conv3d_tiles_over_depth_when_the_column_buffer_is_large() -> Result<()> {
    // The weight gradient sums 10⁶ f32 products: the sequential reference drifts by ~1e-4.
    const TOL: f32 = 1e-3;
    // One output depth slice of this layer needs a 27 × 600² f32 column buffer (39 MiB), above
    // the kernels' budget: the three slices run as separate tiles.
    conv3d_matches_reference(
        [1, 1, 3, 600, 600],
        [1, 1, 3, 3, 3],
        &Conv3dParams::symmetric(1),
        7,
        TOL,
    )?;
    conv_transpose3d_matches_reference(
        [1, 1, 3, 600, 600],
        [1, 1, 3, 3, 3],
        &ConvTranspose3dParams {
            padding: [1; 3],
            ..Default::default()
        },
        8,
        TOL,
    )
}

#[test]
fn conv_transpose3d_fast_matches_reference() -> Result<()> {
    let cases = [
        // ConvDeconv's decoder shape: k4 s2 p1 doubles the size.
        (
            [1, 8, 5, 4, 6],
            [8, 3, 4, 4, 4],
            ConvTranspose3dParams {
                stride: [2; 3],
                padding: [1; 3],
                ..Default::default()
            },
        ),
        // Groups, per-axis output padding and dilation, batch 3.
        (
            [3, 4, 3, 4, 2],
            [4, 3, 3, 2, 3],
            ConvTranspose3dParams {
                stride: [2, 3, 1],
                padding: [1, 0, 2],
                output_padding: [1, 2, 1],
                dilation: [1, 1, 2],
                groups: 2,
            },
        ),
        // 1×1×1 stride 1: straight to gemm.
        (
            [2, 6, 3, 4, 5],
            [6, 5, 1, 1, 1],
            ConvTranspose3dParams::default(),
        ),
    ];
    for (i, (x, w, p)) in cases.iter().enumerate() {
        conv_transpose3d_matches_reference(*x, *w, p, 500 + 10 * i as u64, 2e-5)?;
    }
    Ok(())
}

#[test]
fn conv3d_gradients_match_finite_differences() -> Result<()> {
    let cfg = GradCheckConfig::default();
    // Odd sizes, batch 2, groups 2, stride and dilation 2 on some axes, asymmetric padding, bias.
    let p = Conv3dParams {
        stride: [2, 1, 2],
        padding: [[1, 0], [0, 2], [2, 1]],
        dilation: [1, 2, 1],
        groups: 2,
    };
    let inputs = [
        det(&[2, 4, 5, 4, 3], 1, DType::F64)?,
        det(&[6, 2, 3, 2, 3], 2, DType::F64)?,
        det(&[6], 3, DType::F64)?,
    ];
    check_gradients(|v| conv3d(&v[0], &v[1], Some(&v[2]), &p), &inputs, &cfg)?;
    // Stride larger than the kernel: some inputs get no gradient at all.
    let p = Conv3dParams {
        stride: [3, 4, 3],
        ..Default::default()
    };
    let inputs = [
        det(&[1, 2, 7, 6, 5], 4, DType::F64)?,
        det(&[3, 2, 2, 1, 2], 5, DType::F64)?,
    ];
    check_gradients(|v| conv3d(&v[0], &v[1], None, &p), &inputs, &cfg)?;
    // Padding larger than the kernel, dilation 2.
    let p = Conv3dParams {
        padding: [[3, 2], [3, 3], [1, 4]],
        dilation: [2; 3],
        ..Default::default()
    };
    let inputs = [
        det(&[1, 1, 3, 2, 3], 6, DType::F64)?,
        det(&[2, 1, 2, 2, 2], 7, DType::F64)?,
    ];
    check_gradients(|v| conv3d(&v[0], &v[1], None, &p), &inputs, &cfg)?;
    // Non-contiguous operands: channels-last input and a transposed weight, permuted inside.
    let p = Conv3dParams {
        stride: [1, 2, 1],
        ..Conv3dParams::symmetric(1)
    };
    let inputs = [
        det(&[2, 3, 4, 3, 2], 8, DType::F64)?,
        det(&[2, 3, 2, 3, 2], 9, DType::F64)?,
    ];
    check_gradients(
        |v| {
            let x = v[0].permute((0, 4, 1, 2, 3))?;
            let w = v[1].transpose(0, 1)?;
            assert!(!x.is_contiguous() && !w.is_contiguous());
            conv3d(&x, &w, None, &p)
        },
        &inputs,
        &cfg,
    )?;
    Ok(())
}

#[test]
fn conv_transpose3d_gradients_match_finite_differences() -> Result<()> {
    let cfg = GradCheckConfig::default();
    let p = ConvTranspose3dParams {
        stride: [2, 1, 3],
        padding: [1, 0, 1],
        output_padding: [1, 0, 2],
        dilation: [1, 2, 1],
        groups: 2,
    };
    let inputs = [
        det(&[2, 4, 3, 2, 3], 11, DType::F64)?,
        det(&[4, 3, 3, 2, 2], 12, DType::F64)?,
        det(&[6], 13, DType::F64)?,
    ];
    check_gradients(
        |v| conv_transpose3d(&v[0], &v[1], Some(&v[2]), &p),
        &inputs,
        &cfg,
    )?;
    // output_padding ≥ stride is allowed when smaller than the dilation; non-contiguous input.
    let p = ConvTranspose3dParams {
        output_padding: [1; 3],
        dilation: [2; 3],
        ..Default::default()
    };
    let inputs = [
        det(&[1, 3, 2, 3, 2], 14, DType::F64)?,
        det(&[2, 2, 2, 2, 2], 15, DType::F64)?,
    ];
    check_gradients(
        |v| conv_transpose3d(&v[0].permute((0, 4, 1, 2, 3))?, &v[1], None, &p),
        &inputs,
        &cfg,
    )?;
    Ok(())
}

/// Environment variable that makes candle keep the graph of gradients (needed for second
/// derivatives); candle reads it once per thread, so the check runs in a child process.
const KEEP_GRAD_GRAPH: &str = "CANDLE_GRAD_DO_NOT_DETACH";

#[test]
fn second_derivatives_match_finite_differences() {
    let exe = std::env::current_exe().expect("test executable path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            // The test's path in the integration binary: this file is its module `conv`.
            concat!(module_path!(), "::second_derivatives_in_child_process")
                .split_once("::")
                .map_or("", |(_crate, path)| path),
            "--ignored",
            "--nocapture",
        ])
        .env(KEEP_GRAD_GRAPH, "1")
        .output()
        .expect("run the child test process");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("1 passed"),
        "child process failed:\n{log}"
    );
}

#[test]
#[ignore = "run by second_derivatives_match_finite_differences with CANDLE_GRAD_DO_NOT_DETACH=1"]
fn second_derivatives_in_child_process() -> Result<()> {
    assert_eq!(std::env::var(KEEP_GRAD_GRAPH).as_deref(), Ok("1"));
    // Input and weight gradients of conv3d as functions of input and weight: their backward runs
    // the backward of all three kernels.
    let p = Conv3dParams {
        stride: [2, 1, 1],
        ..Conv3dParams::symmetric(1)
    };
    let inputs = [
        det(&[1, 2, 3, 3, 2], 21, DType::F64)?,
        det(&[2, 2, 2, 3, 2], 22, DType::F64)?,
    ];
    check_gradients(
        |v| {
            let (x, w) = (Var::from_tensor(&v[0])?, Var::from_tensor(&v[1])?);
            let y = conv3d(x.as_tensor(), w.as_tensor(), None, &p)?;
            let grads = y.sqr()?.sum_all()?.backward()?;
            let missing = || candle_core::Error::Msg("missing gradient".into());
            let dx = grads.get(&x).ok_or_else(missing)?.flatten_all()?;
            let dw = grads.get(&w).ok_or_else(missing)?.flatten_all()?;
            Tensor::cat(&[dx, dw], 0)
        },
        &inputs,
        &GradCheckConfig {
            atol: 1e-5,
            rtol: 1e-4,
            ..Default::default()
        },
    )?;
    Ok(())
}

#[test]
fn f16_and_bf16_run_in_f32() -> Result<()> {
    let x = det(&[1, 2, 4, 4, 4], 31, DType::F32)?;
    let w = det(&[3, 2, 3, 3, 3], 32, DType::F32)?;
    let p = Conv3dParams::symmetric(1);
    let want = conv3d(&x, &w, None, &p)?;
    for dtype in [DType::F16, DType::BF16] {
        let got = conv3d(&x.to_dtype(dtype)?, &w.to_dtype(dtype)?, None, &p)?;
        assert_eq!(got.dtype(), dtype);
        let err = got
            .to_dtype(DType::F32)?
            .sub(&want)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(err < 0.1, "{dtype:?}: max error {err}");
    }
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let t = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &Device::Cpu);
    let p = Conv3dParams::default();
    let msg = |r: Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    // Wrong rank.
    assert!(msg(conv3d(&t(&[2, 3, 4, 4])?, &t(&[1, 2, 1, 1, 1])?, None, &p)).contains("rank 5"));
    assert!(msg(conv3d(&t(&[1, 2, 4, 4, 4])?, &t(&[1, 2, 1, 1])?, None, &p)).contains("rank 5"));
    // Channels not divisible by groups.
    let g3 = Conv3dParams { groups: 3, ..p };
    assert!(msg(conv3d(
        &t(&[1, 4, 4, 4, 4])?,
        &t(&[3, 1, 1, 1, 1])?,
        None,
        &g3
    ))
    .contains("divisible"));
    assert!(msg(conv3d(
        &t(&[1, 6, 4, 4, 4])?,
        &t(&[4, 2, 1, 1, 1])?,
        None,
        &g3
    ))
    .contains("divisible"));
    // Weight/input channel mismatch.
    assert!(msg(conv3d(
        &t(&[1, 3, 4, 4, 4])?,
        &t(&[2, 2, 1, 1, 1])?,
        None,
        &p
    ))
    .contains("input channels"));
    // Kernel larger than the padded input: negative output size.
    assert!(msg(conv3d(
        &t(&[1, 1, 2, 4, 4])?,
        &t(&[1, 1, 3, 3, 3])?,
        None,
        &p
    ))
    .contains("negative"));
    let dilated = Conv3dParams {
        dilation: [1, 1, 3],
        ..Conv3dParams::symmetric(1)
    };
    assert!(msg(conv3d(
        &t(&[1, 1, 4, 4, 4])?,
        &t(&[1, 1, 3, 3, 3])?,
        None,
        &dilated
    ))
    .contains("negative"));
    // Bias of the wrong length, zero stride, zero groups, mismatched dtypes.
    assert!(msg(conv3d(
        &t(&[1, 1, 4, 4, 4])?,
        &t(&[2, 1, 1, 1, 1])?,
        Some(&t(&[3])?),
        &p
    ))
    .contains("bias"));
    let zero_stride = Conv3dParams {
        stride: [1, 0, 1],
        ..p
    };
    assert!(conv3d(
        &t(&[1, 1, 4, 4, 4])?,
        &t(&[1, 1, 1, 1, 1])?,
        None,
        &zero_stride
    )
    .is_err());
    assert!(conv3d(
        &t(&[1, 1, 4, 4, 4])?,
        &t(&[1, 1, 1, 1, 1])?,
        None,
        &Conv3dParams { groups: 0, ..p }
    )
    .is_err());
    let w64 = Tensor::zeros((1, 1, 1, 1, 1), DType::F64, &Device::Cpu)?;
    assert!(msg(conv3d(&t(&[1, 1, 4, 4, 4])?, &w64, None, &p)).contains("F64"));

    let pt = ConvTranspose3dParams::default();
    // Weight's first dim must equal the input channels.
    assert!(msg(conv_transpose3d(
        &t(&[1, 3, 4, 4, 4])?,
        &t(&[2, 2, 1, 1, 1])?,
        None,
        &pt
    ))
    .contains("input channels"));
    assert!(conv_transpose3d(&t(&[1, 3, 4, 4])?, &t(&[3, 2, 1, 1, 1])?, None, &pt).is_err());
    let g2 = ConvTranspose3dParams { groups: 2, ..pt };
    assert!(msg(conv_transpose3d(
        &t(&[1, 3, 4, 4, 4])?,
        &t(&[3, 2, 1, 1, 1])?,
        None,
        &g2
    ))
    .contains("divisible"));
    // output_padding must be smaller than stride or dilation.
    let op = ConvTranspose3dParams {
        stride: [2; 3],
        output_padding: [0, 2, 0],
        ..pt
    };
    assert!(msg(conv_transpose3d(
        &t(&[1, 1, 4, 4, 4])?,
        &t(&[1, 1, 3, 3, 3])?,
        None,
        &op
    ))
    .contains("output_padding"));
    // Padding that crops everything away.
    let crop = ConvTranspose3dParams {
        padding: [2; 3],
        ..pt
    };
    assert!(msg(conv_transpose3d(
        &t(&[1, 1, 1, 1, 1])?,
        &t(&[1, 1, 3, 3, 3])?,
        None,
        &crop
    ))
    .contains("output size"));
    Ok(())
}

#[test]
fn weight_gradient_is_the_same_when_the_input_is_plain_data() -> Result<()> {
    // A constant input (no variable behind it) skips the input-gradient pass; the weight
    // gradient must not change.
    let x = det(&[2, 3, 5, 4, 6], 41, DType::F32)?;
    let w = Var::from_tensor(&det(&[4, 3, 3, 3, 3], 42, DType::F32)?)?;
    let p = Conv3dParams::symmetric(1);
    let loss =
        |x: &Tensor| -> Result<Tensor> { conv3d(x, w.as_tensor(), None, &p)?.sqr()?.sum_all() };
    let xv = Var::from_tensor(&x)?;
    let with_input = loss(xv.as_tensor())?.backward()?;
    let without_input = loss(&x)?.backward()?;
    assert!(without_input.get(&x).is_none());
    let a = with_input.get(&w).expect("weight gradient");
    let b = without_input.get(&w).expect("weight gradient");
    assert_eq!(values(a)?, values(b)?);
    Ok(())
}

#[test]
fn huge_parameters_are_errors_not_overflows() -> Result<()> {
    let x = det(&[1, 2, 4, 4, 4], 1, DType::F32)?;
    let w = det(&[2, 2, 3, 3, 3], 2, DType::F32)?;
    let big = usize::MAX;
    // A stride this large once overflowed `o · stride` one output past the end in the kernels;
    // it is valid (one output voxel) and must run.
    let stride = Conv3dParams {
        stride: [big; 3],
        ..Conv3dParams::symmetric(0)
    };
    assert_eq!(conv3d(&x, &w, None, &stride)?.dims(), [1, 2, 1, 1, 1]);
    for p in [
        Conv3dParams {
            padding: [[big, 0], [0, 0], [0, 0]],
            ..Conv3dParams::symmetric(0)
        },
        Conv3dParams {
            padding: [[0, 0], [big / 2 + 1, big / 2], [0, 0]],
            ..Conv3dParams::symmetric(0)
        },
        Conv3dParams {
            dilation: [1, 1, big],
            ..Conv3dParams::symmetric(0)
        },
    ] {
        let e = conv3d(&x, &w, None, &p).unwrap_err().to_string();
        assert!(e.contains("too large"), "{p:?}: {e}");
    }
    // Valid transposed geometries whose output cannot be allocated.
    let p = ConvTranspose3dParams {
        stride: [1 << 40; 3],
        dilation: [1 << 40; 3],
        ..Default::default()
    };
    let e = conv_transpose3d(&x, &w, None, &p).unwrap_err().to_string();
    assert!(e.contains("too large to allocate"), "{e}");
    Ok(())
}

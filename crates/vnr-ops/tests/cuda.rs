//! The CUDA kernels against the CPU kernels: every op runs on random inputs on `cuda:0` and on
//! the CPU, and the outputs and the gradients of a random weighted sum must agree.
//!
//! Built only with `--features cuda` and needs a GPU to run; see docs/cuda.md.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::conv::{conv3d, conv_transpose3d, Conv3dParams, ConvTranspose3dParams};
use vnr_ops::cumulative::{cumprod, cumsum};
use vnr_ops::grid_sample::{grid_sample3d, GridPaddingMode, GridSampleMode, GridSampleParams};
use vnr_ops::pool::{avg_pool3d, bias_leaky_relu_max_pool3d, max_pool3d, Pool3dParams};
use vnr_ops::raymarch::{ea_raymarch, EaRaymarchParams};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need CUDA device 0")
}

/// Relative tolerance for `dtype`: both devices run the same recurrences, so only
/// floating-point contraction and summation order differ.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        _ => 1e-5,
    }
}

/// Output and input gradients of `f` on `device`, for `loss = Σ f(inputs) · weight`.
fn run_on(
    device: &Device,
    inputs: &[Tensor],
    weight: &Tensor,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device)?))
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    let loss = (&out * weight.to_device(device)?)?.sum_all()?;
    let grads = loss.backward()?;
    let input_grads = vars
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => g.to_device(&Device::Cpu),
            None => v.as_tensor().zeros_like()?.to_device(&Device::Cpu),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out.to_device(&Device::Cpu)?, input_grads))
}

/// Fails unless `|gpu − cpu| ≤ rtol · (|cpu| + max |cpu|)` everywhere.
fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor, rtol: f64) -> Result<()> {
    assert_eq!(gpu.dims(), cpu.dims(), "{what}: shapes differ");
    let g = gpu.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let c = cpu.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        let bound = rtol * (b.abs() + scale);
        assert!(
            (a - b).abs() <= bound,
            "{what}: element {i}: cuda {a} vs cpu {b} (bound {bound})"
        );
    }
    Ok(())
}

/// Runs `f` on both devices and compares the output and every input gradient.
fn check(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    check_with(name, inputs, tolerance(inputs[0].dtype()), f)
}

/// [`check`] with relative tolerance `rtol`.
fn check_with(
    name: &str,
    inputs: &[Tensor],
    rtol: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let dtype = inputs[0].dtype();
    let cpu_out = f(inputs)?;
    let weight = Tensor::rand(-1.0, 1.0, cpu_out.dims(), &Device::Cpu)?.to_dtype(dtype)?;
    let (c_out, c_grads) = run_on(&Device::Cpu, inputs, &weight, &f)?;
    let (g_out, g_grads) = run_on(&gpu(), inputs, &weight, &f)?;
    assert_close(&format!("{name} output"), &g_out, &c_out, rtol)?;
    for (i, (g, c)) in g_grads.iter().zip(&c_grads).enumerate() {
        assert_close(&format!("{name} gradient of input {i}"), g, c, rtol)?;
    }
    Ok(())
}

fn uniform(lo: f64, hi: f64, dims: &[usize], dtype: DType) -> Result<Tensor> {
    Tensor::rand(lo, hi, dims, &Device::Cpu)?.to_dtype(dtype)
}

#[test]
fn cumsum_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let x = uniform(-1.0, 1.0, &[3, 17, 5], dtype)?;
        for dim in 0..3 {
            for exclusive in [false, true] {
                let name = format!("cumsum {dtype:?} dim {dim} exclusive {exclusive}");
                check(&name, std::slice::from_ref(&x), |t| {
                    cumsum(&t[0], dim, exclusive)
                })?;
            }
        }
        // A strided input (the op copies it on the device).
        let xt = uniform(-1.0, 1.0, &[5, 9, 4], dtype)?;
        check("cumsum transposed", &[xt], |t| {
            cumsum(&t[0].transpose(0, 2)?, 1, false)
        })?;
    }
    Ok(())
}

#[test]
fn cumprod_matches_cpu_with_zeros() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let x = uniform(0.5, 1.5, &[4, 13, 3], dtype)?;
        // Zero about a fifth of the entries: the gradient must stay exact there.
        let keep = Tensor::rand(0.0, 1.0, x.dims(), &Device::Cpu)?
            .ge(0.2)?
            .to_dtype(dtype)?;
        let x = (x * keep)?;
        for dim in 0..3 {
            for exclusive in [false, true] {
                let name = format!("cumprod {dtype:?} dim {dim} exclusive {exclusive}");
                check(&name, std::slice::from_ref(&x), |t| {
                    cumprod(&t[0], dim, exclusive)
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn ea_raymarch_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (points, n_features, surface_thickness) in [(33, 4, 1), (17, 3, 3), (5, 1, 7)] {
            let d = uniform(0.0, 1.0, &[2, 3, points, 1], dtype)?;
            let f = uniform(-1.0, 1.0, &[2, 3, points, n_features], dtype)?;
            let p = EaRaymarchParams {
                surface_thickness,
                eps: 1e-10,
            };
            let name =
                format!("ea_raymarch {dtype:?} P {points} F {n_features} s {surface_thickness}");
            check(&name, &[d, f], |t| ea_raymarch(&t[0], &t[1], &p))?;
        }
    }
    Ok(())
}

#[test]
fn ea_raymarch_rejects_densities_outside_unit_interval_on_cuda() -> Result<()> {
    let dev = gpu();
    let d = Tensor::new(&[[0.5f32], [1.5], [0.25]], &dev)?;
    let f = Tensor::new(&[[1.0f32], [2.0], [3.0]], &dev)?;
    let err = ea_raymarch(&d, &f, &EaRaymarchParams::default())
        .expect_err("a density of 1.5 must be rejected");
    assert!(err.to_string().contains("flat index 1"), "{err}");
    Ok(())
}

/// Shapes and parameters covering padding, overlapping windows (stride < kernel) and odd sizes.
fn pool_cases() -> Vec<([usize; 5], Pool3dParams)> {
    vec![
        ([2, 3, 8, 8, 8], Pool3dParams::cubic(2, 2, 0)),
        ([1, 2, 7, 6, 9], Pool3dParams::cubic(3, 1, 1)),
        (
            [2, 1, 9, 7, 5],
            Pool3dParams {
                kernel: [3, 2, 3],
                stride: [2, 1, 2],
                padding: [1, 1, 0],
                count_include_pad: false,
            },
        ),
    ]
}

#[test]
fn max_pool3d_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (dims, p) in pool_cases() {
            let x = uniform(-1.0, 1.0, &dims, dtype)?;
            let name = format!("max_pool3d {dtype:?} {dims:?} {p:?}");
            check(&name, std::slice::from_ref(&x), |t| max_pool3d(&t[0], &p))?;
            // Strided input: W and H swapped.
            check(&format!("{name} transposed"), &[x], |t| {
                max_pool3d(&t[0].transpose(3, 4)?, &p)
            })?;
        }
    }
    Ok(())
}

/// On CUDA the fused op runs its composition (bias + LeakyReLU, then max pooling); outputs and
/// the input and bias gradients match the CPU's fused op.
#[test]
fn bias_leaky_relu_max_pool3d_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (dims, p) in pool_cases() {
            let x = uniform(-1.0, 1.0, &dims, dtype)?;
            let bias = uniform(-0.5, 0.5, &[dims[1]], dtype)?;
            let name = format!("bias_leaky_relu_max_pool3d {dtype:?} {dims:?} {p:?}");
            check(&name, &[x, bias], |t| {
                bias_leaky_relu_max_pool3d(&t[0], &t[1], 0.01, &p)
            })?;
        }
    }
    Ok(())
}

#[test]
fn avg_pool3d_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (dims, p) in pool_cases() {
            for count_include_pad in [true, false] {
                let p = Pool3dParams {
                    count_include_pad,
                    ..p
                };
                let x = uniform(-1.0, 1.0, &dims, dtype)?;
                let name = format!("avg_pool3d {dtype:?} {dims:?} {p:?}");
                check(&name, std::slice::from_ref(&x), |t| avg_pool3d(&t[0], &p))?;
                check(&format!("{name} transposed"), &[x], |t| {
                    avg_pool3d(&t[0].transpose(3, 4)?, &p)
                })?;
            }
        }
    }
    Ok(())
}

/// conv3d cases: input dims, weight dims, parameters. They cover groups, per-axis stride,
/// dilation and asymmetric padding, stride > kernel, padding larger than the kernel, the
/// pointwise path (no vol2col) and a large-channel stride-2 layer.
fn conv3d_cases() -> Vec<([usize; 5], [usize; 5], Conv3dParams)> {
    vec![
        (
            [2, 4, 7, 6, 5],
            [6, 2, 3, 2, 3],
            Conv3dParams {
                stride: [2, 1, 2],
                padding: [[1, 0], [2, 1], [0, 2]],
                dilation: [1, 2, 1],
                groups: 2,
            },
        ),
        ([2, 3, 5, 4, 6], [5, 3, 1, 1, 1], Conv3dParams::default()),
        (
            [1, 2, 9, 8, 9],
            [3, 2, 2, 2, 2],
            Conv3dParams {
                stride: [3; 3],
                ..Conv3dParams::symmetric(3)
            },
        ),
        (
            [2, 64, 8, 8, 8],
            [32, 64, 4, 4, 4],
            Conv3dParams {
                stride: [2; 3],
                ..Conv3dParams::symmetric(1)
            },
        ),
    ]
}

#[test]
fn conv3d_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (x_dims, w_dims, p) in conv3d_cases() {
            let x = uniform(-1.0, 1.0, &x_dims, dtype)?;
            let w = uniform(-1.0, 1.0, &w_dims, dtype)?;
            let b = uniform(-1.0, 1.0, &w_dims[..1], dtype)?;
            let name = format!("conv3d {dtype:?} {x_dims:?} {w_dims:?} {p:?}");
            check(&name, &[x.clone(), w.clone(), b], |t| {
                conv3d(&t[0], &t[1], Some(&t[2]), &p)
            })?;
            // Strided input: H and W swapped (the op copies it on the device).
            check(&format!("{name} transposed"), &[x, w], |t| {
                conv3d(&t[0].transpose(3, 4)?, &t[1].transpose(3, 4)?, None, &p)
            })?;
        }
    }
    Ok(())
}

/// Layers whose column matrix exceeds the GPU workspace (256 MiB), so the passes run in
/// several tiles: of output rows of one sample, and of several whole samples.
#[test]
fn conv3d_matches_cpu_across_column_tiles() -> Result<()> {
    for x_dims in [[1, 16, 40, 64, 64], [8, 16, 24, 32, 32]] {
        let x = uniform(-1.0, 1.0, &x_dims, DType::F32)?;
        let w = uniform(-0.1, 0.1, &[8, 16, 3, 3, 3], DType::F32)?;
        let name = format!("conv3d tiled {x_dims:?}");
        // The weight gradient sums ~10⁵ products per entry, in a different order on each device.
        check_with(&name, &[x, w], 1e-4, |t| {
            conv3d(&t[0], &t[1], None, &Conv3dParams::symmetric(1))
        })?;
    }
    Ok(())
}

#[test]
fn conv_transpose3d_matches_cpu() -> Result<()> {
    let cases = [
        (
            [2, 4, 5, 4, 3],
            [4, 3, 3, 3, 2],
            ConvTranspose3dParams {
                stride: [2, 2, 1],
                padding: [1, 0, 1],
                output_padding: [1, 0, 0],
                dilation: [1, 1, 2],
                groups: 1,
            },
        ),
        (
            [1, 4, 3, 5, 4],
            [4, 2, 2, 2, 2],
            ConvTranspose3dParams {
                stride: [2; 3],
                groups: 2,
                ..ConvTranspose3dParams::default()
            },
        ),
        (
            [2, 6, 4, 3, 5],
            [6, 5, 1, 1, 1],
            ConvTranspose3dParams::default(),
        ),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (x_dims, w_dims, p) in cases {
            let x = uniform(-1.0, 1.0, &x_dims, dtype)?;
            let w = uniform(-1.0, 1.0, &w_dims, dtype)?;
            let b = uniform(-1.0, 1.0, &[w_dims[1] * p.groups], dtype)?;
            let name = format!("conv_transpose3d {dtype:?} {x_dims:?} {w_dims:?} {p:?}");
            check(&name, &[x, w, b], |t| {
                conv_transpose3d(&t[0], &t[1], Some(&t[2]), &p)
            })?;
        }
    }
    Ok(())
}

#[test]
fn grid_sample3d_matches_cpu() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let input = uniform(-1.0, 1.0, &[2, 3, 5, 6, 7], dtype)?;
        // Beyond [-1, 1] on purpose: padding and clamping are exercised.
        let grid = uniform(-1.2, 1.2, &[2, 4, 3, 5, 3], dtype)?;
        for mode in [GridSampleMode::Bilinear, GridSampleMode::Nearest] {
            for padding_mode in [GridPaddingMode::Zeros, GridPaddingMode::Border] {
                for align_corners in [false, true] {
                    let p = GridSampleParams {
                        mode,
                        padding_mode,
                        align_corners,
                    };
                    let name = format!("grid_sample3d {dtype:?} {p:?}");
                    check(&name, &[input.clone(), grid.clone()], |t| {
                        grid_sample3d(&t[0], &t[1], &p)
                    })?;
                }
            }
        }
    }
    Ok(())
}

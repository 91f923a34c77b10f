//! grid_sample3d: PyTorch's coordinate conventions on known values, fast == reference,
//! gradients by finite differences, errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::deterministic_values as values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_ops::grid_sample::{
    grid_sample3d, reference, GridPaddingMode, GridSampleMode, GridSampleParams, SampleDims,
};

fn all_params() -> Vec<GridSampleParams> {
    let mut out = Vec::new();
    for mode in [GridSampleMode::Bilinear, GridSampleMode::Nearest] {
        for padding_mode in [GridPaddingMode::Zeros, GridPaddingMode::Border] {
            for align_corners in [false, true] {
                out.push(GridSampleParams {
                    mode,
                    padding_mode,
                    align_corners,
                });
            }
        }
    }
    out
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: index {i}: {a} vs {b}"
        );
    }
}

/// A 1-channel volume `[1, 1, D, H, W]` holding `x + 10 y + 100 z` at voxel `(z, y, x)`.
fn ramp(d: usize, h: usize, w: usize) -> Result<Tensor> {
    let data: Vec<f64> = (0..d * h * w)
        .map(|i| (i % w) as f64 + 10.0 * ((i / w) % h) as f64 + 100.0 * (i / (w * h)) as f64)
        .collect();
    Tensor::from_vec(data, (1, 1, d, h, w), &Device::Cpu)
}

/// Samples `volume` at the listed normalised `(x, y, z)` points.
fn sample(volume: &Tensor, points: &[[f64; 3]], p: &GridSampleParams) -> Result<Vec<f64>> {
    let flat: Vec<f64> = points.iter().flatten().copied().collect();
    let grid = Tensor::from_vec(flat, (1, 1, 1, points.len(), 3), &Device::Cpu)?;
    grid_sample3d(volume, &grid, p)?.flatten_all()?.to_vec1()
}

#[test]
fn trilinear_reproduces_a_linear_ramp_with_both_corner_conventions() -> Result<()> {
    let (d, h, w) = (3usize, 4usize, 5usize);
    let volume = ramp(d, h, w)?;
    let points = [[0.1, -0.3, 0.2], [-0.45, 0.6, -0.2], [0.7, 0.1, 0.5]];
    for align_corners in [false, true] {
        let p = GridSampleParams {
            align_corners,
            ..Default::default()
        };
        let unnorm = |c: f64, size: usize| {
            if align_corners {
                (c + 1.0) / 2.0 * (size as f64 - 1.0)
            } else {
                ((c + 1.0) * size as f64 - 1.0) / 2.0
            }
        };
        let want: Vec<f64> = points
            .iter()
            .map(|q| unnorm(q[0], w) + 10.0 * unnorm(q[1], h) + 100.0 * unnorm(q[2], d))
            .collect();
        assert_close(&sample(&volume, &points, &p)?, &want, 1e-12, "ramp");
    }
    Ok(())
}

#[test]
fn edges_outside_points_and_padding_modes() -> Result<()> {
    let volume = ramp(2, 2, 4)?;
    let zeros = GridSampleParams::default();
    let border = GridSampleParams {
        padding_mode: GridPaddingMode::Border,
        ..zeros
    };
    // align_corners = false: x = -1 is the outer edge of voxel 0 (source -0.5): half of it
    // with zero padding, all of it with border padding. y, z = -1 likewise halve again.
    let on_edge = [[-1.0, -0.5, -0.5], [-1.0, -1.0, -1.0], [1.0, -0.5, -0.5]];
    assert_close(
        &sample(&volume, &on_edge, &zeros)?,
        &[0.0, 0.0, 0.5 * 3.0],
        1e-12,
        "zeros edge",
    );
    assert_close(
        &sample(&volume, &on_edge, &border)?,
        &[0.0, 0.0, 3.0],
        1e-12,
        "border edge",
    );
    let first = [[-1.0, -1.0, -1.0]];
    let shifted = ramp(2, 2, 4)?.affine(1.0, 1.0)?;
    assert_close(
        &sample(&shifted, &first, &zeros)?,
        &[0.125],
        1e-12,
        "corner",
    );
    // Far outside: zeros gives 0, border clamps to the nearest voxel.
    let outside = [[3.0, 0.0, 0.0], [-2.5, 5.0, -7.0]];
    let z = sample(&shifted, &outside, &zeros)?;
    assert_close(&z, &[0.0, 0.0], 0.0, "zeros outside");
    // Border: x clamps to voxel 3; y and z (source 0.5) stay inside; then all clamp to 0/1.
    let b = sample(&shifted, &outside, &border)?;
    assert_close(
        &b,
        &[1.0 + 3.0 + 5.0 + 50.0, 1.0 + 10.0],
        1e-12,
        "border outside",
    );
    // Voxel centres with align_corners = true read the voxels exactly.
    let aligned = GridSampleParams {
        align_corners: true,
        ..zeros
    };
    let centres = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [-1.0 / 3.0, 1.0, -1.0]];
    assert_close(
        &sample(&volume, &centres, &aligned)?,
        &[0.0, 113.0, 11.0],
        1e-12,
        "centres",
    );
    Ok(())
}

#[test]
fn nearest_rounds_half_to_even() -> Result<()> {
    let volume = ramp(1, 1, 4)?;
    let p = GridSampleParams {
        mode: GridSampleMode::Nearest,
        ..Default::default()
    };
    // align_corners = false, W = 4: x = -0.5, 0, 0.5 → sources 0.5, 1.5, 2.5 → 0, 2, 2.
    let points = [
        [-0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0],
        [-1.0, 0.0, 0.0],
    ];
    assert_close(
        &sample(&volume, &points, &p)?,
        &[0.0, 2.0, 2.0, 0.0],
        0.0,
        "nearest",
    );
    Ok(())
}

#[test]
fn nan_grid_samples_zero() -> Result<()> {
    let volume = ramp(2, 2, 2)?.affine(1.0, 1.0)?;
    for p in all_params() {
        let got = sample(&volume, &[[f64::NAN, 0.0, 0.0]], &p)?;
        assert_eq!(got, [0.0], "{p:?}");
    }
    Ok(())
}

/// Input `[N, C, D, H, W]` and grid `[N, Do, Ho, Wo, 3]` with values up to ±1.2 (outside
/// points included).
fn random_case(
    dims: [usize; 5],
    out: [usize; 3],
    seed: u64,
) -> Result<(Tensor, Tensor, SampleDims)> {
    let [n, c, d, h, w] = dims;
    let input = Tensor::from_vec(
        values(n * c * d * h * w, seed, -1.0, 1.0),
        (n, c, d, h, w),
        &Device::Cpu,
    )?;
    let grid = Tensor::from_vec(
        values(n * out.iter().product::<usize>() * 3, seed + 1, -1.2, 1.2),
        (n, out[0], out[1], out[2], 3),
        &Device::Cpu,
    )?;
    let sd = SampleDims::new(input.dims(), grid.dims())?;
    Ok((input, grid, sd))
}

/// Shapes that take each way of splitting the work at 1 to 4 threads: channels-last rows
/// (several channels, at least one point per four voxels) by whole batch items and by points
/// split across threads; channel planes with points split across threads (one channel) and in
/// channel blocks (many channels, few points).
const SPLIT_CASES: [([usize; 5], [usize; 3]); 4] = [
    ([2, 3, 5, 4, 7], [3, 5, 4]),
    ([1, 1, 6, 5, 4], [7, 6, 5]),
    ([1, 9, 3, 4, 3], [2, 3, 40]),
    ([1, 5, 6, 6, 6], [2, 2, 3]),
];

#[test]
fn fast_matches_reference_forward_and_backward() -> Result<()> {
    for (dims, out) in SPLIT_CASES {
        fast_matches_reference(dims, out)?;
    }
    Ok(())
}

#[test]
fn fast_matches_reference_at_every_thread_count() -> Result<()> {
    // The fused backward splits channels and points by the thread count; each split must
    // give the same gradients.
    for threads in [1, 3, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(candle_core::Error::wrap)?;
        pool.install(|| -> Result<()> {
            for (dims, out) in SPLIT_CASES {
                fast_matches_reference(dims, out)?;
            }
            Ok(())
        })
        .map_err(|e| e.context(format!("{threads} threads")))?;
    }
    Ok(())
}

/// Forward and both gradients of the fast path against the reference, for every parameter
/// combination.
fn fast_matches_reference(dims: [usize; 5], out: [usize; 3]) -> Result<()> {
    let (input, grid, sd) = random_case(dims, out, 7)?;
    let x: Vec<f64> = input.flatten_all()?.to_vec1()?;
    let g: Vec<f64> = grid.flatten_all()?.to_vec1()?;
    for p in all_params() {
        let vi = Var::from_tensor(&input)?;
        let vg = Var::from_tensor(&grid)?;
        let y = grid_sample3d(vi.as_tensor(), vg.as_tensor(), &p)?;
        let want = reference::grid_sample3d(&x, &g, &sd, &p);
        assert_close(&y.flatten_all()?.to_vec1()?, &want, 1e-12, "forward");
        // f32 agrees within its precision.
        let y32 = grid_sample3d(
            &input.to_dtype(DType::F32)?,
            &grid.to_dtype(DType::F32)?,
            &p,
        )?;
        assert_close(
            &y32.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
            &want,
            1e-4,
            "forward f32",
        );

        let go = values(y.elem_count(), 11, -1.0, 1.0);
        let go_t = Tensor::from_vec(go.clone(), y.shape(), &Device::Cpu)?;
        let grads = (y * go_t)?.sum_all()?.backward()?;
        let (want_gi, want_gg) = reference::grid_sample3d_backward(&x, &g, &go, &sd, &p);
        let gi = grads.get(vi.as_tensor()).expect("input gradient");
        let gg = grads.get(vg.as_tensor()).expect("grid gradient");
        assert_close(&gi.flatten_all()?.to_vec1()?, &want_gi, 1e-10, "grad input");
        assert_close(&gg.flatten_all()?.to_vec1()?, &want_gg, 1e-10, "grad grid");
    }
    Ok(())
}

#[test]
fn nearest_matches_reference_across_gather_chunks() -> Result<()> {
    // Nearest mode gathers and scatters one channel plane at a time over all points, in chunks
    // of thousands of points: more points than a chunk, an odd count, a batch of 2.
    fast_matches_reference([2, 3, 4, 5, 6], [1, 97, 101])
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let (input, grid, _) = random_case([2, 2, 3, 4, 5], [2, 3, 2], 21)?;
    for p in all_params() {
        let cfg = GradCheckConfig {
            atol: 1e-6,
            rtol: 1e-5,
            // Nearest mode is piecewise constant in the grid: only the input gradient counts.
            skip_inputs: if p.mode == GridSampleMode::Nearest {
                vec![1]
            } else {
                vec![]
            },
            ..Default::default()
        };
        check_gradients(
            |v| grid_sample3d(&v[0], &v[1], &p),
            &[input.clone(), grid.clone()],
            &cfg,
        )
        .map_err(|e| e.context(format!("{p:?}")))?;
    }
    Ok(())
}

#[test]
fn input_gradient_at_voxel_boundaries_and_outside() -> Result<()> {
    // Points exactly on voxel centres and edges, and far outside: the sample is linear in the
    // input there, so its gradient is exact even where the grid gradient has a kink.
    let input = Tensor::from_vec(
        values(2 * 3 * 4 * 2, 5, -1.0, 1.0),
        (1, 2, 3, 4, 2),
        &Device::Cpu,
    )?;
    let coords = [
        [-1.0, -1.0, -1.0],
        [1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0],
        [-0.5, 0.5, 1.0 / 3.0],
        [1.5, -2.0, 0.25],
        [-3.0, 0.0, 2.0],
    ];
    let flat: Vec<f64> = coords.iter().flatten().copied().collect();
    let grid = Tensor::from_vec(flat, (1, 1, 2, 3, 3), &Device::Cpu)?;
    let cfg = GradCheckConfig {
        skip_inputs: vec![1],
        ..Default::default()
    };
    for p in all_params() {
        check_gradients(
            |v| grid_sample3d(&v[0], &v[1], &p),
            &[input.clone(), grid.clone()],
            &cfg,
        )?;
    }
    Ok(())
}

#[test]
fn nearest_grid_gradient_is_zero_and_border_outside_is_zero() -> Result<()> {
    let (input, grid, _) = random_case([1, 2, 3, 3, 3], [2, 2, 2], 3)?;
    let nearest = GridSampleParams {
        mode: GridSampleMode::Nearest,
        ..Default::default()
    };
    let vg = Var::from_tensor(&grid)?;
    let grads = grid_sample3d(&input, vg.as_tensor(), &nearest)?
        .sum_all()?
        .backward()?;
    let gg: Vec<f64> = grads
        .get(vg.as_tensor())
        .expect("grid gradient")
        .flatten_all()?
        .to_vec1()?;
    assert!(gg.iter().all(|&v| v == 0.0));
    // Border clamping holds coordinates outside: no gradient along them (PyTorch's convention).
    let border = GridSampleParams {
        padding_mode: GridPaddingMode::Border,
        ..Default::default()
    };
    let outside = Var::from_vec(vec![1.5f64, -1.7, 2.0], (1, 1, 1, 1, 3), &Device::Cpu)?;
    let grads = grid_sample3d(&input, outside.as_tensor(), &border)?
        .sum_all()?
        .backward()?;
    let gg: Vec<f64> = grads
        .get(outside.as_tensor())
        .expect("grid gradient")
        .flatten_all()?
        .to_vec1()?;
    assert_eq!(gg, [0.0, 0.0, 0.0]);
    Ok(())
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    let (input, grid, _) = random_case([2, 3, 4, 5, 3], [2, 2, 3], 9)?;
    let p = GridSampleParams::default();
    // Same values through a strided view: swap N and C twice.
    let strided = input.transpose(0, 1)?.contiguous()?.transpose(0, 1)?;
    assert!(!strided.is_contiguous());
    let a = grid_sample3d(&input, &grid, &p)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let b = grid_sample3d(&strided, &grid, &p)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    assert_eq!(a, b);
    let strided_grid = grid
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .permute((0, 2, 1, 3, 4))?;
    check_gradients(
        |v| grid_sample3d(&v[0].transpose(0, 1)?, &v[1], &p),
        &[input.transpose(0, 1)?.contiguous()?, strided_grid],
        &GradCheckConfig::default(),
    )?;
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let input = Tensor::zeros((2, 1, 3, 3, 3), DType::F32, &dev)?;
    let p = GridSampleParams::default();
    let two = Tensor::zeros((2, 1, 1, 4, 2), DType::F32, &dev)?;
    let err = grid_sample3d(&input, &two, &p).unwrap_err().to_string();
    assert!(err.contains("last dim must be 3"), "{err}");
    let batch = Tensor::zeros((3, 1, 1, 4, 3), DType::F32, &dev)?;
    let err = grid_sample3d(&input, &batch, &p).unwrap_err().to_string();
    assert!(err.contains("batch mismatch"), "{err}");
    let rank4 = Tensor::zeros((2, 1, 4, 3), DType::F32, &dev)?;
    assert!(grid_sample3d(&input, &rank4, &p).is_err());
    assert!(grid_sample3d(&input.squeeze(1)?, &batch, &p).is_err());
    let f64_grid = Tensor::zeros((2, 1, 1, 4, 3), DType::F64, &dev)?;
    assert!(grid_sample3d(&input, &f64_grid, &p).is_err());
    let empty = Tensor::zeros((2, 1, 0, 3, 3), DType::F32, &dev)?;
    assert!(grid_sample3d(&empty, &f64_grid.to_dtype(DType::F32)?, &p).is_err());
    Ok(())
}

#[test]
fn fast_floor_and_rounding_match_std() {
    use vnr_ops::dispatch::Float;
    let specials = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999997,
        -0.49999997,
        1e-30,
        -1e-30,
        3.0,
        -3.0,
        8_388_607.5,
        -8_388_607.5,
        8_388_609.0,
        1e20,
        -1e20,
        4_503_599_627_370_495.5,
    ];
    let randoms = values(2000, 17, -300.0, 300.0);
    for &v in specials.iter().chain(&randoms) {
        assert_eq!(Float::floor(v), v.floor(), "{v}");
        assert_eq!(Float::round_half_even(v), v.round_ties_even(), "{v}");
        let v32 = v as f32;
        assert_eq!(Float::floor(v32), v32.floor(), "{v32}");
        assert_eq!(Float::round_half_even(v32), v32.round_ties_even(), "{v32}");
    }
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(Float::floor(v).to_bits(), v.floor().to_bits());
        assert_eq!(
            Float::round_half_even(v).to_bits(),
            v.round_ties_even().to_bits()
        );
    }
}

#[test]
fn sample_dims_with_overflowing_counts_are_errors() {
    const BIG: usize = 1 << 40;
    // `points()` / `voxels()` overflowed (a panic in debug builds).
    assert!(SampleDims::new(&[1, 1, 1, 1, 1], &[1, BIG, BIG, BIG, 3]).is_err());
    assert!(SampleDims::new(&[1, BIG, BIG, BIG, 1], &[1, 1, 1, 1, 3]).is_err());
    assert!(SampleDims::new(&[0, 0, BIG, BIG, BIG], &[0, 1, 1, 1, 3]).is_err());
    assert!(SampleDims::new(&[1, 1, 1, 1, 1], &[1, usize::MAX, 2, 1, 3]).is_err());
    assert!(SampleDims::new(&[1, 2, 3, 4, 5], &[1, 2, 2, 2, 3]).is_ok());
}

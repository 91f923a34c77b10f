//! Forward + backward timings of `grid_sample3d` on the shapes the renderers use, to compare
//! with `tools/bench/grid_sample_peer.py` (PyTorch's `F.grid_sample`, 5-D).
//!
//! `cargo bench -p vnr-ops --bench grid_sample [-- FILTER]`

use candle_core::{Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use vnr_ops::grid_sample::{grid_sample3d, GridPaddingMode, GridSampleMode, GridSampleParams};

/// One benchmarked call: input `[N, C, D, H, W]`, grid `[N, Do, Ho, Wo, 3]`, parameters.
struct Case {
    name: &'static str,
    input: [usize; 5],
    grid: [usize; 5],
    params: GridSampleParams,
}

fn cases() -> Vec<Case> {
    let trilinear = GridSampleParams::default();
    vec![
        // RenderNet-style resampling of a 64³ occupancy grid into 128³.
        Case {
            name: "resample_1ch_64_to_128",
            input: [1, 1, 64, 64, 64],
            grid: [1, 128, 128, 128, 3],
            params: GridSampleParams {
                align_corners: true,
                ..trilinear
            },
        },
        // Feature-volume lookups at ray samples (4096 rays × 32 points, 16 channels).
        Case {
            name: "rays_16ch_64_4096x32",
            input: [1, 16, 64, 64, 64],
            grid: [1, 1, 4096, 32, 3],
            params: trilinear,
        },
        // A batch of small volumes, border padding.
        Case {
            name: "batch4_8ch_32_border",
            input: [4, 8, 32, 32, 32],
            grid: [4, 32, 32, 32, 3],
            params: GridSampleParams {
                padding_mode: GridPaddingMode::Border,
                ..trilinear
            },
        },
        Case {
            name: "nearest_16ch_64_4096x32",
            input: [1, 16, 64, 64, 64],
            grid: [1, 1, 4096, 32, 3],
            params: GridSampleParams {
                mode: GridSampleMode::Nearest,
                ..trilinear
            },
        },
    ]
}

/// Deterministic values in [-scale, scale), so runs are comparable (same formula as the peer).
fn filled(dims: &[usize], scale: f32) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| (((i * 7919) % 2001) as f32 / 1000.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu)
}

/// Forward, then backward of `sum(y · r)` for a fixed `r` (gradients for input and grid).
fn forward_backward(case: &Case, x: &Var, grid: &Var, r: &Tensor) -> Result<()> {
    let y = grid_sample3d(x.as_tensor(), grid.as_tensor(), &case.params)?;
    black_box(y.mul(r)?.sum_all()?.backward()?);
    Ok(())
}

fn bench(c: &mut Criterion) {
    // As vnr's programs run: candle's element-wise ops on the calling thread, freed tensors kept.
    vnr_ops::configure_process_for_training();
    let mut group = c.benchmark_group("grid_sample3d_fwd_bwd");
    group.sample_size(10);
    for case in cases() {
        let setup = || -> Result<(Var, Var, Tensor)> {
            let x = Var::from_tensor(&filled(&case.input, 1.0)?)?;
            let grid = Var::from_tensor(&filled(&case.grid, 1.05)?)?;
            let y = grid_sample3d(x.as_tensor(), grid.as_tensor(), &case.params)?;
            Ok((x, grid, filled(y.dims(), 1.0)?))
        };
        let (x, grid, r) = match setup() {
            Ok(v) => v,
            Err(e) => panic!("{}: setup failed: {e}", case.name),
        };
        group.bench_function(case.name, |b| {
            b.iter(|| {
                if let Err(e) = forward_backward(&case, &x, &grid, &r) {
                    panic!("{}: {e}", case.name);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

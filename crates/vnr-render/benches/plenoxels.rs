//! Plenoxel rendering speed, to compare with `tools/bench/plenoxels_peer.py` (the same grid,
//! rays and svox2 formulas in PyTorch):
//!
//! - `render_16k`: forward colours of 16,384 rays (one 128×128 view);
//! - `train_5k`: forward + backward of the MSE of 5,000 rays into density and SH (one
//!   optimisation step without the optimiser update);
//! - `optimizer_step_5k`: one whole [`PlenoxelOptimizer::step`] (render, backward, TV, RMSProp)
//!   of 5,000 rays on the dense 64³ grid the CPU preset starts from (not in the peer).
//!
//! The grid is 128³ over the unit box: a soft ball of radius 0.75 (density
//! `60 · clamp((0.75 − r) / 0.1, 0, 1)`) with pseudo-random SH degree 2; rays start on a sphere
//! of radius 3 and aim near the centre. Both are closed formulas the peer repeats.
//!
//! `cargo bench -p vnr-render --bench plenoxels [-- FILTER]`

use candle_core::{Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;
use std::hint::black_box;
use vnr_render::multiview::RayBatch;
use vnr_render::plenoxels::{OptimizeConfig, PlenoxelGrid, PlenoxelOptimizer, RenderOptions};

const DIMS: usize = 128;
const RADIUS: f64 = 0.75;

fn grid() -> PlenoxelGrid {
    let mut links = vec![-1i32; DIMS * DIMS * DIMS];
    let mut density = Vec::new();
    let centre = |i: usize| -1.0 + 2.0 * (i as f64 + 0.5) / DIMS as f64;
    for (index, link) in links.iter_mut().enumerate() {
        let p = [index / (DIMS * DIMS), (index / DIMS) % DIMS, index % DIMS].map(centre);
        let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        if r < RADIUS {
            *link = density.len() as i32;
            density.push((60.0 * ((RADIUS - r) / 0.1).clamp(0.0, 1.0)) as f32);
        }
    }
    let n = density.len();
    let sh: Vec<f32> = (0..n * 27)
        .map(|i| (((i * 7919) % 2001) as f32 / 1000.0 - 1.0) * 0.3)
        .collect();
    let dev = Device::Cpu;
    PlenoxelGrid::new(
        [DIMS; 3],
        links,
        Tensor::from_vec(density, (n, 1), &dev).expect("density"),
        Tensor::from_vec(sh, (n, 27), &dev).expect("sh"),
        [1.0; 3],
        [0.0; 3],
    )
    .expect("bench grid")
}

/// `[M, 3]` origins and directions.
fn rays(m: usize) -> Result<(Tensor, Tensor)> {
    let (mut origins, mut dirs) = (Vec::new(), Vec::new());
    for i in 0..m {
        let i = i as f64;
        let azimuth = 2.0 * std::f64::consts::PI * ((i * 0.618_033_988_749_894_9) % 1.0);
        let elevation = (((i * 0.754_877_666_246_692_7) % 1.0) * 1.6 - 0.8).asin();
        let o = [
            3.0 * elevation.cos() * azimuth.sin(),
            3.0 * elevation.sin(),
            3.0 * elevation.cos() * azimuth.cos(),
        ];
        let target = [
            0.4 * ((i * 0.569_840_290_998_053_2) % 1.0 - 0.5),
            0.4 * ((i * 0.381_966_011_250_105_1) % 1.0 - 0.5),
            0.4 * ((i * 0.236_067_977_499_789_7) % 1.0 - 0.5),
        ];
        origins.extend(o.map(|v| v as f32));
        dirs.extend((0..3).map(|a| (target[a] - o[a]) as f32));
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(origins, (m, 3), &dev)?,
        Tensor::from_vec(dirs, (m, 3), &dev)?,
    ))
}

fn bench(c: &mut Criterion) {
    let grid = grid();
    let opts = RenderOptions::default();
    let mut group = c.benchmark_group("plenoxels_128");
    group.sample_size(10);

    let (o, d) = rays(16_384).expect("rays");
    let mean = grid
        .render_rays(&o, &d, &opts)
        .and_then(|c| c.mean_all()?.to_scalar::<f32>())
        .expect("render");
    println!("render_16k mean colour {mean:.6}");
    group.bench_function("render_16k", |b| {
        b.iter(|| black_box(grid.render_rays(&o, &d, &opts).expect("render")))
    });

    let (o, d) = rays(5000).expect("rays");
    let density = Var::from_tensor(grid.density()).expect("var");
    let sh = Var::from_tensor(grid.sh()).expect("var");
    let tracked = grid
        .with_data(density.as_tensor().clone(), sh.as_tensor().clone())
        .expect("tracked grid");
    let step = || -> Result<Tensor> {
        let colour = tracked.render_rays(&o, &d, &opts)?;
        let loss = (colour.clone() - 0.5)?.sqr()?.mean_all()?;
        black_box(loss.backward()?);
        Ok(colour)
    };
    let mean = step()
        .and_then(|c| c.mean_all()?.to_scalar::<f32>())
        .expect("train step");
    println!("train_5k mean colour {mean:.6}");
    group.bench_function("train_5k", |b| b.iter(|| step().expect("train step")));

    let config = OptimizeConfig {
        resolutions: vec![[64; 3]],
        upsample_every: usize::MAX,
        ..OptimizeConfig::cpu_128()
    };
    let mut optimizer = PlenoxelOptimizer::from_config(config).expect("optimizer");
    let batch = RayBatch {
        colours: Tensor::full(0.5f32, (5000, 3), &Device::Cpu).expect("colours"),
        origins: o,
        directions: d,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    group.bench_function("optimizer_step_5k", |b| {
        b.iter(|| black_box(optimizer.step(&batch, &mut rng).expect("optimizer step")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

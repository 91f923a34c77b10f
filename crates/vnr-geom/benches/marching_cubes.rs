//! Marching cubes, voxeliser and chamfer timings.
//!
//! `cargo bench -p vnr-geom --bench marching_cubes [FILTER]`. Compare marching cubes with
//! scikit-image on the same field: `tools/bench/mc_peer.py` builds it with the same formula
//! ([`bench_field`]) and times `skimage.measure.marching_cubes`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_geom::marching_cubes::{marching_cubes, DenseField, MarchingCubesConfig};
use vnr_geom::metrics::{chamfer, sample_surface, Normalization, PointSet};
use vnr_geom::voxelize::{voxelize, Fill, VoxelFrame};

/// An `n³` signed distance field over `[-1, 1]³` (grid point `i` at `2i/(n−1) − 1`): the union
/// of a sphere (radius 0.5 at (−0.2, 0, 0.1)) and a torus about the y axis (radii 0.55 and
/// 0.18 at (0.2, 0, 0)), plus a ripple `0.02·sin 12x·sin 12y·sin 12z` (same formula as
/// `mc_peer.py`).
fn bench_field(n: usize) -> Vec<f32> {
    let coord = |i: usize| 2.0 * i as f64 / (n - 1) as f64 - 1.0;
    let mut values = Vec::with_capacity(n * n * n);
    for i in 0..n {
        let x = coord(i);
        for j in 0..n {
            let y = coord(j);
            for k in 0..n {
                let z = coord(k);
                let sphere = ((x + 0.2).powi(2) + y * y + (z - 0.1).powi(2)).sqrt() - 0.5;
                let ring = ((x - 0.2).powi(2) + z * z).sqrt() - 0.55;
                let torus = (ring * ring + y * y).sqrt() - 0.18;
                let ripple = 0.02 * (12.0 * x).sin() * (12.0 * y).sin() * (12.0 * z).sin();
                values.push((sphere.min(torus) + ripple) as f32);
            }
        }
    }
    values
}

fn field(values: &[f32], n: usize) -> DenseField<'_> {
    DenseField {
        values,
        dims: [n; 3],
        origin: [-1.0; 3],
        voxel_size: [2.0 / (n - 1) as f64; 3],
    }
}

fn bench_marching_cubes(c: &mut Criterion) {
    let mut group = c.benchmark_group("marching_cubes");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in [128, 256] {
        let values = bench_field(n);
        group.throughput(Throughput::Elements((n * n * n) as u64));
        group.bench_with_input(BenchmarkId::new("dense", n), &n, |b, &n| {
            b.iter(|| {
                black_box(
                    marching_cubes(&field(&values, n), &MarchingCubesConfig::default()).unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn bench_voxelize_and_chamfer(c: &mut Criterion) {
    let n = 128;
    let values = bench_field(n);
    let mesh = marching_cubes(&field(&values, n), &MarchingCubesConfig::default()).unwrap();
    let mut group = c.benchmark_group("geometry");
    group.sample_size(10);
    for fill in [Fill::Surface, Fill::Solid, Fill::Carved] {
        let frame = VoxelFrame::fit_binvox(&mesh, 256).unwrap();
        group.bench_function(format!("voxelize_256_{fill:?}"), |b| {
            b.iter(|| black_box(voxelize(&mesh, &frame, fill).unwrap()))
        });
    }
    let gt = sample_surface(&mesh, 30_000, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    group.bench_function("chamfer_30k", |b| {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        b.iter(|| {
            black_box(
                chamfer(
                    &PointSet::from(&gt),
                    &mesh,
                    30_000,
                    Normalization::default(),
                    &mut rng,
                )
                .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_marching_cubes, bench_voxelize_and_chamfer);
criterion_main!(benches);

//! Reference renderer timings, side by side with OpenVDB's `vdb_render`
//! (`tools/bench/vdb_render_peer.py` times the peer on the same scenes and cameras):
//!
//! - `cortex_level_set_256`: cortex-sphere.vdb (fixture) level set, 256×256, Phong + shadow ray;
//!   `cortex_level_set_256_normal`: the normal map only (primary rays: vdb_render's work).
//! - `fog_1m_voxels_256`: a 100³ (1,000,000 active voxels) fog volume, vdb_render's defaults.
//! - `dense_256cubed_build` / `dense_256cubed_render_256`: a 256³ dense signed distance grid
//!   (bricking it, then one 256×256 render).
//!
//! Run with `cargo bench -p vnr-render --bench reference`.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use vnr_formats::testing::fixture;
use vnr_render::reference::{
    load_object, render, Camera, FogVolume, GridSurface, IndexMap, LoadOptions, Object, Outputs,
    Projection, Scene, Vec3,
};

/// The cameras of `vdb_render_peer.py`: orbit azimuth 30°, elevation 20°, 40° field of view.
fn camera(radius: f64) -> Camera {
    Camera::orbit(
        30.0,
        20.0,
        radius,
        Vec3::default(),
        Projection::Perspective { fov_y_deg: 40.0 },
        256,
        256,
    )
    .expect("valid camera")
}

/// Density of voxel `(i, j, k)` of the 100³ fog cube (same formula as the peer script):
/// 0.05 everywhere plus a smooth ball, so every voxel is active.
fn fog_density(i: usize, j: usize, k: usize) -> f32 {
    let d = [i, j, k].map(|v| (v as f64 - 49.5) / 49.5);
    let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    (0.05 + 0.95 * (1.0 - r).max(0.0)) as f32
}

/// Signed distance (voxels) of voxel `(i, j, k)` of the 256³ grid to a torus.
fn torus_sdf(i: usize, j: usize, k: usize) -> f32 {
    let p = [i, j, k].map(|v| v as f64 - 127.5);
    let ring = (p[0] * p[0] + p[2] * p[2]).sqrt() - 80.0;
    ((ring * ring + p[1] * p[1]).sqrt() - 35.0) as f32
}

/// The `n³` values `value(i, j, k)` of a dense grid, `k` fastest (our dense layout).
fn dense_values(n: usize, value: fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                out.push(value(i, j, k));
            }
        }
    }
    out
}

/// Whether the command line's name filter (criterion's first free argument) selects `name`;
/// scenes that are filtered out are not even built.
fn wanted(name: &str) -> bool {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
    filter.is_none_or(|f| name.contains(&f))
}

fn benches(c: &mut Criterion) {
    if wanted("cortex_level_set_256") {
        cortex_bench(c);
    }
    if wanted("fog_1m_voxels_256") {
        fog_bench(c);
    }
    if wanted("dense_256cubed") {
        dense_bench(c);
    }
}

fn cortex_bench(c: &mut Criterion) {
    if let Some(path) = fixture("vdb/cortex-sphere.vdb") {
        let object = load_object(path.to_str().unwrap_or_default(), &LoadOptions::default())
            .expect("cortex-sphere loads");
        let scene = Scene::new(object);
        let cam = camera(10.0);
        c.bench_function("cortex_level_set_256", |b| {
            b.iter(|| render(&scene, &cam, Outputs::SHADED).expect("renders"))
        });
        // vdb_render's diffuse shader is |n · d| without shadows: the normal map is that work.
        let normal = Outputs {
            shaded: false,
            normal: true,
            ..Outputs::SHADED
        };
        c.bench_function("cortex_level_set_256_normal", |b| {
            b.iter(|| render(&scene, &cam, normal).expect("renders"))
        });
    }
}

fn fog_bench(c: &mut Criterion) {
    let n = 100;
    let fog = dense_values(n, fog_density);
    // pyopenvdb's copyFromArray(ijk=(-50, -50, -50)) with voxel size 0.02.
    let map = IndexMap::uniform(0.02, Vec3::splat(-1.0)).expect("valid map");
    let volume = FogVolume::from_dense(&fog, [n; 3], map).expect("fog builds");
    let scene = Scene::new(Object::Fog(Box::new(volume)));
    let cam = camera(4.0);
    // A render takes about half a second: ten samples of one iteration each.
    let mut group = c.benchmark_group("fog");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("fog_1m_voxels_256", |b| {
        b.iter(|| render(&scene, &cam, Outputs::SHADED).expect("renders"))
    });
    group.finish();
}

fn dense_bench(c: &mut Criterion) {
    let n = 256;
    let sdf = dense_values(n, torus_sdf);
    let map = IndexMap::uniform(1.0 / 128.0, Vec3::splat(-127.5 / 128.0)).expect("valid map");
    let build =
        || GridSurface::from_dense(&sdf, [n; 3], f32::INFINITY, 0.0, true, map).expect("builds");
    let mut group = c.benchmark_group("dense_256cubed");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("build", |b| b.iter(build));
    let scene = Scene::new(Object::Surface(Box::new(build())));
    let cam = camera(3.5);
    group.bench_function("render_256", |b| {
        b.iter(|| render(&scene, &cam, Outputs::SHADED).expect("renders"))
    });
    group.finish();
}

criterion_group!(reference, benches);
criterion_main!(reference);

//! Signed distance throughput and DeepSDF sampling time.
//!
//! `cargo bench -p vnr-geom --bench signed_distance [FILTER]`. Cases on the bunny need the
//! fixtures (see `vnr_formats::testing`); the 1-million-triangle torus is generated. Compare
//! with `tools/bench/sdf_peer.py` (libigl, trimesh) on the same points: both draw
//! `POINTS` points uniformly in the bunny's bounding box grown by 10 % per side from the same
//! deterministic sequence ([`bench_points`]). The `deepsdf_points` cases query DeepSDF's 500,000
//! sample positions of the bunny (mostly near the surface, the costly case), distance and
//! winding number apart; `sdf_peer.py --deepsdf-points N` times libigl on the same distribution.
//! `sdf_peer.py --points 100000 --deepsdf-points 500000 --vnr` runs libigl and then this bench's
//! `bunny_winding` and `deepsdf_points_signed` cases (see [`once`]) and prints the ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_geom::deepsdf_samples::{sample_sdf, SamplingOptions};
use vnr_geom::normalize::Normalization;
use vnr_geom::procedural::torus_mesh;
use vnr_geom::signed_distance::{MeshSdf, SdfOptions};
use vnr_geom::winding::FastWindingNumber;

const POINTS: usize = 100_000;

/// `n` points in `mesh`'s bounding box grown by 10 % per side: point `i` has coordinates
/// `lo + (hi − lo)·(1.2·f − 0.1)` with `f = ((i·p_k) mod 10007) / 10007` for the primes
/// `p = (7919, 104729, 1299709)` (the same formula as `sdf_peer.py`).
fn bench_points(mesh: &TriangleMesh, n: usize) -> Vec<[f32; 3]> {
    let (lo, hi) = mesh.bounding_box().expect("a mesh with vertices");
    let primes = [7919u64, 104_729, 1_299_709];
    (0..n as u64)
        .map(|i| {
            std::array::from_fn(|k| {
                let f = ((i * primes[k]) % 10007) as f32 / 10007.0;
                lo[k] + (hi[k] - lo[k]) * (1.2 * f - 0.1)
            })
        })
        .collect()
}

/// DeepSDF's 500,000 sample positions of `mesh` (94 % near the surface, where queries cost
/// the most), in the normalised space they were drawn in.
fn deepsdf_points(mesh: &TriangleMesh) -> Vec<[f32; 3]> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let samples = sample_sdf(mesh, &SamplingOptions::default(), &mut rng).expect("samples");
    samples
        .pos
        .iter()
        .chain(&samples.neg)
        .map(|r| [r[0], r[1], r[2]])
        .collect()
}

fn bunny() -> Option<TriangleMesh> {
    let path = vnr_formats::testing::fixture("meshes/stanford-bunny.obj")?;
    Some(TriangleMesh::read(path).expect("the bunny fixture reads"))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sdf");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    if let Some(mesh) = bunny() {
        let points = bench_points(&mesh, POINTS);
        let sdf = MeshSdf::new(&mesh, &SdfOptions::default()).expect("the bunny builds");
        group.throughput(Throughput::Elements(POINTS as u64));
        group.bench_function(BenchmarkId::new("bunny_winding", POINTS), |b| {
            b.iter(|| black_box(sdf.signed_distances(&points)))
        });
        group.bench_function(BenchmarkId::new("bunny_distance_only", POINTS), |b| {
            b.iter(|| black_box(sdf.bvh().closest_points(&points, f32::INFINITY)))
        });
        let winding = FastWindingNumber::new(&mesh, 2.0).expect("the bunny builds");
        group.bench_function(BenchmarkId::new("bunny_winding_number_only", POINTS), |b| {
            b.iter(|| black_box(winding.winding_numbers(&points)))
        });
        let normalized = Normalization::deepsdf(&mesh)
            .expect("the bunny normalises")
            .apply_to_mesh(&mesh);
        let near = deepsdf_points(&mesh);
        let sdf = MeshSdf::new(&normalized, &SdfOptions::default()).expect("the bunny builds");
        group.throughput(Throughput::Elements(near.len() as u64));
        group.bench_function(
            BenchmarkId::new("bunny_deepsdf_points_distance_only", near.len()),
            |b| b.iter(|| black_box(sdf.bvh().closest_points(&near, f32::INFINITY))),
        );
        let winding = FastWindingNumber::new(&normalized, 2.0).expect("the bunny builds");
        group.bench_function(
            BenchmarkId::new("bunny_deepsdf_points_winding_number_only", near.len()),
            |b| b.iter(|| black_box(winding.winding_numbers(&near))),
        );
        group.throughput(Throughput::Elements(1));
        group.bench_function("bunny_build", |b| {
            b.iter(|| black_box(MeshSdf::new(&mesh, &SdfOptions::default()).expect("builds")))
        });
        group.bench_function("bunny_deepsdf_500k", |b| {
            b.iter(|| {
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                black_box(
                    sample_sdf(&mesh, &SamplingOptions::default(), &mut rng).expect("samples"),
                )
            })
        });
    }
    let big = torus_mesh(1.0, 0.3, 1000, 500).unwrap();
    group.bench_function("torus_1m_triangles_deepsdf_500k", |b| {
        b.iter(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            black_box(sample_sdf(&big, &SamplingOptions::default(), &mut rng).expect("samples"))
        })
    });
    group.finish();
}

/// Process CPU time (user + system) in seconds, from `/proc/self/stat` (Linux; `None`
/// elsewhere). On a machine shared with other work, points per CPU-second is the figure that
/// does not depend on the load.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `VNR_SDF_BENCH_ONCE=1 cargo bench -p vnr-geom --bench signed_distance`: each bunny case a
/// few times with wall and CPU time, and the peak resident memory, instead of criterion.
/// `VNR_SDF_BENCH_ONCE=NAME` runs only the cases whose names contain `NAME` (e.g. `bunny_`
/// for the box points, `deepsdf_points` for the near-surface ones).
fn once(filter: &str) {
    let Some(mesh) = bunny() else {
        return;
    };
    let wanted = |name: &str| filter == "1" || name.contains(filter);
    let sdf = MeshSdf::new(&mesh, &SdfOptions::default()).expect("the bunny builds");
    let points = bench_points(&mesh, POINTS);
    let report = |name: &str, n: usize, run: &mut dyn FnMut()| {
        if !wanted(name) {
            return;
        }
        for _ in 0..3 {
            let (wall, cpu) = (std::time::Instant::now(), cpu_seconds());
            run();
            let wall = wall.elapsed().as_secs_f64();
            let cpu = cpu.zip(cpu_seconds()).map_or(f64::NAN, |(a, b)| b - a);
            println!(
                "{name:28} {n:7} points  wall {wall:7.3} s ({:8.0} points/s)  cpu {cpu:7.3} s ({:8.0} points/cpu-s)",
                n as f64 / wall,
                n as f64 / cpu
            );
        }
    };
    report("bunny_winding", POINTS, &mut || {
        black_box(sdf.signed_distances(&points));
    });
    report("bunny_distance_only", POINTS, &mut || {
        black_box(sdf.bvh().closest_points(&points, f32::INFINITY));
    });
    let winding = FastWindingNumber::new(&mesh, 2.0).expect("the bunny builds");
    report("bunny_winding_number_only", POINTS, &mut || {
        black_box(winding.winding_numbers(&points));
    });
    let normalized = Normalization::deepsdf(&mesh)
        .expect("the bunny normalises")
        .apply_to_mesh(&mesh);
    // Drawing the near-surface points takes a second: only when their cases run.
    let near = if [
        "deepsdf_points_signed",
        "deepsdf_points_distance",
        "deepsdf_points_winding",
    ]
    .iter()
    .any(|name| wanted(name))
    {
        deepsdf_points(&mesh)
    } else {
        Vec::new()
    };
    let near_sdf = MeshSdf::new(&normalized, &SdfOptions::default()).expect("the bunny builds");
    report("deepsdf_points_signed", near.len(), &mut || {
        black_box(near_sdf.signed_distances(&near));
    });
    report("deepsdf_points_distance", near.len(), &mut || {
        black_box(near_sdf.bvh().closest_points(&near, f32::INFINITY));
    });
    let winding = FastWindingNumber::new(&normalized, 2.0).expect("the bunny builds");
    report("deepsdf_points_winding", near.len(), &mut || {
        black_box(winding.winding_numbers(&near));
    });
    report("bunny_deepsdf_500k", 500_000, &mut || {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        black_box(sample_sdf(&mesh, &SamplingOptions::default(), &mut rng).expect("samples"));
    });
    drop((sdf, near_sdf, winding, near, normalized));
    print_peak_memory("the bunny cases");
    if !wanted("torus_1m_triangles_deepsdf") {
        return;
    }
    // Start the peak over (Linux: writing 5 to clear_refs resets VmHWM), so the torus's own
    // peak shows.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let big = torus_mesh(1.0, 0.3, 1000, 500).unwrap();
    report("torus_1m_triangles_deepsdf", 500_000, &mut || {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        black_box(sample_sdf(&big, &SamplingOptions::default(), &mut rng).expect("samples"));
    });
    print_peak_memory(if reset { "the torus case" } else { "all cases" });
}

/// Prints the peak resident memory (`VmHWM`, Linux) since the start or the last reset.
fn print_peak_memory(what: &str) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines().filter(|l| l.starts_with("VmHWM")) {
            println!(
                "peak resident memory, {what}: {}",
                line.trim_start_matches("VmHWM:").trim()
            );
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Some(filter) = std::env::var_os("VNR_SDF_BENCH_ONCE") {
        once(&filter.to_string_lossy());
    } else {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}

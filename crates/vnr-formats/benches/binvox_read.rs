//! binvox read speed: the four shared fixtures (64³ and 128³, skipped cleanly when the fixtures
//! folder is absent) and a generated 256³ sphere written by our own writer to a temp dir.
//!
//! Two groups: `binvox_from_bytes` parses a file already in memory (throughput in file bytes),
//! `binvox_read` reads it from disk and decodes it (throughput in voxels).
//!
//! Run: `cargo bench -p vnr-formats --bench binvox_read` (release build).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vnr_formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr_formats::testing::fixture;

const FIXTURES: [&str; 4] = ["bunny", "chair", "suzanne", "vengi-test"];
const GENERATED_SIDE: usize = 256;

/// A solid sphere of radius 0.4·side centred in a `side³` grid: long runs inside and outside,
/// short ones along the surface, like a voxelised closed mesh.
fn sphere(side: usize) -> BinvoxGrid {
    let centre = side as f64 / 2.0;
    let radius2 = (0.4 * side as f64).powi(2);
    let mut values = Vec::with_capacity(side * side * side);
    for i in 0..side {
        for j in 0..side {
            for k in 0..side {
                let d2 = [i, j, k]
                    .iter()
                    .map(|&c| (c as f64 + 0.5 - centre).powi(2))
                    .sum::<f64>();
                values.push(u8::from(d2 <= radius2));
            }
        }
    }
    BinvoxGrid::new([side; 3], values, BinvoxVersion::V1).expect("sphere grid")
}

/// (name, path) of every file to read; the temp dir must outlive the benchmarks.
fn inputs(generated_dir: &tempfile::TempDir) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = FIXTURES
        .iter()
        .filter_map(|name| fixture(&format!("binvox/{name}.binvox")).map(|p| (name.to_string(), p)))
        .collect();
    let path = generated_dir.path().join("sphere256.binvox");
    sphere(GENERATED_SIDE)
        .write(&path)
        .expect("write generated grid");
    files.push((format!("sphere{GENERATED_SIDE}"), path));
    files
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = inputs(&dir);
    let loaded: Vec<(String, PathBuf, Vec<u8>, u64)> = files
        .into_iter()
        .map(|(name, path)| {
            let bytes = std::fs::read(&path).expect("read input");
            let voxels = BinvoxGrid::from_bytes(&bytes)
                .expect("valid input")
                .values()
                .len() as u64;
            (name, path, bytes, voxels)
        })
        .collect();

    let mut group = c.benchmark_group("binvox_from_bytes");
    for (name, _, bytes, _) in &loaded {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name.as_str(), |b| {
            b.iter(|| BinvoxGrid::from_bytes(std::hint::black_box(bytes)).expect("parse"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("binvox_read");
    for (name, path, _, voxels) in &loaded {
        group.throughput(Throughput::Elements(*voxels));
        group.bench_function(name.as_str(), |b| {
            b.iter(|| BinvoxGrid::read(std::hint::black_box(path)).expect("read"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

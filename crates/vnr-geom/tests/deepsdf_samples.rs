//! DeepSDF sampling: counts per level, pos/neg split, seeds, normalisation, files, bad input.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{read_npz, NpyData};
use vnr_geom::deepsdf_samples::{
    sample_directory, sample_mesh_file, sample_sdf, GridFormat, GridOutput, Preset, SampleCounts,
    SamplingError, SamplingOptions, MAX_SAMPLE_COUNT,
};
use vnr_geom::normalize::{Normalization, NormalizeError};
use vnr_geom::procedural::{cuboid_mesh, torus_mesh};

fn options(count: usize) -> SamplingOptions {
    SamplingOptions {
        count,
        ..SamplingOptions::default()
    }
}

#[test]
fn preset_counts() {
    // DeepSDF's defaults: 500,000 → 235,000 surface points (470,000 near) + 30,000 uniform.
    assert_eq!(
        Preset::DeepSdf.counts(500_000),
        SampleCounts {
            surface_points: 235_000,
            uniform: 30_000
        }
    );
    // Odd `near` (47·1001/50 = 940 is even; 47·1010/50 = 949 is odd): C++ totals are n − 1.
    let odd = Preset::DeepSdf.counts(1010);
    assert_eq!(
        odd,
        SampleCounts {
            surface_points: 474,
            uniform: 61
        }
    );
    assert_eq!(odd.total(), 1009);
    assert_eq!(
        Preset::NeoRender.counts(500_000),
        SampleCounts {
            surface_points: 238_095,
            uniform: 23_810
        }
    );
    assert_eq!(Preset::NeoRender.counts(0).total(), 0);
}

#[test]
fn samples_split_and_reproduce() {
    let mesh = torus_mesh(2.0, 0.8, 64, 32).unwrap();
    let opts = options(20_000);
    let a = sample_sdf(&mesh, &opts, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
    let b = sample_sdf(&mesh, &opts, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
    let c = sample_sdf(&mesh, &opts, &mut ChaCha8Rng::seed_from_u64(8)).unwrap();
    assert_eq!(a, b, "a seed must reproduce the samples exactly");
    assert_ne!(a.pos, c.pos);
    assert_eq!(a.counts, Preset::DeepSdf.counts(20_000));
    assert_eq!(a.pos.len() + a.neg.len(), a.counts.total());
    assert_eq!(a.dropped, 0);
    assert!(a.pos.iter().all(|r| r[3] > 0.0));
    assert!(a.neg.iter().all(|r| r[3] <= 0.0));
    // Normalised: the farthest vertex at 1/1.03; uniform samples inside [-1, 1]³.
    let normalized = a.normalization.apply_to_mesh(&mesh);
    let farthest = normalized
        .positions
        .iter()
        .map(|p| p.iter().map(|c| c * c).sum::<f32>().sqrt())
        .fold(0.0f32, f32::max);
    assert!((farthest - 1.0 / 1.03).abs() < 1e-5);
    assert!(a
        .pos
        .iter()
        .chain(&a.neg)
        .all(|r| r[..3].iter().all(|c| c.abs() < 1.5)));
    let near_fraction = a
        .pos
        .iter()
        .chain(&a.neg)
        .filter(|r| r[3].abs() < 0.25)
        .count() as f64
        / a.counts.total() as f64;
    assert!(near_fraction > 0.9, "near fraction {near_fraction}");
}

#[test]
fn perturbations_use_variance_not_standard_deviation() {
    // A flat square at z = 0 (zero volume: every SDF is the unsigned distance). With the second
    // variance 0, level-2 samples lie exactly on the square: SDF 0, which DeepSDF files in `neg`.
    let square = crate::support::flat_square(-0.5, 0.5);
    let opts = SamplingOptions {
        count: 40_000,
        second_variance: 0.0,
        ..SamplingOptions::default()
    };
    let s = sample_sdf(&square, &opts, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let zeros = s.neg.iter().filter(|r| r[3] == 0.0).count();
    assert_eq!(zeros, s.counts.surface_points);
    assert_eq!(s.neg.len(), zeros, "a zero-volume mesh has no inside");
    // Level 1 over the square's footprint: SDF = |z| = |N(0, σ)|, median 0.6745·σ with
    // σ = √0.005 ≈ 0.0707 (it would be 0.0034 if 0.005 were the standard deviation).
    let footprint = 0.5 * Normalization::deepsdf(&square).unwrap().scale - 0.01;
    let mut level1: Vec<f32> = s
        .pos
        .iter()
        .filter(|r| r[0].abs() < footprint && r[1].abs() < footprint)
        .map(|r| r[3])
        .collect();
    level1.sort_by(f32::total_cmp);
    let median = level1[level1.len() / 2];
    let expected = 0.6745 * 0.005f32.sqrt();
    assert!(
        (median / expected - 1.0).abs() < 0.1,
        "median {median} vs {expected}"
    );
}

#[test]
fn cube_samples_carry_exact_sdf() {
    let half = [1.0, 1.0, 1.0];
    let mesh = cuboid_mesh(half);
    let opts = SamplingOptions {
        count: 20_000,
        preset: Preset::NeoRender,
        ..SamplingOptions::default()
    };
    let s = sample_sdf(&mesh, &opts, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let n = Normalization::deepsdf(&mesh).unwrap();
    assert!((n.scale - 1.0 / (3f32.sqrt() * 1.03)).abs() < 1e-6);
    assert_eq!(n.offset, [-0.0; 3]);
    assert_eq!(
        s.pos.len() + s.neg.len(),
        Preset::NeoRender.counts(20_000).total()
    );
    let shape = crate::support::origin_box(half.map(|h| h * n.scale));
    for r in s.pos.iter().chain(&s.neg) {
        let expected = crate::support::distance_at(&shape, [r[0], r[1], r[2]]);
        assert!((r[3] - expected).abs() < 1e-5);
    }
}

#[test]
fn normalization_round_trip() {
    let mesh = TriangleMesh::new(
        vec![
            [10.0, 0.0, 0.0],
            [14.0, 0.0, 0.0],
            [10.0, 2.0, 0.0],
            [99.0, 99.0, 99.0],
        ],
        vec![[0, 1, 2]],
    )
    .unwrap();
    let n = Normalization::deepsdf(&mesh).unwrap();
    // Only used vertices count: centre (12, 1, 0), farthest corner at √5.
    assert_eq!(n.offset, [-12.0, -1.0, -0.0]);
    assert!((n.scale - 1.0 / (5f32.sqrt() * 1.03)).abs() < 1e-7);
    let p = [11.0, 1.5, -0.5];
    let back = n.invert(n.apply(p));
    assert!(p.iter().zip(back).all(|(a, b)| (a - b).abs() < 1e-5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("norm.npz");
    n.write_npz(&path).unwrap();
    let arrays = read_npz(&path).unwrap();
    assert_eq!(arrays[0].0, "offset");
    assert_eq!(arrays[0].1.shape(), &[3]);
    assert_eq!(arrays[1].0, "scale");
    assert_eq!(arrays[1].1.data(), &NpyData::F32(vec![n.scale]));
}

#[test]
fn bad_meshes() {
    let err = sample_sdf(
        &TriangleMesh::default(),
        &options(100),
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    assert!(matches!(err, Err(SamplingError::Geometry(_))), "{err:?}");
    // One point: no extent to normalise.
    let point = TriangleMesh::new(vec![[1.0; 3]], vec![[0, 0, 0]]).unwrap();
    let err = sample_sdf(&point, &options(100), &mut ChaCha8Rng::seed_from_u64(0));
    assert!(
        matches!(
            err,
            Err(SamplingError::Normalize(NormalizeError::ZeroExtent))
        ),
        "{err:?}"
    );
    // Collinear corners: extent but zero area.
    let line = TriangleMesh::new(
        vec![[0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]],
        vec![[0, 1, 2]],
    )
    .unwrap();
    let err = sample_sdf(&line, &options(100), &mut ChaCha8Rng::seed_from_u64(0));
    assert!(
        matches!(err, Err(SamplingError::ZeroSurfaceArea)),
        "{err:?}"
    );
    let nan = TriangleMesh {
        positions: vec![[0.0; 3], [f32::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]],
        triangles: vec![[0, 1, 2]],
    };
    assert!(sample_sdf(&nan, &options(100), &mut ChaCha8Rng::seed_from_u64(0)).is_err());
    let bad_variance = SamplingOptions {
        variance: -1.0,
        ..options(100)
    };
    let err = sample_sdf(
        &cuboid_mesh([1.0; 3]),
        &bad_variance,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    assert!(matches!(err, Err(SamplingError::BadOption(_))), "{err:?}");
}

#[test]
fn directory_batch_writes_deepsdf_layout() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    cuboid_mesh([1.0, 0.5, 0.5])
        .write_obj(input.path().join("box.obj"))
        .unwrap();
    torus_mesh(1.0, 0.3, 32, 16)
        .unwrap()
        .write_ply(input.path().join("ring.ply"))
        .unwrap();
    std::fs::write(input.path().join("broken.obj"), "f 1 2 3\n").unwrap();
    std::fs::write(input.path().join("notes.txt"), "not a mesh").unwrap();
    let grid = Some(GridOutput {
        resolution: 9,
        format: GridFormat::Npz,
    });
    let mut lines = Vec::new();
    let summary = sample_directory(input.path(), out.path(), &options(2000), grid, 42, |p| {
        lines.push(format!("[{}/{}] {}", p.index, p.total, p.mesh.display()));
    })
    .unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(summary.done.len(), 2);
    assert_eq!(summary.failed.len(), 1);
    let done = &summary.done[0];
    let arrays = read_npz(&done.samples).unwrap();
    let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pos", "neg"]);
    assert_eq!(arrays[0].1.shape(), &[done.pos, 4]);
    assert_eq!(arrays[1].1.shape(), &[done.neg, 4]);
    assert!(done.samples.ends_with("SdfSamples/box.npz"));
    assert!(done
        .normalization
        .ends_with("NormalizationParameters/box.npz"));
    let grid = read_npz(done.grid.as_ref().unwrap()).unwrap();
    assert_eq!(grid[0].1.shape(), &[9, 9, 9]);
    // The grid's centre sample is inside the box.
    let NpyData::F32(values) = grid[0].1.data() else {
        panic!("grid must be float32")
    };
    assert!(values[4 * 81 + 4 * 9 + 4] < 0.0);

    // The same seed gives the same file again.
    let again = tempfile::tempdir().unwrap();
    sample_directory(input.path(), again.path(), &options(2000), None, 42, |_| {}).unwrap();
    assert_eq!(
        std::fs::read(&done.samples).unwrap(),
        std::fs::read(again.path().join("SdfSamples/box.npz")).unwrap()
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        sample_directory(empty.path(), out.path(), &options(10), None, 0, |_| {}),
        Err(SamplingError::NoMeshes(_))
    ));
}

#[test]
fn vdb_grid_output() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mesh_path = input.path().join("box.obj");
    cuboid_mesh([1.0; 3]).write_obj(&mesh_path).unwrap();
    let grid = Some(GridOutput {
        resolution: 16,
        format: GridFormat::Vdb,
    });
    let summary =
        vnr_geom::deepsdf_samples::sample_mesh_file(&mesh_path, out.path(), &options(500), grid, 1)
            .unwrap();
    let path = summary.grid.unwrap();
    assert!(path.ends_with("SdfGrids/box.vdb"));
    assert!(std::fs::metadata(path).unwrap().len() > 0);
}

#[test]
fn bunny_counts() {
    let Some(path) = vnr_formats::testing::fixture("meshes/stanford-bunny.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    let s = sample_sdf(&mesh, &options(20_000), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    assert_eq!(s.pos.len() + s.neg.len(), 20_000);
    // Roughly half of the near samples fall inside a closed-ish surface.
    let inside = s.neg.len() as f64 / 20_000.0;
    assert!((0.3..0.6).contains(&inside), "inside fraction {inside}");
}

#[test]
fn huge_sample_counts_are_errors_not_overflows() {
    let mesh = cuboid_mesh([0.5; 3]);
    let out = tempfile::tempdir().unwrap();
    for preset in [Preset::DeepSdf, Preset::NeoRender] {
        for count in [usize::MAX, 1 << 40, MAX_SAMPLE_COUNT + 1] {
            let options = SamplingOptions {
                count,
                preset,
                ..SamplingOptions::default()
            };
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            assert!(
                matches!(
                    sample_sdf(&mesh, &options, &mut rng),
                    Err(SamplingError::BadOption(ref m)) if m.contains("sample count")
                ),
                "{preset:?} {count}"
            );
            // Refused before the mesh is read or any directory is made.
            let missing = out.path().join("missing.obj");
            let written = out.path().join("out");
            assert!(matches!(
                sample_mesh_file(&missing, &written, &options, None, 0),
                Err(SamplingError::BadOption(_))
            ));
            assert!(!written.exists());
        }
    }
}

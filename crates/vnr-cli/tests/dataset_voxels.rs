//! `vnr dataset gen rendernet|convdeconv` through the built binary, at tiny sizes.

use std::path::Path;

use crate::support::{path_str, vnr};
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::dataset::{ChunkedDataset, DatasetConfig};

/// Shapes of a batch: inputs, targets, and each extra field by name.
type BatchDims = (Vec<usize>, Vec<usize>, Vec<(String, Vec<usize>)>);

fn first_batch_dims(dir: &Path) -> BatchDims {
    let data = ChunkedDataset::open(
        dir,
        DatasetConfig {
            batch_size: 100,
            shuffle: false,
            ..DatasetConfig::default()
        },
    )
    .unwrap();
    let batch = data.epoch(0).unwrap().next().unwrap().unwrap();
    let extra = batch
        .extra
        .iter()
        .map(|(name, t)| (name.clone(), t.dims().to_vec()))
        .collect();
    (
        batch.inputs.dims().to_vec(),
        batch.targets.dims().to_vec(),
        extra,
    )
}

/// Three 8³ samples, two views per shape, 16² normal maps, seed 4.
fn gen_rendernet(out: &Path) -> std::process::Output {
    vnr(&[
        "dataset",
        "gen",
        "rendernet",
        "--out",
        path_str(out),
        "--count",
        "3",
        "--res",
        "16",
        "--voxels",
        "8",
        "--views",
        "2",
        "--normals",
        "--seed",
        "4",
    ])
}

#[test]
fn gen_rendernet_writes_grids_poses_and_normal_maps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rn");
    let run = gen_rendernet(&out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("wrote 3 rendernet samples"));
    assert_eq!(
        BinvoxGrid::read(out.join("shapes/shape_0001.binvox"))
            .unwrap()
            .dims(),
        [8; 3]
    );
    let (inputs, targets, extra) = first_batch_dims(&out);
    assert_eq!(inputs, [3, 1, 8, 8, 8]);
    assert_eq!(targets, [3, 3, 16, 16]);
    assert_eq!(extra, [("poses".to_string(), vec![3, 3])]);

    // The same seed gives the same files.
    let again = dir.path().join("again");
    let rerun = gen_rendernet(&again);
    assert!(rerun.status.success());
    for file in ["chunk_000.npz", "poses_000.npz", "samples.json"] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn gen_convdeconv_writes_voxelneuralrender_chunks_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cd");
    let run = vnr(&[
        "dataset",
        "gen",
        "convdeconv",
        "--out",
        path_str(&out),
        "--count",
        "3",
        "--res",
        "12",
        "--grid",
        "8",
        "--material",
        "reflective",
        "--chunk",
        "2",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("volume_samples_001.npz").exists());
    let (inputs, targets, extra) = first_batch_dims(&out);
    assert_eq!(inputs, [3, 1, 8, 8, 8]);
    assert_eq!(targets, [3, 12, 12, 1]);
    assert!(extra.is_empty());

    let bad = vnr(&[
        "dataset",
        "gen",
        "convdeconv",
        "--out",
        path_str(&out),
        "--count",
        "1",
        "--material",
        "velvet",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("velvet"));
    let empty = vnr(&[
        "dataset",
        "gen",
        "rendernet",
        "--out",
        path_str(&out),
        "--count",
        "0",
    ]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("count"));
}

#[test]
fn huge_voxel_sides_exit_2_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rn");
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "dataset",
            "gen",
            "rendernet",
            "--out",
            path_str(&out),
            "--count",
            "1",
        ];
        args.extend_from_slice(extra);
        vnr(&args)
    };
    // Twice the side (the default --resampled) overflows: an error naming the flag.
    for voxels in ["9223372036854775808", "18446744073709551615"] {
        let run = gen(&["--voxels", voxels]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{err}");
        assert!(err.contains("--voxels"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // With --resampled given, the side reaches the generator's own range check.
    let run = gen(&["--voxels", "18446744073709551615", "--resampled", "8"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

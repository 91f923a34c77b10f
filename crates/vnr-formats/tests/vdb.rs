//! OpenVDB reader/writer: real-file facts, round trips, and robustness against damaged files.

use vnr_formats::testing::fixture;
use vnr_formats::vdb::*;

fn sphere_samples(n: usize, radius: f32) -> (Vec<f32>, [usize; 3]) {
    let c = (n as f32 - 1.0) / 2.0;
    let mut v = Vec::with_capacity(n * n * n);
    for x in 0..n {
        for y in 0..n {
            for z in 0..n {
                let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2) + (z as f32 - c).powi(2))
                    .sqrt();
                v.push((d - radius) * 0.1);
            }
        }
    }
    (v, [n; 3])
}

fn our_level_set() -> Grid<f32> {
    let (values, dims) = sphere_samples(40, 12.0);
    let samples = DenseSamples {
        values: &values,
        dims,
        origin: [-20, -20, -20],
    };
    Grid::level_set_from_dense(
        "sphere",
        samples,
        Transform::uniform_scale(0.1).unwrap(),
        0.3,
    )
    .unwrap()
}

#[test]
fn cortex_sphere_facts() {
    let Some(path) = fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    let file = read_vdb(&path).unwrap();
    let grid = file.typed_grid::<f32>("ls_sphere").unwrap();
    assert_eq!(grid.class, GridClass::LevelSet);
    assert!(grid.saved_as_half);
    assert!((grid.background() - 0.150024).abs() < 1e-6);
    assert_eq!(grid.active_voxel_count(), 270_638);
    assert_eq!(grid.active_bbox(), Some(BBox::new([-62; 3], [62; 3])));
    assert!((grid.transform.voxel_size()[0] - 0.05).abs() < 1e-6);
    // Inside reads -background, outside +background, not 0.
    assert_eq!(grid.get([0, 0, 0]), -grid.background());
    assert_eq!(grid.get([1000, 0, 0]), grid.background());
    let (min, max) = grid
        .active_voxels()
        .fold((f32::MAX, f32::MIN), |(a, b), (_, v)| (a.min(v), b.max(v)));
    assert!(
        (min + 0.149536).abs() < 1e-5 && (max - 0.149658).abs() < 1e-5,
        "{min} {max}"
    );
    let bbox = BBox::new([-62; 3], [62; 3]);
    let dense = grid.to_dense(bbox, DenseLimit::default()).unwrap();
    assert_eq!(dense.len(), 125 * 125 * 125);
    assert_eq!(dense[(62 * 125 + 62) * 125 + 62], grid.get([0, 0, 0]));
    assert_eq!(dense[(10 * 125 + 70) * 125 + 3], grid.get([-52, 8, -59]));
    let err = grid
        .to_dense(bbox, DenseLimit { max_voxels: 1000 })
        .unwrap_err();
    assert!(matches!(err, VdbError::DenseTooLarge { .. }));
}

#[test]
fn gaffer_blosc_fog_facts() {
    let Some(path) = fixture("vdb/gaffer-sphere-blosc.vdb") else {
        return;
    };
    let file = read_vdb(&path).unwrap();
    let grid = file.typed_grid::<f32>("density").unwrap();
    assert_eq!(grid.class, GridClass::FogVolume);
    assert_eq!(grid.background(), 0.0);
    assert_eq!(grid.active_voxel_count(), 465);
    assert_eq!(grid.active_bbox(), Some(BBox::new([-5, -4, -5], [5, 4, 5])));
    let t = &grid.transform;
    assert!(t.voxel_size().iter().all(|v| (v - 0.2).abs() < 1e-6));
    let w = t.index_to_world([0.0; 3]);
    assert!((w[1] - 2.0).abs() < 1e-9 && w[0].abs() < 1e-9);
    assert!(grid.active_voxels().all(|(_, v)| v > 0.0 && v <= 1.0));
}

#[test]
fn cortex_points_is_a_clear_error_and_lists() {
    let Some(path) = fixture("vdb/cortex-points.vdb") else {
        return;
    };
    let file = read_vdb(&path).unwrap();
    let err = file.grid("points").unwrap_err();
    assert!(err.to_string().contains("ptdataidx32"), "{err}");
    assert!(matches!(
        file.grids[0].grid,
        Err(VdbError::UnsupportedGridType { .. })
    ));
    let listing = list_vdb(&path).unwrap();
    assert_eq!(listing.grids.len(), 1);
    assert_eq!(
        listing.grids[0].descriptor.type_name,
        "Tree_ptdataidx32_5_4_3"
    );
    assert_eq!(
        listing.grids[0].metadata.get("file_voxel_count"),
        Some(&MetaValue::Int64(5))
    );
}

#[test]
fn listing_matches_full_read() {
    let Some(path) = fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    let listing = list_vdb(&path).unwrap();
    assert_eq!(listing.header.version, 222);
    assert_eq!(listing.grids[0].descriptor.name, "ls_sphere");
    assert!(listing.grids[0].descriptor.saved_as_half);
    assert_eq!(
        listing.grids[0].metadata.get("file_voxel_count"),
        Some(&MetaValue::Int64(270_638))
    );
}

#[test]
fn level_set_round_trips_in_every_mode() {
    let grid = our_level_set();
    assert!(grid.active_voxel_count() > 1000);
    assert_eq!(grid.get([0, 0, 0]), -0.3);
    assert_eq!(grid.get([19, 19, 19]), 0.3);
    for options in [
        WriteOptions::default(),
        WriteOptions {
            zip: false,
            active_mask: false,
        },
        WriteOptions {
            zip: true,
            active_mask: false,
        },
        WriteOptions {
            zip: false,
            active_mask: true,
        },
    ] {
        let bytes = vdb_bytes(&[&grid], options).unwrap();
        let back = VdbFile::from_bytes(&bytes).unwrap();
        let read = back.typed_grid::<f32>("sphere").unwrap();
        assert_eq!(read.tree, grid.tree, "{options:?}");
        assert_eq!(read.class, GridClass::LevelSet);
        assert_eq!(read.transform, grid.transform);
        assert_eq!(
            read.metadata.get("file_voxel_count"),
            Some(&MetaValue::Int64(grid.active_voxel_count() as i64))
        );
    }
}

#[test]
fn written_file_is_atomic_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fog.vdb");
    let voxels = (0..50).map(|i| ([i - 25, 3 * i, -i], i as f32 / 50.0));
    let tree = Tree::from_active_voxels(0.0f32, voxels.clone());
    let t = Transform::scale_translate([0.5, 1.0, 2.0], [1.0, -2.0, 3.0]).unwrap();
    let grid = Grid::new("fog", GridClass::FogVolume, t, tree);
    write_vdb(&path, &[&grid, &grid], WriteOptions::default()).unwrap();
    let file = read_vdb(&path).unwrap();
    assert_eq!(file.grids.len(), 2);
    let read = file.typed_grid::<f32>("fog").unwrap();
    let got: Vec<_> = read.active_voxels().collect();
    let mut want: Vec<_> = voxels.collect();
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|a| a.0);
    want.sort_by_key(|a| a.0);
    assert_eq!(got_sorted, want);
    assert_eq!(read.get([1000, 1000, 1000]), 0.0);
}

#[test]
fn other_value_types_round_trip() {
    let tree = Tree::from_active_voxels(
        [1.0f64, 2.0, 3.0],
        [([1, 2, 3], [4.0, 5.0, 6.0]), ([-100, 0, 9000], [0.0; 3])],
    );
    let grid = Grid::new(
        "v",
        GridClass::Staggered,
        Transform::uniform_scale(1.0).unwrap(),
        tree,
    );
    let back = VdbFile::from_bytes(&vdb_bytes(&[&grid], WriteOptions::default()).unwrap()).unwrap();
    assert_eq!(back.typed_grid::<[f64; 3]>("v").unwrap().tree, grid.tree);
    assert!(matches!(
        back.typed_grid::<f32>("v"),
        Err(VdbError::WrongValueType { .. })
    ));
    let ints = Tree::from_active_voxels(-7i32, (0..600).map(|i| ([i, 0, 0], i)));
    let grid = Grid::new(
        "i",
        GridClass::Unknown,
        Transform::uniform_scale(1.0).unwrap(),
        ints,
    );
    let back = VdbFile::from_bytes(&vdb_bytes(&[&grid], WriteOptions::default()).unwrap()).unwrap();
    assert_eq!(back.typed_grid::<i32>("i").unwrap().get([5, 0, 0]), 5);
    assert_eq!(back.typed_grid::<i32>("i").unwrap().get([5, 1, 0]), -7);
}

#[test]
fn dense_tensor_has_xyz_shape() {
    let grid = our_level_set();
    let bbox = BBox::new([-3, -2, -1], [0, 0, 0]);
    let t = grid
        .to_dense_tensor(bbox, DenseLimit::default(), &candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(t.dims(), &[4, 3, 2]);
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v[1], grid.get([-3, -2, 0]));
    assert_eq!(v[2], grid.get([-3, -1, -1]));
}

#[test]
fn bad_headers_give_typed_errors() {
    assert!(matches!(
        VdbFile::from_bytes(b"hello world"),
        Err(VdbError::BadMagic(_))
    ));
    let mut bytes = vdb_bytes(&[&our_level_set()], WriteOptions::default()).unwrap();
    bytes[8..12].copy_from_slice(&219u32.to_le_bytes());
    let err = VdbFile::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(err, VdbError::UnsupportedVersion { version: 219, .. }),
        "{err}"
    );
    bytes[8..12].copy_from_slice(&300u32.to_le_bytes());
    assert!(err.to_string().contains("219"));
    assert!(matches!(
        VdbFile::from_bytes(&bytes),
        Err(VdbError::UnsupportedVersion { version: 300, .. })
    ));
}

/// Truncates at many offsets and flips bytes: every outcome must be Ok or Err, never a panic.
fn mutate(data: &[u8]) {
    let step = (data.len() / 300).max(1);
    for cut in (0..data.len()).step_by(step) {
        let _ = VdbFile::from_bytes(&data[..cut]);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut copy = data.to_vec();
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % data.len() as u64) as usize;
        let old = copy[at];
        copy[at] ^= (state >> 32) as u8 | 1;
        let _ = VdbFile::from_bytes(&copy);
        copy[at] = old;
    }
}

#[test]
fn mutated_own_files_never_panic() {
    let grid = our_level_set();
    mutate(&vdb_bytes(&[&grid], WriteOptions::default()).unwrap());
    mutate(
        &vdb_bytes(
            &[&grid],
            WriteOptions {
                zip: false,
                active_mask: true,
            },
        )
        .unwrap(),
    );
}

#[test]
fn mutated_fixtures_never_panic() {
    for name in [
        "vdb/cortex-sphere.vdb",
        "vdb/gaffer-sphere-blosc.vdb",
        "vdb/cortex-points.vdb",
    ] {
        let Some(path) = fixture(name) else { return };
        mutate(&std::fs::read(path).unwrap());
    }
}
#[test]
fn active_bbox_and_count_match_brute_force() {
    let voxels: Vec<([i32; 3], f32)> = (0..400)
        .map(|i: i32| {
            (
                [(i * 37) % 91 - 45, (i * 11) % 29 - 3, (i * 5) % 300 - 150],
                i as f32,
            )
        })
        .collect();
    let tree = Tree::from_active_voxels(1.0f32, voxels.iter().copied());
    let mut unique: Vec<[i32; 3]> = voxels.iter().map(|v| v.0).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(tree.active_voxel_count(), unique.len() as u64);
    let lo = std::array::from_fn(|k| unique.iter().map(|v| v[k]).min().unwrap());
    let hi = std::array::from_fn(|k| unique.iter().map(|v| v[k]).max().unwrap());
    assert_eq!(tree.active_bbox(), Some(BBox::new(lo, hi)));
    assert!(unique.iter().all(|v| tree.is_active(*v)));
}

#[test]
fn dense_samples_past_i32_coordinates_are_errors_not_overflows() {
    let values = [1.0f32, 2.0];
    let transform = Transform::uniform_scale(1.0).unwrap();
    let past_max = DenseSamples {
        values: &values,
        dims: [2, 1, 1],
        origin: [i32::MAX, 0, 0],
    };
    assert!(matches!(
        Grid::fog_from_dense("f", past_max, transform.clone(), 0.0),
        Err(VdbError::InvalidInput(_))
    ));
    assert!(matches!(
        Grid::level_set_from_dense("s", past_max, transform.clone(), 3.0),
        Err(VdbError::InvalidInput(_))
    ));
    // The last sample exactly at i32::MAX is fine.
    let at_max = DenseSamples {
        values: &values[..1],
        dims: [1, 1, 1],
        origin: [i32::MAX, i32::MAX, i32::MAX],
    };
    let grid = Grid::fog_from_dense("f", at_max, transform, 0.0).unwrap();
    assert_eq!(grid.get([i32::MAX; 3]), 1.0);
}

#[test]
fn unbounded_dense_limits_are_errors_not_overflows() {
    // Two voxels 2²¹ apart: 2⁶³ voxels between them, more bytes than one allocation holds.
    let far = (1 << 21) - 1;
    let tree = Tree::from_active_voxels(0.0f32, [([0, 0, 0], 1.0), ([far; 3], 2.0)]);
    let bbox = tree.active_bbox().unwrap();
    let unbounded = DenseLimit {
        max_voxels: u64::MAX,
    };
    assert!(matches!(
        tree.to_dense(bbox, unbounded),
        Err(VdbError::DenseTooLarge { .. })
    ));
    let grid = Grid::new(
        "f",
        GridClass::FogVolume,
        Transform::uniform_scale(1.0).unwrap(),
        tree,
    );
    assert!(matches!(
        grid.to_dense(bbox, unbounded),
        Err(VdbError::DenseTooLarge { .. })
    ));
    // A box that fits is still copied under the unbounded limit.
    let small = BBox::new([0; 3], [1; 3]);
    assert_eq!(grid.to_dense(small, unbounded).unwrap().len(), 8);
}

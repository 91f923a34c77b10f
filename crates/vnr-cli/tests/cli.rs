//! End-to-end tests of the `vnr` binary: output, exit codes, and conversions that round trip.

use std::path::{Path, PathBuf};

use crate::support::{stderr, stdout, vnr_mixed as vnr};
use vnr_formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr_formats::testing::fixture;

fn info_json(path: &Path) -> serde_json::Value {
    let out = vnr(&[&"info", &"--json", &path]);
    assert!(out.status.success(), "vnr info failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("vnr info --json prints JSON")
}

/// A 12×10×8 sphere-ish occupancy grid, placed off the origin.
fn sample_binvox(dir: &Path) -> (PathBuf, BinvoxGrid) {
    let dims = [12, 10, 8];
    let mut values = Vec::new();
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let d = [i as f32 - 5.5, j as f32 - 4.5, k as f32 - 3.5];
                values.push(u8::from(d.iter().map(|c| c * c).sum::<f32>() < 12.0));
            }
        }
    }
    let grid = BinvoxGrid::new(dims, values, BinvoxVersion::V1)
        .unwrap()
        .with_transform([-1.0, 0.5, 2.0], 3.0)
        .unwrap();
    let path = dir.join("sample.binvox");
    grid.write(&path).unwrap();
    (path, grid)
}

#[test]
fn info_reports_fixture_truths() {
    let (Some(sphere), Some(bunny)) = (
        fixture("vdb/cortex-sphere.vdb"),
        fixture("binvox/bunny.binvox"),
    ) else {
        return;
    };
    let info = info_json(&sphere);
    let grid = &info[0]["items"][0];
    assert_eq!(info[0]["format"], "vdb");
    assert_eq!(grid["name"], "ls_sphere");
    assert_eq!(grid["class"], "level set");
    assert_eq!(grid["active_voxels"], 270_638);
    assert_eq!(
        grid["index_bbox"],
        serde_json::json!([[-62, -62, -62], [62, 62, 62]])
    );
    let background = grid["background"].as_f64().unwrap();
    assert!((background - 0.150024).abs() < 1e-5);

    let info = info_json(&bunny);
    assert_eq!(info[0]["items"][0]["active_voxels"], 57_835);
    assert_eq!(info[0]["items"][0]["dims"], serde_json::json!([64, 64, 64]));
}

#[test]
fn info_lists_point_grids_with_an_error_instead_of_failing() {
    let Some(points) = fixture("vdb/cortex-points.vdb") else {
        return;
    };
    let info = info_json(&points);
    let item = &info[0]["items"][0];
    assert_eq!(item["name"], "points");
    assert!(item["error"]
        .as_str()
        .unwrap()
        .contains("unsupported grid type"));
}

#[test]
fn info_text_names_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let (path, grid) = sample_binvox(dir.path());
    let out = vnr(&[&"info", &path]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("voxels (grid)"), "{text}");
    assert!(text.contains(&format!("active_voxels: {}", grid.occupied_count())));
}

#[test]
fn binvox_through_vdb_and_npz_keeps_every_voxel() {
    let dir = tempfile::tempdir().unwrap();
    let (path, grid) = sample_binvox(dir.path());
    let vdb = dir.path().join("fog.vdb");
    let npz = dir.path().join("dense.npz");
    let back = dir.path().join("back.binvox");
    for (from, to) in [(&path, &vdb), (&vdb, &npz), (&npz, &back)] {
        let out = vnr(&[&"convert", from, to]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(
        info_json(&vdb)[0]["items"][0]["active_voxels"],
        grid.occupied_count()
    );
    // The VDB holds only the active bounding box, so the round trip crops empty borders:
    // compare occupied world positions.
    let back = BinvoxGrid::read(&back).unwrap();
    assert_eq!(back.occupied_count(), grid.occupied_count());
    let occupied = |g: &BinvoxGrid| {
        let [nx, ny, nz] = g.dims();
        let mut centres = Vec::new();
        for i in 0..nx {
            for j in 0..ny {
                for k in 0..nz {
                    if g.get(i, j, k) == Some(1) {
                        centres.push(g.world_position(i, j, k));
                    }
                }
            }
        }
        centres
    };
    for (a, b) in occupied(&grid).iter().zip(occupied(&back).iter()) {
        for axis in 0..3 {
            assert!((a[axis] - b[axis]).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn level_set_fixture_converts_to_occupancy_of_its_inside() {
    let Some(sphere) = fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("sphere.binvox");
    let out = vnr(&[&"convert", &sphere, &out_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let grid = BinvoxGrid::read(&out_path).unwrap();
    // Radius 3 world units at voxel size 0.05: about 4/3·π·60³ voxels inside.
    let expected = 4.0 / 3.0 * std::f64::consts::PI * 60f64.powi(3);
    let got = grid.occupied_count() as f64;
    assert!(
        (got - expected).abs() / expected < 0.01,
        "{got} vs {expected}"
    );
}

#[test]
fn bad_input_exits_2_with_the_error_chain_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.binvox");
    std::fs::write(&bad, b"#binvox 1\ndim 64 64 64\ndata\n\x01").unwrap();
    let out = vnr(&[&"info", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let missing = dir.path().join("missing.vdb");
    let out = vnr(&[&"info", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.vdb"));
}

#[test]
fn unknown_output_formats_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_binvox(dir.path());
    let unknown = dir.path().join("out.xyz");
    let out = vnr(&[&"convert", &path, &unknown]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!unknown.exists());
}

#[test]
fn meshes_convert_between_obj_and_ply() {
    let dir = tempfile::tempdir().unwrap();
    let obj = dir.path().join("quad.obj");
    std::fs::write(&obj, "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n").unwrap();
    let ply = dir.path().join("quad.ply");
    let out = vnr(&[&"convert", &obj, &ply]);
    assert!(out.status.success(), "{}", stderr(&out));
    let item = &info_json(&ply)[0]["items"][0];
    assert_eq!(item["triangles"], 2);
    assert_eq!(item["vertices"], 4);
}

#[test]
fn occupancy_becomes_a_level_set_with_the_same_inside() {
    let dir = tempfile::tempdir().unwrap();
    let (path, grid) = sample_binvox(dir.path());
    let vdb = dir.path().join("surface.vdb");
    let back = dir.path().join("back.binvox");
    let out = vnr(&[&"convert", &path, &vdb, &"--class", &"level-set"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let item = &info_json(&vdb)[0]["items"][0];
    assert_eq!(item["class"], "level set");
    let range = item["value_range"].as_array().unwrap();
    assert!(range[0].as_f64().unwrap() < 0.0 && range[1].as_f64().unwrap() > 0.0);
    let out = vnr(&[&"convert", &vdb, &back]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        BinvoxGrid::read(&back).unwrap().occupied_count(),
        grid.occupied_count()
    );
}

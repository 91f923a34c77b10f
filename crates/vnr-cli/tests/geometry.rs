//! `vnr convert` between meshes and grids (voxeliser, marching cubes) and `vnr eval chamfer`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::vnr_mixed as vnr;
use vnr_formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{write_npz, NpyArray, NpyData};
use vnr_formats::testing::fixture;
use vnr_formats::vdb::{read_vdb, GridClass};

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "vnr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signed distance `|p − c| − r` on an `n³` grid with the given placement, as an npz the way
/// `vnr convert` writes dense grids.
fn write_sphere_sdf(path: &Path, n: usize, origin: [f64; 3], size: f64, r: f64) {
    let centre = origin.map(|o| o + size * (n - 1) as f64 / 2.0);
    let mut values = Vec::new();
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let p = [i, j, k];
                let d2: f64 = (0..3)
                    .map(|a| (origin[a] + size * p[a] as f64 - centre[a]).powi(2))
                    .sum();
                values.push((d2.sqrt() - r) as f32);
            }
        }
    }
    let values = NpyArray::new(vec![n; 3], NpyData::F32(values)).unwrap();
    let origin = NpyArray::new(vec![3], NpyData::F64(origin.to_vec())).unwrap();
    let voxel_size = NpyArray::new(vec![1], NpyData::F64(vec![size])).unwrap();
    write_npz(
        path,
        &[
            ("values", &values),
            ("origin", &origin),
            ("voxel_size", &voxel_size),
        ],
        false,
    )
    .unwrap();
}

/// A closed sphere mesh of radius 1 around (2, −1, 0.5), through `vnr convert` (npz → obj).
fn sphere_obj(dir: &Path) -> PathBuf {
    let sdf = dir.join("sphere_sdf.npz");
    write_sphere_sdf(
        &sdf,
        40,
        [2.0 - 1.3, -1.0 - 1.3, 0.5 - 1.3],
        2.6 / 39.0,
        1.0,
    );
    let obj = dir.join("sphere.obj");
    assert_ok(&vnr(&[
        &"convert",
        &sdf,
        &obj,
        &"--inside",
        &"below",
        &"--iso",
        &"0",
    ]));
    obj
}

fn assert_closed(mesh: &TriangleMesh) {
    assert!(!mesh.is_empty());
    let stats = mesh.edge_stats();
    assert_eq!((stats.boundary_edges, stats.non_manifold_edges), (0, 0));
}

#[test]
fn level_set_npz_to_mesh_is_a_closed_sphere_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = TriangleMesh::read(sphere_obj(dir.path())).unwrap();
    assert_closed(&mesh);
    for p in &mesh.positions {
        let r = ((p[0] - 2.0).powi(2) + (p[1] + 1.0).powi(2) + (p[2] - 0.5).powi(2)).sqrt();
        assert!((r - 1.0).abs() < 0.01, "vertex at radius {r}");
    }
    // --iso moves the surface: the 0.2 level set is the sphere of radius 1.2.
    let sdf = dir.path().join("sphere_sdf.npz");
    let ply = dir.path().join("bigger.ply");
    assert_ok(&vnr(&[
        &"convert",
        &sdf,
        &ply,
        &"--inside",
        &"below",
        &"--iso",
        &"0.2",
    ]));
    let bigger = TriangleMesh::read(&ply).unwrap();
    let (lo, hi) = bigger.bounding_box().unwrap();
    assert!((hi[0] - lo[0] - 2.4).abs() < 0.03, "{lo:?} {hi:?}");
}

#[test]
fn mesh_to_binvox_uses_binvox_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    let obj = sphere_obj(dir.path());
    let mesh = TriangleMesh::read(&obj).unwrap();
    let (lo, hi) = mesh.bounding_box().unwrap();
    let count = |fill: &str| {
        let out = dir.path().join(format!("sphere{fill}.binvox"));
        assert_ok(&vnr(&[
            &"convert",
            &obj,
            &out,
            &"--resolution",
            &"32",
            &fill,
        ]));
        let grid = BinvoxGrid::read(&out).unwrap();
        assert_eq!(grid.dims(), [32; 3]);
        assert_eq!(grid.translate(), lo);
        let extent = (0..3).map(|k| hi[k] - lo[k]).fold(0.0, f32::max);
        assert!((grid.scale() - extent).abs() < 1e-6);
        grid.occupied_count()
    };
    let (solid, surface, carved) = (count("--solid"), count("--surface"), count("--carve"));
    // The sphere fills the cube: π/6 of 32³ ≈ 17,157 voxel centres.
    let expected = std::f64::consts::PI / 6.0 * 32f64.powi(3);
    assert!((solid as f64 / expected - 1.0).abs() < 0.02, "{solid}");
    assert!(
        surface < solid && solid < carved,
        "{surface} {solid} {carved}"
    );
    // --solid and --surface exclude each other.
    let clash = vnr(&[
        &"convert",
        &obj,
        &dir.path().join("x.binvox"),
        &"--solid",
        &"--surface",
    ]);
    assert!(!clash.status.success());
}

#[test]
fn binvox_to_mesh_and_back_keeps_every_voxel() {
    let dir = tempfile::tempdir().unwrap();
    // A blob occupying a 12 × 10 × 8 box of voxels inside a 16³ grid.
    let n = 16;
    let mut values = vec![0u8; n * n * n];
    for i in 2..14 {
        for j in 3..13 {
            for k in 4..12 {
                let d = [
                    i as f32 - 7.5,
                    (j as f32 - 7.5) * 1.2,
                    (k as f32 - 7.5) * 1.5,
                ];
                let inside = d.iter().map(|c| c * c).sum::<f32>() < 40.0;
                let corner = i < 4 && j < 5;
                values[(i * n + j) * n + k] = u8::from(inside || corner && k < 6);
            }
        }
    }
    let grid = BinvoxGrid::new([n; 3], values, BinvoxVersion::V1)
        .unwrap()
        .with_transform([1.0, -2.0, 0.5], 4.0)
        .unwrap();
    let path = dir.path().join("blob.binvox");
    grid.write(&path).unwrap();
    let obj = dir.path().join("blob.obj");
    assert_ok(&vnr(&[&"convert", &path, &obj]));
    let mesh = TriangleMesh::read(&obj).unwrap();
    assert_closed(&mesh);
    // The mesh passes through voxel faces: its box is the occupied voxels' box, 12 voxels long.
    let (lo, _) = mesh.bounding_box().unwrap();
    let size = 4.0 / 16.0;
    assert!((lo[0] - (1.0 + 2.0 * size)).abs() < 1e-5, "{lo:?}");
    // Voxelised back at 12 voxels along its longest side: the same voxels, shifted.
    let back = dir.path().join("back.binvox");
    assert_ok(&vnr(&[&"convert", &obj, &back, &"--resolution", &"12"]));
    let again = BinvoxGrid::read(&back).unwrap();
    assert_eq!(again.occupied_count(), grid.occupied_count());
    assert!((again.voxel_size() - size).abs() < 1e-6);
}

#[test]
fn mesh_to_vdb_fog_and_level_set_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let obj = sphere_obj(dir.path());
    let fog = dir.path().join("fog.vdb");
    assert_ok(&vnr(&[&"convert", &obj, &fog, &"--resolution", &"24"]));
    let file = read_vdb(&fog).unwrap();
    let grid = file.typed_grid::<f32>("density").unwrap();
    assert_eq!(grid.class, GridClass::FogVolume);
    let expected = std::f64::consts::PI / 6.0 * 24f64.powi(3);
    assert!((grid.active_voxel_count() as f64 / expected - 1.0).abs() < 0.03);

    let level_set = dir.path().join("ls.vdb");
    assert_ok(&vnr(&[
        &"convert",
        &obj,
        &level_set,
        &"--resolution",
        &"24",
        &"--class",
        &"level-set",
    ]));
    let file = read_vdb(&level_set).unwrap();
    assert_eq!(
        file.typed_grid::<f32>("surface").unwrap().class,
        GridClass::LevelSet
    );
    for (input, name) in [(&level_set, "ls.ply"), (&fog, "fog.ply")] {
        let out = dir.path().join(name);
        assert_ok(&vnr(&[&"convert", input, &out]));
        let mesh = TriangleMesh::read(&out).unwrap();
        assert_closed(&mesh);
        let (lo, hi) = mesh.bounding_box().unwrap();
        for k in 0..3 {
            assert!((hi[k] - lo[k] - 2.0).abs() < 0.2, "{name}: {lo:?} {hi:?}");
        }
    }
}

#[test]
fn grid_without_a_surface_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sdf = dir.path().join("far.npz");
    // Every value is above zero (an "SDF" of radius −1): no crossing.
    write_sphere_sdf(&sdf, 8, [0.0; 3], 1.0, -1.0);
    let out = vnr(&[
        &"convert",
        &sdf,
        &dir.path().join("x.obj"),
        &"--inside",
        &"below",
        &"--iso",
        &"0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no surface"));
}

#[test]
fn cortex_sphere_vdb_to_mesh() {
    let Some(path) = fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sphere.obj");
    assert_ok(&vnr(&[&"convert", &path, &out]));
    let mesh = TriangleMesh::read(&out).unwrap();
    assert_closed(&mesh);
    let (lo, hi) = mesh.bounding_box().unwrap();
    // The zero crossing of a sphere of radius 3 (band ±0.15 around it reaches index ±62).
    assert!((hi[0] - lo[0] - 6.0).abs() < 0.02, "{lo:?} {hi:?}");
}

fn chamfer_report(reconstruction: &Path, ground_truth: &Path, seed: u64) -> String {
    let out = vnr(&[
        &"eval",
        &"chamfer",
        &reconstruction,
        &ground_truth,
        &"--samples",
        &"5000",
        &"--seed",
        &seed.to_string(),
    ]);
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

fn metric(report: &str, name: &str) -> f64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn eval_chamfer_reports_deepsdf_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let obj = sphere_obj(dir.path());
    let report = chamfer_report(&obj, &obj, 3);
    assert_eq!(report, chamfer_report(&obj, &obj, 3), "seeded");
    // Two 5,000-point samplings of one sphere: about (spacing ≈ 0.05)² apart each way.
    assert!(metric(&report, "chamfer x1e3") < 5.0, "{report}");
    assert!(metric(&report, "normal consistency") > 0.98, "{report}");
    // A point-cloud ground truth (no faces) has no normals.
    let mesh = TriangleMesh::read(&obj).unwrap();
    let cloud = dir.path().join("cloud.ply");
    TriangleMesh::new(mesh.positions.clone(), Vec::new())
        .unwrap()
        .write_ply(&cloud)
        .unwrap();
    let report = chamfer_report(&obj, &cloud, 3);
    assert!(report.contains("normal consistency: n/a"), "{report}");
    assert!(metric(&report, "hausdorff") < 0.1, "{report}");
}

/// Runs `vnr ARGS`, asserting exit status 2 with an error (no panic) that mentions `needle`.
fn assert_refused(args: &[&dyn AsRef<std::ffi::OsStr>], needle: &str) {
    let out = vnr(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn huge_sizes_exit_2_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cube = dir.path().join("cube.obj");
    vnr_geom::procedural::cuboid_mesh([0.5; 3])
        .write_obj(&cube)
        .unwrap();
    let max = usize::MAX.to_string();
    assert_refused(
        &[&"eval", &"chamfer", &cube, &cube, &"--samples", &max],
        "samples",
    );
    let out = dir.path().join("samples");
    assert_refused(
        &[&"sdf", &"sample", &cube, &"--out", &out, &"--count", &max],
        "sample count",
    );
    // A level set around a mesh with a band of 10³⁰: the padding is refused.
    assert_refused(
        &[
            &"convert",
            &cube,
            &dir.path().join("cube.npz"),
            &"--class",
            &"level-set",
            &"--background",
            &"1e30",
            &"--resolution",
            &"8",
        ],
        "would hold more than",
    );

    // Two voxels 2²¹ apart: densifying them would take 2⁶³ voxels.
    let far = (1 << 21) - 1;
    let tree =
        vnr_formats::vdb::Tree::from_active_voxels(0.0f32, [([0, 0, 0], 1.0), ([far; 3], 1.0)]);
    let grid = vnr_formats::vdb::Grid::new(
        "density",
        GridClass::FogVolume,
        vnr_formats::vdb::Transform::uniform_scale(1.0).unwrap(),
        tree,
    );
    let vdb = dir.path().join("far.vdb");
    vnr_formats::vdb::write_vdb(&vdb, &[&grid], Default::default()).unwrap();
    let npz = dir.path().join("far.npz");
    assert_refused(
        &[
            &"convert",
            &vdb,
            &npz,
            &"--max-voxels",
            &u64::MAX.to_string(),
        ],
        "--max-voxels",
    );
    assert_refused(
        &[
            &"convert",
            &vdb,
            &npz,
            &"--max-voxels",
            &(1u64 << 34).to_string(),
        ],
        "exceeds the limit",
    );
}

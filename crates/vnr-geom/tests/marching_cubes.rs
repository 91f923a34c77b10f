//! Marching cubes: watertightness and orientation on every case and on random fields, placement
//! (origin, voxel size), scikit-image's golden output, and sparse VDB grids.

use std::collections::HashMap;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{NpyData, NpzReader};
use vnr_formats::testing::fixture;
use vnr_formats::vdb::{read_vdb, DenseSamples, Grid, Transform};
use vnr_geom::marching_cubes::{
    marching_cubes, marching_cubes_vdb, pad_grid, DenseField, Inside, MarchingCubesConfig,
    MarchingCubesError,
};
use vnr_geom::metrics::KdTree;

/// Asserts every directed edge is used once and its reverse once: closed, manifold at edges,
/// consistently oriented.
fn assert_closed_and_oriented(mesh: &TriangleMesh, what: &str) {
    let mut directed: HashMap<(u32, u32), u32> = HashMap::new();
    for t in &mesh.triangles {
        for (a, b) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
            assert_ne!(a, b, "{what}: degenerate triangle {t:?}");
            *directed.entry((a, b)).or_default() += 1;
        }
    }
    for (&(a, b), &n) in &directed {
        assert_eq!(n, 1, "{what}: directed edge {a}->{b} used {n} times");
        assert!(
            directed.contains_key(&(b, a)),
            "{what}: edge {a}->{b} has no opposite (a hole or a flipped triangle)"
        );
    }
    let stats = mesh.edge_stats();
    assert_eq!(stats.boundary_edges, 0, "{what}");
    assert_eq!(stats.non_manifold_edges, 0, "{what}");
}

/// Signed volumes of the connected components (by shared vertices).
fn component_volumes(mesh: &TriangleMesh) -> Vec<f64> {
    let mut parent: Vec<usize> = (0..mesh.positions.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for t in &mesh.triangles {
        for k in 1..3 {
            let (a, b) = (
                find(&mut parent, t[0] as usize),
                find(&mut parent, t[k] as usize),
            );
            parent[a] = b;
        }
    }
    let mut volumes: HashMap<usize, f64> = HashMap::new();
    for t in &mesh.triangles {
        let p = t.map(|i| mesh.positions[i as usize].map(f64::from));
        let det = p[0][0] * (p[1][1] * p[2][2] - p[1][2] * p[2][1])
            - p[0][1] * (p[1][0] * p[2][2] - p[1][2] * p[2][0])
            + p[0][2] * (p[1][0] * p[2][1] - p[1][1] * p[2][0]);
        *volumes.entry(find(&mut parent, t[0] as usize)).or_default() += det / 6.0;
    }
    volumes.into_values().collect()
}

fn unit_field(values: &[f32], dims: [usize; 3]) -> DenseField<'_> {
    DenseField {
        values,
        dims,
        origin: [0.0; 3],
        voxel_size: [1.0; 3],
    }
}

#[test]
fn every_case_closes_into_outward_surfaces() {
    // Each of the 256 corner configurations in the middle cell of a 4³ grid whose border is
    // outside: the surface must be closed, oriented, and enclose positive volume per piece.
    for case in 0..256usize {
        let dims = [4, 4, 4];
        let mut values = vec![1.0f32; 64];
        for c in 0..8 {
            let (x, y, z) = (1 + (c & 1), 1 + ((c >> 1) & 1), 1 + ((c >> 2) & 1));
            if (case >> c) & 1 == 1 {
                values[(x * 4 + y) * 4 + z] = -1.0;
            }
        }
        let mesh =
            marching_cubes(&unit_field(&values, dims), &MarchingCubesConfig::default()).unwrap();
        assert_eq!(mesh.is_empty(), case == 0, "case {case}");
        assert_closed_and_oriented(&mesh, &format!("case {case}"));
        for v in component_volumes(&mesh) {
            assert!(v > 0.0, "case {case}: a piece has volume {v}");
        }
    }
}

#[test]
fn random_fields_are_watertight_and_manifold() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for trial in 0..20 {
        let dims = [9 + trial % 3, 8, 10 - trial % 2];
        let n = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        // Padding with an outside value closes the surface at the grid's border.
        let (padded, padded_dims) = pad_grid(&values, dims, 1, 1.0).unwrap();
        for inside in [Inside::Below, Inside::Above] {
            let config = MarchingCubesConfig { iso: 0.1, inside };
            let (field, what) = match inside {
                Inside::Below => (padded.clone(), "below"),
                Inside::Above => (padded.iter().map(|v| 0.2 - v).collect(), "above"),
            };
            let mesh = marching_cubes(&unit_field(&field, padded_dims), &config).unwrap();
            assert!(!mesh.is_empty());
            assert_closed_and_oriented(&mesh, &format!("trial {trial} {what}"));
            let total: f64 = component_volumes(&mesh).iter().sum();
            assert!(total > 0.0, "trial {trial} {what}: volume {total}");
        }
    }
}

#[test]
fn open_surfaces_have_boundary_only_at_the_grid_border() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let dims = [10, 9, 8];
    let values: Vec<f32> = (0..720).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mesh = marching_cubes(&unit_field(&values, dims), &MarchingCubesConfig::default()).unwrap();
    let mut uses: HashMap<(u32, u32), u32> = HashMap::new();
    for t in &mesh.triangles {
        for (a, b) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
            *uses.entry((a.min(b), a.max(b))).or_default() += 1;
        }
    }
    let on_border = |p: [f32; 3]| (0..3).any(|k| p[k] == 0.0 || p[k] == (dims[k] - 1) as f32);
    for (&(a, b), &n) in &uses {
        assert!(n <= 2, "non-manifold edge");
        if n == 1 {
            let (pa, pb) = (mesh.positions[a as usize], mesh.positions[b as usize]);
            assert!(on_border(pa) && on_border(pb), "hole at {pa:?} {pb:?}");
        }
    }
}

/// A sphere SDF of radius `r` around `centre`, sampled at `origin + size · ijk`.
fn sphere_sdf(dims: [usize; 3], origin: [f64; 3], size: f64, centre: [f64; 3], r: f64) -> Vec<f32> {
    let mut values = Vec::with_capacity(dims.iter().product());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = [i, j, k];
                let d2: f64 = (0..3)
                    .map(|a| (origin[a] + size * p[a] as f64 - centre[a]).powi(2))
                    .sum();
                values.push((d2.sqrt() - r) as f32);
            }
        }
    }
    values
}

#[test]
fn origin_and_voxel_size_place_the_surface_in_the_world() {
    let (origin, size, centre, r) = ([-3.0, 10.0, 0.5], 0.25, [-1.0, 12.0, 2.5], 1.3);
    let dims = [17, 17, 17];
    let values = sphere_sdf(dims, origin, size, centre, r);
    let field = DenseField {
        values: &values,
        dims,
        origin,
        voxel_size: [size; 3],
    };
    let mesh = marching_cubes(&field, &MarchingCubesConfig::default()).unwrap();
    assert_closed_and_oriented(&mesh, "sphere");
    for p in &mesh.positions {
        let d = (0..3)
            .map(|a| (f64::from(p[a]) - centre[a]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((d - r).abs() < 0.04 * size, "vertex {p:?} at radius {d}");
    }
    let volume: f64 = component_volumes(&mesh).iter().sum();
    let exact = 4.0 / 3.0 * std::f64::consts::PI * r.powi(3);
    // Chords cut inside a convex surface: a few per cent low at 5 voxels per radius.
    assert!((volume / exact - 1.0).abs() < 0.04, "{volume} vs {exact}");
}

#[test]
fn inside_above_flips_nothing_but_the_side() {
    let dims = [12, 12, 12];
    let sdf = sphere_sdf(dims, [0.0; 3], 1.0, [5.5, 5.0, 6.0], 3.7);
    let density: Vec<f32> = sdf.iter().map(|d| 0.5 - d).collect();
    let below = marching_cubes(&unit_field(&sdf, dims), &MarchingCubesConfig::default()).unwrap();
    let above = marching_cubes(
        &unit_field(&density, dims),
        &MarchingCubesConfig {
            iso: 0.5,
            inside: Inside::Above,
        },
    )
    .unwrap();
    assert_eq!(below.triangles, above.triangles);
    for (a, b) in below.positions.iter().zip(&above.positions) {
        for k in 0..3 {
            assert!((a[k] - b[k]).abs() < 1e-5);
        }
    }
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let dims = [40, 21, 19];
    let values = sphere_sdf(dims, [0.0; 3], 1.0, [20.0, 10.0, 9.0], 8.5);
    let config = MarchingCubesConfig::default();
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| marching_cubes(&unit_field(&values, dims), &config).unwrap());
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(5)
        .build()
        .unwrap()
        .install(|| marching_cubes(&unit_field(&values, dims), &config).unwrap());
    assert_eq!(single, many);
}

#[test]
fn bad_input_is_a_typed_error() {
    let config = MarchingCubesConfig::default();
    let values = vec![0.5f32; 8];
    let err = marching_cubes(&unit_field(&values, [2, 2, 3]), &config).unwrap_err();
    assert!(
        matches!(err, MarchingCubesError::LengthMismatch { .. }),
        "{err}"
    );
    let huge = unit_field(&values, [usize::MAX, 2, 2]);
    assert!(marching_cubes(&huge, &config).is_err());
    let mut with_nan = values.clone();
    with_nan[5] = f32::NAN;
    let err = marching_cubes(&unit_field(&with_nan, [2, 2, 2]), &config).unwrap_err();
    assert!(
        matches!(err, MarchingCubesError::NanValue([1, 0, 1])),
        "{err}"
    );
    let bad_size = DenseField {
        voxel_size: [1.0, 0.0, 1.0],
        ..unit_field(&values, [2, 2, 2])
    };
    assert!(matches!(
        marching_cubes(&bad_size, &config),
        Err(MarchingCubesError::InvalidVoxelSize(_))
    ));
    let bad_iso = MarchingCubesConfig {
        iso: f32::INFINITY,
        ..config
    };
    assert!(marching_cubes(&unit_field(&values, [2, 2, 2]), &bad_iso).is_err());
    // Too small to hold a cell: no surface, no error.
    let flat = vec![-1.0f32, 1.0, -1.0, 1.0];
    assert!(marching_cubes(&unit_field(&flat, [1, 2, 2]), &config)
        .unwrap()
        .is_empty());
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/golden/geom/mc")
        .join(name)
}

/// scikit-image 0.26 on a 48×40×44 torus + sphere SDF with spacing (0.5, 0.25, 0.75)
/// (`tools/golden/mc_skimage.py`): same vertex count within 1 %, and the two vertex sets
/// within a chamfer of 1e-6 × extent² (both put vertices at the linear crossing of each edge).
#[test]
fn matches_scikit_image() {
    let mut npz = NpzReader::open(golden("torus_sphere.npz")).unwrap();
    let q = npz.array("values_q8").unwrap();
    let dims: [usize; 3] = q.shape().try_into().unwrap();
    let NpyData::I16(q) = q.into_data() else {
        panic!("values_q8 must be int16")
    };
    let values: Vec<f32> = q.iter().map(|&v| f32::from(v) / 256.0).collect();
    let NpyData::F64(spacing) = npz.array("spacing").unwrap().into_data() else {
        panic!("spacing must be float64")
    };
    let NpyData::F32(verts) = npz.array("verts").unwrap().into_data() else {
        panic!("verts must be float32")
    };
    let theirs: Vec<[f32; 3]> = verts.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    let field = DenseField {
        values: &values,
        dims,
        origin: [0.0; 3],
        voxel_size: [spacing[0], spacing[1], spacing[2]],
    };
    let mesh = marching_cubes(&field, &MarchingCubesConfig::default()).unwrap();
    assert_closed_and_oriented(&mesh, "torus + sphere");
    let (ours, theirs_n) = (mesh.positions.len() as f64, theirs.len() as f64);
    assert!(
        (ours / theirs_n - 1.0).abs() <= 0.01,
        "{ours} vertices, scikit-image {theirs_n}"
    );
    let mean_d2 = |from: &[[f32; 3]], to: &[[f32; 3]]| {
        let tree = KdTree::new(to).unwrap();
        tree.nearest_many(from).iter().map(|n| n.1).sum::<f64>() / from.len() as f64
    };
    let chamfer = mean_d2(&mesh.positions, &theirs) + mean_d2(&theirs, &mesh.positions);
    let extent = (0..3)
        .map(|k| (dims[k] - 1) as f64 * spacing[k])
        .fold(0.0, f64::max);
    eprintln!("ours {ours} vertices, scikit-image {theirs_n}; vertex chamfer {chamfer:e}");
    assert!(
        chamfer < 1e-6 * extent * extent,
        "chamfer {chamfer} vs bound {}",
        1e-6 * extent * extent
    );
}

fn sphere_level_set(voxel_size: f64) -> Grid<f32> {
    // Index space around the origin; a sphere of radius 9 voxels, 3-voxel band.
    let dims = [27, 25, 29];
    let offset = [-13, -12, -14];
    let centre = [0.3, -0.6, 0.2];
    let values: Vec<f32> = sphere_sdf(dims, offset.map(f64::from), 1.0, centre, 9.0)
        .iter()
        .map(|d| (f64::from(*d) * voxel_size) as f32)
        .collect();
    let samples = DenseSamples {
        values: &values,
        dims,
        origin: offset,
    };
    let transform = Transform::uniform_scale_translate(voxel_size, [1.0, 2.0, 3.0]).unwrap();
    Grid::level_set_from_dense("surface", samples, transform, 3.0 * voxel_size as f32).unwrap()
}

#[test]
fn sparse_vdb_matches_the_dense_grid() {
    let grid = sphere_level_set(0.1);
    let sparse = marching_cubes_vdb(&grid, &MarchingCubesConfig::default()).unwrap();
    assert_closed_and_oriented(&sparse, "sparse sphere");
    // The same values densified over the active box plus one voxel.
    let bbox = grid.active_bbox().unwrap();
    let lo = bbox.min.map(|v| v - 1);
    let hi = bbox.max.map(|v| v + 1);
    let dims: [usize; 3] = std::array::from_fn(|k| (hi[k] - lo[k] + 1) as usize);
    let mut values = Vec::new();
    for i in lo[0]..=hi[0] {
        for j in lo[1]..=hi[1] {
            for k in lo[2]..=hi[2] {
                values.push(grid.get([i, j, k]));
            }
        }
    }
    let field = DenseField {
        values: &values,
        dims,
        origin: grid.transform.index_to_world(lo.map(f64::from)),
        voxel_size: [0.1; 3],
    };
    let dense = marching_cubes(&field, &MarchingCubesConfig::default()).unwrap();
    assert_eq!(sparse.positions.len(), dense.positions.len());
    assert_eq!(sparse.triangles.len(), dense.triangles.len());
    let tree = KdTree::new(&dense.positions).unwrap();
    for (_, d2) in tree.nearest_many(&sparse.positions) {
        assert!(d2 < 1e-10, "{d2}");
    }
    // World placement: radius 0.9 around the transform's translation + 0.1 · centre.
    let centre = [1.03, 1.94, 3.02];
    for p in &sparse.positions {
        let r = (0..3)
            .map(|k| (f64::from(p[k]) - centre[k]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((r - 0.9).abs() < 0.005, "{r}");
    }
}

/// cortex-sphere.vdb (a Houdini/Cortex level set, half floats, voxel 0.05): a closed sphere.
#[test]
fn cortex_sphere_fixture_is_a_closed_sphere() {
    let Some(path) = fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    let file = read_vdb(&path).unwrap();
    let grid = file.typed_grid::<f32>("ls_sphere").unwrap();
    let mesh = marching_cubes_vdb(grid, &MarchingCubesConfig::default()).unwrap();
    assert_closed_and_oriented(&mesh, "cortex sphere");
    let radii: Vec<f64> = mesh
        .positions
        .iter()
        .map(|p| p.iter().map(|&c| f64::from(c).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mean = radii.iter().sum::<f64>() / radii.len() as f64;
    // The active band reaches index ±62 = 3.1 with a 3-voxel (0.15) half width: radius ≈ 2.95.
    assert!((mean - 2.95).abs() < 0.05, "mean radius {mean}");
    assert!(
        radii.iter().all(|r| (r - mean).abs() < 0.01),
        "not a sphere"
    );
}

#[test]
fn padding_surrounds_the_grid() {
    let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let (padded, dims) = pad_grid(&values, [2, 3, 4], 2, -1.0).unwrap();
    assert_eq!(dims, [6, 7, 8]);
    for x in 0..6 {
        for y in 0..7 {
            for z in 0..8 {
                let inner = (2..4).contains(&x) && (2..5).contains(&y) && (2..6).contains(&z);
                let expected = if inner {
                    (((x - 2) * 3 + y - 2) * 4 + z - 2) as f32
                } else {
                    -1.0
                };
                assert_eq!(padded[(x * 7 + y) * 8 + z], expected);
            }
        }
    }
    assert!(pad_grid(&values, [2, 3, 5], 1, 0.0).is_err());
    assert!(pad_grid(&values, [2, 3, 4], usize::MAX, 0.0).is_err());
}

#[test]
fn huge_padding_is_an_error_not_an_overflow() {
    // 2²¹ + 1 points a side overflow usize; 2¹⁵ layers (65537³ values, 1.1 PB) only the cap.
    for layers in [usize::MAX, usize::MAX / 2, 1 << 20, 1 << 15] {
        assert!(
            matches!(
                pad_grid(&[0.0], [1, 1, 1], layers, 1.0),
                Err(MarchingCubesError::GridTooLarge { layers: l, .. }) if l == layers
            ),
            "{layers} layers"
        );
    }
    assert_eq!(pad_grid(&[0.0], [1, 1, 1], 3, 1.0).unwrap().1, [7, 7, 7]);
}

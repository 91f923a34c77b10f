//! Signed distances: exact shapes, trimesh's golden values on spot, sign methods, bad meshes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{read_npz, NpyData};
use vnr_geom::bvh::GeometryError;
use vnr_geom::procedural::{cuboid_mesh, torus_mesh};
use vnr_geom::signed_distance::{
    fibonacci_sphere, signed_distance, MeshSdf, SdfOptions, SignMethod, VirtualScanOptions,
};
use vnr_geom::winding::FastWindingNumber;

use crate::support::{distance_at, flat_square, origin_box, origin_torus};

fn random_points(n: usize, extent: f32, seed: u64) -> Vec<[f32; 3]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| std::array::from_fn(|_| rng.random_range(-extent..extent)))
        .collect()
}

/// A small scan, enough for unit shapes and quick in debug builds.
fn small_scan() -> SdfOptions {
    SdfOptions {
        sign: SignMethod::VirtualScan(VirtualScanOptions {
            views: 100,
            resolution: 64,
            votes: 11,
        }),
    }
}

#[test]
fn cube_signed_distance_is_exact() {
    let half = [1.0, 0.5, 0.75];
    let mesh = cuboid_mesh(half);
    let shape = origin_box(half);
    let points = random_points(2000, 2.0, 1);
    let sdf = signed_distance(&mesh, &points).unwrap();
    for (p, d) in points.iter().zip(&sdf) {
        let expected = distance_at(&shape, *p);
        assert!(
            (d - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
            "{p:?}: {d} vs {expected}"
        );
    }
    // On the surface the distance is 0.
    assert_eq!(signed_distance(&mesh, &[[1.0, 0.1, 0.2]]).unwrap()[0], 0.0);
}

#[test]
fn torus_signed_distance_matches_analytic() {
    let mesh = torus_mesh(1.0, 0.35, 256, 128).unwrap();
    let sdf = MeshSdf::new(&mesh, &SdfOptions::default()).unwrap();
    let points = random_points(2000, 1.6, 2);
    let values = sdf.signed_distances(&points);
    let shape = origin_torus(1.0, 0.35);
    // Chord error of the tessellation: r·(1 − cos(π/128)) plus the ring's, well under 1e-3.
    for (p, d) in points.iter().zip(&values) {
        let expected = distance_at(&shape, *p);
        assert!((d - expected).abs() < 1e-3, "{p:?}: {d} vs {expected}");
    }
    assert!(sdf.signed_distance([f32::NAN, 0.0, 0.0]).is_nan());
}

#[test]
fn spot_matches_trimesh() {
    let Some(path) = vnr_formats::testing::fixture("meshes/spot.obj") else {
        return;
    };
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/golden/geom/spot_trimesh_sdf.npz"
    );
    let arrays = read_npz(golden).unwrap();
    let get = |name: &str| arrays.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let NpyData::F32(flat) = get("points").into_data() else {
        panic!("points must be float32")
    };
    let NpyData::F64(expected) = get("sdf").into_data() else {
        panic!("sdf must be float64")
    };
    let points: Vec<[f32; 3]> = flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    let mesh = TriangleMesh::read(path).unwrap();
    let ours = signed_distance(&mesh, &points).unwrap();
    let (mut far, mut agree, mut worst) = (0usize, 0usize, 0.0f64);
    for (d, e) in ours.iter().zip(&expected) {
        worst = worst.max((f64::from(d.abs()) - e.abs()).abs());
        if e.abs() > 0.005 {
            far += 1;
            agree += usize::from((*d > 0.0) == (*e > 0.0));
        }
    }
    assert!(worst <= 1e-5, "largest |distance| difference {worst}");
    assert!(
        agree as f64 >= 0.999 * far as f64,
        "signs agree on {agree} of {far}"
    );
}

#[test]
fn virtual_scan_sign_on_closed_and_flipped_meshes() {
    let half = [0.8, 0.5, 0.6];
    let shape = origin_box(half);
    let points: Vec<[f32; 3]> = random_points(600, 1.2, 3)
        .into_iter()
        .filter(|p| distance_at(&shape, *p).abs() > 0.05)
        .collect();
    let expected: Vec<bool> = points
        .iter()
        .map(|p| distance_at(&shape, *p) < 0.0)
        .collect();
    // Flip half of the triangles: winding numbers lose the sign, the scan does not care.
    let mut flipped = cuboid_mesh(half);
    for t in flipped.triangles.iter_mut().step_by(2) {
        t.swap(1, 2);
    }
    for mesh in [&cuboid_mesh(half), &flipped] {
        let scan = MeshSdf::new(mesh, &small_scan()).unwrap();
        assert!(scan.virtual_scan().unwrap().len() > 10_000);
        let signs: Vec<bool> = scan
            .signed_distances(&points)
            .iter()
            .map(|d| *d < 0.0)
            .collect();
        assert_eq!(signs, expected);
    }
    let winding = FastWindingNumber::new(&flipped, 2.0).unwrap();
    assert!(winding.winding_number([0.0; 3]).abs() < 0.6);
}

#[test]
fn fibonacci_sphere_is_unit_and_spread() {
    let views = fibonacci_sphere(100);
    assert_eq!(views.len(), 100);
    for v in &views {
        assert!(((v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt() - 1.0).abs() < 1e-5);
    }
    let mean: [f32; 3] = std::array::from_fn(|k| views.iter().map(|v| v[k]).sum::<f32>() / 100.0);
    assert!(mean.iter().all(|m| m.abs() < 0.05));
}

#[test]
fn zero_volume_mesh_is_outside_everywhere() {
    // A flat square: no inside, so every distance is positive (the unsigned distance).
    let mesh = flat_square(0.0, 1.0);
    let d = signed_distance(
        &mesh,
        &[[0.5, 0.5, 0.25], [0.5, 0.5, -0.25], [2.0, 0.5, 0.0]],
    )
    .unwrap();
    assert_eq!(d, vec![0.25, 0.25, 1.0]);
}

#[test]
fn non_manifold_and_degenerate_meshes_do_not_panic() {
    // A cube plus two fins sharing one of its edges (an edge used by four triangles) and a
    // degenerate triangle.
    let mut mesh = cuboid_mesh([1.0; 3]);
    let base = mesh.positions.len() as u32;
    mesh.positions
        .extend([[2.0, 2.0, -1.0], [2.0, -2.0, -1.0], [3.0, 3.0, 3.0]]);
    mesh.triangles.extend([
        [1, 3, base],
        [3, 1, base + 1],
        [base + 2, base + 2, base + 2],
    ]);
    assert!(mesh.edge_stats().non_manifold_edges > 0);
    let d = signed_distance(&mesh, &[[0.0; 3], [5.0, 0.0, 0.0], [3.0, 3.0, 3.0]]).unwrap();
    assert_eq!(d[0], -1.0);
    assert!(d[1] > 0.0 && d[1].is_finite());
    assert_eq!(d[2], 0.0);
}

#[test]
fn bad_meshes_are_typed_errors() {
    assert!(matches!(
        signed_distance(&TriangleMesh::default(), &[[0.0; 3]]),
        Err(GeometryError::EmptyMesh)
    ));
    let nan = TriangleMesh {
        positions: vec![[0.0; 3], [0.0, f32::NAN, 0.0], [0.0, 1.0, 0.0]],
        triangles: vec![[0, 1, 2]],
    };
    assert!(matches!(
        signed_distance(&nan, &[[0.0; 3]]),
        Err(GeometryError::InvalidMesh(_))
    ));
    // A mesh of only degenerate triangles: distances to its points, no inside.
    let points_only = TriangleMesh::new(vec![[0.0; 3]], vec![[0, 0, 0]]).unwrap();
    assert_eq!(
        signed_distance(&points_only, &[[0.0, 3.0, 4.0]]).unwrap(),
        vec![5.0]
    );
    let scan = MeshSdf::new(&points_only, &small_scan()).unwrap();
    assert!(scan.virtual_scan().unwrap().is_empty());
    assert_eq!(scan.signed_distance([0.0, 3.0, 4.0]), 5.0);
}

#[test]
fn suzanne_orientation() {
    let Some(path) = vnr_formats::testing::fixture("meshes/suzanne.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    let winding = FastWindingNumber::new(&mesh, 2.0).unwrap();
    let scan = MeshSdf::new(&mesh, &small_scan()).unwrap();
    let (lo, hi) = mesh.bounding_box().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut scan_inside, mut winding_inside, mut disagree, mut fractional) = (0, 0, 0, 0);
    for _ in 0..2000 {
        let q: [f32; 3] = std::array::from_fn(|k| rng.random_range(lo[k]..hi[k]));
        let w = winding.winding_number(q);
        let by_scan = scan.signed_distance(q) < 0.0;
        scan_inside += usize::from(by_scan);
        winding_inside += usize::from(w > 0.5);
        disagree += usize::from(by_scan != (w > 0.5));
        fractional += usize::from((0.1..0.9).contains(&w.abs()));
    }
    eprintln!(
        "suzanne (2000 points in its box): inside by scan {scan_inside}, by winding \
         {winding_inside}, disagreeing {disagree}, fractional w {fractional}"
    );
    assert!(scan_inside > 0);
}

/// `signed_distances` sorts the points by Morton code and hands each rayon task a run of
/// neighbours; the results must come back in the caller's order, equal to single queries.
#[test]
fn batched_signed_distances_match_single_queries() {
    let mesh = torus_mesh(1.0, 0.35, 64, 32).unwrap();
    let sdf = MeshSdf::new(&mesh, &SdfOptions::default()).unwrap();
    let mut points = random_points(3000, 1.6, 7);
    points[10] = [f32::NAN; 3];
    points[2999] = [0.0, 0.0, f32::NEG_INFINITY];
    let batched = sdf.signed_distances(&points);
    let queries = sdf.queries(&points);
    for (i, p) in points.iter().enumerate() {
        let single = sdf.signed_distance(*p);
        if single.is_nan() {
            assert!(batched[i].is_nan() && queries[i].distance.is_nan(), "{p:?}");
        } else {
            assert_eq!(batched[i], single, "{p:?}");
            assert_eq!(queries[i].signed(), single, "{p:?}");
        }
    }
    assert!(batched[10].is_nan() && batched[2999].is_nan());
}

#[test]
fn huge_virtual_scans_are_errors_not_overflows() {
    let mesh = cuboid_mesh([0.5; 3]);
    let scan = |views, resolution| SdfOptions {
        sign: SignMethod::VirtualScan(VirtualScanOptions {
            views,
            resolution,
            votes: 11,
        }),
    };
    for (views, resolution) in [
        (usize::MAX, 4),
        (1 << 40, 4),
        (4, usize::MAX),
        (4, 1 << 20),
        // Each within its own bound, the product not.
        (1 << 16, 1 << 13),
    ] {
        assert!(
            matches!(
                MeshSdf::new(&mesh, &scan(views, resolution)),
                Err(GeometryError::OptionTooLarge { .. })
            ),
            "{views} views of {resolution}²"
        );
    }
    assert!(MeshSdf::new(&mesh, &scan(6, 16)).is_ok());
}

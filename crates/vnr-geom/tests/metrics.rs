//! Metrics: the KD-tree against brute force, area-weighted sampling, and chamfer / Hausdorff /
//! normal consistency on cases with known answers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_geom::marching_cubes::{marching_cubes, DenseField, MarchingCubesConfig};
use vnr_geom::metrics::{
    chamfer, compare_surfaces, sample_surface, surface_distances, KdTree, MetricsError,
    Normalization, PointSet, MAX_SAMPLES,
};

fn brute_nearest(points: &[[f32; 3]], q: [f64; 3]) -> (usize, f64) {
    let mut best = (usize::MAX, f64::INFINITY);
    for (i, p) in points.iter().enumerate() {
        let d2: f64 = (0..3).map(|k| (f64::from(p[k]) - q[k]).powi(2)).sum();
        if d2 < best.1 {
            best = (i, d2);
        }
    }
    best
}

#[test]
fn kd_tree_matches_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for n in [1, 2, 13, 100, 2_000] {
        // Clustered points with exact duplicates and a flat (zero-extent) axis in some sets.
        let mut points: Vec<[f32; 3]> = (0..n)
            .map(|i| {
                let cluster = (i % 3) as f32 * 5.0;
                [
                    cluster + rng.random_range(-1.0..1.0),
                    rng.random_range(-1.0..1.0),
                    if n == 100 {
                        0.5
                    } else {
                        rng.random_range(-1.0..1.0)
                    },
                ]
            })
            .collect();
        if n > 10 {
            points[7] = points[3];
        }
        let tree = KdTree::new(&points).unwrap();
        assert_eq!(tree.len(), n);
        let queries: Vec<[f32; 3]> = (0..300)
            .map(|_| std::array::from_fn(|_| rng.random_range(-3.0..13.0)))
            .chain(points.iter().copied())
            .collect();
        for (q, got) in queries.iter().zip(tree.nearest_many(&queries)) {
            let expected = brute_nearest(&points, q.map(f64::from));
            assert_eq!(got, expected, "n {n}, query {q:?}");
        }
    }
}

/// A box `[0, a] × [0, b] × [0, c]` as 12 outward triangles.
fn box_mesh(size: [f32; 3]) -> TriangleMesh {
    crate::support::box_mesh([0.0; 3], size)
}

#[test]
fn samples_are_on_the_surface_and_uniform_by_area() {
    let size = [4.0f32, 2.0, 1.0];
    let mesh = box_mesh(size);
    let n = 60_000;
    let samples = sample_surface(&mesh, n, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    assert_eq!(samples.points.len(), n);
    let again = sample_surface(&mesh, n, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    assert_eq!(samples, again, "same seed, same samples");
    // Faces x = 0 / x = 4 have area 2 each, y faces 4, z faces 8: total 28.
    let mut per_axis = [0usize; 3];
    for (p, nrm) in samples.points.iter().zip(&samples.normals) {
        let axis = (0..3)
            .find(|&k| nrm[k].abs() > 0.999)
            .expect("axis-aligned normal");
        let on_face = p[axis].abs() < 1e-6 || (p[axis] - size[axis]).abs() < 1e-6;
        assert!(on_face, "{p:?} not on a face of axis {axis}");
        // Outward: the normal points away from the box's centre.
        assert!((p[axis] - 0.5 * size[axis]) * nrm[axis] > 0.0);
        per_axis[axis] += 1;
    }
    for (axis, area) in [4.0, 8.0, 16.0].iter().enumerate() {
        let expected = n as f64 * area / 28.0;
        let sigma = (expected * (1.0 - area / 28.0)).sqrt();
        let got = per_axis[axis] as f64;
        assert!(
            (got - expected).abs() < 5.0 * sigma,
            "axis {axis}: {got} vs {expected}"
        );
    }
}

#[test]
fn shifted_copies_have_known_distances() {
    // A unit lattice and the same lattice moved by 0.1 along x: every nearest pair is the moved
    // copy, so each direction's mean squared distance is 0.01.
    let lattice: Vec<[f32; 3]> = (0..512)
        .map(|i| [(i / 64) as f32, ((i / 8) % 8) as f32, (i % 8) as f32])
        .collect();
    let moved: Vec<[f32; 3]> = lattice.iter().map(|p| [p[0] + 0.1, p[1], p[2]]).collect();
    let normals = vec![[0.0f32, 0.0, 1.0]; 512];
    let tilted = vec![[0.0f32, 0.6, -0.8]; 512];
    let a = PointSet {
        points: &lattice,
        normals: Some(&normals),
    };
    let b = PointSet {
        points: &moved,
        normals: Some(&tilted),
    };
    let d = surface_distances(&a, &b).unwrap();
    assert!((d.chamfer - 0.02).abs() < 1e-6, "{}", d.chamfer);
    assert!((d.chamfer_a_to_b - 0.01).abs() < 1e-6);
    assert!((d.hausdorff - 0.1).abs() < 1e-6, "{}", d.hausdorff);
    assert!((d.normal_consistency.unwrap() - 0.8).abs() < 1e-6);
    let same = surface_distances(&a, &a).unwrap();
    assert_eq!((same.chamfer, same.hausdorff), (0.0, 0.0));
    assert_eq!(same.normal_consistency, Some(1.0));
    let without = PointSet {
        points: &moved,
        normals: None,
    };
    assert_eq!(
        surface_distances(&a, &without).unwrap().normal_consistency,
        None
    );
}

/// A marching-cubes sphere of radius `r` (64³ grid over [-1.2, 1.2]³).
fn sphere_mesh(r: f64) -> TriangleMesh {
    let n = 48;
    let size = 2.4 / (n - 1) as f64;
    let mut values = Vec::new();
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let p = [i, j, k].map(|c| -1.2 + c as f64 * size);
                values.push(((p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - r) as f32);
            }
        }
    }
    let field = DenseField {
        values: &values,
        dims: [n; 3],
        origin: [-1.2; 3],
        voxel_size: [size; 3],
    };
    marching_cubes(&field, &MarchingCubesConfig::default()).unwrap()
}

/// Points and normals on the exact sphere of radius `r`.
fn sphere_points(r: f64, n: usize, rng: &mut impl Rng) -> (Vec<[f32; 3]>, Vec<[f32; 3]>) {
    (0..n)
        .map(|_| loop {
            let v: [f64; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
            let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if len > 1e-3 && len <= 1.0 {
                let u = v.map(|c| c / len);
                break (u.map(|c| (c * r) as f32), u.map(|c| c as f32));
            }
        })
        .unzip()
}

#[test]
fn deepsdf_chamfer_of_a_good_reconstruction_is_small() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (points, normals) = sphere_points(1.0, 30_000, &mut rng);
    let gt = PointSet {
        points: &points,
        normals: Some(&normals),
    };
    let mesh = sphere_mesh(1.0);
    let d = chamfer(&gt, &mesh, 30_000, Normalization::default(), &mut rng).unwrap();
    eprintln!(
        "sphere r=1 vs its 48³ marching cubes: chamfer ×10³ {:.4}, Hausdorff {:.4}, normal consistency {:.5}",
        d.chamfer * 1e3,
        d.hausdorff,
        d.normal_consistency.unwrap()
    );
    // Two independent 30k samplings of a 4π surface are ~0.02 apart: chamfer ≈ 1e-4 · 4.
    assert!(d.chamfer < 1e-3, "{}", d.chamfer);
    assert!(d.hausdorff < 0.05, "{}", d.hausdorff);
    assert!(d.normal_consistency.unwrap() > 0.99);
    // A sphere 10 % too large is clearly worse: at least the 0.1² radial gap both ways.
    let big = chamfer(
        &gt,
        &sphere_mesh(1.1),
        30_000,
        Normalization::default(),
        &mut rng,
    )
    .unwrap();
    assert!(big.chamfer > 0.02 && big.chamfer < 0.03, "{}", big.chamfer);
    assert!((big.hausdorff - 0.1).abs() < 0.03, "{}", big.hausdorff);
}

#[test]
fn normalisation_maps_the_reconstruction_back() {
    // The reconstruction lives in DeepSDF's normalised frame: (p + offset) · scale.
    let normalization = Normalization {
        offset: [0.5, -1.0, 2.0],
        scale: 0.25,
    };
    let mut mesh = sphere_mesh(1.0);
    for p in &mut mesh.positions {
        *p = std::array::from_fn(|k| {
            ((f64::from(p[k]) + normalization.offset[k]) * normalization.scale) as f32
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (points, _) = sphere_points(1.0, 5_000, &mut rng);
    let gt = PointSet {
        points: &points,
        normals: None,
    };
    let mapped = chamfer(&gt, &mesh, 5_000, normalization, &mut rng).unwrap();
    assert!(mapped.chamfer < 2e-3, "{}", mapped.chamfer);
    let unmapped = chamfer(&gt, &mesh, 5_000, Normalization::default(), &mut rng).unwrap();
    assert!(unmapped.chamfer > 1.0, "{}", unmapped.chamfer);
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(matches!(KdTree::new(&[]), Err(MetricsError::NoPoints(_))));
    assert!(matches!(
        sample_surface(&TriangleMesh::default(), 10, &mut rng),
        Err(MetricsError::NoArea)
    ));
    let flat = TriangleMesh::new(
        vec![[0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]],
        vec![[0, 1, 2]],
    )
    .unwrap();
    assert!(matches!(
        sample_surface(&flat, 10, &mut rng),
        Err(MetricsError::NoArea)
    ));
    let points = [[0.0f32; 3]; 2];
    let normals = [[0.0f32, 0.0, 1.0]];
    let bad = PointSet {
        points: &points,
        normals: Some(&normals),
    };
    let good = PointSet {
        points: &points,
        normals: None,
    };
    assert!(matches!(
        surface_distances(&bad, &good),
        Err(MetricsError::NormalCount { .. })
    ));
    let empty = PointSet {
        points: &[],
        normals: None,
    };
    assert!(surface_distances(&good, &empty).is_err());
    let mesh = box_mesh([1.0; 3]);
    let zero = Normalization {
        offset: [0.0; 3],
        scale: 0.0,
    };
    assert!(matches!(
        chamfer(&good, &mesh, 10, zero, &mut rng),
        Err(MetricsError::InvalidScale(_))
    ));
}

#[test]
fn huge_sample_counts_are_errors_not_overflows() {
    let mesh = TriangleMesh::new(
        vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        vec![[0, 1, 2]],
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for count in [usize::MAX, 1 << 40, MAX_SAMPLES + 1] {
        assert!(matches!(
            sample_surface(&mesh, count, &mut rng),
            Err(MetricsError::TooManySamples(n)) if n == count
        ));
        let gt = PointSet {
            points: &mesh.positions,
            normals: None,
        };
        assert!(matches!(
            chamfer(&gt, &mesh, count, Normalization::default(), &mut rng),
            Err(MetricsError::TooManySamples(_))
        ));
        assert!(matches!(
            compare_surfaces(&mesh, &mesh, count, 0),
            Err(MetricsError::TooManySamples(_))
        ));
    }
}

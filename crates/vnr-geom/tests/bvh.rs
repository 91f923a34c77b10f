//! BVH queries against brute force, on random triangle soups with degenerate triangles mixed
//! in; winding numbers, exact and fast; bad meshes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_geom::bvh::{closest_point_brute_force, Bvh, GeometryError, Ray};
use vnr_geom::procedural::{cuboid_mesh, torus_mesh};
use vnr_geom::winding::{winding_number_exact, FastWindingNumber};

fn random_point(rng: &mut impl Rng, extent: f32) -> [f32; 3] {
    std::array::from_fn(|_| rng.random_range(-extent..extent))
}

/// A soup of `n` small random triangles in [-1, 1]³; every 10th is degenerate (a repeated
/// corner or three collinear corners).
fn random_soup(n: usize, rng: &mut impl Rng) -> TriangleMesh {
    let mut positions = Vec::new();
    let mut triangles = Vec::new();
    for t in 0..n {
        let a = random_point(rng, 1.0);
        let b: [f32; 3] = std::array::from_fn(|k| a[k] + rng.random_range(-0.2..0.2));
        let c: [f32; 3] = match t % 10 {
            0 => a,
            5 => std::array::from_fn(|k| 0.5 * (a[k] + b[k])),
            _ => std::array::from_fn(|k| a[k] + rng.random_range(-0.2..0.2)),
        };
        let base = positions.len() as u32;
        positions.extend([a, b, c]);
        triangles.push([base, base + 1, base + 2]);
    }
    TriangleMesh::new(positions, triangles).unwrap()
}

/// The point with barycentric coordinates `bary` on triangle `triangle`.
fn point_at(mesh: &TriangleMesh, triangle: u32, bary: [f32; 3]) -> [f32; 3] {
    let tri = mesh.triangles[triangle as usize].map(|i| mesh.positions[i as usize]);
    std::array::from_fn(|k| bary[0] * tri[0][k] + bary[1] * tri[1][k] + bary[2] * tri[2][k])
}

#[test]
fn closest_point_matches_brute_force_on_random_soups() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &n in &[1usize, 7, 300, 3000] {
        let mesh = random_soup(n, &mut rng);
        let bvh = Bvh::new(&mesh).unwrap();
        let queries: Vec<[f32; 3]> = (0..300).map(|_| random_point(&mut rng, 1.5)).collect();
        let hits = bvh.closest_points(&queries, f32::INFINITY);
        for (q, hit) in queries.iter().zip(hits) {
            let hit = hit.unwrap();
            let brute = closest_point_brute_force(&mesh, *q).unwrap();
            let (d, e) = (hit.distance_squared.sqrt(), brute.distance_squared.sqrt());
            assert!(
                (d - e).abs() <= 1e-6 * e.max(1e-30),
                "n={n} q={q:?}: bvh {d} vs brute force {e}"
            );
            assert!(hit
                .point
                .iter()
                .chain(&hit.barycentric)
                .all(|c| c.is_finite()));
            // The barycentrics reproduce the point on the reported triangle.
            let p = point_at(&mesh, hit.triangle, hit.barycentric);
            assert!(p.iter().zip(hit.point).all(|(a, b)| (a - b).abs() < 1e-5));
        }
    }
}

#[test]
fn max_distance_cutoff() {
    let mesh = cuboid_mesh([1.0; 3]);
    let bvh = Bvh::new(&mesh).unwrap();
    assert!(bvh.closest_point([3.0, 0.0, 0.0], 1.5).is_none());
    let hit = bvh.closest_point([3.0, 0.0, 0.0], 2.5).unwrap();
    assert!((hit.distance_squared - 4.0).abs() < 1e-6);
    assert!(bvh.closest_point([f32::NAN, 0.0, 0.0], 10.0).is_none());
}

#[test]
fn rays_match_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mesh = random_soup(2000, &mut rng);
    let bvh = Bvh::new(&mesh).unwrap();
    let single = TriangleMesh::new(vec![], vec![]).unwrap();
    assert!(Bvh::new(&single).is_err());
    let rays: Vec<Ray> = (0..400)
        .map(|_| Ray {
            origin: random_point(&mut rng, 1.5),
            direction: random_point(&mut rng, 1.0),
        })
        .collect();
    let hits = bvh.intersect_all(&rays, 10.0);
    let occluded = bvh.occluded_all(&rays, 10.0);
    let mut hit_count = 0;
    for ((ray, hit), occ) in rays.iter().zip(&hits).zip(&occluded) {
        // Brute force: the nearest hit over every triangle, each as its own one-triangle BVH.
        let brute = mesh
            .triangles
            .iter()
            .filter_map(|t| {
                let one = TriangleMesh::new(
                    t.map(|i| mesh.positions[i as usize]).to_vec(),
                    vec![[0, 1, 2]],
                )
                .unwrap();
                Bvh::new(&one).unwrap().intersect(ray, 10.0).map(|h| h.t)
            })
            .fold(None, |best: Option<f32>, t| {
                Some(best.map_or(t, |b| b.min(t)))
            });
        assert_eq!(hit.map(|h| h.t), brute, "ray {ray:?}");
        assert_eq!(*occ, brute.is_some());
        hit_count += usize::from(brute.is_some());
        if let Some(h) = hit {
            let on_tri = point_at(&mesh, h.triangle, h.barycentric);
            let on_ray: [f32; 3] = std::array::from_fn(|k| ray.origin[k] + h.t * ray.direction[k]);
            assert!(on_ray.iter().zip(on_tri).all(|(a, b)| (a - b).abs() < 1e-4));
        }
    }
    assert!(
        hit_count > 20,
        "too few rays hit ({hit_count}) to test anything"
    );
}

#[test]
fn ray_hits_cube_face() {
    let bvh = Bvh::new(&cuboid_mesh([1.0; 3])).unwrap();
    let ray = Ray {
        origin: [-5.0, 0.2, 0.3],
        direction: [1.0, 0.0, 0.0],
    };
    let hit = bvh.intersect(&ray, 100.0).unwrap();
    assert!((hit.t - 4.0).abs() < 1e-6);
    assert!(bvh.intersect(&ray, 3.9).is_none());
    assert!(!bvh.occluded(
        &Ray {
            direction: [-1.0, 0.0, 0.0],
            ..ray
        },
        100.0
    ));
    assert!(bvh
        .intersect(
            &Ray {
                direction: [0.0; 3],
                ..ray
            },
            100.0
        )
        .is_none());
}

#[test]
fn degenerate_meshes_give_no_nan() {
    // Every triangle degenerate: a point, a segment, a collinear triple.
    let mesh = TriangleMesh::new(
        vec![[0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        vec![[0, 0, 0], [0, 1, 1], [0, 1, 2], [3, 3, 3]],
    )
    .unwrap();
    let bvh = Bvh::new(&mesh).unwrap();
    for q in [
        [0.5, 0.5, 0.0],
        [3.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [-1.0, -1.0, -1.0],
    ] {
        let hit = bvh.closest_point(q, f32::INFINITY).unwrap();
        let brute = closest_point_brute_force(&mesh, q).unwrap();
        assert!(hit.distance_squared.is_finite() && hit.barycentric.iter().all(|b| b.is_finite()));
        assert!((hit.distance_squared - brute.distance_squared).abs() <= 1e-6);
    }
    assert_eq!(bvh.distance([3.0, 0.0, 0.0]), 1.0);
    assert!(bvh
        .intersect(
            &Ray {
                origin: [0.5, 0.0, -1.0],
                direction: [0.0, 0.0, 1.0]
            },
            10.0
        )
        .is_none());
    let winding = FastWindingNumber::from_bvh(bvh, 2.0);
    let w = winding.winding_number([0.3, 0.3, 0.3]);
    assert_eq!(w, 0.0);
}

#[test]
fn many_identical_triangles_build_shallow_leaves() {
    // Identical centroids defeat the SAH; the builder must still terminate with small leaves.
    let mesh = TriangleMesh::new(
        vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        vec![[0, 1, 2]; 1000],
    )
    .unwrap();
    let bvh = Bvh::new(&mesh).unwrap();
    assert_eq!(bvh.triangle_count(), 1000);
    assert!(bvh.node_count() >= 2 * 1000 / 4 - 1);
    assert!((bvh.distance([0.0, 0.0, 2.0]) - 2.0).abs() < 1e-6);
}

#[test]
fn bad_meshes_are_typed_errors() {
    assert!(matches!(
        Bvh::new(&TriangleMesh::default()),
        Err(GeometryError::EmptyMesh)
    ));
    let nan = TriangleMesh {
        positions: vec![[0.0; 3], [f32::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]],
        triangles: vec![[0, 1, 2]],
    };
    assert!(matches!(Bvh::new(&nan), Err(GeometryError::InvalidMesh(_))));
    let out_of_range = TriangleMesh {
        positions: vec![[0.0; 3]],
        triangles: vec![[0, 1, 2]],
    };
    assert!(matches!(
        Bvh::new(&out_of_range),
        Err(GeometryError::InvalidMesh(_))
    ));
}

#[test]
fn exact_winding_numbers_of_closed_meshes() {
    let cube = cuboid_mesh([1.0; 3]);
    assert!((winding_number_exact(&cube, [0.1, 0.2, 0.3]) - 1.0).abs() < 1e-9);
    assert!(winding_number_exact(&cube, [2.0, 0.2, 0.3]).abs() < 1e-9);
    let mut flipped = cube.clone();
    for t in &mut flipped.triangles {
        t.swap(1, 2);
    }
    assert!((winding_number_exact(&flipped, [0.1, 0.2, 0.3]) + 1.0).abs() < 1e-9);
}

#[test]
fn fast_winding_numbers_match_exact() {
    let mesh = torus_mesh(1.0, 0.4, 96, 48).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let queries: Vec<[f32; 3]> = (0..400).map(|_| random_point(&mut rng, 1.6)).collect();
    let exact: Vec<f64> = queries
        .iter()
        .map(|&q| winding_number_exact(&mesh, q))
        .collect();
    // The truncation error shrinks like (1/β)³: β = 2 is good enough for signs, larger β
    // converges to the exact sum (which checks the expansion's terms).
    for (beta, tolerance) in [(2.0, 0.05), (4.0, 0.01), (8.0, 1.5e-3)] {
        let fast = FastWindingNumber::new(&mesh, beta).unwrap();
        let approx = fast.winding_numbers(&queries);
        let worst = exact
            .iter()
            .zip(&approx)
            .map(|(e, a)| (e - f64::from(*a)).abs())
            .fold(0.0, f64::max);
        eprintln!("beta {beta}: worst |fast - exact| = {worst:.2e}");
        assert!(
            worst < tolerance,
            "beta {beta}: worst |fast − exact| = {worst}"
        );
        for (e, a) in exact.iter().zip(&approx) {
            assert_eq!(*e > 0.5, *a > 0.5);
        }
    }
    let fast = FastWindingNumber::new(&mesh, 2.0).unwrap();
    assert!(fast.is_inside([1.0, 0.0, 0.0]));
    assert!(!fast.is_inside([0.0, 0.0, 0.0]));
    assert!(fast.winding_number([f32::NAN, 0.0, 0.0]).is_nan());
}

#[test]
fn winding_numbers_survive_holes() {
    // Remove a patch of the torus: points inside the tube, away from the hole, stay inside.
    let mut mesh = torus_mesh(1.0, 0.4, 64, 32).unwrap();
    mesh.triangles.truncate(mesh.triangles.len() - 40);
    assert!(mesh.edge_stats().boundary_edges > 0);
    let fast = FastWindingNumber::new(&mesh, 2.0).unwrap();
    for angle in [0.5f32, 1.5, 2.5, 3.5] {
        let q = [angle.cos(), 0.0, -angle.sin()];
        let w = fast.winding_number(q);
        assert!(w > 0.5, "w({q:?}) = {w}");
        assert!(winding_number_exact(&mesh, q) > 0.5);
    }
    assert!(fast.winding_number([0.0, 0.0, 0.0]) < 0.5);
}

#[test]
fn bunny_fast_winding_sign_matches_exact() {
    let Some(path) = vnr_formats::testing::fixture("meshes/stanford-bunny.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    assert_eq!(
        mesh.merge_vertices_by_position()
            .edge_stats()
            .boundary_edges,
        223
    );
    let fast = FastWindingNumber::new(&mesh, 2.0).unwrap();
    let (lo, hi) = mesh.bounding_box().unwrap();
    let diagonal = (0..3).map(|k| (hi[k] - lo[k]).powi(2)).sum::<f32>().sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (mut tested, mut agree, mut inside) = (0, 0, 0);
    while tested < 400 {
        let q: [f32; 3] = std::array::from_fn(|k| rng.random_range(lo[k]..hi[k]));
        // "Away from the surface": farther than 0.5 % of the bounding-box diagonal.
        if fast.bvh().distance(q) < 0.005 * diagonal {
            continue;
        }
        tested += 1;
        let exact = winding_number_exact(&mesh, q) > 0.5;
        agree += usize::from(exact == fast.is_inside(q));
        inside += usize::from(exact);
    }
    assert_eq!(agree, tested, "fast and exact signs disagree");
    assert!(
        inside > 40,
        "only {inside} of {tested} points inside the bunny"
    );
}

/// Batched queries run in Morton order with warm starts from the previous query; their results
/// must be exactly the single queries', in the caller's order (non-finite points included).
#[test]
fn batched_queries_equal_single_queries_in_input_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let soup = random_soup(2000, &mut rng);
    let bvh = Bvh::new(&soup).unwrap();
    // More points than one parallel chunk, some repeated, one NaN and one infinite.
    let mut queries: Vec<[f32; 3]> = (0..1500).map(|_| random_point(&mut rng, 1.5)).collect();
    queries.extend_from_within(..100);
    queries[700] = [f32::NAN, 0.0, 0.0];
    queries[701] = [0.0, f32::INFINITY, 0.0];
    let batched = bvh.closest_points(&queries, f32::INFINITY);
    for (q, hit) in queries.iter().zip(&batched) {
        let single = bvh.closest_point(*q, f32::INFINITY);
        assert_eq!(
            hit.map(|h| h.distance_squared),
            single.map(|h| h.distance_squared),
            "{q:?}"
        );
    }
    assert!(batched[700].is_none() && batched[701].is_none());
    assert!(bvh.closest_points(&[], 1.0).is_empty());
    let cutoff = bvh.closest_points(&queries, 0.05);
    for (q, hit) in queries.iter().zip(&cutoff) {
        assert_eq!(
            hit.map(|h| h.distance_squared),
            bvh.closest_point(*q, 0.05).map(|h| h.distance_squared),
            "{q:?}"
        );
    }

    let mesh = torus_mesh(1.0, 0.4, 48, 24).unwrap();
    let fast = FastWindingNumber::new(&mesh, 2.0).unwrap();
    let batched = fast.winding_numbers(&queries);
    for (q, w) in queries.iter().zip(&batched) {
        let single = fast.winding_number(*q);
        assert!(
            w.to_bits() == single.to_bits() || (w.is_nan() && single.is_nan()),
            "{q:?}: {w} vs {single}"
        );
    }
}

/// The far field is summed in `f32`: a query so far away that its squared distance overflows
/// must get a winding number of 0, not NaN.
#[test]
fn winding_number_far_away_is_zero_not_nan() {
    let fast = FastWindingNumber::new(&torus_mesh(1.0, 0.4, 32, 16).unwrap(), 2.0).unwrap();
    for q in [[1e30, 0.0, 0.0], [-3e19, 2e19, 1.0], [0.0, 0.0, f32::MAX]] {
        let w = fast.winding_number(q);
        assert!(w.abs() < 1e-6, "w({q:?}) = {w}");
    }
    let w = fast.winding_number([1e4, 0.0, 0.0]);
    assert!(w.abs() < 1e-6, "w = {w}");
}

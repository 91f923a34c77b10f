//! Analytic shapes and procedural families: exact distances at known points, gradients against
//! finite differences, the superquadric's distance bound against a brute-force distance to its
//! sampled surface, closed meshes inside the unit sphere for every family, bad parameters
//! refused.

use std::f64::consts::{FRAC_PI_2, PI};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::mesh::TriangleMesh;
use vnr_geom::procedural::{generate_class, torus_mesh, Family, ProceduralError};
use vnr_geom::sdf::{Sdf, SdfError};
use vnr_geom::vec3::Vec3;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn v(x: f64, y: f64, z: f64) -> Vec3 {
    Vec3::new(x, y, z)
}

fn superquadric(scale: [f64; 3], e1: f64, e2: f64) -> Sdf {
    Sdf::Superquadric {
        center: Vec3::default(),
        scale: Vec3::from_array(scale),
        e1,
        e2,
    }
}

/// `sign(t)·|t|^e`, the signed power of Barr's parametrisation.
fn signed_pow(t: f64, e: f64) -> f64 {
    t.signum() * t.abs().powf(e)
}

/// Barr's parametrisation of the superquadric surface at latitude `eta ∈ [−π/2, π/2]` and
/// longitude `omega ∈ [−π, π)`.
fn superquadric_point(scale: [f64; 3], e1: f64, e2: f64, eta: f64, omega: f64) -> Vec3 {
    let ring = signed_pow(eta.cos(), e1);
    v(
        scale[0] * ring * signed_pow(omega.cos(), e2),
        scale[1] * ring * signed_pow(omega.sin(), e2),
        scale[2] * signed_pow(eta.sin(), e1),
    )
}

/// Signed volume by the divergence theorem: outward-facing triangles give a positive one.
fn mesh_volume(mesh: &TriangleMesh) -> f64 {
    mesh.triangles
        .iter()
        .map(|t| {
            let [a, b, c] = t.map(|i| mesh.positions[i as usize].map(f64::from));
            (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                + a[2] * (b[0] * c[1] - b[1] * c[0]))
                / 6.0
        })
        .sum()
}

#[test]
fn primitive_distances_at_known_points() {
    let sphere = Sdf::Sphere {
        center: v(0.1, 0.0, 0.0),
        radius: 0.5,
    };
    assert!(close(sphere.distance(v(0.1, 0.0, 0.0)), -0.5));
    assert!(close(sphere.distance(v(1.1, 0.0, 0.0)), 0.5));
    let cube = Sdf::Box {
        center: Vec3::default(),
        half: Vec3::splat(1.0),
    };
    assert!(close(cube.distance(v(2.0, 2.0, 0.5)), 2f64.sqrt()));
    assert!(close(cube.distance(v(0.5, 0.0, 0.0)), -0.5));
    let torus = Sdf::Torus {
        center: Vec3::default(),
        major: 0.5,
        minor: 0.1,
    };
    assert!(close(torus.distance(v(0.5, 0.0, 0.0)), -0.1));
    assert!(close(torus.distance(v(0.0, 0.0, 0.0)), 0.4));
    assert!(close(torus.distance(v(0.0, 0.3, 0.5)), 0.2));
    let capsule = Sdf::Capsule {
        a: v(0.0, -0.5, 0.0),
        b: v(0.0, 0.5, 0.0),
        radius: 0.2,
    };
    assert!(close(capsule.distance(v(0.0, 0.9, 0.0)), 0.2));
    assert!(close(capsule.distance(v(0.5, 0.1, 0.0)), 0.3));
    let rounded = Sdf::RoundedBox {
        center: Vec3::default(),
        half: v(0.5, 0.3, 0.4),
        radius: 0.1,
    };
    assert!(close(rounded.distance(v(0.7, 0.0, 0.0)), 0.2));
    assert!(close(rounded.distance(v(0.0, 0.0, 0.0)), -0.3));
    // Corner: the rounding's centre is at (0.4, 0.2, 0.3).
    let corner = rounded.distance(v(0.5, 0.3, 0.4));
    assert!(close(corner, 0.1 * 3f64.sqrt() - 0.1), "{corner}");
    // A plain union (k = 0) is the minimum; a difference removes the inside.
    let union = Sdf::SmoothUnion(Box::new(sphere.clone()), Box::new(capsule.clone()), 0.0);
    let p = v(0.3, 0.2, 0.1);
    assert!(close(
        union.distance(p),
        sphere.distance(p).min(capsule.distance(p))
    ));
    for cut in [
        Sdf::SmoothDifference(Box::new(sphere.clone()), Box::new(capsule.clone()), 0.0),
        Sdf::Difference(Box::new(sphere.clone()), Box::new(capsule)),
    ] {
        assert!(cut.distance(v(0.0, 0.0, 0.0)) > 0.0);
        assert!(cut.distance(v(0.5, 0.0, 0.0)) < 0.0);
    }
}

#[test]
fn gradients_match_finite_differences() {
    let sphere = |x: f64, r: f64| {
        Box::new(Sdf::Sphere {
            center: v(x, 0.1, 0.0),
            radius: r,
        })
    };
    let shapes = [
        *sphere(0.0, 0.8),
        Sdf::Box {
            center: v(0.1, 0.0, 0.0),
            half: v(0.8, 0.6, 0.7),
        },
        Sdf::RoundedBox {
            center: Vec3::default(),
            half: v(0.8, 0.6, 0.7),
            radius: 0.2,
        },
        Sdf::Torus {
            center: Vec3::default(),
            major: 0.7,
            minor: 0.25,
        },
        Sdf::Capsule {
            a: v(-0.6, -0.3, 0.0),
            b: v(0.6, 0.3, 0.0),
            radius: 0.35,
        },
        superquadric([0.8, 0.6, 0.7], 0.4, 0.6),
        superquadric([0.5, 0.9, 0.7], 1.0, 1.0),
        superquadric([0.7, 0.6, 0.8], 1.7, 1.3),
        Sdf::Union(sphere(-0.35, 0.6), sphere(0.4, 0.45)),
        Sdf::Intersection(sphere(0.0, 1.0), sphere(0.5, 0.9)),
        Sdf::Difference(sphere(0.0, 1.0), sphere(0.5, 0.6)),
        Sdf::SmoothUnion(sphere(-0.4, 0.5), sphere(0.4, 0.5), 0.3),
        Sdf::SmoothDifference(sphere(0.0, 0.9), sphere(0.6, 0.5), 0.2),
    ];
    let h = 1e-6;
    let axes = [v(h, 0.0, 0.0), v(0.0, h, 0.0), v(0.0, 0.0, h)];
    for sdf in &shapes {
        let mut checked = 0;
        for i in 0..200u32 {
            // Deterministic points spread over [-1.3, 1.3]³.
            let f = |k: u32| ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0 * 2.6 - 1.3;
            let p = v(f(1), f(2), f(3));
            let d = sdf.distance(p);
            let forward = axes.map(|e| (sdf.distance(p + e) - d) / h);
            let backward = axes.map(|e| (d - sdf.distance(p - e)) / h);
            // Points on a kink (medial axis, CSG seam, the superquadric's switch to its box
            // bound) have no derivative: skip those.
            if (0..3).any(|k| (forward[k] - backward[k]).abs() > 1e-4) {
                continue;
            }
            let fd = Vec3::from_array(std::array::from_fn(|k| 0.5 * (forward[k] + backward[k])));
            let (_, g) = sdf.eval(p);
            assert!(
                (g - fd).length() < 1e-4,
                "{sdf:?} at {p:?}: {g:?} vs {fd:?}"
            );
            checked += 1;
        }
        assert!(checked > 100, "{sdf:?}: only {checked} smooth points");
    }
}

#[test]
fn superquadric_sign_and_exact_cases() {
    // e1 = e2 = 1 with equal semi-axes is a sphere, and then the bound is the exact distance.
    let ball = superquadric([0.5; 3], 1.0, 1.0);
    for p in [
        v(1.0, 0.0, 0.0),
        v(0.1, -0.2, 0.3),
        v(-0.3, 0.7, 0.9),
        v(0.0, 0.0, 0.0),
    ] {
        assert!(
            (ball.distance(p) - (p.length() - 0.5)).abs() < 1e-12,
            "{p:?}"
        );
    }
    // Surface points scaled in (out) by 5% are inside (outside), for every kind of exponent.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (scale, e1, e2) in [
        ([0.5, 0.3, 0.4], 0.1, 0.1),
        ([0.5, 0.3, 0.4], 0.3, 1.7),
        ([0.4, 0.6, 0.3], 2.0, 2.0),
        ([0.3, 0.3, 0.6], 1.0, 0.05),
    ] {
        let sdf = superquadric(scale, e1, e2);
        sdf.validate().unwrap();
        for _ in 0..200 {
            let s = superquadric_point(
                scale,
                e1,
                e2,
                rng.random_range(-FRAC_PI_2..FRAC_PI_2),
                rng.random_range(-PI..PI),
            );
            assert!(sdf.distance(s).abs() < 1e-9, "{s:?}");
            assert!(sdf.distance(s * 0.95) < 0.0, "{s:?}");
            assert!(sdf.distance(s * 1.05) > 0.0, "{s:?}");
        }
        // The bounds hold the surface's extreme points.
        let b = sdf.bounds();
        assert_eq!(b.max.to_array(), scale);
        assert_eq!(b.min.to_array(), scale.map(|s| -s));
    }
}

/// The superquadric's value never exceeds the distance to its surface (sphere tracing is safe)
/// on either side, yet stays within a modest factor of it. The brute-force distance is to a
/// dense sampling of the surface, so it is at least the true distance.
#[test]
fn superquadric_distance_never_overestimates_the_brute_force_distance() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (scale, e1, e2) in [
        ([0.5, 0.3, 0.4], 0.3, 0.7),
        ([0.4, 0.4, 0.6], 1.0, 1.0),
        ([0.5, 0.35, 0.3], 2.0, 1.5),
        ([0.3, 0.5, 0.45], 0.1, 1.9),
    ] {
        let sdf = superquadric(scale, e1, e2);
        // The surface point in each of many evenly spread directions (a Fibonacci sphere),
        // found from Barr's inside-outside function: its `ε₁/2` power is homogeneous of degree
        // one.
        let inside_outside = |p: Vec3| {
            let ring =
                (p.x / scale[0]).abs().powf(2.0 / e2) + (p.y / scale[1]).abs().powf(2.0 / e2);
            ring.powf(e2 / e1) + (p.z / scale[2]).abs().powf(2.0 / e1)
        };
        let n = 150_000;
        let golden = PI * (3.0 - 5f64.sqrt());
        let surface: Vec<Vec3> = (0..n)
            .map(|i| {
                let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
                let r = (1.0 - z * z).sqrt();
                let phi = golden * i as f64;
                let dir = v(r * phi.cos(), r * phi.sin(), z);
                dir / inside_outside(dir).powf(0.5 * e1)
            })
            .collect();
        let mut worst_ratio = f64::INFINITY;
        for i in 0..150 {
            let p = if i % 2 == 0 {
                // Anywhere around the shape.
                Vec3::from_array(scale.map(|s| rng.random_range(-2.0 * s..2.0 * s)))
            } else {
                // Near the surface, inside or outside.
                let s = surface[rng.random_range(0..surface.len())];
                s * rng.random_range(0.6..1.3)
            };
            let brute = surface
                .iter()
                .map(|s| (*s - p).length())
                .fold(f64::INFINITY, f64::min);
            let d = sdf.distance(p);
            assert!(
                d.abs() <= brute + 1e-12,
                "{scale:?} {e1} {e2} at {p:?}: bound {d} exceeds the distance {brute}"
            );
            if brute > 0.05 {
                worst_ratio = worst_ratio.min(d.abs() / brute);
            }
        }
        // Loose but not useless: sphere tracing still takes real steps.
        assert!(
            worst_ratio > 0.2,
            "{scale:?} {e1} {e2}: ratio {worst_ratio}"
        );
    }
}

#[test]
fn superquadric_meshes_enclose_the_analytic_volume() {
    let (a, b, c) = (0.5, 0.3, 0.4);
    // Barr's volume 2abc·ε₁ε₂·B(ε₁/2 + 1, ε₁)·B(ε₂/2, ε₂/2): 4πabc/3 for the ellipsoid
    // (ε = 1), 4abc/3 for the octahedron (ε = 2).
    for (e, exact, tolerance) in [
        (1.0, 4.0 / 3.0 * PI * a * b * c, 0.01),
        (2.0, 4.0 / 3.0 * a * b * c, 0.03),
    ] {
        let sdf = superquadric([a, b, c], e, e);
        let mesh = sdf.mesh(64).unwrap();
        assert_eq!(mesh.boundary_edge_count(), 0);
        let volume = mesh_volume(&mesh);
        assert!(
            (volume - exact).abs() / exact < tolerance,
            "ε {e}: {volume} vs {exact}"
        );
        // Every vertex lies on the surface to within a fraction of a cell.
        let cell = 2.0 * a / 59.0;
        for p in &mesh.positions {
            let d = sdf.distance(Vec3::from_array(p.map(f64::from)));
            assert!(d.abs() < 0.5 * cell, "vertex {p:?} at {d}");
        }
    }
}

#[test]
fn every_family_meshes_closed_inside_the_unit_sphere() {
    for family in Family::ALL {
        assert_eq!(Family::from_name(family.name()), Some(family));
        let class = generate_class(family, 2, 40, 3).unwrap();
        assert_eq!(class.len(), 2);
        for (name, mesh) in &class {
            assert!(name.starts_with(family.name()));
            assert!(mesh.triangles.len() > 100, "{name}");
            assert_eq!(mesh.boundary_edge_count(), 0, "{name} is not closed");
            let r = mesh
                .positions
                .iter()
                .map(|p| p.iter().map(|c| c * c).sum::<f32>().sqrt())
                .fold(0.0, f32::max);
            assert!(r < 1.0, "{name} reaches {r}");
        }
    }
    // Same seed, same meshes.
    for family in [Family::Blends, Family::Superquadrics] {
        let a = generate_class(family, 1, 24, 9).unwrap();
        let b = generate_class(family, 1, 24, 9).unwrap();
        assert_eq!(a[0].1.positions, b[0].1.positions);
    }
}

#[test]
fn sphere_mesh_encloses_the_analytic_volume() {
    let mesh = Sdf::Sphere {
        center: Vec3::default(),
        radius: 0.5,
    }
    .mesh(64)
    .unwrap();
    let volume = mesh_volume(&mesh);
    let exact = 4.0 / 3.0 * PI * 0.125;
    assert!((volume - exact).abs() / exact < 0.01, "{volume} vs {exact}");
}

#[test]
fn bad_parameters_are_refused() {
    let bad = Sdf::Torus {
        center: Vec3::default(),
        major: 0.5,
        minor: -0.1,
    };
    assert!(matches!(
        bad.mesh(32),
        Err(ProceduralError::Shape(SdfError::BadParameter(_)))
    ));
    let nan = Sdf::Sphere {
        center: v(f64::NAN, 0.0, 0.0),
        radius: 0.5,
    };
    assert!(nan.mesh(32).is_err());
    let too_round = Sdf::RoundedBox {
        center: Vec3::default(),
        half: v(0.5, 0.1, 0.5),
        radius: 0.2,
    };
    assert!(too_round.validate().is_err());
    for (scale, e1, e2) in [
        ([0.5, 0.5, 0.5], 2.5, 1.0),
        ([0.5, 0.5, 0.5], 1.0, 0.001),
        ([0.5, 0.5, 0.5], f64::NAN, 1.0),
        ([0.5, -0.5, 0.5], 1.0, 1.0),
    ] {
        assert!(superquadric(scale, e1, e2).validate().is_err());
    }
    let blend = Sdf::SmoothUnion(
        Box::new(superquadric([0.5; 3], 1.0, 1.0)),
        Box::new(bad),
        0.1,
    );
    assert!(blend.validate().is_err());
    let ok = Sdf::Sphere {
        center: Vec3::default(),
        radius: 0.5,
    };
    assert!(matches!(ok.mesh(4), Err(ProceduralError::BadParameter(_))));
    assert!(ok.mesh(100_000).is_err());
}

#[test]
fn huge_torus_segments_are_errors_not_overflows() {
    // u32 vertex ids: 2·nu·nv triangles must fit u32.
    for (around, tube) in [(u32::MAX, u32::MAX), (1 << 16, 1 << 16), (1 << 15, 1 << 16)] {
        assert!(
            matches!(
                torus_mesh(1.0, 0.3, around, tube),
                Err(ProceduralError::BadParameter(_))
            ),
            "{around} × {tube}"
        );
    }
    let mesh = torus_mesh(1.0, 0.3, 8, 4).unwrap();
    assert_eq!((mesh.positions.len(), mesh.triangles.len()), (32, 64));
}

#[test]
fn huge_classes_are_errors_before_any_shape_is_drawn() {
    // The resolution is checked first, whatever the count.
    for count in [usize::MAX, 1 << 40] {
        for resolution in [0, usize::MAX] {
            assert!(matches!(
                generate_class(Family::Tori, count, resolution, 0),
                Err(ProceduralError::BadParameter(ref m)) if m.contains("resolution")
            ));
        }
        assert!(matches!(
            generate_class(Family::Tori, count, 24, 0),
            Err(ProceduralError::BadParameter(ref m)) if m.contains("count")
        ));
    }
    assert!(generate_class(Family::Tori, 0, 24, 0).unwrap().is_empty());
}

//! Procedural shapes: analytic distances at known points, closed meshes inside the unit
//! sphere for every family, bad parameters refused.

use vnr_geom::procedural::{generate_class, Family, ProceduralError, ShapeSdf};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn primitive_distances_at_known_points() {
    let sphere = ShapeSdf::Sphere {
        centre: [0.1, 0.0, 0.0],
        radius: 0.5,
    };
    assert!(close(sphere.distance([0.1, 0.0, 0.0]), -0.5));
    assert!(close(sphere.distance([1.1, 0.0, 0.0]), 0.5));
    let torus = ShapeSdf::Torus {
        centre: [0.0; 3],
        major: 0.5,
        minor: 0.1,
    };
    assert!(close(torus.distance([0.5, 0.0, 0.0]), -0.1));
    assert!(close(torus.distance([0.0, 0.0, 0.0]), 0.4));
    assert!(close(torus.distance([0.0, 0.3, 0.5]), 0.2));
    let capsule = ShapeSdf::Capsule {
        a: [0.0, -0.5, 0.0],
        b: [0.0, 0.5, 0.0],
        radius: 0.2,
    };
    assert!(close(capsule.distance([0.0, 0.9, 0.0]), 0.2));
    assert!(close(capsule.distance([0.5, 0.1, 0.0]), 0.3));
    let rounded = ShapeSdf::RoundedBox {
        centre: [0.0; 3],
        half_extents: [0.5, 0.3, 0.4],
        rounding: 0.1,
    };
    assert!(close(rounded.distance([0.7, 0.0, 0.0]), 0.2));
    assert!(close(rounded.distance([0.0, 0.0, 0.0]), -0.3));
    // Corner: the rounding's centre is at (0.4, 0.2, 0.3).
    let corner = rounded.distance([0.5, 0.3, 0.4]);
    assert!(close(corner, 0.1 * 3f64.sqrt() - 0.1), "{corner}");
    // A plain union (k = 0) is the minimum; a subtraction removes the inside.
    let union = ShapeSdf::SmoothUnion(Box::new(sphere.clone()), Box::new(capsule.clone()), 0.0);
    let p = [0.3, 0.2, 0.1];
    assert!(close(
        union.distance(p),
        sphere.distance(p).min(capsule.distance(p))
    ));
    let cut = ShapeSdf::SmoothSubtraction(Box::new(sphere.clone()), Box::new(capsule), 0.0);
    assert!(cut.distance([0.0, 0.0, 0.0]) > 0.0);
    assert!(cut.distance([0.5, 0.0, 0.0]) < 0.0);
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
    let a = generate_class(Family::Blends, 1, 24, 9).unwrap();
    let b = generate_class(Family::Blends, 1, 24, 9).unwrap();
    assert_eq!(a[0].1.positions, b[0].1.positions);
}

#[test]
fn sphere_mesh_encloses_the_analytic_volume() {
    let mesh = ShapeSdf::Sphere {
        centre: [0.0; 3],
        radius: 0.5,
    }
    .mesh(64)
    .unwrap();
    // Signed volume by the divergence theorem: outward-facing triangles give a positive one.
    let volume: f64 = mesh
        .triangles
        .iter()
        .map(|t| {
            let [a, b, c] = t.map(|i| mesh.positions[i as usize].map(f64::from));
            (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                + a[2] * (b[0] * c[1] - b[1] * c[0]))
                / 6.0
        })
        .sum();
    let exact = 4.0 / 3.0 * std::f64::consts::PI * 0.125;
    assert!((volume - exact).abs() / exact < 0.01, "{volume} vs {exact}");
}

#[test]
fn bad_parameters_are_refused() {
    let bad = ShapeSdf::Torus {
        centre: [0.0; 3],
        major: 0.5,
        minor: -0.1,
    };
    assert!(matches!(
        bad.mesh(32),
        Err(ProceduralError::BadParameter(_))
    ));
    let nan = ShapeSdf::Sphere {
        centre: [f64::NAN, 0.0, 0.0],
        radius: 0.5,
    };
    assert!(nan.mesh(32).is_err());
    let too_round = ShapeSdf::RoundedBox {
        centre: [0.0; 3],
        half_extents: [0.5, 0.1, 0.5],
        rounding: 0.2,
    };
    assert!(too_round.validate().is_err());
    let ok = ShapeSdf::Sphere {
        centre: [0.0; 3],
        radius: 0.5,
    };
    assert!(ok.mesh(4).is_err());
    assert!(ok.mesh(100_000).is_err());
}

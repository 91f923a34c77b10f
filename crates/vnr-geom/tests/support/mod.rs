//! Meshes and analytic shapes shared by the vnr-geom tests.

use vnr_formats::mesh::TriangleMesh;
use vnr_geom::procedural::cuboid_mesh;
use vnr_geom::sdf::Sdf;
use vnr_geom::vec3::Vec3;

/// The box `[lo, hi]` as 12 outward-facing triangles: the library's cuboid with each corner
/// moved to `lo` or `hi` exactly (no centre ± half rounding).
pub fn box_mesh(lo: [f32; 3], hi: [f32; 3]) -> TriangleMesh {
    let unit = cuboid_mesh([1.0; 3]);
    let positions = unit
        .positions
        .iter()
        .map(|p| std::array::from_fn(|k| if p[k] > 0.0 { hi[k] } else { lo[k] }))
        .collect();
    TriangleMesh::new(positions, unit.triangles).unwrap()
}

/// The flat square `[lo, hi]²` at z = 0 as two triangles facing +z (a mesh with no inside).
pub fn flat_square(lo: f32, hi: f32) -> TriangleMesh {
    TriangleMesh::new(
        vec![[lo, lo, 0.0], [hi, lo, 0.0], [hi, hi, 0.0], [lo, hi, 0.0]],
        vec![[0, 1, 2], [0, 2, 3]],
    )
    .unwrap()
}

/// The analytic box of half extents `half` centred at the origin: the exact signed distance
/// of `procedural::cuboid_mesh(half)`.
pub fn origin_box(half: [f32; 3]) -> Sdf {
    Sdf::Box {
        center: Vec3::default(),
        half: Vec3::from_array(half.map(f64::from)),
    }
}

/// The analytic torus around the y axis centred at the origin, which
/// `procedural::torus_mesh(major, minor, ..)` tessellates.
pub fn origin_torus(major: f32, minor: f32) -> Sdf {
    Sdf::Torus {
        center: Vec3::default(),
        major: major.into(),
        minor: minor.into(),
    }
}

/// `shape`'s signed distance at the `f32` point `p`, rounded to `f32`.
pub fn distance_at(shape: &Sdf, p: [f32; 3]) -> f32 {
    shape.distance(Vec3::from_array(p.map(f64::from))) as f32
}

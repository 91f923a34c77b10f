//! Meshes shared by the vnr-geom tests.

use vnr_formats::mesh::TriangleMesh;

/// The box `[lo, hi]` as 12 outward-facing triangles.
pub fn box_mesh(lo: [f32; 3], hi: [f32; 3]) -> TriangleMesh {
    let positions = (0..8)
        .map(|c| std::array::from_fn(|k| if (c >> k) & 1 == 1 { hi[k] } else { lo[k] }))
        .collect();
    let quads = [
        [0, 2, 6, 4],
        [1, 5, 7, 3],
        [0, 4, 5, 1],
        [2, 3, 7, 6],
        [0, 1, 3, 2],
        [4, 6, 7, 5],
    ];
    let triangles = quads
        .iter()
        .flat_map(|q| [[q[0], q[2], q[1]], [q[0], q[3], q[2]]])
        .collect();
    TriangleMesh::new(positions, triangles).unwrap()
}

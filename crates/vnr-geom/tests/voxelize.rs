//! Voxeliser: the triangle/box test against polygon clipping, fills of simple shapes, binvox's
//! normalisation, and round trips through marching cubes (generated grids and the binvox
//! fixtures).

use crate::support::box_mesh;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::testing::fixture;
use vnr_geom::marching_cubes::{marching_cubes, pad_grid, DenseField, Inside, MarchingCubesConfig};
use vnr_geom::voxelize::{triangle_overlaps_box, voxelize, Fill, VoxelFrame, VoxelizeError};

/// Sutherland–Hodgman: the triangle clipped by the cube `[c − h, c + h]³` is non-empty.
fn clipped_is_nonempty(tri: &[[f64; 3]; 3], c: [f64; 3], h: f64) -> bool {
    let mut poly: Vec<[f64; 3]> = tri.to_vec();
    for axis in 0..3 {
        for (sign, bound) in [(1.0, c[axis] + h), (-1.0, c[axis] - h)] {
            let keep = |p: &[f64; 3]| sign * (p[axis] - bound) <= 0.0;
            let mut out = Vec::new();
            for i in 0..poly.len() {
                let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
                if keep(&a) {
                    out.push(a);
                }
                if keep(&a) != keep(&b) {
                    let t = (bound - a[axis]) / (b[axis] - a[axis]);
                    out.push(std::array::from_fn(|k| a[k] + t * (b[k] - a[k])));
                }
            }
            poly = out;
            if poly.is_empty() {
                return false;
            }
        }
    }
    true
}

#[test]
fn triangle_box_test_agrees_with_clipping() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut overlaps = 0;
    for _ in 0..20_000 {
        let tri: [[f64; 3]; 3] =
            std::array::from_fn(|_| std::array::from_fn(|_| rng.random_range(-1.5..1.5)));
        let centre = std::array::from_fn(|_| rng.random_range(-0.5..0.5));
        let expected = clipped_is_nonempty(&tri, centre, 0.5);
        assert_eq!(
            triangle_overlaps_box(&tri, centre, 0.5),
            expected,
            "{tri:?} {centre:?}"
        );
        overlaps += usize::from(expected);
    }
    // Both outcomes are exercised.
    assert!(overlaps > 2_000 && overlaps < 18_000, "{overlaps}");
}

/// An axis-aligned box mesh `[lo, hi]`, 12 outward triangles.

#[test]
fn box_fills() {
    let mesh = box_mesh([2.25, 2.25, 1.6], [5.75, 5.75, 6.4]);
    let frame = VoxelFrame::new([8, 8, 8], [0.0; 3], 1.0).unwrap();
    let count = |fill| voxelize(&mesh, &frame, fill).unwrap().occupied_count();
    // Voxels 2..=5 on x and y, 1..=6 on z: 4·4·6 touched; centres inside: z 2..=5.
    assert_eq!(count(Fill::Carved), 4 * 4 * 6);
    assert_eq!(count(Fill::Solid), 4 * 4 * 4);
    assert_eq!(count(Fill::Surface), 4 * 4 * 6 - 2 * 2 * 4);
    // Clipped by the frame: the part outside is dropped, not an error.
    let small = VoxelFrame::new([4, 4, 4], [0.0; 3], 1.0).unwrap();
    let clipped = voxelize(&mesh, &small, Fill::Solid).unwrap();
    assert_eq!(clipped.occupied_count(), 2 * 2 * 2);
}

/// A random blob: a thresholded sum of a few Gaussians on a grid.
fn blob(dims: [usize; 3], rng: &mut impl Rng) -> Vec<f32> {
    let centres: Vec<[f64; 4]> = (0..4)
        .map(|_| {
            [
                rng.random_range(0.3..0.7) * dims[0] as f64,
                rng.random_range(0.3..0.7) * dims[1] as f64,
                rng.random_range(0.3..0.7) * dims[2] as f64,
                rng.random_range(2.0..4.0),
            ]
        })
        .collect();
    let mut values = Vec::new();
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = [i as f64, j as f64, k as f64];
                let s: f64 = centres
                    .iter()
                    .map(|c| {
                        let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                        (-d2 / (2.0 * c[3] * c[3])).exp()
                    })
                    .sum();
                // Empty on the border, so the surface stays inside the frame.
                let border = (0..3).any(|a| p[a] == 0.0 || p[a] as usize + 1 == dims[a]);
                let occupied = !border && s > 0.5 + 0.1 * rng.random::<f64>();
                values.push(f32::from(u8::from(occupied)));
            }
        }
    }
    values
}

/// Marching cubes at 0.5 on an occupancy grid in `frame`, closed by padding.
fn mesh_occupancy(values: &[f32], frame: &VoxelFrame) -> TriangleMesh {
    let (padded, dims) = pad_grid(values, frame.dims, 1, 0.0).unwrap();
    let field = DenseField {
        values: &padded,
        dims,
        origin: frame.voxel_centre([0, 0, 0]).map(|c| c - frame.voxel_size),
        voxel_size: [frame.voxel_size; 3],
    };
    let config = MarchingCubesConfig {
        iso: 0.5,
        inside: Inside::Above,
    };
    marching_cubes(&field, &config).unwrap()
}

#[test]
fn solid_fill_inverts_marching_cubes_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for trial in 0..4 {
        let frame = VoxelFrame::new(
            [18 + trial, 16, 20 - trial],
            [-1.5, 0.25, 3.0 * trial as f64],
            0.37,
        )
        .unwrap();
        let values = blob(frame.dims, &mut rng);
        let mesh = mesh_occupancy(&values, &frame);
        let back = voxelize(&mesh, &frame, Fill::Solid).unwrap();
        let expected: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        assert_eq!(back.values, expected, "trial {trial}");
        // Carving adds the voxels the surface touches outside; it never loses any.
        let carved = voxelize(&mesh, &frame, Fill::Carved).unwrap();
        assert!(carved.values.iter().zip(&expected).all(|(&c, &e)| c >= e));
    }
}

#[test]
fn binvox_normalisation_fits_the_bounding_box() {
    let mesh = box_mesh([-1.0, 0.5, 2.0], [3.0, 1.5, 2.5]);
    let frame = VoxelFrame::fit_binvox(&mesh, 32).unwrap();
    assert_eq!(frame.dims, [32; 3]);
    assert_eq!(frame.min_corner, [-1.0, 0.5, 2.0]);
    assert!((frame.voxel_size - 4.0 / 32.0).abs() < 1e-12);
    let occupancy = voxelize(&mesh, &frame, Fill::Solid).unwrap();
    let grid = occupancy.to_binvox().unwrap();
    assert_eq!(grid.translate(), [-1.0, 0.5, 2.0]);
    assert_eq!(grid.scale(), 4.0);
    // 32 voxels along x, 8 along y, 4 along z.
    assert_eq!(grid.occupied_count(), 32 * 8 * 4);
    assert_eq!(VoxelFrame::of_binvox(&grid).unwrap(), frame);
    let fog = occupancy.to_fog_vdb("density").unwrap();
    assert_eq!(fog.active_voxel_count(), 32 * 8 * 4);
    let centre = fog.transform.index_to_world([0.0; 3]);
    let expected = frame.voxel_centre([0, 0, 0]);
    assert!((0..3).all(|k| (centre[k] - expected[k]).abs() < 1e-12));
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(matches!(
        VoxelFrame::fit_binvox(&TriangleMesh::default(), 16),
        Err(VoxelizeError::NoExtent)
    ));
    let point = TriangleMesh::new(vec![[1.0; 3]; 3], vec![[0, 1, 2]]).unwrap();
    assert!(matches!(
        VoxelFrame::fit_binvox(&point, 16),
        Err(VoxelizeError::NoExtent)
    ));
    let mesh = box_mesh([0.0; 3], [1.0; 3]);
    assert!(matches!(
        VoxelFrame::fit_binvox(&mesh, 0),
        Err(VoxelizeError::InvalidDims { .. })
    ));
    assert!(VoxelFrame::fit_binvox(&mesh, 1 << 20).is_err());
    assert!(VoxelFrame::new([4; 3], [0.0; 3], -1.0).is_err());
    assert!(VoxelFrame::new([4; 3], [f64::NAN, 0.0, 0.0], 1.0).is_err());
}

/// The shared binvox fixtures, meshed by marching cubes (occupancy at 0.5) and voxelised back in
/// the same frame: the solid fill gives the voxel count back within 1 %.
#[test]
fn binvox_fixtures_round_trip_through_marching_cubes() {
    for (name, count) in [("bunny", 57_835), ("chair", 5_277), ("suzanne", 30_270)] {
        let Some(path) = fixture(&format!("binvox/{name}.binvox")) else {
            return;
        };
        let grid = BinvoxGrid::read(&path).unwrap();
        assert_eq!(grid.occupied_count(), count);
        let frame = VoxelFrame::of_binvox(&grid).unwrap();
        let values: Vec<f32> = grid.values().iter().map(|&v| f32::from(v)).collect();
        let mesh = mesh_occupancy(&values, &frame);
        assert_eq!(mesh.boundary_edge_count(), 0, "{name}");
        let back = voxelize(&mesh, &frame, Fill::Solid).unwrap();
        let carved = voxelize(&mesh, &frame, Fill::Carved).unwrap();
        let got = back.occupied_count();
        eprintln!(
            "{name}: {count} voxels, solid round trip {got}, carved {}, {} triangles",
            carved.occupied_count(),
            mesh.triangles.len()
        );
        assert!(
            (got as f64 / count as f64 - 1.0).abs() <= 0.01,
            "{name}: {got} vs {count}"
        );
    }
}

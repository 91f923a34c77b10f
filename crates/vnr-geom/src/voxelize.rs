//! Mesh → voxel occupancy: surface voxels by exact triangle/box overlap, solid voxels by ray
//! parity at voxel centres or by carving from the border, written as binvox or VDB.
//!
//! # Frame
//! A [`VoxelFrame`] is binvox's: voxel `(i, j, k)` is the cube
//! `min_corner + voxel_size · [i, i + 1] × [j, j + 1] × [k, k + 1]`, so its centre is
//! `translate + scale · (index + 0.5) / d` in binvox's terms (`translate = min_corner`,
//! `scale = voxel_size · max(dims)`). [`VoxelFrame::fit_binvox`] normalises the way binvox does:
//! the mesh's bounding box minimum becomes `translate` and its largest side becomes `scale`,
//! with no margin and no centring of the shorter sides (binvox's `suzanne.binvox` has
//! `translate = bbox min`, `scale = 2.73438 =` Suzanne's width), so the mesh touches the grid's
//! low faces on every axis and its high face on its longest axis.
//!
//! # Fills
//! * [`Fill::Surface`]: every voxel whose closed cube intersects a triangle (separating-axis test
//!   on the 13 axes of Akenine-Möller: 3 box normals, the triangle normal, 9 edge cross
//!   products). Touching counts, so a triangle lying in a voxel face marks both voxels.
//! * [`Fill::Solid`]: voxels whose **centre** is inside the mesh, by the parity of crossings of a
//!   ray along +z through each column of centres. Points on shared triangle edges and vertices
//!   are assigned to exactly one triangle by a top-left rule on canonical edge orientation, so a
//!   ray through a vertex counts once. Needs a closed mesh; orientation does not matter. This is
//!   the exact inverse of marching cubes at iso 0.5 on an occupancy grid (the surface passes
//!   between occupied and empty centres).
//! * [`Fill::Carved`]: binvox's look: the surface voxels plus every voxel that the outside
//!   cannot reach through non-surface voxels (6-connected flood fill from the grid's border).
//!   Robust to small holes and inverted triangles; one surface layer thicker than `Solid`.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::vec3::Vec3;
use rayon::prelude::*;
use vnr_formats::binvox::{BinvoxError, BinvoxGrid, BinvoxVersion, MAX_VOXELS};
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::vdb::{DenseSamples, Grid, Transform, VdbError};

/// Errors from voxelisation.
#[derive(Debug, thiserror::Error)]
pub enum VoxelizeError {
    /// The mesh has no vertices, or all its vertices coincide, so it has no extent to fit.
    #[error("the mesh has no extent to voxelise (empty, or all vertices at one point)")]
    NoExtent,
    /// Resolution zero, or a grid over the voxel limit.
    #[error("resolution {dims:?} is invalid: every side must be at least 1 and the grid at most {MAX_VOXELS} voxels")]
    InvalidDims {
        /// The requested extents.
        dims: [usize; 3],
    },
    /// A frame with a non-finite corner or a voxel size that is not positive and finite.
    #[error("voxel frame corner {min_corner:?}, size {voxel_size} is invalid")]
    InvalidFrame {
        /// Requested corner.
        min_corner: [f64; 3],
        /// Requested voxel size.
        voxel_size: f64,
    },
    /// Building the binvox grid failed.
    #[error(transparent)]
    Binvox(#[from] BinvoxError),
    /// Building the VDB grid failed.
    #[error(transparent)]
    Vdb(#[from] VdbError),
}

/// Where a voxel grid sits: `dims` voxels `[X, Y, Z]` of side `voxel_size` from `min_corner`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoxelFrame {
    /// Extents `[X, Y, Z]`.
    pub dims: [usize; 3],
    /// World position of the low corner of voxel `(0, 0, 0)` (binvox's `translate`).
    pub min_corner: [f64; 3],
    /// World edge length of a voxel.
    pub voxel_size: f64,
}

impl VoxelFrame {
    /// A checked frame.
    pub fn new(
        dims: [usize; 3],
        min_corner: [f64; 3],
        voxel_size: f64,
    ) -> Result<Self, VoxelizeError> {
        let frame = Self {
            dims,
            min_corner,
            voxel_size,
        };
        frame.voxel_count()?;
        if !(voxel_size > 0.0 && voxel_size.is_finite() && min_corner.iter().all(|c| c.is_finite()))
        {
            return Err(VoxelizeError::InvalidFrame {
                min_corner,
                voxel_size,
            });
        }
        Ok(frame)
    }

    /// binvox's normalisation of `mesh` into a `resolution³` grid (see the [module docs](self)).
    pub fn fit_binvox(mesh: &TriangleMesh, resolution: usize) -> Result<Self, VoxelizeError> {
        let (lo, hi) = mesh.bounding_box().ok_or(VoxelizeError::NoExtent)?;
        let extent = (0..3)
            .map(|k| f64::from(hi[k]) - f64::from(lo[k]))
            .fold(0.0, f64::max);
        if extent <= 0.0 {
            return Err(VoxelizeError::NoExtent);
        }
        Self::new(
            [resolution; 3],
            lo.map(f64::from),
            extent / resolution.max(1) as f64,
        )
    }

    /// The frame of an existing binvox grid (its dims, `translate` and voxel size).
    pub fn of_binvox(grid: &BinvoxGrid) -> Result<Self, VoxelizeError> {
        let max_dim = grid.dims().into_iter().max().unwrap_or(1).max(1);
        Self::new(
            grid.dims(),
            grid.translate().map(f64::from),
            f64::from(grid.scale()) / max_dim as f64,
        )
    }

    /// `X·Y·Z`, checked against binvox's limit.
    pub fn voxel_count(&self) -> Result<usize, VoxelizeError> {
        let [nx, ny, nz] = self.dims;
        nx.checked_mul(ny)
            .and_then(|n| n.checked_mul(nz))
            .filter(|&n| n > 0 && n <= MAX_VOXELS)
            .ok_or(VoxelizeError::InvalidDims { dims: self.dims })
    }

    /// World position of the centre of voxel `(i, j, k)`.
    pub fn voxel_centre(&self, ijk: [usize; 3]) -> [f64; 3] {
        std::array::from_fn(|k| self.min_corner[k] + (ijk[k] as f64 + 0.5) * self.voxel_size)
    }

    /// A world point in grid units (voxel `i` spans `[i, i + 1]`).
    fn grid_coordinates(&self, p: [f32; 3]) -> [f64; 3] {
        std::array::from_fn(|k| (f64::from(p[k]) - self.min_corner[k]) / self.voxel_size)
    }
}

/// Which voxels a mesh occupies; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// Voxels a triangle touches.
    Surface,
    /// Voxels whose centre is inside the (closed) mesh, by ray parity.
    #[default]
    Solid,
    /// Surface voxels plus everything the grid's border cannot reach (binvox-style carving).
    Carved,
}

/// A voxelised mesh: 0/1 values `[X, Y, Z]` (Z fastest) in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Occupancy {
    /// Where the grid sits.
    pub frame: VoxelFrame,
    /// `X·Y·Z` values, 1 = occupied, `values[(i·Y + j)·Z + k]`.
    pub values: Vec<u8>,
}

impl Occupancy {
    /// Number of occupied voxels.
    pub fn occupied_count(&self) -> usize {
        self.values.iter().filter(|&&v| v != 0).count()
    }

    /// A `#binvox 1` grid with the frame as `translate`/`scale`.
    pub fn to_binvox(&self) -> Result<BinvoxGrid, VoxelizeError> {
        let max_dim = self.frame.dims.into_iter().max().unwrap_or(1) as f64;
        Ok(
            BinvoxGrid::new(self.frame.dims, self.values.clone(), BinvoxVersion::V1)?
                .with_transform(
                    self.frame.min_corner.map(|c| c as f32),
                    (self.frame.voxel_size * max_dim) as f32,
                )?,
        )
    }

    /// A VDB fog volume: occupied voxels active with value 1, the rest background 0; index
    /// `(0, 0, 0)` is voxel `(0, 0, 0)`'s centre.
    pub fn to_fog_vdb(&self, name: &str) -> Result<Grid<f32>, VoxelizeError> {
        let values: Vec<f32> = self.values.iter().map(|&v| f32::from(v)).collect();
        let transform = Transform::uniform_scale_translate(
            self.frame.voxel_size,
            self.frame.voxel_centre([0, 0, 0]),
        )?;
        let samples = DenseSamples {
            values: &values,
            dims: self.frame.dims,
            origin: [0; 3],
        };
        Ok(Grid::fog_from_dense(name, samples, transform, 0.0)?)
    }
}

/// Voxelises `mesh` in `frame` (see [`Fill`]); parts of the mesh outside the frame are clipped.
pub fn voxelize(
    mesh: &TriangleMesh,
    frame: &VoxelFrame,
    fill: Fill,
) -> Result<Occupancy, VoxelizeError> {
    let frame = VoxelFrame::new(frame.dims, frame.min_corner, frame.voxel_size)?;
    let triangles: Vec<[[f64; 3]; 3]> = mesh
        .triangles
        .iter()
        .map(|t| {
            t.map(|i| {
                frame.grid_coordinates(mesh.positions.get(i as usize).copied().unwrap_or_default())
            })
        })
        .collect();
    let values = match fill {
        Fill::Surface => surface_voxels(&triangles, frame.dims),
        Fill::Solid => parity_voxels(&triangles, frame.dims),
        Fill::Carved => carve(surface_voxels(&triangles, frame.dims), frame.dims),
    };
    Ok(Occupancy { frame, values })
}

// ---------------------------------------------------------------------------------------------
// Surface voxels.
// ---------------------------------------------------------------------------------------------

/// Voxel index range `[lo, hi]` along one axis of the closed cubes an interval `[a, b]` (grid
/// units) touches, clipped to `0..n`; `None` if outside.
fn touched_range(a: f64, b: f64, n: usize) -> Option<(usize, usize)> {
    // Voxel i spans [i, i + 1]: a value on a face touches both neighbours.
    let lo = (a.ceil() - 1.0).max(0.0);
    let hi = b.floor().min(n as f64 - 1.0);
    (lo <= hi).then_some((lo as usize, hi as usize))
}

fn surface_voxels(triangles: &[[[f64; 3]; 3]], dims: [usize; 3]) -> Vec<u8> {
    let [_, ny, nz] = dims;
    let marks: Vec<AtomicBool> = (0..dims.iter().product::<usize>())
        .map(|_| AtomicBool::new(false))
        .collect();
    triangles.par_iter().for_each(|tri| {
        let range = |k: usize| {
            let lo = tri.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
            let hi = tri.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
            touched_range(lo, hi, dims[k])
        };
        let (Some((x0, x1)), Some((y0, y1)), Some((z0, z1))) = (range(0), range(1), range(2))
        else {
            return;
        };
        for x in x0..=x1 {
            for y in y0..=y1 {
                for z in z0..=z1 {
                    let centre = [x, y, z].map(|c| c as f64 + 0.5);
                    if triangle_overlaps_box(tri, centre, 0.5) {
                        marks[(x * ny + y) * nz + z].store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    marks
        .into_iter()
        .map(|m| u8::from(m.into_inner()))
        .collect()
}

/// Whether a triangle and the closed cube of half side `half` around `centre` intersect:
/// separating-axis theorem on the 13 candidate axes (touching is overlap).
pub fn triangle_overlaps_box(tri: &[[f64; 3]; 3], centre: [f64; 3], half: f64) -> bool {
    let centre = Vec3::from_array(centre);
    let v = tri.map(|p| Vec3::from_array(p) - centre);
    let separated_on = |axis: Vec3| {
        let p = v.map(|q| q.dot(axis));
        let r = half * (axis.x.abs() + axis.y.abs() + axis.z.abs());
        let lo = p[0].min(p[1]).min(p[2]);
        let hi = p[0].max(p[1]).max(p[2]);
        lo > r || hi < -r
    };
    // Box normals first (the triangle's bounding box against the cube): the cheapest rejection.
    let units = [
        Vec3::new(1.0, 0.0, 0.0),
        Vec3::new(0.0, 1.0, 0.0),
        Vec3::new(0.0, 0.0, 1.0),
    ];
    if units.iter().any(|&u| separated_on(u)) {
        return false;
    }
    let edges = [v[1] - v[0], v[2] - v[1], v[0] - v[2]];
    if separated_on(edges[0].cross(edges[1])) {
        return false;
    }
    !edges
        .iter()
        .any(|e| units.iter().any(|u| separated_on(u.cross(*e))))
}

// ---------------------------------------------------------------------------------------------
// Solid voxels by parity.
// ---------------------------------------------------------------------------------------------

/// `(b − a) × (p − a)` in the xy plane, computed with the edge in a canonical order so that the
/// two triangles sharing an edge get exactly opposite values.
fn edge_function(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> f64 {
    let (from, to, sign) = if (a[0], a[1]) <= (b[0], b[1]) {
        (a, b, 1.0)
    } else {
        (b, a, -1.0)
    };
    sign * ((to[0] - from[0]) * (p[1] - from[1]) - (to[1] - from[1]) * (p[0] - from[0]))
}

/// Top-left rule for a counter-clockwise triangle: a point exactly on edge `a → b` belongs to
/// this triangle only for one of the edge's two directions.
fn owns_edge(a: [f64; 2], b: [f64; 2]) -> bool {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    dy < 0.0 || (dy == 0.0 && dx > 0.0)
}

/// Crossings `(column, z)` of the +z rays through the centres of the columns `(x, y)`.
fn column_crossings(tri: &[[f64; 3]; 3], dims: [usize; 3]) -> Vec<(usize, f64)> {
    let mut p = *tri;
    let flat = p.map(|q| [q[0], q[1]]);
    let area = edge_function(flat[0], flat[1], flat[2]);
    if area == 0.0 || !area.is_finite() {
        // Seen edge-on from the ray direction: the neighbouring triangles carry the crossing.
        return Vec::new();
    }
    if area < 0.0 {
        p.swap(1, 2);
    }
    let xy = p.map(|q| [q[0], q[1]]);
    let centre_range = |k: usize| {
        let lo = xy.iter().map(|q| q[k]).fold(f64::INFINITY, f64::min);
        let hi = xy.iter().map(|q| q[k]).fold(f64::NEG_INFINITY, f64::max);
        // Columns whose centre c + 0.5 lies in [lo, hi].
        let first = (lo - 0.5).ceil().max(0.0);
        let last = (hi - 0.5).floor().min(dims[k] as f64 - 1.0);
        (first <= last).then_some((first as usize, last as usize))
    };
    let (Some((x0, x1)), Some((y0, y1))) = (centre_range(0), centre_range(1)) else {
        return Vec::new();
    };
    let mut hits = Vec::new();
    for x in x0..=x1 {
        for y in y0..=y1 {
            let q = [x as f64 + 0.5, y as f64 + 0.5];
            let w = [
                edge_function(xy[1], xy[2], q),
                edge_function(xy[2], xy[0], q),
                edge_function(xy[0], xy[1], q),
            ];
            let edges = [(xy[1], xy[2]), (xy[2], xy[0]), (xy[0], xy[1])];
            let inside = w
                .iter()
                .zip(edges)
                .all(|(&w, (a, b))| w > 0.0 || (w == 0.0 && owns_edge(a, b)));
            if inside {
                let z = (w[0] * p[0][2] + w[1] * p[1][2] + w[2] * p[2][2]) / (w[0] + w[1] + w[2]);
                hits.push((x * dims[1] + y, z));
            }
        }
    }
    hits
}

fn parity_voxels(triangles: &[[[f64; 3]; 3]], dims: [usize; 3]) -> Vec<u8> {
    let nz = dims[2];
    let mut hits: Vec<(usize, f64)> = triangles
        .par_iter()
        .flat_map_iter(|t| column_crossings(t, dims))
        .collect();
    hits.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut values = vec![0u8; dims.iter().product()];
    for column in hits.chunk_by(|a, b| a.0 == b.0) {
        let base = column[0].0 * nz;
        // Between the (2m)-th and (2m+1)-th crossing the ray is inside; a centre exactly on a
        // crossing is outside.
        for pair in column.chunks_exact(2) {
            let first = ((pair[0].1 - 0.5).floor() + 1.0).max(0.0);
            let last = (pair[1].1 - 0.5).ceil().min(nz as f64);
            if first < last {
                values[base + first as usize..base + last as usize].fill(1);
            }
        }
    }
    values
}

// ---------------------------------------------------------------------------------------------
// Carving.
// ---------------------------------------------------------------------------------------------

/// Surface voxels plus every voxel not reachable from the border through non-surface voxels.
fn carve(surface: Vec<u8>, dims: [usize; 3]) -> Vec<u8> {
    let [nx, ny, nz] = dims;
    let index = |x: usize, y: usize, z: usize| (x * ny + y) * nz + z;
    let mut outside = vec![false; surface.len()];
    let mut stack = Vec::new();
    let visit = |i: usize, outside: &mut [bool], stack: &mut Vec<usize>| {
        if surface[i] == 0 && !outside[i] {
            outside[i] = true;
            stack.push(i);
        }
    };
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                if x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz {
                    visit(index(x, y, z), &mut outside, &mut stack);
                }
            }
        }
    }
    // Each voxel is pushed at most once, so this ends after at most X·Y·Z steps.
    while let Some(i) = stack.pop() {
        let (x, y, z) = (i / (ny * nz), (i / nz) % ny, i % nz);
        if x > 0 {
            visit(i - ny * nz, &mut outside, &mut stack);
        }
        if x + 1 < nx {
            visit(i + ny * nz, &mut outside, &mut stack);
        }
        if y > 0 {
            visit(i - nz, &mut outside, &mut stack);
        }
        if y + 1 < ny {
            visit(i + nz, &mut outside, &mut stack);
        }
        if z > 0 {
            visit(i - 1, &mut outside, &mut stack);
        }
        if z + 1 < nz {
            visit(i + 1, &mut outside, &mut stack);
        }
    }
    outside.iter().map(|&o| u8::from(!o)).collect()
}

//! Watertight marching cubes on dense grids `[X, Y, Z]` and, sparsely, on OpenVDB float grids.
//!
//! # Conventions
//! * Grid point `(i, j, k)` of a dense grid sits at `origin + voxel_size ⊙ (i, j, k)` (voxel
//!   centres, as [`vnr_formats::binvox::BinvoxGrid::world_position`] and VDB index space place
//!   them); a VDB grid's points go through its own transform.
//! * A point is *inside* when `value <= iso` ([`Inside::Below`], signed distances) or
//!   `value > iso` ([`Inside::Above`], densities and occupancy): a value equal to `iso` counts
//!   as below, as in scikit-image, so both choices split the grid the same way and differ only in
//!   orientation. Triangles are counter-clockwise seen from outside, so normals point out of the
//!   inside region.
//! * One vertex per grid edge whose end points differ in insideness, placed by linear
//!   interpolation of the values (as scikit-image's `marching_cubes`), shared by every cell
//!   around that edge: the output is watertight wherever the surface does not leave the grid
//!   (pad the grid with [`pad_grid`] to close it there).
//!
//! # The case table
//! The 256-case table is built when first used, not pasted: for every corner configuration the
//! iso-contour is traced on each of the cube's six faces, one segment per pair of sign-changing
//! face edges. Ambiguous faces (inside corners on one diagonal, outside on the other) always
//! *separate the inside corners*: the rule depends on the face's four corners only, so both
//! cells sharing a face trace the same segments and no crack can open between them. Every
//! crossing edge belongs to two faces, so the segments chain into closed loops on the cube's
//! surface; each segment is directed so that the inside lies on its right seen from outside the
//! cube, which orients every loop the same way, and each loop is fanned into triangles.
//!
//! # Threads
//! Dense grids are cut into slabs of x-planes processed in parallel (rayon); vertices are
//! numbered plane by plane in a fixed order, so the output does not depend on the thread count.
//! VDB grids are processed leaf by leaf, only the cells that touch a leaf, never densified.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::vec3::Vec3;
use rayon::prelude::*;
use vnr_formats::mesh::{MeshError, TriangleMesh};
use vnr_formats::vdb::{Grid, Leaf};

/// Most values a grid built here ([`pad_grid`]) may hold: 2³⁴ (64 GiB of `f32`), room for
/// the largest dense SDF grid (2048³) with a few layers of padding.
pub const MAX_GRID_VOXELS: u64 = 1 << 34;

/// Which side of the iso value is the inside of the surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inside {
    /// Inside where `value <= iso`: signed distance fields (negative inside), VDB level sets.
    #[default]
    Below,
    /// Inside where `value > iso`: densities, fog volumes, occupancy.
    Above,
}

/// Settings of [`marching_cubes`] and [`marching_cubes_vdb`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarchingCubesConfig {
    /// The iso value the surface passes through.
    pub iso: f32,
    /// Which side of `iso` is inside (decides the triangles' orientation).
    pub inside: Inside,
}

impl Default for MarchingCubesConfig {
    /// The zero level set of a signed distance field.
    fn default() -> Self {
        Self {
            iso: 0.0,
            inside: Inside::Below,
        }
    }
}

impl MarchingCubesConfig {
    /// The grid is split into `value > iso` and the rest (as scikit-image splits it, so values
    /// equal to `iso` are below); `inside` picks the side.
    fn is_inside(&self, value: f32) -> bool {
        (value > self.iso) == (self.inside == Inside::Above)
    }
}

/// A dense scalar grid `[X, Y, Z]` (Z fastest) placed in the world.
#[derive(Debug, Clone, Copy)]
pub struct DenseField<'a> {
    /// `X·Y·Z` values, `values[(i·Y + j)·Z + k]` at grid point `(i, j, k)`.
    pub values: &'a [f32],
    /// Extents `[X, Y, Z]`.
    pub dims: [usize; 3],
    /// World position of grid point `(0, 0, 0)`.
    pub origin: [f64; 3],
    /// World distance between neighbouring grid points along x, y, z (scikit-image's `spacing`).
    pub voxel_size: [f64; 3],
}

/// Errors from marching cubes.
#[derive(Debug, thiserror::Error)]
pub enum MarchingCubesError {
    /// The value slice does not hold `X·Y·Z` values (or that product overflows).
    #[error("a grid of dims {dims:?} needs X·Y·Z values, got {len}")]
    LengthMismatch {
        /// The grid's extents.
        dims: [usize; 3],
        /// Number of values given.
        len: usize,
    },
    /// A voxel size is zero, negative or not finite.
    #[error("voxel size {0:?} must be finite and positive")]
    InvalidVoxelSize([f64; 3]),
    /// The origin is not finite.
    #[error("grid origin {0:?} must be finite")]
    InvalidOrigin([f64; 3]),
    /// The iso value is not finite.
    #[error("iso value {0} must be finite")]
    InvalidIso(f32),
    /// A value the surface needs is NaN, so the crossing cannot be placed.
    #[error("the value at grid point {0:?} is NaN")]
    NanValue([i64; 3]),
    /// More vertices than `u32` triangle indices can address.
    #[error("the surface has {0} vertices, more than u32 indices can address")]
    TooManyVertices(usize),
    /// A grid to be built would hold more than [`MAX_GRID_VOXELS`] values.
    #[error("a grid of dims {dims:?} (padded by {layers} layers) would hold more than {MAX_GRID_VOXELS} values")]
    GridTooLarge {
        /// The grid's extents before padding.
        dims: [usize; 3],
        /// Layers of padding asked for.
        layers: usize,
    },
    /// The mesh failed validation (a vertex position overflowed `f32`).
    #[error(transparent)]
    Mesh(#[from] MeshError),
}

// ---------------------------------------------------------------------------------------------
// Cube geometry and the generated case table.
// ---------------------------------------------------------------------------------------------

/// Offset of cube corner `c` (bit 0: x, bit 1: y, bit 2: z).
fn corner_offset(corner: usize) -> [usize; 3] {
    [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1]
}

/// The two axes other than `axis`, in increasing order.
fn other_axes(axis: usize) -> [usize; 2] {
    match axis {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    }
}

/// Cube edge `e = 4·axis + k` runs along `axis` from the corner whose other two coordinates are
/// the bits of `k` (lower axis first). Returns (start corner, axis).
fn edge_start(edge: usize) -> (usize, usize) {
    let axis = edge / 4;
    let [u, v] = other_axes(axis);
    let k = edge % 4;
    ((k & 1) << u | ((k >> 1) & 1) << v, axis)
}

/// The cube edge joining two corners that differ in one bit.
fn edge_between(a: usize, b: usize) -> usize {
    let start = a.min(b);
    let axis = (a ^ b).trailing_zeros() as usize;
    let [u, v] = other_axes(axis);
    4 * axis + ((start >> u) & 1) + 2 * ((start >> v) & 1)
}

/// Midpoint of cube edge `e` in the unit cube.
fn edge_midpoint(edge: usize) -> [f64; 3] {
    let (start, axis) = edge_start(edge);
    let mut p = corner_offset(start).map(|c| c as f64);
    p[axis] = 0.5;
    p
}

/// Triangles of every case as cube-edge triples, `triangles[offsets[c]..offsets[c + 1]]`.
#[derive(Debug)]
struct CaseTable {
    offsets: [usize; 257],
    triangles: Vec<[u8; 3]>,
}

impl CaseTable {
    fn case(&self, case: usize) -> &[[u8; 3]] {
        &self.triangles[self.offsets[case]..self.offsets[case + 1]]
    }
}

fn case_table() -> &'static CaseTable {
    static TABLE: OnceLock<CaseTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut offsets = [0; 257];
        let mut triangles = Vec::new();
        for case in 0..256 {
            for lp in case_loops(case) {
                triangles.extend((1..lp.len() - 1).map(|i| [lp[0], lp[i], lp[i + 1]]));
            }
            offsets[case + 1] = triangles.len();
        }
        CaseTable { offsets, triangles }
    })
}

/// The directed contour segments (from edge, to edge) of one corner configuration on the six
/// cube faces, each with the inside on its right seen from outside the cube.
fn case_segments(case: usize) -> Vec<(u8, u8)> {
    let inside = |corner: usize| (case >> corner) & 1 == 1;
    let mut segments = Vec::new();
    for axis in 0..3 {
        let [u, v] = other_axes(axis);
        for side in 0..2 {
            let cycle: [usize; 4] =
                [(0, 0), (1, 0), (1, 1), (0, 1)].map(|(bu, bv)| side << axis | bu << u | bv << v);
            let face_edge = |i: usize| edge_between(cycle[i], cycle[(i + 1) % 4]);
            let crossings: Vec<usize> = (0..4)
                .filter(|&i| inside(cycle[i]) != inside(cycle[(i + 1) % 4]))
                .map(face_edge)
                .collect();
            let pairs = match crossings.as_slice() {
                [a, b] => vec![(*a, *b)],
                // Ambiguous face: cut off each inside corner on its own.
                [e0, e1, e2, e3] if inside(cycle[0]) => vec![(*e3, *e0), (*e1, *e2)],
                [e0, e1, e2, e3] => vec![(*e0, *e1), (*e2, *e3)],
                _ => Vec::new(),
            };
            let mut normal = [0.0; 3];
            normal[axis] = if side == 1 { 1.0 } else { -1.0 };
            let normal = Vec3::from_array(normal);
            for (a, b) in pairs {
                let (pa, pb) = (
                    Vec3::from_array(edge_midpoint(a)),
                    Vec3::from_array(edge_midpoint(b)),
                );
                let left = normal.cross(pb - pa);
                // Edge `a` crosses the segment at its start, so its end points lie on opposite
                // sides; `left` = normal × direction must point away from its inside end.
                let (start, edge_axis) = edge_start(a);
                let inside_end = if inside(start) {
                    start
                } else {
                    start | 1 << edge_axis
                };
                let to_inside = Vec3::from_array(corner_offset(inside_end).map(|x| x as f64)) - pa;
                let forward = left.dot(to_inside) < 0.0;
                let (from, to) = if forward { (a, b) } else { (b, a) };
                segments.push((from as u8, to as u8));
            }
        }
    }
    segments
}

/// The closed, consistently directed contour loops of one corner configuration.
fn case_loops(case: usize) -> Vec<Vec<u8>> {
    let segments = case_segments(case);
    let mut next = [u8::MAX; 12];
    for &(from, to) in &segments {
        next[usize::from(from)] = to;
    }
    let mut used = [false; 12];
    let mut loops = Vec::new();
    for &(start, _) in &segments {
        if used[usize::from(start)] {
            continue;
        }
        let mut lp = Vec::new();
        let mut edge = start;
        // A loop visits each of the 12 edges at most once.
        while !used[usize::from(edge)] && lp.len() < 12 {
            used[usize::from(edge)] = true;
            lp.push(edge);
            edge = next[usize::from(edge)];
            if edge == u8::MAX {
                break;
            }
        }
        loops.push(lp);
    }
    loops
}

/// The case index of eight corner insideness flags (bit `c` = corner `c`).
fn case_index(inside: [bool; 8]) -> usize {
    inside
        .iter()
        .enumerate()
        .fold(0, |acc, (c, &i)| acc | usize::from(i) << c)
}

/// Where along an edge from value `a` to `b` the iso value lies, in `[0, 1]`.
fn crossing(a: f32, b: f32, iso: f32) -> f64 {
    let t = (f64::from(iso) - f64::from(a)) / (f64::from(b) - f64::from(a));
    if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    }
}

// ---------------------------------------------------------------------------------------------
// Dense grids.
// ---------------------------------------------------------------------------------------------

impl DenseField<'_> {
    fn check(&self) -> Result<(), MarchingCubesError> {
        let expected = self.dims[0]
            .checked_mul(self.dims[1])
            .and_then(|n| n.checked_mul(self.dims[2]));
        if expected != Some(self.values.len()) {
            return Err(MarchingCubesError::LengthMismatch {
                dims: self.dims,
                len: self.values.len(),
            });
        }
        if !self.voxel_size.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(MarchingCubesError::InvalidVoxelSize(self.voxel_size));
        }
        if !self.origin.iter().all(|o| o.is_finite()) {
            return Err(MarchingCubesError::InvalidOrigin(self.origin));
        }
        if let Some(n) = self.values.par_iter().position_any(|v| v.is_nan()) {
            let [_, ny, nz] = self.dims;
            return Err(MarchingCubesError::NanValue(
                [n / (ny * nz), (n / nz) % ny, n % nz].map(|c| c as i64),
            ));
        }
        Ok(())
    }
}

/// Extracts the `config.iso` surface of a dense grid.
///
/// Returns an empty mesh when the grid has fewer than two points along an axis or no crossing.
/// Vertices are in world units (`origin` and `voxel_size` applied), triangles outward-facing
/// (see the [module docs](self)).
pub fn marching_cubes(
    field: &DenseField<'_>,
    config: &MarchingCubesConfig,
) -> Result<TriangleMesh, MarchingCubesError> {
    if !config.iso.is_finite() {
        return Err(MarchingCubesError::InvalidIso(config.iso));
    }
    field.check()?;
    let [nx, ny, nz] = field.dims;
    if nx < 2 || ny < 2 || nz < 2 {
        return Ok(TriangleMesh::default());
    }
    let planes = Planes { field, config };

    // Pass 1: how many vertices each x-plane's edges hold, to number them plane by plane.
    let counts: Vec<usize> = (0..nx)
        .into_par_iter()
        .map(|x| {
            let next = (x + 1 < nx).then(|| planes.mask(x + 1));
            count_crossings(field.dims, &planes.mask(x), next.as_deref())
        })
        .collect();
    let mut first_vertex = Vec::with_capacity(nx + 1);
    let mut total = 0usize;
    for &count in &counts {
        first_vertex.push(total);
        total += count;
    }
    if u32::try_from(total).is_err() {
        return Err(MarchingCubesError::TooManyVertices(total));
    }

    // Pass 2, slab by slab: vertex ids and positions of the slab's planes, then its cells.
    let cell_planes = nx - 1;
    let slab = cell_planes
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    let table = case_table();
    let edge_lookup: [(usize, usize, usize); 12] = std::array::from_fn(|e| {
        let (start, axis) = edge_start(e);
        let [dx, dy, dz] = corner_offset(start);
        (dx, dy * nz + dz, axis)
    });
    let slabs: Vec<SlabPart> = (0..cell_planes)
        .step_by(slab)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|x0| {
            let x1 = (x0 + slab).min(cell_planes);
            let mut positions = Vec::new();
            let mut triangles = Vec::new();
            let here = planes.mask(x0);
            let mut next = planes.mask(x0 + 1);
            let mut ids_here = planes.vertices(
                x0,
                &here,
                Some(&next),
                first_vertex[x0],
                Some(&mut positions),
            );
            let mut quads_here = quad_codes(field.dims, &here);
            for x in x0..x1 {
                let beyond = (x + 2 < nx).then(|| planes.mask(x + 2));
                // The slab owns the vertices of planes x0..x1, and of the grid's last plane;
                // plane x1 belongs to the next slab.
                let owned = (x + 1 < x1 || x + 1 == nx - 1).then_some(&mut positions);
                let ids_next =
                    planes.vertices(x + 1, &next, beyond.as_deref(), first_vertex[x + 1], owned);
                let quads_next = quad_codes(field.dims, &next);
                let ids = [&ids_here, &ids_next];
                for y in 0..ny - 1 {
                    let row = y * nz;
                    for z in 0..nz - 1 {
                        let base = row + z;
                        let case = usize::from(quads_here[base] | quads_next[base] << 1);
                        if case == 0 || case == 255 {
                            continue;
                        }
                        let id = |e: u8| {
                            let (dx, offset, axis) = edge_lookup[usize::from(e)];
                            ids[dx][3 * (base + offset) + axis]
                        };
                        triangles.extend(table.case(case).iter().map(|t| t.map(id)));
                    }
                }
                next = beyond.unwrap_or_default();
                ids_here = ids_next;
                quads_here = quads_next;
            }
            (positions, triangles)
        })
        .collect();
    let mut positions = Vec::with_capacity(total);
    let mut triangles = Vec::new();
    for (p, t) in slabs {
        positions.extend(p);
        triangles.extend(t);
    }
    Ok(TriangleMesh::new(positions, triangles)?)
}

/// One slab's vertex positions and triangles (ids global), in output order.
type SlabPart = (Vec<[f32; 3]>, Vec<[u32; 3]>);

/// The grid's x-planes: insideness masks and crossing vertices.
struct Planes<'a> {
    field: &'a DenseField<'a>,
    config: &'a MarchingCubesConfig,
}

impl Planes<'_> {
    fn values(&self, x: usize) -> &[f32] {
        let plane_len = self.field.dims[1] * self.field.dims[2];
        &self.field.values[x * plane_len..(x + 1) * plane_len]
    }

    /// 1 where plane `x` is inside, else 0.
    fn mask(&self, x: usize) -> Vec<u8> {
        self.values(x)
            .iter()
            .map(|&v| u8::from(self.config.is_inside(v)))
            .collect()
    }

    /// Vertex ids of the edges starting in plane `x` (`u32::MAX` where no crossing, never
    /// read), numbered from `first` in [`for_each_crossing`] order; with `positions`, their
    /// positions are appended in the same order.
    fn vertices(
        &self,
        x: usize,
        here: &[u8],
        next: Option<&[u8]>,
        first: usize,
        mut positions: Option<&mut Vec<[f32; 3]>>,
    ) -> Vec<u32> {
        let [_, ny, nz] = self.field.dims;
        let mut ids = vec![u32::MAX; 3 * ny * nz];
        // `first` + the plane's count fits in u32: checked against the total beforehand.
        let mut id = first as u32;
        for_each_crossing(self.field.dims, here, next, |slot, i, axis| {
            ids[slot] = id;
            id += 1;
            if let Some(positions) = positions.as_deref_mut() {
                positions.push(self.crossing_position(x, i, axis));
            }
        });
        ids
    }

    /// World position of the crossing on the edge from point `i` of plane `x` along `axis`.
    fn crossing_position(&self, x: usize, i: usize, axis: usize) -> [f32; 3] {
        let [_, _, nz] = self.field.dims;
        let here = self.values(x);
        let a = here[i];
        let b = match axis {
            0 => self.values(x + 1)[i],
            1 => here[i + nz],
            _ => here[i + 1],
        };
        let mut index = [x as f64, (i / nz) as f64, (i % nz) as f64];
        index[axis] += crossing(a, b, self.config.iso);
        std::array::from_fn(|k| (self.field.origin[k] + self.field.voxel_size[k] * index[k]) as f32)
    }
}

/// Calls `visit(slot, i, axis)` for every sign-changing edge starting in a plane (`i = y·Z + z`,
/// `slot = 3·i + axis`), in vertex order: `y`, then `z`, then axis x, y, z. Edges along x exist
/// only with a `next` plane.
fn for_each_crossing(
    dims: [usize; 3],
    here: &[u8],
    next: Option<&[u8]>,
    mut visit: impl FnMut(usize, usize, usize),
) {
    let [_, ny, nz] = dims;
    for y in 0..ny {
        for z in 0..nz {
            let i = y * nz + z;
            let a = here[i];
            if next.is_some_and(|next| next[i] != a) {
                visit(3 * i, i, 0);
            }
            if y + 1 < ny && here[i + nz] != a {
                visit(3 * i + 1, i, 1);
            }
            if z + 1 < nz && here[i + 1] != a {
                visit(3 * i + 2, i, 2);
            }
        }
    }
}

/// Number of sign-changing edges starting in a plane (what [`for_each_crossing`] visits).
fn count_crossings(dims: [usize; 3], here: &[u8], next: Option<&[u8]>) -> usize {
    let [_, ny, nz] = dims;
    let differ = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| usize::from(a ^ b))
            .sum::<usize>()
    };
    let along_x = next.map_or(0, |next| differ(here, next));
    let along_y = differ(&here[..(ny - 1) * nz], &here[nz..]);
    let along_z: usize = here
        .chunks_exact(nz)
        .map(|row| differ(&row[..nz - 1], &row[1..]))
        .sum();
    along_x + along_y + along_z
}

/// Per cell face in a plane (`i = y·Z + z`, `y < Y − 1`, `z < Z − 1`): its four corners'
/// insideness at case-index bits 0, 2, 4, 6 (corners with dx = 0); the next plane's codes
/// shifted left by one fill bits 1, 3, 5, 7.
fn quad_codes(dims: [usize; 3], mask: &[u8]) -> Vec<u8> {
    let [_, ny, nz] = dims;
    let mut codes = vec![0u8; ny * nz];
    for y in 0..ny - 1 {
        let row = y * nz;
        for z in 0..nz - 1 {
            let i = row + z;
            codes[i] = mask[i] | mask[i + nz] << 2 | mask[i + 1] << 4 | mask[i + nz + 1] << 6;
        }
    }
    codes
}

/// A copy of a dense `[X, Y, Z]` grid with `layers` layers of `value` around it: dims grow by
/// `2·layers` on every axis and the padded grid's origin is the old one minus `layers` voxels.
/// Padding with an outside value closes surfaces that reach the grid's border.
/// `values.len()` must be `X·Y·Z`; a padded grid above [`MAX_GRID_VOXELS`] values is
/// [`MarchingCubesError::GridTooLarge`], refused before allocating.
pub fn pad_grid(
    values: &[f32],
    dims: [usize; 3],
    layers: usize,
    value: f32,
) -> Result<(Vec<f32>, [usize; 3]), MarchingCubesError> {
    let [nx, ny, nz] = dims;
    if nx.checked_mul(ny).and_then(|n| n.checked_mul(nz)) != Some(values.len()) {
        return Err(MarchingCubesError::LengthMismatch {
            dims,
            len: values.len(),
        });
    }
    // The padding, not the input, sets the size: a large `layers` must fail here rather than
    // in the allocator (an overflowing size is too large as well).
    let padded = layers
        .checked_mul(2)
        .map(|grow| dims.map(|d| d.checked_add(grow)));
    let Some([Some(px), Some(py), Some(pz)]) = padded else {
        return Err(MarchingCubesError::GridTooLarge { dims, layers });
    };
    let len = px
        .checked_mul(py)
        .and_then(|n| n.checked_mul(pz))
        .filter(|&n| n as u64 <= MAX_GRID_VOXELS && n <= isize::MAX as usize / size_of::<f32>())
        .ok_or(MarchingCubesError::GridTooLarge { dims, layers })?;
    let mut out = vec![value; len];
    for x in 0..nx {
        for y in 0..ny {
            let from = (x * ny + y) * nz;
            let to = ((x + layers) * py + y + layers) * pz + layers;
            out[to..to + nz].copy_from_slice(&values[from..from + nz]);
        }
    }
    Ok((out, [px, py, pz]))
}

// ---------------------------------------------------------------------------------------------
// Sparse VDB grids.
// ---------------------------------------------------------------------------------------------

/// A grid edge: its first grid point and its axis; sorting these numbers the vertices.
type EdgeKey = ([i32; 3], u8);

/// Edge of a leaf in voxels.
const LEAF_DIM: i32 = 8;
/// A leaf's cells plus the layer of cells before it on each axis: `LEAF_DIM + 1` cells, whose
/// corners span `LEAF_DIM + 2` points per axis.
const BLOCK: usize = LEAF_DIM as usize + 2;

/// Extracts the `config.iso` surface of a VDB float grid without densifying it.
///
/// Every cell with a corner in a leaf is processed once (by the first leaf, in corner order,
/// that holds one of its corners); values outside leaves come from tiles or the background, as
/// [`vnr_formats::vdb::Tree::get`] reads them. Cells entirely in tiles or background are never
/// visited, so a valid level set (constant sign outside the narrow band) gives its whole zero
/// crossing. Vertices go through the grid's transform into world units.
pub fn marching_cubes_vdb(
    grid: &Grid<f32>,
    config: &MarchingCubesConfig,
) -> Result<TriangleMesh, MarchingCubesError> {
    if !config.iso.is_finite() {
        return Err(MarchingCubesError::InvalidIso(config.iso));
    }
    let leaves = grid.leaves();
    let leaf_at: HashMap<[i32; 3], usize> = leaves
        .iter()
        .enumerate()
        .map(|(i, leaf)| (leaf.origin(), i))
        .collect();
    let per_leaf: Vec<Vec<[EdgeKey; 3]>> = leaves
        .par_iter()
        .map(|leaf| leaf_triangles(grid, leaf, &leaf_at, config))
        .collect();
    let mut keys: Vec<EdgeKey> = per_leaf.iter().flatten().flatten().copied().collect();
    keys.par_sort_unstable();
    keys.dedup();
    if u32::try_from(keys.len()).is_err() {
        return Err(MarchingCubesError::TooManyVertices(keys.len()));
    }
    let positions = keys
        .par_iter()
        .map(|&(ijk, axis)| {
            let axis = usize::from(axis);
            let mut end = ijk;
            end[axis] += 1;
            let (a, b) = (grid.get(ijk), grid.get(end));
            if let Some(nan) = [(a, ijk), (b, end)].iter().find(|(v, _)| v.is_nan()) {
                return Err(MarchingCubesError::NanValue(nan.1.map(i64::from)));
            }
            let mut index = ijk.map(f64::from);
            index[axis] += crossing(a, b, config.iso);
            Ok(grid.transform.index_to_world(index).map(|c| c as f32))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vertex = |key: &EdgeKey| keys.binary_search(key).unwrap_or_default() as u32;
    let triangles = per_leaf
        .iter()
        .flatten()
        .map(|t| [vertex(&t[0]), vertex(&t[1]), vertex(&t[2])])
        .collect();
    Ok(TriangleMesh::new(positions, triangles)?)
}

/// The triangles (as edge keys) of the cells this leaf owns: cells whose first corner lies in
/// `[origin − 1, origin + 8)` on every axis and whose first corner, in corner order, that falls
/// in any leaf falls in this one.
fn leaf_triangles(
    grid: &Grid<f32>,
    leaf: &Leaf<f32>,
    leaf_at: &HashMap<[i32; 3], usize>,
    config: &MarchingCubesConfig,
) -> Vec<[EdgeKey; 3]> {
    let origin = leaf.origin();
    let start = origin.map(|o| o - 1);
    // Which of the 27 leaves around (and including) this one exist, by offset in {-1, 0, 1}³.
    let neighbour_index = |r: [i32; 3]| ((r[0] + 1) * 9 + (r[1] + 1) * 3 + (r[2] + 1)) as usize;
    let mut neighbours = [false; 27];
    for rx in -1..=1 {
        for ry in -1..=1 {
            for rz in -1..=1 {
                let r = [rx, ry, rz];
                let key: [i32; 3] = std::array::from_fn(|k| origin[k] + LEAF_DIM * r[k]);
                neighbours[neighbour_index(r)] = leaf_at.contains_key(&key);
            }
        }
    }
    let block_index = |l: [usize; 3]| (l[0] * BLOCK + l[1]) * BLOCK + l[2];
    let mut inside = vec![false; BLOCK * BLOCK * BLOCK];
    for lx in 0..BLOCK {
        for ly in 0..BLOCK {
            for lz in 0..BLOCK {
                let ijk = [lx, ly, lz].map(|l| l as i32);
                let ijk: [i32; 3] = std::array::from_fn(|k| start[k] + ijk[k]);
                inside[block_index([lx, ly, lz])] = config.is_inside(grid.get(ijk));
            }
        }
    }
    let owns = |l: [usize; 3]| {
        if l.iter().all(|&c| c >= 1) {
            return true;
        }
        (0..8).find_map(|c| {
            let d = corner_offset(c);
            // Offset of the leaf holding this corner: local coordinate 0 is origin − 1.
            let r: [i32; 3] =
                std::array::from_fn(|k| (l[k] + d[k]) as i32 - 1).map(|p| p.div_euclid(LEAF_DIM));
            neighbours[neighbour_index(r)].then_some(r == [0, 0, 0])
        }) == Some(true)
    };
    let table = case_table();
    let mut triangles = Vec::new();
    for lx in 0..BLOCK - 1 {
        for ly in 0..BLOCK - 1 {
            for lz in 0..BLOCK - 1 {
                let l = [lx, ly, lz];
                let corners: [bool; 8] = std::array::from_fn(|c| {
                    let d = corner_offset(c);
                    inside[block_index([lx + d[0], ly + d[1], lz + d[2]])]
                });
                let case = case_index(corners);
                if case == 0 || case == 255 || !owns(l) {
                    continue;
                }
                let key = |e: u8| -> EdgeKey {
                    let (corner, axis) = edge_start(usize::from(e));
                    let d = corner_offset(corner);
                    (
                        std::array::from_fn(|k| start[k] + (l[k] + d[k]) as i32),
                        axis as u8,
                    )
                };
                triangles.extend(table.case(case).iter().map(|t| t.map(key)));
            }
        }
    }
    triangles
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case's triangles form closed loops' disks: each internal edge is used once in
    /// each direction, and each boundary edge is a face segment used once.
    #[test]
    fn every_case_is_a_closed_oriented_patch() {
        for case in 0..256 {
            let segments = case_segments(case);
            let mut directed: HashMap<(u8, u8), usize> = HashMap::new();
            for t in case_table().case(case) {
                for (a, b) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
                    *directed.entry((a, b)).or_default() += 1;
                }
            }
            for (&(a, b), &n) in &directed {
                assert_eq!(n, 1, "case {case}: edge {a}->{b} used {n} times");
                let reverse = directed.contains_key(&(b, a));
                let on_face = segments.contains(&(a, b));
                assert!(reverse != on_face, "case {case}: edge {a}->{b}");
            }
            for s in &segments {
                assert!(
                    directed.contains_key(s),
                    "case {case}: segment {s:?} unused"
                );
            }
            let crossing_edges = (0..12)
                .filter(|&e| {
                    let (c, axis) = edge_start(e);
                    ((case >> c) & 1) != ((case >> (c | 1 << axis)) & 1)
                })
                .count();
            assert_eq!(segments.len(), crossing_edges, "case {case}");
        }
    }

    #[test]
    fn single_inside_corner_faces_away_from_it() {
        // Corner 0 inside: the triangle's normal must point towards (+, +, +).
        let tris = case_table().case(1);
        assert_eq!(tris.len(), 1);
        let p = tris[0].map(|e| Vec3::from_array(edge_midpoint(usize::from(e))));
        let n = (p[1] - p[0]).cross(p[2] - p[0]);
        assert!(n.to_array().iter().all(|&c| c > 0.0), "{n:?}");
    }

    #[test]
    fn complementary_cases_have_the_same_vertices() {
        for case in 0..256 {
            let edges = |c: usize| {
                let mut e: Vec<u8> = case_segments(c).iter().map(|s| s.0).collect();
                e.sort_unstable();
                e
            };
            assert_eq!(edges(case), edges(255 - case));
        }
    }
}

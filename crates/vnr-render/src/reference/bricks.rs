//! Sparse bricks of voxel values for empty-space skipping, the index↔world map, and the DDA
//! that walks a ray through a regular grid.
//!
//! A brick covers the 8³ trilinear *cells* of one 8³ block of voxels: cell `(i, j, k)` spans
//! index coordinates `[i, i+1]³` (voxel centres sit at integers, as in OpenVDB), so a brick
//! stores 9³ corner values, the last layer borrowed from the neighbouring blocks. Bricks exist
//! only where the caller's predicate on the corner range holds (a sign change for surfaces,
//! non-zero density for fog); every other block is skipped whole.

use rayon::prelude::*;

use super::vec3::{Aabb, Ray, Vec3};
use super::RenderError;

/// Cells per brick edge.
pub(crate) const BRICK: i32 = 8;
/// Corner values per brick edge.
const CORNERS: usize = BRICK as usize + 1;
/// Corner values per brick.
const BRICK_VALUES: usize = CORNERS * CORNERS * CORNERS;
/// One brick's corner values, `[x][y][z]` with z fastest.
pub(crate) type Brick = [f32; BRICK_VALUES];
/// Most blocks the brick table may span (its slot table is dense over the blocks' bounding box).
const MAX_TABLE_BLOCKS: u128 = 1 << 24;
/// No brick at this block.
const EMPTY: u32 = u32::MAX;

/// An affine index→world map `world = linear · ijk + translation`, with its inverse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexMap {
    linear: [[f64; 3]; 3],
    inverse: [[f64; 3]; 3],
    translation: Vec3,
}

fn apply(m: &[[f64; 3]; 3], v: Vec3) -> Vec3 {
    Vec3::new(
        m[0][0] * v.x + m[0][1] * v.y + m[0][2] * v.z,
        m[1][0] * v.x + m[1][1] * v.y + m[1][2] * v.z,
        m[2][0] * v.x + m[2][1] * v.y + m[2][2] * v.z,
    )
}

impl IndexMap {
    /// Cubic voxels of edge `voxel_size`, voxel `(0, 0, 0)` centred at `origin`.
    pub fn uniform(voxel_size: f64, origin: Vec3) -> Result<Self, RenderError> {
        if !(voxel_size > 0.0 && voxel_size.is_finite() && origin.is_finite()) {
            return Err(RenderError::InvalidGrid(format!(
                "voxel size {voxel_size} must be positive and origin {origin:?} finite"
            )));
        }
        let s = voxel_size;
        Ok(IndexMap {
            linear: [[s, 0.0, 0.0], [0.0, s, 0.0], [0.0, 0.0, s]],
            inverse: [
                [1.0 / s, 0.0, 0.0],
                [0.0, 1.0 / s, 0.0],
                [0.0, 0.0, 1.0 / s],
            ],
            translation: origin,
        })
    }

    /// The map of an OpenVDB transform (any linear map).
    pub fn from_vdb(t: &vnr_formats::vdb::Transform) -> Self {
        let linear = t.linear();
        let origin = Vec3::from_array(t.translation());
        // Columns of the inverse are the images of the world axes.
        let cols: [[f64; 3]; 3] = std::array::from_fn(|k| {
            let mut e = [0.0; 3];
            e[k] = 1.0;
            let base = t.world_to_index(t.translation());
            let img = t.world_to_index(std::array::from_fn(|r| t.translation()[r] + e[r]));
            std::array::from_fn(|r| img[r] - base[r])
        });
        let inverse = std::array::from_fn(|r| std::array::from_fn(|k| cols[k][r]));
        IndexMap {
            linear,
            inverse,
            translation: origin,
        }
    }

    /// Index coordinates to world.
    pub fn to_world(&self, ijk: Vec3) -> Vec3 {
        apply(&self.linear, ijk) + self.translation
    }

    /// World to index coordinates.
    pub fn to_index(&self, xyz: Vec3) -> Vec3 {
        apply(&self.inverse, xyz - self.translation)
    }

    /// A world direction in index units.
    pub fn dir_to_index(&self, d: Vec3) -> Vec3 {
        apply(&self.inverse, d)
    }

    /// A gradient taken in index space, as a world-space gradient (`L⁻ᵀ · g`).
    pub fn gradient_to_world(&self, g: Vec3) -> Vec3 {
        let m = &self.inverse;
        Vec3::new(
            m[0][0] * g.x + m[1][0] * g.y + m[2][0] * g.z,
            m[0][1] * g.x + m[1][1] * g.y + m[2][1] * g.z,
            m[0][2] * g.x + m[1][2] * g.y + m[2][2] * g.z,
        )
    }

    /// The ray in index space, with the same parameter `t`.
    pub fn ray_to_index(&self, ray: &Ray) -> Ray {
        Ray {
            origin: self.to_index(ray.origin),
            dir: self.dir_to_index(ray.dir),
        }
    }

    /// World box of an index box.
    pub fn box_to_world(&self, b: &Aabb) -> Aabb {
        let mut out: Option<Aabb> = None;
        for c in 0..8 {
            let corner = Vec3::new(
                if c & 1 == 0 { b.min.x } else { b.max.x },
                if c & 2 == 0 { b.min.y } else { b.max.y },
                if c & 4 == 0 { b.min.z } else { b.max.z },
            );
            let w = self.to_world(corner);
            let p = Aabb::new(w, w);
            out = Some(out.map_or(p, |o| o.union(&p)));
        }
        out.unwrap_or(*b)
    }
}

/// The 8 corner values of one cell, `c[x + 2y + 4z]`.
pub(crate) type CellCorners = [f32; 8];

/// Trilinear interpolation inside a cell at local coordinates `l ∈ [0, 1]³`.
pub(crate) fn trilinear(c: &CellCorners, l: Vec3) -> f64 {
    let c = c.map(f64::from);
    let x00 = c[0] + (c[1] - c[0]) * l.x;
    let x10 = c[2] + (c[3] - c[2]) * l.x;
    let x01 = c[4] + (c[5] - c[4]) * l.x;
    let x11 = c[6] + (c[7] - c[6]) * l.x;
    let y0 = x00 + (x10 - x00) * l.y;
    let y1 = x01 + (x11 - x01) * l.y;
    y0 + (y1 - y0) * l.z
}

/// Gradient (index units) of the trilinear interpolant at local coordinates `l`.
pub(crate) fn trilinear_gradient(c: &CellCorners, l: Vec3) -> Vec3 {
    let c = c.map(f64::from);
    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
    let gx = lerp(
        lerp(c[1] - c[0], c[3] - c[2], l.y),
        lerp(c[5] - c[4], c[7] - c[6], l.y),
        l.z,
    );
    let gy = lerp(
        lerp(c[2] - c[0], c[3] - c[1], l.x),
        lerp(c[6] - c[4], c[7] - c[5], l.x),
        l.z,
    );
    let gz = lerp(
        lerp(c[4] - c[0], c[5] - c[1], l.x),
        lerp(c[6] - c[2], c[7] - c[3], l.x),
        l.y,
    );
    Vec3::new(gx, gy, gz)
}

/// Sparse bricks over a voxel grid (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct Bricks {
    /// Block coordinates of the slot table's first block.
    min_block: [i32; 3],
    /// Blocks per axis of the slot table.
    dims: [usize; 3],
    /// Brick index per block, or [`EMPTY`].
    slots: Vec<u32>,
    /// [`BRICK_VALUES`] corner values per brick, `[x][y][z]` with z fastest.
    values: Vec<f32>,
    /// Index-space box of the cells of all bricks.
    index_bounds: Option<Aabb>,
}

/// Block coordinates holding voxel/cell index `i`.
pub(crate) fn block_of(i: i32) -> i32 {
    i.div_euclid(BRICK)
}

impl Bricks {
    /// Builds the bricks of `candidates` (block coordinates, duplicates allowed), reading voxel
    /// values with `value` and keeping a brick when `keep(min, max)` of its corners holds.
    pub(crate) fn build(
        mut candidates: Vec<[i32; 3]>,
        value: impl Fn([i32; 3]) -> f32 + Sync,
        keep: impl Fn(f32, f32) -> bool + Sync,
    ) -> Result<Self, RenderError> {
        candidates.sort_unstable();
        candidates.dedup();
        let filled: Vec<([i32; 3], Vec<f32>)> = candidates
            .par_iter()
            .filter_map(|&block| {
                let base = block.map(|b| b * BRICK);
                let mut v = Vec::with_capacity(BRICK_VALUES);
                for x in 0..CORNERS as i32 {
                    for y in 0..CORNERS as i32 {
                        for z in 0..CORNERS as i32 {
                            v.push(value([base[0] + x, base[1] + y, base[2] + z]));
                        }
                    }
                }
                let (lo, hi) = v
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                        (lo.min(x), hi.max(x))
                    });
                keep(lo, hi).then_some((block, v))
            })
            .collect();
        let Some(first) = filled.first() else {
            return Ok(Bricks {
                min_block: [0; 3],
                dims: [0; 3],
                slots: Vec::new(),
                values: Vec::new(),
                index_bounds: None,
            });
        };
        let (mut lo, mut hi) = (first.0, first.0);
        for (b, _) in &filled {
            for k in 0..3 {
                lo[k] = lo[k].min(b[k]);
                hi[k] = hi[k].max(b[k]);
            }
        }
        let dims: [usize; 3] =
            std::array::from_fn(|k| (i64::from(hi[k]) - i64::from(lo[k]) + 1) as usize);
        let table: u128 = dims.iter().map(|d| *d as u128).product();
        if table > MAX_TABLE_BLOCKS || filled.len() >= EMPTY as usize {
            return Err(RenderError::InvalidGrid(format!(
                "the occupied blocks span {dims:?} blocks of 8³ voxels, more than the {MAX_TABLE_BLOCKS} a render accepts"
            )));
        }
        let mut slots = vec![EMPTY; table as usize];
        let mut values = Vec::with_capacity(filled.len() * BRICK_VALUES);
        for (n, (b, v)) in filled.iter().enumerate() {
            let l: [usize; 3] = std::array::from_fn(|k| (b[k] - lo[k]) as usize);
            slots[(l[0] * dims[1] + l[1]) * dims[2] + l[2]] = n as u32;
            values.extend_from_slice(v);
        }
        let index_bounds = Some(Aabb::new(
            Vec3::from_array(lo.map(|b| f64::from(b * BRICK))),
            Vec3::from_array(hi.map(|b| f64::from((b + 1) * BRICK))),
        ));
        Ok(Bricks {
            min_block: lo,
            dims,
            slots,
            values,
            index_bounds,
        })
    }

    /// Number of bricks.
    pub(crate) fn len(&self) -> usize {
        self.values.len() / BRICK_VALUES
    }

    /// Index-space box covering every brick's cells, `None` when there are no bricks.
    pub(crate) fn index_bounds(&self) -> Option<Aabb> {
        self.index_bounds
    }

    /// The slot (brick number) of the brick at `block`, if there is one.
    pub(crate) fn slot(&self, block: [i32; 3]) -> Option<usize> {
        let mut idx = 0usize;
        for ((&b, &m), &n) in block.iter().zip(&self.min_block).zip(&self.dims) {
            let l = i64::from(b) - i64::from(m);
            if l < 0 || l >= n as i64 {
                return None;
            }
            idx = idx * n + l as usize;
        }
        let slot = *self.slots.get(idx)?;
        (slot != EMPTY).then_some(slot as usize)
    }

    /// The corner values of brick `slot`.
    pub(crate) fn values(&self, slot: usize) -> Option<&Brick> {
        let start = slot.checked_mul(BRICK_VALUES)?;
        self.values
            .get(start..start + BRICK_VALUES)?
            .try_into()
            .ok()
    }

    /// The corner values of the brick at `block`, if there is one.
    pub(crate) fn brick(&self, block: [i32; 3]) -> Option<&Brick> {
        self.values(self.slot(block)?)
    }

    /// Every brick as (slot, block coordinates, corner values), in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, [i32; 3], &Brick)> + '_ {
        let [_, ny, nz] = self.dims;
        let mut by_slot: Vec<(usize, [i32; 3])> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, &slot)| slot != EMPTY)
            .map(|(i, &slot)| {
                let l = [i / (ny * nz), (i / nz) % ny, i % nz];
                (
                    slot as usize,
                    std::array::from_fn(|k| self.min_block[k] + l[k] as i32),
                )
            })
            .collect();
        by_slot.sort_unstable_by_key(|(slot, _)| *slot);
        by_slot
            .into_iter()
            .filter_map(move |(slot, block)| Some((slot, block, self.values(slot)?)))
    }
}

/// The corners of cell `local` (each in `0..8`, clamped) of a brick.
pub(crate) fn cell_corners(brick: &Brick, local: [usize; 3]) -> CellCorners {
    const X: usize = CORNERS * CORNERS;
    const Y: usize = CORNERS;
    let [x, y, z] = local.map(|v| v.min(BRICK as usize - 1));
    let base = x * X + y * Y + z;
    // One bounds check for the 2×2×2 block (its farthest corner is base + X + Y + 1).
    let Some(c) = brick.get(base..=base + X + Y + 1) else {
        return [0.0; 8];
    };
    [
        c[0],
        c[X],
        c[Y],
        c[X + Y],
        c[1],
        c[X + 1],
        c[Y + 1],
        c[X + Y + 1],
    ]
}

/// The cell of a brick holding index point `p` (relative to the brick's first voxel), clamped
/// into the brick, and `p`'s local coordinates in that cell.
pub(crate) fn locate_in_brick(p: Vec3) -> ([usize; 3], Vec3) {
    // Clamping first makes truncation a floor (and keeps `floor`, a libm call on baseline
    // x86-64, out of the innermost loop).
    let last = f64::from(BRICK - 1);
    let cell = |v: f64| v.clamp(0.0, last) as usize;
    let c = [cell(p.x), cell(p.y), cell(p.z)];
    let local = Vec3::new(
        (p.x - c[0] as f64).clamp(0.0, 1.0),
        (p.y - c[1] as f64).clamp(0.0, 1.0),
        (p.z - c[2] as f64).clamp(0.0, 1.0),
    );
    (c, local)
}

/// Trilinear value of a brick at index point `p` relative to the brick's first voxel.
pub(crate) fn sample_brick(brick: &Brick, p: Vec3) -> f64 {
    let (cell, local) = locate_in_brick(p);
    trilinear(&cell_corners(brick, cell), local)
}

/// `v.floor()` without a libm call (baseline x86-64 has no rounding instruction), for
/// `|v| < 2⁶²`; other values (and NaN) pass through `f64::floor`.
pub(crate) fn fast_floor(v: f64) -> f64 {
    if v.abs() < 4.0e18 {
        let t = v as i64 as f64;
        if t > v {
            t - 1.0
        } else {
            t
        }
    } else {
        v.floor()
    }
}

/// `v.ceil()` like [`fast_floor`].
pub(crate) fn fast_ceil(v: f64) -> f64 {
    -fast_floor(-v)
}

/// Amanatides–Woo traversal of the cells of edge `size` that a ray crosses in `[t0, t1]`.
pub(crate) struct Dda {
    cell: [i32; 3],
    step: [i32; 3],
    t_next: [f64; 3],
    t_delta: [f64; 3],
    t: f64,
    t_end: f64,
}

impl Dda {
    /// Starts at `ray.at(t0)`; `None` when the interval is empty or not finite.
    pub(crate) fn new(ray: &Ray, t0: f64, t1: f64, size: i32) -> Option<Self> {
        if !(t0.is_finite() && t1.is_finite() && t0 <= t1) {
            return None;
        }
        let p = ray.at(t0);
        let s = f64::from(size);
        let mut cell = [0i32; 3];
        let mut step = [0i32; 3];
        let mut t_next = [f64::INFINITY; 3];
        let mut t_delta = [f64::INFINITY; 3];
        for k in 0..3 {
            let c = fast_floor(p.axis(k) / s);
            if !c.is_finite() || c.abs() > f64::from(i32::MAX / 2) {
                return None;
            }
            cell[k] = c as i32;
            let d = ray.dir.axis(k);
            let o = ray.origin.axis(k);
            if d > 0.0 {
                step[k] = 1;
                t_next[k] = ((c + 1.0) * s - o) / d;
                t_delta[k] = s / d;
            } else if d < 0.0 {
                step[k] = -1;
                t_next[k] = (c * s - o) / d;
                t_delta[k] = -s / d;
            }
        }
        Some(Dda {
            cell,
            step,
            t_next,
            t_delta,
            t: t0,
            t_end: t1,
        })
    }
}

impl Iterator for Dda {
    /// `(cell, t_enter, t_exit)`.
    type Item = ([i32; 3], f64, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.t > self.t_end {
            return None;
        }
        let axis = if self.t_next[0] <= self.t_next[1] && self.t_next[0] <= self.t_next[2] {
            0
        } else if self.t_next[1] <= self.t_next[2] {
            1
        } else {
            2
        };
        let exit = self.t_next[axis].min(self.t_end);
        let item = (self.cell, self.t, exit);
        let advanced = self.t_next[axis] + self.t_delta[axis];
        // Far enough along the ray (in cells, about 2⁵³), a cell's width no longer changes `t`
        // and the walk would step cells forever without reaching `t_end`: stop there too.
        if self.t_next[axis] > self.t_end
            || !self.t_next[axis].is_finite()
            || advanced <= self.t_next[axis]
        {
            // Last cell: stop after this one.
            self.t = f64::INFINITY;
        } else {
            self.t = self.t_next[axis].max(self.t);
            self.t_next[axis] = advanced;
            self.cell[axis] = self.cell[axis].saturating_add(self.step[axis]);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_floor_and_ceil_match_std() {
        for v in [
            -2.5,
            -2.0,
            -0.5,
            -0.0,
            0.0,
            0.3,
            1.0,
            7.999,
            1e17 + 0.5,
            -3e18,
            5e18,
            f64::NAN,
        ] {
            if v.is_nan() {
                assert!(fast_floor(v).is_nan());
                continue;
            }
            assert_eq!(fast_floor(v), v.floor(), "floor {v}");
            assert_eq!(fast_ceil(v), v.ceil(), "ceil {v}");
        }
    }

    #[test]
    fn dda_visits_every_crossed_cell_in_order() {
        let ray = Ray {
            origin: Vec3::new(0.5, 0.25, -0.75),
            dir: Vec3::new(1.0, 0.5, 0.25),
        };
        let cells: Vec<_> = Dda::new(&ray, 0.0, 4.0, 1).unwrap().collect();
        // Consecutive cells share a face and the intervals tile [0, 4].
        assert_eq!(cells[0].0, [0, 0, -1]);
        assert_eq!(cells[0].1, 0.0);
        assert_eq!(cells.last().unwrap().2, 4.0);
        for w in cells.windows(2) {
            let d: i32 = (0..3).map(|k| (w[1].0[k] - w[0].0[k]).abs()).sum();
            assert_eq!(d, 1);
            assert_eq!(w[0].2, w[1].1);
        }
        // Every interval's midpoint lies in its cell (a ray through an edge gets an empty
        // interval in one of the cells it grazes).
        for (cell, t0, t1) in cells.iter().filter(|c| c.2 > c.1) {
            let p = ray.at(0.5 * (t0 + t1));
            for (k, c) in cell.iter().enumerate() {
                assert_eq!(p.axis(k).floor() as i32, *c);
            }
        }
        assert!(Dda::new(&ray, 1.0, f64::INFINITY, 8).is_none());
    }

    /// 10¹⁸ cells out, adding a cell's width leaves `t` unchanged: the walk used to step cells
    /// forever without reaching its end.
    #[test]
    fn dda_far_from_its_origin_ends() {
        let ray = Ray {
            origin: Vec3::new(-1e18, 0.5, 0.5),
            dir: Vec3::new(1.0, 0.0, 0.0),
        };
        let cells = Dda::new(&ray, 1e18 - 64.0, 1e18 + 64.0, 8).unwrap();
        assert!(cells.take(100).count() < 100);
    }

    #[test]
    fn trilinear_interpolates_corners_and_differentiates() {
        let c: CellCorners = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        // f = x + 2y + 4z on this cell.
        let l = Vec3::new(0.25, 0.5, 0.75);
        assert!((trilinear(&c, l) - (0.25 + 1.0 + 3.0)).abs() < 1e-12);
        assert_eq!(trilinear_gradient(&c, l), Vec3::new(1.0, 2.0, 4.0));
    }

    #[test]
    fn bricks_keep_only_selected_blocks_and_read_apron_values() {
        let value = |ijk: [i32; 3]| (ijk[0] + 10 * ijk[1] + 100 * ijk[2]) as f32;
        let bricks = Bricks::build(vec![[0, 0, 0], [1, 0, 0], [0, 0, 0]], value, |lo, _| {
            lo < 1.0
        })
        .unwrap();
        assert_eq!(bricks.len(), 1);
        let b = bricks.brick([0, 0, 0]).unwrap();
        // The brick's far corner (8, 8, 8) belongs to the neighbouring blocks.
        assert_eq!(cell_corners(b, [7, 7, 7])[7], value([8, 8, 8]));
        assert!(bricks.brick([1, 0, 0]).is_none());
        assert!(bricks.brick([-1, 0, 0]).is_none());
    }

    #[test]
    fn index_map_round_trips_vdb_transforms() {
        let t = vnr_formats::vdb::Transform::scale_translate([0.5, 2.0, 0.25], [1.0, -2.0, 3.0])
            .unwrap();
        let m = IndexMap::from_vdb(&t);
        let p = Vec3::new(3.0, -1.5, 7.25);
        let w = m.to_world(p);
        assert_eq!(w.to_array(), t.index_to_world(p.to_array()));
        let back = m.to_index(w);
        assert!((back - p).length() < 1e-12);
    }
}

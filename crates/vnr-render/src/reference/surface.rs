//! Surfaces a ray can hit: the [`Surface`] trait, and [`GridSurface`], the iso-surface of the
//! trilinear interpolant of a voxel grid (dense arrays, VDB level sets, binvox occupancy).

use super::bricks::{
    block_of, cell_corners, trilinear, trilinear_gradient, Brick, Bricks, CellCorners, Dda,
    IndexMap, BRICK,
};
use super::vec3::{Aabb, Ray, Vec3};
use super::RenderError;

/// Where a ray meets a surface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceHit {
    /// Ray parameter of the hit (`ray.at(t)`).
    pub t: f64,
    /// Unit outward normal (world space): the direction in which the field grows.
    pub normal: Vec3,
}

/// A closed surface: signed field negative inside.
pub trait Surface: Send + Sync {
    /// A world box holding the whole surface.
    fn bounds(&self) -> Aabb;
    /// The first crossing of the surface by `ray` with `t_min ≤ t ≤ t_max`, entering or leaving.
    fn intersect(&self, ray: &Ray, t_min: f64, t_max: f64) -> Option<SurfaceHit>;
    /// The base colour at surface point `p` when the surface carries its own colours (a scene
    /// of coloured shapes); `None` uses the scene's [`super::Phong::albedo`].
    fn albedo_at(&self, _p: Vec3) -> Option<Vec3> {
        None
    }
}

/// Bisection/regula-falsi iterations when refining a root inside one cell: the bracket shrinks
/// far below `f64` resolution of a cell long before.
const ROOT_ITERATIONS: usize = 60;
/// Samples per cell segment when looking for a sign change (a cubic has up to three roots).
const CELL_SAMPLES: usize = 4;

/// The iso-surface `value = iso` of a voxel grid, where `inside_is_below` says which side is
/// inside: `true` for signed distances (inside `< iso`), `false` for densities/occupancy
/// (inside `> iso`).
///
/// Values are stored as the signed field `±(value − iso)`, negative inside, in bricks over the
/// blocks where it changes sign; hits are the first root of the trilinear interpolant along the
/// ray, refined to `f64` precision, and normals its trilinear gradient.
#[derive(Debug, Clone)]
pub struct GridSurface {
    bricks: Bricks,
    /// Per brick, one bit per cell (`x·64 + y·8 + z`) whose corners straddle zero: the only
    /// cells a crossing can be in.
    crossings: Vec<[u64; 8]>,
    map: IndexMap,
    bounds: Aabb,
}

impl GridSurface {
    /// The surface of a grid: `value(ijk)` gives the voxel values (any voxel, outside the data
    /// included), `blocks` the 8³ blocks (block coordinates = voxel index `div_euclid` 8) that
    /// may hold the surface; the blocks just before them on each axis are added, since their
    /// cells borrow corners from these.
    pub fn from_voxels(
        blocks: impl IntoIterator<Item = [i32; 3]>,
        value: impl Fn([i32; 3]) -> f32 + Sync,
        iso: f32,
        inside_is_below: bool,
        map: IndexMap,
    ) -> Result<Self, RenderError> {
        if !iso.is_finite() {
            return Err(RenderError::InvalidGrid(format!(
                "iso value {iso} is not finite"
            )));
        }
        let mut candidates = Vec::new();
        for b in blocks {
            for d in 0..8 {
                candidates.push([b[0] - (d & 1), b[1] - ((d >> 1) & 1), b[2] - ((d >> 2) & 1)]);
            }
        }
        let sign = if inside_is_below { 1.0 } else { -1.0 };
        let field = |ijk: [i32; 3]| {
            let v = value(ijk);
            // NaN voxels read as outside, so they never fake a crossing.
            if v.is_nan() {
                f32::INFINITY
            } else {
                sign * (v - iso)
            }
        };
        let bricks = Bricks::build(candidates, field, |lo, hi| lo <= 0.0 && hi >= 0.0)?;
        let crossings: Vec<[u64; 8]> = bricks.iter().map(|(_, _, b)| crossing_mask(b)).collect();
        let bounds = surface_index_bounds(&bricks, &crossings)
            .map(|b| map.box_to_world(&b))
            .ok_or(RenderError::EmptyScene)?;
        Ok(GridSurface {
            bricks,
            crossings,
            map,
            bounds,
        })
    }

    /// A dense `[X, Y, Z]` grid (z fastest) of `dims`; voxels outside it read `outside`.
    pub fn from_dense(
        values: &[f32],
        dims: [usize; 3],
        outside: f32,
        iso: f32,
        inside_is_below: bool,
        map: IndexMap,
    ) -> Result<Self, RenderError> {
        let n = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        if n != Some(values.len()) || values.is_empty() {
            return Err(RenderError::InvalidGrid(format!(
                "{} values for a dense grid of dims {dims:?}",
                values.len()
            )));
        }
        let idims = dims.map(|d| i32::try_from(d).unwrap_or(i32::MAX));
        if idims.contains(&i32::MAX) {
            return Err(RenderError::InvalidGrid(format!(
                "dims {dims:?} are too large"
            )));
        }
        let value = |ijk: [i32; 3]| {
            if (0..3).all(|k| ijk[k] >= 0 && ijk[k] < idims[k]) {
                let [x, y, z] = ijk.map(|v| v as usize);
                values[(x * dims[1] + y) * dims[2] + z]
            } else {
                outside
            }
        };
        // One voxel of `outside` around the data closes surfaces touching the border.
        let blocks = dense_blocks(idims);
        Self::from_voxels(blocks, value, iso, inside_is_below, map)
    }

    /// Number of 8³ bricks that hold the surface (a measure of the work per ray).
    pub fn brick_count(&self) -> usize {
        self.bricks.len()
    }

    /// The index→world map.
    pub fn index_map(&self) -> &IndexMap {
        &self.map
    }
}

/// Blocks covering voxels `-1..=dims` on each axis.
pub(crate) fn dense_blocks(dims: [i32; 3]) -> Vec<[i32; 3]> {
    let lo = block_of(-1);
    let hi = dims.map(block_of);
    let mut out = Vec::new();
    for x in lo..=hi[0] {
        for y in lo..=hi[1] {
            for z in lo..=hi[2] {
                out.push([x, y, z]);
            }
        }
    }
    out
}

/// Bit `x·64 + y·8 + z` set for each cell of `brick` whose corners straddle zero.
fn crossing_mask(brick: &Brick) -> [u64; 8] {
    let mut mask = [0u64; 8];
    for (x, word) in mask.iter_mut().enumerate() {
        for y in 0..BRICK as usize {
            for z in 0..BRICK as usize {
                if straddles(&cell_corners(brick, [x, y, z])) {
                    *word |= 1 << (y * 8 + z);
                }
            }
        }
    }
    mask
}

/// Index box of the cells whose corners straddle zero (where the surface can be).
fn surface_index_bounds(bricks: &Bricks, crossings: &[[u64; 8]]) -> Option<Aabb> {
    let mut acc: Option<Aabb> = None;
    for (slot, block, _) in bricks.iter() {
        let Some(mask) = crossings.get(slot) else {
            continue;
        };
        for (x, word) in mask.iter().enumerate() {
            for bit in 0..64 {
                if word >> bit & 1 == 0 {
                    continue;
                }
                let lo = Vec3::new(
                    f64::from(block[0] * BRICK) + x as f64,
                    f64::from(block[1] * BRICK) + (bit / 8) as f64,
                    f64::from(block[2] * BRICK) + (bit % 8) as f64,
                );
                let cell = Aabb::new(lo, lo + Vec3::splat(1.0));
                acc = Some(acc.map_or(cell, |a| a.union(&cell)));
            }
        }
    }
    acc
}

fn straddles(c: &CellCorners) -> bool {
    let (lo, hi) = c
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    lo <= 0.0 && hi >= 0.0
}

/// The first root of the trilinear field of one cell along `ray` (index space, `origin`
/// relative to the cell's first corner) in `[t0, t1]`.
fn cell_root(c: &CellCorners, ray: &Ray, t0: f64, t1: f64) -> Option<f64> {
    let f = |t: f64| trilinear(c, ray.at(t));
    let mut ta = t0;
    let mut fa = f(ta);
    if fa == 0.0 {
        return Some(ta);
    }
    for s in 1..CELL_SAMPLES {
        let tb = t0 + (t1 - t0) * s as f64 / (CELL_SAMPLES - 1) as f64;
        let fb = f(tb);
        if fa * fb <= 0.0 {
            return Some(refine_root(&f, ta, fa, tb, fb));
        }
        ta = tb;
        fa = fb;
    }
    None
}

/// Illinois regula falsi on a sign-changing bracket; stops when the bracket stops shrinking.
fn refine_root(f: &impl Fn(f64) -> f64, mut a: f64, mut fa: f64, mut b: f64, mut fb: f64) -> f64 {
    if fb == 0.0 {
        return b;
    }
    let mut side = 0i8;
    for _ in 0..ROOT_ITERATIONS {
        let denom = fb - fa;
        let mut m = if denom != 0.0 {
            b - fb * (b - a) / denom
        } else {
            0.5 * (a + b)
        };
        if !(m > a.min(b) && m < a.max(b)) {
            m = 0.5 * (a + b);
        }
        if m == a || m == b {
            break;
        }
        let fm = f(m);
        if fm == 0.0 {
            return m;
        }
        if fm * fb < 0.0 {
            a = b;
            fa = fb;
            b = m;
            fb = fm;
            if side == -1 {
                fa *= 0.5;
            }
            side = -1;
        } else {
            b = m;
            fb = fm;
            if side == 1 {
                fa *= 0.5;
            }
            side = 1;
        }
    }
    // The root of the bracket's secant: the better of the two ends is within the bracket.
    if fa.abs() < fb.abs() {
        a
    } else {
        b
    }
}

impl Surface for GridSurface {
    fn bounds(&self) -> Aabb {
        self.bounds
    }

    fn intersect(&self, ray: &Ray, t_min: f64, t_max: f64) -> Option<SurfaceHit> {
        let domain = self.bricks.index_bounds()?;
        let iray = self.map.ray_to_index(ray);
        let (t0, t1) = domain.clip(&iray, t_min, t_max)?;
        for (block, bt0, bt1) in Dda::new(&iray, t0, t1, BRICK)? {
            let Some(slot) = self.bricks.slot(block) else {
                continue;
            };
            let (Some(brick), Some(mask)) = (self.bricks.values(slot), self.crossings.get(slot))
            else {
                continue;
            };
            let base = Vec3::from_array(block.map(|b| f64::from(b * BRICK)));
            let local_ray = Ray {
                origin: iray.origin - base,
                dir: iray.dir,
            };
            for (cell, ct0, ct1) in Dda::new(&local_ray, bt0, bt1, 1)? {
                let c = cell.map(|v| v.clamp(0, BRICK - 1) as usize);
                if mask[c[0]] >> (c[1] * 8 + c[2]) & 1 == 0 {
                    continue;
                }
                let corners = cell_corners(brick, c);
                let cell_base = Vec3::new(c[0] as f64, c[1] as f64, c[2] as f64);
                let cell_ray = Ray {
                    origin: local_ray.origin - cell_base,
                    dir: iray.dir,
                };
                if let Some(t) = cell_root(&corners, &cell_ray, ct0, ct1) {
                    let l = cell_ray.at(t);
                    let l = Vec3::new(
                        l.x.clamp(0.0, 1.0),
                        l.y.clamp(0.0, 1.0),
                        l.z.clamp(0.0, 1.0),
                    );
                    let g = trilinear_gradient(&corners, l);
                    let normal = self.map.gradient_to_world(g).normalized();
                    return Some(SurfaceHit { t, normal });
                }
            }
        }
        None
    }
}

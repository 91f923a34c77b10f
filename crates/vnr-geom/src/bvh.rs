//! A bounding volume hierarchy over a triangle mesh: closest-point and ray queries.
//!
//! Built top-down with a binned surface-area heuristic (16 bins per split, leaves of at most
//! [`MAX_LEAF_TRIANGLES`] triangles); large subtrees are built in parallel with rayon. Nodes live
//! in one flat depth-first array (a node's left child directly follows it), and the triangles'
//! corners are copied in leaf order, so a traversal reads memory mostly front to back.
//!
//! Closest-point queries walk a copy of the tree collapsed to four children per node, whose
//! four boxes sit side by side so that one vector register measures all four distances; the
//! nearest child is searched first and every box farther than the best distance so far is
//! skipped. A leaf's triangles are stored beside it as planes (each triangle's own plane and its
//! three edges' outward planes, four triangles side by side): sixteen vector multiply-adds give
//! lower bounds on the four distances, exact in the face and edge regions, and only the
//! triangles these bounds do not rule out get the exact test (on the bunny this drops the exact
//! tests per query from 55 to 24 for points in its box, and to 7 for DeepSDF's near-surface
//! points; the rest are near-ties around a shared corner). Batched queries
//! ([`Bvh::closest_points`], and the winding-number and signed-distance batches) visit the
//! points in Morton order, a run of neighbours per rayon task: neighbours touch the same nodes,
//! and each query starts from the previous one's closest triangle, whose distance bounds the
//! search before the first descent. Ray queries walk the binary tree.
//!
//! Per-triangle arithmetic is done in `f64` ([`Vec3`]): closest points stay exact to `f32`
//! rounding even for long thin triangles, and degenerate triangles (zero area, repeated
//! corners) are treated as segments or points, so no query ever produces NaN. The plane bounds
//! are `f32` with a rounding allowance, so they never skip a triangle the exact test would pick
//! ([`closest_point_brute_force`] is the plain reference the tests compare with).

use rayon::prelude::*;
use vnr_formats::mesh::{MeshError, TriangleMesh};

use crate::vec3::Vec3;

/// The most triangles a leaf holds.
pub const MAX_LEAF_TRIANGLES: usize = 4;

/// Split candidates per axis of the binned SAH.
const SAH_BINS: usize = 16;

/// Cost of visiting a node relative to one triangle test, for the SAH.
const TRAVERSAL_COST: f32 = 1.0;

/// Subtrees with more triangles than this are built on another rayon task.
const PARALLEL_BUILD_MIN: usize = 8192;

/// Below this depth the SAH picks splits; deeper (only for adversarial inputs, where the SAH
/// peels off a few triangles per level) the builder halves by object median, so the depth and
/// the builder's recursion stay logarithmic.
const SAH_MAX_DEPTH: usize = 48;

/// Errors from building geometry structures on a mesh.
#[derive(Debug, thiserror::Error)]
pub enum GeometryError {
    /// The mesh breaks the [`TriangleMesh`] invariants (an index out of range, a NaN vertex).
    #[error("invalid mesh: {0}")]
    InvalidMesh(#[from] MeshError),
    /// The mesh has no triangles.
    #[error("the mesh has no triangles")]
    EmptyMesh,
    /// More triangles than the `u32` triangle ids can address.
    #[error("{0} triangles exceed the u32 triangle ids")]
    TooManyTriangles(usize),
    /// A size option is above its limit (refused before anything of that size is allocated).
    #[error("{name} {value} is above the limit of {max}")]
    OptionTooLarge {
        /// The option, e.g. `virtual scan views`.
        name: &'static str,
        /// The value asked for.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
}

/// An axis-aligned box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aabb {
    /// Smallest corner.
    pub min: [f32; 3],
    /// Largest corner.
    pub max: [f32; 3],
}

impl Aabb {
    /// The empty box (grows from nothing under [`Aabb::grow`]).
    pub const EMPTY: Aabb = Aabb {
        min: [f32::INFINITY; 3],
        max: [f32::NEG_INFINITY; 3],
    };

    /// Extends the box to hold `p`.
    pub fn grow(&mut self, p: [f32; 3]) {
        self.union(&Aabb { min: p, max: p });
    }

    /// Extends the box to hold `other`.
    pub fn union(&mut self, other: &Aabb) {
        for k in 0..3 {
            self.min[k] = self.min[k].min(other.min[k]);
            self.max[k] = self.max[k].max(other.max[k]);
        }
    }

    /// Half the surface area (the SAH only compares areas); 0 for an empty box.
    fn half_area(&self) -> f32 {
        let d: [f32; 3] = std::array::from_fn(|k| (self.max[k] - self.min[k]).max(0.0));
        d[0] * d[1] + d[1] * d[2] + d[2] * d[0]
    }

    /// Squared distance from `p` to the box (0 inside).
    pub fn distance_squared(&self, p: [f32; 3]) -> f32 {
        (0..3)
            .map(|k| {
                let d = (self.min[k] - p[k]).max(p[k] - self.max[k]).max(0.0);
                d * d
            })
            .sum()
    }

    /// Centre of the box.
    pub fn centre(&self) -> [f32; 3] {
        std::array::from_fn(|k| 0.5 * (self.min[k] + self.max[k]))
    }

    /// The ray's parameter interval inside the box, clipped to `[0, t_max]`, if not empty.
    fn ray_interval(&self, origin: [f32; 3], inv_dir: [f32; 3], t_max: f32) -> Option<f32> {
        let mut near = 0.0f32;
        let mut far = t_max;
        for k in 0..3 {
            let t0 = (self.min[k] - origin[k]) * inv_dir[k];
            let t1 = (self.max[k] - origin[k]) * inv_dir[k];
            // `min`/`max` drop a NaN operand (0 · ∞ when the origin lies on a slab plane of a
            // zero direction component), which treats that slab as not limiting.
            near = near.max(t0.min(t1));
            far = far.min(t0.max(t1));
        }
        (near <= far).then_some(near)
    }
}

/// One node of the flat array (32 bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    pub(crate) bounds: Aabb,
    /// Leaf: index of the first triangle in leaf order. Interior: index of the right child
    /// (the left child is the next node).
    pub(crate) index: u32,
    /// Leaf: number of triangles (≥ 1). Interior: 0.
    pub(crate) count: u32,
}

impl Node {
    pub(crate) fn is_leaf(&self) -> bool {
        self.count > 0
    }

    /// Range of this leaf's triangles in leaf order.
    pub(crate) fn triangle_range(&self) -> std::ops::Range<usize> {
        self.index as usize..self.index as usize + self.count as usize
    }
}

/// The closest point of the mesh to a query point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosestPoint {
    /// The closest point on the surface.
    pub point: [f32; 3],
    /// Id of the triangle holding it (index into the mesh's `triangles`).
    pub triangle: u32,
    /// Barycentric coordinates of `point` on that triangle (weights of corners 0, 1, 2).
    pub barycentric: [f32; 3],
    /// Squared distance from the query to `point`.
    pub distance_squared: f32,
}

/// A ray `origin + t·direction`, `t ≥ 0`; `direction` need not be unit length (then `t` is in
/// units of its length).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ray {
    /// Start point.
    pub origin: [f32; 3],
    /// Direction.
    pub direction: [f32; 3],
}

/// Where a ray meets a triangle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RayHit {
    /// Ray parameter of the hit.
    pub t: f32,
    /// Id of the triangle hit (index into the mesh's `triangles`).
    pub triangle: u32,
    /// Barycentric coordinates of the hit on that triangle.
    pub barycentric: [f32; 3],
}

/// A binned-SAH bounding volume hierarchy over a mesh's triangles.
#[derive(Debug, Clone)]
pub struct Bvh {
    pub(crate) nodes: Vec<Node>,
    /// The same tree collapsed to four children per node, for closest-point queries.
    wide: Vec<WideNode>,
    /// Each leaf's triangles as planes, for the lower bounds that skip most exact
    /// closest-point tests; a leaf lane of a [`WideNode`] names its pack.
    packs: Vec<LeafPack>,
    /// Rounding allowance of the packs' bounds: [`PLANE_ROUNDING`] × the largest `|x|+|y|+|z|`
    /// of a corner (the bound at `p` subtracts `PLANE_ROUNDING·(|p|₁) + plane_slack`).
    plane_slack: f32,
    /// Corners of each triangle, in leaf order.
    pub(crate) corners: Vec<[[f32; 3]; 3]>,
    /// Mesh triangle id of each triangle, in leaf order.
    pub(crate) ids: Vec<u32>,
}

/// Per-thread scratch space of closest-point queries.
#[derive(Debug, Default)]
pub(crate) struct ClosestScratch {
    /// Traversal stack: wide node, its box's squared distance.
    stack: Vec<(u32, f32)>,
    /// Leaf-order index of the previous query's closest triangle.
    last: Option<u32>,
}

/// Query points per rayon task in [`coherent_map`]: enough for the warm starts of consecutive
/// queries to pay, few enough to balance the load.
const COHERENT_CHUNK: usize = 512;

/// Bits per axis of the Morton codes that order batched queries.
const MORTON_BITS: u32 = 10;

/// Runs `query` on every point, in parallel, and returns the results in the order of `points`.
///
/// The points are visited in Morton (Z-order) order of their bounding box, in chunks of
/// [`COHERENT_CHUNK`] consecutive points per task with one `init()` state each: neighbouring
/// queries then walk the same tree nodes (cache hits), and a query's state (such as the
/// previous closest triangle) is a good start for the next one. A query's result does not
/// depend on the order, up to which of exactly equidistant triangles is reported. (Batches of
/// 2³² points or more, whose indices do not fit the sort keys, run in input order.)
pub(crate) fn coherent_map<S, R>(
    points: &[[f32; 3]],
    init: impl Fn() -> S + Sync + Send,
    query: impl Fn(&mut S, [f32; 3]) -> R + Sync + Send,
) -> Vec<R>
where
    R: Copy + Send + Sync,
{
    if u32::try_from(points.len()).is_err() {
        return points
            .par_iter()
            .map_init(&init, |state, &p| query(state, p))
            .collect();
    }
    let order = morton_order(points);
    let sorted: Vec<R> = order
        .par_chunks(COHERENT_CHUNK)
        .flat_map_iter(|chunk| {
            let mut state = init();
            chunk
                .iter()
                .map(|&i| query(&mut state, points[i as usize]))
                .collect::<Vec<R>>()
        })
        .collect();
    let mut rank = vec![0u32; points.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    rank.par_iter().map(|&r| sorted[r as usize]).collect()
}

/// Indices of `points` sorted by the Morton code of their position in the box of the finite
/// points ([`MORTON_BITS`] per axis; ties and non-finite points keep their input order).
fn morton_order(points: &[[f32; 3]]) -> Vec<u32> {
    let mut bounds = Aabb::EMPTY;
    for p in points.iter().filter(|p| p.iter().all(|c| c.is_finite())) {
        bounds.grow(*p);
    }
    let cells = (1u32 << MORTON_BITS) as f32;
    let scale: [f32; 3] = std::array::from_fn(|k| {
        let extent = bounds.max[k] - bounds.min[k];
        if extent > 0.0 && extent.is_finite() {
            cells / extent
        } else {
            0.0
        }
    });
    let mut keys: Vec<u64> = points
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut code = 0u64;
            for k in 0..3 {
                // `as` saturates: NaN → 0, beyond the box → the last cell.
                let cell = (((p[k] - bounds.min[k]) * scale[k]) as u32).min((1 << MORTON_BITS) - 1);
                code |= spread_bits(cell) << k;
            }
            code << 32 | i as u64
        })
        .collect();
    keys.par_sort_unstable();
    keys.into_iter().map(|key| key as u32).collect()
}

/// Spreads the low [`MORTON_BITS`] bits of `x` to every third bit.
fn spread_bits(x: u32) -> u64 {
    let mut x = u64::from(x) & 0x3ff;
    x = (x | x << 16) & 0x0300_00ff;
    x = (x | x << 8) & 0x0300_f00f;
    x = (x | x << 4) & 0x030c_30c3;
    (x | x << 2) & 0x0924_9249
}

/// Children per node of the collapsed tree.
const WIDTH: usize = 4;

/// A node of the four-wide tree: its children's boxes side by side (one axis of four boxes per
/// array, so the four box distances are computed in one vector register) and their links.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct WideNode {
    /// `min[axis][lane]`: smallest corner of each child's box.
    min: [[f32; WIDTH]; 3],
    /// `max[axis][lane]`: largest corner of each child's box.
    max: [[f32; WIDTH]; 3],
    /// Interior child: index of its wide node. Leaf: index of its [`LeafPack`].
    child: [u32; WIDTH],
    /// Leaf: number of triangles (≥ 1). Interior child or unused lane: 0 (an unused lane's box
    /// is empty, `min = +∞`, `max = −∞`, so it is infinitely far from every point).
    count: [u32; WIDTH],
}

impl WideNode {
    /// Squared distances from `p` to the four children's boxes (+∞ for unused lanes).
    fn distances_squared(&self, p: [f32; 3]) -> [f32; WIDTH] {
        let mut d2 = [0.0f32; WIDTH];
        for (k, &c) in p.iter().enumerate() {
            for ((d2, &lo), &hi) in d2.iter_mut().zip(&self.min[k]).zip(&self.max[k]) {
                // Plain comparisons (not `f32::max`, which must honour NaN) compile to
                // vector max instructions; the boxes and `p` are finite.
                let below = lo - c;
                let above = c - hi;
                let d = if below > above { below } else { above };
                let d = if d > 0.0 { d } else { 0.0 };
                *d2 += d * d;
            }
        }
        d2
    }
}

/// Triangles per [`LeafPack`] (the lanes of one SSE register): a whole leaf.
const PACK: usize = 4;
const _: () = assert!(MAX_LEAF_TRIANGLES <= PACK);

/// Relative rounding allowance of the f32 plane bounds (≈ 17 f32 ulps; the evaluation of
/// `m·p − o` with rounded `m` and `o` is off by at most about 5 ulps of `|p|₁ + |o|`).
const PLANE_ROUNDING: f32 = 1e-6;

/// The (up to [`PACK`]) triangles of a leaf as planes, side by side (`[plane][component][lane]`,
/// component 3 the offset): plane 0 is the triangle's own (unit normal `n`, `n·a`), planes
/// 1–3 its edges' (unit `m` in the triangle's plane, perpendicular to the edge and pointing
/// away from the triangle, `m·(edge start)`).
///
/// With `s₀ = |n·p − n·a|` and `sₑ = m·p − m·(edge start)`, the triangle lies in the plane and
/// on the inner side of every edge plane, which are perpendicular to it, so
/// `dist(p, triangle)² ≥ s₀² + max(0, max sₑ)²` — equal to the distance in the face and edge
/// regions, a close lower bound near corners. Four triangles' bounds cost sixteen vector
/// multiply-adds, where an exact test branches through Voronoi regions in `f64`; the
/// traversal runs exact tests only where the bound does not rule a triangle out. A degenerate
/// triangle (no normal) gets all-zero planes: bound 0, always tested exactly.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct LeafPack {
    planes: [[[f32; PACK]; 4]; 4],
    /// The leaf's first triangle in leaf order (lane `l` holds triangle `start + l`).
    start: u32,
}

impl LeafPack {
    /// The pack of the leaf whose triangles are `corners[start..start + count]` (in leaf
    /// order); unused lanes stay zero (the traversal never reads them).
    fn new(corners: &[[[f32; 3]; 3]], start: usize) -> Self {
        let mut pack = LeafPack {
            planes: [[[0.0; PACK]; 4]; 4],
            start: start as u32,
        };
        for (lane, tri) in corners.iter().enumerate() {
            for (plane, [mx, my, mz, o]) in triangle_planes(tri).into_iter().enumerate() {
                pack.planes[plane][0][lane] = mx;
                pack.planes[plane][1][lane] = my;
                pack.planes[plane][2][lane] = mz;
                pack.planes[plane][3][lane] = o;
            }
        }
        pack
    }

    /// Lower bounds on the squared distances from `p` to the pack's triangles; `slack`
    /// covers the rounding of the planes and of this evaluation.
    #[inline]
    fn lower_bounds(&self, p: [f32; 3], slack: f32) -> [f32; PACK] {
        // `signed[k][l]`: lane `l`'s signed distance to plane `k`. Plain loops over arrays
        // (no closures) so that the compiler keeps the lanes in vector registers.
        let mut signed = [[0.0f32; PACK]; 4];
        for (out, plane) in signed.iter_mut().zip(&self.planes) {
            for l in 0..PACK {
                out[l] = plane[0][l] * p[0] + plane[1][l] * p[1] + plane[2][l] * p[2] - plane[3][l];
            }
        }
        let mut bounds = [0.0f32; PACK];
        for l in 0..PACK {
            // Plain comparisons (not `f32::max`, which must honour NaN) vectorise.
            let f = signed[0][l].abs() - slack;
            let f = if f > 0.0 { f } else { 0.0 };
            let e = if signed[1][l] > signed[2][l] {
                signed[1][l]
            } else {
                signed[2][l]
            };
            let e = if e > signed[3][l] { e } else { signed[3][l] } - slack;
            let e = if e > 0.0 { e } else { 0.0 };
            bounds[l] = f * f + e * e;
        }
        bounds
    }
}

/// The face plane and the three outward edge planes of a triangle (see [`LeafPack`]),
/// computed in `f64` and rounded; all zero for a triangle without a normal.
fn triangle_planes(tri: &[[f32; 3]; 3]) -> [[f32; 4]; 4] {
    let [a, b, c] = tri.map(Vec3::from_f32);
    let normal = (b - a).cross(c - a);
    let length = normal.length();
    if !(length > 0.0 && length.is_finite()) {
        return [[0.0; 4]; 4];
    }
    let n = normal / length;
    let plane = |m: Vec3, at: Vec3| {
        if m.is_finite() {
            let [x, y, z] = m.to_f32();
            [x, y, z, m.dot(at) as f32]
        } else {
            [0.0; 4]
        }
    };
    // The outward unit normal of edge `from → to` in the triangle's plane, and its offset.
    let edge = |from: Vec3, to: Vec3| plane((to - from).cross(n).normalized(), from);
    [plane(n, a), edge(a, b), edge(b, c), edge(c, a)]
}

/// Collapses the binary tree into a four-wide one: each wide node takes its binary node's
/// children and keeps replacing the interior child of largest surface by that child's two
/// children until it has four. A leaf child's triangles (`corners` in leaf order) go into
/// `packs`.
fn widen(nodes: &[Node], corners: &[[[f32; 3]; 3]], packs: &mut Vec<LeafPack>) -> Vec<WideNode> {
    let empty = WideNode {
        min: [[f32::INFINITY; WIDTH]; 3],
        max: [[f32::NEG_INFINITY; WIDTH]; 3],
        child: [0; WIDTH],
        count: [0; WIDTH],
    };
    let mut wide = vec![empty];
    // (binary node, its wide node) still to fill.
    let mut todo = vec![(0usize, 0usize)];
    while let Some((binary, at)) = todo.pop() {
        let root = &nodes[binary];
        let mut kids = [0usize; WIDTH];
        let mut n = if root.is_leaf() {
            kids[0] = binary;
            1
        } else {
            kids[0] = binary + 1;
            kids[1] = root.index as usize;
            2
        };
        while n < WIDTH {
            let widest = (0..n)
                .filter(|&i| !nodes[kids[i]].is_leaf())
                .max_by(|&a, &b| {
                    let area = |i: usize| nodes[kids[i]].bounds.half_area();
                    area(a).total_cmp(&area(b))
                });
            let Some(i) = widest else { break };
            let opened = kids[i];
            kids[i] = opened + 1;
            kids[n] = nodes[opened].index as usize;
            n += 1;
        }
        let mut node = empty;
        for (lane, &kid) in kids[..n].iter().enumerate() {
            let k = &nodes[kid];
            for axis in 0..3 {
                node.min[axis][lane] = k.bounds.min[axis];
                node.max[axis][lane] = k.bounds.max[axis];
            }
            if k.is_leaf() {
                node.child[lane] = packs.len() as u32;
                node.count[lane] = k.count;
                packs.push(LeafPack::new(
                    &corners[k.triangle_range()],
                    k.index as usize,
                ));
            } else {
                node.child[lane] = wide.len() as u32;
                node.count[lane] = 0;
                todo.push((kid, wide.len()));
                wide.push(empty);
            }
        }
        wide[at] = node;
    }
    wide
}

/// Per-triangle data while building.
#[derive(Clone, Copy)]
struct BuildTriangle {
    bounds: Aabb,
    centroid: [f32; 3],
    id: u32,
}

impl Bvh {
    /// Builds the hierarchy over every triangle of `mesh` (degenerate ones included: they are
    /// valid closest-point targets).
    pub fn new(mesh: &TriangleMesh) -> Result<Self, GeometryError> {
        mesh.validate()?;
        if mesh.triangles.is_empty() {
            return Err(GeometryError::EmptyMesh);
        }
        if u32::try_from(mesh.triangles.len()).is_err() {
            return Err(GeometryError::TooManyTriangles(mesh.triangles.len()));
        }
        let corners_of = |t: &[u32; 3]| t.map(|i| mesh.positions[i as usize]);
        let mut items: Vec<BuildTriangle> = mesh
            .triangles
            .par_iter()
            .enumerate()
            .map(|(id, t)| {
                let mut bounds = Aabb::EMPTY;
                for p in corners_of(t) {
                    bounds.grow(p);
                }
                BuildTriangle {
                    bounds,
                    centroid: bounds.centre(),
                    id: id as u32,
                }
            })
            .collect();
        let nodes = build(&mut items, 0, 0);
        let ids: Vec<u32> = items.iter().map(|t| t.id).collect();
        let corners: Vec<[[f32; 3]; 3]> = ids
            .iter()
            .map(|&id| corners_of(&mesh.triangles[id as usize]))
            .collect();
        let mut packs = Vec::with_capacity(nodes.len() / 2 + 1);
        let wide = widen(&nodes, &corners, &mut packs);
        let largest = corners
            .iter()
            .flatten()
            .map(|v| v.iter().map(|x| x.abs()).sum::<f32>())
            .fold(0.0f32, f32::max);
        Ok(Self {
            wide,
            packs,
            plane_slack: PLANE_ROUNDING * largest,
            nodes,
            corners,
            ids,
        })
    }

    /// Number of triangles.
    pub fn triangle_count(&self) -> usize {
        self.ids.len()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Bounds of the whole mesh.
    pub fn bounds(&self) -> Aabb {
        self.nodes[0].bounds
    }

    /// The closest surface point to `p` no farther than `max_distance` (use `f32::INFINITY` for
    /// no cutoff); `None` when every triangle is farther.
    pub fn closest_point(&self, p: [f32; 3], max_distance: f32) -> Option<ClosestPoint> {
        self.closest_point_with_scratch(p, max_distance, &mut ClosestScratch::default())
    }

    /// [`Bvh::closest_point`] for many points, in parallel (visited in Morton order, so that
    /// neighbouring queries share tree nodes; the results are in the order of `points`).
    pub fn closest_points(
        &self,
        points: &[[f32; 3]],
        max_distance: f32,
    ) -> Vec<Option<ClosestPoint>> {
        coherent_map(points, ClosestScratch::default, |scratch, p| {
            self.closest_point_with_scratch(p, max_distance, scratch)
        })
    }

    /// Distance from `p` to the surface (no cutoff).
    pub fn distance(&self, p: [f32; 3]) -> f32 {
        self.closest_point(p, f32::INFINITY)
            .map_or(f32::INFINITY, |c| c.distance_squared.sqrt())
    }

    /// [`Bvh::closest_point`] with reusable scratch space. The closest triangle of the previous
    /// query made with the same scratch is tested first: for coherent queries (neighbours in
    /// Morton order) its distance is already close to the answer and prunes most of the tree
    /// before the first descent.
    pub(crate) fn closest_point_with_scratch(
        &self,
        p: [f32; 3],
        max_distance: f32,
        scratch: &mut ClosestScratch,
    ) -> Option<ClosestPoint> {
        if p.iter().any(|c| !c.is_finite()) || max_distance.is_nan() {
            return None;
        }
        let pd = Vec3::from_f32(p);
        let mut best_d2 = if max_distance.is_finite() {
            f64::from(max_distance) * f64::from(max_distance)
        } else {
            f64::INFINITY
        };
        let mut best: Option<(usize, Vec3, [f64; 3])> = None;
        if let Some(t) = scratch.last.filter(|&t| (t as usize) < self.corners.len()) {
            let t = t as usize;
            let (q, bary) = closest_on_triangle(pd, &self.corners[t]);
            let d2 = (pd - q).length_squared();
            if d2 <= best_d2 {
                best_d2 = d2;
                best = Some((t, q, bary));
            }
        }
        // Box distances are in f32 and may round up past the f64 best by an ulp, so they are
        // compared with a little slack rather than skip a box that could hold the exact winner.
        // The limit stays finite, so that the unused lanes' infinite distances exceed it.
        let slack = |best_d2: f64| ((best_d2 * (1.0 + 1e-6)) as f32).min(f32::MAX);
        let mut limit = slack(best_d2);
        // The stack holds children with their box distance, so one pushed before the best
        // shrank is dropped on pop without recomputing its box distance.
        let stack = &mut scratch.stack;
        stack.clear();
        let root = self.nodes[0].bounds.distance_squared(p);
        if root <= limit {
            stack.push((0, root));
        }
        // Rounding allowance of the plane bounds at `p` (see `LeafPack`).
        let plane_slack =
            PLANE_ROUNDING * p.iter().map(|c| c.abs()).sum::<f32>() + self.plane_slack;
        // Tests the `count` triangles of the leaf packed in `pack` against the best so far:
        // the plane bounds rule out most of them, the rest get the exact test.
        let mut test_leaf = |pack: &LeafPack, count: usize, best_d2: &mut f64, limit: &mut f32| {
            let bounds = pack.lower_bounds(p, plane_slack);
            for (lane, &bound) in bounds.iter().enumerate().take(count) {
                if bound > *limit {
                    continue;
                }
                let t = pack.start as usize + lane;
                let (q, bary) = closest_on_triangle(pd, &self.corners[t]);
                let d2 = (pd - q).length_squared();
                if d2 <= *best_d2 {
                    *best_d2 = d2;
                    *limit = slack(d2);
                    best = Some((t, q, bary));
                }
            }
        };
        while let Some((index, box_d2)) = stack.pop() {
            if box_d2 > limit {
                continue;
            }
            let node = &self.wide[index as usize];
            let d2 = node.distances_squared(p);
            // Leaf children are tested at once; interior ones are pushed farthest first, so
            // the nearest is searched first.
            let mut open = [(0u32, 0.0f32); WIDTH];
            let mut n = 0;
            for (lane, &d) in d2.iter().enumerate() {
                if d > limit {
                    continue;
                }
                let count = node.count[lane];
                let child = node.child[lane];
                if count > 0 {
                    let pack = &self.packs[child as usize];
                    test_leaf(pack, count as usize, &mut best_d2, &mut limit);
                    continue;
                }
                let mut at = n;
                while at > 0 && open[at - 1].1 < d {
                    open[at] = open[at - 1];
                    at -= 1;
                }
                open[at] = (child, d);
                n += 1;
            }
            for &entry in &open[..n] {
                stack.push(entry);
            }
        }
        scratch.last = best.map(|(t, _, _)| t as u32);
        best.map(|(t, q, bary)| ClosestPoint {
            point: q.to_f32(),
            triangle: self.ids[t],
            barycentric: bary.map(|c| c as f32),
            distance_squared: best_d2 as f32,
        })
    }

    /// The nearest hit of `ray` with `0 ≤ t ≤ t_max`.
    pub fn intersect(&self, ray: &Ray, t_max: f32) -> Option<RayHit> {
        self.traverse_ray(ray, t_max, false, &mut Vec::new())
    }

    /// Whether `ray` hits anything with `0 ≤ t ≤ t_max` (stops at the first hit found).
    pub fn occluded(&self, ray: &Ray, t_max: f32) -> bool {
        self.traverse_ray(ray, t_max, true, &mut Vec::new())
            .is_some()
    }

    /// [`Bvh::intersect`] for many rays, in parallel.
    pub fn intersect_all(&self, rays: &[Ray], t_max: f32) -> Vec<Option<RayHit>> {
        rays.par_iter()
            .map_init(Vec::new, |stack, ray| {
                self.traverse_ray(ray, t_max, false, stack)
            })
            .collect()
    }

    /// [`Bvh::occluded`] for many rays, in parallel.
    pub fn occluded_all(&self, rays: &[Ray], t_max: f32) -> Vec<bool> {
        rays.par_iter()
            .map_init(Vec::new, |stack, ray| {
                self.traverse_ray(ray, t_max, true, stack).is_some()
            })
            .collect()
    }

    pub(crate) fn first_hit_with_stack(
        &self,
        ray: &Ray,
        t_max: f32,
        stack: &mut Vec<u32>,
    ) -> Option<RayHit> {
        self.traverse_ray(ray, t_max, false, stack)
    }

    fn traverse_ray(
        &self,
        ray: &Ray,
        t_max: f32,
        any_hit: bool,
        stack: &mut Vec<u32>,
    ) -> Option<RayHit> {
        let finite = |v: [f32; 3]| v.iter().all(|c| c.is_finite());
        if !finite(ray.origin)
            || !finite(ray.direction)
            || ray.direction == [0.0; 3]
            || t_max.is_nan()
            || t_max < 0.0
        {
            return None;
        }
        let inv_dir = ray.direction.map(|d| 1.0 / d);
        let origin = Vec3::from_f32(ray.origin);
        let direction = Vec3::from_f32(ray.direction);
        let mut best_t = f64::from(t_max);
        let mut best: Option<RayHit> = None;
        stack.clear();
        stack.push(0);
        while let Some(i) = stack.pop() {
            let node = &self.nodes[i as usize];
            let Some(entry) = node.bounds.ray_interval(ray.origin, inv_dir, best_t as f32) else {
                continue;
            };
            if f64::from(entry) > best_t {
                continue;
            }
            if node.is_leaf() {
                for t in node.triangle_range() {
                    if let Some((hit_t, bary)) =
                        intersect_triangle(origin, direction, &self.corners[t])
                    {
                        if hit_t <= best_t {
                            best_t = hit_t;
                            best = Some(RayHit {
                                t: hit_t as f32,
                                triangle: self.ids[t],
                                barycentric: bary.map(|c| c as f32),
                            });
                            if any_hit {
                                return best;
                            }
                        }
                    }
                }
            } else {
                // Visit the child on the ray's near side first along the split's main axis.
                let left = i + 1;
                let right = node.index;
                let lc = self.nodes[left as usize].bounds.centre();
                let rc = self.nodes[right as usize].bounds.centre();
                let towards: f32 = (0..3).map(|k| (rc[k] - lc[k]) * ray.direction[k]).sum();
                if towards >= 0.0 {
                    stack.push(right);
                    stack.push(left);
                } else {
                    stack.push(left);
                    stack.push(right);
                }
            }
        }
        best
    }
}

/// Builds the subtree over `items` (which sit at `offset` in the leaf order), returning its
/// nodes with indices relative to the subtree's first node.
fn build(items: &mut [BuildTriangle], offset: usize, depth: usize) -> Vec<Node> {
    let mut bounds = Aabb::EMPTY;
    let mut centroid_bounds = Aabb::EMPTY;
    for t in items.iter() {
        bounds.union(&t.bounds);
        centroid_bounds.grow(t.centroid);
    }
    let n = items.len();
    let leaf = |bounds| {
        vec![Node {
            bounds,
            index: offset as u32,
            count: n as u32,
        }]
    };
    if n <= 1 {
        return leaf(bounds);
    }
    let mid = match choose_split(items, &bounds, &centroid_bounds, depth) {
        Split::Leaf => return leaf(bounds),
        Split::At(mid) => mid,
    };
    let (left_items, right_items) = items.split_at_mut(mid);
    let (left, right) = if n > PARALLEL_BUILD_MIN {
        rayon::join(
            || build(left_items, offset, depth + 1),
            || build(right_items, offset + mid, depth + 1),
        )
    } else {
        (
            build(left_items, offset, depth + 1),
            build(right_items, offset + mid, depth + 1),
        )
    };
    let right_start = 1 + left.len();
    let mut nodes = Vec::with_capacity(right_start + right.len());
    nodes.push(Node {
        bounds,
        index: right_start as u32,
        count: 0,
    });
    nodes.extend(left.into_iter().map(|node| relocate(node, 1)));
    nodes.extend(right.into_iter().map(|node| relocate(node, right_start)));
    nodes
}

/// Moves a subtree node by `by` positions (interior nodes hold a node index; leaves a triangle
/// index, which does not move).
fn relocate(mut node: Node, by: usize) -> Node {
    if !node.is_leaf() {
        node.index += by as u32;
    }
    node
}

enum Split {
    Leaf,
    /// Split after the first `usize` items (which have been partitioned).
    At(usize),
}

/// Picks and applies a split of `items`: binned SAH on the axis of largest centroid extent;
/// a leaf when that is cheaper and small enough; a median split when the SAH cannot separate
/// the centroids or the tree is already deep.
fn choose_split(
    items: &mut [BuildTriangle],
    bounds: &Aabb,
    centroid_bounds: &Aabb,
    depth: usize,
) -> Split {
    let n = items.len();
    let extent: [f32; 3] = std::array::from_fn(|k| centroid_bounds.max[k] - centroid_bounds.min[k]);
    let axis = (0..3)
        .max_by(|&a, &b| extent[a].total_cmp(&extent[b]))
        .unwrap_or(0);
    let lo = centroid_bounds.min[axis];
    let width = extent[axis];
    if !(width > 0.0 && width.is_finite()) || depth >= SAH_MAX_DEPTH {
        if n <= MAX_LEAF_TRIANGLES {
            return Split::Leaf;
        }
        let mid = n / 2;
        items.select_nth_unstable_by(mid, |a, b| a.centroid[axis].total_cmp(&b.centroid[axis]));
        return Split::At(mid);
    }
    let bin_of = |t: &BuildTriangle| {
        let b = ((t.centroid[axis] - lo) / width * SAH_BINS as f32) as usize;
        b.min(SAH_BINS - 1)
    };
    let mut bin_bounds = [Aabb::EMPTY; SAH_BINS];
    let mut bin_counts = [0usize; SAH_BINS];
    for t in items.iter() {
        let b = bin_of(t);
        bin_bounds[b].union(&t.bounds);
        bin_counts[b] += 1;
    }
    // Sweep from the right: the cost of everything right of each plane.
    let mut right_cost = [0.0f32; SAH_BINS];
    let mut acc = Aabb::EMPTY;
    let mut count = 0;
    for b in (1..SAH_BINS).rev() {
        acc.union(&bin_bounds[b]);
        count += bin_counts[b];
        right_cost[b] = acc.half_area() * count as f32;
    }
    let mut best: Option<(f32, usize)> = None;
    let mut acc = Aabb::EMPTY;
    let mut left_count = 0;
    for b in 0..SAH_BINS - 1 {
        acc.union(&bin_bounds[b]);
        left_count += bin_counts[b];
        if left_count == 0 || left_count == n {
            continue;
        }
        let cost = acc.half_area() * left_count as f32 + right_cost[b + 1];
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, b));
        }
    }
    // Costs in units of one triangle test; visiting a node costs about as much
    // (TRAVERSAL_COST), which is what makes leaves of a few triangles pay.
    let leaf_cost = bounds.half_area() * n as f32;
    match best {
        Some((cost, _))
            if n <= MAX_LEAF_TRIANGLES
                && TRAVERSAL_COST * bounds.half_area() + cost >= leaf_cost =>
        {
            Split::Leaf
        }
        Some((_, plane)) => {
            let mut mid = 0;
            for i in 0..n {
                if bin_of(&items[i]) <= plane {
                    items.swap(i, mid);
                    mid += 1;
                }
            }
            Split::At(mid)
        }
        // Centroids spread but all in one bin cannot happen (the extremes land in bins 0 and
        // 15); fall back to a leaf for tiny sets.
        None if n <= MAX_LEAF_TRIANGLES => Split::Leaf,
        None => {
            let mid = n / 2;
            items.select_nth_unstable_by(mid, |a, b| a.centroid[axis].total_cmp(&b.centroid[axis]));
            Split::At(mid)
        }
    }
}

/// Closest point on segment `ab` to `p`, with its parameter along `ab` (0 for a point segment).
fn closest_on_segment(p: Vec3, a: Vec3, b: Vec3) -> (Vec3, f64) {
    let ab = b - a;
    let len2 = ab.length_squared();
    let t = if len2 > 0.0 {
        ((p - a).dot(ab) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (a + ab * t, t)
}

/// Closest point on a triangle to `p` and its barycentric coordinates.
///
/// Ericson's Voronoi-region walk ("Real-Time Collision Detection" §5.1.5); a triangle whose
/// area is negligible against its edge lengths is handled as its three edges, whose closest
/// point is well defined even when corners coincide.
pub(crate) fn closest_on_triangle(p: Vec3, tri: &[[f32; 3]; 3]) -> (Vec3, [f64; 3]) {
    let [a, b, c] = tri.map(Vec3::from_f32);
    let ab = b - a;
    let ac = c - a;
    let n = ab.cross(ac);
    let n2 = n.length_squared();
    if !n2.is_finite() || n2 <= 1e-24 * ab.length_squared() * ac.length_squared() || n2 == 0.0 {
        return closest_on_degenerate(p, a, b, c);
    }
    let ap = p - a;
    let d1 = ab.dot(ap);
    let d2 = ac.dot(ap);
    if d1 <= 0.0 && d2 <= 0.0 {
        return (a, [1.0, 0.0, 0.0]);
    }
    let bp = p - b;
    let d3 = ab.dot(bp);
    let d4 = ac.dot(bp);
    if d3 >= 0.0 && d4 <= d3 {
        return (b, [0.0, 1.0, 0.0]);
    }
    let vc = d1 * d4 - d3 * d2;
    if vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0 {
        let v = d1 / (d1 - d3);
        return (a + ab * v, [1.0 - v, v, 0.0]);
    }
    let cp = p - c;
    let d5 = ab.dot(cp);
    let d6 = ac.dot(cp);
    if d6 >= 0.0 && d5 <= d6 {
        return (c, [0.0, 0.0, 1.0]);
    }
    let vb = d5 * d2 - d1 * d6;
    if vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0 {
        let w = d2 / (d2 - d6);
        return (a + ac * w, [1.0 - w, 0.0, w]);
    }
    let va = d3 * d6 - d5 * d4;
    if va <= 0.0 && (d4 - d3) >= 0.0 && (d5 - d6) >= 0.0 {
        let w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
        return (b + (c - b) * w, [0.0, 1.0 - w, w]);
    }
    let denom = 1.0 / (va + vb + vc);
    let v = vb * denom;
    let w = vc * denom;
    // Inside the face: project along the normal rather than rebuild the point from v and w,
    // so a query on the plane gets exactly distance 0 when its offset from `a` is exactly
    // perpendicular to the normal.
    let t = n.dot(ap) / n2;
    (p - n * t, [1.0 - v - w, v, w])
}

/// Closest point of a zero-area triangle: the best of its three edges.
fn closest_on_degenerate(p: Vec3, a: Vec3, b: Vec3, c: Vec3) -> (Vec3, [f64; 3]) {
    let (qab, tab) = closest_on_segment(p, a, b);
    let (qbc, tbc) = closest_on_segment(p, b, c);
    let (qca, tca) = closest_on_segment(p, c, a);
    let candidates = [
        (qab, [1.0 - tab, tab, 0.0]),
        (qbc, [0.0, 1.0 - tbc, tbc]),
        (qca, [tca, 0.0, 1.0 - tca]),
    ];
    let mut best = candidates[0];
    for cand in &candidates[1..] {
        if (p - cand.0).length_squared() < (p - best.0).length_squared() {
            best = *cand;
        }
    }
    best
}

/// Möller–Trumbore ray–triangle intersection: `(t, barycentric)` for `t ≥ 0`. Rays parallel to
/// the triangle's plane (and zero-area triangles) never hit.
pub(crate) fn intersect_triangle(
    origin: Vec3,
    direction: Vec3,
    tri: &[[f32; 3]; 3],
) -> Option<(f64, [f64; 3])> {
    let [a, b, c] = tri.map(Vec3::from_f32);
    let e1 = b - a;
    let e2 = c - a;
    let pvec = direction.cross(e2);
    let det = e1.dot(pvec);
    let scale = direction.length() * e1.length() * e2.length();
    if !det.is_finite() || det.abs() <= 1e-14 * scale {
        return None;
    }
    let inv_det = 1.0 / det;
    let tvec = origin - a;
    let u = tvec.dot(pvec) * inv_det;
    if !(0.0..=1.0).contains(&u) {
        return None;
    }
    let qvec = tvec.cross(e1);
    let v = direction.dot(qvec) * inv_det;
    if v < 0.0 || u + v > 1.0 {
        return None;
    }
    let t = e2.dot(qvec) * inv_det;
    (t >= 0.0).then_some((t, [1.0 - u - v, u, v]))
}

/// Brute-force closest point over every triangle of `mesh` (a reference for tests; `None` for
/// an empty mesh). Uses the same per-triangle routine as the BVH.
pub fn closest_point_brute_force(mesh: &TriangleMesh, p: [f32; 3]) -> Option<ClosestPoint> {
    let pd = Vec3::from_f32(p);
    let mut best: Option<(f64, ClosestPoint)> = None;
    for (id, t) in mesh.triangles.iter().enumerate() {
        let corners = t.map(|i| {
            mesh.positions
                .get(i as usize)
                .copied()
                .unwrap_or([f32::NAN; 3])
        });
        let (q, bary) = closest_on_triangle(pd, &corners);
        let d2 = (pd - q).length_squared();
        if best.is_none_or(|(b, _)| d2 < b) {
            let hit = ClosestPoint {
                point: q.to_f32(),
                triangle: id as u32,
                barycentric: bary.map(|c| c as f32),
                distance_squared: d2 as f32,
            };
            best = Some((d2, hit));
        }
    }
    best.map(|(_, hit)| hit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The packs' plane bounds never exceed the exact squared distance (else the traversal
    /// would skip a closest triangle): slivers, near-degenerate and degenerate triangles, far
    /// from the origin (where the rounding allowance matters), queries on and near the
    /// surface and far away.
    #[test]
    fn plane_bounds_are_lower_bounds_of_the_exact_distance() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for offset in [0.0f32, 1.0, 1000.0] {
            for scale in [1e-3f32, 1.0] {
                let mut corners = Vec::new();
                for t in 0..400 {
                    let mut point = || -> [f32; 3] {
                        std::array::from_fn(|_| offset + scale * rng.random_range(-1.0..1.0))
                    };
                    let a = point();
                    let b = point();
                    let c = match t % 4 {
                        // A sliver: c almost on the line ab.
                        0 => std::array::from_fn(|k| {
                            a[k] + 0.37 * (b[k] - a[k]) + scale * 1e-6 * (k as f32 - 1.0)
                        }),
                        1 => a,
                        _ => point(),
                    };
                    corners.push([a, b, c]);
                }
                let largest = corners
                    .iter()
                    .flatten()
                    .map(|v| v.iter().map(|x| x.abs()).sum::<f32>())
                    .fold(0.0f32, f32::max);
                for leaf in corners.chunks(PACK) {
                    let pack = LeafPack::new(leaf, 0);
                    for _ in 0..50 {
                        // Points on a triangle, pushed off it by up to 2·scale, or anywhere.
                        let tri = leaf[rng.random_range(0..leaf.len())];
                        let (u, v) = (rng.random_range(0.0..1.0f32), rng.random_range(0.0..1.0f32));
                        let (u, v) = if u + v > 1.0 {
                            (1.0 - u, 1.0 - v)
                        } else {
                            (u, v)
                        };
                        let push = scale * 10f32.powf(rng.random_range(-7.0..0.3));
                        let p: [f32; 3] = std::array::from_fn(|k| {
                            tri[0][k]
                                + u * (tri[1][k] - tri[0][k])
                                + v * (tri[2][k] - tri[0][k])
                                + push * rng.random_range(-1.0..1.0f32)
                        });
                        let slack =
                            PLANE_ROUNDING * (p.iter().map(|c| c.abs()).sum::<f32>() + largest);
                        let bounds = pack.lower_bounds(p, slack);
                        for (lane, tri) in leaf.iter().enumerate() {
                            let pd = Vec3::from_f32(p);
                            let exact = (pd - closest_on_triangle(pd, tri).0).length_squared();
                            assert!(
                                f64::from(bounds[lane]) <= exact * (1.0 + 1e-6),
                                "bound {} > exact {exact} at {p:?} for {tri:?}",
                                bounds[lane]
                            );
                        }
                    }
                }
            }
        }
    }
}

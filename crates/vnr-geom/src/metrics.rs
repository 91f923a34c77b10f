//! Surface metrics as DeepSDF evaluates reconstructions: chamfer distance, Hausdorff distance
//! and normal consistency, over area-weighted surface samples and an exact KD-tree.
//!
//! DeepSDF's `deep_sdf/metrics/chamfer.py` (`compute_trimesh_chamfer`) samples 30,000 points on
//! the reconstructed mesh (`trimesh.sample.sample_surface`: area-weighted triangle choice,
//! uniform barycentric point), maps them back with `points / scale − offset` (the inverse of
//! its unit-sphere normalisation), and returns
//! `mean(d(gt → gen)²) + mean(d(gen → gt)²)` with nearest neighbours from a KD-tree, where the
//! ground truth is a point cloud of surface samples. [`chamfer`] computes exactly that sum.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use vnr_formats::mesh::TriangleMesh;

/// Errors from the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A point set that must not be empty is.
    #[error("{0} has no points")]
    NoPoints(&'static str),
    /// More points than `u32` indices can address.
    #[error("{0} points are more than the KD-tree's u32 indices can address")]
    TooManyPoints(usize),
    /// Sampling needs a mesh with at least one triangle of positive area.
    #[error("the mesh has no triangle of positive area to sample")]
    NoArea,
    /// The normals do not pair up with the points.
    #[error("{what}: {normals} normals for {points} points")]
    NormalCount {
        /// Which point set.
        what: &'static str,
        /// Number of normals.
        normals: usize,
        /// Number of points.
        points: usize,
    },
    /// DeepSDF's normalisation scale must be finite and non-zero.
    #[error("normalisation scale {0} must be finite and non-zero")]
    InvalidScale(f64),
    /// More surface samples asked for than [`MAX_SAMPLES`].
    #[error("{0} surface samples requested; at most {MAX_SAMPLES} are allowed")]
    TooManySamples(usize),
}

/// Most points [`sample_surface`] (and so [`chamfer`] and [`compare_surfaces`]) draws: 2²⁶
/// (DeepSDF evaluates with 30,000). Points, normals and the KD-tree over them take about 80
/// bytes a sample, so this keeps a request within a few GiB instead of failing allocation.
pub const MAX_SAMPLES: usize = 1 << 26;

// ---------------------------------------------------------------------------------------------
// KD-tree.
// ---------------------------------------------------------------------------------------------

/// Points per leaf: below this, a linear scan beats descending further.
const LEAF_SIZE: usize = 12;

/// An exact nearest-neighbour KD-tree over 3D points.
///
/// Built by median splits on the axis of largest extent (a balanced, implicit tree over a
/// permutation of the points); queries descend to the nearer side first and prune a subtree
/// when the splitting plane is farther than the best distance found. Distances are computed in
/// `f64`. Of several points at the same distance, the one with the smallest index is returned.
#[derive(Debug, Clone)]
pub struct KdTree {
    points: Vec<[f64; 3]>,
    /// Point indices, permuted so that every node's points are contiguous.
    order: Vec<u32>,
    nodes: Vec<KdNode>,
}

#[derive(Debug, Clone, Copy)]
struct KdNode {
    /// Range of `order` the node covers.
    start: u32,
    end: u32,
    /// Splitting axis and value; leaves have no children.
    axis: u8,
    split: f64,
    children: Option<[u32; 2]>,
}

impl KdTree {
    /// A tree over `points` `[N, 3]` (N ≤ u32::MAX).
    pub fn new(points: &[[f32; 3]]) -> Result<Self, MetricsError> {
        if points.is_empty() {
            return Err(MetricsError::NoPoints("the KD-tree"));
        }
        if u32::try_from(points.len()).is_err() {
            return Err(MetricsError::TooManyPoints(points.len()));
        }
        let points: Vec<[f64; 3]> = points.iter().map(|p| p.map(f64::from)).collect();
        let mut order: Vec<u32> = (0..points.len() as u32).collect();
        let mut nodes = Vec::with_capacity(2 * points.len() / LEAF_SIZE + 1);
        build_node(&points, &mut order, 0, &mut nodes);
        Ok(Self {
            points,
            order,
            nodes,
        })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Always false: a tree has at least one point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The nearest point to `query`: `(index, squared distance)`.
    pub fn nearest(&self, query: [f64; 3]) -> (usize, f64) {
        let mut best = (usize::MAX, f64::INFINITY);
        let mut stack: Vec<(u32, f64)> = vec![(0, 0.0)];
        while let Some((node, plane_d2)) = stack.pop() {
            if plane_d2 > best.1 {
                continue;
            }
            let n = self.nodes[node as usize];
            match n.children {
                None => {
                    for &i in &self.order[n.start as usize..n.end as usize] {
                        let p = self.points[i as usize];
                        let d2 = (0..3).map(|k| (p[k] - query[k]).powi(2)).sum::<f64>();
                        let i = i as usize;
                        if d2 < best.1 || (d2 == best.1 && i < best.0) {
                            best = (i, d2);
                        }
                    }
                }
                Some([low, high]) => {
                    let diff = query[usize::from(n.axis)] - n.split;
                    let (near, far) = if diff < 0.0 { (low, high) } else { (high, low) };
                    // Far side first on the stack, so the near side is searched first.
                    stack.push((far, diff * diff));
                    stack.push((near, 0.0));
                }
            }
        }
        best
    }

    /// [`KdTree::nearest`] for many queries, in parallel.
    pub fn nearest_many(&self, queries: &[[f32; 3]]) -> Vec<(usize, f64)> {
        queries
            .par_iter()
            .map(|q| self.nearest(q.map(f64::from)))
            .collect()
    }
}

/// Builds the node over `order[..]` (which starts at `offset` in the full order) and returns
/// its index.
fn build_node(
    points: &[[f64; 3]],
    order: &mut [u32],
    offset: usize,
    nodes: &mut Vec<KdNode>,
) -> u32 {
    let index = nodes.len() as u32;
    let mut node = KdNode {
        start: offset as u32,
        end: (offset + order.len()) as u32,
        axis: 0,
        split: 0.0,
        children: None,
    };
    nodes.push(node);
    if order.len() > LEAF_SIZE {
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for &i in order.iter() {
            let p = points[i as usize];
            for k in 0..3 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        let axis = (0..3)
            .max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])))
            .unwrap_or(0);
        if hi[axis] > lo[axis] {
            let mid = order.len() / 2;
            order.select_nth_unstable_by(mid, |&a, &b| {
                points[a as usize][axis].total_cmp(&points[b as usize][axis])
            });
            node.axis = axis as u8;
            node.split = points[order[mid] as usize][axis];
            let (low, high) = order.split_at_mut(mid);
            let low_index = build_node(points, low, offset, nodes);
            let high_index = build_node(points, high, offset + mid, nodes);
            node.children = Some([low_index, high_index]);
            nodes[index as usize] = node;
        }
    }
    index
}

// ---------------------------------------------------------------------------------------------
// Surface sampling.
// ---------------------------------------------------------------------------------------------

/// Points sampled on a surface, with the unit normal of the triangle each lies on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SurfaceSamples {
    /// Positions `[N, 3]`.
    pub points: Vec<[f32; 3]>,
    /// Unit normals `[N, 3]` (counter-clockwise winding), one per point.
    pub normals: Vec<[f32; 3]>,
}

fn triangle_corners(mesh: &TriangleMesh, t: [u32; 3]) -> [[f64; 3]; 3] {
    t.map(|i| {
        mesh.positions
            .get(i as usize)
            .copied()
            .unwrap_or_default()
            .map(f64::from)
    })
}

/// `(b − a) × (c − a)`: twice the area times the unit normal.
fn area_vector(p: [[f64; 3]; 3]) -> [f64; 3] {
    let u: [f64; 3] = std::array::from_fn(|k| p[1][k] - p[0][k]);
    let v: [f64; 3] = std::array::from_fn(|k| p[2][k] - p[0][k]);
    [
        u[1] * v[2] - u[2] * v[1],
        u[2] * v[0] - u[0] * v[2],
        u[0] * v[1] - u[1] * v[0],
    ]
}

/// `count` points on the mesh's surface, uniform by area: a triangle is drawn with probability
/// proportional to its area (inverse CDF over the cumulative areas), then a uniform point in it
/// (`r1, r2` uniform; if `r1 + r2 > 1` both are reflected to `1 − r`; `p = a + r1 (b − a) +
/// r2 (c − a)`), as `trimesh.sample.sample_surface` does.
///
/// Errors with [`MetricsError::TooManySamples`] for `count` above [`MAX_SAMPLES`].
pub fn sample_surface(
    mesh: &TriangleMesh,
    count: usize,
    rng: &mut impl Rng,
) -> Result<SurfaceSamples, MetricsError> {
    if count > MAX_SAMPLES {
        return Err(MetricsError::TooManySamples(count));
    }
    let mut cumulative = Vec::with_capacity(mesh.triangles.len());
    let mut total = 0.0f64;
    for &t in &mesh.triangles {
        let a = area_vector(triangle_corners(mesh, t));
        total += 0.5 * a.iter().map(|c| c * c).sum::<f64>().sqrt();
        cumulative.push(total);
    }
    if !(total > 0.0 && total.is_finite()) {
        return Err(MetricsError::NoArea);
    }
    let mut samples = SurfaceSamples {
        points: Vec::with_capacity(count),
        normals: Vec::with_capacity(count),
    };
    for _ in 0..count {
        let target = rng.random::<f64>() * total;
        // First triangle whose cumulative area exceeds the target: zero-area ones never win.
        let index = cumulative
            .partition_point(|&c| c <= target)
            .min(mesh.triangles.len() - 1);
        let p = triangle_corners(mesh, mesh.triangles[index]);
        let (mut r1, mut r2) = (rng.random::<f64>(), rng.random::<f64>());
        if r1 + r2 > 1.0 {
            (r1, r2) = (1.0 - r1, 1.0 - r2);
        }
        samples.points.push(std::array::from_fn(|k| {
            (p[0][k] + r1 * (p[1][k] - p[0][k]) + r2 * (p[2][k] - p[0][k])) as f32
        }));
        let n = area_vector(p);
        let len = n.iter().map(|c| c * c).sum::<f64>().sqrt();
        samples
            .normals
            .push(n.map(|c| if len > 0.0 { (c / len) as f32 } else { 0.0 }));
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------------------

/// Nearest-neighbour comparison of two point sets, both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceDistances {
    /// DeepSDF's chamfer distance: `mean(d(a → b)²) + mean(d(b → a)²)` (not halved, not
    /// square-rooted; DeepSDF's tables print it × 10³).
    pub chamfer: f64,
    /// `mean(d(a → b)²)` alone.
    pub chamfer_a_to_b: f64,
    /// `mean(d(b → a)²)` alone.
    pub chamfer_b_to_a: f64,
    /// Hausdorff distance: the larger of the two directed maxima of `d` (not squared).
    pub hausdorff: f64,
    /// Normal consistency: the mean over both directions of `|n_p · n_nearest(p)|`, in [0, 1];
    /// `None` without normals on both sides.
    pub normal_consistency: Option<f64>,
}

/// A point set, with optional unit normals `[N, 3]` (one per point).
#[derive(Debug, Clone, Copy)]
pub struct PointSet<'a> {
    /// Positions `[N, 3]`.
    pub points: &'a [[f32; 3]],
    /// Unit normals `[N, 3]`, if known.
    pub normals: Option<&'a [[f32; 3]]>,
}

impl<'a> From<&'a SurfaceSamples> for PointSet<'a> {
    fn from(s: &'a SurfaceSamples) -> Self {
        PointSet {
            points: &s.points,
            normals: Some(&s.normals),
        }
    }
}

/// Directed pass: squared distances and, with normals, `|n_a · n_b|` of each nearest pair.
struct Directed {
    mean_d2: f64,
    max_d2: f64,
    mean_normal_dot: Option<f64>,
}

fn directed(from: &PointSet<'_>, to_tree: &KdTree, to: &PointSet<'_>) -> Directed {
    let nearest = to_tree.nearest_many(from.points);
    let n = nearest.len() as f64;
    let mean_d2 = nearest.iter().map(|&(_, d2)| d2).sum::<f64>() / n;
    let max_d2 = nearest.iter().map(|&(_, d2)| d2).fold(0.0, f64::max);
    let mean_normal_dot = match (from.normals, to.normals) {
        (Some(na), Some(nb)) => Some(
            nearest
                .iter()
                .zip(na)
                .map(|(&(j, _), a)| {
                    let b = nb.get(j).copied().unwrap_or_default();
                    (0..3)
                        .map(|k| f64::from(a[k]) * f64::from(b[k]))
                        .sum::<f64>()
                        .abs()
                })
                .sum::<f64>()
                / n,
        ),
        _ => None,
    };
    Directed {
        mean_d2,
        max_d2,
        mean_normal_dot,
    }
}

fn check_point_set(set: &PointSet<'_>, what: &'static str) -> Result<(), MetricsError> {
    if set.points.is_empty() {
        return Err(MetricsError::NoPoints(what));
    }
    match set.normals {
        Some(n) if n.len() != set.points.len() => Err(MetricsError::NormalCount {
            what,
            normals: n.len(),
            points: set.points.len(),
        }),
        _ => Ok(()),
    }
}

/// Chamfer, Hausdorff and normal consistency between two point sets (exact nearest neighbours).
pub fn surface_distances(
    a: &PointSet<'_>,
    b: &PointSet<'_>,
) -> Result<SurfaceDistances, MetricsError> {
    check_point_set(a, "the first point set")?;
    check_point_set(b, "the second point set")?;
    let tree_a = KdTree::new(a.points)?;
    let tree_b = KdTree::new(b.points)?;
    let ab = directed(a, &tree_b, b);
    let ba = directed(b, &tree_a, a);
    Ok(SurfaceDistances {
        chamfer: ab.mean_d2 + ba.mean_d2,
        chamfer_a_to_b: ab.mean_d2,
        chamfer_b_to_a: ba.mean_d2,
        hausdorff: ab.max_d2.max(ba.max_d2).sqrt(),
        normal_consistency: ab
            .mean_normal_dot
            .zip(ba.mean_normal_dot)
            .map(|(x, y)| 0.5 * (x + y)),
    })
}

/// DeepSDF's normalisation of a shape, `normalised = (p + offset) · scale`; the evaluation maps
/// samples of a reconstruction back with `p / scale − offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Added before scaling.
    pub offset: [f64; 3],
    /// Multiplies after the offset.
    pub scale: f64,
}

impl Default for Normalization {
    /// The identity.
    fn default() -> Self {
        Self {
            offset: [0.0; 3],
            scale: 1.0,
        }
    }
}

/// DeepSDF's chamfer evaluation: samples `samples` points (30,000 in DeepSDF) on the
/// reconstruction `generated`, maps them with `p / scale − offset`, and compares them with the
/// ground-truth surface points `ground_truth` (see [`surface_distances`]). The chamfer field is
/// `compute_trimesh_chamfer`'s value; normal consistency needs ground-truth normals.
/// `samples` is at most [`MAX_SAMPLES`] ([`MetricsError::TooManySamples`]).
pub fn chamfer(
    ground_truth: &PointSet<'_>,
    generated: &TriangleMesh,
    samples: usize,
    normalization: Normalization,
    rng: &mut impl Rng,
) -> Result<SurfaceDistances, MetricsError> {
    let Normalization { offset, scale } = normalization;
    if !(scale.is_finite() && scale != 0.0) {
        return Err(MetricsError::InvalidScale(scale));
    }
    let mut sampled = sample_surface(generated, samples, rng)?;
    for p in &mut sampled.points {
        *p = std::array::from_fn(|k| (f64::from(p[k]) / scale - offset[k]) as f32);
    }
    surface_distances(ground_truth, &PointSet::from(&sampled))
}

/// `vnr eval chamfer`'s comparison, reproducible from a seed: `samples` points (with normals)
/// on the reconstruction, compared with the ground truth's surface points as in [`chamfer`].
/// A ground truth with triangles is sampled the same way (first, from the same `ChaCha8Rng`
/// stream); one without triangles (a point cloud, as DeepSDF's `.ply` surface samples) is used
/// as its vertices, without normals. `samples` is at most [`MAX_SAMPLES`]
/// ([`MetricsError::TooManySamples`]).
pub fn compare_surfaces(
    reconstruction: &TriangleMesh,
    ground_truth: &TriangleMesh,
    samples: usize,
    seed: u64,
) -> Result<SurfaceDistances, MetricsError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if ground_truth.triangles.is_empty() {
        let gt = PointSet {
            points: &ground_truth.positions,
            normals: None,
        };
        chamfer(
            &gt,
            reconstruction,
            samples,
            Normalization::default(),
            &mut rng,
        )
    } else {
        let gt = sample_surface(ground_truth, samples, &mut rng)?;
        chamfer(
            &PointSet::from(&gt),
            reconstruction,
            samples,
            Normalization::default(),
            &mut rng,
        )
    }
}

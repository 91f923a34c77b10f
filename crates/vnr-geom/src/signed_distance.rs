//! Signed distance to a triangle mesh: distance from the [`Bvh`], sign from winding numbers or
//! from DeepSDF's virtual scans. Positive outside, negative inside (DeepSDF's convention;
//! trimesh's `proximity.signed_distance` is the opposite).
//!
//! Which sign to use:
//! * [`SignMethod::WindingNumber`] (default): inside when the fast generalised winding number
//!   exceeds 0.5. Right for closed meshes, meshes with holes (bunny, teapot), self-intersections
//!   and interior cavities, as long as the triangles are **consistently oriented**. Deterministic
//!   and fast.
//! * [`SignMethod::VirtualScan`]: DeepSDF's `PreprocessMesh` method. The mesh is ray cast
//!   orthographically from cameras on a sphere (100 views of 400² rays by default); every hit
//!   keeps the hit point and the triangle's normal turned towards the camera. A query's sign is
//!   the vote of its 11 nearest scan points (`n·(q − p) > 0` means outside; inside when at most
//!   half vote outside). It ignores orientation, so use it for meshes with **inconsistent
//!   orientation** (suzanne.obj) or for ShapeNet-style meshes with interior junk that should
//!   not count as solid. It is wrong for cavities no camera sees, costs seconds of ray casting,
//!   and holds 24 bytes per scan point (up to 16 M points at the default resolution).
//!
//! Both methods take the distance itself from the BVH (exact closest point), unlike DeepSDF,
//! which measures it to the nearest scan point.

use rayon::prelude::*;
use vnr_formats::mesh::TriangleMesh;

use crate::bvh::{coherent_map, Bvh, ClosestScratch, GeometryError, Ray};
use crate::winding::{FastWindingNumber, WindingScratch, DEFAULT_ACCURACY};

/// How the sign of the distance is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SignMethod {
    /// Fast generalised winding number `> 0.5` means inside; `accuracy` is Barill et al.'s β.
    WindingNumber {
        /// β: a BVH node is approximated when the query is farther than β × its radius.
        accuracy: f32,
    },
    /// Votes of nearby points of virtual scans (DeepSDF).
    VirtualScan(VirtualScanOptions),
}

impl Default for SignMethod {
    fn default() -> Self {
        SignMethod::WindingNumber {
            accuracy: DEFAULT_ACCURACY,
        }
    }
}

/// Virtual-scan settings; the defaults are DeepSDF's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualScanOptions {
    /// Cameras, spread evenly on a sphere (Fibonacci lattice, as DeepSDF's
    /// `EquiDistPointsOnSphere`).
    pub views: usize,
    /// Rays per side of each orthographic view.
    pub resolution: usize,
    /// Nearest scan points that vote on a sign.
    pub votes: usize,
}

/// Most virtual-scan cameras [`VirtualScanOptions::views`] may ask for (DeepSDF uses 100).
pub const MAX_SCAN_VIEWS: usize = 1 << 16;
/// Most rays per side of a view [`VirtualScanOptions::resolution`] may ask for (DeepSDF: 400).
pub const MAX_SCAN_RESOLUTION: usize = 1 << 13;
/// Most rays of all views together, `views · resolution²` (DeepSDF: 16 M). Each ray may keep a
/// 24-byte scan point, and the k-d tree numbers the points with `u32`, so this bounds both the
/// memory (24 GiB) and the indices.
pub const MAX_SCAN_RAYS: u64 = 1 << 30;

impl VirtualScanOptions {
    /// Checks `views`, `resolution` and their product `views · resolution²` against
    /// [`MAX_SCAN_VIEWS`], [`MAX_SCAN_RESOLUTION`] and [`MAX_SCAN_RAYS`]
    /// ([`GeometryError::OptionTooLarge`]).
    pub fn validate(&self) -> Result<(), GeometryError> {
        let too_large = |name, value: u64, max: u64| {
            if value > max {
                Err(GeometryError::OptionTooLarge { name, value, max })
            } else {
                Ok(())
            }
        };
        too_large(
            "virtual scan views",
            self.views as u64,
            MAX_SCAN_VIEWS as u64,
        )?;
        too_large(
            "virtual scan resolution",
            self.resolution as u64,
            MAX_SCAN_RESOLUTION as u64,
        )?;
        // Both factors are bounded above, so the product fits u64.
        let rays = self.views as u64 * (self.resolution as u64).pow(2);
        too_large(
            "virtual scan rays (views × resolution²)",
            rays,
            MAX_SCAN_RAYS,
        )
    }
}

impl Default for VirtualScanOptions {
    fn default() -> Self {
        Self {
            views: 100,
            resolution: 400,
            votes: 11,
        }
    }
}

/// Options of [`MeshSdf`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SdfOptions {
    /// How the sign is decided.
    pub sign: SignMethod,
}

/// A signed-distance query structure over one mesh.
#[derive(Debug, Clone)]
pub struct MeshSdf {
    winding: FastWindingNumber,
    scan: Option<VirtualScan>,
    votes: usize,
}

impl MeshSdf {
    /// Builds the BVH, the winding-number expansions and, for [`SignMethod::VirtualScan`],
    /// the scans. Errors on an empty or invalid mesh, and on scan options above their limits
    /// ([`VirtualScanOptions::validate`]).
    pub fn new(mesh: &TriangleMesh, options: &SdfOptions) -> Result<Self, GeometryError> {
        match options.sign {
            SignMethod::WindingNumber { accuracy } => Ok(Self {
                winding: FastWindingNumber::new(mesh, accuracy)?,
                scan: None,
                votes: 0,
            }),
            SignMethod::VirtualScan(scan_options) => {
                // Before the BVH: a bad option should not cost a build first.
                scan_options.validate()?;
                let winding = FastWindingNumber::new(mesh, DEFAULT_ACCURACY)?;
                let scan = VirtualScan::new(mesh, winding.bvh(), &scan_options)?;
                Ok(Self {
                    winding,
                    scan: Some(scan),
                    votes: scan_options.votes.max(1),
                })
            }
        }
    }

    /// The BVH (for distance and ray queries).
    pub fn bvh(&self) -> &Bvh {
        self.winding.bvh()
    }

    /// The virtual scans, when the sign comes from them.
    pub fn virtual_scan(&self) -> Option<&VirtualScan> {
        self.scan.as_ref()
    }

    /// Signed distance at `p` (positive outside; NaN for a non-finite `p`).
    pub fn signed_distance(&self, p: [f32; 3]) -> f32 {
        let mut scratch = Scratch::default();
        self.query(p, &mut scratch).signed()
    }

    /// Signed distances at many points, in parallel (visited in Morton order, so that
    /// neighbouring queries share their tree walks; the results are in the order of `points`).
    pub fn signed_distances(&self, points: &[[f32; 3]]) -> Vec<f32> {
        coherent_map(points, Scratch::default, |scratch, p| {
            self.query(p, scratch).signed()
        })
    }

    /// Distance and sign evidence at many points, in parallel (for callers that treat
    /// uncertain signs specially, as DeepSDF's sampler drops non-unanimous scan votes).
    pub fn queries(&self, points: &[[f32; 3]]) -> Vec<SdfQuery> {
        coherent_map(points, Scratch::default, |scratch, p| {
            self.query(p, scratch)
        })
    }

    fn query(&self, p: [f32; 3], scratch: &mut Scratch) -> SdfQuery {
        let distance = self
            .bvh()
            .closest_point_with_scratch(p, f32::INFINITY, &mut scratch.closest)
            .map_or(f32::NAN, |c| c.distance_squared.sqrt());
        if !distance.is_finite() {
            return SdfQuery {
                distance: f32::NAN,
                inside: false,
                unanimous: false,
            };
        }
        match &self.scan {
            None => {
                let w = self
                    .winding
                    .winding_number_with_scratch(p, &mut scratch.winding);
                SdfQuery {
                    distance,
                    inside: w > 0.5,
                    unanimous: true,
                }
            }
            Some(scan) => {
                let vote = scan.vote(p, self.votes, &mut scratch.neighbours);
                SdfQuery {
                    distance,
                    // DeepSDF: negative when at most half of the votes say outside. No voters
                    // (nothing was scanned) is no evidence of an inside.
                    inside: vote.total > 0 && vote.outside <= vote.total / 2,
                    unanimous: vote.total > 0 && (vote.outside == 0 || vote.outside == vote.total),
                }
            }
        }
    }
}

/// Per-thread scratch space of a query.
#[derive(Default)]
struct Scratch {
    closest: ClosestScratch,
    winding: WindingScratch,
    neighbours: Vec<(f32, u32)>,
}

/// The result of one signed-distance query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdfQuery {
    /// Unsigned distance to the surface (NaN for a non-finite query).
    pub distance: f32,
    /// Whether the point counts as inside.
    pub inside: bool,
    /// Whether the sign evidence agreed: always true for winding numbers; for virtual scans,
    /// whether all voting scan points agreed.
    pub unanimous: bool,
}

impl SdfQuery {
    /// The signed distance: `−distance` inside, `+distance` outside.
    pub fn signed(&self) -> f32 {
        if self.inside {
            -self.distance
        } else {
            self.distance
        }
    }
}

/// Signed distance of `points` to `mesh` with the default options (winding-number sign,
/// β = 2), in parallel. Positive outside.
pub fn signed_distance(
    mesh: &TriangleMesh,
    points: &[[f32; 3]],
) -> Result<Vec<f32>, GeometryError> {
    Ok(MeshSdf::new(mesh, &SdfOptions::default())?.signed_distances(points))
}

/// A point of a virtual scan: where a camera ray hit, and the normal facing that camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanPoint {
    /// Hit position.
    pub position: [f32; 3],
    /// Unit triangle normal, turned towards the camera that saw it.
    pub normal: [f32; 3],
}

/// How the nearest scan points voted on a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanVote {
    /// Voters that see the query in front of their surface.
    pub outside: usize,
    /// Voters (fewer than asked only when the scan has fewer points).
    pub total: usize,
}

/// DeepSDF's virtual scans of a mesh, in a k-d tree for nearest-neighbour votes.
#[derive(Debug, Clone)]
pub struct VirtualScan {
    /// Scan points in k-d tree order (implicit median tree, see [`VirtualScan::vote`]).
    points: Vec<ScanPoint>,
}

/// Points per k-d tree leaf.
const KD_LEAF: usize = 8;

impl VirtualScan {
    /// Ray casts `mesh` (whose BVH is `bvh`) from `options.views` cameras on a sphere of 1.1×
    /// the bounding radius around its bounding-box centre, each an orthographic
    /// `resolution × resolution` view covering the bounding sphere (DeepSDF's setup after its
    /// normalisation: cameras at 1.1, window `[-1, 1]²`).
    ///
    /// Errors ([`GeometryError::OptionTooLarge`]) when the options are above the limits of
    /// [`VirtualScanOptions::validate`], before casting any ray.
    pub fn new(
        mesh: &TriangleMesh,
        bvh: &Bvh,
        options: &VirtualScanOptions,
    ) -> Result<Self, GeometryError> {
        options.validate()?;
        let bounds = bvh.bounds();
        let centre = bounds.centre();
        let half_diagonal = (0..3)
            .map(|k| (0.5 * (bounds.max[k] - bounds.min[k])).powi(2))
            .sum::<f32>()
            .sqrt();
        let radius = (half_diagonal * 1.03).max(f32::MIN_POSITIVE);
        let res = options.resolution;
        let views = fibonacci_sphere(options.views);
        let mut points: Vec<ScanPoint> = views
            .par_iter()
            .flat_map_iter(|&dir_from_centre| {
                let eye: [f32; 3] =
                    std::array::from_fn(|k| centre[k] + 1.1 * radius * dir_from_centre[k]);
                let forward = dir_from_centre.map(|c| -c);
                let (right, up) = camera_basis(forward);
                let mut stack = Vec::new();
                let mut hits = Vec::new();
                for row in 0..res {
                    for col in 0..res {
                        let u = ((col as f32 + 0.5) / res as f32 * 2.0 - 1.0) * radius;
                        let v = ((row as f32 + 0.5) / res as f32 * 2.0 - 1.0) * radius;
                        let ray = Ray {
                            origin: std::array::from_fn(|k| eye[k] + u * right[k] + v * up[k]),
                            direction: forward,
                        };
                        let hit = bvh.first_hit_with_stack(&ray, 2.5 * radius, &mut stack);
                        if let Some(point) =
                            hit.and_then(|h| scan_point(mesh, &ray, h.t, h.triangle))
                        {
                            hits.push(point);
                        }
                    }
                }
                hits
            })
            .collect();
        build_kd(&mut points, 0);
        Ok(Self { points })
    }

    /// Number of scan points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no ray hit the mesh.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The scan points (in k-d tree order).
    pub fn points(&self) -> &[ScanPoint] {
        &self.points
    }

    /// The `votes` nearest scan points' votes on `q`: a voter at `p` with normal `n` says
    /// outside when `n·(q − p) > 0`.
    pub fn vote(&self, q: [f32; 3], votes: usize, neighbours: &mut Vec<(f32, u32)>) -> ScanVote {
        neighbours.clear();
        if votes > 0 {
            self.nearest(q, votes, 0, self.points.len(), 0, neighbours);
        }
        let outside = neighbours
            .iter()
            .filter(|&&(_, i)| {
                self.points.get(i as usize).is_some_and(|s| {
                    (0..3)
                        .map(|k| s.normal[k] * (q[k] - s.position[k]))
                        .sum::<f32>()
                        > 0.0
                })
            })
            .count();
        ScanVote {
            outside,
            total: neighbours.len(),
        }
    }

    /// k-nearest search in the implicit tree over `points[lo..hi]`, split on `depth % 3` at
    /// the median `mid = (lo + hi) / 2` (left half `< mid` ≤ split ≤ right half `≥ mid`).
    /// `best` stays sorted by squared distance, at most `k` long.
    fn nearest(
        &self,
        q: [f32; 3],
        k: usize,
        lo: usize,
        hi: usize,
        depth: usize,
        best: &mut Vec<(f32, u32)>,
    ) {
        if hi - lo <= KD_LEAF {
            for (i, s) in self.points[lo..hi].iter().enumerate() {
                let d2: f32 = (0..3).map(|a| (s.position[a] - q[a]).powi(2)).sum();
                if best.len() < k || d2 < best[best.len() - 1].0 {
                    let at = best.partition_point(|&(d, _)| d <= d2);
                    best.insert(at, (d2, (lo + i) as u32));
                    best.truncate(k);
                }
            }
            return;
        }
        let axis = depth % 3;
        let mid = (lo + hi) / 2;
        let diff = q[axis] - self.points[mid].position[axis];
        let (near, far) = if diff < 0.0 {
            ((lo, mid), (mid, hi))
        } else {
            ((mid, hi), (lo, mid))
        };
        self.nearest(q, k, near.0, near.1, depth + 1, best);
        if best.len() < k || diff * diff < best[best.len() - 1].0 {
            self.nearest(q, k, far.0, far.1, depth + 1, best);
        }
    }
}

/// Orders `points` into the implicit k-d tree that [`VirtualScan::nearest`] walks.
fn build_kd(points: &mut [ScanPoint], depth: usize) {
    if points.len() <= KD_LEAF {
        return;
    }
    let axis = depth % 3;
    let mid = points.len() / 2;
    points.select_nth_unstable_by(mid, |a, b| a.position[axis].total_cmp(&b.position[axis]));
    let (left, right) = points.split_at_mut(mid);
    if left.len() > 65_536 {
        rayon::join(|| build_kd(left, depth + 1), || build_kd(right, depth + 1));
    } else {
        build_kd(left, depth + 1);
        build_kd(right, depth + 1);
    }
}

/// The scan point of a hit: position on the ray, unit normal of the hit triangle turned
/// against the ray. `None` for a triangle without a normal (cannot happen for a hit, as
/// zero-area triangles are never hit, but the mesh is not trusted).
fn scan_point(mesh: &TriangleMesh, ray: &Ray, t: f32, triangle: u32) -> Option<ScanPoint> {
    let tri = mesh.triangles.get(triangle as usize)?;
    let [a, b, c] = [
        *mesh.positions.get(tri[0] as usize)?,
        *mesh.positions.get(tri[1] as usize)?,
        *mesh.positions.get(tri[2] as usize)?,
    ];
    let e1: [f32; 3] = std::array::from_fn(|k| b[k] - a[k]);
    let e2: [f32; 3] = std::array::from_fn(|k| c[k] - a[k]);
    let mut n = [
        e1[1] * e2[2] - e1[2] * e2[1],
        e1[2] * e2[0] - e1[0] * e2[2],
        e1[0] * e2[1] - e1[1] * e2[0],
    ];
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if !(len > 0.0 && len.is_finite()) {
        return None;
    }
    let facing: f32 = (0..3).map(|k| n[k] * ray.direction[k]).sum();
    let sign = if facing > 0.0 { -1.0 } else { 1.0 };
    n = n.map(|x| sign * x / len);
    Some(ScanPoint {
        position: std::array::from_fn(|k| ray.origin[k] + t * ray.direction[k]),
        normal: n,
    })
}

/// `n` unit vectors spread on the sphere: DeepSDF's `EquiDistPointsOnSphere` (a Fibonacci
/// lattice, `y` evenly spaced, golden-angle longitude).
pub fn fibonacci_sphere(n: usize) -> Vec<[f32; 3]> {
    let offset = 2.0 / n as f64;
    let increment = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..n)
        .map(|i| {
            let y = (i as f64 * offset - 1.0) + offset / 2.0;
            let r = (1.0 - y * y).max(0.0).sqrt();
            let phi = (i as f64 + 1.0) * increment;
            [(phi.cos() * r) as f32, y as f32, (phi.sin() * r) as f32]
        })
        .collect()
}

/// Right and up unit vectors of a camera looking along unit `forward` (up hint +Y, or +X when
/// looking along Y).
fn camera_basis(forward: [f32; 3]) -> ([f32; 3], [f32; 3]) {
    let hint = if forward[1].abs() > 0.999 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let cross = |a: [f32; 3], b: [f32; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let r = cross(forward, hint);
    let len = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt();
    let right = r.map(|x| x / len);
    (right, cross(right, forward))
}

//! Generalised winding numbers (Jacobson, Kavan & Sorkine-Hornung 2013), exact and fast.
//!
//! The winding number of a query `q` is the signed solid angle the surface subtends at `q`,
//! divided by 4π: 1 inside a closed, outward-oriented surface, 0 outside, and a smooth
//! "how much inside" in between for surfaces with holes, so `inside = w > 0.5` still gives the
//! right answer near small holes (the bunny's 223 boundary edges, the teapot's 1,036).
//!
//! * [`winding_number_exact`] sums every triangle's solid angle (van Oosterom & Strackee 1983).
//! * [`FastWindingNumber`] is Barill et al. 2018 ("Fast Winding Numbers for Soups and Clouds"):
//!   each BVH node stores a second-order Taylor expansion of its triangles' dipole field about
//!   their area-weighted centroid `p̃`; a node whose bounding radius `R` satisfies
//!   `|q − p̃| > β·R` is evaluated from the expansion, closer nodes are opened, and leaves near
//!   `q` are summed exactly. β = 2 (the paper's and libigl's default) keeps the error well below
//!   0.01 away from the surface.
//!
//! **Orientation.** Winding numbers assume consistently oriented triangles (all normals
//! outward; all inward gives `w ≈ −1` inside, which reads as outside). Every flipped triangle
//! contributes its solid angle with the wrong sign, so inside a mesh with flipped patches `w`
//! drifts to fractional values and the sign can be wrong near those patches. On suzanne.obj
//! (the fixtures' dirty mesh: a non-manifold edge, open eye parts, orientation flagged
//! inconsistent) the damage is small: of 2,000 points drawn in its bounding box, `w` is
//! fractional (0.1 < |w| < 0.9) at 7 and the winding sign disagrees with the virtual-scan sign
//! at 9 (test `suzanne_orientation` in `tests/signed_distance.rs`). Recommendation: keep winding
//! numbers for meshes that are consistently oriented, holes or not; for meshes with many
//! flipped patches either re-orient them first or use the virtual-scan sign
//! ([`crate::signed_distance::SignMethod::VirtualScan`]), which ignores orientation (its votes
//! use normals turned towards the camera) but misses cavities no camera sees.

use std::f64::consts::PI;

use rayon::prelude::*;
use vnr_formats::mesh::TriangleMesh;

use crate::bvh::{cross, dot, sub, Bvh, GeometryError};

/// Barill et al.'s default accuracy β.
pub const DEFAULT_ACCURACY: f32 = 2.0;

/// Solid angle of triangle `tri` seen from `q`, divided by 4π (van Oosterom–Strackee).
///
/// Positive when `q` is on the side the counter-clockwise normal points away from. A query on a
/// corner gives 0 (`atan2(0, 0)`), never NaN.
pub fn triangle_winding(q: [f64; 3], tri: &[[f32; 3]; 3]) -> f64 {
    let [a, b, c] = tri.map(|v| sub(v.map(f64::from), q));
    let la = dot(a, a).sqrt();
    let lb = dot(b, b).sqrt();
    let lc = dot(c, c).sqrt();
    let numerator = dot(a, cross(b, c));
    let denominator = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb;
    numerator.atan2(denominator) / (2.0 * PI)
}

/// Exact generalised winding number of `mesh` at `q`: the sum over every triangle
/// (O(triangles) per query; a reference, and exact up to rounding).
pub fn winding_number_exact(mesh: &TriangleMesh, q: [f32; 3]) -> f64 {
    let qd = q.map(f64::from);
    mesh.triangles
        .iter()
        .filter_map(|t| {
            let corners = [
                *mesh.positions.get(t[0] as usize)?,
                *mesh.positions.get(t[1] as usize)?,
                *mesh.positions.get(t[2] as usize)?,
            ];
            Some(triangle_winding(qd, &corners))
        })
        .sum()
}

/// The far-field expansion of one BVH node's triangles.
#[derive(Debug, Clone, Copy)]
struct Expansion {
    /// Area-weighted centroid `p̃`.
    centre: [f32; 3],
    /// Bounding radius about `centre`.
    radius: f32,
    /// Σ aₜ·nₜ (the area vector; first order).
    area_normal: [f32; 3],
    /// Σ aₜ·(cₜ − p̃)·nₜᵀ, row-major (second order).
    moment: [f32; 9],
    /// Total area (to merge children's centroids).
    area: f32,
}

/// Fast generalised winding numbers over a [`Bvh`] (Barill et al. 2018).
#[derive(Debug, Clone)]
pub struct FastWindingNumber {
    bvh: Bvh,
    expansions: Vec<Expansion>,
    accuracy: f64,
}

impl FastWindingNumber {
    /// Builds the BVH of `mesh` and the expansions; `accuracy` is β (larger: slower, more
    /// accurate; [`DEFAULT_ACCURACY`] = 2). A β that is not positive and finite falls back to
    /// the default.
    pub fn new(mesh: &TriangleMesh, accuracy: f32) -> Result<Self, GeometryError> {
        Ok(Self::from_bvh(Bvh::new(mesh)?, accuracy))
    }

    /// Adds the expansions to an existing BVH.
    pub fn from_bvh(bvh: Bvh, accuracy: f32) -> Self {
        let mut expansions = vec![
            Expansion {
                centre: [0.0; 3],
                radius: 0.0,
                area_normal: [0.0; 3],
                moment: [0.0; 9],
                area: 0.0,
            };
            bvh.nodes.len()
        ];
        // Children follow their parent in the flat array, so a reverse sweep sees both
        // children before the parent.
        for i in (0..bvh.nodes.len()).rev() {
            let node = &bvh.nodes[i];
            let parts: Vec<Part> = if node.is_leaf() {
                node.triangle_range()
                    .map(|t| {
                        let corners = bvh.corners[t].map(|v| v.map(f64::from));
                        let [a, b, c] = corners;
                        let area_normal = cross(sub(b, a), sub(c, a)).map(|x| 0.5 * x);
                        let centroid: [f64; 3] =
                            std::array::from_fn(|k| (a[k] + b[k] + c[k]) / 3.0);
                        let radius = corners
                            .iter()
                            .map(|v| dot(sub(*v, centroid), sub(*v, centroid)).sqrt())
                            .fold(0.0, f64::max);
                        Part {
                            area: dot(area_normal, area_normal).sqrt(),
                            centroid,
                            area_normal,
                            moment: [0.0; 9],
                            radius,
                        }
                    })
                    .collect()
            } else {
                [i + 1, node.index as usize]
                    .iter()
                    .map(|&child| {
                        let e = &expansions[child];
                        Part {
                            area: f64::from(e.area),
                            centroid: e.centre.map(f64::from),
                            area_normal: e.area_normal.map(f64::from),
                            moment: e.moment.map(f64::from),
                            radius: f64::from(e.radius),
                        }
                    })
                    .collect()
            };
            expansions[i] = merge(&parts, &node.bounds);
        }
        let accuracy = if accuracy > 0.0 && accuracy.is_finite() {
            f64::from(accuracy)
        } else {
            f64::from(DEFAULT_ACCURACY)
        };
        Self {
            bvh,
            expansions,
            accuracy,
        }
    }

    /// The BVH the expansions sit on.
    pub fn bvh(&self) -> &Bvh {
        &self.bvh
    }

    /// Approximate winding number at `q` (NaN for a non-finite `q`).
    pub fn winding_number(&self, q: [f32; 3]) -> f32 {
        self.winding_number_with_stack(q, &mut Vec::new())
    }

    /// [`FastWindingNumber::winding_number`] for many points, in parallel.
    pub fn winding_numbers(&self, points: &[[f32; 3]]) -> Vec<f32> {
        points
            .par_iter()
            .map_init(Vec::new, |stack, &q| {
                self.winding_number_with_stack(q, stack)
            })
            .collect()
    }

    /// `winding_number(q) > 0.5`.
    pub fn is_inside(&self, q: [f32; 3]) -> bool {
        self.winding_number(q) > 0.5
    }

    pub(crate) fn winding_number_with_stack(&self, q: [f32; 3], stack: &mut Vec<u32>) -> f32 {
        if q.iter().any(|c| !c.is_finite()) {
            return f32::NAN;
        }
        let qd = q.map(f64::from);
        let beta2 = self.accuracy * self.accuracy;
        let mut total = 0.0f64;
        stack.clear();
        stack.push(0);
        while let Some(i) = stack.pop() {
            let i = i as usize;
            let e = &self.expansions[i];
            let r = sub(e.centre.map(f64::from), qd);
            let d2 = dot(r, r);
            let radius = f64::from(e.radius);
            if d2 > beta2 * radius * radius {
                total += far_field(e, r, d2);
                continue;
            }
            let node = &self.bvh.nodes[i];
            if node.is_leaf() {
                for t in node.triangle_range() {
                    total += triangle_winding(qd, &self.bvh.corners[t]);
                }
            } else {
                stack.push(node.index);
                stack.push(i as u32 + 1);
            }
        }
        total as f32
    }
}

/// A triangle or child node while merging.
struct Part {
    area: f64,
    centroid: [f64; 3],
    /// Σ aₜ·nₜ.
    area_normal: [f64; 3],
    /// Σ aₜ·(cₜ − centroid)·nₜᵀ, row-major.
    moment: [f64; 9],
    /// Bound on the distance from `centroid` to any point of the part.
    radius: f64,
}

/// Merges triangles or children into one expansion about their area-weighted centroid.
fn merge(parts: &[Part], bounds: &crate::bvh::Aabb) -> Expansion {
    let area: f64 = parts.iter().map(|p| p.area).sum();
    let centre: [f64; 3] = if area > 0.0 {
        std::array::from_fn(|k| parts.iter().map(|p| p.area * p.centroid[k]).sum::<f64>() / area)
    } else {
        // No area to weight by (all triangles degenerate): the box centre is as good as any.
        bounds.centre().map(f64::from)
    };
    let mut area_normal = [0.0; 3];
    let mut moment = [0.0; 9];
    for part in parts {
        // Moving a part's moment from its own centroid to `centre` adds (c − p̃)·Nᵀ.
        let shift = sub(part.centroid, centre);
        for row in 0..3 {
            area_normal[row] += part.area_normal[row];
            for col in 0..3 {
                moment[row * 3 + col] +=
                    part.moment[row * 3 + col] + shift[row] * part.area_normal[col];
            }
        }
    }
    // Two bounds on the radius: the farthest box corner, and the parts' spheres seen from the
    // new centre; the smaller one opens fewer nodes near the query.
    let box_radius = (0..8)
        .map(|corner| {
            let p: [f64; 3] = std::array::from_fn(|k| {
                f64::from(if corner >> k & 1 == 1 {
                    bounds.max[k]
                } else {
                    bounds.min[k]
                })
            });
            let d = sub(p, centre);
            dot(d, d)
        })
        .fold(0.0f64, f64::max)
        .sqrt();
    let sphere_radius = parts
        .iter()
        .map(|p| {
            let d = sub(p.centroid, centre);
            dot(d, d).sqrt() + p.radius
        })
        .fold(0.0f64, f64::max);
    let radius = box_radius.min(sphere_radius);
    Expansion {
        centre: centre.map(|x| x as f32),
        // Round up so the f32 radius never understates the f64 one.
        radius: (radius * (1.0 + 1e-6)) as f32,
        area_normal: area_normal.map(|x| x as f32),
        moment: moment.map(|x| x as f32),
        area: area as f32,
    }
}

/// The expansion's winding number at `q`, with `r = p̃ − q`, `d2 = |r|²`:
/// `(N·r/d³ + tr(M)/d³ − 3·rᵀMr/d⁵) / 4π`, the dipole field `y/(4π|y|³)` and its Jacobian.
fn far_field(e: &Expansion, r: [f64; 3], d2: f64) -> f64 {
    let d = d2.sqrt();
    let inv_d3 = 1.0 / (d2 * d);
    let n = e.area_normal.map(f64::from);
    let m = e.moment.map(f64::from);
    let trace = m[0] + m[4] + m[8];
    let mut rmr = 0.0;
    for row in 0..3 {
        for col in 0..3 {
            rmr += r[row] * m[row * 3 + col] * r[col];
        }
    }
    (dot(n, r) * inv_d3 + trace * inv_d3 - 3.0 * rmr * inv_d3 / d2) / (4.0 * PI)
}

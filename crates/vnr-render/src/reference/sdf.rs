//! Analytic signed distance functions (negative inside) with analytic gradients, rendered by
//! sphere tracing.

use super::surface::{Surface, SurfaceHit};
use super::vec3::{Aabb, Ray, Vec3};

/// Sphere-tracing iterations before a ray is declared a miss.
const MAX_STEPS: usize = 1024;

/// An analytic signed distance function. Primitives are exact distances; the combinations are
/// bounds (the distance never overestimates), which sphere tracing needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Sdf {
    /// Sphere.
    Sphere {
        /// Centre.
        center: Vec3,
        /// Radius.
        radius: f64,
    },
    /// Axis-aligned box.
    Box {
        /// Centre.
        center: Vec3,
        /// Half extents.
        half: Vec3,
    },
    /// Axis-aligned box with edges rounded by `radius` (outer extents `half`).
    RoundedBox {
        /// Centre.
        center: Vec3,
        /// Half extents, rounding included.
        half: Vec3,
        /// Edge radius (`≤ min(half)`).
        radius: f64,
    },
    /// Torus around the y axis.
    Torus {
        /// Centre.
        center: Vec3,
        /// Distance from the centre to the tube's centre line.
        major: f64,
        /// Tube radius.
        minor: f64,
    },
    /// Segment `a`–`b` swept by a sphere.
    Capsule {
        /// One end of the axis.
        a: Vec3,
        /// The other end.
        b: Vec3,
        /// Radius.
        radius: f64,
    },
    /// `min(a, b)`.
    Union(Box<Sdf>, Box<Sdf>),
    /// `max(a, b)`.
    Intersection(Box<Sdf>, Box<Sdf>),
    /// Polynomial smooth minimum of `a` and `b` with blend width `k` (Quilez's `smin`).
    SmoothUnion(Box<Sdf>, Box<Sdf>, f64),
}

impl Sdf {
    /// Signed distance at `p` and its gradient (unit length for primitives away from their
    /// medial axis).
    pub fn eval(&self, p: Vec3) -> (f64, Vec3) {
        match self {
            Sdf::Sphere { center, radius } => {
                let q = p - *center;
                let len = q.length();
                let grad = if len > 0.0 {
                    q / len
                } else {
                    Vec3::new(0.0, 1.0, 0.0)
                };
                (len - radius, grad)
            }
            Sdf::Box { center, half } => box_sdf(p - *center, *half, 0.0),
            Sdf::RoundedBox {
                center,
                half,
                radius,
            } => box_sdf(p - *center, *half, *radius),
            Sdf::Torus {
                center,
                major,
                minor,
            } => {
                let q = p - *center;
                let ring = (q.x * q.x + q.z * q.z).sqrt();
                let (rx, rz) = if ring > 0.0 {
                    (q.x / ring, q.z / ring)
                } else {
                    (1.0, 0.0)
                };
                // Offset from the nearest point of the tube's centre circle.
                let off = Vec3::new(q.x - rx * major, q.y, q.z - rz * major);
                let len = off.length();
                let grad = if len > 0.0 {
                    off / len
                } else {
                    Vec3::new(0.0, 1.0, 0.0)
                };
                (len - minor, grad)
            }
            Sdf::Capsule { a, b, radius } => {
                let (pa, ba) = (p - *a, *b - *a);
                let denom = ba.dot(ba);
                let h = if denom > 0.0 {
                    (pa.dot(ba) / denom).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let off = pa - ba * h;
                let len = off.length();
                let grad = if len > 0.0 {
                    off / len
                } else {
                    Vec3::new(0.0, 1.0, 0.0)
                };
                (len - radius, grad)
            }
            Sdf::Union(a, b) => {
                let (da, db) = (a.eval(p), b.eval(p));
                if da.0 <= db.0 {
                    da
                } else {
                    db
                }
            }
            Sdf::Intersection(a, b) => {
                let (da, db) = (a.eval(p), b.eval(p));
                if da.0 >= db.0 {
                    da
                } else {
                    db
                }
            }
            Sdf::SmoothUnion(a, b, k) => {
                let ((da, ga), (db, gb)) = (a.eval(p), b.eval(p));
                if *k <= 0.0 {
                    return if da <= db { (da, ga) } else { (db, gb) };
                }
                let h = (0.5 + 0.5 * (db - da) / k).clamp(0.0, 1.0);
                let d = db + (da - db) * h - k * h * (1.0 - h);
                // d/dh of the blend vanishes where 0 < h < 1, so the gradient is the blend of
                // the gradients.
                (d, ga * h + gb * (1.0 - h))
            }
        }
    }

    /// Signed distance at `p`.
    pub fn distance(&self, p: Vec3) -> f64 {
        self.eval(p).0
    }

    /// A box holding the whole surface.
    pub fn bounds(&self) -> Aabb {
        let cube = |c: Vec3, r: Vec3| Aabb::new(c - r, c + r);
        match self {
            Sdf::Sphere { center, radius } => cube(*center, Vec3::splat(*radius)),
            Sdf::Box { center, half } | Sdf::RoundedBox { center, half, .. } => {
                cube(*center, *half)
            }
            Sdf::Torus {
                center,
                major,
                minor,
            } => cube(*center, Vec3::new(major + minor, *minor, major + minor)),
            Sdf::Capsule { a, b, radius } => {
                let r = Vec3::splat(*radius);
                Aabb::new(a.min(*b) - r, a.max(*b) + r)
            }
            Sdf::Union(a, b) => a.bounds().union(&b.bounds()),
            Sdf::Intersection(a, b) => {
                let (ba, bb) = (a.bounds(), b.bounds());
                let min = ba.min.max(bb.min);
                // Disjoint operands leave an empty shape: keep a valid (degenerate) box.
                Aabb::new(min, ba.max.min(bb.max).max(min))
            }
            Sdf::SmoothUnion(a, b, k) => {
                // The blend adds at most k/4 of material.
                let u = a.bounds().union(&b.bounds());
                let pad = Vec3::splat(0.25 * k.max(0.0));
                Aabb::new(u.min - pad, u.max + pad)
            }
        }
    }
}

/// Distance to a box of half extents `half` with edges rounded by `radius`, and its gradient.
fn box_sdf(q: Vec3, half: Vec3, radius: f64) -> (f64, Vec3) {
    let d = q.abs() - (half - Vec3::splat(radius));
    let outside = d.max(Vec3::splat(0.0));
    let out_len = outside.length();
    let inside = d.max_elem().min(0.0);
    let sign = Vec3::new(sgn(q.x), sgn(q.y), sgn(q.z));
    let grad = if out_len > 0.0 {
        (outside / out_len).mul_elem(sign)
    } else {
        // Inside: the nearest face is the axis with the largest d.
        let axis = if d.x >= d.y && d.x >= d.z {
            0
        } else if d.y >= d.z {
            1
        } else {
            2
        };
        let mut g = Vec3::default();
        match axis {
            0 => g.x = sign.x,
            1 => g.y = sign.y,
            _ => g.z = sign.z,
        }
        g
    };
    (out_len + inside - radius, grad)
}

fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else {
        1.0
    }
}

impl Surface for Sdf {
    fn bounds(&self) -> Aabb {
        Sdf::bounds(self)
    }

    fn intersect(&self, ray: &Ray, t_min: f64, t_max: f64) -> Option<SurfaceHit> {
        let bounds = Sdf::bounds(self);
        let scale = bounds.diagonal().max(1e-300);
        // Pad the box so rays starting on the surface still enter it.
        let pad = Vec3::splat(1e-6 * scale);
        let padded = Aabb::new(bounds.min - pad, bounds.max + pad);
        let (t0, t1) = padded.clip(ray, t_min, t_max)?;
        let eps = 1e-7 * scale;
        let dir_len = ray.dir.length();
        let mut t = t0;
        // Rays starting inside (refraction) trace the surface from within: march on |d|.
        let start_sign = sgn(self.distance(ray.at(t)));
        for _ in 0..MAX_STEPS {
            let p = ray.at(t);
            let (d, grad) = self.eval(p);
            if d * start_sign <= eps {
                return Some(SurfaceHit {
                    t,
                    normal: grad.normalized(),
                });
            }
            t += d.abs() / dir_len;
            if t > t1 {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::load::{analytic_sdf, SDF_NAMES};

    #[test]
    fn analytic_gradients_match_finite_differences() {
        let h = 1e-6;
        for name in SDF_NAMES {
            let sdf = analytic_sdf(name).unwrap();
            for i in 0..200 {
                // Deterministic points spread over [-1.3, 1.3]³.
                let f = |k: u32| ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0 * 2.6 - 1.3;
                let p = Vec3::new(f(1), f(2), f(3));
                let (_, g) = sdf.eval(p);
                let fd = Vec3::new(
                    sdf.distance(p + Vec3::new(h, 0.0, 0.0))
                        - sdf.distance(p - Vec3::new(h, 0.0, 0.0)),
                    sdf.distance(p + Vec3::new(0.0, h, 0.0))
                        - sdf.distance(p - Vec3::new(0.0, h, 0.0)),
                    sdf.distance(p + Vec3::new(0.0, 0.0, h))
                        - sdf.distance(p - Vec3::new(0.0, 0.0, h)),
                ) / (2.0 * h);
                // Points on a kink (medial axis, union seam) have no derivative: skip those,
                // detected by a one-sided difference disagreeing.
                let one_sided = (sdf.distance(p + Vec3::new(h, 0.0, 0.0)) - sdf.distance(p)) / h;
                if (one_sided - fd.x).abs() > 1e-4 {
                    continue;
                }
                assert!((g - fd).length() < 1e-4, "{name} at {p:?}: {g:?} vs {fd:?}");
            }
        }
    }

    #[test]
    fn primitives_are_exact_distances() {
        let sphere = analytic_sdf("sphere").unwrap();
        assert!((sphere.distance(Vec3::new(0.0, 3.0, 0.0)) - 2.0).abs() < 1e-12);
        let cube = Sdf::Box {
            center: Vec3::default(),
            half: Vec3::splat(1.0),
        };
        assert!((cube.distance(Vec3::new(2.0, 2.0, 0.5)) - 2f64.sqrt()).abs() < 1e-12);
        assert!((cube.distance(Vec3::new(0.5, 0.0, 0.0)) + 0.5).abs() < 1e-12);
        let torus = analytic_sdf("torus").unwrap();
        assert!((torus.distance(Vec3::new(0.7, 0.0, 0.0)) + 0.25).abs() < 1e-12);
        assert!((torus.distance(Vec3::new(0.0, 1.0, 0.7)) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn sphere_tracing_hits_from_outside_and_inside() {
        let sphere = analytic_sdf("sphere").unwrap();
        let ray = Ray {
            origin: Vec3::new(0.0, 0.0, 5.0),
            dir: Vec3::new(0.0, 0.0, -1.0),
        };
        let hit = sphere.intersect(&ray, 0.0, 100.0).unwrap();
        assert!((hit.t - 4.0).abs() < 1e-6);
        assert!((hit.normal - Vec3::new(0.0, 0.0, 1.0)).length() < 1e-9);
        let inside = Ray {
            origin: Vec3::default(),
            dir: Vec3::new(1.0, 0.0, 0.0),
        };
        assert!((sphere.intersect(&inside, 0.0, 100.0).unwrap().t - 1.0).abs() < 1e-6);
        assert!(sphere.intersect(&ray, 0.0, 3.0).is_none());
    }
}

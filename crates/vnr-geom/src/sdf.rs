//! Analytic signed distance functions (negative inside) with analytic gradients: the one home
//! of the project's primitives (sphere, box, rounded box, torus, capsule, superquadric) and
//! their CSG combinations (union, intersection, difference and their smooth blends).
//!
//! The reference renderer sphere traces them (`vnr_render::reference`), the generated datasets
//! voxelise and render them (`vnr_models::generated`), and [`crate::procedural`] meshes them.
//!
//! Sphere, box, rounded box, torus and capsule are exact Euclidean distances (Quílez's closed
//! forms). The superquadric has no closed-form distance; [`Sdf::Superquadric`] documents the
//! conservative bound it uses. Union, intersection and difference of bounds are bounds
//! (`min`/`max` never overestimate). The smooth blends use the polynomial smooth minimum: their
//! zero set is a smooth blend of the operands' surfaces and their value is a level-set function
//! close to a distance, which is what meshing and, in practice, sphere tracing need.

use crate::vec3::{Aabb, Vec3};

/// A shape parameter out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdfError {
    /// A parameter is out of range.
    #[error("invalid shape parameter: {0}")]
    BadParameter(String),
}

/// Smallest superquadric exponent [`Sdf::validate`] accepts (its powers `2/ε` reach 100, and
/// the shape is already within about 1% of its bounding box: for sharper ones use
/// [`Sdf::Box`]).
pub const SUPERQUADRIC_MIN_EXPONENT: f64 = 0.02;
/// Largest superquadric exponent [`Sdf::validate`] accepts: up to 2 the shape is convex and the
/// distance bound of [`Sdf::Superquadric`] holds; beyond it the inside-outside function is not
/// Lipschitz (pinched, star-shaped superquadrics).
pub const SUPERQUADRIC_MAX_EXPONENT: f64 = 2.0;

/// An analytic signed distance function (negative inside).
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
    /// Barr's superellipsoid, axis-aligned at `center`: the points `q = p − center` with
    /// `F(q) = ((|x/a|^(2/ε₂) + |y/b|^(2/ε₂))^(ε₂/ε₁) + |z/c|^(2/ε₁)) ≤ 1`, where
    /// `(a, b, c) = scale`, `ε₁ = e1` shapes the profile along z (north–south) and `ε₂ = e2`
    /// the cross-section in the xy plane (east–west), both in
    /// [[`SUPERQUADRIC_MIN_EXPONENT`], [`SUPERQUADRIC_MAX_EXPONENT`]]: near 0 a box, 1 an
    /// ellipsoid, 2 an octahedron (`e1 = 1, e2 → 0`: a rounded cylinder).
    ///
    /// No closed form gives its distance. With the gauge `G = F^(ε₁/2)` (homogeneous of degree
    /// one, `G = 1` on the surface) the value is `max((G − 1)/L, box)`: `L = L(ε₁)·L(ε₂) /
    /// min(a, b, c)` bounds `|∇G|` (`L(ε) = 1` for `ε ≤ 1`, the Euclidean bound of the planar
    /// `ℓ_{2/ε}` norm, `2^((ε−1)/2)` for `1 < ε ≤ 2`), so `|G − 1|/L` never exceeds the
    /// distance to the surface, on either side; `box` is the exact distance to the bounding
    /// box `|q| ≤ scale`, which holds the shape and is also a lower bound outside it. The
    /// value therefore never overestimates the distance (safe for sphere tracing), has the
    /// right sign, and is exact for spheres (`e1 = e2 = 1`, `a = b = c`). The gradient is
    /// that of the active term; its direction is the surface normal on the surface.
    Superquadric {
        /// Centre.
        center: Vec3,
        /// Semi-axes `(a, b, c)` along x, y, z.
        scale: Vec3,
        /// Exponent `ε₁` (profile along z).
        e1: f64,
        /// Exponent `ε₂` (cross-section in the xy plane).
        e2: f64,
    },
    /// `min(a, b)`.
    Union(Box<Sdf>, Box<Sdf>),
    /// `max(a, b)`.
    Intersection(Box<Sdf>, Box<Sdf>),
    /// `max(a, −b)`: `a` with `b` cut away.
    Difference(Box<Sdf>, Box<Sdf>),
    /// Polynomial smooth minimum of `a` and `b` with blend width `k` (Quílez's `smin`; `k ≤ 0`
    /// is the plain union).
    SmoothUnion(Box<Sdf>, Box<Sdf>, f64),
    /// `a` with `b` cut away, the cut's edge blended over width `k` (`−smin(−a, b, k)`; `k ≤ 0`
    /// is the plain difference).
    SmoothDifference(Box<Sdf>, Box<Sdf>, f64),
}

/// Polynomial smooth minimum of `(da, ga)` and `(db, gb)` (value, gradient) with width `k`.
/// The derivative of the blend with respect to its weight vanishes where the weight is inside
/// `(0, 1)`, so the gradient is the blend of the gradients.
fn smooth_min((da, ga): (f64, Vec3), (db, gb): (f64, Vec3), k: f64) -> (f64, Vec3) {
    if k <= 0.0 {
        return if da <= db { (da, ga) } else { (db, gb) };
    }
    let h = (0.5 + 0.5 * (db - da) / k).clamp(0.0, 1.0);
    let d = db + (da - db) * h - k * h * (1.0 - h);
    (d, ga * h + gb * (1.0 - h))
}

/// The operand with the larger value.
fn max_of(a: (f64, Vec3), b: (f64, Vec3)) -> (f64, Vec3) {
    if a.0 >= b.0 {
        a
    } else {
        b
    }
}

/// `(−d, −g)`.
fn negate((d, g): (f64, Vec3)) -> (f64, Vec3) {
    (-d, -g)
}

/// `q / |q|`, or `+y` at the origin.
fn unit_or_up(q: Vec3, len: f64) -> Vec3 {
    if len > 0.0 {
        q / len
    } else {
        Vec3::new(0.0, 1.0, 0.0)
    }
}

impl Sdf {
    /// Signed distance at `p` and its gradient (unit length for the exact primitives away from
    /// their medial axis).
    pub fn eval(&self, p: Vec3) -> (f64, Vec3) {
        match self {
            Sdf::Sphere { center, radius } => {
                let q = p - *center;
                let len = q.length();
                (len - radius, unit_or_up(q, len))
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
                (len - minor, unit_or_up(off, len))
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
                (len - radius, unit_or_up(off, len))
            }
            Sdf::Superquadric {
                center,
                scale,
                e1,
                e2,
            } => superquadric_sdf(p - *center, *scale, *e1, *e2),
            Sdf::Union(a, b) => {
                let (da, db) = (a.eval(p), b.eval(p));
                if da.0 <= db.0 {
                    da
                } else {
                    db
                }
            }
            Sdf::Intersection(a, b) => max_of(a.eval(p), b.eval(p)),
            Sdf::Difference(a, b) => max_of(a.eval(p), negate(b.eval(p))),
            Sdf::SmoothUnion(a, b, k) => smooth_min(a.eval(p), b.eval(p), *k),
            Sdf::SmoothDifference(a, b, k) => negate(smooth_min(negate(a.eval(p)), b.eval(p), *k)),
        }
    }

    /// Signed distance at `p`.
    pub fn distance(&self, p: Vec3) -> f64 {
        self.eval(p).0
    }

    /// A box holding the whole inside.
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
            Sdf::Superquadric { center, scale, .. } => cube(*center, *scale),
            Sdf::Union(a, b) => a.bounds().union(&b.bounds()),
            Sdf::Intersection(a, b) => {
                let (ba, bb) = (a.bounds(), b.bounds());
                let min = ba.min.max(bb.min);
                // Disjoint operands leave an empty shape: keep a valid (degenerate) box.
                Aabb::new(min, ba.max.min(bb.max).max(min))
            }
            Sdf::Difference(a, _) | Sdf::SmoothDifference(a, _, _) => a.bounds(),
            Sdf::SmoothUnion(a, b, k) => {
                // The blend adds at most k/4 of material.
                let u = a.bounds().union(&b.bounds());
                let pad = Vec3::splat(0.25 * k.max(0.0));
                Aabb::new(u.min - pad, u.max + pad)
            }
        }
    }

    /// Checks every position is finite, every radius and extent finite and positive, rounding
    /// radii within `[0, min(half)]`, blend widths finite and non-negative and superquadric
    /// exponents within [[`SUPERQUADRIC_MIN_EXPONENT`], [`SUPERQUADRIC_MAX_EXPONENT`]].
    pub fn validate(&self) -> Result<(), SdfError> {
        let bad = |message: String| Err(SdfError::BadParameter(message));
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(format!("{what} {v} must be finite and positive"))
            }
        };
        let finite = |what: &str, v: Vec3| {
            if v.is_finite() {
                Ok(())
            } else {
                bad(format!("{what} {:?} must be finite", v.to_array()))
            }
        };
        let extents = |half: Vec3| {
            for h in half.to_array() {
                positive("half extent", h)?;
            }
            Ok(())
        };
        match self {
            Sdf::Sphere { center, radius } => {
                finite("centre", *center)?;
                positive("radius", *radius)
            }
            Sdf::Box { center, half } => {
                finite("centre", *center)?;
                extents(*half)
            }
            Sdf::RoundedBox {
                center,
                half,
                radius,
            } => {
                finite("centre", *center)?;
                extents(*half)?;
                let smallest = half.x.min(half.y).min(half.z);
                if radius.is_finite() && (0.0..=smallest).contains(radius) {
                    Ok(())
                } else {
                    bad(format!("rounding {radius} must be in [0, {smallest}]"))
                }
            }
            Sdf::Torus {
                center,
                major,
                minor,
            } => {
                finite("centre", *center)?;
                positive("major radius", *major)?;
                positive("minor radius", *minor)
            }
            Sdf::Capsule { a, b, radius } => {
                finite("end", *a)?;
                finite("end", *b)?;
                positive("radius", *radius)
            }
            Sdf::Superquadric {
                center,
                scale,
                e1,
                e2,
            } => {
                finite("centre", *center)?;
                for s in scale.to_array() {
                    positive("semi-axis", s)?;
                }
                let range = SUPERQUADRIC_MIN_EXPONENT..=SUPERQUADRIC_MAX_EXPONENT;
                if range.contains(e1) && range.contains(e2) {
                    Ok(())
                } else {
                    bad(format!(
                        "superquadric exponents ({e1}, {e2}) must be in \
                         [{SUPERQUADRIC_MIN_EXPONENT}, {SUPERQUADRIC_MAX_EXPONENT}]"
                    ))
                }
            }
            Sdf::Union(a, b) | Sdf::Intersection(a, b) | Sdf::Difference(a, b) => {
                a.validate()?;
                b.validate()
            }
            Sdf::SmoothUnion(a, b, k) | Sdf::SmoothDifference(a, b, k) => {
                if !(k.is_finite() && *k >= 0.0) {
                    return bad(format!("blend width {k} must be finite and non-negative"));
                }
                a.validate()?;
                b.validate()
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

/// `-1` for negative `v`, else `1`.
fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else {
        1.0
    }
}

/// The planar norm `(s^q + t^q)^(1/q)` of `s, t ≥ 0` (`q ≥ 1`) and its partial derivatives
/// `((s/n)^(q−1), (t/n)^(q−1))`, computed with the larger operand factored out so that large
/// `q` neither overflows nor underflows.
fn planar_norm(s: f64, t: f64, q: f64) -> (f64, [f64; 2]) {
    let m = s.max(t);
    if m <= 0.0 {
        return (0.0, [0.0; 2]);
    }
    // Two powers in all: the larger operand's is 1, and (x/n)^(q−1) = (x/m)^q / sum · n/x.
    let power = |x: f64| if x == m { 1.0 } else { (x / m).powf(q) };
    let (ps, pt) = (power(s), power(t));
    let sum = ps + pt;
    let n = m * sum.powf(1.0 / q);
    let derivative = |x: f64, px: f64| {
        if x > 0.0 {
            px / sum * (n / x)
        } else if q <= 1.0 {
            1.0
        } else {
            0.0
        }
    };
    (n, [derivative(s, ps), derivative(t, pt)])
}

/// The Euclidean Lipschitz constant of the planar `ℓ_{2/ε}` norm.
fn planar_norm_lipschitz(e: f64) -> f64 {
    if e <= 1.0 {
        1.0
    } else {
        2f64.powf(0.5 * (e - 1.0))
    }
}

/// The bound of [`Sdf::Superquadric`] at `q` (relative to the centre) and its gradient.
fn superquadric_sdf(q: Vec3, scale: Vec3, e1: f64, e2: f64) -> (f64, Vec3) {
    let s = q.abs().to_array();
    let u = [s[0] / scale.x, s[1] / scale.y, s[2] / scale.z];
    // G = N₁(N₂(u₀, u₁), u₂) with N_i the planar ℓ_{2/εᵢ} norm.
    let (ring, [d0, d1]) = planar_norm(u[0], u[1], 2.0 / e2);
    let (gauge, [dring, d2]) = planar_norm(ring, u[2], 2.0 / e1);
    let lipschitz =
        planar_norm_lipschitz(e1) * planar_norm_lipschitz(e2) / scale.x.min(scale.y).min(scale.z);
    let grad = Vec3::new(
        dring * d0 * sgn(q.x) / scale.x,
        dring * d1 * sgn(q.y) / scale.y,
        d2 * sgn(q.z) / scale.z,
    ) / lipschitz;
    max_of(((gauge - 1.0) / lipschitz, grad), box_sdf(q, scale, 0.0))
}

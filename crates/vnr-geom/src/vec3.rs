//! A small `f64` 3-vector with its ray and axis-aligned box, for analytic shapes ([`crate::sdf`]),
//! the mesh code's exact per-triangle arithmetic ([`crate::bvh`], [`crate::winding`]) and scalar
//! per-point code such as the reference renderer's (`vnr_render::reference`). Meshes store
//! `[f32; 3]` arrays; [`Vec3::from_f32`] and [`Vec3::to_f32`] convert (as do
//! [`Vec3::from_array`] and [`Vec3::to_array`] for `[f64; 3]`).

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A 3-vector of `f64` (points, directions, RGB radiance).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec3 {
    /// First component.
    pub x: f64,
    /// Second component.
    pub y: f64,
    /// Third component.
    pub z: f64,
}

impl Vec3 {
    /// The vector `(x, y, z)`.
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Vec3 { x, y, z }
    }
    /// All three components equal to `v`.
    pub const fn splat(v: f64) -> Self {
        Vec3 { x: v, y: v, z: v }
    }
    /// From an array `[x, y, z]`.
    pub const fn from_array(a: [f64; 3]) -> Self {
        Vec3 {
            x: a[0],
            y: a[1],
            z: a[2],
        }
    }
    /// As an array `[x, y, z]`.
    pub const fn to_array(self) -> [f64; 3] {
        [self.x, self.y, self.z]
    }
    /// From an `f32` array (exact).
    pub fn from_f32(a: [f32; 3]) -> Self {
        Vec3::new(f64::from(a[0]), f64::from(a[1]), f64::from(a[2]))
    }
    /// As an `f32` array (rounded to nearest).
    pub fn to_f32(self) -> [f32; 3] {
        [self.x as f32, self.y as f32, self.z as f32]
    }
    /// Component `axis` (0, 1 or 2; anything else reads `z`).
    pub fn axis(self, axis: usize) -> f64 {
        match axis {
            0 => self.x,
            1 => self.y,
            _ => self.z,
        }
    }
    /// Dot product.
    pub fn dot(self, o: Vec3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    /// Cross product.
    pub fn cross(self, o: Vec3) -> Vec3 {
        Vec3::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }
    /// Euclidean length.
    pub fn length(self) -> f64 {
        self.dot(self).sqrt()
    }
    /// Squared Euclidean length.
    pub fn length_squared(self) -> f64 {
        self.dot(self)
    }
    /// The unit vector along `self` (unchanged when the length is 0 or not finite).
    pub fn normalized(self) -> Vec3 {
        let len = self.length();
        if len > 0.0 && len.is_finite() {
            self / len
        } else {
            self
        }
    }
    /// Component-wise product.
    pub fn mul_elem(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x * o.x, self.y * o.y, self.z * o.z)
    }
    /// Component-wise minimum.
    pub fn min(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x.min(o.x), self.y.min(o.y), self.z.min(o.z))
    }
    /// Component-wise maximum.
    pub fn max(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x.max(o.x), self.y.max(o.y), self.z.max(o.z))
    }
    /// Component-wise absolute value.
    pub fn abs(self) -> Vec3 {
        Vec3::new(self.x.abs(), self.y.abs(), self.z.abs())
    }
    /// Component-wise `exp`.
    pub fn exp(self) -> Vec3 {
        Vec3::new(self.x.exp(), self.y.exp(), self.z.exp())
    }
    /// Largest component.
    pub fn max_elem(self) -> f64 {
        self.x.max(self.y).max(self.z)
    }
    /// Whether every component is finite.
    pub fn is_finite(self) -> bool {
        self.x.is_finite() && self.y.is_finite() && self.z.is_finite()
    }
    /// Mirror reflection of direction `self` about unit normal `n`.
    pub fn reflect(self, n: Vec3) -> Vec3 {
        self - n * (2.0 * self.dot(n))
    }
}

impl Add for Vec3 {
    type Output = Vec3;
    fn add(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}
impl AddAssign for Vec3 {
    fn add_assign(&mut self, o: Vec3) {
        *self = *self + o;
    }
}
impl Sub for Vec3 {
    type Output = Vec3;
    fn sub(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}
impl Mul<f64> for Vec3 {
    type Output = Vec3;
    fn mul(self, s: f64) -> Vec3 {
        Vec3::new(self.x * s, self.y * s, self.z * s)
    }
}
impl Div<f64> for Vec3 {
    type Output = Vec3;
    fn div(self, s: f64) -> Vec3 {
        Vec3::new(self.x / s, self.y / s, self.z / s)
    }
}
impl Neg for Vec3 {
    type Output = Vec3;
    fn neg(self) -> Vec3 {
        Vec3::new(-self.x, -self.y, -self.z)
    }
}

/// A ray `origin + t · dir` (`dir` need not be unit length; `t` is then in units of `|dir|`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ray {
    /// Start point.
    pub origin: Vec3,
    /// Direction.
    pub dir: Vec3,
}

impl Ray {
    /// The point at parameter `t`.
    pub fn at(&self, t: f64) -> Vec3 {
        self.origin + self.dir * t
    }
}

/// An axis-aligned box `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aabb {
    /// Smallest corner.
    pub min: Vec3,
    /// Largest corner.
    pub max: Vec3,
}

impl Aabb {
    /// The box spanning `a` and `b` (in any order).
    pub fn new(a: Vec3, b: Vec3) -> Self {
        Aabb {
            min: a.min(b),
            max: a.max(b),
        }
    }
    /// The smallest box holding both.
    pub fn union(&self, o: &Aabb) -> Aabb {
        Aabb {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
    /// Centre point.
    pub fn center(&self) -> Vec3 {
        (self.min + self.max) * 0.5
    }
    /// Length of the diagonal.
    pub fn diagonal(&self) -> f64 {
        (self.max - self.min).length()
    }
    /// The parameter interval where `ray` is inside the box, clipped to `[t0, t1]` (slab test).
    pub fn clip(&self, ray: &Ray, t0: f64, t1: f64) -> Option<(f64, f64)> {
        let (mut lo, mut hi) = (t0, t1);
        for k in 0..3 {
            let (o, d) = (ray.origin.axis(k), ray.dir.axis(k));
            let (bmin, bmax) = (self.min.axis(k), self.max.axis(k));
            if d == 0.0 {
                if o < bmin || o > bmax {
                    return None;
                }
                continue;
            }
            let (a, b) = ((bmin - o) / d, (bmax - o) / d);
            lo = lo.max(a.min(b));
            hi = hi.min(a.max(b));
        }
        (lo <= hi && lo.is_finite()).then_some((lo, hi))
    }
}

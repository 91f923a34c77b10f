//! Procedural shapes for demos and tests without downloads: analytic signed distances of tori,
//! capsules, rounded boxes and spheres, smooth CSG blends of them, families of shapes with
//! random parameters (a stand-in for a ShapeNet class), and meshes of them by marching cubes.
//!
//! Distances follow the usual closed forms (Quílez's collection); the smooth union and
//! subtraction use the polynomial smooth minimum, so a blend is a level set but not an exact
//! distance away from its surface — fine for meshing, which only needs the sign and a smooth
//! crossing. Every shape fits inside the unit sphere, so its meshes need no normalisation to
//! look like DeepSDF's data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use vnr_formats::mesh::TriangleMesh;

use crate::bvh::{dot, sub};
use crate::marching_cubes::{marching_cubes, DenseField, MarchingCubesConfig, MarchingCubesError};

/// Errors from building procedural meshes.
#[derive(Debug, thiserror::Error)]
pub enum ProceduralError {
    /// A parameter is out of range.
    #[error("invalid procedural shape parameter: {0}")]
    BadParameter(String),
    /// Marching cubes failed.
    #[error(transparent)]
    MarchingCubes(#[from] MarchingCubesError),
    /// The shape has no surface inside its bounds at this resolution.
    #[error("the shape has no surface at resolution {0}")]
    EmptySurface(usize),
}

/// An analytic signed distance field (negative inside).
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeSdf {
    /// A ball.
    Sphere {
        /// Centre.
        centre: [f64; 3],
        /// Radius.
        radius: f64,
    },
    /// A torus around the y axis through `centre`.
    Torus {
        /// Centre.
        centre: [f64; 3],
        /// Distance from the centre to the tube's axis.
        major: f64,
        /// Tube radius.
        minor: f64,
    },
    /// The points within `radius` of the segment `a`–`b`.
    Capsule {
        /// One end of the axis.
        a: [f64; 3],
        /// The other end.
        b: [f64; 3],
        /// Radius.
        radius: f64,
    },
    /// An axis-aligned box with rounded edges; `half_extents` include the rounding.
    RoundedBox {
        /// Centre.
        centre: [f64; 3],
        /// Half the size along x, y, z.
        half_extents: [f64; 3],
        /// Edge radius (at most the smallest half extent).
        rounding: f64,
    },
    /// Smooth union of two shapes with blend radius `k` (0: the plain union).
    SmoothUnion(Box<ShapeSdf>, Box<ShapeSdf>, f64),
    /// Smooth subtraction of the second shape from the first, blend radius `k`.
    SmoothSubtraction(Box<ShapeSdf>, Box<ShapeSdf>, f64),
}

fn length(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Polynomial smooth minimum; `k = 0` is `min`.
fn smooth_min(a: f64, b: f64, k: f64) -> f64 {
    if k <= 0.0 {
        return a.min(b);
    }
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    b + (a - b) * h - k * h * (1.0 - h)
}

impl ShapeSdf {
    /// Signed distance at `p` (negative inside).
    pub fn distance(&self, p: [f64; 3]) -> f64 {
        match self {
            Self::Sphere { centre, radius } => length(sub(p, *centre)) - radius,
            Self::Torus {
                centre,
                major,
                minor,
            } => {
                let q = sub(p, *centre);
                let ring = (q[0] * q[0] + q[2] * q[2]).sqrt() - major;
                (ring * ring + q[1] * q[1]).sqrt() - minor
            }
            Self::Capsule { a, b, radius } => {
                let pa = sub(p, *a);
                let ba = sub(*b, *a);
                let len2 = dot(ba, ba);
                let h = if len2 > 0.0 {
                    (dot(pa, ba) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                length([pa[0] - ba[0] * h, pa[1] - ba[1] * h, pa[2] - ba[2] * h]) - radius
            }
            Self::RoundedBox {
                centre,
                half_extents,
                rounding,
            } => {
                let q: [f64; 3] =
                    std::array::from_fn(|k| (p[k] - centre[k]).abs() - half_extents[k] + rounding);
                let outside = length(q.map(|v| v.max(0.0)));
                outside + q[0].max(q[1]).max(q[2]).min(0.0) - rounding
            }
            Self::SmoothUnion(a, b, k) => smooth_min(a.distance(p), b.distance(p), *k),
            Self::SmoothSubtraction(a, b, k) => -smooth_min(-a.distance(p), b.distance(p), *k),
        }
    }

    /// A box `(lo, hi)` that holds the whole inside.
    pub fn bounds(&self) -> ([f64; 3], [f64; 3]) {
        let around = |c: [f64; 3], r: [f64; 3]| {
            (
                std::array::from_fn(|k| c[k] - r[k]),
                std::array::from_fn(|k| c[k] + r[k]),
            )
        };
        match self {
            Self::Sphere { centre, radius } => around(*centre, [*radius; 3]),
            Self::Torus {
                centre,
                major,
                minor,
            } => around(*centre, [major + minor, *minor, major + minor]),
            Self::Capsule { a, b, radius } => (
                std::array::from_fn(|k| a[k].min(b[k]) - radius),
                std::array::from_fn(|k| a[k].max(b[k]) + radius),
            ),
            Self::RoundedBox {
                centre,
                half_extents,
                ..
            } => around(*centre, *half_extents),
            // A smooth union grows each part by at most k/4 where they meet.
            Self::SmoothUnion(a, b, k) => {
                let (alo, ahi) = a.bounds();
                let (blo, bhi) = b.bounds();
                (
                    std::array::from_fn(|i| alo[i].min(blo[i]) - k / 4.0),
                    std::array::from_fn(|i| ahi[i].max(bhi[i]) + k / 4.0),
                )
            }
            Self::SmoothSubtraction(a, _, _) => a.bounds(),
        }
    }

    /// Checks every radius and extent is finite and positive (blend radii non-negative).
    pub fn validate(&self) -> Result<(), ProceduralError> {
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ProceduralError::BadParameter(format!(
                    "{what} {v} must be finite and positive"
                )))
            }
        };
        let finite = |what: &str, v: &[f64]| {
            if v.iter().all(|x| x.is_finite()) {
                Ok(())
            } else {
                Err(ProceduralError::BadParameter(format!(
                    "{what} {v:?} must be finite"
                )))
            }
        };
        match self {
            Self::Sphere { centre, radius } => {
                finite("centre", centre)?;
                positive("radius", *radius)
            }
            Self::Torus {
                centre,
                major,
                minor,
            } => {
                finite("centre", centre)?;
                positive("major radius", *major)?;
                positive("minor radius", *minor)
            }
            Self::Capsule { a, b, radius } => {
                finite("end", a)?;
                finite("end", b)?;
                positive("radius", *radius)
            }
            Self::RoundedBox {
                centre,
                half_extents,
                rounding,
            } => {
                finite("centre", centre)?;
                for &h in half_extents {
                    positive("half extent", h)?;
                }
                let smallest = half_extents.iter().copied().fold(f64::INFINITY, f64::min);
                if !(rounding.is_finite() && (0.0..=smallest).contains(rounding)) {
                    return Err(ProceduralError::BadParameter(format!(
                        "rounding {rounding} must be in [0, {smallest}]"
                    )));
                }
                Ok(())
            }
            Self::SmoothUnion(a, b, k) | Self::SmoothSubtraction(a, b, k) => {
                if !(k.is_finite() && *k >= 0.0) {
                    return Err(ProceduralError::BadParameter(format!(
                        "blend radius {k} must be finite and non-negative"
                    )));
                }
                a.validate()?;
                b.validate()
            }
        }
    }

    /// Samples the distance on a grid over the bounds (padded by two cells) with `resolution`
    /// points along the longest side, and extracts the zero level set: a closed, outward-facing
    /// mesh.
    pub fn mesh(&self, resolution: usize) -> Result<TriangleMesh, ProceduralError> {
        self.validate()?;
        if !(8..=1024).contains(&resolution) {
            return Err(ProceduralError::BadParameter(format!(
                "resolution {resolution} must be in 8..=1024"
            )));
        }
        let (lo, hi) = self.bounds();
        let longest = (0..3).map(|k| hi[k] - lo[k]).fold(0.0, f64::max);
        let voxel = longest / (resolution - 5) as f64;
        let origin: [f64; 3] = std::array::from_fn(|k| lo[k] - 2.0 * voxel);
        let dims: [usize; 3] =
            std::array::from_fn(|k| ((hi[k] - lo[k]) / voxel).ceil() as usize + 5);
        let [_, ny, nz] = dims;
        let values: Vec<f32> = (0..dims.iter().product::<usize>())
            .into_par_iter()
            .map(|n| {
                let idx = [n / (ny * nz), (n / nz) % ny, n % nz];
                let p = std::array::from_fn(|k| origin[k] + idx[k] as f64 * voxel);
                self.distance(p) as f32
            })
            .collect();
        let field = DenseField {
            values: &values,
            dims,
            origin,
            voxel_size: [voxel; 3],
        };
        let mesh = marching_cubes(&field, &MarchingCubesConfig::default())?;
        if mesh.triangles.is_empty() {
            return Err(ProceduralError::EmptySurface(resolution));
        }
        Ok(mesh)
    }
}

/// A family of shapes with random parameters, all inside the unit sphere and sharing an
/// orientation (as a ShapeNet class is aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Tori of varying ring and tube radii.
    Tori,
    /// Vertical capsules of varying length and radius.
    Capsules,
    /// Rounded boxes of varying proportions and rounding.
    RoundedBoxes,
    /// "Stools": a rounded-box seat smoothly joined to a capsule leg, with a torus footring.
    Blends,
    /// "Cups": a capsule body hollowed by a smaller one, with a torus handle blended on.
    Cups,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 5] = [
        Family::Tori,
        Family::Capsules,
        Family::RoundedBoxes,
        Family::Blends,
        Family::Cups,
    ];

    /// The family's name (`tori`, `capsules`, `rounded-boxes`, `blends`, `cups`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tori => "tori",
            Self::Capsules => "capsules",
            Self::RoundedBoxes => "rounded-boxes",
            Self::Blends => "blends",
            Self::Cups => "cups",
        }
    }

    /// The family called `name` (see [`Family::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// One member with parameters drawn from `rng`.
    pub fn sample(self, rng: &mut impl Rng) -> ShapeSdf {
        let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
        match self {
            Self::Tori => ShapeSdf::Torus {
                centre: [0.0; 3],
                major: u(0.45, 0.7),
                minor: u(0.1, 0.25),
            },
            Self::Capsules => {
                let half = u(0.2, 0.55);
                ShapeSdf::Capsule {
                    a: [0.0, -half, 0.0],
                    b: [0.0, half, 0.0],
                    radius: u(0.15, 0.4),
                }
            }
            Self::RoundedBoxes => {
                let half_extents = [u(0.25, 0.6), u(0.15, 0.5), u(0.25, 0.6)];
                let smallest = half_extents[0].min(half_extents[1]).min(half_extents[2]);
                ShapeSdf::RoundedBox {
                    centre: [0.0; 3],
                    half_extents,
                    rounding: u(0.02, 0.9) * smallest,
                }
            }
            Self::Blends => {
                let seat_y = u(0.2, 0.4);
                let seat = ShapeSdf::RoundedBox {
                    centre: [0.0, seat_y, 0.0],
                    half_extents: [u(0.3, 0.5), u(0.06, 0.12), u(0.3, 0.5)],
                    rounding: 0.05,
                };
                let leg = ShapeSdf::Capsule {
                    a: [0.0, -0.45, 0.0],
                    b: [0.0, seat_y, 0.0],
                    radius: u(0.06, 0.12),
                };
                let ring = ShapeSdf::Torus {
                    centre: [0.0, -0.45, 0.0],
                    major: u(0.2, 0.35),
                    minor: u(0.04, 0.08),
                };
                let k = u(0.05, 0.15);
                ShapeSdf::SmoothUnion(
                    Box::new(ShapeSdf::SmoothUnion(Box::new(seat), Box::new(leg), k)),
                    Box::new(ring),
                    k,
                )
            }
            Self::Cups => {
                let radius = u(0.25, 0.4);
                let half = u(0.15, 0.35);
                let wall = u(0.04, 0.08);
                let body = ShapeSdf::Capsule {
                    a: [0.0, -half, 0.0],
                    b: [0.0, half, 0.0],
                    radius,
                };
                let hollow = ShapeSdf::Capsule {
                    a: [0.0, -half + wall, 0.0],
                    b: [0.0, half + radius, 0.0],
                    radius: radius - wall,
                };
                let handle_radius = u(0.12, 0.2);
                // A flat ring (a torus around y) beside the body, blended on.
                let handle = ShapeSdf::Torus {
                    centre: [radius + handle_radius * 0.6, 0.0, 0.0],
                    major: handle_radius,
                    minor: wall * 0.8,
                };
                ShapeSdf::SmoothUnion(
                    Box::new(ShapeSdf::SmoothSubtraction(
                        Box::new(body),
                        Box::new(hollow),
                        0.02,
                    )),
                    Box::new(handle),
                    0.03,
                )
            }
        }
    }
}

/// `count` members of `family` meshed at `resolution`, named `{family}-{i:03}`, from a ChaCha8
/// stream seeded by `seed` (the same seed gives the same meshes).
pub fn generate_class(
    family: Family,
    count: usize,
    resolution: usize,
    seed: u64,
) -> Result<Vec<(String, TriangleMesh)>, ProceduralError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes: Vec<ShapeSdf> = (0..count).map(|_| family.sample(&mut rng)).collect();
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| Ok((format!("{}-{i:03}", family.name()), shape.mesh(resolution)?)))
        .collect()
}

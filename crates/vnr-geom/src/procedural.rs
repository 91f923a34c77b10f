//! Procedural shapes for demos and tests without downloads: families of analytic shapes
//! ([`Sdf`]: tori, capsules, rounded boxes, superquadrics and smooth CSG blends of them) with
//! random parameters (a stand-in for a ShapeNet class), and meshes of them by marching cubes;
//! and two exactly tessellated meshes with known signed distances for tests and benchmarks
//! ([`torus_mesh`], [`cuboid_mesh`]: any number of triangles, no marching-cubes error).
//!
//! The smooth union and difference use the polynomial smooth minimum, so a blend is a level set
//! but not an exact distance away from its surface — fine for meshing, which only needs the
//! sign and a smooth crossing. Every family member fits inside the unit sphere, so its meshes need
//! no normalisation to look like DeepSDF's data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use vnr_formats::mesh::TriangleMesh;

use crate::marching_cubes::{marching_cubes, DenseField, MarchingCubesConfig, MarchingCubesError};
use crate::sdf::{Sdf, SdfError};
use crate::vec3::Vec3;

/// Errors from building procedural meshes.
#[derive(Debug, thiserror::Error)]
pub enum ProceduralError {
    /// A meshing setting is out of range.
    #[error("invalid procedural mesh setting: {0}")]
    BadParameter(String),
    /// A shape parameter is out of range.
    #[error(transparent)]
    Shape(#[from] SdfError),
    /// Marching cubes failed.
    #[error(transparent)]
    MarchingCubes(#[from] MarchingCubesError),
    /// The shape has no surface inside its bounds at this resolution.
    #[error("the shape has no surface at resolution {0}")]
    EmptySurface(usize),
}

/// Grid points along a shape's longest side that [`Sdf::mesh`] accepts.
pub const MESH_RESOLUTIONS: std::ops::RangeInclusive<usize> = 8..=1024;

/// Most members [`generate_class`] builds in one call (ShapeNet's largest class has about
/// 8,500 shapes); the meshes are all held in memory.
pub const MAX_CLASS_SIZE: usize = 1 << 16;

fn check_resolution(resolution: usize) -> Result<(), ProceduralError> {
    if MESH_RESOLUTIONS.contains(&resolution) {
        return Ok(());
    }
    Err(ProceduralError::BadParameter(format!(
        "resolution {resolution} must be in {}..={}",
        MESH_RESOLUTIONS.start(),
        MESH_RESOLUTIONS.end()
    )))
}

impl Sdf {
    /// Samples the distance on a grid over the bounds (padded by two cells) with `resolution`
    /// points along the longest side, and extracts the zero level set: a closed, outward-facing
    /// mesh. `resolution` must be in [`MESH_RESOLUTIONS`].
    pub fn mesh(&self, resolution: usize) -> Result<TriangleMesh, ProceduralError> {
        self.validate()?;
        check_resolution(resolution)?;
        let bounds = self.bounds();
        let (lo, hi) = (bounds.min.to_array(), bounds.max.to_array());
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
                self.distance(Vec3::from_array(p)) as f32
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
    /// Superquadrics (superellipsoids) of varying semi-axes and exponents: boxes, cylinders,
    /// ellipsoids, octahedra and everything between.
    Superquadrics,
    /// "Stools": a rounded-box seat smoothly joined to a capsule leg, with a torus footring.
    Blends,
    /// "Cups": a capsule body hollowed by a smaller one, with a torus handle blended on.
    Cups,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 6] = [
        Family::Tori,
        Family::Capsules,
        Family::RoundedBoxes,
        Family::Superquadrics,
        Family::Blends,
        Family::Cups,
    ];

    /// The family's name (`tori`, `capsules`, `rounded-boxes`, `superquadrics`, `blends`,
    /// `cups`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tori => "tori",
            Self::Capsules => "capsules",
            Self::RoundedBoxes => "rounded-boxes",
            Self::Superquadrics => "superquadrics",
            Self::Blends => "blends",
            Self::Cups => "cups",
        }
    }

    /// The family called `name` (see [`Family::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// One member with parameters drawn from `rng`.
    pub fn sample(self, rng: &mut impl Rng) -> Sdf {
        let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
        let origin = Vec3::default();
        match self {
            Self::Tori => Sdf::Torus {
                center: origin,
                major: u(0.45, 0.7),
                minor: u(0.1, 0.25),
            },
            Self::Capsules => {
                let half = u(0.2, 0.55);
                Sdf::Capsule {
                    a: Vec3::new(0.0, -half, 0.0),
                    b: Vec3::new(0.0, half, 0.0),
                    radius: u(0.15, 0.4),
                }
            }
            Self::RoundedBoxes => {
                let half = Vec3::new(u(0.25, 0.6), u(0.15, 0.5), u(0.25, 0.6));
                Sdf::RoundedBox {
                    center: origin,
                    half,
                    radius: u(0.02, 0.9) * half.x.min(half.y).min(half.z),
                }
            }
            // Semi-axes up to 0.55 keep even the boxiest member's corners (√3 · 0.55 ≈ 0.95)
            // inside the unit sphere.
            Self::Superquadrics => Sdf::Superquadric {
                center: origin,
                scale: Vec3::new(u(0.3, 0.55), u(0.3, 0.55), u(0.3, 0.55)),
                e1: u(0.1, 2.0),
                e2: u(0.1, 2.0),
            },
            Self::Blends => {
                let seat_y = u(0.2, 0.4);
                let seat = Sdf::RoundedBox {
                    center: Vec3::new(0.0, seat_y, 0.0),
                    half: Vec3::new(u(0.3, 0.5), u(0.06, 0.12), u(0.3, 0.5)),
                    radius: 0.05,
                };
                let leg = Sdf::Capsule {
                    a: Vec3::new(0.0, -0.45, 0.0),
                    b: Vec3::new(0.0, seat_y, 0.0),
                    radius: u(0.06, 0.12),
                };
                let ring = Sdf::Torus {
                    center: Vec3::new(0.0, -0.45, 0.0),
                    major: u(0.2, 0.35),
                    minor: u(0.04, 0.08),
                };
                let k = u(0.05, 0.15);
                Sdf::SmoothUnion(
                    Box::new(Sdf::SmoothUnion(Box::new(seat), Box::new(leg), k)),
                    Box::new(ring),
                    k,
                )
            }
            Self::Cups => {
                let radius = u(0.25, 0.4);
                let half = u(0.15, 0.35);
                let wall = u(0.04, 0.08);
                let body = Sdf::Capsule {
                    a: Vec3::new(0.0, -half, 0.0),
                    b: Vec3::new(0.0, half, 0.0),
                    radius,
                };
                let hollow = Sdf::Capsule {
                    a: Vec3::new(0.0, -half + wall, 0.0),
                    b: Vec3::new(0.0, half + radius, 0.0),
                    radius: radius - wall,
                };
                let handle_radius = u(0.12, 0.2);
                // A flat ring (a torus around y) beside the body, blended on.
                let handle = Sdf::Torus {
                    center: Vec3::new(radius + handle_radius * 0.6, 0.0, 0.0),
                    major: handle_radius,
                    minor: wall * 0.8,
                };
                Sdf::SmoothUnion(
                    Box::new(Sdf::SmoothDifference(
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
/// stream seeded by `seed` (the same seed gives the same meshes). A `resolution` outside
/// [`MESH_RESOLUTIONS`] or a `count` above [`MAX_CLASS_SIZE`] is
/// [`ProceduralError::BadParameter`], before any shape is drawn.
pub fn generate_class(
    family: Family,
    count: usize,
    resolution: usize,
    seed: u64,
) -> Result<Vec<(String, TriangleMesh)>, ProceduralError> {
    check_resolution(resolution)?;
    if count > MAX_CLASS_SIZE {
        return Err(ProceduralError::BadParameter(format!(
            "count {count} must be at most {MAX_CLASS_SIZE}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // One shape at a time (meshing draws nothing from the stream, so the shapes are those of
    // drawing them all first).
    (0..count)
        .map(|i| {
            let shape = family.sample(&mut rng);
            Ok((format!("{}-{i:03}", family.name()), shape.mesh(resolution)?))
        })
        .collect()
}

/// A closed torus around the y axis (major radius `major`, tube radius `minor`) with
/// `segments_around × segments_tube` quads split into `2·segments_around·segments_tube`
/// outward-facing triangles. As the segment counts grow its signed distance approaches
/// that of [`crate::sdf::Sdf::Torus`] centred at the origin.
///
/// The triangles index the vertices with `u32`, so `2·segments_around·segments_tube` must fit
/// `u32` ([`ProceduralError::BadParameter`] otherwise).
pub fn torus_mesh(
    major: f32,
    minor: f32,
    segments_around: u32,
    segments_tube: u32,
) -> Result<TriangleMesh, ProceduralError> {
    let (nu, nv) = (segments_around.max(3), segments_tube.max(3));
    // Vertex ids and the vertex count are `u32`; the triangle count is twice that.
    if nu.checked_mul(nv).and_then(|n| n.checked_mul(2)).is_none() {
        return Err(ProceduralError::BadParameter(format!(
            "torus segments {segments_around} × {segments_tube}: twice their product must fit u32"
        )));
    }
    let tau = std::f64::consts::TAU;
    let mut positions = Vec::with_capacity((nu * nv) as usize);
    for i in 0..nu {
        let u = tau * f64::from(i) / f64::from(nu);
        for j in 0..nv {
            let v = tau * f64::from(j) / f64::from(nv);
            let ring = f64::from(major) + f64::from(minor) * v.cos();
            // The ring runs clockwise seen from +y, so that ∂u × ∂v points outward.
            positions.push([
                (ring * u.cos()) as f32,
                (f64::from(minor) * v.sin()) as f32,
                (-ring * u.sin()) as f32,
            ]);
        }
    }
    let index = |i: u32, j: u32| (i % nu) * nv + (j % nv);
    let mut triangles = Vec::with_capacity(2 * (nu * nv) as usize);
    for i in 0..nu {
        for j in 0..nv {
            // +u then +v is counter-clockwise seen from outside (∂u × ∂v points outward).
            triangles.push([index(i, j), index(i + 1, j), index(i + 1, j + 1)]);
            triangles.push([index(i, j), index(i + 1, j + 1), index(i, j + 1)]);
        }
    }
    Ok(TriangleMesh {
        positions,
        triangles,
    })
}

/// A closed axis-aligned box centred at the origin, 12 outward-facing triangles; its
/// signed distance is exactly that of [`crate::sdf::Sdf::Box`] centred at the origin.
pub fn cuboid_mesh(half: [f32; 3]) -> TriangleMesh {
    let positions = (0..8)
        .map(|c| std::array::from_fn(|k| if c >> k & 1 == 1 { half[k] } else { -half[k] }))
        .collect();
    // Corner c has bit k set when coordinate k is +half[k].
    let triangles = vec![
        [0, 2, 3],
        [0, 3, 1], // z−
        [4, 5, 7],
        [4, 7, 6], // z+
        [0, 1, 5],
        [0, 5, 4], // y−
        [2, 6, 7],
        [2, 7, 3], // y+
        [0, 4, 6],
        [0, 6, 2], // x−
        [1, 3, 7],
        [1, 7, 5], // x+
    ];
    TriangleMesh {
        positions,
        triangles,
    }
}

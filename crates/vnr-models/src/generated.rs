//! Generated training data for the voxel→image renderers (nothing can be downloaded):
//! procedural shapes built from the analytic [`Sdf`]s of `vnr_geom::sdf`, voxelised to
//! occupancy grids and rendered by [`vnr_render::reference::render`], written as chunked
//! datasets with [`ChunkWriter`].
//!
//! # Shapes
//! [`ShapeKind`]: spheres, boxes (sharp or rounded), tori, capsules, superquadrics (Barr's
//! superellipsoids, from box- to octahedron-like), CSG unions of two or three primitives,
//! sphere ∩ box intersections, and random blobs (a smooth union of 3–6 spheres).
//! Every shape lies inside the cube `[-0.45, 0.45]³` around the origin.
//!
//! # RenderNet layout ([`write_rendernet`])
//! Grids of `V³` voxels (default 64) over the world cube `[-0.5, 0.5]³`, binvox style: `[X, Y,
//! Z]`, translate `-0.5`, scale 1, also written as `shapes/shape_NNNN.binvox`. Each shape is
//! seen from `views_per_shape` random poses named `p{az}_t{el}_r{r}` (RenderNet's; azimuth and
//! elevation in whole degrees, radius to 0.1). The camera is the one RenderNet's resampling
//! implies ([`rendernet_camera`]): orthographic, looking along the depth axis of the
//! image-aligned camera-space grid, its image spanning the grid's rows and columns, so pixel
//! `(row, col)` lies over grid column `(row, col)` of `align_to_image(resample_to_camera(..))`.
//! The light is fixed to the camera (from the upper left, behind the viewer), so the shading is
//! a function of the camera-space grid. Targets: the shaded image in grey or the camera-space
//! normal map (`n · 0.5 + 0.5`, background 0). Files: a manifest dataset (`dataset.json`,
//! `chunk_NNN.npz` with `inputs` `u8 [1, V, V, V]` and `targets` `f32 [C, R, R]`, plus
//! `poses_NNN.npz` with the field `poses`, `f32 [3]`, the view parameters `(φ, θ, s)` of
//! [`RenderNetPose::view_params`]) and `samples.json` naming each sample's shape and pose.
//!
//! # ConvDeconv layout ([`write_convdeconv`])
//! VoxelNeuralRender's files (`volume_samples_NNN.npz` `f32 [N, 1, S, S, S]`,
//! `image_samples_NNN.npz` `f32 [N, R, R, 1]`). The camera orbits the shape at elevation
//! `elevation_deg`, a random azimuth and a random distance (default 1–1.8) with a perspective
//! field of view; the grid is in camera space: voxel `(d, h, w)` is the point at view depth
//! `near + (d + ½)·(far − near)/S` on the ray through the image point of column `w`, row `h`
//! (so the view axis is D, image rows are H and columns W). The light is static relative to
//! the camera rig and a ground plane sits under the shape: turning the rig around the vertical
//! axis is the same as turning the shape under a static light. One material per dataset:
//! diffuse, reflective or clear (refractive). Targets are the grey renders.
//!
//! Every sample is drawn from its own ChaCha8 stream of the seed (shape `i`: stream `2i`, view
//! `j`: stream `2j + 1`), so a dataset is the same for any thread count and any sample can be
//! regenerated alone ([`rendernet_sample`], [`convdeconv_sample`]).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vnr_formats::atomic::write_atomically;
use vnr_formats::binvox::{BinvoxError, BinvoxGrid, BinvoxVersion};
use vnr_formats::dataset::{ChunkLayout, ChunkWriter, DatasetError, MANIFEST_FILE};
use vnr_formats::image::{ImageError, ImageF32};
use vnr_formats::npz::{write_npz, NpyArray, NpzError};
use vnr_geom::sdf::SdfError;
use vnr_render::reference::{
    render, to_grey, Camera, Ground, Light, Material, Object, Outputs, Projection, RenderError,
    Scene, Sdf, Vec3,
};
use vnr_render::rendernet::RenderNetPose;

use crate::rendernet::RenderNetConfig;

/// Name of the per-sample index both layouts write.
pub const SAMPLES_FILE: &str = "samples.json";
/// The extra manifest field of the RenderNet layout holding the view parameters.
pub const POSES_FIELD: &str = "poses";
/// Largest voxel grid side a generator accepts (512³ bytes = 128 MiB of occupancy).
pub const MAX_GRID: usize = 512;
/// Most samples per chunk file a generator accepts (a chunk is buffered in memory).
pub const MAX_SAMPLES_PER_CHUNK: usize = 1 << 20;
/// Half the side of the cube every generated shape fits in.
pub const SHAPE_EXTENT: f64 = 0.45;

/// Errors of dataset generation.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A setting out of range.
    #[error("dataset generation: {0}")]
    Config(String),
    /// A shape parameter is out of range.
    #[error(transparent)]
    Shape(#[from] SdfError),
    /// Rendering failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Writing the chunks failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Writing an npz file failed.
    #[error(transparent)]
    Npz(#[from] NpzError),
    /// Writing a binvox file failed.
    #[error(transparent)]
    Binvox(#[from] BinvoxError),
    /// An image could not be built.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing an index file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// `Result` with [`GenError`].
pub type Result<T> = std::result::Result<T, GenError>;

/// The families of generated shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    /// A sphere.
    Sphere,
    /// An axis-aligned box, edges sharp or rounded.
    Box,
    /// A torus around the vertical axis.
    Torus,
    /// A capsule with a random axis.
    Capsule,
    /// An axis-aligned superquadric (superellipsoid) with random semi-axes and exponents.
    Superquadric,
    /// The union of two or three smaller primitives.
    Union,
    /// A sphere intersected with a box.
    Intersection,
    /// A smooth union of 3–6 small spheres.
    Blob,
}

impl ShapeKind {
    /// Every kind, in the order [`random_shape`] draws from.
    pub const ALL: [ShapeKind; 8] = [
        ShapeKind::Sphere,
        ShapeKind::Box,
        ShapeKind::Torus,
        ShapeKind::Capsule,
        ShapeKind::Superquadric,
        ShapeKind::Union,
        ShapeKind::Intersection,
        ShapeKind::Blob,
    ];

    /// Lower-case name (as in `samples.json`).
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Sphere => "sphere",
            ShapeKind::Box => "box",
            ShapeKind::Torus => "torus",
            ShapeKind::Capsule => "capsule",
            ShapeKind::Superquadric => "superquadric",
            ShapeKind::Union => "union",
            ShapeKind::Intersection => "intersection",
            ShapeKind::Blob => "blob",
        }
    }

    /// A shape of this kind with parameters drawn from `rng`, inside `[-0.45, 0.45]³`.
    pub fn sample(self, rng: &mut impl Rng) -> Sdf {
        match self {
            ShapeKind::Sphere
            | ShapeKind::Box
            | ShapeKind::Torus
            | ShapeKind::Capsule
            | ShapeKind::Superquadric => primitive(self, 1.0, rng),
            ShapeKind::Union => {
                let parts = rng.random_range(2..=3);
                let kinds = &ShapeKind::ALL[..PRIMITIVE_KINDS];
                let mut shape = primitive(kinds[rng.random_range(0..PRIMITIVE_KINDS)], 0.6, rng);
                for _ in 1..parts {
                    let part = primitive(kinds[rng.random_range(0..PRIMITIVE_KINDS)], 0.6, rng);
                    shape = Sdf::Union(Box::new(shape), Box::new(part));
                }
                shape
            }
            ShapeKind::Intersection => {
                let center = jitter(rng, 0.05);
                let half = Vec3::new(
                    rng.random_range(0.15..0.3),
                    rng.random_range(0.15..0.3),
                    rng.random_range(0.15..0.3),
                );
                // Between the inscribed and the circumscribed sphere of the box: both show.
                let radius = rng.random_range(1.05..1.4) * half.x.min(half.y).min(half.z);
                Sdf::Intersection(
                    Box::new(Sdf::Box { center, half }),
                    Box::new(Sdf::Sphere {
                        center,
                        radius: radius.min(SHAPE_EXTENT - 0.05),
                    }),
                )
            }
            ShapeKind::Blob => {
                let blobs = rng.random_range(3..=6);
                let k = rng.random_range(0.04..0.08);
                let mut shape = blob_sphere(rng);
                for _ in 1..blobs {
                    shape = Sdf::SmoothUnion(Box::new(shape), Box::new(blob_sphere(rng)), k);
                }
                shape
            }
        }
    }
}

/// The single primitives lead [`ShapeKind::ALL`]: a union's parts are drawn from them.
const PRIMITIVE_KINDS: usize = 5;

/// A point in `[-a, a]³`.
fn jitter(rng: &mut impl Rng, a: f64) -> Vec3 {
    Vec3::new(
        rng.random_range(-a..=a),
        rng.random_range(-a..=a),
        rng.random_range(-a..=a),
    )
}

/// A sphere of the blob family: centre within 0.18, radius 0.07–0.15, so that with the
/// bounds' `k/4` per blend (five at most, `k < 0.08`) the blob's box stays within 0.43.
fn blob_sphere(rng: &mut impl Rng) -> Sdf {
    Sdf::Sphere {
        center: jitter(rng, 0.18),
        radius: rng.random_range(0.07..0.15),
    }
}

/// One primitive scaled by `scale` (1: alone, centred; below 1: a part placed off centre).
/// Extents stay within [`SHAPE_EXTENT`] for any `scale ≤ 1`.
fn primitive(kind: ShapeKind, scale: f64, rng: &mut impl Rng) -> Sdf {
    // Parts move further from the centre the smaller they are.
    let spread = 0.05 + (1.0 - scale) * 0.4;
    let center = jitter(rng, spread);
    let s = scale;
    match kind {
        ShapeKind::Box => {
            let half = Vec3::new(
                s * rng.random_range(0.1..0.3),
                s * rng.random_range(0.1..0.3),
                s * rng.random_range(0.1..0.3),
            );
            let radius = rng.random_range(0.0..0.5) * half.x.min(half.y).min(half.z);
            Sdf::RoundedBox {
                center,
                half,
                radius,
            }
        }
        ShapeKind::Torus => {
            let minor = s * rng.random_range(0.05..0.12);
            Sdf::Torus {
                center,
                major: s * rng.random_range(0.18..0.28),
                minor,
            }
        }
        ShapeKind::Superquadric => Sdf::Superquadric {
            center,
            scale: Vec3::new(
                s * rng.random_range(0.12..0.3),
                s * rng.random_range(0.12..0.3),
                s * rng.random_range(0.12..0.3),
            ),
            e1: rng.random_range(0.1..2.0),
            e2: rng.random_range(0.1..2.0),
        },
        ShapeKind::Capsule => {
            let radius = s * rng.random_range(0.06..0.14);
            let reach = SHAPE_EXTENT - radius - center.abs().max_elem();
            let a = center + jitter(rng, reach.min(0.3 * s + 0.1));
            let b = center + jitter(rng, reach.min(0.3 * s + 0.1));
            Sdf::Capsule { a, b, radius }
        }
        _ => Sdf::Sphere {
            center,
            radius: s * rng.random_range(0.18..0.35),
        },
    }
}

/// A shape of a uniformly drawn kind.
pub fn random_shape(rng: &mut impl Rng) -> (ShapeKind, Sdf) {
    let kind = ShapeKind::ALL[rng.random_range(0..ShapeKind::ALL.len())];
    (kind, kind.sample(rng))
}

/// Occupancy of `sdf` on a `size³` grid over the world cube `[-0.5, 0.5]³`, binvox style
/// (`[X, Y, Z]`, translate `-0.5`, scale 1): voxel `(i, j, k)` is occupied where the distance at
/// its centre [`BinvoxGrid::world_position`] is `≤ 0`. The shape is validated first
/// ([`Sdf::validate`]).
pub fn voxelize_sdf(sdf: &Sdf, size: usize) -> Result<BinvoxGrid> {
    sdf.validate()?;
    if size == 0 || size > MAX_GRID {
        return Err(GenError::Config(format!(
            "voxel grid side {size} must be in 1..={MAX_GRID}"
        )));
    }
    let centre = |index: usize| -0.5 + (index as f64 + 0.5) / size as f64;
    let values: Vec<u8> = (0..size * size * size)
        .into_par_iter()
        .map(|n| {
            let (i, j, k) = (n / (size * size), (n / size) % size, n % size);
            u8::from(sdf.distance(Vec3::new(centre(i), centre(j), centre(k))) <= 0.0)
        })
        .collect();
    Ok(BinvoxGrid::new([size; 3], values, BinvoxVersion::V1)?.with_transform([-0.5; 3], 1.0)?)
}

/// What a RenderNet dataset's targets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RenderNetTarget {
    /// The Phong-shaded image in grey (1 channel, BCE loss).
    #[default]
    Shaded,
    /// The camera-space normal map `n · 0.5 + 0.5` (3 channels, MSE loss), as the released
    /// RenderNet predicted and then shaded with Phong.
    Normal,
}

impl RenderNetTarget {
    /// Image channels.
    pub fn channels(self) -> usize {
        match self {
            RenderNetTarget::Shaded => 1,
            RenderNetTarget::Normal => 3,
        }
    }
}

/// Settings of a RenderNet dataset. `Default`: 64³ grids resampled to 128³ (the original's),
/// 128² grey images, 4 views per shape, elevations 90–120° (looking 0–30° down), radii
/// 3.0–4.0, 100 samples per chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderNetGenConfig {
    /// Samples (views) to generate.
    pub count: usize,
    /// Consecutive samples that share one shape.
    pub views_per_shape: usize,
    /// Side `V` of the voxel grids.
    pub voxel_size: usize,
    /// Side of the camera-space grid the model resamples into (sets the camera's field).
    pub resampled_size: usize,
    /// Side `R` of the images.
    pub image_size: usize,
    /// Target images.
    pub target: RenderNetTarget,
    /// Range of elevations in degrees (RenderNet's convention: θ = 90° − elevation).
    pub elevation_deg: [f64; 2],
    /// Range of camera distances (RenderNet's scale is `3.3 / radius`; keep it within about
    /// 2.9–4.5 so the turned grid stays inside the camera-space grid).
    pub radius: [f64; 2],
    /// Seed of every random draw.
    pub seed: u64,
    /// Samples per chunk file.
    pub samples_per_chunk: usize,
}

impl Default for RenderNetGenConfig {
    fn default() -> Self {
        Self {
            count: 100,
            views_per_shape: 4,
            voxel_size: 64,
            resampled_size: 128,
            image_size: 128,
            target: RenderNetTarget::Shaded,
            elevation_deg: [90.0, 120.0],
            radius: [3.0, 4.0],
            seed: 0,
            samples_per_chunk: 100,
        }
    }
}

impl RenderNetGenConfig {
    /// Grid sides, image size and target matching a model configuration (`count` and the
    /// rest from `Default`).
    pub fn for_model(model: &RenderNetConfig) -> Self {
        Self {
            voxel_size: model.voxel_size,
            resampled_size: model.resampled_size,
            image_size: model.output_size(),
            target: if model.out_channels == 1 {
                RenderNetTarget::Shaded
            } else {
                RenderNetTarget::Normal
            },
            ..Self::default()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.count,
            self.views_per_shape,
            self.voxel_size,
            self.resampled_size,
            self.image_size,
            self.samples_per_chunk,
        ];
        if sizes.contains(&0) {
            return Err(GenError::Config(
                "count, views_per_shape, voxel_size, resampled_size, image_size and samples_per_chunk must be at least 1".into(),
            ));
        }
        if self.voxel_size > MAX_GRID || self.resampled_size > MAX_GRID || self.image_size > 4096 {
            return Err(GenError::Config(format!(
                "sizes too large: voxels {}, resampled {}, image {}",
                self.voxel_size, self.resampled_size, self.image_size
            )));
        }
        check_samples_per_chunk(self.samples_per_chunk)?;
        check_range("elevation_deg", self.elevation_deg, -360.0, 360.0)?;
        check_range("radius", self.radius, 0.5, 100.0)
    }
}

/// Refuses more than [`MAX_SAMPLES_PER_CHUNK`] samples per chunk (the poses of a chunk,
/// `3 · samples_per_chunk` values, must not overflow either).
fn check_samples_per_chunk(samples_per_chunk: usize) -> Result<()> {
    if samples_per_chunk > MAX_SAMPLES_PER_CHUNK {
        return Err(GenError::Config(format!(
            "samples_per_chunk {samples_per_chunk} must be at most {MAX_SAMPLES_PER_CHUNK}"
        )));
    }
    Ok(())
}

/// Checks that `[lo, hi]` is ordered, finite and within `[min, max]`.
fn check_range(name: &str, [lo, hi]: [f64; 2], min: f64, max: f64) -> Result<()> {
    if lo.is_finite() && hi.is_finite() && min <= lo && lo <= hi && hi <= max {
        Ok(())
    } else {
        Err(GenError::Config(format!(
            "{name} range [{lo}, {hi}] must be ordered and within [{min}, {max}]"
        )))
    }
}

/// A uniform draw from `[lo, hi]` (exactly `lo` when the range is a point).
fn draw(rng: &mut impl Rng, [lo, hi]: [f64; 2]) -> f64 {
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

/// RenderNet's pose name `p{az}_t{el}_r{r}` (whole degrees, radius to one decimal).
pub fn pose_name(pose: &RenderNetPose) -> String {
    format!(
        "p{}_t{}_r{:.1}",
        pose.azimuth_deg.round() as i64,
        pose.elevation_deg.round() as i64,
        pose.radius
    )
}

/// The generator of sample `index`'s shape or view: stream `2·index + view` of the seed. An
/// index whose stream number overflows `u64` is an error (wrapping would reuse another
/// sample's stream).
fn stream_rng(seed: u64, index: usize, view: bool) -> Result<ChaCha8Rng> {
    let stream = u64::try_from(index)
        .ok()
        .and_then(|i| i.checked_mul(2))
        .and_then(|s| s.checked_add(u64::from(view)))
        .ok_or_else(|| {
            GenError::Config(format!(
                "sample index {index} is too large for its random stream (at most {})",
                (u64::MAX - 1) / 2
            ))
        })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    Ok(rng)
}

/// The orthographic camera whose image is RenderNet's view of a `voxel_size³` grid over the
/// world cube `[-0.5, 0.5]³` (see [`voxelize_sdf`]) for `pose`, resampled into a
/// `resampled_size³` camera-space grid, at `image_size²` pixels.
///
/// [`vnr_render::rendernet::resample_to_camera`] fills output voxel `o = (x, y, z)` (`x`
/// indexing W) from input position `R(a, e)·(o − N/2)/s + V/2`, and `align_to_image` makes
/// image rows run down output `y` and columns along output `z`, with `x` the depth. Input
/// positions `(x, y, z)` are the binvox voxel indices `(k, j, i)`, at world `−0.5 + (index +
/// ½)/V`. The camera is that map applied to the output grid: `forward`, `up`, `right` are the
/// world images of output `+x`, `+y`, `+z`, the image spans the `N` output voxels, `N/(s·V)`
/// world units, and pixel centres fall on output positions `(r + ½)·N/R − ½`. (The frame is
/// mirrored, as the input axes are swapped; ray generation does not mind.)
pub fn rendernet_camera(
    pose: &RenderNetPose,
    voxel_size: usize,
    resampled_size: usize,
    image_size: usize,
) -> Result<Camera> {
    let [phi, e, s] = pose.view_params();
    if !(s > 0.0 && s.is_finite() && phi.is_finite() && e.is_finite()) {
        return Err(GenError::Config(format!(
            "unusable RenderNet pose {pose:?}"
        )));
    }
    if voxel_size == 0 || resampled_size == 0 || image_size == 0 {
        return Err(GenError::Config(
            "RenderNet camera: grid and image sizes must be at least 1".into(),
        ));
    }
    let a = phi - std::f64::consts::FRAC_PI_2;
    let (ca, sa, ce, se) = (a.cos(), a.sin(), e.cos(), e.sin());
    let (v, n) = (voxel_size as f64, resampled_size as f64);
    let world_of_output = |o: [f64; 3]| {
        let [px, py, pz] = o.map(|c| (c - 0.5 * n) / s);
        let (qx, qy) = (px * ce - py * se, px * se + py * ce);
        let (x, z) = (qx * ca + pz * sa, pz * ca - qx * sa);
        let world = |index: f64| -0.5 + (index + 0.5 * v + 0.5) / v;
        Vec3::new(world(z), world(qy), world(x))
    };
    let c = 0.5 * (n - 1.0);
    let centre = world_of_output([c, c, c]);
    let axis = |o: [f64; 3]| (world_of_output(o) - centre).normalized();
    let forward = axis([c + 1.0, c, c]);
    let up = axis([c, c + 1.0, c]);
    let right = axis([c, c, c + 1.0]);
    let span = n / (s * v);
    Ok(Camera {
        eye: centre - forward * span,
        right,
        up,
        forward,
        projection: Projection::Orthographic { height: span },
        width: image_size,
        height: image_size,
    })
}

/// A scene of `sdf` in the reference renderer's default grey Phong material.
fn surface_scene(sdf: Sdf, light: Light) -> Scene {
    let mut scene = Scene::new(Object::Surface(Box::new(sdf)));
    scene.light = light;
    scene
}

/// Clamps every sample of an image to `[0, 1]` (Phong radiance may exceed 1).
fn clamp_unit(mut image: ImageF32) -> ImageF32 {
    image.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    image
}

/// One generated RenderNet sample.
#[derive(Debug, Clone)]
pub struct RenderNetSample {
    /// Index of its shape.
    pub shape: usize,
    /// The shape's family.
    pub kind: ShapeKind,
    /// The camera pose.
    pub pose: RenderNetPose,
    /// The target image (`[R, R, C]`, values in `[0, 1]`).
    pub image: ImageF32,
}

/// Shape `shape` of a RenderNet dataset: its kind, SDF and voxel grid.
pub fn rendernet_shape(
    cfg: &RenderNetGenConfig,
    shape: usize,
) -> Result<(ShapeKind, Sdf, BinvoxGrid)> {
    let (kind, sdf) = random_shape(&mut stream_rng(cfg.seed, shape, false)?);
    let grid = voxelize_sdf(&sdf, cfg.voxel_size)?;
    Ok((kind, sdf, grid))
}

/// The view of sample `index` of `sdf` (its shape, [`rendernet_shape`] of
/// `index / views_per_shape`): a random pose and its render.
pub fn rendernet_view(
    cfg: &RenderNetGenConfig,
    sdf: &Sdf,
    index: usize,
) -> Result<(RenderNetPose, ImageF32)> {
    let mut rng = stream_rng(cfg.seed, index, true)?;
    let pose = RenderNetPose {
        azimuth_deg: f64::from(rng.random_range(0u16..360)),
        elevation_deg: draw(&mut rng, cfg.elevation_deg).round(),
        radius: (draw(&mut rng, cfg.radius) * 10.0).round() / 10.0,
    };
    Ok((pose, render_rendernet_pose(cfg, sdf, &pose)?))
}

/// The target image (`[R, R, C]`, values in `[0, 1]`) of `sdf` seen from `pose`, rendered as
/// the dataset's samples are (camera [`rendernet_camera`], light fixed to the camera). The
/// shape is validated first ([`Sdf::validate`]).
pub fn render_rendernet_pose(
    cfg: &RenderNetGenConfig,
    sdf: &Sdf,
    pose: &RenderNetPose,
) -> Result<ImageF32> {
    sdf.validate()?;
    let camera = rendernet_camera(pose, cfg.voxel_size, cfg.resampled_size, cfg.image_size)?;
    // From the viewer's upper left, fixed to the camera.
    let towards = (camera.up * 0.6 - camera.right * 0.6 - camera.forward).normalized();
    let scene = surface_scene(sdf.clone(), Light::Directional { towards });
    let image = match cfg.target {
        RenderNetTarget::Shaded => {
            let frame = render(&scene, &camera, Outputs::SHADED)?;
            to_grey(
                frame
                    .shaded
                    .as_ref()
                    .ok_or(RenderError::MissingOutput("shaded"))?,
            )?
        }
        RenderNetTarget::Normal => {
            let outputs = Outputs {
                shaded: false,
                normal: true,
                ..Outputs::SHADED
            };
            let frame = render(&scene, &camera, outputs)?;
            frame.normal.ok_or(RenderError::MissingOutput("normal"))?
        }
    };
    Ok(clamp_unit(image))
}

/// Sample `index` of a RenderNet dataset with its voxel grid (regenerated alone, as
/// [`write_rendernet`] writes it).
pub fn rendernet_sample(
    cfg: &RenderNetGenConfig,
    index: usize,
) -> Result<(RenderNetSample, BinvoxGrid)> {
    cfg.validate()?;
    let shape = index / cfg.views_per_shape;
    let (kind, sdf, grid) = rendernet_shape(cfg, shape)?;
    let (pose, image) = rendernet_view(cfg, &sdf, index)?;
    Ok((
        RenderNetSample {
            shape,
            kind,
            pose,
            image,
        },
        grid,
    ))
}

/// What a dataset writer produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSummary {
    /// The dataset folder.
    pub dir: PathBuf,
    /// Samples written.
    pub samples: usize,
    /// Chunk files (pairs) written.
    pub chunks: usize,
}

/// Writes `value` as pretty JSON to `path`, atomically.
fn write_json(path: &Path, value: &Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| GenError::Config(e.to_string()))?;
    write_atomically(path, |w| std::io::Write::write_all(w, &bytes)).map_err(|source| {
        GenError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// An image `[R, R, C]` as a tensor `[C, R, R]`.
fn image_chw(image: &ImageF32) -> Result<Tensor> {
    Ok(image.to_tensor(&Device::Cpu)?)
}

/// Generates a RenderNet dataset into `dir` (see the [module docs](self)); `progress` is called
/// with the number of samples done after each one.
pub fn write_rendernet(
    cfg: &RenderNetGenConfig,
    dir: impl AsRef<Path>,
    mut progress: impl FnMut(usize),
) -> Result<GenSummary> {
    cfg.validate()?;
    let dir = dir.as_ref();
    let shapes_dir = dir.join("shapes");
    std::fs::create_dir_all(&shapes_dir).map_err(|source| GenError::Io {
        path: shapes_dir.clone(),
        source,
    })?;
    let mut writer =
        ChunkWriter::new(dir, ChunkLayout::Manifest, cfg.samples_per_chunk)?.compressed(true);
    let mut poses: Vec<f32> = Vec::new();
    let mut index = Vec::new();
    for shape in 0..cfg.count.div_ceil(cfg.views_per_shape) {
        let (kind, sdf, grid) = rendernet_shape(cfg, shape)?;
        grid.write(shapes_dir.join(format!("shape_{shape:04}.binvox")))?;
        let voxels = grid.to_tensor(&Device::Cpu)?.unsqueeze(0)?;
        let first = shape * cfg.views_per_shape;
        for i in first..first.saturating_add(cfg.views_per_shape).min(cfg.count) {
            let (pose, image) = rendernet_view(cfg, &sdf, i)?;
            writer.push(&voxels, &image_chw(&image)?)?;
            poses.extend(pose.view_params().map(|v| v as f32));
            index.push(json!({
                "shape": shape,
                "kind": kind.name(),
                "pose": pose_name(&pose),
                "view_params": pose.view_params(),
            }));
            progress(i + 1);
        }
    }
    let chunks = writer.finish()?;
    add_poses_field(dir, &poses, cfg.samples_per_chunk)?;
    write_json(
        &dir.join(SAMPLES_FILE),
        &json!({ "layout": "rendernet", "config": cfg, "samples": index }),
    )?;
    Ok(GenSummary {
        dir: dir.to_owned(),
        samples: cfg.count,
        chunks,
    })
}

/// Writes `poses_NNN.npz` (key `poses`, `f32 [n, 3]`) next to each chunk and declares the
/// field in `dataset.json`, so the reader delivers it in `Batch::extra`.
fn add_poses_field(dir: &Path, poses: &[f32], per_chunk: usize) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| GenError::Io {
        path: path.clone(),
        source,
    })?;
    let mut manifest: Value = serde_json::from_str(&text)
        .map_err(|e| GenError::Config(format!("{}: {e}", path.display())))?;
    let bad = || GenError::Config(format!("{}: unexpected manifest layout", path.display()));
    manifest
        .get_mut("fields")
        .and_then(Value::as_array_mut)
        .ok_or_else(bad)?
        .push(json!({ "name": POSES_FIELD, "dtype": "float32", "shape": [3] }));
    let chunks = manifest
        .get_mut("chunks")
        .and_then(Value::as_array_mut)
        .ok_or_else(bad)?;
    for (number, (chunk, rows)) in chunks
        .iter_mut()
        .zip(poses.chunks(3 * per_chunk))
        .enumerate()
    {
        let name = format!("poses_{number:03}.npz");
        let tensor = Tensor::from_slice(rows, (rows.len() / 3, 3), &Device::Cpu)?;
        write_npz(
            dir.join(&name),
            &[(POSES_FIELD, &NpyArray::from_tensor(&tensor)?)],
            true,
        )?;
        chunk
            .get_mut("files")
            .and_then(Value::as_object_mut)
            .ok_or_else(bad)?
            .insert(
                POSES_FIELD.into(),
                json!({ "file": name, "key": POSES_FIELD }),
            );
    }
    write_json(&path, &manifest)
}

/// The surface material of a ConvDeconv dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MaterialKind {
    /// Phong only.
    #[default]
    Diffuse,
    /// Half Phong, half mirror (the ground shows in the shape).
    Reflective,
    /// Glass-like, index of refraction 1.5.
    Clear,
}

impl MaterialKind {
    /// The reference renderer's material.
    pub fn material(self) -> Material {
        match self {
            MaterialKind::Diffuse => Material::Diffuse,
            MaterialKind::Reflective => Material::Reflective { reflectivity: 0.5 },
            MaterialKind::Clear => Material::Clear { ior: 1.5 },
        }
    }

    /// Parses `diffuse`, `reflective` or `clear`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "diffuse" => Some(MaterialKind::Diffuse),
            "reflective" => Some(MaterialKind::Reflective),
            "clear" => Some(MaterialKind::Clear),
            _ => None,
        }
    }
}

/// Settings of a ConvDeconv dataset. `Default`: 32³ grids, 32² images, distances 1–1.8,
/// elevation 20°, 60° field of view, grid depths 0.4–2.4, light 40° to the camera's right and
/// 50° up, ground on, diffuse, 100 samples per chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvDeconvGenConfig {
    /// Samples to generate (one shape each).
    pub count: usize,
    /// Side `S` of the camera-space grids.
    pub grid_size: usize,
    /// Side `R` of the images.
    pub image_size: usize,
    /// Range of camera distances to the shape's centre.
    pub distance: [f64; 2],
    /// Camera elevation in degrees.
    pub elevation_deg: f64,
    /// Vertical field of view in degrees.
    pub fov_deg: f64,
    /// View depths the grid spans (near, far).
    pub depth: [f64; 2],
    /// Light azimuth relative to the camera's, and elevation, in degrees.
    pub light_deg: [f64; 2],
    /// Ground plane under the shape.
    pub ground: bool,
    /// Surface material.
    pub material: MaterialKind,
    /// Seed of every random draw.
    pub seed: u64,
    /// Samples per chunk file.
    pub samples_per_chunk: usize,
}

impl Default for ConvDeconvGenConfig {
    fn default() -> Self {
        Self {
            count: 100,
            grid_size: 32,
            image_size: 32,
            distance: [1.0, 1.8],
            elevation_deg: 20.0,
            fov_deg: 60.0,
            depth: [0.4, 2.4],
            light_deg: [40.0, 50.0],
            ground: true,
            material: MaterialKind::Diffuse,
            seed: 0,
            samples_per_chunk: 100,
        }
    }
}

impl ConvDeconvGenConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if [
            self.count,
            self.grid_size,
            self.image_size,
            self.samples_per_chunk,
        ]
        .contains(&0)
        {
            return Err(GenError::Config(
                "count, grid_size, image_size and samples_per_chunk must be at least 1".into(),
            ));
        }
        if self.grid_size > MAX_GRID || self.image_size > 4096 {
            return Err(GenError::Config(format!(
                "sizes too large: grid {}, image {}",
                self.grid_size, self.image_size
            )));
        }
        check_samples_per_chunk(self.samples_per_chunk)?;
        check_range("distance", self.distance, 1e-3, 100.0)?;
        check_range("depth", self.depth, 1e-3, 1000.0)?;
        if !(self.fov_deg > 0.0 && self.fov_deg < 180.0 && self.elevation_deg.is_finite()) {
            return Err(GenError::Config(format!(
                "fov_deg {} must be in (0, 180) and elevation_deg finite",
                self.fov_deg
            )));
        }
        Ok(())
    }
}

/// One generated ConvDeconv sample.
#[derive(Debug, Clone)]
pub struct ConvDeconvSample {
    /// The shape's family.
    pub kind: ShapeKind,
    /// Camera azimuth (the rig's turn) in degrees.
    pub azimuth_deg: f64,
    /// Camera distance.
    pub distance: f64,
    /// Camera-space occupancy `[S, S, S]` = `[D, H, W]`, row-major, 0 or 1.
    pub volume: Vec<f32>,
    /// The grey render `[R, R, 1]`, values in `[0, 1]`.
    pub image: ImageF32,
}

/// Camera-space occupancy of `sdf` for `camera` (see the [module docs](self)).
fn camera_space_grid(sdf: &Sdf, camera: &Camera, size: usize, [near, far]: [f64; 2]) -> Vec<f32> {
    let pixel = camera.width as f64 / size as f64;
    (0..size * size * size)
        .into_par_iter()
        .map(|n| {
            let (d, h, w) = (n / (size * size), (n / size) % size, n % size);
            let ray = camera.ray((w as f64 + 0.5) * pixel, (h as f64 + 0.5) * pixel);
            let depth = near + (d as f64 + 0.5) * (far - near) / size as f64;
            let p = ray.at(depth / ray.dir.dot(camera.forward));
            f32::from(u8::from(sdf.distance(p) <= 0.0))
        })
        .collect()
}

/// Sample `index` of a ConvDeconv dataset.
pub fn convdeconv_sample(cfg: &ConvDeconvGenConfig, index: usize) -> Result<ConvDeconvSample> {
    cfg.validate()?;
    let (kind, sdf) = random_shape(&mut stream_rng(cfg.seed, index, false)?);
    let mut rng = stream_rng(cfg.seed, index, true)?;
    let azimuth_deg = rng.random_range(0.0..360.0);
    let distance = draw(&mut rng, cfg.distance);
    let camera = Camera::orbit(
        azimuth_deg,
        cfg.elevation_deg,
        distance,
        Vec3::default(),
        Projection::Perspective {
            fov_y_deg: cfg.fov_deg,
        },
        cfg.image_size,
        cfg.image_size,
    )?;
    let volume = camera_space_grid(&sdf, &camera, cfg.grid_size, cfg.depth);
    let light = Light::from_angles(azimuth_deg + cfg.light_deg[0], cfg.light_deg[1]);
    let mut scene = surface_scene(sdf, light);
    scene.material = cfg.material.material();
    scene.ground = cfg.ground.then(Ground::default);
    let frame = render(&scene, &camera, Outputs::SHADED)?;
    let image = to_grey(
        frame
            .shaded
            .as_ref()
            .ok_or(RenderError::MissingOutput("shaded"))?,
    )?;
    Ok(ConvDeconvSample {
        kind,
        azimuth_deg,
        distance,
        volume,
        image: clamp_unit(image),
    })
}

/// Generates a ConvDeconv dataset into `dir` in VoxelNeuralRender's layout (see the
/// [module docs](self)); `progress` is called with the number of samples done after each one.
pub fn write_convdeconv(
    cfg: &ConvDeconvGenConfig,
    dir: impl AsRef<Path>,
    mut progress: impl FnMut(usize),
) -> Result<GenSummary> {
    cfg.validate()?;
    let dir = dir.as_ref();
    let mut writer = ChunkWriter::new(dir, ChunkLayout::VoxelNeuralRender, cfg.samples_per_chunk)?
        .compressed(true);
    let (s, r) = (cfg.grid_size, cfg.image_size);
    let mut index = Vec::new();
    for i in 0..cfg.count {
        let sample = convdeconv_sample(cfg, i)?;
        let volume = Tensor::from_vec(sample.volume, (1, s, s, s), &Device::Cpu)?;
        let image = Tensor::from_vec(sample.image.data, (r, r, 1), &Device::Cpu)?;
        writer.push(&volume, &image)?;
        index.push(json!({
            "kind": sample.kind.name(),
            "azimuth_deg": sample.azimuth_deg,
            "distance": sample.distance,
        }));
        progress(i + 1);
    }
    let chunks = writer.finish()?;
    write_json(
        &dir.join(SAMPLES_FILE),
        &json!({ "layout": "convdeconv", "config": cfg, "samples": index }),
    )?;
    Ok(GenSummary {
        dir: dir.to_owned(),
        samples: cfg.count,
        chunks,
    })
}

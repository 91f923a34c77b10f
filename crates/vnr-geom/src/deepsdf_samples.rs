//! DeepSDF's SDF training samples (`PreprocessMesh.cpp`), for one mesh or a directory.
//!
//! What DeepSDF does, and what is reproduced here:
//! 1. The mesh is normalised to the unit sphere ([`Normalization::deepsdf`]); everything below
//!    happens in that space.
//! 2. `near = ⌊47·n/50⌋` (integer division, as in C++); `near / 2` surface points are drawn
//!    area-weighted (triangle by area, then `(1−√r₁)a + √r₁(1−r₂)b + r₂√r₁c`).
//! 3. Each surface point yields two samples, perturbed per axis by Gaussian noise with
//!    **variance** 0.005 and 0.0005 (standard deviations √0.005 ≈ 0.0707 and √0.0005 ≈ 0.0224;
//!    `std::normal_distribution` takes the standard deviation, and DeepSDF passes
//!    `sqrt(variance)`). The two samples of one surface point are stored next to each other.
//! 4. `n − near` samples uniform in `[-1, 1]³` follow.
//! 5. Rows `x, y, z, sdf` go to `pos` when `sdf > 0` and to `neg` otherwise, so `sdf == 0`
//!    lands in `neg`. Both are float32 `[N, 4]` in one `.npz`.
//!
//! With `n` = 500,000: 235,000 surface points → 470,000 near samples + 30,000 uniform. When
//! `near` is odd, DeepSDF's totals are `n − 1`; so are these. The NeoRender preset instead takes
//! `⌊n / 2.1⌋` samples per noise level and the rest uniform.
//!
//! Differences, on purpose: the distance is exact (BVH closest point) instead of the distance
//! to the nearest virtual-scan point; the sign comes from winding numbers unless
//! [`SignMethod::VirtualScan`] is chosen, in which case samples whose 11 voters disagree are
//! dropped as DeepSDF drops them; randomness is a seeded ChaCha8 stream, so a seed reproduces a
//! file bit for bit.
//!
//! Files written by [`sample_mesh_file`] under an output directory `OUT`, for a mesh `NAME.ext`,
//! mirroring DeepSDF's data layout:
//! * `OUT/SdfSamples/NAME.npz`: `pos` and `neg`, float32 `[N, 4]`.
//! * `OUT/NormalizationParameters/NAME.npz`: `offset` float32 `[3]`, `scale` float32 `[1]`,
//!   with `normalised = (x + offset)·scale` (the inverse maps samples back to the mesh).
//! * optionally `OUT/SdfGrids/NAME.npz` (`values` float32 `[R, R, R]` indexed `[x][y][z]`,
//!   `origin` float64 `[3]` = position of sample `(0,0,0)`, `voxel_size` float64 `[1]`, the
//!   layout `vnr convert` reads) or `OUT/SdfGrids/NAME.vdb` (a level set), sampling the SDF at
//!   `R` evenly spaced positions per axis spanning `[-1, 1]` of the normalised space.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use vnr_formats::mesh::{MeshError, MeshFormat, TriangleMesh};

use crate::vec3::Vec3;
use vnr_formats::npz::{write_npz, NpyArray, NpyData, NpzError, NpzReader};
use vnr_formats::vdb::{write_vdb, DenseSamples, Grid, Transform, VdbError, WriteOptions};

use crate::bvh::GeometryError;
use crate::normalize::{Normalization, NormalizeError};
use crate::signed_distance::{MeshSdf, SdfOptions, SignMethod};

/// Key of the positive-SDF rows in the samples `.npz`.
pub const POS_KEY: &str = "pos";
/// Key of the non-positive-SDF rows in the samples `.npz`.
pub const NEG_KEY: &str = "neg";
/// Sub-directory of the samples, as in DeepSDF's data source.
pub const SAMPLES_DIR: &str = "SdfSamples";
/// Sub-directory of the normalisation parameters, as in DeepSDF's data source.
pub const NORMALIZATION_DIR: &str = "NormalizationParameters";
/// Sub-directory of the optional dense SDF grids.
pub const GRIDS_DIR: &str = "SdfGrids";
/// Most samples per axis of a dense grid ([`sdf_grid`], [`GridOutput::resolution`]).
pub const MAX_GRID_RESOLUTION: usize = 2048;
/// Most samples [`SamplingOptions::count`] may ask for: 2³⁰, 2,000 times DeepSDF's 500,000.
/// Positions, queries and rows take about 36 bytes a sample, so this bounds a request to tens
/// of GiB (the largest grid, [`MAX_GRID_RESOLUTION`]³ values, is 32 GiB) instead of failing
/// allocation.
pub const MAX_SAMPLE_COUNT: usize = 1 << 30;

/// Errors from sampling.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// The BVH or SDF could not be built.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// The mesh could not be normalised.
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
    /// Reading a mesh failed.
    #[error("{path}: {source}")]
    Mesh { path: PathBuf, source: MeshError },
    /// Writing an `.npz` failed.
    #[error(transparent)]
    Npz(#[from] NpzError),
    /// Writing a VDB failed.
    #[error(transparent)]
    Vdb(#[from] VdbError),
    /// A directory could not be read or created.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// All triangles have zero area: there is no surface to sample.
    #[error("the mesh's triangles have zero total area; there is no surface to sample")]
    ZeroSurfaceArea,
    /// An option is out of range.
    #[error("invalid sampling option: {0}")]
    BadOption(String),
    /// A directory holds no `.obj`, `.ply` or `.stl` file.
    #[error("{0}: no .obj, .ply or .stl files")]
    NoMeshes(PathBuf),
    /// Two meshes in one directory share a file stem, so their outputs would collide.
    #[error("{0}: another mesh with the same name stem was already sampled")]
    DuplicateStem(PathBuf),
    /// A samples file is readable but not in DeepSDF's layout.
    #[error("{path}: {problem}")]
    BadSamplesFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// How many samples of each kind to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// DeepSDF: `⌊47n/50⌋ / 2` surface points (two near samples each), `n − ⌊47n/50⌋` uniform.
    DeepSdf,
    /// NeoRender: `⌊n / 2.1⌋` samples per noise level, the rest uniform.
    NeoRender,
}

/// Sample counts of one mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleCounts {
    /// Surface points; each gives one sample per noise level.
    pub surface_points: usize,
    /// Uniform samples in `[-1, 1]³`.
    pub uniform: usize,
}

impl SampleCounts {
    /// Samples drawn in all (before any are dropped).
    pub fn total(&self) -> usize {
        2 * self.surface_points + self.uniform
    }
}

impl Preset {
    /// The counts for `n` requested samples.
    pub fn counts(self, n: usize) -> SampleCounts {
        match self {
            Preset::DeepSdf => {
                // C++ `(int)(47 * num_sample / 50)` in integer arithmetic; saturating so that
                // absurd `n` cannot overflow (it would fail allocation long before).
                let near = n.saturating_mul(47) / 50;
                SampleCounts {
                    surface_points: near / 2,
                    uniform: n - near,
                }
            }
            Preset::NeoRender => {
                let per_level = ((n as f64) / 2.1) as usize;
                SampleCounts {
                    surface_points: per_level,
                    uniform: n - 2 * per_level,
                }
            }
        }
    }
}

/// Sampling options; the defaults are DeepSDF's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Samples requested (`n`; DeepSDF: 500,000; at most [`MAX_SAMPLE_COUNT`]).
    pub count: usize,
    /// How `count` splits into near and uniform samples.
    pub preset: Preset,
    /// Variance of the first perturbation (DeepSDF: 0.005).
    pub variance: f32,
    /// Variance of the second perturbation (DeepSDF: `variance / 10` = 0.0005).
    pub second_variance: f32,
    /// How the sign is decided.
    pub sign: SignMethod,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            count: 500_000,
            preset: Preset::DeepSdf,
            variance: 0.005,
            second_variance: 0.0005,
            sign: SignMethod::default(),
        }
    }
}

/// The samples of one mesh, in its normalised space.
#[derive(Debug, Clone, PartialEq)]
pub struct SdfSamples {
    /// Rows `x, y, z, sdf` with `sdf > 0`.
    pub pos: Vec<[f32; 4]>,
    /// Rows `x, y, z, sdf` with `sdf ≤ 0`.
    pub neg: Vec<[f32; 4]>,
    /// The mesh → sample-space map.
    pub normalization: Normalization,
    /// What was drawn.
    pub counts: SampleCounts,
    /// Samples dropped because the virtual-scan votes disagreed (0 for winding numbers).
    pub dropped: usize,
}

impl SdfSamples {
    /// Writes `pos` and `neg` as DeepSDF's samples `.npz` (uncompressed, like cnpy). Atomic.
    pub fn write_npz(&self, path: impl AsRef<Path>) -> Result<(), SamplingError> {
        let pos = rows_array(&self.pos)?;
        let neg = rows_array(&self.neg)?;
        write_npz(path, &[(POS_KEY, &pos), (NEG_KEY, &neg)], false)?;
        Ok(())
    }
}

/// `(pos, neg)` rows `x, y, z, sdf`.
pub type SampleRows = (Vec<[f32; 4]>, Vec<[f32; 4]>);

/// Reads DeepSDF's samples `.npz`: `(pos, neg)` rows `x, y, z, sdf` (float32 or float64
/// `[N, 4]`; other arrays are ignored). Errors name the file and the problem: a missing key, a
/// wrong shape or dtype, a non-finite value, or a positive row with `sdf ≤ 0` (and the reverse).
pub fn read_samples_npz(path: impl AsRef<Path>) -> Result<SampleRows, SamplingError> {
    let path = path.as_ref();
    let bad = |problem: String| SamplingError::BadSamplesFile {
        path: path.to_owned(),
        problem,
    };
    let mut npz = NpzReader::open(path)?;
    let mut rows = |key: &str| -> Result<Vec<[f32; 4]>, SamplingError> {
        if !npz.keys().iter().any(|k| k == key) {
            return Err(bad(format!("no '{key}' array (keys: {:?})", npz.keys())));
        }
        let array = npz.array(key)?;
        let shape = array.shape().to_vec();
        if shape.len() != 2 || shape[1] != 4 {
            return Err(bad(format!(
                "'{key}' has shape {shape:?}, expected [N, 4] rows x, y, z, sdf"
            )));
        }
        let values: Vec<f32> = match array.into_data() {
            NpyData::F32(v) => v,
            NpyData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            other => {
                return Err(bad(format!(
                    "'{key}' has dtype {}, expected float32 or float64",
                    other.dtype().name()
                )))
            }
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "'{key}' row {} holds a non-finite value",
                i / 4
            )));
        }
        Ok(values
            .chunks_exact(4)
            .map(|r| [r[0], r[1], r[2], r[3]])
            .collect())
    };
    let pos = rows(POS_KEY)?;
    let neg = rows(NEG_KEY)?;
    if let Some(i) = pos.iter().position(|r| r[3] < 0.0) {
        return Err(bad(format!(
            "'pos' row {i} has a negative sdf {}",
            pos[i][3]
        )));
    }
    if let Some(i) = neg.iter().position(|r| r[3] > 0.0) {
        return Err(bad(format!(
            "'neg' row {i} has a positive sdf {}",
            neg[i][3]
        )));
    }
    Ok((pos, neg))
}

fn rows_array(rows: &[[f32; 4]]) -> Result<NpyArray, NpzError> {
    NpyArray::new(
        vec![rows.len(), 4],
        NpyData::F32(rows.iter().flatten().copied().collect()),
    )
}

/// Draws DeepSDF's samples of `mesh` (in any units; it is normalised first). Options out of
/// range (a `count` above [`MAX_SAMPLE_COUNT`], a negative variance) are
/// [`SamplingError::BadOption`].
pub fn sample_sdf(
    mesh: &TriangleMesh,
    options: &SamplingOptions,
    rng: &mut impl Rng,
) -> Result<SdfSamples, SamplingError> {
    let (normalization, sdf, normalized) = prepare(mesh, options)?;
    let counts = options.preset.counts(options.count);
    sample_prepared(&normalized, &sdf, normalization, counts, options, rng)
}

/// Validates the options, normalises the mesh and builds its SDF.
fn prepare(
    mesh: &TriangleMesh,
    options: &SamplingOptions,
) -> Result<(Normalization, MeshSdf, TriangleMesh), SamplingError> {
    check_options(options)?;
    mesh.validate().map_err(GeometryError::from)?;
    if mesh.is_empty() {
        return Err(GeometryError::EmptyMesh.into());
    }
    let normalization = Normalization::deepsdf(mesh)?;
    let normalized = normalization.apply_to_mesh(mesh);
    let sdf = MeshSdf::new(&normalized, &SdfOptions { sign: options.sign })?;
    Ok((normalization, sdf, normalized))
}

/// Checks the options that do not need a mesh, so that a batch or a file fails on them before
/// reading or writing anything. The count bounds the sample buffers, allocated up front.
fn check_options(options: &SamplingOptions) -> Result<(), SamplingError> {
    if options.count > MAX_SAMPLE_COUNT {
        return Err(SamplingError::BadOption(format!(
            "sample count {} must be at most {MAX_SAMPLE_COUNT}",
            options.count
        )));
    }
    if let SignMethod::VirtualScan(scan) = options.sign {
        scan.validate()?;
    }
    for (name, v) in [
        ("variance", options.variance),
        ("second variance", options.second_variance),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(SamplingError::BadOption(format!(
                "{name} {v} must be finite and not negative"
            )));
        }
    }
    Ok(())
}

/// The sample positions in DeepSDF's order: pairs of near samples, then uniform ones.
fn draw_points(
    mesh: &TriangleMesh,
    counts: SampleCounts,
    options: &SamplingOptions,
    rng: &mut impl Rng,
) -> Result<Vec<[f32; 3]>, SamplingError> {
    let normal = |variance: f32| {
        Normal::new(0.0f32, variance.sqrt())
            .map_err(|e| SamplingError::BadOption(format!("variance {variance}: {e}")))
    };
    let first = normal(options.variance)?;
    let second = normal(options.second_variance)?;
    let surface = SurfaceSampler::new(mesh)?;
    let mut points = Vec::with_capacity(counts.total());
    for _ in 0..counts.surface_points {
        let p = surface.sample(rng);
        let near: [f32; 3] = std::array::from_fn(|k| p[k] + first.sample(rng));
        let nearer: [f32; 3] = std::array::from_fn(|k| p[k] + second.sample(rng));
        points.push(near);
        points.push(nearer);
    }
    for _ in 0..counts.uniform {
        points.push(std::array::from_fn(|_| rng.random::<f32>() * 2.0 - 1.0));
    }
    Ok(points)
}

/// Area-weighted surface sampling.
struct SurfaceSampler<'a> {
    mesh: &'a TriangleMesh,
    /// Running sums of triangle areas.
    cdf: Vec<f64>,
}

impl<'a> SurfaceSampler<'a> {
    fn new(mesh: &'a TriangleMesh) -> Result<Self, SamplingError> {
        let mut total = 0.0f64;
        let cdf = mesh
            .triangles
            .iter()
            .map(|t| {
                let [a, b, c] = corners(mesh, t);
                let e1 = Vec3::from_f32(std::array::from_fn(|k| b[k] - a[k]));
                let e2 = Vec3::from_f32(std::array::from_fn(|k| c[k] - a[k]));
                let area = 0.5 * e1.cross(e2).length();
                total += if area.is_finite() { area } else { 0.0 };
                total
            })
            .collect();
        if !(total > 0.0 && total.is_finite()) {
            return Err(SamplingError::ZeroSurfaceArea);
        }
        Ok(Self { mesh, cdf })
    }

    fn sample(&self, rng: &mut impl Rng) -> [f32; 3] {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        // std::lower_bound: the first triangle whose running sum reaches u (zero-area
        // triangles, whose sum equals the previous one, are never chosen for u > 0).
        let index = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.cdf.len().saturating_sub(1));
        let [a, b, c] = self
            .mesh
            .triangles
            .get(index)
            .map_or([[0.0; 3]; 3], |t| corners(self.mesh, t));
        let r1 = rng.random::<f32>().sqrt();
        let r2 = rng.random::<f32>();
        std::array::from_fn(|k| (1.0 - r1) * a[k] + r1 * (1.0 - r2) * b[k] + r2 * r1 * c[k])
    }
}

/// A triangle's corners (indices were validated; a bad one would read as the origin).
fn corners(mesh: &TriangleMesh, t: &[u32; 3]) -> [[f32; 3]; 3] {
    t.map(|i| mesh.positions.get(i as usize).copied().unwrap_or([0.0; 3]))
}

/// Dense SDF grid file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridFormat {
    /// `.npz` with `values`, `origin`, `voxel_size`.
    Npz,
    /// `.vdb` float level set, narrow band of 3 voxels.
    Vdb,
}

/// An optional dense grid to write beside the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridOutput {
    /// Samples per axis (2 to [`MAX_GRID_RESOLUTION`]).
    pub resolution: usize,
    /// File format.
    pub format: GridFormat,
}

/// Signed distances at `resolution³` positions evenly spanning `[-1, 1]³` (both ends
/// included), `[x][y][z]` with z fastest.
pub fn sdf_grid(sdf: &MeshSdf, resolution: usize) -> Result<Vec<f32>, SamplingError> {
    if !(2..=MAX_GRID_RESOLUTION).contains(&resolution) {
        return Err(SamplingError::BadOption(format!(
            "grid resolution {resolution} must be in 2..={MAX_GRID_RESOLUTION}"
        )));
    }
    let step = 2.0 / (resolution - 1) as f32;
    let coord = |i: usize| -1.0 + step * i as f32;
    // One x-slab at a time bounds the position buffer to R² points.
    let mut values = Vec::with_capacity(resolution * resolution * resolution);
    for x in 0..resolution {
        let slab: Vec<[f32; 3]> = (0..resolution * resolution)
            .into_par_iter()
            .map(|yz| [coord(x), coord(yz / resolution), coord(yz % resolution)])
            .collect();
        values.extend(sdf.signed_distances(&slab));
    }
    Ok(values)
}

fn write_grid(
    sdf: &MeshSdf,
    grid: GridOutput,
    path_without_extension: &Path,
) -> Result<PathBuf, SamplingError> {
    let values = sdf_grid(sdf, grid.resolution)?;
    let r = grid.resolution;
    let voxel_size = 2.0 / (r - 1) as f64;
    match grid.format {
        GridFormat::Npz => {
            let path = path_without_extension.with_extension("npz");
            let values = NpyArray::new(vec![r, r, r], NpyData::F32(values))?;
            let origin = NpyArray::new(vec![3], NpyData::F64(vec![-1.0; 3]))?;
            let size = NpyArray::new(vec![1], NpyData::F64(vec![voxel_size]))?;
            write_npz(
                &path,
                &[
                    ("values", &values),
                    ("origin", &origin),
                    ("voxel_size", &size),
                ],
                true,
            )?;
            Ok(path)
        }
        GridFormat::Vdb => {
            let path = path_without_extension.with_extension("vdb");
            let transform = Transform::uniform_scale_translate(voxel_size, [-1.0; 3])?;
            let level_set = Grid::level_set_from_dense(
                "sdf",
                DenseSamples {
                    values: &values,
                    dims: [r; 3],
                    origin: [0; 3],
                },
                transform,
                (3.0 * voxel_size) as f32,
            )?;
            write_vdb(&path, &[&level_set], WriteOptions::default())?;
            Ok(path)
        }
    }
}

/// What [`sample_mesh_file`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// The mesh read.
    pub mesh: PathBuf,
    /// The samples `.npz`.
    pub samples: PathBuf,
    /// The normalisation `.npz`.
    pub normalization: PathBuf,
    /// The grid file, when asked for.
    pub grid: Option<PathBuf>,
    /// Rows in `pos`.
    pub pos: usize,
    /// Rows in `neg`.
    pub neg: usize,
    /// Samples dropped for ambiguous votes.
    pub dropped: usize,
}

/// Reads `mesh_path`, samples it with a ChaCha8 stream seeded by `seed`, and writes the files
/// listed in the [module docs](self) under `out_dir` (created if missing). Options out of
/// range are [`SamplingError::BadOption`], before anything is read or written.
pub fn sample_mesh_file(
    mesh_path: &Path,
    out_dir: &Path,
    options: &SamplingOptions,
    grid: Option<GridOutput>,
    seed: u64,
) -> Result<FileSummary, SamplingError> {
    check_options(options)?;
    let mesh = TriangleMesh::read(mesh_path).map_err(|source| SamplingError::Mesh {
        path: mesh_path.to_owned(),
        source,
    })?;
    let stem = mesh_path
        .file_stem()
        .map_or_else(|| "mesh".into(), |s| s.to_os_string());
    let samples_path = create_dir(&out_dir.join(SAMPLES_DIR))?
        .join(&stem)
        .with_extension("npz");
    let normalization_path = create_dir(&out_dir.join(NORMALIZATION_DIR))?
        .join(&stem)
        .with_extension("npz");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (normalization, sdf, normalized) = prepare(&mesh, options)?;
    let counts = options.preset.counts(options.count);
    let samples = sample_prepared(&normalized, &sdf, normalization, counts, options, &mut rng)?;
    samples.write_npz(&samples_path)?;
    normalization.write_npz(&normalization_path)?;
    let grid_path = match grid {
        Some(grid) => Some(write_grid(
            &sdf,
            grid,
            &create_dir(&out_dir.join(GRIDS_DIR))?.join(&stem),
        )?),
        None => None,
    };
    Ok(FileSummary {
        mesh: mesh_path.to_owned(),
        samples: samples_path,
        normalization: normalization_path,
        grid: grid_path,
        pos: samples.pos.len(),
        neg: samples.neg.len(),
        dropped: samples.dropped,
    })
}

fn create_dir(dir: &Path) -> Result<PathBuf, SamplingError> {
    std::fs::create_dir_all(dir).map_err(|source| SamplingError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(dir.to_owned())
}

/// One finished file of a directory batch, for progress reports.
#[derive(Debug)]
pub struct Progress<'a> {
    /// 1-based position in the batch.
    pub index: usize,
    /// Files in the batch.
    pub total: usize,
    /// The mesh.
    pub mesh: &'a Path,
    /// Its outcome.
    pub result: &'a Result<FileSummary, SamplingError>,
}

/// Outcome of [`sample_directory`].
#[derive(Debug, Default)]
pub struct DirectorySummary {
    /// Files sampled.
    pub done: Vec<FileSummary>,
    /// Files that failed, with why (the batch goes on after a failure).
    pub failed: Vec<(PathBuf, SamplingError)>,
}

/// Samples every `.obj`, `.ply` and `.stl` file directly in `input_dir` (sorted by name) into
/// `out_dir`, calling `progress` after each. Each file is seeded with [`file_seed`], so its
/// samples do not depend on what else is in the directory. Options out of range fail the
/// whole batch up front ([`SamplingError::BadOption`]).
pub fn sample_directory(
    input_dir: &Path,
    out_dir: &Path,
    options: &SamplingOptions,
    grid: Option<GridOutput>,
    seed: u64,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<DirectorySummary, SamplingError> {
    check_options(options)?;
    let io_error = |source| SamplingError::Io {
        path: input_dir.to_owned(),
        source,
    };
    let mut meshes = Vec::new();
    for entry in std::fs::read_dir(input_dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if path.is_file() && MeshFormat::from_path(&path).is_some() {
            meshes.push(path);
        }
    }
    if meshes.is_empty() {
        return Err(SamplingError::NoMeshes(input_dir.to_owned()));
    }
    meshes.sort();
    let mut summary = DirectorySummary::default();
    let mut stems = HashSet::new();
    let total = meshes.len();
    for (i, mesh) in meshes.into_iter().enumerate() {
        let stem = mesh
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_default();
        let result = if stems.insert(stem.clone()) {
            sample_mesh_file(&mesh, out_dir, options, grid, file_seed(seed, &mesh))
        } else {
            Err(SamplingError::DuplicateStem(mesh.clone()))
        };
        progress(Progress {
            index: i + 1,
            total,
            mesh: &mesh,
            result: &result,
        });
        match result {
            Ok(done) => summary.done.push(done),
            Err(e) => summary.failed.push((mesh, e)),
        }
    }
    Ok(summary)
}

/// The seed [`sample_directory`] gives `mesh_path`: `seed ^ fnv1a(file stem)`, so that one
/// file sampled alone gets the samples it gets in a batch.
pub fn file_seed(seed: u64, mesh_path: &Path) -> u64 {
    let stem = mesh_path.file_stem().unwrap_or_default();
    seed ^ fnv1a(stem.as_encoded_bytes())
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// [`sample_sdf`] on an already prepared mesh and SDF.
fn sample_prepared(
    normalized: &TriangleMesh,
    sdf: &MeshSdf,
    normalization: Normalization,
    counts: SampleCounts,
    options: &SamplingOptions,
    rng: &mut impl Rng,
) -> Result<SdfSamples, SamplingError> {
    let points = draw_points(normalized, counts, options, rng)?;
    let queries = sdf.queries(&points);
    let drop_ambiguous = matches!(options.sign, SignMethod::VirtualScan(_));
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    let mut dropped = 0;
    for (p, q) in points.iter().zip(&queries) {
        if drop_ambiguous && !q.unanimous {
            dropped += 1;
            continue;
        }
        let s = q.signed();
        let row = [p[0], p[1], p[2], s];
        if s > 0.0 {
            pos.push(row);
        } else {
            neg.push(row);
        }
    }
    Ok(SdfSamples {
        pos,
        neg,
        normalization,
        counts,
        dropped,
    })
}

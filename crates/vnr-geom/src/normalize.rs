//! DeepSDF's unit-sphere normalisation and its inverse.
//!
//! Reproduces `ComputeNormalizationParameters` / `BoundingCubeNormalization` of DeepSDF's
//! `src/Utils.cpp`: only vertices referenced by a triangle count; the centre is the middle of
//! their axis-aligned bounding box (not their mean); the radius is the largest distance of a
//! used vertex from that centre, times a buffer of 1.03, so the farthest vertex lands at
//! 1/1.03 ≈ 0.971 from the origin. (DeepSDF seeds its min/max with ±10⁶, which would break
//! meshes with coordinates beyond that; the true bounding box is used here.)
//!
//! The parameters follow DeepSDF's `NormalizationParameters` `.npz` (written by
//! `SampleVisibleMeshSurface`): `offset` = −centre (float32 `[3]`) and `scale` = 1/radius
//! (float32 `[1]`), with `normalised = (x + offset)·scale` and
//! `x = normalised / scale − offset` (as DeepSDF's evaluation undoes it).

use std::path::Path;

use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{read_npz, write_npz, NpyArray, NpyData, NpzError};

/// DeepSDF's radius buffer: the farthest vertex ends up at `1 / 1.03`.
pub const DEEPSDF_BUFFER: f32 = 1.03;

/// Key of the offset in the normalisation `.npz` (float32 `[3]`, minus the centre).
pub const OFFSET_KEY: &str = "offset";
/// Key of the scale in the normalisation `.npz` (float32 `[1]`, one over the radius).
pub const SCALE_KEY: &str = "scale";

/// Errors from computing a normalisation.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// No triangle refers to any vertex, so there is nothing to normalise.
    #[error("the mesh has no triangles to normalise")]
    EmptyMesh,
    /// A used vertex is NaN or infinite, or out of range.
    #[error("triangle {triangle} refers to a missing or non-finite vertex")]
    BadVertex { triangle: usize },
    /// All used vertices coincide: the scale would be infinite.
    #[error("all used vertices coincide; the mesh has no extent to scale")]
    ZeroExtent,
    /// `buffer` must be positive and finite.
    #[error("normalisation buffer {0} must be positive and finite")]
    BadBuffer(f32),
    /// Reading or writing the parameters failed.
    #[error(transparent)]
    Npz(#[from] NpzError),
    /// A normalisation file lacks `offset [3]` / `scale [1]` or holds a bad value.
    #[error("{path}: {problem}")]
    BadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// `normalised = (x + offset) · scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Minus the bounding-box centre of the used vertices.
    pub offset: [f32; 3],
    /// One over (largest distance of a used vertex from the centre × buffer).
    pub scale: f32,
}

impl Normalization {
    /// DeepSDF's parameters for `mesh` (buffer [`DEEPSDF_BUFFER`]).
    pub fn deepsdf(mesh: &TriangleMesh) -> Result<Self, NormalizeError> {
        Self::with_buffer(mesh, DEEPSDF_BUFFER)
    }

    /// The parameters with another radius buffer (1 puts the farthest vertex on the unit
    /// sphere).
    pub fn with_buffer(mesh: &TriangleMesh, buffer: f32) -> Result<Self, NormalizeError> {
        if !(buffer > 0.0 && buffer.is_finite()) {
            return Err(NormalizeError::BadBuffer(buffer));
        }
        let used = used_vertices(mesh)?;
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for p in used.clone() {
            for k in 0..3 {
                lo[k] = lo[k].min(f64::from(p[k]));
                hi[k] = hi[k].max(f64::from(p[k]));
            }
        }
        // DeepSDF computes the centre in f32: (max + min) / 2.
        let centre: [f32; 3] = std::array::from_fn(|k| ((hi[k] + lo[k]) / 2.0) as f32);
        let radius = used
            .map(|p| {
                (0..3)
                    .map(|k| (f64::from(p[k]) - f64::from(centre[k])).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0f64, f64::max)
            * f64::from(buffer);
        let scale = (1.0 / radius) as f32;
        if !(radius > 0.0 && scale.is_finite() && scale > 0.0) {
            return Err(NormalizeError::ZeroExtent);
        }
        Ok(Self {
            offset: centre.map(|c| -c),
            scale,
        })
    }

    /// The identity (offset 0, scale 1).
    pub fn identity() -> Self {
        Self {
            offset: [0.0; 3],
            scale: 1.0,
        }
    }

    /// Maps a mesh-space point into the normalised space.
    pub fn apply(&self, p: [f32; 3]) -> [f32; 3] {
        std::array::from_fn(|k| (p[k] + self.offset[k]) * self.scale)
    }

    /// Maps a normalised point back into mesh space.
    pub fn invert(&self, p: [f32; 3]) -> [f32; 3] {
        std::array::from_fn(|k| p[k] / self.scale - self.offset[k])
    }

    /// A copy of `mesh` with every vertex normalised (unused vertices too, as DeepSDF does).
    pub fn apply_to_mesh(&self, mesh: &TriangleMesh) -> TriangleMesh {
        TriangleMesh {
            positions: mesh.positions.iter().map(|&p| self.apply(p)).collect(),
            triangles: mesh.triangles.clone(),
        }
    }

    /// The two arrays of DeepSDF's normalisation `.npz`: `(offset [3], scale [1])`.
    pub fn to_arrays(&self) -> Result<[(&'static str, NpyArray); 2], NormalizeError> {
        Ok([
            (
                OFFSET_KEY,
                NpyArray::new(vec![3], NpyData::F32(self.offset.to_vec()))?,
            ),
            (
                SCALE_KEY,
                NpyArray::new(vec![1], NpyData::F32(vec![self.scale]))?,
            ),
        ])
    }

    /// Writes DeepSDF's normalisation `.npz` (`offset`, `scale`; uncompressed). Atomic.
    pub fn write_npz(&self, path: impl AsRef<Path>) -> Result<(), NormalizeError> {
        let [(ok, offset), (sk, scale)] = self.to_arrays()?;
        write_npz(path, &[(ok, &offset), (sk, &scale)], false)?;
        Ok(())
    }

    /// Reads DeepSDF's normalisation `.npz` (`offset` 3 values, `scale` 1 value, float32 or
    /// float64); the scale must be positive and everything finite.
    pub fn read_npz(path: impl AsRef<Path>) -> Result<Self, NormalizeError> {
        let path = path.as_ref();
        let bad = |problem: String| NormalizeError::BadFile {
            path: path.to_owned(),
            problem,
        };
        let arrays = read_npz(path)?;
        let values = |key: &str, len: usize| -> Result<Vec<f32>, NormalizeError> {
            let array = arrays
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, a)| a)
                .ok_or_else(|| bad(format!("no '{key}' array")))?;
            let v: Vec<f32> = match array.data() {
                NpyData::F32(v) => v.clone(),
                NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
                _ => return Err(bad(format!("'{key}' must be float32 or float64"))),
            };
            if v.len() != len || v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("'{key}' must hold {len} finite values")));
            }
            Ok(v)
        };
        let offset = values(OFFSET_KEY, 3)?;
        let scale = values(SCALE_KEY, 1)?[0];
        if scale <= 0.0 {
            return Err(bad(format!("scale {scale} must be positive")));
        }
        Ok(Self {
            offset: [offset[0], offset[1], offset[2]],
            scale,
        })
    }
}

/// Positions referenced by at least one triangle, each once; errors name the first bad one.
fn used_vertices(
    mesh: &TriangleMesh,
) -> Result<impl Iterator<Item = [f32; 3]> + Clone + '_, NormalizeError> {
    if mesh.triangles.is_empty() {
        return Err(NormalizeError::EmptyMesh);
    }
    let mut used = vec![false; mesh.positions.len()];
    for (triangle, t) in mesh.triangles.iter().enumerate() {
        for &i in t {
            match mesh.positions.get(i as usize) {
                Some(p) if p.iter().all(|c| c.is_finite()) => used[i as usize] = true,
                _ => return Err(NormalizeError::BadVertex { triangle }),
            }
        }
    }
    Ok(mesh
        .positions
        .iter()
        .zip(used)
        .filter_map(|(p, u)| u.then_some(*p)))
}

//! The dense scalar grid every grid conversion goes through.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use vnr_formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr_formats::npz::{NpyArray, NpyData};

/// What the values of a grid mean, which decides how it becomes occupancy or a VDB grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GridClass {
    /// Signed distances, negative inside; voxels farther than `background` are inactive.
    LevelSet { background: f32 },
    /// Densities, 0 outside.
    FogVolume,
}

/// A dense scalar grid, `[X, Y, Z]` with Z fastest, and where it sits in the world.
#[derive(Debug, Clone)]
pub struct DenseGrid {
    pub dims: [usize; 3],
    pub values: Vec<f32>,
    /// World position of the centre of voxel `(0, 0, 0)`.
    pub origin: [f64; 3],
    /// Edge length of a (cubic) voxel.
    pub voxel_size: f64,
    pub class: GridClass,
}

/// npz keys `vnr convert` writes and reads beside the values, so the transform survives.
pub const VALUES_KEY: &str = "values";
pub const ORIGIN_KEY: &str = "origin";
pub const VOXEL_SIZE_KEY: &str = "voxel_size";

impl DenseGrid {
    /// Occupancy (0/1) from binvox values; `#binvox 2` values become `v / 255` densities.
    pub fn from_binvox(grid: &BinvoxGrid) -> Self {
        let scale = match grid.version() {
            BinvoxVersion::V1 => 1.0,
            BinvoxVersion::V2 => 1.0 / 255.0,
        };
        let origin = grid.world_position(0, 0, 0).map(f64::from);
        DenseGrid {
            dims: grid.dims(),
            values: grid
                .values()
                .iter()
                .map(|&v| f32::from(v) * scale)
                .collect(),
            origin,
            voxel_size: f64::from(grid.voxel_size()),
            class: GridClass::FogVolume,
        }
    }

    /// Voxels inside the shape: `value < 0` for level sets, `value > threshold` for fog volumes.
    pub fn occupancy(&self, threshold: f32) -> impl Iterator<Item = bool> + '_ {
        self.values.iter().map(move |&v| match self.class {
            GridClass::LevelSet { .. } => v < 0.0,
            GridClass::FogVolume => v > threshold,
        })
    }

    /// The same shape as the other class: a level set becomes a fog volume of its inside (1
    /// inside, 0 outside); an occupancy or fog volume (occupied where `value > threshold`)
    /// becomes a level set by an exact Euclidean distance transform, the surface lying halfway
    /// between occupied and empty voxel centres, clamped to `±background` (world units).
    pub fn convert_class(&mut self, class: GridClass, threshold: f32) {
        match (self.class, class) {
            (GridClass::LevelSet { .. }, GridClass::FogVolume) => {
                self.values = self.occupancy(threshold).map(f32::from).collect();
            }
            (GridClass::FogVolume, GridClass::LevelSet { background }) => {
                let inside: Vec<bool> = self.occupancy(threshold).collect();
                let to_inside = squared_distance_transform(self.dims, |i| inside[i]);
                let to_outside = squared_distance_transform(self.dims, |i| !inside[i]);
                let size = self.voxel_size;
                self.values = inside
                    .iter()
                    .zip(to_inside.iter().zip(&to_outside))
                    .map(|(&inside, (&d_in, &d_out))| {
                        // Distances are between voxel centres; the surface is half a voxel closer.
                        let d = if inside {
                            -(d_out.sqrt() - 0.5) * size
                        } else {
                            (d_in.sqrt() - 0.5) * size
                        };
                        (d as f32).clamp(-background, background)
                    })
                    .collect();
            }
            _ => {}
        }
        self.class = class;
    }

    /// A `#binvox 1` grid of [`DenseGrid::occupancy`], with binvox's translate/scale for the same
    /// world placement.
    pub fn to_binvox(&self, threshold: f32) -> Result<BinvoxGrid> {
        let values = self.occupancy(threshold).map(u8::from).collect();
        let max_dim = self.dims.iter().copied().max().unwrap_or(1) as f64;
        let translate = self.origin.map(|o| (o - 0.5 * self.voxel_size) as f32);
        let scale = (self.voxel_size * max_dim) as f32;
        Ok(BinvoxGrid::new(self.dims, values, BinvoxVersion::V1)?
            .with_transform(translate, scale)?)
    }

    /// A grid from a rank-3 array `[X, Y, Z]` (any numeric dtype), taking `origin` and
    /// `voxel_size` from the companion arrays when the npz has them.
    pub fn from_arrays(
        values: &NpyArray,
        origin: Option<&NpyArray>,
        voxel_size: Option<&NpyArray>,
        class: GridClass,
    ) -> Result<Self> {
        let dims: [usize; 3] = values.shape().try_into().map_err(|_| {
            anyhow::anyhow!(
                "a dense grid must be a rank-3 array [X, Y, Z], got shape {:?}",
                values.shape()
            )
        })?;
        let values = as_f64(values)?.into_iter().map(|v| v as f32).collect();
        let origin = match origin {
            Some(a) => <[f64; 3]>::try_from(as_f64(a)?)
                .map_err(|_| anyhow::anyhow!("`{ORIGIN_KEY}` must hold 3 numbers"))?,
            None => [0.0; 3],
        };
        let voxel_size = match voxel_size {
            Some(a) => match as_f64(a)?.as_slice() {
                [s] if *s > 0.0 && s.is_finite() => *s,
                other => bail!("`{VOXEL_SIZE_KEY}` must be one positive number, got {other:?}"),
            },
            None => 1.0,
        };
        Ok(DenseGrid {
            dims,
            values,
            origin,
            voxel_size,
            class,
        })
    }

    /// The arrays `vnr convert` writes to npz: values `[X, Y, Z]` f32, origin `[3]`, voxel size `[1]`.
    pub fn to_arrays(&self) -> Result<Vec<(&'static str, NpyArray)>> {
        Ok(vec![
            (
                VALUES_KEY,
                NpyArray::new(self.dims.to_vec(), NpyData::F32(self.values.clone()))?,
            ),
            (
                ORIGIN_KEY,
                NpyArray::new(vec![3], NpyData::F64(self.origin.to_vec()))?,
            ),
            (
                VOXEL_SIZE_KEY,
                NpyArray::new(vec![1], NpyData::F64(vec![self.voxel_size]))?,
            ),
        ])
    }
}

/// Any numeric array's values as f64, in logical C order.
pub fn as_f64(array: &NpyArray) -> Result<Vec<f64>> {
    let tensor = array
        .to_tensor(&Device::Cpu)
        .context("converting the array")?;
    Ok(tensor
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// Minimum and maximum of finite values, if any.
pub fn value_range(values: impl IntoIterator<Item = f64>) -> Option<[f64; 2]> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some([v, v]),
            Some([lo, hi]) => Some([lo.min(v), hi.max(v)]),
        })
}

/// Squared Euclidean distance, in voxels, from every voxel of a `[X, Y, Z]` grid to the nearest
/// voxel where `is_target` holds (infinite when there is none): the separable exact transform of
/// Felzenszwalb and Huttenlocher, one linear pass per axis.
pub fn squared_distance_transform(dims: [usize; 3], is_target: impl Fn(usize) -> bool) -> Vec<f64> {
    let [nx, ny, nz] = dims;
    let mut dist: Vec<f64> = (0..nx * ny * nz)
        .map(|i| if is_target(i) { 0.0 } else { f64::INFINITY })
        .collect();
    let strides = [ny * nz, nz, 1];
    let mut line = Vec::new();
    for axis in 0..3 {
        let len = dims[axis];
        let stride = strides[axis];
        // Every line along `axis` starts at a voxel whose `axis` coordinate is 0.
        let starts: Vec<usize> = (0..nx * ny * nz)
            .filter(|&i| (i / stride) % len == 0)
            .collect();
        for start in starts {
            line.clear();
            line.extend((0..len).map(|t| dist[start + t * stride]));
            let transformed = lower_envelope(&line);
            for (t, d) in transformed.into_iter().enumerate() {
                dist[start + t * stride] = d;
            }
        }
    }
    dist
}

/// `d[q] = min_p (q − p)² + f[p]` for one line, in O(n) (lower envelope of parabolas).
fn lower_envelope(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&p| f[p].is_finite()).collect();
    if finite.is_empty() {
        return vec![f64::INFINITY; n];
    }
    let intersect = |p: usize, q: usize| {
        ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * (q as f64 - p as f64))
    };
    let mut vertices: Vec<usize> = Vec::with_capacity(finite.len());
    let mut bounds: Vec<f64> = Vec::with_capacity(finite.len() + 1);
    for &q in &finite {
        while let Some(&p) = vertices.last() {
            let s = intersect(p, q);
            if s <= *bounds.last().unwrap_or(&f64::NEG_INFINITY) {
                vertices.pop();
                bounds.pop();
            } else {
                break;
            }
        }
        let s = vertices
            .last()
            .map_or(f64::NEG_INFINITY, |&p| intersect(p, q));
        vertices.push(q);
        bounds.push(s);
    }
    let mut k = 0;
    (0..n)
        .map(|q| {
            while k + 1 < vertices.len() && bounds[k + 1] < q as f64 {
                k += 1;
            }
            let p = vertices[k];
            let dq = q as f64 - p as f64;
            dq * dq + f[p]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_transform_matches_brute_force() {
        let dims = [7, 5, 6];
        let n = dims.iter().product();
        let targets: Vec<bool> = (0..n).map(|i: usize| (i * 37 + 11) % 23 == 0).collect();
        let fast = squared_distance_transform(dims, |i| targets[i]);
        let coords = |i: usize| [i / 30, (i / 6) % 5, i % 6];
        for (i, &got) in fast.iter().enumerate() {
            let a = coords(i);
            let brute = (0..n)
                .filter(|&j| targets[j])
                .map(|j| {
                    let b = coords(j);
                    (0..3)
                        .map(|k| (a[k] as f64 - b[k] as f64).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            assert_eq!(got, brute, "voxel {a:?}");
        }
    }

    #[test]
    fn distance_transform_without_targets_is_infinite() {
        let d = squared_distance_transform([3, 2, 2], |_| false);
        assert!(d.iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn occupancy_round_trips_through_a_level_set() {
        let dims = [9, 8, 7];
        let values: Vec<f32> = (0..9 * 8 * 7)
            .map(|i| {
                let (x, y, z) = (
                    (i / 56) as f32 - 4.0,
                    ((i / 7) % 8) as f32 - 3.5,
                    (i % 7) as f32 - 3.0,
                );
                f32::from(u8::from(x * x + y * y + z * z < 9.0))
            })
            .collect();
        let mut grid = DenseGrid {
            dims,
            values: values.clone(),
            origin: [0.0; 3],
            voxel_size: 0.5,
            class: GridClass::FogVolume,
        };
        grid.convert_class(GridClass::LevelSet { background: 1.5 }, 0.0);
        assert!(grid.values.iter().all(|v| v.abs() <= 1.5));
        grid.convert_class(GridClass::FogVolume, 0.0);
        assert_eq!(grid.values, values);
    }
}

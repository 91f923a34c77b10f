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

//! Batched dense volumes with PyTorch3D's world ⇄ local coordinates (`Volumes`,
//! `VolumeLocator` of `pytorch3d/structures/volumes.py`).
//!
//! Local coordinates are those of `grid_sample`: `(x, y, z)` index the volume's `(W, H, D)` axes
//! (the reverse of the tensor's axis order) and run over `[-1, 1]`. The world transform is, per
//! batch item and axis (xyz order),
//! `x_world = x_local · (size − 1) · voxel_size / 2 − volume_translation`, so
//! `volume_translation` is minus the world position of the volume's centre. As in PyTorch3D the
//! transform does not depend on `align_corners`; `align_corners` only decides where voxel centres
//! lie in local coordinates (`±1` at the corner voxel centres when true, `±(1 − 1/size)` when
//! false) and how [`Field::query`] samples.

use crate::field::{Field, FieldSamples};
use candle_core::{DType, Device, Tensor, D};
use vnr_ops::grid_sample::{grid_sample3d, GridPaddingMode, GridSampleMode, GridSampleParams};

/// What went wrong when building or using [`Volumes`] (and splatting into them).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Densities are not `[B, C, D, H, W]` with `C ≥ 1` and non-empty spatial axes.
    #[error("volume densities must be [B, C, D, H, W] with C >= 1 and D, H, W >= 1, got {0:?}")]
    DensitiesShape(Vec<usize>),
    /// Features do not share the densities' batch and spatial sizes.
    #[error(
        "volume features {features:?} must be [B, F, D, H, W] matching densities {densities:?}"
    )]
    FeaturesShape {
        /// Shape of the features given.
        features: Vec<usize>,
        /// Shape of the densities.
        densities: Vec<usize>,
    },
    /// A voxel size or translation of the wrong shape or with unusable values.
    #[error("volume {name}: {reason}")]
    Property {
        /// `voxel_size` or `volume_translation`.
        name: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A volume axis with a single voxel spans no local interval, so world → local is undefined.
    #[error("volume axis {axis} has a single voxel: the world to local transform is undefined")]
    SingleVoxelAxis {
        /// `x`, `y` or `z`.
        axis: char,
    },
    /// Points whose leading dimension is not the volume batch size.
    #[error("points {points:?} must be [B, ..., 3] with B = {batch} (any [..., 3] when B = 1)")]
    PointsShape {
        /// Shape of the points given.
        points: Vec<usize>,
        /// The volumes' batch size.
        batch: usize,
    },
    /// Inputs to point splatting with inconsistent shapes.
    #[error("splatting: {0}")]
    SplatShape(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<VolumeError> for candle_core::Error {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

type Result<T> = std::result::Result<T, VolumeError>;

/// A voxel size or a volume translation, in any of the forms PyTorch3D accepts.
#[derive(Debug, Clone)]
pub enum VolumeProperty {
    /// One value for every axis and batch item (voxel size only).
    Scalar(f64),
    /// One `(x, y, z)` triple shared by the batch.
    Vector([f64; 3]),
    /// A tensor of shape `[3]`, `[1, 3]` or `[B, 3]`; for voxel sizes also `[1]` or `[B, 1]`.
    Tensor(Tensor),
}

impl From<f64> for VolumeProperty {
    fn from(v: f64) -> Self {
        Self::Scalar(v)
    }
}

impl From<[f64; 3]> for VolumeProperty {
    fn from(v: [f64; 3]) -> Self {
        Self::Vector(v)
    }
}

impl From<Tensor> for VolumeProperty {
    fn from(v: Tensor) -> Self {
        Self::Tensor(v)
    }
}

impl From<&Tensor> for VolumeProperty {
    fn from(v: &Tensor) -> Self {
        Self::Tensor(v.clone())
    }
}

/// Turns a property into a `[B, 3]` tensor of `dtype` on `device`.
fn property_tensor(
    name: &'static str,
    value: VolumeProperty,
    batch: usize,
    allow_scalar: bool,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let bad = |reason: String| VolumeError::Property { name, reason };
    let t = match value {
        VolumeProperty::Scalar(_) if !allow_scalar => {
            return Err(bad("needs 3 components (x, y, z), got a scalar".into()))
        }
        VolumeProperty::Scalar(v) => Tensor::new(&[[v, v, v]], device)?,
        VolumeProperty::Vector(v) => Tensor::new(&[v], device)?,
        VolumeProperty::Tensor(t) => {
            let t = t.to_device(device)?;
            match *t.dims() {
                [1] if allow_scalar => t.reshape((1, 1))?.repeat((1, 3))?,
                [3] => t.reshape((1, 3))?,
                [1, 3] => t,
                [b, 3] if b == batch => t,
                [b, 1] if allow_scalar && (b == batch || b == 1) => t.repeat((1, 3))?,
                ref dims => {
                    return Err(bad(format!(
                        "shape {dims:?} is not one of [3], [1, 3], [{batch}, 3]{}",
                        if allow_scalar {
                            format!(", [1], [1, 1], [{batch}, 1]")
                        } else {
                            String::new()
                        }
                    )))
                }
            }
        }
    };
    let t = t.to_dtype(dtype)?;
    let values = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(bad(format!("holds the non-finite value {v}")));
    }
    if allow_scalar && values.contains(&0.0) {
        return Err(bad("a voxel size of 0 collapses the volume".into()));
    }
    Ok(t.broadcast_as((batch, 3))?.contiguous()?)
}

/// Where a batch of equally sized voxel grids lies in the world (PyTorch3D's `VolumeLocator`).
#[derive(Debug, Clone)]
pub struct VolumeLocator {
    batch_size: usize,
    grid_sizes: [usize; 3],
    voxel_size: Tensor,
    translation: Tensor,
    align_corners: bool,
}

impl VolumeLocator {
    /// A locator for `batch_size` grids of `grid_sizes = [D, H, W]` voxels.
    ///
    /// `voxel_size`: a scalar, an `(x, y, z)` triple or a tensor `[1]`, `[3]`, `[1, 3]`,
    /// `[B, 1]`, `[B, 3]` (non-zero, finite); `volume_translation`: a triple or a tensor `[3]`,
    /// `[1, 3]`, `[B, 3]`. Both are stored as `[B, 3]` tensors of `dtype` on `device` (tensors
    /// passed in keep their autograd graph). An error when `batch_size · 3` is above
    /// [`crate::MAX_ELEMENTS`].
    pub fn new(
        batch_size: usize,
        grid_sizes: [usize; 3],
        voxel_size: impl Into<VolumeProperty>,
        volume_translation: impl Into<VolumeProperty>,
        align_corners: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        // Both properties are materialised as [B, 3].
        crate::capped_elements("VolumeLocator::new", "batch_size × 3", &[batch_size, 3])?;
        let voxel_size = property_tensor(
            "voxel_size",
            voxel_size.into(),
            batch_size,
            true,
            dtype,
            device,
        )?;
        let translation = property_tensor(
            "volume_translation",
            volume_translation.into(),
            batch_size,
            false,
            dtype,
            device,
        )?;
        Ok(Self {
            batch_size,
            grid_sizes,
            voxel_size,
            translation,
            align_corners,
        })
    }

    /// Number of grids `B`.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Voxels per axis, `[D, H, W]`.
    pub fn grid_sizes(&self) -> [usize; 3] {
        self.grid_sizes
    }

    /// Whether local `±1` are the centres of the corner voxels (see the module docs).
    pub fn align_corners(&self) -> bool {
        self.align_corners
    }

    /// Voxel sizes `[B, 3]`, `(x, y, z)` order.
    pub fn voxel_size(&self) -> &Tensor {
        &self.voxel_size
    }

    /// Volume translations `[B, 3]`: minus the world position of each volume's centre.
    pub fn volume_translation(&self) -> &Tensor {
        &self.translation
    }

    /// `[W − 1, H − 1, D − 1] / 2` as a `[1, 3]` tensor.
    fn half_extent_xyz(&self) -> Result<Tensor> {
        let [d, h, w] = self.grid_sizes;
        let half = |n: usize| (n as f64 - 1.0) * 0.5;
        Ok(
            Tensor::new(&[[half(w), half(h), half(d)]], self.voxel_size.device())?
                .to_dtype(self.voxel_size.dtype())?,
        )
    }

    /// The per-axis scale of the local → world transform, `(size − 1) · voxel_size / 2`,
    /// `[B, 3]` in `(x, y, z)` order.
    pub fn local_to_world_scale(&self) -> Result<Tensor> {
        Ok(self.voxel_size.broadcast_mul(&self.half_extent_xyz()?)?)
    }

    /// Splits `points` `[B, ..., 3]` (or any `[..., 3]` when `B = 1`) into `(batch, points per
    /// batch item)`.
    fn batch_split(&self, dims: &[usize]) -> Result<(usize, usize)> {
        let shape_error = || VolumeError::PointsShape {
            points: dims.to_vec(),
            batch: self.batch_size,
        };
        if dims.last() != Some(&3) {
            return Err(shape_error());
        }
        let b = if dims.len() >= 2 && dims[0] == self.batch_size {
            self.batch_size
        } else if self.batch_size == 1 {
            1
        } else {
            return Err(shape_error());
        };
        let total: usize = dims.iter().product();
        Ok((b, total / 3 / b.max(1)))
    }

    /// Views `points` `[B, ..., 3]` (or any `[..., 3]` when `B = 1`) as `[B, M, 3]`.
    fn batched(&self, points: &Tensor) -> Result<Tensor> {
        let (b, m) = self.batch_split(points.dims())?;
        Ok(points.reshape((b, m, 3))?)
    }

    /// Maps world points `[B, ..., 3]` (any `[..., 3]` when `B = 1`) to local coordinates,
    /// `(x_world + translation) / scale` per batch item. Differentiable in the points, the voxel
    /// size and the translation. An error if an axis has a single voxel (its scale is 0).
    pub fn world_to_local_coords(&self, points: &Tensor) -> Result<Tensor> {
        for (axis, &n) in ['z', 'y', 'x'].iter().zip(&self.grid_sizes) {
            if n < 2 {
                return Err(VolumeError::SingleVoxelAxis { axis: *axis });
            }
        }
        let p = self.batched(points)?.to_dtype(self.voxel_size.dtype())?;
        let scale = self.local_to_world_scale()?.unsqueeze(1)?;
        let t = self.translation.unsqueeze(1)?;
        let local = p.broadcast_add(&t)?.broadcast_div(&scale)?;
        Ok(local.reshape(points.dims())?)
    }

    /// Maps local points `[B, ..., 3]` (any `[..., 3]` when `B = 1`) to world coordinates,
    /// `x_local · scale − translation`. Differentiable like [`Self::world_to_local_coords`].
    pub fn local_to_world_coords(&self, points: &Tensor) -> Result<Tensor> {
        let p = self.batched(points)?.to_dtype(self.voxel_size.dtype())?;
        let scale = self.local_to_world_scale()?.unsqueeze(1)?;
        let t = self.translation.unsqueeze(1)?;
        let world = p.broadcast_mul(&scale)?.broadcast_sub(&t)?;
        Ok(world.reshape(points.dims())?)
    }

    /// The local → world transform as PyTorch3D's `Transform3d.get_matrix()`: `[B, 4, 4]`
    /// acting on row vectors (`[x, y, z, 1] · M`), the scale on the diagonal and the translation
    /// `−volume_translation` in the last row.
    pub fn local_to_world_matrix(&self) -> Result<Tensor> {
        affine_matrix(&self.local_to_world_scale()?, &self.translation.neg()?)
    }

    /// The world → local transform, the inverse of [`Self::local_to_world_matrix`]:
    /// `1 / scale` on the diagonal, `translation / scale` in the last row.
    pub fn world_to_local_matrix(&self) -> Result<Tensor> {
        let inv_scale = self.local_to_world_scale()?.recip()?;
        affine_matrix(&inv_scale, &(&self.translation * &inv_scale)?)
    }

    /// Local coordinate of voxel centre `i` of `n` along one axis (PyTorch3D's `linspace` from
    /// `−1 + a` to `1 − a`, `a = 0` with aligned corners and `1/n` without).
    fn voxel_centre(&self, i: usize, n: usize) -> f64 {
        let a = if self.align_corners {
            0.0
        } else {
            1.0 / n as f64
        };
        if n < 2 {
            return -1.0 + a;
        }
        (-1.0 + a) + (2.0 - 2.0 * a) * i as f64 / (n - 1) as f64
    }

    /// The coordinates of every voxel centre, `[B, D, H, W, 3]` in `(x, y, z)` order: local
    /// coordinates, or world coordinates when `world_coordinates` (PyTorch3D's
    /// `get_coord_grid`). An error when `B·D·H·W·3` is above [`crate::MAX_ELEMENTS`].
    pub fn get_coord_grid(&self, world_coordinates: bool) -> Result<Tensor> {
        let [d, h, w] = self.grid_sizes;
        crate::capped_elements(
            "VolumeLocator::get_coord_grid",
            "batch_size × grid_sizes [D, H, W] × 3",
            &[self.batch_size, d, h, w, 3],
        )?;
        let mut coords = Vec::with_capacity(d * h * w * 3);
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    coords.extend([
                        self.voxel_centre(x, w),
                        self.voxel_centre(y, h),
                        self.voxel_centre(z, d),
                    ]);
                }
            }
        }
        let local = Tensor::from_vec(coords, (1, d, h, w, 3), self.voxel_size.device())?
            .to_dtype(self.voxel_size.dtype())?
            .repeat((self.batch_size, 1, 1, 1, 1))?;
        if world_coordinates {
            self.local_to_world_coords(&local)
        } else {
            Ok(local)
        }
    }
}

/// `[B, 4, 4]` row-vector affine matrices with diagonal `scale` `[B, 3]` and last row
/// `[shift, 1]`, built from tensor ops so gradients reach `scale` and `shift`.
fn affine_matrix(scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let b = scale.dim(0)?;
    let (dtype, device) = (scale.dtype(), scale.device());
    let eye = Tensor::eye(3, dtype, device)?.unsqueeze(0)?;
    let diag = scale.unsqueeze(2)?.broadcast_mul(&eye)?;
    let upper = Tensor::cat(&[&diag, &Tensor::zeros((b, 3, 1), dtype, device)?], 2)?;
    let last = Tensor::cat(
        &[
            &shift.unsqueeze(1)?,
            &Tensor::ones((b, 1, 1), dtype, device)?,
        ],
        2,
    )?;
    Ok(Tensor::cat(&[&upper, &last], 1)?)
}

/// A batch of `B` dense volumes of densities and optional features sharing one grid size
/// (PyTorch3D's `Volumes` built from 5-D tensors).
///
/// Densities and features are stored concatenated along the channel axis, so one
/// `grid_sample3d` call per query samples both; [`Volumes::densities`] and
/// [`Volumes::features`] are views into that tensor.
#[derive(Debug, Clone)]
pub struct Volumes {
    data: Tensor,
    density_dim: usize,
    feature_dim: usize,
    locator: VolumeLocator,
    sample_mode: GridSampleMode,
}

impl Volumes {
    /// Volumes from `densities` `[B, Cd, D, H, W]` and optional `features` `[B, F, D, H, W]`,
    /// placed in the world by `voxel_size` and `volume_translation` (see [`VolumeLocator::new`];
    /// PyTorch3D's defaults are `1.0`, `[0, 0, 0]` and `align_corners = true`). Trilinear
    /// sampling; see [`Volumes::with_sample_mode`].
    pub fn new(
        densities: &Tensor,
        features: Option<&Tensor>,
        voxel_size: impl Into<VolumeProperty>,
        volume_translation: impl Into<VolumeProperty>,
        align_corners: bool,
    ) -> Result<Self> {
        let &[b, _, d, h, w] = densities.dims() else {
            return Err(VolumeError::DensitiesShape(densities.dims().to_vec()));
        };
        let locator = VolumeLocator::new(
            b,
            [d, h, w],
            voxel_size,
            volume_translation,
            align_corners,
            densities.dtype(),
            densities.device(),
        )?;
        Self::with_locator(densities, features, locator)
    }

    /// Volumes on an existing locator, whose batch and grid sizes the tensors must match.
    pub fn with_locator(
        densities: &Tensor,
        features: Option<&Tensor>,
        locator: VolumeLocator,
    ) -> Result<Self> {
        let dims = densities.dims();
        let [d, h, w] = locator.grid_sizes;
        let density_dim = match *dims {
            [b, c, dd, hh, ww]
                if c >= 1
                    && [dd, hh, ww] == [d, h, w]
                    && b == locator.batch_size
                    && d * h * w > 0 =>
            {
                c
            }
            _ => return Err(VolumeError::DensitiesShape(dims.to_vec())),
        };
        let (data, feature_dim) = match features {
            None => (densities.clone(), 0),
            Some(f) => {
                let fd = f.dims();
                let same_grid = fd.len() == 5 && fd[0] == dims[0] && fd[2..] == dims[2..];
                if !same_grid {
                    return Err(VolumeError::FeaturesShape {
                        features: fd.to_vec(),
                        densities: dims.to_vec(),
                    });
                }
                let f = f.to_dtype(densities.dtype())?;
                (Tensor::cat(&[densities, &f], 1)?, fd[1])
            }
        };
        Ok(Self {
            data,
            density_dim,
            feature_dim,
            locator,
            sample_mode: GridSampleMode::Bilinear,
        })
    }

    /// The same volumes sampled with `mode` by [`Field::query`] (PyTorch3D's `VolumeSampler`
    /// `sample_mode`: trilinear, the default, or nearest).
    pub fn with_sample_mode(mut self, mode: GridSampleMode) -> Self {
        self.sample_mode = mode;
        self
    }

    /// The same placement and grid with new densities and features (PyTorch3D's
    /// `update_padded`).
    pub fn update_padded(&self, densities: &Tensor, features: Option<&Tensor>) -> Result<Self> {
        Ok(
            Self::with_locator(densities, features, self.locator.clone())?
                .with_sample_mode(self.sample_mode),
        )
    }

    /// Densities `[B, Cd, D, H, W]`.
    pub fn densities(&self) -> Result<Tensor> {
        Ok(self.data.narrow(1, 0, self.density_dim)?)
    }

    /// Features `[B, F, D, H, W]`, if the volumes have any.
    pub fn features(&self) -> Result<Option<Tensor>> {
        if self.feature_dim == 0 {
            return Ok(None);
        }
        Ok(Some(self.data.narrow(
            1,
            self.density_dim,
            self.feature_dim,
        )?))
    }

    /// Number of density channels `Cd`.
    pub fn density_dim(&self) -> usize {
        self.density_dim
    }

    /// Number of volumes `B`.
    pub fn batch_size(&self) -> usize {
        self.locator.batch_size
    }

    /// Voxels per axis, `[D, H, W]`.
    pub fn grid_sizes(&self) -> [usize; 3] {
        self.locator.grid_sizes
    }

    /// Whether local `±1` are the centres of the corner voxels.
    pub fn align_corners(&self) -> bool {
        self.locator.align_corners
    }

    /// The world placement of the volumes.
    pub fn locator(&self) -> &VolumeLocator {
        &self.locator
    }

    /// See [`VolumeLocator::world_to_local_coords`].
    pub fn world_to_local_coords(&self, points: &Tensor) -> Result<Tensor> {
        self.locator.world_to_local_coords(points)
    }

    /// See [`VolumeLocator::local_to_world_coords`].
    pub fn local_to_world_coords(&self, points: &Tensor) -> Result<Tensor> {
        self.locator.local_to_world_coords(points)
    }

    /// See [`VolumeLocator::get_coord_grid`].
    pub fn get_coord_grid(&self, world_coordinates: bool) -> Result<Tensor> {
        self.locator.get_coord_grid(world_coordinates)
    }

    /// Samples densities and features at world `points` `[B, ..., P, 3]` (volume `b` for points
    /// `b`; any leading shape when `B = 1`): `[..., P, Cd]` and `[..., P, F]`.
    fn sample(&self, points: &Tensor) -> Result<FieldSamples> {
        let local = self.world_to_local_coords(points)?;
        let dims = points.dims();
        let (b, m) = self.locator.batch_split(dims)?;
        let grid = local
            .to_dtype(self.data.dtype())?
            .reshape((b, m, 1, 1, 3))?;
        let params = GridSampleParams {
            mode: self.sample_mode,
            padding_mode: GridPaddingMode::Zeros,
            align_corners: self.align_corners(),
        };
        let channels = self.density_dim + self.feature_dim;
        let sampled = grid_sample3d(&self.data, &grid, &params)?
            .reshape((b, channels, m))?
            .transpose(1, 2)?;
        let mut out_dims = dims.to_vec();
        out_dims.pop();
        out_dims.push(channels);
        let sampled = sampled.reshape(out_dims)?;
        Ok(FieldSamples {
            densities: sampled.narrow(D::Minus1, 0, self.density_dim)?,
            features: sampled.narrow(D::Minus1, self.density_dim, self.feature_dim)?,
        })
    }
}

impl Field for Volumes {
    /// Samples the volumes (PyTorch3D's `VolumeSampler`): world → local, then
    /// `grid_sample3d` with the volumes' sample mode, zeros padding and `align_corners`.
    /// `points` `[B, ..., P, 3]` read volume `b` (any `[..., P, 3]` when `B = 1`); directions are
    /// ignored. Differentiable in the densities, features, points, voxel size and translation.
    fn query(
        &self,
        points: &Tensor,
        _directions: Option<&Tensor>,
    ) -> candle_core::Result<FieldSamples> {
        Ok(self.sample(points)?)
    }

    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}

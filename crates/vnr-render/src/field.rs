//! The [`Field`] trait: anything that answers "what is the density and colour here?".
//!
//! Dense [`crate::volumes::Volumes`], Plenoxel grids, signed distance functions turned into
//! densities and neural fields (NeRF) all implement it, so one renderer
//! ([`crate::renderer`]) and one set of ray marchers ([`crate::raymarchers`]) serve all of them.
//! What the density *means* (an opacity in `[0, 1]` per sample as in PyTorch3D's `Volumes`, or a
//! volume density σ ≥ 0 integrated with step lengths as in NeRF and Plenoxels) is the choice of
//! the ray marcher the caller pairs with the field.

use candle_core::{Result, Tensor};

/// Densities and features at a set of sample points.
#[derive(Debug, Clone)]
pub struct FieldSamples {
    /// `[..., P, 1]`.
    pub densities: Tensor,
    /// `[..., P, F]`, `F = Field::feature_dim()`.
    pub features: Tensor,
}

/// A function of space (and optionally of viewing direction) returning densities and features.
pub trait Field {
    /// Evaluates the field.
    ///
    /// - `points`: world coordinates `[..., P, 3]` (`P` samples along each of the `...` rays).
    /// - `directions`: the viewing direction of each ray, `[..., 3]`, for view-dependent fields
    ///   (spherical harmonics, NeRF's colour head); fields that ignore direction accept `None`.
    ///   Directions need not be unit length: fields that need unit vectors normalise them.
    ///
    /// Returns densities `[..., P, 1]` and features `[..., P, F]`, differentiable with respect
    /// to the field's parameters (and to `points` where the field allows it).
    fn query(&self, points: &Tensor, directions: Option<&Tensor>) -> Result<FieldSamples>;

    /// Number of feature channels `F` (3 for RGB).
    fn feature_dim(&self) -> usize;
}

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

/// How [`SdfField`] turns a signed distance `d` (negative inside) into a density.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SdfToDensity {
    /// VolSDF (Yariv et al. 2021): a volume density `σ = α · Ψ_β(−d)` with `Ψ_β` the CDF of a
    /// zero-mean Laplace distribution of scale `β`; pair it with a ray marcher that integrates
    /// σ over step lengths (NeRF form). VolSDF uses `α = 1/β`.
    VolSdf {
        /// Density inside the surface, far from it.
        alpha: f64,
        /// Width of the transition; smaller is sharper.
        beta: f64,
    },
    /// A per-sample opacity `sigmoid(−d / β)` in `[0, 1]`, for the emission-absorption marcher
    /// (PyTorch3D's `Volumes` convention).
    SigmoidOpacity {
        /// Width of the transition; smaller is sharper.
        beta: f64,
    },
}

impl SdfToDensity {
    /// Applies the conversion elementwise to signed distances of any shape.
    pub fn apply(&self, sdf: &Tensor) -> Result<Tensor> {
        match *self {
            SdfToDensity::VolSdf { alpha, beta } => {
                if beta <= 0.0 {
                    candle_core::bail!("VolSDF density: beta must be positive, got {beta}");
                }
                // Ψ_β(s) = ½ + ½ · sign(s) · (1 − exp(−|s|/β)) at s = −d.
                let s = sdf.neg()?;
                let tail = ((s.abs()? / -beta)?.exp()?.neg()? + 1.0)?;
                let cdf = ((s.sign()? * tail)? * 0.5)? + 0.5;
                cdf? * alpha
            }
            SdfToDensity::SigmoidOpacity { beta } => {
                if beta <= 0.0 {
                    candle_core::bail!("sigmoid opacity: beta must be positive, got {beta}");
                }
                candle_nn::ops::sigmoid(&(sdf / -beta)?)
            }
        }
    }
}

/// A field made of a signed distance function and a colour function, e.g. an analytic shape
/// or a DeepSDF decoder with a fixed latent code.
pub struct SdfField<S, C> {
    sdf: S,
    colour: C,
    feature_dim: usize,
    density: SdfToDensity,
}

impl<S, C> SdfField<S, C>
where
    S: Fn(&Tensor) -> Result<Tensor>,
    C: Fn(&Tensor) -> Result<Tensor>,
{
    /// `sdf` maps points `[..., P, 3]` to distances `[..., P, 1]` (negative inside); `colour`
    /// maps the same points to features `[..., P, feature_dim]`.
    pub fn new(sdf: S, colour: C, feature_dim: usize, density: SdfToDensity) -> Self {
        Self {
            sdf,
            colour,
            feature_dim,
            density,
        }
    }
}

impl<S, C> Field for SdfField<S, C>
where
    S: Fn(&Tensor) -> Result<Tensor>,
    C: Fn(&Tensor) -> Result<Tensor>,
{
    fn query(&self, points: &Tensor, _directions: Option<&Tensor>) -> Result<FieldSamples> {
        let distances = (self.sdf)(points)?;
        let densities = self.density.apply(&distances)?;
        let features = (self.colour)(points)?;
        Ok(FieldSamples {
            densities,
            features,
        })
    }

    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn sphere(points: &Tensor) -> Result<Tensor> {
        points.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? - 1.0
    }

    #[test]
    fn volsdf_density_is_a_laplace_cdf() -> Result<()> {
        let d = Tensor::new(&[-10f32, -0.1, 0.0, 0.1, 10.0], &Device::Cpu)?;
        let sigma = SdfToDensity::VolSdf {
            alpha: 10.0,
            beta: 0.1,
        }
        .apply(&d)?
        .to_vec1::<f32>()?;
        let want = [
            10.0,
            10.0 * (1.0 - 0.5 * (-1f32).exp()),
            5.0,
            5.0 * (-1f32).exp(),
            0.0,
        ];
        for (got, want) in sigma.iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "{sigma:?}");
        }
        Ok(())
    }

    #[test]
    fn sdf_field_gives_opacity_inside_and_colour_everywhere() -> Result<()> {
        let field = SdfField::new(
            sphere,
            |p: &Tensor| p.abs(),
            3,
            SdfToDensity::SigmoidOpacity { beta: 0.01 },
        );
        let points = Tensor::new(&[[[0f32, 0., 0.], [0., 2., 0.]]], &Device::Cpu)?;
        let out = field.query(&points, None)?;
        let opacity = out.densities.flatten_all()?.to_vec1::<f32>()?;
        assert!(opacity[0] > 0.999 && opacity[1] < 1e-3, "{opacity:?}");
        assert_eq!(out.features.dims(), &[1, 2, 3]);
        assert_eq!(field.feature_dim(), 3);
        Ok(())
    }
}

//! Ray bundles: the rays a sampler emits and a renderer marches.
//!
//! The layout is PyTorch3D's `RayBundle`, so tensors cross over unchanged: `origins [..., 3]`,
//! `directions [..., 3]` (not necessarily unit length: sample points are
//! `origin + length · direction`), `lengths [..., P]` and `xys [..., 2]`, where `...` is any
//! batch shape shared by the four tensors (e.g. `[B, H, W]` for a full image, `[B, R]` for `R`
//! random rays).

use candle_core::{Result, Tensor, D};

/// A batch of rays with `P` sample depths each.
#[derive(Debug, Clone)]
pub struct RayBundle {
    /// Ray origins in world coordinates, `[..., 3]`.
    pub origins: Tensor,
    /// Ray directions in world coordinates, `[..., 3]`.
    pub directions: Tensor,
    /// Depths of the samples along each ray, in units of `directions`, `[..., P]`.
    pub lengths: Tensor,
    /// The NDC coordinates of the pixel each ray goes through, `[..., 2]`.
    pub xys: Tensor,
}

impl RayBundle {
    /// Checks that the four tensors share their batch shape and have the right last axes.
    pub fn new(origins: Tensor, directions: Tensor, lengths: Tensor, xys: Tensor) -> Result<Self> {
        let batch = origins.dims().split_last().map(|(_, b)| b.to_vec());
        let check = |name: &str, t: &Tensor, last: Option<usize>| -> Result<()> {
            let dims = t.dims();
            let ok = match (dims.split_last(), &batch) {
                (Some((&l, b)), Some(batch)) => {
                    b == batch.as_slice() && last.is_none_or(|want| want == l)
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                candle_core::bail!(
                    "ray bundle: {name} has shape {dims:?}, expected [{batch:?}, {}]",
                    last.map_or("P".to_string(), |l| l.to_string())
                )
            }
        };
        check("origins", &origins, Some(3))?;
        check("directions", &directions, Some(3))?;
        check("lengths", &lengths, None)?;
        check("xys", &xys, Some(2))?;
        Ok(Self {
            origins,
            directions,
            lengths,
            xys,
        })
    }

    /// The batch shape `...` shared by all rays.
    pub fn batch_dims(&self) -> &[usize] {
        let dims = self.origins.dims();
        &dims[..dims.len().saturating_sub(1)]
    }

    /// Number of rays: the product of the batch shape.
    pub fn num_rays(&self) -> usize {
        self.batch_dims().iter().product()
    }

    /// Samples per ray, `P`.
    pub fn samples_per_ray(&self) -> usize {
        self.lengths.dims().last().copied().unwrap_or(0)
    }

    /// The sample points `origins + lengths · directions`, `[..., P, 3]`
    /// (PyTorch3D's `ray_bundle_to_ray_points`).
    pub fn points(&self) -> Result<Tensor> {
        let origins = self.origins.unsqueeze(D::Minus2)?;
        let directions = self.directions.unsqueeze(D::Minus2)?;
        let lengths = self.lengths.unsqueeze(D::Minus1)?;
        origins.broadcast_add(&lengths.broadcast_mul(&directions)?)
    }

    /// The same rays with the batch shape flattened to one axis: `[R, 3]`, `[R, P]`, `[R, 2]`.
    pub fn flatten(&self) -> Result<Self> {
        let r = self.num_rays();
        let p = self.samples_per_ray();
        Ok(Self {
            origins: self.origins.reshape((r, 3))?,
            directions: self.directions.reshape((r, 3))?,
            lengths: self.lengths.reshape((r, p))?,
            xys: self.xys.reshape((r, 2))?,
        })
    }

    /// Rays `start..start + len` of a flattened bundle (see [`RayBundle::flatten`]).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            origins: self.origins.narrow(0, start, len)?,
            directions: self.directions.narrow(0, start, len)?,
            lengths: self.lengths.narrow(0, start, len)?,
            xys: self.xys.narrow(0, start, len)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn points_are_origin_plus_length_times_direction() -> Result<()> {
        let dev = Device::Cpu;
        let bundle = RayBundle::new(
            Tensor::new(&[[1f32, 2., 3.]], &dev)?,
            Tensor::new(&[[0f32, 0., 2.]], &dev)?,
            Tensor::new(&[[0.5f32, 1.0]], &dev)?,
            Tensor::new(&[[0f32, 0.]], &dev)?,
        )?;
        let points = bundle.points()?.to_vec3::<f32>()?;
        assert_eq!(points, vec![vec![vec![1., 2., 4.], vec![1., 2., 5.]]]);
        assert_eq!((bundle.num_rays(), bundle.samples_per_ray()), (1, 2));
        Ok(())
    }

    #[test]
    fn mismatched_batch_shapes_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let err = RayBundle::new(
            Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?,
            Tensor::zeros((3, 3), candle_core::DType::F32, &dev)?,
            Tensor::zeros((2, 4), candle_core::DType::F32, &dev)?,
            Tensor::zeros((2, 2), candle_core::DType::F32, &dev)?,
        );
        assert!(err.is_err());
        Ok(())
    }
}

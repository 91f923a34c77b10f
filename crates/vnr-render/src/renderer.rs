//! The field renderer: any [`Field`] marched by any [`RayMarcher`] along a [`RayBundle`], in
//! chunks of rays (the core of PyTorch3D's `ImplicitRenderer` and `VolumeRenderer`,
//! `pytorch3d/renderer/implicit/renderer.py`).
//!
//! The bundle's first batch axis is kept as the field's batch axis, so a batch of
//! [`crate::volumes::Volumes`] is sampled item by item: a bundle `[B, ...]` is viewed as
//! `[B, N]` rays and each chunk asks the field for points `[B, n, P, 3]` with directions
//! `[B, n, 3]` (a bundle with a single batch axis `[R]` is viewed as `[1, R]`).

use crate::cameras::Camera;
use crate::field::Field;
use crate::raymarchers::{RayMarcher, RenderedRays};
use crate::rays::RayBundle;
use crate::samplers::RaySampler;
use candle_core::{bail, Result, Tensor};
use rand::RngCore;

/// The rays of `bundle` as `[B, N, ...]` tensors: origins, directions and lengths.
struct BatchedRays {
    origins: Tensor,
    directions: Tensor,
    lengths: Tensor,
}

impl BatchedRays {
    fn new(bundle: &RayBundle) -> Result<Self> {
        let batch = bundle.batch_dims();
        let b = if batch.len() >= 2 { batch[0] } else { 1 };
        let n = bundle.num_rays() / b.max(1);
        let p = bundle.samples_per_ray();
        Ok(Self {
            origins: bundle.origins.reshape((b, n, 3))?,
            directions: bundle.directions.reshape((b, n, 3))?,
            lengths: bundle.lengths.reshape((b, n, p))?,
        })
    }

    /// Rays `start..start + len` of every batch item, marched through `field`.
    fn render_chunk(
        &self,
        field: &dyn Field,
        marcher: &dyn RayMarcher,
        start: usize,
        len: usize,
    ) -> Result<RenderedRays> {
        let origins = self.origins.narrow(1, start, len)?;
        let directions = self.directions.narrow(1, start, len)?;
        let lengths = self.lengths.narrow(1, start, len)?;
        // PyTorch3D's ray_bundle_to_ray_points: origin + length · direction, [B, n, P, 3].
        let points = origins.unsqueeze(2)?.broadcast_add(
            &lengths
                .unsqueeze(3)?
                .broadcast_mul(&directions.unsqueeze(2)?)?,
        )?;
        let samples = field.query(&points, Some(&directions))?;
        marcher.march(&samples.densities, &samples.features, &lengths)
    }
}

/// Renders every ray of `rays` (batch shape `...`, `P` samples each): evaluates `field` at
/// `rays.points()` with the ray directions and marches the samples with `marcher`, `chunk_rays`
/// rays at a time (at least one ray per batch item per chunk), so memory for inference stays
/// bounded; gradients flow through every chunk.
///
/// Returns features `[..., F]`, opacity `[..., 1]`, depth `[..., 1]` and weights `[..., P]`.
pub fn render_rays(
    field: &dyn Field,
    marcher: &dyn RayMarcher,
    rays: &RayBundle,
    chunk_rays: usize,
) -> Result<RenderedRays> {
    if chunk_rays == 0 {
        bail!("render_rays: chunk_rays must be at least 1");
    }
    if rays.batch_dims().is_empty() || rays.num_rays() == 0 || rays.samples_per_ray() == 0 {
        bail!(
            "render_rays: need at least one ray with at least one sample, got lengths {:?}",
            rays.lengths.dims()
        );
    }
    let batched = BatchedRays::new(rays)?;
    let (b, n, _) = batched.lengths.dims3()?;
    let per_chunk = (chunk_rays / b).max(1);
    let mut chunks = Vec::with_capacity(n.div_ceil(per_chunk));
    for start in (0..n).step_by(per_chunk) {
        let len = per_chunk.min(n - start);
        chunks.push(batched.render_chunk(field, marcher, start, len)?);
    }
    let gather = |pick: fn(&RenderedRays) -> &Tensor| -> Result<Tensor> {
        let parts: Vec<&Tensor> = chunks.iter().map(pick).collect();
        let joined = Tensor::cat(&parts, 1)?;
        let mut dims = rays.batch_dims().to_vec();
        dims.push(joined.dim(2)?);
        joined.reshape(dims)
    };
    Ok(RenderedRays {
        features: gather(|r| &r.features)?,
        opacity: gather(|r| &r.opacity)?,
        depth: gather(|r| &r.depth)?,
        weights: gather(|r| &r.weights)?,
    })
}

/// Images rendered by [`render_images`].
#[derive(Debug, Clone)]
pub struct RenderedImages {
    /// Rendered features, `[B, H, W, F]`.
    pub images: Tensor,
    /// Opacity (alpha), `[B, H, W]`.
    pub opacity: Tensor,
    /// Expected depth, `[B, H, W]`.
    pub depth: Tensor,
}

/// Renders a bundle of image rays `[B, H, W]` into images (see [`render_rays`]); the
/// per-sample weights are dropped.
pub fn render_images(
    field: &dyn Field,
    marcher: &dyn RayMarcher,
    rays: &RayBundle,
    chunk_rays: usize,
) -> Result<RenderedImages> {
    if rays.batch_dims().len() != 3 {
        bail!(
            "render_images: rays must have batch shape [B, H, W], got {:?}",
            rays.batch_dims()
        );
    }
    let rendered = render_rays(field, marcher, rays, chunk_rays)?;
    Ok(RenderedImages {
        images: rendered.features,
        opacity: rendered.opacity.squeeze(3)?,
        depth: rendered.depth.squeeze(3)?,
    })
}

/// PyTorch3D's `ImplicitRenderer` (and, with [`crate::volumes::Volumes`] as the field, its
/// `VolumeRenderer`): a ray sampler and a ray marcher; [`ImplicitRenderer::render`] samples
/// rays from cameras and marches any field along them, chunk by chunk.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use rand::SeedableRng;
/// use vnr_render::cameras::{look_at_view_transform, FoVPerspectiveCameras, FoVPerspectiveConfig};
/// use vnr_render::raymarchers::EmissionAbsorptionRaymarcher;
/// use vnr_render::renderer::ImplicitRenderer;
/// use vnr_render::samplers::MultinomialRaysampler;
/// use vnr_render::volumes::Volumes;
///
/// let dev = Device::Cpu;
/// // A 16³ half-opaque red cube of side 2 around the origin.
/// let densities = Tensor::full(0.5f32, (1, 1, 16, 16, 16), &dev)?;
/// let features = Tensor::ones((1, 3, 16, 16, 16), candle_core::DType::F32, &dev)?
///     .broadcast_mul(&Tensor::new(&[1f32, 0., 0.], &dev)?.reshape((1, 3, 1, 1, 1))?)?;
/// let volumes = Volumes::new(&densities, Some(&features), 2.0 / 16.0, [0.0; 3], true)?;
/// let scalar = |v: f32| Tensor::new(&[v], &dev);
/// let (r, t) = look_at_view_transform(
///     &scalar(3.0)?, &scalar(20.0)?, &scalar(30.0)?, true,
///     &Tensor::zeros((1, 3), candle_core::DType::F32, &dev)?,
///     &Tensor::new(&[[0f32, 1.0, 0.0]], &dev)?,
/// )?;
/// let cameras = FoVPerspectiveCameras::new(&r, &t, FoVPerspectiveConfig::default())?;
/// let renderer = ImplicitRenderer::new(
///     Box::new(MultinomialRaysampler::ndc(8, 8, 32, 1.5, 4.5)),
///     Box::new(EmissionAbsorptionRaymarcher::default()),
/// );
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let (out, _rays) = renderer.render(&volumes, &cameras, &mut rng)?;
/// assert_eq!(out.features.dims(), &[1, 8, 8, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ImplicitRenderer {
    /// Emits rays for the cameras.
    pub sampler: Box<dyn RaySampler>,
    /// Turns the samples of each ray into its colour, opacity, depth and weights.
    pub marcher: Box<dyn RayMarcher>,
    /// Rays per field evaluation (see [`render_rays`]).
    pub chunk_rays: usize,
}

impl ImplicitRenderer {
    /// Rays per chunk unless set otherwise: bounded memory (`chunk · P` samples) without
    /// making chunks so small that per-chunk overhead shows.
    pub const DEFAULT_CHUNK_RAYS: usize = 4096;

    /// A renderer from a sampler and a marcher, with [`Self::DEFAULT_CHUNK_RAYS`].
    pub fn new(sampler: Box<dyn RaySampler>, marcher: Box<dyn RayMarcher>) -> Self {
        Self {
            sampler,
            marcher,
            chunk_rays: Self::DEFAULT_CHUNK_RAYS,
        }
    }

    /// Samples rays for `cameras` and renders `field` along them. Returns the rendered rays
    /// (batch shape of the sampler's bundle: `[B, H, W]` for full images, `[B, R]` for drawn
    /// rays) and the bundle itself (its `xys` say which pixels were drawn).
    pub fn render(
        &self,
        field: &dyn Field,
        cameras: &dyn Camera,
        rng: &mut dyn RngCore,
    ) -> Result<(RenderedRays, RayBundle)> {
        let rays = self.sampler.sample_rays(cameras, rng)?;
        let rendered = render_rays(field, self.marcher.as_ref(), &rays, self.chunk_rays)?;
        Ok((rendered, rays))
    }
}

//! The chunked field renderer: chunking changes nothing, batches read their own volume, and
//! gradients reach the field through every chunk.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::deterministic_values;
use vnr_render::field::Field;
use vnr_render::raymarchers::{
    EmissionAbsorptionRaymarcher, NerfRaymarcher, RayMarcher, RenderedRays,
};
use vnr_render::rays::RayBundle;
use vnr_render::renderer::{render_images, render_rays};
use vnr_render::volumes::Volumes;

/// Rays along +z through a `[B, H, W]` pixel grid over `[-0.8, 0.8]²`, `p` samples from z = -1.2
/// to 1.2.
fn image_rays(b: usize, h: usize, w: usize, p: usize) -> Result<RayBundle> {
    let dev = Device::Cpu;
    let mut origins = Vec::new();
    let mut xys = Vec::new();
    for _ in 0..b {
        for y in 0..h {
            for x in 0..w {
                let px = -0.8 + 1.6 * x as f32 / (w - 1) as f32;
                let py = -0.8 + 1.6 * y as f32 / (h - 1) as f32;
                origins.extend([px, py, -1.2]);
                xys.extend([px, py]);
            }
        }
    }
    let n = b * h * w;
    let lengths: Vec<f32> = (0..n)
        .flat_map(|_| (0..p).map(|k| 2.4 * k as f32 / (p - 1) as f32))
        .collect();
    RayBundle::new(
        Tensor::from_vec(origins, (b, h, w, 3), &dev)?,
        Tensor::new(&[0f32, 0., 1.], &dev)?
            .broadcast_as((b, h, w, 3))?
            .contiguous()?,
        Tensor::from_vec(lengths, (b, h, w, p), &dev)?,
        Tensor::from_vec(xys, (b, h, w, 2), &dev)?,
    )
}

fn volumes(densities: &Tensor, features: &Tensor) -> Result<Volumes> {
    let [_, _, d, h, w] = densities.dims().try_into().expect("rank 5");
    let size = 2.0 / (w.max(h).max(d) - 1) as f64;
    Ok(Volumes::new(
        densities,
        Some(features),
        size,
        [0.0; 3],
        true,
    )?)
}

fn test_volume_data(b: usize) -> Result<(Tensor, Tensor)> {
    let dev = Device::Cpu;
    let n = 5 * 5 * 5;
    let d = Tensor::from_vec(
        deterministic_values(b * n, 31, 0.0, 0.4),
        (b, 1, 5, 5, 5),
        &dev,
    )?
    .to_dtype(DType::F32)?;
    let f = Tensor::from_vec(
        deterministic_values(b * 3 * n, 32, 0.0, 1.0),
        (b, 3, 5, 5, 5),
        &dev,
    )?
    .to_dtype(DType::F32)?;
    Ok((d, f))
}

fn same(a: &RenderedRays, b: &RenderedRays) -> Result<()> {
    for (x, y) in [
        (&a.features, &b.features),
        (&a.opacity, &b.opacity),
        (&a.depth, &b.depth),
        (&a.weights, &b.weights),
    ] {
        assert_eq!(x.dims(), y.dims());
        let diff = (x - y)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "chunked and unchunked differ by {diff}");
    }
    Ok(())
}

#[test]
fn chunking_does_not_change_the_result() -> Result<()> {
    let (d, f) = test_volume_data(2)?;
    let v = volumes(&d, &f)?;
    let rays = image_rays(2, 4, 5, 9)?;
    let marchers: [&dyn RayMarcher; 2] = [
        &EmissionAbsorptionRaymarcher::default(),
        &NerfRaymarcher::default(),
    ];
    for marcher in marchers {
        let whole = render_rays(&v, marcher, &rays, 1 << 20)?;
        assert_eq!(whole.features.dims(), &[2, 4, 5, 3]);
        assert_eq!(whole.opacity.dims(), &[2, 4, 5, 1]);
        assert_eq!(whole.weights.dims(), &[2, 4, 5, 9]);
        // Direct: query every point at once, march once.
        let s = v.query(&rays.points()?, Some(&rays.directions))?;
        same(
            &whole,
            &marcher.march(&s.densities, &s.features, &rays.lengths)?,
        )?;
        for chunk in [1, 2, 7, 39] {
            same(&whole, &render_rays(&v, marcher, &rays, chunk)?)?;
        }
    }
    Ok(())
}

#[test]
fn each_batch_item_reads_its_own_volume() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::cat(
        &[
            &Tensor::zeros((1, 1, 3, 3, 3), DType::F32, &dev)?,
            &Tensor::full(0.5f32, (1, 1, 3, 3, 3), &dev)?,
        ],
        0,
    )?;
    let f = Tensor::ones((2, 3, 3, 3, 3), DType::F32, &dev)?;
    let v = volumes(&d, &f)?;
    let img = render_images(
        &v,
        &EmissionAbsorptionRaymarcher::default(),
        &image_rays(2, 3, 3, 5)?,
        4,
    )?;
    assert_eq!(img.images.dims(), &[2, 3, 3, 3]);
    assert_eq!(img.opacity.dims(), &[2, 3, 3]);
    assert_eq!(img.depth.dims(), &[2, 3, 3]);
    let opacity = img.opacity.sum((1, 2))?.to_vec1::<f32>()?;
    assert_eq!(opacity[0], 0.0);
    assert!(opacity[1] > 4.0, "{opacity:?}");
    Ok(())
}

#[test]
fn a_flat_bundle_renders_through_a_single_volume() -> Result<()> {
    let (d, f) = test_volume_data(1)?;
    let v = volumes(&d, &f)?;
    let rays = image_rays(1, 3, 4, 6)?;
    let flat = rays.flatten()?;
    let out = render_rays(&v, &EmissionAbsorptionRaymarcher::default(), &flat, 5)?;
    assert_eq!(out.features.dims(), &[12, 3]);
    let image = render_rays(&v, &EmissionAbsorptionRaymarcher::default(), &rays, 5)?;
    same(
        &out,
        &RenderedRays {
            features: image.features.reshape((12, 3))?,
            opacity: image.opacity.reshape((12, 1))?,
            depth: image.depth.reshape((12, 1))?,
            weights: image.weights.reshape((12, 6))?,
        },
    )
}

#[test]
fn gradients_flow_through_every_chunk() -> Result<()> {
    let (d, f) = test_volume_data(2)?;
    let dv = Var::from_tensor(&d)?;
    let fv = Var::from_tensor(&f)?;
    let rays = image_rays(2, 4, 4, 7)?;
    let grads_for = |chunk: usize| -> Result<(Tensor, Tensor)> {
        let v = volumes(dv.as_tensor(), fv.as_tensor())?;
        let out = render_rays(&v, &EmissionAbsorptionRaymarcher::default(), &rays, chunk)?;
        let loss = (out.features.sum_all()? + out.depth.sum_all()?)?;
        let g = loss.backward()?;
        Ok((
            g.get(dv.as_tensor()).expect("density grad").clone(),
            g.get(fv.as_tensor()).expect("feature grad").clone(),
        ))
    };
    let (gd_whole, gf_whole) = grads_for(1 << 20)?;
    let (gd_chunked, gf_chunked) = grads_for(3)?;
    for (a, b) in [(&gd_whole, &gd_chunked), (&gf_whole, &gf_chunked)] {
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        assert!(a.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let (d, f) = test_volume_data(1)?;
    let v = volumes(&d, &f)?;
    let rays = image_rays(1, 2, 2, 3)?;
    let ea = EmissionAbsorptionRaymarcher::default();
    assert!(render_rays(&v, &ea, &rays, 0).is_err());
    assert!(render_images(&v, &ea, &rays.flatten()?, 4).is_err());
    // Three batches of rays for two volumes: the field refuses.
    let (d2, f2) = test_volume_data(2)?;
    assert!(render_rays(&volumes(&d2, &f2)?, &ea, &image_rays(3, 2, 2, 3)?, 4).is_err());
    Ok(())
}

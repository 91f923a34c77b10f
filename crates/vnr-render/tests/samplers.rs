//! Ray sampler properties that need no golden file (the golden full-grid rays are checked in
//! `tests/cameras.rs`): rays go through their pixels, stratified samples stay in their bins,
//! masks are respected, box bounds hold, seeds reproduce.

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use vnr_render::cameras::{
    look_at_view_transform, Camera, FoVOrthographicCameras, FoVOrthographicConfig,
    FoVPerspectiveCameras, FoVPerspectiveConfig, ImageSize, PerspectiveCameras,
};
use vnr_render::rays::RayBundle;
use vnr_render::samplers::{
    jiggle_within_stratas, ray_box_intersection, Aabb, MonteCarloRaysampler, MultinomialRaysampler,
};

fn extrinsics(b: usize) -> Result<(Tensor, Tensor)> {
    let dev = Device::Cpu;
    let elev: Vec<f32> = (0..b).map(|i| 10.0 + 20.0 * i as f32).collect();
    let azim: Vec<f32> = (0..b).map(|i| -30.0 + 70.0 * i as f32).collect();
    look_at_view_transform(
        &Tensor::new(&[3.0f32], &dev)?,
        &Tensor::new(elev.as_slice(), &dev)?,
        &Tensor::new(azim.as_slice(), &dev)?,
        true,
        &Tensor::new(&[[0.1f32, 0.0, -0.2]], &dev)?,
        &Tensor::new(&[[0f32, 1., 0.]], &dev)?,
    )
}

/// A perspective, an orthographic and a screen-space camera batch of 2.
fn cameras() -> Result<Vec<Box<dyn Camera>>> {
    let (r, t) = extrinsics(2)?;
    let dev = Device::Cpu;
    Ok(vec![
        Box::new(FoVPerspectiveCameras::new(
            &r,
            &t,
            FoVPerspectiveConfig {
                fov: 45.0,
                ..Default::default()
            },
        )?),
        Box::new(FoVOrthographicCameras::new(
            &r,
            &t,
            FoVOrthographicConfig {
                max_y: 1.5,
                min_y: -1.5,
                max_x: 1.5,
                min_x: -1.5,
                ..Default::default()
            },
        )?),
        Box::new(PerspectiveCameras::in_screen_space(
            &r,
            &t,
            &Tensor::new(&[9f32, 10.], &dev)?,
            &Tensor::new(&[[3.2f32, 2.1]], &dev)?,
            &[ImageSize::new(4, 7)],
        )?),
    ])
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Points of every ray, per camera `[B, N·P, 3]`, with each point's NDC xy and length.
fn points_xy_lengths(rays: &RayBundle) -> Result<(Tensor, Tensor, Tensor)> {
    let b = rays.origins.dim(0)?;
    let p = rays.samples_per_ray();
    let n = rays.num_rays() / b;
    let points = rays.points()?.reshape((b, n * p, 3))?;
    let xy = rays
        .xys
        .reshape((b, n, 1, 2))?
        .broadcast_as((b, n, p, 2))?
        .reshape((b, n * p, 2))?;
    let lengths = rays.lengths.reshape((b, n * p, 1))?;
    Ok((points, xy, lengths))
}

#[test]
fn ray_points_project_to_their_pixel_at_their_depth() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let size = ImageSize::new(4, 7);
    for cam in cameras()? {
        let sampler = MultinomialRaysampler::ndc(size.width, size.height, 5, 1.5, 4.0);
        let rays = sampler.sample(cam.as_ref(), None, &mut rng)?;
        assert_eq!(rays.origins.dims(), [2, 4, 7, 3]);
        assert_eq!(rays.lengths.dims(), [2, 4, 7, 5]);
        let (points, xy, lengths) = points_xy_lengths(&rays)?;
        let ndc = cam.transform_points_ndc(&points, None)?;
        assert!(max_abs_diff(&ndc.narrow(2, 0, 2)?, &xy) < 1e-4);
        let depth = cam.world_to_view(&points)?.narrow(2, 2, 1)?;
        assert!(max_abs_diff(&depth, &lengths) < 1e-4);
        // Pixel centres: (column + 0.5, row + 0.5) in screen space.
        let screen = cam.transform_points_screen(&points, &[size], None)?;
        let screen = to_vec(&screen);
        for (k, pt) in screen.chunks(3).enumerate() {
            let pixel = (k / 5) % (size.width * size.height);
            let (row, col) = (pixel / size.width, pixel % size.width);
            assert!((pt[0] - (col as f32 + 0.5)).abs() < 1e-3, "x {pt:?} {col}");
            assert!((pt[1] - (row as f32 + 0.5)).abs() < 1e-3, "y {pt:?} {row}");
        }
    }
    Ok(())
}

#[test]
fn perspective_rays_start_at_the_camera_and_orthographic_rays_are_parallel() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let cams = cameras()?;
    let sampler = MultinomialRaysampler::ndc(6, 6, 2, 1.0, 2.0);
    let persp = sampler.sample(cams[0].as_ref(), None, &mut rng)?;
    let center = cams[0].camera_center()?.reshape((2, 1, 1, 3))?;
    let center = center.broadcast_as((2, 6, 6, 3))?.contiguous()?;
    assert!(max_abs_diff(&persp.origins, &center) < 1e-4);
    let ortho = sampler.sample(cams[1].as_ref(), None, &mut rng)?;
    let d = ortho.directions.reshape((2, 36, 3))?;
    let first = d.narrow(1, 0, 1)?.broadcast_as((2, 36, 3))?.contiguous()?;
    assert!(max_abs_diff(&d, &first) < 1e-5);
    Ok(())
}

#[test]
fn unit_directions_have_unit_length() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for cam in cameras()? {
        let sampler = MultinomialRaysampler {
            unit_directions: true,
            ..MultinomialRaysampler::ndc(5, 3, 2, 1.0, 2.0)
        };
        let rays = sampler.sample(cam.as_ref(), None, &mut rng)?;
        let norms = rays.directions.sqr()?.sum(3)?.sqrt()?;
        let ones = Tensor::ones((2, 3, 5), DType::F32, &Device::Cpu)?;
        assert!(max_abs_diff(&norms, &ones) < 1e-5);
    }
    Ok(())
}

/// Asserts each row of `lengths` (`[..., P]`) lies in the strata of `linspace(lo, hi, P)`.
fn assert_within_strata(lengths: &Tensor, lo: &[f32], hi: &[f32]) {
    let p = lengths.dims().last().copied().unwrap();
    for (row, values) in to_vec(lengths).chunks(p).enumerate() {
        let (lo, hi) = (lo[row % lo.len()], hi[row % hi.len()]);
        let step = if p > 1 {
            (hi - lo) / (p - 1) as f32
        } else {
            0.0
        };
        for (i, &v) in values.iter().enumerate() {
            let centre = lo + step * i as f32;
            let lower = if i == 0 { lo } else { centre - step / 2.0 };
            let upper = if i + 1 == p { hi } else { centre + step / 2.0 };
            assert!(
                v >= lower - 1e-5 && v <= upper + 1e-5,
                "sample {i} = {v} outside [{lower}, {upper}]"
            );
        }
        assert!(values.windows(2).all(|w| w[0] <= w[1] + 1e-6));
    }
}

#[test]
fn stratified_samples_stay_within_their_bins() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let cams = cameras()?;
    let sampler = MultinomialRaysampler {
        stratified_sampling: true,
        ..MultinomialRaysampler::ndc(8, 6, 7, 0.5, 5.0)
    };
    let rays = sampler.sample(cams[0].as_ref(), None, &mut rng)?;
    assert_within_strata(&rays.lengths, &[0.5], &[5.0]);
    // Jitter actually moves samples.
    let plain =
        MultinomialRaysampler::ndc(8, 6, 7, 0.5, 5.0).sample(cams[0].as_ref(), None, &mut rng)?;
    assert!(max_abs_diff(&rays.lengths, &plain.lengths) > 1e-3);
    // The free function on an arbitrary tensor.
    let depths = Tensor::new(&[[1f32, 2., 4.], [0., 0.5, 1.0]], &Device::Cpu)?;
    let j = to_vec(&jiggle_within_stratas(&depths, &mut rng)?);
    assert!(
        (1.0..=1.5).contains(&j[0]) && (1.5..=3.0).contains(&j[1]) && (3.0..=4.0).contains(&j[2])
    );
    assert!(
        (0.0..=0.25).contains(&j[3])
            && (0.25..=0.75).contains(&j[4])
            && (0.75..=1.0).contains(&j[5])
    );
    Ok(())
}

#[test]
fn masked_sampling_only_picks_masked_pixels_without_replacement() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let cams = cameras()?;
    let (w, h) = (9, 5);
    let sampler = MultinomialRaysampler::ndc(w, h, 3, 1.0, 3.0);
    let grid = to_vec(&sampler.xy_grid(&Device::Cpu)?);
    let mask: Vec<f32> = (0..2 * h * w)
        .map(|_| (rng.random::<f32>() < 0.4) as u8 as f32)
        .collect();
    let count =
        |image: usize| mask[image * h * w..(image + 1) * h * w].iter().sum::<f32>() as usize;
    let fewest = count(0).min(count(1));
    let mask_t = Tensor::from_vec(mask.clone(), (2, h, w), &Device::Cpu)?;
    // Without a request: as many rays as the smallest mask holds.
    let rays = sampler.sample(cams[0].as_ref(), Some(&mask_t), &mut rng)?;
    assert_eq!(rays.xys.dims(), [2, fewest, 2]);
    let xys = to_vec(&rays.xys);
    for image in 0..2 {
        let mut seen = HashSet::new();
        for r in 0..fewest {
            let xy = &xys[(image * fewest + r) * 2..][..2];
            let pixel = (0..h * w)
                .find(|&k| grid[2 * k] == xy[0] && grid[2 * k + 1] == xy[1])
                .expect("ray through a grid pixel");
            assert_eq!(mask[image * h * w + pixel], 1.0, "picked an unmasked pixel");
            assert!(seen.insert(pixel), "pixel drawn twice");
        }
    }
    // More rays than masked pixels: drawn with replacement, still only masked pixels.
    let many = MultinomialRaysampler {
        n_rays_per_image: Some(h * w),
        ..sampler
    };
    let rays = many.sample(cams[0].as_ref(), Some(&mask_t), &mut rng)?;
    assert_eq!(rays.origins.dims(), [2, h * w, 3]);
    for (k, xy) in to_vec(&rays.xys).chunks(2).enumerate() {
        let image = k / (h * w);
        let pixel = (0..h * w)
            .find(|&p| grid[2 * p] == xy[0] && grid[2 * p + 1] == xy[1])
            .unwrap();
        assert_eq!(mask[image * h * w + pixel], 1.0);
    }
    Ok(())
}

#[test]
fn uniform_sampling_draws_distinct_pixels_and_weights_bias_the_draw() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let cams = cameras()?;
    let sampler = MultinomialRaysampler {
        n_rays_per_image: Some(20),
        ..MultinomialRaysampler::ndc(5, 4, 1, 1.0, 1.0)
    };
    let rays = sampler.sample(cams[0].as_ref(), None, &mut rng)?;
    assert_eq!(rays.xys.dims(), [2, 20, 2]);
    for image in to_vec(&rays.xys).chunks(40) {
        let distinct: HashSet<_> = image
            .chunks(2)
            .map(|xy| (xy[0].to_bits(), xy[1].to_bits()))
            .collect();
        assert_eq!(distinct.len(), 20, "all 20 pixels, each once");
    }
    // Weights 1 : 3 on two pixels, one ray per image: the heavy pixel wins ~75% of draws.
    let one = MultinomialRaysampler {
        n_rays_per_image: Some(1),
        ..MultinomialRaysampler::ndc(2, 1, 1, 1.0, 1.0)
    };
    let (r, t) = extrinsics(1)?;
    let cam = FoVPerspectiveCameras::new(&r, &t, FoVPerspectiveConfig::default())?;
    let weights = Tensor::new(&[[[1f32, 3.]]], &Device::Cpu)?;
    let heavy_x = to_vec(&one.xy_grid(&Device::Cpu)?)[2];
    let trials = 2000;
    let mut heavy = 0;
    for _ in 0..trials {
        let rays = one.sample(&cam, Some(&weights), &mut rng)?;
        heavy += (to_vec(&rays.xys)[0] == heavy_x) as usize;
    }
    let share = heavy as f64 / trials as f64;
    assert!((share - 0.75).abs() < 0.04, "heavy pixel share {share}");
    Ok(())
}

#[test]
fn bad_masks_are_errors() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cams = cameras()?;
    let sampler = MultinomialRaysampler {
        n_rays_per_image: Some(3),
        ..MultinomialRaysampler::ndc(4, 3, 2, 1.0, 2.0)
    };
    let dev = Device::Cpu;
    let wrong_shape = Tensor::ones((2, 4, 3), DType::F32, &dev)?;
    assert!(sampler
        .sample(cams[0].as_ref(), Some(&wrong_shape), &mut rng)
        .is_err());
    let empty = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
    assert!(sampler
        .sample(cams[0].as_ref(), Some(&empty), &mut rng)
        .is_err());
    let negative = Tensor::full(-1f32, (2, 3, 4), &dev)?;
    assert!(sampler
        .sample(cams[0].as_ref(), Some(&negative), &mut rng)
        .is_err());
    let no_pixels = MultinomialRaysampler::ndc(0, 3, 2, 1.0, 2.0);
    assert!(no_pixels.sample(cams[0].as_ref(), None, &mut rng).is_err());
    Ok(())
}

/// Image sizes, ray counts and samples per ray whose products overflow `usize` or exceed
/// `MAX_ELEMENTS` are errors before anything is allocated (they overflowed, failed with a
/// capacity overflow or aborted allocating terabytes).
#[test]
fn huge_ray_counts_are_errors_not_overflows() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (r, t) = extrinsics(1)?;
    let one = FoVPerspectiveCameras::new(&r, &t, FoVPerspectiveConfig::default())?;
    let cams = cameras()?;
    let two = cams[0].as_ref();
    let half = usize::MAX / 2 + 1;
    let grids = [
        MultinomialRaysampler::ndc(usize::MAX, 2, 4, 1.0, 2.0),
        MultinomialRaysampler::grid((-1.0, 1.0), (-1.0, 1.0), 2, usize::MAX / 2, 4, (1.0, 2.0)),
        MultinomialRaysampler::ndc(1 << 20, 1 << 20, 4, 1.0, 2.0),
    ];
    for sampler in &grids {
        assert!(sampler.xy_grid(&Device::Cpu).is_err());
        assert!(sampler.sample(&one, None, &mut rng).is_err());
    }
    let small = MultinomialRaysampler::ndc(4, 3, 2, 1.0, 2.0);
    let drawn = |n: usize| MultinomialRaysampler {
        n_rays_per_image: Some(n),
        ..small
    };
    assert!(drawn(usize::MAX).sample(&one, None, &mut rng).is_err());
    assert!(drawn(half).sample(two, None, &mut rng).is_err());
    assert!(drawn(1 << 40).sample(two, None, &mut rng).is_err());
    // A mask's total weight sets the ray count when none is requested.
    let heavy = Tensor::full(1e30f32, (2, 3, 4), &Device::Cpu)?;
    assert!(small.sample(two, Some(&heavy), &mut rng).is_err());
    let bounds = Some(Aabb::new([-1.0; 3], [1.0; 3])?);
    for n_pts_per_ray in [usize::MAX, usize::MAX / 2, 1 << 40] {
        for bounds in [None, bounds] {
            let points = MultinomialRaysampler {
                n_pts_per_ray,
                bounds,
                ..small
            };
            assert!(points.sample(two, None, &mut rng).is_err());
            let monte_carlo = MonteCarloRaysampler {
                bounds,
                ..MonteCarloRaysampler::new((-1.0, 1.0), (-1.0, 1.0), 3, n_pts_per_ray, (1.0, 2.0))
            };
            assert!(monte_carlo.sample(two, &mut rng).is_err());
        }
    }
    for n_rays in [usize::MAX, half, 1 << 40] {
        let sampler = MonteCarloRaysampler::new((-1.0, 1.0), (-1.0, 1.0), n_rays, 2, (1.0, 2.0));
        assert!(sampler.sample(two, &mut rng).is_err());
    }
    let sampler = MonteCarloRaysampler::new((-1.0, 1.0), (-1.0, 1.0), usize::MAX, 2, (1.0, 2.0));
    assert!(sampler.sample(&one, &mut rng).is_err());
    Ok(())
}

#[test]
fn monte_carlo_rays_pass_through_their_random_points() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for cam in cameras()? {
        let sampler = MonteCarloRaysampler::new((-0.8, 0.9), (-0.5, 0.7), 33, 4, (1.0, 4.0));
        let rays = sampler.sample(cam.as_ref(), &mut rng)?;
        assert_eq!(rays.origins.dims(), [2, 33, 3]);
        for xy in to_vec(&rays.xys).chunks(2) {
            assert!((-0.8..0.9).contains(&xy[0]) && (-0.5..0.7).contains(&xy[1]));
        }
        let (points, xy, _) = points_xy_lengths(&rays)?;
        let ndc = cam.transform_points_ndc(&points, None)?;
        assert!(max_abs_diff(&ndc.narrow(2, 0, 2)?, &xy) < 1e-4);
    }
    Ok(())
}

#[test]
fn seeds_reproduce_and_differ() -> Result<()> {
    let cams = cameras()?;
    let mask = Tensor::new(&[[[1f32, 0., 1., 1.], [0., 1., 1., 0.]]], &Device::Cpu)?
        .broadcast_as((2, 2, 4))?
        .contiguous()?;
    let multinomial = MultinomialRaysampler {
        n_rays_per_image: Some(3),
        stratified_sampling: true,
        ..MultinomialRaysampler::ndc(4, 2, 6, 1.0, 3.0)
    };
    let mut monte_carlo = MonteCarloRaysampler::new((-1.0, 1.0), (-1.0, 1.0), 10, 6, (1.0, 3.0));
    monte_carlo.stratified_sampling = true;
    let run = |seed: u64| -> Result<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = multinomial.sample(cams[0].as_ref(), Some(&mask), &mut rng)?;
        let b = monte_carlo.sample(cams[1].as_ref(), &mut rng)?;
        let mut all = to_vec(&a.xys);
        all.extend(to_vec(&a.lengths));
        all.extend(to_vec(&b.xys));
        all.extend(to_vec(&b.lengths));
        Ok(all)
    };
    assert_eq!(run(11)?, run(11)?);
    assert_ne!(run(11)?, run(12)?);
    Ok(())
}

#[test]
fn ray_box_intersection_known_cases() -> Result<()> {
    let dev = Device::Cpu;
    let aabb = Aabb::new([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])?;
    let origins = Tensor::new(
        &[
            [0f32, 0., -5.], // straight through along +z: enters at 4, exits at 6
            [0., 0., 0.],    // starts inside: near clamps to min_depth
            [3., 0., -5.],   // parallel to the box, outside the x slab: miss
            [1., 0., -5.],   // on the x = 1 face, parallel to it: hits (closed box)
            [0., 0., 5.],    // box behind the ray: miss
            [0., 0., -50.],  // box beyond max_depth: miss
        ],
        &dev,
    )?;
    let directions = Tensor::new(
        &[
            [0f32, 0., 1.],
            [0., 0., 2.],
            [0., 0., 1.],
            [0., 0., 1.],
            [0., 0., 1.],
            [0., 0., 1.],
        ],
        &dev,
    )?;
    let crossing = ray_box_intersection(&origins, &directions, &aabb, 0.1, 20.0)?;
    let near = to_vec(&crossing.near);
    let far = to_vec(&crossing.far);
    let hit = crossing.hit.to_vec1::<u8>()?;
    assert_eq!(hit, [1, 1, 0, 1, 0, 0]);
    assert_eq!(&near[..2], &[4.0, 0.1]);
    assert_eq!(&far[..2], &[6.0, 0.5]);
    assert_eq!((near[3], far[3]), (4.0, 6.0));
    for miss in [2, 4, 5] {
        assert_eq!((near[miss], far[miss]), (20.0, 20.0));
    }
    assert!(Aabb::new([0.0; 3], [-1.0, 1.0, 1.0]).is_err());
    assert!(Aabb::new([f32::NAN, 0.0, 0.0], [1.0; 3]).is_err());
    assert!(ray_box_intersection(&origins, &directions.narrow(0, 0, 2)?, &aabb, 0.0, 1.0).is_err());
    Ok(())
}

#[test]
fn box_bounded_samples_lie_in_the_box_and_misses_collapse() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let aabb = Aabb::new([-0.4, -0.3, -0.5], [0.5, 0.4, 0.3])?;
    for cam in cameras()? {
        for stratified in [false, true] {
            let sampler = MultinomialRaysampler {
                bounds: Some(aabb),
                stratified_sampling: stratified,
                ..MultinomialRaysampler::ndc(12, 9, 6, 0.5, 8.0)
            };
            let rays = sampler.sample(cam.as_ref(), None, &mut rng)?;
            let crossing = ray_box_intersection(&rays.origins, &rays.directions, &aabb, 0.5, 8.0)?;
            let hits = crossing.hit.flatten_all()?.to_vec1::<u8>()?;
            assert!(
                hits.contains(&1) && hits.contains(&0),
                "the box fills part of the image"
            );
            assert_within_strata(
                &rays.lengths,
                &to_vec(&crossing.near),
                &to_vec(&crossing.far),
            );
            let points = to_vec(&rays.points()?);
            let lengths = to_vec(&rays.lengths);
            for (ray, &hit) in hits.iter().enumerate() {
                for s in 0..6 {
                    let pt = &points[(ray * 6 + s) * 3..][..3];
                    let inside =
                        (0..3).all(|i| pt[i] >= aabb.min[i] - 1e-4 && pt[i] <= aabb.max[i] + 1e-4);
                    if hit == 1 {
                        assert!(inside, "sample {pt:?} of a hit ray is outside the box");
                    } else {
                        assert!(!inside);
                        assert_eq!(lengths[ray * 6 + s], 8.0);
                    }
                }
            }
        }
    }
    Ok(())
}

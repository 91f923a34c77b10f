//! Point splatting against PyTorch3D's formulas (golden files) and its documented behaviour.

use crate::volume_golden::Golden;
use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::{check_gradients, deterministic_values, GradCheckConfig};
use vnr_render::splat::{
    add_pointclouds_to_volumes, add_points_features_to_volume_densities_features, SplatConfig,
    SplatMode,
};
use vnr_render::volumes::{VolumeError, Volumes};

const TOL: f64 = 1e-5;

fn check_golden(name: &str, mode: SplatMode, align_corners: bool, rescale: bool) -> Result<()> {
    let g = Golden::load(name);
    let points = Var::from_tensor(&g.get("points"))?;
    let feats = Var::from_tensor(&g.get("point_features"))?;
    let dens0 = Var::from_tensor(&g.get("densities0"))?;
    let feats0 = Var::from_tensor(&g.get("features0"))?;
    let cfg = SplatConfig {
        mode,
        min_weight: 1e-4,
        rescale_features: rescale,
        align_corners,
    };
    let mask = g.get("mask");
    let (features, densities) = add_points_features_to_volume_densities_features(
        points.as_tensor(),
        feats.as_tensor(),
        dens0.as_tensor(),
        Some(feats0.as_tensor()),
        Some(&mask),
        &cfg,
    )
    .map_err(candle_core::Error::from)?;
    g.check("features", &features, TOL, TOL);
    g.check("densities", &densities, TOL, TOL);
    let loss = ((features * g.get("grad_features"))?.sum_all()?
        + (densities * g.get("grad_densities"))?.sum_all()?)?;
    let grads = loss.backward()?;
    let grad = |v: &Var| grads.get(v.as_tensor()).cloned().expect("a gradient");
    g.check("grad_point_features", &grad(&feats), TOL, TOL);
    g.check("grad_densities0", &grad(&dens0), TOL, TOL);
    g.check("grad_features0", &grad(&feats0), TOL, TOL);
    if mode == SplatMode::Trilinear {
        g.check("grad_points", &grad(&points), 1e-4, 1e-5);
    }
    Ok(())
}

#[test]
fn golden_trilinear_aligned() -> Result<()> {
    check_golden("splat_trilinear_aligned", SplatMode::Trilinear, true, true)
}

#[test]
fn golden_trilinear_unaligned() -> Result<()> {
    check_golden(
        "splat_trilinear_unaligned",
        SplatMode::Trilinear,
        false,
        true,
    )
}

#[test]
fn golden_trilinear_sums_without_rescaling() -> Result<()> {
    check_golden(
        "splat_trilinear_aligned_sum",
        SplatMode::Trilinear,
        true,
        false,
    )
}

#[test]
fn golden_nearest_aligned() -> Result<()> {
    check_golden("splat_nearest_aligned", SplatMode::Nearest, true, true)
}

#[test]
fn golden_nearest_unaligned() -> Result<()> {
    check_golden("splat_nearest_unaligned", SplatMode::Nearest, false, true)
}

/// Splats points `[1, N, 3]` with unit features into an empty `[1, 1, 1, 1, w]` row; returns
/// the densities along x.
fn splat_row(xs: &[f32], w: usize, cfg: &SplatConfig) -> Result<Vec<f32>> {
    let dev = Device::Cpu;
    let n = xs.len();
    let pts: Vec<f32> = xs.iter().flat_map(|&x| [x, -1.0, -1.0]).collect();
    let points = Tensor::from_vec(pts, (1, n, 3), &dev)?;
    let feats = Tensor::ones((1, n, 1), DType::F32, &dev)?;
    let d0 = Tensor::zeros((1, 1, 2, 2, w), DType::F32, &dev)?;
    let (_, d) =
        add_points_features_to_volume_densities_features(&points, &feats, &d0, None, None, cfg)
            .map_err(candle_core::Error::from)?;
    d.narrow(2, 0, 1)?
        .narrow(3, 0, 1)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[test]
fn points_just_outside_get_floor_weights_never_negative() -> Result<()> {
    // align_corners, W = 5: x = -1.15 is index position -0.3; voxel 0 is 0.3 away: weight 0.7.
    // (PyTorch3D's C++ truncates: weights 1.3 on voxel 0 and -0.3 on voxel 1.)
    let cfg = SplatConfig {
        rescale_features: false,
        ..Default::default()
    };
    let row = splat_row(&[-1.15], 5, &cfg)?;
    assert!((row[0] - 0.7).abs() < 1e-6, "{row:?}");
    assert!(row[1..].iter().all(|&v| v == 0.0), "{row:?}");
    // Beyond the far side and far away: nothing at all.
    assert!(splat_row(&[1.6, 40.0, f32::NAN], 5, &cfg)?
        .iter()
        .all(|&v| v == 0.0));
    Ok(())
}

#[test]
fn nearest_rounds_half_away_from_zero() -> Result<()> {
    // align_corners, W = 5: x = 0.25 is index position 2.5 → voxel 3; x = -0.75 is 0.5 → voxel 1;
    // x = -1.25 is -0.5 → -1, outside.
    let cfg = SplatConfig {
        mode: SplatMode::Nearest,
        rescale_features: false,
        ..Default::default()
    };
    assert_eq!(
        splat_row(&[0.25, -0.75, -1.25], 5, &cfg)?,
        vec![0.0, 1.0, 0.0, 1.0, 0.0]
    );
    Ok(())
}

#[test]
fn masked_points_are_skipped() -> Result<()> {
    let dev = Device::Cpu;
    let points = Tensor::new(&[[[0f32, 0., 0.], [0.5, 0.5, 0.5]]], &dev)?;
    let feats = Tensor::ones((1, 2, 1), DType::F32, &dev)?;
    let d0 = Tensor::zeros((1, 1, 3, 3, 3), DType::F32, &dev)?;
    let mask = Tensor::new(&[[1u8, 0]], &dev)?;
    let (_, d) = add_points_features_to_volume_densities_features(
        &points,
        &feats,
        &d0,
        None,
        Some(&mask),
        &SplatConfig::default(),
    )
    .map_err(candle_core::Error::from)?;
    let total = d.sum_all()?.to_scalar::<f32>()?;
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    Ok(())
}

#[test]
fn trilinear_gradients_match_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    // Local points whose index positions (×1.5 and ×2 for aligned 4 and 5 voxels) avoid integers.
    let points = Tensor::new(
        &[[
            [0.13f64, -0.42, 0.71],
            [-0.93, 0.27, -0.08],
            [0.55, 0.61, -0.66],
        ]],
        &dev,
    )?;
    let feats = Tensor::from_vec(deterministic_values(3 * 2, 5, -1.0, 1.0), (1, 3, 2), &dev)?;
    let d0 = Tensor::from_vec(
        deterministic_values(3 * 4 * 5, 6, 0.0, 0.5),
        (1, 1, 3, 4, 5),
        &dev,
    )?;
    for align_corners in [true, false] {
        let cfg = SplatConfig {
            align_corners,
            ..Default::default()
        };
        check_gradients(
            |x| {
                let (f, d) = add_points_features_to_volume_densities_features(
                    &x[0], &x[1], &x[2], None, None, &cfg,
                )?;
                Tensor::cat(&[&f, &d], 1)
            },
            &[points.clone(), feats.clone(), d0.clone()],
            &GradCheckConfig {
                atol: 1e-5,
                rtol: 1e-4,
                ..Default::default()
            },
        )?;
    }
    Ok(())
}

#[test]
fn pointclouds_land_on_their_world_voxels() -> Result<()> {
    let dev = Device::Cpu;
    let d0 = Tensor::zeros((2, 1, 3, 4, 5), DType::F32, &dev)?;
    let initial = Volumes::new(&d0, None, [0.5, 0.25, 2.0], [0.3, -1.0, 0.2], false)
        .map_err(candle_core::Error::from)?;
    // The world centre of voxel (z, y, x) = (1, 2, 3) of each volume.
    let centre = initial
        .get_coord_grid(true)?
        .narrow(1, 1, 1)?
        .narrow(2, 2, 1)?
        .narrow(3, 3, 1)?
        .reshape((2, 1, 3))?;
    let feats = Tensor::new(&[[[0.25f32, -2.0]], [[1.0, 3.0]]], &dev)?;
    let out = add_pointclouds_to_volumes(
        &centre,
        &feats,
        None,
        &initial,
        SplatMode::Trilinear,
        1e-4,
        true,
    )
    .map_err(candle_core::Error::from)?;
    let d = out.densities()?;
    let at = |t: &Tensor, b: usize, c: usize| -> Result<f32> {
        t.get(b)?.get(c)?.get(1)?.get(2)?.get(3)?.to_scalar::<f32>()
    };
    let f = out.features()?.expect("features");
    for b in 0..2 {
        assert!((at(&d, b, 0)? - 1.0).abs() < 1e-5);
        assert!((d.get(b)?.sum_all()?.to_scalar::<f32>()? - 1.0).abs() < 1e-5);
        let want = feats.get(b)?.get(0)?.to_vec1::<f32>()?;
        for (c, w) in want.iter().enumerate() {
            assert!((at(&f, b, c)? - w).abs() < 1e-5);
        }
    }
    Ok(())
}

#[test]
fn inconsistent_shapes_are_typed_errors() -> Result<()> {
    let dev = Device::Cpu;
    let points = Tensor::zeros((2, 4, 3), DType::F32, &dev)?;
    let feats = Tensor::zeros((2, 4, 2), DType::F32, &dev)?;
    let d0 = Tensor::zeros((2, 1, 3, 3, 3), DType::F32, &dev)?;
    let cfg = SplatConfig::default();
    let call = |p: &Tensor, f: &Tensor, d: &Tensor, vf: Option<&Tensor>, m: Option<&Tensor>| {
        add_points_features_to_volume_densities_features(p, f, d, vf, m, &cfg)
    };
    let is_shape_error = |r: std::result::Result<(Tensor, Tensor), VolumeError>| {
        matches!(r, Err(VolumeError::SplatShape(_)))
    };
    assert!(is_shape_error(call(
        &Tensor::zeros((2, 4, 2), DType::F32, &dev)?,
        &feats,
        &d0,
        None,
        None
    )));
    assert!(is_shape_error(call(
        &points,
        &Tensor::zeros((2, 5, 2), DType::F32, &dev)?,
        &d0,
        None,
        None
    )));
    assert!(is_shape_error(call(
        &points,
        &feats,
        &Tensor::zeros((2, 2, 3, 3, 3), DType::F32, &dev)?,
        None,
        None
    )));
    assert!(is_shape_error(call(
        &points,
        &feats,
        &d0,
        Some(&Tensor::zeros((2, 3, 3, 3, 3), DType::F32, &dev)?),
        None
    )));
    assert!(is_shape_error(call(
        &points,
        &feats,
        &d0,
        None,
        Some(&Tensor::zeros((2, 3), DType::F32, &dev)?)
    )));
    assert!(call(&points, &feats, &d0, None, None).is_ok());
    Ok(())
}

//! `Volumes` against PyTorch3D's coordinate conventions (golden files) and as a `Field`.

use crate::volume_golden::{assert_close, Golden};
use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::{check_gradients, deterministic_values, GradCheckConfig};
use vnr_ops::grid_sample::GridSampleMode;
use vnr_render::field::Field;
use vnr_render::volumes::{VolumeError, VolumeLocator, Volumes};

const TOL: f64 = 1e-5;

fn golden_volumes(g: &Golden, align_corners: bool) -> Volumes {
    Volumes::new(
        &g.get("densities"),
        Some(&g.get("features")),
        g.get("voxel_size"),
        g.get("volume_translation"),
        align_corners,
    )
    .expect("golden volumes")
}

fn check_golden(name: &str, align_corners: bool) -> Result<()> {
    let g = Golden::load(name);
    let v = golden_volumes(&g, align_corners);
    g.check("coord_grid_local", &v.get_coord_grid(false)?, TOL, TOL);
    g.check("coord_grid_world", &v.get_coord_grid(true)?, TOL, TOL);
    g.check(
        "world_to_local",
        &v.world_to_local_coords(&g.get("points_world"))?,
        TOL,
        TOL,
    );
    g.check(
        "local_to_world",
        &v.local_to_world_coords(&g.get("points_local"))?,
        TOL,
        TOL,
    );
    g.check(
        "local_to_world_matrix",
        &v.locator().local_to_world_matrix()?,
        TOL,
        TOL,
    );
    g.check(
        "world_to_local_matrix",
        &v.locator().world_to_local_matrix()?,
        TOL,
        TOL,
    );
    let samples = v.query(&g.get("query_points"), None)?;
    g.check("query_densities", &samples.densities, TOL, TOL);
    g.check("query_features", &samples.features, TOL, TOL);
    Ok(())
}

#[test]
fn golden_aligned_corners_match_pytorch3d() -> Result<()> {
    check_golden("volumes_aligned", true)
}

#[test]
fn golden_unaligned_corners_match_pytorch3d() -> Result<()> {
    check_golden("volumes_unaligned", false)
}

fn ramp_volume(dims: (usize, usize, usize, usize, usize)) -> Result<Tensor> {
    let n = dims.0 * dims.1 * dims.2 * dims.3 * dims.4;
    Tensor::arange(0f32, n as f32, &Device::Cpu)?.reshape(dims)
}

#[test]
fn sampling_at_voxel_centres_returns_the_voxels() -> Result<()> {
    // PyTorch3D's documented identity: sampling at the coordinate grid gives the volume back.
    for align_corners in [true, false] {
        let densities = ramp_volume((2, 1, 3, 4, 5))?;
        let features = (ramp_volume((2, 2, 3, 4, 5))? * -0.5)?;
        let v = Volumes::new(
            &densities,
            Some(&features),
            [0.5, 1.0, 2.0],
            [1.0, -2.0, 0.5],
            align_corners,
        )
        .map_err(candle_core::Error::from)?;
        let grid = v.get_coord_grid(true)?; // [B, D, H, W, 3]
        let s = v.query(&grid, None)?; // [B, D, H, W, C]
        assert_close(
            "densities",
            &s.densities.permute((0, 4, 1, 2, 3))?,
            &densities,
            1e-4,
            1e-5,
        )?;
        assert_close(
            "features",
            &s.features.permute((0, 4, 1, 2, 3))?,
            &features,
            1e-4,
            1e-5,
        )?;
    }
    Ok(())
}

#[test]
fn world_local_round_trip_and_pytorch3d_example() -> Result<()> {
    // PyTorch3D's docstring: a 5³ volume of unit voxels maps world (-2, 0, 2) to local (-1, 0, 1).
    let dev = Device::Cpu;
    let loc = VolumeLocator::new(1, [5, 5, 5], 1.0, [0.0, 0.0, 0.0], true, DType::F32, &dev)
        .map_err(candle_core::Error::from)?;
    let local = loc.world_to_local_coords(&Tensor::new(&[[-2f32, 0., 2.]], &dev)?)?;
    assert_close(
        "example",
        &local,
        &Tensor::new(&[[-1f32, 0., 1.]], &dev)?,
        1e-6,
        0.0,
    )?;
    let loc = VolumeLocator::new(
        2,
        [3, 4, 6],
        Tensor::new(&[[0.5f32], [2.0]], &dev)?,
        [0.3, 0.1, -0.2],
        false,
        DType::F32,
        &dev,
    )
    .map_err(candle_core::Error::from)?;
    let p = Tensor::from_vec(
        deterministic_values(2 * 5 * 3, 3, -2.0, 2.0),
        (2, 5, 3),
        &dev,
    )?
    .to_dtype(DType::F32)?;
    let back = loc.local_to_world_coords(&loc.world_to_local_coords(&p)?)?;
    assert_close("round trip", &back, &p, 1e-5, 1e-5)
}

#[test]
fn voxel_size_forms_agree() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::zeros((2, 1, 2, 3, 4), DType::F32, &dev)?;
    let scalar =
        Volumes::new(&d, None, 0.5, [1.0, 2.0, 3.0], true).map_err(candle_core::Error::from)?;
    let forms = [
        Tensor::new(&[0.5f32], &dev)?,
        Tensor::new(&[0.5f32, 0.5, 0.5], &dev)?,
        Tensor::new(&[[0.5f32, 0.5, 0.5]], &dev)?,
        Tensor::new(&[[0.5f32], [0.5]], &dev)?,
        Tensor::new(&[[0.5f32, 0.5, 0.5], [0.5, 0.5, 0.5]], &dev)?,
    ];
    for form in forms {
        let v = Volumes::new(&d, None, form, Tensor::new(&[1f32, 2., 3.], &dev)?, true)
            .map_err(candle_core::Error::from)?;
        assert_close(
            "scale",
            &v.locator().local_to_world_scale()?,
            &scalar.locator().local_to_world_scale()?,
            0.0,
            0.0,
        )?;
    }
    Ok(())
}

#[test]
fn bad_inputs_are_typed_errors() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::zeros((2, 1, 2, 3, 4), DType::F32, &dev)?;
    let bad_density = Volumes::new(
        &Tensor::zeros((2, 3, 4), DType::F32, &dev)?,
        None,
        1.0,
        [0.0; 3],
        true,
    );
    assert!(matches!(bad_density, Err(VolumeError::DensitiesShape(_))));
    let bad_features = Volumes::new(
        &d,
        Some(&Tensor::zeros((2, 3, 2, 3, 5), DType::F32, &dev)?),
        1.0,
        [0.0; 3],
        true,
    );
    assert!(matches!(
        bad_features,
        Err(VolumeError::FeaturesShape { .. })
    ));
    let bad_size = Volumes::new(
        &d,
        None,
        Tensor::zeros((3, 3), DType::F32, &dev)?,
        [0.0; 3],
        true,
    );
    assert!(matches!(
        bad_size,
        Err(VolumeError::Property {
            name: "voxel_size",
            ..
        })
    ));
    let zero_size = Volumes::new(&d, None, 0.0, [0.0; 3], true);
    assert!(matches!(zero_size, Err(VolumeError::Property { .. })));
    let nan_translation = Volumes::new(&d, None, 1.0, [f64::NAN, 0.0, 0.0], true);
    assert!(matches!(
        nan_translation,
        Err(VolumeError::Property {
            name: "volume_translation",
            ..
        })
    ));
    let scalar_translation = Volumes::new(&d, None, 1.0, 1.0, true);
    assert!(matches!(
        scalar_translation,
        Err(VolumeError::Property { .. })
    ));
    let v = Volumes::new(&d, None, 1.0, [0.0; 3], true).map_err(candle_core::Error::from)?;
    let wrong_batch = v.world_to_local_coords(&Tensor::zeros((3, 4, 3), DType::F32, &dev)?);
    assert!(matches!(wrong_batch, Err(VolumeError::PointsShape { .. })));
    assert!(v
        .query(&Tensor::zeros((2, 4, 2), DType::F32, &dev)?, None)
        .is_err());
    let slab = Volumes::new(
        &Tensor::zeros((1, 1, 1, 3, 4), DType::F32, &dev)?,
        None,
        1.0,
        [0.0; 3],
        true,
    )
    .map_err(candle_core::Error::from)?;
    assert!(matches!(
        slab.world_to_local_coords(&Tensor::zeros((1, 3), DType::F32, &dev)?),
        Err(VolumeError::SingleVoxelAxis { axis: 'z' })
    ));
    Ok(())
}

/// Batch and grid sizes whose products overflow or exceed `MAX_ELEMENTS` are errors, not
/// overflows inside candle or aborted allocations.
#[test]
fn huge_batches_and_grids_are_errors_not_overflows() -> Result<()> {
    let dev = Device::Cpu;
    let locator = |batch: usize, grid: [usize; 3]| {
        VolumeLocator::new(batch, grid, 1.0, [0.0; 3], true, DType::F32, &dev)
    };
    for batch in [usize::MAX, usize::MAX / 2 + 1, 1 << 40] {
        assert!(matches!(
            locator(batch, [2; 3]),
            Err(VolumeError::Candle(_))
        ));
    }
    for grid in [[usize::MAX / 2, 2, 2], [1 << 21; 3], [1 << 14; 3]] {
        let loc = locator(1, grid).map_err(candle_core::Error::from)?;
        for world in [false, true] {
            assert!(matches!(
                loc.get_coord_grid(world),
                Err(VolumeError::Candle(_))
            ));
        }
    }
    assert_eq!(
        locator(2, [2, 3, 4])
            .map_err(candle_core::Error::from)?
            .get_coord_grid(true)?
            .dims(),
        [2, 2, 3, 4, 3]
    );
    Ok(())
}

#[test]
fn batches_sample_their_own_volume_and_single_volumes_take_any_shape() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::cat(
        &[
            &Tensor::zeros((1, 1, 2, 2, 2), DType::F32, &dev)?,
            &Tensor::ones((1, 1, 2, 2, 2), DType::F32, &dev)?,
        ],
        0,
    )?;
    let v = Volumes::new(&d, None, 1.0, [0.0; 3], true).map_err(candle_core::Error::from)?;
    assert_eq!(v.feature_dim(), 0);
    let s = v.query(&Tensor::zeros((2, 3, 4, 3), DType::F32, &dev)?, None)?;
    assert_eq!(s.densities.dims(), &[2, 3, 4, 1]);
    assert_eq!(s.features.dims(), &[2, 3, 4, 0]);
    let per_batch = s.densities.sum((1, 2, 3))?.to_vec1::<f32>()?;
    assert_eq!(per_batch, vec![0.0, 12.0]);
    let single = Volumes::new(&d.narrow(0, 1, 1)?, None, 1.0, [0.0; 3], true)
        .map_err(candle_core::Error::from)?
        .with_sample_mode(GridSampleMode::Nearest);
    let s = single.query(&Tensor::zeros((5, 7, 3), DType::F32, &dev)?, None)?;
    assert_eq!(s.densities.dims(), &[5, 7, 1]);
    Ok(())
}

#[test]
fn query_gradients_match_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    let densities = Tensor::from_vec(
        deterministic_values(2 * 3 * 4 * 5, 11, 0.0, 1.0),
        (2, 1, 3, 4, 5),
        &dev,
    )?;
    let features = Tensor::from_vec(
        deterministic_values(2 * 2 * 3 * 4 * 5, 12, -1.0, 1.0),
        (2, 2, 3, 4, 5),
        &dev,
    )?;
    // World points whose voxel positions stay away from integers (where the gradient jumps).
    let points = Tensor::from_vec(
        deterministic_values(2 * 4 * 3, 13, -0.9, 0.9),
        (2, 4, 3),
        &dev,
    )?;
    let translation = Tensor::new(&[[0.1f64, -0.2, 0.3], [0.0, 0.1, 0.0]], &dev)?;
    for align_corners in [true, false] {
        check_gradients(
            |x| {
                let v = Volumes::new(
                    &x[0],
                    Some(&x[1]),
                    Tensor::new(&[0.5f64, 0.7, 0.6], &dev)?,
                    &x[3],
                    align_corners,
                )?;
                let s = v.query(&x[2], None)?;
                Tensor::cat(&[&s.densities, &s.features], 2)
            },
            &[
                densities.clone(),
                features.clone(),
                points.clone(),
                translation.clone(),
            ],
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
fn gradients_reach_the_voxel_size() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::ones((1, 1, 2, 2, 2), DType::F32, &dev)?;
    let size = Var::new(&[[1f32, 1., 1.]], &dev)?;
    let v = Volumes::new(&d, None, size.as_tensor(), [0.0; 3], true)
        .map_err(candle_core::Error::from)?;
    let loss = v.get_coord_grid(true)?.sqr()?.sum_all()?;
    let grads = loss.backward()?;
    assert!(grads.get(size.as_tensor()).is_some());
    Ok(())
}

//! RenderNet's voxel-to-camera resampling against the original's golden numbers
//! (`../shared/fixtures/README.md`): at the identity pose (φ = π/2, θ = 0, s = 1), 64³ into
//! 128³, the occupancy sums are those of the original code, which drops slice 63.

use candle_core::{DType, Device};
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::testing::fixture;
use vnr_render::rendernet::{
    resample_to_camera, source_positions, view_params_tensor, RenderNetPose, ResampleConfig,
};

fn occupancy_sum_at_identity(name: &str, drop_last_slice: bool) -> Option<f32> {
    let path = fixture(&format!("binvox/{name}.binvox"))?;
    let grid = BinvoxGrid::read(path).unwrap();
    let voxels = grid
        .to_tensor(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let identity = RenderNetPose {
        azimuth_deg: 90.0,
        elevation_deg: 90.0,
        radius: 3.3,
    };
    let params = view_params_tensor(&[identity], &Device::Cpu).unwrap();
    let cfg = ResampleConfig {
        out_size: 128,
        drop_last_slice,
    };
    let out = resample_to_camera(&voxels, &params, &cfg).unwrap();
    assert_eq!(out.dims(), &[1, 1, 128, 128, 128]);
    Some(out.sum_all().unwrap().to_scalar::<f32>().unwrap())
}

#[test]
fn identity_pose_occupancy_matches_the_original() {
    for (name, want) in [
        ("bunny", 57_778.0),
        ("chair", 5_247.0),
        ("suzanne", 30_259.0),
    ] {
        if let Some(sum) = occupancy_sum_at_identity(name, true) {
            // Exact up to the f32 rounding of the [-1, 1] grid normalisation.
            assert!((sum - want).abs() < 0.01, "{name}: {sum} vs {want}");
        }
    }
}

#[test]
fn without_the_clamping_every_voxel_survives() {
    // Plain zero-padded trilinear resampling at an integer shift keeps the whole grid.
    for (name, want) in [
        ("bunny", 57_835.0),
        ("chair", 5_277.0),
        ("suzanne", 30_270.0),
    ] {
        if let Some(sum) = occupancy_sum_at_identity(name, false) {
            // Exact up to the f32 rounding of the [-1, 1] grid normalisation.
            assert!((sum - want).abs() < 0.01, "{name}: {sum} vs {want}");
        }
    }
}

#[test]
fn view_params_follow_the_demo() {
    let p = RenderNetPose {
        azimuth_deg: 250.0,
        elevation_deg: 60.0,
        radius: 3.3,
    }
    .view_params();
    assert!((p[0] - 250f64.to_radians()).abs() < 1e-12);
    assert!((p[1] - 30f64.to_radians()).abs() < 1e-12);
    assert_eq!(p[2], 1.0);
    let t = view_params_tensor(&[], &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[0, 3]);
}

/// Output sizes whose `B·N³·…` overflows or exceeds `MAX_ELEMENTS` are errors: they overflowed
/// inside candle, aborted allocating, or (`usize::MAX`, truncated to `u32`) allocated 16+ GiB.
#[test]
fn huge_output_sizes_are_errors_not_overflows() {
    let dev = Device::Cpu;
    let voxels = candle_core::Tensor::ones((1, 1, 4, 4, 4), DType::F32, &dev).unwrap();
    let identity = RenderNetPose {
        azimuth_deg: 90.0,
        elevation_deg: 90.0,
        radius: 3.3,
    };
    let params = view_params_tensor(&[identity], &dev).unwrap();
    for out_size in [usize::MAX, usize::MAX / 2 + 1, 1 << 22, 100_000] {
        assert!(source_positions(&params, [4; 3], out_size).is_err());
        let cfg = ResampleConfig {
            out_size,
            drop_last_slice: true,
        };
        assert!(resample_to_camera(&voxels, &params, &cfg).is_err());
    }
    // Many channels at a modest size: the output B·C·N³ is what is too large.
    let channels = candle_core::Tensor::ones((1, 1 << 20, 1, 1, 1), DType::F32, &dev).unwrap();
    let cfg = ResampleConfig {
        out_size: 1024,
        drop_last_slice: false,
    };
    assert!(resample_to_camera(&channels, &params, &cfg).is_err());
}

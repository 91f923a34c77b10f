//! Generated datasets: seeded determinism, shapes inside their cube, the RenderNet camera
//! against the resampling it stands for, the ConvDeconv camera-space grid against its render,
//! and both layouts read back by the chunked dataset reader.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::dataset::{ChunkedDataset, DatasetConfig, ValidationSplit};
use vnr_models::generated::{
    convdeconv_sample, pose_name, random_shape, rendernet_camera, rendernet_sample, voxelize_sdf,
    write_convdeconv, write_rendernet, ConvDeconvGenConfig, GenError, MaterialKind,
    RenderNetGenConfig, RenderNetTarget, ShapeKind, POSES_FIELD, SAMPLES_FILE, SHAPE_EXTENT,
};
use vnr_models::rendernet::align_to_image;
use vnr_render::reference::{render, Object, Outputs, Scene, Sdf, Vec3};
use vnr_render::rendernet::{
    resample_to_camera, view_params_tensor, RenderNetPose, ResampleConfig,
};

fn tiny_rendernet() -> RenderNetGenConfig {
    RenderNetGenConfig {
        count: 5,
        views_per_shape: 2,
        voxel_size: 16,
        resampled_size: 32,
        image_size: 32,
        samples_per_chunk: 3,
        seed: 11,
        ..RenderNetGenConfig::default()
    }
}

fn tiny_convdeconv() -> ConvDeconvGenConfig {
    ConvDeconvGenConfig {
        count: 3,
        grid_size: 16,
        image_size: 16,
        samples_per_chunk: 2,
        seed: 5,
        ..ConvDeconvGenConfig::default()
    }
}

/// Intersection over union of two masks.
fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union.max(1) as f64
}

/// Where the maximum of `t` along `axis` is at least ½ (the columns holding the shape).
fn projection_mask(t: &Tensor, axis: usize) -> Vec<bool> {
    let max = t.max(axis).unwrap().flatten_all().unwrap();
    max.to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&x| x >= 0.5)
        .collect()
}

#[test]
fn every_kind_stays_inside_its_cube_and_draws_are_seeded() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for kind in ShapeKind::ALL {
        for _ in 0..20 {
            let shape = kind.sample(&mut rng);
            shape.validate().unwrap();
            let b = shape.bounds();
            for v in [b.min, b.max] {
                assert!(
                    v.abs().max_elem() <= SHAPE_EXTENT + 1e-9,
                    "{kind:?} reaches {v:?}"
                );
            }
        }
    }
    let a = random_shape(&mut ChaCha8Rng::seed_from_u64(9));
    let b = random_shape(&mut ChaCha8Rng::seed_from_u64(9));
    assert_eq!(a, b);
}

#[test]
fn voxelized_sphere_has_its_volume() {
    let sphere = Sdf::Sphere {
        center: Vec3::default(),
        radius: 0.3,
    };
    let grid = voxelize_sdf(&sphere, 32).unwrap();
    let expected = 4.0 / 3.0 * std::f64::consts::PI * 0.3f64.powi(3) * 32f64.powi(3);
    let got = grid.occupied_count() as f64;
    assert!(
        (got / expected - 1.0).abs() < 0.05,
        "{got} voxels, expected {expected}"
    );
    assert_eq!(grid.world_position(0, 0, 0), [-0.5 + 0.5 / 32.0; 3]);
    assert!(matches!(voxelize_sdf(&sphere, 0), Err(GenError::Config(_))));
    let flat = Sdf::Sphere {
        center: Vec3::default(),
        radius: -0.1,
    };
    assert!(matches!(voxelize_sdf(&flat, 8), Err(GenError::Shape(_))));
}

/// The superquadric's distance bound voxelises to Barr's volume: 4πabc/3 for the ellipsoid
/// (ε = 1), 4abc/3 for the octahedron (ε = 2).
#[test]
fn voxelized_superquadrics_have_their_volume() {
    let (a, b, c) = (0.4, 0.3, 0.35);
    for (e, volume) in [
        (1.0, 4.0 / 3.0 * std::f64::consts::PI * a * b * c),
        (2.0, 4.0 / 3.0 * a * b * c),
    ] {
        let shape = Sdf::Superquadric {
            center: Vec3::default(),
            scale: Vec3::new(a, b, c),
            e1: e,
            e2: e,
        };
        let got = voxelize_sdf(&shape, 48).unwrap().occupied_count() as f64;
        let expected = volume * 48f64.powi(3);
        assert!(
            (got / expected - 1.0).abs() < 0.03,
            "ε {e}: {got} voxels, expected {expected}"
        );
    }
}

#[test]
fn rendernet_camera_sees_what_the_resampled_grid_holds() {
    // Shapes without symmetries, so a mirrored or turned camera would not match; the
    // superquadric is sphere traced on its distance bound.
    let union = Sdf::Union(
        Box::new(Sdf::Box {
            center: Vec3::new(-0.1, 0.05, 0.1),
            half: Vec3::new(0.25, 0.12, 0.08),
        }),
        Box::new(Sdf::Sphere {
            center: Vec3::new(0.2, -0.15, -0.1),
            radius: 0.17,
        }),
    );
    let superquadric = Sdf::Superquadric {
        center: Vec3::new(0.1, -0.05, 0.08),
        scale: Vec3::new(0.3, 0.12, 0.2),
        e1: 0.3,
        e2: 1.6,
    };
    for shape in [union, superquadric] {
        camera_matches_resampled_grid(&shape);
    }
}

fn camera_matches_resampled_grid(shape: &Sdf) {
    let (v, n) = (16, 32);
    let grid = voxelize_sdf(shape, v).unwrap();
    let voxels = grid
        .to_tensor(&Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .reshape((1, 1, v, v, v))
        .unwrap();
    for (az, el, r) in [(0.0, 90.0, 3.3), (35.0, 110.0, 3.0), (250.0, 100.0, 3.8)] {
        let pose = RenderNetPose {
            azimuth_deg: az,
            elevation_deg: el,
            radius: r,
        };
        let params = view_params_tensor(&[pose], &Device::Cpu).unwrap();
        let cfg = ResampleConfig {
            out_size: n,
            drop_last_slice: false,
        };
        let aligned = align_to_image(&resample_to_camera(&voxels, &params, &cfg).unwrap()).unwrap();
        // [1, 1, rows, cols, depth] → the mask of columns holding any occupancy ≥ ½.
        let projected = projection_mask(&aligned, 4);
        let camera = rendernet_camera(&pose, v, n, n).unwrap();
        let scene = Scene::new(Object::Surface(Box::new(shape.clone())));
        let outputs = Outputs {
            shaded: false,
            silhouette: true,
            ..Outputs::SHADED
        };
        let frame = render(&scene, &camera, outputs).unwrap();
        let silhouette: Vec<bool> = frame
            .silhouette
            .unwrap()
            .data
            .iter()
            .map(|&x| x > 0.5)
            .collect();
        let overlap = iou(&projected, &silhouette);
        assert!(overlap > 0.8, "{shape:?} pose {az}/{el}/{r}: IoU {overlap}");
    }
}

#[test]
fn rendernet_samples_are_deterministic_and_named_by_pose() {
    let cfg = tiny_rendernet();
    let (a, grid_a) = rendernet_sample(&cfg, 3).unwrap();
    let (b, grid_b) = rendernet_sample(&cfg, 3).unwrap();
    assert_eq!(a.image, b.image);
    assert_eq!(grid_a, grid_b);
    assert_eq!(a.shape, 1);
    assert_eq!(a.image.channels, 1);
    assert!(a.image.data.iter().any(|&x| x > 0.2), "the shape shows");
    let (other, _) = rendernet_sample(
        &RenderNetGenConfig {
            seed: 12,
            ..cfg.clone()
        },
        3,
    )
    .unwrap();
    assert_ne!(a.image, other.image);
    let name = pose_name(&a.pose);
    assert_eq!(
        name,
        format!(
            "p{}_t{}_r{:.1}",
            a.pose.azimuth_deg, a.pose.elevation_deg, a.pose.radius
        )
    );
    assert!((90.0..=120.0).contains(&a.pose.elevation_deg));
    let normals = RenderNetGenConfig {
        target: RenderNetTarget::Normal,
        ..cfg
    };
    let (n, _) = rendernet_sample(&normals, 3).unwrap();
    assert_eq!(n.image.channels, 3);
    assert_eq!(n.pose, a.pose);
}

#[test]
fn rendernet_dataset_reads_back_with_poses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_rendernet();
    let mut seen = Vec::new();
    let summary = write_rendernet(&cfg, dir.path(), |done| seen.push(done)).unwrap();
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert_eq!((summary.samples, summary.chunks), (5, 2));
    let shape = BinvoxGrid::read(dir.path().join("shapes/shape_0002.binvox")).unwrap();
    assert_eq!(shape.dims(), [16; 3]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(SAMPLES_FILE)).unwrap()).unwrap();
    let samples = index["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    let (first, grid) = rendernet_sample(&cfg, 4).unwrap();
    assert_eq!(samples[4]["pose"], pose_name(&first.pose));
    assert_eq!(grid, shape);

    let data = ChunkedDataset::open(
        dir.path(),
        DatasetConfig {
            batch_size: 5,
            shuffle: false,
            ..DatasetConfig::default()
        },
    )
    .unwrap();
    let batch = data.epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.inputs.dims(), &[5, 1, 16, 16, 16]);
    assert_eq!(batch.targets.dims(), &[5, 1, 32, 32]);
    let (name, poses) = &batch.extra[0];
    assert_eq!(name, POSES_FIELD);
    let want = view_params_tensor(&[first.pose], &Device::Cpu).unwrap();
    let got = poses.get(4).unwrap().unsqueeze(0).unwrap();
    assert_eq!(
        got.to_vec2::<f32>().unwrap(),
        want.to_vec2::<f32>().unwrap()
    );
    let target = batch.targets.get(4).unwrap();
    let image = first.image.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(
        (target - image)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn convdeconv_grid_lies_under_its_render() {
    let cfg = ConvDeconvGenConfig {
        ground: false,
        ..tiny_convdeconv()
    };
    for index in 0..3 {
        let sample = convdeconv_sample(&cfg, index).unwrap();
        assert!((1.0..=1.8).contains(&sample.distance));
        let s = cfg.grid_size;
        let volume = Tensor::from_vec(sample.volume.clone(), (s, s, s), &Device::Cpu).unwrap();
        let projected = projection_mask(&volume, 0);
        // Black background, ambient light on the shape.
        let lit: Vec<bool> = sample.image.data.iter().map(|&x| x > 0.02).collect();
        let overlap = iou(&projected, &lit);
        assert!(
            overlap > 0.75,
            "sample {index} ({:?}): IoU {overlap}",
            sample.kind
        );
    }
    let again = convdeconv_sample(&cfg, 1).unwrap();
    assert_eq!(again.image, convdeconv_sample(&cfg, 1).unwrap().image);
}

#[test]
fn convdeconv_dataset_uses_voxelneuralrender_files_and_materials_differ() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_convdeconv();
    let summary = write_convdeconv(&cfg, dir.path(), |_| {}).unwrap();
    assert_eq!((summary.samples, summary.chunks), (3, 2));
    assert!(dir.path().join("volume_samples_001.npz").exists());
    assert!(dir.path().join("image_samples_001.npz").exists());
    let data = ChunkedDataset::open(
        dir.path(),
        DatasetConfig {
            batch_size: 2,
            shuffle: false,
            validation: ValidationSplit::Chunks(1),
            ..DatasetConfig::default()
        },
    )
    .unwrap();
    assert_eq!(data.train_samples() + data.validation_samples(), 3);
    let batch = data.epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.inputs.dims()[1..], [1, 16, 16, 16]);
    assert_eq!(batch.targets.dims()[1..], [16, 16, 1]);

    let diffuse = convdeconv_sample(&cfg, 0).unwrap();
    let mirror = ConvDeconvGenConfig {
        material: MaterialKind::Reflective,
        ..cfg.clone()
    };
    let glass = ConvDeconvGenConfig {
        material: MaterialKind::Clear,
        ..cfg.clone()
    };
    let mirror = convdeconv_sample(&mirror, 0).unwrap();
    let glass = convdeconv_sample(&glass, 0).unwrap();
    assert_eq!(diffuse.volume, mirror.volume);
    assert_ne!(diffuse.image, mirror.image);
    assert_ne!(diffuse.image, glass.image);
}

#[test]
fn bad_settings_are_refused() {
    let zero = RenderNetGenConfig {
        count: 0,
        ..tiny_rendernet()
    };
    assert!(matches!(
        rendernet_sample(&zero, 0),
        Err(GenError::Config(_))
    ));
    let far = ConvDeconvGenConfig {
        distance: [2.0, 1.0],
        ..tiny_convdeconv()
    };
    assert!(matches!(
        convdeconv_sample(&far, 0),
        Err(GenError::Config(_))
    ));
    let pose = RenderNetPose {
        azimuth_deg: 0.0,
        elevation_deg: 90.0,
        radius: 0.0,
    };
    assert!(rendernet_camera(&pose, 16, 32, 32).is_err());
}

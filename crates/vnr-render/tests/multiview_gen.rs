//! Procedural multi-view datasets: per-shape colours, camera poses, the NeRF-synthetic round
//! trip, determinism and refused settings.

use candle_core::{DType, Tensor};
use vnr_render::multiview::{orbit_camera_to_world, MultiViewDataset, Split};
use vnr_render::reference::{render, Camera, Outputs, Projection, Vec3};
use vnr_render::scenes::{
    camera_to_world, generate_multiview, MultiViewGenConfig, ProceduralScene, SceneError,
};

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn small_config() -> MultiViewGenConfig {
    MultiViewGenConfig {
        train_views: 3,
        val_views: 2,
        test_views: 2,
        resolution: 24,
        ..MultiViewGenConfig::default()
    }
}

#[test]
fn each_shape_keeps_its_own_colour() {
    let scene = ProceduralScene::named("shapes", 0)
        .unwrap()
        .to_scene([0.0; 3]);
    let camera = Camera::orbit(
        20.0,
        15.0,
        4.0,
        Vec3::default(),
        Projection::Perspective { fov_y_deg: 40.0 },
        48,
        48,
    )
    .unwrap();
    let albedo = render(&scene, &camera, Outputs::ALL)
        .unwrap()
        .albedo
        .unwrap();
    let mut seen: Vec<[u8; 3]> = Vec::new();
    for px in albedo.data.chunks_exact(3) {
        let key = [0, 1, 2].map(|c| (px[c] * 100.0).round() as u8);
        if key != [0; 3] && !seen.contains(&key) {
            seen.push(key);
        }
    }
    // Red sphere, green box, blue torus, yellow capsule.
    for colour in [[85, 15, 10], [15, 70, 20], [15, 30, 90], [95, 80, 10]] {
        assert!(seen.contains(&colour), "{colour:?} not in {seen:?}");
    }
}

#[test]
fn poses_follow_the_pytorch3d_orbit() {
    for (azimuth, elevation) in [(0.0, 0.0), (37.0, 20.0), (200.0, -45.0)] {
        let camera = Camera::orbit(
            azimuth,
            elevation,
            3.5,
            Vec3::default(),
            Projection::default(),
            8,
            8,
        )
        .unwrap();
        let ours = camera_to_world(&camera);
        let theirs = values(&orbit_camera_to_world(3.5, &[elevation], &[azimuth]).unwrap());
        for (a, b) in ours.iter().flatten().zip(&theirs) {
            assert!((*a as f32 - b).abs() < 1e-5, "{ours:?} vs {theirs:?}");
        }
    }
}

#[test]
fn dataset_rays_are_the_rendered_rays() {
    let views = generate_multiview(&small_config()).unwrap();
    let data = &views.train.dataset;
    // The ray of pixel (u, v) of a frame, pushed to the distance of the pixel's depth, must be
    // where the camera looking from the same pose renders it: compare directions with the
    // reference camera rebuilt from the pose.
    let pose = values(&data.camera_to_world.get(1).unwrap());
    let eye = Vec3::new(pose[3] as f64, pose[7] as f64, pose[11] as f64);
    let camera = Camera::look_at(
        eye,
        Vec3::default(),
        Vec3::new(0.0, 1.0, 0.0),
        Projection::Perspective { fov_y_deg: 40.0 },
        24,
        24,
    )
    .unwrap();
    for (u, v) in [(0, 0), (5, 17), (23, 23), (12, 3)] {
        let (origin, dir) = data.ray(1, u, v).unwrap();
        let reference = camera.ray(u as f64 + 0.5, v as f64 + 0.5);
        let dir = Vec3::new(dir[0] as f64, dir[1] as f64, dir[2] as f64).normalized();
        assert!((dir - reference.dir).length() < 1e-5, "pixel ({u}, {v})");
        assert!(
            (Vec3::new(origin[0] as f64, origin[1] as f64, origin[2] as f64) - eye).length() < 1e-5
        );
    }
}

#[test]
fn written_dataset_reads_back_with_alpha_and_silhouettes() {
    let config = small_config();
    let views = generate_multiview(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    views.write(dir.path()).unwrap();
    assert!(dir.path().join("generator.json").is_file());
    for split in [Split::Train, Split::Val, Split::Test] {
        let original = &views.split(split).dataset;
        let back = MultiViewDataset::read_blender(dir.path(), split, [1.0; 3]).unwrap();
        assert_eq!(back.len(), original.len());
        assert_eq!(back.intrinsics.width, 24);
        let (a, b) = (values(&original.images), values(&back.images));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1.5 / 255.0, "{split:?}: colours differ by {worst}");
        let alpha = values(back.alpha.as_ref().unwrap());
        assert!(alpha.contains(&0.0) && alpha.contains(&1.0));
        let cams = (
            values(&original.camera_to_world),
            values(&back.camera_to_world),
        );
        assert_eq!(cams.0, cams.1);
        assert!(dir
            .path()
            .join(format!("{}/r_0_silhouette.png", split.as_str()))
            .is_file());
    }
    // Without a ground plane the silhouette is the alpha.
    let train = &views.train;
    assert_eq!(
        values(&train.silhouettes),
        values(train.dataset.alpha.as_ref().unwrap())
    );
}

#[test]
fn generation_is_deterministic_and_seeded() {
    let config = MultiViewGenConfig {
        scene: "random".into(),
        ground: true,
        ..small_config()
    };
    let a = generate_multiview(&config).unwrap();
    let b = generate_multiview(&config).unwrap();
    assert_eq!(
        values(&a.test.dataset.images),
        values(&b.test.dataset.images)
    );
    let other = generate_multiview(&MultiViewGenConfig { seed: 1, ..config }).unwrap();
    assert_ne!(
        values(&a.test.dataset.images),
        values(&other.test.dataset.images)
    );
    // Train and test views differ.
    assert_ne!(
        values(&a.train.dataset.camera_to_world.get(0).unwrap()),
        values(&a.test.dataset.camera_to_world.get(0).unwrap())
    );
    // The ground covers pixels the object does not.
    let alpha = values(a.train.dataset.alpha.as_ref().unwrap());
    let silhouette = values(&a.train.silhouettes);
    assert!(alpha.iter().zip(&silhouette).any(|(a, s)| a > s));
}

#[test]
fn bad_settings_are_refused() {
    assert!(matches!(
        generate_multiview(&MultiViewGenConfig {
            scene: "teapot".into(),
            ..small_config()
        }),
        Err(SceneError::UnknownScene(_))
    ));
    for config in [
        MultiViewGenConfig {
            resolution: 0,
            ..small_config()
        },
        MultiViewGenConfig {
            test_views: 0,
            ..small_config()
        },
        MultiViewGenConfig {
            camera_distance: 1.0,
            ..small_config()
        },
        MultiViewGenConfig {
            elevation_deg: [30.0, -10.0],
            ..small_config()
        },
        MultiViewGenConfig {
            supersample: 99,
            ..small_config()
        },
    ] {
        assert!(
            matches!(generate_multiview(&config), Err(SceneError::BadConfig(_))),
            "{config:?}"
        );
    }
}

#[test]
fn splits_too_large_to_allocate_are_config_errors_not_aborts() {
    // Each value within its own limit, but the train split's colours would be 10⁴·4096²·3
    // floats (2 TB), which aborted the process when allocated.
    let config = MultiViewGenConfig {
        resolution: 4096,
        train_views: 10_000,
        supersample: 1,
        ..Default::default()
    };
    let err = generate_multiview(&config).unwrap_err();
    assert!(matches!(err, SceneError::BadConfig(_)), "{err}");
    assert!(err.to_string().contains("train_views 10000"), "{err}");
}

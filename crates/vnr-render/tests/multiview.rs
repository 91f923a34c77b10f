//! Multi-view datasets: NeRF-synthetic and nerfstudio layouts, cameras and rays.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_render::cameras::{cameras_from_blender, Camera};
use vnr_render::multiview::{Intrinsics, MultiViewDataset, MultiViewError, Split};

/// Camera-to-world matrix (OpenGL axes) of a camera at `eye` looking at the origin, +Y up.
fn look_at_origin(eye: [f64; 3]) -> [[f64; 4]; 4] {
    let norm = |v: [f64; 3]| {
        let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        v.map(|x| x / l)
    };
    let cross = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let forward = norm(eye.map(|x| -x));
    let right = norm(cross(forward, [0.0, 1.0, 0.0]));
    let up = cross(right, forward);
    let mut m = [[0.0; 4]; 4];
    for r in 0..3 {
        m[r] = [right[r], up[r], -forward[r], eye[r]];
    }
    m[3] = [0.0, 0.0, 0.0, 1.0];
    m
}

fn poses(n: usize) -> Tensor {
    let data: Vec<f32> = (0..n)
        .flat_map(|i| {
            let a = i as f64 * 1.3 + 0.2;
            let m = look_at_origin([3.0 * a.cos(), 0.7 + 0.3 * i as f64, 3.0 * a.sin()]);
            m.into_iter()
                .flatten()
                .map(|v| v as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    Tensor::from_vec(data, (n, 4, 4), &Device::Cpu).unwrap()
}

fn synthetic_dataset(n: usize, w: usize, h: usize) -> MultiViewDataset {
    let pixels: Vec<f32> = (0..n * h * w * 3)
        .map(|i| ((i * 37 + 11) % 256) as f32 / 255.0)
        .collect();
    let images = Tensor::from_vec(pixels, (n, h, w, 3), &Device::Cpu).unwrap();
    let intrinsics = Intrinsics::from_camera_angle_x(0.69, w, h);
    MultiViewDataset::new(Split::Train, images, None, poses(n), intrinsics).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn blender_layout_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let original = synthetic_dataset(3, 8, 6);
    original.write_blender(dir.path()).unwrap();
    assert!(dir.path().join("transforms_train.json").exists());
    assert!(dir.path().join("train/r_2.png").exists());
    let back = MultiViewDataset::read_blender(dir.path(), Split::Train, [1.0; 3]).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back.file_paths, original.file_paths);
    assert!(back.alpha.is_none());
    // Colours were k/255 values: 8-bit PNG is exact.
    assert!(max_abs_diff(&back.images, &original.images) < 1e-6);
    assert_eq!(
        back.camera_to_world.to_vec3::<f32>().unwrap(),
        original.camera_to_world.to_vec3::<f32>().unwrap()
    );
    let (a, b) = (back.intrinsics, original.intrinsics);
    assert_eq!((a.width, a.height), (b.width, b.height));
    assert!((a.fx - b.fx).abs() < 1e-9 && (a.cx - b.cx).abs() < 1e-12);
    let (ca, cb) = (back.cameras().unwrap(), original.cameras().unwrap());
    assert!(max_abs_diff(&ca.r, &cb.r) < 1e-7);
    assert!(max_abs_diff(&ca.t, &cb.t) < 1e-6);
    assert!(max_abs_diff(&ca.focal_length, &cb.focal_length) < 1e-6);
}

/// Our cameras agree with `cameras_from_blender`, and each ray goes through its pixel centre
/// when projected back with those cameras.
#[test]
fn cameras_match_blender_conversion_and_rays_project_to_pixel_centres() {
    let data = synthetic_dataset(2, 10, 7);
    let cameras = data.cameras().unwrap();
    let angle = data.intrinsics.camera_angle_x().unwrap();
    let reference = cameras_from_blender(&data.camera_to_world, angle, data.image_size()).unwrap();
    assert!(max_abs_diff(&cameras.r, &reference.r) < 1e-5);
    assert!(max_abs_diff(&cameras.t, &reference.t) < 1e-5);
    assert!(max_abs_diff(&cameras.focal_length, &reference.focal_length) < 1e-5);
    assert!(max_abs_diff(&cameras.principal_point, &reference.principal_point) < 1e-6);

    for (frame, u, v) in [(0, 0, 0), (0, 9, 6), (1, 3, 4), (1, 7, 1)] {
        let (o, d) = data.ray(frame, u, v).unwrap();
        let point: Vec<f32> = (0..3).map(|i| o[i] + 2.5 * d[i]).collect();
        let points = Tensor::from_vec(point, (1, 1, 3), &Device::Cpu).unwrap();
        let single = vnr_render::cameras::PerspectiveCameras {
            r: cameras.r.narrow(0, frame, 1).unwrap(),
            t: cameras.t.narrow(0, frame, 1).unwrap(),
            focal_length: cameras.focal_length.narrow(0, frame, 1).unwrap(),
            principal_point: cameras.principal_point.narrow(0, frame, 1).unwrap(),
            in_ndc: true,
            image_size: Some(vec![data.image_size()]),
        };
        let screen = single
            .transform_points_screen(&points, &[data.image_size()], None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            (screen[0] - (u as f32 + 0.5)).abs() < 1e-3,
            "{screen:?} vs ({u}, {v})"
        );
        assert!(
            (screen[1] - (v as f32 + 0.5)).abs() < 1e-3,
            "{screen:?} vs ({u}, {v})"
        );
    }
}

#[test]
fn ray_sampling_is_seeded_and_colours_match_pixels() {
    let data = synthetic_dataset(3, 5, 4);
    let a = data
        .sample_rays(64, &mut ChaCha8Rng::seed_from_u64(7))
        .unwrap();
    let b = data
        .sample_rays(64, &mut ChaCha8Rng::seed_from_u64(7))
        .unwrap();
    assert_eq!(
        a.colours.to_vec2::<f32>().unwrap(),
        b.colours.to_vec2::<f32>().unwrap()
    );
    assert_eq!(
        a.directions.to_vec2::<f32>().unwrap(),
        b.directions.to_vec2::<f32>().unwrap()
    );
    let full = data.image_rays(2).unwrap();
    assert_eq!(full.origins.dims(), [20, 3]);
    let want = data.images.get(2).unwrap().reshape((20, 3)).unwrap();
    assert_eq!(max_abs_diff(&full.colours, &want), 0.0);
    assert!(data.image_rays(3).is_err());
}

/// Ray counts too large to allocate are errors, not capacity overflows or aborts.
#[test]
fn huge_ray_counts_are_errors_not_overflows() {
    let data = synthetic_dataset(2, 5, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for count in [usize::MAX, usize::MAX / 2 + 1, 1 << 40] {
        assert!(matches!(
            data.sample_rays(count, &mut rng),
            Err(MultiViewError::Candle(_))
        ));
    }
}

/// `intrinsics` is public: sizes changed after construction no longer match the pixels and are
/// errors (they overflowed, divided by zero or indexed past the pixels).
#[test]
fn intrinsics_changed_after_construction_are_errors_not_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (width, height) in [(usize::MAX, 4), (usize::MAX / 2 + 1, 2), (0, 4), (10, 4)] {
        let mut data = synthetic_dataset(2, 5, 4);
        data.intrinsics.width = width;
        data.intrinsics.height = height;
        assert!(matches!(
            data.image_rays(0),
            Err(MultiViewError::Invalid(_))
        ));
        assert!(matches!(
            data.sample_rays(8, &mut rng),
            Err(MultiViewError::Invalid(_))
        ));
        assert!(matches!(
            data.rays_for_pixels(&[0, 39]),
            Err(MultiViewError::Invalid(_))
        ));
    }
}

/// Minimal RGBA PNG encoder (stored deflate blocks) for test inputs with alpha.
fn write_rgba_png(path: &std::path::Path, w: usize, h: usize, rgba: &[u8]) {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for row in rgba.chunks(w * 4) {
        raw.push(0u8);
        raw.extend_from_slice(row);
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend((w as u32).to_be_bytes());
    ihdr.extend((h as u32).to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

/// A `transforms_val.json` as the NeRF-synthetic files have it (extra `rotation` fields,
/// `./val/r_N` paths without extension), RGBA frames composited on white.
#[test]
fn reads_nerf_synthetic_json_and_composites_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{
    "camera_angle_x": 0.6911112070083618,
    "frames": [
        {
            "file_path": "./val/r_0",
            "rotation": 0.012566370614359171,
            "transform_matrix": [
                [-0.963964581489563, -0.2611401677131653, 0.0507759265601635, 0.2046843022108078],
                [0.26603081822395325, -0.9462433457374573, 0.18398693203926086, 0.7416750192642212],
                [0.0, 0.1908649355173111, 0.9816163182258606, 3.957016706466675],
                [0.0, 0.0, 0.0, 1.0]
            ]
        },
        {
            "file_path": "./val/r_1",
            "rotation": 0.012566370614359171,
            "transform_matrix": [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 4.0],
                [0.0, 0.0, 0.0, 1.0]
            ]
        }
    ]
}"#;
    std::fs::write(dir.path().join("transforms_val.json"), json).unwrap();
    std::fs::create_dir(dir.path().join("val")).unwrap();
    // Pixel 0: opaque red; pixel 1: transparent (black); pixel 2: half-covered green.
    let rgba = [255, 0, 0, 255, 0, 0, 0, 0, 0, 255, 0, 128, 10, 20, 30, 255];
    for i in 0..2 {
        write_rgba_png(&dir.path().join(format!("val/r_{i}.png")), 2, 2, &rgba);
    }
    let data = MultiViewDataset::read_blender(dir.path(), Split::Val, [1.0; 3]).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.file_paths[0], "./val/r_0");
    let i = data.intrinsics;
    let focal = 2.0 / (2.0 * (0.6911112070083618f64 / 2.0).tan());
    assert!((i.fx - focal).abs() < 1e-12 && (i.fy - focal).abs() < 1e-12);
    assert_eq!((i.cx, i.cy), (1.0, 1.0));
    let image = data.images.get(0).unwrap().to_vec3::<f32>().unwrap();
    let half = 128.0 / 255.0;
    assert_eq!(image[0][0], [1.0, 0.0, 0.0]);
    assert_eq!(image[0][1], [1.0, 1.0, 1.0]);
    for (got, want) in image[1][0].iter().zip([1.0 - half, 1.0, 1.0 - half]) {
        assert!((got - want).abs() < 1e-6, "{:?}", image[1][0]);
    }
    let alpha = data.alpha.as_ref().unwrap().get(1).unwrap();
    assert_eq!(
        alpha.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [1.0, 0.0, half, 1.0]
    );
    // The second camera sits at z = 4 looking down −Z; pixel (1, 1) is half a pixel right of
    // and below the principal point (1, 1).
    let (o, d) = data.ray(1, 1, 1).unwrap();
    assert_eq!(o, [0.0, 0.0, 4.0]);
    let want = [0.5 / focal, -0.5 / focal, -1.0];
    for (g, w) in d.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{d:?}");
    }
    // Black background composites transparent pixels to black.
    let black = MultiViewDataset::read_blender(dir.path(), Split::Val, [0.0; 3]).unwrap();
    assert_eq!(
        black.images.get(0).unwrap().to_vec3::<f32>().unwrap()[0][1],
        [0.0; 3]
    );
}

#[test]
fn reads_nerfstudio_transforms_with_splits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("images")).unwrap();
    let rgba: Vec<u8> = (0..4 * 3 * 4).map(|i| (i * 5) as u8 | 0x80).collect();
    for name in ["a", "b", "c"] {
        write_rgba_png(&dir.path().join(format!("images/{name}.png")), 4, 3, &rgba);
    }
    let frame = |name: &str, z: f64| {
        format!(
            r#"{{"file_path": "images/{name}.png", "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,{z}],[0,0,0,1]]}}"#
        )
    };
    let json = format!(
        r#"{{"camera_model": "OPENCV", "fl_x": 5.0, "fl_y": 6.0, "cx": 1.5, "cy": 1.25,
            "w": 4, "h": 3, "k1": 0.0,
            "frames": [{}, {}, {}],
            "train_filenames": ["images/a.png", "images/c.png"],
            "val_filenames": ["images/b.png"]}}"#,
        frame("a", 3.0),
        frame("b", 4.0),
        frame("c", 5.0)
    );
    std::fs::write(dir.path().join("transforms.json"), json).unwrap();
    let train = MultiViewDataset::read_nerfstudio(dir.path(), Split::Train, [1.0; 3]).unwrap();
    assert_eq!(train.file_paths, ["images/a.png", "images/c.png"]);
    assert_eq!(
        train.intrinsics,
        Intrinsics {
            fx: 5.0,
            fy: 6.0,
            cx: 1.5,
            cy: 1.25,
            width: 4,
            height: 3
        }
    );
    assert_eq!(train.intrinsics.camera_angle_x(), None);
    let (o, d) = train.ray(1, 0, 0).unwrap();
    assert_eq!(o, [0.0, 0.0, 5.0]);
    let want = [(0.5 - 1.5) / 5.0, -(0.5 - 1.25) / 6.0, -1.0];
    for (g, w) in d.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{d:?}");
    }
    let val =
        MultiViewDataset::read_nerfstudio(dir.path().join("transforms.json"), Split::Val, [1.0; 3])
            .unwrap();
    assert_eq!(val.len(), 1);
    // No test list: every frame.
    let test = MultiViewDataset::read_nerfstudio(dir.path(), Split::Test, [1.0; 3]).unwrap();
    assert_eq!(test.len(), 3);
    // Non-Blender intrinsics cannot be written in the Blender layout.
    assert!(matches!(
        train.write_blender(dir.path().join("out")),
        Err(MultiViewError::Invalid(_))
    ));
    // Cameras from general intrinsics project rays back through their pixel centres.
    let cameras = train.cameras().unwrap();
    let (o, d) = train.ray(0, 3, 2).unwrap();
    let p: Vec<f32> = (0..3).map(|i| o[i] + 2.0 * d[i]).collect();
    let screen = cameras
        .transform_points_screen(
            &Tensor::from_vec(p, (1, 3), &Device::Cpu).unwrap(),
            &[train.image_size()],
            None,
        )
        .unwrap()
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!((screen[0] - 3.5).abs() < 1e-3 && (screen[1] - 2.5).abs() < 1e-3);
}

#[test]
fn errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transforms_test.json");
    let cases = [
        (r#"{"frames": []}"#, "camera_angle_x"),
        (r#"{"camera_angle_x": 0.5}"#, "frames"),
        (
            r#"{"camera_angle_x": 0.5, "frames": [{"file_path": "./test/r_0"}]}"#,
            "frames[0].transform_matrix",
        ),
        (
            r#"{"camera_angle_x": 0.5, "frames": [{"file_path": "x", "transform_matrix": [[1,0,0]]}]}"#,
            "frames[0].transform_matrix",
        ),
        (
            r#"{"camera_angle_x": "wide", "frames": []}"#,
            "camera_angle_x",
        ),
        (r#"{"camera_angle_x": 4.0, "frames": []}"#, "camera_angle_x"),
    ];
    for (json, field) in cases {
        std::fs::write(&path, json).unwrap();
        let err = MultiViewDataset::read_blender(dir.path(), Split::Test, [1.0; 3]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(field) && message.contains("transforms_test.json"),
            "{json}: {message}"
        );
    }
    std::fs::write(&path, r#"{"camera_angle_x": 0.5, "frames": []}"#).unwrap();
    assert!(matches!(
        MultiViewDataset::read_blender(dir.path(), Split::Test, [1.0; 3]),
        Err(MultiViewError::Empty { .. })
    ));
    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(
        MultiViewDataset::read_blender(dir.path(), Split::Test, [1.0; 3]),
        Err(MultiViewError::Json { .. })
    ));
    std::fs::write(
        &path,
        r#"{"camera_angle_x": 0.5, "frames": [{"file_path": "./test/missing", "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}"#,
    )
    .unwrap();
    let err = MultiViewDataset::read_blender(dir.path(), Split::Test, [1.0; 3]).unwrap_err();
    assert!(matches!(err, MultiViewError::Image { .. }));
    assert!(err.to_string().contains("missing.png"), "{err}");
    assert!(matches!(
        MultiViewDataset::read_blender(dir.path(), Split::Train, [1.0; 3]),
        Err(MultiViewError::Io { .. })
    ));
}

//! `vnr dataset gen multiview`, driven through the built binary.

use crate::support::{path_str, vnr};

#[test]
fn multiview_writes_the_nerf_synthetic_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scene");
    let run = vnr(&[
        "dataset",
        "gen",
        "multiview",
        "--out",
        path_str(&out),
        "--views",
        "3",
        "--val-views",
        "1",
        "--test-views",
        "2",
        "--res",
        "16",
        "--seed",
        "4",
        "--scene",
        "random",
        "--supersample",
        "1",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for (split, frames) in [("train", 3), ("val", 1), ("test", 2)] {
        let text = std::fs::read_to_string(out.join(format!("transforms_{split}.json"))).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let fov = doc["camera_angle_x"].as_f64().unwrap();
        assert!((fov - 40f64.to_radians()).abs() < 1e-9);
        let listed = doc["frames"].as_array().unwrap();
        assert_eq!(listed.len(), frames);
        assert_eq!(listed[0]["transform_matrix"].as_array().unwrap().len(), 4);
        let frame = out.join(format!("{split}/r_0.png"));
        let image = vnr_formats::image::ImageF32::read_png_with_alpha(&frame).unwrap();
        assert_eq!((image.color.width, image.color.height), (16, 16));
        assert!(image.alpha.is_some(), "frames carry alpha");
        assert!(out.join(format!("{split}/r_0_silhouette.png")).is_file());
    }
    let generator: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("generator.json")).unwrap())
            .unwrap();
    assert_eq!(generator["scene"], "random");
    assert_eq!(generator["seed"], 4);
}

#[test]
fn unknown_scene_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = vnr(&[
        "dataset",
        "gen",
        "multiview",
        "--out",
        path_str(dir.path()),
        "--scene",
        "teapot",
        "--res",
        "8",
    ]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("unknown scene 'teapot'"), "{stderr}");
    assert!(!dir.path().join("transforms_train.json").exists());
}

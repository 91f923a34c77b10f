//! `vnr train plenoxels` and `vnr render-field`, driven through the built binary on a tiny
//! generated dataset.

use crate::support::{ok, path_str, vnr};
use vnr_formats::image::{read_gif, ImageF32};

const TINY: &str = r#"
data = "scene"
out = "run"
eval_every = 3
eval_views = 1
progress = false

[optimize]
resolutions = [[16, 16, 16], [24, 24, 24]]
upsample_every = 3
steps = 6
batch_rays = 300
prune = { density_threshold = 0.0 }
"#;

#[test]
fn train_then_render_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    ok(&vnr(&[
        "dataset",
        "gen",
        "multiview",
        "--out",
        path_str(&dir.path().join("scene")),
        "--views",
        "4",
        "--val-views",
        "1",
        "--test-views",
        "2",
        "--res",
        "12",
        "--supersample",
        "1",
    ]));
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    let stdout = ok(&vnr(&["train", "plenoxels", path_str(&config)]));
    assert!(stdout.contains("held-out test PSNR"), "{stdout}");
    let run = dir.path().join("run");
    let ckpt = run.join("ckpt.npz");
    assert!(ckpt.is_file());
    let resolved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    // Unset keys keep the CPU preset's values.
    assert_eq!(resolved["optimize"]["sh_degree"], 2);
    assert_eq!(resolved["optimize"]["lr_sh"]["initial"], 0.01);
    assert_eq!(resolved["optimize"]["steps"], 6);
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.iter().filter(|r| r["phase"] == "train").count(), 6);
    let validations: Vec<_> = records
        .iter()
        .filter(|r| r["phase"] == "validation")
        .collect();
    assert_eq!(validations.len(), 2);
    assert!(validations[1]["metrics"]["ssim"].is_number());

    let png = dir.path().join("view.png");
    ok(&vnr(&[
        "render-field",
        path_str(&ckpt),
        "--out",
        path_str(&png),
        "--size",
        "20",
    ]));
    let image = ImageF32::read_png(&png).unwrap();
    assert_eq!((image.width, image.height, image.channels), (20, 20, 3));
    // The corners see the white background past the object.
    assert!(image.pixel(0, 0).unwrap().iter().all(|&v| v > 0.9));

    let gif = dir.path().join("turntable.gif");
    ok(&vnr(&[
        "render-field",
        path_str(&ckpt),
        "--rotate",
        "--frames",
        "3",
        "--out",
        path_str(&gif),
        "--size",
        "16",
    ]));
    assert_eq!(read_gif(&gif).unwrap().count(), 3);
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[optimize]\nstepz = 3\n").unwrap();
    let run = vnr(&["train", "plenoxels", path_str(&config)]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("stepz"), "{stderr}");

    let missing = dir.path().join("good.json");
    std::fs::write(&missing, r#"{"data": "nowhere"}"#).unwrap();
    let run = vnr(&["train", "plenoxels", path_str(&missing)]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");

    let run = vnr(&[
        "render-field",
        path_str(&dir.path().join("absent.npz")),
        "--out",
        path_str(&dir.path().join("x.png")),
    ]);
    assert_eq!(run.status.code(), Some(2));
}

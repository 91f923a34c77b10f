//! `vnr train nerf CONFIG`, run as the built binary on a tiny dataset written in the
//! NeRF-synthetic layout.

use std::path::Path;
use std::process::Command;

use vnr_render::scenes::{generate_multiview, MultiViewGenConfig};

fn write_dataset(root: &Path) {
    generate_multiview(&MultiViewGenConfig {
        train_views: 3,
        val_views: 1,
        test_views: 1,
        resolution: 8,
        supersample: 1,
        ..MultiViewGenConfig::default()
    })
    .expect("views")
    .write(root)
    .expect("write dataset");
}

const CONFIG: &str = r#"
dataset = "scene"
output = "run"
iterations = 4
rays_per_step = 32
test_views = 1
checkpoint_every = 2
validate_every = 2
progress = false
[model]
n_harmonic_functions = 3
n_hidden_neurons = 8
[rays]
near = 2.4
far = 5.6
background = [1.0, 1.0, 1.0]
samples_per_ray = 8
"#;

#[test]
fn trains_scores_test_views_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_dataset(&dir.path().join("scene"));
    let config = dir.path().join("nerf.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_vnr"))
        .args(["train", "nerf"])
        .arg(&config)
        .output()
        .expect("run vnr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 steps"), "{stdout}");
    assert!(stdout.contains("held-out PSNR"), "{stdout}");
    let run = dir.path().join("run");
    assert!(run.join("test/r_0.png").is_file());
    assert!(run.join("checkpoints/step-00000004").is_dir());
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).expect("results"))
            .expect("json");
    assert_eq!(results["steps"], 4);
    assert!(results["test"]["mean_psnr"]
        .as_f64()
        .expect("psnr")
        .is_finite());

    // --resume extends the run to --iterations.
    let out = Command::new(env!("CARGO_BIN_EXE_vnr"))
        .args(["train", "nerf", "--resume", "--iterations", "6", "--quiet"])
        .arg(&config)
        .output()
        .expect("run vnr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 steps"));
}

#[test]
fn a_missing_dataset_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nerf.json");
    std::fs::write(&config, r#"{"dataset": "nowhere", "iterations": 1}"#).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_vnr"))
        .args(["train", "nerf"])
        .arg(&config)
        .output()
        .expect("run vnr");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(stderr.contains("transforms_train.json"), "{stderr}");
}

//! The DeepSDF workflow through the built `vnr` binary on tiny data: procedural meshes →
//! `vnr sdf sample` → `vnr train deepsdf` (and `--resume`) → `vnr sdf reconstruct` →
//! `vnr mesh` → `vnr eval chamfer`, plus clear errors for bad input.

use std::path::Path;
use std::process::{Command, Output};

use vnr_geom::procedural::{generate_class, Family};

fn vnr(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vnr"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run vnr")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = vnr(args, cwd);
    assert!(
        out.status.success(),
        "vnr {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = vnr(args, cwd);
    assert_eq!(out.status.code(), Some(2), "vnr {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SPECS: &str = r#"{
  "DataSource": "data",
  "TrainSplit": "split.json",
  "NetworkArch": "deep_sdf_decoder",
  "NetworkSpecs": {"dims": [16, 16, 16], "dropout": [0, 1], "dropout_prob": 0.1,
                   "norm_layers": [0, 1, 2], "latent_in": [2], "weight_norm": true},
  "CodeLength": 4,
  "NumEpochs": 200,
  "SnapshotFrequency": 100,
  "LearningRateSchedule": [
    {"Type": "Step", "Initial": 0.005, "Interval": 500, "Factor": 0.5},
    {"Type": "Step", "Initial": 0.01, "Interval": 500, "Factor": 0.5}],
  "SamplesPerScene": 256,
  "ScenesPerBatch": 2,
  "ClampingDistance": 1.0,
  "CodeRegularization": true,
  "CodeRegularizationLambda": 1e-4,
  "CodeBound": 1.0
}"#;

#[test]
fn deepsdf_workflow_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let meshes = root.join("meshes");
    std::fs::create_dir_all(&meshes).unwrap();
    for (name, mesh) in generate_class(Family::Capsules, 3, 24, 5).unwrap() {
        mesh.write_ply(meshes.join(format!("{name}.ply"))).unwrap();
    }
    ok(
        &[
            "sdf", "sample", "meshes", "--out", "data", "--count", "3000",
        ],
        root,
    );
    std::fs::write(
        root.join("split.json"),
        r#"{"demo": {"capsules": ["capsules-000", "capsules-001"]}}"#,
    )
    .unwrap();
    std::fs::write(root.join("specs.json"), SPECS).unwrap();

    let stdout = ok(
        &["train", "deepsdf", "specs.json", "--out", "run", "--quiet"],
        root,
    );
    assert!(stdout.contains("steps: 200"), "{stdout}");
    let run = root.join("run");
    for file in ["specs.json", "scenes.json", "log.jsonl", "loss.png"] {
        assert!(run.join(file).is_file(), "{file}");
    }
    assert!(run
        .join("checkpoints/step-00000100/model.safetensors")
        .is_file());
    let scenes = std::fs::read_to_string(run.join("scenes.json")).unwrap();
    assert!(scenes.contains("demo/capsules/capsules-000"), "{scenes}");
    // A fresh run refuses the directory; --resume extends it.
    fails(
        &["train", "deepsdf", "specs.json", "--out", "run", "--quiet"],
        root,
    );
    let stdout = ok(
        &[
            "train",
            "deepsdf",
            "specs.json",
            "--out",
            "run",
            "--quiet",
            "--resume",
            "--epochs",
            "210",
        ],
        root,
    );
    assert!(stdout.contains("steps: 210"), "{stdout}");

    ok(
        &[
            "sdf",
            "reconstruct",
            "--decoder",
            "run",
            "--samples",
            "data/SdfSamples/capsules-002.npz",
            "--iterations",
            "100",
            "--points",
            "512",
            "--resolution",
            "24",
            "--latent-out",
            "z.npy",
            "--normalization",
            "data/NormalizationParameters/capsules-002.npz",
            "--out",
            "rec.ply",
        ],
        root,
    );
    assert!(root.join("rec.ply").is_file() && root.join("z.npy").is_file());
    ok(
        &[
            "mesh",
            "--decoder",
            "run",
            "--latent",
            "z.npy",
            "--resolution",
            "20",
            "--out",
            "z.obj",
            "--device",
            "cpu",
        ],
        root,
    );
    ok(
        &[
            "mesh",
            "--decoder",
            "run/checkpoints/step-00000210",
            "--index",
            "1",
            "--resolution",
            "20",
            "--out",
            "code1.ply",
        ],
        root,
    );
    let eval = ok(
        &[
            "eval",
            "chamfer",
            "rec.ply",
            "meshes/capsules-002.ply",
            "--samples",
            "2000",
        ],
        root,
    );
    assert!(eval.contains("chamfer x1e3"), "{eval}");
}

#[test]
fn bad_deepsdf_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let err = fails(&["train", "deepsdf", "missing.json"], root);
    assert!(err.contains("missing.json"), "{err}");
    std::fs::write(root.join("specs.json"), SPECS).unwrap();
    std::fs::write(root.join("split.json"), r#"{"demo": {"c": ["nothing"]}}"#).unwrap();
    let err = fails(&["train", "deepsdf", "specs.json"], root);
    assert!(err.contains("nothing"), "{err}");
    std::fs::write(root.join("broken.npz"), b"PK garbage").unwrap();
    let err = fails(
        &[
            "sdf",
            "reconstruct",
            "--decoder",
            "nowhere",
            "--samples",
            "broken.npz",
            "--out",
            "x.ply",
        ],
        root,
    );
    assert!(err.contains("nowhere"), "{err}");
    let err = fails(
        &[
            "mesh",
            "--decoder",
            "nowhere",
            "--index",
            "0",
            "--out",
            "x.stl",
        ],
        root,
    );
    assert!(err.contains("nowhere"), "{err}");
}

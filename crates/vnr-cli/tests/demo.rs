//! `vnr demo --quick` end to end: the built binary writes the turntable, the loss plot, the
//! log and a summary that parses, and a second run into the same folder replaces them.

use std::path::Path;
use std::process::Command;

/// Runs `vnr demo --quick --out dir` and checks its files; returns the summary.
fn quick_demo(dir: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_vnr"))
        .args(["demo", "--quick", "--out"])
        .arg(dir)
        .output()
        .expect("running vnr");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "vnr demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("held-out PSNR"), "{stdout}");
    for file in ["turntable.gif", "loss.png", "log.jsonl", "summary.json"] {
        let len = std::fs::metadata(dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .len();
        assert!(len > 0, "{file} is empty");
    }
    let gif = std::fs::read(dir.join("turntable.gif")).unwrap();
    assert_eq!(&gif[..6], b"GIF89a");
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn quick_demo_writes_turntable_plot_log_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let summary = quick_demo(dir.path());
    assert_eq!(summary["steps"], 2);
    assert_eq!(summary["held_out_samples"], 4);
    for key in ["held_out_psnr_db", "mean_image_psnr_db", "seconds"] {
        let v = summary[key].as_f64().unwrap_or_else(|| panic!("{key}"));
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    // A rerun into the same folder replaces the earlier run's files and, everything being
    // drawn from the seed (data, initial weights, crops, batches), repeats the run exactly.
    let again = quick_demo(dir.path());
    for key in ["held_out_samples", "mean_image_psnr_db", "held_out_psnr_db"] {
        assert_eq!(again[key], summary[key], "{key}");
    }
}

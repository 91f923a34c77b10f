//! The CUDA kernels' arithmetic, checked on a machine without a GPU: `tools/cuda/host_check.sh`
//! compiles every `kernels/*.cu` as host C++ and runs each kernel against its definition (see
//! docs/cuda.md). Skipped, saying so, where no C++ compiler is installed.

use std::path::Path;
use std::process::Command;

#[test]
fn cuda_kernels_match_their_definitions_on_the_host() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_string());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIPPED: no C++ compiler ({cxx}) to build the kernels for the host");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/cuda/host_check.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("bash runs tools/cuda/host_check.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "host_check failed:\n{text}");
    assert!(
        text.contains(" ok"),
        "host_check printed no verdict:\n{text}"
    );
}

//! Compiles `kernels/*.cu` to PTX (one `<stem>.ptx` per file in `OUT_DIR`) when the `cuda`
//! feature is on; `src/cuda.rs` embeds them. CPU builds do nothing here and never need nvcc.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(message) = compile_kernels() {
        // A build script reports failure by exiting non-zero; the message says what to fix.
        eprintln!("vnr-ops build.rs: {message}");
        std::process::exit(1);
    }
}

fn compile_kernels() -> Result<(), String> {
    for var in ["CUDA_COMPUTE_CAP", "CUDA_HOME", "NVCC", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let kernel_dir = Path::new(&manifest_dir).join("kernels");
    println!("cargo:rerun-if-changed={}", kernel_dir.display());
    let compute_cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    if compute_cap.is_empty() || !compute_cap.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "CUDA_COMPUTE_CAP must be digits such as 90, got {compute_cap:?}"
        ));
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());

    let entries =
        std::fs::read_dir(&kernel_dir).map_err(|e| format!("{}: {e}", kernel_dir.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: {e}", kernel_dir.display()))?
            .path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("cu") | Some("cuh")) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        if ext == Some("cu") {
            sources.push(path);
        }
    }
    sources.sort();
    for source in sources {
        let stem = source
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: file name is not UTF-8", source.display()))?;
        let ptx = out_dir.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .arg("--ptx")
            .arg(format!("-arch=compute_{compute_cap}"))
            .arg("-O3")
            .arg("-std=c++17")
            .arg("-I")
            .arg(&kernel_dir)
            .arg("-o")
            .arg(&ptx)
            .arg(&source)
            .status()
            .map_err(|e| format!("cannot run {nvcc} (source tools/cuda/env.sh to get one): {e}"))?;
        if !status.success() {
            return Err(format!("{nvcc} failed on {} ({status})", source.display()));
        }
    }
    Ok(())
}

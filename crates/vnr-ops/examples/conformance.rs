//! Runs golden conformance cases (see `vnr_ops::conformance` and `tools/golden/README.md`).
//!
//! ```text
//! cargo run --release -p vnr-ops --example conformance -- DIR_OR_FILES...
//! ```
//! Prints one line per case, then `N passed, M failed`; exits with 1 if any case failed or could
//! not be read, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use vnr_ops::conformance::run_paths;

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: conformance DIR_OR_FILE.npz...");
        eprintln!("runs every *.npz case under each directory (sorted) and each file given");
        return ExitCode::from(2);
    }
    let reports = run_paths(&paths);
    let mut failed = 0usize;
    for report in &reports {
        println!("{report}");
        if !report.passed() {
            failed += 1;
        }
    }
    println!("{} passed, {failed} failed", reports.len() - failed);
    if failed == 0 && !reports.is_empty() {
        ExitCode::SUCCESS
    } else {
        if reports.is_empty() {
            eprintln!("no *.npz cases found");
        }
        ExitCode::FAILURE
    }
}

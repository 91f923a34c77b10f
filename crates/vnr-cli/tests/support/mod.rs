//! Helpers shared by the tests that drive the built `vnr` binary.
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `vnr` binary with `args` and collects its output.
pub fn vnr<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vnr"))
        .args(args)
        .output()
        .expect("the vnr binary runs")
}

/// [`vnr`] for argument lists that mix strings and paths.
pub fn vnr_mixed(args: &[&dyn AsRef<OsStr>]) -> Output {
    vnr(args)
}

/// A temporary path as `&str` (they are UTF-8 here).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Standard output, lossily decoded.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error, lossily decoded.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run succeeded (printing both streams if not) and returns its stdout.
pub fn ok(run: &Output) -> String {
    assert!(
        run.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(run),
        stderr(run)
    );
    stdout(run)
}

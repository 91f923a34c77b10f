//! Locating the shared real-world fixtures that tests read (never copied into the repository).
//!
//! The folder is `$VNR_FIXTURES`, else `../shared/fixtures` beside the workspace. When it is
//! absent a test calling [`fixture`] prints a clear `SKIPPED` line and gets `None`, unless
//! `VNR_REQUIRE_FIXTURES=1` (set by `.ci/run`), in which case a missing fixture is a failure.

use std::path::PathBuf;

/// The fixtures folder, if it exists.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("VNR_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    dir.is_dir().then_some(dir)
}

/// Path of fixture `relative` (e.g. `"vdb/cortex-sphere.vdb"`), or `None` after printing why the
/// calling test is skipped.
///
/// # Panics
/// When the fixture is missing and `VNR_REQUIRE_FIXTURES=1`: CI must never skip silently.
pub fn fixture(relative: &str) -> Option<PathBuf> {
    let found = fixtures_dir()
        .map(|d| d.join(relative))
        .filter(|p| p.exists());
    if found.is_none() {
        let msg = format!("fixture {relative} not found (set VNR_FIXTURES to the fixtures folder)");
        if std::env::var("VNR_REQUIRE_FIXTURES").as_deref() == Ok("1") {
            panic!("{msg}, and VNR_REQUIRE_FIXTURES=1");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

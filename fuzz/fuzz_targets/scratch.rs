//! A per-process scratch file for readers that only take paths.

use std::path::{Path, PathBuf};

/// A file holding one fuzz input, removed on drop. It lives in `/dev/shm` (RAM) when that
/// exists, and its name carries the process id so parallel fuzzing jobs never share one.
pub struct ScratchFile(PathBuf);

impl ScratchFile {
    /// Writes `data` to the scratch file named `tag` (e.g. `npy`, used as its extension too).
    pub fn new(tag: &str, data: &[u8]) -> std::io::Result<Self> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("vnr-fuzz-{}-{tag}.{tag}", std::process::id()));
        std::fs::write(&path, data)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

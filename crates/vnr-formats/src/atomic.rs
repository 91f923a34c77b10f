//! Writing files so that a crash never leaves a half-written file under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `path` through a temporary file in the same directory, then renames it into place.
///
/// `write` receives a buffered writer; if it fails, or the process dies before the rename,
/// `path` keeps its previous contents (or stays absent) and the temporary file is removed.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("hello.txt");
/// vnr_formats::atomic::write_atomically(&path, |w| {
///     use std::io::Write;
///     w.write_all(b"hello")
/// })?;
/// assert_eq!(std::fs::read(&path)?, b"hello");
/// # Ok(()) }
/// ```
pub fn write_atomically<E, F>(path: impl AsRef<Path>, write: F) -> Result<(), E>
where
    E: From<std::io::Error>,
    F: FnOnce(&mut BufWriter<&mut File>) -> Result<(), E>,
{
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".vnr-partial-");
    if let Some(permissions) = final_permissions(path) {
        builder.permissions(permissions);
    }
    let mut tmp = builder.tempfile_in(dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        write(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The permissions the file ends up with: those of the file it replaces, else (on Unix)
/// `rw-r--r--` like a plain `File::create` under the usual umask; tempfile's own default, 0600,
/// would hide written datasets from other users.
fn final_permissions(path: &Path) -> Option<std::fs::Permissions> {
    if let Ok(meta) = std::fs::metadata(path) {
        return Some(meta.permissions());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        let result: std::io::Result<()> = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("writer failed midway"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary file must be cleaned up");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_readable_by_others_and_replacements_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.bin");
        write_atomically(&path, |w| w.write_all(b"x")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, |w| w.write_all(b"y")).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}

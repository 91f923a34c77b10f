//! Telling file formats apart, by content first and by extension where content can't tell.

use std::io::Read;
use std::path::Path;

/// A file format vnr reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Binvox,
    Vdb,
    Npy,
    Npz,
    Obj,
    Ply,
    Stl,
    Png,
    Gif,
}

impl Format {
    /// Lower-case name, as `vnr info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Binvox => "binvox",
            Format::Vdb => "vdb",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Obj => "obj",
            Format::Ply => "ply",
            Format::Stl => "stl",
            Format::Png => "png",
            Format::Gif => "gif",
        }
    }

    /// The format a file name's extension promises (case-insensitive), if any.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "binvox" => Format::Binvox,
            "vdb" => Format::Vdb,
            "npy" => Format::Npy,
            "npz" => Format::Npz,
            "obj" => Format::Obj,
            "ply" => Format::Ply,
            "stl" => Format::Stl,
            "png" => Format::Png,
            "gif" => Format::Gif,
            _ => return None,
        })
    }

    /// The format that a file's first bytes identify, if they are distinctive.
    ///
    /// OBJ and ASCII STL have no magic number; they are recognised by extension only.
    pub fn from_magic(head: &[u8]) -> Option<Format> {
        const VDB_MAGIC: [u8; 8] = [0x20, 0x42, 0x44, 0x56, 0, 0, 0, 0];
        if head.starts_with(b"#binvox") {
            Some(Format::Binvox)
        } else if head.starts_with(&VDB_MAGIC) {
            Some(Format::Vdb)
        } else if head.starts_with(b"\x93NUMPY") {
            Some(Format::Npy)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Some(Format::Npz)
        } else if head.starts_with(b"ply\n") || head.starts_with(b"ply\r\n") {
            Some(Format::Ply)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
            Some(Format::Gif)
        } else {
            None
        }
    }

    /// Detects a file's format: by its first bytes when they are distinctive, else by extension.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use vnr_formats::detect::Format;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("grid.dat");
    /// std::fs::write(&path, b"#binvox 1\ndim 1 1 1\ndata\n\x01\x01")?;
    /// assert_eq!(Format::detect(&path)?, Some(Format::Binvox));
    /// # Ok(()) }
    /// ```
    pub fn detect(path: &Path) -> std::io::Result<Option<Format>> {
        let mut head = Vec::with_capacity(16);
        std::fs::File::open(path)?.take(16).read_to_end(&mut head)?;
        Ok(Format::from_magic(&head).or_else(|| Format::from_extension(path)))
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_beats_a_misleading_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actually-numpy.binvox");
        std::fs::write(&path, b"\x93NUMPY\x01\x00").unwrap();
        assert_eq!(Format::detect(&path).unwrap(), Some(Format::Npy));
    }

    #[test]
    fn extension_decides_for_formats_without_magic() {
        assert_eq!(
            Format::from_extension(Path::new("a/b/Mesh.OBJ")),
            Some(Format::Obj)
        );
        assert_eq!(Format::from_extension(Path::new("notes.txt")), None);
    }
}

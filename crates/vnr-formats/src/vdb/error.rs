//! The one error type of the OpenVDB reader and writer.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing an OpenVDB file.
///
/// Offsets are absolute byte positions in the file, so a report can be checked with a hex dump.
#[derive(Debug, thiserror::Error)]
pub enum VdbError {
    /// The file could not be opened, read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// An I/O error without a path (from a writer callback).
    #[error("I/O error: {0}")]
    Stream(#[from] std::io::Error),
    /// The first eight bytes are not OpenVDB's magic number.
    #[error("not an OpenVDB file: bad magic number {0:#x}")]
    BadMagic(i64),
    /// The file format version is outside the range this reader handles.
    #[error("unsupported OpenVDB file version {version} (this reader handles {min}..={max})")]
    UnsupportedVersion {
        /// Version found in the header.
        version: u32,
        /// Oldest version handled.
        min: u32,
        /// Newest version handled.
        max: u32,
    },
    /// The file ends (or a bounded region ends) before something it announces.
    #[error(
        "truncated file: {what} needs {needed} bytes at offset {offset}, only {available} remain"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Absolute offset where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left.
        available: u64,
    },
    /// A structural inconsistency: bad offset, bad size, invalid node layout.
    #[error("corrupt OpenVDB file at offset {offset}: {reason}")]
    Corrupt {
        /// Absolute offset of the offending item.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A grid whose value type or tree layout this reader does not decode (e.g. point data).
    #[error("grid '{grid}': unsupported grid type '{type_name}'")]
    UnsupportedGridType {
        /// Grid name.
        grid: String,
        /// Tree type name as stored, e.g. `Tree_ptdataidx32_5_4_3`.
        type_name: String,
    },
    /// A transform map type this reader does not implement (e.g. `NonlinearFrustumMap`).
    #[error("unsupported transform '{0}'")]
    UnsupportedTransform(String),
    /// A compression scheme or codec this reader does not implement.
    #[error("unsupported compression at offset {offset}: {reason}")]
    UnsupportedCompression {
        /// Absolute offset of the compressed chunk.
        offset: u64,
        /// Which codec or flag.
        reason: String,
    },
    /// A dense copy larger than the caller allowed, or than one allocation can hold; nothing
    /// was allocated.
    #[error("dense copy of {voxels} voxels exceeds the limit of {limit} voxels")]
    DenseTooLarge {
        /// Voxels the box holds (saturating).
        voxels: u128,
        /// The caller's cap, lowered to what one allocation can hold.
        limit: u64,
    },
    /// No grid of that name in the file.
    #[error("no grid named '{0}'")]
    GridNotFound(String),
    /// The grid exists but holds another value type.
    #[error("grid '{grid}' holds {found} values, not {expected}")]
    WrongValueType {
        /// Grid name.
        grid: String,
        /// Type asked for.
        expected: &'static str,
        /// Type stored.
        found: &'static str,
    },
    /// The grid could not be read; the message says why (see [`GridEntry::grid`](super::GridEntry)).
    #[error("grid '{grid}' could not be read: {reason}")]
    GridUnreadable {
        /// Grid name.
        grid: String,
        /// The reading error, as text.
        reason: String,
    },
    /// Arguments a writer or builder cannot honour.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Building a tensor failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this module.
pub type Result<T, E = VdbError> = std::result::Result<T, E>;

impl VdbError {
    pub(crate) fn corrupt(offset: u64, reason: impl Into<String>) -> Self {
        VdbError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}

//! binvox voxel grids (`#binvox 1` occupancy and `#binvox 2` 8-bit values), read and written.
//!
//! # File format
//! An ASCII header, then run-length-encoded voxels:
//!
//! ```text
//! #binvox 1
//! dim 64 64 64
//! translate -1.8938 -0.340252 -1.23747
//! scale 3.11398
//! data
//! <(value, count) byte pairs>
//! ```
//!
//! * `#binvox N`: `N` is 1 (values 0 or 1) or 2 (values 0..=255, 0 = empty; binvox_merge).
//! * `dim a b c`: the grid extents **in file order, slowest axis first**: `a` = extent along x,
//!   `b` = along z, `c` = along y. The voxel at `(x, y, z)` has file index
//!   `x·(b·c) + z·c + y` (x slowest, then z, y fastest). This is the index of binvox's reference
//!   reader (`read_binvox.cc`: `dim depth height width`, `index = x·width·height + z·width + y`)
//!   and of binvox-rw-py (`data.reshape(dims)` gives `[x, z, y]`). binvox itself only writes cubic
//!   grids, where the distinction is invisible; for non-cubic grids this mapping is the one that
//!   agrees with both readers.
//! * `translate tx ty tz` and `scale s` are optional (defaults `0 0 0` and `1`); comment lines
//!   starting with `#` may appear anywhere before `data`. CRLF line ends and runs of spaces or
//!   tabs are tolerated. Any other header line is an error, as are repeated fields.
//! * After the `data` line: `(value, count)` byte pairs with `count` in 1..=255 covering the grid
//!   exactly. A count of 0, a run that overflows the grid, or a body that ends before the grid is
//!   full are errors. Bytes after a complete grid are ignored (binvox writes none; other writers
//!   have been seen to pad).
//!
//! # In memory
//! [`BinvoxGrid`] stores one `u8` per voxel in **`[X, Y, Z]` order, Z fastest**:
//! `values[(i·ny + j)·nz + k]` is the voxel at `x = i, y = j, z = k`, and
//! [`BinvoxGrid::to_tensor`] gives the same layout as a `[X, Y, Z]` tensor.
//! [`BinvoxGrid::file_order_values`] gives the raw `[X, Z, Y]` order of the file (equivalently
//! `to_tensor(..)?.permute((0, 2, 1))`).
//!
//! # Safety against bad input
//! Header numbers are parsed with overflow checks, the voxel count is capped at
//! [`MAX_VOXELS`], and the whole run-length stream is validated (it must cover the grid exactly)
//! *before* the grid is allocated, so a file can never make the reader allocate more voxels than
//! its bytes encode (at most 255 per 2 bytes).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::atomic::write_atomically;

/// Largest grid accepted (2³¹ voxels, e.g. 1290³): bounds memory for a corrupt `dim` line.
pub const MAX_VOXELS: usize = 1 << 31;

/// Longest run one `(value, count)` pair can encode.
const MAX_RUN: usize = 255;

/// Errors from reading, building or writing binvox grids.
#[derive(Debug, thiserror::Error)]
pub enum BinvoxError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The first line is not `#binvox N`.
    #[error("not a binvox file: the first line must be `#binvox 1` or `#binvox 2`")]
    BadMagic,
    /// `#binvox N` with `N` other than 1 or 2.
    #[error("unsupported binvox version `{0}` (1 and 2 are supported)")]
    UnsupportedVersion(String),
    /// A header line is not valid UTF-8 text.
    #[error("header line {line} is not text")]
    HeaderNotText { line: usize },
    /// A header line is neither a known field nor a comment.
    #[error("header line {line}: unknown field `{text}`")]
    UnknownHeaderLine { line: usize, text: String },
    /// A known header field has the wrong number of values or an unparsable one.
    #[error("header line {line}: malformed `{field}` line `{text}`")]
    MalformedField {
        line: usize,
        field: &'static str,
        text: String,
    },
    /// A header field appears twice.
    #[error("header line {line}: `{field}` given twice")]
    DuplicateField { line: usize, field: &'static str },
    /// The header has no `dim` line.
    #[error("header has no `dim` line")]
    MissingDim,
    /// The file ends before the `data` line.
    #[error("header has no `data` line (the file ends inside the header)")]
    MissingData,
    /// A dimension is zero, or the voxel count overflows or exceeds [`MAX_VOXELS`].
    #[error("invalid grid dimensions {dims:?} (x, y, z): {reason}")]
    InvalidDims { dims: [u64; 3], reason: String },
    /// The body holds too few bytes to encode the whole grid (255 voxels per 2 bytes at most).
    #[error("body of {body_bytes} bytes cannot encode {voxels} voxels")]
    BodyTooShort { body_bytes: usize, voxels: usize },
    /// A run has a count of 0.
    #[error("run at body offset {offset} has a count of 0")]
    ZeroRunLength { offset: usize },
    /// A run extends past the last voxel.
    #[error("run at body offset {offset} ends at voxel {end}, past the grid's {voxels} voxels")]
    RunOverflowsGrid {
        offset: usize,
        end: usize,
        voxels: usize,
    },
    /// The body ends before every voxel has a value.
    #[error("body ends after {decoded} of {voxels} voxels")]
    Truncated { decoded: usize, voxels: usize },
    /// A version-1 grid holds a value other than 0 or 1. `index` is the voxel's position in the
    /// file's order when reading, in `[X, Y, Z]` order when building with [`BinvoxGrid::new`].
    #[error("value {value} at voxel {index} is not allowed in a #binvox 1 grid (0 or 1 only)")]
    ValueNotInV1 { index: usize, value: u8 },
    /// `translate` or `scale` is NaN or infinite.
    #[error("non-finite transform: translate {translate:?}, scale {scale}")]
    NonFiniteTransform { translate: [f32; 3], scale: f32 },
    /// The number of values does not match the dimensions.
    #[error("{len} values given for a {dims:?} grid")]
    LengthMismatch { dims: [usize; 3], len: usize },
    /// A tensor could not be converted.
    #[error("tensor conversion: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Which `#binvox N` format a grid is read from or written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinvoxVersion {
    /// `#binvox 1`: occupancy, values 0 or 1.
    V1,
    /// `#binvox 2`: values 0..=255, 0 meaning empty.
    V2,
}

impl BinvoxVersion {
    pub fn number(self) -> u8 {
        match self {
            BinvoxVersion::V1 => 1,
            BinvoxVersion::V2 => 2,
        }
    }
}

/// A dense voxel grid with binvox's normalisation transform.
///
/// Values are stored `[X, Y, Z]`, Z fastest (see the [module docs](self)). Invariants, checked by
/// every constructor: `values.len() == nx·ny·nz` with `0 < nx·ny·nz <= MAX_VOXELS`, values of a
/// [`BinvoxVersion::V1`] grid are 0 or 1, `translate` and `scale` are finite.
#[derive(Debug, Clone, PartialEq)]
pub struct BinvoxGrid {
    dims: [usize; 3],
    translate: [f32; 3],
    scale: f32,
    version: BinvoxVersion,
    values: Vec<u8>,
}

impl BinvoxGrid {
    /// A grid of `dims = [nx, ny, nz]` from `values` in `[X, Y, Z]` order (Z fastest), with the
    /// identity transform (`translate 0 0 0`, `scale 1`).
    pub fn new(
        dims: [usize; 3],
        values: Vec<u8>,
        version: BinvoxVersion,
    ) -> Result<Self, BinvoxError> {
        let voxels = voxel_count(dims.map(|d| d as u64))?;
        if values.len() != voxels {
            return Err(BinvoxError::LengthMismatch {
                dims,
                len: values.len(),
            });
        }
        check_version_values(&values, version)?;
        Ok(Self {
            dims,
            translate: [0.0; 3],
            scale: 1.0,
            version,
            values,
        })
    }

    /// A grid from a rank-3 tensor `[X, Y, Z]` of any dtype; values are cast to `u8` as candle
    /// casts (floats truncate toward zero and saturate), so pass occupancy as 0/1.
    pub fn from_tensor(tensor: &Tensor, version: BinvoxVersion) -> Result<Self, BinvoxError> {
        let (nx, ny, nz) = tensor.dims3()?;
        let values = tensor.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()?;
        Self::new([nx, ny, nz], values, version)
    }

    /// Replaces the normalisation transform (see [`BinvoxGrid::world_position`]).
    pub fn with_transform(mut self, translate: [f32; 3], scale: f32) -> Result<Self, BinvoxError> {
        check_transform(translate, scale)?;
        self.translate = translate;
        self.scale = scale;
        Ok(self)
    }

    /// Extents `[nx, ny, nz]` along x, y, z (the header's `dim` line is `nx nz ny`).
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The header's `translate`: world position of the grid's corner.
    pub fn translate(&self) -> [f32; 3] {
        self.translate
    }

    /// The header's `scale`: world length of the grid's largest side.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The format version the grid was read as, and is written as.
    pub fn version(&self) -> BinvoxVersion {
        self.version
    }

    /// All voxel values, `[X, Y, Z]` order, Z fastest.
    pub fn values(&self) -> &[u8] {
        &self.values
    }

    /// Takes the values out, `[X, Y, Z]` order, Z fastest.
    pub fn into_values(self) -> Vec<u8> {
        self.values
    }

    /// Value of voxel `(i, j, k)` along `(x, y, z)`, or `None` outside the grid.
    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<u8> {
        let [nx, ny, nz] = self.dims;
        if i >= nx || j >= ny || k >= nz {
            return None;
        }
        self.values.get((i * ny + j) * nz + k).copied()
    }

    /// Number of non-zero (occupied) voxels.
    pub fn occupied_count(&self) -> usize {
        self.values.iter().filter(|&&v| v != 0).count()
    }

    /// World-space edge length of one voxel: `scale / max(nx, ny, nz)`.
    pub fn voxel_size(&self) -> f32 {
        (f64::from(self.scale) / self.max_dim() as f64) as f32
    }

    /// World-space centre of voxel `(i, j, k)`: `translate + scale · (index + 0.5) / max(nx, ny, nz)`
    /// per axis.
    ///
    /// binvox normalises the model into the unit cube with one uniform scale and voxelises that
    /// cube, so voxels are cubes of side `scale / d`. For a cubic grid (all binvox output) this is
    /// exactly binvox's documented `(i + 0.5) / d · scale + translate`. For non-cubic grids we
    /// divide by the **largest** extent so voxels stay cubic; binvox-rw-py instead divides each
    /// axis by its own `dims` entry (and pairs them with axes in file order), which stretches
    /// voxels and disagrees with the reference reader's axis mapping.
    pub fn world_position(&self, i: usize, j: usize, k: usize) -> [f32; 3] {
        let size = f64::from(self.scale) / self.max_dim() as f64;
        let centre = |index: usize, axis: usize| {
            (f64::from(self.translate[axis]) + (index as f64 + 0.5) * size) as f32
        };
        [centre(i, 0), centre(j, 1), centre(k, 2)]
    }

    /// The values in the file's order: `[X, Z, Y]`, Y fastest.
    pub fn file_order_values(&self) -> Vec<u8> {
        let [nx, ny, nz] = self.dims;
        let mut out = Vec::with_capacity(self.values.len());
        for i in 0..nx {
            for k in 0..nz {
                out.extend((0..ny).map(|j| self.values[(i * ny + j) * nz + k]));
            }
        }
        out
    }

    /// The grid as a `u8` tensor `[X, Y, Z]` (Z fastest), on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, BinvoxError> {
        let [nx, ny, nz] = self.dims;
        Ok(Tensor::from_vec(self.values.clone(), (nx, ny, nz), device)?)
    }

    /// Reads a `.binvox` file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, BinvoxError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| BinvoxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses a whole `.binvox` file held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BinvoxError> {
        let header = parse_header(bytes)?;
        let body = bytes.get(header.body_start..).unwrap_or_default();
        let [nx, nz, ny] = header.file_dims;
        let dims = [nx, ny, nz];
        let voxels = voxel_count(dims.map(|d| d as u64))?;
        let values = decode_runs(body, dims, voxels, header.version)?;
        Ok(Self {
            dims,
            translate: header.translate,
            scale: header.scale,
            version: header.version,
            values,
        })
    }

    /// The complete file: header (always with `translate` and `scale`) and maximal runs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let [nx, ny, nz] = self.dims;
        let [tx, ty, tz] = self.translate;
        let header = format!(
            "#binvox {}\ndim {nx} {nz} {ny}\ntranslate {tx} {ty} {tz}\nscale {}\ndata\n",
            self.version.number(),
            self.scale
        );
        let mut out = header.into_bytes();
        encode_runs(&self.file_order_values(), &mut out);
        out
    }

    /// Writes the grid to `path` atomically (temporary file, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), BinvoxError> {
        let path = path.as_ref();
        let bytes = self.to_bytes();
        write_atomically(path, |w| {
            use std::io::Write;
            w.write_all(&bytes)
        })
        .map_err(|source| BinvoxError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn max_dim(&self) -> usize {
        self.dims.into_iter().max().unwrap_or(1)
    }
}

/// What the header says, and where the run-length body starts.
struct Header {
    version: BinvoxVersion,
    /// `dim` as written: extents along x, z, y.
    file_dims: [usize; 3],
    translate: [f32; 3],
    scale: f32,
    body_start: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, BinvoxError> {
    let mut lines = HeaderLines {
        bytes,
        pos: 0,
        index: 0,
    };
    let first = match lines.next() {
        Some((_, line)) => header_text(line, 1)?,
        None => return Err(BinvoxError::BadMagic),
    };
    let mut words = first.split_ascii_whitespace();
    if words.next() != Some("#binvox") {
        return Err(BinvoxError::BadMagic);
    }
    let version = match (words.next(), words.next()) {
        (Some("1"), None) => BinvoxVersion::V1,
        (Some("2"), None) => BinvoxVersion::V2,
        _ => {
            let rest = first.trim().trim_start_matches("#binvox").trim();
            return Err(BinvoxError::UnsupportedVersion(rest.to_string()));
        }
    };

    let mut file_dims = None;
    let mut translate = None;
    let mut scale = None;
    for (index, raw) in lines.by_ref() {
        let line = index + 1;
        let text = header_text(raw, line)?;
        let mut words = text.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let values: Vec<&str> = words.collect();
        match keyword {
            _ if keyword.starts_with('#') => {}
            "data" if values.is_empty() => {
                let [tx, ty, tz] = translate.unwrap_or([0.0; 3]);
                let scale = scale.unwrap_or(1.0);
                check_transform([tx, ty, tz], scale)?;
                return Ok(Header {
                    version,
                    file_dims: file_dims.ok_or(BinvoxError::MissingDim)?,
                    translate: [tx, ty, tz],
                    scale,
                    body_start: lines.pos,
                });
            }
            "dim" => {
                let dims = parse_numbers::<u64, 3>(&values, line, "dim", text)?;
                if file_dims.is_some() {
                    return Err(BinvoxError::DuplicateField { line, field: "dim" });
                }
                let [dx, dz, dy] = dims;
                voxel_count([dx, dy, dz])?;
                // voxel_count succeeded, so each extent fits in usize.
                file_dims = Some(dims.map(|d| d as usize));
            }
            "translate" => {
                let t = parse_numbers::<f32, 3>(&values, line, "translate", text)?;
                if translate.replace(t).is_some() {
                    return Err(BinvoxError::DuplicateField {
                        line,
                        field: "translate",
                    });
                }
            }
            "scale" => {
                let [s] = parse_numbers::<f32, 1>(&values, line, "scale", text)?;
                if scale.replace(s).is_some() {
                    return Err(BinvoxError::DuplicateField {
                        line,
                        field: "scale",
                    });
                }
            }
            _ => {
                return Err(BinvoxError::UnknownHeaderLine {
                    line,
                    text: text.trim().to_string(),
                })
            }
        }
    }
    Err(BinvoxError::MissingData)
}

/// Header lines split on `\n` (a trailing `\r` is whitespace to the parser). `pos` is the offset
/// just past the last line returned, i.e. the start of the body once `data` has been seen.
struct HeaderLines<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// 0-based index of the next line.
    index: usize,
}

impl<'a> Iterator for HeaderLines<'a> {
    /// (0-based line index, line without its `\n`)
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.pos..)?;
        // A header line must end in '\n': an unterminated tail is not a complete header.
        let len = rest.iter().position(|&b| b == b'\n')?;
        let line = rest.get(..len)?;
        let index = self.index;
        self.pos += len + 1;
        self.index += 1;
        Some((index, line))
    }
}

fn header_text(line: &[u8], number: usize) -> Result<&str, BinvoxError> {
    std::str::from_utf8(line).map_err(|_| BinvoxError::HeaderNotText { line: number })
}

fn parse_numbers<T: std::str::FromStr + Copy + Default, const N: usize>(
    values: &[&str],
    line: usize,
    field: &'static str,
    text: &str,
) -> Result<[T; N], BinvoxError> {
    let malformed = || BinvoxError::MalformedField {
        line,
        field,
        text: text.trim().to_string(),
    };
    if values.len() != N {
        return Err(malformed());
    }
    let mut out = [T::default(); N];
    for (slot, word) in out.iter_mut().zip(values) {
        *slot = word.parse().map_err(|_| malformed())?;
    }
    Ok(out)
}

/// `nx·ny·nz`, checked for zero extents, overflow and [`MAX_VOXELS`].
fn voxel_count(dims: [u64; 3]) -> Result<usize, BinvoxError> {
    let invalid = |reason: &str| BinvoxError::InvalidDims {
        dims,
        reason: reason.to_string(),
    };
    if dims.contains(&0) {
        return Err(invalid("every extent must be at least 1"));
    }
    let total = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid("voxel count overflows"))?;
    match usize::try_from(total) {
        Ok(n) if n <= MAX_VOXELS => Ok(n),
        _ => Err(invalid(&format!("more than {MAX_VOXELS} voxels"))),
    }
}

fn check_transform(translate: [f32; 3], scale: f32) -> Result<(), BinvoxError> {
    if translate.iter().all(|t| t.is_finite()) && scale.is_finite() {
        Ok(())
    } else {
        Err(BinvoxError::NonFiniteTransform { translate, scale })
    }
}

fn check_version_values(values: &[u8], version: BinvoxVersion) -> Result<(), BinvoxError> {
    if version == BinvoxVersion::V1 {
        if let Some(index) = values.iter().position(|&v| v > 1) {
            return Err(BinvoxError::ValueNotInV1 {
                index,
                value: values[index],
            });
        }
    }
    Ok(())
}

/// Validates the whole run stream, then decodes it into `[X, Y, Z]` order.
///
/// Validation comes first so that nothing is allocated for a stream that does not cover the grid
/// exactly: a truncated or corrupt file costs one pass over its bytes, not a grid allocation.
fn decode_runs(
    body: &[u8],
    dims: [usize; 3],
    voxels: usize,
    version: BinvoxVersion,
) -> Result<Vec<u8>, BinvoxError> {
    // Each pair covers at most 255 voxels: a body this short cannot fill the grid.
    let max_encodable = (body.len() / 2).saturating_mul(MAX_RUN);
    if max_encodable < voxels {
        return Err(BinvoxError::BodyTooShort {
            body_bytes: body.len(),
            voxels,
        });
    }
    let mut decoded = 0usize;
    let mut used_pairs = 0usize;
    for (pair_index, pair) in body.chunks_exact(2).enumerate() {
        if decoded == voxels {
            break;
        }
        let offset = pair_index * 2;
        let (value, count) = (pair[0], usize::from(pair[1]));
        if count == 0 {
            return Err(BinvoxError::ZeroRunLength { offset });
        }
        if version == BinvoxVersion::V1 && value > 1 {
            return Err(BinvoxError::ValueNotInV1 {
                index: decoded,
                value,
            });
        }
        let end = decoded + count;
        if end > voxels {
            return Err(BinvoxError::RunOverflowsGrid {
                offset,
                end,
                voxels,
            });
        }
        decoded = end;
        used_pairs = pair_index + 1;
    }
    if decoded < voxels {
        return Err(BinvoxError::Truncated { decoded, voxels });
    }

    let [_, ny, nz] = dims;
    let mut values = vec![0u8; voxels];
    let mut file_index = 0usize;
    for pair in body.chunks_exact(2).take(used_pairs) {
        let (value, count) = (pair[0], usize::from(pair[1]));
        if value != 0 {
            // File order is [X, Z, Y]: walk y (fastest) and carry into z, then x.
            let slab = nz * ny;
            let (mut x, rest) = (file_index / slab, file_index % slab);
            let (mut z, mut y) = (rest / ny, rest % ny);
            for _ in 0..count {
                // In bounds: validation proved file_index + count <= voxels.
                values[(x * ny + y) * nz + z] = value;
                y += 1;
                if y == ny {
                    y = 0;
                    z += 1;
                    if z == nz {
                        z = 0;
                        x += 1;
                    }
                }
            }
        }
        file_index += count;
    }
    Ok(values)
}

/// Appends maximal `(value, count)` runs (count 1..=255), as binvox writes them.
fn encode_runs(file_order: &[u8], out: &mut Vec<u8>) {
    let mut rest = file_order;
    while let Some(&value) = rest.first() {
        let run = rest
            .iter()
            .take(MAX_RUN)
            .take_while(|&&v| v == value)
            .count();
        // run <= MAX_RUN = 255, so the cast is exact.
        out.extend_from_slice(&[value, run as u8]);
        rest = &rest[run..];
    }
}

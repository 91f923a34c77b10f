//! NumPy `.npy` arrays and `.npz` archives (stored or deflate-compressed), read and written
//! without trusting their headers.
//!
//! Supported element types ([`NpyDtype`]): `bool`, `u8`, `i8`, `u16`, `i16`, `u32`, `i32`,
//! `i64`, `f16`, `f32`, `f64`, little or big endian (`<`, `>`, `|`, and `=` as the machine's
//! order). Fortran-order arrays are transposed on read, so [`NpyArray::data`] is always in the
//! logical C (row-major) order of [`NpyArray::shape`], exactly what `numpy.load(...).ravel()`
//! gives. Writers always emit little-endian, C-order, format version 1.0 (2.0 when the header
//! needs it), with the 64-byte alignment numpy uses.
//!
//! Refused with a typed [`NpzError`]: object arrays (`|O`, pickled Python objects), structured
//! and string dtypes, truncated files, bad magic, malformed header dicts, and sizes that do not
//! match what the file (or zip entry) can hold. The element count × item size declared by a
//! header is checked against the bytes available *before* anything is allocated, and a zip
//! entry's declared uncompressed size is itself bounded by its compressed size (stored entries:
//! equal; deflate: at most 1032:1, deflate's maximum ratio), so a lying header cannot make a
//! reader allocate or inflate unboundedly.
//!
//! Tensor conversion ([`NpyArray::to_tensor`]) keeps the dtype where candle has it and widens
//! losslessly where it does not: `bool` → `U8` (0/1), `i8` → `I16`, `u16` → `U32`.
//! [`NpzReader::tensor`] decodes straight to a chosen dtype, converting block by block while
//! reading so the stored-type array never exists in full.
//!
//! Data is read straight into the array's final buffer (byte-swapped in place when its order is
//! not the machine's). On Linux, buffers of 4 MiB and more are advised to use transparent huge
//! pages, as numpy does for its arrays: otherwise 4 KiB page faults cost about as much as the
//! reading.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::f16;
use half::vec::HalfBitsVecExt;
use npyz::{Endianness, TypeChar, TypeStr};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::atomic::write_atomically;

/// The six bytes every `.npy` stream starts with.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header dict accepted. numpy itself refuses more than 10,000 bytes by default; the
/// margin admits other writers while keeping a corrupt length from allocating gigabytes.
const MAX_HEADER_LEN: usize = 1 << 16;
/// Deepest bracket nesting accepted in a header dict (plain dtypes need 2).
const MAX_NESTING: usize = 8;
/// Deflate cannot expand data by more than about 1032:1; more is a lying size field.
const DEFLATE_MAX_RATIO: u64 = 1032;
/// Bytes per read or write call: large enough to amortise calls, small enough to stay in cache.
const BLOCK_BYTES: usize = 1 << 18;
/// numpy aligns the start of the data to this many bytes.
const ARRAY_ALIGN: usize = 64;

/// Errors from reading or writing `.npy` / `.npz` files. `location` names the file, and for an
/// archive member also the array key, e.g. `data.npz (array 'x')`.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    /// Reading or writing the file failed.
    #[error("{location}: {source}")]
    Io {
        location: String,
        source: std::io::Error,
    },
    /// The zip container is malformed or uses an unsupported feature.
    #[error("{location}: invalid npz (zip) archive: {source}")]
    Zip {
        location: String,
        source: zip::result::ZipError,
    },
    /// The stream does not start with `\x93NUMPY`.
    #[error("{location}: not an npy array (bad magic bytes)")]
    BadMagic { location: String },
    /// Format version other than 1.0, 2.0 or 3.0.
    #[error("{location}: unsupported npy format version {major}.{minor}")]
    UnsupportedVersion {
        location: String,
        major: u8,
        minor: u8,
    },
    /// The header dict is malformed.
    #[error("{location}: bad npy header: {reason}")]
    BadHeader { location: String, reason: String },
    /// `|O` arrays hold pickled Python objects, which cannot be read safely or meaningfully.
    #[error(
        "object arrays are not supported: {location} has dtype '{descr}' (pickled Python objects)"
    )]
    ObjectArray { location: String, descr: String },
    /// A dtype this module does not read (strings, complex, datetime, structured, ...).
    #[error("{location}: unsupported dtype {descr}")]
    UnsupportedDtype { location: String, descr: String },
    /// The element count times the item size does not fit in memory addresses.
    #[error("{location}: shape {shape:?} is too large to address")]
    SizeOverflow { location: String, shape: Vec<u64> },
    /// Fewer bytes than the header promises.
    #[error("{location}: truncated: needs {expected} bytes, only {available} available")]
    Truncated {
        location: String,
        expected: u64,
        available: u64,
    },
    /// More bytes than the header describes.
    #[error("{location}: {actual} bytes but the header describes {expected}")]
    TrailingBytes {
        location: String,
        expected: u64,
        actual: u64,
    },
    /// A zip entry declares an uncompressed size its compressed data cannot produce.
    #[error("{location}: zip entry declares {declared} bytes from {compressed} compressed bytes ({method})")]
    ImplausibleEntrySize {
        location: String,
        declared: u64,
        compressed: u64,
        method: String,
    },
    /// The archive has no array with this name.
    #[error("{path}: no array named '{name}' (arrays: {available:?})")]
    MissingArray {
        path: PathBuf,
        name: String,
        available: Vec<String>,
    },
    /// Two arrays with the same name were given to a writer.
    #[error("{path}: array name '{name}' is empty or used twice")]
    BadArrayName { path: PathBuf, name: String },
    /// Data length does not match the shape's element count.
    #[error("array of shape {shape:?} needs {expected} elements, got {actual}")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// The tensor's dtype has no numpy counterpart.
    #[error("tensor dtype {0:?} has no numpy dtype (convert it to f32 first)")]
    UnsupportedTensorDtype(DType),
    /// candle failed while building or reading a tensor.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, NpzError>;

/// Element type of an [`NpyArray`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NpyDtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    I64,
    F16,
    F32,
    F64,
}

const ALL_DTYPES: [NpyDtype; 11] = [
    NpyDtype::Bool,
    NpyDtype::U8,
    NpyDtype::I8,
    NpyDtype::U16,
    NpyDtype::I16,
    NpyDtype::U32,
    NpyDtype::I32,
    NpyDtype::I64,
    NpyDtype::F16,
    NpyDtype::F32,
    NpyDtype::F64,
];

impl NpyDtype {
    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            NpyDtype::Bool | NpyDtype::U8 | NpyDtype::I8 => 1,
            NpyDtype::U16 | NpyDtype::I16 | NpyDtype::F16 => 2,
            NpyDtype::U32 | NpyDtype::I32 | NpyDtype::F32 => 4,
            NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }

    /// The little-endian numpy descr this module writes, e.g. `"<f4"`.
    pub fn descr(self) -> &'static str {
        match self {
            NpyDtype::Bool => "|b1",
            NpyDtype::U8 => "|u1",
            NpyDtype::I8 => "|i1",
            NpyDtype::U16 => "<u2",
            NpyDtype::I16 => "<i2",
            NpyDtype::U32 => "<u4",
            NpyDtype::I32 => "<i4",
            NpyDtype::I64 => "<i8",
            NpyDtype::F16 => "<f2",
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
        }
    }

    /// The candle dtype [`NpyArray::to_tensor`] produces for this element type.
    pub fn tensor_dtype(self) -> DType {
        match self {
            NpyDtype::Bool | NpyDtype::U8 => DType::U8,
            NpyDtype::I8 | NpyDtype::I16 => DType::I16,
            NpyDtype::U16 | NpyDtype::U32 => DType::U32,
            NpyDtype::I32 => DType::I32,
            NpyDtype::I64 => DType::I64,
            NpyDtype::F16 => DType::F16,
            NpyDtype::F32 => DType::F32,
            NpyDtype::F64 => DType::F64,
        }
    }

    /// numpy's name for the type (`"float32"`, `"bool"`, ...), as used in dataset manifests.
    pub fn name(self) -> &'static str {
        match self {
            NpyDtype::Bool => "bool",
            NpyDtype::U8 => "uint8",
            NpyDtype::I8 => "int8",
            NpyDtype::U16 => "uint16",
            NpyDtype::I16 => "int16",
            NpyDtype::U32 => "uint32",
            NpyDtype::I32 => "int32",
            NpyDtype::I64 => "int64",
            NpyDtype::F16 => "float16",
            NpyDtype::F32 => "float32",
            NpyDtype::F64 => "float64",
        }
    }

    /// The type with numpy name `name` (inverse of [`NpyDtype::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_DTYPES.into_iter().find(|d| d.name() == name)
    }

    /// The numpy type [`NpyArray::from_tensor`] writes for a tensor of `dtype`.
    pub fn for_tensor_dtype(dtype: DType) -> Result<Self> {
        Ok(match dtype {
            DType::U8 => NpyDtype::U8,
            DType::U32 => NpyDtype::U32,
            DType::I16 => NpyDtype::I16,
            DType::I32 => NpyDtype::I32,
            DType::I64 => NpyDtype::I64,
            DType::F16 => NpyDtype::F16,
            DType::F32 => NpyDtype::F32,
            DType::F64 => NpyDtype::F64,
            other => return Err(NpzError::UnsupportedTensorDtype(other)),
        })
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, NpyDtype::F16 | NpyDtype::F32 | NpyDtype::F64)
    }
}

/// Typed element storage of an [`NpyArray`], in logical C order.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`NpyData`] variant, bound as `$v`.
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            NpyData::Bool($v) => $body,
            NpyData::U8($v) => $body,
            NpyData::I8($v) => $body,
            NpyData::U16($v) => $body,
            NpyData::I16($v) => $body,
            NpyData::U32($v) => $body,
            NpyData::I32($v) => $body,
            NpyData::I64($v) => $body,
            NpyData::F16($v) => $body,
            NpyData::F32($v) => $body,
            NpyData::F64($v) => $body,
        }
    };
}

impl NpyData {
    /// Element type.
    pub fn dtype(&self) -> NpyDtype {
        match self {
            NpyData::Bool(_) => NpyDtype::Bool,
            NpyData::U8(_) => NpyDtype::U8,
            NpyData::I8(_) => NpyDtype::I8,
            NpyData::U16(_) => NpyDtype::U16,
            NpyData::I16(_) => NpyDtype::I16,
            NpyData::U32(_) => NpyDtype::U32,
            NpyData::I32(_) => NpyDtype::I32,
            NpyData::I64(_) => NpyDtype::I64,
            NpyData::F16(_) => NpyDtype::F16,
            NpyData::F32(_) => NpyDtype::F32,
            NpyData::F64(_) => NpyDtype::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An n-dimensional numpy array: a shape and its elements in logical C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    shape: Vec<usize>,
    data: NpyData,
}

impl NpyArray {
    /// An array of `shape` holding `data` in C order; the element count must match the shape.
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let expected = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| NpzError::SizeOverflow {
                location: "array".into(),
                shape: shape.iter().map(|&d| d as u64).collect(),
            })?;
        if expected != data.len() {
            return Err(NpzError::ShapeMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// Dimensions, slowest first (a 0-d scalar has an empty shape).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Elements in logical C order.
    pub fn data(&self) -> &NpyData {
        &self.data
    }

    /// Takes the elements out.
    pub fn into_data(self) -> NpyData {
        self.data
    }

    /// Element type.
    pub fn dtype(&self) -> NpyDtype {
        self.data.dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A tensor of the same shape on `device`, with dtype [`NpyDtype::tensor_dtype`]
    /// (`bool` → `U8` 0/1, `i8` → `I16`, `u16` → `U32`; others unchanged).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let shape = self.shape.clone();
        let tensor = match &self.data {
            NpyData::Bool(v) => Tensor::from_vec(
                v.iter().map(|&b| u8::from(b)).collect::<Vec<_>>(),
                shape,
                device,
            ),
            NpyData::U8(v) => Tensor::from_slice(v, shape, device),
            NpyData::I8(v) => Tensor::from_vec(
                v.iter().map(|&x| i16::from(x)).collect::<Vec<_>>(),
                shape,
                device,
            ),
            NpyData::U16(v) => Tensor::from_vec(
                v.iter().map(|&x| u32::from(x)).collect::<Vec<_>>(),
                shape,
                device,
            ),
            NpyData::I16(v) => Tensor::from_slice(v, shape, device),
            NpyData::U32(v) => Tensor::from_slice(v, shape, device),
            NpyData::I32(v) => Tensor::from_slice(v, shape, device),
            NpyData::I64(v) => Tensor::from_slice(v, shape, device),
            NpyData::F16(v) => Tensor::from_slice(v, shape, device),
            NpyData::F32(v) => Tensor::from_slice(v, shape, device),
            NpyData::F64(v) => Tensor::from_slice(v, shape, device),
        }?;
        Ok(tensor)
    }

    /// Like [`NpyArray::to_tensor`] but consumes the array, so CPU tensors reuse its buffer.
    pub fn into_tensor(self, device: &Device) -> Result<Tensor> {
        let NpyArray { shape, data } = self;
        let tensor = match data {
            NpyData::U8(v) => Tensor::from_vec(v, shape, device),
            NpyData::I16(v) => Tensor::from_vec(v, shape, device),
            NpyData::U32(v) => Tensor::from_vec(v, shape, device),
            NpyData::I32(v) => Tensor::from_vec(v, shape, device),
            NpyData::I64(v) => Tensor::from_vec(v, shape, device),
            NpyData::F16(v) => Tensor::from_vec(v, shape, device),
            NpyData::F32(v) => Tensor::from_vec(v, shape, device),
            NpyData::F64(v) => Tensor::from_vec(v, shape, device),
            widened @ (NpyData::Bool(_) | NpyData::I8(_) | NpyData::U16(_)) => {
                return NpyArray {
                    shape,
                    data: widened,
                }
                .to_tensor(device)
            }
        }?;
        Ok(tensor)
    }

    /// The tensor's values (copied to the CPU, made contiguous) as an array of its shape.
    /// Fails for dtypes numpy lacks (`BF16`, the 8/6/4-bit floats).
    pub fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let shape = tensor.dims().to_vec();
        let flat = tensor.flatten_all()?;
        let data = match NpyDtype::for_tensor_dtype(tensor.dtype())? {
            NpyDtype::U8 => NpyData::U8(flat.to_vec1()?),
            NpyDtype::U32 => NpyData::U32(flat.to_vec1()?),
            NpyDtype::I16 => NpyData::I16(flat.to_vec1()?),
            NpyDtype::I32 => NpyData::I32(flat.to_vec1()?),
            NpyDtype::I64 => NpyData::I64(flat.to_vec1()?),
            NpyDtype::F16 => NpyData::F16(flat.to_vec1()?),
            NpyDtype::F32 => NpyData::F32(flat.to_vec1()?),
            NpyDtype::F64 => NpyData::F64(flat.to_vec1()?),
            // `for_tensor_dtype` never yields the types candle lacks.
            other => {
                return Err(NpzError::UnsupportedDtype {
                    location: "tensor".into(),
                    descr: other.name().into(),
                })
            }
        };
        Self::new(shape, data)
    }
}

/// What an npy header declares, readable without decoding the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: NpyDtype,
    /// Dimensions as declared (logical order, slowest first).
    pub shape: Vec<usize>,
    /// Whether the data is stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// Whether the stored elements are big-endian.
    pub big_endian: bool,
    /// Bytes before the data (magic, version, length field and dict).
    pub header_bytes: u64,
    /// Bytes of element data (`len × itemsize`).
    pub data_bytes: u64,
}

impl NpyHeader {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Element decoding/encoding

/// A fixed-size element that converts to little-endian bytes (for writing).
trait Element: Copy {
    const SIZE: usize;
    fn to_le_bytes_into(self, out: &mut [u8]);
}

macro_rules! impl_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn to_le_bytes_into(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
impl_element!(u8, i8, u16, i16, u32, i32, i64, f16, f32, f64);

impl Element for bool {
    const SIZE: usize = 1;
    #[inline]
    fn to_le_bytes_into(self, out: &mut [u8]) {
        out.fill(u8::from(self));
    }
}

/// A numeric type whose values are exactly their bytes, so file data can be read straight
/// into the final buffer with no conversion pass. `bool` and `f16` are decoded through `u8`
/// and `u16`.
///
/// # Safety
/// Implementors have no padding bytes and every bit pattern is a valid value.
unsafe trait PlainBits: Copy {
    /// The all-zero-bytes value. `vec![ZERO; n]` of std's integers and floats is one zeroed
    /// allocation (`calloc`), whose fresh pages stay untouched until the data is written.
    const ZERO: Self;
}

macro_rules! impl_plain_bits {
    ($($t:ty = $zero:expr),*) => {$(
        // SAFETY: a primitive integer or float: no padding, every bit pattern is a value.
        unsafe impl PlainBits for $t {
            const ZERO: Self = $zero;
        }
    )*};
}
impl_plain_bits!(
    u8 = 0,
    i8 = 0,
    u16 = 0,
    i16 = 0,
    u32 = 0,
    i32 = 0,
    i64 = 0,
    f32 = 0.0,
    f64 = 0.0
);

/// The elements of `values` as their raw bytes, to read file data into them in place.
fn bytes_of_mut<T: PlainBits>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: the view covers exactly the memory of `values` (`size_of_val`), which is
    // initialised and borrowed mutably for the view's lifetime; `u8` has alignment 1; and since
    // `PlainBits` types have no padding and accept any bit pattern, whatever bytes are written
    // through the view leave valid values.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), size_of_val(values)) }
}

/// Buffers from this size on are worth backing with transparent huge pages.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;
/// Size and alignment of a transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks Linux to back the allocation of `values` with transparent huge pages; call it before
/// the first write. Decoding writes every page of a fresh multi-megabyte buffer once, and with
/// 4 KiB pages the page faults cost about as much as the reading itself (numpy advises its
/// large arrays the same way; most distributions set THP to `madvise`). Only the 2 MiB-aligned
/// interior can be huge pages, so that is what is advised. Elsewhere this does nothing.
#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(values: &mut Vec<T>) {
    let bytes = values.capacity().saturating_mul(size_of::<T>());
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    let start = values.as_mut_ptr().cast::<u8>();
    let skip = start.align_offset(HUGE_PAGE_BYTES);
    let len = bytes.saturating_sub(skip) & !(HUGE_PAGE_BYTES - 1);
    if len == 0 {
        return;
    }
    // SAFETY: `skip + len <= bytes`, so the advised range lies inside the allocation owned by
    // `values`, and it starts on a 2 MiB (hence page) boundary. MADV_HUGEPAGE only changes how
    // the kernel backs those pages, never their contents or ownership. The result is ignored:
    // failure (THP disabled, old kernel) just leaves normal pages.
    unsafe {
        libc::madvise(start.add(skip).cast(), len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_values: &mut Vec<T>) {}

/// Reads exactly `buf.len()` bytes, reporting a short stream as [`NpzError::Truncated`].
fn read_exact_or_truncated(
    r: &mut (impl Read + ?Sized),
    buf: &mut [u8],
    location: &str,
    expected_total: u64,
    done: u64,
) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(NpzError::Truncated {
                    location: location.to_owned(),
                    expected: expected_total,
                    available: done + filled as u64,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(location, e)),
        }
    }
    Ok(())
}

/// Reads elements `first..first + count` of the data that follows `header` (its size already
/// checked against the bytes available) from `r`, positioned at element `first`, straight
/// into their final buffer, in stored order.
fn read_plain<T: PlainBits>(
    r: &mut (impl Read + ?Sized),
    header: &NpyHeader,
    first: usize,
    count: usize,
    location: &str,
) -> Result<Vec<T>> {
    let mut values = vec![T::ZERO; count];
    advise_huge_pages(&mut values);
    let bytes = bytes_of_mut(&mut values);
    let expected_total = header.header_bytes + header.data_bytes;
    let mut done = header.header_bytes + (first * size_of::<T>()) as u64;
    // Block-sized reads keep each block in cache while a zip reader checksums it.
    for block in bytes.chunks_mut(BLOCK_BYTES) {
        read_exact_or_truncated(r, block, location, expected_total, done)?;
        done += block.len() as u64;
    }
    if header.big_endian != cfg!(target_endian = "big") && size_of::<T>() > 1 {
        for element in bytes.chunks_exact_mut(size_of::<T>()) {
            element.reverse();
        }
    }
    Ok(values)
}

/// Decodes elements `first..first + count` (in stored order) of the data that follows
/// `header`, from `r` positioned at element `first`.
fn read_elements(
    r: &mut (impl Read + ?Sized),
    header: &NpyHeader,
    first: usize,
    count: usize,
    location: &str,
) -> Result<NpyData> {
    Ok(match header.dtype {
        // numpy views any non-zero byte as True.
        NpyDtype::Bool => NpyData::Bool(
            read_plain::<u8>(r, header, first, count, location)?
                .into_iter()
                .map(|b| b != 0)
                .collect(),
        ),
        NpyDtype::U8 => NpyData::U8(read_plain(r, header, first, count, location)?),
        NpyDtype::I8 => NpyData::I8(read_plain(r, header, first, count, location)?),
        NpyDtype::U16 => NpyData::U16(read_plain(r, header, first, count, location)?),
        NpyDtype::I16 => NpyData::I16(read_plain(r, header, first, count, location)?),
        NpyDtype::U32 => NpyData::U32(read_plain(r, header, first, count, location)?),
        NpyDtype::I32 => NpyData::I32(read_plain(r, header, first, count, location)?),
        NpyDtype::I64 => NpyData::I64(read_plain(r, header, first, count, location)?),
        NpyDtype::F16 => {
            NpyData::F16(read_plain::<u16>(r, header, first, count, location)?.reinterpret_into())
        }
        NpyDtype::F32 => NpyData::F32(read_plain(r, header, first, count, location)?),
        NpyDtype::F64 => NpyData::F64(read_plain(r, header, first, count, location)?),
    })
}

/// Reorders Fortran-ordered `data` of logical `shape` into C order.
fn fortran_to_c<T: Copy>(data: Vec<T>, shape: &[usize], location: &str) -> Result<Vec<T>> {
    if shape.iter().filter(|&&d| d > 1).count() <= 1 {
        // At most one non-trivial axis: both orders coincide.
        return Ok(data);
    }
    let rank = shape.len();
    // Column-major strides: the first axis is contiguous.
    let mut strides = vec![1usize; rank];
    for axis in 1..rank {
        strides[axis] = strides[axis - 1] * shape[axis - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    advise_huge_pages(&mut out);
    let mut index = vec![0usize; rank];
    let mut source = 0usize;
    for _ in 0..data.len() {
        let value = data.get(source).ok_or_else(|| NpzError::BadHeader {
            location: location.to_owned(),
            reason: "fortran-order index out of range".into(),
        })?;
        out.push(*value);
        // Advance the C-order multi-index, last axis fastest.
        for axis in (0..rank).rev() {
            index[axis] += 1;
            source += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            source -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
    Ok(out)
}

/// Decodes the data that follows `header` in `r`.
fn read_data(r: &mut (impl Read + ?Sized), header: &NpyHeader, location: &str) -> Result<NpyArray> {
    let data = read_elements(r, header, 0, header.len(), location)?;
    let data = if header.fortran_order {
        let shape = &header.shape;
        match data {
            NpyData::Bool(v) => NpyData::Bool(fortran_to_c(v, shape, location)?),
            NpyData::U8(v) => NpyData::U8(fortran_to_c(v, shape, location)?),
            NpyData::I8(v) => NpyData::I8(fortran_to_c(v, shape, location)?),
            NpyData::U16(v) => NpyData::U16(fortran_to_c(v, shape, location)?),
            NpyData::I16(v) => NpyData::I16(fortran_to_c(v, shape, location)?),
            NpyData::U32(v) => NpyData::U32(fortran_to_c(v, shape, location)?),
            NpyData::I32(v) => NpyData::I32(fortran_to_c(v, shape, location)?),
            NpyData::I64(v) => NpyData::I64(fortran_to_c(v, shape, location)?),
            NpyData::F16(v) => NpyData::F16(fortran_to_c(v, shape, location)?),
            NpyData::F32(v) => NpyData::F32(fortran_to_c(v, shape, location)?),
            NpyData::F64(v) => NpyData::F64(fortran_to_c(v, shape, location)?),
        }
    } else {
        data
    };
    Ok(NpyArray {
        shape: header.shape.clone(),
        data,
    })
}

/// Decodes the data that follows `header` in `r` into a CPU tensor of `dtype`, converting
/// C-ordered data block by block so the stored-type array never exists in full.
fn read_tensor(
    r: &mut (impl Read + ?Sized),
    header: &NpyHeader,
    dtype: DType,
    location: &str,
) -> Result<Tensor> {
    if header.dtype.tensor_dtype() == dtype || header.fortran_order {
        // Nothing to convert, or a transpose that needs the whole array anyway.
        return Ok(read_data(r, header, location)?
            .into_tensor(&Device::Cpu)?
            .to_dtype(dtype)?);
    }
    match dtype {
        DType::U8 => read_converted::<u8>(r, header, dtype, location),
        DType::U32 => read_converted::<u32>(r, header, dtype, location),
        DType::I16 => read_converted::<i16>(r, header, dtype, location),
        DType::I32 => read_converted::<i32>(r, header, dtype, location),
        DType::I64 => read_converted::<i64>(r, header, dtype, location),
        DType::BF16 => read_converted::<half::bf16>(r, header, dtype, location),
        DType::F16 => read_converted::<f16>(r, header, dtype, location),
        DType::F32 => read_converted::<f32>(r, header, dtype, location),
        DType::F64 => read_converted::<f64>(r, header, dtype, location),
        // Sub-byte and 8-bit float types: convert the whole array.
        _ => Ok(read_data(r, header, location)?
            .into_tensor(&Device::Cpu)?
            .to_dtype(dtype)?),
    }
}

/// [`read_tensor`] for a C-ordered array converted to `dtype`, whose element type is `T`.
fn read_converted<T: candle_core::WithDType>(
    r: &mut (impl Read + ?Sized),
    header: &NpyHeader,
    dtype: DType,
    location: &str,
) -> Result<Tensor> {
    let count = header.len();
    let block_elems = (BLOCK_BYTES / header.dtype.itemsize()).max(1);
    let mut values: Vec<T> = Vec::with_capacity(count);
    advise_huge_pages(&mut values);
    let mut first = 0;
    while first < count {
        let n = block_elems.min(count - first);
        let block = NpyArray {
            shape: vec![n],
            data: read_elements(r, header, first, n, location)?,
        };
        // Converted as `Tensor::to_dtype` converts, so both paths give identical values.
        values.extend(
            block
                .into_tensor(&Device::Cpu)?
                .to_dtype(dtype)?
                .to_vec1::<T>()?,
        );
        first += n;
    }
    Ok(Tensor::from_vec(
        values,
        header.shape.clone(),
        &Device::Cpu,
    )?)
}

/// Checks that nothing follows the data (also lets a zip reader verify its CRC at EOF).
fn expect_end(r: &mut (impl Read + ?Sized), header: &NpyHeader, location: &str) -> Result<()> {
    let mut probe = [0u8; 1];
    loop {
        match r.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(NpzError::TrailingBytes {
                    location: location.to_owned(),
                    expected: header.header_bytes + header.data_bytes,
                    actual: header.header_bytes + header.data_bytes + 1,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(location, e)),
        }
    }
}

fn write_elements<T: Element>(w: &mut impl Write, values: &[T]) -> std::io::Result<()> {
    let mut buf = vec![0u8; BLOCK_BYTES.min(values.len().max(1) * T::SIZE)];
    let per_block = buf.len() / T::SIZE;
    for block in values.chunks(per_block.max(1)) {
        let bytes = &mut buf[..block.len() * T::SIZE];
        for (out, value) in bytes.chunks_exact_mut(T::SIZE).zip(block) {
            value.to_le_bytes_into(out);
        }
        w.write_all(bytes)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Header parsing

/// The subset of Python literals an npy header dict can contain.
#[derive(Debug)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Seq(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
    None,
}

/// Recursive-descent parser over the header text, with bounded nesting.
struct LiteralParser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl LiteralParser<'_> {
    fn skip_ws(&mut self) {
        while self
            .text
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> std::result::Result<PyValue, String> {
        if depth > MAX_NESTING {
            return Err("nesting too deep".into());
        }
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                while self.peek() != Some(b'}') {
                    let key = self.value(depth + 1)?;
                    if self.peek() != Some(b':') {
                        return Err(format!("expected ':' at byte {}", self.pos));
                    }
                    self.pos += 1;
                    entries.push((key, self.value(depth + 1)?));
                    if !self.separator(b'}')? {
                        break;
                    }
                }
                self.close(b'}')?;
                Ok(PyValue::Dict(entries))
            }
            Some(open @ (b'(' | b'[')) => {
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                while self.peek() != Some(close) {
                    items.push(self.value(depth + 1)?);
                    if !self.separator(close)? {
                        break;
                    }
                }
                self.close(close)?;
                Ok(PyValue::Seq(items))
            }
            Some(quote @ (b'\'' | b'"')) => {
                self.pos += 1;
                let mut s = Vec::new();
                loop {
                    match self.text.get(self.pos).copied() {
                        None => return Err("unterminated string".into()),
                        Some(b) if b == quote => break,
                        Some(b'\\') => {
                            self.pos += 1;
                            let escaped = self
                                .text
                                .get(self.pos)
                                .copied()
                                .ok_or("unterminated string")?;
                            s.push(escaped);
                        }
                        Some(b) => s.push(b),
                    }
                    self.pos += 1;
                }
                self.pos += 1;
                String::from_utf8(s)
                    .map(PyValue::Str)
                    .map_err(|_| "string is not UTF-8".into())
            }
            Some(b'0'..=b'9') => {
                let start = self.pos;
                while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                let digits =
                    std::str::from_utf8(&self.text[start..self.pos]).map_err(|e| e.to_string())?;
                let n = digits
                    .parse::<u64>()
                    .map_err(|_| format!("integer {digits} out of range"))?;
                // Python 2 wrote longs as `10L`.
                if matches!(self.text.get(self.pos), Some(b'L' | b'l')) {
                    self.pos += 1;
                }
                Ok(PyValue::Int(n))
            }
            Some(b'-') => Err("negative dimension".into()),
            Some(_) => {
                for (word, value) in [
                    ("True", PyValue::Bool(true)),
                    ("False", PyValue::Bool(false)),
                    ("None", PyValue::None),
                ] {
                    if self.text[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(value);
                    }
                }
                Err(format!("unexpected character at byte {}", self.pos))
            }
            None => Err("unexpected end of header".into()),
        }
    }

    /// After an item: consumes a `,` and returns true, or sees `close` and returns false.
    fn separator(&mut self, close: u8) -> std::result::Result<bool, String> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => Ok(false),
            _ => Err(format!(
                "expected ',' or '{}' at byte {}",
                close as char, self.pos
            )),
        }
    }

    fn close(&mut self, close: u8) -> std::result::Result<(), String> {
        if self.peek() == Some(close) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", close as char, self.pos))
        }
    }
}

/// Maps a numpy descr string to an element type and byte order.
fn parse_descr(descr: &str, location: &str) -> Result<(NpyDtype, bool)> {
    let unsupported = || NpzError::UnsupportedDtype {
        location: location.to_owned(),
        descr: format!("'{descr}'"),
    };
    if !descr.is_ascii() {
        return Err(unsupported());
    }
    // `=` means the writer's native order; npyz only knows explicit orders.
    let explicit = match descr.strip_prefix('=') {
        Some(rest) if cfg!(target_endian = "big") => format!(">{rest}"),
        Some(rest) => format!("<{rest}"),
        None => descr.to_owned(),
    };
    let ty: TypeStr = explicit.parse().map_err(|_| unsupported())?;
    if ty.type_char() == TypeChar::Object {
        return Err(NpzError::ObjectArray {
            location: location.to_owned(),
            descr: descr.to_owned(),
        });
    }
    let dtype = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Bool, 1) => NpyDtype::Bool,
        (TypeChar::Uint, 1) => NpyDtype::U8,
        (TypeChar::Int, 1) => NpyDtype::I8,
        (TypeChar::Uint, 2) => NpyDtype::U16,
        (TypeChar::Int, 2) => NpyDtype::I16,
        (TypeChar::Uint, 4) => NpyDtype::U32,
        (TypeChar::Int, 4) => NpyDtype::I32,
        (TypeChar::Int, 8) => NpyDtype::I64,
        (TypeChar::Float, 2) => NpyDtype::F16,
        (TypeChar::Float, 4) => NpyDtype::F32,
        (TypeChar::Float, 8) => NpyDtype::F64,
        _ => return Err(unsupported()),
    };
    Ok((dtype, ty.endianness() == Endianness::Big))
}

/// Interprets the parsed header dict; `available` bounds the data size.
fn interpret_header(
    dict: PyValue,
    header_bytes: u64,
    available: u64,
    location: &str,
) -> Result<NpyHeader> {
    let bad = |reason: &str| NpzError::BadHeader {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let PyValue::Dict(entries) = dict else {
        return Err(bad("header is not a dict"));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        let PyValue::Str(key) = key else {
            return Err(bad("dict key is not a string"));
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => return Err(bad(&format!("unexpected key '{other}'"))),
        };
        if slot.replace(value).is_some() {
            return Err(bad(&format!("key '{key}' given twice")));
        }
    }
    let descr = match descr.ok_or_else(|| bad("missing key 'descr'"))? {
        PyValue::Str(s) => s,
        PyValue::Seq(_) => {
            return Err(NpzError::UnsupportedDtype {
                location: location.to_owned(),
                descr: "structured (record) dtype".into(),
            })
        }
        _ => return Err(bad("'descr' is not a string")),
    };
    let fortran_order = match fortran.ok_or_else(|| bad("missing key 'fortran_order'"))? {
        PyValue::Bool(b) => b,
        _ => return Err(bad("'fortran_order' is not a bool")),
    };
    let dims = match shape.ok_or_else(|| bad("missing key 'shape'"))? {
        PyValue::Seq(items) => items
            .into_iter()
            .map(|v| match v {
                PyValue::Int(n) => Ok(n),
                _ => Err(bad("shape entries must be non-negative integers")),
            })
            .collect::<Result<Vec<u64>>>()?,
        _ => return Err(bad("'shape' is not a tuple")),
    };
    let (dtype, big_endian) = parse_descr(&descr, location)?;
    let overflow = || NpzError::SizeOverflow {
        location: location.to_owned(),
        shape: dims.clone(),
    };
    // Zero-length axes are counted as 1 here so that an empty array cannot carry a shape whose
    // other axes overflow every later size computation.
    let addressable = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
        .and_then(|n| n.checked_mul(dtype.itemsize() as u64))
        .ok_or_else(overflow)?;
    usize::try_from(addressable).map_err(|_| overflow())?;
    let data_bytes = if dims.contains(&0) { 0 } else { addressable };
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| overflow())?;
    let needed = header_bytes.checked_add(data_bytes).ok_or_else(overflow)?;
    if needed > available {
        return Err(NpzError::Truncated {
            location: location.to_owned(),
            expected: needed,
            available,
        });
    }
    if needed < available {
        return Err(NpzError::TrailingBytes {
            location: location.to_owned(),
            expected: needed,
            actual: available,
        });
    }
    Ok(NpyHeader {
        dtype,
        shape,
        fortran_order,
        big_endian,
        header_bytes,
        data_bytes,
    })
}

/// Reads and checks the header of an npy stream holding exactly `available` bytes, leaving
/// `r` at the first data byte.
fn read_header(r: &mut (impl Read + ?Sized), available: u64, location: &str) -> Result<NpyHeader> {
    let mut prefix = [0u8; 8];
    if available < 10 {
        // Too short for any header: a truncated npy if what is there starts like one.
        let head = &mut prefix[..available.min(8) as usize];
        read_exact_or_truncated(r, head, location, 10, 0)?;
        let looks_like_npy = head.iter().zip(NPY_MAGIC).all(|(a, b)| a == b);
        return Err(if looks_like_npy && !head.is_empty() {
            NpzError::Truncated {
                location: location.to_owned(),
                expected: 10,
                available,
            }
        } else {
            NpzError::BadMagic {
                location: location.to_owned(),
            }
        });
    }
    read_exact_or_truncated(r, &mut prefix, location, 10, 0)?;
    if &prefix[..6] != NPY_MAGIC {
        return Err(NpzError::BadMagic {
            location: location.to_owned(),
        });
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (len_bytes, header_len) = match (major, minor) {
        (1, 0) => {
            let mut raw = [0u8; 2];
            read_exact_or_truncated(r, &mut raw, location, 10, 8)?;
            (2u64, u16::from_le_bytes(raw) as u64)
        }
        (2, 0) | (3, 0) => {
            let mut raw = [0u8; 4];
            read_exact_or_truncated(r, &mut raw, location, 12, 8)?;
            (4u64, u32::from_le_bytes(raw) as u64)
        }
        _ => {
            return Err(NpzError::UnsupportedVersion {
                location: location.to_owned(),
                major,
                minor,
            })
        }
    };
    let header_bytes = 8 + len_bytes + header_len;
    if header_bytes > available {
        return Err(NpzError::Truncated {
            location: location.to_owned(),
            expected: header_bytes,
            available,
        });
    }
    if header_len > MAX_HEADER_LEN as u64 {
        return Err(NpzError::BadHeader {
            location: location.to_owned(),
            reason: format!("header of {header_len} bytes exceeds the {MAX_HEADER_LEN}-byte limit"),
        });
    }
    let mut text = vec![0u8; header_len as usize];
    read_exact_or_truncated(r, &mut text, location, header_bytes, 8 + len_bytes)?;
    let mut parser = LiteralParser {
        text: &text,
        pos: 0,
    };
    let dict = parser.value(0).map_err(|reason| NpzError::BadHeader {
        location: location.to_owned(),
        reason,
    })?;
    // Only padding may follow the dict.
    if parser.peek().is_some_and(|b| b != 0) {
        return Err(NpzError::BadHeader {
            location: location.to_owned(),
            reason: "text after the header dict".into(),
        });
    }
    interpret_header(dict, header_bytes, available, location)
}

fn format_header(array: &NpyArray) -> Vec<u8> {
    let dims: Vec<String> = array.shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        array.dtype().descr()
    );
    // Version 1.0 has a u16 length field; fall back to 2.0 for giant shapes.
    let (version, len_bytes) = if dict.len() + 10 + ARRAY_ALIGN < usize::from(u16::MAX) {
        (1u8, 2usize)
    } else {
        (2u8, 4usize)
    };
    let unpadded = NPY_MAGIC.len() + 2 + len_bytes + dict.len() + 1;
    let padding = (ARRAY_ALIGN - unpadded % ARRAY_ALIGN) % ARRAY_ALIGN;
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(unpadded + padding);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[version, 0]);
    if len_bytes == 2 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + padding, b' ');
    out.push(b'\n');
    out
}

/// Writes `array` as a complete npy stream (header + little-endian C-order data).
pub fn write_npy_to(w: &mut impl Write, array: &NpyArray) -> std::io::Result<()> {
    w.write_all(&format_header(array))?;
    with_data!(&array.data, v => write_elements(w, v))
}

/// Size in bytes of the npy stream [`write_npy_to`] produces for `array`.
fn npy_stream_len(array: &NpyArray) -> u64 {
    format_header(array).len() as u64 + (array.len() * array.dtype().itemsize()) as u64
}

fn io_error(location: &str, source: std::io::Error) -> NpzError {
    NpzError::Io {
        location: location.to_owned(),
        source,
    }
}

fn zip_error(location: &str, source: zip::result::ZipError) -> NpzError {
    NpzError::Zip {
        location: location.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Public file API

/// Reads only the header of the `.npy` file at `path`.
pub fn read_npy_header(path: impl AsRef<Path>) -> Result<NpyHeader> {
    let path = path.as_ref();
    let location = path.display().to_string();
    let file = File::open(path).map_err(|e| io_error(&location, e))?;
    let len = file.metadata().map_err(|e| io_error(&location, e))?.len();
    read_header(&mut BufReader::new(file), len, &location)
}

/// Reads the `.npy` file at `path`.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let location = path.display().to_string();
    let file = File::open(path).map_err(|e| io_error(&location, e))?;
    let len = file.metadata().map_err(|e| io_error(&location, e))?.len();
    let mut reader = BufReader::with_capacity(BLOCK_BYTES, file);
    let header = read_header(&mut reader, len, &location)?;
    let array = read_data(&mut reader, &header, &location)?;
    expect_end(&mut reader, &header, &location)?;
    Ok(array)
}

/// Writes `array` to `path` as `.npy` (atomically: a failure leaves no partial file).
pub fn write_npy(path: impl AsRef<Path>, array: &NpyArray) -> Result<()> {
    let path = path.as_ref();
    let location = path.display().to_string();
    write_atomically(path, |w| write_npy_to(w, array)).map_err(|e| io_error(&location, e))
}

/// Reads every array of the `.npz` archive at `path`, in archive order.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, NpyArray)>> {
    let mut reader = NpzReader::open(path)?;
    let keys = reader.keys().to_vec();
    keys.into_iter()
        .map(|key| {
            let array = reader.array(&key)?;
            Ok((key, array))
        })
        .collect()
}

/// Writes `arrays` to `path` as an `.npz` archive, entries named `NAME.npy` as `numpy.savez`
/// does; `compressed` deflates each entry (`numpy.savez_compressed`). Atomic.
pub fn write_npz(
    path: impl AsRef<Path>,
    arrays: &[(&str, &NpyArray)],
    compressed: bool,
) -> Result<()> {
    let path = path.as_ref();
    let location = path.display().to_string();
    for (i, (name, _)) in arrays.iter().enumerate() {
        if name.is_empty() || arrays[..i].iter().any(|(other, _)| other == name) {
            return Err(NpzError::BadArrayName {
                path: path.to_owned(),
                name: (*name).to_owned(),
            });
        }
    }
    let method = if compressed {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    };
    // Zip-level failures while writing are I/O failures underneath; carry them as such.
    let to_io = |e: zip::result::ZipError| match e {
        zip::result::ZipError::Io(io) => io,
        other => std::io::Error::other(other),
    };
    write_atomically(path, |w| {
        let mut zip = ZipWriter::new(w);
        for (name, array) in arrays {
            let options = SimpleFileOptions::default()
                .compression_method(method)
                .large_file(npy_stream_len(array) >= u64::from(u32::MAX));
            zip.start_file(format!("{name}.npy"), options)
                .map_err(to_io)?;
            write_npy_to(&mut zip, array)?;
        }
        zip.finish().map_err(to_io)?;
        Ok(())
    })
    .map_err(|e| io_error(&location, e))
}

/// Lazy `.npz` reader: lists the arrays, and decodes one at a time on request.
pub struct NpzReader {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    file_len: u64,
    /// Array names (entry names without `.npy`) and their entry indices, in archive order.
    entries: Vec<(String, usize)>,
    keys: Vec<String>,
}

impl NpzReader {
    /// Opens the archive and reads its directory (no array data).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let location = path.display().to_string();
        let file = File::open(&path).map_err(|e| io_error(&location, e))?;
        let file_len = file.metadata().map_err(|e| io_error(&location, e))?.len();
        let archive = ZipArchive::new(BufReader::with_capacity(BLOCK_BYTES, file))
            .map_err(|e| zip_error(&location, e))?;
        let mut entries = Vec::new();
        for index in 0..archive.len() {
            let Some(name) = archive.name_for_index(index) else {
                continue;
            };
            let name = name.map_err(|e| zip_error(&location, e))?;
            if name.ends_with('/') {
                continue;
            }
            let key = name.strip_suffix(".npy").unwrap_or(&name).to_owned();
            entries.push((key, index));
        }
        let keys = entries.iter().map(|(k, _)| k.clone()).collect();
        Ok(Self {
            path,
            archive,
            file_len,
            entries,
            keys,
        })
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Array names, in archive order (entry names without `.npy`).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Reads only the header of array `name`.
    pub fn header(&mut self, name: &str) -> Result<NpyHeader> {
        self.with_entry(name, |reader, available, location| {
            read_header(reader, available, location)
        })
    }

    /// Decodes array `name` (`"x"` or `"x.npy"`).
    pub fn array(&mut self, name: &str) -> Result<NpyArray> {
        self.with_entry(name, |reader, available, location| {
            let header = read_header(reader, available, location)?;
            let array = read_data(reader, &header, location)?;
            expect_end(reader, &header, location)?;
            Ok(array)
        })
    }

    /// Decodes array `name` into a CPU tensor of `dtype`, with the values
    /// `self.array(name)?.into_tensor(&Device::Cpu)?.to_dtype(dtype)` gives. When the stored
    /// type differs from `dtype`, C-ordered data is converted block by block while it is read,
    /// so the stored-type array never exists in full: an `f64` array read as `F32` peaks at its
    /// `f32` size instead of `f64` + `f32`.
    pub fn tensor(&mut self, name: &str, dtype: DType) -> Result<Tensor> {
        self.with_entry(name, |reader, available, location| {
            let header = read_header(reader, available, location)?;
            let tensor = read_tensor(reader, &header, dtype, location)?;
            expect_end(reader, &header, location)?;
            Ok(tensor)
        })
    }

    /// Opens entry `name`, checks its declared size is plausible, and hands a reader bounded to
    /// that size to `read`.
    fn with_entry<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&mut dyn Read, u64, &str) -> Result<T>,
    ) -> Result<T> {
        let key = name.strip_suffix(".npy").unwrap_or(name);
        let Some(&(_, index)) = self.entries.iter().find(|(k, _)| k == key) else {
            return Err(NpzError::MissingArray {
                path: self.path.clone(),
                name: key.to_owned(),
                available: self.keys.clone(),
            });
        };
        let location = format!("{} (array '{key}')", self.path.display());
        let entry = self
            .archive
            .by_index(index)
            .map_err(|e| zip_error(&location, e))?;
        let (declared, compressed, method) =
            (entry.size(), entry.compressed_size(), entry.compression());
        let plausible = compressed <= self.file_len
            && match method {
                CompressionMethod::Stored => declared == compressed,
                _ => {
                    declared
                        <= compressed
                            .saturating_mul(DEFLATE_MAX_RATIO)
                            .saturating_add(1024)
                }
            };
        if !plausible {
            return Err(NpzError::ImplausibleEntrySize {
                location,
                declared,
                compressed,
                method: method.to_string(),
            });
        }
        // One byte past the declared size is let through so `expect_end` can notice it.
        let mut bounded = entry.take(declared.saturating_add(1));
        read(&mut bounded, declared, &location)
    }
}

impl std::fmt::Debug for NpzReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpzReader")
            .field("path", &self.path)
            .field("keys", &self.keys)
            .finish()
    }
}

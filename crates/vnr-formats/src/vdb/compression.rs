//! OpenVDB's data compression: per-grid flags, ZIP (zlib) and Blosc chunks.
//!
//! Both compressed forms are an `i64` byte count followed by the bytes; a count ≤ 0 means the
//! data was stored uncompressed (`-count` bytes), which OpenVDB does when compression would not
//! shrink it.

use std::borrow::Cow;
use std::io::Read;

use super::bytes::{Cursor, PutLe};
use super::error::{Result, VdbError};

/// zlib compression of value buffers.
pub const COMPRESS_ZIP: u32 = 0x1;
/// Only active values are stored; inactive ones are rebuilt from the background / a selection mask.
pub const COMPRESS_ACTIVE_MASK: u32 = 0x2;
/// Blosc compression of value buffers.
pub const COMPRESS_BLOSC: u32 = 0x4;

/// OpenVDB's text for a compression flag set (its `file_compression` metadata).
pub fn compression_to_string(flags: u32) -> String {
    let mut parts = Vec::new();
    if flags & COMPRESS_ZIP != 0 {
        parts.push("zip");
    }
    if flags & COMPRESS_BLOSC != 0 {
        parts.push("blosc");
    }
    let mut s = if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(" + ")
    };
    if flags & COMPRESS_ACTIVE_MASK != 0 {
        s.push_str(" + active values");
    }
    s
}

/// Reads one value buffer of exactly `nbytes` decoded bytes, compressed per `flags`.
pub(crate) fn read_chunk<'a>(
    cur: &mut Cursor<'a>,
    flags: u32,
    nbytes: usize,
) -> Result<Cow<'a, [u8]>> {
    if flags & (COMPRESS_ZIP | COMPRESS_BLOSC) == 0 {
        return Ok(Cow::Borrowed(cur.take(nbytes, "uncompressed values")?));
    }
    let offset = cur.offset();
    let count = cur.i64("compressed chunk size")?;
    if count <= 0 {
        let stored = count.unsigned_abs();
        if stored != nbytes as u64 {
            return Err(VdbError::corrupt(
                offset,
                format!("expected a {nbytes}-byte uncompressed chunk, found {stored} bytes"),
            ));
        }
        return Ok(Cow::Borrowed(cur.take(nbytes, "uncompressed chunk")?));
    }
    let count =
        usize::try_from(count).map_err(|_| VdbError::corrupt(offset, "chunk size overflows"))?;
    let data = cur.take(count, "compressed chunk")?;
    let decoded = if flags & COMPRESS_BLOSC != 0 {
        blosc_decompress(data, nbytes, offset + 8)?
    } else {
        zlib_decompress(data, nbytes, offset + 8)?
    };
    Ok(Cow::Owned(decoded))
}

fn zlib_decompress(data: &[u8], nbytes: usize, offset: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; nbytes];
    let mut dec = flate2::read::ZlibDecoder::new(data);
    let bad = |e: std::io::Error| {
        VdbError::corrupt(
            offset,
            format!("zlib chunk does not decode to {nbytes} bytes: {e}"),
        )
    };
    dec.read_exact(&mut out).map_err(bad)?;
    // Bounded: at most one more byte is read, so a zip bomb cannot expand here.
    let mut extra = [0u8; 1];
    if dec.read(&mut extra).map_err(bad)? != 0 {
        return Err(VdbError::corrupt(
            offset,
            format!("zlib chunk decodes to more than {nbytes} bytes"),
        ));
    }
    Ok(out)
}

/// Appends `data` as OpenVDB's ZIP chunk: compressed if that is smaller, else stored (count < 0).
pub(crate) fn zip_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let zipped = enc.write_all(data).and_then(|_| enc.finish());
    match zipped {
        Ok(z) if z.len() < data.len() => {
            out.put_i64(z.len() as i64);
            out.extend_from_slice(&z);
        }
        _ => {
            out.put_i64(-(data.len() as i64));
            out.extend_from_slice(data);
        }
    }
}

const BLOSC_HEADER: usize = 16;
const BLOSC_DOSHUFFLE: u8 = 0x1;
const BLOSC_MEMCPYED: u8 = 0x2;
const BLOSC_DOBITSHUFFLE: u8 = 0x4;
const BLOSC_DODELTA: u8 = 0x8;
const BLOSC_DONT_SPLIT: u8 = 0x10;

fn read_u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes one Blosc 1 buffer (the format c-blosc 1.x writes, as OpenVDB stores it) that must
/// expand to exactly `nbytes` bytes. Codecs: blosclz, LZ4 (and LZ4HC), zlib; filters: byte
/// shuffle, bit shuffle. Snappy, zstd and the delta filter give
/// [`VdbError::UnsupportedCompression`].
pub fn blosc_decode(data: &[u8], nbytes: usize) -> Result<Vec<u8>> {
    blosc_decompress(data, nbytes, 0)
}

/// A 16-byte header, block starts, then per block one or `typesize` streams, each an `i32`
/// size + codec data; then the block's shuffle filter is undone.
fn blosc_decompress(data: &[u8], nbytes: usize, offset: u64) -> Result<Vec<u8>> {
    let corrupt = |why: String| VdbError::corrupt(offset, format!("blosc chunk: {why}"));
    let unsupported = |why: String| VdbError::UnsupportedCompression {
        offset,
        reason: why,
    };
    if data.len() < BLOSC_HEADER {
        return Err(corrupt(format!(
            "{} bytes is shorter than its 16-byte header",
            data.len()
        )));
    }
    let (version, flags, typesize) = (data[0], data[2], usize::from(data[3]));
    let header_u32 = |at| read_u32_at(data, at).unwrap_or(0) as usize;
    let (declared, blocksize, cbytes) = (header_u32(4), header_u32(8), header_u32(12));
    if version == 0 || version > 2 {
        return Err(unsupported(format!("blosc format version {version}")));
    }
    if declared != nbytes {
        return Err(corrupt(format!(
            "holds {declared} bytes, expected {nbytes}"
        )));
    }
    if cbytes > data.len() {
        return Err(corrupt(format!(
            "declares {cbytes} compressed bytes, only {} present",
            data.len()
        )));
    }
    if flags & BLOSC_MEMCPYED != 0 {
        let raw = data
            .get(BLOSC_HEADER..BLOSC_HEADER + nbytes)
            .ok_or_else(|| corrupt("memcpyed data shorter than declared".into()))?;
        return Ok(raw.to_vec());
    }
    if flags & BLOSC_DODELTA != 0 {
        return Err(unsupported("blosc delta filter".into()));
    }
    let codec = flags >> 5;
    let codec_name = match codec {
        0 => "blosclz",
        1 => "lz4",
        2 => "snappy",
        3 => "zlib",
        4 => "zstd",
        _ => "unknown",
    };
    if !matches!(codec, 0 | 1 | 3) {
        return Err(unsupported(format!("blosc codec {codec_name}")));
    }
    if nbytes == 0 {
        return Ok(Vec::new());
    }
    if blocksize == 0 || typesize == 0 {
        return Err(corrupt(format!(
            "block size {blocksize}, type size {typesize}"
        )));
    }
    let nblocks = nbytes.div_ceil(blocksize);
    let starts_end = nblocks
        .checked_mul(4)
        .and_then(|n| n.checked_add(BLOSC_HEADER))
        .filter(|end| *end <= cbytes)
        .ok_or_else(|| corrupt(format!("{nblocks} block starts do not fit")))?;
    let src = &data[..cbytes];
    let mut out = vec![0u8; nbytes];
    // The header's block size is untrusted; no block is longer than the whole buffer.
    let mut scratch = vec![0u8; blocksize.min(nbytes)];
    for (block, dest) in out.chunks_mut(blocksize).enumerate() {
        let start = read_u32_at(src, BLOSC_HEADER + 4 * block).unwrap_or(0) as usize;
        if start < starts_end || start >= src.len() {
            return Err(corrupt(format!(
                "block {block} starts at {start}, outside the chunk"
            )));
        }
        let leftover = dest.len() < blocksize;
        let split = flags & BLOSC_DONT_SPLIT == 0
            && !leftover
            && typesize <= 16
            && dest.len() % typesize == 0;
        let shuffle = flags & BLOSC_DOSHUFFLE != 0 && typesize > 1;
        let bitshuffle = flags & BLOSC_DOBITSHUFFLE != 0 && dest.len() >= typesize && !shuffle;
        let target: &mut [u8] = if shuffle || bitshuffle {
            &mut scratch[..dest.len()]
        } else {
            &mut *dest
        };
        // Old c-blosc split only blocks of ≥128 elements and set no flag; try the split layout
        // first when allowed and fall back to one stream, accepting only an exact decode.
        let decoded = (split && decode_streams(&src[start..], target, typesize, codec).is_ok())
            || decode_streams(&src[start..], target, 1, codec).is_ok();
        if !decoded {
            return Err(corrupt(format!(
                "block {block} does not decode with {codec_name}"
            )));
        }
        if shuffle {
            unshuffle(&scratch[..dest.len()], dest, typesize);
        } else if bitshuffle {
            bit_unshuffle(&scratch[..dest.len()], dest, typesize, version);
        }
    }
    Ok(out)
}

/// Decodes `streams` consecutive (size, data) streams that together fill `dest` exactly.
fn decode_streams(
    mut src: &[u8],
    dest: &mut [u8],
    streams: usize,
    codec: u8,
) -> std::result::Result<(), ()> {
    let each = dest.len() / streams;
    for part in dest.chunks_mut(each) {
        let size = read_u32_at(src, 0).ok_or(())? as i32;
        let size = usize::try_from(size).map_err(|_| ())?;
        let body = src.get(4..4 + size).ok_or(())?;
        src = &src[4 + size..];
        if size == part.len() {
            part.copy_from_slice(body);
            continue;
        }
        let n = if codec == 0 {
            blosclz_decompress(body, part)?
        } else if codec == 1 {
            lz4_flex::block::decompress_into(body, part).map_err(|_| ())?
        } else {
            let mut dec = flate2::read::ZlibDecoder::new(body);
            dec.read_exact(part).map_err(|_| ())?;
            part.len()
        };
        if n != part.len() {
            return Err(());
        }
    }
    Ok(())
}

/// Distance added to long (16-bit) blosclz match offsets.
const BLOSCLZ_MAX_DISTANCE: usize = 8191;

/// Decodes a blosclz (FastLZ-derived) stream into `out`, returning the bytes written.
/// Control byte < 32: a literal run of `ctrl + 1` bytes. Otherwise a match: length from the top
/// three bits (7 = extended by following bytes while 255), offset from the low five bits and
/// the next byte (`31, 255` = a 16-bit offset follows).
fn blosclz_decompress(input: &[u8], out: &mut [u8]) -> std::result::Result<usize, ()> {
    let mut ip = 0usize;
    let mut op = 0usize;
    let next = |ip: &mut usize| -> std::result::Result<usize, ()> {
        let b = *input.get(*ip).ok_or(())?;
        *ip += 1;
        Ok(usize::from(b))
    };
    if input.is_empty() {
        return Ok(0);
    }
    let mut ctrl = next(&mut ip)? & 31;
    loop {
        if ctrl >= 32 {
            let mut len = (ctrl >> 5) - 1;
            let mut ofs = (ctrl & 31) << 8;
            if len == 6 {
                loop {
                    let code = next(&mut ip)?;
                    len += code;
                    if code != 255 {
                        break;
                    }
                }
            }
            let code = next(&mut ip)?;
            len += 3;
            let mut distance = ofs + code + 1;
            if code == 255 && ofs == 31 << 8 {
                ofs = next(&mut ip)? << 8;
                ofs += next(&mut ip)?;
                distance = ofs + BLOSCLZ_MAX_DISTANCE + 1;
            }
            if op + len > out.len() || distance > op {
                return Err(());
            }
            // Byte by byte: matches may overlap their own output (runs).
            for k in op..op + len {
                out[k] = out[k - distance];
            }
            op += len;
        } else {
            let run = ctrl + 1;
            let src = input.get(ip..ip + run).ok_or(())?;
            out.get_mut(op..op + run).ok_or(())?.copy_from_slice(src);
            op += run;
            ip += run;
        }
        if ip >= input.len() {
            break;
        }
        ctrl = next(&mut ip)?;
    }
    Ok(op)
}

/// Undoes the bitshuffle filter (bitshuffle's `bit_elem` transpose) on whole groups of 8
/// elements; trailing bytes are stored as is. Format version 2 only bit-shuffled blocks whose
/// element count is a multiple of 8.
fn bit_unshuffle(src: &[u8], dest: &mut [u8], typesize: usize, version: u8) {
    let elements = src.len() / typesize;
    let shuffled = if version == 2 && elements % 8 != 0 {
        0
    } else {
        elements - elements % 8
    };
    // Bit `b` of byte `j` of element `i` is stored at bit row `j * 8 + b`, column `i`:
    // row r occupies `shuffled / 8` bytes starting at `r * shuffled / 8`.
    let row_bytes = shuffled / 8;
    dest[..shuffled * typesize].fill(0);
    for j in 0..typesize {
        for b in 0..8 {
            let row = &src[(j * 8 + b) * row_bytes..(j * 8 + b + 1) * row_bytes];
            for (i, out) in dest[..shuffled * typesize]
                .chunks_exact_mut(typesize)
                .enumerate()
            {
                let bitval = (row[i / 8] >> (i % 8)) & 1;
                out[j] |= bitval << b;
            }
        }
    }
    let tail = shuffled * typesize;
    dest[tail..].copy_from_slice(&src[tail..]);
}

/// Undoes Blosc's byte shuffle: byte `j` of element `i` was stored at `j * elements + i`.
fn unshuffle(src: &[u8], dest: &mut [u8], typesize: usize) {
    let elements = src.len() / typesize;
    for (i, value) in dest.chunks_exact_mut(typesize).enumerate() {
        for (j, byte) in value.iter_mut().enumerate() {
            *byte = src[j * elements + i];
        }
    }
    let tail = elements * typesize;
    dest[tail..].copy_from_slice(&src[tail..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a blosc buffer with one LZ4 stream per block and byte shuffle.
    fn blosc_lz4(raw: &[u8], typesize: usize, blocksize: usize) -> Vec<u8> {
        let nblocks = raw.len().div_ceil(blocksize);
        let mut body = Vec::new();
        let mut starts = Vec::new();
        let header_len = BLOSC_HEADER + 4 * nblocks;
        for block in raw.chunks(blocksize) {
            starts.push((header_len + body.len()) as u32);
            let elements = block.len() / typesize;
            let mut shuffled = block.to_vec();
            for i in 0..elements {
                for j in 0..typesize {
                    shuffled[j * elements + i] = block[i * typesize + j];
                }
            }
            let c = lz4_flex::block::compress(&shuffled);
            body.extend_from_slice(&(c.len() as u32).to_le_bytes());
            body.extend_from_slice(&c);
        }
        let mut out = vec![
            2,
            1,
            BLOSC_DOSHUFFLE | BLOSC_DONT_SPLIT | (1 << 5),
            typesize as u8,
        ];
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&(blocksize as u32).to_le_bytes());
        out.extend_from_slice(&((header_len + body.len()) as u32).to_le_bytes());
        for s in starts {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn blosc_lz4_shuffled_round_trip() {
        let raw: Vec<u8> = (0..1000u32).flat_map(|v| (v / 7).to_le_bytes()).collect();
        let packed = blosc_lz4(&raw, 4, 256);
        assert_eq!(blosc_decompress(&packed, raw.len(), 0).unwrap(), raw);
        assert!(blosc_decompress(&packed, raw.len() + 1, 0).is_err());
        for cut in 0..packed.len() {
            let _ = blosc_decompress(&packed[..cut], raw.len(), 0);
        }
    }

    #[test]
    fn snappy_is_refused_clearly() {
        let mut packed = blosc_lz4(&[1, 2, 3, 4], 4, 256);
        packed[2] = (packed[2] & 0x1f) | (2 << 5);
        let err = blosc_decompress(&packed, 4, 0).unwrap_err();
        assert!(err.to_string().contains("snappy"), "{err}");
    }

    #[test]
    fn zip_chunk_round_trips_compressed_and_stored() {
        for data in [vec![0u8; 4000], vec![7u8, 1, 9]] {
            let mut out = Vec::new();
            zip_chunk(&mut out, &data);
            let mut cur = Cursor::new(&out, 0);
            assert_eq!(
                &*read_chunk(&mut cur, COMPRESS_ZIP, data.len()).unwrap(),
                &data[..]
            );
        }
    }

    #[test]
    fn compression_names_match_openvdb() {
        assert_eq!(compression_to_string(0), "none");
        assert_eq!(compression_to_string(6), "blosc + active values");
        assert_eq!(compression_to_string(3), "zip + active values");
    }
}

//! A bounds-checked little-endian cursor over a byte slice: every read says what it wanted and
//! fails with [`VdbError::Truncated`] instead of panicking.

use super::error::{Result, VdbError};

/// Reads little-endian values from `data`, whose first byte sits at absolute file offset `base`.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], base: u64) -> Self {
        Cursor { data, pos: 0, base }
    }

    /// Absolute file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Fails unless `needed` more bytes are available; used before allocating.
    pub(crate) fn ensure(&self, needed: u64, what: &'static str) -> Result<()> {
        if needed > self.remaining() as u64 {
            return Err(VdbError::Truncated {
                what,
                offset: self.offset(),
                needed,
                available: self.remaining() as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        self.ensure(n as u64, what)?;
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn f64(&mut self, what: &'static str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn vec3d(&mut self, what: &'static str) -> Result<[f64; 3]> {
        Ok([self.f64(what)?, self.f64(what)?, self.f64(what)?])
    }
    pub(crate) fn coord(&mut self, what: &'static str) -> Result<[i32; 3]> {
        Ok([self.i32(what)?, self.i32(what)?, self.i32(what)?])
    }

    /// An OpenVDB string: u32 length, then that many bytes (UTF-8 required).
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String> {
        let offset = self.offset();
        let len = self.u32(what)?;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| VdbError::corrupt(offset, format!("{what} is not valid UTF-8")))
    }

    /// A bit mask of `words` u64 words.
    pub(crate) fn mask(&mut self, words: usize, what: &'static str) -> Result<Box<[u64]>> {
        let bytes = self.take(words * 8, what)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect())
    }

    pub(crate) fn seek_absolute(&mut self, offset: u64, what: &'static str) -> Result<()> {
        let rel = offset
            .checked_sub(self.base)
            .filter(|r| *r <= self.data.len() as u64)
            .ok_or_else(|| {
                VdbError::corrupt(
                    offset,
                    format!("{what} offset {offset} lies outside the file"),
                )
            })?;
        self.pos = rel as usize;
        Ok(())
    }
}

/// Little-endian writing helpers for the writer.
pub(crate) trait PutLe {
    fn put_u32(&mut self, v: u32);
    fn put_i32(&mut self, v: i32);
    fn put_i64(&mut self, v: i64);
    fn put_f64(&mut self, v: f64);
    fn put_string(&mut self, s: &str);
    fn put_mask(&mut self, words: &[u64]);
}

impl PutLe for Vec<u8> {
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_string(&mut self, s: &str) {
        self.put_u32(s.len() as u32);
        self.extend_from_slice(s.as_bytes());
    }
    fn put_mask(&mut self, words: &[u64]) {
        for w in words {
            self.extend_from_slice(&w.to_le_bytes());
        }
    }
}

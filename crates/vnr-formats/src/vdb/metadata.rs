//! Typed metadata maps (file-level and per-grid), as OpenVDB's `MetaMap` stores them:
//! a `u32` count, then per entry name, type name, `u32` byte length and the value.

use std::collections::BTreeMap;

use super::bytes::{Cursor, PutLe};
use super::error::{Result, VdbError};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `string`
    String(String),
    /// `bool`
    Bool(bool),
    /// `int32`
    Int32(i32),
    /// `int64`
    Int64(i64),
    /// `float`
    Float(f32),
    /// `double`
    Double(f64),
    /// `vec3i`
    Vec3i([i32; 3]),
    /// `vec3s`
    Vec3s([f32; 3]),
    /// `vec3d`
    Vec3d([f64; 3]),
    /// A type this reader does not interpret, kept as raw bytes (and written back verbatim).
    Unknown {
        /// The stored type name.
        type_name: String,
        /// The stored bytes.
        bytes: Vec<u8>,
    },
}

/// Metadata by name, sorted like OpenVDB's `std::map`.
pub type MetaMap = BTreeMap<String, MetaValue>;

impl MetaValue {
    /// OpenVDB's type name for this value.
    pub fn type_name(&self) -> &str {
        match self {
            MetaValue::String(_) => "string",
            MetaValue::Bool(_) => "bool",
            MetaValue::Int32(_) => "int32",
            MetaValue::Int64(_) => "int64",
            MetaValue::Float(_) => "float",
            MetaValue::Double(_) => "double",
            MetaValue::Vec3i(_) => "vec3i",
            MetaValue::Vec3s(_) => "vec3s",
            MetaValue::Vec3d(_) => "vec3d",
            MetaValue::Unknown { type_name, .. } => type_name,
        }
    }

    /// The string, if this is a `string` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    fn decode(type_name: &str, b: &[u8]) -> Option<MetaValue> {
        let f32_at = |i: usize| Some(f32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        let f64_at = |i: usize| Some(f64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
        let i32_at = |i: usize| Some(i32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        let exact = |n: usize| (b.len() == n).then_some(());
        Some(match type_name {
            "string" => MetaValue::String(String::from_utf8(b.to_vec()).ok()?),
            "bool" => {
                exact(1)?;
                MetaValue::Bool(b[0] != 0)
            }
            "int32" => {
                exact(4)?;
                MetaValue::Int32(i32_at(0)?)
            }
            "int64" => {
                exact(8)?;
                MetaValue::Int64(i64::from_le_bytes(b.try_into().ok()?))
            }
            "float" => {
                exact(4)?;
                MetaValue::Float(f32_at(0)?)
            }
            "double" => {
                exact(8)?;
                MetaValue::Double(f64_at(0)?)
            }
            "vec3i" => {
                exact(12)?;
                MetaValue::Vec3i([i32_at(0)?, i32_at(4)?, i32_at(8)?])
            }
            "vec3s" => {
                exact(12)?;
                MetaValue::Vec3s([f32_at(0)?, f32_at(4)?, f32_at(8)?])
            }
            "vec3d" => {
                exact(24)?;
                MetaValue::Vec3d([f64_at(0)?, f64_at(8)?, f64_at(16)?])
            }
            other => MetaValue::Unknown {
                type_name: other.to_string(),
                bytes: b.to_vec(),
            },
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        match self {
            MetaValue::String(s) => body.extend_from_slice(s.as_bytes()),
            MetaValue::Bool(v) => body.push(u8::from(*v)),
            MetaValue::Int32(v) => body.put_i32(*v),
            MetaValue::Int64(v) => body.put_i64(*v),
            MetaValue::Float(v) => body.extend_from_slice(&v.to_le_bytes()),
            MetaValue::Double(v) => body.put_f64(*v),
            MetaValue::Vec3i(v) => v.iter().for_each(|c| body.put_i32(*c)),
            MetaValue::Vec3s(v) => v
                .iter()
                .for_each(|c| body.extend_from_slice(&c.to_le_bytes())),
            MetaValue::Vec3d(v) => v.iter().for_each(|c| body.put_f64(*c)),
            MetaValue::Unknown { bytes, .. } => body.extend_from_slice(bytes),
        }
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
    }
}

/// Smallest possible entry: empty name, empty type, zero-length value (three `u32`s).
const MIN_ENTRY_BYTES: u64 = 12;

pub(crate) fn read_meta_map(cur: &mut Cursor<'_>) -> Result<MetaMap> {
    let count = cur.u32("metadata count")?;
    cur.ensure(u64::from(count) * MIN_ENTRY_BYTES, "metadata entries")?;
    let mut map = MetaMap::new();
    for _ in 0..count {
        let name = cur.string("metadata name")?;
        let type_name = cur.string("metadata type name")?;
        let offset = cur.offset();
        let len = cur.u32("metadata value length")?;
        let bytes = cur.take(len as usize, "metadata value")?;
        let value = MetaValue::decode(&type_name, bytes).ok_or_else(|| {
            VdbError::corrupt(
                offset,
                format!("metadata '{name}' is not a valid {type_name} ({len} bytes)"),
            )
        })?;
        map.insert(name, value);
    }
    Ok(map)
}

pub(crate) fn write_meta_map(out: &mut Vec<u8>, map: &MetaMap) {
    out.put_u32(map.len() as u32);
    for (name, value) in map {
        out.put_string(name);
        out.put_string(value.type_name());
        value.encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let mut map = MetaMap::new();
        map.insert("s".into(), MetaValue::String("level set".into()));
        map.insert("b".into(), MetaValue::Bool(true));
        map.insert("i".into(), MetaValue::Int32(-3));
        map.insert("l".into(), MetaValue::Int64(1 << 40));
        map.insert("f".into(), MetaValue::Float(0.5));
        map.insert("d".into(), MetaValue::Double(-2.25));
        map.insert("vi".into(), MetaValue::Vec3i([1, -2, 3]));
        map.insert("vs".into(), MetaValue::Vec3s([1.5, 2.0, 3.0]));
        map.insert("vd".into(), MetaValue::Vec3d([1.0, 2.0, 3.5]));
        map.insert(
            "u".into(),
            MetaValue::Unknown {
                type_name: "mat4d".into(),
                bytes: vec![9; 128],
            },
        );
        let mut out = Vec::new();
        write_meta_map(&mut out, &map);
        assert_eq!(read_meta_map(&mut Cursor::new(&out, 0)).unwrap(), map);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut out = Vec::new();
        out.put_u32(1);
        out.put_string("x");
        out.put_string("int32");
        out.put_u32(2);
        out.extend_from_slice(&[0, 0]);
        assert!(read_meta_map(&mut Cursor::new(&out, 0)).is_err());
    }

    #[test]
    fn huge_count_fails_before_allocating() {
        let out = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_meta_map(&mut Cursor::new(&out, 0)),
            Err(VdbError::Truncated { .. })
        ));
    }
}

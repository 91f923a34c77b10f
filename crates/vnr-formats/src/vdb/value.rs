//! Voxel value types and their on-disk encodings (full precision and, for real types, half).

use half::f16;

/// A value type a grid can hold, with OpenVDB's little-endian encoding.
pub trait VdbValue: Copy + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// OpenVDB's value type name (`float`, `vec3s`, ...), as in `Tree_float_5_4_3`.
    const TYPE_NAME: &'static str;
    /// Bytes per value at full precision.
    const SIZE: usize;
    /// Whether `_HalfFloat` grids store this type as 16-bit halves (OpenVDB's `RealToHalf`).
    const HALF: bool;
    /// Decodes one value from exactly [`Self::SIZE`] bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Decodes one value from exactly [`Self::half_size`] bytes of halves.
    fn from_half_le(bytes: &[u8]) -> Self;
    /// Appends the full-precision encoding.
    fn put_le(self, out: &mut Vec<u8>);
    /// OpenVDB's `math::negative`: `-v`, or `!v` for bool. Inactive level-set values use it.
    fn negated(self) -> Self;
    /// 1 or 0 (`true`/`false` for bool): the value of a set or clear bit in bool/mask leaves.
    fn from_bool(b: bool) -> Self;
    /// Bytes per value when stored as halves.
    fn half_size() -> usize {
        if Self::HALF {
            2 * Self::components()
        } else {
            Self::SIZE
        }
    }
    /// Scalar components per value (3 for vectors).
    fn components() -> usize {
        1
    }
}

fn le<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&bytes[..N]);
    a
}

fn half_at(bytes: &[u8], i: usize) -> f32 {
    f16::from_le_bytes(le::<2>(&bytes[2 * i..])).to_f32()
}

macro_rules! scalar {
    ($t:ty, $name:literal, $half:literal, $neg:expr) => {
        impl VdbValue for $t {
            const TYPE_NAME: &'static str = $name;
            const SIZE: usize = std::mem::size_of::<$t>();
            const HALF: bool = $half;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(le(bytes))
            }
            fn from_half_le(bytes: &[u8]) -> Self {
                if $half {
                    half_at(bytes, 0) as $t
                } else {
                    <Self as VdbValue>::from_le(bytes)
                }
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn negated(self) -> Self {
                let neg: fn($t) -> $t = $neg;
                neg(self)
            }
            fn from_bool(b: bool) -> Self {
                if b {
                    1 as $t
                } else {
                    0 as $t
                }
            }
        }
    };
}

scalar!(f32, "float", true, |v| -v);
scalar!(f64, "double", true, |v| -v);
scalar!(i32, "int32", false, i32::wrapping_neg);
scalar!(i64, "int64", false, i64::wrapping_neg);

impl VdbValue for bool {
    const TYPE_NAME: &'static str = "bool";
    const SIZE: usize = 1;
    const HALF: bool = false;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn from_half_le(bytes: &[u8]) -> Self {
        <Self as VdbValue>::from_le(bytes)
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn negated(self) -> Self {
        !self
    }
    fn from_bool(b: bool) -> Self {
        b
    }
}

macro_rules! vec3 {
    ($t:ty, $name:literal, $half:literal) => {
        impl VdbValue for [$t; 3] {
            const TYPE_NAME: &'static str = $name;
            const SIZE: usize = 3 * std::mem::size_of::<$t>();
            const HALF: bool = $half;
            fn from_le(bytes: &[u8]) -> Self {
                let n = std::mem::size_of::<$t>();
                [
                    <$t as VdbValue>::from_le(&bytes[..n]),
                    <$t as VdbValue>::from_le(&bytes[n..2 * n]),
                    <$t as VdbValue>::from_le(&bytes[2 * n..3 * n]),
                ]
            }
            fn from_half_le(bytes: &[u8]) -> Self {
                if $half {
                    [
                        half_at(bytes, 0) as $t,
                        half_at(bytes, 1) as $t,
                        half_at(bytes, 2) as $t,
                    ]
                } else {
                    <Self as VdbValue>::from_le(bytes)
                }
            }
            fn put_le(self, out: &mut Vec<u8>) {
                for c in self {
                    c.put_le(out);
                }
            }
            fn negated(self) -> Self {
                [self[0].negated(), self[1].negated(), self[2].negated()]
            }
            fn components() -> usize {
                3
            }
            fn from_bool(b: bool) -> Self {
                [<$t>::from_bool(b); 3]
            }
        }
    };
}

vec3!(f32, "vec3s", true);
vec3!(f64, "vec3d", true);
vec3!(i32, "vec3i", false);

//! svox2 `ckpt.npz` checkpoints (`SparseGrid.save` / `SparseGrid.load` in `svox2/svox2.py`).
//!
//! Arrays: `radius [3] f32`, `center [3] f32`, `links [X, Y, Z] i32`, `density_data [N, 1] f32`,
//! `sh_data [N, 3K] f16` and `basis_type` (a 0-d int64: 1 = SH, 4 = learned 3D texture,
//! 255 = MLP). Reading also accepts svox2's older layouts: no `radius`/`center` (defaults 1
//! and 0), no `basis_type` (SH), and a single `data [N, 1 + 3K]` array (density first).
//! Learned bases and the background model (`background_links`, `background_data`) are refused
//! with a typed error rather than loaded and silently rendered without them.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vnr_formats::npz::{write_npz, NpyArray, NpyData, NpzReader};

use super::{PlenoxelError, PlenoxelGrid};

/// svox2's `BASIS_TYPE_SH`.
const BASIS_TYPE_SH: i64 = 1;

impl PlenoxelGrid {
    /// Reads an svox2 `ckpt.npz` (stored or deflate-compressed). The SH data keep their stored
    /// dtype when it is f16 or f32 (f64 becomes f32); density becomes f32, as svox2 loads it.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, PlenoxelError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let mut npz = NpzReader::open(path)?;
        let keys = npz.keys().to_vec();
        let has = |k: &str| keys.iter().any(|key| key == k);
        let missing = |key: &'static str| PlenoxelError::MissingKey {
            path: location.clone(),
            key,
            available: keys.clone(),
        };

        if has("background_data") || has("background_links") {
            return Err(PlenoxelError::BackgroundModel { path: location });
        }
        if has("basis_type") {
            let code = scalar_int(&npz.array("basis_type")?)?;
            if code != BASIS_TYPE_SH {
                return Err(unsupported_basis(code));
            }
        } else if has("basis_data") {
            // svox2 treats a `basis_data` array without `basis_type` as a learned texture.
            return Err(unsupported_basis(4));
        }

        let (density, sh) = if has("data") && !has("sh_data") {
            let all = float_tensor(&mut npz, "data")?;
            let (n, width) = all.dims2().map_err(|_| PlenoxelError::BadShape {
                key: "data",
                shape: all.dims().to_vec(),
                expected: "[N, 1 + 3K]".into(),
            })?;
            if width < 4 {
                return Err(PlenoxelError::BadShape {
                    key: "data",
                    shape: vec![n, width],
                    expected: "[N, 1 + 3K]".into(),
                });
            }
            (
                all.narrow(1, 0, 1)?.contiguous()?,
                all.narrow(1, 1, width - 1)?.contiguous()?,
            )
        } else {
            if !has("density_data") {
                return Err(missing("density_data"));
            }
            if !has("sh_data") {
                return Err(missing("sh_data"));
            }
            (
                float_tensor(&mut npz, "density_data")?,
                float_tensor(&mut npz, "sh_data")?,
            )
        };
        let density = density.to_dtype(DType::F32)?;
        let sh = if sh.dtype() == DType::F16 {
            sh
        } else {
            sh.to_dtype(DType::F32)?
        };

        if !has("links") {
            return Err(missing("links"));
        }
        let links_array = npz.array("links")?;
        let dims = match *links_array.shape() {
            [x, y, z] => [x, y, z],
            ref other => {
                return Err(PlenoxelError::BadShape {
                    key: "links",
                    shape: other.to_vec(),
                    expected: "[X, Y, Z]".into(),
                })
            }
        };
        let links = int32_links(links_array)?;

        let radius = if has("radius") {
            box_vector(&npz.array("radius")?, "radius")?
        } else {
            [1.0; 3]
        };
        let center = if has("center") {
            box_vector(&npz.array("center")?, "center")?
        } else {
            [0.0; 3]
        };
        Self::new(dims, links, density, sh, radius, center)
    }

    /// Writes the grid as svox2's `SparseGrid.save` does (same keys, order and dtypes: SH
    /// rounded to f16, density f32), so svox2 can load it; `compressed` matches its
    /// `compress=True` (`np.savez_compressed`). Atomic. Links are written verbatim.
    pub fn write(&self, path: impl AsRef<Path>, compressed: bool) -> Result<(), PlenoxelError> {
        let f32_vec = |v: [f32; 3]| NpyArray::new(vec![3], NpyData::F32(v.to_vec()));
        let radius = f32_vec(self.radius)?;
        let center = f32_vec(self.center)?;
        let links = NpyArray::new(self.dims().to_vec(), NpyData::I32(self.links().to_vec()))?;
        let density = NpyArray::from_tensor(&self.density.to_dtype(DType::F32)?)?;
        let sh = NpyArray::from_tensor(&self.sh.to_dtype(DType::F16)?)?;
        let basis_type = NpyArray::new(vec![], NpyData::I64(vec![BASIS_TYPE_SH]))?;
        write_npz(
            path,
            &[
                ("radius", &radius),
                ("center", &center),
                ("links", &links),
                ("density_data", &density),
                ("sh_data", &sh),
                ("basis_type", &basis_type),
            ],
            compressed,
        )?;
        Ok(())
    }
}

fn unsupported_basis(code: i64) -> PlenoxelError {
    let name = match code {
        4 => "learned 3D texture",
        255 => "MLP",
        _ => "unknown",
    };
    PlenoxelError::UnsupportedBasis { code, name }
}

/// A float array `key` as a CPU tensor of its own dtype.
fn float_tensor(npz: &mut NpzReader, key: &'static str) -> Result<Tensor, PlenoxelError> {
    let array = npz.array(key)?;
    if !array.dtype().is_float() {
        return Err(PlenoxelError::BadDtype {
            key,
            dtype: array.dtype().name().into(),
            expected: "float16, float32 or float64",
        });
    }
    Ok(array.into_tensor(&Device::Cpu)?)
}

/// The integer value of a one-element integer array (`basis_type`).
fn scalar_int(array: &NpyArray) -> Result<i64, PlenoxelError> {
    let bad_shape = || PlenoxelError::BadShape {
        key: "basis_type",
        shape: array.shape().to_vec(),
        expected: "a single integer".into(),
    };
    if array.len() != 1 {
        return Err(bad_shape());
    }
    let value = match array.data() {
        NpyData::I64(v) => v.first().copied(),
        NpyData::I32(v) => v.first().map(|&x| i64::from(x)),
        NpyData::I16(v) => v.first().map(|&x| i64::from(x)),
        NpyData::I8(v) => v.first().map(|&x| i64::from(x)),
        NpyData::U32(v) => v.first().map(|&x| i64::from(x)),
        NpyData::U16(v) => v.first().map(|&x| i64::from(x)),
        NpyData::U8(v) => v.first().map(|&x| i64::from(x)),
        _ => {
            return Err(PlenoxelError::BadDtype {
                key: "basis_type",
                dtype: array.dtype().name().into(),
                expected: "an integer type",
            })
        }
    };
    value.ok_or_else(bad_shape)
}

/// Links as i32 (svox2 writes int32; int64 from other writers is accepted when it fits).
fn int32_links(array: NpyArray) -> Result<Vec<i32>, PlenoxelError> {
    let dtype = array.dtype();
    match array.into_data() {
        NpyData::I32(v) => Ok(v),
        NpyData::I64(v) => v
            .into_iter()
            .map(|l| i32::try_from(l).map_err(|_| too_wide(l)))
            .collect(),
        _ => Err(PlenoxelError::BadDtype {
            key: "links",
            dtype: dtype.name().into(),
            expected: "int32 (or int64)",
        }),
    }
}

fn too_wide(link: i64) -> PlenoxelError {
    PlenoxelError::BadShape {
        key: "links",
        shape: vec![],
        expected: format!("links that fit in int32, found {link}"),
    }
}

/// `radius`/`center`: three floats, or one broadcast to all axes.
fn box_vector(array: &NpyArray, key: &'static str) -> Result<[f32; 3], PlenoxelError> {
    let values: Vec<f64> = match array.data() {
        NpyData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        NpyData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        NpyData::F64(v) => v.clone(),
        _ => {
            return Err(PlenoxelError::BadDtype {
                key,
                dtype: array.dtype().name().into(),
                expected: "a float type",
            })
        }
    };
    match values.as_slice() {
        [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
        [a] => Ok([*a as f32; 3]),
        _ => Err(PlenoxelError::BadShape {
            key,
            shape: array.shape().to_vec(),
            expected: "[3]".into(),
        }),
    }
}

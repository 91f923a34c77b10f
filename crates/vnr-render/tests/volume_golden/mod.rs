//! Golden files of `tools/golden/pytorch3d_volumes.py` (PyTorch3D's formulas in torch), shared by
//! the volumes, splat and ray marcher tests.

use candle_core::{Device, Result, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// The arrays of one golden `.npz`, by name.
pub struct Golden {
    name: String,
    arrays: HashMap<String, Tensor>,
}

impl Golden {
    /// Loads `tools/golden/render/volumes/{name}.npz` (committed with the repository).
    pub fn load(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/golden/render/volumes")
            .join(format!("{name}.npz"));
        let arrays = vnr_formats::npz::read_npz(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .into_iter()
            .map(|(k, a)| {
                let t = a
                    .to_tensor(&Device::Cpu)
                    .unwrap_or_else(|e| panic!("{name}/{k}: {e}"));
                (k.trim_end_matches(".npy").to_string(), t)
            })
            .collect();
        Self {
            name: name.to_string(),
            arrays,
        }
    }

    /// Array `key` (float32 as stored).
    pub fn get(&self, key: &str) -> Tensor {
        self.arrays
            .get(key)
            .unwrap_or_else(|| panic!("{}: no array {key}", self.name))
            .clone()
    }

    /// Asserts `got` equals array `key` elementwise within `atol + rtol · |want|`.
    pub fn check(&self, key: &str, got: &Tensor, atol: f64, rtol: f64) {
        assert_close(
            &format!("{}/{key}", self.name),
            got,
            &self.get(key),
            atol,
            rtol,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Asserts two tensors have the same shape and values within `atol + rtol · |want|`.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = got
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let w = want
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
    Ok(())
}

//! Conformance runner: checks the ops of this crate against golden cases written by other tools
//! (PyTorch, see `tools/golden/`).
//!
//! # Case file format
//! A case is an `.npz` holding:
//! - `spec`: a `uint8` array of UTF-8 JSON, an object with `op`, the op's parameters (PyTorch's
//!   names) and the tolerances `atol`, `rtol`;
//! - `input0`, `input1`, …: the op's tensor arguments in order (an absent optional argument,
//!   such as a bias, is simply not there);
//! - `output`: the expected result;
//! - optionally `grad_output` and the expected `grad_input0`, `grad_input1`, … of
//!   `sum(op(inputs) * grad_output)`.
//!
//! A comparison passes when `|got - want| <= atol + rtol·|want|` for every element.
//!
//! Ops and parameters (a missing parameter takes PyTorch's default; per-axis values may be a
//! single integer, a 1-list or a 3-list ordered `[D, H, W]`):
//! - `conv3d`: `stride`, `padding` (an integer, 3 integers, `[[before, after]] × 3`, `"valid"` or
//!   `"same"`), `dilation`, `groups`; inputs `x, weight[, bias]`.
//! - `conv_transpose3d`: `stride`, `padding`, `output_padding`, `dilation`, `groups`; inputs
//!   `x, weight[, bias]`.
//! - `max_pool3d`, `avg_pool3d`: `kernel` (or `kernel_size`), `stride` (default: the kernel),
//!   `padding`, `count_include_pad` (avg only, default true).
//! - `grid_sample3d`: `mode` (`"bilinear"`, i.e. trilinear, or `"nearest"`), `padding_mode`
//!   (`"zeros"`, `"border"`), `align_corners` (default false); inputs `volume, grid`.
//! - `cumprod`, `cumsum`: `dim` (required, may be negative), `exclusive` (default false).
//! - `ea_raymarch`: `surface_thickness` (default 1), `eps` (default 1e-10); inputs
//!   `densities, features`.
//! - `harmonic_embedding`: `n_harmonic_functions` (6), `omega_0` (1.0), `logspace` (true),
//!   `append_input` (true).
//!
//! Unknown ops, malformed values and options the ops do not implement (`ceil_mode`,
//! `padding_mode: "reflection"`, …) are errors naming the file; unknown spec keys are ignored
//! with a warning in the report, so files carrying extra metadata still load.

use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{Map, Value};
use vnr_formats::npz::NpzReader;

use crate::conv::{conv3d, conv_transpose3d, Conv3dParams, ConvTranspose3dParams};
use crate::cumulative::{cumprod, cumsum};
use crate::embedding::{harmonic_embedding, HarmonicEmbeddingParams};
use crate::grid_sample::{grid_sample3d, GridPaddingMode, GridSampleMode, GridSampleParams};
use crate::pool::{avg_pool3d, max_pool3d, Pool3dParams};
use crate::raymarch::{ea_raymarch, EaRaymarchParams};

/// Op names a case may name, as written in `spec.op`.
pub const KNOWN_OPS: [&str; 9] = [
    "conv3d",
    "conv_transpose3d",
    "max_pool3d",
    "avg_pool3d",
    "grid_sample3d",
    "cumprod",
    "cumsum",
    "ea_raymarch",
    "harmonic_embedding",
];

/// Tolerances used when a spec gives none: `torch.testing.assert_close`'s float32 defaults.
const DEFAULT_ATOL: f64 = 1e-5;
const DEFAULT_RTOL: f64 = 1.3e-6;

/// Directories deeper than this below a walked root are not entered.
const MAX_WALK_DEPTH: usize = 32;

/// Why a case file (or a directory of them) could not be read. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file is not a readable npz archive.
    #[error("{}: cannot read npz: {source}", path.display())]
    Npz {
        path: PathBuf,
        source: vnr_formats::npz::NpzError,
    },
    /// An array is missing, unreadable, too large for the file, or has the wrong type.
    #[error("{}: array `{name}`: {message}", path.display())]
    Array {
        path: PathBuf,
        name: String,
        message: String,
    },
    /// `spec` is not UTF-8 JSON, or a parameter is missing or malformed.
    #[error("{}: spec: {message}", path.display())]
    Spec { path: PathBuf, message: String },
    /// `spec.op` names no op this runner knows.
    #[error("{}: unknown op `{op}` (known: {})", path.display(), KNOWN_OPS.join(", "))]
    UnknownOp { path: PathBuf, op: String },
    /// A file or directory could not be listed or opened.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An op and its parameters, as parsed from a spec.
#[derive(Debug, Clone, Copy)]
pub enum OpSpec {
    Conv3d(Conv3dParams),
    ConvTranspose3d(ConvTranspose3dParams),
    MaxPool3d(Pool3dParams),
    AvgPool3d(Pool3dParams),
    GridSample3d(GridSampleParams),
    /// `dim` is already resolved against the input's rank.
    Cumprod {
        dim: usize,
        exclusive: bool,
    },
    /// `dim` is already resolved against the input's rank.
    Cumsum {
        dim: usize,
        exclusive: bool,
    },
    EaRaymarch(EaRaymarchParams),
    HarmonicEmbedding(HarmonicEmbeddingParams),
}

impl OpSpec {
    /// The op's name as written in a spec.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Conv3d(_) => "conv3d",
            Self::ConvTranspose3d(_) => "conv_transpose3d",
            Self::MaxPool3d(_) => "max_pool3d",
            Self::AvgPool3d(_) => "avg_pool3d",
            Self::GridSample3d(_) => "grid_sample3d",
            Self::Cumprod { .. } => "cumprod",
            Self::Cumsum { .. } => "cumsum",
            Self::EaRaymarch(_) => "ea_raymarch",
            Self::HarmonicEmbedding(_) => "harmonic_embedding",
        }
    }

    /// Applies the op to `inputs` (already checked against [`op_arity`]).
    ///
    /// Convolutions and pools also take an unbatched `[C, D, H, W]` input, as PyTorch does.
    pub fn apply(&self, inputs: &[Tensor]) -> candle_core::Result<Tensor> {
        let input = |k: usize| {
            inputs.get(k).ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: missing input{k}", self.name()))
            })
        };
        let x = input(0)?;
        match self {
            Self::Conv3d(p) => with_batch_axis(x, |x| conv3d(x, input(1)?, inputs.get(2), p)),
            Self::ConvTranspose3d(p) => {
                with_batch_axis(x, |x| conv_transpose3d(x, input(1)?, inputs.get(2), p))
            }
            Self::MaxPool3d(p) => with_batch_axis(x, |x| max_pool3d(x, p)),
            Self::AvgPool3d(p) => with_batch_axis(x, |x| avg_pool3d(x, p)),
            Self::GridSample3d(p) => grid_sample3d(x, input(1)?, p),
            Self::Cumprod { dim, exclusive } => cumprod(x, *dim, *exclusive),
            Self::Cumsum { dim, exclusive } => cumsum(x, *dim, *exclusive),
            Self::EaRaymarch(p) => ea_raymarch(x, input(1)?, p),
            Self::HarmonicEmbedding(p) => harmonic_embedding(x, p),
        }
    }
}

/// Runs `f` on `x` with a batch axis of one prepended when `x` is an unbatched `[C, D, H, W]`.
fn with_batch_axis(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if x.rank() == 4 {
        f(&x.unsqueeze(0)?)?.squeeze(0)
    } else {
        f(x)
    }
}

/// Smallest and largest number of tensor inputs of the op named `op`, if it is known.
pub fn op_arity(op: &str) -> Option<(usize, usize)> {
    Some(match op {
        "conv3d" | "conv_transpose3d" => (2, 3),
        "grid_sample3d" | "ea_raymarch" => (2, 2),
        "max_pool3d" | "avg_pool3d" | "cumprod" | "cumsum" | "harmonic_embedding" => (1, 1),
        _ => return None,
    })
}

/// Comparison tolerances: an element passes when `|got - want| <= atol + rtol·|want|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

/// A loaded case: the op, its inputs and the expected results.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file the case was read from.
    pub path: PathBuf,
    pub op: OpSpec,
    pub tolerance: Tolerance,
    /// `input0`, `input1`, … in the op's argument order.
    pub inputs: Vec<Tensor>,
    /// Expected `op(inputs)`.
    pub output: Tensor,
    /// Weights of the output in the scalar whose gradients are checked, shaped like `output`.
    pub grad_output: Option<Tensor>,
    /// Expected gradients, as `(input index, gradient)`, in index order.
    pub grad_inputs: Vec<(usize, Tensor)>,
    /// Things that were accepted but look unintended (e.g. unknown spec keys).
    pub warnings: Vec<String>,
}

/// Largest errors of one compared tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// `output` or `grad_inputK`.
    pub name: String,
    /// Largest `|got - want|` (infinite where exactly one side is NaN or infinite).
    pub max_abs: f64,
    /// Largest `|got - want| / |want|` over the elements whose expected value is non-zero.
    pub max_rel: f64,
    /// Number of elements outside the tolerance.
    pub mismatched: usize,
    /// Number of elements compared.
    pub len: usize,
}

impl Comparison {
    /// True when every element is within the tolerance.
    pub fn passed(&self) -> bool {
        self.mismatched == 0
    }
}

/// Outcome of one case file.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub path: PathBuf,
    /// The op's name, or `?` when the file could not be loaded.
    pub op: String,
    /// The output's comparison first, then each gradient's.
    pub comparisons: Vec<Comparison>,
    /// Why the case could not be loaded or run, or why a result could not be compared (shape).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl CaseReport {
    /// True when the case ran, compared at least its output, and every comparison passed.
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
            && !self.comparisons.is_empty()
            && self.comparisons.iter().all(Comparison::passed)
    }

    fn failed_to_load(path: &Path, error: &CaseError) -> Self {
        Self {
            path: path.to_path_buf(),
            op: "?".to_string(),
            comparisons: Vec::new(),
            errors: vec![error.to_string()],
            warnings: Vec::new(),
        }
    }
}

impl fmt::Display for CaseReport {
    /// One line: `PASS|FAIL file op`, each comparison's max abs/rel error, then errors and
    /// warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        write!(f, "{verdict} {} {}", self.path.display(), self.op)?;
        for c in &self.comparisons {
            write!(
                f,
                " | {} abs {:.2e} rel {:.2e}",
                c.name, c.max_abs, c.max_rel
            )?;
            if !c.passed() {
                write!(f, " ({}/{} out of tolerance)", c.mismatched, c.len)?;
            }
        }
        for e in &self.errors {
            write!(f, " | error: {e}")?;
        }
        for w in &self.warnings {
            write!(f, " | warning: {w}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads and validates the case in `path` (see the module docs for the format).
pub fn load_case(path: impl AsRef<Path>) -> Result<Case, CaseError> {
    let path = path.as_ref();
    let npz_error = |source| CaseError::Npz {
        path: path.to_path_buf(),
        source,
    };
    // vnr-formats' reader handles Fortran order and big-endian arrays, and refuses headers
    // claiming more data than the archive can hold before allocating.
    let npz = NpzReader::open(path).map_err(npz_error)?;
    let reader = ArrayReader {
        path,
        npz: RefCell::new(npz),
    };

    let spec = reader.spec()?;
    let spec_error = |message: String| CaseError::Spec {
        path: path.to_path_buf(),
        message,
    };
    let op_name = match spec.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(other) => return Err(spec_error(format!("`op` must be a string, got {other}"))),
        None => return Err(spec_error("no `op`".to_string())),
    };
    let Some((min_inputs, max_inputs)) = op_arity(&op_name) else {
        return Err(CaseError::UnknownOp {
            path: path.to_path_buf(),
            op: op_name,
        });
    };

    let names: Vec<String> = reader.npz.borrow().keys().to_vec();
    let indexed = |prefix: &str| -> Vec<usize> {
        let mut found: Vec<usize> = names
            .iter()
            .filter_map(|n| array_index(n, prefix))
            .collect();
        found.sort_unstable();
        found
    };
    let input_indices = indexed("input");
    let input_count = input_indices.len();
    if input_indices.iter().enumerate().any(|(i, &k)| i != k) {
        return Err(spec_error(format!(
            "inputs must be numbered input0..input{} without gaps, found {:?}",
            input_count.saturating_sub(1),
            input_indices
        )));
    }
    if input_count < min_inputs || input_count > max_inputs {
        let expected = if min_inputs == max_inputs {
            min_inputs.to_string()
        } else {
            format!("{min_inputs} or {max_inputs}")
        };
        return Err(spec_error(format!(
            "{op_name} takes {expected} inputs, the file has {input_count}"
        )));
    }
    let inputs = (0..input_count)
        .map(|k| reader.required(&format!("input{k}")))
        .collect::<Result<Vec<_>, _>>()?;
    let output = reader.required("output")?;
    let grad_output = reader.optional("grad_output")?;
    let mut grad_inputs = Vec::new();
    for k in indexed("grad_input") {
        if k >= input_count {
            return Err(spec_error(format!(
                "grad_input{k} has no matching input{k}"
            )));
        }
        grad_inputs.push((k, reader.required(&format!("grad_input{k}"))?));
    }
    if !grad_inputs.is_empty() && grad_output.is_none() {
        return Err(spec_error(
            "gradients given without `grad_output`".to_string(),
        ));
    }

    let mut warnings = Vec::new();
    let op = parse_op(&op_name, &spec, &inputs, &mut warnings).map_err(spec_error)?;
    let tolerance = Tolerance {
        atol: tolerance_value(&spec, "atol", DEFAULT_ATOL, &mut warnings).map_err(spec_error)?,
        rtol: tolerance_value(&spec, "rtol", DEFAULT_RTOL, &mut warnings).map_err(spec_error)?,
    };
    let is_known_array = |n: &str| {
        matches!(n, "spec" | "output" | "grad_output")
            || ["input", "grad_input"]
                .iter()
                .any(|p| array_index(n, p).is_some())
    };
    let mut unknown_arrays: Vec<&String> = names.iter().filter(|n| !is_known_array(n)).collect();
    unknown_arrays.sort();
    for name in unknown_arrays {
        warnings.push(format!("array `{name}` ignored"));
    }
    Ok(Case {
        path: path.to_path_buf(),
        op,
        tolerance,
        inputs,
        output,
        grad_output,
        grad_inputs,
        warnings,
    })
}

/// `K` of an array named `{prefix}K`, written canonically (`input1`, not `input01` or `input+1`).
fn array_index(name: &str, prefix: &str) -> Option<usize> {
    let suffix = name.strip_prefix(prefix)?;
    let k: usize = suffix.parse().ok()?;
    (k.to_string() == suffix).then_some(k)
}

/// Reads the arrays of one npz, refusing headers that claim more data than the file can hold.
struct ArrayReader<'a> {
    path: &'a Path,
    npz: RefCell<NpzReader>,
}

impl ArrayReader<'_> {
    fn error(&self, name: &str, message: impl Into<String>) -> CaseError {
        CaseError::Array {
            path: self.path.to_path_buf(),
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// The array `name`, or `None` when the file has none.
    fn optional(&self, name: &str) -> Result<Option<Tensor>, CaseError> {
        if !self.npz.borrow().keys().iter().any(|n| n.as_str() == name) {
            return Ok(None);
        }
        let array = self
            .npz
            .borrow_mut()
            .array(name)
            .map_err(|e| self.error(name, e.to_string()))?;
        array
            .into_tensor(&Device::Cpu)
            .map(Some)
            .map_err(|e| self.error(name, e.to_string()))
    }

    fn required(&self, name: &str) -> Result<Tensor, CaseError> {
        self.optional(name)?
            .ok_or_else(|| self.error(name, "missing"))
    }

    /// The `spec` array decoded as a JSON object.
    fn spec(&self) -> Result<Map<String, Value>, CaseError> {
        let raw = self.required("spec")?;
        if raw.dtype() != DType::U8 {
            return Err(self.error(
                "spec",
                format!("must be a uint8 array of UTF-8 JSON, got {:?}", raw.dtype()),
            ));
        }
        let bytes = raw
            .flatten_all()
            .and_then(|t| t.to_vec1::<u8>())
            .map_err(|e| self.error("spec", e.to_string()))?;
        let text =
            String::from_utf8(bytes).map_err(|e| self.error("spec", format!("not UTF-8: {e}")))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(self.error(
                "spec",
                format!("must be a JSON object, got {}", json_kind(&other)),
            )),
            Err(e) => Err(self.error("spec", format!("invalid JSON: {e}"))),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Spec parameters.

/// Typed access to a spec's parameters that records which keys were read.
struct Params<'a> {
    spec: &'a Map<String, Value>,
    read: Vec<&'static str>,
}

impl<'a> Params<'a> {
    /// The value of `key`; JSON `null` counts as absent (PyTorch's `None`).
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.spec.get(key).filter(|v| !v.is_null())
    }

    fn usize(&mut self, key: &'static str, default: usize) -> Result<usize, String> {
        self.get(key).map_or(Ok(default), |v| {
            as_usize(v).map_err(|e| format!("`{key}`: {e}"))
        })
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("`{key}` must be a finite number, got {v}")),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            // Python truthiness of 0/1, which PyTorch accepts for its flags.
            Some(v) if v.as_u64() == Some(0) => Ok(false),
            Some(v) if v.as_u64() == Some(1) => Ok(true),
            Some(v) => Err(format!("`{key}` must be true or false, got {v}")),
        }
    }

    fn triple(&mut self, key: &'static str, default: [usize; 3]) -> Result<[usize; 3], String> {
        self.get(key).map_or(Ok(default), |v| {
            as_triple(v).map_err(|e| format!("`{key}`: {e}"))
        })
    }

    fn string(&mut self, key: &'static str, default: &'static str) -> Result<&'a str, String> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(format!("`{key}` must be a string, got {v}")),
        }
    }

    /// Errors if `key` is set to anything but `allowed` (an option the op does not implement).
    fn only(&mut self, key: &'static str, allowed: &[Value], what: &str) -> Result<(), String> {
        match self.get(key) {
            Some(v) if !allowed.contains(v) => {
                Err(format!("`{key}` = {v} is not supported ({what})"))
            }
            _ => Ok(()),
        }
    }

    /// Keys never read by the op's parser, other than `op`, `atol` and `rtol`.
    fn unread(&self) -> Vec<&'a str> {
        let mut keys: Vec<&str> = self
            .spec
            .keys()
            .map(String::as_str)
            .filter(|k| !["op", "atol", "rtol"].contains(k) && !self.read.iter().any(|r| r == k))
            .collect();
        keys.sort_unstable();
        keys
    }
}

fn as_usize(v: &Value) -> Result<usize, String> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).map_err(|_| format!("{n} is too large"));
    }
    // 2.0 from tools that write every number as a float.
    match v.as_f64() {
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 => Ok(x as usize),
        _ => Err(format!("expected a non-negative integer, got {v}")),
    }
}

/// An integer for all three axes, or a list of 1 or 3 integers ordered `[D, H, W]`.
fn as_triple(v: &Value) -> Result<[usize; 3], String> {
    match v {
        Value::Array(items) => match items.as_slice() {
            [one] => Ok([as_usize(one)?; 3]),
            [d, h, w] => Ok([as_usize(d)?, as_usize(h)?, as_usize(w)?]),
            _ => Err(format!(
                "expected an integer or a list of 3 integers, got {} values",
                items.len()
            )),
        },
        other => Ok([as_usize(other)?; 3]),
    }
}

fn tolerance_value(
    spec: &Map<String, Value>,
    key: &str,
    default: f64,
    warnings: &mut Vec<String>,
) -> Result<f64, String> {
    match spec.get(key) {
        None | Some(Value::Null) => {
            warnings.push(format!("no `{key}`: using {default:e}"));
            Ok(default)
        }
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("`{key}` must be a non-negative number, got {v}")),
    }
}

/// Parses the parameters of `op` (a known op) from `spec`; unread keys become warnings.
fn parse_op(
    op: &str,
    spec: &Map<String, Value>,
    inputs: &[Tensor],
    warnings: &mut Vec<String>,
) -> Result<OpSpec, String> {
    let mut p = Params {
        spec,
        read: Vec::new(),
    };
    let parsed = match op {
        "conv3d" => {
            let stride = p.triple("stride", [1; 3])?;
            let dilation = p.triple("dilation", [1; 3])?;
            let kernel = inputs
                .get(1)
                .and_then(|w| w.dims().get(2..5))
                .and_then(|k| <[usize; 3]>::try_from(k).ok());
            let padding = conv_padding(p.get("padding"), stride, dilation, kernel)?;
            OpSpec::Conv3d(Conv3dParams {
                stride,
                padding,
                dilation,
                groups: p.usize("groups", 1)?,
            })
        }
        "conv_transpose3d" => OpSpec::ConvTranspose3d(ConvTranspose3dParams {
            stride: p.triple("stride", [1; 3])?,
            padding: p.triple("padding", [0; 3])?,
            output_padding: p.triple("output_padding", [0; 3])?,
            dilation: p.triple("dilation", [1; 3])?,
            groups: p.usize("groups", 1)?,
        }),
        "max_pool3d" => {
            let params = pool_params(&mut p, false)?;
            p.only(
                "dilation",
                &[
                    1.into(),
                    serde_json::json!([1]),
                    serde_json::json!([1, 1, 1]),
                ],
                "max_pool3d has no dilation",
            )?;
            p.only(
                "return_indices",
                &[false.into()],
                "indices are not returned",
            )?;
            OpSpec::MaxPool3d(params)
        }
        "avg_pool3d" => {
            let params = pool_params(&mut p, true)?;
            p.only("divisor_override", &[], "the divisor is the window size")?;
            OpSpec::AvgPool3d(params)
        }
        "grid_sample3d" => {
            let mode = match p.string("mode", "bilinear")? {
                // PyTorch calls trilinear sampling of a 5-D input "bilinear".
                "bilinear" | "trilinear" => GridSampleMode::Bilinear,
                "nearest" => GridSampleMode::Nearest,
                other => {
                    return Err(format!(
                        "`mode` {other:?} is not supported (bilinear, nearest)"
                    ))
                }
            };
            let padding_mode = match p.string("padding_mode", "zeros")? {
                "zeros" => GridPaddingMode::Zeros,
                "border" => GridPaddingMode::Border,
                other => {
                    return Err(format!(
                        "`padding_mode` {other:?} is not supported (zeros, border)"
                    ))
                }
            };
            OpSpec::GridSample3d(GridSampleParams {
                mode,
                padding_mode,
                align_corners: p.bool("align_corners", false)?,
            })
        }
        "cumprod" | "cumsum" => {
            let rank = inputs.first().map_or(0, Tensor::rank);
            let dim = match p.get("dim") {
                None => return Err(format!("{op} needs `dim`")),
                Some(v) => resolve_dim(v, rank)?,
            };
            let exclusive = p.bool("exclusive", false)?;
            if op == "cumprod" {
                OpSpec::Cumprod { dim, exclusive }
            } else {
                OpSpec::Cumsum { dim, exclusive }
            }
        }
        "ea_raymarch" => OpSpec::EaRaymarch(EaRaymarchParams {
            surface_thickness: p.usize("surface_thickness", 1)?,
            eps: p.f64("eps", 1e-10)?,
        }),
        "harmonic_embedding" => OpSpec::HarmonicEmbedding(HarmonicEmbeddingParams {
            n_harmonic_functions: p.usize("n_harmonic_functions", 6)?,
            omega_0: p.f64("omega_0", 1.0)?,
            logspace: p.bool("logspace", true)?,
            append_input: p.bool("append_input", true)?,
        }),
        other => return Err(format!("unknown op `{other}`")),
    };
    warnings.extend(
        p.unread()
            .into_iter()
            .map(|k| format!("spec key `{k}` ignored")),
    );
    Ok(parsed)
}

/// `kernel` (or PyTorch's `kernel_size`), `stride` (defaulting to the kernel), `padding`, and
/// for average pooling `count_include_pad`; rejects `ceil_mode`.
fn pool_params(p: &mut Params, is_average: bool) -> Result<Pool3dParams, String> {
    let kernel = match (p.get("kernel"), p.get("kernel_size")) {
        (Some(k), None) | (None, Some(k)) => as_triple(k).map_err(|e| format!("`kernel`: {e}"))?,
        (Some(_), Some(_)) => return Err("both `kernel` and `kernel_size` given".to_string()),
        (None, None) => return Err("pools need `kernel`".to_string()),
    };
    // PyTorch's stride=None (or an empty list) means "the kernel size".
    let stride = match p.get("stride") {
        Some(Value::Array(a)) if a.is_empty() => kernel,
        Some(v) => as_triple(v).map_err(|e| format!("`stride`: {e}"))?,
        None => kernel,
    };
    p.only("ceil_mode", &[false.into()], "output sizes are floored")?;
    Ok(Pool3dParams {
        kernel,
        stride,
        padding: p.triple("padding", [0; 3])?,
        // Meaningless for max pooling: left unread there, so a max_pool3d spec setting it warns.
        count_include_pad: if is_average {
            p.bool("count_include_pad", true)?
        } else {
            true
        },
    })
}

/// conv3d's `padding`: an integer, 3 integers, `[[before, after]] × 3`, `"valid"`, or `"same"`
/// (stride 1 only, the odd voxel after, as PyTorch does; needs the weight's kernel size).
fn conv_padding(
    v: Option<&Value>,
    stride: [usize; 3],
    dilation: [usize; 3],
    kernel: Option<[usize; 3]>,
) -> Result<[[usize; 2]; 3], String> {
    let symmetric = |p: [usize; 3]| p.map(|p| [p, p]);
    match v {
        None => Ok([[0; 2]; 3]),
        Some(Value::String(s)) if s == "valid" => Ok([[0; 2]; 3]),
        Some(Value::String(s)) if s == "same" => {
            if stride != [1; 3] {
                return Err("padding \"same\" needs stride 1 (as in PyTorch)".to_string());
            }
            let kernel = kernel.ok_or("padding \"same\" needs a [O, C, kd, kh, kw] weight")?;
            let mut padding = [[0; 2]; 3];
            for a in 0..3 {
                let total = kernel[a]
                    .saturating_sub(1)
                    .checked_mul(dilation[a])
                    .ok_or("padding \"same\": kernel extent overflows")?;
                padding[a] = [total / 2, total - total / 2];
            }
            Ok(padding)
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => {
            let pairs: Vec<[usize; 2]> = items
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([before, after]) => Ok([as_usize(before)?, as_usize(after)?]),
                    _ => Err(format!("`padding`: expected [before, after], got {pair}")),
                })
                .collect::<Result<_, _>>()?;
            <[[usize; 2]; 3]>::try_from(pairs).map_err(|pairs| {
                format!(
                    "`padding`: expected 3 [before, after] pairs, got {}",
                    pairs.len()
                )
            })
        }
        Some(v) => as_triple(v)
            .map(symmetric)
            .map_err(|e| format!("`padding`: {e} (or [[before, after]] × 3, \"valid\", \"same\")")),
    }
}

/// A dimension index, negative counting from the end as in PyTorch, checked against `rank`.
fn resolve_dim(v: &Value, rank: usize) -> Result<usize, String> {
    let dim = v
        .as_i64()
        .ok_or_else(|| format!("`dim` must be an integer, got {v}"))?;
    let resolved = if dim < 0 {
        i64::try_from(rank).ok().and_then(|r| r.checked_add(dim))
    } else {
        Some(dim)
    };
    resolved
        .and_then(|d| usize::try_from(d).ok())
        .filter(|&d| d < rank)
        .ok_or_else(|| format!("`dim` {dim} is out of range for an input of rank {rank}"))
}

// ---------------------------------------------------------------------------------------------
// Running.

/// Runs `case`: compares `op(inputs)` with `output` and, when the case has `grad_output`, the
/// gradients of `sum(op(inputs) * grad_output)` with each `grad_inputK`. Never panics: op errors,
/// panics and shape mismatches become errors in the report.
///
/// The op runs in f64 when `input0` is f64, else in f32 (other inputs are converted).
pub fn run_case(case: &Case) -> CaseReport {
    let mut report = CaseReport {
        path: case.path.clone(),
        op: case.op.name().to_string(),
        comparisons: Vec::new(),
        errors: Vec::new(),
        warnings: case.warnings.clone(),
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| evaluate(case, &mut report)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.errors.push(e.to_string()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            report.errors.push(format!("panicked: {message}"));
        }
    }
    report
}

fn evaluate(case: &Case, report: &mut CaseReport) -> candle_core::Result<()> {
    let dtype = match case.inputs.first().map(Tensor::dtype) {
        Some(DType::F64) => DType::F64,
        _ => DType::F32,
    };
    let vars = case
        .inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let output = case.op.apply(&inputs)?;
    let tol = case.tolerance;
    match compare("output", &output, &case.output, tol) {
        Ok(c) => report.comparisons.push(c),
        Err(e) => {
            // Without the right output shape the gradients cannot be asked for.
            report.errors.push(e);
            return Ok(());
        }
    }
    let Some(grad_output) = &case.grad_output else {
        return Ok(());
    };
    if grad_output.dims() != output.dims() {
        report.errors.push(format!(
            "grad_output has shape {:?}, the output {:?}",
            grad_output.dims(),
            output.dims()
        ));
        return Ok(());
    }
    let loss = output.mul(&grad_output.to_dtype(dtype)?)?.sum_all()?;
    let grads = loss.backward()?;
    for (k, want) in &case.grad_inputs {
        let Some(var) = vars.get(*k) else {
            report.errors.push(format!("grad_input{k} has no input{k}"));
            continue;
        };
        // No gradient recorded means the output does not depend on the input: zero.
        let got = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        match compare(&format!("grad_input{k}"), &got, want, tol) {
            Ok(c) => report.comparisons.push(c),
            Err(e) => report.errors.push(e),
        }
    }
    Ok(())
}

/// Element-wise comparison of `got` with `want` (same shape required), in f64.
fn compare(name: &str, got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<Comparison, String> {
    if got.dims() != want.dims() {
        return Err(format!(
            "{name}: shape {:?} differs from the expected {:?}",
            got.dims(),
            want.dims()
        ));
    }
    let values = |t: &Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(|e| format!("{name}: {e}"))
    };
    let (got, want) = (values(got)?, values(want)?);
    let mut c = Comparison {
        name: name.to_string(),
        max_abs: 0.0,
        max_rel: 0.0,
        mismatched: 0,
        len: want.len(),
    };
    for (&g, &w) in got.iter().zip(&want) {
        // Equal values (infinities included) and NaN against NaN agree exactly.
        let diff = if g == w || (g.is_nan() && w.is_nan()) {
            0.0
        } else {
            let d = (g - w).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        };
        if diff > tol.atol + tol.rtol * w.abs() {
            c.mismatched += 1;
        }
        c.max_abs = c.max_abs.max(diff);
        if w != 0.0 && w.is_finite() {
            c.max_rel = c.max_rel.max(diff / w.abs());
        }
    }
    Ok(c)
}

/// [`load_case`] then [`run_case`]; a file that cannot be loaded gives a failed report.
pub fn run_file(path: impl AsRef<Path>) -> CaseReport {
    let path = path.as_ref();
    match load_case(path) {
        Ok(case) => run_case(&case),
        Err(e) => CaseReport::failed_to_load(path, &e),
    }
}

// ---------------------------------------------------------------------------------------------
// Finding cases.

/// `path` itself if it is a file, else every `*.npz` below the directory `path`, sorted.
/// Symbolic links to directories are not followed.
pub fn case_files(path: impl AsRef<Path>) -> Result<Vec<PathBuf>, CaseError> {
    let path = path.as_ref();
    let io_error = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CaseError::Io { path: p, source }
    };
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let child = entry.path();
            let kind = entry.file_type().map_err(io_error(&child))?;
            if kind.is_dir() {
                if depth < MAX_WALK_DEPTH {
                    pending.push((child, depth + 1));
                }
            } else if child
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
                && std::fs::metadata(&child).is_ok_and(|m| m.is_file())
            {
                files.push(child);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Runs every case found under each of `paths` (files or directories, see [`case_files`]), in
/// order. A path that cannot be listed gives one failed report.
pub fn run_paths<P: AsRef<Path>>(paths: &[P]) -> Vec<CaseReport> {
    let mut reports = Vec::new();
    for path in paths {
        match case_files(path) {
            Ok(files) => reports.extend(files.iter().map(run_file)),
            Err(e) => reports.push(CaseReport::failed_to_load(path.as_ref(), &e)),
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test specs are objects"),
        }
    }

    fn parse(v: Value, inputs: &[Tensor]) -> Result<(OpSpec, Vec<String>), String> {
        let s = spec(v);
        let op = s["op"].as_str().unwrap_or_default().to_string();
        let mut warnings = Vec::new();
        parse_op(&op, &s, inputs, &mut warnings).map(|o| (o, warnings))
    }

    fn zeros(dims: &[usize]) -> Tensor {
        Tensor::zeros(dims, DType::F32, &candle_core::Device::Cpu).expect("cpu zeros")
    }

    #[test]
    fn triples_accept_scalars_and_lists() {
        assert_eq!(as_triple(&json!(2)), Ok([2, 2, 2]));
        assert_eq!(as_triple(&json!([3])), Ok([3, 3, 3]));
        assert_eq!(as_triple(&json!([1, 2, 3])), Ok([1, 2, 3]));
        assert_eq!(as_triple(&json!(2.0)), Ok([2, 2, 2]));
        assert!(as_triple(&json!([1, 2])).is_err());
        assert!(as_triple(&json!(-1)).is_err());
        assert!(as_triple(&json!(1.5)).is_err());
        assert!(as_triple(&json!("2")).is_err());
    }

    #[test]
    fn array_names_must_be_canonical() {
        assert_eq!(array_index("input0", "input"), Some(0));
        assert_eq!(array_index("grad_input12", "grad_input"), Some(12));
        assert_eq!(array_index("input01", "input"), None);
        assert_eq!(array_index("input+1", "input"), None);
        assert_eq!(array_index("input", "input"), None);
        assert_eq!(array_index("grad_input0", "input"), None);
    }

    #[test]
    fn conv3d_padding_forms() {
        let k = Some([3, 2, 5]);
        assert_eq!(conv_padding(None, [1; 3], [1; 3], k), Ok([[0, 0]; 3]));
        assert_eq!(
            conv_padding(Some(&json!(1)), [1; 3], [1; 3], k),
            Ok([[1, 1]; 3])
        );
        assert_eq!(
            conv_padding(Some(&json!([1, 0, 2])), [1; 3], [1; 3], k),
            Ok([[1, 1], [0, 0], [2, 2]])
        );
        assert_eq!(
            conv_padding(Some(&json!([[1, 0], [0, 2], [2, 1]])), [1; 3], [1; 3], k),
            Ok([[1, 0], [0, 2], [2, 1]])
        );
        assert_eq!(
            conv_padding(Some(&json!("valid")), [2; 3], [1; 3], k),
            Ok([[0, 0]; 3])
        );
        // Total padding dilation·(k-1), the odd voxel after (PyTorch's padding="same").
        assert_eq!(
            conv_padding(Some(&json!("same")), [1; 3], [1, 2, 1], k),
            Ok([[1, 1], [1, 1], [2, 2]])
        );
        assert_eq!(
            conv_padding(Some(&json!("same")), [1; 3], [1; 3], Some([2, 1, 4])),
            Ok([[0, 1], [0, 0], [1, 2]])
        );
        assert!(conv_padding(Some(&json!("same")), [2, 1, 1], [1; 3], k).is_err());
        assert!(conv_padding(Some(&json!("full")), [1; 3], [1; 3], k).is_err());
        assert!(conv_padding(Some(&json!([[1, 0], [0, 2]])), [1; 3], [1; 3], k).is_err());
        assert!(
            conv_padding(Some(&json!([[1, 0, 1], [0, 2], [1, 1]])), [1; 3], [1; 3], k).is_err()
        );
    }

    #[test]
    fn missing_parameters_take_pytorch_defaults() {
        let (op, warnings) = parse(json!({"op": "conv3d"}), &[]).expect("conv3d");
        assert!(warnings.is_empty());
        match op {
            OpSpec::Conv3d(p) => assert_eq!(p, Conv3dParams::default()),
            other => panic!("parsed as {other:?}"),
        }
        match parse(json!({"op": "avg_pool3d", "kernel_size": [2, 3, 2]}), &[]) {
            Ok((OpSpec::AvgPool3d(p), _)) => {
                assert_eq!(p.kernel, [2, 3, 2]);
                assert_eq!(p.stride, [2, 3, 2]);
                assert_eq!(p.padding, [0; 3]);
                assert!(p.count_include_pad);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(json!({"op": "harmonic_embedding"}), &[]) {
            Ok((OpSpec::HarmonicEmbedding(p), _)) => {
                assert_eq!(p.n_harmonic_functions, 6);
                assert_eq!(p.omega_0, 1.0);
                assert!(p.logspace && p.append_input);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(json!({"op": "ea_raymarch"}), &[]) {
            Ok((OpSpec::EaRaymarch(p), _)) => {
                assert_eq!(p.surface_thickness, 1);
                assert_eq!(p.eps, 1e-10);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(json!({"op": "grid_sample3d", "align_corners": null}), &[]) {
            Ok((OpSpec::GridSample3d(p), _)) => {
                assert_eq!(p.mode, GridSampleMode::Bilinear);
                assert_eq!(p.padding_mode, GridPaddingMode::Zeros);
                assert!(!p.align_corners);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn cumulative_dims_resolve_like_pytorch() {
        let x = [zeros(&[2, 3, 4])];
        match parse(json!({"op": "cumprod", "dim": -1, "exclusive": true}), &x) {
            Ok((
                OpSpec::Cumprod {
                    dim: 2,
                    exclusive: true,
                },
                _,
            )) => {}
            other => panic!("parsed as {other:?}"),
        }
        match parse(json!({"op": "cumsum", "dim": 1}), &x) {
            Ok((
                OpSpec::Cumsum {
                    dim: 1,
                    exclusive: false,
                },
                _,
            )) => {}
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(json!({"op": "cumprod", "dim": 3}), &x).is_err());
        assert!(parse(json!({"op": "cumprod", "dim": -4}), &x).is_err());
        assert!(parse(json!({"op": "cumprod"}), &x).is_err());
    }

    #[test]
    fn unsupported_options_are_errors_and_unknown_keys_warnings() {
        assert!(parse(
            json!({"op": "max_pool3d", "kernel": 2, "ceil_mode": true}),
            &[]
        )
        .is_err());
        assert!(parse(json!({"op": "max_pool3d", "kernel": 2, "dilation": 2}), &[]).is_err());
        assert!(parse(
            json!({"op": "max_pool3d", "kernel": 2, "ceil_mode": false, "dilation": 1}),
            &[]
        )
        .is_ok());
        assert!(parse(
            json!({"op": "avg_pool3d", "kernel": 2, "divisor_override": 3}),
            &[]
        )
        .is_err());
        assert!(parse(
            json!({"op": "avg_pool3d", "kernel": 2, "kernel_size": 2}),
            &[]
        )
        .is_err());
        assert!(parse(json!({"op": "avg_pool3d"}), &[]).is_err());
        assert!(parse(
            json!({"op": "grid_sample3d", "padding_mode": "reflection"}),
            &[]
        )
        .is_err());
        assert!(parse(json!({"op": "grid_sample3d", "mode": "bicubic"}), &[]).is_err());
        assert!(parse(json!({"op": "conv3d", "groups": "two"}), &[]).is_err());
        let (_, warnings) =
            parse(json!({"op": "conv3d", "strides": 2, "seed": 7}), &[]).expect("parses");
        assert_eq!(
            warnings,
            ["spec key `seed` ignored", "spec key `strides` ignored"]
        );
    }

    #[test]
    fn comparison_uses_atol_plus_rtol() {
        let t = |v: &[f32]| Tensor::new(v, &candle_core::Device::Cpu).expect("cpu tensor");
        let tol = Tolerance {
            atol: 0.1,
            rtol: 0.1,
        };
        let c = compare(
            "output",
            &t(&[1.0, 0.0, 10.0]),
            &t(&[1.15, 0.05, 11.0]),
            tol,
        )
        .expect("same shape");
        assert_eq!(c.mismatched, 0);
        assert!((c.max_abs - 1.0).abs() < 1e-6);
        // 0 against 0.05 is within atol yet 100% off relatively.
        assert!((c.max_rel - 1.0).abs() < 1e-6);
        let c = compare("output", &t(&[1.0, f32::NAN]), &t(&[1.25, 0.0]), tol).expect("same shape");
        assert_eq!(c.mismatched, 2);
        assert_eq!(c.max_abs, f64::INFINITY);
        let c = compare("output", &t(&[f32::NAN]), &t(&[f32::NAN]), tol).expect("same shape");
        assert!(c.passed());
        assert!(compare("output", &t(&[1.0]), &t(&[1.0, 2.0]), tol).is_err());
    }
}

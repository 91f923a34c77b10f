//! The committed PyTorch golden cases (`tools/golden/cases/`) run through the conformance
//! runner, and malformed case files are reported as failures, never panics.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vnr_ops::conformance::{
    case_files, load_case, run_case, run_file, run_paths, CaseError, CaseReport,
};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/golden/cases")
}

/// Runs every committed case whose op is `op`; there must be at least one and all must pass.
fn assert_golden_cases_pass(op: &str) {
    let files = case_files(golden_dir()).expect("tools/golden/cases is readable");
    let mut reports: Vec<CaseReport> = Vec::new();
    for file in &files {
        let case = load_case(file).unwrap_or_else(|e| panic!("{e}"));
        if case.op.name() == op {
            reports.push(run_case(&case));
        }
    }
    assert!(!reports.is_empty(), "no committed {op} case");
    let failures: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {op} cases failed:\n{}",
        failures.len(),
        reports.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_conv3d() {
    assert_golden_cases_pass("conv3d");
}

#[test]
fn golden_conv_transpose3d() {
    assert_golden_cases_pass("conv_transpose3d");
}

#[test]
fn golden_max_pool3d() {
    assert_golden_cases_pass("max_pool3d");
}

#[test]
fn golden_avg_pool3d() {
    assert_golden_cases_pass("avg_pool3d");
}

#[test]
fn golden_grid_sample3d() {
    assert_golden_cases_pass("grid_sample3d");
}

#[test]
fn golden_cumprod() {
    assert_golden_cases_pass("cumprod");
}

#[test]
fn golden_cumsum() {
    assert_golden_cases_pass("cumsum");
}

#[test]
fn golden_ea_raymarch() {
    assert_golden_cases_pass("ea_raymarch");
}

#[test]
fn golden_harmonic_embedding() {
    assert_golden_cases_pass("harmonic_embedding");
}

#[test]
fn every_committed_case_loads_with_gradients_and_no_warnings() {
    let files = case_files(golden_dir()).expect("tools/golden/cases is readable");
    assert!(files.len() >= 30, "only {} committed cases", files.len());
    for file in &files {
        let case = load_case(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            case.warnings.is_empty(),
            "{}: {:?}",
            file.display(),
            case.warnings
        );
        assert!(case.grad_output.is_some(), "{}", file.display());
        assert_eq!(
            case.grad_inputs.len(),
            case.inputs.len(),
            "{}",
            file.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed files, written on the fly.

/// A fresh directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("vnr-conformance-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec_array(json: &str) -> Tensor {
    let bytes = json.as_bytes().to_vec();
    let n = bytes.len();
    Tensor::from_vec(bytes, n, &Device::Cpu).expect("spec tensor")
}

fn tensor(values: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_slice(values, dims, &Device::Cpu).expect("tensor")
}

fn write_case(path: &Path, arrays: &[(&str, Tensor)]) {
    Tensor::write_npz(arrays, path).expect("write npz");
}

/// An exclusive cumsum along the last axis of `[[1, 2, 3], [4, 5, 6]]`, computed by hand.
fn cumsum_arrays(spec: &str) -> Vec<(&'static str, Tensor)> {
    vec![
        ("spec", spec_array(spec)),
        ("input0", tensor(&[1., 2., 3., 4., 5., 6.], &[2, 3])),
        ("output", tensor(&[0., 1., 3., 0., 4., 9.], &[2, 3])),
        ("grad_output", tensor(&[1.; 6], &[2, 3])),
        // d/dx_j sum_i out_i = number of i after j.
        ("grad_input0", tensor(&[2., 1., 0., 2., 1., 0.], &[2, 3])),
    ]
}

const CUMSUM_SPEC: &str =
    r#"{"op": "cumsum", "dim": -1, "exclusive": true, "atol": 1e-6, "rtol": 1e-6}"#;

fn load_error(path: &Path) -> String {
    match load_case(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hand_computed_case_passes_with_its_gradient() {
    let dir = ScratchDir::new("hand");
    let path = dir.path("cumsum.npz");
    write_case(&path, &cumsum_arrays(CUMSUM_SPEC));
    let report = run_file(&path);
    assert!(report.passed(), "{report}");
    assert_eq!(report.comparisons.len(), 2);
    assert_eq!(report.comparisons[1].name, "grad_input0");
    assert!(report.to_string().starts_with("PASS "), "{report}");

    // f64 inputs run in f64.
    let arrays: Vec<(&str, Tensor)> = cumsum_arrays(CUMSUM_SPEC)
        .into_iter()
        .map(|(n, t)| {
            let t = if n == "spec" {
                t
            } else {
                t.to_dtype(DType::F64).expect("f64")
            };
            (n, t)
        })
        .collect();
    write_case(&path, &arrays);
    assert!(run_file(&path).passed());
}

#[test]
fn unbatched_conv_input_is_accepted_like_pytorch() {
    let dir = ScratchDir::new("unbatched");
    let path = dir.path("conv.npz");
    let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    let doubled: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    // A 1×1×1 kernel of weight 2 on a [C=1, 2, 2, 2] input, parameters given as scalars.
    write_case(
        &path,
        &[
            (
                "spec",
                spec_array(
                    r#"{"op": "conv3d", "stride": 1, "padding": "valid", "dilation": [1], "groups": 1, "atol": 1e-6, "rtol": 1e-6}"#,
                ),
            ),
            ("input0", tensor(&x, &[1, 2, 2, 2])),
            ("input1", tensor(&[2.], &[1, 1, 1, 1, 1])),
            ("output", tensor(&doubled, &[1, 2, 2, 2])),
            ("grad_output", tensor(&[1.; 8], &[1, 2, 2, 2])),
            ("grad_input0", tensor(&[2.; 8], &[1, 2, 2, 2])),
            ("grad_input1", tensor(&[36.], &[1, 1, 1, 1, 1])),
        ],
    );
    let report = run_file(&path);
    assert!(report.passed(), "{report}");
    assert_eq!(report.comparisons.len(), 3);
}

#[test]
fn value_outside_tolerance_fails_with_its_error() {
    let dir = ScratchDir::new("mismatch");
    let path = dir.path("cumsum.npz");
    let mut arrays = cumsum_arrays(CUMSUM_SPEC);
    arrays[2].1 = tensor(&[0., 1., 3.5, 0., 4., 9.], &[2, 3]);
    write_case(&path, &arrays);
    let report = run_file(&path);
    assert!(!report.passed());
    let output = &report.comparisons[0];
    assert_eq!(output.mismatched, 1);
    assert!((output.max_abs - 0.5).abs() < 1e-6, "{report}");
    assert!(report.comparisons[1].passed(), "{report}");
    assert!(report.to_string().starts_with("FAIL "), "{report}");
}

#[test]
fn unknown_op_is_reported_with_the_file() {
    let dir = ScratchDir::new("unknown-op");
    let path = dir.path("conv4d.npz");
    write_case(
        &path,
        &[
            (
                "spec",
                spec_array(r#"{"op": "conv4d", "atol": 0, "rtol": 0}"#),
            ),
            ("input0", tensor(&[1.], &[1])),
            ("output", tensor(&[1.], &[1])),
        ],
    );
    assert!(matches!(load_case(&path), Err(CaseError::UnknownOp { .. })));
    let message = load_error(&path);
    assert!(
        message.contains("conv4d.npz") && message.contains("unknown op `conv4d`"),
        "{message}"
    );
    let reports = run_paths(&[&dir.0]);
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].passed());
    assert!(
        reports[0].to_string().contains("unknown op"),
        "{}",
        reports[0]
    );
}

#[test]
fn corrupt_specs_are_reported_with_the_file() {
    let dir = ScratchDir::new("corrupt-spec");
    let path = dir.path("bad.npz");
    let data = [
        ("input0", tensor(&[1.], &[1])),
        ("output", tensor(&[1.], &[1])),
    ];
    let cases: Vec<(Tensor, &str)> = vec![
        (spec_array(r#"{"op": "cumsum", "dim": 0"#), "invalid JSON"),
        (spec_array("[1, 2]"), "JSON object"),
        (spec_array(r#"{"dim": 0}"#), "no `op`"),
        (spec_array(r#"{"op": 3}"#), "`op` must be a string"),
        (
            spec_array(r#"{"op": "cumsum", "dim": "x"}"#),
            "`dim` must be an integer",
        ),
        (
            spec_array(r#"{"op": "cumsum", "dim": 0, "atol": -1}"#),
            "`atol`",
        ),
        (
            Tensor::from_vec(vec![0xffu8, 0xfe, 0x7b], 3, &Device::Cpu).expect("bytes"),
            "not UTF-8",
        ),
        (tensor(&[1.], &[1]), "uint8"),
    ];
    for (spec, expected) in cases {
        let mut arrays = vec![("spec", spec)];
        arrays.extend(data.iter().cloned());
        write_case(&path, &arrays);
        let message = load_error(&path);
        assert!(
            message.contains("bad.npz") && message.contains(expected),
            "{message}"
        );
        assert!(!run_file(&path).passed());
    }
    write_case(&path, &data);
    assert!(load_error(&path).contains("`spec`: missing"));
}

#[test]
fn missing_or_misnumbered_arrays_are_spec_errors() {
    let dir = ScratchDir::new("arrays");
    let path = dir.path("case.npz");
    let spec = || spec_array(r#"{"op": "conv3d", "atol": 0, "rtol": 0}"#);
    let x = || tensor(&[1.; 8], &[1, 1, 2, 2, 2]);
    let cases: Vec<(Vec<(&str, Tensor)>, &str)> = vec![
        (
            vec![("spec", spec()), ("input0", x()), ("output", x())],
            "takes 2 or 3 inputs",
        ),
        (
            vec![
                ("spec", spec()),
                ("input0", x()),
                ("input2", x()),
                ("output", x()),
            ],
            "without gaps",
        ),
        (
            vec![("spec", spec()), ("input0", x()), ("input1", x())],
            "`output`: missing",
        ),
        (
            vec![
                ("spec", spec()),
                ("input0", x()),
                ("input1", x()),
                ("output", x()),
                ("grad_input0", x()),
            ],
            "without `grad_output`",
        ),
        (
            vec![
                ("spec", spec()),
                ("input0", x()),
                ("input1", x()),
                ("output", x()),
                ("grad_output", x()),
                ("grad_input2", x()),
            ],
            "no matching input2",
        ),
    ];
    for (arrays, expected) in cases {
        write_case(&path, &arrays);
        let message = load_error(&path);
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn wrong_shapes_fail_without_panicking() {
    let dir = ScratchDir::new("shapes");
    let path = dir.path("case.npz");

    // Expected output of the wrong shape.
    let mut arrays = cumsum_arrays(CUMSUM_SPEC);
    arrays[2].1 = tensor(&[0., 1., 3., 0., 4., 9.], &[3, 2]);
    write_case(&path, &arrays);
    let report = run_file(&path);
    assert!(!report.passed());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("shape [2, 3] differs from the expected [3, 2]")),
        "{report}"
    );

    // Gradient of the wrong shape.
    let mut arrays = cumsum_arrays(CUMSUM_SPEC);
    arrays[4].1 = tensor(&[0.; 6], &[6]);
    write_case(&path, &arrays);
    let report = run_file(&path);
    assert!(!report.passed());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("grad_input0: shape")),
        "{report}"
    );

    // An input the op refuses (conv3d of a rank-3 tensor): the op's error, not a panic.
    write_case(
        &path,
        &[
            (
                "spec",
                spec_array(r#"{"op": "conv3d", "atol": 0, "rtol": 0}"#),
            ),
            ("input0", tensor(&[1.; 8], &[2, 2, 2])),
            ("input1", tensor(&[1.; 8], &[1, 1, 2, 2, 2])),
            ("output", tensor(&[1.], &[1, 1, 1, 1, 1])),
        ],
    );
    let report = run_file(&path);
    assert!(!report.passed());
    assert!(
        report.errors.iter().any(|e| e.contains("conv3d")),
        "{report}"
    );
}

#[test]
fn unreadable_files_are_failed_reports() {
    let dir = ScratchDir::new("unreadable");
    let garbage = dir.path("garbage.npz");
    std::fs::write(&garbage, b"this is not a zip archive").expect("write");
    assert!(matches!(load_case(&garbage), Err(CaseError::Npz { .. })));
    assert!(load_error(&garbage).contains("garbage.npz"));

    // A valid case cut at every few bytes.
    let whole = dir.path("whole.npz");
    write_case(&whole, &cumsum_arrays(CUMSUM_SPEC));
    let bytes = std::fs::read(&whole).expect("read");
    let truncated = dir.path("truncated.npz");
    for len in (0..bytes.len()).step_by(37) {
        std::fs::write(&truncated, &bytes[..len]).expect("write");
        assert!(!run_file(&truncated).passed(), "cut at {len} passed");
    }

    let missing = dir.path("missing.npz");
    let reports = run_paths(&[&missing]);
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].passed());
    assert!(reports[0].to_string().contains("missing.npz"));
}

#[test]
fn header_claiming_more_than_the_file_holds_is_refused() {
    let dir = ScratchDir::new("huge-header");
    let path = dir.path("huge.npz");
    let spec = npy(
        "|u1",
        &CUMSUM_SPEC.len().to_string(),
        CUMSUM_SPEC.as_bytes(),
    );
    let small: Vec<u8> = [1f32, 2., 3.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // 2^40 floats claimed, 12 bytes present.
    let huge = npy("<f4", "1099511627776", &small);
    let fine = npy("<f4", "3", &small);
    let zip = stored_zip(&[
        ("spec.npy", &spec),
        ("input0.npy", &huge),
        ("output.npy", &fine),
    ]);
    std::fs::write(&path, zip).expect("write");
    let message = load_error(&path);
    assert!(
        message.contains("input0") && message.contains("truncated"),
        "{message}"
    );

    // The same writer with an honest header loads: the refusal above is about the size alone.
    let zip = stored_zip(&[
        ("spec.npy", &spec),
        ("input0.npy", &fine),
        ("output.npy", &fine),
    ]);
    std::fs::write(&path, zip).expect("write");
    assert!(load_case(&path).is_ok());
}

#[test]
fn directories_are_walked_recursively_in_sorted_order() {
    let dir = ScratchDir::new("walk");
    std::fs::create_dir_all(dir.path("sub/deeper")).expect("mkdir");
    for name in ["b.npz", "a.npz", "sub/c.npz", "sub/deeper/d.NPZ"] {
        write_case(&dir.path(name), &cumsum_arrays(CUMSUM_SPEC));
    }
    std::fs::write(dir.path("notes.txt"), b"not a case").expect("write");
    let files = case_files(&dir.0).expect("walk");
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(&dir.0)
                .expect("below root")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["a.npz", "b.npz", "sub/c.npz", "sub/deeper/d.NPZ"]);
    let single = case_files(dir.path("b.npz")).expect("file");
    assert_eq!(single, [dir.path("b.npz")]);
    assert!(run_paths(&[&dir.0]).iter().all(CaseReport::passed));
}

// ---------------------------------------------------------------------------------------------
// A minimal npy + stored-zip writer, to write headers that candle's writer never would.

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let u16le = |v: usize| (v as u16).to_le_bytes();
    let u32le = |v: usize| (v as u32).to_le_bytes();
    for (name, data) in entries {
        let offset = out.len();
        let crc = crc32(data).to_le_bytes();
        // version 2.0, no flags, stored, 1980-01-01 00:00.
        let common = [
            &u16le(20)[..],
            &u16le(0),
            &u16le(0),
            &u16le(0),
            &u16le(0x21),
            &crc,
            &u32le(data.len()),
            &u32le(data.len()),
            &u16le(name.len()),
            &u16le(0),
        ]
        .concat();
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&u16le(20));
        central.extend_from_slice(&common);
        central.extend_from_slice(&[&u16le(0)[..], &u16le(0), &u16le(0), &u32le(0)].concat());
        central.extend_from_slice(&u32le(offset));
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len();
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(
        &[
            &u16le(0)[..],
            &u16le(0),
            &u16le(entries.len()),
            &u16le(entries.len()),
        ]
        .concat(),
    );
    out.extend_from_slice(&u32le(central.len()));
    out.extend_from_slice(&u32le(central_offset));
    out.extend_from_slice(&u16le(0));
    out
}

//! binvox reader/writer: real files from binvox (README truths), synthetic grids, bad input.

use candle_core::{DType, Device};
use vnr_formats::binvox::{BinvoxError, BinvoxGrid, BinvoxVersion};
use vnr_formats::testing::fixture;

/// (file, dims, translate, scale, occupied voxels) from the fixtures README.
const FIXTURES: [(&str, usize, [f32; 3], f32, usize); 4] = [
    (
        "binvox/bunny.binvox",
        64,
        [-1.8938, -0.340252, -1.23747],
        3.11398,
        57_835,
    ),
    ("binvox/chair.binvox", 64, [0.0, 0.0, 0.0], 1.0, 5_277),
    (
        "binvox/suzanne.binvox",
        64,
        [-1.36719, -0.984375, -0.851563],
        2.73438,
        30_270,
    ),
    (
        "binvox/vengi-test.binvox",
        128,
        [-45.4271, -0.957535, -114.645],
        228.464,
        78_075,
    ),
];

fn body(bytes: &[u8]) -> &[u8] {
    let at = bytes
        .windows(5)
        .position(|w| w == b"data\n")
        .expect("data line");
    &bytes[at + 5..]
}

/// Deterministic xorshift, so mutation tests are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn fixtures_match_readme_truths() {
    for (name, dim, translate, scale, occupied) in FIXTURES {
        let Some(path) = fixture(name) else { continue };
        let grid = BinvoxGrid::read(&path).unwrap();
        assert_eq!(grid.dims(), [dim; 3], "{name}");
        assert_eq!(grid.translate(), translate, "{name}");
        assert_eq!(grid.scale(), scale, "{name}");
        assert_eq!(grid.version(), BinvoxVersion::V1, "{name}");
        assert_eq!(grid.occupied_count(), occupied, "{name}");
        assert!(grid.values().iter().all(|&v| v <= 1), "{name}");
    }
}

#[test]
fn fixture_axes_match_numpy_oracle() {
    // binvox-rw-py's reading, done with numpy: reshape(dims) then transpose (0, 2, 1) → [X, Y, Z].
    // (file, occupied with x < n/2, with y < n/4, with z >= 5n/8, first occupied (x, y, z))
    let cases = [
        ("binvox/bunny.binvox", 30_626, 19_566, 22_558, [0, 33, 39]),
        ("binvox/vengi-test.binvox", 36_262, 0, 37_906, [39, 59, 73]),
    ];
    for (name, low_x, low_y, high_z, first) in cases {
        let Some(path) = fixture(name) else { continue };
        let grid = BinvoxGrid::read(&path).unwrap();
        let n = grid.dims()[0];
        let (mut counts, mut first_seen) = ([0usize; 3], None);
        for x in 0..n {
            for y in 0..n {
                for z in 0..n {
                    if grid.get(x, y, z) != Some(0) {
                        counts[0] += usize::from(x < n / 2);
                        counts[1] += usize::from(y < n / 4);
                        counts[2] += usize::from(z >= n * 5 / 8);
                        first_seen.get_or_insert([x, y, z]);
                    }
                }
            }
        }
        assert_eq!(counts, [low_x, low_y, high_z], "{name}");
        assert_eq!(first_seen, Some(first), "{name}");
    }
}

#[test]
fn fixtures_reencode_to_identical_runs() {
    for (name, ..) in FIXTURES {
        let Some(path) = fixture(name) else { continue };
        let original = std::fs::read(&path).unwrap();
        let grid = BinvoxGrid::from_bytes(&original).unwrap();
        let written = grid.to_bytes();
        // binvox writes maximal runs, as we do, so the bodies agree byte for byte.
        assert_eq!(body(&written), body(&original), "{name}");
        assert_eq!(BinvoxGrid::from_bytes(&written).unwrap(), grid, "{name}");
    }
}

#[test]
fn write_then_read_file_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grid.binvox");
    let grid = synthetic([5, 3, 7], BinvoxVersion::V2)
        .with_transform([0.5, -2.0, 3.25], 1.5)
        .unwrap();
    grid.write(&out).unwrap();
    assert_eq!(BinvoxGrid::read(&out).unwrap(), grid);
    if let Some(path) = fixture("binvox/suzanne.binvox") {
        let grid = BinvoxGrid::read(&path).unwrap();
        grid.write(&out).unwrap();
        assert_eq!(BinvoxGrid::read(&out).unwrap(), grid);
    }
}

/// A grid whose voxel values encode their own coordinates.
fn synthetic(dims: [usize; 3], version: BinvoxVersion) -> BinvoxGrid {
    let [nx, ny, nz] = dims;
    let mut values = Vec::with_capacity(nx * ny * nz);
    for i in 0..nx {
        for j in 0..ny {
            for k in 0..nz {
                let v = (i * 31 + j * 7 + k * 3) % 5;
                values.push(match version {
                    BinvoxVersion::V1 => u8::from(v == 0),
                    BinvoxVersion::V2 => (v * 50) as u8,
                });
            }
        }
    }
    BinvoxGrid::new(dims, values, version).unwrap()
}

#[test]
fn non_cubic_dim_line_is_x_then_z_then_y() {
    // dim 2 3 4: 2 along x, 3 along z, 4 along y; file index = x*12 + z*4 + y.
    // One voxel at x=1, z=1, y=2 → file index 18.
    let mut bytes = b"#binvox 1\ndim 2 3 4\ntranslate 0 0 0\nscale 1\ndata\n".to_vec();
    bytes.extend_from_slice(&[0, 18, 1, 1, 0, 5]);
    let grid = BinvoxGrid::from_bytes(&bytes).unwrap();
    assert_eq!(grid.dims(), [2, 4, 3], "[nx, ny, nz]");
    assert_eq!(grid.get(1, 2, 1), Some(1));
    assert_eq!(grid.occupied_count(), 1);
    assert_eq!(grid.file_order_values()[18], 1);
    // [X, Y, Z], Z fastest: (1, 2, 1) → (1*4 + 2)*3 + 1 = 19.
    assert_eq!(grid.values()[19], 1);
    let tensor = grid.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(tensor.dims(), &[2, 4, 3]);
    let v: u8 = tensor
        .get(1)
        .unwrap()
        .get(2)
        .unwrap()
        .get(1)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        grid.to_bytes(),
        bytes,
        "canonical writer reproduces the file"
    );
}

#[test]
fn non_cubic_round_trip_and_file_order() {
    for dims in [[5, 3, 7], [1, 9, 2], [17, 1, 300]] {
        let grid = synthetic(dims, BinvoxVersion::V1);
        let back = BinvoxGrid::from_bytes(&grid.to_bytes()).unwrap();
        assert_eq!(back, grid);
        let [nx, ny, nz] = dims;
        let file = grid.file_order_values();
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    assert_eq!(Some(file[x * nz * ny + z * ny + y]), grid.get(x, y, z));
                }
            }
        }
        let header = String::from_utf8_lossy(&grid.to_bytes()[..40]).into_owned();
        assert!(
            header.contains(&format!("dim {nx} {nz} {ny}\n")),
            "{header}"
        );
    }
}

#[test]
fn version_2_values_round_trip() {
    let grid = synthetic([4, 6, 5], BinvoxVersion::V2);
    assert!(grid.values().contains(&200));
    let bytes = grid.to_bytes();
    assert!(bytes.starts_with(b"#binvox 2\n"));
    let back = BinvoxGrid::from_bytes(&bytes).unwrap();
    assert_eq!(back.version(), BinvoxVersion::V2);
    assert_eq!(back, grid);
    assert_eq!(
        back.occupied_count(),
        grid.values().iter().filter(|&&v| v != 0).count()
    );

    let mut all_values = b"#binvox 2\ndim 1 1 256\ndata\n".to_vec();
    all_values.extend((0..=255u8).flat_map(|v| [v, 1]));
    let grid = BinvoxGrid::from_bytes(&all_values).unwrap();
    assert_eq!(grid.values(), (0..=255u8).collect::<Vec<_>>().as_slice());
    assert_eq!(grid.occupied_count(), 255);
}

#[test]
fn version_1_accepts_only_zero_and_one() {
    let err = BinvoxGrid::new([1, 1, 2], vec![1, 2], BinvoxVersion::V1).unwrap_err();
    assert!(
        matches!(err, BinvoxError::ValueNotInV1 { index: 1, value: 2 }),
        "{err}"
    );
    let mut bytes = b"#binvox 1\ndim 1 1 2\ndata\n".to_vec();
    bytes.extend_from_slice(&[1, 1, 7, 1]);
    let err = BinvoxGrid::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(err, BinvoxError::ValueNotInV1 { index: 1, value: 7 }),
        "{err}"
    );
}

#[test]
fn world_position_is_voxel_centre() {
    if let Some(path) = fixture("binvox/bunny.binvox") {
        let grid = BinvoxGrid::read(&path).unwrap();
        let [x, y, z] = grid.world_position(0, 10, 63);
        let s = 3.11398f64 / 64.0;
        assert!((f64::from(x) - (-1.8938 + 0.5 * s)).abs() < 1e-5);
        assert!((f64::from(y) - (-0.340252 + 10.5 * s)).abs() < 1e-5);
        assert!((f64::from(z) - (-1.23747 + 63.5 * s)).abs() < 1e-5);
    }
    // Non-cubic: voxels stay cubic, of side scale / largest extent.
    let grid = BinvoxGrid::new([2, 8, 4], vec![0; 64], BinvoxVersion::V1)
        .unwrap()
        .with_transform([1.0, 2.0, 3.0], 4.0)
        .unwrap();
    assert_eq!(grid.voxel_size(), 0.5);
    assert_eq!(grid.world_position(1, 7, 3), [1.75, 5.75, 4.75]);
}

#[test]
fn tensor_conversions() {
    let grid = synthetic([3, 4, 5], BinvoxVersion::V1);
    let t = grid.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[3, 4, 5]);
    assert_eq!(t.dtype(), DType::U8);
    let sum: f32 = t
        .to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(sum as usize, grid.occupied_count());
    let back = BinvoxGrid::from_tensor(&t, BinvoxVersion::V1).unwrap();
    assert_eq!(back, grid);
}

#[test]
fn lenient_header_layouts() {
    let body = [1u8, 8];
    let headers: [&[u8]; 4] = [
        b"#binvox 1\r\ndim 2 2 2\r\ntranslate 1 2 3\r\nscale 2\r\ndata\r\n",
        b"#binvox   1  \n# made by hand\n  dim\t2  2 2 \n# between\nscale 2\ntranslate 1 2 3\n\ndata\n",
        b"#binvox 1\n#comment\ndim 2 2 2\ntranslate 1.0 2.0 3.0\nscale 2.0\n# last\ndata\n",
        b"#binvox 1\ndim 2 2 2\ntranslate 1e0 2 3\nscale 0.2e1\ndata\n",
    ];
    for header in headers {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&body);
        let grid = BinvoxGrid::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(header)));
        assert_eq!(grid.dims(), [2, 2, 2]);
        assert_eq!(grid.translate(), [1.0, 2.0, 3.0]);
        assert_eq!(grid.scale(), 2.0);
        assert_eq!(grid.occupied_count(), 8);
    }
    // Optional fields default to the identity transform; trailing bytes are ignored.
    let grid = BinvoxGrid::from_bytes(b"#binvox 1\ndim 1 1 3\ndata\n\x00\x03\x01\x02junk").unwrap();
    assert_eq!(grid.translate(), [0.0; 3]);
    assert_eq!(grid.scale(), 1.0);
    assert_eq!(grid.occupied_count(), 0);
}

fn parse_err(header: &str, body: &[u8]) -> BinvoxError {
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    BinvoxGrid::from_bytes(&bytes).expect_err(header)
}

/// Whether an error is the expected variant.
type ErrorCheck = fn(&BinvoxError) -> bool;

#[test]
fn bad_headers_give_the_right_error() {
    use BinvoxError as E;
    let ok_body = [0u8, 8];
    let cases: Vec<(&str, ErrorCheck)> = vec![
        ("", |e| matches!(e, E::BadMagic)),
        ("binvox 1\ndim 2 2 2\ndata\n", |e| matches!(e, E::BadMagic)),
        (
            "#binvox 3\ndim 2 2 2\ndata\n",
            |e| matches!(e, E::UnsupportedVersion(v) if v == "3"),
        ),
        ("#binvox\ndim 2 2 2\ndata\n", |e| {
            matches!(e, E::UnsupportedVersion(_))
        }),
        ("#binvox 1\ndata\n", |e| matches!(e, E::MissingDim)),
        ("#binvox 1\ndim 2 2 2\n", |e| matches!(e, E::MissingData)),
        ("#binvox 1\ndim 2 2 2\ndata", |e| {
            matches!(e, E::MissingData)
        }),
        ("#binvox 1\ndim 2 2\ndata\n", |e| {
            matches!(
                e,
                E::MalformedField {
                    field: "dim",
                    line: 2,
                    ..
                }
            )
        }),
        ("#binvox 1\ndim 2 -2 2\ndata\n", |e| {
            matches!(e, E::MalformedField { field: "dim", .. })
        }),
        ("#binvox 1\ndim 2 2 2\ntranslate 1 2\ndata\n", |e| {
            matches!(
                e,
                E::MalformedField {
                    field: "translate",
                    ..
                }
            )
        }),
        ("#binvox 1\ndim 2 2 2\nscale x\ndata\n", |e| {
            matches!(e, E::MalformedField { field: "scale", .. })
        }),
        ("#binvox 1\ndim 0 2 2\ndata\n", |e| {
            matches!(e, E::InvalidDims { .. })
        }),
        ("#binvox 1\ndim 100000 100000 100000\ndata\n", |e| {
            matches!(e, E::InvalidDims { .. })
        }),
        ("#binvox 1\ndim 18446744073709551615 2 2\ndata\n", |e| {
            matches!(e, E::InvalidDims { .. })
        }),
        ("#binvox 1\ndim 2 2 2\ndim 2 2 2\ndata\n", |e| {
            matches!(
                e,
                E::DuplicateField {
                    field: "dim",
                    line: 3
                }
            )
        }),
        ("#binvox 1\ndim 2 2 2\nscale 1\nscale 1\ndata\n", |e| {
            matches!(e, E::DuplicateField { field: "scale", .. })
        }),
        (
            "#binvox 1\ndim 2 2 2\nbbox 0 0 0\ndata\n",
            |e| matches!(e, E::UnknownHeaderLine { line: 3, text } if text == "bbox 0 0 0"),
        ),
        ("#binvox 1\ndim 2 2 2\nscale nan\ndata\n", |e| {
            matches!(e, E::NonFiniteTransform { .. })
        }),
        ("#binvox 1\ndim 2 2 2\ntranslate inf 0 0\ndata\n", |e| {
            matches!(e, E::NonFiniteTransform { .. })
        }),
    ];
    for (header, expected) in cases {
        let err = parse_err(header, &ok_body);
        assert!(expected(&err), "{header:?} gave {err:?}");
    }
    let not_text = [b"#binvox 1\ndim \xff 2 2\ndata\n".as_slice(), &ok_body].concat();
    assert!(matches!(
        BinvoxGrid::from_bytes(&not_text),
        Err(BinvoxError::HeaderNotText { line: 2 })
    ));
}

#[test]
fn bad_bodies_give_the_right_error() {
    use BinvoxError as E;
    let header = "#binvox 1\ndim 2 2 2\ndata\n";
    let err = parse_err(header, &[0, 4, 1, 0, 1, 4]);
    assert!(matches!(err, E::ZeroRunLength { offset: 2 }), "{err:?}");
    let err = parse_err(header, &[0, 4, 1, 5]);
    assert!(
        matches!(
            err,
            E::RunOverflowsGrid {
                offset: 2,
                end: 9,
                voxels: 8
            }
        ),
        "{err:?}"
    );
    let err = parse_err(header, &[0, 4, 1, 2, 1]);
    assert!(
        matches!(
            err,
            E::Truncated {
                decoded: 6,
                voxels: 8
            }
        ),
        "{err:?}"
    );
    // 2 bytes can cover at most 255 voxels: the size check fires before any allocation.
    let err = parse_err("#binvox 1\ndim 1024 1024 1024\ndata\n", &[0, 255, 0, 255]);
    assert!(matches!(err, E::BodyTooShort { .. }), "{err:?}");
    let err = parse_err(header, &[]);
    assert!(matches!(err, E::BodyTooShort { .. }), "{err:?}");
}

#[test]
fn truncations_and_mutations_never_panic() {
    let mut inputs = Vec::new();
    for (name, ..) in FIXTURES {
        if let Some(path) = fixture(name) {
            inputs.push(std::fs::read(path).unwrap());
        }
    }
    // Always exercise something, even without the fixtures.
    inputs.push(synthetic([6, 5, 4], BinvoxVersion::V2).to_bytes());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for bytes in &inputs {
        for len in 0..bytes.len() {
            assert!(
                BinvoxGrid::from_bytes(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
        let mut mutated = bytes.clone();
        for _ in 0..2000 {
            let at = (rng.next() % bytes.len() as u64) as usize;
            let old = mutated[at];
            mutated[at] = match rng.next() % 3 {
                0 => old ^ (1 << (rng.next() % 8)),
                1 => rng.next() as u8,
                _ => 0,
            };
            // Either outcome is fine; what matters is returning.
            let _ = BinvoxGrid::from_bytes(&mutated);
            mutated[at] = old;
        }
    }
}

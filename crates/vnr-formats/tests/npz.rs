//! npy/npz reader and writer: real fixtures, numpy-written byte strings, round trips, mutations.

use candle_core::{DType, Device, Tensor};
use half::f16;
use vnr_formats::npz::{
    read_npy, read_npy_header, read_npz, write_npy, write_npz, NpyArray, NpyData, NpyDtype,
    NpzError, NpzReader,
};
use vnr_formats::testing::fixture;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn read_bytes(bytes: &[u8]) -> Result<NpyArray, NpzError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npy");
    std::fs::write(&path, bytes).unwrap();
    read_npy(&path)
}

// Byte strings written by numpy 1.x `np.save` / `np.lib.format.write_array`.
const HEADER_PREFIX: &str = "934e554d5059010076007b276465736372273a20";
const BE_F4_FORTRAN_2X3: &str = "934e554d5059010076007b276465736372273a20273e6634272c2027666f727472616e5f6f72646572273a20547275652c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a00000000409000003fc0000040c000004040000040f00000";
const BE_I2: &str = "934e554d5059010076007b276465736372273a20273e6932272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200afffe012c0007";
const BOOL_2X2: &str = "934e554d5059010076007b276465736372273a20277c6231272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2032292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a01000001";
const F2: &str = "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a003800c0ff7b";
const U2: &str = "934e554d5059010076007b276465736372273a20273c7532272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0100ffff";
const I1: &str = "934e554d5059010076007b276465736372273a20277c6931272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a807f";
const U4_FORTRAN_2X3X4: &str = "934e554d5059010076007b276465736372273a20273c7534272c2027666f727472616e5f6f72646572273a20547275652c20277368617065273a2028322c20332c2034292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000c00000004000000100000000800000014000000010000000d00000005000000110000000900000015000000020000000e00000006000000120000000a00000016000000030000000f00000007000000130000000b00000017000000";
const V2_F8: &str = "934e554d50590200740000007b276465736372273a20273c6638272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000000000000000000000000000f03f0000000000000040";
const V3_I4: &str = "934e554d50590300740000007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000100000002000000";
const SCALAR_F8: &str = "934e554d5059010076007b276465736372273a20273c6638272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000000000000440";

#[test]
fn numpy_written_dtypes_orders_and_versions() {
    let a = read_bytes(&hex(BE_F4_FORTRAN_2X3)).unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.data(), &NpyData::F32(vec![0.0, 1.5, 3.0, 4.5, 6.0, 7.5]));

    let a = read_bytes(&hex(BE_I2)).unwrap();
    assert_eq!(a.data(), &NpyData::I16(vec![-2, 300, 7]));

    let a = read_bytes(&hex(BOOL_2X2)).unwrap();
    assert_eq!(a.data(), &NpyData::Bool(vec![true, false, false, true]));

    let a = read_bytes(&hex(F2)).unwrap();
    let expected: Vec<f16> = [0.5f32, -2.0, 65504.0]
        .iter()
        .map(|&x| f16::from_f32(x))
        .collect();
    assert_eq!(a.data(), &NpyData::F16(expected));

    assert_eq!(
        read_bytes(&hex(U2)).unwrap().data(),
        &NpyData::U16(vec![1, 65535])
    );
    assert_eq!(
        read_bytes(&hex(I1)).unwrap().data(),
        &NpyData::I8(vec![-128, 127])
    );

    let a = read_bytes(&hex(U4_FORTRAN_2X3X4)).unwrap();
    assert_eq!(a.shape(), &[2, 3, 4]);
    assert_eq!(a.data(), &NpyData::U32((0..24).collect()));

    assert_eq!(
        read_bytes(&hex(V2_F8)).unwrap().data(),
        &NpyData::F64(vec![0.0, 1.0, 2.0])
    );
    assert_eq!(
        read_bytes(&hex(V3_I4)).unwrap().data(),
        &NpyData::I32(vec![0, 1, 2])
    );

    let a = read_bytes(&hex(SCALAR_F8)).unwrap();
    assert!(a.shape().is_empty());
    assert_eq!(a.data(), &NpyData::F64(vec![2.5]));
}

#[test]
fn fixture_npy_c_and_fortran_order_agree() {
    let expected: Vec<i64> = (1..=6).flat_map(|v| [v; 4]).collect();
    for name in ["npz/c-order.npy", "npz/f-order.npy"] {
        let Some(path) = fixture(name) else { return };
        let a = read_npy(&path).unwrap();
        assert_eq!(a.shape(), &[2, 3, 4], "{name}");
        assert_eq!(a.data(), &NpyData::I64(expected.clone()), "{name}");
        let header = read_npy_header(&path).unwrap();
        assert_eq!(header.fortran_order, name.contains("f-order"));
    }
}

#[test]
fn fixture_candle_test_npy_and_npz() {
    let Some(npy) = fixture("npz/candle-test.npy") else {
        return;
    };
    assert_eq!(
        read_npy(npy).unwrap().data(),
        &NpyData::I64((0..10).collect())
    );
    let Some(npz) = fixture("npz/candle-test.npz") else {
        return;
    };
    let arrays = read_npz(npz).unwrap();
    let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x", "x_plus_one"]);
    assert_eq!(arrays[0].1.data(), &NpyData::I64((0..10).collect()));
    assert_eq!(arrays[1].1.data(), &NpyData::I64((1..11).collect()));
}

#[test]
fn fixture_compressed_and_uncompressed_npz() {
    for name in ["npz/compressed.npz", "npz/uncompressed.npz"] {
        let Some(path) = fixture(name) else { return };
        let mut reader = NpzReader::open(&path).unwrap();
        assert_eq!(reader.keys(), ["ints", "floats"], "{name}");
        let ints = reader.array("ints").unwrap();
        assert_eq!(ints.shape(), &[4]);
        assert_eq!(ints.data(), &NpyData::I64(vec![1, 2, 3, 4]));
        let floats = reader.array("floats.npy").unwrap();
        assert_eq!(floats.shape(), &[2, 1]);
        assert_eq!(floats.data(), &NpyData::F64(vec![1.0, 2.0]));
        assert!(matches!(
            reader.array("nope"),
            Err(NpzError::MissingArray { .. })
        ));
    }
}

#[test]
fn fixture_object_arrays_refused_naming_the_key() {
    let Some(path) = fixture("npz/nerfstudio-object-arrays.npz") else {
        return;
    };
    let err = read_npz(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NpzError::ObjectArray { .. }), "{msg}");
    assert!(msg.starts_with("object arrays are not supported"), "{msg}");
    assert!(msg.contains("image_filenames"), "{msg}");

    // The plain array beside them still reads lazily (stored in Fortran order).
    let mut reader = NpzReader::open(&path).unwrap();
    for key in ["semantics", "cameras"] {
        let msg = reader.array(key).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains("object arrays"), "{msg}");
    }
    let scene_box = reader.array("scene_box").unwrap();
    assert_eq!(scene_box.shape(), &[2, 3]);
    let NpyData::F32(v) = scene_box.data() else {
        panic!("f32 expected")
    };
    let expected = [
        -1.0, 1.0057906, -0.4439265, 1.0000001, -1.0057906, 0.44392657,
    ];
    for (a, b) in v.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
}

#[test]
fn candle_reads_compressed_npz() {
    let Some(path) = fixture("npz/compressed.npz") else {
        return;
    };
    let tensors = Tensor::read_npz(path).unwrap();
    let ints = &tensors.iter().find(|(n, _)| n == "ints").unwrap().1;
    assert_eq!(ints.to_vec1::<i64>().unwrap(), [1, 2, 3, 4]);
}

#[test]
fn candle_reads_our_compressed_npz() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.npz");
    let a = NpyArray::new(vec![2, 2], NpyData::F32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
    write_npz(&path, &[("a", &a)], true).unwrap();
    let tensors = Tensor::read_npz(&path).unwrap();
    assert_eq!(
        tensors[0].1.to_vec2::<f32>().unwrap(),
        [[1.0, 2.0], [3.0, 4.0]]
    );
}

fn every_dtype() -> Vec<NpyArray> {
    let shape = vec![2, 3];
    [
        NpyData::Bool(vec![true, false, true, true, false, false]),
        NpyData::U8(vec![0, 1, 2, 253, 254, 255]),
        NpyData::I8(vec![-128, -1, 0, 1, 2, 127]),
        NpyData::U16(vec![0, 1, 2, 3, 4, 65535]),
        NpyData::I16(vec![-32768, -1, 0, 1, 2, 32767]),
        NpyData::U32(vec![0, 1, 2, 3, 4, u32::MAX]),
        NpyData::I32(vec![i32::MIN, -1, 0, 1, 2, i32::MAX]),
        NpyData::I64(vec![i64::MIN, -1, 0, 1, 2, i64::MAX]),
        NpyData::F16(
            [0.0f32, -1.5, 2.25, 1e4, -0.0, 3.0]
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect(),
        ),
        NpyData::F32(vec![
            0.0,
            -1.5,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::INFINITY,
            1e-30,
        ]),
        NpyData::F64(vec![
            0.0,
            -1.5,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::NEG_INFINITY,
            1e-300,
        ]),
    ]
    .into_iter()
    .map(|data| NpyArray::new(shape.clone(), data).unwrap())
    .collect()
}

#[test]
fn npy_round_trip_every_dtype_and_shape() {
    let dir = tempfile::tempdir().unwrap();
    for (i, array) in every_dtype().into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.npy"));
        write_npy(&path, &array).unwrap();
        assert_eq!(read_npy(&path).unwrap(), array);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(&hex(HEADER_PREFIX)[..8]));
    }
    for shape in [vec![], vec![0], vec![3, 0, 2], vec![1, 1, 1, 1, 5]] {
        let n = shape.iter().product();
        let array = NpyArray::new(shape, NpyData::F32((0..n).map(|x| x as f32).collect())).unwrap();
        let path = dir.path().join("s.npy");
        write_npy(&path, &array).unwrap();
        assert_eq!(read_npy(&path).unwrap(), array);
    }
}

#[test]
fn npz_round_trip_stored_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let arrays = every_dtype();
    let named: Vec<(String, &NpyArray)> = arrays
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("a{i}"), a))
        .collect();
    let refs: Vec<(&str, &NpyArray)> = named.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    for compressed in [false, true] {
        let path = dir.path().join(format!("{compressed}.npz"));
        write_npz(&path, &refs, compressed).unwrap();
        let back = read_npz(&path).unwrap();
        assert_eq!(back.len(), arrays.len());
        for ((name, array), (want_name, want)) in back.iter().zip(&refs) {
            assert_eq!(name, want_name);
            assert_eq!(array, *want);
        }
        let header = NpzReader::open(&path).unwrap().header("a9").unwrap();
        assert_eq!(header.dtype, NpyDtype::F32);
        assert_eq!(header.shape, [2, 3]);
    }
    let a = &arrays[0];
    assert!(matches!(
        write_npz(dir.path().join("dup.npz"), &[("x", a), ("x", a)], false),
        Err(NpzError::BadArrayName { .. })
    ));
}

#[test]
fn tensor_conversions() {
    let dev = Device::Cpu;
    let widened = [
        (NpyData::Bool(vec![true, false]), DType::U8),
        (NpyData::I8(vec![-3, 4]), DType::I16),
        (NpyData::U16(vec![3, 65535]), DType::U32),
        (NpyData::I32(vec![-3, 4]), DType::I32),
        (NpyData::F64(vec![0.5, 4.0]), DType::F64),
    ];
    for (data, dtype) in widened {
        let t = NpyArray::new(vec![2], data.clone())
            .unwrap()
            .to_tensor(&dev)
            .unwrap();
        assert_eq!(t.dtype(), dtype);
        assert_eq!(t.dims(), [2]);
    }
    let t = NpyArray::new(vec![2], NpyData::Bool(vec![true, false]))
        .unwrap()
        .into_tensor(&dev)
        .unwrap();
    assert_eq!(t.to_vec1::<u8>().unwrap(), [1, 0]);

    let t = Tensor::arange(0f32, 24.0, &dev)
        .unwrap()
        .reshape((2, 3, 4))
        .unwrap();
    // A transposed (non-contiguous) view must come out in its logical order.
    let tt = t.transpose(0, 2).unwrap();
    let a = NpyArray::from_tensor(&tt).unwrap();
    assert_eq!(a.shape(), &[4, 3, 2]);
    let back = a.into_tensor(&dev).unwrap();
    assert_eq!(back.to_vec3::<f32>().unwrap(), tt.to_vec3::<f32>().unwrap());
    let bf = t.to_dtype(DType::BF16).unwrap();
    assert!(matches!(
        NpyArray::from_tensor(&bf),
        Err(NpzError::UnsupportedTensorDtype(_))
    ));
    assert!(matches!(
        NpyArray::new(vec![2, 2], NpyData::U8(vec![1])),
        Err(NpzError::ShapeMismatch { .. })
    ));
}

fn patched_header(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Header dict, data bytes after it, and the expected error.
type HeaderCase = (&'static str, &'static [u8], fn(&NpzError) -> bool);

#[test]
fn malformed_headers_are_typed_errors() {
    let cases: &[HeaderCase] = &[
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", &[0; 4], |e| matches!(e, NpzError::Truncated { .. })),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", &[0; 8], |e| matches!(e, NpzError::TrailingBytes { .. })),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", &[], |e| matches!(e, NpzError::SizeOverflow { .. })),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 4294967296), }", &[], |e| matches!(e, NpzError::SizeOverflow { .. })),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,), }", &[], |e| matches!(e, NpzError::Truncated { .. })),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", &[], |e| matches!(e, NpzError::BadHeader { .. })),
        ("{'descr': '<f4', 'fortran_order': False}", &[], |e| matches!(e, NpzError::BadHeader { .. })),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': ()}", &[0; 4], |e| matches!(e, NpzError::BadHeader { .. })),
        ("{'descr': '<c8', 'fortran_order': False, 'shape': ()}", &[0; 8], |e| matches!(e, NpzError::UnsupportedDtype { .. })),
        ("{'descr': '<U3', 'fortran_order': False, 'shape': ()}", &[0; 12], |e| matches!(e, NpzError::UnsupportedDtype { .. })),
        ("{'descr': 'é', 'fortran_order': False, 'shape': ()}", &[], |e| matches!(e, NpzError::UnsupportedDtype { .. })),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}", &[0; 4], |e| matches!(e, NpzError::UnsupportedDtype { .. })),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}", &[0; 16], |e| matches!(e, NpzError::ObjectArray { .. })),
        ("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", &[], |e| matches!(e, NpzError::BadHeader { .. })),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } junk", &[0; 4], |e| matches!(e, NpzError::BadHeader { .. })),
    ];
    for (dict, data, check) in cases {
        let err = read_bytes(&patched_header(dict, data)).unwrap_err();
        assert!(check(&err), "{dict}: {err}");
        assert!(err.to_string().contains("a.npy"), "{err}");
    }
    let err = read_bytes(b"PK\x03\x04 not an npy").unwrap_err();
    assert!(matches!(err, NpzError::BadMagic { .. }), "{err}");
    let err = read_bytes(b"\x93NUMPY\x09\x00\x10\x00").unwrap_err();
    assert!(matches!(err, NpzError::UnsupportedVersion { .. }), "{err}");
    // A v2 header claiming 4 GiB of dict text must not allocate it.
    let err = read_bytes(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{").unwrap_err();
    assert!(matches!(err, NpzError::Truncated { .. }), "{err}");
}

/// Deterministic byte flips without a random-number dependency.
fn flips(len: usize, count: usize) -> impl Iterator<Item = (usize, u8)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state % len as u64) as usize, (state >> 32) as u8 | 1)
    })
}

fn mutate_and_read(original: &[u8], file_name: &str, read: impl Fn(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let truncations = (0..original.len()).map(|cut| original[..cut].to_vec());
    let flipped = flips(original.len(), 2000).map(|(pos, xor)| {
        let mut bytes = original.to_vec();
        bytes[pos] ^= xor;
        bytes
    });
    for (i, bytes) in truncations.chain(flipped).enumerate() {
        // A fresh name each time: rewriting one file in place makes ext4 flush it on close.
        let path = dir.path().join(format!("{i}-{file_name}"));
        std::fs::write(&path, &bytes).unwrap();
        read(&path);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn mutated_npy_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.npy");
    let array = NpyArray::new(vec![3, 5], NpyData::F64((0..15).map(f64::from).collect())).unwrap();
    write_npy(&path, &array).unwrap();
    let original = std::fs::read(&path).unwrap();
    mutate_and_read(&original, "m.npy", |p| {
        let _ = read_npy(p);
    });
    // Every strict prefix is an error, never a silently short array.
    for cut in 0..original.len() {
        let prefix = dir.path().join(format!("prefix-{cut}.npy"));
        std::fs::write(&prefix, &original[..cut]).unwrap();
        assert!(read_npy(&prefix).is_err(), "prefix {cut} accepted");
    }
}

#[test]
fn mutated_npz_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let a = NpyArray::new(
        vec![4, 4],
        NpyData::F32((0..16).map(|x| x as f32).collect()),
    )
    .unwrap();
    let b = NpyArray::new(vec![3], NpyData::I64(vec![7, 8, 9])).unwrap();
    for compressed in [false, true] {
        let path = dir.path().join("m.npz");
        write_npz(&path, &[("a", &a), ("b", &b)], compressed).unwrap();
        let original = std::fs::read(&path).unwrap();
        mutate_and_read(&original, "m.npz", |p| {
            if let Ok(arrays) = read_npz(p) {
                // Whatever is accepted must be self-consistent.
                for (_, arr) in arrays {
                    assert_eq!(arr.len(), arr.shape().iter().product::<usize>());
                }
            }
            if let Ok(mut r) = NpzReader::open(p) {
                let _ = r.header("a");
                let _ = r.array("b");
            }
        });
    }
}

/// Overwrites the 4-byte little-endian field at `offset` after every occurrence of `signature`.
fn patch_after(bytes: &mut [u8], signature: &[u8], offset: usize, value: u32) {
    let starts: Vec<usize> = bytes
        .windows(signature.len())
        .enumerate()
        .filter(|(_, w)| *w == signature)
        .map(|(i, _)| i)
        .collect();
    for start in starts {
        bytes[start + offset..start + offset + 4].copy_from_slice(&value.to_le_bytes());
    }
}

#[test]
fn lying_zip_entry_sizes_are_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lie.npz");
    let a = NpyArray::new(vec![64], NpyData::F32(vec![1.0; 64])).unwrap();
    for compressed in [false, true] {
        write_npz(&path, &[("a", &a)], compressed).unwrap();
        let original = std::fs::read(&path).unwrap();
        // Uncompressed size: offset 22 in local headers, 24 in central directory headers.
        for huge in [0xFFFF_FFF0u32, 1 << 30] {
            let mut bytes = original.clone();
            patch_after(&mut bytes, b"PK\x03\x04", 22, huge);
            patch_after(&mut bytes, b"PK\x01\x02", 24, huge);
            std::fs::write(&path, &bytes).unwrap();
            let err = NpzReader::open(&path)
                .and_then(|mut r| r.array("a"))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    NpzError::ImplausibleEntrySize { .. }
                        | NpzError::TrailingBytes { .. }
                        | NpzError::Truncated { .. }
                        | NpzError::Zip { .. }
                        | NpzError::Io { .. }
                ),
                "{err}"
            );
        }
        // Declared smaller than the data: the header's array no longer fits.
        let mut bytes = original.clone();
        patch_after(&mut bytes, b"PK\x03\x04", 22, 100);
        patch_after(&mut bytes, b"PK\x01\x02", 24, 100);
        std::fs::write(&path, &bytes).unwrap();
        assert!(NpzReader::open(&path)
            .and_then(|mut r| r.array("a"))
            .is_err());
    }
}

/// Arrays of several MiB: decoded in many read blocks straight into huge-page-advised buffers,
/// with an odd element count so the last block is partial.
#[test]
fn large_arrays_decode_across_read_blocks() {
    let n = 1_500_001usize; // 6 MB of f32, above the huge-page threshold
    let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 7.0).collect();
    let array = NpyArray::new(vec![n], NpyData::F32(values.clone())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for compressed in [false, true] {
        let path = dir.path().join(format!("large_{compressed}.npz"));
        write_npz(&path, &[("x", &array)], compressed).unwrap();
        let mut reader = NpzReader::open(&path).unwrap();
        assert_eq!(reader.array("x").unwrap(), array, "compressed={compressed}");
    }

    // Big-endian f8 and u2, Fortran-ordered [3, n/3] f8, bool bytes (any non-zero is True).
    let be_f8: Vec<u8> = values
        .iter()
        .flat_map(|&v| f64::from(v).to_be_bytes())
        .collect();
    let dict = format!("{{'descr': '>f8', 'fortran_order': False, 'shape': ({n},), }}\n");
    let expected: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(
        read_bytes(&patched_header(&dict, &be_f8)).unwrap().data(),
        &NpyData::F64(expected.clone())
    );
    let be_u2: Vec<u8> = (0..n).flat_map(|i| (i as u16).to_be_bytes()).collect();
    let dict = format!("{{'descr': '>u2', 'fortran_order': False, 'shape': ({n},), }}\n");
    assert_eq!(
        read_bytes(&patched_header(&dict, &be_u2)).unwrap().data(),
        &NpyData::U16((0..n).map(|i| i as u16).collect())
    );
    let cols = n / 3;
    let fortran: Vec<u8> = (0..3 * cols)
        .flat_map(|k| ((k % 3) * cols + k / 3).to_le_bytes()[..4].to_vec())
        .collect();
    let dict = format!("{{'descr': '<u4', 'fortran_order': True, 'shape': (3, {cols}), }}\n");
    let a = read_bytes(&patched_header(&dict, &fortran)).unwrap();
    assert_eq!(a.shape(), &[3, cols]);
    assert_eq!(a.data(), &NpyData::U32((0..3 * cols as u32).collect()));
    let flags: Vec<u8> = (0..n).map(|i| (i % 3) as u8 * 7).collect();
    let dict = format!("{{'descr': '|b1', 'fortran_order': False, 'shape': ({n},), }}\n");
    assert_eq!(
        read_bytes(&patched_header(&dict, &flags)).unwrap().data(),
        &NpyData::Bool(flags.iter().map(|&b| b != 0).collect())
    );
    let halves: Vec<u8> = values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let dict = format!("{{'descr': '<f2', 'fortran_order': False, 'shape': ({n},), }}\n");
    assert_eq!(
        read_bytes(&patched_header(&dict, &halves)).unwrap().data(),
        &NpyData::F16(values.iter().map(|&v| f16::from_f32(v)).collect())
    );

    // Cut 1000 bytes short: a typed error, never a short array.
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n},), }}\n");
    let le_f4: Vec<u8> = values.iter().flat_map(|&v| v.to_le_bytes()).collect();
    let mut cut = patched_header(&dict, &le_f4);
    cut.truncate(cut.len() - 1000);
    assert!(matches!(read_bytes(&cut), Err(NpzError::Truncated { .. })));
}

/// `NpzReader::tensor` converts while decoding and must agree bit for bit with decoding first
/// and calling `to_dtype`, for every stored type and target, across read blocks, and for
/// Fortran-ordered data.
#[test]
fn tensor_converts_while_decoding_like_to_dtype() {
    let bits = |t: &Tensor| -> Vec<u64> {
        let flat = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        flat.to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let n = 700_001usize; // several read blocks of f64, the last one partial
    let mut arrays = every_dtype();
    arrays.push(
        NpyArray::new(
            vec![n, 1],
            NpyData::F64((0..n).map(|i| i as f64 / 3.0 - 1e5).collect()),
        )
        .unwrap(),
    );
    let named: Vec<String> = (0..arrays.len()).map(|i| format!("a{i}")).collect();
    let refs: Vec<(&str, &NpyArray)> = named.iter().map(String::as_str).zip(&arrays).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.npz");
    write_npz(&path, &refs, true).unwrap();
    let mut reader = NpzReader::open(&path).unwrap();
    for (name, array) in &refs {
        for dtype in [
            DType::U8,
            DType::U32,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::BF16,
            DType::F16,
            DType::F32,
            DType::F64,
        ] {
            let got = reader.tensor(name, dtype).unwrap();
            let want = array
                .to_tensor(&Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(got.dtype(), dtype, "{name} as {dtype:?}");
            assert_eq!(got.dims(), array.shape(), "{name} as {dtype:?}");
            assert_eq!(bits(&got), bits(&want), "{name} as {dtype:?}");
        }
    }
    assert!(matches!(
        reader.tensor("missing", DType::F32),
        Err(NpzError::MissingArray { .. })
    ));

    // Fortran order is transposed before converting.
    let npy = dir.path().join("f.npz");
    std::fs::write(dir.path().join("f.npy"), hex(BE_F4_FORTRAN_2X3)).unwrap();
    let fortran = read_npy(dir.path().join("f.npy")).unwrap();
    write_npz(&npy, &[("f", &fortran)], false).unwrap();
    let got = NpzReader::open(&npy)
        .unwrap()
        .tensor("f", DType::F64)
        .unwrap();
    assert_eq!(
        got.to_vec2::<f64>().unwrap(),
        [[0.0, 1.5, 3.0], [4.5, 6.0, 7.5]]
    );
}

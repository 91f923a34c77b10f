//! Plenoxel grids: svox2 golden checkpoints and renders (tools/golden/svox2_reference.py),
//! checkpoint round trips and corrupt files, empty corners, occupancy skipping, the fast
//! renderer against the reference, and finite-difference gradients.

use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::npz::{write_npz, NpyArray, NpyData, NpzReader};
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_render::field::Field;
use vnr_render::plenoxels::sh::{eval_sh_bases, SH_C0};
use vnr_render::plenoxels::{PlenoxelError, PlenoxelGrid, RenderOptions};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/golden/render/plenoxels")
        .join(name)
}

fn array_f64(npz: &mut NpzReader, key: &str) -> Vec<f64> {
    npz.tensor(key, DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A random sparse grid: `empty_frac` of the voxels empty, links in shuffled order.
fn random_grid(
    rng: &mut ChaCha8Rng,
    dims: [usize; 3],
    k: usize,
    empty_frac: f64,
    dtype: DType,
    density_range: (f64, f64),
    sh_scale: f64,
) -> PlenoxelGrid {
    let voxels = dims.iter().product::<usize>();
    let mut links = vec![-1i32; voxels];
    let filled: Vec<usize> = (0..voxels)
        .filter(|_| rng.random::<f64>() >= empty_frac)
        .collect();
    let mut order: Vec<i32> = (0..filled.len() as i32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    for (&v, &l) in filled.iter().zip(&order) {
        links[v] = l;
    }
    let n = filled.len();
    let density: Vec<f64> = (0..n)
        .map(|_| rng.random_range(density_range.0..density_range.1))
        .collect();
    let sh: Vec<f64> = (0..n * 3 * k)
        .map(|_| rng.random_range(-sh_scale..sh_scale))
        .collect();
    let dev = Device::Cpu;
    PlenoxelGrid::new(
        dims,
        links,
        Tensor::from_vec(density, (n, 1), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
        Tensor::from_vec(sh, (n, 3 * k), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
        [1.0, 0.9, 1.1],
        [0.05, -0.1, 0.0],
    )
    .unwrap()
}

/// Rays from outside and inside the unit-ish box, with non-unit directions, `[R, 3]` each.
fn random_rays(rng: &mut ChaCha8Rng, n: usize) -> (Tensor, Tensor) {
    let mut origins = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..n {
        let o: [f64; 3] = if i % 3 == 0 {
            std::array::from_fn(|_| rng.random_range(-0.8..0.8))
        } else {
            std::array::from_fn(|_| rng.random_range(-3.0..3.0))
        };
        let target: [f64; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        let scale = rng.random_range(0.5..2.0);
        origins.extend(o);
        dirs.extend((0..3).map(|a| (target[a] - o[a]) * scale));
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(origins, (n, 3), &dev).unwrap(),
        Tensor::from_vec(dirs, (n, 3), &dev).unwrap(),
    )
}

fn options_from(values: &[f64]) -> RenderOptions {
    RenderOptions {
        step_size: values[0] as f32,
        sigma_thresh: values[1] as f32,
        stop_thresh: values[2] as f32,
        background_brightness: values[3] as f32,
        near_clip: values[4] as f32,
        skip_empty: true,
    }
}

#[test]
fn golden_checkpoints_render_like_svox2() {
    for (ckpt, expected) in [
        ("grid16_sh1.npz", "grid16_sh1_expected.npz"),
        ("grid16_sh1_compressed.npz", "grid16_sh1_expected.npz"),
        ("grid5x7x9_sh4.npz", "grid5x7x9_sh4_expected.npz"),
    ] {
        let grid = PlenoxelGrid::read(golden(ckpt)).unwrap();
        assert_eq!(grid.sh().dtype(), DType::F16, "f16 storage is kept");
        let mut npz = NpzReader::open(golden(expected)).unwrap();
        let origins = npz.tensor("origins", DType::F32).unwrap();
        let dirs = npz.tensor("directions", DType::F32).unwrap();
        for j in 0..2 {
            let opts = options_from(&array_f64(&mut npz, &format!("options_{j}")));
            let want = array_f64(&mut npz, &format!("colours_{j}"));
            let fast = flat(&grid.render_rays(&origins, &dirs, &opts).unwrap());
            let err = max_abs_diff(&fast, &want);
            assert!(err < 1e-4, "{ckpt} options {j}: max error {err}");
            let reference = flat(&grid.render_rays_reference(&origins, &dirs, &opts).unwrap());
            let err = max_abs_diff(&reference, &want);
            assert!(
                err < 1e-4,
                "{ckpt} options {j} (reference): max error {err}"
            );
        }
        let points = npz.tensor("points", DType::F32).unwrap();
        let (density, sh) = grid.sample(&points).unwrap();
        let got = flat(&Tensor::cat(&[density, sh], 1).unwrap());
        let err = max_abs_diff(&got, &array_f64(&mut npz, "samples"));
        assert!(err < 1e-4, "{ckpt} samples: max error {err}");
    }
}

#[test]
fn sh_bases_match_the_legendre_formula() {
    let mut npz = NpzReader::open(golden("sh_legendre.npz")).unwrap();
    let dirs = npz.tensor("directions", DType::F64).unwrap();
    let want = array_f64(&mut npz, "bases");
    let got = flat(&eval_sh_bases(4, &dirs).unwrap());
    assert!(max_abs_diff(&got, &want) < 1e-12);
    // Lower degrees are the leading columns; non-unit directions are normalised.
    let got1 = eval_sh_bases(1, &(dirs.clone() * 3.0).unwrap()).unwrap();
    let want1: Vec<f64> = want.chunks(25).flat_map(|r| r[..4].to_vec()).collect();
    assert!(max_abs_diff(&flat(&got1), &want1) < 1e-12);
    assert!(eval_sh_bases(5, &dirs).is_err());
}

#[test]
fn checkpoint_round_trip_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let grid = PlenoxelGrid::read(golden("grid5x7x9_sh4.npz")).unwrap();
    for compressed in [false, true] {
        let path = dir.path().join(format!("ckpt_{compressed}.npz"));
        grid.write(&path, compressed).unwrap();
        let back = PlenoxelGrid::read(&path).unwrap();
        assert_eq!(back.dims(), grid.dims());
        assert_eq!(back.links(), grid.links());
        assert_eq!(back.radius(), grid.radius());
        assert_eq!(back.center(), grid.center());
        assert_eq!(flat(back.density()), flat(grid.density()));
        assert_eq!(flat(back.sh()), flat(grid.sh()));
        // Same keys, order and dtypes as svox2's `SparseGrid.save`.
        let mut npz = NpzReader::open(&path).unwrap();
        let keys = npz.keys().to_vec();
        assert_eq!(
            keys,
            [
                "radius",
                "center",
                "links",
                "density_data",
                "sh_data",
                "basis_type"
            ]
        );
        let dtypes: Vec<&str> = keys
            .iter()
            .map(|k| npz.header(k).unwrap().dtype.name())
            .collect();
        assert_eq!(
            dtypes,
            ["float32", "float32", "int32", "float32", "float16", "int64"]
        );
    }
}

/// Writes a checkpoint from the golden one with `edit` applied to its arrays.
fn edited_checkpoint(
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, NpyArray)>),
) -> PathBuf {
    let mut arrays = vnr_formats::npz::read_npz(golden("grid5x7x9_sh4.npz")).unwrap();
    edit(&mut arrays);
    let path = dir.join(name);
    let refs: Vec<(&str, &NpyArray)> = arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    write_npz(&path, &refs, false).unwrap();
    path
}

fn replace(arrays: &mut [(String, NpyArray)], key: &str, array: NpyArray) {
    let slot = arrays.iter_mut().find(|(k, _)| k == key).unwrap();
    slot.1 = array;
}

#[test]
fn corrupt_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let original = vnr_formats::npz::read_npz(golden("grid5x7x9_sh4.npz")).unwrap();
    let get = |key: &str| original.iter().find(|(k, _)| k == key).unwrap().1.clone();
    let links = get("links");
    let n = get("density_data").shape()[0];

    let bad_link = edited_checkpoint(dir, "bad_link.npz", |a| {
        let NpyData::I32(mut v) = links.data().clone() else {
            panic!("links are int32")
        };
        v[7] = n as i32;
        replace(
            a,
            "links",
            NpyArray::new(links.shape().to_vec(), NpyData::I32(v)).unwrap(),
        );
    });
    assert!(matches!(
        PlenoxelGrid::read(bad_link),
        Err(PlenoxelError::LinkOutOfRange { link, .. }) if link == n as i64
    ));

    let bad_sh = edited_checkpoint(dir, "bad_sh.npz", |a| {
        replace(
            a,
            "sh_data",
            NpyArray::new(vec![n, 6], NpyData::F32(vec![0.0; n * 6])).unwrap(),
        );
    });
    assert!(matches!(
        PlenoxelGrid::read(bad_sh),
        Err(PlenoxelError::BadShape { key: "sh_data", .. })
    ));

    let bad_density = edited_checkpoint(dir, "bad_density.npz", |a| {
        replace(
            a,
            "density_data",
            NpyArray::new(vec![n], NpyData::F32(vec![0.0; n])).unwrap(),
        );
    });
    assert!(matches!(
        PlenoxelGrid::read(bad_density),
        Err(PlenoxelError::BadShape {
            key: "density_data",
            ..
        })
    ));

    let flat_links = edited_checkpoint(dir, "flat_links.npz", |a| {
        replace(
            a,
            "links",
            NpyArray::new(vec![links.len()], links.data().clone()).unwrap(),
        );
    });
    assert!(matches!(
        PlenoxelGrid::read(flat_links),
        Err(PlenoxelError::BadShape { key: "links", .. })
    ));

    let float_links = edited_checkpoint(dir, "float_links.npz", |a| {
        let zeros = NpyData::F32(vec![0.0; links.len()]);
        replace(
            a,
            "links",
            NpyArray::new(links.shape().to_vec(), zeros).unwrap(),
        );
    });
    assert!(matches!(
        PlenoxelGrid::read(float_links),
        Err(PlenoxelError::BadDtype { key: "links", .. })
    ));

    let mlp = edited_checkpoint(dir, "mlp.npz", |a| {
        replace(
            a,
            "basis_type",
            NpyArray::new(vec![], NpyData::I64(vec![255])).unwrap(),
        );
    });
    let err = PlenoxelGrid::read(mlp).unwrap_err();
    assert!(matches!(
        err,
        PlenoxelError::UnsupportedBasis { code: 255, .. }
    ));
    assert!(err.to_string().contains("MLP"), "{err}");

    let background = edited_checkpoint(dir, "background.npz", |a| {
        a.push((
            "background_data".into(),
            NpyArray::new(vec![1, 2, 4], NpyData::F32(vec![0.0; 8])).unwrap(),
        ));
    });
    assert!(matches!(
        PlenoxelGrid::read(background),
        Err(PlenoxelError::BackgroundModel { .. })
    ));

    let no_sh = edited_checkpoint(dir, "no_sh.npz", |a| a.retain(|(k, _)| k != "sh_data"));
    assert!(matches!(
        PlenoxelGrid::read(no_sh),
        Err(PlenoxelError::MissingKey { key: "sh_data", .. })
    ));

    // A truncated archive is an error, not a panic.
    let bytes = std::fs::read(golden("grid5x7x9_sh4.npz")).unwrap();
    let truncated = dir.join("truncated.npz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(PlenoxelGrid::read(truncated).is_err());
}

#[test]
fn svox2_legacy_layouts_load() {
    let dir = tempfile::tempdir().unwrap();
    let grid = PlenoxelGrid::read(golden("grid5x7x9_sh4.npz")).unwrap();
    // Older svox2: one `data [N, 1 + 3K]` array, no radius/center/basis_type.
    let data = Tensor::cat(
        &[
            grid.density().clone(),
            grid.sh().to_dtype(DType::F32).unwrap(),
        ],
        1,
    )
    .unwrap();
    let data = NpyArray::from_tensor(&data).unwrap();
    let links = NpyArray::new(grid.dims().to_vec(), NpyData::I32(grid.links().to_vec())).unwrap();
    let path = dir.path().join("legacy.npz");
    write_npz(&path, &[("links", &links), ("data", &data)], true).unwrap();
    let legacy = PlenoxelGrid::read(&path).unwrap();
    assert_eq!(legacy.radius(), [1.0; 3]);
    assert_eq!(legacy.center(), [0.0; 3]);
    assert_eq!(flat(legacy.density()), flat(grid.density()));
    assert_eq!(flat(legacy.sh()), flat(grid.sh()));
}

/// A 4³ grid whose voxels with x < 2 are filled (density 50, DC colour 0.5 + C0 · 1) and the
/// others empty.
fn half_filled_grid() -> PlenoxelGrid {
    let dims = [4, 4, 4];
    let mut links = vec![-1i32; 64];
    let mut n = 0;
    for (i, link) in links.iter_mut().enumerate() {
        if i / 16 < 2 {
            *link = n;
            n += 1;
        }
    }
    let n = n as usize;
    let dev = Device::Cpu;
    let density = Tensor::full(50f32, (n, 1), &dev).unwrap();
    let sh = Tensor::ones((n, 3), DType::F32, &dev).unwrap();
    PlenoxelGrid::new(dims, links, density, sh, [1.0; 3], [0.0; 3]).unwrap()
}

#[test]
fn empty_corners_never_darken_samples() {
    let grid = half_filled_grid();
    // Halfway between the last filled layer (x = 1) and the first empty one (x = 2): grid x is
    // 1.5, world x = (1.5 + 0.5) / 4 * 2 - 1 = 0.
    let points = Tensor::new(&[[0f32, 0.1, -0.2]], &Device::Cpu).unwrap();
    let (density, sh) = grid.sample(&points).unwrap();
    assert_eq!(flat(&density), [25.0], "empty corners count as density 0");
    assert_eq!(flat(&sh), [0.5; 3], "empty corners count as SH 0");

    // Rays grazing the filled/empty boundary: every sample's colour is ≥ 0.5, so the pixel
    // (background 0) is at least 0.5 × its opacity. A −999 sentinel gives black samples here.
    let n = 16;
    let origins: Vec<f32> = (0..n)
        .flat_map(|i| [0.02 * i as f32 - 0.1, -2.0, 0.3])
        .collect();
    let dirs: Vec<f32> = (0..n).flat_map(|_| [0.0f32, 1.0, 0.05]).collect();
    let origins = Tensor::from_vec(origins, (n, 3), &Device::Cpu).unwrap();
    let dirs = Tensor::from_vec(dirs, (n, 3), &Device::Cpu).unwrap();
    let black_bg = RenderOptions {
        background_brightness: 0.0,
        ..Default::default()
    };
    let white_bg = RenderOptions::default();
    let on_black = flat(&grid.render_rays(&origins, &dirs, &black_bg).unwrap());
    let on_white = flat(&grid.render_rays(&origins, &dirs, &white_bg).unwrap());
    let mut some_opaque = false;
    for (c, w) in on_black.iter().zip(&on_white) {
        let opacity = 1.0 - (w - c);
        some_opaque |= opacity > 0.5;
        assert!(
            *c >= 0.5 * opacity - 1e-6,
            "colour {c} at opacity {opacity}"
        );
    }
    assert!(some_opaque, "the rays must cross the filled half");
}

/// A 40³ grid with two small filled clusters and everything else empty.
fn clustered_grid(rng: &mut ChaCha8Rng, dtype: DType) -> PlenoxelGrid {
    let dims = [40, 40, 40];
    let mut links = vec![-1i32; 40 * 40 * 40];
    let mut n = 0;
    for (x, y, z) in
        (0..40).flat_map(|x| (0..40).flat_map(move |y| (0..40).map(move |z| (x, y, z))))
    {
        let in_a = (5..12).contains(&x) && (8..20).contains(&y) && (10..17).contains(&z);
        let in_b = (25..33).contains(&x) && (20..24).contains(&y) && (22..35).contains(&z);
        if in_a || in_b {
            links[(x * 40 + y) * 40 + z] = n;
            n += 1;
        }
    }
    let n = n as usize;
    let density: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..30.0)).collect();
    let sh: Vec<f64> = (0..n * 27).map(|_| rng.random_range(-0.6..0.6)).collect();
    let dev = Device::Cpu;
    PlenoxelGrid::new(
        dims,
        links,
        Tensor::from_vec(density, (n, 1), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
        Tensor::from_vec(sh, (n, 27), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
        [1.0; 3],
        [0.0; 3],
    )
    .unwrap()
}

/// A pinhole image's rays looking at the grid from `eye`, `[side, side, 3]` each.
fn image_rays(side: usize, eye: [f64; 3]) -> (Tensor, Tensor) {
    let mut origins = Vec::new();
    let mut dirs = Vec::new();
    for v in 0..side {
        for u in 0..side {
            let x = (u as f64 + 0.5) / side as f64 * 1.6 - 0.8;
            let y = (v as f64 + 0.5) / side as f64 * 1.6 - 0.8;
            origins.extend(eye);
            dirs.extend([x - eye[0], y - eye[1], 0.3 * x - eye[2]]);
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(origins, (side, side, 3), &dev).unwrap(),
        Tensor::from_vec(dirs, (side, side, 3), &dev).unwrap(),
    )
}

#[test]
fn occupancy_skipping_gives_the_same_image() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let grid = clustered_grid(&mut rng, DType::F32);
    for eye in [[0.3, -0.2, -3.0], [2.5, 1.5, 0.7], [0.0, 0.0, 0.0]] {
        let (origins, dirs) = image_rays(24, eye);
        let skip = RenderOptions::default();
        let no_skip = RenderOptions {
            skip_empty: false,
            ..skip
        };
        let a = flat(&grid.render_rays(&origins, &dirs, &skip).unwrap());
        let b = flat(&grid.render_rays(&origins, &dirs, &no_skip).unwrap());
        assert_eq!(a, b, "eye {eye:?}");
        assert!(
            a.iter().any(|&c| c < 0.99),
            "the image must show the clusters"
        );
        let reference = flat(&grid.render_rays_reference(&origins, &dirs, &skip).unwrap());
        assert!(max_abs_diff(&a, &reference) < 1e-5);
    }
}

#[test]
fn fast_renderer_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (k, dtype) in [(1, DType::F32), (9, DType::F16), (16, DType::F64)] {
        let grid = random_grid(&mut rng, [9, 6, 7], k, 0.4, dtype, (-3.0, 25.0), 0.8);
        let (origins, dirs) = random_rays(&mut rng, 40);
        for opts in [
            RenderOptions::default(),
            RenderOptions {
                step_size: 0.23,
                stop_thresh: 0.2,
                background_brightness: 0.4,
                near_clip: 0.3,
                sigma_thresh: 1.5,
                skip_empty: true,
            },
        ] {
            let fast = grid.render_rays(&origins, &dirs, &opts).unwrap();
            assert_eq!(fast.dims(), [40, 3]);
            let reference = grid.render_rays_reference(&origins, &dirs, &opts).unwrap();
            let err = max_abs_diff(&flat(&fast), &flat(&reference));
            assert!(err < 1e-5, "K = {k}, {dtype:?}: max error {err}");
        }
    }
}

#[test]
fn render_gradients_match_finite_differences() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let grid = random_grid(&mut rng, [4, 3, 4], 4, 0.35, DType::F64, (1.0, 6.0), 0.2);
    let (origins, dirs) = random_rays(&mut rng, 8);
    let cfg = GradCheckConfig {
        eps: 1e-6,
        atol: 1e-7,
        rtol: 1e-5,
        skip_inputs: vec![],
    };
    for opts in [
        RenderOptions::default(),
        RenderOptions {
            step_size: 0.3,
            stop_thresh: 0.6,
            background_brightness: 0.2,
            ..Default::default()
        },
    ] {
        let render = |v: &[Tensor]| -> Result<Tensor> {
            let g = grid
                .with_data(v[0].clone(), v[1].clone())
                .map_err(candle_core::Error::wrap)?;
            g.render_rays(&origins, &dirs, &opts)
        };
        check_gradients(render, &[grid.density().clone(), grid.sh().clone()], &cfg)?;
    }
    Ok(())
}

#[test]
fn field_query_is_svox2_sample_with_colour() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let grid = random_grid(&mut rng, [5, 5, 5], 9, 0.3, DType::F64, (-2.0, 8.0), 0.4);
    let dev = Device::Cpu;
    let points: Vec<f64> = (0..2 * 3 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let points = Tensor::from_vec(points, (2, 3, 3), &dev)?;
    let dirs = Tensor::new(&[[0.3f64, -0.5, 0.8], [-1.0, 0.2, 0.1]], &dev)?;
    let out = grid.query(&points, Some(&dirs))?;
    assert_eq!(out.densities.dims(), [2, 3, 1]);
    assert_eq!(out.features.dims(), [2, 3, 3]);
    let (density, sh) = grid.sample(&points.reshape((6, 3))?)?;
    assert_eq!(flat(&out.densities), flat(&density.relu()?));
    // Colour of point 4 (ray 1): max(Σ_k basis_k(dir_1) · sh[ch, k] + 0.5, 0).
    let basis = flat(&eval_sh_bases(2, &dirs)?);
    let sh = flat(&sh);
    for ch in 0..3 {
        let raw: f64 = (0..9).map(|k| basis[9 + k] * sh[4 * 27 + ch * 9 + k]).sum();
        let got = flat(&out.features)[4 * 3 + ch];
        assert!((got - (raw + 0.5).max(0.0)).abs() < 1e-12);
    }
    // Sampling is differentiable in the grid data.
    let cfg = GradCheckConfig::default();
    let query = |v: &[Tensor]| -> Result<Tensor> {
        let g = grid
            .with_data(v[0].clone(), v[1].clone())
            .map_err(candle_core::Error::wrap)?;
        let (d, s) = g.sample(&points.reshape((6, 3))?)?;
        Tensor::cat(&[d, s], 1)
    };
    check_gradients(query, &[grid.density().clone(), grid.sh().clone()], &cfg)?;
    // Degree 0 needs no directions; higher degrees do.
    assert!(grid.query(&points, None).is_err());
    let dc = random_grid(&mut rng, [3, 3, 3], 1, 0.0, DType::F32, (0.0, 1.0), 1.0);
    let no_dirs = dc.query(&points.to_dtype(DType::F32)?, None)?;
    let with_dirs = dc.query(&points.to_dtype(DType::F32)?, Some(&dirs))?;
    assert_eq!(flat(&no_dirs.features), flat(&with_dirs.features));
    let (_, dc_sh) = dc.sample(&points.reshape((6, 3))?.to_dtype(DType::F32)?)?;
    let want: Vec<f64> = flat(&dc_sh)
        .iter()
        .map(|c| (SH_C0 * c + 0.5).max(0.0))
        .collect();
    assert!(max_abs_diff(&flat(&no_dirs.features), &want) < 1e-6);
    Ok(())
}

#[test]
fn chunked_backward_equals_per_batch_sums_and_is_deterministic() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let grid = random_grid(&mut rng, [6, 6, 6], 4, 0.3, DType::F64, (0.5, 8.0), 0.4);
    let density = candle_core::Var::from_tensor(grid.density())?;
    let sh = candle_core::Var::from_tensor(grid.sh())?;
    let grid = grid
        .with_data(density.as_tensor().clone(), sh.as_tensor().clone())
        .map_err(candle_core::Error::wrap)?;
    // 900 rays: several backward chunks at once, one chunk per 150-ray batch.
    let (origins, dirs) = random_rays(&mut rng, 900);
    let opts = RenderOptions::default();
    let grads_of = |o: &Tensor, d: &Tensor| -> Result<(Vec<f64>, Vec<f64>)> {
        let loss = grid.render_rays(o, d, &opts)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        let gd = grads.get(density.as_tensor()).expect("density grad");
        let gs = grads.get(sh.as_tensor()).expect("sh grad");
        Ok((flat(gd), flat(gs)))
    };
    let (all_d, all_s) = grads_of(&origins, &dirs)?;
    assert_eq!((all_d.clone(), all_s.clone()), grads_of(&origins, &dirs)?);
    let mut sum_d = vec![0.0; all_d.len()];
    let mut sum_s = vec![0.0; all_s.len()];
    for start in (0..900).step_by(150) {
        let (d, s) = grads_of(
            &origins.narrow(0, start, 150)?,
            &dirs.narrow(0, start, 150)?,
        )?;
        sum_d.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        sum_s.iter_mut().zip(s).for_each(|(a, b)| *a += b);
    }
    assert!(all_d.iter().any(|g| g.abs() > 1e-3));
    assert!(max_abs_diff(&all_d, &sum_d) < 1e-9);
    assert!(max_abs_diff(&all_s, &sum_s) < 1e-9);
    Ok(())
}

#[test]
fn ray_bundles_render_to_their_batch_shape() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let grid = random_grid(&mut rng, [5, 5, 5], 1, 0.5, DType::F32, (0.0, 10.0), 1.0);
    let (origins, dirs) = image_rays(6, [0.2, 0.1, -2.5]);
    let dev = Device::Cpu;
    let bundle = vnr_render::rays::RayBundle::new(
        origins.unsqueeze(0)?,
        dirs.unsqueeze(0)?,
        Tensor::zeros((1, 6, 6, 2), DType::F32, &dev)?,
        Tensor::zeros((1, 6, 6, 2), DType::F32, &dev)?,
    )?;
    let image = grid.render_bundle(&bundle, &RenderOptions::default())?;
    assert_eq!(image.dims(), [1, 6, 6, 3]);
    let flat_rays = grid.render_rays(
        &origins.reshape((36, 3))?,
        &dirs.reshape((36, 3))?,
        &RenderOptions::default(),
    )?;
    assert_eq!(flat(&image), flat(&flat_rays));
    // Mismatched or malformed ray tensors are errors.
    assert!(grid
        .render_rays(&origins, &dirs.narrow(0, 0, 3)?, &RenderOptions::default())
        .is_err());
    let bad_step = RenderOptions {
        step_size: 0.0,
        ..Default::default()
    };
    assert!(grid.render_rays(&origins, &dirs, &bad_step).is_err());
    Ok(())
}

//! Tests of `vnr render` (crates/vnr-cli/src/render.rs), driven through its clap arguments
//! exactly as the `vnr` binary parses them.

#[path = "../src/render.rs"]
#[allow(dead_code)]
mod render;

use std::path::Path;

use clap::Parser;
use vnr_formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr_formats::image::{read_gif, ImageF32};
use vnr_formats::npz::{read_npy, write_npz, NpyArray, NpyData};
use vnr_formats::testing::fixture;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: render::RenderArgs,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("render").chain(args.iter().copied()))?;
    render::run(&cli.args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// `vnr render INPUT --out OUT --size SIZE EXTRA...`.
fn render_to(input: &str, out: &Path, size: u32, extra: &[&str]) -> anyhow::Result<()> {
    let size = size.to_string();
    let mut args = vec![input, "--out", path_str(out), "--size", &size];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn sdf_sphere_renders_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("sphere.png");
    render_to(
        "sdf:sphere",
        &png,
        64,
        &["--ground", "--material", "reflective"],
    )
    .unwrap();
    let image = ImageF32::read_png(&png).unwrap();
    assert_eq!((image.width, image.height, image.channels), (64, 64, 3));

    let grey = dir.path().join("grey.png");
    render_to("sdf:torus", &grey, 32, &["--grey"]).unwrap();
    assert_eq!(ImageF32::read_png(&grey).unwrap().channels, 1);

    let sil = dir.path().join("sil.png");
    render_to(
        "sdf:sphere",
        &sil,
        101,
        &[
            "--output",
            "silhouette",
            "--ortho-height",
            "3",
            "--elevation",
            "-20",
        ],
    )
    .unwrap();
    let sil = ImageF32::read_png(&sil).unwrap();
    assert!(sil.data.iter().all(|v| *v == 0.0 || *v == 1.0));
    let area = sil.data.iter().filter(|v| **v == 1.0).count() as f64;
    let expected = std::f64::consts::PI * (101.0f64 / 3.0).powi(2);
    assert!(
        (area - expected).abs() < 0.02 * expected,
        "{area} vs {expected}"
    );

    let depth = dir.path().join("depth.npy");
    render_to(
        "sdf:sphere",
        &depth,
        33,
        &["--output", "depth", "--radius", "4", "--azimuth", "-30"],
    )
    .unwrap();
    let depth = read_npy(&depth).unwrap();
    assert_eq!(depth.shape(), &[33, 33]);
    let NpyData::F32(d) = depth.data() else {
        panic!("depth is float32")
    };
    assert!((d[16 * 33 + 16] - 3.0).abs() < 1e-5);
    assert!(d[0].is_infinite());

    for output in ["normal", "albedo"] {
        let out = dir.path().join(format!("{output}.png"));
        render_to("sdf:capsule", &out, 24, &["--output", output]).unwrap();
        assert_eq!(ImageF32::read_png(&out).unwrap().channels, 3);
    }
}

#[test]
fn rotate_writes_a_turntable_gif() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("turn.gif");
    render_to("sdf:smooth-union", &gif, 24, &["--rotate", "--frames", "6"]).unwrap();
    let frames: Vec<_> = read_gif(&gif).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 6);
    assert_eq!((frames[0].width, frames[0].height), (24, 24));
    // The shape is not rotationally symmetric: the turntable's frames differ.
    assert_ne!(frames[0], frames[1]);
}

#[test]
fn huge_turntables_are_errors_not_unbounded_frame_lists() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("turn.gif");
    for frames in ["3601", "18446744073709551615", "0"] {
        let err = render_to("sdf:sphere", &gif, 8, &["--rotate", "--frames", frames])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--frames"), "{err}");
    }
    assert!(!gif.exists());
}

#[test]
fn a_failed_turntable_frame_leaves_no_gif() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("turn.gif");
    let turntable = render::TurntableArgs {
        rotate: true,
        frames: 4,
        delay: 10,
    };
    // Frames are streamed to the encoder; the third fails after two were written.
    let err = turntable
        .write_gif(&gif, 0.0, |azimuth| {
            anyhow::ensure!(azimuth < 180.0, "frame at {azimuth} failed");
            Ok(ImageF32::zeros(4, 4, 1)?)
        })
        .unwrap_err();
    assert!(err.to_string().contains("frame at 180 failed"), "{err}");
    assert!(!gif.exists());
    turntable
        .write_gif(&gif, 0.0, |_| Ok(ImageF32::zeros(4, 4, 1)?))
        .unwrap();
    assert_eq!(read_gif(&gif).unwrap().count(), 4);
}

#[test]
fn binvox_and_npz_grids_render() {
    let dir = tempfile::tempdir().unwrap();
    // A ball of radius 6 voxels in a 16³ grid: each voxel's distance from the grid's centre.
    let n = 16usize;
    let from_centre: Vec<f32> = (0..n * n * n)
        .map(|i| {
            let (x, y, z) = (i / (n * n), (i / n) % n, i % n);
            let d = [x, y, z].map(|c| c as f32 - 7.5);
            d.iter().map(|c| c * c).sum::<f32>().sqrt()
        })
        .collect();
    let values: Vec<u8> = from_centre.iter().map(|r| u8::from(*r < 6.0)).collect();
    let binvox = dir.path().join("ball.binvox");
    BinvoxGrid::new([n; 3], values.clone(), BinvoxVersion::V1)
        .unwrap()
        .with_transform([-1.0, -1.0, -1.0], 2.0)
        .unwrap()
        .write(&binvox)
        .unwrap();
    let out = dir.path().join("ball.png");
    render_to(path_str(&binvox), &out, 32, &["--output", "silhouette"]).unwrap();
    let sil = ImageF32::read_png(&out).unwrap();
    assert!(sil.data.iter().filter(|v| **v == 1.0).count() > 100);

    // The same ball as a dense signed distance grid in an npz with origin and voxel size.
    let sdf: Vec<f32> = from_centre.iter().map(|r| (r - 6.0) * 0.125).collect();
    let npz = dir.path().join("ball.npz");
    let values = NpyArray::new(vec![n, n, n], NpyData::F32(sdf)).unwrap();
    let origin = NpyArray::new(vec![3], NpyData::F64(vec![-0.9375; 3])).unwrap();
    let size = NpyArray::new(vec![1], NpyData::F64(vec![0.125])).unwrap();
    write_npz(
        &npz,
        &[
            ("values", &values),
            ("origin", &origin),
            ("voxel_size", &size),
        ],
        false,
    )
    .unwrap();
    let depth = dir.path().join("ball.npy");
    render_to(
        path_str(&npz),
        &depth,
        33,
        &["--output", "depth", "--radius", "3", "--look-at", "0,0,0"],
    )
    .unwrap();
    let NpyData::F32(d) = read_npy(&depth).unwrap().into_data() else {
        panic!("depth is float32")
    };
    // Radius 6 voxels of 0.125 = 0.75: the centre depth is 3 − 0.75 within a voxel.
    assert!(
        (d[16 * 33 + 16] - 2.25).abs() < 0.125,
        "centre depth {}",
        d[16 * 33 + 16]
    );

    // Read as fog, the same array renders as a volume.
    let fog = dir.path().join("fog.png");
    render_to(path_str(&npz), &fog, 16, &["--dense-as", "fog"]).unwrap();
}

#[test]
fn bad_requests_fail_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let gif = dir.path().join("x.gif");
    let cases: Vec<Vec<&str>> = vec![
        vec!["sdf:teapot", "--out", path_str(&png)],
        vec!["sdf:sphere", "--out", path_str(&png), "--output", "depth"],
        vec![
            "sdf:sphere",
            "--out",
            path_str(&gif),
            "--rotate",
            "--output",
            "depth",
        ],
        vec!["sdf:sphere", "--out", path_str(&png), "--rotate"],
        vec!["sdf:sphere", "--out", path_str(&png), "--size", "0"],
        vec!["sdf:sphere", "--out", path_str(&png), "--radius", "-1"],
        vec!["sdf:sphere", "--out", path_str(&png), "--fov", "200"],
        vec!["missing.vdb", "--out", path_str(&png)],
    ];
    for args in cases {
        assert!(run(&args).is_err(), "{args:?} should fail");
        assert!(!png.exists() && !gif.exists(), "{args:?} left a file");
    }
    assert!(
        Cli::try_parse_from(["render", "sdf:sphere", "--out", "a.png", "--output", "x"]).is_err()
    );
}

#[test]
fn cortex_sphere_renders_by_grid_name() {
    let Some(sphere) = fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cortex.png");
    render_to(
        path_str(&sphere),
        &out,
        48,
        &["--grid", "ls_sphere", "--ground"],
    )
    .unwrap();
    assert_eq!(ImageF32::read_png(&out).unwrap().width, 48);
    let err = run(&[path_str(&sphere), "--out", path_str(&out), "--grid", "nope"]).unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}

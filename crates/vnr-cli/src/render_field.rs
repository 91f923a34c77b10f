//! `vnr render-field CKPT --out FILE [--rotate]`: render an svox2 Plenoxel checkpoint
//! (`ckpt.npz`, as `vnr train plenoxels` or svox2 write it) to a PNG, or a turntable GIF.
//!
//! The camera orbits the origin with PyTorch3D's convention (position `distance · (cos e ·
//! sin a, sin e, cos e · cos a)`, `+Y` up), the same cameras as `vnr dataset gen multiview`;
//! `--rotate` writes `--frames` frames at azimuth `A + i · 360 / N`. Rays go through pixel
//! centres, marched with svox2's `cuvol` renderer (`--step-size` voxels per sample) on a grey
//! background.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use vnr_formats::image::ImageF32;
use vnr_render::multiview::{orbit_camera_to_world, Intrinsics, MultiViewDataset, Split};
use vnr_render::plenoxels::optimize::render_view;
use vnr_render::plenoxels::{PlenoxelGrid, RenderOptions};

use crate::render::TurntableArgs;

/// Arguments of `vnr render-field`.
#[derive(Debug, clap::Args)]
pub struct RenderFieldArgs {
    /// The svox2 checkpoint (`ckpt.npz`).
    pub checkpoint: PathBuf,
    /// Output file: .png, or .gif with --rotate.
    #[arg(long)]
    pub out: PathBuf,
    /// `--rotate --frames --delay`.
    #[command(flatten)]
    pub turntable: TurntableArgs,
    /// Camera azimuth in degrees (around +Y, 0 looks from +Z).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub azimuth: f64,
    /// Camera elevation in degrees.
    #[arg(long, default_value_t = 30.0, allow_hyphen_values = true)]
    pub elevation: f64,
    /// Camera distance from the origin.
    #[arg(long, default_value_t = 4.0)]
    pub distance: f64,
    /// Field of view in degrees.
    #[arg(long, default_value_t = 40.0)]
    pub fov: f64,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Background grey level in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub background: f32,
    /// Distance between samples in voxels (svox2's `step_size`).
    #[arg(long, default_value_t = 0.5)]
    pub step_size: f32,
}

/// Runs `vnr render-field`.
pub fn run(args: &RenderFieldArgs) -> Result<()> {
    anyhow::ensure!(
        args.fov > 0.0 && args.fov < 180.0,
        "--fov {} must be in (0, 180)",
        args.fov
    );
    anyhow::ensure!(
        args.size > 0 && args.size <= 4096,
        "--size {} must be in 1..=4096",
        args.size
    );
    args.turntable.check()?;
    let grid = PlenoxelGrid::read(&args.checkpoint)
        .with_context(|| format!("reading {}", args.checkpoint.display()))?;
    let opts = RenderOptions {
        step_size: args.step_size,
        background_brightness: args.background,
        ..RenderOptions::default()
    };
    let frame = |azimuth: f64| -> Result<ImageF32> {
        let size = args.size;
        let pose = orbit_camera_to_world(args.distance, &[args.elevation], &[azimuth])?;
        // Only the cameras are used: the rays of the one frame.
        let cameras = MultiViewDataset::new(
            Split::Test,
            Tensor::zeros((1, size, size, 3), DType::F32, &Device::Cpu)?,
            None,
            pose,
            Intrinsics::from_camera_angle_x(args.fov.to_radians(), size, size),
        )?;
        let rgb = render_view(&grid, &cameras, 0, &opts)?.clamp(0f32, 1f32)?;
        Ok(ImageF32::new(size, size, 3, rgb.flatten_all()?.to_vec1()?)?)
    };
    if args.turntable.rotate {
        args.turntable.write_gif(&args.out, args.azimuth, frame)
    } else {
        frame(args.azimuth)?
            .write_png(&args.out)
            .with_context(|| format!("writing {}", args.out.display()))
    }
}

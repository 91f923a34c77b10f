//! `vnr dataset gen rendernet|convdeconv`: voxel→image datasets of procedural shapes for the
//! RenderNet and ConvDeconv models (see `vnr_models::generated` for the layouts).
//!
//! ```sh
//! vnr dataset gen rendernet --out DIR --count N [--res R] [--voxels V] [--views K] [--normals] [--seed S]
//! vnr dataset gen convdeconv --out DIR --count N [--res R] [--grid S] [--material M] [--seed S]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use vnr_models::generated::{
    write_convdeconv, write_rendernet, ConvDeconvGenConfig, GenSummary, MaterialKind,
    RenderNetGenConfig, RenderNetTarget,
};
use vnr_train::log::progress_bar;

/// Arguments of `vnr dataset gen rendernet`.
#[derive(Debug, Args)]
pub struct RenderNetArgs {
    /// Output directory (created; files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Samples (views) to generate.
    #[arg(long)]
    pub count: usize,
    /// Image width and height in pixels (the original: 512).
    #[arg(long, default_value_t = 128)]
    pub res: usize,
    /// Side of the voxel grids (the original: 64; the small model: 32).
    #[arg(long, default_value_t = 64)]
    pub voxels: usize,
    /// Side of the camera-space grid the model resamples into (default: twice `--voxels`).
    #[arg(long)]
    pub resampled: Option<usize>,
    /// Views per shape.
    #[arg(long, default_value_t = 4)]
    pub views: usize,
    /// Write camera-space normal maps instead of grey shaded images.
    #[arg(long)]
    pub normals: bool,
    /// Samples per chunk file.
    #[arg(long, default_value_t = 100)]
    pub chunk: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Arguments of `vnr dataset gen convdeconv`.
#[derive(Debug, Args)]
pub struct ConvDeconvArgs {
    /// Output directory (created; files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Samples to generate.
    #[arg(long)]
    pub count: usize,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 32)]
    pub res: usize,
    /// Side of the camera-space grids.
    #[arg(long, default_value_t = 32)]
    pub grid: usize,
    /// Surface material: `diffuse`, `reflective` or `clear`.
    #[arg(long, default_value = "diffuse")]
    pub material: String,
    /// Leave out the ground plane.
    #[arg(long)]
    pub no_ground: bool,
    /// Samples per chunk file.
    #[arg(long, default_value_t = 100)]
    pub chunk: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs a generator with a progress bar over `count` samples and reports what it wrote.
fn generate(
    what: &str,
    count: usize,
    write: impl FnOnce(&mut dyn FnMut(usize)) -> vnr_models::generated::Result<GenSummary>,
) -> Result<()> {
    let start = Instant::now();
    let bar = progress_bar(Some(count as u64), 0, true);
    bar.set_message(format!("{what} samples"));
    let summary = write(&mut |done| bar.set_position(done as u64))
        .with_context(|| format!("generating the {what} dataset"))?;
    bar.finish_and_clear();
    println!(
        "wrote {} {what} samples in {} chunks to {} in {:.1} s",
        summary.samples,
        summary.chunks,
        summary.dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `vnr dataset gen rendernet`.
pub fn rendernet(args: &RenderNetArgs) -> Result<()> {
    // The default only when it is used, and checked: a huge --voxels must reach the config's
    // range check, not overflow here.
    let resampled_size = match args.resampled {
        Some(size) => size,
        None => args.voxels.checked_mul(2).with_context(|| {
            format!(
                "--voxels {} is too large (the default --resampled is twice it)",
                args.voxels
            )
        })?,
    };
    let config = RenderNetGenConfig {
        count: args.count,
        views_per_shape: args.views,
        voxel_size: args.voxels,
        resampled_size,
        image_size: args.res,
        target: if args.normals {
            RenderNetTarget::Normal
        } else {
            RenderNetTarget::Shaded
        },
        seed: args.seed,
        samples_per_chunk: args.chunk,
        ..RenderNetGenConfig::default()
    };
    generate("rendernet", args.count, |progress| {
        write_rendernet(&config, &args.out, progress)
    })
}

/// Runs `vnr dataset gen convdeconv`.
pub fn convdeconv(args: &ConvDeconvArgs) -> Result<()> {
    let material = MaterialKind::from_name(&args.material).with_context(|| {
        format!(
            "unknown --material '{}': expected diffuse, reflective or clear",
            args.material
        )
    })?;
    let config = ConvDeconvGenConfig {
        count: args.count,
        grid_size: args.grid,
        image_size: args.res,
        material,
        ground: !args.no_ground,
        seed: args.seed,
        samples_per_chunk: args.chunk,
        ..ConvDeconvGenConfig::default()
    };
    generate("convdeconv", args.count, |progress| {
        write_convdeconv(&config, &args.out, progress)
    })
}

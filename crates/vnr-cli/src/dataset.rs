//! `vnr dataset gen KIND ...`: datasets generated from the project's procedural scenes.
//!
//! `vnr dataset gen multiview --out DIR --views N --res R [--seed S] [--scene NAME]` renders a
//! coloured-shapes scene with the reference ray caster from seeded random orbit cameras into
//! the NeRF-synthetic layout (`transforms_{train,val,test}.json`, RGBA PNG frames, silhouettes
//! `r_i_silhouette.png`, `generator.json`), which `vnr train nerf` / `vnr train plenoxels`
//! read back (see `vnr_render::scenes`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use vnr_render::scenes::{generate_multiview, MultiViewGenConfig};

/// Arguments of `vnr dataset`.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DatasetCommand,
}

/// `vnr dataset` subcommands.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Generate a dataset of the given kind.
    Gen(GenArgs),
}

/// Arguments of `vnr dataset gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// The kind of dataset.
    #[command(subcommand)]
    pub kind: GenKind,
}

/// The dataset kinds `vnr dataset gen` produces.
#[derive(Debug, Subcommand)]
pub enum GenKind {
    /// Posed multi-view images of a procedural scene (NeRF-synthetic layout).
    Multiview(MultiviewArgs),
    /// Voxel grids, poses and renders of procedural shapes for RenderNet.
    Rendernet(crate::dataset_voxels::RenderNetArgs),
    /// Camera-space voxel grids and renders for ConvDeconv (VoxelNeuralRender's layout).
    Convdeconv(crate::dataset_voxels::ConvDeconvArgs),
}

/// Arguments of `vnr dataset gen multiview`.
#[derive(Debug, Args)]
pub struct MultiviewArgs {
    /// Output directory (created; existing files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Training views.
    #[arg(long, default_value_t = 100)]
    pub views: usize,
    /// Validation views.
    #[arg(long, default_value_t = 10)]
    pub val_views: usize,
    /// Test (held-out) views.
    #[arg(long, default_value_t = 10)]
    pub test_views: usize,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 128)]
    pub res: usize,
    /// Seed of the cameras (and of the `random` scene).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Scene: `shapes` (four fixed coloured shapes) or `random` (3–5 seeded random shapes).
    #[arg(long, default_value = "shapes")]
    pub scene: String,
    /// Rays per pixel along each axis (anti-aliasing).
    #[arg(long, default_value_t = 2)]
    pub supersample: usize,
    /// Camera distance from the origin.
    #[arg(long, default_value_t = 4.0)]
    pub distance: f64,
    /// Field of view in degrees.
    #[arg(long, default_value_t = 40.0)]
    pub fov: f64,
    /// Lowest camera elevation, degrees.
    #[arg(long, default_value_t = -30.0, allow_hyphen_values = true)]
    pub min_elevation: f64,
    /// Highest camera elevation, degrees.
    #[arg(long, default_value_t = 75.0, allow_hyphen_values = true)]
    pub max_elevation: f64,
    /// Render a ground plane under the shapes.
    #[arg(long)]
    pub ground: bool,
    /// Background colour `R,G,B` in `[0, 1]`.
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [1.0, 1.0, 1.0])]
    pub background: Vec<f32>,
}

/// Runs `vnr dataset`.
pub fn run(args: &DatasetArgs) -> Result<()> {
    match &args.command {
        DatasetCommand::Gen(gen) => match &gen.kind {
            GenKind::Multiview(args) => multiview(args),
            GenKind::Rendernet(args) => crate::dataset_voxels::rendernet(args),
            GenKind::Convdeconv(args) => crate::dataset_voxels::convdeconv(args),
        },
    }
}

fn multiview(args: &MultiviewArgs) -> Result<()> {
    let background: [f32; 3] = args
        .background
        .as_slice()
        .try_into()
        .context("--background takes three values R,G,B")?;
    let config = MultiViewGenConfig {
        scene: args.scene.clone(),
        seed: args.seed,
        train_views: args.views,
        val_views: args.val_views,
        test_views: args.test_views,
        resolution: args.res,
        supersample: args.supersample,
        camera_distance: args.distance,
        fov_deg: args.fov,
        elevation_deg: [args.min_elevation, args.max_elevation],
        ground: args.ground,
        background,
    };
    let start = std::time::Instant::now();
    let views = generate_multiview(&config).context("generating the views")?;
    views
        .write(&args.out)
        .with_context(|| format!("writing the dataset to {}", args.out.display()))?;
    println!(
        "wrote {} train, {} val, {} test views of scene '{}' at {}×{} to {} in {:.1} s",
        config.train_views,
        config.val_views,
        config.test_views,
        config.scene,
        config.resolution,
        config.resolution,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

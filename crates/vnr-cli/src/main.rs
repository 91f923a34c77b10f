//! `vnr`: inspect, convert and render 3D shape data.
//!
//! A thin `main`: parse the arguments, run the command, and on failure print the error chain
//! to stderr and exit with status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod convert;
mod dataset;
mod dataset_voxels;
mod demo;
mod dense;
mod device;
mod eval;
mod info;
mod mesh;
mod model;
mod render;
mod render_field;
mod sdf;
mod train;
mod train_deepsdf;
mod train_nerf;
mod train_plenoxels;
mod vdb;

/// vnr: voxel neural rendering.
#[derive(Debug, Parser)]
#[command(name = "vnr", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Describe files of any supported format (like `vdb_print`, for every format).
    Info {
        /// Files to describe (binvox, vdb, npy, npz, obj, ply, stl, png, gif).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON document (an array with one object per file) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert between binvox, VDB, dense npy/npz, and mesh formats.
    Convert(convert::ConvertArgs),
    /// Surface metrics between meshes (DeepSDF's chamfer, Hausdorff, normal consistency).
    Eval(eval::EvalArgs),
    /// Describe the neural models (layers, shapes, parameter counts).
    Model(model::ModelArgs),
    /// Render a grid, VDB, binvox or analytic SDF with the reference ray caster (PNG, depth
    /// .npy, or a turntable GIF).
    Render(render::RenderArgs),
    /// Signed distances from meshes (DeepSDF training samples).
    Sdf(sdf::SdfArgs),
    /// Train a model from a config file (DeepSDF's specs.json, NeRF, Plenoxels).
    Train(train::TrainArgs),
    /// Generate datasets from procedural scenes.
    Dataset(dataset::DatasetArgs),
    /// Extract a mesh from a trained implicit model (DeepSDF decoder + latent code).
    Mesh(mesh::MeshArgs),
    /// Render a trained radiance field (a Plenoxel checkpoint) to PNG or a turntable GIF.
    RenderField(render_field::RenderFieldArgs),
    /// Generate shapes, train a small RenderNet on them and write a turntable GIF (reference
    /// | neural), the loss plot and the held-out PSNR, in minutes on the CPU.
    Demo(demo::DemoArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info { files, json } => info::run(&files, json),
        Command::Convert(args) => convert::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Model(args) => model::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Sdf(args) => sdf::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Dataset(args) => dataset::run(&args),
        Command::Mesh(args) => mesh::run(&args),
        Command::RenderField(args) => render_field::run(&args),
        Command::Demo(args) => demo::run(&args),
    }
}

fn main() -> ExitCode {
    // Before any thread or candle op (it sets process-wide threading and allocator options).
    vnr_train::configure_process_for_training();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

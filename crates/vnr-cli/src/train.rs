//! `vnr train MODEL CONFIG`: train a model from its config file.

use clap::{Args, Subcommand};

/// Arguments of `vnr train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model family to train.
    #[command(subcommand)]
    pub command: TrainCommand,
}

/// The model families `vnr train` knows.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// DeepSDF auto-decoder from DeepSDF's `specs.json` (read as it is).
    Deepsdf(crate::train_deepsdf::TrainDeepSdfArgs),
    /// A NeRF (PyTorch3D's tutorial model or the paper's form) fitted to posed images.
    Nerf(crate::train_nerf::TrainNerfArgs),
    /// A Plenoxel grid fitted to posed images.
    Plenoxels(crate::train_plenoxels::TrainPlenoxelsArgs),
}

/// Runs `vnr train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    match &args.command {
        TrainCommand::Deepsdf(args) => crate::train_deepsdf::run(args),
        TrainCommand::Nerf(args) => crate::train_nerf::run(args),
        TrainCommand::Plenoxels(args) => crate::train_plenoxels::run(args),
    }
}

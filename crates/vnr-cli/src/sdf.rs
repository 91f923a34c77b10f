//! `vnr sdf sample MESH_OR_DIR --out DIR`: DeepSDF training samples for one mesh or every mesh
//! in a directory (see `vnr_geom::deepsdf_samples` for the files and the method), and `vnr sdf
//! reconstruct`: a trained DeepSDF decoder's code for an unseen shape, meshed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use vnr_geom::deepsdf_samples::{
    file_seed, sample_directory, sample_mesh_file, FileSummary, GridFormat, GridOutput, Preset,
    SamplingOptions,
};
use vnr_geom::signed_distance::{SignMethod, VirtualScanOptions};
use vnr_models::deepsdf_training::{reconstruct_latent, ReconstructOptions, SceneSamples};

/// Arguments of `vnr sdf`.
#[derive(Debug, Args)]
pub struct SdfArgs {
    #[command(subcommand)]
    pub command: SdfCommand,
}

/// `vnr sdf` subcommands.
#[derive(Debug, Subcommand)]
pub enum SdfCommand {
    /// DeepSDF samples (`SdfSamples/NAME.npz` with `pos`/`neg` rows x,y,z,sdf, sdf > 0 outside)
    /// and normalisation (`NormalizationParameters/NAME.npz` with `offset`, `scale`).
    Sample(SampleArgs),
    /// Fit a latent code of a trained decoder to a shape's samples (DeepSDF's
    /// `reconstruct.py`: Adam, lr 5e-3 divided by 10 at the midpoint) and mesh it.
    Reconstruct(ReconstructArgs),
}

/// Arguments of `vnr sdf reconstruct`.
#[derive(Debug, Args)]
pub struct ReconstructArgs {
    /// The trained decoder: a `model.safetensors`, a checkpoint folder, or a run directory.
    #[arg(long)]
    pub decoder: PathBuf,
    /// The `specs.json` describing the decoder (default: the nearest one above `--decoder`).
    #[arg(long)]
    pub specs: Option<PathBuf>,
    /// The shape's samples (`SdfSamples/NAME.npz`).
    #[arg(long)]
    pub samples: PathBuf,
    /// Adam iterations.
    #[arg(long, default_value_t = 800)]
    pub iterations: usize,
    /// Samples drawn per iteration (half positive, half negative).
    #[arg(long, default_value_t = 8000)]
    pub points: usize,
    /// Seed of the initial code and the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the fitted code (float32 `.npy`, `vnr mesh --latent` reads it).
    #[arg(long)]
    pub latent_out: Option<PathBuf>,
    #[command(flatten)]
    pub output: crate::mesh::MeshOutput,
    #[command(flatten)]
    pub device: crate::device::DeviceOpt,
}

/// Arguments of `vnr sdf sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// A mesh (.obj, .ply, .stl) or a directory of them (not recursive).
    pub input: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Samples per mesh.
    #[arg(long, default_value_t = 500_000)]
    pub count: usize,
    /// How the count splits into near-surface and uniform samples.
    #[arg(long, value_enum, default_value_t = PresetArg::Deepsdf)]
    pub preset: PresetArg,
    /// Seed of the random stream (each file gets `seed ^ fnv1a(file stem)`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write a dense SDF grid of RES³ samples over [-1, 1]³ (normalised space) to
    /// `SdfGrids/NAME.npz` (or `.vdb` with `--grid-format vdb`).
    #[arg(long, value_name = "RES")]
    pub grid: Option<usize>,
    /// File format of `--grid`.
    #[arg(long, value_enum, default_value_t = GridFormatArg::Npz)]
    pub grid_format: GridFormatArg,
    /// Sign method: winding numbers (meshes with holes) or DeepSDF's virtual scans (meshes
    /// with inconsistent orientation; drops samples whose votes disagree).
    #[arg(long, value_enum, default_value_t = SignArg::Winding)]
    pub sign: SignArg,
}

/// `--preset` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// 47/50 of the samples near the surface (two noise levels), the rest uniform.
    Deepsdf,
    /// n/2.1 samples per noise level, the rest uniform.
    Neorender,
}

/// `--grid-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GridFormatArg {
    Npz,
    Vdb,
}

/// `--sign` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignArg {
    Winding,
    Scan,
}

/// Runs `vnr sdf`.
pub fn run(args: &SdfArgs) -> Result<()> {
    match &args.command {
        SdfCommand::Sample(sample) => run_sample(sample),
        SdfCommand::Reconstruct(args) => run_reconstruct(args),
    }
}

fn run_reconstruct(args: &ReconstructArgs) -> Result<()> {
    let device = args.device.open()?;
    let trained = crate::mesh::load_decoder(&args.decoder, args.specs.as_deref(), &device)?;
    let scene = SceneSamples::read(&args.samples)?;
    let options = ReconstructOptions {
        iterations: args.iterations,
        samples: args.points,
        seed: args.seed,
        ..ReconstructOptions::default()
    };
    let fit = reconstruct_latent(&trained.decoder, &scene, &options)
        .with_context(|| format!("fitting a code to {}", args.samples.display()))?;
    if let (Some(first), Some(last)) = (fit.losses.first(), fit.losses.last()) {
        eprintln!(
            "loss {first:.6} -> {last:.6} in {} iterations",
            fit.losses.len()
        );
    }
    if let Some(path) = &args.latent_out {
        crate::mesh::write_latent(&fit.latent, path)?;
    }
    crate::mesh::write_decoded_mesh(&trained, &fit.latent, &args.output)
}

fn run_sample(args: &SampleArgs) -> Result<()> {
    let options = SamplingOptions {
        count: args.count,
        preset: match args.preset {
            PresetArg::Deepsdf => Preset::DeepSdf,
            PresetArg::Neorender => Preset::NeoRender,
        },
        sign: match args.sign {
            SignArg::Winding => SignMethod::default(),
            SignArg::Scan => SignMethod::VirtualScan(VirtualScanOptions::default()),
        },
        ..SamplingOptions::default()
    };
    let grid = args.grid.map(|resolution| GridOutput {
        resolution,
        format: match args.grid_format {
            GridFormatArg::Npz => GridFormat::Npz,
            GridFormatArg::Vdb => GridFormat::Vdb,
        },
    });
    if args.input.is_dir() {
        let summary =
            sample_directory(
                &args.input,
                &args.out,
                &options,
                grid,
                args.seed,
                |p| match p.result {
                    Ok(done) => eprintln!("[{}/{}] {}", p.index, p.total, describe(done)),
                    Err(e) => eprintln!(
                        "[{}/{}] {}: FAILED: {e}",
                        p.index,
                        p.total,
                        p.mesh.display()
                    ),
                },
            )
            .with_context(|| format!("sampling {}", args.input.display()))?;
        if !summary.failed.is_empty() {
            bail!(
                "{} of {} meshes failed",
                summary.failed.len(),
                summary.failed.len() + summary.done.len()
            );
        }
        Ok(())
    } else {
        let seed = file_seed(args.seed, &args.input);
        let done = sample_mesh_file(&args.input, &args.out, &options, grid, seed)
            .with_context(|| format!("sampling {}", args.input.display()))?;
        eprintln!("{}", describe(&done));
        Ok(())
    }
}

/// One progress line: what was read, how many rows, where they went.
fn describe(done: &FileSummary) -> String {
    let dropped = if done.dropped > 0 {
        format!(" ({} dropped: votes disagreed)", done.dropped)
    } else {
        String::new()
    };
    format!(
        "{}: pos {} neg {}{dropped} -> {}",
        done.mesh.display(),
        done.pos,
        done.neg,
        done.samples.display()
    )
}

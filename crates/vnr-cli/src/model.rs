//! `vnr model summary NAME [--config FILE] [--input-size DIMS]`: a torchinfo-style table of a
//! model's layers, output shapes and parameter counts, computed from shapes alone (no weights
//! are allocated and no convolution runs, so the 256³ ConvDeconv is instant).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use vnr_models::convdeconv::{ConvDeconv, ConvDeconvConfig};
use vnr_models::deepsdf::{DeepSdfConfig, DeepSdfDecoder};
use vnr_models::rendernet::{RenderNet, RenderNetConfig};
use vnr_models::{shape_only_var_builder, Summary};

/// The models `summary` knows, with what each name selects.
const MODEL_NAMES: &str = "convdeconv (v001, 256³), convdeconv-v002, convdeconv-small32, \
convdeconv-small32-wide, convdeconv-small64, convdeconv-small32-v002, convdeconv-small32-wide-v002, \
convdeconv-small64-v002, rendernet (greyscale), rendernet-rgb, rendernet-small, deepsdf, \
deepsdf-narrow16, deepsdf-narrow32";

/// `vnr model ...`: describe the neural models.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// Subcommands of `vnr model`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print a torchinfo-style summary: layers, output shapes, parameter counts.
    Summary(SummaryArgs),
}

/// Arguments of `vnr model summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Model: convdeconv, convdeconv-v002, convdeconv-small32, convdeconv-small32-wide,
    /// convdeconv-small64 (add -v002 to the small ones),
    /// rendernet, rendernet-rgb, rendernet-small, deepsdf, deepsdf-narrow16, deepsdf-narrow32.
    pub name: String,
    /// Config file replacing the preset: JSON or TOML (`.toml`) of the model's config struct;
    /// for DeepSDF also a `specs.json`, for RenderNet also the original config JSON
    /// (`config_RenderNet.json`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Full input shape, comma-separated, batch first: `1,1,256,256,256` (ConvDeconv),
    /// `1,1,64,64,64` (RenderNet voxels; resampled to twice the side), `16384,259` (DeepSDF
    /// rows). Default: batch 1 at the config's size.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub input_size: Option<Vec<usize>>,
}

/// Runs `vnr model ...`.
pub fn run(args: &ModelArgs) -> anyhow::Result<()> {
    match &args.command {
        ModelCommand::Summary(summary) => {
            println!("{}", summarize(summary)?);
            Ok(())
        }
    }
}

/// The summary `vnr model summary` prints.
pub fn summarize(args: &SummaryArgs) -> anyhow::Result<Summary> {
    let vb = shape_only_var_builder(DType::F32, &Device::Cpu);
    let shape = args.input_size.as_deref();
    let name = args.name.to_ascii_lowercase();
    if let Some(preset) = name.strip_prefix("convdeconv") {
        let mut cfg = match &args.config {
            Some(path) => {
                ConvDeconvConfig::from_file(path).with_context(|| config_context(path))?
            }
            None => {
                let preset = match preset.strip_prefix('-') {
                    None if preset.is_empty() => "v001",
                    Some(rest) => rest,
                    _ => unknown(&args.name)?,
                };
                ConvDeconvConfig::preset(preset).map_or_else(|| unknown(&args.name), Ok)?
            }
        };
        let batch = match shape {
            None => 1,
            Some([b, 1, s, h, w]) if s == h && h == w => {
                cfg.input_size = *s;
                *b
            }
            Some(other) => {
                bail!("ConvDeconv takes a cubic input [B, 1, S, S, S], got --input-size {other:?}")
            }
        };
        let model = ConvDeconv::new(cfg, vb).context("building ConvDeconv")?;
        return Ok(model.summary(batch)?);
    }
    if name.starts_with("rendernet") {
        let mut cfg = match &args.config {
            Some(path) => RenderNetConfig::from_file(path).with_context(|| config_context(path))?,
            None => RenderNetConfig::preset(&name).map_or_else(|| unknown(&args.name), Ok)?,
        };
        let batch = match shape {
            None => 1,
            Some([b, 1, s, h, w]) if s == h && h == w => {
                cfg.voxel_size = *s;
                // Checked: the side comes straight from the command line.
                cfg.resampled_size = s.checked_mul(2).with_context(|| {
                    format!("--input-size side {s} is too large (the resampled grid is twice it)")
                })?;
                *b
            }
            Some(other) => {
                bail!("RenderNet takes voxels [B, 1, V, V, V], got --input-size {other:?}")
            }
        };
        let model = RenderNet::new(cfg, vb).context("building RenderNet")?;
        return Ok(model.summary(batch)?);
    }
    if name.starts_with("deepsdf") {
        let cfg = match &args.config {
            Some(path) => DeepSdfConfig::from_file(path).with_context(|| config_context(path))?,
            None => DeepSdfConfig::preset(&name).map_or_else(|| unknown(&args.name), Ok)?,
        };
        let width = cfg.latent_size + 3;
        let batch = match shape {
            None => 1,
            Some([n, w]) if *w == width => *n,
            Some(other) => {
                bail!("DeepSDF takes rows [N, latent + 3 = {width}], got --input-size {other:?}")
            }
        };
        let model = DeepSdfDecoder::new(cfg, vb).context("building the DeepSDF decoder")?;
        return Ok(model.summary(batch)?);
    }
    unknown(&args.name)
}

fn config_context(path: &Path) -> String {
    format!("reading the model config {}", path.display())
}

fn unknown<T>(name: &str) -> anyhow::Result<T> {
    bail!("unknown model `{name}`; known: {MODEL_NAMES}")
}

//! `vnr eval chamfer RECONSTRUCTION GROUND_TRUTH`: DeepSDF's surface metrics between two meshes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use vnr_formats::mesh::TriangleMesh;
use vnr_geom::metrics::compare_surfaces;

/// Arguments of `vnr eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The metric to compute.
    #[command(subcommand)]
    pub metric: EvalMetric,
}

/// `vnr eval` subcommands.
#[derive(Debug, Subcommand)]
pub enum EvalMetric {
    /// Chamfer distance as DeepSDF evaluates it (printed × 10³), Hausdorff distance and normal
    /// consistency, from area-weighted surface samples and exact nearest neighbours.
    Chamfer(ChamferArgs),
}

/// Arguments of `vnr eval chamfer`.
#[derive(Debug, Args)]
pub struct ChamferArgs {
    /// The reconstructed mesh (OBJ, PLY or STL), sampled on its surface.
    pub reconstruction: PathBuf,
    /// The ground truth: a mesh, sampled the same way, or a point cloud (a PLY or OBJ without
    /// faces, e.g. DeepSDF's surface samples), used as its points.
    pub ground_truth: PathBuf,
    /// Points sampled on each mesh surface (DeepSDF: 30,000).
    #[arg(long, default_value_t = 30_000)]
    pub samples: usize,
    /// Seed of the sampling (ChaCha8): the same seed gives the same numbers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `vnr eval`, printing one `name: value` line per metric.
pub fn run(args: &EvalArgs) -> Result<()> {
    print!("{}", report(args)?);
    Ok(())
}

/// What `vnr eval` prints: one `name: value` line per metric.
pub fn report(args: &EvalArgs) -> Result<String> {
    match &args.metric {
        EvalMetric::Chamfer(args) => chamfer(args),
    }
}

fn chamfer(args: &ChamferArgs) -> Result<String> {
    let read = |path: &PathBuf| {
        TriangleMesh::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let reconstruction = read(&args.reconstruction)?;
    let ground_truth = read(&args.ground_truth)?;
    let d = compare_surfaces(&reconstruction, &ground_truth, args.samples, args.seed)
        .context("comparing the surfaces")?;
    let normal_consistency = match d.normal_consistency {
        Some(nc) => format!("{nc:.6}"),
        None => "n/a (the ground truth has no faces)".to_owned(),
    };
    Ok(format!(
        "chamfer x1e3: {:.6}\nhausdorff: {:.6}\nnormal consistency: {normal_consistency}\n",
        d.chamfer * 1e3,
        d.hausdorff
    ))
}

//! `vnr train nerf CONFIG`: fits PyTorch3D's tutorial NeRF (or the paper's density form) to a
//! posed dataset in the NeRF-synthetic layout, then scores held-out `test` views (see
//! `vnr_models::nerf_train`).
//!
//! The config (TOML or JSON) is `vnr_models::nerf_train::NerfTrainConfig`; every key is
//! optional except what the dataset needs:
//!
//! ```toml
//! dataset = "scene"          # transforms_{train,val,test}.json, relative to this file
//! output = "runs/nerf"       # log.jsonl, loss.png, checkpoints/, test/r_N.png, results.json
//! iterations = 20000
//! rays_per_step = 4500
//! seed = 0
//! [model]
//! n_harmonic_functions = 60
//! n_hidden_neurons = 256
//! density = "opacity"        # or "sigma" (NeRF paper)
//! [rays]
//! near = 0.1
//! far = 3.0
//! samples_per_ray = 128
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;
use vnr_formats::atomic::write_atomically;
use vnr_models::nerf_train::{fit_from_disk, NerfTrainConfig};

/// File the scores are written to inside the run directory.
pub const RESULTS_FILE: &str = "results.json";

/// Arguments of `vnr train nerf`.
#[derive(Debug, clap::Args)]
pub struct TrainNerfArgs {
    /// The training config (`.toml` or `.json`).
    pub config: PathBuf,
    /// Run directory (overrides the config's `output`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the newest checkpoint of the run directory.
    #[arg(long)]
    pub resume: bool,
    /// Train this many steps instead of the config's `iterations`.
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Seed of the weights, ray draws and jitter (overrides the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `vnr train nerf`.
pub fn run(args: &TrainNerfArgs) -> Result<()> {
    let mut cfg = NerfTrainConfig::load(&args.config)
        .with_context(|| format!("reading the config {}", args.config.display()))?;
    if let Some(out) = &args.out {
        cfg.output = out.clone();
    }
    if let Some(iterations) = args.iterations {
        cfg.iterations = iterations;
    }
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    cfg.progress = cfg.progress && !args.quiet;
    let (_, report) = fit_from_disk(&cfg, args.resume).with_context(|| {
        format!(
            "training a NeRF on {} into {}",
            cfg.dataset.display(),
            cfg.output.display()
        )
    })?;
    println!(
        "{} steps in {:.1} s ({:.0} rays/s), last loss {}",
        report.summary.steps,
        report.train_seconds,
        report.train_rays_per_second,
        report
            .summary
            .last_loss
            .map_or("-".to_string(), |l| format!("{l:.5}")),
    );
    if let Some(test) = &report.test {
        println!(
            "held-out PSNR {:.2} dB over {} test views ({:.0} rays/s rendering), renders in {}",
            test.mean_psnr,
            test.psnr.len(),
            test.rays_per_second,
            cfg.output.join("test").display()
        );
    }
    let results = json!({
        "steps": report.summary.steps,
        "train_seconds": report.train_seconds,
        "train_rays_per_second": report.train_rays_per_second,
        "last_loss": report.summary.last_loss,
        "test": report.test,
        "checkpoint": report.summary.checkpoint,
    });
    let path = cfg.output.join(RESULTS_FILE);
    write_atomically(&path, |w| {
        serde_json::to_writer_pretty(&mut *w, &results)?;
        w.write_all(b"\n")
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

//! What the voxel→image examples (`rendernet`, `convdeconv`) share: their command-line
//! options and the training run with its held-out report.

use std::path::Path;
use std::time::Instant;

use vnr::formats::dataset::{Batch, ChunkedDataset};
use vnr::train::{Model, TrainConfig, Trainer};

/// The value after `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// `--name value` parsed, or `default`.
pub fn parsed<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    arg(name).map_or(Ok(default), |v| {
        v.parse().map_err(|_| format!("{name}: cannot parse {v}"))
    })
}

/// Trains `model` on `data` into a fresh `run_dir`, prints the timing and the held-out PSNR
/// (the last validation pass), and hands back the trainer.
pub fn train<M: Model<Batch = Batch>>(
    model: M,
    config: TrainConfig,
    data: &ChunkedDataset,
    run_dir: &Path,
) -> Result<Trainer<M>, Box<dyn std::error::Error>> {
    std::fs::remove_dir_all(run_dir).ok();
    let mut trainer = Trainer::new(model, config, run_dir)?;
    let start = Instant::now();
    let summary = trainer.run(data)?;
    let seconds = start.elapsed().as_secs_f64();
    let psnr = summary
        .last_validation
        .as_ref()
        .and_then(|v| v.metrics.get("psnr").copied())
        .ok_or("no validation pass ran")?;
    println!(
        "trained {} steps in {:.1} s ({:.3} s/step), last loss {:.4}",
        summary.steps,
        seconds,
        seconds / summary.steps.max(1) as f64,
        summary.last_loss.unwrap_or(f64::NAN)
    );
    println!(
        "held-out PSNR {psnr:.2} dB over {} samples",
        data.validation_samples()
    );
    Ok(trainer)
}

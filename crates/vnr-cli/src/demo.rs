//! `vnr demo`: RenderNet from scratch in a few minutes on the CPU. Generates procedural shapes
//! rendered by the reference ray caster, trains the small RenderNet with a progress bar, and
//! writes a turntable of a shape it never saw (reference | neural), the loss plot, the log and
//! a summary with the held-out PSNR beside the mean-image baseline.
//!
//! ```sh
//! vnr demo [--out DIR] [--steps N] [--seed S] [--quick]
//! ```
//!
//! Writes into `DIR` (default `demo/`): `turntable.gif`, `loss.png`, `log.jsonl`,
//! `summary.json`, `data/` (the generated dataset) and `checkpoints/` (the trained model).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vnr_formats::atomic::write_atomically;
use vnr_formats::image::{write_gif, GifRepeat};
use vnr_models::rendernet_train::{mean_image_baseline, turntable, Experiment};
use vnr_train::log::{progress_bar, LOG_FILE};
use vnr_train::trainer::LOSS_PLOT;
use vnr_train::Trainer;

/// Arguments of `vnr demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output directory (created; the demo's files in it are replaced).
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// Training steps (default: 300, or 2 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Seed of the shapes, their views, the initial weights and the batches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A tiny run that finishes in seconds (checks the pipeline; learns next to nothing).
    #[arg(long)]
    pub quick: bool,
}

/// Turntable frames (full run, `--quick`), their delay, and the view they are seen from.
const FRAMES: usize = 36;
const QUICK_FRAMES: usize = 3;
const FRAME_DELAY_CS: u16 = 8;
const TURNTABLE_ELEVATION_DEG: f64 = 105.0;
const TURNTABLE_RADIUS: f64 = 3.2;

/// What `summary.json` records.
#[derive(Debug, Serialize)]
struct Summary {
    steps: u64,
    samples: usize,
    held_out_samples: usize,
    generate_seconds: f64,
    train_seconds: f64,
    seconds: f64,
    held_out_psnr_db: f64,
    mean_image_psnr_db: f64,
    experiment: Experiment,
}

/// The demo's experiment: [`Experiment::default`], or a tiny one for `--quick`.
fn experiment(args: &DemoArgs) -> Experiment {
    let defaults = Experiment {
        seed: args.seed,
        ..Experiment::default()
    };
    let base = if args.quick {
        Experiment {
            shapes: 4,
            views_per_shape: 2,
            samples_per_chunk: 4,
            steps: 2,
            batch_size: 2,
            ..defaults
        }
    } else {
        defaults
    };
    Experiment {
        steps: args.steps.unwrap_or(base.steps),
        ..base
    }
}

/// Removes what an earlier demo left in `dir` that this run would not overwrite.
fn clear_previous(dir: &Path) -> Result<()> {
    for sub in ["data", "checkpoints"] {
        let path = dir.join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Runs `vnr demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    let experiment = experiment(args);
    let gen = experiment
        .gen_config()
        .context("configuring the generated dataset")?;
    let out = &args.out;
    clear_previous(out)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let bar = progress_bar(Some(gen.count as u64), 0, true);
    bar.set_message("generating shapes");
    let data = experiment
        .generate(&out.join("data"), |done| bar.set_position(done as u64))
        .context("generating the dataset")?;
    bar.finish_and_clear();
    let generate_seconds = start.elapsed().as_secs_f64();
    println!(
        "generated {} views of {} shapes ({}³ voxels, {}² images) in {generate_seconds:.1} s; {} held out",
        gen.count,
        experiment.shapes,
        gen.voxel_size,
        gen.image_size,
        data.validation_samples()
    );

    let train_start = Instant::now();
    let mut trainer = Trainer::new(experiment.model()?, experiment.train_config()?, out)
        .context("setting up training")?;
    let summary = trainer.run(&data).context("training")?;
    let train_seconds = train_start.elapsed().as_secs_f64();
    let psnr = summary
        .last_validation
        .as_ref()
        .and_then(|v| v.metrics.get("psnr").copied())
        .context("training ended without a validation pass")?;
    let baseline = mean_image_baseline(&data).context("measuring the mean-image baseline")?;

    let frames = if args.quick { QUICK_FRAMES } else { FRAMES };
    let images = turntable(
        trainer.model(),
        &gen,
        experiment.unseen_shape(),
        frames,
        TURNTABLE_ELEVATION_DEG,
        TURNTABLE_RADIUS,
    )
    .context("rendering the turntable")?;
    let gif = out.join("turntable.gif");
    write_gif(&gif, &images, FRAME_DELAY_CS, GifRepeat::Infinite)
        .with_context(|| format!("writing {}", gif.display()))?;

    let summary = Summary {
        steps: summary.steps,
        samples: gen.count,
        held_out_samples: data.validation_samples(),
        generate_seconds,
        train_seconds,
        seconds: start.elapsed().as_secs_f64(),
        held_out_psnr_db: psnr,
        mean_image_psnr_db: baseline,
        experiment,
    };
    let path = out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary)?;
    write_atomically(&path, |w| std::io::Write::write_all(w, text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;

    println!(
        "trained {} steps in {train_seconds:.1} s ({:.2} s/step)",
        summary.steps,
        train_seconds / summary.steps.max(1) as f64
    );
    println!(
        "held-out PSNR {psnr:.2} dB (mean-image baseline {baseline:.2} dB) over {} views",
        summary.held_out_samples
    );
    println!(
        "wrote {} (reference | neural, a shape it never saw), {}, {} and {} in {:.1} s",
        gif.display(),
        out.join(LOSS_PLOT).display(),
        out.join(LOG_FILE).display(),
        path.display(),
        summary.seconds
    );
    Ok(())
}

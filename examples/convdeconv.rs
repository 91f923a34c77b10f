//! ConvDeconv from scratch on the CPU: generate procedural shapes in VoxelNeuralRender's
//! layout (32³ camera-space grids, the camera 1–1.8 from the shape, static light and ground,
//! 32×32 grey renders by the reference ray caster), train a small ConvDeconv, then report the
//! held-out PSNR beside the mean-image baseline and write neural | reference images side by
//! side.
//!
//! ```sh
//! cargo run --release -p vnr --example convdeconv -- [--steps N] [--samples N] \
//!     [--preset NAME] [--loss mse|l1] [--lr LR] [--material diffuse|reflective|clear] \
//!     [--seed S] [--out DIR]
//! ```
//!
//! Defaults: `small32-wide-v002`, MSE, Adam from 2e-3 decaying to 2e-4 at the last step,
//! batches of 8, 1,600 samples (50 held out), 2,400 steps: 27.8–27.9 dB held out against the
//! mean image's 24.6 dB, in 1 min 50 s (2.7 CPU-minutes) on a quiet 2-core machine.
//!
//! VoxelNeuralRender's recipe on the original small config (`--preset small32 --loss l1 --lr
//! 3e-4 --samples 400`, constant rate) stays *below* the mean image: 22.8 dB against 24.4 dB
//! after 2,000 steps (PyTorch's same network on the same data does the same, so the kernels
//! are not the cause). Held-out PSNR after 2,400 steps with the defaults above, changing one
//! thing at a time:
//!
//! | model | loss | held-out PSNR (mean image 24.6 dB) |
//! |---|---|---|
//! | `small32` | MSE | 26.1 dB |
//! | `small32-wide-v002` | L1 | 27.1 dB |
//! | `small32-wide-v002` | MSE | 27.9 dB |
//!
//! Why: the scenes are a fixed sky and ground with the shape on about a tenth of the pixels.
//! L1 pulls each pixel to the median of what the network cannot yet tell apart, and the median
//! background scores below the mean image (23.7 against 24.2 dB on the 400-sample set); a
//! slow, constant 3e-4 keeps the net there. MSE is what PSNR scores. v001's bottleneck reshape
//! (`[C, 4, 4, 4]` → `[C, 8, 8]` at 32³) puts depth into the image rows, so no image position
//! sees the grid column under it; v002's skips (depth folded into channels at 8² and 16²) do.
//! And 52k parameters and 350 training images are little: twice the width (223k) and 1,550
//! images generalise better.
//!
//! Writes `DIR/data` (the dataset), `DIR/run` (checkpoints, `log.jsonl`, `loss.png`) and
//! `DIR/convdeconv_heldout.png` (default `DIR`: `target/examples-out/convdeconv`).

use std::path::PathBuf;
use std::time::Instant;

use support::{arg, parsed};
use vnr::formats::dataset::{ChunkedDataset, DatasetConfig, ValidationSplit};
use vnr::models::convdeconv::ConvDeconvConfig;
use vnr::models::convdeconv_train::{self, targets_chw, ConvDeconvLoss, ConvDeconvModel};
use vnr::models::generated::{write_convdeconv, ConvDeconvGenConfig, MaterialKind};
use vnr::models::rendernet_train::{mean_image_baseline, side_by_side};
use vnr::train::schedule::LrSchedule;

mod support;

/// Samples per chunk (one chunk is held out).
const CHUNK: usize = 50;
/// The model (the module docs say why not `small32`).
const PRESET: &str = "small32-wide-v002";
/// Adam's initial learning rate.
const LEARNING_RATE: f64 = 2e-3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Process-wide threading and allocator settings for training; before anything else.
    vnr::train::configure_process_for_training();
    let steps: u64 = parsed("--steps", 2400)?;
    let samples: usize = parsed("--samples", 1600)?;
    let seed: u64 = parsed("--seed", 1)?;
    let out: PathBuf = parsed("--out", PathBuf::from("target/examples-out/convdeconv"))?;
    let material = match arg("--material") {
        None => MaterialKind::Diffuse,
        Some(name) => MaterialKind::from_name(&name)
            .ok_or_else(|| format!("--material: unknown material {name}"))?,
    };
    let preset = arg("--preset").unwrap_or_else(|| PRESET.into());
    let model_cfg =
        ConvDeconvConfig::preset(&preset).ok_or_else(|| format!("--preset: unknown {preset}"))?;
    let lr: f64 = parsed("--lr", LEARNING_RATE)?;
    let loss = match arg("--loss") {
        None => ConvDeconvLoss::Mse,
        Some(name) => ConvDeconvLoss::from_name(&name)
            .ok_or_else(|| format!("--loss: unknown loss {name} (l1 or mse)"))?,
    };
    let gen = ConvDeconvGenConfig {
        count: samples,
        grid_size: model_cfg.input_size,
        image_size: model_cfg.output_size(),
        material,
        samples_per_chunk: CHUNK,
        seed,
        ..ConvDeconvGenConfig::default()
    };
    let data_dir = out.join("data");
    let start = Instant::now();
    write_convdeconv(&gen, &data_dir, |_| {})?;
    println!(
        "generated {} {material:?} samples ({}³ grids, {}² images) in {:.1} s",
        gen.count,
        gen.grid_size,
        gen.image_size,
        start.elapsed().as_secs_f64()
    );

    let data = ChunkedDataset::open(
        &data_dir,
        DatasetConfig {
            batch_size: 8,
            validation: ValidationSplit::Chunks(1),
            seed,
            ..DatasetConfig::default()
        },
    )?;
    let model = ConvDeconvModel::new(model_cfg, seed, &candle_core::Device::Cpu)?.with_loss(loss);
    let mut config = convdeconv_train::train_config(steps, 8);
    // From `lr` down to a tenth of it by the last step.
    config.groups[0].schedule = LrSchedule::ExponentialDecay {
        initial: lr,
        decay_steps: steps.max(1),
        rate: 0.1,
        staircase: false,
    };
    config.validate_every = Some(steps.div_ceil(4));
    config.seed = seed;
    let run_dir = out.join("run");
    let trainer = support::train(model, config, &data, &run_dir)?;
    println!(
        "mean-image baseline {:.2} dB (the mean training image for every held-out one)",
        mean_image_baseline(&data)?
    );

    let batch = data
        .validation()?
        .next()
        .ok_or("empty validation split")??;
    let pred = trainer.model().predict(&batch.inputs)?;
    let target = targets_chw(&batch.targets, gen.image_size)?;
    let path = out.join("convdeconv_heldout.png");
    side_by_side(&pred.narrow(0, 0, 8)?, &target.narrow(0, 0, 8)?)?.write_png(&path)?;
    println!(
        "wrote {} (neural | reference) and {}",
        path.display(),
        run_dir.join("loss.png").display()
    );
    Ok(())
}

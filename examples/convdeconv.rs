//! ConvDeconv from scratch on the CPU: generate procedural shapes in VoxelNeuralRender's
//! layout (32³ camera-space grids, the camera 1–1.8 from the shape, static light and ground,
//! 32×32 grey renders by the reference ray caster), train the small ConvDeconv
//! (`ConvDeconvConfig::small32()`, L1, Adam 3e-4), then report the held-out PSNR and write
//! neural | reference images side by side.
//!
//! ```sh
//! cargo run --release -p vnr --example convdeconv -- [--steps N] [--samples N] \
//!     [--material diffuse|reflective|clear] [--seed S] [--out DIR]
//! ```
//!
//! Writes `DIR/data` (the dataset), `DIR/run` (checkpoints, `log.jsonl`, `loss.png`) and
//! `DIR/convdeconv_heldout.png` (default `DIR`: `target/examples-out/convdeconv`).

use std::path::PathBuf;
use std::time::Instant;

use support::{arg, parsed};
use vnr::formats::dataset::{ChunkedDataset, DatasetConfig, ValidationSplit};
use vnr::models::convdeconv::ConvDeconvConfig;
use vnr::models::convdeconv_train::{self, targets_chw, ConvDeconvModel};
use vnr::models::generated::{write_convdeconv, ConvDeconvGenConfig, MaterialKind};
use vnr::models::rendernet_train::side_by_side;

mod support;

/// Samples per chunk (one chunk is held out).
const CHUNK: usize = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u64 = parsed("--steps", 800)?;
    let samples: usize = parsed("--samples", 400)?;
    let seed: u64 = parsed("--seed", 1)?;
    let out: PathBuf = parsed("--out", PathBuf::from("target/examples-out/convdeconv"))?;
    let material = match arg("--material") {
        None => MaterialKind::Diffuse,
        Some(name) => MaterialKind::from_name(&name)
            .ok_or_else(|| format!("--material: unknown material {name}"))?,
    };
    let model_cfg = ConvDeconvConfig::small32();
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
    let model = ConvDeconvModel::new(model_cfg, seed, &candle_core::Device::Cpu)?;
    let mut config = convdeconv_train::train_config(steps, 8);
    config.validate_every = Some(steps.div_ceil(4));
    config.seed = seed;
    let run_dir = out.join("run");
    let trainer = support::train(model, config, &data, &run_dir)?;

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

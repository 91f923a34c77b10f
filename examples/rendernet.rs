//! RenderNet from scratch on the CPU: generate procedural shapes (32³ voxels, 4 poses each,
//! 128×128 grey Phong renders by the reference ray caster), train the small RenderNet
//! (`RenderNetConfig::small()`, 64³ camera space) with random 32³ → 64² patch crops, Adam
//! β1 0.5 and staircase decay, then report the held-out PSNR and write neural | reference
//! images side by side.
//!
//! ```sh
//! cargo run --release -p vnr --example rendernet -- [--steps N] [--shapes N] [--out DIR]
//! ```
//!
//! Writes `DIR/data` (the dataset), `DIR/run` (checkpoints, `log.jsonl`, `loss.png`) and
//! `DIR/rendernet_heldout.png` (default `DIR`: `target/examples-out/rendernet`).

use std::path::PathBuf;
use std::time::Instant;

use support::parsed;
use vnr::formats::dataset::{ChunkedDataset, DatasetConfig, ValidationSplit};
use vnr::models::generated::{write_rendernet, RenderNetGenConfig};
use vnr::models::rendernet::RenderNetConfig;
use vnr::models::rendernet_train::{self, side_by_side, RenderNetModel};

mod support;

/// Views rendered per shape, and samples per chunk (one chunk is held out).
const VIEWS: usize = 4;
const CHUNK: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u64 = parsed("--steps", 200)?;
    let shapes: usize = parsed("--shapes", 80)?;
    let out: PathBuf = parsed("--out", PathBuf::from("target/examples-out/rendernet"))?;
    let model_cfg = RenderNetConfig::small();
    let gen = RenderNetGenConfig {
        count: shapes * VIEWS,
        views_per_shape: VIEWS,
        samples_per_chunk: CHUNK,
        seed: 1,
        ..RenderNetGenConfig::for_model(&model_cfg)
    };
    let data_dir = out.join("data");
    let start = Instant::now();
    write_rendernet(&gen, &data_dir, |_| {})?;
    println!(
        "generated {} samples ({}³ voxels, {}² images) in {:.1} s",
        gen.count,
        gen.voxel_size,
        gen.image_size,
        start.elapsed().as_secs_f64()
    );

    let data = ChunkedDataset::open(
        &data_dir,
        DatasetConfig {
            batch_size: 4,
            validation: ValidationSplit::Chunks(1),
            seed: 1,
            ..DatasetConfig::default()
        },
    )?;
    let model = RenderNetModel::new(model_cfg, Some(32), &candle_core::Device::Cpu)?;
    let mut config = rendernet_train::train_config(steps, 4, 1e-3, 200)?;
    config.validate_every = Some(steps);
    config.seed = 1;
    let run_dir = out.join("run");
    let trainer = support::train(model, config, &data, &run_dir)?;

    let model = trainer.model();
    let batch = data
        .validation()?
        .next()
        .ok_or("empty validation split")??;
    let poses = &batch.extra[0].1;
    let pred = model.predict(&batch.inputs, poses)?;
    let path = out.join("rendernet_heldout.png");
    side_by_side(&pred, &batch.targets)?.write_png(&path)?;
    println!(
        "wrote {} (neural | reference) and {}",
        path.display(),
        run_dir.join("loss.png").display()
    );
    Ok(())
}

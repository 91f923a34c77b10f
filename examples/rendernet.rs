//! RenderNet from scratch on the CPU: generate procedural shapes (32³ voxels, 4 poses each,
//! 128×128 grey Phong renders by the reference ray caster), train the small RenderNet
//! (`RenderNetConfig::small()`, 64³ camera space) with random 32³ → 64² patch crops, Adam
//! β1 0.5 and staircase decay, then report the held-out PSNR and write neural | reference
//! images side by side. The run is `vnr_models::rendernet_train::Experiment`'s defaults, as
//! `vnr demo` (which adds a turntable GIF of an unseen shape).
//!
//! ```sh
//! cargo run --release -p vnr --example rendernet -- [--steps N] [--shapes N] [--seed S] [--out DIR]
//! ```
//!
//! Writes `DIR/data` (the dataset), `DIR/run` (checkpoints, `log.jsonl`, `loss.png`) and
//! `DIR/rendernet_heldout.png` (default `DIR`: `target/examples-out/rendernet`).

use std::path::PathBuf;
use std::time::Instant;

use support::parsed;
use vnr::models::rendernet_train::{side_by_side, Experiment};

mod support;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Process-wide threading and allocator settings for training; before anything else.
    vnr::train::configure_process_for_training();
    let defaults = Experiment::default();
    let experiment = Experiment {
        steps: parsed("--steps", defaults.steps)?,
        shapes: parsed("--shapes", defaults.shapes)?,
        seed: parsed("--seed", defaults.seed)?,
        ..defaults
    };
    let out: PathBuf = parsed("--out", PathBuf::from("target/examples-out/rendernet"))?;
    let gen = experiment.gen_config()?;
    let data_dir = out.join("data");
    let start = Instant::now();
    let data = experiment.generate(&data_dir, |_| {})?;
    println!(
        "generated {} samples ({}³ voxels, {}² images) in {:.1} s",
        gen.count,
        gen.voxel_size,
        gen.image_size,
        start.elapsed().as_secs_f64()
    );

    let run_dir = out.join("run");
    let trainer = support::train(
        experiment.model()?,
        experiment.train_config()?,
        &data,
        &run_dir,
    )?;

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

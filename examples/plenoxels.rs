//! Plenoxels from scratch on the CPU: render a procedural coloured scene into 100 posed
//! 128×128 views with the reference ray caster, fit a Plenoxel grid to them (svox2's RMSProp,
//! TV, 64³ → 128³ with pruning) and report the held-out PSNR over time.
//!
//! ```sh
//! cargo run --release -p vnr --example plenoxels
//! ```

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr::render::plenoxels::optimize::evaluate_psnr;
use vnr::render::plenoxels::{OptimizeConfig, PlenoxelOptimizer};
use vnr::render::scenes::{generate_multiview, MultiViewGenConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Process-wide threading and allocator settings for training; before anything else.
    vnr::train::configure_process_for_training();
    let start = Instant::now();
    let views = generate_multiview(&MultiViewGenConfig::default())?;
    let (train, test) = (&views.train.dataset, &views.test.dataset);
    println!(
        "rendered {} train + {} test views at 128×128 in {:.1} s",
        train.len(),
        test.len(),
        start.elapsed().as_secs_f64()
    );

    let config = OptimizeConfig::cpu_128();
    let eval_every = config.upsample_every / 2;
    let mut optimizer = PlenoxelOptimizer::from_config(config.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut seconds = 0.0;
    for step in 1..=config.steps {
        let step_start = Instant::now();
        let batch = train.sample_rays(config.batch_rays, &mut rng)?;
        let stats = optimizer.step(&batch, &mut rng)?;
        seconds += step_start.elapsed().as_secs_f64();
        if step % eval_every == 0 || step == config.steps {
            let psnr = evaluate_psnr(&optimizer.grid()?, test, &config.render)?;
            println!(
                "step {step:5}  batch PSNR {:5.2} dB  held-out PSNR {psnr:5.2} dB  \
                 {} voxels  {seconds:6.1} s fitting  {:.0} rays/s",
                stats.psnr,
                stats.capacity,
                (step * config.batch_rays) as f64 / seconds
            );
        }
    }
    Ok(())
}

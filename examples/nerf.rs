//! Fits PyTorch3D's tutorial NeRF to a small rendered scene on the CPU and prints the PSNR of
//! held-out views.
//!
//! ```sh
//! cargo run --release -p vnr --example nerf               # 400 steps, 32² views
//! cargo run --release -p vnr --example nerf -- 1000 64    # ITERATIONS RESOLUTION
//! ```
//!
//! The scene is the procedural `shapes` scene of `vnr_render::scenes` (a red sphere, a green
//! rounded box, a blue torus and a yellow capsule on white), seen from 40 random training
//! cameras; 4 other random cameras are held out. Training uses the tutorial's recipe (Adam 1e-3 ×0.1 at 75 %, Huber colour +
//! silhouette errors, stratified samples, emission–absorption marching) with a smaller
//! network. Renders of the test views, `log.jsonl` and `loss.png` go to
//! `target/nerf-example/`.

use std::error::Error;

use vnr::models::nerf::{DensityMode, NerfConfig};
use vnr::models::nerf_train::{fit, NerfRays, NerfTrainConfig, RaySettings};
use vnr::render::scenes::{generate_multiview, MultiViewGenConfig};

fn main() -> Result<(), Box<dyn Error>> {
    // Process-wide threading and allocator settings for training; before anything else.
    vnr::train::configure_process_for_training();
    let mut args = std::env::args().skip(1);
    let iterations: u64 = args.next().map_or(Ok(400), |a| a.parse())?;
    let res: usize = args.next().map_or(Ok(32), |a| a.parse())?;

    let background = [1.0; 3];
    let views = generate_multiview(&MultiViewGenConfig {
        train_views: 40,
        val_views: 1,
        test_views: 4,
        resolution: res,
        background,
        ..MultiViewGenConfig::default()
    })?;

    let output = std::path::PathBuf::from("target/nerf-example");
    if output.exists() {
        std::fs::remove_dir_all(&output)?;
    }
    let cfg = NerfTrainConfig {
        output: output.clone(),
        model: NerfConfig {
            n_harmonic_functions: 8,
            omega_0: 1.0,
            n_hidden_neurons: 64,
            density: DensityMode::Opacity,
        },
        iterations,
        rays_per_step: 512,
        rays: RaySettings {
            near: 2.4,
            far: 5.6,
            samples_per_ray: 32,
            chunk_rays: 1024,
            background,
            ..RaySettings::default()
        },
        lr: 5e-3,
        checkpoint_every: None,
        test_views: views.test.dataset.len(),
        ..NerfTrainConfig::default()
    };
    let test = views.test.dataset;
    let data = NerfRays::new(views.train.dataset, None, 0, cfg.rays_per_step, cfg.seed)?;
    let (_, report) = fit(&cfg, data, Some(&test), false)?;
    let test_scores = report.test.ok_or("no test views were scored")?;
    println!(
        "{} steps of {} rays in {:.1} s ({:.0} rays/s)",
        report.summary.steps, cfg.rays_per_step, report.train_seconds, report.train_rays_per_second
    );
    println!(
        "held-out PSNR at {res}x{res}: {:.2} dB (per view: {}), rendering {:.0} rays/s",
        test_scores.mean_psnr,
        test_scores
            .psnr
            .iter()
            .map(|p| format!("{p:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        test_scores.rays_per_second
    );
    println!("renders: {}", output.join("test").display());
    Ok(())
}

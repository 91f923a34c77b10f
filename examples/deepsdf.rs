//! DeepSDF end to end without downloads: generate a class of procedural shapes ("stools": a
//! rounded seat blended onto a leg with a foot ring, random proportions), write DeepSDF's
//! samples for each, train a narrow auto-decoder on most of them from a `specs.json` through the
//! shared trainer, reconstruct the held-out shapes from their samples alone, mesh them, and
//! report the chamfer distance ×10³ (DeepSDF's units: 30,000 surface points each way, in the
//! normalised space) per shape, with the mean and median.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p vnr --example deepsdf -- [--epochs N] [--shapes N] [--held-out N] [--out DIR]
//! ```
//!
//! Defaults: 16 shapes, 3 held out, 1,500 epochs of a latent-16, 8×32 decoder (NeoRender's
//! narrow preset) with 100,000 samples per shape — about 3 minutes on one CPU core
//! (`RAYON_NUM_THREADS=1` is faster than two threads on a machine busy with other work);
//! held-out chamfer ×10³ about 0.17 mean, 0.16 median.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use vnr::geom::deepsdf_samples::{sample_mesh_file, SamplingOptions, SAMPLES_DIR};
use vnr::geom::metrics::compare_surfaces;
use vnr::geom::normalize::Normalization;
use vnr::geom::procedural::{generate_class, Family};
use vnr::models::deepsdf_training::{
    decode_mesh, reconstruct_latent, AutoDecoder, DeepSdfExperiment, ReconstructOptions,
    SceneSamples, TrainedDecoder,
};
use vnr::train::Trainer;

type Error = Box<dyn std::error::Error>;

/// Command-line settings.
struct Settings {
    epochs: u64,
    shapes: usize,
    held_out: usize,
    out: PathBuf,
}

fn settings() -> Result<Settings, Error> {
    let mut s = Settings {
        epochs: 1500,
        shapes: 16,
        held_out: 3,
        out: std::env::temp_dir().join("vnr-deepsdf-demo"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).ok_or("every option takes a value")?;
        match pair[0].as_str() {
            "--epochs" => s.epochs = value.parse()?,
            "--shapes" => s.shapes = value.parse()?,
            "--held-out" => s.held_out = value.parse()?,
            "--out" => s.out = PathBuf::from(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if s.held_out == 0 || s.held_out + 4 > s.shapes {
        return Err("need at least one held-out shape and four training shapes".into());
    }
    Ok(s)
}

/// The experiment's `specs.json`: DeepSDF's layout with the narrow decoder, 4 scenes per batch
/// and 2,048 samples per scene (CPU-sized), DeepSDF's loss and code settings.
fn specs(epochs: u64) -> String {
    format!(
        r#"{{
  "Description": "vnr demo: procedural stools",
  "DataSource": "data",
  "TrainSplit": "train.json",
  "NetworkArch": "deep_sdf_decoder",
  "NetworkSpecs": {{
    "dims": [32, 32, 32, 32, 32, 32, 32, 32],
    "dropout": [], "dropout_prob": 0.0,
    "norm_layers": [0, 1, 2, 3, 4, 5, 6, 7],
    "latent_in": [4], "xyz_in_all": false, "use_tanh": false,
    "latent_dropout": false, "weight_norm": true
  }},
  "CodeLength": 16,
  "NumEpochs": {epochs},
  "SnapshotFrequency": {epochs},
  "LearningRateSchedule": [
    {{"Type": "Step", "Initial": 0.002, "Interval": {half}, "Factor": 0.5}},
    {{"Type": "Step", "Initial": 0.004, "Interval": {half}, "Factor": 0.5}}
  ],
  "SamplesPerScene": 2048,
  "ScenesPerBatch": 4,
  "ClampingDistance": 0.1,
  "CodeRegularization": true,
  "CodeRegularizationLambda": 1e-4,
  "CodeBound": 1.0
}}
"#,
        half = (epochs / 2).max(1)
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Error> {
    // Process-wide threading and allocator settings for training; before anything else.
    vnr::train::configure_process_for_training();
    let s = settings()?;
    let out = &s.out;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    let meshes_dir = out.join("meshes");
    std::fs::create_dir_all(&meshes_dir)?;

    let t = Instant::now();
    let class = generate_class(Family::Blends, s.shapes, 96, 2024)?;
    let options = SamplingOptions {
        count: 100_000,
        ..SamplingOptions::default()
    };
    for (i, (name, mesh)) in class.iter().enumerate() {
        let path = meshes_dir.join(format!("{name}.ply"));
        mesh.write_ply(&path)?;
        sample_mesh_file(&path, &out.join("data"), &options, None, i as u64)?;
    }
    println!(
        "{} shapes generated and sampled ({} samples each) in {:.1} s",
        class.len(),
        options.count,
        t.elapsed().as_secs_f64()
    );

    let train_count = s.shapes - s.held_out;
    let names: Vec<String> = class[..train_count]
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect();
    std::fs::write(
        out.join("train.json"),
        format!(r#"{{"procedural": {{"stools": [{}]}}}}"#, names.join(", ")),
    )?;
    let specs_path = out.join("specs.json");
    std::fs::write(&specs_path, specs(s.epochs))?;

    let device = Device::Cpu;
    let experiment = DeepSdfExperiment::load(&specs_path)?;
    let data = experiment.dataset(0, &device)?;
    let model = AutoDecoder::new(experiment.config.clone(), data.len(), 0, &device)?;
    let mut train = experiment.train.clone();
    train.progress = false;
    let run_dir = out.join("run");
    let t = Instant::now();
    let mut trainer = Trainer::new(model, train, &run_dir)?;
    let summary = trainer.run(&data)?;
    println!(
        "trained {} epochs ({} steps) on {train_count} shapes in {:.1} s, last loss {:.5}",
        summary.epoch,
        summary.steps,
        t.elapsed().as_secs_f64(),
        summary.last_loss.unwrap_or(f64::NAN)
    );

    let trained = TrainedDecoder::load(
        experiment.config.decoder.clone(),
        &summary.checkpoint.join("model.safetensors"),
        &device,
    )?;
    let recon_dir = out.join("reconstructions");
    std::fs::create_dir_all(&recon_dir)?;
    // DeepSDF's reconstruction, with 2,048 instead of 8,000 samples per iteration (CPU-sized).
    let reconstruct = ReconstructOptions {
        samples: 2048,
        ..ReconstructOptions::default()
    };
    let mut chamfers = Vec::new();
    let t = Instant::now();
    for (name, mesh) in &class[train_count..] {
        let samples = SceneSamples::read(&samples_path(out, name))?;
        let fit = reconstruct_latent(&trained.decoder, &samples, &reconstruct)?;
        let reconstruction = decode_mesh(&trained.decoder, &fit.latent, 128, 32_768)?;
        if reconstruction.triangles.is_empty() {
            println!("{name}: the decoded SDF has no surface (train longer)");
            continue;
        }
        reconstruction.write_ply(recon_dir.join(format!("{name}.ply")))?;
        let truth = Normalization::deepsdf(mesh)?.apply_to_mesh(mesh);
        let d = compare_surfaces(&reconstruction, &truth, 30_000, 0)?;
        println!(
            "{name}: chamfer x1e3 {:.4}, final reconstruction loss {:.5}",
            d.chamfer * 1e3,
            fit.losses.last().copied().unwrap_or(f64::NAN)
        );
        chamfers.push(d.chamfer * 1e3);
    }
    if chamfers.is_empty() {
        return Err("no held-out shape could be meshed".into());
    }
    let mean = chamfers.iter().sum::<f64>() / chamfers.len() as f64;
    println!(
        "held-out chamfer x1e3 over {} shapes: mean {mean:.4}, median {:.4} (reconstructed in {:.1} s; files in {})",
        chamfers.len(),
        median(&mut chamfers),
        t.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn samples_path(out: &Path, name: &str) -> PathBuf {
    out.join("data")
        .join(SAMPLES_DIR)
        .join(format!("{name}.npz"))
}

//! One DeepSDF training step at the reference size: 16,384 SDF samples of one scene through the
//! reference decoder (latent 256, 8 × 512, weight norm, dropout 0.2, latent re-injected at
//! layer 4), DeepSDF's clamped L1 loss with the code regularisation, backward, and Adam on the
//! decoder and code groups, as `vnr train deepsdf` runs it. `tools/bench/deepsdf_step_peer.py`
//! times the same step in PyTorch (and through the CLI).
//!
//! `cargo bench -p vnr-models --bench deepsdf_step`
//!
//! Like a training binary, its `main` calls `vnr_train::configure_process_for_training`: freed
//! tensors are kept for reuse and candle's element-wise ops run on the calling thread.

use std::time::Duration;

use candle_core::Device;
use criterion::Criterion;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_models::deepsdf::DeepSdfConfig;
use vnr_models::deepsdf_training::{AutoDecoder, AutoDecoderConfig, SceneDataset, SceneSamples};
use vnr_train::data::DataSource;
use vnr_train::optim::{param_groups, Optimizer};
use vnr_train::originals::DeepSdfSpecs;
use vnr_train::Model;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The peer script's experiment: the reference decoder, one scene of 16,384 samples a batch.
const SPECS: &str = r#"{
  "NetworkArch": "deep_sdf_decoder",
  "NetworkSpecs": {
    "dims": [512, 512, 512, 512, 512, 512, 512, 512],
    "dropout": [0, 1, 2, 3, 4, 5, 6, 7],
    "dropout_prob": 0.2,
    "norm_layers": [0, 1, 2, 3, 4, 5, 6, 7],
    "latent_in": [4],
    "xyz_in_all": false,
    "use_tanh": false,
    "latent_dropout": false,
    "weight_norm": true
  },
  "CodeLength": 256,
  "NumEpochs": 1,
  "SnapshotFrequency": 100000,
  "LearningRateSchedule": [
    {"Type": "Step", "Initial": 0.0005, "Interval": 500, "Factor": 0.5},
    {"Type": "Step", "Initial": 0.001, "Interval": 500, "Factor": 0.5}
  ],
  "SamplesPerScene": 16384,
  "ScenesPerBatch": 1,
  "ClampingDistance": 0.1,
  "CodeRegularization": true,
  "CodeRegularizationLambda": 1e-4,
  "CodeBound": 1.0
}"#;

/// Samples of a sphere of radius 0.5 at uniform points of `[-1, 1]³`, split by sign.
fn sphere_samples(count: usize) -> Result<SceneSamples> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let p: [f32; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        let sdf = p.iter().map(|v| v * v).sum::<f32>().sqrt() - 0.5;
        let row = [p[0], p[1], p[2], sdf];
        if sdf > 0.0 {
            pos.push(row);
        } else {
            neg.push(row);
        }
    }
    Ok(SceneSamples::new(pos, neg)?)
}

fn deepsdf_step(c: &mut Criterion) -> Result<()> {
    let specs = DeepSdfSpecs::from_json_str(SPECS)?;
    let cfg = AutoDecoderConfig::from_specs(&specs, DeepSdfConfig::from_specs(SPECS, "bench")?)?;
    let (rows, scenes) = (cfg.samples_per_scene, cfg.scenes_per_batch);
    let model = AutoDecoder::new(cfg, 1, 0, &Device::Cpu)?;
    let train = specs.to_train_config()?;
    let mut optimizer = Optimizer::new(
        train.optimizer.clone(),
        param_groups(model.vars(), &train.groups)?,
    )?;
    let data = SceneDataset::new(vec![sphere_samples(200_000)?], scenes, rows, 0, Device::Cpu)?;
    let batch = data.epoch(0, 0)?.next().ok_or("no batch")??;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut group = c.benchmark_group("deepsdf_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(40));
    group.bench_function("reference_16384", |b| {
        b.iter(|| {
            let out = model.step(&batch, &mut rng).expect("loss");
            let grads = out.loss.backward().expect("backward");
            optimizer.step(&grads).expect("update");
        })
    });
    group.finish();
    Ok(())
}

fn main() -> Result<()> {
    vnr_train::configure_process_for_training();
    let mut c = Criterion::default().configure_from_args();
    deepsdf_step(&mut c)?;
    c.final_summary();
    Ok(())
}

//! Fits `y = sin(3x)` with a small MLP: how to implement [`Model`] and drive the [`Trainer`].
//!
//! ```sh
//! cargo run -p vnr-train --example fit_mlp -- RUN_DIR [--resume]
//! ```
//!
//! Writes `RUN_DIR/log.jsonl`, `RUN_DIR/loss.png` and `RUN_DIR/checkpoints/step-N/`; with
//! `--resume` it continues from the newest checkpoint.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::dataset::Batch;
use vnr_train::data::InMemoryDataset;
use vnr_train::metrics::{l1, mse};
use vnr_train::model::dropout;
use vnr_train::optim::GroupConfig;
use vnr_train::schedule::LrSchedule;
use vnr_train::{Model, StepOutput, TrainConfig, Trainer};

/// `1 → 32 → 32 → 1`, tanh, dropout 0.1 after each hidden layer.
struct Mlp {
    vars: VarMap,
    training: bool,
}

const LAYERS: [(&str, usize, usize); 3] = [("fc1", 1, 32), ("fc2", 32, 32), ("fc3", 32, 1)];

impl Mlp {
    /// Uniform `±1/√fan_in` initialisation (PyTorch's `nn.Linear`), from a seeded generator.
    fn new(seed: u64) -> candle_core::Result<Self> {
        let vars = VarMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (name, fan_in, fan_out) in LAYERS {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let weight = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), &Device::Cpu)?;
            let bias = Tensor::from_vec(draw(fan_out), fan_out, &Device::Cpu)?;
            let mut data = vars.data().lock().expect("fresh VarMap");
            data.insert(format!("{name}.weight"), Var::from_tensor(&weight)?);
            data.insert(format!("{name}.bias"), Var::from_tensor(&bias)?);
        }
        Ok(Self {
            vars,
            training: true,
        })
    }

    fn param(&self, name: &str) -> vnr_train::Result<Tensor> {
        let data = self.vars.data().lock().expect("VarMap lock");
        data.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| vnr_train::TrainError::Config(format!("no parameter {name}")))
    }
}

impl Model for Mlp {
    type Batch = Batch;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn step(&self, batch: &Batch, rng: &mut ChaCha8Rng) -> vnr_train::Result<StepOutput> {
        let mut h = batch.inputs.clone();
        for (i, (name, _, _)) in LAYERS.iter().enumerate() {
            h = h
                .matmul(&self.param(&format!("{name}.weight"))?.t()?)?
                .broadcast_add(&self.param(&format!("{name}.bias"))?)?;
            if i + 1 < LAYERS.len() {
                h = h.tanh()?;
                if self.training {
                    h = dropout(&h, 0.1, rng)?;
                }
            }
        }
        let loss = mse(&h, &batch.targets)?;
        let mae = l1(&h, &batch.targets)?.to_scalar::<f32>()? as f64;
        Ok(StepOutput {
            loss,
            metrics: vec![("mae".into(), mae)],
        })
    }
}

/// `n` points `x` in `[-1, 1]` and `sin(3x)`, as `[n, 1]` tensors.
fn samples(n: usize, rng: &mut ChaCha8Rng) -> candle_core::Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1f32..1.0)).collect();
    let y: Vec<f32> = x.iter().map(|v| (3.0 * v).sin()).collect();
    Ok((
        Tensor::from_vec(x, (n, 1), &Device::Cpu)?,
        Tensor::from_vec(y, (n, 1), &Device::Cpu)?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let run_dir = args.next().ok_or("usage: fit_mlp RUN_DIR [--resume]")?;
    let resume = args.next().as_deref() == Some("--resume");

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (x, y) = samples(256, &mut rng)?;
    let (vx, vy) = samples(64, &mut rng)?;
    let data = InMemoryDataset::new(x, y, 32)?
        .shuffled(1)
        .with_validation(vx, vy)?;

    let config = TrainConfig {
        steps: Some(800),
        clip_grad_norm: Some(1.0),
        validate_every: Some(100),
        checkpoint_every: Some(200),
        plot_log_scale: true,
        groups: vec![GroupConfig {
            name: "all".into(),
            params: Vec::new(),
            schedule: LrSchedule::Warmup {
                initial: 0.0,
                length: 50,
                then: Box::new(LrSchedule::Step {
                    initial: 1e-2,
                    interval: 300,
                    factor: 0.5,
                }),
            },
        }],
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(Mlp::new(42)?, config, &run_dir)?;
    if resume {
        match trainer.resume_latest()? {
            Some(step) => println!("resumed from step {step}"),
            None => println!("no checkpoint in {run_dir}: starting afresh"),
        }
    }
    let summary = trainer.run(&data)?;
    println!(
        "{} steps; last train loss {:?}; validation loss {:?}; checkpoint {}",
        summary.steps,
        summary.last_loss,
        summary.last_validation.map(|r| r.loss),
        summary.checkpoint.display()
    );
    Ok(())
}

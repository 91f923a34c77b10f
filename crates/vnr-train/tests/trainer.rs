//! The training loop end to end on a tiny MLP with dropout: exact resume, NaN stops that keep
//! the last good checkpoint, checkpoint round trips, epochs, logs, the plot, chunked data.

use std::cell::Cell;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_formats::dataset::{Batch, ChunkLayout, ChunkWriter, ChunkedDataset, DatasetConfig};
use vnr_train::checkpoint::{latest_checkpoint, list_checkpoints, CHECKPOINTS_DIR};
use vnr_train::data::InMemoryDataset;
use vnr_train::log::{read_log, LogRecord, Phase, LOG_FILE};
use vnr_train::metrics::l1;
use vnr_train::model::dropout;
use vnr_train::optim::{AdamConfig, OptimizerConfig};
use vnr_train::trainer::LOSS_PLOT;
use vnr_train::{Model, StepOutput, TrainConfig, TrainError, Trainer};

/// What goes wrong, and from which training call on.
#[derive(Clone, Copy, PartialEq)]
enum Poison {
    None,
    Loss(u64),
    Gradient(u64),
}

/// `[N, 4] → 16 → relu → dropout 0.3 → 1`, parameters named like a PyTorch `state_dict`.
struct Mlp {
    vars: VarMap,
    training: bool,
    poison: Poison,
    calls: Cell<u64>,
}

fn seeded_var(vars: &VarMap, name: &str, shape: &[usize], rng: &mut ChaCha8Rng) {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect();
    let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    vars.data()
        .lock()
        .unwrap()
        .insert(name.into(), Var::from_tensor(&t).unwrap());
}

impl Mlp {
    fn new(init_seed: u64, poison: Poison) -> Self {
        let vars = VarMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(init_seed);
        seeded_var(&vars, "fc1.weight", &[16, 4], &mut rng);
        seeded_var(&vars, "fc1.bias", &[16], &mut rng);
        seeded_var(&vars, "fc2.weight", &[1, 16], &mut rng);
        seeded_var(&vars, "fc2.bias", &[1], &mut rng);
        Self {
            vars,
            training: true,
            poison,
            calls: Cell::new(0),
        }
    }

    fn param(&self, name: &str) -> Tensor {
        self.vars.data().lock().unwrap()[name].as_tensor().clone()
    }

    fn params_bits(&self) -> Vec<(String, Vec<u32>)> {
        let mut names: Vec<String> = self.vars.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let v = self
                    .param(&n)
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                (n, v.iter().map(|x| x.to_bits()).collect())
            })
            .collect()
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
        let x = batch.inputs.flatten_from(1)?;
        let h = x
            .matmul(&self.param("fc1.weight").t()?)?
            .broadcast_add(&self.param("fc1.bias"))?
            .relu()?;
        let h = if self.training {
            dropout(&h, 0.3, rng)?
        } else {
            h
        };
        let y = h
            .matmul(&self.param("fc2.weight").t()?)?
            .broadcast_add(&self.param("fc2.bias"))?;
        let target = batch.targets.reshape(y.shape())?;
        let mut loss = vnr_train::metrics::mse(&y, &target)?;
        let mae = l1(&y, &target)?.to_scalar::<f32>()? as f64;
        if self.training {
            let call = self.calls.get();
            self.calls.set(call + 1);
            match self.poison {
                Poison::Loss(at) if call >= at => loss = (loss * f64::NAN)?,
                Poison::Gradient(at) if call >= at => {
                    // Adds 0 to the loss but an infinite gradient (d√u/du at u = 0).
                    let w = self.param("fc2.bias");
                    loss = (loss + (&w - w.detach())?.sqrt()?.sum_all()?)?;
                }
                _ => {}
            }
        }
        Ok(StepOutput {
            loss,
            metrics: vec![("mae".into(), mae)],
        })
    }
}

/// 20 training samples (7 batches of 3 per epoch, the last partial), 6 validation samples.
fn dataset() -> InMemoryDataset {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut make = |n: usize| {
        let x: Vec<f32> = (0..n * 4).map(|_| rng.random_range(-1f32..1.0)).collect();
        let y: Vec<f32> = x
            .chunks(4)
            .map(|r| r[0] - 0.5 * r[1] + r[2] * r[3])
            .collect();
        (
            Tensor::from_vec(x, (n, 4), &Device::Cpu).unwrap(),
            Tensor::from_vec(y, (n, 1), &Device::Cpu).unwrap(),
        )
    };
    let (x, y) = make(20);
    let (vx, vy) = make(6);
    InMemoryDataset::new(x, y, 3)
        .unwrap()
        .shuffled(5)
        .with_validation(vx, vy)
        .unwrap()
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        steps: Some(steps),
        optimizer: OptimizerConfig::Adam(AdamConfig::default()),
        clip_grad_norm: Some(0.5),
        validate_every: Some(5),
        checkpoint_every: Some(4),
        keep_checkpoints: 3,
        seed: 11,
        progress: false,
        ..TrainConfig::default()
    }
}

fn losses(run: &Path, phase: Phase) -> Vec<(u64, u64)> {
    read_log(&run.join(LOG_FILE))
        .unwrap()
        .iter()
        .filter(|r: &&LogRecord| r.phase == phase)
        .map(|r| (r.step, r.loss.to_bits()))
        .collect()
}

#[test]
fn resumed_run_repeats_the_uninterrupted_losses_bit_for_bit() {
    let data = dataset();
    let whole = tempfile::tempdir().unwrap();
    let mut uninterrupted =
        Trainer::new(Mlp::new(1, Poison::None), config(17), whole.path()).unwrap();
    let summary = uninterrupted.run(&data).unwrap();
    assert_eq!(summary.steps, 17);
    assert_eq!(
        summary.epoch, 2,
        "17 steps of 7 batches end in the third epoch"
    );

    // First session: stops after 9 steps (mid-epoch: 2 batches into epoch 1).
    let split = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(Mlp::new(1, Poison::None), config(9), split.path()).unwrap();
    first.run(&data).unwrap();
    // Second session: a fresh model with other weights, as in a new process, resumed.
    let mut second = Trainer::new(Mlp::new(2, Poison::None), config(17), split.path()).unwrap();
    assert_eq!(second.resume_latest().unwrap(), Some(9));
    second.run(&data).unwrap();

    let want = losses(whole.path(), Phase::Train);
    assert_eq!(want.len(), 17);
    assert_eq!(losses(split.path(), Phase::Train), want);
    // Same validation losses, plus the first session's end-of-run validation at step 9.
    let mut validation = losses(split.path(), Phase::Validation);
    assert_eq!(validation.iter().filter(|(s, _)| *s == 9).count(), 1);
    validation.retain(|(s, _)| *s != 9);
    assert_eq!(validation, losses(whole.path(), Phase::Validation));
    assert_eq!(
        second.model().params_bits(),
        uninterrupted.model().params_bits()
    );
    assert!(whole.path().join(LOSS_PLOT).is_file());
}

#[test]
fn nan_loss_stops_and_the_last_good_checkpoint_resumes_exactly() {
    let data = dataset();
    let run = tempfile::tempdir().unwrap();
    // The 11th training call (after 10 updates) returns NaN.
    let mut poisoned = Trainer::new(Mlp::new(1, Poison::Loss(10)), config(17), run.path()).unwrap();
    match poisoned.run(&data) {
        Err(TrainError::NonFiniteLoss { step, value }) => {
            assert_eq!(step, 10);
            assert!(value.is_nan());
        }
        other => panic!("expected a NaN stop, got {other:?}"),
    }
    let steps: Vec<u64> = list_checkpoints(run.path())
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        steps,
        [4, 8],
        "no checkpoint after the NaN, the good ones kept"
    );
    let leftovers = std::fs::read_dir(run.path().join(CHECKPOINTS_DIR))
        .unwrap()
        .count();
    assert_eq!(leftovers, 2, "no temporary checkpoint folders");

    // A fresh run may not reuse the directory.
    let fresh = Trainer::new(Mlp::new(3, Poison::None), config(17), run.path())
        .unwrap()
        .run(&data);
    assert!(matches!(fresh, Err(TrainError::Config(_))), "{fresh:?}");

    // Resuming from step 8 with a healthy model gives the uninterrupted run's losses, and the
    // log records of steps 9 and 10 written before the NaN are replaced, not duplicated.
    let mut healthy = Trainer::new(Mlp::new(3, Poison::None), config(17), run.path()).unwrap();
    assert_eq!(healthy.resume_latest().unwrap(), Some(8));
    healthy.run(&data).unwrap();
    let whole = tempfile::tempdir().unwrap();
    Trainer::new(Mlp::new(1, Poison::None), config(17), whole.path())
        .unwrap()
        .run(&data)
        .unwrap();
    assert_eq!(
        losses(run.path(), Phase::Train),
        losses(whole.path(), Phase::Train)
    );
}

#[test]
fn non_finite_gradient_stops_before_the_update() {
    let data = dataset();
    let run = tempfile::tempdir().unwrap();
    let mut trainer =
        Trainer::new(Mlp::new(1, Poison::Gradient(6)), config(17), run.path()).unwrap();
    let err = trainer.run(&data).unwrap_err();
    match &err {
        TrainError::NonFiniteGradient { step, name } => {
            assert_eq!((*step, name.as_str()), (6, "fc2.bias"));
        }
        other => panic!("expected a gradient stop, got {other:?}"),
    }
    assert!(err.to_string().contains("fc2.bias"));
    assert_eq!(trainer.state().step, 6);
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().0, 4);
    let bias = trainer.model().param("fc2.bias").to_vec1::<f32>().unwrap();
    assert!(bias.iter().all(|v| v.is_finite()), "parameters untouched");
}

#[test]
fn checkpoint_round_trip_restores_parameters_optimizer_and_state() {
    let data = dataset();
    let run = tempfile::tempdir().unwrap();
    let mut cfg = config(6);
    cfg.optimizer = OptimizerConfig::RmsProp(vnr_train::optim::RmsPropConfig {
        momentum: 0.9,
        centered: true,
        ..Default::default()
    });
    let mut trainer = Trainer::new(Mlp::new(1, Poison::None), cfg.clone(), run.path()).unwrap();
    let summary = trainer.run(&data).unwrap();
    let copy = tempfile::tempdir().unwrap();
    let mut loaded = Trainer::new(Mlp::new(7, Poison::None), cfg, copy.path()).unwrap();
    assert_eq!(loaded.load_checkpoint(&summary.checkpoint).unwrap(), 6);
    assert_eq!(loaded.model().params_bits(), trainer.model().params_bits());
    assert_eq!(loaded.state(), trainer.state());
    assert_eq!(loaded.optimizer().param_steps("fc1.weight"), 6);
    let again = loaded.save_checkpoint().unwrap();
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "trainer.json",
    ] {
        assert_eq!(
            std::fs::read(summary.checkpoint.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file} differs after a load/save round trip"
        );
    }
    // A checkpoint of another optimiser is refused with a reason.
    let mut other = config(6);
    other.optimizer = OptimizerConfig::Sgd(Default::default());
    let mut wrong = Trainer::new(Mlp::new(1, Poison::None), other, copy.path()).unwrap();
    let err = wrong.load_checkpoint(&summary.checkpoint).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
}

#[test]
fn epoch_runs_log_every_step_validate_and_plot() {
    let data = dataset();
    let run = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        steps: None,
        epochs: Some(2),
        validate_every: Some(7),
        checkpoint_every: None,
        plot_log_scale: true,
        ..config(0)
    };
    let mut trainer = Trainer::new(Mlp::new(1, Poison::None), cfg, run.path()).unwrap();
    let summary = trainer.run(&data).unwrap();
    assert_eq!((summary.steps, summary.epoch), (14, 2));
    let log = read_log(&run.path().join(LOG_FILE)).unwrap();
    let train: Vec<&LogRecord> = log.iter().filter(|r| r.phase == Phase::Train).collect();
    assert_eq!(train.len(), 14);
    assert_eq!(train[6].epoch, 0);
    assert_eq!(train[7].epoch, 1);
    assert!(train
        .iter()
        .all(|r| r.metrics.contains_key("mae") && r.lr["all"] == 1e-3));
    let validation_steps: Vec<u64> = log
        .iter()
        .filter(|r| r.phase == Phase::Validation)
        .map(|r| r.step)
        .collect();
    assert_eq!(validation_steps, [7, 14]);
    assert_eq!(summary.last_validation.unwrap().step, 14);
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().0, 14);
    let plot = vnr_formats::image::ImageF32::read_png(run.path().join(LOSS_PLOT)).unwrap();
    assert_eq!((plot.width, plot.height, plot.channels), (800, 500, 3));
}

#[test]
fn chunked_dataset_is_a_data_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ChunkWriter::new(dir.path(), ChunkLayout::Manifest, 4).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for _ in 0..10 {
        let x: Vec<f32> = (0..4).map(|_| rng.random_range(-1f32..1.0)).collect();
        let y = x[0] * 0.5;
        writer
            .push(
                &Tensor::from_vec(x, 4, &Device::Cpu).unwrap(),
                &Tensor::from_vec(vec![y], 1, &Device::Cpu).unwrap(),
            )
            .unwrap();
    }
    writer.finish().unwrap();
    let dataset = ChunkedDataset::open(
        dir.path(),
        DatasetConfig {
            batch_size: 3,
            seed: 1,
            dtype: DType::F32,
            ..DatasetConfig::default()
        },
    )
    .unwrap();
    let run = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        steps: Some(6),
        checkpoint_every: Some(3),
        validate_every: None,
        ..config(0)
    };
    let whole = Trainer::new(Mlp::new(1, Poison::None), cfg.clone(), run.path())
        .unwrap()
        .run(&dataset)
        .unwrap();
    assert_eq!(whole.steps, 6);
    // Resume from step 3 (inside epoch 0 of 4 batches) in another directory: same losses.
    let split = tempfile::tempdir().unwrap();
    Trainer::new(
        Mlp::new(1, Poison::None),
        TrainConfig {
            steps: Some(3),
            ..cfg.clone()
        },
        split.path(),
    )
    .unwrap()
    .run(&dataset)
    .unwrap();
    let mut resumed = Trainer::new(Mlp::new(5, Poison::None), cfg, split.path()).unwrap();
    resumed.resume_latest().unwrap();
    resumed.run(&dataset).unwrap();
    assert_eq!(
        losses(split.path(), Phase::Train),
        losses(run.path(), Phase::Train)
    );
    assert_eq!(
        dataset.train_samples(),
        10,
        "every sample trains (no validation split configured)"
    );
}

//! DeepSDF auto-decoder training, reconstruction and meshing on tiny decoders and analytic
//! spheres (fast: a few hundred points, a handful of epochs).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_models::deepsdf::DeepSdfConfig;
use vnr_models::deepsdf_training::{
    decode_mesh, decode_sdf_grid, reconstruct_latent, snapshot_steps, split_samples, AutoDecoder,
    AutoDecoderConfig, DeepSdfError, DeepSdfExperiment, ReconstructOptions, SceneBatch,
    SceneDataset, SceneSamples, TrainedDecoder,
};
use vnr_train::checkpoint::list_checkpoints;
use vnr_train::data::DataSource;
use vnr_train::originals::{DeepSdfSpecs, DEEPSDF_LATENT_PREFIX};
use vnr_train::{Model, Trainer};

/// A small decoder: latent 4, 3 hidden layers of 16, latent re-injected at layer 2.
fn tiny_config() -> AutoDecoderConfig {
    AutoDecoderConfig {
        decoder: DeepSdfConfig {
            latent_size: 4,
            dims: vec![16, 16, 16],
            dropout: vec![],
            dropout_prob: 0.0,
            norm_layers: vec![0, 1, 2],
            latent_in: vec![2],
            ..DeepSdfConfig::default()
        },
        samples_per_scene: 64,
        scenes_per_batch: 2,
        ..AutoDecoderConfig::default()
    }
}

/// Samples of a sphere of `radius`: half near the surface, half uniform in [-1, 1]³.
fn sphere(radius: f32, count: usize, seed: u64) -> SceneSamples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in 0..count {
        let p: [f32; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        let p = if i % 2 == 0 {
            let n = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt().max(1e-3);
            let r = radius + rng.random_range(-0.05..0.05);
            p.map(|c| c / n * r)
        } else {
            p
        };
        let sdf = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - radius;
        let row = [p[0], p[1], p[2], sdf];
        if sdf > 0.0 {
            pos.push(row);
        } else {
            neg.push(row);
        }
    }
    SceneSamples::new(pos, neg).unwrap()
}

fn first_batch(data: &SceneDataset, epoch: u64) -> SceneBatch {
    data.epoch(epoch, 0).unwrap().next().unwrap().unwrap()
}

#[test]
fn loss_matches_a_plain_computation() {
    let cfg = tiny_config();
    let model = AutoDecoder::new(cfg.clone(), 3, 1, &Device::Cpu).unwrap();
    let scenes = vec![
        sphere(0.5, 200, 1),
        sphere(0.3, 200, 2),
        sphere(0.7, 200, 3),
    ];
    let data = SceneDataset::new(scenes, 2, 64, 9, Device::Cpu).unwrap();
    for epoch in [0u64, 49, 300] {
        let batch = first_batch(&data, epoch);
        let loss = model.loss(&batch, false).unwrap();
        // The same loss from the decoder's outputs, in f64, row by row.
        let ids = batch.scenes.to_vec1::<u32>().unwrap();
        let codes = model.codes().weight().to_vec2::<f32>().unwrap();
        let rows = batch.xyz.dim(0).unwrap();
        let per = rows / ids.len();
        let row_codes: Vec<f32> = (0..rows)
            .flat_map(|r| codes[ids[r / per] as usize].clone())
            .collect();
        let row_codes = Tensor::from_vec(row_codes, (rows, 4), &Device::Cpu).unwrap();
        let pred = model
            .decoder()
            .decode(&row_codes, &batch.xyz, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let target = batch.sdf.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let clamp = |v: f32| f64::from(v).clamp(-0.1, 0.1);
        let l1: f64 = pred
            .iter()
            .zip(&target)
            .map(|(&p, &t)| (clamp(p) - clamp(t)).abs())
            .sum::<f64>()
            / rows as f64;
        let norms: f64 = (0..rows)
            .map(|r| {
                codes[ids[r / per] as usize]
                    .iter()
                    .map(|&c| f64::from(c).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum();
        let ramp = ((epoch + 1) as f64 / 100.0).min(1.0);
        let reg = 1e-4 * ramp * norms / rows as f64;
        assert!(
            (loss.sdf - l1).abs() < 1e-6,
            "epoch {epoch}: {} vs {l1}",
            loss.sdf
        );
        assert!(
            (loss.regularization - reg).abs() < 1e-9,
            "epoch {epoch}: {} vs {reg}",
            loss.regularization
        );
        let total = loss.total.to_scalar::<f32>().unwrap() as f64;
        assert!((total - l1 - reg).abs() < 1e-6);
    }
}

#[test]
fn the_seed_decides_the_whole_initial_model() {
    let weights = |seed| {
        let model = AutoDecoder::new(tiny_config(), 2, seed, &Device::Cpu).unwrap();
        let data = model.vars().data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| data[n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(weights(3), weights(3));
    assert_ne!(weights(3), weights(4));
    // Weight norm starts with g = ‖v‖ per row, so the effective weight is v.
    let model = AutoDecoder::new(tiny_config(), 2, 3, &Device::Cpu).unwrap();
    let data = model.vars().data().lock().unwrap();
    let g = data["lin1.weight_g"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let v = data["lin1.weight_v"].to_vec2::<f32>().unwrap();
    for (g, row) in g.iter().zip(&v) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((g - norm).abs() < 1e-6);
        assert!(row.iter().all(|x| x.abs() <= 1.0 / 16f32.sqrt()));
    }
}

#[test]
fn dataset_batches_are_balanced_seeded_and_resumable() {
    let scenes = vec![
        sphere(0.5, 100, 1),
        sphere(0.3, 100, 2),
        sphere(0.7, 100, 3),
    ];
    let data = SceneDataset::new(scenes, 2, 10, 4, Device::Cpu).unwrap();
    // 3 scenes, 2 per batch: the incomplete last batch is dropped.
    assert_eq!(data.batches_per_epoch(), 1);
    let all: Vec<SceneBatch> = data.epoch(5, 0).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 1);
    let b = &all[0];
    assert_eq!(b.xyz.dims(), &[20, 3]);
    let sdf = b.sdf.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for scene in sdf.chunks(10) {
        assert!(scene[..5].iter().all(|&s| s > 0.0) && scene[5..].iter().all(|&s| s <= 0.0));
    }
    let again = first_batch(&data, 5);
    assert_eq!(
        again.xyz.to_vec2::<f32>().unwrap(),
        b.xyz.to_vec2::<f32>().unwrap()
    );
    assert_eq!(data.epoch(5, 1).unwrap().count(), 0);
    assert!(SceneDataset::new(vec![sphere(0.5, 50, 1)], 2, 10, 0, Device::Cpu).is_err());
}

/// Trains 2 spheres through the shared trainer, then reconstructs one and meshes it.
#[test]
fn trains_reconstructs_and_meshes_spheres() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config();
    cfg.samples_per_scene = 256;
    // A clamp wider than tanh's range keeps a start with every prediction beyond ±0.1 (no
    // gradient through the clamp) from stalling this tiny run whatever the seed.
    cfg.clamping_distance = 1.0;
    let specs = DeepSdfSpecs::from_json_str(
        r#"{"NetworkSpecs": {"dims": [16, 16, 16]}, "CodeLength": 4, "NumEpochs": 150,
            "SnapshotFrequency": 100, "SamplesPerScene": 256, "ScenesPerBatch": 2,
            "ClampingDistance": 0.1, "CodeBound": 1.0,
            "LearningRateSchedule": [
              {"Type": "Step", "Initial": 0.005, "Interval": 500, "Factor": 0.5},
              {"Type": "Step", "Initial": 0.01, "Interval": 500, "Factor": 0.5}]}"#,
    )
    .unwrap();
    let mut train = specs.to_train_config().unwrap();
    train.progress = false;
    let scenes = vec![sphere(0.6, 2000, 1), sphere(0.3, 2000, 2)];
    let data = SceneDataset::new(scenes, 2, 256, 0, Device::Cpu).unwrap();
    let model = AutoDecoder::new(cfg, 2, 0, &Device::Cpu).unwrap();
    let first = model.loss(&first_batch(&data, 0), false).unwrap().sdf;
    let mut trainer = Trainer::new(model, train, dir.path()).unwrap();
    let summary = trainer.run(&data).unwrap();
    assert_eq!(summary.steps, 150);
    let model = trainer.into_model();
    let last = model.loss(&first_batch(&data, 0), false).unwrap().sdf;
    assert!(last < first * 0.5, "L1 {first} -> {last}");
    let norms = model.codes().weight().sqr().unwrap().sum(1).unwrap();
    assert!(norms
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|&n| n <= 1.0 + 1e-5));

    // The checkpoint loads as a frozen decoder with its codes.
    let tensors = summary.checkpoint.join("model.safetensors");
    let trained = TrainedDecoder::load(tiny_config().decoder, &tensors, &Device::Cpu).unwrap();
    assert_eq!(trained.code(1).unwrap().dims(), &[4]);
    assert!(trained.code(2).is_err());
    let stored = candle_core::safetensors::load(&tensors, &Device::Cpu).unwrap();
    assert!(stored.contains_key(&format!("{DEEPSDF_LATENT_PREFIX}.weight")));
    assert!(stored.contains_key("lin0.weight_g"));

    let options = ReconstructOptions {
        iterations: 60,
        samples: 256,
        clamping_distance: 1.0,
        ..ReconstructOptions::default()
    };
    let fit = reconstruct_latent(&trained.decoder, &sphere(0.6, 2000, 7), &options).unwrap();
    assert_eq!(fit.losses.len(), 60);
    assert!(fit.losses[59] < fit.losses[0], "{:?}", fit.losses);

    // Grid order: x slowest, z fastest, spanning [-1, 1].
    let res = 5;
    let grid = decode_sdf_grid(&trained.decoder, &fit.latent, res, 7).unwrap();
    assert_eq!(grid.len(), 125);
    let at = |x: f32, y: f32, z: f32| {
        let xyz = Tensor::new(&[[x, y, z]], &Device::Cpu).unwrap();
        trained
            .decoder
            .decode(&fit.latent.unsqueeze(0).unwrap(), &xyz, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    };
    assert!((grid[(4 * 5 + 2) * 5 + 1] - at(1.0, 0.0, -0.5)).abs() < 1e-5);
    let mesh = decode_mesh(&trained.decoder, &fit.latent, 24, 4096).unwrap();
    assert!(!mesh.triangles.is_empty());
    assert!(decode_sdf_grid(
        &trained.decoder,
        &Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        4,
        8
    )
    .is_err());
}

fn write_samples(path: &Path, pos: &[[f32; 4]], neg: &[[f32; 4]]) {
    use vnr_formats::npz::{write_npz, NpyArray, NpyData};
    let arr = |rows: &[[f32; 4]]| {
        NpyArray::new(
            vec![rows.len(), 4],
            NpyData::F32(rows.iter().flatten().copied().collect()),
        )
        .unwrap()
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_npz(path, &[("pos", &arr(pos)), ("neg", &arr(neg))], false).unwrap();
}

#[test]
fn split_finds_nested_and_flat_samples_and_names_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [[0.0, 0.0, 0.9, 0.1]];
    let neg = [[0.0, 0.0, 0.0, -0.5]];
    write_samples(&dir.path().join("SdfSamples/ds/cls/a.npz"), &rows, &neg);
    write_samples(&dir.path().join("SdfSamples/b.npz"), &rows, &neg);
    let split = dir.path().join("split.json");
    std::fs::write(&split, r#"{"ds": {"cls": ["a", "b"]}}"#).unwrap();
    let scenes = split_samples(&split, dir.path()).unwrap();
    assert_eq!(scenes.len(), 2);
    assert!(scenes[0].1.ends_with("SdfSamples/ds/cls/a.npz"));
    assert!(scenes[1].1.ends_with("SdfSamples/b.npz"));
    std::fs::write(&split, r#"{"ds": {"cls": ["a", "missing"]}}"#).unwrap();
    let err = split_samples(&split, dir.path()).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
    std::fs::write(&split, r#"["a"]"#).unwrap();
    assert!(split_samples(&split, dir.path()).is_err());
}

#[test]
fn corrupt_samples_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.npz");
    std::fs::write(&garbage, b"not a zip").unwrap();
    let err = SceneSamples::read(&garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.npz"), "{err}");
    let no_neg = dir.path().join("no_neg.npz");
    write_samples(&no_neg, &[[0.0, 0.0, 0.9, 0.1]], &[]);
    let err = SceneSamples::read(&no_neg).unwrap_err();
    assert!(matches!(err, DeepSdfError::File { .. }), "{err}");
    assert!(err.to_string().contains("no_neg.npz"));
    let swapped = dir.path().join("swapped.npz");
    write_samples(&swapped, &[[0.0, 0.0, 0.0, -0.5]], &[[0.0, 0.0, 0.9, 0.1]]);
    let err = SceneSamples::read(&swapped).unwrap_err().to_string();
    assert!(err.contains("swapped.npz") && err.contains("pos"), "{err}");
}

/// `AdditionalSnapshots` (regression: they were ignored): snapshots after every
/// `SnapshotFrequency`-th epoch and after each listed epoch, as `train_deep_sdf.py` keeps them;
/// listed epochs that never come (0, beyond `NumEpochs`) or repeat the period change nothing.
#[test]
fn additional_snapshots_are_kept_beside_the_periodic_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pos = [[0.0, 0.0, 0.9, 0.1], [0.5, 0.5, 0.5, 0.3]];
    let neg = [[0.0, 0.0, 0.0, -0.5]];
    for name in ["a", "b", "c", "d"] {
        let path = dir.path().join(format!("samples/SdfSamples/{name}.npz"));
        write_samples(&path, &pos, &neg);
    }
    std::fs::write(
        dir.path().join("split.json"),
        r#"{"ds": {"cls": ["a", "b", "c", "d"]}}"#,
    )
    .unwrap();
    let specs = dir.path().join("specs.json");
    std::fs::write(
        &specs,
        r#"{"DataSource": "samples", "TrainSplit": "split.json",
            "NetworkSpecs": {"dims": [8, 8], "norm_layers": [0, 1], "latent_in": []},
            "CodeLength": 2, "NumEpochs": 6, "SnapshotFrequency": 4,
            "AdditionalSnapshots": [3, 1, 4, 9, 0, 3],
            "SamplesPerScene": 8, "ScenesPerBatch": 2, "ClampingDistance": 0.1,
            "LearningRateSchedule": [
              {"Type": "Constant", "Value": 0.001}, {"Type": "Constant", "Value": 0.001}]}"#,
    )
    .unwrap();
    let experiment = DeepSdfExperiment::load(&specs).unwrap();
    // Four scenes two at a time: two steps per epoch.
    assert_eq!(experiment.train.checkpoint_every, Some(8));
    assert_eq!(experiment.train.checkpoint_steps, vec![2, 6]);
    assert_eq!(
        snapshot_steps(&experiment.specs, 2),
        (8, vec![2, 6]),
        "the steps follow the batches per epoch"
    );

    let run = dir.path().join("run");
    let mut train = experiment.train.clone();
    train.progress = false;
    let data = experiment.dataset(0, &Device::Cpu).unwrap();
    let model = AutoDecoder::new(experiment.config.clone(), data.len(), 0, &Device::Cpu).unwrap();
    let summary = Trainer::new(model, train, &run)
        .unwrap()
        .run(&data)
        .unwrap();
    assert_eq!(summary.steps, 12);
    // Epochs 1 and 3 (additional), 4 (periodic) and 6 (the end of training).
    let steps: Vec<u64> = list_checkpoints(&run)
        .unwrap()
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    assert_eq!(steps, [2, 6, 8, 12]);
}

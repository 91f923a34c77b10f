//! RenderNet and ConvDeconv as trainer models on generated data: patch crops of the right
//! size, the losses the originals use, loss going down over a few steps, clear errors.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_formats::dataset::{Batch, ChunkedDataset, DatasetConfig, ValidationSplit};
use vnr_models::convdeconv::ConvDeconvConfig;
use vnr_models::convdeconv_train::{self, targets_chw, ConvDeconvModel};
use vnr_models::generated::{
    write_convdeconv, write_rendernet, ConvDeconvGenConfig, RenderNetGenConfig,
};
use vnr_models::rendernet::RenderNetConfig;
use vnr_models::rendernet_train::{self, RenderNetModel};
use vnr_train::{Model, TrainError, Trainer};

/// 8³ voxels → 16³ camera space → a 32×32 image (factor 2).
fn tiny_rendernet() -> RenderNetConfig {
    RenderNetConfig {
        voxel_size: 8,
        resampled_size: 16,
        conv3d_channels: [2, 4, 4],
        res3d_blocks: 1,
        projection_channels: 8,
        res2d_blocks: 1,
        conv5_channels: 8,
        res_mid_blocks: 1,
        conv6_channels: 8,
        deconv_channels: [8, 8, 4, 4, 4],
        deconv_strides: [2, 1, 2, 1, 1],
        ..RenderNetConfig::default()
    }
}

fn rendernet_data(dir: &std::path::Path, cfg: &RenderNetConfig) -> ChunkedDataset {
    let gen = RenderNetGenConfig {
        count: 6,
        views_per_shape: 2,
        samples_per_chunk: 3,
        seed: 2,
        ..RenderNetGenConfig::for_model(cfg)
    };
    write_rendernet(&gen, dir, |_| {}).unwrap();
    ChunkedDataset::open(
        dir,
        DatasetConfig {
            batch_size: 3,
            validation: ValidationSplit::Chunks(1),
            ..DatasetConfig::default()
        },
    )
    .unwrap()
}

fn first_batch(data: &ChunkedDataset) -> Batch {
    data.epoch(0).unwrap().next().unwrap().unwrap()
}

#[test]
fn rendernet_patch_crops_match_between_grid_and_image() {
    let cfg = tiny_rendernet();
    assert_eq!(cfg.output_size(), 32);
    let dir = tempfile::tempdir().unwrap();
    let data = rendernet_data(dir.path(), &cfg);
    let batch = first_batch(&data);
    let mut model = RenderNetModel::new(cfg.clone(), Some(8), 0, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let out = model.step(&batch, &mut rng).unwrap();
    assert!(out.loss.to_scalar::<f32>().unwrap().is_finite());
    // BCE summed over a 16×16 patch: at an untrained sigmoid(≈0) about 256·ln 2.
    let per_pixel = f64::from(out.loss.to_scalar::<f32>().unwrap()) / 256.0;
    assert!((0.3..1.5).contains(&per_pixel), "BCE per pixel {per_pixel}");
    model.set_training(false);
    let whole = model.step(&batch, &mut rng).unwrap();
    let per_pixel = f64::from(whole.loss.to_scalar::<f32>().unwrap()) / 1024.0;
    assert!((0.3..1.5).contains(&per_pixel), "BCE per pixel {per_pixel}");
    let poses = &batch.extra[0].1;
    let pred = model.predict(&batch.inputs, poses).unwrap();
    assert_eq!(pred.dims(), &[3, 1, 32, 32]);

    for bad in [Some(7), Some(18), Some(0)] {
        assert!(matches!(
            RenderNetModel::new(cfg.clone(), bad, 0, &Device::Cpu),
            Err(TrainError::Config(_))
        ));
    }
    let no_poses = Batch {
        extra: Vec::new(),
        ..batch
    };
    let err = model.step(&no_poses, &mut rng).unwrap_err();
    assert!(err.to_string().contains("poses"), "{err}");
}

#[test]
fn rendernet_loss_goes_down_on_generated_data() {
    let cfg = tiny_rendernet();
    let dir = tempfile::tempdir().unwrap();
    let data = rendernet_data(&dir.path().join("data"), &cfg);
    let mut model = RenderNetModel::new(cfg, Some(8), 5, &Device::Cpu).unwrap();
    // The held-out loss before training, on whole images as validation computes it.
    model.set_training(false);
    let batch = data.validation().unwrap().next().unwrap().unwrap();
    let first = model
        .step(&batch, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap();
    model.set_training(true);
    let mut train = rendernet_train::train_config(36, 3, 2e-3, 100).unwrap();
    train.progress = false;
    train.validate_every = Some(36);
    let mut trainer = Trainer::new(model, train, dir.path().join("run")).unwrap();
    let summary = trainer.run(&data).unwrap();
    let validation = summary.last_validation.unwrap();
    assert!(
        validation.loss < f64::from(first) * 0.9,
        "held-out loss {} from {first}",
        validation.loss
    );
    assert!(validation.metrics["psnr"].is_finite());
}

#[test]
fn convdeconv_trains_with_l1_on_voxelneuralrender_chunks() {
    let cfg = ConvDeconvConfig {
        input_size: 16,
        encoder_channels: vec![4, 8],
        decoder_channels: [8, 8],
        ..ConvDeconvConfig::default()
    };
    assert_eq!(cfg.output_size(), 32);
    let dir = tempfile::tempdir().unwrap();
    let gen = ConvDeconvGenConfig {
        count: 6,
        grid_size: 16,
        image_size: 32,
        samples_per_chunk: 3,
        seed: 4,
        ..ConvDeconvGenConfig::default()
    };
    write_convdeconv(&gen, dir.path().join("data"), |_| {}).unwrap();
    let data = ChunkedDataset::open(
        dir.path().join("data"),
        DatasetConfig {
            batch_size: 3,
            validation: ValidationSplit::Chunks(1),
            ..DatasetConfig::default()
        },
    )
    .unwrap();
    let model = ConvDeconvModel::new(cfg, 3, &Device::Cpu).unwrap();
    let batch = first_batch(&data);
    let target = targets_chw(&batch.targets, 32).unwrap();
    assert_eq!(target.dims(), &[3, 1, 32, 32]);
    let pred = model.predict(&batch.inputs).unwrap();
    let l1 = (pred - &target).unwrap().abs().unwrap().mean_all().unwrap();
    let out = model
        .step(&batch, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    assert_eq!(
        out.loss.to_scalar::<f32>().unwrap(),
        l1.to_scalar::<f32>().unwrap()
    );
    let wrong = Tensor::zeros((3, 16, 16, 1), DType::F32, &Device::Cpu).unwrap();
    assert!(targets_chw(&wrong, 32).is_err());

    let mut train = convdeconv_train::train_config(15, 3);
    train.progress = false;
    train.validate_every = Some(15);
    let mut trainer = Trainer::new(model, train, dir.path().join("run")).unwrap();
    let summary = trainer.run(&data).unwrap();
    let last = summary.last_loss.unwrap();
    assert!(
        last < f64::from(l1.to_scalar::<f32>().unwrap()),
        "L1 {last} after 15 steps"
    );
    assert!(summary.last_validation.unwrap().metrics["psnr"] > 5.0);
}

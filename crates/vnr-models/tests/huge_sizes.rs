//! Sizes from configs, files and parameters that used to overflow (a panic in debug builds, a
//! silent wrap in release), allocate without bound or abort: each is now an error, refused
//! before anything large is allocated.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vnr_models::convdeconv::{ConvDeconv, ConvDeconvConfig, ConvDeconvVersion};
use vnr_models::deepsdf::{DeepSdfConfig, DeepSdfDecoder, LatentCodes};
use vnr_models::deepsdf_training::{
    reconstruct_latent, AutoDecoderConfig, DeepSdfExperiment, ReconstructOptions, SceneDataset,
    SceneSamples,
};
use vnr_models::generated::{
    convdeconv_sample, rendernet_shape, rendernet_view, ConvDeconvGenConfig, RenderNetGenConfig,
};
use vnr_models::layers::{Conv, ConvTranspose, Crop, Padding, ParamSpec};
use vnr_models::nerf::NerfConfig;
use vnr_models::nerf_train::{NerfModel, NerfTrainConfig, PhotoLoss, RaySettings};
use vnr_models::rendernet::{RenderNet, RenderNetConfig};
use vnr_models::rendernet_train::{turntable, Experiment, RenderNetModel};
use vnr_models::shape_only_var_builder;

const HALF: usize = usize::MAX / 2 + 1;
const TERA: usize = 1 << 40;

fn shape_only() -> VarBuilder<'static> {
    shape_only_var_builder(DType::F32, &Device::Cpu)
}

fn varmap_builder(vars: &VarMap) -> VarBuilder<'_> {
    VarBuilder::from_varmap(vars, DType::F32, &Device::Cpu)
}

#[test]
fn deepsdf_huge_sizes_are_errors_not_overflows() {
    for latent_size in [usize::MAX, HALF, TERA] {
        let cfg = DeepSdfConfig {
            latent_size,
            ..DeepSdfConfig::narrow16()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("latent_size"), "{err}");
        assert!(cfg.linear_shapes().is_err());
        assert!(DeepSdfDecoder::new(cfg, shape_only()).is_err());
    }
    let wide = DeepSdfConfig {
        dims: vec![TERA; 2],
        ..DeepSdfConfig::narrow16()
    };
    assert!(wide.validate().is_err());
    // From a file: `CodeLength` u64::MAX used to overflow `latent_size + 3`.
    let text = r#"{"CodeLength": 18446744073709551615, "NetworkSpecs": {"dims": [8, 8]}}"#;
    let err = DeepSdfConfig::from_specs(text, "specs.json").unwrap_err();
    assert!(err.to_string().contains("CodeLength"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("specs.json");
    std::fs::write(&path, text).unwrap();
    assert!(DeepSdfConfig::from_specs_file(&path).is_err());
    assert!(DeepSdfConfig::from_file(&path).is_err());
}

#[test]
fn latent_code_tables_too_large_to_allocate_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for (num_codes, latent) in [(usize::MAX, 256), (HALF, 2), (TERA, 256), (1, usize::MAX)] {
        let vars = VarMap::new();
        let err = LatentCodes::new(
            num_codes,
            latent,
            1.0,
            None,
            &mut rng,
            varmap_builder(&vars),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("num_codes"), "{err}");
    }
}

#[test]
fn deepsdf_huge_samples_per_scene_is_an_error_from_specs_config_and_dataset() {
    let scenes = || {
        let pos = vec![[0.0, 0.0, 0.9, 0.1]];
        let neg = vec![[0.0, 0.0, 0.0, -0.5]];
        vec![SceneSamples::new(pos.clone(), neg.clone()).unwrap(); 2]
    };
    for samples in [usize::MAX, HALF, TERA, 0, 1] {
        let err = SceneDataset::new(scenes(), 2, samples, 0, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SamplesPerScene"), "{samples}: {err}");
        let cfg = AutoDecoderConfig {
            samples_per_scene: samples,
            ..AutoDecoderConfig::default()
        };
        assert!(cfg.validate().is_err(), "{samples}");
    }
    // A batch of many scenes × many samples is refused as a whole.
    assert!(SceneDataset::new(scenes(), 2, 1 << 22, 0, Device::Cpu).is_ok());
    let many: Vec<_> = (0..1024).flat_map(|_| scenes()).collect();
    assert!(SceneDataset::new(many, 2048, 1 << 22, 0, Device::Cpu).is_err());
    // From a specs file: `SamplesPerScene` u64::MAX used to overflow when an epoch was drawn.
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs.json");
    std::fs::write(
        &specs,
        r#"{"DataSource": "samples", "TrainSplit": "split.json",
            "NetworkSpecs": {"dims": [8, 8]}, "CodeLength": 2, "NumEpochs": 1,
            "SnapshotFrequency": 1, "SamplesPerScene": 18446744073709551615,
            "ScenesPerBatch": 2, "ClampingDistance": 0.1,
            "LearningRateSchedule": [
              {"Type": "Constant", "Value": 0.001}, {"Type": "Constant", "Value": 0.001}]}"#,
    )
    .unwrap();
    let err = DeepSdfExperiment::load(&specs).unwrap_err().to_string();
    assert!(err.contains("SamplesPerScene"), "{err}");
}

#[test]
fn reconstruct_latent_huge_iterations_or_samples_are_errors() {
    let cfg = DeepSdfConfig {
        latent_size: 2,
        dims: vec![4],
        dropout: vec![],
        norm_layers: vec![],
        latent_in: vec![],
        ..DeepSdfConfig::default()
    };
    let vars = VarMap::new();
    let decoder = DeepSdfDecoder::new(cfg, varmap_builder(&vars)).unwrap();
    let scene = SceneSamples::new(vec![[0.0, 0.0, 0.9, 0.1]], vec![[0.0; 4]]).unwrap();
    for (iterations, samples) in [
        (usize::MAX, 8),
        (HALF, 8),
        (TERA, 8),
        (1, usize::MAX),
        (1, HALF),
        (1, TERA),
    ] {
        let options = ReconstructOptions {
            iterations,
            samples,
            ..ReconstructOptions::default()
        };
        let err = reconstruct_latent(&decoder, &scene, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("iterations"), "{err}");
    }
}

#[test]
fn convdeconv_huge_config_sizes_are_errors_not_overflows() {
    let v002 = |cfg: ConvDeconvConfig| ConvDeconvConfig {
        version: ConvDeconvVersion::V002,
        ..cfg
    };
    let probes = [
        // k³ overflowed in output_size() and ConvDeconv::new.
        ConvDeconvConfig {
            input_size: 1 << 61,
            encoder_channels: vec![1],
            ..ConvDeconvConfig::small32()
        },
        // 2^60 from `vnr model summary --input-size`.
        ConvDeconvConfig {
            input_size: 1 << 60,
            ..ConvDeconvConfig::default()
        },
        // skip_channels · resolution overflowed.
        v002(ConvDeconvConfig {
            skip_channels: usize::MAX,
            ..ConvDeconvConfig::small64()
        }),
        v002(ConvDeconvConfig {
            skip_channels: HALF,
            ..ConvDeconvConfig::small64()
        }),
        // cin · k³ overflowed.
        ConvDeconvConfig {
            encoder_channels: vec![HALF, HALF, 8],
            ..ConvDeconvConfig::small32()
        },
        // 4.4 TB of weights.
        ConvDeconvConfig {
            encoder_channels: vec![1 << 20, 1 << 20, 8],
            ..ConvDeconvConfig::small32()
        },
        ConvDeconvConfig {
            decoder_channels: [usize::MAX, 1],
            ..ConvDeconvConfig::small32()
        },
        // An image side over the cap (k = 32, M = 32768).
        ConvDeconvConfig {
            input_size: 4096,
            encoder_channels: vec![1, 1],
            ..ConvDeconvConfig::small32()
        },
    ];
    for cfg in probes {
        // Saturating, never panicking, before validation.
        let _ = cfg.output_size();
        assert!(cfg.validate().is_err(), "{cfg:?}");
        assert!(ConvDeconv::new(cfg, shape_only()).is_err());
    }
    // Channels under the cap whose weights are still too large are refused by the layer.
    let wide = ConvDeconvConfig {
        encoder_channels: vec![1 << 16, 1 << 16, 8],
        ..ConvDeconvConfig::small32()
    };
    wide.validate().unwrap();
    let err = ConvDeconv::new(wide, shape_only()).unwrap_err().to_string();
    assert!(err.contains("weight"), "{err}");
    for name in [
        "v001",
        "v002",
        "small32",
        "small32-wide-v002",
        "small64-v002",
    ] {
        ConvDeconvConfig::preset(name).unwrap().validate().unwrap();
    }
}

#[test]
fn rendernet_huge_config_sizes_are_errors_not_overflows() {
    let small = RenderNetConfig::small;
    let probes = [
        // output_size() overflowed (also from RenderNetModel::new and for_model).
        RenderNetConfig {
            deconv_strides: [1 << 20; 5],
            ..small()
        },
        // projection_depth() · c3 overflowed.
        RenderNetConfig {
            resampled_size: usize::MAX,
            ..small()
        },
        RenderNetConfig {
            resampled_size: TERA,
            ..small()
        },
        // 2^60 from `vnr model summary --input-size`.
        RenderNetConfig {
            voxel_size: 1 << 60,
            resampled_size: 1 << 61,
            ..small()
        },
        // Kernel fan-ins overflowed.
        RenderNetConfig {
            conv3d_channels: [usize::MAX; 3],
            ..small()
        },
        RenderNetConfig {
            conv3d_channels: [HALF; 3],
            ..small()
        },
        // Block loops without bound.
        RenderNetConfig {
            res3d_blocks: usize::MAX,
            ..small()
        },
        RenderNetConfig {
            res2d_blocks: usize::MAX,
            ..small()
        },
        RenderNetConfig {
            res_mid_blocks: TERA,
            ..small()
        },
    ];
    for cfg in probes {
        let _ = cfg.output_size();
        assert!(cfg.validate().is_err(), "{cfg:?}");
        assert!(RenderNet::new(cfg.clone(), shape_only()).is_err());
        assert!(RenderNetModel::new(cfg.clone(), Some(2), 0, &Device::Cpu).is_err());
        let _ = RenderNetGenConfig::for_model(&cfg);
    }
    let strided = RenderNetConfig {
        deconv_strides: [1 << 20; 5],
        ..small()
    };
    assert!(RenderNetGenConfig::for_model(&strided).validate().is_err());
    for name in ["rendernet", "rendernet-rgb", "rendernet-small"] {
        RenderNetConfig::preset(name).unwrap().validate().unwrap();
    }
}

#[test]
fn nerf_huge_sizes_and_unusable_ray_settings_are_errors() {
    for (n_harmonic_functions, n_hidden_neurons) in [
        (usize::MAX, 8),
        (HALF, 8),
        (TERA, 8),
        (4, usize::MAX),
        (4, HALF),
        (4, 1 << 20),
    ] {
        let cfg = NerfConfig {
            n_harmonic_functions,
            n_hidden_neurons,
            ..NerfConfig::small()
        };
        assert!(cfg.validate().is_err(), "{cfg:?}");
        let train = NerfTrainConfig {
            model: cfg,
            ..NerfTrainConfig::default()
        };
        assert!(train.validate().is_err());
    }
    NerfConfig::default().validate().unwrap();
    let builds = |rays: RaySettings| {
        NerfModel::new(NerfConfig::small(), rays, PhotoLoss::Mse, 0.0, 0).is_ok()
    };
    for rays in [
        // render_eval divided by zero.
        RaySettings {
            chunk_rays: 0,
            ..RaySettings::default()
        },
        // render_train underflowed `p − 1`.
        RaySettings {
            samples_per_ray: 0,
            ..RaySettings::default()
        },
        RaySettings {
            samples_per_ray: 1,
            ..RaySettings::default()
        },
        // Capacity overflow, or an aborted allocation.
        RaySettings {
            samples_per_ray: usize::MAX,
            ..RaySettings::default()
        },
        RaySettings {
            samples_per_ray: TERA,
            ..RaySettings::default()
        },
    ] {
        assert!(rays.validate().is_err(), "{rays:?}");
        let train = NerfTrainConfig {
            rays: rays.clone(),
            ..NerfTrainConfig::default()
        };
        assert!(train.validate().is_err());
        assert!(!builds(rays));
    }
    assert!(builds(RaySettings::default()));
}

#[test]
fn generated_huge_indices_are_errors_not_wrapped_streams() {
    let rendernet = RenderNetGenConfig {
        voxel_size: 4,
        resampled_size: 8,
        image_size: 4,
        ..RenderNetGenConfig::default()
    };
    let (_, sdf, _) = rendernet_shape(&rendernet, 0).unwrap();
    let convdeconv = ConvDeconvGenConfig {
        grid_size: 4,
        image_size: 4,
        ..ConvDeconvGenConfig::default()
    };
    for index in [usize::MAX, HALF] {
        assert!(rendernet_shape(&rendernet, index).is_err());
        assert!(rendernet_view(&rendernet, &sdf, index).is_err());
        assert!(convdeconv_sample(&convdeconv, index).is_err());
    }
    // The largest index whose stream `2·index + 1` fits in u64 still works.
    assert!(rendernet_view(&rendernet, &sdf, HALF - 1).is_ok());
    // `poses.chunks(3 · samples_per_chunk)` overflowed for `--chunk 9223372036854775807`.
    for samples_per_chunk in [usize::MAX / 2, usize::MAX, TERA] {
        let cfg = RenderNetGenConfig {
            samples_per_chunk,
            ..rendernet.clone()
        };
        assert!(cfg.validate().is_err());
        let cfg = ConvDeconvGenConfig {
            samples_per_chunk,
            ..convdeconv.clone()
        };
        assert!(cfg.validate().is_err());
    }
}

#[test]
fn experiment_gen_config_and_turntable_refuse_huge_counts() {
    let experiment = Experiment {
        shapes: usize::MAX,
        views_per_shape: 2,
        ..Experiment::default()
    };
    assert!(experiment.gen_config().is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(experiment.generate(dir.path(), |_| {}).is_err());

    let model_cfg = RenderNetConfig {
        voxel_size: 4,
        resampled_size: 8,
        conv3d_channels: [1, 1, 1],
        res3d_blocks: 0,
        projection_channels: 1,
        res2d_blocks: 0,
        conv5_channels: 1,
        res_mid_blocks: 0,
        conv6_channels: 1,
        deconv_channels: [1; 5],
        deconv_strides: [1; 5],
        ..RenderNetConfig::default()
    };
    let model = RenderNetModel::new(model_cfg.clone(), None, 0, &Device::Cpu).unwrap();
    let gen = RenderNetGenConfig::for_model(&model_cfg);
    for frames in [usize::MAX, TERA, 3601] {
        assert!(turntable(&model, &gen, 0, frames, 105.0, 3.5).is_err());
    }
}

#[test]
fn layer_shape_arithmetic_overflows_are_errors() {
    let vb = shape_only();
    let spec = ParamSpec::torch(1);
    // The weight `[O, C, k…]` is checked before the VarBuilder allocates it.
    for (cin, cout) in [(usize::MAX, 1), (1, usize::MAX), (HALF, 4), (TERA, TERA)] {
        assert!(Conv::new(
            cin,
            cout,
            &[3, 3],
            &[1, 1],
            Padding::TfSame,
            spec,
            vb.pp("c")
        )
        .is_err());
        assert!(ConvTranspose::new(
            cin,
            cout,
            &[3, 3],
            &[1, 1],
            Crop::Symmetric(0),
            spec,
            vb.pp("t")
        )
        .is_err());
    }
    // Explicit padding of usize::MAX overflowed `input + before + after`.
    let padded = Conv::new(
        1,
        1,
        &[3, 3],
        &[1, 1],
        Padding::Explicit([[usize::MAX; 2]; 3]),
        spec,
        vb.pp("p"),
    )
    .unwrap();
    assert!(padded.output_dims(&[1, 1, 8, 8]).is_err());
    let same = Conv::new(1, 1, &[3, 3], &[1, 1], Padding::TfSame, spec, vb.pp("s")).unwrap();
    assert!(same.output_dims(&[1, 1, usize::MAX, 8]).is_err());
    // A stride of usize::MAX overflowed `(in − 1)·stride + kernel`, in both crops.
    for crop in [Crop::Symmetric(0), Crop::TfSame] {
        let t =
            ConvTranspose::new(1, 1, &[2, 2], &[usize::MAX, 1], crop, spec, vb.pp("u")).unwrap();
        assert!(t.output_dims(&[1, 1, 4, 4]).is_err(), "{crop:?}");
        let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(t.forward(&x).is_err(), "{crop:?}");
    }
    // `2 · crop` overflowed; a crop that large leaves nothing.
    let cropped = ConvTranspose::new(
        1,
        1,
        &[2, 2],
        &[1, 1],
        Crop::Symmetric(usize::MAX),
        spec,
        vb.pp("v"),
    )
    .unwrap();
    assert!(cropped.output_dims(&[1, 1, 4, 4]).is_err());
    assert!(vnr_models::layers::folded_dims(&[1, usize::MAX, 2, 2, 2], 2).is_err());
}

//! The original projects' config files: the real fixtures (SKIPPED when absent) and inline
//! samples that always run.

use vnr_formats::testing::fixture;
use vnr_train::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use vnr_train::originals::{
    DeepSdfSchedule, DeepSdfSpecs, RenderNetConfig, RenderNetReconstructionConfig,
};
use vnr_train::schedule::{LrSchedule, ScheduleUnit};

#[test]
fn rendernet_fixture_configs() {
    let Some(path) = fixture("rendernet/config_RenderNet.json") else {
        return;
    };
    let c = RenderNetConfig::load(&path).unwrap();
    assert_eq!(c.is_greyscale, Some(true), "\"True\" is a Python boolean");
    assert_eq!(
        (c.batch_size, c.max_epochs, c.decay_steps),
        (1, 1000, 100_000)
    );
    assert_eq!((c.e_eta, c.keep_prob, c.threshold), (1e-5, 1.0, 0.1));
    assert_eq!(
        (c.gpu, c.batches_chunk, c.checkpoint_secs),
        (Some(0), Some(1), Some(7200))
    );
    assert_eq!(c.trained_model_name.as_deref(), Some("3d2d_renderer"));
    assert_eq!(
        c.model_path.as_deref(),
        Some("./data/ShapeNet64_Chair_binvox_2_centered")
    );
    assert!(c.unknown_fields().is_empty(), "{:?}", c.unknown_fields());
    let t = c.to_train_config().unwrap();
    assert_eq!((t.epochs, t.steps, t.batch_size), (Some(1000), None, 1));
    assert_eq!(
        t.optimizer,
        OptimizerConfig::Adam(AdamConfig {
            beta1: 0.5,
            ..AdamConfig::default()
        })
    );
    assert_eq!(t.schedule_unit, ScheduleUnit::Step);
    let schedule = &t.groups[0].schedule;
    assert_eq!(schedule.lr_at(99_999), 1e-5);
    assert_eq!(schedule.lr_at(100_000), 1e-5 * 0.96);

    let Some(path) = fixture("rendernet/config_RenderNet_texture.json") else {
        return;
    };
    let c = RenderNetConfig::load(&path).unwrap();
    assert_eq!(c.is_greyscale, None);
    assert_eq!(c.max_epochs, 2000);
    assert_eq!(c.normal_path.as_deref(), Some("./data/Face_Normal_all"));
    assert_eq!(c.texture_path.as_deref(), Some("./data/baselFace_beta_all"));
    assert!(c.unknown_fields().is_empty());
    assert_eq!(c.to_train_config().unwrap().epochs, Some(2000));
}

#[test]
fn rendernet_reconstruction_fixture_config() {
    let Some(path) = fixture("rendernet/config_reconstruction_RenderNet.json") else {
        return;
    };
    let c = RenderNetReconstructionConfig::load(&path).unwrap();
    assert_eq!(
        (c.batch_size, c.z_dim, c.inner_step, c.max_epochs),
        (5, 200, 200, 10)
    );
    assert_eq!(
        (c.shape_eta, c.pose_eta, c.tex_eta, c.light_eta),
        (0.8, 0.01, 0.8, 0.4)
    );
    assert_eq!(
        (c.target_azimuth_light, c.target_elevation_light),
        (Some(294.0), Some(105.0))
    );
    assert_eq!(c.decay_steps, Some(90_000));
    assert_eq!(
        c.weight_dir_decoder.as_deref(),
        Some("./data/3DAE_FACE_PretrainedWeights")
    );
    assert!(c.unknown_fields().is_empty());
    let t = c.to_train_config().unwrap();
    assert_eq!(t.optimizer, OptimizerConfig::Sgd(SgdConfig::default()));
    let groups: Vec<(&str, &str, f64)> = t
        .groups
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                g.params[0].as_str(),
                g.schedule.lr_at(1000),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("shape", "initial_vector", 0.8),
            ("pose", "initial_param", 0.01),
            ("texture", "initial_texture", 0.8),
            ("light", "initial_light", 0.4)
        ]
    );
}

#[test]
fn deepsdf_fixture_specs() {
    for (file, epochs, snapshot, samples, threads, batch_split) in [
        ("deepsdf/chairs-specs.json", 2001, 1000, 16384, 16, 1),
        ("deepsdf/neorender-specs.json", 2000, 10, 8192, 1, 8),
    ] {
        let Some(path) = fixture(file) else {
            return;
        };
        let s = DeepSdfSpecs::load(&path).unwrap();
        assert_eq!(s.code_length, 256, "{file}");
        assert_eq!(s.num_epochs, epochs);
        assert_eq!(s.snapshot_frequency, snapshot);
        assert_eq!(s.additional_snapshots, [100, 500]);
        assert_eq!((s.samples_per_scene, s.scenes_per_batch), (samples, 64));
        assert_eq!(s.data_loader_threads, Some(threads));
        assert_eq!(s.batch_split, batch_split);
        assert_eq!(s.clamping_distance, 0.1);
        assert!(s.code_regularization);
        assert_eq!(
            (s.code_regularization_lambda, s.code_bound),
            (1e-4, Some(1.0))
        );
        let n = &s.network_specs;
        assert_eq!(n.dims, [512; 8]);
        assert_eq!(n.dropout.as_deref(), Some(&[0, 1, 2, 3, 4, 5, 6, 7][..]));
        assert_eq!((n.dropout_prob, n.latent_in.as_slice()), (0.2, &[4][..]));
        assert_eq!(n.norm_layers, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(n.xyz_in_all, Some(false));
        assert!(n.weight_norm && !n.use_tanh && !n.latent_dropout);
        assert_eq!(
            s.learning_rate_schedule[1],
            DeepSdfSchedule::Step {
                initial: 0.001,
                interval: 500,
                factor: 0.5
            }
        );
        assert!(s.unknown_fields().is_empty(), "{:?}", s.unknown_fields());
        let t = s.to_train_config().unwrap();
        assert_eq!((t.epochs, t.batch_size), (Some(epochs), 64));
        assert_eq!(t.schedule_unit, ScheduleUnit::Epoch);
        assert_eq!(t.groups[0].schedule.lr_at(499), 0.0005);
        assert_eq!(t.groups[0].schedule.lr_at(500), 0.00025);
        assert_eq!(t.groups[1].params, ["lat_vecs"]);
    }
    let Some(path) = fixture("deepsdf/chairs-specs.json") else {
        return;
    };
    let s = DeepSdfSpecs::load(path).unwrap();
    assert_eq!(s.description.len(), 2);
    assert_eq!(s.network_arch.as_deref(), Some("deep_sdf_decoder"));
    assert_eq!(
        s.train_split.as_deref(),
        Some("examples/splits/sv2_chairs_train.json")
    );
}

#[test]
fn unknown_fields_are_kept_and_reported() {
    let recon = r#"{"batch_size": 2, "z_dim": 8, "inner_step": 3, "max_epochs": 1,
        "threshold": 0.1, "shape_eta": 0.1, "pose_eta": 0.1, "tex_eta": 0.1, "light_eta": 0.1,
        "keep_prob": 1.0, "MSE_weight": 0.5}"#;
    let c = RenderNetReconstructionConfig::from_json_str(recon).unwrap();
    assert_eq!(c.unknown_fields(), ["MSE_weight"]);
    assert_eq!(c.unknown["MSE_weight"], 0.5);

    let specs = r#"{
        "Description": "one line",
        "NetworkSpecs": {"dims": [64, 64], "weight_norm": false, "fancy": 3},
        "CodeLength": 16, "NumEpochs": 10, "SnapshotFrequency": 5,
        "LearningRateSchedule": [
            {"Type": "Warmup", "Initial": 0.0, "Final": 0.001, "Length": 4},
            {"Type": "Constant", "Value": 0.01}],
        "SamplesPerScene": 100, "ScenesPerBatch": 2, "ClampingDistance": 0.05,
        "GradientClipNorm": 2.0, "NewThing": [1, 2]
    }"#;
    let s = DeepSdfSpecs::from_json_str(specs).unwrap();
    assert_eq!(s.description, ["one line"]);
    assert_eq!(s.unknown_fields(), ["NewThing", "NetworkSpecs.fancy"]);
    assert!(s.code_regularization, "DeepSDF's default");
    assert_eq!((s.code_init_std_dev, s.batch_split), (1.0, 1));
    let t = s.to_train_config().unwrap();
    assert_eq!(t.clip_grad_norm, Some(2.0));
    assert_eq!(t.groups[0].schedule.lr_at(2), 0.0005);
    assert_eq!(t.groups[0].schedule.lr_at(9), 0.001);
    assert_eq!(t.groups[1].schedule, LrSchedule::Constant { lr: 0.01 });
}

#[test]
fn malformed_original_configs_name_the_problem() {
    let base = r#""batch_size": 1, "max_epochs": 1, "threshold": 0.1, "e_eta": 1e-5,
        "keep_prob": 1.0, "decay_steps": 10"#;
    let bad_bool = format!("{{{base}, \"is_greyscale\": \"maybe\"}}");
    let err = RenderNetConfig::from_json_str(&bad_bool).unwrap_err();
    assert!(err.to_string().contains("maybe"), "{err}");
    let ok = RenderNetConfig::from_json_str(&format!("{{{base}, \"is_greyscale\": \"false\"}}"));
    assert_eq!(ok.unwrap().is_greyscale, Some(false));
    let missing = RenderNetConfig::from_json_str(r#"{"batch_size": 1}"#).unwrap_err();
    assert!(missing.to_string().contains("max_epochs"), "{missing}");
    let zero_decay = base.replace("\"decay_steps\": 10", "\"decay_steps\": 0");
    let zero_decay = RenderNetConfig::from_json_str(&format!("{{{zero_decay}}}")).unwrap();
    assert!(
        zero_decay.to_train_config().is_err(),
        "decay_steps 0 cannot convert"
    );
    let one_schedule = r#"{"NetworkSpecs": {"dims": [8]}, "CodeLength": 4, "NumEpochs": 1,
        "SnapshotFrequency": 1, "LearningRateSchedule": [{"Type": "Constant", "Value": 0.1}],
        "SamplesPerScene": 1, "ScenesPerBatch": 1, "ClampingDistance": 0.1}"#;
    let s = DeepSdfSpecs::from_json_str(one_schedule).unwrap();
    assert!(
        s.to_train_config().is_err(),
        "DeepSDF needs decoder and latent schedules"
    );
    let unknown_type =
        one_schedule.replace("Constant\", \"Value\": 0.1", "Cosine\", \"Value\": 0.1");
    assert!(DeepSdfSpecs::from_json_str(&unknown_type).is_err());
}

//! `vnr model summary`: presets, config files, input sizes and errors, through the command's
//! own module (so the test does not depend on how `main` wires the subcommand).

#[path = "../src/model.rs"]
mod model;

use std::path::PathBuf;

use model::{summarize, SummaryArgs};

fn args(name: &str, config: Option<PathBuf>, input_size: Option<Vec<usize>>) -> SummaryArgs {
    SummaryArgs {
        name: name.to_string(),
        config,
        input_size,
    }
}

#[test]
fn convdeconv_reference_summary_prints_like_torchinfo() {
    let s = summarize(&args("convdeconv", None, None)).expect("summary");
    let text = s.to_string();
    assert!(text.contains("Total params: 48,271,745"), "{text}");
    assert!(text.contains("Trainable params: 48,271,745"));
    assert!(text.contains("Non-trainable params: 0"));
    assert!(text.contains("├─Conv3d: conv3d_s2_4"));
    assert!(text.contains("[1, 1024, 16, 16, 16]"));
    assert!(text.contains("33,555,456"));
    assert!(text
        .lines()
        .nth(3)
        .expect("model row")
        .starts_with("ConvDeconv"));
    assert!(text.contains("[1, 1, 256, 256]"));
}

#[test]
fn every_preset_summarises() {
    for (name, output) in [
        ("convdeconv-v002", vec![1, 1, 256, 256]),
        ("convdeconv-small32", vec![1, 1, 32, 32]),
        ("convdeconv-small32-wide-v002", vec![1, 1, 32, 32]),
        ("convdeconv-small64-v002", vec![1, 1, 256, 256]),
        ("rendernet", vec![1, 1, 512, 512]),
        ("rendernet-rgb", vec![1, 3, 512, 512]),
        ("rendernet-small", vec![1, 1, 128, 128]),
        ("deepsdf", vec![1, 1]),
        ("deepsdf-narrow16", vec![1, 1]),
        ("deepsdf-narrow32", vec![1, 1]),
    ] {
        let s = summarize(&args(name, None, None)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(s.output_shape, output, "{name}");
    }
    let deepsdf = summarize(&args("deepsdf", None, None)).expect("deepsdf");
    assert_eq!(deepsdf.total_params(), 1_843_195);
}

#[test]
fn input_size_sets_batch_and_grid() {
    let s = summarize(&args("convdeconv", None, Some(vec![5, 1, 64, 64, 64])))
        .expect("64³ with 4 scales");
    assert_eq!(s.input_shape, [5, 1, 64, 64, 64]);
    assert_eq!(s.output_shape, [5, 1, 32, 32]);
    let s = summarize(&args("deepsdf", None, Some(vec![16384, 259]))).expect("rows");
    assert_eq!(s.output_shape, [16384, 1]);
    let s =
        summarize(&args("rendernet-small", None, Some(vec![2, 1, 16, 16, 16]))).expect("voxels");
    assert_eq!(s.layers[0].output_shape, [2, 1, 32, 32, 32]);
    assert!(summarize(&args("deepsdf", None, Some(vec![10, 100]))).is_err());
    assert!(summarize(&args("convdeconv", None, Some(vec![1, 1, 32, 32, 32]))).is_err());
    assert!(summarize(&args("rendernet", None, Some(vec![1, 64]))).is_err());
}

#[test]
fn config_files_replace_the_preset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let convdeconv = dir.path().join("cd.json");
    std::fs::write(
        &convdeconv,
        r#"{"input_size": 32, "encoder_channels": [4, 8, 16], "decoder_channels": [8, 8]}"#,
    )
    .expect("write");
    let s = summarize(&args("convdeconv", Some(convdeconv), None)).expect("convdeconv config");
    assert_eq!(s.output_shape, [1, 1, 32, 32]);
    let specs = dir.path().join("specs.json");
    std::fs::write(&specs, r#"{"CodeLength": 8, "NetworkSpecs": {"dims": [32, 32, 32], "latent_in": [2], "weight_norm": true, "norm_layers": [0, 1, 2]}}"#)
        .expect("write");
    let s = summarize(&args("deepsdf", Some(specs), None)).expect("specs");
    assert_eq!(s.input_shape, [1, 11]);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").expect("write");
    let err = format!(
        "{:#}",
        summarize(&args("rendernet", Some(bad.clone()), None)).expect_err("bad config")
    );
    assert!(err.contains("bad.json"), "{err}");
    assert!(summarize(&args(
        "convdeconv",
        Some(dir.path().join("missing.json")),
        None
    ))
    .is_err());
}

#[test]
fn fixture_configs_are_accepted() {
    if let Some(path) = vnr_formats::testing::fixture("rendernet/config_RenderNet.json") {
        let s = summarize(&args("rendernet", Some(path), None)).expect("original RenderNet config");
        assert_eq!(s.output_shape, [1, 1, 512, 512]);
    }
    if let Some(path) = vnr_formats::testing::fixture("deepsdf/chairs-specs.json") {
        let s = summarize(&args("deepsdf", Some(path), None)).expect("specs");
        assert_eq!(s.total_params(), 1_843_195);
    }
}

#[test]
fn unknown_models_list_the_known_ones() {
    let err = summarize(&args("nerf", None, None))
        .expect_err("unknown")
        .to_string();
    assert!(
        err.contains("convdeconv") && err.contains("deepsdf-narrow32"),
        "{err}"
    );
    assert!(summarize(&args("convdeconv-huge", None, None)).is_err());
}

/// The subcommand as `main` wires it: `Command::Model(model::ModelArgs)`.
#[derive(Debug, clap::Parser)]
struct TestCli {
    #[command(subcommand)]
    command: TestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TestCommand {
    Model(model::ModelArgs),
}

#[test]
fn command_line_parses_and_runs() {
    use clap::Parser;
    let cli = TestCli::try_parse_from([
        "vnr",
        "model",
        "summary",
        "convdeconv-small32",
        "--input-size",
        "2,1,32,32,32",
    ])
    .expect("parse");
    let TestCommand::Model(model_args) = cli.command;
    let model::ModelCommand::Summary(summary) = &model_args.command;
    assert_eq!(summary.name, "convdeconv-small32");
    assert_eq!(summary.input_size.as_deref(), Some(&[2, 1, 32, 32, 32][..]));
    model::run(&model_args).expect("run prints the summary");
    let spaced = TestCli::try_parse_from([
        "vnr",
        "model",
        "summary",
        "deepsdf",
        "--input-size",
        "8",
        "259",
    ])
    .expect("parse");
    let TestCommand::Model(model_args) = spaced.command;
    model::run(&model_args).expect("run");
    assert!(
        TestCli::try_parse_from(["vnr", "model", "summary"]).is_err(),
        "NAME is required"
    );
}

#[test]
fn huge_input_sizes_exit_2_without_panicking() {
    let max = usize::MAX.to_string();
    let size = format!("1,1,{max},{max},{max}");
    let run = crate::support::vnr(&["model", "summary", "rendernet", "--input-size", &size]);
    let err = crate::support::stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("--input-size"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

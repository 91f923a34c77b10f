//! `vnr train deepsdf SPECS.json`: DeepSDF's auto-decoder training from its `specs.json`, read
//! as it is (see `vnr_models::deepsdf_training`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use vnr_formats::atomic::write_atomically;
use vnr_models::deepsdf_training::{AutoDecoder, DeepSdfExperiment, SPECS_FILE};
use vnr_train::Trainer;

/// Name of the file listing the training scenes in code order (code `i` is line `i`).
pub const SCENES_FILE: &str = "scenes.json";

/// Arguments of `vnr train deepsdf`.
#[derive(Debug, clap::Args)]
pub struct TrainDeepSdfArgs {
    /// DeepSDF's `specs.json`. `DataSource` and `TrainSplit` are read from the working
    /// directory, or else next to the specs.
    pub specs: PathBuf,
    /// Run directory for checkpoints, `log.jsonl` and `loss.png` (default: the specs' folder,
    /// DeepSDF's experiment directory). A copy of the specs and `scenes.json` go there too.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the newest checkpoint of the run directory.
    #[arg(long)]
    pub resume: bool,
    /// Train this many epochs instead of `NumEpochs`.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Seed of the codes, the batch order, the sample draws and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: crate::device::DeviceOpt,
}

/// Runs `vnr train deepsdf`.
pub fn run(args: &TrainDeepSdfArgs) -> Result<()> {
    let device = args.device.open()?;
    let experiment = DeepSdfExperiment::load(&args.specs)
        .with_context(|| format!("reading the experiment {}", args.specs.display()))?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => args
            .specs
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_owned()
                }
            })
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let specs_copy = out.join(SPECS_FILE);
    let same = specs_copy
        .canonicalize()
        .ok()
        .zip(args.specs.canonicalize().ok())
        .is_some_and(|(a, b)| a == b);
    if !same {
        let text = std::fs::read(&args.specs)
            .with_context(|| format!("reading {}", args.specs.display()))?;
        write_atomically(&specs_copy, |w| w.write_all(&text))
            .with_context(|| format!("writing {}", specs_copy.display()))?;
    }
    let names: Vec<&str> = experiment.scenes.iter().map(|(n, _)| n.as_str()).collect();
    let scenes_path = out.join(SCENES_FILE);
    write_atomically(&scenes_path, |w| {
        serde_json::to_writer_pretty(&mut *w, &names).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
    .with_context(|| format!("writing {}", scenes_path.display()))?;

    let mut train = experiment.train.clone();
    if let Some(epochs) = args.epochs {
        train.epochs = Some(epochs);
    }
    train.seed = args.seed;
    train.progress = !args.quiet;
    let data = experiment
        .dataset(args.seed, &device)
        .context("loading the training samples")?;
    eprintln!(
        "{} scenes, {} batches of {} scenes x {} samples per epoch",
        data.len(),
        data.batches_per_epoch(),
        experiment.config.scenes_per_batch,
        experiment.config.samples_per_scene
    );
    let model = AutoDecoder::new(experiment.config.clone(), data.len(), args.seed, &device)
        .context("building the auto-decoder")?;
    let mut trainer = Trainer::new(model, train, &out)?;
    if args.resume {
        match trainer.resume_latest()? {
            Some(step) => eprintln!("resumed from step {step}"),
            None => eprintln!("no checkpoint in {}: starting afresh", out.display()),
        }
    }
    let summary = trainer.run(&data).context("training")?;
    println!(
        "epochs: {}\nsteps: {}\nlast loss: {}\ncheckpoint: {}",
        summary.epoch,
        summary.steps,
        summary
            .last_loss
            .map_or_else(|| "n/a".to_owned(), |l| format!("{l:.6e}")),
        summary.checkpoint.display()
    );
    Ok(())
}

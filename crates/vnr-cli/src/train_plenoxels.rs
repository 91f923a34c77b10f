//! `vnr train plenoxels CONFIG`: fit a Plenoxel grid to a posed multi-view dataset and export
//! it as an svox2 `ckpt.npz`.
//!
//! CONFIG is TOML (`.toml`) or JSON (`.json`); every key is optional and paths are relative to
//! the config file:
//!
//! ```toml
//! data = "scene"         # NeRF-synthetic directory, or a nerfstudio transforms.json (or its directory)
//! format = "auto"        # auto | blender | nerfstudio
//! out = "plenoxels_run"  # run directory: ckpt.npz, log.jsonl, config.json
//! seed = 0
//! eval_split = "test"    # held-out split: test | val
//! eval_every = 500       # held-out PSNR every this many steps (0: at the end only)
//! eval_views = 4         # frames used by the periodic evaluations (0: all); the last uses all
//! progress = true
//!
//! [optimize]             # vnr_render::plenoxels::OptimizeConfig; defaults: OptimizeConfig::cpu_128()
//! steps = 3000
//! resolutions = [[64, 64, 64], [128, 128, 128]]
//! lr_density = { initial = 30.0, last = 0.05, delay_steps = 300, delay_mult = 0.01, decay_steps = 6000 }
//! render = { background_brightness = 1.0 }
//! ```
//!
//! The `[optimize]` table overrides the CPU preset key by key (nested tables too), so a config
//! names only what it changes. Frames are composited on `optimize.render.background_brightness`
//! (grey), the background the grid renders with. `log.jsonl` holds one `train` record per step
//! (MSE loss, batch PSNR, learning rates) and one `validation` record per evaluation (held-out
//! PSNR, SSIM at the end).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vnr_formats::atomic::write_atomically;
use vnr_render::multiview::{MultiViewDataset, Split};
use vnr_render::plenoxels::optimize::render_view;
use vnr_render::plenoxels::{OptimizeConfig, PlenoxelGrid, PlenoxelOptimizer, RenderOptions};
use vnr_train::log::{progress_bar, JsonLog, LogRecord, Phase, LOG_FILE};
use vnr_train::metrics::{psnr, ssim, SsimConfig};

/// Arguments of `vnr train plenoxels`.
#[derive(Debug, clap::Args)]
pub struct TrainPlenoxelsArgs {
    /// Run config (.toml or .json).
    pub config: PathBuf,
    /// Dataset, overriding the config's `data`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory, overriding the config's `out`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Steps, overriding the config's `optimize.steps`.
    #[arg(long)]
    pub steps: Option<usize>,
}

/// How the dataset is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `transforms_train.json` in a directory: NeRF-synthetic; else nerfstudio.
    Auto,
    /// NeRF-synthetic (`transforms_{train,val,test}.json`).
    Blender,
    /// nerfstudio (`transforms.json` with `{split}_filenames`).
    Nerfstudio,
}

/// Which split the held-out evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSplit {
    /// Test views.
    Test,
    /// Validation views.
    Val,
}

/// A Plenoxels run (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlenoxelRunConfig {
    /// Dataset path.
    pub data: PathBuf,
    /// Dataset layout.
    pub format: DataFormat,
    /// Run directory.
    pub out: PathBuf,
    /// Seed of ray and TV sampling.
    pub seed: u64,
    /// Held-out split.
    pub eval_split: EvalSplit,
    /// Steps between held-out evaluations (0: only at the end).
    pub eval_every: usize,
    /// Frames of the periodic evaluations (0: all).
    pub eval_views: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// Optimiser settings.
    pub optimize: OptimizeConfig,
}

impl Default for PlenoxelRunConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from("scene"),
            format: DataFormat::Auto,
            out: PathBuf::from("plenoxels_run"),
            seed: 0,
            eval_split: EvalSplit::Test,
            eval_every: 500,
            eval_views: 4,
            progress: true,
            optimize: OptimizeConfig::cpu_128(),
        }
    }
}

impl PlenoxelRunConfig {
    /// Reads a `.toml` or `.json` config, keys overriding [`PlenoxelRunConfig::default`] one by
    /// one; relative paths are resolved against the config's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let user: Value = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => toml::from_str(&text)
                .with_context(|| format!("{}: invalid TOML", path.display()))?,
            Some("json") => serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", path.display()))?,
            _ => bail!("{}: expected a .toml or .json config", path.display()),
        };
        let mut merged = serde_json::to_value(Self::default())?;
        merge(&mut merged, user);
        let mut config: Self = serde_json::from_value(merged)
            .with_context(|| format!("{}: invalid Plenoxels config", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data = base.join(&config.data);
        config.out = base.join(&config.out);
        Ok(config)
    }
}

/// Overrides `base` with `user`, recursing into objects present in both.
fn merge(base: &mut Value, user: Value) {
    match (base, user) {
        (Value::Object(base), Value::Object(user)) => {
            for (key, value) in user {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Reads split `split` of the dataset.
pub fn read_split(
    data: &Path,
    format: DataFormat,
    split: Split,
    background: f32,
) -> Result<MultiViewDataset> {
    let blender = match format {
        DataFormat::Blender => true,
        DataFormat::Nerfstudio => false,
        DataFormat::Auto => data.join("transforms_train.json").is_file(),
    };
    let background = [background; 3];
    let dataset = if blender {
        MultiViewDataset::read_blender(data, split, background)
    } else {
        MultiViewDataset::read_nerfstudio(data, split, background)
    };
    dataset.with_context(|| format!("reading the {} split of {}", split.as_str(), data.display()))
}

/// Held-out image quality of `grid` on the first `views` frames of `data` (all when 0): mean
/// PSNR and, when asked, mean SSIM (vnr-train's metrics on colours clamped to `[0, 1]`).
pub fn held_out(
    grid: &PlenoxelGrid,
    data: &MultiViewDataset,
    views: usize,
    opts: &RenderOptions,
    with_ssim: bool,
) -> Result<(f64, Option<f64>)> {
    let count = if views == 0 {
        data.len()
    } else {
        views.min(data.len())
    };
    let (mut total_psnr, mut total_ssim) = (0.0, 0.0);
    for frame in 0..count {
        let rendered = render_view(grid, data, frame, opts)?.clamp(0f32, 1f32)?;
        let target = data.images.get(frame)?;
        total_psnr += psnr(&rendered, &target, 1.0)?;
        if with_ssim {
            let chw = |t: &Tensor| t.permute((2, 0, 1));
            total_ssim += ssim(&chw(&rendered)?, &chw(&target)?, &SsimConfig::default())?;
        }
    }
    let n = count as f64;
    Ok((total_psnr / n, with_ssim.then_some(total_ssim / n)))
}

/// Runs `vnr train plenoxels`.
pub fn run(args: &TrainPlenoxelsArgs) -> Result<()> {
    let mut config = PlenoxelRunConfig::load(&args.config)?;
    if let Some(data) = &args.data {
        config.data.clone_from(data);
    }
    if let Some(out) = &args.out {
        config.out.clone_from(out);
    }
    if let Some(steps) = args.steps {
        config.optimize.steps = steps;
    }
    let opt = config.optimize.clone();
    let background = opt.render.background_brightness;
    let train = read_split(&config.data, config.format, Split::Train, background)?;
    let eval_split = match config.eval_split {
        EvalSplit::Test => Split::Test,
        EvalSplit::Val => Split::Val,
    };
    let held = read_split(&config.data, config.format, eval_split, background)?;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let resolved = config.out.join("config.json");
    write_atomically(&resolved, |w| {
        serde_json::to_writer_pretty(&mut *w, &config).map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", resolved.display()))?;
    let mut log = JsonLog::open(&config.out.join(LOG_FILE), None)?;

    let mut optimizer = PlenoxelOptimizer::from_config(opt.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let bar = progress_bar(Some(opt.steps as u64), 0, config.progress);
    let mut seconds = 0.0;
    for step in 1..=opt.steps {
        let start = Instant::now();
        let batch = train.sample_rays(opt.batch_rays, &mut rng)?;
        let stats = optimizer.step(&batch, &mut rng)?;
        seconds += start.elapsed().as_secs_f64();
        log.write(&LogRecord {
            phase: Phase::Train,
            step: step as u64,
            epoch: 0,
            loss: stats.mse,
            metrics: [("psnr".to_string(), stats.psnr)].into(),
            lr: [
                ("density".to_string(), stats.lr_density),
                ("sh".to_string(), stats.lr_sh),
            ]
            .into(),
            seconds,
        })?;
        bar.set_position(step as u64);
        bar.set_message(format!("batch PSNR {:.2} dB", stats.psnr));
        if config.eval_every > 0 && step % config.eval_every == 0 && step < opt.steps {
            let grid = optimizer.grid()?;
            let (p, _) = held_out(&grid, &held, config.eval_views, &opt.render, false)?;
            write_validation(&mut log, step, seconds, p, None)?;
            bar.println(format!(
                "step {step}: held-out PSNR {p:.2} dB ({} views), {} voxels, {seconds:.1} s",
                if config.eval_views == 0 {
                    held.len()
                } else {
                    config.eval_views.min(held.len())
                },
                stats.capacity
            ));
        }
    }
    bar.finish_and_clear();
    let grid = optimizer.grid()?;
    let ckpt = config.out.join("ckpt.npz");
    grid.write(&ckpt, false)
        .with_context(|| format!("writing {}", ckpt.display()))?;
    let (p, s) = held_out(&grid, &held, 0, &opt.render, true)?;
    write_validation(&mut log, opt.steps, seconds, p, s)?;
    println!(
        "{} steps in {seconds:.1} s ({:.0} rays/s); held-out {} PSNR {p:.2} dB, SSIM {:.4} over {} views; {} voxels; wrote {}",
        opt.steps,
        (opt.steps * opt.batch_rays) as f64 / seconds.max(1e-9),
        eval_split.as_str(),
        s.unwrap_or(f64::NAN),
        held.len(),
        grid.capacity(),
        ckpt.display()
    );
    Ok(())
}

fn write_validation(
    log: &mut JsonLog,
    step: usize,
    seconds: f64,
    psnr: f64,
    ssim: Option<f64>,
) -> Result<()> {
    let mut metrics = std::collections::BTreeMap::from([("psnr".to_string(), psnr)]);
    if let Some(s) = ssim {
        metrics.insert("ssim".to_string(), s);
    }
    log.write(&LogRecord {
        phase: Phase::Validation,
        step: step as u64,
        epoch: 0,
        loss: 10f64.powf(-psnr / 10.0),
        metrics,
        lr: Default::default(),
        seconds,
    })?;
    Ok(())
}

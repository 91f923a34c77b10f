//! Training logs: one JSON object per line (`log.jsonl`) and a terminal progress bar.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{io_at, Result, TrainError};

/// File name of the JSON-lines log inside a run directory.
pub const LOG_FILE: &str = "log.jsonl";

/// Which pass a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// One training step.
    Train,
    /// A full pass over the validation split (loss and metrics are batch means).
    Validation,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Training step or validation pass.
    pub phase: Phase,
    /// Updates done including this one (validation: updates done before it ran).
    pub step: u64,
    /// Epoch (0-based) the step belongs to.
    pub epoch: u64,
    /// Loss value.
    pub loss: f64,
    /// The model's named metrics (a NaN or infinite metric is written as `null` and read back
    /// as NaN).
    #[serde(deserialize_with = "null_as_nan")]
    pub metrics: BTreeMap<String, f64>,
    /// Learning rate of each parameter group, by group name.
    pub lr: BTreeMap<String, f64>,
    /// Wall-clock seconds of training so far, summed over resumed sessions.
    pub seconds: f64,
}

/// Appends records to `log.jsonl`, one flushed line each.
#[derive(Debug)]
pub struct JsonLog {
    path: PathBuf,
    file: File,
}

impl JsonLog {
    /// Opens (creating) the log at `path`. With `keep_through = Some(step)` (resuming), records
    /// after `step` — written after the checkpoint being resumed from — are dropped first, so
    /// the log tells the story of the resumed run only once; a torn last line is dropped too.
    pub fn open(path: &Path, keep_through: Option<u64>) -> Result<Self> {
        if let Some(step) = keep_through {
            let kept: Vec<LogRecord> = read_log(path)?
                .into_iter()
                .filter(|r| r.step <= step)
                .collect();
            let mut text = String::new();
            for r in &kept {
                text.push_str(&record_line(r)?);
            }
            vnr_formats::atomic::write_atomically(path, |w| w.write_all(text.as_bytes()))
                .map_err(io_at(path))?;
        } else if path.exists() {
            std::fs::remove_file(path).map_err(io_at(path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_at(path))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &LogRecord) -> Result<()> {
        self.file
            .write_all(record_line(record)?.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io_at(&self.path))
    }
}

fn record_line(record: &LogRecord) -> Result<String> {
    let mut line = serde_json::to_string(record).map_err(|e| TrainError::Parse {
        path: LOG_FILE.into(),
        message: e.to_string(),
    })?;
    line.push('\n');
    Ok(line)
}

/// JSON has no NaN: serde_json writes non-finite numbers as `null`; read those back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let raw = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Reads every well-formed record of a log (a missing file is an empty log; lines that do not
/// parse, such as one torn by a crash, are skipped).
pub fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(path)(e)),
    };
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io_at(path))?;
        if let Ok(r) = serde_json::from_str::<LogRecord>(&line) {
            records.push(r);
        }
    }
    Ok(records)
}

/// A progress bar over `total` steps (unknown for epoch-limited runs) showing the loss and ETA;
/// hidden when `enabled` is false or stderr is not a terminal (tests, CI, redirected output).
pub fn progress_bar(total: Option<u64>, position: u64, enabled: bool) -> ProgressBar {
    let target = if enabled && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(total, target).with_position(position);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64) -> LogRecord {
        LogRecord {
            phase: Phase::Train,
            step,
            epoch: 0,
            loss: 1.0 / step as f64,
            metrics: BTreeMap::from([("psnr".to_string(), 20.0)]),
            lr: BTreeMap::from([("all".to_string(), 1e-3)]),
            seconds: 0.5,
        }
    }

    #[test]
    fn resuming_drops_records_after_the_checkpoint_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut log = JsonLog::open(&path, None).unwrap();
        for s in 1..=5 {
            log.write(&record(s)).unwrap();
        }
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"phase\":\"tra").unwrap();
        drop(f);
        let mut log = JsonLog::open(&path, Some(3)).unwrap();
        log.write(&record(4)).unwrap();
        let steps: Vec<u64> = read_log(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 2, 3, 4]);
        assert_eq!(read_log(&path).unwrap()[0], record(1));
        let mut nan_metric = record(5);
        nan_metric.metrics.insert("psnr".into(), f64::NAN);
        log.write(&nan_metric).unwrap();
        let back = read_log(&path).unwrap();
        assert_eq!(back.len(), 5, "a NaN metric must not lose the record");
        assert!(back[4].metrics["psnr"].is_nan());
    }
}

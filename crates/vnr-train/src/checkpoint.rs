//! Checkpoint directories written atomically, and the file helpers they are made of.
//!
//! A run directory holds `checkpoints/step-NNNNNNNN/` folders. Each is written into a sibling
//! `step-NNNNNNNN.tmp-PID-K` folder, every file and the folder are fsynced, and only then is it
//! renamed to its final name, so a checkpoint folder that exists is complete. Older
//! checkpoints are removed only after the new one is in place.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{io_at, Result, TrainError};

/// The model's parameters, under their checkpoint names.
pub const MODEL_TENSORS: &str = "model.safetensors";
/// Step, epoch, RNG and data-order state, and the configuration.
pub const TRAINER_JSON: &str = "trainer.json";
/// Folder of a run directory that holds the checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
const STEP_PREFIX: &str = "step-";
/// Attempts at finding an unused temporary name before giving up.
const TEMP_NAME_ATTEMPTS: u32 = 1000;

/// Serialises `value` as pretty JSON into `path` atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    vnr_formats::atomic::write_atomically(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes())
    })
    .map_err(io_at(path))
}

/// Reads a JSON file into `T`.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Writes `tensors` as safetensors into `path` and fsyncs it.
pub(crate) fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| TrainError::Checkpoint {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_at(path))
}

/// Reads every tensor of a safetensors file onto `device` (the header is validated against
/// the file size by the safetensors reader before any tensor is built).
pub(crate) fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            path: path.to_owned(),
            message: "file missing".into(),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| TrainError::Checkpoint {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Writes every variable of `vars` into `path` (safetensors, names as in the `VarMap`).
pub fn save_model(vars: &VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = lock(vars)?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    write_safetensors(path, &tensors)
}

/// Sets every variable of `vars` from `path`. The file must hold exactly the same names, each
/// with the variable's shape and dtype.
pub fn load_model(vars: &VarMap, path: &Path) -> Result<()> {
    let bad = |message: String| TrainError::Checkpoint {
        path: path.to_owned(),
        message,
    };
    let data = lock(vars)?;
    let device = data
        .values()
        .next()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let tensors = read_safetensors(path, &device)?;
    if let Some(extra) = tensors.keys().find(|k| !data.contains_key(*k)) {
        return Err(bad(format!(
            "holds '{extra}', which the model does not have"
        )));
    }
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| bad(format!("parameter '{name}' missing")))?;
        if t.dims() != var.dims() || t.dtype() != var.dtype() {
            return Err(bad(format!(
                "parameter '{name}' is {:?} {:?}, the model's {:?} {:?}",
                t.dtype(),
                t.dims(),
                var.dtype(),
                var.dims()
            )));
        }
        var.set(t)?;
    }
    Ok(())
}

fn lock(vars: &VarMap) -> Result<std::sync::MutexGuard<'_, HashMap<String, candle_core::Var>>> {
    vars.data()
        .lock()
        .map_err(|_| TrainError::Config("the model's VarMap lock is poisoned".into()))
}

/// The folder of the checkpoint at `step` in run directory `run_dir`.
pub fn checkpoint_dir(run_dir: &Path, step: u64) -> PathBuf {
    run_dir
        .join(CHECKPOINTS_DIR)
        .join(format!("{STEP_PREFIX}{step:08}"))
}

/// Complete checkpoints of `run_dir` as `(step, folder)`, oldest first (temporary folders of
/// an interrupted write are ignored).
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run_dir.join(CHECKPOINTS_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
        let entry = entry.map_err(io_at(&dir))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STEP_PREFIX))
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().join(TRAINER_JSON).is_file() {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of `run_dir`, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    Ok(list_checkpoints(run_dir)?.pop())
}

/// Removes all but the newest `keep` checkpoints (`keep` 0 counts as 1: never the last one).
pub fn prune_checkpoints(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list_checkpoints(run_dir)?;
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, dir) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
    }
    Ok(())
}

/// Creates `final_dir` atomically: `fill` writes the files into a fresh temporary sibling
/// folder, which is fsynced and renamed to `final_dir`. If `fill` fails the temporary folder is
/// removed and `final_dir` is untouched. An existing `final_dir` is replaced only once the new
/// one is complete.
pub fn write_dir_atomically(
    final_dir: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let parent = final_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = final_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TrainError::Config(format!("{final_dir:?} has no usable folder name")))?;
    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    let tmp = create_unique_dir(parent, &format!("{name}.tmp"))?;
    let filled = fill(&tmp).and_then(|()| sync_dir_tree(&tmp));
    if let Err(e) = filled {
        // Best effort: the error being returned matters more than a leftover temporary folder.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        let old = unused_name(parent, &format!("{name}.old"))?;
        std::fs::rename(final_dir, &old).map_err(io_at(final_dir))?;
        std::fs::rename(&tmp, final_dir).map_err(io_at(final_dir))?;
        std::fs::remove_dir_all(&old).map_err(io_at(&old))?;
    } else {
        std::fs::rename(&tmp, final_dir).map_err(io_at(final_dir))?;
    }
    sync_path(parent)
}

/// A new folder `parent/STEM-PID-K` for the first free `K`.
fn create_unique_dir(parent: &Path, stem: &str) -> Result<PathBuf> {
    for k in 0..TEMP_NAME_ATTEMPTS {
        let candidate = parent.join(format!("{stem}-{}-{k}", std::process::id()));
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_at(&candidate)(e)),
        }
    }
    Err(TrainError::Config(format!(
        "no free temporary folder name {stem}-* in {parent:?}"
    )))
}

/// A path `parent/STEM-PID-K` that does not exist yet.
fn unused_name(parent: &Path, stem: &str) -> Result<PathBuf> {
    (0..TEMP_NAME_ATTEMPTS)
        .map(|k| parent.join(format!("{stem}-{}-{k}", std::process::id())))
        .find(|p| !p.exists())
        .ok_or_else(|| TrainError::Config(format!("no free name {stem}-* in {parent:?}")))
}

/// fsyncs every file directly in `dir`, then `dir` itself.
fn sync_dir_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        if path.is_file() {
            sync_path(&path)?;
        }
    }
    sync_path(dir)
}

/// fsyncs a file or (on Unix) a folder, so a rename into it survives a crash.
fn sync_path(path: &Path) -> Result<()> {
    match File::open(path).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        // Folders cannot be opened for syncing on some platforms; the data files were synced.
        Err(_) if path.is_dir() && !cfg!(unix) => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_fill_leaves_nothing_and_keeps_the_old_folder() {
        let run = tempfile::tempdir().unwrap();
        let target = checkpoint_dir(run.path(), 3);
        write_dir_atomically(&target, |d| {
            std::fs::write(d.join(TRAINER_JSON), "{}").map_err(io_at(d))
        })
        .unwrap();
        let err = write_dir_atomically(&target, |d| {
            std::fs::write(d.join(TRAINER_JSON), "half").map_err(io_at(d))?;
            Err(TrainError::Config("disk full".into()))
        });
        assert!(err.is_err());
        assert_eq!(
            std::fs::read_to_string(target.join(TRAINER_JSON)).unwrap(),
            "{}"
        );
        let entries = std::fs::read_dir(run.path().join(CHECKPOINTS_DIR))
            .unwrap()
            .count();
        assert_eq!(entries, 1, "the temporary folder must be removed");
    }

    #[test]
    fn listing_skips_temporary_and_incomplete_folders_and_pruning_keeps_the_newest() {
        let run = tempfile::tempdir().unwrap();
        for step in [5, 20, 10] {
            write_dir_atomically(&checkpoint_dir(run.path(), step), |d| {
                std::fs::write(d.join(TRAINER_JSON), "{}").map_err(io_at(d))
            })
            .unwrap();
        }
        let ckpts = run.path().join(CHECKPOINTS_DIR);
        std::fs::create_dir(ckpts.join("step-00000030.tmp-1-0")).unwrap();
        std::fs::create_dir(ckpts.join("step-00000040")).unwrap();
        let steps: Vec<u64> = list_checkpoints(run.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [5, 10, 20]);
        prune_checkpoints(run.path(), 2).unwrap();
        assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().0, 20);
        assert_eq!(list_checkpoints(run.path()).unwrap().len(), 2);
    }
}

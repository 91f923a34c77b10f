//! Chunked training datasets streamed from `.npz` files, with a bounded number of decoded chunks
//! in memory and background decoding.
//!
//! # Layouts
//!
//! [`ChunkedDataset::open`] reads a folder in one of two layouts:
//!
//! * **VoxelNeuralRender** (used when there is no `dataset.json`): paired files
//!   `volume_samples_NNN.npz` (key `arr_0`, floating point `[N, C, D, H, W]`, `C` = 1 in the
//!   original) and `image_samples_NNN.npz` (key `arr_0`, floating point `[N, H, W, C]`, `f64` in
//!   the original). `NNN` is any decimal number; chunks are matched and ordered by its numeric
//!   value. The volume becomes the `inputs` field and the image the `targets` field.
//! * **Manifest**: a `dataset.json` file in the folder:
//!
//! ```json
//! {
//!   "fields": [
//!     {"name": "inputs",  "dtype": "float32", "shape": [1, 32, 32, 32]},
//!     {"name": "targets", "dtype": "float64", "shape": [64, 64, 1]},
//!     {"name": "poses",   "dtype": "float32", "shape": [4, 4]}
//!   ],
//!   "chunks": [
//!     {"samples": 100, "files": {
//!        "inputs":  {"file": "volume_samples_000.npz", "key": "arr_0"},
//!        "targets": {"file": "image_samples_000.npz",  "key": "arr_0"},
//!        "poses":   {"file": "poses_000.npz",          "key": "poses"}}}
//!   ]
//! }
//! ```
//!
//! `fields` lists every per-sample field with its numpy dtype name (`bool`, `uint8`, `int8`,
//! `uint16`, `int16`, `uint32`, `int32`, `int64`, `float16`, `float32`, `float64`) and its
//! per-sample shape (the stored array is `[samples, ...shape]`). Fields named `inputs` and
//! `targets` are required; any others are delivered in [`Batch::extra`]. Each chunk names, for
//! every field, the file (relative to the folder) and the array key inside it; several fields
//! may share one file under different keys. Unknown keys are an error.
//!
//! Every chunk's headers are checked when the dataset is opened (and again when it is decoded):
//! a missing partner file, a wrong key, a wrong dtype, sample counts that disagree between the
//! files of one chunk, or per-sample shapes that disagree across chunks are errors that name
//! the file.
//!
//! # Streaming, memory bound and what "shuffle" means
//!
//! [`ChunkedDataset::epoch`] returns an iterator of [`Batch`]es. A background thread decodes
//! chunks in the epoch's chunk order and hands them over through a bounded channel. At most
//! [`DatasetConfig::max_decoded_chunks`] (`M`) decoded chunks exist at any time, counting the one
//! being decoded, those waiting in the channel, and those being consumed ([`Batches::stats`]
//! reports the count and its peak).
//!
//! The consumer draws samples from a *pool* of `P = max(1, M - 1)` decoded chunks, which leaves
//! one slot for the next chunk to decode while the pool is consumed. With `shuffle`:
//! 1. the training chunks are put in a random order (per epoch);
//! 2. the pool starts with the first `P` chunks of that order;
//! 3. each sample is drawn uniformly at random among the not-yet-drawn samples of all pool
//!    chunks (so samples of the `P` resident chunks are interleaved, and within a chunk the
//!    order is random);
//! 4. a chunk whose samples are all drawn leaves the pool and frees its slot; the next chunk of
//!    the order joins the pool before the next draw.
//!
//! So "shuffle across chunks" means: chunk order is random, and samples from up to `P` chunks
//! that are consecutive in that order are mixed. With the default `M = 2` the pool is one chunk
//! (one chunk is consumed while the next decodes); `M = 3` mixes two chunks, and so on. Every
//! sample of the split is yielded exactly once per epoch and batches run across chunk
//! boundaries. The draws depend only on the seed, the epoch number and the chunk sizes, never on
//! timing: the same `(seed, epoch)` gives the same order. Without `shuffle`, chunks are read in
//! numeric order and samples in file order.
//!
//! The validation split is chosen by chunk from the seed alone (not the epoch), and
//! [`ChunkedDataset::validation`] streams it in numeric order without shuffling or dropping a
//! last partial batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::npz::{write_npz, NpyArray, NpyDtype, NpyHeader, NpzError, NpzReader};

/// Name of the manifest file of the generic layout.
pub const MANIFEST_FILE: &str = "dataset.json";
/// Array key VoxelNeuralRender's chunk files use (`numpy.savez` with a positional argument).
pub const VNR_KEY: &str = "arr_0";
const VOLUME_PREFIX: &str = "volume_samples_";
const IMAGE_PREFIX: &str = "image_samples_";

/// Errors from opening, streaming or writing a chunked dataset. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Listing the folder or a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A chunk file could not be read (truncated, wrong key, bad header, ...).
    #[error(transparent)]
    Npz(#[from] NpzError),
    /// A volume file without its image file or the reverse.
    #[error("{present}: its partner file {missing} is missing")]
    MissingPair { present: PathBuf, missing: PathBuf },
    /// Two files map to the same chunk number (e.g. `_1` and `_001`).
    #[error("{first} and {second} have the same chunk number {number}")]
    DuplicateChunk {
        number: u64,
        first: PathBuf,
        second: PathBuf,
    },
    /// The folder holds no chunks.
    #[error("{dir}: no dataset.json and no volume_samples_NNN.npz/image_samples_NNN.npz pairs")]
    NoChunks { dir: PathBuf },
    /// `dataset.json` is malformed.
    #[error("{path}: bad manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// An array has an element type the layout does not allow.
    #[error("{path} (array '{key}'): dtype {found} where {expected} is required")]
    WrongDtype {
        path: PathBuf,
        key: String,
        found: String,
        expected: String,
    },
    /// An array's shape is not `[samples, ...per-sample shape]`.
    #[error("{path} (array '{key}'): shape {found:?}, expected {expected}")]
    WrongShape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: String,
    },
    /// The files of one chunk hold different numbers of samples.
    #[error("{path} holds {found} samples but {other} holds {expected}")]
    SampleCountMismatch {
        path: PathBuf,
        found: usize,
        other: PathBuf,
        expected: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid dataset configuration: {0}")]
    Config(String),
    /// A sample pushed to a [`ChunkWriter`] differs in shape or dtype from the first one.
    #[error("{field} sample has shape {found:?} / {found_dtype:?}, earlier samples {expected:?} / {expected_dtype:?}")]
    SampleMismatch {
        field: String,
        found: Vec<usize>,
        found_dtype: DType,
        expected: Vec<usize>,
        expected_dtype: DType,
    },
    /// The background decoder stopped without reporting why (it panicked).
    #[error("the chunk decoding thread stopped unexpectedly")]
    DecoderStopped,
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, DatasetError>;

/// How to pick the validation chunks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ValidationSplit {
    /// Every chunk trains.
    #[default]
    None,
    /// This fraction of the chunks (rounded to the nearest count) validates.
    Fraction(f64),
    /// Exactly this many chunks validate.
    Chunks(usize),
}

/// Most decoded chunks [`DatasetConfig::max_decoded_chunks`] may allow: far more than a
/// shuffle pool needs, and small enough for the decode channel's slots to be preallocated.
pub const MAX_DECODED_CHUNKS: usize = 1024;

/// Streaming options. `Default`: batch 32, `M` = 2 decoded chunks, shuffled, seed 0, no
/// validation split, last partial batch kept, CPU, `F32`.
#[derive(Debug, Clone)]
pub struct DatasetConfig {
    /// Samples per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Most decoded chunks alive at once, including the one being decoded (1 to
    /// [`MAX_DECODED_CHUNKS`]; [`ChunkedDataset::open`] refuses others with
    /// [`DatasetError::Config`]).
    pub max_decoded_chunks: usize,
    /// Shuffle chunk order and samples each training epoch (see the module docs).
    pub shuffle: bool,
    /// Seed of the validation split and of every epoch's order.
    pub seed: u64,
    /// Which chunks are held out for validation.
    pub validation: ValidationSplit,
    /// Drop a final training batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Device batches are delivered on.
    pub device: Device,
    /// Dtype every field is converted to (e.g. `f64` images become `F32`).
    pub dtype: DType,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_decoded_chunks: 2,
            shuffle: true,
            seed: 0,
            validation: ValidationSplit::None,
            drop_last: false,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

/// A per-sample field of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Field name (`inputs`, `targets`, or an extra name).
    pub name: String,
    /// Stored dtype (numpy name in the manifest).
    #[serde(with = "dtype_name")]
    pub dtype: NpyDtype,
    /// Per-sample shape; stored arrays are `[samples, ...shape]`.
    pub shape: Vec<usize>,
}

mod dtype_name {
    use crate::npz::NpyDtype;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(dtype: &NpyDtype, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(dtype.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NpyDtype, D::Error> {
        let name = String::deserialize(d)?;
        NpyDtype::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown dtype '{name}'")))
    }
}

/// Where one field of one chunk is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldFile {
    /// File path: relative to the dataset folder in the manifest, joined to it once opened.
    pub file: PathBuf,
    /// Array key inside the `.npz` file.
    pub key: String,
}

/// One chunk: its sample count and, per field (in [`ChunkedDataset::fields`] order), its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSource {
    /// Chunk number (`NNN` of the VoxelNeuralRender names, or the manifest position).
    pub number: u64,
    /// Samples in the chunk.
    pub samples: usize,
    /// One file per field.
    pub files: Vec<FieldFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    fields: Vec<FieldSpec>,
    chunks: Vec<ManifestChunk>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestChunk {
    samples: usize,
    files: BTreeMap<String, FieldFile>,
}

/// Identifies one sample: `chunk` indexes [`ChunkedDataset::chunks`], `index` is the position in
/// that chunk's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleId {
    pub chunk: usize,
    pub index: usize,
}

/// A batch of `B` samples on the configured device and dtype.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, ...inputs shape]`, e.g. `[B, 1, D, H, W]` volumes.
    pub inputs: Tensor,
    /// `[B, ...targets shape]`, e.g. `[B, H, W, 1]` images.
    pub targets: Tensor,
    /// Further manifest fields, `[B, ...shape]` each, in manifest order.
    pub extra: Vec<(String, Tensor)>,
    /// Which sample each row is.
    pub samples: Vec<SampleId>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the batch is empty (never true for yielded batches).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Which split to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Validation,
}

/// A chunked dataset folder, opened and checked. Cheap to keep; streaming starts with
/// [`ChunkedDataset::epoch`].
#[derive(Debug, Clone)]
pub struct ChunkedDataset {
    dir: PathBuf,
    fields: Vec<FieldSpec>,
    chunks: Vec<ChunkSource>,
    train: Vec<usize>,
    validation: Vec<usize>,
    config: DatasetConfig,
}

impl ChunkedDataset {
    /// Opens `dir`: the manifest layout if `dataset.json` exists, else VoxelNeuralRender pairs.
    /// Reads every chunk's array headers (not the data) and checks them. A `batch_size` of 0 or
    /// a `max_decoded_chunks` outside `1..=`[`MAX_DECODED_CHUNKS`] is [`DatasetError::Config`].
    pub fn open(dir: impl AsRef<Path>, config: DatasetConfig) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        if config.batch_size == 0 {
            return Err(DatasetError::Config("batch_size must be at least 1".into()));
        }
        // The decode channel preallocates `max_decoded_chunks` slots, so the bound is checked
        // here rather than met as an allocation failure in `epoch`.
        if !(1..=MAX_DECODED_CHUNKS).contains(&config.max_decoded_chunks) {
            return Err(DatasetError::Config(format!(
                "max_decoded_chunks {} must be in 1..={MAX_DECODED_CHUNKS}",
                config.max_decoded_chunks
            )));
        }
        let manifest = dir.join(MANIFEST_FILE);
        let (fields, chunks) = if manifest.is_file() {
            open_manifest(&dir, &manifest)?
        } else {
            open_vnr_pairs(&dir)?
        };
        let (train, validation) = split_chunks(chunks.len(), &config)?;
        Ok(Self {
            dir,
            fields,
            chunks,
            train,
            validation,
            config,
        })
    }

    /// The dataset folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fields in delivery order: `inputs`, `targets`, then extras.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// All chunks, in numeric (manifest) order.
    pub fn chunks(&self) -> &[ChunkSource] {
        &self.chunks
    }

    /// Indices into [`ChunkedDataset::chunks`] of the training chunks, ascending.
    pub fn train_chunks(&self) -> &[usize] {
        &self.train
    }

    /// Indices into [`ChunkedDataset::chunks`] of the validation chunks, ascending.
    pub fn validation_chunks(&self) -> &[usize] {
        &self.validation
    }

    /// Number of training samples.
    pub fn train_samples(&self) -> usize {
        self.train.iter().map(|&c| self.chunks[c].samples).sum()
    }

    /// Number of validation samples.
    pub fn validation_samples(&self) -> usize {
        self.validation
            .iter()
            .map(|&c| self.chunks[c].samples)
            .sum()
    }

    /// The configuration the dataset was opened with.
    pub fn config(&self) -> &DatasetConfig {
        &self.config
    }

    /// Streams training epoch `epoch` (order fixed by `seed` and `epoch`).
    pub fn epoch(&self, epoch: u64) -> Result<Batches> {
        self.stream(Split::Train, epoch)
    }

    /// Streams the validation chunks in numeric order.
    pub fn validation(&self) -> Result<Batches> {
        self.stream(Split::Validation, 0)
    }

    fn stream(&self, split: Split, epoch: u64) -> Result<Batches> {
        let shuffle = split == Split::Train && self.config.shuffle;
        let mut order = match split {
            Split::Train => self.train.clone(),
            Split::Validation => self.validation.clone(),
        };
        let mut rng = SplitMix64::stream(self.config.seed, epoch);
        if shuffle {
            rng.shuffle(&mut order);
        }
        let total: usize = order.iter().map(|&c| self.chunks[c].samples).sum();
        let drop_last = split == Split::Train && self.config.drop_last;
        let to_yield = if drop_last {
            total - total % self.config.batch_size
        } else {
            total
        };
        let slots = Arc::new(Slots::new(self.config.max_decoded_chunks));
        let (sender, receiver) = sync_channel(self.config.max_decoded_chunks);
        let jobs: Vec<(usize, ChunkSource)> =
            order.iter().map(|&c| (c, self.chunks[c].clone())).collect();
        let fields = self.fields.clone();
        let dtype = self.config.dtype;
        let worker_slots = Arc::clone(&slots);
        let worker = std::thread::Builder::new()
            .name("vnr-dataset-decode".into())
            .spawn(move || {
                for (chunk, source) in jobs {
                    let Some(slot) = worker_slots.acquire() else {
                        return;
                    };
                    let result =
                        decode_chunk(&source, &fields, dtype).map(|tensors| DecodedChunk {
                            chunk,
                            tensors,
                            _slot: slot,
                        });
                    let failed = result.is_err();
                    if sender.send(result).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|source| DatasetError::Io {
                path: self.dir.clone(),
                source,
            })?;
        Ok(Batches {
            receiver,
            worker: Some(worker),
            slots,
            pool: Vec::new(),
            pool_capacity: self.config.max_decoded_chunks.saturating_sub(1).max(1),
            chunks_pending: order.len(),
            rng,
            shuffle,
            batch_size: self.config.batch_size,
            to_yield,
            device: self.config.device.clone(),
            field_names: self.fields.iter().map(|f| f.name.clone()).collect(),
            finished: false,
        })
    }
}

/// Counters of the streaming iterator, for tests and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Decoded chunks alive now (decoding, queued or in the pool).
    pub resident_chunks: usize,
    /// Largest `resident_chunks` seen so far; never above `max_decoded_chunks`.
    pub peak_resident_chunks: usize,
    /// Chunks decoding was started for.
    pub chunks_decoded: usize,
}

/// Counting semaphore bounding decoded chunks; closing it stops the decoder.
#[derive(Debug)]
struct Slots {
    capacity: usize,
    state: Mutex<SlotState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    stats: StreamStats,
    closed: bool,
}

impl Slots {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(SlotState::default()),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // The state stays consistent even if a holder panicked: every update is one statement.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Blocks until a slot is free; `None` once closed.
    fn acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut state = self.lock();
        while !state.closed && state.stats.resident_chunks >= self.capacity {
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.closed {
            return None;
        }
        let stats = &mut state.stats;
        stats.resident_chunks += 1;
        stats.peak_resident_chunks = stats.peak_resident_chunks.max(stats.resident_chunks);
        stats.chunks_decoded += 1;
        Some(SlotGuard(Arc::clone(self)))
    }

    fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }
}

/// One occupied slot, released when the decoded chunk holding it is dropped.
#[derive(Debug)]
struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.stats.resident_chunks = state.stats.resident_chunks.saturating_sub(1);
        drop(state);
        self.0.freed.notify_all();
    }
}

/// A chunk's fields as CPU tensors `[samples, ...]` in the output dtype.
#[derive(Debug)]
struct DecodedChunk {
    chunk: usize,
    tensors: Vec<Tensor>,
    _slot: SlotGuard,
}

/// A pool member: the chunk and its undrawn sample indices (next draw at the end).
#[derive(Debug)]
struct PoolChunk {
    decoded: DecodedChunk,
    remaining: Vec<usize>,
}

/// Streaming iterator over one epoch (or the validation split). Dropping it stops the decoder.
#[derive(Debug)]
pub struct Batches {
    receiver: Receiver<Result<DecodedChunk>>,
    worker: Option<JoinHandle<()>>,
    slots: Arc<Slots>,
    pool: Vec<PoolChunk>,
    pool_capacity: usize,
    chunks_pending: usize,
    rng: SplitMix64,
    shuffle: bool,
    batch_size: usize,
    to_yield: usize,
    device: Device,
    field_names: Vec<String>,
    finished: bool,
}

impl Batches {
    /// Current resident-chunk counters.
    pub fn stats(&self) -> StreamStats {
        self.slots.lock().stats
    }

    /// Samples still to be yielded.
    pub fn samples_left(&self) -> usize {
        self.to_yield
    }

    /// Tops the pool up to its capacity with the next chunks of the order (blocking).
    fn fill_pool(&mut self) -> Result<()> {
        while self.pool.len() < self.pool_capacity && self.chunks_pending > 0 {
            let decoded = self
                .receiver
                .recv()
                .map_err(|_| DatasetError::DecoderStopped)??;
            self.chunks_pending -= 1;
            let samples = decoded.tensors.first().map_or(Ok(0), |t| t.dim(0))?;
            let mut remaining: Vec<usize> = (0..samples).rev().collect();
            if self.shuffle {
                self.rng.shuffle(&mut remaining);
            }
            self.pool.push(PoolChunk { decoded, remaining });
        }
        Ok(())
    }

    /// Draws the next sample per the module's rules; returns its id and per-field rows.
    fn draw(&mut self) -> Result<(SampleId, Vec<Tensor>)> {
        self.fill_pool()?;
        let total: usize = self.pool.iter().map(|c| c.remaining.len()).sum();
        if total == 0 {
            return Err(DatasetError::DecoderStopped);
        }
        let mut pick = if self.shuffle {
            self.rng.below(total)
        } else {
            0
        };
        let mut slot = 0;
        for (i, member) in self.pool.iter().enumerate() {
            if pick < member.remaining.len() {
                slot = i;
                break;
            }
            pick -= member.remaining.len();
        }
        let member = &mut self.pool[slot];
        let index = member.remaining.pop().ok_or(DatasetError::DecoderStopped)?;
        let rows = member
            .decoded
            .tensors
            .iter()
            // A copy of just this row, so the chunk can be freed before the batch is complete.
            .map(|t| t.get(index)?.force_contiguous())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let id = SampleId {
            chunk: member.decoded.chunk,
            index,
        };
        if member.remaining.is_empty() {
            self.pool.remove(slot);
        }
        Ok((id, rows))
    }

    fn next_batch(&mut self) -> Result<Batch> {
        let n = self.batch_size.min(self.to_yield);
        let mut samples = Vec::with_capacity(n);
        let mut columns: Vec<Vec<Tensor>> = vec![Vec::with_capacity(n); self.field_names.len()];
        for _ in 0..n {
            let (id, rows) = self.draw()?;
            samples.push(id);
            for (column, row) in columns.iter_mut().zip(rows) {
                column.push(row);
            }
        }
        self.to_yield -= n;
        let mut stacked = columns
            .iter()
            .map(|rows| Tensor::stack(rows, 0)?.to_device(&self.device))
            .collect::<candle_core::Result<Vec<_>>>()?
            .into_iter();
        let (Some(inputs), Some(targets)) = (stacked.next(), stacked.next()) else {
            return Err(DatasetError::DecoderStopped);
        };
        let extra = self
            .field_names
            .iter()
            .skip(2)
            .cloned()
            .zip(stacked)
            .collect();
        Ok(Batch {
            inputs,
            targets,
            extra,
            samples,
        })
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.to_yield == 0 {
            self.finished = true;
            return None;
        }
        let batch = self.next_batch();
        if batch.is_err() {
            self.finished = true;
        }
        Some(batch)
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.slots.close();
        self.pool.clear();
        // Unblock a decoder waiting to send, then wait for it so no thread outlives the stream.
        while self.receiver.try_recv().is_ok() {}
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Reads a chunk's arrays, re-checks them, and converts them to CPU tensors of `dtype`.
fn decode_chunk(source: &ChunkSource, fields: &[FieldSpec], dtype: DType) -> Result<Vec<Tensor>> {
    source
        .files
        .iter()
        .zip(fields)
        .map(|(file, field)| {
            let mut reader = NpzReader::open(&file.file)?;
            // The files may have changed since the dataset was opened.
            check_array(
                file,
                &reader.header(&file.key)?,
                field,
                source.samples,
                None,
            )?;
            // Converting while decoding: the stored-dtype array never exists in full, which keeps
            // the peak at `max_decoded_chunks` chunks of the output dtype.
            Ok(reader.tensor(&file.key, dtype)?)
        })
        .collect()
}

/// Checks an array's dtype and `[samples, ...field.shape]` shape; `reference` names the file the
/// expectation came from (the first chunk of a VoxelNeuralRender folder).
fn check_array(
    file: &FieldFile,
    header: &NpyHeader,
    field: &FieldSpec,
    samples: usize,
    reference: Option<&Path>,
) -> Result<()> {
    let origin = reference.map_or(String::new(), |r| format!(" as in {}", r.display()));
    if header.dtype != field.dtype {
        return Err(DatasetError::WrongDtype {
            path: file.file.clone(),
            key: file.key.clone(),
            found: header.dtype.name().into(),
            expected: format!("{}{origin}", field.dtype.name()),
        });
    }
    let shape = &header.shape;
    let matches = shape.len() == field.shape.len() + 1
        && shape[1..] == field.shape[..]
        && shape[0] == samples;
    if !matches {
        let dims: Vec<String> = std::iter::once(samples)
            .chain(field.shape.iter().copied())
            .map(|d| d.to_string())
            .collect();
        return Err(DatasetError::WrongShape {
            path: file.file.clone(),
            key: file.key.clone(),
            found: shape.clone(),
            expected: format!("[{}]{origin}", dims.join(", ")),
        });
    }
    Ok(())
}

fn read_header(file: &FieldFile) -> Result<NpyHeader> {
    Ok(NpzReader::open(&file.file)?.header(&file.key)?)
}

fn open_manifest(dir: &Path, manifest_path: &Path) -> Result<(Vec<FieldSpec>, Vec<ChunkSource>)> {
    let bad = |reason: String| DatasetError::Manifest {
        path: manifest_path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(manifest_path).map_err(|source| DatasetError::Io {
        path: manifest_path.to_owned(),
        source,
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    for (i, field) in manifest.fields.iter().enumerate() {
        if manifest.fields[..i].iter().any(|f| f.name == field.name) {
            return Err(bad(format!("field '{}' listed twice", field.name)));
        }
    }
    // Deliver `inputs` and `targets` first, extras after in manifest order.
    let mut fields = Vec::with_capacity(manifest.fields.len());
    for required in ["inputs", "targets"] {
        let field = manifest
            .fields
            .iter()
            .find(|f| f.name == required)
            .ok_or_else(|| bad(format!("no '{required}' field")))?;
        fields.push(field.clone());
    }
    fields.extend(
        manifest
            .fields
            .iter()
            .filter(|f| f.name != "inputs" && f.name != "targets")
            .cloned(),
    );
    let mut chunks = Vec::with_capacity(manifest.chunks.len());
    for (number, chunk) in manifest.chunks.into_iter().enumerate() {
        if chunk.files.len() != fields.len() {
            return Err(bad(format!(
                "chunk {number} names fields {:?}, expected one file per field",
                chunk.files.keys().collect::<Vec<_>>()
            )));
        }
        let files = fields
            .iter()
            .map(|field| {
                let file = chunk.files.get(&field.name).ok_or_else(|| {
                    bad(format!(
                        "chunk {number} has no file for field '{}'",
                        field.name
                    ))
                })?;
                Ok(FieldFile {
                    file: dir.join(&file.file),
                    key: file.key.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (file, field) in files.iter().zip(&fields) {
            let header = read_header(file)?;
            check_array(file, &header, field, chunk.samples, None)?;
        }
        chunks.push(ChunkSource {
            number: number as u64,
            samples: chunk.samples,
            files,
        });
    }
    if chunks.is_empty() {
        return Err(DatasetError::NoChunks {
            dir: dir.to_owned(),
        });
    }
    Ok((fields, chunks))
}

/// Parses `PREFIXNNN.npz` into `NNN`.
fn chunk_number(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".npz")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn open_vnr_pairs(dir: &Path) -> Result<(Vec<FieldSpec>, Vec<ChunkSource>)> {
    let io = |source| DatasetError::Io {
        path: dir.to_owned(),
        source,
    };
    // chunk number -> (volume file, image file)
    let mut pairs: BTreeMap<u64, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let (number, is_volume) = match (
            chunk_number(name, VOLUME_PREFIX),
            chunk_number(name, IMAGE_PREFIX),
        ) {
            (Some(n), _) => (n, true),
            (_, Some(n)) => (n, false),
            _ => continue,
        };
        let pair = pairs.entry(number).or_default();
        let slot = if is_volume { &mut pair.0 } else { &mut pair.1 };
        if let Some(first) = slot.replace(path.clone()) {
            return Err(DatasetError::DuplicateChunk {
                number,
                first,
                second: path,
            });
        }
    }
    if pairs.is_empty() {
        return Err(DatasetError::NoChunks {
            dir: dir.to_owned(),
        });
    }
    let mut fields: Option<Vec<FieldSpec>> = None;
    let mut first_files: Vec<FieldFile> = Vec::new();
    let mut chunks = Vec::with_capacity(pairs.len());
    for (number, pair) in pairs {
        let (volume, image) = match pair {
            (Some(v), Some(i)) => (v, i),
            (Some(present), None) => {
                let missing = partner(&present, VOLUME_PREFIX, IMAGE_PREFIX);
                return Err(DatasetError::MissingPair { present, missing });
            }
            (None, Some(present)) => {
                let missing = partner(&present, IMAGE_PREFIX, VOLUME_PREFIX);
                return Err(DatasetError::MissingPair { present, missing });
            }
            (None, None) => continue,
        };
        let files = vec![
            FieldFile {
                file: volume,
                key: VNR_KEY.into(),
            },
            FieldFile {
                file: image,
                key: VNR_KEY.into(),
            },
        ];
        let headers = files.iter().map(read_header).collect::<Result<Vec<_>>>()?;
        for ((file, header), rank) in files.iter().zip(&headers).zip([5, 4]) {
            if !header.dtype.is_float() {
                return Err(DatasetError::WrongDtype {
                    path: file.file.clone(),
                    key: file.key.clone(),
                    found: header.dtype.name().into(),
                    expected: "float16, float32 or float64".into(),
                });
            }
            if header.shape.len() != rank {
                let expected = if rank == 5 {
                    "[N, C, D, H, W]"
                } else {
                    "[N, H, W, C]"
                };
                return Err(DatasetError::WrongShape {
                    path: file.file.clone(),
                    key: file.key.clone(),
                    found: header.shape.clone(),
                    expected: expected.into(),
                });
            }
        }
        let samples = headers[0].shape[0];
        if headers[1].shape[0] != samples {
            return Err(DatasetError::SampleCountMismatch {
                path: files[1].file.clone(),
                found: headers[1].shape[0],
                other: files[0].file.clone(),
                expected: samples,
            });
        }
        match &fields {
            // The first chunk fixes per-sample shapes and dtypes for all others.
            None => {
                fields = Some(
                    ["inputs", "targets"]
                        .iter()
                        .zip(&headers)
                        .map(|(name, h)| FieldSpec {
                            name: (*name).into(),
                            dtype: h.dtype,
                            shape: h.shape[1..].to_vec(),
                        })
                        .collect(),
                );
                first_files = files.clone();
            }
            Some(fields) => {
                for (((file, header), field), first) in
                    files.iter().zip(&headers).zip(fields).zip(&first_files)
                {
                    check_array(file, header, field, samples, Some(&first.file))?;
                }
            }
        }
        chunks.push(ChunkSource {
            number,
            samples,
            files,
        });
    }
    let fields = fields.ok_or_else(|| DatasetError::NoChunks {
        dir: dir.to_owned(),
    })?;
    Ok((fields, chunks))
}

/// The file that should pair with `present`: its name with prefix `from` replaced by `to`.
fn partner(present: &Path, from: &str, to: &str) -> PathBuf {
    let name = present
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = name.strip_prefix(from).unwrap_or(&name);
    present.with_file_name(format!("{to}{suffix}"))
}

/// Chooses validation chunks from the seed: `(train, validation)` index lists, ascending.
fn split_chunks(count: usize, config: &DatasetConfig) -> Result<(Vec<usize>, Vec<usize>)> {
    let held_out = match config.validation {
        ValidationSplit::None => 0,
        ValidationSplit::Chunks(n) => n,
        ValidationSplit::Fraction(f) if (0.0..=1.0).contains(&f) => {
            (f * count as f64).round() as usize
        }
        ValidationSplit::Fraction(f) => {
            return Err(DatasetError::Config(format!(
                "validation fraction {f} is not in [0, 1]"
            )))
        }
    };
    if held_out > 0 && held_out >= count {
        return Err(DatasetError::Config(format!(
            "{held_out} validation chunks leave none of the {count} chunks for training"
        )));
    }
    let mut order: Vec<usize> = (0..count).collect();
    SplitMix64::stream(config.seed, u64::MAX).shuffle(&mut order);
    let mut validation = order[..held_out].to_vec();
    let mut train = order[held_out..].to_vec();
    validation.sort_unstable();
    train.sort_unstable();
    Ok((train, validation))
}

/// SplitMix64: tiny, fast, and identical on every platform and crate version, so a seed means
/// the same order forever.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    /// Independent generator for `(seed, stream)`.
    fn stream(seed: u64, stream: u64) -> Self {
        let mut mixer = SplitMix64(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
        SplitMix64(mixer.next_u64())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), unbiased (Lemire's multiply-and-reject).
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as usize;
            }
        }
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// File layout a [`ChunkWriter`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkLayout {
    /// `volume_samples_NNN.npz` + `image_samples_NNN.npz`, key `arr_0` (VoxelNeuralRender).
    VoxelNeuralRender,
    /// `chunk_NNN.npz` holding keys `inputs` and `targets`, indexed by `dataset.json`.
    Manifest,
}

/// Accumulates `(input, target)` samples and writes a chunk every `samples_per_chunk`.
/// Files are written atomically; `NNN` is zero-padded to three digits.
#[derive(Debug)]
pub struct ChunkWriter {
    dir: PathBuf,
    layout: ChunkLayout,
    samples_per_chunk: usize,
    compressed: bool,
    pending: [Vec<Tensor>; 2],
    fields: Option<[(Vec<usize>, DType); 2]>,
    written: Vec<ManifestChunk>,
}

impl ChunkWriter {
    /// A writer into `dir` (created if missing). `samples_per_chunk` is VoxelNeuralRender's 100
    /// by convention and must be at least 1. Entries are stored uncompressed unless
    /// [`ChunkWriter::compressed`] is set.
    pub fn new(
        dir: impl AsRef<Path>,
        layout: ChunkLayout,
        samples_per_chunk: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        if samples_per_chunk == 0 {
            return Err(DatasetError::Config(
                "samples_per_chunk must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|source| DatasetError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            layout,
            samples_per_chunk,
            compressed: false,
            pending: [Vec::new(), Vec::new()],
            fields: None,
            written: Vec::new(),
        })
    }

    /// Deflate-compress the chunk files (`numpy.savez_compressed`).
    pub fn compressed(mut self, compressed: bool) -> Self {
        self.compressed = compressed;
        self
    }

    /// Adds one sample: `input` e.g. `[1, D, H, W]`, `target` e.g. `[H, W, 1]`, each in the dtype
    /// to store. Every sample must match the first in shape and dtype.
    pub fn push(&mut self, input: &Tensor, target: &Tensor) -> Result<()> {
        let samples = [input, target];
        let described = samples.map(|t| (t.dims().to_vec(), t.dtype()));
        match &self.fields {
            None => self.fields = Some(described),
            Some(expected) => {
                for ((name, (shape, dtype)), (want_shape, want_dtype)) in
                    ["inputs", "targets"].iter().zip(&described).zip(expected)
                {
                    if shape != want_shape || dtype != want_dtype {
                        return Err(DatasetError::SampleMismatch {
                            field: (*name).into(),
                            found: shape.clone(),
                            found_dtype: *dtype,
                            expected: want_shape.clone(),
                            expected_dtype: *want_dtype,
                        });
                    }
                }
            }
        }
        for (pending, tensor) in self.pending.iter_mut().zip(samples) {
            pending.push(tensor.to_device(&Device::Cpu)?);
        }
        if self.pending[0].len() == self.samples_per_chunk {
            self.flush()?;
        }
        Ok(())
    }

    /// Chunks written so far.
    pub fn chunks_written(&self) -> usize {
        self.written.len()
    }

    /// Writes the last partial chunk (and, for [`ChunkLayout::Manifest`], `dataset.json`);
    /// returns the number of chunks written.
    pub fn finish(mut self) -> Result<usize> {
        if !self.pending[0].is_empty() {
            self.flush()?;
        }
        if self.layout == ChunkLayout::Manifest {
            if let Some(fields) = &self.fields {
                let manifest = Manifest {
                    fields: ["inputs", "targets"]
                        .iter()
                        .zip(fields)
                        .map(|(name, (shape, dtype))| {
                            Ok(FieldSpec {
                                name: (*name).into(),
                                dtype: NpyDtype::for_tensor_dtype(*dtype)?,
                                shape: shape.clone(),
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                    chunks: std::mem::take(&mut self.written),
                };
                let path = self.dir.join(MANIFEST_FILE);
                let json =
                    serde_json::to_vec_pretty(&manifest).map_err(|e| DatasetError::Manifest {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                write_atomically(&path, |w| std::io::Write::write_all(w, &json)).map_err(
                    |source| DatasetError::Io {
                        path: path.clone(),
                        source,
                    },
                )?;
                return Ok(manifest.chunks.len());
            }
        }
        Ok(self.written.len())
    }

    fn flush(&mut self) -> Result<()> {
        let number = self.written.len();
        let samples = self.pending[0].len();
        let arrays = self
            .pending
            .iter()
            .map(|rows| Ok(NpyArray::from_tensor(&Tensor::stack(rows, 0)?)?))
            .collect::<Result<Vec<_>>>()?;
        let mut files = BTreeMap::new();
        match self.layout {
            ChunkLayout::VoxelNeuralRender => {
                for ((prefix, array), field) in [VOLUME_PREFIX, IMAGE_PREFIX]
                    .iter()
                    .zip(&arrays)
                    .zip(["inputs", "targets"])
                {
                    let name = format!("{prefix}{number:03}.npz");
                    write_npz(self.dir.join(&name), &[(VNR_KEY, array)], self.compressed)?;
                    files.insert(
                        field.to_string(),
                        FieldFile {
                            file: name.into(),
                            key: VNR_KEY.into(),
                        },
                    );
                }
            }
            ChunkLayout::Manifest => {
                let name = format!("chunk_{number:03}.npz");
                write_npz(
                    self.dir.join(&name),
                    &[("inputs", &arrays[0]), ("targets", &arrays[1])],
                    self.compressed,
                )?;
                for field in ["inputs", "targets"] {
                    files.insert(
                        field.to_string(),
                        FieldFile {
                            file: name.clone().into(),
                            key: field.into(),
                        },
                    );
                }
            }
        }
        self.written.push(ManifestChunk { samples, files });
        self.pending.iter_mut().for_each(Vec::clear);
        Ok(())
    }
}

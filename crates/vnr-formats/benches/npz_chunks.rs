//! Streams a VoxelNeuralRender-sized chunked dataset: 4 chunks × 100 samples of 64³ f32 volumes
//! and 256×256 f64 images (≈ 630 MB of arrays), stored (as `numpy.savez` writes them).
//!
//! The data lives in `$VNR_BENCH_DIR` (default `target/npz-chunks-bench`), generated on first
//! use and reused afterwards, so `tools/bench/npz_peer.py` can time numpy on the very same
//! files. Besides criterion's report, the bench writes `rust_throughput.json` there, which the
//! peer script reads to print the ours/numpy ratio.
//!
//! Run: `cargo bench -p vnr-formats --bench npz_chunks` (release build).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, Throughput};
use vnr_formats::dataset::{ChunkLayout, ChunkWriter, ChunkedDataset, DatasetConfig};
use vnr_formats::npz::NpzReader;

const CHUNKS: usize = 4;
const SAMPLES: usize = 100;
const SIDE: usize = 64;
const IMAGE: usize = 256;
/// Timed repetitions behind the median (and min/max spread) written for the peer script.
const RUNS: usize = 7;
/// Decoded bytes per sample as stored: f32 volume + f64 image.
const SAMPLE_BYTES: u64 = (SIDE * SIDE * SIDE * 4 + IMAGE * IMAGE * 8) as u64;

fn data_dir() -> PathBuf {
    std::env::var_os("VNR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/npz-chunks-bench")
        })
}

fn ensure_dataset(dir: &Path) {
    let complete = (0..CHUNKS).all(|c| {
        dir.join(format!("volume_samples_{c:03}.npz")).is_file()
            && dir.join(format!("image_samples_{c:03}.npz")).is_file()
    });
    if complete {
        return;
    }
    let dev = Device::Cpu;
    let mut writer =
        ChunkWriter::new(dir, ChunkLayout::VoxelNeuralRender, SAMPLES).expect("writer");
    for i in 0..CHUNKS * SAMPLES {
        // Non-constant contents so nothing is special-cased.
        let volume = (Tensor::arange(0f32, (SIDE * SIDE * SIDE) as f32, &dev).expect("arange")
            * (1.0 / (i + 1) as f64))
            .and_then(|t| t.reshape((1, SIDE, SIDE, SIDE)))
            .expect("volume");
        let image = Tensor::arange(0f64, (IMAGE * IMAGE) as f64, &dev)
            .and_then(|t| t.affine(1e-3, i as f64))
            .and_then(|t| t.reshape((IMAGE, IMAGE, 1)))
            .expect("image");
        writer.push(&volume, &image).expect("push");
    }
    writer.finish().expect("finish");
}

/// Decodes every chunk's two arrays in turn, as `numpy.load(f)["arr_0"]` does.
fn decode_all(dir: &Path) -> usize {
    let mut elements = 0;
    for c in 0..CHUNKS {
        for prefix in ["volume_samples_", "image_samples_"] {
            let path = dir.join(format!("{prefix}{c:03}.npz"));
            let array = NpzReader::open(&path)
                .and_then(|mut r| r.array("arr_0"))
                .expect("decode");
            elements += array.len();
        }
    }
    elements
}

/// Streams one shuffled epoch in batches of 16 as f32 tensors.
fn stream_epoch(ds: &ChunkedDataset) -> usize {
    ds.epoch(0)
        .expect("epoch")
        .map(|b| b.expect("batch").len())
        .sum()
}

/// Wall-clock seconds of `runs` calls of `f`, sorted ascending.
fn timings(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut seconds: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds
}

/// `"KIND_samples_per_s": median, ..._min/_max` JSON fields for sorted `seconds`.
fn throughput_fields(kind: &str, seconds: &[f64], samples: f64, bytes: f64) -> String {
    let median = seconds[seconds.len() / 2];
    let (fastest, slowest) = (seconds[0], seconds[seconds.len() - 1]);
    format!(
        "\"{kind}_samples_per_s\": {:.3}, \"{kind}_samples_per_s_min\": {:.3}, \"{kind}_samples_per_s_max\": {:.3}, \"{kind}_bytes_per_s\": {:.1}",
        samples / median,
        samples / slowest,
        samples / fastest,
        bytes / median
    )
}

fn main() {
    let dir = data_dir();
    ensure_dataset(&dir);
    let config = DatasetConfig {
        batch_size: 16,
        dtype: DType::F32,
        ..DatasetConfig::default()
    };
    let ds = ChunkedDataset::open(&dir, config).expect("open dataset");
    let samples = (CHUNKS * SAMPLES) as f64;
    let bytes = SAMPLE_BYTES as f64 * samples;

    // Plain timings for the numpy comparison (median of RUNS, files in the page cache).
    decode_all(&dir);
    let decode_s = timings(RUNS, || {
        decode_all(&dir);
    });
    let stream_s = timings(RUNS, || {
        stream_epoch(&ds);
    });
    let json = format!(
        "{{{}, {}}}\n",
        throughput_fields("decode", &decode_s, samples, bytes),
        throughput_fields("stream", &stream_s, samples, bytes)
    );
    println!("npz_chunks: {}", json.trim());
    std::fs::write(dir.join("rust_throughput.json"), json).expect("write rust_throughput.json");

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("npz_chunks");
    group.throughput(Throughput::Bytes(SAMPLE_BYTES * (CHUNKS * SAMPLES) as u64));
    group.bench_function("decode_4x100_chunks", |b| b.iter(|| decode_all(&dir)));
    group.bench_function("stream_epoch_batch16_f32", |b| b.iter(|| stream_epoch(&ds)));
    group.finish();
    c.final_summary();
}

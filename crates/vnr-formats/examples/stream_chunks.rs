//! Streams one shuffled epoch of a chunked dataset and prints what memory it should need, so
//! the peak resident set can be checked against "at most `M` decoded chunks + one batch".
//!
//! Usage: `stream_chunks [DIR] [BATCH_SIZE] [MAX_DECODED_CHUNKS]` (defaults:
//! `$VNR_BENCH_DIR` or `target/npz-chunks-bench`, 16, 2). The bench data is made by
//! `cargo bench -p vnr-formats --bench npz_chunks` or `python3 tools/bench/npz_peer.py`.
//! Measure the peak with:
//!
//! ```text
//! cargo build --release -p vnr-formats --example stream_chunks
//! /usr/bin/time -v target/release/examples/stream_chunks target/npz-chunks-bench 16 2
//! ```
//!
//! and read "Maximum resident set size" (KiB).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;
use vnr_formats::dataset::{ChunkedDataset, DatasetConfig, FieldSpec};

/// Positional argument `index` parsed as a count, or `default` when absent.
fn count_arg(index: usize, default: usize) -> Result<usize, String> {
    match std::env::args().nth(index) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("argument {index} must be a count, got '{text}'")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("VNR_BENCH_DIR").ok())
        .map_or_else(|| PathBuf::from("target/npz-chunks-bench"), PathBuf::from);
    let config = DatasetConfig {
        batch_size: count_arg(2, 16)?,
        max_decoded_chunks: count_arg(3, 2)?,
        dtype: DType::F32,
        ..DatasetConfig::default()
    };
    let dataset = ChunkedDataset::open(&dir, config.clone())?;

    // Sizes the bound is made of: the largest chunk as stored (what one array decode holds)
    // and one batch in the delivered dtype.
    let sample_bytes = |size_of: &dyn Fn(&FieldSpec) -> usize| {
        dataset
            .fields()
            .iter()
            .map(|f| f.shape.iter().product::<usize>() * size_of(f))
            .sum::<usize>()
    };
    let stored_sample = sample_bytes(&|f| f.dtype.itemsize());
    let delivered_sample = sample_bytes(&|_| config.dtype.size_in_bytes());
    let largest_chunk = dataset
        .chunks()
        .iter()
        .map(|c| c.samples)
        .max()
        .unwrap_or(0);
    let chunk_bytes = largest_chunk * stored_sample;
    let batch_bytes = config.batch_size * delivered_sample;
    println!(
        "{}: {} chunks, largest {largest_chunk} samples = {chunk_bytes} bytes decoded as stored \
         ({} bytes as {:?}); batch {} = {batch_bytes} bytes; bound {} x chunk + batch = {} bytes",
        dir.display(),
        dataset.chunks().len(),
        largest_chunk * delivered_sample,
        config.dtype,
        config.batch_size,
        config.max_decoded_chunks,
        config.max_decoded_chunks * chunk_bytes + batch_bytes,
    );

    let start = Instant::now();
    let mut batches = dataset.epoch(0)?;
    let (mut count, mut samples) = (0usize, 0usize);
    for batch in batches.by_ref() {
        samples += batch?.len();
        count += 1;
    }
    let stats = batches.stats();
    println!(
        "streamed {samples} samples in {count} batches in {:.3} s; peak resident chunks {} \
         (limit {}), chunks decoded {}",
        start.elapsed().as_secs_f64(),
        stats.peak_resident_chunks,
        config.max_decoded_chunks,
        stats.chunks_decoded,
    );
    Ok(())
}

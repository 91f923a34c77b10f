//! Chunked dataset streaming: coverage, determinism, splits, memory bound, errors.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vnr_formats::dataset::{
    ChunkLayout, ChunkWriter, ChunkedDataset, DatasetConfig, DatasetError, SampleId,
    ValidationSplit, MAX_DECODED_CHUNKS,
};
use vnr_formats::npz::{write_npz, NpyArray, NpyData, NpzError};

const CHUNKS: usize = 5;
const PER_CHUNK: usize = 10;
const SIDE: usize = 8;
const IMAGE: usize = 4;

/// Writes `CHUNKS × PER_CHUNK` samples; sample `g` has volume values `g` (f32) and image values
/// `g + 0.5` (f64), so every delivered row can be traced back to its sample.
fn write_dataset(dir: &Path, layout: ChunkLayout, compressed: bool) {
    let dev = Device::Cpu;
    let mut writer = ChunkWriter::new(dir, layout, PER_CHUNK)
        .unwrap()
        .compressed(compressed);
    for g in 0..CHUNKS * PER_CHUNK {
        let volume = Tensor::full(g as f32, (1, SIDE, SIDE, SIDE), &dev).unwrap();
        let image = Tensor::full(g as f64 + 0.5, (IMAGE, IMAGE, 1), &dev).unwrap();
        writer.push(&volume, &image).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), CHUNKS);
}

fn config(batch: usize, max_chunks: usize, seed: u64) -> DatasetConfig {
    DatasetConfig {
        batch_size: batch,
        max_decoded_chunks: max_chunks,
        seed,
        ..DatasetConfig::default()
    }
}

/// Streams an epoch, checking every row against its sample id; returns the global ids.
fn collect_epoch(ds: &ChunkedDataset, epoch: u64) -> Vec<usize> {
    let mut ids = Vec::new();
    for batch in ds.epoch(epoch).unwrap() {
        let batch = batch.unwrap();
        ids.extend(check_batch(
            ds,
            &batch.inputs,
            &batch.targets,
            &batch.samples,
        ));
    }
    ids
}

fn check_batch(
    ds: &ChunkedDataset,
    inputs: &Tensor,
    targets: &Tensor,
    samples: &[SampleId],
) -> Vec<usize> {
    let b = samples.len();
    assert_eq!(inputs.dims(), [b, 1, SIDE, SIDE, SIDE]);
    assert_eq!(targets.dims(), [b, IMAGE, IMAGE, 1]);
    let volumes = inputs.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let images = targets.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    samples
        .iter()
        .zip(volumes.iter().zip(&images))
        .map(|(id, (v, im))| {
            let g = ds.chunks()[id.chunk].number as usize * PER_CHUNK + id.index;
            assert!(v.iter().all(|&x| x == g as f32), "volume of sample {id:?}");
            assert!(
                im.iter().all(|&x| x == g as f32 + 0.5),
                "image of sample {id:?}"
            );
            g
        })
        .collect()
}

#[test]
fn every_sample_exactly_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    for max_chunks in [1, 2, 3, 6] {
        let ds = ChunkedDataset::open(dir.path(), config(7, max_chunks, 11)).unwrap();
        for epoch in 0..2 {
            let ids = collect_epoch(&ds, epoch);
            assert_eq!(ids.len(), CHUNKS * PER_CHUNK);
            let unique: BTreeSet<usize> = ids.iter().copied().collect();
            assert_eq!(unique.len(), CHUNKS * PER_CHUNK, "M={max_chunks}");
        }
    }
}

#[test]
fn same_seed_same_order_different_seed_or_epoch_differs() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    let a = ChunkedDataset::open(dir.path(), config(8, 3, 5)).unwrap();
    let b = ChunkedDataset::open(dir.path(), config(8, 3, 5)).unwrap();
    let c = ChunkedDataset::open(dir.path(), config(8, 3, 6)).unwrap();
    let order_a = collect_epoch(&a, 0);
    assert_eq!(order_a, collect_epoch(&b, 0));
    assert_ne!(order_a, collect_epoch(&c, 0));
    assert_ne!(order_a, collect_epoch(&a, 1));
    assert_ne!(order_a, (0..CHUNKS * PER_CHUNK).collect::<Vec<_>>());
}

#[test]
fn pool_of_two_chunks_interleaves_them() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    let ds = ChunkedDataset::open(dir.path(), config(PER_CHUNK, 3, 1)).unwrap();
    let first: Vec<usize> = collect_epoch(&ds, 0).into_iter().take(PER_CHUNK).collect();
    let chunks: HashSet<usize> = first.iter().map(|g| g / PER_CHUNK).collect();
    assert_eq!(
        chunks.len(),
        2,
        "first batch {first:?} should mix two chunks"
    );
}

#[test]
fn unshuffled_batches_cross_chunk_boundaries_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, true);
    let cfg = DatasetConfig {
        shuffle: false,
        ..config(7, 2, 0)
    };
    let ds = ChunkedDataset::open(dir.path(), cfg).unwrap();
    let batches: Vec<_> = ds.epoch(0).unwrap().map(Result::unwrap).collect();
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, [7, 7, 7, 7, 7, 7, 7, 1]);
    let second: Vec<SampleId> = batches[1].samples.clone();
    let expected: Vec<SampleId> = (7..10)
        .map(|index| SampleId { chunk: 0, index })
        .chain((0..4).map(|index| SampleId { chunk: 1, index }))
        .collect();
    assert_eq!(second, expected);
    let ids: Vec<usize> = batches
        .iter()
        .flat_map(|b| check_batch(&ds, &b.inputs, &b.targets, &b.samples))
        .collect();
    assert_eq!(ids, (0..CHUNKS * PER_CHUNK).collect::<Vec<_>>());
}

#[test]
fn drop_last_drops_only_the_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    let cfg = DatasetConfig {
        drop_last: true,
        ..config(7, 2, 3)
    };
    let ds = ChunkedDataset::open(dir.path(), cfg).unwrap();
    let sizes: Vec<usize> = ds.epoch(0).unwrap().map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, [7; 7]);
}

#[test]
fn validation_split_is_by_chunk_disjoint_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    let split = |seed, validation| {
        let cfg = DatasetConfig {
            validation,
            ..config(4, 2, seed)
        };
        ChunkedDataset::open(dir.path(), cfg).unwrap()
    };
    let ds = split(9, ValidationSplit::Chunks(2));
    assert_eq!(ds.validation_chunks().len(), 2);
    assert_eq!(ds.train_chunks().len(), 3);
    let train_chunks: BTreeSet<usize> = collect_epoch(&ds, 0)
        .iter()
        .map(|g| g / PER_CHUNK)
        .collect();
    let mut val_ids = Vec::new();
    for batch in ds.validation().unwrap() {
        let batch = batch.unwrap();
        val_ids.extend(check_batch(
            &ds,
            &batch.inputs,
            &batch.targets,
            &batch.samples,
        ));
    }
    // Validation streams in numeric order, complete.
    let mut sorted = val_ids.clone();
    sorted.sort_unstable();
    assert_eq!(val_ids, sorted);
    assert_eq!(val_ids.len(), 2 * PER_CHUNK);
    let val_chunks: BTreeSet<usize> = val_ids.iter().map(|g| g / PER_CHUNK).collect();
    assert!(train_chunks.is_disjoint(&val_chunks));
    assert_eq!(train_chunks.len() + val_chunks.len(), CHUNKS);

    assert_eq!(
        split(9, ValidationSplit::Chunks(2)).validation_chunks(),
        ds.validation_chunks()
    );
    assert_eq!(
        split(9, ValidationSplit::Fraction(0.4)).validation_chunks(),
        ds.validation_chunks()
    );
    let others: BTreeSet<Vec<usize>> = (0..8)
        .map(|seed| {
            split(seed, ValidationSplit::Chunks(2))
                .validation_chunks()
                .to_vec()
        })
        .collect();
    assert!(others.len() > 1, "the split must depend on the seed");
    let too_many = DatasetConfig {
        validation: ValidationSplit::Chunks(CHUNKS),
        ..config(4, 2, 0)
    };
    assert!(matches!(
        ChunkedDataset::open(dir.path(), too_many),
        Err(DatasetError::Config(_))
    ));
}

#[test]
fn huge_decoded_chunk_bounds_are_config_errors_not_overflows() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    for max_chunks in [usize::MAX, 1 << 40, MAX_DECODED_CHUNKS + 1] {
        match ChunkedDataset::open(dir.path(), config(4, max_chunks, 0)) {
            Err(DatasetError::Config(message)) => {
                assert!(message.contains("max_decoded_chunks"), "{message}")
            }
            other => panic!("max_decoded_chunks {max_chunks}: {other:?}"),
        }
    }
    let ds = ChunkedDataset::open(dir.path(), config(4, MAX_DECODED_CHUNKS, 0)).unwrap();
    assert_eq!(collect_epoch(&ds, 0).len(), CHUNKS * PER_CHUNK);
}

#[test]
fn resident_chunks_never_exceed_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    for max_chunks in 1..=4 {
        let ds = ChunkedDataset::open(dir.path(), config(3, max_chunks, 2)).unwrap();
        let mut batches = ds.epoch(0).unwrap();
        while let Some(batch) = batches.next() {
            batch.unwrap();
            // Give the decoder time to fill every free slot before looking.
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert!(batches.stats().resident_chunks <= max_chunks);
        }
        let stats = batches.stats();
        assert!(stats.peak_resident_chunks <= max_chunks, "{stats:?}");
        assert_eq!(
            stats.peak_resident_chunks,
            max_chunks.min(CHUNKS),
            "{stats:?}"
        );
        assert_eq!(stats.chunks_decoded, CHUNKS);
    }
    // Stopping early must not hang on the decoder.
    let ds = ChunkedDataset::open(dir.path(), config(3, 2, 2)).unwrap();
    let mut batches = ds.epoch(0).unwrap();
    batches.next().unwrap().unwrap();
    drop(batches);
}

#[test]
fn f64_images_are_converted_to_the_output_dtype() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    let ds = ChunkedDataset::open(dir.path(), config(4, 2, 0)).unwrap();
    assert_eq!(ds.fields()[1].dtype, vnr_formats::npz::NpyDtype::F64);
    let batch = ds.epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.targets.dtype(), DType::F32);
    assert_eq!(batch.inputs.dtype(), DType::F32);
    let cfg = DatasetConfig {
        dtype: DType::F64,
        ..config(4, 2, 0)
    };
    let ds = ChunkedDataset::open(dir.path(), cfg).unwrap();
    let batch = ds.epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.targets.dtype(), DType::F64);
}

#[test]
fn manifest_layout_with_extra_field() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::Manifest, true);
    let ds = ChunkedDataset::open(dir.path(), config(6, 3, 4)).unwrap();
    assert_eq!(
        collect_epoch(&ds, 0).iter().collect::<BTreeSet<_>>().len(),
        CHUNKS * PER_CHUNK
    );

    // A hand-written manifest with a third field stored in its own file.
    let extra = tempfile::tempdir().unwrap();
    write_dataset(extra.path(), ChunkLayout::VoxelNeuralRender, false);
    let mut chunks = Vec::new();
    for c in 0..CHUNKS {
        let ids = NpyArray::new(
            vec![PER_CHUNK, 2],
            NpyData::I64((0..2 * PER_CHUNK as i64).collect()),
        )
        .unwrap();
        write_npz(
            extra.path().join(format!("ids_{c}.npz")),
            &[("ids", &ids)],
            false,
        )
        .unwrap();
        chunks.push(format!(
            r#"{{"samples": {PER_CHUNK}, "files": {{
                "inputs": {{"file": "volume_samples_{c:03}.npz", "key": "arr_0"}},
                "targets": {{"file": "image_samples_{c:03}.npz", "key": "arr_0"}},
                "ids": {{"file": "ids_{c}.npz", "key": "ids"}}}}}}"#
        ));
    }
    let manifest = format!(
        r#"{{"fields": [
            {{"name": "ids", "dtype": "int64", "shape": [2]}},
            {{"name": "inputs", "dtype": "float32", "shape": [1, {SIDE}, {SIDE}, {SIDE}]}},
            {{"name": "targets", "dtype": "float64", "shape": [{IMAGE}, {IMAGE}, 1]}}],
          "chunks": [{}]}}"#,
        chunks.join(",")
    );
    std::fs::write(extra.path().join("dataset.json"), &manifest).unwrap();
    let cfg = DatasetConfig {
        shuffle: false,
        ..config(4, 2, 0)
    };
    let ds = ChunkedDataset::open(extra.path(), cfg).unwrap();
    let batch = ds.epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.extra.len(), 1);
    assert_eq!(batch.extra[0].0, "ids");
    assert_eq!(batch.extra[0].1.dims(), [4, 2]);
    check_batch(&ds, &batch.inputs, &batch.targets, &batch.samples);

    // Wrong key and wrong dtype name the file.
    let bad_key = manifest.replacen(r#""key": "ids""#, r#""key": "nope""#, 1);
    std::fs::write(extra.path().join("dataset.json"), bad_key).unwrap();
    let err = ChunkedDataset::open(extra.path(), DatasetConfig::default()).unwrap_err();
    assert!(
        matches!(err, DatasetError::Npz(NpzError::MissingArray { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("ids_0.npz"), "{err}");
    let bad_dtype = manifest.replace(r#""dtype": "float64""#, r#""dtype": "float32""#);
    std::fs::write(extra.path().join("dataset.json"), bad_dtype).unwrap();
    let err = ChunkedDataset::open(extra.path(), DatasetConfig::default()).unwrap_err();
    assert!(matches!(err, DatasetError::WrongDtype { .. }), "{err}");
    assert!(err.to_string().contains("image_samples_000.npz"), "{err}");
    std::fs::write(
        extra.path().join("dataset.json"),
        r#"{"fields": [], "chunks": [], "x": 1}"#,
    )
    .unwrap();
    let err = ChunkedDataset::open(extra.path(), DatasetConfig::default()).unwrap_err();
    assert!(matches!(err, DatasetError::Manifest { .. }), "{err}");
}

#[test]
fn missing_pair_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    std::fs::remove_file(dir.path().join("image_samples_002.npz")).unwrap();
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DatasetError::MissingPair { .. }), "{msg}");
    assert!(
        msg.contains("volume_samples_002.npz") && msg.contains("image_samples_002.npz"),
        "{msg}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = ChunkedDataset::open(empty.path(), DatasetConfig::default()).unwrap_err();
    assert!(matches!(err, DatasetError::NoChunks { .. }), "{err}");
}

#[test]
fn truncated_chunk_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), ChunkLayout::VoxelNeuralRender, false);
    let victim = dir.path().join("volume_samples_003.npz");
    let bytes = std::fs::read(&victim).unwrap();
    // Opened first, truncated afterwards: the stream reports it when it reaches the chunk.
    let ds = ChunkedDataset::open(dir.path(), config(4, 2, 0)).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = ds
        .epoch(0)
        .unwrap()
        .find_map(Result::err)
        .expect("an error");
    assert!(err.to_string().contains("volume_samples_003.npz"), "{err}");
    // Truncated before opening: open refuses.
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    assert!(err.to_string().contains("volume_samples_003.npz"), "{err}");
}

fn write_pair(
    dir: &Path,
    number: usize,
    samples: (usize, usize),
    side: usize,
    image_dtype_f32: bool,
) {
    let volume = NpyArray::new(
        vec![samples.0, 1, side, side, side],
        NpyData::F32(vec![0.0; samples.0 * side * side * side]),
    )
    .unwrap();
    let n = samples.1 * IMAGE * IMAGE;
    let image_data = if image_dtype_f32 {
        NpyData::F32(vec![0.0; n])
    } else {
        NpyData::F64(vec![0.0; n])
    };
    let image = NpyArray::new(vec![samples.1, IMAGE, IMAGE, 1], image_data).unwrap();
    write_npz(
        dir.join(format!("volume_samples_{number}.npz")),
        &[("arr_0", &volume)],
        false,
    )
    .unwrap();
    write_npz(
        dir.join(format!("image_samples_{number}.npz")),
        &[("arr_0", &image)],
        false,
    )
    .unwrap();
}

#[test]
fn inconsistent_chunks_are_errors_naming_the_file() {
    // Sample counts disagree within a chunk.
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 1, (3, 3), 4, false);
    write_pair(dir.path(), 2, (3, 2), 4, false);
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    assert!(
        matches!(err, DatasetError::SampleCountMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("image_samples_2.npz"), "{err}");

    // Volume shapes disagree across chunks (numbering is numeric: 9 before 10).
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 9, (3, 3), 4, false);
    write_pair(dir.path(), 10, (3, 3), 5, false);
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    assert!(matches!(err, DatasetError::WrongShape { .. }), "{err}");
    assert!(err.to_string().contains("volume_samples_10.npz"), "{err}");
    assert!(err.to_string().contains("volume_samples_9.npz"), "{err}");

    // Image dtype disagrees across chunks.
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 1, (3, 3), 4, false);
    write_pair(dir.path(), 2, (3, 3), 4, true);
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    assert!(matches!(err, DatasetError::WrongDtype { .. }), "{err}");

    // Wrong key in a VoxelNeuralRender file.
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 1, (3, 3), 4, false);
    let other = NpyArray::new(vec![1], NpyData::F32(vec![0.0])).unwrap();
    write_npz(
        dir.path().join("volume_samples_1.npz"),
        &[("volumes", &other)],
        false,
    )
    .unwrap();
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains("volume_samples_1.npz") && err.to_string().contains("arr_0"),
        "{err}"
    );

    // Duplicate numbers.
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 1, (3, 3), 4, false);
    std::fs::copy(
        dir.path().join("volume_samples_1.npz"),
        dir.path().join("volume_samples_001.npz"),
    )
    .unwrap();
    let err = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap_err();
    assert!(
        matches!(err, DatasetError::DuplicateChunk { number: 1, .. }),
        "{err}"
    );
}

#[test]
fn writer_refuses_mismatched_samples() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let mut writer = ChunkWriter::new(dir.path(), ChunkLayout::VoxelNeuralRender, 4).unwrap();
    let v = Tensor::zeros((1, 4, 4, 4), DType::F32, &dev).unwrap();
    let im = Tensor::zeros((4, 4, 1), DType::F64, &dev).unwrap();
    writer.push(&v, &im).unwrap();
    let other = Tensor::zeros((1, 4, 4, 5), DType::F32, &dev).unwrap();
    assert!(matches!(
        writer.push(&other, &im),
        Err(DatasetError::SampleMismatch { .. })
    ));
    let im32 = im.to_dtype(DType::F32).unwrap();
    assert!(matches!(
        writer.push(&v, &im32),
        Err(DatasetError::SampleMismatch { .. })
    ));
    assert_eq!(writer.finish().unwrap(), 1);
    let ds = ChunkedDataset::open(dir.path(), DatasetConfig::default()).unwrap();
    assert_eq!(ds.train_samples(), 1);
}

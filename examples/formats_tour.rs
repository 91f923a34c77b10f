//! A tour of `vnr::formats` that needs no input files: voxelise an analytic sphere, write it as
//! binvox and as an OpenVDB fog volume, read both back, then write a small VoxelNeuralRender-style
//! chunked dataset and stream it in shuffled batches.
//!
//! ```sh
//! cargo run --release -p vnr --example formats_tour
//! ```

use candle_core::{DType, Device, Tensor};
use vnr::formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr::formats::dataset::{ChunkLayout, ChunkWriter, ChunkedDataset, DatasetConfig};
use vnr::formats::vdb::{read_vdb, write_vdb, DenseSamples, Grid, Transform, WriteOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let n = 32;

    // Occupancy of a sphere of radius 12 voxels, [X, Y, Z] with Z fastest.
    let centre = (n as f32 - 1.0) / 2.0;
    let mut occupancy = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let d2 = [i, j, k]
                    .map(|c| (c as f32 - centre).powi(2))
                    .iter()
                    .sum::<f32>();
                occupancy.push(u8::from(d2 < 144.0));
            }
        }
    }

    // binvox: the unit cube holds the grid.
    let grid = BinvoxGrid::new([n; 3], occupancy.clone(), BinvoxVersion::V1)?
        .with_transform([-0.5; 3], 1.0)?;
    let binvox_path = dir.path().join("sphere.binvox");
    grid.write(&binvox_path)?;
    let read_back = BinvoxGrid::read(&binvox_path)?;
    println!(
        "binvox: {} occupied voxels of {}³, voxel size {}",
        read_back.occupied_count(),
        n,
        read_back.voxel_size()
    );

    // OpenVDB fog volume with the same placement: index (0,0,0) is the first voxel centre.
    let densities: Vec<f32> = occupancy.iter().map(|&v| f32::from(v)).collect();
    let voxel = 1.0 / n as f64;
    let transform = Transform::uniform_scale_translate(voxel, [-0.5 + voxel / 2.0; 3])?;
    let samples = DenseSamples {
        values: &densities,
        dims: [n; 3],
        origin: [0; 3],
    };
    let fog = Grid::fog_from_dense("density", samples, transform, 0.0)?;
    let vdb_path = dir.path().join("sphere.vdb");
    write_vdb(&vdb_path, &[&fog], WriteOptions::default())?;
    let file = read_vdb(&vdb_path)?;
    let density = file.typed_grid::<f32>("density")?;
    println!(
        "vdb: grid `density`, {} active voxels, bbox {:?}",
        density.active_voxel_count(),
        density.active_bbox()
    );

    // A chunked dataset: 3 chunks of 10 (volume, image) samples, streamed in batches of 4.
    let data_dir = dir.path().join("dataset");
    let mut writer = ChunkWriter::new(&data_dir, ChunkLayout::VoxelNeuralRender, 10)?;
    let device = Device::Cpu;
    for s in 0..30 {
        let volume = Tensor::full(s as f32, (1, 8, 8, 8), &device)?;
        let image = Tensor::full(s as f64, (16, 16, 1), &device)?;
        writer.push(&volume, &image)?;
    }
    writer.finish()?;
    let config = DatasetConfig {
        batch_size: 4,
        seed: 7,
        ..DatasetConfig::default()
    };
    let dataset = ChunkedDataset::open(&data_dir, config)?;
    let mut seen = 0;
    for batch in dataset.epoch(0)? {
        let batch = batch?;
        seen += batch.inputs.dim(0)?;
        assert_eq!(batch.targets.dtype(), DType::F32);
    }
    println!(
        "dataset: {} chunks, {seen} samples streamed in shuffled batches",
        dataset.chunks().len()
    );
    Ok(())
}

//! The OpenVDB side of `vnr info` and `vnr convert`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use vnr_formats::vdb::{
    read_vdb, write_vdb, AnyGrid, DenseLimit, DenseSamples, Grid, GridClass as VdbClass, Transform,
    VdbValue, WriteOptions,
};

use crate::dense::{value_range, DenseGrid, GridClass};
use crate::info::ItemInfo;

/// One item per grid; a grid that could not be read (e.g. a point grid) is listed with its error.
pub fn items(path: &Path) -> Result<Vec<ItemInfo>> {
    let file = read_vdb(path)?;
    Ok(file
        .grids
        .iter()
        .map(|entry| match &entry.grid {
            Ok(grid) => grid_item(grid),
            Err(e) => ItemInfo {
                name: entry.descriptor.name.clone(),
                kind: "grid",
                value_type: Some(entry.descriptor.type_name.clone()),
                error: Some(e.to_string()),
                ..ItemInfo::default()
            },
        })
        .collect())
}

fn range_of<T: VdbValue>(grid: &Grid<T>, as_f64: impl Fn(T) -> f64) -> Option<[f64; 2]> {
    value_range(grid.active_voxels().map(|(_, v)| as_f64(v)))
}

fn length<T: Into<f64> + Copy>(v: [T; 3]) -> f64 {
    v.iter().map(|&c| c.into().powi(2)).sum::<f64>().sqrt()
}

fn grid_item(grid: &AnyGrid) -> ItemInfo {
    // Value ranges of vector grids are ranges of vector lengths.
    let (background, value_range) = match grid {
        AnyGrid::Float(g) => (Some(f64::from(g.background())), range_of(g, f64::from)),
        AnyGrid::Double(g) => (Some(g.background()), range_of(g, |v| v)),
        AnyGrid::Int32(g) => (Some(f64::from(g.background())), range_of(g, f64::from)),
        AnyGrid::Int64(g) => (Some(g.background() as f64), range_of(g, |v| v as f64)),
        AnyGrid::Bool(g) | AnyGrid::Mask(g) => (
            Some(f64::from(u8::from(g.background()))),
            range_of(g, |v| f64::from(u8::from(v))),
        ),
        AnyGrid::Vec3f(g) => (Some(length(g.background())), range_of(g, length)),
        AnyGrid::Vec3d(g) => (Some(length(g.background())), range_of(g, length)),
        AnyGrid::Vec3i(g) => (Some(length(g.background())), range_of(g, length)),
    };
    let transform = grid.transform();
    let bbox = grid.active_bbox();
    let to_world = |ijk: [i32; 3]| transform.index_to_world(ijk.map(f64::from));
    ItemInfo {
        name: grid.name().to_owned(),
        kind: "grid",
        value_type: Some(grid.value_type().to_owned()),
        class: Some(grid.class().as_str().to_owned()),
        dims: bbox.map(|b| b.dims().map(|d| d as usize).to_vec()),
        index_bbox: bbox.map(|b| [b.min.map(i64::from), b.max.map(i64::from)]),
        world_bbox: bbox.map(|b| [to_world(b.min), to_world(b.max)]),
        active_voxels: Some(grid.active_voxel_count()),
        background,
        transform: Some(format!(
            "{} voxel size {:?} translation {:?}",
            transform.kind().name(),
            transform.voxel_size(),
            transform.translation()
        )),
        voxel_size: Some(transform.voxel_size()),
        value_range,
        ..ItemInfo::default()
    }
}

/// The active bounding box of a scalar grid (`--grid NAME`, else the first float or double
/// grid) as a dense grid, refusing more than `max_voxels`.
pub fn read_dense(path: &Path, name: Option<&str>, max_voxels: u64) -> Result<DenseGrid> {
    let file = read_vdb(path)?;
    let grid = match name {
        Some(name) => file.grid(name)?,
        None => file
            .grids
            .iter()
            .filter_map(|e| e.grid.as_ref().ok())
            .find(|g| matches!(g, AnyGrid::Float(_) | AnyGrid::Double(_)))
            .with_context(|| format!("{}: no float or double grid", path.display()))?,
    };
    let limit = DenseLimit { max_voxels };
    let transform = grid.transform();
    let voxel_size =
        uniform_voxel_size(transform).with_context(|| format!("grid `{}`", grid.name()))?;
    let (bbox, values, background) = match grid {
        AnyGrid::Float(g) => {
            let bbox = g.active_bbox().context("the grid has no active voxels")?;
            (bbox, g.to_dense(bbox, limit)?, g.background())
        }
        AnyGrid::Double(g) => {
            let bbox = g.active_bbox().context("the grid has no active voxels")?;
            let values = g.to_dense(bbox, limit)?;
            (
                bbox,
                values.into_iter().map(|v| v as f32).collect(),
                g.background() as f32,
            )
        }
        other => bail!(
            "grid `{}` holds {} values; only float and double grids convert to dense grids",
            other.name(),
            other.value_type()
        ),
    };
    let class = match grid.class() {
        VdbClass::LevelSet => GridClass::LevelSet { background },
        _ => GridClass::FogVolume,
    };
    Ok(DenseGrid {
        dims: bbox.dims().map(|d| d as usize),
        values,
        origin: transform.index_to_world(bbox.min.map(f64::from)),
        voxel_size,
        class,
    })
}

fn uniform_voxel_size(transform: &Transform) -> Result<f64> {
    let [sx, sy, sz] = transform.voxel_size();
    let linear = transform.linear();
    let diagonal = (0..3).all(|r| (0..3).all(|c| r == c || linear[r][c] == 0.0));
    if !diagonal || (sx - sy).abs() > 1e-9 * sx.abs() || (sx - sz).abs() > 1e-9 * sx.abs() {
        bail!("only axis-aligned transforms with cubic voxels convert to dense grids (voxel size {sx} {sy} {sz})");
    }
    Ok(sx)
}

/// Writes a level set (`surface`) or fog volume (`density`) float grid.
pub fn write(grid: &DenseGrid, path: &Path, compress: bool, threshold: f32) -> Result<()> {
    let transform = Transform::uniform_scale_translate(grid.voxel_size, grid.origin)?;
    let samples = DenseSamples {
        values: &grid.values,
        dims: grid.dims,
        origin: [0; 3],
    };
    let vdb_grid = match grid.class {
        GridClass::LevelSet { background } => {
            Grid::level_set_from_dense("surface", samples, transform, background)?
        }
        GridClass::FogVolume => Grid::fog_from_dense("density", samples, transform, threshold)?,
    };
    let options = WriteOptions {
        zip: compress,
        active_mask: true,
    };
    write_vdb(path, &[&vdb_grid], options)?;
    Ok(())
}

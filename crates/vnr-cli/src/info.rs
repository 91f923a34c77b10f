//! `vnr info`: what a file holds, for every supported format.
//!
//! Text and JSON come from the same records: one [`FileInfo`] per file, with one [`ItemInfo`] per
//! grid, array, mesh or image inside it. The JSON keys are documented in the README.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::detect::Format;
use vnr_formats::image::{read_gif, ImageF32};
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{read_npy, NpyArray, NpzReader};

use crate::dense::{as_f64, value_range};

/// Everything `vnr info` reports about one file.
#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub format: &'static str,
    pub bytes: u64,
    pub items: Vec<ItemInfo>,
}

/// One grid, array, mesh or image inside a file. Absent fields do not apply to its kind.
#[derive(Debug, Default, Serialize)]
pub struct ItemInfo {
    pub name: String,
    /// `grid`, `array`, `mesh`, `image` or `animation`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Grid extents `[X, Y, Z]`, array shape, or image `[H, W, C]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dims: Option<Vec<usize>>,
    /// Index-space bounding box of the active voxels, inclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_bbox: Option<[[i64; 3]; 2]>,
    /// World-space bounding box (voxel centres for grids, vertices for meshes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world_bbox: Option<[[f64; 3]; 2]>,
    /// Active voxels (VDB, counting active tiles voxel by voxel) or occupied voxels (binvox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_voxels: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<f64>,
    /// The index→world map, e.g. `scale 0.05 translate [0, 0, 0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voxel_size: Option<[f64; 3]>,
    /// Minimum and maximum of the (active) values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_range: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vertices: Option<usize>,
    /// Vertices left after merging those at identical positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_positions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triangles: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boundary_edges: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_manifold_edges: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<usize>,
    /// Why this item could not be read, when the rest of the file could (e.g. a point grid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Describes each file; fails on the first file that can't be read at all.
pub fn run(files: &[impl AsRef<Path>], json: bool) -> Result<()> {
    let infos = files
        .iter()
        .map(|f| describe(f.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        for info in &infos {
            print_text(info)?;
        }
    }
    Ok(())
}

/// Reads `path` and describes it.
pub fn describe(path: &Path) -> Result<FileInfo> {
    let context = || format!("reading {}", path.display());
    let bytes = std::fs::metadata(path).with_context(context)?.len();
    let format = Format::detect(path)
        .with_context(context)?
        .with_context(|| format!("{}: unrecognised file format", path.display()))?;
    let items = match format {
        Format::Binvox => vec![binvox_item(&BinvoxGrid::read(path)?)],
        Format::Vdb => crate::vdb::items(path)?,
        Format::Npy => vec![array_item("array", &read_npy(path)?)?],
        Format::Npz => npz_items(path)?,
        Format::Obj | Format::Ply | Format::Stl => vec![mesh_item(&TriangleMesh::read(path)?)],
        Format::Png => vec![image_item(&ImageF32::read_png(path)?)],
        Format::Gif => vec![gif_item(path)?],
    };
    Ok(FileInfo {
        path: path.display().to_string(),
        format: format.name(),
        bytes,
        items,
    })
}

fn binvox_item(grid: &BinvoxGrid) -> ItemInfo {
    let [nx, ny, nz] = grid.dims();
    let max = grid.values().iter().copied().max().unwrap_or(0);
    let size = f64::from(grid.voxel_size());
    let first = grid.world_position(0, 0, 0).map(f64::from);
    let last = grid
        .world_position(
            nx.saturating_sub(1),
            ny.saturating_sub(1),
            nz.saturating_sub(1),
        )
        .map(f64::from);
    ItemInfo {
        name: "voxels".into(),
        kind: "grid",
        value_type: Some(format!("u8 (binvox {})", grid.version().number())),
        dims: Some(vec![nx, ny, nz]),
        world_bbox: Some([first, last]),
        active_voxels: Some(grid.occupied_count() as u64),
        background: Some(0.0),
        transform: Some(format!(
            "translate {:?} scale {}",
            grid.translate(),
            grid.scale()
        )),
        voxel_size: Some([size; 3]),
        value_range: Some([0.0, f64::from(max)]),
        ..ItemInfo::default()
    }
}

fn array_item(name: &str, array: &NpyArray) -> Result<ItemInfo> {
    Ok(ItemInfo {
        name: name.to_owned(),
        kind: "array",
        value_type: Some(array.dtype().descr().to_owned()),
        dims: Some(array.shape().to_vec()),
        value_range: value_range(as_f64(array)?),
        ..ItemInfo::default()
    })
}

fn npz_items(path: &Path) -> Result<Vec<ItemInfo>> {
    let mut npz = NpzReader::open(path)?;
    let keys = npz.keys().to_vec();
    Ok(keys
        .iter()
        .map(|key| match npz.array(key) {
            Ok(array) => array_item(key, &array).unwrap_or_else(|e| ItemInfo {
                name: key.clone(),
                kind: "array",
                error: Some(format!("{e:#}")),
                ..ItemInfo::default()
            }),
            Err(e) => ItemInfo {
                name: key.clone(),
                kind: "array",
                error: Some(e.to_string()),
                ..ItemInfo::default()
            },
        })
        .collect())
}

/// Edge statistics are those of the mesh with vertices merged by position, so that seams in
/// texture coordinates (which split vertices in OBJ files) do not count as holes.
fn mesh_item(mesh: &TriangleMesh) -> ItemInfo {
    let merged = mesh.merge_vertices_by_position();
    let stats = merged.edge_stats();
    ItemInfo {
        name: "mesh".into(),
        kind: "mesh",
        world_bbox: mesh
            .bounding_box()
            .map(|(lo, hi)| [lo.map(f64::from), hi.map(f64::from)]),
        vertices: Some(mesh.positions.len()),
        unique_positions: Some(merged.positions.len()),
        triangles: Some(mesh.triangles.len()),
        boundary_edges: Some(stats.boundary_edges),
        non_manifold_edges: Some(stats.non_manifold_edges),
        ..ItemInfo::default()
    }
}

fn image_item(image: &ImageF32) -> ItemInfo {
    ItemInfo {
        name: "image".into(),
        kind: "image",
        value_type: Some("u8 as f32 in [0, 1]".into()),
        dims: Some(vec![image.height, image.width, image.channels]),
        value_range: value_range(image.data.iter().map(|&v| f64::from(v))),
        ..ItemInfo::default()
    }
}

fn gif_item(path: &Path) -> Result<ItemInfo> {
    let mut frames = read_gif(path)?;
    let (width, height) = frames.size();
    let mut count = 0;
    for frame in &mut frames {
        frame?;
        count += 1;
    }
    Ok(ItemInfo {
        name: "animation".into(),
        kind: "animation",
        dims: Some(vec![height, width, 3]),
        frames: Some(count),
        ..ItemInfo::default()
    })
}

/// `path (format, N bytes)`, then per item its name and kind and one `key: value` line per field.
fn print_text(info: &FileInfo) -> Result<()> {
    println!("{} ({}, {} bytes)", info.path, info.format, info.bytes);
    for item in &info.items {
        println!("  {} ({})", item.name, item.kind);
        let serde_json::Value::Object(fields) = serde_json::to_value(item)? else {
            continue;
        };
        for (key, value) in fields {
            if key == "name" || key == "kind" {
                continue;
            }
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            println!("    {key}: {text}");
        }
    }
    Ok(())
}

//! `vnr convert IN OUT`: between grid formats (binvox, VDB, dense npy/npz) and between mesh
//! formats (OBJ, PLY, STL in; OBJ, PLY out). Formats come from the files' contents and names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::detect::Format;
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{read_npy, write_npy, write_npz, NpyArray, NpzReader};

use crate::dense::{DenseGrid, GridClass, ORIGIN_KEY, VALUES_KEY, VOXEL_SIZE_KEY};

/// Arguments of `vnr convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input file.
    pub input: PathBuf,
    /// Output file; its extension picks the format.
    pub output: PathBuf,
    /// VDB input: the grid to convert (default: the first scalar grid).
    #[arg(long)]
    pub grid: Option<String>,
    /// npz input: the array holding the values (default: `values`, else the only rank-3 array).
    #[arg(long)]
    pub key: Option<String>,
    /// What the output grid's values mean (default: what the input's mean; binvox and plain
    /// arrays are fog volumes).
    #[arg(long, value_enum)]
    pub class: Option<ClassArg>,
    /// Fog volumes to binvox: voxels with a value above this are occupied.
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f32,
    /// Level sets from dense arrays: the narrow band's half width in world units (default: 3 voxels).
    #[arg(long)]
    pub background: Option<f32>,
    /// Refuse to densify a sparse grid of more voxels than this.
    #[arg(long, default_value_t = 1 << 28)]
    pub max_voxels: u64,
    /// Compress the output (npz: deflate; vdb: zip).
    #[arg(long)]
    pub compress: bool,
}

/// `--class` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassArg {
    Fog,
    LevelSet,
}

fn is_grid(format: Format) -> bool {
    matches!(
        format,
        Format::Binvox | Format::Vdb | Format::Npy | Format::Npz
    )
}

fn is_mesh(format: Format) -> bool {
    matches!(format, Format::Obj | Format::Ply | Format::Stl)
}

/// Runs the conversion, refusing pairs it cannot convert before reading anything.
pub fn run(args: &ConvertArgs) -> Result<()> {
    let input = Format::detect(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?
        .with_context(|| format!("{}: unrecognised input format", args.input.display()))?;
    let output = Format::from_extension(&args.output).with_context(|| {
        format!(
            "{}: the output's extension names no format (use .binvox, .vdb, .npy, .npz, .obj or .ply)",
            args.output.display()
        )
    })?;
    match (input, output) {
        (i, o) if is_grid(i) && is_grid(o) => {
            let grid = read_grid(&args.input, input, args)?;
            write_grid(&grid, &args.output, output, args)
        }
        (i, Format::Obj | Format::Ply) if is_mesh(i) => {
            let mesh = TriangleMesh::read(&args.input)?;
            if output == Format::Obj {
                mesh.write_obj(&args.output)?;
            } else {
                mesh.write_ply(&args.output)?;
            }
            Ok(())
        }
        (i, o) if is_mesh(i) && is_grid(o) => bail!(
            "converting a mesh ({i}) to a grid ({o}) needs a voxeliser, which vnr does not have yet"
        ),
        (i, o) if is_grid(i) && is_mesh(o) => bail!(
            "converting a grid ({i}) to a mesh ({o}) needs marching cubes, which vnr does not have yet"
        ),
        (i, o) => bail!("vnr cannot convert {i} to {o}"),
    }
}

fn class_override(args: &ConvertArgs, grid: &mut DenseGrid) {
    let class = match args.class {
        Some(ClassArg::Fog) => GridClass::FogVolume,
        Some(ClassArg::LevelSet) => GridClass::LevelSet {
            background: args.background.unwrap_or(3.0 * grid.voxel_size as f32),
        },
        None => return,
    };
    grid.convert_class(class, args.threshold);
}

fn read_grid(path: &Path, format: Format, args: &ConvertArgs) -> Result<DenseGrid> {
    let mut grid = match format {
        Format::Binvox => DenseGrid::from_binvox(&BinvoxGrid::read(path)?),
        Format::Vdb => crate::vdb::read_dense(path, args.grid.as_deref(), args.max_voxels)?,
        Format::Npy => DenseGrid::from_arrays(&read_npy(path)?, None, None, GridClass::FogVolume)?,
        Format::Npz => read_npz_dense(path, args)?,
        other => bail!("{other} is not a grid format"),
    };
    class_override(args, &mut grid);
    Ok(grid)
}

fn read_npz_dense(path: &Path, args: &ConvertArgs) -> Result<DenseGrid> {
    let mut npz = NpzReader::open(path)?;
    let keys = npz.keys().to_vec();
    let key = match &args.key {
        Some(k) => k.clone(),
        None if keys.iter().any(|k| k == VALUES_KEY) => VALUES_KEY.to_owned(),
        None => {
            let rank3: Vec<&String> = keys
                .iter()
                .filter(|k| npz.header(k).map(|h| h.shape.len() == 3).unwrap_or(false))
                .collect();
            match rank3.as_slice() {
                [only] => (*only).clone(),
                _ => bail!(
                    "{}: choose the values array with --key (arrays: {})",
                    path.display(),
                    keys.join(", ")
                ),
            }
        }
    };
    let mut optional = |name: &str| -> Result<Option<NpyArray>> {
        if keys.iter().any(|k| k == name) {
            Ok(Some(npz.array(name)?))
        } else {
            Ok(None)
        }
    };
    let origin = optional(ORIGIN_KEY)?;
    let voxel_size = optional(VOXEL_SIZE_KEY)?;
    let values = npz.array(&key)?;
    DenseGrid::from_arrays(
        &values,
        origin.as_ref(),
        voxel_size.as_ref(),
        GridClass::FogVolume,
    )
    .with_context(|| format!("{}: array `{key}`", path.display()))
}

fn write_grid(grid: &DenseGrid, path: &Path, format: Format, args: &ConvertArgs) -> Result<()> {
    match format {
        Format::Binvox => grid.to_binvox(args.threshold)?.write(path)?,
        Format::Vdb => crate::vdb::write(grid, path, args.compress, args.threshold)?,
        Format::Npy => {
            let (_, values) = grid.to_arrays()?.swap_remove(0);
            write_npy(path, &values)?
        }
        Format::Npz => {
            let arrays = grid.to_arrays()?;
            let named: Vec<(&str, &NpyArray)> = arrays.iter().map(|(k, a)| (*k, a)).collect();
            write_npz(path, &named, args.compress)?
        }
        other => bail!("{other} is not a grid format"),
    }
    Ok(())
}

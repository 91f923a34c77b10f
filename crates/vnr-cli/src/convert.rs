//! `vnr convert IN OUT`: between grid formats (binvox, VDB, dense npy/npz), between mesh
//! formats (OBJ, PLY, STL in; OBJ, PLY out), mesh → grid (the voxeliser, with binvox's
//! normalisation) and grid → mesh (marching cubes; sparse on VDB float grids). Formats come
//! from the files' contents and names.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use vnr_formats::binvox::BinvoxGrid;
use vnr_formats::detect::Format;
use vnr_formats::mesh::TriangleMesh;
use vnr_formats::npz::{read_npy, write_npy, write_npz, NpyArray, NpzReader};
use vnr_formats::vdb::{read_vdb, AnyGrid, GridClass as VdbClass};
use vnr_geom::marching_cubes::{
    marching_cubes, marching_cubes_vdb, pad_grid, DenseField, Inside, MarchingCubesConfig,
    MAX_GRID_VOXELS,
};
use vnr_geom::voxelize::{voxelize, Fill, VoxelFrame};

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
    /// Refuse to densify a sparse grid of more voxels than this (at most 2^34).
    #[arg(long, default_value_t = 1 << 28)]
    pub max_voxels: u64,
    /// Compress the output (npz: deflate; vdb: zip).
    #[arg(long)]
    pub compress: bool,
    /// Mesh → grid: voxels along the mesh's longest side. binvox's normalisation: the bounding
    /// box's minimum is the grid's corner and its longest side spans the grid.
    #[arg(long, default_value_t = 256)]
    pub resolution: usize,
    /// Mesh → grid: occupy the voxels whose centre is inside the mesh (ray parity; the
    /// default; needs a closed mesh).
    #[arg(long, conflicts_with_all = ["surface", "carve"])]
    pub solid: bool,
    /// Mesh → grid: occupy only the voxels the triangles touch.
    #[arg(long, conflicts_with = "carve")]
    pub surface: bool,
    /// Mesh → grid: like binvox, the voxels the triangles touch plus everything the grid's
    /// border cannot reach through the others (tolerates small holes).
    #[arg(long)]
    pub carve: bool,
    /// Grid → mesh: the iso value (default: 0 for level sets, 0.5 for fog volumes, occupancy
    /// and plain arrays).
    #[arg(long)]
    pub iso: Option<f32>,
    /// Grid → mesh: which side of the iso value is inside, which orients the triangles
    /// (default: below for level sets, above for fog volumes, occupancy and plain arrays; say
    /// `below` for an npz/npy of signed distances).
    #[arg(long, value_enum)]
    pub inside: Option<InsideArg>,
}

/// `--inside` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InsideArg {
    /// Inside where `value <= iso` (signed distances).
    Below,
    /// Inside where `value > iso` (densities, occupancy).
    Above,
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
    // The dense copy is allocated whole (and padded for meshing), so the flag gets the cap the
    // grid code puts on the grids it builds.
    ensure!(
        args.max_voxels <= MAX_GRID_VOXELS,
        "--max-voxels {} must be at most {MAX_GRID_VOXELS}",
        args.max_voxels
    );
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
        (i, o) if is_mesh(i) && is_grid(o) => mesh_to_grid(args, o),
        (i, Format::Obj | Format::Ply) if is_grid(i) => grid_to_mesh(args, i, output),
        (i, o) => bail!("vnr cannot convert {i} to {o}"),
    }
}

impl ConvertArgs {
    fn fill(&self) -> Fill {
        if self.surface {
            Fill::Surface
        } else if self.carve {
            Fill::Carved
        } else {
            Fill::Solid
        }
    }

    /// Marching cubes settings for a grid of this class.
    fn surface_config(&self, class: GridClass) -> MarchingCubesConfig {
        let (iso, inside) = match class {
            GridClass::LevelSet { .. } => (0.0, Inside::Below),
            GridClass::FogVolume => (0.5, Inside::Above),
        };
        MarchingCubesConfig {
            iso: self.iso.unwrap_or(iso),
            inside: match self.inside {
                Some(InsideArg::Below) => Inside::Below,
                Some(InsideArg::Above) => Inside::Above,
                None => inside,
            },
        }
    }
}

/// Voxelises the input mesh in binvox's normalisation, then writes it like any occupancy grid
/// (binvox directly, so its `translate`/`scale` are exactly the normalisation's).
fn mesh_to_grid(args: &ConvertArgs, output: Format) -> Result<()> {
    let mesh = TriangleMesh::read(&args.input)?;
    let frame = VoxelFrame::fit_binvox(&mesh, args.resolution)
        .with_context(|| format!("voxelising {}", args.input.display()))?;
    let binvox = voxelize(&mesh, &frame, args.fill())?.to_binvox()?;
    if output == Format::Binvox && args.class.is_none() {
        binvox.write(&args.output)?;
        return Ok(());
    }
    let mut grid = DenseGrid::from_binvox(&binvox);
    if args.class == Some(ClassArg::LevelSet) {
        // binvox's frame touches the mesh: room for the narrow band outside it, so the level
        // set's inside never reaches the grid's border.
        let band = args.background.unwrap_or(3.0 * grid.voxel_size as f32);
        // Saturating: a huge --background must reach pad_grid's size check, not overflow here.
        let layers = ((f64::from(band) / grid.voxel_size).ceil() as usize).saturating_add(1);
        let (values, dims) = pad_grid(&grid.values, grid.dims, layers, 0.0)?;
        grid = DenseGrid {
            dims,
            values,
            origin: grid.origin.map(|o| o - layers as f64 * grid.voxel_size),
            ..grid
        };
    }
    class_override(args, &mut grid);
    write_grid(&grid, &args.output, output, args)
}

/// Marching cubes on the input grid: VDB float grids sparsely, everything else densely with a
/// layer of outside values around it so the surface closes at the grid's border.
fn grid_to_mesh(args: &ConvertArgs, input: Format, output: Format) -> Result<()> {
    let mesh = match input {
        Format::Vdb => match vdb_surface(args)? {
            Some(mesh) => mesh,
            None => dense_surface(&read_grid(&args.input, input, args)?, args)?,
        },
        _ => dense_surface(&read_grid(&args.input, input, args)?, args)?,
    };
    if mesh.is_empty() {
        bail!(
            "{}: no surface crosses the iso value (use --iso)",
            args.input.display()
        );
    }
    if output == Format::Obj {
        mesh.write_obj(&args.output)?;
    } else {
        mesh.write_ply(&args.output)?;
    }
    Ok(())
}

/// The surface of a VDB float grid, extracted sparsely; `None` for a double grid (which goes
/// the dense way).
fn vdb_surface(args: &ConvertArgs) -> Result<Option<TriangleMesh>> {
    let file = read_vdb(&args.input)?;
    let grid = match args.grid.as_deref() {
        Some(name) => file.grid(name)?,
        None => file
            .grids
            .iter()
            .filter_map(|e| e.grid.as_ref().ok())
            .find(|g| matches!(g, AnyGrid::Float(_) | AnyGrid::Double(_)))
            .with_context(|| format!("{}: no float or double grid", args.input.display()))?,
    };
    let AnyGrid::Float(grid) = grid else {
        return Ok(None);
    };
    let class = match (args.class, grid.class) {
        (Some(ClassArg::LevelSet), _) | (None, VdbClass::LevelSet) => GridClass::LevelSet {
            background: grid.background(),
        },
        _ => GridClass::FogVolume,
    };
    Ok(Some(marching_cubes_vdb(grid, &args.surface_config(class))?))
}

fn dense_surface(grid: &DenseGrid, args: &ConvertArgs) -> Result<TriangleMesh> {
    let config = args.surface_config(grid.class);
    // A value on the outside of `iso` for the padding layer: the level set's background, or
    // the fog volume's empty 0, when they are outside.
    let step = grid.voxel_size as f32;
    let outside = match (config.inside, grid.class) {
        (Inside::Below, GridClass::LevelSet { background }) if background > config.iso => {
            background
        }
        (Inside::Below, _) => config.iso + step,
        (Inside::Above, _) if config.iso > 0.0 => 0.0,
        (Inside::Above, _) => config.iso - step,
    };
    let (values, dims) = pad_grid(&grid.values, grid.dims, 1, outside)?;
    let field = DenseField {
        values: &values,
        dims,
        origin: grid.origin.map(|o| o - grid.voxel_size),
        voxel_size: [grid.voxel_size; 3],
    };
    Ok(marching_cubes(&field, &config)?)
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

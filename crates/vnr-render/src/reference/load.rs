//! Scene objects from files and analytic names.

use std::path::Path;

use vnr_formats::binvox::{BinvoxGrid, BinvoxVersion};
use vnr_formats::detect::Format;
use vnr_formats::npz::{read_npy, NpyArray, NpyData, NpzReader};
use vnr_formats::vdb::{read_vdb, AnyGrid, Grid, GridClass, LEAF_VOXELS};

use super::bricks::{block_of, IndexMap, BRICK};
use super::fog::FogVolume;
use super::shading::Object;
use super::surface::GridSurface;
use super::vec3::Vec3;
use super::{RenderError, Sdf};

/// Prefix of analytic scene names (`sdf:sphere`).
pub const SDF_PREFIX: &str = "sdf:";

/// The analytic shapes [`analytic_sdf`] knows, each fitting in `[-1, 1]³`:
///
/// | name | shape |
/// |---|---|
/// | `sphere` | radius 1 at the origin |
/// | `box` | half extents (0.8, 0.6, 0.7) |
/// | `rounded-box` | the same box, edges rounded by 0.2 |
/// | `torus` | around y, major radius 0.7, tube 0.25 |
/// | `capsule` | from (−0.6, −0.3, 0) to (0.6, 0.3, 0), radius 0.35 |
/// | `union` | sphere r 0.6 at (−0.35, 0, 0) ∪ box half 0.45 at (0.4, 0, 0) |
/// | `intersection` | sphere r 1 ∩ box half 0.75 (a rounded cube) |
/// | `smooth-union` | spheres r 0.5 at (±0.4, 0, 0), blend 0.3 |
/// | `difference` | the box with a sphere r 0.6 at (0.5, 0.4, 0.45) cut away (a scooped corner) |
/// | `superquadric` | semi-axes (0.8, 0.6, 0.7), exponents ε₁ 0.4, ε₂ 0.6 (a box with softly rounded edges) |
pub const SDF_NAMES: [&str; 10] = [
    "sphere",
    "box",
    "rounded-box",
    "torus",
    "capsule",
    "union",
    "intersection",
    "smooth-union",
    "difference",
    "superquadric",
];

/// The analytic shape called `name` (see [`SDF_NAMES`]).
pub fn analytic_sdf(name: &str) -> Result<Sdf, RenderError> {
    let o = Vec3::default();
    let sphere = |c: Vec3, r: f64| Sdf::Sphere {
        center: c,
        radius: r,
    };
    let cube = |c: Vec3, h: f64| Sdf::Box {
        center: c,
        half: Vec3::splat(h),
    };
    let the_box = || Sdf::Box {
        center: o,
        half: Vec3::new(0.8, 0.6, 0.7),
    };
    Ok(match name {
        "sphere" => sphere(o, 1.0),
        "box" => the_box(),
        "rounded-box" => Sdf::RoundedBox {
            center: o,
            half: Vec3::new(0.8, 0.6, 0.7),
            radius: 0.2,
        },
        "torus" => Sdf::Torus {
            center: o,
            major: 0.7,
            minor: 0.25,
        },
        "capsule" => Sdf::Capsule {
            a: Vec3::new(-0.6, -0.3, 0.0),
            b: Vec3::new(0.6, 0.3, 0.0),
            radius: 0.35,
        },
        "union" => Sdf::Union(
            Box::new(sphere(Vec3::new(-0.35, 0.0, 0.0), 0.6)),
            Box::new(cube(Vec3::new(0.4, 0.0, 0.0), 0.45)),
        ),
        "intersection" => Sdf::Intersection(Box::new(sphere(o, 1.0)), Box::new(cube(o, 0.75))),
        "smooth-union" => Sdf::SmoothUnion(
            Box::new(sphere(Vec3::new(-0.4, 0.0, 0.0), 0.5)),
            Box::new(sphere(Vec3::new(0.4, 0.0, 0.0), 0.5)),
            0.3,
        ),
        "difference" => Sdf::Difference(
            Box::new(the_box()),
            Box::new(sphere(Vec3::new(0.5, 0.4, 0.45), 0.6)),
        ),
        "superquadric" => Sdf::Superquadric {
            center: o,
            scale: Vec3::new(0.8, 0.6, 0.7),
            e1: 0.4,
            e2: 0.6,
        },
        other => {
            return Err(RenderError::UnknownShape(format!(
                "{other} (known: {})",
                SDF_NAMES.join(", ")
            )))
        }
    })
}

/// How a dense array (npy/npz) becomes an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenseMode {
    /// Signed distances when any value is negative, else occupancy.
    #[default]
    Auto,
    /// Signed distances, negative inside, surface at `iso` (default 0).
    Sdf,
    /// Occupancy/density, inside above `iso` (default 0.5).
    Occupancy,
    /// A fog volume of densities.
    Fog,
}

/// Options for [`load_object`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// VDB: the grid to render (default: the first `float`/`double` grid).
    pub grid: Option<String>,
    /// npy/npz: how to read the values.
    pub dense: DenseMode,
    /// Iso value overriding the default (level sets and SDFs 0, occupancy 0.5). Given for a
    /// VDB fog volume, renders its iso-surface (inside above) instead of fog.
    pub iso: Option<f32>,
}

/// npz key of the values written by `vnr convert` (else the only rank-3 array).
pub const VALUES_KEY: &str = "values";
/// npz key of the world centre of voxel `(0, 0, 0)` (3 numbers; default the origin).
pub const ORIGIN_KEY: &str = "origin";
/// npz key of the voxel edge length (1 number; default 1).
pub const VOXEL_SIZE_KEY: &str = "voxel_size";

/// Loads what `source` names: `sdf:NAME` (see [`SDF_NAMES`]), or a `.vdb` (level set →
/// surface, fog volume or other float grid → fog), `.binvox` (occupancy surface at 0.5) or
/// `.npy`/`.npz` dense grid file, recognised by content.
pub fn load_object(source: &str, options: &LoadOptions) -> Result<Object, RenderError> {
    if let Some(name) = source.strip_prefix(SDF_PREFIX) {
        return Ok(Object::Surface(Box::new(analytic_sdf(name)?)));
    }
    let path = Path::new(source);
    let format = Format::detect(path)
        .map_err(|source| RenderError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| {
            RenderError::UnsupportedInput(format!("{}: unrecognised format", path.display()))
        })?;
    match format {
        Format::Vdb => load_vdb(path, options),
        Format::Binvox => load_binvox(&BinvoxGrid::read(path)?, options),
        Format::Npy => {
            let values = read_npy(path)?;
            dense_object(&values, None, None, options)
        }
        Format::Npz => load_npz(path, options),
        other => Err(RenderError::UnsupportedInput(format!(
            "{}: {other} is not a grid (use .vdb, .binvox, .npy, .npz or sdf:NAME)",
            path.display()
        ))),
    }
}

fn load_vdb(path: &Path, options: &LoadOptions) -> Result<Object, RenderError> {
    let file = read_vdb(path)?;
    let grid = match &options.grid {
        Some(name) => file.grid(name)?,
        None => file
            .grids
            .iter()
            .filter_map(|e| e.grid.as_ref().ok())
            .find(|g| matches!(g, AnyGrid::Float(_) | AnyGrid::Double(_)))
            .ok_or_else(|| {
                RenderError::UnsupportedInput(format!(
                    "{}: no float or double grid to render",
                    path.display()
                ))
            })?,
    };
    match grid {
        AnyGrid::Float(g) => vdb_object(g, |v| v, options),
        AnyGrid::Double(g) => vdb_object(g, |v| v as f32, options),
        other => Err(RenderError::UnsupportedInput(format!(
            "grid '{}' holds {} values; only float and double grids render",
            other.name(),
            other.value_type()
        ))),
    }
}

/// Most blocks of active tiles expanded into bricks (a 4096³ root tile would be 2²⁷).
const MAX_TILE_BLOCKS: u64 = 1 << 22;

fn vdb_object<T: vnr_formats::vdb::VdbValue>(
    grid: &Grid<T>,
    to_f32: impl Fn(T) -> f32 + Sync + Copy,
    options: &LoadOptions,
) -> Result<Object, RenderError> {
    let map = IndexMap::from_vdb(&grid.transform);
    let tree = &grid.tree;
    let value = move |ijk: [i32; 3]| to_f32(tree.get(ijk));
    let mut blocks: Vec<[i32; 3]> = grid
        .leaves()
        .iter()
        .map(|l| l.origin().map(block_of))
        .collect();
    debug_assert_eq!(LEAF_VOXELS, (BRICK * BRICK * BRICK) as usize);
    if grid.class == GridClass::LevelSet {
        let iso = options.iso.unwrap_or(0.0);
        return Ok(Object::Surface(Box::new(GridSurface::from_voxels(
            blocks, value, iso, true, map,
        )?)));
    }
    // Fog: active tiles hold density too.
    let mut tile_blocks = 0u64;
    for (bbox, _) in tree.active_tiles() {
        let lo = bbox.min.map(block_of);
        let hi = bbox.max.map(block_of);
        let count: u64 = (0..3)
            .map(|k| (i64::from(hi[k]) - i64::from(lo[k]) + 1) as u64)
            .product();
        tile_blocks = tile_blocks.saturating_add(count);
        if tile_blocks > MAX_TILE_BLOCKS {
            return Err(RenderError::InvalidGrid(format!(
                "grid '{}' has active tiles covering more than {MAX_TILE_BLOCKS} blocks of 8³ voxels",
                grid.name
            )));
        }
        for x in lo[0]..=hi[0] {
            for y in lo[1]..=hi[1] {
                for z in lo[2]..=hi[2] {
                    blocks.push([x, y, z]);
                }
            }
        }
    }
    match options.iso {
        Some(iso) => Ok(Object::Surface(Box::new(GridSurface::from_voxels(
            blocks, value, iso, false, map,
        )?))),
        None => Ok(Object::Fog(Box::new(FogVolume::from_voxels(
            blocks, value, map,
        )?))),
    }
}

/// A binvox grid as an occupancy surface (`#binvox 2` values scaled to `[0, 1]`).
pub fn load_binvox(grid: &BinvoxGrid, options: &LoadOptions) -> Result<Object, RenderError> {
    let scale = match grid.version() {
        BinvoxVersion::V1 => 1.0,
        BinvoxVersion::V2 => 1.0 / 255.0,
    };
    let values: Vec<f32> = grid
        .values()
        .iter()
        .map(|&v| f32::from(v) * scale)
        .collect();
    let origin = Vec3::from_array(grid.world_position(0, 0, 0).map(f64::from));
    let map = IndexMap::uniform(f64::from(grid.voxel_size()), origin)?;
    let iso = options.iso.unwrap_or(0.5);
    Ok(Object::Surface(Box::new(GridSurface::from_dense(
        &values,
        grid.dims(),
        0.0,
        iso,
        false,
        map,
    )?)))
}

fn load_npz(path: &Path, options: &LoadOptions) -> Result<Object, RenderError> {
    let mut npz = NpzReader::open(path)?;
    let keys = npz.keys().to_vec();
    let key = if keys.iter().any(|k| k == VALUES_KEY) {
        VALUES_KEY.to_string()
    } else {
        let rank3: Vec<&String> = keys
            .iter()
            .filter(|k| npz.header(k).map(|h| h.shape.len() == 3).unwrap_or(false))
            .collect();
        match rank3.as_slice() {
            [only] => (*only).clone(),
            _ => {
                return Err(RenderError::UnsupportedInput(format!(
                    "{}: no '{VALUES_KEY}' array and not exactly one rank-3 array (arrays: {})",
                    path.display(),
                    keys.join(", ")
                )))
            }
        }
    };
    let mut optional = |name: &str| -> Result<Option<NpyArray>, RenderError> {
        if keys.iter().any(|k| k == name) {
            Ok(Some(npz.array(name)?))
        } else {
            Ok(None)
        }
    };
    let origin = optional(ORIGIN_KEY)?;
    let voxel_size = optional(VOXEL_SIZE_KEY)?;
    let values = npz.array(&key)?;
    dense_object(&values, origin.as_ref(), voxel_size.as_ref(), options)
}

/// Any numeric array as `f64` values (bool as 0/1).
fn as_f64(array: &NpyArray) -> Vec<f64> {
    fn conv<T: Copy>(v: &[T], f: impl Fn(T) -> f64) -> Vec<f64> {
        v.iter().map(|x| f(*x)).collect()
    }
    match array.data() {
        NpyData::Bool(v) => conv(v, |b| f64::from(u8::from(b))),
        NpyData::U8(v) => conv(v, f64::from),
        NpyData::I8(v) => conv(v, f64::from),
        NpyData::U16(v) => conv(v, f64::from),
        NpyData::I16(v) => conv(v, f64::from),
        NpyData::U32(v) => conv(v, f64::from),
        NpyData::I32(v) => conv(v, f64::from),
        NpyData::I64(v) => conv(v, |x| x as f64),
        NpyData::F16(v) => conv(v, |x| f64::from(x.to_f32())),
        NpyData::F32(v) => conv(v, f64::from),
        NpyData::F64(v) => v.clone(),
    }
}

/// A dense `[X, Y, Z]` array (with optional npz origin and voxel size arrays) as an object.
pub fn dense_object(
    values: &NpyArray,
    origin: Option<&NpyArray>,
    voxel_size: Option<&NpyArray>,
    options: &LoadOptions,
) -> Result<Object, RenderError> {
    let dims: [usize; 3] = values.shape().try_into().map_err(|_| {
        RenderError::InvalidGrid(format!(
            "a dense grid must be a rank-3 array [X, Y, Z], got shape {:?}",
            values.shape()
        ))
    })?;
    let origin = match origin {
        Some(a) => <[f64; 3]>::try_from(as_f64(a))
            .map_err(|_| RenderError::InvalidGrid(format!("'{ORIGIN_KEY}' must hold 3 numbers")))?,
        None => [0.0; 3],
    };
    let voxel_size = match voxel_size.map(as_f64).as_deref() {
        Some([s]) => *s,
        Some(other) => {
            return Err(RenderError::InvalidGrid(format!(
                "'{VOXEL_SIZE_KEY}' must hold one number, got {other:?}"
            )))
        }
        None => 1.0,
    };
    let map = IndexMap::uniform(voxel_size, Vec3::from_array(origin))?;
    let values: Vec<f32> = as_f64(values).into_iter().map(|v| v as f32).collect();
    let mode = match options.dense {
        DenseMode::Auto if values.iter().any(|v| *v < 0.0) => DenseMode::Sdf,
        DenseMode::Auto => DenseMode::Occupancy,
        m => m,
    };
    Ok(match mode {
        DenseMode::Fog => Object::Fog(Box::new(FogVolume::from_dense(&values, dims, map)?)),
        DenseMode::Sdf => Object::Surface(Box::new(GridSurface::from_dense(
            &values,
            dims,
            f32::INFINITY,
            options.iso.unwrap_or(0.0),
            true,
            map,
        )?)),
        _ => Object::Surface(Box::new(GridSurface::from_dense(
            &values,
            dims,
            0.0,
            options.iso.unwrap_or(0.5),
            false,
            map,
        )?)),
    })
}

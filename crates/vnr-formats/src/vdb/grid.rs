//! Grids: a named tree with its class, transform and metadata; and the typed-grid enum.

use std::sync::Arc;

use super::error::{Result, VdbError};
use super::metadata::{MetaMap, MetaValue};
use super::transform::Transform;
use super::tree::{BBox, DenseLimit, Leaf, Tree};
use super::value::VdbValue;

/// OpenVDB's grid class (metadata `class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridClass {
    /// Narrow-band signed distance field; inactive values are ±background.
    LevelSet,
    /// Density in [0, 1]; inactive values are background (normally 0).
    FogVolume,
    /// Staggered vector field.
    Staggered,
    /// Anything else.
    Unknown,
}

impl GridClass {
    /// OpenVDB's metadata string.
    pub fn as_str(self) -> &'static str {
        match self {
            GridClass::LevelSet => "level set",
            GridClass::FogVolume => "fog volume",
            GridClass::Staggered => "staggered",
            GridClass::Unknown => "unknown",
        }
    }

    /// Parses OpenVDB's metadata string (anything unrecognised is `Unknown`).
    pub fn from_meta(s: &str) -> Self {
        match s {
            "level set" => GridClass::LevelSet,
            "fog volume" => GridClass::FogVolume,
            "staggered" => GridClass::Staggered,
            _ => GridClass::Unknown,
        }
    }
}

/// A grid holding values of type `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid<T> {
    /// Grid name.
    pub name: String,
    /// Grid class.
    pub class: GridClass,
    /// Index→world transform.
    pub transform: Transform,
    /// Grid metadata as stored (`class`, `name`, `file_bbox_min`, ...).
    pub metadata: MetaMap,
    /// The voxels, shared: an instanced grid in a file (OpenVDB's `grid.copy()`) holds its
    /// parent's tree, so each instance costs a pointer, not a copy of the voxels. Edit one
    /// grid's voxels with `Arc::make_mut(&mut grid.tree)` (copies only while still shared).
    pub tree: Arc<Tree<T>>,
    /// Whether the file stored the values as 16-bit halves.
    pub saved_as_half: bool,
}

impl<T: VdbValue> Grid<T> {
    /// A grid owning `tree` (wrapped in an [`Arc`]); `metadata` gets `class` and `name`
    /// entries.
    pub fn new(
        name: impl Into<String>,
        class: GridClass,
        transform: Transform,
        tree: Tree<T>,
    ) -> Self {
        let name = name.into();
        let mut metadata = MetaMap::new();
        metadata.insert("class".into(), MetaValue::String(class.as_str().into()));
        metadata.insert("name".into(), MetaValue::String(name.clone()));
        Grid {
            name,
            class,
            transform,
            metadata,
            tree: Arc::new(tree),
            saved_as_half: false,
        }
    }
    /// Background value.
    pub fn background(&self) -> T {
        self.tree.background()
    }
    /// Value at `ijk` (inactive voxels and tiles read their stored value).
    pub fn get(&self, ijk: [i32; 3]) -> T {
        self.tree.get(ijk)
    }
    /// Active voxels, tiles counted voxel by voxel.
    pub fn active_voxel_count(&self) -> u64 {
        self.tree.active_voxel_count()
    }
    /// Bounding box of the active voxels.
    pub fn active_bbox(&self) -> Option<BBox> {
        self.tree.active_bbox()
    }
    /// Active voxels as (ijk, value).
    pub fn active_voxels(&self) -> impl Iterator<Item = ([i32; 3], T)> + '_ {
        self.tree.active_voxels()
    }
    /// Leaves.
    pub fn leaves(&self) -> &[Leaf<T>] {
        self.tree.leaves()
    }
    /// Dense `[x][y][z]` copy of `bbox` (z fastest); see [`Tree::to_dense`].
    pub fn to_dense(&self, bbox: BBox, limit: DenseLimit) -> Result<Vec<T>> {
        self.tree.to_dense(bbox, limit)
    }
}

impl<T: VdbValue + candle_core::WithDType> Grid<T> {
    /// Dense copy of `bbox` as a tensor of shape `[X, Y, Z]`.
    pub fn to_dense_tensor(
        &self,
        bbox: BBox,
        limit: DenseLimit,
        device: &candle_core::Device,
    ) -> Result<candle_core::Tensor> {
        let dims = bbox.dims().map(|d| d as usize);
        let data = self.to_dense(bbox, limit)?;
        Ok(candle_core::Tensor::from_vec(data, dims.to_vec(), device)?)
    }
}

/// A grid of any supported value type.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyGrid {
    /// `float`
    Float(Grid<f32>),
    /// `double`
    Double(Grid<f64>),
    /// `int32`
    Int32(Grid<i32>),
    /// `int64`
    Int64(Grid<i64>),
    /// `bool`
    Bool(Grid<bool>),
    /// `mask` (topology only: a voxel's value is its active state)
    Mask(Grid<bool>),
    /// `vec3s`
    Vec3f(Grid<[f32; 3]>),
    /// `vec3d`
    Vec3d(Grid<[f64; 3]>),
    /// `vec3i`
    Vec3i(Grid<[i32; 3]>),
}

macro_rules! any_dispatch {
    ($self:expr, $g:ident => $body:expr) => {
        match $self {
            AnyGrid::Float($g) => $body,
            AnyGrid::Double($g) => $body,
            AnyGrid::Int32($g) => $body,
            AnyGrid::Int64($g) => $body,
            AnyGrid::Bool($g) | AnyGrid::Mask($g) => $body,
            AnyGrid::Vec3f($g) => $body,
            AnyGrid::Vec3d($g) => $body,
            AnyGrid::Vec3i($g) => $body,
        }
    };
}

impl AnyGrid {
    /// Grid name.
    pub fn name(&self) -> &str {
        any_dispatch!(self, g => &g.name)
    }
    /// Grid class.
    pub fn class(&self) -> GridClass {
        any_dispatch!(self, g => g.class)
    }
    /// Transform.
    pub fn transform(&self) -> &Transform {
        any_dispatch!(self, g => &g.transform)
    }
    /// Metadata.
    pub fn metadata(&self) -> &MetaMap {
        any_dispatch!(self, g => &g.metadata)
    }
    /// Active voxel count.
    pub fn active_voxel_count(&self) -> u64 {
        any_dispatch!(self, g => g.active_voxel_count())
    }
    /// Active bounding box.
    pub fn active_bbox(&self) -> Option<BBox> {
        any_dispatch!(self, g => g.active_bbox())
    }
    /// OpenVDB value type name (`float`, `mask`, ...).
    pub fn value_type(&self) -> &'static str {
        match self {
            AnyGrid::Mask(_) => "mask",
            _ => any_dispatch!(self, g => value_type_of(g)),
        }
    }
}

fn value_type_of<T: VdbValue>(_: &Grid<T>) -> &'static str {
    T::TYPE_NAME
}

/// Value types that can be taken out of an [`AnyGrid`].
pub trait GridValue: VdbValue {
    /// The grid, if `any` holds this value type.
    fn from_any(any: &AnyGrid) -> Option<&Grid<Self>>;
}

macro_rules! grid_value {
    ($t:ty, $($variant:ident)|+) => {
        impl GridValue for $t {
            fn from_any(any: &AnyGrid) -> Option<&Grid<Self>> {
                match any {
                    $(AnyGrid::$variant(g))|+ => Some(g),
                    _ => None,
                }
            }
        }
    };
}
grid_value!(f32, Float);
grid_value!(f64, Double);
grid_value!(i32, Int32);
grid_value!(i64, Int64);
grid_value!(bool, Bool | Mask);
grid_value!([f32; 3], Vec3f);
grid_value!([f64; 3], Vec3d);
grid_value!([i32; 3], Vec3i);

impl AnyGrid {
    /// The grid as `Grid<T>`, or a typed error naming both types.
    pub fn typed<T: GridValue>(&self) -> Result<&Grid<T>> {
        T::from_any(self).ok_or_else(|| VdbError::WrongValueType {
            grid: self.name().to_string(),
            expected: T::TYPE_NAME,
            found: self.value_type(),
        })
    }
}

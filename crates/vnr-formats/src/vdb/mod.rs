//! OpenVDB (`.vdb`) reading and writing, implemented from the file format.
//!
//! Reads file versions 220..=224: grid descriptors with offsets, typed metadata, linear
//! transforms, 5-4-3 trees of `float`, `double`, `int32`, `int64`, `bool`, `mask`, `vec3s`,
//! `vec3d`, `vec3i` values, half-float storage, active-mask compression with all seven
//! per-node modes, ZIP and Blosc (blosclz, LZ4, zlib codecs; byte/bit shuffle) chunks. Grids of other types (e.g.
//! point data) yield a typed error in their [`GridEntry`] while the file's other grids still
//! read. Inactive voxels and tiles read the value the file stores (±background for level sets).
//!
//! Writes float (and other non-bool) grids as version 224 with grid offsets, uncompressed or
//! ZIP, with or without active-mask compression, readable by OpenVDB itself.
//!
//! ```no_run
//! use vnr_formats::vdb::{read_vdb, BBox, DenseLimit};
//! let file = read_vdb("sphere.vdb")?;
//! let grid = file.typed_grid::<f32>("ls_sphere")?;
//! let bbox = grid.active_bbox().unwrap_or(BBox::new([0; 3], [0; 3]));
//! let dense = grid.to_dense(bbox, DenseLimit::default())?; // [x][y][z], z fastest
//! # Ok::<(), vnr_formats::vdb::VdbError>(())
//! ```

mod bytes;
mod compression;
mod error;
mod grid;
mod metadata;
mod read;
mod transform;
mod tree;
mod value;
mod write;

pub use compression::{
    blosc_decode, compression_to_string, COMPRESS_ACTIVE_MASK, COMPRESS_BLOSC, COMPRESS_ZIP,
};
pub use error::{Result, VdbError};
pub use grid::{AnyGrid, Grid, GridClass, GridValue};
pub use metadata::{MetaMap, MetaValue};
pub use read::{
    list_vdb, read_vdb, FileHeader, GridDescriptor, GridEntry, GridInfo, VdbFile, VdbListing,
    MAX_FILE_VERSION, MIN_FILE_VERSION,
};
pub use transform::{MapKind, Transform};
pub use tree::{BBox, DenseLimit, Leaf, Tree, LEAF_VOXELS};
pub use value::VdbValue;
pub use write::{vdb_bytes, write_vdb, DenseSamples, WriteOptions};

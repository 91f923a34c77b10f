//! vnr: voxel neural rendering.
pub use vnr_formats as formats;
pub use vnr_ops as ops;

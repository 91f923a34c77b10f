//! vnr: voxel neural rendering.
//!
//! The facade over the workspace's crates: depend on `vnr` for everything, or on the member crates
//! one by one.
//!
//! | module | crate | holds |
//! |---|---|---|
//! | [`formats`] | `vnr-formats` | binvox, OpenVDB, npy/npz and chunked datasets, meshes, images |
//! | [`ops`] | `vnr-ops` | 3D candle ops with backward, layers, gradient checks, PyTorch conformance |
//!
//! `examples/formats_tour.rs` walks through the formats without any input file:
//! `cargo run --release -p vnr --example formats_tour`.

pub use vnr_formats as formats;
pub use vnr_ops as ops;

//! vnr: voxel neural rendering.
//!
//! The facade over the workspace's crates: depend on `vnr` for everything, or on the member crates
//! one by one.
//!
//! | module | crate | holds |
//! |---|---|---|
//! | [`formats`] | `vnr-formats` | binvox, OpenVDB, npy/npz and chunked datasets, meshes, images |
//! | [`ops`] | `vnr-ops` | 3D candle ops with backward, layers, gradient checks, PyTorch conformance |
//! | [`render`] | `vnr-render` | cameras, ray samplers, ray marchers, fields, Plenoxels, the reference ray caster |
//! | [`geom`] | `vnr-geom` | BVH, signed distance, DeepSDF sampling, voxeliser, marching cubes, metrics |
//! | [`models`] | `vnr-models` | ConvDeconv, RenderNet, DeepSDF with the originals' layouts and names |
//! | [`train`] | `vnr-train` | the training loop, optimisers with saved state, checkpoints, metrics |
//!
//! `examples/formats_tour.rs` walks through the formats without any input file:
//! `cargo run --release -p vnr --example formats_tour`.

pub use vnr_formats as formats;
pub use vnr_geom as geom;
pub use vnr_models as models;
pub use vnr_ops as ops;
pub use vnr_render as render;
pub use vnr_train as train;

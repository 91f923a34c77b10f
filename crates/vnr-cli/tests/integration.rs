//! Every integration test of `vnr-cli`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod cli;
mod dataset;
mod dataset_voxels;
mod deepsdf;
mod demo;
mod device;
mod geometry;
mod model_summary;
mod nerf;
mod plenoxels;
mod render_args;
mod support;

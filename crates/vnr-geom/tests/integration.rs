//! Every integration test of `vnr-geom`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod bvh;
mod deepsdf_samples;
mod marching_cubes;
mod metrics;
mod procedural;
mod signed_distance;
mod support;
mod voxelize;

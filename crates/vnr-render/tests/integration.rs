//! Every integration test of `vnr-render`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod cameras;
mod multiview;
mod multiview_gen;
mod plenoxels;
mod plenoxels_optimize;
mod raymarchers;
mod reference;
mod renderer;
mod rendernet;
mod samplers;
mod splat;
mod volume_golden;
mod volumes;

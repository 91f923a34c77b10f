//! Every integration test of `vnr-models`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod convdeconv;
mod deepsdf;
mod deepsdf_training;
mod generated;
mod huge_sizes;
mod nerf;
mod rendernet;
mod summary;
mod support;
mod training;

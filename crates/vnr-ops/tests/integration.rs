//! Every integration test of `vnr-ops`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod conformance;
mod conv;
mod cuda_host;
mod cumulative;
mod dropout;
mod embedding;
mod grid_sample;
mod layers;
mod pool;
mod raymarch;

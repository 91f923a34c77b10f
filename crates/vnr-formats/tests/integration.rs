//! Every integration test of `vnr-formats`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod binvox;
mod dataset;
mod fuzz_regressions;
mod image;
mod mesh;
mod npz;
mod vdb;
mod vdb_interop;

//! Every integration test of `vnr-train`, as modules of one test binary: one link instead of one
//! per file keeps a cold `cargo test` within CI's disk and time.

mod configs;
mod golden;
mod trainer;

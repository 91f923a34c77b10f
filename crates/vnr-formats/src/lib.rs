//! Readers and writers for 3D shape data: binvox, OpenVDB, npy/npz and chunked datasets,
//! meshes and images.
//!
//! Every reader returns a typed error and never panics on bad input; sizes read from headers are
//! checked against the bytes actually available before anything is allocated. Every writer goes
//! through [`atomic::write_atomically`], so a failure never leaves a half-written file behind.

pub mod atomic;
pub mod binvox;
pub mod dataset;
pub mod detect;
pub mod image;
pub mod mesh;
pub mod npz;
pub mod testing;
pub mod vdb;

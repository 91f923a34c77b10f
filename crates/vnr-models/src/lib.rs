//! Neural renderers and shape models, with the originals' layer order and parameter names:
//!
//! | module | model |
//! |---|---|
//! | [`convdeconv`] | VoxelNeuralRender's ConvDeconv (v001) and a U-Net-style v002 |
//! | [`rendernet`] | RenderNet's shader network, its losses and its Phong shading of normal maps |
//! | [`deepsdf`] | DeepSDF's decoder and its latent code table |
//! | [`summary`] | torchinfo-style layer summaries |
//! | [`config`] | reading configurations: JSON of the config structs, DeepSDF `specs.json`, RenderNet config JSON |
//! | [`layers`] | shared blocks: TF "SAME" convolutions, cropped transposed convolutions, seeded dropout |
//!
//! Every model takes a config (serde, `Default` = the reference configuration, plus named
//! smaller presets), is built with `new(cfg, vb)` and runs as a candle `Module` or `ModuleT`
//! (train flag for dropout, masks from a seeded generator).

#![warn(missing_docs)]

pub mod config;
pub mod convdeconv;
pub mod deepsdf;
pub mod layers;
pub mod rendernet;
pub mod summary;

pub use config::ConfigError;
pub use summary::{shape_only_var_builder, LayerSummary, Summary};

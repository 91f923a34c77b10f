//! Neural renderers and shape models, with the originals' layer order and parameter names:
//!
//! | module | model |
//! |---|---|
//! | [`convdeconv`] | VoxelNeuralRender's ConvDeconv (v001) and a U-Net-style v002 |
//! | [`convdeconv_train`] | ConvDeconv as a trainer model (L1, Adam 3e-4) |
//! | [`rendernet_train`] | RenderNet as a trainer model (patch crops, BCE/MSE, Adam β1 0.5 with staircase decay) |
//! | [`rendernet`] | RenderNet's shader network, its losses and its Phong shading of normal maps |
//! | [`deepsdf`] | DeepSDF's decoder and its latent code table |
//! | [`deepsdf_training`] | DeepSDF's auto-decoder training, latent reconstruction and meshing |
//! | [`nerf`] | PyTorch3D's NeRF tutorial model (and the paper's density form) as a render `Field` |
//! | [`nerf_train`] | fitting a NeRF to posed images with the trainer, held-out evaluation |
//! | [`generated`] | generated voxel→image datasets (procedural shapes, RenderNet and ConvDeconv layouts) |
//! | [`summary`] | torchinfo-style layer summaries |
//! | [`config`] | reading configurations: JSON of the config structs, DeepSDF `specs.json`, RenderNet config JSON |
//! | [`seeded`] | seeded weight initialisation: a `VarBuilder` that draws each `Init` from a ChaCha8 generator |
//! | [`layers`] | shared blocks: TF "SAME" convolutions, cropped transposed convolutions, a fused bias + LeakyReLU, seeded dropout |
//! | [`limits`] | caps on the sizes configs and parameters choose, so bad values are errors |
//!
//! Every model takes a config (serde, `Default` = the reference configuration, plus named
//! smaller presets), is built with `new(cfg, vb)` and runs as a candle `Module` or `ModuleT`
//! (train flag for dropout, masks from a seeded generator).

#![warn(missing_docs)]

pub mod config;
pub mod convdeconv;
pub mod convdeconv_train;
pub mod deepsdf;
pub mod deepsdf_training;
pub mod generated;
pub mod layers;
pub mod limits;
pub mod nerf;
pub mod nerf_train;
pub mod rendernet;
pub mod rendernet_train;
pub mod seeded;
pub mod summary;

pub use config::ConfigError;
pub use summary::{shape_only_var_builder, LayerSummary, Summary};

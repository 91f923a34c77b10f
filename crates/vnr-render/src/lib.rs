//! Differentiable volume rendering for candle, and a reference ray caster.
//!
//! The pieces follow PyTorch3D's and nerfstudio's split by role, each usable alone:
//!
//! | module | holds |
//! |---|---|
//! | [`cameras`] | perspective and orthographic cameras, `look_at`, PyTorch3D ⇄ OpenCV conventions |
//! | [`rays`] | [`rays::RayBundle`]: origins, directions, sample depths and pixel coordinates |
//! | [`samplers`] | ray samplers: NDC/multinomial grid, Monte Carlo, stratified jitter, ray–box near/far |
//! | [`field`] | the [`field::Field`] trait: points (and directions) → densities and features |
//! | [`multiview`] | posed multi-view image datasets (NeRF-synthetic and nerfstudio layouts) |
//! | [`volumes`] | batched dense `Volumes` with PyTorch3D's world ⇄ local coordinates |
//! | [`splat`] | point clouds splatted into volumes (trilinear and nearest) |
//! | [`raymarchers`] | emission-absorption, NeRF (σ with step lengths) and absorption-only marchers |
//! | [`renderer`] | the volume/implicit renderer: any field, any marcher, chunked over rays |
//! | [`plenoxels`] | svox2 Plenoxel grids: checkpoints, spherical harmonics, sparse trilinear rendering |
//! | [`mod@reference`] | the deterministic ray caster that renders ground-truth images for datasets |
//! | [`scenes`] | procedural coloured scenes rendered into posed multi-view datasets |
//! | [`rendernet`] | RenderNet's camera pose and its voxel-to-camera resampling |

pub mod cameras;
pub mod field;
pub mod multiview;
pub mod plenoxels;
pub mod raymarchers;
pub mod rays;
pub mod reference;
pub mod renderer;
pub mod rendernet;
pub mod samplers;
pub mod scenes;
pub mod splat;
pub mod volumes;

/// Most elements any one buffer may have that a call here sizes from its parameters (image
/// sizes, ray, sample and batch counts, grid sides): vnr-ops' limit, 2³², 16 GiB of `f32`.
/// Larger requests are errors instead of allocations that would abort the process.
pub use vnr_ops::dispatch::MAX_PARAMETER_ELEMENTS as MAX_ELEMENTS;

/// The product of `dims`, or an error naming `op` and `what` when it overflows or exceeds
/// [`MAX_ELEMENTS`]: for sizes about to be allocated, checked where they are first known.
pub(crate) use vnr_ops::dispatch::capped_elements;

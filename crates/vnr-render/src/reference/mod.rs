//! The reference renderer: a deterministic, multi-threaded CPU ray caster that renders the
//! ground-truth images neural renderers learn from.
//!
//! Plain `f64` scalar code per pixel, rows of pixels spread over rayon's threads; no random
//! numbers, no reductions across pixels, so a render is bit-identical for any thread count.
//!
//! # Scenes
//! - [`Object::Surface`]: analytic SDFs ([`Sdf`], from `vnr_geom::sdf`; sphere traced, their
//!   analytic gradients as normals) and the iso-surfaces of voxel grids ([`GridSurface`]):
//!   dense arrays, VDB level sets (inactive voxels read ±background), binvox occupancy (0/1
//!   density, surface at 0.5). Grid rays walk 8³ bricks with a DDA, skipping blocks where the
//!   field does not change sign, then the cells of a brick; the first root of the trilinear
//!   interpolant is refined by regula falsi to `f64` precision, and the normal is its
//!   trilinear gradient.
//! - [`Object::Fog`]: emission–absorption with single scattering, `vdb_render`'s model
//!   ([`fog`]).
//!
//! Shading ([`shading`]): Phong with a directional or point light, hard shadows, optional
//! ground plane (at the object's lowest surface point unless given), diffuse, reflective and
//! clear (Snell + Schlick) materials with a bounce limit. Outputs ([`Frame`]): shaded image,
//! camera-space normal map `n · 0.5 + 0.5`, depth along the view axis (`+∞` background),
//! silhouette, albedo.
//!
//! # Camera convention (PyTorch3D)
//! [`Camera::orbit`]`(azimuth, elevation, radius, at, ..)` places the camera at
//! `radius · (cos e · sin a, sin e, cos e · cos a) + at`, looking at `at` with `+Y` up: exactly
//! `pytorch3d.renderer.look_at_view_transform(dist=radius, elev=e, azim=a, at=(at,), up=((0, 1,
//! 0),))`. Its `R` has columns `(-right, up, forward)` of [`Camera`] (PyTorch3D's view +X points
//! to image left, +Z forward) and `T = -Rᵀ · eye`; our depth is PyTorch3D's view-space z.
//! [`Projection::Perspective`] takes the *vertical* field of view; for square images it equals
//! `FoVPerspectiveCameras(fov=...)` (PyTorch3D's fov spans the shorter image side).
//! Pixel `(x, y)` has its centre at `(x + 0.5, y + 0.5)`, rows top to bottom.
//!
//! # Matching OpenVDB's `vdb_render`
//! `vdb_render in.vdb out.png -translate EX,EY,EZ -lookat AX,AY,AZ -up 0,1,0 -fov F -res WxH`
//! is [`Camera::look_at`]`(eye = E, at = A, up = +Y, Perspective { fov_y_deg:
//! `[`fov_y_from_fov_x`]`(F, W, H) }, W, H)` (`-fov` is horizontal; for square images the
//! same). Equivalently the orbit with `radius = |E − A|`, `elevation = asin((E − A).y /
//! radius)`, `azimuth = atan2((E − A).x, (E − A).z)`. Without `-lookat`/`-rotate` vdb_render
//! looks at the centre of the active voxel bounding box. Its pixel centres, frame (camera −Z
//! forward, +Y up) and `lookAt` (OpenVDB's `math::aim`) are the same as ours; its `-rotate`
//! Euler angles are not supported. Its level-set `-shader position` colours a hit by its
//! position in the world box of the active voxels, which is how the tests read its depth.
//! Fog volumes follow `tools::VolumeRender` (see [`fog`]) with the same parameters as
//! vdb_render's `-absorb -scatter -light -gain -step -shadowstep -cutoff`.

mod bricks;
mod camera;
pub mod fog;
mod load;
mod render;
mod sdf;
pub mod shading;
mod surface;

use std::path::PathBuf;

use vnr_geom::vec3;

pub use bricks::IndexMap;
pub use camera::{direction_from_angles, fov_y_from_fov_x, orbit_position, Camera, Projection};
pub use fog::{FogModel, FogSample, FogSettings, FogVolume, MIN_FOG_STEP};
pub use load::{
    analytic_sdf, dense_object, load_binvox, load_object, DenseMode, LoadOptions, ORIGIN_KEY,
    SDF_NAMES, SDF_PREFIX, VALUES_KEY, VOXEL_SIZE_KEY,
};
pub use render::{render, to_grey, Frame, Outputs};
pub use shading::{Ground, Light, Material, Object, Phong, Scene, MAX_BOUNCES};
pub use surface::{GridSurface, Surface, SurfaceHit};
pub use vec3::{Aabb, Ray, Vec3};
pub use vnr_geom::sdf::Sdf;

/// Errors of the reference renderer.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Camera parameters that define no image.
    #[error("invalid camera: {0}")]
    InvalidCamera(String),
    /// A grid that cannot be rendered (bad dims, transform, or too large).
    #[error("invalid grid: {0}")]
    InvalidGrid(String),
    /// Render settings out of range.
    #[error("invalid render settings: {0}")]
    InvalidSettings(String),
    /// The object has no surface or density anywhere.
    #[error("the scene is empty: the grid has no surface crossing or non-zero density")]
    EmptyScene,
    /// An output the object cannot produce.
    #[error("unsupported output: {0}")]
    UnsupportedOutput(&'static str),
    /// An output that was not rendered.
    #[error("the frame has no {0} output (ask for it in Outputs)")]
    MissingOutput(&'static str),
    /// An unknown analytic shape name.
    #[error("unknown analytic shape sdf:{0}")]
    UnknownShape(String),
    /// A file that holds nothing renderable.
    #[error("cannot render input: {0}")]
    UnsupportedInput(String),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A VDB file could not be read.
    #[error(transparent)]
    Vdb(#[from] vnr_formats::vdb::VdbError),
    /// A binvox file could not be read.
    #[error(transparent)]
    Binvox(#[from] vnr_formats::binvox::BinvoxError),
    /// An npy/npz file could not be read or written.
    #[error(transparent)]
    Npz(#[from] vnr_formats::npz::NpzError),
    /// An image could not be built or written.
    #[error(transparent)]
    Image(#[from] vnr_formats::image::ImageError),
}

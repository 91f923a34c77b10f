//! Geometry for shape learning: triangle BVH, signed distance with a sign that survives holes,
//! DeepSDF's sampling, a voxeliser, marching cubes and the metrics DeepSDF is evaluated with.
//!
//! | module | holds |
//! |---|---|
//! | [`bvh`] | a binned-SAH BVH over triangles: closest point, distance and ray queries, batched |
//! | [`winding`] | generalised winding numbers, exact and with a fast hierarchical approximation |
//! | [`signed_distance`] | signed distance to a mesh (winding-number sign, or DeepSDF's virtual-scan votes) |
//! | [`normalize`] | DeepSDF's unit-sphere normalisation and its inverse |
//! | [`deepsdf_samples`] | DeepSDF's SDF samples (`pos`/`neg` `.npz`) for one mesh or a directory |
//! | [`voxelize`] | mesh → surface or solid occupancy, written as binvox or VDB |
//! | [`marching_cubes`] | watertight marching cubes on dense grids and sparse VDB level sets |
//! | [`sdf`] | analytic signed distances with gradients: sphere, box, rounded box, torus, capsule, superquadric, CSG and smooth blends |
//! | [`vec3`] | the `f64` 3-vector, ray and box of the analytic shapes and per-point code |
//! | [`procedural`] | shape families of random analytic shapes (a stand-in for a ShapeNet class), their meshes |
//! | [`metrics`] | chamfer distance as DeepSDF evaluates it, Hausdorff, normal consistency |

pub mod bvh;
pub mod deepsdf_samples;
pub mod marching_cubes;
pub mod metrics;
pub mod normalize;
pub mod procedural;
pub mod sdf;
pub mod signed_distance;
pub mod vec3;
pub mod voxelize;
pub mod winding;

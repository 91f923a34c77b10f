//! Procedural coloured scenes and the posed multi-view datasets rendered from them by the
//! [reference renderer](crate::reference), for fitting radiance fields (NeRF, Plenoxels).
//!
//! A scene is a few analytic shapes ([`Sdf`]) each with its own colour ([`ColouredShapes`]),
//! Phong-shaded under one directional light with hard shadows, on an optional ground plane.
//! [`generate_multiview`] renders it from seeded random orbit cameras into the three splits of
//! a [`MultiViewDataset`] (train, val, test: disjoint random views), each frame supersampled
//! (`supersample²` rays per pixel, box-filtered) so edges are anti-aliased as in Blender's
//! renders. Per frame it keeps:
//!
//! - the colour composited on [`MultiViewGenConfig::background`] (`[N, H, W, 3]`);
//! - alpha, the fraction of a pixel's rays that hit anything (object or ground) (`[N, H, W, 1]`);
//! - the silhouette, the fraction that hit the object (`[N, H, W, 1]`); without a ground plane
//!   it equals alpha.
//!
//! [`GeneratedViews::write`] saves them in the NeRF-synthetic layout
//! (`transforms_{train,val,test}.json`, RGBA frames `./{split}/r_{i}.png`), silhouettes beside
//! the frames as `./{split}/r_{i}_silhouette.png` (8-bit grey) and the generator settings as
//! `generator.json`, so [`MultiViewDataset::read_blender`] reads the dataset back.
//!
//! Cameras look at the origin from [`MultiViewGenConfig::camera_distance`] with +Y up
//! ([`Camera::orbit`], PyTorch3D's `look_at_view_transform`), azimuth uniform in `[0°, 360°)` and
//! elevation uniform over the sphere's area between the two [`MultiViewGenConfig::elevation_deg`]
//! bounds. Every shape lies inside `[-0.9, 0.9]³`, so a Plenoxel box of radius 1 holds it.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vnr_formats::atomic::write_atomically;
use vnr_formats::image::{ImageError, ImageF32};

use crate::multiview::{Intrinsics, MultiViewDataset, MultiViewError, Split};
use crate::reference::{
    render, Aabb, Camera, Ground, Light, Object, Outputs, Phong, Projection, Ray, RenderError,
    Scene, Sdf, Surface, SurfaceHit, Vec3,
};

/// Names [`ProceduralScene::named`] knows.
pub const SCENE_NAMES: [&str; 2] = ["shapes", "random"];

/// Largest image side [`generate_multiview`] renders (before supersampling).
pub const MAX_RESOLUTION: usize = 4096;
/// Most views per split (and `views · resolution² · 3` at most
/// [`MAX_PARAMETER_ELEMENTS`](vnr_ops::dispatch::MAX_PARAMETER_ELEMENTS)).
pub const MAX_VIEWS: usize = 10_000;
/// Largest supersampling factor.
pub const MAX_SUPERSAMPLE: usize = 8;

/// Errors from building or rendering a procedural scene dataset.
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    /// A scene name that is not one of [`SCENE_NAMES`].
    #[error("unknown scene '{0}' (known: {names})", names = SCENE_NAMES.join(", "))]
    UnknownScene(String),
    /// Generator settings out of range.
    #[error("multi-view generator: {0}")]
    BadConfig(String),
    /// The reference renderer failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Building or writing the dataset failed.
    #[error(transparent)]
    Dataset(#[from] MultiViewError),
    /// A silhouette image could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Writing `generator.json` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// candle failed while building tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// An analytic shape with its own base colour (RGB in `[0, 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColouredShape {
    /// The shape.
    pub sdf: Sdf,
    /// Its base colour.
    pub colour: Vec3,
}

/// The union of coloured shapes as one reference-renderer [`Surface`]: rays are sphere traced
/// through the union of the SDFs, and a hit takes the colour of the shape nearest to it.
#[derive(Debug, Clone)]
pub struct ColouredShapes {
    shapes: Vec<ColouredShape>,
    union: Sdf,
}

impl ColouredShapes {
    /// The union of `shapes` (at least one).
    pub fn new(shapes: Vec<ColouredShape>) -> Result<Self, SceneError> {
        let mut sdfs = shapes.iter().map(|s| s.sdf.clone());
        let first = sdfs
            .next()
            .ok_or_else(|| SceneError::BadConfig("a scene needs at least one shape".into()))?;
        let union = sdfs.fold(first, |acc, s| Sdf::Union(Box::new(acc), Box::new(s)));
        Ok(Self { shapes, union })
    }

    /// The shapes.
    pub fn shapes(&self) -> &[ColouredShape] {
        &self.shapes
    }
}

impl Surface for ColouredShapes {
    fn bounds(&self) -> Aabb {
        self.union.bounds()
    }

    fn intersect(&self, ray: &Ray, t_min: f64, t_max: f64) -> Option<SurfaceHit> {
        self.union.intersect(ray, t_min, t_max)
    }

    fn albedo_at(&self, p: Vec3) -> Option<Vec3> {
        self.shapes
            .iter()
            .map(|s| (s.sdf.distance(p), s.colour))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, colour)| colour)
    }
}

/// A procedural scene: coloured shapes, their shading, the light and an optional ground.
#[derive(Debug, Clone)]
pub struct ProceduralScene {
    /// The shapes.
    pub shapes: ColouredShapes,
    /// Phong coefficients (the albedo is each shape's colour).
    pub phong: Phong,
    /// The light.
    pub light: Light,
    /// Optional ground plane under the shapes.
    pub ground: Option<Ground>,
}

impl ProceduralScene {
    /// A scene by name: `shapes` (a red sphere, a green rounded box, a blue torus and a yellow
    /// capsule; `seed` unused) or `random` (3 to 5 shapes of random kind, size, place and
    /// saturated colour drawn from `seed`).
    pub fn named(name: &str, seed: u64) -> Result<Self, SceneError> {
        let shapes = match name {
            "shapes" => fixed_shapes(),
            "random" => random_shapes(&mut stream_rng(seed, 3)),
            other => return Err(SceneError::UnknownScene(other.to_string())),
        };
        Ok(Self {
            shapes: ColouredShapes::new(shapes)?,
            phong: Phong {
                albedo: Vec3::splat(0.8),
                ambient: 0.25,
                diffuse: 0.75,
                specular: 0.2,
                shininess: 16.0,
            },
            light: Light::from_angles(40.0, 60.0),
            ground: None,
        })
    }

    /// The reference renderer's scene, with `background` for rays that hit nothing.
    pub fn to_scene(&self, background: [f32; 3]) -> Scene {
        let mut scene = Scene::new(Object::Surface(Box::new(self.shapes.clone())));
        scene.phong = self.phong;
        scene.light = self.light;
        scene.ground = self.ground;
        scene.background = Vec3::new(
            f64::from(background[0]),
            f64::from(background[1]),
            f64::from(background[2]),
        );
        scene
    }
}

fn fixed_shapes() -> Vec<ColouredShape> {
    vec![
        ColouredShape {
            sdf: Sdf::Sphere {
                center: Vec3::new(-0.4, -0.25, 0.3),
                radius: 0.35,
            },
            colour: Vec3::new(0.85, 0.15, 0.1),
        },
        ColouredShape {
            sdf: Sdf::RoundedBox {
                center: Vec3::new(0.35, -0.3, -0.25),
                half: Vec3::new(0.3, 0.3, 0.3),
                radius: 0.06,
            },
            colour: Vec3::new(0.15, 0.7, 0.2),
        },
        ColouredShape {
            sdf: Sdf::Torus {
                center: Vec3::new(0.0, 0.35, 0.0),
                major: 0.45,
                minor: 0.12,
            },
            colour: Vec3::new(0.15, 0.3, 0.9),
        },
        ColouredShape {
            sdf: Sdf::Capsule {
                a: Vec3::new(0.45, -0.55, 0.45),
                b: Vec3::new(0.45, 0.2, 0.45),
                radius: 0.12,
            },
            colour: Vec3::new(0.95, 0.8, 0.1),
        },
    ]
}

fn random_shapes(rng: &mut ChaCha8Rng) -> Vec<ColouredShape> {
    let count = rng.random_range(3..=5);
    (0..count)
        .map(|_| {
            let size = rng.random_range(0.15..0.3);
            // Centres keep the shape (at most `size`·1.5 across from the centre) inside ±0.9.
            let c = 0.9 - 1.5 * size;
            let center = Vec3::new(
                rng.random_range(-c..c),
                rng.random_range(-c..c),
                rng.random_range(-c..c),
            );
            let sdf = match rng.random_range(0..4) {
                0 => Sdf::Sphere {
                    center,
                    radius: size,
                },
                1 => Sdf::RoundedBox {
                    center,
                    half: Vec3::new(
                        rng.random_range(0.6..1.0) * size,
                        rng.random_range(0.6..1.0) * size,
                        rng.random_range(0.6..1.0) * size,
                    ),
                    radius: 0.2 * 0.6 * size,
                },
                2 => Sdf::Torus {
                    center,
                    major: size,
                    minor: 0.4 * size,
                },
                _ => Sdf::Capsule {
                    a: center - Vec3::new(0.0, size, 0.0),
                    b: center + Vec3::new(0.0, size, 0.0),
                    radius: 0.45 * size,
                },
            };
            ColouredShape {
                sdf,
                colour: saturated_colour(rng.random_range(0.0..1.0)),
            }
        })
        .collect()
}

/// A saturated colour of hue `h ∈ [0, 1)` (HSV with S = 0.8, V = 0.9).
fn saturated_colour(h: f64) -> Vec3 {
    let (s, v) = (0.8, 0.9);
    let k = |n: f64| {
        let k = (n + h * 6.0) % 6.0;
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    Vec3::new(k(5.0), k(3.0), k(1.0))
}

/// An independent random stream of `seed` for each use (splits, scene).
fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Settings of [`generate_multiview`]. `Default`: the `shapes` scene, 100 training views and
/// 10 each of validation and test at 128×128, 2×2 supersampling, cameras at distance 4 with a
/// 40° field of view, elevations between −30° and 75°, no ground, white background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MultiViewGenConfig {
    /// Scene name ([`SCENE_NAMES`]).
    pub scene: String,
    /// Seed of cameras (and of the `random` scene).
    pub seed: u64,
    /// Training views.
    pub train_views: usize,
    /// Validation views.
    pub val_views: usize,
    /// Test views.
    pub test_views: usize,
    /// Image side in pixels (square images).
    pub resolution: usize,
    /// Rays per pixel along each axis, box-filtered.
    pub supersample: usize,
    /// Distance of the cameras from the origin.
    pub camera_distance: f64,
    /// Field of view, degrees (horizontal = vertical).
    pub fov_deg: f64,
    /// Lowest and highest camera elevation, degrees.
    pub elevation_deg: [f64; 2],
    /// Render a ground plane under the shapes.
    pub ground: bool,
    /// Colour of rays that hit nothing.
    pub background: [f32; 3],
}

impl Default for MultiViewGenConfig {
    fn default() -> Self {
        Self {
            scene: "shapes".into(),
            seed: 0,
            train_views: 100,
            val_views: 10,
            test_views: 10,
            resolution: 128,
            supersample: 2,
            camera_distance: 4.0,
            fov_deg: 40.0,
            elevation_deg: [-30.0, 75.0],
            ground: false,
            background: [1.0; 3],
        }
    }
}

impl MultiViewGenConfig {
    fn validate(&self) -> Result<(), SceneError> {
        let bad = |what: String| Err(SceneError::BadConfig(what));
        if !(1..=MAX_RESOLUTION).contains(&self.resolution) {
            return bad(format!(
                "resolution {} must be in 1..={MAX_RESOLUTION}",
                self.resolution
            ));
        }
        if !(1..=MAX_SUPERSAMPLE).contains(&self.supersample) {
            return bad(format!(
                "supersample {} must be in 1..={MAX_SUPERSAMPLE}",
                self.supersample
            ));
        }
        let views = [self.train_views, self.val_views, self.test_views];
        if views.iter().any(|&v| v == 0 || v > MAX_VIEWS) {
            return bad(format!(
                "every split needs 1..={MAX_VIEWS} views, got train/val/test {views:?}"
            ));
        }
        // Each limit alone lets a split's colours reach 10⁴·4096²·3 floats (2 TB), allocated up
        // front: refuse splits over the shared element limit before rendering anything.
        for (name, v) in ["train", "val", "test"].into_iter().zip(views) {
            let dims = [v, self.resolution, self.resolution, 3];
            if let Err(e) = crate::capped_elements("multi-view generator", "split colours", &dims) {
                return bad(format!(
                    "{name}_views {v} at resolution {}: {e}",
                    self.resolution
                ));
            }
        }
        if !(self.camera_distance.is_finite() && self.camera_distance > 1.6) {
            return bad(format!(
                "camera_distance {} must be finite and > 1.6 (outside the scene)",
                self.camera_distance
            ));
        }
        if !(self.fov_deg > 0.0 && self.fov_deg < 180.0) {
            return bad(format!("fov_deg {} must be in (0, 180)", self.fov_deg));
        }
        let [lo, hi] = self.elevation_deg;
        if !(-90.0..=90.0).contains(&lo) || !(-90.0..=90.0).contains(&hi) || lo > hi {
            return bad(format!(
                "elevation_deg {:?} must be [low, high] within [-90, 90]",
                self.elevation_deg
            ));
        }
        if self.background.iter().any(|c| !(0.0..=1.0).contains(c)) {
            return bad(format!(
                "background {:?} must be in [0, 1]",
                self.background
            ));
        }
        Ok(())
    }
}

/// One generated split: the dataset (colour composited on the background, alpha, cameras) and
/// the object silhouettes `[N, H, W, 1]`.
#[derive(Debug, Clone)]
pub struct GeneratedSplit {
    /// The views.
    pub dataset: MultiViewDataset,
    /// Object coverage per pixel, `[N, H, W, 1]` in `[0, 1]` (the ground excluded).
    pub silhouettes: Tensor,
}

/// The three splits of a generated dataset and the settings that made them.
#[derive(Debug, Clone)]
pub struct GeneratedViews {
    /// Training views.
    pub train: GeneratedSplit,
    /// Validation views.
    pub val: GeneratedSplit,
    /// Test views.
    pub test: GeneratedSplit,
    /// The settings.
    pub config: MultiViewGenConfig,
}

impl GeneratedViews {
    /// The split `split`.
    pub fn split(&self, split: Split) -> &GeneratedSplit {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// Writes the dataset under `root` in the NeRF-synthetic layout (see the
    /// [module docs](self)); every file atomically.
    pub fn write(&self, root: impl AsRef<Path>) -> Result<(), SceneError> {
        let root = root.as_ref();
        for split in [Split::Train, Split::Val, Split::Test] {
            let GeneratedSplit {
                dataset,
                silhouettes,
            } = self.split(split);
            dataset.write_blender(root)?;
            let (_, h, w, _) = silhouettes.dims4()?;
            for (i, file_path) in dataset.file_paths.iter().enumerate() {
                let data = silhouettes.get(i)?.flatten_all()?.to_vec1::<f32>()?;
                let path = root.join(format!(
                    "{}_silhouette.png",
                    file_path.trim_end_matches(".png")
                ));
                ImageF32::new(w, h, 1, data)?.write_png(&path)?;
            }
        }
        let path = root.join("generator.json");
        write_atomically(&path, |w| {
            serde_json::to_writer_pretty(&mut *w, &self.config).map_err(std::io::Error::other)
        })
        .map_err(|source| SceneError::Io { path, source })
    }
}

/// Renders the procedural scene `config.scene` from random cameras into train, val and test
/// splits (see the [module docs](self)). Deterministic for a given config.
pub fn generate_multiview(config: &MultiViewGenConfig) -> Result<GeneratedViews, SceneError> {
    config.validate()?;
    let mut scene = ProceduralScene::named(&config.scene, config.seed)?;
    if config.ground {
        scene.ground = Some(Ground::default());
    }
    let scene = scene.to_scene(config.background);
    let split = |split: Split, views: usize, stream: u64| {
        render_split(
            &scene,
            config,
            split,
            views,
            &mut stream_rng(config.seed, stream),
        )
    };
    Ok(GeneratedViews {
        train: split(Split::Train, config.train_views, 0)?,
        val: split(Split::Val, config.val_views, 1)?,
        test: split(Split::Test, config.test_views, 2)?,
        config: config.clone(),
    })
}

/// The camera-to-world matrix (OpenGL/Blender axes: columns right, up, backward, eye) of a
/// reference-renderer camera, rows of the upper 3×4 then `(0, 0, 0, 1)`.
pub fn camera_to_world(camera: &Camera) -> [[f64; 4]; 4] {
    let (r, u, f, e) = (camera.right, camera.up, camera.forward, camera.eye);
    [
        [r.x, u.x, -f.x, e.x],
        [r.y, u.y, -f.y, e.y],
        [r.z, u.z, -f.z, e.z],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

fn render_split(
    scene: &Scene,
    config: &MultiViewGenConfig,
    split: Split,
    views: usize,
    rng: &mut ChaCha8Rng,
) -> Result<GeneratedSplit, SceneError> {
    let (res, ss) = (config.resolution, config.supersample);
    let pixels = res * res;
    let [lo, hi] = config.elevation_deg.map(|e: f64| e.to_radians().sin());
    let mut colours = Vec::with_capacity(views * pixels * 3);
    let mut alpha = Vec::with_capacity(views * pixels);
    let mut silhouettes = Vec::with_capacity(views * pixels);
    let mut poses = Vec::with_capacity(views * 16);
    let outputs = Outputs {
        depth: true,
        silhouette: true,
        ..Outputs::SHADED
    };
    for _ in 0..views {
        let azimuth = rng.random_range(0.0..360.0);
        let elevation = rng.random_range(lo..=hi).asin().to_degrees();
        let camera = Camera::orbit(
            azimuth,
            elevation,
            config.camera_distance,
            Vec3::default(),
            Projection::Perspective {
                fov_y_deg: config.fov_deg,
            },
            res * ss,
            res * ss,
        )?;
        let frame = render(scene, &camera, outputs)?;
        let (Some(shaded), Some(depth), Some(silhouette)) =
            (&frame.shaded, &frame.depth, &frame.silhouette)
        else {
            return Err(SceneError::Render(RenderError::MissingOutput(
                "shaded, depth or silhouette",
            )));
        };
        let weight = 1.0 / (ss * ss) as f32;
        for y in 0..res {
            for x in 0..res {
                let (mut rgb, mut hit, mut object) = ([0f32; 3], 0f32, 0f32);
                for sy in 0..ss {
                    for sx in 0..ss {
                        let i = (y * ss + sy) * res * ss + x * ss + sx;
                        for (c, v) in rgb.iter_mut().zip(&shaded.data[3 * i..3 * i + 3]) {
                            *c += v.clamp(0.0, 1.0) * weight;
                        }
                        hit += if depth[i].is_finite() { weight } else { 0.0 };
                        object += silhouette.data[i] * weight;
                    }
                }
                colours.extend(rgb);
                alpha.push(hit);
                silhouettes.push(object);
            }
        }
        poses.extend(camera_to_world(&camera).iter().flatten().map(|&v| v as f32));
    }
    let dev = Device::Cpu;
    let fov = config.fov_deg.to_radians();
    let mut dataset = MultiViewDataset::new(
        split,
        Tensor::from_vec(colours, (views, res, res, 3), &dev)?,
        Some(Tensor::from_vec(alpha, (views, res, res, 1), &dev)?),
        Tensor::from_vec(poses, (views, 4, 4), &dev)?,
        Intrinsics::from_camera_angle_x(fov, res, res),
    )?;
    dataset.background = config.background;
    Ok(GeneratedSplit {
        dataset,
        silhouettes: Tensor::from_vec(silhouettes, (views, res, res, 1), &dev)?,
    })
}

//! The render loop (rows in parallel with rayon, one independent scalar computation per pixel,
//! so results are bit-identical for any thread count) and the rendered frame.

use std::path::Path;

use rayon::prelude::*;
use vnr_formats::image::{ImageF32, MAX_PIXELS};
use vnr_formats::npz::{write_npy, NpyArray, NpyData};

use super::camera::Camera;
use super::fog::FogModel;
use super::shading::{HitKind, Object, Scene, Tracer, MAX_BOUNCES};
use super::vec3::Vec3;
use super::RenderError;

/// Which images a render produces (any subset, from one pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// Shaded RGB image.
    pub shaded: bool,
    /// Camera-space normal map, `n · 0.5 + 0.5`.
    pub normal: bool,
    /// Depth along the view axis.
    pub depth: bool,
    /// Object mask.
    pub silhouette: bool,
    /// Base colour of the visible surface.
    pub albedo: bool,
}

impl Outputs {
    /// Every output.
    pub const ALL: Outputs = Outputs {
        shaded: true,
        normal: true,
        depth: true,
        silhouette: true,
        albedo: true,
    };
    /// Only the shaded image.
    pub const SHADED: Outputs = Outputs {
        shaded: true,
        normal: false,
        depth: false,
        silhouette: false,
        albedo: false,
    };
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs::SHADED
    }
}

/// A rendered frame; each field is present when asked for in [`Outputs`].
///
/// - `shaded`: RGB radiance (not clamped; PNG writing clamps to `[0, 1]`).
/// - `normal`: RGB, the visible surface's unit normal in OpenGL camera space (x right, y up,
///   z towards the viewer, as RenderNet's normal maps) encoded `n · 0.5 + 0.5`; background 0.
/// - `depth`: `[H, W]` row-major, the distance of the visible point along the view axis
///   (PyTorch3D's view-space z); background `+∞`. With a ground plane the ground's depth shows.
///   Fog: the depth of the first sample at or above the cutoff density.
/// - `silhouette`: grey, 1 where the primary ray hits the object (never the ground), else 0;
///   fog: 1 where the accumulated alpha is at least 0.5.
/// - `albedo`: RGB base colour of the visible surface (object or ground), background 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Shaded image.
    pub shaded: Option<ImageF32>,
    /// Normal map.
    pub normal: Option<ImageF32>,
    /// Depth `[H, W]`.
    pub depth: Option<Vec<f32>>,
    /// Silhouette.
    pub silhouette: Option<ImageF32>,
    /// Albedo.
    pub albedo: Option<ImageF32>,
}

impl Frame {
    /// The depth map as an `f32` npy array of shape `[H, W]`.
    pub fn depth_array(&self) -> Result<NpyArray, RenderError> {
        let depth = self
            .depth
            .clone()
            .ok_or(RenderError::MissingOutput("depth"))?;
        Ok(NpyArray::new(
            vec![self.height, self.width],
            NpyData::F32(depth),
        )?)
    }

    /// Writes the depth map as `.npy` (atomically).
    pub fn write_depth_npy(&self, path: impl AsRef<Path>) -> Result<(), RenderError> {
        Ok(write_npy(path, &self.depth_array()?)?)
    }
}

/// One pixel's results.
#[derive(Debug, Clone, Copy, Default)]
struct Pixel {
    color: Vec3,
    normal: Vec3,
    depth: f64,
    silhouette: bool,
    albedo: Vec3,
}

/// Renders `scene` seen by `camera`.
///
/// Errors: an image above [`MAX_PIXELS`], normal and albedo maps of a fog volume (it has
/// neither), a ground plane under fog, invalid fog settings, `max_bounces` above
/// [`MAX_BOUNCES`].
pub fn render(scene: &Scene, camera: &Camera, outputs: Outputs) -> Result<Frame, RenderError> {
    let (w, h) = (camera.width, camera.height);
    if w.checked_mul(h).is_none_or(|n| n > MAX_PIXELS) {
        return Err(RenderError::InvalidCamera(format!(
            "image size {w}×{h} is above the {MAX_PIXELS} pixels a render may have"
        )));
    }
    if scene.max_bounces > MAX_BOUNCES {
        return Err(RenderError::InvalidSettings(format!(
            "max_bounces {} is above the {MAX_BOUNCES} a render may trace",
            scene.max_bounces
        )));
    }
    let pixels: Vec<Pixel> = match &scene.object {
        Object::Surface(surface) => {
            let tracer = Tracer::new(scene, surface.as_ref());
            render_rows(w, h, |x, y| {
                surface_pixel(&tracer, scene, camera, x, y, outputs)
            })
        }
        Object::Fog(fog) => {
            if outputs.normal || outputs.albedo {
                return Err(RenderError::UnsupportedOutput(
                    "a fog volume has no normals or albedo; ask for shaded, depth or silhouette",
                ));
            }
            if scene.ground.is_some() {
                return Err(RenderError::InvalidSettings(
                    "a ground plane is only rendered under surfaces, not fog volumes".into(),
                ));
            }
            let model = FogModel::new(&scene.fog, fog)?;
            render_rows(w, h, |x, y| {
                let ray = camera.ray(x as f64 + 0.5, y as f64 + 0.5);
                let s = fog.integrate(&ray, 0.0, &model);
                let trans = 1.0 - s.alpha;
                Pixel {
                    color: s.radiance + scene.background * trans,
                    normal: Vec3::default(),
                    depth: s
                        .first_t
                        .map_or(f64::INFINITY, |t| camera.depth_of(ray.at(t))),
                    silhouette: s.alpha >= 0.5,
                    albedo: Vec3::default(),
                }
            })
        }
    };
    let image = |channels: usize, f: &dyn Fn(&Pixel) -> Vec3| -> Result<ImageF32, RenderError> {
        let data = pixels
            .iter()
            .flat_map(|p| {
                let v = f(p);
                let rgb = [v.x as f32, v.y as f32, v.z as f32];
                rgb.into_iter().take(channels)
            })
            .collect();
        Ok(ImageF32::new(w, h, channels, data)?)
    };
    let silhouette_value = |p: &Pixel| Vec3::splat(if p.silhouette { 1.0 } else { 0.0 });
    Ok(Frame {
        width: w,
        height: h,
        shaded: outputs.shaded.then(|| image(3, &|p| p.color)).transpose()?,
        normal: outputs
            .normal
            .then(|| image(3, &|p| p.normal))
            .transpose()?,
        depth: outputs
            .depth
            .then(|| pixels.iter().map(|p| p.depth as f32).collect()),
        silhouette: outputs
            .silhouette
            .then(|| image(1, &silhouette_value))
            .transpose()?,
        albedo: outputs
            .albedo
            .then(|| image(3, &|p| p.albedo))
            .transpose()?,
    })
}

/// Evaluates `pixel(x, y)` for every pixel, rows in parallel; row-major order.
fn render_rows(w: usize, h: usize, pixel: impl Fn(usize, usize) -> Pixel + Sync) -> Vec<Pixel> {
    (0..w * h)
        .into_par_iter()
        .map(|i| pixel(i % w, i / w))
        .collect()
}

fn surface_pixel(
    tracer: &Tracer<'_>,
    scene: &Scene,
    camera: &Camera,
    x: usize,
    y: usize,
    outputs: Outputs,
) -> Pixel {
    let ray = camera.ray(x as f64 + 0.5, y as f64 + 0.5);
    let Some(hit) = tracer.first_hit(&ray, 0.0) else {
        return Pixel {
            color: scene.background,
            depth: f64::INFINITY,
            ..Pixel::default()
        };
    };
    let is_object = hit.kind == HitKind::Object;
    let albedo = if is_object {
        tracer.object_phong(hit.point).albedo
    } else {
        scene.ground.unwrap_or_default().albedo
    };
    Pixel {
        color: if outputs.shaded {
            tracer.shade(&ray, &hit, 0)
        } else {
            Vec3::default()
        },
        normal: camera.to_camera_space(hit.normal) * 0.5 + Vec3::splat(0.5),
        depth: camera.depth_of(hit.point),
        silhouette: is_object,
        albedo,
    }
}

/// The grey version of an RGB image (mean of the channels); grey images are returned as is.
pub fn to_grey(image: &ImageF32) -> Result<ImageF32, RenderError> {
    if image.channels == 1 {
        return Ok(image.clone());
    }
    let data = image
        .data
        .chunks_exact(3)
        .map(|c| (c[0] + c[1] + c[2]) / 3.0)
        .collect();
    Ok(ImageF32::new(image.width, image.height, 1, data)?)
}

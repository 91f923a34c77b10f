//! The scene (object, material, light, ground) and the recursive shading of one ray: Phong with
//! hard shadows, mirror reflection, and refraction with Snell's law and Schlick's Fresnel term.

use super::camera::direction_from_angles;
use super::fog::{FogSettings, FogVolume};
use super::surface::{Surface, SurfaceHit};
use super::vec3::{Aabb, Ray, Vec3};

/// What the scene renders.
pub enum Object {
    /// A closed surface (analytic SDF, level set, occupancy, dense grid iso-surface).
    Surface(Box<dyn Surface>),
    /// A participating medium.
    Fog(Box<FogVolume>),
}

impl Object {
    /// World box of the object.
    pub fn bounds(&self) -> Aabb {
        match self {
            Object::Surface(s) => s.bounds(),
            Object::Fog(f) => f.bounds(),
        }
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Surface(s) => write!(f, "Surface {{ bounds: {:?} }}", s.bounds()),
            Object::Fog(v) => write!(f, "Fog {{ bounds: {:?} }}", v.bounds()),
        }
    }
}

/// How the object's surface responds to light.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Material {
    /// Phong only.
    #[default]
    Diffuse,
    /// Mirror: `(1 − reflectivity) · Phong + reflectivity · reflected radiance`.
    Reflective {
        /// Share of reflected light in `[0, 1]`.
        reflectivity: f64,
    },
    /// Glass-like: Schlick-weighted reflection plus refraction (tinted by the albedo).
    Clear {
        /// Index of refraction (air is 1).
        ior: f64,
    },
}

/// Phong coefficients and the base colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phong {
    /// Base colour (RGB in `[0, 1]`).
    pub albedo: Vec3,
    /// Ambient weight.
    pub ambient: f64,
    /// Diffuse weight.
    pub diffuse: f64,
    /// Specular weight.
    pub specular: f64,
    /// Specular exponent.
    pub shininess: f64,
}

impl Default for Phong {
    fn default() -> Self {
        Phong {
            albedo: Vec3::splat(0.8),
            ambient: 0.1,
            diffuse: 0.9,
            specular: 0.3,
            shininess: 32.0,
        }
    }
}

/// The light source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Light {
    /// Parallel light arriving from direction `towards` (pointing at the light).
    Directional {
        /// Direction towards the light.
        towards: Vec3,
    },
    /// A point light.
    Point {
        /// Position.
        position: Vec3,
    },
}

impl Light {
    /// A directional light from azimuth/elevation in degrees, the camera's convention
    /// ([`direction_from_angles`]).
    pub fn from_angles(azimuth_deg: f64, elevation_deg: f64) -> Self {
        Light::Directional {
            towards: direction_from_angles(azimuth_deg, elevation_deg),
        }
    }

    /// Unit direction from `p` to the light and the distance to it (infinite for directional).
    fn towards(&self, p: Vec3) -> (Vec3, f64) {
        match self {
            Light::Directional { towards } => (towards.normalized(), f64::INFINITY),
            Light::Point { position } => {
                let d = *position - p;
                (d.normalized(), d.length())
            }
        }
    }
}

impl Default for Light {
    fn default() -> Self {
        Light::from_angles(45.0, 45.0)
    }
}

/// A horizontal ground plane that receives shadows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ground {
    /// Height `y` of the plane; `None` puts it at the bottom of the object's bounds: the lowest
    /// point for spheres, boxes, tori and capsules, within a voxel of it for grids (the box of
    /// the cells the surface crosses), up to `k/4` below it for smooth unions.
    pub height: Option<f64>,
    /// Diffuse colour.
    pub albedo: Vec3,
}

impl Default for Ground {
    fn default() -> Self {
        Ground {
            height: None,
            albedo: Vec3::splat(0.6),
        }
    }
}

/// Largest [`Scene::max_bounces`]: bounces recurse, one stack frame chain per bounce, and a
/// clear material can split every bounce in two, so the limit bounds both stack and work.
pub const MAX_BOUNCES: u32 = 64;

/// Everything a render needs besides the camera.
#[derive(Debug)]
pub struct Scene {
    /// The object.
    pub object: Object,
    /// Its material (surfaces).
    pub material: Material,
    /// Its colour and Phong coefficients (surfaces).
    pub phong: Phong,
    /// The light (surfaces; fog uses [`FogSettings::light_dir`]).
    pub light: Light,
    /// Light colour × intensity.
    pub light_color: Vec3,
    /// Optional ground plane (surfaces only).
    pub ground: Option<Ground>,
    /// Colour of rays that hit nothing.
    pub background: Vec3,
    /// Most reflection/refraction bounces per primary ray, at most [`MAX_BOUNCES`]
    /// ([`render`](super::render) refuses more).
    pub max_bounces: u32,
    /// Fog model parameters (fog volumes only).
    pub fog: FogSettings,
}

impl Scene {
    /// A scene with default material, light, no ground and a black background.
    pub fn new(object: Object) -> Self {
        Scene {
            object,
            material: Material::default(),
            phong: Phong::default(),
            light: Light::default(),
            light_color: Vec3::splat(1.0),
            ground: None,
            background: Vec3::default(),
            max_bounces: 4,
            fog: FogSettings::default(),
        }
    }
}

/// What a ray hit first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HitKind {
    Object,
    Ground,
}

/// A hit with its kind, point and outward normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub(crate) kind: HitKind,
    pub(crate) t: f64,
    pub(crate) point: Vec3,
    pub(crate) normal: Vec3,
}

/// A surface scene prepared for tracing: resolved ground height and ray offsets.
pub(crate) struct Tracer<'a> {
    scene: &'a Scene,
    surface: &'a dyn Surface,
    ground_y: Option<f64>,
    /// Offset of secondary ray origins from a surface, against self-intersection.
    eps: f64,
}

impl<'a> Tracer<'a> {
    pub(crate) fn new(scene: &'a Scene, surface: &'a dyn Surface) -> Self {
        let bounds = surface.bounds();
        let ground_y = scene.ground.map(|g| g.height.unwrap_or(bounds.min.y));
        Tracer {
            scene,
            surface,
            ground_y,
            eps: 1e-4 * bounds.diagonal().max(1e-12),
        }
    }

    /// The nearest hit of the object or the ground with `t > t_min`.
    pub(crate) fn first_hit(&self, ray: &Ray, t_min: f64) -> Option<Hit> {
        let far = self.ground_t(ray, t_min).unwrap_or(f64::MAX);
        if let Some(SurfaceHit { t, normal }) = self.surface.intersect(ray, t_min, far) {
            return Some(Hit {
                kind: HitKind::Object,
                t,
                point: ray.at(t),
                normal,
            });
        }
        self.ground_t(ray, t_min).map(|t| Hit {
            kind: HitKind::Ground,
            t,
            point: ray.at(t),
            normal: Vec3::new(0.0, if ray.dir.y < 0.0 { 1.0 } else { -1.0 }, 0.0),
        })
    }

    fn ground_t(&self, ray: &Ray, t_min: f64) -> Option<f64> {
        let y = self.ground_y?;
        if ray.dir.y == 0.0 {
            return None;
        }
        let t = (y - ray.origin.y) / ray.dir.y;
        (t > t_min && t.is_finite()).then_some(t)
    }

    /// Radiance arriving along `ray`.
    pub(crate) fn trace(&self, ray: &Ray, bounces: u32) -> Vec3 {
        match self.first_hit(ray, 0.0) {
            Some(hit) => self.shade(ray, &hit, bounces),
            None => self.scene.background,
        }
    }

    /// Radiance leaving `hit` towards the ray's origin.
    pub(crate) fn shade(&self, ray: &Ray, hit: &Hit, bounces: u32) -> Vec3 {
        let scene = self.scene;
        if hit.kind == HitKind::Ground {
            let ground = scene.ground.unwrap_or_default();
            let phong = Phong {
                albedo: ground.albedo,
                specular: 0.0,
                ..scene.phong
            };
            return self.phong(ray, hit, &phong);
        }
        let phong = self.object_phong(hit.point);
        let local = || self.phong(ray, hit, &phong);
        if bounces >= scene.max_bounces {
            return local();
        }
        // The normal on the side the ray arrives from.
        let entering = ray.dir.dot(hit.normal) < 0.0;
        let facing = if entering { hit.normal } else { -hit.normal };
        let reflected = || {
            let dir = ray.dir.reflect(facing).normalized();
            let r = Ray {
                origin: hit.point + facing * self.eps,
                dir,
            };
            self.trace(&r, bounces + 1)
        };
        match scene.material {
            Material::Diffuse => local(),
            Material::Reflective { reflectivity } => {
                let k = reflectivity.clamp(0.0, 1.0);
                local() * (1.0 - k) + reflected() * k
            }
            Material::Clear { ior } => {
                let (n1, n2) = if entering { (1.0, ior) } else { (ior, 1.0) };
                let eta = n1 / n2;
                let cos_i = -ray.dir.dot(facing);
                let sin2_t = eta * eta * (1.0 - cos_i * cos_i);
                if sin2_t > 1.0 {
                    // Total internal reflection.
                    return reflected();
                }
                let cos_t = (1.0 - sin2_t).sqrt();
                let r0 = ((n1 - n2) / (n1 + n2)).powi(2);
                // Schlick uses the angle on the optically thinner side.
                let cos = if n1 <= n2 { cos_i } else { cos_t };
                let fresnel = r0 + (1.0 - r0) * (1.0 - cos).powi(5);
                let refracted_dir = (ray.dir * eta + facing * (eta * cos_i - cos_t)).normalized();
                let refracted = Ray {
                    origin: hit.point - facing * self.eps,
                    dir: refracted_dir,
                };
                let transmitted = self.trace(&refracted, bounces + 1);
                reflected() * fresnel + transmitted.mul_elem(phong.albedo) * (1.0 - fresnel)
            }
        }
    }

    /// The scene's Phong coefficients with the surface's own colour at `p`, if it has one.
    pub(crate) fn object_phong(&self, p: Vec3) -> Phong {
        Phong {
            albedo: self.surface.albedo_at(p).unwrap_or(self.scene.phong.albedo),
            ..self.scene.phong
        }
    }

    /// Phong shading at `hit` with a hard shadow test.
    fn phong(&self, ray: &Ray, hit: &Hit, phong: &Phong) -> Vec3 {
        let scene = self.scene;
        let facing = if ray.dir.dot(hit.normal) < 0.0 {
            hit.normal
        } else {
            -hit.normal
        };
        let ambient = phong.albedo * phong.ambient;
        let (l, dist) = scene.light.towards(hit.point);
        let n_dot_l = facing.dot(l);
        if n_dot_l <= 0.0 || self.occluded(hit.point + facing * self.eps, l, dist) {
            return ambient;
        }
        let diffuse = phong.albedo * (phong.diffuse * n_dot_l);
        let r = (-l).reflect(facing);
        let spec = (-ray.dir.normalized())
            .dot(r)
            .max(0.0)
            .powf(phong.shininess)
            * phong.specular;
        ambient + (diffuse + Vec3::splat(spec)).mul_elem(scene.light_color)
    }

    /// Whether the object blocks the segment from `p` towards the light.
    fn occluded(&self, p: Vec3, l: Vec3, dist: f64) -> bool {
        let ray = Ray { origin: p, dir: l };
        let far = if dist.is_finite() { dist } else { f64::MAX };
        self.surface.intersect(&ray, 0.0, far).is_some()
    }
}

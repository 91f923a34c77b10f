//! Sphere tracing of the analytic signed distance functions ([`Sdf`], `vnr_geom::sdf`): the
//! reference renderer's [`Surface`] for them.

use super::surface::{Surface, SurfaceHit};
use super::vec3::{Aabb, Ray, Vec3};
use super::Sdf;

/// Sphere-tracing iterations before a ray is declared a miss.
const MAX_STEPS: usize = 1024;

/// The side of the start point: `-1` inside, `1` outside or on the surface.
fn side(distance: f64) -> f64 {
    if distance < 0.0 {
        -1.0
    } else {
        1.0
    }
}

impl Surface for Sdf {
    fn bounds(&self) -> Aabb {
        Sdf::bounds(self)
    }

    fn intersect(&self, ray: &Ray, t_min: f64, t_max: f64) -> Option<SurfaceHit> {
        let bounds = Sdf::bounds(self);
        let scale = bounds.diagonal().max(1e-300);
        // Pad the box so rays starting on the surface still enter it.
        let pad = Vec3::splat(1e-6 * scale);
        let padded = Aabb::new(bounds.min - pad, bounds.max + pad);
        let (t0, t1) = padded.clip(ray, t_min, t_max)?;
        let eps = 1e-7 * scale;
        let dir_len = ray.dir.length();
        let mut t = t0;
        // Rays starting inside (refraction) trace the surface from within: march on |d|.
        let start_sign = side(self.distance(ray.at(t)));
        for _ in 0..MAX_STEPS {
            let p = ray.at(t);
            let (d, grad) = self.eval(p);
            if d * start_sign <= eps {
                return Some(SurfaceHit {
                    t,
                    normal: grad.normalized(),
                });
            }
            t += d.abs() / dir_len;
            if t > t1 {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::load::analytic_sdf;

    #[test]
    fn sphere_tracing_hits_from_outside_and_inside() {
        let sphere = analytic_sdf("sphere").unwrap();
        let ray = Ray {
            origin: Vec3::new(0.0, 0.0, 5.0),
            dir: Vec3::new(0.0, 0.0, -1.0),
        };
        let hit = sphere.intersect(&ray, 0.0, 100.0).unwrap();
        assert!((hit.t - 4.0).abs() < 1e-6);
        assert!((hit.normal - Vec3::new(0.0, 0.0, 1.0)).length() < 1e-9);
        let inside = Ray {
            origin: Vec3::default(),
            dir: Vec3::new(1.0, 0.0, 0.0),
        };
        assert!((sphere.intersect(&inside, 0.0, 100.0).unwrap().t - 1.0).abs() < 1e-6);
        assert!(sphere.intersect(&ray, 0.0, 3.0).is_none());
    }
}

//! Fog volumes: emission–absorption with single scattering, OpenVDB `vdb_render`'s model.
//!
//! Along the primary ray, samples sit at index-space distances `k · step` from the eye (voxel
//! units, as in `tools::VolumeRender`); a sample of density `ρ ≥ cutoff` has transmittance
//! `T = exp(−(σ_s + σ_a) · ρ · step)` per channel and adds `albedo · T_shadow · T_primary ·
//! (1 − T)` with `albedo = light_color · σ_s / (σ_s + σ_a)`. The shadow ray towards the light
//! samples every `shadow_step` voxels (`k ≥ 1`), attenuating by `exp(−(σ_s + σ_a) · ρ ·
//! shadow_step / (1 + s · gain))` at distance `s` (or not at all: [`FogSettings::shadows`]).
//! A ray stops once `|T|² < cutoff`. Alpha is `1 − mean(T_primary)`. Densities are trilinear
//! in the voxel values (OpenVDB's BoxSampler).
//!
//! Steps are at least [`MIN_FOG_STEP`] voxels, so a ray takes a bounded number of samples per
//! brick; samples more than 2⁵³ steps from a ray's origin, where `k + 1 = k` in `f64`, are not
//! taken.

use super::bricks::{fast_ceil, sample_brick, Bricks, Dda, IndexMap, BRICK};
use super::vec3::{Aabb, Ray, Vec3};
use super::RenderError;

/// Smallest primary and shadow step, in voxels (a brick is 8): a smaller step costs over
/// 10⁴ samples per voxel, and below about `distance · 2⁻⁵³` the sample index stops advancing.
pub const MIN_FOG_STEP: f64 = 1e-3;

/// Sample indices `k` are exact integers in `f64` below 2⁵³; past it `k + 1 = k`.
const MAX_SAMPLE_INDEX: f64 = 9_007_199_254_740_992.0;

/// Parameters of the fog model; defaults are `vdb_render`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FogSettings {
    /// Absorption coefficient per voxel of path at density 1 (RGB).
    pub absorption: Vec3,
    /// Scattering coefficient per voxel of path at density 1 (RGB).
    pub scattering: Vec3,
    /// Direction towards the light (world; normalised when used).
    pub light_dir: Vec3,
    /// Light colour (RGB).
    pub light_color: Vec3,
    /// In-scattering gain along shadow rays.
    pub gain: f64,
    /// Primary step in voxels, at least [`MIN_FOG_STEP`].
    pub step: f64,
    /// Shadow step in voxels, at least [`MIN_FOG_STEP`].
    pub shadow_step: f64,
    /// Density and transmittance cutoff.
    pub cutoff: f64,
    /// Attenuate the light towards each sample with a shadow ray (vdb_render's single
    /// scattering); `false` lights every sample fully: plain emission–absorption with emission
    /// `albedo`, much cheaper.
    pub shadows: bool,
}

impl Default for FogSettings {
    fn default() -> Self {
        FogSettings {
            absorption: Vec3::splat(0.1),
            scattering: Vec3::splat(1.5),
            light_dir: Vec3::new(0.3, 0.3, 0.0),
            light_color: Vec3::splat(0.7),
            gain: 0.2,
            step: 1.0,
            shadow_step: 3.0,
            cutoff: 0.005,
            shadows: true,
        }
    }
}

impl FogSettings {
    /// Checks that steps are finite and at least [`MIN_FOG_STEP`] and the light direction is a
    /// direction.
    pub fn check(&self) -> Result<(), RenderError> {
        let usable = |v: f64| v >= MIN_FOG_STEP && v.is_finite();
        if !(usable(self.step) && usable(self.shadow_step)) {
            return Err(RenderError::InvalidSettings(format!(
                "fog step {} and shadow_step {} must be finite and at least {MIN_FOG_STEP} voxels",
                self.step, self.shadow_step
            )));
        }
        if self.light_dir.length() == 0.0 || !self.light_dir.is_finite() {
            return Err(RenderError::InvalidSettings(
                "the fog light direction must be a non-zero vector".into(),
            ));
        }
        Ok(())
    }
}

/// What a fog ray gathered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FogSample {
    /// Scattered light (RGB).
    pub radiance: Vec3,
    /// `1 − mean transmittance`.
    pub alpha: f64,
    /// World ray parameter of the first sample at or above the cutoff, if any.
    pub first_t: Option<f64>,
}

/// A density grid, bricked where the density is non-zero.
#[derive(Debug, Clone)]
pub struct FogVolume {
    bricks: Bricks,
    map: IndexMap,
    bounds: Aabb,
}

impl FogVolume {
    /// A fog volume from voxel densities: `value(ijk)` for any voxel, `blocks` the 8³ blocks
    /// (voxel index `div_euclid` 8) that hold non-zero densities.
    pub fn from_voxels(
        blocks: impl IntoIterator<Item = [i32; 3]>,
        value: impl Fn([i32; 3]) -> f32 + Sync,
        map: IndexMap,
    ) -> Result<Self, RenderError> {
        let mut candidates = Vec::new();
        for b in blocks {
            for d in 0..8 {
                candidates.push([b[0] - (d & 1), b[1] - ((d >> 1) & 1), b[2] - ((d >> 2) & 1)]);
            }
        }
        let density = |ijk: [i32; 3]| {
            let v = value(ijk);
            if v.is_finite() {
                v
            } else {
                0.0
            }
        };
        let bricks = Bricks::build(candidates, density, |_, hi| hi > 0.0)?;
        let bounds = bricks
            .index_bounds()
            .map(|b| map.box_to_world(&b))
            .ok_or(RenderError::EmptyScene)?;
        Ok(FogVolume {
            bricks,
            map,
            bounds,
        })
    }

    /// A dense `[X, Y, Z]` density grid (z fastest); outside it the density is 0.
    pub fn from_dense(
        values: &[f32],
        dims: [usize; 3],
        map: IndexMap,
    ) -> Result<Self, RenderError> {
        let n = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        let idims = dims.map(|d| i32::try_from(d).unwrap_or(i32::MAX));
        if n != Some(values.len()) || values.is_empty() || idims.contains(&i32::MAX) {
            return Err(RenderError::InvalidGrid(format!(
                "{} values for a dense grid of dims {dims:?}",
                values.len()
            )));
        }
        let value = |ijk: [i32; 3]| {
            if (0..3).all(|k| ijk[k] >= 0 && ijk[k] < idims[k]) {
                let [x, y, z] = ijk.map(|v| v as usize);
                values[(x * dims[1] + y) * dims[2] + z]
            } else {
                0.0
            }
        };
        Self::from_voxels(super::surface::dense_blocks(idims), value, map)
    }

    /// World box of the non-zero densities (to the brick).
    pub fn bounds(&self) -> Aabb {
        self.bounds
    }

    /// Integrates one world ray (unit `dir`) from `t_min` under a [`FogModel`] made for this
    /// volume.
    pub fn integrate(&self, ray: &Ray, t_min: f64, model: &FogModel) -> FogSample {
        let mut out = FogSample {
            radiance: Vec3::default(),
            alpha: 0.0,
            first_t: None,
        };
        let Some(domain) = self.bricks.index_bounds() else {
            return out;
        };
        // Index-space ray with a unit direction, so its parameter counts voxels.
        let dir = self.map.dir_to_index(ray.dir);
        let len = dir.length();
        if !(len > 0.0 && len.is_finite()) {
            return out;
        }
        let iray = Ray {
            origin: self.map.to_index(ray.origin),
            dir: dir / len,
        };
        let step = model.settings.step;
        let mut trans = Vec3::splat(1.0);
        let mut lumi = Vec3::default();
        let Some((s0, s1)) = domain.clip(&iray, (t_min * len).max(0.0), f64::MAX) else {
            return out;
        };
        let Some(dda) = Dda::new(&iray, s0, s1, BRICK) else {
            return out;
        };
        'blocks: for (block, b0, b1) in dda {
            let Some(brick) = self.bricks.brick(block) else {
                continue;
            };
            let base = Vec3::from_array(block.map(|b| f64::from(b * BRICK)));
            // Samples on the brick's far face belong to the next brick (or this, the last).
            let mut k = fast_ceil(b0 / step);
            while k < MAX_SAMPLE_INDEX && (k * step < b1 || (b1 >= s1 && k * step <= b1)) {
                let s = k * step;
                k += 1.0;
                let p = iray.at(s);
                let density = sample_brick(brick, p - base);
                if density < model.settings.cutoff {
                    continue;
                }
                out.first_t.get_or_insert(s / len);
                let dt = model.attenuation(density * step);
                let shadow = if model.settings.shadows {
                    self.shadow(p, model)
                } else {
                    Vec3::splat(1.0)
                };
                lumi += model
                    .albedo
                    .mul_elem(shadow)
                    .mul_elem(trans)
                    .mul_elem(Vec3::splat(1.0) - dt);
                trans = trans.mul_elem(dt);
                if trans.dot(trans) < model.settings.cutoff {
                    break 'blocks;
                }
            }
        }
        out.radiance = lumi;
        out.alpha = 1.0 - (trans.x + trans.y + trans.z) / 3.0;
        out
    }

    /// Transmittance from index point `p` towards the light.
    ///
    /// Accumulates the optical depth and exponentiates once: the same product of per-sample
    /// factors up to rounding, and a ray stops once the depth passes the one where `|T|²`
    /// falls under the cutoff.
    fn shadow(&self, p: Vec3, model: &FogModel) -> Vec3 {
        let Some(domain) = self.bricks.index_bounds() else {
            return Vec3::splat(1.0);
        };
        let ray = Ray {
            origin: p,
            dir: model.light,
        };
        let (step, gain, cutoff) = (
            model.settings.shadow_step,
            model.settings.gain,
            model.settings.cutoff,
        );
        let mut depth = 0.0;
        let dda = domain
            .clip(&ray, 0.0, f64::MAX)
            .and_then(|(s0, s1)| Some((Dda::new(&ray, s0, s1, BRICK)?, s1)));
        if let Some((dda, s1)) = dda {
            'blocks: for (block, b0, b1) in dda {
                let Some(brick) = self.bricks.brick(block) else {
                    continue;
                };
                let base = Vec3::from_array(block.map(|b| f64::from(b * BRICK)));
                let mut k = fast_ceil(b0 / step).max(1.0);
                while k < MAX_SAMPLE_INDEX && (k * step < b1 || (b1 >= s1 && k * step <= b1)) {
                    let s = k * step;
                    k += 1.0;
                    let density = sample_brick(brick, ray.at(s) - base);
                    if density < cutoff {
                        continue;
                    }
                    depth += density * step / (1.0 + s * gain);
                    if depth > model.depth_limit {
                        break 'blocks;
                    }
                }
            }
        }
        model.attenuation(depth)
    }
}

/// [`FogSettings`] prepared for one volume: index-space light direction, single-scattering
/// albedo, and the optical depth past which a ray is dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FogModel {
    settings: FogSettings,
    extinction: Vec3,
    albedo: Vec3,
    /// Unit light direction in index space.
    light: Vec3,
    /// Optical depth (density × voxels) at which `|exp(−extinction · depth)|² = cutoff`.
    depth_limit: f64,
}

impl FogModel {
    /// Checks `settings` and prepares them for `volume`.
    pub fn new(settings: &FogSettings, volume: &FogVolume) -> Result<Self, RenderError> {
        settings.check()?;
        let extinction = settings.scattering + settings.absorption;
        let albedo = Vec3::new(
            ratio(settings.scattering.x, extinction.x),
            ratio(settings.scattering.y, extinction.y),
            ratio(settings.scattering.z, extinction.z),
        )
        .mul_elem(settings.light_color);
        let light = volume.map.dir_to_index(settings.light_dir).normalized();
        let mut model = FogModel {
            settings: *settings,
            extinction,
            albedo,
            light,
            depth_limit: f64::INFINITY,
        };
        model.depth_limit = model.find_depth_limit();
        Ok(model)
    }

    /// `exp(−extinction · depth)` per channel (one `exp` when the channels agree).
    fn attenuation(&self, depth: f64) -> Vec3 {
        let e = self.extinction;
        if e.x == e.y && e.y == e.z {
            Vec3::splat((-e.x * depth).exp())
        } else {
            (e * -depth).exp()
        }
    }

    /// The optical depth where `|T|²` reaches the cutoff, by bisection (`|T|²` decreases with
    /// depth when every extinction coefficient is positive; otherwise rays never stop early).
    fn find_depth_limit(&self) -> f64 {
        let cutoff = self.settings.cutoff;
        let e = self.extinction;
        if !(e.x > 0.0 && e.y > 0.0 && e.z > 0.0 && cutoff > 0.0) {
            return f64::INFINITY;
        }
        let norm2 = |d: f64| {
            let t = self.attenuation(d);
            t.dot(t)
        };
        if norm2(0.0) < cutoff {
            return 0.0;
        }
        let (mut lo, mut hi) = (0.0, 1.0);
        // |T|² ≤ 3·exp(−2·min(e)·d): doubling reaches the cutoff within ~1100 steps.
        for _ in 0..1100 {
            if norm2(hi) < cutoff {
                break;
            }
            lo = hi;
            hi *= 2.0;
        }
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if norm2(mid) < cutoff {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b != 0.0 {
        a / b
    } else {
        0.0
    }
}

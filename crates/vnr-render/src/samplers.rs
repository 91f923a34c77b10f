//! Ray samplers: PyTorch3D's `MultinomialRaysampler`, `NDCMultinomialRaysampler` and
//! `MonteCarloRaysampler` (`pytorch3d/renderer/implicit/raysampling.py`), stratified depth
//! jitter, and near/far bounds from a ray–box intersection.
//!
//! Rays are built as PyTorch3D builds them: each pixel's NDC `xy` is unprojected at view depths
//! 1 and 2; the direction is the difference of the two points and the origin the first point
//! minus the direction. So perspective rays start at the camera centre and orthographic rays on
//! the view plane `z = 0`, and (without `unit_directions`) a sample's length equals its
//! view-space depth.
//!
//! Randomness (pixel choice, jitter) comes only from the `rng` passed in, so a seed reproduces
//! a bundle exactly; the draws differ from torch's generator.

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, RngCore};

use crate::cameras::{normalize, Camera};
use crate::rays::RayBundle;

/// An axis-aligned box in world coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aabb {
    /// Smallest corner.
    pub min: [f32; 3],
    /// Largest corner.
    pub max: [f32; 3],
}

impl Aabb {
    /// The box `[min, max]`; refuses non-finite corners and `min > max` on any axis.
    pub fn new(min: [f32; 3], max: [f32; 3]) -> Result<Self> {
        let ok = (0..3).all(|i| min[i].is_finite() && max[i].is_finite() && min[i] <= max[i]);
        if !ok {
            candle_core::bail!("box corners {min:?}, {max:?} are not finite with min <= max");
        }
        Ok(Self { min, max })
    }
}

/// Where rays cross a box, per ray (shapes are the rays' batch shape `[...]`).
#[derive(Debug, Clone)]
pub struct BoxCrossing {
    /// Entry depth clamped to `[min_depth, max_depth]`, in units of the ray directions; equal to
    /// `max_depth` for rays that miss.
    pub near: Tensor,
    /// Exit depth clamped likewise; equal to `max_depth` for rays that miss.
    pub far: Tensor,
    /// `1` where the ray meets the box within `[min_depth, max_depth]`, else `0` (`u8`).
    pub hit: Tensor,
}

/// Intersects rays `origins + t · directions` (`[..., 3]` each) with `aabb` (slab method, in
/// `f64`), keeping `t ∈ [min_depth, max_depth]`.
///
/// Rays that miss (or meet the box only outside the depth range, or have non-finite
/// coordinates) get `near = far = max_depth` and `hit = 0`: every point of such a ray lies
/// outside the box, so samples placed there see nothing of a box-bounded field. A direction
/// component of 0 is handled exactly (the ray is inside that slab or never). The computation
/// runs on the CPU; results return on the rays' device.
pub fn ray_box_intersection(
    origins: &Tensor,
    directions: &Tensor,
    aabb: &Aabb,
    min_depth: f32,
    max_depth: f32,
) -> Result<BoxCrossing> {
    let dims = origins.dims();
    if dims.last() != Some(&3) || directions.dims() != dims {
        candle_core::bail!(
            "ray_box_intersection: origins {dims:?} and directions {:?} must both be [..., 3]",
            directions.dims()
        );
    }
    let batch = &dims[..dims.len() - 1];
    let o = origins
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let d = directions
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let n = o.len() / 3;
    let mut near = Vec::with_capacity(n);
    let mut far = Vec::with_capacity(n);
    let mut hit = Vec::with_capacity(n);
    for (o, d) in o.chunks_exact(3).zip(d.chunks_exact(3)) {
        let (t0, t1) = slab_interval(o, d, aabb);
        let lo = t0.max(min_depth as f64);
        let hi = t1.min(max_depth as f64);
        // NaN compares false, so non-finite rays fall through to "miss".
        if lo <= hi {
            near.push(lo as f32);
            far.push(hi as f32);
            hit.push(1u8);
        } else {
            near.push(max_depth);
            far.push(max_depth);
            hit.push(0u8);
        }
    }
    let dev = origins.device();
    Ok(BoxCrossing {
        near: Tensor::from_vec(near, batch, dev)?,
        far: Tensor::from_vec(far, batch, dev)?,
        hit: Tensor::from_vec(hit, batch, dev)?,
    })
}

/// The parameter interval `[t0, t1]` where a ray is inside the box (`t0 > t1` when it misses).
fn slab_interval(o: &[f32], d: &[f32], aabb: &Aabb) -> (f64, f64) {
    let mut t0 = f64::NEG_INFINITY;
    let mut t1 = f64::INFINITY;
    for axis in 0..3 {
        let (o, d) = (o[axis] as f64, d[axis] as f64);
        let (lo, hi) = (aabb.min[axis] as f64, aabb.max[axis] as f64);
        if d == 0.0 {
            if !(lo..=hi).contains(&o) {
                return (f64::INFINITY, f64::NEG_INFINITY);
            }
            continue;
        }
        let a = (lo - o) / d;
        let b = (hi - o) / d;
        t0 = t0.max(a.min(b));
        t1 = t1.min(a.max(b));
    }
    (t0, t1)
}

/// `n` evenly spaced values from `start` to `end` inclusive (`[start]` when `n == 1`), as
/// `torch.linspace`.
fn linspace(start: f64, end: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = if n > 1 {
        (end - start) / (n - 1) as f64
    } else {
        0.0
    };
    (0..n).map(move |i| {
        if i + 1 == n && n > 1 {
            end
        } else {
            start + step * i as f64
        }
    })
}

/// Jitters sorted depths within their bins (PyTorch3D's `_jiggle_within_stratas`) in place:
/// sample `i` moves uniformly within `[mid(i−1, i), mid(i, i+1)]`, the first bin starting at the
/// first depth and the last ending at the last depth.
fn jiggle_row(depths: &mut [f32], rng: &mut impl Rng) {
    let n = depths.len();
    let centers = depths.to_vec();
    for (i, depth) in depths.iter_mut().enumerate() {
        let lower = match i.checked_sub(1).and_then(|j| centers.get(j)) {
            Some(prev) => 0.5 * (prev + centers[i]),
            None => centers[i],
        };
        let upper = if i + 1 < n {
            0.5 * (centers[i] + centers[i + 1])
        } else {
            centers[i]
        };
        *depth = lower + (upper - lower) * rng.random::<f32>();
    }
}

/// PyTorch3D's `_jiggle_within_stratas` for a whole tensor of depths `[..., P]` (sorted along
/// the last axis): each depth is redrawn uniformly within its bin, the bins being bounded by
/// the midpoints between neighbours and by the first and last depth.
pub fn jiggle_within_stratas(depths: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
    let p = depths.dims().last().copied().unwrap_or(0);
    let mut values = depths
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    if p > 0 {
        for row in values.chunks_exact_mut(p) {
            jiggle_row(row, rng);
        }
    }
    Tensor::from_vec(values, depths.dims(), depths.device())
}

/// How samples are placed along rays: shared by both samplers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DepthSampling {
    n_pts_per_ray: usize,
    min_depth: f32,
    max_depth: f32,
    stratified: bool,
    bounds: Option<Aabb>,
    unit_directions: bool,
}

impl DepthSampling {
    /// Checks the depths, and that `b` cameras × `rays` per camera fit in memory with their
    /// origins and directions (`B·R·3`) and their sample depths: every buffer [`Self::rays`]
    /// builds is one of these sizes or twice one.
    fn check(&self, op: &str, b: usize, rays: usize) -> Result<()> {
        if !(self.min_depth.is_finite() && self.max_depth.is_finite()) {
            candle_core::bail!(
                "ray sampler depths [{}, {}] are not finite",
                self.min_depth,
                self.max_depth
            );
        }
        crate::capped_elements(op, "cameras × rays per camera × 3", &[b, rays, 3])?;
        let p = self.n_pts_per_ray;
        if self.stratified || self.bounds.is_some() {
            crate::capped_elements(
                op,
                "cameras × rays per camera × n_pts_per_ray",
                &[b, rays, p],
            )?;
        } else {
            // Shared depths are one row of P viewed with stride 0 over the rays: renderers
            // march such bundles in chunks, so only the row has to fit.
            crate::capped_elements(op, "n_pts_per_ray", &[p])?;
        }
        Ok(())
    }

    /// Rays through NDC points `xy` `[B, R, 2]` of `cameras`, reshaped to
    /// `[B, spatial..., _]` (PyTorch3D's `_xy_to_ray_bundle`).
    fn rays(
        &self,
        cameras: &dyn Camera,
        xy: &Tensor,
        spatial: &[usize],
        rng: &mut impl Rng,
    ) -> Result<RayBundle> {
        let (b, r, _) = xy.dims3()?;
        let dev = xy.device();
        let at_depth = |depth: f64| -> Result<Tensor> {
            Tensor::cat(&[xy, &Tensor::full(depth as f32, (b, r, 1), dev)?], 2)
        };
        let to_unproject = Tensor::cat(&[at_depth(1.0)?, at_depth(2.0)?], 1)?;
        let unprojected = cameras.unproject_points(&to_unproject, true, true)?;
        let plane1 = unprojected.narrow(1, 0, r)?;
        let plane2 = unprojected.narrow(1, r, r)?;
        let mut directions = plane2.sub(&plane1)?;
        let origins = plane1.sub(&directions)?;
        if self.unit_directions {
            // torch's F.normalize default eps.
            directions = normalize(&directions, 1e-12)?;
        }
        let shape = |last: usize| -> Vec<usize> {
            let mut s = Vec::with_capacity(spatial.len() + 2);
            s.push(b);
            s.extend_from_slice(spatial);
            s.push(last);
            s
        };
        let lengths = self.lengths(&origins, &directions, shape(self.n_pts_per_ray), rng)?;
        RayBundle::new(
            origins.reshape(shape(3))?,
            directions.reshape(shape(3))?,
            lengths,
            xy.reshape(shape(2))?,
        )
    }

    /// Sample depths of shape `lengths_shape` (`[B, spatial..., P]`) for rays `[B, R, 3]`.
    fn lengths(
        &self,
        origins: &Tensor,
        directions: &Tensor,
        lengths_shape: Vec<usize>,
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        let p = self.n_pts_per_ray;
        let dev = origins.device();
        let (min_depth, max_depth) = (self.min_depth as f64, self.max_depth as f64);
        let Some(aabb) = self.bounds else {
            let depths: Vec<f32> = linspace(min_depth, max_depth, p)
                .map(|v| v as f32)
                .collect();
            // A stride-0 view, as PyTorch3D's `expand`: a full image of P samples per ray
            // costs P floats until something writes to it.
            let depths = Tensor::from_vec(depths, p, dev)?.broadcast_as(lengths_shape)?;
            return if self.stratified {
                jiggle_within_stratas(&depths.contiguous()?, rng)
            } else {
                Ok(depths)
            };
        };
        let crossing =
            ray_box_intersection(origins, directions, &aabb, self.min_depth, self.max_depth)?;
        let near = crossing.near.flatten_all()?.to_vec1::<f32>()?;
        let far = crossing.far.flatten_all()?.to_vec1::<f32>()?;
        let mut values = Vec::with_capacity(near.len() * p);
        for (&lo, &hi) in near.iter().zip(&far) {
            let start = values.len();
            values.extend(linspace(lo as f64, hi as f64, p).map(|v| v as f32));
            if self.stratified {
                jiggle_row(&mut values[start..], rng);
            }
        }
        Tensor::from_vec(values, lengths_shape, dev)
    }
}

/// PyTorch3D's `MultinomialRaysampler`: rays through a regular `image_height × image_width`
/// grid of NDC points spanning `[min_x, max_x] × [min_y, max_y]` (pixel `(row h, column w)` at
/// `(linspace(min_x, max_x, W)[w], linspace(min_y, max_y, H)[h])`), either all of them or
/// `n_rays_per_image` drawn per image.
///
/// Build one with [`MultinomialRaysampler::ndc`] (PyTorch3D's `NDCMultinomialRaysampler`) or
/// [`MultinomialRaysampler::grid`], then adjust the public fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultinomialRaysampler {
    /// NDC `x` of the first column.
    pub min_x: f32,
    /// NDC `x` of the last column.
    pub max_x: f32,
    /// NDC `y` of the first row.
    pub min_y: f32,
    /// NDC `y` of the last row.
    pub max_y: f32,
    /// Columns `W`.
    pub image_width: usize,
    /// Rows `H`.
    pub image_height: usize,
    /// Samples per ray `P`.
    pub n_pts_per_ray: usize,
    /// Depth of the first sample (view-space depth unless `unit_directions`).
    pub min_depth: f32,
    /// Depth of the last sample.
    pub max_depth: f32,
    /// `None`: every pixel, bundles `[B, H, W, ...]`. `Some(R)`: `R` pixels per image drawn
    /// without replacement (uniformly, or weighted by the mask), bundles `[B, R, ...]`.
    pub n_rays_per_image: Option<usize>,
    /// Normalise directions to unit length (lengths are left as they are, as in PyTorch3D).
    pub unit_directions: bool,
    /// Jitter each sample within its depth bin.
    pub stratified_sampling: bool,
    /// Put the samples between each ray's entry into and exit from this box (clamped to
    /// `[min_depth, max_depth]`) instead of between `min_depth` and `max_depth`; see
    /// [`ray_box_intersection`] for rays that miss.
    pub bounds: Option<Aabb>,
}

impl MultinomialRaysampler {
    /// A grid sampler spanning `x_range = (min_x, max_x)`, `y_range = (min_y, max_y)` with
    /// samples at depths `depth_range = (min_depth, max_depth)`; all other options off.
    pub fn grid(
        x_range: (f32, f32),
        y_range: (f32, f32),
        image_width: usize,
        image_height: usize,
        n_pts_per_ray: usize,
        depth_range: (f32, f32),
    ) -> Self {
        Self {
            min_x: x_range.0,
            max_x: x_range.1,
            min_y: y_range.0,
            max_y: y_range.1,
            image_width,
            image_height,
            n_pts_per_ray,
            min_depth: depth_range.0,
            max_depth: depth_range.1,
            n_rays_per_image: None,
            unit_directions: false,
            stratified_sampling: false,
            bounds: None,
        }
    }

    /// PyTorch3D's `NDCMultinomialRaysampler`: one ray through each pixel centre of a
    /// `image_width × image_height` image in PyTorch3D's NDC. The shorter side spans `[-1, 1]`,
    /// the longer `[-u, u]` with `u` the aspect ratio; the first column is at
    /// `x = u − u/W` (+X points left) and the first row at `y = 1 − 1/H` (+Y up).
    pub fn ndc(
        image_width: usize,
        image_height: usize,
        n_pts_per_ray: usize,
        min_depth: f32,
        max_depth: f32,
    ) -> Self {
        let (w, h) = (image_width as f64, image_height as f64);
        let (range_x, range_y) = if image_width >= image_height {
            (w / h, 1.0)
        } else {
            (1.0, h / w)
        };
        let half_pixel_x = range_x / w;
        let half_pixel_y = range_y / h;
        Self::grid(
            (
                (range_x - half_pixel_x) as f32,
                (half_pixel_x - range_x) as f32,
            ),
            (
                (range_y - half_pixel_y) as f32,
                (half_pixel_y - range_y) as f32,
            ),
            image_width,
            image_height,
            n_pts_per_ray,
            (min_depth, max_depth),
        )
    }

    /// The NDC coordinates of the grid, `[H, W, 2]` as `(x, y)`; an error when `H·W·2` is
    /// above [`crate::MAX_ELEMENTS`].
    pub fn xy_grid(&self, dev: &Device) -> Result<Tensor> {
        let (w, h) = (self.image_width, self.image_height);
        crate::capped_elements(
            "MultinomialRaysampler",
            "image_height × image_width × 2",
            &[h, w, 2],
        )?;
        let xs: Vec<f64> = linspace(self.min_x as f64, self.max_x as f64, w).collect();
        let mut grid = Vec::with_capacity(h * w * 2);
        for y in linspace(self.min_y as f64, self.max_y as f64, h) {
            for &x in &xs {
                grid.push(x as f32);
                grid.push(y as f32);
            }
        }
        Tensor::from_vec(grid, (h, w, 2), dev)
    }

    fn depth_sampling(&self) -> DepthSampling {
        DepthSampling {
            n_pts_per_ray: self.n_pts_per_ray,
            min_depth: self.min_depth,
            max_depth: self.max_depth,
            stratified: self.stratified_sampling,
            bounds: self.bounds,
            unit_directions: self.unit_directions,
        }
    }

    /// Emits rays for a batch of `B` cameras.
    ///
    /// `mask`: optional per-pixel weights `[B, H, W]` (any dtype; a 0/1 mask or non-negative
    /// weights). With a mask, pixels are drawn with probability proportional to their weight,
    /// without replacement, `n_rays_per_image` per image, or if that is `None` as many as the
    /// smallest `⌊Σ weights⌋` over the batch (PyTorch3D's rule). As PyTorch3D's
    /// `_safe_multinomial`, an image with fewer positive weights than rays requested (or an
    /// image without mask smaller than the request) is sampled with replacement.
    ///
    /// Returns `[B, H, W, ...]` bundles for the full grid and `[B, R, ...]` for drawn pixels
    /// (PyTorch3D returns `[B, R, 1, ...]`; reshape if you need its extra axis).
    ///
    /// Errors: an empty image, non-finite depths, or a grid (`H·W·2`), rays (`B·R·3`, `R` being
    /// `H·W` or the rays drawn) or sample depths (`B·R·P` when stratified or bounded, else `P`)
    /// above [`crate::MAX_ELEMENTS`].
    pub fn sample(
        &self,
        cameras: &dyn Camera,
        mask: Option<&Tensor>,
        rng: &mut impl Rng,
    ) -> Result<RayBundle> {
        let (h, w) = (self.image_height, self.image_width);
        if h == 0 || w == 0 {
            candle_core::bail!("ray sampler image {w}x{h} is empty");
        }
        let depth = self.depth_sampling();
        let b = cameras.batch_size();
        let dev = cameras.device();
        let grid = self.xy_grid(dev)?;
        let weights = mask.map(|m| mask_weights(m, b, h, w)).transpose()?;
        let n_rays = match (self.n_rays_per_image, &weights) {
            (Some(n), _) => Some(n),
            (None, Some(weights)) => Some(smallest_mask(weights, h * w)?),
            (None, None) => None,
        };
        // The ray count is known only now: a mask's total weight can request any number.
        depth.check("MultinomialRaysampler", b, n_rays.unwrap_or(h * w))?;
        let Some(n_rays) = n_rays else {
            let xy = grid
                .reshape((1, h * w, 2))?
                .broadcast_as((b, h * w, 2))?
                .contiguous()?;
            return depth.rays(cameras, &xy, &[h, w], rng);
        };
        let flat_grid = grid.reshape((h * w, 2))?;
        let mut picks = Vec::with_capacity(b * n_rays);
        for image in 0..b {
            let chosen = match &weights {
                Some(weights) => {
                    let row = weights
                        .get(image * h * w..(image + 1) * h * w)
                        .unwrap_or(&[]);
                    weighted_draws(row, n_rays, rng).map_err(|e| {
                        candle_core::Error::Msg(format!("mask of image {image}: {e}"))
                    })?
                }
                None => uniform_draws(h * w, n_rays, rng),
            };
            picks.extend(chosen.into_iter().map(|i| i as u32));
        }
        let picks = Tensor::from_vec(picks, b * n_rays, dev)?;
        let xy = flat_grid.index_select(&picks, 0)?.reshape((b, n_rays, 2))?;
        depth.rays(cameras, &xy, &[n_rays], rng)
    }
}

/// The mask as `f32` weights, `B·H·W` values, after checking its shape.
fn mask_weights(mask: &Tensor, b: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    if mask.dims() != [b, h, w] {
        candle_core::bail!(
            "ray sampler mask has shape {:?}, expected [{b}, {h}, {w}]",
            mask.dims()
        );
    }
    mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// `⌊min over images of Σ weights⌋`, PyTorch3D's ray count for a mask without a request.
fn smallest_mask(weights: &[f32], per_image: usize) -> Result<usize> {
    let smallest = weights
        .chunks_exact(per_image)
        .map(|row| row.iter().map(|&v| v as f64).sum::<f64>())
        .fold(f64::INFINITY, f64::min);
    if !(smallest.is_finite() && smallest >= 1.0) {
        candle_core::bail!("ray sampler mask: some image has total weight {smallest} < 1");
    }
    Ok(smallest as usize)
}

/// `n` of `len` indices uniformly: without replacement when `n ≤ len`, else with.
fn uniform_draws(len: usize, n: usize, rng: &mut impl Rng) -> Vec<usize> {
    if n <= len {
        rand::seq::index::sample(rng, len, n).into_vec()
    } else {
        (0..n).map(|_| rng.random_range(0..len)).collect()
    }
}

/// `n` indices drawn with probability proportional to `weights`, in draw order, without
/// replacement when at least `n` weights are positive, else with replacement (torch's
/// `multinomial` as wrapped by PyTorch3D's `_safe_multinomial`).
fn weighted_draws(
    weights: &[f32],
    n: usize,
    rng: &mut impl Rng,
) -> std::result::Result<Vec<usize>, String> {
    if let Some(bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(format!("weight {bad} is not finite and non-negative"));
    }
    let positive: Vec<(usize, f64)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0.0)
        .map(|(i, &w)| (i, w as f64))
        .collect();
    if positive.is_empty() {
        return Err("all weights are zero".into());
    }
    if positive.len() >= n {
        // Efraimidis–Spirakis: the n largest keys ln(u)/w, in decreasing order, are distributed
        // as n successive weighted draws without replacement.
        let mut keyed: Vec<(f64, usize)> = positive
            .iter()
            .map(|&(i, w)| ((1.0 - rng.random::<f64>()).ln() / w, i))
            .collect();
        keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        return Ok(keyed.into_iter().take(n).map(|(_, i)| i).collect());
    }
    let mut cumulative = Vec::with_capacity(positive.len());
    let mut total = 0.0;
    for &(_, w) in &positive {
        total += w;
        cumulative.push(total);
    }
    Ok((0..n)
        .map(|_| {
            let u = rng.random::<f64>() * total;
            let k = cumulative
                .partition_point(|&c| c <= u)
                .min(positive.len() - 1);
            positive[k].0
        })
        .collect())
}

/// PyTorch3D's `MonteCarloRaysampler`: `n_rays_per_image` rays per camera through NDC points
/// drawn uniformly from `[min_x, max_x] × [min_y, max_y]`; bundles `[B, R, ...]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonteCarloRaysampler {
    /// Smallest NDC `x`.
    pub min_x: f32,
    /// Largest NDC `x`.
    pub max_x: f32,
    /// Smallest NDC `y`.
    pub min_y: f32,
    /// Largest NDC `y`.
    pub max_y: f32,
    /// Rays per camera `R`.
    pub n_rays_per_image: usize,
    /// Samples per ray `P`.
    pub n_pts_per_ray: usize,
    /// Depth of the first sample.
    pub min_depth: f32,
    /// Depth of the last sample.
    pub max_depth: f32,
    /// Normalise directions to unit length.
    pub unit_directions: bool,
    /// Jitter each sample within its depth bin.
    pub stratified_sampling: bool,
    /// As [`MultinomialRaysampler::bounds`].
    pub bounds: Option<Aabb>,
}

impl MonteCarloRaysampler {
    /// A sampler over `x_range × y_range` with samples at `depth_range`; other options off.
    pub fn new(
        x_range: (f32, f32),
        y_range: (f32, f32),
        n_rays_per_image: usize,
        n_pts_per_ray: usize,
        depth_range: (f32, f32),
    ) -> Self {
        Self {
            min_x: x_range.0,
            max_x: x_range.1,
            min_y: y_range.0,
            max_y: y_range.1,
            n_rays_per_image,
            n_pts_per_ray,
            min_depth: depth_range.0,
            max_depth: depth_range.1,
            unit_directions: false,
            stratified_sampling: false,
            bounds: None,
        }
    }

    /// Emits `[B, R, ...]` rays for a batch of `B` cameras.
    ///
    /// Errors: non-finite depths, or rays (`B·R·3`) or sample depths (`B·R·P` when stratified
    /// or bounded, else `P`) above [`crate::MAX_ELEMENTS`].
    pub fn sample(&self, cameras: &dyn Camera, rng: &mut impl Rng) -> Result<RayBundle> {
        let depth = DepthSampling {
            n_pts_per_ray: self.n_pts_per_ray,
            min_depth: self.min_depth,
            max_depth: self.max_depth,
            stratified: self.stratified_sampling,
            bounds: self.bounds,
            unit_directions: self.unit_directions,
        };
        let b = cameras.batch_size();
        let r = self.n_rays_per_image;
        depth.check("MonteCarloRaysampler", b, r)?;
        // As PyTorch3D: all x for the batch first, then all y.
        let mut draw = |lo: f32, hi: f32| -> Vec<f32> {
            (0..b * r)
                .map(|_| rng.random::<f32>() * (hi - lo) + lo)
                .collect()
        };
        let xs = draw(self.min_x, self.max_x);
        let ys = draw(self.min_y, self.max_y);
        let xy: Vec<f32> = xs.iter().zip(&ys).flat_map(|(&x, &y)| [x, y]).collect();
        let xy = Tensor::from_vec(xy, (b, r, 2), cameras.device())?;
        depth.rays(cameras, &xy, &[r], rng)
    }
}

/// A ray sampler usable behind `&dyn`: what [`crate::renderer::ImplicitRenderer`] holds.
pub trait RaySampler {
    /// Emits the rays of a batch of cameras; randomness (pixel choice, jitter) from `rng`.
    fn sample_rays(&self, cameras: &dyn Camera, rng: &mut dyn RngCore) -> Result<RayBundle>;
}

impl RaySampler for MultinomialRaysampler {
    fn sample_rays(&self, cameras: &dyn Camera, mut rng: &mut dyn RngCore) -> Result<RayBundle> {
        self.sample(cameras, None, &mut rng)
    }
}

impl RaySampler for MonteCarloRaysampler {
    fn sample_rays(&self, cameras: &dyn Camera, mut rng: &mut dyn RngCore) -> Result<RayBundle> {
        self.sample(cameras, &mut rng)
    }
}

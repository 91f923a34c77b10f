//! Batched cameras with PyTorch3D's conventions, and conversions to OpenCV and NeRF/Blender.
//!
//! Everything here reproduces `pytorch3d/renderer/cameras.py` and
//! `pytorch3d/renderer/camera_conversions.py` so that `R`, `T`, intrinsics and projected
//! coordinates carry over between PyTorch3D and vnr unchanged. The conventions are tabulated
//! in `docs/cameras.md`; in short:
//!
//! - Row vectors: `X_view = X_world · R + T`, `R` `[B, 3, 3]`, `T` `[B, 3]`.
//! - View space: +X left, +Y up, +Z into the screen (away from the camera).
//! - NDC: +X left, +Y up; the shorter image side spans `[-1, 1]`, the longer `[-u, u]`, `u ≥ 1`.
//!   Pixel centres sit at half-pixel offsets (see [`crate::samplers`]).
//! - Screen (pixels): +X right, +Y down, origin at the top-left corner of the image, pixel
//!   `(i, j)` covering `[i, i + 1) × [j, j + 1)`.
//!
//! The common API is the [`Camera`] trait, implemented by [`FoVPerspectiveCameras`],
//! [`FoVOrthographicCameras`] and [`PerspectiveCameras`]; ray samplers take `&dyn Camera`.
//! All tensors are `f32`; a batch of `B` cameras shares one device. Every computation is made of
//! candle tensor ops, so gradients flow to `R`, `T` and the intrinsics.

use candle_core::{DType, Device, Result, Tensor, D};

/// Image size in pixels. PyTorch3D passes it as `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageSize {
    /// An image `height` rows by `width` columns.
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }
}

/// An affine map of projected `xy` (the output space of a camera's projection) to NDC `xy`:
/// `ndc = (projected + offset) / scale`, per camera. `z` is untouched.
#[derive(Debug, Clone)]
pub struct XyToNdc {
    /// `[B, 1, 1]`.
    pub scale: Tensor,
    /// `[B, 1, 2]`.
    pub offset: Tensor,
}

/// A batch of `B` cameras (PyTorch3D's `CamerasBase`).
///
/// Implementors provide the extrinsics, the projection matrix and the inverse of the
/// projection; world ⇄ view ⇄ NDC ⇄ screen transforms are provided on top of them.
/// Points are `[N, 3]` (shared by all cameras) or `[B, N, 3]`; outputs are `[B, N, 3]`.
pub trait Camera: Send + Sync {
    /// Rotation `R`, `[B, 3, 3]`, applied to row vectors: `X_view = X_world · R + T`.
    fn r(&self) -> &Tensor;

    /// Translation `T`, `[B, 3]`.
    fn t(&self) -> &Tensor;

    /// The projection matrix in row-vector form, `[B, 4, 4]`: PyTorch3D's
    /// `get_projection_transform().get_matrix()`, i.e. the transpose of the textbook `K`.
    fn projection_matrix(&self) -> Result<Tensor>;

    /// Whether rays through different pixels meet at one point (the camera centre).
    fn is_perspective(&self) -> bool;

    /// Whether the projection lands in NDC (`true`) or in screen pixels (`false`).
    fn in_ndc(&self) -> bool;

    /// For cameras defined in screen space, the map from their projection's `xy` to NDC
    /// (PyTorch3D's `get_ndc_camera_transform`); `None` when the projection is already NDC.
    fn projected_xy_to_ndc(&self) -> Result<Option<XyToNdc>>;

    /// Inverts the projection alone: `[B, N, 3]` projected `xy` with view-space depth `z` →
    /// view-space points `[B, N, 3]`.
    fn unproject_to_view(&self, xy_depth: &Tensor) -> Result<Tensor>;

    /// Number of cameras `B`.
    fn batch_size(&self) -> usize {
        self.r().dims().first().copied().unwrap_or(0)
    }

    /// Device of the camera tensors.
    fn device(&self) -> &Device {
        self.r().device()
    }

    /// World → view in row-vector form, `[B, 4, 4]` = `[[R, 0], [T, 1]]`
    /// (PyTorch3D's `get_world_to_view_transform().get_matrix()`).
    fn world_to_view_matrix(&self) -> Result<Tensor> {
        let b = self.batch_size();
        let dev = self.device();
        let top = Tensor::cat(&[self.r(), &Tensor::zeros((b, 3, 1), DType::F32, dev)?], 2)?;
        let bottom = Tensor::cat(
            &[
                &self.t().unsqueeze(1)?,
                &Tensor::ones((b, 1, 1), DType::F32, dev)?,
            ],
            2,
        )?;
        Tensor::cat(&[top, bottom], 1)
    }

    /// World → projected space in row-vector form, `[B, 4, 4]`: world-to-view times the
    /// projection (PyTorch3D's `get_full_projection_transform().get_matrix()`).
    fn full_projection_matrix(&self) -> Result<Tensor> {
        self.world_to_view_matrix()?
            .matmul(&self.projection_matrix()?)
    }

    /// World → view coordinates: `X · R + T`, `[B, N, 3]`.
    fn world_to_view(&self, points: &Tensor) -> Result<Tensor> {
        let points = points_for_batch(points, self.batch_size())?;
        points
            .matmul(self.r())?
            .broadcast_add(&self.t().unsqueeze(1)?)
    }

    /// World → the projection's space (NDC, or screen for screen-space cameras), with the
    /// projected depth in `z` (PyTorch3D's `transform_points`).
    ///
    /// `eps`: as PyTorch3D, the homogeneous `w` is clamped to `|w| ≥ eps` (keeping its sign,
    /// 0 counting as positive) before the division; `None` divides by `w` as is.
    fn transform_points(&self, points: &Tensor, eps: Option<f64>) -> Result<Tensor> {
        let points = points_for_batch(points, self.batch_size())?;
        apply_homogeneous(&points, &self.full_projection_matrix()?, eps)
    }

    /// World → NDC for every camera type (PyTorch3D's `transform_points_ndc`).
    fn transform_points_ndc(&self, points: &Tensor, eps: Option<f64>) -> Result<Tensor> {
        let projected = self.transform_points(points, eps)?;
        match self.projected_xy_to_ndc()? {
            None => Ok(projected),
            Some(map) => {
                let xy = projected
                    .narrow(2, 0, 2)?
                    .broadcast_add(&map.offset)?
                    .broadcast_div(&map.scale)?;
                Tensor::cat(&[xy, projected.narrow(2, 2, 1)?], 2)
            }
        }
    }

    /// World → screen pixels (+X right, +Y down, origin top-left; pixel centres at `i + 0.5`),
    /// depth in `z` (PyTorch3D's `transform_points_screen`). `image_size`: one size for all
    /// cameras or one per camera.
    fn transform_points_screen(
        &self,
        points: &Tensor,
        image_size: &[ImageSize],
        eps: Option<f64>,
    ) -> Result<Tensor> {
        let ndc = self.transform_points_ndc(points, eps)?;
        let sizes = ImageSizes::new(image_size, self.batch_size(), self.device())?;
        // NDC → screen with PyTorch3D's xy flip: screen = size / 2 − scale · ndc.
        let xy = sizes
            .half_wh
            .broadcast_sub(&ndc.narrow(2, 0, 2)?.broadcast_mul(&sizes.scale)?)?;
        Tensor::cat(&[xy, ndc.narrow(2, 2, 1)?], 2)
    }

    /// Projected `xy` plus view-space depth → points (PyTorch3D's `unproject_points`).
    ///
    /// - `xy_depth`: `[N, 3]` or `[B, N, 3]`; `xy` in the projection's space, or in NDC when
    ///   `from_ndc` (the two differ only for screen-space cameras); `z` is the view-space depth.
    /// - `world_coordinates`: return world points (`true`) or view-space points (`false`).
    fn unproject_points(
        &self,
        xy_depth: &Tensor,
        world_coordinates: bool,
        from_ndc: bool,
    ) -> Result<Tensor> {
        let xy_depth = points_for_batch(xy_depth, self.batch_size())?;
        let xy_depth = match (from_ndc, self.projected_xy_to_ndc()?) {
            (true, Some(map)) => {
                let xy = xy_depth
                    .narrow(2, 0, 2)?
                    .broadcast_mul(&map.scale)?
                    .broadcast_sub(&map.offset)?;
                Tensor::cat(&[xy, xy_depth.narrow(2, 2, 1)?], 2)?
            }
            _ => xy_depth,
        };
        let view = self.unproject_to_view(&xy_depth)?;
        if world_coordinates {
            view_to_world(&view, self.r(), self.t())
        } else {
            Ok(view)
        }
    }

    /// Camera centres in world coordinates, `[B, 3]`: `-T · Rᵀ` (PyTorch3D's
    /// `get_camera_center`). For orthographic cameras this is the point the view origin maps to.
    fn camera_center(&self) -> Result<Tensor> {
        let b = self.batch_size();
        let zero = Tensor::zeros((b, 1, 3), DType::F32, self.device())?;
        view_to_world(&zero, self.r(), self.t())?.reshape((b, 3))
    }
}

/// View → world: `(X_view − T) · Rᵀ` for `[B, N, 3]` points (R is a rotation, so its inverse
/// is its transpose, as PyTorch3D's `Rotate.inverse`).
fn view_to_world(view: &Tensor, r: &Tensor, t: &Tensor) -> Result<Tensor> {
    view.broadcast_sub(&t.unsqueeze(1)?)?
        .matmul(&r.transpose(1, 2)?.contiguous()?)
}

/// `[N, 3]` or `[B', N, 3]` (B' ∈ {1, B}) → contiguous `[B, N, 3]`.
fn points_for_batch(points: &Tensor, b: usize) -> Result<Tensor> {
    let points = points.to_dtype(DType::F32)?;
    match *points.dims() {
        [n, 3] => points.unsqueeze(0)?.broadcast_as((b, n, 3))?.contiguous(),
        [pb, _, 3] if pb == b => points.contiguous(),
        [1, n, 3] => points.broadcast_as((b, n, 3))?.contiguous(),
        _ => candle_core::bail!(
            "camera points: shape {:?}, expected [N, 3] or [{b}, N, 3]",
            points.dims()
        ),
    }
}

/// `[B, N, 3]` points through a row-vector `[B, 4, 4]` matrix, divided by the homogeneous `w`
/// (PyTorch3D's `Transform3d.transform_points`, including its `eps` clamp).
fn apply_homogeneous(points: &Tensor, matrix: &Tensor, eps: Option<f64>) -> Result<Tensor> {
    let (b, n, _) = points.dims3()?;
    let ones = Tensor::ones((b, n, 1), DType::F32, points.device())?;
    let out = Tensor::cat(&[points, &ones], 2)?.matmul(matrix)?;
    let mut w = out.narrow(2, 3, 1)?;
    if let Some(eps) = eps {
        // sign(w) with 0 counted as +1, times max(|w|, eps).
        let sign = w.sign()?.add(&w.eq(0f64)?.to_dtype(DType::F32)?)?;
        w = sign.mul(&w.abs()?.maximum(eps)?)?;
    }
    out.narrow(2, 0, 3)?.broadcast_div(&w)
}

/// Per-camera image sizes as tensors: `half_wh` `[B, 1, 2]` = `(W/2, H/2)` and
/// `scale` `[B, 1, 1]` = `min(W, H) / 2` (PyTorch3D's NDC ⇄ screen scale).
struct ImageSizes {
    half_wh: Tensor,
    scale: Tensor,
}

impl ImageSizes {
    fn new(sizes: &[ImageSize], b: usize, dev: &Device) -> Result<Self> {
        let sizes = broadcast_sizes(sizes, b)?;
        let mut half_wh = Vec::with_capacity(2 * b);
        let mut scale = Vec::with_capacity(b);
        for s in &sizes {
            half_wh.push(s.width as f32 / 2.0);
            half_wh.push(s.height as f32 / 2.0);
            scale.push(s.width.min(s.height) as f32 / 2.0);
        }
        Ok(Self {
            half_wh: Tensor::from_vec(half_wh, (b, 1, 2), dev)?,
            scale: Tensor::from_vec(scale, (b, 1, 1), dev)?,
        })
    }
}

/// One image size for all cameras, or one per camera; sizes must be at least 1×1.
fn broadcast_sizes(sizes: &[ImageSize], b: usize) -> Result<Vec<ImageSize>> {
    if let Some(bad) = sizes.iter().find(|s| s.width == 0 || s.height == 0) {
        candle_core::bail!("image size {}x{} is empty", bad.width, bad.height);
    }
    match sizes.len() {
        1 => Ok(vec![sizes[0]; b]),
        n if n == b => Ok(sizes.to_vec()),
        n => candle_core::bail!("got {n} image sizes for {b} cameras"),
    }
}

/// Checks `R` `[B, 3, 3]` and `T` `[B, 3]` (either may have batch 1 and is then broadcast)
/// and returns them as `f32` with a common batch size.
fn extrinsics(r: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
    let (rb, r3, r3b) = r.dims3()?;
    let (tb, t3) = t.dims2()?;
    if (r3, r3b, t3) != (3, 3, 3) {
        candle_core::bail!(
            "camera extrinsics: R {:?} and T {:?}, expected [B, 3, 3] and [B, 3]",
            r.dims(),
            t.dims()
        );
    }
    let b = match (rb, tb) {
        (x, y) if x == y => x,
        (1, y) => y,
        (x, 1) => x,
        _ => candle_core::bail!("camera extrinsics: R has batch {rb}, T has batch {tb}"),
    };
    if t.device().location() != r.device().location() {
        candle_core::bail!("camera extrinsics: R and T are on different devices");
    }
    let r = r
        .to_dtype(DType::F32)?
        .broadcast_as((b, 3, 3))?
        .contiguous()?;
    let t = t.to_dtype(DType::F32)?.broadcast_as((b, 3))?.contiguous()?;
    Ok((r, t))
}

/// A per-camera parameter as `[B]` `f32` on `dev`, from `[]`, `[1]` or `[B]`.
fn per_camera(name: &str, value: &Tensor, b: usize, dev: &Device) -> Result<Tensor> {
    let v = value.to_device(dev)?.to_dtype(DType::F32)?;
    match v.dims() {
        [] => v.reshape(1)?.broadcast_as(b)?.contiguous(),
        [1] => v.broadcast_as(b)?.contiguous(),
        [n] if *n == b => Ok(v),
        dims => candle_core::bail!("camera parameter {name}: shape {dims:?}, expected [{b}]"),
    }
}

/// A per-camera pair (focal lengths, principal points) as `[B, 2]`, from `[]`, `[1]`, `[B]`
/// (one value for both axes), `[1, 1]`, `[B, 1]`, `[1, 2]` or `[B, 2]`.
fn per_camera_pair(name: &str, value: &Tensor, b: usize, dev: &Device) -> Result<Tensor> {
    let v = value.to_device(dev)?.to_dtype(DType::F32)?;
    let v = match v.rank() {
        0 | 1 => per_camera(name, &v, b, dev)?.unsqueeze(1)?,
        _ => v,
    };
    match v.dims() {
        [n, k] if (*n == b || *n == 1) && (*k == 1 || *k == 2) => {
            v.broadcast_as((b, 2))?.contiguous()
        }
        dims => candle_core::bail!("camera parameter {name}: shape {dims:?}, expected [{b}, 2]"),
    }
}

/// A `[B, 4, 4]` matrix from `(row, col, [B] values)` entries, zeros elsewhere.
fn matrix4(b: usize, dev: &Device, entries: &[(usize, usize, Tensor)]) -> Result<Tensor> {
    let zero = Tensor::zeros(b, DType::F32, dev)?;
    let mut cells = vec![zero; 16];
    for (row, col, value) in entries {
        if let Some(cell) = cells.get_mut(row * 4 + col) {
            *cell = value.clone();
        }
    }
    Tensor::stack(&cells, 1)?.reshape((b, 4, 4))
}

/// `[B]` → `[B, 1, 1]`, to scale `[B, N, 1]` columns.
fn per_camera_column(v: &Tensor) -> Result<Tensor> {
    v.reshape((v.elem_count(), 1, 1))
}

/// Column `i` of `[B, N, 3]` points, `[B, N, 1]`.
fn coord(points: &Tensor, i: usize) -> Result<Tensor> {
    points.narrow(2, i, 1)
}

/// Settings of [`FoVPerspectiveCameras`] shared by the whole batch; defaults are PyTorch3D's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoVPerspectiveConfig {
    /// Near clipping plane (maps to NDC depth 0).
    pub znear: f32,
    /// Far clipping plane (maps to NDC depth 1).
    pub zfar: f32,
    /// Width / height of the frustum's cross-section.
    pub aspect_ratio: f32,
    /// Field of view spanned by NDC `y ∈ [-1, 1]`, in degrees when `degrees`.
    pub fov: f32,
    /// Whether `fov` is in degrees (else radians).
    pub degrees: bool,
}

impl Default for FoVPerspectiveConfig {
    fn default() -> Self {
        Self {
            znear: 1.0,
            zfar: 100.0,
            aspect_ratio: 1.0,
            fov: 60.0,
            degrees: true,
        }
    }
}

/// PyTorch3D's `FoVPerspectiveCameras`: an OpenGL-style frustum with depth mapped to `[0, 1]`.
///
/// `K = [[2n/(r−l), 0, (r+l)/(r−l), 0], [0, 2n/(t−b), (t+b)/(t−b), 0],
/// [0, 0, f/(f−n), −f·n/(f−n)], [0, 0, 1, 0]]` with `t = n·tan(fov/2)`, `b = −t`,
/// `r = t·aspect_ratio`, `l = −r`; projected depth is `f/(f−n) − f·n/((f−n)·z)`.
#[derive(Debug, Clone)]
pub struct FoVPerspectiveCameras {
    /// `[B, 3, 3]`.
    pub r: Tensor,
    /// `[B, 3]`.
    pub t: Tensor,
    /// `[B]`.
    pub znear: Tensor,
    /// `[B]`.
    pub zfar: Tensor,
    /// `[B]`.
    pub aspect_ratio: Tensor,
    /// `[B]`, in degrees when `degrees`.
    pub fov: Tensor,
    /// Whether `fov` is in degrees.
    pub degrees: bool,
}

impl FoVPerspectiveCameras {
    /// Cameras with extrinsics `r` `[B, 3, 3]`, `t` `[B, 3]` and shared intrinsics.
    pub fn new(r: &Tensor, t: &Tensor, cfg: FoVPerspectiveConfig) -> Result<Self> {
        let (r, t) = extrinsics(r, t)?;
        let b = r.dim(0)?;
        let dev = r.device().clone();
        let full = |v: f32| Tensor::full(v, b, &dev);
        Ok(Self {
            znear: full(cfg.znear)?,
            zfar: full(cfg.zfar)?,
            aspect_ratio: full(cfg.aspect_ratio)?,
            fov: full(cfg.fov)?,
            degrees: cfg.degrees,
            r,
            t,
        })
    }

    /// Cameras with per-camera intrinsics: each of `znear`, `zfar`, `aspect_ratio`, `fov` is
    /// `[B]`, `[1]` or a scalar.
    pub fn with_intrinsics(
        r: &Tensor,
        t: &Tensor,
        znear: &Tensor,
        zfar: &Tensor,
        aspect_ratio: &Tensor,
        fov: &Tensor,
        degrees: bool,
    ) -> Result<Self> {
        let (r, t) = extrinsics(r, t)?;
        let b = r.dim(0)?;
        let dev = r.device().clone();
        Ok(Self {
            znear: per_camera("znear", znear, b, &dev)?,
            zfar: per_camera("zfar", zfar, b, &dev)?,
            aspect_ratio: per_camera("aspect_ratio", aspect_ratio, b, &dev)?,
            fov: per_camera("fov", fov, b, &dev)?,
            degrees,
            r,
            t,
        })
    }

    /// The entries of `K` that unprojection needs: `(K00, K02, K11, K12)`, each `[B]`.
    fn xy_terms(&self) -> Result<[Tensor; 4]> {
        let fov = if self.degrees {
            self.fov.affine(std::f64::consts::PI / 180.0, 0.0)?
        } else {
            self.fov.clone()
        };
        let half = fov.affine(0.5, 0.0)?;
        let tan_half = half.sin()?.div(&half.cos()?)?;
        let max_y = tan_half.mul(&self.znear)?;
        let min_y = max_y.neg()?;
        let max_x = max_y.mul(&self.aspect_ratio)?;
        let min_x = max_x.neg()?;
        let two_near = self.znear.affine(2.0, 0.0)?;
        let width = max_x.sub(&min_x)?;
        let height = max_y.sub(&min_y)?;
        Ok([
            two_near.div(&width)?,
            max_x.add(&min_x)?.div(&width)?,
            two_near.div(&height)?,
            max_y.add(&min_y)?.div(&height)?,
        ])
    }
}

impl Camera for FoVPerspectiveCameras {
    fn r(&self) -> &Tensor {
        &self.r
    }

    fn t(&self) -> &Tensor {
        &self.t
    }

    fn projection_matrix(&self) -> Result<Tensor> {
        let b = self.batch_size();
        let dev = self.device();
        let [k00, k02, k11, k12] = self.xy_terms()?;
        let depth_range = self.zfar.sub(&self.znear)?;
        let k22 = self.zfar.div(&depth_range)?;
        let k23 = self.zfar.mul(&self.znear)?.div(&depth_range)?.neg()?;
        let k = matrix4(
            b,
            dev,
            &[
                (0, 0, k00),
                (0, 2, k02),
                (1, 1, k11),
                (1, 2, k12),
                (2, 2, k22),
                (2, 3, k23),
                (3, 2, Tensor::ones(b, DType::F32, dev)?),
            ],
        )?;
        k.transpose(1, 2)?.contiguous()
    }

    fn is_perspective(&self) -> bool {
        true
    }

    fn in_ndc(&self) -> bool {
        true
    }

    fn projected_xy_to_ndc(&self) -> Result<Option<XyToNdc>> {
        Ok(None)
    }

    fn unproject_to_view(&self, xy_depth: &Tensor) -> Result<Tensor> {
        // Solving K · (x, y, z, 1) ∝ (x_ndc, y_ndc, s, 1) with s the projected depth of z.
        let [k00, k02, k11, k12] = self.xy_terms()?.map(|v| per_camera_column(&v));
        let z = coord(xy_depth, 2)?;
        let x = coord(xy_depth, 0)?
            .broadcast_sub(&k02?)?
            .mul(&z)?
            .broadcast_div(&k00?)?;
        let y = coord(xy_depth, 1)?
            .broadcast_sub(&k12?)?
            .mul(&z)?
            .broadcast_div(&k11?)?;
        Tensor::cat(&[x, y, z], 2)
    }
}

/// Settings of [`FoVOrthographicCameras`] shared by the whole batch; defaults are PyTorch3D's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoVOrthographicConfig {
    /// Near plane (maps to NDC depth 0).
    pub znear: f32,
    /// Far plane (maps to NDC depth 1).
    pub zfar: f32,
    /// View-space `y` that maps to NDC `y = 1`.
    pub max_y: f32,
    /// View-space `y` that maps to NDC `y = -1`.
    pub min_y: f32,
    /// View-space `x` that maps to NDC `x = 1`.
    pub max_x: f32,
    /// View-space `x` that maps to NDC `x = -1`.
    pub min_x: f32,
    /// Extra scale of each axis.
    pub scale_xyz: [f32; 3],
}

impl Default for FoVOrthographicConfig {
    fn default() -> Self {
        Self {
            znear: 1.0,
            zfar: 100.0,
            max_y: 1.0,
            min_y: -1.0,
            max_x: 1.0,
            min_x: -1.0,
            scale_xyz: [1.0; 3],
        }
    }
}

/// PyTorch3D's `FoVOrthographicCameras`.
///
/// `K = [[2/(max_x−min_x)·s_x, 0, 0, −(max_x+min_x)/(max_x−min_x)],
/// [0, 2/(max_y−min_y)·s_y, 0, −(max_y+min_y)/(max_y−min_y)],
/// [0, 0, s_z/(f−n), −n/(f−n)], [0, 0, 0, 1]]`.
#[derive(Debug, Clone)]
pub struct FoVOrthographicCameras {
    /// `[B, 3, 3]`.
    pub r: Tensor,
    /// `[B, 3]`.
    pub t: Tensor,
    /// `[B]`.
    pub znear: Tensor,
    /// `[B]`.
    pub zfar: Tensor,
    /// `[B]`.
    pub max_y: Tensor,
    /// `[B]`.
    pub min_y: Tensor,
    /// `[B]`.
    pub max_x: Tensor,
    /// `[B]`.
    pub min_x: Tensor,
    /// `[B, 3]`.
    pub scale_xyz: Tensor,
}

impl FoVOrthographicCameras {
    /// Cameras with extrinsics `r` `[B, 3, 3]`, `t` `[B, 3]` and shared intrinsics.
    pub fn new(r: &Tensor, t: &Tensor, cfg: FoVOrthographicConfig) -> Result<Self> {
        let (r, t) = extrinsics(r, t)?;
        let b = r.dim(0)?;
        let dev = r.device().clone();
        let full = |v: f32| Tensor::full(v, b, &dev);
        Ok(Self {
            znear: full(cfg.znear)?,
            zfar: full(cfg.zfar)?,
            max_y: full(cfg.max_y)?,
            min_y: full(cfg.min_y)?,
            max_x: full(cfg.max_x)?,
            min_x: full(cfg.min_x)?,
            scale_xyz: Tensor::new(&cfg.scale_xyz, &dev)?
                .unsqueeze(0)?
                .broadcast_as((b, 3))?
                .contiguous()?,
            r,
            t,
        })
    }

    /// `(K00, K03, K11, K13)`, each `[B]`.
    fn xy_terms(&self) -> Result<[Tensor; 4]> {
        let width = self.max_x.sub(&self.min_x)?;
        let height = self.max_y.sub(&self.min_y)?;
        let sx = self.scale_xyz.narrow(1, 0, 1)?.squeeze(1)?;
        let sy = self.scale_xyz.narrow(1, 1, 1)?.squeeze(1)?;
        Ok([
            width.recip()?.affine(2.0, 0.0)?.mul(&sx)?,
            self.max_x.add(&self.min_x)?.div(&width)?.neg()?,
            height.recip()?.affine(2.0, 0.0)?.mul(&sy)?,
            self.max_y.add(&self.min_y)?.div(&height)?.neg()?,
        ])
    }
}

impl Camera for FoVOrthographicCameras {
    fn r(&self) -> &Tensor {
        &self.r
    }

    fn t(&self) -> &Tensor {
        &self.t
    }

    fn projection_matrix(&self) -> Result<Tensor> {
        let b = self.batch_size();
        let dev = self.device();
        let [k00, k03, k11, k13] = self.xy_terms()?;
        let depth_range = self.zfar.sub(&self.znear)?;
        let sz = self.scale_xyz.narrow(1, 2, 1)?.squeeze(1)?;
        let k22 = depth_range.recip()?.mul(&sz)?;
        let k23 = self.znear.div(&depth_range)?.neg()?;
        let k = matrix4(
            b,
            dev,
            &[
                (0, 0, k00),
                (0, 3, k03),
                (1, 1, k11),
                (1, 3, k13),
                (2, 2, k22),
                (2, 3, k23),
                (3, 3, Tensor::ones(b, DType::F32, dev)?),
            ],
        )?;
        k.transpose(1, 2)?.contiguous()
    }

    fn is_perspective(&self) -> bool {
        false
    }

    fn in_ndc(&self) -> bool {
        true
    }

    fn projected_xy_to_ndc(&self) -> Result<Option<XyToNdc>> {
        Ok(None)
    }

    fn unproject_to_view(&self, xy_depth: &Tensor) -> Result<Tensor> {
        let [k00, k03, k11, k13] = self.xy_terms()?.map(|v| per_camera_column(&v));
        let x = coord(xy_depth, 0)?
            .broadcast_sub(&k03?)?
            .broadcast_div(&k00?)?;
        let y = coord(xy_depth, 1)?
            .broadcast_sub(&k13?)?
            .broadcast_div(&k11?)?;
        Tensor::cat(&[x, y, coord(xy_depth, 2)?], 2)
    }
}

/// PyTorch3D's `PerspectiveCameras` (the multi-view-geometry pinhole model):
/// `K = [[fx, 0, px, 0], [0, fy, py, 0], [0, 0, 0, 1], [0, 0, 1, 0]]`, so a view point projects
/// to `(fx·x/z + px, fy·y/z + py)` with projected depth `1/z`.
///
/// In NDC (`in_ndc`), focal lengths and principal point are in NDC units. In screen space
/// (`!in_ndc`), they are in pixels, the principal point in image coordinates (+X right, +Y
/// down), and `image_size` is required; [`Camera::transform_points`] then yields PyTorch3D's
/// intermediate screen `xy` and [`Camera::transform_points_ndc`] / `_screen` the usual spaces.
#[derive(Debug, Clone)]
pub struct PerspectiveCameras {
    /// `[B, 3, 3]`.
    pub r: Tensor,
    /// `[B, 3]`.
    pub t: Tensor,
    /// `(fx, fy)`, `[B, 2]`.
    pub focal_length: Tensor,
    /// `(px, py)`, `[B, 2]`.
    pub principal_point: Tensor,
    /// Whether intrinsics are in NDC units (else pixels).
    pub in_ndc: bool,
    /// Image size per camera (length `B`); required when `!in_ndc`.
    pub image_size: Option<Vec<ImageSize>>,
}

impl PerspectiveCameras {
    /// Cameras with intrinsics in NDC units: `focal_length` `[B, 2]`, `[B, 1]`, `[B]` or a scalar
    /// (`fx = fy`), `principal_point` `[B, 2]` or `[1, 2]`.
    pub fn new(
        r: &Tensor,
        t: &Tensor,
        focal_length: &Tensor,
        principal_point: &Tensor,
    ) -> Result<Self> {
        Self::build(r, t, focal_length, principal_point, true, None)
    }

    /// Cameras with intrinsics in pixels, principal point in image coordinates (+X right,
    /// +Y down); `image_size`: one for all cameras or one per camera.
    pub fn in_screen_space(
        r: &Tensor,
        t: &Tensor,
        focal_length: &Tensor,
        principal_point: &Tensor,
        image_size: &[ImageSize],
    ) -> Result<Self> {
        Self::build(r, t, focal_length, principal_point, false, Some(image_size))
    }

    fn build(
        r: &Tensor,
        t: &Tensor,
        focal_length: &Tensor,
        principal_point: &Tensor,
        in_ndc: bool,
        image_size: Option<&[ImageSize]>,
    ) -> Result<Self> {
        let (r, t) = extrinsics(r, t)?;
        let b = r.dim(0)?;
        let dev = r.device().clone();
        Ok(Self {
            focal_length: per_camera_pair("focal_length", focal_length, b, &dev)?,
            principal_point: per_camera_pair("principal_point", principal_point, b, &dev)?,
            in_ndc,
            image_size: image_size.map(|s| broadcast_sizes(s, b)).transpose()?,
            r,
            t,
        })
    }

    fn intrinsic(&self, pair: &Tensor, axis: usize) -> Result<Tensor> {
        pair.narrow(1, axis, 1)?.squeeze(1)
    }
}

impl Camera for PerspectiveCameras {
    fn r(&self) -> &Tensor {
        &self.r
    }

    fn t(&self) -> &Tensor {
        &self.t
    }

    fn projection_matrix(&self) -> Result<Tensor> {
        let b = self.batch_size();
        let dev = self.device();
        let one = Tensor::ones(b, DType::F32, dev)?;
        let k = matrix4(
            b,
            dev,
            &[
                (0, 0, self.intrinsic(&self.focal_length, 0)?),
                (1, 1, self.intrinsic(&self.focal_length, 1)?),
                (0, 2, self.intrinsic(&self.principal_point, 0)?),
                (1, 2, self.intrinsic(&self.principal_point, 1)?),
                (3, 2, one.clone()),
                (2, 3, one),
            ],
        )?;
        k.transpose(1, 2)?.contiguous()
    }

    fn is_perspective(&self) -> bool {
        true
    }

    fn in_ndc(&self) -> bool {
        self.in_ndc
    }

    fn projected_xy_to_ndc(&self) -> Result<Option<XyToNdc>> {
        if self.in_ndc {
            return Ok(None);
        }
        let Some(sizes) = &self.image_size else {
            candle_core::bail!("screen-space PerspectiveCameras need an image size");
        };
        let sizes = ImageSizes::new(sizes, self.batch_size(), self.device())?;
        // PyTorch3D flips the principal point from image axes to its own (+X left, +Y up) by
        // subtracting 2·p, then maps screen to NDC: ndc = (x − 2p + size/2) / scale.
        let offset = sizes
            .half_wh
            .broadcast_sub(&self.principal_point.unsqueeze(1)?.affine(2.0, 0.0)?)?;
        Ok(Some(XyToNdc {
            scale: sizes.scale,
            offset,
        }))
    }

    fn unproject_to_view(&self, xy_depth: &Tensor) -> Result<Tensor> {
        let column = |pair: &Tensor, axis| per_camera_column(&self.intrinsic(pair, axis)?);
        let z = coord(xy_depth, 2)?;
        let x = coord(xy_depth, 0)?
            .broadcast_sub(&column(&self.principal_point, 0)?)?
            .mul(&z)?
            .broadcast_div(&column(&self.focal_length, 0)?)?;
        let y = coord(xy_depth, 1)?
            .broadcast_sub(&column(&self.principal_point, 1)?)?
            .mul(&z)?
            .broadcast_div(&column(&self.focal_length, 1)?)?;
        Tensor::cat(&[x, y, z], 2)
    }
}

/// `[N']` with `N' ∈ {1, N}` → `[N]`, or `[N', 3]` → `[N, 3]`.
fn broadcast_rows(name: &str, v: &Tensor, n: usize) -> Result<Tensor> {
    let v = v.to_dtype(DType::F32)?;
    let rows = v.dims().first().copied().unwrap_or(1);
    if rows != 1 && rows != n {
        candle_core::bail!("look_at: {name} has {rows} rows, others have {n}");
    }
    let mut shape = v.dims().to_vec();
    match shape.first_mut() {
        Some(first) => *first = n,
        None => shape.push(n),
    }
    v.broadcast_as(shape)?.contiguous()
}

/// Common batch size of tensors whose first dimension is 1 or N (scalars count as 1).
fn common_rows(tensors: &[&Tensor]) -> Result<usize> {
    let mut n = 1;
    for t in tensors {
        let rows = t.dims().first().copied().unwrap_or(1);
        if rows != 1 {
            if n != 1 && n != rows {
                candle_core::bail!("look_at: batch sizes {n} and {rows} do not broadcast");
            }
            n = rows;
        }
    }
    Ok(n)
}

/// `[N, 3]` × `[N, 3]` → `[N, 3]` cross product.
fn cross(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = |t: &Tensor, i| t.narrow(1, i, 1);
    let x = c(a, 1)?.mul(&c(b, 2)?)?.sub(&c(a, 2)?.mul(&c(b, 1)?)?)?;
    let y = c(a, 2)?.mul(&c(b, 0)?)?.sub(&c(a, 0)?.mul(&c(b, 2)?)?)?;
    let z = c(a, 0)?.mul(&c(b, 1)?)?.sub(&c(a, 1)?.mul(&c(b, 0)?)?)?;
    Tensor::cat(&[x, y, z], 1)
}

/// `x / max(‖x‖, eps)` over the last axis (torch's `F.normalize`).
pub(crate) fn normalize(x: &Tensor, eps: f64) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(eps)?;
    x.broadcast_div(&norm)
}

/// Camera positions `[N, 3]` on spheres around the origin (PyTorch3D's
/// `camera_position_from_spherical_angles`): `dist · (cos e · sin a, sin e, cos e · cos a)`.
/// `dist`, `elev`, `azim`: `[N]`, `[1]` or scalars, broadcast against each other.
pub fn camera_position_from_spherical_angles(
    dist: &Tensor,
    elev: &Tensor,
    azim: &Tensor,
    degrees: bool,
) -> Result<Tensor> {
    let n = common_rows(&[dist, elev, azim])?;
    let scale = if degrees {
        std::f64::consts::PI / 180.0
    } else {
        1.0
    };
    let dist = broadcast_rows("dist", dist, n)?;
    let elev = broadcast_rows("elev", elev, n)?.affine(scale, 0.0)?;
    let azim = broadcast_rows("azim", azim, n)?.affine(scale, 0.0)?;
    let ground = dist.mul(&elev.cos()?)?;
    let x = ground.mul(&azim.sin()?)?;
    let y = dist.mul(&elev.sin()?)?;
    let z = ground.mul(&azim.cos()?)?;
    Tensor::stack(&[x, y, z], 1)
}

/// The world → view rotation `R` `[N, 3, 3]` of cameras at `camera_position` looking at `at`
/// with `up` as the world's up (PyTorch3D's `look_at_rotation`). Inputs `[N, 3]` or `[1, 3]`.
///
/// The columns of `R` are the view axes in world coordinates: `x = normalize(up × z)`,
/// `y = normalize(z × x)`, `z = normalize(at − camera_position)`, all with PyTorch3D's
/// `eps = 1e-5`. As in PyTorch3D, when `x` is within `5e-3` of zero (up parallel to the view
/// direction) it is replaced by `normalize(y × z)`.
pub fn look_at_rotation(camera_position: &Tensor, at: &Tensor, up: &Tensor) -> Result<Tensor> {
    let n = common_rows(&[camera_position, at, up])?;
    let position = broadcast_rows("camera_position", camera_position, n)?;
    let at = broadcast_rows("at", at, n)?;
    let up = broadcast_rows("up", up, n)?;
    for (name, t) in [("camera_position", &position), ("at", &at), ("up", &up)] {
        if t.dims() != [n, 3] {
            candle_core::bail!("look_at: {name} has shape {:?}, expected [N, 3]", t.dims());
        }
    }
    let eps = 1e-5;
    let z_axis = normalize(&at.sub(&position)?, eps)?;
    let x_axis = normalize(&cross(&up, &z_axis)?, eps)?;
    let y_axis = normalize(&cross(&z_axis, &x_axis)?, eps)?;
    let degenerate = x_axis
        .abs()?
        .le(5e-3)?
        .min_keepdim(1)?
        .broadcast_as((n, 3))?
        .contiguous()?;
    let replacement = normalize(&cross(&y_axis, &z_axis)?, eps)?;
    let x_axis = degenerate.where_cond(&replacement, &x_axis)?;
    // Rows x, y, z stacked then transposed: the axes become the columns of R.
    Tensor::stack(&[x_axis, y_axis, z_axis], 1)?
        .transpose(1, 2)?
        .contiguous()
}

/// `T = −Rᵀ·C` for cameras at `C` `[N, 3]` with rotation `R` `[N, 3, 3]`.
fn translation_from_center(r: &Tensor, center: &Tensor) -> Result<Tensor> {
    r.transpose(1, 2)?
        .matmul(&center.unsqueeze(2)?)?
        .squeeze(2)?
        .neg()
}

/// PyTorch3D's `look_at_view_transform` from spherical angles: cameras at
/// `camera_position_from_spherical_angles(dist, elev, azim) + at`, looking at `at`.
///
/// `dist`, `elev`, `azim`: `[N]`, `[1]` or scalars; `at`, `up`: `[N, 3]` or `[1, 3]`; all
/// broadcast together. Returns `(R [N, 3, 3], T [N, 3])`. Elevation is the angle above the
/// `y = 0` plane, azimuth the angle from +Z towards +X.
pub fn look_at_view_transform(
    dist: &Tensor,
    elev: &Tensor,
    azim: &Tensor,
    degrees: bool,
    at: &Tensor,
    up: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let n = common_rows(&[dist, elev, azim, at, up])?;
    let offset = camera_position_from_spherical_angles(dist, elev, azim, degrees)?;
    let at = broadcast_rows("at", at, n)?;
    let center = broadcast_rows("camera position", &offset, n)?.add(&at)?;
    look_at_view_transform_eye(&center, &at, up)
}

/// PyTorch3D's `look_at_view_transform` with explicit camera positions `eye` `[N, 3]`
/// (or `[1, 3]`), broadcast with `at` and `up`. Returns `(R [N, 3, 3], T [N, 3])`.
pub fn look_at_view_transform_eye(
    eye: &Tensor,
    at: &Tensor,
    up: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let n = common_rows(&[eye, at, up])?;
    let eye = broadcast_rows("eye", eye, n)?;
    let r = look_at_rotation(&eye, at, up)?;
    let t = translation_from_center(&r, &eye)?;
    Ok((r, t))
}

/// Multiplies the columns of `[B, 3, 3]` matrices (or the entries of `[B, 3]` vectors) by
/// `signs`: the axis flips between the PyTorch3D, OpenCV and OpenGL camera frames.
fn flip_axes(m: &Tensor, signs: [f32; 3]) -> Result<Tensor> {
    let signs = Tensor::new(&signs, m.device())?;
    m.broadcast_mul(&signs)
}

/// `(W, H)` per camera `[B, 2]` and `min(W, H) / 2` `[B, 1]`.
fn sizes_wh_and_scale(sizes: &[ImageSize], b: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let s = ImageSizes::new(sizes, b, dev)?;
    Ok((
        s.half_wh.reshape((b, 2))?.affine(2.0, 0.0)?,
        s.scale.reshape((b, 1))?,
    ))
}

/// PyTorch3D's `cameras_from_opencv_projection`: OpenCV cameras (`x_cam = R·X + tvec`,
/// pixels `K·x_cam`, +X right, +Y down) → NDC [`PerspectiveCameras`].
///
/// - `r`: `[B, 3, 3]`, `tvec`: `[B, 3]`, `camera_matrix` (`K`): `[B, 3, 3]`.
/// - `image_size`: one size for all cameras or one per camera.
///
/// `R_p3d = Rᵀ` with its first two columns negated, `T_p3d = tvec` with `x, y` negated,
/// `focal = (fx, fy) / s`, `principal_point = −((cx, cy) − (W, H)/2) / s`, `s = min(W, H)/2`.
pub fn cameras_from_opencv_projection(
    r: &Tensor,
    tvec: &Tensor,
    camera_matrix: &Tensor,
    image_size: &[ImageSize],
) -> Result<PerspectiveCameras> {
    let (r, tvec) = extrinsics(r, tvec)?;
    let b = r.dim(0)?;
    let dev = r.device().clone();
    let k = camera_matrix.to_device(&dev)?.to_dtype(DType::F32)?;
    if k.dims() != [b, 3, 3] {
        candle_core::bail!(
            "camera_matrix has shape {:?}, expected [{b}, 3, 3]",
            k.dims()
        );
    }
    let entry = |row, col| k.narrow(1, row, 1)?.narrow(2, col, 1)?.reshape(b);
    let focal = Tensor::stack(&[entry(0, 0)?, entry(1, 1)?], 1)?;
    let principal = Tensor::stack(&[entry(0, 2)?, entry(1, 2)?], 1)?;
    let (wh, scale) = sizes_wh_and_scale(image_size, b, &dev)?;
    let focal = focal.broadcast_div(&scale)?;
    let principal = principal
        .sub(&wh.affine(0.5, 0.0)?)?
        .broadcast_div(&scale)?
        .neg()?;
    let r_p3d = flip_axes(&r.transpose(1, 2)?, [-1.0, -1.0, 1.0])?;
    let t_p3d = flip_axes(&tvec, [-1.0, -1.0, 1.0])?;
    let mut cameras = PerspectiveCameras::new(&r_p3d, &t_p3d, &focal, &principal)?;
    cameras.image_size = Some(broadcast_sizes(image_size, b)?);
    Ok(cameras)
}

/// PyTorch3D's `opencv_from_cameras_projection`: [`PerspectiveCameras`] → OpenCV
/// `(R [B, 3, 3], tvec [B, 3], K [B, 3, 3])` for images of `image_size`.
///
/// For NDC cameras this is the exact inverse of [`cameras_from_opencv_projection`]. For
/// screen-space cameras (whose intrinsics are already pixels in image axes) `K` is built from
/// them directly; PyTorch3D would wrongly rescale them as if they were NDC.
pub fn opencv_from_cameras_projection(
    cameras: &PerspectiveCameras,
    image_size: &[ImageSize],
) -> Result<(Tensor, Tensor, Tensor)> {
    let b = cameras.batch_size();
    let dev = cameras.device().clone();
    let r = flip_axes(&cameras.r, [-1.0, -1.0, 1.0])?
        .transpose(1, 2)?
        .contiguous()?;
    let tvec = flip_axes(&cameras.t, [-1.0, -1.0, 1.0])?;
    let (focal, principal) = if cameras.in_ndc {
        let (wh, scale) = sizes_wh_and_scale(image_size, b, &dev)?;
        (
            cameras.focal_length.broadcast_mul(&scale)?,
            cameras
                .principal_point
                .neg()?
                .broadcast_mul(&scale)?
                .add(&wh.affine(0.5, 0.0)?)?,
        )
    } else {
        (
            cameras.focal_length.clone(),
            cameras.principal_point.clone(),
        )
    };
    let col = |t: &Tensor, i| t.narrow(1, i, 1)?.squeeze(1);
    let one = Tensor::ones(b, DType::F32, &dev)?;
    let zero = Tensor::zeros(b, DType::F32, &dev)?;
    let k = Tensor::stack(
        &[
            col(&focal, 0)?,
            zero.clone(),
            col(&principal, 0)?,
            zero.clone(),
            col(&focal, 1)?,
            col(&principal, 1)?,
            zero.clone(),
            zero,
            one,
        ],
        1,
    )?
    .reshape((b, 3, 3))?;
    Ok((r, tvec, k))
}

/// NeRF-synthetic (Blender) cameras → NDC [`PerspectiveCameras`].
///
/// - `transform_matrix`: camera-to-world `[B, 4, 4]` (column vectors, OpenGL camera axes:
///   +X right, +Y up, looking down −Z), as in `transforms_*.json`.
/// - `camera_angle_x`: horizontal field of view in radians; the focal length in pixels is
///   `W / (2·tan(camera_angle_x / 2))` for both axes, the principal point the image centre.
///
/// `R = R_c2w · diag(−1, 1, −1)` (OpenGL → PyTorch3D view axes), `T = −t_c2w · R`,
/// `focal = f_pixels / (min(W, H)/2)`, `principal_point = 0`.
pub fn cameras_from_blender(
    transform_matrix: &Tensor,
    camera_angle_x: f64,
    image_size: ImageSize,
) -> Result<PerspectiveCameras> {
    let c2w = transform_matrix.to_dtype(DType::F32)?;
    let b = match c2w.dims() {
        [b, 4, 4] => *b,
        dims => candle_core::bail!("transform_matrix has shape {dims:?}, expected [B, 4, 4]"),
    };
    if !(camera_angle_x > 0.0 && camera_angle_x < std::f64::consts::PI) {
        candle_core::bail!("camera_angle_x {camera_angle_x} is not in (0, π)");
    }
    broadcast_sizes(&[image_size], 1)?;
    let rotation = c2w.narrow(1, 0, 3)?.narrow(2, 0, 3)?;
    let position = c2w.narrow(1, 0, 3)?.narrow(2, 3, 1)?.reshape((b, 3))?;
    let r = flip_axes(&rotation, [-1.0, 1.0, -1.0])?;
    let t = position.unsqueeze(1)?.matmul(&r)?.squeeze(1)?.neg()?;
    let focal_pixels = image_size.width as f64 / (2.0 * (camera_angle_x / 2.0).tan());
    let focal_ndc = focal_pixels / (image_size.width.min(image_size.height) as f64 / 2.0);
    let dev = c2w.device();
    let focal = Tensor::new(&[focal_ndc as f32], dev)?;
    let principal = Tensor::zeros((1, 2), DType::F32, dev)?;
    let mut cameras = PerspectiveCameras::new(&r, &t, &focal, &principal)?;
    cameras.image_size = Some(vec![image_size; b]);
    Ok(cameras)
}

/// [`PerspectiveCameras`] → NeRF-synthetic (Blender) `(transform_matrix [B, 4, 4],
/// camera_angle_x)`, the inverse of [`cameras_from_blender`].
///
/// Blender cameras have square pixels, a centred principal point and one field of view for
/// the whole set: cameras that differ from that by more than `1e-4` (relative focal length,
/// principal point in pixels) are refused.
pub fn blender_from_cameras(
    cameras: &PerspectiveCameras,
    image_size: ImageSize,
) -> Result<(Tensor, f64)> {
    let b = cameras.batch_size();
    let (_, _, k) = opencv_from_cameras_projection(cameras, &[image_size])?;
    let k = k.to_dtype(DType::F64)?.to_vec3::<f64>()?;
    let (w, h) = (image_size.width as f64, image_size.height as f64);
    let mut focal = None;
    for (i, m) in k.iter().enumerate() {
        let (fx, fy, cx, cy) = (m[0][0], m[1][1], m[0][2], m[1][2]);
        let f0 = *focal.get_or_insert(fx);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        if !(close(fx, fy) && close(fx, f0)) {
            candle_core::bail!(
                "camera {i}: focal lengths ({fx}, {fy}) differ from {f0}: not a Blender camera set"
            );
        }
        if (cx - w / 2.0).abs() > 1e-4 * w || (cy - h / 2.0).abs() > 1e-4 * h {
            candle_core::bail!(
                "camera {i}: principal point ({cx}, {cy}) is not the image centre: not a Blender camera"
            );
        }
    }
    let Some(focal) = focal.filter(|f| *f > 0.0) else {
        candle_core::bail!("no cameras, or a non-positive focal length");
    };
    let camera_angle_x = 2.0 * (w / (2.0 * focal)).atan();
    let rotation = flip_axes(&cameras.r, [-1.0, 1.0, -1.0])?;
    let center = cameras.camera_center()?.unsqueeze(2)?;
    let dev = cameras.device();
    let top = Tensor::cat(&[rotation, center], 2)?;
    let bottom = Tensor::new(&[[[0f32, 0., 0., 1.]]], dev)?.broadcast_as((b, 1, 4))?;
    Ok((
        Tensor::cat(&[top, bottom.contiguous()?], 1)?,
        camera_angle_x,
    ))
}

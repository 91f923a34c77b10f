//! The orbit camera (PyTorch3D's `look_at_view_transform` convention) and its pixel rays.

use super::vec3::{Ray, Vec3};
use super::RenderError;

/// How the camera projects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Projection {
    /// Pinhole camera with this vertical field of view in degrees (`0 < fov < 180`).
    Perspective {
        /// Vertical field of view, degrees.
        fov_y_deg: f64,
    },
    /// Parallel rays; the image spans this many world units vertically.
    Orthographic {
        /// World height of the image.
        height: f64,
    },
}

impl Default for Projection {
    /// 60° vertical field of view (PyTorch3D's `FoVPerspectiveCameras` default).
    fn default() -> Self {
        Projection::Perspective { fov_y_deg: 60.0 }
    }
}

/// Vertical field of view (degrees) of an image `width × height` whose horizontal field of view
/// is `fov_x_deg`: vdb_render's `-fov` is horizontal.
pub fn fov_y_from_fov_x(fov_x_deg: f64, width: usize, height: usize) -> f64 {
    let half = (fov_x_deg.to_radians() * 0.5).tan() * height as f64 / width.max(1) as f64;
    2.0 * half.atan().to_degrees()
}

/// Camera position of an orbit: `radius · (cos e · sin a, sin e, cos e · cos a) + at`, exactly
/// PyTorch3D's `camera_position_from_spherical_angles(dist, elev, azim)` (degrees).
pub fn orbit_position(azimuth_deg: f64, elevation_deg: f64, radius: f64, at: Vec3) -> Vec3 {
    direction_from_angles(azimuth_deg, elevation_deg) * radius + at
}

/// The unit direction `(cos e · sin a, sin e, cos e · cos a)` for azimuth `a` and elevation `e`
/// in degrees: also how light directions are given.
pub fn direction_from_angles(azimuth_deg: f64, elevation_deg: f64) -> Vec3 {
    let (a, e) = (azimuth_deg.to_radians(), elevation_deg.to_radians());
    Vec3::new(e.cos() * a.sin(), e.sin(), e.cos() * a.cos())
}

/// A camera: position, orthonormal frame, projection and image size.
///
/// `right`, `up` and `forward` are world-space unit vectors: image x grows along `right`, image
/// y (rows, top to bottom) along `-up`, and the camera looks along `forward`. In PyTorch3D's
/// terms (`R, T = look_at_view_transform(...)`, world→view `X_view = X_world · R + T`) the
/// columns of `R` are `(-right, up, forward)`: PyTorch3D's view +X points left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Camera centre (perspective) or the centre of the image plane (orthographic).
    pub eye: Vec3,
    /// Image-right direction.
    pub right: Vec3,
    /// Image-up direction.
    pub up: Vec3,
    /// Viewing direction.
    pub forward: Vec3,
    /// Projection.
    pub projection: Projection,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
}

impl Camera {
    /// A camera at `eye` looking at `at`, with `world_up` (normally `+Y`) kept upright.
    ///
    /// When `world_up` is parallel to the view direction (elevation ±90°) the frame would be
    /// undefined; the up vector is then taken as world `-Z` rotated like an azimuth-0 orbit, so
    /// straight-down views stay well defined (PyTorch3D yields NaN there).
    pub fn look_at(
        eye: Vec3,
        at: Vec3,
        world_up: Vec3,
        projection: Projection,
        width: usize,
        height: usize,
    ) -> Result<Self, RenderError> {
        if width == 0 || height == 0 {
            return Err(RenderError::InvalidCamera(format!(
                "image size {width}×{height} is empty"
            )));
        }
        match projection {
            Projection::Perspective { fov_y_deg } if !(fov_y_deg > 0.0 && fov_y_deg < 180.0) => {
                return Err(RenderError::InvalidCamera(format!(
                    "field of view {fov_y_deg}° must lie in (0, 180)"
                )))
            }
            Projection::Orthographic { height: h } if !(h > 0.0 && h.is_finite()) => {
                return Err(RenderError::InvalidCamera(format!(
                    "orthographic height {h} must be positive"
                )))
            }
            _ => {}
        }
        let forward = (at - eye).normalized();
        if !(forward.is_finite() && (forward.length() - 1.0).abs() < 1e-9) {
            return Err(RenderError::InvalidCamera(format!(
                "eye {eye:?} and look-at point {at:?} must differ and be finite"
            )));
        }
        let mut right = forward.cross(world_up.normalized());
        if right.length() < 1e-9 {
            // Looking straight along `world_up`: PyTorch3D's azimuth-0 frame has right = +X.
            right = Vec3::new(1.0, 0.0, 0.0);
        }
        let right = right.normalized();
        let up = right.cross(forward).normalized();
        Ok(Camera {
            eye,
            right,
            up,
            forward,
            projection,
            width,
            height,
        })
    }

    /// An orbit camera: at [`orbit_position`]`(azimuth, elevation, radius, at)`, looking at `at`,
    /// `+Y` up (PyTorch3D `look_at_view_transform(dist=radius, elev, azim, at=at, up=(0,1,0))`).
    pub fn orbit(
        azimuth_deg: f64,
        elevation_deg: f64,
        radius: f64,
        at: Vec3,
        projection: Projection,
        width: usize,
        height: usize,
    ) -> Result<Self, RenderError> {
        if !(radius > 0.0 && radius.is_finite()) {
            return Err(RenderError::InvalidCamera(format!(
                "orbit radius {radius} must be positive"
            )));
        }
        let eye = orbit_position(azimuth_deg, elevation_deg, radius, at);
        let mut camera =
            Camera::look_at(eye, at, Vec3::new(0.0, 1.0, 0.0), projection, width, height)?;
        if camera.right == Vec3::new(1.0, 0.0, 0.0) && camera.forward.y.abs() > 1.0 - 1e-12 {
            // Straight up or down: turn the degenerate frame with the azimuth.
            let a = azimuth_deg.to_radians();
            camera.right = Vec3::new(a.cos(), 0.0, -a.sin());
            camera.up = camera.right.cross(camera.forward).normalized();
        }
        Ok(camera)
    }

    /// The ray through pixel `(x, y)` at sub-pixel offset `(0.5, 0.5)` = the pixel centre;
    /// `dir` is unit length.
    pub fn ray(&self, x: f64, y: f64) -> Ray {
        let aspect = self.width as f64 / self.height as f64;
        // Screen coordinates in [-1, 1] vertically, [-aspect, aspect] horizontally.
        let sx = (2.0 * x / self.width as f64 - 1.0) * aspect;
        let sy = 1.0 - 2.0 * y / self.height as f64;
        match self.projection {
            Projection::Perspective { fov_y_deg } => {
                let half = (fov_y_deg.to_radians() * 0.5).tan();
                let dir = self.forward + self.right * (sx * half) + self.up * (sy * half);
                Ray {
                    origin: self.eye,
                    dir: dir.normalized(),
                }
            }
            Projection::Orthographic { height } => {
                let half = 0.5 * height;
                Ray {
                    origin: self.eye + self.right * (sx * half) + self.up * (sy * half),
                    dir: self.forward,
                }
            }
        }
    }

    /// Depth of world point `p` along the view axis (the z of PyTorch3D's view coordinates).
    pub fn depth_of(&self, p: Vec3) -> f64 {
        (p - self.eye).dot(self.forward)
    }

    /// World direction `n` in camera space, OpenGL style: x right, y up, z towards the viewer
    /// (RenderNet's normal maps: a surface facing the camera is `(0, 0, 1)`).
    pub fn to_camera_space(&self, n: Vec3) -> Vec3 {
        Vec3::new(n.dot(self.right), n.dot(self.up), -n.dot(self.forward))
    }
}

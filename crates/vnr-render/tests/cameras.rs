//! Cameras against PyTorch3D's formulas (golden values written by
//! `tools/golden/pytorch3d_cameras_rays.py`, float64), plus round-trip properties.
//!
//! The golden rays of the full-grid sampler live here too, as they are mostly a test of
//! unprojection. Tolerance: `1e-5 · max(1, |expected|)` (f32 pixel coordinates in the hundreds
//! carry ~1e-5 relative rounding).

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use vnr_render::cameras::{
    blender_from_cameras, cameras_from_blender, cameras_from_opencv_projection,
    look_at_view_transform, look_at_view_transform_eye, opencv_from_cameras_projection, Camera,
    FoVOrthographicCameras, FoVOrthographicConfig, FoVPerspectiveCameras, FoVPerspectiveConfig,
    ImageSize, PerspectiveCameras,
};
use vnr_render::samplers::MultinomialRaysampler;

const TOL: f64 = 1e-5;

struct Golden(serde_json::Map<String, Value>);

impl Golden {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tools/golden/render/cameras_rays.json"
        );
        let text = std::fs::read_to_string(path).expect("golden file");
        match serde_json::from_str(&text).expect("golden json") {
            Value::Object(map) => Self(map),
            _ => panic!("golden file is not an object"),
        }
    }

    fn entry(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let e = self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no golden {name}"));
        let shape = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let data = e["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        (shape, data)
    }

    fn tensor(&self, name: &str) -> Tensor {
        let (shape, data) = self.entry(name);
        let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn check(&self, name: &str, actual: &Tensor) {
        let (shape, expected) = self.entry(name);
        assert_eq!(actual.dims(), shape.as_slice(), "{name}: shape");
        let actual = actual
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
            assert!(
                (a - e).abs() <= TOL * e.abs().max(1.0),
                "{name}[{i}]: {a} vs golden {e}"
            );
        }
    }
}

/// The four cameras of the golden script, sharing its `R`, `T`.
fn golden_cameras(g: &Golden) -> Vec<(&'static str, Box<dyn Camera>)> {
    let (r, t) = (g.tensor("cam.R"), g.tensor("cam.T"));
    let dev = Device::Cpu;
    let persp = FoVPerspectiveCameras::new(
        &r,
        &t,
        FoVPerspectiveConfig {
            znear: 0.5,
            zfar: 20.0,
            aspect_ratio: 1.3,
            fov: 50.0,
            degrees: true,
        },
    )
    .unwrap();
    let ortho = FoVOrthographicCameras::new(
        &r,
        &t,
        FoVOrthographicConfig {
            znear: 0.1,
            zfar: 10.0,
            max_y: 1.2,
            min_y: -0.8,
            max_x: 1.5,
            min_x: -1.0,
            scale_xyz: [1.1, 0.9, 1.3],
        },
    )
    .unwrap();
    let ndc = PerspectiveCameras::new(
        &r,
        &t,
        &Tensor::new(&[[1.7f32, 1.9], [2.1, 2.1]], &dev).unwrap(),
        &Tensor::new(&[[0.1f32, -0.05], [0.0, 0.2]], &dev).unwrap(),
    )
    .unwrap();
    let screen = PerspectiveCameras::in_screen_space(
        &r,
        &t,
        &Tensor::new(&[[120f32, 110.], [90., 95.]], &dev).unwrap(),
        &Tensor::new(&[[40f32, 30.], [35., 33.]], &dev).unwrap(),
        &[ImageSize::new(60, 80)],
    )
    .unwrap();
    vec![
        ("fovpersp", Box::new(persp)),
        ("fovortho", Box::new(ortho)),
        ("persp_ndc", Box::new(ndc)),
        ("persp_screen", Box::new(screen)),
    ]
}

#[test]
fn golden_look_at_view_transform() -> Result<()> {
    let g = Golden::load();
    for case in 0..3 {
        let p = |k: &str| g.tensor(&format!("look_at{case}.{k}"));
        let degrees = g.entry(&format!("look_at{case}.degrees")).1[0] > 0.5;
        let (r, t) = look_at_view_transform(
            &p("dist"),
            &p("elev"),
            &p("azim"),
            degrees,
            &p("at"),
            &p("up"),
        )?;
        g.check(&format!("look_at{case}.R"), &r);
        g.check(&format!("look_at{case}.T"), &t);
    }
    Ok(())
}

#[test]
fn golden_projections_and_transforms() -> Result<()> {
    let g = Golden::load();
    let points = g.tensor("cam.points");
    let screen = [ImageSize::new(60, 80)];
    for (name, cam) in golden_cameras(&g) {
        g.check(&format!("{name}.projection"), &cam.projection_matrix()?);
        g.check(
            &format!("{name}.full_projection"),
            &cam.full_projection_matrix()?,
        );
        g.check(
            &format!("{name}.transform_points"),
            &cam.transform_points(&points, None)?,
        );
        g.check(
            &format!("{name}.transform_points_ndc"),
            &cam.transform_points_ndc(&points, None)?,
        );
        g.check(
            &format!("{name}.transform_points_screen"),
            &cam.transform_points_screen(&points, &screen, None)?,
        );
        g.check(&format!("{name}.camera_center"), &cam.camera_center()?);
    }
    Ok(())
}

#[test]
fn golden_unproject_points() -> Result<()> {
    let g = Golden::load();
    let xy_depth = g.tensor("cam.xy_depth");
    for (name, cam) in golden_cameras(&g) {
        g.check(
            &format!("{name}.unproject_world"),
            &cam.unproject_points(&xy_depth, true, false)?,
        );
        g.check(
            &format!("{name}.unproject_view"),
            &cam.unproject_points(&xy_depth, false, false)?,
        );
        if !cam.in_ndc() {
            g.check(
                &format!("{name}.unproject_world_from_ndc"),
                &cam.unproject_points(&xy_depth, true, true)?,
            );
        }
    }
    Ok(())
}

#[test]
fn golden_full_grid_rays_non_square() -> Result<()> {
    let g = Golden::load();
    let cfg = g.entry("rays.config").1;
    let (w, h, p) = (cfg[0] as usize, cfg[1] as usize, cfg[2] as usize);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tall = MultinomialRaysampler::ndc(2, 4, 1, 1.0, 2.0);
    g.check("rays.grid_tall", &tall.xy_grid(&Device::Cpu)?);
    for (name, cam) in golden_cameras(&g) {
        for unit in [false, true] {
            let sampler = MultinomialRaysampler {
                unit_directions: unit,
                ..MultinomialRaysampler::ndc(w, h, p, cfg[3] as f32, cfg[4] as f32)
            };
            let rays = sampler.sample(cam.as_ref(), None, &mut rng)?;
            let tag = format!("rays.{name}{}", if unit { ".unit" } else { "" });
            g.check(&format!("{tag}.origins"), &rays.origins);
            g.check(&format!("{tag}.directions"), &rays.directions);
            g.check(&format!("{tag}.lengths"), &rays.lengths);
            g.check(&format!("{tag}.xys"), &rays.xys);
        }
    }
    Ok(())
}

fn image_sizes(g: &Golden) -> Vec<ImageSize> {
    g.entry("opencv.image_size")
        .1
        .chunks(2)
        .map(|hw| ImageSize::new(hw[0] as usize, hw[1] as usize))
        .collect()
}

#[test]
fn golden_opencv_conversion_and_back() -> Result<()> {
    let g = Golden::load();
    let (r, tvec, k) = (
        g.tensor("opencv.R"),
        g.tensor("opencv.tvec"),
        g.tensor("opencv.K"),
    );
    let sizes = image_sizes(&g);
    let cams = cameras_from_opencv_projection(&r, &tvec, &k, &sizes)?;
    g.check("opencv.p3d_R", &cams.r);
    g.check("opencv.p3d_T", &cams.t);
    g.check("opencv.p3d_focal", &cams.focal_length);
    g.check("opencv.p3d_principal", &cams.principal_point);
    // The converted cameras put world points on the pixels OpenCV's own formula gives.
    let points = g.tensor("cam.points");
    let screen = cams.transform_points_screen(&points, &sizes, None)?;
    g.check("opencv.pixels", &screen.narrow(2, 0, 2)?);

    let (r2, t2, k2) = opencv_from_cameras_projection(&cams, &sizes)?;
    g.check("opencv.R", &r2);
    g.check("opencv.tvec", &t2);
    g.check("opencv.K", &k2);
    Ok(())
}

#[test]
fn screen_space_cameras_convert_to_opencv_without_rescaling() -> Result<()> {
    let g = Golden::load();
    let sizes = image_sizes(&g);
    let ndc = cameras_from_opencv_projection(
        &g.tensor("opencv.R"),
        &g.tensor("opencv.tvec"),
        &g.tensor("opencv.K"),
        &sizes,
    )?;
    // The same cameras with pixel intrinsics straight from K.
    let k = g.tensor("opencv.K");
    let entry = |r, c| {
        k.narrow(1, r, 1)
            .unwrap()
            .narrow(2, c, 1)
            .unwrap()
            .flatten_all()
    };
    let focal = Tensor::stack(&[entry(0, 0)?, entry(1, 1)?], 1)?;
    let principal = Tensor::stack(&[entry(0, 2)?, entry(1, 2)?], 1)?;
    let screen = PerspectiveCameras::in_screen_space(&ndc.r, &ndc.t, &focal, &principal, &sizes)?;
    let points = g.tensor("cam.points");
    let a = ndc.transform_points_screen(&points, &sizes, None)?;
    let b = screen.transform_points_screen(&points, &sizes, None)?;
    assert_close(&a.narrow(2, 0, 2)?, &b.narrow(2, 0, 2)?, 1e-3)?;
    let (_, _, k2) = opencv_from_cameras_projection(&screen, &sizes)?;
    assert_close(&k2, &k, 1e-4)?;
    Ok(())
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f64) -> Result<()> {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let b = b.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "[{i}]: {x} vs {y}");
    }
    Ok(())
}

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn project_of_unproject_is_identity() -> Result<()> {
    let g = Golden::load();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (name, cam) in golden_cameras(&g) {
        let xy = random_tensor(&mut rng, &[2, 16, 2], -0.9, 0.9);
        let depth = random_tensor(&mut rng, &[2, 16, 1], 0.6, 8.0);
        let xy_depth = Tensor::cat(&[&xy, &depth], 2)?;
        let world = cam.unproject_points(&xy_depth, true, true)?;
        let ndc = cam.transform_points_ndc(&world, None)?;
        assert_close(&ndc.narrow(2, 0, 2)?, &xy, 1e-4)?;
        // Depth comes back as view-space z.
        let view = cam.world_to_view(&world)?;
        assert_close(&view.narrow(2, 2, 1)?, &depth, 1e-4)?;
        // And the other way round: unproject(project(X)) == X.
        let points = random_tensor(&mut rng, &[2, 16, 3], -0.5, 0.5);
        let z = cam.world_to_view(&points)?.narrow(2, 2, 1)?;
        let projected = cam.transform_points(&points, None)?.narrow(2, 0, 2)?;
        let back = cam.unproject_points(&Tensor::cat(&[&projected, &z], 2)?, true, false)?;
        assert_close(&back, &points, 1e-4)?;
        assert_eq!(cam.is_perspective(), name != "fovortho");
    }
    Ok(())
}

#[test]
fn look_at_puts_the_target_at_the_image_centre_in_front() -> Result<()> {
    let dev = Device::Cpu;
    let at = Tensor::new(&[[0.3f32, -0.2, 0.5]], &dev)?;
    let up = Tensor::new(&[[0f32, 1., 0.]], &dev)?;
    let (r, t) = look_at_view_transform(
        &Tensor::new(&[2.0f32], &dev)?,
        &Tensor::new(&[0f32, 30., -60., 89.], &dev)?,
        &Tensor::new(&[0f32, 45., 180., -90.], &dev)?,
        true,
        &at,
        &up,
    )?;
    let cam = FoVPerspectiveCameras::new(&r, &t, FoVPerspectiveConfig::default())?;
    let view = cam.world_to_view(&at)?;
    let expected = Tensor::new(&[0f32, 0., 2.], &dev)?.broadcast_as((4, 1, 3))?;
    assert_close(&view, &expected.contiguous()?, 1e-5)?;
    // R is a rotation: R Rᵀ = I, det = +1 (x left = up × forward).
    let rrt = r.matmul(&r.transpose(1, 2)?)?;
    let eye = Tensor::eye(3, DType::F32, &dev)?.broadcast_as((4, 3, 3))?;
    assert_close(&rrt, &eye.contiguous()?, 1e-5)?;
    // The eye form agrees with the spherical form.
    let centers = cam.camera_center()?;
    let (r2, t2) = look_at_view_transform_eye(&centers, &at, &up)?;
    assert_close(&r2, &r, 1e-5)?;
    assert_close(&t2, &t, 1e-5)?;
    Ok(())
}

/// A NeRF-synthetic-like camera: c2w with OpenGL axes on a sphere looking at the origin.
fn blender_c2w(dev: &Device) -> Result<Tensor> {
    // Camera at (0, -4, 1.5)·… looking at the origin, +Z up (Blender's world).
    let eye = [0.5f64, -4.0, 1.5];
    let norm = |v: [f64; 3]| {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        [v[0] / n, v[1] / n, v[2] / n]
    };
    let cross = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let back = norm(eye); // OpenGL +Z points away from the target.
    let right = norm(cross([0.0, 0.0, 1.0], back));
    let up = cross(back, right);
    let m: Vec<f32> = [
        [right[0], up[0], back[0], eye[0]],
        [right[1], up[1], back[1], eye[1]],
        [right[2], up[2], back[2], eye[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
    .iter()
    .flatten()
    .map(|&v| v as f32)
    .collect();
    Tensor::from_vec(m, (1, 4, 4), dev)
}

#[test]
fn blender_cameras_round_trip_and_agree_with_opencv() -> Result<()> {
    let dev = Device::Cpu;
    let c2w = blender_c2w(&dev)?;
    let size = ImageSize::new(300, 400);
    let angle = 0.6911112070083618; // NeRF-synthetic lego's camera_angle_x
    let cams = cameras_from_blender(&c2w, angle, size)?;
    // The target (world origin) projects to the image centre.
    let origin = Tensor::zeros((1, 3), DType::F32, &dev)?;
    let px = cams.transform_points_screen(&origin, &[size], None)?;
    assert_close(
        &px.narrow(2, 0, 2)?,
        &Tensor::new(&[[[200f32, 150.]]], &dev)?,
        1e-5,
    )?;
    // Round trip.
    let (c2w_back, angle_back) = blender_from_cameras(&cams, size)?;
    assert_close(&c2w_back, &c2w, 1e-5)?;
    assert!((angle_back - angle).abs() < 1e-6);
    // Same cameras through OpenCV: c2w_cv = c2w_gl · diag(1, −1, −1, 1).
    let flip = Tensor::new(&[1f32, -1., -1., 1.], &dev)?;
    let c2w_cv = c2w.broadcast_mul(&flip)?;
    let rot_c2w = c2w_cv.narrow(1, 0, 3)?.narrow(2, 0, 3)?;
    let center = c2w_cv.narrow(1, 0, 3)?.narrow(2, 3, 1)?;
    let r_cv = rot_c2w.transpose(1, 2)?.contiguous()?;
    let t_cv = r_cv.matmul(&center)?.neg()?.squeeze(2)?;
    let f = 400.0 / (2.0 * (angle / 2.0).tan());
    let k = Tensor::new(
        &[[[f as f32, 0., 200.], [0., f as f32, 150.], [0., 0., 1.]]],
        &dev,
    )?;
    let via_cv = cameras_from_opencv_projection(&r_cv, &t_cv, &k, &[size])?;
    assert_close(&via_cv.r, &cams.r, 1e-5)?;
    assert_close(&via_cv.t, &cams.t, 1e-5)?;
    assert_close(&via_cv.focal_length, &cams.focal_length, 1e-5)?;
    assert_close(&via_cv.principal_point, &cams.principal_point, 1e-5)?;
    Ok(())
}

#[test]
fn non_blender_cameras_are_refused() -> Result<()> {
    let dev = Device::Cpu;
    let r = Tensor::eye(3, DType::F32, &dev)?.unsqueeze(0)?;
    let t = Tensor::zeros((1, 3), DType::F32, &dev)?;
    let off_centre = PerspectiveCameras::new(
        &r,
        &t,
        &Tensor::new(&[2f32], &dev)?,
        &Tensor::new(&[[0.1f32, 0.]], &dev)?,
    )?;
    assert!(blender_from_cameras(&off_centre, ImageSize::new(10, 10)).is_err());
    let non_square = PerspectiveCameras::new(
        &r,
        &t,
        &Tensor::new(&[[2f32, 2.5]], &dev)?,
        &Tensor::zeros((1, 2), DType::F32, &dev)?,
    )?;
    assert!(blender_from_cameras(&non_square, ImageSize::new(10, 10)).is_err());
    assert!(cameras_from_blender(&r, 0.7, ImageSize::new(10, 10)).is_err());
    assert!(cameras_from_blender(&blender_c2w(&dev)?, 0.0, ImageSize::new(10, 10)).is_err());
    Ok(())
}

#[test]
fn bad_shapes_are_errors_not_panics() -> Result<()> {
    let dev = Device::Cpu;
    let r = Tensor::eye(3, DType::F32, &dev)?.unsqueeze(0)?;
    let t = Tensor::zeros((1, 3), DType::F32, &dev)?;
    let r2 = Tensor::zeros((2, 3, 3), DType::F32, &dev)?;
    let t3 = Tensor::zeros((3, 3), DType::F32, &dev)?;
    assert!(FoVPerspectiveCameras::new(&r2, &t3, FoVPerspectiveConfig::default()).is_err());
    assert!(FoVPerspectiveCameras::new(&t, &r, FoVPerspectiveConfig::default()).is_err());
    let cam = FoVPerspectiveCameras::new(&r, &t, FoVPerspectiveConfig::default())?;
    assert!(cam
        .transform_points(&Tensor::zeros((4, 2), DType::F32, &dev)?, None)
        .is_err());
    assert!(cam
        .transform_points_screen(&Tensor::zeros((4, 3), DType::F32, &dev)?, &[], None)
        .is_err());
    let screen = PerspectiveCameras::in_screen_space(
        &r,
        &t,
        &Tensor::new(&[10f32], &dev)?,
        &Tensor::new(&[[5f32, 5.]], &dev)?,
        &[ImageSize::new(0, 10)],
    );
    assert!(screen.is_err());
    assert!(PerspectiveCameras::new(
        &r,
        &t,
        &Tensor::new(&[[1f32, 2., 3.]], &dev)?,
        &Tensor::zeros((1, 2), DType::F32, &dev)?
    )
    .is_err());
    Ok(())
}

#[test]
fn gradients_reach_the_camera_translation() -> Result<()> {
    let dev = Device::Cpu;
    let r = Tensor::eye(3, DType::F32, &dev)?.unsqueeze(0)?;
    let t = candle_core::Var::from_tensor(&Tensor::new(&[[0.1f32, -0.2, 3.0]], &dev)?)?;
    let cam = FoVPerspectiveCameras::new(&r, t.as_tensor(), FoVPerspectiveConfig::default())?;
    let point = Tensor::new(&[[0.5f32, 0.25, 0.0]], &dev)?;
    // x_ndc = (x + tx) / (tz · tan 30°): ∂/∂tx = 1 / (tz · tan 30°).
    let x = cam
        .transform_points(&point, None)?
        .narrow(2, 0, 1)?
        .sum_all()?;
    let grads = x.backward()?;
    let g = grads
        .get(t.as_tensor())
        .expect("gradient")
        .to_vec2::<f32>()?;
    let expected = 1.0 / (3.0 * (30f32).to_radians().tan());
    assert!(
        (g[0][0] - expected).abs() < 1e-5,
        "{} vs {expected}",
        g[0][0]
    );
    Ok(())
}

#[test]
fn degenerate_inputs_stay_finite() -> Result<()> {
    let dev = Device::Cpu;
    // Looking straight down with +Y up: PyTorch3D's fallback keeps R finite (eps-normalised).
    let (r, t) = look_at_view_transform(
        &Tensor::new(&[2f32], &dev)?,
        &Tensor::new(&[90f32], &dev)?,
        &Tensor::new(&[0f32], &dev)?,
        true,
        &Tensor::zeros((1, 3), DType::F32, &dev)?,
        &Tensor::new(&[[0f32, 1., 0.]], &dev)?,
    )?;
    assert!(r
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite()));
    assert!(t
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite()));
    // A point on the camera plane (w = 0): with eps the division is clamped, as PyTorch3D.
    let eye = Tensor::eye(3, DType::F32, &dev)?.unsqueeze(0)?;
    let cam = FoVPerspectiveCameras::new(
        &eye,
        &Tensor::zeros((1, 3), DType::F32, &dev)?,
        Default::default(),
    )?;
    let on_plane = Tensor::new(&[[1f32, 0., 0.]], &dev)?;
    let projected = cam
        .transform_points(&on_plane, Some(1e-4))?
        .to_vec3::<f32>()?;
    let x = projected[0][0][0];
    assert!(
        (x - 1.0 / (30f32.to_radians().tan() * 1e-4)).abs() < 1.0,
        "{x}"
    );
    Ok(())
}

//! Tests of the reference ray caster against analytic truths, its own determinism, and
//! OpenVDB's `vdb_render` (when installed and the fixtures are present).

use std::path::Path;
use std::process::Command;

use vnr_formats::image::ImageF32;
use vnr_formats::testing::fixture;
use vnr_formats::vdb::{DenseSamples, Grid, Transform};
use vnr_render::reference::{
    load_object, render, Camera, FogModel, FogSettings, FogVolume, Frame, GridSurface, Ground,
    IndexMap, Light, LoadOptions, Material, Object, Outputs, Phong, Projection, Ray, RenderError,
    Scene, Sdf, Vec3, MAX_BOUNCES, MIN_FOG_STEP,
};

fn sphere(radius: f64) -> Object {
    Object::Surface(Box::new(Sdf::Sphere {
        center: Vec3::default(),
        radius,
    }))
}

fn hits(image: &ImageF32) -> Vec<bool> {
    image.data.iter().map(|v| *v > 0.5).collect()
}

fn count(mask: &[bool]) -> usize {
    mask.iter().filter(|b| **b).count()
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union.max(1) as f64
}

/// Pixels hit in both masks whose four neighbours are hit in both too: away from silhouette
/// edges, where grazing rays make depth ill-conditioned.
fn interior_pixels(a: &[bool], b: &[bool], width: usize) -> Vec<usize> {
    let height = a.len() / width;
    let both = |i: usize| a[i] && b[i];
    let mut out = Vec::new();
    for y in 1..height.saturating_sub(1) {
        for x in 1..width - 1 {
            let i = y * width + x;
            if both(i) && both(i - 1) && both(i + 1) && both(i - width) && both(i + width) {
                out.push(i);
            }
        }
    }
    out
}

fn render_all(scene: &Scene, camera: &Camera) -> Frame {
    render(scene, camera, Outputs::ALL).unwrap()
}

/// PyTorch3D's `look_at_rotation`: z = normalize(at − C), x = normalize(up × z),
/// y = normalize(z × x), R = [x y z] as columns; C from `camera_position_from_spherical_angles`.
#[test]
fn orbit_matches_pytorch3d_look_at_view_transform() {
    let at = Vec3::new(0.3, -0.2, 0.5);
    for (az, el, dist) in [(0.0, 0.0, 2.0), (37.0, 21.0, 3.5), (-120.0, -60.0, 1.5)] {
        let (a, e) = (f64::to_radians(az), f64::to_radians(el));
        let c = Vec3::new(e.cos() * a.sin(), e.sin(), e.cos() * a.cos()) * dist + at;
        let z = (at - c).normalized();
        let x = Vec3::new(0.0, 1.0, 0.0).cross(z).normalized();
        let y = z.cross(x).normalized();
        let cam = Camera::orbit(az, el, dist, at, Projection::default(), 4, 4).unwrap();
        assert!((cam.eye - c).length() < 1e-12);
        assert!(
            (cam.right + x).length() < 1e-12,
            "PyTorch3D's +X is image left"
        );
        assert!((cam.up - y).length() < 1e-12);
        assert!((cam.forward - z).length() < 1e-12);
        // Depth is PyTorch3D's view z: (p · R + T).z with T = −Rᵀ C.
        let p = Vec3::new(0.1, 0.7, -0.4);
        assert!((cam.depth_of(p) - (p - c).dot(z)).abs() < 1e-12);
    }
}

#[test]
fn orthographic_sphere_silhouette_area_is_pi_r_squared() {
    let scene = Scene::new(sphere(1.0));
    let (size, height) = (200usize, 3.0);
    let camera = Camera::orbit(
        30.0,
        20.0,
        5.0,
        Vec3::default(),
        Projection::Orthographic { height },
        size,
        size,
    )
    .unwrap();
    let frame = render(&scene, &camera, Outputs::ALL).unwrap();
    let n = count(&hits(frame.silhouette.as_ref().unwrap()));
    let px_per_unit = size as f64 / height;
    let expected = std::f64::consts::PI * px_per_unit * px_per_unit;
    // Boundary pixels are about 2πR ≈ 420; centre sampling errs far less than that.
    assert!(
        (n as f64 - expected).abs() < 0.005 * expected,
        "{n} pixels, expected {expected:.0}"
    );
}

#[test]
fn perspective_sphere_silhouette_area_matches_its_projected_disc() {
    let scene = Scene::new(sphere(1.0));
    let (size, fov, dist) = (161usize, 40.0f64, 4.0f64);
    let camera = Camera::orbit(
        -70.0,
        35.0,
        dist,
        Vec3::default(),
        Projection::Perspective { fov_y_deg: fov },
        size,
        size,
    )
    .unwrap();
    let frame = render(&scene, &camera, Outputs::ALL).unwrap();
    let n = count(&hits(frame.silhouette.as_ref().unwrap()));
    // The silhouette cone has half angle asin(r / d); its image is a disc of radius
    // tan(asin(r / d)) / tan(fov / 2) half-heights.
    let half_angle = (1.0 / dist).asin();
    let radius_px = half_angle.tan() / (fov.to_radians() / 2.0).tan() * size as f64 / 2.0;
    let expected = std::f64::consts::PI * radius_px * radius_px;
    assert!(
        (n as f64 - expected).abs() < 0.01 * expected,
        "{n} pixels, expected {expected:.0}"
    );
}

#[test]
fn depth_at_the_centre_pixel_is_distance_minus_radius() {
    let scene = Scene::new(sphere(1.0));
    let at = Vec3::new(0.0, 0.0, 0.0);
    for (az, el, dist) in [
        (0.0, 0.0, 4.0),
        (123.0, -40.0, 7.5),
        (300.0, 89.0, 2.5),
        (45.0, 90.0, 3.0),
        (10.0, -90.0, 3.0),
    ] {
        let camera = Camera::orbit(az, el, dist, at, Projection::default(), 101, 101).unwrap();
        let frame = render_all(&scene, &camera);
        let depth = frame.depth.as_ref().unwrap();
        let centre = depth[50 * 101 + 50];
        assert!(
            (f64::from(centre) - (dist - 1.0)).abs() < 1e-5,
            "az {az} el {el}: depth {centre}, expected {}",
            dist - 1.0
        );
        assert!(depth[0].is_infinite(), "background depth is +inf");
        // The centre normal faces the camera: (0, 0, 1) in camera space.
        let n = frame
            .normal
            .as_ref()
            .unwrap()
            .pixel(50, 50)
            .unwrap()
            .to_vec();
        for (got, want) in n.iter().zip([0.5, 0.5, 1.0]) {
            assert!((got - want).abs() < 1e-5, "centre normal {n:?}");
        }
    }
}

#[test]
fn normals_are_unit_and_encoded_as_half_n_plus_half() {
    let scene = Scene::new(sphere(1.0));
    let camera = Camera::orbit(
        40.0,
        25.0,
        4.0,
        Vec3::default(),
        Projection::default(),
        96,
        96,
    )
    .unwrap();
    let frame = render_all(&scene, &camera);
    let normal = frame.normal.as_ref().unwrap();
    let silhouette = hits(frame.silhouette.as_ref().unwrap());
    let depth = frame.depth.as_ref().unwrap();
    let mut checked = 0;
    for y in 0..96 {
        for x in 0..96 {
            let i = y * 96 + x;
            let c = normal.pixel(x, y).unwrap();
            if !silhouette[i] {
                assert_eq!(c, [0.0, 0.0, 0.0], "background normal");
                continue;
            }
            let n = [2.0 * c[0] - 1.0, 2.0 * c[1] - 1.0, 2.0 * c[2] - 1.0];
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            assert!((len - 1.0).abs() < 1e-5, "|n| = {len} at ({x}, {y})");
            assert!(n[2] > -1e-4, "visible normals face the camera: {n:?}");
            // On a sphere the normal is the hit point's direction from the centre.
            let ray = camera.ray(x as f64 + 0.5, y as f64 + 0.5);
            let t = f64::from(depth[i]) / ray.dir.dot(camera.forward);
            let p = camera.to_camera_space(ray.at(t).normalized());
            assert!((p.x - n[0] as f64).abs() < 1e-4 && (p.y - n[1] as f64).abs() < 1e-4);
            checked += 1;
        }
    }
    assert!(checked > 500);
    // Pixels above the centre see normals pointing up in camera space.
    let up = normal.pixel(48, 30).unwrap();
    assert!(up[1] > 0.6, "upper pixel normal {up:?}");
}

/// Sphere tracing on the superquadric's distance bound (exact only for spheres) finds the
/// surface: an ellipsoid (ε₁ = ε₂ = 1) against the analytic ray–ellipsoid intersection, depth
/// and normal, pixel by pixel.
#[test]
fn superquadric_ellipsoid_depth_and_normals_match_the_analytic_intersection() {
    let scale = Vec3::new(0.9, 0.5, 0.7);
    let centre = Vec3::new(0.1, -0.1, 0.05);
    let scene = Scene::new(Object::Surface(Box::new(Sdf::Superquadric {
        center: centre,
        scale,
        e1: 1.0,
        e2: 1.0,
    })));
    let camera = Camera::orbit(
        35.0,
        25.0,
        2.5,
        Vec3::default(),
        Projection::default(),
        64,
        64,
    )
    .unwrap();
    let frame = render_all(&scene, &camera);
    let depth = frame.depth.as_ref().unwrap();
    let normal = frame.normal.as_ref().unwrap();
    let mut checked = 0;
    for y in 0..64 {
        for x in 0..64 {
            let ray = camera.ray(x as f64 + 0.5, y as f64 + 0.5);
            // |(o + t·d − c) / scale|² = 1, a quadratic in t.
            let unscale = |v: Vec3| Vec3::new(v.x / scale.x, v.y / scale.y, v.z / scale.z);
            let (o, d) = (unscale(ray.origin - centre), unscale(ray.dir));
            let (a, b, c) = (d.dot(d), 2.0 * o.dot(d), o.dot(o) - 1.0);
            let disc = b * b - 4.0 * a * c;
            let got = f64::from(depth[y * 64 + x]);
            if disc < 0.0 {
                assert!(got.is_infinite(), "({x}, {y}) hit at depth {got}");
                continue;
            }
            let t = (-b - disc.sqrt()) / (2.0 * a);
            // Grazing rays (a nearly double root) are ill-conditioned: compare away from them.
            if disc.sqrt() / a < 0.05 {
                continue;
            }
            let want = t * ray.dir.dot(camera.forward);
            assert!(
                (got - want).abs() < 1e-4,
                "({x}, {y}): depth {got}, expected {want}"
            );
            // The normal is the gradient of |q / scale|², in camera space.
            let q = ray.at(t) - centre;
            let n = camera.to_camera_space(
                Vec3::new(
                    q.x / (scale.x * scale.x),
                    q.y / (scale.y * scale.y),
                    q.z / (scale.z * scale.z),
                )
                .normalized(),
            );
            let c = normal.pixel(x, y).unwrap();
            for (got, want) in c.iter().zip([n.x, n.y, n.z]) {
                assert!(
                    (f64::from(*got) - (0.5 * want + 0.5)).abs() < 1e-3,
                    "({x}, {y}): normal {c:?}, expected {n:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 500, "{checked} pixels checked");
}

fn lit_scene(material: Material) -> Scene {
    let mut scene = Scene::new(sphere(1.0));
    scene.material = material;
    scene.phong = Phong {
        albedo: Vec3::new(0.9, 0.1, 0.1),
        ..Phong::default()
    };
    scene.ground = Some(Ground {
        height: None,
        albedo: Vec3::new(0.1, 0.9, 0.1),
    });
    scene.light = Light::from_angles(20.0, 60.0);
    scene
}

#[test]
fn ground_sits_at_the_lowest_point_and_receives_the_shadow() {
    let scene = lit_scene(Material::Diffuse);
    let camera = Camera::orbit(
        0.0,
        30.0,
        6.0,
        Vec3::default(),
        Projection::default(),
        120,
        120,
    )
    .unwrap();
    let frame = render_all(&scene, &camera);
    let shaded = frame.shaded.as_ref().unwrap();
    // The bottom row sees the lit ground (green); the ground is not in the silhouette.
    let ground = shaded.pixel(5, 119).unwrap();
    assert!(
        ground[1] > 0.5 && ground[0] < 0.2,
        "ground colour {ground:?}"
    );
    assert_eq!(
        frame.silhouette.as_ref().unwrap().pixel(5, 119).unwrap(),
        [0.0]
    );
    // The ground point whose ray to the light passes through the sphere's centre is in
    // shadow (ambient only); a ground point far from the sphere is lit.
    let Light::Directional { towards } = scene.light else {
        unreachable!("lit_scene uses a directional light")
    };
    let shadowed = -towards * (1.0 / towards.y);
    let lit = Vec3::new(3.0, -1.0, 3.0);
    let ambient_green = 0.9 * scene.phong.ambient;
    for (point, in_shadow, away) in [
        (shadowed, true, Vec3::new(-3.0, 2.0, -3.0)),
        (lit, false, Vec3::new(3.0, 2.0, 3.0)),
    ] {
        let eye = point + away;
        let camera = Camera::look_at(
            eye,
            point,
            Vec3::new(0.0, 1.0, 0.0),
            Projection::default(),
            1,
            1,
        )
        .unwrap();
        let frame = render(&scene, &camera, Outputs::SHADED).unwrap();
        let c = frame.shaded.as_ref().unwrap().pixel(0, 0).unwrap().to_vec();
        if in_shadow {
            assert!(
                (f64::from(c[1]) - ambient_green).abs() < 1e-6,
                "shadowed ground {c:?}"
            );
        } else {
            assert!(c[1] > 0.5, "lit ground {c:?}");
        }
    }
}

#[test]
fn mirror_sphere_reflects_the_ground() {
    let camera = Camera::orbit(
        0.0,
        10.0,
        5.0,
        Vec3::default(),
        Projection::default(),
        101,
        101,
    )
    .unwrap();
    let diffuse = render_all(&lit_scene(Material::Diffuse), &camera);
    let mirror = render_all(
        &lit_scene(Material::Reflective { reflectivity: 1.0 }),
        &camera,
    );
    // Just below the sphere's centre the mirror shows the green ground; the diffuse sphere is red.
    let (x, y) = (50, 62);
    assert_eq!(
        mirror.silhouette.as_ref().unwrap().pixel(x, y).unwrap(),
        [1.0]
    );
    let d = diffuse
        .shaded
        .as_ref()
        .unwrap()
        .pixel(x, y)
        .unwrap()
        .to_vec();
    let m = mirror
        .shaded
        .as_ref()
        .unwrap()
        .pixel(x, y)
        .unwrap()
        .to_vec();
    assert!(d[0] > d[1], "diffuse sphere is red: {d:?}");
    assert!(
        m[1] > 0.05 && m[1] > 2.0 * m[0],
        "mirror shows the ground: {m:?}"
    );
    // Near the top it reflects the black background.
    let top = mirror
        .shaded
        .as_ref()
        .unwrap()
        .pixel(50, 40)
        .unwrap()
        .to_vec();
    assert!(
        top.iter().all(|c| *c < 0.05),
        "top reflects the sky: {top:?}"
    );
}

#[test]
fn clear_sphere_refracts_and_stays_finite() {
    let camera = Camera::orbit(
        0.0,
        10.0,
        5.0,
        Vec3::default(),
        Projection::default(),
        64,
        64,
    )
    .unwrap();
    let frame = render_all(&lit_scene(Material::Clear { ior: 1.5 }), &camera);
    let shaded = frame.shaded.as_ref().unwrap();
    assert!(shaded.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Seen through the glass, the ground below the centre is green-tinted by the red albedo:
    // the lower half carries light (refraction flips the image: the ground appears above).
    let centre = shaded.pixel(32, 30).unwrap();
    assert!(
        centre.iter().any(|c| *c > 0.01),
        "glass transmits: {centre:?}"
    );
}

/// A dense signed distance grid of a sphere of `radius` (world) centred at `centre`, with
/// voxel size `h`, `n³` voxels from the origin.
fn sphere_sdf_grid(n: usize, h: f64, centre: Vec3, radius: f64) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * n * n);
    for x in 0..n {
        for y in 0..n {
            for z in 0..n {
                let p = Vec3::new(x as f64, y as f64, z as f64) * h;
                v.push(((p - centre).length() - radius) as f32);
            }
        }
    }
    v
}

fn compare_to_analytic(object: Object, voxel: f64, min_iou: f64, label: &str) {
    let camera = Camera::orbit(
        35.0,
        25.0,
        5.0,
        Vec3::new(1.0, 1.0, 1.0),
        Projection::default(),
        96,
        96,
    )
    .unwrap();
    let grid = render_all(&Scene::new(object), &camera);
    let truth = render_all(
        &Scene::new(Object::Surface(Box::new(Sdf::Sphere {
            center: Vec3::splat(1.0),
            radius: 0.8,
        }))),
        &camera,
    );
    let (a, b) = (
        hits(grid.silhouette.as_ref().unwrap()),
        hits(truth.silhouette.as_ref().unwrap()),
    );
    assert!(iou(&a, &b) >= min_iou, "{label}: IoU {}", iou(&a, &b));
    let (da, db) = (grid.depth.as_ref().unwrap(), truth.depth.as_ref().unwrap());
    let interior = interior_pixels(&a, &b, 96);
    assert!(interior.len() > 300, "{label}: {} pixels", interior.len());
    for i in interior {
        {
            assert!(
                f64::from((da[i] - db[i]).abs()) < voxel,
                "{label}: depth {} vs {} at pixel {i}",
                da[i],
                db[i]
            );
        }
    }
}

#[test]
fn dense_sdf_grid_matches_the_analytic_sphere_within_a_voxel() {
    let (n, h) = (40usize, 0.05);
    let values = sphere_sdf_grid(n, h, Vec3::splat(1.0), 0.8);
    let map = IndexMap::uniform(h, Vec3::default()).unwrap();
    let surface = GridSurface::from_dense(&values, [n; 3], f32::INFINITY, 0.0, true, map).unwrap();
    compare_to_analytic(Object::Surface(Box::new(surface)), h, 0.98, "dense sdf");
}

#[test]
fn vdb_level_set_matches_the_analytic_sphere_within_a_voxel() {
    let (n, h) = (40usize, 0.05);
    let values = sphere_sdf_grid(n, h, Vec3::splat(1.0), 0.8);
    let grid = Grid::level_set_from_dense(
        "ls",
        DenseSamples {
            values: &values,
            dims: [n; 3],
            origin: [0; 3],
        },
        Transform::uniform_scale(h).unwrap(),
        (3.0 * h) as f32,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ls.vdb");
    vnr_formats::vdb::write_vdb(&path, &[&grid], Default::default()).unwrap();
    let object = load_object(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    compare_to_analytic(object, h, 0.98, "vdb level set");
}

#[test]
fn occupancy_grid_surface_lies_within_a_voxel_of_the_sphere() {
    let (n, h) = (40usize, 0.05);
    let occupancy: Vec<f32> = sphere_sdf_grid(n, h, Vec3::splat(1.0), 0.8)
        .into_iter()
        .map(|d| if d < 0.0 { 1.0 } else { 0.0 })
        .collect();
    let map = IndexMap::uniform(h, Vec3::default()).unwrap();
    let surface = GridSurface::from_dense(&occupancy, [n; 3], 0.0, 0.5, false, map).unwrap();
    // The 0.5 crossing of a 0/1 field is within a voxel of the true surface, so along oblique
    // rays depths may differ by more; at 16 voxels per radius the staircase costs a few
    // percent of IoU.
    compare_to_analytic(
        Object::Surface(Box::new(surface)),
        2.0 * h,
        0.95,
        "occupancy",
    );
}

fn fog_ball(n: usize) -> FogVolume {
    let c = (n as f64 - 1.0) / 2.0;
    let mut v = Vec::with_capacity(n * n * n);
    for x in 0..n {
        for y in 0..n {
            for z in 0..n {
                let r = (Vec3::new(x as f64, y as f64, z as f64) - Vec3::splat(c)).length() / c;
                v.push((1.0 - r).clamp(0.0, 1.0) as f32);
            }
        }
    }
    let map = IndexMap::uniform(0.1, Vec3::splat(-0.1 * c)).unwrap();
    FogVolume::from_dense(&v, [n; 3], map).unwrap()
}

#[test]
fn fog_is_opaque_in_the_middle_and_clear_outside() {
    let scene = Scene::new(Object::Fog(Box::new(fog_ball(32))));
    let camera = Camera::orbit(
        0.0,
        0.0,
        6.0,
        Vec3::default(),
        Projection::default(),
        48,
        48,
    )
    .unwrap();
    let outputs = Outputs {
        shaded: true,
        depth: true,
        silhouette: true,
        ..Outputs::SHADED
    };
    let frame = render(&scene, &camera, outputs).unwrap();
    let sil = frame.silhouette.as_ref().unwrap();
    assert_eq!(sil.pixel(24, 24).unwrap(), [1.0]);
    assert_eq!(sil.pixel(0, 0).unwrap(), [0.0]);
    let shaded = frame.shaded.as_ref().unwrap();
    assert!(shaded.pixel(24, 24).unwrap()[0] > 0.0);
    assert_eq!(shaded.pixel(0, 0).unwrap(), [0.0, 0.0, 0.0]);
    let depth = frame.depth.as_ref().unwrap();
    assert!(depth[24 * 48 + 24] > 4.0 && depth[24 * 48 + 24] < 6.0);
    // Without shadow rays every sample is fully lit: the image can only get brighter.
    let mut unshadowed = Scene::new(Object::Fog(Box::new(fog_ball(32))));
    unshadowed.fog.shadows = false;
    let bright = render(&unshadowed, &camera, Outputs::SHADED).unwrap();
    let bright = bright.shaded.unwrap();
    assert!(bright.data.iter().zip(&shaded.data).all(|(b, s)| *b >= *s));
    assert!(bright
        .data
        .iter()
        .zip(&shaded.data)
        .any(|(b, s)| *b > *s + 0.01));
    // Fog has no normals.
    assert!(matches!(
        render(&scene, &camera, Outputs::ALL),
        Err(RenderError::UnsupportedOutput(_))
    ));
}

/// A fog step so small that `k += 1` stops moving the sample index hung a 1×1 render; steps
/// under `MIN_FOG_STEP` are errors now.
#[test]
fn tiny_fog_steps_are_errors_not_hangs() {
    let camera =
        Camera::orbit(0.0, 0.0, 6.0, Vec3::default(), Projection::default(), 1, 1).unwrap();
    for (step, shadow_step) in [(1e-300, 3.0), (1.0, 1e-300), (MIN_FOG_STEP / 2.0, 3.0)] {
        let mut scene = Scene::new(Object::Fog(Box::new(fog_ball(16))));
        scene.fog.step = step;
        scene.fog.shadow_step = shadow_step;
        assert!(matches!(
            render(&scene, &camera, Outputs::SHADED),
            Err(RenderError::InvalidSettings(_))
        ));
    }
    let mut scene = Scene::new(Object::Fog(Box::new(fog_ball(16))));
    scene.fog.step = MIN_FOG_STEP;
    let frame = render(&scene, &camera, Outputs::SHADED).unwrap();
    assert!(frame.shaded.unwrap().data[0] > 0.0);
}

/// From about 2⁵³ cells away neither the brick walk nor the sample index advance in `f64`: such
/// a ray must return instead of looping.
#[test]
fn fog_rays_from_afar_end() {
    let volume = fog_ball(16);
    let model = FogModel::new(&FogSettings::default(), &volume).unwrap();
    let ray = Ray {
        origin: Vec3::new(0.0, 0.0, -1e17),
        dir: Vec3::new(0.0, 0.0, 1.0),
    };
    let sample = volume.integrate(&ray, 0.0, &model);
    assert!(sample.alpha.is_finite() && sample.radiance.is_finite());
}

/// Bounces recurse: a glass sphere with `u32::MAX` bounces overflowed the stack. Above
/// `MAX_BOUNCES` a render is refused; at it, it renders.
#[test]
fn huge_bounce_limits_are_errors_not_stack_overflows() {
    let camera =
        Camera::orbit(0.0, 10.0, 5.0, Vec3::default(), Projection::default(), 4, 4).unwrap();
    for max_bounces in [u32::MAX, MAX_BOUNCES + 1] {
        let mut glass = lit_scene(Material::Clear { ior: 1.5 });
        glass.max_bounces = max_bounces;
        assert!(matches!(
            render(&glass, &camera, Outputs::SHADED),
            Err(RenderError::InvalidSettings(_))
        ));
    }
    let mut glass = lit_scene(Material::Clear { ior: 1.5 });
    glass.max_bounces = MAX_BOUNCES;
    let frame = render(&glass, &camera, Outputs::SHADED).unwrap();
    assert!(frame.shaded.unwrap().data.iter().all(|v| v.is_finite()));
}

#[test]
fn renders_are_bit_identical_across_runs_and_thread_counts() {
    let camera = Camera::orbit(
        20.0,
        15.0,
        5.0,
        Vec3::default(),
        Projection::default(),
        48,
        40,
    )
    .unwrap();
    let (n, h) = (24usize, 0.1);
    let values = sphere_sdf_grid(n, h, Vec3::splat(1.15), 0.9);
    let map = IndexMap::uniform(h, Vec3::splat(-1.15)).unwrap();
    let scenes = || {
        let mut glass = lit_scene(Material::Clear { ior: 1.33 });
        glass.object = Object::Surface(Box::new(
            GridSurface::from_dense(&values, [n; 3], f32::INFINITY, 0.0, true, map).unwrap(),
        ));
        vec![
            (
                lit_scene(Material::Reflective { reflectivity: 0.7 }),
                Outputs::ALL,
            ),
            (glass, Outputs::ALL),
            (
                Scene::new(Object::Fog(Box::new(fog_ball(20)))),
                Outputs {
                    depth: true,
                    silhouette: true,
                    ..Outputs::SHADED
                },
            ),
        ]
    };
    let run = |threads: usize| -> Vec<Frame> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            scenes()
                .iter()
                .map(|(s, o)| render(s, &camera, *o).unwrap())
                .collect()
        })
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, run(3));
}

#[test]
fn analytic_shapes_render_and_unknown_names_are_refused() {
    let camera = Camera::orbit(
        30.0,
        30.0,
        4.0,
        Vec3::default(),
        Projection::default(),
        32,
        32,
    )
    .unwrap();
    for name in vnr_render::reference::SDF_NAMES {
        let object = load_object(&format!("sdf:{name}"), &LoadOptions::default()).unwrap();
        let frame = render_all(&Scene::new(object), &camera);
        let n = count(&hits(frame.silhouette.as_ref().unwrap()));
        assert!(n > 50 && n < 32 * 32, "{name}: {n} pixels");
    }
    assert!(matches!(
        load_object("sdf:teapot", &LoadOptions::default()),
        Err(RenderError::UnknownShape(_))
    ));
}

#[test]
fn bad_cameras_and_inputs_are_typed_errors() {
    let at = Vec3::default();
    assert!(matches!(
        Camera::orbit(0.0, 0.0, 0.0, at, Projection::default(), 8, 8),
        Err(RenderError::InvalidCamera(_))
    ));
    assert!(matches!(
        Camera::orbit(0.0, 0.0, 1.0, at, Projection::default(), 0, 8),
        Err(RenderError::InvalidCamera(_))
    ));
    assert!(matches!(
        Camera::orbit(
            0.0,
            0.0,
            1.0,
            at,
            Projection::Perspective { fov_y_deg: 180.0 },
            8,
            8
        ),
        Err(RenderError::InvalidCamera(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.vdb");
    std::fs::write(&junk, b"not a vdb at all").unwrap();
    assert!(load_object(junk.to_str().unwrap(), &LoadOptions::default()).is_err());
    let empty = vec![1.0f32; 8 * 8 * 8];
    let map = IndexMap::uniform(1.0, at).unwrap();
    assert!(matches!(
        GridSurface::from_dense(&empty, [8; 3], f32::INFINITY, 0.0, true, map),
        Err(RenderError::EmptyScene)
    ));
    assert!(matches!(
        GridSurface::from_dense(&empty, [8, 8, 7], f32::INFINITY, 0.0, true, map),
        Err(RenderError::InvalidGrid(_))
    ));
}

#[test]
fn bunny_binvox_renders_with_its_ground_under_it() {
    let Some(bunny) = fixture("binvox/bunny.binvox") else {
        return;
    };
    let object = load_object(bunny.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let bounds = object.bounds();
    let mut scene = Scene::new(object);
    scene.ground = Some(Ground::default());
    let camera = Camera::orbit(
        30.0,
        20.0,
        1.2 * bounds.diagonal(),
        bounds.center(),
        Projection::default(),
        64,
        64,
    )
    .unwrap();
    let frame = render_all(&scene, &camera);
    let sil = hits(frame.silhouette.as_ref().unwrap());
    assert!(count(&sil) > 200, "{} bunny pixels", count(&sil));
    // Every pixel sees the bunny or the ground (the camera looks down at both).
    let depth = frame.depth.as_ref().unwrap();
    let bottom = &depth[63 * 64..];
    assert!(
        bottom.iter().all(|d| d.is_finite()),
        "ground under the bunny"
    );
}

/// vdb_render, when installed.
fn vdb_render() -> Option<&'static Path> {
    let path = Path::new("/usr/bin/vdb_render");
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: /usr/bin/vdb_render is not installed");
        None
    }
}

#[test]
fn cortex_sphere_matches_vdb_render_silhouette_and_depth() {
    let (Some(sphere), Some(vdb_render)) = (fixture("vdb/cortex-sphere.vdb"), vdb_render()) else {
        return;
    };
    let size = 128usize;
    let (az, el, radius, fov_x) = (30.0, 20.0, 10.0, 40.0);
    let at = Vec3::default();
    let camera = Camera::orbit(
        az,
        el,
        radius,
        at,
        Projection::Perspective {
            fov_y_deg: vnr_render::reference::fov_y_from_fov_x(fov_x, size, size),
        },
        size,
        size,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |shader: &str| -> ImageF32 {
        let out = dir.path().join(format!("{shader}.png"));
        let e = camera.eye;
        let status = Command::new(vdb_render)
            .arg(&sphere)
            .arg(&out)
            .args(["-shader", shader, "-res", &format!("{size}x{size}")])
            .args(["-translate", &format!("{},{},{}", e.x, e.y, e.z)])
            .args([
                "-lookat",
                "0,0,0",
                "-up",
                "0,1,0",
                "-fov",
                &fov_x.to_string(),
            ])
            .args(["-cpus", "1"])
            .status()
            .expect("vdb_render runs");
        assert!(status.success());
        ImageF32::read_png(&out).unwrap()
    };
    let matte = run("matte");
    let position = run("position");
    let object = load_object(sphere.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let ours = render_all(&Scene::new(object), &camera);
    let theirs: Vec<bool> = matte.data.chunks_exact(3).map(|c| c[0] > 0.5).collect();
    let mine = hits(ours.silhouette.as_ref().unwrap());
    let score = iou(&mine, &theirs);
    assert!(score >= 0.98, "silhouette IoU {score}");

    // Depth: vdb_render's position shader writes (p − min) / extent of the active voxels' world
    // box ([-62, 62]³ voxels of 0.05), truncated to 8 bits: the value lies in [c, c + 1/255).
    let (lo, extent) = (-62.0 * 0.05, 124.0 * 0.05);
    let voxel = 0.05;
    let depth = ours.depth.as_ref().unwrap();
    let mut compared = 0;
    let mut worst = 0.0f64;
    for i in interior_pixels(&mine, &theirs, size) {
        let (x, y) = (i % size, i / size);
        {
            let c = position.pixel(x, y).unwrap();
            let decode = |v: f32| lo + (f64::from(v) + 0.5 / 255.0) * extent;
            let p = Vec3::new(decode(c[0]), decode(c[1]), decode(c[2]));
            let diff = (camera.depth_of(p) - f64::from(depth[i])).abs();
            worst = worst.max(diff);
            compared += 1;
        }
    }
    assert!(compared > 1000, "{compared} pixels compared");
    eprintln!(
        "cortex-sphere vs vdb_render: IoU {score:.4}, {compared} pixels, max depth diff {worst:.4}"
    );
    assert!(
        worst <= voxel,
        "depth differs by up to {worst} (a voxel is {voxel})"
    );
}

#[test]
fn fog_volume_matches_vdb_render() {
    let Some(vdb_render) = vdb_render() else {
        return;
    };
    // A 24³ ball of density, written with our VDB writer and rendered by both.
    let n = 24usize;
    let c = (n as f64 - 1.0) / 2.0;
    let mut values = Vec::with_capacity(n * n * n);
    for x in 0..n {
        for y in 0..n {
            for z in 0..n {
                let r = (Vec3::new(x as f64, y as f64, z as f64) - Vec3::splat(c)).length() / c;
                values.push((1.2 * (1.0 - r)).clamp(0.0, 1.0) as f32);
            }
        }
    }
    let grid = Grid::fog_from_dense(
        "density",
        DenseSamples {
            values: &values,
            dims: [n; 3],
            origin: [-12; 3],
        },
        Transform::uniform_scale(0.1).unwrap(),
        0.0,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fog.vdb");
    vnr_formats::vdb::write_vdb(&path, &[&grid], Default::default()).unwrap();
    let size = 64usize;
    let camera = Camera::orbit(
        30.0,
        20.0,
        6.0,
        Vec3::default(),
        Projection::Perspective { fov_y_deg: 40.0 },
        size,
        size,
    )
    .unwrap();
    let out = dir.path().join("fog.png");
    let e = camera.eye;
    let status = Command::new(vdb_render)
        .arg(&path)
        .arg(&out)
        .args([
            "-res",
            &format!("{size}x{size}"),
            "-fov",
            "40",
            "-cpus",
            "1",
        ])
        .args(["-translate", &format!("{},{},{}", e.x, e.y, e.z)])
        .args(["-lookat", "0,0,0", "-up", "0,1,0"])
        .status()
        .expect("vdb_render runs");
    assert!(status.success());
    let theirs = ImageF32::read_png(&out).unwrap();
    let object = load_object(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let ours = render(&Scene::new(object), &camera, Outputs::SHADED).unwrap();
    let ours = ours.shaded.unwrap();
    // vdb_render truncates to 8 bits: compare against our value truncated the same way.
    let diffs: Vec<f64> = ours
        .data
        .iter()
        .zip(&theirs.data)
        .map(|(a, b)| ((f64::from(*a) * 255.0).floor() / 255.0 - f64::from(*b)).abs())
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let max = diffs.iter().copied().fold(0.0, f64::max);
    let lit = theirs.data.iter().filter(|v| **v > 0.05).count();
    eprintln!("fog vs vdb_render: mean |diff| {mean:.5}, max {max:.4}, {lit} lit samples");
    assert!(lit > 1000, "the fog is visible: {lit}");
    assert!(mean < 1e-3 && max < 0.02, "mean {mean}, max {max}");
}

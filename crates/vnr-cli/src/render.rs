//! `vnr render FILE`: ground-truth images from the reference ray caster (RenderNet's demo
//! flags: `--azimuth --elevation --radius --light-azimuth --light-elevation --rotate --out`).
//!
//! FILE is a `.vdb` (level set → surface; fog volume → fog), `.binvox` (occupancy surface),
//! `.npy`/`.npz` dense grid (npz keys `values`, `origin`, `voxel_size` as `vnr convert`
//! writes them), or an analytic shape `sdf:NAME` with NAME one of sphere, box, rounded-box,
//! torus, capsule, union, intersection, smooth-union, difference, superquadric (all within
//! `[-1, 1]³`).
//!
//! The camera orbits the look-at point (default: the centre of the object's box) with
//! PyTorch3D's convention: position `radius · (cos e · sin a, sin e, cos e · cos a) + at`,
//! `+Y` up. Without `--radius` the camera backs off until the object's bounding sphere fits
//! the view. The light is directional, from `(--light-azimuth, --light-elevation)` in the same
//! convention, fixed in the world (a turntable moves the camera, not the light).
//!
//! Outputs: `shaded` (RGB, `--grey` for one channel), `normal` (camera space, `n · 0.5 +
//! 0.5`), `silhouette` (0/1), `albedo` as PNG; `depth` (distance along the view axis, `+inf`
//! where nothing is hit) as a float32 `.npy` of shape `[H, W]`. `--rotate` writes `--frames`
//! frames at azimuth `A + i · 360 / N` as an animated GIF (not for depth).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use vnr_formats::image::{write_gif, GifRepeat, ImageF32};
use vnr_models::rendernet_train::MAX_TURNTABLE_FRAMES;
use vnr_render::reference::{
    load_object, render, to_grey, Camera, DenseMode, Frame, Ground, Light, LoadOptions, Material,
    Outputs, Phong, Projection, Scene, Vec3,
};

/// Arguments of `vnr render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// What to render: a .vdb, .binvox, .npy or .npz file, or sdf:NAME (sphere, box,
    /// rounded-box, torus, capsule, union, intersection, smooth-union, difference,
    /// superquadric).
    pub input: String,
    /// Output file: .png (or .npy for depth); .gif with --rotate.
    #[arg(long)]
    pub out: PathBuf,
    /// Camera azimuth in degrees (around +Y, 0 looks from +Z).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub azimuth: f64,
    /// Camera elevation in degrees above the look-at point.
    #[arg(long, default_value_t = 30.0, allow_hyphen_values = true)]
    pub elevation: f64,
    /// Camera distance from the look-at point (default: the object fills the view).
    #[arg(long)]
    pub radius: Option<f64>,
    /// Look-at point `X,Y,Z` (default: the centre of the object's bounding box).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub look_at: Option<Vec<f64>>,
    /// Light azimuth in degrees (the camera's convention).
    #[arg(long, default_value_t = 45.0, allow_hyphen_values = true)]
    pub light_azimuth: f64,
    /// Light elevation in degrees.
    #[arg(long, default_value_t = 45.0, allow_hyphen_values = true)]
    pub light_elevation: f64,
    /// `--rotate --frames --delay`.
    #[command(flatten)]
    pub turntable: TurntableArgs,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Vertical field of view in degrees.
    #[arg(long, default_value_t = 40.0)]
    pub fov: f64,
    /// Orthographic camera showing this many world units vertically (instead of perspective).
    #[arg(long)]
    pub ortho_height: Option<f64>,
    /// Which image to write.
    #[arg(long, value_enum, default_value_t = OutputKind::Shaded)]
    pub output: OutputKind,
    /// Surface material.
    #[arg(long, value_enum, default_value_t = MaterialKind::Diffuse)]
    pub material: MaterialKind,
    /// Index of refraction of the clear material.
    #[arg(long, default_value_t = 1.5)]
    pub ior: f64,
    /// Share of mirrored light of the reflective material.
    #[arg(long, default_value_t = 0.8)]
    pub reflectivity: f64,
    /// Object colour `R,G,B` in [0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.8,0.8,0.8")]
    pub color: Vec<f64>,
    /// Background colour `R,G,B`.
    #[arg(long, value_delimiter = ',', default_value = "0,0,0")]
    pub background: Vec<f64>,
    /// Add a ground plane receiving shadows at the object's lowest point.
    #[arg(long)]
    pub ground: bool,
    /// Height of the ground plane (implies --ground).
    #[arg(long, allow_hyphen_values = true)]
    pub ground_height: Option<f64>,
    /// Write the shaded image as one grey channel.
    #[arg(long)]
    pub grey: bool,
    /// VDB: the grid to render (default: the first float grid).
    #[arg(long)]
    pub grid: Option<String>,
    /// npy/npz: how to read the values (default: sdf when any value is negative, else occupancy).
    #[arg(long, value_enum)]
    pub dense_as: Option<DenseKind>,
    /// Iso value of the surface (default 0 for distances, 0.5 for occupancy); given for a VDB
    /// fog volume, renders its iso-surface instead of fog.
    #[arg(long, allow_hyphen_values = true)]
    pub iso: Option<f32>,
}

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputKind {
    Shaded,
    Normal,
    Depth,
    Silhouette,
    Albedo,
}

/// `--material` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaterialKind {
    Diffuse,
    Reflective,
    Clear,
}

/// `--dense-as` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DenseKind {
    Sdf,
    Occupancy,
    Fog,
}

fn vec3(v: &[f64], what: &str) -> Result<Vec3> {
    match v {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok(Vec3::new(*x, *y, *z)),
        _ => bail!("{what} needs three finite numbers X,Y,Z, got {v:?}"),
    }
}

fn outputs(kind: OutputKind) -> Outputs {
    let none = Outputs {
        shaded: false,
        normal: false,
        depth: false,
        silhouette: false,
        albedo: false,
    };
    match kind {
        OutputKind::Shaded => Outputs::SHADED,
        OutputKind::Normal => Outputs {
            normal: true,
            ..none
        },
        OutputKind::Depth => Outputs {
            depth: true,
            ..none
        },
        OutputKind::Silhouette => Outputs {
            silhouette: true,
            ..none
        },
        OutputKind::Albedo => Outputs {
            albedo: true,
            ..none
        },
    }
}

fn has_extension(path: &std::path::Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Checks the output path against what will be written, before any rendering.
fn check_out(args: &RenderArgs) -> Result<()> {
    let out = &args.out;
    let (wanted, what) = match (args.turntable.rotate, args.output) {
        (true, OutputKind::Depth) => {
            bail!("depth maps cannot be written as GIF frames; render --output depth without --rotate")
        }
        (true, _) => ("gif", "a turntable"),
        (false, OutputKind::Depth) => ("npy", "a depth map"),
        (false, _) => ("png", "an image"),
    };
    if !has_extension(out, wanted) {
        bail!("{}: {what} is written as .{wanted}", out.display());
    }
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    args.turntable.check()
}

/// The scene the arguments describe.
fn scene(args: &RenderArgs) -> Result<Scene> {
    let options = LoadOptions {
        grid: args.grid.clone(),
        dense: match args.dense_as {
            None => DenseMode::Auto,
            Some(DenseKind::Sdf) => DenseMode::Sdf,
            Some(DenseKind::Occupancy) => DenseMode::Occupancy,
            Some(DenseKind::Fog) => DenseMode::Fog,
        },
        iso: args.iso,
    };
    let object =
        load_object(&args.input, &options).with_context(|| format!("loading {}", args.input))?;
    let mut scene = Scene::new(object);
    scene.material = match args.material {
        MaterialKind::Diffuse => Material::Diffuse,
        MaterialKind::Reflective => Material::Reflective {
            reflectivity: args.reflectivity,
        },
        MaterialKind::Clear => Material::Clear { ior: args.ior },
    };
    scene.phong = Phong {
        albedo: vec3(&args.color, "--color")?,
        ..Phong::default()
    };
    scene.background = vec3(&args.background, "--background")?;
    scene.light = Light::from_angles(args.light_azimuth, args.light_elevation);
    if args.ground || args.ground_height.is_some() {
        scene.ground = Some(Ground {
            height: args.ground_height,
            ..Ground::default()
        });
    }
    Ok(scene)
}

/// The camera at `azimuth`, framing the object unless the arguments fix the radius.
fn camera(args: &RenderArgs, scene: &Scene, azimuth: f64) -> Result<Camera> {
    let bounds = scene.object.bounds();
    let at = match &args.look_at {
        Some(v) => vec3(v, "--look-at")?,
        None => bounds.center(),
    };
    let projection = match args.ortho_height {
        Some(height) => Projection::Orthographic { height },
        None => Projection::Perspective {
            fov_y_deg: args.fov,
        },
    };
    let radius = match args.radius {
        Some(r) => r,
        None => {
            // The bounding sphere (around the look-at point) just fits the narrower half-angle,
            // with 10% margin.
            let reach = (bounds.max - at)
                .abs()
                .max((bounds.min - at).abs())
                .length();
            let half = (args.fov.clamp(1.0, 179.0).to_radians() * 0.5).sin();
            match args.ortho_height {
                Some(_) => 2.0 * reach + 1.0,
                None => 1.1 * reach / half,
            }
        }
    };
    Ok(Camera::orbit(
        azimuth,
        args.elevation,
        radius,
        at,
        projection,
        args.size,
        args.size,
    )?)
}

/// The requested image of a frame.
fn image(args: &RenderArgs, frame: Frame) -> Result<ImageF32> {
    let image = match args.output {
        OutputKind::Shaded => frame.shaded,
        OutputKind::Normal => frame.normal,
        OutputKind::Silhouette => frame.silhouette,
        OutputKind::Albedo => frame.albedo,
        OutputKind::Depth => None,
    }
    .context("the renderer did not produce the requested output")?;
    if args.grey && args.output == OutputKind::Shaded {
        return Ok(to_grey(&image)?);
    }
    Ok(image)
}

/// `--rotate [--frames N] [--delay D]`: a turntable GIF instead of one image (`vnr render` and
/// `vnr render-field`).
#[derive(Debug, Args)]
pub struct TurntableArgs {
    /// Render a turntable (an animated GIF) instead of one image.
    #[arg(long)]
    pub rotate: bool,
    /// Turntable frames (1 to 3600).
    #[arg(long, default_value_t = 36)]
    pub frames: usize,
    /// Hundredths of a second per turntable frame.
    #[arg(long, default_value_t = 10)]
    pub delay: u16,
}

impl TurntableArgs {
    /// With `--rotate`, `--frames` must be in `1..=`[`MAX_TURNTABLE_FRAMES`].
    pub fn check(&self) -> Result<()> {
        if self.rotate && !(1..=MAX_TURNTABLE_FRAMES).contains(&self.frames) {
            bail!(
                "--frames {} must be in 1..={MAX_TURNTABLE_FRAMES}",
                self.frames
            );
        }
        Ok(())
    }

    /// Renders `frames` frames at azimuth `azimuth + i · 360 / frames` degrees and writes them to
    /// `out` as a looping GIF, one frame in memory at a time. `--frames` out of range
    /// ([`TurntableArgs::check`]) is an error before anything is rendered; so is a frame that
    /// fails, and then no file is written.
    pub fn write_gif(
        &self,
        out: &std::path::Path,
        azimuth: f64,
        mut frame: impl FnMut(f64) -> Result<ImageF32>,
    ) -> Result<()> {
        self.check()?;
        let step = 360.0 / self.frames as f64;
        let mut failure = None;
        // Frames go to the encoder as they are rendered. A failed one becomes an empty image,
        // which write_gif rejects, abandoning its atomic write, so no partial GIF is left;
        // the render error is then the one reported.
        let frames = (0..self.frames).map_while(|i| {
            if failure.is_some() {
                return None;
            }
            Some(frame(azimuth + i as f64 * step).unwrap_or_else(|e| {
                failure = Some(e);
                ImageF32 {
                    width: 0,
                    height: 0,
                    channels: 0,
                    data: Vec::new(),
                }
            }))
        });
        let written = write_gif(out, frames, self.delay, GifRepeat::Infinite);
        if let Some(e) = failure {
            return Err(e);
        }
        written.with_context(|| format!("writing {}", out.display()))
    }
}

/// Runs `vnr render`.
pub fn run(args: &RenderArgs) -> Result<()> {
    check_out(args)?;
    let scene = scene(args)?;
    let wanted = outputs(args.output);
    if args.turntable.rotate {
        return args
            .turntable
            .write_gif(&args.out, args.azimuth, |azimuth| {
                let camera = camera(args, &scene, azimuth)?;
                image(args, render(&scene, &camera, wanted)?)
            });
    }
    let camera = camera(args, &scene, args.azimuth)?;
    let frame = render(&scene, &camera, wanted)?;
    if args.output == OutputKind::Depth {
        frame
            .write_depth_npy(&args.out)
            .with_context(|| format!("writing {}", args.out.display()))?;
    } else {
        image(args, frame)?
            .write_png(&args.out)
            .with_context(|| format!("writing {}", args.out.display()))?;
    }
    Ok(())
}

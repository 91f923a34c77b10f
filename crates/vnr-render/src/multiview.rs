//! Posed multi-view image datasets: the NeRF-synthetic (Blender) layout and nerfstudio's
//! `transforms.json`, with ray generation for training and evaluation.
//!
//! **NeRF-synthetic.** `transforms_{train,val,test}.json` each hold `camera_angle_x` (horizontal
//! field of view, radians) and `frames`, each with a `file_path` relative to the dataset root
//! (`./train/r_0`, with or without `.png`) and a 4×4 camera-to-world `transform_matrix` with
//! OpenGL/Blender camera axes (+X right, +Y up, looking down −Z). Frames are RGBA PNGs whose
//! alpha is the silhouette; loading composites them on a background colour (NeRF uses white).
//!
//! **nerfstudio.** One `transforms.json` with pinhole intrinsics `fl_x`, `fl_y`, `cx`, `cy`, `w`,
//! `h` (top level, or per frame with the same values for every frame), `frames` as above and
//! optional `train_filenames` / `val_filenames` / `test_filenames` lists selecting a split.
//! Lens distortion (`k1`, `p1`, ...) is not applied.
//!
//! **Rays.** Pixel `(u, v)` (column, row) is sampled at its centre: the camera-space direction is
//! `((u + ½ − cx)/fx, −(v + ½ − cy)/fy, −1)` rotated by the camera-to-world matrix, the origin is
//! the camera centre (as svox2's and nerfstudio's loaders do). Directions are not normalised.
//!
//! Readers bound what they allocate: JSON files are at most [`MAX_JSON_BYTES`], at most
//! [`MAX_FRAMES`] frames, and the whole split at most [`MAX_DATASET_SAMPLES`] floats.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use serde_json::{json, Value};
use vnr_formats::atomic::write_atomically;
use vnr_formats::image::{ImageError, ImageF32};

use crate::cameras::{
    blender_from_cameras, cameras_from_opencv_projection, look_at_view_transform, ImageSize,
    PerspectiveCameras,
};

/// Largest `transforms*.json` read, in bytes.
pub const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most frames in one split.
pub const MAX_FRAMES: usize = 100_000;
/// Most floats (`N·H·W·3`) held by one loaded split (8 GiB of f32).
pub const MAX_DATASET_SAMPLES: usize = 1 << 31;

/// Errors from reading or writing a multi-view dataset.
#[derive(Debug, thiserror::Error)]
pub enum MultiViewError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A required field is absent.
    #[error("{path}: missing field '{field}'")]
    MissingField { path: PathBuf, field: String },
    /// A field has the wrong type or an invalid value.
    #[error("{path}: field '{field}': {reason}")]
    BadField {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// A frame image could not be read or written.
    #[error("{path}: {source}")]
    Image { path: PathBuf, source: ImageError },
    /// A frame image does not have the size of the others (or of `w`/`h`).
    #[error("{path}: image is {got:?} (W×H), expected {expected:?}")]
    ImageSize {
        path: PathBuf,
        expected: (usize, usize),
        got: (usize, usize),
    },
    /// The dataset is larger than the reader's bounds.
    #[error("{path}: {what}")]
    TooLarge { path: PathBuf, what: String },
    /// The split has no frames.
    #[error("{path}: no frames in split '{split}'")]
    Empty { path: PathBuf, split: &'static str },
    /// Shapes or values given to [`MultiViewDataset::new`] or a ray query are inconsistent.
    #[error("multi-view dataset: {0}")]
    Invalid(String),
    /// candle failed while building tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training views.
    Train,
    /// Validation views.
    Val,
    /// Test views.
    Test,
}

impl Split {
    /// `"train"`, `"val"` or `"test"`, as in the file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }
}

/// Pinhole intrinsics in pixels, shared by every frame of a split: focal lengths, principal
/// point (image coordinates, +X right, +Y down, origin at the top-left corner) and image size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    /// Focal length along X, pixels.
    pub fx: f64,
    /// Focal length along Y, pixels.
    pub fy: f64,
    /// Principal point X, pixels.
    pub cx: f64,
    /// Principal point Y, pixels.
    pub cy: f64,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
}

impl Intrinsics {
    /// Blender intrinsics: square pixels, centred principal point, focal length
    /// `W / (2·tan(camera_angle_x / 2))`.
    pub fn from_camera_angle_x(camera_angle_x: f64, width: usize, height: usize) -> Self {
        let focal = width as f64 / (2.0 * (camera_angle_x / 2.0).tan());
        Self {
            fx: focal,
            fy: focal,
            cx: width as f64 / 2.0,
            cy: height as f64 / 2.0,
            width,
            height,
        }
    }

    /// The horizontal field of view `2·atan(W / (2·fx))`, when these are Blender intrinsics
    /// (`fx = fy` and a centred principal point, each within `1e-6` relative).
    pub fn camera_angle_x(&self) -> Option<f64> {
        let (w, h) = (self.width as f64, self.height as f64);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        (close(self.fx, self.fy) && close(self.cx, w / 2.0) && close(self.cy, h / 2.0))
            .then(|| 2.0 * (w / (2.0 * self.fx)).atan())
    }

    fn check(&self) -> Result<(), String> {
        let finite = [self.fx, self.fy, self.cx, self.cy]
            .iter()
            .all(|v| v.is_finite());
        if !finite || self.fx <= 0.0 || self.fy <= 0.0 || self.width == 0 || self.height == 0 {
            return Err(format!(
                "intrinsics need finite values, positive focal lengths and a non-empty image, got {self:?}"
            ));
        }
        Ok(())
    }
}

/// A batch of rays with their target colours: `origins`, `directions`, `colours`, each `[M, 3]`
/// f32 (world coordinates; directions not normalised).
#[derive(Debug, Clone)]
pub struct RayBatch {
    /// `[M, 3]`.
    pub origins: Tensor,
    /// `[M, 3]`.
    pub directions: Tensor,
    /// `[M, 3]`, in `[0, 1]`.
    pub colours: Tensor,
}

/// One split of a posed multi-view dataset held in memory.
#[derive(Debug, Clone)]
pub struct MultiViewDataset {
    /// Which split this is.
    pub split: Split,
    /// Colours composited on the background, `[N, H, W, 3]` f32 in `[0, 1]`.
    pub images: Tensor,
    /// Alpha (silhouettes), `[N, H, W, 1]` f32, when the frames have it.
    pub alpha: Option<Tensor>,
    /// Camera-to-world matrices, `[N, 4, 4]` f32, OpenGL/Blender camera axes.
    pub camera_to_world: Tensor,
    /// Intrinsics shared by all frames.
    pub intrinsics: Intrinsics,
    /// Frame paths as written in the JSON (relative to the dataset root).
    pub file_paths: Vec<String>,
    /// The colour `images` were composited on where `alpha < 1` (white unless read with another;
    /// [`MultiViewDataset::write_blender`] undoes the compositing with it to write RGBA).
    pub background: [f32; 3],
    /// Rows of `camera_to_world` (upper 3×4), kept in f64 for ray generation.
    poses: Vec<[[f64; 4]; 3]>,
    /// `images` flattened, `N·H·W·3`, for ray sampling without tensor indexing.
    pixels: Vec<f32>,
}

impl MultiViewDataset {
    /// A dataset from tensors: `images [N, H, W, 3]` (composited on a white background where
    /// `alpha < 1`; set [`MultiViewDataset::background`] otherwise), optional
    /// `alpha [N, H, W, 1]`, `camera_to_world [N, 4, 4]` and intrinsics matching `H`, `W`.
    /// File paths default to the Blender names `./{split}/r_{i}`.
    pub fn new(
        split: Split,
        images: Tensor,
        alpha: Option<Tensor>,
        camera_to_world: Tensor,
        intrinsics: Intrinsics,
    ) -> Result<Self, MultiViewError> {
        let (n, h, w, c) = images.dims4()?;
        if c != 3 || n == 0 {
            return Err(MultiViewError::Invalid(format!(
                "images must be [N, H, W, 3] with N > 0, got {:?}",
                images.dims()
            )));
        }
        if (w, h) != (intrinsics.width, intrinsics.height) {
            return Err(MultiViewError::Invalid(format!(
                "images are {w}×{h} but the intrinsics say {}×{}",
                intrinsics.width, intrinsics.height
            )));
        }
        intrinsics.check().map_err(MultiViewError::Invalid)?;
        if let Some(a) = &alpha {
            if a.dims() != [n, h, w, 1] {
                return Err(MultiViewError::Invalid(format!(
                    "alpha has shape {:?}, expected [{n}, {h}, {w}, 1]",
                    a.dims()
                )));
            }
        }
        if camera_to_world.dims() != [n, 4, 4] {
            return Err(MultiViewError::Invalid(format!(
                "camera_to_world has shape {:?}, expected [{n}, 4, 4]",
                camera_to_world.dims()
            )));
        }
        let images = images.to_dtype(DType::F32)?.contiguous()?;
        let camera_to_world = camera_to_world.to_dtype(DType::F32)?.contiguous()?;
        let matrices: Vec<f64> = camera_to_world
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        if matrices.iter().any(|v| !v.is_finite()) {
            return Err(MultiViewError::Invalid(
                "camera_to_world has non-finite entries".into(),
            ));
        }
        let poses = matrices
            .chunks_exact(16)
            .map(|m| std::array::from_fn(|r| std::array::from_fn(|c| m[4 * r + c])))
            .collect();
        let pixels = images.flatten_all()?.to_vec1()?;
        Ok(Self {
            split,
            alpha: alpha.map(|a| a.to_dtype(DType::F32)).transpose()?,
            file_paths: (0..n)
                .map(|i| format!("./{}/r_{i}", split.as_str()))
                .collect(),
            background: [1.0; 3],
            images,
            camera_to_world,
            intrinsics,
            poses,
            pixels,
        })
    }

    /// Number of frames `N`.
    pub fn len(&self) -> usize {
        self.poses.len()
    }

    /// Whether there are no frames (never, for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.poses.is_empty()
    }

    /// Image size.
    pub fn image_size(&self) -> ImageSize {
        ImageSize::new(self.intrinsics.height, self.intrinsics.width)
    }

    /// Reads split `split` of a NeRF-synthetic dataset (`root/transforms_{split}.json`),
    /// compositing RGBA frames on `background` (`[1, 1, 1]` for NeRF's white).
    pub fn read_blender(
        root: impl AsRef<Path>,
        split: Split,
        background: [f32; 3],
    ) -> Result<Self, MultiViewError> {
        let root = root.as_ref();
        let path = root.join(format!("transforms_{}.json", split.as_str()));
        let doc = read_json(&path)?;
        let fields = Fields { path: &path };
        let camera_angle_x = fields.f64(&doc, "camera_angle_x")?;
        if !(camera_angle_x > 0.0 && camera_angle_x < std::f64::consts::PI) {
            return Err(fields.bad(
                "camera_angle_x",
                format!("{camera_angle_x} is not in (0, π)"),
            ));
        }
        let frames = fields.frames(&doc)?;
        let mut parsed = Vec::with_capacity(frames.len());
        for (i, frame) in frames.iter().enumerate() {
            parsed.push(fields.frame(frame, i)?);
        }
        if parsed.is_empty() {
            return Err(MultiViewError::Empty {
                path,
                split: split.as_str(),
            });
        }
        let loaded = load_frames(root, &path, &parsed, background, None)?;
        let intrinsics =
            Intrinsics::from_camera_angle_x(camera_angle_x, loaded.width, loaded.height);
        let mut dataset = loaded.into_dataset(split, intrinsics, parsed)?;
        dataset.background = background;
        Ok(dataset)
    }

    /// Reads a nerfstudio `transforms.json` (the file itself, or a directory holding it). With
    /// `split` and a matching `{split}_filenames` list, only those frames are kept; without the
    /// list every frame belongs to the split.
    pub fn read_nerfstudio(
        path: impl AsRef<Path>,
        split: Split,
        background: [f32; 3],
    ) -> Result<Self, MultiViewError> {
        let path = path.as_ref();
        let path = if path.is_dir() {
            path.join("transforms.json")
        } else {
            path.to_path_buf()
        };
        let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let doc = read_json(&path)?;
        let fields = Fields { path: &path };
        let split_key = format!("{}_filenames", split.as_str());
        let selected: Option<Vec<String>> = match doc.get(&split_key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str().map(normalise_relative).ok_or_else(|| {
                            fields.bad(&format!("{split_key}[{i}]"), "not a string".into())
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(fields.bad(&split_key, "not a list of file names".into())),
        };
        let mut parsed = Vec::new();
        let mut intrinsics: Option<Intrinsics> = None;
        for (i, frame) in fields.frames(&doc)?.iter().enumerate() {
            let f = fields.frame(frame, i)?;
            if let Some(keep) = &selected {
                if !keep.contains(&normalise_relative(&f.file_path)) {
                    continue;
                }
            }
            let frame_intrinsics = fields.nerfstudio_intrinsics(&doc, frame, i)?;
            match intrinsics {
                None => intrinsics = Some(frame_intrinsics),
                Some(first) if first != frame_intrinsics => {
                    return Err(fields.bad(
                        &format!("frames[{i}]"),
                        format!(
                            "intrinsics {frame_intrinsics:?} differ from the first frame's \
                             {first:?}; one camera model per split is supported"
                        ),
                    ))
                }
                Some(_) => {}
            }
            parsed.push(f);
        }
        let Some(intrinsics) = intrinsics else {
            return Err(MultiViewError::Empty {
                path,
                split: split.as_str(),
            });
        };
        let size = (intrinsics.width, intrinsics.height);
        let loaded = load_frames(&root, &path, &parsed, background, Some(size))?;
        let mut dataset = loaded.into_dataset(split, intrinsics, parsed)?;
        dataset.background = background;
        Ok(dataset)
    }

    /// Writes this split in the NeRF-synthetic layout under `root`: `transforms_{split}.json`
    /// (`camera_angle_x`, frames with `file_path` and `transform_matrix`) and one PNG per frame
    /// at its `file_path` (`.png` added when absent). With `alpha`, frames are 8-bit RGBA whose
    /// colour is `images` un-composited from [`MultiViewDataset::background`] (as Blender
    /// writes them, so reading back on the same background gives `images` again, up to 8-bit
    /// rounding); without, composited RGB. Every file is written atomically.
    /// Fails when the intrinsics are not Blender's (see [`Intrinsics::camera_angle_x`]).
    pub fn write_blender(&self, root: impl AsRef<Path>) -> Result<(), MultiViewError> {
        let root = root.as_ref();
        let json_path = root.join(format!("transforms_{}.json", self.split.as_str()));
        let camera_angle_x = self.intrinsics.camera_angle_x().ok_or_else(|| {
            MultiViewError::Invalid(format!(
                "{}: intrinsics {:?} are not a Blender camera (square pixels, centred principal point)",
                json_path.display(),
                self.intrinsics
            ))
        })?;
        let (n, h, w) = (self.len(), self.intrinsics.height, self.intrinsics.width);
        let alpha: Option<Vec<f32>> = self
            .alpha
            .as_ref()
            .map(|a| a.flatten_all().and_then(|a| a.to_vec1()))
            .transpose()?;
        let mut frames = Vec::with_capacity(n);
        for (i, file_path) in self.file_paths.iter().enumerate() {
            let image_path = root.join(with_png_extension(file_path));
            if let Some(dir) = image_path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| MultiViewError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let frame_len = h * w * 3;
            let colours = &self.pixels[i * frame_len..(i + 1) * frame_len];
            match &alpha {
                Some(alpha) => write_rgba_png(
                    &image_path,
                    w,
                    h,
                    colours,
                    &alpha[i * h * w..(i + 1) * h * w],
                    self.background,
                )?,
                None => ImageF32::new(w, h, 3, colours.to_vec())
                    .and_then(|image| image.write_png(&image_path))
                    .map_err(|source| MultiViewError::Image {
                        path: image_path.clone(),
                        source,
                    })?,
            }
            let matrix: Vec<Vec<f64>> = self.poses[i]
                .iter()
                .map(|row| row.to_vec())
                .chain(std::iter::once(vec![0.0, 0.0, 0.0, 1.0]))
                .collect();
            frames.push(json!({ "file_path": file_path, "transform_matrix": matrix }));
        }
        let doc = json!({ "camera_angle_x": camera_angle_x, "frames": frames });
        std::fs::create_dir_all(root).map_err(|source| MultiViewError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        write_atomically(&json_path, |w| {
            serde_json::to_writer_pretty(&mut *w, &doc).map_err(std::io::Error::other)
        })
        .map_err(|source| MultiViewError::Io {
            path: json_path.clone(),
            source,
        })
    }

    /// The frames as PyTorch3D cameras (NDC [`PerspectiveCameras`], via
    /// [`cameras_from_opencv_projection`]; for Blender intrinsics these equal
    /// [`crate::cameras::cameras_from_blender`]'s).
    pub fn cameras(&self) -> Result<PerspectiveCameras, MultiViewError> {
        let n = self.len();
        // OpenGL → OpenCV camera axes: flip Y and Z; world-to-camera is the inverse pose.
        let mut rotations = Vec::with_capacity(n * 9);
        let mut translations = Vec::with_capacity(n * 3);
        for pose in &self.poses {
            // Row c of the world-to-camera rotation is camera axis c in world coordinates:
            // column c of the camera-to-world rotation, Y and Z negated for OpenCV.
            let r_cv: [[f64; 3]; 3] = std::array::from_fn(|c| {
                let sign = if c == 0 { 1.0 } else { -1.0 };
                std::array::from_fn(|k| sign * pose[k][c])
            });
            let centre = [pose[0][3], pose[1][3], pose[2][3]];
            for row in &r_cv {
                rotations.extend(row.iter().map(|&v| v as f32));
            }
            for row in &r_cv {
                let t: f64 = -(0..3).map(|k| row[k] * centre[k]).sum::<f64>();
                translations.push(t as f32);
            }
        }
        let dev = Device::Cpu;
        let r = Tensor::from_vec(rotations, (n, 3, 3), &dev)?;
        let t = Tensor::from_vec(translations, (n, 3), &dev)?;
        let i = &self.intrinsics;
        let k = [
            i.fx as f32,
            0.0,
            i.cx as f32,
            0.0,
            i.fy as f32,
            i.cy as f32,
            0.0,
            0.0,
            1.0,
        ];
        let k = Tensor::new(&k, &dev)?
            .reshape((1, 3, 3))?
            .broadcast_as((n, 3, 3))?
            .contiguous()?;
        Ok(cameras_from_opencv_projection(
            &r,
            &t,
            &k,
            &[self.image_size()],
        )?)
    }

    /// Origin and (unnormalised) direction of the ray through the centre of pixel `(u, v)`
    /// (column, row) of frame `frame`; `None` when out of range.
    pub fn ray(&self, frame: usize, u: usize, v: usize) -> Option<([f32; 3], [f32; 3])> {
        let i = &self.intrinsics;
        if u >= i.width || v >= i.height {
            return None;
        }
        let pose = self.poses.get(frame)?;
        let camera = [
            (u as f64 + 0.5 - i.cx) / i.fx,
            -(v as f64 + 0.5 - i.cy) / i.fy,
            -1.0,
        ];
        let direction = std::array::from_fn(|r| {
            (pose[r][0] * camera[0] + pose[r][1] * camera[1] + pose[r][2] * camera[2]) as f32
        });
        let origin = std::array::from_fn(|r| pose[r][3] as f32);
        Some((origin, direction))
    }

    /// `H·W`, checked against the images: `intrinsics` is public, and a size changed after
    /// construction must not index past the pixels or overflow.
    fn pixels_per_frame(&self) -> Result<usize, MultiViewError> {
        let (w, h) = (self.intrinsics.width, self.intrinsics.height);
        w.checked_mul(h)
            .filter(|&per_frame| {
                per_frame > 0
                    && per_frame
                        .checked_mul(3 * self.len())
                        .is_some_and(|n| n == self.pixels.len())
            })
            .ok_or_else(|| {
                MultiViewError::Invalid(format!(
                    "intrinsics width {w} × height {h} do not match the {} frames' {} values",
                    self.len(),
                    self.pixels.len()
                ))
            })
    }

    /// Rays and colours of the pixels with flat indices `indices` into `[N, H, W]`.
    pub fn rays_for_pixels(&self, indices: &[usize]) -> Result<RayBatch, MultiViewError> {
        let w = self.intrinsics.width;
        let per_frame = self.pixels_per_frame()?;
        let m = indices.len();
        let mut origins = Vec::with_capacity(m * 3);
        let mut directions = Vec::with_capacity(m * 3);
        let mut colours = Vec::with_capacity(m * 3);
        for &index in indices {
            let (frame, pixel) = (index / per_frame, index % per_frame);
            let (o, d) = self.ray(frame, pixel % w, pixel / w).ok_or_else(|| {
                MultiViewError::Invalid(format!(
                    "pixel index {index} is out of range ({} pixels)",
                    self.len() * per_frame
                ))
            })?;
            origins.extend(o);
            directions.extend(d);
            colours.extend_from_slice(&self.pixels[index * 3..index * 3 + 3]);
        }
        let dev = Device::Cpu;
        Ok(RayBatch {
            origins: Tensor::from_vec(origins, (m, 3), &dev)?,
            directions: Tensor::from_vec(directions, (m, 3), &dev)?,
            colours: Tensor::from_vec(colours, (m, 3), &dev)?,
        })
    }

    /// `count` rays through pixels drawn uniformly (with replacement) from all frames; an
    /// error when `count · 3` is above [`crate::MAX_ELEMENTS`].
    pub fn sample_rays(
        &self,
        count: usize,
        rng: &mut impl Rng,
    ) -> Result<RayBatch, MultiViewError> {
        check_ray_count(count)?;
        let total = self.pixels_per_frame()? * self.len();
        let indices: Vec<usize> = (0..count).map(|_| rng.random_range(0..total)).collect();
        self.rays_for_pixels(&indices)
    }

    /// Every ray of frame `frame` in row-major pixel order, with its colours: `[H·W, 3]` each.
    pub fn image_rays(&self, frame: usize) -> Result<RayBatch, MultiViewError> {
        let per_frame = self.pixels_per_frame()?;
        if frame >= self.len() {
            return Err(MultiViewError::Invalid(format!(
                "frame {frame} is out of range ({} frames)",
                self.len()
            )));
        }
        let indices: Vec<usize> = (frame * per_frame..(frame + 1) * per_frame).collect();
        self.rays_for_pixels(&indices)
    }
}

/// Checks that `count` rays (`[count, 3]` origins, directions and colours) fit in memory.
pub(crate) fn check_ray_count(count: usize) -> Result<(), MultiViewError> {
    crate::capped_elements("MultiViewDataset::sample_rays", "count × 3", &[count, 3])?;
    Ok(())
}

/// Camera-to-world matrices `[N, 4, 4]` (OpenGL/Blender axes, as `transform_matrix`) of
/// cameras at distance `dist` from the origin looking at it with +Y up, at the given elevations
/// and azimuths in degrees (PyTorch3D's `look_at_view_transform`; `elevations` and `azimuths`
/// have the same length `N`, or one of them length 1).
pub fn orbit_camera_to_world(
    dist: f64,
    elevations: &[f64],
    azimuths: &[f64],
) -> Result<Tensor, MultiViewError> {
    let dev = Device::Cpu;
    let to_tensor = |v: &[f64]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::new(v.as_slice(), &dev)
    };
    let (r, t) = look_at_view_transform(
        &Tensor::new(&[dist as f32], &dev)?,
        &to_tensor(elevations)?,
        &to_tensor(azimuths)?,
        true,
        &Tensor::zeros((1, 3), DType::F32, &dev)?,
        &Tensor::new(&[[0f32, 1.0, 0.0]], &dev)?,
    )?;
    // Any focal length: only the extrinsics are converted.
    let cameras = PerspectiveCameras::new(
        &r,
        &t,
        &Tensor::new(&[1f32], &dev)?,
        &Tensor::zeros((1, 2), DType::F32, &dev)?,
    )?;
    Ok(blender_from_cameras(&cameras, ImageSize::new(2, 2))?.0)
}

/// Writes an 8-bit RGBA PNG atomically: colour `composited` (`[H·W·3]`) un-composited from
/// `background` with `alpha` (`[H·W]`), colour 0 where `alpha = 0`.
fn write_rgba_png(
    path: &Path,
    width: usize,
    height: usize,
    composited: &[f32],
    alpha: &[f32],
    background: [f32; 3],
) -> Result<(), MultiViewError> {
    let quantize = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let mut bytes = Vec::with_capacity(width * height * 4);
    for (rgb, &a) in composited.chunks_exact(3).zip(alpha) {
        for (&c, bg) in rgb.iter().zip(background) {
            let straight = if a > 0.0 {
                (c - bg * (1.0 - a)) / a
            } else {
                0.0
            };
            bytes.push(quantize(straight));
        }
        bytes.push(quantize(a));
    }
    let io = |source| MultiViewError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size =
        |v: usize| u32::try_from(v).map_err(|_| io(std::io::Error::other("PNG sizes are 32-bit")));
    let (w, h) = (size(width)?, size(height)?);
    let png_io = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => e,
        other => std::io::Error::other(other),
    };
    write_atomically(path, |out| {
        let mut encoder = png::Encoder::new(&mut *out, w, h);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_io)?;
        writer.write_image_data(&bytes).map_err(png_io)?;
        writer.finish().map_err(png_io)
    })
    .map_err(io)
}

/// One frame entry of a transforms file.
struct ParsedFrame {
    file_path: String,
    matrix: [[f64; 4]; 4],
}

/// Field accessors that name the file and the field in their errors.
struct Fields<'a> {
    path: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, field: &str, reason: String) -> MultiViewError {
        MultiViewError::BadField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            reason,
        }
    }

    fn get<'v>(&self, obj: &'v Value, field: &str) -> Result<&'v Value, MultiViewError> {
        obj.get(field).ok_or_else(|| MultiViewError::MissingField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
        })
    }

    fn f64(&self, obj: &Value, field: &str) -> Result<f64, MultiViewError> {
        let v = self.get(obj, field)?;
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.bad(field, format!("expected a finite number, got {v}")))
    }

    fn size(&self, obj: &Value, field: &str) -> Result<usize, MultiViewError> {
        let v = self.get(obj, field)?;
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .filter(|&x| x > 0)
            .ok_or_else(|| self.bad(field, format!("expected a positive integer, got {v}")))
    }

    fn frames<'v>(&self, doc: &'v Value) -> Result<&'v [Value], MultiViewError> {
        let frames = self
            .get(doc, "frames")?
            .as_array()
            .ok_or_else(|| self.bad("frames", "not a list".into()))?;
        if frames.len() > MAX_FRAMES {
            return Err(MultiViewError::TooLarge {
                path: self.path.to_path_buf(),
                what: format!("{} frames (at most {MAX_FRAMES})", frames.len()),
            });
        }
        Ok(frames)
    }

    fn frame(&self, frame: &Value, i: usize) -> Result<ParsedFrame, MultiViewError> {
        let field = |name: &str| format!("frames[{i}].{name}");
        let file_path = frame
            .get("file_path")
            .ok_or_else(|| MultiViewError::MissingField {
                path: self.path.to_path_buf(),
                field: field("file_path"),
            })?
            .as_str()
            .ok_or_else(|| self.bad(&field("file_path"), "not a string".into()))?
            .to_string();
        let matrix_value =
            frame
                .get("transform_matrix")
                .ok_or_else(|| MultiViewError::MissingField {
                    path: self.path.to_path_buf(),
                    field: field("transform_matrix"),
                })?;
        let bad_matrix = || {
            self.bad(
                &field("transform_matrix"),
                format!("expected 4 rows of 4 finite numbers, got {matrix_value}"),
            )
        };
        let rows = matrix_value.as_array().ok_or_else(bad_matrix)?;
        // Some exporters write only the upper 3×4 rows; the last row is always (0, 0, 0, 1).
        if rows.len() != 4 && rows.len() != 3 {
            return Err(bad_matrix());
        }
        let mut matrix = [[0.0, 0.0, 0.0, 1.0]; 4];
        for (r, row) in rows.iter().enumerate() {
            let row = row
                .as_array()
                .filter(|c| c.len() == 4)
                .ok_or_else(bad_matrix)?;
            for (c, value) in row.iter().enumerate() {
                matrix[r][c] = value
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(bad_matrix)?;
            }
        }
        Ok(ParsedFrame { file_path, matrix })
    }

    /// A frame's intrinsics: per-frame values override the top-level ones (nerfstudio).
    fn nerfstudio_intrinsics(
        &self,
        doc: &Value,
        frame: &Value,
        i: usize,
    ) -> Result<Intrinsics, MultiViewError> {
        let pick = |name: &str| -> &Value {
            if frame.get(name).is_some() {
                frame
            } else {
                doc
            }
        };
        let named = |name: &str| {
            if frame.get(name).is_some() {
                format!("frames[{i}].{name}")
            } else {
                name.to_string()
            }
        };
        let number = |name: &str| {
            self.f64(pick(name), name)
                .map_err(|e| rename_field(e, &named(name)))
        };
        let size = |name: &str| {
            self.size(pick(name), name)
                .map_err(|e| rename_field(e, &named(name)))
        };
        let intrinsics = Intrinsics {
            fx: number("fl_x")?,
            fy: number("fl_y")?,
            cx: number("cx")?,
            cy: number("cy")?,
            width: size("w")?,
            height: size("h")?,
        };
        intrinsics
            .check()
            .map_err(|reason| self.bad(&format!("frames[{i}] intrinsics"), reason))?;
        Ok(intrinsics)
    }
}

fn rename_field(error: MultiViewError, field: &str) -> MultiViewError {
    match error {
        MultiViewError::MissingField { path, .. } => MultiViewError::MissingField {
            path,
            field: field.to_string(),
        },
        MultiViewError::BadField { path, reason, .. } => MultiViewError::BadField {
            path,
            field: field.to_string(),
            reason,
        },
        other => other,
    }
}

fn read_json(path: &Path) -> Result<Value, MultiViewError> {
    let io = |source| MultiViewError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_JSON_BYTES {
        return Err(MultiViewError::TooLarge {
            path: path.to_path_buf(),
            what: format!("{len} bytes of JSON (at most {MAX_JSON_BYTES})"),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|source| MultiViewError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// `./train/r_0` and `train/r_0` name the same file.
fn normalise_relative(p: &str) -> String {
    p.trim_start_matches("./").to_string()
}

/// Blender datasets write `file_path` without the extension.
fn with_png_extension(file_path: &str) -> PathBuf {
    let path = PathBuf::from(file_path);
    if path.extension().is_some() {
        path
    } else {
        PathBuf::from(format!("{file_path}.png"))
    }
}

/// Decoded frames of one split.
struct LoadedFrames {
    width: usize,
    height: usize,
    colours: Vec<f32>,
    alpha: Option<Vec<f32>>,
}

/// Reads and composites every frame; all must share one size (`expected` when given).
fn load_frames(
    root: &Path,
    json_path: &Path,
    frames: &[ParsedFrame],
    background: [f32; 3],
    expected: Option<(usize, usize)>,
) -> Result<LoadedFrames, MultiViewError> {
    let mut size = expected;
    let mut colours = Vec::new();
    let mut alpha: Option<Vec<f32>> = None;
    for (index, frame) in frames.iter().enumerate() {
        let path = root.join(with_png_extension(&frame.file_path));
        let decoded =
            ImageF32::read_png_with_alpha(&path).map_err(|source| MultiViewError::Image {
                path: path.clone(),
                source,
            })?;
        let got = (decoded.color.width, decoded.color.height);
        let want = *size.get_or_insert(got);
        if got != want {
            return Err(MultiViewError::ImageSize {
                path,
                expected: want,
                got,
            });
        }
        if index == 0 {
            let samples = frames
                .len()
                .checked_mul(got.0)
                .and_then(|v| v.checked_mul(got.1))
                .and_then(|v| v.checked_mul(3))
                .filter(|&v| v <= MAX_DATASET_SAMPLES)
                .ok_or_else(|| MultiViewError::TooLarge {
                    path: json_path.to_path_buf(),
                    what: format!(
                        "{} frames of {}×{} exceed {MAX_DATASET_SAMPLES} samples",
                        frames.len(),
                        got.0,
                        got.1
                    ),
                })?;
            colours.reserve_exact(samples);
        }
        let pixels = got.0 * got.1;
        let grey = decoded.color.channels == 1;
        let frame_alpha = decoded.alpha.as_ref().map(|a| &a.data);
        for p in 0..pixels {
            let a = frame_alpha.map_or(1.0, |a| a[p]);
            for (ch, bg) in background.iter().enumerate() {
                let c = if grey {
                    decoded.color.data[p]
                } else {
                    decoded.color.data[3 * p + ch]
                };
                colours.push(c * a + bg * (1.0 - a));
            }
        }
        // Frames without alpha among frames with alpha are opaque.
        match (&mut alpha, frame_alpha) {
            (Some(all), Some(a)) => all.extend_from_slice(a),
            (Some(all), None) => all.extend(std::iter::repeat_n(1.0, pixels)),
            (None, Some(a)) => {
                let mut all = vec![1.0; index * pixels];
                all.extend_from_slice(a);
                alpha = Some(all);
            }
            (None, None) => {}
        }
    }
    let (width, height) = size.unwrap_or((0, 0));
    Ok(LoadedFrames {
        width,
        height,
        colours,
        alpha,
    })
}

impl LoadedFrames {
    fn into_dataset(
        self,
        split: Split,
        intrinsics: Intrinsics,
        frames: Vec<ParsedFrame>,
    ) -> Result<MultiViewDataset, MultiViewError> {
        let (n, h, w) = (frames.len(), self.height, self.width);
        let dev = Device::Cpu;
        let images = Tensor::from_vec(self.colours, (n, h, w, 3), &dev)?;
        let alpha = self
            .alpha
            .map(|a| Tensor::from_vec(a, (n, h, w, 1), &dev))
            .transpose()?;
        let matrices: Vec<f32> = frames
            .iter()
            .flat_map(|f| f.matrix.iter().flatten().map(|&v| v as f32))
            .collect();
        let camera_to_world = Tensor::from_vec(matrices, (n, 4, 4), &dev)?;
        let mut dataset = MultiViewDataset::new(split, images, alpha, camera_to_world, intrinsics)?;
        // Keep the f64 poses as read, not their f32 rounding.
        for (pose, frame) in dataset.poses.iter_mut().zip(&frames) {
            *pose = [frame.matrix[0], frame.matrix[1], frame.matrix[2]];
        }
        dataset.file_paths = frames.into_iter().map(|f| f.file_path).collect();
        Ok(dataset)
    }
}

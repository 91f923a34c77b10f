//! Float images: PNG read/write, animated GIF write (turntables) and read.
//!
//! [`ImageF32`] holds row-major `[H, W, C]` samples (C = 1 grey or 3 RGB), nominally in `[0, 1]`.
//! Samples are the file's encoded values divided by the format maximum (255 or 65535): no gamma
//! or colour-space conversion is applied, in either direction.
//!
//! Readers check sizes before allocating: a PNG's declared pixel data must be producible from
//! the file's bytes (deflate expands at most 1032:1), and decoded images are capped at
//! [`MAX_PIXELS`].

use std::borrow::Borrow;
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::atomic::write_atomically;

/// Largest image (or GIF canvas) decoded: 2²⁶ pixels, e.g. 8192 × 8192.
pub const MAX_PIXELS: usize = 1 << 26;

/// Deflate cannot expand data by more than about 1032:1; a PNG claiming more is lying.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// NeuQuant sampling factor for RGB GIF frames: 10 is the gif crate's speed/quality compromise.
const GIF_QUANTIZE_SPEED: i32 = 10;

/// Errors from building, converting, reading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The PNG decoder rejected the data.
    #[error("PNG decoding failed: {0}")]
    PngDecode(#[from] png::DecodingError),
    /// The GIF decoder rejected the data.
    #[error("GIF decoding failed: {0}")]
    GifDecode(#[from] gif::DecodingError),
    /// Width or height is zero.
    #[error("image is empty ({width}×{height})")]
    Empty { width: usize, height: usize },
    /// Only 1 (grey) and 3 (RGB) channels are supported.
    #[error("{0} channels: only 1 (grey) or 3 (RGB) are supported")]
    UnsupportedChannels(usize),
    /// `data.len()` is not `width · height · channels`.
    #[error("{len} samples for a {width}×{height}×{channels} image")]
    LengthMismatch {
        width: usize,
        height: usize,
        channels: usize,
        len: usize,
    },
    /// The image is larger than [`MAX_PIXELS`] or than the format can store.
    #[error("{width}×{height} is too large: {reason}")]
    TooLarge {
        width: usize,
        height: usize,
        reason: String,
    },
    /// A PNG declares more pixel data than its compressed bytes can hold.
    #[error(
        "PNG declares {declared} bytes of pixel data but the file has only {file_bytes} bytes"
    )]
    PngSizeExceedsData { declared: u64, file_bytes: usize },
    /// The tensor is neither `[C, H, W]` nor `[H, W]`.
    #[error("expected a [C, H, W] or [H, W] tensor, got shape {0:?}")]
    BadTensorShape(Vec<usize>),
    /// A GIF needs at least one frame.
    #[error("no frames to write")]
    NoFrames,
    /// Frames of one GIF must share a size.
    #[error("frame {index} is {got:?} (width, height) but frame 0 is {expected:?}")]
    FrameSizeMismatch {
        index: usize,
        expected: (usize, usize),
        got: (usize, usize),
    },
    /// A tensor operation failed.
    #[error("tensor conversion: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// A float image, row-major `[H, W, C]` with `C` = 1 (grey) or 3 (RGB), values nominally in `[0, 1]`.
///
/// The fields are public for convenience; every function taking an image re-checks that
/// `data.len() == width · height · channels` and returns [`ImageError`] otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height · width · channels` samples, `[H, W, C]` order.
    pub data: Vec<f32>,
}

/// A decoded PNG: its colour (grey or RGB) and, when the file has one, its alpha channel
/// (including alpha made from a `tRNS` chunk).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageWithAlpha {
    /// Grey or RGB samples.
    pub color: ImageF32,
    /// One-channel alpha in `[0, 1]`, or `None` for an opaque file.
    pub alpha: Option<ImageF32>,
}

/// How many times an animated GIF plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GifRepeat {
    /// Loops forever (turntables).
    #[default]
    Infinite,
    /// Plays once and then repeats this many more times (NETSCAPE2.0 loop count).
    Finite(u16),
}

impl ImageF32 {
    /// An image from `[H, W, C]` samples, checked for shape consistency.
    pub fn new(
        width: usize,
        height: usize,
        channels: usize,
        data: Vec<f32>,
    ) -> Result<Self, ImageError> {
        let image = Self {
            width,
            height,
            channels,
            data,
        };
        image.check()?;
        Ok(image)
    }

    /// An all-zero (black) image. Unsupported channels, an empty size or one above
    /// [`MAX_PIXELS`] are errors, checked before allocating.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Result<Self, ImageError> {
        if channels != 1 && channels != 3 {
            return Err(ImageError::UnsupportedChannels(channels));
        }
        check_pixel_count(width, height)?;
        let len = sample_count(width, height, channels)?;
        Self::new(width, height, channels, vec![0.0; len])
    }

    /// The samples of pixel `(x, y)` (`channels` values), or `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<&[f32]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let start = (y * self.width + x) * self.channels;
        self.data.get(start..start + self.channels)
    }

    /// The image as an `f32` tensor `[C, H, W]` on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, ImageError> {
        self.check()?;
        let hwc = Tensor::from_slice(&self.data, (self.height, self.width, self.channels), device)?;
        Ok(hwc.permute((2, 0, 1))?.contiguous()?)
    }

    /// An image from a `[C, H, W]` (C = 1 or 3) or `[H, W]` (grey) tensor of any float dtype.
    pub fn from_tensor(tensor: &Tensor) -> Result<Self, ImageError> {
        let chw = match tensor.dims() {
            &[_, _] => tensor.unsqueeze(0)?,
            &[_, _, _] => tensor.clone(),
            other => return Err(ImageError::BadTensorShape(other.to_vec())),
        };
        let (channels, height, width) = chw.dims3()?;
        if channels != 1 && channels != 3 {
            return Err(ImageError::UnsupportedChannels(channels));
        }
        let data = chw
            .to_dtype(DType::F32)?
            .permute((1, 2, 0))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::new(width, height, channels, data)
    }

    /// Writes an 8-bit grey or RGB PNG atomically. Samples are clamped to `[0, 1]` and rounded to
    /// the nearest of 256 levels; NaN is written as 0.
    pub fn write_png(&self, path: impl AsRef<Path>) -> Result<(), ImageError> {
        self.check()?;
        let too_large = |reason: &str| ImageError::TooLarge {
            width: self.width,
            height: self.height,
            reason: reason.to_string(),
        };
        let width = u32::try_from(self.width).map_err(|_| too_large("PNG sizes are 32-bit"))?;
        let height = u32::try_from(self.height).map_err(|_| too_large("PNG sizes are 32-bit"))?;
        let color = if self.channels == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        };
        let bytes: Vec<u8> = self.data.iter().map(|&v| quantize_u8(v)).collect();
        let path = path.as_ref();
        write_atomically(path, |w| {
            let mut encoder = png::Encoder::new(&mut *w, width, height);
            encoder.set_color(color);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(png_io)?;
            writer.write_image_data(&bytes).map_err(png_io)?;
            writer.finish().map_err(png_io)
        })
        .map_err(|source| io_error(path, source))
    }

    /// Reads a PNG as grey or RGB, dropping any alpha (see [`ImageF32::read_png_with_alpha`]).
    ///
    /// Accepts every PNG colour type and bit depth: grey, grey+alpha, RGB, RGBA, palette
    /// (expanded), 1/2/4/8/16 bit. Grey stays one channel; 16-bit samples keep full precision.
    pub fn read_png(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        Ok(Self::read_png_with_alpha(path)?.color)
    }

    /// Reads a PNG, keeping its alpha channel separately when it has one.
    pub fn read_png_with_alpha(path: impl AsRef<Path>) -> Result<ImageWithAlpha, ImageError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| io_error(path, source))?;
        Self::decode_png(&bytes)
    }

    /// Decodes a whole PNG file held in memory (first frame of an APNG).
    pub fn decode_png(bytes: &[u8]) -> Result<ImageWithAlpha, ImageError> {
        let mut decoder = png::Decoder::new(Cursor::new(bytes));
        // Palette → RGB(A), grey below 8 bits → 8 bits, tRNS → alpha; 16 bits stay 16.
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info()?;
        let info = reader.info();
        let (width, height) = (info.width as usize, info.height as usize);
        let raw_bytes = raw_png_bytes(info);
        if raw_bytes > (bytes.len() as u64).saturating_mul(DEFLATE_MAX_RATIO) {
            return Err(ImageError::PngSizeExceedsData {
                declared: raw_bytes,
                file_bytes: bytes.len(),
            });
        }
        check_pixel_count(width, height)?;
        let (color_type, depth) = reader.output_color_type();
        let samples = color_type.samples();
        let bytes_per_sample = if depth == png::BitDepth::Sixteen {
            2
        } else {
            1
        };
        // Bounded by MAX_PIXELS × 4 samples × 2 bytes.
        let mut buf = vec![0u8; width * height * samples * bytes_per_sample];
        reader.next_frame(&mut buf)?;

        let max = if bytes_per_sample == 2 {
            65535.0
        } else {
            255.0
        };
        let decoded: Vec<f32> = if bytes_per_sample == 2 {
            buf.chunks_exact(2)
                .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) / max)
                .collect()
        } else {
            buf.iter().map(|&b| f32::from(b) / max).collect()
        };
        drop(buf);
        let has_alpha = matches!(
            color_type,
            png::ColorType::GrayscaleAlpha | png::ColorType::Rgba
        );
        let color_channels = if samples <= 2 { 1 } else { 3 };
        if !has_alpha {
            let color = Self::new(width, height, color_channels, decoded)?;
            return Ok(ImageWithAlpha { color, alpha: None });
        }
        let mut color = Vec::with_capacity(width * height * color_channels);
        let mut alpha = Vec::with_capacity(width * height);
        for pixel in decoded.chunks_exact(samples) {
            let (c, a) = pixel.split_at(color_channels);
            color.extend_from_slice(c);
            alpha.extend_from_slice(a);
        }
        Ok(ImageWithAlpha {
            color: Self::new(width, height, color_channels, color)?,
            alpha: Some(Self::new(width, height, 1, alpha)?),
        })
    }

    /// The image as 8-bit RGB bytes (grey replicated), clamped and rounded like [`Self::write_png`].
    fn to_rgb8(&self) -> Vec<u8> {
        if self.channels == 3 {
            self.data.iter().map(|&v| quantize_u8(v)).collect()
        } else {
            self.data
                .iter()
                .flat_map(|&v| [quantize_u8(v); 3])
                .collect()
        }
    }

    fn check(&self) -> Result<(), ImageError> {
        if self.channels != 1 && self.channels != 3 {
            return Err(ImageError::UnsupportedChannels(self.channels));
        }
        let len = sample_count(self.width, self.height, self.channels)?;
        if self.data.len() != len {
            return Err(ImageError::LengthMismatch {
                width: self.width,
                height: self.height,
                channels: self.channels,
                len: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Writes an animated GIF atomically, one frame per image, each shown for `delay_cs`
/// hundredths of a second.
///
/// Grey frames are indexed exactly into a global 256-level grey palette. RGB frames are
/// quantised to a per-frame (local) 256-colour palette with the gif crate's NeuQuant
/// (`Frame::from_rgb_speed`, speed 10); a frame that is RGB but happens to be grey is still
/// quantised. All frames must share width and height (at most 65535 each).
///
/// `frames` may be a slice (`&[ImageF32]`) or any iterator of images, so a long turntable can be
/// rendered frame by frame without holding every frame in memory.
pub fn write_gif<I>(
    path: impl AsRef<Path>,
    frames: I,
    delay_cs: u16,
    repeat: GifRepeat,
) -> Result<(), ImageError>
where
    I: IntoIterator,
    I::Item: Borrow<ImageF32>,
{
    let path = path.as_ref();
    let mut frames = frames.into_iter().peekable();
    let (width, height) = match frames.peek() {
        Some(first) => {
            let first: &ImageF32 = first.borrow();
            first.check()?;
            (first.width, first.height)
        }
        None => return Err(ImageError::NoFrames),
    };
    let too_large = ImageError::TooLarge {
        width,
        height,
        reason: "GIF sizes are at most 65535".to_string(),
    };
    let (Ok(width16), Ok(height16)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(too_large);
    };
    let grey_palette: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();

    // A frame that fails validation aborts the write; `write_atomically` then leaves no file.
    let mut frame_error = None;
    let written = write_atomically(path, |w| {
        let mut encoder =
            gif::Encoder::new(&mut *w, width16, height16, &grey_palette).map_err(gif_io)?;
        encoder
            .set_repeat(match repeat {
                GifRepeat::Infinite => gif::Repeat::Infinite,
                GifRepeat::Finite(n) => gif::Repeat::Finite(n),
            })
            .map_err(gif_io)?;
        for (index, image) in frames.enumerate() {
            let image: &ImageF32 = image.borrow();
            if let Err(e) = check_gif_frame(image, index, (width, height)) {
                frame_error = Some(e);
                return Err(std::io::Error::other("invalid frame"));
            }
            let mut frame = if image.channels == 1 {
                let indices: Vec<u8> = image.data.iter().map(|&v| quantize_u8(v)).collect();
                gif::Frame::from_indexed_pixels(width16, height16, indices, None)
            } else {
                gif::Frame::from_rgb_speed(width16, height16, &image.to_rgb8(), GIF_QUANTIZE_SPEED)
            };
            frame.delay = delay_cs;
            encoder.write_frame(&frame).map_err(gif_io)?;
        }
        encoder.into_inner().map_err(gif_io)?;
        Ok(())
    });
    match (written, frame_error) {
        (_, Some(e)) => Err(e),
        (Err(source), None) => Err(io_error(path, source)),
        (Ok(()), None) => Ok(()),
    }
}

/// Frames of a GIF, composited onto the logical screen as a viewer shows them, yielded as RGB
/// images of the screen size. Created by [`read_gif`].
///
/// Compositing follows the GIF89a disposal methods (keep, restore to background, restore to
/// previous); the background and transparent areas read as black (0), as the alpha channel is
/// dropped.
pub struct GifFrames {
    decoder: gif::Decoder<BufReader<std::fs::File>>,
    width: usize,
    height: usize,
    /// RGBA of the logical screen, `[H, W, 4]`.
    canvas: Vec<u8>,
    /// Canvas saved before a frame whose disposal is "restore to previous".
    saved: Option<Vec<u8>>,
    /// Disposal owed by the previous frame: (method, left, top, width, height).
    pending_disposal: Option<(gif::DisposalMethod, usize, usize, usize, usize)>,
    /// RGBA of the current frame's rectangle.
    frame_rgba: Vec<u8>,
    failed: bool,
}

/// Opens a GIF for frame-by-frame reading; see [`GifFrames`].
///
/// The logical screen is capped at [`MAX_PIXELS`]; so is each frame's rectangle.
pub fn read_gif(path: impl AsRef<Path>) -> Result<GifFrames, ImageError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| io_error(path, source))?;
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let decoder = options.read_info(BufReader::new(file))?;
    let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
    check_pixel_count(width, height)?;
    Ok(GifFrames {
        decoder,
        width,
        height,
        canvas: vec![0; width * height * 4],
        saved: None,
        pending_disposal: None,
        frame_rgba: Vec::new(),
        failed: false,
    })
}

impl GifFrames {
    /// Width and height of the logical screen (every yielded frame's size).
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn next_frame(&mut self) -> Result<Option<ImageF32>, ImageError> {
        self.apply_pending_disposal();
        let Some(frame) = self.decoder.next_frame_info()? else {
            return Ok(None);
        };
        let (left, top) = (usize::from(frame.left), usize::from(frame.top));
        let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
        let dispose = frame.dispose;
        // u16 × u16 cannot overflow; an empty frame rectangle is legal and draws nothing.
        if fw * fh > MAX_PIXELS {
            return Err(ImageError::TooLarge {
                width: fw,
                height: fh,
                reason: format!("frame of more than {MAX_PIXELS} pixels"),
            });
        }
        self.frame_rgba.clear();
        self.frame_rgba.resize(fw * fh * 4, 0);
        self.decoder.read_into_buffer(&mut self.frame_rgba)?;

        if dispose == gif::DisposalMethod::Previous {
            self.saved = Some(self.canvas.clone());
        }
        // Frames may extend past the screen; only the overlap is drawn.
        for row in 0..fh.min(self.height.saturating_sub(top)) {
            for col in 0..fw.min(self.width.saturating_sub(left)) {
                let src = (row * fw + col) * 4;
                let dst = ((top + row) * self.width + left + col) * 4;
                if self.frame_rgba[src + 3] != 0 {
                    self.canvas[dst..dst + 4].copy_from_slice(&self.frame_rgba[src..src + 4]);
                }
            }
        }
        self.pending_disposal = Some((dispose, left, top, fw, fh));

        let data = self
            .canvas
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0))
            .collect();
        ImageF32::new(self.width, self.height, 3, data).map(Some)
    }

    fn apply_pending_disposal(&mut self) {
        match self.pending_disposal.take() {
            Some((gif::DisposalMethod::Background, left, top, fw, fh)) => {
                for row in top..(top + fh).min(self.height) {
                    let start = (row * self.width + left.min(self.width)) * 4;
                    let end = (row * self.width + (left + fw).min(self.width)) * 4;
                    self.canvas[start..end].fill(0);
                }
            }
            Some((gif::DisposalMethod::Previous, ..)) => {
                if let Some(saved) = self.saved.take() {
                    self.canvas = saved;
                }
            }
            _ => {}
        }
    }
}

impl Iterator for GifFrames {
    type Item = Result<ImageF32, ImageError>;

    /// The next composited frame; after an error, iteration ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_frame().transpose();
        if matches!(next, Some(Err(_))) {
            self.failed = true;
        }
        next
    }
}

fn check_gif_frame(
    image: &ImageF32,
    index: usize,
    expected: (usize, usize),
) -> Result<(), ImageError> {
    image.check()?;
    if (image.width, image.height) != expected {
        return Err(ImageError::FrameSizeMismatch {
            index,
            expected,
            got: (image.width, image.height),
        });
    }
    Ok(())
}

/// `width · height · channels`, rejecting empty images and overflow.
fn sample_count(width: usize, height: usize, channels: usize) -> Result<usize, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    width
        .checked_mul(height)
        .and_then(|p| p.checked_mul(channels))
        .ok_or_else(|| ImageError::TooLarge {
            width,
            height,
            reason: "sample count overflows".to_string(),
        })
}

/// Checks that a `width × height` image is not empty and has at most [`MAX_PIXELS`] pixels
/// ([`ImageError::Empty`], [`ImageError::TooLarge`]): the check to make before allocating an
/// image whose size comes from outside.
pub fn check_pixel_count(width: usize, height: usize) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    match width.checked_mul(height) {
        Some(pixels) if pixels <= MAX_PIXELS => Ok(()),
        _ => Err(ImageError::TooLarge {
            width,
            height,
            reason: format!("more than {MAX_PIXELS} pixels"),
        }),
    }
}

/// Bytes of filtered scanlines the PNG's deflate stream must produce (before any expansion).
fn raw_png_bytes(info: &png::Info) -> u64 {
    let bits_per_pixel = info.color_type.samples() as u64 * info.bit_depth as u64;
    let row_bytes = (u64::from(info.width) * bits_per_pixel).div_ceil(8);
    // One filter-type byte per row.
    u64::from(info.height) * (row_bytes + 1)
}

/// `[0, 1]` → `0..=255`, clamped and rounded; NaN → 0.
fn quantize_u8(v: f32) -> u8 {
    // `as` saturates and maps NaN to 0.
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn io_error(path: &Path, source: std::io::Error) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn png_io(e: png::EncodingError) -> std::io::Error {
    match e {
        png::EncodingError::IoError(e) => e,
        other => std::io::Error::other(other),
    }
}

fn gif_io(e: gif::EncodingError) -> std::io::Error {
    match e {
        gif::EncodingError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

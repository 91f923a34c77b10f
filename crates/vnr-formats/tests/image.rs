//! PNG and GIF I/O: fixture images (truths from PIL), round trips, every PNG colour type.

use candle_core::{Device, Tensor};
use vnr_formats::image::{read_gif, write_gif, GifRepeat, ImageError, ImageF32};
use vnr_formats::testing::fixture;

/// Sums of `round(v · 255)` per channel: comparable with integer sums of the 8-bit file.
fn channel_sums(image: &ImageF32) -> Vec<i64> {
    let mut sums = vec![0i64; image.channels];
    for pixel in image.data.chunks_exact(image.channels) {
        for (s, v) in sums.iter_mut().zip(pixel) {
            *s += (v * 255.0).round() as i64;
        }
    }
    sums
}

/// A deterministic test pattern with values on the 8-bit grid.
fn pattern(width: usize, height: usize, channels: usize, seed: usize) -> ImageF32 {
    let data = (0..width * height * channels)
        .map(|i| ((i * 37 + seed * 101) % 256) as f32 / 255.0)
        .collect();
    ImageF32::new(width, height, channels, data).unwrap()
}

/// Encodes a PNG with the png crate directly, for colour types our writer does not produce.
fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<(&[u8], &[u8])>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if let Some((rgb, trns)) = palette {
            encoder.set_palette(rgb.to_vec());
            encoder.set_trns(trns.to_vec());
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
    }
    out
}

#[test]
fn rendernet_rgba_pngs_match_pil() {
    // (file, per-channel sums of R, G, B, A from PIL, pixel (x=300, y=100) RGBA)
    let cases = [
        (
            "rendernet/ply80024_p294_t105_r3.3_albedo.png",
            [63_100_289i64, 60_205_007, 58_370_668, 66_846_720],
            [255.0, 255.0, 255.0, 255.0],
        ),
        (
            "rendernet/ply80024_p294_t105_r3.3_normal.png",
            [57_828_197, 59_071_263, 64_687_043, 16_622_175],
            [255.0, 255.0, 255.0, 0.0],
        ),
    ];
    for (name, sums, pixel) in cases {
        let Some(path) = fixture(name) else { continue };
        let read = ImageF32::read_png_with_alpha(&path).unwrap();
        let alpha = read.alpha.expect("RGBA file has alpha");
        assert_eq!(
            (read.color.width, read.color.height, read.color.channels),
            (512, 512, 3)
        );
        assert_eq!((alpha.width, alpha.height, alpha.channels), (512, 512, 1));
        assert_eq!(channel_sums(&read.color), sums[..3].to_vec(), "{name}");
        assert_eq!(channel_sums(&alpha), vec![sums[3]], "{name}");
        let rgb: Vec<f32> = read
            .color
            .pixel(300, 100)
            .unwrap()
            .iter()
            .map(|v| v * 255.0)
            .collect();
        assert_eq!(rgb, pixel[..3].to_vec(), "{name}");
        assert_eq!(
            alpha.pixel(300, 100).unwrap()[0] * 255.0,
            pixel[3],
            "{name}"
        );
        assert_eq!(ImageF32::read_png(&path).unwrap(), read.color);
    }
}

#[test]
fn png_round_trip_grey_and_rgb() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [1, 3] {
        let image = pattern(13, 7, channels, channels);
        let path = dir.path().join(format!("p{channels}.png"));
        image.write_png(&path).unwrap();
        let read = ImageF32::read_png_with_alpha(&path).unwrap();
        assert_eq!(read.alpha, None);
        assert_eq!(read.color, image);
    }
}

#[test]
fn png_write_clamps_and_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clamp.png");
    let image = ImageF32::new(6, 1, 1, vec![-0.5, 2.0, f32::NAN, 0.5, 0.2, 1.0]).unwrap();
    image.write_png(&path).unwrap();
    let read = ImageF32::read_png(&path).unwrap();
    let levels: Vec<f32> = read.data.iter().map(|v| v * 255.0).collect();
    // 0.5·255 = 127.5 rounds away from zero; 0.2·255 = 51.
    assert_eq!(levels, vec![0.0, 255.0, 0.0, 128.0, 51.0, 255.0]);
}

#[test]
fn png_every_colour_type_and_depth() {
    // 16-bit grey keeps full precision.
    let grey16: Vec<u8> = [0u16, 1, 32768, 65535]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let bytes = encode_png(
        4,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &grey16,
    );
    let read = ImageF32::decode_png(&bytes).unwrap();
    assert_eq!(read.color.channels, 1);
    assert_eq!(
        read.color.data,
        vec![0.0, 1.0 / 65535.0, 32768.0 / 65535.0, 1.0]
    );

    // 16-bit RGBA: alpha split off.
    let rgba16: Vec<u8> = [65535u16, 0, 0, 32768]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let bytes = encode_png(
        1,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Sixteen,
        None,
        &rgba16,
    );
    let read = ImageF32::decode_png(&bytes).unwrap();
    assert_eq!(read.color.data, vec![1.0, 0.0, 0.0]);
    assert_eq!(read.alpha.unwrap().data, vec![32768.0 / 65535.0]);

    // 8-bit grey + alpha stays one colour channel.
    let bytes = encode_png(
        2,
        1,
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        None,
        &[51, 255, 255, 0],
    );
    let read = ImageF32::decode_png(&bytes).unwrap();
    assert_eq!(read.color.channels, 1);
    assert_eq!(read.color.data, vec![0.2, 1.0]);
    assert_eq!(read.alpha.unwrap().data, vec![1.0, 0.0]);

    // 1-bit grey: 0b1010_0000 → 1, 0, 1.
    let bytes = encode_png(
        3,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::One,
        None,
        &[0b1010_0000],
    );
    let read = ImageF32::decode_png(&bytes).unwrap();
    assert_eq!(read.color.data, vec![1.0, 0.0, 1.0]);

    // 2-bit palette with tRNS: expanded to RGB plus alpha.
    let palette = [255u8, 0, 0, 0, 255, 0, 0, 0, 255];
    let trns = [255u8, 0];
    let bytes = encode_png(
        3,
        1,
        png::ColorType::Indexed,
        png::BitDepth::Two,
        Some((&palette, &trns)),
        &[0b0001_1000],
    );
    let read = ImageF32::decode_png(&bytes).unwrap();
    assert_eq!(read.color.channels, 3);
    assert_eq!(
        read.color.data,
        vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    );
    // Entries past the tRNS list are opaque.
    assert_eq!(read.alpha.unwrap().data, vec![1.0, 0.0, 1.0]);

    // 8-bit RGB: no alpha.
    let bytes = encode_png(
        1,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
        &[0, 51, 255],
    );
    let read = ImageF32::decode_png(&bytes).unwrap();
    assert_eq!(read.color.data, vec![0.0, 0.2, 1.0]);
    assert!(read.alpha.is_none());
}

/// CRC-32 (IEEE), as PNG chunks use, so a test can forge a consistent header.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn png_bad_input_gives_errors() {
    let good = encode_png(
        4,
        4,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
        &[7; 48],
    );
    // The last 12 bytes are the IEND chunk; without it every pixel is still there, and the
    // decoder (like libpng) accepts the image.
    let iend = good.len() - 12;
    assert_eq!(&good[iend + 4..iend + 8], b"IEND");
    for len in 0..iend {
        assert!(ImageF32::decode_png(&good[..len]).is_err(), "prefix {len}");
    }
    // A header claiming 60000 × 60000 pixels in a 70-byte file: refused before allocating.
    let mut forged = good.clone();
    forged[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    forged[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32(&forged[12..29]);
    forged[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = ImageF32::decode_png(&forged).unwrap_err();
    assert!(
        matches!(err, ImageError::PngSizeExceedsData { .. }),
        "{err:?}"
    );
    assert!(matches!(
        ImageF32::decode_png(b"not a png at all"),
        Err(ImageError::PngDecode(_))
    ));
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut mutated = good.clone();
    for _ in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % good.len() as u64) as usize;
        let old = mutated[at];
        mutated[at] = (state >> 40) as u8;
        let _ = ImageF32::decode_png(&mutated);
        mutated[at] = old;
    }
}

#[test]
fn tensor_layout_is_chw() {
    let image = pattern(4, 3, 3, 0);
    let t = image.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[3, 3, 4]);
    let values = t.to_vec3::<f32>().unwrap();
    for (c, plane) in values.iter().enumerate() {
        for (y, row) in plane.iter().enumerate() {
            for (x, &v) in row.iter().enumerate() {
                assert_eq!(v, image.pixel(x, y).unwrap()[c]);
            }
        }
    }
    assert_eq!(ImageF32::from_tensor(&t).unwrap(), image);

    let hw = Tensor::arange(0f32, 6.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    let grey = ImageF32::from_tensor(&hw).unwrap();
    assert_eq!((grey.width, grey.height, grey.channels), (3, 2, 1));
    assert_eq!(grey.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let f64_chw = hw
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert_eq!(ImageF32::from_tensor(&f64_chw).unwrap(), grey);

    let four = Tensor::zeros((4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        ImageF32::from_tensor(&four),
        Err(ImageError::UnsupportedChannels(4))
    ));
    let rank4 = four.unsqueeze(0).unwrap();
    assert!(matches!(
        ImageF32::from_tensor(&rank4),
        Err(ImageError::BadTensorShape(_))
    ));
}

#[test]
fn huge_zero_images_are_errors_not_overflows() {
    assert!(matches!(
        ImageF32::zeros(1, 1, usize::MAX),
        Err(ImageError::UnsupportedChannels(usize::MAX))
    ));
    for (width, height) in [(1 << 20, 1 << 20), (usize::MAX, usize::MAX), (1 << 40, 1)] {
        assert!(
            matches!(
                ImageF32::zeros(width, height, 1),
                Err(ImageError::TooLarge { .. })
            ),
            "{width}×{height}"
        );
    }
    assert!(matches!(
        ImageF32::zeros(0, 1, 3),
        Err(ImageError::Empty { .. })
    ));
}

#[test]
fn image_shape_checks() {
    assert!(matches!(
        ImageF32::new(2, 2, 3, vec![0.0; 11]),
        Err(ImageError::LengthMismatch { len: 11, .. })
    ));
    assert!(matches!(
        ImageF32::new(0, 2, 1, vec![]),
        Err(ImageError::Empty { .. })
    ));
    assert!(matches!(
        ImageF32::zeros(2, 2, 2),
        Err(ImageError::UnsupportedChannels(2))
    ));
    let mut broken = pattern(2, 2, 1, 0);
    broken.data.pop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.png");
    assert!(matches!(
        broken.write_png(&path),
        Err(ImageError::LengthMismatch { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn gif_write_then_decode_with_gif_crate_and_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turntable.gif");
    let (w, h) = (24, 16);
    let solid = |rgb: [f32; 3]| {
        ImageF32::new(
            w,
            h,
            3,
            rgb.iter().copied().cycle().take(w * h * 3).collect(),
        )
        .unwrap()
    };
    let frames = vec![
        solid([1.0, 0.0, 0.0]),
        solid([0.0, 0.5, 1.0]),
        pattern(w, h, 3, 1),
    ];
    write_gif(&path, &frames, 4, GifRepeat::Infinite).unwrap();

    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options
        .read_info(std::fs::File::open(&path).unwrap())
        .unwrap();
    assert_eq!((decoder.width(), decoder.height()), (24, 16));
    assert_eq!(decoder.repeat(), gif::Repeat::Infinite);
    let mut count = 0;
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        assert_eq!((frame.width, frame.height, frame.delay), (24, 16, 4));
        count += 1;
    }
    assert_eq!(count, 3);

    let read: Vec<ImageF32> = read_gif(&path).unwrap().map(Result::unwrap).collect();
    assert_eq!(read.len(), 3);
    // Solid colours survive NeuQuant within a couple of levels.
    for (got, want) in read.iter().zip(&frames).take(2) {
        for (g, w) in got.data.iter().zip(&want.data) {
            assert!((g - w).abs() <= 3.0 / 255.0, "{g} vs {w}");
        }
    }

    // Grey frames use the exact grey palette, played a finite number of times.
    let grey: Vec<ImageF32> = (0..3).map(|s| pattern(w, h, 1, s)).collect();
    write_gif(&path, grey.iter(), 10, GifRepeat::Finite(2)).unwrap();
    let mut frames_read = read_gif(&path).unwrap();
    assert_eq!(frames_read.size(), (24, 16));
    for want in &grey {
        let got = frames_read.next().unwrap().unwrap();
        let as_grey: Vec<f32> = got.data.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(as_grey, want.data);
    }
    assert!(frames_read.next().is_none());
}

#[test]
fn gif_writer_rejects_bad_frame_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gif");
    let none: [ImageF32; 0] = [];
    assert!(matches!(
        write_gif(&path, &none, 5, GifRepeat::Infinite),
        Err(ImageError::NoFrames)
    ));
    let frames = [pattern(4, 4, 3, 0), pattern(4, 5, 3, 0)];
    let err = write_gif(&path, &frames, 5, GifRepeat::Infinite).unwrap_err();
    assert!(
        matches!(err, ImageError::FrameSizeMismatch { index: 1, .. }),
        "{err:?}"
    );
    assert!(!path.exists(), "a failed write leaves no file");
    let wide = ImageF32::zeros(70_000, 1, 1).unwrap();
    assert!(matches!(
        write_gif(&path, [wide], 5, GifRepeat::Infinite),
        Err(ImageError::TooLarge { .. })
    ));
}

#[test]
fn rendernet_turntable_gifs_decode() {
    // Per-channel sums of frames 0, 1, 35 and 71, composited by PIL (grey renders: R = G = B).
    let cases = [
        (
            "rendernet/bunny.gif",
            [63_420_731i64, 63_448_395, 64_098_502, 63_400_028],
        ),
        (
            "rendernet/chair.gif",
            [65_677_778, 65_669_382, 65_651_173, 65_567_142],
        ),
    ];
    for (name, sums) in cases {
        let Some(path) = fixture(name) else { continue };
        let mut decoder = gif::DecodeOptions::new()
            .read_info(std::fs::File::open(&path).unwrap())
            .unwrap();
        let mut raw_frames = 0;
        while decoder.read_next_frame().unwrap().is_some() {
            raw_frames += 1;
        }
        assert_eq!(raw_frames, 72, "{name}");

        let frames = read_gif(&path).unwrap();
        assert_eq!(frames.size(), (512, 512));
        let mut count = 0;
        for (index, frame) in frames.enumerate() {
            let frame = frame.unwrap();
            assert_eq!((frame.width, frame.height, frame.channels), (512, 512, 3));
            let wanted = match index {
                0 => Some(sums[0]),
                1 => Some(sums[1]),
                35 => Some(sums[2]),
                71 => Some(sums[3]),
                _ => None,
            };
            if let Some(sum) = wanted {
                assert_eq!(channel_sums(&frame), vec![sum; 3], "{name} frame {index}");
            }
            count += 1;
        }
        assert_eq!(count, 72, "{name}");
    }
}

#[test]
fn gif_reader_survives_truncation_and_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.gif");
    let frames: Vec<ImageF32> = (0..2).map(|s| pattern(9, 5, 3, s)).collect();
    write_gif(&good_path, &frames, 3, GifRepeat::Infinite).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let path = dir.path().join("bad.gif");
    let decode_all = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        if let Ok(frames) = read_gif(&path) {
            // Iteration must end, at the latest after the first error.
            assert!(frames.take(1000).count() < 1000);
        }
    };
    for len in (0..good.len()).step_by(7) {
        decode_all(&good[..len]);
    }
    let mut state = 0x0bad_5eed_u64;
    let mut mutated = good.clone();
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % good.len() as u64) as usize;
        let old = mutated[at];
        mutated[at] = (state >> 24) as u8;
        decode_all(&mutated);
        mutated[at] = old;
    }
}

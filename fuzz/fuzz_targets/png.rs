//! `ImageF32::decode_png` on arbitrary bytes: never panics, and a decoded image's buffers match
//! its dimensions, with samples in [0, 1].
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnr_formats::image::ImageF32;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = ImageF32::decode_png(data) else {
        return;
    };
    let color = &decoded.color;
    assert!(color.channels == 1 || color.channels == 3);
    assert_eq!(
        color.data.len(),
        color.width * color.height * color.channels
    );
    assert!(color.data.iter().all(|v| (0.0..=1.0).contains(v)));
    if let Some(alpha) = &decoded.alpha {
        assert_eq!(
            (alpha.width, alpha.height, alpha.channels),
            (color.width, color.height, 1)
        );
        assert_eq!(alpha.data.len(), alpha.width * alpha.height);
    }
});

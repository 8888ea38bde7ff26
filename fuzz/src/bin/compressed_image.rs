//! AFL++ target: a sensor_msgs/CompressedImage payload through `decode_compressed` and preprocessing.
//! A panic (abort) is a crash; so is a decoded image that breaks what the raw path relies on.
//! With AFL_KNOWN_BUGS=skip, the known zune-jpeg size overflow (docs/fuzzing.md) is not a crash, so
//! that a run looks for new ones.

use wam_policy::preprocess::{decode_compressed, ImageBounds, ImageView, Preprocessor};

/// A JPEG whose frame says a width or height within 7 of 65 535 (zune-jpeg 0.5.15 overflows on it).
fn known_jpeg_overflow(data: &[u8]) -> bool {
    let sof = data
        .windows(2)
        .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]));
    let size = |o: usize| data.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    data.starts_with(&[0xff, 0xd8])
        && sof.is_some_and(|o| {
            [size(o + 5), size(o + 7)]
                .iter()
                .any(|v| v.is_some_and(|v| v > 65_528))
        })
}

fn main() {
    let skip_known = std::env::var("AFL_KNOWN_BUGS").is_ok_and(|v| v == "skip");
    // The node's defaults (max_image_pixels, max_compressed_bytes), and a small bound so that the
    // refusal path is reached too.
    let bounds = [
        ImageBounds {
            max_pixels: 16_777_216,
            max_compressed_bytes: 16_000_000,
        },
        ImageBounds {
            max_pixels: 100,
            max_compressed_bytes: 16_000_000,
        },
    ];
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let mut pre = Preprocessor::new(8, 6, mean, std);
    let mut values = vec![0f32; pre.output_len()];
    let mut rgb = Vec::new();
    afl::fuzz!(|data: &[u8]| {
        if skip_known && known_jpeg_overflow(data) {
            return;
        }
        let b = &bounds[data.last().map_or(0, |x| (x & 1) as usize)];
        let Ok((w, h)) = decode_compressed(data, &mut rgb, b) else {
            return;
        };
        assert!(
            w > 0 && h > 0 && (w as u64) * (h as u64) <= b.max_pixels,
            "{w}x{h}"
        );
        assert_eq!(rgb.len(), w * h * 3);
        let view =
            ImageView::new(w, h, w * 3, "rgb8", &rgb).expect("a decoded image is a valid view");
        pre.process(&view, &mut values)
            .expect("a valid view is processed");
        for (i, v) in values.iter().enumerate() {
            let c = i / 48;
            let (lo, hi) = ((0.0 - mean[c]) / std[c], (1.0 - mean[c]) / std[c]);
            assert!(v.is_finite() && *v >= lo && *v <= hi, "{v} at {i}");
        }
    });
}

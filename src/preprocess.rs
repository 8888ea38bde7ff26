//! Camera image -> model input: encoding conversion to packed RGB, resize to the bundle's size, normalization
//! and CHW f32 layout, written into a caller's slot. Scratch buffers are kept between calls and only grow when
//! a camera's size changes, so the steady state does not allocate.

use fast_image_resize::{
    images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
    Mono8,
}

impl Encoding {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rgb8" => Some(Encoding::Rgb8),
            "bgr8" => Some(Encoding::Bgr8),
            "rgba8" => Some(Encoding::Rgba8),
            "bgra8" => Some(Encoding::Bgra8),
            "mono8" | "8UC1" => Some(Encoding::Mono8),
            _ => None,
        }
    }
    pub fn channels(self) -> usize {
        match self {
            Encoding::Rgb8 | Encoding::Bgr8 => 3,
            Encoding::Rgba8 | Encoding::Bgra8 => 4,
            Encoding::Mono8 => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("unsupported encoding `{0}` (expected rgb8, bgr8, rgba8, bgra8 or mono8)")]
    UnsupportedEncoding(String),
    #[error("image has zero size ({width}x{height})")]
    ZeroSize { width: usize, height: usize },
    #[error("row step {step} is smaller than width x channels ({min})")]
    StepTooSmall { step: usize, min: usize },
    #[error("data has {got} bytes, step x height needs {expected}")]
    DataTooShort { expected: usize, got: usize },
    #[error("cannot decode compressed image: {0}")]
    Decode(String),
    #[error("image of {width}x{height} has more than max_image_pixels ({max}) pixels or a side over 32768")]
    TooLarge { width: u64, height: u64, max: u64 },
    #[error("compressed image of {bytes} bytes is larger than max_compressed_bytes ({max})")]
    CompressedTooLarge { bytes: usize, max: usize },
}

impl ImageError {
    /// A short stable name for counting and rate-limited logging.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::UnsupportedEncoding(_) => "image_encoding",
            ImageError::ZeroSize { .. } => "image_zero_size",
            ImageError::StepTooSmall { .. } => "image_step",
            ImageError::DataTooShort { .. } => "image_data_short",
            ImageError::Decode(_) => "image_decode",
            ImageError::TooLarge { .. } => "image_too_large",
            ImageError::CompressedTooLarge { .. } => "image_compressed_too_large",
        }
    }
}

/// A borrowed image as a sensor_msgs/Image carries it.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub width: usize,
    pub height: usize,
    /// Bytes per row, at least width x channels (rows may be padded).
    pub step: usize,
    pub encoding: Encoding,
    pub data: &'a [u8],
}

impl<'a> ImageView<'a> {
    /// Validates a raw message's fields.
    pub fn new(
        width: usize,
        height: usize,
        step: usize,
        encoding: &str,
        data: &'a [u8],
    ) -> Result<Self, ImageError> {
        let encoding = Encoding::parse(encoding)
            .ok_or_else(|| ImageError::UnsupportedEncoding(encoding.to_string()))?;
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSize { width, height });
        }
        // Checked: the fields come from outside, and a product that wraps would accept short data.
        let min = width
            .checked_mul(encoding.channels())
            .ok_or(ImageError::StepTooSmall {
                step,
                min: usize::MAX,
            })?;
        if step < min {
            return Err(ImageError::StepTooSmall { step, min });
        }
        // The last row needs only its pixels, not its padding; ROS publishers always send step x height.
        let expected = step.checked_mul(height).ok_or(ImageError::DataTooShort {
            expected: usize::MAX,
            got: data.len(),
        })?;
        if data.len() < expected {
            return Err(ImageError::DataTooShort {
                expected,
                got: data.len(),
            });
        }
        Ok(ImageView {
            width,
            height,
            step,
            encoding,
            data,
        })
    }
}

/// How an image of another size or aspect ratio becomes the model's size (`cameras[i].resize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizePolicy {
    /// Scale each axis on its own to the model's size (the aspect ratio changes when they differ).
    #[default]
    Squash,
    /// Scale to fit inside the model's size keeping the aspect ratio, centred, the borders black.
    Letterbox,
    /// Crop the largest centred region with the model's aspect ratio, then scale it.
    CenterCrop,
}

impl ResizePolicy {
    pub fn name(self) -> &'static str {
        match self {
            ResizePolicy::Squash => "squash",
            ResizePolicy::Letterbox => "letterbox",
            ResizePolicy::CenterCrop => "center_crop",
        }
    }
}

/// The size a `width` x `height` image is scaled to when letterboxed into `out_w` x `out_h`: the axis
/// that limits fills the output, the other is rounded to the nearest pixel (at least 1).
pub fn letterbox_size(width: usize, height: usize, out_w: usize, out_h: usize) -> (usize, usize) {
    // Compare width / height with out_w / out_h without floating point.
    if width * out_h >= height * out_w {
        let h = ((height * out_w) as f64 / width as f64).round() as usize;
        (out_w, h.clamp(1, out_h))
    } else {
        let w = ((width * out_h) as f64 / height as f64).round() as usize;
        (w.clamp(1, out_w), out_h)
    }
}

pub struct Preprocessor {
    out_width: usize,
    out_height: usize,
    resize: ResizePolicy,
    /// Per channel, the normalized value of each u8 level: (v / 255 - mean) / std.
    lut: [[f32; 256]; 3],
    rgb: Vec<u8>,
    resized: Vec<u8>,
    /// The letterboxed image (black borders), out_width x out_height.
    canvas: Vec<u8>,
    resizer: Resizer,
    options: ResizeOptions,
}

impl Preprocessor {
    pub fn new(out_width: usize, out_height: usize, mean: [f32; 3], std: [f32; 3]) -> Self {
        Self::with_resize(out_width, out_height, mean, std, ResizePolicy::Squash)
    }

    pub fn with_resize(
        out_width: usize,
        out_height: usize,
        mean: [f32; 3],
        std: [f32; 3],
        resize: ResizePolicy,
    ) -> Self {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Preprocessor {
            out_width,
            out_height,
            resize,
            lut,
            rgb: Vec::new(),
            resized: vec![0; out_width * out_height * 3],
            canvas: if resize == ResizePolicy::Letterbox {
                vec![0; out_width * out_height * 3]
            } else {
                Vec::new()
            },
            resizer: Resizer::new(),
            options: match resize {
                ResizePolicy::CenterCrop => options.fit_into_destination(Some((0.5, 0.5))),
                _ => options,
            },
        }
    }

    pub fn output_len(&self) -> usize {
        3 * self.out_width * self.out_height
    }

    /// Converts, resizes and normalizes `img` into `out` (CHW, length 3 x height x width).
    pub fn process(&mut self, img: &ImageView<'_>, out: &mut [f32]) -> Result<(), ImageError> {
        assert_eq!(
            out.len(),
            self.output_len(),
            "output slot has the wrong length"
        );
        let packed_len = img.width * img.height * 3;
        if self.rgb.len() != packed_len {
            self.rgb.resize(packed_len, 0);
        }
        to_packed_rgb(img, &mut self.rgb);
        let rgb: &[u8] = if (img.width, img.height) == (self.out_width, self.out_height) {
            &self.rgb
        } else {
            let (w, h) = match self.resize {
                ResizePolicy::Letterbox => {
                    letterbox_size(img.width, img.height, self.out_width, self.out_height)
                }
                _ => (self.out_width, self.out_height),
            };
            let src = ImageRef::new(
                img.width as u32,
                img.height as u32,
                &self.rgb,
                PixelType::U8x3,
            )
            .map_err(|e| ImageError::Decode(e.to_string()))?;
            let mut dst = Image::from_slice_u8(
                w as u32,
                h as u32,
                &mut self.resized[..w * h * 3],
                PixelType::U8x3,
            )
            .map_err(|e| ImageError::Decode(e.to_string()))?;
            self.resizer
                .resize(&src, &mut dst, &self.options)
                .map_err(|e| ImageError::Decode(e.to_string()))?;
            if self.resize == ResizePolicy::Letterbox {
                // Centred on a black canvas (cleared each time: an image of another aspect ratio
                // leaves other borders).
                self.canvas.fill(0);
                let (x0, y0) = ((self.out_width - w) / 2, (self.out_height - h) / 2);
                let row = self.out_width * 3;
                for (y, src_row) in self.resized[..w * h * 3].chunks_exact(w * 3).enumerate() {
                    let start = (y0 + y) * row + x0 * 3;
                    self.canvas[start..start + w * 3].copy_from_slice(src_row);
                }
                &self.canvas
            } else {
                &self.resized
            }
        };
        let plane = self.out_width * self.out_height;
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            r_plane[i] = self.lut[0][px[0] as usize];
            g_plane[i] = self.lut[1][px[1] as usize];
            b_plane[i] = self.lut[2][px[2] as usize];
        }
        Ok(())
    }
}

/// Packs any supported encoding into tightly packed RGB8, dropping row padding and alpha.
fn to_packed_rgb(img: &ImageView<'_>, out: &mut [u8]) {
    let ch = img.encoding.channels();
    for (y, out_row) in out.chunks_exact_mut(img.width * 3).enumerate() {
        let row = &img.data[y * img.step..y * img.step + img.width * ch];
        match img.encoding {
            Encoding::Rgb8 => out_row.copy_from_slice(row),
            Encoding::Bgr8 => {
                for (o, i) in out_row.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                    o.copy_from_slice(&[i[2], i[1], i[0]]);
                }
            }
            Encoding::Rgba8 => {
                for (o, i) in out_row.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    o.copy_from_slice(&i[..3]);
                }
            }
            Encoding::Bgra8 => {
                for (o, i) in out_row.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    o.copy_from_slice(&[i[2], i[1], i[0]]);
                }
            }
            Encoding::Mono8 => {
                for (o, v) in out_row.chunks_exact_mut(3).zip(row) {
                    o.fill(*v);
                }
            }
        }
    }
}

/// Decodes a sensor_msgs/CompressedImage payload (jpeg or png) into packed RGB8. This allocates: compressed
/// transport trades that for bandwidth.
/// What one message may cost: refused before anything is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageBounds {
    pub max_pixels: u64,
    pub max_compressed_bytes: usize,
}

/// The longest image side accepted. Decoders index rows and columns in 16 bits (zune-jpeg 0.5.15
/// overflows on a JPEG 65535 wide, found by fuzzing), and no camera comes near it.
pub const MAX_IMAGE_SIDE: u64 = 32_768;

impl ImageBounds {
    /// Refuses a width x height above `max_pixels`, or a side above [`MAX_IMAGE_SIDE`].
    pub fn check(&self, width: u64, height: u64) -> Result<(), ImageError> {
        if width.saturating_mul(height) > self.max_pixels
            || width > MAX_IMAGE_SIDE
            || height > MAX_IMAGE_SIDE
        {
            return Err(ImageError::TooLarge {
                width,
                height,
                max: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// Decodes a jpeg or png into packed RGB in `out`. The size in the file's header is checked against
/// `bounds` before anything is decoded, and the decoder's own allocation limit is set from it, so a
/// decompression bomb (a small file that claims a huge image) costs nothing.
pub fn decode_compressed(
    data: &[u8],
    out: &mut Vec<u8>,
    bounds: &ImageBounds,
) -> Result<(usize, usize), ImageError> {
    if data.len() > bounds.max_compressed_bytes {
        return Err(ImageError::CompressedTooLarge {
            bytes: data.len(),
            max: bounds.max_compressed_bytes,
        });
    }
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode(e.to_string()))
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    bounds.check(u64::from(w), u64::from(h))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // The decoded image in its widest layout (16-bit RGBA) and the RGB copy.
    limits.max_alloc = Some(u64::from(w) * u64::from(h) * 8 + (1 << 20));
    let mut decoder = reader()?;
    decoder.limits(limits);
    let img = decoder
        .decode()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    out.clear();
    out.extend_from_slice(rgb.as_raw());
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_MEAN: [f32; 3] = [0.0; 3];
    const ID_STD: [f32; 3] = [1.0; 3];

    /// A 3x2 image whose pixel (x, y) has RGB = (10x + y, 100 + x, 200 + y), in the given encoding, with
    /// `pad` bytes of padding per row.
    fn sample(enc: Encoding, pad: usize) -> (Vec<u8>, usize) {
        let (w, h) = (3usize, 2usize);
        let step = w * enc.channels() + pad;
        let mut data = vec![0xEE; step * h];
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = ((10 * x + y) as u8, (100 + x) as u8, (200 + y) as u8);
                let px: Vec<u8> = match enc {
                    Encoding::Rgb8 => vec![r, g, b],
                    Encoding::Bgr8 => vec![b, g, r],
                    Encoding::Rgba8 => vec![r, g, b, 255],
                    Encoding::Bgra8 => vec![b, g, r, 255],
                    Encoding::Mono8 => vec![r],
                };
                let o = y * step + x * enc.channels();
                data[o..o + px.len()].copy_from_slice(&px);
            }
        }
        (data, step)
    }

    #[test]
    fn every_encoding_with_row_padding_gives_the_same_rgb() {
        for enc in [
            Encoding::Rgb8,
            Encoding::Bgr8,
            Encoding::Rgba8,
            Encoding::Bgra8,
            Encoding::Mono8,
        ] {
            for pad in [0, 5] {
                let (data, step) = sample(enc, pad);
                let name = format!("{enc:?}").to_lowercase();
                let view = ImageView::new(3, 2, step, &name, &data).unwrap();
                let mut p = Preprocessor::new(3, 2, ID_MEAN, ID_STD);
                let mut out = vec![0.0; p.output_len()];
                p.process(&view, &mut out).unwrap();
                for y in 0..2 {
                    for x in 0..3 {
                        let i = y * 3 + x;
                        let r = (10 * x + y) as f32 / 255.0;
                        let (g, b) = if enc == Encoding::Mono8 {
                            (r, r)
                        } else {
                            ((100 + x) as f32 / 255.0, (200 + y) as f32 / 255.0)
                        };
                        assert_eq!(
                            [out[i], out[6 + i], out[12 + i]],
                            [r, g, b],
                            "{enc:?} pad {pad} at {x},{y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn normalization_uses_mean_and_std_per_channel() {
        let data = [255u8, 0, 51];
        let view = ImageView::new(1, 1, 3, "rgb8", &data).unwrap();
        let mut p = Preprocessor::new(1, 1, [0.5, 0.5, 0.2], [0.5, 0.25, 0.1]);
        let mut out = [0.0f32; 3];
        p.process(&view, &mut out).unwrap();
        assert!(
            (out[0] - 1.0).abs() < 1e-6 && (out[1] + 2.0).abs() < 1e-6 && out[2].abs() < 1e-5,
            "{out:?}"
        );
    }

    /// An RGB image whose left half is red and right half blue (width even), rows all alike.
    fn halves(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                if i % w < w / 2 {
                    [255u8, 0, 0]
                } else {
                    [0, 0, 255]
                }
            })
            .collect()
    }

    /// Red channel of an output pixel (identity normalization).
    fn red(out: &[f32], out_w: usize, x: usize, y: usize) -> f32 {
        out[y * out_w + x]
    }

    #[test]
    fn letterbox_keeps_the_aspect_ratio_with_black_borders() {
        assert_eq!(letterbox_size(40, 20, 8, 8), (8, 4));
        assert_eq!(letterbox_size(20, 40, 8, 8), (4, 8));
        assert_eq!(letterbox_size(30, 20, 6, 4), (6, 4));
        // A 40x20 image into 8x8: scaled to 8x4, rows 2..6, rows 0-1 and 6-7 black.
        let data = halves(40, 20);
        let view = ImageView::new(40, 20, 120, "rgb8", &data).unwrap();
        let mut p = Preprocessor::with_resize(8, 8, ID_MEAN, ID_STD, ResizePolicy::Letterbox);
        let mut out = vec![0.5; p.output_len()];
        p.process(&view, &mut out).unwrap();
        let plane = 64;
        for y in [0, 1, 6, 7] {
            for x in 0..8 {
                let px = [
                    out[y * 8 + x],
                    out[plane + y * 8 + x],
                    out[2 * plane + y * 8 + x],
                ];
                assert_eq!(px, [0.0; 3], "border pixel {x},{y}");
            }
        }
        for y in 2..6 {
            assert_eq!(red(&out, 8, 0, y), 1.0, "left edge of row {y} is red");
            assert_eq!(red(&out, 8, 7, y), 0.0, "right edge of row {y} is blue");
            assert_eq!(out[2 * plane + y * 8 + 7], 1.0);
        }
        // A portrait image next: its own borders (left and right), none left over from the first.
        let tall: Vec<u8> = [0u8, 255, 0].repeat(20 * 40);
        let view = ImageView::new(20, 40, 60, "rgb8", &tall).unwrap();
        p.process(&view, &mut out).unwrap();
        for y in 0..8 {
            for x in 0..8 {
                let green = out[plane + y * 8 + x];
                let expected = if (2..6).contains(&x) { 1.0 } else { 0.0 };
                assert_eq!(green, expected, "pixel {x},{y}");
            }
        }
    }

    #[test]
    fn center_crop_drops_the_sides_and_squash_keeps_them() {
        // 40x20, the left 5 columns red, the rest blue: a centred square crop (x 10..30, its filter
        // reaching 2.5 pixels out) sees only blue; squash keeps the red at the left edge.
        let (w, h) = (40usize, 20usize);
        let data: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if i % w < 5 {
                    [255u8, 0, 0]
                } else {
                    [0, 0, 255]
                }
            })
            .collect();
        let view = ImageView::new(w, h, w * 3, "rgb8", &data).unwrap();
        let mut crop = Preprocessor::with_resize(8, 8, ID_MEAN, ID_STD, ResizePolicy::CenterCrop);
        let mut squash = Preprocessor::new(8, 8, ID_MEAN, ID_STD);
        let (mut a, mut b) = (vec![0.0; 192], vec![0.0; 192]);
        crop.process(&view, &mut a).unwrap();
        squash.process(&view, &mut b).unwrap();
        for y in 0..8 {
            assert_eq!(
                red(&a, 8, 0, y),
                0.0,
                "the crop starts in the blue part (row {y})"
            );
            assert!(
                red(&b, 8, 0, y) > 0.5,
                "squash starts in the red part (row {y})"
            );
        }
        // Same size in and out: every policy is the identity.
        let small = halves(8, 8);
        let view = ImageView::new(8, 8, 24, "rgb8", &small).unwrap();
        crop.process(&view, &mut a).unwrap();
        squash.process(&view, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn odd_sizes_resize_and_keep_uniform_colour() {
        let (w, h) = (37usize, 23usize);
        let data: Vec<u8> = [90u8, 160, 30].repeat(w * h);
        let view = ImageView::new(w, h, w * 3, "rgb8", &data).unwrap();
        let mut p = Preprocessor::new(8, 5, ID_MEAN, ID_STD);
        let mut out = vec![0.0; p.output_len()];
        p.process(&view, &mut out).unwrap();
        for (c, v) in [90u8, 160, 30].iter().enumerate() {
            assert!(out[c * 40..(c + 1) * 40]
                .iter()
                .all(|x| (*x - *v as f32 / 255.0).abs() < 1.5 / 255.0));
        }
        // A horizontal gradient survives downscaling in order.
        let grad: Vec<u8> = (0..h)
            .flat_map(|_| (0..w).flat_map(|x| [(x * 6) as u8; 3]))
            .collect();
        let view = ImageView::new(w, h, w * 3, "rgb8", &grad).unwrap();
        p.process(&view, &mut out).unwrap();
        assert!(out[..8].windows(2).all(|p| p[0] < p[1]), "{:?}", &out[..8]);
    }

    #[test]
    fn bad_images_are_refused_with_their_kind() {
        let data = [0u8; 10];
        assert_eq!(
            ImageView::new(2, 2, 6, "yuv422", &data).unwrap_err().kind(),
            "image_encoding"
        );
        assert_eq!(
            ImageView::new(0, 2, 6, "rgb8", &data).unwrap_err().kind(),
            "image_zero_size"
        );
        assert_eq!(
            ImageView::new(4, 2, 6, "rgb8", &data).unwrap_err().kind(),
            "image_step"
        );
        assert_eq!(
            ImageView::new(2, 2, 6, "rgb8", &data).unwrap_err(),
            ImageError::DataTooShort {
                expected: 12,
                got: 10
            }
        );
    }

    #[test]
    fn compressed_png_decodes_to_rgb() {
        let mut png = Vec::new();
        let img = image::RgbImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut out = Vec::new();
        let bounds = ImageBounds {
            max_pixels: 100,
            max_compressed_bytes: 10_000,
        };
        assert_eq!(decode_compressed(&png, &mut out, &bounds).unwrap(), (2, 1));
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            decode_compressed(b"not an image", &mut out, &bounds)
                .unwrap_err()
                .kind(),
            "image_decode"
        );
        let small = ImageBounds {
            max_compressed_bytes: png.len() - 1,
            ..bounds
        };
        assert_eq!(
            decode_compressed(&png, &mut out, &small)
                .unwrap_err()
                .kind(),
            "image_compressed_too_large"
        );
    }

    /// A 12000x12000 PNG of a few kilobytes (all zeros compress to nothing) is refused from its header,
    /// before its 432 MB are decoded.
    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, 12_000, 12_000);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_depth(png::BitDepth::One);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&vec![0u8; 1500 * 12_000]).unwrap();
        }
        assert!(png.len() < 100_000, "{} bytes", png.len());
        let bounds = ImageBounds {
            max_pixels: 4096 * 4096,
            max_compressed_bytes: 16_000_000,
        };
        let mut out = Vec::new();
        let e = decode_compressed(&png, &mut out, &bounds).unwrap_err();
        assert_eq!(e.kind(), "image_too_large", "{e}");
        assert!(
            out.capacity() < 1 << 20,
            "decoded anyway: {}",
            out.capacity()
        );
    }
}

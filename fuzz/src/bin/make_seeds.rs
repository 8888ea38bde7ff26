//! Writes the starting corpus: small PNGs and JPEGs of each colour type (seeds/compressed_image) and the
//! repository's manifests (seeds/manifest). `cargo run --release --bin make_seeds -- DIR`.

use std::io::Cursor;

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    let images = out.join("compressed_image");
    let manifests = out.join("manifest");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&manifests).unwrap();
    let rgb = image::RgbImage::from_fn(7, 5, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 50) as u8, 128])
    });
    let base = image::DynamicImage::ImageRgb8(rgb);
    let variants = [
        ("rgb8", base.clone()),
        ("l8", image::DynamicImage::ImageLuma8(base.to_luma8())),
        (
            "la8",
            image::DynamicImage::ImageLumaA8(base.to_luma_alpha8()),
        ),
        ("rgba8", image::DynamicImage::ImageRgba8(base.to_rgba8())),
        ("rgb16", image::DynamicImage::ImageRgb16(base.to_rgb16())),
    ];
    for (name, img) in &variants {
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(images.join(format!("{name}.png")), png).unwrap();
    }
    for (name, img) in [
        ("rgb8", base.clone()),
        ("l8", image::DynamicImage::ImageLuma8(base.to_luma8())),
    ] {
        let mut jpg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
            .unwrap();
        std::fs::write(images.join(format!("{name}.jpg")), jpg).unwrap();
    }
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    for bundle in ["wam_test", "wam_sim", "wam_sim_action_only"] {
        let path = models.join(bundle).join("wam.yaml");
        if path.is_file() {
            std::fs::copy(&path, manifests.join(format!("{bundle}.yaml"))).unwrap();
        }
    }
    println!("seeds in {}", out.display());
}

//! Preprocessing of camera frames into the model input: encoding conversion, bilinear resize,
//! normalization and planar f32 layout, written into the observation window's preallocated slot.
//! Two cameras at 640x480 rgb8 (and bgra8 with padded rows), to the sizes of the bundled models.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wam_policy::bundle::Dims;
use wam_policy::obs_window::ObsWindow;
use wam_policy::preprocess::{ImageView, Preprocessor};

const CAMERAS: usize = 2;

fn frame(height: usize, step: usize, seed: u8) -> Vec<u8> {
    (0..step * height)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn dims(side: usize) -> Dims {
    Dims {
        cameras: CAMERAS,
        context_frames: 2,
        sizes: wam_policy::bundle::same_size(side, side),
        state: 7,
        horizon: 16,
        action: 7,
        video_frames: 2,
        latent: [4, 8, 8],
        tokens: 8,
    }
}

fn bench_preprocess(c: &mut Criterion) {
    let mut group = c.benchmark_group("preprocess_2x640x480");
    group.throughput(Throughput::Bytes((CAMERAS * 640 * 480 * 3) as u64));
    for (encoding, channels, pad) in [("rgb8", 3, 0), ("bgra8", 4, 64)] {
        let step = 640 * channels + pad;
        let frames: Vec<Vec<u8>> = (0..CAMERAS).map(|c| frame(480, step, c as u8)).collect();
        for side in [64usize, 224] {
            let d = dims(side);
            let mut window = ObsWindow::new(d, 0.05, 0.5, 0.25, 256);
            let mut pre: Vec<Preprocessor> = (0..CAMERAS)
                .map(|_| Preprocessor::new(side, side, [0.5; 3], [0.5; 3]))
                .collect();
            let mut stamp = 0.0;
            group.bench_function(
                BenchmarkId::new(format!("{encoding}_to"), format!("{side}x{side}")),
                |b| {
                    b.iter(|| {
                        stamp += 1.0 / 15.0;
                        for (cam, data) in frames.iter().enumerate() {
                            let view = ImageView::new(640, 480, step, encoding, data)
                                .expect("valid frame");
                            pre[cam]
                                .process(&view, window.frame_slot(cam))
                                .expect("preprocess");
                            window.commit_frame(cam, stamp);
                        }
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_preprocess);
criterion_main!(benches);

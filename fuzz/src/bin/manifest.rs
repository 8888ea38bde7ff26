//! AFL++ target: the bytes of a bundle's wam.yaml (beside models/wam_test's ONNX and vocabulary files)
//! through `Bundle::load`, then what the node derives from an accepted bundle. A panic is a crash.
//! Accepted sizes whose buffers overflow usize are a known bug (docs/fuzzing.md): skipped here so the
//! fuzzer looks for new ones.

use wam_policy::bundle::Bundle;
use wam_policy::tokenizer::InstructionEncoder;

fn main() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wam_test");
    let dir = tempfile::Builder::new()
        .prefix("wam_afl_bundle")
        .tempdir()
        .unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let manifest = dir.path().join("wam.yaml");
    afl::fuzz!(|data: &[u8]| {
        std::fs::write(&manifest, data).unwrap();
        let Ok(bundle) = Bundle::load(dir.path()) else {
            return;
        };
        let d = bundle.dims();
        let prod = |xs: &[usize]| xs.iter().fold(1u128, |a, x| a.saturating_mul(*x as u128));
        let frames = d.context_frames.max(d.video_frames);
        let limit = (isize::MAX as u128) / 8;
        let big = [
            (0..d.cameras)
                .map(|v| prod(&[d.cameras, frames, 3, d.size(v).0, d.size(v).1]))
                .max()
                .unwrap_or(0),
            prod(&[d.cameras, frames, d.latent[0], d.latent[1], d.latent[2]]),
            prod(&[d.horizon, d.action]),
            prod(&[d.tokens]),
        ];
        if big.iter().any(|n| *n > limit) {
            return; // known bug: bundle-sizes
        }
        let _ = (
            d.obs_frames_len(),
            d.predicted_frames_len(),
            d.video_latent_len(),
            d.action_len(),
        );
        let _ = bundle.expected_tensors();
        let _ = bundle.video_dt();
        if let Ok(enc) = InstructionEncoder::for_bundle(&bundle) {
            let mut ids = vec![0i64; d.tokens.min(4096)];
            enc.encode_into("reach the red cube", &mut ids).unwrap();
        }
    });
}

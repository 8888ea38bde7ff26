//! The monitor on the trained simulator bundle (the real ONNX Runtime): a real frame that shows what the
//! model predicted scores lower than one that does not (half of it occluded, or another scene), and the
//! frames it needs encoded go through the encode stage in the inference that follows.
use std::path::Path;

use serde::Deserialize;
use wam_policy::bundle::Bundle;
use wam_policy::config::{Provider, RuntimeConfig};
use wam_policy::monitor::{Monitor, MonitorParams};
use wam_policy::runtime::ModelRuntime;
use wam_policy::sampler::FlowSampler;

#[derive(Deserialize)]
struct Case {
    frames: Vec<f32>,
    state: Vec<f64>,
    tokens: Vec<i64>,
}

fn case(dir: &Path, i: usize) -> Case {
    let path = dir.join("parity").join(format!("case_{i}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The monitor's latent score of camera 0 when the real frames at the predicted times are
/// `observed(v)` ([3, H, W], normalized), after a prediction from case 0's observation.
fn score_with(observed: &dyn Fn(usize) -> Vec<f32>) -> f64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim");
    let bundle = Bundle::load(&dir).unwrap();
    let cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    };
    let mut runtime = ModelRuntime::load(&bundle, &cfg).unwrap();
    let dims = *runtime.dims();
    let c = case(&dir, 0);
    let mut input = runtime.new_input();
    let mut output = runtime.new_output();
    input.frames.copy_from_slice(&c.frames);
    input.state.copy_from_slice(&c.state);
    input.tokens.copy_from_slice(&c.tokens);
    let mut sampler = FlowSampler::new(bundle.manifest.sampler.steps, 0);
    runtime.infer(&input, &mut sampler, &mut output).unwrap();

    let params = MonitorParams {
        enabled: true,
        ..MonitorParams::default()
    };
    let image = &bundle.manifest.image;
    let mut monitor = Monitor::new(
        params,
        dims,
        bundle.video_dt(),
        None,
        [image.mean[0], image.mean[1], image.mean[2]],
        [image.std[0], image.std[1], image.std[2]],
    );
    monitor.on_prediction(
        1,
        0.0,
        &output.actions,
        &output.video_latents,
        &output.frames,
        &output.observed_latents,
    );
    for f in 0..dims.video_frames {
        let t = (f + 1) as f64 * bundle.video_dt();
        for v in 0..dims.cameras {
            monitor.offer_frame(v, t, &observed(v));
        }
    }
    // The next inference encodes the monitor's frames (none is in its window).
    let now = dims.video_frames as f64 * bundle.video_dt() + 0.1;
    let stamps = input.frame_stamps.clone();
    monitor.fill_job(
        now,
        &stamps,
        &mut input.monitor_frames,
        &mut input.monitor_used,
    );
    assert!(input.monitor_used.iter().filter(|u| **u).count() >= dims.cameras);
    runtime.infer(&input, &mut sampler, &mut output).unwrap();
    let mut scores = Vec::new();
    monitor.on_result(
        true,
        &output.observed_latents,
        &output.monitor_latents,
        now,
        &mut scores,
    );
    assert_eq!(scores.len(), 1, "one chunk scored");
    let s = &scores[0];
    assert_eq!(s.cameras[0].paired as usize, dims.video_frames);
    assert!(s.cameras[0].psnr_db.is_finite(), "the bundle decodes: PSNR");
    s.cameras[0].latent
}

fn newest_frame(c: &Case, v: usize, t: usize, len: usize) -> Vec<f32> {
    let k = v * t + t - 1;
    c.frames[k * len..(k + 1) * len].to_vec()
}

#[test]
fn a_frame_that_differs_from_the_prediction_scores_higher() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim");
    let bundle = Bundle::load(&dir).unwrap();
    let d = bundle.dims();
    let (len, t) = (d.frame_len(0), d.context_frames);
    let (height, width) = d.size(0);
    let c0 = case(&dir, 0);
    let c1 = case(&dir, 1);
    // The scene as it was observed: the arm moves little in a chunk, so it is close to the prediction.
    let same = score_with(&|v| newest_frame(&c0, v, t, len));
    // Half of the image black (in normalized units: pixel 0).
    let mean = bundle.manifest.image.mean.clone();
    let std = bundle.manifest.image.std.clone();
    let occluded = score_with(&|v| {
        let mut f = newest_frame(&c0, v, t, len);
        let plane = height * width;
        for ch in 0..3 {
            for y in 0..height {
                for x in 0..width / 2 {
                    f[ch * plane + y * width + x] = (0.0 - mean[ch]) / std[ch];
                }
            }
        }
        f
    });
    // Another scene (another episode's layout).
    let other = score_with(&|v| newest_frame(&c1, v, t, len));
    assert!(
        occluded > same && other > same,
        "same {same}, occluded {occluded}, other scene {other}"
    );
}

//! What the monitor costs (issue 13): its bookkeeping per chunk on the simulator bundle's shapes
//! (one prediction, a second of real frames offered at 15 Hz per camera, the slots filled, the result
//! scored), off and on; and one inference of the trained simulator bundle (the real ONNX Runtime)
//! without and with the extra encode run for the monitor's frames.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use wam_policy::bundle::Bundle;
use wam_policy::config::{Provider, RuntimeConfig};
use wam_policy::monitor::{Monitor, MonitorParams};
use wam_policy::runtime::ModelRuntime;
use wam_policy::sampler::FlowSampler;

fn bundle() -> Bundle {
    Bundle::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim")).unwrap()
}

fn bench_bookkeeping(c: &mut Criterion) {
    let b = bundle();
    let d = b.dims();
    let video_dt = b.video_dt();
    let mut group = c.benchmark_group("monitor_per_chunk");
    for enabled in [false, true] {
        let params = MonitorParams {
            enabled,
            ..MonitorParams::default()
        };
        let mut m = Monitor::new(params, d, video_dt, None, [0.5; 3], [0.5; 3]);
        let actions = vec![0.0; d.action_len()];
        let video = vec![0.1; d.video_latent_len()];
        let frames = vec![0.5; d.predicted_frames_len()];
        let window = vec![0.0; d.cameras * d.context_frames * d.latent_len()];
        let frame = vec![0.2; d.frame_len(0)];
        let stamps = vec![f64::NEG_INFINITY; d.cameras * d.context_frames];
        let mut slot_frames = vec![0.0; d.obs_frames_len()];
        let mut used = vec![false; d.cameras * d.context_frames];
        let slot_latents = vec![0.0; d.cameras * d.context_frames * d.latent_len()];
        let mut scores = Vec::with_capacity(4);
        let mut t0 = 0.0;
        let name = if enabled { "on" } else { "off" };
        group.bench_function(name, |bench| {
            bench.iter(|| {
                m.on_prediction(1, t0, &actions, &video, &frames, &window);
                let end = t0 + (d.video_frames as f64 + 0.5) * video_dt;
                let mut t = t0;
                while t < end {
                    for v in 0..d.cameras {
                        m.offer_frame(v, t, &frame);
                    }
                    t += 1.0 / 15.0;
                }
                m.fill_job(end, &stamps, &mut slot_frames, &mut used);
                scores.clear();
                m.on_result(true, &window, &slot_latents, end, &mut scores);
                t0 = end;
            })
        });
    }
    group.finish();
}

fn bench_inference(c: &mut Criterion) {
    let b = bundle();
    let cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    };
    let mut runtime = ModelRuntime::load(&b, &cfg).unwrap();
    let mut sampler = FlowSampler::new(b.manifest.sampler.steps, 0);
    let mut input = runtime.new_input();
    let mut output = runtime.new_output();
    let mut group = c.benchmark_group("monitor_inference_sim_bundle");
    group.sample_size(30);
    for slots in [false, true] {
        input.monitor_used.fill(slots);
        let name = if slots {
            "with monitor encode"
        } else {
            "without"
        };
        group.bench_function(name, |bench| {
            bench.iter(|| runtime.infer(&input, &mut sampler, &mut output).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_bookkeeping, bench_inference);
criterion_main!(benches);

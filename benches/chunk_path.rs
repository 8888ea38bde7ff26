//! The node's per-chunk path without the model: assemble the observation window into the model input,
//! compute the prefix for the sampler, then turn the finished chunk into the command plan (drop past
//! steps, boundary, ramp, safety, velocities) and sample the plan as streaming mode does.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wam_policy::bundle::Dims;
use wam_policy::config::ExecutionParams;
use wam_policy::config::JointLimits;
use wam_policy::execution::{Anchor, BoundaryMode, ChunkExecutor, ChunkShape};
use wam_policy::obs_window::ObsWindow;
use wam_policy::safety::SafetyFilter;

const JOINTS: usize = 7;
const HORIZON: usize = 16;
const DT: f64 = 0.1;

fn dims(side: usize) -> Dims {
    Dims {
        cameras: 2,
        context_frames: 2,
        sizes: wam_policy::bundle::same_size(side, side),
        state: JOINTS,
        horizon: HORIZON,
        action: JOINTS,
        video_frames: 2,
        latent: [4, 8, 8],
        tokens: 8,
    }
}

fn safety() -> SafetyFilter {
    SafetyFilter::new(
        (0..JOINTS).map(|j| format!("joint{j}")).collect(),
        Some(JointLimits {
            lower: vec![-3.0; JOINTS],
            upper: vec![3.0; JOINTS],
            max_velocity: vec![2.0; JOINTS],
            max_acceleration: Some(vec![20.0; JOINTS]),
            max_jump: 0.5,
        }),
    )
}

fn bench_chunk_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("chunk_path");
    for side in [64usize, 224] {
        for mode in [
            BoundaryMode::Replace,
            BoundaryMode::Crossfade,
            BoundaryMode::Prefix,
        ] {
            let d = dims(side);
            let mut window = ObsWindow::new(d, 0.05, 0.5, 0.25, 256);
            let mut executor = ChunkExecutor::new(
                ExecutionParams {
                    replan_margin_s: 0.05,
                    boundary_mode: mode,
                    ramp_in_s: 0.0,
                    plan_anchor: Some(Anchor::Measured),
                    ..ExecutionParams::default()
                },
                ChunkShape {
                    horizon: HORIZON,
                    joints: JOINTS,
                    dt: DT,
                },
            );
            let safety = safety();
            let mut frames = vec![0.0f32; d.obs_frames_len()];
            let mut state = vec![0.0f64; JOINTS];
            let mut prefix = vec![0.0f64; HORIZON * JOINTS];
            let mut prefix_weights = vec![0.0f32; HORIZON];
            let mut actions = vec![0.0f64; HORIZON * JOINTS];
            let (mut q, mut v) = (vec![0.0; JOINTS], vec![0.0; JOINTS]);
            let mut now = 0.0f64;
            // Fill the window once; each iteration adds a frame per camera and a joint state like the
            // subscriptions do, then runs one chunk's bookkeeping.
            let add_inputs = |window: &mut ObsWindow, now: f64| {
                for cam in 0..2 {
                    window.frame_slot(cam).fill(0.25);
                    window.commit_frame(cam, now);
                }
                window
                    .push_joint_state(now, &[0.1; JOINTS])
                    .expect("increasing stamps");
            };
            let mut stamps = vec![0.0; d.cameras * d.context_frames];
            add_inputs(&mut window, now);
            group.bench_function(
                BenchmarkId::new(mode.name(), format!("{side}x{side}")),
                |b| {
                    b.iter(|| {
                        now += 0.2;
                        add_inputs(&mut window, now);
                        let meta = window
                            .assemble(now, &mut frames, &mut stamps, &mut state)
                            .expect("complete observation");
                        let _known = executor.prefix(
                            meta.stamp,
                            now + 0.08,
                            &mut prefix,
                            &mut prefix_weights,
                        );
                        // A chunk that continues the arm's motion slowly from the measured state.
                        for (i, step) in actions.chunks_mut(JOINTS).enumerate() {
                            step.fill(0.1 + 0.01 * (i + 1) as f64);
                        }
                        executor
                            .accept(meta.stamp, &actions, now + 0.08, &state, &safety)
                            .expect("a safe chunk");
                        executor.sample(now + 0.1, &mut q, &mut v);
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_chunk_path);
criterion_main!(benches);

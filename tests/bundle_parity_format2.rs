//! Multi-chunk export parity (bundle format 2): the bundles exported with wam_export run by this
//! runtime against what PyTorch computed, chunk after chunk, with the real frames of an episode fed in
//! between: models/wam_sim_dz (`python -m wam_dz.export`: a DreamZero-style WAM with a KV cache carried
//! across chunks, guidance on video, UniPC with shift 5 and step reuse), models/wam_sim_act (an
//! ACT-like `solver: none` policy) and models/wam_tutorial (docs/export_tutorial.md). The fixtures
//! (`parity/seq_<i>.json`, format in export/wam_export/fixtures.py) hold per chunk the inputs, the
//! initial noise, the state's length and position the context saw, and the outputs. No torch needed.
//! Tolerances: the fixture's (actions 1e-4 max abs, video latents and frames 1e-3).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wam_policy::bundle::Bundle;
use wam_policy::config::{Provider, RuntimeConfig};
use wam_policy::runtime::ModelRuntime;
use wam_policy::sampler::FlowSampler;

#[derive(Deserialize)]
struct Tolerance {
    actions: f64,
    frames: f64,
    video_latents: f64,
}

#[derive(Deserialize)]
struct Chunk {
    reset: bool,
    frames: Vec<f32>,
    state: Vec<f64>,
    tokens: Vec<i64>,
    noise_actions: Vec<f32>,
    noise_video: Vec<f32>,
    length: i64,
    position: i64,
    actions: Vec<f64>,
    video_latents: Vec<f32>,
    frames_out: Vec<f32>,
}

#[derive(Deserialize)]
struct Sequence {
    fixture: String,
    steps: usize,
    tolerance: Tolerance,
    chunks: Vec<Chunk>,
}

fn max_abs_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x).into() - (*y).into()).abs())
        .fold(0.0, f64::max)
}

fn sequences(bundle: &Path) -> Vec<(PathBuf, Sequence)> {
    let dir = bundle.join("parity");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run `python -m wam_dz.export`)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seq_"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no parity sequences in {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let seq: Sequence =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(seq.fixture, "wam_parity_sequence", "{}", p.display());
            (p, seq)
        })
        .collect()
}

/// The manifest's sampler, as the node builds it (solver, shift, guidance, reuse).
fn sampler(bundle: &Bundle, steps: usize) -> FlowSampler {
    let sp = &bundle.manifest.sampler;
    let s = FlowSampler::new(steps, 0)
        .with_solver(sp.solver())
        .with_shift(sp.shift)
        .with_guidance(sp.guidance())
        .with_reuse(sp.reuse.as_deref().unwrap_or(&[]));
    s.validate().unwrap();
    s
}

fn check_bundle(name: &str, min_chunks: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name);
    let bundle = Bundle::load(&dir).unwrap();
    let cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    };
    let mut runtime = ModelRuntime::load(&bundle, &cfg).unwrap();
    for (path, seq) in sequences(&dir) {
        assert!(seq.chunks.len() >= min_chunks, "{}", path.display());
        let sampler = sampler(&bundle, seq.steps);
        let tol = &seq.tolerance;
        for (k, c) in seq.chunks.iter().enumerate() {
            if c.reset {
                runtime.clear_state();
            }
            if let Some(state) = runtime.state() {
                assert_eq!(
                    (state.length(), state.position()),
                    (c.length, c.position),
                    "{name} {} chunk {k}: the carried state's length/position",
                    path.display()
                );
            }
            let mut input = runtime.new_input();
            let mut output = runtime.new_output();
            assert_eq!(c.frames.len(), input.frames.len(), "{}", path.display());
            input.frames.copy_from_slice(&c.frames);
            input.state.copy_from_slice(&c.state);
            input.tokens.copy_from_slice(&c.tokens);
            runtime
                .infer_with_noise(
                    &input,
                    &sampler,
                    &c.noise_actions,
                    &c.noise_video,
                    &mut output,
                )
                .unwrap();
            let action_err = max_abs_diff(&output.actions, &c.actions);
            let video_err = max_abs_diff(&output.video_latents, &c.video_latents);
            let frame_err = max_abs_diff(&output.frames, &c.frames_out);
            eprintln!(
                "{name} {} chunk {k}: max |action err| {action_err:.2e}, |video latent err| \
                 {video_err:.2e}, |frame err| {frame_err:.2e}",
                path.file_name().unwrap().to_string_lossy()
            );
            assert!(
                action_err <= tol.actions,
                "{name} {} chunk {k}: actions differ by {action_err:e} (> {:e})",
                path.display(),
                tol.actions
            );
            assert!(
                video_err <= tol.video_latents,
                "{name} {} chunk {k}: video latents differ by {video_err:e}",
                path.display()
            );
            assert!(
                frame_err <= tol.frames,
                "{name} {} chunk {k}: frames differ by {frame_err:e}",
                path.display()
            );
        }
    }
}

#[test]
fn dreamzero_style_bundle_matches_pytorch_over_chunks() {
    check_bundle("wam_sim_dz", 5);
}

/// The same WAM exported with float16 stages (`python -m wam_dz.export --float16`), against the float32
/// PyTorch model within the kit's float16 tolerance.
#[test]
fn float16_export_matches_pytorch_over_chunks() {
    check_bundle("wam_sim_dz_f16", 5);
}

#[test]
fn act_like_bundle_matches_pytorch_over_chunks() {
    check_bundle("wam_sim_act", 1);
}

#[test]
fn tutorial_bundle_matches_pytorch_over_chunks() {
    // docs/export_tutorial.md's bundle: a cache of one position per chunk, guidance, reuse.
    check_bundle("wam_tutorial", 5);
}

#[test]
fn carried_state_changes_the_next_chunk() {
    // The parity above would pass vacuously if the runtime ignored the carried state: chunk 3 of the
    // episode computed from a cleared state must differ from the fixture (which carried it).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim_dz");
    let bundle = Bundle::load(&dir).unwrap();
    let cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    };
    let mut runtime = ModelRuntime::load(&bundle, &cfg).unwrap();
    let (_, seq) = sequences(&dir).remove(0);
    let c = &seq.chunks[3];
    let mut input = runtime.new_input();
    input.frames.copy_from_slice(&c.frames);
    input.state.copy_from_slice(&c.state);
    input.tokens.copy_from_slice(&c.tokens);
    let mut output = runtime.new_output();
    runtime.clear_state();
    runtime
        .infer_with_noise(
            &input,
            &sampler(&bundle, seq.steps),
            &c.noise_actions,
            &c.noise_video,
            &mut output,
        )
        .unwrap();
    let diff = max_abs_diff(&output.actions, &c.actions);
    assert!(diff > 1e-3, "the carried KV cache had no effect ({diff:e})");
}

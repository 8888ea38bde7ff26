//! Export parity: the committed simulator bundles run by this runtime (the real ONNX Runtime, the Rust
//! sampler) against the outputs PyTorch computed for the same inputs and initial noise. The fixtures are
//! written by `python -m wam_model.export` next to each bundle (`parity/case_<i>.json`); this test needs no
//! torch. Targets from issue 3: actions within 1e-4 (max abs), frames within 1e-3. Both fixture layouts
//! are read: format 1's single cases (`case_<i>.json`) and the export kit's sequences (`seq_<i>.json`,
//! export/wam_export/fixtures.py), whose chunks are independent cases for these stateless bundles.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wam_policy::bundle::Bundle;
use wam_policy::config::{Provider, RuntimeConfig};
use wam_policy::runtime::ModelRuntime;
use wam_policy::sampler::FlowSampler;

const ACTION_TOL: f64 = 1e-4;
const FRAME_TOL: f32 = 1e-3;

#[derive(Deserialize)]
struct Sequence {
    steps: usize,
    chunks: Vec<Chunk>,
}

#[derive(Deserialize)]
struct Chunk {
    frames: Vec<f32>,
    state: Vec<f64>,
    tokens: Vec<i64>,
    noise_actions: Vec<f32>,
    noise_video: Vec<f32>,
    actions: Vec<f64>,
    frames_out: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    frames: Vec<f32>,
    state: Vec<f64>,
    tokens: Vec<i64>,
    steps: usize,
    noise_actions: Vec<f32>,
    noise_video: Vec<f32>,
    actions: Vec<f64>,
    frames_out: Vec<f32>,
}

fn max_abs_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x).into() - (*y).into()).abs())
        .fold(0.0, f64::max)
}

fn cases(bundle: &Path) -> Vec<(PathBuf, Case)> {
    let dir = bundle.join("parity");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make export`)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no parity cases in {}", dir.display());
    let mut out = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        let is_seq = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seq_"));
        if is_seq {
            let seq: Sequence =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for c in seq.chunks {
                let case = Case {
                    frames: c.frames,
                    state: c.state,
                    tokens: c.tokens,
                    steps: seq.steps,
                    noise_actions: c.noise_actions,
                    noise_video: c.noise_video,
                    actions: c.actions,
                    frames_out: c.frames_out,
                };
                out.push((p.clone(), case));
            }
        } else {
            let case =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p, case));
        }
    }
    out
}

fn check_bundle(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name);
    let bundle = Bundle::load(&dir).unwrap();
    let cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    };
    let mut runtime = ModelRuntime::load(&bundle, &cfg).unwrap();
    for (path, case) in cases(&dir) {
        let mut input = runtime.new_input();
        let mut output = runtime.new_output();
        assert_eq!(case.frames.len(), input.frames.len(), "{}", path.display());
        input.frames.copy_from_slice(&case.frames);
        input.state.copy_from_slice(&case.state);
        input.tokens.copy_from_slice(&case.tokens);
        let sampler = FlowSampler::new(case.steps, 0);
        runtime
            .infer_with_noise(
                &input,
                &sampler,
                &case.noise_actions,
                &case.noise_video,
                &mut output,
            )
            .unwrap();
        assert_eq!(output.actions.len(), case.actions.len());
        let action_err = max_abs_diff(&output.actions, &case.actions);
        assert!(
            action_err <= ACTION_TOL,
            "{name} {}: actions differ by {action_err:e} (> {ACTION_TOL:e})",
            path.display()
        );
        assert_eq!(output.frames.len(), case.frames_out.len());
        let frame_err = max_abs_diff(&output.frames, &case.frames_out) as f32;
        assert!(
            frame_err <= FRAME_TOL,
            "{name} {}: frames differ by {frame_err:e} (> {FRAME_TOL:e})",
            path.display()
        );
        eprintln!(
            "{name} {}: max |action err| {action_err:.2e}, max |frame err| {frame_err:.2e}",
            path.file_name().unwrap().to_string_lossy()
        );
    }
}

#[test]
fn wam_bundle_matches_pytorch() {
    check_bundle("wam_sim");
}

#[test]
fn action_only_baseline_matches_pytorch() {
    check_bundle("wam_sim_action_only");
}

#[test]
fn different_noise_gives_different_actions() {
    // The parity check above would pass vacuously if the runtime ignored the given noise.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim");
    let bundle = Bundle::load(&dir).unwrap();
    let cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    };
    let mut runtime = ModelRuntime::load(&bundle, &cfg).unwrap();
    let (_, case) = cases(&dir).remove(0);
    let mut input = runtime.new_input();
    input.frames.copy_from_slice(&case.frames);
    input.state.copy_from_slice(&case.state);
    input.tokens.copy_from_slice(&case.tokens);
    let sampler = FlowSampler::new(case.steps, 0);
    let mut a = runtime.new_output();
    let mut b = runtime.new_output();
    runtime
        .infer_with_noise(
            &input,
            &sampler,
            &case.noise_actions,
            &case.noise_video,
            &mut a,
        )
        .unwrap();
    let flipped: Vec<f32> = case.noise_actions.iter().map(|x| -x).collect();
    runtime
        .infer_with_noise(&input, &sampler, &flipped, &case.noise_video, &mut b)
        .unwrap();
    let diff = max_abs_diff(&a.actions, &b.actions);
    assert!(
        diff > 1e-6,
        "the initial noise had no effect on the actions"
    );
}

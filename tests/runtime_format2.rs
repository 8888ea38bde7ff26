//! Format 2 on the real ONNX Runtime with the generated bundles models/wam_test_state (f32) and
//! models/wam_test_state_f16: state carried across chunks (with the slide), its clearing, guidance (batched
//! and two runs), reuse, solver `none` and float16 tensors, each against the numpy reference that
//! tests/wam_testmodel/format2.py writes into tests/fixtures/wam_test_state_reference.json; and the
//! load-time checks of the state fields. Needs ORT_DYLIB_PATH (scripts/env.sh sets it).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wam_policy::bundle::Bundle;
use wam_policy::config::{NodeConfig, ParamValue, Params};
use wam_policy::runtime::{ModelRuntime, RuntimeError};
use wam_policy::sampler::FlowSampler;

const TOL: f64 = 1e-5;
/// float16 keeps 11 significant bits: values of order 1 through a few stages.
const TOL_F16: f64 = 2e-2;

#[derive(Deserialize)]
struct Fixture {
    max_len: usize,
    block: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    manifest: String,
    chunks: Vec<Chunk>,
}

#[derive(Deserialize, Clone)]
struct Chunk {
    frames: Vec<f32>,
    state: Vec<f64>,
    tokens: Vec<i64>,
    noise_actions: Vec<f32>,
    noise_video: Vec<f32>,
    actions: Vec<f64>,
    video_latents: Vec<f64>,
    past_k: Vec<f64>,
    past_v: Vec<f64>,
    length: i64,
    position: i64,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/wam_test_state_reference.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn case(name: &str) -> Case {
    fixture()
        .cases
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name} in the fixture"))
}

fn model_dir(half: bool) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(if half {
        "models/wam_test_state_f16"
    } else {
        "models/wam_test_state"
    })
}

/// A copy of the bundle with the given manifest.
fn bundle_with(manifest: &str, half: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(half)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("wam.yaml"), manifest).unwrap();
    dir
}

fn config(dir: &Path) -> NodeConfig {
    let mut p = Params::new();
    p.insert(
        "bundle_path".into(),
        ParamValue::String(dir.display().to_string()),
    );
    p.insert(
        "providers".into(),
        ParamValue::StringArray(vec!["cpu".into()]),
    );
    p.insert("dry_run".into(), ParamValue::Bool(true));
    NodeConfig::from_params(&p).unwrap()
}

struct Rig {
    _dir: tempfile::TempDir,
    runtime: ModelRuntime,
    sampler: FlowSampler,
}

fn rig(manifest: &str, half: bool) -> Rig {
    let dir = bundle_with(manifest, half);
    let bundle = Bundle::load(dir.path()).unwrap();
    let runtime = ModelRuntime::load(&bundle, &config(dir.path()).runtime).unwrap();
    let s = &bundle.manifest.sampler;
    let sampler = FlowSampler::new(s.steps, 0)
        .with_solver(s.solver())
        .with_shift(s.shift)
        .with_guidance(s.guidance())
        .with_reuse(s.reuse.as_deref().unwrap_or_default());
    sampler.validate().unwrap();
    Rig {
        _dir: dir,
        runtime,
        sampler,
    }
}

/// Outputs of one chunk: actions (physical) and video latents.
type Out = (Vec<f64>, Vec<f64>);

impl Rig {
    fn run(&mut self, chunk: &Chunk) -> Result<Out, RuntimeError> {
        let mut input = self.runtime.new_input();
        input.frames.copy_from_slice(&chunk.frames);
        input.state.copy_from_slice(&chunk.state);
        input.tokens.copy_from_slice(&chunk.tokens);
        let mut output = self.runtime.new_output();
        self.runtime.infer_with_noise(
            &input,
            &self.sampler,
            &chunk.noise_actions,
            &chunk.noise_video,
            &mut output,
        )?;
        let video = output.video_latents.iter().map(|x| f64::from(*x)).collect();
        Ok((output.actions.clone(), video))
    }

    /// The carried state: past_k, past_v, length, position.
    fn state(&self) -> (Vec<f64>, Vec<f64>, i64, i64) {
        let s = self.runtime.state().expect("the bundle carries state");
        let f = |i: usize| s.tensors[i].past.iter().map(|x| f64::from(*x)).collect();
        (f(0), f(1), s.length(), s.position())
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Runs every chunk of the case and compares outputs and state with the reference.
fn check_case(name: &str, half: bool, tol: f64) -> Rig {
    let case = case(name);
    let mut r = rig(&case.manifest, half);
    for (i, chunk) in case.chunks.iter().enumerate() {
        let (actions, video) = r.run(chunk).unwrap();
        let what = format!("{name} (f16 {half}), chunk {i}");
        let d = max_diff(&actions, &chunk.actions);
        assert!(
            d < tol,
            "{what}: actions differ by {d:e}: {actions:?} vs {:?}",
            chunk.actions
        );
        let d = max_diff(&video, &chunk.video_latents);
        assert!(d < tol, "{what}: video latents differ by {d:e}");
        let (k, v, length, position) = r.state();
        assert!(
            max_diff(&k, &chunk.past_k) < tol,
            "{what}: past_k {k:?} vs {:?}",
            chunk.past_k
        );
        assert!(
            max_diff(&v, &chunk.past_v) < tol,
            "{what}: past_v {v:?} vs {:?}",
            chunk.past_v
        );
        assert_eq!((length, position), (chunk.length, chunk.position), "{what}");
    }
    r
}

#[test]
fn state_across_chunks_matches_the_reference_and_slides() {
    let fx = fixture();
    let (m, b) = (fx.max_len as i64, fx.block as i64);
    let case = case("state");
    assert!(case.chunks.len() >= 5);
    // The fixture slides: after the second chunk the cache is full and the oldest block is dropped.
    assert_eq!((case.chunks[0].length, case.chunks[0].position), (b, 1));
    assert_eq!((case.chunks[1].length, case.chunks[1].position), (m - b, 2));
    assert_eq!(case.chunks[5].position, 6);
    let r = check_case("state", false, TOL);
    // After the slide the kept block is the newest one: positions [0, B) hold what chunk 5 wrote at
    // [length, length + B) before sliding, the tail is zero.
    let (k, _, _, _) = r.state();
    let per_pos = k.len() / fx.max_len;
    assert!(k[b as usize * per_pos..].iter().all(|x| *x == 0.0), "{k:?}");
    assert!(k[..b as usize * per_pos].iter().any(|x| *x != 0.0), "{k:?}");
    // The context's outputs stay bound across the denoise steps: written once per chunk at most,
    // while the noisy actions are written on every step.
    let (chunks, steps) = (case.chunks.len() as u64, r.sampler.evaluations() as u64);
    assert!(steps > 1);
    let writes = |input: &str| r.runtime.input_writes("denoise", input).unwrap();
    assert!((1..=chunks).contains(&writes("action_target")));
    assert_eq!(writes("noisy_actions"), chunks * steps);
}

#[test]
fn outputs_depend_on_the_carried_state() {
    // Chunk 3's input on a fresh state gives other actions than after chunks 0..2: the state matters.
    let case = case("state");
    let mut fresh = rig(&case.manifest, false);
    let (alone, _) = fresh.run(&case.chunks[3]).unwrap();
    assert!(max_diff(&alone, &case.chunks[3].actions) > 1e-3);
}

#[test]
fn clear_state_starts_afresh() {
    let case = case("state");
    let mut r = rig(&case.manifest, false);
    for chunk in &case.chunks[..3] {
        r.run(chunk).unwrap();
    }
    assert_eq!(r.state().3, 3);
    r.runtime.clear_state();
    let (k, v, length, position) = r.state();
    assert!(k.iter().chain(&v).all(|x| *x == 0.0));
    assert_eq!((length, position), (0, 0));
    // The first chunk again gives exactly the first chunk's result and state.
    let (actions, video) = r.run(&case.chunks[0]).unwrap();
    assert!(max_diff(&actions, &case.chunks[0].actions) < TOL);
    assert!(max_diff(&video, &case.chunks[0].video_latents) < TOL);
    assert!(max_diff(&r.state().0, &case.chunks[0].past_k) < TOL);
}

#[test]
fn a_failed_chunk_does_not_advance_the_state() {
    let case = case("state");
    let mut r = rig(&case.manifest, false);
    r.run(&case.chunks[0]).unwrap();
    let before = r.state();
    // A NaN joint position makes every action NaN: the chunk is refused.
    let mut bad = case.chunks[1].clone();
    bad.state[0] = f64::NAN;
    assert!(matches!(r.run(&bad), Err(RuntimeError::NonFiniteActions)));
    assert_eq!(r.state().2, before.2);
    assert_eq!(r.state().3, before.3);
    assert_eq!(r.state().0, before.0);
    // The next good chunk continues as if the failed one never happened.
    let (actions, _) = r.run(&case.chunks[1]).unwrap();
    assert!(max_diff(&actions, &case.chunks[1].actions) < TOL);
}

#[test]
fn guidance_matches_the_reference_batched_and_in_two_runs() {
    for name in ["guidance", "guidance_video"] {
        let r = check_case(name, false, TOL);
        assert!(
            r.runtime.guidance_batched(),
            "denoise.onnx has a dynamic batch"
        );
        assert!(r.runtime.uncond_state().is_some());
        // The same with the fixed-batch denoise: two runs per evaluation.
        let case = case(name);
        let manifest = case
            .manifest
            .replace("file: denoise.onnx", "file: denoise_fixed.onnx");
        let mut two = rig(&manifest, false);
        assert!(!two.runtime.guidance_batched());
        let mut batched = rig(&case.manifest, false);
        for chunk in &case.chunks {
            let (a2, v2) = two.run(chunk).unwrap();
            let (a1, v1) = batched.run(chunk).unwrap();
            assert!(
                max_diff(&a1, &a2) < 1e-6 && max_diff(&v1, &v2) < 1e-6,
                "{name}"
            );
            assert!(max_diff(&a2, &chunk.actions) < TOL, "{name}");
        }
        // The context outputs fed to denoise are written once per chunk and branch (what a GPU
        // uploads), not on each of the sampler's evaluations; the noisy inputs on every one.
        let (chunks, evaluations) = (case.chunks.len() as u64, two.sampler.evaluations() as u64);
        assert!(evaluations > 1, "{name}: {evaluations}");
        let writes = |r: &Rig, input: &str| r.runtime.input_writes("denoise", input).unwrap();
        for target in ["action_target", "video_target"] {
            let (w2, w1) = (writes(&two, target), writes(&batched, target));
            assert!(
                w2 > 0 && w2 <= 2 * chunks,
                "{name}: {target} written {w2} times"
            );
            assert!(
                w1 > 0 && w1 <= chunks,
                "{name}: {target} written {w1} times (batched)"
            );
        }
        assert_eq!(
            writes(&two, "noisy_actions"),
            2 * chunks * evaluations,
            "{name}"
        );
    }
}

#[test]
fn guidance_of_scale_one_is_no_guidance() {
    let plain = case("state");
    let guided = case("guidance")
        .manifest
        .replace("scale: 2.5", "scale: 1.0");
    let mut a = rig(&plain.manifest, false);
    let mut b = rig(&guided, false);
    for chunk in &plain.chunks {
        let (a1, v1) = a.run(chunk).unwrap();
        let (a2, v2) = b.run(chunk).unwrap();
        assert!(max_diff(&a1, &a2) < 1e-6 && max_diff(&v1, &v2) < 1e-6);
    }
    // And a scale of 2.5 does change the result.
    assert!(
        max_diff(
            &case("guidance").chunks[0].actions,
            &plain.chunks[0].actions
        ) > 1e-3
    );
}

#[test]
fn reuse_skips_the_listed_evaluation_as_the_reference_says() {
    check_case("reuse", false, TOL);
    let reuse = case("reuse");
    let plain = case("state");
    // Euler's last step on this field forgets where it started from (it ends at target + h drift t);
    // reusing evaluations 1 and 3 (the last) changes the result.
    assert!(max_diff(&reuse.chunks[0].actions, &plain.chunks[0].actions) > 1e-3);
}

#[test]
fn solver_none_is_one_run_of_the_model() {
    let r = check_case("none", false, TOL);
    assert_eq!(r.sampler.evaluations(), 1);
    // A `none` bundle with more than one step is refused at load.
    let case = case("none");
    let dir = bundle_with(&case.manifest.replace("steps: 1", "steps: 4"), false);
    let e = Bundle::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("sampler.steps") && e.contains("none"), "{e}");
}

#[test]
fn float16_bundle_matches_the_float32_reference_within_f16_precision() {
    for name in ["state", "guidance", "none"] {
        check_case(name, true, TOL_F16);
    }
    // The f16 files really declare float16 (a float32 expectation would refuse them in format 1).
    let text = std::fs::read_to_string(model_dir(true).join("wam.yaml")).unwrap();
    let dir = bundle_with(
        &text.replace("format_version: 2", "format_version: 1"),
        true,
    );
    // Format 1 knows no state: take that out too, so the element type is what fails.
    let manifest = std::fs::read_to_string(dir.path().join("wam.yaml")).unwrap();
    let cut = manifest.find("    state:\n").unwrap();
    let end = manifest.find("  denoise:\n").unwrap();
    let format1 = format!("{}{}", &manifest[..cut], &manifest[end..]);
    std::fs::write(dir.path().join("wam.yaml"), format1).unwrap();
    let bundle = Bundle::load(dir.path()).unwrap();
    let e = ModelRuntime::load(&bundle, &config(dir.path()).runtime)
        .err()
        .expect("float16 is refused in format 1")
        .to_string();
    assert!(
        e.contains("float16") && e.contains("expected float32"),
        "{e}"
    );
}

/// The load error of the state bundle with `edit` applied to its manifest.
fn state_error(edit: impl Fn(&str) -> String) -> String {
    let base = case("state").manifest;
    let edited = edit(&base);
    assert_ne!(edited, base, "the edit must change the manifest");
    let dir = bundle_with(&edited, false);
    match Bundle::load(dir.path()) {
        Err(e) => e.to_string(),
        Ok(b) => match ModelRuntime::load(&b, &config(dir.path()).runtime) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("an inconsistent state description loaded"),
        },
    }
}

#[test]
fn state_mismatches_name_stage_tensor_and_field() {
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "axis: 2",
            "axis: 4",
            &["stage `context`", "`past_k`", "axis 4", "out of range"],
        ),
        (
            "block: 2",
            "block: 3",
            &["`past_k`", "stages.context.state.block 3", "M = 4"],
        ),
        (
            "{input: past_k, output: present_k}",
            "{input: past_q, output: present_k}",
            &["`past_q`", "tensors[0].input", "no such input"],
        ),
        (
            "{input: past_v, output: present_v}",
            "{input: past_v, output: present_k}",
            &["`present_k`", "stages.context.state.tensors[1].output"],
        ),
        (
            "{input: past_v, output: present_v}",
            "{input: past_v, output: present_w}",
            &["`present_w`", "tensors[1].output", "no such output"],
        ),
        (
            "length: past_length",
            "length: tokens",
            &["stages.context.state.length", "`tokens`"],
        ),
        (
            "      position: chunk_index\n",
            "",
            &["stage `context`", "`chunk_index`", "does not name it"],
        ),
    ];
    for (old, new, wanted) in cases {
        let e = state_error(|m| m.replace(old, new));
        for w in wanted {
            assert!(e.contains(w), "{old} -> {new}: `{w}` not in: {e}");
        }
    }
    // State is a format-2 field.
    let e = state_error(|m| m.replace("format_version: 2", "format_version: 1"));
    assert!(
        e.contains("stages.context.state") && e.contains("format_version 2"),
        "{e}"
    );
}

//! Cameras of different sizes (format 2) on the real ONNX Runtime with models/wam_test_mixed (exterior
//! 8x8, wrist 4x6; tests/wam_testmodel/mixed.py states its function exactly): each camera's frames reach
//! its own encode input at its own size, each camera's predicted frames come back from its own decode
//! output, the preview tiles them, and the manifest checks name what is wrong. Needs ORT_DYLIB_PATH.

use std::path::{Path, PathBuf};

use wam_policy::bundle::Bundle;
use wam_policy::config::{Provider, RuntimeConfig};
use wam_policy::preprocess::{ImageView, Preprocessor};
use wam_policy::preview::PreviewImages;
use wam_policy::runtime::ModelRuntime;
use wam_policy::sampler::FlowSampler;

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_test_mixed")
}

fn cpu() -> RuntimeConfig {
    RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    }
}

#[test]
fn each_camera_is_encoded_and_decoded_at_its_own_size() {
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let d = bundle.dims();
    assert_eq!((d.size(0), d.size(1)), ((8, 8), (4, 6)));
    assert!(!d.uniform());
    assert_eq!(d.obs_frames_len(), 3 * 8 * 8 + 3 * 4 * 6);
    assert_eq!(d.obs_frame(1, 0), 3 * 8 * 8..3 * 8 * 8 + 3 * 4 * 6);
    assert_eq!(d.predicted_frames_len(), 2 * (3 * 8 * 8 + 3 * 4 * 6));

    // Real images of other sizes through the preprocessing of each camera: uniform pixels 191 (0.75,
    // normalized 0.5) on the exterior camera, 64 (0.25, normalized -0.5) on the wrist camera.
    let mut rt = ModelRuntime::load(&bundle, &cpu()).unwrap();
    let mut input = rt.new_input();
    for (cam, (pixel, w, h)) in [(191u8, 16, 16), (64u8, 12, 8)].into_iter().enumerate() {
        let (mh, mw) = d.size(cam);
        let mut pre = Preprocessor::new(mw, mh, [0.5; 3], [0.5; 3]);
        let data = vec![pixel; w * h * 3];
        let view = ImageView::new(w, h, w * 3, "rgb8", &data).unwrap();
        pre.process(&view, &mut input.frames[d.obs_frame(cam, 0)])
            .unwrap();
    }
    let x = [191.0f32 / 255.0 * 2.0 - 1.0, 64.0f32 / 255.0 * 2.0 - 1.0];
    input.state.copy_from_slice(&[0.2, 0.4]);
    let mut output = rt.new_output();
    let mut sampler = FlowSampler::new(bundle.manifest.sampler.steps, 5);
    rt.infer(&input, &mut sampler, &mut output).unwrap();

    // Each camera's latent is the mean of its own frame.
    let latent = d.latent_len();
    for (cam, want) in x.iter().enumerate() {
        let got = &output.observed_latents[cam * latent..(cam + 1) * latent];
        assert!(
            got.iter().all(|l| (l - want).abs() < 1e-5),
            "camera {cam}: {got:?}"
        );
    }
    // Decoded frames: camera v's value everywhere in its own frames, at its own size.
    assert!(output.frames_decoded);
    for (cam, want) in x.iter().enumerate() {
        for f in 0..d.video_frames {
            let frame = &output.frames[d.predicted_frame(cam, f)];
            assert_eq!(frame.len(), d.frame_len(cam));
            assert!(
                frame.iter().all(|p| (p - want).abs() < 1e-5),
                "camera {cam} frame {f}"
            );
        }
    }
    // Actions: the mean of both latents plus the mean of the state (identity normalization).
    let want = f64::from((x[0] + x[1]) / 2.0) + 0.3;
    assert!(
        output.actions.iter().all(|a| (a - want).abs() < 1e-5),
        "{:?} vs {want}",
        output.actions
    );

    // The preview: tiles of the largest size, the wrist's frames in the corner of theirs.
    let mut preview = PreviewImages::new(d, [0.5; 3], [0.5; 3]);
    preview.update(&output.frames, &input.frames);
    assert_eq!(preview.tiled_size(false), (2 * 8, 3 * 8));
    assert_eq!(preview.frame(1, 0).len(), 4 * 6 * 3);
    let wrist = (((x[1].clamp(0.0, 1.0)) * 255.0).round()) as u8;
    assert!(preview.frame(1, 0).iter().all(|p| *p == wrist));
    let tiled = preview.tiled(false);
    let stride = 3 * 8 * 3;
    // Row 8 (the wrist camera's first row), column 8 (its first predicted frame): the frame; column
    // 8 + 6 (past the wrist's width inside its tile): black.
    let px = |row: usize, col: usize| tiled[row * stride + col * 3];
    assert_eq!(px(8, 8), wrist);
    assert_eq!(px(8 + 5, 8), 0, "below the wrist frame inside its tile");
    let exterior = ((x[0].clamp(0.0, 1.0) * 255.0).round()) as u8;
    assert_eq!(px(0, 8), exterior);
}

/// A copy of the bundle with its manifest edited.
fn edited(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bundle_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let manifest = std::fs::read_to_string(bundle_dir().join("wam.yaml")).unwrap();
    std::fs::write(dir.path().join("wam.yaml"), edit(&manifest)).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    match Bundle::load(dir) {
        Ok(b) => match ModelRuntime::load(&b, &cpu()) {
            Ok(_) => panic!("{} loaded", dir.display()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[test]
fn mixed_sizes_need_one_frame_tensor_per_camera_named_by_camera() {
    let per_camera = "{frames: {exterior: frames_exterior, wrist: frames_wrist}}";
    let cases: [(&str, String, &str); 5] = [
        (
            "one tensor for cameras of two sizes",
            "inputs: {frames: frames_exterior}".to_string(),
            "stages.encode.inputs.frames",
        ),
        (
            "a camera missing",
            "inputs: {frames: {exterior: frames_exterior}}".to_string(),
            "stages.encode.inputs.frames.wrist",
        ),
        (
            "a name that is no camera",
            "inputs: {frames: {exterior: frames_exterior, wrist: frames_wrist, top: x}}"
                .to_string(),
            "stages.encode.inputs.frames.top",
        ),
        (
            "the tensor of another camera",
            "inputs: {frames: {exterior: frames_wrist, wrist: frames_exterior}}".to_string(),
            "frames_wrist",
        ),
        (
            "a decode output missing",
            "outputs: {frames: {exterior: frames_exterior}}".to_string(),
            "stages.decode.outputs.frames.wrist",
        ),
    ];
    for (what, replacement, needle) in cases {
        let dir = edited(|m| {
            if replacement.starts_with("outputs") {
                m.replace(&format!("outputs: {per_camera}"), &replacement)
            } else {
                m.replacen(&format!("inputs: {per_camera}"), &replacement, 1)
            }
        });
        let err = load_error(dir.path());
        assert!(err.contains(needle), "{what}: {err}");
    }
    // Format 1 has one size for all cameras.
    let dir = edited(|m| m.replace("format_version: 2", "format_version: 1"));
    let err = load_error(dir.path());
    assert!(
        err.contains("cameras[1]") && err.contains("one size"),
        "{err}"
    );
}

//! The runtime on the real ONNX Runtime with the generated test bundle (models/wam_test): exact values of the
//! test model's function, every kind of manifest/ONNX mismatch, and provider fallback. Needs ORT_DYLIB_PATH
//! (scripts/env.sh sets it).

use std::path::{Path, PathBuf};

use wam_policy::bundle::Bundle;
use wam_policy::config::{NodeConfig, ParamValue, Params, Provider};
use wam_policy::policy::{Policy, Wiring};
use wam_policy::preprocess::{ImageView, Preprocessor};
use wam_policy::runtime::{ModelInput, ModelRuntime, RuntimeError};
use wam_policy::sampler::Solver;
use wam_policy::tokenizer::InstructionEncoder;

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_test")
}

fn config(extra: &[(&str, ParamValue)]) -> NodeConfig {
    let mut p = Params::new();
    p.insert(
        "bundle_path".into(),
        ParamValue::String(bundle_dir().display().to_string()),
    );
    p.insert("warmup_runs".into(), ParamValue::Integer(1));
    // The runtime alone commands nothing: no joint limits needed.
    p.insert("dry_run".into(), ParamValue::Bool(true));
    for (k, v) in extra {
        p.insert(k.to_string(), v.clone());
    }
    NodeConfig::from_params(&p).unwrap()
}

/// A copy of the test bundle whose manifest is edited by `edit`.
fn edited_bundle(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bundle_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let manifest = dir.path().join("wam.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit must change the manifest");
    std::fs::write(&manifest, edited).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    let err = match Bundle::load(dir) {
        Err(e) => return e.to_string(),
        Ok(b) => match ModelRuntime::load(&b, &config(&[]).runtime) {
            Err(e) => e,
            Ok(_) => panic!(
                "bundle in {} loaded although it is inconsistent",
                dir.display()
            ),
        },
    };
    err.to_string()
}

/// Feeds uniform frames (exterior `p0`, wrist `p1`) through the real preprocessing into the model input.
fn fill_frames(policy_input: &mut [f32], p0: u8, p1: u8, size: (usize, usize)) {
    let b = Bundle::load(bundle_dir()).unwrap();
    let d = b.dims();
    let m = &b.manifest.image;
    let mut pre = Preprocessor::new(
        d.size(0).1,
        d.size(0).0,
        [m.mean[0], m.mean[1], m.mean[2]],
        [m.std[0], m.std[1], m.std[2]],
    );
    let (w, h) = size;
    for (cam, value) in [p0, p1].into_iter().enumerate() {
        let data = vec![value; w * h * 3];
        let view = ImageView::new(w, h, w * 3, "rgb8", &data).unwrap();
        for t in 0..d.context_frames {
            pre.process(&view, &mut policy_input[d.obs_frame(cam, t)])
                .unwrap();
        }
    }
}

/// Joint state of the exact-value tests.
const Q: [f64; 7] = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.02];

/// An input for `policy`: uniform frames (exterior 191, wrist 64), state `Q`, "Reach the red cube.".
fn reach_input(bundle: &Bundle, policy: &Policy) -> ModelInput {
    let encoder = InstructionEncoder::for_bundle(bundle).unwrap();
    let mut input = policy.new_input();
    fill_frames(&mut input.frames, 191, 64, (64, 48));
    input.state.copy_from_slice(&Q);
    encoder
        .encode_into("Reach the red cube.", &mut input.tokens)
        .unwrap();
    input
}

#[test]
fn test_model_function_is_reproduced_exactly() {
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let cfg = config(&[]);
    let mut policy = Policy::start(&bundle, &cfg).unwrap();
    assert_eq!(policy.provider_name(), "cpu");
    let mut input = reach_input(&bundle, &policy);
    let mut output = policy.new_output();
    assert_eq!(input.tokens, [2, 5, 6, 10, 0, 0, 0, 0]);
    let t = policy.process(&mut input, &mut output).unwrap();
    assert!(t.total_s > 0.0 && t.denoise_s > 0.0);
    let (b0, b1) = (191.0 / 255.0, 64.0 / 255.0);
    for i in 0..8 {
        for (j, qj) in Q.iter().enumerate() {
            let expected =
                qj + (i + 1) as f64 * (0.02 * (b0 - b1) + 0.001 * 23.0 + 0.001 * j as f64);
            let got = output.actions[i * 7 + j];
            assert!(
                (got - expected).abs() < 1e-5,
                "step {i} joint {j}: {got} vs {expected}"
            );
        }
    }
    // Predicted frames: uniform, newest frame + 0.05 (f + 1).
    let flen = 3 * 32 * 32;
    for (cam, p) in [b0, b1].iter().enumerate() {
        for f in 0..2 {
            let frame = &output.frames[(cam * 2 + f) * flen..(cam * 2 + f + 1) * flen];
            let expected = *p as f32 + 0.05 * (f + 1) as f32;
            assert!(
                frame.iter().all(|x| (x - expected).abs() < 1e-5),
                "camera {cam} frame {f}"
            );
        }
    }
}

#[test]
fn delta_and_velocity_actions_come_back_as_absolute_positions_and_keep_the_prefix() {
    // The same ONNX files declared as another action kind: the model's numbers are then deltas or
    // velocities, and the node must integrate them from the observed state.
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let cfg = config(&[]);
    let mut absolute = Policy::start(&bundle, &cfg).unwrap();
    let mut input = reach_input(&bundle, &absolute);
    let mut raw = absolute.new_output();
    absolute.process(&mut input, &mut raw).unwrap();
    let (h, a, dt) = (8, 7, bundle.manifest.action.dt);
    for kind in ["delta_joint_position", "joint_velocity"] {
        let dir =
            edited_bundle(|s| s.replace("kind: absolute_joint_position", &format!("kind: {kind}")));
        let b = Bundle::load(dir.path()).unwrap();
        let mut policy = Policy::start(&b, &config(&[])).unwrap();
        let mut input = reach_input(&b, &policy);
        let mut out = policy.new_output();
        policy.process(&mut input, &mut out).unwrap();
        for (j, &qj) in Q.iter().enumerate() {
            let mut q = qj;
            for i in 0..h {
                let m = raw.actions[i * a + j];
                let expected = if kind == "delta_joint_position" {
                    qj + m
                } else {
                    q += m * dt;
                    q
                };
                let got = out.actions[i * a + j];
                assert!(
                    (got - expected).abs() < 1e-9,
                    "{kind} step {i} joint {j}: {got} vs {expected}"
                );
            }
        }
        // A prefix given in absolute positions is converted into the model's space before inpainting:
        // a step kept with weight 1 comes back as the same absolute position.
        let mut input = reach_input(&b, &policy);
        let kept: Vec<f64> = (0..2 * a)
            .map(|k| Q[k % a] + 0.05 * (1 + k / a) as f64)
            .collect();
        input.prefix[..2 * a].copy_from_slice(&kept);
        input.prefix_weights[..2].copy_from_slice(&[1.0, 1.0]);
        input.prefix_steps = 2;
        policy.process(&mut input, &mut out).unwrap();
        for (k, want) in kept.iter().enumerate() {
            assert!(
                (out.actions[k] - want).abs() < 1e-5,
                "{kind}: kept entry {k}: {} vs {want}",
                out.actions[k]
            );
        }
    }
}

#[test]
fn prefix_steps_are_kept_by_their_weights() {
    // The test model's flow lands exactly on its known chunk, so a kept step must come out as
    // (1 - w) * chunk + w * prefix: all prefix at weight 1, halfway at 0.5, untouched after the prefix.
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let mut policy = Policy::start(&bundle, &config(&[])).unwrap();
    let mut input = reach_input(&bundle, &policy);
    let mut output = policy.new_output();
    policy.process(&mut input, &mut output).unwrap();
    let free = output.actions.clone();
    for (k, p) in input.prefix.iter_mut().enumerate() {
        *p = -0.3 + 0.01 * k as f64;
    }
    input.prefix_weights[..2].copy_from_slice(&[1.0, 0.5]);
    input.prefix_steps = 2;
    policy.process(&mut input, &mut output).unwrap();
    for j in 0..7 {
        let (p0, p1) = (input.prefix[j], input.prefix[7 + j]);
        assert!((output.actions[j] - p0).abs() < 1e-5, "step 0 joint {j}");
        let half = 0.5 * free[7 + j] + 0.5 * p1;
        assert!(
            (output.actions[7 + j] - half).abs() < 1e-5,
            "step 1 joint {j}"
        );
    }
    for (k, (got, want)) in output.actions.iter().zip(&free).enumerate().skip(14) {
        assert!((got - want).abs() < 1e-5, "entry {k} left alone");
    }
}

#[test]
fn sampler_steps_parameter_overrides_the_bundle() {
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let cfg = config(&[("sampler_steps", ParamValue::Integer(7))]);
    let policy = Policy::start(&bundle, &cfg).unwrap();
    assert_eq!(policy.sampler_steps(), 7);
}

#[test]
fn every_solver_reproduces_the_test_model_and_keeps_the_prefix() {
    // The test model's flow is a straight line to its known chunk, on which every solver is exact (the
    // data prediction is the chunk at every evaluation): each solver and shift of the manifest must give
    // the Euler answer, and keep a weight-1 prefix exactly.
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let mut euler = Policy::start(&bundle, &config(&[])).unwrap();
    assert_eq!(euler.sampler().solver(), Solver::Euler);
    assert_eq!(euler.sampler().shift(), 1.0);
    let mut input = reach_input(&bundle, &euler);
    let mut expected = euler.new_output();
    euler.process(&mut input, &mut expected).unwrap();
    let prefix: Vec<f64> = (0..input.prefix.len())
        .map(|k| -0.3 + 0.01 * k as f64)
        .collect();
    for (sampler, solver, evaluations) in [
        ("solver: heun", Solver::Heun, 7),
        ("solver: unipc\n  shift: 3.0", Solver::UniPc { order: 2 }, 4),
        (
            "solver: unipc\n  order: 1\n  shift: 0.5",
            Solver::UniPc { order: 1 },
            4,
        ),
        ("solver: euler\n  shift: 5.0", Solver::Euler, 4),
    ] {
        let dir = edited_bundle(|s| s.replace("steps: 4", &format!("steps: 4\n  {sampler}")));
        let b = Bundle::load(dir.path()).unwrap();
        let mut policy = Policy::start(&b, &config(&[])).unwrap();
        assert_eq!(policy.sampler().solver(), solver, "{sampler}");
        assert_eq!(policy.sampler().evaluations(), evaluations, "{sampler}");
        let mut output = policy.new_output();
        input.prefix_steps = 0;
        policy.process(&mut input, &mut output).unwrap();
        for (k, (got, want)) in output.actions.iter().zip(&expected.actions).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "{sampler}: entry {k}: {got} vs {want}"
            );
        }
        input.prefix.copy_from_slice(&prefix);
        input.prefix_weights[0] = 1.0;
        input.prefix_steps = 1;
        policy.process(&mut input, &mut output).unwrap();
        for (j, (got, want)) in output.actions.iter().zip(&prefix).take(7).enumerate() {
            assert!((got - want).abs() < 1e-5, "{sampler}: prefix joint {j}");
        }
    }
    // The node parameter still overrides the steps; the solver stays the bundle's.
    let dir = edited_bundle(|s| s.replace("steps: 4", "steps: 4\n  solver: heun"));
    let b = Bundle::load(dir.path()).unwrap();
    let policy = Policy::start(&b, &config(&[("sampler_steps", ParamValue::Integer(6))])).unwrap();
    assert_eq!(policy.sampler_steps(), 6);
    assert_eq!(policy.sampler().evaluations(), 11);
}

/// A manifest edit, and the words the resulting error must contain.
type MismatchCase = (&'static str, Box<dyn Fn(&str) -> String>, Vec<&'static str>);

#[test]
fn manifest_and_onnx_mismatches_name_stage_and_tensor() {
    let cases: Vec<MismatchCase> = vec![
        (
            "renamed input",
            Box::new(|s: &str| s.replace("inputs: {frames: frames}", "inputs: {frames: images}")),
            vec!["stage `encode`", "`images`", "no such input"],
        ),
        (
            "image size",
            Box::new(|s: &str| s.replace("height: 32", "height: 48")),
            vec![
                "stage `encode`",
                "`frames`",
                "dimension 4 is 32",
                "expected 48",
            ],
        ),
        (
            "latent shape",
            Box::new(|s: &str| s.replace("latent_shape: [3, 8, 8]", "latent_shape: [4, 8, 8]")),
            vec!["`latents`", "dimension 3 is 3", "expected 4"],
        ),
        (
            "frame spacing",
            Box::new(|s: &str| s.replace("context_frames: 2", "context_frames: 2\nframe_dt: -0.1")),
            vec!["field `frame_dt`", "is -0.1", "positive number of seconds"],
        ),
        (
            "resize policy",
            Box::new(|s: &str| s.replacen("width: 32}", "width: 32, resize: stretch}", 1)),
            vec![
                "unknown variant `stretch`",
                "squash",
                "letterbox",
                "center_crop",
            ],
        ),
        (
            "action kind",
            Box::new(|s: &str| s.replace("kind: absolute_joint_position", "kind: torque")),
            vec![
                "unknown variant `torque`",
                "delta_joint_position",
                "joint_velocity",
            ],
        ),
        (
            "horizon",
            Box::new(|s: &str| s.replace("horizon: 8", "horizon: 16")),
            vec!["stage `denoise`", "`noisy_actions`", "expected 16"],
        ),
        (
            "context output not listed",
            Box::new(|s: &str| {
                s.replace(
                    "outputs: [action_target, video_target]",
                    "outputs: [action_target]",
                )
            }),
            vec!["stage `denoise`", "`video_target`", "does not name it"],
        ),
        (
            "context output missing",
            Box::new(|s: &str| {
                s.replace(
                    "outputs: [action_target, video_target]",
                    "outputs: [action_target, video_target, cache]",
                )
            }),
            vec!["stage `context`", "`cache`", "no such output"],
        ),
        (
            "output renamed",
            Box::new(|s: &str| {
                s.replace(
                    "outputs: {frames: predicted_frames}",
                    "outputs: {frames: rgb}",
                )
            }),
            vec!["stage `decode`", "`rgb`", "no such output"],
        ),
        (
            "state size",
            Box::new(|s: &str| {
                s.replace("joints: [joint1, joint2, joint3, joint4, joint5, joint6, gripper]\n  mean: [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]\n  std: [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]",
                    "joints: [joint1, joint2, joint3, joint4, joint5, joint6]\n  mean: [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]\n  std: [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]")
            }),
            vec![
                "stage `context`",
                "`state`",
                "dimension 1 is 7",
                "expected 6",
            ],
        ),
        (
            "missing file",
            Box::new(|s: &str| s.replace("file: decode.onnx", "file: nowhere.onnx")),
            vec!["stages.decode.file", "nowhere.onnx", "does not exist"],
        ),
        (
            "norm length",
            Box::new(|s: &str| s.replace("mean: [0.5, 0.5, 0.5]", "mean: [0.5, 0.5]")),
            vec!["image.mean", "has 2 entries, expected 3"],
        ),
        (
            "unknown kind",
            Box::new(|s: &str| s.replace("kind: absolute_joint_position", "kind: delta_ee_pose")),
            vec!["wam.yaml", "delta_ee_pose"],
        ),
        (
            "unknown solver",
            Box::new(|s: &str| s.replace("steps: 4", "steps: 4\n  solver: dpmpp")),
            vec!["sampler.solver", "`dpmpp`", "euler", "heun", "unipc"],
        ),
        (
            "shift 0",
            Box::new(|s: &str| s.replace("steps: 4", "steps: 4\n  shift: 0.0")),
            vec!["sampler.shift", "positive finite"],
        ),
        (
            "shift NaN",
            Box::new(|s: &str| s.replace("steps: 4", "steps: 4\n  shift: .nan")),
            vec!["sampler.shift", "positive finite"],
        ),
        (
            "UniPC order 3",
            Box::new(|s: &str| s.replace("steps: 4", "steps: 4\n  solver: unipc\n  order: 3")),
            vec!["sampler.order", "is 3", "1 or 2"],
        ),
        (
            "order for heun",
            Box::new(|s: &str| s.replace("steps: 4", "steps: 4\n  solver: heun\n  order: 2")),
            vec!["sampler.order", "`unipc` solver only"],
        ),
        (
            "monitor calibration of one camera",
            Box::new(|s: &str| format!("{s}monitor:\n  latent_mean: [0.1]\n  latent_std: [0.1]\n")),
            vec![
                "monitor.latent_mean",
                "has 1 entries, expected one per camera (2)",
            ],
        ),
        (
            "monitor calibration with std 0",
            Box::new(|s: &str| {
                format!("{s}monitor:\n  latent_mean: [0.1, 0.2]\n  latent_std: [0.1, 0.0]\n")
            }),
            vec!["monitor", "latent_std finite and > 0"],
        ),
    ];
    for (what, edit, needles) in cases {
        let dir = edited_bundle(edit);
        let msg = load_error(dir.path());
        for needle in needles {
            assert!(msg.contains(needle), "{what}: `{needle}` not in: {msg}");
        }
    }
}

#[test]
fn a_monitor_calibration_is_read() {
    let dir = edited_bundle(|s| {
        format!(
            "{s}monitor:\n  latent_mean: [0.1, 0.2]\n  latent_std: [0.5, 0.25]\n  samples: 40\n"
        )
    });
    let bundle = Bundle::load(dir.path()).unwrap();
    let c = bundle.manifest.monitor.as_ref().unwrap();
    assert_eq!(
        (c.latent_mean.clone(), c.latent_std.clone(), c.samples),
        (vec![0.1, 0.2], vec![0.5, 0.25], 40)
    );
    assert!(Bundle::load(bundle_dir())
        .unwrap()
        .manifest
        .monitor
        .is_none());
}

#[test]
fn unavailable_providers_fall_back_or_refuse() {
    let bundle = Bundle::load(bundle_dir()).unwrap();
    // What this machine can really run, found independently of the runtime under test: the CPU build of
    // ONNX Runtime (the test prefix) has neither GPU provider, and without a driver neither can run.
    let cuda = cuda_usable_here();
    let trt = cuda.clone().and_then(|()| tensorrt_usable_here());
    println!("CUDA here: {cuda:?}; TensorRT here: {trt:?}");
    let expected = match (&trt, &cuda) {
        (Ok(()), _) => Provider::TensorRt,
        (_, Ok(())) => Provider::Cuda,
        _ => Provider::Cpu,
    };
    let cfg = config(&[(
        "providers",
        ParamValue::StringArray(vec!["tensorrt".into(), "cuda".into(), "cpu".into()]),
    )]);
    let rt = ModelRuntime::load(&bundle, &cfg.runtime).unwrap();
    assert_eq!(rt.provider(), expected, "CUDA: {cuda:?}; TensorRT: {trt:?}");
    assert_eq!(rt.build_times().len(), 4, "{:?}", rt.build_times());

    let cfg = config(&[("require_accelerator", ParamValue::Bool(true))]);
    match (ModelRuntime::load(&bundle, &cfg.runtime), expected) {
        (Err(e @ RuntimeError::NoAccelerator { .. }), Provider::Cpu) => {
            let msg = e.to_string();
            assert!(msg.contains("cuda") && msg.contains("tensorrt"), "{msg}");
        }
        (Ok(rt), Provider::Cuda | Provider::TensorRt) => assert_eq!(rt.provider(), expected),
        (other, _) => panic!(
            "expected {} with require_accelerator, got {:?}",
            expected.name(),
            other.err()
        ),
    }

    let cfg = config(&[("providers", ParamValue::StringArray(vec!["cuda".into()]))]);
    match (ModelRuntime::load(&bundle, &cfg.runtime), &cuda) {
        (Err(e), Err(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("stage `encode`") && msg.contains("cuda"),
                "{msg}"
            );
        }
        (Ok(rt), Ok(())) => assert_eq!(rt.provider(), Provider::Cuda),
        (Ok(_), Err(why)) => panic!("cuda loaded although it cannot run here: {why}"),
        (Err(e), Ok(())) => panic!("cuda should load on this machine but failed: {e}"),
    }

    // CUDA graphs: with CUDA, the stages after encode are captured (the bundled WAM's are plain
    // tensor graphs); without, the CPU provider runs them uncaptured.
    let cfg = config(&[
        (
            "providers",
            ParamValue::StringArray(vec!["cuda".into(), "cpu".into()]),
        ),
        ("cuda_graph", ParamValue::Bool(true)),
    ]);
    let rt = ModelRuntime::load(&bundle, &cfg.runtime).unwrap();
    match &cuda {
        Ok(()) => {
            assert_eq!(rt.provider(), Provider::Cuda);
            assert_eq!(rt.graph_stages(), ["context", "denoise", "decode"]);
        }
        Err(_) => {
            assert_eq!(rt.provider(), Provider::Cpu);
            assert!(rt.graph_stages().is_empty(), "{:?}", rt.graph_stages());
        }
    }
}

/// The folder of the ONNX Runtime library the tests load (where its provider libraries lie).
fn ort_dir() -> PathBuf {
    let lib = PathBuf::from(wam_policy::runtime::ort_library_path());
    lib.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Whether a CUDA provider can be registered here: the ONNX Runtime build has one, the NVIDIA driver's
/// libcuda.so.1 loads and a device node exists.
fn cuda_usable_here() -> Result<(), String> {
    if !ort_dir().join("libonnxruntime_providers_cuda.so").exists() {
        return Err(format!(
            "{} is a CPU build of ONNX Runtime (no libonnxruntime_providers_cuda.so beside it)",
            wam_policy::runtime::ort_library_path()
        ));
    }
    ort::util::preload_dylib("libcuda.so.1")
        .map_err(|e| format!("no NVIDIA driver ({})", dl_reason(&e)))?;
    if !Path::new("/dev/nvidiactl").exists() {
        return Err("no NVIDIA device (/dev/nvidiactl)".into());
    }
    Ok(())
}

/// Whether TensorRT can be registered too: its provider library and TensorRT 10 itself.
fn tensorrt_usable_here() -> Result<(), String> {
    if !ort_dir()
        .join("libonnxruntime_providers_tensorrt.so")
        .exists()
    {
        return Err("no TensorRT provider in this ONNX Runtime build".into());
    }
    let cfg = config(&[]).runtime;
    let lib = if cfg.trt_lib_dir.as_os_str().is_empty() {
        PathBuf::from("libnvinfer.so.10")
    } else {
        cfg.trt_lib_dir.join("libnvinfer.so.10")
    };
    ort::util::preload_dylib(&lib).map_err(|e| format!("no TensorRT 10 ({})", dl_reason(&e)))
}

/// The loader's reason (libloading's own message is only "dlopen failed").
fn dl_reason(e: &dyn std::error::Error) -> String {
    e.source()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

#[test]
fn wiring_maps_cameras_joints_and_limits() {
    let bundle = Bundle::load(bundle_dir()).unwrap();
    let names: Vec<String> = (1..=6)
        .map(|i| format!("arm_j{i}"))
        .chain(["finger".to_string()])
        .collect();
    let cfg = config(&[
        (
            "camera_names",
            ParamValue::StringArray(vec!["wrist".into(), "exterior".into()]),
        ),
        (
            "camera_topics",
            ParamValue::StringArray(vec!["/w".into(), "/e".into()]),
        ),
        ("joint_names", ParamValue::StringArray(names.clone())),
        ("joint_limits.lower", ParamValue::DoubleArray(vec![-1.0; 7])),
        (
            "joint_limits.upper",
            ParamValue::DoubleArray((0..7).map(|i| 1.0 + i as f64).collect()),
        ),
        (
            "joint_limits.max_velocity",
            ParamValue::DoubleArray(vec![1.0; 7]),
        ),
    ]);
    let w = Wiring::resolve(&bundle, &cfg).unwrap();
    assert_eq!(w.camera_topics, ["/e", "/w"]);
    assert_eq!(w.action_joint_names, names);
    assert_eq!(w.action_limits.unwrap().upper[6], 7.0);

    let bad = config(&[
        (
            "camera_names",
            ParamValue::StringArray(vec!["wrist".into(), "top".into()]),
        ),
        (
            "camera_topics",
            ParamValue::StringArray(vec!["/w".into(), "/t".into()]),
        ),
    ]);
    let msg = Wiring::resolve(&bundle, &bad).unwrap_err().to_string();
    assert!(
        msg.contains("camera_names") && msg.contains("`top`"),
        "{msg}"
    );
    let bad = config(&[("joint_names", ParamValue::StringArray(vec!["a".into()]))]);
    let msg = Wiring::resolve(&bundle, &bad).unwrap_err().to_string();
    assert!(
        msg.contains("joint_names") && msg.contains("expected one per bundle state joint"),
        "{msg}"
    );
}

/// One float32 buffer per input shape, element `i` of input `k` being `value(k, i)`.
fn input_data(shapes: &[Vec<i64>], value: impl Fn(usize, usize) -> f32) -> Vec<Vec<f32>> {
    shapes
        .iter()
        .enumerate()
        .map(|(k, s)| {
            (0..s.iter().product::<i64>() as usize)
                .map(|i| value(k, i))
                .collect()
        })
        .collect()
}

/// Float32 feeds of `data` for `inputs`, at `shapes`.
fn f32_feeds<'a>(
    inputs: &'a [wam_policy::bundle::TensorInfo],
    shapes: &'a [Vec<i64>],
    data: &'a [Vec<f32>],
) -> Vec<wam_policy::stage::Feed<'a>> {
    inputs
        .iter()
        .zip(shapes)
        .zip(data)
        .map(|((t, shape), d)| wam_policy::stage::Feed {
            name: &t.name,
            shape,
            data: wam_policy::stage::InData::F32(d),
        })
        .collect()
}

/// Every way an in-process stage binds its tensors, on CPU sessions of one ONNX file:
/// - a GPU provider's settings: the pinned host allocator is not there (the CPU build of ONNX Runtime
///   has no CUDA), so bound buffers fall back to ordinary memory; inputs are bound again whenever they
///   change;
/// - tensors at fixed addresses (what a CUDA graph needs), here in host memory: inputs are copied into
///   them when they change, outputs copied out after each run, with and without the graph's run options.
///
/// Run after run, with inputs that change and inputs that stay, all give the plain stage's outputs:
/// nothing stale, nothing lost. Then the batch changes: the stages rebind and still agree, except the
/// one with a CUDA graph, which refuses naming the input, as a captured graph cannot replay a new shape.
#[test]
fn bound_stages_see_every_input_change_and_a_cuda_graph_refuses_a_new_shape() {
    use wam_policy::runtime::cpu_session;
    use wam_policy::stage::{
        session_tensors, FixedMemory, LocalStage, OutData, Placement, StageError,
    };

    // A denoise stage with a dynamic batch.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim_dz");
    let bundle = Bundle::load(&dir).unwrap();
    let path = bundle.path_of(&bundle.manifest.stages.denoise.file);
    let declared = session_tensors(&cpu_session(&path).unwrap());
    assert!(
        declared.inputs.iter().all(|t| t.shape[0] == -1),
        "{declared:?}"
    );
    let placements = [
        Placement::Host { accelerated: false },
        Placement::Host { accelerated: true },
        Placement::Fixed {
            memory: FixedMemory::Cpu,
            graph: false,
        },
        Placement::Fixed {
            memory: FixedMemory::Cpu,
            graph: true,
        },
    ];
    // GPU tensors on a session without CUDA: a clear error, not a panic or a silent host fallback
    // (a session built for a CUDA graph must not run on addresses that move).
    let on_gpu = Placement::Fixed {
        memory: FixedMemory::Cuda,
        graph: true,
    };
    match LocalStage::new(cpu_session(&path).unwrap(), on_gpu, 0) {
        Err(e) => assert!(matches!(e, StageError::NoDeviceMemory(_)), "{e}"),
        Ok(_) => panic!("CUDA tensors allocated on a CPU session"),
    }
    let mut stages: Vec<LocalStage> = placements
        .iter()
        .map(|&p| LocalStage::new(cpu_session(&path).unwrap(), p, 0).unwrap())
        .collect();
    assert_eq!(
        stages.iter().map(LocalStage::graph).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    let outputs_of = |stage: &LocalStage| -> Vec<Vec<f32>> {
        declared
            .outputs
            .iter()
            .map(|t| match stage.output(&t.name).unwrap() {
                OutData::F32(v) => v.to_vec(),
                other => panic!("{} is {}", t.name, other.type_name()),
            })
            .collect()
    };
    let mut previous: Option<Vec<Vec<f32>>> = None;
    for run in 0..6 {
        let batch = if run < 5 { 1 } else { 2 };
        let shapes: Vec<Vec<i64>> = declared
            .inputs
            .iter()
            .map(|t| {
                let mut s = t.shape.clone();
                s[0] = batch;
                s
            })
            .collect();
        // The first input (the noisy actions) changes every run; the others only on run 2.
        let data = input_data(&shapes, |k, i| {
            let base = ((i * 7 + k * 3) % 11) as f32 * 0.02 - 0.1;
            match (k, run >= 2) {
                (0, _) => base + run as f32 * 0.03,
                (_, true) => base + 0.05,
                _ => base,
            }
        });
        let feeds = f32_feeds(&declared.inputs, &shapes, &data);
        let mut results = Vec::new();
        for (stage, placement) in stages.iter_mut().zip(&placements) {
            let ran = stage.run(&feeds);
            if batch == 2 && stage.graph() {
                match ran {
                    Err(StageError::GraphShape { name, was, now }) => {
                        assert_eq!(name, declared.inputs[0].name);
                        assert_eq!((was[0], now[0]), (1, 2));
                        let msg = StageError::GraphShape { name, was, now }.to_string();
                        assert!(msg.contains("cuda_graph"), "{msg}");
                    }
                    other => panic!("a new shape under a CUDA graph: {:?}", other.err()),
                }
                continue;
            }
            ran.unwrap_or_else(|e| panic!("run {run}, {placement:?}: {e}"));
            results.push((placement, outputs_of(stage)));
        }
        let (_, plain) = &results[0];
        for (placement, got) in &results[1..] {
            assert_eq!(
                got, plain,
                "run {run}: {placement:?} differs from the plain stage"
            );
        }
        if let Some(p) = &previous {
            assert_ne!(p, plain, "run {run}: the outputs did not follow the inputs");
        }
        assert_eq!(plain[0].len(), batch as usize * 16 * 7);
        previous = Some(plain.clone());
    }
}

/// Two binding sets of one stage, fed alternately with two branches' inputs (guidance in two runs):
/// each set keeps its branch's inputs, so the input that only differs per branch is written once per
/// set, and every run gives what a plain stage gives on the same inputs. With tensors at fixed
/// addresses and a CUDA graph's run options (one graph per set) too.
#[test]
fn binding_sets_keep_each_branch_and_write_its_fixed_inputs_once() {
    use wam_policy::runtime::cpu_session;
    use wam_policy::stage::{session_tensors, FixedMemory, LocalStage, OutData, Placement};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim");
    let bundle = Bundle::load(&dir).unwrap();
    let path = bundle.path_of(&bundle.manifest.stages.denoise.file);
    let declared = session_tensors(&cpu_session(&path).unwrap());
    let shapes: Vec<Vec<i64>> = declared.inputs.iter().map(|t| t.shape.clone()).collect();
    // Input 0 changes every run (the noisy actions); the rest differ per branch only.
    let branch_data = |branch: usize, run: usize| {
        input_data(&shapes, |k, i| {
            let base = ((i * 5 + k) % 13) as f32 * 0.01;
            if k == 0 {
                base + run as f32 * 0.02
            } else {
                base + branch as f32 * 0.07
            }
        })
    };
    let first_output = |stage: &LocalStage| match stage.output(&declared.outputs[0].name).unwrap() {
        OutData::F32(v) => v.to_vec(),
        other => panic!("{}", other.type_name()),
    };
    for placement in [
        Placement::Host { accelerated: false },
        Placement::Fixed {
            memory: FixedMemory::Cpu,
            graph: true,
        },
    ] {
        let mut plain = LocalStage::new(
            cpu_session(&path).unwrap(),
            Placement::Host { accelerated: false },
            0,
        )
        .unwrap();
        let mut sets = LocalStage::new(cpu_session(&path).unwrap(), placement, 0).unwrap();
        let rounds = 3;
        for run in 0..rounds {
            for branch in 0..2 {
                let data = branch_data(branch, run);
                let fed = f32_feeds(&declared.inputs, &shapes, &data);
                plain.run(&fed).unwrap();
                sets.select(branch).unwrap();
                sets.run(&fed).unwrap();
                assert_eq!(
                    first_output(&sets),
                    first_output(&plain),
                    "{placement:?}, run {run}, branch {branch}"
                );
            }
        }
        // The plain stage saw the branch inputs change on every run; each set once.
        let branch_input = &declared.inputs[1].name;
        assert_eq!(plain.input_writes(branch_input), 2 * rounds as u64);
        assert_eq!(sets.input_writes(branch_input), 2, "{placement:?}");
        assert_eq!(
            sets.input_writes(&declared.inputs[0].name),
            2 * rounds as u64
        );
    }
}

//! The `remote` backend against a real Triton server: `wam_policy_node triton-repo`'s repository served by
//! pytriton's tritonserver (`python -m wam_export.triton_serve`, the stages bound with onnxruntime), the
//! node's runtime talking KServe v2 binary-tensor HTTP to it. Remote chunks equal local chunks for the same
//! seed (with state carried across chunks too); a server that dies mid-run fails the chunk with a message
//! naming the model and the server, and the next chunk after it returns succeeds; a server that never
//! comes up fails start-up naming it. Needs ORT_DYLIB_PATH and the project's Python (scripts/env.sh).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "support/triton_server.rs"]
mod triton_server;
use triton_server::{free_port, Server};

use wam_policy::bundle::Bundle;
use wam_policy::config::{Backend, NodeConfig, ParamValue, Params, RuntimeConfig};
use wam_policy::runtime::{ModelRuntime, RuntimeError};
use wam_policy::sampler::FlowSampler;
use wam_policy::triton_repo::{write_repository, RepoOptions};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn local_config(bundle: &Path) -> RuntimeConfig {
    let mut p = Params::new();
    p.insert(
        "bundle_path".into(),
        ParamValue::String(bundle.display().to_string()),
    );
    p.insert(
        "providers".into(),
        ParamValue::StringArray(vec!["cpu".into()]),
    );
    p.insert("dry_run".into(), ParamValue::Bool(true));
    NodeConfig::from_params(&p).unwrap().runtime
}

fn remote_config(bundle: &Path, port: u16, prefix: &str, ready_s: f64) -> RuntimeConfig {
    let mut cfg = local_config(bundle);
    cfg.backend = Backend::Remote;
    cfg.remote.url = format!("http://127.0.0.1:{port}");
    cfg.remote.model_prefix = prefix.to_string();
    cfg.remote.ready_timeout_s = ready_s;
    cfg.remote.timeout_s = 5.0;
    cfg
}

fn sampler_for(bundle: &Bundle, seed: u64) -> FlowSampler {
    let s = &bundle.manifest.sampler;
    FlowSampler::new(s.steps, seed)
        .with_solver(s.solver())
        .with_shift(s.shift)
        .with_guidance(s.guidance())
        .with_reuse(s.reuse.as_deref().unwrap_or_default())
}

/// Deterministic, varied inputs for chunk `k`.
fn fill_input(rt: &ModelRuntime, k: usize) -> wam_policy::runtime::ModelInput {
    let mut input = rt.new_input();
    for (i, x) in input.frames.iter_mut().enumerate() {
        *x = (((i * 37 + k * 11) % 101) as f32 / 50.0) - 1.0;
    }
    for (i, q) in input.state.iter_mut().enumerate() {
        *q = 0.1 * (i as f64) - 0.05 * k as f64;
    }
    for (i, t) in input.tokens.iter_mut().enumerate() {
        *t = ((i + k) % 3) as i64 + 2;
    }
    input
}

type Chunk = (Vec<f64>, Vec<f32>);

fn chunks(rt: &mut ModelRuntime, sampler: &mut FlowSampler, n: usize) -> Vec<Chunk> {
    (0..n)
        .map(|k| {
            let input = fill_input(rt, k);
            let mut out = rt.new_output();
            rt.infer(&input, sampler, &mut out)
                .unwrap_or_else(|e| panic!("chunk {k}: {e}"));
            (out.actions.clone(), out.frames.clone())
        })
        .collect()
}

fn max_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x).into() - (*y).into()).abs())
        .fold(0.0, f64::max)
}

/// Remote and local chunks of one bundle, same seeds, `n` chunks in a row.
fn remote_equals_local(bundle_dir: &Path, prefix: &str, n: usize) {
    let repo = tempfile::tempdir().unwrap();
    let bundle = Bundle::load(bundle_dir).unwrap();
    let models = write_repository(
        &bundle,
        repo.path(),
        &RepoOptions {
            prefix: prefix.into(),
            cpu: true,
            ..RepoOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        models.len(),
        3 + usize::from(bundle.manifest.stages.decode.is_some())
    );
    let port = free_port();
    let server = Server::start(repo.path(), port);

    let mut local = ModelRuntime::load(&bundle, &local_config(bundle_dir)).unwrap();
    let mut remote =
        ModelRuntime::load(&bundle, &remote_config(bundle_dir, port, prefix, 30.0)).unwrap();
    assert_eq!(remote.provider_name(), "remote");
    let expected = chunks(&mut local, &mut sampler_for(&bundle, 7), n);
    let got = chunks(&mut remote, &mut sampler_for(&bundle, 7), n);
    for (k, ((la, lf), (ra, rf))) in expected.iter().zip(&got).enumerate() {
        let (da, df) = (max_diff(la, ra), max_diff(lf, rf));
        // The same ONNX files in the same ONNX Runtime version on the same CPU.
        assert!(da <= 1e-6, "chunk {k}: remote actions differ by {da:e}");
        assert!(df <= 1e-6, "chunk {k}: remote frames differ by {df:e}");
    }
    // The chunks differ from one another (the inputs reached the server).
    assert!(max_diff(&got[0].0, &got[1].0) > 1e-4);
    if let (Some(l), Some(r)) = (local.state(), remote.state()) {
        assert_eq!((l.length(), l.position()), (r.length(), r.position()));
        assert!(max_diff(&l.tensors[0].past, &r.tensors[0].past) <= 1e-6);
    }
    server.stop();
}

#[test]
fn remote_chunks_equal_local_chunks() {
    remote_equals_local(&repo_root().join("models/wam_sim"), "sim_", 3);
}

/// Format 2: the state carried across chunks lives in the node; the server runs stateless stages.
#[test]
fn remote_chunks_with_carried_state_equal_local_chunks() {
    remote_equals_local(&repo_root().join("models/wam_test_state"), "", 5);
}

#[test]
fn server_lost_mid_run_fails_the_chunk_and_a_returning_server_recovers() {
    let bundle_dir = repo_root().join("models/wam_sim");
    let bundle = Bundle::load(&bundle_dir).unwrap();
    let repo = tempfile::tempdir().unwrap();
    write_repository(
        &bundle,
        repo.path(),
        &RepoOptions {
            cpu: true,
            ..RepoOptions::default()
        },
    )
    .unwrap();
    let port = free_port();
    let server = Server::start(repo.path(), port);
    let mut remote =
        ModelRuntime::load(&bundle, &remote_config(&bundle_dir, port, "", 30.0)).unwrap();
    let mut sampler = sampler_for(&bundle, 3);
    let input = fill_input(&remote, 0);
    let mut out = remote.new_output();
    remote.infer(&input, &mut sampler, &mut out).unwrap();
    let first = out.actions.clone();

    server.stop();
    let mut failed = remote.new_output();
    let mut last_call = Instant::now();
    let err = remote
        .infer(&input, &mut sampler, &mut failed)
        .expect_err("a chunk without a server");
    let msg = err.to_string();
    assert!(
        matches!(err, RuntimeError::Run { ref stage, .. } if stage == "encode"),
        "{msg}"
    );
    assert!(
        msg.contains("`encode`") && msg.contains(&format!("127.0.0.1:{port}")),
        "the error names the model and the server: {msg}"
    );

    // Asked again at once (the node asks for a chunk as soon as the last one is done), the stage does not
    // call the server that just refused before its back-off has passed: 250 ms after a first failure,
    // doubling per failure up to 2 s. Each failure says when the next try comes.
    assert!(msg.contains("asked again in 0.25 s"), "{msg}");
    // The back-off starts within the failed call: measured from that call's start, the next one ends no
    // sooner than the wait.
    for wait in [0.25, 0.5] {
        let call = Instant::now();
        let again_err = remote
            .infer(&input, &mut sampler, &mut failed)
            .expect_err("still no server");
        let waited = last_call.elapsed().as_secs_f64();
        last_call = call;
        assert!(
            waited >= wait,
            "asked again {waited} s after the last call, not {wait} s"
        );
        let next = format!("asked again in {:.2} s", 2.0 * wait);
        assert!(again_err.to_string().contains(&next), "{again_err}");
    }

    Server::wait_port_free(port);
    let server = Server::start(repo.path(), port);
    let mut again = remote.new_output();
    let mut sampler = sampler_for(&bundle, 3);
    remote.infer(&input, &mut sampler, &mut again).unwrap();
    assert!(
        max_diff(&first, &again.actions) <= 1e-9,
        "the same seed after recovery gives the same chunk"
    );
    server.stop();
}

#[test]
fn a_server_that_never_comes_up_fails_start_up_naming_it() {
    let bundle_dir = repo_root().join("models/wam_sim");
    let bundle = Bundle::load(&bundle_dir).unwrap();
    let port = free_port();
    let start = Instant::now();
    let err = ModelRuntime::load(&bundle, &remote_config(&bundle_dir, port, "x_", 0.5))
        .err()
        .expect("no server");
    let msg = err.to_string();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "it waited {:?}",
        start.elapsed()
    );
    assert!(
        msg.contains("x_encode")
            && msg.contains(&format!("127.0.0.1:{port}"))
            && msg.contains("remote_ready_timeout_s"),
        "{msg}"
    );
}

/// A model whose inputs differ from the manifest is refused at start-up like a wrong ONNX file, naming
/// the stage and tensor.
#[test]
fn a_served_model_that_disagrees_with_the_manifest_is_refused() {
    let bundle_dir = repo_root().join("models/wam_sim");
    let bundle = Bundle::load(&bundle_dir).unwrap();
    let other = Bundle::load(repo_root().join("models/wam_test_state")).unwrap();
    let repo = tempfile::tempdir().unwrap();
    // wam_test_state's stages under wam_sim's names.
    write_repository(
        &other,
        repo.path(),
        &RepoOptions {
            cpu: true,
            ..RepoOptions::default()
        },
    )
    .unwrap();
    // wam_sim has a decode stage, wam_test_state has none: serve wam_sim's decode too.
    let sim_repo = tempfile::tempdir().unwrap();
    write_repository(
        &bundle,
        sim_repo.path(),
        &RepoOptions {
            cpu: true,
            ..RepoOptions::default()
        },
    )
    .unwrap();
    copy_dir(&sim_repo.path().join("decode"), &repo.path().join("decode"));
    let port = free_port();
    let server = Server::start(repo.path(), port);
    let err = ModelRuntime::load(&bundle, &remote_config(&bundle_dir, port, "", 30.0))
        .err()
        .expect("a mismatched model");
    let msg = err.to_string();
    assert!(msg.contains("encode") || msg.contains("context"), "{msg}");
    server.stop();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), dst).unwrap();
        }
    }
}

/// The repository's config.pbtxt per stage: the ONNX file's tensors with Triton's types, the accelerator
/// options, and the prefix rules.
#[test]
fn triton_repo_writes_one_model_per_stage() {
    let bundle = Bundle::load(repo_root().join("models/wam_sim")).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let opts = RepoOptions {
        prefix: "sim_".into(),
        fp16: true,
        ..RepoOptions::default()
    };
    let dirs = write_repository(&bundle, repo.path(), &opts).unwrap();
    let names: Vec<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        ["sim_encode", "sim_context", "sim_denoise", "sim_decode"]
    );
    let cfg = std::fs::read_to_string(repo.path().join("sim_denoise/config.pbtxt")).unwrap();
    assert!(cfg.contains("name: \"sim_denoise\""), "{cfg}");
    assert!(cfg.contains("backend: \"onnxruntime\""), "{cfg}");
    assert!(
        cfg.contains("{ name: \"noisy_actions\" data_type: TYPE_FP32 dims: [ 1, 16, 7 ] }"),
        "{cfg}"
    );
    assert!(
        cfg.contains("KIND_GPU") && cfg.contains("value: \"FP16\""),
        "{cfg}"
    );
    let onnx = std::fs::read(
        repo_root()
            .join("models/wam_sim")
            .join(&bundle.manifest.stages.denoise.file),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(repo.path().join("sim_denoise/1/model.onnx")).unwrap(),
        onnx
    );
    let bad = write_repository(
        &bundle,
        repo.path(),
        &RepoOptions {
            prefix: "a/b".into(),
            ..RepoOptions::default()
        },
    )
    .unwrap_err();
    assert!(bad.to_string().contains("a/b"), "{bad}");
}

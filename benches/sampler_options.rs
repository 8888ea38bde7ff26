//! What each sampler option costs per chunk (issue 11), in the real ONNX Runtime on this machine's CPU:
//! one whole inference (encode, context, the denoise runs, decode) of
//! - the bundled WAM (models/wam_sim, format 1) with Euler at K = 1, 2, 4, 8, Heun and UniPC at K = 4,
//!   step reuse on K = 4 and 8, classifier-free guidance (the manifest edited to format 2 with guidance
//!   on video: the stage has batch 1, so two denoise runs per evaluation), and the decode skipped
//!   (`video_decode: on_demand` with nobody watching);
//! - the DreamZero-style bundle (models/wam_sim_dz: carried KV cache, batched guidance, UniPC K = 8,
//!   reuse [3, 5]) as exported, without reuse, and without guidance;
//! - float16 against float32 on the format-2 test bundles (models/wam_test_state{,_f16}): ONNX Runtime's
//!   CPU provider has few float16 kernels, so this measures the conversion and casts, not a GPU's gain.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wam_policy::bundle::Bundle;
use wam_policy::config::{Provider, RuntimeConfig};
use wam_policy::runtime::{ModelInput, ModelRuntime};
use wam_policy::sampler::{FlowSampler, Guidance, Solver};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn cpu() -> RuntimeConfig {
    RuntimeConfig {
        providers: vec![Provider::Cpu],
        ..RuntimeConfig::default()
    }
}

/// A copy of `name` with its manifest edited by `edit` (the ONNX files are shared).
fn edited(name: &str, edit: impl Fn(&str) -> String) -> (tempfile::TempDir, Bundle) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(models().join(name)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let manifest = dir.path().join("wam.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let new = edit(&text);
    assert_ne!(new, text, "the edit must change the manifest");
    std::fs::write(&manifest, new).unwrap();
    let bundle = Bundle::load(dir.path()).unwrap();
    (dir, bundle)
}

/// An input of mid-grey frames and the mean state.
fn input(bundle: &Bundle, runtime: &ModelRuntime) -> ModelInput {
    let mut input = runtime.new_input();
    input.frames.fill(0.0);
    for (q, m) in input.state.iter_mut().zip(&bundle.manifest.state.mean) {
        *q = f64::from(*m);
    }
    input
}

fn bench_case(
    c: &mut Criterion,
    group: &str,
    name: &str,
    bundle: &Bundle,
    sampler: FlowSampler,
    decode: bool,
) {
    let mut runtime = ModelRuntime::load(bundle, &cpu()).unwrap();
    let mut sampler = sampler;
    sampler.validate().unwrap();
    let mut input = input(bundle, &runtime);
    input.decode = decode;
    let mut output = runtime.new_output();
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    g.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| runtime.infer(&input, &mut sampler, &mut output).unwrap())
    });
    g.finish();
}

/// The bundle's own sampler (solver, shift, guidance, reuse) at its steps.
fn manifest_sampler(bundle: &Bundle) -> FlowSampler {
    let s = &bundle.manifest.sampler;
    FlowSampler::new(s.steps, 0)
        .with_solver(s.solver())
        .with_shift(s.shift)
        .with_guidance(s.guidance())
        .with_reuse(s.reuse.as_deref().unwrap_or_default())
}

fn bench_wam_sim(c: &mut Criterion) {
    let bundle = Bundle::load(models().join("wam_sim")).unwrap();
    let group = "wam_sim_chunk";
    for k in [1, 2, 4, 8] {
        let s = FlowSampler::new(k, 0);
        bench_case(c, group, &format!("euler_k{k}"), &bundle, s, true);
    }
    let heun = FlowSampler::new(4, 0).with_solver(Solver::Heun);
    bench_case(c, group, "heun_k4", &bundle, heun, true);
    let unipc = FlowSampler::new(4, 0).with_solver(Solver::UniPc { order: 2 });
    bench_case(c, group, "unipc2_k4", &bundle, unipc, true);
    let reuse = FlowSampler::new(4, 0).with_reuse(&[2]);
    bench_case(c, group, "euler_k4_reuse_2", &bundle, reuse, true);
    let reuse = FlowSampler::new(8, 0).with_reuse(&[2, 4, 6]);
    bench_case(c, group, "euler_k8_reuse_2_4_6", &bundle, reuse, true);
    let no_decode = FlowSampler::new(2, 0);
    bench_case(c, group, "euler_k2_no_decode", &bundle, no_decode, false);

    let (_dir, guided) = edited("wam_sim", |s| {
        s.replacen("format_version: 1", "format_version: 2", 1)
            .replacen(
                "sampler:\n",
                "sampler:\n  guidance: {scale: 3.0, apply_to: [video]}\n",
                1,
            )
    });
    let g = FlowSampler::new(2, 0).with_guidance(Some(Guidance {
        scale: 3.0,
        actions: false,
        video: true,
    }));
    bench_case(c, group, "euler_k2_guidance_two_runs", &guided, g, true);
}

fn bench_dz(c: &mut Criterion) {
    let bundle = Bundle::load(models().join("wam_sim_dz")).unwrap();
    let group = "wam_sim_dz_chunk";
    let exported = manifest_sampler(&bundle);
    bench_case(c, group, "as_exported", &bundle, exported, true);
    let no_reuse = manifest_sampler(&bundle).with_reuse(&[]);
    bench_case(c, group, "no_reuse", &bundle, no_reuse, true);
    let no_decode = manifest_sampler(&bundle);
    bench_case(c, group, "as_exported_no_decode", &bundle, no_decode, false);
    let (_dir, unguided) = edited("wam_sim_dz", |s| {
        let start = s.find("  guidance:").expect("the DZ bundle is guided");
        let end = start + s[start..].find('\n').unwrap() + 1;
        // A one-line `guidance: {...}` entry or a block: drop the line and its indented children.
        let mut rest = &s[end..];
        while rest.starts_with("    ") {
            rest = &rest[rest.find('\n').unwrap() + 1..];
        }
        format!("{}{}", &s[..start], rest)
    });
    let unguided_sampler = manifest_sampler(&unguided);
    bench_case(c, group, "no_guidance", &unguided, unguided_sampler, true);
}

fn bench_f16(c: &mut Criterion) {
    for name in ["wam_test_state", "wam_test_state_f16"] {
        let bundle = Bundle::load(models().join(name)).unwrap();
        let s = manifest_sampler(&bundle);
        bench_case(c, "test_state_chunk", name, &bundle, s, true);
    }
}

criterion_group!(benches, bench_wam_sim, bench_dz, bench_f16);
criterion_main!(benches);

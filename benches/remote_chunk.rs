//! What running the stages on a Triton server costs per chunk (issue 15): the bundled WAM (models/wam_sim,
//! K = 4: one encode, one context, four denoise and one decode run per chunk) in this process against the
//! same ONNX files served by a real tritonserver on loopback (`wam_policy_node triton-repo` + pytriton,
//! whose Python backend adds a process hop per request that Triton's own ONNX Runtime backend does not
//! have). Needs the project's Python (scripts/env.sh) and .prefix-triton (scripts/setup.sh).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use wam_policy::bundle::Bundle;
use wam_policy::config::{Backend, Provider, RuntimeConfig};
use wam_policy::runtime::ModelRuntime;
use wam_policy::sampler::FlowSampler;
use wam_policy::triton_repo::{write_repository, RepoOptions};

#[path = "../tests/support/triton_server.rs"]
mod triton_server;
use triton_server::{free_port, Server};

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wam_sim");
    let bundle = Bundle::load(&dir).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let opts = RepoOptions {
        cpu: true,
        ..RepoOptions::default()
    };
    write_repository(&bundle, repo.path(), &opts).unwrap();
    let port = free_port();
    let server = Server::start(repo.path(), port);
    let local_cfg = RuntimeConfig {
        providers: vec![Provider::Cpu],
        intra_op_threads: 1,
        ..RuntimeConfig::default()
    };
    let mut remote_cfg = local_cfg.clone();
    remote_cfg.backend = Backend::Remote;
    remote_cfg.remote.url = format!("http://127.0.0.1:{port}");
    let mut group = c.benchmark_group("chunk");
    for (name, cfg) in [("local", &local_cfg), ("remote", &remote_cfg)] {
        let mut rt = ModelRuntime::load(&bundle, cfg).unwrap();
        let mut sampler = FlowSampler::new(4, 1);
        let input = rt.new_input();
        let mut output = rt.new_output();
        group.bench_function(name, |b| {
            b.iter(|| rt.infer(&input, &mut sampler, &mut output).unwrap())
        });
    }
    group.finish();
    server.stop();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! What IoBinding saves per stage run on the CPU (issue 15): the bundled WAM's denoise stage (models/wam_sim,
//! run K times per chunk) and context stage, and the tiny stages of models/wam_test_state (where the cost
//! of a run besides the model shows), fed the same inputs
//! - `views`: the way the runtime ran stages before: borrowed tensor views built per run, ONNX Runtime
//!   allocating the outputs, which are copied out;
//! - `binding`: `stage::LocalStage`, what the runtime runs now: inputs refilled in place in bound tensors,
//!   outputs written into tensors bound after the first run, copied out the same way.
//! - `fixed`: `Placement::Fixed` in host memory, the path a CUDA graph runs on: every tensor also at a
//!   fixed address, inputs copied in when they change (here they do not), outputs copied out per run.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use wam_policy::bundle::{Bundle, ElemType, TensorInfo};
use wam_policy::runtime::cpu_session;
use wam_policy::stage::{
    session_tensors, Feed, FixedMemory, InData, LocalStage, OutData, Placement,
};

/// Inputs of the stage's declared shapes (dynamic dimensions as 1), float32 or int64.
struct Inputs {
    infos: Vec<TensorInfo>,
    shapes: Vec<Vec<i64>>,
    f32s: Vec<Vec<f32>>,
    i64s: Vec<Vec<i64>>,
}

fn inputs(session: &Session) -> Inputs {
    let infos = session_tensors(session).inputs;
    let shapes: Vec<Vec<i64>> = infos
        .iter()
        .map(|t| t.shape.iter().map(|d| (*d).max(1)).collect())
        .collect();
    let len = |s: &Vec<i64>| s.iter().product::<i64>() as usize;
    let f32s = shapes
        .iter()
        .map(|s| {
            (0..len(s))
                .map(|i| ((i % 17) as f32) / 17.0 - 0.5)
                .collect()
        })
        .collect();
    let i64s = shapes.iter().map(|s| vec![1; len(s)]).collect();
    Inputs {
        infos,
        shapes,
        f32s,
        i64s,
    }
}

fn feeds(inp: &Inputs) -> Vec<Feed<'_>> {
    inp.infos
        .iter()
        .enumerate()
        .map(|(i, t)| Feed {
            name: &t.name,
            shape: &inp.shapes[i],
            data: match t.elem {
                ElemType::I64 => InData::I64(&inp.i64s[i]),
                _ => InData::F32(&inp.f32s[i]),
            },
        })
        .collect()
}

fn run_views(session: &mut Session, inp: &Inputs, outs: &mut [Vec<f32>], names: &[String]) {
    let mut values: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inp.infos.len());
    for (i, t) in inp.infos.iter().enumerate() {
        let v: SessionInputValue<'_> = match t.elem {
            ElemType::I64 => {
                TensorRef::from_array_view((inp.shapes[i].as_slice(), inp.i64s[i].as_slice()))
                    .unwrap()
                    .into()
            }
            _ => TensorRef::from_array_view((inp.shapes[i].as_slice(), inp.f32s[i].as_slice()))
                .unwrap()
                .into(),
        };
        values.push((t.name.clone(), v));
    }
    let results = session.run(values).unwrap();
    for (dst, name) in outs.iter_mut().zip(names) {
        let (_, data) = results[name.as_str()].try_extract_tensor::<f32>().unwrap();
        dst.clear();
        dst.extend_from_slice(data);
    }
}

fn run_binding(stage: &mut LocalStage, inp: &Inputs, outs: &mut [Vec<f32>], names: &[String]) {
    stage.run(&feeds(inp)).unwrap();
    for (dst, name) in outs.iter_mut().zip(names) {
        let OutData::F32(data) = stage.output(name).unwrap() else {
            panic!("{name} is not float32");
        };
        dst.clear();
        dst.extend_from_slice(data);
    }
}

fn bench(c: &mut Criterion) {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let sim = Bundle::load(models.join("wam_sim")).unwrap();
    let tiny = Bundle::load(models.join("wam_test_state")).unwrap();
    let mut group = c.benchmark_group("stage_run");
    for (name, bundle, file) in [
        ("wam_sim/denoise", &sim, &sim.manifest.stages.denoise.file),
        ("wam_sim/context", &sim, &sim.manifest.stages.context.file),
        // Stages of a few microseconds: what a run costs besides the model.
        (
            "wam_test_state/denoise",
            &tiny,
            &tiny.manifest.stages.denoise.file,
        ),
        (
            "wam_test_state/context",
            &tiny,
            &tiny.manifest.stages.context.file,
        ),
    ] {
        let path = bundle.path_of(file);
        let mut session = cpu_session(&path).unwrap();
        let inp = inputs(&session);
        let names: Vec<String> = session_tensors(&session)
            .outputs
            .into_iter()
            .filter(|t| t.elem == ElemType::F32)
            .map(|t| t.name)
            .collect();
        let mut outs = vec![Vec::new(); names.len()];
        group.bench_function(format!("{name}/views"), |b| {
            b.iter(|| run_views(&mut session, &inp, &mut outs, &names))
        });
        let host = Placement::Host { accelerated: false };
        let mut stage = LocalStage::new(cpu_session(&path).unwrap(), host, 0).unwrap();
        let mut bound = vec![Vec::new(); names.len()];
        group.bench_function(format!("{name}/binding"), |b| {
            b.iter(|| run_binding(&mut stage, &inp, &mut bound, &names))
        });
        // Tensors at fixed addresses (the CUDA graph path), here in host memory: what its copies in and
        // out cost on top of the binding.
        let fixed = Placement::Fixed {
            memory: FixedMemory::Cpu,
            graph: false,
        };
        let mut fixed_stage = LocalStage::new(cpu_session(&path).unwrap(), fixed, 0).unwrap();
        let mut fixed_out = vec![Vec::new(); names.len()];
        group.bench_function(format!("{name}/fixed"), |b| {
            b.iter(|| run_binding(&mut fixed_stage, &inp, &mut fixed_out, &names))
        });
        // Same numbers every way.
        run_views(&mut session, &inp, &mut outs, &names);
        run_binding(&mut stage, &inp, &mut bound, &names);
        run_binding(&mut fixed_stage, &inp, &mut fixed_out, &names);
        assert_eq!(outs, bound, "{name}: binding changed the outputs");
        assert_eq!(outs, fixed_out, "{name}: fixed tensors changed the outputs");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

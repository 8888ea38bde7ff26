//! `check <bundle>`: load a bundle, validate it against its ONNX files, run inferences on synthetic input
//! and print per-stage latency and the execution provider: how a user checks an exported model.

use anyhow::{bail, Context};
use wam_policy::bundle::Bundle;
use wam_policy::config::{NodeConfig, ParamValue, Params};
use wam_policy::policy::Policy;
use wam_policy::stats::LatencyWindow;
use wam_policy::tokenizer::InstructionEncoder;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut params = Params::new();
    let mut runs = 10usize;
    let mut dump: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--providers" => {
                let list = value("--providers")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                params.insert("providers".into(), ParamValue::StringArray(list));
            }
            "--steps" => {
                let k: i64 = value("--steps")?
                    .parse()
                    .context("--steps expects an integer")?;
                params.insert("sampler_steps".into(), ParamValue::Integer(k));
            }
            "--runs" => {
                runs = value("--runs")?
                    .parse()
                    .context("--runs expects an integer")?
            }
            "--dump" => dump = Some(value("--dump")?.into()),
            "--param" => {
                let (name, v) = wam_policy::config::parse_override(&value("--param")?)?;
                params.insert(name, v);
            }
            "--require-accelerator" => {
                params.insert("require_accelerator".into(), ParamValue::Bool(true));
            }
            other if other.starts_with("--") => bail!("unknown option {other}"),
            path => {
                params.insert("bundle_path".into(), ParamValue::String(path.to_string()));
            }
        }
    }
    if !params.contains_key("bundle_path") {
        bail!("usage: wam_policy_node check <bundle_dir> [--providers tensorrt,cuda,cpu] [--steps K] [--runs N] [--dump FILE] [--param name=value ...]");
    }
    // A check runs the model only and commands nothing: no joint limits needed.
    params.insert("dry_run".into(), ParamValue::Bool(true));
    let cfg = NodeConfig::from_params(&params)?;
    let bundle = Bundle::load(&cfg.bundle_path)?;
    let mut policy = Policy::start(&bundle, &cfg)?;
    let d = *policy.dims();
    println!("bundle      {}", bundle.dir.display());
    println!("model_id    {}", policy.model_id);
    println!("provider    {}", policy.provider_name());
    let builds = policy.runtime().build_times();
    let per_stage: Vec<String> = builds
        .iter()
        .map(|(stage, s)| format!("{stage} {:.1} ms", s * 1e3))
        .collect();
    println!(
        "sessions    built in {:.1} ms ({})",
        builds.iter().map(|(_, s)| s).sum::<f64>() * 1e3,
        per_stage.join(", ")
    );
    let graphs = policy.runtime().graph_stages();
    if cfg.runtime.cuda_graph || !graphs.is_empty() {
        println!(
            "cuda_graph  {}",
            if graphs.is_empty() {
                "none (see the log for why)".to_string()
            } else {
                graphs.join(", ")
            }
        );
    }
    let sizes: Vec<String> = (0..d.cameras)
        .map(|v| format!("{}x{}", d.size(v).0, d.size(v).1))
        .collect();
    let sizes = if d.uniform() {
        sizes[0].clone()
    } else {
        format!("{} (one encode input per camera)", sizes.join(", "))
    };
    println!(
        "inputs      {} cameras x {} frames of {sizes}, {} state joints, {} instruction tokens",
        d.cameras, d.context_frames, d.state, d.tokens
    );
    let m = &bundle.manifest;
    let resize: Vec<String> = m
        .cameras
        .iter()
        .map(|c| format!("{} {}", c.name, c.resize.name()))
        .collect();
    println!(
        "frames      {}, resize: {}",
        m.frame_dt
            .map_or("the newest T, as published".to_string(), |dt| format!(
                "{dt} s apart (frame_dt)"
            )),
        resize.join(", ")
    );
    println!("actions     {}, dt {} s", m.action.kind.name(), m.action.dt);
    println!(
        "outputs     {} steps x {} joints, {} predicted frames per camera{}",
        d.horizon,
        d.action,
        d.video_frames,
        if policy.has_decoder() {
            ""
        } else {
            " (no decode stage)"
        }
    );
    let m = &bundle.manifest;
    println!("format      {}", m.format_version);
    let sampler = policy.sampler();
    println!(
        "denoising   {} steps, solver {}, shift {} ({} evaluations per chunk)",
        sampler.steps(),
        sampler.solver(),
        sampler.shift(),
        sampler.evaluations()
    );
    let guidance = match sampler.guidance() {
        Some(g) => format!(
            "{g}, {}",
            if policy.runtime().guidance_batched() {
                "both branches in one denoise run (batch 2)"
            } else {
                "two denoise runs per evaluation"
            }
        ),
        None => "none".into(),
    };
    println!("guidance    {guidance}");
    println!(
        "reuse       {} ({} model runs per chunk)",
        if sampler.reuse().is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", sampler.reuse())
        },
        sampler.model_runs()
    );
    match (&m.stages.context.state, policy.runtime().state()) {
        (Some(spec), Some(state)) => {
            let pairs: Vec<String> = spec
                .tensors
                .iter()
                .map(|t| format!("{} -> {}", t.input, t.output))
                .collect();
            println!(
                "state       {} (axis {}, M = {}, B = {}, length `{}`, position {})",
                pairs.join(", "),
                spec.axis,
                state.max_len(),
                state.block(),
                spec.length,
                spec.position
                    .as_deref()
                    .map_or("none".to_string(), |p| format!("`{p}`"))
            );
        }
        _ => println!("state       none (no state carried across chunks)"),
    }
    let mut input = policy.new_input();
    input
        .state
        .iter_mut()
        .zip(&bundle.manifest.state.mean)
        .for_each(|(q, m)| *q = f64::from(*m));
    InstructionEncoder::for_bundle(&bundle)?.encode_into("", &mut input.tokens)?;
    let mut output = policy.new_output();
    let names = ["encode", "context", "denoise", "decode", "total"];
    let mut windows: Vec<LatencyWindow> = names
        .iter()
        .map(|_| LatencyWindow::new(runs.max(1)))
        .collect();
    for _ in 0..runs.max(1) {
        let t = policy.process(&mut input, &mut output)?;
        for (w, v) in
            windows
                .iter_mut()
                .zip([t.encode_s, t.context_s, t.denoise_s, t.decode_s, t.total_s])
        {
            w.record(v);
        }
    }
    println!(
        "\n{:<10} {:>10} {:>10} {:>10}   ({} runs after warm-up)",
        "stage",
        "p50 ms",
        "p95 ms",
        "max ms",
        runs.max(1)
    );
    for (name, w) in names.iter().zip(windows.iter_mut()) {
        println!(
            "{:<10} {:>10.3} {:>10.3} {:>10.3}",
            name,
            w.percentile(50.0) * 1e3,
            w.percentile(95.0) * 1e3,
            w.max() * 1e3
        );
    }
    if let Some(path) = &dump {
        write_dump(path, &output).with_context(|| format!("cannot write {}", path.display()))?;
        println!("dump        {} (the last run's outputs)", path.display());
    }
    let finite = output.actions.iter().all(|a| a.is_finite());
    println!("\nfirst action step: {:?}", &output.actions[..d.action]);
    if !finite {
        bail!("the model produced non-finite actions");
    }
    println!("OK");
    Ok(())
}

/// The last run's outputs as text, one line per tensor (`name v1 v2 ...`), for comparing providers
/// (scripts/gpu_check.sh compares a GPU run with a CPU run of the same seed).
fn write_dump(
    path: &std::path::Path,
    output: &wam_policy::runtime::ModelOutput,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::new();
    let mut line = |name: &str, values: &mut dyn Iterator<Item = f64>| {
        text.push_str(name);
        for v in values {
            let _ = write!(text, " {v:e}");
        }
        text.push('\n');
    };
    line("actions", &mut output.actions.iter().copied());
    line(
        "video_latents",
        &mut output.video_latents.iter().map(|&v| f64::from(v)),
    );
    line("frames", &mut output.frames.iter().map(|&v| f64::from(v)));
    std::fs::write(path, text)
}

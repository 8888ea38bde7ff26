//! `wam_policy_node`: the ROS 2 node, and `wam_policy_node check <bundle>` to validate an exported bundle.

use std::process::ExitCode;

mod check;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    init_logging();
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("check") => check::run(&args[2..]),
        Some("replay") => run_replay(&args[2..]),
        Some("triton-repo") => triton_repo(&args[2..]),
        Some("params") => {
            print!("{}", wam_policy::config::parameters_markdown());
            Ok(())
        }
        Some("-h" | "--help") => {
            println!("usage: wam_policy_node [--ros-args ...]\n       wam_policy_node check <bundle_dir> [--providers cpu,cuda,...] [--steps K] [--runs N] [--dump FILE] [--param name=value ...]\n       wam_policy_node replay <recording.mcap> [--param name=value ...]\n       wam_policy_node triton-repo <bundle_dir> <out_dir> [--prefix P] [--fp16] [--cpu]   (a Triton model repository, one model per stage)\n       wam_policy_node params   (the parameter table as markdown)");
            Ok(())
        }
        _ => run_node(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The one place start-up errors are reported.
            eprintln!("wam_policy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `triton-repo <bundle> <out> [--prefix P] [--fp16] [--cpu]`.
fn triton_repo(args: &[String]) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use wam_policy::triton_repo::{write_repository, RepoOptions};
    let mut opts = RepoOptions::default();
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--prefix" => opts.prefix = it.next().cloned().context("--prefix needs a value")?,
            "--fp16" => opts.fp16 = true,
            "--cpu" => opts.cpu = true,
            other if other.starts_with("--") => bail!("unknown option {other}"),
            path => paths.push(std::path::PathBuf::from(path)),
        }
    }
    let [bundle_dir, out] = paths.as_slice() else {
        bail!("usage: wam_policy_node triton-repo <bundle_dir> <out_dir> [--prefix P] [--fp16] [--cpu]");
    };
    let bundle = wam_policy::bundle::Bundle::load(bundle_dir)
        .with_context(|| format!("bundle {}", bundle_dir.display()))?;
    let models = write_repository(&bundle, out, &opts)
        .with_context(|| format!("Triton repository {}", out.display()))?;
    for m in &models {
        println!("{}", m.display());
    }
    println!(
        "serve with: tritonserver --model-repository {}   then run the node with backend: remote, remote_model_prefix: \"{}\"",
        out.display(),
        opts.prefix
    );
    Ok(())
}

#[cfg(feature = "ros")]
fn run_node() -> anyhow::Result<()> {
    use anyhow::Context;
    wam_policy::ros::run().context("wam_policy node")
}

#[cfg(feature = "ros")]
fn run_replay(args: &[String]) -> anyhow::Result<()> {
    use anyhow::Context;
    wam_policy::ros::replay::run(args).context("replay")
}

#[cfg(not(feature = "ros"))]
fn run_replay(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("this build has no ROS layer (built without the `ros` feature): replay needs it to decode messages")
}

#[cfg(not(feature = "ros"))]
fn run_node() -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no ROS layer (built without the `ros` feature); only `check` is available"
    )
}

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
        Some("params") => {
            print!("{}", wam_policy::config::parameters_markdown());
            Ok(())
        }
        Some("-h" | "--help") => {
            println!("usage: wam_policy_node [--ros-args ...]\n       wam_policy_node check <bundle_dir> [--providers cpu,cuda,...] [--steps K] [--runs N] [--dump FILE] [--param name=value ...]\n       wam_policy_node replay <recording.mcap> [--param name=value ...]\n       wam_policy_node params   (the parameter table as markdown)");
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

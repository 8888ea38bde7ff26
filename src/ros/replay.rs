//! `wam_policy_node replay <file.mcap> [--param name=value ...]`: runs a recording's inputs through the
//! same controller, model and seed on a simulated clock and checks that the same commands come out.
//!
//! The recording holds every input with the node-clock time it was taken, and every decision point of
//! the controller (control ticks, service calls, inference results with the time they arrived). Replay
//! calls the controller at those times; an inference runs when the controller starts it (so the
//! sampler's noise comes in the same order) and its result is delivered at its recorded finish time, so
//! latency-dependent decisions come out the same. No ROS graph is needed: messages are decoded with
//! the ROS typesupport, as rosbag2 does.

use anyhow::{bail, Context as _};
use r2r::WrappedTypesupport;

use super::camera_bytes_into;
use super::messages::{
    seconds_of, CommandMessages, CommandMsg, Float64ArrayMsg, JointStateMsg, StringMsg,
    TrajectoryMsg,
};
use super::recording::{
    Event, EVENTS_TOPIC, META_CAMERA_PREFIX, META_COMMAND, META_INSTRUCTION, META_JOINT_STATES,
    META_PARAMETERS,
};
use crate::bundle::Bundle;
use crate::config::{params_from_yaml, parse_override, updated_params, NodeConfig, ParamValue};
use crate::controller::{Command, Controller, Outbox};
use crate::policy::{Policy, Wiring};
use crate::record::read_recording;
use crate::runtime::StageTimings;
use crate::worker::Job;

/// Commands match when every value (positions, velocities, times) agrees this closely.
const TOLERANCE: f64 = 1e-6;

fn decode<T: WrappedTypesupport>(data: &[u8], topic: &str) -> anyhow::Result<T> {
    T::from_serialized_bytes(data).with_context(|| format!("cannot decode a message on {topic}"))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(path) = args.first() else {
        bail!("usage: wam_policy_node replay <file.mcap> [--param name=value ...]");
    };
    let mut overrides = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--param" => {
                let Some(p) = rest.next() else {
                    bail!("--param needs name=value");
                };
                overrides.push(parse_override(p)?);
            }
            other => bail!("unknown argument `{other}`"),
        }
    }
    let mut recording = read_recording(std::path::Path::new(path))
        .with_context(|| format!("cannot read the recording {path}"))?;
    // In the order the node took them (one control thread numbers them), not by time: a clock that
    // jumped back during the run must not reorder its decisions.
    recording.messages.sort_by_key(|m| m.sequence);
    let meta = |key: &str| -> anyhow::Result<&String> {
        recording.metadata.get(key).with_context(|| {
            format!("the recording has no `{key}` metadata: not a wam_policy recording")
        })
    };
    let mut params =
        params_from_yaml(meta(META_PARAMETERS)?).context("cannot read the recorded parameters")?;
    // Replay on this machine's CPU, without recording again.
    params.insert(
        "providers".into(),
        ParamValue::StringArray(vec!["cpu".into()]),
    );
    params.remove("record_path");
    for (name, value) in overrides {
        params.insert(name, value);
    }
    let cfg = NodeConfig::from_params(&params)?;
    let bundle = Bundle::load(&cfg.bundle_path)?;
    let wiring = Wiring::resolve(&bundle, &cfg)?;
    let mut policy = Policy::start(&bundle, &cfg)?;
    let mut controller = Controller::new(&bundle, cfg.clone(), wiring)?;
    let mut messages = CommandMessages::new(&controller);
    let cameras: Vec<String> = (0..controller.dims().cameras)
        .map(|i| meta(&format!("{META_CAMERA_PREFIX}{i}")).cloned())
        .collect::<anyhow::Result<_>>()?;
    let (joint_topic, instruction_topic, command_topic) = (
        meta(META_JOINT_STATES)?.clone(),
        meta(META_INSTRUCTION)?.clone(),
        meta(META_COMMAND)?.clone(),
    );

    let mut job = Job::for_policy(&policy);
    let mut in_flight: Option<Result<StageTimings, String>> = None;
    let mut out = Outbox::with_capacity(8);
    let (mut recorded, mut replayed) = (Vec::new(), Vec::new());
    let (mut inputs, mut ticks, mut inferences) = (0u64, 0u64, 0u64);
    for msg in &recording.messages {
        let now = msg.log_time_s();
        let topic = msg.topic.as_str();
        if let Some(cam) = cameras.iter().position(|c| c == topic) {
            inputs += 1;
            let compressed = msg.type_name.ends_with("CompressedImage");
            camera_bytes_into(&mut controller, cam, compressed, &msg.data, now);
        } else if topic == joint_topic {
            inputs += 1;
            let m: JointStateMsg = decode(&msg.data, topic)?;
            controller.on_joint_state(&m.name, &m.position, seconds_of(&m.header.stamp), now);
        } else if topic == instruction_topic {
            inputs += 1;
            let m: StringMsg = decode(&msg.data, topic)?;
            let _ = controller.on_instruction(&m.data, now);
        } else if topic == command_topic {
            recorded.push(match msg.type_name.as_str() {
                "trajectory_msgs/msg/JointTrajectory" => {
                    CommandMsg::Trajectory(decode::<TrajectoryMsg>(&msg.data, topic)?)
                }
                "std_msgs/msg/Float64MultiArray" => {
                    CommandMsg::Array(decode::<Float64ArrayMsg>(&msg.data, topic)?)
                }
                _ => CommandMsg::JointState(decode::<JointStateMsg>(&msg.data, topic)?),
            });
        } else if topic == EVENTS_TOPIC {
            let m: StringMsg = decode(&msg.data, topic)?;
            let Some(event) = Event::parse(&m.data) else {
                bail!("unknown event `{}` in the recording", m.data);
            };
            match event {
                Event::Tick => {
                    ticks += 1;
                    let free = if in_flight.is_none() {
                        Some(&mut job)
                    } else {
                        None
                    };
                    controller.tick(now, free, &mut out);
                }
                Event::Enable(e) => {
                    controller.set_enabled(e, now, &mut out);
                }
                Event::Reset => controller.reset(now, &mut out),
                Event::Stop => controller.stop(now, &mut out),
                Event::Params(yaml) => {
                    let changes: Vec<(String, ParamValue)> = params_from_yaml(&yaml)
                        .context("cannot read recorded parameter changes")?
                        .into_iter()
                        .collect();
                    let (next, cfg) = updated_params(&params, &changes, true)
                        .context("recorded parameter changes")?;
                    if let Some(mut cfg) = cfg {
                        cfg.enabled_at_start = controller.config().enabled_at_start;
                        controller
                            .update_config(cfg, now)
                            .map_err(|e| anyhow::anyhow!("recorded parameter changes: {e}"))?;
                    }
                    params = next;
                }
                Event::ResultOk | Event::ResultError(_) => {
                    let Some(result) = in_flight.take() else {
                        bail!("the recording has an inference result at {now:.6} s that replay never started: the controller decided differently");
                    };
                    let result = match event {
                        Event::ResultError(e) => Err(e),
                        _ => result,
                    };
                    controller.on_result(&job, result, now, &mut out);
                }
            }
        }
        for command in out.drain() {
            match command {
                Command::StartInference => {
                    inferences += 1;
                    if std::mem::take(&mut job.clear_model_state) {
                        policy.clear_model_state();
                    }
                    in_flight = Some(
                        policy
                            .process(&mut job.input, &mut job.output)
                            .map_err(|e| e.to_string()),
                    );
                }
                Command::ResetSampler => policy.reset(),
                c => {
                    messages.build(&controller, &c);
                    replayed.extend(messages.ready().map(|(_, m)| m.clone()));
                }
            }
        }
    }
    compare(&recorded, &replayed)?;
    println!(
        "replay: {inputs} inputs, {ticks} ticks, {inferences} inferences; {} commands identical to the recording",
        recorded.len()
    );
    Ok(())
}

/// The first command that differs, or Ok when all agree within [`TOLERANCE`].
fn compare(recorded: &[CommandMsg], replayed: &[CommandMsg]) -> anyhow::Result<()> {
    for (i, (r, p)) in recorded.iter().zip(replayed).enumerate() {
        let (a, b) = (r.values(), p.values());
        let differs = a.len() != b.len()
            || a.iter()
                .zip(&b)
                .any(|(x, y)| (x - y).abs() > TOLERANCE || x.is_nan() != y.is_nan());
        if differs {
            bail!(
                "replay: commands differ at command {i} of {}: recorded {a:?}, replayed {b:?}",
                recorded.len()
            );
        }
    }
    if recorded.len() != replayed.len() {
        bail!(
            "replay: commands differ: the recording has {} commands, replay published {}",
            recorded.len(),
            replayed.len()
        );
    }
    Ok(())
}

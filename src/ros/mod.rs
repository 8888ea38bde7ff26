//! The thin ROS layer (r2r): parameters in, subscriptions into the controller, the control timer, the
//! inference worker, and the controller's commands out as messages. Every decision is the library's
//! `controller`; this module is wiring, start-up and shutdown.
//!
//! Its life: start-up (parameters, clock, bundle, warm-up, topics, recording), the steady state (a loop
//! that takes messages as they come and runs the controller's tick at `control_period_s` on a deadline
//! timer, so the command stream does not follow message traffic), and shutdown (a signal, a dead worker
//! or an error: a last hold through the safety filter, published before the process exits).

mod messages;
mod recording;
pub mod replay;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt};
use r2r::{QosProfile, WrappedTypesupport};

use crate::bundle::Bundle;
use crate::config::{CameraTransport, NodeConfig, OutputMode, ParamValue, Params, StreamMessage};
use crate::controller::{Command, Controller, Outbox};
use crate::policy::{Policy, Wiring};
use crate::preview::PreviewImages;
use crate::stats::LatencyWindow;
use crate::worker::{Done, Job, Worker};

use messages::{
    action_chunk, diagnostics, policy_status, rgb_image, seconds_of, CommandMessages, CommandMsg,
    DiagnosticArrayMsg, Float64ArrayMsg, ImageMsg, JointStateMsg, StatusContext, StringMsg,
    TrajectoryMsg,
};
use r2r::wam_policy::msg::{ActionChunk, PolicyStatus};
use recording::{Event, NodeRecorder};

type SetBool = r2r::std_srvs::srv::SetBool::Service;
type Trigger = r2r::std_srvs::srv::Trigger::Service;

/// Drains a subscription stream without blocking.
fn drain<T>(stream: &mut (impl Stream<Item = T> + Unpin), mut f: impl FnMut(T)) {
    while let Some(Some(msg)) = stream.next().now_or_never() {
        f(msg);
    }
}

/// A camera subscription delivering serialized messages: frames are read in place (`cdr`), not
/// copied into typed messages twice.
struct CameraSub {
    stream: Box<dyn Stream<Item = Vec<u8>> + Unpin>,
    compressed: bool,
}

enum CommandPublisher {
    Trajectory(r2r::Publisher<TrajectoryMsg>),
    Array(r2r::Publisher<Float64ArrayMsg>),
    JointState(r2r::Publisher<JointStateMsg>),
}

impl CommandPublisher {
    fn publish(&self, msg: &CommandMsg) {
        let result = match (self, msg) {
            (CommandPublisher::Trajectory(p), CommandMsg::Trajectory(m)) => p.publish(m),
            (CommandPublisher::Array(p), CommandMsg::Array(m)) => p.publish(m),
            (CommandPublisher::JointState(p), CommandMsg::JointState(m)) => p.publish(m),
            _ => return,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot publish a command");
        }
    }
}

struct Publishers {
    /// The command topic (or its `~/dry_run/*` stand-in in dry-run mode).
    command: CommandPublisher,
    diagnostics: r2r::Publisher<DiagnosticArrayMsg>,
    chunk: r2r::Publisher<ActionChunk>,
    status: r2r::Publisher<PolicyStatus>,
    predicted: Vec<r2r::Publisher<ImageMsg>>,
    preview: r2r::Publisher<ImageMsg>,
}

fn publish<T: WrappedTypesupport + 'static>(publisher: &r2r::Publisher<T>, msg: &T, what: &str) {
    if let Err(e) = publisher.publish(msg) {
        tracing::warn!(error = %e, "cannot publish {what}");
    }
}

/// The topic as the graph names it: relative names under `/`, private ones under the node's name.
fn absolute_topic(topic: &str) -> String {
    if let Some(rest) = topic.strip_prefix("~/") {
        format!("/wam_policy/{rest}")
    } else if topic.starts_with('/') {
        topic.to_string()
    } else {
        format!("/{topic}")
    }
}

/// The command topic of this configuration (dry run: its debug stand-in).
fn command_topic(cfg: &NodeConfig) -> (String, &'static str) {
    let exec = &cfg.execution;
    match (exec.output_mode, exec.dry_run, exec.stream_message) {
        (OutputMode::Chunk, false, _) => (
            cfg.trajectory_topic.clone(),
            "trajectory_msgs/msg/JointTrajectory",
        ),
        (OutputMode::Chunk, true, _) => (
            "~/dry_run/trajectory".into(),
            "trajectory_msgs/msg/JointTrajectory",
        ),
        (OutputMode::Stream, dry, m) => (
            if dry {
                "~/dry_run/commands".into()
            } else {
                exec.stream_topic.clone()
            },
            match m {
                StreamMessage::Float64MultiArray => "std_msgs/msg/Float64MultiArray",
                StreamMessage::JointState => "sensor_msgs/msg/JointState",
            },
        ),
    }
}

/// Reads the node's clock: simulated time under `use_sim_time` (0 until the first /clock message).
fn clock_now(clock: &Arc<Mutex<r2r::Clock>>) -> anyhow::Result<f64> {
    let mut c = clock
        .lock()
        .map_err(|_| anyhow::anyhow!("the ROS clock's lock is poisoned"))?;
    let d = c.get_now().context("cannot read the ROS clock")?;
    Ok(d.as_secs_f64())
}

/// Node parameters as the library's plain map.
fn read_params(node: &r2r::Node) -> Params {
    use r2r::ParameterValue as R;
    use ParamValue as P;
    let mut out = Params::new();
    let Ok(params) = node.params.lock() else {
        return out;
    };
    for (name, p) in params.iter() {
        let v = match &p.value {
            R::NotSet => continue,
            R::Bool(b) => P::Bool(*b),
            R::Integer(i) => P::Integer(*i),
            R::Double(d) => P::Double(*d),
            R::String(s) => P::String(s.clone()),
            R::BoolArray(v) => P::BoolArray(v.clone()),
            R::ByteArray(v) => P::IntegerArray(v.iter().map(|b| i64::from(*b)).collect()),
            R::IntegerArray(v) => P::IntegerArray(v.clone()),
            R::DoubleArray(v) => P::DoubleArray(v.clone()),
            R::StringArray(v) => P::StringArray(v.clone()),
        };
        out.insert(name.clone(), v);
    }
    out
}

/// A serialized camera message into the controller, read in place.
pub(crate) fn camera_bytes_into(
    controller: &mut Controller,
    cam: usize,
    compressed: bool,
    bytes: &[u8],
    now: f64,
) {
    use crate::cdr::{CompressedImageCdr, ImageCdr};
    if compressed {
        match CompressedImageCdr::parse(bytes) {
            Ok(m) => controller.on_compressed(cam, m.data, m.stamp, now),
            Err(e) => controller.on_unreadable_image(cam, e.kind(), &e, now),
        }
    } else {
        match ImageCdr::parse(bytes) {
            Ok(m) => controller.on_raw_image(
                cam,
                m.width as usize,
                m.height as usize,
                m.step as usize,
                m.encoding,
                m.data,
                m.stamp,
                now,
            ),
            Err(e) => controller.on_unreadable_image(cam, e.kind(), &e, now),
        }
    }
}

/// Everything the loop owns besides the node.
struct Node {
    controller: Controller,
    worker: Worker,
    pubs: Publishers,
    commands: CommandMessages,
    preview: PreviewImages,
    recorder: Option<NodeRecorder>,
    out: Outbox,
    model_id: String,
    provider: &'static str,
    video_dt: f64,
    tick_lateness: LatencyWindow,
}

pub fn run() -> anyhow::Result<()> {
    let ctx = r2r::Context::create().context("cannot create the ROS context")?;
    let mut node =
        r2r::Node::create(ctx, "wam_policy", "").context("cannot create the ROS node")?;
    let params = read_params(&node);
    let cfg = NodeConfig::from_params(&params)?;
    if cfg.use_sim_time {
        node.get_time_source()
            .enable_sim_time(&mut node)
            .context("use_sim_time: cannot subscribe to /clock")?;
    }
    let clock = node.get_ros_clock();
    let bundle = Bundle::load(&cfg.bundle_path)?;
    let wiring = Wiring::resolve(&bundle, &cfg)?;
    let policy = Policy::start(&bundle, &cfg)?;
    let provider = policy.provider_name();
    let dims = *policy.dims();
    let m = &bundle.manifest;
    tracing::info!(
        model = %m.model_id,
        provider,
        cameras = ?wiring.camera_names,
        steps = policy.sampler_steps(),
        "model loaded and warmed up"
    );

    let mut cameras = Vec::new();
    for topic in &wiring.camera_topics {
        let sub = match cfg.camera_transport {
            CameraTransport::Raw => CameraSub {
                stream: Box::new(node.subscribe_raw(
                    topic,
                    "sensor_msgs/msg/Image",
                    QosProfile::sensor_data(),
                )?),
                compressed: false,
            },
            CameraTransport::Compressed => CameraSub {
                stream: Box::new(node.subscribe_raw(
                    &format!("{topic}/compressed"),
                    "sensor_msgs/msg/CompressedImage",
                    QosProfile::sensor_data(),
                )?),
                compressed: true,
            },
        };
        cameras.push(sub);
    }
    let mut joint_sub =
        node.subscribe::<JointStateMsg>(&cfg.joint_states_topic, QosProfile::sensor_data())?;
    // Twice: transient-local for latched instructions published before the node came up, volatile for
    // plain publishers (a transient-local subscription does not match a volatile publisher).
    let mut instruction_subs = [
        node.subscribe::<StringMsg>(
            &cfg.instruction_topic,
            QosProfile::default()
                .reliable()
                .transient_local()
                .keep_last(1),
        )?,
        node.subscribe::<StringMsg>(&cfg.instruction_topic, QosProfile::default())?,
    ];
    let mut enable_srv =
        node.create_service::<SetBool>("~/enable", QosProfile::services_default())?;
    let mut reset_srv =
        node.create_service::<Trigger>("~/reset", QosProfile::services_default())?;
    let (command_topic_name, _) = command_topic(&cfg);
    let exec = &cfg.execution;
    let command = match (exec.output_mode, exec.stream_message) {
        (OutputMode::Chunk, _) => CommandPublisher::Trajectory(
            node.create_publisher(&command_topic_name, QosProfile::default())?,
        ),
        (OutputMode::Stream, StreamMessage::Float64MultiArray) => CommandPublisher::Array(
            node.create_publisher(&command_topic_name, QosProfile::default())?,
        ),
        (OutputMode::Stream, StreamMessage::JointState) => CommandPublisher::JointState(
            node.create_publisher(&command_topic_name, QosProfile::default())?,
        ),
    };
    let pubs = Publishers {
        command,
        diagnostics: node.create_publisher("/diagnostics", QosProfile::default())?,
        chunk: node.create_publisher("~/action_chunk", QosProfile::default())?,
        status: node.create_publisher("~/status", QosProfile::default())?,
        predicted: wiring
            .camera_names
            .iter()
            .map(|c| node.create_publisher(&format!("~/predicted/{c}"), QosProfile::default()))
            .collect::<Result<_, _>>()?,
        preview: node.create_publisher("~/preview", QosProfile::default())?,
    };
    let recorder = if cfg.record_path.is_empty() {
        None
    } else {
        Some(NodeRecorder::create(&cfg, &params, &wiring.camera_topics)?)
    };
    let image = &m.image;
    let preview = PreviewImages::new(
        dims,
        [image.mean[0], image.mean[1], image.mean[2]],
        [image.std[0], image.std[1], image.std[2]],
    );
    let controller = Controller::new(&bundle, cfg.clone(), wiring)?;
    let worker = Worker::spawn(policy, cfg.execution.debug_extra_latency_s)?;

    // SIGINT (what `ros2 launch` sends on Ctrl-C) and SIGTERM end the loop with a hold; a second
    // signal while that runs ends the process at once.
    let stop_requested = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop_requested.clone())
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, stop_requested.clone())
            .context("cannot install the signal handlers")?;
    }

    let mut state = Node {
        commands: CommandMessages::new(&controller),
        controller,
        worker,
        pubs,
        preview,
        recorder,
        out: Outbox::with_capacity(8),
        model_id: m.model_id.clone(),
        provider,
        video_dt: bundle.video_dt(),
        tick_lateness: LatencyWindow::new(1024),
    };
    tracing::info!(
        enabled = state.controller.is_enabled(),
        sim_time = cfg.use_sim_time,
        "wam_policy running"
    );
    // Ok: stopped by a signal; Err: stopped by an error.
    let loop_result = (|| -> anyhow::Result<()> {
        let period = Duration::from_secs_f64(cfg.control_period_s);
        let status_period = Duration::from_secs_f64(cfg.status_period_s);
        let mut next_tick = Instant::now();
        let mut next_status = Instant::now();
        loop {
            if stop_requested.load(Ordering::Relaxed) {
                return Ok(());
            }
            node.spin_once(next_tick.saturating_duration_since(Instant::now()));
            let now = clock_now(&clock)?;
            for (cam, sub) in cameras.iter_mut().enumerate() {
                let compressed = sub.compressed;
                drain(&mut sub.stream, |bytes| {
                    state.on_camera_bytes(cam, compressed, bytes, now)
                });
            }
            drain(&mut joint_sub, |msg| state.on_joint_state(msg, now));
            for sub in &mut instruction_subs {
                drain(sub, |msg| state.on_instruction(msg, now));
            }
            drain(&mut enable_srv, |req| {
                let message = state.set_enabled(req.message.data, now);
                let response = r2r::std_srvs::srv::SetBool::Response {
                    success: true,
                    message,
                };
                if let Err(e) = req.respond(response) {
                    tracing::warn!(error = %e, "cannot answer ~/enable");
                }
            });
            drain(&mut reset_srv, |req| {
                state.reset(now);
                let response = r2r::std_srvs::srv::Trigger::Response {
                    success: true,
                    message: "observation window, active chunk and sampler seed reset; holding"
                        .into(),
                };
                if let Err(e) = req.respond(response) {
                    tracing::warn!(error = %e, "cannot answer ~/reset");
                }
            });
            if let Some(done) = state.worker.poll() {
                state.on_result(done, now);
            }
            let mut wall = Instant::now();
            let mut now = now;
            if wall >= next_tick {
                // The tick runs at the time it reads, after this round's messages were taken.
                now = clock_now(&clock)?;
                wall = Instant::now();
                state.tick_lateness.record((wall - next_tick).as_secs_f64());
                next_tick += period;
                if next_tick < wall {
                    // A stall longer than a period: skip the missed ticks instead of bursting them.
                    next_tick = wall + period;
                }
                state.tick(now);
            }
            state.dispatch(now);
            if wall >= next_status {
                next_status = wall + status_period;
                state.publish_status(now);
            }
            if state.worker.has_died() {
                anyhow::bail!("the inference worker stopped");
            }
        }
    })();
    // Every way out holds first, then reports.
    let now = clock_now(&clock).unwrap_or(0.0);
    state.stop(now);
    // Give the middleware a moment to deliver the hold before the process ends.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        node.spin_once(Duration::from_millis(20));
    }
    if let Some(recorder) = state.recorder.take() {
        recorder.finish();
    }
    match loop_result {
        Ok(()) => {
            tracing::info!("stopped by a signal; held the measured position");
            Ok(())
        }
        Err(e) => Err(e.context("stopped after an error; held the measured position")),
    }
}

impl Node {
    fn record<T: WrappedTypesupport + Send + 'static>(&self, topic: usize, now: f64, msg: T) {
        if let Some(r) = &self.recorder {
            r.message(topic, now, msg);
        }
    }

    fn event(&self, now: f64, event: Event) {
        if let Some(r) = &self.recorder {
            r.event(now, event);
        }
    }

    fn on_camera_bytes(&mut self, cam: usize, compressed: bool, bytes: Vec<u8>, now: f64) {
        camera_bytes_into(&mut self.controller, cam, compressed, &bytes, now);
        if let Some(r) = &self.recorder {
            // Recorded as received: the serialized message itself.
            r.bytes(recording::camera_channel(cam), now, bytes);
        }
    }

    fn on_joint_state(&mut self, msg: JointStateMsg, now: f64) {
        self.controller.on_joint_state(
            &msg.name,
            &msg.position,
            seconds_of(&msg.header.stamp),
            now,
        );
        self.record(recording::JOINT_STATES, now, msg);
    }

    fn on_instruction(&mut self, msg: StringMsg, now: f64) {
        self.controller.on_instruction(&msg.data, now);
        self.record(recording::INSTRUCTION, now, msg);
    }

    fn set_enabled(&mut self, enable: bool, now: f64) -> String {
        self.event(now, Event::Enable(enable));
        self.controller.set_enabled(enable, now, &mut self.out)
    }

    fn reset(&mut self, now: f64) {
        self.event(now, Event::Reset);
        self.controller.reset(now, &mut self.out);
    }

    fn tick(&mut self, now: f64) {
        self.event(now, Event::Tick);
        self.controller
            .tick(now, self.worker.free_job(), &mut self.out);
    }

    fn stop(&mut self, now: f64) {
        self.event(now, Event::Stop);
        self.controller.stop(now, &mut self.out);
        self.dispatch(now);
    }

    fn on_result(&mut self, done: Done, now: f64) {
        let Done { job, result } = done;
        self.event(
            now,
            match &result {
                Ok(_) => Event::ResultOk,
                Err(e) => Event::ResultError(e.clone()),
            },
        );
        self.controller.on_result(&job, result, now, &mut self.out);
        // Chunk metadata and frames come from this job: publish them before the buffer is reused.
        self.dispatch_with(Some(&job), now);
        self.worker.return_job(job);
    }

    fn dispatch(&mut self, now: f64) {
        self.dispatch_with(None, now);
    }

    /// Publishes the controller's commands (`job`: the finished job, for chunk metadata and frames).
    fn dispatch_with(&mut self, job: Option<&Job>, now: f64) {
        let mut out = std::mem::take(&mut self.out);
        let mut last_trajectory: Option<TrajectoryMsg> = None;
        for command in out.drain() {
            match command {
                Command::StartInference => self.worker.submit(),
                Command::ResetSampler => self.worker.send_reset(),
                Command::Chunk { chunk_id, stamp } => {
                    let Some(job) = job else { continue };
                    let chunk = action_chunk(
                        &self.controller,
                        last_trajectory.as_ref(),
                        chunk_id,
                        stamp,
                        job.steps,
                        &self.model_id,
                        self.provider,
                    );
                    publish(&self.pubs.chunk, &chunk, "action chunk");
                    if let Some(r) = &self.recorder {
                        r.message(recording::ACTION_CHUNK, now, chunk);
                    }
                    if self.controller.config().publish_predicted_frames
                        && !job.output.frames.is_empty()
                    {
                        self.publish_frames(job);
                    }
                }
                Command::Trajectory { .. } | Command::Hold { .. } | Command::Setpoint { .. } => {
                    let Some(msg) = self.commands.build(&self.controller, &command) else {
                        continue;
                    };
                    self.pubs.command.publish(msg);
                    if let Some(r) = &self.recorder {
                        r.command(now, msg);
                    }
                    if let CommandMsg::Trajectory(t) = msg {
                        last_trajectory = Some(t.clone());
                    }
                }
            }
        }
        self.out = out;
    }

    fn publish_frames(&mut self, job: &Job) {
        self.preview.update(&job.output.frames, &job.input.frames);
        let d = *self.controller.dims();
        let names = &self.controller.wiring().camera_names;
        for (cam, publisher) in self.pubs.predicted.iter().enumerate() {
            for f in 0..d.video_frames {
                let msg = rgb_image(
                    job.stamp + (f + 1) as f64 * self.video_dt,
                    &names[cam],
                    d.width,
                    d.height,
                    self.preview.frame(cam, f),
                );
                publish(publisher, &msg, "predicted frame");
            }
        }
        let (h, w) = self.preview.tiled_size();
        let msg = rgb_image(job.stamp, "wam_policy_preview", w, h, &self.preview.tiled);
        publish(&self.pubs.preview, &msg, "preview");
    }

    fn publish_status(&mut self, now: f64) {
        let s = self.controller.status(now);
        let stats = self
            .recorder
            .as_ref()
            .map(NodeRecorder::stats)
            .unwrap_or_default();
        let ctx = StatusContext {
            now,
            model_id: &self.model_id,
            provider: self.provider,
            recorded: stats.recorded,
            record_dropped: stats.dropped,
            tick_lateness_p99_s: self.tick_lateness.percentile(99.0),
        };
        let status = policy_status(&self.controller, &s, &ctx);
        publish(
            &self.pubs.diagnostics,
            &diagnostics(&s, &status, &ctx),
            "diagnostics",
        );
        publish(&self.pubs.status, &status, "status");
        if let Some(r) = &self.recorder {
            r.message(recording::STATUS, now, status);
        }
    }
}

//! The thin ROS layer (r2r): parameters in, subscriptions into the observation window, the inference worker
//! thread, publishers of the trajectory, chunk, predicted frames and status, and the enable/reset services.
//! Everything it calls is plain Rust from the library.

mod convert;
mod worker;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt};
use r2r::{QosProfile, WrappedTypesupport};

use crate::bad_input::{BadInputLog, Source};
use crate::bundle::Bundle;
use crate::config::{CameraTransport, NodeConfig, OutputMode, Params, StreamMessage};
use crate::execution::{Anchor, ChunkExecutor, ExecutionConfig, Refusal};
use crate::obs_window::{JointMapper, NotReady, ObsWindow};
use crate::policy::{Policy, Wiring};
use crate::preprocess::{decode_compressed, ImageView, Preprocessor};
use crate::preview::PreviewImages;
use crate::safety::SafetyFilter;
use crate::stats::{LatencyWindow, RateMeter};
use crate::tokenizer::InstructionEncoder;

use convert::{duration_msg, seconds_of, time_msg};
use r2r::wam_policy::msg::{ActionChunk, PolicyStatus};
use worker::{Job, Worker};

type ImageMsg = r2r::sensor_msgs::msg::Image;
type CompressedMsg = r2r::sensor_msgs::msg::CompressedImage;
type JointStateMsg = r2r::sensor_msgs::msg::JointState;
type TrajectoryMsg = r2r::trajectory_msgs::msg::JointTrajectory;
type PointMsg = r2r::trajectory_msgs::msg::JointTrajectoryPoint;
type Float64ArrayMsg = r2r::std_msgs::msg::Float64MultiArray;
type DiagnosticArrayMsg = r2r::diagnostic_msgs::msg::DiagnosticArray;
type SetBool = r2r::std_srvs::srv::SetBool::Service;
type Trigger = r2r::std_srvs::srv::Trigger::Service;

/// Drains a subscription stream without blocking.
fn drain<T>(stream: &mut (impl Stream<Item = T> + Unpin), mut f: impl FnMut(T)) {
    while let Some(Some(msg)) = stream.next().now_or_never() {
        f(msg);
    }
}

enum CameraSub {
    Raw(Box<dyn Stream<Item = ImageMsg> + Unpin>),
    Compressed(Box<dyn Stream<Item = CompressedMsg> + Unpin>),
}

/// Streamed setpoints, in the message the robot's controller takes.
enum StreamPublisher {
    Array(r2r::Publisher<Float64ArrayMsg>),
    JointState(r2r::Publisher<JointStateMsg>),
}

struct Publishers {
    /// Chunk mode: the command topic, or `~/dry_run/trajectory` in dry-run mode.
    trajectory: Option<r2r::Publisher<TrajectoryMsg>>,
    /// Stream mode: the stream topic, or `~/dry_run/commands` in dry-run mode.
    stream: Option<StreamPublisher>,
    diagnostics: r2r::Publisher<DiagnosticArrayMsg>,
    chunk: r2r::Publisher<ActionChunk>,
    status: r2r::Publisher<PolicyStatus>,
    predicted: Vec<r2r::Publisher<ImageMsg>>,
    preview: r2r::Publisher<ImageMsg>,
}

/// The node's mutable state between messages, driven by the control loop.
struct NodeState {
    cfg: NodeConfig,
    wiring: Wiring,
    model_id: String,
    provider: &'static str,
    video_dt: f64,
    action_dt: f64,
    window: ObsWindow,
    preprocessors: Vec<Preprocessor>,
    /// First frame size seen per camera; a camera that changes resolution mid-run is refused.
    camera_sizes: Vec<Option<(usize, usize)>>,
    compressed_rgb: Vec<u8>,
    joint_mapper: JointMapper,
    joint_buf: Vec<f64>,
    encoder: InstructionEncoder,
    tokens: Vec<i64>,
    bad: BadInputLog,
    enabled: bool,
    executor: ChunkExecutor,
    latency: LatencyWindow,
    chunk_rate: RateMeter,
    chunks_published: u64,
    inferences: u64,
    inference_errors: u64,
    stale_observations: u64,
    safety_rejections: u64,
    last_error: Option<String>,
    not_ready: Option<NotReady>,
    was_running: bool,
    measured: Vec<f64>,
    /// Streamed setpoint buffers.
    stream_q: Vec<f64>,
    stream_v: Vec<f64>,
    /// Streamed messages, filled in place per setpoint.
    stream_array: Float64ArrayMsg,
    stream_state: JointStateMsg,
    next_stream: f64,
    max_boundary_jump_logged: f64,
    safety: SafetyFilter,
    preview: PreviewImages,
    chunk_id: u64,
}

pub fn run() -> anyhow::Result<()> {
    let ctx = r2r::Context::create().context("cannot create the ROS context")?;
    let mut node =
        r2r::Node::create(ctx, "wam_policy", "").context("cannot create the ROS node")?;
    let params = read_params(&node);
    let cfg = NodeConfig::from_params(&params)?;
    let bundle = Bundle::load(&cfg.bundle_path)?;
    let wiring = Wiring::resolve(&bundle, &cfg)?;
    let encoder = InstructionEncoder::for_bundle(&bundle)?;
    let policy = Policy::start(&bundle, &cfg)?;
    let dims = *policy.dims();
    let m = &bundle.manifest;
    tracing::info!(
        model = %m.model_id,
        provider = policy.provider_name(),
        cameras = ?wiring.camera_names,
        steps = policy.sampler_steps(),
        "model loaded and warmed up"
    );

    let mut cameras = Vec::new();
    for topic in &wiring.camera_topics {
        let sub = match cfg.camera_transport {
            CameraTransport::Raw => CameraSub::Raw(Box::new(
                node.subscribe::<ImageMsg>(topic, QosProfile::sensor_data())?,
            )),
            CameraTransport::Compressed => {
                CameraSub::Compressed(Box::new(node.subscribe::<CompressedMsg>(
                    &format!("{topic}/compressed"),
                    QosProfile::sensor_data(),
                )?))
            }
        };
        cameras.push(sub);
    }
    let mut joint_sub =
        node.subscribe::<JointStateMsg>(&cfg.joint_states_topic, QosProfile::sensor_data())?;
    let mut instruction_sub = node
        .subscribe::<r2r::std_msgs::msg::String>(&cfg.instruction_topic, QosProfile::default())?;
    let mut enable_srv =
        node.create_service::<SetBool>("~/enable", QosProfile::services_default())?;
    let mut reset_srv =
        node.create_service::<Trigger>("~/reset", QosProfile::services_default())?;
    let exec = &cfg.execution;
    let (trajectory_topic, stream_topic) = if exec.dry_run {
        ("~/dry_run/trajectory", "~/dry_run/commands")
    } else {
        (cfg.trajectory_topic.as_str(), exec.stream_topic.as_str())
    };
    let pubs = Publishers {
        trajectory: match exec.output_mode {
            OutputMode::Chunk => {
                Some(node.create_publisher(trajectory_topic, QosProfile::default())?)
            }
            OutputMode::Stream => None,
        },
        stream: match (exec.output_mode, exec.stream_message) {
            (OutputMode::Chunk, _) => None,
            (OutputMode::Stream, StreamMessage::Float64MultiArray) => Some(StreamPublisher::Array(
                node.create_publisher(stream_topic, QosProfile::default())?,
            )),
            (OutputMode::Stream, StreamMessage::JointState) => Some(StreamPublisher::JointState(
                node.create_publisher(stream_topic, QosProfile::default())?,
            )),
        },
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
    let clock = node.get_ros_clock();

    let image = &m.image;
    let mut state = NodeState {
        window: ObsWindow::new(
            dims,
            cfg.sync_slop_s,
            cfg.max_image_age_s,
            cfg.max_joint_state_age_s,
        ),
        preprocessors: (0..dims.cameras)
            .map(|_| {
                Preprocessor::new(
                    dims.width,
                    dims.height,
                    [image.mean[0], image.mean[1], image.mean[2]],
                    [image.std[0], image.std[1], image.std[2]],
                )
            })
            .collect(),
        camera_sizes: vec![None; dims.cameras],
        compressed_rgb: Vec::new(),
        joint_mapper: JointMapper::new(wiring.state_joint_names.clone()),
        joint_buf: vec![0.0; dims.state],
        tokens: vec![m.instruction.pad_id; dims.tokens],
        bad: BadInputLog::default(),
        enabled: cfg.enabled_at_start,
        executor: ChunkExecutor::new(ExecutionConfig {
            horizon: dims.horizon,
            joints: dims.action,
            dt: m.action.dt,
            replan_threshold_s: cfg.replan_threshold_s,
            replan_margin_s: cfg.replan_margin_s,
            boundary: cfg.execution.boundary_mode,
            crossfade_steps: cfg.execution.crossfade_steps,
            ramp_in_s: cfg.execution.ramp_in_s,
            min_lead_s: cfg.execution.min_lead_s,
            anchor: cfg
                .execution
                .plan_anchor
                .unwrap_or(match cfg.execution.output_mode {
                    OutputMode::Chunk => Anchor::Measured,
                    OutputMode::Stream => Anchor::Setpoint,
                }),
        }),
        latency: LatencyWindow::new(64),
        chunk_rate: RateMeter::new(32),
        chunks_published: 0,
        inferences: 0,
        inference_errors: 0,
        stale_observations: 0,
        safety_rejections: 0,
        last_error: None,
        not_ready: None,
        was_running: false,
        measured: vec![0.0; dims.action],
        stream_q: vec![0.0; dims.action],
        stream_v: vec![0.0; dims.action],
        stream_array: Float64ArrayMsg {
            data: vec![0.0; dims.action],
            ..Default::default()
        },
        stream_state: JointStateMsg {
            name: wiring.action_joint_names.clone(),
            position: vec![0.0; dims.action],
            velocity: vec![0.0; dims.action],
            ..Default::default()
        },
        next_stream: 0.0,
        max_boundary_jump_logged: 0.0,
        safety: SafetyFilter::new(
            wiring.action_joint_names.clone(),
            wiring.action_limits.clone(),
        ),
        preview: PreviewImages::new(
            dims,
            [image.mean[0], image.mean[1], image.mean[2]],
            [image.std[0], image.std[1], image.std[2]],
        ),
        chunk_id: 0,
        model_id: m.model_id.clone(),
        provider: policy.provider_name(),
        video_dt: bundle.video_dt(),
        action_dt: m.action.dt,
        encoder,
        wiring,
        cfg,
    };
    if !state.cfg.instruction.is_empty() {
        let text = state.cfg.instruction.clone();
        state.set_instruction(&text, 0.0);
    }
    let mut worker = Worker::spawn(policy, state.cfg.execution.debug_extra_latency_s)?;

    let now_s = |clock: &std::sync::Arc<std::sync::Mutex<r2r::Clock>>| -> f64 {
        clock
            .lock()
            .ok()
            .and_then(|mut c| c.get_now().ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let control_period = Duration::from_secs_f64(state.cfg.control_period_s);
    let status_period = Duration::from_secs_f64(state.cfg.status_period_s);
    let mut next_status = Instant::now();
    tracing::info!(enabled = state.enabled, "wam_policy running");
    loop {
        node.spin_once(control_period);
        let now = now_s(&clock);
        for (cam, sub) in cameras.iter_mut().enumerate() {
            match sub {
                CameraSub::Raw(s) => drain(s, |msg| state.on_image(cam, &msg, now)),
                CameraSub::Compressed(s) => drain(s, |msg| state.on_compressed(cam, &msg, now)),
            }
        }
        drain(&mut joint_sub, |msg| state.on_joint_state(&msg, now));
        drain(&mut instruction_sub, |msg| {
            state.set_instruction(&msg.data, now)
        });
        drain(&mut enable_srv, |req| {
            let message = state.set_enabled(req.message.data, &pubs, now);
            let response = r2r::std_srvs::srv::SetBool::Response {
                success: true,
                message,
            };
            if let Err(e) = req.respond(response) {
                tracing::warn!(error = %e, "cannot answer ~/enable");
            }
        });
        drain(&mut reset_srv, |req| {
            state.reset(&mut worker);
            let response = r2r::std_srvs::srv::Trigger::Response {
                success: true,
                message: "observation window, active chunk and sampler seed reset".into(),
            };
            if let Err(e) = req.respond(response) {
                tracing::warn!(error = %e, "cannot answer ~/reset");
            }
        });
        if let Some(worker::Done { job, result }) = worker.poll() {
            state.on_result(&job, result, &pubs, now_s(&clock));
            worker.return_job(job);
        }
        state.control(&mut worker, &pubs, now);
        state.stream(&pubs, now);
        if Instant::now() >= next_status {
            next_status += status_period;
            let status = state.status(now);
            if let Err(e) = pubs.diagnostics.publish(&state.diagnostics(&status)) {
                tracing::warn!(error = %e, "cannot publish diagnostics");
            }
            if let Err(e) = pubs.status.publish(&status) {
                tracing::warn!(error = %e, "cannot publish status");
            }
        }
        if worker.has_died() {
            anyhow::bail!("the inference worker stopped");
        }
    }
}

/// Node parameters as the library's plain map.
fn read_params(node: &r2r::Node) -> Params {
    use crate::config::ParamValue as P;
    use r2r::ParameterValue as R;
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

fn publish<T: WrappedTypesupport + 'static>(publisher: &r2r::Publisher<T>, msg: &T, what: &str) {
    if let Err(e) = publisher.publish(msg) {
        tracing::warn!(error = %e, "cannot publish {what}");
    }
}

impl NodeState {
    fn refuse(
        &mut self,
        source: Source,
        kind: &'static str,
        detail: &dyn std::fmt::Display,
        now: f64,
    ) {
        if let Some(n) = self.bad.record(source, kind, now) {
            tracing::warn!(kind, count = n, "ignoring bad input: {detail}");
        }
    }

    fn on_image(&mut self, cam: usize, msg: &ImageMsg, now: f64) {
        let stamp = seconds_of(&msg.header.stamp);
        let view = match ImageView::new(
            msg.width as usize,
            msg.height as usize,
            msg.step as usize,
            &msg.encoding,
            &msg.data,
        ) {
            Ok(v) => v,
            Err(e) => return self.refuse(Source::Image, e.kind(), &e, now),
        };
        self.on_view(cam, &view, stamp, now);
    }

    fn on_compressed(&mut self, cam: usize, msg: &CompressedMsg, now: f64) {
        let stamp = seconds_of(&msg.header.stamp);
        let mut rgb = std::mem::take(&mut self.compressed_rgb);
        match decode_compressed(&msg.data, &mut rgb) {
            Ok((w, h)) => {
                let view = ImageView {
                    width: w,
                    height: h,
                    step: w * 3,
                    encoding: crate::preprocess::Encoding::Rgb8,
                    data: &rgb,
                };
                self.on_view(cam, &view, stamp, now);
            }
            Err(e) => self.refuse(Source::Image, e.kind(), &e, now),
        }
        self.compressed_rgb = rgb;
    }

    fn on_view(&mut self, cam: usize, view: &ImageView<'_>, stamp: f64, now: f64) {
        if stamp <= 0.0 {
            return self.refuse(
                Source::Image,
                "image_no_stamp",
                &"header.stamp is zero",
                now,
            );
        }
        match self.camera_sizes[cam] {
            Some((w, h)) if (w, h) != (view.width, view.height) => {
                let detail = format!(
                    "camera '{}' sent {}x{} after {}x{}",
                    self.wiring.camera_names[cam], view.width, view.height, w, h
                );
                return self.refuse(Source::Image, "image_size_changed", &detail, now);
            }
            _ => {}
        }
        if self.window.check_frame_stamp(cam, stamp).is_err() {
            let detail = format!(
                "camera '{}' stamp {stamp:.6} is not newer than the last frame",
                self.wiring.camera_names[cam]
            );
            return self.refuse(Source::Image, "image_stamp_backwards", &detail, now);
        }
        let slot = self.window.frame_slot(cam);
        match self.preprocessors[cam].process(view, slot) {
            Ok(()) => {
                self.camera_sizes[cam] = Some((view.width, view.height));
                self.window.commit_frame(cam, stamp);
            }
            Err(e) => self.refuse(Source::Image, e.kind(), &e, now),
        }
    }

    fn on_joint_state(&mut self, msg: &JointStateMsg, now: f64) {
        let stamp = seconds_of(&msg.header.stamp);
        if stamp <= 0.0 {
            return self.refuse(
                Source::JointState,
                "joint_state_no_stamp",
                &"header.stamp is zero",
                now,
            );
        }
        let result = self
            .joint_mapper
            .map(&msg.name, &msg.position, &mut self.joint_buf)
            .and_then(|()| self.window.push_joint_state(stamp, &self.joint_buf));
        if let Err(e) = result {
            self.refuse(Source::JointState, e.kind(), &e, now);
        }
    }

    fn set_instruction(&mut self, text: &str, now: f64) {
        let mut tokens = vec![0; self.tokens.len()];
        match self.encoder.encode_into(text, &mut tokens) {
            Ok(()) => {
                tracing::info!(instruction = text, ?tokens, "new instruction");
                self.tokens = tokens;
            }
            Err(e) => self.refuse(Source::Instruction, "instruction_tokenize", &e, now),
        }
    }

    fn set_enabled(&mut self, enable: bool, pubs: &Publishers, now: f64) -> String {
        if enable == self.enabled {
            return format!("already {}", if enable { "enabled" } else { "disabled" });
        }
        self.enabled = enable;
        if enable {
            if self.measured_action_positions() {
                self.executor.enable(now, &self.measured);
            } else {
                self.executor.clear();
            }
            tracing::info!("enabled: commands will be published");
            "enabled".into()
        } else {
            // Stop the rest of the active chunk where the arm is.
            self.publish_hold(pubs, now);
            tracing::info!("disabled: holding the measured position");
            "disabled; holding the measured position".into()
        }
    }

    fn reset(&mut self, worker: &mut Worker) {
        self.window.clear();
        self.executor.clear();
        self.camera_sizes.fill(None);
        worker.send_reset();
        tracing::info!("reset");
    }

    /// Measured positions of the action joints, from the newest joint state.
    fn measured_action_positions(&mut self) -> bool {
        let Some((_, q)) = self.window.latest_joint_state() else {
            return false;
        };
        for (m, &i) in self.measured.iter_mut().zip(&self.wiring.action_to_state) {
            *m = q[i];
        }
        true
    }

    /// Stops at the measured position: a one-point trajectory in chunk mode (the controller stops there);
    /// stream mode streams the hold from the plan.
    fn publish_hold(&mut self, pubs: &Publishers, now: f64) {
        if !self.measured_action_positions() {
            self.executor.clear();
            return;
        }
        self.executor.hold(now, &self.measured);
        if let Some(stream) = &pubs.stream {
            // Stale inputs: the stream goes on, from the hold plan. Disabled: nothing streams any more,
            // so send the hold once.
            if !self.enabled {
                self.stream_q.copy_from_slice(&self.measured);
                self.stream_v.fill(0.0);
                self.send_setpoint(stream, now);
            }
        }
        let Some(trajectory) = &pubs.trajectory else {
            return;
        };
        let msg = TrajectoryMsg {
            header: r2r::std_msgs::msg::Header {
                stamp: time_msg(now),
                frame_id: String::new(),
            },
            joint_names: self.wiring.action_joint_names.clone(),
            points: vec![PointMsg {
                positions: self.measured.clone(),
                velocities: vec![0.0; self.measured.len()],
                time_from_start: duration_msg(self.action_dt),
                ..Default::default()
            }],
        };
        publish(trajectory, &msg, "hold trajectory");
    }

    /// Starts an inference when one is due and the observation is complete; publishes a hold when inputs
    /// go stale while a chunk is active.
    fn control(&mut self, worker: &mut Worker, pubs: &Publishers, now: f64) {
        self.executor.tick(now);
        if !self.enabled {
            return;
        }
        let ready = self.window.readiness(now);
        match &ready {
            Err(reason) => {
                if self.was_running && reason.is_stale() {
                    self.stale_observations += 1;
                    tracing::warn!(
                        "{}; holding position until inputs are fresh again",
                        reason.describe(&self.wiring.camera_names)
                    );
                    self.publish_hold(pubs, now);
                    self.was_running = false;
                }
                // A sync gap (joint states just stopped) is not stale yet: keep `was_running` so the hold
                // still comes once the gap turns into staleness.
                self.not_ready = ready.err();
                return;
            }
            Ok(_) => self.not_ready = None,
        }
        let estimate = self.latency_estimate();
        if !self.executor.should_start(now, worker.busy(), estimate) {
            return;
        }
        let Some(mut job) = worker.take_job() else {
            return;
        };
        match self
            .window
            .assemble(now, &mut job.input.frames, &mut job.input.state)
        {
            Ok(meta) => {
                job.input.tokens.copy_from_slice(&self.tokens);
                // Prefix boundaries: the steps the robot executes before this chunk can be published, kept
                // exactly, and the next ones of the old plan, kept softly.
                job.input.prefix_steps = self.executor.prefix(
                    meta.stamp,
                    now + estimate,
                    &mut job.input.prefix,
                    &mut job.input.prefix_weights,
                );
                job.stamp = meta.stamp;
                job.started = Instant::now();
                self.executor.started(now);
                self.inferences += 1;
                self.was_running = true;
                worker.submit(job);
            }
            Err(reason) => {
                self.not_ready = Some(reason);
                worker.return_job(job);
            }
        }
    }

    /// A high percentile of recent chunk latencies (warm-up runs are never recorded). Before the first
    /// measurement, half a chunk: better to start early than to leave the arm without a command.
    fn latency_estimate(&mut self) -> f64 {
        if self.latency.is_empty() {
            self.executor.chunk_duration() / 2.0
        } else {
            self.latency.percentile(95.0)
        }
    }

    fn on_result(
        &mut self,
        job: &Job,
        result: Result<crate::runtime::StageTimings, String>,
        pubs: &Publishers,
        now: f64,
    ) {
        let timings = match result {
            Ok(t) => t,
            Err(e) => {
                self.inference_errors += 1;
                if let Some(n) = self.bad.record(Source::Command, "inference_error", now) {
                    tracing::error!(count = n, "inference failed: {e}");
                }
                self.last_error = Some(e);
                return;
            }
        };
        self.last_error = None;
        let latency = job.started.elapsed().as_secs_f64();
        self.latency.record(latency);
        // Nothing computed before a disable or from inputs that have gone stale since is commanded.
        if !self.enabled || self.not_ready.as_ref().is_some_and(NotReady::is_stale) {
            return;
        }
        if !self.measured_action_positions() {
            return;
        }
        let accepted = match self.executor.accept(
            job.stamp,
            &job.output.actions,
            now,
            &self.measured,
            &self.safety,
        ) {
            Ok(a) => a,
            Err(Refusal::AllStepsPast { latency_s }) => {
                if let Some(n) = self.bad.record(Source::Command, "chunk_too_late", now) {
                    tracing::warn!(
                        count = n,
                        latency_s,
                        "chunk finished after its last step was due; dropped"
                    );
                }
                return;
            }
            Err(Refusal::Safety(violation)) => {
                self.safety_rejections += 1;
                if let Some(n) = self.bad.record(Source::Command, violation.kind(), now) {
                    tracing::error!(count = n, "chunk refused by the safety checks: {violation}");
                } else {
                    tracing::debug!("chunk refused by the safety checks: {violation}");
                }
                return;
            }
        };
        if accepted.clamped > 0 {
            if let Some(n) = self.bad.record(Source::Command, "command_clamped", now) {
                tracing::warn!(count = n, "chunk positions clamped to joint limits");
            }
        }
        if accepted.truncated > 0 {
            if let Some(n) = self.bad.record(Source::Command, "chunk_truncated", now) {
                tracing::warn!(
                    count = n,
                    steps = accepted.truncated,
                    "chunk cut before a segment that breaks a velocity or acceleration limit"
                );
            }
        }
        if accepted.boundary_velocity_jump > 2.0 * self.max_boundary_jump_logged.max(0.25) {
            self.max_boundary_jump_logged = accepted.boundary_velocity_jump;
            tracing::debug!(
                jump = accepted.boundary_velocity_jump,
                "largest velocity change at a chunk boundary so far"
            );
        }
        self.chunk_id += 1;
        let stamp = time_msg(job.stamp);
        let plan = self.executor.plan();
        let trajectory = TrajectoryMsg {
            header: r2r::std_msgs::msg::Header {
                stamp: stamp.clone(),
                frame_id: String::new(),
            },
            joint_names: self.wiring.action_joint_names.clone(),
            // Point 0 is the anchor (where the stream is now); the controller gets the chunk's points,
            // timed from the observation stamp.
            points: (1..plan.len())
                .map(|i| PointMsg {
                    positions: plan.position(i).to_vec(),
                    velocities: plan.velocity(i).to_vec(),
                    time_from_start: duration_msg(plan.times[i] - job.stamp),
                    ..Default::default()
                })
                .collect(),
        };
        if let Some(publisher) = &pubs.trajectory {
            publish(publisher, &trajectory, "trajectory");
        }
        self.chunks_published += 1;
        self.chunk_rate.tick(now);
        let chunk = ActionChunk {
            header: r2r::std_msgs::msg::Header {
                stamp: stamp.clone(),
                frame_id: String::new(),
            },
            chunk_id: self.chunk_id,
            model_id: self.model_id.clone(),
            trajectory,
            preprocess_s: 0.0,
            encode_s: timings.encode_s,
            context_s: timings.context_s,
            denoise_s: timings.denoise_s,
            decode_s: timings.decode_s,
            total_s: timings.total_s,
            denoise_steps: job.steps as u32,
            execution_provider: self.provider.to_string(),
        };
        publish(&pubs.chunk, &chunk, "action chunk");
        if self.cfg.publish_predicted_frames && !job.output.frames.is_empty() {
            self.publish_frames(job, pubs);
        }
    }

    fn publish_frames(&mut self, job: &Job, pubs: &Publishers) {
        self.preview.update(&job.output.frames, &job.input.frames);
        let d = *self.window.dims();
        for (cam, publisher) in pubs.predicted.iter().enumerate() {
            for f in 0..d.video_frames {
                let msg = convert::rgb_image(
                    job.stamp + (f + 1) as f64 * self.video_dt,
                    &self.wiring.camera_names[cam],
                    d.width,
                    d.height,
                    self.preview.frame(cam, f),
                );
                publish(publisher, &msg, "predicted frame");
            }
        }
        let (h, w) = self.preview.tiled_size();
        let msg = convert::rgb_image(job.stamp, "wam_policy_preview", w, h, &self.preview.tiled);
        publish(&pubs.preview, &msg, "preview");
    }

    fn status(&mut self, now: f64) -> PolicyStatus {
        let (state, name, detail) = if !self.enabled {
            (
                PolicyStatus::STATE_DISABLED as u8,
                "DISABLED",
                "call ~/enable to start".to_string(),
            )
        } else if let Some(e) = &self.last_error {
            (PolicyStatus::STATE_ERROR as u8, "ERROR", e.clone())
        } else if let Some(reason) = &self.not_ready {
            let text = reason.describe(&self.wiring.camera_names);
            if reason.is_stale() {
                (PolicyStatus::STATE_STALE as u8, "STALE", text)
            } else {
                (PolicyStatus::STATE_WAITING as u8, "WAITING", text)
            }
        } else {
            (PolicyStatus::STATE_RUNNING as u8, "RUNNING", String::new())
        };
        PolicyStatus {
            header: r2r::std_msgs::msg::Header {
                stamp: time_msg(now),
                frame_id: String::new(),
            },
            state,
            state_name: name.to_string(),
            detail,
            model_id: self.model_id.clone(),
            execution_provider: self.provider.to_string(),
            enabled: self.enabled,
            latency_p50_s: self.latency.percentile(50.0),
            latency_p95_s: self.latency.percentile(95.0),
            latency_max_s: self.latency.max(),
            chunk_rate_hz: self.chunk_rate.rate(now),
            chunks_published: self.chunks_published,
            inferences: self.inferences,
            bad_images: self.bad.total(Source::Image),
            bad_joint_states: self.bad.total(Source::JointState),
            bad_instructions: self.bad.total(Source::Instruction),
            stale_observations: self.stale_observations,
            safety_rejections: self.safety_rejections,
            boundary_mode: self.cfg.execution.boundary_mode.name().to_string(),
            output_mode: self.cfg.execution.output_mode.name().to_string(),
            dry_run: self.cfg.execution.dry_run,
            dropped_steps: self.executor.metrics().dropped_steps,
            idle_time_s: self.executor.metrics().idle_time_s,
            max_boundary_velocity_jump: self.executor.metrics().max_boundary_velocity_jump,
        }
    }

    /// The status as a diagnostic_msgs/DiagnosticArray for the robot's diagnostics aggregator.
    fn diagnostics(&mut self, status: &PolicyStatus) -> DiagnosticArrayMsg {
        use r2r::diagnostic_msgs::msg::{DiagnosticStatus, KeyValue};
        // When the next inference starts: operators tune `replan_margin_s` against this and the latencies.
        let latency_estimate = self.latency_estimate();
        let replan_threshold_s = self.executor.threshold(latency_estimate);
        let level = match status.state {
            s if s == PolicyStatus::STATE_ERROR as u8 => DiagnosticStatus::ERROR as u8,
            s if s == PolicyStatus::STATE_STALE as u8 => DiagnosticStatus::WARN as u8,
            _ => DiagnosticStatus::OK as u8,
        };
        let kv = |key: &str, value: String| KeyValue {
            key: key.to_string(),
            value,
        };
        let message = if status.detail.is_empty() {
            status.state_name.clone()
        } else {
            format!("{}: {}", status.state_name, status.detail)
        };
        DiagnosticArrayMsg {
            header: status.header.clone(),
            status: vec![DiagnosticStatus {
                level,
                name: "wam_policy: policy".into(),
                message,
                hardware_id: status.model_id.clone(),
                values: vec![
                    kv("state", status.state_name.clone()),
                    kv("execution_provider", status.execution_provider.clone()),
                    kv("latency_p50_s", format!("{:.4}", status.latency_p50_s)),
                    kv("latency_p95_s", format!("{:.4}", status.latency_p95_s)),
                    kv("latency_max_s", format!("{:.4}", status.latency_max_s)),
                    kv("replan_threshold_s", format!("{replan_threshold_s:.4}")),
                    kv("chunk_rate_hz", format!("{:.3}", status.chunk_rate_hz)),
                    kv("dropped_steps", status.dropped_steps.to_string()),
                    kv("idle_time_s", format!("{:.3}", status.idle_time_s)),
                    kv(
                        "max_boundary_velocity_jump",
                        format!("{:.4}", status.max_boundary_velocity_jump),
                    ),
                    kv("boundary_mode", status.boundary_mode.clone()),
                    kv("output_mode", status.output_mode.clone()),
                    kv("dry_run", status.dry_run.to_string()),
                    kv("safety_rejections", status.safety_rejections.to_string()),
                    kv(
                        "truncated_steps",
                        self.executor.metrics().truncated_steps.to_string(),
                    ),
                    kv(
                        "catch_up_ramps",
                        self.executor.metrics().catch_up_ramps.to_string(),
                    ),
                ],
            }],
        }
    }

    /// Stream mode: the plan's setpoint at `now`, at `stream_rate_hz`, after the setpoint safety check.
    fn stream(&mut self, pubs: &Publishers, now: f64) {
        let Some(publisher) = &pubs.stream else {
            return;
        };
        if !self.enabled || now < self.next_stream {
            return;
        }
        let period = 1.0 / self.cfg.execution.stream_rate_hz;
        // Catch up without bursts after a stall.
        self.next_stream = (self.next_stream + period).max(now);
        if !self
            .executor
            .sample(now, &mut self.stream_q, &mut self.stream_v)
        {
            return;
        }
        if let Err(violation) = self.safety.setpoint(&mut self.stream_q, &mut self.stream_v) {
            self.safety_rejections += 1;
            if let Some(n) = self.bad.record(Source::Command, violation.kind(), now) {
                tracing::error!(
                    count = n,
                    "setpoint refused by the safety checks: {violation}"
                );
            }
            return;
        }
        self.send_setpoint(publisher, now);
    }

    /// Publishes `stream_q`/`stream_v` (already through the safety checks).
    fn send_setpoint(&mut self, publisher: &StreamPublisher, now: f64) {
        match publisher {
            StreamPublisher::Array(p) => {
                self.stream_array.data.copy_from_slice(&self.stream_q);
                publish(p, &self.stream_array, "streamed setpoint");
            }
            StreamPublisher::JointState(p) => {
                let msg = &mut self.stream_state;
                msg.header.stamp = time_msg(now);
                msg.position.copy_from_slice(&self.stream_q);
                msg.velocity.copy_from_slice(&self.stream_v);
                publish(p, msg, "streamed setpoint");
            }
        }
    }
}

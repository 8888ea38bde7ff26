//! The thin ROS layer (r2r): parameters in, subscriptions into the controller, the control timer, the
//! inference worker, and the controller's commands out as messages. Every decision is the library's
//! (`controller`, `task`, `lifecycle`); this module is wiring, start-up and shutdown.
//!
//! Its life: start-up (parameters, clock, the services that exist in every state: ~/enable, ~/reset,
//! the ~/run action, the parameter services and, for a managed node, the lifecycle services), then
//! configure (bundle, warm-up, topics, recording: at once, or on the lifecycle's configure), the
//! steady state (a loop that takes messages as they come and runs the controller's tick at
//! `control_period_s` on a deadline timer), and shutdown (a signal, a dead worker or an error: a last
//! hold through the safety filter, published before the process exits).

mod lifecycle;
mod markers;
mod messages;
mod parameters;
mod recording;
pub mod replay;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt};
use r2r::{QosProfile, WrappedTypesupport};

use crate::bundle::Bundle;
use crate::config::{
    updated_params, CameraTransport, CommandGroup, NodeConfig, OutputMode, ParamValue, Params,
    StreamMessage, VideoDecode, RUNTIME_PARAMETERS,
};
use crate::controller::{Command, Controller, Outbox, Status};
use crate::lifecycle::{CallbackResult, Lifecycle, State as LifecycleState, Transition};
use crate::policy::{Policy, Wiring};
use crate::preview::PreviewImages;
use crate::stats::LatencyWindow;
use crate::task::{Admission, Ending, Outcome, RunGoal, TaskRunner};
use crate::worker::{Done, Job, Worker};

use markers::{MarkerArrayMsg, PlannedPath};
use messages::{
    action_chunk, diagnostics, monitor_msg, policy_status, rgb_image, seconds_of, CommandMessages,
    CommandMsg, DiagnosticArrayMsg, Float64ArrayMsg, ImageMsg, JointStateMsg, MonitorMsg,
    StatusContext, StringMsg, TrajectoryMsg,
};
use r2r::wam_policy::action::Run;
use r2r::wam_policy::msg::{ActionChunk, PolicyStatus};
use recording::{Event, NodeRecorder};

type SetBool = r2r::std_srvs::srv::SetBool::Service;
type Trigger = r2r::std_srvs::srv::Trigger::Service;
type RunAction = Run::Action;
type Sub<T> = Box<dyn Stream<Item = T> + Unpin>;

/// Drains a subscription stream without blocking.
fn drain<T>(stream: &mut (impl Stream<Item = T> + Unpin), mut f: impl FnMut(T)) {
    while let Some(Some(msg)) = stream.next().now_or_never() {
        f(msg);
    }
}

/// A camera subscription delivering serialized messages: frames are read in place (`cdr`), not
/// copied into typed messages twice.
struct CameraSub {
    stream: Sub<Vec<u8>>,
    compressed: bool,
}

enum CommandPublisher {
    Trajectory(r2r::Publisher<TrajectoryMsg>),
    Array(r2r::Publisher<Float64ArrayMsg>),
    JointState(r2r::Publisher<JointStateMsg>),
}

impl CommandPublisher {
    fn create(node: &mut r2r::Node, topic: &str, group: &CommandGroup) -> anyhow::Result<Self> {
        let qos = QosProfile::default();
        Ok(match (group.output_mode, group.stream_message) {
            (OutputMode::Chunk, _) => {
                CommandPublisher::Trajectory(node.create_publisher(topic, qos)?)
            }
            (OutputMode::Stream, StreamMessage::Float64MultiArray) => {
                CommandPublisher::Array(node.create_publisher(topic, qos)?)
            }
            (OutputMode::Stream, StreamMessage::JointState) => {
                CommandPublisher::JointState(node.create_publisher(topic, qos)?)
            }
        })
    }

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

    fn destroy(self, node: &mut r2r::Node) {
        match self {
            CommandPublisher::Trajectory(p) => node.destroy_publisher(p),
            CommandPublisher::Array(p) => node.destroy_publisher(p),
            CommandPublisher::JointState(p) => node.destroy_publisher(p),
        }
    }
}

/// A command group's publishers: the controller's topic and its `~/dry_run/*` stand-in (both exist:
/// `dry_run` can change while the node runs).
struct GroupPublishers {
    live: CommandPublisher,
    dry: CommandPublisher,
}

struct Publishers {
    groups: Vec<GroupPublishers>,
    diagnostics: r2r::Publisher<DiagnosticArrayMsg>,
    chunk: r2r::Publisher<ActionChunk>,
    status: r2r::Publisher<PolicyStatus>,
    predicted: Vec<r2r::Publisher<ImageMsg>>,
    preview: r2r::Publisher<ImageMsg>,
    planned_path: r2r::Publisher<MarkerArrayMsg>,
    monitor: r2r::Publisher<MonitorMsg>,
    monitor_preview: r2r::Publisher<ImageMsg>,
}

impl Publishers {
    /// Whether anyone subscribes to the predicted frames or the preview (a failed graph query
    /// counts as watched: decoding is the safe side).
    fn frames_watched(&self) -> bool {
        self.predicted
            .iter()
            .chain(std::iter::once(&self.preview))
            .any(|p| {
                p.get_inter_process_subscription_count()
                    .map_or(true, |n| n > 0)
            })
    }

    fn destroy(self, node: &mut r2r::Node) {
        for g in self.groups {
            g.live.destroy(node);
            g.dry.destroy(node);
        }
        node.destroy_publisher(self.diagnostics);
        node.destroy_publisher(self.chunk);
        node.destroy_publisher(self.status);
        for p in self.predicted {
            node.destroy_publisher(p);
        }
        node.destroy_publisher(self.preview);
        node.destroy_publisher(self.planned_path);
        node.destroy_publisher(self.monitor);
        node.destroy_publisher(self.monitor_preview);
    }
}

fn publish<T: WrappedTypesupport + 'static>(publisher: &r2r::Publisher<T>, msg: &T, what: &str) {
    if let Err(e) = publisher.publish(msg) {
        tracing::warn!(error = %e, "cannot publish {what}");
    }
}

/// Names as the graph resolves them for this node: relative ones in its namespace, private ones
/// under its fully qualified name.
#[derive(Debug, Clone)]
pub(crate) struct TopicNames {
    namespace: String,
    node: String,
}

impl TopicNames {
    fn of(node: &r2r::Node) -> anyhow::Result<Self> {
        Ok(TopicNames {
            namespace: node.namespace()?,
            node: node.fully_qualified_name()?,
        })
    }

    pub(crate) fn resolve(&self, topic: &str) -> String {
        if let Some(rest) = topic.strip_prefix("~/") {
            format!("{}/{rest}", self.node)
        } else if topic.starts_with('/') {
            topic.to_string()
        } else {
            format!("{}/{topic}", self.namespace.trim_end_matches('/'))
        }
    }
}

/// The dry-run stand-in of a group's topic.
fn dry_run_topic(group: &CommandGroup) -> String {
    match (group.name.as_str(), group.output_mode) {
        ("", OutputMode::Chunk) => "~/dry_run/trajectory".into(),
        ("", OutputMode::Stream) => "~/dry_run/commands".into(),
        (name, _) => format!("~/dry_run/{name}"),
    }
}

/// The command topic of the configuration's first group (dry run: its stand-in) and its type: what
/// a recording names (recordings take one group).
fn command_topic(cfg: &NodeConfig) -> (String, &'static str) {
    let Some(group) = cfg.command_groups.first() else {
        return (
            cfg.trajectory_topic.clone(),
            "trajectory_msgs/msg/JointTrajectory",
        );
    };
    let topic = if cfg.execution.dry_run {
        dry_run_topic(group)
    } else {
        group.topic.clone()
    };
    let type_name = match (group.output_mode, group.stream_message) {
        (OutputMode::Chunk, _) => "trajectory_msgs/msg/JointTrajectory",
        (OutputMode::Stream, StreamMessage::Float64MultiArray) => "std_msgs/msg/Float64MultiArray",
        (OutputMode::Stream, StreamMessage::JointState) => "sensor_msgs/msg/JointState",
    };
    (topic, type_name)
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

fn flag(params: &Params, name: &str) -> bool {
    matches!(params.get(name), Some(ParamValue::Bool(true)))
}

fn text<'a>(params: &'a Params, name: &str, default: &'a str) -> &'a str {
    match params.get(name) {
        Some(ParamValue::String(s)) => s,
        _ => default,
    }
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

/// The subscriptions of a configured node.
struct Inputs {
    cameras: Vec<CameraSub>,
    joints: Sub<JointStateMsg>,
    instructions: [Sub<StringMsg>; 2],
}

/// The ~/run goal being executed.
struct ActiveGoal {
    handle: r2r::ActionServerGoal<RunAction>,
    cancels: Sub<r2r::ActionServerCancelRequest>,
    /// Canceled by its client: the result, sent once r2r has moved the goal to canceling (a round
    /// after the cancel request was accepted). The gate closed when the cancel came.
    canceled: Option<Run::Result>,
    rounds_waited: u32,
}

/// Rounds of the loop a canceled goal waits for r2r to mark it canceling before it is aborted
/// instead (a round is at most one control period).
const CANCEL_ROUNDS: u32 = 200;

/// Whether r2r has moved a goal to canceling: its goal handle is then CANCELING, or (r2r 0.9 drops
/// the handle from its table when it cancels) no longer known to `is_cancelling`.
fn canceling(handle: &r2r::ActionServerGoal<RunAction>) -> bool {
    handle.is_cancelling().unwrap_or(true)
}

fn result_msg(ending: &Ending) -> Run::Result {
    Run::Result {
        outcome: ending.outcome.code(),
        outcome_name: ending.outcome.name().to_string(),
        message: ending.message.clone(),
        elapsed_s: ending.elapsed_s,
        chunks: u32::try_from(ending.chunks).unwrap_or(u32::MAX),
    }
}

/// A configured node: the model, the controller and everything they publish and read.
struct Pipeline {
    controller: Controller,
    worker: Worker,
    pubs: Publishers,
    /// None only while its messages are being taken.
    inputs: Option<Inputs>,
    commands: CommandMessages,
    preview: PreviewImages,
    recorder: Option<NodeRecorder>,
    out: Outbox,
    model_id: String,
    provider: &'static str,
    video_dt: f64,
    tick_lateness: LatencyWindow,
    planned_path: Option<PlannedPath>,
    tasks: TaskRunner,
    goal: Option<ActiveGoal>,
    /// The controller's state at the last status, for the planned path's text.
    last_state: &'static str,
    /// The goal-request topic of ~/run as DDS names it: its publishers are the action's clients.
    goal_request_topic: String,
    /// The parameters this pipeline runs with (robot_description from the topic included).
    params: Params,
    next_tick: Instant,
    next_status: Instant,
}

/// What the loop owns besides the r2r node: the parameters, the lifecycle and the pipeline.
struct App {
    params: Params,
    managed: bool,
    lifecycle: Lifecycle,
    pipeline: Option<Pipeline>,
    /// The URDF: the parameter, or what the robot_description topic delivered.
    urdf: String,
    robot_description: Option<Sub<StringMsg>>,
    names: TopicNames,
    now: f64,
    /// A pipeline that has held and stopped (lifecycle shutdown, an error) and keeps its publishers
    /// until the deadline, so the middleware delivers the hold before they are destroyed.
    retiring: Option<(Pipeline, Instant)>,
}

/// How long a stopped pipeline's publishers outlive its last hold (the exit path waits as long).
const HOLD_LINGER: Duration = Duration::from_millis(300);

pub fn run() -> anyhow::Result<()> {
    let ctx = r2r::Context::create().context("cannot create the ROS context")?;
    let mut node =
        r2r::Node::create(ctx, "wam_policy", "").context("cannot create the ROS node")?;
    let params = read_params(&node);
    let managed = flag(&params, "managed");
    if flag(&params, "use_sim_time") {
        node.get_time_source()
            .enable_sim_time(&mut node)
            .context("use_sim_time: cannot subscribe to /clock")?;
    }
    let clock = node.get_ros_clock();
    let names = TopicNames::of(&node)?;

    // Served in every state: a managed node answers before it is configured.
    let mut enable_srv =
        node.create_service::<SetBool>("~/enable", QosProfile::services_default())?;
    let mut reset_srv =
        node.create_service::<Trigger>("~/reset", QosProfile::services_default())?;
    let mut run_srv = node
        .create_action_server::<RunAction>("~/run")
        .context("cannot create the ~/run action server")?;
    let mut param_srv = parameters::ParameterServices::create(&mut node)?;
    let mut lifecycle_srv = if managed {
        Some(lifecycle::LifecycleServices::create(&mut node)?)
    } else {
        None
    };
    let urdf = text(&params, "robot_description", "").to_string();
    let description_topic = text(&params, "robot_description_topic", "robot_description");
    let robot_description: Option<Sub<StringMsg>> =
        if urdf.is_empty() && !description_topic.is_empty() {
            Some(Box::new(
                node.subscribe::<StringMsg>(
                    description_topic,
                    QosProfile::default()
                        .reliable()
                        .transient_local()
                        .keep_last(1),
                )?,
            ))
        } else {
            None
        };

    // SIGINT (what `ros2 launch` sends on Ctrl-C) and SIGTERM end the loop with a hold; a second
    // signal while that runs ends the process at once.
    let stop_requested = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop_requested.clone())
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, stop_requested.clone())
            .context("cannot install the signal handlers")?;
    }

    let mut app = App {
        params,
        managed,
        lifecycle: Lifecycle::default(),
        pipeline: None,
        urdf,
        robot_description,
        names,
        now: 0.0,
        retiring: None,
    };
    if !managed {
        // An unmanaged node configures at once; a bad bundle or parameter stops it here.
        app.now = clock_now(&clock)?;
        let pipeline = app.configure(&mut node)?;
        app.pipeline = Some(pipeline);
    } else {
        tracing::info!("managed node: unconfigured until ~/change_state configure");
    }

    // Ok: stopped by a signal; Err: stopped by an error.
    let loop_result = (|| -> anyhow::Result<()> {
        loop {
            if stop_requested.load(Ordering::Relaxed) {
                return Ok(());
            }
            let wait = app
                .pipeline
                .as_ref()
                .map(|p| p.next_tick.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(20));
            node.spin_once(wait);
            let now = clock_now(&clock)?;
            app.now = now;
            app.take_robot_description();
            param_srv.serve(&mut app);
            if let Some(srv) = &mut lifecycle_srv {
                let mut lifecycle = std::mem::take(&mut app.lifecycle);
                let now_ns = (now.max(0.0) * 1e9) as u64;
                srv.serve(&mut lifecycle, &mut app, &mut node, now_ns);
                app.lifecycle = lifecycle;
            }
            drain(&mut run_srv, |req| app.on_goal(req, now));
            drain(&mut enable_srv, |req| {
                let (success, message) = app.on_enable(req.message.data, now);
                let response = r2r::std_srvs::srv::SetBool::Response { success, message };
                if let Err(e) = req.respond(response) {
                    tracing::warn!(error = %e, "cannot answer ~/enable");
                }
            });
            drain(&mut reset_srv, |req| {
                let (success, message) = match &mut app.pipeline {
                    Some(p) => {
                        p.reset(now);
                        (
                            true,
                            "observation window, active chunk and sampler seed reset; holding"
                                .to_string(),
                        )
                    }
                    None => (false, "not configured".to_string()),
                };
                let response = r2r::std_srvs::srv::Trigger::Response { success, message };
                if let Err(e) = req.respond(response) {
                    tracing::warn!(error = %e, "cannot answer ~/reset");
                }
            });
            if let Some(p) = &mut app.pipeline {
                p.step(&node, &clock, now)?;
            }
            if app
                .retiring
                .as_ref()
                .is_some_and(|(_, t)| Instant::now() >= *t)
            {
                if let Some((p, _)) = app.retiring.take() {
                    p.release(&mut node);
                }
            }
        }
    })();
    // Every way out holds first, then reports.
    let now = clock_now(&clock).unwrap_or(0.0);
    if let Some(p) = &mut app.pipeline {
        p.flush_canceled();
        p.end_goal(
            Outcome::Shutdown,
            "the node is shutting down".into(),
            now,
            true,
        );
        p.stop(now);
    }
    // Give the middleware a moment to deliver the hold and the goal's result before the process ends.
    let deadline = Instant::now() + HOLD_LINGER;
    while Instant::now() < deadline {
        node.spin_once(Duration::from_millis(20));
    }
    for p in app
        .pipeline
        .take()
        .into_iter()
        .chain(app.retiring.take().map(|(p, _)| p))
    {
        p.release(&mut node);
    }
    match loop_result {
        Ok(()) => {
            tracing::info!("stopped by a signal; held the measured position");
            Ok(())
        }
        Err(e) => Err(e.context("stopped after an error; held the measured position")),
    }
}

impl App {
    /// Keeps a stopped pipeline's publishers for [`HOLD_LINGER`] (its hold reaches the controller
    /// before they go); an older one still lingering goes now.
    fn retire(&mut self, pipeline: Pipeline, node: &mut r2r::Node) {
        if let Some((old, _)) = self
            .retiring
            .replace((pipeline, Instant::now() + HOLD_LINGER))
        {
            old.release(node);
        }
    }

    fn gated(&self) -> bool {
        flag(&self.params, "gated")
    }

    /// Commands may flow: an unmanaged node once configured, a managed one while active.
    fn active(&self) -> bool {
        self.pipeline.is_some()
            && (!self.managed || self.lifecycle.state() == LifecycleState::Active)
    }

    fn take_robot_description(&mut self) {
        let Some(sub) = &mut self.robot_description else {
            return;
        };
        let mut latest = None;
        drain(sub, |msg| latest = Some(msg.data));
        let Some(urdf) = latest else { return };
        if urdf != self.urdf {
            tracing::info!(bytes = urdf.len(), "robot description received");
            self.urdf = urdf;
            if let Some(p) = &mut self.pipeline {
                p.planned_path = planned_path(&self.urdf, &p.controller);
            }
        }
    }

    /// Whether the limits must come from the robot_description topic: none are given.
    fn needs_description(&self) -> bool {
        self.urdf.is_empty()
            && self.robot_description.is_some()
            && [
                "joint_limits.lower",
                "joint_limits.upper",
                "joint_limits.max_velocity",
            ]
            .iter()
            .all(|k| !self.params.contains_key(*k))
            && !flag(&self.params, "dry_run")
    }

    /// Load and check the bundle, start the model (warm-up), create the topics.
    fn configure(&mut self, node: &mut r2r::Node) -> anyhow::Result<Pipeline> {
        if self.needs_description() {
            let timeout = match self.params.get("robot_description_timeout_s") {
                Some(ParamValue::Double(d)) if *d > 0.0 => *d,
                _ => 5.0,
            };
            tracing::info!(
                timeout_s = timeout,
                "waiting for the robot description (limits)"
            );
            let deadline = Instant::now() + Duration::from_secs_f64(timeout);
            while self.urdf.is_empty() && Instant::now() < deadline {
                node.spin_once(Duration::from_millis(20));
                self.take_robot_description();
            }
            if self.urdf.is_empty() {
                anyhow::bail!(
                    "parameter `joint_limits`: position and velocity limits are required to command a \
                     robot: none given (joint_limits.lower/upper/max_velocity), robot_description is \
                     empty and nothing came on robot_description_topic within {timeout} s; set the \
                     limits or a URDF, or set dry_run: true to publish on debug topics only"
                );
            }
        }
        let mut params = self.params.clone();
        if !self.urdf.is_empty() {
            params.insert(
                "robot_description".into(),
                ParamValue::String(self.urdf.clone()),
            );
        }
        let mut cfg = NodeConfig::from_params(&params)?;
        if self.managed || cfg.gated {
            // The gate opens on activation or with a goal, never at start-up.
            cfg.enabled_at_start = false;
        }
        Pipeline::start(node, cfg, params, &self.urdf, &self.names, self.now)
    }

    fn on_enable(&mut self, enable: bool, now: f64) -> (bool, String) {
        if enable && self.gated() {
            return (
                false,
                "gated: commands flow only while a ~/run goal is active".into(),
            );
        }
        if enable && !self.active() {
            return (
                false,
                "not active (lifecycle): activate the node first".into(),
            );
        }
        let Some(p) = &mut self.pipeline else {
            return (false, "not configured".into());
        };
        if !enable {
            p.end_goal(
                Outcome::Canceled,
                "disabled through ~/enable".into(),
                now,
                false,
            );
        }
        (true, p.set_enabled(enable, now))
    }

    fn on_goal(&mut self, req: r2r::ActionServerGoalRequest<RunAction>, now: f64) {
        let g = &req.goal;
        let goal = RunGoal {
            time_budget_s: g.time_budget_s,
            succeed_on_timeout: g.succeed_on_timeout,
            stale_tolerance_s: g.stale_tolerance_s,
        }
        .checked();
        let active = self.active();
        let refusal = match (&goal, self.pipeline.as_mut()) {
            (Err(e), _) => Some(e.clone()),
            (_, None) => Some("not configured".to_string()),
            (_, Some(_)) if !active => Some("not active (lifecycle)".to_string()),
            (_, Some(p)) if p.tasks.admission() == Admission::Reject => {
                Some("a goal is running and run_preemption is `reject`".to_string())
            }
            (_, Some(p)) => (!p.on_instruction_text(&g.instruction, now))
                .then(|| "the instruction was refused (see the log)".to_string()),
        };
        let (Ok(goal), None, Some(p)) = (goal, &refusal, self.pipeline.as_mut()) else {
            tracing::warn!(
                reason = refusal.as_deref().unwrap_or(""),
                "~/run goal rejected"
            );
            if let Err(e) = req.reject() {
                tracing::warn!(error = %e, "cannot reject a ~/run goal");
            }
            return;
        };
        // A running goal hands the gate over to the new one.
        p.flush_canceled();
        let preempted = p.tasks.is_active();
        p.end_goal(
            Outcome::Preempted,
            "preempted by a new goal".into(),
            now,
            false,
        );
        match req.accept() {
            Ok((handle, cancels)) => {
                tracing::info!(instruction = %handle.goal.instruction, "~/run goal accepted");
                let status = p.controller.status(now);
                p.tasks.start(goal, now, &status);
                // A new goal starts the model's carried state afresh.
                p.controller.forget_model_state();
                p.goal = Some(ActiveGoal {
                    handle,
                    cancels: Box::new(cancels),
                    canceled: None,
                    rounds_waited: 0,
                });
                if !p.controller.is_enabled() {
                    p.set_enabled(true, now);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a ~/run goal");
                // No goal took the preempted one's gate over: close it, as every other end does.
                if preempted && p.controller.is_enabled() {
                    p.set_enabled(false, now);
                }
            }
        }
    }
}

impl parameters::ParameterHost for App {
    fn params(&self) -> &Params {
        &self.params
    }

    fn read_only(&self, name: &str) -> bool {
        self.pipeline.is_some() && !RUNTIME_PARAMETERS.contains(&name)
    }

    fn apply(&mut self, changes: &[(String, ParamValue)]) -> Result<(), String> {
        let now = self.now;
        if let Some(p) = &mut self.pipeline {
            let (next, cfg) =
                updated_params(&p.params, changes, true).map_err(|e| e.to_string())?;
            if let Some(cfg) = cfg {
                p.update(cfg, now)?;
            }
            p.params = next;
            // Recorded so that replay changes them at the same point.
            let changed: Params = changes.iter().cloned().collect();
            if let Ok(yaml) = crate::config::params_to_yaml(&changed) {
                p.event(now, Event::Params(yaml));
            }
        }
        let (next, _) = updated_params(&self.params, changes, false).map_err(|e| e.to_string())?;
        self.params = next;
        Ok(())
    }
}

impl lifecycle::Managed for App {
    fn on_transition(&mut self, node: &mut r2r::Node, transition: Transition) -> CallbackResult {
        let now = self.now;
        match transition {
            Transition::Configure => match self.configure(node) {
                Ok(p) => {
                    self.pipeline = Some(p);
                    CallbackResult::Success
                }
                Err(e) => {
                    tracing::error!("configure failed: {e:#}");
                    CallbackResult::Error
                }
            },
            Transition::Activate => {
                if let Some(p) = &mut self.pipeline {
                    if !p.controller.config().gated {
                        p.set_enabled(true, now);
                    }
                }
                CallbackResult::Success
            }
            Transition::Deactivate => {
                if let Some(p) = &mut self.pipeline {
                    p.end_goal(
                        Outcome::Canceled,
                        "the node was deactivated".into(),
                        now,
                        false,
                    );
                    p.set_enabled(false, now);
                }
                CallbackResult::Success
            }
            Transition::Cleanup => {
                if let Some(p) = self.pipeline.take() {
                    p.release(node);
                }
                CallbackResult::Success
            }
            Transition::UnconfiguredShutdown
            | Transition::InactiveShutdown
            | Transition::ActiveShutdown => {
                if let Some(mut p) = self.pipeline.take() {
                    p.end_goal(
                        Outcome::Shutdown,
                        "the node was shut down".into(),
                        now,
                        true,
                    );
                    p.stop(now);
                    self.retire(p, node);
                }
                CallbackResult::Success
            }
        }
    }

    fn on_error(&mut self, node: &mut r2r::Node) -> CallbackResult {
        if let Some(mut p) = self.pipeline.take() {
            p.stop(self.now);
            self.retire(p, node);
        }
        CallbackResult::Success
    }
}

/// `~/planned_path` from the URDF, when there is one and it has the action joints' chain.
fn planned_path(urdf: &str, controller: &Controller) -> Option<PlannedPath> {
    if urdf.is_empty() {
        return None;
    }
    let tip = controller.config().planned_path_tip_link.as_str();
    let tip = (!tip.is_empty()).then_some(tip);
    match PlannedPath::new(urdf, &controller.wiring().action_joint_names, tip) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(
                "no ~/planned_path: the robot description has no chain of the action joints: {e}"
            );
            None
        }
    }
}

impl Pipeline {
    fn start(
        node: &mut r2r::Node,
        cfg: NodeConfig,
        params: Params,
        urdf: &str,
        names: &TopicNames,
        now: f64,
    ) -> anyhow::Result<Pipeline> {
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
        let joints: Sub<JointStateMsg> = Box::new(
            node.subscribe::<JointStateMsg>(&cfg.joint_states_topic, QosProfile::sensor_data())?,
        );
        // Twice: transient-local for latched instructions published before the node came up, volatile
        // for plain publishers (a transient-local subscription does not match a volatile publisher).
        let instructions: [Sub<StringMsg>; 2] = [
            Box::new(
                node.subscribe::<StringMsg>(
                    &cfg.instruction_topic,
                    QosProfile::default()
                        .reliable()
                        .transient_local()
                        .keep_last(1),
                )?,
            ),
            Box::new(node.subscribe::<StringMsg>(&cfg.instruction_topic, QosProfile::default())?),
        ];
        let mut groups = Vec::with_capacity(cfg.command_groups.len());
        for g in &cfg.command_groups {
            groups.push(GroupPublishers {
                live: CommandPublisher::create(node, &g.topic, g)?,
                dry: CommandPublisher::create(node, &dry_run_topic(g), g)?,
            });
        }
        let pubs = Publishers {
            groups,
            diagnostics: node.create_publisher("/diagnostics", QosProfile::default())?,
            chunk: node.create_publisher("~/action_chunk", QosProfile::default())?,
            status: node.create_publisher("~/status", QosProfile::default())?,
            predicted: wiring
                .camera_names
                .iter()
                .map(|c| node.create_publisher(&format!("~/predicted/{c}"), QosProfile::default()))
                .collect::<Result<_, _>>()?,
            preview: node.create_publisher("~/preview", QosProfile::default())?,
            planned_path: node.create_publisher("~/planned_path", QosProfile::default())?,
            monitor: node.create_publisher("~/monitor", QosProfile::default())?,
            monitor_preview: node.create_publisher("~/monitor/preview", QosProfile::default())?,
        };
        let recorder = if cfg.record_path.is_empty() {
            None
        } else {
            Some(NodeRecorder::create(
                &cfg,
                &params,
                &wiring.camera_topics,
                names,
            )?)
        };
        let image = &m.image;
        let preview = PreviewImages::new(
            dims,
            [image.mean[0], image.mean[1], image.mean[2]],
            [image.std[0], image.std[1], image.std[2]],
        );
        let run = cfg.run;
        let controller = Controller::new(&bundle, cfg.clone(), wiring)?;
        let worker = Worker::spawn(policy, cfg.execution.debug_extra_latency_s)?;
        let goal_request_topic = format!("rq{}/_action/send_goalRequest", names.resolve("~/run"));
        let planned_path = planned_path(urdf, &controller);
        let pipeline = Pipeline {
            commands: CommandMessages::new(&controller),
            controller,
            worker,
            pubs,
            inputs: Some(Inputs {
                cameras,
                joints,
                instructions,
            }),
            preview,
            recorder,
            out: Outbox::with_capacity(8),
            model_id: m.model_id.clone(),
            provider,
            video_dt: bundle.video_dt(),
            tick_lateness: LatencyWindow::new(1024),
            planned_path,
            tasks: TaskRunner::new(run),
            goal: None,
            last_state: "DISABLED",
            goal_request_topic,
            params,
            next_tick: Instant::now(),
            next_status: Instant::now(),
        };
        tracing::info!(
            enabled = pipeline.controller.is_enabled(),
            sim_time = cfg.use_sim_time,
            now,
            "wam_policy running"
        );
        Ok(pipeline)
    }

    /// One round of the loop: inputs, the worker, the control tick on its deadline, status and the
    /// active goal.
    fn step(
        &mut self,
        node: &r2r::Node,
        clock: &Arc<Mutex<r2r::Clock>>,
        now: f64,
    ) -> anyhow::Result<()> {
        // Taken out while its messages go into the rest of the pipeline, then put back.
        if let Some(mut inputs) = self.inputs.take() {
            for (cam, sub) in inputs.cameras.iter_mut().enumerate() {
                let compressed = sub.compressed;
                drain(&mut sub.stream, |bytes| {
                    self.on_camera_bytes(cam, compressed, bytes, now)
                });
            }
            drain(&mut inputs.joints, |msg| self.on_joint_state(msg, now));
            for sub in &mut inputs.instructions {
                drain(sub, |msg| {
                    self.on_instruction_text(&msg.data, now);
                });
            }
            self.inputs = Some(inputs);
        }
        self.serve_cancels(now);
        if let Some(done) = self.worker.poll() {
            self.on_result(done, now);
        }
        let mut wall = Instant::now();
        let mut now = now;
        if wall >= self.next_tick {
            // The tick runs at the time it reads, after this round's messages were taken.
            now = clock_now(clock)?;
            wall = Instant::now();
            self.tick_lateness
                .record((wall - self.next_tick).as_secs_f64());
            let period = Duration::from_secs_f64(self.controller.config().control_period_s);
            self.next_tick += period;
            if self.next_tick < wall {
                // A stall longer than a period: skip the missed ticks instead of bursting them.
                self.next_tick = wall + period;
            }
            self.tick(now);
        }
        self.dispatch(now);
        if wall >= self.next_status {
            self.next_status =
                wall + Duration::from_secs_f64(self.controller.config().status_period_s);
            let status = self.publish_status(now);
            self.supervise_goal(node, &status, now);
        }
        if self.worker.has_died() {
            anyhow::bail!("the inference worker stopped");
        }
        Ok(())
    }

    /// New run-time parameters.
    fn update(&mut self, mut cfg: NodeConfig, now: f64) -> Result<(), String> {
        // Start-up-only choices stay as the node started with them.
        cfg.enabled_at_start = self.controller.config().enabled_at_start;
        self.tasks.set_params(cfg.run);
        self.controller.update_config(cfg, now)
    }

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

    /// An instruction from the topic or a goal; false: refused.
    fn on_instruction_text(&mut self, text: &str, now: f64) -> bool {
        let taken = self.controller.on_instruction(text, now);
        self.record(
            recording::INSTRUCTION,
            now,
            StringMsg {
                data: text.to_string(),
            },
        );
        taken
    }

    fn set_enabled(&mut self, enable: bool, now: f64) -> String {
        self.event(now, Event::Enable(enable));
        let message = self.controller.set_enabled(enable, now, &mut self.out);
        self.dispatch(now);
        message
    }

    fn reset(&mut self, now: f64) {
        self.event(now, Event::Reset);
        self.controller.reset(now, &mut self.out);
        self.dispatch(now);
    }

    fn tick(&mut self, now: f64) {
        self.event(now, Event::Tick);
        if matches!(
            self.controller.config().video_decode,
            VideoDecode::OnDemand { .. }
        ) {
            let wanted = self.recorder.is_some()
                || (self.controller.config().publish_predicted_frames
                    && self.pubs.frames_watched());
            self.controller.set_frames_wanted(wanted);
        }
        self.controller
            .tick(now, self.worker.free_job(), &mut self.out);
    }

    fn stop(&mut self, now: f64) {
        self.event(now, Event::Stop);
        self.controller.stop(now, &mut self.out);
        self.dispatch(now);
    }

    /// Releases the model and the topics (lifecycle cleanup, exit).
    fn release(mut self, node: &mut r2r::Node) {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish();
        }
        self.pubs.destroy(node);
        // Subscriptions end with their streams; the worker thread ends with its channel.
    }

    /// Ends the active goal (if any) with `outcome`; `close_gate`: hold and disable (every end but a
    /// preemption, a disable or a deactivation, which close the gate themselves).
    fn end_goal(&mut self, outcome: Outcome, message: String, now: f64, close_gate: bool) {
        if !self.tasks.is_active() {
            return;
        }
        let status = self.controller.status(now);
        if let Some(ending) = self.tasks.end(outcome, message, now, &status) {
            self.finish_goal(ending, now, close_gate);
        }
    }

    fn finish_goal(&mut self, ending: Ending, now: f64, close_gate: bool) {
        let Some(mut goal) = self.goal.take() else {
            return;
        };
        tracing::info!(
            outcome = ending.outcome.name(),
            message = %ending.message,
            "~/run goal ended"
        );
        let result = result_msg(&ending);
        let sent = if ending.succeeded {
            goal.handle.succeed(result)
        } else {
            goal.handle.abort(result)
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot send the ~/run result");
        }
        if close_gate && self.controller.is_enabled() {
            self.set_enabled(false, now);
        }
    }

    /// Sends the result of a canceled goal: CANCELED once r2r has it canceling, else (out of time, or
    /// a new goal or the shutdown cannot wait) ABORTED with the CANCELED outcome.
    fn flush_canceled(&mut self) {
        let Some(mut goal) = self.goal.take() else {
            return;
        };
        let Some(result) = goal.canceled.take() else {
            self.goal = Some(goal);
            return;
        };
        let sent = if canceling(&goal.handle) {
            goal.handle.cancel(result)
        } else {
            goal.handle.abort(result)
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot send the ~/run result");
        }
    }

    fn serve_cancels(&mut self, now: f64) {
        let Some(goal) = &mut self.goal else { return };
        if goal.canceled.is_some() {
            goal.rounds_waited += 1;
            if canceling(&goal.handle) || goal.rounds_waited > CANCEL_ROUNDS {
                self.flush_canceled();
            }
            return;
        }
        let mut canceled = false;
        drain(&mut goal.cancels, |req| {
            req.accept();
            canceled = true;
        });
        if !canceled {
            return;
        }
        // The gate closes at once; the result follows when the goal is canceling.
        let status = self.controller.status(now);
        if let Some(ending) = self.tasks.end(
            Outcome::Canceled,
            "canceled by the client".into(),
            now,
            &status,
        ) {
            tracing::info!(outcome = ending.outcome.name(), "~/run goal ended");
            if let Some(goal) = &mut self.goal {
                goal.canceled = Some(result_msg(&ending));
            }
        }
        if self.controller.is_enabled() {
            self.set_enabled(false, now);
        }
    }

    /// The goal's feedback and end conditions, at the status period.
    fn supervise_goal(&mut self, node: &r2r::Node, status: &Status, now: f64) {
        if !self.tasks.is_active() {
            return;
        }
        // The action's clients publish goal requests: none left means the goal's client is gone.
        let clients_present = node
            .get_publishers_info_by_topic(&self.goal_request_topic, true)
            .map(|p| !p.is_empty())
            .unwrap_or(true);
        if let Some(ending) = self.tasks.check(now, status, clients_present) {
            self.finish_goal(ending, now, true);
            return;
        }
        let (Some(f), Some(goal)) = (self.tasks.feedback(now, status), &self.goal) else {
            return;
        };
        let feedback = Run::Feedback {
            state: f.state.to_string(),
            chunks: u32::try_from(f.chunks).unwrap_or(u32::MAX),
            elapsed_s: f.elapsed_s,
            latency_s: f.latency_s,
            remaining_s: f.remaining_s,
        };
        if let Err(e) = goal.handle.publish_feedback(feedback) {
            tracing::warn!(error = %e, "cannot publish ~/run feedback");
        }
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
        let dry_run = self.controller.config().execution.dry_run;
        for command in out.drain() {
            match command {
                Command::StartInference => self.worker.submit(),
                Command::ResetSampler => self.worker.send_reset(),
                Command::Monitor => self.publish_monitor(now),
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
                        && job.output.frames_decoded
                    {
                        self.publish_frames(job);
                    }
                }
                Command::Trajectory { .. } | Command::Hold { .. } | Command::Setpoint { .. } => {
                    self.commands.build(&self.controller, &command);
                    for (group, msg) in self.commands.ready() {
                        let publishers = &self.pubs.groups[group];
                        if dry_run {
                            publishers.dry.publish(msg);
                        } else {
                            publishers.live.publish(msg);
                        }
                        if let Some(r) = &self.recorder {
                            r.command(now, msg);
                        }
                        if let CommandMsg::Trajectory(t) = msg {
                            if last_trajectory.is_none() {
                                last_trajectory = Some(t.clone());
                            }
                        }
                    }
                    if matches!(command, Command::Trajectory { .. } | Command::Hold { .. }) {
                        self.publish_planned_path(now);
                    }
                }
            }
        }
        self.out = out;
    }

    /// The monitor's new scores on `~/monitor`, and the last one's frames on `~/monitor/preview`.
    fn publish_monitor(&mut self, now: f64) {
        let scores: Vec<_> = self.controller.take_monitor_scores().collect();
        for score in &scores {
            let msg = monitor_msg(&self.controller, score);
            publish(&self.pubs.monitor, &msg, "monitor");
            if let Some(r) = &self.recorder {
                r.message(recording::MONITOR, now, msg);
            }
        }
        if !scores.is_empty() {
            let (predicted, observed, stamps) = self.controller.monitor().last_frames();
            self.preview.update_monitor(predicted, observed, stamps);
            let (h, w) = self.preview.monitor_size();
            let stamp = scores.last().map_or(now, |s| s.stamp);
            let msg = rgb_image(
                stamp,
                "wam_policy_monitor",
                w,
                h,
                &self.preview.monitor_tiled,
            );
            publish(&self.pubs.monitor_preview, &msg, "monitor preview");
        }
    }

    fn publish_planned_path(&mut self, now: f64) {
        let Some(path) = &mut self.planned_path else {
            return;
        };
        let msg = path.update(&self.controller, now, self.last_state);
        publish(&self.pubs.planned_path, msg, "planned path");
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
                    d.size(cam).1,
                    d.size(cam).0,
                    self.preview.frame(cam, f),
                );
                publish(publisher, &msg, "predicted frame");
            }
        }
        let monitor = self.controller.config().monitor.enabled;
        let (h, w) = self.preview.tiled_size(monitor);
        let msg = rgb_image(
            job.stamp,
            "wam_policy_preview",
            w,
            h,
            self.preview.tiled(monitor),
        );
        publish(&self.pubs.preview, &msg, "preview");
    }

    fn publish_status(&mut self, now: f64) -> Status {
        let s = self.controller.status(now);
        self.last_state = s.state.name();
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
            monitor_warn: s.monitor_score > self.controller.config().monitor.warn_score,
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
        s
    }
}

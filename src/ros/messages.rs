//! Messages: conversions between ROS message fields and the library's plain types, and the messages the
//! node publishes, built from the controller's commands and status (shared by the node and `replay`).

use r2r::builtin_interfaces::msg::{Duration as DurationMsg, Time};

pub fn seconds_of(t: &Time) -> f64 {
    f64::from(t.sec) + f64::from(t.nanosec) * 1e-9
}

pub fn time_msg(seconds: f64) -> Time {
    let s = seconds.max(0.0);
    let mut sec = s.floor();
    let mut nanosec = ((s - sec) * 1e9).round();
    if nanosec >= 1e9 {
        sec += 1.0;
        nanosec -= 1e9;
    }
    Time {
        sec: sec as i32,
        nanosec: nanosec as u32,
    }
}

pub fn duration_msg(seconds: f64) -> DurationMsg {
    let t = time_msg(seconds);
    DurationMsg {
        sec: t.sec,
        nanosec: t.nanosec,
    }
}

pub fn rgb_image(
    stamp: f64,
    frame_id: &str,
    width: usize,
    height: usize,
    data: &[u8],
) -> r2r::sensor_msgs::msg::Image {
    r2r::sensor_msgs::msg::Image {
        header: r2r::std_msgs::msg::Header {
            stamp: time_msg(stamp),
            frame_id: frame_id.to_string(),
        },
        height: height as u32,
        width: width as u32,
        encoding: "rgb8".to_string(),
        is_bigendian: 0,
        step: (width * 3) as u32,
        data: data.to_vec(),
    }
}

pub type ImageMsg = r2r::sensor_msgs::msg::Image;
pub type JointStateMsg = r2r::sensor_msgs::msg::JointState;
pub type TrajectoryMsg = r2r::trajectory_msgs::msg::JointTrajectory;
pub type PointMsg = r2r::trajectory_msgs::msg::JointTrajectoryPoint;
pub type Float64ArrayMsg = r2r::std_msgs::msg::Float64MultiArray;
pub type StringMsg = r2r::std_msgs::msg::String;
pub type DiagnosticArrayMsg = r2r::diagnostic_msgs::msg::DiagnosticArray;
pub use r2r::wam_policy::msg::{ActionChunk, Monitor as MonitorMsg, PolicyStatus};

use crate::config::{OutputMode, StreamMessage};
use crate::controller::{Command, Controller, State, Status};
use crate::runtime::StageTimings;

fn header(stamp: f64, frame_id: &str) -> r2r::std_msgs::msg::Header {
    r2r::std_msgs::msg::Header {
        stamp: time_msg(stamp),
        frame_id: frame_id.to_string(),
    }
}

/// A command as the message that goes to the command topic.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandMsg {
    Trajectory(TrajectoryMsg),
    Array(Float64ArrayMsg),
    JointState(JointStateMsg),
}

impl CommandMsg {
    /// Positions and velocities of every point (trajectory) or of the setpoint, for comparisons.
    pub fn values(&self) -> Vec<f64> {
        match self {
            CommandMsg::Trajectory(t) => t
                .points
                .iter()
                .flat_map(|p| {
                    p.positions
                        .iter()
                        .chain(&p.velocities)
                        .copied()
                        .chain(std::iter::once(seconds_of_duration(&p.time_from_start)))
                })
                .chain(std::iter::once(seconds_of(&t.header.stamp)))
                .collect(),
            CommandMsg::Array(a) => a.data.clone(),
            CommandMsg::JointState(j) => j
                .position
                .iter()
                .chain(&j.velocity)
                .copied()
                .chain(std::iter::once(seconds_of(&j.header.stamp)))
                .collect(),
        }
    }
}

pub fn seconds_of_duration(d: &DurationMsg) -> f64 {
    f64::from(d.sec) + f64::from(d.nanosec) * 1e-9
}

/// One command group's messages: its joints' slice of every command, refilled in place for
/// setpoints, built per chunk for trajectories.
struct GroupMessages {
    /// Action-joint indices of the group.
    indices: Vec<usize>,
    joint_names: Vec<String>,
    output_mode: OutputMode,
    trajectory: CommandMsg,
    setpoint: CommandMsg,
}

/// The command messages of a controller command, one per command group that takes it: trajectories
/// (and trajectory holds) for chunk-mode groups, setpoints (and setpoint holds) for stream-mode ones.
pub struct CommandMessages {
    action_dt: f64,
    groups: Vec<GroupMessages>,
    /// Which groups' messages the last `build` filled.
    ready: Vec<bool>,
}

impl CommandMessages {
    pub fn new(controller: &Controller) -> Self {
        let names = &controller.wiring().action_joint_names;
        let groups: Vec<GroupMessages> = controller
            .config()
            .command_groups
            .iter()
            .zip(&controller.wiring().group_joints)
            .map(|(g, indices)| {
                let joint_names: Vec<String> = indices.iter().map(|&i| names[i].clone()).collect();
                let n = indices.len();
                let setpoint = match g.stream_message {
                    StreamMessage::Float64MultiArray => CommandMsg::Array(Float64ArrayMsg {
                        data: vec![0.0; n],
                        ..Default::default()
                    }),
                    StreamMessage::JointState => CommandMsg::JointState(JointStateMsg {
                        name: joint_names.clone(),
                        position: vec![0.0; n],
                        velocity: vec![0.0; n],
                        ..Default::default()
                    }),
                };
                GroupMessages {
                    indices: indices.clone(),
                    joint_names,
                    output_mode: g.output_mode,
                    trajectory: CommandMsg::Trajectory(TrajectoryMsg::default()),
                    setpoint,
                }
            })
            .collect();
        CommandMessages {
            action_dt: controller.action_dt(),
            ready: vec![false; groups.len()],
            groups,
        }
    }

    /// Fills the messages of `command` for the groups that take it (see `ready`).
    pub fn build(&mut self, controller: &Controller, command: &Command) {
        self.ready.fill(false);
        for (g, ready) in self.groups.iter_mut().zip(&mut self.ready) {
            *ready = match (*command, g.output_mode) {
                (Command::Trajectory { stamp }, OutputMode::Chunk) => {
                    g.trajectory = CommandMsg::Trajectory(g.chunk(controller, stamp));
                    true
                }
                (Command::Hold { at }, OutputMode::Chunk) => {
                    g.trajectory = CommandMsg::Trajectory(g.hold(controller, at, self.action_dt));
                    true
                }
                // A hold leaves the hold positions and zero velocities in the controller's setpoint.
                (Command::Hold { at } | Command::Setpoint { at }, OutputMode::Stream) => {
                    g.fill_setpoint(controller, at)
                }
                _ => false,
            };
        }
    }

    /// The messages the last `build` filled, with their group's index.
    pub fn ready(&self) -> impl Iterator<Item = (usize, &CommandMsg)> {
        self.groups
            .iter()
            .zip(&self.ready)
            .enumerate()
            .filter(|(_, (_, r))| **r)
            .map(|(i, (g, _))| {
                let msg = match g.output_mode {
                    OutputMode::Chunk => &g.trajectory,
                    OutputMode::Stream => &g.setpoint,
                };
                (i, msg)
            })
    }
}

impl GroupMessages {
    /// The chunk's points (after the plan's anchor), timed from the observation stamp.
    fn chunk(&self, controller: &Controller, stamp: f64) -> TrajectoryMsg {
        let plan = controller.plan();
        TrajectoryMsg {
            header: header(stamp, ""),
            joint_names: self.joint_names.clone(),
            points: (1..plan.len())
                .map(|k| PointMsg {
                    positions: self.indices.iter().map(|&i| plan.position(k)[i]).collect(),
                    velocities: self.indices.iter().map(|&i| plan.velocity(k)[i]).collect(),
                    time_from_start: duration_msg(plan.times[k] - stamp),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// A one-point trajectory at the hold positions, due one action step after `at`.
    fn hold(&self, controller: &Controller, at: f64, action_dt: f64) -> TrajectoryMsg {
        let q = controller.hold_positions();
        TrajectoryMsg {
            header: header(at, ""),
            joint_names: self.joint_names.clone(),
            points: vec![PointMsg {
                positions: self.indices.iter().map(|&i| q[i]).collect(),
                velocities: vec![0.0; self.indices.len()],
                time_from_start: duration_msg(action_dt),
                ..Default::default()
            }],
        }
    }

    fn fill_setpoint(&mut self, controller: &Controller, at: f64) -> bool {
        let (q, v) = controller.setpoint();
        match &mut self.setpoint {
            CommandMsg::Array(m) => {
                for (d, &i) in m.data.iter_mut().zip(&self.indices) {
                    *d = q[i];
                }
            }
            CommandMsg::JointState(m) => {
                m.header.stamp = time_msg(at);
                for (k, &i) in self.indices.iter().enumerate() {
                    m.position[k] = q[i];
                    m.velocity[k] = v[i];
                }
            }
            CommandMsg::Trajectory(_) => return false,
        }
        true
    }
}

/// The ActionChunk of an accepted chunk.
pub fn action_chunk(
    controller: &Controller,
    trajectory: Option<&TrajectoryMsg>,
    chunk_id: u64,
    stamp: f64,
    steps: usize,
    model_id: &str,
    provider: &str,
) -> ActionChunk {
    let t: &StageTimings = controller.last_timings();
    ActionChunk {
        header: header(stamp, ""),
        chunk_id,
        model_id: model_id.to_string(),
        trajectory: trajectory.cloned().unwrap_or_default(),
        preprocess_s: 0.0,
        encode_s: t.encode_s,
        context_s: t.context_s,
        denoise_s: t.denoise_s,
        decode_s: t.decode_s,
        total_s: t.total_s,
        denoise_steps: steps as u32,
        execution_provider: provider.to_string(),
    }
}

/// What the status message and the diagnostics carry besides the controller's status.
pub struct StatusContext<'a> {
    pub now: f64,
    pub model_id: &'a str,
    pub provider: &'a str,
    pub recorded: u64,
    pub record_dropped: u64,
    /// 99th percentile of the control timer's lateness, seconds.
    pub tick_lateness_p99_s: f64,
    /// The monitor's last score is above `monitor_warn_score`.
    pub monitor_warn: bool,
}

pub fn policy_status(controller: &Controller, s: &Status, ctx: &StatusContext<'_>) -> PolicyStatus {
    let exec = &controller.config().execution;
    let state = match s.state {
        State::Disabled => PolicyStatus::STATE_DISABLED as u8,
        State::Waiting => PolicyStatus::STATE_WAITING as u8,
        State::Running => PolicyStatus::STATE_RUNNING as u8,
        State::Stale => PolicyStatus::STATE_STALE as u8,
        State::Error => PolicyStatus::STATE_ERROR as u8,
    };
    PolicyStatus {
        header: header(ctx.now, ""),
        state,
        state_name: s.state.name().to_string(),
        detail: s.detail.clone(),
        model_id: ctx.model_id.to_string(),
        execution_provider: ctx.provider.to_string(),
        enabled: s.enabled,
        latency_p50_s: s.latency_p50_s,
        latency_p95_s: s.latency_p95_s,
        latency_max_s: s.latency_max_s,
        chunk_rate_hz: s.chunk_rate_hz,
        chunks_published: s.chunks_published,
        inferences: s.inferences,
        bad_images: s.bad_images,
        bad_joint_states: s.bad_joint_states,
        bad_instructions: s.bad_instructions,
        stale_observations: s.stale_observations,
        safety_rejections: s.safety_rejections,
        boundary_mode: exec.boundary_mode.name().to_string(),
        output_mode: exec.output_mode.name().to_string(),
        dry_run: exec.dry_run,
        dropped_steps: s.dropped_steps,
        idle_time_s: s.idle_time_s,
        max_boundary_velocity_jump: s.max_boundary_velocity_jump,
        discarded_chunks: s.discarded_chunks,
        decoded_chunks: s.decoded_chunks,
        recorded_messages: ctx.recorded,
        record_dropped: ctx.record_dropped,
        camera_names: controller.wiring().camera_names.clone(),
        camera_frames_received: s.cameras.iter().map(|c| c.received).collect(),
        camera_rate_hz: s.cameras.iter().map(|c| c.rate_hz).collect(),
        camera_age_s: s.cameras.iter().map(|c| c.age_s).collect(),
        camera_frames_missed: s.cameras.iter().map(|c| c.missed).collect(),
        joint_states_received: s.joint_states.received,
        joint_state_rate_hz: s.joint_states.rate_hz,
        reaction_latency_p50_s: s.reaction_latency_p50_s,
        reaction_latency_p95_s: s.reaction_latency_p95_s,
        monitor_score: s.monitor_score,
        monitor_calibrated: s.monitor_calibrated,
        monitor_done: s.monitor_done,
        monitor_holds: s.monitor_holds,
    }
}

/// One chunk's monitor score as `~/monitor`.
pub fn monitor_msg(controller: &Controller, m: &crate::monitor::ChunkScore) -> MonitorMsg {
    let stamp = |t: &f64| {
        if t.is_finite() {
            time_msg(*t)
        } else {
            Time::default()
        }
    };
    MonitorMsg {
        header: header(m.stamp, ""),
        chunk_id: m.chunk_id,
        cameras: controller.wiring().camera_names.clone(),
        latent_score: m.cameras.iter().map(|c| c.latent).collect(),
        psnr_db: m.cameras.iter().map(|c| c.psnr_db).collect(),
        z: m.cameras.iter().map(|c| c.z).collect(),
        paired: m.cameras.iter().map(|c| c.paired).collect(),
        score: m.score,
        calibrated: m.calibrated,
        predicted_stamps: m.predicted_stamps.iter().map(stamp).collect(),
        observed_stamps: m.observed_stamps.iter().map(stamp).collect(),
        predicted_motion: m.predicted_motion,
        predicted_change: m.predicted_change,
        done: m.done,
        done_confidence: m.done_confidence,
        consecutive_high: m.consecutive_high,
    }
}

/// The status as a diagnostic_msgs/DiagnosticArray for the robot's diagnostics aggregator.
pub fn diagnostics(
    s: &Status,
    status: &PolicyStatus,
    ctx: &StatusContext<'_>,
) -> DiagnosticArrayMsg {
    use r2r::diagnostic_msgs::msg::{DiagnosticStatus, KeyValue};
    let level = match s.state {
        State::Error => DiagnosticStatus::ERROR as u8,
        State::Stale => DiagnosticStatus::WARN as u8,
        // The world is not doing what the model predicted.
        _ if ctx.monitor_warn => DiagnosticStatus::WARN as u8,
        _ => DiagnosticStatus::OK as u8,
    };
    let kv = |key: &str, value: String| KeyValue {
        key: key.to_string(),
        value,
    };
    let mut message = if s.detail.is_empty() {
        s.state.name().to_string()
    } else {
        format!("{}: {}", s.state.name(), s.detail)
    };
    if ctx.monitor_warn {
        message.push_str(&format!(
            "; monitor: predicted and observed frames disagree (score {:.2})",
            s.monitor_score
        ));
    }
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
                kv("latency_p50_s", format!("{:.4}", s.latency_p50_s)),
                kv("latency_p95_s", format!("{:.4}", s.latency_p95_s)),
                kv("latency_max_s", format!("{:.4}", s.latency_max_s)),
                // When the next inference starts: operators tune `replan_margin_s` against this.
                kv("replan_threshold_s", format!("{:.4}", s.replan_threshold_s)),
                kv("chunk_rate_hz", format!("{:.3}", s.chunk_rate_hz)),
                kv("dropped_steps", s.dropped_steps.to_string()),
                kv("idle_time_s", format!("{:.3}", s.idle_time_s)),
                kv(
                    "max_boundary_velocity_jump",
                    format!("{:.4}", s.max_boundary_velocity_jump),
                ),
                kv("boundary_mode", status.boundary_mode.clone()),
                kv("output_mode", status.output_mode.clone()),
                kv("dry_run", status.dry_run.to_string()),
                kv("safety_rejections", s.safety_rejections.to_string()),
                kv("truncated_steps", s.truncated_steps.to_string()),
                kv("catch_up_ramps", s.catch_up_ramps.to_string()),
                kv("discarded_chunks", s.discarded_chunks.to_string()),
                kv("decoded_chunks", s.decoded_chunks.to_string()),
                kv("clock_jumps", s.clock_jumps.to_string()),
                kv("inference_errors", s.inference_errors.to_string()),
                kv("recorded_messages", ctx.recorded.to_string()),
                kv("record_dropped", ctx.record_dropped.to_string()),
                kv(
                    "tick_lateness_p99_s",
                    format!("{:.5}", ctx.tick_lateness_p99_s),
                ),
                kv("monitor_score", format!("{:.4}", s.monitor_score)),
                kv("monitor_calibrated", s.monitor_calibrated.to_string()),
                kv("monitor_done", s.monitor_done.to_string()),
                kv("monitor_holds", s.monitor_holds.to_string()),
            ]
            .into_iter()
            .chain(
                s.cameras
                    .iter()
                    .zip(&status.camera_names)
                    .flat_map(|(c, name)| {
                        [
                            kv(
                                &format!("camera.{name}.rate_hz"),
                                format!("{:.2}", c.rate_hz),
                            ),
                            kv(&format!("camera.{name}.age_s"), format!("{:.3}", c.age_s)),
                            kv(
                                &format!("camera.{name}.frames_received"),
                                c.received.to_string(),
                            ),
                            kv(
                                &format!("camera.{name}.frames_missed"),
                                c.missed.to_string(),
                            ),
                        ]
                    }),
            )
            .chain([
                kv(
                    "joint_state_rate_hz",
                    format!("{:.1}", s.joint_states.rate_hz),
                ),
                kv("joint_states_received", s.joint_states.received.to_string()),
                kv(
                    "reaction_latency_p50_s",
                    format!("{:.4}", s.reaction_latency_p50_s),
                ),
                kv(
                    "reaction_latency_p95_s",
                    format!("{:.4}", s.reaction_latency_p95_s),
                ),
            ])
            .chain(
                s.rejections
                    .iter()
                    .map(|(kind, n)| kv(&format!("rejected.{kind}"), n.to_string())),
            )
            .collect(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{CompressedImageCdr, ImageCdr};
    use r2r::WrappedTypesupport;

    type CompressedMsg = r2r::sensor_msgs::msg::CompressedImage;

    /// The in-place reader agrees with the middleware's own serialization.
    #[test]
    fn frames_serialized_by_rmw_are_read_in_place() {
        for (frame_id, encoding, width) in [
            ("", "rgb8", 3u32),
            ("cam", "bgra8", 5),
            ("wrist_optical", "mono8", 7),
        ] {
            let msg = ImageMsg {
                header: r2r::std_msgs::msg::Header {
                    stamp: time_msg(1_700_000_000.25),
                    frame_id: frame_id.into(),
                },
                height: 2,
                width,
                encoding: encoding.into(),
                is_bigendian: 0,
                step: width * 4,
                data: (0..width * 8).map(|i| i as u8).collect(),
            };
            let bytes = msg.to_serialized_bytes().unwrap();
            let view = ImageCdr::parse(&bytes).unwrap();
            assert_eq!(view.stamp, seconds_of(&msg.header.stamp));
            assert_eq!((view.width, view.height, view.step), (width, 2, width * 4));
            assert_eq!(view.encoding, encoding);
            assert_eq!(view.data, &msg.data[..]);
        }
        let msg = CompressedMsg {
            header: r2r::std_msgs::msg::Header {
                stamp: time_msg(3.5),
                frame_id: "x".into(),
            },
            format: "png".into(),
            data: vec![1, 2, 3, 4, 5],
        };
        let bytes = msg.to_serialized_bytes().unwrap();
        let view = CompressedImageCdr::parse(&bytes).unwrap();
        assert_eq!(
            (view.stamp, view.format, view.data),
            (3.5, "png", &msg.data[..])
        );
    }
}

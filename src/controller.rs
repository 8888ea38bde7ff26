//! The node's decisions, in one place and in plain Rust: what to do with each input, when the policy
//! drives and when it holds, when to start an inference, what to do with its result, and what to report.
//!
//! The controller takes inputs (frames, joint states, instructions, service calls, inference results)
//! and the time on the node's clock, and returns [`Command`]s to publish. It owns no thread, topic or
//! clock: the ROS layer feeds it and turns its commands into messages, `replay` feeds it a recording on a
//! simulated clock, and the unit tests below feed it a fake clock. The rules it keeps:
//!
//! - **Epochs.** Every disable, enable, reset, new instruction and stale hold starts a new epoch. An
//!   inference carries the epoch it started in; a result from an older epoch is never commanded
//!   (`discarded_chunks`).
//! - **Every way of no longer driving ends in a hold** at the measured position (disable, reset, stale
//!   inputs, stop on a signal or an error), and every command, holds included, passes the same safety
//!   filter: a hold is clamped into the joint limits, and measured positions far outside them are bad
//!   input, never a command.
//! - **Time.** Stamps ahead of the node's clock by more than `max_stamp_lead_s` are bad input, so one
//!   message from the future cannot freeze an input; a stream that stops advancing turns stale. A clock
//!   that reads zero has not started (simulated time before the first /clock): nothing runs.
//! - **Camera sizes.** A camera's resolution is the one it keeps sending: a different size is refused
//!   until it persists for [`SIZE_CHANGE_FRAMES`] frames, and a reset does not forget it.

use crate::bad_input::{BadInputLog, Source};
use crate::bundle::{Bundle, Dims};
use crate::config::{NodeConfig, OutputMode};
use crate::execution::{ChunkExecutor, ChunkShape, Refusal};
use crate::monitor::{ChunkScore, Monitor};
use crate::obs_window::{joint_history_len, JointMapper, NotReady, ObsWindow};
use crate::policy::{SetupError, Wiring};
use crate::preprocess::{decode_compressed, Encoding, ImageView, Preprocessor};
use crate::runtime::StageTimings;
use crate::safety::SafetyFilter;
use crate::stats::{LatencyWindow, RateMeter, StreamStats};
use crate::tokenizer::InstructionEncoder;
use crate::worker::Job;

/// Frames of a new size, in a row, after which a camera's new resolution is accepted.
pub const SIZE_CHANGE_FRAMES: u32 = 5;

/// Characters of an instruction that go into the log.
const LOGGED_INSTRUCTION_CHARS: usize = 80;

/// A number for a log line: short even when it is absurd (1e300 is not printed with 300 digits).
fn short(x: f64) -> String {
    if x.is_finite() && x.abs() < 1e6 {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// The start of a text for a log line.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(LOGGED_INSTRUCTION_CHARS) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
        None => text.to_string(),
    }
}

/// What the ROS layer (or replay) publishes. The data lives in the controller (`plan`, `hold_positions`,
/// `setpoint`) and in the job, so a command allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// Chunk mode: the active plan's points after its anchor, as one trajectory from `stamp` (the
    /// observation stamp).
    Trajectory { stamp: f64 },
    /// Stop at `hold_positions()`: chunk mode, a one-point trajectory due one action step after `at`;
    /// stream mode, one setpoint.
    Hold { at: f64 },
    /// Stream mode: the setpoint in `setpoint()`, for time `at`.
    Setpoint { at: f64 },
    /// A chunk was accepted: its metadata and predicted frames (from the job that produced it).
    Chunk { chunk_id: u64, stamp: f64 },
    /// Reseed the sampler, in order with the inferences already submitted.
    ResetSampler,
    /// The monitor scored chunks: `take_monitor_scores`.
    Monitor,
    /// The free job buffer was filled: submit it to the inference worker.
    StartInference,
}

/// Commands of one call, in order; reused between calls.
#[derive(Debug, Default)]
pub struct Outbox {
    commands: Vec<Command>,
}

impl Outbox {
    pub fn with_capacity(n: usize) -> Self {
        Outbox {
            commands: Vec::with_capacity(n),
        }
    }
    pub fn push(&mut self, c: Command) {
        self.commands.push(c);
    }
    pub fn clear(&mut self) {
        self.commands.clear();
    }
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }
    pub fn drain(&mut self) -> std::vec::Drain<'_, Command> {
        self.commands.drain(..)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Disabled,
    Waiting,
    Running,
    Stale,
    Error,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Disabled => "DISABLED",
            State::Waiting => "WAITING",
            State::Running => "RUNNING",
            State::Stale => "STALE",
            State::Error => "ERROR",
        }
    }
}

/// The node's health, for `~/status` and `/diagnostics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: State,
    pub detail: String,
    pub enabled: bool,
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    pub latency_max_s: f64,
    pub replan_threshold_s: f64,
    pub chunk_rate_hz: f64,
    pub chunks_published: u64,
    pub inferences: u64,
    pub inference_errors: u64,
    pub bad_images: u64,
    pub bad_joint_states: u64,
    pub bad_instructions: u64,
    pub stale_observations: u64,
    pub safety_rejections: u64,
    pub discarded_chunks: u64,
    /// Published chunks whose predicted frames were decoded (parameter `video_decode`).
    pub decoded_chunks: u64,
    /// Times the node's clock went backwards.
    pub clock_jumps: u64,
    pub dropped_steps: u64,
    pub truncated_steps: u64,
    pub catch_up_ramps: u64,
    pub idle_time_s: f64,
    pub max_boundary_velocity_jump: f64,
    /// Messages refused, by kind.
    pub rejections: Vec<(&'static str, u64)>,
    /// Per camera, in bundle order.
    pub cameras: Vec<InputHealth>,
    pub joint_states: InputHealth,
    /// Observation stamp to command publication.
    pub reaction_latency_p50_s: f64,
    pub reaction_latency_p95_s: f64,
    /// The monitor's last chunk score (NaN: none yet or off), whether it is a z-value, whether its
    /// done estimate holds, and how often its hold rule fired.
    pub monitor_score: f64,
    pub monitor_calibrated: bool,
    pub monitor_done: bool,
    pub monitor_holds: u64,
}

/// How an input stream is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputHealth {
    pub received: u64,
    pub rate_hz: f64,
    /// Seconds since the newest accepted message's stamp (infinite before the first).
    pub age_s: f64,
    pub missed: u64,
}

impl InputHealth {
    fn of(s: &StreamStats, now: f64) -> Self {
        InputHealth {
            received: s.received,
            rate_hz: s.rate(now),
            age_s: s.age(now),
            missed: s.missed,
        }
    }
}

/// A camera's accepted resolution and a candidate new one.
#[derive(Debug, Clone, Copy, Default)]
struct CameraSize {
    accepted: Option<(usize, usize)>,
    candidate: Option<((usize, usize), u32)>,
}

pub struct Controller {
    cfg: NodeConfig,
    wiring: Wiring,
    dims: Dims,
    action_dt: f64,
    window: ObsWindow,
    preprocessors: Vec<Preprocessor>,
    camera_sizes: Vec<CameraSize>,
    compressed_rgb: Vec<u8>,
    joint_mapper: JointMapper,
    joint_buf: Vec<f64>,
    encoder: InstructionEncoder,
    tokens: Vec<i64>,
    tokens_scratch: Vec<i64>,
    /// Instruction changes since the last log line, and when that was.
    instruction_changes: u64,
    instruction_logged_at: f64,
    bad: BadInputLog,
    enabled: bool,
    epoch: u64,
    /// The next inference forgets the model's carried state (`Job::clear_model_state`): set by a reset,
    /// a new instruction, a stale hold or clock jump (the window is forgotten), an enable and a new goal.
    clear_model_state: bool,
    executor: ChunkExecutor,
    safety: SafetyFilter,
    latency: LatencyWindow,
    reaction: LatencyWindow,
    camera_stats: Vec<StreamStats>,
    joint_stats: StreamStats,
    chunk_rate: RateMeter,
    chunks_published: u64,
    inferences: u64,
    /// Someone watches the predicted frames (`video_decode: on_demand` decodes then).
    frames_wanted: bool,
    inference_errors: u64,
    stale_observations: u64,
    safety_rejections: u64,
    discarded_chunks: u64,
    decoded_chunks: u64,
    last_error: Option<String>,
    /// The last chunk came after its last step was due (its latency); cleared by a chunk in time.
    too_late: Option<f64>,
    last_timings: StageTimings,
    not_ready: Option<NotReady>,
    clock_started: bool,
    /// Time of the last tick: a later tick at an earlier time is a clock jump.
    last_tick: f64,
    clock_jumps: u64,
    was_running: bool,
    measured: Vec<f64>,
    hold_q: Vec<f64>,
    stream_q: Vec<f64>,
    stream_v: Vec<f64>,
    next_stream: f64,
    chunk_id: u64,
    /// Why the last instruction was refused (for a caller that asked: ~/run, a parameter).
    last_refusal: Option<String>,
    monitor: Monitor,
    /// The hold rule fired (with this score): the gate stays closed until ~/enable or a goal.
    monitor_hold: Option<f64>,
    /// Scores of the last result, until the caller takes them (`take_monitor_scores`).
    monitor_scores: Vec<ChunkScore>,
}

impl Controller {
    pub fn new(bundle: &Bundle, cfg: NodeConfig, wiring: Wiring) -> Result<Self, SetupError> {
        let m = &bundle.manifest;
        let dims = bundle.dims();
        let encoder = InstructionEncoder::for_bundle(bundle)?;
        let image = &m.image;
        let (mean, std) = (
            [image.mean[0], image.mean[1], image.mean[2]],
            [image.std[0], image.std[1], image.std[2]],
        );
        let joint_history = joint_history_len(
            cfg.max_joint_state_rate_hz,
            cfg.max_image_age_s,
            cfg.sync_slop_s,
        );
        let executor = ChunkExecutor::new(
            cfg.execution.clone(),
            ChunkShape {
                horizon: dims.horizon,
                joints: dims.action,
                dt: m.action.dt,
            },
        );
        let safety = SafetyFilter::new(
            wiring.action_joint_names.clone(),
            wiring.action_limits.clone(),
        );
        let monitor = Monitor::new(
            cfg.monitor,
            dims,
            bundle.video_dt(),
            m.monitor.clone(),
            mean,
            std,
        );
        let mut c = Controller {
            monitor,
            monitor_hold: None,
            monitor_scores: Vec::with_capacity(4),
            window: ObsWindow::with_frame_dt(
                dims,
                m.frame_dt,
                cfg.sync_slop_s,
                cfg.max_image_age_s,
                cfg.max_joint_state_age_s,
                joint_history,
            ),
            preprocessors: m
                .cameras
                .iter()
                .enumerate()
                .map(|(v, cam)| {
                    let (h, w) = dims.size(v);
                    Preprocessor::with_resize(w, h, mean, std, cam.resize)
                })
                .collect(),
            camera_sizes: vec![CameraSize::default(); dims.cameras],
            compressed_rgb: Vec::new(),
            joint_mapper: JointMapper::new(wiring.state_joint_names.clone()),
            joint_buf: vec![0.0; dims.state],
            tokens: vec![m.instruction.pad_id; dims.tokens],
            tokens_scratch: vec![m.instruction.pad_id; dims.tokens],
            encoder,
            instruction_changes: 0,
            instruction_logged_at: f64::NEG_INFINITY,
            bad: BadInputLog::default(),
            enabled: cfg.enabled_at_start,
            epoch: 0,
            clear_model_state: false,
            executor,
            safety,
            latency: LatencyWindow::new(64),
            reaction: LatencyWindow::new(64),
            camera_stats: (0..dims.cameras).map(|_| StreamStats::new()).collect(),
            joint_stats: StreamStats::new(),
            chunk_rate: RateMeter::new(32),
            chunks_published: 0,
            inferences: 0,
            frames_wanted: true,
            inference_errors: 0,
            stale_observations: 0,
            safety_rejections: 0,
            discarded_chunks: 0,
            decoded_chunks: 0,
            last_error: None,
            too_late: None,
            last_timings: StageTimings::default(),
            not_ready: None,
            clock_started: false,
            last_tick: f64::NEG_INFINITY,
            clock_jumps: 0,
            was_running: false,
            measured: vec![0.0; dims.action],
            hold_q: vec![0.0; dims.action],
            stream_q: vec![0.0; dims.action],
            stream_v: vec![0.0; dims.action],
            next_stream: 0.0,
            chunk_id: 0,
            last_refusal: None,
            action_dt: m.action.dt,
            dims,
            wiring,
            cfg,
        };
        if !c.cfg.instruction.is_empty() {
            let text = c.cfg.instruction.clone();
            if !c.on_instruction(&text, 0.0) {
                return Err(SetupError::Param {
                    name: "instruction".into(),
                    problem: c.last_refusal.take().unwrap_or_default(),
                });
            }
        }
        Ok(c)
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }
    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }
    pub fn dims(&self) -> &Dims {
        &self.dims
    }
    pub fn action_dt(&self) -> f64 {
        self.action_dt
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
    /// The command plan (point 0 is its anchor).
    pub fn plan(&self) -> &crate::trajectory::CommandPlan {
        self.executor.plan()
    }
    /// The positions of the last [`Command::Hold`], inside the limits.
    pub fn hold_positions(&self) -> &[f64] {
        &self.hold_q
    }
    /// The last [`Command::Setpoint`]: positions and velocities.
    pub fn setpoint(&self) -> (&[f64], &[f64]) {
        (&self.stream_q, &self.stream_v)
    }
    pub fn last_timings(&self) -> &StageTimings {
        &self.last_timings
    }
    pub fn bad_input_count(&self, kind: &str) -> u64 {
        self.bad.count(kind)
    }

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

    /// A stamp the node can use: set, and not from the future of its clock.
    fn check_stamp(&mut self, source: Source, stamp: f64, now: f64) -> bool {
        let (no_stamp, future) = match source {
            Source::Image => ("image_no_stamp", "image_stamp_future"),
            _ => ("joint_state_no_stamp", "joint_state_stamp_future"),
        };
        if now <= 0.0 {
            self.refuse(
                source,
                "clock_not_started",
                &"the node's clock has not started (use_sim_time: no /clock message yet)",
                now,
            );
            return false;
        }
        if stamp <= 0.0 {
            let detail = format!("header.stamp is not positive ({})", short(stamp));
            self.refuse(source, no_stamp, &detail, now);
            return false;
        }
        if stamp > now + self.cfg.max_stamp_lead_s {
            let detail = format!(
                "stamp {stamp:.6} is {} s ahead of the node's clock ({now:.6}; max_stamp_lead_s {})",
                short(stamp - now),
                self.cfg.max_stamp_lead_s
            );
            self.refuse(source, future, &detail, now);
            return false;
        }
        true
    }

    /// A decoded frame (`on_raw_image` and `on_compressed` count it as received).
    pub fn on_image(&mut self, cam: usize, view: &ImageView<'_>, stamp: f64, now: f64) {
        if !self.check_stamp(Source::Image, stamp, now) {
            return;
        }
        let size = (view.width, view.height);
        let sizes = &mut self.camera_sizes[cam];
        match sizes.accepted {
            Some(accepted) if accepted != size => {
                let count = match sizes.candidate {
                    Some((c, n)) if c == size => n + 1,
                    _ => 1,
                };
                if count < SIZE_CHANGE_FRAMES {
                    sizes.candidate = Some((size, count));
                    let detail = format!(
                        "camera '{}' sent {}x{} after {}x{} (accepted after {SIZE_CHANGE_FRAMES} in a row)",
                        self.wiring.camera_names[cam], size.0, size.1, accepted.0, accepted.1
                    );
                    return self.refuse(Source::Image, "image_size_changed", &detail, now);
                }
                tracing::warn!(
                    camera = %self.wiring.camera_names[cam],
                    "camera resolution changed from {}x{} to {}x{}; its window starts again",
                    accepted.0, accepted.1, size.0, size.1
                );
                sizes.candidate = None;
                // Frames of two resolutions are not one window: the new size starts it again.
                self.window.clear_camera(cam);
            }
            _ => sizes.candidate = None,
        }
        if self.window.check_frame_stamp(cam, stamp).is_err() {
            let detail = format!(
                "camera '{}' stamp {stamp:.6} is not newer than the last frame",
                self.wiring.camera_names[cam]
            );
            return self.refuse(Source::Image, "image_stamp_backwards", &detail, now);
        }
        if !self.enabled {
            // No inference will use it: checked and counted, not preprocessed, so that a disabled
            // node only pays for receiving. The window starts again on enable.
            self.camera_sizes[cam].accepted = Some(size);
            self.camera_stats[cam].accepted(stamp, now);
            return;
        }
        let slot = self.window.frame_slot(cam);
        match self.preprocessors[cam].process(view, slot) {
            Ok(()) => {
                self.camera_sizes[cam].accepted = Some(size);
                self.window.commit_frame(cam, stamp);
                self.monitor
                    .offer_frame(cam, stamp, self.window.newest_frame(cam));
                self.camera_stats[cam].accepted(stamp, now);
            }
            Err(e) => self.refuse(Source::Image, e.kind(), &e, now),
        }
    }

    /// A raw sensor_msgs/Image's fields.
    #[allow(clippy::too_many_arguments)]
    pub fn on_raw_image(
        &mut self,
        cam: usize,
        width: usize,
        height: usize,
        step: usize,
        encoding: &str,
        data: &[u8],
        stamp: f64,
        now: f64,
    ) {
        self.camera_stats[cam].count_received();
        let view = self
            .cfg
            .image_bounds
            .check(width as u64, height as u64)
            .and_then(|()| ImageView::new(width, height, step, encoding, data));
        match view {
            Ok(view) => self.on_image(cam, &view, stamp, now),
            Err(e) => self.refuse(Source::Image, e.kind(), &e, now),
        }
    }

    /// A camera message that could not even be read (a malformed serialized message).
    pub fn on_unreadable_image(
        &mut self,
        cam: usize,
        kind: &'static str,
        detail: &dyn std::fmt::Display,
        now: f64,
    ) {
        self.camera_stats[cam].count_received();
        self.refuse(Source::Image, kind, detail, now);
    }

    /// A sensor_msgs/CompressedImage's data (jpeg or png).
    pub fn on_compressed(&mut self, cam: usize, data: &[u8], stamp: f64, now: f64) {
        self.camera_stats[cam].count_received();
        let mut rgb = std::mem::take(&mut self.compressed_rgb);
        match decode_compressed(data, &mut rgb, &self.cfg.image_bounds) {
            Ok((w, h)) => {
                let view = ImageView {
                    width: w,
                    height: h,
                    step: w * 3,
                    encoding: Encoding::Rgb8,
                    data: &rgb,
                };
                self.on_image(cam, &view, stamp, now);
            }
            Err(e) => self.refuse(Source::Image, e.kind(), &e, now),
        }
        self.compressed_rgb = rgb;
    }

    pub fn on_joint_state(&mut self, names: &[String], positions: &[f64], stamp: f64, now: f64) {
        self.joint_stats.count_received();
        if !self.check_stamp(Source::JointState, stamp, now) {
            return;
        }
        if let Err(e) = self.joint_mapper.map(names, positions, &mut self.joint_buf) {
            return self.refuse(Source::JointState, e.kind(), &e, now);
        }
        // A measurement far outside the limits is a broken sensor or a wrong joint mapping, not a place
        // the arm can be: refused, so that no hold or anchor is ever derived from it.
        if let Some(l) = self.safety.limits() {
            for (j, &i) in self.wiring.action_to_state.iter().enumerate() {
                let q = self.joint_buf[i];
                if q < l.lower[j] - l.max_jump || q > l.upper[j] + l.max_jump {
                    let detail = format!(
                        "joint `{}` measured at {} is more than max_jump ({}) outside its limits [{}, {}]",
                        self.wiring.action_joint_names[j],
                        short(q),
                        l.max_jump,
                        l.lower[j],
                        l.upper[j]
                    );
                    return self.refuse(
                        Source::JointState,
                        "joint_state_out_of_limits",
                        &detail,
                        now,
                    );
                }
            }
        }
        match self.window.push_joint_state(stamp, &self.joint_buf) {
            Ok(()) => self.joint_stats.accepted(stamp, now),
            Err(e) => self.refuse(Source::JointState, e.kind(), &e, now),
        }
    }

    /// A new instruction. A different one starts a new epoch: a chunk computed for the old one is
    /// never commanded.
    /// Returns whether the instruction was taken (false: refused as bad input, the old one stays).
    pub fn on_instruction(&mut self, text: &str, now: f64) -> bool {
        if text.len() > self.cfg.max_instruction_bytes {
            let detail = format!(
                "instruction of {} bytes is longer than max_instruction_bytes ({}): {}",
                text.len(),
                self.cfg.max_instruction_bytes,
                shortened(text)
            );
            self.refuse(Source::Instruction, "instruction_too_long", &detail, now);
            self.last_refusal = Some(detail);
            return false;
        }
        match self.encoder.encode_into(text, &mut self.tokens_scratch) {
            Ok(()) => {
                if self.tokens_scratch != self.tokens {
                    // Logged shortened and at most once a second: a flood of instructions must not
                    // flood the log.
                    self.instruction_changes += 1;
                    if now - self.instruction_logged_at >= 1.0 || now < self.instruction_logged_at {
                        tracing::info!(
                            instruction = %shortened(text),
                            changes = self.instruction_changes,
                            "new instruction"
                        );
                        self.instruction_logged_at = now;
                        self.instruction_changes = 0;
                    }
                    std::mem::swap(&mut self.tokens, &mut self.tokens_scratch);
                    self.new_epoch();
                    self.clear_model_state = true;
                }
                true
            }
            Err(e) => {
                self.refuse(Source::Instruction, "instruction_tokenize", &e, now);
                self.last_refusal = Some(e.to_string());
                false
            }
        }
    }

    /// Nothing predicted before now applies any more: a new epoch, and the monitor forgets its pending
    /// predictions.
    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.monitor.clear();
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The next inference starts the model's carried state afresh (a new `~/run` goal).
    pub fn forget_model_state(&mut self) {
        self.clear_model_state = true;
    }

    /// The monitor's scores since the last call (after `on_result` pushed `Command::Monitor`).
    pub fn take_monitor_scores(&mut self) -> std::vec::Drain<'_, ChunkScore> {
        self.monitor_scores.drain(..)
    }

    /// Whether some command group takes this output mode.
    fn has_group(&self, mode: OutputMode) -> bool {
        self.cfg
            .command_groups
            .iter()
            .any(|g| g.output_mode == mode)
    }

    /// New values of run-time parameters (`config::RUNTIME_PARAMETERS`; the caller checked that
    /// nothing else changed): execution parameters apply from the next chunk, a new instruction
    /// starts a new epoch. Err: the instruction was refused (the old configuration stays).
    pub fn update_config(&mut self, cfg: NodeConfig, now: f64) -> Result<(), String> {
        if cfg.instruction != self.cfg.instruction && !self.on_instruction(&cfg.instruction, now) {
            return Err(format!(
                "instruction: refused ({})",
                self.last_refusal.as_deref().unwrap_or("see the log")
            ));
        }
        self.executor.set_params(cfg.execution.clone());
        self.monitor.set_params(cfg.monitor);
        self.cfg = cfg;
        Ok(())
    }

    pub fn set_enabled(&mut self, enable: bool, now: f64, out: &mut Outbox) -> String {
        if enable == self.enabled {
            return format!("already {}", if enable { "enabled" } else { "disabled" });
        }
        self.new_epoch();
        if enable {
            self.enabled = true;
            self.clear_model_state = true;
            self.monitor_hold = None;
            // Frames from before the disable are not a window with the ones to come.
            for cam in 0..self.dims.cameras {
                self.window.clear_camera(cam);
            }
            if self.measured_action_positions() && self.clamp_measured_into_hold() {
                self.executor.enable(now, &self.hold_q);
            } else {
                self.executor.clear();
            }
            self.next_stream = now;
            tracing::info!("enabled: commands will be published");
            "enabled".into()
        } else {
            // Stop the rest of the active chunk where the arm is.
            self.hold(now, out);
            self.enabled = false;
            self.was_running = false;
            tracing::info!("disabled: holding the measured position");
            "disabled; holding the measured position".into()
        }
    }

    /// Clears the window and the plan, reseeds the sampler and starts a new epoch; while enabled the
    /// arm holds where it is until the window is full again and a new chunk ramps in.
    pub fn reset(&mut self, now: f64, out: &mut Outbox) {
        if self.enabled {
            self.hold(now, out);
        } else {
            self.executor.clear();
        }
        self.new_epoch();
        self.window.clear();
        self.clear_model_state = true;
        self.was_running = false;
        self.not_ready = None;
        out.push(Command::ResetSampler);
        tracing::info!("reset");
    }

    /// The node stops driving for good (a signal, a dead worker, a fatal error): a last hold.
    pub fn stop(&mut self, now: f64, out: &mut Outbox) {
        if self.enabled {
            self.hold(now, out);
        }
        self.enabled = false;
        self.new_epoch();
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

    /// `hold_q` = the measured positions through the safety filter (clamped into the limits).
    fn clamp_measured_into_hold(&mut self) -> bool {
        self.hold_q.copy_from_slice(&self.measured);
        self.stream_v.fill(0.0);
        match self.safety.setpoint(&mut self.hold_q, &mut self.stream_v) {
            Ok(()) => true,
            Err(violation) => {
                if let Some(n) = self.bad.record(Source::Command, violation.kind(), 0.0) {
                    tracing::error!(count = n, "hold refused by the safety checks: {violation}");
                }
                false
            }
        }
    }

    /// While driving: a hold and a new epoch (a fault ended the policy's plan; it resumes with a ramp).
    fn stop_driving(&mut self, now: f64, out: &mut Outbox) {
        if self.enabled && self.executor.is_driving() {
            self.hold(now, out);
            self.new_epoch();
        }
    }

    /// Stops at the measured position (clamped into the limits).
    fn hold(&mut self, now: f64, out: &mut Outbox) {
        if !self.measured_action_positions() || !self.clamp_measured_into_hold() {
            self.executor.clear();
            return;
        }
        self.executor.hold(now, &self.hold_q);
        self.stream_q.copy_from_slice(&self.hold_q);
        self.stream_v.fill(0.0);
        out.push(Command::Hold { at: now });
    }

    /// The control step, at the control timer's period: staleness (and its hold), the start of the next
    /// inference into `free_job` (None while one runs), and the streamed setpoint.
    pub fn tick(&mut self, now: f64, free_job: Option<&mut Job>, out: &mut Outbox) {
        if now <= 0.0 {
            return;
        }
        if now < self.last_tick {
            self.clock_jumped_back(now, out);
        }
        self.last_tick = now;
        self.clock_started = true;
        self.executor.tick(now);
        if !self.enabled {
            return;
        }
        self.control(now, free_job, out);
        self.stream(now, out);
    }

    /// The node's clock went backwards (a bag played in a loop, a simulator reset): every buffered input
    /// now looks as if it came from the future and would stay "fresh" until the clock caught up. Hold,
    /// forget the window and start a new epoch; the inputs stamped on the new timeline fill it again.
    fn clock_jumped_back(&mut self, now: f64, out: &mut Outbox) {
        self.clock_jumps += 1;
        tracing::warn!(
            "the node's clock jumped back by {} s (to {now:.3}); holding and starting the window again",
            short(self.last_tick - now)
        );
        if self.enabled {
            self.hold(now, out);
        } else {
            self.executor.clear();
        }
        self.window.clear();
        self.clear_model_state = true;
        self.camera_stats.iter_mut().for_each(StreamStats::restart);
        self.joint_stats.restart();
        self.new_epoch();
        self.was_running = false;
        self.not_ready = None;
        self.next_stream = now;
    }

    fn control(&mut self, now: f64, free_job: Option<&mut Job>, out: &mut Outbox) {
        match self.window.readiness(now) {
            Err(reason) => {
                if self.was_running && reason.is_stale() {
                    self.stale_observations += 1;
                    tracing::warn!(
                        "{}; holding position until inputs are fresh again",
                        reason.describe(&self.wiring.camera_names)
                    );
                    self.hold(now, out);
                    self.new_epoch();
                    self.clear_model_state = true;
                    self.was_running = false;
                }
                // A sync gap (joint states just stopped) is not stale yet: keep `was_running` so the hold
                // still comes once the gap turns into staleness.
                self.not_ready = Some(reason);
                return;
            }
            Ok(_) => self.not_ready = None,
        }
        let estimate = self.latency_estimate();
        let Some(job) = free_job else {
            return;
        };
        if !self.executor.should_start(now, false, estimate) {
            return;
        }
        match self.window.assemble(
            now,
            &mut job.input.frames,
            &mut job.input.frame_stamps,
            &mut job.input.state,
        ) {
            Ok(meta) => {
                job.input.tokens.copy_from_slice(&self.tokens);
                job.input.decode = self
                    .cfg
                    .video_decode
                    .decodes(self.inferences, self.frames_wanted);
                self.monitor.fill_job(
                    now,
                    &job.input.frame_stamps,
                    &mut job.input.monitor_frames,
                    &mut job.input.monitor_used,
                );
                // Prefix boundaries: the steps the robot executes before this chunk can be published, kept
                // exactly, and the next ones of the old plan, kept softly.
                job.input.prefix_steps = self.executor.prefix(
                    meta.stamp,
                    now + estimate,
                    &mut job.input.prefix,
                    &mut job.input.prefix_weights,
                );
                job.stamp = meta.stamp;
                job.started = now;
                job.epoch = self.epoch;
                job.clear_model_state = std::mem::take(&mut self.clear_model_state);
                self.executor.started(now);
                self.inferences += 1;
                self.was_running = true;
                out.push(Command::StartInference);
            }
            Err(reason) => self.not_ready = Some(reason),
        }
    }

    /// Whether the predicted frames are watched (a subscriber, a recording): the ROS layer tells.
    pub fn set_frames_wanted(&mut self, wanted: bool) {
        self.frames_wanted = wanted;
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

    /// A finished inference. Latency is measured on the node's clock, from the start to `now`.
    pub fn on_result(
        &mut self,
        job: &Job,
        result: Result<StageTimings, String>,
        now: f64,
        out: &mut Outbox,
    ) {
        self.monitor.on_result(
            result.is_ok(),
            &job.output.observed_latents,
            &job.output.monitor_latents,
            now,
            &mut self.monitor_scores,
        );
        self.act_on_monitor(now, out);
        let timings = match result {
            Ok(t) => t,
            Err(e) => {
                self.inference_errors += 1;
                if let Some(n) = self.bad.record(Source::Command, "inference_error", now) {
                    tracing::error!(count = n, "inference failed: {e}; holding");
                }
                self.last_error = Some(e);
                // The model failed (NaN, a runtime error): stop where the arm is rather than follow a
                // plan the model can no longer extend; the next good chunk ramps in again.
                self.stop_driving(now, out);
                return;
            }
        };
        self.last_error = None;
        self.latency.record((now - job.started).max(0.0));
        // Nothing computed before a disable, an enable, a reset, a new instruction or a stale hold is
        // commanded.
        if job.epoch != self.epoch
            || !self.enabled
            || self.not_ready.as_ref().is_some_and(NotReady::is_stale)
        {
            self.discarded_chunks += 1;
            tracing::debug!(
                job_epoch = job.epoch,
                epoch = self.epoch,
                "chunk from an earlier epoch discarded"
            );
            return;
        }
        if !self.measured_action_positions() {
            self.discarded_chunks += 1;
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
                // The model is slower than its chunks: the plan has run out, hold explicitly, and
                // say so until a chunk is in time again.
                self.too_late = Some(latency_s);
                self.stop_driving(now, out);
                return;
            }
            Err(Refusal::Safety(violation)) => {
                self.safety_rejections += 1;
                if let Some(n) = self.bad.record(Source::Command, violation.kind(), now) {
                    tracing::error!(count = n, "chunk refused by the safety checks: {violation}");
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
        self.last_timings = timings;
        self.too_late = None;
        self.reaction.record(now - job.stamp);
        self.chunk_id += 1;
        if self.has_group(OutputMode::Chunk) {
            out.push(Command::Trajectory { stamp: job.stamp });
        }
        self.chunks_published += 1;
        self.chunk_rate.tick(now);
        out.push(Command::Chunk {
            chunk_id: self.chunk_id,
            stamp: job.stamp,
        });
        self.decoded_chunks += u64::from(job.output.frames_decoded);
        let evicted = self.monitor.on_prediction(
            self.chunk_id,
            job.stamp,
            &job.output.actions,
            &job.output.video_latents,
            if job.output.frames_decoded {
                &job.output.frames
            } else {
                &[]
            },
            &job.output.observed_latents,
        );
        if let Some(score) = evicted {
            self.monitor_scores.push(score);
            self.act_on_monitor(now, out);
        }
    }

    /// New monitor scores: announce them, and hold when the hold rule fires.
    fn act_on_monitor(&mut self, now: f64, out: &mut Outbox) {
        if self.monitor_scores.is_empty() {
            return;
        }
        out.push(Command::Monitor);
        if self.monitor.take_hold() && self.enabled {
            let score = self.monitor.last().map_or(f64::NAN, |s| s.score);
            tracing::warn!(
                score,
                chunks = self.cfg.monitor.hold_chunks,
                "monitor: the world is not doing what the model predicted; holding"
            );
            self.last_error = None;
            self.hold(now, out);
            self.enabled = false;
            self.was_running = false;
            self.new_epoch();
            self.monitor_hold = Some(score);
        }
    }

    /// Stream mode: the plan's setpoint at `now`, at `stream_rate_hz`, after the setpoint safety check.
    fn stream(&mut self, now: f64, out: &mut Outbox) {
        if !self.has_group(OutputMode::Stream) || now < self.next_stream {
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
        out.push(Command::Setpoint { at: now });
    }

    pub fn status(&mut self, now: f64) -> Status {
        let (state, detail) = if let (false, Some(score)) = (self.enabled, self.monitor_hold) {
            (
                State::Disabled,
                format!(
                    "held by the monitor: the world did not do what the model predicted (score {} above {} for {} chunks); call ~/enable to resume",
                    short(score),
                    short(self.cfg.monitor.warn_score),
                    self.cfg.monitor.hold_chunks
                ),
            )
        } else if !self.enabled {
            (State::Disabled, "call ~/enable to start".to_string())
        } else if !self.clock_started {
            (
                State::Waiting,
                "waiting for the clock (use_sim_time: no /clock message yet)".to_string(),
            )
        } else if let Some(e) = &self.last_error {
            (State::Error, e.clone())
        } else if let Some(latency) = self.too_late {
            let detail = format!(
                "the model is slower than its chunk: the last one was ready {} s after its observation, \
                 after its last step was due ({} s); nothing of it was commanded",
                short(latency),
                short(self.executor.chunk_duration())
            );
            (State::Error, detail)
        } else if let Some(reason) = &self.not_ready {
            let text = reason.describe(&self.wiring.camera_names);
            if reason.is_stale() {
                (State::Stale, text)
            } else {
                (State::Waiting, text)
            }
        } else {
            (State::Running, String::new())
        };
        let estimate = self.latency_estimate();
        let metrics = *self.executor.metrics();
        Status {
            state,
            detail,
            enabled: self.enabled,
            latency_p50_s: self.latency.percentile(50.0),
            latency_p95_s: self.latency.percentile(95.0),
            latency_max_s: self.latency.max(),
            replan_threshold_s: self.executor.threshold(estimate),
            chunk_rate_hz: self.chunk_rate.rate(now),
            chunks_published: self.chunks_published,
            inferences: self.inferences,
            inference_errors: self.inference_errors,
            bad_images: self.bad.total(Source::Image),
            bad_joint_states: self.bad.total(Source::JointState),
            bad_instructions: self.bad.total(Source::Instruction),
            stale_observations: self.stale_observations,
            safety_rejections: self.safety_rejections,
            discarded_chunks: self.discarded_chunks,
            decoded_chunks: self.decoded_chunks,
            clock_jumps: self.clock_jumps,
            dropped_steps: metrics.dropped_steps,
            truncated_steps: metrics.truncated_steps,
            catch_up_ramps: metrics.catch_up_ramps,
            idle_time_s: metrics.idle_time_s,
            max_boundary_velocity_jump: metrics.max_boundary_velocity_jump,
            rejections: self.bad.kinds().collect(),
            cameras: self
                .camera_stats
                .iter()
                .map(|c| InputHealth::of(c, now))
                .collect(),
            joint_states: InputHealth::of(&self.joint_stats, now),
            reaction_latency_p50_s: self.reaction.percentile(50.0),
            reaction_latency_p95_s: self.reaction.percentile(95.0),
            monitor_score: self.monitor.last().map_or(f64::NAN, |m| m.score),
            monitor_calibrated: self.monitor.is_calibrated(),
            monitor_done: self.monitor.done_now(),
            monitor_holds: self.monitor.holds(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ParamValue as P, Params};

    const JOINTS: [&str; 7] = [
        "joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper",
    ];
    const SIDE: usize = 32;
    const TICK: f64 = 0.005;

    fn bundle() -> Bundle {
        Bundle::load(concat!(env!("CARGO_MANIFEST_DIR"), "/models/wam_test")).unwrap()
    }

    /// Limits +-2.9 rad, 10 rad/s, max_jump 0.3; enabled at start with an instruction, no ramp-in.
    fn params(extra: &[(&str, P)]) -> Params {
        let mut p = Params::new();
        let names = JOINTS.iter().map(|s| s.to_string()).collect();
        for (k, v) in [
            ("bundle_path", P::String("unused".into())),
            ("joint_names", P::StringArray(names)),
            ("joint_limits.lower", P::DoubleArray(vec![-2.9; 7])),
            ("joint_limits.upper", P::DoubleArray(vec![2.9; 7])),
            ("joint_limits.max_velocity", P::DoubleArray(vec![10.0; 7])),
            ("joint_limits.max_jump", P::Double(0.3)),
            ("enabled_at_start", P::Bool(true)),
            ("instruction", P::String("pick up the red cube".into())),
            ("ramp_in_s", P::Double(0.0)),
        ] {
            p.insert(k.into(), v);
        }
        for (k, v) in extra {
            p.insert(k.to_string(), v.clone());
        }
        p
    }

    /// The controller on a fake clock, with a stand-in for the worker: the job buffer and whether an
    /// inference is in flight.
    struct Rig {
        c: Controller,
        job: Job,
        in_flight: bool,
        out: Outbox,
        t: f64,
        q: [f64; 7],
        image: Vec<u8>,
    }

    impl Rig {
        fn new(extra: &[(&str, P)]) -> Self {
            let b = bundle();
            let cfg = NodeConfig::from_params(&params(extra)).unwrap();
            let wiring = Wiring::resolve(&b, &cfg).unwrap();
            let c = Controller::new(&b, cfg, wiring).unwrap();
            let job = Job::new(&b.dims(), false, 4);
            Rig {
                c,
                job,
                in_flight: false,
                out: Outbox::default(),
                t: 100.0,
                q: [0.1; 7],
                image: vec![128; SIDE * SIDE * 3],
            }
        }

        fn frame(&mut self, cam: usize, stamp: f64) {
            let image = std::mem::take(&mut self.image);
            self.c
                .on_raw_image(cam, SIDE, SIDE, SIDE * 3, "rgb8", &image, stamp, self.t);
            self.image = image;
        }

        fn joints(&mut self, stamp: f64) {
            let names: Vec<String> = JOINTS.iter().map(|s| s.to_string()).collect();
            self.c.on_joint_state(&names, &self.q, stamp, self.t);
        }

        /// `dt` later: a frame per camera and a joint state stamped now, then a tick.
        fn step(&mut self, dt: f64) -> Vec<Command> {
            self.t += dt;
            let t = self.t;
            self.frame(0, t);
            self.frame(1, t);
            self.joints(t);
            self.tick()
        }

        fn tick(&mut self) -> Vec<Command> {
            self.out.clear();
            let free = (!self.in_flight).then_some(&mut self.job);
            self.c.tick(self.t, free, &mut self.out);
            let commands = self.out.commands().to_vec();
            if commands.contains(&Command::StartInference) {
                self.in_flight = true;
            }
            commands
        }

        /// Steps until an inference starts.
        fn until_started(&mut self) {
            for _ in 0..200 {
                if self.step(0.04).contains(&Command::StartInference) {
                    return;
                }
            }
            panic!("no inference started: {:?}", self.c.status(self.t));
        }

        /// The model's answer: a slow motion from the observed state.
        fn finish(&mut self) -> Vec<Command> {
            let a = JOINTS.len();
            for i in 0..8 {
                for j in 0..a {
                    self.job.output.actions[i * a + j] =
                        self.job.input.state[j] + 0.01 * (i + 1) as f64;
                }
            }
            self.in_flight = false;
            self.out.clear();
            self.c.on_result(
                &self.job,
                Ok(StageTimings::default()),
                self.t,
                &mut self.out,
            );
            self.out.commands().to_vec()
        }

        fn cmd<T>(
            &mut self,
            f: impl FnOnce(&mut Controller, f64, &mut Outbox) -> T,
        ) -> Vec<Command> {
            self.out.clear();
            f(&mut self.c, self.t, &mut self.out);
            self.out.commands().to_vec()
        }
    }

    fn has_trajectory(commands: &[Command]) -> bool {
        commands
            .iter()
            .any(|c| matches!(c, Command::Trajectory { .. }))
    }

    fn hold(commands: &[Command]) -> bool {
        commands.iter().any(|c| matches!(c, Command::Hold { .. }))
    }

    #[test]
    fn a_chunk_in_flight_is_commanded_when_nothing_came_between() {
        let mut r = Rig::new(&[]);
        r.until_started();
        r.step(0.05);
        assert!(has_trajectory(&r.finish()));
        assert_eq!(r.c.status(r.t).discarded_chunks, 0);
        assert_eq!(r.c.status(r.t).state, State::Running);
    }

    #[test]
    fn a_chunk_started_before_a_disable_and_enable_is_never_commanded() {
        let mut r = Rig::new(&[]);
        r.until_started();
        let off = r.cmd(|c, t, o| c.set_enabled(false, t, o));
        assert!(hold(&off), "a disable holds: {off:?}");
        r.cmd(|c, t, o| c.set_enabled(true, t, o));
        r.step(0.05);
        assert!(!has_trajectory(&r.finish()));
        assert_eq!(r.c.status(r.t).discarded_chunks, 1);
        // The next chunk, started after the enable, is commanded.
        r.until_started();
        assert!(has_trajectory(&r.finish()));
    }

    #[test]
    fn reset_during_an_inference_holds_reseeds_and_discards_the_chunk() {
        let mut r = Rig::new(&[]);
        r.until_started();
        let reset = r.cmd(|c, t, o| c.reset(t, o));
        assert!(hold(&reset), "{reset:?}");
        assert!(reset.contains(&Command::ResetSampler));
        assert_eq!(r.c.hold_positions(), &[0.1; 7]);
        assert!(!has_trajectory(&r.finish()));
        assert_eq!(r.c.status(r.t).discarded_chunks, 1);
    }

    #[test]
    fn a_new_instruction_discards_the_chunk_in_flight_and_the_same_one_does_not() {
        let mut r = Rig::new(&[]);
        r.until_started();
        let _ = r.c.on_instruction("pick up the red cube", r.t);
        assert!(has_trajectory(&r.finish()));
        r.until_started();
        let _ = r.c.on_instruction("push the green cube", r.t);
        assert!(!has_trajectory(&r.finish()));
    }

    #[test]
    fn the_model_state_is_cleared_after_a_reset_a_new_instruction_and_a_goal_only() {
        // The job of the first inference after each forgets the carried state, the
        // ones after it keep it.
        let mut r = Rig::new(&[]);
        r.until_started();
        assert!(
            r.job.clear_model_state,
            "the first inference after the enable"
        );
        r.job.clear_model_state = false;
        r.finish();
        r.until_started();
        assert!(
            !r.job.clear_model_state,
            "a chunk like any other keeps the state"
        );
        r.finish();
        let _ = r.cmd(|c, t, o| c.reset(t, o));
        r.until_started();
        assert!(r.job.clear_model_state, "after ~/reset");
        r.job.clear_model_state = false;
        r.finish();
        let _ = r.c.on_instruction("push the green cube", r.t);
        r.until_started();
        assert!(r.job.clear_model_state, "after a new instruction");
        r.job.clear_model_state = false;
        r.finish();
        let _ = r.c.on_instruction("push the green cube", r.t);
        r.until_started();
        assert!(
            !r.job.clear_model_state,
            "the same instruction again keeps the state"
        );
        r.finish();
        r.c.forget_model_state();
        r.until_started();
        assert!(r.job.clear_model_state, "after a new goal");
    }

    #[test]
    fn holds_are_clamped_into_the_limits() {
        let mut r = Rig::new(&[]);
        r.q[0] = 3.0; // 0.1 beyond the limit, within max_jump: a measurement, but no place to command.
        r.step(0.04);
        let off = r.cmd(|c, t, o| c.set_enabled(false, t, o));
        assert!(hold(&off));
        assert_eq!(r.c.hold_positions()[0], 2.9);
    }

    #[test]
    fn measurements_far_outside_the_limits_are_bad_input() {
        let mut r = Rig::new(&[]);
        r.step(0.04);
        for absurd in [5.0, 1e300] {
            r.q[0] = absurd;
            r.step(0.04);
        }
        assert_eq!(r.c.bad_input_count("joint_state_out_of_limits"), 2);
        let off = r.cmd(|c, t, o| c.set_enabled(false, t, o));
        assert!(hold(&off));
        // The hold is at the last good measurement.
        assert_eq!(r.c.hold_positions(), &[0.1; 7]);
    }

    #[test]
    fn a_joint_state_from_the_future_is_refused_and_does_not_freeze_the_input() {
        let mut r = Rig::new(&[]);
        r.until_started();
        r.finish();
        r.joints(r.t + 3600.0);
        assert_eq!(r.c.bad_input_count("joint_state_stamp_future"), 1);
        // Later joint states still count: the node keeps running.
        for _ in 0..20 {
            r.step(0.04);
        }
        assert_eq!(r.c.status(r.t).state, State::Running);
        assert_eq!(r.c.bad_input_count("joint_state_stamp_backwards"), 0);
        // When they stop, the input turns stale and the arm holds.
        let mut held = false;
        for _ in 0..100 {
            r.t += 0.01;
            r.frame(0, r.t);
            r.frame(1, r.t);
            held |= hold(&r.tick());
        }
        assert!(held);
        assert_eq!(r.c.status(r.t).state, State::Stale);
    }

    #[test]
    fn a_frame_from_the_future_is_refused_and_a_frozen_camera_turns_stale() {
        let mut r = Rig::new(&[]);
        r.until_started();
        r.finish();
        r.frame(1, r.t + 3600.0);
        assert_eq!(r.c.bad_input_count("image_stamp_future"), 1);
        for _ in 0..20 {
            r.step(0.04);
        }
        assert_eq!(r.c.bad_input_count("image_stamp_backwards"), 0);
        assert_eq!(r.c.status(r.t).state, State::Running);
        // Camera 1 stops: stale and a hold, not RUNNING on a frozen frame.
        let mut held = false;
        for _ in 0..100 {
            r.t += 0.01;
            let t = r.t;
            r.frame(0, t);
            r.joints(t);
            held |= hold(&r.tick());
        }
        assert!(held);
        assert_eq!(r.c.status(r.t).state, State::Stale);
    }

    #[test]
    fn a_stray_frame_size_does_not_lock_a_camera() {
        let mut r = Rig::new(&[]);
        // The first frame ever is a stray 1x1 one: valid frames take over after they persist.
        r.t += 0.01;
        r.c.on_raw_image(0, 1, 1, 3, "rgb8", &[0, 0, 0], r.t, r.t);
        r.until_started();
        assert_eq!(
            r.c.bad_input_count("image_size_changed"),
            u64::from(SIZE_CHANGE_FRAMES - 1)
        );
        // After a reset, the known size is kept: a stray frame is refused, valid ones are not.
        r.cmd(|c, t, o| c.reset(t, o));
        r.t += 0.01;
        r.c.on_raw_image(0, 1, 1, 3, "rgb8", &[0, 0, 0], r.t, r.t);
        assert_eq!(
            r.c.bad_input_count("image_size_changed"),
            u64::from(SIZE_CHANGE_FRAMES)
        );
        r.in_flight = false;
        r.until_started();
        assert_eq!(
            r.c.bad_input_count("image_size_changed"),
            u64::from(SIZE_CHANGE_FRAMES)
        );
    }

    #[test]
    fn what_one_message_may_cost_is_bounded() {
        let mut r = Rig::new(&[
            ("max_image_pixels", P::Integer(32 * 32)),
            ("max_instruction_bytes", P::Integer(64)),
        ]);
        r.t += 0.01;
        // 100000 x 100000 claimed with 3 bytes: refused by its size before anything else.
        r.c.on_raw_image(0, 100_000, 100_000, 300_000, "rgb8", &[0, 0, 0], r.t, r.t);
        r.c.on_raw_image(0, 33, 32, 99, "rgb8", &vec![0; 99 * 32], r.t, r.t);
        assert_eq!(r.c.bad_input_count("image_too_large"), 2);
        let _ = r.c.on_instruction(&"x".repeat(1 << 20), r.t);
        assert_eq!(r.c.bad_input_count("instruction_too_long"), 1);
        // The valid instruction still drives, and every kind is in the status.
        r.until_started();
        let kinds = r.c.status(r.t).rejections;
        assert!(kinds.contains(&("image_too_large", 2)), "{kinds:?}");
        assert!(kinds.contains(&("instruction_too_long", 1)), "{kinds:?}");
    }

    #[test]
    fn absurd_numbers_are_logged_short() {
        assert_eq!(short(1e300), "1.000e300");
        assert_eq!(short(-2.5), "-2.5000");
        assert_eq!(short(f64::NAN), "NaN");
        let long = "a".repeat(10_000);
        assert!(shortened(&long).len() < 120);
        assert_eq!(shortened("reach the red cube"), "reach the red cube");
    }

    #[test]
    fn a_disabled_node_checks_frames_without_preprocessing_them() {
        let mut r = Rig::new(&[("enabled_at_start", P::Bool(false))]);
        for _ in 0..10 {
            r.step(0.04);
        }
        let s = r.c.status(r.t);
        assert_eq!(s.cameras[0].received, 10);
        assert!(s.cameras[0].rate_hz > 20.0, "{:?}", s.cameras[0]);
        // Nothing entered the window: an inference needs frames taken after the enable.
        assert!(r.c.window.readiness(r.t).is_err());
        r.cmd(|c, t, o| c.set_enabled(true, t, o));
        assert!(!r.tick().contains(&Command::StartInference));
        r.until_started();
    }

    #[test]
    fn nothing_runs_before_the_clock_starts() {
        let mut r = Rig::new(&[]);
        r.t = 0.0;
        r.frame(0, 5.0);
        r.joints(5.0);
        assert!(r.tick().is_empty());
        let s = r.c.status(0.0);
        assert_eq!(s.state, State::Waiting);
        assert!(s.detail.contains("clock"), "{}", s.detail);
        assert_eq!(r.c.bad_input_count("clock_not_started"), 2);
    }

    #[test]
    fn a_clock_that_jumps_back_holds_and_refills_the_window_on_the_new_timeline() {
        let mut r = Rig::new(&[]);
        r.until_started();
        // A bag loop: time goes back 30 s; the buffered frames are now 30 s in the future.
        r.t -= 30.0;
        let back = r.tick();
        assert!(hold(&back), "{back:?}");
        assert_eq!(r.c.status(r.t).clock_jumps, 1);
        // The chunk in flight belongs to the old timeline.
        assert!(!has_trajectory(&r.finish()));
        // Inputs stamped on the new timeline drive again.
        r.until_started();
        assert!(has_trajectory(&r.finish()));
    }

    #[test]
    fn stop_holds_and_a_result_after_it_is_discarded() {
        let mut r = Rig::new(&[]);
        r.until_started();
        let stop = r.cmd(|c, t, o| c.stop(t, o));
        assert!(hold(&stop));
        assert!(!has_trajectory(&r.finish()));
        assert!(r.step(0.04).is_empty(), "nothing after a stop");
    }

    #[test]
    fn a_stale_hold_discards_the_chunk_in_flight() {
        let mut r = Rig::new(&[]);
        r.until_started();
        // Everything stops for longer than max_image_age_s (0.5 s).
        r.t += 0.6;
        assert!(hold(&r.tick()));
        r.step(0.01);
        assert!(!has_trajectory(&r.finish()));
        assert_eq!(r.c.status(r.t).discarded_chunks, 1);
    }

    #[test]
    fn a_failed_inference_holds_and_the_next_good_chunk_drives_again() {
        let mut r = Rig::new(&[]);
        r.until_started();
        assert!(has_trajectory(&r.finish()));
        r.until_started();
        r.in_flight = false;
        r.out.clear();
        r.c.on_result(
            &r.job,
            Err("the model produced a non-finite action value".into()),
            r.t,
            &mut r.out,
        );
        assert!(hold(r.out.commands()), "{:?}", r.out.commands());
        assert_eq!(r.c.status(r.t).state, State::Error);
        r.until_started();
        assert!(has_trajectory(&r.finish()));
        assert_eq!(r.c.status(r.t).state, State::Running);
    }

    #[test]
    fn a_chunk_later_than_its_last_step_holds() {
        let mut r = Rig::new(&[]);
        r.until_started();
        assert!(has_trajectory(&r.finish()));
        r.until_started();
        // The model took longer than the whole chunk (0.8 s).
        r.t += 1.0;
        let late = r.finish();
        assert!(hold(&late) && !has_trajectory(&late), "{late:?}");
        assert_eq!(r.c.bad_input_count("chunk_too_late"), 1);
        let s = r.c.status(r.t);
        assert_eq!(s.state, State::Error);
        assert!(s.detail.contains("slower than its chunk"), "{}", s.detail);
        // A chunk in time clears it.
        r.until_started();
        assert!(has_trajectory(&r.finish()));
        assert_eq!(r.c.status(r.t).state, State::Running);
    }

    #[test]
    fn latency_is_measured_on_the_node_clock() {
        let mut r = Rig::new(&[]);
        r.until_started();
        r.t += 0.25;
        r.finish();
        let s = r.c.status(r.t);
        assert!((s.latency_p50_s - 0.25).abs() < 1e-9, "{}", s.latency_p50_s);
    }

    #[test]
    fn stream_mode_streams_within_limits_and_holds_on_disable() {
        let mut r = Rig::new(&[("output_mode", P::String("stream".into()))]);
        r.until_started();
        let done = r.finish();
        assert!(
            !has_trajectory(&done),
            "stream mode publishes no trajectories"
        );
        let streamed = r.step(0.02);
        assert!(streamed
            .iter()
            .any(|c| matches!(c, Command::Setpoint { .. })));
        let (q, _) = r.c.setpoint();
        assert!(q.iter().all(|x| (-2.9..=2.9).contains(x)));
        let off = r.cmd(|c, t, o| c.set_enabled(false, t, o));
        assert!(hold(&off));
        assert!(r.step(TICK).is_empty());
    }

    #[test]
    fn the_joint_state_history_covers_the_oldest_usable_frame_at_1khz() {
        let n = joint_history_len(1000.0, 0.5, 0.05);
        assert!(n >= 550, "{n}");
        let mut r = Rig::new(&[("max_joint_state_rate_hz", P::Double(1000.0))]);
        // Frames 0.45 s old, joint states at 1 kHz since: the matching joint state is still there.
        let t0 = r.t + 0.01;
        r.t = t0;
        for k in 0..2 {
            r.frame(0, t0 - 0.01 * f64::from(1 - k));
            r.frame(1, t0 - 0.01 * f64::from(1 - k));
        }
        for k in 0..450 {
            r.t = t0 + 0.001 * f64::from(k);
            let t = r.t;
            r.joints(t);
        }
        assert!(
            r.tick().contains(&Command::StartInference),
            "{:?}",
            r.c.status(r.t)
        );
    }
}

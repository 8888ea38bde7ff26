//! Chunk execution: when to start the next inference, and how a finished chunk becomes the command stream
//! the robot follows while the model thinks.
//!
//! Every chunk is anchored to its observation's stamp (step i is due at stamp + (i + 1) dt). When it is
//! published, the steps whose time has passed are dropped, the rest joins the active plan at a boundary
//! (`replace`, `crossfade`, or `prefix`, where the sampler already continued the old plan), is ramped in
//! after an enable, and goes through the safety filter. Times are seconds on the node's clock, so all of
//! this runs on a fake clock in tests.

use crate::config::ExecutionParams;
pub use crate::config::{Anchor, BoundaryMode};
use crate::safety::{SafetyFilter, SafetyViolation};
use crate::trajectory::CommandPlan;

/// Stamps are sums of steps: compare times with a little slack.
const TIME_EPS: f64 = 1e-9;

/// The fixed shape of every chunk, from the bundle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkShape {
    pub horizon: usize,
    pub joints: usize,
    /// Seconds between action steps.
    pub dt: f64,
}

/// What the command stream did, for status and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExecutionMetrics {
    pub chunks_accepted: u64,
    /// Steps dropped because they were due before their chunk was published.
    pub dropped_steps: u64,
    /// Chunks of which nothing was left at publication.
    pub dropped_chunks: u64,
    /// Steps cut from the end of accepted chunks because a segment broke a velocity or acceleration limit.
    pub truncated_steps: u64,
    /// Chunks whose first step from the command stream's position was too fast, accepted with a
    /// catch-up ramp from that position.
    pub catch_up_ramps: u64,
    /// Seconds during which the policy was driving and the plan had run out (the arm had nothing to follow).
    pub idle_time_s: f64,
    /// Largest difference, over joints and boundaries, between the new plan's velocity at its first point
    /// and the velocity the old plan had commanded for that time.
    pub max_boundary_velocity_jump: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("every step of the chunk was due before it was published ({latency_s:.3} s after its stamp)")]
    AllStepsPast { latency_s: f64 },
    #[error(transparent)]
    Safety(#[from] SafetyViolation),
}

/// The outcome of an accepted chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accepted {
    /// Index of the chunk's first step in the plan (the ones before were dropped).
    pub first_step: usize,
    /// Position values clamped to the joint limits.
    pub clamped: usize,
    /// Steps cut from the end of the chunk by the velocity or acceleration limits.
    pub truncated: usize,
    pub boundary_velocity_jump: f64,
}

struct Ramp {
    start: f64,
    from: Vec<f64>,
}

pub struct ChunkExecutor {
    cfg: ExecutionParams,
    horizon: usize,
    joints: usize,
    dt: f64,
    /// The model's step (the bundle's action dt).
    model_dt: f64,
    anchor: Anchor,
    /// The plan the robot follows; empty until the first command.
    plan: CommandPlan,
    /// The next plan is built here, then swapped in.
    next: CommandPlan,
    anchor_q: Vec<f64>,
    anchor_v: Vec<f64>,
    old_q: Vec<f64>,
    old_v: Vec<f64>,
    last_start: Option<f64>,
    /// The policy is driving: set by an accepted chunk, cleared by hold/disable.
    driving: bool,
    /// Armed by `enable`; starts at the first accepted chunk.
    ramp_armed: bool,
    ramp: Option<Ramp>,
    /// Where a catch-up ramp starts (preallocated).
    catch_up_from: Vec<f64>,
    last_tick: Option<f64>,
    metrics: ExecutionMetrics,
}

impl ChunkExecutor {
    pub fn new(cfg: ExecutionParams, shape: ChunkShape) -> Self {
        let (h, a) = (shape.horizon, shape.joints);
        ChunkExecutor {
            horizon: h,
            joints: a,
            // Executed slower than predicted: every step further apart (velocity_scaling <= 1).
            dt: shape.dt / cfg.velocity_scaling,
            model_dt: shape.dt,
            anchor: cfg.anchor(),
            plan: CommandPlan::with_capacity(h, a),
            next: CommandPlan::with_capacity(h, a),
            anchor_q: vec![0.0; a],
            anchor_v: vec![0.0; a],
            old_q: vec![0.0; a],
            old_v: vec![0.0; a],
            last_start: None,
            driving: false,
            ramp_armed: false,
            ramp: None,
            catch_up_from: vec![0.0; a],
            last_tick: None,
            metrics: ExecutionMetrics::default(),
            cfg,
        }
    }

    pub fn config(&self) -> &ExecutionParams {
        &self.cfg
    }

    /// New run-time parameters (boundary mode, margins, ramp, velocity scaling): the active plan
    /// keeps its timing; the next chunk is built with these. Output mode and anchor stay as they were
    /// (they are not run-time parameters).
    pub fn set_params(&mut self, cfg: ExecutionParams) {
        self.dt = self.model_dt / cfg.velocity_scaling;
        self.cfg = cfg;
    }

    /// Seconds between executed steps (the model's step, stretched by velocity scaling).
    pub fn step_dt(&self) -> f64 {
        self.dt
    }

    pub fn plan(&self) -> &CommandPlan {
        &self.plan
    }

    pub fn metrics(&self) -> &ExecutionMetrics {
        &self.metrics
    }

    pub fn is_driving(&self) -> bool {
        self.driving
    }

    /// Duration of a whole chunk.
    pub fn chunk_duration(&self) -> f64 {
        self.horizon as f64 * self.dt
    }

    /// The threshold in use: the configured one, or the latency estimate plus the margin.
    pub fn threshold(&self, latency_estimate_s: f64) -> f64 {
        if self.cfg.replan_threshold_s >= 0.0 {
            self.cfg.replan_threshold_s
        } else {
            latency_estimate_s + self.cfg.replan_margin_s
        }
    }

    /// Time left of the policy's plan at `now` (0 when the policy is not driving).
    pub fn remaining(&self, now: f64) -> f64 {
        match (self.driving, self.plan.end_time()) {
            (true, Some(end)) => (end - now).max(0.0),
            _ => 0.0,
        }
    }

    /// Whether to start an inference now: none running, and the unexecuted part of the plan is below the
    /// threshold. Starts are at least one action step apart so refused chunks cannot spin the model.
    pub fn should_start(&self, now: f64, in_flight: bool, latency_estimate_s: f64) -> bool {
        if in_flight {
            return false;
        }
        if let Some(last) = self.last_start {
            if now - last < self.dt {
                return false;
            }
        }
        self.remaining(now) < self.threshold(latency_estimate_s).max(f64::EPSILON)
    }

    pub fn started(&mut self, now: f64) {
        self.last_start = Some(now);
    }

    /// For `prefix` mode: what the sampler should keep of the active plan. Writes into `prefix` ([H, A])
    /// the plan's positions at the times of a new chunk's steps (anchored at `stamp`) and into `weights`
    /// ([H]) how strongly each is kept, and returns how many leading steps have a weight (0 when the policy
    /// is not driving). Steps that will already have been executed when the chunk is published at
    /// `publish_at` are kept exactly (weight 1; they are dropped at publication anyway). The next
    /// `crossfade_steps` steps the old plan still covers are kept with weights falling linearly towards 0
    /// (soft masking, as real-time chunking does), so that the first executed steps continue the motion
    /// and the chunk is free to change course after them.
    pub fn prefix(
        &mut self,
        stamp: f64,
        publish_at: f64,
        prefix: &mut [f64],
        weights: &mut [f32],
    ) -> usize {
        weights.fill(0.0);
        if !self.driving || self.cfg.boundary_mode != BoundaryMode::Prefix {
            return 0;
        }
        let Some(end) = self.plan.end_time() else {
            return 0;
        };
        let (a, dt) = (self.joints, self.dt);
        let soft = self.cfg.crossfade_steps;
        let (mut n, mut soft_used) = (0, 0);
        for i in 0..self.horizon.min(weights.len()) {
            let t = stamp + (i + 1) as f64 * dt;
            if t > end + TIME_EPS {
                break;
            }
            let w = if t <= publish_at + self.cfg.min_lead_s + TIME_EPS {
                1.0
            } else if soft_used < soft {
                soft_used += 1;
                1.0 - soft_used as f64 / (soft + 1) as f64
            } else {
                break;
            };
            self.plan
                .sample(t, &mut prefix[i * a..(i + 1) * a], &mut self.old_v);
            weights[i] = w as f32;
            n = i + 1;
        }
        n
    }

    /// Index of the first step of a chunk anchored at `stamp` still due after `now` + `min_lead_s`.
    pub fn first_future_step(&self, stamp: f64, now: f64) -> usize {
        let dt = self.dt;
        (0..self.horizon)
            .find(|i| stamp + (*i + 1) as f64 * dt > now + self.cfg.min_lead_s + TIME_EPS)
            .unwrap_or(self.horizon)
    }

    /// Enables the policy: the robot holds `measured` until the first chunk, which is then ramped in.
    pub fn enable(&mut self, now: f64, measured: &[f64]) {
        self.plan.hold(now, measured);
        self.driving = false;
        self.ramp_armed = self.cfg.ramp_in_s > 0.0;
        self.ramp = None;
        self.last_start = None;
        self.last_tick = Some(now);
    }

    /// Stops following the policy: hold `measured` from `now` on (disable, stale input, reset).
    pub fn hold(&mut self, now: f64, measured: &[f64]) {
        self.plan.hold(now, measured);
        self.driving = false;
        self.last_start = None;
        // Coming back from a hold is like an enable: ramp in again.
        self.ramp_armed = self.cfg.ramp_in_s > 0.0;
        self.ramp = None;
    }

    /// Forgets the plan (nothing is commanded until the next chunk or hold).
    pub fn clear(&mut self) {
        self.plan.clear();
        self.driving = false;
        self.last_start = None;
        self.ramp = None;
        self.ramp_armed = self.cfg.ramp_in_s > 0.0;
    }

    /// Accounts idle time up to `now`: time during which the policy was driving but its plan had ended.
    pub fn tick(&mut self, now: f64) {
        if let (true, Some(end), Some(last)) = (self.driving, self.plan.end_time(), self.last_tick)
        {
            let from = last.max(end);
            if now > from {
                self.metrics.idle_time_s += now - from;
            }
        }
        self.last_tick = Some(now);
    }

    /// The setpoint at `now` (streaming mode). False when nothing has been commanded yet.
    pub fn sample(&self, now: f64, position: &mut [f64], velocity: &mut [f64]) -> bool {
        self.plan.sample(now, position, velocity)
    }

    /// Builds `next` from the anchor and the chunk's steps `first..`: crossfaded into the old plan
    /// (crossfade mode) and blended from `ramp_from` over `ramp` = (start, duration) when given.
    #[allow(clippy::too_many_arguments)]
    fn fill_next(
        &mut self,
        stamp: f64,
        actions: &[f64],
        now: f64,
        first: usize,
        old_end: Option<f64>,
        ramp: Option<(f64, f64)>,
        ramp_from: Option<&[f64]>,
    ) {
        let (a, dt, h) = (self.joints, self.dt, self.horizon);
        self.next.start(now, &self.anchor_q, &self.anchor_v);
        for (k, i) in (first..h).enumerate() {
            let t = stamp + (i + 1) as f64 * dt;
            self.next.push(t, &actions[i * a..(i + 1) * a]);
            let off = (k + 1) * a;
            if self.cfg.boundary_mode == BoundaryMode::Crossfade {
                if let Some(end) = old_end {
                    if k < self.cfg.crossfade_steps && t <= end + TIME_EPS {
                        self.plan.sample(t, &mut self.old_q, &mut self.old_v);
                        let w = (k + 1) as f64 / (self.cfg.crossfade_steps + 1) as f64;
                        for j in 0..a {
                            let p = &mut self.next.positions[off + j];
                            *p = (1.0 - w) * self.old_q[j] + w * *p;
                        }
                    }
                }
            }
            let from = match (&self.ramp, ramp_from) {
                (_, Some(from)) => from,
                (Some(r), None) => r.from.as_slice(),
                (None, None) => continue,
            };
            if let Some((start, duration)) = ramp {
                let x = ((t - start) / duration).clamp(0.0, 1.0);
                // Smoothstep: zero slope at both ends of the ramp.
                let w = x * x * (3.0 - 2.0 * x);
                for (p, f) in self.next.positions[off..off + a].iter_mut().zip(from) {
                    *p = (1.0 - w) * f + w * *p;
                }
            }
        }
    }

    /// How long a catch-up ramp from the anchor to the chunk's first point takes: the smoothstep's
    /// peak slope (1.5 x distance / duration) stays within half of each joint's velocity limit, and it
    /// is never shorter than the enable ramp or two action steps.
    fn catch_up_duration(&self, safety: &SafetyFilter) -> f64 {
        let a = self.joints;
        let mut duration = self.cfg.ramp_in_s.max(2.0 * self.dt);
        if let (Some(l), true) = (safety.limits(), self.next.len() > 1) {
            for j in 0..a {
                let distance = (self.next.positions[a + j] - self.anchor_q[j]).abs();
                duration = duration.max(3.0 * distance / l.max_velocity[j]);
            }
        }
        duration
    }

    /// Turns a finished chunk (`actions`, [H, A], absolute positions, anchored at `stamp`) into the new
    /// plan from `now` on. On `Err` the active plan is left as it was and nothing may be published.
    pub fn accept(
        &mut self,
        stamp: f64,
        actions: &[f64],
        now: f64,
        measured: &[f64],
        safety: &SafetyFilter,
    ) -> Result<Accepted, Refusal> {
        let (a, h) = (self.joints, self.horizon);
        debug_assert_eq!(actions.len(), h * a);
        self.tick(now);
        let first = self.first_future_step(stamp, now);
        if first == h {
            self.metrics.dropped_steps += h as u64;
            self.metrics.dropped_chunks += 1;
            return Err(Refusal::AllStepsPast {
                latency_s: now - stamp,
            });
        }
        // Anchor: where the command stream is now.
        let has_old = self
            .plan
            .sample(now, &mut self.anchor_q, &mut self.anchor_v);
        if !has_old {
            self.anchor_v.fill(0.0);
        }
        if !has_old || self.anchor == Anchor::Measured {
            self.anchor_q.copy_from_slice(measured);
        }
        let old_end = if self.driving {
            self.plan.end_time()
        } else {
            None
        };
        // Only an enable arms a new ramp, so this allocates once per enable, not per chunk.
        let ramp_from = self.ramp_armed.then(|| self.anchor_q.clone());
        let ramp = match (&self.ramp, &ramp_from) {
            (Some(r), _) => Some((r.start, self.cfg.ramp_in_s)),
            (None, Some(_)) => Some((now, self.cfg.ramp_in_s)),
            (None, None) => None,
        };
        self.fill_next(
            stamp,
            actions,
            now,
            first,
            old_end,
            ramp,
            ramp_from.as_deref(),
        );
        let checked = match safety.apply(measured, &mut self.next) {
            Ok(c) => c,
            // The chunk's first step from where the command stream is would be too fast: the arm lags
            // its setpoints (blocked, or pushing), or the new chunk disagrees with the old one. Move
            // from the stream's position to the chunk over a ramp long enough for the velocity
            // limits instead of refusing the chunk and letting the plan run out.
            Err(v) if v.is_rate_limit_from_anchor() && safety.limits().is_some() => {
                let duration = self.catch_up_duration(safety);
                self.catch_up_from.copy_from_slice(&self.anchor_q);
                let from = std::mem::take(&mut self.catch_up_from);
                self.fill_next(
                    stamp,
                    actions,
                    now,
                    first,
                    old_end,
                    Some((now, duration)),
                    Some(&from),
                );
                self.catch_up_from = from;
                let checked = safety.apply(measured, &mut self.next)?;
                self.metrics.catch_up_ramps += 1;
                checked
            }
            Err(v) => return Err(v.into()),
        };

        // Boundary metric: the new plan's velocity at its first point against what the old plan commanded.
        let mut jump = 0.0f64;
        if old_end.is_some() {
            let t1 = self.next.times[1];
            self.plan.sample(t1, &mut self.old_q, &mut self.old_v);
            for (new, old) in self.next.velocity(1).iter().zip(&self.old_v) {
                jump = jump.max((new - old).abs());
            }
            self.metrics.max_boundary_velocity_jump =
                self.metrics.max_boundary_velocity_jump.max(jump);
        }
        std::mem::swap(&mut self.plan, &mut self.next);
        if let Some(from) = ramp_from {
            self.ramp = Some(Ramp { start: now, from });
            self.ramp_armed = false;
        } else if let Some(r) = &self.ramp {
            if now >= r.start + self.cfg.ramp_in_s {
                self.ramp = None;
            }
        }
        self.driving = true;
        self.metrics.chunks_accepted += 1;
        self.metrics.dropped_steps += first as u64;
        self.metrics.truncated_steps += checked.truncated as u64;
        Ok(Accepted {
            first_step: first,
            clamped: checked.clamped,
            truncated: checked.truncated,
            boundary_velocity_jump: jump,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExecutionParams, JointLimits};

    const DT: f64 = 0.1;

    const SHAPE: ChunkShape = ChunkShape {
        horizon: 8,
        joints: 1,
        dt: DT,
    };

    fn cfg(boundary: BoundaryMode) -> ExecutionParams {
        ExecutionParams {
            replan_threshold_s: 0.3,
            replan_margin_s: 0.0,
            boundary_mode: boundary,
            crossfade_steps: 3,
            ramp_in_s: 0.0,
            min_lead_s: 0.0,
            plan_anchor: Some(Anchor::Setpoint),
            ..ExecutionParams::default()
        }
    }

    fn no_limits() -> SafetyFilter {
        SafetyFilter::new(vec!["j".into()], None)
    }

    /// A chunk moving at `speed` rad/s from `start` (step i at start + speed (i + 1) dt).
    /// One joint within +-3 rad at up to 2 rad/s.
    fn one_joint_safety(max_acceleration: Option<Vec<f64>>, max_jump: f64) -> SafetyFilter {
        let limits = JointLimits {
            lower: vec![-3.0],
            upper: vec![3.0],
            max_velocity: vec![2.0],
            max_acceleration,
            max_jump,
        };
        SafetyFilter::new(vec!["j".into()], Some(limits))
    }

    fn ramp_chunk(start: f64, speed: f64) -> Vec<f64> {
        (0..8)
            .map(|i| start + speed * (i + 1) as f64 * DT)
            .collect()
    }

    fn at(e: &ChunkExecutor, t: f64) -> (f64, f64) {
        let (mut q, mut v) = ([0.0], [0.0]);
        assert!(e.sample(t, &mut q, &mut v));
        (q[0], v[0])
    }

    #[test]
    fn starts_when_the_unexecuted_part_falls_below_the_threshold() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        assert!(e.should_start(0.0, false, 0.0));
        assert!(!e.should_start(0.0, true, 0.0));
        e.started(0.0);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        assert!((e.remaining(0.5) - 0.3).abs() < 1e-12);
        assert!(!e.should_start(0.45, false, 0.0));
        assert!(e.should_start(0.55, false, 0.0));
    }

    #[test]
    fn derived_threshold_follows_latency() {
        let mut c = cfg(BoundaryMode::Replace);
        c.replan_threshold_s = -1.0;
        c.replan_margin_s = 0.05;
        let mut e = ChunkExecutor::new(c, SHAPE);
        assert!((e.threshold(0.2) - 0.25).abs() < 1e-12);
        e.started(0.0);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        // The plan ends at 0.8.
        assert!(!e.should_start(0.50, false, 0.2));
        assert!(e.should_start(0.60, false, 0.2));
        assert!(!e.should_start(0.60, false, 0.01));
    }

    #[test]
    fn starts_are_spaced_by_one_step() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        e.started(1.0);
        assert!(!e.should_start(1.05, false, 0.0));
        assert!(e.should_start(1.1, false, 0.0));
    }

    #[test]
    fn steps_due_before_publication_are_dropped_and_counted() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        // Published 0.25 s after its stamp: steps 0 (0.1) and 1 (0.2) are past.
        let ok = e
            .accept(10.0, &ramp_chunk(0.0, 0.1), 10.25, &[0.0], &no_limits())
            .unwrap();
        assert_eq!(ok.first_step, 2);
        assert_eq!(e.metrics().dropped_steps, 2);
        let plan = e.plan();
        assert_eq!(plan.len(), 1 + 6, "anchor + steps 2..8");
        assert!(
            (plan.times[0] - 10.25).abs() < 1e-12,
            "anchored at publication"
        );
        assert!(
            (plan.times[1] - 10.3).abs() < 1e-12,
            "step 2 at stamp + 3 dt"
        );
        assert!((plan.position(1)[0] - 0.03).abs() < 1e-12);
        // Entirely late: refused, nothing changes, all steps counted.
        let before = e.plan().clone();
        let r = e.accept(10.0, &ramp_chunk(0.0, 0.1), 11.0, &[0.0], &no_limits());
        assert!(matches!(r, Err(Refusal::AllStepsPast { .. })));
        assert_eq!(e.plan(), &before);
        assert_eq!(e.metrics().dropped_steps, 10);
        assert_eq!(e.metrics().dropped_chunks, 1);
    }

    #[test]
    fn min_lead_drops_a_point_due_too_soon() {
        let mut c = cfg(BoundaryMode::Replace);
        c.min_lead_s = 0.05;
        let e = ChunkExecutor::new(c, SHAPE);
        // Step 0 is due at 0.1, 0.03 after 0.07 < min lead: dropped.
        assert_eq!(e.first_future_step(0.0, 0.07), 1);
        assert_eq!(e.first_future_step(0.0, 0.04), 0);
    }

    #[test]
    fn replace_takes_the_new_chunk_as_it_is() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        let ok = e
            .accept(0.5, &ramp_chunk(1.0, 0.1), 0.5, &[0.05], &no_limits())
            .unwrap();
        assert!((e.plan().position(1)[0] - 1.01).abs() < 1e-12);
        // Old velocity at 0.6 was 0.1; new at its first point (1.02 - anchor 0.05) / 0.2.
        let want = (1.02 - 0.05) / 0.2 - 0.1;
        assert!((ok.boundary_velocity_jump - want).abs() < 1e-9);
        assert!((e.metrics().max_boundary_velocity_jump - want).abs() < 1e-9);
    }

    #[test]
    fn velocity_scaling_stretches_the_next_chunk_and_keeps_its_positions() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        let before = e.plan().times[2] - e.plan().times[1];
        assert!((before - DT).abs() < 1e-12);
        let step = e.plan().position(2)[0] - e.plan().position(1)[0];
        let mut slower = e.config().clone();
        slower.velocity_scaling = 0.5;
        e.set_params(slower);
        e.accept(1.0, &ramp_chunk(0.0, 0.1), 1.0, &[0.0], &no_limits())
            .unwrap();
        let plan = e.plan();
        let after = plan.times[2] - plan.times[1];
        assert!((after - 2.0 * DT).abs() < 1e-12, "{after}");
        // Same positions, half the speed.
        assert!((plan.position(2)[0] - plan.position(1)[0] - step).abs() < 1e-12);
        assert!((e.step_dt() - 2.0 * DT).abs() < 1e-12);
    }

    #[test]
    fn chunk_mode_anchors_at_the_measured_state() {
        let mut c = cfg(BoundaryMode::Replace);
        c.plan_anchor = Some(Anchor::Measured);
        let mut e = ChunkExecutor::new(c, SHAPE);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        // The robot lagged behind (0.01 instead of the plan's 0.04): the new plan starts where it is,
        // with the old plan's velocity.
        e.accept(0.4, &ramp_chunk(0.01, 0.1), 0.4, &[0.01], &no_limits())
            .unwrap();
        assert_eq!(e.plan().position(0), &[0.01]);
        assert!((e.plan().velocity(0)[0] - 0.1).abs() < 1e-9);
        // Stream mode continues from the setpoint instead.
        let mut s = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        s.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        s.accept(0.4, &ramp_chunk(0.01, 0.1), 0.4, &[0.01], &no_limits())
            .unwrap();
        assert!((s.plan().position(0)[0] - 0.04).abs() < 1e-12);
    }

    #[test]
    fn crossfade_blends_the_overlap_over_k_steps() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Crossfade), SHAPE);
        // Old: constant 0. New: constant 1. k = 3: weights 1/4, 2/4, 3/4, then 1.
        e.accept(0.0, &[0.0; 8], 0.0, &[0.0], &no_limits()).unwrap();
        e.accept(0.2, &[1.0; 8], 0.2, &[0.0], &no_limits()).unwrap();
        let p = e.plan();
        let got: Vec<f64> = (1..p.len()).map(|i| p.position(i)[0]).collect();
        assert_eq!(got.len(), 8);
        for (g, w) in got.iter().zip([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        // Beyond the old plan's end there is nothing to blend with.
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Crossfade), SHAPE);
        e.accept(0.0, &[0.0; 8], 0.0, &[0.0], &no_limits()).unwrap();
        e.accept(0.75, &[1.0; 8], 0.75, &[0.0], &no_limits())
            .unwrap();
        let p = e.plan();
        assert!(
            (p.position(1)[0] - 1.0).abs() < 1e-12,
            "0.85 is past the old end 0.8"
        );
    }

    #[test]
    fn crossfade_jumps_less_than_replace_on_a_disagreeing_chunk() {
        let jump = |mode| {
            let mut e = ChunkExecutor::new(cfg(mode), SHAPE);
            e.accept(0.0, &ramp_chunk(0.0, 0.2), 0.0, &[0.0], &no_limits())
                .unwrap();
            e.accept(0.4, &ramp_chunk(0.3, -0.2), 0.4, &[0.08], &no_limits())
                .unwrap()
                .boundary_velocity_jump
        };
        assert!(jump(BoundaryMode::Crossfade) < jump(BoundaryMode::Replace));
    }

    #[test]
    fn prefix_keeps_the_executed_steps_and_guides_the_next_ones_softly() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Prefix), SHAPE);
        let mut prefix = vec![f64::NAN; 8];
        let mut weights = vec![f32::NAN; 8];
        assert_eq!(
            e.prefix(0.0, 0.3, &mut prefix, &mut weights),
            0,
            "nothing to continue yet"
        );
        assert!(weights.iter().all(|w| *w == 0.0));
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        // New chunk stamped 0.2, expected at 0.42: steps at 0.3 and 0.4 run before it arrives (weight
        // 1); the old plan (to 0.8) covers 0.5..0.8, of which crossfade_steps (3) are guided: 3/4, 2/4, 1/4.
        assert_eq!(e.prefix(0.2, 0.42, &mut prefix, &mut weights), 5);
        assert_eq!(weights, [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]);
        for (i, t) in [0.3, 0.4, 0.5, 0.6, 0.7].iter().enumerate() {
            assert!((prefix[i] - at(&e, *t).0).abs() < 1e-12, "step {i}");
        }
        assert!(prefix[5].is_nan(), "the rest is left alone");
        // Never beyond the old plan's end (0.8): stamped 0.6, nothing after 0.8 is guided.
        assert_eq!(e.prefix(0.6, 0.65, &mut prefix, &mut weights), 2);
        assert_eq!(&weights[..3], [0.75, 0.5, 0.0]);
        // Other modes ask for no prefix.
        let mut r = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        r.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        assert_eq!(r.prefix(0.4, 0.62, &mut prefix, &mut weights), 0);
        assert!(weights.iter().all(|w| *w == 0.0));
    }

    #[test]
    fn a_chunk_that_continues_the_plan_joins_without_a_velocity_jump() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Prefix), SHAPE);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &no_limits())
            .unwrap();
        // A chunk that continues the same line (what prefix sampling produces).
        let ok = e
            .accept(0.4, &ramp_chunk(0.04, 0.1), 0.4, &[0.04], &no_limits())
            .unwrap();
        assert!(
            ok.boundary_velocity_jump < 1e-9,
            "{}",
            ok.boundary_velocity_jump
        );
    }

    #[test]
    fn idle_time_counts_only_while_driving_past_the_plan_end() {
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        e.enable(0.0, &[0.0]);
        e.tick(5.0);
        assert_eq!(
            e.metrics().idle_time_s,
            0.0,
            "holding before the first chunk is not idle"
        );
        e.accept(5.0, &ramp_chunk(0.0, 0.1), 5.0, &[0.0], &no_limits())
            .unwrap();
        e.tick(5.7);
        assert_eq!(e.metrics().idle_time_s, 0.0);
        e.tick(6.0);
        assert!(
            (e.metrics().idle_time_s - 0.2).abs() < 1e-12,
            "plan ended at 5.8"
        );
        // A new chunk in time: no more idle.
        e.accept(6.0, &ramp_chunk(0.8, 0.1), 6.0, &[0.8], &no_limits())
            .unwrap();
        e.tick(6.5);
        assert!((e.metrics().idle_time_s - 0.2).abs() < 1e-12);
        e.hold(6.5, &[0.85]);
        e.tick(9.0);
        assert!(
            (e.metrics().idle_time_s - 0.2).abs() < 1e-12,
            "a commanded hold is not idle"
        );
    }

    #[test]
    fn ramp_in_starts_at_the_measured_state_and_reaches_the_policy() {
        let mut c = cfg(BoundaryMode::Replace);
        c.ramp_in_s = 0.4;
        let mut e = ChunkExecutor::new(c, SHAPE);
        e.enable(0.0, &[0.0]);
        // The policy wants 0.5 everywhere; the robot is at 0.
        e.accept(0.0, &[0.5; 8], 0.0, &[0.0], &no_limits()).unwrap();
        let p = e.plan();
        let got: Vec<f64> = (1..p.len()).map(|i| p.position(i)[0]).collect();
        // Smoothstep at x = 0.25, 0.5, 0.75, 1: 0.15625, 0.5, 0.84375, 1.
        for (g, w) in got.iter().zip([0.078125, 0.25, 0.421875, 0.5, 0.5]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        // The next chunk inside the ramp window is still ramped from the same start.
        e.accept(0.2, &[0.5; 8], 0.2, &[0.2], &no_limits()).unwrap();
        assert!((e.plan().position(1)[0] - 0.421875).abs() < 1e-12);
        // After the window, chunks pass unchanged.
        e.accept(0.5, &[0.5; 8], 0.5, &[0.5], &no_limits()).unwrap();
        e.accept(0.6, &[0.7; 8], 0.6, &[0.5], &no_limits()).unwrap();
        assert!((e.plan().position(1)[0] - 0.7).abs() < 1e-12);
    }

    #[test]
    fn ramp_in_keeps_a_distant_first_command_inside_the_jump_limit() {
        let safety = one_joint_safety(None, 0.3);
        let chunk = [1.0; 8];
        let mut plain = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        plain.enable(0.0, &[0.0]);
        assert!(matches!(
            plain.accept(0.0, &chunk, 0.0, &[0.0], &safety),
            Err(Refusal::Safety(SafetyViolation::Jump { .. }))
        ));
        let mut c = cfg(BoundaryMode::Replace);
        c.ramp_in_s = 1.0;
        let mut ramped = ChunkExecutor::new(c, SHAPE);
        ramped.enable(0.0, &[0.0]);
        ramped.accept(0.0, &chunk, 0.0, &[0.0], &safety).unwrap();
    }

    #[test]
    fn a_refused_chunk_leaves_the_plan_untouched() {
        let safety = one_joint_safety(None, 0.3);
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        e.accept(0.0, &ramp_chunk(0.0, 0.1), 0.0, &[0.0], &safety)
            .unwrap();
        let before = e.plan().clone();
        let mut bad = ramp_chunk(0.0, 0.1);
        bad[5] = f64::NAN;
        assert!(e.accept(0.2, &bad, 0.2, &[0.02], &safety).is_err());
        assert_eq!(e.plan(), &before);
        assert_eq!(e.metrics().chunks_accepted, 1);
    }

    #[test]
    fn a_chunk_that_breaks_a_limit_late_is_followed_up_to_there_and_replanned_sooner() {
        let safety = one_joint_safety(None, 0.3);
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        // 0.01 rad per step, then 0.5 rad in one step between steps 5 and 6 (5 rad/s).
        let mut chunk = ramp_chunk(0.0, 0.1);
        for p in &mut chunk[6..] {
            *p += 0.5;
        }
        let accepted = e.accept(0.0, &chunk, 0.0, &[0.0], &safety).unwrap();
        assert!(accepted.truncated > 0);
        assert_eq!(e.metrics().truncated_steps, accepted.truncated as u64);
        assert_eq!(e.metrics().chunks_accepted, 1);
        // The plan stops before the fast step, at rest, and every step kept is the chunk's own.
        let plan = e.plan();
        assert_eq!(plan.len(), 1 + 8 - accepted.truncated);
        let last = plan.len() - 1;
        assert!(plan.position(last)[0] < 0.6);
        assert_eq!(plan.velocity(last), &[0.0]);
        for i in 1..plan.len() {
            assert_eq!(plan.position(i)[0], chunk[i - 1]);
        }
        // The shorter plan reaches the replanning threshold (0.3 s) earlier than the full one would.
        let end = plan.end_time().unwrap();
        assert!(end < 0.8 - 1e-9);
        assert!(!e.should_start(end - 0.31, false, 0.0));
        assert!(e.should_start(end - 0.29, false, 0.0));
    }

    #[test]
    fn a_chunk_too_fast_from_the_setpoint_is_caught_up_over_a_ramp_not_refused() {
        let safety = one_joint_safety(Some(vec![50.0]), 0.4);
        let mut e = ChunkExecutor::new(cfg(BoundaryMode::Replace), SHAPE);
        e.accept(0.0, &ramp_chunk(0.0, 0.0), 0.0, &[0.0], &safety)
            .unwrap();
        // The arm was pushed 0.35 rad away from its setpoints (0.0); the new chunk starts where the arm
        // is: 0.35 rad in the 0.1 s to its first step would be 3.5 rad/s.
        let chunk = ramp_chunk(0.35, 0.0);
        let accepted = e.accept(0.2, &chunk, 0.2, &[0.35], &safety).unwrap();
        assert_eq!(accepted.first_step, 0);
        assert_eq!(e.metrics().catch_up_ramps, 1);
        let plan = e.plan().clone();
        // Starts at the old setpoint, ends on the chunk, and passes every check as it is.
        assert_eq!(plan.position(0), &[0.0]);
        assert!((plan.position(plan.len() - 1)[0] - 0.35).abs() < 1e-12);
        let mut again = plan.clone();
        let checked = safety.apply(&[0.35], &mut again).unwrap();
        assert_eq!(checked.truncated, 0);
        assert_eq!(again, plan);
        // Positions rise monotonically from the setpoint to the chunk (no overshoot).
        for i in 1..plan.len() {
            assert!(plan.position(i)[0] >= plan.position(i - 1)[0]);
        }
        // A jump beyond max_jump from the measured state is still refused.
        let far = ramp_chunk(0.9, 0.0);
        assert!(matches!(
            e.accept(0.4, &far, 0.4, &[0.35], &safety),
            Err(Refusal::Safety(SafetyViolation::Jump { .. }))
        ));
    }
}

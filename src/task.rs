//! A task run through the `~/run` action, in plain Rust: which goal is active, when it ends and how
//! (time budget, stale inputs, errors, safety, a lost client), and its feedback. The ROS layer turns
//! its decisions into action responses and opens or closes the controller's gate; every end closes it
//! with a hold, except a preemption, where the next goal takes over the gate.

use crate::config::RunParams;
use crate::controller::{State, Status};

/// How a goal ended (wam_policy/action/Run result `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Timeout,
    Canceled,
    Preempted,
    SafetyStop,
    StaleInputs,
    Error,
    ClientLost,
    Shutdown,
    /// The monitor's hold rule fired: the world did not do what the model predicted.
    WorldMismatch,
}

impl Outcome {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Done => "DONE",
            Outcome::Timeout => "TIMEOUT",
            Outcome::Canceled => "CANCELED",
            Outcome::Preempted => "PREEMPTED",
            Outcome::SafetyStop => "SAFETY_STOP",
            Outcome::StaleInputs => "STALE_INPUTS",
            Outcome::Error => "ERROR",
            Outcome::ClientLost => "CLIENT_LOST",
            Outcome::Shutdown => "SHUTDOWN",
            Outcome::WorldMismatch => "WORLD_MISMATCH",
        }
    }
}

/// A goal's numbers (the instruction goes straight to the controller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunGoal {
    /// 0: no limit.
    pub time_budget_s: f64,
    pub succeed_on_timeout: bool,
    /// < 0: the node's `run_stale_tolerance_s`.
    pub stale_tolerance_s: f64,
}

impl RunGoal {
    /// A goal with numbers the node can act on, or why not.
    pub fn checked(self) -> Result<Self, String> {
        if !self.time_budget_s.is_finite() || self.time_budget_s < 0.0 {
            return Err(format!(
                "time_budget_s must be >= 0 (0: no limit), got {}",
                self.time_budget_s
            ));
        }
        if self.stale_tolerance_s.is_nan() || self.stale_tolerance_s.is_infinite() {
            return Err("stale_tolerance_s must be a finite number".into());
        }
        Ok(self)
    }
}

/// How the goal's result is reported: its outcome, whether the goal succeeded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub outcome: Outcome,
    pub succeeded: bool,
    pub message: String,
    pub elapsed_s: f64,
    pub chunks: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub state: &'static str,
    pub chunks: u64,
    pub elapsed_s: f64,
    pub latency_s: f64,
    pub remaining_s: f64,
}

#[derive(Debug, Clone)]
struct Active {
    goal: RunGoal,
    started: f64,
    chunks_at_start: u64,
    safety_at_start: u64,
    monitor_holds_at_start: u64,
    stale_since: Option<f64>,
    client_missing_since: Option<f64>,
}

/// What to do with a new goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Accept it; the running goal ends PREEMPTED first.
    Preempt,
    Reject,
}

#[derive(Debug)]
pub struct TaskRunner {
    params: RunParams,
    active: Option<Active>,
}

impl TaskRunner {
    pub fn new(params: RunParams) -> Self {
        TaskRunner {
            params,
            active: None,
        }
    }

    pub fn set_params(&mut self, params: RunParams) {
        self.params = params;
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    pub fn admission(&self) -> Admission {
        match (&self.active, self.params.preempt) {
            (None, _) => Admission::Accept,
            (Some(_), true) => Admission::Preempt,
            (Some(_), false) => Admission::Reject,
        }
    }

    /// A goal starts now (after `admission`, and after a preempted one was ended).
    pub fn start(&mut self, goal: RunGoal, now: f64, status: &Status) {
        self.active = Some(Active {
            goal,
            started: now,
            chunks_at_start: status.chunks_published,
            safety_at_start: status.safety_rejections,
            monitor_holds_at_start: status.monitor_holds,
            stale_since: None,
            client_missing_since: None,
        });
    }

    /// Ends the active goal with `outcome` (cancel, preemption, shutdown, a disable).
    pub fn end(
        &mut self,
        outcome: Outcome,
        message: String,
        now: f64,
        status: &Status,
    ) -> Option<Ending> {
        let a = self.active.take()?;
        Some(Ending {
            outcome,
            succeeded: outcome == Outcome::Done,
            message,
            elapsed_s: now - a.started,
            chunks: status.chunks_published.saturating_sub(a.chunks_at_start),
        })
    }

    /// The control step's check of the active goal: `clients_present` = an action client of `~/run`
    /// is in the graph. Returns the goal's end when it ends now.
    pub fn check(&mut self, now: f64, status: &Status, clients_present: bool) -> Option<Ending> {
        let a = self.active.as_mut()?;
        let elapsed = now - a.started;
        let tolerance = if a.goal.stale_tolerance_s >= 0.0 {
            a.goal.stale_tolerance_s
        } else {
            self.params.stale_tolerance_s
        };
        a.stale_since = match (status.state, a.stale_since) {
            (State::Stale, None) => Some(now),
            (State::Stale, since) => since,
            _ => None,
        };
        a.client_missing_since = match (clients_present, a.client_missing_since) {
            (false, None) => Some(now),
            (false, since) => since,
            (true, _) => None,
        };
        let ending = if status.monitor_done {
            Some((
                Outcome::Done,
                "the monitor estimates the task done (the model predicts no further change)"
                    .to_string(),
            ))
        } else if status.monitor_holds > a.monitor_holds_at_start {
            Some((
                Outcome::WorldMismatch,
                format!(
                    "the monitor held the arm: the world did not do what the model predicted ({})",
                    status.detail
                ),
            ))
        } else if status.safety_rejections > a.safety_at_start {
            Some((
                Outcome::SafetyStop,
                format!(
                    "a command was refused by the safety checks ({} refusals since the goal started)",
                    status.safety_rejections - a.safety_at_start
                ),
            ))
        } else if status.state == State::Error {
            Some((
                Outcome::Error,
                format!("the node reported an error: {}", status.detail),
            ))
        } else if a.stale_since.is_some_and(|t| now - t > tolerance) {
            Some((
                Outcome::StaleInputs,
                format!(
                    "inputs stale for more than {tolerance} s: {}",
                    status.detail
                ),
            ))
        } else if self.params.watchdog_s > 0.0
            && a.client_missing_since
                .is_some_and(|t| now - t > self.params.watchdog_s)
        {
            Some((
                Outcome::ClientLost,
                format!(
                    "no action client of ~/run in the graph for {} s",
                    self.params.watchdog_s
                ),
            ))
        } else if a.goal.time_budget_s > 0.0 && elapsed >= a.goal.time_budget_s {
            Some((
                Outcome::Timeout,
                format!("the time budget of {} s ran out", a.goal.time_budget_s),
            ))
        } else {
            None
        };
        let (outcome, message) = ending?;
        let succeed_on_timeout = a.goal.succeed_on_timeout;
        let mut end = self.end(outcome, message, now, status)?;
        end.succeeded =
            outcome == Outcome::Done || (outcome == Outcome::Timeout && succeed_on_timeout);
        Some(end)
    }

    pub fn feedback(&self, now: f64, status: &Status) -> Option<Feedback> {
        let a = self.active.as_ref()?;
        let elapsed = now - a.started;
        Some(Feedback {
            state: status.state.name(),
            chunks: status.chunks_published.saturating_sub(a.chunks_at_start),
            elapsed_s: elapsed,
            latency_s: status.latency_p50_s,
            remaining_s: if a.goal.time_budget_s > 0.0 {
                (a.goal.time_budget_s - elapsed).max(0.0)
            } else {
                f64::INFINITY
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::InputHealth;

    fn status(state: State) -> Status {
        let health = InputHealth {
            received: 0,
            rate_hz: 0.0,
            age_s: 0.0,
            missed: 0,
        };
        Status {
            state,
            detail: "detail".into(),
            enabled: true,
            latency_p50_s: 0.1,
            latency_p95_s: 0.1,
            latency_max_s: 0.1,
            replan_threshold_s: 0.5,
            chunk_rate_hz: 1.0,
            chunks_published: 10,
            inferences: 10,
            inference_errors: 0,
            bad_images: 0,
            bad_joint_states: 0,
            bad_instructions: 0,
            stale_observations: 0,
            safety_rejections: 0,
            discarded_chunks: 0,
            decoded_chunks: 0,
            clock_jumps: 0,
            dropped_steps: 0,
            truncated_steps: 0,
            catch_up_ramps: 0,
            idle_time_s: 0.0,
            max_boundary_velocity_jump: 0.0,
            rejections: vec![],
            cameras: vec![],
            joint_states: health,
            reaction_latency_p50_s: 0.0,
            reaction_latency_p95_s: 0.0,
            monitor_score: f64::NAN,
            monitor_calibrated: false,
            monitor_done: false,
            monitor_holds: 0,
        }
    }

    const PARAMS: RunParams = RunParams {
        preempt: true,
        watchdog_s: 1.0,
        stale_tolerance_s: 2.0,
    };

    fn goal(budget: f64, succeed_on_timeout: bool) -> RunGoal {
        RunGoal {
            time_budget_s: budget,
            succeed_on_timeout,
            stale_tolerance_s: -1.0,
        }
    }

    #[test]
    fn the_budget_ends_a_goal_as_timeout_and_succeeds_only_when_asked() {
        for succeed in [true, false] {
            let mut t = TaskRunner::new(PARAMS);
            let mut s = status(State::Running);
            t.start(goal(3.0, succeed), 10.0, &s);
            assert_eq!(t.check(12.9, &s, true), None);
            s.chunks_published = 14;
            let end = t.check(13.0, &s, true).unwrap();
            assert_eq!(end.outcome, Outcome::Timeout);
            assert_eq!(end.succeeded, succeed);
            assert_eq!(end.chunks, 4);
            assert!((end.elapsed_s - 3.0).abs() < 1e-12);
            assert!(!t.is_active());
        }
    }

    #[test]
    fn stale_inputs_end_a_goal_only_after_the_tolerance() {
        let mut t = TaskRunner::new(PARAMS);
        let running = status(State::Running);
        let stale = status(State::Stale);
        t.start(goal(0.0, false), 0.0, &running);
        assert_eq!(t.check(1.0, &stale, true), None);
        // A recovery resets the count.
        assert_eq!(t.check(2.5, &running, true), None);
        assert_eq!(t.check(3.0, &stale, true), None);
        assert_eq!(t.check(4.9, &stale, true), None);
        let end = t.check(5.1, &stale, true).unwrap();
        assert_eq!((end.outcome, end.succeeded), (Outcome::StaleInputs, false));
        // The goal's own tolerance wins over the node's.
        let mut t = TaskRunner::new(PARAMS);
        let mut g = goal(0.0, false);
        g.stale_tolerance_s = 0.0;
        t.start(g, 0.0, &running);
        assert_eq!(t.check(1.0, &stale, true), None);
        assert!(t.check(1.01, &stale, true).is_some());
    }

    #[test]
    fn errors_safety_refusals_and_a_lost_client_end_a_goal() {
        let mut t = TaskRunner::new(PARAMS);
        let mut s = status(State::Running);
        t.start(goal(0.0, false), 0.0, &s);
        s.safety_rejections = 1;
        assert_eq!(t.check(0.1, &s, true).unwrap().outcome, Outcome::SafetyStop);

        t.start(goal(0.0, false), 1.0, &s);
        assert_eq!(
            t.check(1.1, &status(State::Error), true).unwrap().outcome,
            Outcome::Error
        );

        let s = status(State::Running);
        t.start(goal(0.0, false), 2.0, &s);
        assert_eq!(t.check(2.5, &s, false), None);
        assert_eq!(t.check(3.4, &s, false), None);
        assert_eq!(
            t.check(3.6, &s, false).unwrap().outcome,
            Outcome::ClientLost
        );

        // The watchdog off: no end without a client.
        let mut t = TaskRunner::new(RunParams {
            watchdog_s: 0.0,
            ..PARAMS
        });
        t.start(goal(0.0, false), 0.0, &s);
        assert_eq!(t.check(100.0, &s, false), None);
    }

    #[test]
    fn the_monitor_ends_a_goal_done_or_on_a_mismatch() {
        let mut t = TaskRunner::new(PARAMS);
        let mut s = status(State::Running);
        t.start(goal(0.0, false), 0.0, &s);
        s.monitor_done = true;
        let end = t.check(1.0, &s, true).unwrap();
        assert_eq!((end.outcome, end.succeeded), (Outcome::Done, true));
        let mut s = status(State::Running);
        t.start(goal(0.0, false), 2.0, &s);
        s.monitor_holds = 1;
        let end = t.check(3.0, &s, true).unwrap();
        assert_eq!(
            (end.outcome, end.succeeded),
            (Outcome::WorldMismatch, false)
        );
        assert_eq!(Outcome::WorldMismatch.code(), 9);
    }

    #[test]
    fn admission_follows_the_preemption_policy() {
        let s = status(State::Running);
        let mut t = TaskRunner::new(PARAMS);
        assert_eq!(t.admission(), Admission::Accept);
        t.start(goal(0.0, false), 0.0, &s);
        assert_eq!(t.admission(), Admission::Preempt);
        t.set_params(RunParams {
            preempt: false,
            ..PARAMS
        });
        assert_eq!(t.admission(), Admission::Reject);
        let end = t
            .end(Outcome::Canceled, "canceled".into(), 1.0, &s)
            .unwrap();
        assert_eq!((end.outcome, end.succeeded), (Outcome::Canceled, false));
        assert_eq!(t.admission(), Admission::Accept);
    }

    #[test]
    fn feedback_counts_from_the_goal_start() {
        let mut t = TaskRunner::new(PARAMS);
        let mut s = status(State::Running);
        assert_eq!(t.feedback(0.0, &s), None);
        t.start(goal(5.0, false), 1.0, &s);
        s.chunks_published = 13;
        let f = t.feedback(3.0, &s).unwrap();
        assert_eq!((f.state, f.chunks), ("RUNNING", 3));
        assert!((f.remaining_s - 3.0).abs() < 1e-12 && (f.elapsed_s - 2.0).abs() < 1e-12);
        assert!(RunGoal {
            time_budget_s: -1.0,
            ..goal(0.0, false)
        }
        .checked()
        .is_err());
    }
}

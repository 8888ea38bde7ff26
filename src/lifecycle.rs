//! The ROS 2 managed-node (lifecycle) state machine, as rclcpp's LifecycleNode implements it
//! (design.ros2.org "Managed nodes"; ids of lifecycle_msgs/State and lifecycle_msgs/Transition), in
//! plain Rust: the ROS layer serves `~/change_state`, `~/get_state`, `~/get_available_states`,
//! `~/get_available_transitions` and publishes `~/transition_event` from it.
//!
//! A transition runs its callback in the transition state (configuring, activating, ...). The callback
//! answers success (to the goal state), failure (back to the start state) or error (to
//! errorprocessing, whose cleanup sends the node to unconfigured, or to finalized when that fails too).

/// A lifecycle state: its lifecycle_msgs/State id and label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unconfigured,
    Inactive,
    Active,
    Finalized,
    Configuring,
    CleaningUp,
    ShuttingDown,
    Activating,
    Deactivating,
    ErrorProcessing,
}

impl State {
    pub const ALL: [State; 10] = [
        State::Unconfigured,
        State::Inactive,
        State::Active,
        State::Finalized,
        State::Configuring,
        State::CleaningUp,
        State::ShuttingDown,
        State::Activating,
        State::Deactivating,
        State::ErrorProcessing,
    ];

    pub fn id(self) -> u8 {
        match self {
            State::Unconfigured => 1,
            State::Inactive => 2,
            State::Active => 3,
            State::Finalized => 4,
            State::Configuring => 10,
            State::CleaningUp => 11,
            State::ShuttingDown => 12,
            State::Activating => 13,
            State::Deactivating => 14,
            State::ErrorProcessing => 15,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Unconfigured => "unconfigured",
            State::Inactive => "inactive",
            State::Active => "active",
            State::Finalized => "finalized",
            State::Configuring => "configuring",
            State::CleaningUp => "cleaningup",
            State::ShuttingDown => "shuttingdown",
            State::Activating => "activating",
            State::Deactivating => "deactivating",
            State::ErrorProcessing => "errorprocessing",
        }
    }
}

/// A transition a client can ask for (lifecycle_msgs/Transition ids 1..7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Configure,
    Cleanup,
    Activate,
    Deactivate,
    UnconfiguredShutdown,
    InactiveShutdown,
    ActiveShutdown,
}

impl Transition {
    pub const ALL: [Transition; 7] = [
        Transition::Configure,
        Transition::Cleanup,
        Transition::Activate,
        Transition::Deactivate,
        Transition::UnconfiguredShutdown,
        Transition::InactiveShutdown,
        Transition::ActiveShutdown,
    ];

    pub fn id(self) -> u8 {
        match self {
            Transition::Configure => 1,
            Transition::Cleanup => 2,
            Transition::Activate => 3,
            Transition::Deactivate => 4,
            Transition::UnconfiguredShutdown => 5,
            Transition::InactiveShutdown => 6,
            Transition::ActiveShutdown => 7,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Transition::Configure => "configure",
            Transition::Cleanup => "cleanup",
            Transition::Activate => "activate",
            Transition::Deactivate => "deactivate",
            Transition::UnconfiguredShutdown
            | Transition::InactiveShutdown
            | Transition::ActiveShutdown => "shutdown",
        }
    }

    /// Where it starts, which transition state it runs in, where it ends on success.
    fn states(self) -> (State, State, State) {
        match self {
            Transition::Configure => (State::Unconfigured, State::Configuring, State::Inactive),
            Transition::Cleanup => (State::Inactive, State::CleaningUp, State::Unconfigured),
            Transition::Activate => (State::Inactive, State::Activating, State::Active),
            Transition::Deactivate => (State::Active, State::Deactivating, State::Inactive),
            Transition::UnconfiguredShutdown => {
                (State::Unconfigured, State::ShuttingDown, State::Finalized)
            }
            Transition::InactiveShutdown => {
                (State::Inactive, State::ShuttingDown, State::Finalized)
            }
            Transition::ActiveShutdown => (State::Active, State::ShuttingDown, State::Finalized),
        }
    }

    /// The transition of `state` that a request names: by id, or (id 0) by label; `shutdown` is
    /// the shutdown transition of the current state.
    pub fn requested(state: State, id: u8, label: &str) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| {
            t.states().0 == state
                && if id != 0 {
                    t.id() == id
                } else {
                    t.label() == label
                }
        })
    }

    /// The transitions available from `state`.
    pub fn available(state: State) -> impl Iterator<Item = (Transition, State, State)> {
        Transition::ALL
            .into_iter()
            .filter(move |t| t.states().0 == state)
            .map(|t| {
                let (start, middle, _) = t.states();
                (t, start, middle)
            })
    }

    /// The id of the callback's outcome transition (lifecycle_msgs/Transition ON_*_SUCCESS etc.).
    fn outcome_id(self, result: CallbackResult) -> u8 {
        let base = match self {
            Transition::Configure => 10,
            Transition::Cleanup => 20,
            Transition::Activate => 30,
            Transition::Deactivate => 40,
            _ => 50,
        };
        base + match result {
            CallbackResult::Success => 0,
            CallbackResult::Failure => 1,
            CallbackResult::Error => 2,
        }
    }
}

/// What a transition's callback answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackResult {
    Success,
    Failure,
    Error,
}

impl CallbackResult {
    fn label(self) -> &'static str {
        match self {
            CallbackResult::Success => "transition_success",
            CallbackResult::Failure => "transition_failure",
            CallbackResult::Error => "transition_error",
        }
    }
}

/// One step, for `~/transition_event`: a transition (id, label) from one state to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionEvent {
    pub transition_id: u8,
    pub transition_label: &'static str,
    pub start: State,
    pub goal: State,
}

#[derive(Debug)]
pub struct Lifecycle {
    state: State,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: State::Unconfigured,
        }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        self.state
    }

    /// Runs `transition` from the current state: `callback` does the work (in the transition state)
    /// and `on_error` cleans up after an error. The events of every step are appended to `events`.
    /// Returns whether the transition reached its goal state.
    pub fn run(
        &mut self,
        transition: Transition,
        callback: impl FnOnce(Transition) -> CallbackResult,
        on_error: impl FnOnce() -> CallbackResult,
        events: &mut Vec<TransitionEvent>,
    ) -> bool {
        let (start, middle, goal) = transition.states();
        if self.state != start {
            return false;
        }
        events.push(TransitionEvent {
            transition_id: transition.id(),
            transition_label: transition.label(),
            start,
            goal: middle,
        });
        let result = callback(transition);
        let next = match result {
            CallbackResult::Success => goal,
            CallbackResult::Failure => start,
            CallbackResult::Error => State::ErrorProcessing,
        };
        events.push(TransitionEvent {
            transition_id: transition.outcome_id(result),
            transition_label: result.label(),
            start: middle,
            goal: next,
        });
        self.state = next;
        if next == State::ErrorProcessing {
            let cleaned = on_error();
            let (id, after) = match cleaned {
                CallbackResult::Success => (60, State::Unconfigured),
                CallbackResult::Failure => (61, State::Finalized),
                CallbackResult::Error => (62, State::Finalized),
            };
            events.push(TransitionEvent {
                transition_id: id,
                transition_label: cleaned.label(),
                start: State::ErrorProcessing,
                goal: after,
            });
            self.state = after;
        }
        result == CallbackResult::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: Transition) -> CallbackResult {
        CallbackResult::Success
    }

    #[test]
    fn the_primary_path_and_its_events() {
        let mut l = Lifecycle::default();
        let mut ev = Vec::new();
        assert!(l.run(Transition::Configure, ok, || unreachable!(), &mut ev));
        assert_eq!(l.state(), State::Inactive);
        assert_eq!(
            ev,
            vec![
                TransitionEvent {
                    transition_id: 1,
                    transition_label: "configure",
                    start: State::Unconfigured,
                    goal: State::Configuring
                },
                TransitionEvent {
                    transition_id: 10,
                    transition_label: "transition_success",
                    start: State::Configuring,
                    goal: State::Inactive
                },
            ]
        );
        for (t, want) in [
            (Transition::Activate, State::Active),
            (Transition::Deactivate, State::Inactive),
            (Transition::Cleanup, State::Unconfigured),
            (Transition::UnconfiguredShutdown, State::Finalized),
        ] {
            assert!(l.run(t, ok, || unreachable!(), &mut ev));
            assert_eq!(l.state(), want);
        }
        assert_eq!(Transition::available(State::Finalized).count(), 0);
    }

    #[test]
    fn invalid_transitions_change_nothing() {
        let mut l = Lifecycle::default();
        let mut ev = Vec::new();
        let called = std::cell::Cell::new(false);
        let run = l.run(
            Transition::Activate,
            |_| {
                called.set(true);
                CallbackResult::Success
            },
            || CallbackResult::Success,
            &mut ev,
        );
        assert!(!run && !called.get() && ev.is_empty());
        assert_eq!(l.state(), State::Unconfigured);
        assert_eq!(Transition::requested(State::Unconfigured, 3, ""), None);
    }

    #[test]
    fn an_error_goes_through_errorprocessing_to_unconfigured() {
        let mut l = Lifecycle::default();
        let mut ev = Vec::new();
        let cleaned = std::cell::Cell::new(false);
        let run = l.run(
            Transition::Configure,
            |_| CallbackResult::Error,
            || {
                cleaned.set(true);
                CallbackResult::Success
            },
            &mut ev,
        );
        assert!(!run && cleaned.get());
        assert_eq!(l.state(), State::Unconfigured);
        let path: Vec<(State, State)> = ev.iter().map(|e| (e.start, e.goal)).collect();
        assert_eq!(
            path,
            vec![
                (State::Unconfigured, State::Configuring),
                (State::Configuring, State::ErrorProcessing),
                (State::ErrorProcessing, State::Unconfigured),
            ]
        );
        assert_eq!(ev[1].transition_id, 12);
        // A failure returns to the start state without errorprocessing.
        let mut ev = Vec::new();
        assert!(!l.run(
            Transition::Configure,
            |_| CallbackResult::Failure,
            || unreachable!(),
            &mut ev
        ));
        assert_eq!((l.state(), ev.len()), (State::Unconfigured, 2));
    }

    #[test]
    fn requests_by_id_or_label_and_shutdown_from_each_primary_state() {
        assert_eq!(
            Transition::requested(State::Unconfigured, 0, "configure"),
            Some(Transition::Configure)
        );
        assert_eq!(
            Transition::requested(State::Active, 0, "shutdown"),
            Some(Transition::ActiveShutdown)
        );
        assert_eq!(
            Transition::requested(State::Inactive, 6, ""),
            Some(Transition::InactiveShutdown)
        );
        let from_inactive: Vec<u8> = Transition::available(State::Inactive)
            .map(|(t, _, _)| t.id())
            .collect();
        assert_eq!(from_inactive, vec![2, 3, 6]);
    }
}

//! The lifecycle services of a managed node (`managed: true`): lifecycle_msgs' `~/change_state`,
//! `~/get_state`, `~/get_available_states`, `~/get_available_transitions` and `~/transition_event`,
//! over the plain state machine in `crate::lifecycle`.

use futures::Stream;
use r2r::lifecycle_msgs::msg::{
    State as StateMsg, Transition as TransitionMsg, TransitionDescription,
    TransitionEvent as TransitionEventMsg,
};
use r2r::lifecycle_msgs::srv::{
    ChangeState, GetAvailableStates, GetAvailableTransitions, GetState,
};
use r2r::{QosProfile, ServiceRequest};

use crate::lifecycle::{CallbackResult, Lifecycle, State, Transition, TransitionEvent};

use super::drain;

type Requests<T> = Box<dyn Stream<Item = ServiceRequest<T>> + Unpin>;

/// What the node does in each transition.
pub trait Managed {
    /// The work of `transition` (configure: load the bundle ...), in its transition state.
    fn on_transition(&mut self, node: &mut r2r::Node, transition: Transition) -> CallbackResult;
    /// Cleanup after a transition's error (errorprocessing).
    fn on_error(&mut self, node: &mut r2r::Node) -> CallbackResult;
}

pub struct LifecycleServices {
    change: Requests<ChangeState::Service>,
    get: Requests<GetState::Service>,
    states: Requests<GetAvailableStates::Service>,
    transitions: Requests<GetAvailableTransitions::Service>,
    events: r2r::Publisher<TransitionEventMsg>,
    pending_events: Vec<TransitionEvent>,
}

fn state_msg(s: State) -> StateMsg {
    StateMsg {
        id: s.id(),
        label: s.label().to_string(),
    }
}

impl LifecycleServices {
    pub fn create(node: &mut r2r::Node) -> anyhow::Result<Self> {
        let qos = QosProfile::services_default;
        Ok(LifecycleServices {
            change: Box::new(node.create_service::<ChangeState::Service>("~/change_state", qos())?),
            get: Box::new(node.create_service::<GetState::Service>("~/get_state", qos())?),
            states: Box::new(
                node.create_service::<GetAvailableStates::Service>(
                    "~/get_available_states",
                    qos(),
                )?,
            ),
            transitions: Box::new(node.create_service::<GetAvailableTransitions::Service>(
                "~/get_available_transitions",
                qos(),
            )?),
            events: node.create_publisher(
                "~/transition_event",
                QosProfile::default().reliable().keep_last(10),
            )?,
            pending_events: Vec::new(),
        })
    }

    /// Answers pending requests, running requested transitions through `app`.
    pub fn serve(
        &mut self,
        lifecycle: &mut Lifecycle,
        app: &mut dyn Managed,
        node: &mut r2r::Node,
        now_ns: u64,
    ) {
        let mut changes = Vec::new();
        drain(&mut self.change, |req| changes.push(req));
        for req in changes {
            let t = &req.message.transition;
            let success = match Transition::requested(lifecycle.state(), t.id, &t.label) {
                Some(transition) => {
                    tracing::info!(
                        transition = transition.label(),
                        from = lifecycle.state().label(),
                        "lifecycle transition"
                    );
                    // The callbacks need the app mutably twice (work, then cleanup on error):
                    // the error handler runs only after the work returned.
                    let app_cell = std::cell::RefCell::new(&mut *app);
                    let node_cell = std::cell::RefCell::new(&mut *node);
                    let ok = lifecycle.run(
                        transition,
                        |t| {
                            app_cell
                                .borrow_mut()
                                .on_transition(&mut node_cell.borrow_mut(), t)
                        },
                        || app_cell.borrow_mut().on_error(&mut node_cell.borrow_mut()),
                        &mut self.pending_events,
                    );
                    tracing::info!(
                        state = lifecycle.state().label(),
                        success = ok,
                        "lifecycle state"
                    );
                    ok
                }
                None => {
                    tracing::warn!(
                        id = t.id,
                        label = %t.label,
                        state = lifecycle.state().label(),
                        "lifecycle transition refused: not available in this state"
                    );
                    false
                }
            };
            if let Err(e) = req.respond(ChangeState::Response { success }) {
                tracing::warn!(error = %e, "cannot answer ~/change_state");
            }
        }
        for e in self.pending_events.drain(..) {
            let msg = TransitionEventMsg {
                timestamp: now_ns,
                transition: TransitionMsg {
                    id: e.transition_id,
                    label: e.transition_label.to_string(),
                },
                start_state: state_msg(e.start),
                goal_state: state_msg(e.goal),
            };
            if let Err(err) = self.events.publish(&msg) {
                tracing::warn!(error = %err, "cannot publish ~/transition_event");
            }
        }
        let state = lifecycle.state();
        drain(&mut self.get, |req| {
            let response = GetState::Response {
                current_state: state_msg(state),
            };
            if let Err(e) = req.respond(response) {
                tracing::warn!(error = %e, "cannot answer ~/get_state");
            }
        });
        drain(&mut self.states, |req| {
            let response = GetAvailableStates::Response {
                available_states: State::ALL.iter().map(|s| state_msg(*s)).collect(),
            };
            if let Err(e) = req.respond(response) {
                tracing::warn!(error = %e, "cannot answer ~/get_available_states");
            }
        });
        drain(&mut self.transitions, |req| {
            let available_transitions = Transition::available(state)
                .map(|(t, start, goal)| TransitionDescription {
                    transition: TransitionMsg {
                        id: t.id(),
                        label: t.label().to_string(),
                    },
                    start_state: state_msg(start),
                    goal_state: state_msg(goal),
                })
                .collect();
            let response = GetAvailableTransitions::Response {
                available_transitions,
            };
            if let Err(e) = req.respond(response) {
                tracing::warn!(error = %e, "cannot answer ~/get_available_transitions");
            }
        });
    }
}

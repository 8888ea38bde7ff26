//! The model's action space (`action.kind`) against the absolute joint positions the execution layer plans
//! in: a chunk the model returns is converted to absolute positions, and a prefix the controller wants
//! inpainted (absolute positions of the plan being executed) is converted into the model's space first.
//! Both directions use the joint state of the observation the chunk is computed from.

use crate::bundle::ActionKind;

/// Converts between `action.kind` and absolute positions for one bundle.
#[derive(Debug, Clone)]
pub struct ActionSpace {
    kind: ActionKind,
    /// Seconds between action steps (`action.dt`), for `joint_velocity`.
    dt: f64,
    /// For each action joint, its index among the state joints (its measured position).
    action_to_state: Vec<usize>,
}

impl ActionSpace {
    pub fn new(kind: ActionKind, dt: f64, action_to_state: Vec<usize>) -> Self {
        ActionSpace {
            kind,
            dt,
            action_to_state,
        }
    }

    pub fn kind(&self) -> ActionKind {
        self.kind
    }

    /// `actions` ([H, A], the model's kind, physical units) -> absolute joint positions in place.
    /// `state`: the observation's joint positions in state order.
    pub fn to_absolute(&self, state: &[f64], actions: &mut [f64]) {
        let a = self.action_to_state.len();
        if a == 0 {
            return;
        }
        match self.kind {
            ActionKind::AbsoluteJointPosition => {}
            ActionKind::DeltaJointPosition => {
                for step in actions.chunks_exact_mut(a) {
                    for (x, &s) in step.iter_mut().zip(&self.action_to_state) {
                        *x += state[s];
                    }
                }
            }
            ActionKind::JointVelocity => {
                // q_i = q_{i-1} + v_i dt, from q_{-1} = the observed position.
                for j in 0..a {
                    let mut q = state[self.action_to_state[j]];
                    for step in actions.chunks_exact_mut(a) {
                        q += step[j] * self.dt;
                        step[j] = q;
                    }
                }
            }
        }
    }

    /// The first `steps` steps of `plan` ([H, A] absolute positions) -> the model's kind in place (the
    /// inverse of [`Self::to_absolute`] on those steps; later steps are left as they are).
    pub fn from_absolute(&self, state: &[f64], plan: &mut [f64], steps: usize) {
        let a = self.action_to_state.len();
        if a == 0 {
            return;
        }
        let known = (steps * a).min(plan.len());
        let plan = &mut plan[..known];
        match self.kind {
            ActionKind::AbsoluteJointPosition => {}
            ActionKind::DeltaJointPosition => {
                for step in plan.chunks_exact_mut(a) {
                    for (x, &s) in step.iter_mut().zip(&self.action_to_state) {
                        *x -= state[s];
                    }
                }
            }
            ActionKind::JointVelocity => {
                for j in 0..a {
                    let mut previous = state[self.action_to_state[j]];
                    for step in plan.chunks_exact_mut(a) {
                        let q = step[j];
                        step[j] = (q - previous) / self.dt;
                        previous = q;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two action joints: action joint 0 is state joint 2, action joint 1 is state joint 0.
    fn space(kind: ActionKind) -> ActionSpace {
        ActionSpace::new(kind, 0.5, vec![2, 0])
    }
    const STATE: [f64; 3] = [1.0, -7.0, 10.0];

    #[test]
    fn delta_adds_the_observed_position_of_each_joint() {
        let s = space(ActionKind::DeltaJointPosition);
        let mut a = vec![0.1, 0.2, 0.3, 0.4];
        s.to_absolute(&STATE, &mut a);
        assert_eq!(a, vec![10.1, 1.2, 10.3, 1.4]);
    }

    #[test]
    fn velocity_integrates_from_the_observed_position() {
        let s = space(ActionKind::JointVelocity);
        // Step 0: 10 + 2 * 0.5 = 11; step 1: 11 + 4 * 0.5 = 13. Joint 1: 1 - 1 = 0, 0 + 0 = 0.
        let mut a = vec![2.0, -2.0, 4.0, 0.0];
        s.to_absolute(&STATE, &mut a);
        assert_eq!(a, vec![11.0, 0.0, 13.0, 0.0]);
    }

    #[test]
    fn absolute_is_left_alone() {
        let s = space(ActionKind::AbsoluteJointPosition);
        let mut a = vec![0.1, 0.2];
        s.to_absolute(&STATE, &mut a);
        s.from_absolute(&STATE, &mut a, 1);
        assert_eq!(a, vec![0.1, 0.2]);
    }

    #[test]
    fn from_absolute_inverts_to_absolute_on_the_known_steps_only() {
        for kind in [ActionKind::DeltaJointPosition, ActionKind::JointVelocity] {
            let s = space(kind);
            let model = vec![0.5, -1.0, 0.25, 2.0, 9.0, 9.0];
            let mut plan = model.clone();
            s.to_absolute(&STATE, &mut plan);
            let absolute_last = plan[4..].to_vec();
            s.from_absolute(&STATE, &mut plan, 2);
            for (x, y) in plan[..4].iter().zip(&model[..4]) {
                assert!((x - y).abs() < 1e-12, "{kind:?}: {plan:?} vs {model:?}");
            }
            // The third step was not known: untouched (still absolute).
            assert_eq!(plan[4..], absolute_last[..], "{kind:?}");
        }
    }
}

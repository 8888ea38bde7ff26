//! Action chunk -> timed joint trajectory that a stock joint_trajectory_controller executes as it is:
//! time_from_start strictly increasing from one step ahead of the observation stamp, positions and
//! velocities for every joint (cubic interpolation), zero velocity at the end.

/// A chunk's points, joint-major inside each point (`positions[i * joints + j]`), preallocated per horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryPoints {
    pub joints: usize,
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
    /// Seconds after the trajectory's header stamp.
    pub times: Vec<f64>,
}

impl TrajectoryPoints {
    pub fn with_capacity(horizon: usize, joints: usize) -> Self {
        TrajectoryPoints {
            joints,
            positions: Vec::with_capacity(horizon * joints),
            velocities: Vec::with_capacity(horizon * joints),
            times: Vec::with_capacity(horizon),
        }
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn point(&self, i: usize) -> &[f64] {
        &self.positions[i * self.joints..(i + 1) * self.joints]
    }

    /// Fills from `actions` ([H, A]; step i is meant for `(i + 1) * dt` after the stamp), keeping the steps
    /// from `first` on. `start` is the measured position at the stamp, used for the first point's velocity.
    pub fn fill(&mut self, actions: &[f64], dt: f64, first: usize, start: &[f64]) {
        let a = self.joints;
        let horizon = actions.len() / a;
        self.positions.clear();
        self.times.clear();
        for i in first..horizon {
            self.positions
                .extend_from_slice(&actions[i * a..(i + 1) * a]);
            self.times.push((i + 1) as f64 * dt);
        }
        self.recompute_velocities(actions, dt, first, start);
    }

    /// Central differences over the whole chunk (the dropped steps and the measured start included), zero at
    /// the end as the controller requires.
    pub fn recompute_velocities(&mut self, actions: &[f64], dt: f64, first: usize, start: &[f64]) {
        let a = self.joints;
        let horizon = actions.len() / a;
        let at = |i: isize, j: usize| -> f64 {
            if i < 0 {
                start[j]
            } else {
                actions[i as usize * a + j]
            }
        };
        self.velocities.clear();
        for i in first..horizon {
            for j in 0..a {
                let v = if i + 1 == horizon {
                    0.0
                } else {
                    (at(i as isize + 1, j) - at(i as isize - 1, j)) / (2.0 * dt)
                };
                self.velocities.push(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_start_one_step_ahead_and_velocities_end_at_zero() {
        // Two joints, three steps: joint 0 moves 0.1 per step, joint 1 stays.
        let actions = [0.1, 5.0, 0.2, 5.0, 0.3, 5.0];
        let mut t = TrajectoryPoints::with_capacity(3, 2);
        t.fill(&actions, 0.5, 0, &[0.0, 5.0]);
        assert_eq!(t.times, [0.5, 1.0, 1.5]);
        assert_eq!(t.point(1), &[0.2, 5.0]);
        let v = &t.velocities;
        assert!(
            (v[0] - 0.2).abs() < 1e-12 && (v[2] - 0.2).abs() < 1e-12,
            "{v:?}"
        );
        assert_eq!(&v[4..], &[0.0, 0.0]);
        assert_eq!(v[1], 0.0);
    }

    #[test]
    fn dropped_steps_keep_absolute_times() {
        let actions = [1.0, 2.0, 3.0, 4.0];
        let mut t = TrajectoryPoints::with_capacity(4, 1);
        t.fill(&actions, 0.1, 2, &[0.0]);
        assert_eq!(t.len(), 2);
        assert!((t.times[0] - 0.3).abs() < 1e-12 && (t.times[1] - 0.4).abs() < 1e-12);
        assert_eq!(t.positions, [3.0, 4.0]);
        // Step 2's velocity uses its dropped neighbour.
        assert!((t.velocities[0] - 10.0).abs() < 1e-9);
    }
}

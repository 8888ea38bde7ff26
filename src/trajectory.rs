//! The command plan: what the robot is told to follow, as time-stamped joint positions and velocities.
//!
//! A plan starts at an anchor (where the command stream is when the plan takes over: the previous plan's
//! setpoint, or the measured state) followed by a chunk's future points. The points after the anchor are what a
//! stock joint_trajectory_controller receives (time_from_start strictly increasing, positions and velocities
//! for every joint, zero velocity at the end). Between points the plan is a cubic Hermite spline, the
//! interpolation the controller uses when velocities are given, so streaming mode and the metrics see the
//! same motion the controller produces.

/// Joint-major points (`positions[i * joints + j]`), preallocated for the anchor plus a whole horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandPlan {
    pub joints: usize,
    /// Absolute times (seconds on the node's clock); `times[0]` is the anchor.
    pub times: Vec<f64>,
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
}

impl CommandPlan {
    pub fn with_capacity(horizon: usize, joints: usize) -> Self {
        CommandPlan {
            joints,
            times: Vec::with_capacity(horizon + 1),
            positions: Vec::with_capacity((horizon + 1) * joints),
            velocities: Vec::with_capacity((horizon + 1) * joints),
        }
    }

    /// Number of points, the anchor included.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn clear(&mut self) {
        self.times.clear();
        self.positions.clear();
        self.velocities.clear();
    }

    pub fn position(&self, i: usize) -> &[f64] {
        &self.positions[i * self.joints..(i + 1) * self.joints]
    }

    pub fn velocity(&self, i: usize) -> &[f64] {
        &self.velocities[i * self.joints..(i + 1) * self.joints]
    }

    /// Time of the last point (the plan holds its position after it).
    pub fn end_time(&self) -> Option<f64> {
        self.times.last().copied()
    }

    /// Starts a plan at `time` with the given anchor state.
    pub fn start(&mut self, time: f64, position: &[f64], velocity: &[f64]) {
        self.clear();
        self.push(time, position);
        self.velocities.extend_from_slice(velocity);
    }

    /// Keeps the first `len` points (the anchor included); call [`Self::finish`] again afterwards, since
    /// the new last point must come to rest.
    pub fn truncate(&mut self, len: usize) {
        let a = self.joints;
        self.times.truncate(len);
        self.positions.truncate(len * a);
        self.velocities.truncate(len * a);
    }

    /// A plan that stays at `position` from `time` on.
    pub fn hold(&mut self, time: f64, position: &[f64]) {
        self.clear();
        self.push(time, position);
        self.velocities
            .extend(std::iter::repeat_n(0.0, self.joints));
    }

    /// Appends a point (its velocity is set by [`CommandPlan::finish`]).
    pub fn push(&mut self, time: f64, position: &[f64]) {
        debug_assert_eq!(position.len(), self.joints);
        self.times.push(time);
        self.positions.extend_from_slice(position);
    }

    /// Velocities of the points after the anchor: central differences over the neighbours (non-uniform
    /// spacing, since the anchor is closer to the first point than one step), zero at the end as the
    /// controller requires. The anchor keeps the velocity it was started with.
    pub fn finish(&mut self) {
        let (a, n) = (self.joints, self.times.len());
        self.velocities.truncate(a.min(self.velocities.len()));
        if self.velocities.len() < a && n > 0 {
            self.velocities.resize(a, 0.0);
        }
        for i in 1..n {
            for j in 0..a {
                let v = if i + 1 == n {
                    0.0
                } else {
                    let (t0, t1) = (self.times[i - 1], self.times[i + 1]);
                    (self.positions[(i + 1) * a + j] - self.positions[(i - 1) * a + j]) / (t1 - t0)
                };
                self.velocities.push(v);
            }
        }
    }

    /// Position and velocity at `t`: the anchor before the plan, the last point after it, a cubic Hermite
    /// segment in between. Returns false for an empty plan.
    pub fn sample(&self, t: f64, position: &mut [f64], velocity: &mut [f64]) -> bool {
        let (a, n) = (self.joints, self.times.len());
        if n == 0 {
            return false;
        }
        if t <= self.times[0] {
            position.copy_from_slice(self.position(0));
            velocity.copy_from_slice(self.velocity(0));
            return true;
        }
        if t >= self.times[n - 1] {
            position.copy_from_slice(self.position(n - 1));
            velocity.fill(0.0);
            return true;
        }
        // Plans are short (one horizon): a linear scan is cheaper than anything clever.
        let i = self
            .times
            .windows(2)
            .position(|w| t < w[1])
            .unwrap_or(n - 2);
        let (t0, t1) = (self.times[i], self.times[i + 1]);
        let h = t1 - t0;
        let s = (t - t0) / h;
        let (s2, s3) = (s * s, s * s * s);
        let (h00, h10, h01, h11) = (
            2.0 * s3 - 3.0 * s2 + 1.0,
            s3 - 2.0 * s2 + s,
            -2.0 * s3 + 3.0 * s2,
            s3 - s2,
        );
        let (d00, d10, d01, d11) = (
            (6.0 * s2 - 6.0 * s) / h,
            3.0 * s2 - 4.0 * s + 1.0,
            (-6.0 * s2 + 6.0 * s) / h,
            3.0 * s2 - 2.0 * s,
        );
        for j in 0..a {
            let (p0, p1) = (self.positions[i * a + j], self.positions[(i + 1) * a + j]);
            let (v0, v1) = (self.velocities[i * a + j], self.velocities[(i + 1) * a + j]);
            position[j] = h00 * p0 + h10 * h * v0 + h01 * p1 + h11 * h * v1;
            velocity[j] = d00 * p0 + d10 * v0 + d01 * p1 + d11 * v1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(times: &[f64], positions: &[f64]) -> CommandPlan {
        let mut p = CommandPlan::with_capacity(times.len(), 1);
        p.start(times[0], &positions[..1], &[0.0]);
        for (t, q) in times.iter().zip(positions).skip(1) {
            p.push(*t, &[*q]);
        }
        p.finish();
        p
    }

    #[test]
    fn velocities_are_central_differences_with_zero_at_the_end() {
        let p = plan(&[0.0, 0.05, 0.15, 0.25], &[0.0, 0.1, 0.3, 0.5]);
        // Point 1: (0.3 - 0.0) / (0.15 - 0.0); point 2: (0.5 - 0.1) / 0.2; last: 0.
        assert!((p.velocity(1)[0] - 2.0).abs() < 1e-12);
        assert!((p.velocity(2)[0] - 2.0).abs() < 1e-12);
        assert_eq!(p.velocity(3)[0], 0.0);
        assert_eq!(p.velocity(0)[0], 0.0, "the anchor keeps its own velocity");
    }

    #[test]
    fn sampling_hits_the_points_and_holds_outside() {
        let p = plan(&[1.0, 1.1, 1.2], &[0.0, 0.2, 0.3]);
        let (mut q, mut v) = ([0.0], [0.0]);
        for (t, want) in [(0.5, 0.0), (1.0, 0.0), (1.1, 0.2), (1.2, 0.3), (9.0, 0.3)] {
            assert!(p.sample(t, &mut q, &mut v));
            assert!((q[0] - want).abs() < 1e-12, "q({t}) = {} != {want}", q[0]);
        }
        assert_eq!(v[0], 0.0, "held after the end");
        p.sample(1.1, &mut q, &mut v);
        assert!((v[0] - p.velocity(1)[0]).abs() < 1e-9);
    }

    #[test]
    fn hermite_reproduces_a_straight_line() {
        // Constant velocity 1: anchor velocity 1, interior central differences 1, so inside the first two
        // segments the spline is exactly the line.
        let mut p = CommandPlan::with_capacity(3, 1);
        p.start(0.0, &[0.0], &[1.0]);
        p.push(0.1, &[0.1]);
        p.push(0.2, &[0.2]);
        p.push(0.3, &[0.3]);
        p.finish();
        let (mut q, mut v) = ([0.0], [0.0]);
        p.sample(0.137, &mut q, &mut v);
        assert!((q[0] - 0.137).abs() < 1e-12 && (v[0] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn empty_plan_samples_nothing() {
        let p = CommandPlan::with_capacity(4, 2);
        assert!(!p.sample(0.0, &mut [0.0; 2], &mut [0.0; 2]));
        assert_eq!(p.end_time(), None);
    }
}

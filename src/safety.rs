//! Safety checks every command passes before it reaches a command topic: finite values, position limits,
//! velocity and acceleration limits of the spline the controller will follow, and the jump between the
//! measured state and a plan's first point. Always on, in both output modes.

use crate::config::JointLimits;
use crate::trajectory::CommandPlan;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetyViolation {
    #[error("joint `{joint}` command at point {point} is not finite")]
    NonFinite { joint: String, point: usize },
    #[error("joint `{joint}`: first point is {distance:.3} from the measured position (max_jump {max:.3})")]
    Jump {
        joint: String,
        distance: f64,
        max: f64,
    },
    #[error("joint `{joint}` velocity {value:.3} between points {point} and {} exceeds {max:.3}", point + 1)]
    Velocity {
        joint: String,
        point: usize,
        value: f64,
        max: f64,
    },
    #[error("joint `{joint}` acceleration {value:.3} between points {point} and {} exceeds {max:.3}", point + 1)]
    Acceleration {
        joint: String,
        point: usize,
        value: f64,
        max: f64,
    },
    #[error("joint `{joint}` measured position is not finite")]
    NoMeasurement { joint: String },
    #[error("the plan has no point after its anchor")]
    Empty,
}

impl SafetyViolation {
    /// A velocity or acceleration violation on the segment from the plan's anchor to its first point.
    pub fn is_rate_limit_from_anchor(&self) -> bool {
        matches!(
            self,
            Self::Velocity { point: 0, .. } | Self::Acceleration { point: 0, .. }
        )
    }

    /// The bad-input key of the rule that was violated: one log line per rule, since a jump and a
    /// velocity refusal have different causes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NonFinite { .. } => "safety_rejection_non_finite",
            Self::Jump { .. } => "safety_rejection_jump",
            Self::Velocity { .. } => "safety_rejection_velocity",
            Self::Acceleration { .. } => "safety_rejection_acceleration",
            Self::NoMeasurement { .. } => "safety_rejection_no_measurement",
            Self::Empty => "safety_rejection_empty",
        }
    }
}

/// Limits mapped onto the action joints' order.
pub struct SafetyFilter {
    names: Vec<String>,
    limits: Option<JointLimits>,
}

/// Velocity and acceleration extremes of one cubic Hermite segment, per joint.
struct SegmentPeaks {
    velocity: f64,
    acceleration: f64,
}

/// Exact extremes of the Hermite segment (p0, v0) -> (p1, v1) over `h` seconds: its velocity is quadratic
/// in s = (t - t0) / h, A s^2 + B s + C, and its acceleration (2 A s + B) / h is linear, so the extremes
/// lie at the ends or at the velocity's vertex.
fn segment_peaks(p0: f64, v0: f64, p1: f64, v1: f64, h: f64) -> SegmentPeaks {
    let slope = (p1 - p0) / h;
    let a = -6.0 * slope + 3.0 * v0 + 3.0 * v1;
    let b = 6.0 * slope - 4.0 * v0 - 2.0 * v1;
    let mut velocity = v0.abs().max(v1.abs());
    if a != 0.0 {
        let s = -b / (2.0 * a);
        if s > 0.0 && s < 1.0 {
            velocity = velocity.max((a * s * s + b * s + v0).abs());
        }
    }
    let acceleration = (b / h).abs().max(((2.0 * a + b) / h).abs());
    SegmentPeaks {
        velocity,
        acceleration,
    }
}

impl SafetyFilter {
    /// `limits` follow the action joints' order already.
    pub fn new(names: Vec<String>, limits: Option<JointLimits>) -> Self {
        SafetyFilter { names, limits }
    }

    pub fn limits(&self) -> Option<&JointLimits> {
        self.limits.as_ref()
    }

    /// Checks a plan whose points after the anchor were just pushed: refuses NaN/Inf, clamps positions into
    /// the limits, computes the velocities ([`CommandPlan::finish`]), refuses a first point too far from
    /// `measured`, then checks the velocity and acceleration peaks of every segment. A violation on the
    /// segment from the anchor refuses the plan; one further on cuts the plan before it (the arm follows
    /// the valid part, and the executor replans sooner) instead of discarding a chunk that is mostly
    /// fine. On `Err` the plan must not be used.
    pub fn apply(
        &self,
        measured: &[f64],
        plan: &mut CommandPlan,
    ) -> Result<Checked, SafetyViolation> {
        let a = plan.joints;
        if plan.len() < 2 {
            return Err(SafetyViolation::Empty);
        }
        for (j, q) in measured.iter().enumerate() {
            if !q.is_finite() {
                return Err(SafetyViolation::NoMeasurement {
                    joint: self.names[j].clone(),
                });
            }
        }
        if let Some(k) = plan.positions.iter().position(|p| !p.is_finite()) {
            return Err(SafetyViolation::NonFinite {
                joint: self.names[k % a].clone(),
                point: k / a,
            });
        }
        let mut clamped = 0;
        if let Some(l) = &self.limits {
            for (k, p) in plan.positions.iter_mut().enumerate().skip(a) {
                let j = k % a;
                let c = p.clamp(l.lower[j], l.upper[j]);
                if c != *p {
                    clamped += 1;
                    *p = c;
                }
            }
        }
        plan.finish();
        if let Some(k) = plan.velocities.iter().position(|v| !v.is_finite()) {
            return Err(SafetyViolation::NonFinite {
                joint: self.names[k % a].clone(),
                point: k / a,
            });
        }
        let Some(l) = &self.limits else {
            return Ok(Checked {
                clamped,
                truncated: 0,
            });
        };
        for (j, (p, q)) in plan.position(1).iter().zip(measured).enumerate() {
            let distance = (p - q).abs();
            if distance > l.max_jump {
                return Err(SafetyViolation::Jump {
                    joint: self.names[j].clone(),
                    distance,
                    max: l.max_jump,
                });
            }
        }
        let mut truncated = 0;
        loop {
            match first_limit_violation(&self.names, l, plan) {
                None => return Ok(Checked { clamped, truncated }),
                // The step from the anchor (where the arm is commanded now) to the first point: nothing
                // of this chunk can be commanded.
                Some((0, violation)) => return Err(violation),
                // A later segment: the points before it are commanded, the rest never is. The new
                // last point comes to rest, which changes the segment into it: check again.
                Some((i, _)) => {
                    truncated += plan.len() - (i + 1);
                    plan.truncate(i + 1);
                    plan.finish();
                }
            }
        }
    }

    /// Last line for streamed setpoints (sampled from a checked plan): non-finite values are refused, and
    /// positions clamped into the limits (a spline can overshoot a clamped point slightly).
    pub fn setpoint(
        &self,
        position: &mut [f64],
        velocity: &mut [f64],
    ) -> Result<(), SafetyViolation> {
        if let Some(j) = position
            .iter()
            .chain(velocity.iter())
            .position(|x| !x.is_finite())
        {
            return Err(SafetyViolation::NonFinite {
                joint: self.names[j % position.len()].clone(),
                point: 0,
            });
        }
        if let Some(l) = &self.limits {
            for (j, p) in position.iter_mut().enumerate() {
                *p = p.clamp(l.lower[j], l.upper[j]);
                velocity[j] = velocity[j].clamp(-l.max_velocity[j], l.max_velocity[j]);
            }
        }
        Ok(())
    }
}

/// The first segment of `plan` (index of its start point) whose velocity or acceleration peak
/// exceeds its limit, with the violation.
fn first_limit_violation(
    names: &[String],
    l: &JointLimits,
    plan: &CommandPlan,
) -> Option<(usize, SafetyViolation)> {
    let a = plan.joints;
    for i in 0..plan.len() - 1 {
        let h = plan.times[i + 1] - plan.times[i];
        for j in 0..a {
            let peaks = segment_peaks(
                plan.positions[i * a + j],
                plan.velocities[i * a + j],
                plan.positions[(i + 1) * a + j],
                plan.velocities[(i + 1) * a + j],
                h,
            );
            // A hair of tolerance: a plan sampled from a checked plan must pass again.
            if peaks.velocity > l.max_velocity[j] * (1.0 + 1e-9) {
                let violation = SafetyViolation::Velocity {
                    joint: names[j].clone(),
                    point: i,
                    value: peaks.velocity,
                    max: l.max_velocity[j],
                };
                return Some((i, violation));
            }
            if let Some(max) = l.max_acceleration.as_ref().map(|m| m[j]) {
                if peaks.acceleration > max * (1.0 + 1e-9) {
                    let violation = SafetyViolation::Acceleration {
                        joint: names[j].clone(),
                        point: i,
                        value: peaks.acceleration,
                        max,
                    };
                    return Some((i, violation));
                }
            }
        }
    }
    None
}

/// What [`SafetyFilter::apply`] changed in an accepted plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Position values clamped into the joint limits.
    pub clamped: usize,
    /// Points cut from the end of the plan because a segment into them broke a velocity or
    /// acceleration limit.
    pub truncated: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_acceleration: Option<Vec<f64>>) -> JointLimits {
        JointLimits {
            lower: vec![-1.0, -1.0],
            upper: vec![1.0, 1.0],
            max_velocity: vec![2.0, 2.0],
            max_acceleration,
            max_jump: 0.3,
        }
    }

    fn filter() -> SafetyFilter {
        SafetyFilter::new(vec!["a".into(), "b".into()], Some(limits(None)))
    }

    /// Anchor at t = 0 at `anchor` (at rest), then the points 0.1 s apart.
    fn plan(anchor: [f64; 2], points: &[[f64; 2]]) -> CommandPlan {
        let mut p = CommandPlan::with_capacity(points.len(), 2);
        p.start(0.0, &anchor, &[0.0, 0.0]);
        for (i, q) in points.iter().enumerate() {
            p.push((i + 1) as f64 * 0.1, q);
        }
        p
    }

    #[test]
    fn a_good_plan_passes_unchanged() {
        let mut p = plan([0.0, 0.0], &[[0.05, 0.0], [0.1, 0.0], [0.15, 0.0]]);
        assert_eq!(filter().apply(&[0.0, 0.0], &mut p), Ok(Checked::default()));
        assert_eq!(p.position(3), &[0.15, 0.0]);
        assert_eq!(p.velocity(3), &[0.0, 0.0]);
    }

    #[test]
    fn positions_outside_limits_are_clamped_before_velocities_are_computed() {
        let mut p = plan([0.8, 0.0], &[[0.9, 0.0], [1.05, 0.0], [1.1, 0.0]]);
        let checked = filter().apply(&[0.8, 0.0], &mut p).unwrap();
        assert_eq!(checked.clamped, 2);
        assert!(p.positions.iter().all(|x| (-1.0..=1.0).contains(x)));
        // Point 1's velocity from the clamped neighbour: (1.0 - 0.8) / 0.2.
        assert!((p.velocity(1)[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn nan_jump_velocity_and_measurement_violations_are_refused() {
        let f = filter();
        let mut p = plan([0.0, 0.0], &[[f64::NAN, 0.0], [0.1, 0.0]]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p),
            Err(SafetyViolation::NonFinite { point: 1, .. })
        ));
        let mut p = plan([0.0, 0.0], &[[0.5, 0.0], [0.5, 0.0]]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p),
            Err(SafetyViolation::Jump { .. })
        ));
        // 0.25 per 0.1 s = 2.5 rad/s > 2.0 from the anchor on.
        let mut p = plan([0.0, 0.0], &[[0.25, 0.0], [0.5, 0.0], [0.75, 0.0]]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p),
            Err(SafetyViolation::Velocity { .. })
        ));
        let mut p = plan([0.0, 0.0], &[[0.1, 0.0]]);
        assert!(matches!(
            f.apply(&[f64::INFINITY, 0.0], &mut p),
            Err(SafetyViolation::NoMeasurement { .. })
        ));
        let mut p = plan([0.0, 0.0], &[]);
        assert_eq!(f.apply(&[0.0, 0.0], &mut p), Err(SafetyViolation::Empty));
    }

    #[test]
    fn the_spline_between_points_is_checked_not_only_the_points() {
        // Anchor moving at 1.9 rad/s towards a point that is behind it: every point velocity is within
        // 2.0, but the Hermite segment overshoots and reverses hard.
        let mut p = CommandPlan::with_capacity(2, 2);
        p.start(0.0, &[0.0, 0.0], &[1.9, 0.0]);
        p.push(0.1, &[-0.05, 0.0]);
        p.push(0.2, &[-0.1, 0.0]);
        let f = SafetyFilter::new(
            vec!["a".into(), "b".into()],
            Some(limits(Some(vec![50.0, 50.0]))),
        );
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p),
            Err(SafetyViolation::Acceleration { point: 0, .. })
        ));
    }

    #[test]
    fn acceleration_limit_refuses_a_sudden_start() {
        // From rest to 1.5 rad/s in one 0.1 s step: a Hermite start needs > 20 rad/s^2.
        let accel = Some(vec![10.0, 10.0]);
        let f = SafetyFilter::new(vec!["a".into(), "b".into()], Some(limits(accel)));
        let mut p = plan([0.0, 0.0], &[[0.15, 0.0], [0.3, 0.0], [0.45, 0.0]]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p),
            Err(SafetyViolation::Acceleration { .. })
        ));
        // The same motion without an acceleration limit passes.
        let mut p = plan([0.0, 0.0], &[[0.15, 0.0], [0.3, 0.0], [0.45, 0.0]]);
        assert!(filter().apply(&[0.0, 0.0], &mut p).is_ok());
    }

    #[test]
    fn a_violation_after_the_first_segment_cuts_the_plan_there() {
        let f = filter();
        // 0.5 rad/s, then 0.4 rad in the last 0.1 s step: point 6's velocity (central difference)
        // is 2.25 rad/s > 2.0, so the segment from point 5 to 6 is the first that breaks the limit.
        let pts = [
            [0.05, 0.0],
            [0.1, 0.0],
            [0.15, 0.0],
            [0.2, 0.0],
            [0.25, 0.0],
            [0.3, 0.0],
            [0.7, 0.0],
        ];
        let mut p = plan([0.0, 0.0], &pts);
        let checked = f.apply(&[0.0, 0.0], &mut p).unwrap();
        assert_eq!(checked.truncated, 2);
        assert_eq!(p.len(), 6);
        assert_eq!(p.position(5), &[0.25, 0.0]);
        assert_eq!(p.velocity(5), &[0.0, 0.0], "the cut plan ends at rest");
        // What is left passes the checks as it is.
        assert!(segment_check_passes(&f, &p));
    }

    fn segment_check_passes(f: &SafetyFilter, p: &CommandPlan) -> bool {
        first_limit_violation(&f.names, f.limits.as_ref().unwrap(), p).is_none()
    }

    #[test]
    fn segment_peaks_match_dense_sampling() {
        let (p0, v0, p1, v1, h) = (0.1, 1.3, 0.2, -0.4, 0.1);
        let peaks = segment_peaks(p0, v0, p1, v1, h);
        let mut plan = CommandPlan::with_capacity(1, 1);
        plan.start(0.0, &[p0], &[v0]);
        plan.push(h, &[p1]);
        plan.velocities.push(v1);
        let (mut q, mut v, mut vmax) = ([0.0], [0.0], 0.0f64);
        for k in 0..=10_000 {
            plan.sample(h * k as f64 / 10_000.0, &mut q, &mut v);
            vmax = vmax.max(v[0].abs());
        }
        assert!(
            (peaks.velocity - vmax).abs() < 1e-6,
            "{} vs {vmax}",
            peaks.velocity
        );
    }

    #[test]
    fn setpoints_are_clamped_and_nan_refused() {
        let f = filter();
        let (mut q, mut v) = ([1.2, -0.5], [3.0, 0.0]);
        assert!(f.setpoint(&mut q, &mut v).is_ok());
        assert_eq!((q, v), ([1.0, -0.5], [2.0, 0.0]));
        assert!(f.setpoint(&mut [f64::NAN, 0.0], &mut [0.0, 0.0]).is_err());
    }

    #[test]
    fn without_limits_only_non_finite_values_are_refused() {
        let f = SafetyFilter::new(vec!["a".into(), "b".into()], None);
        let mut p = plan([0.0, 0.0], &[[50.0, 0.0], [100.0, 0.0]]);
        assert_eq!(f.apply(&[0.0, 0.0], &mut p), Ok(Checked::default()));
        let mut p = plan([0.0, 0.0], &[[f64::INFINITY, 0.0]]);
        assert!(f.apply(&[0.0, 0.0], &mut p).is_err());
    }
}

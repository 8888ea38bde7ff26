//! Safety checks every command passes before it reaches a command topic: finite values, position limits,
//! velocity limits, and the jump between the measured state and the chunk's first point.

use crate::config::JointLimits;
use crate::trajectory::TrajectoryPoints;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetyViolation {
    #[error("joint `{joint}` command at step {step} is not finite")]
    NonFinite { joint: String, step: usize },
    #[error("joint `{joint}`: first point is {distance:.3} from the measured position (max_jump {max:.3})")]
    Jump {
        joint: String,
        distance: f64,
        max: f64,
    },
    #[error("joint `{joint}` velocity {value:.3} at step {step} exceeds {max:.3}")]
    Velocity {
        joint: String,
        step: usize,
        value: f64,
        max: f64,
    },
    #[error("joint `{joint}` measured position is not finite")]
    NoMeasurement { joint: String },
}

/// Limits mapped onto the action joints' order.
pub struct SafetyFilter {
    names: Vec<String>,
    limits: Option<JointLimits>,
}

impl SafetyFilter {
    /// `limits` follow the action joints' order already.
    pub fn new(names: Vec<String>, limits: Option<JointLimits>) -> Self {
        SafetyFilter { names, limits }
    }

    /// Clamps positions into the limits (returns how many values were clamped) and refuses the chunk on
    /// NaN/Inf, a jump from `measured`, or a velocity over its limit. Velocities are recomputed by the caller
    /// after clamping through `recompute`.
    pub fn apply(
        &self,
        measured: &[f64],
        points: &mut TrajectoryPoints,
        recompute: impl FnOnce(&mut TrajectoryPoints),
    ) -> Result<usize, SafetyViolation> {
        let a = points.joints;
        for (j, q) in measured.iter().enumerate() {
            if !q.is_finite() {
                return Err(SafetyViolation::NoMeasurement {
                    joint: self.names[j].clone(),
                });
            }
        }
        if let Some(k) = points.positions.iter().position(|p| !p.is_finite()) {
            return Err(SafetyViolation::NonFinite {
                joint: self.names[k % a].clone(),
                step: k / a,
            });
        }
        let mut clamped = 0;
        if let Some(l) = &self.limits {
            for (k, p) in points.positions.iter_mut().enumerate() {
                let j = k % a;
                let c = p.clamp(l.lower[j], l.upper[j]);
                if c != *p {
                    clamped += 1;
                    *p = c;
                }
            }
            if clamped > 0 {
                recompute(points);
            }
            if !points.is_empty() {
                for (j, (p, q)) in points.positions[..a].iter().zip(measured).enumerate() {
                    let distance = (p - q).abs();
                    if distance > l.max_jump {
                        return Err(SafetyViolation::Jump {
                            joint: self.names[j].clone(),
                            distance,
                            max: l.max_jump,
                        });
                    }
                }
            }
            for (k, v) in points.velocities.iter().enumerate() {
                let j = k % a;
                if v.abs() > l.max_velocity[j] {
                    return Err(SafetyViolation::Velocity {
                        joint: self.names[j].clone(),
                        step: k / a,
                        value: *v,
                        max: l.max_velocity[j],
                    });
                }
            }
        }
        if let Some(k) = points.velocities.iter().position(|v| !v.is_finite()) {
            return Err(SafetyViolation::NonFinite {
                joint: self.names[k % a].clone(),
                step: k / a,
            });
        }
        Ok(clamped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> SafetyFilter {
        SafetyFilter::new(
            vec!["a".into(), "b".into()],
            Some(JointLimits {
                lower: vec![-1.0, -1.0],
                upper: vec![1.0, 1.0],
                max_velocity: vec![2.0, 2.0],
                max_jump: 0.3,
            }),
        )
    }

    fn points(actions: &[f64], start: &[f64]) -> TrajectoryPoints {
        let mut t = TrajectoryPoints::with_capacity(actions.len() / 2, 2);
        t.fill(actions, 0.1, 0, start);
        t
    }

    #[test]
    fn a_good_chunk_passes_unchanged() {
        let mut p = points(&[0.1, 0.0, 0.2, 0.0, 0.3, 0.0], &[0.0, 0.0]);
        let before = p.clone();
        assert_eq!(filter().apply(&[0.0, 0.0], &mut p, |_| {}), Ok(0));
        assert_eq!(p, before);
    }

    #[test]
    fn positions_outside_limits_are_clamped_and_velocities_recomputed() {
        let actions = [0.9, 0.0, 1.05, 0.0, 1.1, 0.0];
        let mut p = points(&actions, &[0.8, 0.0]);
        let mut recomputed = false;
        let n = filter()
            .apply(&[0.8, 0.0], &mut p, |pts| {
                recomputed = true;
                let acts = pts.positions.clone();
                pts.recompute_velocities(&acts, 0.1, 0, &[0.8, 0.0]);
            })
            .unwrap();
        assert_eq!(n, 2);
        assert!(recomputed);
        assert!(p.positions.iter().all(|x| (-1.0..=1.0).contains(x)));
    }

    #[test]
    fn nan_jump_and_velocity_violations_are_refused() {
        let f = filter();
        let mut p = points(&[f64::NAN, 0.0, 0.1, 0.0], &[0.0, 0.0]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p, |_| {}),
            Err(SafetyViolation::NonFinite { step: 0, .. })
        ));
        let mut p = points(&[0.5, 0.0, 0.5, 0.0], &[0.0, 0.0]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p, |_| {}),
            Err(SafetyViolation::Jump { .. })
        ));
        // 0.25 per 0.1 s step = 2.5 rad/s > 2.0.
        let mut p = points(&[0.25, 0.0, 0.5, 0.0, 0.75, 0.0], &[0.0, 0.0]);
        assert!(matches!(
            f.apply(&[0.0, 0.0], &mut p, |_| {}),
            Err(SafetyViolation::Velocity { .. })
        ));
        let mut p = points(&[0.1, 0.0], &[0.0, 0.0]);
        assert!(matches!(
            f.apply(&[f64::INFINITY, 0.0], &mut p, |_| {}),
            Err(SafetyViolation::NoMeasurement { .. })
        ));
    }

    #[test]
    fn without_limits_only_non_finite_values_are_refused() {
        let f = SafetyFilter::new(vec!["a".into()], None);
        let mut p = TrajectoryPoints::with_capacity(2, 1);
        p.fill(&[50.0, 100.0], 0.1, 0, &[0.0]);
        assert_eq!(f.apply(&[0.0], &mut p, |_| {}), Ok(0));
        p.fill(&[f64::INFINITY, 100.0], 0.1, 0, &[0.0]);
        assert!(f.apply(&[0.0], &mut p, |_| {}).is_err());
    }
}

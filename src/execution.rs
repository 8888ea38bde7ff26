//! Chunk execution timing: when to start the next inference, and which steps of a finished chunk are still
//! in the future when it is published. Times are seconds on the node's clock, so this runs on a fake clock
//! in tests.

#[derive(Debug, Clone)]
pub struct ChunkSchedule {
    horizon: usize,
    dt: f64,
    /// Fixed threshold, or negative to derive it from latency.
    threshold_s: f64,
    margin_s: f64,
    /// End time of the chunk being executed.
    active_end: Option<f64>,
    last_start: Option<f64>,
}

impl ChunkSchedule {
    pub fn new(horizon: usize, dt: f64, threshold_s: f64, margin_s: f64) -> Self {
        ChunkSchedule {
            horizon,
            dt,
            threshold_s,
            margin_s,
            active_end: None,
            last_start: None,
        }
    }

    pub fn duration(&self) -> f64 {
        self.horizon as f64 * self.dt
    }

    /// The threshold in use: the configured one, or the latency estimate plus the margin.
    pub fn threshold(&self, latency_estimate_s: f64) -> f64 {
        if self.threshold_s >= 0.0 {
            self.threshold_s
        } else {
            latency_estimate_s + self.margin_s
        }
    }

    /// Time left of the active chunk at `now` (0 when none).
    pub fn remaining(&self, now: f64) -> f64 {
        self.active_end.map(|e| (e - now).max(0.0)).unwrap_or(0.0)
    }

    /// Whether to start an inference now: none running, and the active chunk's unexecuted part is below the
    /// threshold. Starts are at least one action step apart so a refused chunk cannot spin the model.
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

    /// Index of the first step of a chunk anchored at `stamp` that is still in the future at `now`
    /// (`horizon` when the whole chunk is past).
    pub fn first_future_step(&self, stamp: f64, now: f64) -> usize {
        let elapsed = now - stamp;
        if elapsed < self.dt {
            return 0;
        }
        // Step i is due at stamp + (i + 1) dt.
        ((elapsed / self.dt).floor() as usize).min(self.horizon)
    }

    pub fn published(&mut self, stamp: f64) {
        self.active_end = Some(stamp + self.duration());
    }

    pub fn clear(&mut self) {
        self.active_end = None;
        self.last_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_when_the_unexecuted_part_falls_below_the_threshold() {
        let mut s = ChunkSchedule::new(10, 0.1, 0.3, 0.0);
        assert!(s.should_start(0.0, false, 0.0));
        assert!(!s.should_start(0.0, true, 0.0));
        s.started(0.0);
        s.published(0.0);
        assert!((s.remaining(0.5) - 0.5).abs() < 1e-12);
        assert!(!s.should_start(0.65, false, 0.0));
        assert!(s.should_start(0.75, false, 0.0));
    }

    #[test]
    fn derived_threshold_follows_latency() {
        let mut s = ChunkSchedule::new(10, 0.1, -1.0, 0.05);
        assert!((s.threshold(0.2) - 0.25).abs() < 1e-12);
        s.started(0.0);
        s.published(0.0);
        assert!(!s.should_start(0.70, false, 0.2));
        assert!(s.should_start(0.80, false, 0.2));
        assert!(!s.should_start(0.80, false, 0.01));
    }

    #[test]
    fn starts_are_spaced_by_one_step() {
        let mut s = ChunkSchedule::new(10, 0.1, 0.3, 0.0);
        s.started(1.0);
        assert!(!s.should_start(1.05, false, 0.0));
        assert!(s.should_start(1.1, false, 0.0));
    }

    #[test]
    fn past_steps_are_dropped_at_publication() {
        let s = ChunkSchedule::new(8, 0.1, 0.3, 0.0);
        assert_eq!(s.first_future_step(10.0, 10.05), 0);
        // At 10.25 steps 0 (10.1) and 1 (10.2) are past; step 2 (10.3) is next.
        assert_eq!(s.first_future_step(10.0, 10.25), 2);
        assert_eq!(s.first_future_step(10.0, 20.0), 8);
    }
}

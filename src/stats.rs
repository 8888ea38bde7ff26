//! Latency and rate statistics for the status topic. Warm-up runs are never recorded: a first inference
//! that builds kernels or engines would otherwise dominate the estimate.

/// The most recent latencies (a fixed window), with percentiles.
pub struct LatencyWindow {
    samples: Vec<f64>,
    sorted: Vec<f64>,
    next: usize,
    filled: usize,
    max_ever: f64,
}

impl LatencyWindow {
    pub fn new(capacity: usize) -> Self {
        LatencyWindow {
            samples: vec![0.0; capacity.max(1)],
            sorted: Vec::with_capacity(capacity.max(1)),
            next: 0,
            filled: 0,
            max_ever: 0.0,
        }
    }

    pub fn record(&mut self, seconds: f64) {
        self.samples[self.next] = seconds;
        self.next = (self.next + 1) % self.samples.len();
        self.filled = (self.filled + 1).min(self.samples.len());
        self.max_ever = self.max_ever.max(seconds);
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Nearest-rank percentile of the window, `p` in [0, 100]; 0 when empty.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if self.filled == 0 {
            return 0.0;
        }
        self.sorted.clear();
        self.sorted.extend_from_slice(&self.samples[..self.filled]);
        self.sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * self.filled as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.filled) - 1]
    }

    pub fn max(&self) -> f64 {
        self.max_ever
    }
}

/// Events per second over a sliding window of event times.
pub struct RateMeter {
    times: Vec<f64>,
    next: usize,
    filled: usize,
}

impl RateMeter {
    pub fn new(capacity: usize) -> Self {
        RateMeter {
            times: vec![0.0; capacity.max(2)],
            next: 0,
            filled: 0,
        }
    }

    pub fn tick(&mut self, now: f64) {
        self.times[self.next] = now;
        self.next = (self.next + 1) % self.times.len();
        self.filled = (self.filled + 1).min(self.times.len());
    }

    /// Rate over the window, as of `now` (events stop counting once they fall out of the window).
    pub fn rate(&self, now: f64) -> f64 {
        if self.filled < 2 {
            return 0.0;
        }
        let n = self.times.len();
        let newest = self.times[(self.next + n - 1) % n];
        let oldest = self.times[(self.next + n - self.filled) % n];
        let span = (now.max(newest) - oldest).max(1e-9);
        (self.filled - 1) as f64 / span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recent_window() {
        let mut w = LatencyWindow::new(4);
        assert_eq!(w.percentile(50.0), 0.0);
        for x in [0.9, 0.1, 0.2, 0.3, 0.4] {
            w.record(x);
        }
        // 0.9 fell out of the window but stays the maximum ever seen.
        assert_eq!(w.percentile(50.0), 0.2);
        assert_eq!(w.percentile(95.0), 0.4);
        assert_eq!(w.max(), 0.9);
    }

    #[test]
    fn rate_counts_intervals() {
        let mut r = RateMeter::new(8);
        for i in 0..5 {
            r.tick(i as f64 * 0.5);
        }
        assert!((r.rate(2.0) - 2.0).abs() < 1e-9);
        // With no new events the rate decays.
        assert!(r.rate(10.0) < 0.5);
    }
}

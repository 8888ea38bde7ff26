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

/// One input stream's health: messages received, the accepted rate, the age of the newest, and the
/// messages missed, estimated from gaps between stamps (sensor_msgs carry no sequence numbers in ROS 2).
pub struct StreamStats {
    pub received: u64,
    pub missed: u64,
    rate: RateMeter,
    last_stamp: Option<f64>,
    /// The stream's period as estimated from its stamps (0 until two have arrived).
    period: f64,
}

/// A gap this many periods long counts the messages that should have been in it as missed.
const GAP_PERIODS: f64 = 1.8;

impl StreamStats {
    pub fn new() -> Self {
        StreamStats {
            received: 0,
            missed: 0,
            rate: RateMeter::new(64),
            last_stamp: None,
            period: 0.0,
        }
    }

    /// A message taken from the subscription, accepted or not.
    pub fn count_received(&mut self) {
        self.received += 1;
    }

    /// An accepted message with its stamp, at `now`.
    pub fn accepted(&mut self, stamp: f64, now: f64) {
        self.rate.tick(now);
        if let Some(last) = self.last_stamp {
            let gap = stamp - last;
            if gap > 0.0 {
                if self.period == 0.0 {
                    self.period = gap;
                } else if gap > GAP_PERIODS * self.period {
                    self.missed += ((gap / self.period).round() as u64).saturating_sub(1);
                } else {
                    // Follows a faster stream quickly, a jittery one slowly.
                    let alpha = if gap < self.period { 0.3 } else { 0.1 };
                    self.period += alpha * (gap - self.period);
                }
            }
        }
        self.last_stamp = Some(stamp);
    }

    /// Forgets the last stamp (the clock jumped: the next gap means nothing).
    pub fn restart(&mut self) {
        self.last_stamp = None;
    }

    pub fn rate(&self, now: f64) -> f64 {
        self.rate.rate(now)
    }

    /// Seconds since the newest accepted stamp (infinite before the first).
    pub fn age(&self, now: f64) -> f64 {
        self.last_stamp.map_or(f64::INFINITY, |s| now - s)
    }
}

impl Default for StreamStats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_stats_count_gaps_as_missed_messages() {
        let mut s = StreamStats::new();
        let mut t = 10.0;
        for _ in 0..30 {
            s.count_received();
            s.accepted(t, t);
            t += 1.0 / 30.0;
        }
        assert_eq!(s.missed, 0);
        // Three frames lost: a gap of four periods.
        t += 3.0 / 30.0;
        s.accepted(t, t);
        assert_eq!(s.missed, 3);
        assert!((s.rate(t) - 30.0).abs() < 3.0, "{}", s.rate(t));
        assert!((s.age(t + 0.5) - 0.5).abs() < 1e-9);
        assert_eq!(s.received, 30);
    }

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

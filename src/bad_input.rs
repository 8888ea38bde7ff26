//! Bad input bookkeeping: every refused message is counted by kind, and logged once per kind at most every
//! few seconds, so a flood of bad messages neither hides nor floods the log.

use std::collections::BTreeMap;

const LOG_PERIOD_S: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Image,
    JointState,
    Instruction,
    Command,
}

#[derive(Default)]
pub struct BadInputLog {
    counts: BTreeMap<&'static str, (Source, u64)>,
    last_logged: BTreeMap<&'static str, (f64, u64)>,
}

impl BadInputLog {
    /// Counts one refused message; returns the number refused since the last log line when this one should
    /// be logged (the first of its kind, or the first after the log period).
    pub fn record(&mut self, source: Source, kind: &'static str, now: f64) -> Option<u64> {
        let entry = self.counts.entry(kind).or_insert((source, 0));
        entry.1 += 1;
        let total = entry.1;
        match self.last_logged.get(kind) {
            Some((t, _)) if now - t < LOG_PERIOD_S => None,
            last => {
                let since = total - last.map(|(_, n)| *n).unwrap_or(0);
                self.last_logged.insert(kind, (now, total));
                Some(since)
            }
        }
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).map(|(_, n)| *n).unwrap_or(0)
    }

    /// Every kind refused so far, with its count.
    pub fn kinds(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().map(|(kind, (_, n))| (*kind, *n))
    }

    pub fn total(&self, source: Source) -> u64 {
        self.counts
            .values()
            .filter(|(s, _)| *s == source)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_kind_per_period_and_counts_everything() {
        let mut log = BadInputLog::default();
        assert_eq!(log.record(Source::Image, "image_encoding", 0.0), Some(1));
        assert_eq!(log.record(Source::Image, "image_encoding", 1.0), None);
        assert_eq!(log.record(Source::Image, "image_step", 1.0), Some(1));
        assert_eq!(log.record(Source::Image, "image_encoding", 2.0), None);
        assert_eq!(log.record(Source::Image, "image_encoding", 6.0), Some(3));
        assert_eq!(
            log.record(Source::JointState, "joint_state_nan", 6.0),
            Some(1)
        );
        assert_eq!(log.count("image_encoding"), 4);
        assert_eq!(log.total(Source::Image), 5);
        assert_eq!(log.total(Source::JointState), 1);
        assert_eq!(log.total(Source::Instruction), 0);
    }
}

//! When a failure that repeats is worth a log line: the first one at once, then at intervals
//! that double up to a cap (a node retrying every few seconds for hours must neither stay
//! silent nor flood the log), and the recovery once. Pure: time comes in as an argument.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct LogGate {
    first: Duration,
    max: Duration,
    /// Failures since the last success.
    failures: u64,
    /// Failures not reported yet.
    unreported: u64,
    next_at: Option<Instant>,
    interval: Duration,
}

impl LogGate {
    /// Reports the first failure, the next after `first`, then at doubling intervals to `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        LogGate {
            first,
            max,
            failures: 0,
            unreported: 0,
            next_at: None,
            interval: first,
        }
    }

    /// A failure at `now`: `Some(n)` when it should be logged, `n` counting the failures since
    /// the last line (this one included).
    pub(crate) fn failed(&mut self, now: Instant) -> Option<u64> {
        self.failures += 1;
        self.unreported += 1;
        if self.next_at.is_some_and(|at| now < at) {
            return None;
        }
        self.next_at = Some(now + self.interval);
        self.interval = (self.interval * 2).min(self.max);
        Some(std::mem::take(&mut self.unreported))
    }

    /// A success: `Some(n)` when it ends a run of `n` failures (worth one line), else `None`.
    pub(crate) fn succeeded(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        self.unreported = 0;
        self.next_at = None;
        self.interval = self.first;
        (failures > 0).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_failure_is_logged_then_ever_more_rarely() {
        let mut g = LogGate::new(Duration::from_secs(1), Duration::from_secs(8));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(g.failed(at(0)), Some(1));
        assert_eq!(g.failed(at(0)), None);
        assert_eq!(g.failed(at(1)), Some(2));
        assert_eq!(g.failed(at(2)), None);
        assert_eq!(g.failed(at(3)), Some(2));
        assert_eq!(g.failed(at(6)), None);
        assert_eq!(g.failed(at(7)), Some(2));
        assert_eq!(g.failed(at(14)), None);
        assert_eq!(g.failed(at(15)), Some(2));
        assert_eq!(g.failed(at(23)), Some(1));
        assert_eq!(g.succeeded(), Some(10));
        assert_eq!(g.succeeded(), None);
        assert_eq!(g.failed(at(23)), Some(1));
    }

    proptest! {
        /// Over any run, lines are at most one per `first` at the start and never fewer than
        /// one per `max` while failures keep coming; every failure is counted in some line
        /// or still pending.
        #[test]
        fn lines_are_bounded_and_count_every_failure(gaps in prop::collection::vec(0u64..5000, 1..200)) {
            let (first, max) = (Duration::from_millis(500), Duration::from_secs(4));
            let mut g = LogGate::new(first, max);
            let mut now = Instant::now();
            let mut reported = 0;
            let mut last_line: Option<Instant> = None;
            for gap in &gaps {
                now += Duration::from_millis(*gap);
                if let Some(n) = g.failed(now) {
                    if let Some(prev) = last_line {
                        prop_assert!(now - prev >= first);
                    }
                    last_line = Some(now);
                    reported += n;
                }
                prop_assert!(last_line.is_some_and(|l| now - l <= max + Duration::from_millis(5000)));
            }
            prop_assert_eq!(reported + g.unreported, gaps.len() as u64);
        }
    }
}

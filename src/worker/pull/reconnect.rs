//! When a client's next connection attempt may start: the per-client backoff that grows to
//! minutes while a host keeps failing the same way, and the worker-wide budget of `ssh`
//! spawns per second in which newly assigned and lately healthy clients go first. Pure: time
//! and jitter come in as arguments; `serve_client` and the puller are the adapters.

use std::time::{Duration, Instant};

/// A client's backoff between connection attempts.
#[derive(Debug, Clone)]
pub(crate) struct ReconnectBackoff {
    base: Duration,
    max: Duration,
    /// The kind of the last failure and how many failures in a row were of that kind.
    streak: Option<(&'static str, u32)>,
    /// Failures since the last successful connection, of any kind.
    failures: u32,
}

/// Failures in a row after which a client no longer counts as "healthy a moment ago".
const STILL_HEALTHY: u32 = 2;

impl ReconnectBackoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        ReconnectBackoff {
            base,
            max: max.max(base),
            streak: None,
            failures: 0,
        }
    }

    /// A connection came up: the next failure starts from `base` again.
    pub(crate) fn connected(&mut self) {
        self.streak = None;
        self.failures = 0;
    }

    /// A failed attempt of `kind`; returns the pause before the next one. The pause doubles
    /// with each failure of the same kind up to `max`; a failure of another kind starts a new
    /// streak (something changed: worth a quick look). `jitter` in `[0, 1)` spreads the pause
    /// over `[d/2, d)` so a fleet does not retry in lockstep.
    pub(crate) fn failed(&mut self, kind: &'static str, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let same = match self.streak {
            Some((k, n)) if k == kind => n.saturating_add(1),
            _ => 1,
        };
        self.streak = Some((kind, same));
        let doubled = self
            .base
            .checked_mul(1u32 << (same - 1).min(20))
            .unwrap_or(self.max)
            .min(self.max);
        doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Whether the next attempt goes first in the spawn budget: a client never tried yet, or
    /// one that was connected a moment ago and failed at most [`STILL_HEALTHY`] - 1 times.
    pub(crate) fn priority(&self) -> Priority {
        if self.failures < STILL_HEALTHY {
            Priority::First
        } else {
            Priority::Retry
        }
    }
}

/// Who an `ssh` spawn is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A newly assigned client, or one that was healthy a moment ago.
    First,
    /// A client that keeps failing: it may use the budget only above the reserve.
    Retry,
}

/// A token bucket of `ssh` spawns for the whole worker, with a reserve only
/// [`Priority::First`] may use.
#[derive(Debug, Clone)]
pub(crate) struct SpawnBudget {
    per_s: f64,
    burst: f64,
    reserve: f64,
    tokens: f64,
    at: Instant,
}

impl SpawnBudget {
    /// `per_s` spawns per second on average, bursts of up to twice that (at least 4), half
    /// of the bucket kept for clients that go first.
    pub(crate) fn new(per_s: u32, now: Instant) -> Self {
        let per_s = f64::from(per_s.max(1));
        let burst = (2.0 * per_s).max(4.0);
        SpawnBudget {
            per_s,
            burst,
            reserve: burst / 2.0,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes one spawn at `now`, or says how long to wait before asking again.
    pub(crate) fn take(&mut self, now: Instant, who: Priority) -> Result<(), Duration> {
        self.refill(now);
        let needed = match who {
            Priority::First => 1.0,
            Priority::Retry => 1.0 + self.reserve,
        };
        if self.tokens >= needed {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (needed - self.tokens) / self.per_s;
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn failures_of_one_kind_grow_to_the_cap_and_another_kind_starts_over() {
        let mut b = ReconnectBackoff::new(Duration::from_millis(250), Duration::from_secs(300));
        // jitter 0.999… ≈ the full pause.
        let full = |b: &mut ReconnectBackoff, kind| b.failed(kind, 0.999_999);
        let first = full(&mut b, "unreachable");
        assert!(first <= Duration::from_millis(250));
        let mut last = first;
        for _ in 0..20 {
            last = full(&mut b, "unreachable");
        }
        assert!(last > Duration::from_secs(290) && last <= Duration::from_secs(300));
        assert!(full(&mut b, "auth") <= Duration::from_millis(250));
        assert_eq!(b.priority(), Priority::Retry);
        b.connected();
        assert_eq!(b.priority(), Priority::First);
        assert!(full(&mut b, "auth") <= Duration::from_millis(250));
        assert_eq!(b.priority(), Priority::First);
        full(&mut b, "auth");
        assert_eq!(b.priority(), Priority::Retry);
    }

    #[test]
    fn retries_leave_the_reserve_to_clients_that_go_first() {
        let t0 = Instant::now();
        let mut budget = SpawnBudget::new(10, t0);
        // 20 tokens, 10 kept: retries get 10 at once, then wait.
        let retries = (0..30)
            .filter(|_| budget.take(t0, Priority::Retry).is_ok())
            .count();
        assert_eq!(retries, 10);
        // Clients that go first still find the reserve.
        for _ in 0..10 {
            assert_eq!(budget.take(t0, Priority::First), Ok(()));
        }
        let wait = budget.take(t0, Priority::First).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(budget.take(t0 + wait, Priority::First).is_ok());
    }

    proptest! {
        /// Over any window, spawns stay within rate × window + burst; and a client that goes
        /// first never waits longer than one token's time while retries hammer the budget.
        #[test]
        fn the_budget_holds_and_first_clients_never_starve(
            per_s in 1u32..50,
            events in prop::collection::vec((0u64..200, any::<bool>()), 1..400),
        ) {
            let t0 = Instant::now();
            let mut budget = SpawnBudget::new(per_s, t0);
            let mut now = t0;
            let mut granted: Vec<Instant> = Vec::new();
            let mut first_in_window: Vec<Instant> = Vec::new();
            for (gap_ms, first) in events {
                now += Duration::from_millis(gap_ms);
                let who = if first { Priority::First } else { Priority::Retry };
                match budget.take(now, who) {
                    Ok(()) => {
                        granted.push(now);
                        if first {
                            first_in_window.push(now);
                        }
                    }
                    Err(wait) => {
                        prop_assert!(wait > Duration::ZERO);
                        if first {
                            // First clients are refused only when they themselves used the
                            // reserve: more than reserve of them within one refill of it.
                            let reserve = budget.reserve;
                            let window = Duration::from_secs_f64(reserve / f64::from(per_s));
                            let recent = first_in_window.iter().filter(|t| now - **t <= window).count();
                            prop_assert!(recent as f64 >= reserve - 1.0 - 1e-6, "first refused after {recent} first grants");
                            prop_assert!(wait <= Duration::from_secs_f64(1.0 / f64::from(per_s)) + Duration::from_millis(1));
                        }
                    }
                }
            }
            // Rate bound over every window starting at a grant.
            let burst = (2.0 * f64::from(per_s)).max(4.0);
            for (i, start) in granted.iter().enumerate() {
                for (j, end) in granted.iter().enumerate().skip(i) {
                    let span = (*end - *start).as_secs_f64();
                    prop_assert!(((j - i + 1) as f64) <= burst + span * f64::from(per_s) + 1e-6);
                }
            }
        }
    }

    #[test]
    fn a_budget_after_a_quiet_spell_holds_one_burst_only() {
        let t0 = Instant::now();
        let mut budget = SpawnBudget::new(5, t0);
        let later = t0 + 3600 * S;
        let n = (0..100)
            .filter(|_| budget.take(later, Priority::First).is_ok())
            .count();
        assert_eq!(n, 10);
    }
}

//! Pure: when the shipper sends, waits or gives up — which queued pieces make one request,
//! whether a partial batch waits for more, the retry schedule (exponential, jittered, a
//! receiver's `Retry-After` honoured), and what an HTTP answer means for the pieces sent.

use std::time::Duration;

/// Which queued pieces go into one request: in queue order, at least one, then while the
/// request stays within `max_samples` and `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taker {
    max_samples: u64,
    max_bytes: u64,
    samples: u64,
    bytes: u64,
    taken: usize,
}

impl Taker {
    pub(crate) fn new(max_samples: u64, max_bytes: u64) -> Self {
        Taker {
            max_samples,
            max_bytes,
            samples: 0,
            bytes: 0,
            taken: 0,
        }
    }

    /// Takes the next piece if it fits (the first always does); false: the request is full.
    pub(crate) fn admit(&mut self, samples: u64, bytes: u64) -> bool {
        let fits =
            self.samples + samples <= self.max_samples && self.bytes + bytes <= self.max_bytes;
        if self.taken > 0 && !fits {
            return false;
        }
        self.samples += samples;
        self.bytes += bytes;
        self.taken += 1;
        true
    }

    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }
}

/// Whether a request of `samples` (its oldest piece queued `age` ago) goes now or waits for
/// more: a full batch goes at once, a partial one once its oldest piece waited `interval`.
pub(crate) fn wait_for_more(
    samples: u64,
    batch_samples: u64,
    age: Duration,
    interval: Duration,
) -> Option<Duration> {
    (samples < batch_samples && age < interval).then(|| interval - age)
}

/// The pause before the next attempt after a failure: doubles from `min` up to `max`, spread
/// over `[d/2, d)` by `jitter` in `[0, 1)` so many workers do not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

/// The longest `Retry-After` obeyed: a receiver asking for more is retried sooner (logged).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// A failed attempt; `retry_after` is the receiver's `Retry-After`, if it said one.
    pub(crate) fn failed(&mut self, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .min
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let pause = doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(asked) => asked.min(MAX_RETRY_AFTER).max(pause),
            None => pause,
        }
    }

    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// What an attempt's answer means for the pieces it carried.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Stored by the receiver: drop them from the queue.
    Sent,
    /// Try again later (network error, 5xx, 429, 408); `after`: the receiver's `Retry-After`.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The receiver refused them for good (4xx): counted, logged, dropped from the queue —
    /// retrying a request the receiver called bad would block every sample behind it.
    Rejected { reason: String },
}

/// Reads an HTTP answer. `body` is the start of the response body (the receiver's reason).
pub(crate) fn classify(status: u16, body: &str, retry_after: Option<&str>) -> Verdict {
    let said = body.trim();
    let reason = if said.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", crate::text::clip(said))
    };
    match status {
        200..=299 => Verdict::Sent,
        408 | 429 | 500..=599 => Verdict::Retry {
            reason,
            after: retry_after.and_then(parse_retry_after),
        },
        400..=499 => Verdict::Rejected { reason },
        // 1xx/3xx: redirects are not followed; a misconfigured URL must not lose samples.
        _ => Verdict::Retry {
            reason: format!("{reason} (redirects are not followed: check remote_write_url)"),
            after: None,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: the backoff applies).
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;

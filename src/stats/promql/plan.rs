//! The plan of a query: which shard buckets to ask every shard for, so that each evaluation
//! window is exactly a union of buckets, and what to compute after the merge.
//!
//! Steps are `t_i = start + i * step` for every `t_i <= end` (Prometheus's range query; an
//! instant query is `start == end`). The window of step `t` is `(t - d, t]`, `d` being the
//! range of `f(sel[d])` or the lookback delta of an instant selector. Timestamps are integer
//! milliseconds, so `(t - d, t] = [t - d + 1, t + 1)`: with shard buckets `[from + k*w, …)` of
//! width `w`, `from = start - d + 1` and `w` dividing both `step` and `d`, every window edge
//! `start + i*step - d + 1` and `start + i*step + 1` is a bucket edge. `w = gcd(step, d)` (or
//! `d` for a single step); for `rate`/`increase` `w` is divided further, when it has a
//! suitable divisor, so a window spans at least [`RATE_MIN_BUCKETS_PER_WINDOW`] buckets
//! (counter resets are seen exactly only between buckets, see [`super::window`]).
//! An instant selector and `last_over_time` read only the newest sample, whose timestamp the
//! partial carries, so their buckets need only end at `t + 1`: `w = step`, and a step reads
//! the buckets of the window rounded up to whole buckets, then checks `last_ts > t - d`.
//!
//! Limits: more than [`MAX_POINTS`] steps (Prometheus's check `(end - start) / step > 11000`)
//! is Prometheus's error; the shard buckets are capped separately by [`MAX_SHARD_BUCKETS`]
//! because `gcd(step, d)` can be much finer than `step` (a shard only sends non-empty buckets,
//! so the cap bounds work, not the answer's size).

use super::Matrix;
use super::eval::{Eval, EvalError, Grid, Steps};
use super::lower::{Leaf, RangeFn, lower};
use crate::stats::partial::{Agg, Fields};
use crate::stats::query::{MAX_POINTS, QueryError, Range, Selector, SeriesPartials};

/// Prometheus's default lookback delta for instant vector selectors.
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Most shard buckets per series one plan may ask for.
pub const MAX_SHARD_BUCKETS: i64 = 16 * MAX_POINTS;

/// `rate`/`increase` try to ask for at least this many buckets per window.
pub const RATE_MIN_BUCKETS_PER_WINDOW: i64 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("parse error: {0}")]
    Parse(String),
    #[error("unsupported in sqd's PromQL subset: {construct}")]
    Unsupported { construct: String },
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("end timestamp must not be before start time")]
    EndBeforeStart,
    #[error("the range duration must be a positive number of milliseconds (got {0})")]
    BadRangeDuration(String),
    #[error("the lookback delta must be positive (got {0} ms)")]
    BadLookback(i64),
    #[error(
        "the query needs {buckets} shard buckets per series (at most {max}): make the step a multiple of the range or the range a multiple of the step"
    )]
    TooManyShardBuckets { buckets: i64, max: i64 },
    #[error("timestamps out of range")]
    TimeOverflow,
}

/// When a query is evaluated: steps `start + i * step <= end`, and the lookback delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryTimes {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub lookback_ms: i64,
}

impl QueryTimes {
    /// A range query (`/api/v1/query_range`) with the default lookback.
    pub fn range(start_ms: i64, end_ms: i64, step_ms: i64) -> Self {
        QueryTimes {
            start_ms,
            end_ms,
            step_ms,
            lookback_ms: DEFAULT_LOOKBACK_MS,
        }
    }

    /// An instant query (`/api/v1/query`) at `t_ms`.
    pub fn instant(t_ms: i64) -> Self {
        QueryTimes::range(t_ms, t_ms, 1)
    }

    /// The number of steps, after Prometheus's checks.
    fn steps(&self) -> Result<i64, PlanError> {
        if self.step_ms <= 0 {
            return Err(QueryError::BadStep(self.step_ms).into());
        }
        if self.end_ms < self.start_ms {
            return Err(PlanError::EndBeforeStart);
        }
        if self.lookback_ms <= 0 {
            return Err(PlanError::BadLookback(self.lookback_ms));
        }
        let span = self
            .end_ms
            .checked_sub(self.start_ms)
            .ok_or(PlanError::TimeOverflow)?;
        if span / self.step_ms > MAX_POINTS {
            return Err(QueryError::TooManyPoints.into());
        }
        Ok(span / self.step_ms + 1)
    }
}

/// What the leader asks every shard for.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub selector: Selector,
    pub shard_range: Range,
}

/// A planned query: ask every shard for `fetch` (none for a bare number), merge the answers
/// with [`crate::stats::query::Merger`], then [`Eval::evaluate`].
#[derive(Debug, Clone)]
pub struct Plan {
    pub fetch: Option<Fetch>,
    pub eval: Eval,
}

impl Plan {
    /// Parses `query` and plans it for `times`.
    pub fn new(query: &str, times: QueryTimes) -> Result<Plan, PlanError> {
        let count = times.steps()?;
        let lowered = lower(query)?;
        let steps = Steps {
            start_ms: times.start_ms,
            step_ms: times.step_ms,
            count,
        };
        let metric = lowered
            .selector
            .as_ref()
            .map(|s| s.metric.clone())
            .unwrap_or_default();
        let (fetch, grid) = match (lowered.node.leaf(), lowered.selector) {
            (Some(leaf), Some(selector)) => {
                let (window_ms, reads) = match leaf {
                    Leaf::Instant => (times.lookback_ms, Reads::Newest),
                    Leaf::Range {
                        func: RangeFn::LastOverTime,
                        range_ms,
                    } => (range_ms, Reads::Newest),
                    Leaf::Range { func, range_ms } if func.is_counter() => {
                        (range_ms, Reads::Counter)
                    }
                    Leaf::Range { range_ms, .. } => (range_ms, Reads::Tiles),
                };
                let (shard_range, reach_ms) = shard_range(&steps, window_ms, reads)?;
                // Shards send only the partial fields the evaluation reads.
                let fields = match (reads, leaf) {
                    (Reads::Newest, _) => Fields::of(Agg::Last),
                    (Reads::Tiles, Leaf::Range { func, .. }) => {
                        func.agg().map_or(Fields::ALL, Fields::of)
                    }
                    _ => Fields::ALL,
                };
                let shard_range = shard_range.needing(fields);
                let grid = Grid {
                    from_ms: shard_range.from_ms,
                    to_ms: shard_range.to_ms,
                    width_ms: shard_range.step_ms,
                    reach_ms,
                    window_ms,
                };
                let fetch = Fetch {
                    selector,
                    shard_range,
                };
                (Some(fetch), Some(grid))
            }
            _ => (None, None),
        };
        Ok(Plan {
            fetch,
            eval: Eval::new(lowered.node, metric, steps, grid),
        })
    }

    /// Evaluates the plan over the merged shard answers (see [`Eval::evaluate`]).
    pub fn evaluate(&self, merged: &[SeriesPartials]) -> Result<Matrix, EvalError> {
        self.eval.evaluate(merged)
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How the leaf reads buckets, which decides their width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Only the newest sample (instant selector, `last_over_time`): any width will do, since
    /// the newest bucket's `last_ts` says whether its sample is inside the window.
    Newest,
    /// A merge of every sample in the window: buckets must tile it exactly.
    Tiles,
    /// As `Tiles`, preferring finer buckets to see counter resets.
    Counter,
}

/// The shard buckets `[start - reach + 1, last_t + 1)` by `width`, and the reach: the span of
/// buckets read per step (the window, rounded up to a whole number of buckets for `Newest`).
fn shard_range(steps: &Steps, window_ms: i64, reads: Reads) -> Result<(Range, i64), PlanError> {
    let base = match (steps.count, reads) {
        (1, _) => window_ms,
        (_, Reads::Newest) => steps.step_ms,
        _ => gcd(steps.step_ms, window_ms),
    };
    let reach_ms = (window_ms + base - 1) / base * base;
    let last_t = steps
        .step_ms
        .checked_mul(steps.count - 1)
        .and_then(|off| steps.start_ms.checked_add(off))
        .ok_or(PlanError::TimeOverflow)?;
    let from_ms = steps
        .start_ms
        .checked_sub(reach_ms)
        .and_then(|t| t.checked_add(1))
        .ok_or(PlanError::TimeOverflow)?;
    let to_ms = last_t.checked_add(1).ok_or(PlanError::TimeOverflow)?;
    let span = to_ms.checked_sub(from_ms).ok_or(PlanError::TimeOverflow)?;
    let width_ms = match reads {
        Reads::Counter => counter_width(base, reach_ms, span),
        _ => base,
    };
    // Exact: span = (count - 1) * step + reach, both multiples of the width.
    let buckets = span / width_ms;
    if buckets > MAX_SHARD_BUCKETS {
        return Err(PlanError::TooManyShardBuckets {
            buckets,
            max: MAX_SHARD_BUCKETS,
        });
    }
    if buckets <= MAX_POINTS {
        return Ok((Range::new(from_ms, to_ms, width_ms)?, reach_ms));
    }
    // Range::new caps buckets at Prometheus's output cap; shard buckets have their own cap
    // (checked above), so the validated fields are filled in directly.
    let range = Range {
        from_ms,
        to_ms,
        step_ms: width_ms,
        fields: Fields::ALL,
    };
    Ok((range, reach_ms))
}

/// A divisor of `base` fine enough that a window of `window_ms` spans at least
/// [`RATE_MIN_BUCKETS_PER_WINDOW`] buckets, if `base` has one within the bucket cap.
fn counter_width(base: i64, window_ms: i64, span: i64) -> i64 {
    let per_window = window_ms / base;
    if per_window >= RATE_MIN_BUCKETS_PER_WINDOW {
        return base;
    }
    let want = (RATE_MIN_BUCKETS_PER_WINDOW + per_window - 1) / per_window;
    (want..=want * 4)
        .filter(|k| base % k == 0)
        .map(|k| base / k)
        .find(|w| span / w <= MAX_SHARD_BUCKETS)
        .unwrap_or(base)
}

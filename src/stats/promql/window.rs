//! One window's value from the merged partials of the shard buckets that tile it, in time
//! order.
//!
//! - instant selector, `last_over_time`: the `last` of the newest bucket, if its `last_ts` is
//!   inside the window (the lookback delta, or the range); exact;
//! - `avg|min|max|sum|count_over_time`: the buckets merged into one [`Partial`], then its
//!   value; exact, because these aggregates are mergeable (`avg` is `sum / count` taken after
//!   the merge, where Prometheus uses an incremental mean: equal up to rounding);
//! - `increase`/`rate`: Prometheus's `extrapolatedRate` with `isCounter`, computed from
//!   partials. The raw increase is `last - first` plus, for every counter reset, the value
//!   before it. A reset *between* two non-empty buckets (`next.first < prev.last`) is seen
//!   exactly, as are the window's first/last samples, their timestamps and the sample count,
//!   which is all the extrapolation needs. A reset *inside* one bucket is not visible in full:
//!   it is detected when the bucket's `last < first`, `min < first` or `max > last`, and then
//!   counted as one reset from the bucket's `max` (exact for one reset whose pre-reset peak is
//!   the bucket's maximum, the common case of a counter restarting from near zero). So the
//!   result equals Prometheus's unless a bucket holds a reset that is undetected (e.g.
//!   `0, 10, 5, 10`), or more than one reset, or a post-reset value above the pre-reset peak.
//!   The planner makes buckets fine (see [`super::plan`]) so buckets rarely hold more than
//!   one sample, and then the result is exactly Prometheus's. Samples with equal timestamps
//!   (possible only if two shards hold one sample twice) count twice in `count`.

use super::lower::RangeFn;
use crate::stats::partial::{Agg, Partial};

/// The newest sample's value among `buckets` (time ordered) if it is inside
/// `(t - window, t]`: the instant selector (window = lookback) and `last_over_time`.
pub fn newest<'a>(
    mut buckets: impl DoubleEndedIterator<Item = &'a Partial>,
    t_ms: i64,
    window_ms: i64,
) -> Option<f64> {
    buckets
        .next_back()
        .filter(|p| p.last_ts > t_ms - window_ms)
        .map(|p| p.last)
}

impl RangeFn {
    /// The bucket aggregation a tiled window merges into; `None` for the counter functions,
    /// which look at every bucket's first and last sample.
    pub fn agg(self) -> Option<Agg> {
        Some(match self {
            RangeFn::AvgOverTime => Agg::Avg,
            RangeFn::MinOverTime => Agg::Min,
            RangeFn::MaxOverTime => Agg::Max,
            RangeFn::SumOverTime => Agg::Sum,
            RangeFn::CountOverTime => Agg::Count,
            // Normally read with `newest`; merging a tiled window gives the same value.
            RangeFn::LastOverTime => Agg::Last,
            RangeFn::Rate | RangeFn::Increase => return None,
        })
    }
}

/// `func` over the window tiled by `buckets` ending at `t_ms`, of length `range_ms`.
pub fn range_fn<'a>(
    func: RangeFn,
    buckets: impl Iterator<Item = &'a Partial>,
    t_ms: i64,
    range_ms: i64,
) -> Option<f64> {
    let Some(agg) = func.agg() else {
        return counter(buckets, t_ms, range_ms, func == RangeFn::Rate);
    };
    let merged = merge_all(buckets)?;
    Some(merged.value(agg))
}

fn merge_all<'a>(mut buckets: impl Iterator<Item = &'a Partial>) -> Option<Partial> {
    let mut merged = *buckets.next()?;
    for p in buckets {
        merged.merge(p);
    }
    Some(merged)
}

/// What `extrapolatedRate` needs from the samples of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterWindow {
    /// `last - first` plus the value before every reset.
    pub increase: f64,
    pub count: u64,
    pub first_ts: i64,
    pub first: f64,
    pub last_ts: i64,
}

/// The estimated reset correction inside one bucket (see the module doc).
pub fn in_bucket_resets(p: &Partial) -> f64 {
    if p.last < p.first || p.min < p.first || p.max > p.last {
        p.max
    } else {
        0.0
    }
}

/// Folds the window's buckets, in time order, into a [`CounterWindow`].
pub fn counter_window<'a>(buckets: impl Iterator<Item = &'a Partial>) -> Option<CounterWindow> {
    let mut acc: Option<(CounterWindow, f64)> = None;
    for p in buckets {
        let inside = p.last - p.first + in_bucket_resets(p);
        acc = Some(match acc {
            None => (
                CounterWindow {
                    increase: inside,
                    count: p.count,
                    first_ts: p.first_ts,
                    first: p.first,
                    last_ts: p.last_ts,
                },
                p.last,
            ),
            Some((mut w, prev_last)) => {
                // The step from the previous bucket's last sample to this one's first.
                w.increase +=
                    p.first - prev_last + if p.first < prev_last { prev_last } else { 0.0 };
                w.increase += inside;
                w.count += p.count;
                w.last_ts = p.last_ts;
                (w, p.last)
            }
        });
    }
    acc.map(|(w, _)| w)
}

/// Prometheus's `extrapolatedRate` for counters over the window `(t - range, t]`.
fn counter<'a>(
    buckets: impl Iterator<Item = &'a Partial>,
    t_ms: i64,
    range_ms: i64,
    is_rate: bool,
) -> Option<f64> {
    let w = counter_window(buckets)?;
    // Prometheus needs two samples; equal timestamps would divide by a zero interval.
    if w.count < 2 || w.last_ts == w.first_ts {
        return None;
    }
    let range_start = t_ms - range_ms;
    let mut to_start = (w.first_ts - range_start) as f64 / 1000.0;
    let mut to_end = (t_ms - w.last_ts) as f64 / 1000.0;
    let sampled = (w.last_ts - w.first_ts) as f64 / 1000.0;
    let average = sampled / (w.count - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    // A counter is not negative: do not extrapolate to before its zero point.
    if w.increase > 0.0 && w.first >= 0.0 {
        let to_zero = sampled * (w.first / w.increase);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(w.increase * factor)
}

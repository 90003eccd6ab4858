//! Test-only brute-force evaluator: the same PromQL semantics computed sample by sample from
//! raw samples, with no buckets and no partials, to check the planner and evaluator against.
//! Written independently of `window`/`eval`, following Prometheus's definitions directly.

use std::collections::BTreeMap;

use super::lower::{AggOp, Grouping, Leaf, Node, RangeFn};
use super::plan::QueryTimes;
use super::{METRIC_NAME_LABEL, Matrix, Series};
use crate::stats::query::Labels;

/// One series' raw samples, sorted by timestamp, timestamps distinct.
#[derive(Debug, Clone)]
pub struct RawSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Prometheus's counter increase without extrapolation: `last - first` plus every value
/// before a reset.
pub fn raw_increase(samples: &[(i64, f64)]) -> f64 {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return 0.0;
    };
    let mut inc = last.1 - first.1;
    for pair in samples.windows(2) {
        if pair[1].1 < pair[0].1 {
            inc += pair[0].1;
        }
    }
    inc
}

/// Prometheus's `extrapolatedRate` (counter) over `(t - range, t]`, from raw samples.
fn extrapolated(samples: &[(i64, f64)], t: i64, range: i64, is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let result = raw_increase(samples);
    let mut to_start = (first.0 - (t - range)) as f64 / 1000.0;
    let mut to_end = (t - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (samples.len() - 1) as f64;
    if to_start >= avg * 1.1 {
        to_start = avg / 2.0;
    }
    if result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= avg * 1.1 {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn over_time(func: RangeFn, w: &[(i64, f64)], t: i64, range: i64) -> Option<f64> {
    if w.is_empty() {
        return None;
    }
    let values = w.iter().map(|s| s.1);
    Some(match func {
        RangeFn::AvgOverTime => values.sum::<f64>() / w.len() as f64,
        RangeFn::SumOverTime => values.sum(),
        RangeFn::CountOverTime => w.len() as f64,
        RangeFn::LastOverTime => w[w.len() - 1].1,
        RangeFn::MinOverTime => {
            values.fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a })
        }
        RangeFn::MaxOverTime => {
            values.fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a })
        }
        RangeFn::Rate => return extrapolated(w, t, range, true),
        RangeFn::Increase => return extrapolated(w, t, range, false),
    })
}

fn steps(times: &QueryTimes) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = times.start_ms;
    while t <= times.end_ms {
        out.push(t);
        t += times.step_ms;
    }
    out
}

/// Evaluates `node` over raw series, one step at a time: an instant vector per step.
pub fn evaluate(node: &Node, metric: &str, data: &[RawSeries], times: &QueryTimes) -> Matrix {
    let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for t in steps(times) {
        for (labels, v) in instant(node, metric, data, times, t) {
            out.entry(labels).or_default().push((t, v));
        }
    }
    out.into_iter()
        .map(|(labels, points)| Series { labels, points })
        .collect()
}

fn instant(
    node: &Node,
    metric: &str,
    data: &[RawSeries],
    times: &QueryTimes,
    t: i64,
) -> Vec<(Labels, f64)> {
    match node {
        Node::Number(v) => vec![(Vec::new(), *v)],
        Node::Leaf(leaf) => data
            .iter()
            .filter_map(|s| {
                let (d, keep_name) = match leaf {
                    Leaf::Instant => (times.lookback_ms, true),
                    Leaf::Range { func, range_ms } => (*range_ms, *func == RangeFn::LastOverTime),
                };
                let w: Vec<(i64, f64)> = s
                    .samples
                    .iter()
                    .copied()
                    .filter(|(ts, _)| *ts > t - d && *ts <= t)
                    .collect();
                let v = match leaf {
                    Leaf::Instant => w.last().map(|s| s.1),
                    Leaf::Range { func, range_ms } => over_time(*func, &w, t, *range_ms),
                }?;
                let mut labels = s.labels.clone();
                if keep_name {
                    labels.push((METRIC_NAME_LABEL.to_owned(), metric.to_owned()));
                    labels.sort();
                }
                Some((labels, v))
            })
            .collect(),
        Node::Filter { inner, op, scalar } => instant(inner, metric, data, times, t)
            .into_iter()
            .filter(|(_, v)| op.holds(*v, *scalar))
            .collect(),
        Node::Aggregate {
            op,
            grouping,
            inner,
        } => {
            let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
            for (labels, v) in instant(inner, metric, data, times, t) {
                let key: Labels = labels
                    .into_iter()
                    .filter(|(k, _)| match grouping {
                        Grouping::By(keep) => keep.iter().any(|l| l == k),
                        Grouping::Without(drop) => {
                            k != METRIC_NAME_LABEL && !drop.iter().any(|l| l == k)
                        }
                    })
                    .collect();
                groups.entry(key).or_default().push(v);
            }
            groups
                .into_iter()
                .map(|(k, vs)| (k, aggregate(*op, &vs)))
                .collect()
        }
    }
}

fn aggregate(op: AggOp, vs: &[f64]) -> f64 {
    let sum: f64 = vs.iter().sum();
    match op {
        AggOp::Sum => sum,
        AggOp::Avg => sum / vs.len() as f64,
        AggOp::Count => vs.len() as f64,
        AggOp::Min => vs
            .iter()
            .fold(f64::NAN, |a, v| if a.is_nan() || *v < a { *v } else { a }),
        AggOp::Max => vs
            .iter()
            .fold(f64::NAN, |a, v| if a.is_nan() || *v > a { *v } else { a }),
    }
}

//! Property tests: random samples split across shards, folded into the plan's shard buckets,
//! merged in chunks and evaluated must answer what the brute-force reference evaluator
//! computes from the raw samples (values equal to 1e-9 relative).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::plan::{Plan, QueryTimes};
use super::reference::{self, RawSeries, raw_increase};
use super::window::{counter_window, in_bucket_resets};
use super::{Matrix, Series};
use crate::stats::partial::Partial;
use crate::stats::query::{Merger, Range, SeriesPartials, fold};

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

pub fn same_matrix(got: &Matrix, want: &Matrix) -> Result<(), String> {
    let labels = |m: &Matrix| m.iter().map(|s| s.labels.clone()).collect::<Vec<_>>();
    if labels(got) != labels(want) {
        return Err(format!("series differ:\n got {got:?}\nwant {want:?}"));
    }
    for (g, w) in got.iter().zip(want) {
        let ts = |s: &Series| s.points.iter().map(|p| p.0).collect::<Vec<_>>();
        if ts(g) != ts(w) {
            return Err(format!("timestamps differ:\n got {g:?}\nwant {w:?}"));
        }
        for (a, b) in g.points.iter().zip(&w.points) {
            if !close(a.1, b.1) {
                return Err(format!("value at {} differs: {} vs {}", a.0, a.1, b.1));
            }
        }
    }
    Ok(())
}

/// Splits every matching series' samples over three shards (by `owners`), folds each shard's
/// share into the plan's buckets, merges the answers one bucket per chunk, and evaluates.
pub fn run_sharded(plan: &Plan, data: &[RawSeries], owners: &[usize]) -> Result<Matrix, String> {
    let mut merger = Merger::default();
    if let Some(fetch) = &plan.fetch {
        for series in data {
            if !fetch
                .selector
                .matches(&fetch.selector.metric, &series.labels)
            {
                continue;
            }
            for shard in 0..3 {
                let mine = series
                    .samples
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| owners[i % owners.len()] == shard)
                    .map(|(_, s)| *s);
                let Some(part) = fold(series.labels.clone(), &fetch.shard_range, mine) else {
                    continue;
                };
                for (b, p) in part.buckets {
                    merger.add(SeriesPartials {
                        labels: part.labels.clone(),
                        buckets: BTreeMap::from([(b, p)]),
                    });
                }
            }
        }
    }
    plan.evaluate(&merger.finish()).map_err(|e| e.to_string())
}

/// Plans `query`, evaluates it sharded and with the reference, and compares.
pub fn check(
    query: &str,
    times: QueryTimes,
    data: &[RawSeries],
    owners: &[usize],
) -> Result<(), String> {
    let plan = Plan::new(query, times).map_err(|e| format!("{query}: {e}"))?;
    let matching: Vec<RawSeries> = match &plan.fetch {
        Some(f) => data
            .iter()
            .filter(|s| f.selector.matches(&f.selector.metric, &s.labels))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let metric = plan
        .fetch
        .as_ref()
        .map_or("", |f| f.selector.metric.as_str());
    let want = reference::evaluate(plan.eval.node(), metric, &matching, &times);
    let got = run_sharded(&plan, data, owners)?;
    same_matrix(&got, &want).map_err(|e| format!("{query} {times:?}: {e}"))
}

fn labels(host: usize, zone: &str) -> Vec<(String, String)> {
    vec![
        ("host".to_owned(), format!("h{host}")),
        ("zone".to_owned(), zone.to_owned()),
    ]
}

/// Gauge series: values are quarter integers, so sums in any order are exact.
fn gauges() -> impl Strategy<Value = Vec<RawSeries>> {
    let series = proptest::collection::btree_map(0i64..20_000, -1600i64..1600, 0..40);
    proptest::collection::vec(series, 1..5).prop_map(|all| {
        all.into_iter()
            .enumerate()
            .map(|(i, m)| RawSeries {
                labels: labels(i, if i % 2 == 0 { "eu" } else { "us" }),
                samples: m.into_iter().map(|(t, v)| (t, v as f64 / 4.0)).collect(),
            })
            .collect()
    })
}

/// Counter series: non-negative increments with occasional resets to a small value, samples
/// at most `max_gap` ms apart (small gaps put several samples, and resets, in one bucket).
fn counters(max_gap: i64) -> impl Strategy<Value = Vec<RawSeries>> {
    let steps = proptest::collection::vec((1..max_gap, 0i64..400, 0u8..10, 0i64..40), 0..40);
    proptest::collection::vec(steps, 1..4).prop_map(|all| {
        all.into_iter()
            .enumerate()
            .map(|(i, steps)| {
                let (mut t, mut v) = (0i64, 0i64);
                let samples = steps
                    .into_iter()
                    .map(|(gap, inc, reset, low)| {
                        t += gap;
                        v = if reset == 0 { low } else { v + inc };
                        (t, v as f64 / 4.0)
                    })
                    .collect();
                RawSeries {
                    labels: labels(i, if i % 2 == 0 { "eu" } else { "us" }),
                    samples,
                }
            })
            .collect()
    })
}

fn times() -> impl Strategy<Value = QueryTimes> {
    (
        0i64..22_000,
        1i64..3_000,
        1i64..40,
        0i64..3_000,
        1i64..8_000,
    )
        .prop_map(|(start, step, count, extra, lookback)| QueryTimes {
            start_ms: start,
            end_ms: start + step * (count - 1) + extra % step,
            step_ms: step,
            lookback_ms: lookback,
        })
}

const OVER_TIME: [&str; 6] = ["avg", "min", "max", "sum", "count", "last"];
const AGGS: [&str; 5] = ["sum", "avg", "min", "max", "count"];
const CMPS: [&str; 6] = [">", ">=", "<", "<=", "==", "!="];

fn gauge_query(kind: usize, f: usize, agg: usize, cmp: usize, d: i64, k: i64) -> String {
    let (f, agg, cmp) = (OVER_TIME[f], AGGS[agg], CMPS[cmp]);
    let k = k as f64 / 4.0;
    match kind {
        0 => "cpu".to_owned(),
        1 => r#"cpu{zone="eu",host=~"h[0-2]"}"#.to_owned(),
        2 => format!("{f}_over_time(cpu[{d}ms])"),
        3 => format!("{agg} by (zone) ({f}_over_time(cpu[{d}ms]))"),
        4 => format!("{agg} without (host) (cpu)"),
        5 => format!("{agg}(cpu{{host!=\"h1\"}})"),
        6 => format!("cpu {cmp} {k}"),
        7 => format!("{k} {cmp} {f}_over_time(cpu[{d}ms])"),
        8 => format!("{agg} by (zone) (cpu) {cmp} {k}"),
        9 => format!("{agg} by (__name__, zone) (cpu {cmp} {k})"),
        10 => format!("{agg} without (zone) ({agg} by (host, zone) (last_over_time(cpu[{d}ms])))"),
        _ => format!("{k}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn gauges_match_the_reference(
        data in gauges(),
        times in times(),
        owners in proptest::collection::vec(0usize..3, 1..50),
        (kind, f, agg, cmp) in (0usize..12, 0usize..6, 0usize..5, 0usize..6),
        d in 1i64..6_000,
        k in -1600i64..1600,
    ) {
        let query = gauge_query(kind, f, agg, cmp, d, k);
        check(&query, times, &data, &owners).map_err(TestCaseError::fail)?;
    }
}

fn counter_query(kind: usize, agg: usize, d: i64) -> String {
    let agg = AGGS[agg];
    match kind {
        0 => format!("rate(c[{d}ms])"),
        1 => format!("increase(c[{d}ms])"),
        2 => format!("{agg} by (zone) (rate(c[{d}ms]))"),
        _ => format!("increase(c{{zone=\"eu\"}}[{d}ms]) > 10"),
    }
}

/// The true reset correction inside each shard bucket equals the partial's estimate.
fn buckets_exact(range: &Range, data: &[RawSeries]) -> bool {
    data.iter().all(|s| {
        let mut per: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        for &(t, v) in &s.samples {
            if let Some(b) = range.bucket(t) {
                per.entry(b).or_default().push((t, v));
            }
        }
        per.values().all(|w| {
            let truth = raw_increase(w) - (w[w.len() - 1].1 - w[0].1);
            let mut p = Partial::of(w[0].0, w[0].1);
            w[1..].iter().for_each(|&(t, v)| p.push(t, v));
            truth == in_bucket_resets(&p)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// When no shard bucket hides a reset (the planner's fine buckets make that the common
    /// case), rate and increase equal Prometheus's, extrapolation included.
    #[test]
    fn counters_match_the_reference(
        data in prop_oneof![counters(1_500), counters(100)],
        times in times(),
        owners in proptest::collection::vec(0usize..3, 1..50),
        (kind, agg) in (0usize..4, 0usize..5),
        d in 1i64..8_000,
    ) {
        let query = counter_query(kind, agg, d);
        let plan = Plan::new(&query, times).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(fetch) = &plan.fetch else { return Err(TestCaseError::fail("no fetch")) };
        if buckets_exact(&fetch.shard_range, &data) {
            check(&query, times, &data, &owners).map_err(TestCaseError::fail)?;
        }
    }

    /// Without extrapolation, the partials' increase of a window is exactly the raw increase
    /// whenever the window's buckets are exact; otherwise it only differs by in-bucket resets.
    #[test]
    fn raw_increase_from_partials(
        data in prop_oneof![counters(1_500), counters(100)],
        width in 6i64..3_000,
    ) {
        let range = Range::new(0, 60_000, width).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for s in &data {
            let Some(part) = fold(s.labels.clone(), &range, s.samples.iter().copied()) else { continue };
            let w = counter_window(part.buckets.values());
            let inside_range: Vec<(i64, f64)> = s.samples.iter().copied().filter(|(t, _)| range.bucket(*t).is_some()).collect();
            let raw = raw_increase(&inside_range);
            let estimated: f64 = part.buckets.values().map(in_bucket_resets).sum();
            let mut truth = 0.0;
            for p in part.buckets.keys() {
                let inside: Vec<(i64, f64)> = s.samples.iter().copied().filter(|(t, _)| range.bucket(*t) == Some(*p)).collect();
                truth += raw_increase(&inside) - (inside[inside.len() - 1].1 - inside[0].1);
            }
            let got = w.map_or(0.0, |w| w.increase);
            prop_assert!(close(got - estimated, raw - truth), "{} {} {} {}", got, estimated, raw, truth);
        }
    }
}

proptest! {
    /// Whatever the steps and window, the buckets a step reads start on the grid, end at
    /// `t + 1`, and (for tiling leaves) start exactly at `t - d + 1`.
    #[test]
    fn every_window_is_a_union_of_grid_buckets(
        times in times(),
        d in 1i64..10_000,
        func in 0usize..8,
    ) {
        let f = ["avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
            "count_over_time", "last_over_time", "rate", "increase"][func];
        let plan = Plan::new(&format!("{f}(x[{d}ms])"), times)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(fetch) = &plan.fetch else { return Err(TestCaseError::fail("no fetch")) };
        let r = &fetch.shard_range;
        let mut t = times.start_ms;
        while t <= times.end_ms {
            prop_assert_eq!((t + 1 - r.from_ms) % r.step_ms, 0, "window end off the grid");
            prop_assert!(t < r.to_ms);
            if f != "last_over_time" {
                prop_assert_eq!((t - d + 1 - r.from_ms) % r.step_ms, 0, "window start off the grid");
                prop_assert!(t - d + 1 >= r.from_ms);
            }
            t += times.step_ms;
        }
    }
}

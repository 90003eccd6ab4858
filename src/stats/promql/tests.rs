//! Unit tests: the supported constructs on hand-made data, label handling, the plan's bucket
//! grid, the points caps, and the typed errors for unsupported constructs.

use super::lower::{AggOp, CmpOp, Grouping, Leaf, Node, RangeFn, lower};
use super::plan::{MAX_SHARD_BUCKETS, Plan, PlanError, QueryTimes};
use super::reference::RawSeries;
use super::tests_props::{check, run_sharded};
use super::{Matrix, ResultKind};
use crate::stats::query::{MAX_POINTS, QueryError};

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn data() -> Vec<RawSeries> {
    vec![
        RawSeries {
            labels: l(&[("host", "a"), ("zone", "eu")]),
            samples: (0..10).map(|i| (i * 10_000, i as f64)).collect(),
        },
        RawSeries {
            labels: l(&[("host", "b"), ("zone", "eu")]),
            samples: (0..10)
                .map(|i| (i * 10_000 + 5_000, 100.0 - i as f64))
                .collect(),
        },
        RawSeries {
            labels: l(&[("host", "c"), ("zone", "us")]),
            samples: (0..10).map(|i| (i * 10_000 + 1, 50.0)).collect(),
        },
    ]
}

fn run(query: &str, times: QueryTimes) -> Matrix {
    let plan = Plan::new(query, times).unwrap_or_else(|e| panic!("{query}: {e}"));
    run_sharded(&plan, &data(), &[0, 1, 2, 1]).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn unsupported(query: &str) -> String {
    match Plan::new(query, QueryTimes::instant(0)) {
        Err(PlanError::Unsupported { construct }) => construct,
        other => panic!("{query}: expected unsupported, got {other:?}"),
    }
}

#[test]
fn instant_selector_keeps_the_name_and_takes_the_last_sample_in_the_lookback() {
    let m = run(r#"cpu{zone="eu"}"#, QueryTimes::instant(42_000));
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].labels,
        l(&[("__name__", "cpu"), ("host", "a"), ("zone", "eu")])
    );
    assert_eq!(m[0].points, vec![(42_000, 4.0)]);
    assert_eq!(m[1].points, vec![(42_000, 97.0)]);
    // Left-open lookback: a sample exactly 5 min old is out.
    let late = QueryTimes::instant(90_000 + 300_000);
    assert!(run(r#"cpu{host="a"}"#, late).is_empty());
    let just = QueryTimes::instant(90_000 + 299_999);
    assert_eq!(run(r#"cpu{host="a"}"#, just)[0].points[0].1, 9.0);
}

#[test]
fn range_functions_drop_the_name_except_last_over_time() {
    let t = QueryTimes::instant(30_000);
    let avg = run(r#"avg_over_time(cpu{host="a"}[30s])"#, t);
    assert_eq!(avg[0].labels, l(&[("host", "a"), ("zone", "eu")]));
    // (0s, 30s] holds 10s, 20s, 30s: 1, 2, 3.
    assert_eq!(avg[0].points, vec![(30_000, 2.0)]);
    let last = run(r#"last_over_time(cpu{host="a"}[30s])"#, t);
    assert_eq!(last[0].labels[0], ("__name__".to_owned(), "cpu".to_owned()));
    let count = run(r#"count_over_time(cpu{host="a"}[30s])"#, t);
    assert_eq!(count[0].points[0].1, 3.0);
}

#[test]
fn aggregations_group_by_and_without() {
    let t = QueryTimes::instant(45_000);
    let by = run("sum by (zone) (cpu)", t);
    assert_eq!(by.len(), 2);
    assert_eq!(by[0].labels, l(&[("zone", "eu")]));
    assert_eq!(by[0].points[0].1, 4.0 + 96.0);
    let without = run("max without (host) (cpu)", t);
    assert_eq!(without[1].labels, l(&[("zone", "us")]));
    assert_eq!(run("count(cpu)", t)[0].labels, l(&[]));
    let named = run("min by (__name__) (cpu)", t);
    assert_eq!(named[0].labels, l(&[("__name__", "cpu")]));
    assert_eq!(named[0].points[0].1, 4.0);
}

#[test]
fn comparisons_filter_and_keep_values() {
    let t = QueryTimes::range(0, 90_000, 10_000);
    let m = run(r#"cpu{host="a"} >= 7"#, t);
    assert_eq!(
        m[0].points,
        vec![(70_000, 7.0), (80_000, 8.0), (90_000, 9.0)]
    );
    let flipped = run(r#"7 <= cpu{host="a"}"#, t);
    assert_eq!(flipped, m);
    assert!(run("cpu > 1000", t).is_empty());
}

#[test]
fn a_number_is_a_scalar_at_every_step() {
    let plan = Plan::new("-2.5", QueryTimes::range(0, 20, 10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.fetch.is_none());
    assert_eq!(plan.eval.result_kind(), ResultKind::Scalar);
    let m = plan.evaluate(&[]).unwrap_or_default();
    assert_eq!(m[0].points, vec![(0, -2.5), (10, -2.5), (20, -2.5)]);
}

#[test]
fn rate_and_increase_match_prometheus_on_a_clean_counter() {
    // A counter rising by 1 every 10 s; (65s, 125s] holds 6 samples 5 s from either edge:
    // Prometheus extrapolates the raw increase 5 by 60/50 to 6, and rate is 6 / 60 s.
    let data = vec![RawSeries {
        labels: l(&[("host", "a")]),
        samples: (0..20).map(|i| (i * 10_000, i as f64 + 100.0)).collect(),
    }];
    let t = QueryTimes::instant(125_000);
    let plan = Plan::new("increase(c[1m])", t).unwrap_or_else(|e| panic!("{e}"));
    let m = run_sharded(&plan, &data, &[0, 1]).unwrap_or_default();
    assert!((m[0].points[0].1 - 6.0).abs() < 1e-9, "{m:?}");
    let plan = Plan::new("rate(c[1m])", t).unwrap_or_else(|e| panic!("{e}"));
    let m = run_sharded(&plan, &data, &[0, 1]).unwrap_or_default();
    assert!((m[0].points[0].1 - 0.1).abs() < 1e-12, "{m:?}");
}

#[test]
fn rate_sees_resets_between_and_inside_buckets() {
    // 10, 20, 30, reset, 5, 15: Prometheus's raw increase is 15 - 10 + 30 = 35.
    let samples = vec![
        (1_000, 10.0),
        (2_000, 20.0),
        (3_000, 30.0),
        (4_000, 5.0),
        (5_000, 15.0),
    ];
    let data = vec![RawSeries {
        labels: l(&[]),
        samples,
    }];
    for (query, times) in [
        ("increase(c[5s])", QueryTimes::instant(5_000)),
        ("increase(c[5s])", QueryTimes::range(5_000, 15_000, 5_000)),
        ("rate(c[2500ms])", QueryTimes::range(0, 10_000, 500)),
    ] {
        check(query, times, &data, &[0, 1, 2]).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn windows_are_unions_of_shard_buckets() {
    let cases = [
        (QueryTimes::range(1_000, 601_000, 60_000), 300_000, 60_000),
        (QueryTimes::range(0, 3_600_000, 3_600_000), 300_000, 300_000),
        (QueryTimes::range(0, 100_000, 15_000), 60_000, 15_000),
        (QueryTimes::instant(1_000_000), 300_000, 300_000),
    ];
    for (times, d, width) in cases {
        let q = format!("sum_over_time(x[{d}ms])");
        let plan = Plan::new(&q, times).unwrap_or_else(|e| panic!("{e}"));
        let Some(f) = plan.fetch else {
            panic!("no fetch")
        };
        assert_eq!(f.shard_range.step_ms, width, "{times:?}");
        assert_eq!(f.shard_range.from_ms, times.start_ms - d + 1);
        let last = times.start_ms + (times.end_ms - times.start_ms) / times.step_ms * times.step_ms;
        assert_eq!(f.shard_range.to_ms, last + 1);
    }
    // rate asks for finer buckets: at least 8 per window when the width allows it.
    let plan = Plan::new("rate(x[1m])", QueryTimes::range(0, 600_000, 60_000));
    let width = plan
        .ok()
        .and_then(|p| p.fetch)
        .map(|f| f.shard_range.step_ms);
    assert_eq!(width, Some(7_500));
}

#[test]
fn the_points_caps() {
    let ok = QueryTimes::range(0, 11_000, 1);
    let q = "sum_over_time(cpu[1ms])";
    assert!(
        Plan::new(q, ok).is_ok(),
        "11,001 steps, as Prometheus allows"
    );
    let grafana = QueryTimes::range(0, 11_000 * 15_000, 15_000);
    assert!(Plan::new("cpu", grafana).is_ok());
    let too_many = QueryTimes::range(0, 11_001, 1);
    let err = Plan::new("cpu", too_many).err();
    assert_eq!(err, Some(PlanError::Query(QueryError::TooManyPoints)));
    assert!(err.is_some_and(|e| e.to_string().contains("11,000 points per timeseries")));
    // Steps within the cap, but gcd(step, d) = 1 ms makes too many shard buckets.
    let fine = QueryTimes::range(0, 10_000 * 1_000, 1_000);
    assert_eq!(
        Plan::new("sum_over_time(x[1001ms])", fine).err(),
        Some(PlanError::TooManyShardBuckets {
            buckets: 10_000 * 1_000 + 1_001,
            max: MAX_SHARD_BUCKETS
        })
    );
    // More shard buckets than MAX_POINTS but within MAX_SHARD_BUCKETS is fine.
    let wide = QueryTimes::range(0, 10_000 * 60_000, 60_000);
    let plan = Plan::new("max_over_time(x[30s])", wide).unwrap_or_else(|e| panic!("{e}"));
    let f = plan.fetch.unwrap_or_else(|| panic!("no fetch"));
    assert!((f.shard_range.to_ms - f.shard_range.from_ms) / f.shard_range.step_ms > MAX_POINTS);
}

#[test]
fn bad_times_are_typed_errors() {
    let e = |t: QueryTimes| Plan::new("cpu", t).err();
    assert_eq!(
        e(QueryTimes::range(0, 10, 0)),
        Some(PlanError::Query(QueryError::BadStep(0)))
    );
    assert_eq!(
        e(QueryTimes::range(10, 0, 1)),
        Some(PlanError::EndBeforeStart)
    );
    let mut t = QueryTimes::instant(0);
    t.lookback_ms = 0;
    assert_eq!(e(t), Some(PlanError::BadLookback(0)));
    assert_eq!(
        e(QueryTimes::instant(i64::MIN)),
        Some(PlanError::TimeOverflow)
    );
}

#[test]
fn the_subset_lowers_to_the_expected_tree() {
    let lowered = lower(r#"sum by (zone) (rate(cpu{host="a"}[5m])) > 3"#);
    let lowered = lowered.unwrap_or_else(|e| panic!("{e}"));
    let want = Node::Filter {
        inner: Box::new(Node::Aggregate {
            op: AggOp::Sum,
            grouping: Grouping::By(vec!["zone".to_owned()]),
            inner: Box::new(Node::Leaf(Leaf::Range {
                func: RangeFn::Rate,
                range_ms: 300_000,
            })),
        }),
        op: CmpOp::Gt,
        scalar: 3.0,
    };
    assert_eq!(lowered.node, want);
    let sel = lowered.selector.unwrap_or_else(|| panic!("no selector"));
    assert_eq!(sel.metric, "cpu");
    assert_eq!(sel.matchers.len(), 1);
    let named = lower(r#"{__name__="cpu", zone!~"eu.*"}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(named.selector.map(|s| s.metric), Some("cpu".to_owned()));
}

#[test]
fn unsupported_constructs_are_named() {
    let cases = [
        ("histogram_quantile(0.9, x)", "function histogram_quantile"),
        ("cpu offset 5m", "offset modifier"),
        ("cpu @ 100", "@ modifier"),
        ("cpu + cpu", "arithmetic operator +"),
        ("cpu > cpu", "comparison > between two vectors"),
        ("cpu and cpu", "set operator and"),
        ("cpu * 2", "arithmetic operator *"),
        ("cpu > bool 2", "bool modifier on >"),
        ("max_over_time(cpu[5m:1m])", "subquery"),
        ("topk(3, cpu)", "aggregation topk"),
        ("stddev(cpu)", "aggregation stddev"),
        ("quantile(0.5, cpu)", "aggregation quantile"),
        (
            "cpu[5m]",
            "range vector selector outside rate/increase/*_over_time",
        ),
        ("-cpu", "unary minus on a vector"),
        (r#"{zone="eu"}"#, "selector without a metric name"),
        (r#"{__name__=~"c.*"}"#, "__name__=~ matcher"),
        ("delta(cpu[5m])", "function delta"),
        ("abs(cpu)", "function abs"),
        (
            r#"label_replace(cpu, "a", "b", "c", "d")"#,
            "function label_replace",
        ),
    ];
    for (query, construct) in cases {
        assert_eq!(unsupported(query), construct, "{query}");
    }
}

#[test]
fn parse_errors_and_bad_regexes_are_typed() {
    for query in ["1 > 2", "sum(1)", r#"cpu{__name__="mem"}"#, "rate(cpu[0s])"] {
        assert!(
            matches!(
                Plan::new(query, QueryTimes::instant(0)),
                Err(PlanError::Parse(_))
            ),
            "{query}"
        );
    }
    assert!(matches!(
        Plan::new(r#"cpu{a=~"(?<x>"}"#, QueryTimes::instant(0)),
        Err(PlanError::Parse(_) | PlanError::Query(QueryError::BadRegex { .. }))
    ));
    assert!(matches!(
        Plan::new("sum(", QueryTimes::instant(0)),
        Err(PlanError::Parse(_))
    ));
    assert!(matches!(
        Plan::new("cpu{", QueryTimes::instant(0)),
        Err(PlanError::Parse(_))
    ));
}

#[test]
fn shards_answering_another_grid_are_refused() {
    let plan = Plan::new("cpu", QueryTimes::instant(1_000_000)).unwrap_or_else(|e| panic!("{e}"));
    let merged = vec![crate::stats::query::SeriesPartials {
        labels: l(&[]),
        buckets: std::collections::BTreeMap::from([(
            5,
            crate::stats::partial::Partial::of(5, 1.0),
        )]),
    }];
    assert!(matches!(
        plan.evaluate(&merged),
        Err(super::EvalError::OffGrid { bucket_ms: 5, .. })
    ));
}

#[test]
fn a_reset_hidden_inside_one_bucket_is_the_documented_difference() {
    use crate::stats::partial::Partial;
    use crate::stats::query::{Range, fold};

    use super::reference::raw_increase;
    use super::window::counter_window;
    // 0, 10, reset, 5, 10 in one bucket: min = first and max = last, so the reset is invisible
    // to the partial; Prometheus's raw increase is 10 + 10 = 20, the partial's is 10.
    let samples = [(1, 0.0), (2, 10.0), (3, 5.0), (4, 10.0)];
    let range = Range::new(0, 100, 100).unwrap_or_else(|e| panic!("{e}"));
    let part = fold(l(&[]), &range, samples).unwrap_or_else(|| panic!("empty"));
    let w = counter_window(part.buckets.values()).unwrap_or_else(|| panic!("empty"));
    assert_eq!((w.increase, raw_increase(&samples)), (10.0, 20.0));
    // One bucket per sample (what the planner aims for) sees it exactly.
    let fine = Range::new(0, 100, 1).unwrap_or_else(|e| panic!("{e}"));
    let part = fold(l(&[]), &fine, samples).unwrap_or_else(|| panic!("empty"));
    let w = counter_window(part.buckets.values()).unwrap_or_else(|| panic!("empty"));
    assert_eq!(w.increase, 20.0);
    // A detected reset (the value drops below the bucket's first) counts from the bucket's max.
    let mut p = Partial::of(1, 50.0);
    [(2, 80.0), (3, 2.0), (4, 7.0)]
        .iter()
        .for_each(|&(t, v)| p.push(t, v));
    assert_eq!(super::window::in_bucket_resets(&p), 80.0);
}

#[test]
fn grafana_like_queries_on_epoch_timestamps() {
    // A 15 s scrape of a counter with one restart, queried like a dashboard does.
    let t0 = 1_764_600_000_000;
    let samples: Vec<(i64, f64)> = (0..400)
        .map(|i| {
            let v = if i < 250 { i * 7 } else { (i - 250) * 7 };
            (t0 + i * 15_000 + 3, v as f64)
        })
        .collect();
    let data = vec![
        RawSeries {
            labels: l(&[("host", "a"), ("zone", "eu")]),
            samples: samples.clone(),
        },
        RawSeries {
            labels: l(&[("host", "b"), ("zone", "eu")]),
            samples: samples.iter().map(|(t, v)| (t + 4_000, v * 2.0)).collect(),
        },
    ];
    let times = QueryTimes::range(t0 + 600_000, t0 + 6_000_000, 60_000);
    for q in [
        "rate(c[1m])",
        "rate(c[5m])",
        "sum by (zone) (increase(c[2m]))",
        "max_over_time(c[30s])",
        "c",
        "avg(c) > 500",
    ] {
        check(q, times, &data, &[0, 1, 2]).unwrap_or_else(|e| panic!("{e}"));
    }
}

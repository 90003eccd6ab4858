//! Protobuf ↔ domain for cluster reads: selectors, partials (f64 as IEEE 754 bits, so merges
//! on either side of the wire are exact), series keys and shard reports. Pure.

use crate::proto;
use crate::stats::cluster::ShardReport;
use std::collections::BTreeMap;

use crate::stats::partial::{Fields, Partial};
use crate::stats::query::{Labels, MatchOp, Matcher, QueryError, Range, Selector, SeriesPartials};
use crate::stats::tsdb::SeriesKey;
use crate::store::rollup::{Counters, Row};

pub(crate) fn selector_to_proto(s: &Selector) -> proto::Selector {
    proto::Selector {
        metric: s.metric.clone(),
        matchers: s
            .matchers
            .iter()
            .map(|m| proto::LabelMatcher {
                name: m.name.clone(),
                op: m.op.as_str().to_owned(),
                value: m.value.clone(),
            })
            .collect(),
    }
}

/// The selector of a request; a bad matcher (a peer's or a caller's mistake) is named.
pub(crate) fn selector_from_proto(s: proto::Selector) -> Result<Selector, QueryError> {
    if s.metric.is_empty() {
        return Err(QueryError::BadMatcher("(no metric name)".into()));
    }
    let matchers = s
        .matchers
        .into_iter()
        .map(|m| {
            let op = match m.op.as_str() {
                "=" => MatchOp::Eq,
                "!=" => MatchOp::Ne,
                "=~" => MatchOp::Re,
                "!~" => MatchOp::NotRe,
                _ => {
                    return Err(QueryError::BadMatcher(format!(
                        "{}{}{}",
                        m.name, m.op, m.value
                    )));
                }
            };
            Matcher::new(&m.name, op, &m.value)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Selector {
        metric: s.metric,
        matchers,
    })
}

/// The range of a request; `fields` as sent (0: every field, from an older peer).
pub(crate) fn range_from_proto(
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    fields: u32,
) -> Result<Range, QueryError> {
    Ok(Range::new(from_ms, to_ms, step_ms)?.needing(Fields::from_bits(fields)))
}

fn labels_to_proto(labels: &Labels) -> Vec<proto::Label> {
    labels
        .iter()
        .map(|(name, value)| proto::Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn labels_from_proto(labels: Vec<proto::Label>) -> Labels {
    let mut out: Labels = labels.into_iter().map(|l| (l.name, l.value)).collect();
    out.sort();
    out
}

/// A shard's or the leader's answer that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("malformed answer: column {column} holds {got} values for {buckets} buckets")]
    Column {
        column: &'static str,
        got: usize,
        buckets: usize,
    },
    #[error("malformed answer: a bucket beyond the asked range")]
    Beyond,
}

/// A series for the wire: packed columns of `range.fields` when `columnar` (the asker named
/// its fields), else every field as `Bucket`s (an asker from before fields existed).
pub(crate) fn partials_to_proto(
    s: SeriesPartials,
    range: &Range,
    columnar: bool,
) -> proto::SeriesPartials {
    let labels = labels_to_proto(&s.labels);
    if columnar {
        return proto::SeriesPartials {
            labels,
            buckets: Vec::new(),
            columns: Some(to_columns(&s.buckets, range)),
        };
    }
    let buckets = s
        .buckets
        .into_iter()
        .map(|(start_ms, p)| proto::Bucket {
            start_ms,
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            first_ts: p.first_ts,
            first: p.first,
            last_ts: p.last_ts,
            last: p.last,
        })
        .collect();
    proto::SeriesPartials {
        labels,
        buckets,
        columns: None,
    }
}

fn to_columns(buckets: &BTreeMap<i64, Partial>, range: &Range) -> proto::Columns {
    let f = range.fields;
    let n = buckets.len();
    let cap = |field| if f.has(field) { n } else { 0 };
    let mut c = proto::Columns {
        gap: Vec::with_capacity(n),
        count: Vec::with_capacity(n),
        sum: Vec::with_capacity(cap(Fields::SUM)),
        min: Vec::with_capacity(cap(Fields::MIN)),
        max: Vec::with_capacity(cap(Fields::MAX)),
        first_offset: Vec::with_capacity(cap(Fields::FIRST)),
        first: Vec::with_capacity(cap(Fields::FIRST)),
        last_offset: Vec::with_capacity(cap(Fields::LAST)),
        last: Vec::with_capacity(cap(Fields::LAST)),
    };
    let mut prev = 0i64;
    for (&start, p) in buckets {
        let number = (start - range.from_ms) / range.step_ms;
        c.gap.push(u32::try_from(number - prev).unwrap_or(u32::MAX));
        prev = number;
        c.count.push(p.count);
        if f.has(Fields::SUM) {
            c.sum.push(p.sum);
        }
        if f.has(Fields::MIN) {
            c.min.push(p.min);
        }
        if f.has(Fields::MAX) {
            c.max.push(p.max);
        }
        if f.has(Fields::FIRST) {
            c.first_offset.push(p.first_ts.saturating_sub(start));
            c.first.push(p.first);
        }
        if f.has(Fields::LAST) {
            c.last_offset.push(p.last_ts.saturating_sub(start));
            c.last.push(p.last);
        }
    }
    c
}

/// A series from the wire, in either shape; fields not sent are neutral ([`Partial::counted`]).
pub(crate) fn partials_from_proto(
    s: proto::SeriesPartials,
    range: &Range,
) -> Result<SeriesPartials, WireError> {
    let labels = labels_from_proto(s.labels);
    let buckets = match s.columns {
        Some(c) => from_columns(c, range)?,
        None => s
            .buckets
            .into_iter()
            .map(|b| {
                let p = Partial {
                    count: b.count,
                    sum: b.sum,
                    min: b.min,
                    max: b.max,
                    first_ts: b.first_ts,
                    first: b.first,
                    last_ts: b.last_ts,
                    last: b.last,
                };
                (b.start_ms, p)
            })
            .collect(),
    };
    Ok(SeriesPartials { labels, buckets })
}

fn from_columns(c: proto::Columns, range: &Range) -> Result<BTreeMap<i64, Partial>, WireError> {
    let n = c.count.len();
    let column = |column: &'static str, got: usize| {
        if got == n || got == 0 {
            Ok(got == n && n > 0)
        } else {
            Err(WireError::Column {
                column,
                got,
                buckets: n,
            })
        }
    };
    if c.gap.len() != n {
        return Err(WireError::Column {
            column: "gap",
            got: c.gap.len(),
            buckets: n,
        });
    }
    let (sum, min, max) = (
        column("sum", c.sum.len())?,
        column("min", c.min.len())?,
        column("max", c.max.len())?,
    );
    let first = column("first", c.first.len())? & column("first_offset", c.first_offset.len())?;
    let last = column("last", c.last.len())? & column("last_offset", c.last_offset.len())?;
    let mut number = 0i64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        number += i64::from(c.gap[i]);
        let start = range
            .step_ms
            .checked_mul(number)
            .and_then(|o| o.checked_add(range.from_ms))
            .filter(|s| *s < range.to_ms)
            .ok_or(WireError::Beyond)?;
        let mut p = Partial::counted(c.count[i]);
        if sum {
            p.sum = c.sum[i];
        }
        if min {
            p.min = c.min[i];
        }
        if max {
            p.max = c.max[i];
        }
        if first {
            p.first_ts = start.saturating_add(c.first_offset[i]);
            p.first = c.first[i];
        }
        if last {
            p.last_ts = start.saturating_add(c.last_offset[i]);
            p.last = c.last[i];
        }
        // A repeated start (gap 0) merges as the map would; gaps are non-negative, so the
        // starts ascend and the map is built in one pass.
        match out.last_mut() {
            Some((s, q)) if *s == start => Partial::merge(q, &p),
            _ => out.push((start, p)),
        }
    }
    Ok(out.into_iter().collect())
}

pub(crate) fn key_to_proto(k: SeriesKey) -> proto::SeriesKey {
    proto::SeriesKey {
        labels: labels_to_proto(&k.labels),
        metric: k.metric,
    }
}

pub(crate) fn key_from_proto(k: proto::SeriesKey) -> SeriesKey {
    SeriesKey {
        metric: k.metric,
        labels: labels_from_proto(k.labels),
    }
}

pub(crate) fn report_to_proto(r: ShardReport) -> proto::ShardReport {
    proto::ShardReport {
        asked: r.asked,
        answered: r.answered,
        failed: r.failed.into_iter().collect(),
        timed_out: r.timed_out,
    }
}

pub(crate) fn report_from_proto(r: proto::ShardReport) -> ShardReport {
    ShardReport {
        asked: r.asked,
        answered: r.answered,
        failed: r.failed.into_iter().collect(),
        timed_out: r.timed_out,
    }
}

pub(crate) fn rollup_row_to_proto(r: Row) -> proto::RollupRow {
    let c = r.counters;
    proto::RollupRow {
        collection: r.collection,
        client: r.client,
        counters: Some(proto::RollupCounters {
            files: c.files,
            bytes: c.bytes,
            samples: c.samples,
            parse_errors: c.parse_errors,
            pull_errors: c.pull_errors,
        }),
    }
}

pub(crate) fn rollup_row_from_proto(r: proto::RollupRow) -> Row {
    let c = r.counters.unwrap_or_default();
    Row {
        collection: r.collection,
        client: r.client,
        counters: Counters {
            files: c.files,
            bytes: c.bytes,
            samples: c.samples,
            parse_errors: c.parse_errors,
            pull_errors: c.pull_errors,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stats::partial::Agg;

    fn series(buckets: BTreeMap<i64, Partial>) -> SeriesPartials {
        SeriesPartials {
            labels: vec![("a".into(), "1".into()), ("b".into(), "".into())],
            buckets,
        }
    }

    proptest! {
        /// Every field of a partial survives the wire bit for bit (NaN and -0.0 included).
        #[test]
        fn partials_round_trip_exactly(
            count in any::<u64>(), bits in proptest::collection::vec(any::<u64>(), 6),
            ts in proptest::collection::vec(any::<i64>(), 3),
        ) {
            let f = |i: usize| f64::from_bits(bits[i]);
            let p = Partial { count, sum: f(0), min: f(1), max: f(2), first_ts: ts[0], first: f(3), last_ts: ts[1], last: f(4) };
            let s = series([(ts[2], p)].into_iter().collect());
            // Bucket messages carry any start; the range only serves the signature.
            let range = Range { from_ms: 0, to_ms: 1, step_ms: 1, fields: Fields::ALL };
            let back = partials_from_proto(partials_to_proto(s.clone(), &range, false), &range)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back.labels, &s.labels);
            let (q, p) = (back.buckets[&ts[2]], s.buckets[&ts[2]]);
            prop_assert_eq!(
                [q.sum, q.min, q.max, q.first, q.last].map(f64::to_bits),
                [p.sum, p.min, p.max, p.first, p.last].map(f64::to_bits)
            );
            prop_assert_eq!((q.count, q.first_ts, q.last_ts), (p.count, p.first_ts, p.last_ts));
        }

        /// Columns of the fields an aggregation needs give it the value every field gives,
        /// bit for bit, also after merging with another shard's columns.
        #[test]
        fn columns_answer_each_aggregation_exactly(
            samples in proptest::collection::vec((0i64..100_000, -1e6f64..1e6, 0usize..2), 1..300),
            step in 1i64..5_000,
        ) {
            let fail = |e: String| TestCaseError::fail(e);
            let range = Range::new(0, 100_000, step).map_err(|e| fail(e.to_string()))?;
            let l: Labels = vec![("a".into(), "1".into())];
            let mut whole = crate::stats::query::Merger::default();
            for shard in 0..2 {
                let mine = samples.iter().filter(|s| s.2 == shard).map(|s| (s.0, s.1));
                if let Some(p) = crate::stats::query::fold(l.clone(), &range, mine) {
                    whole.add(p);
                }
            }
            let whole = whole.finish();
            for agg in Agg::ALL {
                let narrow = range.clone().needing(Fields::of(agg));
                let mut merged = crate::stats::query::Merger::default();
                for shard in 0..2 {
                    let mine = samples.iter().filter(|s| s.2 == shard).map(|s| (s.0, s.1));
                    if let Some(p) = crate::stats::query::fold(l.clone(), &range, mine) {
                        let wire = partials_to_proto(p, &narrow, true);
                        merged.add(partials_from_proto(wire, &narrow).map_err(|e| fail(e.to_string()))?);
                    }
                }
                let merged = merged.finish();
                prop_assert_eq!(merged.len(), whole.len());
                for (m, w) in merged.iter().zip(&whole) {
                    prop_assert_eq!(m.buckets.keys().collect::<Vec<_>>(), w.buckets.keys().collect::<Vec<_>>());
                    for (a, b) in m.buckets.values().zip(w.buckets.values()) {
                        prop_assert_eq!(a.value(agg).to_bits(), b.value(agg).to_bits(), "{}", agg);
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_columns_are_refused() {
        let range = Range::new(0, 100, 10).unwrap_or_else(|e| panic!("{e}"));
        let mut c = proto::Columns {
            gap: vec![0, 1],
            count: vec![1, 1],
            sum: vec![1.0],
            ..Default::default()
        };
        let s = |c: proto::Columns| proto::SeriesPartials {
            labels: Vec::new(),
            buckets: Vec::new(),
            columns: Some(c),
        };
        assert!(matches!(
            partials_from_proto(s(c.clone()), &range),
            Err(WireError::Column { column: "sum", .. })
        ));
        c.sum = vec![1.0, 2.0];
        c.gap = vec![0, 10];
        assert_eq!(
            partials_from_proto(s(c), &range).err(),
            Some(WireError::Beyond)
        );
    }

    #[test]
    fn selectors_round_trip_and_bad_ones_are_named() {
        let s = Selector {
            metric: "cpu".into(),
            matchers: vec![
                Matcher::parse("host=~web-.*").unwrap_or_else(|e| panic!("{e}")),
                Matcher::parse("dc!=x").unwrap_or_else(|e| panic!("{e}")),
            ],
        };
        let back = selector_from_proto(selector_to_proto(&s)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.metric, "cpu");
        assert_eq!(
            back.matchers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            s.matchers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        let mut bad = selector_to_proto(&s);
        bad.matchers[0].op = "~~".into();
        assert!(selector_from_proto(bad).is_err());
    }
}

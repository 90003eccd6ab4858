//! Protobuf ↔ domain for cluster reads: selectors, partials (f64 as IEEE 754 bits, so merges
//! on either side of the wire are exact), series keys and shard reports. Pure.

use crate::proto;
use crate::stats::cluster::ShardReport;
use crate::stats::partial::Partial;
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

pub(crate) fn range_from_proto(
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> Result<Range, QueryError> {
    Range::new(from_ms, to_ms, step_ms)
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

pub(crate) fn partials_to_proto(s: SeriesPartials) -> proto::SeriesPartials {
    proto::SeriesPartials {
        labels: labels_to_proto(&s.labels),
        buckets: s
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
            .collect(),
    }
}

pub(crate) fn partials_from_proto(s: proto::SeriesPartials) -> SeriesPartials {
    SeriesPartials {
        labels: labels_from_proto(s.labels),
        buckets: s
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
    }
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

    proptest! {
        /// Every field of a partial survives the wire bit for bit (NaN and -0.0 included).
        #[test]
        fn partials_round_trip_exactly(
            count in any::<u64>(), bits in proptest::collection::vec(any::<u64>(), 6),
            ts in proptest::collection::vec(any::<i64>(), 3),
        ) {
            let f = |i: usize| f64::from_bits(bits[i]);
            let p = Partial { count, sum: f(0), min: f(1), max: f(2), first_ts: ts[0], first: f(3), last_ts: ts[1], last: f(4) };
            let s = SeriesPartials { labels: vec![("a".into(), "1".into()), ("b".into(), "".into())], buckets: [(ts[2], p)].into_iter().collect() };
            let back = partials_from_proto(partials_to_proto(s.clone()));
            prop_assert_eq!(&back.labels, &s.labels);
            let (q, p) = (back.buckets[&ts[2]], s.buckets[&ts[2]]);
            prop_assert_eq!(
                [q.sum, q.min, q.max, q.first, q.last].map(f64::to_bits),
                [p.sum, p.min, p.max, p.first, p.last].map(f64::to_bits)
            );
            prop_assert_eq!((q.count, q.first_ts, q.last_ts), (p.count, p.first_ts, p.last_ts));
        }
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

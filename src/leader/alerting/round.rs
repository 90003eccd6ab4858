//! One query rule's round as data, pure: the window it reads (one bucket ending now) and the
//! cluster's answer turned into the state machine's [`Answer`] (one value per `by` group,
//! `partial` and the missing shards from the shard report).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::alerts::Answer;
use crate::alerts::rules::Query;
use crate::stats::cluster;
use crate::stats::partial::Partial;
use crate::stats::query::{Labels, QueryError, Range, SeriesPartials};

/// `[now - window, now)` as a single bucket.
pub(crate) fn range(q: &Query, now_ms: i64) -> Result<Range, QueryError> {
    Range::new(now_ms.saturating_sub(q.window_ms), now_ms, q.window_ms)
}

/// How long a round's read may take: a round must end before the next is due, so at most
/// three quarters of `every` (and never more than the cluster read default of 10 s).
pub(crate) fn read_timeout(every_ms: i64) -> Duration {
    let ms = (every_ms.max(0) as u64 * 3 / 4).clamp(200, 10_000);
    Duration::from_millis(ms)
}

/// The rule's values: series grouped by exactly the `by` labels (a series lacking one groups
/// without it), every bucket and series of a group merged, then aggregated.
pub(crate) fn answer(q: &Query, answer: cluster::Answer<Vec<SeriesPartials>>) -> Answer {
    let mut groups: BTreeMap<Labels, Partial> = BTreeMap::new();
    for s in answer.value {
        let labels: Labels = (s.labels.into_iter())
            .filter(|(k, _)| q.by.contains(k))
            .collect();
        for part in s.buckets.into_values() {
            groups
                .entry(labels.clone())
                .and_modify(|p| p.merge(&part))
                .or_insert(part);
        }
    }
    Answer {
        partial: answer.report.partial(),
        missing: answer.report.missing(),
        values: (groups.into_iter())
            .map(|(labels, p)| (labels, p.value(q.agg)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::cluster::ShardReport;
    use crate::stats::partial::Agg;
    use crate::stats::query::Selector;

    fn series(host: &str, core: &str, samples: &[(i64, f64)]) -> SeriesPartials {
        let labels = vec![
            ("core".to_owned(), core.to_owned()),
            ("host".to_owned(), host.to_owned()),
        ];
        let mut buckets = BTreeMap::new();
        for &(ts, v) in samples {
            buckets
                .entry(ts / 1000 * 1000)
                .and_modify(|p: &mut Partial| p.push(ts, v))
                .or_insert_with(|| Partial::of(ts, v));
        }
        SeriesPartials { labels, buckets }
    }

    fn query(by: &[&str]) -> Query {
        Query {
            selector: Selector {
                metric: "cpu".to_owned(),
                matchers: Vec::new(),
            },
            agg: Agg::Avg,
            window_ms: 10_000,
            by: by.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn groups_by_exactly_the_by_labels_and_averages_every_sample() {
        let value = vec![
            series("a", "0", &[(1000, 90.0), (2500, 100.0)]),
            series("a", "1", &[(1200, 80.0)]),
            series("b", "0", &[(1000, 10.0)]),
        ];
        let mut report = ShardReport::default();
        report.timed_out.push("w2".to_owned());
        let a = answer(&query(&["host"]), cluster::Answer { value, report });
        let host = |h: &str| vec![("host".to_owned(), h.to_owned())];
        assert_eq!(a.values.get(&host("a")), Some(&90.0));
        assert_eq!(a.values.get(&host("b")), Some(&10.0));
        assert!(a.partial);
        assert_eq!(a.missing, vec!["w2".to_owned()]);
        let all = answer(
            &query(&[]),
            cluster::Answer {
                value: vec![series("a", "0", &[(1, 1.0)]), series("b", "0", &[(2, 3.0)])],
                report: ShardReport::default(),
            },
        );
        assert_eq!(all.values.get(&Vec::new()), Some(&2.0));
        assert!(!all.partial);
    }

    #[test]
    fn the_window_is_one_bucket_and_the_read_ends_before_the_next_round() {
        let r = range(&query(&[]), 50_000).expect("range");
        assert_eq!((r.from_ms, r.to_ms, r.step_ms), (40_000, 50_000, 10_000));
        assert_eq!(read_timeout(1000), Duration::from_millis(750));
        assert_eq!(read_timeout(60_000), Duration::from_secs(10));
    }
}

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::stats::partial::Agg;
use crate::stats::query::{Merger, fold};

fn labels(pairs: &[(&str, &str)]) -> crate::stats::query::Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The one-shard answer: every sample of every series folded in one place.
fn one_shard(samples: &[(usize, i64, f64)], range: &Range) -> Vec<SeriesPartials> {
    let mut by_series: BTreeMap<usize, Vec<(i64, f64)>> = BTreeMap::new();
    for &(s, ts, v) in samples {
        by_series.entry(s).or_default().push((ts, v));
    }
    let mut out: Vec<SeriesPartials> = by_series
        .into_iter()
        .filter_map(|(s, xs)| fold(labels(&[("s", &s.to_string())]), range, xs))
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

fn close(a: &[SeriesPartials], b: &[SeriesPartials]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        prop_assert_eq!(&x.labels, &y.labels);
        prop_assert_eq!(
            x.buckets.keys().collect::<Vec<_>>(),
            y.buckets.keys().collect::<Vec<_>>()
        );
        for (p, q) in x.buckets.values().zip(y.buckets.values()) {
            for agg in Agg::ALL {
                let (u, v) = (p.value(agg), q.value(agg));
                prop_assert!(
                    (u - v).abs() <= 1e-9 * u.abs().max(v.abs()).max(1.0),
                    "{} {} {}",
                    agg,
                    u,
                    v
                );
            }
        }
    }
    Ok(())
}

proptest! {
    /// Any split of the samples of many series across N shards, each shard's answer cut by
    /// the Chunker at any size, chunks of different shards interleaved in any order, merges
    /// into the one-shard answer.
    #[test]
    fn any_split_and_chunking_merges_to_the_one_shard_answer(
        samples in proptest::collection::vec((0usize..8, 0i64..1_000, -1e3f64..1e3), 1..300),
        owner in proptest::collection::vec(0usize..5, 300),
        shards in 1usize..5,
        max_items in 1usize..4,
        max_bytes in 50usize..2_000,
        order in proptest::collection::vec(0usize..5, 0..400),
        step in 1i64..300,
    ) {
        let range = Range::new(0, 1_000, step).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut queues: Vec<std::collections::VecDeque<Vec<SeriesPartials>>> = Vec::new();
        for shard in 0..shards {
            let mine: Vec<_> = samples.iter().enumerate()
                .filter(|(i, _)| owner[*i] % shards == shard).map(|(_, s)| *s).collect();
            let mut chunker = Chunker::new(max_items, max_bytes);
            let mut q = std::collections::VecDeque::new();
            for s in one_shard(&mine, &range) {
                let n = partials_bytes(&s);
                q.extend(chunker.push(s, n));
            }
            q.extend(chunker.finish());
            queues.push(q);
        }
        let mut merger = Merger::default();
        let mut turns = order.into_iter().chain(std::iter::repeat(0));
        while queues.iter().any(|q| !q.is_empty()) {
            let t = turns.next().unwrap_or(0) % shards;
            let t = (t..t + shards).map(|i| i % shards).find(|i| !queues[*i].is_empty()).unwrap_or(t);
            if let Some(chunk) = queues[t].pop_front() {
                chunk.into_iter().for_each(|s| merger.add(s));
            }
        }
        close(&merger.finish(), &one_shard(&samples, &range))?;
    }

    /// Chunks never exceed the item cap, and only a lone item exceeds the byte cap.
    #[test]
    fn chunks_respect_their_caps(
        sizes in proptest::collection::vec(0usize..500, 0..100),
        max_items in 1usize..10,
        max_bytes in 1usize..1_000,
    ) {
        let mut chunker = Chunker::new(max_items, max_bytes);
        let mut chunks = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            chunks.extend(chunker.push((i, *n), *n));
        }
        chunks.extend(chunker.finish());
        let flat: Vec<usize> = chunks.iter().flatten().map(|(i, _)| *i).collect();
        prop_assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
        for c in &chunks {
            prop_assert!(!c.is_empty() && c.len() <= max_items);
            let bytes: usize = c.iter().map(|(_, n)| n).sum();
            prop_assert!(c.len() == 1 || bytes <= max_bytes, "{:?}", c);
        }
    }
}

#[test]
fn group_by_merges_the_series_of_a_group() {
    let range = Range::new(0, 100, 100).unwrap_or_else(|e| panic!("{e}"));
    let a = fold(
        labels(&[("client", "a"), ("host", "h1")]),
        &range,
        [(1, 1.0), (2, 3.0)],
    );
    let b = fold(
        labels(&[("client", "b"), ("host", "h1")]),
        &range,
        [(5, 5.0)],
    );
    let c = fold(labels(&[("client", "c")]), &range, [(7, 7.0)]);
    let all: Vec<_> = [a, b, c].into_iter().flatten().collect();
    let grouped = group_by(all.clone(), &["host".to_owned()]);
    assert_eq!(grouped.len(), 2);
    assert_eq!(grouped[0].labels, labels(&[]));
    assert_eq!(grouped[1].labels, labels(&[("host", "h1")]));
    let p = grouped[1].buckets[&0];
    assert_eq!(
        (p.value(Agg::Avg), p.value(Agg::Count), p.value(Agg::Last)),
        (3.0, 3.0, 5.0)
    );
    assert_eq!(group_by(all.clone(), &[]), all);
}

#[test]
fn the_report_names_every_shard_that_did_not_answer() {
    let mut t = Tally::new(["w1", "w2", "w3", "w4"].map(String::from));
    t.done(0);
    t.failed(1, "connection refused".into());
    t.done(1); // too late: it failed
    assert!(t.pending(2) && !t.pending(1) && !t.settled());
    let r = t.clone().finish(true);
    assert_eq!(r.asked, ["w1", "w2", "w3", "w4"]);
    assert_eq!(r.answered, ["w1"]);
    assert_eq!(
        r.failed.get("w2").map(String::as_str),
        Some("connection refused")
    );
    assert_eq!(r.timed_out, ["w3", "w4"]);
    assert!(r.partial());
    assert_eq!(r.missing(), ["w2", "w3", "w4"]);
    let r = t.finish(false);
    assert!(
        r.timed_out.is_empty() && r.failed.len() == 3,
        "a vanished reader is a failure"
    );
    let mut t = Tally::new(["w1".to_owned()]);
    t.done(0);
    assert!(t.settled() && !t.finish(false).partial());
}

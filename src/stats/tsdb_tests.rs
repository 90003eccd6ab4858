use proptest::prelude::*;

use super::*;
use crate::stats::partial::Agg;
use crate::stats::query::{Matcher, Merger};

fn open() -> Connection {
    let conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(SCHEMA).unwrap_or_else(|e| panic!("{e}"));
    conn
}

fn key(metric: &str, pairs: &[(&str, &str)]) -> SeriesKey {
    SeriesKey {
        metric: metric.into(),
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn file(series: &[(SeriesKey, &[(i64, f64)])]) -> FileSamples {
    let mut f = FileSamples::default();
    for (k, samples) in series {
        let s = f.series.entry(k.clone()).or_default();
        for &(t, v) in *samples {
            s.push(t, v);
        }
    }
    f
}

const LIMITS: Limits = Limits { max_series: 1_000 };

fn write(
    conn: &mut Connection,
    cache: &mut SeriesCache,
    client: &str,
    f: &FileSamples,
) -> WriteReport {
    let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
    let r = write_file(&tx, cache, client, f, LIMITS).unwrap_or_else(|e| panic!("{e}"));
    tx.commit().unwrap_or_else(|e| panic!("{e}"));
    cache.committed();
    r
}

fn answer(conn: &Connection, metric: &str, wh: &[&str], range: &Range) -> Vec<SeriesPartials> {
    let selector = Selector {
        metric: metric.into(),
        matchers: wh
            .iter()
            .map(|m| Matcher::parse(m).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    };
    let mut out = Vec::new();
    query(conn, &selector, range, |p| {
        out.push(p);
        true
    })
    .unwrap_or_else(|e| panic!("{e}"));
    out
}

#[test]
fn samples_written_with_a_file_are_queried_back_per_bucket() {
    let mut conn = open();
    let mut cache = SeriesCache::default();
    let web1 = key("cpu", &[("client", "c1"), ("host", "web-1")]);
    let web2 = key("cpu", &[("client", "c1"), ("host", "web-2")]);
    let r = write(
        &mut conn,
        &mut cache,
        "c1",
        &file(&[
            (web1.clone(), &[(0, 10.0), (30_000, 20.0), (60_000, 30.0)]),
            (web2, &[(0, 1.0)]),
        ]),
    );
    assert_eq!(
        r,
        WriteReport {
            samples: 4,
            new_series: 2,
            ..Default::default()
        }
    );
    let range = Range::new(0, 120_000, 60_000).unwrap_or_else(|e| panic!("{e}"));
    let got = answer(&conn, "cpu", &["host=web-1"], &range);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, web1.labels);
    let avg: Vec<f64> = got[0].buckets.values().map(|p| p.value(Agg::Avg)).collect();
    assert_eq!(avg, vec![15.0, 30.0]);
    assert_eq!(answer(&conn, "cpu", &["host=~web-.*"], &range).len(), 2);
    assert_eq!(metrics(&conn).unwrap_or_default(), vec!["cpu".to_string()]);
    assert_eq!(series(&conn, None, None).unwrap_or_default().len(), 2);
}

#[test]
fn a_rolled_back_file_leaves_no_samples_and_no_series() {
    let mut conn = open();
    let mut cache = SeriesCache::default();
    {
        let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
        write_file(
            &tx,
            &mut cache,
            "c1",
            &file(&[(key("m", &[]), &[(1, 1.0)])]),
            LIMITS,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        drop(tx);
        cache.rolled_back();
    }
    assert_eq!(cache.len(), 0);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM ts_blocks", [], |r| r.get(0))
        .unwrap_or(-1);
    assert_eq!(n, 0);
    // The same series can be created again afterwards.
    let r = write(
        &mut conn,
        &mut cache,
        "c1",
        &file(&[(key("m", &[]), &[(1, 1.0)])]),
    );
    assert_eq!(r.new_series, 1);
}

#[test]
fn the_series_cap_refuses_new_series_and_says_so() {
    let mut conn = open();
    let mut cache = SeriesCache::default();
    let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
    let f = file(&[
        (key("m", &[("id", "1")]), &[(1, 1.0)]),
        (key("m", &[("id", "2")]), &[(1, 1.0), (2, 2.0)]),
    ]);
    let r = write_file(&tx, &mut cache, "c1", &f, Limits { max_series: 1 })
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.samples, r.over_cap), (1, 2));
    let ingest = client_ingest(&conn, "c1").unwrap_or_default();
    assert_eq!(ingest.over_cap, 2);
    assert!(ingest.last_error.unwrap_or_default().contains("max_series"));
}

#[test]
fn sealing_compresses_keeps_answers_and_refuses_what_is_too_old() {
    let mut conn = open();
    let mut cache = SeriesCache::default();
    let k = key("load", &[("client", "c1")]);
    let hour = 3_600_000;
    for h in 0..6i64 {
        let samples: Vec<(i64, f64)> = (0..360)
            .map(|i| (h * hour + i * 10_000, (i % 17) as f64))
            .collect();
        write(&mut conn, &mut cache, "c1", &file(&[(k.clone(), &samples)]));
    }
    let range = Range::new(0, 6 * hour, 60_000).unwrap_or_else(|e| panic!("{e}"));
    let before = answer(&conn, "load", &[], &range);
    let report = seal(&mut conn, hour).unwrap_or_else(|e| panic!("{e}"));
    cache.invalidate();
    assert!(report.sealed_blocks >= 2, "{report:?}");
    assert_eq!(answer(&conn, "load", &[], &range), before);
    let late = write(
        &mut conn,
        &mut cache,
        "c1",
        &file(&[(k.clone(), &[(5, 1.0), (6 * hour, 2.0)])]),
    );
    assert_eq!((late.samples, late.too_old), (1, 1));
    assert_eq!(client_ingest(&conn, "c1").unwrap_or_default().too_old, 1);
}

#[test]
fn retention_drops_old_blocks_and_empty_series() {
    let mut conn = open();
    let mut cache = SeriesCache::default();
    write(
        &mut conn,
        &mut cache,
        "c1",
        &file(&[
            (key("a", &[]), &[(1, 1.0)]),
            (key("b", &[]), &[(1_000, 1.0)]),
        ]),
    );
    assert_eq!(retain(&mut conn, 500).unwrap_or(0), 1);
    cache.invalidate();
    assert_eq!(metrics(&conn).unwrap_or_default(), vec!["b".to_string()]);
}

proptest! {
    /// Files split across shards and merged answer what one shard holding everything answers,
    /// sealed or not.
    #[test]
    fn any_split_across_shards_answers_like_one_shard(
        samples in proptest::collection::vec((0i64..40_000_000, -1e3f64..1e3, 0usize..3, 0usize..2), 1..150),
        step in 1i64..5_000_000,
        seal_some in any::<bool>(),
    ) {
        let range = Range::new(0, 40_000_000, step.max(4_000)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let keys = [key("m", &[("host", "a")]), key("m", &[("host", "b")])];
        let mut one = open();
        let mut one_cache = SeriesCache::default();
        let mut shards: Vec<(Connection, SeriesCache)> = (0..3).map(|_| (open(), SeriesCache::default())).collect();
        for (t, v, shard, series) in &samples {
            let f = file(&[(keys[*series].clone(), &[(*t, *v)])]);
            write(&mut one, &mut one_cache, "c", &f);
            let (conn, cache) = &mut shards[*shard];
            write(conn, cache, "c", &f);
        }
        if seal_some {
            // Sealing with a window wider than the data refuses nothing.
            seal(&mut one, 50_000_000).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (conn, _) in &mut shards {
                seal(conn, 50_000_000).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        let whole = answer(&one, "m", &[], &range);
        let mut merger = Merger::default();
        for (conn, _) in &shards {
            for p in answer(conn, "m", &[], &range) {
                merger.add(p);
            }
        }
        let merged = merger.finish();
        let mut whole = whole;
        whole.sort_by(|a, b| a.labels.cmp(&b.labels));
        prop_assert_eq!(merged.len(), whole.len());
        for (m, w) in merged.iter().zip(&whole) {
            prop_assert_eq!(m.buckets.keys().collect::<Vec<_>>(), w.buckets.keys().collect::<Vec<_>>());
            for (a, b) in m.buckets.values().zip(w.buckets.values()) {
                for agg in Agg::ALL {
                    let (x, y) = (a.value(agg), b.value(agg));
                    prop_assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0), "{} {} {}", agg, x, y);
                }
            }
        }
    }
}

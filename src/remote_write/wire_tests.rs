use proptest::prelude::*;

use super::*;

fn key(metric: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey {
        metric: metric.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn samples(n: usize, t0: i64) -> Samples {
    let mut s = Samples::default();
    for i in 0..n {
        s.push(t0 + i as i64 * 1000, i as f64 / 3.0);
    }
    s
}

fn decode(p: &[u8]) -> WriteRequest {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(p)
        .unwrap_or_else(|e| panic!("{e}"));
    WriteRequest::decode(raw.as_slice()).unwrap_or_else(|e| panic!("{e}"))
}

fn names(ls: &[Label]) -> Vec<(&str, &str)> {
    ls.iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

#[test]
fn labels_put_name_first_sorted_by_bytes_and_drop_empty_values() {
    let k = key(
        "cpu",
        &[
            ("host", "a"),
            ("Zone", "z"),
            ("empty", ""),
            ("client", "web"),
        ],
    );
    assert_eq!(
        names(&labels(&k)),
        [
            ("Zone", "z"),
            ("__name__", "cpu"),
            ("client", "web"),
            ("host", "a")
        ],
        "uppercase sorts before `__name__`, as Prometheus compares bytes"
    );
}

#[test]
fn invalid_names_are_made_valid_and_the_metric_keeps_its_name() {
    let k = key(
        "disk.used:bytes",
        &[
            ("9lives", "x"),
            ("a-b", "y"),
            ("__name__", "other"),
            ("a_b", "z"),
        ],
    );
    assert_eq!(
        names(&labels(&k)),
        [
            ("__name__", "disk_used:bytes"),
            ("_lives", "x"),
            ("a_b", "y")
        ],
        "`:` stays in metrics only; the first of two names made equal wins; __name__ is the metric"
    );
}

#[test]
fn a_write_request_encodes_as_the_remote_write_proto() {
    // Hand-checked bytes of WriteRequest{timeseries:[{labels:[{a,b}], samples:[{1.0, 2}]}]}.
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label {
                name: "a".into(),
                value: "b".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 2,
            }],
        }],
    };
    let sample = [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x02];
    let label = [0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
    let mut series = vec![0x0a, label.len() as u8];
    series.extend_from_slice(&label);
    series.extend_from_slice(&[0x12, sample.len() as u8]);
    series.extend_from_slice(&sample);
    let mut want = vec![0x0a, series.len() as u8];
    want.extend_from_slice(&series);
    assert_eq!(req.encode_to_vec(), want);
}

#[test]
fn a_long_series_spans_pieces_of_at_most_n_samples() {
    let series = vec![
        (key("b", &[("client", "c")]), samples(7, 0)),
        (key("a", &[("client", "c")]), samples(3, 0)),
    ];
    let ps = pieces(&series, 4);
    assert_eq!(ps.iter().map(|p| p.samples).collect::<Vec<_>>(), [4, 4, 2]);
    let first = decode(&ps[0].snappy);
    assert_eq!(first.timeseries.len(), 2, "a's 3 samples, then 1 of b");
    assert_eq!(first.timeseries[0].labels[0].value, "a", "key order");
    assert_eq!(first.timeseries[1].samples.len(), 1);
    assert!(pieces(&[], 4).is_empty());
}

#[test]
fn joined_pieces_are_one_request_with_every_series() {
    let series = vec![
        (key("a", &[]), samples(5, 0)),
        (key("b", &[]), samples(5, 100)),
    ];
    let ps = pieces(&series, 3);
    let bodies: Vec<Vec<u8>> = ps.iter().map(|p| p.snappy.clone()).collect();
    let joined = decode(&join(&bodies).unwrap_or_else(|e| panic!("{e}")));
    let total: usize = joined.timeseries.iter().map(|t| t.samples.len()).sum();
    assert_eq!(total, 10);
    assert_eq!(
        join(&bodies[..1]).unwrap_or_else(|e| panic!("{e}")),
        bodies[0],
        "one piece goes as it is"
    );
    assert!(join(&[b"not snappy".to_vec()]).is_err());
    assert!(join(&[bodies[0].clone(), b"\xff\xff\xff\xff".to_vec()]).is_err());
}

proptest! {
    /// Any series and any piece size: every sample exactly once, in its series' order, and
    /// no piece over the size.
    #[test]
    fn pieces_carry_every_sample_once(
        lens in proptest::collection::vec(0usize..40, 0..6),
        max in 1usize..50,
    ) {
        let series: Vec<(SeriesKey, Samples)> = lens
            .iter()
            .enumerate()
            .map(|(i, n)| (key(&format!("m{i}"), &[("client", "c")]), samples(*n, i as i64)))
            .collect();
        let ps = pieces(&series, max);
        let mut got: Vec<(String, i64, f64)> = Vec::new();
        for p in &ps {
            prop_assert!(p.samples as usize <= max && p.samples > 0);
            let req = decode(&p.snappy);
            let n: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
            prop_assert_eq!(n as u64, p.samples);
            for t in req.timeseries {
                let name = t.labels.iter().find(|l| l.name == "__name__").map(|l| l.value.clone());
                for s in t.samples {
                    got.push((name.clone().unwrap_or_default(), s.timestamp, s.value));
                }
            }
        }
        let mut want: Vec<(String, i64, f64)> = Vec::new();
        let mut ordered: Vec<_> = series.iter().collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, s) in ordered {
            for (t, v) in s.ts.iter().zip(&s.vals) {
                want.push((k.metric.clone(), *t, *v));
            }
        }
        prop_assert_eq!(got, want);
    }
}

//! Property tests: no input panics; generated valid lines parse back exactly.

use super::super::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use std::collections::BTreeMap;

const FORMATS: [Format; 6] = [
    Format::Auto,
    Format::Influx,
    Format::Prom,
    Format::Jsonl,
    Format::Csv,
    Format::None,
];

fn check_report(bytes: &[u8], format: Format, opts: &ParseOptions) -> Result<(), TestCaseError> {
    let mut sink = CollectSink::default();
    let r = parse(format, bytes, opts, &mut sink);
    prop_assert_eq!(r.samples, sink.samples.len() as u64);
    prop_assert_eq!(r.errors, r.errors_by_kind.iter().sum::<u64>());
    prop_assert!(r.errors <= r.lines);
    prop_assert_eq!(r.first_error.is_some(), r.errors > 0);
    for s in &sink.samples {
        prop_assert!(is_valid(&s.metric, NameKind::Metric));
        prop_assert!(s.labels.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(s.labels.iter().all(|(n, _)| is_valid(n, NameKind::Label)));
    }
    Ok(())
}

/// Bytes biased toward the syntax of the formats, so that deep paths are reached.
fn syntaxy() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: [&[u8]; 29] = [
        b"\n",
        b" ",
        b",",
        b"=",
        b"{",
        b"}",
        b"\"",
        b"\\",
        b"#",
        b"# TYPE ",
        b"i",
        b"u",
        b"1",
        b"-9",
        b"1e309",
        b"NaN",
        b"+Inf",
        b".",
        b"\r\n",
        b"\xff",
        b"\xef\xbb\xbf",
        b"cpu",
        b"ts",
        b":",
        b"[]",
        b"true",
        b"epoch",
        b"1764633600",
        b"2025-12-02T00:00:00Z",
    ];
    let piece = proptest::sample::select(&PIECES[..]);
    vec(piece, 0..60).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_never_panic(bytes in vec(any::<u8>(), 0..400), name in vec(any::<u8>(), 0..20)) {
        let mut opts = ParseOptions::new("c", 0);
        opts.file_name = name;
        opts.max_line_bytes = 64;
        for f in FORMATS {
            check_report(&bytes, f, &opts)?;
        }
    }

    #[test]
    fn syntax_soup_never_panics(bytes in syntaxy(), strict in any::<bool>(), labels in any::<bool>()) {
        let mut opts = ParseOptions::new("c", 0);
        opts.strict_last_line = strict;
        if labels {
            opts.label_fields = Some(vec!["cpu".into(), "ts".into()]);
            opts.time_field = Some("epoch".into());
        }
        for f in FORMATS {
            check_report(&bytes, f, &opts)?;
        }
    }
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,8}".prop_filter("reserved", |s| s != "client")
}

fn label_value() -> impl Strategy<Value = String> {
    "[^\u{0}-\u{1f}\\\\]{1,12}"
}

fn labels_of(tags: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut l: Vec<_> = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    l.push(("client".into(), "c".into()));
    l.sort();
    l
}

fn influx_escape(s: &str) -> String {
    s.replace(',', "\\,")
        .replace(' ', "\\ ")
        .replace('=', "\\=")
}

fn one_sample(format: Format, line: &str) -> Result<OwnedSample, TestCaseError> {
    let mut sink = CollectSink::default();
    let r = parse(
        format,
        line.as_bytes(),
        &ParseOptions::new("c", 5),
        &mut sink,
    );
    prop_assert_eq!(
        (r.errors, r.samples),
        (0, 1),
        "{:?} in {:?}",
        r.first_error,
        line
    );
    Ok(sink.samples.remove(0))
}

proptest! {
    #[test]
    fn influx_roundtrip(m in ident(), tags in btree_map(ident(), label_value(), 0..4), field in ident(),
                        v in prop_oneof![any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(Ok),
                                         any::<i64>().prop_map(Err)],
                        ts in any::<i64>()) {
        let tag_text: String = tags.iter().map(|(k, v)| format!(",{k}={}", influx_escape(v))).collect();
        let (value_text, value) = match v {
            Ok(f) => (format!("{f:?}"), f),
            Err(i) => (format!("{i}i"), i as f64),
        };
        let line = format!("{m}{tag_text} {field}={value_text} {ts}\n");
        let s = one_sample(Format::Influx, &line)?;
        prop_assert_eq!(s.metric, format!("{m}_{field}"));
        prop_assert_eq!(s.labels, labels_of(&tags));
        prop_assert_eq!(s.value, value);
        prop_assert_eq!(s.ts_ms, ts.div_euclid(1_000_000));
    }

    #[test]
    fn prom_roundtrip(m in ident(), tags in btree_map(ident(), "\\PC{1,12}", 0..4),
                      v in any::<f64>(), ts in proptest::option::of(any::<i64>())) {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let labels: Vec<String> = tags.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        let value_text = if v.is_nan() { "NaN".into() } else if v.is_infinite() {
            if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
        } else { format!("{v:?}") };
        let ts_text = ts.map(|t| format!(" {t}")).unwrap_or_default();
        let line = format!("{m}{{{}}} {value_text}{ts_text}\n", labels.join(","));
        let s = one_sample(Format::Prom, &line)?;
        prop_assert_eq!(&s.metric, &m);
        prop_assert_eq!(s.labels, labels_of(&tags));
        prop_assert!(s.value == v || (v.is_nan() && s.value.is_nan()));
        prop_assert_eq!(s.ts_ms, ts.unwrap_or(5));
    }

    #[test]
    fn jsonl_roundtrip(num in (ident(), any::<f64>().prop_filter("finite", |v| v.is_finite())),
                       strs in btree_map(ident(), "\\PC{1,12}", 0..4), secs in 0i64..99_999_999_999) {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), secs.into());
        obj.insert(format!("n_{}", num.0), num.1.into());
        for (k, v) in &strs {
            obj.insert(format!("s_{k}"), v.clone().into());
        }
        let line = format!("{}\n", serde_json::Value::Object(obj));
        let s = one_sample(Format::Jsonl, &line)?;
        prop_assert_eq!(s.metric, format!("n_{}", num.0));
        let want: BTreeMap<String, String> = strs.iter().map(|(k, v)| (format!("s_{k}"), v.clone())).collect();
        prop_assert_eq!(s.labels, labels_of(&want));
        prop_assert_eq!(s.value, num.1);
        prop_assert_eq!(s.ts_ms, secs * 1000);
    }

    #[test]
    fn csv_roundtrip(cols in btree_map(ident(), any::<f64>().prop_filter("finite", |v| v.is_finite()), 1..5),
                     ms in 0i64..1000, secs in 0i64..99_999_999_999) {
        let cols: Vec<_> = cols.into_iter().filter(|(k, _)| !["epoch", "time", "timestamp", "ts"].contains(&k.as_str())).collect();
        prop_assume!(!cols.is_empty());
        let header: Vec<&str> = cols.iter().map(|(k, _)| k.as_str()).collect();
        let cells: Vec<String> = cols.iter().map(|(_, v)| format!("{v:?}")).collect();
        let text = format!("epoch,{}\n{secs}.{ms:03},{}\n", header.join(","), cells.join(","));
        let mut sink = CollectSink::default();
        let r = parse(Format::Csv, text.as_bytes(), &ParseOptions::new("c", 5), &mut sink);
        prop_assert_eq!((r.errors, r.samples), (0, cols.len() as u64));
        for (s, (k, v)) in sink.samples.iter().zip(&cols) {
            prop_assert_eq!((&s.metric, s.value, s.ts_ms), (k, *v, secs * 1000 + ms));
        }
    }
}

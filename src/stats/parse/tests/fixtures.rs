//! Real-world fixtures (`../fixtures/`), each with hostile lines; exact counts asserted.
//!
//! - `node_exporter.prom`: `/metrics` of Debian's prometheus-node-exporter, captured on
//!   127.0.0.1 (two random MAC addresses replaced); `hostile.prom`: BOM, CRLF, NaN/±Inf, 1e308/1e309, non-UTF-8, duplicates,
//!   broken and truncated lines.
//! - `telegraf.influx`: Telegraf `file` output shape (cpu, mem, disk, net, system) plus
//!   hostile lines; `quickstart.jsonl`: the quickstart shape plus hostile lines;
//!   `if_octets-2026-12-02`: collectd csv plugin output plus hostile lines.
//! - The 1 MB lines are generated here rather than committed.

use super::super::*;

const NODE: &[u8] = include_bytes!("../fixtures/node_exporter.prom");
const HOSTILE_PROM: &[u8] = include_bytes!("../fixtures/hostile.prom");
const TELEGRAF: &[u8] = include_bytes!("../fixtures/telegraf.influx");
const QUICKSTART: &[u8] = include_bytes!("../fixtures/quickstart.jsonl");
const COLLECTD: &[u8] = include_bytes!("../fixtures/if_octets-2026-12-02");

const MTIME: i64 = 1_764_633_999_000;

fn run(format: Format, bytes: &[u8], file_name: &[u8]) -> (CollectSink, ParseReport) {
    let mut opts = ParseOptions::new("web-1", MTIME);
    opts.file_name = file_name.to_vec();
    let mut sink = CollectSink::default();
    let report = parse(format, bytes, &opts, &mut sink);
    assert_eq!(report.samples, sink.samples.len() as u64);
    for s in &sink.samples {
        assert!(is_valid(&s.metric, NameKind::Metric), "{}", s.metric);
        assert!(
            s.labels.windows(2).all(|w| w[0].0 < w[1].0),
            "labels unsorted: {:?}",
            s.labels
        );
        assert!(
            s.labels
                .iter()
                .all(|(n, v)| is_valid(n, NameKind::Label) && !v.is_empty())
        );
        assert_eq!(s.label("client"), Some("web-1"));
    }
    (sink, report)
}

fn kinds(r: &ParseReport) -> Vec<(ErrorKind, u64)> {
    ErrorKind::ALL
        .iter()
        .map(|&k| (k, r.errors_of(k)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// `prefix` lines of about 1 MB: one just over the 1 MiB limit, one just under that parses.
fn with_mega_lines(fixture: &[u8], over: &[u8], under: (&[u8], &[u8])) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(over);
    out.resize(out.len() + (1 << 20) + 10, b'x');
    out.push(b'\n');
    out.extend_from_slice(under.0);
    out.resize(out.len() + 1_000_000, b'y');
    out.extend_from_slice(under.1);
    out.push(b'\n');
    // A BOM is only one at the start of a file: keep the fixture's lines the same.
    out.extend_from_slice(fixture.strip_prefix(b"\xef\xbb\xbf").unwrap_or(fixture));
    out
}

#[test]
fn node_exporter_real_output() {
    let (s, r) = run(Format::Auto, NODE, b"node.prom");
    assert_eq!(r.format, Format::Prom);
    let sample_lines = NODE
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    let type_lines = NODE
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"# TYPE "))
        .count();
    assert_eq!(
        (r.errors, r.samples),
        (0, sample_lines as u64),
        "{:?}",
        r.first_error
    );
    assert_eq!(s.types.len(), type_lines);
    assert!(
        s.types
            .iter()
            .any(|(m, k)| m == "node_cpu_seconds_total" && *k == MetricKind::Counter)
    );
    assert!(s.samples.iter().all(|x| x.ts_ms == MTIME));
    let go = s
        .samples
        .iter()
        .find(|x| x.metric == "go_info")
        .map(|x| x.label("version").is_some());
    assert_eq!(go, Some(true));
    // The same bytes detected by content alone.
    assert_eq!(detect(b"metrics", NODE), Format::Prom);
}

#[test]
fn prometheus_hostile() {
    let (s, r) = run(Format::Prom, HOSTILE_PROM, b"x.prom");
    use ErrorKind::*;
    let want = [
        (UnterminatedLastLine, 1),
        (BadLabel, 1),
        (BadEscape, 1),
        (UnterminatedString, 1),
        (MissingValue, 1),
        (NumberOutOfRange, 1),
        (BadTimestamp, 1),
        (TrailingGarbage, 1),
        (BadType, 1),
    ];
    assert_eq!(kinds(&r), want);
    assert_eq!((r.lines, r.samples, r.errors, r.lossy_utf8), (20, 8, 9, 1));
    assert_eq!(
        r.last_error,
        Some(LineError {
            line: 20,
            reason: UnterminatedLastLine
        })
    );
    let types = [
        ("http_requests_total".to_string(), MetricKind::Counter),
        ("temp".into(), MetricKind::Gauge),
    ];
    assert_eq!(s.types, types);
    // Duplicate timestamps are both kept.
    assert_eq!(
        (
            s.samples[0].ts_ms,
            s.samples[1].ts_ms,
            s.samples[0].value,
            s.samples[1].value
        ),
        (1_764_633_600_000, 1_764_633_600_000, 1027.0, 1028.0)
    );
    assert_eq!(s.samples[2].label("path"), Some("C:\\tmp\"x\"\n"));
    let temps: Vec<f64> = s.samples[3..].iter().map(|x| x.value).collect();
    assert!(temps[0].is_nan());
    assert_eq!(
        temps[1..],
        [f64::INFINITY, f64::NEG_INFINITY, f64::MAX, 21.5]
    );
    assert_eq!(s.samples[7].label("sensor"), Some("caf\u{fffd}"));
    assert_eq!(s.samples[7].ts_ms, MTIME);

    let big = with_mega_lines(HOSTILE_PROM, b"a{l=\"", (b"b{l=\"", b"\"} 1"));
    let (s2, r2) = run(Format::Prom, &big, b"");
    assert_eq!(
        (r2.samples, r2.errors, r2.errors_of(LineTooLong)),
        (9, 10, 1)
    );
    assert_eq!(s2.samples[0].label("l").map(str::len), Some(1_000_000));
}

#[test]
fn telegraf_line_protocol() {
    let (s, r) = run(Format::Auto, TELEGRAF, b"metrics.out");
    assert_eq!(r.format, Format::Influx);
    use ErrorKind::*;
    let want = [
        (UnterminatedLastLine, 1),
        (MissingValue, 2),
        (BadNumber, 2),
        (NumberOutOfRange, 2),
        (BadTimestamp, 1),
    ];
    assert_eq!(kinds(&r), want);
    assert_eq!(
        (r.lines, r.samples, r.errors, r.lossy_utf8, r.skipped_values),
        (21, 46, 8, 1, 1)
    );
    let cpu: Vec<_> = s.samples[..10].iter().map(|x| x.metric.as_str()).collect();
    assert_eq!(cpu[0], "cpu_usage_guest");
    assert_eq!(cpu[9], "cpu_usage_user");
    let t = 1_764_633_600_000;
    let idle: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "cpu_usage_idle")
        .map(|x| (x.ts_ms, x.value))
        .collect();
    assert_eq!(idle, [(t, 97.3), (t, 97.1)]);
    let disk = &s.samples[19];
    let labels: Vec<_> = disk.labels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        labels,
        ["client", "device", "fstype", "host", "mode", "path"]
    );
    let net = &s.samples[40..44];
    let values: Vec<f64> = net.iter().map(|x| x.value).collect();
    assert_eq!(values[..2], [f64::MAX, 1e308]);
    assert_eq!(
        values[2..4],
        [9_223_372_036_854_775_807.0, 18_446_744_073_709_551_615.0]
    );
    assert_eq!(s.samples[44].label("path"), Some("/mnt/caf\u{fffd}"));
    assert_eq!(
        (s.samples[45].label("pa_th"), s.samples[45].metric.as_str()),
        (Some("/x"), "disk_used")
    );

    let big = with_mega_lines(TELEGRAF, b"m,t=", (b"m,t=", b" v=1 1"));
    let (s2, r2) = run(Format::Influx, &big, b"");
    assert_eq!(
        (r2.samples, r2.errors, r2.errors_of(LineTooLong)),
        (47, 9, 1)
    );
    assert_eq!(
        (s2.samples[0].label("t").map(str::len), s2.samples[0].ts_ms),
        (Some(1_000_000), 0)
    );
}

#[test]
fn quickstart_json_lines() {
    let (s, r) = run(Format::Auto, QUICKSTART, b"app-2026-12-02.jsonl");
    assert_eq!(r.format, Format::Jsonl);
    use ErrorKind::*;
    assert_eq!(
        kinds(&r),
        [
            (NumberOutOfRange, 1),
            (BadTimestamp, 1),
            (InvalidJson, 3),
            (NotAnObject, 1)
        ]
    );
    assert_eq!((r.lines, r.samples, r.errors, r.lossy_utf8), (14, 13, 6, 1));
    let t = 1_764_633_600_000;
    let first: Vec<_> = s.samples[..2]
        .iter()
        .map(|x| (x.metric.as_str(), x.label("host"), x.ts_ms, x.value))
        .collect();
    assert_eq!(
        first,
        [
            ("cpu", Some("web-1"), t, 12.5),
            ("mem", Some("web-1"), t, 40.1)
        ]
    );
    assert_eq!(
        s.samples[4..6],
        s.samples[6..8],
        "duplicate lines both kept"
    );
    assert_eq!(
        (s.samples[8].value, s.samples[9].value, s.samples[8].ts_ms),
        (1e308, -f64::MAX, t + 20_000)
    );
    assert_eq!(s.samples[10].label("host"), Some("web-\u{fffd}"));
    let disk: Vec<_> = s.samples[11..]
        .iter()
        .map(|x| (x.metric.as_str(), x.ts_ms, x.value))
        .collect();
    assert_eq!(
        disk,
        [
            ("disk_root", t + 30_000, 51.5),
            ("disk_var", t + 30_000, 12.0)
        ]
    );
    // A complete last object without a newline is parsed.
    let (_, r3) = run(Format::Jsonl, b"{\"ts\": 1, \"v\": 1}", b"");
    assert_eq!((r3.samples, r3.errors), (1, 0));

    let big = with_mega_lines(QUICKSTART, b"{\"h\": \"", (b"{\"h\": \"", b"\", \"v\": 1}"));
    let (s2, r2) = run(Format::Jsonl, &big, b"");
    assert_eq!(
        (r2.samples, r2.errors, r2.errors_of(LineTooLong)),
        (14, 7, 1)
    );
    assert_eq!(s2.samples[0].label("h").map(str::len), Some(1_000_000));
}

#[test]
fn collectd_csv() {
    let (s, r) = run(Format::Auto, COLLECTD, b"if_octets-2026-12-02");
    assert_eq!(r.format, Format::Csv);
    use ErrorKind::*;
    let want = [
        (UnterminatedLastLine, 1),
        (BadNumber, 1),
        (NumberOutOfRange, 1),
        (BadTimestamp, 1),
        (ColumnCount, 1),
    ];
    assert_eq!(kinds(&r), want);
    assert_eq!(
        (r.lines, r.samples, r.errors, r.skipped_values),
        (12, 11, 5, 1)
    );
    let t = 1_764_633_600_000;
    let got: Vec<_> = s
        .samples
        .iter()
        .map(|x| (x.metric.as_str(), x.ts_ms))
        .collect();
    assert_eq!(got[..2], [("if_octets_rx", t), ("if_octets_tx", t)]);
    assert_eq!(got[2..4], got[4..6], "duplicate rows both kept");
    assert!(s.samples[6].value.is_nan() && s.samples[7].value.is_nan());
    assert_eq!(
        (s.samples[8].value, s.samples[9].value),
        (1e308, f64::NEG_INFINITY)
    );
    assert_eq!(
        (got[10], s.samples[10].value),
        (("if_octets_tx", t + 70_000), 7.0)
    );

    let mut big = b"epoch,rx,tx\n".to_vec();
    big.extend(with_mega_lines(&COLLECTD[12..], b"1,", (b"2,", b",1")));
    let (_, r2) = run(Format::Csv, &big, b"if_octets-2026-12-02");
    // The just-under line `2,yyy…,1` has the right cells but a bad number.
    assert_eq!(
        (
            r2.samples,
            r2.errors,
            r2.errors_of(LineTooLong),
            r2.errors_of(BadNumber)
        ),
        (11, 7, 1, 2)
    );
}

#[test]
fn collectd_single_value_files() {
    let (s, _) = run(
        Format::Auto,
        b"epoch,value\n1764633600.000,123456789.000000\n",
        b"memory-used-2026-12-02",
    );
    assert_eq!(
        (s.samples[0].metric.as_str(), s.samples[0].value),
        ("memory_used", 123_456_789.0)
    );
    let (s, _) = run(
        Format::Csv,
        b"epoch,shortterm,midterm,longterm\n1764633600.000,0.1,0.2,0.3\n",
        b"load-2026-12-02",
    );
    let m: Vec<_> = s.samples.iter().map(|x| x.metric.as_str()).collect();
    assert_eq!(m, ["load_shortterm", "load_midterm", "load_longterm"]);
}

#[test]
fn empty_and_blank_files() {
    for f in [
        Format::Influx,
        Format::Prom,
        Format::Jsonl,
        Format::Csv,
        Format::None,
        Format::Auto,
    ] {
        for bytes in [
            &b""[..],
            b"\xef\xbb\xbf",
            b"\n\r\n  \n",
            b"\xef\xbb\xbf\r\n",
        ] {
            let (s, r) = run(f, bytes, b"");
            assert_eq!(
                (r.samples, r.errors, s.types.len()),
                (0, 0, 0),
                "{f} {bytes:?}"
            );
        }
    }
}

#[test]
fn lenient_last_line() {
    let mut opts = ParseOptions::new("c", 0);
    opts.strict_last_line = false;
    let r = parse(
        Format::Influx,
        b"m v=1 1\nm v=2 2",
        &opts,
        &mut CountSink::default(),
    );
    assert_eq!((r.samples, r.errors), (2, 0));
}

#[test]
fn millions_of_tiny_lines() {
    let bytes = b"a 1\n".repeat(1_000_000);
    let mut sink = CountSink::default();
    let r = parse(Format::Prom, &bytes, &ParseOptions::new("c", 0), &mut sink);
    assert_eq!(
        (r.lines, r.samples, r.errors, sink.samples),
        (1_000_000, 1_000_000, 0, 1_000_000)
    );
    let r = parse(
        Format::Influx,
        &b"\n\n\n".repeat(1_000_000),
        &ParseOptions::new("c", 0),
        &mut sink,
    );
    assert_eq!((r.lines, r.samples, r.errors), (3_000_000, 0, 0));
}

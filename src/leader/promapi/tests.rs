//! Unit tests of the pure parts (parameters, JSON, error mapping, warnings) and in-process
//! tests of the served API over real tsdb shards in temp dirs ([`super::testreader`]), values
//! checked against the brute-force reference evaluator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::error::{ApiError, ErrorType};
use super::exec::report_warning;
use super::params::{
    InstantRequest, Params, RangeRequest, SeriesMatch, SeriesRequest, parse_duration_ms, parse_time,
};
use super::render;
use super::testreader::{TsdbShards, write_shard};
use crate::stats::cluster::ShardReport;
use crate::stats::promql::reference::{self, RawSeries};
use crate::stats::promql::{PlanError, QueryTimes, Series};
use crate::stats::query::Labels;
use crate::stats::tsdb::SeriesKey;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn params(q: &str) -> Params {
    Params::decode(Some(q), None)
}

// ---- parameters ----

#[test]
fn form_decoding_reads_query_and_body_with_escapes_and_repeats() {
    let p = Params::decode(
        Some("query=sum+by+(zone)%20(cpu)&match%5B%5D=a&empty="),
        Some(b"match[]=b%7Bx%3D%22y%22%7D&bad=%zz%4"),
    );
    assert_eq!(p.get("query"), Some("sum by (zone) (cpu)"));
    assert_eq!(p.all("match[]").collect::<Vec<_>>(), ["a", r#"b{x="y"}"#]);
    assert_eq!(
        p.get("empty"),
        None,
        "an empty value is absent, as Go's FormValue"
    );
    assert_eq!(
        p.get("bad"),
        Some("%zz%4"),
        "broken escapes stay as written"
    );
    assert_eq!(p.get("missing"), None);
}

#[test]
fn times_and_durations_parse_as_prometheus_parses_them() {
    assert_eq!(parse_time("t", "1700000000"), Ok(Some(1_700_000_000_000)));
    assert_eq!(
        parse_time("t", "1700000000.1234"),
        Ok(Some(1_700_000_000_123))
    );
    assert_eq!(
        parse_time("t", "2023-11-14T22:13:20.5Z"),
        Ok(Some(1_700_000_000_500))
    );
    assert_eq!(parse_time("t", "-292273086-05-16T16:47:06Z"), Ok(None));
    let e = parse_time("start", "yesterday").err();
    assert_eq!(
        e.map(|e| e.message),
        Some(r#"invalid parameter "start": cannot parse "yesterday" to a valid timestamp"#.into())
    );
    assert!(parse_time("t", "NaN").is_err());
    assert_eq!(parse_duration_ms("step", "15"), Ok(15_000));
    assert_eq!(parse_duration_ms("step", "0.5"), Ok(500));
    assert_eq!(parse_duration_ms("step", "1m30s"), Ok(90_000));
    let e = parse_duration_ms("step", "fast").err();
    assert_eq!(
        e.map(|e| e.message),
        Some(r#"invalid parameter "step": cannot parse "fast" to a valid duration"#.into())
    );
}

#[test]
fn range_requests_are_checked_in_prometheus_order_with_its_texts() {
    let ok = RangeRequest::parse(&params("query=up&start=100&end=200&step=10s&timeout=2s"));
    let ok = ok.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (ok.start_ms, ok.end_ms, ok.step_ms),
        (100_000, 200_000, 10_000)
    );
    assert_eq!(ok.timeout, Duration::from_secs(2));
    let err = |q: &str| {
        RangeRequest::parse(&params(q))
            .err()
            .unwrap_or_else(|| panic!("{q}: accepted"))
    };
    assert!(err("query=up&end=2&step=1").message.contains(r#""start""#));
    assert_eq!(
        err("query=up&start=3&end=2&step=1").message,
        "end timestamp must not be before start time"
    );
    assert_eq!(
        err("query=up&start=1&end=2&step=0").message,
        "zero or negative query resolution step widths are not accepted. Try a positive integer"
    );
    let too_many = err("query=up&start=0&end=11001&step=1");
    assert_eq!(
        too_many.message,
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    assert_eq!((too_many.status, too_many.kind), (400, ErrorType::BadData));
    assert!(RangeRequest::parse(&params("query=up&start=0&end=11000&step=1")).is_ok());
    assert!(
        err("query=up&start=1&end=2&step=1&timeout=0")
            .message
            .contains("timeout")
    );
    assert!(err("start=1&end=2&step=1").message.contains(r#""query""#));
}

#[test]
fn instant_time_defaults_to_now() {
    let r = InstantRequest::parse(&params("query=up"), 42_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.time_ms, 42_000);
    let r =
        InstantRequest::parse(&params("query=up&time=7"), 42_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.time_ms, 7_000);
}

#[test]
fn series_matchers_keep_the_name_as_a_label() {
    let m = SeriesMatch::parse(r#"cpu{zone="eu"}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.selector().map(|s| s.metric), Some("cpu".into()));
    assert!(m.matches("cpu", &l(&[("zone", "eu")])));
    assert!(!m.matches("mem", &l(&[("zone", "eu")])));
    let open =
        SeriesMatch::parse(r#"{__name__=~"c.*",zone!="us"}"#).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        open.selector().is_none(),
        "an open name asks for every series"
    );
    assert!(open.matches("cpu", &l(&[("zone", "eu")])));
    assert!(!open.matches("mem", &l(&[("zone", "eu")])));
    let named = SeriesMatch::parse(r#"{__name__="cpu"}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(named.selector().map(|s| s.matchers.len()), Some(0));
    for bad in ["rate(cpu[1m])", "cpu offset 1m", "cpu{"] {
        let e = SeriesMatch::parse(bad).err();
        assert!(
            e.is_some_and(|e| e.status == 400 && e.message.contains("match[]")),
            "{bad}"
        );
    }
    let e = SeriesRequest::parse(&params("start=1"), true).err();
    assert_eq!(
        e.map(|e| e.message),
        Some("no match[] parameter provided".into())
    );
}

// ---- JSON ----

#[test]
fn values_and_timestamps_are_written_as_prometheus_writes_them() {
    assert_eq!(
        [
            1.0,
            0.1,
            -2.5,
            1e21,
            1e-7,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY
        ]
        .map(render::value_text),
        [
            "1",
            "0.1",
            "-2.5",
            "1000000000000000000000",
            "0.0000001",
            "NaN",
            "+Inf",
            "-Inf"
        ]
    );
    let m = vec![Series {
        labels: l(&[("__name__", "cpu"), ("host", "a\"b")]),
        points: vec![(1_500, 1.0), (2_000, 2.25), (-1_050, 3.0)],
    }];
    assert_eq!(
        render::matrix(&m),
        r#"{"resultType":"matrix","result":[{"metric":{"__name__":"cpu","host":"a\"b"},"values":[[1.5,"1"],[2,"2.25"],[-1.05,"3"]]}]}"#
    );
    assert_eq!(
        render::vector(&m[..1].to_vec()),
        r#"{"resultType":"vector","result":[{"metric":{"__name__":"cpu","host":"a\"b"},"value":[-1.05,"3"]}]}"#
    );
    assert_eq!(
        render::scalar(1_000, 2.0),
        r#"{"resultType":"scalar","result":[1,"2"]}"#
    );
    assert_eq!(
        [1_234, 1_250, 5, -7].map(|t| render::scalar(t, 0.5)),
        [
            r#"{"resultType":"scalar","result":[1.234,"0.5"]}"#,
            r#"{"resultType":"scalar","result":[1.25,"0.5"]}"#,
            r#"{"resultType":"scalar","result":[0.005,"0.5"]}"#,
            r#"{"resultType":"scalar","result":[-0.007,"0.5"]}"#,
        ]
    );
    assert_eq!(
        render::success("[]", &["w".into()]),
        r#"{"status":"success","data":[],"warnings":["w"]}"#
    );
    assert_eq!(
        render::error(&ApiError::bad_data("no"), &[]),
        r#"{"status":"error","errorType":"bad_data","error":"no"}"#
    );
}

#[test]
fn errors_map_to_prometheus_types_and_statuses() {
    let unsupported: ApiError = PlanError::Unsupported {
        construct: "offset modifier".into(),
    }
    .into();
    assert_eq!(
        (unsupported.status, unsupported.kind),
        (422, ErrorType::BadData)
    );
    assert!(unsupported.message.contains("offset modifier"));
    let parse: ApiError = PlanError::Parse("1:4: unexpected".into()).into();
    assert_eq!(parse.status, 400);
    assert!(
        parse
            .message
            .starts_with(r#"invalid parameter "query": parse error"#)
    );
    let gone: ApiError = crate::stats::cluster::ClusterError::Unavailable("stopping".into()).into();
    assert_eq!((gone.status, gone.kind), (503, ErrorType::Unavailable));
}

#[test]
fn a_partial_report_names_every_missing_shard_and_why() {
    let mut r = ShardReport {
        asked: vec!["w1".into(), "w2".into(), "w3".into()],
        answered: vec!["w1".into()],
        ..ShardReport::default()
    };
    assert_eq!(
        report_warning(&ShardReport {
            answered: r.asked.clone(),
            ..r.clone()
        }),
        None
    );
    r.failed.insert("w3".into(), "connection refused".into());
    r.timed_out.push("w2".into());
    assert_eq!(
        report_warning(&r).as_deref(),
        Some(
            "partial answer: shards w3, w2 did not answer (w3: connection refused; w2: timed out); values are from w1 only"
        )
    );
    let none = report_warning(&ShardReport::default());
    assert!(none.is_some_and(|w| w.starts_with("no shard was asked")));
}

// ---- served over real shards ----

const T0: i64 = 1_700_000_000_000;

/// Three hosts of `cpu` (gauges) and two of `reqs_total` (counters with a reset), one sample
/// every 10 s for 10 minutes.
fn data() -> Vec<(String, RawSeries)> {
    let gauge = |host: &str, zone: &str, f: fn(i64) -> f64| {
        (
            "cpu".to_owned(),
            RawSeries {
                labels: l(&[("host", host), ("zone", zone)]),
                samples: (0..60).map(|i| (T0 + i * 10_000, f(i))).collect(),
            },
        )
    };
    let counter = |host: &str, step: f64| {
        (
            "reqs_total".to_owned(),
            RawSeries {
                labels: l(&[("host", host)]),
                samples: (0..60)
                    .map(|i| {
                        (
                            T0 + i * 10_000,
                            if i < 40 {
                                i as f64 * step
                            } else {
                                (i - 40) as f64
                            },
                        )
                    })
                    .collect(),
            },
        )
    };
    vec![
        gauge("a", "eu", |i| i as f64),
        gauge("b", "eu", |i| 100.0 - i as f64 / 4.0),
        gauge("c", "us", |i| (i % 7) as f64 * 10.0),
        counter("a", 3.0),
        counter("b", 0.5),
    ]
}

/// The data split over three shard files by sample index; `lost` names a shard whose file is
/// never written (its open fails: a shard that does not answer).
fn shards(dir: &std::path::Path, lost: Option<usize>) -> TsdbShards {
    let all = data();
    let mut out = Vec::new();
    for shard in 0..3 {
        let path = dir.join(format!("w{shard}.sqlite"));
        if lost != Some(shard) {
            let mine: Vec<(SeriesKey, Vec<(i64, f64)>)> = all
                .iter()
                .map(|(metric, s)| {
                    let key = SeriesKey {
                        metric: metric.clone(),
                        labels: s.labels.clone(),
                    };
                    let samples = s.samples.iter().skip(shard).step_by(3).copied().collect();
                    (key, samples)
                })
                .collect();
            write_shard(&path, "c1", &mine);
        }
        out.push((format!("w{shard}"), path));
    }
    TsdbShards { shards: out }
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(reader: TsdbShards) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let (addr, serve) = rt
            .block_on(super::serve(local, Arc::new(reader), async {
                let _ = rx.await;
            }))
            .unwrap_or_else(|e| panic!("{e}"));
        rt.spawn(serve);
        Server {
            addr,
            stop: Some(tx),
            rt,
        }
    }

    /// One request; `form` makes it a form-encoded POST. (status, JSON body).
    fn call(&self, path: &str, form: Option<&str>) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap_or_else(|e| panic!("{e}"));
        let req = match form {
            None => format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            Some(body) => format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        };
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap_or_else(|e| panic!("{e}"));
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{raw}"));
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
        let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (code.unwrap_or(0), json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = &self.rt;
    }
}

fn enc(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the reference evaluator computes from the raw samples (only those kept by `keep`).
fn expected(query: &str, times: QueryTimes) -> Vec<Series> {
    let lowered = crate::stats::promql::lower::lower(query).unwrap_or_else(|e| panic!("{e}"));
    let metric = lowered.selector.as_ref().map_or("", |s| s.metric.as_str());
    let matching: Vec<RawSeries> = data()
        .into_iter()
        .filter(|(m, s)| {
            lowered
                .selector
                .as_ref()
                .is_some_and(|sel| sel.matches(m, &s.labels))
        })
        .map(|(_, s)| s)
        .collect();
    reference::evaluate(&lowered.node, metric, &matching, &times)
}

fn labels_of(v: &Value) -> Labels {
    let obj = v.as_object().unwrap_or_else(|| panic!("{v}"));
    obj.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn point(p: &Value) -> (i64, f64) {
    let t = p[0].as_f64().unwrap_or_else(|| panic!("{p}"));
    let v: f64 = p[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{p}"));
    ((t * 1000.0).round() as i64, v)
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn same(got: Vec<(Labels, Vec<(i64, f64)>)>, want: &[Series], what: &str) {
    assert!(
        !want.is_empty(),
        "{what}: the reference answers nothing, so nothing is tested"
    );
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for ((labels, points), w) in got.iter().zip(want) {
        assert_eq!(labels, &w.labels, "{what}");
        assert_eq!(points.len(), w.points.len(), "{what} {labels:?}");
        for (p, q) in points.iter().zip(&w.points) {
            assert!(
                p.0 == q.0 && close(p.1, q.1),
                "{what} {labels:?}: {p:?} vs {q:?}"
            );
        }
    }
}

const QUERIES: &[&str] = &[
    r#"cpu{zone="eu"}"#,
    "avg_over_time(cpu[1m])",
    "sum by (zone) (max_over_time(cpu[30s]))",
    "count without (host) (cpu)",
    "rate(reqs_total[1m])",
    "increase(reqs_total[2m])",
    "last_over_time(cpu[45s]) > 20",
    "3",
];

#[test]
fn range_queries_over_three_shards_equal_the_reference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), None));
    let (start, end, step) = (T0 + 60_000, T0 + 600_000, 15_000);
    for q in QUERIES {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=15s",
            enc(q),
            start as f64 / 1000.0,
            end as f64 / 1000.0
        );
        let (code, body) = server.call(&path, None);
        assert_eq!(code, 200, "{q}: {body}");
        assert_eq!(body["status"], "success");
        assert!(body.get("warnings").is_none(), "{q}: {body}");
        assert_eq!(body["data"]["resultType"], "matrix");
        let got = (body["data"]["result"].as_array().into_iter().flatten())
            .map(|s| {
                let points = s["values"].as_array().into_iter().flatten().map(point);
                (labels_of(&s["metric"]), points.collect())
            })
            .collect();
        same(got, &expected(q, QueryTimes::range(start, end, step)), q);
    }
}

#[test]
fn instant_queries_posted_as_forms_equal_the_reference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), None));
    let t = T0 + 333_000;
    for q in QUERIES {
        let form = format!("query={}&time=2023-11-14T22:18:53Z", enc(q));
        let (code, body) = server.call("/api/v1/query", Some(&form));
        assert_eq!(code, 200, "{q}: {body}");
        let want = expected(q, QueryTimes::instant(t));
        if *q == "3" {
            assert_eq!(body["data"]["resultType"], "scalar");
            assert_eq!(point(&body["data"]["result"]), (t, 3.0));
            continue;
        }
        assert_eq!(body["data"]["resultType"], "vector", "{q}");
        let got = (body["data"]["result"].as_array().into_iter().flatten())
            .map(|s| (labels_of(&s["metric"]), vec![point(&s["value"])]))
            .collect();
        same(got, &want, q);
    }
}

#[test]
fn a_shard_that_does_not_answer_gives_a_partial_answer_that_says_so() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), Some(1)));
    let q = format!(
        "/api/v1/query?query={}&time={}",
        enc("count_over_time(cpu[1m])"),
        (T0 + 300_000) / 1000
    );
    let (code, body) = server.call(&q, None);
    assert_eq!(code, 200, "{body}");
    let warnings = body["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{body}");
    let w = warnings[0].as_str().unwrap_or_default();
    assert!(
        w.starts_with("partial answer: shards w1 did not answer (w1: ")
            && w.ends_with("values are from w0, w2 only"),
        "{w}"
    );
    // Two of three shards: 4 of the 6 samples in (4m, 5m] per series.
    for s in body["data"]["result"].as_array().into_iter().flatten() {
        assert_eq!(point(&s["value"]).1, 4.0, "{s}");
    }
    let (_, series) = server.call("/api/v1/series?match[]=cpu", None);
    assert!(
        series["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("partial answer"))
    );
}

#[test]
fn grafanas_health_check_is_answered() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), None));
    for (q, want) in [("1+1", 2.0), ("2 ^ 3 - 1", 7.0), ("-(7 % 4) / 2", -1.5)] {
        let form = format!("query={}&time=1700000000", enc(q));
        let (code, body) = server.call("/api/v1/query", Some(&form));
        assert_eq!(code, 200, "{q}: {body}");
        assert_eq!(body["data"]["resultType"], "scalar", "{q}");
        assert_eq!(point(&body["data"]["result"]), (T0, want), "{q}");
    }
}

#[test]
fn unsupported_promql_is_422_bad_data_naming_the_part() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), None));
    for (q, part) in [
        ("cpu offset 5m", "offset"),
        ("histogram_quantile(0.9, cpu)", "histogram_quantile"),
        ("cpu + cpu", ""),
    ] {
        let (code, body) = server.call(&format!("/api/v1/query?query={}&time=1", enc(q)), None);
        assert_eq!(code, 422, "{q}: {body}");
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "bad_data");
        let e = body["error"].as_str().unwrap_or_default();
        assert!(
            e.starts_with("unsupported in sqd's PromQL subset") && e.contains(part),
            "{e}"
        );
    }
    let (code, body) = server.call("/api/v1/query?query=sum(&time=1", None);
    assert_eq!(
        (code, body["errorType"].as_str()),
        (400, Some("bad_data")),
        "{body}"
    );
    let (code, body) = server.call(
        "/api/v1/query_range?query=cpu&start=0&end=20000&step=1",
        None,
    );
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("exceeded maximum resolution of 11,000 points"))
    );
}

/// `start`/`end` keep the series with samples between them (every series here has samples
/// in [T0, T0 + 590 s]); either alone is an open end.
#[test]
fn series_are_narrowed_by_start_and_end() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), None));
    let s = |ms: i64| format!("{}", ms as f64 / 1000.0);
    for (range, want) in [
        (
            format!("&start={}&end={}", s(T0 + 100_000), s(T0 + 200_000)),
            3,
        ),
        (format!("&start={}&end={}", s(T0 - 9_000), s(T0)), 3),
        (format!("&start={}", s(T0 + 600_000)), 0),
        (format!("&end={}", s(T0 - 1)), 0),
        (format!("&start={}", s(T0 + 590_000)), 3),
        (String::new(), 3),
    ] {
        let (code, body) = server.call(&format!("/api/v1/series?match[]=cpu{range}"), None);
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["data"].as_array().map(Vec::len),
            Some(want),
            "{range}: {body}"
        );
    }
    let late = format!("/api/v1/labels?start={}", s(T0 + 600_000));
    assert_eq!(server.call(&late, None).1["data"], serde_json::json!([]));
}

#[test]
fn series_labels_and_values_include_the_metric_name() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(shards(dir.path(), None));
    let (code, body) = server.call(
        &format!("/api/v1/series?match[]={}", enc(r#"cpu{zone="eu"}"#)),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"],
        serde_json::json!([
            {"__name__": "cpu", "host": "a", "zone": "eu"},
            {"__name__": "cpu", "host": "b", "zone": "eu"}
        ])
    );
    let form = format!(
        "match[]={}&match[]={}",
        enc(r#"{__name__=~"r.*"}"#),
        enc(r#"cpu{host="c"}"#)
    );
    let (_, body) = server.call("/api/v1/series", Some(&form));
    assert_eq!(body["data"].as_array().map(Vec::len), Some(3), "{body}");
    let (_, body) = server.call("/api/v1/labels", None);
    assert_eq!(
        body["data"],
        serde_json::json!(["__name__", "host", "zone"])
    );
    let (_, body) = server.call("/api/v1/labels?match[]=reqs_total", None);
    assert_eq!(body["data"], serde_json::json!(["__name__", "host"]));
    let (_, body) = server.call("/api/v1/label/__name__/values", None);
    assert_eq!(body["data"], serde_json::json!(["cpu", "reqs_total"]));
    let (_, body) = server.call("/api/v1/label/host/values?match[]=reqs_total", None);
    assert_eq!(body["data"], serde_json::json!(["a", "b"]));
    let (code, body) = server.call("/api/v1/label/bad-name/values", None);
    assert_eq!((code, body["errorType"].as_str()), (400, Some("bad_data")));
    let (code, body) = server.call("/api/v1/status/buildinfo", None);
    assert_eq!(code, 200);
    assert!(
        body["data"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let (code, body) = server.call("/api/v1/alerts", None);
    assert_eq!((code, body["errorType"].as_str()), (404, Some("not_found")));
}

#[test]
#[ignore = "measurement"]
fn measure_query_range_1000_series() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut shards_v = Vec::new();
    let t = std::time::Instant::now();
    for shard in 0..3 {
        let path = dir.path().join(format!("w{shard}.sqlite"));
        let series: Vec<(SeriesKey, Vec<(i64, f64)>)> = (0..1000)
            .map(|i| {
                let key = SeriesKey {
                    metric: "m".into(),
                    labels: l(&[("host", &format!("h{i}"))]),
                };
                let samples = (0..1440)
                    .filter(|k| k % 3 == shard)
                    .map(|k| (T0 + k * 60_000, (i + k) as f64))
                    .collect();
                (key, samples)
            })
            .collect();
        write_shard(&path, "c", &series);
        shards_v.push((format!("w{shard}"), path));
    }
    eprintln!("written in {:?}", t.elapsed());
    let reader = TsdbShards { shards: shards_v };
    {
        use crate::stats::cluster::ClusterReader;
        let times = QueryTimes::range(T0, T0 + 86_400_000, 60_000);
        let plan = crate::stats::promql::Plan::new("avg_over_time(m[1m])", times)
            .unwrap_or_else(|e| panic!("{e}"));
        let f = plan.fetch.clone().unwrap_or_else(|| panic!("fetch"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let t = std::time::Instant::now();
        let a = rt
            .block_on(reader.query(f.selector, f.shard_range, Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("reader (3 tsdb reads + merge): {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let m = plan.evaluate(&a.value).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("evaluate: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let body = render::matrix(&m);
        eprintln!("render: {:?}, {} bytes", t.elapsed(), body.len());
    }
    let server = Server::start(reader);
    let q = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60",
        enc("avg_over_time(m[1m])"),
        T0 / 1000,
        (T0 + 86_400_000) / 1000
    );
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (code, body) = server.call(&q, None);
        assert_eq!(code, 200);
        eprintln!(
            "query_range 1000 series x 1441 steps: {:?}, {} series",
            t.elapsed(),
            body["data"]["result"].as_array().map_or(0, Vec::len)
        );
    }
}

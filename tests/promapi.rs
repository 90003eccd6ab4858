//! End-to-end: a real client no one here wrote reads sqd as a Prometheus data source. A leader
//! with `--query-listen`, one worker, a producing host over the private sshd writing a known
//! JSON-lines fixture; then Debian's `promtool query instant` and `promtool query range`
//! against the leader's API, values checked against the fixture; an unsupported expression
//! answers HTTP 422 `bad_data`; with the worker killed, an answer carries the partial warning.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::files::leftovers;
use support::sshd::Sshd;
use support::*;

const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];
const SAMPLES: i64 = 60;

/// `cpu` of hosts h0 (value i) and h1 (100 + i/2), sample i at `base + i * 10 s`, in three
/// files of 20 samples per host, written aside and renamed in.
fn write_fixture(dir: &Path, base_ms: i64) {
    let aside = dir.parent().expect("parent").join("aside");
    std::fs::create_dir_all(&aside).expect("aside dir");
    for f in 0..3 {
        let mut text = String::new();
        for i in f * 20..(f + 1) * 20 {
            let ts = (base_ms + i * 10_000) / 1000;
            text.push_str(&format!(
                "{{\"ts\": {ts}, \"host\": \"h0\", \"cpu\": {i}}}\n"
            ));
            let v = 100.0 + i as f64 / 2.0;
            text.push_str(&format!(
                "{{\"ts\": {ts}, \"host\": \"h1\", \"cpu\": {v}}}\n"
            ));
        }
        let name = format!("cpu-{f}.jsonl");
        std::fs::write(aside.join(&name), text).expect("write");
        std::fs::rename(aside.join(&name), dir.join(&name)).expect("rename in");
    }
}

fn fixture_value(host: &str, i: i64) -> f64 {
    match host {
        "h0" => i as f64,
        _ => 100.0 + i as f64 / 2.0,
    }
}

/// Runs promtool (≤ 30 s) and parses its JSON output.
fn promtool(args: &[&str]) -> Value {
    let mut child = Command::new("promtool")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs Debian's prometheus package)");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("promtool {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e}: {}", text(&out.stdout)))
}

fn host_of(series: &Value) -> String {
    series["metric"]["host"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sample value: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn promtool_reads_sqd_as_a_prometheus_server() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start_with(500, 1500, &["--query-listen", "127.0.0.1:0"]);
    cluster.spawn_worker_with("w1", FAST, &[]);
    cluster.wait_alive(1);
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let dir = cluster.dir.path().join("src-c");
    let extra = ["--format", "jsonl", "--key", &key, "--known-hosts", &kh];
    cluster.add_ssh_client("c", &sshd, &dir, &extra);
    // Whole minutes, half an hour ago: inside any retention, windows land on known samples.
    let base_ms = (sqd::clock::unix_ms() / 60_000 - 30) * 60_000;
    write_fixture(&dir, base_ms);
    wait_until(Duration::from_secs(60), "every source file pulled", || {
        (leftovers(&dir) == (0, 0)).then_some(())
    });
    let api = wait_addr_file(&cluster.state_dir().join("query.addr"));
    let server = format!("http://{api}");
    let at = |i: i64| ((base_ms + i * 10_000) / 1000).to_string();

    // Committed is not yet queryable until the commit's transaction ends: wait for the count.
    let count_q = format!("count_over_time(cpu[{}s])", SAMPLES * 10 + 10);
    wait_until(Duration::from_secs(20), "every sample queryable", || {
        let v = promtool(&[
            "query",
            "-o",
            "json",
            "instant",
            &server,
            &count_q,
            "--time",
            &at(SAMPLES),
        ]);
        let counts: Vec<f64> = v.as_array()?.iter().map(|s| num(&s["value"][1])).collect();
        (counts == [SAMPLES as f64, SAMPLES as f64]).then_some(())
    });

    // Instant: the average of samples 25..=30 ((t - 1m, t] at sample 30), per host.
    let v = promtool(&[
        "query",
        "-o",
        "json",
        "instant",
        &server,
        "avg_over_time(cpu[1m])",
        "--time",
        &at(30),
    ]);
    let series = v.as_array().expect("a vector");
    assert_eq!(series.len(), 2, "{v}");
    for s in series {
        let host = host_of(s);
        let want = (25..=30).map(|i| fixture_value(&host, i)).sum::<f64>() / 6.0;
        assert!(close(num(&s["value"][1]), want), "{host}: {s} vs {want}");
        assert_eq!(s["metric"]["client"], "c", "{s}");
        assert!(
            s["metric"].get("__name__").is_none(),
            "functions drop the name: {s}"
        );
    }
    let v = promtool(&[
        "query",
        "-o",
        "json",
        "instant",
        &server,
        "sum(cpu)",
        "--time",
        &at(40),
    ]);
    let got = num(&v[0]["value"][1]);
    assert!(
        close(got, fixture_value("h0", 40) + fixture_value("h1", 40)),
        "{v}"
    );

    // Range: max over (t - 30 s, t] at every minute from sample 6 to 36 is sample t itself.
    let v = promtool(&[
        "query",
        "-o",
        "json",
        "range",
        &server,
        r#"max_over_time(cpu{host="h1"}[30s])"#,
        "--start",
        &at(6),
        "--end",
        &at(36),
        "--step",
        "1m",
    ]);
    let series = v.as_array().expect("a matrix");
    assert_eq!(series.len(), 1, "{v}");
    let points = series[0]["values"].as_array().expect("values");
    let got: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p[0].as_f64().expect("ts") as i64, num(&p[1])))
        .collect();
    let want: Vec<(i64, f64)> = (0..6)
        .map(|k| {
            let i = 6 + k * 6;
            ((base_ms + i * 10_000) / 1000, fixture_value("h1", i))
        })
        .collect();
    assert_eq!(got.len(), want.len(), "{v}");
    for (g, w) in got.iter().zip(&want) {
        assert!(g.0 == w.0 && close(g.1, w.1), "{g:?} vs {w:?}");
    }

    // The series API narrowed by start/end through the worker's shard (two hosts, samples
    // from at(0) to at(SAMPLES - 1)).
    let series = |range: String| {
        let path = format!("/api/v1/series?match[]=cpu{range}");
        let (code, body) = http_get(&api, &path).expect("answer");
        assert_eq!(code, 200, "{body}");
        let body: Value = serde_json::from_str(&body).expect("json");
        body["data"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(series(String::new()), 2);
    assert_eq!(series(format!("&start={}&end={}", at(2), at(3))), 2);
    assert_eq!(series(format!("&start={}", at(SAMPLES + 10))), 0);
    assert_eq!(series(format!("&end={}", at(-10))), 0);

    // Outside the subset: 422 bad_data naming the part.
    let (code, body) = http_get(&api, "/api/v1/query?query=cpu%20offset%205m").expect("answer");
    assert_eq!(code, 422, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["errorType"], "bad_data", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("offset")),
        "{body}"
    );

    // The only worker killed: its shard cannot answer, and the answer says so.
    cluster.workers.get_mut("w1").expect("w1").kill9();
    let path = format!("/api/v1/query?query=cpu&time={}&timeout=5s", at(30));
    let (code, body) = http_get(&api, &path).expect("answer");
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    let warning = body["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("partial answer: shards w1 did not answer (w1: "),
        "{body}"
    );
    assert_eq!(body["data"]["result"], serde_json::json!([]), "{body}");
}

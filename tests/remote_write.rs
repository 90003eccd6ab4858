//! Export end to end: a real leader and worker pull a fixture over the private sshd and ship
//! the committed samples with Prometheus remote-write to Debian's `victoria-metrics`, started
//! here on 127.0.0.1. Victoria's `avg_over_time`/`max_over_time` at sqd's step must equal
//! sqd's own answer; a receiver that is down (and a worker `kill -9`ed meanwhile) loses
//! nothing: the samples wait in the on-disk queue and arrive when it comes back.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::files::leftovers;
use support::sshd::Sshd;
use support::*;

const VICTORIA: &str = "/usr/bin/victoria-metrics";
const STEP_S: i64 = 60;

/// A VictoriaMetrics server of its own, killed when dropped.
struct Victoria {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Victoria {
    /// Starts victoria-metrics on `addr` with its data in `data` and waits for `/health`.
    fn start(addr: &str, data: &Path) -> Victoria {
        let v = Victoria::spawn(addr, data, &[]);
        wait_until(Duration::from_secs(30), "victoria-metrics /health", || {
            http_get(&v.addr, "/health").filter(|(code, _)| *code == 200)
        });
        v
    }

    /// Starts victoria-metrics with extra flags and waits until it accepts connections.
    fn start_tls(addr: &str, data: &Path, cert: &Path, key: &Path) -> Victoria {
        let tls = [
            "-tls".to_owned(),
            format!("-tlsCertFile={}", cert.display()),
            format!("-tlsKeyFile={}", key.display()),
        ];
        let v = Victoria::spawn(addr, data, &tls);
        wait_until(
            Duration::from_secs(30),
            "victoria-metrics listening",
            || std::net::TcpStream::connect(&v.addr).ok(),
        );
        v
    }

    fn spawn(addr: &str, data: &Path, extra: &[String]) -> Victoria {
        let log = data.with_extension("log");
        let out = std::fs::File::create(&log).expect("victoria log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new(VICTORIA)
            .arg(format!("-httpListenAddr={addr}"))
            .arg(format!("-storageDataPath={}", data.display()))
            .args(["-retentionPeriod=10y", "-search.latencyOffset=0s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {VICTORIA} ({e}); scripts/test.sh installs victoria-metrics")
            });
        Victoria {
            child,
            addr: addr.to_owned(),
            log,
        }
    }

    /// Makes what was ingested searchable now (victoria buffers recent rows).
    fn flush(&self) {
        let flushed = http_get(&self.addr, "/internal/force_flush");
        assert_eq!(flushed.map(|r| r.0), Some(200), "force_flush");
    }

    /// `/api/v1/query_range` as (client, host, t) → value.
    fn range(&self, query: &str, start: i64, end: i64) -> BTreeMap<(String, String, i64), f64> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={STEP_S}&nocache=1",
            encode(query)
        );
        let (code, body) = http_get(&self.addr, &path).expect("victoria answers");
        assert_eq!(code, 200, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).expect("victoria json");
        let mut out = BTreeMap::new();
        for s in v["data"]["result"].as_array().expect("result") {
            let label = |k: &str| s["metric"][k].as_str().unwrap_or("").to_owned();
            for p in s["values"].as_array().expect("values") {
                let t = p[0].as_i64().expect("whole seconds");
                let x: f64 = p[1].as_str().expect("value").parse().expect("number");
                out.insert((label("client"), label("host"), t), x);
            }
        }
        out
    }

    /// One instant value of `query` at `time`, if any series answers.
    fn instant(&self, query: &str, time: i64) -> Option<f64> {
        let path = format!(
            "/api/v1/query?query={}&time={time}&nocache=1",
            encode(query)
        );
        let (_, body) = http_get(&self.addr, &path)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- last lines of victoria-metrics -----");
            for line in text.lines().rev().take(20).collect::<Vec<_>>().iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A loopback address nothing listens on right now.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Writes `files` JSON-lines files of `cpu` for hosts h0/h1, 10 s apart, never on a minute
/// boundary (sqd's bucket [t, t+60) and victoria's window (t, t+60] then hold the same
/// samples); returns how many samples were written.
fn produce(dir: &Path, from_s: i64, files: usize) -> u64 {
    let aside = dir.with_extension("aside");
    std::fs::create_dir_all(&aside).expect("aside dir");
    let mut n = 0;
    for f in 0..files {
        let mut text = String::new();
        for line in 0..30 {
            let k = (f * 30 + line) as i64;
            let ts = from_s + 5 + 10 * (k / 2);
            let value = ((k * 37) % 101) as f64 / 8.0 - 3.0;
            text.push_str(&format!(
                "{{\"ts\": {ts}, \"host\": \"h{}\", \"cpu\": {value}}}\n",
                k % 2
            ));
            n += 1;
        }
        let name = format!("f{f:04}.jsonl");
        std::fs::write(aside.join(&name), text).expect("write");
        std::fs::rename(aside.join(&name), dir.join(&name)).expect("rename in");
    }
    n
}

/// A worker config sending to `addr` with short pauses (the test's time is bounded).
fn worker_config(dir: &Path, addr: &str) -> String {
    worker_config_with(dir, &format!("http://{addr}"), "")
}

fn worker_config_with(dir: &Path, base: &str, extra: &str) -> String {
    let path = dir.join("worker-rw.toml");
    let text = format!(
        "{extra}remote_write_url = \"{base}/api/v1/write\"\n\
         remote_write_interval_ms = 200\n\
         remote_write_max_backoff_s = 1\n\
         remote_write_batch_samples = 100\n"
    );
    std::fs::write(&path, text).expect("write config");
    path.to_string_lossy().into_owned()
}

fn start_worker(cluster: &mut Cluster, config: &str) -> String {
    let _ = std::fs::remove_file(cluster.store_dir("w1").join("metrics.addr"));
    let args = [
        "--config",
        config,
        "--settle-ms",
        "300",
        "--poll-ms",
        "100",
        "--metrics",
        "127.0.0.1:0",
    ];
    cluster.spawn_worker_with("w1", &args, &[]);
    wait_addr_file(&cluster.store_dir("w1").join("metrics.addr"))
}

fn rw_metric(metrics_addr: &str, name: &str) -> Option<f64> {
    let (_, page) = http_get(metrics_addr, "/metrics")?;
    metric(&page, &format!("sqd_worker_remote_write_{name}"))
}

fn add_client(cluster: &Cluster, sshd: &Sshd) -> PathBuf {
    let dir = cluster.dir.path().join("src-web");
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let extra = ["--format", "jsonl", "--key", &key, "--known-hosts", &kh];
    cluster.add_ssh_client("web", sshd, &dir, &extra)
}

/// sqd's `--json` answer as (client, host, bucket start) → value.
fn sqd_points(
    cluster: &Cluster,
    agg: &str,
    from_s: i64,
    to_s: i64,
) -> BTreeMap<(String, String, i64), f64> {
    let (from, to) = (from_s.to_string(), to_s.to_string());
    let args = [
        "query", "cpu", "--from", &from, "--to", &to, "--step", "60s", "--agg", agg, "--json",
    ];
    let out = cluster.ctl(&args);
    assert!(out.status.success(), "{agg}: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("query json");
    assert_eq!(v["partial"], false, "{v}");
    let mut points = BTreeMap::new();
    for s in v["series"].as_array().expect("series") {
        let label = |k: &str| s["labels"][k].as_str().unwrap_or("").to_owned();
        for p in s["points"].as_array().expect("points") {
            let t = p[0].as_i64().expect("whole seconds");
            points.insert(
                (label("client"), label("host"), t),
                p[1].as_f64().expect("value"),
            );
        }
    }
    points
}

#[test]
fn victoria_metrics_answers_what_sqd_answers() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    let vm = Victoria::start(&free_addr(), &cluster.dir.path().join("victoria"));
    let config = worker_config(cluster.dir.path(), &vm.addr);
    let metrics = start_worker(&mut cluster, &config);
    cluster.wait_alive(1);
    let dir = add_client(&cluster, &sshd);
    // Two hours ago, on a minute: inside victoria's retention, outside its latency offset.
    let from_s = (sqd::clock::unix_ms() / 1000 / 60 - 120) * 60;
    let written = produce(&dir, from_s, 12);
    wait_until(Duration::from_secs(60), "every file pulled", || {
        (leftovers(&dir) == (0, 0)).then_some(())
    });
    wait_until(Duration::from_secs(60), "every sample shipped", || {
        (rw_metric(&metrics, "sent_samples_total") == Some(written as f64)
            && rw_metric(&metrics, "queued_samples") == Some(0.0))
        .then_some(())
    });
    assert_eq!(rw_metric(&metrics, "dropped_samples_total"), Some(0.0));
    assert_eq!(rw_metric(&metrics, "rejected_samples_total"), Some(0.0));
    vm.flush();
    let to_s = from_s + 3600;
    for agg in ["avg", "max"] {
        let ours = sqd_points(&cluster, agg, from_s, to_s);
        assert!(ours.len() >= 10, "{agg}: sqd has too few points: {ours:?}");
        // Victoria's point at t covers (t-60, t]: sqd's bucket starting at t-60.
        let query = format!("{agg}_over_time(cpu[{STEP_S}s])");
        let theirs: BTreeMap<_, _> =
            wait_until(Duration::from_secs(30), "victoria's points", || {
                let got = vm.range(&query, from_s + STEP_S, to_s);
                (got.len() >= ours.len()).then_some(got)
            })
            .into_iter()
            .map(|((c, h, t), v)| ((c, h, t - STEP_S), v))
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{agg}: the same series and buckets"
        );
        for (k, a) in &ours {
            let b = theirs[k];
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                "{agg} at {k:?}: sqd {a}, victoria {b}"
            );
        }
    }
}

#[test]
fn samples_wait_on_disk_while_the_receiver_is_down_and_arrive_whole() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    let vm_addr = free_addr();
    let config = worker_config(cluster.dir.path(), &vm_addr);
    let metrics = start_worker(&mut cluster, &config);
    cluster.wait_alive(1);
    let dir = add_client(&cluster, &sshd);
    let from_s = (sqd::clock::unix_ms() / 1000 / 60 - 120) * 60;
    let written = produce(&dir, from_s, 6);
    wait_until(Duration::from_secs(60), "every file pulled", || {
        (leftovers(&dir) == (0, 0)).then_some(())
    });
    wait_until(
        Duration::from_secs(30),
        "the samples queued, the sender failing",
        || {
            (rw_metric(&metrics, "queued_samples") == Some(written as f64)
                && rw_metric(&metrics, "failing") == Some(1.0)
                && rw_metric(&metrics, "retries_total").is_some_and(|r| r >= 1.0))
            .then_some(())
        },
    );
    // A crash while the receiver is away: the queue is on disk.
    if let Some(w) = cluster.workers.get_mut("w1") {
        w.kill9();
    }
    let metrics = start_worker(&mut cluster, &config);
    let vm = Victoria::start(&vm_addr, &cluster.dir.path().join("victoria"));
    wait_until(Duration::from_secs(60), "the queue drained", || {
        (rw_metric(&metrics, "queued_samples") == Some(0.0)
            && rw_metric(&metrics, "sent_samples_total") == Some(written as f64))
        .then_some(())
    });
    assert_eq!(rw_metric(&metrics, "dropped_samples_total"), Some(0.0));
    assert_eq!(rw_metric(&metrics, "failing"), Some(0.0));
    vm.flush();
    let query = "sum(count_over_time(cpu[1d]))";
    let at = sqd::clock::unix_ms() / 1000;
    let counted = wait_until(Duration::from_secs(30), "victoria's count", || {
        vm.instant(query, at).filter(|n| *n >= written as f64)
    });
    assert_eq!(counted, written as f64, "each sample once, none lost");
}

/// A CA and a certificate for 127.0.0.1 it signs, as PEM files: (ca, cert, key).
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "remote-write test CA");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let issuer = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA");
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    let paths = (dir.join("ca.pem"), dir.join("vm.pem"), dir.join("vm.key"));
    std::fs::write(&paths.0, issuer.pem()).expect("write CA");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

#[test]
fn https_receivers_are_checked_against_the_configured_ca() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    let (ca, cert, key) = pki(cluster.dir.path());
    let vm = Victoria::start_tls(
        &free_addr(),
        &cluster.dir.path().join("victoria"),
        &cert,
        &key,
    );
    let extra = format!("remote_write_tls_ca = \"{}\"\n", ca.display());
    let config = worker_config_with(cluster.dir.path(), &format!("https://{}", vm.addr), &extra);
    let metrics = start_worker(&mut cluster, &config);
    cluster.wait_alive(1);
    let dir = add_client(&cluster, &sshd);
    let from_s = (sqd::clock::unix_ms() / 1000 / 60 - 120) * 60;
    let written = produce(&dir, from_s, 2);
    wait_until(
        Duration::from_secs(60),
        "every sample shipped over TLS",
        || {
            (rw_metric(&metrics, "sent_samples_total") == Some(written as f64)
                && rw_metric(&metrics, "queued_samples") == Some(0.0))
            .then_some(())
        },
    );
    // The same receiver through the system's CAs, which do not know ours: nothing goes.
    if let Some(w) = cluster.workers.get_mut("w1") {
        w.kill9();
    }
    let config = worker_config_with(cluster.dir.path(), &format!("https://{}", vm.addr), "");
    let metrics = start_worker(&mut cluster, &config);
    let more = produce(&dir, from_s + 3600, 1);
    wait_until(
        Duration::from_secs(60),
        "the untrusted receiver refused by TLS",
        || {
            (rw_metric(&metrics, "queued_samples") == Some(more as f64)
                && rw_metric(&metrics, "failing") == Some(1.0))
            .then_some(())
        },
    );
    assert_eq!(
        rw_metric(&metrics, "sent_samples_total"),
        Some(written as f64)
    );
}

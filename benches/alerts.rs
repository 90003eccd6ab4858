//! Bench set `alerts`, driven by `scripts/bench.sh` (one JSON object on stdout): `--rules`
//! rules × `--series` series each on `--workers` real workers (shards filled beforehand with
//! the last 10 minutes of every series, below the threshold), a real leader evaluating every
//! rule every `--every-s` through the fan-out. Measured: each rule's round (read + durable
//! evaluation; from the leader's `alert round` debug lines) p50/p99/max over `--window-s`, the
//! leader's CPU over that window (% of one core), and the notification latency of
//! `--crossings` threshold crossings: a producer file pulled over the private sshd, from its
//! rename into the client's directory (the commit is later, so this includes the pull) to the
//! line on `sqdctl alerts --follow --json`, p50/p99 (firing and resolved alike).
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqd::stats::block::Samples;
use sqd::stats::tsdb::{self, FileSamples, Limits, SeriesCache, SeriesKey};
use support::Cluster;
use support::sshd::Sshd;

fn opt(args: &[String], key: &str, default: i64) -> i64 {
    args.iter()
        .position(|a| a == &format!("--{key}"))
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// One shard: `load{rule, host}` for this shard's (rule, host) pairs, every 10 s over the last
/// 10 minutes, values 0..50 (the threshold is 90).
fn fill(store: &Path, pairs: &[(usize, usize)], now_ms: i64) {
    std::fs::create_dir_all(store).expect("store dir");
    let mut conn = rusqlite::Connection::open(store.join("catalog.sqlite")).expect("catalog");
    conn.execute_batch("PRAGMA journal_mode=WAL;").expect("wal");
    conn.execute_batch(tsdb::SCHEMA).expect("schema");
    let mut cache = SeriesCache::default();
    let limits = Limits {
        max_series: 10_000_000,
    };
    let mut file = FileSamples::default();
    for &(r, h) in pairs {
        let key = SeriesKey {
            metric: "load".into(),
            labels: vec![
                ("host".into(), format!("h{h:03}")),
                ("rule".into(), format!("r{r:03}")),
            ],
        };
        let mut s = Samples::default();
        let mut ts = now_ms - 600_000;
        while ts < now_ms {
            s.push(ts, ((ts / 10_000 + h as i64) % 50) as f64);
            ts += 10_000;
        }
        file.series.insert(key, s);
    }
    let tx = conn.transaction().expect("tx");
    tsdb::write_file(&tx, &mut cache, "bench", &file, limits).expect("write");
    tx.commit().expect("commit");
    cache.committed();
}

fn rules_toml(rules: usize, every_s: i64) -> String {
    let mut text = String::from(
        "[builtin]\nworker_dead = false\nclient_error = false\nclient_backlog_old = false\n\
         shard_unanswered = false\n\n",
    );
    for r in 0..rules {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{r:03}\"\nmetric = \"load\"\nwhere = [\"rule=r{r:03}\"]\n\
             agg = \"last\"\nwindow = \"15m\"\nby = [\"host\"]\nop = \">\"\nthreshold = 90\n\
             every = \"{every_s}s\"\n\n"
        ));
    }
    text
}

fn cpu_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    t(14) + t(15)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Round times (ms) logged since byte `from` of the leader's log.
fn rounds(log: &str, from: usize) -> Vec<f64> {
    (log.get(from..).unwrap_or(""))
        .lines()
        .filter(|l| l.contains("alert round"))
        .filter_map(|l| {
            let at = l.find("round_ms=")? + "round_ms=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// A follower's notifications: (when, rule, host, state).
type Seen = (Instant, String, String, String);

fn follow(leader: &str) -> (std::process::Child, mpsc::Receiver<Seen>) {
    let mut child = Command::new(support::SQDCTL)
        .args(["alerts", "--follow", "--json"])
        .env("SQD_LEADER", leader)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqdctl alerts --follow");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let s = |x: &Value| x.as_str().unwrap_or("").to_owned();
            let seen = (
                Instant::now(),
                s(&v["rule"]),
                s(&v["labels"]["host"]),
                s(&v["state"]),
            );
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Writes one sample of `load{rule, host}` through the producer's directory; returns when it
/// was renamed in.
fn write(dir: &Path, n: usize, rule: &str, host: &str, value: f64) -> Instant {
    let aside = dir.with_extension("aside");
    std::fs::create_dir_all(&aside).expect("aside");
    let name = format!("x-{n:05}.jsonl");
    let ts = sqd::clock::unix_ms() / 1000;
    let line = format!(
        "{{\"ts\": {ts}, \"rule\": \"{rule}\", \"host\": \"{host}\", \"load\": {value}}}\n"
    );
    std::fs::write(aside.join(&name), line).expect("write");
    std::fs::rename(aside.join(&name), dir.join(&name)).expect("rename");
    Instant::now()
}

fn crossing_latencies(
    cluster: &Cluster,
    sshd: &Sshd,
    n_rules: usize,
    crossings: usize,
    every_s: i64,
) -> Vec<f64> {
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let dir = cluster.dir.path().join("src-bench");
    let extra = [
        "--format",
        "jsonl",
        "--key",
        &key,
        "--known-hosts",
        &kh,
        "--label-fields",
        "rule,host",
    ];
    cluster.add_ssh_client("bench", sshd, &dir, &extra);
    let (mut child, rx) = follow(&cluster.leader_addr);
    std::thread::sleep(Duration::from_secs(1));
    let mut out = Vec::new();
    let wait = Duration::from_secs(every_s as u64 * 3 + 30);
    for k in 0..crossings {
        let rule = format!("r{:03}", (k * 7) % n_rules);
        let host = "h000";
        for (i, (value, state)) in [(95.0, "firing"), (10.0, "resolved")].iter().enumerate() {
            // Spread the writes over the rule's period: a write right after the notification
            // of the previous one would always land just after a tick and wait a whole `every`.
            let n = (k * 2 + i) as u64;
            std::thread::sleep(Duration::from_millis(n * 3_700 % (every_s as u64 * 1000)));
            let at = write(&dir, k * 2 + i, &rule, host, *value);
            let deadline = Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let (t, r, h, s) = rx.recv_timeout(left).expect("the notification");
                if r == rule && h == host && s == *state {
                    out.push((t - at).as_secs_f64() * 1000.0);
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

/// Restarts the leader on its address with the alert engine's debug lines on (RUST_LOG wins
/// over --log-level, and the support code starts every process with RUST_LOG=info).
fn debug_leader(cluster: &mut Cluster) {
    let addr = cluster.leader_addr.clone();
    if let Some(mut old) = cluster.leader.take() {
        old.kill9();
    }
    let state = cluster.state_dir();
    let _ = std::fs::remove_file(state.join("leader.addr"));
    let mut args = support::leader_args(
        &addr,
        &state,
        &[
            "--cluster",
            "test",
            "--heartbeat-ms",
            "500",
            "--lease-ms",
            "1500",
        ],
    );
    args.extend(cluster.leader_extra.iter().cloned());
    let env = [("RUST_LOG", "info,sqd::leader::alerting=debug")];
    let proc = support::Proc::spawn("leader", cluster.dir.path(), &args, &env);
    cluster.leader = Some(proc);
    support::wait_addr_file(&state.join("leader.addr"));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let workers = opt(&args, "workers", 3) as usize;
    let n_rules = opt(&args, "rules", 500) as usize;
    let n_series = opt(&args, "series", 100) as usize;
    let every_s = opt(&args, "every-s", 10);
    let window_s = opt(&args, "window-s", 60);
    let crossings = opt(&args, "crossings", 20) as usize;

    let sshd = Sshd::start();
    let rules_dir = tempfile::tempdir().expect("rules dir");
    let rules_path = rules_dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules_toml(n_rules, every_s)).expect("rules");
    let rules = rules_path.to_str().expect("utf-8").to_owned();
    let mut cluster = Cluster::start_with(500, 1500, &["--rules-file", &rules]);
    debug_leader(&mut cluster);
    let now_ms = sqd::clock::unix_ms();
    let ids: Vec<String> = (1..=workers).map(|k| format!("w{k}")).collect();
    let pairs: Vec<(usize, usize)> = (0..n_rules)
        .flat_map(|r| (0..n_series).map(move |h| (r, h)))
        .collect();
    std::thread::scope(|s| {
        for (k, id) in ids.iter().enumerate() {
            let store = cluster.store_dir(id);
            let mine: Vec<(usize, usize)> = (pairs.iter())
                .enumerate()
                .filter(|(i, _)| i % workers == k)
                .map(|(_, p)| *p)
                .collect();
            s.spawn(move || fill(&store, &mine, now_ms));
        }
    });
    for id in &ids {
        cluster.spawn_worker_with(id, &["--settle-ms", "300", "--poll-ms", "100"], &[]);
    }
    cluster.wait_alive(workers);
    let leader = cluster.leader.as_ref().expect("leader");
    let pid = leader.pid();
    // Two rounds of every rule to settle, then the measured window.
    std::thread::sleep(Duration::from_secs(2 * every_s as u64));
    let log_from = leader.log_text().len();
    let ticks = cpu_ticks(pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(window_s as u64));
    let cpu_s = (cpu_ticks(pid) - ticks) / 100.0;
    let wall_s = started.elapsed().as_secs_f64();
    let round_ms = rounds(&leader.log_text(), log_from);
    let latencies = crossing_latencies(&cluster, &sshd, n_rules, crossings, every_s);
    let out = json!({
        "workers": workers, "rules": n_rules, "series_per_rule": n_series, "every_s": every_s,
        "window_s": wall_s, "rounds": round_ms.len(),
        "round_p50_ms": percentile(&round_ms, 50.0), "round_p99_ms": percentile(&round_ms, 99.0),
        "round_max_ms": round_ms.iter().copied().fold(0.0, f64::max),
        "leader_cpu_pct_one_core": cpu_s / wall_s * 100.0,
        "crossings": crossings, "notifications": latencies.len(),
        "latency_p50_ms": percentile(&latencies, 50.0),
        "latency_p99_ms": percentile(&latencies, 99.0),
    });
    println!("{out}");
}

//! Cluster queries end to end: real leader, three real workers pulling over the private sshd,
//! `sqdctl query` through the leader's fan-out. The oracle is what the producers wrote (a client
//! moving between workers leaves its samples in several shards), and for partial answers the
//! union of the live shards read offline.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::files::leftovers;
use support::sshd::Sshd;
use support::*;

const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];
const STEP_S: i64 = 60;

/// (client, host) → (ts_ms, value) written.
type Written = BTreeMap<(String, String), Vec<(i64, f64)>>;

struct Producer {
    client: String,
    dir: PathBuf,
    files: usize,
}

impl Producer {
    /// Writes `n` JSON-lines files of 20 samples of `cpu` (aside, then renamed in).
    fn write(&mut self, n: usize, base_ms: i64, written: &mut Written) {
        let aside = self.dir.with_extension("aside");
        std::fs::create_dir_all(&aside).expect("aside dir");
        for _ in 0..n {
            let f = self.files;
            self.files += 1;
            let mut text = String::new();
            for line in 0..20 {
                let host = format!("h{}", line % 2);
                let ts_ms = base_ms + (f as i64 * 20 + line as i64) * 7_000;
                let value = (f * 31 + line * 7) as f64 / 4.0;
                text.push_str(&format!(
                    "{{\"ts\": {}, \"host\": \"{host}\", \"cpu\": {value}}}\n",
                    ts_ms / 1000
                ));
                (written.entry((self.client.clone(), host)).or_default()).push((ts_ms, value));
            }
            let name = format!("{}-{f:04}.jsonl", self.client);
            std::fs::write(aside.join(&name), text).expect("write");
            std::fs::rename(aside.join(&name), self.dir.join(&name)).expect("rename in");
        }
    }
}

fn producers(cluster: &Cluster, sshd: &Sshd, names: &[&str]) -> Vec<Producer> {
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    names
        .iter()
        .map(|client| {
            let dir = cluster.dir.path().join(format!("src-{client}"));
            let extra = ["--format", "jsonl", "--key", &key, "--known-hosts", &kh];
            cluster.add_ssh_client(client, sshd, &dir, &extra);
            Producer {
                client: (*client).to_owned(),
                dir,
                files: 0,
            }
        })
        .collect()
}

/// A series' labels and a bucket's start (unix s).
type Point = (BTreeMap<String, String>, i64);
/// (labels, bucket start s) → value, from an answer in the `--json` shape.
type Points = BTreeMap<Point, f64>;

fn points(answer: &Value) -> Points {
    let mut out = Points::new();
    for s in answer["series"].as_array().expect("series") {
        let labels: BTreeMap<String, String> = (s["labels"].as_object().expect("labels"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_owned()))
            .collect();
        for p in s["points"].as_array().expect("points") {
            let t = p[0].as_i64().expect("whole seconds");
            out.insert((labels.clone(), t), p[1].as_f64().expect("value"));
        }
    }
    out
}

/// What a single store holding every written sample answers, per aggregation.
fn expected(written: &Written, from_s: i64, agg: &str) -> Points {
    let mut buckets: BTreeMap<Point, Vec<(i64, f64)>> = BTreeMap::new();
    for ((client, host), samples) in written {
        let labels = BTreeMap::from([
            ("client".to_owned(), client.clone()),
            ("host".to_owned(), host.clone()),
        ]);
        for &(ts, v) in samples {
            let b = from_s + (ts / 1000 - from_s) / STEP_S * STEP_S;
            buckets
                .entry((labels.clone(), b))
                .or_default()
                .push((ts, v));
        }
    }
    (buckets.into_iter())
        .map(|(k, mut xs)| {
            xs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let vals = xs.iter().map(|x| x.1);
            let v = match agg {
                "count" => xs.len() as f64,
                "sum" => vals.sum(),
                "min" => vals.fold(f64::INFINITY, f64::min),
                "max" => vals.fold(f64::NEG_INFINITY, f64::max),
                "avg" => vals.sum::<f64>() / xs.len() as f64,
                _ => xs.last().map_or(f64::NAN, |x| x.1),
            };
            (k, v)
        })
        .collect()
}

fn close(a: &Points, b: &Points) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb && (va - vb).abs() <= 1e-9 * va.abs().max(vb.abs()).max(1.0)
        })
}

fn query_json(cluster: &Cluster, args: &[&str]) -> (Value, std::process::Output) {
    let out = cluster.ctl(args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (v, out)
}

fn owner(cluster: &Cluster, client: &str) -> Option<String> {
    cluster
        .status()
        .and_then(|s| assignments(&s).get(client).cloned())
        .and_then(|(w, _)| w)
}

#[test]
fn a_client_moving_between_three_workers_is_answered_whole() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    for id in ["w1", "w2", "w3"] {
        cluster.spawn_worker_with(id, FAST, &[]);
    }
    cluster.wait_alive(3);
    let mut ps = producers(&cluster, &sshd, &["mover"]);
    let base_ms = (sqd::clock::unix_ms() / 60_000 - 60) * 60_000;
    let mut written = Written::new();
    let mut served_by = Vec::new();
    // Write, let the owner commit some, drain it (the client moves), write on; three moves.
    for round in 0..4 {
        ps[0].write(3, base_ms, &mut written);
        let now = wait_until(Duration::from_secs(30), "an owner", || {
            owner(&cluster, "mover")
        });
        served_by.push(now.clone());
        wait_until(Duration::from_secs(30), "this round's files pulled", || {
            (leftovers(&ps[0].dir) == (0, 0)).then_some(())
        });
        if round == 3 {
            break;
        }
        ps[0].write(2, base_ms, &mut written);
        let out = cluster.ctl(&["drain-worker", &now]);
        assert!(out.status.success(), "drain: {}", text(&out.stderr));
        wait_until(Duration::from_secs(30), "the client to move", || {
            owner(&cluster, "mover").filter(|w| *w != now)
        });
        let out = cluster.ctl(&["undrain-worker", &now]);
        assert!(out.status.success(), "undrain: {}", text(&out.stderr));
    }
    wait_until(Duration::from_secs(60), "every source removed", || {
        (leftovers(&ps[0].dir) == (0, 0)).then_some(())
    });
    served_by.dedup();
    assert!(served_by.len() >= 3, "the client moved: {served_by:?}");
    let from_s = base_ms / 1000;
    let (from, to) = (from_s.to_string(), (from_s + 4 * 3600).to_string());
    for agg in ["count", "sum", "min", "max", "avg", "last"] {
        let want = expected(&written, from_s, agg);
        let args = [
            "query", "cpu", "--from", &from, "--to", &to, "--step", "60s", "--agg", agg, "--json",
        ];
        let (answer, out) = query_json(&cluster, &args);
        assert!(out.status.success(), "{agg}: {}", text(&out.stderr));
        assert_eq!(answer["partial"], false, "{answer}");
        // The three workers and the leader's own shard (host metrics).
        assert_eq!(
            answer["shards"]["answered"].as_array().map(Vec::len),
            Some(4)
        );
        assert!(
            close(&points(&answer), &want),
            "{agg}: {answer}\nwant {want:?}"
        );
    }
    // Grouped by host: the two hosts' series of the one client, each over every shard.
    let args = [
        "query", "cpu", "--from", &from, "--to", &to, "--step", "60s", "--agg", "count", "--by",
        "host", "--json",
    ];
    let (answer, out) = query_json(&cluster, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let total: f64 = points(&answer).values().sum();
    assert_eq!(total as usize, ps[0].files * 20, "{answer}");
    // series and metrics see every shard too.
    let out = cluster.ctl(&["series", "cpu", "--where", "client=mover", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("series json");
    assert_eq!(v["series"].as_array().map(Vec::len), Some(2), "{v}");
    let out = cluster.ctl(&["metrics"]);
    // Besides the clients' stats, the leader's shard holds the nodes' host metrics.
    let names = text(&out.stdout);
    let stats: Vec<&str> = (names.lines())
        .filter(|m| !m.starts_with("sqd_host_"))
        .collect();
    assert_eq!(stats, ["cpu"], "{names}");
}

/// Sends SIGCONT to a stopped worker when the test ends, however it ends.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// The answer of one store read offline, as `sqd --mode worker query --json` prints it.
fn offline(cluster: &Cluster, id: &str, args: &[&str]) -> Points {
    let store = cluster.store_dir(id);
    let mut all = vec![
        "--mode",
        "worker",
        "query",
        "--store",
        store.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    let out = sqd_output(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    points(&serde_json::from_slice(&out.stdout).expect("json"))
}

#[test]
fn a_stopped_and_a_killed_worker_give_a_named_partial_answer_in_time() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    for id in ["w1", "w2", "w3"] {
        cluster.spawn_worker_with(id, FAST, &[]);
    }
    cluster.wait_alive(3);
    let mut ps = producers(&cluster, &sshd, &["a", "b", "c", "d", "e", "f"]);
    let base_ms = (sqd::clock::unix_ms() / 60_000 - 60) * 60_000;
    let mut written = Written::new();
    for p in &mut ps {
        p.write(3, base_ms, &mut written);
    }
    wait_until(Duration::from_secs(60), "every source removed", || {
        ps.iter().all(|p| leftovers(&p.dir) == (0, 0)).then_some(())
    });
    let from_s = base_ms / 1000;
    let (from, to) = (from_s.to_string(), (from_s + 3600).to_string());
    let q = [
        "cpu", "--from", &from, "--to", &to, "--step", "60s", "--agg", "sum", "--json",
    ];
    let whole: Vec<&str> = std::iter::once("query").chain(q).collect();
    let (answer, _) = query_json(&cluster, &whole);
    assert!(
        close(&points(&answer), &expected(&written, from_s, "sum")),
        "{answer}"
    );

    // Which shards hold data: the live one's answer must be exactly its own.
    let live = "w1";
    let want = offline(&cluster, live, &q);
    assert!(!want.is_empty(), "{live} holds samples");
    let stopped = cluster.workers["w2"].pid();
    let _resume = Resume(stopped);
    let st = std::process::Command::new("kill")
        .args(["-STOP", &stopped.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(st.success());
    cluster.workers.get_mut("w3").expect("w3").kill9();

    let deadline = Duration::from_secs(3);
    let mut args: Vec<&str> = whole.clone();
    args.extend(["--timeout", "3s"]);
    let started = Instant::now();
    let (answer, out) = query_json(&cluster, &args);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(took < deadline.mul_f64(1.1), "answered after {took:?}");
    assert_eq!(answer["partial"], true, "{answer}");
    assert_eq!(
        answer["shards"]["answered"],
        serde_json::json!(["leader", live]),
        "{answer}"
    );
    assert_eq!(
        answer["shards"]["timed_out"],
        serde_json::json!(["w2"]),
        "{answer}"
    );
    assert!(answer["shards"]["failed"]["w3"].is_string(), "{answer}");
    assert!(close(&points(&answer), &want), "{answer}\nwant {want:?}");
    let warning = text(&out.stderr);
    assert!(
        warning.contains("partial") && warning.contains("w2") && warning.contains("w3"),
        "{warning}"
    );

    let mut args = args.clone();
    args.push("--deny-partial");
    let out = cluster.ctl(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("w2") && err.contains("w3"), "{err}");
}

#[test]
fn bad_query_values_are_named_on_one_line_with_exit_2() {
    for (args, names) in [
        (vec!["query", "cpu", "--from", "yesterday"], "--from"),
        (vec!["query", "cpu", "--to", "later"], "--to"),
        (vec!["query", "cpu", "--step", "0"], "--step"),
        (vec!["query", "cpu", "--agg", "median"], "--agg"),
        (vec!["query", "cpu", "--where", "host"], "--where"),
        (vec!["query", "cpu", "--where", "host=~("], "--where"),
        (vec!["query", "cpu", "--by", ""], "--by"),
        (vec!["query", "cpu", "--timeout", "soon"], "--timeout"),
        (vec!["query", "cpu", "--from", "-1h", "--to", "-2h"], "from"),
        (
            vec!["query", "cpu", "--step", "1s", "--from", "-1d"],
            "11,000",
        ),
        (vec!["series", "--where", "a=b"], "METRIC"),
    ] {
        let out = sqdctl("127.0.0.1:1", &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}

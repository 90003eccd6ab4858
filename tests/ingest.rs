//! End-to-end samples (M1): files of three formats from three producing hosts over a real
//! sshd, two workers, one of them `kill -9`ed mid-stream and restarted. The oracle: for every
//! series, the multiset of (timestamp, value) in the union of the shards equals what the
//! producers wrote — nothing lost, nothing twice — and every source is removed.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use sqd::stats::block::{Encoding, Samples};
use support::files::leftovers;
use support::sshd::Sshd;
use support::*;

const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];

/// Series (metric and its labels as stored) → sorted (ts_ms, value bits).
type Oracle = BTreeMap<(String, String), Vec<(i64, u64)>>;

/// Labels as the shard stores them: a JSON object with sorted keys.
fn labels(pairs: &[(&str, &str)]) -> String {
    let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    serde_json::to_string(&map).expect("labels")
}

struct Producer {
    format: &'static str,
    client: &'static str,
    dir: PathBuf,
    files: usize,
}

impl Producer {
    /// Writes `n` files of 20 lines (aside, then renamed in) and records their samples.
    fn write(&mut self, n: usize, base_ms: i64, oracle: &mut Oracle) {
        let aside = self
            .dir
            .parent()
            .expect("parent")
            .join(format!("aside-{}", self.client));
        std::fs::create_dir_all(&aside).expect("aside dir");
        for _ in 0..n {
            let f = self.files;
            self.files += 1;
            let mut text = String::new();
            for line in 0..20 {
                let host = format!("h{}", line % 3);
                // Distinct per file and line; whole seconds so every precision spells it.
                let ts_ms = base_ms + (f as i64 * 20 + line as i64) * 1000;
                let value = (f * 100 + line) as f64 + 0.5;
                let (metric, row) = match self.format {
                    "jsonl" => (
                        "cpu",
                        format!(
                            "{{\"ts\": {}, \"host\": \"{host}\", \"cpu\": {value}}}\n",
                            ts_ms / 1000
                        ),
                    ),
                    "prom" => (
                        "node_load",
                        format!("node_load{{host=\"{host}\"}} {value} {ts_ms}\n"),
                    ),
                    _ => (
                        "sys_load",
                        format!("sys,host={host} load={value} {}\n", ts_ms / 1000),
                    ),
                };
                text.push_str(&row);
                let key = (
                    metric.to_owned(),
                    labels(&[("client", self.client), ("host", &host)]),
                );
                oracle
                    .entry(key)
                    .or_default()
                    .push((ts_ms, value.to_bits()));
            }
            let ext = match self.format {
                "jsonl" => "jsonl",
                "prom" => "prom",
                _ => "lp",
            };
            let name = format!("{}-{f:04}.{ext}", self.client);
            std::fs::write(aside.join(&name), text).expect("write");
            std::fs::rename(aside.join(&name), self.dir.join(&name)).expect("rename in");
        }
    }
}

/// Every sample of a store's shard, by series.
fn shard_samples(store: &Path, into: &mut Oracle) {
    let path = store.join("catalog.sqlite");
    if !path.exists() {
        return;
    }
    let conn = Connection::open(&path).expect("open catalog");
    let mut stmt = conn
        .prepare(
            "SELECT s.metric, s.labels, b.encoding, b.ts, b.vals
             FROM ts_blocks b JOIN ts_series s ON s.id = b.series",
        )
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(r) = rows.next().expect("row") {
        let encoding = Encoding::from_code(r.get(2).expect("enc")).expect("encoding");
        let ts: Vec<u8> = r.get(3).expect("ts");
        let vals: Vec<u8> = r.get(4).expect("vals");
        let s = Samples::decode(encoding, &ts, &vals).expect("decode");
        let key = (r.get(0).expect("metric"), r.get(1).expect("labels"));
        let out = into.entry(key).or_default();
        out.extend(s.ts.iter().zip(&s.vals).map(|(t, v)| (*t, v.to_bits())));
    }
}

fn union_of_shards(cluster: &Cluster) -> Oracle {
    let mut all = Oracle::new();
    for id in cluster.workers.keys() {
        shard_samples(&cluster.store_dir(id), &mut all);
    }
    all.values_mut().for_each(|v| v.sort_unstable());
    all
}

#[test]
fn three_formats_two_workers_and_a_kill_9_keep_every_sample_exactly_once() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    for id in ["w1", "w2"] {
        cluster.spawn_worker_with(id, FAST, &[]);
    }
    cluster.wait_alive(2);
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let mut producers: Vec<Producer> = [("j", "jsonl"), ("p", "prom"), ("i", "influx")]
        .into_iter()
        .map(|(client, format)| {
            let dir = cluster.dir.path().join(format!("src-{client}"));
            let mut extra = vec!["--format", format, "--key", &key, "--known-hosts", &kh];
            if format == "influx" {
                extra.extend(["--precision", "s"]);
            }
            cluster.add_ssh_client(client, &sshd, &dir, &extra);
            Producer {
                format,
                client,
                dir,
                files: 0,
            }
        })
        .collect();
    let base_ms = (sqd::clock::unix_ms() / 1000 - 1800) * 1000;
    let mut oracle = Oracle::new();
    let drained = |producers: &[Producer]| producers.iter().all(|p| leftovers(&p.dir) == (0, 0));

    for p in &mut producers {
        p.write(10, base_ms, &mut oracle);
    }
    // Mid-stream: as soon as something was committed, the busiest worker dies.
    let status = cluster.wait_status(Duration::from_secs(30), "samples flowing", |st| {
        st["clients"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["samples_total"].as_u64() > Some(0)))
    });
    let victim = assignments(&status)
        .into_values()
        .filter_map(|(w, _)| w)
        .next()
        .expect("an owner");
    for p in &mut producers {
        p.write(10, base_ms, &mut oracle);
    }
    cluster.workers.get_mut(&victim).expect("victim").kill9();
    for p in &mut producers {
        p.write(10, base_ms, &mut oracle);
    }
    std::thread::sleep(Duration::from_secs(2));
    cluster.spawn_worker_with(&victim, FAST, &[]);
    for p in &mut producers {
        p.write(10, base_ms, &mut oracle);
    }
    wait_until(Duration::from_secs(90), "every source removed", || {
        drained(&producers).then_some(())
    });
    oracle.values_mut().for_each(|v| v.sort_unstable());
    let mut got = union_of_shards(&cluster);
    for _ in 0..100 {
        if got == oracle {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        got = union_of_shards(&cluster);
    }
    for (series, want) in &oracle {
        let have = got.get(series).map_or(0, Vec::len);
        assert_eq!(
            have,
            want.len(),
            "{series:?}: samples in the shards vs written"
        );
    }
    assert_eq!(got, oracle, "same counts, different samples");
    assert_eq!(got.len(), 9, "3 clients x 3 hosts");
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 3 * 40 * 20);

    // The counters reach sqdctl status. A worker reports what its shard holds for the clients
    // it serves; one killed after its last heartbeat may under-report a client it no longer
    // serves (as for files), never over-report.
    let status = cluster.wait_status(Duration::from_secs(10), "sample counters", |st| {
        st["clients"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["samples_total"].as_u64() > Some(0)))
    });
    let reported: u64 = status["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["samples_total"].as_u64().unwrap_or(0))
        .sum();
    assert!(reported <= 2400, "{status}");
    for c in status["clients"].as_array().expect("clients") {
        assert_eq!(c["parse_errors_total"], 0, "{c}");
    }
    let store = cluster.store_dir(&victim);
    let store = store.to_str().expect("utf-8");
    let from = (base_ms / 1000).to_string();
    let out = sqd_output(&[
        "--mode", "worker", "query", "--store", store, "cpu", "--from", &from, "--step", "1h",
        "--agg", "count", "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(answer["series"].is_array(), "{answer}");
    // Compaction now, beside the running worker, keeps every sample.
    let out = sqd_output(&["--mode", "worker", "compact", "--store", store]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("compacted"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(union_of_shards(&cluster), oracle);
}

//! Roll-ups end to end: a real leader collecting every second from three real workers that
//! pull over the private sshd. The oracle is what the stores committed (their catalogs read
//! after the run): the sum of every line of `rollups.jsonl` must equal it per client, across a
//! worker `kill -9`ed for several intervals and restarted on its store, and across a leader
//! that crashes right after writing a line (before acknowledging it).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::files::leftovers;
use support::sshd::Sshd;
use support::*;

const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];
const INTERVAL_MS: u64 = 1000;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// files, bytes, samples, parse errors.
type Counts = [u64; 4];

struct Producer {
    dir: PathBuf,
    name: String,
    files: usize,
}

impl Producer {
    /// `n` JSON-lines files of 10 samples, one bad line each (written aside, renamed in).
    fn write(&mut self, n: usize) {
        let aside = self.dir.with_extension("aside");
        std::fs::create_dir_all(&aside).expect("aside dir");
        let now_s = sqd::clock::unix_ms() / 1000;
        for _ in 0..n {
            let f = self.files;
            self.files += 1;
            let mut text = String::new();
            for line in 0..10 {
                text.push_str(&format!(
                    "{{\"ts\": {now_s}, \"host\": \"h{line}\", \"cpu\": {f}}}\n"
                ));
            }
            text.push_str("not json\n");
            let name = format!("{}-{f:04}.jsonl", self.name);
            std::fs::write(aside.join(&name), text).expect("write");
            std::fs::rename(aside.join(&name), self.dir.join(&name)).expect("rename in");
        }
    }
}

fn producers(cluster: &Cluster, sshd: &Sshd, names: &[&str]) -> Vec<Producer> {
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    (names.iter())
        .map(|name| {
            let dir = cluster.dir.path().join(format!("src-{name}"));
            let extra = ["--format", "jsonl", "--key", &key, "--known-hosts", &kh];
            cluster.add_ssh_client(name, sshd, &dir, &extra);
            Producer {
                dir,
                name: (*name).to_owned(),
                files: 0,
            }
        })
        .collect()
}

fn all_pulled(ps: &[Producer]) {
    wait_until(Duration::from_secs(60), "every source pulled", || {
        ps.iter().all(|p| leftovers(&p.dir) == (0, 0)).then_some(())
    });
}

/// Per client, what one store committed: files and bytes from its catalog, samples and parse
/// errors from its shard's own counters.
fn committed_in(store: &Path, into: &mut BTreeMap<String, Counts>) {
    let conn = rusqlite::Connection::open(store.join("catalog.sqlite")).expect("catalog");
    let mut files = conn
        .prepare("SELECT client, COUNT(*), SUM(size) FROM files GROUP BY client")
        .expect("files");
    let rows = files
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .expect("files rows");
    for row in rows {
        let (client, n, bytes) = row.expect("row");
        let c = into.entry(client).or_default();
        c[0] += n as u64;
        c[1] += bytes as u64;
    }
    let mut ingest = conn
        .prepare("SELECT client, samples, parse_errors FROM ts_clients")
        .expect("ts_clients");
    let rows = ingest
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .expect("ingest rows");
    for row in rows {
        let (client, samples, errors) = row.expect("row");
        let c = into.entry(client).or_default();
        c[2] += samples as u64;
        c[3] += errors as u64;
    }
}

fn committed(cluster: &Cluster) -> BTreeMap<String, Counts> {
    let mut out = BTreeMap::new();
    for id in WORKERS {
        committed_in(&cluster.store_dir(id), &mut out);
    }
    out
}

/// Rows a store holds that no line has yet (open, or answered and not acknowledged).
fn unreported_rows(store: &Path) -> i64 {
    let conn = rusqlite::Connection::open(store.join("catalog.sqlite")).expect("catalog");
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM rollup_open) + (SELECT COUNT(*) FROM rollup_answered)",
        [],
        |r| r.get(0),
    )
    .expect("roll-up tables")
}

fn lines(cluster: &Cluster) -> Vec<Value> {
    let text =
        std::fs::read_to_string(cluster.state_dir().join("rollups.jsonl")).unwrap_or_default();
    (text.lines())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

fn summed(lines: &[Value]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for l in lines {
        for (client, c) in l["clients"].as_object().expect("clients") {
            let e = out.entry(client.clone()).or_default();
            for (i, key) in ["files", "bytes", "samples", "parse_errors"]
                .iter()
                .enumerate()
            {
                e[i] += c[key].as_u64().expect("counter");
            }
        }
    }
    out.retain(|_, c| c.iter().any(|&v| v > 0));
    out
}

fn naming(lines: &[Value], worker: &str) -> Vec<u64> {
    (lines.iter())
        .filter(|l| {
            (l["missing_workers"].as_array().expect("missing"))
                .iter()
                .any(|w| w == worker)
        })
        .map(|l| l["collection"].as_u64().expect("collection"))
        .collect()
}

/// Waits until the lines add up to what the stores committed; returns the lines.
fn wait_balanced(cluster: &Cluster, ps: &[Producer]) -> Vec<Value> {
    let produced: usize = ps.iter().map(|p| p.files).sum();
    let want = committed(cluster);
    assert_eq!(
        want.values().map(|c| c[0]).sum::<u64>(),
        produced as u64,
        "{want:?}"
    );
    wait_until(
        Duration::from_secs(30),
        "the roll-ups to add up to the commits",
        || {
            let lines = lines(cluster);
            (summed(&lines) == want).then_some(lines)
        },
    )
}

fn start_three(leader_extra: &[&str]) -> (Sshd, Cluster) {
    let sshd = Sshd::start();
    let interval = INTERVAL_MS.to_string();
    let mut extra = vec!["--rollup-interval-ms", interval.as_str()];
    extra.extend_from_slice(leader_extra);
    let mut cluster = Cluster::start_with(300, 1200, &extra);
    for id in WORKERS {
        cluster.spawn_worker_with(id, FAST, &[]);
    }
    cluster.wait_alive(3);
    (sshd, cluster)
}

#[test]
fn a_worker_killed_for_two_intervals_reports_later_and_nothing_twice() {
    let (sshd, mut cluster) = start_three(&["--metrics", "127.0.0.1:0"]);
    let mut ps = producers(&cluster, &sshd, &["a", "b", "c", "d", "e", "f"]);
    ps.iter_mut().for_each(|p| p.write(3));
    all_pulled(&ps);
    // A victim holding counters no line has acknowledged yet.
    let victim = wait_until(
        Duration::from_secs(20),
        "a worker with unreported counters",
        || {
            ps.iter_mut().for_each(|p| p.write(1));
            all_pulled(&ps);
            WORKERS
                .into_iter()
                .find(|id| unreported_rows(&cluster.store_dir(id)) > 0)
        },
    );
    cluster.workers.get_mut(victim).expect("victim").kill9();
    let killed_at = lines(&cluster).len();
    assert!(unreported_rows(&cluster.store_dir(victim)) > 0);
    // Its clients fail over; the producers go on; at least two lines name the victim.
    ps.iter_mut().for_each(|p| p.write(2));
    all_pulled(&ps);
    wait_until(
        Duration::from_secs(30),
        "two lines naming the killed worker",
        || (naming(&lines(&cluster)[killed_at..], victim).len() >= 2).then_some(()),
    );
    cluster.spawn_worker_with(victim, FAST, &[]);
    cluster.wait_alive(3);
    let back_at = lines(&cluster).len();
    ps.iter_mut().for_each(|p| p.write(2));
    all_pulled(&ps);

    let all = wait_balanced(&cluster, &ps);
    // The missed intervals name it, and only those around its absence.
    let named = naming(&all, victim);
    assert!(named.len() >= 2, "{named:?}");
    // A collection under way while it came back may still name it: one line of slack.
    let window: Vec<u64> = (all[killed_at..(back_at + 1).min(all.len())].iter())
        .map(|l| l["collection"].as_u64().expect("id"))
        .collect();
    assert!(
        named.iter().all(|id| window.contains(id)),
        "{named:?} outside {window:?}"
    );
    // Nothing comes twice later on.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    let later = lines(&cluster);
    assert_eq!(summed(&later), committed(&cluster));
    let last = later.last().expect("a line");
    assert_eq!(last["missing_workers"], serde_json::json!([]), "{last}");
    assert_eq!(last["interval_s"], serde_json::json!(1.0), "{last}");
    // The leader's metrics are the totals of its lines.
    let addr = wait_addr_file(&cluster.state_dir().join("metrics.addr"));
    let (_, page) = http_get(&addr, "/metrics").expect("metrics");
    let files: u64 = summed(&lines(&cluster)).values().map(|c| c[0]).sum();
    assert_eq!(
        metric(&page, "sqd_rollup_files_total"),
        Some(files as f64),
        "{page}"
    );
    // sqdctl rollups prints them.
    let state = cluster.state_dir();
    let out = sqdctl(
        &cluster.leader_addr,
        &[
            "rollups",
            "--last",
            "2",
            "--json",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

/// The leader dies right after a line is durable and before the workers hear it was written
/// (failpoint `rollup_after_line`); restarted, it resumes from that line and counts nothing
/// twice.
#[test]
fn a_leader_crash_between_the_line_and_the_acknowledgement_counts_nothing_twice() {
    let (sshd, mut cluster) = start_three(&[]);
    let mut ps = producers(&cluster, &sshd, &["a", "b", "c"]);
    ps.iter_mut().for_each(|p| p.write(3));
    all_pulled(&ps);
    // The first line that counts something after this restart ends the leader.
    restart_leader_with(&mut cluster, &[("SQD_FAILPOINT", "rollup_after_line")]);
    ps.iter_mut().for_each(|p| p.write(2));
    all_pulled(&ps);
    let started = Instant::now();
    let leader = cluster.leader.as_mut().expect("leader");
    let status = leader
        .wait_exit(Duration::from_secs(20))
        .expect("the failpoint ends the leader");
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    restart_leader_with(&mut cluster, &[]);
    cluster.wait_alive(3);
    ps.iter_mut().for_each(|p| p.write(2));
    all_pulled(&ps);
    wait_balanced(&cluster, &ps);
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    assert_eq!(summed(&lines(&cluster)), committed(&cluster));
}

/// Restarts the leader on its address with `env` (the support's restart takes none).
fn restart_leader_with(cluster: &mut Cluster, env: &[(&str, &str)]) {
    if let Some(mut old) = cluster.leader.take() {
        old.kill9();
    }
    let state = cluster.state_dir();
    let _ = std::fs::remove_file(state.join("leader.addr"));
    let (hb, lease) = (
        cluster.heartbeat_ms.to_string(),
        cluster.lease_ms.to_string(),
    );
    let timing = [
        "--cluster",
        "test",
        "--heartbeat-ms",
        &hb,
        "--lease-ms",
        &lease,
    ];
    let mut args = leader_args(&cluster.leader_addr, &state, &timing);
    args.extend(cluster.leader_extra.iter().cloned());
    cluster.leader = Some(Proc::spawn("leader", cluster.dir.path(), &args, env));
    wait_addr_file(&state.join("leader.addr"));
    let addr = cluster.leader_addr.clone();
    wait_until(
        Duration::from_secs(20),
        "the leader to answer status",
        || {
            sqdctl(&addr, &["status", "--json"])
                .status
                .success()
                .then_some(())
        },
    );
}

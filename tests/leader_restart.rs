//! End-to-end: a leader stopped gracefully while nodes are connected, and a leader restored
//! from an online backup after the cluster moved on (C1, C2). Ownership is read from what the
//! workers did — their "client task started/stopped" log lines — not from the leader's status.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::files::{leftovers, produce, sorted, store_contents};
use support::sshd::Sshd;
use support::{Cluster, assignments, sqd_output, text, wait_until, workers_in};

const HB: u64 = 200;
const LEASE: u64 = 1_000;

/// Microseconds since the Unix epoch of an RFC 3339 UTC timestamp as tracing writes it.
fn micros(ts: &str) -> Option<i64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac: String = frac.chars().chain("000000".chars()).take(6).collect();
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + mi * 60 + s) * 1_000_000) + frac.parse::<i64>().ok()?)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// When each worker ran a task for each client, from the workers' JSON logs.
#[derive(Default)]
struct Timeline {
    /// client → (worker, epoch, from µs, to µs).
    spans: BTreeMap<String, Vec<(String, u64, i64, i64)>>,
}

impl Timeline {
    /// Reads one worker process's log; tasks still running end at `end` (its kill, or now).
    fn absorb(&mut self, worker: &str, log: &str, end: i64) {
        let mut open: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let f = &v["fields"];
            let (Some(msg), Some(client), Some(at)) = (
                f["message"].as_str(),
                f["client"].as_str(),
                v["timestamp"].as_str().and_then(micros),
            ) else {
                continue;
            };
            let epoch = f["epoch"].as_u64().unwrap_or(0);
            match msg {
                "client task started" => {
                    open.insert(client.to_owned(), (epoch, at));
                }
                "client task stopped" => {
                    if let Some((e, from)) = open.remove(client) {
                        self.push(client, worker, e, from, at);
                    }
                }
                _ => {}
            }
        }
        for (client, (e, from)) in open {
            self.push(&client, worker, e, from, end);
        }
    }

    fn push(&mut self, client: &str, worker: &str, epoch: u64, from: i64, to: i64) {
        let spans = self.spans.entry(client.to_owned()).or_default();
        spans.push((worker.to_owned(), epoch, from, to));
    }

    /// No two workers ran a task for one client at the same time.
    fn assert_one_owner(&self) {
        for (client, spans) in &self.spans {
            for (i, a) in spans.iter().enumerate() {
                for b in &spans[i + 1..] {
                    let overlap = a.2 < b.3 && b.2 < a.3;
                    assert!(
                        a.0 == b.0 || !overlap,
                        "{client} held by two workers at once: {a:?} and {b:?}"
                    );
                }
            }
        }
    }

    fn highest_epoch(&self, client: &str) -> u64 {
        self.spans
            .get(client)
            .map_or(0, |s| s.iter().map(|x| x.1).max().unwrap_or(0))
    }
}

fn spawn_worker(c: &mut Cluster, id: &str) {
    let fast = ["--settle-ms", "300", "--poll-ms", "100"];
    c.spawn_worker_with(id, &[&["--log-format", "json"][..], &fast].concat(), &[]);
}

/// Clients whose files really flow, over a private sshd, and what was produced for them.
struct Sources {
    sshd: Sshd,
    dirs: Vec<std::path::PathBuf>,
    produced: Vec<String>,
}

impl Sources {
    fn add(c: &Cluster, names: &[&str]) -> Sources {
        let sshd = Sshd::start();
        let key = sshd.client_key.to_string_lossy().into_owned();
        let known = sshd.known_hosts.to_string_lossy().into_owned();
        let dirs = names
            .iter()
            .map(|name| {
                let dir = c.dir.path().join(format!("src-{name}"));
                std::fs::create_dir_all(&dir).expect("source dir");
                c.add_ssh_client(name, &sshd, &dir, &["--key", &key, "--known-hosts", &known])
            })
            .collect();
        Sources {
            sshd,
            dirs,
            produced: Vec::new(),
        }
    }

    fn produce(&mut self, wave: &str, n: usize) {
        for (i, dir) in self.dirs.iter().enumerate() {
            self.produced
                .extend(produce(dir, &format!("{wave}-{i}"), n));
        }
    }

    /// Every produced file is in exactly one store, once, and no source is left behind.
    fn assert_exactly_once(&self, c: &Cluster) {
        let _ = &self.sshd;
        wait_until(Duration::from_secs(60), "every source drained", || {
            self.dirs
                .iter()
                .all(|d| leftovers(d) == (0, 0))
                .then_some(())
        });
        let mut stored = Vec::new();
        for id in ["w1", "w2", "w3"] {
            stored.extend(store_contents(&c.store_dir(id)).0);
        }
        assert_eq!(
            sorted(stored),
            sorted(self.produced.clone()),
            "stores hold each produced file exactly once"
        );
    }
}

/// Kills a worker with SIGKILL and records what its log says it was doing until then.
fn kill_worker(c: &mut Cluster, timeline: &mut Timeline, id: &str) {
    let proc = c.workers.get_mut(id).expect("worker");
    proc.kill9();
    let end = now_micros();
    timeline.absorb(id, &proc.log_text(), end);
    c.workers.remove(id);
}

fn all_assigned(status: &Value, clients: usize) -> bool {
    let a = assignments(status);
    a.len() == clients && a.values().all(|(w, _)| w.is_some())
}

fn state_flag(c: &Cluster) -> [String; 2] {
    [
        "--state-dir".into(),
        c.state_dir().to_string_lossy().into_owned(),
    ]
}

#[test]
fn a_leader_stop_with_nodes_connected_is_quick_and_a_new_leader_takes_over() {
    let mut c = Cluster::start(HB, LEASE);
    for name in ["c1", "c2", "c3"] {
        c.add_client(name);
    }
    for id in ["w1", "w2", "w3"] {
        spawn_worker(&mut c, id);
    }
    c.spawn_agent("c1");
    c.spawn_agent("c2");
    let before = c.wait_status(
        Duration::from_secs(20),
        "3 workers, one client each, 2 agents",
        |s| {
            let owners: std::collections::BTreeSet<_> = assignments(s)
                .into_values()
                .filter_map(|(w, _)| w)
                .collect();
            workers_in(s, "alive").len() == 3
                && all_assigned(s, 3)
                && owners.len() == 3
                && s["clients"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().filter(|c| c["agent"] == "up").count() == 2)
        },
    );
    let before = assignments(&before);

    let started = Instant::now();
    let [flag, dir] = state_flag(&c);
    let out = sqd_output(&["--mode", "leader", "stop", flag.as_str(), dir.as_str()]);
    let took = started.elapsed();
    assert!(out.status.success(), "stop failed: {}", text(&out.stderr));
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let leader = c.leader.as_mut().expect("leader");
    let exit = leader.wait_exit(Duration::from_secs(2));
    assert!(exit.is_some_and(|s| s.success()), "leader exit: {exit:?}");

    // A new leader on the same state dir and address; the workers re-attach and keep theirs.
    let addr = c.leader_addr.clone();
    c.start_leader(&addr);
    let after = c.wait_status(Duration::from_secs(20), "the workers re-attached", |s| {
        workers_in(s, "alive").len() == 3 && all_assigned(s, 3)
    });
    assert_eq!(assignments(&after), before, "owners and epochs kept");

    // Workers and agents stop as promptly.
    let store = c.store_dir("w1").to_string_lossy().into_owned();
    let watch = c.dir.path().join("watch-c1").to_string_lossy().into_owned();
    for (mode, flag, dir) in [("worker", "--store", store), ("client", "--watch", watch)] {
        let started = Instant::now();
        let out = sqd_output(&["--mode", mode, "stop", flag, dir.as_str()]);
        assert!(out.status.success(), "{mode} stop: {}", text(&out.stderr));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{mode} stop took {took:?}");
    }
}

/// Moves clients around (drain/undrain each worker, kill -9 and restart one) until the
/// highest epoch grew by at least `by`.
fn advance_epochs(c: &mut Cluster, timeline: &mut Timeline, clients: usize, by: u64) {
    let top = |s: &Value| assignments(s).values().map(|x| x.1).max().unwrap_or(0);
    let start = top(&c.wait_status(Duration::from_secs(20), "placed", |s| {
        all_assigned(s, clients)
    }));
    let mut round = 0;
    while top(&c.status().unwrap_or_default()) < start + by {
        let id = ["w1", "w2", "w3"][round % 3];
        if round % 3 == 2 {
            kill_worker(c, timeline, id);
            spawn_worker(c, id);
        } else {
            assert!(c.ctl(&["drain-worker", id]).status.success());
            c.wait_status(Duration::from_secs(20), "drained", |s| {
                all_assigned(s, clients)
                    && assignments(s)
                        .values()
                        .all(|(w, _)| w.as_deref() != Some(id))
            });
            assert!(c.ctl(&["undrain-worker", id]).status.success());
        }
        c.wait_status(Duration::from_secs(20), "3 alive, all placed", |s| {
            workers_in(s, "alive").len() == 3 && all_assigned(s, clients)
        });
        round += 1;
        assert!(round < 30, "epochs did not advance");
    }
}

fn online_backup(state_dir: &Path, to: &Path) {
    let conn = rusqlite::Connection::open(state_dir.join("leader.sqlite")).expect("open state");
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .expect("backup");
}

fn restore_after_the_cluster_moved_on(worker_down_during_restore: bool) {
    const CLIENTS: usize = 6;
    // Leases long enough that the workers still hold valid ones when the restored leader starts:
    // the case where a stale state could make two owners.
    let mut c = Cluster::start(HB, 4 * LEASE);
    let mut timeline = Timeline::default();
    for i in 0..CLIENTS - 3 {
        c.add_client(&format!("c{i}"));
    }
    let mut sources = Sources::add(&c, &["f0", "f1", "f2"]);
    for id in ["w1", "w2", "w3"] {
        spawn_worker(&mut c, id);
    }
    c.wait_status(Duration::from_secs(20), "placed", |s| {
        all_assigned(s, CLIENTS)
    });
    sources.produce("before", 40);
    let backup = c.dir.path().join("backup.sqlite");
    online_backup(&c.state_dir(), &backup);
    sources.produce("moving", 40);
    advance_epochs(&mut c, &mut timeline, CLIENTS, 10);
    sources.produce("moved", 40);
    let live = assignments(&c.status().expect("status"));
    let top_live = live.values().map(|x| x.1).max().unwrap_or(0);

    if worker_down_during_restore {
        kill_worker(&mut c, &mut timeline, "w3");
    }
    // The documented restore: stop, restore the backup, start.
    let [flag, dir] = state_flag(&c);
    let out = sqd_output(&["--mode", "leader", "stop", flag.as_str(), dir.as_str()]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    let from = backup.to_string_lossy().into_owned();
    let out = sqd_output(&[
        "--mode",
        "leader",
        "restore",
        "--from",
        from.as_str(),
        flag.as_str(),
        dir.as_str(),
        "--cluster",
        "test",
    ]);
    assert!(out.status.success(), "restore: {}", text(&out.stderr));
    let addr = c.leader_addr.clone();
    c.start_leader(&addr);
    sources.produce("restored", 40);
    if worker_down_during_restore {
        spawn_worker(&mut c, "w3");
    }
    let after = c.wait_status(Duration::from_secs(40), "all placed again", |s| {
        workers_in(s, "alive").len() == 3 && all_assigned(s, CLIENTS)
    });
    // Wait until every worker started the task it was given, then read what they did.
    wait_until(
        Duration::from_secs(10),
        "every assigned task started",
        || {
            assignments(&after)
                .iter()
                .all(|(client, (worker, epoch))| {
                    let Some(proc) = worker.as_deref().and_then(|w| c.workers.get(w)) else {
                        return false;
                    };
                    proc.log_text().lines().any(|l| {
                        l.contains("client task started")
                            && l.contains(&format!("\"client\":\"{client}\""))
                            && l.contains(&format!("\"epoch\":{epoch}"))
                    })
                })
                .then_some(())
        },
    );
    let end = now_micros();
    for (id, proc) in &c.workers {
        timeline.absorb(id, &proc.log_text(), end);
    }
    timeline.assert_one_owner();
    sources.assert_exactly_once(&c);
    for (client, (_, epoch)) in assignments(&after) {
        assert!(
            epoch > top_live,
            "{client} placed under epoch {epoch}, not above the {top_live} workers held before the restore"
        );
        assert!(epoch >= timeline.highest_epoch(&client));
    }
    let explain = c.ctl(&["explain", "c0"]);
    assert!(
        text(&explain.stdout).contains("older than the cluster"),
        "explain says why the client waited: {}",
        text(&explain.stdout)
    );
}

#[test]
fn a_restored_backup_never_makes_two_owners_nor_rewinds_epochs() {
    restore_after_the_cluster_moved_on(false);
}

#[test]
fn a_restore_with_a_worker_down_until_after_it_never_makes_two_owners() {
    restore_after_the_cluster_moved_on(true);
}

#[test]
fn a_file_that_is_not_a_leader_state_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a database").expect("write");
    let state = dir.path().join("state");
    let state = state.to_string_lossy().into_owned();
    let from = junk.to_string_lossy().into_owned();
    let out = sqd_output(&[
        "--mode",
        "leader",
        "restore",
        "--from",
        from.as_str(),
        "--state-dir",
        state.as_str(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("junk"), "{}", text(&out.stderr));
    assert!(
        !dir.path().join("state/leader.sqlite").exists(),
        "nothing put in place"
    );
}

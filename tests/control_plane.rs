//! End-to-end control plane: the real leader, workers, agents and sqdctl on 127.0.0.1.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::*;

const HEARTBEAT_MS: u64 = 500;
const LEASE_MS: u64 = 1500;

fn per_worker(status: &serde_json::Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, (w, _)) in assignments(status) {
        if let Some(w) = w {
            *counts.entry(w).or_default() += 1;
        }
    }
    counts
}

/// Leader + 3 workers + 30 clients: failover after `kill -9` of a worker, leader `kill -9` and
/// restart with the same registry, re-attach of workers, then drain.
#[test]
fn failover_restart_and_drain_with_30_clients() {
    let mut c = Cluster::start(HEARTBEAT_MS, LEASE_MS);
    for id in ["w1", "w2", "w3"] {
        c.spawn_worker(id, &[]);
    }
    c.wait_alive(3);
    for i in 0..30 {
        c.add_client(&format!("client-{i:02}"));
    }
    let status = c.wait_status(
        Duration::from_secs(10),
        "30 clients on alive workers",
        |s| all_on_alive(s, 30),
    );
    let counts = per_worker(&status);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    let before = assignments(&status);

    // kill -9 one worker holding 10 clients.
    let victim = "w2".to_string();
    c.workers.get_mut(&victim).expect("w2").kill9();
    let killed_at = Instant::now();
    let after = c.wait_status(
        Duration::from_millis(3 * LEASE_MS),
        "all 30 clients back on alive workers",
        |s| {
            all_on_alive(s, 30)
                && assignments(s)
                    .values()
                    .all(|(w, _)| w.as_deref() != Some(victim.as_str()))
        },
    );
    let failover = killed_at.elapsed();
    eprintln!("failover of 10 clients took {failover:?} (lease {LEASE_MS} ms)");
    for (client, (worker, epoch)) in assignments(&after) {
        let (old_worker, old_epoch) = &before[&client];
        if old_worker.as_deref() == Some(victim.as_str()) {
            assert!(
                epoch > *old_epoch,
                "{client}: epoch {epoch} not above {old_epoch}"
            );
        } else {
            assert_eq!(
                (&worker, epoch),
                (old_worker, *old_epoch),
                "{client} moved although its worker lived"
            );
        }
    }
    assert!(workers_in(&after, "dead").contains(&"w2".to_owned()));

    // kill -9 the leader and restart it on the same address and state.
    let before_restart = assignments(&after);
    c.leader.as_mut().expect("leader").kill9();
    let addr = c.leader_addr.clone();
    let restarted_at = Instant::now();
    c.start_leader(&addr);
    let restored = c.wait_status(
        Duration::from_secs(2),
        "status after leader restart",
        |_| true,
    );
    eprintln!(
        "leader answered status {:?} after restart",
        restarted_at.elapsed()
    );
    assert_eq!(
        assignments(&restored),
        before_restart,
        "registry changed across kill -9"
    );
    // Surviving workers re-attach and keep their clients and epochs.
    let reattached = c.wait_status(Duration::from_secs(10), "w1 and w3 alive again", |s| {
        let alive = workers_in(s, "alive");
        alive.contains(&"w1".to_string()) && alive.contains(&"w3".to_string())
    });
    assert_eq!(
        assignments(&reattached),
        before_restart,
        "re-attach moved clients"
    );

    // Drain w1: its clients move to w3 with larger epochs; w1 gets nothing.
    let out = c.ctl(&["drain-worker", "w1"]);
    assert!(out.status.success(), "drain: {}", text(&out.stderr));
    let drained = c.wait_status(Duration::from_secs(10), "w1 empty, all on w3", |s| {
        !per_worker(s).contains_key("w1")
            && assignments(s)
                .values()
                .all(|(w, _)| w.as_deref() == Some("w3"))
    });
    for (client, (_, epoch)) in assignments(&drained) {
        let (old_worker, old_epoch) = &before_restart[&client];
        if old_worker.as_deref() == Some("w1") {
            assert!(epoch > *old_epoch, "{client} drained without a new epoch");
        }
    }
    assert!(workers_in(&drained, "draining").contains(&"w1".to_owned()));
    // A worker that joins now takes clients; the drained one still takes none.
    c.spawn_worker("w4", &[]);
    let rebalanced = c.wait_status(Duration::from_secs(15), "w4 takes its share", |s| {
        let counts = per_worker(s);
        counts.get("w4").copied().unwrap_or(0) == 15 && counts.get("w3").copied().unwrap_or(0) == 15
    });
    assert!(!per_worker(&rebalanced).contains_key("w1"));
}

#[test]
fn a_second_leader_on_the_same_state_dir_is_refused() {
    let c = Cluster::start(HEARTBEAT_MS, LEASE_MS);
    let state = c.state_dir();
    let out = sqd_output(&leader_args("127.0.0.1:0", &state, &["--cluster", "test"]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(err.contains("already running"), "{err}");
    // The first leader still serves.
    assert!(c.status().is_some());
}

#[test]
fn an_incompatible_worker_is_refused_with_the_reason_in_status() {
    let mut c = Cluster::start(HEARTBEAT_MS, LEASE_MS);
    c.add_client("only");
    let w = c.spawn_worker("old", &[("SQD_ADVERTISE_VERSION", "9.9.0")]);
    let exit = w
        .wait_exit(Duration::from_secs(20))
        .expect("refused worker exits");
    assert!(!exit.success());
    assert!(w.log_text().contains("incompatible"), "{}", w.log_text());
    let status = c.wait_status(Duration::from_secs(5), "refused worker in status", |s| {
        !workers_in(s, "refused").is_empty()
    });
    let worker = &status["workers"][0];
    assert_eq!(worker["version"], "9.9.0");
    assert!(
        worker["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("major.minor"),
        "{worker}"
    );
    assert_eq!(status["clients"][0]["state"], "unassigned");
}

#[test]
fn clients_wait_unassigned_until_a_worker_registers_and_agents_show_presence() {
    let mut c = Cluster::start(HEARTBEAT_MS, LEASE_MS);
    c.add_client("lonely");
    let status = c.status().expect("status");
    assert_eq!(status["clients"][0]["state"], "unassigned");
    assert_eq!(status["clients"][0]["worker"], serde_json::Value::Null);
    assert_eq!(status["clients"][0]["agent"], "none");

    c.spawn_worker("late", &[]);
    c.wait_status(
        Duration::from_secs(10),
        "client assigned to the late worker",
        |s| s["clients"][0]["worker"] == "late" && s["clients"][0]["state"] == "assigned",
    );

    c.spawn_agent("lonely");
    c.wait_status(Duration::from_secs(10), "agent up", |s| {
        s["clients"][0]["agent"] == "up"
    });
    c.agents.get_mut("lonely").expect("agent").kill9();
    c.wait_status(Duration::from_secs(10), "agent down", |s| {
        s["clients"][0]["agent"] == "down"
    });

    // An agent for a client nobody added is refused (retryable: it keeps trying, and says why).
    let a = c.spawn_agent("ghost");
    let log = wait_until(
        Duration::from_secs(10),
        "the refusal in the agent log",
        || {
            let t = a.log_text();
            t.contains("unknown client").then_some(t)
        },
    );
    assert!(log.contains("sqdctl add-client"), "{log}");
}

/// Worker a takes client x alone; then b joins (x stays on a: assignment is sticky).
fn client_x_on_a_then_b_joins(c: &mut Cluster) {
    c.spawn_worker("a", &[]);
    c.wait_alive(1);
    c.add_client("x");
    c.spawn_worker("b", &[]);
    c.wait_alive(2);
}

#[test]
fn stop_shuts_a_worker_down_gracefully_and_its_clients_move_at_once() {
    let mut c = Cluster::start(1000, 10_000);
    client_x_on_a_then_b_joins(&mut c);
    let owner = c
        .status()
        .and_then(|s| s["clients"][0]["worker"].as_str().map(str::to_owned))
        .expect("owner");
    let store = c.store_dir(&owner);
    let stop = [
        "--mode",
        "worker",
        "stop",
        "--store",
        store.to_str().expect("utf-8"),
    ];
    let out = sqd_output(&stop);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    let stopped = c
        .workers
        .get_mut(&owner)
        .expect("owner")
        .wait_exit(Duration::from_secs(5));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "worker did not exit cleanly"
    );
    // Well within the 10 s lease: a leaving worker's clients move immediately.
    c.wait_status(Duration::from_secs(3), "x on the other worker", |s| {
        let w = s["clients"][0]["worker"].as_str().unwrap_or_default();
        !w.is_empty() && w != owner
    });
    let out = sqd_output(&stop);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no worker is running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_shows_each_move_of_a_client_with_its_reason() {
    let mut c = Cluster::start(500, 1500);
    client_x_on_a_then_b_joins(&mut c);
    c.workers.get_mut("a").expect("a").kill9();
    c.wait_status(Duration::from_secs(6), "x on b", |s| {
        s["clients"][0]["worker"] == "b"
    });

    let out = c.ctl(&["explain", "x", "--json"]);
    assert!(out.status.success(), "explain: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain JSON");
    assert_eq!(v["client"]["worker"], "b");
    let history = v["history"].as_array().expect("history");
    let kinds: Vec<(&str, &str)> = history
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap_or_default(),
                h["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("added", "admin"), ("moved", "new"), ("moved", "failover")],
        "{history:#?}"
    );
    let failover = &history[2];
    assert_eq!(failover["from"], "a");
    assert_eq!(failover["to"], "b");
    assert!(
        failover["epoch"].as_u64() > history[1]["epoch"].as_u64(),
        "{history:#?}"
    );
    assert!(
        failover["detail"]
            .as_str()
            .is_some_and(|d| d.contains("a was declared dead")),
        "{failover:#}"
    );

    // The human view says the same in words, and survives a leader restart (audit is durable).
    c.leader.as_mut().expect("leader").kill9();
    let addr = c.leader_addr.clone();
    c.start_leader(&addr);
    let out = c.ctl(&["explain", "x"]);
    assert!(out.status.success(), "explain: {}", text(&out.stderr));
    let human = text(&out.stdout);
    for needle in [
        "client x",
        "assigned to a",
        "moved a -> b",
        "failover",
        "declared dead",
    ] {
        assert!(human.contains(needle), "missing {needle:?} in\n{human}");
    }

    let out = c.ctl(&["explain", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown client \"nope\""),
        "{}",
        text(&out.stderr)
    );
}

//! A worker among many hosts that do not answer: a real leader, worker and private sshd, and
//! "dead hosts" that are loopback ports nobody listens on or that close every connection.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::files::*;
use support::sshd::Sshd;
use support::*;

/// A loopback port that refuses connections (bound, then released).
fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A loopback port that accepts and closes every connection at once: the TCP check passes,
/// `ssh` itself fails. Lives as long as the test process.
fn closing_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    port
}

#[test]
fn a_healthy_client_flows_while_many_hosts_are_dead_and_ssh_spawns_stay_in_budget() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    let per_s = 4.0;
    cluster.spawn_worker_with(
        "w1",
        &[
            "--settle-ms",
            "300",
            "--poll-ms",
            "100",
            "--metrics",
            "127.0.0.1:0",
            "--ssh-spawns-per-s",
            "4",
        ],
        &[],
    );
    cluster.wait_alive(1);
    let metrics = wait_addr_file(&cluster.store_dir("w1").join("metrics.addr"));
    let spawns = || {
        let (_, page) = http_get(&metrics, "/metrics").expect("scrape");
        metric(&page, "sqd_worker_ssh_spawns_total").unwrap_or(0.0)
    };

    // 40 hosts that refuse TCP and 30 whose "sshd" hangs up: each would cost an ssh process
    // per attempt without the reachability check and the budget.
    let started = Instant::now();
    let mut dead = Vec::new();
    for i in 0..70 {
        let port = if i < 40 {
            refused_port()
        } else {
            closing_port()
        };
        let name = format!("dead{i}");
        let target = format!("nobody@127.0.0.1:{port}");
        let out = cluster.ctl(&["add-client", &name, "--ssh", &target, "--path", "/nowhere"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        dead.push(name);
    }
    // Let the dead ones fail a few rounds first.
    std::thread::sleep(Duration::from_secs(4));

    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let dir = cluster.dir.path().join("src-healthy");
    cluster.add_ssh_client(
        "healthy",
        &sshd,
        &dir,
        &["--key", &key, "--known-hosts", &kh],
    );
    let expected = produce(&dir, "healthy", 50);
    let flowing = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the healthy client's files committed",
        || {
            let (files, _) = store_contents(&cluster.store_dir("w1"));
            (files.len() >= expected.len() && leftovers(&dir) == (0, 0)).then_some(())
        },
    );
    let took = flowing.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "healthy client took {took:?}"
    );

    // Spawns stay within burst + rate × time (burst = max(2 × rate, 4)).
    std::thread::sleep(Duration::from_secs(3));
    let elapsed = started.elapsed().as_secs_f64();
    let spawned = spawns();
    let bound = 2.0 * per_s + per_s * elapsed;
    eprintln!("{spawned} ssh spawns in {elapsed:.1} s; the healthy client's files took {took:?}");
    assert!(spawned >= 1.0, "the healthy client spawned ssh");
    assert!(
        spawned <= bound,
        "{spawned} ssh spawns in {elapsed:.1} s, more than {bound:.0}"
    );
    // The refused hosts never cost a spawn: they fail the TCP check. The closing ones back
    // off: far fewer than one attempt per 250 ms each.
    assert!(
        spawned < 30.0 * elapsed / 2.0,
        "{spawned} spawns in {elapsed:.1} s"
    );
    // Their errors say what is wrong.
    let status = cluster.status().expect("status");
    let errors: Vec<String> = status["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| c["name"] == "dead0")
        .filter_map(|c| c["last_error"].as_str().map(str::to_owned))
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("unreachable")),
        "{errors:?}"
    );
}

#[test]
fn forget_worker_lets_a_dead_workers_claims_be_adopted_at_once() {
    let sshd = Sshd::start();
    let mut cluster = Cluster::start(500, 1500);
    let fast = ["--settle-ms", "300", "--poll-ms", "100"];
    cluster.spawn_worker_with("crashy", &fast, &[("SQD_FAILPOINT", "after_claim")]);
    cluster.wait_alive(1);
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let dir = cluster.dir.path().join("src-victim");
    cluster.add_ssh_client(
        "victim",
        &sshd,
        &dir,
        &["--key", &key, "--known-hosts", &kh],
    );
    let expected = produce(&dir, "victim", 30);
    let crashy = cluster.workers.get_mut("crashy").expect("crashy");
    let exit = crashy.wait_exit(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|e| !e.success()),
        "the failpoint did not fire"
    );
    assert!(leftovers(&dir).1 > 0, "the crash left claimed files");

    // The rescuer would wait an hour for the dead worker to come back.
    let mut slow = fast.to_vec();
    slow.extend(["--orphan-after-s", "3600"]);
    cluster.spawn_worker_with("rescuer", &slow, &[]);
    cluster.wait_status(
        Duration::from_secs(20),
        "crashy dead and victim on the rescuer",
        |s| {
            workers_in(s, "dead").contains(&"crashy".to_owned())
                && s["clients"][0]["worker"] == "rescuer"
        },
    );
    // Only a dead worker can be forgotten.
    let refused = cluster.ctl(&["forget-worker", "rescuer"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("alive, not dead"), "{err}");
    assert_eq!(
        cluster.ctl(&["forget-worker", "nope"]).status.code(),
        Some(1)
    );
    let human = text(&cluster.ctl(&["status"]).stdout);
    assert!(human.contains("sqdctl forget-worker crashy"), "{human}");
    // Its claims wait meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        leftovers(&dir).1 > 0,
        "claims adopted before the worker was forgotten"
    );

    let out = cluster.ctl(&["forget-worker", "crashy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("forgot worker crashy"));
    let forgotten = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the claims adopted and committed",
        || {
            let (files, _) = store_contents(&cluster.store_dir("rescuer"));
            (files.len() >= expected.len() && leftovers(&dir) == (0, 0)).then_some(())
        },
    );
    eprintln!(
        "adopted and drained {:?} after forget-worker",
        forgotten.elapsed()
    );
    let (files, _) = store_contents(&cluster.store_dir("rescuer"));
    assert_eq!(sorted(files), sorted(expected));
    let status = cluster.status().expect("status");
    let ids: Vec<&str> = status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, ["rescuer"], "crashy left status");
}

//! Alerts end to end: a real leader with a rules file, real workers pulling a producer's files
//! over the private sshd, `sqdctl alerts --follow` as the follower, `alerts.jsonl` in the
//! state dir, and a real Alertmanager (Debian's `prometheus-alertmanager`) delivering to a
//! webhook the test listens on.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::files::leftovers;
use support::sshd::Sshd;
use support::*;

const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];
const RULE: &str = "cpu-high";
const EVERY_S: u64 = 1;

/// A rule on the producers' `cpu`: the last value over 30 s above 90, evaluated every second.
fn rules_file(dir: &Path) -> PathBuf {
    let path = dir.join("rules.toml");
    let text = format!(
        "[[rule]]\nname = \"{RULE}\"\nmetric = \"cpu\"\nagg = \"last\"\nwindow = \"30s\"\n\
         by = [\"host\"]\nop = \">\"\nthreshold = 90\nevery = \"{EVERY_S}s\"\n\
         severity = \"critical\"\nlabels = {{ team = \"web\" }}\n\
         annotation = \"{{{{ $labels.host }}}} cpu at {{{{ $value }}}}\"\n\n\
         [builtin]\nworker_dead = false\nclient_error = false\nclient_backlog_old = false\n"
    );
    std::fs::write(&path, text).expect("write rules");
    path
}

/// Writes one JSON-lines file with one `cpu` sample of host `web-1` now; returns when it was
/// renamed in (the commit can only be later).
fn write_cpu(dir: &Path, n: usize, value: f64) -> Instant {
    let aside = dir.with_extension("aside");
    std::fs::create_dir_all(&aside).expect("aside dir");
    let name = format!("cpu-{n:04}.jsonl");
    let ts = sqd::clock::unix_ms() / 1000;
    let line = format!("{{\"ts\": {ts}, \"host\": \"web-1\", \"cpu\": {value}}}\n");
    std::fs::write(aside.join(&name), line).expect("write");
    std::fs::rename(aside.join(&name), dir.join(&name)).expect("rename in");
    Instant::now()
}

/// `sqdctl alerts --follow --json [--since ID]`, its lines collected with the time they came.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, Value, String)>>>,
}

impl Follower {
    fn start(leader: &str, since: Option<u64>) -> Follower {
        let mut args = vec!["alerts".to_owned(), "--follow".into(), "--json".into()];
        if let Some(id) = since {
            args.extend(["--since".to_owned(), id.to_string()]);
        }
        let mut child = Command::new(SQDCTL)
            .args(&args)
            .env("SQD_LEADER", leader)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sqdctl alerts --follow");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                sink.lock().expect("lines").push((Instant::now(), v, line));
            }
        });
        Follower { child, lines }
    }

    /// Waits for a notification of the rule in `state`; returns when it came and its id.
    fn wait_for(&self, state: &str, timeout: Duration) -> (Instant, u64) {
        wait_until(timeout, &format!("a {state} notification"), || {
            let lines = self.lines.lock().expect("lines");
            lines
                .iter()
                .find(|(_, v, _)| v["rule"] == RULE && v["state"] == state)
                .map(|(t, v, _)| (*t, v["id"].as_u64().expect("id")))
        })
    }

    fn count(&self, state: &str) -> usize {
        let lines = self.lines.lock().expect("lines");
        (lines.iter())
            .filter(|(_, v, _)| v["rule"] == RULE && v["state"] == state)
            .count()
    }

    fn texts(&self) -> Vec<(u64, String)> {
        let lines = self.lines.lock().expect("lines");
        (lines.iter())
            .map(|(_, v, l)| (v["id"].as_u64().expect("id"), l.clone()))
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// id → line of `alerts.jsonl` (and its rotated file).
fn journal(state: &Path) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for name in ["alerts.jsonl.1", "alerts.jsonl"] {
        let text = std::fs::read_to_string(state.join(name)).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            let id = v["id"].as_u64().expect("id");
            assert!(out.insert(id, line.to_owned()).is_none(), "id {id} twice");
        }
    }
    out
}

/// Each id once, in order, without gaps, and each line as in the file.
fn check_exactly_once(seen: &[(u64, String)], file: &BTreeMap<u64, String>) {
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "ids in order, no gap or repeat: {seen:?}"
        );
    }
    for (id, line) in seen {
        assert_eq!(file.get(id), Some(line), "line {id} as in alerts.jsonl");
    }
}

fn start_cluster(workers: &[&str]) -> (Sshd, Cluster, PathBuf, tempfile::TempDir) {
    let sshd = Sshd::start();
    let rules_dir = tempfile::tempdir().expect("rules dir");
    let rules = rules_file(rules_dir.path());
    let rules = rules.to_str().expect("utf-8").to_owned();
    let mut cluster = Cluster::start_with(500, 1500, &["--rules-file", &rules]);
    for id in workers {
        cluster.spawn_worker_with(id, FAST, &[]);
    }
    cluster.wait_alive(workers.len());
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let dir = cluster.dir.path().join("src-web");
    let extra = ["--format", "jsonl", "--key", &key, "--known-hosts", &kh];
    cluster.add_ssh_client("web", &sshd, &dir, &extra);
    (sshd, cluster, dir, rules_dir)
}

fn wait_pulled(dir: &Path) {
    wait_until(Duration::from_secs(30), "the file pulled", || {
        (leftovers(dir) == (0, 0)).then_some(())
    });
}

#[test]
fn crossing_fires_then_resolves_once_across_a_leader_kill_and_reconnects() {
    let (_sshd, mut cluster, dir, _rules) = start_cluster(&["w1"]);
    let follower = Follower::start(&cluster.leader_addr, None);
    std::thread::sleep(Duration::from_millis(500));
    let written = write_cpu(&dir, 0, 95.0);
    let (fired_at, fired_id) = follower.wait_for("firing", Duration::from_secs(30));
    // The commit is after the rename: measured from the rename, the bound also covers the pull
    // (settle 300 ms, poll 100 ms).
    let took = fired_at - written;
    assert!(
        took <= Duration::from_secs(EVERY_S + 2) + Duration::from_millis(1500),
        "firing after {took:?}"
    );
    let listed = cluster.ctl(&["alerts", "--json"]);
    assert!(
        text(&listed.stdout).contains("\"firing\""),
        "{}",
        text(&listed.stdout)
    );

    // kill -9 while firing: the restarted leader neither re-sends nor forgets it.
    let addr = cluster.leader_addr.clone();
    cluster.leader.as_mut().expect("leader").kill9();
    cluster.start_leader(&addr);
    std::thread::sleep(Duration::from_secs(4 * EVERY_S));
    assert_eq!(follower.count("firing"), 1, "{:?}", follower.texts());
    let listed = cluster.ctl(&["alerts"]);
    assert!(
        text(&listed.stdout).contains("firing"),
        "{}",
        text(&listed.stdout)
    );

    write_cpu(&dir, 1, 10.0);
    wait_pulled(&dir);
    let (_, resolved_id) = follower.wait_for("resolved", Duration::from_secs(30));
    assert!(resolved_id > fired_id);
    std::thread::sleep(Duration::from_secs(2 * EVERY_S));
    assert_eq!(follower.count("firing"), 1);
    assert_eq!(follower.count("resolved"), 1);

    let file = journal(&cluster.state_dir());
    check_exactly_once(&follower.texts(), &file);
    // A follower resuming with --since gets every later notification once, as in the file.
    let since = fired_id - 1;
    let again = Follower::start(&cluster.leader_addr, Some(since));
    let want: Vec<(u64, String)> = (file.range(since + 1..))
        .map(|(id, l)| (*id, l.clone()))
        .collect();
    wait_until(Duration::from_secs(10), "the replay", || {
        (again.texts().len() >= want.len()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = again.texts();
    assert_eq!(got[..want.len()], want[..]);
    check_exactly_once(&got, &journal(&cluster.state_dir()));
    let history = cluster.ctl(&["alerts", "--history", "--json"]);
    assert!(text(&history.stdout).contains("\"resolved\""));
}

/// Sends SIGCONT to a stopped worker when the test ends, however it ends.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn a_stopped_worker_holding_the_series_leaves_the_alert_firing_and_unknown() {
    let (_sshd, cluster, dir, _rules) = start_cluster(&["w1"]);
    let follower = Follower::start(&cluster.leader_addr, None);
    std::thread::sleep(Duration::from_millis(500));
    write_cpu(&dir, 0, 95.0);
    follower.wait_for("firing", Duration::from_secs(30));
    let pid = cluster.workers["w1"].pid();
    let _resume = Resume(pid);
    let st = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(st.success());
    follower.wait_for("unknown", Duration::from_secs(10));
    // Rounds go on without the shard: nothing resolves.
    std::thread::sleep(Duration::from_secs(6 * EVERY_S));
    assert_eq!(follower.count("resolved"), 0, "{:?}", follower.texts());
    let listed = cluster.ctl(&["alerts", "--json"]);
    let out = text(&listed.stdout);
    assert!(
        out.contains("\"firing\"") && out.contains("\"unknown\""),
        "{out}"
    );
    drop(_resume);
    std::thread::sleep(Duration::from_secs(4 * EVERY_S));
    assert_eq!(follower.count("resolved"), 0, "{:?}", follower.texts());
    assert_eq!(follower.count("firing"), 1);
}

/// The Alertmanager binary of Debian's package, if installed.
fn alertmanager_bin() -> Option<PathBuf> {
    ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A webhook receiver: collects the bodies POSTed to it.
fn webhook() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind webhook");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then Content-Length bytes of body.
            let body = loop {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(at) = text.find("\r\n\r\n") {
                    let len = (text[..at].lines())
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= at + 4 + len {
                        break Some(text[at + 4..].to_owned());
                    }
                }
            };
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Some(b) = body {
                sink.lock().expect("bodies").push(b);
            }
        }
    });
    (port, bodies)
}

#[test]
fn a_firing_alert_reaches_alertmanagers_webhook_with_the_rules_labels() {
    let Some(bin) = alertmanager_bin() else {
        panic!(
            "prometheus-alertmanager is not installed; scripts/test.sh installs it \
             (apt-get install prometheus-alertmanager)"
        );
    };
    let (hook_port, bodies) = webhook();
    let am_dir = tempfile::tempdir().expect("am dir");
    let config = am_dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_wait: 1s\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      \
             - url: http://127.0.0.1:{hook_port}/hook\n        send_resolved: true\n"
        ),
    )
    .expect("am config");
    let am_port = free_port();
    let cluster_port = free_port();
    let log = std::fs::File::create(am_dir.path().join("am.log")).expect("am log");
    let mut am = Command::new(&bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            am_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster_port}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start alertmanager");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _am = Kill(&mut am);
    wait_until(Duration::from_secs(20), "alertmanager ready", || {
        http_get(&format!("127.0.0.1:{am_port}"), "/-/ready").filter(|(code, _)| *code == 200)
    });

    let sshd = Sshd::start();
    let rules_dir = tempfile::tempdir().expect("rules dir");
    let rules = rules_file(rules_dir.path());
    let url = format!("http://127.0.0.1:{am_port}");
    let rules = rules.to_str().expect("utf-8");
    let mut cluster = Cluster::start_with(
        500,
        1500,
        &["--rules-file", rules, "--alertmanager-url", &url],
    );
    cluster.spawn_worker_with("w1", FAST, &[]);
    cluster.wait_alive(1);
    let key = sshd.client_key.to_str().expect("utf-8").to_owned();
    let kh = sshd.known_hosts.to_str().expect("utf-8").to_owned();
    let dir = cluster.dir.path().join("src-web");
    let extra = ["--format", "jsonl", "--key", &key, "--known-hosts", &kh];
    cluster.add_ssh_client("web", &sshd, &dir, &extra);
    write_cpu(&dir, 0, 95.0);
    let body = wait_until(Duration::from_secs(40), "the webhook called", || {
        bodies.lock().expect("bodies").first().cloned()
    });
    let v: Value = serde_json::from_str(&body).expect("webhook JSON");
    let alert = &v["alerts"][0];
    assert_eq!(v["status"], "firing", "{v}");
    assert_eq!(alert["labels"]["alertname"], RULE, "{v}");
    assert_eq!(alert["labels"]["team"], "web", "{v}");
    assert_eq!(alert["labels"]["host"], "web-1", "{v}");
    assert_eq!(alert["labels"]["severity"], "critical", "{v}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("web-1 cpu at 95")),
        "{v}"
    );
}

#[test]
fn check_rules_lists_every_problem_and_a_bad_reload_keeps_the_rules() {
    let dir = tempfile::tempdir().expect("dir");
    let good = rules_file(dir.path());
    let out = sqd_output(&[
        "--mode",
        "leader",
        "check-rules",
        good.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 rule(s)"),
        "{}",
        text(&out.stdout)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\nmetric = \"cpu\"\nagg = \"median\"\nwindow = \"5 min\"\n\
         op = \">\"\nthreshold = 1\ncolour = \"red\"\n",
    )
    .expect("bad rules");
    let out = sqd_output(&[
        "--mode",
        "leader",
        "check-rules",
        bad.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for key in ["agg", "window", "colour"] {
        assert!(err.contains(&format!("key \"{key}\"")), "{err}");
    }

    // A leader with the good file; the file turns bad; reload keeps the rules in force.
    let good_s = good.to_str().expect("utf-8");
    let cluster = Cluster::start_with(500, 1500, &["--rules-file", good_s]);
    std::fs::copy(&bad, &good).expect("overwrite rules");
    let out = cluster.ctl(&["reload-rules"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("rules in force stay") && err.contains("colour"),
        "{err}"
    );
    // SIGHUP with the bad file: logged, the leader keeps running.
    let pid = cluster.leader.as_ref().expect("leader").pid();
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    wait_until(Duration::from_secs(10), "the SIGHUP logged", || {
        let log = cluster.leader.as_ref().expect("leader").log_text();
        log.contains("SIGHUP: the rules file is not usable")
            .then_some(())
    });
    rules_file(dir.path());
    let out = cluster.ctl(&["reload-rules"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 rule(s) in force"),
        "{}",
        text(&out.stdout)
    );
}

//! End-to-end data plane: real sshd on 127.0.0.1, real leader and workers, real files.
//!
//! The oracle of every test is the multiset of content hashes produced on the "producing
//! hosts" compared with what landed in the union of all store shards (files and catalogs).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::files::*;
use support::small_disk::SmallDisk;
use support::sshd::Sshd;
use support::*;

const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];

struct Setup {
    sshd: Sshd,
    cluster: Cluster,
    sources: BTreeMap<String, PathBuf>,
}

impl Setup {
    /// A cluster without workers whose clients are served by `sshd`.
    fn with_sshd(sshd: Sshd, cluster: Cluster) -> Setup {
        Setup {
            sshd,
            cluster,
            sources: BTreeMap::new(),
        }
    }

    /// A private sshd, a leader (heartbeat 500 ms, lease 1500 ms) and `workers` polling fast.
    fn new(workers: &[&str], env: &[(&str, &str)]) -> Setup {
        let mut s = Setup::with_sshd(Sshd::start(), Cluster::start(500, 1500));
        s.start_workers(workers, FAST, env);
        s
    }

    /// Starts `ids` with `args` and waits until they are all the alive workers.
    fn start_workers(&mut self, ids: &[&str], args: &[&str], env: &[(&str, &str)]) {
        for id in ids {
            self.cluster.spawn_worker_with(id, args, env);
        }
        self.cluster.wait_alive(ids.len());
    }

    fn add_client(&mut self, name: &str, known_hosts: &Path) -> PathBuf {
        let dir = self.cluster.dir.path().join(format!("src-{name}"));
        self.add_client_at(name, known_hosts, dir)
    }

    fn add_client_at(&mut self, name: &str, known_hosts: &Path, dir: PathBuf) -> PathBuf {
        let key = self.sshd.client_key.to_str().expect("utf-8");
        let known_hosts = known_hosts.to_str().expect("utf-8");
        let extra = ["--key", key, "--known-hosts", known_hosts];
        self.cluster.add_ssh_client(name, &self.sshd, &dir, &extra);
        self.sources.insert(name.to_owned(), dir.clone());
        dir
    }

    fn all_stores(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut files = Vec::new();
        let mut rows = Vec::new();
        for id in self.cluster.workers.keys() {
            let (f, r) = store_contents(&self.cluster.store_dir(id));
            files.extend(f);
            rows.extend(r);
        }
        (files, rows)
    }

    /// Waits until every source dir and claim dir is empty and the stores hold `expected`.
    fn wait_drained(&self, expected: &[String], timeout: Duration) {
        wait_until(timeout, "all files committed and sources removed", || {
            let empty = self.sources.values().all(|d| leftovers(d) == (0, 0));
            (empty && self.all_stores().0.len() >= expected.len()).then_some(())
        });
    }

    /// After a fault is gone: every file arrives (within `timeout`) exactly once, and the
    /// (first) client's error clears.
    fn drains_exactly_once_and_recovers(&self, expected: &[String], timeout: Duration) {
        self.wait_drained(expected, timeout);
        self.assert_exactly_once(expected);
        self.cluster
            .wait_status(Duration::from_secs(10), "error cleared", |st| {
                st["clients"][0]["last_error"].is_null()
            });
    }

    fn assert_exactly_once(&self, expected: &[String]) {
        let (files, rows) = self.all_stores();
        assert_eq!(files.len(), expected.len(), "stored file count");
        assert_eq!(
            sorted(files),
            sorted(expected.to_vec()),
            "stored contents differ from produced"
        );
        let row_hashes: Vec<String> = rows.into_iter().map(|(_, h)| h).collect();
        assert_eq!(
            sorted(row_hashes),
            sorted(expected.to_vec()),
            "catalog differs from produced"
        );
        for (name, dir) in &self.sources {
            assert_eq!(
                leftovers(dir),
                (0, 0),
                "{name}: files left at the source or in claim dirs"
            );
        }
    }
}

#[test]
fn two_thousand_files_from_three_clients_are_committed_exactly_once() {
    let s = two_thousand_files_from_three_clients(&[]);
    for w in s.cluster.workers.values() {
        assert!(
            w.log_text().contains("transfer=\"batch\""),
            "{}: batch mode not used where the host allows it:\n{}",
            w.name,
            w.log_text()
        );
    }
}

#[test]
fn two_thousand_files_from_three_clients_are_committed_exactly_once_over_sftp_only() {
    let s = two_thousand_files_from_three_clients(&["--transfer", "sftp"]);
    for w in s.cluster.workers.values() {
        assert!(
            !w.log_text().contains("transfer=\"batch\""),
            "{}: ran commands although told not to",
            w.name
        );
    }
}

fn two_thousand_files_from_three_clients(extra: &[&str]) -> Setup {
    let mut s = Setup::with_sshd(Sshd::start(), Cluster::start(500, 1500));
    let args: Vec<&str> = FAST.iter().chain(extra).copied().collect();
    s.start_workers(&["w1", "w2"], &args, &[]);
    let kh = s.sshd.known_hosts.clone();
    let mut expected = Vec::new();
    for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let dir = s.add_client(name, &kh);
        let n = if i == 0 { 668 } else { 666 };
        expected.extend(produce(&dir, name, n));
    }
    assert_eq!(expected.len(), 2000);
    s.wait_drained(&expected, Duration::from_secs(90));
    s.assert_exactly_once(&expected);
    let status = s
        .cluster
        .wait_status(Duration::from_secs(5), "totals reported", |st| {
            st["clients"].as_array().is_some_and(|cs| {
                cs.iter()
                    .map(|c| c["files_total"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    == 2000
            })
        });
    for c in status["clients"].as_array().expect("clients") {
        assert_eq!(c["last_error"], serde_json::Value::Null, "{c}");
        assert!(c["bytes_total"].as_u64().unwrap_or(0) > 0, "{c}");
        assert_eq!(c["files_today"], c["files_total"], "{c}");
    }
    s
}

#[test]
fn unknown_and_changed_host_keys_are_refused_and_nothing_is_pulled() {
    let mut s = Setup::new(&["w1"], &[]);
    let (empty, wrong) = (
        s.sshd.empty_known_hosts.clone(),
        s.sshd.wrong_known_hosts.clone(),
    );
    let unknown_dir = s.add_client("unknown", &empty);
    let changed_dir = s.add_client("changed", &wrong);
    produce(&unknown_dir, "u", 3);
    produce(&changed_dir, "c", 3);
    let status =
        s.cluster
            .wait_status(Duration::from_secs(20), "host key errors in status", |st| {
                st["clients"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().all(|c| c["last_error"].is_string()))
            });
    for c in status["clients"].as_array().expect("clients") {
        let err = c["last_error"].as_str().unwrap_or_default();
        if c["name"] == "unknown" {
            assert!(err.contains("is not in"), "{err}");
        } else {
            assert!(err.contains("CHANGED"), "{err}");
        }
    }
    assert_eq!(leftovers(&unknown_dir).0, 3);
    assert_eq!(leftovers(&changed_dir).0, 3);
    assert!(s.all_stores().0.is_empty());
}

#[test]
fn a_file_written_slowly_is_pulled_only_once_complete() {
    let mut s = Setup::new(&["w1"], &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("slow", &kh);
    let path = dir.join("slow.jsonl");
    let mut content = Vec::new();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).expect("create");
        // 12 appends, 150 ms apart: longer than the 300 ms settle time in total, never idle
        // for that long.
        for i in 0..12 {
            let line = format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(100));
            f.write_all(line.as_bytes()).expect("append");
            f.flush().expect("flush");
            content.extend_from_slice(line.as_bytes());
            std::thread::sleep(Duration::from_millis(150));
            assert!(
                s.all_stores().0.is_empty(),
                "pulled while still being written (after {i} appends)"
            );
        }
    }
    let expected = vec![hash(&content)];
    s.wait_drained(&expected, Duration::from_secs(20));
    s.assert_exactly_once(&expected);
}

#[test]
fn only_regular_files_in_the_directory_are_read_and_hostile_names_stay_inside_the_store() {
    let mut s = Setup::new(&["w1"], &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("hostile", &kh);
    let outside = s.cluster.dir.path().join("secret.txt");
    std::fs::write(&outside, b"do not read").expect("write outside file");
    std::os::unix::fs::symlink(&outside, dir.join("link.jsonl")).expect("symlink");
    nix::unistd::mkfifo(
        &dir.join("fifo.jsonl"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    std::fs::create_dir(dir.join("subdir")).expect("subdir");
    std::fs::write(dir.join("subdir/nested.jsonl"), b"nested").expect("nested");
    std::fs::write(dir.join(".hidden"), b"hidden").expect("hidden");
    std::fs::write(dir.join("partial.tmp"), b"partial").expect("tmp");
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(dir.join("..dots"), b"hidden too").expect("dot-dot file");
    let names: Vec<&[u8]> = vec![
        b"new\nline.jsonl",
        b"a..b",
        b"\xff\xfebin",
        b"%41.jsonl",
        &[b'y'; 250],
    ];
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let content = format!("hostile {i}");
        std::fs::write(dir.join(std::ffi::OsStr::from_bytes(name)), &content)
            .expect("write hostile name");
        expected.push(hash(content.as_bytes()));
    }
    wait_until(Duration::from_secs(20), "regular files pulled", || {
        (s.all_stores().0.len() >= expected.len()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(800));
    let (files, _) = s.all_stores();
    assert_eq!(
        sorted(files),
        sorted(expected.clone()),
        "exactly the regular files, nothing else"
    );
    // Everything else is untouched where it was.
    assert!(
        std::fs::symlink_metadata(dir.join("link.jsonl")).is_ok_and(|m| m.file_type().is_symlink())
    );
    assert_eq!(std::fs::read(&outside).expect("outside"), b"do not read");
    assert!(dir.join("fifo.jsonl").exists());
    assert!(dir.join("subdir/nested.jsonl").exists());
    assert!(
        dir.join(".hidden").exists()
            && dir.join("partial.tmp").exists()
            && dir.join("..dots").exists()
    );
    // Nothing was written outside the store's files dir.
    let store = s.cluster.store_dir("w1");
    let mut stack = vec![store.join("files")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read store dir").flatten() {
            let p = e.path();
            assert!(
                p.starts_with(store.join("files/hostile")),
                "{p:?} outside the client's dir"
            );
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

#[test]
fn files_flow_again_after_sshd_comes_back() {
    let mut s = Setup::new(&["w1"], &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("flaky", &kh);
    let mut expected = produce(&dir, "before", 20);
    s.wait_drained(&expected, Duration::from_secs(30));
    s.sshd.stop();
    expected.extend(produce(&dir.clone(), "during", 20));
    s.cluster
        .wait_status(Duration::from_secs(30), "an SSH error in status", |st| {
            st["clients"][0]["last_error"].is_string()
        });
    assert_eq!(leftovers(&dir).0, 20, "nothing may move while sshd is down");
    s.sshd.restart();
    s.drains_exactly_once_and_recovers(&expected, Duration::from_secs(60));
}

/// `kill -9` (an abort at a named point) of the worker at each step of a file's life: another
/// worker takes over, the crashed one restarts without crash loop, exactly once holds.
#[test]
fn crash_at_every_step_keeps_exactly_once() {
    crash_at_every_step(&[]);
}

#[test]
fn crash_at_every_step_keeps_exactly_once_over_sftp_only() {
    crash_at_every_step(&["--transfer", "sftp"]);
}

fn crash_at_every_step(extra: &[&str]) {
    let fast: Vec<&str> = FAST.iter().chain(extra).copied().collect();
    let fast = fast.as_slice();
    for point in [
        "after_claim",
        "mid_transfer",
        "after_stage",
        "after_commit",
        "after_delete",
    ] {
        let mut s = Setup::new(&[], &[]);
        let kh = s.sshd.known_hosts.clone();
        s.cluster
            .spawn_worker_with("crashy", fast, &[("SQD_FAILPOINT", point)]);
        s.cluster.wait_alive(1);
        let dir = s.add_client("victim", &kh);
        let mut expected = produce(&dir, point, 50);
        let (with_samples, count, sum) = produce_jsonl(&dir, point, 10);
        expected.extend(with_samples);
        let crashy = s.cluster.workers.get_mut("crashy").expect("crashy");
        let exit = crashy.wait_exit(Duration::from_secs(30));
        assert!(
            exit.is_some_and(|e| !e.success()),
            "{point}: the failpoint did not fire"
        );
        // Another worker takes the client over after the lease; the crashed one comes back
        // without the failpoint and resolves what it left (commits it knew, claims it did not).
        s.cluster.spawn_worker_with("rescuer", fast, &[]);
        s.cluster.spawn_worker_with("crashy", fast, &[]);
        s.wait_drained(&expected, Duration::from_secs(60));
        s.cluster.wait_alive(2);
        std::thread::sleep(Duration::from_millis(500));
        let crashy = s.cluster.workers.get_mut("crashy").expect("crashy");
        assert!(
            crashy.wait_exit(Duration::from_millis(10)).is_none(),
            "{point}: crashed again on restart"
        );
        // Catalog rows are the oracle; the crashed worker's store may keep a committed copy
        // only if its catalog says so.
        let (files, rows) = s.all_stores();
        let row_hashes: Vec<String> = rows.into_iter().map(|(_, h)| h).collect();
        assert_eq!(
            sorted(row_hashes),
            sorted(expected.clone()),
            "{point}: catalog differs from produced"
        );
        assert_eq!(
            sorted(files),
            sorted(expected.clone()),
            "{point}: stored files differ from produced"
        );
        assert_eq!(leftovers(&dir), (0, 0), "{point}: source or claims left");
        // Each committed file's samples are in the shards once (M1).
        let samples = s.cluster.workers.keys().fold((0, 0.0), |(n, t), id| {
            let (c, v) = store_samples(&s.cluster.store_dir(id));
            (n + c, t + v)
        });
        assert_eq!(
            samples,
            (count, sum),
            "{point}: samples differ from produced"
        );
    }
}

#[test]
fn a_missing_directory_and_a_wrong_key_are_reported_and_recover_by_themselves() {
    let mut s = Setup::new(&["w1"], &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("late-dir", &kh);
    std::fs::remove_dir(&dir).expect("remove the source dir again");
    let status = s
        .cluster
        .wait_status(Duration::from_secs(20), "missing dir reported", |st| {
            st["clients"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("does not exist"))
        });
    let err = status["clients"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.contains(dir.to_str().expect("utf-8")), "{err}");
    // The directory comes back (for the SSH login user, who must claim and remove files in it),
    // then files appear in it.
    s.sshd.share_dir(&dir);
    let expected = produce(&dir, "late", 5);
    s.wait_drained(&expected, Duration::from_secs(30));
    s.assert_exactly_once(&expected);

    // A key the host does not know: an authentication error naming the key.
    let stranger = s.cluster.dir.path().join("stranger_key");
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            stranger.to_str().expect("utf-8"),
        ])
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let other = s.cluster.dir.path().join("src-stranger");
    std::fs::create_dir_all(&other).expect("mkdir");
    let out = s.cluster.ctl(&[
        "add-client",
        "stranger",
        "--ssh",
        &s.sshd.target(),
        "--path",
        other.to_str().expect("utf-8"),
        "--key",
        stranger.to_str().expect("utf-8"),
        "--known-hosts",
        kh.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.cluster
        .wait_status(Duration::from_secs(20), "auth error reported", |st| {
            st["clients"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"] == "stranger"
                        && c["last_error"].as_str().is_some_and(|e| {
                            e.contains("authentication") && e.contains("stranger_key")
                        })
                })
            })
        });
}

/// INSTALL.md's lock-down of a producing host: the worker's key is `restrict`ed and its user
/// may only run `internal-sftp`. Shell commands are refused; sqd pulls anyway (SFTP only).
#[test]
fn a_worker_pulls_through_a_restricted_sftp_only_key() {
    let user = &support::login::login_user().name;
    let sshd = Sshd::start_with(&format!(
        "Match User {user}\n    ForceCommand internal-sftp\n    AllowTcpForwarding no\n    X11Forwarding no\n    PermitTTY no\n"
    ));
    sshd.set_client_key_options("restrict");
    let shell = sshd.ssh("echo shell-ran");
    assert!(
        !text(&shell.stdout).contains("shell-ran"),
        "a shell command ran through the restricted key"
    );
    let mut s = Setup::with_sshd(sshd, Cluster::start(500, 1500));
    s.start_workers(&["w1"], FAST, &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("locked", &kh);
    let expected = produce(&dir, "locked", 100);
    s.wait_drained(&expected, Duration::from_secs(60));
    s.assert_exactly_once(&expected);
    // The key cannot run commands: batch mode's probe saw nothing, the worker used SFTP.
    let log = s.cluster.workers["w1"].log_text();
    assert!(log.contains("transfer=\"sftp\""), "{log}");
}

/// A login shell that prints a greeting before every command (like a chatty .bashrc) does
/// not confuse batch mode: the probe finds its markers, the helper's first reply skips the
/// noise.
#[test]
fn batch_mode_ignores_what_the_login_shell_prints() {
    let Some(sftp_server) = ["/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: no sftp-server binary here");
        return;
    };
    // sshd runs the wrapper as the login user: it must be able to read it.
    let rc_dir = support::login::traversable_tempdir();
    let chatty = rc_dir.path().join("chatty.sh");
    std::fs::write(
        &chatty,
        format!(
            "case \"$SSH_ORIGINAL_COMMAND\" in\n\
             *sftp*) exec {sftp_server} ;;\n\
             *) echo 'Welcome to the producer!'; echo 'sqd:DONE:not-yours'; eval \"$SSH_ORIGINAL_COMMAND\" ;;\n\
             esac\n"
        ),
    )
    .expect("script");
    std::fs::set_permissions(&chatty, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let sshd = Sshd::start_with(&format!("ForceCommand sh {}\n", chatty.display()));
    let greeting = sshd.ssh("true");
    assert!(
        text(&greeting.stdout).contains("Welcome"),
        "{}",
        text(&greeting.stderr)
    );
    let mut s = Setup::with_sshd(sshd, Cluster::start(500, 1500));
    s.start_workers(&["w1"], FAST, &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("chatty", &kh);
    let expected = produce(&dir, "chatty", 300);
    s.wait_drained(&expected, Duration::from_secs(60));
    s.assert_exactly_once(&expected);
    let log = s.cluster.workers["w1"].log_text();
    assert!(log.contains("transfer=\"batch\""), "{log}");
    assert!(!log.contains("pull cycle failed"), "{log}");
}

/// Counters on `/metrics` of the leader and the workers move when files flow and when a
/// worker is killed; `/healthz` and `/readyz` answer.
#[test]
fn metrics_move_when_files_flow_and_when_a_worker_dies() {
    let metrics = ["--metrics", "127.0.0.1:0"];
    let mut s = Setup::with_sshd(Sshd::start(), Cluster::start_with(500, 1500, &metrics));
    let with_metrics: Vec<&str> = FAST.iter().chain(&metrics).copied().collect();
    s.start_workers(&["w1", "w2"], &with_metrics, &[]);
    let addr_of = |dir: PathBuf| wait_addr_file(&dir.join("metrics.addr"));
    let leader = addr_of(s.cluster.state_dir());
    let workers: BTreeMap<String, String> = ["w1", "w2"]
        .iter()
        .map(|w| (w.to_string(), addr_of(s.cluster.store_dir(w))))
        .collect();
    for addr in std::iter::once(&leader).chain(workers.values()) {
        assert_eq!(http_get(addr, "/healthz").map(|r| r.0), Some(200));
        // A worker is ready once its first heartbeat is acknowledged (lease granted), which
        // may come just after status already lists it alive.
        wait_until(Duration::from_secs(5), "/readyz 200", || {
            (http_get(addr, "/readyz").map(|r| r.0) == Some(200)).then_some(())
        });
        assert_eq!(http_get(addr, "/nope").map(|r| r.0), Some(404));
    }
    let scrape = |addr: &str| {
        let (code, page) = http_get(addr, "/metrics").expect("scrape");
        assert_eq!(code, 200);
        page
    };
    // Gauges derived from the registry refresh every second.
    let page = wait_until(
        Duration::from_secs(5),
        "2 alive workers on /metrics",
        || {
            let page = scrape(&leader);
            (metric(&page, "sqd_leader_workers{state=\"alive\"}") == Some(2.0)).then_some(page)
        },
    );
    assert!(metric(&page, "sqd_leader_heartbeats_received_total").unwrap_or(0.0) > 0.0);
    assert_eq!(
        metric(&page, "sqd_leader_sessions{role=\"worker\"}"),
        Some(2.0)
    );

    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("counted", &kh);
    let expected = produce(&dir, "counted", 200);
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("source dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    s.wait_drained(&expected, Duration::from_secs(60));
    let files_series = "sqd_worker_files_committed_total{client=\"counted\"}";
    let bytes_series = "sqd_worker_bytes_committed_total{client=\"counted\"}";
    let sum_over_workers = |series: &str| -> f64 {
        workers
            .values()
            .filter_map(|a| metric(&scrape(a), series))
            .sum()
    };
    assert_eq!(sum_over_workers(files_series), 200.0);
    assert_eq!(sum_over_workers(bytes_series), bytes as f64);
    let owner = s
        .cluster
        .status()
        .and_then(|st| st["clients"][0]["worker"].as_str().map(str::to_owned))
        .expect("owner");
    let owner_page = scrape(&workers[&owner]);
    assert!(
        metric_sum(&owner_page, "sqd_worker_commit_seconds_count") >= 1.0,
        "{owner_page}"
    );
    assert_eq!(
        metric(&owner_page, "sqd_worker_store_bytes"),
        Some(bytes as f64)
    );
    assert!(metric(&owner_page, "sqd_worker_ssh_connects_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(metric(&owner_page, "sqd_worker_lease_valid"), Some(1.0));
    // The leader mirrors what the workers report (gauges refresh every second).
    wait_until(Duration::from_secs(10), "leader per-client gauge", || {
        (metric(
            &scrape(&leader),
            "sqd_leader_client_files_committed{client=\"counted\"}",
        ) == Some(200.0))
        .then_some(())
    });

    // kill -9 the owner: the leader counts a death and a failover with its duration.
    let failovers_before = metric(
        &scrape(&leader),
        "sqd_leader_assignment_changes_total{reason=\"failover\"}",
    )
    .unwrap_or(0.0);
    s.cluster.workers.get_mut(&owner).expect("owner").kill9();
    let page = wait_until(Duration::from_secs(10), "failover counted", || {
        let page = scrape(&leader);
        (metric(
            &page,
            "sqd_leader_assignment_changes_total{reason=\"failover\"}",
        )
        .unwrap_or(0.0)
            > failovers_before
            && metric(&page, "sqd_leader_workers{state=\"dead\"}") == Some(1.0))
        .then_some(page)
    });
    assert!(
        metric(&page, "sqd_leader_failover_seconds_count").unwrap_or(0.0) >= 1.0,
        "{page}"
    );
    assert!(metric(&page, "sqd_leader_failover_seconds_sum").unwrap_or(0.0) > 0.0);

    // Files keep flowing on the survivor, and its counters move.
    let survivor = workers
        .iter()
        .find(|(id, _)| **id != owner)
        .map(|(_, a)| a.clone())
        .expect("survivor");
    let before = metric(&scrape(&survivor), files_series).unwrap_or(0.0);
    let mut all = expected;
    all.extend(produce(&dir, "after", 20));
    s.sources.insert("counted".into(), dir);
    wait_until(Duration::from_secs(30), "survivor counts new files", || {
        (metric(&scrape(&survivor), files_series).unwrap_or(0.0) >= before + 20.0).then_some(())
    });
}

#[test]
fn a_full_store_disk_is_reported_loses_nothing_and_recovers_once_there_is_room() {
    let sshd = Sshd::start();
    let cluster = Cluster::start(500, 1500);
    // The worker's whole store (files, staging, catalog) on a 3 MiB filesystem.
    let disk = SmallDisk::mount("3m");
    std::os::unix::fs::symlink(disk.path(), cluster.store_dir("w1")).expect("link the store");
    let mut s = Setup::with_sshd(sshd, cluster);
    s.start_workers(&["w1"], FAST, &[]);
    let kh = s.sshd.known_hosts.clone();
    let dir = s.add_client("full", &kh);
    let mut expected = produce_sized(&dir, "fits", 4, 100 << 10);
    s.wait_drained(&expected, Duration::from_secs(30));

    // 24 files of 200 KiB (4.7 MiB) cannot fit: the batch fails as a whole, every time.
    expected.extend(produce_sized(&dir, "overflow", 24, 200 << 10));
    let status = s.cluster.wait_status(
        Duration::from_secs(30),
        "a full store disk in status",
        |st| {
            st["clients"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("disk is full"))
        },
    );
    let err = status["clients"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(err.contains("free space"), "says what to do: {err}");
    // Nothing lost, nothing deleted that is not committed: every produced file is either in
    // the store (once) or still at the source (in the directory or a claim dir).
    let (stored, rows) = s.all_stores();
    let (left, claimed) = leftovers(&dir);
    assert_eq!(stored.len(), rows.len(), "files and catalog rows agree");
    assert_eq!(
        stored.len() + left + claimed,
        expected.len(),
        "every file is stored or still at the source"
    );
    assert_eq!(left + claimed, 24, "the overflow is still at the source");
    assert!(
        !s.cluster.workers["w1"]
            .log_text()
            .contains("using SFTP for this connection"),
        "a full local disk is not a reason to leave batch mode"
    );

    disk.resize("64m");
    s.drains_exactly_once_and_recovers(&expected, Duration::from_secs(60));
}

#[test]
fn the_agent_wakes_the_worker_when_a_file_is_closed() {
    let mut s = Setup::with_sshd(Sshd::start(), Cluster::start(500, 1500));
    // A poll so long that only the agent's hint can explain a prompt pull.
    s.start_workers(&["w1"], &["--settle-ms", "300", "--poll-ms", "30000"], &[]);
    let kh = s.sshd.known_hosts.clone();
    let watched = s.cluster.dir.path().join("watch-hinted");
    let dir = s.add_client_at("hinted", &kh, watched);
    s.cluster.spawn_agent("hinted");
    s.cluster.wait_status(
        Duration::from_secs(20),
        "agent up, worker connected",
        |st| {
            let c = &st["clients"][0];
            c["agent"] == "up" && c["worker"].is_string()
        },
    );
    wait_until(
        Duration::from_secs(20),
        "the worker's first listing",
        || {
            s.cluster.workers["w1"]
                .log_text()
                .contains("connected client=hinted")
                .then_some(())
        },
    );
    // Past the first (empty) listing: without a hint the next one is 30 s away.
    std::thread::sleep(Duration::from_secs(1));
    let mut expected = Vec::new();
    for round in 0..2 {
        let closed = std::time::Instant::now();
        expected.extend(produce(&dir, &format!("hinted{round}"), 3));
        s.wait_drained(&expected, Duration::from_secs(10));
        assert!(
            closed.elapsed() < Duration::from_secs(10),
            "round {round}: pulled only after {:?}",
            closed.elapsed()
        );
    }
    s.assert_exactly_once(&expected);
}

//! Harness for end-to-end tests: starts the real `sqd` binaries on 127.0.0.1, talks to them
//! with the real `sqdctl`, bounds every wait, and kills every process it started on drop
//! (printing the tail of each log when the test failed).
#![allow(dead_code)]

pub mod files;
pub mod login;
pub mod small_disk;
pub mod sshd;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SQD: &str = env!("CARGO_BIN_EXE_sqd");
pub const SQDCTL: &str = env!("CARGO_BIN_EXE_sqdctl");

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn<S: AsRef<OsStr>>(
        name: &str,
        dir: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let mut cmd = Command::new(SQD);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn sqd");
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("----- last lines of {} -----", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Polls `f` every 25 ms until it returns Some, or panics after `timeout` naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn sqdctl(leader: &str, args: &[&str]) -> Output {
    Command::new(SQDCTL)
        .args(args)
        .env("SQD_LEADER", leader)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sqdctl")
}

/// Runs `sqd` to completion, killing it after 20 s (a command expected to fail must not hang
/// the test when it unexpectedly starts a daemon).
pub fn sqd_output<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut child = Command::new(SQD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sqd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("collect sqd output")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sqd --mode leader start` serving on `listen` with its state in `state_dir`, then `extra`: the
/// one place tests and benches build a leader's command line.
pub fn leader_args(listen: &str, state_dir: &Path, extra: &[&str]) -> Vec<String> {
    let state_dir = state_dir.to_str().expect("utf-8 state dir");
    [
        "--mode",
        "leader",
        "start",
        "--listen",
        listen,
        "--state-dir",
        state_dir,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(str::to_owned)
    .collect()
}

/// A leader plus workers and agents, in one temporary directory.
pub struct Cluster {
    pub leader_addr: String,
    pub leader: Option<Proc>,
    pub workers: BTreeMap<String, Proc>,
    pub agents: BTreeMap<String, Proc>,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    /// Extra flags every (re)start of the leader gets, e.g. `--metrics`.
    pub leader_extra: Vec<String>,
    /// Declared last so it is removed after the processes (and their logs are printed).
    /// Traversable by the private sshd's login user, for source directories kept inside.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a leader on a free loopback port and waits until it answers.
    pub fn start(heartbeat_ms: u64, lease_ms: u64) -> Cluster {
        Cluster::start_with(heartbeat_ms, lease_ms, &[])
    }

    /// Like [`Cluster::start`], with extra leader flags.
    pub fn start_with(heartbeat_ms: u64, lease_ms: u64, leader_extra: &[&str]) -> Cluster {
        let dir = login::traversable_tempdir();
        let mut c = Cluster {
            dir,
            leader_addr: String::new(),
            leader: None,
            workers: BTreeMap::new(),
            agents: BTreeMap::new(),
            heartbeat_ms,
            lease_ms,
            leader_extra: leader_extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        c.start_leader("127.0.0.1:0");
        c
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("leader-state")
    }

    /// Starts (or restarts) the leader on `listen` and waits for it to serve.
    pub fn start_leader(&mut self, listen: &str) {
        let state = self.state_dir();
        let addr_file = state.join("leader.addr");
        let _ = std::fs::remove_file(&addr_file);
        let hb = self.heartbeat_ms.to_string();
        let lease = self.lease_ms.to_string();
        let timing = [
            "--cluster",
            "test",
            "--heartbeat-ms",
            &hb,
            "--lease-ms",
            &lease,
        ];
        let mut args = leader_args(listen, &state, &timing);
        args.extend(self.leader_extra.iter().cloned());
        let proc = Proc::spawn("leader", self.dir.path(), &args, &[]);
        self.leader = Some(proc);
        self.leader_addr = wait_addr_file(&addr_file);
        let addr = self.leader_addr.clone();
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

    pub fn worker_args(&self, id: &str) -> Vec<String> {
        let store = self.dir.path().join(format!("store-{id}"));
        vec![
            "--mode".into(),
            "worker".into(),
            "start".into(),
            "--id".into(),
            id.into(),
            "--leader".into(),
            self.leader_addr.clone(),
            "--store".into(),
            store.to_string_lossy().into_owned(),
        ]
    }

    pub fn spawn_worker(&mut self, id: &str, env: &[(&str, &str)]) -> &mut Proc {
        self.spawn_worker_with(id, &[], env)
    }

    pub fn store_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("store-{id}"))
    }

    /// Starts a worker with extra flags (e.g. `--settle-ms`).
    pub fn spawn_worker_with(
        &mut self,
        id: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> &mut Proc {
        let mut args = self.worker_args(id);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let proc = Proc::spawn(&format!("worker-{id}"), self.dir.path(), &args, env);
        self.workers.insert(id.to_owned(), proc);
        self.workers.get_mut(id).expect("just inserted")
    }

    pub fn spawn_agent(&mut self, name: &str) -> &mut Proc {
        self.spawn_agent_with(name, &[])
    }

    /// Starts an agent with extra flags (e.g. `--host-name`).
    pub fn spawn_agent_with(&mut self, name: &str, extra: &[&str]) -> &mut Proc {
        let watch = self.dir.path().join(format!("watch-{name}"));
        std::fs::create_dir_all(&watch).expect("create watch dir");
        agent_runtime_dir_for_owner(&watch);
        let watch = watch.to_string_lossy().into_owned();
        let args = [
            "--mode",
            "client",
            "start",
            "--name",
            name,
            "--leader",
            &self.leader_addr,
            "--watch",
            &watch,
        ];
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        let proc = Proc::spawn(&format!("agent-{name}"), self.dir.path(), &args, &[]);
        self.agents.insert(name.to_owned(), proc);
        self.agents.get_mut(name).expect("just inserted")
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        sqdctl(&self.leader_addr, args)
    }

    /// Adds client `name` pulled over `sshd` from `dir`, which is handed to sshd's login user
    /// first (created if missing); `extra` flags follow (e.g. `--key`). Returns `dir`.
    pub fn add_ssh_client(
        &self,
        name: &str,
        sshd: &sshd::Sshd,
        dir: &Path,
        extra: &[&str],
    ) -> PathBuf {
        sshd.share_dir(dir);
        let path = dir.to_str().expect("utf-8 path");
        let target = sshd.target();
        let mut args = vec!["add-client", name, "--ssh", &target, "--path", path];
        args.extend_from_slice(extra);
        let out = self.ctl(&args);
        assert!(
            out.status.success(),
            "add-client {name}: {}",
            text(&out.stderr)
        );
        dir.to_path_buf()
    }

    pub fn add_client(&self, name: &str) {
        let out = self.ctl(&[
            "add-client",
            name,
            "--ssh",
            "stats@127.0.0.1:22",
            "--path",
            "/var/stats",
        ]);
        assert!(
            out.status.success(),
            "add-client {name}: {}",
            text(&out.stderr)
        );
    }

    /// `sqdctl status --json`, or None when the leader does not answer.
    pub fn status(&self) -> Option<Value> {
        let out = self.ctl(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits (≤ 20 s) until exactly `n` workers are alive; returns that status.
    pub fn wait_alive(&self, n: usize) -> Value {
        self.wait_status(
            Duration::from_secs(20),
            &format!("{n} alive worker(s)"),
            |s| workers_in(s, "alive").len() == n,
        )
    }

    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&Value) -> bool,
    ) -> Value {
        wait_until(timeout, what, || self.status().filter(|s| ok(s)))
    }
}

/// On a host the agent runs as the watched directory's owner (scripts/systemd/sqd-client.service),
/// here as the test runner: its runtime dir `<watch>/.sqd` is created with the directory's owner,
/// as on a host, so that the SSH login user can still create claim dirs in it.
fn agent_runtime_dir_for_owner(watch: &Path) {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(watch).expect("stat the watched dir");
    let runtime = watch.join(".sqd");
    std::fs::create_dir_all(&runtime).expect("create the agent's runtime dir");
    std::os::unix::fs::chown(&runtime, Some(owner.uid()), Some(owner.gid()))
        .expect("chown the agent's runtime dir");
}

/// Worker ids in the given state.
pub fn workers_in(status: &Value, state: &str) -> Vec<String> {
    status["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["state"] == state)
                .filter_map(|w| w["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// client -> (worker, epoch)
pub fn assignments(status: &Value) -> BTreeMap<String, (Option<String>, u64)> {
    status["clients"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        (
                            c["worker"].as_str().map(str::to_owned),
                            c["epoch"].as_u64().unwrap_or(0),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every client is on a worker whose state is `alive`.
pub fn all_on_alive(status: &Value, expected_clients: usize) -> bool {
    let alive = workers_in(status, "alive");
    let a = assignments(status);
    a.len() == expected_clients
        && a.values()
            .all(|(w, _)| w.as_ref().is_some_and(|w| alive.contains(w)))
}

/// Waits (≤ 20 s) for a daemon's address file (`leader.addr`, `metrics.addr`) and returns it.
pub fn wait_addr_file(path: &Path) -> String {
    wait_until(
        Duration::from_secs(20),
        &format!("address file {}", path.display()),
        || {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        },
    )
}

/// `GET path` over plain HTTP/1.1 on loopback: (status code, body), or None when unreachable.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample whose name and labels are exactly `series` (e.g.
/// `sqd_worker_files_committed_total{client="a"}`) in a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Sum of every sample of `name` whatever its labels.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

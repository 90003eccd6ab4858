//! UDP discovery of the leader (issue 19), inside network namespaces this test creates: the
//! leader in namespace A, a worker and an agent in namespace B on the same veth segment, both
//! started without `--leader`. Multicast never leaves these namespaces; nothing is sent on the
//! host's own interfaces. Needs root (`ip netns add`); where that is refused the test says so
//! and skips (its output is shown, see .config/nextest.toml), unless `SQD_REQUIRE_NETNS` is
//! set, which turns the skip into a failure.

mod support;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use prost::Message;
use serde_json::Value;
use sha2::Sha256;
use sqd::proto::{Discovery, ProbeInit, Signed, discovery::Body};
use support::files::{produce, sorted, store_contents};
use support::sshd::Sshd;
use support::{SQD, SQDCTL, http_get, metric, text, wait_until, workers_in};

const GROUP: &str = "239.255.70.70:7071";
const NODE_TOKEN: &str = "node-token-for-the-discovery-test-0123456789";
const ADMIN_TOKEN: &str = "admin-token-for-the-discovery-test-0123456789";
const PROBE_MS: u64 = 1000;

/// Two namespaces joined by a veth pair, deleted (with everything in them) on drop.
struct Netns {
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            text(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// `Err` with the reason when namespaces cannot be made here (not root, no `ip`).
    fn create() -> Result<Netns, String> {
        let tag = std::process::id() % 100_000;
        let ns = Netns {
            a: format!("sqdd{tag}a"),
            b: format!("sqdd{tag}b"),
        };
        // Left over by a run that was killed with the same pid: they are ours to remove.
        let _ = ip(&["netns", "del", &ns.a]);
        let _ = ip(&["netns", "del", &ns.b]);
        ip(&["netns", "add", &ns.a])?;
        // From here on, drop deletes whatever was made.
        ip(&["netns", "add", &ns.b]).map_err(|e| format!("setup: {e}"))?;
        let (va, vb) = (format!("sqv{tag}a"), format!("sqv{tag}b"));
        let setup = [
            // Both ends are made inside the namespaces: the host's interfaces are never touched.
            vec![
                "-n", &ns.a, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns",
                &ns.b,
            ],
            vec!["-n", &ns.a, "addr", "add", "10.213.7.1/24", "dev", &va],
            vec!["-n", &ns.b, "addr", "add", "10.213.7.2/24", "dev", &vb],
            vec!["-n", &ns.a, "link", "set", "lo", "up"],
            vec!["-n", &ns.b, "link", "set", "lo", "up"],
            vec!["-n", &ns.a, "link", "set", &va, "up"],
            vec!["-n", &ns.b, "link", "set", &vb, "up"],
            vec!["-n", &ns.a, "route", "add", "224.0.0.0/4", "dev", &va],
            vec!["-n", &ns.b, "route", "add", "224.0.0.0/4", "dev", &vb],
        ];
        for args in setup {
            ip(&args).map_err(|e| format!("setup: {e}"))?;
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// Runs `f` on a thread inside namespace `ns` (sockets it opens belong to that namespace).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).expect("open the namespace");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A process started in a namespace (`ip netns exec NS …`), killed on drop.
struct NsProc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl NsProc {
    fn spawn(ns: &str, name: &str, dir: &Path, program: &str, args: &[String]) -> NsProc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn in namespace");
        NsProc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- last lines of {} -----", self.name);
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

fn sqdctl_in(ns: &str, admin: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, SQDCTL])
        .args(args)
        .env("SQD_LEADER", "127.0.0.1:7070")
        .env("SQD_TOKEN_FILE", admin)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sqdctl")
}

fn status(ns: &str, admin: &Path) -> Option<Value> {
    let out = sqdctl_in(ns, admin, &["status", "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Forwards TCP from 127.0.0.1:`port` inside namespace `ns` to the private sshd on the host's
/// 127.0.0.1:`port` (loopback to loopback), so a worker in the namespace reaches it under
/// the address its known_hosts pins. Stops accepting when dropped.
struct Forward(Arc<AtomicBool>);

impl Forward {
    fn start(ns: &str, port: u16) -> Forward {
        let listener = in_ns(ns, move || {
            TcpListener::bind(("127.0.0.1", port)).expect("bind forwarder")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Spawned from the test's thread: connects from the host's namespace.
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = inside.set_nonblocking(false);
                        if let Ok(host) = TcpStream::connect(("127.0.0.1", port)) {
                            pump(inside, host);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Forward(stop)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn pump(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b2, &mut a2);
        let _ = a2.shutdown(std::net::Shutdown::Write);
    });
}

fn write_token(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).expect("write token");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod token");
}

/// A datagram as a leader would sign it with `token`.
fn signed(token: &str, msg: &Discovery) -> Vec<u8> {
    let payload = msg.encode_to_vec();
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("hmac key");
    mac.update(b"sqd-discovery-v1\0");
    mac.update(&payload);
    Signed {
        payload,
        mac: mac.finalize().into_bytes().to_vec(),
    }
    .encode_to_vec()
}

fn fake_probe(nonce: &[u8], sent_ms: u64) -> Discovery {
    Discovery {
        nonce: nonce.to_vec(),
        sent_ms,
        body: Some(Body::ProbeInit(ProbeInit {
            cluster: "test".into(),
            leader_id: "intruder".into(),
            version: sqd::version::VERSION.into(),
            grpc_addr: "10.213.7.2".into(),
            grpc_port: 9,
            started_ms: u64::MAX,
            interval_ms: 1000,
            ..Default::default()
        })),
    }
}

fn now_ms() -> u64 {
    u64::try_from(sqd::clock::unix_ms()).expect("clock after 1970")
}

/// Sends `datagrams` to the discovery group from inside `ns`.
fn send_in(ns: &str, datagrams: Vec<Vec<u8>>) {
    in_ns(ns, move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind sender");
        socket.set_multicast_ttl_v4(1).expect("ttl");
        for d in datagrams {
            socket.send_to(&d, GROUP).expect("send to the group");
        }
    });
}

/// One genuine announcement, heard inside `ns` (as an attacker on the segment would).
fn capture_in(ns: &str) -> Vec<u8> {
    in_ns(ns, || {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        socket.set_reuse_address(true).expect("reuse");
        let group: SocketAddrV4 = GROUP.parse().expect("group");
        socket.bind(&group.into()).expect("bind group");
        socket
            .join_multicast_v4(group.ip(), &Ipv4Addr::UNSPECIFIED)
            .expect("join");
        let socket: std::net::UdpSocket = socket.into();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = vec![0u8; 2048];
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("hear an announcement within 10 s");
        buf.truncate(n);
        buf
    })
}

fn node_flags(token: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--token-file",
        &path(token),
        "--allow-insecure",
        "--discovery",
        "udp",
    ]
    .map(str::to_owned)
    .to_vec();
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn worker_metrics(ns: &str, store: &Path) -> String {
    metrics_page(ns, store)
}

/// `/metrics` of the process in `ns` that wrote `dir/metrics.addr`.
fn metrics_page(ns: &str, dir: &Path) -> String {
    let addr = support::wait_addr_file(&dir.join("metrics.addr"));
    in_ns(ns, move || http_get(&addr, "/metrics"))
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn ignored(page: &str, reason: &str) -> f64 {
    metric(
        page,
        &format!("sqd_worker_discovery_ignored_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn nodes_without_leader_find_it_and_ignore_forged_stale_and_replayed_probes() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            assert!(
                std::env::var_os("SQD_REQUIRE_NETNS").is_none(),
                "SQD_REQUIRE_NETNS is set but network namespaces cannot be created: {why}"
            );
            eprintln!(
                "SKIPPED discovery in network namespaces: they cannot be created here ({why}); \
                 run as root with iproute2 to test discovery"
            );
            return;
        }
    };
    let dir = support::login::traversable_tempdir();
    let (node_token, admin_token) = (
        dir.path().join("node.token"),
        dir.path().join("admin.token"),
    );
    write_token(&node_token, NODE_TOKEN);
    write_token(&admin_token, ADMIN_TOKEN);

    let leader_args: Vec<String> = [
        "--mode",
        "leader",
        "start",
        "--listen",
        "0.0.0.0:7070",
        "--cluster",
        "test",
        "--state-dir",
        &path(&dir.path().join("leader-state")),
        "--admin-token-file",
        &path(&admin_token),
        "--node-token-file",
        &path(&node_token),
        "--allow-insecure",
        "--discovery",
        "udp",
        "--probe-interval-ms",
        &PROBE_MS.to_string(),
        "--heartbeat-ms",
        "500",
        "--lease-ms",
        "1500",
        "--metrics",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    let leader = NsProc::spawn(&ns.a, "leader", dir.path(), SQD, &leader_args);
    wait_until(Duration::from_secs(30), "the leader to serve", || {
        status(&ns.a, &admin_token).map(|_| ())
    });

    // The client's files are served by the private sshd, reached from B through a forwarder.
    let sshd = Sshd::start();
    let _forward = Forward::start(&ns.b, sshd.port);
    let src = dir.path().join("src-c1");
    sshd.share_dir(&src);
    let out = sqdctl_in(
        &ns.a,
        &admin_token,
        &[
            "add-client",
            "c1",
            "--ssh",
            &sshd.target(),
            "--path",
            &path(&src),
            "--key",
            &path(&sshd.client_key),
            "--known-hosts",
            &path(&sshd.known_hosts),
        ],
    );
    assert!(out.status.success(), "add-client: {}", text(&out.stderr));

    // Worker and agent in B, neither told where the leader is.
    let store = dir.path().join("store-w1");
    let started = Instant::now();
    let mut worker_args: Vec<String> = [
        "--mode",
        "worker",
        "start",
        "--id",
        "w1",
        "--cluster",
        "test",
        "--store",
        &path(&store),
        "--metrics",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    worker_args.extend(node_flags(&node_token, &[]));
    let _worker = NsProc::spawn(&ns.b, "worker-w1", dir.path(), SQD, &worker_args);
    let runtime = src.join(".sqd");
    std::fs::create_dir_all(&runtime).expect("agent runtime dir");
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&src).expect("stat src");
        std::os::unix::fs::chown(&runtime, Some(owner.uid()), Some(owner.gid())).expect("chown");
    }
    let mut agent_args: Vec<String> = [
        "--mode",
        "client",
        "start",
        "--name",
        "c1",
        "--cluster",
        "test",
        "--watch",
        &path(&src),
    ]
    .map(str::to_owned)
    .to_vec();
    agent_args.extend(node_flags(&node_token, &[]));
    let _agent = NsProc::spawn(&ns.b, "agent-c1", dir.path(), SQD, &agent_args);

    wait_until(
        Duration::from_secs(30),
        "w1 alive and the agent up, found by discovery",
        || {
            let st = status(&ns.a, &admin_token)?;
            (workers_in(&st, "alive") == ["w1"] && st["clients"][0]["agent"] == "up").then_some(())
        },
    );
    let took = started.elapsed();
    eprintln!(
        "worker and agent registered {} ms after the worker started (probe interval {PROBE_MS} ms)",
        took.as_millis()
    );
    // Two probe intervals, plus the start of two debug binaries on a shared machine.
    assert!(
        took < Duration::from_millis(2 * PROBE_MS) + Duration::from_secs(2),
        "registered only after {took:?}"
    );
    assert!(
        _worker.log_text().contains("discovery: found the leader"),
        "the worker logs what it found"
    );

    let expected = produce(&src, "disc", 10);
    wait_until(Duration::from_secs(60), "files committed by w1", || {
        let (files, _) = store_contents(&store);
        (files.len() >= expected.len()).then_some(())
    });
    assert_eq!(sorted(store_contents(&store).0), sorted(expected));

    // Forged (a MAC not made with the node token), stale (signed, 60 s old), replayed (a
    // genuine announcement sent again), all from inside B onto the segment.
    let genuine = capture_in(&ns.b);
    let forged = signed(
        "not-the-node-token-at-all-0123456789",
        &fake_probe(b"forged-1", now_ms()),
    );
    let stale = signed(NODE_TOKEN, &fake_probe(b"stale-1", now_ms() - 60_000));
    send_in(&ns.b, vec![forged, stale, genuine]);
    wait_until(
        Duration::from_secs(10),
        "forged, stale and replayed probes counted",
        || {
            let page = worker_metrics(&ns.b, &store);
            (ignored(&page, "forged") >= 1.0
                && ignored(&page, "stale") >= 1.0
                && ignored(&page, "replayed") >= 1.0)
                .then_some(())
        },
    );
    // The intruder's "leader" (newest start, port 9) was never chosen: w1 is still alive there.
    std::thread::sleep(Duration::from_millis(2 * PROBE_MS));
    let st = status(&ns.a, &admin_token).expect("status");
    assert_eq!(workers_in(&st, "alive"), ["w1"], "{st}");
    assert!(
        !_worker.log_text().contains("intruder"),
        "a forged or stale leader was believed"
    );

    // A worker of another cluster ignores this leader.
    let store2 = dir.path().join("store-w2");
    let mut other: Vec<String> = [
        "--mode",
        "worker",
        "start",
        "--id",
        "w2",
        "--cluster",
        "other",
        "--store",
        &path(&store2),
        "--metrics",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    other.extend(node_flags(&node_token, &[]));
    let _w2 = NsProc::spawn(&ns.b, "worker-w2", dir.path(), SQD, &other);
    wait_until(
        Duration::from_secs(15),
        "w2 to ignore cluster test's leader",
        || (ignored(&worker_metrics(&ns.b, &store2), "other_cluster") >= 2.0).then_some(()),
    );
    let st = status(&ns.a, &admin_token).expect("status");
    assert!(
        !st.to_string().contains("\"w2\""),
        "w2 registered with another cluster: {st}"
    );

    // A second leader of the same cluster on the segment refuses to start (C6).
    let mut second: Vec<String> = leader_args.clone();
    let at = second
        .iter()
        .position(|a| a == "--state-dir")
        .expect("--state-dir")
        + 1;
    second[at] = path(&dir.path().join("second-state"));
    let mut second = NsProc::spawn(&ns.b, "second-leader", dir.path(), SQD, &second);
    let exit = second
        .wait_exit(Duration::from_secs(20))
        .expect("the second leader exits");
    assert!(!exit.success());
    let log = second.log_text();
    assert!(log.contains("another leader of cluster \"test\""), "{log}");

    // A running leader that hears another leader of its cluster (here one signed with the
    // node token, so only a key holder could send it) logs an error and counts it.
    let other = signed(NODE_TOKEN, &fake_probe(b"other-leader-1", now_ms()));
    send_in(&ns.b, vec![other]);
    let state = dir.path().join("leader-state");
    wait_until(
        Duration::from_secs(10),
        "the leader to count the conflict",
        || {
            let page = metrics_page(&ns.a, &state);
            let conflicts = metric(&page, "sqd_leader_discovery_conflicts_total")?;
            (conflicts >= 1.0).then_some(())
        },
    );
    let page = metrics_page(&ns.a, &state);
    let leader_ignored = |r: &str| {
        metric(
            &page,
            &format!("sqd_leader_discovery_ignored_total{{reason=\"{r}\"}}"),
        )
    };
    assert!(leader_ignored("forged") >= Some(1.0), "{page}");
    assert!(
        metric(&page, "sqd_leader_discovery_probes_total") >= Some(5.0),
        "{page}"
    );
    assert!(
        leader
            .log_text()
            .contains("another leader announces this cluster"),
        "the leader logs the conflict"
    );
}

#[test]
fn discovery_without_a_node_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = path(&dir.path().join("store"));
    let out = support::sqd_output(&[
        "--mode",
        "worker",
        "start",
        "--id",
        "w1",
        "--store",
        &store,
        "--discovery",
        "udp",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("token_file") && err.contains("discovery"),
        "{err}"
    );
    let state = path(&dir.path().join("leader"));
    let out = support::sqd_output(&[
        "--mode",
        "leader",
        "start",
        "--state-dir",
        &state,
        "--listen",
        "127.0.0.1:0",
        "--discovery",
        "udp",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("node_token_file") && err.contains("discovery"),
        "{err}"
    );
}

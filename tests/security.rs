//! End-to-end security of the control plane: real leader, workers, agents and sqdctl on
//! 127.0.0.1 with tokens, TLS and mTLS (certificates made here with rcgen). Every refusal is
//! checked against an authorised `sqdctl status`: nothing may have changed.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::files::*;
use support::sshd::Sshd;
use support::*;

const TIMING: &[&str] = &[
    "--cluster",
    "test",
    "--heartbeat-ms",
    "500",
    "--lease-ms",
    "1500",
];
const FAST: &[&str] = &["--settle-ms", "300", "--poll-ms", "100"];

/// A leader with tokens (and optionally TLS) in one temporary directory, and what it started.
struct Secure {
    addr: String,
    metrics: String,
    admin: PathBuf,
    node: PathBuf,
    /// sqdctl's TLS flags when the leader serves TLS.
    ctl_tls: Vec<String>,
    leader: Proc,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Secure {
    /// Generates the tokens with `sqd --mode leader init --generate-tokens`, then starts the
    /// leader with them and `extra` flags; waits until an authorised status answers.
    fn start(extra: &[String], ctl_tls: Vec<String>, dir: tempfile::TempDir) -> Secure {
        let tokens = dir.path().join("tokens");
        let out = sqd_output(&[
            "--mode",
            "leader",
            "init",
            "--generate-tokens",
            "--token-dir",
            tokens.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "init: {}", text(&out.stderr));
        let (admin, node) = (tokens.join("admin.token"), tokens.join("node.token"));
        let state = dir.path().join("leader-state");
        let mut flags: Vec<String> = TIMING.iter().map(|s| (*s).to_owned()).collect();
        flags.extend(
            [
                "--metrics",
                "127.0.0.1:0",
                "--admin-token-file",
                admin.to_str().expect("utf-8"),
                "--node-token-file",
                node.to_str().expect("utf-8"),
            ]
            .map(str::to_owned),
        );
        flags.extend(extra.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let args = leader_args("127.0.0.1:0", &state, &flags);
        let leader = Proc::spawn("leader", dir.path(), &args, &[]);
        let addr = wait_addr_file(&state.join("leader.addr"));
        let metrics = wait_addr_file(&state.join("metrics.addr"));
        let s = Secure {
            addr,
            metrics,
            admin,
            node,
            ctl_tls,
            leader,
            procs: Vec::new(),
            dir,
        };
        wait_until(Duration::from_secs(20), "an authorised status", || {
            s.status()
        });
        s
    }

    /// sqdctl with `creds` (token and TLS flags) and `args`, bounded by its own --timeout.
    fn ctl_as(&self, creds: &[String], args: &[&str]) -> Output {
        Command::new(SQDCTL)
            .args(["--leader", &self.addr, "--timeout", "5"])
            .args(creds)
            .args(args)
            .env_remove("SQD_TOKEN_FILE")
            .env_remove("SQD_TLS_CA")
            .env_remove("SQD_TLS_CERT")
            .env_remove("SQD_TLS_KEY")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run sqdctl")
    }

    fn admin_creds(&self) -> Vec<String> {
        let mut creds = vec!["--token-file".to_owned(), path(&self.admin)];
        creds.extend(self.ctl_tls.iter().cloned());
        creds
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_as(&self.admin_creds(), args)
    }

    fn status(&self) -> Option<Value> {
        let out = self.ctl(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        wait_until(Duration::from_secs(20), what, || {
            self.status().filter(|s| ok(s))
        })
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) {
        let proc = Proc::spawn(name, self.dir.path(), &args, &[]);
        self.procs.push(proc);
    }

    fn worker_args(&self, id: &str, extra: &[String]) -> Vec<String> {
        let store = self.dir.path().join(format!("store-{id}"));
        let mut args: Vec<String> = ["--mode", "worker", "start", "--id", id, "--leader"]
            .map(str::to_owned)
            .to_vec();
        args.extend([self.addr.clone(), "--store".into(), path(&store)]);
        args.extend(FAST.iter().map(|s| (*s).to_owned()));
        args.extend(extra.iter().cloned());
        args
    }

    fn log_of(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(Proc::log_text)
            .unwrap_or_default()
    }

    fn refused_count(&self, api: &str) -> f64 {
        let (_, page) = http_get(&self.metrics, "/metrics").expect("leader metrics");
        metric(
            &page,
            &format!("sqd_leader_auth_refused_total{{api=\"{api}\"}}"),
        )
        .unwrap_or(0.0)
    }
}

/// Calls a worker's `ShardService.Metrics` with no token; the status code it answers.
fn shard_metrics_without_token(addr: &str) -> tonic::Code {
    use sqd::proto::{ShardMetricsRequest, shard_service_client::ShardServiceClient};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let call = async {
            let mut client = ShardServiceClient::connect(format!("http://{addr}")).await?;
            let mut stream = client.metrics(ShardMetricsRequest {}).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), Box<dyn std::error::Error>>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(())) => tonic::Code::Ok,
            Ok(Err(e)) => e
                .downcast_ref::<tonic::Status>()
                .map_or(tonic::Code::Unknown, tonic::Status::code),
            Err(_) => tonic::Code::DeadlineExceeded,
        }
    })
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// What an authorised status says about membership and ownership: workers with their state
/// and drain flag, clients with their worker and epoch.
fn registry_view(status: &Value) -> (Vec<(String, String, bool)>, Vec<String>) {
    let workers = status["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    (
                        w["id"].as_str().unwrap_or_default().to_owned(),
                        w["state"].as_str().unwrap_or_default().to_owned(),
                        w["draining"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let clients = assignments(status)
        .into_iter()
        .map(|(c, (w, e))| format!("{c}={w:?}@{e}"))
        .collect();
    (workers, clients)
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).expect("write token");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

#[test]
fn tokens_guard_every_admin_rpc_and_the_node_session() {
    let mut s = Secure::start(&[], Vec::new(), login::traversable_tempdir());
    // init never overwrites a token.
    let before = std::fs::read_to_string(&s.admin).expect("admin token");
    let again = sqd_output(&[
        "--mode",
        "leader",
        "init",
        "--generate-tokens",
        "--token-dir",
        &path(s.admin.parent().expect("dir")),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&s.admin).expect("admin"), before);
    let mode = std::fs::metadata(&s.node)
        .expect("node")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let node_flag = vec!["--token-file".to_owned(), path(&s.node)];
    s.spawn("worker-w1", s.worker_args("w1", &node_flag));
    s.wait_status("w1 alive", |st| workers_in(st, "alive") == ["w1"]);
    let out = s.ctl(&[
        "add-client",
        "c1",
        "--ssh",
        "stats@127.0.0.1:22",
        "--path",
        "/var/stats",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let settled = s.wait_status("c1 on w1", |st| {
        assignments(st)
            .get("c1")
            .is_some_and(|(w, _)| w.as_deref() == Some("w1"))
    });
    let view = registry_view(&settled);

    // The leader reads w1's shard with the node token; a stranger gets nothing from it.
    let out = s.ctl(&["metrics", "--deny-partial"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shard_addr = std::fs::read_to_string(s.dir.path().join("store-w1").join("listen.addr"))
        .expect("the worker writes listen.addr");
    let code = shard_metrics_without_token(shard_addr.trim());
    assert_eq!(code, tonic::Code::Unauthenticated);

    let wrong = write_secret(
        s.dir.path(),
        "wrong.token",
        "0123456789abcdef0123456789abcdef",
    );
    let no_token: Vec<String> = Vec::new();
    let wrong_token = vec!["--token-file".to_owned(), path(&wrong)];
    let node_token = vec!["--token-file".to_owned(), path(&s.node)];
    let commands: &[&[&str]] = &[
        &["status"],
        &["explain", "c1"],
        &[
            "add-client",
            "c2",
            "--ssh",
            "stats@127.0.0.1:22",
            "--path",
            "/",
        ],
        &["remove-client", "c1"],
        &["drain-worker", "w1"],
        &["undrain-worker", "w1"],
    ];
    for (who, creds) in [
        ("no token", &no_token),
        ("a wrong token", &wrong_token),
        ("the node token", &node_token),
    ] {
        for args in commands {
            let out = s.ctl_as(creds, args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{args:?} with {who}: {err}");
            assert!(
                err.contains("not authorised: "),
                "{args:?} with {who}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        }
    }
    assert!(s.refused_count("admin") >= 18.0);

    // Rogue nodes: no token, a wrong token, the admin token. None gets a session.
    let rogues = [
        ("rogue1", Vec::new()),
        ("rogue2", wrong_token.clone()),
        ("rogue3", vec!["--token-file".to_owned(), path(&s.admin)]),
    ];
    for (id, flags) in &rogues {
        s.spawn(&format!("worker-{id}"), s.worker_args(id, flags));
    }
    let watch = s.dir.path().join("watch-c1");
    std::fs::create_dir_all(&watch).expect("watch dir");
    let agent: Vec<String> = [
        "--mode",
        "client",
        "start",
        "--name",
        "c1",
        "--leader",
        &s.addr,
        "--watch",
        &path(&watch),
    ]
    .map(str::to_owned)
    .to_vec();
    s.spawn("agent-c1", agent);
    for name in [
        "worker-rogue1",
        "worker-rogue2",
        "worker-rogue3",
        "agent-c1",
    ] {
        wait_until(Duration::from_secs(20), &format!("{name} refused"), || {
            s.log_of(name)
                .contains("not authorised by the leader")
                .then_some(())
        });
    }
    // A client added now goes to w1: the rogues never registered.
    let out = s.ctl(&[
        "add-client",
        "c3",
        "--ssh",
        "stats@127.0.0.1:22",
        "--path",
        "/var/stats",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = s.wait_status("c3 placed", |st| assignments(st).contains_key("c3"));
    assert_eq!(assignments(&after)["c3"].0.as_deref(), Some("w1"));
    let (workers, clients) = registry_view(&after);
    assert_eq!(workers, view.0, "the registry's workers changed");
    assert_eq!(clients[0], view.1[0], "c1 moved");
    assert_ne!(after["clients"][0]["agent"], "up", "{after}");
    assert!(s.refused_count("node") >= 4.0);
    let leader_log = s.leader.log_text();
    assert!(
        leader_log.contains("refused an unauthenticated request"),
        "{leader_log}"
    );
    assert!(leader_log.contains("peer=127.0.0.1:"), "the peer is logged");
}

#[test]
fn a_reachable_leader_refuses_to_run_open_and_clients_keep_tokens_off_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let open = sqd_output(&leader_args("0.0.0.0:0", &state, TIMING));
    let err = text(&open.stderr);
    assert!(!open.status.success());
    assert!(
        err.contains("without tokens") && err.contains("--generate-tokens"),
        "{err}"
    );

    let a = write_secret(dir.path(), "a.token", "0123456789abcdef0123456789abcdef");
    let n = write_secret(dir.path(), "n.token", "fedcba9876543210fedcba9876543210");
    let tokens = [
        "--admin-token-file",
        &path(&a),
        "--node-token-file",
        &path(&n),
    ];
    let plain = sqd_output(&leader_args("0.0.0.0:0", &state, &tokens));
    let err = text(&plain.stderr);
    assert!(!plain.status.success());
    assert!(
        err.contains("plaintext") && err.contains("allow_insecure"),
        "{err}"
    );

    // A token readable by others is refused, naming the file and the fix.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = sqd_output(&leader_args("127.0.0.1:0", &state, &tokens));
    let err = text(&loose.stderr);
    assert!(!loose.status.success());
    assert!(
        err.contains("chmod 600") && err.contains("a.token"),
        "{err}"
    );
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // sqdctl does not send a token in plaintext to another host (refused before connecting).
    let out = Command::new(SQDCTL)
        .args([
            "--leader",
            "192.0.2.1:7070",
            "--token-file",
            &path(&a),
            "status",
        ])
        .env_remove("SQD_TLS_CA")
        .output()
        .expect("sqdctl");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("tls_ca"),
        "{}",
        text(&out.stderr)
    );
}

/// A CA made with rcgen, and certificates it signs, written as PEM files.
struct Pki {
    dir: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("pki dir");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("write CA");
        Pki { dir, issuer }
    }

    fn ca(&self) -> String {
        path(&self.dir.join("ca.pem"))
    }

    /// A certificate for `names` (DNS names or IP addresses): (cert, key) paths.
    fn issue(&self, file: &str, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (path(&c), path(&k))
    }
}

fn tls_flags(ca: &str, cert: Option<&(String, String)>) -> Vec<String> {
    let mut flags = vec!["--tls-ca".to_owned(), ca.to_owned()];
    if let Some((c, k)) = cert {
        flags.extend([
            "--tls-cert".to_owned(),
            c.clone(),
            "--tls-key".to_owned(),
            k.clone(),
        ]);
    }
    flags
}

#[test]
fn mtls_refuses_strangers_and_wrong_names_and_files_flow_over_tls() {
    let dir = login::traversable_tempdir();
    let pki = Pki::new(dir.path(), "good");
    let other = Pki::new(dir.path(), "other");
    let leader_cert = pki.issue("leader", &["127.0.0.1", "localhost"]);
    let ctl_cert = pki.issue("sqdctl", &["sqdctl.admin.test"]);
    let leader_tls: Vec<String> = [
        "--tls-cert",
        &leader_cert.0,
        "--tls-key",
        &leader_cert.1,
        "--tls-client-ca",
        &pki.ca(),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut s = Secure::start(&leader_tls, tls_flags(&pki.ca(), Some(&ctl_cert)), dir);
    let token = ["--token-file".to_owned(), path(&s.admin)];

    // sqdctl: no client certificate, a certificate of another CA, trusting another CA.
    let stranger = other.issue("stranger", &["sqdctl.admin.test"]);
    let attempts = [
        ("no client cert", tls_flags(&pki.ca(), None)),
        (
            "a cert of another CA",
            tls_flags(&pki.ca(), Some(&stranger)),
        ),
        (
            "trusting another CA",
            tls_flags(&other.ca(), Some(&ctl_cert)),
        ),
        ("plaintext", Vec::new()),
    ];
    for (what, flags) in &attempts {
        let creds: Vec<String> = token.iter().chain(flags).cloned().collect();
        let out = s.ctl_as(&creds, &["drain-worker", "w1"]);
        assert!(!out.status.success(), "sqdctl with {what} succeeded");
    }

    // Workers: w2's certificate as w1, another CA's, none, then the right one.
    let node = ["--token-file".to_owned(), path(&s.node)];
    let w1 = pki.issue("w1", &["w1.worker.test"]);
    let w2 = pki.issue("w2", &["w2.worker.test"]);
    let forged = other.issue("forged", &["w1.worker.test"]);
    let wrong: [(&str, Vec<String>); 3] = [
        ("worker-as-w2", tls_flags(&pki.ca(), Some(&w2))),
        ("worker-forged", tls_flags(&pki.ca(), Some(&forged))),
        ("worker-nocert", tls_flags(&pki.ca(), None)),
    ];
    for (name, flags) in &wrong {
        let flags: Vec<String> = node.iter().chain(flags).cloned().collect();
        let store = s.dir.path().join(format!("store-{name}"));
        let mut args = s.worker_args("w1", &flags);
        let at = args.iter().position(|a| a == "--store").expect("--store") + 1;
        args[at] = path(&store);
        s.spawn(name, args);
    }
    wait_until(
        Duration::from_secs(20),
        "w2's certificate refused as w1",
        || {
            s.leader
                .log_text()
                .contains("the client certificate does not name this node")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let st = s.status().expect("status");
    assert!(
        registry_view(&st).0.is_empty(),
        "a refused worker registered: {st}"
    );
    s.procs.clear();

    let sshd = Sshd::start();
    let flags: Vec<String> = node
        .iter()
        .cloned()
        .chain(tls_flags(&pki.ca(), Some(&w1)))
        .collect();
    s.spawn("worker-w1", s.worker_args("w1", &flags));
    s.wait_status("w1 alive over mTLS", |st| workers_in(st, "alive") == ["w1"]);

    // A file goes through end to end, with the client's agent also on mTLS.
    let src = s.dir.path().join("src-tls1");
    sshd.share_dir(&src);
    let key = path(&sshd.client_key);
    let kh = path(&sshd.known_hosts);
    let out = s.ctl(&[
        "add-client",
        "tls1",
        "--ssh",
        &sshd.target(),
        "--path",
        &path(&src),
        "--key",
        &key,
        "--known-hosts",
        &kh,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let agent_cert = pki.issue("agent", &["tls1.agent.test"]);
    let mut agent: Vec<String> = [
        "--mode",
        "client",
        "start",
        "--name",
        "tls1",
        "--leader",
        &s.addr,
        "--watch",
        &path(&src),
    ]
    .map(str::to_owned)
    .to_vec();
    agent.extend(
        node.iter()
            .cloned()
            .chain(tls_flags(&pki.ca(), Some(&agent_cert))),
    );
    agent_runtime_dir(&src);
    s.spawn("agent-tls1", agent);
    let expected = produce(&src, "tls", 20);
    wait_until(Duration::from_secs(60), "files committed over TLS", || {
        let (files, _) = store_contents(&s.dir.path().join("store-w1"));
        (files.len() >= expected.len() && leftovers(&src) == (0, 0)).then_some(())
    });
    let (files, _) = store_contents(&s.dir.path().join("store-w1"));
    assert_eq!(sorted(files), sorted(expected));
    s.wait_status("the agent up over mTLS", |st| {
        st["clients"][0]["agent"] == "up"
    });
    // The leader reads w1's shard over TLS (w1's certificate names it); the answer is whole.
    let out = s.ctl(&["metrics", "--json", "--deny-partial"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("metrics json");
    // The leader's own shard (host metrics) answers too.
    let answered = answer["shards"]["answered"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(answered.contains(&serde_json::json!("w1")), "{answer}");
    // The shard's port speaks TLS only: plaintext HTTP/2 gets no SETTINGS frame back.
    let shard_addr = std::fs::read_to_string(s.dir.path().join("store-w1").join("listen.addr"))
        .expect("w1's listen.addr");
    let mut plain = std::net::TcpStream::connect(shard_addr.trim()).expect("connect to w1's shard");
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    use std::io::{Read as _, Write as _};
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("send a plaintext HTTP/2 preface");
    let mut answer = [0u8; 64];
    let n = plain.read(&mut answer).unwrap_or(0);
    assert!(
        !(n >= 9 && answer[3] == 4),
        "w1's shard answered plaintext HTTP/2: {:?}",
        &answer[..n]
    );
}

/// The agent's runtime dir `<watch>/.sqd`, owned like the watched directory (see
/// tests/support: the SSH login user creates claim dirs in it).
fn agent_runtime_dir(watch: &Path) {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(watch).expect("stat the watched dir");
    let runtime = watch.join(".sqd");
    std::fs::create_dir_all(&runtime).expect("create the agent's runtime dir");
    std::os::unix::fs::chown(&runtime, Some(owner.uid()), Some(owner.gid())).expect("chown");
}

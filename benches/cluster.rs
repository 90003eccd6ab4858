//! Cluster benchmarks driven by `scripts/bench.sh`, each run printing one JSON object on stdout:
//!
//! - `latency`: a real client agent, worker and leader over a private sshd; files written at a
//!   steady rate; the time from each file's close to its durable commit (the store catalog's
//!   `committed_at_ms`), p50/p99.
//! - `failover`: a real leader and real workers with many clients (most with unreachable SSH
//!   targets: this measures the control plane) plus one real client; `kill -9` the worker of the
//!   real client, time until all its clients are on live workers, and until the real client's
//!   new file has been committed and removed at its source.
//! - `leader-scale`: a real leader under simulated workers and client agents heartbeating over
//!   real gRPC on loopback (one connection each); leader CPU, RSS, heartbeat round-trip p99 and
//!   failover time at that scale; `--secure 1` runs it with tokens and TLS on (the same
//!   measurements, to compare with plaintext); `--host-metrics-ms N` has every simulated node
//!   send host values every N ms and the leader sample its own (0, the default: off).
//!
//! Everything it starts is killed on drop (the test harness's `Proc`); it only talks to
//! 127.0.0.1.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sqd::proto::{
    self, admin_service_client::AdminServiceClient, leader_message, node_message,
    node_service_client::NodeServiceClient,
};
use support::{Cluster, Proc, sshd::Sshd, wait_until};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel to the leader that carries the token (if any) of [`SECURE`].
type Ch = InterceptedService<Channel, sqd::security::Bearer>;

/// leader-scale with `--secure 1`: the token files and the CA of the leader's certificate.
static SECURE: std::sync::OnceLock<Secure> = std::sync::OnceLock::new();

struct Secure {
    admin: std::path::PathBuf,
    node: std::path::PathBuf,
    ca: std::path::PathBuf,
}

/// The endpoint and token towards `addr` with `token` (admin or node) when secure.
fn connector(addr: &str, node: bool) -> sqd::security::Connector {
    let cfg = match SECURE.get() {
        None => sqd::security::NodeSecurity::default(),
        Some(s) => sqd::security::NodeSecurity {
            token_file: Some(if node {
                s.node.clone()
            } else {
                s.admin.clone()
            }),
            tls_ca: Some(s.ca.clone()),
            ..Default::default()
        },
    };
    sqd::security::Connector::new(addr, &cfg).expect("connector")
}

/// Tokens, a CA and a leader certificate for 127.0.0.1 in `dir`; the leader's extra flags.
fn secure_leader(dir: &Path) -> Vec<String> {
    let (admin, node) = (dir.join("admin.token"), dir.join("node.token"));
    sqd::security::generate_tokens(&admin, &node).expect("tokens");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write pem");
        p.to_string_lossy().into_owned()
    };
    let ca_path = write("ca.pem", ca.pem());
    let flags = vec![
        "--admin-token-file".into(),
        admin.to_string_lossy().into_owned(),
        "--node-token-file".into(),
        node.to_string_lossy().into_owned(),
        "--tls-cert".into(),
        write("leader.pem", cert.pem()),
        "--tls-key".into(),
        write("leader.key", key.serialize_pem()),
    ];
    let _ = SECURE.set(Secure {
        admin,
        node,
        ca: ca_path.into(),
    });
    flags
}

fn main() {
    // `cargo bench` appends `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(what) = args.first() else {
        eprintln!("usage: cluster latency|failover|leader-scale [--key value]...");
        std::process::exit(2);
    };
    let opts = Opts::parse(&args[1..]);
    let run: fn(&Opts) -> serde_json::Value = match what.as_str() {
        "latency" => latency,
        "failover" => failover,
        "leader-scale" => leader_scale,
        other => {
            eprintln!("cluster: unknown benchmark {other} (latency, failover, leader-scale)");
            std::process::exit(2);
        }
    };
    // A set that fails or times out is reported, never a panic: bench.sh goes on with the
    // other sets (its processes are killed by the unwinding `Cluster`).
    let out = std::panic::catch_unwind(|| run(&opts)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned());
        json!({ "failed": why, "timed_out": why.contains("timed out") })
    });
    println!("{out}");
}

/// `--key value` pairs.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                eprintln!("cluster: expected --key value, got {k}");
                std::process::exit(2);
            };
            let Some(v) = it.next() else {
                eprintln!("cluster: --{key} needs a value");
                std::process::exit(2);
            };
            map.insert(key.to_owned(), v.clone());
        }
        Opts(map)
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.0.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("cluster: --{key} {v} is not a number");
                std::process::exit(2);
            }),
        }
    }
}

/// Polls `f` every 25 ms until it returns Some, or None after `timeout` (a bench reports
/// that instead of panicking).
fn try_wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Nearest-rank percentile of an unsorted sample.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A file of `size` bytes that does not compress (a cheap xorshift stream).
fn write_stats_file(path: &Path, size: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data).expect("write a stats file");
}

fn worker_ssh_flags(sshd: &Sshd) -> Vec<String> {
    vec![
        "--ssh-key".into(),
        sshd.client_key.display().to_string(),
        "--known-hosts".into(),
        sshd.known_hosts.display().to_string(),
    ]
}

/// (name, committed_at_ms) of every file in a worker's store catalog.
fn catalog(store: &Path) -> Vec<(String, i64)> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        store.join("catalog.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let Ok(mut q) = db.prepare("SELECT name, committed_at_ms FROM files") else {
        return Vec::new();
    };
    q.query_map([], |r| {
        let name: Vec<u8> = r.get(0)?;
        Ok((String::from_utf8_lossy(&name).into_owned(), r.get(1)?))
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// latency

fn latency(o: &Opts) -> Value {
    let files: usize = o.num("files", 1000);
    let rate: f64 = o.num("rate", 50.0);
    let poll_ms: u64 = o.num("poll-ms", 1000);
    let settle_ms: u64 = o.num("settle-ms", 1000);
    let sshd = Sshd::start();
    let mut c = Cluster::start(1000, 3000);
    let mut flags = worker_ssh_flags(&sshd);
    flags.extend([
        "--poll-ms".into(),
        poll_ms.to_string(),
        "--settle-ms".into(),
        settle_ms.to_string(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.spawn_worker_with("w1", &flags, &[]);
    c.wait_alive(1);
    let watch = c.add_ssh_client("lat", &sshd, &c.dir.path().join("watch-lat"), &[]);
    c.spawn_agent("lat");
    let store = c.store_dir("w1");
    // Warm up: the first file waits for the SSH connection; it is not measured.
    write_stats_file(&watch.join("warmup.jsonl"), 4096, 1);
    wait_until(Duration::from_secs(60), "the warm-up file", || {
        catalog(&store)
            .iter()
            .any(|(n, _)| n == "warmup.jsonl")
            .then_some(())
    });

    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut closed = HashMap::new();
    for i in 0..files {
        let due = start + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let name = format!("stats-{i:06}.jsonl");
        write_stats_file(&watch.join(&name), 4096, i as u64 + 7);
        closed.insert(name, unix_ms());
    }
    // The files committed within 120 s are measured; missing ones make the run `timed_out`.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rows = catalog(&store);
    while rows.len() <= files && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
        rows = catalog(&store);
    }
    let lat: Vec<f64> = rows
        .iter()
        .filter_map(|(n, at)| closed.get(n).map(|c| (at - c) as f64))
        .collect();
    let timed_out = lat.len() < files;
    json!({
        "files": files, "rate_per_s": rate, "poll_ms": poll_ms, "settle_ms": settle_ms,
        "p50_ms": percentile(&lat, 50.0), "p99_ms": percentile(&lat, 99.0),
        "max_ms": percentile(&lat, 100.0),
        "committed": lat.len(), "timed_out": timed_out,
    })
}

// ---------------------------------------------------------------------------------------------
// failover with real workers

async fn admin(addr: &str) -> AdminServiceClient<Ch> {
    let c = connector(addr, false);
    let ch = c.endpoint.connect().await.expect("connect to the leader");
    AdminServiceClient::with_interceptor(ch, c.bearer).max_decoding_message_size(64 << 20)
}

/// Adds `names` as clients with an SSH target nobody listens on, `in_flight` at a time.
async fn add_unreachable_clients(admin: &AdminServiceClient<Ch>, names: Vec<String>) {
    let mut pending = futures_util::stream::iter(names.into_iter().map(|name| {
        let mut a = admin.clone();
        async move {
            a.add_client(proto::AddClientRequest {
                client: Some(proto::ClientSpec {
                    name,
                    ssh: "nobody@127.0.0.1:1".into(),
                    path: "/var/stats".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("add a client");
        }
    }))
    .buffer_unordered(64);
    while pending.next().await.is_some() {}
}

fn unreachable_spec(name: &str) -> proto::ClientSpec {
    proto::ClientSpec {
        name: name.to_owned(),
        ssh: "nobody@127.0.0.1:1".into(),
        path: "/var/stats".into(),
        ..Default::default()
    }
}

/// `sqdctl add-clients`: every name in one AddClients call (one transaction).
async fn add_clients_in_one_call(admin: &AdminServiceClient<Ch>, names: &[String]) {
    let resp = admin
        .clone()
        .add_clients(proto::AddClientsRequest {
            clients: names.iter().map(|n| unreachable_spec(n)).collect(),
            dry_run: false,
        })
        .await
        .expect("add clients")
        .into_inner();
    assert!(resp.problems.is_empty(), "refused: {:?}", resp.problems);
}

/// One add-client after another; the latency of each, in ms.
async fn add_clients_one_by_one(admin: &AdminServiceClient<Ch>, names: &[String]) -> Vec<f64> {
    let mut a = admin.clone();
    let mut ms = Vec::with_capacity(names.len());
    for name in names {
        let t = Instant::now();
        a.add_client(proto::AddClientRequest {
            client: Some(unreachable_spec(name)),
        })
        .await
        .expect("add a client");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms
}

/// client -> worker ("" when unassigned), and the set of alive workers.
async fn placement(
    admin: &mut AdminServiceClient<Ch>,
) -> (HashMap<String, String>, HashSet<String>) {
    let s = admin
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let alive = s
        .workers
        .iter()
        .filter(|w| w.state == "alive")
        .map(|w| w.id.clone())
        .collect();
    let owners = s
        .clients
        .into_iter()
        .map(|c| (c.spec.map(|s| s.name).unwrap_or_default(), c.worker))
        .collect();
    (owners, alive)
}

fn failover(o: &Opts) -> Value {
    let workers: usize = o.num("workers", 20);
    let clients: usize = o.num("clients", 2000);
    let repeats: usize = o.num("repeats", 3);
    let sshd = Sshd::start();
    let mut c = Cluster::start(1000, 3000);
    let flags = worker_ssh_flags(&sshd);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for i in 0..workers {
        c.spawn_worker_with(&format!("w{i:02}"), &flags, &[]);
    }
    c.wait_alive(workers);
    let rt = rt();
    let addr = c.leader_addr.clone();
    let mut admin = rt.block_on(admin(&addr));
    let real_dir = c.add_ssh_client("real", &sshd, &c.dir.path().join("real"), &[]);
    let names: Vec<String> = (1..clients).map(|i| format!("c{i:05}")).collect();
    rt.block_on(add_unreachable_clients(&admin, names));
    let settled = |admin: &mut AdminServiceClient<Ch>| {
        let (owners, alive) = rt.block_on(placement(admin));
        owners.len() == clients && owners.values().all(|w| alive.contains(w))
    };
    wait_until(Duration::from_secs(120), "every client placed", || {
        settled(&mut admin).then_some(())
    });

    let mut reassign = Vec::new();
    let mut resume = Vec::new();
    let mut moved = Vec::new();
    // Why the repeats stopped early, if they did (the figures so far are still reported).
    let mut failed: Option<String> = None;
    for r in 0..repeats {
        // Kill only once placement is at rest: a client still being rebalanced to a restarted
        // worker would otherwise count as failed over when it merely finished moving.
        let mut last = HashMap::new();
        let owners = wait_until(Duration::from_secs(120), "placement at rest", || {
            std::thread::sleep(Duration::from_secs(2));
            let (owners, _) = rt.block_on(placement(&mut admin));
            let same = owners == last;
            last = owners.clone();
            same.then_some(owners)
        });
        let victim = owners["real"].clone();
        let victims: Vec<String> = owners
            .iter()
            .filter(|(_, w)| **w == victim)
            .map(|(c, _)| c.clone())
            .collect();
        let file = real_dir.join(format!("resume-{r}.jsonl"));
        let t0 = Instant::now();
        c.workers.get_mut(&victim).expect("victim worker").kill9();
        write_stats_file(&file, 4096, r as u64 + 99);
        let mut reassigned = None;
        let mut resumed = None;
        while (reassigned.is_none() || resumed.is_none()) && t0.elapsed() < Duration::from_secs(120)
        {
            if resumed.is_none() && !file.exists() {
                resumed = Some(t0.elapsed());
            }
            if reassigned.is_none() {
                let (owners, alive) = rt.block_on(placement(&mut admin));
                if victims.iter().all(|c| {
                    owners
                        .get(c)
                        .is_some_and(|w| *w != victim && alive.contains(w))
                }) {
                    reassigned = Some(t0.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (Some(reassigned), Some(resumed)) = (reassigned, resumed) else {
            let what = if reassigned.is_none() {
                "the victim's clients were not all reassigned"
            } else {
                "the real client's file was not committed"
            };
            eprintln!("failover {r}: {what} within 120 s; stopping the repeats");
            failed = Some(format!("kill {r}: {what} within 120 s"));
            break;
        };
        eprintln!(
            "failover {r}: {} clients of {victim} reassigned in {:.2} s; files flow again after {:.2} s",
            victims.len(),
            reassigned.as_secs_f64(),
            resumed.as_secs_f64()
        );
        reassign.push(reassigned.as_secs_f64());
        resume.push(resumed.as_secs_f64());
        moved.push(victims.len());
        // Bring the worker back under the same id (its store and leftovers) before the next kill.
        c.spawn_worker_with(&victim, &flags, &[]);
        wait_until(Duration::from_secs(60), "the restarted worker", || {
            settled(&mut admin).then_some(())
        });
        c.wait_alive(workers);
    }
    json!({
        "workers": workers, "clients": clients, "repeats": repeats,
        "heartbeat_ms": 1000, "lease_ms": 3000, "grace_ms": 500,
        "clients_moved": moved,
        "reassign_s": reassign, "resume_s_runs": resume,
        "p50_s": percentile(&reassign, 50.0), "p99_s": percentile(&reassign, 99.0),
        "resume_s": percentile(&resume, 50.0),
        "timed_out": failed.is_some(), "failed": failed,
    })
}

// ---------------------------------------------------------------------------------------------
// leader scale: simulated nodes over real gRPC

/// What the simulated nodes share with the measuring code.
#[derive(Default)]
struct Shared {
    /// client -> (simulated worker index, when the Assign arrived)
    owner: Mutex<HashMap<String, (usize, Instant)>>,
    /// Heartbeat round trips (send -> ack) in microseconds, while `recording`.
    rtt_us: Mutex<Vec<u32>>,
    recording: AtomicBool,
    registered: AtomicUsize,
    errors: AtomicUsize,
    /// Every node sends host values this often (0: never), as `metrics_interval_ms` would.
    host_metrics: Option<Duration>,
}

fn node_msg(body: node_message::Body) -> proto::NodeMessage {
    proto::NodeMessage { body: Some(body) }
}

/// One simulated worker (`worker = Some(index)`) or client agent (`agent = Some(name)`): registers,
/// heartbeats at the leader's period with the progress a real node sends, answers Revoke with
/// Released, and records heartbeat round trips.
async fn sim_node(channel: Ch, index: usize, agent: Option<String>, shared: Arc<Shared>) {
    let mut client = NodeServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(64);
    let (role, id) = match &agent {
        Some(name) => (proto::NodeRole::Agent, name.clone()),
        None => (proto::NodeRole::Worker, format!("sim-w{index:05}")),
    };
    let register = proto::Register {
        role: role as i32,
        id,
        version: sqd::version::VERSION.into(),
        capacity: 1000,
        ..Default::default()
    };
    if tx
        .send(node_msg(node_message::Body::Register(register)))
        .await
        .is_err()
    {
        return;
    }
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(_) => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut seq = 0u64;
    let mut beat: Option<tokio::time::Interval> = None;
    let host_name = format!("sim-host-{index:05}");
    // A random phase, as real nodes' samplers start at different moments.
    let mut next_sample = shared
        .host_metrics
        .map(|every| Instant::now() + every + every.mul_f64((index as f64 * 0.381_966).fract()));
    loop {
        tokio::select! {
            msg = inbound.next() => {
                let Some(Ok(msg)) = msg else { return };
                let now = Instant::now();
                match msg.body {
                    Some(leader_message::Body::Registered(r)) => {
                        if !r.accepted {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        shared.registered.fetch_add(1, Ordering::Relaxed);
                        // A random phase, as real nodes start at different moments.
                        let period = Duration::from_millis(u64::from(r.heartbeat_ms.max(10)));
                        let phase = period.mul_f64((index as f64 * 0.618_034).fract());
                        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        beat = Some(i);
                    }
                    Some(leader_message::Body::HeartbeatAck(a)) => {
                        if let Some(t) = sent.remove(&a.seq)
                            && shared.recording.load(Ordering::Relaxed)
                        {
                            let us = now.duration_since(t).as_micros().min(u128::from(u32::MAX)) as u32;
                            shared.rtt_us.lock().unwrap().push(us);
                        }
                    }
                    Some(leader_message::Body::Assign(a)) => {
                        let name = a.client.map(|c| c.name).unwrap_or_default();
                        shared.owner.lock().unwrap().insert(name.clone(), (index, now));
                        held.insert(name, a.epoch);
                    }
                    Some(leader_message::Body::AssignmentSet(set)) => {
                        held.clear();
                        let mut owner = shared.owner.lock().unwrap();
                        for a in set.assignments {
                            let name = a.client.map(|c| c.name).unwrap_or_default();
                            owner.insert(name.clone(), (index, now));
                            held.insert(name, a.epoch);
                        }
                    }
                    Some(leader_message::Body::Revoke(r))
                        if held.get(&r.client).is_some_and(|e| *e <= r.epoch) =>
                    {
                        held.remove(&r.client);
                        let released = proto::Released { client: r.client, epoch: r.epoch };
                        if tx.send(node_msg(node_message::Body::Released(released))).await.is_err() {
                            return;
                        }
                    }
                    Some(
                        leader_message::Body::Revoke(_)
                        | leader_message::Body::Wake(_)
                        | leader_message::Body::Forgotten(_),
                    )
                    | None => {}
                }
            }
            _ = async { beat.as_mut().expect("guarded").tick().await }, if beat.is_some() => {
                seq += 1;
                let clients = match &agent {
                    Some(name) => vec![proto::ClientProgress {
                        client: name.clone(),
                        backlog_files: 3,
                        backlog_bytes: 12_288,
                        oldest_backlog_s: 1,
                        ..Default::default()
                    }],
                    None => held
                        .iter()
                        .map(|(c, e)| proto::ClientProgress {
                            client: c.clone(),
                            epoch: *e,
                            files_total: seq * 10,
                            bytes_total: seq * 40_960,
                            files_today: seq * 10,
                            bytes_today: seq * 40_960,
                            rate_bps: 40_960,
                            last_commit_unix_ms: unix_ms(),
                            ..Default::default()
                        })
                        .collect(),
                };
                let load = held.len() as f64 / 1000.0;
                sent.insert(seq, Instant::now());
                let host = match (next_sample, shared.host_metrics) {
                    (Some(due), Some(every)) if Instant::now() >= due => {
                        next_sample = Some(due + every);
                        Some(proto::HostSample {
                            host: host_name.clone(),
                            cpu_percent: (seq % 100) as f64,
                            ram_mb: 2048.0 + (seq % 7) as f64,
                            disk_mb: 10_240.0,
                            load1: Some(0.5),
                            store_free_mb: agent.is_none().then_some(50_000.0),
                        })
                    }
                    _ => None,
                };
                let hb = proto::Heartbeat { seq, load, clients, host };
                if tx.send(node_msg(node_message::Body::Heartbeat(hb))).await.is_err() {
                    return;
                }
                // Acks that never came (a slow leader) must not pile up.
                if sent.len() > 16 {
                    sent.retain(|s, _| *s + 16 > seq);
                }
            }
        }
    }
}

/// (user+system CPU seconds, RSS in MiB) of a process.
fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    // USER_HZ is 100 on every Linux this runs on.
    (ticks / 100.0, rss_kb / 1024.0)
}

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

fn leader_scale(o: &Opts) -> Value {
    let workers: usize = o.num("workers", 1000);
    let agents: usize = o.num("agents", 10_000);
    let warmup = Duration::from_secs(o.num("warmup-s", 10));
    let window = Duration::from_secs(o.num("window-s", 30));
    let kills: usize = o.num("kills", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // --secure 1: tokens and TLS on, to compare with plaintext.
    let extra = if o.num("secure", 0) == 1 {
        secure_leader(dir.path())
    } else {
        Vec::new()
    };
    // --host-metrics-ms N: every node (and the leader itself) samples its host every N ms.
    let host_metrics_ms: u64 = o.num("host-metrics-ms", 0);
    let mut extra = extra;
    extra.extend([
        "--metrics-interval-ms".to_owned(),
        host_metrics_ms.to_string(),
    ]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let leader = Proc::spawn(
        "leader",
        dir.path(),
        &support::leader_args("127.0.0.1:0", &state, &extra),
        &[("RUST_LOG", "warn")],
    );
    let addr = support::wait_addr_file(&state.join("leader.addr"));
    let rt = rt();
    // One TCP connection per node as in a real fleet, unless the open-files limit forbids it
    // (the leader needs one descriptor per connection too).
    let conns = (workers + agents).min(open_files_limit().saturating_sub(1000).max(1));
    let shared = Arc::new(Shared {
        host_metrics: (host_metrics_ms > 0).then(|| Duration::from_millis(host_metrics_ms)),
        ..Shared::default()
    });
    let t_setup = Instant::now();
    let (admin_client, channels) = rt.block_on(async {
        let admin = admin(&addr).await;
        let c = connector(&addr, true);
        let endpoint = c.endpoint.tcp_nodelay(true);
        let mut channels = Vec::with_capacity(conns);
        let mut connecting = futures_util::stream::iter((0..conns).map(|_| {
            let (e, bearer) = (endpoint.clone(), c.bearer.clone());
            async move {
                let ch = e.connect().await.expect("connect a simulated node");
                InterceptedService::new(ch, bearer)
            }
        }))
        .buffer_unordered(128);
        while let Some(ch) = connecting.next().await {
            channels.push(ch);
        }
        (admin, channels)
    });
    let channel = |i: usize| channels[i % conns].clone();
    // Workers first, then clients (placed least-loaded across them), then their agents.
    let worker_tasks: Vec<_> = (0..workers)
        .map(|i| rt.spawn(sim_node(channel(i), i, None, shared.clone())))
        .collect();
    wait_until(
        Duration::from_secs(120),
        "simulated workers registered",
        || (shared.registered.load(Ordering::Relaxed) >= workers).then_some(()),
    );
    let names: Vec<String> = (0..agents).map(|i| format!("a{i:06}")).collect();
    // All but the last 100 in one `add-clients` call; the last 100 one by one, timed each:
    // the cost of one add-client in a fleet this size.
    let singles = agents.min(100);
    let t_add = Instant::now();
    rt.block_on(add_clients_in_one_call(
        &admin_client,
        &names[..agents - singles],
    ));
    let add_s = t_add.elapsed().as_secs_f64();
    let single_ms = rt.block_on(add_clients_one_by_one(
        &admin_client,
        &names[agents - singles..],
    ));
    eprintln!(
        "leader-scale: {} clients added in one call in {add_s:.1} s; then one add-client p50 {:.1} ms, p99 {:.1} ms",
        agents - singles,
        percentile(&single_ms, 50.0),
        percentile(&single_ms, 99.0)
    );
    for (i, name) in names.iter().enumerate() {
        rt.spawn(sim_node(
            channel(workers + i),
            workers + i,
            Some(name.clone()),
            shared.clone(),
        ));
    }
    wait_until(
        Duration::from_secs(300),
        "every node registered and every client placed",
        || {
            (shared.registered.load(Ordering::Relaxed) >= workers + agents
                && shared.owner.lock().unwrap().len() >= agents)
                .then_some(())
        },
    );
    let setup_s = t_setup.elapsed().as_secs_f64();
    eprintln!(
        "leader-scale: {workers} workers + {agents} agents up after {setup_s:.1} s; warming up"
    );
    std::thread::sleep(warmup);
    shared.recording.store(true, Ordering::Relaxed);
    let (cpu0, _) = proc_usage(leader.pid());
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (cpu1, rss_mb) = proc_usage(leader.pid());
    let cpu_pct = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    shared.recording.store(false, Ordering::Relaxed);
    let rtt: Vec<f64> = shared
        .rtt_us
        .lock()
        .unwrap()
        .iter()
        .map(|us| f64::from(*us) / 1000.0)
        .collect();
    let expected = ((workers + agents) as f64 * window.as_secs_f64()) as usize;
    eprintln!(
        "leader-scale: {:.1}% of one core, {rss_mb:.0} MiB RSS, {} of ~{expected} heartbeats acked in the window",
        cpu_pct,
        rtt.len()
    );

    // Failover at scale: a simulated worker's connection drops (its process died); time until
    // every client it held was assigned to another simulated worker.
    let mut failover = Vec::new();
    let mut failed: Option<String> = None;
    let mut victims_done = HashSet::new();
    for k in 0..kills {
        let owner = shared.owner.lock().unwrap().clone();
        let Some(victim) =
            (0..workers).find(|w| !victims_done.contains(w) && owner.values().any(|(o, _)| o == w))
        else {
            break;
        };
        victims_done.insert(victim);
        let its: Vec<String> = owner
            .iter()
            .filter(|(_, (o, _))| *o == victim)
            .map(|(c, _)| c.clone())
            .collect();
        // Aborting the node's task drops its stream mid-session: what the leader sees when a
        // worker process dies (its session breaks, then its lease runs out).
        let t_kill = Instant::now();
        worker_tasks[victim].abort();
        let done = try_wait_until(Duration::from_secs(120), || {
            let owner = shared.owner.lock().unwrap();
            let times: Option<Vec<Instant>> = its
                .iter()
                .map(|c| {
                    owner
                        .get(c)
                        .filter(|(o, t)| *o != victim && *t > t_kill)
                        .map(|(_, t)| *t)
                })
                .collect();
            times.map(|t| t.into_iter().max().unwrap_or(t_kill))
        });
        let Some(done) = done else {
            eprintln!(
                "leader-scale: failover {k}: the victim's clients were not reassigned within 120 s"
            );
            failed = Some(format!(
                "kill {k}: the victim's clients were not reassigned within 120 s"
            ));
            break;
        };
        let s = done.duration_since(t_kill).as_secs_f64();
        eprintln!(
            "leader-scale: failover {k}: {} clients moved in {s:.2} s",
            its.len()
        );
        failover.push(s);
    }
    let (_, rss_end) = proc_usage(leader.pid());
    json!({
        "workers": workers, "agents": agents, "connections": conns,
        "host_metrics_ms": host_metrics_ms,
        "window_s": window.as_secs(), "clients_added_s": add_s,
        "clients_in_one_call": agents - singles,
        "add_client_p50_ms": percentile(&single_ms, 50.0),
        "add_client_p99_ms": percentile(&single_ms, 99.0), "setup_s": setup_s,
        "cpu_pct_one_core": cpu_pct, "rss_mb": rss_mb.max(rss_end),
        "heartbeats_acked": rtt.len(), "heartbeats_expected": expected,
        "heartbeat_p50_ms": percentile(&rtt, 50.0), "heartbeat_p99_ms": percentile(&rtt, 99.0),
        "failover_s_runs": failover, "failover_s": percentile(&failover, 50.0),
        "node_errors": shared.errors.load(Ordering::Relaxed),
        "timed_out": failed.is_some(), "failed": failed,
    })
}

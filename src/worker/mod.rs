//! The worker: holds a session with the leader, applies assignment changes, self-fences when
//! its lease runs out (C3), and runs one task per held client (see [`pull`]).

mod assignments;
mod held;
mod lifecycle;
pub mod offline;
mod pull;
mod shard_api;
mod staging;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::WorkerConfig;
use crate::daemon::{self, DaemonError, PidLock};
use crate::metrics::WorkerMetrics;
use crate::node::{self, Handler, NodeError, NodeOutbox};
use crate::proto::{self, leader_message::Body, node_message};
use crate::spec::ClientSpec;
use assignments::{Assignments, Change};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error("cannot create store directory {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] crate::store::StoreError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    RemoteWrite(#[from] crate::remote_write::RemoteWriteError),
    #[error(
        "--listen {0} would serve this worker's shard to anyone on the network: set token_file \
         (--token-file) to the cluster's node token, or listen on 127.0.0.1"
    )]
    OpenShard(std::net::SocketAddr),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error(
        "cannot listen on {addr} for shard queries: {source}; is another process using the port? pick another with --listen"
    )]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Serves `ShardService` (the leader's cluster queries) on `listen`, or on 127.0.0.1 at a free
/// port when unset; returns the address to advertise, also written to `<store>/listen.addr`.
async fn serve_shard(
    cfg: &WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<std::net::SocketAddr, WorkerError> {
    let want = cfg
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let failed = |source| WorkerError::Listen {
        addr: want.to_string(),
        source,
    };
    // Shard answers are the fleet's data: off loopback they need the node token (the leader
    // sends it), as the leader's own API does (DESIGN S1).
    let token = match &cfg.security.token_file {
        Some(path) => Some(crate::security::token::Token::read(path)?),
        None if !want.ip().is_loopback() => return Err(WorkerError::OpenShard(want)),
        None => None,
    };
    let gate = crate::security::gate::Gate::new(
        crate::security::gate::Api::Shard,
        token.as_ref(),
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind(want).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    daemon::write_addr_file(&cfg.store.join("listen.addr"), bound)?;
    if cfg.listen.is_none() {
        info!(addr = %bound, "shard queries served on loopback only; a leader on another host needs --listen");
    }
    let api =
        proto::shard_service_server::ShardServiceServer::new(shard_api::ShardApi::new(&cfg.store))
            .max_decoding_message_size(crate::codec::MAX_MESSAGE_BYTES);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    // With mTLS the worker's certificate serves its shard too: the leader checks it names
    // this worker (see security::tls::ShardTls).
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = crate::security::tls::shard_server(&cfg.security)? {
        builder = builder.tls_config(tls).map_err(|e| WorkerError::Listen {
            addr: want.to_string(),
            source: std::io::Error::other(format!("TLS settings: {e}")),
        })?;
    }
    tokio::spawn(async move {
        let served = builder
            .add_service(tonic::service::interceptor::InterceptedService::new(
                api, gate,
            ))
            .serve_with_incoming_shutdown(incoming, daemon::wait_for(shutdown))
            .await;
        if let Err(e) = served {
            warn!(error = %e, "the shard query server stopped");
        }
    });
    Ok(bound)
}

pub async fn run(cfg: WorkerConfig, shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
    std::fs::create_dir_all(&cfg.store).map_err(|source| WorkerError::Store {
        path: cfg.store.clone(),
        source,
    })?;
    let _lock = PidLock::acquire(&cfg.store, "worker")?;
    let shard_addr = serve_shard(&cfg, shutdown.clone()).await?;
    let ident = node::Identity {
        role: proto::NodeRole::Worker,
        id: cfg.id.clone(),
        version: crate::version::advertised(),
        addr: shard_addr.to_string(),
        cluster: cfg.cluster.clone().unwrap_or_default(),
        capacity: cfg.capacity,
        host_metrics: Some(cfg.host_metrics.sampler(&cfg.store, true)),
    };
    let store = crate::store::LocalStore::open_with(&cfg.store, cfg.shard)?;
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = WorkerMetrics::new(&mut prometheus);
    let leader = find_leader(&cfg, &ident, &mut prometheus, shutdown.clone())?;
    let store = start_remote_write(&cfg, store, &mut prometheus, &shutdown)?;
    let pull = pull::PullConfig {
        poll: Duration::from_millis(cfg.poll_ms),
        settle: Duration::from_millis(cfg.settle_ms),
        batch_files: cfg.batch_files,
        in_flight: cfg.transfers_in_flight,
        max_file_bytes: cfg.max_file_bytes,
        default_key: cfg.ssh_key.clone(),
        default_known_hosts: cfg.known_hosts.clone(),
        control_dir: cfg.store.join("ssh"),
        orphan_after: Duration::from_secs(cfg.fleet.orphan_after_s),
        transfer: cfg.transfer,
        max_reconnect: Duration::from_secs(cfg.fleet.max_reconnect_s),
        spawner: Arc::new(pull::Spawner::new(
            cfg.fleet.ssh_spawns_per_s,
            metrics.ssh_spawns.clone(),
        )),
        forgotten: pull::Forgotten::default(),
    };
    let leader_at = crate::discovery::listen::leader_label(&cfg.leader, cfg.discovery.as_ref());
    info!(worker = %cfg.id, leader = %leader_at, store = %cfg.store.display(), "worker starting");
    let store: Arc<dyn crate::store::Sink> = Arc::new(store);
    spawn_maintenance(store.clone(), shutdown.clone());
    let (held, leftovers) = held::Held::open(&cfg.store);
    for spec in leftovers {
        spawn_resolver(
            cfg.id.clone(),
            spec,
            store.clone(),
            pull.clone(),
            held.clone(),
        );
    }
    let lease = node::Lease::default();
    match store.bytes_stored() {
        Ok(bytes) => {
            metrics
                .store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        Err(e) => warn!(error = %e, "cannot read the store size for metrics"),
    }
    if let Some(addr) = cfg.metrics {
        let ready_lease = lease.clone();
        let ready: crate::metrics::Readiness = Arc::new(move || {
            if ready_lease.valid_now() {
                Ok(())
            } else {
                Err("not registered with the leader, or its lease ran out".to_owned())
            }
        });
        let (bound, serve) =
            crate::metrics::bind(addr, prometheus, ready, daemon::wait_for(shutdown.clone()))
                .await?;
        daemon::write_addr_file(&cfg.store.join("metrics.addr"), bound)?;
        tokio::spawn(serve);
    }
    let mut worker = WorkerNode::new(cfg.id.clone(), store, pull, lease.clone(), held, metrics);
    node::run(&ident, leader, &cfg.security, &mut worker, lease, shutdown).await?;
    info!(worker = %cfg.id, "worker stopped");
    Ok(())
}

/// The leader as given, or found by discovery (its counters registered with the worker's).
fn find_leader(
    cfg: &WorkerConfig,
    ident: &node::Identity,
    prometheus: &mut prometheus_client::registry::Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<node::LeaderAddr, crate::discovery::DiscoveryError> {
    let metrics = crate::discovery::DiscoveryMetrics::new();
    if cfg.discovery.is_some() {
        metrics.register(prometheus, "sqd_worker");
    }
    let me = crate::discovery::listen::Listener {
        role: ident.role,
        id: ident.id.clone(),
        version: ident.version.clone(),
        cluster: cfg.cluster.clone().unwrap_or_else(|| "sqd".to_owned()),
    };
    let discovery = cfg.discovery.as_ref();
    crate::discovery::listen::leader_addr(
        &cfg.leader,
        discovery,
        &cfg.security,
        me,
        metrics,
        shutdown,
    )
}

/// With `remote_write_url` set: the store queues each commit's samples and the shipper
/// drains the queue (see `remote_write`).
fn start_remote_write(
    cfg: &WorkerConfig,
    store: crate::store::LocalStore,
    prometheus: &mut prometheus_client::registry::Registry,
    shutdown: &watch::Receiver<bool>,
) -> Result<crate::store::LocalStore, WorkerError> {
    let Some(rw) = &cfg.remote_write else {
        return Ok(store);
    };
    let store = store.with_remote_queue(crate::remote_write::queue_limits(rw));
    let metrics = crate::remote_write::Metrics::new(prometheus);
    let catalog = store.catalog_path();
    crate::remote_write::spawn(catalog, (**rw).clone(), metrics, shutdown.clone())?;
    Ok(store)
}

/// How often the time-series shard is sealed and trimmed to its retention.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

/// Seals and trims the store's samples now and then, on a blocking thread: commits go on
/// meanwhile (see `store::shard`). A failed pass is logged and retried at the next tick.
fn spawn_maintenance(store: Arc<dyn crate::store::Sink>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let store = store.clone();
            let pass =
                tokio::task::spawn_blocking(move || store.maintain(crate::clock::unix_ms())).await;
            match pass {
                Ok(Ok(m)) if m.sealed_series + m.dropped_blocks > 0 => {
                    debug!(
                        sealed_series = m.sealed_series,
                        sealed_samples = m.sealed_samples,
                        dropped_blocks = m.dropped_blocks,
                        "time-series shard maintained"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "time-series shard maintenance failed"),
                Err(e) => warn!(error = %e, "time-series shard maintenance stopped"),
            }
        }
    });
}

/// Resolves a crash's leftover claims at one client, retrying until it can reach the host.
fn spawn_resolver(
    worker: String,
    spec: ClientSpec,
    store: Arc<dyn crate::store::Sink>,
    pull: pull::PullConfig,
    held: held::Held,
) {
    tokio::spawn(async move {
        let mut backoff = node::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match pull::resolve_leftovers(&worker, &spec, store.clone(), &pull, &held).await {
                Ok(()) => {
                    held.resolved(&spec.name);
                    return;
                }
                Err(e) => {
                    warn!(client = %spec.name, error = %e, "cannot resolve claims left by a crash yet; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    });
}

struct Running {
    epoch: u64,
    wake: Arc<tokio::sync::Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: pull::SharedStats,
}

/// The worker's side of the session: assignments plus the tasks serving them.
struct WorkerNode {
    id: String,
    store: Arc<dyn crate::store::Sink>,
    pull: Arc<pull::PullConfig>,
    lease: node::Lease,
    held: held::Held,
    busy_ns: Arc<AtomicU64>,
    /// (time, busy_ns) at the last heartbeat, for the load index and rates.
    last_sample: (Instant, u64),
    assignments: Assignments,
    running: HashMap<String, Running>,
    /// Work stopped because the lease ran out; resumes only on a fresh assignment set.
    fenced: bool,
    /// Whether the current session delivered its assignment set yet.
    have_set: bool,
    metrics: WorkerMetrics,
}

impl WorkerNode {
    fn new(
        id: String,
        store: Arc<dyn crate::store::Sink>,
        pull: pull::PullConfig,
        lease: node::Lease,
        held: held::Held,
        metrics: WorkerMetrics,
    ) -> Self {
        WorkerNode {
            id,
            store,
            pull: Arc::new(pull),
            lease,
            held,
            busy_ns: Arc::new(AtomicU64::new(0)),
            last_sample: (Instant::now(), 0),
            assignments: Assignments::default(),
            running: HashMap::new(),
            fenced: false,
            have_set: false,
            metrics,
        }
    }

    fn start(&mut self, spec: ClientSpec, epoch: u64) {
        // With "client task stopped", the record of when this worker acted for a client (C1).
        info!(worker = %self.id, client = %spec.name, epoch, "client task started");
        let (stop, stop_rx) = watch::channel(false);
        let name = spec.name.clone();
        let stats = pull::SharedStats::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(pull::serve_client(
            pull::ClientTask {
                worker: self.id.clone(),
                spec,
                epoch,
                store: self.store.clone(),
                lease: self.lease.clone(),
                stats: stats.clone(),
                config: self.pull.clone(),
                busy_ns: self.busy_ns.clone(),
                metrics: self.metrics.clone(),
            },
            pull::Signals {
                wake: wake.clone(),
                held: self.held.clone(),
            },
            stop_rx,
        ));
        self.running.insert(
            name,
            Running {
                epoch,
                wake,
                stop,
                task,
                stats,
            },
        );
        self.metrics.clients.set(self.running.len() as i64);
    }

    /// Stops a client's task; tells the leader `Released` once the task really ended.
    fn stop(&mut self, client: &str, epoch: u64, out: Option<&NodeOutbox>) {
        let running = self.running.remove(client);
        self.metrics.forget_client(client);
        self.metrics.clients.set(self.running.len() as i64);
        let out = out.cloned();
        let client = client.to_owned();
        let worker = self.id.clone();
        tokio::spawn(async move {
            if let Some(r) = running {
                let _ = r.stop.send(true);
                let _ = r.task.await;
                info!(worker = %worker, client = %client, epoch = r.epoch, "client task stopped");
            }
            if let Some(out) = out {
                let released = proto::Released { client, epoch };
                let _ = out
                    .send(proto::NodeMessage {
                        body: Some(node_message::Body::Released(released)),
                    })
                    .await;
            }
        });
    }

    /// Ends a fence: starts every held client again.
    fn resume(&mut self) {
        self.fenced = false;
        info!(worker = %self.id, clients = self.assignments.len(), "lease renewed; resuming work");
        let held: Vec<(ClientSpec, u64)> = self
            .assignments
            .held()
            .map(|(s, e)| (s.clone(), e))
            .collect();
        for (spec, epoch) in held {
            self.start(spec, epoch);
        }
    }

    /// An epoch older than ours comes from a leader whose state is older than the cluster; we
    /// keep ours (C2) and the leader, once the restore's reconcile ends, places the client anew.
    fn refused(&self, client: &str, held: u64, offered: u64) {
        warn!(worker = %self.id, client = %client, held, offered,
              "refused an assignment with an older epoch than the one held; keeping ours");
        self.metrics.stale_assignments.inc();
    }

    fn apply(&mut self, changes: Vec<Change>, out: &NodeOutbox) {
        for change in changes {
            match change {
                Change::Stop { client, epoch } => {
                    info!(worker = %self.id, client = %client, epoch, "assignment dropped");
                    self.stop(&client, epoch, Some(out));
                }
                Change::Start { spec, epoch } => {
                    info!(worker = %self.id, client = %spec.name, epoch, "assignment taken");
                    if !self.fenced {
                        self.start(spec, epoch);
                    }
                }
                Change::Refused {
                    client,
                    held,
                    offered,
                } => self.refused(&client, held, offered),
            }
        }
    }
}

impl Handler for WorkerNode {
    fn held(&self) -> Vec<proto::Assignment> {
        self.assignments
            .held()
            .map(|(spec, epoch)| proto::Assignment {
                client: spec.name.clone(),
                epoch,
            })
            .collect()
    }

    fn load(&self) -> f64 {
        // Share of the worker's pull capacity (one busy client per core) used since the last
        // heartbeat, so the leader sends new clients where work actually is light.
        let (at, busy) = self.last_sample;
        let elapsed = at.elapsed().as_nanos().max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = self.busy_ns.load(Ordering::Relaxed).saturating_sub(busy) as f64;
        (busy / elapsed / cores).clamp(0.0, 1.0)
    }

    fn progress(&mut self) -> Vec<proto::ClientProgress> {
        let (at, _) = self.last_sample;
        let secs = at.elapsed().as_secs_f64().max(0.001);
        self.last_sample = (Instant::now(), self.busy_ns.load(Ordering::Relaxed));
        let now_ms = crate::clock::unix_ms();
        self.running
            .iter()
            .map(|(client, r)| {
                let mut s = r
                    .stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let rate = (s.committed_bytes as f64 / secs) as u64;
                let today = s.totals.today(now_ms);
                s.committed_bytes = 0;
                proto::ClientProgress {
                    client: client.clone(),
                    epoch: r.epoch,
                    files_total: s.totals.files_total,
                    bytes_total: s.totals.bytes_total,
                    files_today: today.0,
                    bytes_today: today.1,
                    backlog_files: s.backlog_files,
                    backlog_bytes: s.backlog_bytes,
                    oldest_backlog_s: s.oldest_backlog.map_or(0, |t| t.elapsed().as_secs()),
                    rate_bps: rate,
                    last_error: s.last_error.clone().unwrap_or_default(),
                    behind: false,
                    last_commit_unix_ms: s.totals.last_commit_unix_ms,
                    samples_total: s.ingest.samples,
                    parse_errors_total: s.ingest.parse_errors,
                    samples_too_old: s.ingest.too_old,
                    samples_over_cap: s.ingest.over_cap,
                    last_parse_error: s.ingest.last_error.clone().unwrap_or_default(),
                }
            })
            .collect()
    }

    fn session_started(&mut self) {
        self.have_set = false;
    }

    fn message(&mut self, body: Body, out: &NodeOutbox) {
        match body {
            Body::AssignmentSet(set) => {
                let set: Vec<(ClientSpec, u64)> = set
                    .assignments
                    .into_iter()
                    .filter_map(|a| Some((a.client?.into(), a.epoch)))
                    .collect();
                let changes = self.assignments.replace(set);
                self.have_set = true;
                if self.fenced {
                    for change in changes {
                        match change {
                            // Not running (fenced), but the leader may wait for the release.
                            Change::Stop { client, epoch } => self.stop(&client, epoch, Some(out)),
                            Change::Refused {
                                client,
                                held,
                                offered,
                            } => self.refused(&client, held, offered),
                            Change::Start { .. } => {}
                        }
                    }
                    // The leader just confirmed what is ours: resume all of it.
                    self.resume();
                } else {
                    self.apply(changes, out);
                }
            }
            Body::Assign(a) => {
                if let Some(spec) = a.client {
                    let changes = self.assignments.assign(spec.into(), a.epoch);
                    self.apply(changes, out);
                }
            }
            Body::Revoke(r) => {
                let changes = self.assignments.revoke(&r.client, r.epoch);
                if changes.is_empty() {
                    // Not held (already dropped): confirm so the leader can move on.
                    self.stop(&r.client, r.epoch, Some(out));
                }
                self.apply(changes, out);
            }
            Body::Wake(w) => {
                if let Some(running) = self.running.get(&w.client)
                    && running.epoch == w.epoch
                {
                    running.wake.notify_one();
                }
            }
            Body::Forgotten(f) => {
                info!(worker = %self.id, forgotten = ?f.workers, "the operator forgot these workers: adopting their claims now");
                self.pull.forgotten.forget(f.workers);
            }
            Body::Registered(_) | Body::HeartbeatAck(_) => {}
        }
    }

    fn lease(&mut self, valid: bool, _out: Option<&NodeOutbox>) {
        self.metrics.lease_valid.set(i64::from(valid));
        if !valid && !self.fenced && !self.running.is_empty() {
            warn!(worker = %self.id, clients = self.running.len(), "lease expired: stopped all work until the leader confirms the assignments");
            self.fenced = true;
            let running: Vec<(String, u64)> = self
                .running
                .iter()
                .map(|(c, r)| (c.clone(), r.epoch))
                .collect();
            for (client, epoch) in running {
                self.stop(&client, epoch, None);
            }
        } else if !valid && !self.fenced {
            self.fenced = true;
        } else if valid && self.fenced && self.have_set {
            // Renewed within the same session that delivered the set: nothing was reassigned
            // (the leader closes a session before giving its clients away).
            self.resume();
        }
    }

    async fn shutdown(&mut self) {
        let running: Vec<(String, Running)> = self.running.drain().collect();
        for (_, r) in &running {
            let _ = r.stop.send(true);
        }
        for (client, r) in running {
            if r.task.await.is_err() {
                warn!(worker = %self.id, client = %client, "client task failed while stopping");
            }
        }
    }
}

//! The leader: membership, liveness, assignment and the durable registry.
//!
//! [`registry`], [`scheduler`], [`liveness`], [`audit`] and [`reason`] are pure; [`state`]
//! persists; [`core`] is the one thread that owns them; [`run`] wires the core to the gRPC
//! server.

pub(crate) mod alerting;
pub(crate) mod audit;
pub(crate) mod core;
pub(crate) mod fanout;
pub(crate) mod liveness;
pub(crate) mod promapi;
pub(crate) mod reason;
pub(crate) mod reconcile;
pub(crate) mod registry;
pub mod restore;
pub(crate) mod rollup;
pub(crate) mod scheduler;
pub(crate) mod state;
pub(crate) mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::codec::MAX_MESSAGE_BYTES;
use crate::config::LeaderConfig;
use crate::daemon::{self, DaemonError, PidLock};
use crate::proto::{
    admin_service_server::AdminServiceServer, node_service_server::NodeServiceServer,
};
use crate::security::LeaderGuard;
use crate::services::{admin::AdminApi, node::NodeApi};
use crate::version::VERSION;
use liveness::Timing;
use registry::Registry;
use state::{Loaded, State, StateError};
use status::LeaderInfo;
use tonic::service::interceptor::InterceptedService;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "cannot listen on {addr}: {source}; is another process using the port? pick another with --listen"
    )]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    QueryApi(#[from] promapi::PromApiError),
    #[error("the leader core stopped unexpectedly")]
    CoreGone,
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error(transparent)]
    Rollup(#[from] rollup::LogError),
    #[error(transparent)]
    Alerts(#[from] alerting::AlertingError),
    #[error(transparent)]
    HostMetrics(#[from] crate::hostmetrics::history::HistoryError),
}

/// `sqd --mode leader restore`: puts `backup` in place as the state of `cfg.state_dir`; refused
/// while a leader runs there.
pub fn restore_backup(
    cfg: &LeaderConfig,
    backup: &std::path::Path,
) -> Result<restore::Restored, LeaderError> {
    let _lock = PidLock::acquire(&cfg.state_dir, "leader")?;
    Ok(restore::restore(&cfg.state_dir, &cfg.cluster, backup)?)
}

/// `sqd --mode leader check-rules FILE`: a summary of a usable file, or every problem in it
/// (one line each, naming file, rule and key).
pub fn check_rules(file: &std::path::Path) -> Result<String, Vec<String>> {
    let rules = alerting::load_rules(Some(file)).map_err(|e| e.problems())?;
    let builtin = (rules.rules.iter())
        .filter(|r| matches!(r.source, crate::alerts::rules::Source::Builtin(_)))
        .count();
    Ok(format!(
        "{} rule(s) and {builtin} built-in rule(s) on",
        rules.rules.len() - builtin
    ))
}

/// How long a stopping leader waits for node connections to close before it exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs the leader until `shutdown` turns true.
pub async fn run(cfg: LeaderConfig, shutdown: watch::Receiver<bool>) -> Result<(), LeaderError> {
    // A leader that would run open refuses before it takes the lock or loads anything.
    let guard = LeaderGuard::load(cfg.listen, &cfg.security, Default::default())?;
    let _lock = PidLock::acquire(&cfg.state_dir, "leader")?;
    let started = Instant::now();
    // Nothing is served before the state is loaded (C5).
    let (mut state, loaded) = State::open(&cfg.state_dir, &cfg.cluster)?;
    let (clients, workers) = (loaded.clients.len(), loaded.workers.len());
    let stale = loaded.stale.clone();
    let mut registry = restore(&cfg, loaded);
    begin_reconcile(&cfg, &mut registry, &mut state, stale)?;
    let (listener, local) = listen(&cfg).await?;
    let info = LeaderInfo {
        addr: local.to_string(),
        cluster: cfg.cluster.clone(),
        version: VERSION.to_owned(),
    };
    let history = crate::hostmetrics::history::History::open(&cfg.state_dir)?;
    let hub = std::sync::Arc::new(crate::hostmetrics::Hub::new(
        cfg.emitters.keep,
        cfg.emitters.forget_after_ms,
        Some(history.clone()),
    ));
    let discovery = crate::discovery::DiscoveryMetrics::new();
    // Before anything is served: another leader of this cluster stops this start (C6).
    let announcer = announcer(&cfg, local, started, &discovery).await?;
    let (metrics, rollup_metrics) =
        serve_metrics(&cfg, &shutdown, &guard, &discovery, &hub).await?;
    spawn_own_sampler(&cfg, hub.clone());
    let (handle, core_thread) =
        core::spawn(registry, state, info, started, metrics).map_err(|source| LeaderError::Io {
            path: cfg.state_dir.clone(),
            source,
        })?;
    info!(addr = %local, cluster = %cfg.cluster, version = VERSION, clients, workers,
          heartbeat_ms = cfg.heartbeat_ms, lease_ms = cfg.lease_ms, "leader serving");

    let closer = handle.clone();
    // Every cluster read (sqdctl, the HTTP API, alert rules) goes through this one fan-out.
    let shard_tls = crate::security::tls::ShardTls::load(&cfg.security, &cfg.cluster)?;
    let reader = std::sync::Arc::new(fanout::Fanout::new(
        fanout::RegistryShards::new(handle.clone(), guard.shard_bearer.clone(), shard_tls)
            .with_local(std::sync::Arc::new(history.shard())),
    ));
    serve_query_api(&cfg, reader.clone(), &shutdown).await?;
    if let Some(announcer) = announcer {
        tokio::spawn(announcer.run(shutdown.clone()));
    }
    let collector = rollup::Collector::open(
        &cfg.state_dir,
        Duration::from_millis(cfg.rollup_interval_ms),
        fanout::RegistryShards::new(
            handle.clone(),
            guard.shard_bearer.clone(),
            crate::security::tls::ShardTls::load(&cfg.security, &cfg.cluster)?,
        ),
        rollup_metrics,
    )?;
    let alerts = start_alerts(&cfg, &handle, reader.clone()).await?;
    alerting::feed_from_rollups(&alerts, collector.health(), shutdown.clone());
    tokio::spawn(collector.run(daemon::wait_for(shutdown.clone())));
    let server = server(&cfg, &guard, handle, reader, alerts, hub)?;

    // The core thread ends on a persistence failure: watch for it so the process stops too.
    let (core_done_tx, core_done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = core_thread.join();
        let _ = core_done_tx.send(result);
    });

    // A graceful stop waits for open streams, and node sessions never end by themselves: the
    // core ends them first. Whatever still hangs is cut after STOP_GRACE.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        daemon::wait_for(shutdown).await;
        info!("stopping: closing node sessions and the admin API");
        let _ = closer.send(core::Command::Shutdown);
        let _ = stopping_tx.send(());
    };
    let server = server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    let cut = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(STOP_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };

    tokio::select! {
        served = server => {
            served?;
            info!("leader stopped");
            Ok(())
        }
        () = cut => {
            warn!(grace_ms = STOP_GRACE.as_millis() as u64, "connections still open after the stop grace; leader stopped anyway");
            Ok(())
        }
        failed = core_failed(core_done_rx) => failed,
    }
}

/// Rules evaluate through the same fan-out as every cluster read; their state is in the
/// state dir's database; SIGHUP reloads them.
async fn start_alerts(
    cfg: &LeaderConfig,
    handle: &core::CoreHandle,
    reader: std::sync::Arc<fanout::Fanout<fanout::RegistryShards>>,
) -> Result<alerting::Alerting, LeaderError> {
    let alerts = alerting::Alerting::start(
        &cfg.state_dir,
        cfg.rules_file.clone(),
        cfg.alertmanager_url.clone(),
        handle.clone(),
        reader,
    )
    .await?;
    alerting::reload_on_sighup(alerts.clone());
    Ok(alerts)
}

/// The gRPC router: each service behind its token gate, over TLS when configured.
fn server(
    cfg: &LeaderConfig,
    guard: &LeaderGuard,
    handle: core::CoreHandle,
    reader: std::sync::Arc<fanout::Fanout<fanout::RegistryShards>>,
    alerts: alerting::Alerting,
    hub: std::sync::Arc<crate::hostmetrics::Hub>,
) -> Result<tonic::transport::server::Router, LeaderError> {
    let mut api = NodeApi::new(handle.clone()).with_host_metrics(hub.clone());
    if guard.require_node_names {
        api = api.requiring_cert_names(cfg.cluster.clone());
    }
    let node = NodeServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin =
        AdminServiceServer::new(AdminApi::new(handle, reader, alerts).with_host_metrics(hub))
            .max_decoding_message_size(crate::codec::MAX_ADMIN_REQUEST_BYTES);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = guard.tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(crate::security::SecurityError::from)?;
    }
    Ok(builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(node, guard.node.clone()))
        .add_service(InterceptedService::new(admin, guard.admin.clone())))
}

/// Resolves only when the core thread failed: a core that ended cleanly (the stop) leaves
/// the end of the run to the server.
async fn core_failed(
    done: tokio::sync::oneshot::Receiver<std::thread::Result<Result<(), StateError>>>,
) -> Result<(), LeaderError> {
    match done.await {
        Ok(Ok(Ok(()))) => std::future::pending().await,
        Ok(Ok(Err(e))) => Err(e.into()),
        _ => {
            warn!("leader core ended");
            Err(LeaderError::CoreGone)
        }
    }
}

/// The state's assignments wait for what the workers report (C1, C2 after a restore); what the
/// start holds back is persisted and audited before anything is served.
fn begin_reconcile(
    cfg: &LeaderConfig,
    registry: &mut Registry,
    state: &mut State,
    stale: Option<String>,
) -> Result<(), LeaderError> {
    let fx = registry.begin_reconcile(0, stale.is_some());
    let held_back: Vec<_> = (fx.events.iter())
        .filter_map(|e| audit::of_event(registry, 0, e))
        .collect();
    state.apply_with_audit(&fx.durable, &held_back)?;
    if let Some(why) = &stale {
        warn!(
            reason = %why,
            wait_ms = cfg.lease_ms + cfg.grace_ms,
            "the state is older than the cluster: no assignment from it is confirmed until every lease of the previous leader has run out; epochs continue above anything reported"
        );
    }
    Ok(())
}

/// The registry as the persisted state left it: known workers suspect with a fresh lease,
/// clients with their last owners and epochs.
fn restore(cfg: &LeaderConfig, loaded: Loaded) -> Registry {
    let timing = Timing {
        heartbeat_ms: cfg.heartbeat_ms,
        lease_ms: cfg.lease_ms,
        grace_ms: cfg.grace_ms,
        max_moves_per_tick: cfg.max_moves_per_tick,
    };
    let mut registry = Registry::new(timing, VERSION, loaded.next_epoch);
    for w in &loaded.workers {
        registry.restore_worker(&w.id, &w.addr, &w.version, w.draining, 0);
    }
    for (spec, worker, epoch) in loaded.clients {
        registry.restore_client(spec, worker, epoch);
    }
    registry
}

async fn listen(cfg: &LeaderConfig) -> Result<(TcpListener, SocketAddr), LeaderError> {
    let failed = |source| LeaderError::Listen {
        addr: cfg.listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    // Lets scripts and tests that asked for port 0 find the leader.
    daemon::write_addr_file(&cfg.state_dir.join("leader.addr"), local)?;
    Ok((listener, local))
}

/// Registers the leader's metrics (the roll-ups' too) and, when configured, serves them.
async fn serve_metrics(
    cfg: &LeaderConfig,
    shutdown: &watch::Receiver<bool>,
    guard: &LeaderGuard,
    discovery: &crate::discovery::DiscoveryMetrics,
    hub: &crate::hostmetrics::Hub,
) -> Result<(crate::metrics::LeaderMetrics, rollup::RollupMetrics), LeaderError> {
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::LeaderMetrics::new(&mut prometheus);
    let rollups = rollup::RollupMetrics::register(&mut prometheus);
    hub.register(&mut prometheus);
    if cfg.discovery.is_some() {
        discovery.register(&mut prometheus, "sqd_leader");
    }
    crate::security::gate::register_metrics(&mut prometheus, &guard.refused);
    if let Some(addr) = cfg.metrics {
        // The state is loaded and the gRPC port bound by now: the leader is ready.
        let ready: crate::metrics::Readiness = std::sync::Arc::new(|| Ok(()));
        let (bound, serve) =
            crate::metrics::bind(addr, prometheus, ready, daemon::wait_for(shutdown.clone()))
                .await?;
        daemon::write_addr_file(&cfg.state_dir.join("metrics.addr"), bound)?;
        tokio::spawn(serve);
    }
    Ok((metrics, rollups))
}

/// With discovery on: the announcer, once no other leader of this cluster was heard.
async fn announcer(
    cfg: &LeaderConfig,
    grpc: SocketAddr,
    started: Instant,
    metrics: &crate::discovery::DiscoveryMetrics,
) -> Result<Option<crate::discovery::announce::Announcer>, LeaderError> {
    let Some(dcfg) = &cfg.discovery else {
        return Ok(None);
    };
    let since_start = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    let me = crate::discovery::announce::Announcement {
        cluster: cfg.cluster.clone(),
        leader_id: crate::discovery::announce::new_leader_id(),
        version: VERSION.to_owned(),
        grpc,
        query_port: cfg.query_listen.map_or(0, |a| a.port()),
        metrics_port: cfg.metrics.map_or(0, |a| a.port()),
        started_ms: u64::try_from(crate::clock::unix_ms())
            .unwrap_or(0)
            .saturating_sub(since_start),
    };
    let node_token = cfg.security.node_token_file.as_ref();
    let announcer =
        crate::discovery::announce::start(dcfg, node_token, me, metrics.clone()).await?;
    Ok(Some(announcer))
}

/// The leader is an emitter too: it samples its own host (the filesystem of its state dir)
/// straight into the hub, never more often than the heartbeat.
fn spawn_own_sampler(cfg: &LeaderConfig, hub: std::sync::Arc<crate::hostmetrics::Hub>) {
    let floor = Duration::from_millis(cfg.heartbeat_ms);
    let sampler_cfg = cfg.host_metrics.sampler(&cfg.state_dir, false);
    let Some(mut sampler) = crate::hostmetrics::Sampler::start(sampler_cfg, Instant::now()) else {
        return;
    };
    let period = Duration::from_millis(cfg.host_metrics.interval_ms).max(floor);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(values) = sampler.poll(Instant::now(), floor) {
                let host = sampler.host().to_owned();
                hub.record(&host, crate::hostmetrics::Role::Leader, "leader", values);
            }
        }
    });
}

/// When configured, serves the Prometheus-compatible query API over `reader` and writes its
/// address to `<state-dir>/query.addr` (for scripts and tests that asked for port 0).
async fn serve_query_api<R: crate::stats::cluster::ClusterReader>(
    cfg: &LeaderConfig,
    reader: std::sync::Arc<R>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), LeaderError> {
    let Some(addr) = cfg.query_listen else {
        return Ok(());
    };
    let (bound, serve) = promapi::serve(addr, reader, daemon::wait_for(shutdown.clone())).await?;
    daemon::write_addr_file(&cfg.state_dir.join("query.addr"), bound)?;
    tokio::spawn(serve);
    Ok(())
}

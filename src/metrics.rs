//! Prometheus metrics of the leader and the worker, and the small HTTP endpoint that serves
//! them (`/metrics`) beside liveness (`/healthz`) and readiness (`/readyz`).
//!
//! The metric handles are cheap clones of shared atomics: the code that observes an event
//! updates them directly, and a scrape only encodes.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::leader::core::NodeRole;
use crate::leader::liveness::WorkerState;
use crate::leader::reason::{AssignmentReason, Code};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClientLabel {
    pub(crate) client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoleLabel {
    pub(crate) role: NodeRole,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub(crate) state: WorkerState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: AssignmentReason,
}

// Labels are spelled as everywhere else (`sqdctl`, the audit log), not as Rust names.
impl EncodeLabelValue for WorkerState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for NodeRole {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for AssignmentReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

fn client(name: &str) -> ClientLabel {
    ClientLabel {
        client: name.to_owned(),
    }
}

/// What the leader counts.
#[derive(Clone)]
pub(crate) struct LeaderMetrics {
    pub(crate) heartbeats: Counter,
    pub(crate) sessions: Family<RoleLabel, Gauge>,
    pub(crate) workers: Family<StateLabel, Gauge>,
    pub(crate) clients_unassigned: Gauge,
    /// Assignment changes by reason (new, failover, drain, rebalance, backlog, unassigned).
    pub(crate) assignments: Family<ReasonLabel, Counter>,
    pub(crate) refused_registrations: Counter,
    /// From a dead worker's last heartbeat to one of its clients being given to another.
    pub(crate) failover_seconds: Histogram,
    pub(crate) client_files: Family<ClientLabel, Gauge>,
    pub(crate) client_bytes: Family<ClientLabel, Gauge>,
    pub(crate) client_backlog_files: Family<ClientLabel, Gauge>,
    pub(crate) client_backlog_bytes: Family<ClientLabel, Gauge>,
}

impl LeaderMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let mut r = Register(registry.sub_registry_with_prefix("sqd_leader"));
        LeaderMetrics {
            heartbeats: r.add(
                "heartbeats_received",
                "Heartbeats received from workers and agents",
            ),
            sessions: r.add("sessions", "Open node sessions by role"),
            workers: r.add(
                "workers",
                "Known workers by state (alive, suspect, dead, draining, refused)",
            ),
            clients_unassigned: r.add("clients_unassigned", "Clients without a worker"),
            assignments: r.add("assignment_changes", "Assignment changes by reason"),
            refused_registrations: r.add(
                "registrations_refused",
                "Registrations refused (version, cluster, duplicate id)",
            ),
            failover_seconds: r.with(
                "failover_seconds",
                "Time from a dead worker's last heartbeat to its client being reassigned",
                Histogram::new(exponential_buckets(0.25, 2.0, 10)),
            ),
            client_files: r.add(
                "client_files_committed",
                "Files committed per client, as reported by workers",
            ),
            client_bytes: r.add(
                "client_bytes_committed",
                "Bytes committed per client, as reported by workers",
            ),
            client_backlog_files: r.add(
                "client_backlog_files",
                "Files waiting at the client at its owner's last listing",
            ),
            client_backlog_bytes: r.add(
                "client_backlog_bytes",
                "Bytes waiting at the client at its owner's last listing",
            ),
        }
    }

    pub(crate) fn set_client(&self, name: &str, files: u64, bytes: u64, backlog: (u64, u64)) {
        let label = client(name);
        self.client_files.get_or_create(&label).set(clamp(files));
        self.client_bytes.get_or_create(&label).set(clamp(bytes));
        self.client_backlog_files
            .get_or_create(&label)
            .set(clamp(backlog.0));
        self.client_backlog_bytes
            .get_or_create(&label)
            .set(clamp(backlog.1));
    }

    pub(crate) fn forget_client(&self, name: &str) {
        let label = client(name);
        self.client_files.remove(&label);
        self.client_bytes.remove(&label);
        self.client_backlog_files.remove(&label);
        self.client_backlog_bytes.remove(&label);
    }
}

/// What a worker counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub(crate) files_committed: Family<ClientLabel, Counter>,
    pub(crate) bytes_committed: Family<ClientLabel, Counter>,
    pub(crate) backlog_files: Family<ClientLabel, Gauge>,
    pub(crate) backlog_bytes: Family<ClientLabel, Gauge>,
    /// Pull errors by kind (connect, auth, host_key_unknown, dir_missing, store, ...).
    pub(crate) pull_errors: Family<KindLabel, Counter>,
    pub(crate) ssh_connects: Counter,
    pub(crate) ssh_reconnects: Counter,
    /// `ssh` processes started (its rate is the spawns per second the budget bounds).
    pub(crate) ssh_spawns: Counter,
    /// Duration of one group commit (stage → durable), per batch.
    pub(crate) commit_seconds: Histogram,
    pub(crate) store_bytes: Gauge,
    pub(crate) clients: Gauge,
    pub(crate) lease_valid: Gauge,
    /// Assignments refused because they carried an older epoch than the one held (C2).
    pub(crate) stale_assignments: Counter,
    pub(crate) samples_ingested: Family<ClientLabel, Counter>,
    pub(crate) parse_errors: Family<ClientLabel, Counter>,
}

impl WorkerMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let mut r = Register(registry.sub_registry_with_prefix("sqd_worker"));
        WorkerMetrics {
            files_committed: r.add(
                "files_committed",
                "Files committed into the store by this worker",
            ),
            bytes_committed: r.add(
                "bytes_committed",
                "Bytes committed into the store by this worker",
            ),
            backlog_files: r.add(
                "backlog_files",
                "Complete files waiting at the client at the last listing",
            ),
            backlog_bytes: r.add(
                "backlog_bytes",
                "Bytes of complete files waiting at the client at the last listing",
            ),
            pull_errors: r.add("pull_errors", "Failed connects and pull cycles by kind"),
            ssh_connects: r.add("ssh_connects", "SSH sessions established"),
            ssh_reconnects: r.add(
                "ssh_reconnects",
                "SSH sessions established again after one was lost or failed",
            ),
            ssh_spawns: r.add(
                "ssh_spawns",
                "ssh processes started to connect to clients (bounded by ssh_spawns_per_s)",
            ),
            commit_seconds: r.with(
                "commit_seconds",
                "Duration of one group commit into the store",
                Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            ),
            store_bytes: r.add("store_bytes", "Bytes in the store's catalog"),
            clients: r.add("clients", "Clients being served"),
            lease_valid: r.add(
                "lease_valid",
                "1 while the worker holds a valid lease from the leader",
            ),
            stale_assignments: r.add(
                "stale_assignments_refused",
                "Assignments from the leader refused because they carried an older epoch than the one held",
            ),
            samples_ingested: r.add(
                "samples_ingested",
                "Samples parsed from committed files into this worker's shard",
            ),
            parse_errors: r.add(
                "parse_errors",
                "Lines or files of committed files that did not parse (skipped, counted)",
            ),
        }
    }

    /// Counts what a batch's commit added to a client's sample counters.
    pub(crate) fn ingested(&self, name: &str, samples: u64, parse_errors: u64) {
        let label = client(name);
        self.samples_ingested.get_or_create(&label).inc_by(samples);
        self.parse_errors.get_or_create(&label).inc_by(parse_errors);
    }

    pub(crate) fn committed(&self, name: &str, files: u64, bytes: u64) {
        let label = client(name);
        self.files_committed.get_or_create(&label).inc_by(files);
        self.bytes_committed.get_or_create(&label).inc_by(bytes);
        self.store_bytes.inc_by(clamp(bytes));
    }

    pub(crate) fn backlog(&self, name: &str, files: u64, bytes: u64) {
        let label = client(name);
        self.backlog_files.get_or_create(&label).set(clamp(files));
        self.backlog_bytes.get_or_create(&label).set(clamp(bytes));
    }

    pub(crate) fn error(&self, kind: &'static str) {
        self.pull_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// The client left this worker: its gauges would only mislead.
    pub(crate) fn forget_client(&self, name: &str) {
        let label = client(name);
        self.backlog_files.remove(&label);
        self.backlog_bytes.remove(&label);
    }
}

/// Registers each metric where it is created, so its name, help and type stand together.
struct Register<'a>(&'a mut Registry);

impl Register<'_> {
    fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.with(name, help, M::default())
    }

    fn with<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Tells `/readyz` whether this process should receive work; `Err` carries the reason.
pub(crate) type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct Endpoint {
    registry: Arc<Registry>,
    ready: Readiness,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve metrics on {addr}: {source}; is another process using the port? pick another with --metrics"
)]
pub struct MetricsError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds the metrics address now (so a taken port fails the start) and returns the server
/// future, which runs until `shutdown` completes.
pub(crate) async fn bind(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send), MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| MetricsError { addr, source })?;
    let endpoint = Endpoint {
        registry: Arc::new(registry),
        ready,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    info!(addr = %local, "serving metrics on /metrics, /healthz, /readyz");
    let serve = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "metrics endpoint stopped");
        }
    };
    Ok((local, serve))
}

async fn metrics(State(endpoint): State<Endpoint>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &endpoint.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn readyz(State(endpoint): State<Endpoint>) -> Response {
    match (endpoint.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_families_are_encoded_with_their_names() {
        let mut registry = Registry::default();
        let leader = LeaderMetrics::new(&mut registry);
        let worker = WorkerMetrics::new(&mut registry);
        leader.heartbeats.inc();
        leader
            .assignments
            .get_or_create(&ReasonLabel {
                reason: AssignmentReason::Failover,
            })
            .inc();
        leader
            .workers
            .get_or_create(&StateLabel {
                state: WorkerState::Draining,
            })
            .set(2);
        leader
            .sessions
            .get_or_create(&RoleLabel {
                role: NodeRole::Agent,
            })
            .set(4);
        leader.set_client("c1", 3, 300, (1, 10));
        worker.committed("c1", 2, 200);
        worker.error("auth");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "sqd_leader_heartbeats_received_total 1",
            "sqd_leader_assignment_changes_total{reason=\"failover\"} 1",
            "sqd_leader_workers{state=\"draining\"} 2",
            "sqd_leader_sessions{role=\"agent\"} 4",
            "sqd_leader_client_files_committed{client=\"c1\"} 3",
            "sqd_worker_files_committed_total{client=\"c1\"} 2",
            "sqd_worker_bytes_committed_total{client=\"c1\"} 200",
            "sqd_worker_pull_errors_total{kind=\"auth\"} 1",
            "sqd_worker_store_bytes 200",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        leader.forget_client("c1");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(!text.contains("client_files_committed{client=\"c1\"}"));
    }
}

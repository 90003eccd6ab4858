//! What operators see of the registry: the `status` and `explain` views (domain types that
//! `services` turns into protobuf) and the Prometheus gauges derived from it.

use std::collections::HashMap;

use super::audit::AuditEntry;
use super::core::NodeRole;
use super::liveness::{Millis, WorkerState};
use super::registry::{Agent, Client, ClientSpec, Registry};
use crate::metrics::{LeaderMetrics, RoleLabel, StateLabel};
use crate::stats::tsdb::ClientIngest;

/// Who the leader is, as told to nodes and operators.
pub(crate) struct LeaderInfo {
    pub(crate) addr: String,
    pub(crate) cluster: String,
    pub(crate) version: String,
}

pub(crate) struct StatusView {
    pub(crate) cluster: String,
    pub(crate) leader_addr: String,
    pub(crate) leader_version: String,
    pub(crate) workers: Vec<WorkerStatus>,
    pub(crate) clients: Vec<ClientStatus>,
}

pub(crate) struct WorkerStatus {
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) state: WorkerState,
    pub(crate) version: String,
    pub(crate) load: f64,
    pub(crate) clients: Vec<String>,
    /// Milliseconds since its last heartbeat; `None`: never heard from.
    pub(crate) silent_ms: Option<u64>,
    /// Why its last registration was refused.
    pub(crate) refused: Option<String>,
    /// Most clients it accepts; `None`: not told yet (restored, not re-attached).
    pub(crate) capacity: Option<u32>,
}

pub(crate) struct ClientStatus {
    pub(crate) spec: ClientSpec,
    pub(crate) worker: Option<String>,
    pub(crate) epoch: u64,
    pub(crate) agent: Agent,
    pub(crate) files_today: u64,
    pub(crate) bytes_today: u64,
    pub(crate) files_total: u64,
    pub(crate) bytes_total: u64,
    pub(crate) backlog_files: u64,
    pub(crate) backlog_bytes: u64,
    pub(crate) oldest_backlog_s: u64,
    pub(crate) rate_bps: u64,
    /// Newest commit over every worker that served it, ms since the Unix epoch; 0 = never.
    pub(crate) last_commit_unix_ms: i64,
    pub(crate) last_error: Option<String>,
    /// Sample counters summed over every worker's shard; the newest bad line of any.
    pub(crate) ingest: ClientIngest,
}

/// A client's current state (if it still exists) and its history, oldest first.
pub(crate) struct Explanation {
    pub(crate) client: Option<ClientStatus>,
    pub(crate) history: Vec<AuditEntry>,
}

pub(crate) fn status(registry: &Registry, info: &LeaderInfo, now: Millis) -> StatusView {
    let mut workers: Vec<WorkerStatus> = registry
        .workers()
        .map(|w| WorkerStatus {
            id: w.id.clone(),
            addr: w.addr.clone(),
            state: w.state(),
            version: w.version.clone(),
            load: w.load,
            clients: Vec::new(),
            silent_ms: w.last_heartbeat.map(|t| now.saturating_sub(t)),
            refused: w.refused.clone(),
            capacity: (w.capacity != u32::MAX).then_some(w.capacity),
        })
        .collect();
    let clients = registry
        .clients()
        .map(|c| {
            if let Some(w) = c
                .worker
                .as_deref()
                .and_then(|id| workers.iter_mut().find(|w| w.id == id))
            {
                w.clients.push(c.spec.name.clone());
            }
            client_status(c)
        })
        .collect();
    StatusView {
        cluster: info.cluster.clone(),
        leader_addr: info.addr.clone(),
        leader_version: info.version.clone(),
        workers,
        clients,
    }
}

pub(crate) fn client_status(c: &Client) -> ClientStatus {
    let live = c.live_report();
    ClientStatus {
        spec: c.spec.clone(),
        worker: c.worker.clone(),
        epoch: c.epoch,
        agent: c.agent,
        files_today: c.sum_reports(|p| p.files_today),
        bytes_today: c.sum_reports(|p| p.bytes_today),
        files_total: c.sum_reports(|p| p.files_total),
        bytes_total: c.sum_reports(|p| p.bytes_total),
        backlog_files: live.map_or(0, |p| p.backlog_files),
        backlog_bytes: live.map_or(0, |p| p.backlog_bytes),
        oldest_backlog_s: live.map_or(0, |p| p.oldest_backlog_s),
        rate_bps: live.map_or(0, |p| p.rate_bps),
        last_commit_unix_ms: c
            .reports
            .values()
            .map(|p| p.last_commit_unix_ms)
            .max()
            .unwrap_or(0),
        last_error: live.and_then(|p| p.last_error.clone()),
        ingest: ClientIngest {
            samples: c.sum_reports(|p| p.ingest.samples),
            parse_errors: c.sum_reports(|p| p.ingest.parse_errors),
            too_old: c.sum_reports(|p| p.ingest.too_old),
            over_cap: c.sum_reports(|p| p.ingest.over_cap),
            // The live worker's, else the most recent one that reported a bad line.
            last_error: live.and_then(|p| p.ingest.last_error.clone()).or_else(|| {
                c.reports
                    .values()
                    .filter(|p| p.ingest.last_error.is_some())
                    .max_by_key(|p| p.last_commit_unix_ms)
                    .and_then(|p| p.ingest.last_error.clone())
            }),
        },
    }
}

/// Sets the gauges derived from the registry (refreshed on a timer, not on every change).
pub(crate) fn refresh_gauges(registry: &Registry, metrics: &LeaderMetrics) {
    let mut states: HashMap<WorkerState, i64> =
        WorkerState::ALL.into_iter().map(|s| (s, 0)).collect();
    let mut worker_sessions = 0;
    for w in registry.workers() {
        *states.entry(w.state()).or_default() += 1;
        worker_sessions += i64::from(w.session.is_some());
    }
    for (state, n) in states {
        metrics.workers.get_or_create(&StateLabel { state }).set(n);
    }
    let mut agents = 0;
    let mut unassigned = 0;
    for c in registry.clients() {
        agents += i64::from(matches!(c.agent, Agent::Up { .. }));
        unassigned += i64::from(c.worker.is_none());
        let live = c.live_report();
        metrics.set_client(
            &c.spec.name,
            c.sum_reports(|p| p.files_total),
            c.sum_reports(|p| p.bytes_total),
            live.map_or((0, 0), |p| (p.backlog_files, p.backlog_bytes)),
        );
    }
    metrics
        .sessions
        .get_or_create(&RoleLabel {
            role: NodeRole::Worker,
        })
        .set(worker_sessions);
    metrics
        .sessions
        .get_or_create(&RoleLabel {
            role: NodeRole::Agent,
        })
        .set(agents);
    metrics.clients_unassigned.set(unassigned);
}

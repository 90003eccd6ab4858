//! What the registry knows about each worker and client, and what nodes say when they
//! register.

use std::collections::BTreeMap;

use super::effects::Durable;
use crate::leader::liveness::{Liveness, Millis, WorkerState};
use crate::leader::reason::AssignmentReason;
pub(crate) use crate::spec::ClientSpec;
use crate::stats::tsdb::ClientIngest;

/// Identifies one node session (one gRPC stream); never reused within a leader run.
pub(crate) type SessionId = u64;

#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) version: String,
    pub(crate) capacity: u32,
    pub(crate) load: f64,
    pub(crate) liveness: Liveness,
    pub(crate) draining: bool,
    /// Why the last registration under this id was refused.
    pub(crate) refused: Option<String>,
    pub(crate) last_heartbeat: Option<Millis>,
    pub(crate) session: Option<SessionId>,
    /// It said it was leaving (graceful stop) rather than falling silent.
    pub(crate) left: bool,
}

impl Worker {
    /// A worker without session, capacity or heartbeat yet, in `liveness`.
    pub(crate) fn new(id: &str, addr: &str, version: &str, liveness: Liveness) -> Self {
        Worker {
            id: id.to_owned(),
            addr: addr.to_owned(),
            version: version.to_owned(),
            capacity: 0,
            load: 0.0,
            liveness,
            draining: false,
            refused: None,
            last_heartbeat: None,
            session: None,
            left: false,
        }
    }

    pub(crate) fn state(&self) -> WorkerState {
        WorkerState::of(self.liveness, self.draining, self.refused.is_some())
    }

    /// The durable record of this worker.
    pub(crate) fn durable(&self) -> Durable {
        Durable::Worker {
            id: self.id.clone(),
            addr: self.addr.clone(),
            version: self.version.clone(),
            draining: self.draining,
        }
    }
}

/// A client's owner, as the invariant checks of the tests see it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner<'a> {
    pub(crate) worker: &'a str,
    pub(crate) epoch: u64,
}

/// A worker's last report about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) epoch: u64,
    pub(crate) files_total: u64,
    pub(crate) bytes_total: u64,
    pub(crate) files_today: u64,
    pub(crate) bytes_today: u64,
    pub(crate) backlog_files: u64,
    pub(crate) backlog_bytes: u64,
    pub(crate) oldest_backlog_s: u64,
    pub(crate) rate_bps: u64,
    pub(crate) last_error: Option<String>,
    /// An agent's complaint: its backlog aged past its threshold.
    pub(crate) behind: bool,
    /// Newest commit, ms since the Unix epoch; 0 = never.
    pub(crate) last_commit_unix_ms: i64,
    /// The worker shard's sample counters for this client.
    pub(crate) ingest: ClientIngest,
}

#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) spec: ClientSpec,
    /// Last report of every worker that served this client (each holds its own store shard).
    pub(crate) reports: BTreeMap<String, Progress>,
    pub(crate) worker: Option<String>,
    /// Epoch of the current assignment, or of the last one when unassigned.
    pub(crate) epoch: u64,
    /// Set while the owner has been asked to release the client.
    pub(crate) releasing_since: Option<Millis>,
    /// The agent's last report (backlog as seen on the producing host).
    pub(crate) agent_report: Option<Progress>,
    /// Worker to avoid when placing this client next (it fell behind there).
    pub(crate) avoid: Option<String>,
    /// Last move because of an agent's complaint (hysteresis).
    pub(crate) backlog_move_at: Option<Millis>,
    pub(crate) agent: Agent,
    /// The owner that was asked to release this client, and why; the next placement is
    /// reported as a move from it for that reason.
    pub(crate) handoff: Option<(String, AssignmentReason)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agent {
    None,
    Up {
        session: SessionId,
        last_heartbeat: Millis,
    },
    Down,
}

impl Client {
    /// A client owned by `worker` under `epoch` (epoch 0: never assigned), with no reports.
    pub(crate) fn new(spec: ClientSpec, worker: Option<String>, epoch: u64) -> Self {
        Client {
            spec,
            reports: BTreeMap::new(),
            worker,
            epoch,
            releasing_since: None,
            agent_report: None,
            avoid: None,
            backlog_move_at: None,
            agent: Agent::None,
            handoff: None,
        }
    }

    /// The freshest view of the backlog: the owner's last listing, else what the agent sees.
    pub(crate) fn live_report(&self) -> Option<&Progress> {
        self.worker
            .as_deref()
            .and_then(|w| self.reports.get(w))
            .or(self.agent_report.as_ref())
    }

    /// Sum of a counter over every worker that served the client (each has its own shard).
    pub(crate) fn sum_reports(&self, f: fn(&Progress) -> u64) -> u64 {
        self.reports.values().map(f).sum()
    }
}

impl Agent {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Agent::None => "none",
            Agent::Up { .. } => "up",
            Agent::Down => "down",
        }
    }
}

/// Why a registration was refused, and whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: String,
    pub(crate) retryable: bool,
}

/// What a worker says when it registers.
pub(crate) struct WorkerHello<'a> {
    pub(crate) id: &'a str,
    pub(crate) addr: &'a str,
    pub(crate) version: &'a str,
    pub(crate) capacity: u32,
    /// (client, epoch) the worker still holds from an earlier session.
    pub(crate) held: &'a [(String, u64)],
}

//! What a registry operation asks its caller to carry out: durable changes to persist first,
//! then messages to send, and events to log, audit and count.

use super::model::{ClientSpec, SessionId};
use crate::leader::reason::AssignmentReason;

/// A durable change: persist before any message that depends on it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Durable {
    /// A client was added (`add-client`, `add-clients`); persisted in the same transaction as
    /// its first placement, so an acknowledged add is never half there after a crash.
    NewClient(Box<ClientSpec>),
    /// The client's owner and epoch changed (worker `None`: unassigned).
    Assignment {
        client: String,
        worker: Option<String>,
        epoch: u64,
    },
    Worker {
        id: String,
        addr: String,
        version: String,
        draining: bool,
    },
    NextEpoch(u64),
    /// The worker was forgotten (`sqdctl forget-worker`): its row goes.
    ForgetWorker(String),
    /// The reconcile after a restore ended: later starts trust the state again.
    RestoreDone,
}

/// What a worker is told to do about one client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Order {
    /// Serve the client under this epoch (C2).
    Assign { spec: ClientSpec, epoch: u64 },
    /// Stop serving the client and confirm with `Released` (handoff, C1).
    Revoke { client: String, epoch: u64 },
}

/// What happens to one session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outbound {
    Order(Order),
    /// Close the session (fenced, superseded or declared dead).
    Close,
    /// This worker was forgotten: adopt its unreleased claims at once.
    Forgotten(String),
}

impl Outbound {
    pub(crate) fn assign(spec: ClientSpec, epoch: u64) -> Self {
        Outbound::Order(Order::Assign { spec, epoch })
    }

    pub(crate) fn revoke(client: String, epoch: u64) -> Self {
        Outbound::Order(Order::Revoke { client, epoch })
    }
}

/// Something worth one structured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    WorkerSuspect {
        worker: String,
    },
    WorkerDead {
        worker: String,
    },
    AgentDown {
        client: String,
    },
    Moved(Move),
    ReleaseRequested {
        client: String,
        worker: String,
        reason: AssignmentReason,
    },
    /// A re-attaching worker holds an epoch newer than the state's: the state is older than
    /// the cluster, so nothing from it is confirmed until the previous leases ran out.
    StaleState {
        worker: String,
    },
    /// The state's assignments are settled; `frozen` clients are placed afresh.
    Reconciled {
        stale: bool,
        frozen: usize,
    },
}

/// A client's assignment changed: from an owner (or none) to another (or none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) client: String,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    /// The new epoch; the last one when the client became unassigned.
    pub(crate) epoch: u64,
    pub(crate) reason: AssignmentReason,
}

#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) durable: Vec<Durable>,
    pub(crate) messages: Vec<(SessionId, Outbound)>,
    pub(crate) events: Vec<Event>,
}

impl Effects {
    pub(crate) fn extend(&mut self, other: Effects) {
        self.durable.extend(other.durable);
        self.messages.extend(other.messages);
        self.events.extend(other.events);
    }
}

//! What a registry operation asks its caller to carry out: durable changes to persist first,
//! then messages to send, and events to log, audit and count.

use super::model::{ClientSpec, SessionId};
use crate::leader::reason::AssignmentReason;

/// A durable change: persist before any message that depends on it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Durable {
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
}

/// A message for one session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outbound {
    Assign {
        spec: ClientSpec,
        epoch: u64,
    },
    Revoke {
        client: String,
        epoch: u64,
    },
    /// Close the session (fenced, superseded or declared dead).
    Close,
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
    Moved {
        client: String,
        from: Option<String>,
        to: Option<String>,
        epoch: u64,
        reason: AssignmentReason,
    },
    ReleaseRequested {
        client: String,
        worker: String,
        reason: AssignmentReason,
    },
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

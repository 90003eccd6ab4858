//! The audit log's lines (`sqdctl explain`): what happened to a client's assignment, with a
//! short code and the reason spelled out for an operator. Pure formatting; [`super::state`]
//! stores the lines.

use super::liveness::Millis;
use super::reason::{AssignmentReason, AuditKind, Recorded};
use super::registry::{Event, Registry};

/// One line of a client's history: what happened to its assignment and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditEntry {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub(crate) at_unix_ms: i64,
    pub(crate) client: String,
    pub(crate) kind: Recorded<AuditKind>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) epoch: u64,
    pub(crate) reason: Recorded<AssignmentReason>,
    /// The reason spelled out for an operator.
    pub(crate) detail: String,
}

impl AuditEntry {
    /// A line stamped with the current wall-clock time.
    pub(crate) fn now(
        client: &str,
        kind: AuditKind,
        (from, to): (Option<String>, Option<String>),
        epoch: u64,
        reason: AssignmentReason,
        detail: String,
    ) -> Self {
        AuditEntry {
            at_unix_ms: crate::clock::unix_ms(),
            client: client.to_owned(),
            kind: kind.into(),
            from,
            to,
            epoch,
            reason: reason.into(),
            detail,
        }
    }
}

/// The audit line of an event that changes (or starts changing) a client's assignment;
/// `registry` is read for the context of the words (who died, for how long it was silent).
pub(crate) fn of_event(registry: &Registry, now: Millis, event: &Event) -> Option<AuditEntry> {
    match event {
        Event::Moved(m) => {
            let detail = move_detail(registry, now, m.from.as_deref(), m.to.as_deref(), m.reason);
            Some(AuditEntry::now(
                &m.client,
                AuditKind::Moved,
                (m.from.clone(), m.to.clone()),
                m.epoch,
                m.reason,
                detail,
            ))
        }
        Event::ReleaseRequested {
            client,
            worker,
            reason,
        } => {
            let epoch = registry.client(client).map_or(0, |c| c.epoch);
            let detail = format!(
                "asked {worker} to release the client: {}",
                reason.describe()
            );
            Some(AuditEntry::now(
                client,
                AuditKind::ReleaseRequested,
                (Some(worker.clone()), None),
                epoch,
                *reason,
                detail,
            ))
        }
        Event::WorkerSuspect { .. }
        | Event::WorkerDead { .. }
        | Event::AgentDown { .. }
        | Event::StaleState { .. }
        | Event::Reconciled { .. } => None,
    }
}

fn move_detail(
    registry: &Registry,
    now: Millis,
    from: Option<&str>,
    to: Option<&str>,
    reason: AssignmentReason,
) -> String {
    let from_name = from.unwrap_or("-");
    let to_name = to.unwrap_or("-");
    match reason {
        AssignmentReason::New => {
            format!("new client placed on the least loaded alive worker, {to_name}")
        }
        AssignmentReason::Placed => {
            format!("the client had no worker; {to_name} was the least loaded alive one")
        }
        AssignmentReason::Unassigned => {
            format!("no alive worker could take the client (it was on {from_name})")
        }
        AssignmentReason::Failover => failover_detail(registry, now, from, to_name),
        AssignmentReason::Drain => {
            format!("{from_name} is draining; moved to {to_name} after {from_name} released it")
        }
        AssignmentReason::Rebalance => format!(
            "rebalance: {from_name} held more than its share; moved to {to_name} after it released the client"
        ),
        AssignmentReason::Backlog => format!(
            "the agent reported a growing backlog on {from_name}; moved to the less loaded {to_name}"
        ),
        AssignmentReason::Restore => format!(
            "the leader's state is older than the cluster: held back from {from_name} until every lease of the previous leader ran out, then placed afresh with a larger epoch"
        ),
        // Operators add and remove clients; a move never carries this reason.
        AssignmentReason::Admin => format!("admin: {from_name} -> {to_name}"),
    }
}

fn failover_detail(registry: &Registry, now: Millis, from: Option<&str>, to_name: &str) -> String {
    let from_name = from.unwrap_or("-");
    let gone = from.and_then(|id| registry.workers().find(|w| w.id == id));
    match gone {
        Some(w) if w.left => {
            format!("failover: {from_name} stopped (it said it was leaving); moved to {to_name}")
        }
        Some(w) => {
            let silent = w.last_heartbeat.map(|t| now.saturating_sub(t)).map_or_else(
                || "never heard from".to_owned(),
                |ms| format!("no heartbeat for {:.1} s", ms as f64 / 1000.0),
            );
            let timing = registry.timing();
            format!(
                "failover: {from_name} was declared dead ({silent}, lease {} ms + grace {} ms); moved to {to_name}",
                timing.lease_ms, timing.grace_ms
            )
        }
        None => format!("failover: {from_name} is gone; moved to {to_name}"),
    }
}

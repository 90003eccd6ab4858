//! Protobuf ↔ domain conversions of the control plane: what nodes and `sqdctl` send becomes
//! the leader core's types, and the core's answers become protobuf. Nothing else in the
//! leader sees a generated type.

use crate::leader::audit::AuditEntry;
use crate::leader::core::{
    AddedClients, Assigned, Drained, NodeHello, NodeRole, SessionTerms, ToNode,
};
use crate::leader::registry::{Order, Progress};
use crate::leader::status::{ClientStatus, Explanation, StatusView, WorkerStatus};
use crate::proto::{self, leader_message::Body};
use crate::spec::{ClientSpec, IngestSpec};
use crate::stats::tsdb::ClientIngest;

impl From<proto::ClientSpec> for ClientSpec {
    fn from(p: proto::ClientSpec) -> Self {
        ClientSpec {
            name: p.name,
            ssh: p.ssh,
            path: p.path,
            key_file: p.key_file,
            known_hosts: p.known_hosts,
            pattern: p.pattern,
            ingest: Box::new(IngestSpec {
                format: p.format,
                time_field: p.time_field,
                label_fields: p.label_fields,
                precision: p.precision,
            }),
        }
    }
}

impl From<ClientSpec> for proto::ClientSpec {
    fn from(s: ClientSpec) -> Self {
        proto::ClientSpec {
            name: s.name,
            ssh: s.ssh,
            path: s.path,
            key_file: s.key_file,
            known_hosts: s.known_hosts,
            pattern: s.pattern,
            format: s.ingest.format,
            time_field: s.ingest.time_field,
            label_fields: s.ingest.label_fields,
            precision: s.ingest.precision,
        }
    }
}

impl From<proto::Register> for NodeHello {
    fn from(r: proto::Register) -> Self {
        let role = match proto::NodeRole::try_from(r.role) {
            Ok(proto::NodeRole::Worker) => Some(NodeRole::Worker),
            Ok(proto::NodeRole::Agent) => Some(NodeRole::Agent),
            Ok(proto::NodeRole::Unspecified) | Err(_) => None,
        };
        NodeHello {
            role,
            id: r.id,
            version: r.version,
            addr: r.addr,
            cluster: r.cluster,
            capacity: r.capacity,
            held: r.held.into_iter().map(|a| (a.client, a.epoch)).collect(),
        }
    }
}

/// A heartbeat's report about one client.
pub(crate) fn progress(p: proto::ClientProgress) -> (String, Progress) {
    (
        p.client,
        Progress {
            epoch: p.epoch,
            files_total: p.files_total,
            bytes_total: p.bytes_total,
            files_today: p.files_today,
            bytes_today: p.bytes_today,
            backlog_files: p.backlog_files,
            backlog_bytes: p.backlog_bytes,
            oldest_backlog_s: p.oldest_backlog_s,
            rate_bps: p.rate_bps,
            last_error: (!p.last_error.is_empty()).then_some(p.last_error),
            behind: p.behind,
            last_commit_unix_ms: p.last_commit_unix_ms,
            ingest: ClientIngest {
                samples: p.samples_total,
                parse_errors: p.parse_errors_total,
                too_old: p.samples_too_old,
                over_cap: p.samples_over_cap,
                last_error: (!p.last_parse_error.is_empty()).then_some(p.last_parse_error),
            },
        },
    )
}

fn assign((spec, epoch): (ClientSpec, u64)) -> proto::Assign {
    proto::Assign {
        client: Some(spec.into()),
        epoch,
    }
}

/// Timings travel as `u32` milliseconds; config validation keeps them far below that.
fn millis(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl From<ToNode> for proto::LeaderMessage {
    fn from(message: ToNode) -> Self {
        let body = match message {
            ToNode::Registered {
                leader_version,
                cluster,
                outcome,
            } => {
                let (terms, refusal) = match outcome {
                    Ok(terms) => (terms, None),
                    Err(refusal) => (
                        SessionTerms {
                            heartbeat_ms: 0,
                            lease_ms: 0,
                        },
                        Some(refusal),
                    ),
                };
                Body::Registered(proto::Registered {
                    accepted: refusal.is_none(),
                    retryable: refusal.as_ref().is_some_and(|r| r.retryable),
                    reason: refusal.map(|r| r.reason).unwrap_or_default(),
                    leader_version,
                    cluster,
                    heartbeat_ms: millis(terms.heartbeat_ms),
                    lease_ms: millis(terms.lease_ms),
                })
            }
            ToNode::AssignmentSet(set) => Body::AssignmentSet(proto::AssignmentSet {
                assignments: set.into_iter().map(assign).collect(),
            }),
            ToNode::Order(Order::Assign { spec, epoch }) => Body::Assign(assign((spec, epoch))),
            ToNode::Order(Order::Revoke { client, epoch }) => {
                Body::Revoke(proto::Revoke { client, epoch })
            }
            ToNode::HeartbeatAck { seq } => Body::HeartbeatAck(proto::HeartbeatAck { seq }),
            ToNode::Wake { client, epoch } => Body::Wake(proto::Wake { client, epoch }),
            ToNode::Forgotten(workers) => Body::Forgotten(proto::Forgotten { workers }),
        };
        proto::LeaderMessage { body: Some(body) }
    }
}

impl From<Assigned> for proto::AddClientResponse {
    fn from(a: Assigned) -> Self {
        proto::AddClientResponse {
            worker: a.worker.unwrap_or_default(),
            epoch: a.epoch,
        }
    }
}

impl From<AddedClients> for proto::AddClientsResponse {
    fn from(a: AddedClients) -> Self {
        proto::AddClientsResponse {
            added: a
                .added
                .into_iter()
                .map(|(name, at)| proto::AddedClient {
                    name,
                    worker: at.worker.unwrap_or_default(),
                    epoch: at.epoch,
                })
                .collect(),
            problems: a
                .problems
                .into_iter()
                .map(|(index, message)| proto::ClientProblem {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    message,
                })
                .collect(),
        }
    }
}

impl From<Drained> for proto::DrainWorkerResponse {
    fn from(d: Drained) -> Self {
        proto::DrainWorkerResponse {
            moved: d.moved,
            unassigned: d.unassigned,
        }
    }
}

impl From<WorkerStatus> for proto::WorkerStatus {
    fn from(w: WorkerStatus) -> Self {
        proto::WorkerStatus {
            id: w.id,
            addr: w.addr,
            state: w.state.as_str().to_owned(),
            version: w.version,
            load: w.load,
            clients: w.clients,
            last_heartbeat_ms: w
                .silent_ms
                .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            reason: w.refused.unwrap_or_default(),
            capacity: w.capacity.unwrap_or(0),
        }
    }
}

impl From<ClientStatus> for proto::ClientStatus {
    fn from(c: ClientStatus) -> Self {
        proto::ClientStatus {
            files_today: c.files_today,
            bytes_today: c.bytes_today,
            backlog_files: c.backlog_files,
            backlog_bytes: c.backlog_bytes,
            oldest_backlog_s: c.oldest_backlog_s,
            rate_bps: c.rate_bps,
            last_commit_unix_ms: c.last_commit_unix_ms,
            spec: Some(c.spec.into()),
            worker: c.worker.unwrap_or_default(),
            epoch: c.epoch,
            agent: c.agent.as_str().to_owned(),
            files_total: c.files_total,
            bytes_total: c.bytes_total,
            last_error: c.last_error.unwrap_or_default(),
            samples_total: c.ingest.samples,
            parse_errors_total: c.ingest.parse_errors,
            samples_too_old: c.ingest.too_old,
            samples_over_cap: c.ingest.over_cap,
            last_parse_error: c.ingest.last_error.unwrap_or_default(),
        }
    }
}

impl From<StatusView> for proto::StatusResponse {
    fn from(s: StatusView) -> Self {
        proto::StatusResponse {
            cluster: s.cluster,
            leader_addr: s.leader_addr,
            leader_version: s.leader_version,
            workers: s.workers.into_iter().map(Into::into).collect(),
            clients: s.clients.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<AuditEntry> for proto::AuditEntry {
    fn from(e: AuditEntry) -> Self {
        proto::AuditEntry {
            at_unix_ms: e.at_unix_ms,
            kind: e.kind.as_str().to_owned(),
            from_worker: e.from.unwrap_or_default(),
            to_worker: e.to.unwrap_or_default(),
            epoch: e.epoch,
            reason: e.reason.as_str().to_owned(),
            detail: e.detail,
        }
    }
}

impl From<Explanation> for proto::ExplainResponse {
    fn from(e: Explanation) -> Self {
        proto::ExplainResponse {
            client: e.client.map(Into::into),
            history: e.history.into_iter().map(Into::into).collect(),
        }
    }
}

/// An emitter's latest values, for `sqdctl emitters`.
pub(crate) fn emitter(e: &crate::hostmetrics::emitters::Emitter) -> proto::EmitterSummary {
    proto::EmitterSummary {
        host: e.host.clone(),
        role: e.role.as_str().to_owned(),
        id: e.id.clone(),
        last_seen_unix_ms: e.last_seen_ms,
        cpu_percent: e.last.cpu_percent,
        ram_mb: e.last.ram_mb,
        disk_mb: e.last.disk_mb,
        load1: e.last.load1,
        store_free_mb: e.last.store_free_mb,
    }
}

/// An emitter's ring buffers, for `sqdctl emitter HOST`.
pub(crate) fn emitter_values(
    e: &crate::hostmetrics::emitters::Emitter,
) -> proto::GetEmitterResponse {
    use crate::hostmetrics::Metric;
    let points = |m: Metric| {
        (e.ring(m).values())
            .map(|(unix_ms, value)| proto::HostPoint { unix_ms, value })
            .collect()
    };
    proto::GetEmitterResponse {
        emitter: Some(emitter(e)),
        cpu_percent: points(Metric::Cpu),
        ram_mb: points(Metric::Ram),
        disk_mb: points(Metric::Disk),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::registry::Refusal;

    #[test]
    fn a_refusal_carries_its_reason_and_no_timing() {
        let refused = ToNode::Registered {
            leader_version: "1".into(),
            cluster: "c".into(),
            outcome: Err(Refusal {
                reason: "too old".into(),
                retryable: true,
            }),
        };
        let Some(Body::Registered(r)) = proto::LeaderMessage::from(refused).body else {
            panic!("not Registered");
        };
        assert!(!r.accepted && r.retryable);
        assert_eq!(
            (r.reason.as_str(), r.heartbeat_ms, r.lease_ms),
            ("too old", 0, 0)
        );
    }

    #[test]
    fn a_register_without_a_known_role_has_none() {
        let hello = NodeHello::from(proto::Register {
            role: 99,
            ..proto::Register::default()
        });
        assert_eq!(hello.role, None);
    }
}

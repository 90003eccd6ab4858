//! The leader's single owner of mutable state: one thread that applies node and admin
//! commands and timer ticks to the [`Registry`], persists the durable part of every change
//! *before* sending any message that depends on it, then sends.
//!
//! One thread keeps ordering trivial (a tick never interleaves with a registration) and lets
//! SQLite be used synchronously. A persistence failure stops the core: memory may then be ahead
//! of disk, but nothing depending on it has left the process, so a restart is safe (fail-stop).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::registry::{
    Agent, Client, ClientSpec, Effects, Event, Liveness, Millis, Outbound, Progress, Registry,
    RegistryError, SessionId, Worker, WorkerHello,
};
use super::state::{AuditEntry, State, StateError};
use crate::metrics::{LeaderMetrics, ReasonLabel, RoleLabel, StateLabel};
use crate::proto::{self, LeaderMessage, leader_message::Body};

/// Where a session's outbound messages go; dropping it ends the session's response stream.
/// Boxed: an unbounded channel allocates 32 slots at once, and a leader holds one channel per
/// node (11,000 x 32 x 152 bytes unboxed).
pub type Outbox = mpsc::UnboundedSender<Box<LeaderMessage>>;

pub enum Command {
    Register {
        session: SessionId,
        register: proto::Register,
        peer: String,
        outbox: Outbox,
    },
    Heartbeat {
        session: SessionId,
        seq: u64,
        load: f64,
        progress: Vec<proto::ClientProgress>,
    },
    Released {
        session: SessionId,
        client: String,
        epoch: u64,
    },
    Leaving {
        session: SessionId,
    },
    /// An agent saw a new file: wake the worker serving its client.
    FilesReady {
        session: SessionId,
    },
    Closed {
        session: SessionId,
    },
    AddClient {
        spec: ClientSpec,
        reply: oneshot::Sender<Result<proto::AddClientResponse, CoreError>>,
    },
    RemoveClient {
        name: String,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    Drain {
        id: String,
        drain: bool,
        reply: oneshot::Sender<Result<proto::DrainWorkerResponse, CoreError>>,
    },
    Status {
        reply: oneshot::Sender<proto::StatusResponse>,
    },
    Explain {
        client: String,
        limit: usize,
        reply: oneshot::Sender<Result<proto::ExplainResponse, CoreError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("the leader could not persist the change: {0}")]
    State(#[from] StateError),
    /// What the requester is told when persisting failed (the core stops with the cause).
    #[error("the leader could not persist the change and is stopping: {0}")]
    Persist(String),
    #[error("the leader is shutting down; retry in a moment")]
    Stopped,
}

/// A cheap, cloneable way to talk to the core from async code.
#[derive(Clone)]
pub struct CoreHandle {
    tx: Sender<Command>,
}

impl CoreHandle {
    pub fn send(&self, cmd: Command) -> Result<(), CoreError> {
        self.tx.send(cmd).map_err(|_| CoreError::Stopped)
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| CoreError::Stopped)
    }
}

pub struct LeaderInfo {
    pub addr: String,
    pub cluster: String,
    pub version: String,
}

struct Core {
    registry: Registry,
    state: State,
    sessions: HashMap<SessionId, Outbox>,
    started: Instant,
    info: LeaderInfo,
    metrics: LeaderMetrics,
}

/// How often the gauges derived from the registry are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// Starts the core thread. It ends when every handle is dropped, or with an error when the
/// state could not be persisted.
pub fn spawn(
    registry: Registry,
    state: State,
    info: LeaderInfo,
    started: Instant,
    metrics: LeaderMetrics,
) -> std::io::Result<(CoreHandle, std::thread::JoinHandle<Result<(), StateError>>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let core = Core {
        registry,
        state,
        sessions: HashMap::new(),
        started,
        info,
        metrics,
    };
    let join = std::thread::Builder::new()
        .name("sqd-leader-core".into())
        .spawn(move || core.run(rx))?;
    Ok((CoreHandle { tx }, join))
}

impl Core {
    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn run(mut self, rx: Receiver<Command>) -> Result<(), StateError> {
        let timing = self.registry.timing();
        let period = Duration::from_millis((timing.heartbeat_ms / 5).clamp(10, 200));
        let mut next_tick = Instant::now() + period;
        let mut next_gauges = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(cmd) => self.handle(cmd)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Tick even under a steady stream of commands, so liveness never starves.
            if Instant::now() >= next_tick {
                let fx = self.registry.tick(self.now());
                self.carry_out(fx)?;
                next_tick = Instant::now() + period;
            }
            if Instant::now() >= next_gauges {
                self.refresh_gauges();
                next_gauges = Instant::now() + GAUGE_PERIOD;
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> Result<(), StateError> {
        let now = self.now();
        match cmd {
            Command::Register {
                session,
                register,
                peer,
                outbox,
            } => self.register(session, register, peer, outbox, now)?,
            Command::Heartbeat {
                session,
                seq,
                load,
                progress,
            } => {
                self.metrics.heartbeats.inc();
                let progress = progress.into_iter().map(progress_from_proto).collect();
                if self
                    .registry
                    .heartbeat_with_progress(session, load, progress, now)
                {
                    self.send(session, Body::HeartbeatAck(proto::HeartbeatAck { seq }));
                }
            }
            Command::Released {
                session,
                client,
                epoch,
            } => {
                debug!(session, client = %client, epoch, "client released");
                let fx = self.registry.released(session, &client, epoch, now);
                self.carry_out(fx)?;
            }
            Command::FilesReady { session } => {
                if let Some((to, client, epoch)) = self.registry.wake_target(session) {
                    self.send(to, Body::Wake(proto::Wake { client, epoch }));
                }
            }
            Command::Leaving { session } => {
                let fx = self.registry.worker_leaving(session, now);
                self.carry_out(fx)?;
                self.sessions.remove(&session);
            }
            Command::Closed { session } => {
                self.sessions.remove(&session);
                let fx = self.registry.session_closed(session);
                self.carry_out(fx)?;
            }
            Command::AddClient { spec, reply } => answer(reply, self.add_client(spec, now))?,
            Command::RemoveClient { name, reply } => answer(reply, self.remove_client(&name))?,
            Command::Drain { id, drain, reply } => answer(reply, self.drain(&id, drain, now))?,
            Command::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            Command::Explain {
                client,
                limit,
                reply,
            } => {
                let _ = reply.send(self.explain(&client, limit));
            }
        }
        Ok(())
    }

    fn register(
        &mut self,
        session: SessionId,
        reg: proto::Register,
        peer: String,
        outbox: Outbox,
        now: Millis,
    ) -> Result<(), StateError> {
        let role = proto::NodeRole::try_from(reg.role).unwrap_or(proto::NodeRole::Unspecified);
        let refuse = |reason: String, retryable: bool| {
            self.metrics.refused_registrations.inc();
            let _ = outbox.send(Box::new(message(Body::Registered(proto::Registered {
                accepted: false,
                reason,
                retryable,
                leader_version: self.info.version.clone(),
                cluster: self.info.cluster.clone(),
                heartbeat_ms: 0,
                lease_ms: 0,
            }))));
        };
        if !reg.cluster.is_empty() && reg.cluster != self.info.cluster {
            let reason = format!(
                "this leader serves cluster {:?}, not {:?}; fix --cluster on the node or point it at the right leader",
                self.info.cluster, reg.cluster
            );
            warn!(node = %reg.id, reason = %reason, "registration refused");
            refuse(reason, false);
            return Ok(());
        }
        let addr = if reg.addr.is_empty() {
            peer
        } else {
            reg.addr.clone()
        };
        let accepted = proto::Registered {
            accepted: true,
            reason: String::new(),
            retryable: false,
            leader_version: self.info.version.clone(),
            cluster: self.info.cluster.clone(),
            heartbeat_ms: self.registry.timing().heartbeat_ms as u32,
            lease_ms: self.registry.timing().lease_ms as u32,
        };
        match role {
            proto::NodeRole::Worker => {
                let held: Vec<(String, u64)> = reg
                    .held
                    .iter()
                    .map(|a| (a.client.clone(), a.epoch))
                    .collect();
                let hello = WorkerHello {
                    id: &reg.id,
                    addr: &addr,
                    version: &reg.version,
                    capacity: reg.capacity.max(1),
                    held: &held,
                };
                match self.registry.register_worker(hello, session, now) {
                    Ok(registration) => {
                        // Persist first: the set and any new assignments depend on it.
                        self.state.apply(&registration.effects.durable)?;
                        info!(worker = %reg.id, addr = %addr, version = %reg.version, held = held.len(), clients = registration.assignments.len(), "worker registered");
                        let _ = outbox.send(Box::new(message(Body::Registered(accepted))));
                        let set = proto::AssignmentSet {
                            assignments: registration
                                .assignments
                                .into_iter()
                                .map(|(spec, epoch)| proto::Assign {
                                    client: Some(spec.into()),
                                    epoch,
                                })
                                .collect(),
                        };
                        let _ = outbox.send(Box::new(message(Body::AssignmentSet(set))));
                        self.sessions.insert(session, outbox);
                        let mut fx = registration.effects;
                        fx.durable.clear();
                        self.carry_out(fx)?;
                    }
                    Err(refusal) => {
                        warn!(worker = %reg.id, version = %reg.version, reason = %refusal.reason, "registration refused");
                        refuse(refusal.reason, refusal.retryable);
                    }
                }
            }
            proto::NodeRole::Agent => {
                match self
                    .registry
                    .register_agent(&reg.id, &reg.version, session, now)
                {
                    Ok(fx) => {
                        info!(client = %reg.id, addr = %addr, "agent registered");
                        let _ = outbox.send(Box::new(message(Body::Registered(accepted))));
                        self.sessions.insert(session, outbox);
                        self.carry_out(fx)?;
                    }
                    Err(refusal) => {
                        warn!(client = %reg.id, reason = %refusal.reason, "agent registration refused");
                        refuse(refusal.reason, refusal.retryable);
                    }
                }
            }
            proto::NodeRole::Unspecified => {
                refuse(
                    "registration without a role (worker or agent)".into(),
                    false,
                );
            }
        }
        Ok(())
    }

    fn add_client(
        &mut self,
        spec: ClientSpec,
        now: Millis,
    ) -> Result<proto::AddClientResponse, CoreError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(CoreError::Invalid(problems));
        }
        self.registry.check_new_client(&spec.name)?;
        self.state.insert_client(&spec)?;
        let name = spec.name.clone();
        let added = self.audit_entry(
            &name,
            "added",
            None,
            None,
            0,
            "admin",
            format!(
                "added by sqdctl add-client (ssh {}, path {})",
                spec.ssh, spec.path
            ),
        );
        let fx = self.registry.add_client(spec, now)?;
        self.carry_out_with(fx, vec![added])?;
        let client = self
            .registry
            .client(&name)
            .ok_or_else(|| RegistryError::UnknownClient(name.clone()))?;
        info!(client = %name, worker = client.worker.as_deref().unwrap_or("-"), epoch = client.epoch, "client added");
        Ok(proto::AddClientResponse {
            worker: client.worker.clone().unwrap_or_default(),
            epoch: client.epoch,
        })
    }

    fn remove_client(&mut self, name: &str) -> Result<(), CoreError> {
        if self.registry.client(name).is_none() {
            return Err(RegistryError::UnknownClient(name.to_owned()).into());
        }
        self.state.delete_client(name)?;
        let epoch = self.registry.client(name).map_or(0, |c| c.epoch);
        let from = self.registry.client(name).and_then(|c| c.worker.clone());
        let removed = self.audit_entry(
            name,
            "removed",
            from,
            None,
            epoch,
            "admin",
            "removed by sqdctl remove-client; its files stay in the stores".to_owned(),
        );
        let fx = self.registry.remove_client(name)?;
        self.metrics.forget_client(name);
        self.carry_out_with(fx, vec![removed])?;
        info!(client = %name, "client removed");
        Ok(())
    }

    fn drain(
        &mut self,
        id: &str,
        drain: bool,
        now: Millis,
    ) -> Result<proto::DrainWorkerResponse, CoreError> {
        let on_worker: Vec<String> = self
            .registry
            .clients()
            .filter(|c| c.worker.as_deref() == Some(id))
            .map(|c| c.spec.name.clone())
            .collect();
        let fx = self.registry.set_draining(id, drain, now)?;
        self.carry_out(fx)?;
        info!(worker = %id, draining = drain, "drain flag set");
        if !drain {
            return Ok(proto::DrainWorkerResponse::default());
        }
        let other_worker = self.registry.workers().any(|w| {
            w.id != id && w.liveness == Liveness::Alive && !w.draining && w.session.is_some()
        });
        let (moved, unassigned) = if other_worker {
            (on_worker, Vec::new())
        } else {
            (Vec::new(), on_worker)
        };
        Ok(proto::DrainWorkerResponse { moved, unassigned })
    }

    /// Persists, logs, then sends: the only way effects leave the core.
    fn carry_out(&mut self, fx: Effects) -> Result<(), StateError> {
        self.carry_out_with(fx, Vec::new())
    }

    /// [`Self::carry_out`] with audit entries the caller adds to those of the events.
    fn carry_out_with(
        &mut self,
        fx: Effects,
        mut audit: Vec<AuditEntry>,
    ) -> Result<(), StateError> {
        for event in &fx.events {
            if let Some(entry) = self.audit_of_event(event) {
                audit.push(entry);
            }
        }
        self.state.apply_with_audit(&fx.durable, &audit)?;
        for event in &fx.events {
            log_event(event);
            self.count_event(event);
        }
        for (session, msg) in fx.messages {
            match msg {
                Outbound::Assign { spec, epoch } => self.send(
                    session,
                    Body::Assign(proto::Assign {
                        client: Some(spec.into()),
                        epoch,
                    }),
                ),
                Outbound::Revoke { client, epoch } => {
                    self.send(session, Body::Revoke(proto::Revoke { client, epoch }))
                }
                Outbound::Close => {
                    self.sessions.remove(&session);
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, session: SessionId, body: Body) {
        if let Some(outbox) = self.sessions.get(&session)
            && outbox.send(Box::new(message(body))).is_err()
        {
            self.sessions.remove(&session);
        }
    }

    fn explain(&self, name: &str, limit: usize) -> Result<proto::ExplainResponse, CoreError> {
        let client = self.registry.client(name).map(client_status);
        let history = self.state.audit_of(name, limit)?;
        if client.is_none() && history.is_empty() {
            return Err(RegistryError::UnknownClient(name.to_owned()).into());
        }
        Ok(proto::ExplainResponse {
            client,
            history: history
                .into_iter()
                .map(|e| proto::AuditEntry {
                    at_unix_ms: e.at_unix_ms,
                    kind: e.kind,
                    from_worker: e.from.unwrap_or_default(),
                    to_worker: e.to.unwrap_or_default(),
                    epoch: e.epoch,
                    reason: e.reason,
                    detail: e.detail,
                })
                .collect(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_entry(
        &self,
        client: &str,
        kind: &str,
        from: Option<String>,
        to: Option<String>,
        epoch: u64,
        reason: &str,
        detail: String,
    ) -> AuditEntry {
        AuditEntry {
            at_unix_ms: crate::clock::unix_ms(),
            client: client.to_owned(),
            kind: kind.to_owned(),
            from,
            to,
            epoch,
            reason: reason.to_owned(),
            detail,
        }
    }

    /// The audit line of an event that changes (or starts changing) a client's assignment.
    fn audit_of_event(&self, event: &Event) -> Option<AuditEntry> {
        match event {
            Event::Moved {
                client,
                from,
                to,
                epoch,
                reason,
            } => {
                let detail = self.move_detail(from.as_deref(), to.as_deref(), reason);
                Some(self.audit_entry(
                    client,
                    "moved",
                    from.clone(),
                    to.clone(),
                    *epoch,
                    reason,
                    detail,
                ))
            }
            Event::ReleaseRequested {
                client,
                worker,
                reason,
            } => {
                let epoch = self.registry.client(client).map_or(0, |c| c.epoch);
                let why = match *reason {
                    "backlog" => {
                        "the client's agent reports its backlog growing while a less loaded worker exists"
                    }
                    "rebalance" => "the worker holds more than its share of clients",
                    "drain" => "the worker is being drained",
                    other => other,
                };
                let detail = format!("asked {worker} to release the client: {why}");
                Some(self.audit_entry(
                    client,
                    "release_requested",
                    Some(worker.clone()),
                    None,
                    epoch,
                    reason,
                    detail,
                ))
            }
            _ => None,
        }
    }

    fn move_detail(&self, from: Option<&str>, to: Option<&str>, reason: &str) -> String {
        let from_name = from.unwrap_or("-");
        let to_name = to.unwrap_or("-");
        match reason {
            "new" => format!("new client placed on the least loaded alive worker, {to_name}"),
            "placed" => {
                format!("the client had no worker; {to_name} was the least loaded alive one")
            }
            "unassigned" => {
                format!("no alive worker could take the client (it was on {from_name})")
            }
            "failover" => {
                let gone = from.and_then(|id| self.registry.workers().find(|w| w.id == id));
                match gone {
                    Some(w) if w.left => format!(
                        "failover: {from_name} stopped (it said it was leaving); moved to {to_name}"
                    ),
                    Some(w) => {
                        let silent = w
                            .last_heartbeat
                            .map(|t| self.now().saturating_sub(t))
                            .map_or_else(
                                || "never heard from".to_owned(),
                                |ms| format!("no heartbeat for {:.1} s", ms as f64 / 1000.0),
                            );
                        format!(
                            "failover: {from_name} was declared dead ({silent}, lease {} ms + grace {} ms); moved to {to_name}",
                            self.registry.timing().lease_ms,
                            self.registry.timing().grace_ms
                        )
                    }
                    None => format!("failover: {from_name} is gone; moved to {to_name}"),
                }
            }
            "drain" => {
                format!("{from_name} is draining; moved to {to_name} after {from_name} released it")
            }
            "rebalance" => format!(
                "rebalance: {from_name} held more than its share; moved to {to_name} after it released the client"
            ),
            "backlog" => format!(
                "the agent reported a growing backlog on {from_name}; moved to the less loaded {to_name}"
            ),
            other => format!("{other}: {from_name} -> {to_name}"),
        }
    }

    fn count_event(&self, event: &Event) {
        if let Event::Moved { from, reason, .. } = event {
            self.metrics
                .assignments
                .get_or_create(&ReasonLabel { reason })
                .inc();
            if *reason == "failover"
                && let Some(last) = from
                    .as_deref()
                    .and_then(|id| self.registry.workers().find(|w| w.id == id))
                    .and_then(|w| w.last_heartbeat)
            {
                let secs = self.now().saturating_sub(last) as f64 / 1000.0;
                self.metrics.failover_seconds.observe(secs);
            }
        }
    }

    /// Gauges derived from the registry, refreshed on a timer rather than on every change.
    fn refresh_gauges(&self) {
        let mut states: HashMap<&'static str, i64> =
            ["alive", "suspect", "dead", "draining", "refused"]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
        let mut worker_sessions = 0;
        for w in self.registry.workers() {
            *states.entry(worker_state(w)).or_default() += 1;
            worker_sessions += i64::from(w.session.is_some());
        }
        for (state, n) in states {
            self.metrics
                .workers
                .get_or_create(&StateLabel { state })
                .set(n);
        }
        let mut agents = 0;
        let mut unassigned = 0;
        for c in self.registry.clients() {
            agents += i64::from(matches!(c.agent, Agent::Up { .. }));
            unassigned += i64::from(c.worker.is_none());
            let live = c.live_report();
            self.metrics.set_client(
                &c.spec.name,
                c.sum_reports(|p| p.files_total),
                c.sum_reports(|p| p.bytes_total),
                live.map_or((0, 0), |p| (p.backlog_files, p.backlog_bytes)),
            );
        }
        self.metrics
            .sessions
            .get_or_create(&RoleLabel { role: "worker" })
            .set(worker_sessions);
        self.metrics
            .sessions
            .get_or_create(&RoleLabel { role: "agent" })
            .set(agents);
        self.metrics.clients_unassigned.set(unassigned);
    }

    fn status(&self, now: Millis) -> proto::StatusResponse {
        let mut workers: Vec<proto::WorkerStatus> = self
            .registry
            .workers()
            .map(|w| {
                let state = worker_state(w);
                proto::WorkerStatus {
                    id: w.id.clone(),
                    addr: w.addr.clone(),
                    state: state.to_owned(),
                    version: w.version.clone(),
                    load: w.load,
                    clients: Vec::new(),
                    last_heartbeat_ms: w
                        .last_heartbeat
                        .map_or(-1, |t| now.saturating_sub(t) as i64),
                    reason: w.refused.clone().unwrap_or_default(),
                    capacity: if w.capacity == u32::MAX {
                        0
                    } else {
                        w.capacity
                    },
                }
            })
            .collect();
        let clients = self
            .registry
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
        proto::StatusResponse {
            cluster: self.info.cluster.clone(),
            leader_addr: self.info.addr.clone(),
            leader_version: self.info.version.clone(),
            workers,
            clients,
        }
    }
}

fn worker_state(w: &Worker) -> &'static str {
    match (w.liveness, w.draining, &w.refused) {
        (Liveness::Dead, _, Some(_)) => "refused",
        (Liveness::Dead, _, None) => "dead",
        (_, true, _) => "draining",
        (Liveness::Suspect, _, _) => "suspect",
        (Liveness::Alive, _, _) => "alive",
    }
}

fn client_status(c: &Client) -> proto::ClientStatus {
    let live = c.live_report();
    proto::ClientStatus {
        files_today: c.sum_reports(|p| p.files_today),
        bytes_today: c.sum_reports(|p| p.bytes_today),
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
        spec: Some(c.spec.clone().into()),
        worker: c.worker.clone().unwrap_or_default(),
        epoch: c.epoch,
        agent: c.agent.as_str().to_owned(),
        files_total: c.sum_reports(|p| p.files_total),
        bytes_total: c.sum_reports(|p| p.bytes_total),
        last_error: live.and_then(|p| p.last_error.clone()).unwrap_or_default(),
    }
}

/// Replies to an admin request; a persistence failure is also returned so the core stops
/// (fail-stop) after telling the requester.
fn answer<T>(
    reply: oneshot::Sender<Result<T, CoreError>>,
    result: Result<T, CoreError>,
) -> Result<(), StateError> {
    match result {
        Err(CoreError::State(e)) => {
            error!(error = %e, "persisting leader state failed; stopping so a restart reloads the last durable state");
            let _ = reply.send(Err(CoreError::Persist(e.to_string())));
            Err(e)
        }
        other => {
            let _ = reply.send(other);
            Ok(())
        }
    }
}

fn progress_from_proto(p: proto::ClientProgress) -> (String, Progress) {
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
        },
    )
}

fn message(body: Body) -> LeaderMessage {
    LeaderMessage { body: Some(body) }
}

fn log_event(event: &Event) {
    match event {
        Event::WorkerSuspect { worker } => {
            warn!(worker = %worker, "worker suspect: session lost or heartbeats late")
        }
        Event::WorkerDead { worker } => {
            warn!(worker = %worker, "worker dead: lease expired; its clients move")
        }
        Event::AgentDown { client } => info!(client = %client, "agent down"),
        Event::Moved {
            client,
            from,
            to,
            epoch,
            reason,
        } => info!(
            client = %client,
            from = from.as_deref().unwrap_or("-"),
            to = to.as_deref().unwrap_or("-"),
            epoch,
            reason,
            "assignment changed"
        ),
        Event::ReleaseRequested {
            client,
            worker,
            reason,
        } => {
            info!(client = %client, worker = %worker, reason, "asked worker to release client")
        }
    }
}

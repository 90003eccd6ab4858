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
    Agent, ClientSpec, Effects, Event, Liveness, Millis, Outbound, Progress, Registry,
    RegistryError, SessionId, WorkerHello,
};
use super::state::{State, StateError};
use crate::proto::{self, LeaderMessage, leader_message::Body};

/// Where a session's outbound messages go; dropping it ends the session's response stream.
pub type Outbox = mpsc::UnboundedSender<Result<LeaderMessage, tonic::Status>>;

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
}

/// Starts the core thread. It ends when every handle is dropped, or with an error when the
/// state could not be persisted.
pub fn spawn(
    registry: Registry,
    state: State,
    info: LeaderInfo,
    started: Instant,
) -> std::io::Result<(CoreHandle, std::thread::JoinHandle<Result<(), StateError>>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let core = Core {
        registry,
        state,
        sessions: HashMap::new(),
        started,
        info,
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
            let _ = outbox.send(Ok(message(Body::Registered(proto::Registered {
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
                        let _ = outbox.send(Ok(message(Body::Registered(accepted))));
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
                        let _ = outbox.send(Ok(message(Body::AssignmentSet(set))));
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
                        let _ = outbox.send(Ok(message(Body::Registered(accepted))));
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
        let fx = self.registry.add_client(spec, now)?;
        self.carry_out(fx)?;
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
        let fx = self.registry.remove_client(name)?;
        self.carry_out(fx)?;
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
        self.state.apply(&fx.durable)?;
        for event in &fx.events {
            log_event(event);
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
            && outbox.send(Ok(message(body))).is_err()
        {
            self.sessions.remove(&session);
        }
    }

    fn status(&self, now: Millis) -> proto::StatusResponse {
        let mut workers: Vec<proto::WorkerStatus> = self
            .registry
            .workers()
            .map(|w| {
                let state = match (w.liveness, w.draining, &w.refused) {
                    (Liveness::Dead, _, Some(_)) => "refused",
                    (Liveness::Dead, _, None) => "dead",
                    (_, true, _) => "draining",
                    (Liveness::Suspect, _, _) => "suspect",
                    (Liveness::Alive, _, _) => "alive",
                };
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
                let sum = |f: fn(&Progress) -> u64| c.reports.values().map(f).sum::<u64>();
                // Backlog: the owner's last listing, else what the agent sees on the host.
                let live = c
                    .worker
                    .as_deref()
                    .and_then(|w| c.reports.get(w))
                    .or(c.agent_report.as_ref());
                proto::ClientStatus {
                    files_today: sum(|p| p.files_today),
                    bytes_today: sum(|p| p.bytes_today),
                    backlog_files: live.map_or(0, |p| p.backlog_files),
                    backlog_bytes: live.map_or(0, |p| p.backlog_bytes),
                    oldest_backlog_s: live.map_or(0, |p| p.oldest_backlog_s),
                    rate_bps: live.map_or(0, |p| p.rate_bps),
                    spec: Some(c.spec.clone().into()),
                    worker: c.worker.clone().unwrap_or_default(),
                    epoch: c.epoch,
                    agent: match c.agent {
                        Agent::None => "none",
                        Agent::Up { .. } => "up",
                        Agent::Down => "down",
                    }
                    .to_owned(),
                    files_total: sum(|p| p.files_total),
                    bytes_total: sum(|p| p.bytes_total),
                    last_error: live.and_then(|p| p.last_error.clone()).unwrap_or_default(),
                }
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

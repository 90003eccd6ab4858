//! The leader's single owner of mutable state: one thread that applies node and admin
//! commands and timer ticks to the [`Registry`], persists the durable part of every change
//! *before* sending any message that depends on it, then sends.
//!
//! One thread keeps ordering trivial (a tick never interleaves with a registration) and lets
//! SQLite be used synchronously. A persistence failure stops the core: memory may then be ahead
//! of disk, but nothing depending on it has left the process, so a restart is safe (fail-stop).
//!
//! Commands and replies carry domain types; `services` converts them from and to protobuf.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::audit::{self, AuditEntry};
use super::liveness::{Liveness, Millis};
use super::reason::{AssignmentReason, AuditKind, Code};
use super::registry::{
    ClientSpec, Effects, Event, Order, Outbound, Progress, Refusal, Registry, RegistryError,
    SessionId, WorkerHello,
};
use super::state::{State, StateError};
use super::status::{self, Explanation, LeaderInfo, StatusView};
use crate::metrics::{LeaderMetrics, ReasonLabel};

mod clients;
pub(crate) use clients::AddedClients;

/// Where a session's outbound messages go; dropping it ends the session's response stream.
/// Boxed: an unbounded channel allocates 32 slots at once, and a leader holds one channel per
/// node (11,000 x 32 x 152 bytes unboxed).
pub(crate) type Outbox = mpsc::UnboundedSender<Box<ToNode>>;

/// A message from the leader to one node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToNode {
    /// The answer to `Register`.
    Registered {
        leader_version: String,
        cluster: String,
        outcome: Result<SessionTerms, Refusal>,
    },
    /// Everything an accepted worker owns, right after `Registered`.
    AssignmentSet(Vec<(ClientSpec, u64)>),
    Order(Order),
    HeartbeatAck {
        seq: u64,
    },
    /// An agent saw new files of `client`.
    Wake {
        client: String,
        epoch: u64,
    },
    /// Workers forgotten by the operator: adopt their claims at once.
    Forgotten(Vec<String>),
}

/// The timing an accepted node must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTerms {
    pub(crate) heartbeat_ms: u64,
    pub(crate) lease_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NodeRole {
    Worker,
    Agent,
}

impl NodeRole {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Agent => "agent",
        }
    }
}

/// What a node says when it opens a session.
#[derive(Debug, Clone)]
pub(crate) struct NodeHello {
    /// `None`: the node named no role it could have.
    pub(crate) role: Option<NodeRole>,
    pub(crate) id: String,
    pub(crate) version: String,
    /// Its address as it reports it; empty: use the peer address.
    pub(crate) addr: String,
    /// Empty: any cluster.
    pub(crate) cluster: String,
    pub(crate) capacity: u32,
    /// (client, epoch) a worker still holds from an earlier session.
    pub(crate) held: Vec<(String, u64)>,
}

/// Where an added client went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assigned {
    pub(crate) worker: Option<String>,
    pub(crate) epoch: u64,
}

/// What draining a worker does to its clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Clients that move to other workers by handoff.
    pub(crate) moved: Vec<String>,
    /// Clients that become unassigned: no other worker can take them.
    pub(crate) unassigned: Vec<String>,
}

type Reply<T> = oneshot::Sender<Result<T, CoreError>>;

/// An accepted registration: a worker's complete assignment set, and the effects to carry
/// out after `Registered` went out.
type Admitted = Result<(Option<Vec<(ClientSpec, u64)>>, Effects), Refusal>;

pub(crate) enum Command {
    /// The leader is stopping: end every node session (nodes see a clean end of stream and
    /// reconnect with backoff) and take no new ones.
    Shutdown,
    Register {
        session: SessionId,
        hello: NodeHello,
        peer: String,
        outbox: Outbox,
    },
    Heartbeat {
        session: SessionId,
        seq: u64,
        load: f64,
        progress: Vec<(String, Progress)>,
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
        reply: Reply<Assigned>,
    },
    /// `sqdctl add-clients`: all or none, in one transaction.
    AddClients {
        specs: Vec<ClientSpec>,
        dry_run: bool,
        reply: Reply<AddedClients>,
    },
    RemoveClient {
        name: String,
        reply: Reply<()>,
    },
    Drain {
        id: String,
        drain: bool,
        reply: Reply<Drained>,
    },
    Status {
        reply: oneshot::Sender<StatusView>,
    },
    Explain {
        client: String,
        limit: usize,
        reply: Reply<Explanation>,
    },
    /// `sqdctl forget-worker`: answers how many worker sessions were told.
    ForgetWorker {
        id: String,
        reply: Reply<u32>,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CoreError {
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
pub(crate) struct CoreHandle {
    tx: Sender<Command>,
}

impl CoreHandle {
    pub(crate) fn send(&self, cmd: Command) -> Result<(), CoreError> {
        self.tx.send(cmd).map_err(|_| CoreError::Stopped)
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| CoreError::Stopped)
    }
}

struct Core {
    registry: Registry,
    state: State,
    sessions: HashMap<SessionId, Outbox>,
    started: Instant,
    info: LeaderInfo,
    metrics: LeaderMetrics,
    stopping: bool,
}

/// How often the gauges derived from the registry are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// Starts the core thread. It ends when every handle is dropped, or with an error when the
/// state could not be persisted.
pub(crate) fn spawn(
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
        stopping: false,
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
            if self.stopping {
                // A stopping leader decides nothing more: a successor may start on this state
                // dir as soon as the lock is released. The state closes when the core ends.
                return Ok(());
            }
            // Tick even under a steady stream of commands, so liveness never starves.
            if Instant::now() >= next_tick {
                let fx = self.registry.tick(self.now());
                self.carry_out(fx)?;
                next_tick = Instant::now() + period;
            }
            if Instant::now() >= next_gauges {
                status::refresh_gauges(&self.registry, &self.metrics);
                next_gauges = Instant::now() + GAUGE_PERIOD;
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> Result<(), StateError> {
        let now = self.now();
        match cmd {
            Command::Shutdown => {
                info!(sessions = self.sessions.len(), "closing every node session");
                self.stopping = true;
                self.sessions.clear();
            }
            // Dropping the outbox ends the new session's stream at once.
            Command::Register { .. } if self.stopping => {}
            Command::Register {
                session,
                hello,
                peer,
                outbox,
            } => self.register(session, hello, peer, outbox, now)?,
            Command::Heartbeat {
                session,
                seq,
                load,
                progress,
            } => {
                self.metrics.heartbeats.inc();
                if self
                    .registry
                    .heartbeat_with_progress(session, load, progress, now)
                {
                    self.send(session, ToNode::HeartbeatAck { seq });
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
                    self.send(to, ToNode::Wake { client, epoch });
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
            Command::AddClients {
                specs,
                dry_run,
                reply,
            } => answer(reply, self.add_clients(specs, dry_run, now))?,
            Command::RemoveClient { name, reply } => answer(reply, self.remove_client(&name))?,
            Command::Drain { id, drain, reply } => answer(reply, self.drain(&id, drain, now))?,
            Command::ForgetWorker { id, reply } => answer(reply, self.forget_worker(&id, now))?,
            Command::Status { reply } => {
                let _ = reply.send(status::status(&self.registry, &self.info, now));
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

    /// Answers a node's `Register`: refused for another cluster or without a role, otherwise
    /// handed to the registry as a worker or an agent.
    fn register(
        &mut self,
        session: SessionId,
        mut hello: NodeHello,
        peer: String,
        outbox: Outbox,
        now: Millis,
    ) -> Result<(), StateError> {
        if !hello.cluster.is_empty() && hello.cluster != self.info.cluster {
            let reason = format!(
                "this leader serves cluster {:?}, not {:?}; fix --cluster on the node or point it at the right leader",
                self.info.cluster, hello.cluster
            );
            warn!(node = %hello.id, reason = %reason, "registration refused");
            self.refuse(&outbox, reason, false);
            return Ok(());
        }
        if hello.addr.is_empty() {
            hello.addr = peer;
        }
        let admitted = match hello.role {
            Some(NodeRole::Worker) => self.admit_worker(session, &hello, now)?,
            Some(NodeRole::Agent) => self.admit_agent(session, &hello, now),
            None => Err(Refusal {
                reason: "registration without a role (worker or agent)".to_owned(),
                retryable: false,
            }),
        };
        match admitted {
            Ok((assignments, fx)) => {
                let _ = outbox.send(Box::new(self.accepted()));
                if let Some(set) = assignments {
                    let _ = outbox.send(Box::new(ToNode::AssignmentSet(set)));
                }
                self.sessions.insert(session, outbox);
                self.carry_out(fx)
            }
            Err(refusal) => {
                self.refuse(&outbox, refusal.reason, refusal.retryable);
                Ok(())
            }
        }
    }

    /// Registers a worker; what it owns and the effects left to carry out once it is told
    /// it was accepted (the durable part is persisted here, before anything is sent).
    fn admit_worker(
        &mut self,
        session: SessionId,
        hello: &NodeHello,
        now: Millis,
    ) -> Result<Admitted, StateError> {
        let worker = WorkerHello {
            id: &hello.id,
            addr: &hello.addr,
            version: &hello.version,
            capacity: hello.capacity.max(1),
            held: &hello.held,
        };
        let registration = match self.registry.register_worker(worker, session, now) {
            Ok(registration) => registration,
            Err(refusal) => {
                warn!(worker = %hello.id, version = %hello.version, reason = %refusal.reason, "registration refused");
                return Ok(Err(refusal));
            }
        };
        // Persist first: the set and any new assignments depend on it.
        let mut fx = registration.effects;
        self.state.apply(&fx.durable)?;
        fx.durable.clear();
        info!(worker = %hello.id, addr = %hello.addr, version = %hello.version, held = hello.held.len(),
              clients = registration.assignments.len(), "worker registered");
        Ok(Ok((Some(registration.assignments), fx)))
    }

    fn admit_agent(&mut self, session: SessionId, hello: &NodeHello, now: Millis) -> Admitted {
        let admitted = self
            .registry
            .register_agent(&hello.id, &hello.version, session, now);
        match &admitted {
            Ok(_) => info!(client = %hello.id, addr = %hello.addr, "agent registered"),
            Err(refusal) => {
                warn!(client = %hello.id, reason = %refusal.reason, "agent registration refused")
            }
        }
        admitted.map(|fx| (None, fx))
    }

    fn accepted(&self) -> ToNode {
        let timing = self.registry.timing();
        ToNode::Registered {
            leader_version: self.info.version.clone(),
            cluster: self.info.cluster.clone(),
            outcome: Ok(SessionTerms {
                heartbeat_ms: timing.heartbeat_ms,
                lease_ms: timing.lease_ms,
            }),
        }
    }

    fn refuse(&self, outbox: &Outbox, reason: String, retryable: bool) {
        self.metrics.refused_registrations.inc();
        let _ = outbox.send(Box::new(ToNode::Registered {
            leader_version: self.info.version.clone(),
            cluster: self.info.cluster.clone(),
            outcome: Err(Refusal { reason, retryable }),
        }));
    }

    fn remove_client(&mut self, name: &str) -> Result<(), CoreError> {
        let Some(client) = self.registry.client(name) else {
            return Err(RegistryError::UnknownClient(name.to_owned()).into());
        };
        let removed = AuditEntry::now(
            name,
            AuditKind::Removed,
            (client.worker.clone(), None),
            client.epoch,
            AssignmentReason::Admin,
            "removed by sqdctl remove-client; its files stay in the stores".to_owned(),
        );
        self.state.delete_client(name)?;
        let fx = self.registry.remove_client(name)?;
        self.metrics.forget_client(name);
        self.carry_out_with(fx, vec![removed])?;
        info!(client = %name, "client removed");
        Ok(())
    }

    fn forget_worker(&mut self, id: &str, now: Millis) -> Result<u32, CoreError> {
        let fx = self.registry.forget_worker(id, now)?;
        let told = fx
            .messages
            .iter()
            .filter(|(_, m)| matches!(m, Outbound::Forgotten(_)))
            .count();
        self.carry_out(fx)?;
        info!(worker = %id, told, "worker forgotten; its claims are adopted now");
        Ok(u32::try_from(told).unwrap_or(u32::MAX))
    }

    fn drain(&mut self, id: &str, drain: bool, now: Millis) -> Result<Drained, CoreError> {
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
            return Ok(Drained::default());
        }
        let other_worker = self.registry.workers().any(|w| {
            w.id != id && w.liveness == Liveness::Alive && !w.draining && w.session.is_some()
        });
        Ok(if other_worker {
            Drained {
                moved: on_worker,
                unassigned: Vec::new(),
            }
        } else {
            Drained {
                moved: Vec::new(),
                unassigned: on_worker,
            }
        })
    }

    fn explain(&self, name: &str, limit: usize) -> Result<Explanation, CoreError> {
        let client = self.registry.client(name).map(status::client_status);
        let history = self.state.audit_of(name, limit)?;
        if client.is_none() && history.is_empty() {
            return Err(RegistryError::UnknownClient(name.to_owned()).into());
        }
        Ok(Explanation { client, history })
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
        let now = self.now();
        audit.extend(
            fx.events
                .iter()
                .filter_map(|event| audit::of_event(&self.registry, now, event)),
        );
        self.state.apply_with_audit(&fx.durable, &audit)?;
        for event in &fx.events {
            log_event(event);
            self.count_event(event, now);
        }
        for (session, msg) in fx.messages {
            match msg {
                Outbound::Order(order) => self.send(session, ToNode::Order(order)),
                Outbound::Close => {
                    self.sessions.remove(&session);
                }
                Outbound::Forgotten(id) => self.send(session, ToNode::Forgotten(vec![id])),
            }
        }
        Ok(())
    }

    fn send(&mut self, session: SessionId, message: ToNode) {
        if let Some(outbox) = self.sessions.get(&session)
            && outbox.send(Box::new(message)).is_err()
        {
            self.sessions.remove(&session);
        }
    }

    fn count_event(&self, event: &Event, now: Millis) {
        let Event::Moved(m) = event else {
            return;
        };
        self.metrics
            .assignments
            .get_or_create(&ReasonLabel { reason: m.reason })
            .inc();
        if m.reason == AssignmentReason::Failover
            && let Some(last) = m
                .from
                .as_deref()
                .and_then(|id| self.registry.workers().find(|w| w.id == id))
                .and_then(|w| w.last_heartbeat)
        {
            let secs = now.saturating_sub(last) as f64 / 1000.0;
            self.metrics.failover_seconds.observe(secs);
        }
    }
}

/// Replies to an admin request; a persistence failure is also returned so the core stops
/// (fail-stop) after telling the requester.
fn answer<T>(reply: Reply<T>, result: Result<T, CoreError>) -> Result<(), StateError> {
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

fn log_event(event: &Event) {
    match event {
        Event::WorkerSuspect { worker } => {
            warn!(worker = %worker, "worker suspect: session lost or heartbeats late")
        }
        Event::WorkerDead { worker } => {
            warn!(worker = %worker, "worker dead: lease expired; its clients move")
        }
        Event::AgentDown { client } => info!(client = %client, "agent down"),
        Event::Moved(m) => info!(
            client = %m.client,
            from = m.from.as_deref().unwrap_or("-"),
            to = m.to.as_deref().unwrap_or("-"),
            epoch = m.epoch,
            reason = m.reason.as_str(),
            "assignment changed"
        ),
        Event::ReleaseRequested {
            client,
            worker,
            reason,
        } => {
            info!(client = %client, worker = %worker, reason = reason.as_str(), "asked worker to release client")
        }
        Event::StaleState { worker } => warn!(
            worker = %worker,
            "the state is older than the cluster (the worker holds a newer epoch): no assignment from it is confirmed until the previous leases ran out"
        ),
        Event::Reconciled { stale, frozen } => info!(
            stale,
            frozen, "restart reconciled: every lease of the previous leader has run out"
        ),
    }
}

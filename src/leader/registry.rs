//! Pure membership, liveness and ownership state of the leader.
//!
//! Time comes in as `now` (leader-monotonic milliseconds) and every operation returns the
//! effects the caller must carry out: durable changes to persist first, then messages to send.
//! Nothing here does I/O, so tests drive it by advancing time instead of sleeping.
//!
//! Ownership rules (DESIGN.md C1–C8):
//! - a client's owner changes only through [`Registry::tick`] or an explicit admin call, and
//!   every new owner gets a fresh epoch from one counter that only grows (C2);
//! - a client leaves a *live* worker by handoff: the worker is told to release it and the new
//!   owner is chosen only once it confirmed (or died), so two leases never overlap (C1);
//! - a worker whose session broke is suspect at once and keeps its clients; it is dead after
//!   `lease + grace` without a heartbeat, and its clients are placed again in that tick (C4).

use std::collections::{BTreeMap, HashMap};

use super::scheduler::{self, Candidate, CandidateRole, MoveReason, Placement};
pub use crate::spec::ClientSpec;
use crate::version;

/// A complaining client moves only to a worker whose load index is lower by this much.
const BACKLOG_LOAD_MARGIN: f64 = 0.2;
/// After a move for backlog, the client stays put for this many leases.
const BACKLOG_HYSTERESIS_LEASES: u64 = 20;

/// Leader-monotonic milliseconds.
pub type Millis = u64;

/// Identifies one node session (one gRPC stream); never reused within a leader run.
pub type SessionId = u64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub grace_ms: u64,
    /// Most rebalancing moves started per tick (placing is never capped).
    pub max_moves_per_tick: usize,
}

impl Timing {
    fn dead_after(&self) -> u64 {
        self.lease_ms + self.grace_ms
    }
    /// Heartbeats missed for this long make a connected node suspect.
    fn suspect_after(&self) -> u64 {
        (self.heartbeat_ms * 2).min(self.lease_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Suspect,
    Dead,
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub id: String,
    pub addr: String,
    pub version: String,
    pub capacity: u32,
    pub load: f64,
    pub liveness: Liveness,
    pub draining: bool,
    /// Why the last registration under this id was refused.
    pub refused: Option<String>,
    pub last_heartbeat: Option<Millis>,
    pub session: Option<SessionId>,
    /// It said it was leaving (graceful stop) rather than falling silent.
    pub left: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub worker: &'a str,
    pub epoch: u64,
}

/// A worker's last report about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub epoch: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_today: u64,
    pub bytes_today: u64,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    pub oldest_backlog_s: u64,
    pub rate_bps: u64,
    pub last_error: Option<String>,
    /// An agent's complaint: its backlog aged past its threshold.
    pub behind: bool,
    /// Newest commit, ms since the Unix epoch; 0 = never.
    pub last_commit_unix_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub spec: ClientSpec,
    /// Last report of every worker that served this client (each holds its own store shard).
    pub reports: BTreeMap<String, Progress>,
    pub worker: Option<String>,
    /// Epoch of the current assignment, or of the last one when unassigned.
    pub epoch: u64,
    /// Set while the owner has been asked to release the client.
    pub releasing_since: Option<Millis>,
    /// The agent's last report (backlog as seen on the producing host).
    pub agent_report: Option<Progress>,
    /// Worker to avoid when placing this client next (it fell behind there).
    pub avoid: Option<String>,
    /// Last move because of an agent's complaint (hysteresis).
    pub backlog_move_at: Option<Millis>,
    pub agent: Agent,
    /// The owner that was asked to release this client, and why; the next placement is
    /// reported as a move from it for that reason.
    pub handoff: Option<(String, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    None,
    Up {
        session: SessionId,
        last_heartbeat: Millis,
    },
    Down,
}

impl Client {
    /// The freshest view of the backlog: the owner's last listing, else what the agent sees.
    pub fn live_report(&self) -> Option<&Progress> {
        self.worker
            .as_deref()
            .and_then(|w| self.reports.get(w))
            .or(self.agent_report.as_ref())
    }

    /// Sum of a counter over every worker that served the client (each has its own shard).
    pub fn sum_reports(&self, f: fn(&Progress) -> u64) -> u64 {
        self.reports.values().map(f).sum()
    }
}

impl Agent {
    pub fn as_str(&self) -> &'static str {
        match self {
            Agent::None => "none",
            Agent::Up { .. } => "up",
            Agent::Down => "down",
        }
    }
}

/// A durable change: persist before any message that depends on it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durable {
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
pub enum Outbound {
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
pub enum Event {
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
        reason: &'static str,
    },
    ReleaseRequested {
        client: String,
        worker: String,
        reason: &'static str,
    },
}

#[derive(Debug, Default)]
pub struct Effects {
    pub durable: Vec<Durable>,
    pub messages: Vec<(SessionId, Outbound)>,
    pub events: Vec<Event>,
}

impl Effects {
    fn extend(&mut self, other: Effects) {
        self.durable.extend(other.durable);
        self.messages.extend(other.messages);
        self.events.extend(other.events);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("client {0:?} already exists; remove it first or choose another name")]
    DuplicateClient(String),
    #[error("unknown client {0:?}; list clients with `sqdctl status`")]
    UnknownClient(String),
    #[error("unknown worker {0:?}; list workers with `sqdctl status`")]
    UnknownWorker(String),
}

/// Why a registration was refused, and whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub retryable: bool,
}

/// What a worker registration produced.
#[derive(Debug)]
pub struct Registration {
    /// The complete assignment set to send right after `Registered`.
    pub assignments: Vec<(ClientSpec, u64)>,
    pub effects: Effects,
}

pub struct WorkerHello<'a> {
    pub id: &'a str,
    pub addr: &'a str,
    pub version: &'a str,
    pub capacity: u32,
    /// (client, epoch) the worker still holds from an earlier session.
    pub held: &'a [(String, u64)],
}

pub struct Registry {
    timing: Timing,
    leader_version: String,
    workers: BTreeMap<String, Worker>,
    clients: BTreeMap<String, Client>,
    next_epoch: u64,
    /// Which node a session belongs to, so a heartbeat finds its node without scanning every
    /// worker and client (at 10,000 agents that scan was most of the leader's CPU). A hint:
    /// every use checks it against the node's own record, so a stale entry cannot misdirect.
    sessions: HashMap<SessionId, SessionOwner>,
}

#[derive(Debug, Clone)]
enum SessionOwner {
    Worker(String),
    Agent(String),
}

impl Registry {
    pub fn new(timing: Timing, leader_version: &str, next_epoch: u64) -> Self {
        Registry {
            timing,
            leader_version: leader_version.to_owned(),
            workers: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_epoch: next_epoch.max(1),
            sessions: HashMap::new(),
        }
    }

    /// The id of the worker whose current session is `session`.
    fn worker_of(&self, session: SessionId) -> Option<String> {
        match self.sessions.get(&session) {
            Some(SessionOwner::Worker(id))
                if self
                    .workers
                    .get(id)
                    .is_some_and(|w| w.session == Some(session)) =>
            {
                Some(id.clone())
            }
            _ => None,
        }
    }

    /// The client whose agent's current session is `session`.
    fn agent_of(&self, session: SessionId) -> Option<String> {
        match self.sessions.get(&session) {
            Some(SessionOwner::Agent(name))
                if self.clients.get(name).is_some_and(
                    |c| matches!(c.agent, Agent::Up { session: s, .. } if s == session),
                ) =>
            {
                Some(name.clone())
            }
            _ => None,
        }
    }

    /// Where a "files ready" hint from the agent session `session` goes: the session of the
    /// worker serving the agent's client, the client and its epoch. `None` when the sender is
    /// not a current agent, or its client is unassigned, in handoff, or its worker offline.
    pub fn wake_target(&self, session: SessionId) -> Option<(SessionId, String, u64)> {
        let name = self.agent_of(session)?;
        let client = self.clients.get(&name)?;
        if client.releasing_since.is_some() {
            return None;
        }
        let worker = self.workers.get(client.worker.as_deref()?)?;
        let to = worker.session?;
        Some((to, name, client.epoch))
    }

    /// Restores a worker known from the persisted state. It starts suspect with a full lease
    /// from `now`, so a worker that re-attaches in time keeps its clients and epochs.
    pub fn restore_worker(
        &mut self,
        id: &str,
        addr: &str,
        version: &str,
        draining: bool,
        now: Millis,
    ) {
        self.workers.insert(
            id.to_owned(),
            Worker {
                id: id.to_owned(),
                addr: addr.to_owned(),
                version: version.to_owned(),
                capacity: u32::MAX,
                load: 0.0,
                liveness: Liveness::Suspect,
                draining,
                refused: None,
                last_heartbeat: Some(now),
                session: None,
                left: false,
            },
        );
    }

    /// Restores a persisted client with its last owner and epoch.
    pub fn restore_client(&mut self, spec: ClientSpec, worker: Option<String>, epoch: u64) {
        self.next_epoch = self.next_epoch.max(epoch + 1);
        self.clients.insert(
            spec.name.clone(),
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
            },
        );
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }
    pub fn client(&self, name: &str) -> Option<&Client> {
        self.clients.get(name)
    }
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch
    }

    pub fn check_new_client(&self, name: &str) -> Result<(), RegistryError> {
        if self.clients.contains_key(name) {
            return Err(RegistryError::DuplicateClient(name.to_owned()));
        }
        Ok(())
    }

    /// Adds a client (already persisted by the caller) and places it at once.
    pub fn add_client(&mut self, spec: ClientSpec, now: Millis) -> Result<Effects, RegistryError> {
        self.check_new_client(&spec.name)?;
        self.clients.insert(
            spec.name.clone(),
            Client {
                spec,
                reports: BTreeMap::new(),
                worker: None,
                epoch: 0,
                releasing_since: None,
                agent_report: None,
                avoid: None,
                backlog_move_at: None,
                agent: Agent::None,
                handoff: None,
            },
        );
        Ok(self.schedule(now))
    }

    /// Removes a client; its owner is told to stop. The caller persists the removal first.
    pub fn remove_client(&mut self, name: &str) -> Result<Effects, RegistryError> {
        let client = self
            .clients
            .remove(name)
            .ok_or_else(|| RegistryError::UnknownClient(name.to_owned()))?;
        let mut fx = Effects::default();
        if let Some(session) = client.worker.as_deref().and_then(|w| self.session_of(w)) {
            fx.messages.push((
                session,
                Outbound::Revoke {
                    client: client.spec.name.clone(),
                    epoch: client.epoch,
                },
            ));
        }
        if let Agent::Up { session, .. } = client.agent {
            fx.messages.push((session, Outbound::Close));
        }
        Ok(fx)
    }

    /// Marks a worker draining (or not) and moves its clients away by handoff.
    pub fn set_draining(
        &mut self,
        id: &str,
        draining: bool,
        now: Millis,
    ) -> Result<Effects, RegistryError> {
        let worker = self
            .workers
            .get_mut(id)
            .ok_or_else(|| RegistryError::UnknownWorker(id.to_owned()))?;
        worker.draining = draining;
        let mut fx = Effects::default();
        fx.durable.push(Durable::Worker {
            id: worker.id.clone(),
            addr: worker.addr.clone(),
            version: worker.version.clone(),
            draining,
        });
        fx.extend(self.schedule(now));
        Ok(fx)
    }

    /// Handles a worker's `Register`.
    pub fn register_worker(
        &mut self,
        hello: WorkerHello<'_>,
        session: SessionId,
        now: Millis,
    ) -> Result<Registration, Refusal> {
        if let Err(reason) = version::check_compatible(&self.leader_version, hello.version) {
            self.note_refusal(&hello, reason.clone());
            return Err(Refusal {
                reason,
                retryable: false,
            });
        }
        let mut fx = Effects::default();
        if let Some(existing) = self.workers.get(hello.id) {
            let healthy = existing.session.is_some()
                && existing.liveness == Liveness::Alive
                && existing
                    .last_heartbeat
                    .is_some_and(|t| now.saturating_sub(t) <= self.timing.suspect_after());
            if healthy {
                // The older live session wins: a second process under the same id must not
                // inherit the clients (hazard 21).
                return Err(Refusal {
                    reason: format!(
                        "worker id {:?} is already connected from {}; give each worker a unique --id",
                        hello.id, existing.addr
                    ),
                    retryable: true,
                });
            }
            if let Some(old) = existing.session {
                fx.messages.push((old, Outbound::Close));
            }
        }
        let draining = self.workers.get(hello.id).is_some_and(|w| w.draining);
        let worker = Worker {
            id: hello.id.to_owned(),
            addr: hello.addr.to_owned(),
            version: hello.version.to_owned(),
            capacity: hello.capacity,
            load: 0.0,
            liveness: Liveness::Alive,
            draining,
            refused: None,
            last_heartbeat: Some(now),
            session: Some(session),
            left: false,
        };
        fx.durable.push(Durable::Worker {
            id: worker.id.clone(),
            addr: worker.addr.clone(),
            version: worker.version.clone(),
            draining,
        });
        self.sessions
            .insert(session, SessionOwner::Worker(hello.id.to_owned()));
        self.workers.insert(hello.id.to_owned(), worker);

        // Reconcile: a client in handoff from this worker that the new session does not hold
        // is released; everything else it owns is confirmed with its current epoch.
        let mut assignments = Vec::new();
        for client in self.clients.values_mut() {
            if client.worker.as_deref() != Some(hello.id) {
                continue;
            }
            if client.releasing_since.is_some() {
                let still_held = hello.held.iter().any(|(name, _)| name == &client.spec.name);
                if !still_held {
                    client.releasing_since = None;
                    client.worker = None;
                    fx.durable.push(Durable::Assignment {
                        client: client.spec.name.clone(),
                        worker: None,
                        epoch: client.epoch,
                    });
                }
                continue;
            }
            assignments.push((client.spec.clone(), client.epoch));
        }
        fx.extend(self.schedule(now));
        // Assignments decided by this schedule reach the worker as separate `Assign`s queued
        // after the set; drop those from the set so each is sent once.
        Ok(Registration {
            assignments,
            effects: fx,
        })
    }

    fn note_refusal(&mut self, hello: &WorkerHello<'_>, reason: String) {
        if self
            .workers
            .get(hello.id)
            .is_some_and(|w| w.session.is_some())
        {
            // A live worker keeps serving; the refused newcomer only gets the answer.
            return;
        }
        let entry = self
            .workers
            .entry(hello.id.to_owned())
            .or_insert_with(|| Worker {
                id: hello.id.to_owned(),
                addr: hello.addr.to_owned(),
                version: hello.version.to_owned(),
                capacity: 0,
                load: 0.0,
                liveness: Liveness::Dead,
                draining: false,
                refused: None,
                last_heartbeat: None,
                session: None,
                left: false,
            });
        entry.version = hello.version.to_owned();
        entry.addr = hello.addr.to_owned();
        entry.refused = Some(reason);
    }

    /// Handles a client agent's `Register`.
    pub fn register_agent(
        &mut self,
        name: &str,
        agent_version: &str,
        session: SessionId,
        now: Millis,
    ) -> Result<Effects, Refusal> {
        version::check_compatible(&self.leader_version, agent_version).map_err(|reason| {
            Refusal {
                reason,
                retryable: false,
            }
        })?;
        let Some(client) = self.clients.get_mut(name) else {
            return Err(Refusal {
                reason: format!(
                    "unknown client {name:?}; add it first with `sqdctl add-client {name} ...`"
                ),
                retryable: true,
            });
        };
        let mut fx = Effects::default();
        if let Agent::Up { session: old, .. } = client.agent {
            fx.messages.push((old, Outbound::Close));
        }
        client.agent = Agent::Up {
            session,
            last_heartbeat: now,
        };
        self.sessions
            .insert(session, SessionOwner::Agent(name.to_owned()));
        Ok(fx)
    }

    /// Records a heartbeat. Returns false when the session is unknown (stale or closed).
    pub fn heartbeat(&mut self, session: SessionId, load: f64, now: Millis) -> bool {
        self.heartbeat_with_progress(session, load, Vec::new(), now)
    }

    /// Records a heartbeat carrying per-client progress.
    pub fn heartbeat_with_progress(
        &mut self,
        session: SessionId,
        load: f64,
        progress: Vec<(String, Progress)>,
        now: Millis,
    ) -> bool {
        if let Some(w) = self
            .worker_of(session)
            .and_then(|id| self.workers.get_mut(&id))
        {
            w.last_heartbeat = Some(now);
            w.load = if load.is_finite() {
                load.clamp(0.0, 1.0)
            } else {
                1.0
            };
            w.liveness = Liveness::Alive;
            let worker = w.id.clone();
            for (client, report) in progress {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.reports.insert(worker.clone(), report);
                }
            }
            return true;
        }
        if let Some(name) = self.agent_of(session)
            && let Some(c) = self.clients.get_mut(&name)
            && let Agent::Up { last_heartbeat, .. } = &mut c.agent
        {
            *last_heartbeat = now;
            if let Some((_, report)) = progress.into_iter().find(|(client, _)| *client == name) {
                c.agent_report = Some(report);
            }
            return true;
        }
        false
    }

    /// Clients whose agent complains while their worker is clearly busier than another one:
    /// hand them off (at most one per tick, and not again within the hysteresis window).
    fn relieve_backlog(&mut self, now: Millis) -> Effects {
        let mut fx = Effects::default();
        let hysteresis = self
            .timing
            .lease_ms
            .saturating_mul(BACKLOG_HYSTERESIS_LEASES);
        let eligible: Vec<(String, f64)> = self
            .workers
            .values()
            .filter(|w| Self::candidate_role(w) == Some(CandidateRole::Eligible))
            .map(|w| (w.id.clone(), w.load))
            .collect();
        let complaining = self.clients.values_mut().find(|c| {
            let behind = matches!(c.agent, Agent::Up { .. })
                && c.agent_report.as_ref().is_some_and(|r| r.behind)
                && c.releasing_since.is_none()
                && c.backlog_move_at
                    .is_none_or(|t| now.saturating_sub(t) >= hysteresis);
            let Some(owner) = c.worker.as_deref().filter(|_| behind) else {
                return false;
            };
            let Some(owner_load) = eligible.iter().find(|(id, _)| id == owner).map(|(_, l)| *l)
            else {
                return false;
            };
            eligible
                .iter()
                .any(|(id, load)| id != owner && *load + BACKLOG_LOAD_MARGIN < owner_load)
        });
        let Some(c) = complaining else { return fx };
        let Some(owner) = c.worker.clone() else {
            return fx;
        };
        c.releasing_since = Some(now);
        c.backlog_move_at = Some(now);
        c.avoid = Some(owner.clone());
        c.handoff = Some((owner.clone(), "backlog"));
        if let Some(session) = self.workers.get(&owner).and_then(|w| w.session) {
            fx.messages.push((
                session,
                Outbound::Revoke {
                    client: c.spec.name.clone(),
                    epoch: c.epoch,
                },
            ));
        }
        fx.events.push(Event::ReleaseRequested {
            client: c.spec.name.clone(),
            worker: owner,
            reason: "backlog",
        });
        fx
    }

    /// The session's stream broke: its worker is suspect at once (its lease may still run).
    pub fn session_closed(&mut self, session: SessionId) -> Effects {
        let mut fx = Effects::default();
        let worker = self.worker_of(session);
        let agent = self.agent_of(session);
        self.sessions.remove(&session);
        if let Some(w) = worker.and_then(|id| self.workers.get_mut(&id)) {
            w.session = None;
            if w.liveness == Liveness::Alive {
                w.liveness = Liveness::Suspect;
                fx.events.push(Event::WorkerSuspect {
                    worker: w.id.clone(),
                });
            }
            return fx;
        }
        if let Some(c) = agent.and_then(|name| self.clients.get_mut(&name)) {
            c.agent = Agent::Down;
            fx.events.push(Event::AgentDown {
                client: c.spec.name.clone(),
            });
        }
        fx
    }

    /// The worker stopped all its work and is leaving: its clients move at once.
    pub fn worker_leaving(&mut self, session: SessionId, now: Millis) -> Effects {
        let mut fx = Effects::default();
        if let Some(w) = self
            .worker_of(session)
            .and_then(|id| self.workers.get_mut(&id))
        {
            w.session = None;
            w.liveness = Liveness::Dead;
            w.left = true;
            fx.events.push(Event::WorkerDead {
                worker: w.id.clone(),
            });
            fx.extend(self.schedule(now));
        }
        fx
    }

    /// The worker confirmed it stopped serving `client` (held under `epoch`).
    pub fn released(
        &mut self,
        session: SessionId,
        client: &str,
        epoch: u64,
        now: Millis,
    ) -> Effects {
        let Some(worker) = self.worker_of(session).and_then(|id| self.workers.get(&id)) else {
            return Effects::default();
        };
        let Some(c) = self.clients.get_mut(client) else {
            return Effects::default();
        };
        if c.worker.as_deref() != Some(worker.id.as_str()) || c.epoch != epoch {
            return Effects::default();
        }
        let mut fx = Effects::default();
        c.worker = None;
        c.releasing_since = None;
        fx.durable.push(Durable::Assignment {
            client: client.to_owned(),
            worker: None,
            epoch,
        });
        fx.extend(self.schedule(now));
        fx
    }

    /// Advances liveness to `now` and places or rebalances clients.
    pub fn tick(&mut self, now: Millis) -> Effects {
        let mut fx = Effects::default();
        let t = self.timing;
        for w in self.workers.values_mut() {
            let Some(last) = w.last_heartbeat else {
                continue;
            };
            let silent = now.saturating_sub(last);
            if w.liveness != Liveness::Dead && silent > t.dead_after() {
                w.liveness = Liveness::Dead;
                fx.events.push(Event::WorkerDead {
                    worker: w.id.clone(),
                });
                if let Some(s) = w.session.take() {
                    fx.messages.push((s, Outbound::Close));
                }
            } else if w.liveness == Liveness::Alive && silent > t.suspect_after() {
                w.liveness = Liveness::Suspect;
                fx.events.push(Event::WorkerSuspect {
                    worker: w.id.clone(),
                });
            }
        }
        for c in self.clients.values_mut() {
            if let Agent::Up {
                session,
                last_heartbeat,
            } = c.agent
                && now.saturating_sub(last_heartbeat) > t.dead_after()
            {
                c.agent = Agent::Down;
                fx.messages.push((session, Outbound::Close));
                fx.events.push(Event::AgentDown {
                    client: c.spec.name.clone(),
                });
            }
        }
        fx.extend(self.relieve_backlog(now));
        fx.extend(self.schedule(now));
        fx
    }

    fn session_of(&self, worker: &str) -> Option<SessionId> {
        self.workers.get(worker).and_then(|w| w.session)
    }

    fn is_live_owner(&self, worker: &str) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.liveness != Liveness::Dead && w.session.is_some())
    }

    fn candidate_role(w: &Worker) -> Option<CandidateRole> {
        if w.refused.is_some() {
            return None;
        }
        match (w.liveness, w.draining, w.session.is_some()) {
            (Liveness::Alive, false, true) => Some(CandidateRole::Eligible),
            // A suspect worker may still hold a valid lease: keep its clients where they are.
            (Liveness::Suspect, _, _) => Some(CandidateRole::Pinned),
            _ => None,
        }
    }

    /// Runs the scheduler and turns its plan into ownership changes.
    fn schedule(&mut self, now: Millis) -> Effects {
        let mut fx = Effects::default();
        // A handoff that was never confirmed resolves when the old owner is dead or its lease
        // (renewed by heartbeats it kept sending) would have had to lapse anyway.
        for c in self.clients.values_mut() {
            if c.releasing_since.is_some() {
                let owner_dead = c.worker.as_deref().is_none_or(|w| {
                    self.workers
                        .get(w)
                        .is_none_or(|w| w.liveness == Liveness::Dead)
                });
                if owner_dead {
                    c.releasing_since = None;
                }
            }
        }
        let candidates: Vec<Candidate> = self
            .workers
            .values()
            .filter_map(|w| {
                Some(Candidate {
                    id: w.id.clone(),
                    role: Self::candidate_role(w)?,
                    capacity: w.capacity,
                    load: w.load,
                })
            })
            .collect();
        let placements: Vec<Placement> = self
            .clients
            .values()
            .map(|c| Placement {
                client: c.spec.name.clone(),
                worker: c.worker.clone(),
                frozen: c.releasing_since.is_some(),
                avoid: c.avoid.clone(),
            })
            .collect();
        let plan = scheduler::plan(&candidates, &placements, self.timing.max_moves_per_tick);
        let mut epoch_used = false;
        for d in plan {
            let from_live = d.from.as_deref().is_some_and(|w| self.is_live_owner(w));
            let Some(client) = self.clients.get_mut(&d.client) else {
                continue;
            };
            if from_live {
                // Handoff: ask the live owner to release; the next owner is chosen once it did.
                let from = d.from.clone().unwrap_or_default();
                client.releasing_since = Some(now);
                if let Some(session) = self.workers.get(&from).and_then(|w| w.session) {
                    fx.messages.push((
                        session,
                        Outbound::Revoke {
                            client: d.client.clone(),
                            epoch: client.epoch,
                        },
                    ));
                }
                let reason = if d.reason == MoveReason::Rebalance {
                    "rebalance"
                } else {
                    "drain"
                };
                client.handoff = Some((from.clone(), reason));
                fx.events.push(Event::ReleaseRequested {
                    client: d.client.clone(),
                    worker: from,
                    reason,
                });
                continue;
            }
            let first_placement = client.epoch == 0;
            let epoch = match d.to {
                Some(_) => {
                    let e = self.next_epoch;
                    self.next_epoch += 1;
                    epoch_used = true;
                    e
                }
                None => client.epoch,
            };
            client.worker = d.to.clone();
            client.epoch = epoch;
            if d.to.is_some() {
                client.avoid = None;
            }
            fx.durable.push(Durable::Assignment {
                client: d.client.clone(),
                worker: d.to.clone(),
                epoch,
            });
            if let Some(session) =
                d.to.as_deref()
                    .and_then(|w| self.workers.get(w))
                    .and_then(|w| w.session)
            {
                fx.messages.push((
                    session,
                    Outbound::Assign {
                        spec: client.spec.clone(),
                        epoch,
                    },
                ));
            }
            let handoff = client.handoff.take();
            let (from, reason) = match (d.from, d.reason, handoff, &d.to) {
                (from, _, _, None) => (from, "unassigned"),
                (None, _, Some((from, why)), _) => (Some(from), why),
                (None, _, None, _) if first_placement => (None, "new"),
                (None, _, None, _) => (None, "placed"),
                (Some(from), MoveReason::Place, _, _) => (Some(from), "failover"),
                (Some(from), MoveReason::Rebalance, _, _) => (Some(from), "rebalance"),
            };
            fx.events.push(Event::Moved {
                client: d.client,
                from,
                to: d.to,
                epoch,
                reason,
            });
        }
        if epoch_used {
            fx.durable.push(Durable::NextEpoch(self.next_epoch));
        }
        fx
    }

    /// Every client with its current owner, for invariant checks.
    pub fn owners(&self) -> impl Iterator<Item = (&str, Option<Owner<'_>>)> {
        self.clients.values().map(|c| {
            (
                c.spec.name.as_str(),
                c.worker.as_deref().map(|worker| Owner {
                    worker,
                    epoch: c.epoch,
                }),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: &str = env!("CARGO_PKG_VERSION");

    fn timing() -> Timing {
        Timing {
            heartbeat_ms: 100,
            lease_ms: 300,
            grace_ms: 100,
            max_moves_per_tick: 2,
        }
    }

    fn spec(name: &str) -> ClientSpec {
        ClientSpec::example(name)
    }

    fn hello<'a>(id: &'a str, held: &'a [(String, u64)]) -> WorkerHello<'a> {
        WorkerHello {
            id,
            addr: "127.0.0.1:1",
            version: V,
            capacity: 1000,
            held,
        }
    }

    /// Model of the worker side: applies messages per session.
    #[derive(Default)]
    struct Fleet {
        held: BTreeMap<SessionId, BTreeMap<String, u64>>,
    }

    impl Fleet {
        fn apply(&mut self, reg: &mut Registry, fx: Effects, now: Millis) {
            let mut pending = fx.messages;
            while !pending.is_empty() {
                let mut next = Vec::new();
                for (session, msg) in pending {
                    match msg {
                        Outbound::Assign { spec, epoch } => {
                            if let Some(h) = self.held.get_mut(&session) {
                                h.insert(spec.name, epoch);
                            }
                        }
                        Outbound::Revoke { client, epoch } => {
                            let released =
                                self.held.get_mut(&session).and_then(|h| h.remove(&client));
                            if let Some(e) = released {
                                assert!(e <= epoch);
                                next.extend(reg.released(session, &client, e, now).messages);
                            }
                        }
                        Outbound::Close => {
                            self.held.remove(&session);
                        }
                    }
                }
                pending = next;
            }
        }
    }

    #[test]
    fn a_dead_workers_clients_move_in_the_tick_it_is_declared_dead() {
        let mut reg = Registry::new(timing(), V, 1);
        let mut fleet = Fleet::default();
        for (i, id) in ["a", "b"].iter().enumerate() {
            let r = reg.register_worker(hello(id, &[]), i as u64, 0).unwrap();
            fleet.held.insert(i as u64, BTreeMap::new());
            fleet.apply(&mut reg, r.effects, 0);
        }
        for i in 0..4 {
            let fx = reg.add_client(spec(&format!("c{i}")), 0).unwrap();
            fleet.apply(&mut reg, fx, 0);
        }
        let before: BTreeMap<_, _> = reg
            .owners()
            .map(|(c, o)| (c.to_owned(), o.map(|o| (o.worker.to_owned(), o.epoch))))
            .collect();
        // b's stream breaks; a keeps heartbeating.
        let fx = reg.session_closed(1);
        assert!(
            fx.events
                .contains(&Event::WorkerSuspect { worker: "b".into() })
        );
        for now in [100, 200, 300, 400] {
            assert!(reg.heartbeat(0, 0.0, now));
            let fx = reg.tick(now);
            // Still within lease + grace: b's clients must not move.
            assert!(
                fx.durable
                    .iter()
                    .all(|d| !matches!(d, Durable::Assignment { .. })),
                "moved early at {now}"
            );
        }
        assert!(reg.heartbeat(0, 0.0, 401));
        let fx = reg.tick(401);
        assert!(
            fx.events
                .contains(&Event::WorkerDead { worker: "b".into() })
        );
        for (client, owner) in reg.owners() {
            let owner = owner.unwrap();
            assert_eq!(owner.worker, "a");
            let (was, old_epoch) = before[client].clone().unwrap();
            if was == "b" {
                assert!(owner.epoch > old_epoch);
            } else {
                assert_eq!(owner.epoch, old_epoch);
            }
        }
    }

    #[test]
    fn incompatible_version_is_refused_with_a_reason() {
        let mut reg = Registry::new(timing(), "1.4.0", 1);
        let mut h = hello("w", &[]);
        h.version = "1.5.0";
        let err = reg.register_worker(h, 1, 0).unwrap_err();
        assert!(!err.retryable);
        assert!(err.reason.contains("1.5.0"), "{}", err.reason);
        let w = reg.workers().next().unwrap();
        assert!(w.refused.is_some());
    }

    #[test]
    fn a_second_live_session_under_one_id_is_refused() {
        let mut reg = Registry::new(timing(), V, 1);
        reg.register_worker(hello("w", &[]), 1, 0).unwrap();
        let err = reg.register_worker(hello("w", &[]), 2, 50).unwrap_err();
        assert!(err.retryable);
        // Once the first session is gone, the id can be taken over.
        reg.session_closed(1);
        assert!(reg.register_worker(hello("w", &[]), 2, 60).is_ok());
    }

    #[test]
    fn drain_hands_off_and_reassigns_only_after_release() {
        let mut reg = Registry::new(timing(), V, 1);
        let mut fleet = Fleet::default();
        let r = reg.register_worker(hello("a", &[]), 1, 0).unwrap();
        fleet.held.insert(1, BTreeMap::new());
        fleet.apply(&mut reg, r.effects, 0);
        let fx = reg.add_client(spec("c"), 0).unwrap();
        fleet.apply(&mut reg, fx, 0);
        let r = reg.register_worker(hello("b", &[]), 2, 0).unwrap();
        fleet.held.insert(2, BTreeMap::new());
        fleet.apply(&mut reg, r.effects, 0);
        let first_epoch = reg.client("c").unwrap().epoch;

        let fx = reg.set_draining("a", true, 10).unwrap();
        // The revoke goes out, but b gets nothing until a released.
        assert!(
            fx.messages
                .iter()
                .all(|(s, m)| !(*s == 2 && matches!(m, Outbound::Assign { .. })))
        );
        fleet.apply(&mut reg, fx, 10);
        let c = reg.client("c").unwrap();
        assert_eq!(c.worker.as_deref(), Some("b"));
        assert!(c.epoch > first_epoch);
        assert_eq!(fleet.held[&2].get("c"), Some(&c.epoch));
        assert!(fleet.held[&1].is_empty());
    }

    #[test]
    fn restart_keeps_owners_and_epochs_for_workers_that_reattach() {
        let mut reg = Registry::new(timing(), V, 42);
        reg.restore_worker("a", "x", V, false, 0);
        reg.restore_client(spec("c"), Some("a".into()), 41);
        let held = vec![("c".to_string(), 41)];
        let r = reg.register_worker(hello("a", &held), 7, 50).unwrap();
        assert_eq!(r.assignments, vec![(spec("c"), 41)]);
        assert!(
            r.effects
                .durable
                .iter()
                .all(|d| !matches!(d, Durable::Assignment { .. }))
        );
        assert_eq!(reg.next_epoch(), 42);
    }

    #[test]
    fn restored_worker_that_never_returns_loses_its_clients_after_the_lease() {
        let mut reg = Registry::new(timing(), V, 1);
        reg.restore_worker("gone", "x", V, false, 0);
        reg.restore_client(spec("c"), Some("gone".into()), 5);
        reg.register_worker(hello("b", &[]), 1, 0).unwrap();
        assert_eq!(reg.client("c").unwrap().worker.as_deref(), Some("gone"));
        reg.heartbeat(1, 0.0, 399);
        reg.tick(399);
        assert_eq!(reg.client("c").unwrap().worker.as_deref(), Some("gone"));
        reg.heartbeat(1, 0.0, 401);
        reg.tick(401);
        let c = reg.client("c").unwrap();
        assert_eq!(c.worker.as_deref(), Some("b"));
        assert!(c.epoch > 5);
    }

    #[test]
    fn only_a_nodes_current_session_counts() {
        let mut reg = Registry::new(timing(), V, 1);
        reg.add_client(spec("c"), 0).unwrap();
        reg.register_worker(hello("w", &[]), 1, 0).unwrap();
        // The worker dies; a new process under the same id registers on session 2.
        let dead = timing().dead_after() + 1;
        reg.tick(dead);
        reg.register_worker(hello("w", &[]), 2, dead).unwrap();
        assert!(
            !reg.heartbeat(1, 0.5, dead),
            "the old session no longer renews anything"
        );
        assert!(reg.heartbeat(2, 0.5, dead));
        reg.session_closed(1);
        let w = reg.workers().find(|w| w.id == "w").unwrap();
        assert_eq!(w.liveness, Liveness::Alive);
        // An agent replaced by a newer session: the old one closing leaves it up.
        reg.register_agent("c", V, 7, dead).unwrap();
        reg.register_agent("c", V, 8, dead).unwrap();
        assert!(!reg.heartbeat(7, 0.0, dead));
        reg.session_closed(7);
        assert_eq!(reg.client("c").unwrap().agent.as_str(), "up");
        assert!(reg.heartbeat(8, 0.0, dead));
    }

    #[test]
    fn an_agents_hint_goes_to_the_session_of_its_clients_worker() {
        let mut reg = Registry::new(timing(), V, 1);
        let mut fleet = Fleet::default();
        let r = reg.register_worker(hello("w", &[]), 1, 0).unwrap();
        fleet.held.insert(1, BTreeMap::new());
        fleet.apply(&mut reg, r.effects, 0);
        let fx = reg.add_client(spec("c"), 0).unwrap();
        fleet.apply(&mut reg, fx, 0);
        let epoch = reg.client("c").unwrap().epoch;
        assert_eq!(reg.wake_target(9), None, "not an agent (yet)");
        reg.register_agent("c", V, 9, 0).unwrap();
        assert_eq!(reg.wake_target(9), Some((1, "c".to_owned(), epoch)));
        assert_eq!(reg.wake_target(1), None, "a worker's session is no agent");
        reg.session_closed(9);
        assert_eq!(reg.wake_target(9), None, "an old session of the agent");
    }

    #[test]
    fn agent_presence_follows_its_session() {
        let mut reg = Registry::new(timing(), V, 1);
        reg.add_client(spec("c"), 0).unwrap();
        assert!(reg.register_agent("nope", V, 9, 0).is_err());
        reg.register_agent("c", V, 9, 0).unwrap();
        assert_eq!(reg.client("c").unwrap().agent.as_str(), "up");
        reg.session_closed(9);
        assert_eq!(reg.client("c").unwrap().agent.as_str(), "down");
    }

    #[test]
    fn a_complaining_client_moves_to_a_clearly_less_loaded_worker_once() {
        let mut reg = Registry::new(timing(), V, 1);
        let mut fleet = Fleet::default();
        for (s, id) in [(1, "busy"), (2, "idle")] {
            let r = reg.register_worker(hello(id, &[]), s, 0).unwrap();
            fleet.held.insert(s, BTreeMap::new());
            fleet.apply(&mut reg, r.effects, 0);
        }
        let fx = reg.add_client(spec("c"), 0).unwrap();
        fleet.apply(&mut reg, fx, 0);
        let owner = reg.client("c").unwrap().worker.clone().unwrap();
        let (owner_s, other_s) = if owner == "busy" { (1, 2) } else { (2, 1) };
        reg.register_agent("c", V, 9, 0).unwrap();
        let behind = Progress {
            backlog_files: 10,
            oldest_backlog_s: 120,
            behind: true,
            ..Progress::default()
        };
        // Loads too close: no move.
        reg.heartbeat(owner_s, 0.5, 10);
        reg.heartbeat(other_s, 0.4, 10);
        assert!(reg.heartbeat_with_progress(9, 0.0, vec![("c".into(), behind.clone())], 10));
        let fx = reg.tick(10);
        fleet.apply(&mut reg, fx, 10);
        assert_eq!(
            reg.client("c").unwrap().worker.as_deref(),
            Some(owner.as_str())
        );
        // The owner is clearly busier: the client moves by handoff, with a larger epoch.
        let epoch = reg.client("c").unwrap().epoch;
        reg.heartbeat(owner_s, 0.9, 20);
        reg.heartbeat(other_s, 0.1, 20);
        let fx = reg.tick(20);
        fleet.apply(&mut reg, fx, 20);
        let c = reg.client("c").unwrap();
        assert_ne!(c.worker.as_deref(), Some(owner.as_str()));
        assert!(c.epoch > epoch);
        // Still complaining right after: hysteresis keeps it where it is now.
        let moved_to = c.worker.clone();
        reg.heartbeat(owner_s, 0.0, 30);
        reg.heartbeat(other_s, 0.9, 30);
        reg.heartbeat_with_progress(9, 0.0, vec![("c".into(), behind)], 30);
        let fx = reg.tick(30);
        fleet.apply(&mut reg, fx, 30);
        assert_eq!(reg.client("c").unwrap().worker, moved_to);
    }

    #[derive(Debug, Clone)]
    enum Op {
        AddWorker,
        AddClient,
        Heartbeats(u64),
        Crash(usize),
        Leave(usize),
        Drain(usize),
        Undrain(usize),
        Reconnect(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::AddWorker),
            3 => Just(Op::AddClient),
            4 => (10u64..250).prop_map(Op::Heartbeats),
            1 => (0usize..6).prop_map(Op::Crash),
            1 => (0usize..6).prop_map(Op::Leave),
            1 => (0usize..6).prop_map(Op::Drain),
            1 => (0usize..6).prop_map(Op::Undrain),
            1 => (0usize..6).prop_map(Op::Reconnect),
        ]
    }

    proptest! {
        /// Never two owners, never an assignment to a non-alive worker, epochs only grow,
        /// and (once quiet) every client is on an alive worker, balanced within one.
        #[test]
        fn ownership_invariants_hold_under_any_history(ops in proptest::collection::vec(op(), 1..60)) {
            let mut reg = Registry::new(timing(), V, 1);
            let mut fleet = Fleet::default();
            let mut now: Millis = 0;
            let mut next_session: SessionId = 1;
            let mut workers: Vec<(String, Option<SessionId>)> = Vec::new();
            let mut last_epoch: BTreeMap<String, u64> = BTreeMap::new();
            let mut clients = 0;
            for op in ops {
                match op {
                    Op::AddWorker => {
                        let id = format!("w{}", workers.len());
                        let s = next_session; next_session += 1;
                        let r = reg.register_worker(hello(&id, &[]), s, now).unwrap();
                        fleet.held.insert(s, r.assignments.iter().map(|(c, e)| (c.name.clone(), *e)).collect());
                        fleet.apply(&mut reg, r.effects, now);
                        workers.push((id, Some(s)));
                    }
                    Op::AddClient => {
                        let fx = reg.add_client(spec(&format!("c{clients}")), now).unwrap();
                        clients += 1;
                        fleet.apply(&mut reg, fx, now);
                    }
                    Op::Heartbeats(dt) => {
                        now += dt;
                        for (_, s) in &workers {
                            if let Some(s) = s { reg.heartbeat(*s, 0.1, now); }
                        }
                        let fx = reg.tick(now);
                        fleet.apply(&mut reg, fx, now);
                    }
                    Op::Crash(i) | Op::Leave(i) | Op::Drain(i) | Op::Undrain(i) | Op::Reconnect(i) if workers.is_empty() => { let _ = i; }
                    Op::Crash(i) => {
                        let i = i % workers.len();
                        if let Some(s) = workers[i].1.take() {
                            // The process died: it holds nothing from now on, but the
                            // leader must still wait out its lease.
                            fleet.held.remove(&s);
                            let fx = reg.session_closed(s);
                            fleet.apply(&mut reg, fx, now);
                        }
                    }
                    Op::Leave(i) => {
                        let i = i % workers.len();
                        if let Some(s) = workers[i].1.take() {
                            fleet.held.remove(&s);
                            let fx = reg.worker_leaving(s, now);
                            fleet.apply(&mut reg, fx, now);
                        }
                    }
                    Op::Drain(i) | Op::Undrain(i) => {
                        let drain = matches!(op, Op::Drain(_));
                        let i = i % workers.len();
                        let fx = reg.set_draining(&workers[i].0, drain, now).unwrap();
                        fleet.apply(&mut reg, fx, now);
                    }
                    Op::Reconnect(i) => {
                        let i = i % workers.len();
                        if workers[i].1.is_none() {
                            let s = next_session; next_session += 1;
                            match reg.register_worker(hello(&workers[i].0, &[]), s, now) {
                                Ok(r) => {
                                    fleet.held.insert(s, r.assignments.iter().map(|(c, e)| (c.name.clone(), *e)).collect());
                                    fleet.apply(&mut reg, r.effects, now);
                                    workers[i].1 = Some(s);
                                }
                                Err(e) => prop_assert!(false, "refused: {}", e.reason),
                            }
                        }
                    }
                }
                // C1: at most one session holds any client.
                let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
                for held in fleet.held.values() {
                    for c in held.keys() { *holders.entry(c.as_str()).or_default() += 1; }
                }
                for (c, n) in &holders { prop_assert!(*n <= 1, "{c} held by {n} sessions"); }
                // Owners are known, non-dead workers; epochs never go down.
                for (client, owner) in reg.owners() {
                    if let Some(o) = owner {
                        let w = reg.workers().find(|w| w.id == o.worker);
                        prop_assert!(w.is_some_and(|w| w.liveness != Liveness::Dead), "{client} on dead {}", o.worker);
                        let prev = last_epoch.insert(client.to_owned(), o.epoch).unwrap_or(0);
                        prop_assert!(o.epoch >= prev);
                    }
                }
            }
            // Let everything settle: live workers heartbeat for a long while.
            for _ in 0..40 {
                now += 100;
                for (_, s) in &workers { if let Some(s) = s { reg.heartbeat(*s, 0.1, now); } }
                let fx = reg.tick(now);
                fleet.apply(&mut reg, fx, now);
            }
            let eligible: Vec<&Worker> = reg.workers().filter(|w| w.liveness == Liveness::Alive && !w.draining).collect();
            let mut counts: Vec<usize> = eligible.iter().map(|w| reg.owners().filter(|(_, o)| o.is_some_and(|o| o.worker == w.id)).count()).collect();
            if !eligible.is_empty() {
                for (client, owner) in reg.owners() {
                    let o = owner.ok_or_else(|| TestCaseError::fail(format!("{client} unassigned")))?;
                    prop_assert!(eligible.iter().any(|w| w.id == o.worker), "{client} on {}", o.worker);
                    // The worker side agrees.
                    let session = reg.workers().find(|w| w.id == o.worker).and_then(|w| w.session).unwrap();
                    prop_assert_eq!(fleet.held.get(&session).and_then(|h| h.get(client)), Some(&o.epoch));
                }
                counts.sort_unstable();
                prop_assert!(counts[counts.len() - 1] - counts[0] <= 1, "unbalanced {counts:?}");
            }
        }
    }
}

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

mod effects;
mod model;
mod restart;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

pub(crate) use self::effects::{Durable, Effects, Event, Order, Outbound};
#[cfg(test)]
use self::model::Owner;
pub(crate) use self::model::{
    Agent, Client, ClientSpec, Progress, Refusal, SessionId, Worker, WorkerHello,
};
use crate::leader::liveness::{Liveness, Millis, Timing};
use crate::version;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("client {:?} already exists; remove it first or choose another name", crate::text::clip(.0))]
    DuplicateClient(String),
    #[error("unknown client {:?}; list clients with `sqdctl status`", crate::text::clip(.0))]
    UnknownClient(String),
    #[error("unknown worker {:?}; list workers with `sqdctl status`", crate::text::clip(.0))]
    UnknownWorker(String),
    #[error(
        "worker {:?} is {}, not dead: only a dead worker can be forgotten; stop it (or wait for its lease to run out) first",
        crate::text::clip(.0), .1
    )]
    WorkerNotDead(String, &'static str),
}

/// What a worker registration produced.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The complete assignment set to send right after `Registered`.
    pub(crate) assignments: Vec<(ClientSpec, u64)>,
    pub(crate) effects: Effects,
}

pub(crate) struct Registry {
    timing: Timing,
    leader_version: String,
    workers: BTreeMap<String, Worker>,
    clients: BTreeMap<String, Client>,
    next_epoch: u64,
    /// Which node a session belongs to, so a heartbeat finds its node without scanning every
    /// worker and client (at 10,000 agents that scan was most of the leader's CPU). A hint:
    /// every use checks it against the node's own record, so a stale entry cannot misdirect.
    sessions: HashMap<SessionId, SessionOwner>,
    /// Set from a (re)start until every lease of the previous leader has run out.
    reconcile: Option<crate::leader::reconcile::Reconcile>,
}

#[derive(Debug, Clone)]
enum SessionOwner {
    Worker(String),
    Agent(String),
}

impl Registry {
    pub(crate) fn new(timing: Timing, leader_version: &str, next_epoch: u64) -> Self {
        Registry {
            timing,
            leader_version: leader_version.to_owned(),
            workers: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_epoch: next_epoch.max(1),
            sessions: HashMap::new(),
            reconcile: None,
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
    pub(crate) fn wake_target(&self, session: SessionId) -> Option<(SessionId, String, u64)> {
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
    pub(crate) fn restore_worker(
        &mut self,
        id: &str,
        addr: &str,
        version: &str,
        draining: bool,
        now: Millis,
    ) {
        let worker = Worker {
            capacity: u32::MAX,
            draining,
            last_heartbeat: Some(now),
            ..Worker::new(id, addr, version, Liveness::Suspect)
        };
        self.workers.insert(id.to_owned(), worker);
    }

    /// Restores a persisted client with its last owner and epoch.
    pub(crate) fn restore_client(&mut self, spec: ClientSpec, worker: Option<String>, epoch: u64) {
        self.next_epoch = self.next_epoch.max(epoch + 1);
        self.clients
            .insert(spec.name.clone(), Client::new(spec, worker, epoch));
    }

    pub(crate) fn timing(&self) -> Timing {
        self.timing
    }
    pub(crate) fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }
    pub(crate) fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }
    pub(crate) fn client(&self, name: &str) -> Option<&Client> {
        self.clients.get(name)
    }
    #[cfg(test)]
    pub(crate) fn next_epoch(&self) -> u64 {
        self.next_epoch
    }

    pub(crate) fn check_new_client(&self, name: &str) -> Result<(), RegistryError> {
        if self.clients.contains_key(name) {
            return Err(RegistryError::DuplicateClient(name.to_owned()));
        }
        Ok(())
    }

    /// Adds a client and places it at once; its row is persisted with its placement
    /// (`Durable::NewClient` first, in the same transaction).
    pub(crate) fn add_client(
        &mut self,
        spec: ClientSpec,
        now: Millis,
    ) -> Result<Effects, RegistryError> {
        self.check_new_client(&spec.name)?;
        let name = spec.name.clone();
        let mut fx = Effects::default();
        fx.durable.push(Durable::NewClient(Box::new(spec.clone())));
        self.clients
            .insert(name.clone(), Client::new(spec, None, 0));
        fx.extend(self.place_new(&name, now));
        Ok(fx)
    }

    /// Adds many clients at once (`sqdctl add-clients`): all or none, one plan for all of
    /// them, persisted in one transaction by the caller.
    pub(crate) fn add_clients(
        &mut self,
        specs: Vec<ClientSpec>,
        now: Millis,
    ) -> Result<Effects, RegistryError> {
        let mut names = std::collections::HashSet::with_capacity(specs.len());
        for spec in &specs {
            self.check_new_client(&spec.name)?;
            if !names.insert(spec.name.as_str()) {
                return Err(RegistryError::DuplicateClient(spec.name.clone()));
            }
        }
        let mut fx = Effects::default();
        for spec in specs {
            fx.durable.push(Durable::NewClient(Box::new(spec.clone())));
            self.clients
                .insert(spec.name.clone(), Client::new(spec, None, 0));
        }
        fx.extend(self.schedule(now));
        Ok(fx)
    }

    /// Removes a client; its owner is told to stop. The caller persists the removal first.
    pub(crate) fn remove_client(&mut self, name: &str) -> Result<Effects, RegistryError> {
        let client = self
            .clients
            .remove(name)
            .ok_or_else(|| RegistryError::UnknownClient(name.to_owned()))?;
        if let Some(r) = self.reconcile.as_mut() {
            r.forget(name);
        }
        let mut fx = Effects::default();
        if let Some(session) = client.worker.as_deref().and_then(|w| self.session_of(w)) {
            let revoke = Outbound::revoke(client.spec.name.clone(), client.epoch);
            fx.messages.push((session, revoke));
        }
        if let Agent::Up { session, .. } = client.agent {
            fx.messages.push((session, Outbound::Close));
        }
        Ok(fx)
    }

    /// Forgets a dead worker for good (the operator says it never comes back): it leaves the
    /// registry, any client still on record with it is placed afresh, and every worker is
    /// told, so the owners of its former clients adopt its unreleased claims at once.
    pub(crate) fn forget_worker(
        &mut self,
        id: &str,
        now: Millis,
    ) -> Result<Effects, RegistryError> {
        let worker = self
            .workers
            .get(id)
            .ok_or_else(|| RegistryError::UnknownWorker(id.to_owned()))?;
        let state = match worker.last_heartbeat {
            Some(last) => self.timing.judge(worker.liveness, last, now),
            None => worker.liveness,
        };
        if state != Liveness::Dead || worker.session.is_some() {
            let shown = if state == Liveness::Dead {
                "still connected"
            } else {
                crate::leader::liveness::WorkerState::of(state, false, false).as_str()
            };
            return Err(RegistryError::WorkerNotDead(id.to_owned(), shown));
        }
        self.workers.remove(id);
        let mut fx = Effects::default();
        fx.durable.push(Durable::ForgetWorker(id.to_owned()));
        for client in self.clients.values_mut() {
            if client.worker.as_deref() == Some(id) {
                client.worker = None;
                fx.durable.push(Durable::Assignment {
                    client: client.spec.name.clone(),
                    worker: None,
                    epoch: client.epoch,
                });
            }
        }
        let sessions: Vec<SessionId> = self.workers.values().filter_map(|w| w.session).collect();
        for session in sessions {
            fx.messages
                .push((session, Outbound::Forgotten(id.to_owned())));
        }
        fx.extend(self.schedule(now));
        Ok(fx)
    }

    /// Marks a worker draining (or not) and moves its clients away by handoff.
    pub(crate) fn set_draining(
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
        fx.durable.push(worker.durable());
        fx.extend(self.schedule(now));
        Ok(fx)
    }

    /// Handles a worker's `Register`: check its version and id, take the session, confirm
    /// what it still owns, then place clients.
    pub(crate) fn register_worker(
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
            if existing.session.is_some()
                && self
                    .timing
                    .healthy(existing.liveness, existing.last_heartbeat, now)
            {
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
            capacity: hello.capacity,
            draining,
            last_heartbeat: Some(now),
            session: Some(session),
            ..Worker::new(hello.id, hello.addr, hello.version, Liveness::Alive)
        };
        fx.durable.push(worker.durable());
        self.sessions
            .insert(session, SessionOwner::Worker(hello.id.to_owned()));
        self.workers.insert(hello.id.to_owned(), worker);
        self.reconcile_attach(hello.id, hello.held, &mut fx);
        let assignments = self.reconcile_held(&hello, &mut fx);
        // Assignments decided by this schedule reach the worker as separate `Assign`s queued
        // after the set, so each is sent once.
        fx.extend(self.schedule(now));
        Ok(Registration {
            assignments,
            effects: fx,
        })
    }

    /// Reconciles what a (re)registered worker holds: a client in handoff from it that the
    /// new session does not hold is released; everything else it owns is confirmed with its
    /// current epoch.
    fn reconcile_held(
        &mut self,
        hello: &WorkerHello<'_>,
        fx: &mut Effects,
    ) -> Vec<(ClientSpec, u64)> {
        let mut assignments = Vec::new();
        for client in self.clients.values_mut() {
            if client.worker.as_deref() != Some(hello.id) {
                continue;
            }
            if client.releasing_since.is_none() {
                assignments.push((client.spec.clone(), client.epoch));
                continue;
            }
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
        }
        assignments
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
            .or_insert_with(|| Worker::new(hello.id, hello.addr, hello.version, Liveness::Dead));
        entry.version = hello.version.to_owned();
        entry.addr = hello.addr.to_owned();
        entry.refused = Some(reason);
    }

    /// Handles a client agent's `Register`.
    pub(crate) fn register_agent(
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

    #[cfg(test)]
    /// Records a heartbeat. Returns false when the session is unknown (stale or closed).
    pub(crate) fn heartbeat(&mut self, session: SessionId, load: f64, now: Millis) -> bool {
        self.heartbeat_with_progress(session, load, Vec::new(), now)
    }

    /// Records a heartbeat carrying per-client progress.
    pub(crate) fn heartbeat_with_progress(
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

    /// The session's stream broke: its worker is suspect at once (its lease may still run).
    pub(crate) fn session_closed(&mut self, session: SessionId) -> Effects {
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
    pub(crate) fn worker_leaving(&mut self, session: SessionId, now: Millis) -> Effects {
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
    pub(crate) fn released(
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
    pub(crate) fn tick(&mut self, now: Millis) -> Effects {
        let mut fx = self.judge_workers(now);
        self.finish_reconcile(now, &mut fx);
        fx.extend(self.expire_agents(now));
        fx.extend(self.relieve_backlog(now));
        fx.extend(self.schedule(now));
        fx
    }

    /// Silent workers become suspect, then dead; a dead worker's session is closed (C4).
    fn judge_workers(&mut self, now: Millis) -> Effects {
        let mut fx = Effects::default();
        for w in self.workers.values_mut() {
            let Some(last) = w.last_heartbeat else {
                continue;
            };
            let judged = self.timing.judge(w.liveness, last, now);
            if judged == w.liveness {
                continue;
            }
            w.liveness = judged;
            let worker = w.id.clone();
            match judged {
                Liveness::Dead => {
                    fx.events.push(Event::WorkerDead { worker });
                    if let Some(s) = w.session.take() {
                        fx.messages.push((s, Outbound::Close));
                    }
                }
                Liveness::Suspect => fx.events.push(Event::WorkerSuspect { worker }),
                Liveness::Alive => {}
            }
        }
        fx
    }

    /// Agents silent for `lease + grace` are down and their sessions closed.
    fn expire_agents(&mut self, now: Millis) -> Effects {
        let mut fx = Effects::default();
        for c in self.clients.values_mut() {
            if let Agent::Up {
                session,
                last_heartbeat,
            } = c.agent
                && self.timing.agent_expired(last_heartbeat, now)
            {
                c.agent = Agent::Down;
                fx.messages.push((session, Outbound::Close));
                fx.events.push(Event::AgentDown {
                    client: c.spec.name.clone(),
                });
            }
        }
        fx
    }

    #[cfg(test)]
    /// Every client with its current owner, for invariant checks.
    pub(crate) fn owners(&self) -> impl Iterator<Item = (&str, Option<Owner<'_>>)> {
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

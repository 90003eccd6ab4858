//! Turning the scheduler's plan into ownership changes, in named phases: resolve stale
//! handoffs, build the scheduler's input, apply each decision (a handoff from a live owner,
//! or a new owner with a fresh epoch), then check the contract the result must meet (C1, C2,
//! C4, C8).

use std::collections::BTreeMap;

use super::Registry;
use super::effects::{Durable, Effects, Event, Move, Outbound};
use super::model::{Agent, SessionId, Worker};
use crate::leader::liveness::{Liveness, Millis};
use crate::leader::reason::AssignmentReason;
use crate::leader::scheduler::{self, Candidate, CandidateRole, Decision, MoveReason, Placement};

/// A complaining client moves only to a worker whose load index is lower by this much.
const BACKLOG_LOAD_MARGIN: f64 = 0.2;
/// After a move for backlog, the client stays put for this many leases.
const BACKLOG_HYSTERESIS_LEASES: u64 = 20;

impl Registry {
    /// Runs the scheduler and turns its plan into ownership changes.
    pub(super) fn schedule(&mut self, now: Millis) -> Effects {
        let before = cfg!(debug_assertions).then(|| self.epochs());
        self.resolve_stale_handoffs();
        let (candidates, placements) = self.scheduler_input();
        let plan = scheduler::plan(&candidates, &placements, self.timing.max_moves_per_tick);
        let mut fx = Effects::default();
        let epoch_before = self.next_epoch;
        for decision in plan {
            self.apply_decision(decision, now, &mut fx);
        }
        if self.next_epoch != epoch_before {
            fx.durable.push(Durable::NextEpoch(self.next_epoch));
        }
        if let Some(before) = before {
            self.check_contract(&before, &fx);
        }
        fx
    }

    /// Places one new client without planning every client: one pass counting who holds
    /// what (no clones), then the choice [`scheduler::place_new`] makes, which is the whole
    /// plan's choice. Rebalancing waits for the next tick's plan, as it would anyway. Falls
    /// back to the whole plan when another client waits for a worker (it places all at once,
    /// C4).
    pub(super) fn place_new(&mut self, client: &str, now: Millis) -> Effects {
        let candidates = self.candidates();
        let Some((held, in_transit)) = self.held_counts(&candidates, client) else {
            return self.schedule(now);
        };
        let to = scheduler::place_new(&candidates, &held, in_transit).map(str::to_owned);
        let mut fx = Effects::default();
        if to.is_some() {
            self.reassign(client, None, to, MoveReason::Place, &mut fx);
            fx.durable.push(Durable::NextEpoch(self.next_epoch));
        }
        fx
    }

    /// Clients per eligible worker and clients in handoff, other than `new`; `None` when a
    /// client other than `new` has no usable worker.
    fn held_counts<'a>(
        &'a self,
        candidates: &[Candidate],
        new: &str,
    ) -> Option<(BTreeMap<&'a str, usize>, usize)> {
        let roles: BTreeMap<&str, CandidateRole> =
            candidates.iter().map(|c| (c.id.as_str(), c.role)).collect();
        let mut held = BTreeMap::new();
        let mut in_transit = 0;
        for c in self.clients.values() {
            if c.spec.name == new {
                continue;
            }
            if c.releasing_since.is_some() || self.is_frozen(&c.spec.name) {
                in_transit += 1;
                continue;
            }
            let worker = c.worker.as_deref()?;
            match roles.get(worker)? {
                CandidateRole::Eligible => *held.entry(worker).or_insert(0) += 1,
                CandidateRole::Pinned => {}
            }
        }
        Some((held, in_transit))
    }

    /// A handoff that was never confirmed resolves when the old owner is dead or gone: its
    /// lease (renewed by heartbeats it kept sending) would have had to lapse anyway.
    fn resolve_stale_handoffs(&mut self) {
        for c in self.clients.values_mut() {
            if c.releasing_since.is_none() {
                continue;
            }
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

    fn candidates(&self) -> Vec<Candidate> {
        self.workers
            .values()
            .filter_map(|w| {
                Some(Candidate {
                    id: w.id.clone(),
                    role: candidate_role(w)?,
                    capacity: w.capacity,
                    load: w.load,
                })
            })
            .collect()
    }

    fn scheduler_input(&self) -> (Vec<Candidate>, Vec<Placement>) {
        let placements = self
            .clients
            .values()
            .map(|c| Placement {
                client: c.spec.name.clone(),
                worker: c.worker.clone(),
                frozen: c.releasing_since.is_some() || self.is_frozen(&c.spec.name),
                avoid: c.avoid.clone(),
            })
            .collect();
        (self.candidates(), placements)
    }

    fn apply_decision(&mut self, d: Decision, now: Millis, fx: &mut Effects) {
        let from_live = d.from.as_deref().is_some_and(|w| self.is_live_owner(w));
        match d.from {
            Some(from) if from_live => {
                let reason = match d.reason {
                    MoveReason::Rebalance => AssignmentReason::Rebalance,
                    MoveReason::Place => AssignmentReason::Drain,
                };
                // The next owner is chosen only once the live owner released the client (C1).
                self.start_handoff(&d.client, from, reason, now, fx);
            }
            from => self.reassign(&d.client, from, d.to, d.reason, fx),
        }
    }

    /// Asks the live owner `from` to release `client`; the next placement is reported as a
    /// move from it for `reason`.
    fn start_handoff(
        &mut self,
        client: &str,
        from: String,
        reason: AssignmentReason,
        now: Millis,
        fx: &mut Effects,
    ) {
        let session = self.session_of(&from);
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        c.releasing_since = Some(now);
        if let Some(session) = session {
            let revoke = Outbound::revoke(client.to_owned(), c.epoch);
            fx.messages.push((session, revoke));
        }
        c.handoff = Some((from.clone(), reason));
        fx.events.push(Event::ReleaseRequested {
            client: client.to_owned(),
            worker: from,
            reason,
        });
    }

    /// Gives `client` to `to` under a fresh epoch (C2), or leaves it unassigned.
    fn reassign(
        &mut self,
        client: &str,
        from: Option<String>,
        to: Option<String>,
        why: MoveReason,
        fx: &mut Effects,
    ) {
        let session = to.as_deref().and_then(|w| self.session_of(w));
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let first_placement = c.epoch == 0;
        if to.is_some() {
            c.epoch = self.next_epoch;
            self.next_epoch += 1;
            c.avoid = None;
        }
        c.worker.clone_from(&to);
        fx.durable.push(Durable::Assignment {
            client: client.to_owned(),
            worker: to.clone(),
            epoch: c.epoch,
        });
        if let Some(session) = session {
            let assign = Outbound::assign(c.spec.clone(), c.epoch);
            fx.messages.push((session, assign));
        }
        let (from, reason) = move_reason(from, why, c.handoff.take(), first_placement, &to);
        fx.events.push(Event::Moved(Move {
            client: client.to_owned(),
            from,
            to,
            epoch: c.epoch,
            reason,
        }));
    }

    /// Clients whose agent complains while their worker is clearly busier than another one:
    /// hand them off (at most one per tick, and not again within the hysteresis window).
    pub(super) fn relieve_backlog(&mut self, now: Millis) -> Effects {
        let mut fx = Effects::default();
        let hysteresis = self
            .timing
            .lease_ms
            .saturating_mul(BACKLOG_HYSTERESIS_LEASES);
        let eligible: Vec<(String, f64)> = self
            .workers
            .values()
            .filter(|w| candidate_role(w) == Some(CandidateRole::Eligible))
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
        c.backlog_move_at = Some(now);
        c.avoid = Some(owner.clone());
        let name = c.spec.name.clone();
        self.start_handoff(&name, owner, AssignmentReason::Backlog, now, &mut fx);
        fx
    }

    fn epochs(&self) -> BTreeMap<String, u64> {
        self.clients
            .values()
            .map(|c| (c.spec.name.clone(), c.epoch))
            .collect()
    }

    /// The contract a schedule leaves behind (debug builds only; the proptests in `tests.rs`
    /// drive it through every history they generate).
    fn check_contract(&self, before: &BTreeMap<String, u64>, fx: &Effects) {
        for c in self.clients.values() {
            debug_assert!(
                c.epoch < self.next_epoch,
                "{}: epoch {} not below the counter",
                c.spec.name,
                c.epoch
            );
            // Every owned client is on a worker that may keep it, or is being handed off.
            debug_assert!(
                c.worker
                    .as_deref()
                    .is_none_or(|w| c.releasing_since.is_some()
                        || self.workers.get(w).and_then(candidate_role).is_some()),
                "{} left on {:?}",
                c.spec.name,
                c.worker
            );
        }
        let mut assigned = BTreeMap::new();
        for event in &fx.events {
            let Event::Moved(m) = event else { continue };
            let Some(to) = &m.to else { continue };
            // A new owner is alive, not draining and connected; its epoch strictly grew.
            debug_assert!(
                self.workers.get(to).and_then(candidate_role) == Some(CandidateRole::Eligible),
                "{} given to {to}, which may not take clients",
                m.client
            );
            debug_assert!(
                before.get(&m.client).is_none_or(|old| m.epoch > *old),
                "{}: epoch {} did not grow",
                m.client,
                m.epoch
            );
            // No client is given to two workers by one schedule.
            debug_assert!(
                assigned.insert(&m.client, to).is_none(),
                "{} assigned twice",
                m.client
            );
        }
    }

    pub(super) fn session_of(&self, worker: &str) -> Option<SessionId> {
        self.workers.get(worker).and_then(|w| w.session)
    }

    fn is_live_owner(&self, worker: &str) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.liveness != Liveness::Dead && w.session.is_some())
    }
}

/// What the scheduler may do with a worker: give it clients, only leave its clients where
/// they are, or (`None`) move its clients away.
pub(super) fn candidate_role(w: &Worker) -> Option<CandidateRole> {
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

/// Where a reassigned client is reported to come from, and why.
fn move_reason(
    from: Option<String>,
    why: MoveReason,
    handoff: Option<(String, AssignmentReason)>,
    first_placement: bool,
    to: &Option<String>,
) -> (Option<String>, AssignmentReason) {
    match (from, why, handoff, to) {
        (from, _, _, None) => (from, AssignmentReason::Unassigned),
        (None, _, Some((from, why)), _) => (Some(from), why),
        (None, _, None, _) if first_placement => (None, AssignmentReason::New),
        (None, _, None, _) => (None, AssignmentReason::Placed),
        (Some(from), MoveReason::Place, _, _) => (Some(from), AssignmentReason::Failover),
        (Some(from), MoveReason::Rebalance, _, _) => (Some(from), AssignmentReason::Rebalance),
    }
}

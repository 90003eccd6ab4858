//! The registry's side of a (re)start: the state's assignments stay unconfirmed until the
//! workers say what they hold (the rules are in [`crate::leader::reconcile`]), clients that
//! may still be held elsewhere stay frozen, and epochs start above anything a worker reports
//! (C1, C2 after a restore from a backup).

use super::Registry;
use super::effects::{Durable, Effects, Event, Move, Outbound};
use crate::leader::liveness::Millis;
use crate::leader::reason::AssignmentReason;
use crate::leader::reconcile::Reconcile;

impl Registry {
    /// Starts reconciling the state just restored. `stale`: the state is known to be older
    /// than the cluster (restored from a backup), so nothing in it is confirmed before every
    /// lease the previous leader granted has run out.
    pub(crate) fn begin_reconcile(&mut self, now: Millis, stale: bool) -> Effects {
        let state = self
            .clients
            .values()
            .map(|c| (c.spec.name.clone(), c.worker.clone(), c.epoch));
        let reconcile =
            Reconcile::new(now, self.timing.dead_after(), stale, self.next_epoch, state);
        let mut fx = Effects::default();
        if stale {
            self.freeze_pending(&reconcile, &mut fx);
        }
        self.raise_epoch_floor(reconcile.floor(), &mut fx);
        self.reconcile = Some(reconcile);
        fx
    }

    /// A client the reconcile holds back: neither sent to a worker nor placed.
    pub(crate) fn is_frozen(&self, client: &str) -> bool {
        self.reconcile.as_ref().is_some_and(|r| r.is_frozen(client))
    }

    /// What a re-attaching worker holds decides what it keeps; what it shows about the state
    /// (an epoch newer than the state's) may freeze clients confirmed to others.
    pub(super) fn reconcile_attach(
        &mut self,
        worker: &str,
        held: &[(String, u64)],
        fx: &mut Effects,
    ) {
        let Some(mut reconcile) = self.reconcile.take() else {
            return;
        };
        let was_stale = reconcile.stale();
        let attach = reconcile.attach(worker, held);
        for (client, epoch) in attach.keep {
            let Some(c) = self.clients.get_mut(&client) else {
                continue;
            };
            if c.worker.as_deref() != Some(worker) || c.epoch != epoch {
                c.worker = Some(worker.to_owned());
                c.epoch = epoch;
                fx.durable.push(Durable::Assignment {
                    client,
                    worker: Some(worker.to_owned()),
                    epoch,
                });
            }
        }
        for (client, other, epoch) in attach.revoke {
            if let Some(session) = self.session_of(&other) {
                fx.messages
                    .push((session, Outbound::revoke(client.clone(), epoch)));
            }
        }
        if reconcile.stale() && !was_stale {
            fx.events.push(Event::StaleState {
                worker: worker.to_owned(),
            });
            self.freeze_pending(&reconcile, fx);
        }
        self.raise_epoch_floor(reconcile.floor(), fx);
        self.reconcile = Some(reconcile);
    }

    /// Frozen clients have no owner until the reconcile ends; their epoch stays for the audit.
    fn freeze_pending(&mut self, reconcile: &Reconcile, fx: &mut Effects) {
        for c in self.clients.values_mut() {
            if !reconcile.is_frozen(&c.spec.name) {
                continue;
            }
            if let Some(from) = c.worker.take() {
                c.releasing_since = None;
                fx.durable.push(Durable::Assignment {
                    client: c.spec.name.clone(),
                    worker: None,
                    epoch: c.epoch,
                });
                fx.events.push(Event::Moved(Move {
                    client: c.spec.name.clone(),
                    from: Some(from),
                    to: None,
                    epoch: c.epoch,
                    reason: AssignmentReason::Restore,
                }));
            }
        }
    }

    fn raise_epoch_floor(&mut self, floor: u64, fx: &mut Effects) {
        if floor > self.next_epoch {
            self.next_epoch = floor;
            fx.durable.push(Durable::NextEpoch(floor));
        }
    }

    /// Ends the reconcile once every lease the previous leader granted has run out: what is
    /// still frozen is placed afresh by the schedule that follows.
    pub(super) fn finish_reconcile(&mut self, now: Millis, fx: &mut Effects) {
        let Some(reconcile) = self.reconcile.as_mut() else {
            return;
        };
        let stale = reconcile.stale();
        let Some(frozen) = reconcile.finish(now) else {
            return;
        };
        self.reconcile = None;
        fx.events.push(Event::Reconciled {
            stale,
            frozen: frozen.len(),
        });
        if stale {
            fx.durable.push(Durable::RestoreDone);
        }
    }
}

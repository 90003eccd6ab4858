//! After a leader (re)start: which re-attaching worker may keep which client, so that a state
//! older than the cluster (a restored backup, a rewound etcd) never makes two owners (C1) nor
//! hands out an epoch a worker already holds (C2).
//!
//! The state's assignments are *unconfirmed* until the workers say what they hold. While the
//! state is trusted (the usual `kill -9` restart: persist-before-send makes its epochs the
//! newest ever issued), a worker keeps what it reports at the state's epoch, and what the state
//! gives it. Once the state is known to be stale — the operator said so (`leader restore`), the
//! state file was swapped under the state dir, or a worker reports an epoch newer than the
//! state's — nothing from the state is confirmed: every worker that might hold a client with a
//! valid lease got its lease from the previous leader, so all such leases have run out by
//! `start + lease + grace`; until then the clients are frozen, and afterwards they are placed
//! afresh with epochs above everything any worker reported.
//!
//! Pure: time comes in as `now`, the caller carries out what the answers say.

use std::collections::BTreeMap;

/// Leader-monotonic milliseconds.
pub type Millis = u64;

/// Margin added to the epoch counter of a state known to be stale: epochs issued after it was
/// saved to workers that never re-attach are not reported, and must not be issued again.
pub const STALE_EPOCH_MARGIN: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// From the state, not yet confirmed: the state's owner and epoch.
    Pending { owner: Option<String>, epoch: u64 },
    /// Confirmed to a worker that re-attached, under this epoch.
    Kept { worker: String, epoch: u64 },
}

/// What a re-attaching worker is told, and what the others must be told because of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attach {
    /// Clients this worker keeps, with the epoch its assignment set carries.
    pub keep: Vec<(String, u64)>,
    /// Clients confirmed earlier to *other* workers that must be revoked there: this attach
    /// showed that the state was stale, so those confirmations proved nothing.
    pub revoke: Vec<(String, String, u64)>,
}

#[derive(Debug, Clone)]
pub struct Reconcile {
    until: Millis,
    stale: bool,
    floor: u64,
    clients: BTreeMap<String, Entry>,
}

impl Reconcile {
    /// `state` lists every client of the loaded state with its owner and epoch; `next_epoch`
    /// is the state's counter; `window` is `lease + grace`.
    pub fn new(
        now: Millis,
        window: Millis,
        stale: bool,
        next_epoch: u64,
        state: impl IntoIterator<Item = (String, Option<String>, u64)>,
    ) -> Self {
        let clients: BTreeMap<String, Entry> = state
            .into_iter()
            .map(|(client, owner, epoch)| (client, Entry::Pending { owner, epoch }))
            .collect();
        let highest = clients
            .values()
            .map(|e| match e {
                Entry::Pending { epoch, .. } | Entry::Kept { epoch, .. } => *epoch,
            })
            .max()
            .unwrap_or(0);
        let mut floor = next_epoch.max(highest + 1).max(1);
        if stale {
            floor = floor.saturating_add(STALE_EPOCH_MARGIN);
        }
        Reconcile {
            until: now.saturating_add(window),
            stale,
            floor,
            clients,
        }
    }

    /// The smallest epoch the leader may hand out next.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Whether the state turned out (or was declared) older than the cluster.
    pub fn stale(&self) -> bool {
        self.stale
    }

    /// A client that must be neither sent to anyone nor placed yet.
    pub fn is_frozen(&self, client: &str) -> bool {
        matches!(self.clients.get(client), Some(Entry::Pending { .. }))
    }

    /// A client added or removed while the window runs is not the state's concern any more.
    pub fn forget(&mut self, client: &str) {
        self.clients.remove(client);
    }

    /// A worker re-attached holding `held` (client, epoch).
    pub fn attach(&mut self, worker: &str, held: &[(String, u64)]) -> Attach {
        if let Some(top) = held.iter().map(|(_, e)| *e).max() {
            self.floor = self.floor.max(top.saturating_add(1));
        }
        let mut out = Attach::default();
        if !self.stale && self.reveals_stale(worker, held) {
            self.turn_stale(&mut out);
        }
        for (client, epoch) in held {
            self.note_held(worker, client, *epoch, &mut out);
        }
        if !self.stale {
            // A trusted state: what it gives this worker is this worker's, held or not (no
            // one else can hold a newer epoch of it).
            for (client, entry) in self.clients.iter_mut() {
                if let Entry::Pending {
                    owner: Some(owner),
                    epoch,
                } = entry
                    && owner == worker
                {
                    let epoch = *epoch;
                    out.keep.push((client.clone(), epoch));
                    *entry = Entry::Kept {
                        worker: worker.to_owned(),
                        epoch,
                    };
                }
            }
        }
        out.keep.sort();
        out.keep.dedup();
        out
    }

    /// A held epoch newer than the state's, or newer than a confirmation made from the state:
    /// the state is older than the cluster.
    fn reveals_stale(&self, worker: &str, held: &[(String, u64)]) -> bool {
        held.iter()
            .any(|(client, e)| match self.clients.get(client) {
                Some(Entry::Pending { epoch, .. }) => e > epoch,
                Some(Entry::Kept { worker: w, epoch }) => e > epoch && w != worker,
                None => false,
            })
    }

    fn turn_stale(&mut self, out: &mut Attach) {
        self.stale = true;
        self.floor = self.floor.saturating_add(STALE_EPOCH_MARGIN);
        for (client, entry) in self.clients.iter_mut() {
            if let Entry::Kept { worker, epoch } = entry {
                out.revoke.push((client.clone(), worker.clone(), *epoch));
                *entry = Entry::Pending {
                    owner: None,
                    epoch: *epoch,
                };
            }
        }
    }

    fn note_held(&mut self, worker: &str, client: &str, held: u64, out: &mut Attach) {
        let Some(entry) = self.clients.get_mut(client) else {
            return;
        };
        match entry {
            Entry::Kept { worker: w, epoch } if w == worker && held >= *epoch => {
                out.keep.push((client.to_owned(), *epoch));
            }
            Entry::Kept { .. } => {}
            Entry::Pending { owner, epoch } => {
                if !self.stale && held == *epoch && owner.as_deref() == Some(worker) {
                    let epoch = *epoch;
                    out.keep.push((client.to_owned(), epoch));
                    *entry = Entry::Kept {
                        worker: worker.to_owned(),
                        epoch,
                    };
                }
            }
        }
    }

    /// Ends the window once `now` reached it: the clients still frozen, to be placed afresh
    /// with epochs from [`Reconcile::floor`]. `None` while the window runs.
    pub fn finish(&mut self, now: Millis) -> Option<Vec<String>> {
        if now < self.until {
            return None;
        }
        let frozen = self
            .clients
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Pending { .. }))
            .map(|(c, _)| c.clone())
            .collect();
        self.clients.clear();
        Some(frozen)
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;

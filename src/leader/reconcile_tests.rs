use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn held(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items.iter().map(|(c, e)| (c.to_string(), *e)).collect()
}

fn state(items: &[(&str, Option<&str>, u64)]) -> Vec<(String, Option<String>, u64)> {
    items
        .iter()
        .map(|(c, w, e)| (c.to_string(), w.map(str::to_owned), *e))
        .collect()
}

#[test]
fn a_trusted_restart_keeps_what_workers_hold_and_what_the_state_gives_them() {
    let mut r = Reconcile::new(
        0,
        1_000,
        false,
        10,
        state(&[("c1", Some("w1"), 4), ("c2", Some("w1"), 6)]),
    );
    let a = r.attach("w1", &held(&[("c1", 4)]));
    assert_eq!(a.keep, held(&[("c1", 4), ("c2", 6)]));
    assert!(a.revoke.is_empty());
    assert!(!r.is_frozen("c1") && !r.is_frozen("c2"));
    assert_eq!(r.floor(), 10);
}

#[test]
fn an_older_held_epoch_is_not_confirmed() {
    let mut r = Reconcile::new(0, 1_000, false, 10, state(&[("c1", Some("w1"), 4)]));
    let a = r.attach("w2", &held(&[("c1", 3)]));
    assert!(a.keep.is_empty());
    assert!(
        r.is_frozen("c1"),
        "the state's owner w1 has not re-attached yet"
    );
}

#[test]
fn a_newer_held_epoch_reveals_a_stale_state_and_revokes_what_was_confirmed() {
    // The backup says w1 holds c1@4 and c2@6; the cluster moved on: w2 holds c1@17.
    let mut r = Reconcile::new(
        0,
        1_000,
        false,
        10,
        state(&[("c1", Some("w1"), 4), ("c2", Some("w1"), 6)]),
    );
    let a = r.attach("w1", &held(&[]));
    assert_eq!(a.keep, held(&[("c1", 4), ("c2", 6)]));
    let b = r.attach("w2", &held(&[("c1", 17)]));
    assert!(b.keep.is_empty());
    assert_eq!(
        b.revoke,
        vec![("c1".into(), "w1".into(), 4), ("c2".into(), "w1".into(), 6)]
    );
    assert!(r.stale() && r.is_frozen("c1") && r.is_frozen("c2"));
    assert!(r.floor() >= 18 + STALE_EPOCH_MARGIN);
}

#[test]
fn a_declared_restore_confirms_nothing_until_the_window_ends() {
    let mut r = Reconcile::new(100, 1_000, true, 10, state(&[("c1", Some("w1"), 4)]));
    assert!(r.attach("w1", &held(&[("c1", 4)])).keep.is_empty());
    assert!(r.is_frozen("c1"));
    assert_eq!(r.finish(1_099), None);
    assert_eq!(r.finish(1_100), Some(vec!["c1".to_string()]));
    assert!(!r.is_frozen("c1"));
    assert!(r.floor() > 10 + STALE_EPOCH_MARGIN - 1);
}

#[test]
fn the_floor_passes_every_reported_epoch() {
    let mut r = Reconcile::new(0, 1_000, false, 3, state(&[]));
    r.attach("w9", &held(&[("gone", 41)]));
    assert_eq!(r.floor(), 42);
}

/// One generated history: the live cluster's truth and an older snapshot of it.
#[derive(Debug, Clone)]
struct History {
    /// Per client: the epochs each worker still holds (the largest is the one real owner,
    /// whose lease may still be valid; the others are fenced leftovers).
    holders: BTreeMap<String, BTreeMap<String, u64>>,
    /// The state loaded by the leader: owner and epoch per client, older than the truth.
    state: Vec<(String, Option<String>, u64)>,
    counter_then: u64,
    counter_now: u64,
    /// Order in which workers re-attach (a worker may re-attach twice, or never).
    attaches: Vec<String>,
}

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];

fn history() -> impl Strategy<Value = History> {
    let client = (
        proptest::collection::vec((0usize..4, 1u64..60), 0..4),
        proptest::option::of(0usize..4),
        0u64..60,
    );
    (
        proptest::collection::vec(client, 1..6),
        proptest::collection::vec(0usize..4, 0..8),
        0u64..40,
    )
        .prop_map(|(clients, order, extra)| {
            let mut holders = BTreeMap::new();
            let mut state = Vec::new();
            let mut top = 0;
            for (i, (held, owner, snap)) in clients.into_iter().enumerate() {
                let name = format!("c{i}");
                let mut by_worker = BTreeMap::new();
                for (w, e) in held {
                    by_worker.insert(WORKERS[w].to_string(), e);
                }
                // The snapshot's epoch is never newer than any epoch issued since.
                let newest = by_worker.values().copied().max().unwrap_or(0);
                let snap = snap.min(newest.max(1));
                top = top.max(newest).max(snap);
                state.push((name.clone(), owner.map(|w| WORKERS[w].to_string()), snap));
                holders.insert(name, by_worker);
            }
            let counter_then = state.iter().map(|s| s.2).max().unwrap_or(0) + 1;
            History {
                holders,
                state,
                counter_then,
                counter_now: top + 1 + extra,
                attaches: order.into_iter().map(|w| WORKERS[w].to_string()).collect(),
            }
        })
}

fn held_by(h: &History, worker: &str) -> Vec<(String, u64)> {
    h.holders
        .iter()
        .filter_map(|(c, by)| by.get(worker).map(|e| (c.clone(), *e)))
        .collect()
}

proptest! {
    /// After a declared restore to any older state, whatever the workers hold and in whatever
    /// order they re-attach, nothing is confirmed during the window (any worker not yet heard
    /// from may hold a valid lease), and every epoch handed out afterwards is above every
    /// epoch any worker ever held.
    #[test]
    fn a_restore_never_makes_two_owners_nor_reuses_an_epoch(h in history()) {
        let mut r = Reconcile::new(0, 1_000, true, h.counter_then, h.state.clone());
        for w in &h.attaches {
            let a = r.attach(w, &held_by(&h, w));
            prop_assert!(a.keep.is_empty(), "confirmed during the window of a restore: {:?}", a.keep);
        }
        let frozen = r.finish(1_000).unwrap_or_default();
        prop_assert_eq!(frozen.len(), h.state.len());
        prop_assert!(r.floor() >= h.counter_now, "floor {} <= an issued epoch {}", r.floor(), h.counter_now);
    }

    /// A restart from a state that is not older than the cluster (the usual kill -9): each
    /// client is confirmed to at most one worker, always to the one the state names, and a
    /// stale copy elsewhere is never confirmed.
    #[test]
    fn a_trusted_restart_confirms_one_owner_per_client(h in history()) {
        // Make the state the truth: its owner holds its epoch (or nothing), everyone else older.
        let mut truth = h.clone();
        for (client, owner, epoch) in truth.state.iter_mut() {
            let by = truth.holders.get_mut(client.as_str()).map(std::mem::take).unwrap_or_default();
            let mut fixed = BTreeMap::new();
            for (w, e) in by {
                if Some(&w) == owner.as_ref() { fixed.insert(w, *epoch); }
                else { fixed.insert(w, e.min(epoch.saturating_sub(1))); }
            }
            truth.holders.insert(client.clone(), fixed);
        }
        let counter = truth.state.iter().map(|s| s.2).max().unwrap_or(0) + 1;
        let mut r = Reconcile::new(0, 1_000, false, counter, truth.state.clone());
        let mut confirmed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for w in &truth.attaches {
            let a = r.attach(w, &held_by(&truth, w));
            prop_assert!(a.revoke.is_empty());
            for (c, e) in a.keep {
                let (_, owner, epoch) = truth.state.iter().find(|s| s.0 == c).cloned().unwrap_or_default();
                prop_assert_eq!(owner.as_deref(), Some(w.as_str()));
                prop_assert_eq!(e, epoch);
                confirmed.entry(c).or_default().insert(w.clone());
            }
        }
        for (c, ws) in &confirmed {
            prop_assert!(ws.len() == 1, "{} confirmed to {:?}", c, ws);
        }
        prop_assert!(!r.stale());
    }

    /// An undeclared stale state: once any worker reports an epoch newer than the state's,
    /// every confirmation made from the state is revoked, and no later attach confirms
    /// anything; epochs handed out afterwards pass every reported one.
    #[test]
    fn evidence_of_a_stale_state_revokes_and_freezes(h in history()) {
        let mut r = Reconcile::new(0, 1_000, false, h.counter_then, h.state.clone());
        let mut live: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut reported = 0;
        for w in &h.attaches {
            let mine = held_by(&h, w);
            reported = mine.iter().map(|x| x.1).max().unwrap_or(0).max(reported);
            let was_stale = r.stale();
            let a = r.attach(w, &mine);
            for (c, other, e) in &a.revoke {
                prop_assert_eq!(live.remove(c), Some((other.clone(), *e)));
            }
            if was_stale || r.stale() {
                prop_assert!(a.keep.is_empty());
                prop_assert!(live.is_empty());
            }
            for (c, e) in a.keep {
                if let Some((other, _)) = live.get(&c) {
                    prop_assert_eq!(other, w, "{} confirmed to two workers", c);
                }
                live.insert(c, (w.clone(), e));
            }
            prop_assert!(r.floor() > reported);
        }
    }
}

//! Notifications: what the evaluator emits on each state change, with the JSON shape followers
//! and the leader's store see (keys are only ever added, never renamed or removed):
//! `{"id", "rule", "state", "labels", "value", "threshold", "severity", "ts_unix_ms",
//! "since_unix_ms", "annotation"}`; and the bounded in-memory [`Backlog`] followers read by id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The state change a notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition started holding; the rule's `for` has not elapsed yet.
    Pending,
    /// The condition held for `for`: the alert fires (once per episode).
    Firing,
    /// The episode ended: a firing alert cleared (after `keep_firing_for`, against the clear
    /// threshold), or a pending one stopped holding before `for` elapsed.
    Resolved,
    /// The rule cannot be evaluated: its answer was partial. Rule-wide, labels are the rule's
    /// own; sent once when the rule turns unknown, not every round it stays so.
    Unknown,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Unknown => "unknown",
        }
    }
}

/// One notification. `value` is `null` when the series is absent from the answer (or its value
/// is not finite, which JSON cannot carry); `since_unix_ms` is when what it reports began:
/// pending → the condition first held; firing and resolved → when the episode fired (when a
/// pending episode resolves without firing: when it became pending); unknown → `ts_unix_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Strictly increasing across restarts (the counter is in the evaluator's snapshot), so a
    /// follower resumes with "everything after id N" without gaps or duplicates.
    pub id: u64,
    pub rule: String,
    pub state: AlertState,
    /// The series' labels plus the rule's extra `labels`.
    pub labels: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub threshold: f64,
    pub severity: String,
    pub ts_unix_ms: i64,
    pub since_unix_ms: i64,
    pub annotation: String,
}

/// JSON cannot carry NaN or ±Inf; they are reported as `null`.
pub fn finite(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// The last `cap` notifications in memory, for followers that resume by id (hazard 36): a
/// follower too slow for the buffer is told how many it lost (to fetch from the store or to
/// report), instead of the evaluator waiting for it or the buffer growing without bound.
#[derive(Debug, Clone)]
pub struct Backlog {
    cap: usize,
    items: std::collections::VecDeque<Notification>,
}

/// What a follower gets after the id it last saw.
#[derive(Debug, Clone, PartialEq)]
pub struct After<'a> {
    /// Notifications that left the buffer before the follower read them.
    pub lost: u64,
    pub items: Vec<&'a Notification>,
}

impl Backlog {
    pub fn new(cap: usize) -> Self {
        Backlog {
            cap: cap.max(1),
            items: std::collections::VecDeque::new(),
        }
    }

    /// Appends notifications in id order, dropping the oldest beyond the cap.
    pub fn push(&mut self, n: Notification) {
        debug_assert!(
            self.items.back().is_none_or(|b| b.id < n.id),
            "ids increase"
        );
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(n);
    }

    /// Everything after `last_seen` (0: from the start), and how many are gone.
    pub fn after(&self, last_seen: u64) -> After<'_> {
        let lost = self
            .items
            .front()
            .map_or(0, |f| f.id.saturating_sub(last_seen.saturating_add(1)));
        let items = self.items.iter().filter(|n| n.id > last_seen).collect();
        After { lost, items }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64) -> Notification {
        Notification {
            id,
            rule: "r".to_owned(),
            state: AlertState::Firing,
            labels: BTreeMap::new(),
            value: None,
            threshold: 0.0,
            severity: "warning".to_owned(),
            ts_unix_ms: 0,
            since_unix_ms: 0,
            annotation: String::new(),
        }
    }

    #[test]
    fn a_slow_follower_is_told_what_it_lost() {
        let mut b = Backlog::new(3);
        for id in 1..=5 {
            b.push(n(id));
        }
        let ids = |a: After<'_>| (a.lost, a.items.iter().map(|n| n.id).collect::<Vec<_>>());
        assert_eq!(ids(b.after(0)), (2, vec![3, 4, 5]));
        assert_eq!(ids(b.after(2)), (0, vec![3, 4, 5]));
        assert_eq!(ids(b.after(4)), (0, vec![5]));
        assert_eq!(ids(b.after(5)), (0, vec![]));
        assert_eq!(ids(Backlog::new(3).after(7)), (0, vec![]));
    }
}

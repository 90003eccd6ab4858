//! Followers of the notification stream (`FollowAlerts{since}`): the last notifications in a
//! bounded in-memory [`Backlog`], a watch that wakes followers when one is published, and the
//! catch-up rule: what a follower missed is read from the store's log (by id, so a reconnect
//! with `since` sees each notification exactly once); only what the log no longer holds is
//! reported as lost, with the count.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::alerts::Notification;
use crate::alerts::notify::Backlog;

/// Notifications kept in memory for followers.
pub(crate) const BACKLOG: usize = 10_000;

/// One item of a follower's stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A notification: its id and its JSON line (the same text as in `alerts.jsonl`).
    Note(u64, String),
    /// `count` notifications after the follower's last id are gone for good.
    Lost(u64),
}

#[derive(Clone)]
pub(crate) struct Hub {
    backlog: Arc<Mutex<Backlog>>,
    published: watch::Sender<u64>,
}

impl Hub {
    pub(crate) fn new(last_id: u64) -> Self {
        Hub {
            backlog: Arc::new(Mutex::new(Backlog::new(BACKLOG))),
            published: watch::Sender::new(last_id),
        }
    }

    /// Publishes notifications already durable (in the store and the jsonl file).
    pub(crate) fn publish(&self, notes: &[Notification]) {
        let Some(last) = notes.last() else { return };
        if let Ok(mut b) = self.backlog.lock() {
            for n in notes {
                b.push(n.clone());
            }
        }
        self.published.send_replace(last.id);
    }

    /// The id of the newest published notification.
    pub(crate) fn last_id(&self) -> u64 {
        *self.published.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// What is in memory after `seen`: `Ok(items)` when the backlog covers everything after
    /// `seen`; `Err(first)` when the follower is behind the backlog's first id `first` and
    /// must catch up from the store first.
    pub(crate) fn after(&self, seen: u64) -> Result<Vec<Item>, u64> {
        let Ok(b) = self.backlog.lock() else {
            return Err(seen.saturating_add(1));
        };
        let after = b.after(seen);
        if after.lost > 0 {
            return Err(seen.saturating_add(1).saturating_add(after.lost));
        }
        // An empty backlog (a restarted leader) holds none of what was published before it.
        if after.items.is_empty() && seen < self.last_id() {
            return Err(seen.saturating_add(1));
        }
        Ok(after
            .items
            .into_iter()
            .filter_map(|n| serde_json::to_string(n).ok().map(|j| Item::Note(n.id, j)))
            .collect())
    }
}

/// The catch-up rule, pure: given the follower's last id and what the store's log returned
/// after it (in id order), the items to send and the new last id. Ids are contiguous (one
/// counter, each id logged in the transaction that took it), so a gap before the first row
/// is what the log already dropped: reported as lost.
pub(crate) fn catch_up(seen: u64, rows: Vec<(u64, String)>) -> (Vec<Item>, u64) {
    let mut out = Vec::new();
    let mut last = seen;
    if let Some(&(first, _)) = rows.first()
        && first > last.saturating_add(1)
    {
        out.push(Item::Lost(first - last - 1));
        last = first - 1;
    }
    for (id, json) in rows {
        if id > last {
            out.push(Item::Note(id, json));
            last = id;
        }
    }
    (out, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertState;

    fn note(id: u64) -> Notification {
        Notification {
            id,
            rule: "r".to_owned(),
            state: AlertState::Firing,
            labels: Default::default(),
            value: None,
            threshold: 0.0,
            severity: String::new(),
            ts_unix_ms: 0,
            since_unix_ms: 0,
            annotation: String::new(),
        }
    }

    #[test]
    fn what_the_backlog_does_not_hold_is_read_from_the_log() {
        // Restarted at id 10: nothing in memory yet.
        let hub = Hub::new(10);
        assert!(hub.after(3).is_err());
        assert_eq!(hub.after(10), Ok(Vec::new()));
        hub.publish(&[note(11), note(12)]);
        assert!(hub.after(3).is_err());
        assert!(hub.after(10).is_ok_and(|v| v.len() == 2));
        assert!(hub.after(11).is_ok_and(|v| v.len() == 1));
    }

    fn rows(ids: &[u64]) -> Vec<(u64, String)> {
        ids.iter()
            .map(|&i| (i, format!("{{\"id\":{i}}}")))
            .collect()
    }

    #[test]
    fn catch_up_sends_each_id_once_and_counts_what_the_log_dropped() {
        let (items, last) = catch_up(3, rows(&[4, 5]));
        assert_eq!(last, 5);
        assert_eq!(items.len(), 2);
        let (items, last) = catch_up(0, rows(&[11, 12]));
        assert_eq!(items[0], Item::Lost(10));
        assert_eq!((items.len(), last), (3, 12));
        let (items, last) = catch_up(12, Vec::new());
        assert_eq!((items, last), (Vec::new(), 12));
    }
}

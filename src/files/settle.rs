//! When a listed file is complete: two listings at least `settle` apart (on our monotonic
//! clock) saw the same size and mtime. Never compares remote wall-clock time with ours
//! (hazard 15).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::RemoteEntry;

/// Tracks (size, mtime) per name across listings.
#[derive(Debug, Default)]
pub(crate) struct SettleTracker {
    seen: HashMap<Vec<u8>, (u64, i64, Instant)>,
}

impl SettleTracker {
    /// Feeds one complete listing; returns the entries that have settled, oldest first.
    pub(crate) fn observe<'a>(
        &mut self,
        listing: &'a [RemoteEntry],
        now: Instant,
        settle: Duration,
    ) -> Vec<&'a RemoteEntry> {
        let mut ready = Vec::new();
        let mut still_there = HashMap::with_capacity(listing.len());
        for entry in listing {
            let since = match self.seen.get(&entry.name) {
                Some(&(size, mtime, since)) if size == entry.size && mtime == entry.mtime => since,
                _ => now,
            };
            if now.duration_since(since) >= settle {
                ready.push((since, entry));
            }
            still_there.insert(entry.name.clone(), (entry.size, entry.mtime, since));
        }
        self.seen = still_there;
        ready.sort_by_key(|(since, e)| (*since, e.mtime));
        ready.into_iter().map(|(_, e)| e).collect()
    }

    /// When the first entry still settling will have been unchanged for `settle` (after
    /// `now`), so the next listing can be timed for it instead of waiting a whole poll.
    pub(crate) fn next_settled(&self, now: Instant, settle: Duration) -> Option<Instant> {
        self.seen
            .values()
            .map(|&(_, _, since)| since + settle)
            .filter(|&due| due > now)
            .min()
    }

    /// Forgets a name (claimed, or changed and to be watched again).
    pub(crate) fn forget(&mut self, name: &[u8]) {
        self.seen.remove(name);
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::EntryKind;
    use super::*;

    fn file(name: &[u8], size: u64, mtime: i64) -> RemoteEntry {
        RemoteEntry {
            name: name.to_vec(),
            kind: EntryKind::File,
            size,
            mtime,
        }
    }

    #[test]
    fn the_next_listing_is_due_when_the_first_entry_settles() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(300);
        let mut tracker = SettleTracker::default();
        assert_eq!(tracker.next_settled(t0, settle), None, "nothing seen");
        let first = [file(b"a", 1, 5)];
        assert!(tracker.observe(&first, t0, settle).is_empty());
        let t1 = t0 + Duration::from_millis(100);
        let both = [file(b"a", 1, 5), file(b"b", 1, 5)];
        assert!(tracker.observe(&both, t1, settle).is_empty());
        assert_eq!(
            tracker.next_settled(t1, settle),
            Some(t0 + settle),
            "a first"
        );
        // Once `a` settled, `b` is next; a settled entry not yet taken is not "due".
        let t2 = t0 + settle;
        assert_eq!(tracker.observe(&both, t2, settle).len(), 1);
        assert_eq!(tracker.next_settled(t2, settle), Some(t1 + settle));
    }

    #[test]
    fn a_file_settles_only_when_unchanged_for_the_settle_time() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(100);
        let mut t = SettleTracker::default();
        let l1 = [file(b"a", 10, 5)];
        assert!(t.observe(&l1, t0, settle).is_empty());
        let growing = [file(b"a", 20, 6)];
        assert!(
            t.observe(&growing, t0 + settle, settle).is_empty(),
            "changed: clock restarts"
        );
        assert!(
            t.observe(&growing, t0 + settle * 2 - Duration::from_millis(1), settle)
                .is_empty()
        );
        assert_eq!(t.observe(&growing, t0 + settle * 2, settle).len(), 1);
        // Gone from the listing: forgotten.
        assert!(t.observe(&[], t0 + settle * 3, settle).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn zero_settle_means_ready_at_first_sight() {
        let mut t = SettleTracker::default();
        assert_eq!(
            t.observe(&[file(b"a", 1, 1)], Instant::now(), Duration::ZERO)
                .len(),
            1
        );
    }
}

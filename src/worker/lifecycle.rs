//! Pure decisions of a file's life on the worker: which remote entries are candidates (D3, D4),
//! when a file has settled (complete), and whether a copy is still the file that was listed.
//!
//! Completeness never compares remote wall-clock time with ours (hazard 15): a file is settled
//! once two listings at least `settle` apart (on our monotonic clock) saw the same size and mtime.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::transport::ssh::{EntryKind, RemoteEntry};

/// Name suffixes of files that are still being written by convention.
const PARTIAL_SUFFIXES: [&[u8]; 2] = [b".tmp", b".part"];

/// Whether a listed entry may be pulled at all: a regular file, not hidden, not a temp file,
/// matching the client's pattern.
pub fn is_candidate(entry: &RemoteEntry, pattern: Option<&glob::Pattern>) -> bool {
    if entry.kind != EntryKind::File || entry.name.is_empty() || entry.name.starts_with(b".") {
        return false;
    }
    if PARTIAL_SUFFIXES.iter().any(|s| entry.name.ends_with(s)) {
        return false;
    }
    // Never a path: readdir names cannot hold '/', but a hostile server could send one.
    if entry.name.contains(&b'/') || entry.name.contains(&0) {
        return false;
    }
    match pattern {
        None => true,
        Some(p) => p.matches(&String::from_utf8_lossy(&entry.name)),
    }
}

/// Tracks (size, mtime) per name across listings.
#[derive(Debug, Default)]
pub struct SettleTracker {
    seen: HashMap<Vec<u8>, (u64, i64, Instant)>,
}

impl SettleTracker {
    /// Feeds one complete listing; returns the entries that have settled, oldest first.
    pub fn observe<'a>(
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
    pub fn next_settled(&self, now: Instant, settle: Duration) -> Option<Instant> {
        self.seen
            .values()
            .map(|&(_, _, since)| since + settle)
            .filter(|&due| due > now)
            .min()
    }

    /// Forgets a name (claimed, or changed and to be watched again).
    pub fn forget(&mut self, name: &[u8]) {
        self.seen.remove(name);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Why a copied file may not be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyVerdict {
    Intact,
    /// Size or mtime differ from the listing, or fewer/more bytes were read: the file was
    /// still being written, truncated or appended. Neither commit nor delete.
    Changed {
        listed: (u64, i64),
        after: (u64, i64),
        read: u64,
    },
}

pub fn verify_copy(
    listed_size: u64,
    listed_mtime: i64,
    read: u64,
    size_after: u64,
    mtime_after: i64,
) -> CopyVerdict {
    if read == listed_size && size_after == listed_size && mtime_after == listed_mtime {
        CopyVerdict::Intact
    } else {
        CopyVerdict::Changed {
            listed: (listed_size, listed_mtime),
            after: (size_after, mtime_after),
            read,
        }
    }
}

/// The claim directory of (worker, epoch) inside the client's directory.
pub fn claim_dir_name(worker: &str, epoch: u64) -> String {
    format!("{worker}-{epoch}")
}

/// Suffix a worker gives its claim dir when it stops serving a client gracefully: what is
/// left inside was never committed, so any later owner may take it at once.
pub const RELEASED_SUFFIX: &str = ".released";

/// A claim directory's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimDir {
    pub worker: String,
    pub epoch: u64,
    pub released: bool,
}

/// Parses a claim directory name back into its owner, epoch and state.
pub fn parse_claim_dir(name: &[u8]) -> Option<ClaimDir> {
    let name = std::str::from_utf8(name).ok()?;
    let (name, released) = match name.strip_suffix(RELEASED_SUFFIX) {
        Some(n) => (n, true),
        None => (name, false),
    };
    let (worker, epoch) = name.rsplit_once('-')?;
    Some(ClaimDir {
        worker: worker.to_owned(),
        epoch: epoch.parse().ok()?,
        released,
    })
}

/// What the current owner `(me, epoch)` may do with another claim dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAction {
    /// Ours now, or someone else's to handle: leave it.
    Leave,
    /// Released leftovers, or orphaned long enough: move the files into our claim dir.
    Adopt,
}

/// Decides about a claim dir found next to ours.
///
/// Stores are sharded per worker, so a file committed by a worker that crashed before deleting
/// the source would be committed a second time by an adopter. Only the crashed worker can tell
/// (from its own catalog), so its unreleased claims wait for it to come back and resolve them;
/// after `orphaned` (the worker seems gone for good) they are adopted, at least once.
pub fn claim_action(dir: &ClaimDir, me: &str, epoch: u64, orphaned: bool) -> ClaimAction {
    if dir.worker == me && dir.epoch == epoch && !dir.released {
        return ClaimAction::Leave;
    }
    if dir.released {
        return ClaimAction::Adopt;
    }
    if dir.worker == me || dir.epoch >= epoch {
        // Our own crash leftovers are resolved at start-up; newer epochs are not ours.
        return ClaimAction::Leave;
    }
    if orphaned {
        ClaimAction::Adopt
    } else {
        ClaimAction::Leave
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_listing_is_due_when_the_first_entry_settles() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(300);
        let entry = |name: &str, size| RemoteEntry {
            name: name.as_bytes().to_vec(),
            kind: crate::transport::ssh::EntryKind::File,
            size,
            mtime: 5,
        };
        let mut tracker = SettleTracker::default();
        assert_eq!(tracker.next_settled(t0, settle), None, "nothing seen");
        let first = [entry("a", 1)];
        assert!(tracker.observe(&first, t0, settle).is_empty());
        let t1 = t0 + Duration::from_millis(100);
        let both = [entry("a", 1), entry("b", 1)];
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
    fn only_plain_visible_complete_files_are_candidates() {
        let p = glob::Pattern::new("*.jsonl").unwrap();
        assert!(is_candidate(&file(b"a.jsonl", 1, 1), Some(&p)));
        assert!(!is_candidate(&file(b"a.csv", 1, 1), Some(&p)));
        assert!(is_candidate(&file(b"a.csv", 1, 1), None));
        for bad in [&b".hidden"[..], b"x.tmp", b"x.part", b"", b"a/b", b"a\0b"] {
            assert!(!is_candidate(&file(bad, 1, 1), None), "{bad:?}");
        }
        let mut link = file(b"link", 1, 1);
        link.kind = EntryKind::Other;
        assert!(!is_candidate(&link, None));
        let mut dir = file(b"d", 1, 1);
        dir.kind = EntryKind::Dir;
        assert!(!is_candidate(&dir, None));
        // Non-UTF-8 names are opaque bytes, still pulled.
        assert!(is_candidate(&file(b"\xff\xfe.jsonl", 1, 1), Some(&p)));
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

    #[test]
    fn copies_of_changed_files_are_rejected() {
        assert_eq!(verify_copy(10, 5, 10, 10, 5), CopyVerdict::Intact);
        assert!(
            matches!(verify_copy(10, 5, 10, 12, 6), CopyVerdict::Changed { .. }),
            "appended"
        );
        assert!(
            matches!(verify_copy(10, 5, 4, 4, 6), CopyVerdict::Changed { .. }),
            "truncated"
        );
        assert!(
            matches!(verify_copy(10, 5, 10, 10, 7), CopyVerdict::Changed { .. }),
            "rewritten"
        );
    }

    #[test]
    fn claim_dir_names_round_trip() {
        let d = parse_claim_dir(claim_dir_name("w-1", 42).as_bytes()).unwrap();
        assert_eq!((d.worker.as_str(), d.epoch, d.released), ("w-1", 42, false));
        let r = parse_claim_dir(b"w-1-42.released").unwrap();
        assert_eq!((r.worker.as_str(), r.epoch, r.released), ("w-1", 42, true));
        assert_eq!(parse_claim_dir(b"junk"), None);
        assert_eq!(parse_claim_dir(b"w-x"), None);
    }

    #[test]
    fn only_released_or_long_orphaned_claims_are_adopted() {
        let dir = |w: &str, e: u64, released: bool| ClaimDir {
            worker: w.into(),
            epoch: e,
            released,
        };
        use ClaimAction::*;
        assert_eq!(
            claim_action(&dir("me", 5, false), "me", 5, true),
            Leave,
            "ours"
        );
        assert_eq!(
            claim_action(&dir("old", 3, true), "me", 5, false),
            Adopt,
            "released"
        );
        assert_eq!(
            claim_action(&dir("me", 3, true), "me", 5, false),
            Adopt,
            "our own released"
        );
        assert_eq!(
            claim_action(&dir("old", 3, false), "me", 5, false),
            Leave,
            "crashed: wait for its owner"
        );
        assert_eq!(
            claim_action(&dir("old", 3, false), "me", 5, true),
            Adopt,
            "orphaned"
        );
        assert_eq!(
            claim_action(&dir("me", 3, false), "me", 5, true),
            Leave,
            "our crash leftovers"
        );
        assert_eq!(
            claim_action(&dir("new", 9, false), "me", 5, true),
            Leave,
            "newer epoch"
        );
    }
}

//! Pure decisions of a file's life on the worker: whether a copy is still the file that was
//! listed (D3), and what to do with a claim dir found next to ours (D1). Which entries are
//! candidates and when they settle is the shared file model ([`crate::files`]).

use crate::files::ClaimDir;

/// Why a copied file may not be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopyVerdict {
    Intact,
    /// Size or mtime differ from the listing, or fewer/more bytes were read: the file was
    /// still being written, truncated or appended. Neither commit nor delete.
    Changed {
        listed: (u64, i64),
        after: (u64, i64),
        read: u64,
    },
}

pub(crate) fn verify_copy(
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

/// What the current owner `(me, epoch)` may do with another claim dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimAction {
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
pub(crate) fn claim_action(dir: &ClaimDir, me: &str, epoch: u64, orphaned: bool) -> ClaimAction {
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
    use super::*;

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

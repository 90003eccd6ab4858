//! Picking and staging one batch: [`survey`] lists the client directory and our claim dir
//! when asked (adopting claims others released) and publishes the backlog; [`fetch`] claims
//! the next files and transfers them, with the files left in our claim dir, into staging.

use std::collections::HashSet;
use std::time::Instant;

use tracing::warn;

use super::{Cursor, CycleError, Link, Listing, Work, batch, recover, sftp};
use crate::failpoint;
use crate::files::{self, EntryKind, RemoteEntry};
use crate::store::Staged;

/// Whether the sources a batch was asked to remove are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removal {
    /// Nothing was asked, or the transfer does not remove.
    NotTried,
    Done,
    /// Refused or not known: they are removed over SFTP before the next listing.
    NotDone,
}

impl From<Option<bool>> for Removal {
    fn from(removed: Option<bool>) -> Self {
        match removed {
            None => Removal::NotTried,
            Some(true) => Removal::Done,
            Some(false) => Removal::NotDone,
        }
    }
}

/// What a transfer brought into staging.
#[derive(Debug, Default)]
pub(super) struct Transferred {
    /// Files staged intact, not committed yet.
    pub(super) staged: Vec<Staged>,
    /// Files that did not make it (changed during the copy, vanished, failed, or never
    /// claimed): not committed, not deleted; they must settle again before another try.
    pub(super) unfinished: Vec<Vec<u8>>,
}

/// What [`fetch`] brought.
pub(super) struct Fetched {
    /// More complete files wait in the listing.
    pub(super) more: bool,
    /// Files staged intact, not committed yet.
    pub(super) staged: Vec<Staged>,
    /// Whether the sources given to remove are gone.
    pub(super) removed: Removal,
}

impl Fetched {
    fn nothing(more: bool) -> Fetched {
        Fetched {
            more,
            staged: Vec::new(),
            removed: Removal::NotTried,
        }
    }
}

/// Lists when asked (then returns the files in our claim dir that are ready to transfer
/// again), and publishes the backlog.
pub(super) async fn survey(
    link: Link<'_>,
    cursor: &mut Cursor,
    listing: Listing,
    now: Instant,
) -> Result<Vec<Work>, CycleError> {
    let leftovers = match listing {
        Listing::Fresh => relist(link, cursor, now).await?,
        Listing::Queued => Vec::new(),
    };
    publish_backlog(link, cursor, now);
    Ok(leftovers)
}

/// Lists the client directory, makes sure our claim dir exists, adopts what others released,
/// and lists our claim dir: its settled files are returned to transfer again.
async fn relist(
    link: Link<'_>,
    cursor: &mut Cursor,
    now: Instant,
) -> Result<Vec<Work>, CycleError> {
    let Link { task, remote } = link;
    let layout = task.layout();
    let mine = task.mine();
    let warning = list_ready(link, cursor, now).await?;
    remote.mkdir(&layout.sqd_dir()).await?;
    remote.mkdir(&layout.root()).await?;
    remote.mkdir(&mine).await?;
    // The host answers: earlier errors are over; this cycle reports its own.
    task.set_error(warning);
    recover::adopt(link, &mut cursor.foreign_seen).await?;
    // Leftover claims of ours: interrupted, changed during copy, or just adopted.
    let leftovers: Vec<RemoteEntry> = remote
        .list(&mine)
        .await?
        .into_iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    cursor.leftovers = (leftovers.len(), leftovers.iter().map(|e| e.size).sum());
    Ok(cursor
        .claimed
        .observe(&leftovers, now, task.config.settle)
        .into_iter()
        .map(Work::from)
        .collect())
}

fn publish_backlog(link: Link<'_>, cursor: &Cursor, now: Instant) {
    let task = link.task;
    let mut stats = task.stats();
    stats.backlog_files = (cursor.backlog.0 + cursor.leftovers.0) as u64;
    stats.backlog_bytes = cursor.backlog.1 + cursor.leftovers.1;
    task.metrics
        .backlog(&task.spec.name, stats.backlog_files, stats.backlog_bytes);
    stats.oldest_backlog = if stats.backlog_files == 0 {
        None
    } else {
        Some(stats.oldest_backlog.unwrap_or(now))
    };
}

/// Lists the client directory and queues its complete files (settled, matching, not too
/// large), oldest first; notes the backlog the listing shows. Returns a warning for status.
async fn list_ready(
    link: Link<'_>,
    cursor: &mut Cursor,
    now: Instant,
) -> Result<Option<String>, CycleError> {
    let cfg = &link.task.config;
    let spec = &link.task.spec;
    let pattern = if spec.pattern.is_empty() {
        None
    } else {
        glob::Pattern::new(&spec.pattern).ok()
    };
    // Listed first, so a missing or unreadable directory is reported by its own name.
    let listing: Vec<RemoteEntry> = link
        .remote
        .list(link.task.layout().dir())
        .await?
        .into_iter()
        .filter(|e| files::is_candidate(e, pattern.as_ref()))
        .collect();
    cursor.backlog = (listing.len(), listing.iter().map(|e| e.size).sum());
    let ready = cursor.fresh.observe(&listing, now, cfg.settle);
    // Too large files stay where they are, reported.
    let (ready, too_large): (Vec<&RemoteEntry>, Vec<&RemoteEntry>) = ready
        .into_iter()
        .partition(|e| e.size <= cfg.max_file_bytes);
    let warning = too_large.first().map(|big| {
        format!(
            "{} file(s) exceed max_file_mb ({} MiB), e.g. {:?} ({} bytes); raise max_file_mb or remove them",
            too_large.len(),
            cfg.max_file_bytes / (1024 * 1024),
            String::from_utf8_lossy(&big.name),
            big.size
        )
    });
    cursor.queue = ready.into_iter().cloned().collect();
    cursor.listed_at = now;
    Ok(warning)
}

/// Takes the next files to claim from the queue, leaving room for the leftovers.
fn pick(
    cursor: &mut Cursor,
    leftovers: &[Work],
    remove: &[Vec<u8>],
    batch: bool,
    batch_files: usize,
) -> Vec<RemoteEntry> {
    let room = batch_files.saturating_sub(leftovers.len());
    let take = room.min(cursor.queue.len());
    let mut to_claim: Vec<RemoteEntry> = cursor.queue.drain(..take).collect();
    if batch && !(leftovers.is_empty() && remove.is_empty()) {
        // One name once per batch: a new file named like a leftover, or like a file this
        // batch removes from the claim dir, waits for the next round (a claim would not
        // replace it anyway, and the removal runs while the claim does).
        let taken: HashSet<&[u8]> = leftovers
            .iter()
            .map(|w| w.name.as_slice())
            .chain(remove.iter().map(Vec::as_slice))
            .collect();
        to_claim.retain(|e| !taken.contains(e.name.as_slice()));
    }
    to_claim
}

/// Claims the next files and transfers them and `leftovers` into staging. In batch mode the
/// same script first removes `remove` (durable files in our claim dir).
pub(super) async fn fetch(
    link: Link<'_>,
    cursor: &mut Cursor,
    leftovers: Vec<Work>,
    remove: &[Vec<u8>],
) -> Result<Fetched, CycleError> {
    let Link { task, remote } = link;
    let batch = remote.batch_capable();
    let to_claim = pick(cursor, &leftovers, remove, batch, task.config.batch_files);
    let more = !cursor.queue.is_empty();
    if !task.lease.valid_now() {
        return Err(CycleError::LeaseExpired);
    }
    let claimed: Vec<Work> = if batch {
        // Claimed by the same script that streams them (see `batch::transfer`).
        to_claim.iter().map(Work::from).collect()
    } else {
        sftp::claim(link, &to_claim).await?
    };
    for w in &claimed {
        cursor.fresh.forget(&w.name);
        cursor.backlog.0 = cursor.backlog.0.saturating_sub(1);
        cursor.backlog.1 = cursor.backlog.1.saturating_sub(w.size);
    }
    if !claimed.is_empty() && !batch {
        failpoint::hit("after_claim");
    }
    let claim_names: Vec<Vec<u8>> = if batch {
        claimed.iter().map(|w| w.name.clone()).collect()
    } else {
        Vec::new()
    };
    let mut work = leftovers;
    work.extend(claimed);
    if work.is_empty() {
        return Ok(Fetched::nothing(more));
    }
    let (transferred, removed) = if batch {
        batch::transfer(link, cursor, remove, &claim_names, work).await?
    } else {
        (sftp::transfer(link, cursor, work).await, Removal::NotTried)
    };
    for name in &transferred.unfinished {
        // Watch it again: it must settle before another try.
        cursor.claimed.forget(name);
    }
    if !transferred.staged.is_empty() {
        failpoint::hit("after_stage");
    }
    Ok(Fetched {
        more,
        staged: transferred.staged,
        removed,
    })
}

/// Warns that a file changed while it was copied.
pub(super) fn changed_during_copy(client: &str, name: &[u8]) {
    warn!(client = %client, name = %String::from_utf8_lossy(name),
          "file changed during copy: not committed, not deleted; retried once it settles");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> RemoteEntry {
        RemoteEntry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File,
            size: 1,
            mtime: 1,
        }
    }

    fn work(name: &str) -> Work {
        Work::from(&entry(name))
    }

    #[test]
    fn a_batch_leaves_room_for_leftovers_and_takes_each_name_once() {
        let mut cursor = Cursor::new();
        cursor.queue = ["a", "b", "c", "d"].into_iter().map(entry).collect();
        let leftovers = [work("b")];
        let removing = [b"c".to_vec()];
        // Batch mode: "b" waits behind its leftover, "c" behind its removal.
        let picked = pick(&mut cursor, &leftovers, &removing, true, 4);
        let names: Vec<&[u8]> = picked.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(names, [&b"a"[..]]);
        assert_eq!(cursor.queue.len(), 1, "one name stays queued");
        // SFTP mode renames one at a time: a clash is skipped by the rename itself.
        cursor.queue = ["a", "b"].into_iter().map(entry).collect();
        assert_eq!(pick(&mut cursor, &leftovers, &[], false, 4).len(), 2);
    }
}

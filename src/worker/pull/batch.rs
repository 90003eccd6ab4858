//! Batch mode: one script on the host removes the previous durable batch, claims the next
//! (`mv -n`) and streams it (`tar`), while the batch before commits locally. The file's life
//! is the same as over SFTP; only the number of round trips changes.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream;
use tracing::{debug, warn};

use super::commit::{commit_pending, commit_staged, flush_removals};
use super::fetch::{self, Removal, Transferred};
use super::{Cursor, CycleError, Link, Listing, Work, discard};
use crate::failpoint;
use crate::files::{ClaimLayout, name_path};
use crate::store::{FileMeta, Staged, StoreError};
use crate::transport::ssh::{self, BatchPlan, TransportError};
use crate::worker::lifecycle::{self, CopyVerdict};
use crate::worker::staging::StagingWriter;

/// One pipelined cycle: batch N commits while batch N+1 is claimed and streamed by a script
/// that first removes the sources of batch N-1, so the host, the link and the local disk all
/// work at once. Before a listing (which reads our claim dir) the pipeline is drained.
pub(super) async fn cycle(
    link: Link<'_>,
    cursor: &mut Cursor,
    stopping: bool,
) -> Result<bool, CycleError> {
    let began = Instant::now();
    if cursor.listing() == Listing::Fresh || stopping {
        commit_pending(link.task, cursor).await?;
        flush_removals(link, cursor).await?;
        let leftovers = fetch::survey(link, cursor, Listing::Fresh, began).await?;
        if stopping {
            return Ok(false);
        }
        let fetched = fetch::fetch(link, cursor, leftovers, &[]).await?;
        cursor.pending = fetched.staged;
        return Ok(fetched.more || !cursor.pending.is_empty());
    }
    let durable = std::mem::take(&mut cursor.durable);
    let pending = std::mem::take(&mut cursor.pending);
    let (committed, fetched) = tokio::join!(
        commit_staged(link.task, pending),
        fetch_queued(link, cursor, began, &durable)
    );
    match fetched.as_ref().map(|f| f.removed) {
        Ok(Removal::Done) => {
            failpoint::hit("after_delete");
            cursor.removed(&durable);
        }
        // Not tried, refused or unknown: removed (over SFTP if need be) before the listing.
        _ => cursor.durable.extend(durable),
    }
    // The fetched batch is kept even when the commit failed: it commits next time.
    let fetched = fetched.map(|f| {
        cursor.pending = f.staged;
        f.more
    });
    cursor.durable.extend(committed?);
    let more = fetched?;
    debug!(client = %link.task.spec.name, files = cursor.pending.len(), ms = began.elapsed().as_millis() as u64, "batch fetched while the previous one committed");
    Ok(more || !cursor.pending.is_empty() || !cursor.durable.is_empty())
}

/// The next batch from the queued listing, removing `durable` in the same script.
async fn fetch_queued(
    link: Link<'_>,
    cursor: &mut Cursor,
    began: Instant,
    durable: &[Vec<u8>],
) -> Result<fetch::Fetched, CycleError> {
    let leftovers = fetch::survey(link, cursor, Listing::Queued, began).await?;
    fetch::fetch(link, cursor, leftovers, durable).await
}

/// Removes durable files from our claim dir with one script; false when the host did not
/// confirm them all (the caller then removes them over SFTP).
pub(super) async fn remove(link: Link<'_>, names: &[Vec<u8>]) -> Result<bool, TransportError> {
    let listed: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let claim_rel = ClaimLayout::relative(&link.task.claim());
    let plan = BatchPlan {
        dir: &link.task.spec.path,
        claim_dir: &claim_rel.to_string_lossy(),
        remove: &listed,
        claim: &[],
        stream: &[],
    };
    let (_, end) = link.remote.batch(&plan, NoFiles).await?;
    Ok(end.removed == Some(true))
}

/// Claims `to_claim` and streams every file of `work` (the claimed ones and ready leftovers)
/// into staging with one batch script. A file that changed or did not arrive (a name the
/// claim did not move: it vanished, or a leftover of that name holds its place) is
/// unfinished. When `tar` did not end cleanly, each received file is checked again against
/// its listed size and mtime before it counts.
pub(super) async fn transfer(
    link: Link<'_>,
    cursor: &mut Cursor,
    remove: &[Vec<u8>],
    to_claim: &[Vec<u8>],
    work: Vec<Work>,
) -> Result<(Transferred, Removal), CycleError> {
    let task = link.task;
    let claim_rel = ClaimLayout::relative(&task.claim());
    let claim_rel = claim_rel.to_string_lossy();
    let names: Vec<&[u8]> = work.iter().map(|w| w.name.as_slice()).collect();
    let claim_names: Vec<&[u8]> = to_claim.iter().map(Vec::as_slice).collect();
    let remove_names: Vec<&[u8]> = remove.iter().map(Vec::as_slice).collect();
    let plan = BatchPlan {
        dir: &task.spec.path,
        claim_dir: &claim_rel,
        remove: &remove_names,
        claim: &claim_names,
        stream: &names,
    };
    let receiver = BatchReceiver::new(link, cursor.staged_seq, &work, !to_claim.is_empty());
    // Every staging name this batch may use is reserved, so a failure can sweep them all.
    let reserved: Vec<PathBuf> = (1..=work.len() as u64)
        .map(|i| receiver.staging_path(cursor.staged_seq + i))
        .collect();
    cursor.staged_seq += work.len() as u64;
    let (received, end) = match link.remote.batch(&plan, receiver).await {
        Ok(done) => done,
        Err(e) => {
            discard(reserved);
            return Err(e.into());
        }
    };
    let mut out = Transferred {
        staged: received.staged,
        unfinished: received.changed,
    };
    if !end.clean {
        // GNU tar saw a file change while reading it, or could not read one: check each
        // received file against the listing again.
        debug!(client = %task.spec.name, "batch stream ended unclean: re-checking its files");
        if let Err(e) = recheck(link, &mut out).await {
            discard(reserved);
            return Err(e.into());
        }
    }
    // Asked for but not in the stream: gone, or never claimed.
    out.unfinished.extend(received.expected.into_keys());
    Ok((out, end.removed.into()))
}

/// Moves every staged file whose source no longer matches its listing to `unfinished`.
async fn recheck(link: Link<'_>, out: &mut Transferred) -> Result<(), TransportError> {
    let mine = link.task.mine();
    let checks: Vec<_> = out
        .staged
        .iter()
        .map(|s| {
            let path = mine.join(name_path(&s.meta.name));
            async move { link.remote.stat(&path).await }
        })
        .collect();
    let verdicts: Vec<Result<Option<(u64, i64)>, TransportError>> = stream::iter(checks)
        .buffered(link.task.config.in_flight)
        .collect::<Vec<_>>()
        .await;
    let verdicts = verdicts.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut kept = Vec::with_capacity(out.staged.len());
    for (s, now) in out.staged.drain(..).zip(verdicts) {
        if now == Some((s.meta.size, s.meta.mtime)) {
            kept.push(s);
        } else {
            fetch::changed_during_copy(&link.task.spec.name, &s.meta.name);
            out.unfinished.push(s.meta.name);
            discard([s.path]);
        }
    }
    out.staged = kept;
    Ok(())
}

/// A batch that streams nothing.
struct NoFiles;

impl ssh::StreamSink for NoFiles {
    fn file(&mut self, _: ssh::StreamedFile<'_>) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the batch stream's reader keeps while files arrive (it runs on a blocking thread).
struct BatchReceiver {
    client: String,
    staging: PathBuf,
    /// Staging file prefix: client, worker and epoch.
    prefix: String,
    seq: u64,
    /// Listed size and mtime of each file still expected.
    expected: HashMap<Vec<u8>, (u64, i64)>,
    staged: Vec<Staged>,
    changed: Vec<Vec<u8>>,
    first_chunk_seen: bool,
    /// The batch claims files (rather than only re-reading leftovers).
    claiming: bool,
    writer: StagingWriter,
}

impl BatchReceiver {
    fn new(link: Link<'_>, seq: u64, work: &[Work], claiming: bool) -> BatchReceiver {
        let task = link.task;
        BatchReceiver {
            client: task.spec.name.clone(),
            staging: task.store.staging_dir().to_path_buf(),
            prefix: format!("{}-{}-{}", task.spec.name, task.worker, task.epoch),
            seq,
            expected: work
                .iter()
                .map(|w| (w.name.clone(), (w.size, w.mtime)))
                .collect(),
            staged: Vec::new(),
            changed: Vec::new(),
            first_chunk_seen: false,
            claiming,
            writer: StagingWriter::default(),
        }
    }

    fn staging_path(&self, seq: u64) -> PathBuf {
        self.staging.join(format!("{}-{seq}.part", self.prefix))
    }

    /// Copies one streamed file into `path`, hashing it; returns (bytes, hash).
    fn copy(
        &mut self,
        content: &mut dyn Read,
        path: &std::path::Path,
        size: u64,
    ) -> std::io::Result<(u64, [u8; 32])> {
        let local = |e: std::io::Error| ssh::sink_failed(StoreError::io(path, e));
        let mut out = self.writer.create(path, size).map_err(local)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = content.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if !self.first_chunk_seen {
                self.first_chunk_seen = true;
                failpoint::hit("mid_transfer");
            }
            out.write(&buf[..n]).map_err(local)?;
        }
        out.finish().map_err(local)
    }
}

impl ssh::StreamSink for BatchReceiver {
    fn finished(&mut self) -> std::io::Result<()> {
        self.writer
            .wait()
            .map_err(|e| ssh::sink_failed(StoreError::io(&self.staging, e)))
    }

    fn claimed(&mut self) {
        if self.claiming {
            failpoint::hit("after_claim");
        }
    }

    fn file(&mut self, file: ssh::StreamedFile<'_>) -> std::io::Result<()> {
        let Some((size, mtime)) = self.expected.remove(file.name) else {
            return Ok(()); // not asked for (never happens with GNU tar); not read
        };
        if lifecycle::verify_copy(size, mtime, file.size, file.size, file.mtime)
            != CopyVerdict::Intact
        {
            warn!(client = %self.client, name = %String::from_utf8_lossy(file.name),
                  listed_size = size, size_now = file.size,
                  "file changed since it was listed: not committed, not deleted; retried once it settles");
            self.changed.push(file.name.to_vec());
            return Ok(());
        }
        self.seq += 1;
        let path = self.staging_path(self.seq);
        let (read, hash) = match self.copy(file.content, &path, size) {
            Ok(done) => done,
            Err(e) => {
                discard([path]);
                return Err(e);
            }
        };
        self.staged.push(Staged {
            meta: FileMeta {
                client: self.client.clone(),
                name: file.name.to_vec(),
                size: read,
                mtime,
                hash,
            },
            path,
        });
        Ok(())
    }
}

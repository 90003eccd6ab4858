//! SFTP mode: a batch is claimed by one rename per file, transferred with many reads in
//! flight, committed, and its sources removed one unlink each (overlapping the next batch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream;
use tracing::{debug, warn};

use super::commit::{self, commit_pending, flush_removals, remove_sources};
use super::fetch::{self, Transferred};
use super::{Cursor, CycleError, Link, Listing, Work, discard};
use crate::failpoint;
use crate::files::{RemoteEntry, name_path};
use crate::store::{FileMeta, Staged, StoreError};
use crate::transport::ssh::{self, TransportError};
use crate::worker::lifecycle::{self, CopyVerdict};
use crate::worker::staging::StagingWriter;

/// One cycle: claim → transfer → commit of a batch (listing the directory first when the last
/// listing is used up or old), while the sources of the previous durable batch are removed.
/// Returns whether more work is already waiting (so the driver does not pause).
pub(super) async fn cycle(
    link: Link<'_>,
    cursor: &mut Cursor,
    stopping: bool,
) -> Result<bool, CycleError> {
    // A batch staged before batch mode was given up on this connection.
    commit_pending(link.task, cursor).await?;
    let began = Instant::now();
    let listing = cursor.listing();
    let durable = std::mem::take(&mut cursor.durable);
    let (removed, worked) = match listing {
        Listing::Fresh => {
            // Our claim dir is listed below: what is durable must be gone from it first.
            let removed = remove_sources(link, &durable).await;
            (removed, work(link, cursor, began, listing, stopping).await)
        }
        Listing::Queued => tokio::join!(
            remove_sources(link, &durable),
            work(link, cursor, began, listing, stopping)
        ),
    };
    if removed.is_ok() {
        cursor.removed(&durable);
    }
    // A failed removal leaves the file in our claim dir: the next listing finds it, and the
    // store recognises it as already committed, so it is only removed then.
    removed?;
    let (more, committed) = worked?;
    cursor.durable = committed;
    if !more {
        flush_removals(link, cursor).await?;
    }
    Ok(more)
}

/// Claims, transfers and commits one batch. Returns whether more files are waiting and the
/// names of the files now durable (their sources still to remove).
async fn work(
    link: Link<'_>,
    cursor: &mut Cursor,
    began: Instant,
    listing: Listing,
    stopping: bool,
) -> Result<(bool, Vec<Vec<u8>>), CycleError> {
    let leftovers = fetch::survey(link, cursor, listing, began).await?;
    if stopping {
        return Ok((false, Vec::new()));
    }
    let fetched = fetch::fetch(link, cursor, leftovers, &[]).await?;
    let fetched_in = began.elapsed();
    let names = commit::commit_staged(link.task, fetched.staged).await?;
    debug!(client = %link.task.spec.name, files = names.len(),
           fetch_ms = fetched_in.as_millis() as u64,
           commit_ms = (began.elapsed() - fetched_in).as_millis() as u64,
           "batch timing");
    Ok((fetched.more, names))
}

/// Claims files by renaming each into our claim dir; returns those this worker won.
pub(super) async fn claim(
    link: Link<'_>,
    ready: &[RemoteEntry],
) -> Result<Vec<Work>, TransportError> {
    let Link { task, remote } = link;
    let layout = task.layout();
    let mine = task.mine();
    let renames: Vec<_> = ready
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let from = layout.dir().join(name_path(&e.name));
            let to = mine.join(name_path(&e.name));
            async move { (i, remote.rename(&from, &to).await) }
        })
        .collect();
    let results: Vec<(usize, Result<bool, TransportError>)> = stream::iter(renames)
        .buffer_unordered(task.config.in_flight)
        .collect()
        .await;
    let mut claimed = Vec::new();
    for (i, r) in results {
        let e = &ready[i];
        match r {
            Ok(true) => claimed.push(Work::from(e)),
            Ok(false) => {} // gone: someone else claimed it, or the producer removed it
            Err(err) if err.needs_reconnect() => return Err(err),
            Err(err) => {
                // e.g. a leftover of the same name already sits in our claim dir
                debug!(name = %String::from_utf8_lossy(&e.name), error = %err, "claim skipped");
            }
        }
    }
    Ok(claimed)
}

/// Transfers claimed files into staging, many in flight.
pub(super) async fn transfer(link: Link<'_>, cursor: &mut Cursor, work: Vec<Work>) -> Transferred {
    let task = link.task;
    let staging = task.store.staging_dir().to_path_buf();
    let mine = task.mine();
    let jobs: Vec<(Work, PathBuf)> = work
        .into_iter()
        .map(|w| {
            cursor.staged_seq += 1;
            let name = format!(
                "{}-{}-{}-{}.part",
                task.spec.name, task.worker, task.epoch, cursor.staged_seq
            );
            (w, staging.join(name))
        })
        .collect();
    let fetches: Vec<_> = jobs
        .into_iter()
        .map(|(w, local)| {
            let mine = &mine;
            async move {
                match fetch_one(link, mine, &w, &local).await {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => {
                        discard([local]);
                        Err(w.name)
                    }
                    Err(e) => {
                        discard([local]);
                        warn!(client = %task.spec.name, name = %String::from_utf8_lossy(&w.name), error = %e, "transfer failed");
                        task.set_error(Some(e.to_string()));
                        Err(w.name)
                    }
                }
            }
        })
        .collect();
    let results: Vec<Result<Staged, Vec<u8>>> = stream::iter(fetches)
        .buffer_unordered(task.config.in_flight)
        .collect()
        .await;
    let mut out = Transferred::default();
    for r in results {
        match r {
            Ok(s) => out.staged.push(s),
            Err(name) => out.unfinished.push(name),
        }
    }
    out
}

/// Copies one claimed file into staging while hashing it; `None` when it changed meanwhile.
async fn fetch_one(
    link: Link<'_>,
    mine: &Path,
    w: &Work,
    local: &Path,
) -> Result<Option<Staged>, TransportError> {
    let local_err = |e: std::io::Error| TransportError::Sink(StoreError::io(local, e).into());
    let mut writer = StagingWriter::buffered();
    let mut out = writer.create(local, w.size).map_err(local_err)?;
    let mut first_chunk = true;
    let (read, size_after, mtime_after) = link
        .remote
        .read_file(&mine.join(name_path(&w.name)), w.size, |chunk| {
            out.write(chunk)
                .map_err(|e| ssh::sink_failed(StoreError::io(local, e)))?;
            if first_chunk {
                first_chunk = false;
                failpoint::hit("mid_transfer");
            }
            Ok(())
        })
        .await?;
    let (_, hash) = out.finish().map_err(local_err)?;
    writer.wait().map_err(local_err)?;
    match lifecycle::verify_copy(w.size, w.mtime, read, size_after, mtime_after) {
        CopyVerdict::Intact => Ok(Some(Staged {
            meta: FileMeta {
                client: link.task.spec.name.clone(),
                name: w.name.clone(),
                size: read,
                mtime: w.mtime,
                hash,
            },
            path: local.to_path_buf(),
        })),
        CopyVerdict::Changed {
            listed,
            after,
            read,
        } => {
            warn!(client = %link.task.spec.name, name = %String::from_utf8_lossy(&w.name),
                  listed_size = listed.0, size_after = after.0, read,
                  "file changed during copy: not committed, not deleted; retried once it settles");
            Ok(None)
        }
    }
}

/// Removes durable files from our claim dir, one unlink each, many in flight.
pub(super) async fn remove(link: Link<'_>, names: &[Vec<u8>]) -> Result<(), TransportError> {
    let mine = link.task.mine();
    let targets: Vec<PathBuf> = names.iter().map(|n| mine.join(name_path(n))).collect();
    let removals: Vec<_> = targets.iter().map(|p| link.remote.remove(p)).collect();
    let results: Vec<Result<(), TransportError>> = stream::iter(removals)
        .buffer_unordered(link.task.config.in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}

//! The end of a file's life: a staged batch is committed with one group commit unless the
//! lease ran out (C3), and only then are its sources removed (D2).

use std::time::Instant;

use tracing::{debug, warn};

use super::{ClientTask, Cursor, CycleError, Link, batch, discard, sftp};
use crate::failpoint;
use crate::store::{Outcome, ParseSettings, Staged};

/// Commits a staged batch (group commit) unless the lease ran out; returns the names now
/// durable.
pub(super) async fn commit_staged(
    task: &ClientTask,
    staged: Vec<Staged>,
) -> Result<Vec<Vec<u8>>, CycleError> {
    if staged.is_empty() {
        return Ok(Vec::new());
    }
    // Never commit once the lease ran out (C3): the claims stay for whoever owns the client.
    if !task.lease.valid_now() {
        discard(staged.into_iter().map(|s| s.path));
        return Err(CycleError::LeaseExpired);
    }
    let names: Vec<Vec<u8>> = staged.iter().map(|s| s.meta.name.clone()).collect();
    let sizes: Vec<u64> = staged.iter().map(|s| s.meta.size).collect();
    let paths: Vec<_> = staged.iter().map(|s| s.path.clone()).collect();
    let store = task.store.clone();
    let (worker, epoch) = (task.worker.clone(), task.epoch);
    let parse = parse_settings(task);
    let commit_began = Instant::now();
    let outcomes =
        tokio::task::spawn_blocking(move || store.commit_batch(&worker, epoch, staged, &parse))
            .await?;
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            discard(paths);
            return Err(e.into());
        }
    };
    failpoint::hit("after_commit");
    task.metrics
        .commit_seconds
        .observe(commit_began.elapsed().as_secs_f64());
    let committed = count_committed(task, &outcomes, &sizes);
    if committed > 0 {
        refresh_ingest(task).await;
    }
    debug!(client = %task.spec.name, files = names.len(), committed,
           bytes = sizes.iter().sum::<u64>(),
           ms = commit_began.elapsed().as_millis() as u64, "batch durable");
    Ok(names)
}

/// How this client's files are parsed. The leader checked the settings; should an unknown
/// one still arrive (a newer leader), the files are committed as files only.
fn parse_settings(task: &ClientTask) -> ParseSettings {
    ParseSettings::from_spec(&task.spec.ingest).unwrap_or_else(|e| {
        warn!(client = %task.spec.name, error = %e, "unknown parse settings: committing files only");
        ParseSettings::files_only()
    })
}

/// Adds a committed batch to the client's metrics and totals; returns how many files were
/// new (not committed before).
fn count_committed(task: &ClientTask, outcomes: &[Outcome], sizes: &[u64]) -> u64 {
    let (committed, committed_bytes) = outcomes
        .iter()
        .zip(sizes)
        .filter(|(o, _)| matches!(o, Outcome::Committed { .. }))
        .fold((0u64, 0u64), |(n, b), (_, size)| (n + 1, b + size));
    task.metrics
        .committed(&task.spec.name, committed, committed_bytes);
    let mut stats = task.stats();
    stats.committed_bytes += sizes.iter().sum::<u64>();
    stats
        .totals
        .add_batch(committed, committed_bytes, crate::clock::unix_ms());
    committed
}

/// Reads the client's sample counters after a commit added to them, for the heartbeat and the
/// metrics (counted by difference: the shard keeps the totals).
pub(super) async fn refresh_ingest(task: &ClientTask) {
    let store = task.store.clone();
    let client = task.spec.name.clone();
    match tokio::task::spawn_blocking(move || store.ingest(&client)).await {
        Ok(Ok(now)) => {
            let mut stats = task.stats();
            let before = std::mem::replace(&mut stats.ingest, now);
            let now = &stats.ingest;
            task.metrics.ingested(
                &task.spec.name,
                now.samples.saturating_sub(before.samples),
                now.parse_errors.saturating_sub(before.parse_errors),
            );
        }
        Ok(Err(e)) => {
            warn!(client = %task.spec.name, error = %e, "cannot read the sample counters")
        }
        Err(_) => {}
    }
}

/// Commits the staged batch of batch mode, if any.
pub(super) async fn commit_pending(
    task: &ClientTask,
    cursor: &mut Cursor,
) -> Result<(), CycleError> {
    let pending = std::mem::take(&mut cursor.pending);
    let names = commit_staged(task, pending).await?;
    cursor.durable.extend(names);
    Ok(())
}

/// Removes at the source the files of durable batches not removed yet.
pub(super) async fn flush_removals(link: Link<'_>, cursor: &mut Cursor) -> Result<(), CycleError> {
    let durable = std::mem::take(&mut cursor.durable);
    if durable.is_empty() {
        return Ok(());
    }
    remove_sources(link, &durable).await?;
    cursor.removed(&durable);
    Ok(())
}

/// The source goes only once its batch is durable (D2).
pub(super) async fn remove_sources(link: Link<'_>, names: &[Vec<u8>]) -> Result<(), CycleError> {
    if names.is_empty() {
        return Ok(());
    }
    let began = Instant::now();
    // In batch mode one script removes them; what it could not remove goes over SFTP, which
    // names what stood in the way.
    if !(link.remote.batch_capable() && batch::remove(link, names).await?) {
        sftp::remove(link, names).await?;
    }
    failpoint::hit("after_delete");
    debug!(client = %link.task.spec.name, files = names.len(), ms = began.elapsed().as_millis() as u64, "sources removed");
    Ok(())
}

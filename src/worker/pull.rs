//! The pull loop of one client: list, claim, transfer, verify, commit, delete.
//!
//! A file's life (DESIGN.md D1–D4): a complete regular file in the client's directory is
//! **claimed** by an atomic rename into `.sqd/claim/<worker>-<epoch>/` (only one claimer can
//! win), **transferred** with many SFTP requests in flight into the store's staging area while
//! hashed, **verified** (size and mtime unchanged, every byte read), **committed** in a batch
//! (one group commit, idempotent on the file key), and only then **removed** at the source.
//! A worker adopts claims of older epochs once their owner's lease must have run out.
//!
//! The lease is checked before claiming and right before committing (C3).
//!
//! In batch mode (the host lets the key run GNU `mv`, `tar` and `xargs`), a batch is claimed
//! by one `mv -n`, streamed by one `tar` and removed by one `rm`; the file's life is the same,
//! only the number of round trips changes (docs/ARCHITECTURE.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::held::Held;
use super::lifecycle::{self, ClaimAction, CopyVerdict, SettleTracker};
use super::staging::StagingWriter;
use crate::failpoint;
use crate::metrics::WorkerMetrics;
use crate::node::{Backoff, Lease};
use crate::spec::{ClientSpec, SshTarget};
use crate::store::{FileMeta, Outcome, Sink, Staged, StoreError, Totals};
use crate::transport::ssh::{self, EntryKind, Remote, RemoteEntry, SshParams, TransportError};

/// Settings shared by every client task of a worker.
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub poll: Duration,
    pub settle: Duration,
    pub batch_files: usize,
    pub in_flight: usize,
    pub max_file_bytes: u64,
    pub default_key: Option<PathBuf>,
    pub default_known_hosts: Option<PathBuf>,
    pub control_dir: PathBuf,
    /// How long another worker's unreleased claims wait for it to come back and resolve them
    /// before they are adopted (at least once; see [`lifecycle::claim_action`]).
    pub orphan_after: Duration,
    pub transfer: ssh::TransferMode,
    /// Spaces the SSH connection attempts of all the worker's clients.
    pub connect_pacer: Arc<Pacer>,
}

/// Hands out start times at least `interval` apart, first come first served.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Self {
        Pacer {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the next start time at or after `now`; returns how long to wait for it.
    fn reserve(&self, now: Instant) -> Duration {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = (*next).max(now);
        *next = at + self.interval;
        at - now
    }

    pub async fn wait(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Live numbers of one client, read by the heartbeat.
#[derive(Debug, Default, Clone)]
pub struct ClientStats {
    pub totals: Totals,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    pub oldest_backlog: Option<Instant>,
    pub last_error: Option<String>,
    /// Bytes committed since the last heartbeat took them.
    pub committed_bytes: u64,
}

pub type SharedStats = Arc<Mutex<ClientStats>>;

/// Everything one client's task gets.
pub struct ClientTask {
    pub worker: String,
    pub spec: ClientSpec,
    pub epoch: u64,
    pub store: Arc<dyn Sink>,
    pub lease: Lease,
    pub stats: SharedStats,
    pub config: Arc<PullConfig>,
    /// Nanoseconds spent working, summed over all tasks (the load index reads it).
    pub busy_ns: Arc<AtomicU64>,
    pub held: Held,
    pub metrics: WorkerMetrics,
    /// Rung when the client's agent saw a file closed: list now instead of at the next poll.
    pub wake: Arc<tokio::sync::Notify>,
}

/// Why a cycle stopped early.
#[derive(Debug, thiserror::Error)]
enum CycleError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Store(String),
    #[error("lease expired; waiting for the leader")]
    LeaseExpired,
}

impl CycleError {
    /// A short, stable kind for metrics.
    fn kind(&self) -> &'static str {
        match self {
            CycleError::Transport(t) => t.kind(),
            CycleError::Store(_) => "store",
            CycleError::LeaseExpired => "lease_expired",
        }
    }
}

/// Per-task state that survives between cycles.
struct Cursor {
    fresh: SettleTracker,
    claimed: SettleTracker,
    /// When each unreleased claim dir of another worker was first seen.
    foreign_seen: HashMap<Vec<u8>, Instant>,
    staged_seq: u64,
    /// Complete files of the last listing not claimed yet (oldest first): later batches take
    /// from here instead of listing a large directory again for every batch.
    queue: std::collections::VecDeque<RemoteEntry>,
    listed_at: Instant,
    /// (files, bytes) the last listing showed waiting, minus those claimed since.
    backlog: (usize, u64),
    /// (files, bytes) in our claim dir at the last listing.
    leftovers: (usize, u64),
    /// Names in our claim dir whose batch is durable, to remove at the source while the next
    /// batch is claimed and transferred.
    committed_unremoved: Vec<Vec<u8>>,
    /// Batch mode: a batch staged but not committed yet; it commits while the next one is
    /// claimed and streamed.
    pending: Vec<(Staged, Vec<u8>)>,
}

/// How long a listing's complete files may be worked through before the directory is listed
/// again (new files wait at most this long behind a large backlog).
const REUSE_LISTING_FOR: Duration = Duration::from_secs(10);
/// Shortest pause between listings timed for a settling file (a file written for minutes
/// must not make us list nonstop).
const MIN_RELIST: Duration = Duration::from_millis(100);

/// The pause after a cycle that left nothing to do: the poll interval, or less when a file
/// already seen will have settled sooner (one listing then finds it complete).
fn idle_pause(fresh: &SettleTracker, config: &PullConfig) -> Duration {
    let now = Instant::now();
    match fresh.next_settled(now, config.settle) {
        Some(due) => due
            .saturating_duration_since(now)
            .max(MIN_RELIST)
            .min(config.poll),
        None => config.poll,
    }
}

fn lock(stats: &SharedStats) -> std::sync::MutexGuard<'_, ClientStats> {
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves one client until `stop` turns true.
pub async fn serve_client(task: ClientTask, mut stop: watch::Receiver<bool>) {
    info!(worker = %task.worker, client = %task.spec.name, epoch = task.epoch, "serving client");
    // On record before the first claim: a crash from here on leaves a trace to resolve.
    task.held.started(&task.spec, task.epoch);
    refresh_totals(&task).await;
    let params = match ssh_params(&task.spec, &task.config) {
        Ok(p) => p,
        Err(e) => {
            set_error(&task, Some(e.clone()));
            task.metrics.error("config");
            warn!(client = %task.spec.name, error = %e, "client settings unusable");
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    // Unreachable hosts are retried less often than failing cycles on a live connection: each
    // attempt costs a process, and a fleet has hosts that stay down for days.
    let mut connect_backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut remote: Option<Remote> = None;
    let mut connected_before = false;
    let mut cursor = Cursor {
        fresh: SettleTracker::default(),
        claimed: SettleTracker::default(),
        foreign_seen: HashMap::new(),
        staged_seq: 0,
        queue: std::collections::VecDeque::new(),
        listed_at: Instant::now(),
        backlog: (0, 0),
        leftovers: (0, 0),
        committed_unremoved: Vec::new(),
        pending: Vec::new(),
    };
    loop {
        if *stop.borrow() {
            break;
        }
        // Only a normal idle pause may be cut short by the agent, never an error's backoff.
        let mut wakeable = false;
        let pause = if !task.lease.valid_now() {
            Duration::from_millis(50)
        } else if let Some(r) = &remote {
            let began = Instant::now();
            let result = cycle(&task, r, &mut cursor, &stop).await;
            task.busy_ns
                .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
            match result {
                Ok(more) => {
                    backoff.reset();
                    if more {
                        Duration::ZERO
                    } else {
                        wakeable = true;
                        idle_pause(&cursor.fresh, &task.config)
                    }
                }
                Err(CycleError::LeaseExpired) => Duration::from_millis(50),
                Err(e) => {
                    let reconnect = matches!(&e, CycleError::Transport(t) if t.needs_reconnect());
                    warn!(client = %task.spec.name, error = %e, "pull cycle failed");
                    task.metrics.error(e.kind());
                    set_error(&task, Some(e.to_string()));
                    if reconnect && let Some(r) = remote.take() {
                        r.close();
                    }
                    backoff.next_delay()
                }
            }
        } else {
            let attempt = async {
                task.config.connect_pacer.wait().await;
                ssh::connect(&params).await
            };
            let attempt = tokio::select! {
                r = attempt => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            match attempt {
                Ok(r) => {
                    connect_backoff.reset();
                    let transfer = if r.batch_capable() { "batch" } else { "sftp" };
                    info!(client = %task.spec.name, target = %r.target(), transfer, "connected");
                    task.metrics.ssh_connects.inc();
                    if connected_before {
                        task.metrics.ssh_reconnects.inc();
                    }
                    connected_before = true;
                    remote = Some(r);
                    Duration::ZERO
                }
                Err(e) => {
                    warn!(client = %task.spec.name, error = %e, "cannot connect");
                    task.metrics.error(e.kind());
                    connected_before = true;
                    set_error(&task, Some(e.to_string()));
                    connect_backoff.next_delay()
                }
            }
        };
        if !pause.is_zero() {
            let paused = Instant::now();
            let woken = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = task.wake.notified(), if wakeable => true,
                _ = stop.wait_for(|s| *s) => break,
            };
            if woken {
                debug!(client = %task.spec.name, "woken by the client's agent");
                // However often hints come, listings stay MIN_RELIST apart.
                tokio::time::sleep(MIN_RELIST.saturating_sub(paused.elapsed())).await;
            }
        }
    }
    // A staged batch commits if the lease still allows (else its claims stay for the next
    // owner); durable files still at the source must go before the claim dir is handed over,
    // or the next owner would store them again.
    if let Err(e) = commit_pending(&task, &mut cursor).await {
        warn!(client = %task.spec.name, error = %e, "staged batch not committed; its claims stay for the next owner");
    }
    let flushed = match &remote {
        Some(r) => match flush_removals(&task, r, &mut cursor).await {
            Ok(()) => true,
            Err(e) => {
                warn!(client = %task.spec.name, error = %e, "cannot remove committed sources; keeping the claims to resolve later");
                false
            }
        },
        None => cursor.committed_unremoved.is_empty(),
    };
    let released = match &remote {
        Some(r) if flushed => release(&task, r).await,
        _ => false,
    };
    if released {
        task.held.stopped(&task.spec.name, task.epoch);
    }
    if let Some(r) = remote {
        r.close();
    }
    info!(worker = %task.worker, client = %task.spec.name, epoch = task.epoch, released, "stopped serving client");
}

/// Marks our claim dir released: whatever is left in it was never committed (a cycle runs to
/// its end before a stop is honoured), so the next owner may take it at once.
async fn release(task: &ClientTask, remote: &Remote) -> bool {
    let claim_root = PathBuf::from(&task.spec.path).join(".sqd").join("claim");
    let name = lifecycle::claim_dir_name(&task.worker, task.epoch);
    let mine = claim_root.join(&name);
    match remote.list(&mine).await {
        Ok(files) if files.is_empty() => remote.remove_dir(&mine).await,
        Ok(_) => {
            let to = claim_root.join(format!("{name}{}", lifecycle::RELEASED_SUFFIX));
            remote.rename(&mine, &to).await.is_ok()
        }
        Err(e) if ssh::is_not_found(&e) => true,
        Err(e) => {
            warn!(client = %task.spec.name, error = %e, "cannot release claims; they will be resolved when this worker restarts");
            false
        }
    }
}

fn ssh_params(spec: &ClientSpec, config: &PullConfig) -> Result<SshParams, String> {
    let target = SshTarget::parse(&spec.ssh)?;
    let non_empty = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    Ok(SshParams {
        target,
        key_file: non_empty(&spec.key_file).or_else(|| config.default_key.clone()),
        known_hosts: non_empty(&spec.known_hosts).or_else(|| config.default_known_hosts.clone()),
        control_dir: control_dir_for(&config.control_dir, &spec.name),
        connect_timeout: Duration::from_secs(5),
        transfer: config.transfer,
    })
}

/// One control directory per client: connecting cleans stale sockets of earlier runs in its
/// directory, which must never touch another client's live one. Names are short hashes, as a
/// unix socket path (`<dir>/.ssh-connectionXXXXXX/master`) must stay under ~100 bytes; a store
/// path too long for that falls back to the temp dir.
fn control_dir_for(base: &Path, client: &str) -> PathBuf {
    let tag = &blake3::hash(client.as_bytes()).to_hex()[..8];
    let dir = base.join(tag);
    if dir.as_os_str().len() + 32 <= 100 {
        return dir;
    }
    let store_tag = &blake3::hash(base.as_os_str().as_encoded_bytes()).to_hex()[..8];
    std::env::temp_dir()
        .join(format!("sqd-ssh-{store_tag}"))
        .join(tag)
}

fn set_error(task: &ClientTask, error: Option<String>) {
    lock(&task.stats).last_error = error;
}

/// Reads the client's totals from the catalog (once per assignment; batches add to them).
async fn refresh_totals(task: &ClientTask) {
    let store = task.store.clone();
    let client = task.spec.name.clone();
    if let Ok(Ok(totals)) = tokio::task::spawn_blocking(move || store.totals(&client)).await {
        lock(&task.stats).totals = totals;
    }
}

/// One file on its way.
struct Work {
    name: Vec<u8>,
    size: u64,
    mtime: i64,
}

/// Runs one cycle: claim → transfer → commit of a batch (listing the directory first when
/// the last listing is used up or old), while the sources of the previous durable batch are
/// removed. Returns whether more work is already waiting (so the caller does not sleep).
async fn cycle(
    task: &ClientTask,
    remote: &Remote,
    cursor: &mut Cursor,
    stop: &watch::Receiver<bool>,
) -> Result<bool, CycleError> {
    if remote.batch_capable() {
        return cycle_pipelined(task, remote, cursor, stop).await;
    }
    // A batch staged before batch mode was given up on this connection.
    commit_pending(task, cursor).await?;
    let mine = claim_dir(task);
    let stopping = *stop.borrow();
    let began = Instant::now();
    let relist = cursor.queue.is_empty() || cursor.listed_at.elapsed() >= REUSE_LISTING_FOR;
    let durable = std::mem::take(&mut cursor.committed_unremoved);
    let (removed, worked) = if relist {
        // Our claim dir is listed below: what is durable must be gone from it first.
        let removed = remove_sources(task, remote, &mine, &durable).await;
        (
            removed,
            work(task, remote, cursor, began, true, stopping).await,
        )
    } else {
        tokio::join!(
            remove_sources(task, remote, &mine, &durable),
            work(task, remote, cursor, began, false, stopping)
        )
    };
    if removed.is_ok() {
        for n in &durable {
            cursor.claimed.forget(n);
        }
    }
    // A failed removal leaves the file in our claim dir: the next listing finds it, and the
    // store recognises it as already committed, so it is only removed then.
    removed?;
    let (more, committed) = worked?;
    cursor.committed_unremoved = committed;
    if !more {
        flush_removals(task, remote, cursor).await?;
    }
    Ok(more)
}

/// Batch mode's cycle: batch N commits while batch N+1 is claimed and streamed by a script
/// that first removes the sources of batch N-1, so the host, the link and the local disk all
/// work at once. Before a listing (which reads our claim dir) the pipeline is drained.
async fn cycle_pipelined(
    task: &ClientTask,
    remote: &Remote,
    cursor: &mut Cursor,
    stop: &watch::Receiver<bool>,
) -> Result<bool, CycleError> {
    let began = Instant::now();
    let stopping = *stop.borrow();
    let relist = cursor.queue.is_empty() || cursor.listed_at.elapsed() >= REUSE_LISTING_FOR;
    if relist || stopping {
        commit_pending(task, cursor).await?;
        flush_removals(task, remote, cursor).await?;
        let fetched = fetch(task, remote, cursor, began, true, stopping, &[]).await?;
        cursor.pending = fetched.staged;
        return Ok(fetched.more || !cursor.pending.is_empty());
    }
    let durable = std::mem::take(&mut cursor.committed_unremoved);
    let pending = std::mem::take(&mut cursor.pending);
    let (committed, fetched) = tokio::join!(
        commit_staged(task, pending),
        fetch(task, remote, cursor, began, false, false, &durable)
    );
    match fetched.as_ref().map(|f| f.removed) {
        Ok(Some(true)) => {
            failpoint::hit("after_delete");
            for n in &durable {
                cursor.claimed.forget(n);
            }
        }
        // Not tried, refused or unknown: removed (over SFTP if need be) before the listing.
        _ => cursor.committed_unremoved.extend(durable),
    }
    // The fetched batch is kept even when the commit failed: it commits next time.
    let fetched = fetched.map(|mut f| {
        cursor.pending = std::mem::take(&mut f.staged);
        f.more
    });
    cursor.committed_unremoved.extend(committed?);
    let more = fetched?;
    debug!(client = %task.spec.name, files = cursor.pending.len(), ms = began.elapsed().as_millis() as u64, "batch fetched while the previous one committed");
    Ok(more || !cursor.pending.is_empty() || !cursor.committed_unremoved.is_empty())
}

/// Commits the staged batch of batch mode, if any.
async fn commit_pending(task: &ClientTask, cursor: &mut Cursor) -> Result<(), CycleError> {
    let pending = std::mem::take(&mut cursor.pending);
    let names = commit_staged(task, pending).await?;
    cursor.committed_unremoved.extend(names);
    Ok(())
}

/// Removes at the source the files of durable batches not removed yet.
async fn flush_removals(
    task: &ClientTask,
    remote: &Remote,
    cursor: &mut Cursor,
) -> Result<(), CycleError> {
    let durable = std::mem::take(&mut cursor.committed_unremoved);
    if durable.is_empty() {
        return Ok(());
    }
    let mine = claim_dir(task);
    remove_sources(task, remote, &mine, &durable).await?;
    for n in &durable {
        cursor.claimed.forget(n);
    }
    Ok(())
}

fn claim_dir(task: &ClientTask) -> PathBuf {
    PathBuf::from(&task.spec.path).join(claim_dir_in_client_dir(task))
}

/// [`claim_dir`] relative to the client's directory.
fn claim_dir_in_client_dir(task: &ClientTask) -> PathBuf {
    Path::new(".sqd")
        .join("claim")
        .join(lifecycle::claim_dir_name(&task.worker, task.epoch))
}

/// The source goes only once its batch is durable (D2).
async fn remove_sources(
    task: &ClientTask,
    remote: &Remote,
    mine: &Path,
    names: &[Vec<u8>],
) -> Result<(), CycleError> {
    if names.is_empty() {
        return Ok(());
    }
    let began = Instant::now();
    if remote.batch_capable() {
        let listed: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let claim_rel = claim_dir_in_client_dir(task);
        let plan = ssh::BatchPlan {
            dir: &task.spec.path,
            claim_dir: &claim_rel.to_string_lossy(),
            remove: &listed,
            claim: &[],
            stream: &[],
        };
        let (_, end) = remote.batch(&plan, NoFiles).await?;
        if end.removed == Some(true) {
            failpoint::hit("after_delete");
            debug!(client = %task.spec.name, files = names.len(), ms = began.elapsed().as_millis() as u64, "sources removed");
            return Ok(());
        }
        // Removal over SFTP names what stood in the way.
    }
    let targets: Vec<PathBuf> = names.iter().map(|n| mine.join(name_path(n))).collect();
    let removals: Vec<_> = targets.iter().map(|p| remote.remove(p)).collect();
    let results: Vec<Result<(), TransportError>> = stream::iter(removals)
        .buffer_unordered(task.config.in_flight)
        .collect()
        .await;
    for r in results {
        r?;
    }
    failpoint::hit("after_delete");
    debug!(client = %task.spec.name, files = names.len(), ms = began.elapsed().as_millis() as u64, "sources removed");
    Ok(())
}

/// Claims, transfers and commits one batch. Returns whether more files are waiting and the
/// names of the files now durable (their sources still to remove).
async fn work(
    task: &ClientTask,
    remote: &Remote,
    cursor: &mut Cursor,
    began: Instant,
    relist: bool,
    stopping: bool,
) -> Result<(bool, Vec<Vec<u8>>), CycleError> {
    let fetched = fetch(task, remote, cursor, began, relist, stopping, &[]).await?;
    let fetched_in = began.elapsed();
    let names = commit_staged(task, fetched.staged).await?;
    debug!(client = %task.spec.name, files = names.len(),
           fetch_ms = fetched_in.as_millis() as u64,
           commit_ms = (began.elapsed() - fetched_in).as_millis() as u64,
           "batch timing");
    Ok((fetched.more, names))
}

/// What [`fetch`] brought.
struct Fetched {
    /// More complete files wait in the listing.
    more: bool,
    /// Files staged intact, not committed yet.
    staged: Vec<(Staged, Vec<u8>)>,
    /// Whether the sources given to remove are gone (`None`: not tried).
    removed: Option<bool>,
}

/// Lists when asked, then claims and transfers one batch into staging. In batch mode the
/// same script first removes `remove` (durable files in our claim dir).
async fn fetch(
    task: &ClientTask,
    remote: &Remote,
    cursor: &mut Cursor,
    began: Instant,
    relist: bool,
    stopping: bool,
    remove: &[Vec<u8>],
) -> Result<Fetched, CycleError> {
    let cfg = &task.config;
    let dir = PathBuf::from(&task.spec.path);
    let claim_root = dir.join(".sqd").join("claim");
    let mine = claim_dir(task);
    let now = began;
    let mut ready_leftovers = Vec::new();
    if relist {
        let warning = list_ready(task, remote, &dir, cursor, now).await?;
        remote.mkdir(&dir.join(".sqd")).await?;
        remote.mkdir(&claim_root).await?;
        remote.mkdir(&mine).await?;
        // The host answers: earlier errors are over; this cycle reports its own.
        set_error(task, warning);
        adopt(task, remote, &claim_root, &mine, &mut cursor.foreign_seen).await?;
        // Leftover claims of ours: interrupted, changed during copy, or just adopted.
        let leftovers: Vec<RemoteEntry> = remote
            .list(&mine)
            .await?
            .into_iter()
            .filter(|e| e.kind == EntryKind::File)
            .collect();
        cursor.leftovers = (leftovers.len(), leftovers.iter().map(|e| e.size).sum());
        ready_leftovers = cursor
            .claimed
            .observe(&leftovers, now, cfg.settle)
            .into_iter()
            .map(|e| Work {
                name: e.name.clone(),
                size: e.size,
                mtime: e.mtime,
            })
            .collect();
    }
    {
        let mut stats = lock(&task.stats);
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

    let room = cfg.batch_files.saturating_sub(ready_leftovers.len());
    let take = room.min(cursor.queue.len());
    let mut to_claim: Vec<RemoteEntry> = cursor.queue.drain(..take).collect();
    if remote.batch_capable() && !(ready_leftovers.is_empty() && remove.is_empty()) {
        // One name once per batch: a new file named like a leftover, or like a file this
        // batch removes from the claim dir, waits for the next round (a claim would not
        // replace it anyway, and the removal runs while the claim does).
        let taken: std::collections::HashSet<&[u8]> = ready_leftovers
            .iter()
            .map(|w| w.name.as_slice())
            .chain(remove.iter().map(Vec::as_slice))
            .collect();
        to_claim.retain(|e| !taken.contains(e.name.as_slice()));
    }
    let more = !cursor.queue.is_empty();
    let to_claim: Vec<&RemoteEntry> = to_claim.iter().collect();

    let nothing = |more| Fetched {
        more,
        staged: Vec::new(),
        removed: None,
    };
    if stopping {
        return Ok(nothing(false));
    }
    if !task.lease.valid_now() {
        return Err(CycleError::LeaseExpired);
    }
    let batch = remote.batch_capable();
    let claimed = if batch {
        // Claimed by the same script that streams them (see `transfer_batch`).
        to_claim
            .iter()
            .map(|e| Work {
                name: e.name.clone(),
                size: e.size,
                mtime: e.mtime,
            })
            .collect()
    } else {
        claim(remote, &dir, &mine, &to_claim, cfg.in_flight).await?
    };
    for w in &claimed {
        cursor.fresh.forget(&w.name);
        cursor.backlog.0 = cursor.backlog.0.saturating_sub(1);
        cursor.backlog.1 = cursor.backlog.1.saturating_sub(w.size);
    }
    if !claimed.is_empty() && !batch {
        failpoint::hit("after_claim");
    }
    let to_claim: Vec<Vec<u8>> = if batch {
        claimed.iter().map(|w| w.name.clone()).collect()
    } else {
        Vec::new()
    };

    let mut work = ready_leftovers;
    work.extend(claimed);
    if work.is_empty() {
        return Ok(nothing(more));
    }

    let (staged, removed) = if batch {
        transfer_batch(task, remote, remove, &to_claim, work, cursor).await?
    } else {
        (transfer(task, remote, &mine, work, cursor).await, None)
    };
    let (staged, changed): (Vec<_>, Vec<_>) = staged.into_iter().partition(|(s, _)| s.is_some());
    for (_, name) in &changed {
        // Watch it again: it must settle before another try.
        cursor.claimed.forget(name);
    }
    let staged: Vec<(Staged, Vec<u8>)> = staged
        .into_iter()
        .filter_map(|(s, name)| s.map(|s| (s, name)))
        .collect();
    if !staged.is_empty() {
        failpoint::hit("after_stage");
    }
    Ok(Fetched {
        more,
        staged,
        removed,
    })
}

/// Commits a staged batch (group commit) unless the lease ran out; returns the names now
/// durable.
async fn commit_staged(
    task: &ClientTask,
    staged: Vec<(Staged, Vec<u8>)>,
) -> Result<Vec<Vec<u8>>, CycleError> {
    if staged.is_empty() {
        return Ok(Vec::new());
    }

    // Never commit once the lease ran out (C3): the claims stay for whoever owns the client.
    if !task.lease.valid_now() {
        discard(staged.iter().map(|(s, _)| s.path.clone()).collect());
        return Err(CycleError::LeaseExpired);
    }
    let names: Vec<Vec<u8>> = staged.iter().map(|(_, n)| n.clone()).collect();
    let bytes: u64 = staged.iter().map(|(s, _)| s.meta.size).sum();
    let batch: Vec<Staged> = staged.into_iter().map(|(s, _)| s).collect();
    let paths: Vec<PathBuf> = batch.iter().map(|s| s.path.clone()).collect();
    let sizes: Vec<u64> = batch.iter().map(|s| s.meta.size).collect();
    let store = task.store.clone();
    let (worker, epoch) = (task.worker.clone(), task.epoch);
    let commit_began = Instant::now();
    let outcomes = tokio::task::spawn_blocking(move || store.commit_batch(&worker, epoch, batch))
        .await
        .map_err(|e| CycleError::Store(format!("commit task failed: {e}")))?;
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            discard(paths);
            return Err(CycleError::Store(e.to_string()));
        }
    };
    failpoint::hit("after_commit");
    task.metrics
        .commit_seconds
        .observe(commit_began.elapsed().as_secs_f64());
    let (committed, committed_bytes) = outcomes
        .iter()
        .zip(&sizes)
        .filter(|(o, _)| matches!(o, Outcome::Committed { .. }))
        .fold((0u64, 0u64), |(n, b), (_, size)| (n + 1, b + size));
    task.metrics
        .committed(&task.spec.name, committed, committed_bytes);
    debug!(client = %task.spec.name, files = names.len(), committed, bytes, ms = commit_began.elapsed().as_millis() as u64, "batch durable");
    {
        let mut stats = lock(&task.stats);
        stats.committed_bytes += bytes;
        stats
            .totals
            .add_batch(committed, committed_bytes, crate::clock::unix_ms());
    }
    Ok(names)
}

/// Lists the client directory and queues its complete files (settled, matching, not too
/// large), oldest first; notes the backlog the listing shows. Returns a warning for status.
async fn list_ready(
    task: &ClientTask,
    remote: &Remote,
    dir: &Path,
    cursor: &mut Cursor,
    now: Instant,
) -> Result<Option<String>, CycleError> {
    let cfg = &task.config;
    let pattern = if task.spec.pattern.is_empty() {
        None
    } else {
        glob::Pattern::new(&task.spec.pattern).ok()
    };
    // Listed first, so a missing or unreadable directory is reported by its own name.
    let listing: Vec<RemoteEntry> = remote
        .list(dir)
        .await?
        .into_iter()
        .filter(|e| lifecycle::is_candidate(e, pattern.as_ref()))
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

/// A remote name as a path component (bytes, never interpreted).
fn name_path(name: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name))
}

async fn claim(
    remote: &Remote,
    dir: &Path,
    mine: &Path,
    ready: &[&RemoteEntry],
    in_flight: usize,
) -> Result<Vec<Work>, TransportError> {
    let renames: Vec<_> = ready
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let from = dir.join(name_path(&e.name));
            let to = mine.join(name_path(&e.name));
            async move { (i, remote.rename(&from, &to).await) }
        })
        .collect();
    let results: Vec<(usize, Result<bool, TransportError>)> = stream::iter(renames)
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut claimed = Vec::new();
    for (i, r) in results {
        let e = ready[i];
        match r {
            Ok(true) => claimed.push(Work {
                name: e.name.clone(),
                size: e.size,
                mtime: e.mtime,
            }),
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
    staged: Vec<(Staged, Vec<u8>)>,
    changed: Vec<Vec<u8>>,
    first_chunk_seen: bool,
    /// The batch claims files (rather than only re-reading leftovers).
    claiming: bool,
    writer: StagingWriter,
}

impl BatchReceiver {
    fn staging_path(&self, seq: u64) -> PathBuf {
        self.staging.join(format!("{}-{seq}.part", self.prefix))
    }
}

impl ssh::StreamSink for BatchReceiver {
    fn finished(&mut self) -> std::io::Result<()> {
        self.writer
            .wait()
            .map_err(|e| ssh::sink_failed(StoreError::io(&self.staging, e).to_string()))
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
        let local = |e: std::io::Error| ssh::sink_failed(StoreError::io(&path, e).to_string());
        let mut out = self.writer.create(&path, size).map_err(local)?;
        let mut buf = vec![0u8; 256 * 1024];
        let copied = loop {
            let n = match file.content.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if !self.first_chunk_seen {
                self.first_chunk_seen = true;
                failpoint::hit("mid_transfer");
            }
            if let Err(e) = out.write(&buf[..n]) {
                break Err(local(e));
            }
        };
        let (read, hash) = match copied.and_then(|()| out.finish().map_err(local)) {
            Ok(done) => done,
            Err(e) => {
                discard(vec![path]);
                return Err(e);
            }
        };
        self.staged.push((
            Staged {
                meta: FileMeta {
                    client: self.client.clone(),
                    name: file.name.to_vec(),
                    size: read,
                    mtime,
                    hash,
                },
                path,
            },
            file.name.to_vec(),
        ));
        Ok(())
    }
}

/// Claims `to_claim` and streams every file of `work` (the claimed ones and ready leftovers)
/// into staging with one batch script; `None` for a file that changed or did not arrive (a
/// name the claim did not move: it vanished, or a leftover of that name holds its place).
/// When `tar` did not end cleanly, each received file is checked again against its listed
/// size and mtime before it counts.
async fn transfer_batch(
    task: &ClientTask,
    remote: &Remote,
    remove: &[Vec<u8>],
    to_claim: &[Vec<u8>],
    work: Vec<Work>,
    cursor: &mut Cursor,
) -> Result<(Vec<(Option<Staged>, Vec<u8>)>, Option<bool>), CycleError> {
    let mine = claim_dir(task);
    let claim_rel = claim_dir_in_client_dir(task);
    let claim_rel = claim_rel.to_string_lossy();
    let names: Vec<&[u8]> = work.iter().map(|w| w.name.as_slice()).collect();
    let claim_names: Vec<&[u8]> = to_claim.iter().map(Vec::as_slice).collect();
    let remove_names: Vec<&[u8]> = remove.iter().map(Vec::as_slice).collect();
    let plan = ssh::BatchPlan {
        dir: &task.spec.path,
        claim_dir: &claim_rel,
        remove: &remove_names,
        claim: &claim_names,
        stream: &names,
    };
    let receiver = BatchReceiver {
        client: task.spec.name.clone(),
        staging: task.store.staging_dir().to_path_buf(),
        prefix: format!("{}-{}-{}", task.spec.name, task.worker, task.epoch),
        seq: cursor.staged_seq,
        expected: work
            .iter()
            .map(|w| (w.name.clone(), (w.size, w.mtime)))
            .collect(),
        staged: Vec::new(),
        changed: Vec::new(),
        first_chunk_seen: false,
        claiming: !to_claim.is_empty(),
        writer: StagingWriter::default(),
    };
    let first_seq = cursor.staged_seq;
    // Every staging name this batch may use is reserved, so a failure can sweep them all.
    cursor.staged_seq += work.len() as u64;
    let reserved: Vec<PathBuf> = (first_seq + 1..=first_seq + work.len() as u64)
        .map(|seq| receiver.staging_path(seq))
        .collect();
    let (mut received, end) = match remote.batch(&plan, receiver).await {
        Ok(done) => done,
        Err(TransportError::Sink { reason }) => {
            discard(reserved);
            return Err(CycleError::Store(reason));
        }
        Err(e) => {
            discard(reserved);
            return Err(e.into());
        }
    };
    if !end.clean {
        // GNU tar saw a file change while reading it, or could not read one: check each
        // received file against the listing again.
        debug!(client = %task.spec.name, "batch stream ended unclean: re-checking its files");
        let checks: Vec<_> = received
            .staged
            .iter()
            .map(|(s, name)| {
                let path = mine.join(name_path(name));
                async move { (remote.stat(&path).await, s.meta.size, s.meta.mtime) }
            })
            .collect();
        let verdicts: Vec<_> = stream::iter(checks)
            .buffered(task.config.in_flight)
            .collect()
            .await;
        if let Some(Err(e)) = verdicts
            .iter()
            .find(|(now, _, _)| now.is_err())
            .map(|v| &v.0)
        {
            let e = e.clone();
            discard(reserved);
            return Err(e.into());
        }
        let mut kept = Vec::with_capacity(received.staged.len());
        for ((s, name), (now, size, mtime)) in received.staged.drain(..).zip(verdicts) {
            match now.ok().flatten() {
                Some((size_now, mtime_now)) if size_now == size && mtime_now == mtime => {
                    kept.push((s, name));
                }
                _ => {
                    warn!(client = %task.spec.name, name = %String::from_utf8_lossy(&name),
                          "file changed during copy: not committed, not deleted; retried once it settles");
                    discard(vec![s.path]);
                    received.changed.push(name);
                }
            }
        }
        received.staged = kept;
    }
    let mut out: Vec<(Option<Staged>, Vec<u8>)> = received
        .staged
        .into_iter()
        .map(|(s, name)| (Some(s), name))
        .collect();
    out.extend(received.changed.into_iter().map(|n| (None, n)));
    // Asked for but not in the stream: gone, or never claimed.
    out.extend(received.expected.into_keys().map(|n| (None, n)));
    Ok((out, end.removed))
}

/// Transfers files into staging; `None` for a file that changed during the copy.
async fn transfer(
    task: &ClientTask,
    remote: &Remote,
    mine: &Path,
    work: Vec<Work>,
    cursor: &mut Cursor,
) -> Vec<(Option<Staged>, Vec<u8>)> {
    let staging = task.store.staging_dir().to_path_buf();
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
        .map(|(w, local)| async move {
            let result = fetch_one(task, remote, mine, &w, &local).await;
            match result {
                Ok(Some(s)) => (Some(s), w.name),
                Ok(None) => {
                    discard(vec![local]);
                    (None, w.name)
                }
                Err(e) => {
                    discard(vec![local]);
                    warn!(client = %task.spec.name, name = %String::from_utf8_lossy(&w.name), error = %e, "transfer failed");
                    set_error(task, Some(e.to_string()));
                    (None, w.name)
                }
            }
        })
        .collect();
    stream::iter(fetches)
        .buffer_unordered(task.config.in_flight)
        .collect()
        .await
}

async fn fetch_one(
    task: &ClientTask,
    remote: &Remote,
    mine: &Path,
    w: &Work,
    local: &Path,
) -> Result<Option<Staged>, TransportError> {
    let local_err = |e: std::io::Error| TransportError::Sink {
        reason: StoreError::io(local, e).to_string(),
    };
    let mut writer = StagingWriter::buffered();
    let mut out = writer.create(local, w.size).map_err(local_err)?;
    let mut first_chunk = true;
    let (read, size_after, mtime_after) = remote
        .read_file(&mine.join(name_path(&w.name)), w.size, |chunk| {
            out.write(chunk)
                .map_err(|e| ssh::sink_failed(StoreError::io(local, e).to_string()))?;
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
                client: task.spec.name.clone(),
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
            warn!(client = %task.spec.name, name = %String::from_utf8_lossy(&w.name),
                  listed_size = listed.0, size_after = after.0, read,
                  "file changed during copy: not committed, not deleted; retried once it settles");
            Ok(None)
        }
    }
}

fn discard(paths: Vec<PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Moves the files of released (or long orphaned) claim dirs into ours, then removes the
/// emptied dirs (see [`lifecycle::claim_action`]).
async fn adopt(
    task: &ClientTask,
    remote: &Remote,
    claim_root: &Path,
    mine: &Path,
    foreign_seen: &mut HashMap<Vec<u8>, Instant>,
) -> Result<(), TransportError> {
    let now = Instant::now();
    let dirs = remote.list(claim_root).await?;
    foreign_seen.retain(|name, _| dirs.iter().any(|d| &d.name == name));
    for dir in dirs {
        if dir.kind != EntryKind::Dir {
            continue;
        }
        let Some(claim) = lifecycle::parse_claim_dir(&dir.name) else {
            continue;
        };
        let seen = *foreign_seen.entry(dir.name.clone()).or_insert(now);
        let orphaned = now.duration_since(seen) >= task.config.orphan_after;
        if lifecycle::claim_action(&claim, &task.worker, task.epoch, orphaned) != ClaimAction::Adopt
        {
            continue;
        }
        if !claim.released {
            warn!(client = %task.spec.name, from = %String::from_utf8_lossy(&dir.name),
                  "adopting claims of a worker that never came back: a file it had committed may be stored twice");
        }
        let old = claim_root.join(name_path(&dir.name));
        let files = match remote.list(&old).await {
            Ok(f) => f,
            Err(e) if ssh::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let mut adopted = 0;
        for f in files.iter().filter(|f| f.kind == EntryKind::File) {
            match remote
                .rename(
                    &old.join(name_path(&f.name)),
                    &mine.join(name_path(&f.name)),
                )
                .await
            {
                Ok(true) => adopted += 1,
                Ok(false) => {}
                Err(e) if e.needs_reconnect() => return Err(e),
                // Same name already in ours: adopt it once ours is processed.
                Err(_) => {}
            }
        }
        if adopted > 0 {
            info!(client = %task.spec.name, from = %String::from_utf8_lossy(&dir.name), files = adopted, "adopted claims");
        }
        remote.remove_dir(&old).await;
    }
    Ok(())
}

/// Resolves what a crash of this worker left in one client's directory: claimed files whose
/// key is in our catalog were committed, so their source is removed; the others go back to
/// the directory for whoever serves the client now. Claim dirs of the epoch we serve right
/// now are left to that task.
pub async fn resolve_leftovers(
    worker: &str,
    spec: &ClientSpec,
    store: Arc<dyn Sink>,
    config: &PullConfig,
    held: &Held,
) -> Result<(), String> {
    let params = ssh_params(spec, config)?;
    let remote = ssh::connect(&params).await.map_err(|e| e.to_string())?;
    let result = resolve_with(worker, spec, store, &remote, held).await;
    remote.close();
    result.map_err(|e| e.to_string())
}

async fn resolve_with(
    worker: &str,
    spec: &ClientSpec,
    store: Arc<dyn Sink>,
    remote: &Remote,
    held: &Held,
) -> Result<(), TransportError> {
    let dir = PathBuf::from(&spec.path);
    let claim_root = dir.join(".sqd").join("claim");
    let dirs = match remote.list(&claim_root).await {
        Ok(d) => d,
        Err(e) if ssh::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (mut committed, mut returned) = (0, 0);
    for d in dirs.iter().filter(|d| d.kind == EntryKind::Dir) {
        let Some(claim) = lifecycle::parse_claim_dir(&d.name) else {
            continue;
        };
        if claim.worker != worker
            || claim.released
            || held.running_epoch(&spec.name) == Some(claim.epoch)
        {
            continue;
        }
        let old = claim_root.join(name_path(&d.name));
        for f in remote
            .list(&old)
            .await?
            .into_iter()
            .filter(|f| f.kind == EntryKind::File)
        {
            let path = old.join(name_path(&f.name));
            let mut hasher = blake3::Hasher::new();
            let (read, size_after, mtime_after) = remote
                .read_file(&path, f.size, |chunk| {
                    hasher.update(chunk);
                    Ok(())
                })
                .await?;
            let meta = FileMeta {
                client: spec.name.clone(),
                name: f.name.clone(),
                size: read,
                mtime: f.mtime,
                hash: *hasher.finalize().as_bytes(),
            };
            let intact = lifecycle::verify_copy(f.size, f.mtime, read, size_after, mtime_after)
                == CopyVerdict::Intact;
            let key = meta.key();
            let store = store.clone();
            let known = intact
                && tokio::task::spawn_blocking(move || store.contains(&key))
                    .await
                    .map_err(|e| TransportError::Sftp {
                        target: remote.target().to_owned(),
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?
                    .unwrap_or(false);
            if known {
                remote.remove(&path).await?;
                committed += 1;
            } else if remote
                .rename(&path, &dir.join(name_path(&f.name)))
                .await
                .is_ok()
            {
                returned += 1;
            }
        }
        if !remote.remove_dir(&old).await {
            // Something could not go back (a new file took its name): let the owner adopt it.
            let released = claim_root.join(format!(
                "{}{}",
                String::from_utf8_lossy(&d.name),
                lifecycle::RELEASED_SUFFIX
            ));
            let _ = remote.rename(&old, &released).await;
        }
    }
    if committed + returned > 0 {
        info!(client = %spec.name, committed, returned, "resolved claims left by an earlier crash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_starts_and_forgets_idle_time() {
        let p = Pacer::new(Duration::from_millis(50));
        let t0 = Instant::now() + Duration::from_secs(1);
        assert_eq!(p.reserve(t0), Duration::ZERO);
        assert_eq!(p.reserve(t0), Duration::from_millis(50));
        assert_eq!(p.reserve(t0), Duration::from_millis(100));
        // After a quiet spell the next start is immediate, not a burst of saved-up slots.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.reserve(later), Duration::ZERO);
        assert_eq!(p.reserve(later), Duration::from_millis(50));
    }
}

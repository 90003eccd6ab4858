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
//!
//! Shape: [`serve_client`] is the driver (backoff, pauses, wake-ups, `last_error`); it steps a
//! [`puller::ClientPuller`], a small state machine over one connection. A step runs one cycle:
//! [`fetch`] surveys and claims, [`sftp`] or [`batch`] transfers, [`commit`] commits and
//! removes sources. [`recover`] adopts, releases and resolves claims left by others or by a
//! crash.

mod batch;
mod commit;
mod fetch;
mod puller;
mod reconnect;
mod recover;
mod sftp;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::held::Held;
use crate::files::{ClaimDir, ClaimLayout, RemoteEntry, SettleTracker};
use crate::log_gate::LogGate;
use crate::metrics::WorkerMetrics;
use crate::node::{Backoff, Lease};
use crate::spec::{BadSshTarget, ClientSpec, SshTarget};
use crate::store::{Sink, Staged, StoreError, Totals};
use crate::transport::ssh::{self, Remote, SshParams, TransportError};
use puller::{ClientPuller, Step, StepError};
use reconnect::{Priority, ReconnectBackoff, SpawnBudget};
pub(crate) use recover::resolve_leftovers;

/// Settings shared by every client task of a worker.
#[derive(Debug, Clone)]
pub(crate) struct PullConfig {
    pub(crate) poll: Duration,
    pub(crate) settle: Duration,
    pub(crate) batch_files: usize,
    pub(crate) in_flight: usize,
    pub(crate) max_file_bytes: u64,
    pub(crate) default_key: Option<PathBuf>,
    pub(crate) default_known_hosts: Option<PathBuf>,
    pub(crate) control_dir: PathBuf,
    /// How long another worker's unreleased claims wait for it to come back and resolve them
    /// before they are adopted (at least once; see [`super::lifecycle::claim_action`]).
    pub(crate) orphan_after: Duration,
    pub(crate) transfer: ssh::TransferMode,
    /// The longest pause between connection attempts to a host that keeps failing.
    pub(crate) max_reconnect: Duration,
    /// Every `ssh` process the worker's clients start goes through it.
    pub(crate) spawner: Arc<Spawner>,
    /// Workers the operator forgot: their unreleased claims are adopted without waiting.
    pub(crate) forgotten: Forgotten,
}

/// The ids of workers the leader said were forgotten (`sqdctl forget-worker`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Forgotten(Arc<Mutex<std::collections::HashSet<String>>>);

impl Forgotten {
    pub(crate) fn forget(&self, workers: impl IntoIterator<Item = String>) {
        self.set().extend(workers);
    }

    fn contains(&self, worker: &str) -> bool {
        self.set().contains(worker)
    }

    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The worker's `ssh` spawns: the budget they wait for and their count in `/metrics`.
#[derive(Debug)]
pub(crate) struct Spawner {
    budget: Mutex<SpawnBudget>,
    spawned: prometheus_client::metrics::counter::Counter,
}

impl Spawner {
    pub(crate) fn new(per_s: u32, spawned: prometheus_client::metrics::counter::Counter) -> Self {
        Spawner {
            budget: Mutex::new(SpawnBudget::new(per_s, Instant::now())),
            spawned,
        }
    }

    /// Waits until the budget allows one more `ssh` for `who`, and counts it.
    async fn wait(&self, who: Priority) {
        loop {
            let taken = self
                .budget
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(Instant::now(), who);
            match taken {
                Ok(()) => {
                    self.spawned.inc();
                    return;
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// How long the reachability check waits for the host's ssh port to accept.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens an SSH connection the cheap way first: a TCP connect to the ssh port tells a host
/// that is down or refusing without starting a process; only then does the `ssh` spawn wait
/// its turn in the worker's budget.
pub(crate) async fn open_ssh(
    params: &SshParams,
    spawner: &Spawner,
    who: Priority,
) -> Result<Remote, TransportError> {
    ssh::reachable(&params.target, REACH_TIMEOUT).await?;
    spawner.wait(who).await;
    ssh::connect(params).await
}

/// Live numbers of one client, read by the heartbeat.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientStats {
    pub(crate) totals: Totals,
    pub(crate) backlog_files: u64,
    pub(crate) backlog_bytes: u64,
    pub(crate) oldest_backlog: Option<Instant>,
    pub(crate) last_error: Option<String>,
    /// Bytes committed since the last heartbeat took them.
    pub(crate) committed_bytes: u64,
    /// The shard's sample counters for this client, as of the last commit.
    pub(crate) ingest: crate::stats::tsdb::ClientIngest,
}

pub(crate) type SharedStats = Arc<Mutex<ClientStats>>;

/// What every step of one client's pull works with.
pub(crate) struct ClientTask {
    pub(crate) worker: String,
    pub(crate) spec: ClientSpec,
    pub(crate) epoch: u64,
    pub(crate) store: Arc<dyn Sink>,
    pub(crate) lease: Lease,
    pub(crate) stats: SharedStats,
    pub(crate) config: Arc<PullConfig>,
    /// Nanoseconds spent working, summed over all tasks (the load index reads it).
    pub(crate) busy_ns: Arc<AtomicU64>,
    pub(crate) metrics: WorkerMetrics,
}

impl ClientTask {
    /// The claim area of the client's directory.
    fn layout(&self) -> ClaimLayout {
        ClaimLayout::new(&self.spec.path)
    }

    /// Our claim dir under this epoch.
    fn claim(&self) -> ClaimDir {
        ClaimDir::live(&self.worker, self.epoch)
    }

    /// The path of our claim dir.
    fn mine(&self) -> PathBuf {
        self.layout().path(&self.claim())
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, ClientStats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_error(&self, error: Option<String>) {
        self.stats().last_error = error;
    }

    /// Counts a failed pull in the store's roll-up counters (durable, so the leader's next
    /// collection sees it even across a crash). A store that cannot count it is logged only:
    /// the pull's own error is what matters here.
    async fn count_pull_error(&self) {
        let store = self.store.clone();
        let client = self.spec.name.clone();
        let counted = tokio::task::spawn_blocking(move || store.pull_error(&client)).await;
        if let Ok(Err(e)) = counted {
            debug!(client = %self.spec.name, error = %e, "pull error not counted for roll-ups");
        }
    }

    /// Reads the client's totals from the catalog (once per assignment; batches add to them).
    async fn refresh_totals(&self) {
        let store = self.store.clone();
        let client = self.spec.name.clone();
        let read =
            tokio::task::spawn_blocking(move || (store.totals(&client), store.ingest(&client)))
                .await;
        if let Ok((totals, ingest)) = read {
            let mut stats = self.stats();
            if let Ok(totals) = totals {
                stats.totals = totals;
            }
            // Seeds the counters without counting them in the metrics again.
            if let Ok(ingest) = ingest {
                stats.ingest = ingest;
            }
        }
    }
}

/// What the driver of one client's task listens to besides the task itself.
pub(crate) struct Signals {
    /// Rung when the client's agent saw a file closed: list now instead of at the next poll.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// Where this worker records the clients it has claims at.
    pub(crate) held: Held,
}

/// Why a cycle stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CycleError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("commit task failed: {0}")]
    CommitTask(#[from] tokio::task::JoinError),
    #[error("lease expired; waiting for the leader")]
    LeaseExpired,
}

impl CycleError {
    /// A short, stable kind for metrics.
    fn kind(&self) -> &'static str {
        match self {
            CycleError::Transport(t) => t.kind(),
            CycleError::Store(_) | CycleError::CommitTask(_) => "store",
            CycleError::LeaseExpired => "lease_expired",
        }
    }
}

/// A client's task with its open connection: what a cycle works with.
#[derive(Clone, Copy)]
struct Link<'a> {
    task: &'a ClientTask,
    remote: &'a Remote,
}

/// One file on its way: its name and what the listing said about it.
#[derive(Debug, Clone)]
struct Work {
    name: Vec<u8>,
    size: u64,
    mtime: i64,
}

impl From<&RemoteEntry> for Work {
    fn from(e: &RemoteEntry) -> Self {
        Work {
            name: e.name.clone(),
            size: e.size,
            mtime: e.mtime,
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
    queue: VecDeque<RemoteEntry>,
    listed_at: Instant,
    /// (files, bytes) the last listing showed waiting, minus those claimed since.
    backlog: (usize, u64),
    /// (files, bytes) in our claim dir at the last listing.
    leftovers: (usize, u64),
    /// Names in our claim dir whose batch is durable, to remove at the source while the next
    /// batch is claimed and transferred.
    durable: Vec<Vec<u8>>,
    /// Batch mode: a batch staged but not committed yet; it commits while the next one is
    /// claimed and streamed.
    pending: Vec<Staged>,
}

/// How long a listing's complete files may be worked through before the directory is listed
/// again (new files wait at most this long behind a large backlog).
const REUSE_LISTING_FOR: Duration = Duration::from_secs(10);

impl Cursor {
    fn new() -> Cursor {
        Cursor {
            fresh: SettleTracker::default(),
            claimed: SettleTracker::default(),
            foreign_seen: HashMap::new(),
            staged_seq: 0,
            queue: VecDeque::new(),
            listed_at: Instant::now(),
            backlog: (0, 0),
            leftovers: (0, 0),
            durable: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Whether the next batch needs a fresh listing (the last one is used up or old).
    fn listing(&self) -> Listing {
        if self.queue.is_empty() || self.listed_at.elapsed() >= REUSE_LISTING_FOR {
            Listing::Fresh
        } else {
            Listing::Queued
        }
    }

    /// Durable files are gone at the source: stop watching their names in our claim dir.
    fn removed(&mut self, names: &[Vec<u8>]) {
        for n in names {
            self.claimed.forget(n);
        }
    }

    /// The pause after a cycle that left nothing to do: the poll interval, or less when a
    /// file already seen will have settled sooner (one listing then finds it complete).
    fn idle_pause(&self, config: &PullConfig) -> Duration {
        let now = Instant::now();
        match self.fresh.next_settled(now, config.settle) {
            Some(due) => due
                .saturating_duration_since(now)
                .max(MIN_RELIST)
                .min(config.poll),
            None => config.poll,
        }
    }
}

/// Where the files of the next batch come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// List the directory (and our claim dir) again first.
    Fresh,
    /// Take from the files the last listing queued.
    Queued,
}

/// The client's `ssh` target cannot be used (its own message says why).
/// Shortest pause between listings timed for a settling file (a file written for minutes
/// must not make us list nonstop).
const MIN_RELIST: Duration = Duration::from_millis(100);
/// The pause while the lease is out, before looking at it again.
const FENCED_PAUSE: Duration = Duration::from_millis(50);

/// How long the driver waits after a step.
enum Pause {
    None,
    /// A normal idle pause: the agent's hint may cut it short.
    Idle(Duration),
    /// Backoff after an error, or the lease being out: never cut short.
    Fixed(Duration),
}

/// Serves one client until `stop` turns true: steps the puller, owns its backoff, pauses and
/// wake-ups and reports its errors; on stop, hands the claims over cleanly.
pub(crate) async fn serve_client(
    task: ClientTask,
    signals: Signals,
    mut stop: watch::Receiver<bool>,
) {
    info!(worker = %task.worker, client = %task.spec.name, epoch = task.epoch, "serving client");
    // On record before the first claim: a crash from here on leaves a trace to resolve.
    signals.held.started(&task.spec, task.epoch);
    task.refresh_totals().await;
    let params = match ssh_params(&task.spec, &task.config) {
        Ok(p) => p,
        Err(e) => {
            task.set_error(Some(e.to_string()));
            task.metrics.error("config");
            task.count_pull_error().await;
            warn!(client = %task.spec.name, error = %e, "client settings unusable");
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
    };
    let mut puller = ClientPuller::new(task, params);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    // Unreachable hosts are retried ever less often, up to `max_reconnect`: each attempt may
    // cost a process, and a fleet has hosts that stay down for days.
    let max_reconnect = puller.task().config.max_reconnect;
    let mut connect_backoff = ReconnectBackoff::new(Duration::from_millis(250), max_reconnect);
    let mut connect_log = LogGate::new(Duration::from_secs(30), max_reconnect);
    while !*stop.borrow() {
        puller.set_priority(connect_backoff.priority());
        let pause = match puller.step(&mut stop).await {
            Ok(Step::Connected) => {
                connect_backoff.connected();
                if let Some(failures) = connect_log.succeeded() {
                    info!(client = %puller.task().spec.name, failures, "reachable again");
                }
                Pause::None
            }
            Ok(Step::Busy) => {
                backoff.reset();
                Pause::None
            }
            Ok(Step::Idle(wait)) => {
                backoff.reset();
                Pause::Idle(wait)
            }
            Ok(Step::Fenced) => Pause::Fixed(FENCED_PAUSE),
            Ok(Step::Stopped) => break,
            Err(e) => {
                let task = puller.task();
                let delay = match &e {
                    StepError::Connect(e) => {
                        let delay = connect_backoff.failed(e.kind(), jitter());
                        match connect_log.failed(Instant::now()) {
                            Some(failures) => {
                                warn!(client = %task.spec.name, error = %e, failures, retry_in_s = delay.as_secs(), "cannot connect")
                            }
                            None => debug!(client = %task.spec.name, error = %e, "cannot connect"),
                        }
                        delay
                    }
                    StepError::Cycle(e) => {
                        warn!(client = %task.spec.name, error = %e, "pull cycle failed");
                        backoff.next_delay()
                    }
                };
                task.metrics.error(e.kind());
                task.count_pull_error().await;
                task.set_error(Some(e.to_string()));
                Pause::Fixed(delay)
            }
        };
        if !wait(pause, &signals.wake, &mut stop, &puller.task().spec.name).await {
            break;
        }
    }
    puller.finish(&signals.held).await;
}

/// A fraction in `[0, 1)` that differs between clients and attempts (spreads retries).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Waits out a pause; false when stop was asked meanwhile.
async fn wait(
    pause: Pause,
    wake: &tokio::sync::Notify,
    stop: &mut watch::Receiver<bool>,
    client: &str,
) -> bool {
    let (pause, wakeable) = match pause {
        Pause::None => return true,
        Pause::Idle(d) => (d, true),
        Pause::Fixed(d) => (d, false),
    };
    if pause.is_zero() {
        return true;
    }
    let paused = Instant::now();
    let woken = tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = wake.notified(), if wakeable => true,
        _ = stop.wait_for(|s| *s) => return false,
    };
    if woken {
        debug!(client = %client, "woken by the client's agent");
        // However often hints come, listings stay MIN_RELIST apart.
        tokio::time::sleep(MIN_RELIST.saturating_sub(paused.elapsed())).await;
    }
    true
}

fn ssh_params(spec: &ClientSpec, config: &PullConfig) -> Result<SshParams, BadSshTarget> {
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

/// Deletes local staging files that will not be committed.
fn discard(paths: impl IntoIterator<Item = PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

//! Alerts on the leader: the adapters around the pure `crate::alerts` modules. [`Alerting`]
//! loads the rules file, runs one task per rule (each round reads through the cluster fan-out,
//! or the registry's facts for a built-in rule), and hands finished rounds to the
//! [`engine`] thread, which owns the evaluator and makes every round durable before anyone
//! hears of it. [`store`] is its SQLite half, [`journal`] `alerts.jsonl`, [`hub`] the
//! followers, [`sender`] Alertmanager, [`round`] the pure query → answer step.

pub(crate) mod engine;
pub(crate) mod hub;
pub(crate) mod journal;
pub(crate) mod round;
pub(crate) mod sender;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::alerts::builtin::{ClientFact, Facts, ShardFact, WorkerFact};
use crate::alerts::rules::Source;
use crate::alerts::{Answer, Rule, RuleSet, RulesErrors};
use crate::stats::cluster::ClusterReader;

use super::core::{Command, CoreHandle};
use super::liveness::WorkerState;
use engine::{ActiveAlert, Cmd, Engine, Round, Rows};
use hub::Hub;

/// Cluster reads of rules in flight at once: 500 rules due together queue here instead of
/// opening 500 streams to each worker.
const READS_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error(transparent)]
    Store(#[from] store::AlertStoreError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Rules(#[from] LoadError),
    #[error("cannot start the alert engine thread: {0}")]
    Thread(std::io::Error),
}

/// Why a rules file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rules file {path}: {source}; check the path (rules_file, --rules-file)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(RulesErrors),
}

impl LoadError {
    /// Every problem, one per line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            LoadError::Invalid(errs) => errs.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Reads and validates a rules file (`None`: only the built-in rules, all on).
pub fn load_rules(path: Option<&Path>) -> Result<RuleSet, LoadError> {
    let Some(path) = path else {
        return crate::alerts::parse("(no rules file)", "").map_err(LoadError::Invalid);
    };
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    crate::alerts::parse(&path.display().to_string(), &text).map_err(LoadError::Invalid)
}

/// What a reload did.
#[derive(Debug, Clone)]
pub(crate) struct Reloaded {
    pub(crate) rules: usize,
    /// Rules no longer configured; their alerts were dropped without a resolved.
    pub(crate) removed: Vec<String>,
}

/// The handle the admin API and the signal handler use.
#[derive(Clone)]
pub(crate) struct Alerting {
    inner: Arc<Inner>,
}

/// Starts one rule's task over the reader the leader was started with (the reader's type
/// stays out of the handle).
type SpawnRule = Box<dyn Fn(&Alerting, Arc<Rule>, u64, &mut JoinSet<()>) + Send + Sync>;

struct Inner {
    file: Option<PathBuf>,
    engine: mpsc::Sender<Cmd>,
    hub: Hub,
    core: CoreHandle,
    /// Fed by the roll-up collector (see [`Alerting::feed_shards`]).
    shards: Mutex<Vec<ShardFact>>,
    /// The running rule tasks and their generation; a reload replaces both.
    tasks: tokio::sync::Mutex<(u64, JoinSet<()>)>,
    reads: Arc<Semaphore>,
    spawn_rule: SpawnRule,
}

impl Alerting {
    /// Loads the rules (a bad file stops the start), the stored state, and starts the engine
    /// thread, the rule tasks and (with a URL) the Alertmanager sender.
    pub(crate) async fn start<R: ClusterReader>(
        state_dir: &Path,
        rules_file: Option<PathBuf>,
        alertmanager_url: Option<String>,
        core: CoreHandle,
        reader: Arc<R>,
    ) -> Result<Alerting, AlertingError> {
        let rules = load_rules(rules_file.as_deref())?;
        let store = store::AlertStore::open(state_dir)?;
        let journal = journal::Journal::open(state_dir, journal::ROTATE_BYTES)?;
        let (engine, hub, outbox) = Engine::open(store, journal)?;
        let (tx, rx) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || engine.run(rx))
            .map_err(AlertingError::Thread)?;
        if let Some(url) = alertmanager_url {
            let timing = crate::alerts::alertmanager::Timing::default();
            tokio::spawn(sender::run(url, outbox, timing));
        }
        let spawn_rule = Box::new(
            move |a: &Alerting, rule: Arc<Rule>, generation: u64, set: &mut JoinSet<()>| {
                set.spawn(rule_loop(a.clone(), reader.clone(), rule, generation));
            },
        );
        let alerting = Alerting {
            inner: Arc::new(Inner {
                file: rules_file,
                engine: tx,
                hub,
                core,
                shards: Mutex::new(Vec::new()),
                tasks: tokio::sync::Mutex::new((0, JoinSet::new())),
                reads: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
                spawn_rule,
            }),
        };
        let n = rules.rules.len();
        alerting.install(rules).await;
        info!(rules = n, file = ?alerting.inner.file, "alert rules loaded");
        Ok(alerting)
    }

    /// Re-reads the rules file; a bad file keeps the rules in force and says why (the
    /// caller logs or answers it).
    pub(crate) async fn reload(&self) -> Result<Reloaded, LoadError> {
        let file = self.inner.file.clone();
        let rules = tokio::task::spawn_blocking(move || load_rules(file.as_deref()))
            .await
            .map_err(|e| LoadError::Read {
                path: PathBuf::from("(rules file)"),
                source: std::io::Error::other(e.to_string()),
            })??;
        let n = rules.rules.len();
        let removed = self.install(rules).await;
        Ok(Reloaded { rules: n, removed })
    }

    /// Replaces the running rules: the old tasks are stopped (a round in flight is dropped by
    /// its generation), the engine told, the new tasks started.
    async fn install(&self, rules: RuleSet) -> Vec<String> {
        let mut tasks = self.inner.tasks.lock().await;
        tasks.1.abort_all();
        let generation = tasks.0 + 1;
        let list: Vec<Arc<Rule>> = rules.rules.iter().cloned().map(Arc::new).collect();
        let (reply, gone) = oneshot::channel();
        let cmd = Cmd::Rules {
            generation,
            rules,
            reply,
        };
        let removed = match self.inner.engine.send(cmd).await {
            Ok(()) => gone.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut set = JoinSet::new();
        for rule in list {
            (self.inner.spawn_rule)(self, rule, generation, &mut set);
        }
        *tasks = (generation, set);
        removed
    }

    /// The roll-up collector's hook: the shards and how many roll-ups in a row each missed,
    /// read by the `shard_unanswered` built-in at its next round ([`feed_from_rollups`]).
    pub(crate) fn feed_shards(&self, shards: Vec<ShardFact>) {
        if let Ok(mut s) = self.inner.shards.lock() {
            *s = shards;
        }
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) async fn active(&self) -> Vec<ActiveAlert> {
        let (reply, rx) = oneshot::channel();
        if self.inner.engine.send(Cmd::Active { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Logged notifications after `after` (or the newest with `None`), at most `limit`.
    pub(crate) async fn log(&self, after: Option<u64>, limit: usize) -> Rows {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Log {
            after,
            limit,
            reply,
        };
        if self.inner.engine.send(cmd).await.is_err() {
            return Ok(Vec::new());
        }
        rx.await.unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// The registry's view for the built-in rules.
    async fn facts(&self) -> Option<Facts> {
        let status = (self.inner.core)
            .ask(|reply| Command::Status { reply })
            .await
            .ok()?;
        let workers = (status.workers.iter())
            .map(|w| WorkerFact {
                id: w.id.clone(),
                dead: w.state == WorkerState::Dead,
            })
            .collect();
        let clients = (status.clients.iter())
            .map(|c| ClientFact {
                name: c.spec.name.clone(),
                has_error: c.last_error.is_some(),
                oldest_backlog_age_ms: (c.backlog_files > 0)
                    .then_some(c.oldest_backlog_s as i64 * 1000),
            })
            .collect();
        let shards = self
            .inner
            .shards
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        Some(Facts {
            workers,
            clients,
            shards,
        })
    }
}

/// Reloads the rules on every SIGHUP until the process ends.
pub(crate) fn reload_on_sighup(alerting: Alerting) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; reload rules with `sqdctl reload-rules`");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match alerting.reload().await {
                Ok(r) => {
                    info!(rules = r.rules, removed = ?r.removed, "SIGHUP: alert rules reloaded")
                }
                Err(e) => {
                    warn!(problems = %e.problems().join("; "), "SIGHUP: the rules file is not usable; the rules in force stay")
                }
            }
        }
    });
}

/// Where in `every` a rule's rounds fall: spread by name, so rules due together do not all
/// read at once.
fn offset(rule: &Rule) -> Duration {
    let h = blake3::hash(rule.name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    Duration::from_millis(u64::from_le_bytes(b) % rule.every_ms.max(1) as u64)
}

/// One rule's rounds: one at a time (the next tick waits for the engine's answer), ticks
/// missed while a round ran are skipped, so a round is late by at most one `every`.
async fn rule_loop<R: ClusterReader>(
    a: Alerting,
    reader: Arc<R>,
    rule: Arc<Rule>,
    generation: u64,
) {
    let every = Duration::from_millis(rule.every_ms.max(1) as u64);
    let start = tokio::time::Instant::now() + offset(&rule).min(every);
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let answer = match &rule.source {
            Source::Query(q) => read(&a, reader.as_ref(), q, rule.every_ms).await,
            Source::Builtin(which) => match a.facts().await {
                Some(f) => crate::alerts::builtin::answer(*which, &f),
                None => return, // the core stopped: the leader is going down
            },
        };
        let (done, finished) = oneshot::channel();
        let round = Round {
            generation,
            rule: rule.clone(),
            answer,
            now_ms: crate::clock::unix_ms(),
            done,
        };
        let read_ms = started.elapsed().as_millis() as u64;
        if a.inner.engine.send(Cmd::Round(round)).await.is_err() || finished.await.is_err() {
            return;
        }
        // The bench reads these (set `alerts`: round time per rule).
        tracing::debug!(rule = %rule.name, read_ms, round_ms = started.elapsed().as_millis() as u64, "alert round");
    }
}

/// A query rule's read through the fan-out; a read that fails as a whole is a partial answer
/// (nothing moves, the rule turns unknown).
async fn read<R: ClusterReader>(
    a: &Alerting,
    reader: &R,
    q: &crate::alerts::rules::Query,
    every_ms: i64,
) -> Answer {
    let failed = |why: String| Answer {
        partial: true,
        missing: vec![why],
        values: Default::default(),
    };
    // The wait for a read slot counts against the round's deadline, so an overloaded leader
    // makes rules unknown instead of late.
    let budget = round::read_timeout(every_ms);
    let waiting = std::time::Instant::now();
    let Ok(_permit) = tokio::time::timeout(budget, a.inner.reads.acquire()).await else {
        return failed(format!(
            "the leader (no free read slot within {} ms: too many rules for their every)",
            budget.as_millis()
        ));
    };
    let left = budget
        .saturating_sub(waiting.elapsed())
        .max(Duration::from_millis(100));
    let now = crate::clock::unix_ms();
    let range = match round::range(q, now) {
        Ok(r) => r,
        Err(e) => return failed(format!("the query: {e}")),
    };
    match reader.query(q.selector.clone(), range, left).await {
        Ok(answer) => round::answer(q, answer),
        Err(e) => failed(format!("the cluster ({e})")),
    }
}

/// Keeps the `shard_unanswered` built-in's facts current: every second, the roll-up
/// collector's count of collections each worker missed in a row, until `shutdown`.
pub(crate) fn feed_from_rollups(
    alerting: &Alerting,
    health: crate::leader::rollup::RollupHealth,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let alerting = alerting.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let shards = health
                .missed_in_a_row()
                .into_iter()
                .map(|(id, missed_rollups)| ShardFact { id, missed_rollups })
                .collect();
            alerting.feed_shards(shards);
        }
    });
}

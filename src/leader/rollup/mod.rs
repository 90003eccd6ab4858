//! Periodic roll-ups: every `rollup_interval_ms` the leader asks every worker with an address
//! (one deadline, the fan-out's [`gather`]) for its counters since the last collection,
//! appends one line to `<state-dir>/rollups.jsonl` (fsync'd), and only then acknowledges them
//! (in the next request). Exported as `sqd_rollup_*` on the leader's `/metrics`; how many
//! collections in a row each worker missed is [`RollupHealth::missed_in_a_row`].
//!
//! Exactly once: a worker's counters move with its commits (`store::rollup`), it forgets a
//! collection only when a later request acknowledges it, and each line carries every worker's
//! watermark ([`merge::Ledger`]), so a leader that crashed between the line and the
//! acknowledgement skips what its log already holds.

mod log;
pub(crate) mod merge;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::fanout::{Opening, Shard, ShardSource, gather};
use crate::store::rollup::{Counters, Row};
pub(crate) use log::{FILE_NAME, LogError, RollupLog, last_lines};
use merge::{Gathered, Ledger, Line, Missed};

/// The longest a collection waits for workers; a shorter interval bounds it instead.
const MAX_DEADLINE: Duration = Duration::from_secs(10);

/// Collections in a row each worker missed, shared with whoever reads it (alert rules).
#[derive(Clone, Default)]
pub(crate) struct RollupHealth(Arc<Mutex<Missed>>);

impl RollupHealth {
    /// Every worker the last collection asked, with the collections in a row it did not
    /// answer (0: it answered the last one). The built-in alert "a shard did not answer three
    /// roll-ups in a row" reads this.
    pub(crate) fn missed_in_a_row(&self) -> BTreeMap<String, u32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counts()
            .clone()
    }

    fn update(&self, asked: &[String], missing: &[String]) {
        (self.0.lock().unwrap_or_else(PoisonError::into_inner)).update(asked, missing);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

/// `sqd_rollup_*`: the totals of every line written since the leader started.
#[derive(Clone, Default)]
pub(crate) struct RollupMetrics {
    files: Counter,
    bytes: Counter,
    samples: Counter,
    parse_errors: Counter,
    pull_errors: Counter,
    lines: Counter,
    missed_in_a_row: Family<WorkerLabel, Gauge>,
}

impl RollupMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = RollupMetrics::default();
        let r = registry.sub_registry_with_prefix("sqd_rollup");
        r.register(
            "files",
            "Files committed, as collected by roll-ups",
            m.files.clone(),
        );
        r.register(
            "bytes",
            "Bytes committed, as collected by roll-ups",
            m.bytes.clone(),
        );
        r.register(
            "samples",
            "Samples committed, as collected by roll-ups",
            m.samples.clone(),
        );
        r.register(
            "parse_errors",
            "Parse errors, as collected by roll-ups",
            m.parse_errors.clone(),
        );
        r.register(
            "pull_errors",
            "Failed pulls, as collected by roll-ups",
            m.pull_errors.clone(),
        );
        r.register(
            "lines",
            "Roll-up lines written to rollups.jsonl",
            m.lines.clone(),
        );
        r.register(
            "missed_in_a_row",
            "Roll-up collections in a row a worker did not answer",
            m.missed_in_a_row.clone(),
        );
        m
    }

    fn written(&self, totals: &Counters, missed: &BTreeMap<String, u32>) {
        self.files.inc_by(totals.files);
        self.bytes.inc_by(totals.bytes);
        self.samples.inc_by(totals.samples);
        self.parse_errors.inc_by(totals.parse_errors);
        self.pull_errors.inc_by(totals.pull_errors);
        self.lines.inc();
        self.missed_in_a_row.clear();
        for (worker, n) in missed {
            let label = WorkerLabel {
                worker: worker.clone(),
            };
            self.missed_in_a_row
                .get_or_create(&label)
                .set(i64::from(*n));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("roll-up collection skipped: the workers cannot be listed: {0}")]
    Shards(String),
    #[error("roll-up line not written (its counters stay with the workers): {0}")]
    Log(#[from] LogError),
    #[error("roll-up line not written: the writer thread failed")]
    Writer,
}

/// The leader's collector: owns the log and the ledger.
pub(crate) struct Collector<S: ShardSource> {
    source: S,
    log: Arc<Mutex<RollupLog>>,
    ledger: Ledger,
    interval: Duration,
    health: RollupHealth,
    metrics: RollupMetrics,
}

impl<S: ShardSource> Collector<S> {
    /// Opens the log in `state_dir` and resumes from its last line.
    pub(crate) fn open(
        state_dir: &Path,
        interval: Duration,
        source: S,
        metrics: RollupMetrics,
    ) -> Result<Self, LogError> {
        let (log, last) = RollupLog::open(state_dir)?;
        Ok(Collector {
            source,
            log: Arc::new(Mutex::new(log)),
            ledger: Ledger::resume(last.as_ref()),
            interval,
            health: RollupHealth::default(),
            metrics,
        })
    }

    /// The handle of [`RollupHealth::missed_in_a_row`], to take before [`Collector::run`].
    pub(crate) fn health(&self) -> RollupHealth {
        self.health.clone()
    }

    /// Collects every interval until `stop` resolves. The first collection is one interval
    /// after the start; a collection that overruns delays the next instead of piling up.
    pub(crate) async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            match self.collect_once().await {
                Ok(line) if !line.missing_workers.is_empty() => {
                    debug!(collection = line.collection, missing = ?line.missing_workers, "roll-up written without some workers");
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "roll-up collection failed"),
            }
        }
    }

    /// One collection: ask, merge, write the line durably, then let the next requests
    /// acknowledge it.
    pub(crate) async fn collect_once(&mut self) -> Result<Line, CollectError> {
        let started_ms = crate::clock::unix_ms();
        let collection = self.ledger.next_collection(started_ms);
        let deadline = Instant::now() + self.interval.min(MAX_DEADLINE);
        let shards =
            (self.source.shards().await).map_err(|e| CollectError::Shards(e.to_string()))?;
        let mut rows: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        let ledger = &self.ledger;
        let report = gather(
            &shards,
            |s| tagged(s, collection, ledger.ack_through(s.id())),
            deadline,
            |(id, chunk)| rows.entry(id).or_default().extend(chunk),
        )
        .await;
        // Only complete answers count: a worker cut off mid-stream keeps its counters (not
        // acknowledged) and sends them all again.
        let answered = (report.answered.iter())
            .map(|w| (w.clone(), rows.remove(w).unwrap_or_default()))
            .collect();
        let got = Gathered {
            asked: report.asked,
            answered,
        };
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let line = self.ledger.line(collection, started_ms, interval_ms, &got);
        self.write(&line).await?;
        // A crash here (line durable, not yet acknowledged) must not count anything twice;
        // the failpoint counts only lines that counted something, where it matters.
        if !line.totals.is_zero() {
            crate::failpoint::hit("rollup_after_line");
        }
        self.ledger.written(&line);
        self.health.update(&got.asked, &line.missing_workers);
        self.metrics
            .written(&line.totals, &self.health.missed_in_a_row());
        Ok(line)
    }

    async fn write(&self, line: &Line) -> Result<(), CollectError> {
        let (log, line) = (self.log.clone(), line.clone());
        tokio::task::spawn_blocking(move || {
            (log.lock().unwrap_or_else(PoisonError::into_inner)).append(&line)
        })
        .await
        .map_err(|_| CollectError::Writer)?
        .map_err(CollectError::from)
    }
}

/// A shard's roll-up answer with each chunk tagged by the shard's id (one channel carries
/// every shard's chunks).
fn tagged(shard: &dyn Shard, collection: u64, ack_through: u64) -> Opening<(String, Vec<Row>)> {
    use futures_util::StreamExt;
    let id = shard.id().to_owned();
    let opening = shard.rollup(collection, ack_through);
    Box::pin(async move {
        let chunks = opening.await?;
        Ok(chunks
            .map(move |c| c.map(|rows| (id.clone(), rows)))
            .boxed())
    })
}

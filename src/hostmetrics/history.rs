//! The leader's own time-series shard of host values (`<state-dir>/host-metrics.sqlite`): a
//! writer thread appends what the sessions hand it in batches (one transaction per second at
//! most, off the sessions' path), seals and retains it; [`LeaderShard`] answers the cluster
//! read path from it as the shard `leader`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rusqlite::Connection;
use tracing::{debug, warn};

use super::{HostValues, Role};
use crate::leader::fanout::{Opening, Shard};
use crate::stats::query::{Range, Selector, SeriesPartials};
use crate::stats::tsdb::{self, FileSamples, Limits, SeriesCache, SeriesKey, TsdbError};

/// The shard's file in the leader's state dir.
pub(crate) const FILE: &str = "host-metrics.sqlite";
/// Its name in shard reports.
pub(crate) const SHARD_ID: &str = "leader";
/// How long the writer gathers points before one transaction.
const BATCH_WAIT: Duration = Duration::from_millis(500);
/// Points waiting for the writer; beyond it new points are dropped (and counted), so a slow
/// disk never slows the sessions.
const QUEUE: usize = 100_000;
/// Raw blocks older than this are sealed (compressed).
const SEAL_WINDOW_MS: i64 = 10 * 60_000;
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
/// How long host values are kept.
const RETAIN_MS: i64 = 30 * 86_400_000;
/// Series cap: five per emitter.
const MAX_SERIES: u64 = 1_000_000;
/// The `client` the shard counts its samples under.
const CLIENT: &str = "host-metrics";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "cannot open the host-metrics shard {path}: {source}; check the state dir's permissions and free space"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot start the host-metrics writer: {0}")]
    Thread(std::io::Error),
}

/// One sample of one emitter, as the leader received it.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub(crate) host: String,
    pub(crate) role: Role,
    pub(crate) at_ms: i64,
    pub(crate) values: HostValues,
}

/// The sending half: cheap to clone, never blocks.
#[derive(Clone)]
pub(crate) struct History {
    tx: SyncSender<Point>,
    path: PathBuf,
}

impl History {
    /// Opens (creating) the shard under `state_dir` and starts its writer, which ends when
    /// every `History` is dropped.
    pub(crate) fn open(state_dir: &Path) -> Result<History, HistoryError> {
        let path = state_dir.join(FILE);
        let conn = open_writer(&path).map_err(|source| HistoryError::Open {
            path: path.clone(),
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sqd-host-metrics".into())
            .spawn(move || writer(conn, rx))
            .map_err(HistoryError::Thread)?;
        Ok(History { tx, path })
    }

    /// Queues a point; false when the writer is behind (the point is dropped) or gone.
    pub(crate) fn append(&self, point: Point) -> bool {
        match self.tx.try_send(point) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The read side, for the fan-out.
    pub(crate) fn shard(&self) -> LeaderShard {
        LeaderShard {
            path: self.path.clone(),
        }
    }
}

fn open_writer(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    // WAL: readers see a snapshot while the writer goes on; a kill -9 loses nothing
    // committed (only an OS crash could lose the last transactions, with NORMAL).
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(tsdb::SCHEMA)?;
    Ok(conn)
}

/// Points in one [`FileSamples`]: series `<metric>{host, role}`.
pub(crate) fn batch(points: &[Point]) -> FileSamples {
    let mut file = FileSamples::default();
    for p in points {
        for (metric, v) in p.values.series() {
            let key = SeriesKey {
                metric: metric.to_owned(),
                labels: vec![
                    ("host".to_owned(), p.host.clone()),
                    ("role".to_owned(), p.role.as_str().to_owned()),
                ],
            };
            file.series.entry(key).or_default().push(p.at_ms, v);
        }
    }
    file.kinds = super::Metric::ALL
        .iter()
        .map(|m| m.series())
        .chain([super::LOAD_SERIES, super::STORE_FREE_SERIES])
        .map(|m| (m.to_owned(), "gauge".to_owned()))
        .collect();
    file
}

fn writer(mut conn: Connection, rx: Receiver<Point>) {
    let mut cache = SeriesCache::default();
    let mut maintained = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut points = vec![first];
        let until = Instant::now() + BATCH_WAIT;
        loop {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(p) => points.push(p),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Err(e) = write(&mut conn, &mut cache, &points) {
            warn!(error = %e, points = points.len(), "cannot write host values to the leader's shard; they stay in memory only");
        }
        if maintained.elapsed() >= MAINTAIN_EVERY {
            maintained = Instant::now();
            if let Err(e) = maintain(&mut conn, &mut cache) {
                warn!(error = %e, "cannot seal or retain the host-metrics shard; will retry");
            }
        }
    }
    debug!("host-metrics writer stopped");
}

fn write(
    conn: &mut Connection,
    cache: &mut SeriesCache,
    points: &[Point],
) -> Result<(), TsdbError> {
    let file = batch(points);
    let tx = conn.transaction()?;
    let written = tsdb::write_file(
        &tx,
        cache,
        CLIENT,
        &file,
        Limits {
            max_series: MAX_SERIES,
        },
    );
    match written.and_then(|_| tx.commit().map_err(TsdbError::from)) {
        Ok(()) => {
            cache.committed();
            Ok(())
        }
        Err(e) => {
            cache.rolled_back();
            Err(e)
        }
    }
}

fn maintain(conn: &mut Connection, cache: &mut SeriesCache) -> Result<(), TsdbError> {
    tsdb::seal(conn, SEAL_WINDOW_MS)?;
    tsdb::retain(conn, crate::clock::unix_ms() - RETAIN_MS)?;
    // Sealing moved boundaries and retention may have deleted series.
    cache.invalidate();
    Ok(())
}

/// The leader's shard in the fan-out: each read on a blocking thread, its own read-only
/// connection, one read transaction.
pub(crate) struct LeaderShard {
    path: PathBuf,
}

impl LeaderShard {
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, TsdbError> + Send + 'static,
    ) -> Opening<T> {
        let path = self.path.clone();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || -> Result<Option<T>, String> {
                let conn = match crate::worker::offline::open_shard(&path) {
                    Ok(Some(conn)) => conn,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
                };
                conn.execute_batch("BEGIN")
                    .map_err(|e| format!("cannot begin a read: {e}"))?;
                let result = read(&conn).map_err(|e| format!("shard read failed: {e}"));
                let _ = conn.execute_batch("COMMIT");
                result.map(Some)
            })
            .await
            .map_err(|e| format!("the read task failed: {e}"))??;
            Ok(futures_util::stream::iter(answer.map(Ok)).boxed())
        })
    }
}

impl Shard for LeaderShard {
    fn id(&self) -> &str {
        SHARD_ID
    }

    fn query(&self, selector: &Selector, range: &Range) -> Opening<Vec<SeriesPartials>> {
        let (selector, range) = (selector.clone(), range.clone());
        self.read(move |conn| {
            let mut out = Vec::new();
            tsdb::query(conn, &selector, &range, |s| {
                out.push(s);
                true
            })?;
            Ok(out)
        })
    }

    fn series(
        &self,
        selector: Option<&Selector>,
        span: Option<crate::stats::query::Span>,
    ) -> Opening<Vec<SeriesKey>> {
        let selector = selector.cloned();
        self.read(move |conn| tsdb::series(conn, selector.as_ref(), span))
    }

    fn metrics(&self) -> Opening<Vec<String>> {
        self.read(tsdb::metrics)
    }
}

#[cfg(test)]
mod tests;

//! The worker's time-series shard, inside its store's SQLite catalog: series, blocks and
//! per-client ingest counters.
//!
//! - A committed file's samples are written by [`write_file`] on the *same* transaction as the
//!   file's catalog row, so a file is in the store with all its samples or not at all (M1):
//!   one raw block per series per file.
//! - [`seal`] merges raw blocks older than the out-of-order window into pco-compressed blocks,
//!   one per series and [`SEAL_SPAN_MS`]; a sample older than what was sealed for its series is
//!   refused and counted as `too_old` (hazard 29), never dropped silently.
//! - Every block carries its [`Partial`], so a query whose bucket holds the whole block reads
//!   no samples. Readers use their own connection: SQLite's WAL gives them a snapshot while
//!   commits go on.

use std::collections::{BTreeMap, HashMap};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

use super::block::{BlockError, Encoding, Samples};
use super::partial::Partial;
use super::query::{Buckets, Labels, Range, Selector, SeriesPartials, Span};

/// Sealed blocks cover at most this span of one series (2 h, as Prometheus's head blocks).
pub const SEAL_SPAN_MS: i64 = 2 * 3_600_000;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ts_series (
    id INTEGER PRIMARY KEY,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    client TEXT NOT NULL,
    max_ts INTEGER NOT NULL,
    sealed_until INTEGER NOT NULL DEFAULT -9223372036854775808,
    UNIQUE (metric, labels)
);
CREATE INDEX IF NOT EXISTS ts_series_by_metric ON ts_series (metric);
CREATE TABLE IF NOT EXISTS ts_blocks (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    encoding INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL, min REAL, max REAL,
    first_ts INTEGER NOT NULL, first REAL,
    last_ts INTEGER NOT NULL, last REAL,
    ts BLOB NOT NULL,
    vals BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ts_blocks_by_series ON ts_blocks (series, max_ts);
CREATE TABLE IF NOT EXISTS ts_metric_kinds (metric TEXT PRIMARY KEY, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ts_clients (
    client TEXT PRIMARY KEY,
    samples INTEGER NOT NULL DEFAULT 0,
    parse_errors INTEGER NOT NULL DEFAULT 0,
    too_old INTEGER NOT NULL DEFAULT 0,
    over_cap INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);";

#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error("time-series shard: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("a stored series has damaged labels ({0}); run `sqd --mode worker compact`")]
    Labels(String),
}

/// One series as the parser names it: metric and labels sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: Labels,
}

impl SeriesKey {
    /// The stored form of the labels: a JSON object with sorted keys (unambiguous, any UTF-8).
    pub fn labels_text(&self) -> String {
        let map: BTreeMap<&str, &str> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
    }
}

fn parse_labels(text: &str) -> Result<Labels, TsdbError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| TsdbError::Labels(e.to_string()))?;
    Ok(map.into_iter().collect())
}

/// What one file holds, as the parser delivered it.
#[derive(Debug, Clone, Default)]
pub struct FileSamples {
    pub series: HashMap<SeriesKey, Samples>,
    /// `# TYPE` of metrics, where the format says it.
    pub kinds: Vec<(String, String)>,
    pub parse_errors: u64,
    /// The last bad line: "line N: reason".
    pub last_error: Option<String>,
}

impl FileSamples {
    pub fn samples(&self) -> u64 {
        self.series.values().map(|s| s.len() as u64).sum()
    }

    /// Adds a later file's samples and counters (its last bad line wins when it has one), so
    /// a batch of one client's files is written as one: one raw block per series per batch.
    pub fn absorb(&mut self, later: &FileSamples) {
        for (key, samples) in &later.series {
            let into = self.series.entry(key.clone()).or_default();
            into.ts.extend_from_slice(&samples.ts);
            into.vals.extend_from_slice(&samples.vals);
        }
        self.kinds.extend(later.kinds.iter().cloned());
        self.parse_errors += later.parse_errors;
        if later.last_error.is_some() {
            self.last_error.clone_from(&later.last_error);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most series this shard holds; samples of new series beyond it are refused (hazard 30).
    pub max_series: u64,
}

/// What [`write_file`] did, for counters and `last_error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub samples: u64,
    pub too_old: u64,
    pub over_cap: u64,
    pub new_series: u64,
}

/// Series ids known to this shard. New ids of a transaction are kept apart until it commits,
/// so a rolled-back transaction leaves no id behind.
#[derive(Debug, Default)]
pub struct SeriesCache {
    known: HashMap<SeriesKey, SeriesInfo>,
    pending: HashMap<SeriesKey, SeriesInfo>,
    count: u64,
    loaded: bool,
}

#[derive(Debug, Clone, Copy)]
struct SeriesInfo {
    id: i64,
    sealed_until: i64,
}

impl SeriesCache {
    fn load(&mut self, conn: &Connection) -> Result<(), TsdbError> {
        if self.loaded {
            return Ok(());
        }
        let mut stmt = conn.prepare("SELECT id, metric, labels, sealed_until FROM ts_series")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let key = SeriesKey {
                metric: row.get(1)?,
                labels: parse_labels(&row.get::<_, String>(2)?)?,
            };
            let info = SeriesInfo {
                id: row.get(0)?,
                sealed_until: row.get(3)?,
            };
            self.known.insert(key, info);
        }
        self.count = self.known.len() as u64;
        self.loaded = true;
        Ok(())
    }

    /// The transaction that wrote through this cache committed.
    pub fn committed(&mut self) {
        self.known.extend(self.pending.drain());
    }

    /// The transaction rolled back: forget its new series.
    pub fn rolled_back(&mut self) {
        self.count -= self.pending.len() as u64;
        self.pending.clear();
    }

    /// Sealing moved boundaries: read them again when next needed.
    pub fn invalidate(&mut self) {
        self.known.clear();
        self.pending.clear();
        self.loaded = false;
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn get(&self, key: &SeriesKey) -> Option<SeriesInfo> {
        self.known
            .get(key)
            .or_else(|| self.pending.get(key))
            .copied()
    }
}

/// Writes one file's samples on `tx` (the transaction that inserts the file's catalog row).
pub fn write_file(
    tx: &Connection,
    cache: &mut SeriesCache,
    client: &str,
    file: &FileSamples,
    limits: Limits,
) -> Result<WriteReport, TsdbError> {
    write_file_with(tx, cache, client, file, limits, &mut |_, _| {})
}

/// [`write_file`], handing each series' written samples (sorted, too-old ones left out) to
/// `kept` — what the remote-write queue must ship, no more.
pub fn write_file_with(
    tx: &Connection,
    cache: &mut SeriesCache,
    client: &str,
    file: &FileSamples,
    limits: Limits,
    kept_by: &mut dyn FnMut(&SeriesKey, &Samples),
) -> Result<WriteReport, TsdbError> {
    cache.load(tx)?;
    let mut report = WriteReport::default();
    let mut bump =
        tx.prepare_cached("UPDATE ts_series SET max_ts = max(max_ts, ?2) WHERE id = ?1")?;
    // A stable order keeps the rows of one file in one place of the table.
    let mut keys: Vec<&SeriesKey> = file.series.keys().collect();
    keys.sort();
    for key in keys {
        let Some(samples) = file.series.get(key) else {
            continue;
        };
        let info = match cache.get(key) {
            Some(info) => info,
            None if cache.count >= limits.max_series => {
                report.over_cap += samples.len() as u64;
                continue;
            }
            None => {
                let info = new_series(tx, cache, client, key, samples)?;
                report.new_series += 1;
                info
            }
        };
        let mut kept = Samples::default();
        for (&t, &v) in samples.ts.iter().zip(&samples.vals) {
            if t < info.sealed_until {
                report.too_old += 1;
            } else {
                kept.push(t, v);
            }
        }
        kept.sort();
        let Some(p) = kept.partial() else { continue };
        insert(tx, info.id, &kept, Encoding::Raw)?;
        bump.execute(params![info.id, p.last_ts])?;
        kept_by(key, &kept);
        report.samples += p.count;
    }
    for (metric, kind) in &file.kinds {
        tx.prepare_cached(
            "INSERT INTO ts_metric_kinds (metric, kind) VALUES (?1, ?2)
             ON CONFLICT(metric) DO UPDATE SET kind = ?2",
        )?
        .execute(params![metric, kind])?;
    }
    count_client(tx, client, file, &report)?;
    Ok(report)
}

fn new_series(
    tx: &Connection,
    cache: &mut SeriesCache,
    client: &str,
    key: &SeriesKey,
    samples: &Samples,
) -> Result<SeriesInfo, TsdbError> {
    let max_ts = samples.ts.iter().copied().max().unwrap_or(i64::MIN);
    tx.prepare_cached(
        "INSERT INTO ts_series (metric, labels, client, max_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key.metric, key.labels_text(), client, max_ts])?;
    let info = SeriesInfo {
        id: tx.last_insert_rowid(),
        sealed_until: i64::MIN,
    };
    cache.pending.insert(key.clone(), info);
    cache.count += 1;
    Ok(info)
}

fn count_client(
    tx: &Connection,
    client: &str,
    file: &FileSamples,
    report: &WriteReport,
) -> Result<(), TsdbError> {
    let error = file.last_error.clone().or_else(|| {
        (report.over_cap > 0).then(|| {
            format!(
                "{} samples of new series refused: the shard holds its maximum of series (max_series); raise it or drop high-cardinality labels",
                report.over_cap
            )
        })
    });
    tx.prepare_cached(
        "INSERT INTO ts_clients (client, samples, parse_errors, too_old, over_cap, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(client) DO UPDATE SET samples = samples + ?2,
             parse_errors = parse_errors + ?3, too_old = too_old + ?4,
             over_cap = over_cap + ?5, last_error = coalesce(?6, last_error)",
    )?
    .execute(params![
        client,
        report.samples as i64,
        file.parse_errors as i64,
        report.too_old as i64,
        report.over_cap as i64,
        error
    ])?;
    Ok(())
}

/// Per-client ingest counters, as kept in the shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIngest {
    pub samples: u64,
    pub parse_errors: u64,
    pub too_old: u64,
    pub over_cap: u64,
    pub last_error: Option<String>,
}

pub fn client_ingest(conn: &Connection, client: &str) -> Result<ClientIngest, TsdbError> {
    Ok(conn
        .query_row(
            "SELECT samples, parse_errors, too_old, over_cap, last_error FROM ts_clients WHERE client = ?1",
            [client],
            |r| {
                Ok(ClientIngest {
                    samples: r.get::<_, i64>(0)? as u64,
                    parse_errors: r.get::<_, i64>(1)? as u64,
                    too_old: r.get::<_, i64>(2)? as u64,
                    over_cap: r.get::<_, i64>(3)? as u64,
                    last_error: r.get(4)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

fn read_partial(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Partial> {
    let f = |i: usize| -> rusqlite::Result<f64> {
        // SQLite stores NaN as NULL.
        Ok(row.get::<_, Option<f64>>(at + i)?.unwrap_or(f64::NAN))
    };
    Ok(Partial {
        count: row.get::<_, i64>(at)? as u64,
        sum: f(1)?,
        min: f(2)?,
        max: f(3)?,
        first_ts: row.get(at + 4)?,
        first: f(5)?,
        last_ts: row.get(at + 6)?,
        last: f(7)?,
    })
}

/// Answers `selector` over `range` from this shard: one [`SeriesPartials`] per matching series
/// with samples in the range, handed to `each` as it is ready (so an answer can be streamed in
/// chunks); `each` returns false to stop early (the caller went away).
pub fn query(
    conn: &Connection,
    selector: &Selector,
    range: &Range,
    mut each: impl FnMut(SeriesPartials) -> bool,
) -> Result<(), TsdbError> {
    let mut series = conn.prepare_cached("SELECT id, labels FROM ts_series WHERE metric = ?1")?;
    let mut blocks = conn.prepare_cached(
        "SELECT encoding, count, sum, min, max, first_ts, first, last_ts, last, ts, vals
         FROM ts_blocks WHERE series = ?1 AND max_ts >= ?2 AND min_ts < ?3",
    )?;
    let mut rows = series.query([&selector.metric])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let labels = parse_labels(&row.get::<_, String>(1)?)?;
        if !selector.matchers.iter().all(|m| m.matches(&labels)) {
            continue;
        }
        let mut buckets = Buckets::new();
        let mut b = blocks.query(params![id, range.from_ms, range.to_ms])?;
        while let Some(block) = b.next()? {
            fold_block(block, range, &mut buckets)?;
        }
        if buckets.is_empty() {
            continue;
        }
        let out = SeriesPartials {
            labels,
            buckets: buckets.finish(),
        };
        if !each(out) {
            return Ok(());
        }
    }
    Ok(())
}

fn fold_block(
    block: &rusqlite::Row<'_>,
    range: &Range,
    into: &mut Buckets,
) -> Result<(), TsdbError> {
    let stats = read_partial(block, 1)?;
    let mut add = |bucket: i64, p: Partial| into.add(bucket, p);
    // The whole block in one bucket: its stored aggregate is the answer, no samples read.
    if let (Some(a), Some(b)) = (range.bucket(stats.first_ts), range.bucket(stats.last_ts))
        && a == b
    {
        add(a, stats);
        return Ok(());
    }
    let encoding = Encoding::from_code(block.get(0)?)?;
    // Borrowed from SQLite's row: no copy of the compressed bytes.
    let blob = |at: usize| match block.get_ref(at)? {
        ValueRef::Blob(b) => Ok(b),
        other => Err(TsdbError::Block(BlockError::Damaged(format!(
            "block column {at} is {:?}, not a blob",
            other.data_type()
        )))),
    };
    let samples = Samples::decode(encoding, blob(9)?, blob(10)?)?;
    // Samples are sorted by time: fold each bucket's run locally and touch the map once per
    // bucket, not once per sample (a 24 h query decodes millions of samples).
    let mut run: Option<(i64, Partial)> = None;
    for (&t, &v) in samples.ts.iter().zip(&samples.vals) {
        let Some(bucket) = range.bucket(t) else {
            continue;
        };
        match &mut run {
            Some((b, p)) if *b == bucket => p.push(t, v),
            _ => {
                if let Some((b, p)) = run.replace((bucket, Partial::of(t, v))) {
                    add(b, p);
                }
            }
        }
    }
    if let Some((b, p)) = run {
        add(b, p);
    }
    Ok(())
}

/// Every metric name in the shard.
pub fn metrics(conn: &Connection) -> Result<Vec<String>, TsdbError> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT metric FROM ts_series ORDER BY metric")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

/// Series of `metric` (or of every metric) matching `matchers`, and with `span` only those
/// with a block of samples overlapping it.
pub fn series(
    conn: &Connection,
    selector: Option<&Selector>,
    span: Option<Span>,
) -> Result<Vec<SeriesKey>, TsdbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT metric, labels FROM ts_series s WHERE (?1 IS NULL OR metric = ?1)
         AND (?2 IS NULL OR EXISTS (SELECT 1 FROM ts_blocks b
              WHERE b.series = s.id AND b.max_ts >= ?2 AND b.min_ts <= ?3))
         ORDER BY metric, labels",
    )?;
    let mut rows = stmt.query(params![
        selector.map(|s| s.metric.as_str()),
        span.map(|s| s.from_ms),
        span.map(|s| s.to_ms)
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let key = SeriesKey {
            metric: row.get(0)?,
            labels: parse_labels(&row.get::<_, String>(1)?)?,
        };
        if selector.is_none_or(|s| s.matchers.iter().all(|m| m.matches(&key.labels))) {
            out.push(key);
        }
    }
    Ok(out)
}

/// What one [`seal`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    pub series: u64,
    pub raw_blocks: u64,
    pub sealed_blocks: u64,
    pub samples: u64,
}

/// Seals, for every series, the samples older than its newest sample minus `window_ms` into
/// compressed blocks of at most [`SEAL_SPAN_MS`]; later samples older than that boundary are
/// refused as too old. Runs in one transaction per series, so commits interleave with it.
pub fn seal(conn: &mut Connection, window_ms: i64) -> Result<SealReport, TsdbError> {
    let due: Vec<(i64, i64)> = {
        let mut stmt = conn.prepare(
            "SELECT s.id, s.max_ts FROM ts_series s
             WHERE EXISTS (SELECT 1 FROM ts_blocks b WHERE b.series = s.id AND b.encoding = 0
                           AND b.min_ts < s.max_ts - ?1)",
        )?;
        stmt.query_map([window_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut report = SealReport::default();
    for (series, max_ts) in due {
        let boundary = (max_ts.saturating_sub(window_ms)).div_euclid(SEAL_SPAN_MS) * SEAL_SPAN_MS;
        let tx = conn.transaction()?;
        let one = seal_series(&tx, series, boundary)?;
        tx.commit()?;
        report.series += 1;
        report.raw_blocks += one.raw_blocks;
        report.sealed_blocks += one.sealed_blocks;
        report.samples += one.samples;
    }
    Ok(report)
}

fn seal_series(tx: &Connection, series: i64, boundary: i64) -> Result<SealReport, TsdbError> {
    let mut report = SealReport::default();
    let mut old = Samples::default();
    let mut young = Samples::default();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, ts, vals FROM ts_blocks WHERE series = ?1 AND encoding = 0 AND min_ts < ?2",
        )?;
        let mut rows = stmt.query(params![series, boundary])?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            ids.push(row.get::<_, i64>(0)?);
            let s = Samples::decode(
                Encoding::Raw,
                &row.get::<_, Vec<u8>>(1)?,
                &row.get::<_, Vec<u8>>(2)?,
            )?;
            for (&t, &v) in s.ts.iter().zip(&s.vals) {
                if t < boundary {
                    old.push(t, v)
                } else {
                    young.push(t, v)
                }
            }
        }
        report.raw_blocks = ids.len() as u64;
        let mut del = tx.prepare_cached("DELETE FROM ts_blocks WHERE id = ?1")?;
        for id in ids {
            del.execute([id])?;
        }
    }
    old.sort();
    young.sort();
    report.samples = old.len() as u64;
    let mut start = 0;
    while start < old.len() {
        let span = old.ts[start].div_euclid(SEAL_SPAN_MS);
        let end = start
            + old.ts[start..]
                .iter()
                .take_while(|t| t.div_euclid(SEAL_SPAN_MS) == span)
                .count();
        let part = Samples {
            ts: old.ts[start..end].to_vec(),
            vals: old.vals[start..end].to_vec(),
        };
        insert(tx, series, &part, Encoding::Pco)?;
        report.sealed_blocks += 1;
        start = end;
    }
    if !young.is_empty() {
        insert(tx, series, &young, Encoding::Raw)?;
    }
    tx.prepare_cached("UPDATE ts_series SET sealed_until = max(sealed_until, ?2) WHERE id = ?1")?
        .execute(params![series, boundary])?;
    Ok(report)
}

fn insert(tx: &Connection, series: i64, s: &Samples, encoding: Encoding) -> Result<(), TsdbError> {
    let Some(p) = s.partial() else { return Ok(()) };
    let (ts, vals) = s.encode(encoding)?;
    tx.prepare_cached(
        "INSERT INTO ts_blocks (series, min_ts, max_ts, encoding, count, sum, min, max,
                               first_ts, first, last_ts, last, ts, vals)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        series,
        p.first_ts,
        p.last_ts,
        encoding as i64,
        p.count as i64,
        p.sum,
        p.min,
        p.max,
        p.first_ts,
        p.first,
        p.last_ts,
        p.last,
        ts,
        vals
    ])?;
    Ok(())
}

/// Drops blocks that ended before `cutoff_ms`, and series left without blocks.
pub fn retain(conn: &mut Connection, cutoff_ms: i64) -> Result<u64, TsdbError> {
    let tx = conn.transaction()?;
    let dropped = tx.execute("DELETE FROM ts_blocks WHERE max_ts < ?1", [cutoff_ms])?;
    tx.execute(
        "DELETE FROM ts_series WHERE NOT EXISTS (SELECT 1 FROM ts_blocks b WHERE b.series = ts_series.id)",
        [],
    )?;
    tx.commit()?;
    Ok(dropped as u64)
}

#[cfg(test)]
#[path = "tsdb_tests.rs"]
mod tests;

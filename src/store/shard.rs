//! The store's time-series side (M1): a batch's files are parsed *before* its group commit
//! ([`parse_batch`], from the staged bytes), and their samples are written by
//! [`Shard::write`] on the same transaction as the catalog rows, only for rows that
//! transaction newly inserted — so a file is in the store with all of its samples or not at
//! all, and a re-committed file key adds nothing (hazard 28). Parsing never fails a commit: a
//! file that cannot be parsed is committed as a file, with a counted reason. Sealing and
//! retention run apart from commits ([`Shard::maintain`]) on their own connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, TransactionBehavior};

use super::outbox::{self, QueueLimits};
use super::{FileMeta, Staged, StoreError};
use crate::config::ShardConfig;
use crate::spec::{BadIngestSpec, IngestSpec};
use crate::stats::block::Samples;
use crate::stats::parse::{
    self, Format, MetricKind, ParseOptions, Precision, SampleSink, SeriesRef,
};
use crate::stats::tsdb::{self, FileSamples, Limits, SeriesCache, SeriesKey, TsdbError};

/// Files larger than this are committed as files only: a file is parsed from memory whole,
/// and one worker parses many clients' files at once.
pub(crate) const MAX_PARSE_BYTES: u64 = 256 << 20;

/// How one client's files are parsed; goes with each batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseSettings {
    pub format: Format,
    pub precision: Precision,
    pub time_field: Option<String>,
    pub label_fields: Option<Vec<String>>,
}

impl ParseSettings {
    /// No samples: the files only (`--format none`).
    pub(crate) fn files_only() -> Self {
        ParseSettings {
            format: Format::None,
            precision: Precision::Ns,
            time_field: None,
            label_fields: None,
        }
    }

    /// The settings a client was added with (checked by `sqdctl` and the leader already).
    pub(crate) fn from_spec(spec: &IngestSpec) -> Result<Self, BadIngestSpec> {
        Ok(ParseSettings {
            format: spec.format()?,
            precision: spec.precision()?,
            time_field: (!spec.time_field.is_empty()).then(|| spec.time_field.clone()),
            label_fields: (!spec.label_fields.is_empty()).then(|| spec.label_fields.clone()),
        })
    }

    fn options(&self, meta: &FileMeta) -> ParseOptions {
        let mut opts = ParseOptions::new(meta.client.clone(), meta.mtime.saturating_mul(1000));
        opts.precision = self.precision;
        opts.time_field = self.time_field.clone();
        opts.label_fields = self.label_fields.clone();
        opts.file_name = meta.name.clone();
        opts
    }
}

/// Parses every staged file of a batch (one entry per file; `None`: files only).
pub(crate) fn parse_batch(batch: &[Staged], settings: &ParseSettings) -> Vec<Option<FileSamples>> {
    batch
        .iter()
        .map(|s| (settings.format != Format::None).then(|| parse_staged(s, settings)))
        .collect()
}

/// A file that yields no samples, and why (counted as one parse error of its client).
fn unparsed(reason: String) -> FileSamples {
    FileSamples {
        parse_errors: 1,
        last_error: Some(reason),
        ..FileSamples::default()
    }
}

fn parse_staged(s: &Staged, settings: &ParseSettings) -> FileSamples {
    if s.meta.size > MAX_PARSE_BYTES {
        return unparsed(format!(
            "file of {} bytes is over the {} MiB parse limit: committed as a file only",
            s.meta.size,
            MAX_PARSE_BYTES >> 20
        ));
    }
    let bytes = match std::fs::read(&s.path) {
        Ok(b) if b.len() as u64 <= MAX_PARSE_BYTES => b,
        Ok(b) => {
            return unparsed(format!(
                "file of {} bytes is over the parse limit: committed as a file only",
                b.len()
            ));
        }
        Err(e) => return unparsed(format!("cannot read the staged file to parse it: {e}")),
    };
    parse_bytes(&bytes, &settings.options(&s.meta), settings.format)
}

/// Parses one file's bytes into samples grouped by series.
pub(crate) fn parse_bytes(bytes: &[u8], opts: &ParseOptions, format: Format) -> FileSamples {
    let mut sink = Grouper::default();
    let report = parse::parse(format, bytes, opts, &mut sink);
    let mut file = sink.file;
    file.parse_errors = report.errors;
    file.last_error = report.last_error.map(|e| e.to_string());
    if matches!(report.format, Format::Auto | Format::None) && !bytes.is_empty() {
        file.parse_errors += 1;
        file.last_error = Some(
            "format not recognised (by extension or first line): committed as a file only; set it with add-client --format"
                .to_owned(),
        );
    }
    file
}

/// Series recently seen, compared before hashing: a line's samples mostly repeat the series
/// of the lines before it, and comparing saves building a key per sample.
const RECENT: usize = 16;

/// A [`SampleSink`] that groups a file's samples by series.
#[derive(Default)]
struct Grouper {
    file: FileSamples,
    recent: Vec<SeriesKey>,
    next: usize,
}

fn same(key: &SeriesKey, series: &SeriesRef<'_>) -> bool {
    key.metric == series.metric
        && key.labels.len() == series.labels.len()
        && key
            .labels
            .iter()
            .zip(series.labels)
            .all(|((a, b), (c, d))| a == c && b == d)
}

impl SampleSink for Grouper {
    fn sample(&mut self, series: &SeriesRef<'_>, ts_ms: i64, value: f64) {
        let at = match self.recent.iter().position(|k| same(k, series)) {
            Some(at) => at,
            None => {
                let key = SeriesKey {
                    metric: series.metric.to_owned(),
                    labels: series
                        .labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                };
                let at = if self.recent.len() < RECENT {
                    self.recent.push(key);
                    self.recent.len() - 1
                } else {
                    let at = self.next;
                    self.next = (self.next + 1) % RECENT;
                    self.recent[at] = key;
                    at
                };
                if !self.file.series.contains_key(&self.recent[at]) {
                    self.file
                        .series
                        .insert(self.recent[at].clone(), Samples::default());
                }
                at
            }
        };
        if let Some(samples) = self.file.series.get_mut(&self.recent[at]) {
            samples.push(ts_ms, value);
        }
    }

    fn metric_type(&mut self, metric: &str, kind: MetricKind) {
        self.file
            .kinds
            .push((metric.to_owned(), kind.as_str().to_owned()));
    }
}

/// The shard's state kept by the store: the series cache of the commit path, the limits, and
/// the connection sealing and retention use.
pub(crate) struct Shard {
    cache: Mutex<SeriesCache>,
    config: ShardConfig,
    catalog: PathBuf,
    maintenance: Mutex<Option<Connection>>,
    /// Set when remote-write is on: a commit's new samples also go to the outbox.
    outbox: Option<QueueLimits>,
}

/// What one [`Shard::maintain`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Maintained {
    pub sealed_series: u64,
    pub sealed_samples: u64,
    pub dropped_blocks: u64,
}

impl Shard {
    /// Creates the shard's tables in the catalog if missing.
    pub(crate) fn open(
        conn: &Connection,
        catalog: &Path,
        config: ShardConfig,
    ) -> rusqlite::Result<Shard> {
        conn.execute_batch(tsdb::SCHEMA)?;
        conn.execute_batch(outbox::SCHEMA)?;
        Ok(Shard {
            cache: Mutex::new(SeriesCache::default()),
            config,
            catalog: catalog.to_owned(),
            maintenance: Mutex::new(None),
            outbox: None,
        })
    }

    /// Turns the remote-write outbox on: commits from now on enqueue their new samples.
    pub(crate) fn enable_outbox(&mut self, limits: QueueLimits) {
        self.outbox = Some(limits);
    }

    /// The series cache. Commits take it before their transaction begins and maintenance
    /// before it writes, so neither waits for SQLite's lock while holding it against the other.
    pub(crate) fn cache(&self) -> MutexGuard<'_, SeriesCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn err(&self, e: TsdbError) -> StoreError {
        match e {
            TsdbError::Sqlite(e) => StoreError::catalog(&self.catalog, e),
            other => StoreError::Shard {
                path: self.catalog.clone(),
                source: other,
            },
        }
    }

    /// Writes the samples of the newly inserted files on `tx` (the catalog rows' transaction).
    /// `files[i]` and `inserted[i]` describe the batch's i-th file. Returns the samples
    /// written per client.
    pub(crate) fn write(
        &self,
        tx: &Connection,
        cache: &mut SeriesCache,
        files: &[Option<FileSamples>],
        batch: &[Staged],
        inserted: &[bool],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let limits = Limits {
            max_series: self.config.max_series,
        };
        // One write per client per batch: a batch of small files becomes one raw block per
        // series instead of one per file and series (the statements, not the bytes, were the
        // cost of small files). Still on the catalog rows' transaction (M1).
        let mut merged: Vec<(&str, FileSamples)> = Vec::new();
        for ((file, s), new) in files.iter().zip(batch).zip(inserted) {
            if let (Some(file), true) = (file, new) {
                match merged.iter_mut().find(|(c, _)| *c == s.meta.client) {
                    Some((_, into)) => into.absorb(file),
                    None => merged.push((&s.meta.client, file.clone())),
                }
            }
        }
        let mut samples = BTreeMap::new();
        let mut kept: Vec<(SeriesKey, Samples)> = Vec::new();
        let mut keep = |key: &SeriesKey, s: &Samples| {
            if self.outbox.is_some() {
                kept.push((key.clone(), s.clone()));
            }
        };
        for (client, file) in &merged {
            let report = tsdb::write_file_with(tx, cache, client, file, limits, &mut keep)
                .map_err(|e| self.err(e))?;
            samples.insert((*client).to_owned(), report.samples);
        }
        if let Some(queue) = self.outbox {
            // Same transaction as the rows and samples: in the shard means in the queue.
            outbox::enqueue(tx, queue, &kept, crate::clock::unix_ms())
                .map_err(|e| self.err(e.into()))?;
        }
        Ok(samples)
    }

    /// Seals samples older than the out-of-order window and drops what retention ended.
    /// Commits go on meanwhile: sealing runs one short transaction per series on its own
    /// connection; only the retention delete holds the series cache (its deleted series must
    /// leave the cache before a commit could write to them).
    pub(crate) fn maintain(&self, now_ms: i64) -> Result<Maintained, StoreError> {
        let mut guard = self
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let mut conn = Connection::open(&self.catalog)
                .map_err(|e| StoreError::catalog(&self.catalog, e))?;
            // Immediate: a sealing transaction reads then writes; a deferred one would fail
            // instead of waiting when a commit wrote in between.
            conn.set_transaction_behavior(TransactionBehavior::Immediate);
            conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
                .map_err(|e| StoreError::catalog(&self.catalog, e))?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Ok(Maintained::default());
        };
        let window_ms =
            i64::try_from(self.config.ooo_window_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let sealed = tsdb::seal(conn, window_ms).map_err(|e| self.err(e))?;
        let retention_ms = i64::try_from(self.config.retention_days.saturating_mul(86_400_000))
            .unwrap_or(i64::MAX);
        let mut cache = self.cache();
        let dropped =
            tsdb::retain(conn, now_ms.saturating_sub(retention_ms)).map_err(|e| self.err(e))?;
        if sealed.series > 0 || dropped > 0 {
            // Sealing moved boundaries (too-old checks) and retention may have deleted series.
            cache.invalidate();
        }
        Ok(Maintained {
            sealed_series: sealed.series,
            sealed_samples: sealed.samples,
            dropped_blocks: dropped,
        })
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;

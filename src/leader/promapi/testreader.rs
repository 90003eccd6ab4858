//! Test-only [`ClusterReader`] over real tsdb shards: one SQLite file per shard, each read with
//! [`tsdb::query`]/[`tsdb::series`]/[`tsdb::metrics`] on its own read-only connection and merged
//! with [`Merger`], as the leader's fan-out does over the network. A shard whose file cannot be
//! opened is reported as failed with the real error, so partial answers are tested for real.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::stats::cluster::{Answer, ClusterError, ClusterReader, ShardReport};
use crate::stats::query::{Merger, Range, Selector, SeriesPartials, Span};
use crate::stats::tsdb::{self, FileSamples, Limits, SeriesCache, SeriesKey};

/// Shards by id → path of their SQLite file.
pub(crate) struct TsdbShards {
    pub shards: Vec<(String, PathBuf)>,
}

/// Writes `series` (metric, labels, samples) into a new shard at `path`, as one file of
/// `client`.
pub(crate) fn write_shard(path: &Path, client: &str, series: &[(SeriesKey, Vec<(i64, f64)>)]) {
    let mut conn = Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(tsdb::SCHEMA)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut file = FileSamples::default();
    for (key, samples) in series {
        let s = file.series.entry(key.clone()).or_default();
        for &(t, v) in samples {
            s.push(t, v);
        }
    }
    let mut cache = SeriesCache::default();
    let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
    tsdb::write_file(
        &tx,
        &mut cache,
        client,
        &file,
        Limits { max_series: 10_000 },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().unwrap_or_else(|e| panic!("{e}"));
}

impl TsdbShards {
    /// Runs `read` on every shard, folds what answered with `fold`, reports who did.
    fn each<T>(
        &self,
        mut read: impl FnMut(&Connection) -> Result<T, tsdb::TsdbError>,
        mut fold: impl FnMut(T),
    ) -> ShardReport {
        let mut report = ShardReport::default();
        for (id, path) in &self.shards {
            report.asked.push(id.clone());
            let answer = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(tsdb::TsdbError::from)
                .and_then(|conn| read(&conn));
            match answer {
                Ok(v) => {
                    fold(v);
                    report.answered.push(id.clone());
                }
                Err(e) => {
                    report.failed.insert(id.clone(), e.to_string());
                }
            }
        }
        report
    }
}

impl ClusterReader for TsdbShards {
    fn query(
        &self,
        selector: Selector,
        range: Range,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<SeriesPartials>>, ClusterError>> + Send {
        let mut merger = Merger::default();
        let report = self.each(
            |conn| {
                let mut parts = Vec::new();
                tsdb::query(conn, &selector, &range, |p| {
                    parts.push(p);
                    true
                })?;
                Ok(parts)
            },
            |parts| parts.into_iter().for_each(|p| merger.add(p)),
        );
        let value = merger.finish();
        async move { Ok(Answer { value, report }) }
    }

    fn series(
        &self,
        selector: Option<Selector>,
        span: Option<Span>,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<SeriesKey>>, ClusterError>> + Send {
        let mut all = BTreeSet::new();
        let report = self.each(
            |conn| tsdb::series(conn, selector.as_ref(), span),
            |keys| all.extend(keys),
        );
        let value = all.into_iter().collect();
        async move { Ok(Answer { value, report }) }
    }

    fn metrics(
        &self,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<String>>, ClusterError>> + Send {
        let mut all = BTreeSet::new();
        let report = self.each(tsdb::metrics, |names| all.extend(names));
        let value = all.into_iter().collect();
        async move { Ok(Answer { value, report }) }
    }
}

//! Entry points for `benches/ingest.rs` (hidden from the docs): the commit path, sealing and
//! the one-shard query of a real [`LocalStore`], measured without exposing the store's types.
//! The bench binary generates the files and keeps the clock; this module only drives the
//! store exactly as a worker does (stage, one group commit with parsing, maintain, query).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{FileMeta, LocalStore, ParseSettings, Sink, Staged, StoreError};
use crate::config::ShardConfig;
use crate::spec::{BadIngestSpec, IngestSpec};
use crate::stats::query::{Matcher, QueryError, Range, Selector};
use crate::stats::tsdb::{self, TsdbError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] BadIngestSpec),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Shard(#[from] TsdbError),
    #[error("catalog {path}: {source}")]
    Catalog {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Files written into the store's staging directory, ready for one group commit.
pub struct StagedFiles {
    files: Vec<Staged>,
}

/// What the shard holds on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    /// Samples in compressed (sealed) blocks and their timestamp + value bytes.
    pub sealed_samples: u64,
    pub sealed_payload_bytes: u64,
    /// Samples in any block.
    pub samples: u64,
    /// The catalog file after `VACUUM` (files' rows, series, blocks and SQLite's pages).
    pub catalog_bytes: u64,
}

/// One worker's store, driven as the worker drives it.
pub struct BenchShard {
    store: LocalStore,
    root: PathBuf,
    seq: u64,
}

impl BenchShard {
    /// Opens (creating) a store at `root`; samples older than their series' newest minus
    /// `ooo_window_s` are sealed by [`BenchShard::seal`]. `SQD_BENCH_REMOTE_WRITE` set: the
    /// remote-write outbox is on.
    pub fn open(root: &Path, ooo_window_s: u64) -> Result<BenchShard, BenchError> {
        let config = ShardConfig {
            ooo_window_s,
            ..ShardConfig::default()
        };
        let mut store = LocalStore::open_with(root, config)?;
        // The commit path with remote-write on (its outbox enqueue) when asked.
        if std::env::var_os("SQD_BENCH_REMOTE_WRITE").is_some() {
            store = store.with_remote_queue(super::outbox::QueueLimits {
                max_bytes: 1 << 40,
                piece_samples: 5000,
            });
        }
        Ok(BenchShard {
            store,
            root: root.to_path_buf(),
            seq: 0,
        })
    }

    /// Writes `files` (client, name, content) into staging, as the puller does.
    pub fn stage(
        &mut self,
        files: &[(String, String, Vec<u8>)],
    ) -> Result<StagedFiles, BenchError> {
        let mut out = Vec::with_capacity(files.len());
        for (client, name, content) in files {
            self.seq += 1;
            let path = self
                .store
                .staging_dir()
                .join(format!("bench-{}.part", self.seq));
            std::fs::write(&path, content).map_err(|source| BenchError::Io {
                path: path.clone(),
                source,
            })?;
            let meta = FileMeta {
                client: client.clone(),
                name: name.as_bytes().to_vec(),
                size: content.len() as u64,
                mtime: crate::clock::unix_ms() / 1000,
                hash: *blake3::hash(content).as_bytes(),
            };
            out.push(Staged { meta, path });
        }
        Ok(StagedFiles { files: out })
    }

    /// One group commit of `staged`, parsed as `format` (`auto`, `influx`, …, `none`): the
    /// files, their catalog rows and their samples durable together (M1).
    pub fn commit(&self, staged: StagedFiles, format: &str) -> Result<(), BenchError> {
        let spec = IngestSpec {
            format: format.to_owned(),
            ..IngestSpec::default()
        };
        let settings = ParseSettings::from_spec(&spec)?;
        self.store
            .commit_batch("bench", 1, staged.files, &settings)?;
        Ok(())
    }

    /// Samples stored for `client`.
    pub fn samples(&self, client: &str) -> Result<u64, BenchError> {
        Ok(self.store.ingest(client)?.samples)
    }

    /// Seals and applies retention as the worker's maintenance does; returns sealed samples.
    pub fn seal(&self, now_ms: i64) -> Result<u64, BenchError> {
        Ok(self.store.maintain(now_ms)?.sealed_samples)
    }

    /// Bytes on disk per kind, after a `VACUUM` of the catalog.
    pub fn sizes(&self) -> Result<Sizes, BenchError> {
        let conn = self.store.conn();
        let cat = |source| BenchError::Catalog {
            path: self.catalog(),
            source,
        };
        // In WAL mode VACUUM writes the new pages to the log: checkpoint after it.
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(cat)?;
        let (sealed_samples, sealed_payload_bytes, samples) = conn
            .query_row(
                "SELECT COALESCE(SUM(CASE WHEN encoding = 1 THEN count END), 0),
                        COALESCE(SUM(CASE WHEN encoding = 1 THEN length(ts) + length(vals) END), 0),
                        COALESCE(SUM(count), 0)
                 FROM ts_blocks",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .map_err(cat)?;
        let catalog_bytes = std::fs::metadata(self.catalog())
            .map_err(|source| BenchError::Io {
                path: self.catalog(),
                source,
            })?
            .len();
        Ok(Sizes {
            sealed_samples: sealed_samples.max(0) as u64,
            sealed_payload_bytes: sealed_payload_bytes.max(0) as u64,
            samples: samples.max(0) as u64,
            catalog_bytes,
        })
    }

    /// Opens a read-only connection, as a shard query does (a WAL snapshot).
    pub fn reader(&self) -> Result<BenchReader, BenchError> {
        let path = self.catalog();
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| BenchError::Catalog { path, source })?;
        Ok(BenchReader { conn })
    }

    fn catalog(&self) -> PathBuf {
        self.root.join("catalog.sqlite")
    }
}

/// A read-only connection to a shard.
pub struct BenchReader {
    conn: Connection,
}

impl BenchReader {
    /// Answers `metric{matchers}` over `[from_ms, to_ms)` at `step_ms` from this shard;
    /// returns (series, buckets) of the answer.
    pub fn query(
        &self,
        metric: &str,
        matchers: &[&str],
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<(usize, usize), BenchError> {
        let selector = Selector {
            metric: metric.to_owned(),
            matchers: matchers
                .iter()
                .map(|m| Matcher::parse(m))
                .collect::<Result<_, _>>()?,
        };
        let range = Range::new(from_ms, to_ms, step_ms)?;
        let (mut series, mut buckets) = (0, 0);
        tsdb::query(&self.conn, &selector, &range, |s| {
            series += 1;
            buckets += s.buckets.len();
            true
        })?;
        Ok((series, buckets))
    }
}

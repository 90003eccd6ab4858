//! Where committed files go: the [`Sink`] trait every store implements, the file identity
//! ([`FileMeta::key`]), and one conformance suite every sink must pass. The embedded default
//! is [`LocalStore`] (a directory plus a SQLite catalog, no server).

#[doc(hidden)]
pub mod bench;
pub(crate) mod local;
pub(crate) mod outbox;
pub(crate) mod rollup;
pub(crate) mod shard;

use std::path::{Path, PathBuf};

pub(crate) use local::LocalStore;
pub(crate) use shard::{Maintained, ParseSettings};

/// What identifies a pulled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub client: String,
    /// Original remote file name: opaque bytes (may be non-UTF-8, hold '\n', be 255 long).
    pub name: Vec<u8>,
    pub size: u64,
    /// Remote mtime, seconds since the epoch.
    pub mtime: i64,
    /// blake3 of the content.
    pub hash: [u8; 32],
}

impl FileMeta {
    /// Stable key over client, name, size, mtime and content hash — never the inode
    /// (hazard 5). Length-prefixed so no two field lists encode alike.
    pub(crate) fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        for field in [self.client.as_bytes(), &self.name] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field);
        }
        h.update(&self.size.to_le_bytes());
        h.update(&self.mtime.to_le_bytes());
        h.update(&self.hash);
        h.finalize().to_hex().to_string()
    }
}

/// A file staged by the puller: fully written (not yet synced) at `path`, inside
/// [`Sink::staging_dir`].
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub meta: FileMeta,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Newly committed: data and catalog row are durable; `path` is where the data lives.
    Committed { path: PathBuf },
    /// The key was committed before (e.g. a crash between commit and source delete); the
    /// staged file was discarded.
    AlreadyPresent,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_today: u64,
    pub bytes_today: u64,
    /// Commit time of the newest file, ms since the Unix epoch; 0 when none.
    pub last_commit_unix_ms: i64,
}

const DAY_MS: i64 = 86_400_000;

impl Totals {
    /// Counts a batch committed at `at_unix_ms`, so callers need not re-read the catalog after
    /// every batch; "today" restarts when the UTC day changed since the last commit.
    pub(crate) fn add_batch(&mut self, files: u64, bytes: u64, at_unix_ms: i64) {
        if at_unix_ms.div_euclid(DAY_MS) != self.last_commit_unix_ms.div_euclid(DAY_MS) {
            self.files_today = 0;
            self.bytes_today = 0;
        }
        self.files_total += files;
        self.bytes_total += bytes;
        self.files_today += files;
        self.bytes_today += bytes;
        self.last_commit_unix_ms = self.last_commit_unix_ms.max(at_unix_ms);
    }

    /// (files, bytes) committed on the UTC day of `now_unix_ms`.
    pub(crate) fn today(&self, now_unix_ms: i64) -> (u64, u64) {
        if now_unix_ms.div_euclid(DAY_MS) == self.last_commit_unix_ms.div_euclid(DAY_MS) {
            (self.files_today, self.bytes_today)
        } else {
            (0, 0)
        }
    }
}

#[cfg(test)]
mod totals_tests {
    use super::*;

    #[test]
    fn batches_add_up_and_today_restarts_on_a_new_utc_day() {
        let day = 20_000 * DAY_MS;
        let mut t = Totals::default();
        t.add_batch(2, 20, day + 1000);
        t.add_batch(1, 5, day + 2000);
        assert_eq!((t.files_total, t.bytes_total), (3, 25));
        assert_eq!(t.today(day + 5000), (3, 25));
        assert_eq!(t.today(day + DAY_MS), (0, 0), "nothing yet on the next day");
        t.add_batch(4, 40, day + DAY_MS + 1);
        assert_eq!((t.files_total, t.bytes_total), (7, 65));
        assert_eq!(t.today(day + DAY_MS + 10), (4, 40));
        assert_eq!(t.last_commit_unix_ms, day + DAY_MS + 1);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store disk is full at {path}; free space there, sqd retries by itself and deletes nothing meanwhile"
    )]
    DiskFull { path: PathBuf },
    #[error("store I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "store catalog {path}: {source}; if it is damaged, move the store's catalog.sqlite away and restart (files stay)"
    )]
    Catalog {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("staged file {path} is not inside the staging directory")]
    NotStaged { path: PathBuf },
    #[error("store catalog {path}: {source}")]
    Shard {
        path: PathBuf,
        source: crate::stats::tsdb::TsdbError,
    },
}

impl StoreError {
    /// Maps an I/O error, recognising a full disk.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(nix::libc::ENOSPC)
            || source.kind() == std::io::ErrorKind::StorageFull
        {
            StoreError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            StoreError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }

    /// Maps a SQLite error, recognising a full disk.
    pub(crate) fn catalog(path: &Path, source: rusqlite::Error) -> Self {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull {
                path: path.to_owned(),
            },
            _ => StoreError::Catalog {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// Where committed files go. Blocking API: callers run it on a blocking thread.
pub(crate) trait Sink: Send + Sync {
    /// Directory the puller writes temp files into (same filesystem as the final files).
    fn staging_dir(&self) -> &Path;
    /// Commits a batch durably with one group commit; idempotent on [`FileMeta::key`]. One
    /// outcome per input, same order. After an error, retrying the batch is safe. The files'
    /// samples, parsed as `parse` says, commit with them (M1), for newly committed keys only.
    fn commit_batch(
        &self,
        worker: &str,
        epoch: u64,
        batch: Vec<Staged>,
        parse: &ParseSettings,
    ) -> Result<Vec<Outcome>, StoreError>;
    /// Background upkeep of the samples (sealing, retention); a sink without samples has none.
    fn maintain(&self, _now_ms: i64) -> Result<Maintained, StoreError> {
        Ok(Maintained::default())
    }
    /// A client's sample counters (samples, parse errors, too old, over the series cap).
    fn ingest(&self, _client: &str) -> Result<crate::stats::tsdb::ClientIngest, StoreError> {
        Ok(Default::default())
    }
    /// Counts one failed pull of `client` in the roll-up counters (durable); a sink without
    /// counters ignores it.
    fn pull_error(&self, _client: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether a key is already committed.
    fn contains(&self, key: &str) -> Result<bool, StoreError>;
    /// Per-client totals; "today" is the current UTC day.
    fn totals(&self, client: &str) -> Result<Totals, StoreError>;
    /// Bytes of every committed file, all clients together.
    fn bytes_stored(&self) -> Result<u64, StoreError>;
}

/// The checks every [`Sink`] must pass. `make` opens the sink in a directory; calling it
/// again on the same directory must reopen the same store.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    pub type Make<'a> = &'a dyn Fn(&Path) -> Box<dyn Sink>;

    /// Every file parsed by detection: whatever the content, files commit as files.
    pub fn auto() -> ParseSettings {
        ParseSettings::from_spec(&crate::spec::IngestSpec::default()).unwrap()
    }

    pub fn stage(sink: &dyn Sink, client: &str, name: &[u8], content: &[u8], seq: u64) -> Staged {
        let path = sink.staging_dir().join(format!("test-{seq}.part"));
        std::fs::write(&path, content).unwrap();
        Staged {
            meta: FileMeta {
                client: client.into(),
                name: name.to_vec(),
                size: content.len() as u64,
                mtime: 1_700_000_000,
                hash: *blake3::hash(content).as_bytes(),
            },
            path,
        }
    }

    fn committed_path(o: &Outcome) -> PathBuf {
        match o {
            Outcome::Committed { path } => path.clone(),
            Outcome::AlreadyPresent => panic!("expected Committed, got {o:?}"),
        }
    }

    pub fn run_all(make: Make<'_>) {
        commit_is_durable_and_counted(make);
        same_key_twice_is_stored_once(make);
        same_name_new_content_is_a_new_file(make);
        hostile_names_stay_beneath_the_client_dir(make);
        staging_is_emptied_by_commits(make);
    }

    fn commit_is_durable_and_counted(make: Make<'_>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = make(dir.path());
        let s = stage(sink.as_ref(), "c", b"a.jsonl", b"hello", 1);
        let key = s.meta.key();
        let out = sink.commit_batch("w", 1, vec![s], &auto()).unwrap();
        assert_eq!(std::fs::read(committed_path(&out[0])).unwrap(), b"hello");
        let t = sink.totals("c").unwrap();
        assert_eq!((t.files_total, t.bytes_total, t.files_today), (1, 5, 1));
        drop(sink);
        let again = make(dir.path());
        assert!(again.contains(&key).unwrap());
        assert_eq!(again.totals("c").unwrap().files_total, 1);
        assert_eq!(again.totals("other").unwrap(), Totals::default());
        assert_eq!(again.bytes_stored().unwrap(), 5);
    }

    fn same_key_twice_is_stored_once(make: Make<'_>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = make(dir.path());
        let first = sink
            .commit_batch(
                "w",
                1,
                vec![stage(sink.as_ref(), "c", b"x", b"same", 1)],
                &auto(),
            )
            .unwrap();
        committed_path(&first[0]);
        let again = sink
            .commit_batch(
                "w",
                2,
                vec![stage(sink.as_ref(), "c", b"x", b"same", 2)],
                &auto(),
            )
            .unwrap();
        assert_eq!(again, vec![Outcome::AlreadyPresent]);
        let batch = vec![
            stage(sink.as_ref(), "c", b"y", b"dup", 3),
            stage(sink.as_ref(), "c", b"y", b"dup", 4),
        ];
        let out = sink.commit_batch("w", 2, batch, &auto()).unwrap();
        committed_path(&out[0]);
        assert_eq!(out[1], Outcome::AlreadyPresent);
        assert_eq!(sink.totals("c").unwrap().files_total, 2);
    }

    fn same_name_new_content_is_a_new_file(make: Make<'_>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = make(dir.path());
        let a = sink
            .commit_batch(
                "w",
                1,
                vec![stage(sink.as_ref(), "c", b"n.jsonl", b"one", 1)],
                &auto(),
            )
            .unwrap();
        let b = sink
            .commit_batch(
                "w",
                1,
                vec![stage(sink.as_ref(), "c", b"n.jsonl", b"two", 2)],
                &auto(),
            )
            .unwrap();
        let (pa, pb) = (committed_path(&a[0]), committed_path(&b[0]));
        assert_ne!(pa, pb);
        assert_eq!(std::fs::read(pa).unwrap(), b"one");
        assert_eq!(std::fs::read(pb).unwrap(), b"two");
    }

    fn hostile_names_stay_beneath_the_client_dir(make: Make<'_>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = make(dir.path());
        let long = vec![b'x'; 255];
        let names: Vec<&[u8]> = vec![
            b"..",
            b".hidden",
            b"a\nb",
            b"\xff\xfe",
            &long,
            b"%",
            b"",
            b"a/../../b",
        ];
        for (i, name) in names.iter().enumerate() {
            let out = sink
                .commit_batch(
                    "w",
                    1,
                    vec![stage(
                        sink.as_ref(),
                        "c",
                        name,
                        format!("{i}").as_bytes(),
                        i as u64,
                    )],
                    &auto(),
                )
                .unwrap();
            let path = committed_path(&out[0]);
            let rel = path.strip_prefix(dir.path()).expect("inside the store");
            let parts: Vec<_> = rel.components().collect();
            assert_eq!(parts.len(), 4, "files/<client>/<date>/<name>: {rel:?}");
            assert!(rel.starts_with("files/c"), "{rel:?}");
            assert!(
                parts
                    .iter()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{rel:?}"
            );
        }
    }

    fn staging_is_emptied_by_commits(make: Make<'_>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = make(dir.path());
        let batch = (0..20)
            .map(|i| stage(sink.as_ref(), "c", format!("f{i}").as_bytes(), b"z", i))
            .collect();
        sink.commit_batch("w", 1, batch, &auto()).unwrap();
        assert_eq!(std::fs::read_dir(sink.staging_dir()).unwrap().count(), 0);
    }
}

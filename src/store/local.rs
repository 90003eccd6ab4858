//! The embedded store: `<store>/files/<client>/<YYYY-MM-DD>/<name>` plus
//! `<store>/catalog.sqlite` with one row per committed file, needing no server.
//!
//! Group commit, per batch: (1) one `syncfs` makes every staged file durable; (2) one SQLite
//! transaction inserts the rows (`INSERT OR IGNORE` on the file key) with the staging name and
//! the final path — **the commit point**; (3) each staged file is linked to its final path
//! (never overwriting: `link` fails if the name exists, then the next distinct name is taken)
//! and unlinked from staging; (4) one more `syncfs` and one transaction clear the staging
//! names. On open, rows whose move was interrupted are finished and staging is emptied.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use tracing::{info, warn};

use super::rollup::{self, Counters};
use super::shard::{self, Shard};
use super::{FileMeta, Maintained, Outcome, ParseSettings, Sink, Staged, StoreError, Totals};
use crate::config::ShardConfig;
use crate::stats::tsdb::FileSamples;

const SCHEMA_VERSION: i64 = 1;

/// A row a commit inserted: its id and the path it recorded for the file.
type NewRow = (i64, PathBuf);
/// A row whose file had to take another name: its id and that path, relative to the root.
type Renamed = (i64, String);
const MAX_LOCAL_NAME: usize = 200;

pub(crate) struct LocalStore {
    root: PathBuf,
    staging: PathBuf,
    catalog_path: PathBuf,
    conn: Mutex<Connection>,
    shard: Shard,
}

impl LocalStore {
    /// Opens the store at `root` with the default shard limits.
    #[cfg(test)]
    pub(crate) fn open(root: &Path) -> Result<LocalStore, StoreError> {
        Self::open_with(root, ShardConfig::default())
    }

    /// Opens (creating if needed) the store at `root` and recovers from an interrupted commit.
    pub(crate) fn open_with(root: &Path, config: ShardConfig) -> Result<LocalStore, StoreError> {
        let staging = root.join("staging");
        for dir in [root.to_path_buf(), root.join("files"), staging.clone()] {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        let catalog_path = root.join("catalog.sqlite");
        let cat = |e| StoreError::catalog(&catalog_path, e);
        let conn = Connection::open(&catalog_path).map_err(cat)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                 id INTEGER PRIMARY KEY,
                 file_key TEXT NOT NULL UNIQUE,
                 client TEXT NOT NULL,
                 name BLOB NOT NULL,
                 size INTEGER NOT NULL,
                 mtime INTEGER NOT NULL,
                 hash TEXT NOT NULL,
                 path TEXT NOT NULL,
                 staged_as TEXT,
                 worker TEXT NOT NULL,
                 epoch INTEGER NOT NULL,
                 committed_at_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS files_by_client ON files (client, committed_at_ms);
             CREATE INDEX IF NOT EXISTS files_staged ON files (staged_as) WHERE staged_as IS NOT NULL;",
        )
        .map_err(cat)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?1)",
            [SCHEMA_VERSION.to_string()],
        )
        .map_err(cat)?;
        let shard = Shard::open(&conn, &catalog_path, config).map_err(cat)?;
        conn.execute_batch(rollup::SCHEMA).map_err(cat)?;
        let store = LocalStore {
            root: root.to_path_buf(),
            staging,
            catalog_path,
            conn: Mutex::new(conn),
            shard,
        };
        store.recover()?;
        Ok(store)
    }

    /// Turns on the remote-write outbox (see `store::outbox`) before the first commit.
    pub(crate) fn with_remote_queue(mut self, limits: super::outbox::QueueLimits) -> Self {
        self.shard.enable_outbox(limits);
        self
    }

    /// The catalog's path: the remote-write shipper reads the outbox on its own connection.
    pub(crate) fn catalog_path(&self) -> &Path {
        &self.catalog_path
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cat(&self, e: rusqlite::Error) -> StoreError {
        StoreError::catalog(&self.catalog_path, e)
    }

    /// One `syncfs` on the store's filesystem: every dirty page and directory entry there
    /// becomes durable, for the whole batch at once.
    fn sync_all(&self) -> Result<(), StoreError> {
        let dir =
            std::fs::File::open(&self.staging).map_err(|e| StoreError::io(&self.staging, e))?;
        nix::unistd::syncfs(dir.as_fd())
            .map_err(|e| StoreError::io(&self.staging, std::io::Error::from(e)))
    }

    /// Finishes moves interrupted by a crash and empties staging of never-committed files.
    fn recover(&self) -> Result<(), StoreError> {
        let pending: Vec<(i64, String, String)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT id, staged_as, path FROM files WHERE staged_as IS NOT NULL")
                .map_err(|e| self.cat(e))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.cat(e))?
        };
        let mut finished = 0;
        for (id, staged_as, rel) in &pending {
            let staged = self.staging.join(staged_as);
            if staged.exists() {
                let final_path = self.place(&staged, Path::new(rel))?;
                let rel = self.relative(&final_path)?;
                self.conn()
                    .execute("UPDATE files SET path = ?2 WHERE id = ?1", params![id, rel])
                    .map_err(|e| self.cat(e))?;
                finished += 1;
            }
        }
        if !pending.is_empty() {
            self.sync_all()?;
            self.conn()
                .execute(
                    "UPDATE files SET staged_as = NULL WHERE staged_as IS NOT NULL",
                    [],
                )
                .map_err(|e| self.cat(e))?;
        }
        let mut discarded = 0;
        let entries =
            std::fs::read_dir(&self.staging).map_err(|e| StoreError::io(&self.staging, e))?;
        for entry in entries.flatten() {
            if std::fs::remove_file(entry.path()).is_ok() {
                discarded += 1;
            }
        }
        if finished + discarded > 0 {
            info!(store = %self.root.display(), finished, discarded, "store recovered from an interrupted commit");
        }
        Ok(())
    }

    /// Refuses a batch with a file outside staging (the store moves only its own files).
    fn check_staged(&self, batch: &[Staged]) -> Result<(), StoreError> {
        match batch
            .iter()
            .find(|s| s.path.parent() != Some(self.staging.as_path()))
        {
            Some(s) => Err(StoreError::NotStaged {
                path: s.path.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Step (2), the commit point: one transaction inserts a row per new key with its staging
    /// name and wanted path, and the samples of those new files (M1). Per file: the new row's
    /// id and wanted path, or `None` when the key was committed before.
    fn insert_rows(
        &self,
        worker: &str,
        epoch: u64,
        batch: &[Staged],
        samples: &[Option<FileSamples>],
    ) -> Result<Vec<Option<NewRow>>, StoreError> {
        let mut conn = self.conn();
        let mut cache = self.shard.cache();
        let result = (|| {
            let tx = conn.transaction().map_err(|e| self.cat(e))?;
            let inserted = self.insert_files(&tx, worker, epoch, batch)?;
            let new: Vec<bool> = inserted.iter().map(Option::is_some).collect();
            let written = self.shard.write(&tx, &mut cache, samples, batch, &new)?;
            // The roll-up counters move with the rows: counted exactly when committed.
            let counted = rollup_counts(batch, samples, &new, &written);
            rollup::add(&tx, &counted).map_err(|e| self.cat(e))?;
            tx.commit().map_err(|e| self.cat(e))?;
            Ok(inserted)
        })();
        // Series ids created by a transaction that did not commit must not be reused.
        match &result {
            Ok(_) => cache.committed(),
            Err(_) => cache.rolled_back(),
        }
        result
    }

    /// The catalog rows of step (2), on `tx`.
    fn insert_files(
        &self,
        tx: &rusqlite::Transaction<'_>,
        worker: &str,
        epoch: u64,
        batch: &[Staged],
    ) -> Result<Vec<Option<NewRow>>, StoreError> {
        let committed_at = crate::clock::unix_ms();
        let date = utc_date(committed_at);
        let mut inserted = Vec::with_capacity(batch.len());
        // Prepared once per batch (re-parsing the SQL for every row showed in profiles).
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO files
                 (file_key, client, name, size, mtime, hash, path, staged_as, worker, epoch, committed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(|e| self.cat(e))?;
        for s in batch {
            let wanted = wanted_path(&s.meta, &date)?;
            let staged_as = s.path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                StoreError::NotStaged {
                    path: s.path.clone(),
                }
            })?;
            let changed = insert
                .execute(params![
                    s.meta.key(),
                    s.meta.client,
                    s.meta.name,
                    s.meta.size as i64,
                    s.meta.mtime,
                    blake3::Hash::from(s.meta.hash).to_hex().as_str(),
                    wanted.to_str().unwrap_or_default(),
                    staged_as,
                    worker,
                    epoch as i64,
                    committed_at
                ])
                .map_err(|e| self.cat(e))?;
            inserted.push((changed == 1).then(|| (tx.last_insert_rowid(), wanted)));
        }
        Ok(inserted)
    }

    /// Step (3): moves each newly committed file into place and drops the staged copies of
    /// keys committed before. Returns the outcomes and the rows whose file had to take
    /// another name than the one recorded.
    fn place_batch(
        &self,
        batch: &[Staged],
        inserted: Vec<Option<NewRow>>,
    ) -> Result<(Vec<Outcome>, Vec<Renamed>), StoreError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut moved = Vec::new();
        for (s, ins) in batch.iter().zip(inserted) {
            match ins {
                Some((id, wanted)) => {
                    let final_path = self.place(&s.path, &wanted)?;
                    if final_path != self.root.join(&wanted) {
                        moved.push((id, self.relative(&final_path)?));
                    }
                    outcomes.push(Outcome::Committed { path: final_path });
                }
                None => {
                    let _ = std::fs::remove_file(&s.path);
                    outcomes.push(Outcome::AlreadyPresent);
                }
            }
        }
        Ok((outcomes, moved))
    }

    /// Step (4), once the moves are durable: records the names files took and forgets the
    /// staging names, so recovery has nothing left to finish.
    fn clear_staging_names(&self, moved: &[Renamed]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.cat(e))?;
        for (id, rel) in moved {
            tx.execute("UPDATE files SET path = ?2 WHERE id = ?1", params![id, rel])
                .map_err(|e| self.cat(e))?;
        }
        tx.execute(
            "UPDATE files SET staged_as = NULL WHERE staged_as IS NOT NULL",
            [],
        )
        .map_err(|e| self.cat(e))?;
        tx.commit().map_err(|e| self.cat(e))
    }

    fn relative(&self, path: &Path) -> Result<String, StoreError> {
        path.strip_prefix(&self.root)
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)
            .ok_or_else(|| StoreError::NotStaged {
                path: path.to_owned(),
            })
    }

    /// Moves `staged` to `wanted` (relative to the root) or, if taken, to the next distinct
    /// name beside it, never replacing a file. Returns the final absolute path.
    fn place(&self, staged: &Path, wanted: &Path) -> Result<PathBuf, StoreError> {
        let wanted = self.root.join(wanted);
        let dir = wanted.parent().ok_or_else(|| StoreError::NotStaged {
            path: wanted.clone(),
        })?;
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let file_name = wanted
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::NotStaged {
                path: wanted.clone(),
            })?
            .to_owned();
        for n in 0u32.. {
            let candidate = dir.join(numbered(&file_name, n));
            match move_no_replace(staged, &candidate) {
                Ok(()) => return Ok(candidate),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Recovery may meet its own earlier link: same inode means done already.
                    if same_file(staged, &candidate) {
                        std::fs::remove_file(staged).map_err(|e| StoreError::io(staged, e))?;
                        return Ok(candidate);
                    }
                }
                Err(e) => return Err(StoreError::io(&candidate, e)),
            }
        }
        Err(StoreError::NotStaged { path: wanted })
    }
}

/// Moves `from` to `to` unless `to` exists (`AlreadyExists` then). One `renameat2` with
/// `RENAME_NOREPLACE` where the filesystem has it; elsewhere a hard link and an unlink (a crash
/// between the two leaves both names on one inode, which [`LocalStore::place`] recognises).
fn move_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `name` with `~n` inserted before its extension (n > 0).
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}~{n}.{ext}"),
        _ => format!("{name}~{n}"),
    }
}

/// A safe local file name for opaque remote bytes (hazard 8): `[A-Za-z0-9._-]` kept, every
/// other byte `%XX`; never empty, never starting with '.', at most 200 bytes.
pub(crate) fn local_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    if out.len() > MAX_LOCAL_NAME {
        let tag = &blake3::hash(name).to_hex()[..16];
        out.truncate(180);
        out.push('~');
        out.push_str(tag);
    }
    out
}

/// Per client, what a batch's newly inserted files add to the roll-up counters: files, bytes,
/// parse errors of those files, and the samples written for them.
fn rollup_counts(
    batch: &[Staged],
    samples: &[Option<FileSamples>],
    inserted: &[bool],
    written: &BTreeMap<String, u64>,
) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    for (i, s) in batch.iter().enumerate() {
        if !inserted.get(i).copied().unwrap_or(false) {
            continue;
        }
        let c = out.entry(s.meta.client.clone()).or_default();
        c.files += 1;
        c.bytes += s.meta.size;
        c.parse_errors += samples
            .get(i)
            .and_then(Option::as_ref)
            .map_or(0, |f| f.parse_errors);
    }
    for (client, n) in written {
        out.entry(client.clone()).or_default().samples += n;
    }
    out
}

/// UTC date `YYYY-MM-DD` of a Unix time in milliseconds.
pub(crate) fn utc_date(unix_ms: i64) -> String {
    let (year, month, day) = crate::clock::civil_from_days(unix_ms.div_euclid(86_400_000));
    format!("{year:04}-{month:02}-{day:02}")
}

/// The path a file should get, relative to the store root, checked to stay beneath
/// `files/<client>/<date>/`.
fn wanted_path(meta: &FileMeta, date: &str) -> Result<PathBuf, StoreError> {
    let rel = Path::new("files")
        .join(&meta.client)
        .join(date)
        .join(local_name(&meta.name));
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !normal || rel.components().count() != 4 {
        return Err(StoreError::NotStaged { path: rel });
    }
    Ok(rel)
}

impl Sink for LocalStore {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn commit_batch(
        &self,
        worker: &str,
        epoch: u64,
        batch: Vec<Staged>,
        parse: &ParseSettings,
    ) -> Result<Vec<Outcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.check_staged(&batch)?;
        // Parsed before the transaction, so parsing never holds the catalog.
        let samples = shard::parse_batch(&batch, parse);
        // (1) staged data durable.
        self.sync_all()?;
        // (2) the commit point, samples included.
        let inserted = self.insert_rows(worker, epoch, &batch, &samples)?;
        // (3) move into place, never overwriting.
        let (outcomes, moved) = self.place_batch(&batch, inserted)?;
        // (4) entries durable; staging names no longer needed.
        self.sync_all()?;
        self.clear_staging_names(&moved)?;
        Ok(outcomes)
    }

    fn maintain(&self, now_ms: i64) -> Result<Maintained, StoreError> {
        self.shard.maintain(now_ms)
    }

    fn ingest(&self, client: &str) -> Result<crate::stats::tsdb::ClientIngest, StoreError> {
        crate::stats::tsdb::client_ingest(&self.conn(), client).map_err(|e| self.shard.err(e))
    }

    fn pull_error(&self, client: &str) -> Result<(), StoreError> {
        rollup::add_pull_error(&self.conn(), client).map_err(|e| self.cat(e))
    }

    fn contains(&self, key: &str) -> Result<bool, StoreError> {
        self.conn()
            .query_row("SELECT 1 FROM files WHERE file_key = ?1", [key], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.cat(e))
    }

    fn totals(&self, client: &str) -> Result<Totals, StoreError> {
        let day_start = crate::clock::unix_ms().div_euclid(86_400_000) * 86_400_000;
        self.conn()
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0),
                        COALESCE(SUM(committed_at_ms >= ?2), 0),
                        COALESCE(SUM(CASE WHEN committed_at_ms >= ?2 THEN size ELSE 0 END), 0),
                        COALESCE(MAX(committed_at_ms), 0)
                 FROM files WHERE client = ?1",
                params![client, day_start],
                |r| {
                    Ok(Totals {
                        files_total: r.get::<_, i64>(0)?.max(0) as u64,
                        bytes_total: r.get::<_, i64>(1)?.max(0) as u64,
                        files_today: r.get::<_, i64>(2)?.max(0) as u64,
                        bytes_today: r.get::<_, i64>(3)?.max(0) as u64,
                        last_commit_unix_ms: r.get::<_, i64>(4)?.max(0),
                    })
                },
            )
            .map_err(|e| self.cat(e))
    }

    fn bytes_stored(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_row("SELECT COALESCE(SUM(size), 0) FROM files", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|b| b.max(0) as u64)
            .map_err(|e| self.cat(e))
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        if let Err(e) = self.conn().execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            warn!(error = %e, "catalog checkpoint on close failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;
    use proptest::prelude::*;

    fn open(dir: &Path) -> Box<dyn Sink> {
        Box::new(LocalStore::open(dir).unwrap())
    }

    #[test]
    fn local_store_passes_the_sink_conformance_suite() {
        conformance::run_all(&open);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(1_795_305_600_000), "2026-11-22");
        assert_eq!(utc_date(1_795_391_999_999), "2026-11-22");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    #[test]
    fn local_names_are_safe_and_distinct() {
        assert_eq!(local_name(b"a-b_c.jsonl"), "a-b_c.jsonl");
        assert_eq!(local_name(b".."), "_..");
        assert_eq!(local_name(b""), "_");
        assert_eq!(local_name(b"a\nb"), "a%0Ab");
        assert_eq!(local_name(b"a/b"), "a%2Fb");
        assert_eq!(local_name(b"%"), "%25");
        assert_eq!(local_name(b"\xff"), "%FF");
        let long = local_name(&[b'x'; 255]);
        assert!(long.len() <= MAX_LOCAL_NAME + 1, "{}", long.len());
        assert_ne!(long, local_name(&[b'x'; 254]));
        assert_eq!(numbered("a.jsonl", 2), "a~2.jsonl");
        assert_eq!(numbered("noext", 1), "noext~1");
        assert_eq!(numbered(".x", 1), ".x~1");
    }

    #[test]
    fn disk_full_is_recognised() {
        let e = StoreError::io(
            Path::new("/s"),
            std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        assert!(matches!(e, StoreError::DiskFull { .. }));
        assert!(e.to_string().contains("full"));
    }

    #[test]
    fn the_original_name_bytes_are_kept_in_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let s = conformance::stage(&store, "c", b"\xff\n", b"x", 1);
        store
            .commit_batch("w", 1, vec![s], &ParseSettings::files_only())
            .unwrap();
        let name: Vec<u8> = store
            .conn()
            .query_row("SELECT name FROM files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, b"\xff\n");
    }

    #[test]
    fn a_crash_after_the_commit_point_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (key, content) = {
            let store = LocalStore::open(dir.path()).unwrap();
            let s = conformance::stage(&store, "c", b"f.jsonl", b"payload", 7);
            let key = s.meta.key();
            // Steps 1-2 only: the row exists with its staging name, the file is still staged.
            let wanted = wanted_path(&s.meta, &utc_date(crate::clock::unix_ms())).unwrap();
            store
                .conn()
                .execute(
                    "INSERT INTO files (file_key, client, name, size, mtime, hash, path, staged_as, worker, epoch, committed_at_ms)
                     VALUES (?1, 'c', ?2, 7, 0, 'h', ?3, 'test-7.part', 'w', 1, ?4)",
                    params![key, b"f.jsonl".to_vec(), wanted.to_str().unwrap(), crate::clock::unix_ms()],
                )
                .unwrap();
            // And a stray staged file that was never committed.
            std::fs::write(store.staging_dir().join("stray.part"), b"junk").unwrap();
            (key, b"payload".to_vec())
        };
        let store = LocalStore::open(dir.path()).unwrap();
        assert!(store.contains(&key).unwrap());
        assert_eq!(std::fs::read_dir(store.staging_dir()).unwrap().count(), 0);
        let rel: String = store
            .conn()
            .query_row("SELECT path FROM files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join(rel)).unwrap(), content);
        let staged: Option<String> = store
            .conn()
            .query_row("SELECT staged_as FROM files", [], |r| r.get(0))
            .unwrap();
        assert!(staged.is_none());
        // Reopening again changes nothing.
        drop(store);
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.totals("c").unwrap().files_total, 1);
    }

    #[test]
    fn totals_split_today_from_earlier_days() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .commit_batch(
                "w",
                1,
                vec![conformance::stage(&store, "c", b"a", b"12345", 1)],
                &ParseSettings::files_only(),
            )
            .unwrap();
        store
            .conn()
            .execute("UPDATE files SET committed_at_ms = 0", [])
            .unwrap();
        store
            .commit_batch(
                "w",
                1,
                vec![conformance::stage(&store, "c", b"b", b"12", 2)],
                &ParseSettings::files_only(),
            )
            .unwrap();
        let t = store.totals("c").unwrap();
        assert_eq!(
            (t.files_total, t.bytes_total, t.files_today, t.bytes_today),
            (2, 7, 1, 2)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Rows = distinct keys, files = rows, every file's content matches its row.
        #[test]
        fn batches_with_repeats_store_each_key_once(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..6, 0u8..3), 1..12), 1..5)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open(dir.path()).unwrap();
            let mut keys = std::collections::BTreeSet::new();
            let mut seq = 0;
            for batch in batches {
                let staged: Vec<Staged> = batch.iter().map(|(name, content)| {
                    seq += 1;
                    let s = conformance::stage(&store, "c", &[b'n', *name], &[*content; 3], seq);
                    keys.insert(s.meta.key());
                    s
                }).collect();
                store.commit_batch("w", 1, staged, &ParseSettings::files_only()).unwrap();
            }
            let rows: Vec<(String, String)> = {
                let conn = store.conn();
                let mut stmt = conn.prepare("SELECT path, hash FROM files").unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
            };
            prop_assert_eq!(rows.len(), keys.len());
            let mut files = 0;
            let mut stack = vec![dir.path().join("files")];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    if e.path().is_dir() { stack.push(e.path()); } else { files += 1; }
                }
            }
            prop_assert_eq!(files, rows.len());
            for (rel, hash) in rows {
                let content = std::fs::read(dir.path().join(rel)).unwrap();
                prop_assert_eq!(blake3::hash(&content).to_hex().to_string(), hash);
            }
        }
    }
}

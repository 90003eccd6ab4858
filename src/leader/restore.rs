//! Restoring the leader's state from a backup, and telling a restored state from the one the
//! state dir last ran with.
//!
//! A backup is older than the cluster: workers may hold clients under epochs it never saw.
//! Such a state must not be trusted at start (C1, C2): the leader then confirms nothing from
//! it until every lease the previous leader granted has run out, and issues epochs above
//! anything seen. It knows the state is restored when
//! - `sqd --mode leader restore --from BACKUP` put it there (a `restored` mark in the state,
//!   cleared once the reconcile after the next start ended), or
//! - `leader.sqlite` was replaced by hand: each start writes a fresh instance mark into both the
//!   state and `<state-dir>/leader.instance`; a state whose mark differs from the directory's
//!   is a copy from another time.
//!
//! What neither can see (the whole state dir replaced, e.g. on a new machine, without the
//! restore command) is still caught when the first worker reports an epoch newer than the
//! state's; until then that worker's peers may overlap it — so restore with the command.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// The file beside the state that names the state instance the directory last ran with.
const INSTANCE_FILE: &str = "leader.instance";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "cannot read the backup {path}: {error}; pass the file written by `sqlite3 leader.sqlite '.backup FILE'`"
    )]
    Backup {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("the backup {path} is not a leader state ({detail})")]
    NotAState { path: PathBuf, detail: String },
    #[error(
        "the backup {path} belongs to cluster {found:?}, not {wanted:?}; pass --cluster {found} or restore another backup"
    )]
    Cluster {
        path: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("cannot write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot update the restored state {path}: {error}")]
    Write {
        path: PathBuf,
        error: rusqlite::Error,
    },
}

/// What a restore put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub clients: u64,
    /// The backup's epoch counter.
    pub backup_epoch: u64,
    /// The counter the restored state starts from: the larger of the backup's and the replaced
    /// state's (the leader adds a margin when it starts).
    pub next_epoch: u64,
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// The epoch counter of the state at `path`, if it is there and readable.
fn counter_of(path: &Path) -> Option<u64> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    meta(&conn, "next_epoch").ok()??.parse().ok()
}

/// Puts `backup` in place as the state of `dir` (the caller holds the leader's lock), marked
/// as restored, with the epoch counter no lower than the state it replaces.
pub fn restore(dir: &Path, cluster: &str, backup: &Path) -> Result<Restored, RestoreError> {
    let bad = |error| RestoreError::Backup {
        path: backup.to_owned(),
        error,
    };
    let src = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(bad)?;
    let check: String = src
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(bad)?;
    if check != "ok" {
        return Err(RestoreError::NotAState {
            path: backup.to_owned(),
            detail: format!("integrity check: {check}"),
        });
    }
    let not_state = |detail: &str| RestoreError::NotAState {
        path: backup.to_owned(),
        detail: detail.to_owned(),
    };
    let found = meta(&src, "cluster")
        .map_err(|_| not_state("no meta table"))?
        .ok_or_else(|| not_state("no cluster id"))?;
    if found != cluster {
        return Err(RestoreError::Cluster {
            path: backup.to_owned(),
            found,
            wanted: cluster.to_owned(),
        });
    }
    let backup_epoch: u64 = meta(&src, "next_epoch")
        .map_err(bad)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let clients: i64 = src
        .query_row("SELECT count(*) FROM clients", [], |r| r.get(0))
        .map_err(|_| not_state("no clients table"))?;

    let target = dir.join("leader.sqlite");
    let next_epoch = backup_epoch.max(counter_of(&target).unwrap_or(0));
    let tmp = dir.join("leader.sqlite.restoring");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| RestoreError::Io { path, error }
    };
    remove_if_there(&tmp).map_err(io(&tmp))?;
    // A consistent single-file copy, whatever journal the backup carries.
    src.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
        .map_err(bad)?;
    drop(src);
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    // The replaced state's WAL must never be applied to the restored file.
    for suffix in ["-wal", "-shm"] {
        let p = dir.join(format!("leader.sqlite{suffix}"));
        remove_if_there(&p).map_err(io(&p))?;
    }
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    sync_dir(dir).map_err(io(dir))?;
    mark_restored(&target, next_epoch)?;
    Ok(Restored {
        clients: clients.max(0) as u64,
        backup_epoch,
        next_epoch,
    })
}

fn mark_restored(target: &Path, next_epoch: u64) -> Result<(), RestoreError> {
    let write = |error| RestoreError::Write {
        path: target.to_owned(),
        error,
    };
    let conn = Connection::open(target).map_err(write)?;
    conn.execute_batch("PRAGMA synchronous=FULL;")
        .map_err(write)?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('next_epoch', ?1), ('restored', ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![next_epoch.to_string(), crate::clock::unix_ms().to_string()],
    )
    .map_err(write)?;
    Ok(())
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Why a state just opened is not to be trusted at start, or `None`. Also gives the state and
/// its directory a fresh instance mark, so a later swap of the file shows.
pub(crate) fn staleness(conn: &Connection, dir: &Path) -> Result<Option<String>, StaleCheckError> {
    let restored = meta(conn, "restored")?;
    let file = dir.join(INSTANCE_FILE);
    let expected = match std::fs::read_to_string(&file) {
        Ok(s) => Some(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(StaleCheckError::Io { path: file, source }),
    };
    let stored = meta(conn, "instance")?;
    let reason = if restored.is_some() {
        Some("it was restored from a backup".to_owned())
    } else {
        match (&expected, &stored) {
            (Some(e), Some(s)) if e == s => None,
            (Some(_), _) => Some(format!(
                "leader.sqlite is not the state {} last ran with (it was replaced by a copy)",
                dir.display()
            )),
            // First start with this mark (new state dir, or an older sqd): nothing to compare.
            (None, _) => None,
        }
    };
    if reason.is_some() && restored.is_none() {
        // Kept until the reconcile ends, so a crash before then does not trust the copy.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('restored', ?1)",
            [crate::clock::unix_ms().to_string()],
        )?;
    }
    let fresh =
        blake3::hash(format!("{}-{}", crate::clock::unix_ms(), std::process::id()).as_bytes())
            .to_hex()[..16]
            .to_owned();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('instance', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [&fresh],
    )?;
    write_synced(&file, &fresh).map_err(|source| StaleCheckError::Io { path: file, source })?;
    Ok(reason)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StaleCheckError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("instance.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Clears the `restored` mark once the reconcile after a restore ended.
pub(crate) fn clear_restored(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM meta WHERE key = 'restored'", [])?;
    Ok(())
}

//! The leader's durable registry in SQLite under `--state-dir`: clients with their settings,
//! owners and epochs, known workers (with their drain flag) and the epoch counter (C5).
//!
//! It also keeps the audit log of assignment changes (`sqdctl explain`), bounded to the most
//! recent [`AUDIT_KEEP`] entries.
//!
//! Every change is one transaction with `synchronous=FULL`, so a change acknowledged to anyone
//! survives `kill -9` and power loss.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::AuditEntry;
use super::reason::Recorded;
use super::registry::{ClientSpec, Durable};
use crate::spec::IngestSpec;

const SCHEMA_VERSION: i64 = 1;

/// Audit entries kept; older ones are dropped as new ones arrive.
pub(crate) const AUDIT_KEEP: i64 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "leader state {path}: {source}; if the file is damaged, restore the state dir from a backup or move it away to start empty"
    )]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "leader state {path} failed its integrity check ({detail}); restore the state dir from a backup or move it away to start empty"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "state dir {dir} belongs to cluster {stored:?}, not {wanted:?}; pass --cluster {stored} or use another --state-dir"
    )]
    ClusterMismatch {
        dir: PathBuf,
        stored: String,
        wanted: String,
    },
    #[error(
        "leader state {path} has schema version {found}, newer than this sqd understands ({SCHEMA_VERSION}); run a newer sqd"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("leader state {path}: cannot check whether it was restored: {detail}")]
    Instance { path: PathBuf, detail: String },
}

/// What the state held at start-up.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) next_epoch: u64,
    pub(crate) clients: Vec<(ClientSpec, Option<String>, u64)>,
    pub(crate) workers: Vec<PersistedWorker>,
    /// Why the state must not be trusted at start (it is older than the cluster), if so.
    pub(crate) stale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PersistedWorker {
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) version: String,
    pub(crate) draining: bool,
}

pub(crate) struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    pub(crate) fn open(dir: &Path, cluster: &str) -> Result<(State, Loaded), StateError> {
        let path = dir.join("leader.sqlite");
        let wrap = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(wrap)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(wrap)?;
        if check != "ok" {
            return Err(StateError::Corrupt {
                path: path.clone(),
                detail: check,
            });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS clients (
                 name TEXT PRIMARY KEY,
                 ssh TEXT NOT NULL,
                 path TEXT NOT NULL,
                 key_file TEXT NOT NULL,
                 known_hosts TEXT NOT NULL,
                 pattern TEXT NOT NULL,
                 worker TEXT,
                 epoch INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS workers (
                 id TEXT PRIMARY KEY,
                 addr TEXT NOT NULL,
                 version TEXT NOT NULL,
                 draining INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS audit (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 at_ms INTEGER NOT NULL,
                 client TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 from_worker TEXT,
                 to_worker TEXT,
                 epoch INTEGER NOT NULL,
                 reason TEXT NOT NULL,
                 detail TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS audit_by_client ON audit (client, seq);",
        )
        .map_err(wrap)?;
        add_ingest_columns(&conn).map_err(wrap)?;
        add_alert_tables(&conn).map_err(wrap)?;
        let mut state = State { conn, path };
        let loaded = state.load(dir, cluster)?;
        Ok((state, loaded))
    }

    fn wrap(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.wrap(e))
    }

    fn load(&mut self, dir: &Path, cluster: &str) -> Result<Loaded, StateError> {
        self.check_identity(dir, cluster)?;
        let stale =
            super::restore::staleness(&self.conn, dir).map_err(|e| StateError::Instance {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
        let next_epoch = self
            .meta("next_epoch")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let clients = self.load_clients()?;
        let workers = self.load_workers()?;
        Ok(Loaded {
            next_epoch,
            clients,
            workers,
            stale,
        })
    }

    /// Refuses a state of a newer schema or of another cluster; stamps a new one.
    fn check_identity(&mut self, dir: &Path, cluster: &str) -> Result<(), StateError> {
        if let Some(found) = self.meta("schema")? {
            let found: i64 = found.parse().unwrap_or(i64::MAX);
            if found > SCHEMA_VERSION {
                return Err(StateError::TooNew {
                    path: self.path.clone(),
                    found,
                });
            }
        }
        match self.meta("cluster")? {
            Some(stored) if stored != cluster => {
                return Err(StateError::ClusterMismatch {
                    dir: dir.to_owned(),
                    stored,
                    wanted: cluster.to_owned(),
                });
            }
            Some(_) => {}
            None => {
                self.conn
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('cluster', ?1), ('schema', ?2)",
                        params![cluster, SCHEMA_VERSION.to_string()],
                    )
                    .map_err(|e| self.wrap(e))?;
            }
        }
        Ok(())
    }

    fn load_clients(&self) -> Result<Vec<(ClientSpec, Option<String>, u64)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, ssh, path, key_file, known_hosts, pattern, worker, epoch,
                        format, time_field, label_fields, precision
                 FROM clients ORDER BY name",
            )
            .map_err(|e| self.wrap(e))?;
        let clients = stmt
            .query_map([], |r| {
                Ok((
                    ClientSpec {
                        name: r.get(0)?,
                        ssh: r.get(1)?,
                        path: r.get(2)?,
                        key_file: r.get(3)?,
                        known_hosts: r.get(4)?,
                        pattern: r.get(5)?,
                        ingest: Box::new(IngestSpec {
                            format: r.get(8)?,
                            time_field: r.get(9)?,
                            label_fields: split_fields(&r.get::<_, String>(10)?),
                            precision: r.get(11)?,
                        }),
                    },
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?.max(0) as u64,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.wrap(e))?;
        Ok(clients)
    }

    fn load_workers(&self) -> Result<Vec<PersistedWorker>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, addr, version, draining FROM workers ORDER BY id")
            .map_err(|e| self.wrap(e))?;
        let workers = stmt
            .query_map([], |r| {
                Ok(PersistedWorker {
                    id: r.get(0)?,
                    addr: r.get(1)?,
                    version: r.get(2)?,
                    draining: r.get::<_, i64>(3)? != 0,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.wrap(e))?;
        Ok(workers)
    }

    #[cfg(test)]
    pub(crate) fn insert_client(&mut self, spec: &ClientSpec) -> Result<(), StateError> {
        self.apply(&[Durable::NewClient(Box::new(spec.clone()))])
    }

    pub(crate) fn delete_client(&mut self, name: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM clients WHERE name = ?1", [name])
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Applies a batch of changes in one transaction.
    pub(crate) fn apply(&mut self, changes: &[Durable]) -> Result<(), StateError> {
        self.apply_with_audit(changes, &[])
    }

    /// The most recent `limit` audit entries of `client`, oldest first.
    pub(crate) fn audit_of(
        &self,
        client: &str,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at_ms, client, kind, from_worker, to_worker, epoch, reason, detail
                 FROM audit WHERE client = ?1 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![client, limit as i64], |r| {
                Ok(AuditEntry {
                    at_unix_ms: r.get(0)?,
                    client: r.get(1)?,
                    kind: Recorded::read(r.get(2)?),
                    from: r.get(3)?,
                    to: r.get(4)?,
                    epoch: r.get::<_, i64>(5)? as u64,
                    reason: Recorded::read(r.get(6)?),
                    detail: r.get(7)?,
                })
            })
            .map_err(|e| self.wrap(e))?;
        let mut entries = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.wrap(e))?;
        entries.reverse();
        Ok(entries)
    }

    /// Applies a batch of changes and their audit entries in one transaction.
    pub(crate) fn apply_with_audit(
        &mut self,
        changes: &[Durable],
        audit: &[AuditEntry],
    ) -> Result<(), StateError> {
        if changes.is_empty() && audit.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let wrap = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        for change in changes {
            apply_change(&tx, change).map_err(wrap)?;
        }
        for e in audit {
            tx.execute(
                "INSERT INTO audit (at_ms, client, kind, from_worker, to_worker, epoch, reason, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    e.at_unix_ms,
                    e.client,
                    e.kind.as_str(),
                    e.from,
                    e.to,
                    e.epoch as i64,
                    e.reason.as_str(),
                    e.detail
                ],
            )
            .map_err(wrap)?;
        }
        if !audit.is_empty() {
            tx.execute(
                "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?1",
                [AUDIT_KEEP],
            )
            .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)
    }
}

/// The parse-setting columns, added to a state written before they existed (its clients get
/// the defaults: empty text). No schema bump: an older sqd still opens the state and ignores
/// them.
fn add_ingest_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('clients')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for col in ["format", "time_field", "label_fields", "precision"] {
        if !have.iter().any(|c| c == col) {
            conn.execute_batch(&format!(
                "ALTER TABLE clients ADD COLUMN {col} TEXT NOT NULL DEFAULT ''"
            ))?;
        }
    }
    Ok(())
}

/// The alert engine's tables (`leader::alerting::store` reads and writes them on its own
/// connection): each rule's state as JSON, and the notification log by id. The id counter and
/// the Alertmanager outbox live in `meta` (`alerts_next_id`, `alerts_outbox`).
fn add_alert_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS alert_rules (name TEXT PRIMARY KEY, state TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS alert_log (
             id INTEGER PRIMARY KEY,
             rule TEXT NOT NULL,
             state TEXT NOT NULL,
             json TEXT NOT NULL
         );",
    )
}

/// Label fields are stored comma-joined (a field name never holds ',').
fn split_fields(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

fn insert_client(tx: &rusqlite::Transaction<'_>, spec: &ClientSpec) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO clients (name, ssh, path, key_file, known_hosts, pattern,
                              format, time_field, label_fields, precision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        spec.name,
        spec.ssh,
        spec.path,
        spec.key_file,
        spec.known_hosts,
        spec.pattern,
        spec.ingest.format,
        spec.ingest.time_field,
        spec.ingest.label_fields.join(","),
        spec.ingest.precision
    ])?;
    Ok(())
}

/// One durable change inside the caller's transaction.
fn apply_change(tx: &rusqlite::Transaction<'_>, change: &Durable) -> rusqlite::Result<()> {
    match change {
        Durable::NewClient(spec) => insert_client(tx, spec)?,
        Durable::Assignment {
            client,
            worker,
            epoch,
        } => {
            tx.execute(
                "UPDATE clients SET worker = ?2, epoch = ?3 WHERE name = ?1",
                params![client, worker, *epoch as i64],
            )?;
        }
        Durable::Worker {
            id,
            addr,
            version,
            draining,
        } => {
            tx.execute(
                "INSERT INTO workers (id, addr, version, draining) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET addr = ?2, version = ?3, draining = ?4",
                params![id, addr, version, *draining as i64],
            )?;
        }
        Durable::NextEpoch(next) => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('next_epoch', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = ?1",
                [next.to_string()],
            )?;
        }
        Durable::RestoreDone => super::restore::clear_restored(tx)?,
        Durable::ForgetWorker(id) => {
            tx.execute("DELETE FROM workers WHERE id = ?1", [id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::reason::{AssignmentReason, AuditKind};

    fn spec(name: &str) -> ClientSpec {
        ClientSpec {
            name: name.into(),
            ssh: "u@h:22".into(),
            path: "/d".into(),
            key_file: String::new(),
            known_hosts: "/k".into(),
            pattern: "*.jsonl".into(),
            ingest: Box::default(),
        }
    }

    #[test]
    fn changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut st, loaded) = State::open(dir.path(), "c1").unwrap();
            assert_eq!(loaded.next_epoch, 1);
            st.insert_client(&spec("a")).unwrap();
            st.insert_client(&spec("b")).unwrap();
            st.apply(&[
                Durable::Worker {
                    id: "w".into(),
                    addr: "x".into(),
                    version: "0.1.0".into(),
                    draining: true,
                },
                Durable::Assignment {
                    client: "a".into(),
                    worker: Some("w".into()),
                    epoch: 7,
                },
                Durable::NextEpoch(8),
            ])
            .unwrap();
            st.delete_client("b").unwrap();
        }
        let (_, loaded) = State::open(dir.path(), "c1").unwrap();
        assert_eq!(loaded.next_epoch, 8);
        assert_eq!(loaded.clients, vec![(spec("a"), Some("w".into()), 7)]);
        assert!(loaded.workers[0].draining);
    }

    #[test]
    fn a_state_without_parse_settings_opens_and_keeps_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The clients table as written before parse settings existed.
            let conn = Connection::open(dir.path().join("leader.sqlite")).unwrap();
            conn.execute_batch(
                "CREATE TABLE clients (name TEXT PRIMARY KEY, ssh TEXT NOT NULL, path TEXT NOT NULL,
                     key_file TEXT NOT NULL, known_hosts TEXT NOT NULL, pattern TEXT NOT NULL,
                     worker TEXT, epoch INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO clients (name, ssh, path, key_file, known_hosts, pattern, epoch)
                     VALUES ('old', 'u@h:22', '/d', '', '/k', '*.jsonl', 3);",
            )
            .unwrap();
        }
        let mut custom = spec("new");
        *custom.ingest = IngestSpec {
            format: "csv".into(),
            time_field: "t".into(),
            label_fields: vec!["host".into(), "dc".into()],
            precision: "ms".into(),
        };
        {
            let (mut st, loaded) = State::open(dir.path(), "c1").unwrap();
            assert_eq!(loaded.clients, vec![(spec("old"), None, 3)]);
            st.insert_client(&custom).unwrap();
        }
        let (_, loaded) = State::open(dir.path(), "c1").unwrap();
        assert_eq!(loaded.clients[0].0, custom);
    }

    #[test]
    fn audit_entries_survive_reopen_in_order_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |client: &str, epoch: u64| AuditEntry {
            at_unix_ms: 1_700_000_000_000 + epoch as i64,
            client: client.into(),
            kind: AuditKind::Moved.into(),
            from: Some("w1".into()),
            to: Some("w2".into()),
            epoch,
            reason: AssignmentReason::Failover.into(),
            detail: "w1 went silent".into(),
        };
        {
            let (mut st, _) = State::open(dir.path(), "c1").unwrap();
            st.apply_with_audit(&[], &[entry("a", 1), entry("b", 2)])
                .unwrap();
            st.apply_with_audit(&[], &[entry("a", 3)]).unwrap();
        }
        let (st, _) = State::open(dir.path(), "c1").unwrap();
        assert_eq!(
            st.audit_of("a", 10).unwrap(),
            vec![entry("a", 1), entry("a", 3)]
        );
        assert_eq!(st.audit_of("a", 1).unwrap(), vec![entry("a", 3)]);
        assert!(st.audit_of("zzz", 10).unwrap().is_empty());
    }

    #[test]
    fn audit_codes_this_version_does_not_know_read_back_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let (st, _) = State::open(dir.path(), "c1").unwrap();
        st.conn
            .execute(
                "INSERT INTO audit (at_ms, client, kind, from_worker, to_worker, epoch, reason, detail)
                 VALUES (1, 'a', 'teleported', NULL, 'w', 3, 'gremlins', 'older words')",
                [],
            )
            .unwrap();
        let entries = st.audit_of("a", 10).unwrap();
        assert_eq!(entries[0].kind, Recorded::Unknown("teleported".into()));
        assert_eq!(entries[0].reason.as_str(), "gremlins");
    }

    #[test]
    fn another_cluster_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(State::open(dir.path(), "c1").unwrap());
        let err = State::open(dir.path(), "c2").err().unwrap();
        assert!(err.to_string().contains("--cluster c1"), "{err}");
    }

    #[test]
    fn duplicate_client_insert_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, _) = State::open(dir.path(), "c").unwrap();
        st.insert_client(&spec("a")).unwrap();
        assert!(st.insert_client(&spec("a")).is_err());
    }
}

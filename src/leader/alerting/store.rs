//! The alert engine's durable state in the leader's SQLite file (tables made by
//! `leader::state`), on a connection of its own: one transaction per batch of rounds holds the
//! rules' states, the id counter, the Alertmanager outbox and the round's notifications, so a
//! `kill -9` leaves either all of a round or none of it (M5).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::alerts::Notification;
use crate::alerts::alertmanager::Outbox;
use crate::alerts::state::{RuleSnapshot, Snapshot};

/// Notifications kept in the log; older ones are dropped (the jsonl file keeps its own).
pub(crate) const LOG_KEEP: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error(
        "alert state in {path}: {source}; if the file is damaged, restore the state dir from a backup"
    )]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("alert state in {path}: stored {what} is unreadable: {source}")]
    Json {
        path: PathBuf,
        what: String,
        source: serde_json::Error,
    },
}

pub(crate) struct AlertStore {
    conn: Connection,
    path: PathBuf,
}

/// What one batch of rounds writes.
pub(crate) struct Batch<'a> {
    pub(crate) rules: &'a [RuleSnapshot],
    pub(crate) gone: &'a [String],
    pub(crate) next_id: u64,
    pub(crate) outbox: &'a Outbox,
    pub(crate) notifications: &'a [Notification],
}

impl AlertStore {
    /// Opens the leader's state file (already migrated by `State::open`).
    pub(crate) fn open(dir: &Path) -> Result<Self, AlertStoreError> {
        let path = dir.join("leader.sqlite");
        let conn = Connection::open(&path).map_err(|source| AlertStoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = AlertStore { conn, path };
        store
            .conn
            .execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
            .map_err(|e| store.sql(e))?;
        Ok(store)
    }

    fn sql(&self, source: rusqlite::Error) -> AlertStoreError {
        AlertStoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn json(&self, what: &str, source: serde_json::Error) -> AlertStoreError {
        AlertStoreError::Json {
            path: self.path.clone(),
            what: what.to_owned(),
            source,
        }
    }

    /// The evaluator's snapshot and the outbox as the last committed batch left them.
    pub(crate) fn load(&self) -> Result<(Snapshot, Outbox), AlertStoreError> {
        let meta = |key: &str| -> Result<Option<String>, AlertStoreError> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(|e| self.sql(e))
        };
        // The counter never goes below the log: ids are never reused.
        let logged: i64 = (self.conn)
            .query_row("SELECT COALESCE(MAX(id), 0) FROM alert_log", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.sql(e))?;
        let stored: u64 = meta("alerts_next_id")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let next_id = stored.max(logged as u64 + 1);
        let outbox = match meta("alerts_outbox")? {
            Some(text) => serde_json::from_str(&text).map_err(|e| self.json("outbox", e))?,
            None => Outbox::default(),
        };
        let mut stmt = (self.conn)
            .prepare("SELECT name, state FROM alert_rules ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        let mut rules = Vec::with_capacity(rows.len());
        for (name, text) in rows {
            rules.push(serde_json::from_str(&text).map_err(|e| self.json(&name, e))?);
        }
        Ok((Snapshot { next_id, rules }, outbox))
    }

    /// Writes one batch of rounds in one transaction.
    pub(crate) fn save(&mut self, batch: &Batch<'_>) -> Result<(), AlertStoreError> {
        let outbox = serde_json::to_string(batch.outbox).map_err(|e| self.json("outbox", e))?;
        let mut rules = Vec::with_capacity(batch.rules.len());
        for r in batch.rules {
            rules.push((
                &r.name,
                serde_json::to_string(r).map_err(|e| self.json(&r.name, e))?,
            ));
        }
        let mut notes = Vec::with_capacity(batch.notifications.len());
        for n in batch.notifications {
            let json = serde_json::to_string(n).map_err(|e| self.json("notification", e))?;
            notes.push((n, json));
        }
        let path = self.path.clone();
        let wrap = |source| AlertStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        for (name, json) in &rules {
            tx.execute(
                "INSERT INTO alert_rules (name, state) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state",
                params![name, json],
            )
            .map_err(wrap)?;
        }
        for name in batch.gone {
            tx.execute("DELETE FROM alert_rules WHERE name = ?1", [name])
                .map_err(wrap)?;
        }
        for (n, json) in &notes {
            tx.execute(
                "INSERT INTO alert_log (id, rule, state, json) VALUES (?1, ?2, ?3, ?4)",
                params![n.id as i64, n.rule, n.state.as_str(), json],
            )
            .map_err(wrap)?;
        }
        if let Some(last) = batch.notifications.last() {
            tx.execute(
                "DELETE FROM alert_log WHERE id <= ?1",
                [last.id as i64 - LOG_KEEP],
            )
            .map_err(wrap)?;
        }
        let set = "INSERT INTO meta (key, value) VALUES (?1, ?2)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        tx.execute(set, params!["alerts_next_id", batch.next_id.to_string()])
            .map_err(wrap)?;
        tx.execute(set, params!["alerts_outbox", outbox])
            .map_err(wrap)?;
        tx.commit().map_err(wrap)
    }

    /// Logged notifications (their JSON line) with `id > after`, oldest first, at most
    /// `limit`.
    pub(crate) fn after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, AlertStoreError> {
        let mut stmt = (self.conn)
            .prepare_cached("SELECT id, json FROM alert_log WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(|e| self.sql(e))?;
        stmt.query_map(params![after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.sql(e))
    }

    /// The newest `limit` notifications, oldest first.
    pub(crate) fn newest(&self, limit: usize) -> Result<Vec<(u64, String)>, AlertStoreError> {
        let mut stmt = (self.conn)
            .prepare_cached("SELECT id, json FROM alert_log ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.sql(e))?;
        let mut rows: Vec<(u64, String)> = stmt
            .query_map([limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        rows.reverse();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertState;
    use crate::alerts::state::{Phase, SeriesState};

    fn note(id: u64) -> Notification {
        Notification {
            id,
            rule: "r".to_owned(),
            state: AlertState::Firing,
            labels: Default::default(),
            value: Some(95.0),
            threshold: 90.0,
            severity: "warning".to_owned(),
            ts_unix_ms: 1_000,
            since_unix_ms: 1_000,
            annotation: String::new(),
        }
    }

    #[test]
    fn a_batch_comes_back_whole_and_ids_never_go_back() {
        let dir = tempfile::tempdir().expect("dir");
        let _state = crate::leader::state::State::open(dir.path(), "test").expect("state");
        let mut store = AlertStore::open(dir.path()).expect("open");
        let (empty, _) = store.load().expect("load empty");
        assert_eq!(empty, Snapshot::default());
        let rule = RuleSnapshot {
            name: "r".to_owned(),
            last_eval_ms: Some(1_000),
            unknown: None,
            series: vec![SeriesState {
                labels: vec![("host".to_owned(), "a".to_owned())],
                phase: Phase::Firing {
                    since_ms: 1_000,
                    last_true_ms: 1_000,
                },
                value: Some(95.0),
            }],
        };
        let mut outbox = Outbox::default();
        outbox.observe(&note(1));
        let batch = Batch {
            rules: std::slice::from_ref(&rule),
            gone: &[],
            next_id: 2,
            outbox: &outbox,
            notifications: &[note(1)],
        };
        store.save(&batch).expect("save");
        let again = AlertStore::open(dir.path()).expect("reopen");
        let (snap, stored) = again.load().expect("load");
        assert_eq!(snap.rules, vec![rule]);
        assert_eq!(snap.next_id, 2);
        assert_eq!(stored, outbox);
        assert_eq!(again.after(0, 10).expect("log").len(), 1);
        // A counter stored behind its log (never written so) still resumes after the log.
        again
            .conn
            .execute(
                "UPDATE meta SET value = '1' WHERE key = 'alerts_next_id'",
                [],
            )
            .expect("rewind");
        assert_eq!(again.load().expect("load").0.next_id, 2);
    }
}

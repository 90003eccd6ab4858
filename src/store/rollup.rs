//! The worker's roll-up counters, durable in the store's catalog: per client files, bytes,
//! samples, parse errors and pull errors since the leader last collected them.
//!
//! Two tables: `rollup_open` accumulates (commits add to it in the transaction that inserts
//! their rows, so a file counts exactly when it is committed; pull errors in their own small
//! transaction), and `rollup_answered` holds what was answered to a collection and is not yet
//! acknowledged. [`collect`] is one transaction: forget what the leader acknowledged, file the
//! open counters under the new collection id, answer everything still unacknowledged. An
//! answer that is lost is therefore sent again, and a collection is forgotten only once the
//! leader says it is in its log (two-phase; docs/ARCHITECTURE.md "Roll-ups").

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params};

/// The tables, created by the store on open and by the roll-up connection (the shard service
/// may be asked before the store is open).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollup_open (
    client TEXT PRIMARY KEY,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    parse_errors INTEGER NOT NULL DEFAULT 0,
    pull_errors INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rollup_answered (
    collection INTEGER NOT NULL,
    client TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    parse_errors INTEGER NOT NULL,
    pull_errors INTEGER NOT NULL,
    PRIMARY KEY (collection, client)
);";

/// One client's counters over some span; adding is the only operation (they merge in any
/// order and grouping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Counters {
    pub files: u64,
    pub bytes: u64,
    pub samples: u64,
    pub parse_errors: u64,
    pub pull_errors: u64,
}

impl Counters {
    pub(crate) fn add(&mut self, other: &Counters) {
        self.files = self.files.saturating_add(other.files);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.samples = self.samples.saturating_add(other.samples);
        self.parse_errors = self.parse_errors.saturating_add(other.parse_errors);
        self.pull_errors = self.pull_errors.saturating_add(other.pull_errors);
    }

    pub(crate) fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// One client's counters filed under one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub collection: u64,
    pub client: String,
    pub counters: Counters,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RollupError {
    #[error("roll-up counters in {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "collection {collection} is not after the acknowledged {ack_through}: the leader's collection ids must grow"
    )]
    NotAfterAck { collection: u64, ack_through: u64 },
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Adds per client counters to the open ones, on `tx` (a commit's transaction, or a pull
/// error's own).
pub(crate) fn add(tx: &Connection, by_client: &BTreeMap<String, Counters>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO rollup_open (client, files, bytes, samples, parse_errors, pull_errors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(client) DO UPDATE SET files = files + ?2, bytes = bytes + ?3,
             samples = samples + ?4, parse_errors = parse_errors + ?5,
             pull_errors = pull_errors + ?6",
    )?;
    for (client, c) in by_client.iter().filter(|(_, c)| !c.is_zero()) {
        stmt.execute(params![
            client,
            int(c.files),
            int(c.bytes),
            int(c.samples),
            int(c.parse_errors),
            int(c.pull_errors)
        ])?;
    }
    Ok(())
}

/// Counts one failed pull of `client`, in its own transaction.
pub(crate) fn add_pull_error(conn: &Connection, client: &str) -> rusqlite::Result<()> {
    let one = Counters {
        pull_errors: 1,
        ..Counters::default()
    };
    add(conn, &BTreeMap::from([(client.to_owned(), one)]))
}

/// The worker's side of one collection, in one transaction: forgets collections up to
/// `ack_through`, files the open counters under `collection`, and returns every row not yet
/// acknowledged (the new ones and any whose answer was lost), by collection then client.
pub(crate) fn collect(
    conn: &mut Connection,
    collection: u64,
    ack_through: u64,
) -> Result<Vec<Row>, RollupError> {
    if collection <= ack_through {
        return Err(RollupError::NotAfterAck {
            collection,
            ack_through,
        });
    }
    let path = conn.path().unwrap_or_default().to_owned();
    let sql = |source| RollupError::Sqlite {
        path: path.clone(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    tx.execute(
        "DELETE FROM rollup_answered WHERE collection <= ?1",
        [int(ack_through)],
    )
    .map_err(sql)?;
    tx.execute(
        "INSERT INTO rollup_answered
             (collection, client, files, bytes, samples, parse_errors, pull_errors)
         SELECT ?1, client, files, bytes, samples, parse_errors, pull_errors FROM rollup_open
         WHERE true
         ON CONFLICT(collection, client) DO UPDATE SET files = files + excluded.files,
             bytes = bytes + excluded.bytes, samples = samples + excluded.samples,
             parse_errors = parse_errors + excluded.parse_errors,
             pull_errors = pull_errors + excluded.pull_errors",
        [int(collection)],
    )
    .map_err(sql)?;
    tx.execute("DELETE FROM rollup_open", []).map_err(sql)?;
    let rows = answered(&tx).map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(rows)
}

fn answered(conn: &Connection) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(
        "SELECT collection, client, files, bytes, samples, parse_errors, pull_errors
         FROM rollup_answered ORDER BY collection, client",
    )?;
    stmt.query_map([], |r| {
        Ok(Row {
            collection: uint(r.get(0)?),
            client: r.get(1)?,
            counters: Counters {
                files: uint(r.get(2)?),
                bytes: uint(r.get(3)?),
                samples: uint(r.get(4)?),
                parse_errors: uint(r.get(5)?),
                pull_errors: uint(r.get(6)?),
            },
        })
    })?
    .collect()
}

/// A read-write connection to the catalog for [`collect`], with the tables in place.
pub(crate) fn open(catalog: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(catalog)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;",
    )?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: u64) -> Counters {
        Counters {
            files: n,
            bytes: 10 * n,
            ..Counters::default()
        }
    }

    fn counted(rows: &[Row]) -> BTreeMap<(u64, String), u64> {
        rows.iter()
            .map(|r| ((r.collection, r.client.clone()), r.counters.files))
            .collect()
    }

    #[test]
    fn an_answer_is_repeated_until_a_later_collection_acknowledges_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("c.sqlite")).unwrap();
        add(&conn, &BTreeMap::from([("a".to_owned(), files(2))])).unwrap();
        let first = collect(&mut conn, 10, 0).unwrap();
        assert_eq!(counted(&first), BTreeMap::from([((10, "a".into()), 2)]));
        // The answer was lost: collection 11 acknowledges nothing, so 10 comes again.
        add(&conn, &BTreeMap::from([("b".to_owned(), files(1))])).unwrap();
        add_pull_error(&conn, "a").unwrap();
        let second = collect(&mut conn, 11, 0).unwrap();
        assert_eq!(
            counted(&second),
            BTreeMap::from([
                ((10, "a".into()), 2),
                ((11, "a".into()), 0),
                ((11, "b".into()), 1)
            ])
        );
        assert_eq!(second[1].counters.pull_errors, 1);
        // 12 acknowledges 11 (and so 10): only the new, here nothing.
        assert!(collect(&mut conn, 12, 11).unwrap().is_empty());
        assert!(matches!(
            collect(&mut conn, 12, 12),
            Err(RollupError::NotAfterAck { .. })
        ));
    }

    #[test]
    fn counters_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let mut conn = open(&path).unwrap();
            add(&conn, &BTreeMap::from([("a".to_owned(), files(3))])).unwrap();
            collect(&mut conn, 5, 0).unwrap();
            add(&conn, &BTreeMap::from([("a".to_owned(), files(4))])).unwrap();
        }
        let mut conn = open(&path).unwrap();
        let rows = collect(&mut conn, 6, 0).unwrap();
        assert_eq!(
            counted(&rows),
            BTreeMap::from([((5, "a".into()), 3), ((6, "a".into()), 4)])
        );
    }
}

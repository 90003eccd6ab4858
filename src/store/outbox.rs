//! The remote-write queue on disk (an outbox in the store's catalog): a commit's new samples
//! are enqueued on the commit's own transaction, so a sample in the shard is in the queue,
//! was shipped, or was counted as dropped (queue full) or rejected (receiver said 4xx) — never
//! lost silently, across `kill -9` too. The shipper (`remote_write`) reads and acknowledges on
//! its own connection. Counters live in `rw_meta`, in the same transactions as the rows.

use rusqlite::{Connection, OptionalExtension, params};

use crate::remote_write::policy::Taker;
use crate::remote_write::wire;
use crate::stats::block::Samples;
use crate::stats::tsdb::SeriesKey;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rw_outbox (
    id INTEGER PRIMARY KEY,
    samples INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rw_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    queued_bytes INTEGER NOT NULL DEFAULT 0,
    queued_samples INTEGER NOT NULL DEFAULT 0,
    sent_samples INTEGER NOT NULL DEFAULT 0,
    dropped_samples INTEGER NOT NULL DEFAULT 0,
    rejected_samples INTEGER NOT NULL DEFAULT 0,
    last_drop TEXT
);
INSERT OR IGNORE INTO rw_meta (id) VALUES (1);";

/// How big the queue may grow and how its pieces are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Most bytes of queued (compressed) pieces; a commit's pieces beyond it are dropped from
    /// the export and counted (the samples stay in the shard).
    pub max_bytes: u64,
    /// Most samples per piece (the shipper's batch size).
    pub piece_samples: usize,
}

/// What one commit put into the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Enqueued {
    pub samples: u64,
    pub dropped: u64,
}

/// The queue's durable counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    pub queued_bytes: u64,
    pub queued_samples: u64,
    pub sent_samples: u64,
    pub dropped_samples: u64,
    pub rejected_samples: u64,
    /// Why the last drop happened (when, how much).
    pub last_drop: Option<String>,
}

/// Pieces read for one request, in queue order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch {
    pub ids: Vec<i64>,
    pub bodies: Vec<Vec<u8>>,
    pub samples: u64,
    pub oldest_ms: i64,
}

/// How a batch left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acked {
    Sent,
    Rejected,
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Enqueues a commit's new samples on `tx`, the commit's transaction.
pub(crate) fn enqueue(
    tx: &Connection,
    limits: QueueLimits,
    series: &[(SeriesKey, Samples)],
    now_ms: i64,
) -> rusqlite::Result<Enqueued> {
    if series.is_empty() {
        return Ok(Enqueued::default());
    }
    let mut queued: u64 = u(tx.query_row("SELECT queued_bytes FROM rw_meta", [], |r| r.get(0))?);
    let mut out = Enqueued::default();
    let mut added_bytes = 0u64;
    let mut insert = tx
        .prepare_cached("INSERT INTO rw_outbox (samples, enqueued_ms, body) VALUES (?1, ?2, ?3)")?;
    for piece in wire::pieces(series, limits.piece_samples) {
        let len = piece.snappy.len() as u64;
        if queued + len > limits.max_bytes {
            out.dropped += piece.samples;
            continue;
        }
        insert.execute(params![i(piece.samples), now_ms, piece.snappy])?;
        queued += len;
        added_bytes += len;
        out.samples += piece.samples;
    }
    let note = (out.dropped > 0).then(|| {
        format!(
            "{} samples committed at {now_ms} ms were not queued: the queue holds {queued} of its {} bytes",
            out.dropped, limits.max_bytes
        )
    });
    tx.prepare_cached(
        "UPDATE rw_meta SET queued_bytes = queued_bytes + ?1, queued_samples = queued_samples + ?2,
         dropped_samples = dropped_samples + ?3, last_drop = coalesce(?4, last_drop)",
    )?
    .execute(params![
        i(added_bytes),
        i(out.samples),
        i(out.dropped),
        note
    ])?;
    Ok(out)
}

/// The oldest queued pieces that fit one request (`taker` decides), or `None` when empty.
pub(crate) fn peek(conn: &Connection, mut taker: Taker) -> rusqlite::Result<Option<Batch>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, samples, enqueued_ms, body FROM rw_outbox ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut batch = Batch::default();
    while let Some(row) = rows.next()? {
        let body: Vec<u8> = row.get(3)?;
        if !taker.admit(u(row.get(1)?), body.len() as u64) {
            break;
        }
        if batch.ids.is_empty() {
            batch.oldest_ms = row.get(2)?;
        }
        batch.ids.push(row.get(0)?);
        batch.bodies.push(body);
    }
    batch.samples = taker.samples();
    Ok((!batch.ids.is_empty()).then_some(batch))
}

/// Removes a batch from the queue and counts how it left, in one transaction.
pub(crate) fn ack(conn: &mut Connection, batch: &Batch, how: Acked) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let bytes: u64 = batch.bodies.iter().map(|b| b.len() as u64).sum();
    {
        let mut delete = tx.prepare_cached("DELETE FROM rw_outbox WHERE id = ?1")?;
        for id in &batch.ids {
            delete.execute([id])?;
        }
        let column = match how {
            Acked::Sent => "sent_samples",
            Acked::Rejected => "rejected_samples",
        };
        tx.execute(
            &format!(
                "UPDATE rw_meta SET queued_bytes = max(0, queued_bytes - ?1),
                 queued_samples = max(0, queued_samples - ?2), {column} = {column} + ?2"
            ),
            params![i(bytes), i(batch.samples)],
        )?;
    }
    tx.commit()
}

/// The queue's counters (zeros before the first enqueue).
pub(crate) fn stats(conn: &Connection) -> rusqlite::Result<QueueStats> {
    conn.query_row(
        "SELECT queued_bytes, queued_samples, sent_samples, dropped_samples, rejected_samples,
                last_drop FROM rw_meta",
        [],
        |r| {
            Ok(QueueStats {
                queued_bytes: u(r.get(0)?),
                queued_samples: u(r.get(1)?),
                sent_samples: u(r.get(2)?),
                dropped_samples: u(r.get(3)?),
                rejected_samples: u(r.get(4)?),
                last_drop: r.get(5)?,
            })
        },
    )
    .optional()
    .map(Option::unwrap_or_default)
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;

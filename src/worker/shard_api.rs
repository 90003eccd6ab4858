//! `ShardService` on the worker: answers the leader's fan-out from this store's shard. Each
//! read runs on a blocking thread with its own read-only connection inside one read
//! transaction (a WAL snapshot: commits go on meanwhile), sends chunks through a channel of
//! one, and stops reading as soon as the stream's receiver is gone (the leader's deadline
//! passed or its caller left).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::proto::{self, shard_service_server::ShardService};
use crate::services::shard_wire::{
    key_to_proto, partials_to_proto, range_from_proto, rollup_row_to_proto, selector_from_proto,
};
use crate::stats::cluster::{Chunker, key_bytes, partials_bytes};
use crate::stats::query::Span;
use crate::stats::tsdb;
use crate::store::rollup;

pub(crate) struct ShardApi {
    catalog: PathBuf,
    /// The read-write connection of roll-up collections, opened on first use; one collection
    /// at a time (the leader sends one per interval).
    rollups: Arc<Mutex<Option<Connection>>>,
}

impl ShardApi {
    pub(crate) fn new(store: &std::path::Path) -> Self {
        ShardApi {
            catalog: store.join("catalog.sqlite"),
            rollups: Arc::new(Mutex::new(None)),
        }
    }
}

/// Files the open roll-up counters under `collection` after forgetting what `ack_through`
/// acknowledges, and returns every unacknowledged row (store::rollup::collect).
fn collect_rollup(
    catalog: &std::path::Path,
    slot: &Mutex<Option<Connection>>,
    collection: u64,
    ack_through: u64,
) -> Result<Vec<rollup::Row>, Status> {
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        let conn = rollup::open(catalog).map_err(|e| {
            Status::internal(format!(
                "cannot open the roll-up counters in {}: {e}",
                catalog.display()
            ))
        })?;
        *guard = Some(conn);
    }
    let Some(conn) = guard.as_mut() else {
        return Err(Status::internal("roll-up connection missing"));
    };
    rollup::collect(conn, collection, ack_through).map_err(|e| match e {
        rollup::RollupError::NotAfterAck { .. } => Status::invalid_argument(e.to_string()),
        rollup::RollupError::Sqlite { .. } => {
            // A broken connection is opened again next time.
            *guard = None;
            Status::unavailable(e.to_string())
        }
    })
}

type Chunks<M> = ReceiverStream<Result<M, Status>>;

/// Runs `read` on a blocking thread over a snapshot of the shard; `read` hands each chunk to
/// its `send`, which answers false once the receiver is gone.
fn stream<M: Send + 'static>(
    catalog: PathBuf,
    read: impl FnOnce(&Connection, &mut dyn FnMut(M) -> bool) -> Result<(), tsdb::TsdbError>
    + Send
    + 'static,
) -> Chunks<M> {
    let (tx, rx) = mpsc::channel(1);
    tokio::task::spawn_blocking(move || {
        let mut send = |m: M| tx.blocking_send(Ok(m)).is_ok();
        let failed = match crate::worker::offline::open_shard(&catalog) {
            Ok(None) => None,
            Ok(Some(conn)) => snapshot(&conn, |c| read(c, &mut send)).err(),
            Err(e) => Some(format!("cannot open the shard {}: {e}", catalog.display())),
        };
        if let Some(why) = failed {
            debug!(error = %why, "shard read failed");
            let _ = tx.blocking_send(Err(Status::internal(why)));
        }
    });
    ReceiverStream::new(rx)
}

/// One read transaction around `read`, so every series comes from the same snapshot.
fn snapshot(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> Result<(), tsdb::TsdbError>,
) -> Result<(), String> {
    conn.execute_batch("BEGIN")
        .map_err(|e| format!("cannot begin a read: {e}"))?;
    let result = read(conn).map_err(|e| format!("shard read failed: {e}"));
    let _ = conn.execute_batch("COMMIT");
    result
}

#[tonic::async_trait]
impl ShardService for ShardApi {
    type QueryStream = Chunks<proto::ShardQueryChunk>;
    type SeriesStream = Chunks<proto::ShardSeriesChunk>;
    type MetricsStream = Chunks<proto::ShardMetricsChunk>;
    type RollupStream = Chunks<proto::ShardRollupChunk>;

    async fn rollup(
        &self,
        request: Request<proto::ShardRollupRequest>,
    ) -> Result<Response<Self::RollupStream>, Status> {
        let r = request.into_inner();
        let (catalog, slot) = (self.catalog.clone(), self.rollups.clone());
        // The collection's transaction commits before anything is sent: an answer lost on
        // the way is filed and sent again until acknowledged.
        let rows = tokio::task::spawn_blocking(move || {
            collect_rollup(&catalog, &slot, r.collection, r.ack_through)
        })
        .await
        .map_err(|e| Status::internal(format!("roll-up collection failed: {e}")))??;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut chunker = Chunker::default();
            for row in rows {
                let bytes = row.client.len() + 64;
                if let Some(rows) = chunker.push(rollup_row_to_proto(row), bytes)
                    && tx.send(Ok(proto::ShardRollupChunk { rows })).await.is_err()
                {
                    return;
                }
            }
            if let Some(rows) = chunker.finish() {
                let _ = tx.send(Ok(proto::ShardRollupChunk { rows })).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn query(
        &self,
        request: Request<proto::ShardQueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let r = request.into_inner();
        let bad = |e: crate::stats::query::QueryError| Status::invalid_argument(e.to_string());
        let selector = selector_from_proto(r.selector.unwrap_or_default()).map_err(bad)?;
        let range = range_from_proto(r.from_ms, r.to_ms, r.step_ms, r.fields).map_err(bad)?;
        // A leader that named its fields reads columns; an older one, every field in buckets.
        let columnar = r.fields != 0;
        Ok(Response::new(stream(
            self.catalog.clone(),
            move |conn, send| {
                let mut chunker = Chunker::default();
                let mut open = true;
                tsdb::query(conn, &selector, &range, |s| {
                    let bytes = partials_bytes(&s);
                    let wire = partials_to_proto(s, &range, columnar);
                    if let Some(series) = chunker.push(wire, bytes) {
                        open = send(proto::ShardQueryChunk { series });
                    }
                    open
                })?;
                if let Some(series) = chunker.finish().filter(|_| open) {
                    send(proto::ShardQueryChunk { series });
                }
                Ok(())
            },
        )))
    }

    async fn series(
        &self,
        request: Request<proto::ShardSeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let r = request.into_inner();
        let selector = (r.selector)
            .map(selector_from_proto)
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let span = r.span.map(|s| Span {
            from_ms: s.from_ms,
            to_ms: s.to_ms,
        });
        Ok(Response::new(stream(
            self.catalog.clone(),
            move |conn, send| {
                let mut chunker = Chunker::default();
                for key in tsdb::series(conn, selector.as_ref(), span)? {
                    let bytes = key_bytes(&key);
                    if let Some(series) = chunker.push(key_to_proto(key), bytes)
                        && !send(proto::ShardSeriesChunk { series })
                    {
                        return Ok(());
                    }
                }
                if let Some(series) = chunker.finish() {
                    send(proto::ShardSeriesChunk { series });
                }
                Ok(())
            },
        )))
    }

    async fn metrics(
        &self,
        _request: Request<proto::ShardMetricsRequest>,
    ) -> Result<Response<Self::MetricsStream>, Status> {
        Ok(Response::new(stream(self.catalog.clone(), |conn, send| {
            let mut chunker = Chunker::new(1_000, crate::stats::cluster::CHUNK_BYTES);
            for name in tsdb::metrics(conn)? {
                let bytes = name.len() + 2;
                if let Some(names) = chunker.push(name, bytes)
                    && !send(proto::ShardMetricsChunk { names })
                {
                    return Ok(());
                }
            }
            if let Some(names) = chunker.finish() {
                send(proto::ShardMetricsChunk { names });
            }
            Ok(())
        })))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_stream::StreamExt;

    use super::*;

    /// A dropped receiver stops the read at the next chunk: the blocking thread does not read
    /// the rest of the shard for nobody.
    #[tokio::test]
    async fn the_read_stops_when_the_receiver_is_gone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let catalog = dir.path().join("catalog.sqlite");
        Connection::open(&catalog)
            .and_then(|c| c.execute_batch("CREATE TABLE ts_series (id INTEGER)"))
            .unwrap_or_else(|e| panic!("{e}"));
        let sent = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let counter = sent.clone();
        let mut chunks = stream(catalog, move |_, send| {
            for i in 0..1_000_000u64 {
                if !send(i) {
                    break;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let _ = done_tx.send(());
            Ok(())
        });
        for _ in 0..3 {
            assert!(chunks.next().await.is_some());
        }
        drop(chunks);
        tokio::time::timeout(std::time::Duration::from_secs(5), done_rx)
            .await
            .unwrap_or_else(|e| panic!("the read went on: {e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            sent.load(Ordering::SeqCst) < 10,
            "{}",
            sent.load(Ordering::SeqCst)
        );
    }
}

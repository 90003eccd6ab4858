//! The leader's fan-out: one cluster read asks every shard in parallel, folds chunks as they
//! arrive (memory bounded by the chunks in flight, one per shard plus one being merged), stops
//! at one deadline, and says which shards answered ([`ShardReport`]). Implements
//! [`ClusterReader`] for sqdctl, the HTTP API and alert rules.
//!
//! Shards are behind [`Shard`]: remote workers over gRPC, and the leader's own shard of host
//! metrics (`hostmetrics::history::LeaderShard`, id `leader`).
//! Dropping a read (the caller went away) aborts every shard's task, which drops its stream,
//! which cancels the shard's side.

mod remote;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::core::{Command, CoreHandle};
use super::liveness::WorkerState;
use crate::stats::cluster::{Answer, ClusterError, ClusterReader, ShardReport, Tally};
use crate::stats::query::{Merger, Range, Selector, SeriesPartials, Span};
use crate::stats::tsdb::SeriesKey;
use crate::store::rollup::Row;
pub(crate) use remote::RemoteShard;

/// A shard's answer in chunks; an `Err` item ends it with the reason it failed.
pub(crate) type Chunks<T> = BoxStream<'static, Result<T, String>>;
/// Opening a shard's answer (connecting, sending the request) may itself fail.
pub(crate) type Opening<T> = BoxFuture<'static, Result<Chunks<T>, String>>;

/// One shard that can be asked. Every method starts the question; nothing happens until the
/// returned future is polled, and dropping it (or its stream) cancels.
pub(crate) trait Shard: Send + Sync {
    /// The shard's name in reports: its worker id (`leader` for the leader's own).
    fn id(&self) -> &str;
    fn query(&self, selector: &Selector, range: &Range) -> Opening<Vec<SeriesPartials>>;
    fn series(&self, selector: Option<&Selector>, span: Option<Span>) -> Opening<Vec<SeriesKey>>;
    fn metrics(&self) -> Opening<Vec<String>>;
    /// The shard's roll-up rows not yet acknowledged, after filing its open counters under
    /// `collection` and forgetting those through `ack_through` (see `store::rollup`). A
    /// shard without counters fails, and is reported missing.
    fn rollup(&self, _collection: u64, _ack_through: u64) -> Opening<Vec<Row>> {
        Box::pin(async { Err("this shard keeps no roll-up counters".to_owned()) })
    }
}

enum Event<T> {
    Chunk(usize, T),
    Done(usize),
    Failed(usize, String),
}

/// Asks every shard (`open` starts shard `i`'s answer), folds chunks into `fold` as they
/// arrive until every shard finished or `deadline` passed, and reports who answered.
pub(crate) async fn gather<T: Send + 'static>(
    shards: &[Arc<dyn Shard>],
    open: impl Fn(&dyn Shard) -> Opening<T>,
    deadline: Instant,
    mut fold: impl FnMut(T),
) -> ShardReport {
    let mut tally = Tally::new(shards.iter().map(|s| s.id().to_owned()));
    // One chunk in flight per shard: a fast shard waits for the merge, memory stays bounded.
    let (tx, mut rx) = mpsc::channel::<Event<T>>(shards.len().max(1));
    let mut tasks = JoinSet::new();
    for (i, shard) in shards.iter().enumerate() {
        let (tx, opening) = (tx.clone(), open(shard.as_ref()));
        tasks.spawn(async move {
            let mut chunks = match opening.await {
                Ok(chunks) => chunks,
                Err(why) => {
                    let _ = tx.send(Event::Failed(i, why)).await;
                    return;
                }
            };
            while let Some(chunk) = chunks.next().await {
                let event = match chunk {
                    Ok(c) => Event::Chunk(i, c),
                    Err(why) => Event::Failed(i, why),
                };
                let last = matches!(event, Event::Failed(..));
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
            let _ = tx.send(Event::Done(i)).await;
        });
    }
    drop(tx);
    let mut deadline_passed = false;
    while !tally.settled() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Chunk(i, chunk))) if tally.pending(i) => fold(chunk),
            Ok(Some(Event::Chunk(..))) => {}
            Ok(Some(Event::Done(i))) => tally.done(i),
            Ok(Some(Event::Failed(i, why))) => tally.failed(i, why),
            Ok(None) => break,
            Err(_) => {
                deadline_passed = true;
                break;
            }
        }
    }
    // Streams still open are cut here: their shards stop reading.
    tasks.abort_all();
    tally.finish(deadline_passed)
}

/// Where the fan-out finds its shards: the workers the registry knows with an address.
pub(crate) trait ShardSource: Send + Sync + 'static {
    fn shards(&self) -> BoxFuture<'_, Result<Vec<Arc<dyn Shard>>, ClusterError>>;
}

/// The leader's [`ClusterReader`].
pub(crate) struct Fanout<S: ShardSource> {
    source: S,
}

impl<S: ShardSource> Fanout<S> {
    pub(crate) fn new(source: S) -> Self {
        Fanout { source }
    }
}

impl<S: ShardSource> ClusterReader for Fanout<S> {
    async fn query(
        &self,
        selector: Selector,
        range: Range,
        timeout: Duration,
    ) -> Result<Answer<Vec<SeriesPartials>>, ClusterError> {
        let deadline = Instant::now() + timeout;
        let shards = self.source.shards().await?;
        let mut merger = Merger::default();
        let report = gather(
            &shards,
            |s| s.query(&selector, &range),
            deadline,
            |chunk| chunk.into_iter().for_each(|p| merger.add(p)),
        )
        .await;
        Ok(Answer {
            value: merger.finish(),
            report,
        })
    }

    async fn series(
        &self,
        selector: Option<Selector>,
        span: Option<Span>,
        timeout: Duration,
    ) -> Result<Answer<Vec<SeriesKey>>, ClusterError> {
        let deadline = Instant::now() + timeout;
        let shards = self.source.shards().await?;
        let mut keys = BTreeSet::new();
        let report = gather(
            &shards,
            |s| s.series(selector.as_ref(), span),
            deadline,
            |chunk| keys.extend(chunk),
        )
        .await;
        Ok(Answer {
            value: keys.into_iter().collect(),
            report,
        })
    }

    async fn metrics(&self, timeout: Duration) -> Result<Answer<Vec<String>>, ClusterError> {
        let deadline = Instant::now() + timeout;
        let shards = self.source.shards().await?;
        let mut names = BTreeSet::new();
        let report = gather(
            &shards,
            |s| s.metrics(),
            deadline,
            |chunk| names.extend(chunk),
        )
        .await;
        Ok(Answer {
            value: names.into_iter().collect(),
            report,
        })
    }
}

/// The registry's workers with an address, alive or not (a dead or restarted worker's shard
/// still holds data), except refused ones (another cluster's or an incompatible version's).
pub(crate) struct RegistryShards {
    core: CoreHandle,
    /// One lazily connected channel per worker and address, reused across queries.
    channels: Mutex<HashMap<(String, String), tonic::transport::Channel>>,
    /// The node token, which workers' shard gates expect.
    bearer: crate::security::Bearer,
    /// With mTLS: workers' shards are reached over TLS and must prove their id.
    tls: Option<crate::security::tls::ShardTls>,
    /// The leader's own shard (host metrics), asked with every read.
    local: Option<Arc<dyn Shard>>,
}

impl RegistryShards {
    pub(crate) fn new(
        core: CoreHandle,
        bearer: crate::security::Bearer,
        tls: Option<crate::security::tls::ShardTls>,
    ) -> Self {
        RegistryShards {
            core,
            bearer,
            tls,
            channels: Mutex::new(HashMap::new()),
            local: None,
        }
    }

    /// Adds the leader's own shard (id `leader`) to every read.
    pub(crate) fn with_local(mut self, shard: Arc<dyn Shard>) -> Self {
        self.local = Some(shard);
        self
    }

    /// One channel per worker and address (a worker that moved gets a new one; TLS names
    /// the worker, so the id is part of the key).
    fn channel(&self, id: &str, addr: &str) -> Result<tonic::transport::Channel, String> {
        let key = (id.to_owned(), addr.to_owned());
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let c = remote::channel(addr, self.tls.as_ref().map(|t| t.towards(id)))?;
        channels.insert(key, c.clone());
        Ok(c)
    }
}

impl ShardSource for RegistryShards {
    fn shards(&self) -> BoxFuture<'_, Result<Vec<Arc<dyn Shard>>, ClusterError>> {
        Box::pin(async move {
            let status = self
                .core
                .ask(|reply| Command::Status { reply })
                .await
                .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            let workers: Vec<_> = (status.workers.into_iter())
                .filter(|w| !w.addr.is_empty() && w.state != WorkerState::Refused)
                .collect();
            // Addresses no worker advertises any more (restarted on another port) are let go.
            (self.channels.lock().unwrap_or_else(|p| p.into_inner()))
                .retain(|(id, addr), _| workers.iter().any(|w| w.id == *id && w.addr == *addr));
            let mut shards: Vec<Arc<dyn Shard>> = self.local.iter().cloned().collect();
            for w in workers {
                let shard: Arc<dyn Shard> = match self.channel(&w.id, &w.addr) {
                    Ok(channel) => Arc::new(RemoteShard::new(w.id, channel, self.bearer.clone())),
                    Err(why) => Arc::new(remote::Unreachable { id: w.id, why }),
                };
                shards.push(shard);
            }
            Ok(shards)
        })
    }
}

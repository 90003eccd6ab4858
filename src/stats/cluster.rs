//! The contract of a cluster-wide read: what every query front-end (`sqdctl query`, the
//! Prometheus-compatible HTTP API, alert rules) asks of "all the shards", and the shard report
//! that says which shards an answer stands on. The leader's fan-out implements
//! [`ClusterReader`]; the front-ends only see this trait, so they are tested without a cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::query::{Range, Selector, SeriesPartials, Span};
use super::tsdb::SeriesKey;

/// Which shards an answer stands on. A shard is named by its worker id (the leader's own
/// shard, once it has one, by `leader`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReport {
    pub asked: Vec<String>,
    pub answered: Vec<String>,
    /// Shard → why it did not answer (unreachable, refused, stream broke).
    pub failed: BTreeMap<String, String>,
    /// Shards that had not finished when the query's deadline passed.
    pub timed_out: Vec<String>,
}

impl ShardReport {
    /// True whenever a shard that was asked did not answer in full: such an answer must say so.
    pub fn partial(&self) -> bool {
        !self.failed.is_empty() || !self.timed_out.is_empty()
    }

    /// The shards that did not answer, failed first, sorted within each kind.
    pub fn missing(&self) -> Vec<String> {
        let mut timed_out = self.timed_out.clone();
        timed_out.sort();
        self.failed.keys().cloned().chain(timed_out).collect()
    }

    /// `w2 failed (connection refused); w3 timed out` — the shards missing from an answer, for
    /// warnings and errors.
    pub fn describe_missing(&self) -> String {
        let mut timed_out = self.timed_out.clone();
        timed_out.sort();
        (self.failed.iter())
            .map(|(id, why)| format!("{id} failed ({why})"))
            .chain(timed_out.into_iter().map(|id| format!("{id} timed out")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A value merged from every shard that answered, with the report of who did.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub value: T,
    pub report: ShardReport,
}

/// Why a cluster read gave no answer at all (a partial answer is not an error: see
/// [`ShardReport::partial`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The question itself is wrong (the caller's fault; HTTP 400/422, exit 2).
    #[error("{0}")]
    BadQuery(String),
    /// The reader cannot work now (e.g. the leader is stopping).
    #[error("cannot query the cluster: {0}")]
    Unavailable(String),
}

/// Reads the union of every shard, merging partials (M2) as they arrive. `timeout` bounds the
/// whole call: shards that have not finished by then are named in `timed_out`.
pub trait ClusterReader: Send + Sync + 'static {
    /// Per series, per step bucket partials of `selector` over `range`, merged across shards.
    fn query(
        &self,
        selector: Selector,
        range: Range,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<SeriesPartials>>, ClusterError>> + Send;

    /// Series matching `selector` (every series when `None`) with samples in `span` (any
    /// time when `None`), deduplicated across shards and sorted by metric then labels.
    fn series(
        &self,
        selector: Option<Selector>,
        span: Option<Span>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<SeriesKey>>, ClusterError>> + Send;

    /// Every metric name in any shard, sorted, deduplicated.
    fn metrics(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<String>>, ClusterError>> + Send;
}

/// Most series in one chunk of a shard's (or the leader's) streamed answer.
pub const CHUNK_SERIES: usize = 50;
/// About the most bytes in one chunk (one series larger than this travels alone).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Cuts a stream of items into chunks of at most [`CHUNK_SERIES`] items or about
/// [`CHUNK_BYTES`], so neither side holds more than a chunk per stream in flight.
#[derive(Debug)]
pub struct Chunker<T> {
    items: Vec<T>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<T> Default for Chunker<T> {
    fn default() -> Self {
        Chunker::new(CHUNK_SERIES, CHUNK_BYTES)
    }
}

impl<T> Chunker<T> {
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Chunker {
            items: Vec::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    /// Adds an item of about `bytes` encoded; returns a full chunk to send.
    pub fn push(&mut self, item: T, bytes: usize) -> Option<Vec<T>> {
        let full = !self.items.is_empty() && self.bytes + bytes > self.max_bytes;
        let out = full.then(|| self.take());
        self.items.push(item);
        self.bytes += bytes;
        if out.is_none() && self.items.len() >= self.max_items {
            return Some(self.take());
        }
        out
    }

    /// The last, possibly short, chunk (`None` when nothing is left).
    pub fn finish(mut self) -> Option<Vec<T>> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

/// About the encoded size of one series' partials (labels plus ~70 bytes a bucket).
pub fn partials_bytes(s: &SeriesPartials) -> usize {
    labels_bytes(&s.labels) + s.buckets.len() * 70
}

/// About the encoded size of one series key.
pub fn key_bytes(k: &SeriesKey) -> usize {
    k.metric.len() + labels_bytes(&k.labels) + 4
}

fn labels_bytes(labels: &[(String, String)]) -> usize {
    labels.iter().map(|(k, v)| k.len() + v.len() + 6).sum()
}

/// Merges the series of each group — the labels named in `by` (a series without one of them
/// groups as if it lacked it, as Prometheus's `by` does) — bucket by bucket, so a group's avg
/// is over every sample of its series. An empty `by` keeps every series apart.
pub fn group_by(answer: Vec<SeriesPartials>, by: &[String]) -> Vec<SeriesPartials> {
    if by.is_empty() {
        return answer;
    }
    let mut merger = super::query::Merger::default();
    for s in answer {
        let labels = s
            .labels
            .into_iter()
            .filter(|(k, _)| by.contains(k))
            .collect();
        merger.add(SeriesPartials {
            labels,
            buckets: s.buckets,
        });
    }
    merger.finish()
}

/// Where one shard's answer stands while a read is under way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    Pending,
    Done,
    Failed(String),
}

/// Builds a [`ShardReport`] from what happens to each asked shard; pure, so the report's rules
/// (a shard that never finished is timed out, or failed when its reader vanished) are tested
/// without a network.
#[derive(Debug, Clone)]
pub struct Tally {
    shards: Vec<(String, Progress)>,
}

impl Tally {
    pub fn new(asked: impl IntoIterator<Item = String>) -> Self {
        Tally {
            shards: asked
                .into_iter()
                .map(|id| (id, Progress::Pending))
                .collect(),
        }
    }

    /// True while shard `i`'s chunks still count: once it failed, nothing more of it is taken.
    pub fn pending(&self, i: usize) -> bool {
        matches!(self.shards.get(i), Some((_, Progress::Pending)))
    }

    pub fn done(&mut self, i: usize) {
        if let Some((_, p @ Progress::Pending)) = self.shards.get_mut(i) {
            *p = Progress::Done;
        }
    }

    pub fn failed(&mut self, i: usize, why: String) {
        if let Some((_, p @ Progress::Pending)) = self.shards.get_mut(i) {
            *p = Progress::Failed(why);
        }
    }

    /// True once every shard finished one way or another.
    pub fn settled(&self) -> bool {
        self.shards.iter().all(|(_, p)| *p != Progress::Pending)
    }

    /// The report; shards still pending timed out when `deadline_passed`, otherwise their
    /// reader stopped without a word (counted as failed, never silently dropped).
    pub fn finish(self, deadline_passed: bool) -> ShardReport {
        let mut report = ShardReport::default();
        for (id, progress) in self.shards {
            report.asked.push(id.clone());
            match progress {
                Progress::Done => report.answered.push(id),
                Progress::Failed(why) => {
                    report.failed.insert(id, why);
                }
                Progress::Pending if deadline_passed => report.timed_out.push(id),
                Progress::Pending => {
                    report
                        .failed
                        .insert(id, "its reader stopped before the answer ended".into());
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests;

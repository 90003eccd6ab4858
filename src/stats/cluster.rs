//! The contract of a cluster-wide read: what every query front-end (`sqdctl query`, the
//! Prometheus-compatible HTTP API, alert rules) asks of "all the shards", and the shard report
//! that says which shards an answer stands on. The leader's fan-out implements
//! [`ClusterReader`]; the front-ends only see this trait, so they are tested without a cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::query::{Range, Selector, SeriesPartials};
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

    /// Series matching `selector` (every series when `None`), deduplicated across shards and
    /// sorted by metric then labels.
    fn series(
        &self,
        selector: Option<Selector>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<SeriesKey>>, ClusterError>> + Send;

    /// Every metric name in any shard, sorted, deduplicated.
    fn metrics(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer<Vec<String>>, ClusterError>> + Send;
}

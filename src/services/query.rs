//! The admin API's cluster reads (`Query`, `Series`, `Metrics`): decode, ask the
//! [`ClusterReader`], group, refuse a partial answer when asked to, and stream the merged
//! series back in chunks with the shard report in the last one.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tonic::Status;

use super::shard_wire::{
    key_to_proto, partials_to_proto, range_from_proto, report_to_proto, selector_from_proto,
};
use crate::proto;
use crate::stats::cluster::{
    Chunker, ClusterError, ClusterReader, ShardReport, group_by, partials_bytes,
};

/// The deadline of a query that names none (sqdctl's `--timeout` default too).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest deadline a caller may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) type QueryStream = Pin<Box<dyn Stream<Item = Result<proto::QueryChunk, Status>> + Send>>;

fn timeout(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
    }
}

fn cluster_status(e: ClusterError) -> Status {
    match e {
        ClusterError::BadQuery(m) => Status::invalid_argument(m),
        ClusterError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

/// A partial answer the caller refused: FAILED_PRECONDITION naming the missing shards.
fn check_partial(report: &ShardReport, deny: bool) -> Result<(), Status> {
    if deny && report.partial() {
        return Err(Status::failed_precondition(format!(
            "partial answer refused (--deny-partial): {}; {} of {} shard(s) answered",
            report.describe_missing(),
            report.answered.len(),
            report.asked.len()
        )));
    }
    Ok(())
}

pub(crate) async fn query(
    reader: &impl ClusterReader,
    request: proto::QueryRequest,
) -> Result<QueryStream, Status> {
    let bad = |e: crate::stats::query::QueryError| Status::invalid_argument(e.to_string());
    let selector = request
        .selector
        .ok_or_else(|| Status::invalid_argument("Query needs a selector (a metric name)"))
        .and_then(|s| selector_from_proto(s).map_err(bad))?;
    let range = range_from_proto(
        request.from_ms,
        request.to_ms,
        request.step_ms,
        request.fields,
    )
    .map_err(bad)?;
    let (columnar, wire_range) = (request.fields != 0, range.clone());
    let answer = reader
        .query(selector, range, timeout(request.timeout_ms))
        .await
        .map_err(cluster_status)?;
    check_partial(&answer.report, request.deny_partial)?;
    let series = group_by(answer.value, &request.by);
    let mut chunker = Chunker::default();
    let mut chunks = Vec::new();
    for s in series {
        let bytes = partials_bytes(&s);
        chunks.extend(chunker.push(partials_to_proto(s, &wire_range, columnar), bytes));
    }
    let mut chunks: Vec<proto::QueryChunk> = chunks
        .into_iter()
        .chain(chunker.finish())
        .map(|series| proto::QueryChunk {
            series,
            report: None,
        })
        .collect();
    let report = Some(report_to_proto(answer.report));
    match chunks.last_mut() {
        Some(last) => last.report = report,
        None => chunks.push(proto::QueryChunk {
            series: Vec::new(),
            report,
        }),
    }
    Ok(Box::pin(futures_util::stream::iter(
        chunks.into_iter().map(Ok),
    )))
}

pub(crate) async fn series(
    reader: &impl ClusterReader,
    request: proto::SeriesRequest,
) -> Result<proto::SeriesResponse, Status> {
    let selector = request
        .selector
        .map(selector_from_proto)
        .transpose()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let answer = reader
        .series(selector, None, timeout(request.timeout_ms))
        .await
        .map_err(cluster_status)?;
    check_partial(&answer.report, request.deny_partial)?;
    Ok(proto::SeriesResponse {
        series: answer.value.into_iter().map(key_to_proto).collect(),
        report: Some(report_to_proto(answer.report)),
    })
}

pub(crate) async fn metrics(
    reader: &impl ClusterReader,
    request: proto::MetricsRequest,
) -> Result<proto::MetricsResponse, Status> {
    let answer = reader
        .metrics(timeout(request.timeout_ms))
        .await
        .map_err(cluster_status)?;
    check_partial(&answer.report, request.deny_partial)?;
    Ok(proto::MetricsResponse {
        names: answer.value,
        report: Some(report_to_proto(answer.report)),
    })
}

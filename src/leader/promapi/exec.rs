//! What each endpoint computes, over any [`ClusterReader`]: plan the PromQL, ask every shard
//! through the reader, evaluate the merged partials, render; and the warnings that say an
//! answer stands on fewer shards than were asked. No sockets here.

use std::collections::BTreeSet;

use futures_util::future::join_all;

use super::error::ApiError;
use super::params::{InstantRequest, RangeRequest, SeriesRequest, with_name};
use super::render;
use crate::stats::cluster::{ClusterReader, ShardReport};
use crate::stats::promql::{METRIC_NAME_LABEL, Matrix, Plan, QueryTimes, ResultKind};
use crate::stats::query::Labels;

/// A success body's `data` (JSON already) and its warnings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub data: String,
    pub warnings: Vec<String>,
}

/// The warning a report calls for: none when every asked shard answered.
pub(crate) fn report_warning(report: &ShardReport) -> Option<String> {
    if report.asked.is_empty() {
        return Some(
            "no shard was asked: the leader knows no worker yet, so the answer is empty".to_owned(),
        );
    }
    if !report.partial() {
        return None;
    }
    let missing = report.missing();
    let why: Vec<String> = missing
        .iter()
        .map(|id| match report.failed.get(id) {
            Some(reason) => format!("{id}: {reason}"),
            None => format!("{id}: timed out"),
        })
        .collect();
    let mut answered = report.answered.clone();
    answered.sort();
    let from = if answered.is_empty() {
        "no shard answered, so the answer is empty".to_owned()
    } else {
        format!("values are from {} only", answered.join(", "))
    };
    Some(format!(
        "partial answer: shards {} did not answer ({}); {from}",
        missing.join(", "),
        why.join("; ")
    ))
}

fn push_warning(warnings: &mut Vec<String>, report: &ShardReport) {
    if let Some(w) = report_warning(report)
        && !warnings.contains(&w)
    {
        warnings.push(w);
    }
}

/// Plans `query`, asks the shards if it reads any, evaluates.
async fn evaluate<R: ClusterReader>(
    reader: &R,
    query: &str,
    times: QueryTimes,
    timeout: std::time::Duration,
) -> Result<(Plan, Matrix, Vec<String>), ApiError> {
    let plan = Plan::new(query, times)?;
    let mut warnings = Vec::new();
    let merged = match &plan.fetch {
        None => Vec::new(),
        Some(fetch) => {
            let answer = reader
                .query(fetch.selector.clone(), fetch.shard_range.clone(), timeout)
                .await?;
            push_warning(&mut warnings, &answer.report);
            answer.value
        }
    };
    let matrix = plan.evaluate(&merged)?;
    Ok((plan, matrix, warnings))
}

/// `/api/v1/query`: a vector, or a scalar for a bare number.
pub(crate) async fn instant<R: ClusterReader>(
    reader: &R,
    req: &InstantRequest,
) -> Result<Reply, ApiError> {
    let times = QueryTimes {
        start_ms: req.time_ms,
        end_ms: req.time_ms,
        step_ms: 1,
        lookback_ms: req.lookback_ms,
    };
    let (plan, matrix, warnings) = evaluate(reader, &req.query, times, req.timeout).await?;
    let data = match plan.eval.result_kind() {
        ResultKind::Scalar => {
            let v = (matrix.first().and_then(|s| s.points.first())).map_or(f64::NAN, |p| p.1);
            render::scalar(req.time_ms, v)
        }
        ResultKind::Vector => render::vector(&matrix),
    };
    Ok(Reply { data, warnings })
}

/// `/api/v1/query_range`: always a matrix.
pub(crate) async fn range<R: ClusterReader>(
    reader: &R,
    req: &RangeRequest,
) -> Result<Reply, ApiError> {
    let times = QueryTimes {
        start_ms: req.start_ms,
        end_ms: req.end_ms,
        step_ms: req.step_ms,
        lookback_ms: req.lookback_ms,
    };
    let (_, matrix, warnings) = evaluate(reader, &req.query, times, req.timeout).await?;
    Ok(Reply {
        data: render::matrix(&matrix),
        warnings,
    })
}

/// Every series any `match[]` selects (every series without one), labels with `__name__`.
async fn matching_series<R: ClusterReader>(
    reader: &R,
    req: &SeriesRequest,
) -> Result<(BTreeSet<Labels>, Vec<String>), ApiError> {
    let mut found = BTreeSet::new();
    let mut warnings = Vec::new();
    if req.matches.is_empty() {
        let answer = reader.series(None, req.span, req.timeout).await?;
        push_warning(&mut warnings, &answer.report);
        found.extend(answer.value.iter().map(|k| with_name(&k.metric, &k.labels)));
        return Ok((found, warnings));
    }
    let asks = req
        .matches
        .iter()
        .map(|m| reader.series(m.selector(), req.span, req.timeout));
    for (m, answer) in req.matches.iter().zip(join_all(asks).await) {
        let answer = answer?;
        push_warning(&mut warnings, &answer.report);
        found.extend(
            (answer.value.iter())
                .filter(|k| m.matches(&k.metric, &k.labels))
                .map(|k| with_name(&k.metric, &k.labels)),
        );
    }
    Ok((found, warnings))
}

/// `/api/v1/series`.
pub(crate) async fn series<R: ClusterReader>(
    reader: &R,
    req: &SeriesRequest,
) -> Result<Reply, ApiError> {
    let (found, warnings) = matching_series(reader, req).await?;
    Ok(Reply {
        data: render::label_sets(&found),
        warnings,
    })
}

/// `/api/v1/labels`: label names of the selected series, `__name__` among them.
pub(crate) async fn labels<R: ClusterReader>(
    reader: &R,
    req: &SeriesRequest,
) -> Result<Reply, ApiError> {
    let (found, warnings) = matching_series(reader, req).await?;
    let names: BTreeSet<&str> = found
        .iter()
        .flat_map(|l| l.iter().map(|(k, _)| k.as_str()))
        .collect();
    Ok(Reply {
        data: render::strings(names),
        warnings,
    })
}

/// `/api/v1/label/<name>/values`; metric names come from the shards' metric lists.
pub(crate) async fn label_values<R: ClusterReader>(
    reader: &R,
    name: &str,
    req: &SeriesRequest,
) -> Result<Reply, ApiError> {
    if name == METRIC_NAME_LABEL && req.matches.is_empty() {
        let answer = reader.metrics(req.timeout).await?;
        let mut warnings = Vec::new();
        push_warning(&mut warnings, &answer.report);
        return Ok(Reply {
            data: render::strings(answer.value.iter().map(String::as_str)),
            warnings,
        });
    }
    let (found, warnings) = matching_series(reader, req).await?;
    let values: BTreeSet<&str> = found
        .iter()
        .filter_map(|l| l.iter().find(|(k, _)| k == name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    Ok(Reply {
        data: render::strings(values),
        warnings,
    })
}

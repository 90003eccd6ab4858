//! `sqdctl query`, `series` and `metrics`: cluster reads through the leader's fan-out. Values
//! are checked here (one line naming the bad one, exit 2) before the leader is called; a
//! partial answer is printed with a warning on stderr, or refused with `--deny-partial` (exit 1).

use std::time::Duration;

use clap::Args;
use tokio_stream::StreamExt;

use super::{Admin, Cli, CtlError};
use crate::proto;
use crate::services::shard_wire::{
    key_from_proto, partials_from_proto, report_from_proto, selector_to_proto,
};
use crate::stats::cluster::ShardReport;
use crate::stats::partial::Fields;
use crate::stats::query::{Matcher, Selector};
use crate::stats::render;
use crate::worker::offline::{QueryText, parse_duration_ms};

/// The query deadline when `--timeout` is not given.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// How much longer than the deadline sqdctl waits for the leader's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Metric name, e.g. cpu.
    metric: String,
    /// Label matcher: k=v, k!=v, k=~regex or k!~regex (anchored); repeat to AND them.
    #[arg(long = "where", value_name = "MATCHER")]
    matchers: Vec<String>,
    /// Start: now, a relative time (-1h, -15m), RFC 3339 or unix seconds.
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    from: String,
    /// End (exclusive), in the forms of --from.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    to: String,
    /// Width of each point's bucket: 1m, 30s, 500ms, 1h.
    #[arg(long, default_value = "1m")]
    step: String,
    /// Aggregation over each bucket: avg, min, max, sum, count, last or first.
    #[arg(long, default_value = "avg")]
    agg: String,
    /// Merge the series sharing these labels' values into one (repeatable); other labels drop.
    #[arg(long, value_name = "LABEL")]
    by: Vec<String>,
    /// One JSON object: {"partial", "shards", "series": [{"labels", "points"}]}.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV: time,value and one column per label.
    #[arg(long)]
    csv: bool,
    /// Fail (exit 1) instead of printing an answer some shard is missing from.
    #[arg(long)]
    deny_partial: bool,
}

#[derive(Debug, Args)]
pub struct SeriesArgs {
    /// Only series of this metric (default: every series).
    metric: Option<String>,
    /// Label matcher: k=v, k!=v, k=~regex or k!~regex; needs METRIC.
    #[arg(long = "where", value_name = "MATCHER")]
    matchers: Vec<String>,
    /// One JSON object: {"partial", "shards", "series": [{"metric", "labels"}]}.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) instead of printing an answer some shard is missing from.
    #[arg(long)]
    deny_partial: bool,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// One JSON object: {"partial", "shards", "metrics": [name]}.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) instead of printing an answer some shard is missing from.
    #[arg(long)]
    deny_partial: bool,
}

/// The query deadline of `--timeout` (default 10 s).
pub(super) fn deadline(cli: &Cli) -> Result<Duration, CtlError> {
    match &cli.timeout {
        None => Ok(DEFAULT_DEADLINE),
        Some(t) => parse_timeout(t),
    }
}

/// `--timeout`: 10s, 500ms, 2m, or bare seconds; positive.
pub(super) fn parse_timeout(t: &str) -> Result<Duration, CtlError> {
    match parse_duration_ms(t) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
        _ => Err(CtlError::Usage(format!(
            "--timeout {t:?}: expected a positive duration like 10s, 500ms or 2m"
        ))),
    }
}

fn timeout_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn matchers(texts: &[String]) -> Result<Vec<Matcher>, CtlError> {
    texts
        .iter()
        .map(|m| Matcher::parse(m).map_err(|e| CtlError::Usage(format!("--where: {e}"))))
        .collect()
}

fn warn_partial(report: &ShardReport) {
    if report.partial() {
        eprintln!(
            "sqdctl: warning: partial answer, {} of {} shard(s) answered: {}",
            report.answered.len(),
            report.asked.len(),
            report.describe_missing()
        );
    }
}

pub(super) async fn query(cli: &Cli, args: &QueryArgs) -> Result<(), CtlError> {
    let text = QueryText {
        metric: args.metric.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        step: args.step.clone(),
        agg: args.agg.clone(),
        matchers: args.matchers.clone(),
    };
    let q = text
        .check(crate::clock::unix_ms())
        .map_err(|e| CtlError::Usage(e.0))?;
    if let Some(bad) = args
        .by
        .iter()
        .find(|l| l.is_empty() || l.contains(['=', ' ', ',']))
    {
        return Err(CtlError::Usage(format!(
            "--by {bad:?}: expected one label name; repeat --by for several"
        )));
    }
    let deadline = deadline(cli)?;
    let mut admin = Admin::connect_for(cli, deadline + ANSWER_MARGIN).await?;
    let request = proto::QueryRequest {
        selector: Some(selector_to_proto(&q.selector)),
        from_ms: q.range.from_ms,
        to_ms: q.range.to_ms,
        step_ms: q.range.step_ms,
        by: args.by.clone(),
        timeout_ms: timeout_ms(deadline),
        deny_partial: args.deny_partial,
        fields: Fields::of(q.agg).bits(),
    };
    let range = q.range.clone().needing(Fields::of(q.agg));
    let mut stream = admin
        .client
        .query(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    let (mut series, mut report) = (Vec::new(), None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| admin.failed(s))?;
        for s in chunk.series {
            series.push(
                partials_from_proto(s, &range)
                    .map_err(|e| CtlError::Refused(format!("the leader's answer: {e}; retry")))?,
            );
        }
        report = chunk.report.map(report_from_proto).or(report);
    }
    let report = report.ok_or_else(|| {
        CtlError::Refused("the leader's answer ended without its shard report; retry".into())
    })?;
    if args.json {
        println!("{}", render::json(&series, q.agg, &report));
    } else if args.csv {
        print!("{}", render::csv(&series, q.agg));
    } else {
        print!("{}", render::table(&series, q.agg));
    }
    warn_partial(&report);
    Ok(())
}

fn report_json(report: &ShardReport) -> serde_json::Value {
    let full = render::json(&[], crate::stats::partial::Agg::Avg, report);
    full["shards"].clone()
}

pub(super) async fn series(cli: &Cli, args: &SeriesArgs) -> Result<(), CtlError> {
    let matchers = matchers(&args.matchers)?;
    let selector = match &args.metric {
        Some(metric) => Some(Selector {
            metric: metric.clone(),
            matchers,
        }),
        None if matchers.is_empty() => None,
        None => {
            return Err(CtlError::Usage(
                "--where needs a METRIC: sqdctl series METRIC --where k=v".into(),
            ));
        }
    };
    let deadline = deadline(cli)?;
    let mut admin = Admin::connect_for(cli, deadline + ANSWER_MARGIN).await?;
    let request = proto::SeriesRequest {
        selector: selector.as_ref().map(selector_to_proto),
        timeout_ms: timeout_ms(deadline),
        deny_partial: args.deny_partial,
    };
    let resp = admin
        .client
        .series(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    let report = report_from_proto(resp.report.unwrap_or_default());
    let keys: Vec<_> = resp.series.into_iter().map(key_from_proto).collect();
    if args.json {
        let series: Vec<serde_json::Value> = (keys.iter())
            .map(|k| {
                let labels: serde_json::Map<String, serde_json::Value> = (k.labels.iter())
                    .map(|(n, v)| (n.clone(), v.clone().into()))
                    .collect();
                serde_json::json!({"metric": k.metric, "labels": labels})
            })
            .collect();
        let shards = report_json(&report);
        let v =
            serde_json::json!({"partial": report.partial(), "shards": shards, "series": series});
        println!("{v}");
    } else if keys.is_empty() {
        println!("no series match");
    } else {
        for k in &keys {
            let labels: Vec<String> = k.labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
            println!("{}{{{}}}", k.metric, labels.join(", "));
        }
    }
    warn_partial(&report);
    Ok(())
}

pub(super) async fn metrics(cli: &Cli, args: &MetricsArgs) -> Result<(), CtlError> {
    let deadline = deadline(cli)?;
    let mut admin = Admin::connect_for(cli, deadline + ANSWER_MARGIN).await?;
    let request = proto::MetricsRequest {
        timeout_ms: timeout_ms(deadline),
        deny_partial: args.deny_partial,
    };
    let resp = admin
        .client
        .metrics(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    let report = report_from_proto(resp.report.unwrap_or_default());
    if args.json {
        let shards = report_json(&report);
        let v = serde_json::json!({"partial": report.partial(), "shards": shards, "metrics": resp.names});
        println!("{v}");
    } else {
        for name in &resp.names {
            println!("{name}");
        }
    }
    warn_partial(&report);
    Ok(())
}

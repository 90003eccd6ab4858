//! The parameters of the Prometheus HTTP API: form decoding (URL query and form-encoded POST
//! body, as Grafana sends them), `time`/`start`/`end`, `step`, `timeout`, `match[]`, each
//! parsed as Prometheus parses it, with Prometheus's error texts. Pure.

use std::time::Duration;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::Expr;

use super::error::ApiError;
use crate::stats::parse::time::rfc3339_ms;
use crate::stats::promql::{DEFAULT_LOOKBACK_MS, METRIC_NAME_LABEL};
use crate::stats::query::{Labels, MatchOp, Matcher, Selector, Span};

/// How long a query may take when the request does not say (the leader's `--timeout` default).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Prometheus's spelling of "no lower/upper bound" that its clients send for `start`/`end`.
const MIN_TIME: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME: &str = "292277025-08-18T07:12:54.999999999Z";

/// Every `name=value` pair of a request, URL query first, then the form body (Go's
/// `Request.ParseForm` order); repeated names keep every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes the URL query and, when given, an `application/x-www-form-urlencoded` body.
    pub(crate) fn decode(query: Option<&str>, form: Option<&[u8]>) -> Params {
        let mut pairs = Vec::new();
        let body = form.map(String::from_utf8_lossy);
        for text in query.into_iter().chain(body.as_deref()) {
            pairs.extend(text.split('&').filter(|p| !p.is_empty()).map(
                |p| match p.split_once('=') {
                    Some((k, v)) => (unescape(k), unescape(v)),
                    None => (unescape(p), String::new()),
                },
            ));
        }
        Params(pairs)
    }

    /// The first value of `name`, `None` when absent or empty (as Go's `FormValue`).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Form decoding: `+` is a space, `%XX` a byte; bytes that do not make UTF-8 are replaced.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A point in time: unix seconds (float) or RFC 3339, to ms; `None` for Prometheus's "no
/// bound" strings.
pub(crate) fn parse_time(name: &str, value: &str) -> Result<Option<i64>, ApiError> {
    if value == MIN_TIME || value == MAX_TIME {
        return Ok(None);
    }
    if let Ok(secs) = value.parse::<f64>() {
        let ms = (secs * 1000.0).round();
        // Beyond ±2^53 ms a float no longer holds whole milliseconds.
        if ms.is_finite() && ms.abs() < 9.0e15 {
            return Ok(Some(ms as i64));
        }
    } else if let Some(ms) = rfc3339_ms(value) {
        return Ok(Some(ms));
    }
    Err(ApiError::bad_param(
        name,
        format!("cannot parse {value:?} to a valid timestamp"),
    ))
}

/// A duration: float seconds or a Prometheus duration (`1m30s`), to ms (truncated, as
/// Prometheus keeps ms precision).
pub(crate) fn parse_duration_ms(name: &str, value: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_param(name, format!("cannot parse {value:?} to a valid duration"));
    if let Ok(secs) = value.parse::<f64>() {
        let ms = (secs * 1000.0).trunc();
        if !ms.is_finite() || ms.abs() >= 9.0e15 {
            return Err(bad());
        }
        return Ok(ms as i64);
    }
    let d = promql_parser::util::parse_duration(value).map_err(|_| bad())?;
    i64::try_from(d.as_millis()).map_err(|_| bad())
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    params.get(name).ok_or_else(|| {
        ApiError::bad_param(name, format!("cannot parse \"\" to a valid {}", kind(name)))
    })
}

fn kind(name: &str) -> &'static str {
    match name {
        "step" | "timeout" | "lookback_delta" => "duration",
        _ => "timestamp",
    }
}

/// `timeout`: positive, default [`DEFAULT_TIMEOUT`].
fn timeout(params: &Params) -> Result<Duration, ApiError> {
    let Some(v) = params.get("timeout") else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let ms = parse_duration_ms("timeout", v)?;
    if ms <= 0 {
        return Err(ApiError::bad_param(
            "timeout",
            format!("{v:?}: the timeout must be positive"),
        ));
    }
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

fn lookback(params: &Params) -> Result<i64, ApiError> {
    match params.get("lookback_delta") {
        None => Ok(DEFAULT_LOOKBACK_MS),
        Some(v) => match parse_duration_ms("lookback_delta", v)? {
            ms if ms > 0 => Ok(ms),
            _ => Err(ApiError::bad_param(
                "lookback_delta",
                format!("{v:?}: the lookback delta must be positive"),
            )),
        },
    }
}

fn query_text(params: &Params) -> Result<String, ApiError> {
    params
        .get("query")
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_param("query", "the query is empty: pass query=EXPR"))
}

/// `/api/v1/query`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InstantRequest {
    pub query: String,
    pub time_ms: i64,
    pub timeout: Duration,
    pub lookback_ms: i64,
}

impl InstantRequest {
    /// `time` defaults to `now_ms`.
    pub(crate) fn parse(params: &Params, now_ms: i64) -> Result<Self, ApiError> {
        let time_ms = match params.get("time") {
            None => now_ms,
            Some(v) => parse_time("time", v)?.ok_or_else(|| {
                ApiError::bad_param("time", format!("{v:?} is not a time a query can run at"))
            })?,
        };
        Ok(InstantRequest {
            query: query_text(params)?,
            time_ms,
            timeout: timeout(params)?,
            lookback_ms: lookback(params)?,
        })
    }
}

/// `/api/v1/query_range`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RangeRequest {
    pub query: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub timeout: Duration,
    pub lookback_ms: i64,
}

impl RangeRequest {
    /// Prometheus's checks in its order: start, end, end ≥ start, step, step > 0, points.
    pub(crate) fn parse(params: &Params) -> Result<Self, ApiError> {
        let bound = |name: &str| -> Result<i64, ApiError> {
            let v = required(params, name)?;
            parse_time(name, v)?.ok_or_else(|| {
                ApiError::bad_param(name, format!("{v:?} is not a time a query can run at"))
            })
        };
        let start_ms = bound("start")?;
        let end_ms = bound("end")?;
        if end_ms < start_ms {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        let step_ms = parse_duration_ms("step", required(params, "step")?)?;
        if step_ms <= 0 {
            return Err(ApiError::bad_data(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if (end_ms - start_ms) / step_ms > crate::stats::query::MAX_POINTS {
            return Err(ApiError::bad_data(
                crate::stats::query::QueryError::TooManyPoints.to_string(),
            ));
        }
        Ok(RangeRequest {
            query: query_text(params)?,
            start_ms,
            end_ms,
            step_ms,
            timeout: timeout(params)?,
            lookback_ms: lookback(params)?,
        })
    }
}

/// One `match[]` series selector: the metric name when it is one `=` value (a shard can then
/// look up that metric only), and every matcher, `__name__` ones included, to filter with.
#[derive(Debug, Clone)]
pub(crate) struct SeriesMatch {
    pub metric: Option<String>,
    pub matchers: Vec<Matcher>,
}

impl SeriesMatch {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = |why: String| ApiError::bad_param("match[]", why);
        let expr = promql_parser::parser::parse(text).map_err(bad)?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(bad(format!(
                "{text:?} is not a series selector: write metric{{label=\"value\"}}"
            )));
        };
        if vs.offset.is_some() || vs.at.is_some() || !vs.matchers.or_matchers.is_empty() {
            return Err(bad(format!(
                "{text:?}: offset, @ and `or` are not supported in match[]"
            )));
        }
        let mut metric = vs.name.clone();
        let mut matchers = Vec::new();
        for m in &vs.matchers.matchers {
            let op = match &m.op {
                PMatchOp::Equal => MatchOp::Eq,
                PMatchOp::NotEqual => MatchOp::Ne,
                PMatchOp::Re(_) => MatchOp::Re,
                PMatchOp::NotRe(_) => MatchOp::NotRe,
            };
            if m.name == METRIC_NAME_LABEL && op == MatchOp::Eq && metric.is_none() {
                metric = Some(m.value.clone());
            }
            matchers.push(Matcher::new(&m.name, op, &m.value).map_err(|e| bad(e.to_string()))?);
        }
        if let Some(name) = &vs.name {
            matchers.push(
                Matcher::new(METRIC_NAME_LABEL, MatchOp::Eq, name)
                    .map_err(|e| bad(e.to_string()))?,
            );
        }
        Ok(SeriesMatch { metric, matchers })
    }

    /// What to ask the shards: one metric's series, or every series when the name is open.
    pub(crate) fn selector(&self) -> Option<Selector> {
        self.metric.as_ref().map(|metric| Selector {
            metric: metric.clone(),
            matchers: self
                .matchers
                .iter()
                .filter(|m| m.name != METRIC_NAME_LABEL)
                .cloned()
                .collect(),
        })
    }

    /// Whether the series `metric{labels}` matches every matcher (`__name__` included).
    pub(crate) fn matches(&self, metric: &str, labels: &Labels) -> bool {
        let named = with_name(metric, labels);
        self.matchers.iter().all(|m| m.matches(&named))
    }
}

/// `labels` with `__name__` added, sorted by name.
pub(crate) fn with_name(metric: &str, labels: &Labels) -> Labels {
    let mut named = labels.clone();
    let at = named.partition_point(|(k, _)| k.as_str() < METRIC_NAME_LABEL);
    named.insert(at, (METRIC_NAME_LABEL.to_owned(), metric.to_owned()));
    named
}

/// `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`. `start`/`end` narrow
/// the answer to series with samples between them (either alone: an open end), as Prometheus
/// does from its chunks' bounds; metric names without `match[]` are not narrowed.
#[derive(Debug, Clone)]
pub(crate) struct SeriesRequest {
    pub matches: Vec<SeriesMatch>,
    pub span: Option<Span>,
    pub timeout: Duration,
}

impl SeriesRequest {
    /// `need_match`: `/api/v1/series` refuses a request without `match[]`, as Prometheus does.
    pub(crate) fn parse(params: &Params, need_match: bool) -> Result<Self, ApiError> {
        let mut bounds = [None, None];
        for (bound, name) in bounds.iter_mut().zip(["start", "end"]) {
            if let Some(v) = params.get(name) {
                *bound = parse_time(name, v)?;
            }
        }
        let span = match bounds {
            [None, None] => None,
            [from, to] => Some(Span {
                from_ms: from.unwrap_or(i64::MIN),
                to_ms: to.unwrap_or(i64::MAX),
            }),
        };
        let matches = params
            .all("match[]")
            .map(SeriesMatch::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if need_match && matches.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        Ok(SeriesRequest {
            matches,
            span,
            timeout: timeout(params)?,
        })
    }
}

/// A label name as Prometheus's classic rule allows it in `/api/v1/label/<name>/values`.
pub(crate) fn check_label_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_data(format!("invalid label name: {name:?}")))
    }
}

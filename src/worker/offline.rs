//! `sqd --mode worker query` and `compact`: one store's time-series shard, without the daemon.
//! The query opens the catalog read-only (SQLite's WAL lets it read a consistent snapshot
//! while a worker commits); compaction seals and applies retention now, on its own connection,
//! touching neither the files nor staging (a running worker keeps its staged files).
//!
//! Parsing the command line's values and rendering the answer are pure and unit-tested.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::config::ShardConfig;
use crate::stats::parse::time::rfc3339_ms;
use crate::stats::partial::Agg;
use crate::stats::query::{Matcher, Range, Selector, SeriesPartials};
use crate::stats::tsdb;
use crate::store::Maintained;
use crate::store::shard::Shard;

/// A bad value on the command line: one line naming it; `sqd` exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("store catalog {path}: {source}")]
    Catalog {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Shard(#[from] tsdb::TsdbError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What `sqd --mode worker query` was given, as text.
#[derive(Debug, Clone)]
pub struct QueryText {
    pub metric: String,
    pub from: String,
    pub to: String,
    pub step: String,
    pub agg: String,
    pub matchers: Vec<String>,
}

/// A checked query.
#[derive(Debug, Clone)]
pub struct ShardQuery {
    pub selector: Selector,
    pub range: Range,
    pub agg: Agg,
}

const TIME_HELP: &str =
    "expected now, a relative time like -15m, RFC 3339 (2026-01-02T03:04:05Z) or unix seconds";

/// Milliseconds of `-15m`, `30s`, `500ms`, `1h`, `2d`, `1w` (unsigned); a bare number is seconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(at);
    let n: i64 = n.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// A point in time of `--from`/`--to`, in ms, relative ones from `now_ms`.
pub fn parse_time_ms(s: &str, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if s == "now" {
        return Some(now_ms);
    }
    if let Some(ago) = s.strip_prefix('-').or_else(|| s.strip_prefix("now-")) {
        return now_ms.checked_sub(parse_duration_ms(ago)?);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().ok()?;
        let ms = secs * 1000.0;
        return (ms.is_finite() && ms.abs() < 9.0e15).then_some(ms.round() as i64);
    }
    rfc3339_ms(s)
}

impl QueryText {
    /// Checks every value; the first bad one is named in the error.
    pub fn check(&self, now_ms: i64) -> Result<ShardQuery, UsageError> {
        let bad = |flag: &str, v: &str, why: &str| UsageError(format!("{flag} {v:?}: {why}"));
        if self.metric.is_empty() || self.metric.contains(char::is_whitespace) {
            return Err(bad(
                "METRIC",
                &self.metric,
                "expected a metric name, e.g. cpu",
            ));
        }
        let from = parse_time_ms(&self.from, now_ms)
            .ok_or_else(|| bad("--from", &self.from, TIME_HELP))?;
        let to = parse_time_ms(&self.to, now_ms).ok_or_else(|| bad("--to", &self.to, TIME_HELP))?;
        let step = parse_duration_ms(&self.step).ok_or_else(|| {
            bad(
                "--step",
                &self.step,
                "expected a duration like 1m, 30s or 500ms",
            )
        })?;
        if step <= 0 {
            return Err(bad("--step", &self.step, "the step must be positive"));
        }
        let agg: Agg = self
            .agg
            .parse()
            .map_err(|e: crate::stats::partial::UnknownAgg| UsageError(format!("--agg: {e}")))?;
        let matchers = self
            .matchers
            .iter()
            .map(|m| Matcher::parse(m).map_err(|e| UsageError(format!("--where: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let range = Range::new(from, to, step)
            .map_err(|e| UsageError(format!("--from/--to/--step: {e}")))?;
        Ok(ShardQuery {
            selector: Selector {
                metric: self.metric.clone(),
                matchers,
            },
            range,
            agg,
        })
    }
}

fn catalog(store: &Path) -> Result<PathBuf, UsageError> {
    let path = store.join("catalog.sqlite");
    if path.is_file() {
        Ok(path)
    } else {
        Err(UsageError(format!(
            "--store {:?}: no catalog.sqlite there; point it at a worker's store directory",
            store.display().to_string()
        )))
    }
}

/// A read-only connection to the shard in `catalog`, or `None` when the store has no shard
/// tables (last opened by an sqd without samples: nothing to answer). WAL lets it read a
/// snapshot while the worker commits.
pub(crate) fn open_shard(catalog: &Path) -> Result<Option<Connection>, rusqlite::Error> {
    let conn = Connection::open_with_flags(catalog, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_shard: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'ts_series')",
        [],
        |r| r.get(0),
    )?;
    Ok(has_shard.then_some(conn))
}

/// Answers `q` from the shard of the store at `store`, opened read-only.
pub fn query(store: &Path, q: &ShardQuery) -> Result<Vec<SeriesPartials>, OfflineError> {
    let path = catalog(store)?;
    let wrap = |source| OfflineError::Catalog {
        path: path.clone(),
        source,
    };
    let mut out = Vec::new();
    if let Some(conn) = open_shard(&path).map_err(wrap)? {
        tsdb::query(&conn, &q.selector, &q.range, |s| {
            out.push(s);
            true
        })?;
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

/// What `compact` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub sealed_series: u64,
    pub sealed_samples: u64,
    pub dropped_blocks: u64,
}

/// Seals and applies retention now (what the worker does every minute).
pub fn compact(store: &Path, config: ShardConfig, now_ms: i64) -> Result<Compacted, OfflineError> {
    let path = catalog(store)?;
    let conn = Connection::open(&path).map_err(|source| OfflineError::Catalog {
        path: path.clone(),
        source,
    })?;
    let shard = Shard::open(&conn, &path, config).map_err(|source| OfflineError::Catalog {
        path: path.clone(),
        source,
    })?;
    let Maintained {
        sealed_series,
        sealed_samples,
        dropped_blocks,
    } = shard.maintain(now_ms)?;
    Ok(Compacted {
        sealed_series,
        sealed_samples,
        dropped_blocks,
    })
}

/// The answer as `sqdctl query --json` prints it, with a one-shard report naming the store.
pub fn render_json(answer: &[SeriesPartials], agg: Agg, store: &Path) -> Value {
    let id = store.display().to_string();
    let report = crate::stats::cluster::ShardReport {
        asked: vec![id.clone()],
        answered: vec![id],
        ..Default::default()
    };
    crate::stats::render::json(answer, agg, &report)
}

/// One row per bucket time, one column per series.
pub fn render_table(answer: &[SeriesPartials], agg: Agg) -> String {
    crate::stats::render::table(answer, agg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::partial::Partial;
    use serde_json::json;

    const NOW: i64 = 1_764_637_200_000; // 2025-12-02T01:00:00Z

    fn text(from: &str, to: &str, step: &str, agg: &str, wh: &[&str]) -> QueryText {
        QueryText {
            metric: "cpu".into(),
            from: from.into(),
            to: to.into(),
            step: step.into(),
            agg: agg.into(),
            matchers: wh.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn times_are_relative_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time_ms("now", NOW), Some(NOW));
        assert_eq!(parse_time_ms("-15m", NOW), Some(NOW - 900_000));
        assert_eq!(parse_time_ms("now-1h", NOW), Some(NOW - 3_600_000));
        assert_eq!(parse_time_ms("1764637200", NOW), Some(NOW));
        assert_eq!(parse_time_ms("1764637200.5", NOW), Some(NOW + 500));
        assert_eq!(parse_time_ms("2025-12-02T01:00:00Z", NOW), Some(NOW));
        for bad in ["", "yesterday", "-15x", "-", "1.2.3"] {
            assert_eq!(parse_time_ms(bad, NOW), None, "{bad}");
        }
        assert_eq!(parse_duration_ms("1m"), Some(60_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("10"), Some(10_000));
        assert_eq!(parse_duration_ms("m"), None);
    }

    #[test]
    fn every_bad_value_is_named() {
        let err = |t: QueryText| t.check(NOW).unwrap_err().to_string();
        assert!(err(text("x", "now", "1m", "avg", &[])).starts_with("--from \"x\""));
        assert!(err(text("-1h", "later", "1m", "avg", &[])).starts_with("--to"));
        assert!(err(text("-1h", "now", "0", "avg", &[])).contains("--step \"0\""));
        assert!(err(text("-1h", "now", "1m", "median", &[])).starts_with("--agg"));
        assert!(err(text("-1h", "now", "1m", "avg", &["host"])).starts_with("--where"));
        assert!(err(text("now", "-1h", "1m", "avg", &[])).contains("from"));
        let ok = text("-1h", "now", "1m", "max", &["host=~web-.*"])
            .check(NOW)
            .unwrap();
        assert_eq!(
            (ok.range.from_ms, ok.range.to_ms, ok.agg),
            (NOW - 3_600_000, NOW, Agg::Max)
        );
    }

    #[test]
    fn answers_render_as_json_with_a_one_shard_report() {
        let p = Partial::of(NOW + 1, 1.0);
        let answer = vec![SeriesPartials {
            labels: vec![("client".into(), "a".into())],
            buckets: [(NOW, p)].into_iter().collect(),
        }];
        assert_eq!(
            render_json(&answer, Agg::Avg, Path::new("/s")),
            json!({"partial": false,
                   "shards": {"asked": ["/s"], "answered": ["/s"], "failed": {}, "timed_out": []},
                   "series": [{"labels": {"client": "a"}, "points": [[NOW / 1000, 1.0]]}]})
        );
    }
}

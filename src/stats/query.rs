//! One shard's side of a query: which series match (metric + label matchers), which step
//! bucket a sample falls in, and the per series, per bucket [`Partial`]s a shard answers with.
//! Pure: the storage hands in series and samples, the caller merges and renders.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

use super::partial::{Fields, Partial};

/// Most buckets one query may ask per series (Prometheus's cap, with its reason).
pub const MAX_POINTS: i64 = 11_000;

/// Label pairs sorted by name (the metric name is not among them).
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// One label matcher; a missing label matches as the empty value (Prometheus's rule).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// Anchored, as Prometheus anchors `=~`.
    re: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("bad matcher {0:?}: write NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")]
    BadMatcher(String),
    #[error("bad regular expression in {matcher:?}: {reason}")]
    BadRegex { matcher: String, reason: String },
    #[error("the range is empty: from ({from_ms} ms) must be before to ({to_ms} ms)")]
    EmptyRange { from_ms: i64, to_ms: i64 },
    #[error("the step must be positive (got {0} ms)")]
    BadStep(i64),
    #[error(
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    )]
    TooManyPoints,
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, QueryError> {
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(Regex::new(&format!("^(?:{value})$")).map_err(
                |e| QueryError::BadRegex {
                    matcher: cut(&format!("{name}{}{value}", op.as_str())),
                    reason: e.to_string().lines().last().unwrap_or_default().to_owned(),
                },
            )?),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Parses `k=v`, `k!=v`, `k=~re`, `k!~re` (the form of `--where`).
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let bad = || QueryError::BadMatcher(cut(text));
        let at = text.find(['=', '!']).ok_or_else(bad)?;
        let (name, rest) = text.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Eq, v)
        } else {
            return Err(bad());
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        Matcher::new(name, op, value)
    }

    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let have = labels
            .iter()
            .find(|(k, _)| *k == self.name)
            .map_or("", |(_, v)| v.as_str());
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => have == self.value,
            (MatchOp::Ne, _) => have != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(have),
            (MatchOp::NotRe, Some(re)) => !re.is_match(have),
            (_, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// The times a series must have samples in to be listed: `[from_ms, to_ms]`, both ends
/// included (Prometheus's `start`/`end` of the series API). A shard answers from its blocks'
/// time bounds, as Prometheus does from its chunks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A validated range query: `[from, to)` cut into buckets of `step`, each reported at its start.
#[derive(Debug, Clone)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    /// The partial fields the asker reads (every one unless narrowed with [`Range::needing`]).
    pub fields: Fields,
}

impl Range {
    pub fn new(from_ms: i64, to_ms: i64, step_ms: i64) -> Result<Self, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadStep(step_ms));
        }
        if from_ms >= to_ms {
            return Err(QueryError::EmptyRange { from_ms, to_ms });
        }
        // A span wider than i64 (a peer's or a user's extreme times) is too many points too.
        let span = to_ms
            .checked_sub(from_ms)
            .ok_or(QueryError::TooManyPoints)?;
        let buckets = span / step_ms + i64::from(span % step_ms != 0);
        if buckets > MAX_POINTS {
            return Err(QueryError::TooManyPoints);
        }
        Ok(Range {
            from_ms,
            to_ms,
            step_ms,
            fields: Fields::ALL,
        })
    }

    /// The same range, answered with only `fields` of each partial.
    pub fn needing(mut self, fields: Fields) -> Self {
        self.fields = fields;
        self
    }

    /// The start of the bucket holding `ts`, or `None` outside `[from, to)`.
    pub fn bucket(&self, ts: i64) -> Option<i64> {
        if ts < self.from_ms || ts >= self.to_ms {
            return None;
        }
        Some(self.from_ms + (ts - self.from_ms) / self.step_ms * self.step_ms)
    }
}

/// What a query selects: one metric and its matchers.
#[derive(Debug, Clone)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn matches(&self, metric: &str, labels: &[(String, String)]) -> bool {
        metric == self.metric && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The partials of one series: bucket start → aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPartials {
    pub labels: Labels,
    pub buckets: BTreeMap<i64, Partial>,
}

/// Folds samples into per-bucket partials of one series.
pub fn fold(
    labels: Labels,
    range: &Range,
    samples: impl IntoIterator<Item = (i64, f64)>,
) -> Option<SeriesPartials> {
    let mut buckets: BTreeMap<i64, Partial> = BTreeMap::new();
    for (ts, v) in samples {
        if let Some(b) = range.bucket(ts) {
            buckets
                .entry(b)
                .and_modify(|p| p.push(ts, v))
                .or_insert_with(|| Partial::of(ts, v));
        }
    }
    (!buckets.is_empty()).then_some(SeriesPartials { labels, buckets })
}

/// Per bucket partials of one series built from time-ordered input: consecutive parts of one
/// bucket merge in place and the map is built once at the end (a 24 h query adds millions of
/// samples; a map lookup per sample dominated). Out-of-order input is merged correctly too.
#[derive(Debug, Default)]
pub struct Buckets {
    runs: Vec<(i64, Partial)>,
    sorted: bool,
}

impl Buckets {
    pub fn new() -> Self {
        Buckets {
            runs: Vec::new(),
            sorted: true,
        }
    }

    pub fn add(&mut self, bucket: i64, part: Partial) {
        match self.runs.last_mut() {
            Some((b, p)) if *b == bucket => p.merge(&part),
            Some((b, _)) if *b > bucket => {
                self.sorted = false;
                self.runs.push((bucket, part));
            }
            _ => self.runs.push((bucket, part)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn finish(mut self) -> BTreeMap<i64, Partial> {
        if !self.sorted {
            // Stable: parts of one bucket keep their arrival order.
            self.runs.sort_by_key(|(b, _)| *b);
            let mut merged: Vec<(i64, Partial)> = Vec::with_capacity(self.runs.len());
            for (b, p) in self.runs {
                match merged.last_mut() {
                    Some((mb, mp)) if *mb == b => mp.merge(&p),
                    _ => merged.push((b, p)),
                }
            }
            self.runs = merged;
        }
        self.runs.into_iter().collect()
    }
}

/// Merges partial answers (from shards, in chunks) by series labels.
#[derive(Debug, Default)]
pub struct Merger {
    series: BTreeMap<Labels, BTreeMap<i64, Partial>>,
}

impl Merger {
    pub fn add(&mut self, part: SeriesPartials) {
        let into = self.series.entry(part.labels).or_default();
        if into.is_empty() {
            // The usual case: a series that lives on one shard arrives once, whole.
            *into = part.buckets;
            return;
        }
        for (b, p) in part.buckets {
            into.entry(b).and_modify(|m| m.merge(&p)).or_insert(p);
        }
    }

    pub fn finish(self) -> Vec<SeriesPartials> {
        self.series
            .into_iter()
            .map(|(labels, buckets)| SeriesPartials { labels, buckets })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stats::partial::Agg;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    proptest! {
        #[test]
        fn buckets_in_any_order_equal_the_map(
            parts in proptest::collection::vec((0i64..20, -5i64..5, 0i64..1000), 0..200),
        ) {
            let mut map: BTreeMap<i64, Partial> = BTreeMap::new();
            let mut acc = Buckets::new();
            for &(b, v, ts) in &parts {
                let p = Partial::of(ts, v as f64);
                map.entry(b).and_modify(|m| m.merge(&p)).or_insert(p);
                acc.add(b, p);
            }
            // Integer values: sums are exact in any order.
            prop_assert_eq!(acc.finish(), map);
        }
    }

    #[test]
    fn matchers_parse_and_match() {
        let l = labels(&[("client", "web-1"), ("host", "a")]);
        assert!(Matcher::parse("client=web-1").is_ok_and(|m| m.matches(&l)));
        assert!(Matcher::parse("client!=web-2").is_ok_and(|m| m.matches(&l)));
        assert!(Matcher::parse("client=~web-.*").is_ok_and(|m| m.matches(&l)));
        assert!(
            Matcher::parse("client=~web").is_ok_and(|m| !m.matches(&l)),
            "anchored"
        );
        assert!(Matcher::parse("client!~db-.*").is_ok_and(|m| m.matches(&l)));
        assert!(
            Matcher::parse("zone=").is_ok_and(|m| m.matches(&l)),
            "missing = empty"
        );
        for bad in ["client", "=x", "a b=c", "x=~(", ""] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_reject_what_cannot_be_answered() {
        assert_eq!(Range::new(0, 10, 0).err(), Some(QueryError::BadStep(0)));
        assert!(matches!(
            Range::new(10, 10, 1),
            Err(QueryError::EmptyRange { .. })
        ));
        assert_eq!(
            Range::new(0, 11_001, 1).err(),
            Some(QueryError::TooManyPoints)
        );
        assert_eq!(
            Range::new(i64::MIN, i64::MAX, 1).err(),
            Some(QueryError::TooManyPoints)
        );
        let r = Range::new(100, 200, 30).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            [99, 100, 129, 130, 199, 200].map(|t| r.bucket(t)),
            [None, Some(100), Some(100), Some(130), Some(190), None]
        );
    }

    proptest! {
        /// Splitting a series' samples across shards and merging their partials (in any
        /// chunking) answers what one shard holding everything answers.
        #[test]
        fn shards_merge_to_the_single_shard_answer(
            samples in proptest::collection::vec((0i64..1_000, -1e3f64..1e3), 1..200),
            owner in proptest::collection::vec(0usize..3, 200),
            step in 1i64..300,
        ) {
            let range = Range::new(0, 1_000, step).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let l = labels(&[("client", "c")]);
            let whole = fold(l.clone(), &range, samples.iter().copied());
            let mut merger = Merger::default();
            for shard in 0..3 {
                let mine = samples.iter().enumerate().filter(|(i, _)| owner[*i] == shard).map(|(_, s)| *s);
                if let Some(p) = fold(l.clone(), &range, mine) {
                    // Chunked: one message per bucket.
                    for (b, part) in p.buckets {
                        merger.add(SeriesPartials { labels: l.clone(), buckets: BTreeMap::from([(b, part)]) });
                    }
                }
            }
            let merged = merger.finish();
            let whole = whole.map(|w| vec![w]).unwrap_or_default();
            prop_assert_eq!(merged.len(), whole.len());
            for (m, w) in merged.iter().zip(&whole) {
                prop_assert_eq!(m.buckets.keys().collect::<Vec<_>>(), w.buckets.keys().collect::<Vec<_>>());
                for (a, b) in m.buckets.values().zip(w.buckets.values()) {
                    for agg in Agg::ALL {
                        let (x, y) = (a.value(agg), b.value(agg));
                        prop_assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0), "{} {} {}", agg, x, y);
                    }
                }
            }
        }
    }
}

//! Stats parsers: the bytes of one committed file in, samples and per-line errors out.
//!
//! Pure code: no I/O, no clock (a sample without a timestamp takes `ParseOptions::mtime_ms`),
//! no storage. [`parse`] streams samples into a [`SampleSink`]; each series is lent as a
//! [`SeriesRef`] borrowing reused buffers, so a file of millions of samples allocates per
//! line at most, never per sample.
//!
//! Rules shared by every format (each format's own rules are in its module doc):
//! - **Lines**: split on `\n`; a trailing `\r` is dropped (CRLF); a UTF-8 BOM at the start
//!   of the file is skipped; blank lines are skipped. `ParseReport::lines` counts every line.
//! - **Per-line atomicity**: a line is either fully turned into samples or rejected as a
//!   whole with one counted [`ErrorKind`]; nothing fails the whole file and nothing panics.
//! - **Long lines**: a line longer than `ParseOptions::max_line_bytes` (default 1 MiB) is
//!   rejected unread ([`ErrorKind::LineTooLong`]): a bound on the work and the label size
//!   one line can cause.
//! - **Last line without `\n`**: sqd commits only complete files (D3), so a missing final
//!   newline means a producer stopped mid-write, and a cut number (`12` of `125`) would be
//!   silently wrong. Influx, Prometheus and CSV reject it ([`ErrorKind::UnterminatedLastLine`],
//!   as the Prometheus text format requires the final `\n`); JSON lines parses it, because a
//!   cut JSON object never parses. `ParseOptions::strict_last_line = false` parses it always.
//! - **Labels**: every series gets `client=<ParseOptions::client>`; label names and metric
//!   names are sanitised by [`names::sanitize`]; a data label `client` becomes
//!   `exported_client`; labels with an empty value are dropped (Prometheus treats them as
//!   absent); two labels with the same sanitised name reject the line
//!   ([`ErrorKind::DuplicateLabel`]); labels are sorted by name.
//! - **Non-UTF-8 label values** are kept with U+FFFD replacements and counted in
//!   `ParseReport::lossy_utf8`, once per label value (JSON lines: once per line) — the
//!   sample is more useful than the rejection; non-UTF-8 names are sanitised instead.
//! - **Numbers**: values become f64 (integers beyond 2^53 round); a decimal literal that
//!   overflows f64 (`1e309`) or an integer that overflows its type is
//!   [`ErrorKind::NumberOutOfRange`]; `1e308` is a value like any other. NaN and ±Inf are
//!   kept where the format can spell them (Prometheus, CSV), and are errors elsewhere.
//! - **Duplicates**: samples with equal series and timestamp are all emitted; the store decides.
//! - **Counters**: `ParseReport::lossy_utf8` and `skipped_values` count accepted lines only.
//! - **Order**: samples come in line order; within a line, in field/column order (JSON:
//!   sorted key order, as serde_json's map keeps them).

mod csv;
mod detect;
mod influx;
mod jsonl;
pub mod names;
mod prom;
pub mod time;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use detect::detect;
pub use names::{NameKind, is_valid, sanitize};
pub use time::Precision;

/// Which parser a client's files go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Chosen per file by [`detect`]: extension, then first non-comment line.
    #[default]
    Auto,
    Influx,
    Prom,
    Jsonl,
    Csv,
    /// Files only: no samples.
    None,
}

/// A name that is not one of the spellings a setting takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}: expected {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: &'static str,
}

impl UnknownName {
    fn new(what: &'static str, name: &str, expected: &'static str) -> Self {
        UnknownName {
            what,
            name: name.chars().take(40).collect(),
            expected,
        }
    }
}

impl FromStr for Format {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Ok(match s {
            "auto" => Self::Auto,
            "influx" => Self::Influx,
            "prom" => Self::Prom,
            "jsonl" => Self::Jsonl,
            "csv" => Self::Csv,
            "none" => Self::None,
            _ => {
                return Err(UnknownName::new(
                    "format",
                    s,
                    "auto|influx|prom|jsonl|csv|none",
                ));
            }
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Influx => "influx",
            Self::Prom => "prom",
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::None => "none",
        })
    }
}

/// Prometheus metric type, from `# TYPE` lines (queries use it to allow `rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricKind {
    /// The Prometheus spelling, for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }
}

impl FromStr for MetricKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        [
            Self::Counter,
            Self::Gauge,
            Self::Histogram,
            Self::Summary,
            Self::Untyped,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            UnknownName::new("metric type", s, "counter|gauge|histogram|summary|untyped")
        })
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one file is parsed.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Value of the `client` label on every series (the caller's client name; non-empty).
    pub client: String,
    /// Timestamp (ms) of samples that carry none: the file's mtime.
    pub mtime_ms: i64,
    /// Unit of line-protocol timestamps.
    pub precision: Precision,
    /// JSON/CSV time field; default: the first of `ts`, `time`, `timestamp` (CSV: also `epoch`).
    pub time_field: Option<String>,
    /// JSON: only these string fields become labels (others are ignored); CSV: these
    /// columns are labels instead of values. `None`: every JSON string is a label.
    pub label_fields: Option<Vec<String>>,
    /// Base name of the file (opaque bytes): format detection and the CSV metric prefix.
    pub file_name: Vec<u8>,
    /// Longer lines are rejected unread.
    pub max_line_bytes: usize,
    /// Reject a last line without `\n` in influx/prom/csv (see the module doc).
    pub strict_last_line: bool,
}

impl ParseOptions {
    pub fn new(client: impl Into<String>, mtime_ms: i64) -> Self {
        Self {
            client: client.into(),
            mtime_ms,
            precision: Precision::Ns,
            time_field: None,
            label_fields: None,
            file_name: Vec::new(),
            max_line_bytes: 1 << 20,
            strict_last_line: true,
        }
    }
}

/// One series, lent to the sink for the duration of a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesRef<'a> {
    pub metric: &'a str,
    /// Sorted by name, `client` included, names unique.
    pub labels: &'a [(&'a str, &'a str)],
}

/// Receives what a file holds.
pub trait SampleSink {
    fn sample(&mut self, series: &SeriesRef<'_>, ts_ms: i64, value: f64);
    /// A `# TYPE` line: `metric` is sanitised like sample names.
    fn metric_type(&mut self, _metric: &str, _kind: MetricKind) {}
}

/// Why one line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ErrorKind {
    #[error("line longer than the configured limit")]
    LineTooLong,
    #[error("last line has no newline (possibly truncated)")]
    UnterminatedLastLine,
    #[error("missing or malformed metric name")]
    BadName,
    #[error("malformed label or tag")]
    BadLabel,
    #[error("invalid escape sequence")]
    BadEscape,
    #[error("unterminated quoted string")]
    UnterminatedString,
    #[error("missing value or field set")]
    MissingValue,
    #[error("value is not a number")]
    BadNumber,
    #[error("number out of range")]
    NumberOutOfRange,
    #[error("malformed timestamp")]
    BadTimestamp,
    #[error("timestamp out of range")]
    TimestampOutOfRange,
    #[error("unexpected text after the sample")]
    TrailingGarbage,
    #[error("two labels with the same name")]
    DuplicateLabel,
    #[error("malformed or unknown # TYPE line")]
    BadType,
    #[error("not valid JSON")]
    InvalidJson,
    #[error("JSON line is not an object")]
    NotAnObject,
    #[error("wrong number of CSV columns")]
    ColumnCount,
    #[error("CSV header missing (first line is numeric)")]
    NoHeader,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 18] = [
        Self::LineTooLong,
        Self::UnterminatedLastLine,
        Self::BadName,
        Self::BadLabel,
        Self::BadEscape,
        Self::UnterminatedString,
        Self::MissingValue,
        Self::BadNumber,
        Self::NumberOutOfRange,
        Self::BadTimestamp,
        Self::TimestampOutOfRange,
        Self::TrailingGarbage,
        Self::DuplicateLabel,
        Self::BadType,
        Self::InvalidJson,
        Self::NotAnObject,
        Self::ColumnCount,
        Self::NoHeader,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// A stable snake_case name: a label value for error counters (`reason="bad_number"`).
    pub fn code(self) -> &'static str {
        match self {
            Self::LineTooLong => "line_too_long",
            Self::UnterminatedLastLine => "unterminated_last_line",
            Self::BadName => "bad_name",
            Self::BadLabel => "bad_label",
            Self::BadEscape => "bad_escape",
            Self::UnterminatedString => "unterminated_string",
            Self::MissingValue => "missing_value",
            Self::BadNumber => "bad_number",
            Self::NumberOutOfRange => "number_out_of_range",
            Self::BadTimestamp => "bad_timestamp",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::TrailingGarbage => "trailing_garbage",
            Self::DuplicateLabel => "duplicate_label",
            Self::BadType => "bad_type",
            Self::InvalidJson => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::ColumnCount => "column_count",
            Self::NoHeader => "no_header",
        }
    }
}

/// A rejected line: 1-based line number and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: u64,
    pub reason: ErrorKind,
}

/// What parsing one file did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParseReport {
    /// The format actually used (`Auto` resolved).
    pub format: Format,
    pub lines: u64,
    pub samples: u64,
    /// Rejected lines.
    pub errors: u64,
    /// Rejected lines per reason, indexed by `ErrorKind as usize`.
    pub errors_by_kind: [u64; ErrorKind::COUNT],
    pub first_error: Option<LineError>,
    pub last_error: Option<LineError>,
    /// Label values whose invalid UTF-8 was replaced by U+FFFD (accepted lines only).
    pub lossy_utf8: u64,
    /// Values that are not samples by rule (accepted lines only): line-protocol strings,
    /// JSON arrays and nulls, empty CSV cells.
    pub skipped_values: u64,
}

impl ParseReport {
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors_by_kind[kind as usize]
    }

    fn error(&mut self, line: u64, reason: ErrorKind) {
        self.errors += 1;
        self.errors_by_kind[reason as usize] += 1;
        let e = LineError { line, reason };
        self.first_error.get_or_insert(e);
        self.last_error = Some(e);
    }
}

/// Parses one file. `Format::Auto` is resolved with [`detect`] on `opts.file_name` and the
/// start of `bytes`.
///
/// ```
/// use sqd_stats_parse::parse::{CollectSink, Format, ParseOptions, parse};
///
/// let mut opts = ParseOptions::new("web", 0);
/// opts.file_name = b"app.jsonl".to_vec();
/// let line = br#"{"ts": 1764633600, "host": "web-1", "cpu": 12.5, "mem": 40.1}"#;
/// let mut sink = CollectSink::default();
/// let report = parse(Format::Auto, line, &opts, &mut sink);
/// assert_eq!((report.format, report.samples, report.errors), (Format::Jsonl, 2, 0));
/// let cpu = &sink.samples[0];
/// assert_eq!((cpu.metric.as_str(), cpu.ts_ms, cpu.value), ("cpu", 1_764_633_600_000, 12.5));
/// assert_eq!(cpu.labels, [("client".into(), "web".into()), ("host".into(), "web-1".into())]);
/// ```
pub fn parse<S: SampleSink + ?Sized>(
    format: Format,
    bytes: &[u8],
    opts: &ParseOptions,
    sink: &mut S,
) -> ParseReport {
    let format = match format {
        Format::Auto => detect(&opts.file_name, &bytes[..bytes.len().min(64 * 1024)]),
        f => f,
    };
    let mut cx = Ctx {
        opts,
        report: ParseReport {
            format,
            ..ParseReport::default()
        },
        series: SeriesBuf::default(),
    };
    match format {
        Format::Influx => influx::parse(bytes, &mut cx, sink),
        Format::Prom => prom::parse(bytes, &mut cx, sink),
        Format::Jsonl => jsonl::parse(bytes, &mut cx, sink),
        Format::Csv => csv::parse(bytes, &mut cx, sink),
        Format::Auto | Format::None => {}
    }
    cx.report
}

/// State of one [`parse`] call, shared by the format modules.
pub(crate) struct Ctx<'o> {
    pub opts: &'o ParseOptions,
    pub report: ParseReport,
    pub series: SeriesBuf,
}

impl Ctx<'_> {
    /// Calls `f(line_no, line)` for each non-blank line, applying the shared line rules
    /// (module doc); `f`'s error rejects that line.
    pub fn for_each_line(
        &mut self,
        bytes: &[u8],
        parse_unterminated: bool,
        mut f: impl FnMut(&mut Self, u64, &[u8]) -> Result<(), ErrorKind>,
    ) {
        let mut rest = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let mut line_no = 0u64;
        while !rest.is_empty() {
            line_no += 1;
            let (mut line, terminated) = match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let l = &rest[..i];
                    rest = &rest[i + 1..];
                    (l, true)
                }
                None => (std::mem::take(&mut rest), false),
            };
            self.report.lines += 1;
            if line.len() > self.opts.max_line_bytes {
                self.report.error(line_no, ErrorKind::LineTooLong);
                continue;
            }
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if !terminated && !parse_unterminated && self.opts.strict_last_line {
                self.report.error(line_no, ErrorKind::UnterminatedLastLine);
                continue;
            }
            if let Err(e) = f(self, line_no, line) {
                self.report.error(line_no, e);
            }
        }
    }

    /// Books a line that was accepted: its samples and its per-line counters (which a
    /// rejected line does not add to the report).
    pub fn accept_line(&mut self, samples: u64) {
        self.report.samples += samples;
        self.report.lossy_utf8 += self.series.lossy;
        self.report.skipped_values += self.series.skipped;
    }
}

/// The labels of one line, kept in one reused `String` plus index ranges.
#[derive(Default)]
pub(crate) struct SeriesBuf {
    text: String,
    labels: Vec<(Range<usize>, Range<usize>)>,
    /// Reused allocation for the `&str` pairs lent to the sink (see [`recycle`]).
    refs: Vec<(&'static str, &'static str)>,
    /// Label values of this line with invalid UTF-8 replaced.
    pub lossy: u64,
    /// Values of this line that are not samples by rule.
    pub skipped: u64,
    /// Metric name being built.
    pub metric: String,
}

/// Empties a vector of borrowed pairs and gives its allocation a new lifetime. The
/// `filter_map` never yields, and std collects such an adapter in place, so this reuses the
/// buffer without `unsafe`.
#[expect(
    clippy::unnecessary_filter_map,
    reason = "the map changes the lifetime; filter cannot"
)]
fn recycle<'b>(v: Vec<(&str, &str)>) -> Vec<(&'b str, &'b str)> {
    v.into_iter().filter_map(|_| None).collect()
}

impl SeriesBuf {
    pub fn clear(&mut self) {
        self.text.clear();
        self.labels.clear();
        self.lossy = 0;
        self.skipped = 0;
    }

    /// Adds a label from a raw name and a value already decoded to bytes (lossy UTF-8,
    /// counted in `self.lossy`).
    pub fn push_label(&mut self, raw_name: &[u8], value: &[u8]) {
        if value.is_empty() {
            return;
        }
        let n0 = self.text.len();
        names::sanitize(raw_name, NameKind::Label, &mut self.text);
        if &self.text[n0..] == names::RESERVED_LABEL {
            self.text.truncate(n0);
            self.text.push_str(names::EXPORTED_RESERVED_LABEL);
        }
        let v0 = self.text.len();
        self.lossy += u64::from(names::push_lossy(value, &mut self.text));
        self.labels.push((n0..v0, v0..self.text.len()));
    }

    /// Sorts the labels, adds `client`, rejects duplicate names, then lends the pairs to `f`.
    pub fn with_refs<R>(
        &mut self,
        client: &str,
        f: impl FnOnce(&[(&str, &str)], &mut String) -> R,
    ) -> Result<R, ErrorKind> {
        let mut refs = recycle(std::mem::take(&mut self.refs));
        refs.extend(
            self.labels
                .iter()
                .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()])),
        );
        refs.push((names::RESERVED_LABEL, client));
        refs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let dup = refs.windows(2).any(|w| w[0].0 == w[1].0);
        let out = if dup {
            Err(ErrorKind::DuplicateLabel)
        } else {
            Ok(f(&refs, &mut self.metric))
        };
        self.refs = recycle(refs);
        out
    }
}

/// A sink that keeps everything, owned: tests and small callers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CollectSink {
    pub samples: Vec<OwnedSample>,
    pub types: Vec<(String, MetricKind)>,
}

/// One sample, owned (see [`CollectSink`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedSample {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub ts_ms: i64,
    pub value: f64,
}

impl OwnedSample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl SampleSink for CollectSink {
    fn sample(&mut self, series: &SeriesRef<'_>, ts_ms: i64, value: f64) {
        self.samples.push(OwnedSample {
            metric: series.metric.to_owned(),
            labels: series
                .labels
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            ts_ms,
            value,
        });
    }
    fn metric_type(&mut self, metric: &str, kind: MetricKind) {
        self.types.push((metric.to_owned(), kind));
    }
}

/// Counts only: benchmarks and callers that just validate.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountSink {
    pub samples: u64,
    /// Label pairs seen (so that a benchmark reads what it is lent).
    pub label_pairs: u64,
}

impl SampleSink for CountSink {
    fn sample(&mut self, series: &SeriesRef<'_>, _ts_ms: i64, _value: f64) {
        self.samples += 1;
        self.label_pairs += series.labels.len() as u64;
    }
}

#[cfg(test)]
mod tests;

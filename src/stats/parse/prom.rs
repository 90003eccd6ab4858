//! Prometheus text exposition format (what node_exporter serves):
//! `name[{label="value",...}] value [timestamp_ms]`.
//!
//! As implemented:
//! - `# TYPE name kind` calls [`SampleSink::metric_type`] with the sanitised name and
//!   `counter|gauge|histogram|summary|untyped` (`unknown`, the OpenMetrics spelling, is
//!   untyped); any other kind or shape is [`ErrorKind::BadType`]. The type is recorded for
//!   the name on the TYPE line only: a histogram's `_bucket`/`_sum`/`_count` series are
//!   samples like any other, and the query layer maps the suffixes. `# HELP` and other
//!   `#` lines are skipped.
//! - Label values: `\\`, `\"`, `\n` escapes; any other escape is [`ErrorKind::BadEscape`];
//!   a value without its closing quote is [`ErrorKind::UnterminatedString`]; a trailing
//!   comma before `}` is accepted; spaces around `=`, `,` and `}` are accepted.
//! - Values: decimal floats plus `NaN`, `+Inf`, `-Inf` (any case, as Go's `ParseFloat`),
//!   all kept as values; a finite literal that overflows (`1e309`) is
//!   [`ErrorKind::NumberOutOfRange`].
//! - Timestamp: optional integer milliseconds; none → the file's mtime; anything after it
//!   (e.g. OpenMetrics exemplars) is [`ErrorKind::TrailingGarbage`].
//! - Not supported (counted as errors): quoted metric names inside braces (Prometheus 3
//!   UTF-8 names) → [`ErrorKind::BadName`].

use super::names::{self, NameKind};
use super::{Ctx, ErrorKind, MetricKind, SampleSink, SeriesRef};

pub(crate) fn parse<S: SampleSink + ?Sized>(bytes: &[u8], cx: &mut Ctx<'_>, sink: &mut S) {
    let mut scratch = Vec::new();
    cx.for_each_line(bytes, false, |cx, _, line| {
        parse_line(line, cx, &mut scratch, sink)
    });
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_spaces(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(|&b| is_space(b)) {
        i += 1;
    }
    i
}

/// End of the token starting at `i`: the first byte in `stops` or whitespace.
fn token_end(line: &[u8], mut i: usize, stops: &[u8]) -> usize {
    while i < line.len() && !is_space(line[i]) && !stops.contains(&line[i]) {
        i += 1;
    }
    i
}

fn parse_line<S: SampleSink + ?Sized>(
    line: &[u8],
    cx: &mut Ctx<'_>,
    scratch: &mut Vec<u8>,
    sink: &mut S,
) -> Result<(), ErrorKind> {
    let start = skip_spaces(line, 0);
    if line.get(start) == Some(&b'#') {
        return comment(&line[start..], cx, sink);
    }
    cx.series.clear();
    let name_end = token_end(line, start, b"{");
    if name_end == start {
        return Err(ErrorKind::BadName);
    }
    let name = &line[start..name_end];
    let mut i = name_end;
    if line.get(i) == Some(&b'{') {
        i = labels(line, i + 1, cx, scratch)?;
    }
    i = skip_spaces(line, i);
    let vend = token_end(line, i, b"");
    if vend == i {
        return Err(ErrorKind::MissingValue);
    }
    let value = parse_value(&line[i..vend])?;
    i = skip_spaces(line, vend);
    let ts = if i < line.len() {
        let tend = token_end(line, i, b"");
        let ts = std::str::from_utf8(&line[i..tend])
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or(ErrorKind::BadTimestamp)?;
        if skip_spaces(line, tend) != line.len() {
            return Err(ErrorKind::TrailingGarbage);
        }
        ts
    } else {
        cx.opts.mtime_ms
    };
    cx.series.with_refs(&cx.opts.client, |labels, metric| {
        metric.clear();
        names::sanitize(name, NameKind::Metric, metric);
        sink.sample(&SeriesRef { metric, labels }, ts, value);
    })?;
    cx.accept_line(1);
    Ok(())
}

/// `# TYPE` lines reach the sink; every other comment is skipped.
fn comment<S: SampleSink + ?Sized>(
    line: &[u8],
    cx: &mut Ctx<'_>,
    sink: &mut S,
) -> Result<(), ErrorKind> {
    let mut words = line[1..].split(|&b| is_space(b)).filter(|w| !w.is_empty());
    if words.next() != Some(b"TYPE") {
        return Ok(());
    }
    let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next()) else {
        return Err(ErrorKind::BadType);
    };
    let kind = match kind {
        b"counter" => MetricKind::Counter,
        b"gauge" => MetricKind::Gauge,
        b"histogram" => MetricKind::Histogram,
        b"summary" => MetricKind::Summary,
        b"untyped" | b"unknown" => MetricKind::Untyped,
        _ => return Err(ErrorKind::BadType),
    };
    let metric = &mut cx.series.metric;
    metric.clear();
    names::sanitize(name, NameKind::Metric, metric);
    sink.metric_type(metric, kind);
    Ok(())
}

/// Parses labels after `{`; returns the index after `}`.
fn labels(
    line: &[u8],
    mut i: usize,
    cx: &mut Ctx<'_>,
    scratch: &mut Vec<u8>,
) -> Result<usize, ErrorKind> {
    loop {
        i = skip_spaces(line, i);
        if line.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        let nend = token_end(line, i, b"=,}\"");
        if nend == i {
            return Err(if line.get(i) == Some(&b'"') {
                ErrorKind::BadName
            } else {
                ErrorKind::BadLabel
            });
        }
        let name = &line[i..nend];
        i = skip_spaces(line, nend);
        if line.get(i) != Some(&b'=') {
            return Err(ErrorKind::BadLabel);
        }
        i = skip_spaces(line, i + 1);
        if line.get(i) != Some(&b'"') {
            return Err(ErrorKind::BadLabel);
        }
        let (vend, value) = label_value(line, i + 1, scratch)?;
        cx.series.push_label(name, value);
        i = skip_spaces(line, vend);
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => return Err(ErrorKind::BadLabel),
        }
    }
}

/// Reads a label value whose content starts at `i`; returns the index after the closing
/// quote and the unescaped value (borrowed from `line` when it had no escapes).
fn label_value<'a>(
    line: &'a [u8],
    i: usize,
    scratch: &'a mut Vec<u8>,
) -> Result<(usize, &'a [u8]), ErrorKind> {
    let rest = &line[i..];
    let Some(q) = memchr::memchr2(b'"', b'\\', rest) else {
        return Err(ErrorKind::UnterminatedString);
    };
    if rest[q] == b'"' {
        return Ok((i + q + 1, &rest[..q]));
    }
    scratch.clear();
    let mut j = 0;
    while j < rest.len() {
        match rest[j] {
            b'"' => return Ok((i + j + 1, scratch)),
            b'\\' => {
                scratch.push(match rest.get(j + 1) {
                    Some(b'\\') => b'\\',
                    Some(b'"') => b'"',
                    Some(b'n') => b'\n',
                    Some(_) => return Err(ErrorKind::BadEscape),
                    None => return Err(ErrorKind::UnterminatedString),
                });
                j += 2;
            }
            b => {
                scratch.push(b);
                j += 1;
            }
        }
    }
    Err(ErrorKind::UnterminatedString)
}

fn parse_value(raw: &[u8]) -> Result<f64, ErrorKind> {
    let text = std::str::from_utf8(raw).map_err(|_| ErrorKind::BadNumber)?;
    let v: f64 = text.parse().map_err(|_| ErrorKind::BadNumber)?;
    // Rust, like Go, reads `1e309` as infinity; only an explicit `Inf` may be infinite.
    if v.is_infinite() && !text.bytes().any(|b| b == b'i' || b == b'I') {
        return Err(ErrorKind::NumberOutOfRange);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::{CollectSink, ErrorKind, Format, MetricKind, ParseOptions, parse};

    #[test]
    fn samples_types_escapes() {
        let input = concat!(
            "# HELP x_total Some help.\n",
            "# TYPE x_total counter\n",
            "x_total{path=\"C:\\\\dir\",msg=\"say \\\"hi\\\"\\nbye\",} 3 1764633600000\n",
            "  up 1\n",
            "nan_v NaN\n",
            "inf_v{a = \"b\" } +Inf\n",
            "ninf_v -Inf\n",
            "big 1e308\n",
            "# TYPE y bogus\n",
            "over 1e309\n",
            "bad{a=\"\\q\"} 1\n",
            "open{a=\"x} 1\n",
            "nolabel{=\"x\"} 1\n",
            "novalue\n",
            "word abc\n",
            "ts 1 1.5\n",
            "trail 1 2 3\n",
            "{\"quoted\"} 1\n",
            "dup{a=\"1\",a=\"2\"} 1\n",
        );
        let mut s = CollectSink::default();
        let r = parse(
            Format::Prom,
            input.as_bytes(),
            &ParseOptions::new("c", 7),
            &mut s,
        );
        assert_eq!(r.samples, 6);
        assert_eq!(s.types, [("x_total".to_string(), MetricKind::Counter)]);
        let x = &s.samples[0];
        assert_eq!(x.label("path"), Some("C:\\dir"));
        assert_eq!(x.label("msg"), Some("say \"hi\"\nbye"));
        assert_eq!((x.ts_ms, x.value), (1_764_633_600_000, 3.0));
        assert_eq!(
            (s.samples[1].metric.as_str(), s.samples[1].ts_ms),
            ("up", 7)
        );
        assert!(s.samples[2].value.is_nan());
        assert_eq!(s.samples[3].value, f64::INFINITY);
        assert_eq!(s.samples[4].value, f64::NEG_INFINITY);
        assert_eq!(s.samples[5].value, 1e308);
        use ErrorKind::*;
        let want = [
            (BadType, 1),
            (NumberOutOfRange, 1),
            (BadEscape, 1),
            (UnterminatedString, 1),
            (BadLabel, 1),
            (MissingValue, 1),
            (BadNumber, 1),
            (BadTimestamp, 1),
            (TrailingGarbage, 1),
            (BadName, 1),
            (DuplicateLabel, 1),
        ];
        for (k, n) in want {
            assert_eq!(r.errors_of(k), n, "{k:?}");
        }
        assert_eq!(r.errors, 11);
    }
}

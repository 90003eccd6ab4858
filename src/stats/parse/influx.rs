//! InfluxDB line protocol, as Telegraf's `file` output writes it:
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`.
//!
//! As implemented:
//! - Each numeric field is one sample of the series `<measurement>_<field>` (the joined raw
//!   name is sanitised once), labelled with the tags and `client`.
//! - Field values: floats (`1.5`, `-2e3`; only digits, sign, `.`, `e`), integers `3i`
//!   (i64), unsigned `3u` (u64), booleans `t T true True TRUE` → 1 and `f F false False
//!   FALSE` → 0 (kept: Telegraf reports states such as `up` as booleans, and alerts want
//!   them). String fields `"..."` (with `\"` and `\\` escapes) are skipped and counted in
//!   `skipped_values`. The format has no NaN or infinity: `nan`/`inf` are
//!   [`ErrorKind::BadNumber`]; `1e309` and overflowing `i`/`u` integers are
//!   [`ErrorKind::NumberOutOfRange`].
//! - Escapes in measurement, tag keys, tag values and field keys: `\,` `\ ` `\=` stand for
//!   the character; any other backslash is literal.
//! - Timestamp: an optional integer in `ParseOptions::precision` units (default ns); none →
//!   the file's mtime. Text after it is [`ErrorKind::TrailingGarbage`].
//! - Lines starting with `#` are comments. Runs of spaces between sections are accepted.
//! - Errors, whole line rejected: empty measurement ([`ErrorKind::BadName`]), a tag without
//!   `=` or with an empty key ([`ErrorKind::BadLabel`]), no field set
//!   ([`ErrorKind::MissingValue`]), an unterminated string ([`ErrorKind::UnterminatedString`]),
//!   bad or out-of-range timestamps, duplicate tag names after sanitising.

use super::names::{self, NameKind};
use super::time::with_precision;
use super::{Ctx, ErrorKind, SampleSink};
use std::ops::Range;

/// Buffers reused across lines.
#[derive(Default)]
struct State {
    measurement: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
    /// Unescaped field keys, back to back; `fields` indexes into it.
    field_keys: Vec<u8>,
    fields: Vec<(Range<usize>, f64)>,
    raw_metric: Vec<u8>,
}

pub(crate) fn parse<S: SampleSink + ?Sized>(bytes: &[u8], cx: &mut Ctx<'_>, sink: &mut S) {
    let mut st = State::default();
    cx.for_each_line(bytes, false, |cx, _, line| {
        parse_line(line, cx, &mut st, sink)
    });
}

fn is_escapable(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'=')
}

/// Index of the first unescaped byte of `stops` at or after `i` (or `line.len()`), and
/// whether an escape was seen.
fn scan(line: &[u8], mut i: usize, stops: &[u8]) -> (usize, bool) {
    let mut escaped = false;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' && line.get(i + 1).is_some_and(|&n| is_escapable(n)) {
            escaped = true;
            i += 2;
        } else if stops.contains(&b) {
            return (i, escaped);
        } else {
            i += 1;
        }
    }
    (line.len(), escaped)
}

/// `raw` with escapes removed, borrowed when there were none.
fn unescape<'a>(raw: &'a [u8], escaped: bool, buf: &'a mut Vec<u8>) -> &'a [u8] {
    if !escaped {
        return raw;
    }
    buf.clear();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1).is_some_and(|&n| is_escapable(n)) {
            i += 1;
        }
        buf.push(raw[i]);
        i += 1;
    }
    buf
}

fn skip_spaces(line: &[u8], mut i: usize) -> usize {
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

fn parse_line<S: SampleSink + ?Sized>(
    line: &[u8],
    cx: &mut Ctx<'_>,
    st: &mut State,
    sink: &mut S,
) -> Result<(), ErrorKind> {
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    if line.get(start) == Some(&b'#') {
        return Ok(());
    }
    cx.series.clear();
    let (end, esc) = scan(line, start, b", ");
    if end == start {
        return Err(ErrorKind::BadName);
    }
    let m = unescape(&line[start..end], esc, &mut st.key);
    st.measurement.clear();
    st.measurement.extend_from_slice(m);
    let mut i = end;
    while line.get(i) == Some(&b',') {
        i = parse_tag(line, i + 1, cx, st)?;
    }
    i = skip_spaces(line, i);
    i = parse_fields(line, i, cx, st)?;
    i = skip_spaces(line, i);
    let ts = if i < line.len() {
        let (end, _) = scan(line, i, b" ");
        let raw = std::str::from_utf8(&line[i..end]).map_err(|_| ErrorKind::BadTimestamp)?;
        let v: i64 = raw.parse().map_err(|_| ErrorKind::BadTimestamp)?;
        if skip_spaces(line, end) != line.len() {
            return Err(ErrorKind::TrailingGarbage);
        }
        with_precision(v, cx.opts.precision).ok_or(ErrorKind::TimestampOutOfRange)?
    } else {
        cx.opts.mtime_ms
    };
    emit(cx, st, ts, sink)
}

fn emit<S: SampleSink + ?Sized>(
    cx: &mut Ctx<'_>,
    st: &mut State,
    ts: i64,
    sink: &mut S,
) -> Result<(), ErrorKind> {
    let State {
        measurement,
        field_keys,
        fields,
        raw_metric,
        ..
    } = st;
    let n = cx.series.with_refs(&cx.opts.client, |labels, metric| {
        for (key, value) in fields.iter() {
            raw_metric.clear();
            raw_metric.extend_from_slice(measurement);
            raw_metric.push(b'_');
            raw_metric.extend_from_slice(&field_keys[key.clone()]);
            metric.clear();
            names::sanitize(raw_metric, NameKind::Metric, metric);
            sink.sample(&super::SeriesRef { metric, labels }, ts, *value);
        }
        fields.len() as u64
    })?;
    cx.accept_line(n);
    Ok(())
}

/// Parses `key=value` from `i`; returns the index after the value.
fn parse_tag(line: &[u8], i: usize, cx: &mut Ctx<'_>, st: &mut State) -> Result<usize, ErrorKind> {
    let (kend, kesc) = scan(line, i, b"=, ");
    if kend == i || line.get(kend) != Some(&b'=') {
        return Err(ErrorKind::BadLabel);
    }
    let (vend, vesc) = scan(line, kend + 1, b", ");
    let key = unescape(&line[i..kend], kesc, &mut st.key);
    let value = unescape(&line[kend + 1..vend], vesc, &mut st.value);
    cx.series.push_label(key, value);
    Ok(vend)
}

/// Parses the field set from `i` into `st.fields`; returns the index after it.
fn parse_fields(
    line: &[u8],
    mut i: usize,
    cx: &mut Ctx<'_>,
    st: &mut State,
) -> Result<usize, ErrorKind> {
    st.fields.clear();
    st.field_keys.clear();
    loop {
        let (kend, kesc) = scan(line, i, b"=, ");
        if kend == i || line.get(kend) != Some(&b'=') {
            return Err(ErrorKind::MissingValue);
        }
        let vstart = kend + 1;
        let (vend, value) = if line.get(vstart) == Some(&b'"') {
            (string_end(line, vstart + 1)?, None)
        } else {
            let (vend, _) = scan(line, vstart, b", ");
            (vend, Some(field_value(&line[vstart..vend])?))
        };
        match value {
            Some(v) => {
                let k0 = st.field_keys.len();
                let key = unescape(&line[i..kend], kesc, &mut st.key);
                st.field_keys.extend_from_slice(key);
                st.fields.push((k0..st.field_keys.len(), v));
            }
            None => cx.series.skipped += 1,
        }
        if line.get(vend) == Some(&b',') {
            i = vend + 1;
        } else {
            return Ok(vend);
        }
    }
}

/// Index just after the closing quote of a string field whose content starts at `i`.
fn string_end(line: &[u8], mut i: usize) -> Result<usize, ErrorKind> {
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(ErrorKind::UnterminatedString)
}

fn field_value(raw: &[u8]) -> Result<f64, ErrorKind> {
    let text = std::str::from_utf8(raw).map_err(|_| ErrorKind::BadNumber)?;
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        "" => return Err(ErrorKind::MissingValue),
        _ => {}
    }
    if let Some(int) = text.strip_suffix('i') {
        return parse_int::<i64>(int).map(|v| v as f64);
    }
    if let Some(uint) = text.strip_suffix('u') {
        return parse_int::<u64>(uint).map(|v| v as f64);
    }
    parse_float(text)
}

fn parse_int<T: std::str::FromStr<Err = std::num::ParseIntError>>(s: &str) -> Result<T, ErrorKind> {
    s.parse::<T>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            ErrorKind::NumberOutOfRange
        }
        _ => ErrorKind::BadNumber,
    })
}

/// A decimal float; NaN and infinity spellings are refused, overflow is out of range.
pub(crate) fn parse_float(text: &str) -> Result<f64, ErrorKind> {
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return Err(ErrorKind::BadNumber);
    }
    let v: f64 = text.parse().map_err(|_| ErrorKind::BadNumber)?;
    if v.is_infinite() {
        Err(ErrorKind::NumberOutOfRange)
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CollectSink, ErrorKind, Format, ParseOptions, parse};

    fn run(input: &str) -> (CollectSink, super::super::ParseReport) {
        let mut sink = CollectSink::default();
        let opts = ParseOptions::new("c1", 42);
        let r = parse(Format::Influx, input.as_bytes(), &opts, &mut sink);
        (sink, r)
    }

    #[test]
    fn basic_line() {
        let (s, r) = run(
            "cpu,host=web-1,cpu=cpu0 usage_idle=95.5,usage_user=3i,up=true 1764633600000000000\n",
        );
        assert_eq!((r.samples, r.errors), (3, 0));
        let m: Vec<_> = s
            .samples
            .iter()
            .map(|x| (x.metric.as_str(), x.value))
            .collect();
        assert_eq!(
            m,
            [
                ("cpu_usage_idle", 95.5),
                ("cpu_usage_user", 3.0),
                ("cpu_up", 1.0)
            ]
        );
        assert_eq!(s.samples[0].ts_ms, 1_764_633_600_000);
        let names: Vec<_> = s.samples[0]
            .labels
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["client", "cpu", "host"]);
    }

    #[test]
    fn escapes_strings_and_errors() {
        let (s, r) = run(concat!(
            "disk\\ io,path=/var\\,x,dev\\=1=sda\\ 1 msg=\"a \\\" b, c=d\",v=1u\n",
            "m f=nan\n",
            "m f=1e400\n",
            "m f=99999999999999999999i\n",
            "m\n",
            "m f=\"open\n",
            "m f=1 12x\n",
            "m f=1 1 extra\n",
            "# comment\n",
            ",t=1 f=1\n",
            "m,t f=1\n",
        ));
        assert_eq!(r.samples, 1);
        let x = &s.samples[0];
        assert_eq!(x.metric, "disk_io_v");
        assert_eq!(x.label("path"), Some("/var,x"));
        assert_eq!(x.label("dev_1"), Some("sda 1"));
        assert_eq!(x.ts_ms, 42);
        assert_eq!(r.skipped_values, 1);
        use ErrorKind::*;
        for (k, n) in [
            (BadNumber, 1),
            (NumberOutOfRange, 2),
            (MissingValue, 1),
            (UnterminatedString, 1),
        ] {
            assert_eq!(r.errors_of(k), n, "{k:?}");
        }
        for (k, n) in [
            (BadTimestamp, 1),
            (TrailingGarbage, 1),
            (BadName, 1),
            (BadLabel, 1),
        ] {
            assert_eq!(r.errors_of(k), n, "{k:?}");
        }
        assert_eq!(r.errors, 9);
    }

    #[test]
    fn rejected_lines_add_no_counters() {
        let opts = ParseOptions::new("c1", 42);
        let run = |b: &[u8]| parse(Format::Influx, b, &opts, &mut CollectSink::default());
        let r = run(b"m,t=\xff s=\"x\",v=1 bad\n");
        assert_eq!(
            (r.samples, r.errors, r.skipped_values, r.lossy_utf8),
            (0, 1, 0, 0)
        );
        let r = run(b"m,t=a\xffb s=\"x\",v=1 5\n");
        assert_eq!(
            (r.samples, r.errors, r.skipped_values, r.lossy_utf8),
            (1, 0, 1, 1)
        );
    }
}

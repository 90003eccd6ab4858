//! JSON lines: one object per line, e.g. the quickstart's
//! `{"ts": 1764633600, "host": "web-1", "cpu": 12.5, "mem": 40.1}` → `cpu{host="web-1"}` and
//! `mem{host="web-1"}` at 1764633600000 ms.
//!
//! As implemented:
//! - Time: the top-level field `ParseOptions::time_field`, else the first present of `ts`,
//!   `time`, `timestamp`. A number is read by magnitude (seconds / ms / µs / ns, see
//!   [`super::time`]); a string as RFC 3339, else as a number written in a string. Any other
//!   type or text is [`ErrorKind::BadTimestamp`]; absent → the file's mtime.
//! - Numbers become samples, metric name = field name; booleans become 1/0 (as in line
//!   protocol); nested objects are flattened with `_` (`{"net": {"rx": 1}}` → `net_rx`), to
//!   the depth serde_json allows (128); arrays and nulls are skipped (`skipped_values`).
//!   Two fields that flatten to the same name give two samples; the store decides.
//! - Strings become labels, named like numbers (flattened, sanitised); with
//!   `ParseOptions::label_fields` set, only the listed (flattened, raw) names become labels
//!   and other strings are ignored.
//! - A line that is not JSON is [`ErrorKind::InvalidJson`] (a number that overflows f64 is
//!   [`ErrorKind::NumberOutOfRange`]); valid JSON that is not an object is
//!   [`ErrorKind::NotAnObject`]. Non-UTF-8 bytes are replaced by U+FFFD before parsing and
//!   counted in `lossy_utf8`. The last line is parsed even without `\n`: a cut object never
//!   parses.

use super::names::{self, NameKind};
use super::time::{float_by_magnitude, int_by_magnitude, rfc3339_ms, text_by_magnitude};
use super::{Ctx, ErrorKind, SampleSink, SeriesRef};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::ops::Range;

const DEFAULT_TIME_FIELDS: [&str; 3] = ["ts", "time", "timestamp"];

#[derive(Default)]
struct State {
    /// Flattened raw names, back to back; `nums` indexes into it.
    names: Vec<u8>,
    nums: Vec<(Range<usize>, f64)>,
    path: Vec<u8>,
}

pub(crate) fn parse<S: SampleSink + ?Sized>(bytes: &[u8], cx: &mut Ctx<'_>, sink: &mut S) {
    let mut st = State::default();
    cx.for_each_line(bytes, true, |cx, _, line| {
        parse_line(line, cx, &mut st, sink)
    });
}

fn parse_line<S: SampleSink + ?Sized>(
    line: &[u8],
    cx: &mut Ctx<'_>,
    st: &mut State,
    sink: &mut S,
) -> Result<(), ErrorKind> {
    let text = String::from_utf8_lossy(line);
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        // serde_json has no error code for this; its message is stable and documented.
        if e.to_string().starts_with("number out of range") {
            ErrorKind::NumberOutOfRange
        } else {
            ErrorKind::InvalidJson
        }
    })?;
    let Value::Object(map) = value else {
        return Err(ErrorKind::NotAnObject);
    };
    let time_key = match &cx.opts.time_field {
        Some(f) => map.contains_key(f.as_str()).then_some(f.as_str()),
        None => DEFAULT_TIME_FIELDS
            .into_iter()
            .find(|k| map.contains_key(*k)),
    };
    let ts = match time_key.and_then(|k| map.get(k)) {
        None => cx.opts.mtime_ms,
        Some(v) => timestamp(v)?,
    };
    cx.series.clear();
    cx.series.lossy = u64::from(matches!(text, Cow::Owned(_)));
    st.names.clear();
    st.nums.clear();
    st.path.clear();
    walk(&map, time_key, cx, st);
    let State {
        names: raw_names,
        nums,
        ..
    } = st;
    let n = cx.series.with_refs(&cx.opts.client, |labels, metric| {
        for (name, v) in nums.iter() {
            metric.clear();
            names::sanitize(&raw_names[name.clone()], NameKind::Metric, metric);
            sink.sample(&SeriesRef { metric, labels }, ts, *v);
        }
        nums.len() as u64
    })?;
    cx.accept_line(n);
    Ok(())
}

fn timestamp(v: &Value) -> Result<i64, ErrorKind> {
    match v {
        Value::Number(n) => number_time(n).ok_or(ErrorKind::TimestampOutOfRange),
        Value::String(s) => rfc3339_ms(s)
            .or_else(|| text_by_magnitude(s.trim()))
            .ok_or(ErrorKind::BadTimestamp),
        _ => Err(ErrorKind::BadTimestamp),
    }
}

fn number_time(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        int_by_magnitude(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        int_by_magnitude(i128::from(u))
    } else {
        // serde_json prints the shortest decimal that reads back (ryu): exact for
        // `1764633600.123`, where flooring the f64 product could lose a millisecond.
        text_by_magnitude(&n.to_string()).or_else(|| float_by_magnitude(n.as_f64()?))
    }
}

/// Collects the numbers of `map` into `st.nums` and its strings into the labels, with
/// names flattened under `st.path`. `skip` is the time field (top level only).
fn walk(map: &Map<String, Value>, skip: Option<&str>, cx: &mut Ctx<'_>, st: &mut State) {
    for (key, value) in map {
        if skip == Some(key.as_str()) {
            continue;
        }
        let outer = st.path.len();
        if outer > 0 {
            st.path.push(b'_');
        }
        st.path.extend_from_slice(key.as_bytes());
        let num = match value {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::String(s) => {
                let wanted = match &cx.opts.label_fields {
                    None => true,
                    Some(list) => list.iter().any(|f| f.as_bytes() == st.path.as_slice()),
                };
                if wanted {
                    cx.series.push_label(&st.path, s.as_bytes());
                }
                None
            }
            Value::Object(inner) => {
                walk(inner, None, cx, st);
                None
            }
            Value::Null | Value::Array(_) => {
                cx.series.skipped += 1;
                None
            }
        };
        if let Some(v) = num {
            let n0 = st.names.len();
            st.names.extend_from_slice(&st.path);
            st.nums.push((n0..st.names.len(), v));
        }
        st.path.truncate(outer);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CollectSink, ErrorKind, Format, ParseOptions, parse};

    #[test]
    fn quickstart_and_rules() {
        let input = concat!(
            "{\"ts\": 1764633600, \"host\": \"web-1\", \"cpu\": 12.5, \"mem\": 40.1}\n",
            "{\"time\": \"2025-12-02T00:00:01.5Z\", \"net\": {\"rx\": 1, \"if\": \"eth0\"}, \"up\": true, \"x\": null, \"client\": \"z\"}\n",
            "[1,2]\n",
            "{\"cpu\": 1e999}\n",
            "{\"cpu\": 1,\n",
            "{\"ts\": [1], \"cpu\": 1}\n",
            "{\"ts\": 1e300, \"cpu\": 1}\n",
            "{\"a\": 1, \"A\": {\"b\": 2}, \"h\": \"x\", \"h\": \"y\"}"
        );
        let mut s = CollectSink::default();
        let r = parse(
            Format::Jsonl,
            input.as_bytes(),
            &ParseOptions::new("c", 9),
            &mut s,
        );
        let got: Vec<_> = s
            .samples
            .iter()
            .map(|x| (x.metric.as_str(), x.ts_ms, x.value))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu", 1_764_633_600_000, 12.5),
                ("mem", 1_764_633_600_000, 40.1),
                ("net_rx", 1_764_633_601_500, 1.0),
                ("up", 1_764_633_601_500, 1.0),
                ("A_b", 9, 2.0),
                ("a", 9, 1.0),
            ]
        );
        assert_eq!(
            s.samples[0].labels,
            [
                ("client".into(), "c".into()),
                ("host".into(), "web-1".into())
            ]
        );
        assert_eq!(s.samples[2].label("net_if"), Some("eth0"));
        assert_eq!(s.samples[2].label("exported_client"), Some("z"));
        assert_eq!(s.samples[4].label("h"), Some("y"));
        assert_eq!(r.skipped_values, 1);
        use ErrorKind::*;
        for (k, n) in [
            (NotAnObject, 1),
            (NumberOutOfRange, 1),
            (InvalidJson, 1),
            (BadTimestamp, 1),
            (TimestampOutOfRange, 1),
        ] {
            assert_eq!(r.errors_of(k), n, "{k:?}");
        }
        assert_eq!(r.errors, 5);
    }

    #[test]
    fn label_fields_and_time_field() {
        let mut o = ParseOptions::new("c", 0);
        o.label_fields = Some(vec!["host".into()]);
        o.time_field = Some("at".into());
        let mut s = CollectSink::default();
        let line =
            b"{\"at\": 1764633600123, \"ts\": 5, \"host\": \"h\", \"req\": \"r-1\", \"v\": 2}\n";
        let r = parse(Format::Jsonl, line, &o, &mut s);
        assert_eq!(r.samples, 2);
        assert_eq!(s.samples[0].metric, "ts");
        assert_eq!(s.samples[1].ts_ms, 1_764_633_600_123);
        assert_eq!(s.samples[1].labels.len(), 2);
    }

    #[test]
    fn huge_integers_become_floats() {
        let mut s = CollectSink::default();
        let line = b"{\"a\": 123456789012345678901234567890, \"b\": -9223372036854775809, \"c\": 18446744073709551615}\n";
        let r = parse(Format::Jsonl, line, &ParseOptions::new("c", 0), &mut s);
        assert_eq!((r.samples, r.errors), (3, 0));
        let v: Vec<f64> = s.samples.iter().map(|x| x.value).collect();
        assert_eq!(
            v,
            [
                1.234_567_890_123_456_8e29,
                -(2f64.powi(63)),
                1.844_674_407_370_955_2e19
            ]
        );
    }
}

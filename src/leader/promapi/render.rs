//! The JSON bodies of the Prometheus HTTP API, written as Prometheus writes them: sample values
//! as strings (`"NaN"`, `"+Inf"`, shortest round-trip decimals, never an exponent), timestamps
//! as float seconds with at most millisecond digits, labels in name order. Pure.

use std::fmt::Write as _;

use super::error::ApiError;
use crate::stats::promql::{Matrix, Series};
use crate::stats::query::Labels;

/// A sample value as Prometheus's `strconv.FormatFloat(v, 'f', -1, 64)` writes it.
#[cfg(test)]
pub(crate) fn value_text(v: f64) -> String {
    let mut out = String::new();
    push_value(&mut out, v);
    out
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Rust's `Display` is the shortest round-trip decimal without an exponent, as 'f', -1.
        let _ = write!(out, "{v}");
    }
}

/// A timestamp in ms as Prometheus writes it: seconds, then `.` and the ms digits without
/// trailing zeros, if any.
fn push_ts(out: &mut String, t_ms: i64) {
    let (sign, abs) = if t_ms < 0 {
        ("-", t_ms.unsigned_abs())
    } else {
        ("", t_ms.unsigned_abs())
    };
    let (secs, ms) = (abs / 1000, abs % 1000);
    let _ = write!(out, "{sign}{secs}");
    match ms {
        0 => {}
        _ if ms % 100 == 0 => {
            let _ = write!(out, ".{}", ms / 100);
        }
        _ if ms % 10 == 0 => {
            let _ = write!(out, ".{:02}", ms / 10);
        }
        _ => {
            let _ = write!(out, ".{ms:03}");
        }
    }
}

fn push_str(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

fn push_point(out: &mut String, t_ms: i64, v: f64) {
    out.push('[');
    push_ts(out, t_ms);
    // A value's text needs no JSON escaping.
    out.push_str(",\"");
    push_value(out, v);
    out.push_str("\"]");
}

fn push_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        push_str(out, v);
    }
    out.push('}');
}

/// `{"resultType":"matrix","result":[{"metric":{…},"values":[[t,"v"],…]},…]}`.
pub(crate) fn matrix(m: &Matrix) -> String {
    let mut out = String::from(r#"{"resultType":"matrix","result":["#);
    for (i, s) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        push_labels(&mut out, &s.labels);
        out.push_str(r#","values":["#);
        for (j, (t, v)) in s.points.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_point(&mut out, *t, *v);
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// `{"resultType":"vector","result":[{"metric":{…},"value":[t,"v"]},…]}`: each series' point
/// at the query time (an instant query evaluates one step).
pub(crate) fn vector(m: &Matrix) -> String {
    let mut out = String::from(r#"{"resultType":"vector","result":["#);
    let points = m
        .iter()
        .filter_map(|s: &Series| s.points.last().map(|p| (&s.labels, *p)));
    for (i, (labels, (t, v))) in points.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        push_labels(&mut out, labels);
        out.push_str(r#","value":"#);
        push_point(&mut out, t, v);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// `{"resultType":"scalar","result":[t,"v"]}`.
pub(crate) fn scalar(t_ms: i64, v: f64) -> String {
    let mut out = String::from(r#"{"resultType":"scalar","result":"#);
    push_point(&mut out, t_ms, v);
    out.push('}');
    out
}

/// A JSON array of strings (label names, label values).
pub(crate) fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, s);
    }
    out.push(']');
    out
}

/// A JSON array of label sets (the series endpoint).
pub(crate) fn label_sets<'a>(sets: impl IntoIterator<Item = &'a Labels>) -> String {
    let mut out = String::from("[");
    for (i, labels) in sets.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_labels(&mut out, labels);
    }
    out.push(']');
    out
}

fn push_warnings(out: &mut String, warnings: &[String]) {
    if !warnings.is_empty() {
        out.push_str(r#","warnings":"#);
        out.push_str(&strings(warnings.iter().map(String::as_str)));
    }
}

/// `{"status":"success","data":DATA[,"warnings":[…]]}`; `data` is JSON already.
pub(crate) fn success(data: &str, warnings: &[String]) -> String {
    let mut out = String::from(r#"{"status":"success","data":"#);
    out.push_str(data);
    push_warnings(&mut out, warnings);
    out.push('}');
    out
}

/// `{"status":"error","errorType":…,"error":…[,"warnings":[…]]}`.
pub(crate) fn error(e: &ApiError, warnings: &[String]) -> String {
    let mut out = String::from(r#"{"status":"error","errorType":"#);
    push_str(&mut out, e.kind.as_str());
    out.push_str(r#","error":"#);
    push_str(&mut out, &e.message);
    push_warnings(&mut out, warnings);
    out.push('}');
    out
}

//! A query's answer as sqdctl and `sqd --mode worker query` print it: one JSON object (the
//! series in Prometheus's matrix shape plus the shard report), CSV, or a human table of time ×
//! series. Pure; keys of the JSON are only ever added.

use serde_json::{Map, Value, json};

use super::cluster::ShardReport;
use super::partial::Agg;
use super::query::SeriesPartials;

/// Unix seconds of a bucket start: an integer when whole.
fn unix_s(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn report_json(r: &ShardReport) -> Value {
    let failed: Map<String, Value> = (r.failed.iter())
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({"asked": r.asked, "answered": r.answered, "failed": failed, "timed_out": r.timed_out})
}

/// `{"partial": bool, "shards": {"asked", "answered", "failed", "timed_out"}, "series":
/// [{"labels": {name: value}, "points": [[unix_s, value]]}]}`; a NaN value is null.
pub fn json(answer: &[SeriesPartials], agg: Agg, report: &ShardReport) -> Value {
    let series: Vec<Value> = answer
        .iter()
        .map(|s| {
            let labels: Map<String, Value> = (s.labels.iter())
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let points: Vec<Value> = (s.buckets.iter())
                .map(|(t, p)| json!([unix_s(*t), p.value(agg)]))
                .collect();
            json!({"labels": labels, "points": points})
        })
        .collect();
    json!({"partial": report.partial(), "shards": report_json(report), "series": series})
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One line per point: `time,value,` then one column per label name found in any series.
pub fn csv(answer: &[SeriesPartials], agg: Agg) -> String {
    let mut names: Vec<&str> = answer
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, _)| k.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::from("time,value");
    for n in &names {
        out.push(',');
        out.push_str(&csv_field(n));
    }
    out.push('\n');
    for s in answer {
        let cells: Vec<String> = (names.iter())
            .map(|n| {
                let v = s.labels.iter().find(|(k, _)| k == n).map_or("", |(_, v)| v);
                csv_field(v)
            })
            .collect();
        for (t, p) in &s.buckets {
            let v = unix_s(*t);
            out.push_str(&format!("{v},{}", p.value(agg)));
            for c in &cells {
                out.push(',');
                out.push_str(c);
            }
            out.push('\n');
        }
    }
    out
}

/// `2026-12-02T01:02:03Z` (milliseconds shown only when not whole).
pub fn rfc3339(ms: i64) -> String {
    let date = crate::store::local::utc_date(ms);
    let in_day = ms.rem_euclid(86_400_000);
    let (h, m, s, frac) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    if frac == 0 {
        format!("{date}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{date}T{h:02}:{m:02}:{s:02}.{frac:03}Z")
    }
}

/// A table: one row per bucket time, one column per series (headed by its labels); a bucket a
/// series has no sample in is blank.
pub fn table(answer: &[SeriesPartials], agg: Agg) -> String {
    if answer.is_empty() {
        return "no samples match\n".to_owned();
    }
    let heads: Vec<String> = answer
        .iter()
        .map(|s| {
            let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}}", l.join(", "))
        })
        .collect();
    let mut times: Vec<i64> = answer
        .iter()
        .flat_map(|s| s.buckets.keys().copied())
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut rows: Vec<Vec<String>> =
        vec![std::iter::once("TIME".to_owned()).chain(heads).collect()];
    for t in times {
        let mut row = vec![rfc3339(t)];
        row.extend(answer.iter().map(|s| {
            s.buckets
                .get(&t)
                .map_or(String::new(), |p| p.value(agg).to_string())
        }));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = (row.iter().zip(&widths))
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::partial::Partial;

    const NOW: i64 = 1_764_637_200_000; // 2025-12-02T01:00:00Z

    fn answer() -> Vec<SeriesPartials> {
        let mut p = Partial::of(NOW + 1, 1.0);
        p.push(NOW + 2, 3.0);
        vec![
            SeriesPartials {
                labels: vec![("client".into(), "a".into()), ("host".into(), "h".into())],
                buckets: [(NOW, p), (NOW + 60_000, Partial::of(NOW + 60_001, 5.0))]
                    .into_iter()
                    .collect(),
            },
            SeriesPartials {
                labels: vec![("client".into(), "b,c".into())],
                buckets: [(NOW + 60_000, Partial::of(NOW + 60_001, 7.0))]
                    .into_iter()
                    .collect(),
            },
        ]
    }

    #[test]
    fn json_carries_the_report() {
        let mut report = ShardReport {
            asked: vec!["w1".into(), "w2".into()],
            answered: vec!["w1".into()],
            ..ShardReport::default()
        };
        report.failed.insert("w2".into(), "refused".into());
        let v = json(&answer()[..1], Agg::Avg, &report);
        assert_eq!(
            v,
            json!({"partial": true,
                   "shards": {"asked": ["w1", "w2"], "answered": ["w1"], "failed": {"w2": "refused"}, "timed_out": []},
                   "series": [{"labels": {"client": "a", "host": "h"},
                               "points": [[NOW / 1000, 2.0], [NOW / 1000 + 60, 5.0]]}]})
        );
    }

    #[test]
    fn csv_and_table() {
        let t = NOW / 1000;
        assert_eq!(
            csv(&answer(), Agg::Max),
            format!(
                "time,value,client,host\n{t},3,a,h\n{},5,a,h\n{},7,\"b,c\",\n",
                t + 60,
                t + 60
            )
        );
        assert_eq!(
            table(&answer(), Agg::Max),
            "TIME                  {client=\"a\", host=\"h\"}  {client=\"b,c\"}\n\
             2025-12-02T01:00:00Z  3\n\
             2025-12-02T01:01:00Z  5                       7\n"
        );
        assert_eq!(table(&[], Agg::Max), "no samples match\n");
        assert_eq!(rfc3339(NOW + 5), "2025-12-02T01:00:00.005Z");
    }
}

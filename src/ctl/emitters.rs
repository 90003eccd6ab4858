//! `sqdctl emitters` and `sqdctl emitter HOST`: the nodes' host values the leader keeps, as
//! aligned tables or the stable JSON shapes; and the host columns `status` adds to workers.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;

use super::output::{ago, table, utc_time};
use super::{Admin, Cli, CtlError, print_json};
use crate::proto;

/// `sqdctl emitters`.
#[derive(Debug, Args)]
pub struct EmittersArgs {
    /// A JSON array instead of a table (stable keys, for scripts).
    #[arg(long)]
    json: bool,
}

/// `sqdctl emitter HOST`.
#[derive(Debug, Args)]
pub struct EmitterArgs {
    /// The emitter's host name, as `sqdctl emitters` lists it.
    host: String,
    /// Only this metric (default: all three).
    #[arg(long, value_enum)]
    metric: Option<MetricArg>,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricArg {
    /// CPU % of the whole host.
    Cpu,
    /// RAM used, MiB.
    Ram,
    /// Disk used, MiB.
    Disk,
}

/// One line of `emitters --json`.
#[derive(Debug, Serialize, PartialEq)]
pub struct EmitterRow {
    pub host: String,
    pub role: String,
    pub id: String,
    pub last_seen_unix_ms: i64,
    pub cpu_percent: f64,
    pub ram_mb: f64,
    pub disk_mb: f64,
}

impl From<proto::EmitterSummary> for EmitterRow {
    fn from(e: proto::EmitterSummary) -> Self {
        EmitterRow {
            host: e.host,
            role: e.role,
            id: e.id,
            last_seen_unix_ms: e.last_seen_unix_ms,
            cpu_percent: e.cpu_percent,
            ram_mb: e.ram_mb,
            disk_mb: e.disk_mb,
        }
    }
}

/// `emitter HOST --json`: the last values per metric, `[unix_ms, value]`, oldest first.
#[derive(Debug, Serialize, PartialEq)]
pub struct EmitterValues {
    pub host: String,
    pub role: String,
    pub values: BTreeMap<&'static str, Vec<(i64, f64)>>,
}

impl EmitterValues {
    fn new(r: proto::GetEmitterResponse, only: Option<MetricArg>) -> Self {
        let summary = r.emitter.unwrap_or_default();
        let points =
            |p: Vec<proto::HostPoint>| p.into_iter().map(|p| (p.unix_ms, p.value)).collect();
        let all = [
            (MetricArg::Cpu, "cpu_percent", points(r.cpu_percent)),
            (MetricArg::Ram, "ram_mb", points(r.ram_mb)),
            (MetricArg::Disk, "disk_mb", points(r.disk_mb)),
        ];
        EmitterValues {
            host: summary.host,
            role: summary.role,
            values: (all.into_iter())
                .filter(|(m, ..)| only.is_none_or(|o| o == *m))
                .map(|(_, key, values)| (key, values))
                .collect(),
        }
    }

    /// A time column and one per metric (the metrics of one sample share its time).
    fn human(&self) -> String {
        let header = |key: &str| match key {
            "cpu_percent" => "CPU %",
            "ram_mb" => "RAM MB",
            _ => "DISK MB",
        };
        let mut headers = vec!["TIME (UTC)"];
        headers.extend(self.values.keys().map(|k| header(k)));
        let times: Vec<i64> = (self.values.values().next())
            .map(|v| v.iter().map(|(t, _)| *t).collect())
            .unwrap_or_default();
        let rows: Vec<Vec<String>> = (times.iter().enumerate())
            .map(|(i, t)| {
                let mut row = vec![utc_time(*t)];
                for values in self.values.values() {
                    row.push(values.get(i).map_or("-".into(), |(_, v)| number(*v)));
                }
                row
            })
            .collect();
        format!("{} ({})\n{}", self.host, self.role, table(&headers, &rows))
    }
}

/// Values as people read them: one decimal for small ones, none for large ones.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub(super) fn emitters_table(rows: &[EmitterRow], now_ms: i64) -> String {
    if rows.is_empty() {
        return "no emitters yet: nodes report every metrics_interval_ms (default 10 s)\n".into();
    }
    let cells: Vec<Vec<String>> = (rows.iter())
        .map(|r| {
            vec![
                r.host.clone(),
                r.role.clone(),
                r.id.clone(),
                ago(now_ms, r.last_seen_unix_ms),
                number(r.cpu_percent),
                number(r.ram_mb),
                number(r.disk_mb),
            ]
        })
        .collect();
    let headers = [
        "HOST",
        "ROLE",
        "ID",
        "LAST SEEN",
        "CPU %",
        "RAM MB",
        "DISK MB",
    ];
    table(&headers, &cells)
}

async fn list(admin: &mut Admin<'_>) -> Result<Vec<proto::EmitterSummary>, CtlError> {
    Ok(admin
        .client
        .list_emitters(proto::ListEmittersRequest {})
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner()
        .emitters)
}

pub(super) async fn emitters(cli: &Cli, args: &EmittersArgs) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let rows: Vec<EmitterRow> = list(&mut admin)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    if args.json {
        return print_json(&rows);
    }
    print!("{}", emitters_table(&rows, crate::clock::unix_ms()));
    Ok(())
}

pub(super) async fn emitter(cli: &Cli, args: &EmitterArgs) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::GetEmitterRequest {
        host: args.host.clone(),
    };
    let r = admin
        .client
        .get_emitter(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    let view = EmitterValues::new(r, args.metric);
    if args.json {
        return print_json(&view);
    }
    print!("{}", view.human());
    Ok(())
}

/// The host values of each worker, by worker id, for `status`; empty when the leader keeps
/// none (an older leader, or sampling off).
pub(super) async fn of_workers(admin: &mut Admin<'_>) -> BTreeMap<String, super::output::HostView> {
    let Ok(all) = admin
        .client
        .list_emitters(proto::ListEmittersRequest {})
        .await
    else {
        return BTreeMap::new();
    };
    (all.into_inner().emitters.into_iter())
        .filter(|e| e.role == "worker")
        .map(|e| {
            let view = super::output::HostView {
                host: e.host,
                cpu_percent: e.cpu_percent,
                ram_mb: e.ram_mb,
                disk_mb: e.disk_mb,
            };
            (e.id, view)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> proto::GetEmitterResponse {
        let p = |t, v| proto::HostPoint {
            unix_ms: t,
            value: v,
        };
        proto::GetEmitterResponse {
            emitter: Some(proto::EmitterSummary {
                host: "w1".into(),
                role: "worker".into(),
                ..Default::default()
            }),
            cpu_percent: vec![p(1, 5.0), p(2, 6.5)],
            ram_mb: vec![p(1, 100.0), p(2, 101.0)],
            disk_mb: vec![p(1, 7.0), p(2, 7.0)],
        }
    }

    #[test]
    fn emitter_json_has_the_documented_shape() {
        let v = EmitterValues::new(response(), None);
        let json = serde_json::to_value(&v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json,
            serde_json::json!({
                "host": "w1", "role": "worker",
                "values": {
                    "cpu_percent": [[1, 5.0], [2, 6.5]],
                    "ram_mb": [[1, 100.0], [2, 101.0]],
                    "disk_mb": [[1, 7.0], [2, 7.0]],
                }
            })
        );
        let only = EmitterValues::new(response(), Some(MetricArg::Ram));
        assert_eq!(only.values.keys().copied().collect::<Vec<_>>(), ["ram_mb"]);
        let text = only.human();
        assert!(
            text.starts_with("w1 (worker)\nTIME (UTC)               RAM MB\n"),
            "{text}"
        );
        assert!(text.contains("101"), "{text}");
    }

    #[test]
    fn emitters_table_is_aligned_and_says_when_empty() {
        let rows = vec![
            EmitterRow {
                host: "a-long-host".into(),
                role: "leader".into(),
                id: "leader".into(),
                last_seen_unix_ms: 9_000,
                cpu_percent: 3.25,
                ram_mb: 2048.0,
                disk_mb: 10.0,
            },
            EmitterRow {
                host: "b".into(),
                role: "agent".into(),
                id: "c1".into(),
                last_seen_unix_ms: 5_000,
                cpu_percent: 100.0,
                ram_mb: 1.0,
                disk_mb: 0.0,
            },
        ];
        let text = emitters_table(&rows, 10_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("HOST         ROLE    ID      LAST SEEN"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("a-long-host  leader  leader  1s ago"),
            "{text}"
        );
        assert!(lines[2].contains("100"), "{text}");
        assert!(emitters_table(&[], 0).starts_with("no emitters yet"));
        let json = serde_json::to_value(&rows[1]).unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&str> = json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut want = [
            "host",
            "role",
            "id",
            "last_seen_unix_ms",
            "cpu_percent",
            "ram_mb",
            "disk_mb",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
    }
}

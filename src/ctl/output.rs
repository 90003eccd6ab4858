//! How `sqdctl` shows things: the stable `--json` shapes and aligned tables for people.

use serde::Serialize;

use crate::proto;

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub cluster: String,
    pub leader: LeaderView,
    pub workers: Vec<WorkerView>,
    pub clients: Vec<ClientView>,
}

#[derive(Debug, Serialize)]
pub struct LeaderView {
    pub addr: String,
    pub version: String,
}

#[derive(Debug, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub addr: String,
    pub state: String,
    pub version: String,
    pub load: f64,
    pub clients: Vec<String>,
    pub last_heartbeat_ms: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClientView {
    pub name: String,
    pub ssh: String,
    pub path: String,
    pub worker: Option<String>,
    pub epoch: u64,
    pub state: &'static str,
    pub agent: String,
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_today: u64,
    pub bytes_today: u64,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    pub oldest_backlog_s: u64,
    pub rate_bps: u64,
    pub last_error: Option<String>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<proto::StatusResponse> for StatusView {
    fn from(s: proto::StatusResponse) -> Self {
        StatusView {
            cluster: s.cluster,
            leader: LeaderView {
                addr: s.leader_addr,
                version: s.leader_version,
            },
            workers: s
                .workers
                .into_iter()
                .map(|w| WorkerView {
                    id: w.id,
                    addr: w.addr,
                    state: w.state,
                    version: w.version,
                    load: w.load,
                    clients: w.clients,
                    last_heartbeat_ms: w.last_heartbeat_ms,
                    reason: non_empty(w.reason),
                })
                .collect(),
            clients: s
                .clients
                .into_iter()
                .map(|c| {
                    let spec = c.spec.unwrap_or_default();
                    let worker = non_empty(c.worker);
                    ClientView {
                        name: spec.name,
                        ssh: spec.ssh,
                        path: spec.path,
                        state: if worker.is_some() {
                            "assigned"
                        } else {
                            "unassigned"
                        },
                        worker,
                        epoch: c.epoch,
                        agent: c.agent,
                        files_total: c.files_total,
                        bytes_total: c.bytes_total,
                        files_today: c.files_today,
                        bytes_today: c.bytes_today,
                        backlog_files: c.backlog_files,
                        backlog_bytes: c.backlog_bytes,
                        oldest_backlog_s: c.oldest_backlog_s,
                        rate_bps: c.rate_bps,
                        last_error: non_empty(c.last_error),
                    }
                })
                .collect(),
        }
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn age(ms: i64) -> String {
    match ms {
        ms if ms < 0 => "never".into(),
        ms if ms < 10_000 => format!("{ms}ms"),
        ms if ms < 600_000 => format!("{}s", ms / 1000),
        ms => format!("{}m", ms / 60_000),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl StatusView {
    pub fn human(&self) -> String {
        let mut out = format!(
            "cluster {}   leader {} (v{})   {} workers, {} clients\n\n",
            self.cluster,
            self.leader.addr,
            self.leader.version,
            self.workers.len(),
            self.clients.len()
        );
        if self.workers.is_empty() {
            out.push_str("no workers registered\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .workers
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.state.clone(),
                        w.clients.len().to_string(),
                        format!("{:.2}", w.load),
                        age(w.last_heartbeat_ms),
                        w.version.clone(),
                        w.addr.clone(),
                        w.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "WORKER", "STATE", "CLIENTS", "LOAD", "LAST HB", "VERSION", "ADDR", "REASON",
                ],
                &rows,
            ));
        }
        out.push('\n');
        if self.clients.is_empty() {
            out.push_str(
                "no clients; add one with `sqdctl add-client NAME --ssh USER@HOST --path DIR`\n",
            );
        } else {
            let rows: Vec<Vec<String>> = self
                .clients
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.worker.clone().unwrap_or_else(|| "-".into()),
                        c.epoch.to_string(),
                        c.state.to_owned(),
                        c.agent.clone(),
                        c.files_total.to_string(),
                        bytes(c.bytes_total),
                        format!("{} / {}", c.backlog_files, bytes(c.backlog_bytes)),
                        format!("{}/s", bytes(c.rate_bps)),
                        c.ssh.clone(),
                        c.path.clone(),
                        c.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "CLIENT",
                    "WORKER",
                    "EPOCH",
                    "STATE",
                    "AGENT",
                    "FILES",
                    "BYTES",
                    "SSH",
                    "PATH",
                    "LAST ERROR",
                ],
                &rows,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }

    #[test]
    fn json_shape_is_stable() {
        let resp = proto::StatusResponse {
            cluster: "c".into(),
            leader_addr: "127.0.0.1:1".into(),
            leader_version: "0.1.0".into(),
            workers: vec![proto::WorkerStatus {
                id: "w".into(),
                state: "alive".into(),
                clients: vec!["x".into()],
                last_heartbeat_ms: 5,
                ..Default::default()
            }],
            clients: vec![proto::ClientStatus {
                spec: Some(proto::ClientSpec {
                    name: "x".into(),
                    ..Default::default()
                }),
                worker: "w".into(),
                epoch: 3,
                agent: "none".into(),
                ..Default::default()
            }],
        };
        let v = serde_json::to_value(StatusView::from(resp)).unwrap();
        assert_eq!(v["leader"]["addr"], "127.0.0.1:1");
        assert_eq!(v["workers"][0]["reason"], serde_json::Value::Null);
        assert_eq!(v["clients"][0]["state"], "assigned");
        assert_eq!(v["clients"][0]["worker"], "w");
        assert_eq!(v["clients"][0]["last_error"], serde_json::Value::Null);
        let keys: Vec<&String> = v["clients"][0].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 16);
    }
}

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
    /// Its host's latest values; null when the leader has none.
    pub host: Option<HostView>,
}

/// A worker's host values in `status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostView {
    pub host: String,
    pub cpu_percent: f64,
    pub ram_mb: f64,
    pub disk_mb: f64,
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
    /// Newest commit by any worker, ms since the Unix epoch; null when none yet.
    pub last_commit_unix_ms: Option<i64>,
    pub last_error: Option<String>,
    /// How the client's files are parsed (`add-client --format`).
    pub format: String,
    /// Samples parsed into the workers' shards, summed.
    pub samples_total: u64,
    pub parse_errors_total: u64,
    pub samples_too_old: u64,
    pub samples_over_cap: u64,
    /// The last bad line, "line N: reason"; null when none.
    pub last_parse_error: Option<String>,
}

fn client_view(c: proto::ClientStatus) -> ClientView {
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
        last_commit_unix_ms: (c.last_commit_unix_ms > 0).then_some(c.last_commit_unix_ms),
        last_error: non_empty(c.last_error),
        format: if spec.format.is_empty() {
            "auto".to_owned()
        } else {
            spec.format
        },
        samples_total: c.samples_total,
        parse_errors_total: c.parse_errors_total,
        samples_too_old: c.samples_too_old,
        samples_over_cap: c.samples_over_cap,
        last_parse_error: non_empty(c.last_parse_error),
    }
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
                    host: None,
                })
                .collect(),
            clients: s.clients.into_iter().map(client_view).collect(),
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

/// How text is decorated: colour only on a terminal, and never with `NO_COLOR` set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub tty: bool,
    pub colour: bool,
}

impl Style {
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        let colour = tty
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Style { tty, colour }
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.colour && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn state(&self, state: &str) -> String {
        let code = match state {
            "alive" | "up" | "assigned" => "32",
            "suspect" | "draining" | "down" => "33",
            "dead" | "refused" | "unassigned" => "31",
            _ => return state.to_owned(),
        };
        self.paint(state, code)
    }

    fn error(&self, text: &str) -> String {
        self.paint(text, "31")
    }

    fn bold(&self, text: &str) -> String {
        self.paint(text, "1")
    }
}

/// "3s ago", "5m ago", "2h ago", "4d ago", or "never".
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(then_ms).max(0) / 1000;
    match s {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn duration_s(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn utc_time(unix_ms: i64) -> String {
    let date = crate::store::local::utc_date(unix_ms);
    let ms = unix_ms.rem_euclid(86_400_000);
    format!(
        "{date} {:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

const CLIENT_HEADERS: [&str; 11] = [
    "CLIENT",
    "EPOCH",
    "AGENT",
    "FILES TODAY",
    "TOTAL",
    "RATE",
    "BACKLOG",
    "LAG",
    "LAST COMMIT",
    "SAMPLES",
    "LAST ERROR",
];

impl ClientView {
    fn row(&self, style: &Style, now_ms: i64) -> Vec<String> {
        vec![
            self.name.clone(),
            self.epoch.to_string(),
            self.agent.clone(),
            format!("{} ({})", self.files_today, bytes(self.bytes_today)),
            format!("{} ({})", self.files_total, bytes(self.bytes_total)),
            format!("{}/s", bytes(self.rate_bps)),
            format!("{} ({})", self.backlog_files, bytes(self.backlog_bytes)),
            duration_s(self.oldest_backlog_s),
            ago(now_ms, self.last_commit_unix_ms.unwrap_or(0)),
            match self.parse_errors_total {
                0 => self.samples_total.to_string(),
                e => format!("{} ({e} bad)", self.samples_total),
            },
            style.error(self.last_error.as_deref().unwrap_or("")),
        ]
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

impl StatusView {
    /// Puts each worker's host values (by worker id) next to it.
    pub fn attach_hosts(&mut self, mut hosts: std::collections::BTreeMap<String, HostView>) {
        for w in &mut self.workers {
            w.host = hosts.remove(&w.id);
        }
    }

    /// Workers one by one with their clients beneath them, then the unassigned clients.
    pub fn human(&self, style: &Style, now_ms: i64) -> String {
        let count = |state: &str| self.workers.iter().filter(|w| w.state == state).count();
        let unassigned: Vec<&ClientView> =
            self.clients.iter().filter(|c| c.worker.is_none()).collect();
        let mut out = format!(
            "cluster {}   leader {} (v{})   workers: {} alive of {}   clients: {} ({} unassigned)\n",
            self.cluster,
            self.leader.addr,
            self.leader.version,
            count("alive"),
            self.workers.len(),
            self.clients.len(),
            unassigned.len(),
        );
        if self.workers.is_empty() {
            out.push_str("\nno workers registered; start one with `sqd --mode worker start`\n");
        }
        for w in &self.workers {
            out.push('\n');
            let mut head = format!(
                "{} {}  load {:.2}  heartbeat {}  v{}  {}",
                style.bold(&format!("worker {}", w.id)),
                style.state(&w.state),
                w.load,
                age(w.last_heartbeat_ms),
                w.version,
                if w.addr.is_empty() { "-" } else { &w.addr },
            );
            if let Some(h) = &w.host {
                head.push_str(&format!(
                    "  cpu {:.0}%  ram {:.0} MB  disk {:.0} MB",
                    h.cpu_percent, h.ram_mb, h.disk_mb
                ));
            }
            if let Some(reason) = &w.reason {
                head.push_str(&format!("  {}", style.error(reason)));
            }
            out.push_str(&head);
            out.push('\n');
            if w.state == "dead" {
                // The leader cannot count them; the workers that took its clients over adopt
                // them once `orphan_after_s` passed since they first saw them.
                out.push_str(&format!(
                    "  files it had claimed wait for it up to orphan_after_s (default 10 min); if it never comes back: sqdctl forget-worker {}\n",
                    w.id
                ));
            }
            let rows: Vec<Vec<String>> = self
                .clients
                .iter()
                .filter(|c| c.worker.as_deref() == Some(w.id.as_str()))
                .map(|c| c.row(style, now_ms))
                .collect();
            if rows.is_empty() {
                out.push_str("  no clients\n");
            } else {
                out.push_str(&indent(&table(&CLIENT_HEADERS, &rows)));
            }
        }
        if !unassigned.is_empty() {
            out.push('\n');
            out.push_str(&style.bold("unassigned"));
            out.push_str(" (waiting for an alive worker)\n");
            let rows: Vec<Vec<String>> = unassigned.iter().map(|c| c.row(style, now_ms)).collect();
            out.push_str(&indent(&table(&CLIENT_HEADERS, &rows)));
        }
        if self.clients.is_empty() {
            out.push_str(
                "\nno clients; add one with `sqdctl add-client NAME --ssh USER@HOST --path DIR`\n",
            );
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct ExplainView {
    /// Null when the client was removed (its history remains).
    pub client: Option<ClientView>,
    pub history: Vec<HistoryView>,
}

#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub at_unix_ms: i64,
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub epoch: u64,
    pub reason: String,
    pub detail: String,
}

impl From<proto::ExplainResponse> for ExplainView {
    fn from(r: proto::ExplainResponse) -> Self {
        ExplainView {
            client: r.client.map(client_view),
            history: r
                .history
                .into_iter()
                .map(|e| HistoryView {
                    at_unix_ms: e.at_unix_ms,
                    kind: e.kind,
                    from: non_empty(e.from_worker),
                    to: non_empty(e.to_worker),
                    epoch: e.epoch,
                    reason: e.reason,
                    detail: e.detail,
                })
                .collect(),
        }
    }
}

impl ExplainView {
    pub fn human(&self, style: &Style, now_ms: i64) -> String {
        let mut out = String::new();
        match &self.client {
            Some(c) => {
                out.push_str(&format!(
                    "{}  {}  on {}  epoch {}  agent {}\n",
                    style.bold(&format!("client {}", c.name)),
                    style.state(c.state),
                    c.worker.as_deref().unwrap_or("-"),
                    c.epoch,
                    c.agent,
                ));
                out.push_str(&format!(
                    "  ssh {}  path {}\n  committed {} files ({}), today {} ({}); last commit {}\n  backlog {} files ({}), oldest {}; rate {}/s\n  last error: {}\n",
                    c.ssh,
                    c.path,
                    c.files_total,
                    bytes(c.bytes_total),
                    c.files_today,
                    bytes(c.bytes_today),
                    ago(now_ms, c.last_commit_unix_ms.unwrap_or(0)),
                    c.backlog_files,
                    bytes(c.backlog_bytes),
                    duration_s(c.oldest_backlog_s),
                    bytes(c.rate_bps),
                    c.last_error.as_deref().map_or_else(|| "none".to_owned(), |e| style.error(e)),
                ));
                out.push_str(&format!(
                    "  samples {} (format {}); parse errors {}, too old {}, over the series cap {}\n  last bad line: {}\n",
                    c.samples_total,
                    c.format,
                    c.parse_errors_total,
                    c.samples_too_old,
                    c.samples_over_cap,
                    c.last_parse_error.as_deref().map_or_else(|| "none".to_owned(), |e| style.error(e)),
                ));
            }
            None => out.push_str("this client is no longer registered; its history follows\n"),
        }
        out.push_str("\nhistory (oldest first, UTC):\n");
        if self.history.is_empty() {
            out.push_str("  nothing recorded\n");
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .history
            .iter()
            .map(|h| {
                let what = match (h.kind.as_str(), &h.from, &h.to) {
                    ("moved", None, Some(to)) => format!("assigned to {to}"),
                    ("moved", Some(from), Some(to)) => format!("moved {from} -> {to}"),
                    ("moved", _, None) => "unassigned".to_owned(),
                    ("release_requested", Some(from), _) => format!("release asked of {from}"),
                    (kind, _, _) => kind.to_owned(),
                };
                vec![
                    utc_time(h.at_unix_ms),
                    what,
                    if h.epoch == 0 {
                        "-".into()
                    } else {
                        h.epoch.to_string()
                    },
                    h.reason.clone(),
                    h.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["TIME", "WHAT", "EPOCH", "REASON", "DETAIL"],
            &rows,
        )));
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
        assert_eq!(v["clients"][0]["format"], "auto");
        assert_eq!(v["clients"][0]["samples_total"], 0);
        assert_eq!(v["clients"][0]["last_parse_error"], serde_json::Value::Null);
        let keys: Vec<&String> = v["clients"][0].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 23, "keys are only ever added");
    }
}

//! `sqdctl alerts [--follow [--since ID]] [--history] [--json]` and `sqdctl reload-rules`.
//! A follower reconnects by itself after the stream breaks, resuming after the last id it
//! printed, so across leader restarts it prints every notification exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::{Admin, Cli, CtlError};
use crate::proto;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sqdctl alerts\n  sqdctl alerts --follow\n  \
    sqdctl alerts --follow --since 41 --json\n  sqdctl alerts --history --limit 20"
)]
pub struct AlertsArgs {
    /// Print notifications as the leader makes them, until Ctrl-C (reconnects by itself,
    /// resuming after the last id printed).
    #[arg(long, conflicts_with = "history")]
    follow: bool,
    /// With --follow: start with every notification after this id (default: only new ones).
    #[arg(long, value_name = "ID", requires = "follow")]
    since: Option<u64>,
    /// The newest notifications instead of what is firing and pending now.
    #[arg(long)]
    history: bool,
    /// Most notifications with --history.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100000))]
    limit: u32,
    /// One JSON object per line (notifications exactly as in alerts.jsonl).
    #[arg(long)]
    json: bool,
}

/// The fields of a notification or a current alert that the human form shows.
#[derive(Debug, Deserialize)]
struct Shown {
    #[serde(default)]
    id: Option<u64>,
    rule: String,
    state: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    value: Option<f64>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    ts_unix_ms: Option<i64>,
    since_unix_ms: i64,
    #[serde(default)]
    annotation: String,
}

fn human(json: &str) -> String {
    let Ok(s) = serde_json::from_str::<Shown>(json) else {
        return json.to_owned();
    };
    let labels = (s.labels.iter())
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let value = s.value.map_or("-".to_owned(), |v| v.to_string());
    let at = crate::alerts::alertmanager::rfc3339(s.ts_unix_ms.unwrap_or(s.since_unix_ms));
    let mut line = match s.id {
        Some(id) => format!(
            "{at} #{id} {:<8} {} {{{labels}}} value={value}",
            s.state, s.rule
        ),
        None => format!(
            "{:<8} {} {{{labels}}} value={value} since {}",
            s.state,
            s.rule,
            crate::alerts::alertmanager::rfc3339(s.since_unix_ms)
        ),
    };
    if let Some(t) = s.threshold {
        line.push_str(&format!(" threshold={t}"));
    }
    if !s.annotation.is_empty() {
        line.push_str(&format!(": {}", s.annotation));
    }
    line
}

pub(super) async fn alerts(cli: &Cli, args: &AlertsArgs) -> Result<(), CtlError> {
    if args.follow {
        return follow(cli, args).await;
    }
    let mut admin = Admin::connect(cli).await?;
    let request = proto::ListAlertsRequest {
        history: args.history,
        limit: args.limit,
    };
    let resp = (admin.client.list_alerts(request).await)
        .map_err(|s| admin.failed(s))?
        .into_inner();
    if resp.json.is_empty() && !args.json {
        let what = if args.history {
            "no notifications yet"
        } else {
            "nothing is firing, pending or unknown"
        };
        println!("{what}");
    }
    for line in &resp.json {
        println!("{}", if args.json { line.clone() } else { human(line) });
    }
    Ok(())
}

/// Follows until Ctrl-C; a broken stream or an unreachable leader is retried every second.
async fn follow(cli: &Cli, args: &AlertsArgs) -> Result<(), CtlError> {
    let mut seen = args.since;
    let mut warned = false;
    loop {
        let outcome = tokio::select! {
            o = follow_once(cli, args.json, &mut seen) => o,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match outcome {
            Err(e @ (CtlError::Unauthorised(_) | CtlError::Usage(_) | CtlError::Refused(_))) => {
                return Err(e);
            }
            Err(e) if !warned => {
                eprintln!("sqdctl: {e}; reconnecting every second");
                warned = true;
            }
            Ok(()) if !warned => {
                eprintln!("sqdctl: the leader ended the stream; reconnecting every second");
                warned = true;
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One connection's worth of following; `seen` moves with every line printed.
async fn follow_once(cli: &Cli, json: bool, seen: &mut Option<u64>) -> Result<(), CtlError> {
    use std::io::Write;
    let mut admin = Admin::connect_for(cli, Duration::from_secs(365 * 86_400)).await?;
    if seen.is_none() {
        // "From now" made explicit, so a reconnect resumes exactly here.
        let newest = (admin.client)
            .list_alerts(proto::ListAlertsRequest {
                history: true,
                limit: 1,
            })
            .await
            .map_err(|s| admin.failed(s))?
            .into_inner();
        let last = newest.json.first().and_then(|j| {
            serde_json::from_str::<serde_json::Value>(j)
                .ok()
                .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
        });
        *seen = Some(last.unwrap_or(0));
    }
    let request = proto::FollowAlertsRequest { since: *seen };
    let mut stream = (admin.client.follow_alerts(request).await)
        .map_err(|s| admin.failed(s))?
        .into_inner();
    eprintln!(
        "sqdctl: following alerts after id {}",
        seen.unwrap_or_default()
    );
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            // Once following, a broken stream is the leader going away: reconnect.
            Err(s) => {
                return Err(match admin.failed(s) {
                    e @ CtlError::Unauthorised(_) => e,
                    e => CtlError::Unreachable {
                        addr: cli.leader.clone(),
                        reason: e.to_string(),
                    },
                });
            }
        };
        if event.lost > 0 {
            eprintln!(
                "sqdctl: warning: {} notification(s) after id {} were lost (the leader's log no longer holds them)",
                event.lost,
                seen.unwrap_or_default()
            );
            *seen = Some(seen.unwrap_or_default() + event.lost);
            continue;
        }
        let line = if json {
            event.json.clone()
        } else {
            human(&event.json)
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
        *seen = Some(event.id);
    }
}

pub(super) async fn reload_rules(cli: &Cli) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let resp = (admin
        .client
        .reload_rules(proto::ReloadRulesRequest {})
        .await)
        .map_err(|s| admin.failed(s))?
        .into_inner();
    println!("rules reloaded: {} rule(s) in force", resp.rules);
    if !resp.removed.is_empty() {
        println!(
            "removed (their alerts dropped without a resolved): {}",
            resp.removed.join(", ")
        );
    }
    Ok(())
}

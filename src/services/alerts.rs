//! The admin API's alert calls: `FollowAlerts` (a follower task per stream: the in-memory
//! backlog while it keeps up, the leader's log when it fell behind, exactly once by id),
//! `ListAlerts` and `ReloadRules`.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use crate::leader::alerting::Alerting;
use crate::leader::alerting::hub::{Item, catch_up};
use crate::proto;

pub(crate) type AlertStream = Pin<Box<dyn Stream<Item = Result<proto::AlertEvent, Status>> + Send>>;

/// Events a follower may have queued before the leader stops reading on its behalf (it then
/// resumes from the log by id: nothing is lost until the log drops it).
const FOLLOW_BUFFER: usize = 256;
/// Rows read from the log per catch-up step.
const CATCH_UP_ROWS: usize = 1000;

fn event(item: Item) -> proto::AlertEvent {
    match item {
        Item::Note(id, json) => proto::AlertEvent { id, json, lost: 0 },
        Item::Lost(lost) => proto::AlertEvent {
            id: 0,
            json: String::new(),
            lost,
        },
    }
}

pub(crate) fn follow(alerting: Alerting, since: Option<u64>) -> AlertStream {
    let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
    tokio::spawn(async move {
        let hub = alerting.hub().clone();
        let mut published = hub.subscribe();
        let mut seen = since.unwrap_or_else(|| hub.last_id());
        loop {
            published.borrow_and_update();
            let items = match hub.after(seen) {
                Ok(items) => items,
                Err(_) => match alerting.log(Some(seen), CATCH_UP_ROWS).await {
                    Ok(rows) => catch_up(seen, rows).0,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                },
            };
            let more = !items.is_empty();
            for item in items {
                if let Item::Note(id, _) = &item {
                    seen = *id;
                } else if let Item::Lost(n) = &item {
                    seen += n;
                }
                if tx.send(Ok(event(item))).await.is_err() {
                    return; // the follower went away
                }
            }
            if more {
                continue; // there may be more in the log or the backlog
            }
            tokio::select! {
                changed = published.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

pub(crate) async fn list(
    alerting: &Alerting,
    request: proto::ListAlertsRequest,
) -> Result<proto::ListAlertsResponse, Status> {
    let json = if request.history {
        let limit = match request.limit {
            0 => 100,
            n => n.min(100_000) as usize,
        };
        let rows =
            (alerting.log(None, limit).await).map_err(|e| Status::internal(e.to_string()))?;
        rows.into_iter().map(|(_, j)| j).collect()
    } else {
        (alerting.active().await.iter())
            .filter_map(|a| serde_json::to_string(a).ok())
            .collect()
    };
    Ok(proto::ListAlertsResponse { json })
}

pub(crate) async fn reload(alerting: &Alerting) -> Result<proto::ReloadRulesResponse, Status> {
    match alerting.reload().await {
        Ok(r) => {
            tracing::info!(rules = r.rules, removed = ?r.removed, "alert rules reloaded (sqdctl reload-rules)");
            Ok(proto::ReloadRulesResponse {
                rules: r.rules as u32,
                removed: r.removed,
            })
        }
        Err(e) => {
            let problems = e.problems();
            tracing::warn!(problems = %problems.join("; "), "reload-rules: the rules file is not usable; the rules in force stay");
            Err(Status::failed_precondition(format!(
                "the rules file is not usable; the rules in force stay:\n{}",
                problems.join("\n")
            )))
        }
    }
}

//! Sends the [`Outbox`] to Alertmanager: `POST <url>/api/v2/alerts` over plain HTTP/1.1 when
//! the pure rule in `alerts::alertmanager` says a payload is due, retried with doubling
//! backoff (1 s to 1 min) while it fails; a failure is logged once and then at doubling
//! intervals (`LogGate`), its recovery once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::alerts::alertmanager::{Outbox, Timing};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs until the task is dropped.
pub(crate) async fn run(url: String, outbox: Arc<Mutex<Outbox>>, timing: Timing) {
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let now = crate::clock::unix_ms();
        let payload = outbox
            .lock()
            .ok()
            .and_then(|mut o| o.due(now, &timing).then(|| o.payload(now, &timing, None)));
        let Some(payload) = payload else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        match tokio::time::timeout(REQUEST_TIMEOUT, post(&url, &body)).await {
            Ok(Ok(())) => {
                if let Ok(mut o) = outbox.lock() {
                    o.sent(now);
                }
                if failing {
                    info!(url = %url, "alertmanager reachable again; alerts sent");
                }
                failing = false;
                backoff = Duration::from_secs(1);
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
                };
                if !failing || backoff >= MAX_BACKOFF {
                    warn!(url = %url, error = %why, retry_s = backoff.as_secs(), "cannot send alerts to alertmanager; retrying");
                }
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One POST; `Err` with a one-line reason unless Alertmanager answered 2xx.
async fn post(url: &str, body: &[u8]) -> Result<(), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let path = format!("/{}/api/v2/alerts", prefix.trim_matches('/'));
    let path = path.replace("//", "/");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(64 << 10)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or("");
    if status.starts_with('2') {
        return Ok(());
    }
    let first = text.lines().next().unwrap_or("nothing").to_owned();
    let detail = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    Err(format!(
        "{path} answered {first:?} {}",
        crate::text::clip(detail)
    ))
}

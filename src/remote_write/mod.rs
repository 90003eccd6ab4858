//! Ships the worker's committed samples to a Prometheus remote-write receiver: the shipper
//! drains the store's outbox (`store::outbox`, filled on each commit's transaction) in
//! batches, retries with backoff, and mirrors the queue's durable counters into
//! `sqd_worker_remote_write_*`. `wire` and `policy` are pure; `http` and this file's loop are
//! the adapters.

pub(crate) mod http;
pub(crate) mod policy;
pub(crate) mod wire;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rusqlite::Connection;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::RemoteWriteConfig;
use crate::log_gate::LogGate;
use crate::store::outbox::{self, Acked, Batch, QueueLimits, QueueStats};
use policy::{Backoff, Taker, Verdict};

/// Most bytes of one request body before compression is judged by its pieces' compressed
/// size; receivers commonly refuse bodies over a few tens of MiB.
const MAX_REQUEST_BYTES: u64 = 8 << 20;
/// The first pause after a failed attempt (then doubling up to `remote_write_max_backoff_s`).
const MIN_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error(
        "cannot read {what} {path}: {source}; fix the file or the remote_write_* key naming it"
    )]
    Credentials {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("cannot open the remote-write queue in {path}: {source}")]
    Queue {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot start the remote-write thread: {0}")]
    Thread(std::io::Error),
}

/// The store's queue limits for these settings.
pub(crate) fn queue_limits(cfg: &RemoteWriteConfig) -> QueueLimits {
    QueueLimits {
        max_bytes: cfg.queue_bytes,
        piece_samples: cfg.batch_samples,
    }
}

/// `sqd_worker_remote_write_*`: the counters mirror the queue's durable ones, so they count
/// since the queue was created, across restarts.
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    sent: Counter,
    rejected: Counter,
    dropped: Counter,
    retries: Counter,
    queued_samples: Gauge,
    queued_bytes: Gauge,
    failing: Gauge,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("sqd_worker_remote_write");
        r.register(
            "sent_samples",
            "Samples the remote-write receiver accepted",
            m.sent.clone(),
        );
        r.register(
            "rejected_samples",
            "Samples the receiver refused for good (HTTP 4xx other than 408/429); logged with its reason",
            m.rejected.clone(),
        );
        r.register(
            "dropped_samples",
            "Committed samples not queued for remote-write because the queue was full (remote_write_queue_bytes); they stay in the shard",
            m.dropped.clone(),
        );
        r.register(
            "retries",
            "Remote-write attempts that failed and are retried",
            m.retries.clone(),
        );
        r.register(
            "queued_samples",
            "Samples waiting in the on-disk remote-write queue",
            m.queued_samples.clone(),
        );
        r.register(
            "queued_bytes",
            "Bytes of the on-disk remote-write queue",
            m.queued_bytes.clone(),
        );
        r.register(
            "failing",
            "1 while the receiver cannot be reached or answers errors (retrying)",
            m.failing.clone(),
        );
        m
    }
}

/// The `Authorization` header value the settings ask for, read from its file now.
fn authorization(cfg: &RemoteWriteConfig) -> Result<Option<String>, RemoteWriteError> {
    let read = |what, path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|source| RemoteWriteError::Credentials {
                what,
                path: path.to_owned(),
                source,
            })
    };
    if let Some(path) = &cfg.bearer_token_file {
        return Ok(Some(format!(
            "Bearer {}",
            read("the bearer token file", path)?
        )));
    }
    if let Some((user, path)) = &cfg.basic_auth {
        use base64::Engine as _;
        let password = read("the basic-auth password file", path)?;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        return Ok(Some(format!("Basic {pair}")));
    }
    Ok(None)
}

/// Starts the shipper on its own thread (its SQLite calls block; commits go on meanwhile on
/// the store's connection). It stops when `shutdown` turns true; what it had not shipped
/// stays queued for the next start.
pub(crate) fn spawn(
    catalog: &Path,
    cfg: RemoteWriteConfig,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RemoteWriteError> {
    let endpoint = http::Endpoint::new(&cfg.url, authorization(&cfg)?, &cfg.tls_ca)?;
    let queue_err = |source| RemoteWriteError::Queue {
        path: catalog.to_owned(),
        source,
    };
    let conn = Connection::open(catalog).map_err(queue_err)?;
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
        .map_err(queue_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RemoteWriteError::Thread)?;
    info!(url = %cfg.url, queue_bytes = cfg.queue_bytes, "remote-write on");
    let shipper = Shipper {
        backoff: Backoff::new(MIN_BACKOFF, Duration::from_secs(cfg.max_backoff_s)),
        conn,
        cfg,
        endpoint,
        metrics,
        seen: QueueStats::default(),
        gate: LogGate::new(Duration::from_secs(10), Duration::from_secs(600)),
    };
    std::thread::Builder::new()
        .name("remote-write".into())
        .spawn(move || runtime.block_on(shipper.run(shutdown)))
        .map_err(RemoteWriteError::Thread)?;
    Ok(())
}

struct Shipper {
    conn: Connection,
    cfg: RemoteWriteConfig,
    endpoint: http::Endpoint,
    metrics: Metrics,
    /// The durable counters at the last report.
    seen: QueueStats,
    backoff: Backoff,
    gate: LogGate,
}

impl Shipper {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.report();
            let pause = self.step().await;
            if pause.is_zero() && !*shutdown.borrow() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.cfg.interval_ms)
    }

    /// Mirrors the durable counters; a full queue is an error in the log every time it drops.
    fn report(&mut self) {
        let now = match outbox::stats(&self.conn) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the remote-write queue's counters");
                return;
            }
        };
        let m = &self.metrics;
        m.sent
            .inc_by(now.sent_samples.saturating_sub(self.seen.sent_samples));
        m.rejected.inc_by(
            now.rejected_samples
                .saturating_sub(self.seen.rejected_samples),
        );
        let dropped = now
            .dropped_samples
            .saturating_sub(self.seen.dropped_samples);
        m.dropped.inc_by(dropped);
        m.queued_samples
            .set(i64::try_from(now.queued_samples).unwrap_or(i64::MAX));
        m.queued_bytes
            .set(i64::try_from(now.queued_bytes).unwrap_or(i64::MAX));
        if dropped > 0 {
            error!(
                dropped,
                last = now.last_drop.as_deref().unwrap_or(""),
                "remote-write queue full: committed samples were not queued for export (they stay in the shard); raise remote_write_queue_bytes or fix the receiver"
            );
        }
        self.seen = now;
    }

    /// One attempt; answers how long to pause before the next.
    async fn step(&mut self) -> Duration {
        let taker = Taker::new(self.cfg.batch_samples as u64, MAX_REQUEST_BYTES);
        let batch = match outbox::peek(&self.conn, taker) {
            Ok(Some(b)) => b,
            Ok(None) => return self.interval(),
            Err(e) => {
                warn!(error = %e, "cannot read the remote-write queue");
                return self.interval();
            }
        };
        let age_ms = crate::clock::unix_ms().saturating_sub(batch.oldest_ms);
        let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
        let batch_samples = self.cfg.batch_samples as u64;
        if let Some(wait) =
            policy::wait_for_more(batch.samples, batch_samples, age, self.interval())
        {
            return wait;
        }
        let verdict = match wire::join(&batch.bodies) {
            Ok(body) => {
                let timeout = Duration::from_secs(self.cfg.timeout_s);
                match self.endpoint.post(body, timeout).await {
                    Ok(a) => policy::classify(a.status, &a.body, a.retry_after.as_deref()),
                    Err(e) => Verdict::Retry {
                        reason: crate::text::causes(&e),
                        after: None,
                    },
                }
            }
            Err(e) => Verdict::Rejected {
                reason: e.to_string(),
            },
        };
        self.settle(&batch, verdict)
    }

    /// Acts on an attempt's verdict.
    fn settle(&mut self, batch: &Batch, verdict: Verdict) -> Duration {
        match verdict {
            Verdict::Sent => {
                let acked = self.ack(batch, Acked::Sent);
                self.backoff.succeeded();
                self.metrics.failing.set(0);
                if let Some(failures) = self.gate.succeeded() {
                    info!(failures, url = %self.cfg.url, "remote-write delivers again");
                }
                if acked {
                    Duration::ZERO
                } else {
                    self.interval()
                }
            }
            Verdict::Rejected { reason } => {
                let acked = self.ack(batch, Acked::Rejected);
                error!(
                    samples = batch.samples,
                    %reason,
                    url = %self.cfg.url,
                    "remote-write receiver refused a batch for good; its samples are not exported (counted in sqd_worker_remote_write_rejected_samples_total)"
                );
                if acked {
                    Duration::ZERO
                } else {
                    self.interval()
                }
            }
            Verdict::Retry { reason, after } => {
                self.metrics.retries.inc();
                self.metrics.failing.set(1);
                let pause = self.backoff.failed(jitter(), after);
                if let Some(failures) = self.gate.failed(Instant::now()) {
                    warn!(
                        %reason,
                        failures,
                        queued_samples = self.seen.queued_samples,
                        retry_in_ms = pause.as_millis() as u64,
                        url = %self.cfg.url,
                        "remote-write failed; samples stay queued and are retried"
                    );
                }
                pause
            }
        }
    }

    /// Removes a settled batch; false when that failed (it is sent again: at least once
    /// beats lost, after a pause so a broken catalog does not make a busy loop).
    fn ack(&mut self, batch: &Batch, how: Acked) -> bool {
        match outbox::ack(&mut self.conn, batch, how) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "cannot remove a settled batch from the remote-write queue");
                false
            }
        }
    }
}

/// A fraction in `[0, 1)` that differs between workers and attempts (spreads retries).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

//! One client's pull as a state machine: [`ClientPuller::step`] connects when there is no
//! connection, else runs one cycle over it, and says what the driver should do next. It owns
//! the connection and the cursor; the driver owns backoff, pauses and error reporting.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::reconnect::Priority;
use super::{ClientTask, Cursor, CycleError, Link, batch, commit, recover, sftp};
use crate::transport::ssh::{Remote, SshParams, TransportError};
use crate::worker::held::Held;

/// What a step did, and so what the driver does next.
#[derive(Debug)]
pub(super) enum Step {
    /// A connection is open now: step again at once.
    Connected,
    /// A cycle ran and more work is waiting: step again at once.
    Busy,
    /// A cycle ran and left nothing to do: wait this long, or until the agent hints.
    Idle(Duration),
    /// The lease ran out (C3): nothing is claimed or committed until it is renewed.
    Fenced,
    /// Stop was asked while connecting.
    Stopped,
}

/// Why a step failed; the driver backs off by kind.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error(transparent)]
    Connect(TransportError),
    #[error(transparent)]
    Cycle(CycleError),
}

impl StepError {
    /// A short, stable kind for metrics.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            StepError::Connect(e) => e.kind(),
            StepError::Cycle(e) => e.kind(),
        }
    }
}

pub(super) struct ClientPuller {
    task: ClientTask,
    params: SshParams,
    remote: Option<Remote>,
    cursor: Cursor,
    /// A connection was attempted before (the next one counts as a reconnect).
    connected_before: bool,
    /// Where the next connection attempt stands in the worker's spawn budget.
    priority: Priority,
}

impl ClientPuller {
    pub(super) fn new(task: ClientTask, params: SshParams) -> ClientPuller {
        ClientPuller {
            task,
            params,
            remote: None,
            cursor: Cursor::new(),
            connected_before: false,
            priority: Priority::First,
        }
    }

    /// Sets where the next connection attempt stands in the spawn budget (the driver knows
    /// how the client fared lately).
    pub(super) fn set_priority(&mut self, priority: Priority) {
        self.priority = priority;
    }

    pub(super) fn task(&self) -> &ClientTask {
        &self.task
    }

    /// Connects, or runs one cycle on the open connection. A cycle always runs to its end
    /// (a stop is honoured between steps); only connecting is cut short by `stop`.
    pub(super) async fn step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StepError> {
        if !self.task.lease.valid_now() {
            return Ok(Step::Fenced);
        }
        let Some(remote) = &self.remote else {
            return self.connect(stop).await;
        };
        let began = Instant::now();
        let stopping = *stop.borrow();
        let link = Link {
            task: &self.task,
            remote,
        };
        let result = if remote.batch_capable() {
            batch::cycle(link, &mut self.cursor, stopping).await
        } else {
            sftp::cycle(link, &mut self.cursor, stopping).await
        };
        self.task
            .busy_ns
            .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(true) => Ok(Step::Busy),
            Ok(false) => Ok(Step::Idle(self.cursor.idle_pause(&self.task.config))),
            Err(CycleError::LeaseExpired) => Ok(Step::Fenced),
            Err(e) => {
                if matches!(&e, CycleError::Transport(t) if t.needs_reconnect())
                    && let Some(r) = self.remote.take()
                {
                    r.close();
                }
                Err(StepError::Cycle(e))
            }
        }
    }

    async fn connect(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Step, StepError> {
        let attempt = super::open_ssh(&self.params, &self.task.config.spawner, self.priority);
        let attempt = tokio::select! {
            r = attempt => r,
            _ = stop.wait_for(|s| *s) => return Ok(Step::Stopped),
        };
        let task = &self.task;
        let reconnect = std::mem::replace(&mut self.connected_before, true);
        let r = attempt.map_err(StepError::Connect)?;
        let transfer = if r.batch_capable() { "batch" } else { "sftp" };
        info!(client = %task.spec.name, target = %r.target(), transfer, "connected");
        task.metrics.ssh_connects.inc();
        if reconnect {
            task.metrics.ssh_reconnects.inc();
        }
        self.remote = Some(r);
        Ok(Step::Connected)
    }

    /// Hands the client over after a stop: a staged batch commits if the lease still allows
    /// (else its claims stay for the next owner); durable files still at the source go before
    /// the claim dir is released, or the next owner would store them again.
    pub(super) async fn finish(mut self, held: &Held) {
        let task = &self.task;
        if let Err(e) = commit::commit_pending(task, &mut self.cursor).await {
            warn!(client = %task.spec.name, error = %e, "staged batch not committed; its claims stay for the next owner");
        }
        let released = match &self.remote {
            Some(remote) => {
                let link = Link { task, remote };
                match commit::flush_removals(link, &mut self.cursor).await {
                    Ok(()) => recover::release(link).await,
                    Err(e) => {
                        warn!(client = %task.spec.name, error = %e, "cannot remove committed sources; keeping the claims to resolve later");
                        false
                    }
                }
            }
            None => false,
        };
        if released {
            held.stopped(&task.spec.name, task.epoch);
        }
        if let Some(r) = self.remote {
            r.close();
        }
        info!(worker = %task.worker, client = %task.spec.name, epoch = task.epoch, released, "stopped serving client");
    }
}

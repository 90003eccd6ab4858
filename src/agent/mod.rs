//! The optional client agent on a producing host: registers as the agent of an added client,
//! watches the stats directory (`notify`, plus a periodic rescan for missed events and
//! watcher overflows), and reports the backlog with every heartbeat. When the oldest waiting
//! file ages past `complain_after` it says so, and the leader moves the client to a less
//! loaded worker if there is one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ClientConfig;
use crate::daemon::{DaemonError, PidLock};
use crate::files;
use crate::node::{self, Handler, NodeError, NodeOutbox};
use crate::proto::{self, leader_message::Body};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error(
        "watch directory {path} is not usable: {reason}; pass the stats directory with --watch"
    )]
    Watch { path: PathBuf, reason: String },
}

/// Where the agent keeps its pid file: sqd's own area inside the watched directory.
pub fn runtime_dir(watch: &Path) -> PathBuf {
    watch.join(files::SQD_DIR)
}

/// Waiting files as the agent sees them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backlog {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) oldest_s: u64,
}

/// Scans the directory the way a worker selects files (regular, visible, complete-looking).
pub(crate) fn scan(dir: &Path, now: SystemTime) -> std::io::Result<Backlog> {
    use std::os::unix::ffi::OsStrExt;
    let mut backlog = Backlog::default();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let regular = meta.file_type().is_file();
        if !regular || !files::is_candidate_name(entry.file_name().as_bytes(), None) {
            continue;
        }
        backlog.files += 1;
        backlog.bytes += meta.len();
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .map_or(0, |d| d.as_secs());
        backlog.oldest_s = backlog.oldest_s.max(age);
    }
    Ok(backlog)
}

pub async fn run(cfg: ClientConfig, shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let watch_err = |reason: String| AgentError::Watch {
        path: cfg.watch.clone(),
        reason,
    };
    match std::fs::metadata(&cfg.watch) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(watch_err("not a directory".into())),
        Err(e) => return Err(watch_err(e.to_string())),
    }
    let _lock = PidLock::acquire(&runtime_dir(&cfg.watch), "client")?;
    let ident = node::Identity {
        role: proto::NodeRole::Agent,
        id: cfg.name.clone(),
        version: crate::version::advertised(),
        addr: String::new(),
        cluster: String::new(),
        capacity: 0,
        host_metrics: Some(cfg.host_metrics.sampler(&cfg.watch, false)),
    };
    let backlog = Arc::new(Mutex::new(Backlog::default()));
    let files_ready = Arc::new(AtomicBool::new(false));
    let _watcher = spawn_watcher(&cfg, backlog.clone(), files_ready.clone())
        .map_err(|e| watch_err(e.to_string()))?;
    let leader_at = crate::discovery::listen::leader_label(&cfg.leader, cfg.discovery.as_ref());
    info!(client = %cfg.name, leader = %leader_at, watch = %cfg.watch.display(), "agent starting");
    let mut agent = AgentNode {
        client: cfg.name.clone(),
        backlog,
        files_ready,
        last_hint: None,
        complain_after: cfg.complain_after,
    };
    let leader = crate::discovery::listen::leader_addr(
        &cfg.leader,
        cfg.discovery.as_ref(),
        &cfg.security,
        crate::discovery::listen::Listener {
            role: ident.role,
            id: ident.id.clone(),
            version: ident.version.clone(),
            cluster: cfg.cluster.clone(),
        },
        // An agent serves no metrics: what discovery ignores is logged.
        Default::default(),
        shutdown.clone(),
    )?;
    node::run(
        &ident,
        leader,
        &cfg.security,
        &mut agent,
        node::Lease::default(),
        shutdown,
    )
    .await?;
    info!(client = %cfg.name, "agent stopped");
    Ok(())
}

/// Keeps `backlog` current: rescans on every directory event (debounced) and every few
/// seconds anyway, so an overflowed or failed watcher only delays, never stops, the count.
/// A file closed after writing, or moved in, also sets `files_ready`, so the worker is told
/// to look now rather than at its next poll.
fn spawn_watcher(
    cfg: &ClientConfig,
    backlog: Arc<Mutex<Backlog>>,
    files_ready: Arc<AtomicBool>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match &event {
            Ok(e) if is_new_file(e) => files_ready.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "directory watcher error; rescanning"),
        }
        let _ = tx.send(());
    })?;
    watcher.watch(&cfg.watch, notify::RecursiveMode::NonRecursive)?;
    let dir = cfg.watch.clone();
    let client = cfg.name.clone();
    let complain_after = cfg.complain_after;
    tokio::spawn(async move {
        let mut complained = false;
        loop {
            match scan(&dir, SystemTime::now()) {
                Ok(b) => {
                    *backlog.lock().unwrap_or_else(PoisonError::into_inner) = b;
                    let late = b.files > 0 && Duration::from_secs(b.oldest_s) >= complain_after;
                    if late && !complained {
                        warn!(client = %client, files = b.files, oldest_s = b.oldest_s,
                              "backlog is aging: the worker falls behind; the leader is told with every heartbeat");
                    } else if !late && complained {
                        info!(client = %client, files = b.files, "backlog caught up");
                    }
                    complained = late;
                }
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot scan the watched directory")
                }
            }
            // Wait for an event (then let a burst settle) or the periodic rescan.
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() { return; }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
    Ok(watcher)
}

/// A writer closed a file it wrote, or a file was renamed into the directory (the two ways a
/// finished stats file appears), under a name a worker would pull: temporary and hidden
/// files being rewritten must not make the worker list over and over.
fn is_new_file(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    use std::os::unix::ffi::OsStrExt;
    let finished = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    );
    finished
        && event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|name| files::is_candidate_name(name.as_bytes(), None))
        })
}

/// At most one hint per this period: a directory where files close every few milliseconds
/// costs the leader and the worker a few messages a second, not hundreds.
const HINT_EVERY: Duration = Duration::from_millis(250);

struct AgentNode {
    client: String,
    backlog: Arc<Mutex<Backlog>>,
    /// Set by the watcher, cleared when the hint went out.
    files_ready: Arc<AtomicBool>,
    last_hint: Option<std::time::Instant>,
    complain_after: Duration,
}

impl Handler for AgentNode {
    fn held(&self) -> Vec<proto::Assignment> {
        Vec::new()
    }
    fn load(&self) -> f64 {
        0.0
    }
    fn progress(&mut self) -> Vec<proto::ClientProgress> {
        let b = *self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
        vec![proto::ClientProgress {
            client: self.client.clone(),
            backlog_files: b.files,
            backlog_bytes: b.bytes,
            oldest_backlog_s: b.oldest_s,
            behind: b.files > 0 && Duration::from_secs(b.oldest_s) >= self.complain_after,
            ..Default::default()
        }]
    }
    fn message(&mut self, _body: Body, _out: &NodeOutbox) {}
    fn lease(&mut self, _valid: bool, out: Option<&NodeOutbox>) {
        let Some(out) = out else { return };
        if self.last_hint.is_some_and(|at| at.elapsed() < HINT_EVERY) {
            return;
        }
        if self.files_ready.swap(false, Ordering::Relaxed) {
            self.last_hint = Some(std::time::Instant::now());
            let hint = proto::NodeMessage {
                body: Some(proto::node_message::Body::FilesReady(proto::FilesReady {
                    client: self.client.clone(),
                })),
            };
            if out.try_send(hint).is_err() {
                // The session is busy or going away: try again at the next tick.
                self.files_ready.store(true, Ordering::Relaxed);
            }
        }
    }
    async fn shutdown(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_counts_only_files_a_worker_would_pull() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), b"12345").unwrap();
        std::fs::write(dir.path().join("b.jsonl"), b"1").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"1").unwrap();
        std::fs::write(dir.path().join("c.tmp"), b"1").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.jsonl"), dir.path().join("link")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(90);
        let b = scan(dir.path(), later).unwrap();
        assert_eq!((b.files, b.bytes), (2, 6));
        assert!((89..=91).contains(&b.oldest_s), "{b:?}");
    }
}

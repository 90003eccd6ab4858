//! The optional client agent on a producing host: registers as the agent of an added client
//! and heartbeats, so `sqdctl status` shows `agent: up`. Watching the directory and reporting
//! backlog arrive with the data plane.

use std::path::PathBuf;

use tokio::sync::watch;
use tracing::info;

use crate::config::ClientConfig;
use crate::daemon::{DaemonError, PidLock};
use crate::node::{self, Handler, NodeError, NodeOutbox};
use crate::proto::{self, leader_message::Body};
use crate::version::VERSION;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(
        "watch directory {path} is not usable: {reason}; pass the stats directory with --watch"
    )]
    Watch { path: PathBuf, reason: String },
}

/// Where the agent keeps its pid file: sqd's own area inside the watched directory.
pub fn runtime_dir(watch: &std::path::Path) -> PathBuf {
    watch.join(".sqd")
}

pub async fn run(cfg: ClientConfig, shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    match std::fs::metadata(&cfg.watch) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(AgentError::Watch {
                path: cfg.watch.clone(),
                reason: "not a directory".into(),
            });
        }
        Err(e) => {
            return Err(AgentError::Watch {
                path: cfg.watch.clone(),
                reason: e.to_string(),
            });
        }
    }
    let _lock = PidLock::acquire(&runtime_dir(&cfg.watch), "client")?;
    let ident = node::Identity {
        role: proto::NodeRole::Agent,
        id: cfg.name.clone(),
        version: std::env::var("SQD_ADVERTISE_VERSION").unwrap_or_else(|_| VERSION.to_owned()),
        addr: String::new(),
        cluster: String::new(),
        capacity: 0,
    };
    info!(client = %cfg.name, leader = %cfg.leader, watch = %cfg.watch.display(), "agent starting");
    node::run(&ident, &cfg.leader, &mut AgentNode, shutdown).await?;
    info!(client = %cfg.name, "agent stopped");
    Ok(())
}

struct AgentNode;

impl Handler for AgentNode {
    fn held(&self) -> Vec<proto::Assignment> {
        Vec::new()
    }
    fn load(&self) -> f64 {
        0.0
    }
    fn message(&mut self, _body: Body, _out: &NodeOutbox) {}
    fn lease(&mut self, _valid: bool, _out: Option<&NodeOutbox>) {}
    async fn shutdown(&mut self) {}
}

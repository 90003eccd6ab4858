//! PLACEHOLDER while the real config module is written (same API).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub cluster: String,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub grace_ms: u64,
    pub max_moves_per_tick: usize,
    pub log: LogConfig,
}
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub id: String,
    pub leader: String,
    pub store: PathBuf,
    pub listen: Option<SocketAddr>,
    pub capacity: u32,
    pub cluster: Option<String>,
    pub log: LogConfig,
}
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub name: String,
    pub leader: String,
    pub watch: PathBuf,
    pub log: LogConfig,
}
#[derive(Debug, Clone, Default)]
pub struct LeaderFlags {
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub cluster: Option<String>,
    pub heartbeat_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}
#[derive(Debug, Clone, Default)]
pub struct WorkerFlags {
    pub id: Option<String>,
    pub leader: Option<String>,
    pub store: Option<PathBuf>,
    pub listen: Option<String>,
    pub capacity: Option<u32>,
    pub cluster: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}
#[derive(Debug, Clone, Default)]
pub struct ClientFlags {
    pub name: Option<String>,
    pub leader: Option<String>,
    pub watch: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Worker,
    Client,
}
impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Leader => "leader",
            Mode::Worker => "worker",
            Mode::Client => "client",
        }
    }
}
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{}", .problems.join("\n"))]
    Invalid { problems: Vec<String> },
}
fn log(l: &Option<String>) -> LogConfig {
    LogConfig {
        level: l.clone().unwrap_or("info".into()),
        format: LogFormat::Text,
    }
}
impl LeaderConfig {
    pub fn load(_f: Option<&Path>, fl: &LeaderFlags) -> Result<Self, ConfigError> {
        Ok(LeaderConfig {
            listen: fl
                .listen
                .clone()
                .unwrap_or("127.0.0.1:7070".into())
                .parse()
                .map_err(|_| ConfigError::Invalid {
                    problems: vec!["listen".into()],
                })?,
            state_dir: fl.state_dir.clone().unwrap_or("sqd-state".into()),
            cluster: fl.cluster.clone().unwrap_or("sqd".into()),
            heartbeat_ms: fl.heartbeat_ms.unwrap_or(1000),
            lease_ms: fl.lease_ms.unwrap_or(3000),
            grace_ms: fl.grace_ms.unwrap_or(500),
            max_moves_per_tick: 8,
            log: log(&fl.log_level),
        })
    }
}
impl WorkerConfig {
    pub fn load(_f: Option<&Path>, fl: &WorkerFlags) -> Result<Self, ConfigError> {
        Ok(WorkerConfig {
            id: fl.id.clone().ok_or(ConfigError::Invalid {
                problems: vec!["--id".into()],
            })?,
            leader: fl.leader.clone().unwrap_or("127.0.0.1:7070".into()),
            store: fl.store.clone().ok_or(ConfigError::Invalid {
                problems: vec!["--store".into()],
            })?,
            listen: None,
            capacity: fl.capacity.unwrap_or(1000),
            cluster: fl.cluster.clone(),
            log: log(&fl.log_level),
        })
    }
}
impl ClientConfig {
    pub fn load(_f: Option<&Path>, fl: &ClientFlags) -> Result<Self, ConfigError> {
        Ok(ClientConfig {
            name: fl.name.clone().ok_or(ConfigError::Invalid {
                problems: vec!["--name".into()],
            })?,
            leader: fl.leader.clone().unwrap_or("127.0.0.1:7070".into()),
            watch: fl.watch.clone().ok_or(ConfigError::Invalid {
                problems: vec!["--watch".into()],
            })?,
            log: log(&fl.log_level),
        })
    }
}
pub fn sample(_m: Mode) -> &'static str {
    ""
}

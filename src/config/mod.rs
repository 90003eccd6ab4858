//! Config of the three daemon modes: TOML files, command-line flags over them, and validation
//! that reports every problem at once, each naming the file (or flag), the key and the reason.
//!
//! Loading goes in three steps: take each known key out of the file's table and check its
//! type (what is left over is an unknown key), lay the flags over the file values and the
//! defaults under them, then check each value's own rule and the rules between values
//! (`lease_ms` against `heartbeat_ms`, `grace_ms` against `lease_ms`). Nothing stops at the
//! first problem; [`ConfigError::Invalid`] lists them all, one per line.

use std::fmt::Display;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

pub use crate::transport::ssh::TransferMode;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`log_format = "text"`).
    Text,
    /// One JSON object per line (`log_format = "json"`).
    Json,
}

/// Logging settings shared by every mode (keys `log_level`, `log_format`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Log filter, e.g. `info` or `sqd=debug`; default `info`.
    pub level: String,
    /// Default [`LogFormat::Text`].
    pub format: LogFormat,
}

/// Config of `sqd --mode leader`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderConfig {
    /// Key `listen`, default 127.0.0.1:7070.
    pub listen: SocketAddr,
    /// Key `metrics`, optional: where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics: Option<SocketAddr>,
    /// Key `state_dir`, default `sqd-state`.
    pub state_dir: PathBuf,
    /// Key `cluster`, default `sqd`; 1-64 characters of `[A-Za-z0-9_.-]`.
    pub cluster: String,
    /// Default 1000; 50..=60000.
    pub heartbeat_ms: u64,
    /// Default 3000; at least 2 × `heartbeat_ms`, at most 600000.
    pub lease_ms: u64,
    /// Default 500; at most `lease_ms`.
    pub grace_ms: u64,
    /// Default 8; 1..=10000.
    pub max_moves_per_tick: usize,
    pub log: LogConfig,
}

/// Config of `sqd --mode worker`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Key `id`, required; 1-64 characters of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// Key `leader`, HOST:PORT, default `127.0.0.1:7070`.
    pub leader: String,
    /// Key `store`, required.
    pub store: PathBuf,
    /// Key `listen`, optional.
    pub listen: Option<SocketAddr>,
    /// Key `metrics`, optional: where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics: Option<SocketAddr>,
    /// Key `capacity`, default 1000; 1..=1000000.
    pub capacity: u32,
    /// Key `ssh_key`: private key for clients added without `--key`.
    pub ssh_key: Option<PathBuf>,
    /// Key `known_hosts`: pinned host keys for clients added without `--known-hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Key `poll_ms`, default 1000: pause between directory listings when idle.
    pub poll_ms: u64,
    /// Key `settle_ms`, default 1000: how long a file must stay unchanged to count as complete.
    pub settle_ms: u64,
    /// Key `batch_files`, default 1000: most files claimed and committed per cycle.
    pub batch_files: usize,
    /// Key `transfers_in_flight`, default 256: concurrent SFTP file transfers per client.
    pub transfers_in_flight: usize,
    /// Key `max_file_mb`, default 4096: larger files are left in place with an error.
    pub max_file_bytes: u64,
    /// Key `transfer`, default `auto`: batch mode where the host allows it, else SFTP;
    /// `sftp` never runs commands on the producing hosts.
    pub transfer: TransferMode,
    /// Key `cluster`, optional; same rule as the leader's.
    pub cluster: Option<String>,
    pub log: LogConfig,
}

/// Config of `sqd --mode client`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Key `complain_after_s`, default 60: backlog age that makes the agent complain.
    pub complain_after: std::time::Duration,
    /// Key `name`, required; 1-128 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Key `leader`, HOST:PORT, default `127.0.0.1:7070`.
    pub leader: String,
    /// Key `watch`, required.
    pub watch: PathBuf,
    pub log: LogConfig,
}

/// Values given on the command line; `Some` overrides the file.
#[derive(Debug, Clone, Default)]
pub struct LeaderFlags {
    pub listen: Option<String>,
    pub metrics: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub cluster: Option<String>,
    pub heartbeat_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

/// Values given on the command line; `Some` overrides the file.
#[derive(Debug, Clone, Default)]
pub struct WorkerFlags {
    pub id: Option<String>,
    pub leader: Option<String>,
    pub store: Option<PathBuf>,
    pub listen: Option<String>,
    pub metrics: Option<String>,
    pub capacity: Option<u32>,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub poll_ms: Option<u64>,
    pub settle_ms: Option<u64>,
    pub transfer: Option<String>,
    pub cluster: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

/// Values given on the command line; `Some` overrides the file.
#[derive(Debug, Clone, Default)]
pub struct ClientFlags {
    pub complain_after_s: Option<u64>,
    pub name: Option<String>,
    pub leader: Option<String>,
    pub watch: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

/// The daemon modes of `sqd --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Worker,
    Client,
}

impl Mode {
    /// `"leader"`, `"worker"` or `"client"`, as written after `--mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Leader => "leader",
            Mode::Worker => "worker",
            Mode::Client => "client",
        }
    }
}

/// Every problem found, one per line when displayed.
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

/// The commented sample config for a mode (the exact text of `config/<mode>.toml`).
pub fn sample(mode: Mode) -> &'static str {
    match mode {
        Mode::Leader => include_str!("../../config/leader.toml"),
        Mode::Worker => include_str!("../../config/worker.toml"),
        Mode::Client => include_str!("../../config/client.toml"),
    }
}

const DEFAULT_ADDR: &str = "127.0.0.1:7070";
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_LOG_FORMAT: &str = "text";
const CLUSTER_MAX: usize = 64;
const WORKER_ID_MAX: usize = 64;
const CLIENT_NAME_MAX: usize = 128;
const HEARTBEAT_MS: (i128, i128) = (50, 60_000);
/// The lower bound is 2 × the smallest heartbeat; the rule against the actual heartbeat is
/// checked on its own.
const LEASE_MS: (i128, i128) = (100, 600_000);
const GRACE_MS: (i128, i128) = (0, 600_000);
const MAX_MOVES_PER_TICK: (i128, i128) = (1, 10_000);
const CAPACITY: (i128, i128) = (1, 1_000_000);

const LEADER_KEYS: &[&str] = &[
    "listen",
    "metrics",
    "state_dir",
    "cluster",
    "heartbeat_ms",
    "lease_ms",
    "grace_ms",
    "max_moves_per_tick",
    "log_level",
    "log_format",
];
const WORKER_KEYS: &[&str] = &[
    "id",
    "leader",
    "store",
    "listen",
    "metrics",
    "capacity",
    "cluster",
    "ssh_key",
    "known_hosts",
    "poll_ms",
    "settle_ms",
    "batch_files",
    "transfers_in_flight",
    "max_file_mb",
    "transfer",
    "log_level",
    "log_format",
];
const CLIENT_KEYS: &[&str] = &[
    "name",
    "leader",
    "watch",
    "complain_after_s",
    "log_level",
    "log_format",
];

impl LeaderConfig {
    /// Reads `file` (if any), lays `flags` over it and the defaults under it, and checks it all.
    pub fn load(file: Option<&Path>, flags: &LeaderFlags) -> Result<Self, ConfigError> {
        let mut l = Loader::open(file)?;
        let listen = l.string("listen");
        let metrics = l.string("metrics");
        let state_dir = l.string("state_dir");
        let cluster = l.string("cluster");
        let heartbeat = l.integer("heartbeat_ms");
        let lease = l.integer("lease_ms");
        let grace = l.integer("grace_ms");
        let moves = l.integer("max_moves_per_tick");
        let log = l.log_keys();
        l.unknown_keys(LEADER_KEYS);

        let listen = merge(flags.listen.clone(), listen).or_default(DEFAULT_ADDR.into());
        let listen = l.check("listen", listen, socket_addr);
        let metrics = l.check(
            "metrics",
            merge(flags.metrics.clone(), metrics),
            socket_addr,
        );
        let state_dir = merge(flags.state_dir.clone(), state_dir.map(PathBuf::from))
            .or_default(PathBuf::from("sqd-state"));
        let state_dir = l.check("state_dir", state_dir, non_empty_path);
        let cluster = merge(flags.cluster.clone(), cluster).or_default("sqd".into());
        let cluster = l.check("cluster", cluster, |v| name_rule(v, CLUSTER_MAX));
        let heartbeat = merge(flags.heartbeat_ms.map(i128::from), heartbeat).or_default(1000);
        let heartbeat = l.check("heartbeat_ms", heartbeat, |v| {
            ranged::<u64>(v, HEARTBEAT_MS)
        });
        let lease = merge(flags.lease_ms.map(i128::from), lease).or_default(3000);
        let lease = l.check("lease_ms", lease, |v| ranged::<u64>(v, LEASE_MS));
        let grace = merge(flags.grace_ms.map(i128::from), grace).or_default(500);
        let grace = l.check("grace_ms", grace, |v| ranged::<u64>(v, GRACE_MS));
        let moves = moves.or_default(8);
        let moves = l.check("max_moves_per_tick", moves, |v| {
            ranged::<usize>(v, MAX_MOVES_PER_TICK)
        });
        let log = l.log(log, flags.log_level.clone(), flags.log_format.clone());

        if let (Some(hb), Some(lease)) = (&heartbeat, &lease) {
            let need = hb.value.saturating_mul(2);
            if lease.value < need {
                if lease.origin != Origin::Default || hb.origin == Origin::Default {
                    let from = l.source_note(hb.origin, lease.origin, "heartbeat_ms");
                    let reason = format!(
                        "{} must be at least 2 × heartbeat_ms ({}{from})",
                        lease.value, hb.value
                    );
                    l.problem(lease.origin, "lease_ms", reason);
                } else {
                    let reason = format!(
                        "{} needs lease_ms of at least 2 × {} = {need}, but lease_ms is the \
                         default {}; raise lease_ms too",
                        hb.value, hb.value, lease.value
                    );
                    l.problem(hb.origin, "heartbeat_ms", reason);
                }
            }
        }
        if let (Some(lease), Some(grace)) = (&lease, &grace)
            && grace.value > lease.value
        {
            if grace.origin != Origin::Default || lease.origin == Origin::Default {
                let from = l.source_note(lease.origin, grace.origin, "lease_ms");
                let reason = format!(
                    "{} must be at most lease_ms ({}{from})",
                    grace.value, lease.value
                );
                l.problem(grace.origin, "grace_ms", reason);
            } else {
                let reason = format!(
                    "{} is less than grace_ms (the default {}), which must not exceed \
                     lease_ms; lower grace_ms too",
                    lease.value, grace.value
                );
                l.problem(lease.origin, "lease_ms", reason);
            }
        }

        match (
            listen, state_dir, cluster, heartbeat, lease, grace, moves, log,
        ) {
            (
                Some(listen),
                Some(state_dir),
                Some(cluster),
                Some(heartbeat),
                Some(lease),
                Some(grace),
                Some(moves),
                Some(log),
            ) if l.problems.is_empty() => Ok(LeaderConfig {
                listen: listen.value,
                metrics: metrics.map(|v| v.value),
                state_dir: state_dir.value,
                cluster: cluster.value,
                heartbeat_ms: heartbeat.value,
                lease_ms: lease.value,
                grace_ms: grace.value,
                max_moves_per_tick: moves.value,
                log,
            }),
            _ => Err(l.into_error()),
        }
    }
}

impl WorkerConfig {
    /// Reads `file` (if any), lays `flags` over it and the defaults under it, and checks it all.
    pub fn load(file: Option<&Path>, flags: &WorkerFlags) -> Result<Self, ConfigError> {
        let mut l = Loader::open(file)?;
        let id = l.string("id");
        let leader = l.string("leader");
        let store = l.string("store");
        let listen = l.string("listen");
        let metrics = l.string("metrics");
        let capacity = l.integer("capacity");
        let cluster = l.string("cluster");
        let ssh_key = l.string("ssh_key");
        let known_hosts = l.string("known_hosts");
        let poll_ms = l.integer("poll_ms");
        let settle_ms = l.integer("settle_ms");
        let batch_files = l.integer("batch_files");
        let in_flight = l.integer("transfers_in_flight");
        let max_file_mb = l.integer("max_file_mb");
        let transfer = l.string("transfer");
        let log = l.log_keys();
        l.unknown_keys(WORKER_KEYS);

        let id = l.require("id", "--id ID", merge(flags.id.clone(), id));
        let id = l.check("id", id, |v| name_rule(v, WORKER_ID_MAX));
        let leader = merge(flags.leader.clone(), leader).or_default(DEFAULT_ADDR.into());
        let leader = l.check("leader", leader, leader_addr);
        let store = merge(flags.store.clone(), store.map(PathBuf::from));
        let store = l.require("store", "--store DIR", store);
        let store = l.check("store", store, non_empty_path);
        let listen = l.check("listen", merge(flags.listen.clone(), listen), socket_addr);
        let metrics = l.check(
            "metrics",
            merge(flags.metrics.clone(), metrics),
            socket_addr,
        );
        let capacity = merge(flags.capacity.map(i128::from), capacity).or_default(1000);
        let capacity = l.check("capacity", capacity, |v| ranged::<u32>(v, CAPACITY));
        let cluster = merge(flags.cluster.clone(), cluster);
        let cluster = l.check("cluster", cluster, |v| name_rule(v, CLUSTER_MAX));
        let ssh_key = merge(flags.ssh_key.clone(), ssh_key.map(PathBuf::from));
        let ssh_key = l.check("ssh_key", ssh_key, absolute_path);
        let known_hosts = merge(flags.known_hosts.clone(), known_hosts.map(PathBuf::from));
        let known_hosts = l.check("known_hosts", known_hosts, absolute_path);
        let poll_ms = merge(flags.poll_ms.map(i128::from), poll_ms).or_default(1000);
        let poll_ms = l.check("poll_ms", poll_ms, |v| ranged::<u64>(v, (10, 600_000)));
        let settle_ms = merge(flags.settle_ms.map(i128::from), settle_ms).or_default(1000);
        let settle_ms = l.check("settle_ms", settle_ms, |v| ranged::<u64>(v, (0, 3_600_000)));
        let batch_files = l.check("batch_files", batch_files.or_default(1000), |v| {
            ranged::<usize>(v, (1, 100_000))
        });
        let in_flight = l.check("transfers_in_flight", in_flight.or_default(256), |v| {
            ranged::<usize>(v, (1, 1024))
        });
        let max_file_mb = l.check("max_file_mb", max_file_mb.or_default(4096), |v| {
            ranged::<u64>(v, (1, 1 << 30))
        });
        let transfer = merge(flags.transfer.clone(), transfer).or_default("auto".into());
        let transfer = l.check("transfer", transfer, transfer_mode);
        let log = l.log(log, flags.log_level.clone(), flags.log_format.clone());
        let data_plane = match (poll_ms, settle_ms, batch_files, in_flight, max_file_mb) {
            (Some(p), Some(s), Some(b), Some(i), Some(m)) => {
                Some((p.value, s.value, b.value, i.value, m.value))
            }
            _ => None,
        };

        match (id, leader, store, capacity, log, data_plane, transfer) {
            (
                Some(id),
                Some(leader),
                Some(store),
                Some(capacity),
                Some(log),
                Some((poll_ms, settle_ms, batch_files, transfers_in_flight, max_file_mb)),
                Some(transfer),
            ) if l.problems.is_empty() => Ok(WorkerConfig {
                id: id.value,
                leader: leader.value,
                store: store.value,
                listen: listen.map(|v| v.value),
                metrics: metrics.map(|v| v.value),
                capacity: capacity.value,
                cluster: cluster.map(|v| v.value),
                ssh_key: ssh_key.map(|v| v.value),
                known_hosts: known_hosts.map(|v| v.value),
                poll_ms,
                settle_ms,
                batch_files,
                transfers_in_flight,
                max_file_bytes: max_file_mb.saturating_mul(1024 * 1024),
                transfer: transfer.value,
                log,
            }),
            _ => Err(l.into_error()),
        }
    }
}

impl ClientConfig {
    /// Reads `file` (if any), lays `flags` over it and the defaults under it, and checks it all.
    pub fn load(file: Option<&Path>, flags: &ClientFlags) -> Result<Self, ConfigError> {
        let mut l = Loader::open(file)?;
        let name = l.string("name");
        let leader = l.string("leader");
        let watch = l.string("watch");
        let complain = l.integer("complain_after_s");
        let log = l.log_keys();
        l.unknown_keys(CLIENT_KEYS);

        let name = l.require("name", "--name NAME", merge(flags.name.clone(), name));
        let name = l.check("name", name, |v| name_rule(v, CLIENT_NAME_MAX));
        let leader = merge(flags.leader.clone(), leader).or_default(DEFAULT_ADDR.into());
        let leader = l.check("leader", leader, leader_addr);
        let watch = merge(flags.watch.clone(), watch.map(PathBuf::from));
        let watch = l.require("watch", "--watch DIR", watch);
        let watch = l.check("watch", watch, non_empty_path);
        let complain = merge(flags.complain_after_s.map(i128::from), complain).or_default(60);
        let complain = l.check("complain_after_s", complain, |v| {
            ranged::<u64>(v, (1, 86_400))
        });
        let log = l.log(log, flags.log_level.clone(), flags.log_format.clone());

        match (name, leader, watch, complain, log) {
            (Some(name), Some(leader), Some(watch), Some(complain), Some(log))
                if l.problems.is_empty() =>
            {
                Ok(ClientConfig {
                    complain_after: std::time::Duration::from_secs(complain.value),
                    name: name.value,
                    leader: leader.value,
                    watch: watch.value,
                    log,
                })
            }
            _ => Err(l.into_error()),
        }
    }
}

/// Where a value came from; problems name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Default,
    File,
    Flag,
}

/// A value and where it came from.
#[derive(Debug, Clone)]
struct Sourced<T> {
    value: T,
    origin: Origin,
}

/// One key after a step of loading.
enum Slot<T> {
    Set(Sourced<T>),
    /// Given nowhere.
    Missing,
    /// Given with a problem that is already reported.
    Broken,
}

impl<T> Slot<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Slot<U> {
        match self {
            Slot::Set(Sourced { value, origin }) => Slot::Set(Sourced {
                value: f(value),
                origin,
            }),
            Slot::Missing => Slot::Missing,
            Slot::Broken => Slot::Broken,
        }
    }

    fn or_default(self, value: T) -> Slot<T> {
        match self {
            Slot::Missing => Slot::Set(Sourced {
                value,
                origin: Origin::Default,
            }),
            other => other,
        }
    }
}

/// A flag, when given, wins over the file value.
fn merge<T>(flag: Option<T>, file: Slot<T>) -> Slot<T> {
    match flag {
        Some(value) => Slot::Set(Sourced {
            value,
            origin: Origin::Flag,
        }),
        None => file,
    }
}

/// The file values of the log keys, before flags.
struct LogSlots {
    level: Slot<String>,
    format: Slot<String>,
}

/// The file's table being taken apart, and the problems found so far.
struct Loader {
    file: Option<PathBuf>,
    table: Table,
    problems: Vec<String>,
}

impl Loader {
    fn open(file: Option<&Path>) -> Result<Self, ConfigError> {
        let table = match file {
            None => Table::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<Table>().map_err(|e| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: syntax_message(&text, &e),
                })?
            }
        };
        Ok(Loader {
            file: file.map(Path::to_path_buf),
            table,
            problems: Vec::new(),
        })
    }

    /// How a problem names the source of `key`.
    fn at(&self, origin: Origin, key: &str) -> String {
        match (origin, &self.file) {
            (Origin::Flag, _) => format!("flag --{}", key.replace('_', "-")),
            (Origin::File, Some(file)) => format!("{}: key `{key}`", file.display()),
            _ => format!("key `{key}` (default)"),
        }
    }

    fn problem(&mut self, origin: Origin, key: &str, reason: impl Display) {
        let at = self.at(origin, key);
        self.problems.push(format!("{at}: {reason}"));
    }

    /// Names where the other value of a cross-field rule came from, when that differs from
    /// where the value being blamed came from.
    fn source_note(&self, other: Origin, own: Origin, key: &str) -> String {
        if other == own {
            return String::new();
        }
        match (other, &self.file) {
            (Origin::Flag, _) => format!(", from flag --{}", key.replace('_', "-")),
            (Origin::File, Some(file)) => format!(", from {}", file.display()),
            _ => ", the default".to_string(),
        }
    }

    /// Takes `key` out of the file's table, checking its type.
    fn take<T>(
        &mut self,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Slot<T> {
        let Some(raw) = self.table.remove(key) else {
            return Slot::Missing;
        };
        match convert(&raw) {
            Some(value) => Slot::Set(Sourced {
                value,
                origin: Origin::File,
            }),
            None => {
                let reason = format!("expected {expected}, found {}", describe(&raw));
                self.problem(Origin::File, key, reason);
                Slot::Broken
            }
        }
    }

    fn string(&mut self, key: &str) -> Slot<String> {
        self.take(key, "a string", |v| v.as_str().map(str::to_owned))
    }

    fn integer(&mut self, key: &str) -> Slot<i128> {
        self.take(key, "an integer", |v| v.as_integer().map(i128::from))
    }

    fn log_keys(&mut self) -> LogSlots {
        LogSlots {
            level: self.string("log_level"),
            format: self.string("log_format"),
        }
    }

    /// Reports whatever is left in the file's table.
    fn unknown_keys(&mut self, valid: &[&str]) {
        let left: Vec<String> = self.table.keys().cloned().collect();
        for key in left {
            let hint = match closest(&key, valid) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => String::new(),
            };
            let reason = format!("unknown key{hint} (valid keys: {})", valid.join(", "));
            self.problem(Origin::File, &key, reason);
        }
        self.table.clear();
    }

    /// Reports a value given nowhere.
    fn require<T>(&mut self, key: &str, flag: &str, slot: Slot<T>) -> Slot<T> {
        if !matches!(slot, Slot::Missing) {
            return slot;
        }
        let message = match &self.file {
            Some(file) => format!(
                "key `{key}` is required: set it in {} or pass {flag}",
                file.display()
            ),
            None => format!("key `{key}` is required: pass {flag}"),
        };
        self.problems.push(message);
        Slot::Broken
    }

    /// Applies a value's own rule; `None` when the value is absent or has a problem.
    fn check<T, U>(
        &mut self,
        key: &str,
        slot: Slot<T>,
        rule: impl FnOnce(T) -> Result<U, String>,
    ) -> Option<Sourced<U>> {
        let Slot::Set(Sourced { value, origin }) = slot else {
            return None;
        };
        match rule(value) {
            Ok(value) => Some(Sourced { value, origin }),
            Err(reason) => {
                self.problem(origin, key, reason);
                None
            }
        }
    }

    fn log(
        &mut self,
        file: LogSlots,
        level: Option<String>,
        format: Option<String>,
    ) -> Option<LogConfig> {
        let level = merge(level, file.level).or_default(DEFAULT_LOG_LEVEL.into());
        let level = self.check("log_level", level, log_level);
        let format = merge(format, file.format).or_default(DEFAULT_LOG_FORMAT.into());
        let format = self.check("log_format", format, log_format);
        Some(LogConfig {
            level: level?.value,
            format: format?.value,
        })
    }

    fn into_error(mut self) -> ConfigError {
        if self.problems.is_empty() {
            // Every absent value is reported where it is found absent; keep the error
            // meaningful should that ever be missed.
            self.problems.push("config is incomplete".to_string());
        }
        ConfigError::Invalid {
            problems: self.problems,
        }
    }
}

/// A TOML value as a problem shows it: its type and, for scalars, the value.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f:?}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

/// The parser's message on one line, led by the line and column when known.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let before = e.span().and_then(|span| text.get(..span.start));
    match before {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The valid key nearest to a misspelt one, if it is near enough to be a likely typo.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn ranged<U: TryFrom<i128>>(v: i128, (lo, hi): (i128, i128)) -> Result<U, String> {
    if !(lo..=hi).contains(&v) {
        return Err(format!(
            "{v} is out of range: must be between {lo} and {hi}"
        ));
    }
    U::try_from(v).map_err(|_| format!("{v} does not fit this platform"))
}

/// Cluster ids, worker ids and client names: `[A-Za-z0-9_.-]+`, at most `max` characters.
fn name_rule(v: String, max: usize) -> Result<String, String> {
    if v.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{v:?} contains {c:?}; only letters A-Z a-z, digits, '_', '.' and '-' are allowed"
        ));
    }
    if v.len() > max {
        return Err(format!(
            "{v:?} is {} characters long; at most {max} are allowed",
            v.len()
        ));
    }
    Ok(v)
}

fn socket_addr(v: String) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| {
        format!(
            "{v:?} is not a socket address; expected IP:PORT, e.g. 127.0.0.1:7070 or [::1]:7070"
        )
    })
}

/// A leader address: HOST:PORT with a non-empty host and a port in 1..=65535.
fn leader_addr(v: String) -> Result<String, String> {
    const EXPECTED: &str = "expected HOST:PORT, e.g. 127.0.0.1:7070 or leader.example:7070";
    if v.contains("://") {
        return Err(format!("{v:?} has a scheme; {EXPECTED}"));
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(format!("{v:?} has no port; {EXPECTED}"));
    };
    if host.is_empty() {
        return Err(format!("{v:?} has no host; {EXPECTED}"));
    }
    match port.parse::<u16>() {
        Ok(0) => return Err(format!("{v:?}: port 0 cannot be connected to; {EXPECTED}")),
        Ok(_) => {}
        Err(_) => return Err(format!("{v:?}: {port:?} is not a port number; {EXPECTED}")),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
        if !ok {
            return Err(format!("{v:?}: {host:?} is not a bracketed IPv6 address"));
        }
    } else if host.contains(':') {
        return Err(format!(
            "{v:?}: an IPv6 host must be in brackets, e.g. [::1]:7070"
        ));
    } else if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("{v:?}: the host contains {c:?}; {EXPECTED}"));
    }
    Ok(v)
}

fn absolute_path(v: PathBuf) -> Result<PathBuf, String> {
    if v.is_absolute() {
        Ok(v)
    } else {
        Err(format!("{} must be an absolute path", v.display()))
    }
}

fn non_empty_path(v: PathBuf) -> Result<PathBuf, String> {
    if v.as_os_str().is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(v)
}

fn log_level(v: String) -> Result<String, String> {
    if v.trim().is_empty() {
        return Err(
            "must not be empty; use a level (error, warn, info, debug, trace) or directives \
             like \"sqd=debug\""
                .to_string(),
        );
    }
    Ok(v)
}

fn transfer_mode(v: String) -> Result<TransferMode, String> {
    match v.as_str() {
        "auto" => Ok(TransferMode::Auto),
        "sftp" => Ok(TransferMode::Sftp),
        _ => Err(format!(
            "{v:?} is not a transfer mode; expected \"auto\" (batch mode where the host allows it) or \"sftp\""
        )),
    }
}

fn log_format(v: String) -> Result<LogFormat, String> {
    match v.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "{v:?} is not a log format; expected \"text\" or \"json\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write temp file");
        f
    }

    fn problems(e: ConfigError) -> Vec<String> {
        match e {
            ConfigError::Invalid { problems } => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn sample_path(mode: Mode) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(format!("{}.toml", mode.as_str()))
    }

    fn default_log() -> LogConfig {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }

    fn default_leader() -> LeaderConfig {
        LeaderConfig {
            listen: "127.0.0.1:7070".parse().expect("addr"),
            metrics: None,
            state_dir: "sqd-state".into(),
            cluster: "sqd".into(),
            heartbeat_ms: 1000,
            lease_ms: 3000,
            grace_ms: 500,
            max_moves_per_tick: 8,
            log: default_log(),
        }
    }

    fn worker_flags() -> WorkerFlags {
        WorkerFlags {
            id: Some("w1".into()),
            store: Some("/tmp/store".into()),
            ..Default::default()
        }
    }

    #[test]
    fn sample_text_is_the_file() {
        for mode in [Mode::Leader, Mode::Worker, Mode::Client] {
            let on_disk = std::fs::read_to_string(sample_path(mode)).expect("sample file");
            assert_eq!(sample(mode), on_disk);
            assert!(sample(mode).contains(&format!("sqd --mode {} start --config", mode.as_str())));
        }
    }

    #[test]
    fn leader_sample_is_the_defaults() {
        let path = sample_path(Mode::Leader);
        let from_file = LeaderConfig::load(Some(&path), &LeaderFlags::default()).expect("sample");
        assert_eq!(from_file, default_leader());
        let no_file = LeaderConfig::load(None, &LeaderFlags::default()).expect("defaults");
        assert_eq!(no_file, default_leader());
    }

    #[test]
    fn worker_sample_is_the_defaults_plus_examples() {
        let path = sample_path(Mode::Worker);
        let cfg = WorkerConfig::load(Some(&path), &WorkerFlags::default()).expect("sample");
        assert_eq!(
            cfg,
            WorkerConfig {
                id: "worker-1".into(),
                leader: "127.0.0.1:7070".into(),
                store: "/var/lib/sqd/store".into(),
                listen: None,
                metrics: None,
                capacity: 1000,
                cluster: None,
                ssh_key: None,
                known_hosts: None,
                poll_ms: 1000,
                settle_ms: 1000,
                batch_files: 1000,
                transfers_in_flight: 256,
                max_file_bytes: 4096 * 1024 * 1024,
                transfer: TransferMode::Auto,
                log: default_log(),
            }
        );
    }

    #[test]
    fn client_sample_is_the_defaults_plus_examples() {
        let path = sample_path(Mode::Client);
        let cfg = ClientConfig::load(Some(&path), &ClientFlags::default()).expect("sample");
        assert_eq!(
            cfg,
            ClientConfig {
                complain_after: std::time::Duration::from_secs(60),
                name: "host-1".into(),
                leader: "127.0.0.1:7070".into(),
                watch: "/var/stats".into(),
                log: default_log(),
            }
        );
    }

    #[test]
    fn every_problem_in_a_file_is_reported_at_once() {
        let f = write("colour = \"red\"\nheartbeat_ms = \"fast\"\nmax_moves_per_tick = 0\n");
        let shown = f.path().display().to_string();
        let e = LeaderConfig::load(Some(f.path()), &LeaderFlags::default()).unwrap_err();
        let text = e.to_string();
        let p = problems(e);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p.iter().all(|l| l.starts_with(&format!("{shown}: key `"))),
            "{p:#?}"
        );
        assert!(p.contains(&format!(
            "{shown}: key `heartbeat_ms`: expected an integer, found string \"fast\""
        )));
        assert!(p.iter().any(|l| l.starts_with(&format!(
            "{shown}: key `colour`: unknown key (valid keys: listen, metrics, state_dir,"
        ))));
        assert!(p.iter().any(|l| l.starts_with(&format!(
            "{shown}: key `max_moves_per_tick`: 0 is out of range"
        ))));
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn a_misspelt_key_gets_a_suggestion() {
        let f = write("heartbeat = 1000\n");
        let p = problems(LeaderConfig::load(Some(f.path()), &LeaderFlags::default()).unwrap_err());
        assert!(p[0].contains("did you mean `heartbeat_ms`?"), "{p:#?}");
    }

    #[test]
    fn floats_and_negative_integers_are_rejected() {
        let f = write("heartbeat_ms = 1000.0\ngrace_ms = -1\n");
        let p = problems(LeaderConfig::load(Some(f.path()), &LeaderFlags::default()).unwrap_err());
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].ends_with("key `heartbeat_ms`: expected an integer, found float 1000.0"));
        assert!(p[1].contains("key `grace_ms`: -1 is out of range"));
    }

    #[test]
    fn flags_override_the_file() {
        let f = write("listen = \"127.0.0.1:1\"\ncluster = \"a\"\nlog_format = \"text\"\n");
        let flags = LeaderFlags {
            listen: Some("[::1]:9000".into()),
            cluster: Some("b".into()),
            heartbeat_ms: Some(100),
            lease_ms: Some(600),
            log_format: Some("json".into()),
            ..Default::default()
        };
        let cfg = LeaderConfig::load(Some(f.path()), &flags).expect("valid");
        assert_eq!(
            cfg.listen,
            "[::1]:9000".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(cfg.cluster, "b");
        assert_eq!((cfg.heartbeat_ms, cfg.lease_ms), (100, 600));
        assert_eq!(cfg.log.format, LogFormat::Json);

        let f = write("id = \"from-file\"\nstore = \"/a\"\ncapacity = 5\n");
        let flags = WorkerFlags {
            id: Some("from-flag".into()),
            capacity: Some(7),
            ..Default::default()
        };
        let cfg = WorkerConfig::load(Some(f.path()), &flags).expect("valid");
        assert_eq!((cfg.id.as_str(), cfg.capacity), ("from-flag", 7));
        assert_eq!(cfg.store, PathBuf::from("/a"));
    }

    #[test]
    fn flags_alone_make_a_config() {
        let cfg = WorkerConfig::load(None, &worker_flags()).expect("valid");
        assert_eq!(cfg.id, "w1");
        assert_eq!(cfg.store, PathBuf::from("/tmp/store"));
        assert_eq!(cfg.leader, "127.0.0.1:7070");
        let cfg = ClientConfig::load(
            None,
            &ClientFlags {
                name: Some("h".into()),
                watch: Some("/w".into()),
                leader: Some("leader.example:7070".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(cfg.leader, "leader.example:7070");
    }

    #[test]
    fn missing_required_keys_name_the_flag() {
        let p = problems(WorkerConfig::load(None, &WorkerFlags::default()).unwrap_err());
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(p[0], "key `id` is required: pass --id ID");
        assert_eq!(p[1], "key `store` is required: pass --store DIR");

        let f = write("id = \"w\"\n");
        let shown = f.path().display().to_string();
        let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
        assert_eq!(
            p,
            vec![format!(
                "key `store` is required: set it in {shown} or pass --store DIR"
            )]
        );

        let p = problems(ClientConfig::load(None, &ClientFlags::default()).unwrap_err());
        assert!(
            p[0].contains("--name NAME") && p[1].contains("--watch DIR"),
            "{p:#?}"
        );
    }

    #[test]
    fn lease_below_twice_heartbeat_is_rejected() {
        let f = write("heartbeat_ms = 1000\nlease_ms = 1000\n");
        let shown = f.path().display().to_string();
        let p = problems(LeaderConfig::load(Some(f.path()), &LeaderFlags::default()).unwrap_err());
        assert_eq!(
            p,
            vec![format!(
                "{shown}: key `lease_ms`: 1000 must be at least 2 × heartbeat_ms (1000)"
            )]
        );

        // Mixed sources: the blamed value is named by its own source, the other one too.
        let flags = LeaderFlags {
            heartbeat_ms: Some(1000),
            ..Default::default()
        };
        let f = write("lease_ms = 1500\n");
        let p = problems(LeaderConfig::load(Some(f.path()), &flags).unwrap_err());
        assert!(p[0].contains("key `lease_ms`: 1500 must be at least 2 × heartbeat_ms (1000, from flag --heartbeat-ms)"), "{p:#?}");

        // A flag heartbeat against the default lease blames the flag.
        let flags = LeaderFlags {
            heartbeat_ms: Some(2000),
            ..Default::default()
        };
        let p = problems(LeaderConfig::load(None, &flags).unwrap_err());
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("flag --heartbeat-ms: 2000 needs lease_ms"),
            "{p:#?}"
        );
    }

    #[test]
    fn grace_above_lease_is_rejected() {
        let flags = LeaderFlags {
            heartbeat_ms: Some(100),
            lease_ms: Some(400),
            grace_ms: Some(401),
            ..Default::default()
        };
        let p = problems(LeaderConfig::load(None, &flags).unwrap_err());
        assert_eq!(
            p,
            vec!["flag --grace-ms: 401 must be at most lease_ms (400)".to_string()]
        );
    }

    #[test]
    fn bad_socket_addresses_are_rejected() {
        for bad in ["localhost:7070", "127.0.0.1", "::1:7070", ""] {
            let flags = LeaderFlags {
                listen: Some(bad.into()),
                ..Default::default()
            };
            let p = problems(LeaderConfig::load(None, &flags).unwrap_err());
            assert!(p[0].starts_with("flag --listen: "), "{p:#?}");
            assert!(p[0].contains("not a socket address"), "{p:#?}");
        }
        let f = write("id = \"w\"\nstore = \"/s\"\nlisten = \"nope\"\n");
        let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
        assert!(
            p[0].contains("key `listen`: \"nope\" is not a socket address"),
            "{p:#?}"
        );
    }

    #[test]
    fn bad_leader_addresses_are_rejected() {
        for (bad, why) in [
            ("nohost", "has no port"),
            ("h:notaport", "is not a port number"),
            (":7070", "has no host"),
            ("h:70000", "is not a port number"),
            ("h:0", "port 0"),
            ("http://h:7070", "has a scheme"),
            ("::1:7070", "in brackets"),
            ("[zz]:7070", "bracketed IPv6"),
            ("a b:7070", "host contains"),
        ] {
            let flags = WorkerFlags {
                leader: Some(bad.into()),
                ..worker_flags()
            };
            let p = problems(WorkerConfig::load(None, &flags).unwrap_err());
            assert_eq!(p.len(), 1, "{bad}: {p:#?}");
            assert!(p[0].starts_with("flag --leader: "), "{bad}: {p:#?}");
            assert!(p[0].contains(why), "{bad}: {p:#?}");
        }
        for good in ["[::1]:7070", "leader-1.example.com:1", "10.0.0.1:65535"] {
            let flags = WorkerFlags {
                leader: Some(good.into()),
                ..worker_flags()
            };
            assert_eq!(WorkerConfig::load(None, &flags).expect(good).leader, good);
        }
        let f = write("name = \"c\"\nwatch = \"/w\"\nleader = \"nohost\"\n");
        let p = problems(ClientConfig::load(Some(f.path()), &ClientFlags::default()).unwrap_err());
        assert!(
            p[0].contains("key `leader`: \"nohost\" has no port"),
            "{p:#?}"
        );
    }

    #[test]
    fn transfer_mode_is_auto_or_sftp() {
        let f = write("id = \"w\"\nstore = \"/s\"\ntransfer = \"scp\"\n");
        let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
        assert!(
            p[0].contains("key `transfer`: \"scp\" is not a transfer mode"),
            "{p:#?}"
        );
        let flags = WorkerFlags {
            transfer: Some("sftp".into()),
            ..WorkerFlags::default()
        };
        let cfg = WorkerConfig::load(Some(f.path()), &flags).expect("the flag wins");
        assert_eq!(cfg.transfer, TransferMode::Sftp);
    }

    #[test]
    fn bad_log_format_is_rejected() {
        let f = write("log_format = \"xml\"\nlog_level = \"\"\n");
        let p = problems(LeaderConfig::load(Some(f.path()), &LeaderFlags::default()).unwrap_err());
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].contains("key `log_level`: must not be empty"),
            "{p:#?}"
        );
        assert!(
            p[1].contains(
                "key `log_format`: \"xml\" is not a log format; expected \"text\" or \"json\""
            ),
            "{p:#?}"
        );
        let flags = ClientFlags {
            name: Some("c".into()),
            watch: Some("/w".into()),
            log_format: Some("JSON".into()),
            ..Default::default()
        };
        let p = problems(ClientConfig::load(None, &flags).unwrap_err());
        assert!(p[0].starts_with("flag --log-format: \"JSON\""), "{p:#?}");
    }

    #[test]
    fn names_follow_the_charset_and_length_rules() {
        let long = "a".repeat(65);
        let flags = LeaderFlags {
            cluster: Some(long),
            ..Default::default()
        };
        let p = problems(LeaderConfig::load(None, &flags).unwrap_err());
        assert!(p[0].contains("at most 64"), "{p:#?}");
        let flags = WorkerFlags {
            id: Some("w 1".into()),
            cluster: Some(String::new()),
            ..worker_flags()
        };
        let p = problems(WorkerConfig::load(None, &flags).unwrap_err());
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].starts_with("flag --id: \"w 1\" contains ' '"),
            "{p:#?}"
        );
        assert_eq!(p[1], "flag --cluster: must not be empty");
        let name = "n".repeat(128);
        let flags = ClientFlags {
            name: Some(name.clone()),
            watch: Some("/w".into()),
            ..Default::default()
        };
        assert_eq!(ClientConfig::load(None, &flags).expect("128 ok").name, name);
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.toml");
        match LeaderConfig::load(Some(&path), &LeaderFlags::default()) {
            Err(e @ ConfigError::Read { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            other => panic!("expected Read, got {other:?}"),
        }
        // A directory cannot be read as a file either.
        let e = ClientConfig::load(Some(dir.path()), &ClientFlags::default()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    }

    #[test]
    fn syntax_error_names_the_path_and_line() {
        let f = write("listen = \"127.0.0.1:7070\"\nheartbeat_ms = = 3\n");
        let e = LeaderConfig::load(Some(f.path()), &LeaderFlags::default()).unwrap_err();
        let ConfigError::Syntax { path, message } = &e else {
            panic!("expected Syntax, got {e:?}");
        };
        assert_eq!(path, f.path());
        assert!(message.starts_with("line 2, column"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{}: not valid TOML: line 2", f.path().display())),
            "{text}"
        );
    }

    #[test]
    fn a_section_is_a_wrong_type_or_an_unknown_key() {
        let f = write("id = \"w\"\nstore = \"/s\"\n[leader]\nhost = \"x\"\n");
        let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].ends_with("key `leader`: expected a string, found a table"),
            "{p:#?}"
        );
    }

    #[test]
    fn mode_names() {
        assert_eq!(Mode::Leader.as_str(), "leader");
        assert_eq!(Mode::Worker.as_str(), "worker");
        assert_eq!(Mode::Client.as_str(), "client");
    }
}

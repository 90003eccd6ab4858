//! Config of the three daemon modes: TOML files, command-line flags over them, and validation
//! that reports every problem at once, each naming the file (or flag), the key and the reason.
//!
//! Loading goes in three steps: take each known key out of the file's table and check its
//! type (what is left over is an unknown key), lay the flags over the file values and the
//! defaults under them, then check each value's own rule and the rules between values
//! (`lease_ms` against `heartbeat_ms`, `grace_ms` against `lease_ms`). Nothing stops at the
//! first problem; [`ConfigError::Invalid`] lists them all, one per line.
//!
//! This module holds what the modes share: the loader that collects problems, the merge of
//! flag, file and default, and the flag groups more than one mode takes. Each mode's config,
//! its flags (declared once, with `clap`, and gathered into `sqd`'s command line by
//! [`crate::cli`]) and its loading steps are in `leader.rs`, `worker.rs` and `client.rs`.

mod client;
mod discovery;
mod host_metrics;
mod leader;
mod remote_write;
mod rules;
mod security;
mod state_home;
#[cfg(test)]
mod tests;
mod worker;

use std::fmt::Display;
use std::path::{Path, PathBuf};

use clap::Args;
use toml::{Table, Value};

pub use crate::transport::ssh::TransferMode;
pub use client::{ClientConfig, ClientFlags};
pub use discovery::{DiscoveryFlags, LeaderDiscoveryFlags};
pub use host_metrics::{EmitterConfig, EmitterFlags, HostMetricsConfig, HostMetricsFlags};
pub use leader::{LeaderConfig, LeaderFlags};
pub use remote_write::{RemoteWriteConfig, RemoteWriteFlags};
pub use security::{LeaderSecurityFlags, NodeSecurityFlags, TlsFlags};
pub use worker::{FleetConfig, ShardConfig, WorkerConfig, WorkerFlags};

use rules::Reason;
pub(crate) use state_home::UserEnv;

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

/// Flags every mode takes; `Some` overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct LogFlags {
    /// Log filter (e.g. info, debug, sqd=debug); RUST_LOG wins when set.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Flags of the modes that serve (leader and worker); `Some` overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeFlags {
    /// Address to serve on (leader default 127.0.0.1:7070; a worker serves its shard's
    /// queries there, default 127.0.0.1 on a free port: a leader on another host needs it).
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve Prometheus /metrics, /healthz and /readyz on this IP:PORT.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Cluster id (leader default "sqd"; a worker refuses other clusters).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Flags of the nodes that talk to a leader (worker and client agent); `Some` overrides the
/// file.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeFlags {
    /// Leader address HOST:PORT (default 127.0.0.1:7070).
    #[arg(long)]
    pub leader: Option<String>,
    #[command(flatten)]
    pub security: NodeSecurityFlags,
    #[command(flatten)]
    pub discovery: DiscoveryFlags,
}

/// The daemon modes of `sqd --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Control plane: membership, assignment, durable registry, admin API.
    Leader,
    /// Pulls the files of its assigned clients into its store.
    Worker,
    /// Optional agent on a producing host.
    Client,
}

impl Mode {
    /// Every mode, in the order help and errors list them.
    pub const ALL: [Mode; 3] = [Mode::Leader, Mode::Worker, Mode::Client];

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

impl<T> Sourced<T> {
    /// The value of an optional key, without its origin.
    fn value_of(v: Option<Self>) -> Option<T> {
        v.map(|v| v.value)
    }
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

/// A flag that takes an integer, widened like the file's integers so both meet one range rule.
fn merge_int<T: Into<i128>>(flag: Option<T>, file: Slot<i128>) -> Slot<i128> {
    merge(flag.map(Into::into), file)
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

    /// Reports a broken rule between two values. The rule is stated on `dependent` (its
    /// message gets the note naming where `other` came from), except when `dependent` is only
    /// a default and `other` was set: then the value the user wrote is the one blamed.
    fn broken_pair(
        &mut self,
        (dependent, dependent_origin): (&str, Origin),
        (other, other_origin): (&str, Origin),
        on_dependent: impl FnOnce(&str) -> String,
        on_other: impl FnOnce() -> String,
    ) {
        if dependent_origin != Origin::Default || other_origin == Origin::Default {
            let note = self.source_note(other_origin, dependent_origin, other);
            let reason = on_dependent(&note);
            self.problem(dependent_origin, dependent, reason);
        } else {
            self.problem(other_origin, other, on_other());
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

    fn path(&mut self, key: &str) -> Slot<PathBuf> {
        self.string(key).map(PathBuf::from)
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
        self.required(key, "", flag);
        Slot::Broken
    }

    /// A default the environment may be unable to give; without it the value is required.
    fn or_default_from<T, E: Display>(
        &mut self,
        key: &str,
        flag: &str,
        slot: Slot<T>,
        default: impl FnOnce() -> Result<T, E>,
    ) -> Slot<T> {
        if !matches!(slot, Slot::Missing) {
            return slot;
        }
        match default() {
            Ok(value) => slot.or_default(value),
            Err(why) => {
                self.required(key, &format!(" here ({why})"), flag);
                Slot::Broken
            }
        }
    }

    fn required(&mut self, key: &str, note: &str, flag: &str) {
        let message = match &self.file {
            Some(file) => format!(
                "key `{key}` is required{note}: set it in {} or pass {flag}",
                file.display()
            ),
            None => format!("key `{key}` is required{note}: pass {flag}"),
        };
        self.problems.push(message);
    }

    /// Applies a value's own rule; `None` when the value is absent or has a problem.
    fn check<T, U>(
        &mut self,
        key: &str,
        slot: Slot<T>,
        rule: impl FnOnce(T) -> Result<U, Reason>,
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

    /// An integer key laid over its flag and default, within `range`.
    fn ranged<U: TryFrom<i128>>(
        &mut self,
        key: &str,
        slot: Slot<i128>,
        default: i128,
        range: (i128, i128),
    ) -> Option<Sourced<U>> {
        self.check(key, slot.or_default(default), |v| rules::ranged(v, range))
    }

    fn log(&mut self, file: LogSlots, flags: &LogFlags) -> Option<LogConfig> {
        let level = merge(flags.log_level.clone(), file.level).or_default(DEFAULT_LOG_LEVEL.into());
        let level = self.check("log_level", level, rules::log_level);
        let format =
            merge(flags.log_format.clone(), file.format).or_default(DEFAULT_LOG_FORMAT.into());
        let format = self.check("log_format", format, rules::log_format);
        Some(LogConfig {
            level: level?.value,
            format: format?.value,
        })
    }

    /// The config built from every value, or every problem found; `built` is `None` when a
    /// value it needs is absent or broken (and so already reported).
    fn finish<T>(mut self, built: Option<T>) -> Result<T, ConfigError> {
        match built {
            Some(config) if self.problems.is_empty() => Ok(config),
            _ => {
                if self.problems.is_empty() {
                    // Every absent value is reported where it is found absent; keep the
                    // error meaningful should that ever be missed.
                    self.problems.push("config is incomplete".to_string());
                }
                Err(ConfigError::Invalid {
                    problems: self.problems,
                })
            }
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

/// A node's discovery settings; discovery needs the node token, which signs every datagram.
fn node_discovery<T>(
    l: &mut Loader,
    keys: discovery::DiscoveryKeys,
    flags: &NodeFlags,
    leader: &Option<Sourced<T>>,
    security: &crate::security::NodeSecurity,
) -> Option<crate::discovery::DiscoveryConfig> {
    let leader = leader.as_ref().map(|s| s.origin);
    let found = discovery::load(l, keys, &flags.discovery, None, leader);
    if found.is_some() && security.token_file.is_none() {
        l.problem(
            Origin::Default,
            "token_file",
            "discovery = \"udp\" checks the leader's announcements with the node token: set \
             token_file (the leader's node token file), or give --leader instead",
        );
    }
    found
}

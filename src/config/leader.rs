//! Config of `sqd --mode leader`: its flags, its keys and defaults, and the rules between its
//! timing values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::discovery::{self, DiscoveryKeys, LeaderDiscoveryFlags};
use super::host_metrics::{self, EmitterConfig, EmitterFlags, HostMetricsConfig, HostMetricsFlags};
use super::security::{self, LeaderSecurityFlags, SecurityKeys};
use super::{
    CLUSTER_MAX, ConfigError, DEFAULT_ADDR, LogConfig, LogFlags, LogSlots, ServeFlags, Slot,
    Sourced, UserEnv, merge, merge_int, rules,
};
use crate::discovery::DiscoveryConfig;
use crate::security::LeaderSecurity;

/// Config of `sqd --mode leader`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderConfig {
    /// Key `listen`, default 127.0.0.1:7070.
    pub listen: SocketAddr,
    /// Key `metrics`, optional: where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics: Option<SocketAddr>,
    /// Key `query_listen`, optional: where the Prometheus-compatible query API is served.
    pub query_listen: Option<SocketAddr>,
    /// Key `state_dir`; by default `leader` in sqd's state home (`/var/lib/sqd` for root,
    /// else `$XDG_STATE_HOME/sqd` or `~/.local/state/sqd`), never a relative path.
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
    /// How often the leader collects roll-ups from the workers, in ms; default 60000,
    /// 50..=86400000.
    pub rollup_interval_ms: u64,
    /// Key `rules_file`, optional: the alert rules (TOML, see `config/rules.toml`); without
    /// it only the built-in rules run. Made absolute at load, so a reload reads the same file.
    pub rules_file: Option<PathBuf>,
    /// Key `alertmanager_url`, optional: `http://HOST:PORT` of an Alertmanager that gets the
    /// firing and resolved alerts (`/api/v2/alerts`).
    pub alertmanager_url: Option<String>,
    /// Tokens, TLS and `allow_insecure` (see [`crate::security`]).
    pub security: LeaderSecurity,
    /// Keys `discovery` (`"udp"` turns it on), `discovery_target`, `discovery_interface`,
    /// `probe_interval_ms`; `None` when off.
    pub discovery: Option<DiscoveryConfig>,
    /// The leader's own host sampling.
    pub host_metrics: HostMetricsConfig,
    /// What the leader keeps of every emitter.
    pub emitters: EmitterConfig,
    pub log: LogConfig,
}

/// The leader's command-line flags; `Some` overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct LeaderFlags {
    #[command(flatten)]
    pub serve: ServeFlags,
    /// Directory of the durable registry and pid file (default: /var/lib/sqd/leader as root,
    /// else $XDG_STATE_HOME/sqd/leader, or ~/.local/state/sqd/leader without XDG_STATE_HOME).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve the Prometheus-compatible query API (/api/v1/query, query_range, series, labels)
    /// on this IP:PORT, for Grafana and promtool (default: off).
    #[arg(long, value_name = "ADDR")]
    pub query_listen: Option<String>,
    /// Heartbeat interval the nodes use, in ms (default 1000).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Lease of a node, in ms; at least 2 x heartbeat (default 3000).
    #[arg(long)]
    pub lease_ms: Option<u64>,
    /// Extra wait after a lease before a node is dead, in ms (default 500).
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// How often the leader collects the workers' counters into <state-dir>/rollups.jsonl,
    /// in ms (50-86400000, default 60000).
    #[arg(long, value_name = "MS")]
    pub rollup_interval_ms: Option<u64>,
    /// Alert rules file (TOML; see config/rules.toml); reloaded on SIGHUP and by
    /// `sqdctl reload-rules` (default: only the built-in rules).
    #[arg(long, value_name = "FILE")]
    pub rules_file: Option<PathBuf>,
    /// Send firing and resolved alerts to this Alertmanager, e.g. http://127.0.0.1:9093
    /// (default: none).
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,
    #[command(flatten)]
    pub security: LeaderSecurityFlags,
    #[command(flatten)]
    pub discovery: LeaderDiscoveryFlags,
    #[command(flatten)]
    pub host_metrics: HostMetricsFlags,
    #[command(flatten)]
    pub emitters: EmitterFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

const KEYS: &[&str] = &[
    "listen",
    "metrics",
    "state_dir",
    "cluster",
    "heartbeat_ms",
    "lease_ms",
    "grace_ms",
    "max_moves_per_tick",
    "rollup_interval_ms",
    "query_listen",
    "rules_file",
    "alertmanager_url",
    "log_level",
    "log_format",
];
const HEARTBEAT_MS: (i128, i128) = (50, 60_000);
/// The lower bound is 2 × the smallest heartbeat; the rule against the actual heartbeat is
/// checked on its own.
const LEASE_MS: (i128, i128) = (100, 600_000);
const GRACE_MS: (i128, i128) = (0, 600_000);
const MAX_MOVES_PER_TICK: (i128, i128) = (1, 10_000);
const ROLLUP_INTERVAL_MS: (i128, i128) = (50, 86_400_000);

/// The leader's keys as the file gives them, before flags and defaults.
struct FileKeys {
    listen: Slot<String>,
    metrics: Slot<String>,
    query_listen: Slot<String>,
    state_dir: Slot<PathBuf>,
    cluster: Slot<String>,
    heartbeat: Slot<i128>,
    lease: Slot<i128>,
    grace: Slot<i128>,
    moves: Slot<i128>,
    rollup_interval: Slot<i128>,
    rules_file: Slot<PathBuf>,
    alertmanager_url: Slot<String>,
    security: SecurityKeys,
    discovery: DiscoveryKeys,
    host_metrics: host_metrics::HostSlots,
    emitters: host_metrics::EmitterSlots,
    log: LogSlots,
}

impl FileKeys {
    fn take(l: &mut super::Loader) -> Self {
        let keys = FileKeys {
            listen: l.string("listen"),
            metrics: l.string("metrics"),
            query_listen: l.string("query_listen"),
            state_dir: l.path("state_dir"),
            cluster: l.string("cluster"),
            heartbeat: l.integer("heartbeat_ms"),
            lease: l.integer("lease_ms"),
            grace: l.integer("grace_ms"),
            moves: l.integer("max_moves_per_tick"),
            rollup_interval: l.integer("rollup_interval_ms"),
            rules_file: l.path("rules_file"),
            alertmanager_url: l.string("alertmanager_url"),
            security: SecurityKeys::take_leader(l),
            discovery: DiscoveryKeys::take(l, true),
            host_metrics: l.host_metrics_keys(),
            emitters: l.emitter_keys(),
            log: l.log_keys(),
        };
        l.unknown_keys(
            &[
                KEYS,
                security::LEADER_KEYS,
                discovery::LEADER_KEYS,
                host_metrics::LEADER_KEYS,
            ]
            .concat(),
        );
        keys
    }
}

/// How often nodes report and how long they live without it.
struct Timing {
    heartbeat_ms: u64,
    lease_ms: u64,
    grace_ms: u64,
}

impl LeaderConfig {
    /// Reads `file` (if any), lays `flags` over it and the defaults under it, and checks it all.
    pub fn load(file: Option<&Path>, flags: &LeaderFlags) -> Result<Self, ConfigError> {
        Self::load_as(file, flags, &UserEnv::current())
    }

    /// [`LeaderConfig::load`] with the user and environment the defaults depend on.
    pub(crate) fn load_as(
        file: Option<&Path>,
        flags: &LeaderFlags,
        user: &UserEnv,
    ) -> Result<Self, ConfigError> {
        let mut l = super::Loader::open(file)?;
        let keys = FileKeys::take(&mut l);
        let serve = &flags.serve;
        let listen = merge(serve.listen.clone(), keys.listen).or_default(DEFAULT_ADDR.into());
        let listen = l.check("listen", listen, rules::socket_addr);
        let metrics = merge(serve.metrics.clone(), keys.metrics);
        let metrics = l.check("metrics", metrics, rules::socket_addr);
        let query_listen = merge(flags.query_listen.clone(), keys.query_listen);
        let query_listen = l.check("query_listen", query_listen, rules::socket_addr);
        let state_dir = merge(flags.state_dir.clone(), keys.state_dir);
        let state_dir = l.or_default_from("state_dir", "--state-dir DIR", state_dir, || {
            user.state_home().map(|home| home.join("leader"))
        });
        let state_dir = l.check("state_dir", state_dir, rules::non_empty_path);
        let cluster = merge(serve.cluster.clone(), keys.cluster).or_default("sqd".into());
        let cluster = l.check("cluster", cluster, |v| rules::name(v, CLUSTER_MAX));
        let timing = timing(
            &mut l,
            merge_int(flags.heartbeat_ms, keys.heartbeat),
            merge_int(flags.lease_ms, keys.lease),
            merge_int(flags.grace_ms, keys.grace),
        );
        let moves = l.ranged("max_moves_per_tick", keys.moves, 8, MAX_MOVES_PER_TICK);
        let rollup = l.ranged(
            "rollup_interval_ms",
            merge_int(flags.rollup_interval_ms, keys.rollup_interval),
            60_000,
            ROLLUP_INTERVAL_MS,
        );
        let rules_file = merge(flags.rules_file.clone(), keys.rules_file);
        let rules_file = l.check("rules_file", rules_file, rules::made_absolute);
        let alertmanager_url = merge(flags.alertmanager_url.clone(), keys.alertmanager_url);
        let alertmanager_url = l.check("alertmanager_url", alertmanager_url, rules::http_url);
        let security = security::leader(&mut l, keys.security, &flags.security);
        let discovery = discovery::load(
            &mut l,
            keys.discovery,
            &flags.discovery.common,
            flags.discovery.probe_interval_ms,
            None,
        );
        if discovery.is_some() && security.node_token_file.is_none() {
            l.problem(
                super::Origin::Default,
                "node_token_file",
                "discovery = \"udp\" signs announcements with the node token: set node_token_file \
                 (generate it with `sqd --mode leader init --generate-tokens`)",
            );
        }
        let host_metrics = l.host_metrics(keys.host_metrics, &flags.host_metrics);
        let emitters = l.emitters(keys.emitters, &flags.emitters);
        let log = l.log(keys.log, &flags.log);

        let log = host_metrics.zip(emitters).zip(log);
        let built = match (listen, state_dir, cluster, timing, (moves, rollup), log) {
            (
                Some(listen),
                Some(state_dir),
                Some(cluster),
                Some(timing),
                (Some(moves), Some(rollup)),
                Some(((host_metrics, emitters), log)),
            ) => Some(LeaderConfig {
                host_metrics,
                emitters,
                listen: listen.value,
                metrics: Sourced::value_of(metrics),
                query_listen: Sourced::value_of(query_listen),
                state_dir: state_dir.value,
                cluster: cluster.value,
                heartbeat_ms: timing.heartbeat_ms,
                lease_ms: timing.lease_ms,
                grace_ms: timing.grace_ms,
                max_moves_per_tick: moves.value,
                rollup_interval_ms: rollup.value,
                rules_file: Sourced::value_of(rules_file),
                alertmanager_url: Sourced::value_of(alertmanager_url),
                security,
                discovery,
                log,
            }),
            _ => None,
        };
        l.finish(built)
    }
}

/// Checks each timing value's range, then `lease_ms` against `heartbeat_ms` and `grace_ms`
/// against `lease_ms` wherever both values of a rule are good.
fn timing(
    l: &mut super::Loader,
    heartbeat: Slot<i128>,
    lease: Slot<i128>,
    grace: Slot<i128>,
) -> Option<Timing> {
    let heartbeat = l.ranged::<u64>("heartbeat_ms", heartbeat, 1000, HEARTBEAT_MS);
    let lease = l.ranged::<u64>("lease_ms", lease, 3000, LEASE_MS);
    let grace = l.ranged::<u64>("grace_ms", grace, 500, GRACE_MS);
    if let (Some(hb), Some(lease)) = (&heartbeat, &lease)
        && lease.value < hb.value.saturating_mul(2)
    {
        let need = hb.value.saturating_mul(2);
        l.broken_pair(
            ("lease_ms", lease.origin),
            ("heartbeat_ms", hb.origin),
            |from| {
                format!(
                    "{} must be at least 2 × heartbeat_ms ({}{from})",
                    lease.value, hb.value
                )
            },
            || {
                format!(
                    "{} needs lease_ms of at least 2 × {} = {need}, but lease_ms is the \
                     default {}; raise lease_ms too",
                    hb.value, hb.value, lease.value
                )
            },
        );
    }
    if let (Some(lease), Some(grace)) = (&lease, &grace)
        && grace.value > lease.value
    {
        l.broken_pair(
            ("grace_ms", grace.origin),
            ("lease_ms", lease.origin),
            |from| {
                format!(
                    "{} must be at most lease_ms ({}{from})",
                    grace.value, lease.value
                )
            },
            || {
                format!(
                    "{} is less than grace_ms (the default {}), which must not exceed \
                     lease_ms; lower grace_ms too",
                    lease.value, grace.value
                )
            },
        );
    }
    Some(Timing {
        heartbeat_ms: heartbeat?.value,
        lease_ms: lease?.value,
        grace_ms: grace?.value,
    })
}

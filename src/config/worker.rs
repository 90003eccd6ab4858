//! Config of `sqd --mode worker`: its flags, its keys and defaults, and the loading steps
//! (where it stands in the cluster, how it reaches producing hosts, how fast it pulls).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::discovery::{self, DiscoveryKeys};
use super::host_metrics::{self, HostMetricsConfig, HostMetricsFlags};
use super::remote_write::{self, RemoteWriteConfig, RemoteWriteFlags, RemoteWriteKeys};
use super::security::{self, SecurityKeys};
use super::{
    CLUSTER_MAX, ConfigError, DEFAULT_ADDR, LogConfig, LogFlags, LogSlots, NodeFlags, ServeFlags,
    Slot, Sourced, TransferMode, merge, merge_int, node_discovery, rules,
};
use crate::discovery::DiscoveryConfig;
use crate::security::NodeSecurity;

/// Config of `sqd --mode worker`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Key `id`, required; 1-64 characters of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// Key `leader`, HOST:PORT, default `127.0.0.1:7070`; unused when `discovery` is on.
    pub leader: String,
    /// Key `discovery = "udp"`: find the leader by its announcements instead of `leader`.
    pub discovery: Option<DiscoveryConfig>,
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
    /// The time-series shard in the store.
    pub shard: ShardConfig,
    /// How the worker treats hosts that do not answer and workers that do not come back.
    pub fleet: FleetConfig,
    /// Node token and TLS towards the leader (see [`crate::security`]).
    pub security: NodeSecurity,
    /// Where the shard's samples are also shipped (`remote_write_*` keys); `None`: nowhere.
    pub remote_write: Option<Box<RemoteWriteConfig>>,
    /// Host sampling; the disk value is that of the store's filesystem.
    pub host_metrics: HostMetricsConfig,
    pub log: LogConfig,
}

/// How a worker lives among unreachable hosts and dead peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// Key `max_reconnect_s`, default 300: the longest pause between connection attempts to a
    /// host that keeps failing the same way.
    pub max_reconnect_s: u64,
    /// Key `ssh_spawns_per_s`, default 10: most `ssh` processes the worker starts per second
    /// (newly assigned and lately healthy clients go first).
    pub ssh_spawns_per_s: u32,
    /// Key `orphan_after_s`, default 600: how long another worker's unreleased claims wait for
    /// it to come back before they are adopted (`sqdctl forget-worker` cuts it short).
    pub orphan_after_s: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            max_reconnect_s: 300,
            ssh_spawns_per_s: 10,
            orphan_after_s: 600,
        }
    }
}

/// Limits of the worker's time-series shard (the samples parsed from committed files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardConfig {
    /// Key `max_series`, default 100000: most series the shard holds (hazard 30).
    pub max_series: u64,
    /// Key `ooo_window_s`, default 3600: how late a sample may come after its series' newest.
    pub ooo_window_s: u64,
    /// Key `retention_days`, default 30: samples older than this are dropped.
    pub retention_days: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            max_series: 100_000,
            ooo_window_s: 3600,
            retention_days: 30,
        }
    }
}

/// The worker's command-line flags; `Some` overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct WorkerFlags {
    /// Unique worker id.
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Store directory (files and catalog).
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeFlags,
    /// Most clients this worker takes (default 1000).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Private key for clients added without --key (mode 0600).
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts pinning host keys, for clients added without --known-hosts.
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Pause between listings of an idle client, in ms (default 1000).
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// How long a file must stay unchanged to count as complete, in ms (default 1000).
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// How files travel: "auto" (batch mode where the host lets the key run GNU tar
    /// and mv, else SFTP) or "sftp" (never runs commands on producing hosts). Default auto.
    #[arg(long, value_name = "auto|sftp")]
    pub transfer: Option<String>,
    /// Most series this worker's time-series shard holds (default 100000).
    #[arg(long)]
    pub max_series: Option<u64>,
    /// Longest pause in seconds between connection attempts to a host that keeps failing the
    /// same way (default 300).
    #[arg(long)]
    pub max_reconnect_s: Option<u64>,
    /// Most ssh processes started per second; newly assigned and lately healthy clients go
    /// first (default 10).
    #[arg(long)]
    pub ssh_spawns_per_s: Option<u32>,
    /// Seconds another worker's unreleased claims wait for it before they are adopted
    /// (default 600; `sqdctl forget-worker` cuts it short).
    #[arg(long)]
    pub orphan_after_s: Option<u64>,
    #[command(flatten)]
    pub remote_write: RemoteWriteFlags,
    #[command(flatten)]
    pub host_metrics: HostMetricsFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

const KEYS: &[&str] = &[
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
    "max_series",
    "ooo_window_s",
    "retention_days",
    "max_reconnect_s",
    "ssh_spawns_per_s",
    "orphan_after_s",
    "log_level",
    "log_format",
];
const WORKER_ID_MAX: usize = 64;
const CAPACITY: (i128, i128) = (1, 1_000_000);

/// The worker's keys as the file gives them, before flags and defaults.
struct FileKeys {
    id: Slot<String>,
    leader: Slot<String>,
    store: Slot<PathBuf>,
    listen: Slot<String>,
    metrics: Slot<String>,
    capacity: Slot<i128>,
    cluster: Slot<String>,
    ssh_key: Slot<PathBuf>,
    known_hosts: Slot<PathBuf>,
    pace: PaceKeys,
    transfer: Slot<String>,
    shard: ShardKeys,
    fleet: FleetKeys,
    security: SecurityKeys,
    discovery: DiscoveryKeys,
    remote_write: RemoteWriteKeys,
    host_metrics: host_metrics::HostSlots,
    log: LogSlots,
}

/// The keys of [`FleetConfig`].
struct FleetKeys {
    max_reconnect_s: Slot<i128>,
    ssh_spawns_per_s: Slot<i128>,
    orphan_after_s: Slot<i128>,
}

/// The keys of the time-series shard.
struct ShardKeys {
    max_series: Slot<i128>,
    ooo_window_s: Slot<i128>,
    retention_days: Slot<i128>,
}

/// The keys of how fast the worker pulls.
struct PaceKeys {
    poll_ms: Slot<i128>,
    settle_ms: Slot<i128>,
    batch_files: Slot<i128>,
    in_flight: Slot<i128>,
    max_file_mb: Slot<i128>,
}

impl FileKeys {
    fn take(l: &mut super::Loader) -> Self {
        let keys = FileKeys {
            id: l.string("id"),
            leader: l.string("leader"),
            store: l.path("store"),
            listen: l.string("listen"),
            metrics: l.string("metrics"),
            capacity: l.integer("capacity"),
            cluster: l.string("cluster"),
            ssh_key: l.path("ssh_key"),
            known_hosts: l.path("known_hosts"),
            pace: PaceKeys {
                poll_ms: l.integer("poll_ms"),
                settle_ms: l.integer("settle_ms"),
                batch_files: l.integer("batch_files"),
                in_flight: l.integer("transfers_in_flight"),
                max_file_mb: l.integer("max_file_mb"),
            },
            transfer: l.string("transfer"),
            shard: ShardKeys {
                max_series: l.integer("max_series"),
                ooo_window_s: l.integer("ooo_window_s"),
                retention_days: l.integer("retention_days"),
            },
            fleet: FleetKeys {
                max_reconnect_s: l.integer("max_reconnect_s"),
                ssh_spawns_per_s: l.integer("ssh_spawns_per_s"),
                orphan_after_s: l.integer("orphan_after_s"),
            },
            security: SecurityKeys::take_node(l),
            discovery: DiscoveryKeys::take(l, false),
            remote_write: RemoteWriteKeys::take(l),
            host_metrics: l.host_metrics_keys(),
            log: l.log_keys(),
        };
        l.unknown_keys(
            &[
                KEYS,
                security::NODE_KEYS,
                discovery::KEYS,
                remote_write::KEYS,
                host_metrics::NODE_KEYS,
            ]
            .concat(),
        );
        keys
    }
}

/// How fast the worker pulls, checked.
struct Pace {
    poll_ms: u64,
    settle_ms: u64,
    batch_files: usize,
    transfers_in_flight: usize,
    max_file_bytes: u64,
}

impl WorkerConfig {
    /// Reads `file` (if any), lays `flags` over it and the defaults under it, and checks it all.
    pub fn load(file: Option<&Path>, flags: &WorkerFlags) -> Result<Self, ConfigError> {
        let mut l = super::Loader::open(file)?;
        let keys = FileKeys::take(&mut l);
        let id = l.require("id", "--id ID", merge(flags.id.clone(), keys.id));
        let id = l.check("id", id, |v| rules::name(v, WORKER_ID_MAX));
        let leader = merge(flags.node.leader.clone(), keys.leader).or_default(DEFAULT_ADDR.into());
        let leader = l.check("leader", leader, rules::leader_addr);
        let store = l.require(
            "store",
            "--store DIR",
            merge(flags.store.clone(), keys.store),
        );
        let store = l.check("store", store, rules::non_empty_path);
        let serve = &flags.serve;
        let listen = l.check(
            "listen",
            merge(serve.listen.clone(), keys.listen),
            rules::socket_addr,
        );
        let metrics = merge(serve.metrics.clone(), keys.metrics);
        let metrics = l.check("metrics", metrics, rules::socket_addr);
        let capacity = merge_int(flags.capacity, keys.capacity);
        let capacity = l.ranged::<u32>("capacity", capacity, 1000, CAPACITY);
        let cluster = merge(serve.cluster.clone(), keys.cluster);
        let cluster = l.check("cluster", cluster, |v| rules::name(v, CLUSTER_MAX));
        let ssh_key = merge(flags.ssh_key.clone(), keys.ssh_key);
        let ssh_key = l.check("ssh_key", ssh_key, rules::absolute_path);
        let known_hosts = merge(flags.known_hosts.clone(), keys.known_hosts);
        let known_hosts = l.check("known_hosts", known_hosts, rules::absolute_path);
        let pace = pace(&mut l, keys.pace, flags);
        let transfer = merge(flags.transfer.clone(), keys.transfer).or_default("auto".into());
        let transfer = l.check("transfer", transfer, rules::transfer_mode);
        let shard = shard(&mut l, keys.shard, flags);
        let fleet = fleet(&mut l, keys.fleet, flags);
        let security = security::node(&mut l, keys.security, &flags.node.security);
        let discovery = node_discovery(&mut l, keys.discovery, &flags.node, &leader, &security);
        let remote_write =
            remote_write::load(&mut l, keys.remote_write, &flags.remote_write).map(Box::new);
        let host_metrics = l.host_metrics(keys.host_metrics, &flags.host_metrics);
        let log = host_metrics.zip(l.log(keys.log, &flags.log));

        let built = match (
            id,
            leader,
            store,
            capacity,
            pace,
            transfer,
            (shard, fleet),
            log,
        ) {
            (
                Some(id),
                Some(leader),
                Some(store),
                Some(capacity),
                Some(pace),
                Some(transfer),
                (Some(shard), Some(fleet)),
                Some((host_metrics, log)),
            ) => Some(WorkerConfig {
                id: id.value,
                leader: leader.value,
                store: store.value,
                listen: Sourced::value_of(listen),
                metrics: Sourced::value_of(metrics),
                capacity: capacity.value,
                cluster: Sourced::value_of(cluster),
                ssh_key: Sourced::value_of(ssh_key),
                known_hosts: Sourced::value_of(known_hosts),
                poll_ms: pace.poll_ms,
                settle_ms: pace.settle_ms,
                batch_files: pace.batch_files,
                transfers_in_flight: pace.transfers_in_flight,
                max_file_bytes: pace.max_file_bytes,
                transfer: transfer.value,
                shard,
                fleet,
                security,
                discovery,
                remote_write,
                host_metrics,
                log,
            }),
            _ => None,
        };
        l.finish(built)
    }
}

/// Checks how fast the worker pulls; only `poll_ms` and `settle_ms` have flags.
fn pace(l: &mut super::Loader, keys: PaceKeys, flags: &WorkerFlags) -> Option<Pace> {
    let poll = merge_int(flags.poll_ms, keys.poll_ms);
    let poll = l.ranged::<u64>("poll_ms", poll, 1000, (10, 600_000));
    let settle = merge_int(flags.settle_ms, keys.settle_ms);
    let settle = l.ranged::<u64>("settle_ms", settle, 1000, (0, 3_600_000));
    let batch = l.ranged::<usize>("batch_files", keys.batch_files, 1000, (1, 100_000));
    let in_flight = l.ranged::<usize>("transfers_in_flight", keys.in_flight, 256, (1, 1024));
    let max_file_mb = l.ranged::<u64>("max_file_mb", keys.max_file_mb, 4096, (1, 1 << 30));
    Some(Pace {
        poll_ms: poll?.value,
        settle_ms: settle?.value,
        batch_files: batch?.value,
        transfers_in_flight: in_flight?.value,
        max_file_bytes: max_file_mb?.value.saturating_mul(1024 * 1024),
    })
}

/// Checks the shard's limits; only `max_series` has a flag.
fn shard(l: &mut super::Loader, keys: ShardKeys, flags: &WorkerFlags) -> Option<ShardConfig> {
    let d = ShardConfig::default();
    let max_series = merge_int(flags.max_series, keys.max_series);
    let max_series = l.ranged::<u64>(
        "max_series",
        max_series,
        i128::from(d.max_series),
        (1, 100_000_000),
    );
    let window = l.ranged::<u64>(
        "ooo_window_s",
        keys.ooo_window_s,
        i128::from(d.ooo_window_s),
        (0, 7 * 86_400),
    );
    let retention = l.ranged::<u64>(
        "retention_days",
        keys.retention_days,
        i128::from(d.retention_days),
        (1, 36_500),
    );
    Some(ShardConfig {
        max_series: max_series?.value,
        ooo_window_s: window?.value,
        retention_days: retention?.value,
    })
}

/// Checks how the worker treats unreachable hosts and dead peers.
fn fleet(l: &mut super::Loader, keys: FleetKeys, flags: &WorkerFlags) -> Option<FleetConfig> {
    let d = FleetConfig::default();
    let max_reconnect = merge_int(flags.max_reconnect_s, keys.max_reconnect_s);
    let max_reconnect = l.ranged::<u64>(
        "max_reconnect_s",
        max_reconnect,
        i128::from(d.max_reconnect_s),
        (1, 86_400),
    );
    let spawns = merge_int(flags.ssh_spawns_per_s, keys.ssh_spawns_per_s);
    let spawns = l.ranged::<u32>(
        "ssh_spawns_per_s",
        spawns,
        i128::from(d.ssh_spawns_per_s),
        (1, 1000),
    );
    let orphan = merge_int(flags.orphan_after_s, keys.orphan_after_s);
    let orphan = l.ranged::<u64>(
        "orphan_after_s",
        orphan,
        i128::from(d.orphan_after_s),
        (1, 30 * 86_400),
    );
    Some(FleetConfig {
        max_reconnect_s: max_reconnect?.value,
        ssh_spawns_per_s: spawns?.value,
        orphan_after_s: orphan?.value,
    })
}

//! Config of `sqd --mode client` (the agent on a producing host): its flags, keys and defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::discovery::{self, DiscoveryKeys};
use super::host_metrics::{self, HostMetricsConfig, HostMetricsFlags};
use super::security::{self, SecurityKeys};
use super::{
    ConfigError, DEFAULT_ADDR, LogConfig, LogFlags, NodeFlags, Slot, merge, merge_int, rules,
};
use crate::discovery::DiscoveryConfig;
use crate::security::NodeSecurity;

/// Config of `sqd --mode client`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Key `complain_after_s`, default 60: backlog age that makes the agent complain.
    pub complain_after: Duration,
    /// Key `name`, required; 1-128 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Key `leader`, HOST:PORT, default `127.0.0.1:7070`; unused when `discovery` is on.
    pub leader: String,
    /// Key `cluster`, default `sqd`: with discovery, the only cluster whose leader is joined.
    pub cluster: String,
    /// Key `discovery = "udp"`: find the leader by its announcements instead of `leader`.
    pub discovery: Option<DiscoveryConfig>,
    /// Key `watch`, required.
    pub watch: PathBuf,
    /// Node token and TLS towards the leader (see [`crate::security`]).
    pub security: NodeSecurity,
    /// Host sampling; the disk value is that of the watched directory.
    pub host_metrics: HostMetricsConfig,
    pub log: LogConfig,
}

/// The client agent's command-line flags; `Some` overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientFlags {
    /// Name of the client this agent runs for (as given to `sqdctl add-client`).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Cluster id (leader default "sqd"; a worker refuses other clusters).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The stats directory on this host.
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// Backlog age in seconds that makes the agent complain (default 60).
    #[arg(long)]
    pub complain_after_s: Option<u64>,
    #[command(flatten)]
    pub host_metrics: HostMetricsFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

const KEYS: &[&str] = &[
    "name",
    "leader",
    "watch",
    "complain_after_s",
    "cluster",
    "log_level",
    "log_format",
];
const CLIENT_NAME_MAX: usize = 128;

impl ClientConfig {
    /// Reads `file` (if any), lays `flags` over it and the defaults under it, and checks it all.
    pub fn load(file: Option<&Path>, flags: &ClientFlags) -> Result<Self, ConfigError> {
        let mut l = super::Loader::open(file)?;
        let name = l.string("name");
        let leader = l.string("leader");
        let watch: Slot<PathBuf> = l.path("watch");
        let complain = l.integer("complain_after_s");
        let cluster = l.string("cluster");
        let security_keys = SecurityKeys::take_node(&mut l);
        let discovery_keys = DiscoveryKeys::take(&mut l, false);
        let host_keys = l.host_metrics_keys();
        let log = l.log_keys();
        l.unknown_keys(
            &[
                KEYS,
                security::NODE_KEYS,
                discovery::KEYS,
                host_metrics::NODE_KEYS,
            ]
            .concat(),
        );

        let name = l.require("name", "--name NAME", merge(flags.name.clone(), name));
        let name = l.check("name", name, |v| rules::name(v, CLIENT_NAME_MAX));
        let leader = merge(flags.node.leader.clone(), leader).or_default(DEFAULT_ADDR.into());
        let leader = l.check("leader", leader, rules::leader_addr);
        let watch = l.require("watch", "--watch DIR", merge(flags.watch.clone(), watch));
        let watch = l.check("watch", watch, rules::non_empty_path);
        let complain = merge_int(flags.complain_after_s, complain);
        let complain = l.ranged::<u64>("complain_after_s", complain, 60, (1, 86_400));
        let cluster = merge(flags.cluster.clone(), cluster).or_default("sqd".into());
        let cluster = l.check("cluster", cluster, |v| rules::name(v, super::CLUSTER_MAX));
        let security = security::node(&mut l, security_keys, &flags.node.security);
        let discovery =
            super::node_discovery(&mut l, discovery_keys, &flags.node, &leader, &security);
        let host_metrics = l.host_metrics(host_keys, &flags.host_metrics);
        let log = l.log(log, &flags.log);

        let log = host_metrics.zip(log);
        let built = match (name, leader, watch, complain, cluster, log) {
            (
                Some(name),
                Some(leader),
                Some(watch),
                Some(complain),
                Some(cluster),
                Some((host_metrics, log)),
            ) => Some(ClientConfig {
                cluster: cluster.value,
                discovery,
                complain_after: Duration::from_secs(complain.value),
                name: name.value,
                leader: leader.value,
                watch: watch.value,
                security,
                host_metrics,
                log,
            }),
            _ => None,
        };
        l.finish(built)
    }
}

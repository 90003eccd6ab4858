//! UDP discovery of the leader (issue 19): the leader announces itself (`ProbeInit`) to a
//! multicast group or broadcast address every probe interval; workers and agents started
//! without `--leader` listen, verify, pick their cluster's leader and connect over gRPC as
//! usual. Every datagram is signed with HMAC-SHA256 keyed by the node token, so discovery
//! needs that token and is no way in for whoever shares the segment.
//!
//! [`wire`] and [`rules`] are pure; [`udp`] opens the sockets; [`announce`] is the leader's
//! task, [`listen`] the node's.

pub(crate) mod announce;
pub(crate) mod listen;
pub(crate) mod rules;
#[cfg(test)]
mod tests;
pub(crate) mod udp;
pub(crate) mod wire;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub(crate) use wire::Ignored;

/// The default discovery target: an administratively scoped multicast group (RFC 2365).
pub const DEFAULT_TARGET: &str = "239.255.70.70:7071";
/// The default announce interval of a leader, in ms.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 2_000;

/// Discovery settings shared by the leader and the nodes (`discovery = "udp"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Key `discovery_target`: a multicast group (joined) or a broadcast address, with the
    /// port the nodes listen on; default [`DEFAULT_TARGET`].
    pub target: SocketAddr,
    /// Key `discovery_interface`: the IPv4 address of the interface to announce on and listen
    /// on; default the one the routing table picks for the target.
    pub interface: Option<Ipv4Addr>,
    /// Key `probe_interval_ms` (leader only), default 2000.
    pub probe_interval_ms: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            target: SocketAddr::from(([239, 255, 70, 70], 7071)),
            interface: None,
            probe_interval_ms: DEFAULT_PROBE_INTERVAL_MS,
        }
    }
}

/// Why discovery cannot run; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "discovery = \"udp\" needs the node token ({key}): unsigned announcements would let \
         anyone on the network point nodes at a leader of their own; generate tokens with \
         `sqd --mode leader init --generate-tokens` and pass --{flag} FILE, or give --leader \
         instead of discovery"
    )]
    NoToken {
        key: &'static str,
        flag: &'static str,
    },
    #[error(transparent)]
    Token(#[from] crate::security::SecurityError),
    #[error(
        "cannot open the discovery socket for {target}: {source}; check discovery_target and \
         discovery_interface (an address of this host), or that the port is free"
    )]
    Socket {
        target: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "another leader of cluster {cluster:?} announces itself from {from} (leader id {other}); \
         two leaders of one cluster would hand out the same clients (DESIGN C6): stop it, or \
         give this one another --cluster"
    )]
    Conflict {
        cluster: String,
        other: String,
        from: SocketAddr,
    },
}

/// The signing key of discovery: the node token of `file`, or the error naming the setting.
pub(crate) fn key_from(
    file: Option<&PathBuf>,
    key: &'static str,
    flag: &'static str,
) -> Result<wire::Key, DiscoveryError> {
    let file = file.ok_or(DiscoveryError::NoToken { key, flag })?;
    let token = crate::security::token::Token::read(file)?;
    Ok(wire::Key::new(token.secret().as_bytes()))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: Ignored,
}

impl EncodeLabelValue for Ignored {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// What discovery counts, on the leader (`sqd_leader_discovery_*`) and the worker
/// (`sqd_worker_discovery_*`); an agent has no metrics endpoint and logs instead.
#[derive(Clone, Default)]
pub(crate) struct DiscoveryMetrics {
    /// Datagrams ignored, by reason.
    pub(crate) ignored: Family<ReasonLabel, Counter>,
    /// Probes sent (leader) or accepted (node).
    pub(crate) probes: Counter,
    /// Other leaders of this cluster heard (leader only).
    pub(crate) conflicts: Counter,
}

impl DiscoveryMetrics {
    /// Every reason at 0, so a dashboard sees the series before the first one.
    pub(crate) fn new() -> Self {
        let m = DiscoveryMetrics::default();
        for reason in Ignored::ALL {
            let _ = m.ignored.get_or_create(&ReasonLabel { reason });
        }
        m
    }

    /// Registers under `prefix` (`sqd_leader` or `sqd_worker`).
    pub(crate) fn register(
        &self,
        registry: &mut prometheus_client::registry::Registry,
        prefix: &str,
    ) {
        let m = self;
        let r = registry.sub_registry_with_prefix(prefix);
        r.register(
            "discovery_ignored",
            "Discovery datagrams ignored, by reason (malformed, unsigned, forged, stale, replayed, other_cluster, unexpected)",
            m.ignored.clone(),
        );
        r.register(
            "discovery_probes",
            "Leader announcements sent (leader) or accepted (node)",
            m.probes.clone(),
        );
        if prefix == "sqd_leader" {
            r.register(
                "discovery_conflicts",
                "Announcements heard from another leader of this cluster (DESIGN C6)",
                m.conflicts.clone(),
            );
        }
    }

    pub(crate) fn ignore(&self, reason: Ignored) {
        self.ignored.get_or_create(&ReasonLabel { reason }).inc();
    }
}

//! The discovery keys and flags (`discovery`, `discovery_target`, `discovery_interface`, and
//! the leader's `probe_interval_ms`), loaded into [`crate::discovery::DiscoveryConfig`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Args;

use super::rules::Reason;
use super::{Loader, Origin, Slot, Sourced, merge, merge_int};
use crate::discovery::{DEFAULT_PROBE_INTERVAL_MS, DEFAULT_TARGET, DiscoveryConfig};

/// Discovery flags of every mode.
#[derive(Debug, Clone, Default, Args)]
pub struct DiscoveryFlags {
    /// UDP discovery of the leader: "udp" (the leader announces itself; a worker or agent
    /// started without --leader finds it) or "off" (default). Needs the node token.
    #[arg(long, value_name = "udp|off")]
    pub discovery: Option<String>,
    /// Where announcements go: a multicast group or a broadcast address, IPv4:PORT
    /// (default 239.255.70.70:7071).
    #[arg(long, value_name = "ADDR")]
    pub discovery_target: Option<String>,
    /// IPv4 address of the interface to announce and listen on (default: the route's).
    #[arg(long, value_name = "IP")]
    pub discovery_interface: Option<String>,
}

/// The leader's discovery flags.
#[derive(Debug, Clone, Default, Args)]
pub struct LeaderDiscoveryFlags {
    #[command(flatten)]
    pub common: DiscoveryFlags,
    /// How often the leader announces itself with discovery = "udp", in ms (default 2000).
    #[arg(long)]
    pub probe_interval_ms: Option<u64>,
}

pub(super) const KEYS: &[&str] = &["discovery", "discovery_target", "discovery_interface"];
pub(super) const LEADER_KEYS: &[&str] = &[
    "discovery",
    "discovery_target",
    "discovery_interface",
    "probe_interval_ms",
];

/// The file's discovery keys, before flags.
pub(super) struct DiscoveryKeys {
    mode: Slot<String>,
    target: Slot<String>,
    interface: Slot<String>,
    interval: Slot<i128>,
}

impl DiscoveryKeys {
    pub(super) fn take(l: &mut Loader, leader: bool) -> Self {
        DiscoveryKeys {
            mode: l.string("discovery"),
            target: l.string("discovery_target"),
            interface: l.string("discovery_interface"),
            interval: if leader {
                l.integer("probe_interval_ms")
            } else {
                Slot::Missing
            },
        }
    }
}

fn on(v: String) -> Result<bool, Reason> {
    match v.as_str() {
        "udp" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{v:?} is not a discovery mode; expected \"udp\" or \"off\"").into()),
    }
}

fn target(v: String) -> Result<SocketAddr, Reason> {
    let addr: SocketAddr = v.parse().map_err(|_| {
        Reason::from(format!(
            "{v:?} is not IPv4:PORT, e.g. {DEFAULT_TARGET} (a multicast group) or 192.0.2.255:7071 (a broadcast address)"
        ))
    })?;
    match addr {
        SocketAddr::V4(v4) if v4.port() != 0 && !v4.ip().is_unspecified() => Ok(addr),
        SocketAddr::V4(_) => Err(format!("{v:?}: needs an address and a port other than 0").into()),
        SocketAddr::V6(_) => Err(format!("{v:?}: discovery is IPv4 only").into()),
    }
}

fn interface(v: String) -> Result<Ipv4Addr, Reason> {
    match v.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        _ => Err(format!(
            "{v:?} is not an IPv4 address; give the address of the interface (e.g. 192.0.2.10), not its name"
        )
        .into()),
    }
}

/// The discovery settings, `None` when off; `leader` is whether `--leader` was given (a node
/// that is told its leader does not look for one).
pub(super) fn load(
    l: &mut Loader,
    keys: DiscoveryKeys,
    flags: &DiscoveryFlags,
    interval_flag: Option<u64>,
    leader: Option<Origin>,
) -> Option<DiscoveryConfig> {
    let mode = merge(flags.discovery.clone(), keys.mode);
    let mode = l.check("discovery", mode, on);
    let target =
        merge(flags.discovery_target.clone(), keys.target).or_default(DEFAULT_TARGET.into());
    let target = l.check("discovery_target", target, self::target);
    let iface = merge(flags.discovery_interface.clone(), keys.interface);
    let iface = l.check("discovery_interface", iface, interface);
    let interval = merge_int(interval_flag, keys.interval);
    let interval = l.ranged::<u64>(
        "probe_interval_ms",
        interval,
        i128::from(DEFAULT_PROBE_INTERVAL_MS),
        (100, 60_000),
    );
    let Some(Sourced {
        value: true,
        origin,
    }) = mode
    else {
        return None;
    };
    if let Some(leader_origin) = leader
        && leader_origin != Origin::Default
    {
        l.problem(
            origin,
            "discovery",
            "\"udp\" finds the leader, but a leader address is given too; drop one of them",
        );
    }
    Some(DiscoveryConfig {
        target: target?.value,
        interface: Sourced::value_of(iface),
        probe_interval_ms: interval?.value,
    })
}

//! Pure: what a node and a leader decide from verified discovery messages — which leader a
//! node joins, what a leader answers to a node's `ProbeAck`, when a leader is in conflict with
//! another, and the tally of what was ignored. Time comes in as an argument.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use super::wire::Ignored;
use crate::proto::{ProbeAck, ProbeInit, RegisterAck};

/// A leader unheard for this many of its own intervals is forgotten.
const FORGET_AFTER_INTERVALS: u64 = 3;
/// Floor of the forget time, whatever interval a leader claims.
const FORGET_AFTER_MIN_MS: u64 = 3_000;

/// Where a node connects to the leader that sent `probe` from `src`: the advertised host, or
/// the datagram's source address when the leader listens on an unspecified one (0.0.0.0).
pub(crate) fn grpc_target(probe: &ProbeInit, src: SocketAddr) -> String {
    let host = probe.grpc_addr.trim();
    let unspecified = host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    let ip_or_name = if unspecified {
        src.ip().to_string()
    } else {
        host.to_owned()
    };
    match ip_or_name.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", probe.grpc_port),
        _ => format!("{ip_or_name}:{}", probe.grpc_port),
    }
}

/// A leader a node has heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heard {
    pub(crate) leader_id: String,
    /// HOST:PORT of its gRPC service.
    pub(crate) target: String,
    pub(crate) started_ms: u64,
    pub(crate) version: String,
    pub(crate) src: SocketAddr,
    /// The nonce of the last probe heard (a `ProbeAck` names it).
    pub(crate) nonce: Vec<u8>,
    heard_ms: i64,
    forget_after_ms: u64,
}

/// The leaders of the node's cluster heard lately, and the node's choice among them: the one
/// that started last (a leader that moved, i.e. was restarted elsewhere, replaces the old one
/// as soon as it is heard), ties broken by the last heard, then by id.
#[derive(Debug)]
pub(crate) struct Candidates {
    cluster: String,
    leaders: BTreeMap<String, Heard>,
}

impl Candidates {
    pub(crate) fn new(cluster: &str) -> Self {
        Candidates {
            cluster: cluster.to_owned(),
            leaders: BTreeMap::new(),
        }
    }

    /// Records a verified probe; a leader of another cluster is ignored.
    pub(crate) fn observe(
        &mut self,
        probe: &ProbeInit,
        nonce: &[u8],
        src: SocketAddr,
        now_ms: i64,
    ) -> Result<(), Ignored> {
        if probe.cluster != self.cluster {
            return Err(Ignored::OtherCluster);
        }
        let forget_after_ms =
            (u64::from(probe.interval_ms) * FORGET_AFTER_INTERVALS).max(FORGET_AFTER_MIN_MS);
        let heard = Heard {
            leader_id: probe.leader_id.clone(),
            target: grpc_target(probe, src),
            started_ms: probe.started_ms,
            version: probe.version.clone(),
            src,
            nonce: nonce.to_vec(),
            heard_ms: now_ms,
            forget_after_ms,
        };
        // A bounded map: only key holders get here, and a cluster has one leader at a time
        // (a few while one moves).
        if self.leaders.len() >= 64 && !self.leaders.contains_key(&probe.leader_id) {
            self.forget_silent(now_ms);
            if self.leaders.len() >= 64 {
                return Ok(());
            }
        }
        self.leaders.insert(probe.leader_id.clone(), heard);
        Ok(())
    }

    fn forget_silent(&mut self, now_ms: i64) {
        self.leaders.retain(|_, h| {
            let silent = u64::try_from(now_ms.saturating_sub(h.heard_ms)).unwrap_or(0);
            silent <= h.forget_after_ms
        });
    }

    /// The leader to join now, if any was heard lately.
    pub(crate) fn choose(&mut self, now_ms: i64) -> Option<&Heard> {
        self.forget_silent(now_ms);
        self.leaders.values().max_by(|a, b| {
            (a.started_ms, a.heard_ms, &a.leader_id).cmp(&(b.started_ms, b.heard_ms, &b.leader_id))
        })
    }
}

/// How a leader answers `ProbeAck`s: at most [`ACKS_PER_WINDOW`] answers per node per minute
/// (`retries_left` tells the node how many remain), a node of another cluster or an
/// incompatible version refused with the reason.
pub(crate) const ACKS_PER_WINDOW: u32 = 10;
const WINDOW_MS: i64 = 60_000;
/// Nodes tracked per window; beyond it acks go unanswered until the window rolls.
const MAX_NODES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct AckAnswers {
    cluster: String,
    version: String,
    grpc_target: String,
    window_start_ms: i64,
    answered: HashMap<(i32, String), u32>,
}

impl AckAnswers {
    pub(crate) fn new(cluster: &str, version: &str, grpc_target: &str) -> Self {
        AckAnswers {
            cluster: cluster.to_owned(),
            version: version.to_owned(),
            grpc_target: grpc_target.to_owned(),
            window_start_ms: i64::MIN,
            answered: HashMap::new(),
        }
    }

    /// The answer to a verified `ProbeAck` (with the ack's nonce), or `None` when this node
    /// used up its answers for the window.
    pub(crate) fn answer(
        &mut self,
        ack: &ProbeAck,
        ack_nonce: &[u8],
        now_ms: i64,
    ) -> Option<RegisterAck> {
        if now_ms.saturating_sub(self.window_start_ms) >= WINDOW_MS {
            self.window_start_ms = now_ms;
            self.answered.clear();
        }
        let key = (ack.role, ack.id.clone());
        if !self.answered.contains_key(&key) && self.answered.len() >= MAX_NODES {
            return None;
        }
        let used = self.answered.entry(key).or_insert(0);
        if *used >= ACKS_PER_WINDOW {
            return None;
        }
        *used += 1;
        let retries_left = ACKS_PER_WINDOW - *used;
        let refusal = if ack.cluster != self.cluster {
            Some(format!(
                "this leader runs cluster {:?}, not {:?}; set --cluster to join it",
                self.cluster, ack.cluster
            ))
        } else {
            crate::version::check_compatible(&self.version, &ack.version).err()
        };
        Some(RegisterAck {
            accepted: refusal.is_none(),
            message: refusal.unwrap_or_else(|| format!("connect to {}", self.grpc_target)),
            retries_left,
            ack_nonce: ack_nonce.to_vec(),
        })
    }
}

/// Another leader announcing this leader's cluster (DESIGN C6): the leader that hears it
/// refuses to start, or, running, logs an error and raises a metric.
pub(crate) fn is_conflict(own_cluster: &str, own_id: &str, probe: &ProbeInit) -> bool {
    probe.cluster == own_cluster && probe.leader_id != own_id
}

/// Ignored datagrams by reason, and when each is worth a log line (the 1st, 2nd, 4th, 8th …
/// of a reason, so a flood is visible without flooding the log).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    counts: BTreeMap<Ignored, u64>,
}

impl Tally {
    /// Counts one; `Some(count)` when this one should be logged.
    pub(crate) fn count(&mut self, reason: Ignored) -> Option<u64> {
        let n = self.counts.entry(reason).or_insert(0);
        *n += 1;
        n.is_power_of_two().then_some(*n)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, reason: Ignored) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }
}

//! A node's side of discovery (worker or agent started without `--leader`): hear the
//! announcements, keep the checks of [`super::wire`] and the choice of [`super::rules`], answer
//! the chosen leader with a `ProbeAck`, and publish where to connect. The session itself
//! (`crate::node`) reads the published leader each time it (re)connects, so a leader that
//! moved is joined on the next reconnect.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{info, warn};

use super::rules::{Candidates, Heard, Tally};
use super::wire::{Ignored, Key, MAX_DATAGRAM, Verifier};
use super::{DiscoveryConfig, DiscoveryError, DiscoveryMetrics, udp};
use crate::proto::{Discovery, NodeRole, ProbeAck, RegisterAck, discovery::Body};

/// The leader a node should connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// HOST:PORT of its gRPC service.
    pub target: String,
    pub leader_id: String,
    pub started_ms: u64,
}

/// Who is listening.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    pub(crate) role: NodeRole,
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) cluster: String,
}

/// The node's discovery task state.
struct Node {
    me: Listener,
    target: SocketAddr,
    listener: UdpSocket,
    sender: UdpSocket,
    verifier: Verifier,
    candidates: Candidates,
    tally: Tally,
    metrics: DiscoveryMetrics,
    publish: watch::Sender<Option<Found>>,
    /// The leader acked last, and whether it refused us (then it is not published).
    acked: Option<(String, u64)>,
    refused: Option<(String, u32)>,
}

/// Opens the sockets (a bad setting fails the start) and spawns the listening task; the
/// receiver yields the leader to join once one is found.
pub(crate) fn spawn(
    cfg: &DiscoveryConfig,
    key: Key,
    me: Listener,
    metrics: DiscoveryMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<watch::Receiver<Option<Found>>, DiscoveryError> {
    let (publish, found) = watch::channel(None);
    info!(target = %cfg.target, cluster = %me.cluster, "discovery: listening for the leader's announcements");
    let node = Node {
        listener: udp::listener(cfg)?,
        sender: udp::sender(cfg)?,
        target: cfg.target,
        verifier: Verifier::new(key),
        candidates: Candidates::new(&me.cluster),
        me,
        tally: Tally::default(),
        metrics,
        publish,
        acked: None,
        refused: None,
    };
    tokio::spawn(node.run(shutdown));
    Ok(found)
}

/// When a node that hears no leader says so: after [`QUIET_WAIT`], then ever more rarely.
#[derive(Default)]
struct Waiting {
    since: Option<std::time::Instant>,
    gate: Option<crate::log_gate::LogGate>,
}

/// A leader announces every few seconds: waiting less than this is normal at start.
const QUIET_WAIT: Duration = Duration::from_secs(5);

impl Waiting {
    /// `Some(seconds waited)` when the wait is worth a line.
    fn tick(&mut self, found: bool, now: std::time::Instant) -> Option<u64> {
        if found {
            self.since = None;
            self.gate = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        if waited < QUIET_WAIT {
            return None;
        }
        let gate = self.gate.get_or_insert_with(|| {
            crate::log_gate::LogGate::new(Duration::from_secs(10), Duration::from_secs(300))
        });
        gate.failed(now).map(|_| waited.as_secs())
    }
}

impl Node {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (mut buf, mut ack_buf) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut waiting = Waiting::default();
        loop {
            tokio::select! {
                got = self.listener.recv_from(&mut buf) => {
                    if let Ok((n, from)) = got {
                        let datagram = buf[..n].to_vec();
                        self.heard(&datagram, from).await;
                    }
                }
                got = self.sender.recv_from(&mut ack_buf) => {
                    if let Ok((n, from)) = got {
                        let datagram = ack_buf[..n].to_vec();
                        self.answered(&datagram, from);
                    }
                }
                _ = tick.tick() => {
                    self.choose(None).await;
                    let found = self.publish.borrow().is_some();
                    if let Some(waited_s) = waiting.tick(found, std::time::Instant::now()) {
                        warn!(target = %self.target, cluster = %self.me.cluster, waited_s,
                              "discovery: no leader of this cluster heard yet (check that the leader runs with discovery = \"udp\", the same node token and cluster, and that multicast/broadcast reaches this host)");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    fn ignored(&mut self, reason: Ignored, from: SocketAddr) {
        self.metrics.ignore(reason);
        if let Some(count) = self.tally.count(reason) {
            warn!(%from, reason = reason.as_str(), count, "discovery: ignored a datagram");
        }
    }

    /// An announcement (or anything else) on the discovery port.
    async fn heard(&mut self, datagram: &[u8], from: SocketAddr) {
        let now = crate::clock::unix_ms();
        let msg = match self.verifier.accept(datagram, now) {
            Ok(m) => m,
            Err(reason) => return self.ignored(reason, from),
        };
        let Some(Body::ProbeInit(probe)) = msg.body else {
            return self.ignored(Ignored::Unexpected, from);
        };
        if let Err(reason) = self.candidates.observe(&probe, &msg.nonce, from, now) {
            return self.ignored(reason, from);
        }
        self.metrics.probes.inc();
        self.choose(Some(&probe.leader_id)).await;
    }

    /// Re-chooses; publishes a new choice and acks it. `fresh` is the leader just heard: a
    /// leader that refused us is asked again on its next announcement while it allows.
    async fn choose(&mut self, fresh: Option<&str>) {
        let Some(heard) = self.candidates.choose(crate::clock::unix_ms()).cloned() else {
            if self.publish.borrow().is_some() {
                warn!(
                    "discovery: the leader is no longer heard; the session goes on, and a reconnect waits for an announcement"
                );
                self.publish.send_replace(None);
            }
            return;
        };
        let key = (heard.leader_id.clone(), heard.started_ms);
        let retry = match &self.refused {
            Some((id, left)) if *id == heard.leader_id => *left > 0 && fresh == Some(id.as_str()),
            _ => false,
        };
        if self.acked.as_ref() != Some(&key) || retry {
            self.acked = Some(key);
            self.ack(&heard).await;
        }
        let refused = self
            .refused
            .as_ref()
            .is_some_and(|(id, _)| *id == heard.leader_id);
        let found = (!refused).then(|| Found {
            target: heard.target.clone(),
            leader_id: heard.leader_id.clone(),
            started_ms: heard.started_ms,
        });
        if *self.publish.borrow() != found {
            if let Some(f) = &found {
                info!(leader = %f.target, leader_id = %f.leader_id, version = %heard.version, cluster = %self.me.cluster,
                      "discovery: found the leader");
            }
            self.publish.send_replace(found);
        }
    }

    async fn ack(&mut self, heard: &Heard) {
        let Ok(nonce) = udp::nonce() else { return };
        let msg = Discovery {
            nonce,
            sent_ms: u64::try_from(crate::clock::unix_ms()).unwrap_or(0),
            body: Some(Body::ProbeAck(ProbeAck {
                role: self.me.role as i32,
                id: self.me.id.clone(),
                version: self.me.version.clone(),
                cluster: self.me.cluster.clone(),
                probe_nonce: heard.nonce.clone(),
            })),
        };
        let datagram = self.verifier.key().seal(&msg);
        if let Err(e) = self.sender.send_to(&datagram, heard.src).await {
            warn!(leader = %heard.src, error = %e, "discovery: cannot answer the leader");
        }
    }

    /// The leader's `RegisterAck`: a refusal keeps this node from connecting to it.
    fn answered(&mut self, datagram: &[u8], from: SocketAddr) {
        let now = crate::clock::unix_ms();
        let msg = match self.verifier.accept(datagram, now) {
            Ok(m) => m,
            Err(reason) => return self.ignored(reason, from),
        };
        let Some(Body::RegisterAck(RegisterAck {
            accepted,
            message,
            retries_left,
            ..
        })) = msg.body
        else {
            return self.ignored(Ignored::Unexpected, from);
        };
        let Some((leader_id, _)) = self.acked.clone() else {
            return;
        };
        if accepted {
            info!(%from, %message, "discovery: the leader accepts this node");
            if self.refused.take().is_some() {
                // Published on the next choice.
                self.acked = None;
            }
        } else {
            warn!(%from, %message, retries_left, "discovery: the leader refuses this node; not connecting to it");
            self.refused = Some((leader_id, retries_left));
            self.publish.send_replace(None);
        }
    }
}

/// How the start line names the leader: its address, or where discovery listens.
pub(crate) fn leader_label(leader: &str, discovery: Option<&DiscoveryConfig>) -> String {
    match discovery {
        Some(d) => format!("discovery udp {}", d.target),
        None => leader.to_owned(),
    }
}

/// Where a node finds its leader: `leader` as given, or, with discovery on, the leader its
/// announcements name (the node token of `security` checks them).
pub(crate) fn leader_addr(
    leader: &str,
    discovery: Option<&DiscoveryConfig>,
    security: &crate::security::NodeSecurity,
    me: Listener,
    metrics: DiscoveryMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<crate::node::LeaderAddr, DiscoveryError> {
    let Some(cfg) = discovery else {
        return Ok(crate::node::LeaderAddr::Fixed(leader.to_owned()));
    };
    let key = super::key_from(security.token_file.as_ref(), "token_file", "token-file")?;
    let found = spawn(cfg, key, me, metrics, shutdown)?;
    Ok(crate::node::LeaderAddr::Discovered(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_leader_is_quiet_at_first_then_said_ever_more_rarely() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Waiting::default();
        let said: Vec<u64> = (0..40).filter_map(|s| w.tick(false, at(s))).collect();
        assert_eq!(said, [5, 15, 35]);
        assert_eq!(w.tick(true, at(41)), None, "found");
        assert_eq!(w.tick(false, at(42)), None, "lost again: quiet at first");
        assert_eq!(w.tick(false, at(47)), Some(5));
    }
}

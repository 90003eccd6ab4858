//! The leader's side of discovery: before serving, listen one interval for another leader of
//! its cluster (refuse to start if there is one, DESIGN C6); then announce every interval,
//! answer nodes' `ProbeAck`s with a `RegisterAck`, and report any other leader heard.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::rules::{AckAnswers, Tally, is_conflict};
use super::wire::{Ignored, Key, MAX_DATAGRAM, Verifier};
use super::{DiscoveryConfig, DiscoveryError, DiscoveryMetrics, udp};
use crate::proto::{Discovery, ProbeInit, discovery::Body};

/// What the leader announces about itself.
#[derive(Debug, Clone)]
pub(crate) struct Announcement {
    pub(crate) cluster: String,
    pub(crate) leader_id: String,
    pub(crate) version: String,
    /// The gRPC listen address (its IP may be 0.0.0.0: nodes then use the datagram's source).
    pub(crate) grpc: SocketAddr,
    pub(crate) query_port: u16,
    pub(crate) metrics_port: u16,
    pub(crate) started_ms: u64,
}

/// Reads the node token, opens the sockets and listens one interval for another leader of
/// this cluster: what `sqd --mode leader start` does before it serves with discovery on.
pub(crate) async fn start(
    cfg: &DiscoveryConfig,
    node_token_file: Option<&std::path::PathBuf>,
    me: Announcement,
    metrics: DiscoveryMetrics,
) -> Result<Announcer, DiscoveryError> {
    let key = super::key_from(node_token_file, "node_token_file", "node-token-file")?;
    let mut announcer = Announcer::open(cfg, me, key, metrics)?;
    announcer.check_alone().await?;
    Ok(announcer)
}

/// A new leader id: random, so a leader restarted (or moved) is a new leader to the nodes.
pub(crate) fn new_leader_id() -> String {
    let bytes = udp::nonce().unwrap_or_else(|_| crate::clock::unix_ms().to_be_bytes().to_vec());
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn role_name(role: crate::proto::NodeRole) -> &'static str {
    match role {
        crate::proto::NodeRole::Worker => "worker",
        crate::proto::NodeRole::Agent => "agent",
        crate::proto::NodeRole::Unspecified => "unspecified",
    }
}

/// The leader's discovery: settings, key and sockets, opened at start so a bad setting
/// stops the start.
pub(crate) struct Announcer {
    cfg: DiscoveryConfig,
    me: Announcement,
    key: Key,
    listener: UdpSocket,
    sender: UdpSocket,
    metrics: DiscoveryMetrics,
    tally: Tally,
    heard: Verifier,
}

impl Announcer {
    fn open(
        cfg: &DiscoveryConfig,
        me: Announcement,
        key: Key,
        metrics: DiscoveryMetrics,
    ) -> Result<Self, DiscoveryError> {
        Ok(Announcer {
            listener: udp::listener(cfg)?,
            sender: udp::sender(cfg)?,
            cfg: cfg.clone(),
            me,
            heard: Verifier::new(key.clone()),
            key,
            metrics,
            tally: Tally::default(),
        })
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.cfg.probe_interval_ms)
    }

    /// Listens one probe interval (and a little) for another leader of this cluster.
    async fn check_alone(&mut self) -> Result<(), DiscoveryError> {
        let until = tokio::time::Instant::now() + self.interval() + Duration::from_millis(500);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        info!(target = %self.cfg.target, wait_ms = (self.interval() + Duration::from_millis(500)).as_millis() as u64,
              "discovery: listening for another leader of this cluster before serving");
        loop {
            let got = tokio::time::timeout_at(until, self.listener.recv_from(&mut buf)).await;
            let Ok(got) = got else { return Ok(()) };
            let Ok((n, from)) = got else { continue };
            if let Some(other) = self.other_leader(&buf[..n], from) {
                return Err(DiscoveryError::Conflict {
                    cluster: self.me.cluster.clone(),
                    other,
                    from,
                });
            }
        }
    }

    /// The id of another leader of this cluster if the datagram is its announcement.
    fn other_leader(&mut self, datagram: &[u8], from: SocketAddr) -> Option<String> {
        let now = crate::clock::unix_ms();
        match self.heard.accept(datagram, now) {
            Ok(Discovery {
                body: Some(Body::ProbeInit(p)),
                ..
            }) => is_conflict(&self.me.cluster, &self.me.leader_id, &p).then_some(p.leader_id),
            // Ours, looped back, or another cluster's: nothing to do.
            Ok(_) => None,
            Err(reason) => {
                self.ignored(reason, from);
                None
            }
        }
    }

    fn ignored(&mut self, reason: Ignored, from: SocketAddr) {
        self.metrics.ignore(reason);
        if let Some(count) = self.tally.count(reason) {
            warn!(%from, reason = reason.as_str(), count, "discovery: ignored a datagram");
        }
    }

    fn probe(&self, nonce: Vec<u8>) -> Discovery {
        let me = &self.me;
        Discovery {
            nonce,
            sent_ms: u64::try_from(crate::clock::unix_ms()).unwrap_or(0),
            body: Some(Body::ProbeInit(ProbeInit {
                cluster: me.cluster.clone(),
                leader_id: me.leader_id.clone(),
                version: me.version.clone(),
                grpc_addr: me.grpc.ip().to_string(),
                grpc_port: u32::from(me.grpc.port()),
                query_port: u32::from(me.query_port),
                metrics_port: u32::from(me.metrics_port),
                started_ms: me.started_ms,
                interval_ms: u32::try_from(self.cfg.probe_interval_ms).unwrap_or(u32::MAX),
            })),
        }
    }

    async fn announce(&self) {
        let sent = match udp::nonce() {
            Ok(nonce) => {
                let datagram = self.key.seal(&self.probe(nonce));
                self.sender.send_to(&datagram, self.cfg.target).await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(_) => {
                self.metrics.probes.inc();
            }
            Err(e) => {
                warn!(target = %self.cfg.target, error = %e, "discovery: cannot send the announcement")
            }
        }
    }

    /// Answers a node's `ProbeAck` with a `RegisterAck`.
    async fn answer(
        &mut self,
        answers: &mut AckAnswers,
        acks: &mut Verifier,
        datagram: &[u8],
        from: SocketAddr,
    ) {
        let now = crate::clock::unix_ms();
        let msg = match acks.accept(datagram, now) {
            Ok(m) => m,
            Err(reason) => return self.ignored(reason, from),
        };
        let Some(Body::ProbeAck(ack)) = msg.body else {
            return self.ignored(Ignored::Unexpected, from);
        };
        let Some(reply) = answers.answer(&ack, &msg.nonce, now) else {
            return;
        };
        info!(%from, node = %ack.id, role = role_name(ack.role()), version = %ack.version,
              accepted = reply.accepted, retries_left = reply.retries_left, "discovery: a node answered");
        let Ok(nonce) = udp::nonce() else { return };
        let out = Discovery {
            nonce,
            sent_ms: u64::try_from(now).unwrap_or(0),
            body: Some(Body::RegisterAck(reply)),
        };
        if let Err(e) = self.sender.send_to(&self.key.seal(&out), from).await {
            warn!(%from, error = %e, "discovery: cannot answer a node");
        }
    }

    fn conflict(&mut self, other: String, from: SocketAddr, conflicts: &mut u64) {
        self.metrics.conflicts.inc();
        *conflicts += 1;
        if conflicts.is_power_of_two() {
            error!(%from, other_leader = %other, cluster = %self.me.cluster, count = *conflicts,
                   "discovery: another leader announces this cluster; two leaders would hand out the same clients (DESIGN C6): stop one of them");
        }
    }

    /// Announces until `shutdown`.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let grpc = if self.me.grpc.ip().is_unspecified() {
            format!(
                "this datagram's source address, port {}",
                self.me.grpc.port()
            )
        } else {
            self.me.grpc.to_string()
        };
        let mut answers = AckAnswers::new(&self.me.cluster, &self.me.version, &grpc);
        let mut acks = Verifier::new(self.key.clone());
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut heard_buf, mut ack_buf) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
        let mut conflicts = 0u64;
        info!(target = %self.cfg.target, interval_ms = self.cfg.probe_interval_ms, leader_id = %self.me.leader_id,
              "discovery: announcing this leader");
        loop {
            tokio::select! {
                _ = tick.tick() => self.announce().await,
                got = self.listener.recv_from(&mut heard_buf) => {
                    if let Ok((n, from)) = got
                        && let Some(other) = self.other_leader(&heard_buf[..n], from)
                    {
                        self.conflict(other, from, &mut conflicts);
                    }
                }
                got = self.sender.recv_from(&mut ack_buf) => {
                    if let Ok((n, from)) = got {
                        let datagram = ack_buf[..n].to_vec();
                        self.answer(&mut answers, &mut acks, &datagram, from).await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

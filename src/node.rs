//! The node side of a leader session, shared by workers and client agents: connect, register,
//! heartbeat, renew the lease from acks, and reconnect with capped exponential backoff.
//!
//! The lease is measured on this node's monotonic clock from the moment a heartbeat was *sent*;
//! the leader measures from when it *received* it and adds a grace, so this node always stops
//! before the leader gives its clients away (C3).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use tracing::{debug, info, warn};

use crate::codec::MAX_MESSAGE_BYTES;
use crate::hostmetrics::Sampler;
use crate::log_gate::LogGate;
use crate::proto::leader_message::Body;
use crate::proto::node_service_client::NodeServiceClient;
use crate::proto::{self, NodeMessage, node_message};

/// Messages this node sends on the current session.
pub(crate) type NodeOutbox = mpsc::Sender<NodeMessage>;

#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) role: proto::NodeRole,
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) addr: String,
    pub(crate) cluster: String,
    pub(crate) capacity: u32,
    /// Host values sent in heartbeats; `None`: sampling is off.
    pub(crate) host_metrics: Option<crate::hostmetrics::SamplerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the leader refused this {role}: {reason}")]
    Refused { role: &'static str, reason: String },
    #[error("leader address {addr:?} is not valid: {reason}; use HOST:PORT")]
    BadLeaderAddr { addr: String, reason: String },
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
}

impl From<crate::security::ConnectError> for NodeError {
    fn from(e: crate::security::ConnectError) -> Self {
        match e {
            crate::security::ConnectError::BadAddr { addr, reason } => {
                NodeError::BadLeaderAddr { addr, reason }
            }
            crate::security::ConnectError::Security(e) => NodeError::Security(e),
        }
    }
}

/// Where the leader is: given (`--leader`), or found by discovery (the newest leader heard,
/// read again at every reconnect, so a leader that moved is followed).
pub(crate) enum LeaderAddr {
    Fixed(String),
    Discovered(watch::Receiver<Option<crate::discovery::listen::Found>>),
}

/// How this node reaches the leader: its endpoint (TLS or not) and the token it sends.
struct Link {
    endpoint: tonic::transport::Endpoint,
    bearer: crate::security::Bearer,
}

/// What the role does with the session.
pub(crate) trait Handler {
    /// Assignments still held, reported in `Register` so the leader can reconcile.
    fn held(&self) -> Vec<proto::Assignment>;
    /// The load index sent with every heartbeat.
    fn load(&self) -> f64;
    /// Per-client progress sent with every heartbeat.
    fn progress(&mut self) -> Vec<proto::ClientProgress> {
        Vec::new()
    }
    /// A message from the leader after `Registered`.
    fn message(&mut self, body: Body, out: &NodeOutbox);
    /// Called often (connected or not) with whether the lease is still valid.
    fn lease(&mut self, valid: bool, out: Option<&NodeOutbox>);
    /// A new session was accepted by the leader.
    fn session_started(&mut self) {}
    /// Stop all work before `Leaving` is sent.
    fn shutdown(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// Lease state on the node's monotonic clock, shared with the tasks that must stop claiming
/// and committing the moment it runs out (C3).
#[derive(Debug, Clone)]
pub struct Lease {
    base: Instant,
    /// Nanoseconds after `base` until which the lease is valid; 0 = never granted.
    valid_until: Arc<AtomicU64>,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            base: Instant::now(),
            valid_until: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Lease {
    /// Extends the lease to `sent_at + lease`; never shortens it.
    pub(crate) fn renew(&self, sent_at: Instant, lease: Duration) {
        let until = (sent_at + lease)
            .saturating_duration_since(self.base)
            .as_nanos();
        let until = u64::try_from(until).unwrap_or(u64::MAX).max(1);
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }
    pub(crate) fn is_valid(&self, now: Instant) -> bool {
        let until = self.valid_until.load(Ordering::Acquire);
        let now =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        until != 0 && now < until
    }
    /// Whether the lease is valid right now.
    pub(crate) fn valid_now(&self) -> bool {
        self.is_valid(Instant::now())
    }
}

/// Capped exponential backoff with jitter.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            next: base,
            max,
            base,
        }
    }
    pub(crate) fn reset(&mut self) {
        self.next = self.base;
    }
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 25% jitter so a fleet does not reconnect in lockstep after a leader restart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos());
        d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

const TICK: Duration = Duration::from_millis(50);

enum End {
    Shutdown,
    Lost { was_registered: bool },
}

/// Holds a session with the leader until `shutdown`; returns an error only when the leader
/// refused this node for good (version, cluster).
pub(crate) async fn run<H: Handler>(
    ident: &Identity,
    mut leader: LeaderAddr,
    security: &crate::security::NodeSecurity,
    handler: &mut H,
    lease: Lease,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let mut link: Option<(String, Link)> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // One sampler across sessions: its CPU reading and schedule survive a reconnect.
    let mut sampler =
        (ident.host_metrics.clone()).and_then(|cfg| Sampler::start(cfg, std::time::Instant::now()));
    // A node that cannot reach its leader says so at once, then ever more rarely.
    let mut reach_log = LogGate::new(Duration::from_secs(10), Duration::from_secs(300));
    loop {
        if *shutdown.borrow() {
            handler.shutdown().await;
            return Ok(());
        }
        let Some(target) = leader_now(&mut leader, handler, &lease, &mut shutdown).await else {
            handler.shutdown().await;
            return Ok(());
        };
        if link.as_ref().is_none_or(|(at, _)| *at != target) {
            link = Some((target.clone(), connect_to(&target, security)?));
        }
        let Some((_, link)) = &link else { continue };
        let end = session(
            ident,
            link,
            handler,
            &lease,
            &mut shutdown,
            &mut reach_log,
            &mut sampler,
        );
        match end.await? {
            End::Shutdown => return Ok(()),
            End::Lost { was_registered } => {
                if was_registered {
                    backoff.reset();
                }
            }
        }
        // Keep fencing while disconnected: the lease runs out on its own.
        let until = Instant::now() + backoff.next_delay();
        while Instant::now() < until {
            handler.lease(lease.is_valid(Instant::now()), None);
            tokio::select! {
                _ = tokio::time::sleep(TICK.min(until - Instant::now())) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// The endpoint and token for the leader at `target`.
fn connect_to(target: &str, security: &crate::security::NodeSecurity) -> Result<Link, NodeError> {
    let connector = crate::security::Connector::new(target, security)?;
    let endpoint = connector
        .endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(Link {
        endpoint,
        bearer: connector.bearer,
    })
}

/// Where to connect now; with discovery, waits (fencing meanwhile) until a leader is heard.
/// `None` when this node is stopping.
async fn leader_now<H: Handler>(
    leader: &mut LeaderAddr,
    handler: &mut H,
    lease: &Lease,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let found = match leader {
        LeaderAddr::Fixed(addr) => return Some(addr.clone()),
        LeaderAddr::Discovered(found) => found,
    };
    loop {
        if let Some(f) = found.borrow_and_update().as_ref() {
            return Some(f.target.clone());
        }
        handler.lease(lease.is_valid(Instant::now()), None);
        tokio::select! {
            changed = found.changed() => if changed.is_err() { return None },
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

async fn session<H: Handler>(
    ident: &Identity,
    link: &Link,
    handler: &mut H,
    lease: &Lease,
    shutdown: &mut watch::Receiver<bool>,
    reach_log: &mut LogGate,
    sampler: &mut Option<Sampler>,
) -> Result<End, NodeError> {
    let Some(accepted) = register(ident, link, handler, lease, reach_log).await? else {
        return Ok(End::Lost {
            was_registered: false,
        });
    };
    handler.session_started();
    serve(accepted, handler, lease, shutdown, sampler).await
}

/// A session the leader accepted.
struct Accepted {
    out: NodeOutbox,
    inbound: Streaming<proto::LeaderMessage>,
    lease: Duration,
    heartbeat: Duration,
}

/// Opens a session and registers; `None` when it is worth trying again later, an error when
/// the leader refused this node for good.
async fn register<H: Handler>(
    ident: &Identity,
    link: &Link,
    handler: &H,
    lease: &Lease,
    reach_log: &mut LogGate,
) -> Result<Option<Accepted>, NodeError> {
    let Some((out, mut inbound, register_sent)) = open(ident, link, handler, reach_log).await
    else {
        return Ok(None);
    };
    let registered = match tokio::time::timeout(Duration::from_secs(10), inbound.next()).await {
        Ok(Some(Ok(proto::LeaderMessage {
            body: Some(Body::Registered(r)),
        }))) => r,
        Ok(Some(Err(e))) => {
            warn!(error = %e.message(), "session failed before registration; retrying");
            return Ok(None);
        }
        _ => return Ok(None),
    };
    if !registered.accepted {
        if registered.retryable {
            warn!(reason = %registered.reason, "leader refused registration; will retry");
            return Ok(None);
        }
        let role = match ident.role {
            proto::NodeRole::Agent => "agent",
            _ => "worker",
        };
        return Err(NodeError::Refused {
            role,
            reason: registered.reason,
        });
    }
    let lease_len = Duration::from_millis(u64::from(registered.lease_ms.max(1)));
    lease.renew(register_sent, lease_len);
    info!(leader = %link.endpoint.uri(), cluster = %registered.cluster, leader_version = %registered.leader_version,
          heartbeat_ms = registered.heartbeat_ms, lease_ms = registered.lease_ms, "registered with the leader");
    Ok(Some(Accepted {
        out,
        inbound,
        lease: lease_len,
        heartbeat: Duration::from_millis(u64::from(registered.heartbeat_ms.max(10))),
    }))
}

/// Connects and sends `Register`: the outbox, the leader's stream and when `Register` was
/// sent (the first lease runs from then). `None` when the leader cannot be reached.
async fn open<H: Handler>(
    ident: &Identity,
    link: &Link,
    handler: &H,
    reach_log: &mut LogGate,
) -> Option<(NodeOutbox, Streaming<proto::LeaderMessage>, Instant)> {
    let channel = match link.endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            let error = crate::text::causes(&e);
            match reach_log.failed(std::time::Instant::now()) {
                Some(failures) => {
                    warn!(leader = %link.endpoint.uri(), %error, failures, "cannot reach the leader; retrying with backoff")
                }
                None => {
                    debug!(leader = %link.endpoint.uri(), %error, "cannot reach the leader; retrying")
                }
            }
            return None;
        }
    };
    if let Some(failures) = reach_log.succeeded() {
        info!(leader = %link.endpoint.uri(), failures, "reached the leader again");
    }
    let mut client = NodeServiceClient::with_interceptor(channel, link.bearer.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (out, rx) = mpsc::channel::<NodeMessage>(1024);
    let register_sent = Instant::now();
    let register = proto::Register {
        role: ident.role as i32,
        id: ident.id.clone(),
        version: ident.version.clone(),
        addr: ident.addr.clone(),
        cluster: ident.cluster.clone(),
        capacity: ident.capacity,
        held: handler.held(),
    };
    out.send(body(node_message::Body::Register(register)))
        .await
        .ok()?;
    match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => Some((out, r.into_inner(), register_sent)),
        Err(e) if matches!(e.code(), Code::Unauthenticated | Code::PermissionDenied) => {
            warn!(error = %e.message(), "not authorised by the leader (check token_file, tls_cert and tls_key); retrying");
            None
        }
        Err(e) => {
            warn!(error = %e.message(), "leader rejected the session; retrying");
            None
        }
    }
}

/// Heartbeats in flight: an ack renews the lease from when its heartbeat was sent (C3).
#[derive(Default)]
struct InFlight {
    seq: u64,
    sent: VecDeque<(u64, Instant)>,
}

impl InFlight {
    /// The sequence number of a heartbeat sent now.
    fn send(&mut self) -> u64 {
        self.seq += 1;
        self.sent.push_back((self.seq, Instant::now()));
        if self.sent.len() > 64 {
            self.sent.pop_front();
        }
        self.seq
    }

    /// When the heartbeat `seq` was sent, if it is still in flight; older ones are dropped.
    fn acked(&mut self, seq: u64) -> Option<Instant> {
        while let Some(&(s, at)) = self.sent.front() {
            if s > seq {
                break;
            }
            self.sent.pop_front();
            if s == seq {
                return Some(at);
            }
        }
        None
    }
}

/// Heartbeats, renews the lease from acks and passes the leader's messages to the handler
/// until the session breaks or this node shuts down.
async fn serve<H: Handler>(
    accepted: Accepted,
    handler: &mut H,
    lease: &Lease,
    shutdown: &mut watch::Receiver<bool>,
    sampler: &mut Option<Sampler>,
) -> Result<End, NodeError> {
    let Accepted {
        out,
        mut inbound,
        lease: lease_len,
        heartbeat,
    } = accepted;
    let lost = Ok(End::Lost {
        was_registered: true,
    });
    let mut in_flight = InFlight::default();
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let seq = in_flight.send();
                let host = sampler.as_mut().and_then(|s| {
                    let values = s.poll(std::time::Instant::now(), heartbeat)?;
                    Some(values.to_proto(s.host()))
                });
                let hb = proto::Heartbeat { seq, load: handler.load(), clients: handler.progress(), host };
                if out.send(body(node_message::Body::Heartbeat(hb))).await.is_err() {
                    return lost;
                }
            }
            _ = check.tick() => handler.lease(lease.is_valid(Instant::now()), Some(&out)),
            msg = inbound.next() => match msg {
                Some(Ok(proto::LeaderMessage { body: Some(Body::HeartbeatAck(ack)) })) => {
                    if let Some(at) = in_flight.acked(ack.seq) {
                        lease.renew(at, lease_len);
                    }
                }
                Some(Ok(proto::LeaderMessage { body: Some(b) })) => handler.message(b, &out),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    warn!(error = %e.message(), "lost the session with the leader; reconnecting");
                    return lost;
                }
                None => {
                    warn!("the leader closed the session; reconnecting");
                    return lost;
                }
            },
            _ = shutdown.changed() => {
                leave(handler, out, inbound).await;
                return Ok(End::Shutdown);
            }
        }
    }
}

/// Stops all work, says `Leaving` and gives the leader a moment to read it.
async fn leave<H: Handler>(
    handler: &mut H,
    out: NodeOutbox,
    mut inbound: Streaming<proto::LeaderMessage>,
) {
    handler.shutdown().await;
    let _ = out
        .send(body(node_message::Body::Leaving(proto::Leaving {})))
        .await;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while inbound.next().await.is_some() {}
    })
    .await;
}

fn body(b: node_message::Body) -> NodeMessage {
    NodeMessage { body: Some(b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_from_send_time_and_never_shrinks() {
        let lease = Lease::default();
        let t0 = Instant::now();
        assert!(!lease.is_valid(t0));
        lease.renew(t0, Duration::from_millis(100));
        assert!(lease.is_valid(t0 + Duration::from_millis(99)));
        assert!(!lease.is_valid(t0 + Duration::from_millis(100)));
        // A late ack for an older heartbeat does not shorten the lease.
        lease.renew(t0 - Duration::from_millis(50), Duration::from_millis(100));
        assert!(lease.is_valid(t0 + Duration::from_millis(99)));
    }

    #[test]
    fn an_ack_finds_its_heartbeat_and_drops_older_ones() {
        let mut in_flight = InFlight::default();
        let first = in_flight.send();
        let second = in_flight.send();
        let third = in_flight.send();
        assert!(in_flight.acked(second).is_some());
        assert_eq!(in_flight.acked(first), None, "older than an ack: gone");
        assert!(in_flight.acked(third).is_some());
        assert_eq!(in_flight.acked(third), None, "acked once");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert!((100..=125).contains(&d[0]), "{d:?}");
        assert!((200..=250).contains(&d[1]), "{d:?}");
        assert!((400..=500).contains(&d[3]), "{d:?}");
        b.reset();
        assert!(b.next_delay().as_millis() <= 125);
    }
}

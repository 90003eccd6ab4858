//! `NodeService`: one long-lived bidirectional stream per worker or agent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::convert;
use crate::hostmetrics::{HostValues, Hub, Role};
use crate::leader::core::{Command, CoreHandle};
use crate::leader::registry::SessionId;
use crate::proto::node_message::Body;
use crate::proto::{self, LeaderMessage, NodeMessage, node_service_server::NodeService};

/// How long a new stream may take to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct NodeApi {
    core: CoreHandle,
    next_session: AtomicU64,
    /// With mTLS, the cluster whose names a node's certificate must carry.
    cert_cluster: Option<String>,
    /// Where host samples go, straight from the session task (never through the core).
    hub: Option<Arc<Hub>>,
}

impl NodeApi {
    pub(crate) fn new(core: CoreHandle) -> Self {
        NodeApi {
            core,
            next_session: AtomicU64::new(1),
            cert_cluster: None,
            hub: None,
        }
    }

    pub(crate) fn with_host_metrics(mut self, hub: Arc<Hub>) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Refuses a `Register` whose id the client certificate does not name (mTLS).
    pub(crate) fn requiring_cert_names(mut self, cluster: String) -> Self {
        self.cert_cluster = Some(cluster);
        self
    }

    fn check_cert(
        &self,
        certs: Option<&[tonic::transport::CertificateDer<'static>]>,
        hello: &proto::Register,
        peer: &str,
    ) -> Result<(), Status> {
        let Some(cluster) = &self.cert_cluster else {
            return Ok(());
        };
        let role = match proto::NodeRole::try_from(hello.role) {
            Ok(proto::NodeRole::Agent) => "agent",
            _ => "worker",
        };
        let name = crate::security::tls::node_name(role, &hello.id, cluster);
        if certs.is_some_and(|c| crate::security::tls::names(c, &name)) {
            return Ok(());
        }
        tracing::warn!(%peer, id = %hello.id, expected = %name, "refused a Register: the client certificate does not name this node");
        Err(Status::permission_denied(format!(
            "the client certificate does not name {name}; a {role}'s certificate must carry \
             the DNS name {name}"
        )))
    }
}

type LeaderStream = Pin<Box<dyn Stream<Item = Result<LeaderMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    type SessionStream = LeaderStream;

    async fn session(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let hello = first_register(&mut inbound).await?;
        self.check_cert(certs.as_deref().map(Vec::as_slice), &hello, &peer)?;
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let emitter = self.hub.clone().map(|hub| Emitter {
            hub,
            role: match proto::NodeRole::try_from(hello.role) {
                Ok(proto::NodeRole::Agent) => Role::Agent,
                _ => Role::Worker,
            },
            id: hello.id.clone(),
        });
        let (outbox, rx) = mpsc::unbounded_channel();
        self.core.send(Command::Register {
            session,
            hello: hello.into(),
            peer,
            outbox,
        })?;
        tokio::spawn(forward(inbound, session, self.core.clone(), emitter));
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(|message| Ok((*message).into())),
        )))
    }
}

/// The `Register` a session must open with, within [`REGISTER_TIMEOUT`].
async fn first_register(inbound: &mut Streaming<NodeMessage>) -> Result<proto::Register, Status> {
    let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no Register within 10 s of opening the session"))?;
    match first {
        Some(Ok(NodeMessage {
            body: Some(Body::Register(r)),
        })) => Ok(r),
        Some(Err(e)) => Err(e),
        _ => Err(Status::invalid_argument(
            "the first message of a session must be Register",
        )),
    }
}

/// The node behind a session, as its host samples are recorded.
struct Emitter {
    hub: Arc<Hub>,
    role: Role,
    id: String,
}

impl Emitter {
    fn record(&self, sample: &proto::HostSample) {
        match HostValues::from_proto(sample) {
            Some(values) => self.hub.record(&sample.host, self.role, &self.id, values),
            None => {
                debug!(id = %self.id, "ignoring a host sample with a value that is not a number")
            }
        }
    }
}

/// Hands every later message of the session to the core, then tells it the stream closed.
/// Host samples go to the hub instead: they need nothing the core owns.
async fn forward(
    mut inbound: Streaming<NodeMessage>,
    session: SessionId,
    core: CoreHandle,
    emitter: Option<Emitter>,
) {
    while let Some(msg) = inbound.next().await {
        let body = match msg {
            Ok(NodeMessage { body: Some(body) }) => body,
            Ok(NodeMessage { body: None }) => continue,
            Err(e) => {
                debug!(session, error = %e, "session stream error");
                break;
            }
        };
        let cmd = match body {
            Body::Heartbeat(mut h) => {
                if let (Some(sample), Some(emitter)) = (h.host.take(), &emitter)
                    && !sample.host.is_empty()
                {
                    emitter.record(&sample);
                }
                Command::Heartbeat {
                    session,
                    seq: h.seq,
                    load: h.load,
                    progress: h.clients.into_iter().map(convert::progress).collect(),
                }
            }
            Body::Released(r) => Command::Released {
                session,
                client: r.client,
                epoch: r.epoch,
            },
            Body::Leaving(_) => Command::Leaving { session },
            Body::FilesReady(_) => Command::FilesReady { session },
            Body::Register(_) => {
                debug!(session, "ignoring a second Register on one session");
                continue;
            }
        };
        if core.send(cmd).is_err() {
            return;
        }
    }
    let _ = core.send(Command::Closed { session });
}

//! `NodeService`: one long-lived bidirectional stream per worker or agent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::leader::core::{Command, CoreHandle};
use crate::proto::node_message::Body;
use crate::proto::{LeaderMessage, NodeMessage, node_service_server::NodeService};

/// How long a new stream may take to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NodeApi {
    core: CoreHandle,
    next_session: AtomicU64,
}

impl NodeApi {
    pub fn new(core: CoreHandle) -> Self {
        NodeApi {
            core,
            next_session: AtomicU64::new(1),
        }
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
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.next())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Register within 10 s of opening the session")
            })?;
        let register = match first {
            Some(Ok(NodeMessage {
                body: Some(Body::Register(r)),
            })) => r,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be Register",
                ));
            }
        };
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (outbox, rx) = mpsc::unbounded_channel();
        self.core.send(Command::Register {
            session,
            register,
            peer,
            outbox,
        })?;
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let cmd = match msg {
                    Ok(NodeMessage { body: Some(body) }) => match body {
                        Body::Heartbeat(h) => Command::Heartbeat {
                            session,
                            seq: h.seq,
                            load: h.load,
                            progress: h.clients,
                        },
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
                    },
                    Ok(NodeMessage { body: None }) => continue,
                    Err(e) => {
                        debug!(session, error = %e, "session stream error");
                        break;
                    }
                };
                if core.send(cmd).is_err() {
                    return;
                }
            }
            let _ = core.send(Command::Closed { session });
        });
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(|message| Ok(*message)),
        )))
    }
}

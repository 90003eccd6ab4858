//! The token check in front of each gRPC service (a tonic interceptor: it sees the headers
//! before any request body is decoded) and the client half that adds the token.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Request, Status};
use tracing::warn;

use super::token::{Expected, Token, bearer};

/// Which API a token opens; each has its own token so a node's secret cannot run sqdctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Admin,
    Node,
    /// A worker's shard (queries from the leader): the node token, which the leader also holds.
    Shard,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::Admin => "admin",
            Api::Node => "node",
            Api::Shard => "shard",
        }
    }
}

/// Why a request was refused; the one-line reason the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    Malformed,
    Wrong,
}

impl Refusal {
    fn reason(self, api: Api) -> String {
        let (what, file) = match api {
            Api::Admin => ("the admin API", "the admin token (sqdctl --token-file)"),
            Api::Node => ("NodeService", "the node token (token_file)"),
            Api::Shard => (
                "this worker's ShardService",
                "the node token (the leader's node_token_file)",
            ),
        };
        match self {
            Refusal::Missing => format!("{what} needs a token: send {file}"),
            Refusal::Malformed => {
                format!("{what}: the authorization header is not `Bearer <token>`")
            }
            Refusal::Wrong => format!("{what}: wrong token; send {file}"),
        }
    }
}

/// The pure decision on one `authorization` header value.
pub(crate) fn decide(header: Option<&[u8]>, expected: &Expected) -> Result<(), Refusal> {
    let value = header.ok_or(Refusal::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| Refusal::Malformed)?;
    let token = bearer(value).ok_or(Refusal::Malformed)?;
    if expected.matches(token) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabel {
    api: String,
}

/// Requests refused by a gate, by API (`sqd_leader_auth_refused_total`).
pub(crate) type Refused = Family<ApiLabel, Counter>;

/// Registers the refusal counter in the leader's metrics registry.
pub(crate) fn register_metrics(
    registry: &mut prometheus_client::registry::Registry,
    refused: &Refused,
) {
    registry.register(
        "sqd_leader_auth_refused",
        "Requests refused for a missing or wrong token, by API (admin, node)",
        refused.clone(),
    );
}

/// The server-side check of one API: passes everything when no token is configured (the
/// loopback-only, zero-config case; the leader refuses that setup elsewhere).
#[derive(Clone)]
pub(crate) struct Gate {
    api: Api,
    expected: Option<Arc<Expected>>,
    refused: Refused,
}

impl Gate {
    pub(crate) fn new(api: Api, token: Option<&Token>, refused: Refused) -> Self {
        Gate {
            api,
            expected: token.map(|t| Arc::new(Expected::new(t))),
            refused,
        }
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        match decide(header, expected) {
            Ok(()) => Ok(request),
            Err(refusal) => {
                let peer = request
                    .remote_addr()
                    .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
                let reason = refusal.reason(self.api);
                warn!(%peer, api = self.api.as_str(), reason = %reason, "refused an unauthenticated request");
                self.refused
                    .get_or_create(&ApiLabel {
                        api: self.api.as_str().to_owned(),
                    })
                    .inc();
                Err(Status::unauthenticated(reason))
            }
        }
    }
}

/// The client half: adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    pub(crate) fn new(token: Option<&Token>) -> Self {
        // Token::parse admits printable ASCII only, which is always a valid header value.
        Bearer(token.and_then(|t| MetadataValue::try_from(format!("Bearer {}", t.secret())).ok()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

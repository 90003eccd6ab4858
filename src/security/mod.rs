//! The control plane's security: token files and their check in front of each gRPC service,
//! TLS and mTLS settings, and the rules that keep a reachable leader from running open.
//!
//! Two shared secrets: the admin token opens `AdminService` (sqdctl), the node token opens
//! `NodeService` (workers and agents). With `tls_client_ca` the leader also requires a client
//! certificate, and a node's certificate must name it (see [`tls::node_name`]).

pub(crate) mod gate;
#[cfg(test)]
mod tests;
pub(crate) mod tls;
pub(crate) mod token;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use gate::Bearer;
use token::Token;

/// A security setting that cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; it is never overwritten (remove it first to replace the token)")]
    Exists(PathBuf),
    #[error("cannot use token file {path}: {why}")]
    BadToken { path: PathBuf, why: String },
    #[error("{0} is not a PEM file (no -----BEGIN line)")]
    NotPem(PathBuf),
    #[error(
        "refusing to listen on {0} without tokens: anyone who reaches it would own the cluster; \
         run `sqd --mode leader init --generate-tokens` and start with --admin-token-file and \
         --node-token-file (or listen on 127.0.0.1)"
    )]
    OpenLeader(SocketAddr),
    #[error(
        "refusing to take tokens in plaintext on {0}: set tls_cert and tls_key (see INSTALL.md), \
         or allow_insecure = true on a network you trust"
    )]
    PlaintextLeader(SocketAddr),
    #[error(
        "refusing to send the token in plaintext to {0}: set tls_ca (the CA of the leader's \
         certificate), or allow_insecure = true on a network you trust"
    )]
    PlaintextClient(String),
    #[error("invalid TLS settings: {0}")]
    Tls(#[from] tonic::transport::Error),
}

/// The leader's security settings (keys of leader.toml, flags of `sqd --mode leader start`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaderSecurity {
    pub admin_token_file: Option<PathBuf>,
    pub node_token_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Requires client certificates signed by this CA (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    pub allow_insecure: bool,
}

/// A client's security settings: a worker's, an agent's (node token) or sqdctl's (admin token).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSecurity {
    pub token_file: Option<PathBuf>,
    /// The CA of the leader's certificate; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate and key, for a leader that requires them (mTLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_insecure: bool,
}

/// The host part of HOST:PORT (brackets of an IPv6 literal removed).
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether a HOST is this machine only: a loopback IP or `localhost`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The rules of a leader's start (pure): a non-loopback address needs both tokens, and tokens
/// travel only over TLS there unless `allow_insecure`. Loopback stays zero-config.
pub(crate) fn check_leader(listen: SocketAddr, cfg: &LeaderSecurity) -> Result<(), SecurityError> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if cfg.admin_token_file.is_none() || cfg.node_token_file.is_none() {
        return Err(SecurityError::OpenLeader(listen));
    }
    if cfg.tls_cert.is_none() && !cfg.allow_insecure {
        return Err(SecurityError::PlaintextLeader(listen));
    }
    Ok(())
}

/// The rule of a client (pure): a token goes in plaintext only to loopback, unless
/// `allow_insecure`.
pub(crate) fn check_client(leader: &str, cfg: &NodeSecurity) -> Result<(), SecurityError> {
    let exposed = cfg.token_file.is_some() && cfg.tls_ca.is_none();
    if exposed && !cfg.allow_insecure && !is_loopback_host(host_of(leader)) {
        return Err(SecurityError::PlaintextClient(leader.to_owned()));
    }
    Ok(())
}

/// The leader's security, read and checked once at start.
pub(crate) struct LeaderGuard {
    pub(crate) admin: gate::Gate,
    pub(crate) node: gate::Gate,
    pub(crate) tls: Option<tonic::transport::ServerTlsConfig>,
    /// With mTLS: a node's certificate must name it in this cluster.
    pub(crate) require_node_names: bool,
    /// Counts what the gates refuse; registered with the leader's metrics.
    pub(crate) refused: gate::Refused,
    /// What the leader sends to workers' shards: the node token, which their gate expects.
    pub(crate) shard_bearer: Bearer,
}

impl LeaderGuard {
    pub(crate) fn load(
        listen: SocketAddr,
        cfg: &LeaderSecurity,
        refused: gate::Refused,
    ) -> Result<Self, SecurityError> {
        check_leader(listen, cfg)?;
        let read = |p: &Option<PathBuf>| p.as_deref().map(Token::read).transpose();
        let admin = read(&cfg.admin_token_file)?;
        let node = read(&cfg.node_token_file)?;
        Ok(LeaderGuard {
            admin: gate::Gate::new(gate::Api::Admin, admin.as_ref(), refused.clone()),
            node: gate::Gate::new(gate::Api::Node, node.as_ref(), refused.clone()),
            refused,
            shard_bearer: Bearer::new(node.as_ref()),
            tls: tls::server(cfg)?,
            require_node_names: cfg.tls_client_ca.is_some() && cfg.tls_cert.is_some(),
        })
    }
}

/// How a client reaches the leader: the endpoint (TLS or not) and the token it sends.
pub struct Connector {
    pub endpoint: tonic::transport::Endpoint,
    pub bearer: Bearer,
}

impl Connector {
    /// Reads the token and TLS files of `cfg` for a connection to `leader` (HOST:PORT).
    /// `bad_addr` turns an address tonic cannot use into the caller's own error.
    pub fn new(leader: &str, cfg: &NodeSecurity) -> Result<Self, ConnectError> {
        check_client(leader, cfg)?;
        let token = cfg.token_file.as_deref().map(Token::read).transpose()?;
        let tls = tls::client(cfg, leader)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{leader}"))
            .map_err(|e| ConnectError::BadAddr {
                addr: leader.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(SecurityError::from)?;
        }
        Ok(Connector {
            endpoint,
            bearer: Bearer::new(token.as_ref()),
        })
    }
}

/// Why a [`Connector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("leader address {addr:?} is not a valid HOST:PORT: {reason}")]
    BadAddr { addr: String, reason: String },
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// `sqd --mode leader init --generate-tokens`: writes a new admin and node token (mode 0600),
/// refusing to replace either file.
pub fn generate_tokens(admin: &Path, node: &Path) -> Result<(), SecurityError> {
    for path in [admin, node] {
        if path.exists() {
            return Err(SecurityError::Exists(path.to_path_buf()));
        }
    }
    token::write_new(admin)?;
    token::write_new(node)
}

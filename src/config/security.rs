//! The security keys and flags of each mode (tokens, TLS files, `allow_insecure`), loaded
//! into [`crate::security`]'s settings with the pairing rules between them.

use std::path::PathBuf;

use clap::Args;

use super::{Loader, Slot, Sourced, merge, rules};
use crate::security::{LeaderSecurity, NodeSecurity};

/// The leader's security flags.
#[derive(Debug, Clone, Default, Args)]
pub struct LeaderSecurityFlags {
    /// File holding the admin token (sqdctl, admin API); mode 0600. Generate with
    /// `sqd --mode leader init --generate-tokens`.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the node token (workers and agents); mode 0600.
    #[arg(long, value_name = "FILE")]
    pub node_token_file: Option<PathBuf>,
    /// Client certificates must be signed by this CA (PEM): mTLS. A node's certificate must
    /// name it: <id>.worker.<cluster> or <name>.agent.<cluster>.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// A node's (worker or agent) security flags.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeSecurityFlags {
    /// File holding the node token sent to the leader; mode 0600.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA of the leader's certificate (PEM); turns TLS on towards the leader.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// The flags every mode takes the same way: own certificate and key, and `allow_insecure`.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsFlags {
    /// This process's certificate (PEM): the leader's server certificate, or a node's client
    /// certificate when the leader requires one (mTLS).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Let tokens travel in plaintext to or from a non-loopback address (trusted networks only).
    #[arg(long)]
    pub allow_insecure: bool,
}

pub(super) const LEADER_KEYS: &[&str] = &[
    "admin_token_file",
    "node_token_file",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "allow_insecure",
];
pub(super) const NODE_KEYS: &[&str] = &[
    "token_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "allow_insecure",
];

/// The file's security keys, before flags.
pub(super) struct SecurityKeys {
    token_a: Slot<PathBuf>,
    token_b: Slot<PathBuf>,
    ca: Slot<PathBuf>,
    cert: Slot<PathBuf>,
    key: Slot<PathBuf>,
    insecure: Slot<bool>,
}

impl SecurityKeys {
    pub(super) fn take_leader(l: &mut Loader) -> Self {
        SecurityKeys {
            token_a: l.path("admin_token_file"),
            token_b: l.path("node_token_file"),
            ca: l.path("tls_client_ca"),
            cert: l.path("tls_cert"),
            key: l.path("tls_key"),
            insecure: l.take("allow_insecure", "a boolean", toml::Value::as_bool),
        }
    }

    pub(super) fn take_node(l: &mut Loader) -> Self {
        SecurityKeys {
            token_a: l.path("token_file"),
            token_b: Slot::Missing,
            ca: l.path("tls_ca"),
            cert: l.path("tls_cert"),
            key: l.path("tls_key"),
            insecure: l.take("allow_insecure", "a boolean", toml::Value::as_bool),
        }
    }
}

fn path(
    l: &mut Loader,
    key: &str,
    flag: &Option<PathBuf>,
    file: Slot<PathBuf>,
) -> Option<Sourced<PathBuf>> {
    l.check(key, merge(flag.clone(), file), rules::non_empty_path)
}

/// Certificate and key come together; `needs` names the key they depend on, when given.
fn pair(l: &mut Loader, cert: &Option<Sourced<PathBuf>>, key: &Option<Sourced<PathBuf>>) {
    match (cert, key) {
        (Some(c), None) => l.problem(
            c.origin,
            "tls_cert",
            "needs tls_key (the certificate's private key) too",
        ),
        (None, Some(k)) => l.problem(
            k.origin,
            "tls_key",
            "needs tls_cert (the certificate of this key) too",
        ),
        _ => {}
    }
}

fn insecure(flag: bool, file: Slot<bool>) -> bool {
    match merge(flag.then_some(true), file) {
        Slot::Set(Sourced { value, .. }) => value,
        _ => false,
    }
}

pub(super) fn leader(
    l: &mut Loader,
    keys: SecurityKeys,
    flags: &LeaderSecurityFlags,
) -> LeaderSecurity {
    let admin = path(l, "admin_token_file", &flags.admin_token_file, keys.token_a);
    let node = path(l, "node_token_file", &flags.node_token_file, keys.token_b);
    let ca = path(l, "tls_client_ca", &flags.tls_client_ca, keys.ca);
    let cert = path(l, "tls_cert", &flags.tls.tls_cert, keys.cert);
    let key = path(l, "tls_key", &flags.tls.tls_key, keys.key);
    pair(l, &cert, &key);
    if let (Some(ca), None) = (&ca, &cert) {
        l.problem(
            ca.origin,
            "tls_client_ca",
            "needs tls_cert and tls_key: client certificates are checked over TLS",
        );
    }
    LeaderSecurity {
        admin_token_file: Sourced::value_of(admin),
        node_token_file: Sourced::value_of(node),
        tls_cert: Sourced::value_of(cert),
        tls_key: Sourced::value_of(key),
        tls_client_ca: Sourced::value_of(ca),
        allow_insecure: insecure(flags.tls.allow_insecure, keys.insecure),
    }
}

pub(super) fn node(l: &mut Loader, keys: SecurityKeys, flags: &NodeSecurityFlags) -> NodeSecurity {
    let token = path(l, "token_file", &flags.token_file, keys.token_a);
    let ca = path(l, "tls_ca", &flags.tls_ca, keys.ca);
    let cert = path(l, "tls_cert", &flags.tls.tls_cert, keys.cert);
    let key = path(l, "tls_key", &flags.tls.tls_key, keys.key);
    pair(l, &cert, &key);
    if let (Some(cert), None) = (&cert, &ca) {
        l.problem(cert.origin, "tls_cert", "needs tls_ca (the CA of the leader's certificate): a client certificate is only sent over TLS");
    }
    NodeSecurity {
        token_file: Sourced::value_of(token),
        tls_ca: Sourced::value_of(ca),
        tls_cert: Sourced::value_of(cert),
        tls_key: Sourced::value_of(key),
        allow_insecure: insecure(flags.tls.allow_insecure, keys.insecure),
    }
}

#[cfg(test)]
mod tests;

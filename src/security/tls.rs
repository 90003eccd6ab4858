//! TLS settings built from the configured PEM files, and the rule that a node's client
//! certificate names the node it registers as.

use std::path::Path;

use rustls_pki_types::ServerName;
use tonic::transport::{Certificate, CertificateDer, ClientTlsConfig, Identity, ServerTlsConfig};

use super::{LeaderSecurity, NodeSecurity, SecurityError};

fn read_pem(path: &Path) -> Result<Vec<u8>, SecurityError> {
    let bytes = std::fs::read(path).map_err(|source| SecurityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(SecurityError::NotPem(path.to_path_buf()));
    }
    Ok(bytes)
}

/// The leader's TLS: its certificate and key, and with `tls_client_ca` client certificates
/// required (mTLS). `None` when the leader serves plaintext.
pub(crate) fn server(cfg: &LeaderSecurity) -> Result<Option<ServerTlsConfig>, SecurityError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
    if let Some(ca) = &cfg.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_pem(ca)?));
    }
    Ok(Some(tls))
}

/// A client's TLS towards `leader` (HOST:PORT): the leader's certificate must name HOST (a
/// DNS name or an IP address) and chain to `tls_ca`. `None` for plaintext.
pub(crate) fn client(
    cfg: &NodeSecurity,
    leader: &str,
) -> Result<Option<ClientTlsConfig>, SecurityError> {
    let Some(ca) = &cfg.tls_ca else {
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_pem(ca)?))
        .domain_name(super::host_of(leader));
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
    }
    Ok(Some(tls))
}

/// A worker's shard listener over TLS: with mTLS the worker's own certificate (which names
/// `<id>.worker.<cluster>`) is also its server certificate. `None` without one: plaintext,
/// gated by the node token only.
pub(crate) fn shard_server(cfg: &NodeSecurity) -> Result<Option<ServerTlsConfig>, SecurityError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    Ok(Some(ServerTlsConfig::new().identity(Identity::from_pem(
        read_pem(cert)?,
        read_pem(key)?,
    ))))
}

/// How the leader reaches workers' shards over TLS: their certificates chain to the leader's
/// `tls_client_ca` and name `<id>.worker.<cluster>`. Only with mTLS (otherwise the leader has
/// nothing to check a worker's certificate against, and workers have none).
#[derive(Clone)]
pub(crate) struct ShardTls {
    ca: Certificate,
    cluster: String,
}

impl ShardTls {
    pub(crate) fn load(
        cfg: &LeaderSecurity,
        cluster: &str,
    ) -> Result<Option<ShardTls>, SecurityError> {
        let Some(ca) = cfg
            .tls_client_ca
            .as_ref()
            .filter(|_| cfg.tls_cert.is_some())
        else {
            return Ok(None);
        };
        Ok(Some(ShardTls {
            ca: Certificate::from_pem(read_pem(ca)?),
            cluster: cluster.to_owned(),
        }))
    }

    /// The TLS settings towards worker `id`'s shard.
    pub(crate) fn towards(&self, id: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .domain_name(node_name("worker", id, &self.cluster))
    }
}

/// The name a node's client certificate must carry (as a DNS subject alternative name):
/// `<id>.worker.<cluster>` or `<name>.agent.<cluster>`.
pub(crate) fn node_name(role: &str, id: &str, cluster: &str) -> String {
    format!("{id}.{role}.{cluster}")
}

/// Whether the peer's leaf certificate (already verified against `tls_client_ca` by the
/// handshake) names `name`.
pub(crate) fn names(certs: &[CertificateDer<'static>], name: &str) -> bool {
    let Some(leaf) = certs.first() else {
        return false;
    };
    let Ok(subject) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&subject).is_ok())
}

//! The thin HTTP adapter of remote-write: one POST of a snappy `WriteRequest` over HTTP/1.1
//! (hyper's client connection over a tokio TCP stream, through rustls for https), with the
//! headers the protocol asks for, answering the status, `Retry-After` and the start of the body.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Most bytes of a response body read (the receiver's reason).
const BODY_LIMIT: usize = 4096;

/// Where requests go, parsed once.
#[derive(Clone)]
pub(crate) struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    authorization: Option<HeaderValue>,
    /// For https: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("remote_write_url {0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    #[error(
        "cannot read CA certificates from {path}: {why}; set remote_write_tls_ca to a PEM file"
    )]
    Roots { path: String, why: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS handshake with {addr}: {source}")]
    Handshake {
        addr: String,
        source: std::io::Error,
    },
    #[error("the remote-write credentials hold characters an HTTP header cannot carry")]
    Header,
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// What the receiver answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Endpoint {
    /// `authorization`: the whole header value (`Bearer …` or `Basic …`), if any; `ca`: the
    /// PEM file of the CAs an https receiver's certificate is checked against.
    pub(crate) fn new(
        url: &str,
        authorization: Option<String>,
        ca: &Path,
    ) -> Result<Self, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::Url(url.to_owned()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(HttpError::Url(url.to_owned())),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| HttpError::Url(url.to_owned()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let authorization = authorization
            .map(|a| HeaderValue::from_str(&a).map_err(|_| HttpError::Header))
            .transpose()?;
        let tls = if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| HttpError::Url(url.to_owned()))?;
            Some((connector(ca)?, name))
        } else {
            None
        };
        Ok(Endpoint {
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            uri,
            authorization,
            tls,
        })
    }

    /// Posts one snappy-compressed `WriteRequest`, all within `timeout`.
    pub(crate) async fn post(&self, body: Vec<u8>, timeout: Duration) -> Result<Answer, HttpError> {
        tokio::time::timeout(timeout, self.exchange(body))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
    }

    async fn exchange(&self, body: Vec<u8>) -> Result<Answer, HttpError> {
        let addr = format!("{}:{}", self.host, self.port);
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => self.request(stream, body).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|source| HttpError::Handshake { addr, source })?;
                self.request(tls, body).await
            }
        }
    }

    async fn request<S>(&self, io: S, body: Vec<u8>) -> Result<Answer, HttpError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let driver = tokio::spawn(conn);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = self
            .uri
            .authority()
            .map_or(self.host.as_str(), |a| a.as_str());
        let mut req = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::CONTENT_ENCODING, "snappy")
            .header(
                header::USER_AGENT,
                concat!("sqd/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(auth) = &self.authorization {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The reason is worth a log line; a body over the limit is cut, not an error.
        let body = match Limited::new(resp.into_body(), BODY_LIMIT).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        driver.abort();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// A TLS client trusting the CAs in the PEM file `ca` (ring, as tonic's TLS).
fn connector(ca: &Path) -> Result<TlsConnector, HttpError> {
    let bad = |why: String| HttpError::Roots {
        path: ca.display().to_string(),
        why,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        // A bundle may hold certificates rustls cannot use; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(bad("no usable certificate in it".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

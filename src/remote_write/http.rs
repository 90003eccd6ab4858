//! The thin HTTP adapter of remote-write: one POST of a snappy `WriteRequest` over HTTP/1.1
//! (hyper's client connection over a tokio TCP stream), with the headers the protocol asks
//! for, answering the status, `Retry-After` and the start of the body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Most bytes of a response body read (the receiver's reason).
const BODY_LIMIT: usize = 4096;

/// Where requests go, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    authorization: Option<HeaderValue>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("remote_write_url {0:?} is not an http:// URL with a host")]
    Url(String),
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
    /// `authorization`: the whole header value (`Bearer …` or `Basic …`), if any.
    pub(crate) fn new(url: &str, authorization: Option<String>) -> Result<Self, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::Url(url.to_owned()))?;
        let host = uri
            .host()
            .filter(|h| uri.scheme_str() == Some("http") && !h.is_empty())
            .ok_or_else(|| HttpError::Url(url.to_owned()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let authorization = authorization
            .map(|a| HeaderValue::from_str(&a).map_err(|_| HttpError::Header))
            .transpose()?;
        Ok(Endpoint {
            port: uri.port_u16().unwrap_or(80),
            host,
            uri,
            authorization,
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
            .map_err(|source| HttpError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
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

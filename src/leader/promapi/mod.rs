//! The leader's Prometheus-compatible HTTP query API (`--query-listen`), so Grafana and promtool
//! read sqd as a Prometheus data source: `/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/<name>/values`, `status/buildinfo`, GET or form-encoded POST.
//!
//! Thin HTTP adapter: [`params`] parses the request, [`exec`] answers it over any
//! [`ClusterReader`], [`render`] writes Prometheus's JSON, [`error`] maps failures onto
//! Prometheus's `errorType`s and statuses.

pub(crate) mod error;
pub(crate) mod exec;
pub(crate) mod params;
pub(crate) mod render;

#[cfg(test)]
mod testreader;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::{info, warn};

use crate::stats::cluster::ClusterReader;
use error::ApiError;
use exec::Reply;
use params::{InstantRequest, Params, RangeRequest, SeriesRequest};

/// Largest form body read (Prometheus's clients send queries, not data).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Most reads in flight at once, each a fan-out to every shard; more wait their turn
/// (Prometheus's `--query.max-concurrency` default).
const MAX_CONCURRENT_READS: usize = 20;

/// What every handler shares.
struct Api<R> {
    reader: Arc<R>,
    turns: Semaphore,
}

impl<R> Api<R> {
    async fn turn(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        // The semaphore is never closed; a closed one would mean the server is going away.
        self.turns.acquire().await.map_err(|_| {
            ApiError::from(crate::stats::cluster::ClusterError::Unavailable(
                "the query API is stopping".into(),
            ))
        })
    }
}

/// The address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve the query API on {addr}: {source}; is another process using the port? pick another with --query-listen"
)]
pub struct PromApiError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` now (so a taken port fails the start) and returns the bound address and the
/// server future, which runs until `shutdown` completes.
pub async fn serve<R: ClusterReader>(
    addr: SocketAddr,
    reader: Arc<R>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send), PromApiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| PromApiError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| PromApiError { addr, source })?;
    let app = router(reader);
    info!(addr = %local, "serving the Prometheus query API on /api/v1/");
    let serve = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "query API stopped");
        }
    };
    Ok((local, serve))
}

fn router<R: ClusterReader>(reader: Arc<R>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query::<R>).post(query::<R>))
        .route(
            "/api/v1/query_range",
            get(query_range::<R>).post(query_range::<R>),
        )
        .route("/api/v1/series", get(series::<R>).post(series::<R>))
        .route("/api/v1/labels", get(labels::<R>).post(labels::<R>))
        .route(
            "/api/v1/label/{name}/values",
            get(label_values::<R>).post(label_values::<R>),
        )
        .route("/api/v1/status/buildinfo", get(buildinfo))
        // Grafana asks for these; sqd keeps neither metadata nor exemplars.
        .route("/api/v1/metadata", get(|| async { reply(Ok(empty("{}"))) }))
        .route(
            "/api/v1/query_exemplars",
            get(|| async { reply(Ok(empty("[]"))) }).post(|| async { reply(Ok(empty("[]"))) }),
        )
        .fallback(|req: Request| async move { reply(Err(ApiError::not_found(req.uri().path()))) })
        .with_state(Arc::new(Api {
            reader,
            turns: Semaphore::new(MAX_CONCURRENT_READS),
        }))
}

fn empty(data: &str) -> Reply {
    Reply {
        data: data.to_owned(),
        warnings: Vec::new(),
    }
}

fn json(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn reply(result: Result<Reply, ApiError>) -> Response {
    match result {
        Ok(r) => json(200, render::success(&r.data, &r.warnings)),
        Err(e) => json(e.status, render::error(&e, &[])),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The URL query and, for a form POST, the body's parameters.
async fn read_params(req: Request) -> Result<Params, ApiError> {
    let (parts, body) = req.into_parts();
    let form = if is_form(&parts.headers) {
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| {
                ApiError::bad_data(format!(
                    "cannot read the form body (at most {MAX_BODY_BYTES} bytes): {e}"
                ))
            })?;
        Some(bytes)
    } else {
        drop::<Body>(body);
        None
    };
    Ok(Params::decode(parts.uri.query(), form.as_deref()))
}

async fn query<R: ClusterReader>(State(api): State<Arc<Api<R>>>, req: Request) -> Response {
    let answer = async {
        let params = read_params(req).await?;
        let req = InstantRequest::parse(&params, crate::clock::unix_ms())?;
        let _turn = api.turn().await?;
        exec::instant(api.reader.as_ref(), &req).await
    };
    reply(answer.await)
}

async fn query_range<R: ClusterReader>(State(api): State<Arc<Api<R>>>, req: Request) -> Response {
    let answer = async {
        let params = read_params(req).await?;
        let req = RangeRequest::parse(&params)?;
        let _turn = api.turn().await?;
        exec::range(api.reader.as_ref(), &req).await
    };
    reply(answer.await)
}

async fn series<R: ClusterReader>(State(api): State<Arc<Api<R>>>, req: Request) -> Response {
    let answer = async {
        let params = read_params(req).await?;
        let req = SeriesRequest::parse(&params, true)?;
        let _turn = api.turn().await?;
        exec::series(api.reader.as_ref(), &req).await
    };
    reply(answer.await)
}

async fn labels<R: ClusterReader>(State(api): State<Arc<Api<R>>>, req: Request) -> Response {
    let answer = async {
        let params = read_params(req).await?;
        let req = SeriesRequest::parse(&params, false)?;
        let _turn = api.turn().await?;
        exec::labels(api.reader.as_ref(), &req).await
    };
    reply(answer.await)
}

async fn label_values<R: ClusterReader>(
    State(api): State<Arc<Api<R>>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let answer = async {
        params::check_label_name(&name)?;
        let params = read_params(req).await?;
        let req = SeriesRequest::parse(&params, false)?;
        let _turn = api.turn().await?;
        exec::label_values(api.reader.as_ref(), &name, &req).await
    };
    reply(answer.await)
}

/// Grafana probes this to learn the flavour and version of the data source. sqd implements the
/// query semantics of Prometheus 3 (left-open windows), so it says 3.0.0 and names itself in
/// the build metadata.
async fn buildinfo() -> Response {
    let data = serde_json::json!({
        "version": format!("3.0.0+sqd.{}", crate::version::VERSION),
        "revision": "",
        "branch": "",
        "buildUser": "sqd",
        "buildDate": "",
        "goVersion": "",
    });
    reply(Ok(empty(&data.to_string())))
}

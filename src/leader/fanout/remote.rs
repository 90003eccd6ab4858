//! A worker's shard over gRPC (`ShardService`): the request goes out when the opening future
//! is polled; the response stream is the shard's chunks, and dropping it resets the HTTP/2
//! stream, which ends the worker's read.

use std::time::Duration;

use futures_util::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::{Chunks, Opening, Shard};
use crate::codec::MAX_MESSAGE_BYTES;
use crate::proto::{self, shard_service_client::ShardServiceClient};
use crate::services::shard_wire::{
    key_from_proto, partials_from_proto, rollup_row_from_proto, selector_to_proto,
};
use crate::stats::query::{Range, Selector, SeriesPartials, Span};
use crate::stats::tsdb::SeriesKey;
use crate::store::rollup::Row;

/// How long connecting to one worker may take; the query's deadline bounds it anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel to a worker's shard, connected on first use (and again after it broke); over
/// TLS when the leader runs mTLS (`tls`).
pub(super) fn channel(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("its address {addr:?} is not HOST:PORT: {e}"))?;
    let endpoint = match tls {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS towards {addr}: {e}"))?,
        None => endpoint,
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

pub(crate) struct RemoteShard {
    id: String,
    client: ShardServiceClient<InterceptedService<Channel, crate::security::Bearer>>,
}

impl RemoteShard {
    pub(crate) fn new(id: String, channel: Channel, bearer: crate::security::Bearer) -> Self {
        let client = ShardServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        RemoteShard { id, client }
    }
}

/// Why a call failed, for the report: the status message and, for transport errors, its
/// cause (connection refused, reset).
fn why(s: &tonic::Status) -> String {
    use std::error::Error;
    let mut msg = format!("{:?}: {}", s.code(), s.message());
    let mut source = s.source();
    while let Some(e) = source {
        msg = format!("{msg}: {e}");
        source = e.source();
    }
    msg
}

fn chunks<M: Send + 'static, T: Send + 'static>(
    stream: tonic::Streaming<M>,
    convert: impl Fn(M) -> Result<T, String> + Send + 'static,
) -> Chunks<T> {
    stream
        .map(move |m| m.map_err(|s| why(&s)).and_then(&convert))
        .boxed()
}

impl Shard for RemoteShard {
    fn id(&self) -> &str {
        &self.id
    }

    fn query(&self, selector: &Selector, range: &Range) -> Opening<Vec<SeriesPartials>> {
        let mut client = self.client.clone();
        let request = proto::ShardQueryRequest {
            selector: Some(selector_to_proto(selector)),
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            step_ms: range.step_ms,
            fields: range.fields.bits(),
        };
        let range = range.clone();
        Box::pin(async move {
            let stream = client.query(request).await.map_err(|s| why(&s))?;
            Ok(chunks(
                stream.into_inner(),
                move |c: proto::ShardQueryChunk| {
                    c.series
                        .into_iter()
                        .map(|s| partials_from_proto(s, &range).map_err(|e| e.to_string()))
                        .collect()
                },
            ))
        })
    }

    fn series(&self, selector: Option<&Selector>, span: Option<Span>) -> Opening<Vec<SeriesKey>> {
        let mut client = self.client.clone();
        let request = proto::ShardSeriesRequest {
            selector: selector.map(selector_to_proto),
            span: span.map(|s| proto::TimeSpan {
                from_ms: s.from_ms,
                to_ms: s.to_ms,
            }),
        };
        Box::pin(async move {
            let stream = client.series(request).await.map_err(|s| why(&s))?;
            Ok(chunks(stream.into_inner(), |c: proto::ShardSeriesChunk| {
                Ok(c.series.into_iter().map(key_from_proto).collect())
            }))
        })
    }

    fn metrics(&self) -> Opening<Vec<String>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let stream = client
                .metrics(proto::ShardMetricsRequest {})
                .await
                .map_err(|s| why(&s))?;
            Ok(chunks(
                stream.into_inner(),
                |c: proto::ShardMetricsChunk| Ok(c.names),
            ))
        })
    }

    fn rollup(&self, collection: u64, ack_through: u64) -> Opening<Vec<Row>> {
        let mut client = self.client.clone();
        let request = proto::ShardRollupRequest {
            collection,
            ack_through,
        };
        Box::pin(async move {
            let stream = client.rollup(request).await.map_err(|s| why(&s))?;
            Ok(chunks(stream.into_inner(), |c: proto::ShardRollupChunk| {
                Ok(c.rows.into_iter().map(rollup_row_from_proto).collect())
            }))
        })
    }
}

/// A worker whose advertised address cannot even be dialled: it fails at once, named.
pub(super) struct Unreachable {
    pub(super) id: String,
    pub(super) why: String,
}

impl Unreachable {
    fn fail<T: Send + 'static>(&self) -> Opening<T> {
        let why = self.why.clone();
        Box::pin(async move { Err(why) })
    }
}

impl Shard for Unreachable {
    fn id(&self) -> &str {
        &self.id
    }
    fn query(&self, _: &Selector, _: &Range) -> Opening<Vec<SeriesPartials>> {
        self.fail()
    }
    fn series(&self, _: Option<&Selector>, _: Option<Span>) -> Opening<Vec<SeriesKey>> {
        self.fail()
    }
    fn metrics(&self) -> Opening<Vec<String>> {
        self.fail()
    }
    fn rollup(&self, _: u64, _: u64) -> Opening<Vec<Row>> {
        self.fail()
    }
}

//! Pure: Prometheus remote-write 1.0 on the wire — the protobuf messages (written with prost's
//! derive, so no `.proto` and no protoc), a shard series turned into a `TimeSeries`
//! (`__name__` first, names made valid, sorted, no empty values, no duplicates), a commit's
//! samples cut into pieces of at most N samples, and pieces joined into one snappy body.

use prost::Message;

use crate::stats::block::Samples;
use crate::stats::tsdb::SeriesKey;

/// `prometheus.WriteRequest` (field 3, metadata, is never sent).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch (the shard's unit too).
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A part of a commit's samples, ready for the queue: a snappy-compressed `WriteRequest`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub snappy: Vec<u8>,
    pub samples: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("a queued remote-write piece is damaged ({0}); it cannot be sent")]
    Snappy(#[from] snap::Error),
}

/// Replaces what Prometheus does not accept in a name by `_` (the shard's parsers already
/// sanitise; this keeps a bad name from failing a whole batch at the receiver).
fn valid_name(name: &str, metric: bool) -> String {
    let ok = |i: usize, c: char| {
        c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (i > 0 && c.is_ascii_digit())
    };
    let out: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| if ok(i, c) { c } else { '_' })
        .collect();
    if out.is_empty() { "_".to_owned() } else { out }
}

/// The labels of a series as remote-write wants them: `__name__` = the metric, every name
/// valid, sorted by name (bytes), no empty value, each name once (the first after sorting the
/// input wins, and `__name__` is always the metric's).
pub(crate) fn labels(key: &SeriesKey) -> Vec<Label> {
    let mut out = vec![Label {
        name: "__name__".to_owned(),
        value: valid_name(&key.metric, true),
    }];
    for (name, value) in &key.labels {
        if value.is_empty() {
            continue;
        }
        let name = valid_name(name, false);
        if out.iter().any(|l| l.name == name) {
            continue;
        }
        out.push(Label {
            name,
            value: value.clone(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Cuts samples of several series into pieces of at most `max_samples` samples each (a long
/// series spans pieces); the series are taken in key order, each series' samples in time order
/// as given.
pub(crate) fn pieces(series: &[(SeriesKey, Samples)], max_samples: usize) -> Vec<Piece> {
    let max = max_samples.max(1);
    let mut out = Vec::new();
    let mut current = WriteRequest::default();
    let mut count = 0usize;
    let mut ordered: Vec<&(SeriesKey, Samples)> = series.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, samples) in ordered {
        let names = labels(key);
        let mut at = 0;
        while at < samples.len() {
            let take = (max - count).min(samples.len() - at);
            let part = (at..at + take).map(|i| Sample {
                value: samples.vals[i],
                timestamp: samples.ts[i],
            });
            current.timeseries.push(TimeSeries {
                labels: names.clone(),
                samples: part.collect(),
            });
            at += take;
            count += take;
            if count == max {
                out.push(seal(&current, count));
                current.timeseries.clear();
                count = 0;
            }
        }
    }
    if count > 0 {
        out.push(seal(&current, count));
    }
    out
}

fn seal(req: &WriteRequest, samples: usize) -> Piece {
    Piece {
        snappy: compress(&req.encode_to_vec()),
        samples: samples as u64,
    }
}

fn compress(raw: &[u8]) -> Vec<u8> {
    // Compressing into a fresh buffer only fails for inputs over ~4 GiB; pieces are far below.
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .unwrap_or_default()
}

/// One request body out of queued pieces. Repeated protobuf fields concatenate, so the
/// decompressed pieces laid end to end are one `WriteRequest` with all their series.
pub(crate) fn join(pieces: &[Vec<u8>]) -> Result<Vec<u8>, WireError> {
    // Decompressed even when one piece goes as it is: a damaged piece is refused here, where
    // the log can say so, not by the receiver.
    let mut raw = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for p in pieces {
        raw.extend_from_slice(&decoder.decompress_vec(p)?);
    }
    match pieces {
        [one] => Ok(one.clone()),
        _ => Ok(compress(&raw)),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

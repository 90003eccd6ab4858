//! Stats inside the files as data: each worker's time-series shard and the pure pieces of a
//! query — label matchers and step buckets ([`query`]), mergeable per-bucket aggregates
//! ([`partial`], M2), sample blocks and their compression ([`block`]), and the shard's tables in
//! the store's SQLite catalog ([`tsdb`]).

pub mod block;
pub mod partial;
pub mod query;
pub mod tsdb;

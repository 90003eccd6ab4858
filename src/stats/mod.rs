//! Stats inside the files as data: parsers of the four formats ([`parse`]), label matchers and
//! step buckets ([`query`]), mergeable per-bucket aggregates ([`partial`], M2), sample blocks
//! and their compression ([`block`]), and each worker's time-series shard in its store's SQLite
//! catalog ([`tsdb`]); the PromQL subset planned over mergeable partials ([`promql`]).
//! The contract of a read across every shard is [`cluster`].

pub mod block;
pub mod cluster;
pub mod parse;
pub mod partial;
pub mod promql;
pub mod query;
pub mod render;
pub mod tsdb;

//! sqd moves stats files from producing hosts into a store through a pool of workers that a
//! leader keeps assigned while machines come and go.
//!
//! Crate map:
//! - [`proto`]: generated gRPC types and services (`proto/sqd/v1`).
//! - [`version`]: the version handshake rule.
//! - [`config`]: TOML config files and flags for every mode, validated with all errors at once.
//! - [`leader`]: registry, scheduler and durable state (pure cores + the leader runtime).
//! - [`services`]: thin tonic adapters for the node sessions and the admin API.
//! - [`node`]: the node side of a leader session, shared by workers and agents.
//! - [`worker`]: assignment set, self-fencing lease, and the seam where pull loops run.
//! - [`agent`]: the optional client agent on a producing host.
//! - [`files`]: the file model worker and agent share: entries, candidates, settling, claim layout.
//! - [`clock`]: wall-clock milliseconds shared by the catalog, the audit log and sqdctl.
//! - [`cli`]: the `sqd` command line (flags of every mode).
//! - [`ctl`]: the `sqdctl` commands and their output.
//! - [`daemon`]: pid/lock files, signals, logging setup shared by the daemons.
//! - [`metrics`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoint.
//! - [`store`]: the `Sink` trait and the embedded store (files + SQLite catalog).
//! - [`transport`]: SSH/SFTP to producing hosts and batch mode's protocol.
//! - [`stats`]: the stats inside the files: parsers, the time-series shard, queries, PromQL.
//! - [`hostmetrics`]: CPU/RAM/disk of every node: sampling, the leader's emitters and history.
//! - [`alerts`]: alert rules, the alert state machine and notifications (pure).
//! - `remote_write`: ships the shard's new samples to a Prometheus remote-write receiver.
//! - [`spec`]: a client's settings and name rules.
//! - [`text`]: long values cut and causes named once in user-facing messages.

pub mod agent;
pub mod alerts;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod discovery;
pub mod failpoint;
pub(crate) mod files;
pub mod hostmetrics;
pub mod leader;
pub(crate) mod log_gate;
pub mod metrics;
pub mod node;
pub mod proto;
pub(crate) mod remote_write;
pub mod security;
pub mod services;
pub mod spec;
pub mod stats;
pub mod store;
pub mod text;
pub mod transport;
pub mod version;
pub mod worker;

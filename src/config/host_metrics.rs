//! The host-metrics keys every mode shares (`metrics_interval_ms`, `host_name`) and the
//! leader's own (`host_metrics_keep`, `forget_emitter_after`).

use clap::Args;

use super::{Loader, Slot, merge, merge_int, rules};

/// Default `metrics_interval_ms`.
const DEFAULT_INTERVAL_MS: i128 = 10_000;
const INTERVAL_MS: (i128, i128) = (0, 86_400_000);
const KEEP: (i128, i128) = (1, 10_000);
const HOST_NAME_MAX: usize = 253;

pub(super) const NODE_KEYS: &[&str] = &["metrics_interval_ms", "host_name"];
pub(super) const LEADER_KEYS: &[&str] = &[
    "metrics_interval_ms",
    "host_name",
    "host_metrics_keep",
    "forget_emitter_after",
];

/// Host-metrics flags of every mode; `Some` overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct HostMetricsFlags {
    /// How often this node samples its host's CPU %, RAM and disk used for the leader, in ms;
    /// 0 turns it off; never more often than the heartbeat (default 10000).
    #[arg(long, value_name = "MS")]
    pub metrics_interval_ms: Option<u64>,
    /// The name this node's host values are listed under in `sqdctl emitters` (default: this
    /// machine's hostname; nodes sharing a name share one emitter).
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
}

/// The leader's flags for what it keeps of its emitters.
#[derive(Debug, Clone, Default, Args)]
pub struct EmitterFlags {
    /// Values kept in memory per emitter and metric for `sqdctl emitter` (default 10).
    #[arg(long, value_name = "N")]
    pub host_metrics_keep: Option<u64>,
    /// How long an emitter that stopped reporting stays listed, e.g. 30m, 1h, 1d (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub forget_emitter_after: Option<String>,
}

/// Host sampling of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMetricsConfig {
    /// Key `metrics_interval_ms`, default 10000; 0 = off.
    pub interval_ms: u64,
    /// Key `host_name`, default the hostname; 1-253 characters of `[A-Za-z0-9_.-]`.
    pub host: String,
}

impl HostMetricsConfig {
    /// The node's sampler settings, its disk value taken where `disk` is.
    pub fn sampler(
        &self,
        disk: &std::path::Path,
        store_free: bool,
    ) -> crate::hostmetrics::SamplerConfig {
        crate::hostmetrics::SamplerConfig {
            host: self.host.clone(),
            interval: std::time::Duration::from_millis(self.interval_ms),
            disk: disk.to_owned(),
            store_free,
        }
    }
}

/// What the leader keeps of its emitters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmitterConfig {
    /// Key `host_metrics_keep`, default 10.
    pub keep: usize,
    /// Key `forget_emitter_after`, default `1h`, in ms.
    pub forget_after_ms: i64,
}

pub(super) struct HostSlots {
    interval: Slot<i128>,
    host: Slot<String>,
}

pub(super) struct EmitterSlots {
    keep: Slot<i128>,
    forget: Slot<String>,
}

impl Loader {
    pub(super) fn host_metrics_keys(&mut self) -> HostSlots {
        HostSlots {
            interval: self.integer("metrics_interval_ms"),
            host: self.string("host_name"),
        }
    }

    pub(super) fn emitter_keys(&mut self) -> EmitterSlots {
        EmitterSlots {
            keep: self.integer("host_metrics_keep"),
            forget: self.string("forget_emitter_after"),
        }
    }

    pub(super) fn host_metrics(
        &mut self,
        file: HostSlots,
        flags: &HostMetricsFlags,
    ) -> Option<HostMetricsConfig> {
        let interval = merge_int(flags.metrics_interval_ms, file.interval);
        let interval = self.ranged::<u64>(
            "metrics_interval_ms",
            interval,
            DEFAULT_INTERVAL_MS,
            INTERVAL_MS,
        );
        let host = merge(flags.host_name.clone(), file.host)
            .or_default(crate::hostmetrics::default_host_name());
        let host = self.check("host_name", host, |v| rules::name(v, HOST_NAME_MAX));
        Some(HostMetricsConfig {
            interval_ms: interval?.value,
            host: host?.value,
        })
    }

    pub(super) fn emitters(
        &mut self,
        file: EmitterSlots,
        flags: &EmitterFlags,
    ) -> Option<EmitterConfig> {
        let keep = merge_int(flags.host_metrics_keep, file.keep);
        let keep = self.ranged::<usize>("host_metrics_keep", keep, 10, KEEP);
        let forget = merge(flags.forget_emitter_after.clone(), file.forget).or_default("1h".into());
        let forget =
            self.check(
                "forget_emitter_after",
                forget,
                |v| match crate::alerts::duration::parse_ms(&v) {
                    Some(ms) if ms > 0 => Ok(ms),
                    _ => {
                        Err(format!("{v:?} is not a duration; write it like 30m, 1h or 1d").into())
                    }
                },
            );
        Some(EmitterConfig {
            keep: keep?.value,
            forget_after_ms: forget?.value,
        })
    }
}

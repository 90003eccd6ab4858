//! Host metrics of every node (CPU %, RAM and disk used, load): sampled on each node, sent on
//! its leader session, and kept by the leader (last values per emitter, history in its own
//! time-series shard, gauges on `/metrics`).
//!
//! [`procfs`] and [`emitters`] are pure; [`sampler`] reads `/proc` and `statvfs`; [`history`]
//! is the leader's shard; [`hub`] is what the leader's session tasks and sqdctl talk to.

pub(crate) mod emitters;
pub mod history;
pub(crate) mod hub;
pub(crate) mod procfs;
pub(crate) mod sampler;

pub(crate) use hub::Hub;
pub(crate) use sampler::{Sampler, SamplerConfig};

/// Who sent a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Role {
    Leader,
    Worker,
    Agent,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Worker => "worker",
            Role::Agent => "agent",
        }
    }
}

/// The metrics kept in every emitter's ring buffers (and shown by `sqdctl emitter`; its JSON
/// keys are `cpu_percent`, `ram_mb`, `disk_mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Metric {
    Cpu = 0,
    Ram = 1,
    Disk = 2,
}

impl Metric {
    pub(crate) const ALL: [Metric; 3] = [Metric::Cpu, Metric::Ram, Metric::Disk];

    /// The name of its series in the leader's shard and of its gauge on `/metrics`.
    pub(crate) fn series(self) -> &'static str {
        match self {
            Metric::Cpu => CPU_SERIES,
            Metric::Ram => RAM_SERIES,
            Metric::Disk => DISK_SERIES,
        }
    }
}

pub(crate) const CPU_SERIES: &str = "sqd_host_cpu_percent";
pub(crate) const RAM_SERIES: &str = "sqd_host_ram_mb";
pub(crate) const DISK_SERIES: &str = "sqd_host_disk_mb";
pub(crate) const LOAD_SERIES: &str = "sqd_host_load1";
pub(crate) const STORE_FREE_SERIES: &str = "sqd_host_store_free_mb";

/// One sample of a host.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct HostValues {
    /// Busy share of all CPUs since the previous sample, 0..=100.
    pub(crate) cpu_percent: f64,
    /// `MemTotal − MemAvailable`, MiB.
    pub(crate) ram_mb: f64,
    /// Used MiB of the filesystem holding the node's store, state or watched directory.
    pub(crate) disk_mb: f64,
    pub(crate) load1: Option<f64>,
    /// Workers: free MiB where the store is.
    pub(crate) store_free_mb: Option<f64>,
}

impl HostValues {
    pub(crate) fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Cpu => self.cpu_percent,
            Metric::Ram => self.ram_mb,
            Metric::Disk => self.disk_mb,
        }
    }

    /// Every value as (series name, value), the optional ones when present.
    pub(crate) fn series(&self) -> impl Iterator<Item = (&'static str, f64)> {
        let all = [
            (CPU_SERIES, Some(self.cpu_percent)),
            (RAM_SERIES, Some(self.ram_mb)),
            (DISK_SERIES, Some(self.disk_mb)),
            (LOAD_SERIES, self.load1),
            (STORE_FREE_SERIES, self.store_free_mb),
        ];
        all.into_iter()
            .filter_map(|(name, v)| v.filter(|v| v.is_finite()).map(|v| (name, v)))
    }

    /// From the wire; `None` when a value is not a finite number (a peer's bug).
    pub(crate) fn from_proto(s: &crate::proto::HostSample) -> Option<HostValues> {
        let finite = |v: f64| v.is_finite().then_some(v);
        Some(HostValues {
            cpu_percent: finite(s.cpu_percent)?.clamp(0.0, 100.0),
            ram_mb: finite(s.ram_mb)?,
            disk_mb: finite(s.disk_mb)?,
            load1: s.load1.and_then(finite),
            store_free_mb: s.store_free_mb.and_then(finite),
        })
    }

    pub(crate) fn to_proto(self, host: &str) -> crate::proto::HostSample {
        crate::proto::HostSample {
            host: host.to_owned(),
            cpu_percent: self.cpu_percent,
            ram_mb: self.ram_mb,
            disk_mb: self.disk_mb,
            load1: self.load1,
            store_free_mb: self.store_free_mb,
        }
    }
}

/// This machine's host name (`--host-name` overrides it), or `localhost` when it has none.
pub(crate) fn default_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

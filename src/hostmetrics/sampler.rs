//! The node's sampler: reads `/proc/stat`, `/proc/meminfo`, `/proc/loadavg` and `statvfs` of
//! one directory, and hands out a sample once per interval. The first one comes after one
//! interval, because CPU % needs two readings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::debug;

use super::HostValues;
use super::procfs::{self, CpuTimes};

/// What a node samples and how often (from its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerConfig {
    /// The emitter's name: `--host-name`, default this machine's hostname.
    pub host: String,
    /// `metrics_interval_ms`; zero turns sampling off.
    pub interval: Duration,
    /// Its disk value is the used space of the filesystem holding this directory.
    pub disk: PathBuf,
    /// Workers also report the free space there (their store's).
    pub store_free: bool,
}

/// A running sampler: the previous CPU reading and when the next sample is due.
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    prev: Option<CpuTimes>,
    due: Instant,
}

impl Sampler {
    /// `None` when sampling is off. Takes the first CPU reading now.
    pub fn start(cfg: SamplerConfig, now: Instant) -> Option<Sampler> {
        if cfg.interval.is_zero() {
            return None;
        }
        Some(Sampler {
            due: now + cfg.interval,
            prev: read_cpu(),
            cfg,
        })
    }

    pub fn host(&self) -> &str {
        &self.cfg.host
    }

    /// A sample when one is due at `now`; `floor` (the heartbeat) bounds how often.
    pub fn poll(&mut self, now: Instant, floor: Duration) -> Option<HostValues> {
        if now < self.due {
            return None;
        }
        self.due = next_due(self.due, now, self.cfg.interval, floor);
        let cpu = read_cpu();
        let percent = match (self.prev, cpu) {
            (Some(before), Some(now)) => procfs::cpu_percent(before, now),
            _ => None,
        };
        // Counters that went backwards start over from this reading.
        self.prev = cpu;
        let Some(cpu_percent) = percent else {
            debug!("no CPU % this time (first reading, or counters went backwards)");
            return None;
        };
        let ram_mb = read("/proc/meminfo")
            .as_deref()
            .and_then(procfs::ram_used_mb)?;
        let (disk_mb, free_mb) = disk(&self.cfg.disk)?;
        Some(HostValues {
            cpu_percent,
            ram_mb,
            disk_mb,
            load1: read("/proc/loadavg").as_deref().and_then(procfs::load1),
            store_free_mb: self.cfg.store_free.then_some(free_mb),
        })
    }
}

/// When the sample after one due at `due` and taken at `now` is due. Due times follow the
/// interval rather than the heartbeat that carried the last sample (heartbeats round each one
/// up), unless this node fell a whole interval behind; never sooner than `floor` from now.
fn next_due(due: Instant, now: Instant, interval: Duration, floor: Duration) -> Instant {
    let next = due + interval;
    let next = if next <= now { now + interval } else { next };
    next.max(now + floor)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .inspect_err(|e| debug!(path, error = %e, "cannot read host values"))
        .ok()
}

fn read_cpu() -> Option<CpuTimes> {
    read("/proc/stat").as_deref().and_then(CpuTimes::parse)
}

/// Used and available MiB of the filesystem holding `dir`.
fn disk(dir: &Path) -> Option<(f64, f64)> {
    let s = nix::sys::statvfs::statvfs(dir)
        .inspect_err(|e| debug!(dir = %dir.display(), error = %e, "statvfs failed"))
        .ok()?;
    #[allow(clippy::useless_conversion)] // the counts' widths differ between targets
    Some(procfs::disk_mb(
        u64::from(s.fragment_size()),
        u64::from(s.blocks()),
        u64::from(s.blocks_free()),
        u64::from(s.blocks_available()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_interval_not_the_heartbeat_that_carried_them() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Interval 500, heartbeats every 200: taken at 600 for 500, next due at 1000.
        assert_eq!(
            next_due(t0 + ms(500), t0 + ms(600), ms(500), ms(200)),
            t0 + ms(1000)
        );
        // A whole interval behind (disconnected): start over from now, no burst.
        assert_eq!(
            next_due(t0 + ms(500), t0 + ms(5000), ms(500), ms(200)),
            t0 + ms(5500)
        );
        // Never more often than the heartbeat.
        assert_eq!(next_due(t0, t0 + ms(10), ms(100), ms(1000)), t0 + ms(1010));
    }

    #[test]
    fn off_at_zero_and_the_first_sample_after_one_interval() {
        let now = Instant::now();
        let cfg = SamplerConfig {
            host: "h".into(),
            interval: Duration::ZERO,
            disk: std::env::temp_dir(),
            store_free: true,
        };
        assert!(Sampler::start(cfg.clone(), now).is_none());
        let cfg = SamplerConfig {
            interval: Duration::from_millis(20),
            ..cfg
        };
        let mut s = Sampler::start(cfg, now).unwrap_or_else(|| panic!("on"));
        assert!(s.poll(now, Duration::ZERO).is_none(), "not due yet");
        std::thread::sleep(Duration::from_millis(60));
        let v = s.poll(Instant::now(), Duration::ZERO);
        if std::path::Path::new("/proc/stat").exists() {
            // CPU ticks may not have moved in 60 ms on an idle machine: then no sample.
            if let Some(v) = v {
                assert!((0.0..=100.0).contains(&v.cpu_percent));
                assert!(v.ram_mb > 0.0 && v.disk_mb > 0.0);
                assert!(v.store_free_mb.is_some());
            }
        }
    }
}

//! Pure parsing of `/proc/stat`, `/proc/meminfo` and `/proc/loadavg` text into host values:
//! CPU % from two readings of the aggregate `cpu` line, RAM used from `MemTotal − MemAvailable`.

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Ticks spent idle or waiting for I/O.
    pub(crate) idle: u64,
    /// All ticks (guest time is already inside user and nice, so it is left out).
    pub(crate) total: u64,
}

impl CpuTimes {
    /// The first line starting with `cpu ` (all CPUs together); `None` when there is none or
    /// it has fewer than the four fields every kernel since 2.4 writes.
    pub(crate) fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .map_while(|f| f.parse().ok())
            .collect();
        if fields.len() < 4 {
            return None;
        }
        // user nice system idle iowait irq softirq steal guest guest_nice
        let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
        let total = fields.iter().take(8).sum();
        Some(CpuTimes { idle, total })
    }
}

/// Busy share of all CPUs between two readings, 0..=100. `None` when no tick passed or a
/// counter went backwards (a CPU was unplugged, taking its ticks out of the sum, or a counter
/// wrapped): the caller starts over from `now`.
pub(crate) fn cpu_percent(before: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(before.total)?;
    let idle = now.idle.checked_sub(before.idle)?;
    if total == 0 || idle > total {
        return None;
    }
    let busy = (total - idle) as f64;
    Some((busy * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// RAM used in MiB: `MemTotal − MemAvailable` (kernels before 3.14 lack `MemAvailable`: then
/// `MemFree + Buffers + Cached` stands in for it). `None` without `MemTotal`.
pub(crate) fn ram_used_mb(meminfo: &str) -> Option<f64> {
    let kb = |name: &str| -> Option<u64> {
        let line = meminfo
            .lines()
            .find(|l| l.split(':').next() == Some(name))?;
        line.split(':')
            .nth(1)?
            .split_ascii_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let total = kb("MemTotal")?;
    let available = kb("MemAvailable").or_else(|| {
        Some(kb("MemFree")? + kb("Buffers").unwrap_or(0) + kb("Cached").unwrap_or(0))
    })?;
    Some(total.saturating_sub(available) as f64 / 1024.0)
}

/// The one-minute load average, the first field of `/proc/loadavg`.
pub(crate) fn load1(loadavg: &str) -> Option<f64> {
    let v: f64 = loadavg.split_ascii_whitespace().next()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// MiB used and free (for unprivileged users) of a filesystem, from statvfs's counts.
pub(crate) fn disk_mb(fragment: u64, blocks: u64, free: u64, avail: u64) -> (f64, f64) {
    let mb = |n: u64| (n as f64) * (fragment as f64) / (1024.0 * 1024.0);
    (mb(blocks.saturating_sub(free)), mb(avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  100 0 50 800 50 0 0 0 0 0\n\
                          cpu0 50 0 25 400 25 0 0 0 0 0\n\
                          cpu1 50 0 25 400 25 0 0 0 0 0\n\
                          intr 12345\nctxt 999\n";
    const STAT_B: &str = "cpu  200 0 50 900 50 0 0 0 0 0\n\
                          cpu0 125 0 50 450 25 0 0 0 0 0\n";

    #[test]
    fn cpu_line_sums_the_first_eight_fields() {
        let t = CpuTimes::parse(STAT_A).unwrap_or_else(|| panic!("no cpu line"));
        assert_eq!(
            t,
            CpuTimes {
                idle: 850,
                total: 1000
            }
        );
        // Old kernels: four fields only.
        let t = CpuTimes::parse("cpu 1 2 3 4\n").unwrap_or_else(|| panic!("4 fields"));
        assert_eq!(t, CpuTimes { idle: 4, total: 10 });
        // Guest time is inside user already: not counted twice.
        let t = CpuTimes::parse("cpu  10 0 0 10 0 0 0 0 7 7\n").unwrap_or_else(|| panic!());
        assert_eq!(t.total, 20);
    }

    #[test]
    fn a_stat_without_the_aggregate_line_is_not_read() {
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None);
        assert_eq!(CpuTimes::parse(""), None);
    }

    #[test]
    fn percent_is_busy_ticks_over_all_ticks_between_readings() {
        let a = CpuTimes::parse(STAT_A).unwrap_or_else(|| panic!());
        let b = CpuTimes::parse(STAT_B).unwrap_or_else(|| panic!());
        // 200 ticks passed, 100 of them idle.
        assert_eq!(cpu_percent(a, b), Some(50.0));
        assert_eq!(cpu_percent(a, a), None, "no tick passed");
    }

    #[test]
    fn counters_going_backwards_start_over_instead_of_a_wild_value() {
        // A CPU unplugged: its ticks leave the aggregate, total shrinks.
        let before = CpuTimes {
            idle: 900,
            total: 2000,
        };
        let unplugged = CpuTimes {
            idle: 500,
            total: 1200,
        };
        assert_eq!(cpu_percent(before, unplugged), None);
        // Idle alone went back (hot-unplug of an idle CPU while others worked).
        assert_eq!(
            cpu_percent(
                before,
                CpuTimes {
                    idle: 800,
                    total: 2100
                }
            ),
            None
        );
        // A wrapped counter looks the same: no value, then the next pair is good again.
        let wrapped = CpuTimes { idle: 5, total: 10 };
        assert_eq!(cpu_percent(before, wrapped), None);
        assert_eq!(
            cpu_percent(
                wrapped,
                CpuTimes {
                    idle: 10,
                    total: 20
                }
            ),
            Some(50.0)
        );
        // More idle than total ticks cannot be real.
        assert_eq!(
            cpu_percent(
                before,
                CpuTimes {
                    idle: 1000,
                    total: 2050
                }
            ),
            None
        );
    }

    #[test]
    fn ram_used_is_total_minus_available() {
        let meminfo = "MemTotal:        8192000 kB\nMemFree:          100000 kB\n\
                       MemAvailable:    4096000 kB\nBuffers:  1 kB\nCached: 2 kB\n";
        assert_eq!(ram_used_mb(meminfo), Some(4000.0));
        // Before MemAvailable: free + buffers + cached.
        let old = "MemTotal: 2048 kB\nMemFree: 512 kB\nBuffers: 256 kB\nCached: 256 kB\n";
        assert_eq!(ram_used_mb(old), Some(1.0));
        assert_eq!(ram_used_mb("MemFree: 1 kB\n"), None);
        // A prefix of another key is not the key.
        assert_eq!(ram_used_mb("MemTotalX: 5 kB\n"), None);
    }

    #[test]
    fn load_and_disk() {
        assert_eq!(load1("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        assert_eq!(load1("nan 1 1"), None);
        assert_eq!(load1(""), None);
        let (used, avail) = disk_mb(4096, 1024 * 1024, 512 * 1024, 256 * 1024);
        assert_eq!((used, avail), (2048.0, 1024.0));
        assert_eq!(
            disk_mb(4096, 1, 2, 0).0,
            0.0,
            "free above total is not negative"
        );
    }

    proptest::proptest! {
        #[test]
        fn percent_is_always_within_bounds(a in 0u64..1 << 40, b in 0u64..1 << 40,
                                           c in 0u64..1 << 40, d in 0u64..1 << 40) {
            let p = cpu_percent(CpuTimes { idle: a, total: b }, CpuTimes { idle: c, total: d });
            if let Some(p) = p {
                proptest::prop_assert!((0.0..=100.0).contains(&p));
            }
        }
    }
}

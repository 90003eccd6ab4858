//! The leader's aggregator: every sample (from a node's session or the leader's own sampler)
//! goes into the emitters table, the history shard's queue and the `/metrics` gauges. Callers
//! are session tasks; nothing here blocks on I/O.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::emitters::{Emitter, Emitters};
use super::history::{History, Point};
use super::{HostValues, Role};

/// How often silent emitters are looked for while samples arrive.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HostLabel {
    pub(crate) host: String,
    pub(crate) role: String,
}

type FloatGauges = Family<HostLabel, Gauge<f64, AtomicU64>>;

struct Table {
    emitters: Emitters,
    pruned: Instant,
}

pub(crate) struct Hub {
    table: Mutex<Table>,
    forget_after_ms: i64,
    history: Option<History>,
    /// One family per series name, in [`HostValues::series`]'s order.
    gauges: [(&'static str, FloatGauges); 5],
    dropped: Counter,
}

impl Hub {
    /// Keeps `keep` values per emitter and metric, lists silent emitters for
    /// `forget_after_ms`, and appends every sample to `history` when there is one.
    pub(crate) fn new(keep: usize, forget_after_ms: i64, history: Option<History>) -> Hub {
        let family = FloatGauges::default;
        Hub {
            table: Mutex::new(Table {
                emitters: Emitters::new(keep),
                pruned: Instant::now(),
            }),
            forget_after_ms,
            history,
            gauges: [
                (super::CPU_SERIES, family()),
                (super::RAM_SERIES, family()),
                (super::DISK_SERIES, family()),
                (super::LOAD_SERIES, family()),
                (super::STORE_FREE_SERIES, family()),
            ],
            dropped: Counter::default(),
        }
    }

    /// The latest value per emitter as gauges, on the leader's `/metrics`.
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let help = [
            "Busy share of all CPUs of each emitting host, percent (latest sample)",
            "RAM used (MemTotal - MemAvailable) of each emitting host, MiB (latest sample)",
            "Used space of the filesystem holding each node's store, state or watched dir, MiB",
            "One-minute load average of each emitting host",
            "Free space where each worker's store is, MiB",
        ];
        for ((name, family), help) in self.gauges.iter().zip(help) {
            registry.register(*name, help, family.clone());
        }
        registry.register(
            "sqd_leader_host_samples_dropped",
            "Host samples not written to the leader's shard because its writer was behind",
            self.dropped.clone(),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One sample received now.
    pub(crate) fn record(&self, host: &str, role: Role, id: &str, values: HostValues) {
        self.record_at(host, role, id, crate::clock::unix_ms(), values);
    }

    pub(crate) fn record_at(&self, host: &str, role: Role, id: &str, at_ms: i64, v: HostValues) {
        let label = HostLabel {
            host: host.to_owned(),
            role: role.as_str().to_owned(),
        };
        {
            let mut table = self.lock();
            table.emitters.record(host, role, id, at_ms, v);
            if table.pruned.elapsed() >= PRUNE_EVERY {
                self.prune(&mut table, at_ms);
            }
        }
        let values: Vec<_> = v.series().collect();
        for (name, family) in &self.gauges {
            match values.iter().find(|(n, _)| n == name) {
                Some(&(_, value)) => {
                    family.get_or_create(&label).set(value);
                }
                None => {
                    family.remove(&label);
                }
            }
        }
        let point = Point {
            host: host.to_owned(),
            role,
            at_ms,
            values: v,
        };
        if let Some(history) = &self.history
            && !history.append(point)
        {
            self.dropped.inc();
        }
    }

    fn prune(&self, table: &mut Table, now_ms: i64) {
        table.pruned = Instant::now();
        for host in table.emitters.forget(now_ms, self.forget_after_ms) {
            for (_, family) in &self.gauges {
                for role in [Role::Leader, Role::Worker, Role::Agent] {
                    family.remove(&HostLabel {
                        host: host.clone(),
                        role: role.as_str().to_owned(),
                    });
                }
            }
        }
    }

    /// Every emitter still remembered, sorted by host.
    pub(crate) fn list(&self) -> Vec<Emitter> {
        let mut table = self.lock();
        self.prune(&mut table, crate::clock::unix_ms());
        table.emitters.list().cloned().collect()
    }

    pub(crate) fn get(&self, host: &str) -> Option<Emitter> {
        let mut table = self.lock();
        self.prune(&mut table, crate::clock::unix_ms());
        table.emitters.get(host).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(hub: &Hub) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        hub.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .unwrap_or_else(|e| panic!("{e}"));
        text
    }

    #[test]
    fn the_latest_value_per_emitter_is_a_gauge_until_the_emitter_is_forgotten() {
        let hub = Hub::new(10, 60_000, None);
        let v = |cpu| HostValues {
            cpu_percent: cpu,
            ram_mb: 512.0,
            disk_mb: 9.0,
            load1: None,
            store_free_mb: Some(100.0),
        };
        let now = crate::clock::unix_ms();
        hub.record_at("w1", Role::Worker, "w1", now - 1_000, v(10.0));
        hub.record_at("w1", Role::Worker, "w1", now, v(20.0));
        hub.record_at(
            "a1",
            Role::Agent,
            "a1",
            now,
            HostValues {
                store_free_mb: None,
                ..v(5.0)
            },
        );
        let text = exported(&hub);
        assert!(
            text.contains(r#"sqd_host_cpu_percent{host="w1",role="worker"} 20.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sqd_host_ram_mb{host="a1",role="agent"} 512.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sqd_host_store_free_mb{host="w1",role="worker"} 100.0"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"sqd_host_store_free_mb{host="a1""#),
            "{text}"
        );
        assert!(
            !text.contains("sqd_host_load1{"),
            "no load reported: {text}"
        );
        assert_eq!(
            hub.get("w1")
                .map(|e| e.ring(super::super::Metric::Cpu).values().count()),
            Some(2)
        );
        // Both silent for longer than forget_after: gone from the list and from /metrics.
        let mut table = hub.lock();
        hub.prune(&mut table, now + 60_001);
        drop(table);
        assert!(hub.lock().emitters.list().next().is_none());
        let text = exported(&hub);
        assert!(!text.contains(r#"host="w1""#), "{text}");
    }
}

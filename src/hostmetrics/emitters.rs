//! The leader's memory of its emitters (pure): per emitter the last values of each host
//! metric in a ring buffer (newest last), its role, id and last-seen time, and forgetting
//! emitters that stayed silent too long.

use std::collections::{BTreeMap, VecDeque};

use super::{HostValues, Metric, Role};

/// The last `cap` values, oldest first; pushing onto a full ring drops the oldest.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ring {
    cap: usize,
    values: VecDeque<(i64, f64)>,
}

impl Ring {
    /// A ring of at least one value.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Ring {
            cap,
            values: VecDeque::with_capacity(cap),
        }
    }

    pub(crate) fn push(&mut self, at_ms: i64, value: f64) {
        if self.values.len() == self.cap {
            self.values.pop_front();
        }
        self.values.push_back((at_ms, value));
    }

    /// Oldest first.
    pub(crate) fn values(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.values.iter().copied()
    }

    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<(i64, f64)> {
        self.values.back().copied()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// One node that reported host values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Emitter {
    pub(crate) host: String,
    pub(crate) role: Role,
    /// Worker id, client name, or `leader`.
    pub(crate) id: String,
    pub(crate) last_seen_ms: i64,
    /// Rings of [`Metric::ALL`], in that order.
    rings: [Ring; 3],
    /// The latest values, including the ones kept only as gauges (load, store free).
    pub(crate) last: HostValues,
}

impl Emitter {
    pub(crate) fn ring(&self, metric: Metric) -> &Ring {
        &self.rings[metric as usize]
    }
}

/// Every emitter by host name. A host is one emitter: nodes that share a host name share it,
/// the latest report naming its role and id (give nodes on one machine their own
/// `--host-name` to see them apart).
#[derive(Debug, Clone)]
pub(crate) struct Emitters {
    keep: usize,
    by_host: BTreeMap<String, Emitter>,
}

impl Emitters {
    /// Keeps the last `keep` values (at least one) per emitter and metric.
    pub(crate) fn new(keep: usize) -> Self {
        Emitters {
            keep: keep.max(1),
            by_host: BTreeMap::new(),
        }
    }

    pub(crate) fn record(&mut self, host: &str, role: Role, id: &str, at_ms: i64, v: HostValues) {
        let keep = self.keep;
        let e = self
            .by_host
            .entry(host.to_owned())
            .or_insert_with(|| Emitter {
                host: host.to_owned(),
                role,
                id: id.to_owned(),
                last_seen_ms: at_ms,
                rings: [Ring::new(keep), Ring::new(keep), Ring::new(keep)],
                last: v,
            });
        e.role = role;
        if e.id != id {
            id.clone_into(&mut e.id);
        }
        e.last_seen_ms = e.last_seen_ms.max(at_ms);
        for metric in Metric::ALL {
            e.rings[metric as usize].push(at_ms, v.get(metric));
        }
        e.last = v;
    }

    /// Drops emitters not seen for `after_ms` (at `now_ms`); answers their host names.
    pub(crate) fn forget(&mut self, now_ms: i64, after_ms: i64) -> Vec<String> {
        let gone: Vec<String> = (self.by_host.values())
            .filter(|e| now_ms.saturating_sub(e.last_seen_ms) > after_ms)
            .map(|e| e.host.clone())
            .collect();
        for host in &gone {
            self.by_host.remove(host);
        }
        gone
    }

    /// Sorted by host name.
    pub(crate) fn list(&self) -> impl Iterator<Item = &Emitter> {
        self.by_host.values()
    }

    pub(crate) fn get(&self, host: &str) -> Option<&Emitter> {
        self.by_host.get(host)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_host.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(cpu: f64) -> HostValues {
        HostValues {
            cpu_percent: cpu,
            ram_mb: cpu * 10.0,
            disk_mb: 7.0,
            load1: Some(0.5),
            store_free_mb: None,
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_values_in_order() {
        let mut r = Ring::new(3);
        assert_eq!(r.last(), None);
        for i in 0..5 {
            r.push(i, i as f64);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.values().collect::<Vec<_>>(),
            [(2, 2.0), (3, 3.0), (4, 4.0)]
        );
        assert_eq!(r.last(), Some((4, 4.0)));
        let mut one = Ring::new(0);
        one.push(1, 1.0);
        one.push(2, 2.0);
        assert_eq!(
            one.values().collect::<Vec<_>>(),
            [(2, 2.0)],
            "a ring holds one at least"
        );
    }

    #[test]
    fn an_emitter_keeps_the_last_n_values_of_each_metric() {
        let mut e = Emitters::new(10);
        for i in 0..25 {
            e.record("w1", Role::Worker, "w1", 1000 + i, values(i as f64));
        }
        let w1 = e.get("w1").unwrap_or_else(|| panic!("w1 listed"));
        for metric in Metric::ALL {
            assert_eq!(w1.ring(metric).len(), 10);
        }
        let cpu: Vec<_> = w1.ring(Metric::Cpu).values().map(|(_, v)| v).collect();
        assert_eq!(cpu, (15..25).map(f64::from).collect::<Vec<_>>());
        assert_eq!(w1.ring(Metric::Ram).last(), Some((1024, 240.0)));
        assert_eq!(w1.last_seen_ms, 1024);
        assert_eq!(w1.last.load1, Some(0.5));
        assert!(e.get("w2").is_none());
    }

    #[test]
    fn emitters_are_sorted_and_the_latest_report_names_role_and_id() {
        let mut e = Emitters::new(2);
        e.record("b", Role::Agent, "client-b", 1, values(1.0));
        e.record("a", Role::Worker, "w-a", 2, values(2.0));
        e.record("b", Role::Worker, "w-b", 3, values(3.0));
        let hosts: Vec<_> = e
            .list()
            .map(|x| (x.host.as_str(), x.role, x.id.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [("a", Role::Worker, "w-a"), ("b", Role::Worker, "w-b")]
        );
        // A late report with an older clock does not move last-seen back.
        e.record("a", Role::Worker, "w-a", 1, values(4.0));
        assert_eq!(e.get("a").map(|x| x.last_seen_ms), Some(2));
    }

    #[test]
    fn silent_emitters_stay_listed_until_forgotten() {
        let mut e = Emitters::new(10);
        e.record("old", Role::Agent, "c", 1_000, values(1.0));
        e.record("new", Role::Worker, "w", 5_000, values(1.0));
        assert!(
            e.forget(4_000, 3_000).is_empty(),
            "exactly at the limit: kept"
        );
        assert_eq!(e.forget(4_001, 3_000), ["old"]);
        assert_eq!(e.len(), 1);
        assert!(e.get("old").is_none());
    }

    proptest::proptest! {
        #[test]
        fn a_ring_holds_the_last_min_n_cap(cap in 1usize..20, n in 0usize..60) {
            let mut r = Ring::new(cap);
            for i in 0..n {
                r.push(i as i64, i as f64);
            }
            let got: Vec<i64> = r.values().map(|(t, _)| t).collect();
            let want: Vec<i64> = (n.saturating_sub(cap)..n).map(|i| i as i64).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}

//! Pure roll-up logic of the leader: the line of one interval from the workers' answers, the
//! per-worker watermark that makes the log exactly-once ([`Ledger`]), and who missed how many
//! collections in a row ([`Missed`]). No I/O; time comes in as arguments.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::rollup::{Counters, Row};

/// One line of `<state-dir>/rollups.jsonl`. Keys are only ever added.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Line {
    /// When the collection started, Unix seconds (ms precision).
    pub ts: f64,
    /// The configured interval, seconds.
    pub interval_s: f64,
    /// The collection's id: strictly greater than every id before it.
    pub collection: u64,
    pub totals: Counters,
    pub clients: BTreeMap<String, Counters>,
    /// Workers asked that did not answer in full before the deadline; their counters stay
    /// with them and come in a later line.
    pub missing_workers: Vec<String>,
    /// Per worker, the collection id through which its counters are in this file (every
    /// worker ever collected, not only this line's): what the next request acknowledges, and
    /// what a restarted leader resumes from.
    pub through: BTreeMap<String, u64>,
}

/// What one collection gathered: who was asked, and the complete answers (a worker whose
/// stream broke or timed out is not among them, whatever it sent before).
#[derive(Debug, Clone, Default)]
pub(crate) struct Gathered {
    pub asked: Vec<String>,
    pub answered: BTreeMap<String, Vec<Row>>,
}

/// What the log holds so far: the last collection id and each worker's watermark. Rebuilt
/// from the last line on start.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Ledger {
    last_collection: u64,
    through: BTreeMap<String, u64>,
}

impl Ledger {
    /// The ledger as the last complete line of the log left it (none: an empty log).
    pub(crate) fn resume(last: Option<&Line>) -> Ledger {
        last.map_or_else(Ledger::default, |l| Ledger {
            last_collection: l.collection,
            through: l.through.clone(),
        })
    }

    /// The next collection's id: the wall clock in ms, or one more than the last id when the
    /// clock is behind it (ids must grow across restarts; a worker files counters under them).
    pub(crate) fn next_collection(&self, now_ms: i64) -> u64 {
        u64::try_from(now_ms)
            .unwrap_or(0)
            .max(self.last_collection.saturating_add(1))
    }

    /// What the next request to `worker` acknowledges: everything of it already in the log.
    pub(crate) fn ack_through(&self, worker: &str) -> u64 {
        self.through.get(worker).copied().unwrap_or(0)
    }

    /// The line of collection `collection`. A row the log already holds (at or below its
    /// worker's watermark: an answer repeated after a crash between line and acknowledgement)
    /// is skipped; each answering worker's watermark moves to this collection.
    pub(crate) fn line(
        &self,
        collection: u64,
        ts_ms: i64,
        interval_ms: u64,
        got: &Gathered,
    ) -> Line {
        let mut clients: BTreeMap<String, Counters> = BTreeMap::new();
        let mut through = self.through.clone();
        for (worker, rows) in &got.answered {
            let already = self.ack_through(worker);
            let mut mark = already.max(collection);
            for row in rows.iter().filter(|r| r.collection > already) {
                clients
                    .entry(row.client.clone())
                    .or_default()
                    .add(&row.counters);
                mark = mark.max(row.collection);
            }
            through.insert(worker.clone(), mark);
        }
        let mut totals = Counters::default();
        clients.values().for_each(|c| totals.add(c));
        let answered: BTreeSet<&String> = got.answered.keys().collect();
        let mut missing: Vec<String> = (got.asked.iter())
            .filter(|w| !answered.contains(w))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        Line {
            ts: ts_ms as f64 / 1000.0,
            interval_s: interval_ms as f64 / 1000.0,
            collection,
            totals,
            clients,
            missing_workers: missing,
            through,
        }
    }

    /// The line is durably in the log: the next requests acknowledge it.
    pub(crate) fn written(&mut self, line: &Line) {
        self.last_collection = self.last_collection.max(line.collection);
        for (w, &id) in &line.through {
            let mark = self.through.entry(w.clone()).or_default();
            *mark = (*mark).max(id);
        }
    }
}

/// Collections in a row each worker did not answer (in memory; a restart starts from zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Missed {
    in_a_row: BTreeMap<String, u32>,
}

impl Missed {
    /// After a collection: answering resets a worker, missing adds one, and a worker no
    /// longer asked (forgotten) is dropped.
    pub(crate) fn update(&mut self, asked: &[String], missing: &[String]) {
        let asked: BTreeSet<&String> = asked.iter().collect();
        self.in_a_row.retain(|w, _| asked.contains(w));
        for w in asked {
            let n = self.in_a_row.entry(w.clone()).or_default();
            *n = if missing.contains(w) {
                n.saturating_add(1)
            } else {
                0
            };
        }
    }

    /// Every worker asked by the last collection with its count (0: answered).
    pub(crate) fn counts(&self) -> &BTreeMap<String, u32> {
        &self.in_a_row
    }
}

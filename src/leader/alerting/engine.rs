//! The one thread that owns the alert [`Evaluator`]: it takes finished rounds (batched, so a
//! burst of rules costs one transaction), evaluates them, stores the rules' states, the id
//! counter, the outbox and the notifications in one transaction, appends the notifications to
//! `alerts.jsonl` (fsync), and only then publishes them to followers and the Alertmanager
//! outbox. A failed store rolls the evaluator back to what is stored, so memory never runs
//! ahead of the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::alerts::alertmanager::Outbox;
use crate::alerts::{Answer, Evaluator, Notification, Rule, RuleSet};

use super::hub::Hub;
use super::journal::Journal;
use super::store::{AlertStore, AlertStoreError, Batch};

/// Most rounds folded into one transaction.
const BATCH: usize = 256;

pub(crate) struct Round {
    /// The rule set generation the round belongs to; rounds of a replaced set are dropped.
    pub(crate) generation: u64,
    pub(crate) rule: Arc<Rule>,
    pub(crate) answer: Answer,
    pub(crate) now_ms: i64,
    pub(crate) done: oneshot::Sender<()>,
}

/// A pending or firing series, or an unknown rule, as `sqdctl alerts` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ActiveAlert {
    pub(crate) rule: String,
    pub(crate) state: &'static str,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: Option<f64>,
    pub(crate) severity: String,
    pub(crate) since_unix_ms: i64,
}

pub(crate) type Rows = Result<Vec<(u64, String)>, AlertStoreError>;

pub(crate) enum Cmd {
    Round(Round),
    /// A new rule set: the state of rules no longer in it is dropped (silently, see
    /// `Evaluator::retain_rules`); answers the names dropped.
    Rules {
        generation: u64,
        rules: RuleSet,
        reply: oneshot::Sender<Vec<String>>,
    },
    Active {
        reply: oneshot::Sender<Vec<ActiveAlert>>,
    },
    /// Logged notifications after an id (`Some`) or the newest (`None`), at most `limit`.
    Log {
        after: Option<u64>,
        limit: usize,
        reply: oneshot::Sender<Rows>,
    },
}

pub(crate) struct Engine {
    evaluator: Evaluator,
    store: AlertStore,
    journal: Journal,
    /// The id of the last line in the journal.
    journaled: u64,
    hub: Hub,
    outbox: Arc<Mutex<Outbox>>,
    generation: u64,
    rules: BTreeMap<String, Arc<Rule>>,
}

impl Engine {
    /// Loads the stored state and completes the journal from the store's log.
    pub(crate) fn open(
        store: AlertStore,
        journal: Journal,
    ) -> Result<(Engine, Hub, Arc<Mutex<Outbox>>), super::AlertingError> {
        let (snapshot, outbox) = store.load()?;
        let last = snapshot.next_id.saturating_sub(1);
        let hub = Hub::new(last);
        let outbox = Arc::new(Mutex::new(outbox));
        let journaled = journal.last_id();
        let mut engine = Engine {
            evaluator: Evaluator::restore(snapshot),
            store,
            journal,
            journaled,
            hub: hub.clone(),
            outbox: outbox.clone(),
            generation: 0,
            rules: BTreeMap::new(),
        };
        engine.complete_journal(last)?;
        Ok((engine, hub, outbox))
    }

    /// Appends to the journal every logged notification after its last line up to `upto`.
    fn complete_journal(&mut self, upto: u64) -> Result<(), super::AlertingError> {
        while self.journaled < upto {
            let rows = self.store.after(self.journaled, 1000)?;
            let Some(&(last, _)) = rows.last() else { break };
            self.journal.append(rows.iter().map(|(_, j)| j.as_str()))?;
            self.journaled = last;
        }
        Ok(())
    }

    /// Serves commands until every sender is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut rounds = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Round(r) => rounds.push(r),
                    other => {
                        // Keep order: the rounds before a command are evaluated first.
                        self.rounds(std::mem::take(&mut rounds));
                        self.command(other);
                    }
                }
                if rounds.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.rounds(rounds);
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Round(r) => self.rounds(vec![r]),
            Cmd::Rules {
                generation,
                rules,
                reply,
            } => {
                let gone = self.evaluator.retain_rules(&rules);
                self.generation = generation;
                self.rules = (rules.rules.into_iter())
                    .map(|r| (r.name.clone(), Arc::new(r)))
                    .collect();
                if !gone.is_empty() {
                    self.save(&[], &gone);
                }
                let _ = reply.send(gone);
            }
            Cmd::Active { reply } => {
                let _ = reply.send(self.active());
            }
            Cmd::Log {
                after,
                limit,
                reply,
            } => {
                let rows = match after {
                    Some(id) => self.store.after(id, limit),
                    None => self.store.newest(limit),
                };
                let _ = reply.send(rows);
            }
        }
    }

    fn rounds(&mut self, rounds: Vec<Round>) {
        if rounds.is_empty() {
            return;
        }
        let mut notes = Vec::new();
        let mut touched = BTreeSet::new();
        let mut done = Vec::with_capacity(rounds.len());
        for r in rounds {
            if r.generation == self.generation {
                notes.extend(self.evaluator.evaluate(&r.rule, &r.answer, r.now_ms));
                touched.insert(r.rule.name.clone());
            }
            done.push(r.done);
        }
        let touched: Vec<String> = touched.into_iter().collect();
        if let Ok(mut o) = self.outbox.lock() {
            notes.iter().for_each(|n| o.observe(n));
        }
        if self.save_notes(&touched, &[], &notes) {
            self.publish(&notes);
        }
        for d in done {
            let _ = d.send(());
        }
    }

    fn save(&mut self, touched: &[String], gone: &[String]) -> bool {
        self.save_notes(touched, gone, &[])
    }

    /// One transaction; on failure the evaluator and outbox go back to the stored state.
    fn save_notes(&mut self, touched: &[String], gone: &[String], notes: &[Notification]) -> bool {
        let rules: Vec<_> = (touched.iter())
            .filter_map(|n| self.evaluator.rule_snapshot(n))
            .collect();
        let outbox = self.outbox.lock().map(|o| o.clone()).unwrap_or_default();
        let batch = Batch {
            rules: &rules,
            gone,
            next_id: self.evaluator.next_id(),
            outbox: &outbox,
            notifications: notes,
        };
        let Err(e) = self.store.save(&batch) else {
            return true;
        };
        error!(error = %e, lost_rounds = touched.len(), "cannot store the alert state; this round is dropped and evaluated again next time");
        match self.store.load() {
            Ok((snapshot, stored)) => {
                self.evaluator = Evaluator::restore(snapshot);
                if let Ok(mut o) = self.outbox.lock() {
                    *o = stored;
                }
            }
            Err(e) => error!(error = %e, "cannot re-read the alert state either"),
        }
        false
    }

    fn publish(&mut self, notes: &[Notification]) {
        let Some(last) = notes.last() else { return };
        let first = notes.first().map_or(last.id, |n| n.id);
        let appended = if self.journaled + 1 == first {
            let lines: Vec<String> = (notes.iter())
                .filter_map(|n| serde_json::to_string(n).ok())
                .collect();
            self.journal
                .append(lines.iter().map(String::as_str))
                .map_err(super::AlertingError::from)
        } else {
            // An earlier append failed: fill the gap from the store's log.
            self.complete_journal(last.id)
        };
        match appended {
            Ok(()) => self.journaled = last.id,
            Err(e) => {
                warn!(error = %e, "cannot append to alerts.jsonl; followers are told anyway (the state db has it), the file is completed at the next append or start")
            }
        }
        self.hub.publish(notes);
    }

    fn active(&self) -> Vec<ActiveAlert> {
        let mut out = Vec::new();
        for (name, rule) in &self.rules {
            if let Some(u) = self.evaluator.unknown(name) {
                out.push(ActiveAlert {
                    rule: name.clone(),
                    state: "unknown",
                    labels: rule.labels.clone(),
                    value: None,
                    severity: rule.severity.clone(),
                    since_unix_ms: u.since_ms,
                });
            }
        }
        for (name, s) in self.evaluator.active() {
            let rule = self.rules.get(&name);
            let mut labels: BTreeMap<String, String> = s.labels.into_iter().collect();
            if let Some(r) = rule {
                labels.extend(r.labels.clone());
            }
            let (state, since) = match s.phase {
                crate::alerts::state::Phase::Pending { since_ms } => ("pending", since_ms),
                crate::alerts::state::Phase::Firing { since_ms, .. } => ("firing", since_ms),
            };
            out.push(ActiveAlert {
                rule: name,
                state,
                labels,
                value: s.value,
                severity: rule.map(|r| r.severity.clone()).unwrap_or_default(),
                since_unix_ms: since,
            });
        }
        out
    }
}

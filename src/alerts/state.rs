//! The alert state machine, per rule and per series of its `by` grouping:
//! inactive → pending (`for`) → firing → resolved, with `keep_firing_for` and a clear threshold
//! against flapping, and a rule-wide `unknown` when the answer is partial (M3: a partial answer
//! neither fires nor resolves anything). Pure: the leader hands in answers and `now`; all state
//! is a serialisable [`Snapshot`] (M5), so a restarted leader resumes timers and ids and does
//! not re-notify.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::stats::query::Labels;

use super::builtin::{self, Facts};
use super::notify::{AlertState, Notification, finite};
use super::rules::{Rule, RuleSet, Source};
use super::template::Context;

/// The input of one round of one rule: the merged answer per series of the rule's grouping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Some shard did not answer (timed out or failed).
    pub partial: bool,
    /// The shards that did not answer, for the `unknown` notification.
    pub missing: Vec<String>,
    /// Series labels (exactly the rule's `by` labels) → the aggregate over the window. A series
    /// without samples in the window is absent.
    pub values: BTreeMap<Labels, f64>,
}

/// Where one series is; a series not in the map is inactive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
pub enum Phase {
    Pending { since_ms: i64 },
    Firing { since_ms: i64, last_true_ms: i64 },
}

/// One non-inactive series, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub labels: Labels,
    pub phase: Phase,
    /// The value at the last complete evaluation (finite or `None`), for listings.
    pub value: Option<f64>,
}

/// A rule that is `unknown` since its first partial round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unknown {
    pub since_ms: i64,
    /// The shards missing at the latest partial round.
    pub missing: Vec<String>,
}

/// The stored state of one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    pub name: String,
    pub last_eval_ms: Option<i64>,
    pub unknown: Option<Unknown>,
    pub series: Vec<SeriesState>,
}

/// Everything the evaluator knows; store it after each round (with the round's notifications,
/// in one transaction) and hand it to [`Evaluator::restore`] after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The id the next notification gets.
    pub next_id: u64,
    pub rules: Vec<RuleSnapshot>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            next_id: 1,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RuleState {
    last_eval_ms: Option<i64>,
    unknown: Option<Unknown>,
    series: BTreeMap<Labels, (Phase, Option<f64>)>,
}

/// Evaluates rules round by round and numbers the notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluator {
    next_id: u64,
    rules: BTreeMap<String, RuleState>,
}

impl Default for Evaluator {
    fn default() -> Self {
        Evaluator::restore(Snapshot::default())
    }
}

fn rule_snapshot(name: &str, st: &RuleState) -> RuleSnapshot {
    RuleSnapshot {
        name: name.to_owned(),
        last_eval_ms: st.last_eval_ms,
        unknown: st.unknown.clone(),
        series: (st.series.iter())
            .map(|(labels, (phase, value))| SeriesState {
                labels: labels.clone(),
                phase: *phase,
                value: *value,
            })
            .collect(),
    }
}

/// What one series does this round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    None,
    To(Phase, AlertState),
    Resolved { since_ms: i64 },
}

/// The transition of one series, as one match over (where it is, what the round says).
/// `value` is `None` when the series is absent from a complete answer: condition false.
fn step(rule: &Rule, phase: Option<Phase>, value: Option<f64>, now_ms: i64) -> Change {
    match phase {
        None if rule.triggers(value) && rule.for_ms == 0 => Change::To(
            Phase::Firing {
                since_ms: now_ms,
                last_true_ms: now_ms,
            },
            AlertState::Firing,
        ),
        None if rule.triggers(value) => {
            Change::To(Phase::Pending { since_ms: now_ms }, AlertState::Pending)
        }
        None => Change::None,
        // Pending needs the trigger condition itself every round (no hysteresis before firing).
        Some(Phase::Pending { since_ms }) if !rule.triggers(value) => Change::Resolved { since_ms },
        Some(Phase::Pending { since_ms }) if now_ms.saturating_sub(since_ms) >= rule.for_ms => {
            Change::To(
                Phase::Firing {
                    since_ms: now_ms,
                    last_true_ms: now_ms,
                },
                AlertState::Firing,
            )
        }
        Some(Phase::Pending { .. }) => Change::None,
        Some(Phase::Firing { since_ms, .. }) if rule.still_holds(value) => Change::To(
            Phase::Firing {
                since_ms,
                last_true_ms: now_ms,
            },
            // Not a state change: the caller only notifies when the state differs.
            AlertState::Firing,
        ),
        Some(Phase::Firing {
            since_ms,
            last_true_ms,
        }) if now_ms.saturating_sub(last_true_ms) >= rule.keep_firing_for_ms => {
            Change::Resolved { since_ms }
        }
        Some(Phase::Firing { .. }) => Change::None,
    }
}

impl Evaluator {
    pub fn new() -> Self {
        Evaluator::default()
    }

    /// Resumes from a stored snapshot: `for` timers continue from their stored start, firing
    /// alerts stay firing without a new notification, ids continue from the stored counter.
    pub fn restore(snapshot: Snapshot) -> Self {
        let rules = snapshot
            .rules
            .into_iter()
            .map(|r| {
                let series = r
                    .series
                    .into_iter()
                    .map(|s| (s.labels, (s.phase, finite(s.value))))
                    .collect();
                let state = RuleState {
                    last_eval_ms: r.last_eval_ms,
                    unknown: r.unknown,
                    series,
                };
                (r.name, state)
            })
            .collect();
        Evaluator {
            next_id: snapshot.next_id.max(1),
            rules,
        }
    }

    /// The whole state, plain data for serde.
    pub fn snapshot(&self) -> Snapshot {
        let rules = (self.rules.iter())
            .map(|(name, st)| rule_snapshot(name, st))
            .collect();
        Snapshot {
            next_id: self.next_id,
            rules,
        }
    }

    /// The stored state of one rule, for stores that write only the rules a round touched
    /// (with [`Evaluator::next_id`]); `None` for a rule never evaluated.
    pub fn rule_snapshot(&self, name: &str) -> Option<RuleSnapshot> {
        self.rules.get(name).map(|st| rule_snapshot(name, st))
    }

    /// The id the next notification will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether `rule` is due at `now_ms` (never evaluated, or `every` has passed since).
    pub fn due(&self, rule: &Rule, now_ms: i64) -> bool {
        self.rules
            .get(&rule.name)
            .and_then(|st| st.last_eval_ms)
            .is_none_or(|last| now_ms.saturating_sub(last) >= rule.every_ms)
    }

    /// Whether `rule` is unknown (its last round was partial), since when and what was missing.
    pub fn unknown(&self, rule: &str) -> Option<&Unknown> {
        self.rules.get(rule).and_then(|st| st.unknown.as_ref())
    }

    /// The pending and firing series of every rule.
    pub fn active(&self) -> Vec<(String, SeriesState)> {
        let mut out = Vec::new();
        for r in self.snapshot().rules {
            out.extend(r.series.into_iter().map(|s| (r.name.clone(), s)));
        }
        out
    }

    /// Drops the state of rules that are no longer configured (after a reload), silently: a
    /// removed rule's alerts are not "resolved" by the data. Returns the names dropped.
    pub fn retain_rules(&mut self, rules: &RuleSet) -> Vec<String> {
        let keep: BTreeSet<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .rules
            .keys()
            .filter(|n| !keep.contains(n.as_str()))
            .cloned()
            .collect();
        for name in &gone {
            self.rules.remove(name);
        }
        gone
    }

    /// Evaluates one round of one rule and returns its notifications, ids assigned in order.
    pub fn evaluate(&mut self, rule: &Rule, answer: &Answer, now_ms: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut st = self.rules.remove(&rule.name).unwrap_or_default();
        st.last_eval_ms = Some(now_ms);
        if answer.partial && !rule.allow_partial {
            // M3: nothing moves; the rule is unknown, said once per unknown stretch.
            let missing = answer.missing.clone();
            if st.unknown.is_none() {
                out.push(self.unknown_notification(rule, &missing, now_ms));
                st.unknown = Some(Unknown {
                    since_ms: now_ms,
                    missing,
                });
            } else if let Some(u) = st.unknown.as_mut() {
                u.missing = missing;
            }
        } else {
            st.unknown = None;
            self.evaluate_series(rule, answer, now_ms, &mut st, &mut out);
        }
        self.rules.insert(rule.name.clone(), st);
        out
    }

    /// Evaluates the built-in `rule` on this round's facts (ignored for query rules: `None`).
    pub fn evaluate_builtin(
        &mut self,
        rule: &Rule,
        facts: &Facts,
        now_ms: i64,
    ) -> Option<Vec<Notification>> {
        let Source::Builtin(which) = rule.source else {
            return None;
        };
        Some(self.evaluate(rule, &builtin::answer(which, facts), now_ms))
    }

    fn evaluate_series(
        &mut self,
        rule: &Rule,
        answer: &Answer,
        now_ms: i64,
        st: &mut RuleState,
        out: &mut Vec<Notification>,
    ) {
        let keys: BTreeSet<Labels> = st
            .series
            .keys()
            .chain(answer.values.keys())
            .cloned()
            .collect();
        for labels in keys {
            let value = answer.values.get(&labels).copied();
            // With allow_partial, a series absent from a partial answer may live on the
            // missing shard: absence then says nothing, so its state stays.
            if value.is_none() && answer.partial {
                continue;
            }
            let current = st.series.get(&labels).map(|(p, _)| *p);
            match step(rule, current, value, now_ms) {
                Change::None => {
                    if let Some(entry) = st.series.get_mut(&labels) {
                        entry.1 = finite(value);
                    }
                }
                Change::To(phase, state) => {
                    let was = current.map(|p| match p {
                        Phase::Pending { .. } => AlertState::Pending,
                        Phase::Firing { .. } => AlertState::Firing,
                    });
                    if was != Some(state) {
                        let since = match phase {
                            Phase::Pending { since_ms } | Phase::Firing { since_ms, .. } => {
                                since_ms
                            }
                        };
                        out.push(self.notification(rule, &labels, state, value, now_ms, since));
                    }
                    st.series.insert(labels, (phase, finite(value)));
                }
                Change::Resolved { since_ms } => {
                    let state = AlertState::Resolved;
                    out.push(self.notification(rule, &labels, state, value, now_ms, since_ms));
                    st.series.remove(&labels);
                }
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn notification(
        &mut self,
        rule: &Rule,
        series: &Labels,
        state: AlertState,
        value: Option<f64>,
        now_ms: i64,
        since_ms: i64,
    ) -> Notification {
        let mut labels: BTreeMap<String, String> = series.iter().cloned().collect();
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let annotation = rule.annotation.render(&Context {
            rule: &rule.name,
            value,
            threshold: rule.threshold,
            labels: &labels,
        });
        Notification {
            id: self.take_id(),
            rule: rule.name.clone(),
            state,
            labels,
            value: finite(value),
            threshold: rule.threshold,
            severity: rule.severity.clone(),
            ts_unix_ms: now_ms,
            since_unix_ms: since_ms,
            annotation,
        }
    }

    fn unknown_notification(
        &mut self,
        rule: &Rule,
        missing: &[String],
        now_ms: i64,
    ) -> Notification {
        let shards = if missing.is_empty() {
            "some shards".to_owned()
        } else {
            format!("shards {}", missing.join(", "))
        };
        Notification {
            id: self.take_id(),
            rule: rule.name.clone(),
            state: AlertState::Unknown,
            labels: rule.labels.clone(),
            value: None,
            threshold: rule.threshold,
            severity: rule.severity.clone(),
            ts_unix_ms: now_ms,
            since_unix_ms: now_ms,
            annotation: format!(
                "{} is unknown: partial answer, {shards} did not answer; alert states kept",
                rule.name
            ),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

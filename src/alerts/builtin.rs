//! Built-in rules about sqd itself, on by default, each turned off by name in the rules file
//! (`[builtin] worker_dead = false`). They are ordinary [`Rule`]s whose values come from the
//! [`Facts`] the leader hands in each round instead of a query, so they go through the same
//! state machine and their notifications look like any other.

use std::collections::BTreeMap;

use crate::stats::query::Labels;

use super::rules::{DEFAULT_EVERY_MS, Op, Rule, Source};
use super::state::Answer;
use super::template::Template;

/// The built-in rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    /// A worker the leader declared dead, for more than 1 min.
    WorkerDead,
    /// A client whose `last_error` is set, for more than 5 min.
    ClientError,
    /// A client whose oldest backlog file is older than 10 min.
    ClientBacklogOld,
    /// A shard that did not answer three roll-ups in a row.
    ShardUnanswered,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::WorkerDead,
        Builtin::ClientError,
        Builtin::ClientBacklogOld,
        Builtin::ShardUnanswered,
    ];

    /// The rule name and the `[builtin]` key.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::WorkerDead => "worker_dead",
            Builtin::ClientError => "client_error",
            Builtin::ClientBacklogOld => "client_backlog_old",
            Builtin::ShardUnanswered => "shard_unanswered",
        }
    }
}

/// What the leader knows about the cluster at one round; pure input, no clocks inside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub workers: Vec<WorkerFact>,
    pub clients: Vec<ClientFact>,
    pub shards: Vec<ShardFact>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerFact {
    pub id: String,
    /// Declared dead by the liveness state machine (C4).
    pub dead: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientFact {
    pub name: String,
    /// The client's `last_error` is set (the text stays in `sqdctl status`).
    pub has_error: bool,
    /// Age of the oldest file waiting in its directory, when the agent or a listing knows it.
    pub oldest_backlog_age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShardFact {
    pub id: String,
    /// Roll-ups in a row this shard did not answer (0 once it answers).
    pub missed_rollups: u32,
}

/// The rule of a built-in. Durations that say "for more than" use `for`, so the timer survives
/// a leader restart through the snapshot; ages and counts are the value, so alerts show them.
pub fn rule(which: Builtin) -> Rule {
    let (by, op, threshold, for_ms, severity, text) = match which {
        Builtin::WorkerDead => (
            "worker",
            Op::Gt,
            0.0,
            60_000,
            "critical",
            "worker {{ $labels.worker }} has been dead for more than 1m",
        ),
        Builtin::ClientError => (
            "client",
            Op::Gt,
            0.0,
            300_000,
            "warning",
            "client {{ $labels.client }} has reported an error for more than 5m",
        ),
        Builtin::ClientBacklogOld => (
            "client",
            Op::Gt,
            600.0,
            0,
            "warning",
            "client {{ $labels.client }}: oldest backlog file is {{ $value }}s old (limit {{ $threshold }}s)",
        ),
        Builtin::ShardUnanswered => (
            "shard",
            Op::Ge,
            3.0,
            0,
            "warning",
            "shard {{ $labels.shard }} missed {{ $value }} roll-ups in a row",
        ),
    };
    // The annotation reads only the series label the facts give (see `answer`).
    debug_assert!(
        Template::parse(text).is_ok_and(|t| t.label_names().all(|l| l == by)),
        "{text}"
    );
    Rule {
        name: which.name().to_owned(),
        source: Source::Builtin(which),
        op,
        threshold,
        clear_threshold: None,
        for_ms,
        keep_firing_for_ms: 0,
        every_ms: DEFAULT_EVERY_MS,
        severity: severity.to_owned(),
        labels: BTreeMap::from([("sqd_builtin".to_owned(), "true".to_owned())]),
        annotation: Template::parse(text).unwrap_or_default(),
        allow_partial: false,
    }
}

/// The round's answer for a built-in: always complete (the leader's own view), one series per
/// entity that meets the condition's measure; entities without a measure are absent, which
/// counts as "condition false".
pub fn answer(which: Builtin, facts: &Facts) -> Answer {
    let one = |key: &str, value: &str| -> Labels { vec![(key.to_owned(), value.to_owned())] };
    let values: BTreeMap<Labels, f64> = match which {
        Builtin::WorkerDead => facts
            .workers
            .iter()
            .filter(|w| w.dead)
            .map(|w| (one("worker", &w.id), 1.0))
            .collect(),
        Builtin::ClientError => facts
            .clients
            .iter()
            .filter(|c| c.has_error)
            .map(|c| (one("client", &c.name), 1.0))
            .collect(),
        Builtin::ClientBacklogOld => facts
            .clients
            .iter()
            .filter_map(|c| {
                let age = c.oldest_backlog_age_ms?;
                Some((one("client", &c.name), (age / 1000) as f64))
            })
            .collect(),
        Builtin::ShardUnanswered => facts
            .shards
            .iter()
            .filter(|s| s.missed_rollups > 0)
            .map(|s| (one("shard", &s.id), f64::from(s.missed_rollups)))
            .collect(),
    };
    Answer {
        partial: false,
        missing: Vec::new(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::notify::AlertState;
    use crate::alerts::state::Evaluator;

    fn facts(dead: bool, backlog_s: Option<i64>, missed: u32) -> Facts {
        Facts {
            workers: vec![WorkerFact {
                id: "w1".to_owned(),
                dead,
            }],
            clients: vec![ClientFact {
                name: "c1".to_owned(),
                has_error: false,
                oldest_backlog_age_ms: backlog_s.map(|s| s * 1000),
            }],
            shards: vec![ShardFact {
                id: "w2".to_owned(),
                missed_rollups: missed,
            }],
        }
    }

    fn states(ns: &[crate::alerts::Notification]) -> Vec<(&str, AlertState)> {
        ns.iter().map(|n| (n.rule.as_str(), n.state)).collect()
    }

    #[test]
    fn builtins_run_through_the_same_state_machine() {
        let rules: Vec<Rule> = Builtin::ALL.into_iter().map(rule).collect();
        let mut ev = Evaluator::new();
        let mut round = |f: &Facts, now: i64| {
            let mut out = Vec::new();
            for r in &rules {
                out.extend(ev.evaluate_builtin(r, f, now).unwrap_or_default());
            }
            out
        };
        let ns = round(&facts(true, Some(700), 2), 0);
        assert_eq!(
            states(&ns),
            [
                ("worker_dead", AlertState::Pending),
                ("client_backlog_old", AlertState::Firing)
            ]
        );
        assert_eq!(
            ns[1].annotation,
            "client c1: oldest backlog file is 700s old (limit 600s)"
        );
        assert_eq!(
            ns[1].labels.get("sqd_builtin").map(String::as_str),
            Some("true")
        );
        let ns = round(&facts(true, Some(30), 3), 60_000);
        assert_eq!(
            states(&ns),
            [
                ("worker_dead", AlertState::Firing),
                ("client_backlog_old", AlertState::Resolved),
                ("shard_unanswered", AlertState::Firing)
            ]
        );
        assert_eq!(ns[0].annotation, "worker w1 has been dead for more than 1m");
        assert_eq!(ns[0].severity, "critical");
        let ns = round(&facts(false, None, 0), 90_000);
        assert_eq!(
            states(&ns),
            [
                ("worker_dead", AlertState::Resolved),
                ("shard_unanswered", AlertState::Resolved)
            ]
        );
    }

    #[test]
    fn a_client_error_fires_after_five_minutes() {
        let r = rule(Builtin::ClientError);
        let mut f = facts(false, None, 0);
        f.clients[0].has_error = true;
        let mut ev = Evaluator::new();
        let mut seen = Vec::new();
        for t in [0, 120_000, 299_999, 300_000] {
            seen.extend(ev.evaluate_builtin(&r, &f, t).unwrap_or_default());
        }
        assert_eq!(
            seen.iter()
                .map(|n| (n.state, n.ts_unix_ms))
                .collect::<Vec<_>>(),
            [(AlertState::Pending, 0), (AlertState::Firing, 300_000)]
        );
    }
}

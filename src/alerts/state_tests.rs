//! Tests of the state machine: `for`, `keep_firing_for`, hysteresis, unknown on partial,
//! restore from a snapshot, and properties over arbitrary (value, partial) sequences.

use proptest::prelude::*;

use super::*;
use crate::alerts::rules::parse;

const BASE: &str = r#"
[[rule]]
name = "r"
metric = "cpu"
agg = "avg"
window = "1m"
by = ["host"]
op = ">"
threshold = 90
severity = "critical"
labels = { team = "web" }
annotation = "{{ $labels.host }} cpu at {{ $value }}"
"#;

fn rule(extra: &str) -> Rule {
    let text = format!("{BASE}{extra}\n[builtin]\nworker_dead = false\n");
    let set = parse("rules.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    set.get("r").cloned().unwrap_or_else(|| panic!("no rule r"))
}

fn host(h: &str) -> Labels {
    vec![("host".to_owned(), h.to_owned())]
}

fn answer(values: &[(&str, f64)]) -> Answer {
    Answer {
        partial: false,
        missing: Vec::new(),
        values: values.iter().map(|(h, v)| (host(h), *v)).collect(),
    }
}

fn partial(values: &[(&str, f64)]) -> Answer {
    Answer {
        partial: true,
        missing: vec!["worker-2".to_owned()],
        ..answer(values)
    }
}

/// (state, since, value) of each notification, for compact assertions.
fn brief(ns: &[Notification]) -> Vec<(AlertState, i64, Option<f64>)> {
    ns.iter()
        .map(|n| (n.state, n.since_unix_ms, n.value))
        .collect()
}

use AlertState::{Firing, Pending, Resolved, Unknown};

#[test]
fn for_holds_an_alert_pending_then_fires_once() {
    let r = rule(r#"for = "1m""#);
    let mut ev = Evaluator::new();
    assert_eq!(
        brief(&ev.evaluate(&r, &answer(&[("a", 95.0)]), 0)),
        [(Pending, 0, Some(95.0))]
    );
    assert!(ev.evaluate(&r, &answer(&[("a", 96.0)]), 30_000).is_empty());
    assert!(ev.evaluate(&r, &answer(&[("a", 96.0)]), 59_999).is_empty());
    assert_eq!(
        brief(&ev.evaluate(&r, &answer(&[("a", 97.0)]), 60_000)),
        [(Firing, 60_000, Some(97.0))]
    );
    assert!(ev.evaluate(&r, &answer(&[("a", 99.0)]), 90_000).is_empty());
    assert_eq!(
        brief(&ev.evaluate(&r, &answer(&[("a", 10.0)]), 120_000)),
        [(Resolved, 60_000, Some(10.0))]
    );
}

#[test]
fn a_pending_alert_that_stops_holding_resolves_without_firing() {
    let r = rule(r#"for = "1m""#);
    let mut ev = Evaluator::new();
    ev.evaluate(&r, &answer(&[("a", 95.0)]), 0);
    assert_eq!(
        brief(&ev.evaluate(&r, &answer(&[("a", 50.0)]), 30_000)),
        [(Resolved, 0, Some(50.0))]
    );
    // A new episode starts its own timer.
    assert_eq!(
        brief(&ev.evaluate(&r, &answer(&[("a", 95.0)]), 60_000)),
        [(Pending, 60_000, Some(95.0))]
    );
    assert!(ev.evaluate(&r, &answer(&[("a", 95.0)]), 90_000).is_empty());
}

#[test]
fn keep_firing_for_damps_flapping() {
    let r = rule(r#"keep_firing_for = "1m""#);
    let mut ev = Evaluator::new();
    let mut all = Vec::new();
    // Oscillates around the threshold every 30 s, then stays low.
    for (i, v) in [95.0, 85.0, 95.0, 85.0, 95.0, 85.0, 85.0, 85.0]
        .iter()
        .enumerate()
    {
        all.extend(ev.evaluate(&r, &answer(&[("a", *v)]), i as i64 * 30_000));
    }
    // The last true round was at 120 s: resolved at the first round 60 s later.
    assert_eq!(
        brief(&all),
        [(Firing, 0, Some(95.0)), (Resolved, 0, Some(85.0))]
    );
    assert_eq!(all[1].ts_unix_ms, 180_000);
}

#[test]
fn clear_threshold_keeps_firing_until_the_value_clears_it() {
    let r = rule("clear_threshold = 80");
    let mut ev = Evaluator::new();
    let mut all = Vec::new();
    for (i, v) in [95.0, 85.0, 91.0, 81.0, 80.0, 85.0].iter().enumerate() {
        all.extend(ev.evaluate(&r, &answer(&[("a", *v)]), i as i64 * 1000));
    }
    // 85 is not above 90 but still above 80: no re-trigger of a new episode at 85 either.
    assert_eq!(
        brief(&all),
        [(Firing, 0, Some(95.0)), (Resolved, 0, Some(80.0))]
    );
}

#[test]
fn a_partial_answer_resolves_nothing_and_says_unknown_once() {
    let r = rule("");
    let mut ev = Evaluator::new();
    ev.evaluate(&r, &answer(&[("a", 95.0), ("b", 95.0)]), 0);
    // Below threshold and one series gone, but partial: nothing moves.
    let ns = ev.evaluate(&r, &partial(&[("a", 10.0)]), 30_000);
    assert_eq!(brief(&ns), [(Unknown, 30_000, None)]);
    assert_eq!(ns[0].labels.get("team").map(String::as_str), Some("web"));
    assert!(
        ns[0].annotation.contains("worker-2"),
        "{}",
        ns[0].annotation
    );
    assert!(
        ev.evaluate(&r, &partial(&[]), 60_000).is_empty(),
        "unknown once, not per round"
    );
    assert_eq!(ev.unknown("r").map(|u| u.since_ms), Some(30_000));
    // Complete again: now both resolve (b by disappearing).
    let ns = ev.evaluate(&r, &answer(&[("a", 10.0)]), 90_000);
    assert_eq!(brief(&ns), [(Resolved, 0, Some(10.0)), (Resolved, 0, None)]);
    assert_eq!(ev.unknown("r"), None);
    // A new partial stretch says unknown again.
    assert_eq!(ev.evaluate(&r, &partial(&[]), 120_000).len(), 1);
}

#[test]
fn a_partial_answer_never_fires_either() {
    let r = rule("");
    let mut ev = Evaluator::new();
    let ns = ev.evaluate(&r, &partial(&[("a", 99.0)]), 0);
    assert_eq!(brief(&ns), [(Unknown, 0, None)]);
    assert!(ev.active().is_empty());
}

#[test]
fn allow_partial_uses_what_answered_and_keeps_what_is_missing() {
    let r = rule("allow_partial = true");
    let mut ev = Evaluator::new();
    ev.evaluate(&r, &answer(&[("a", 95.0), ("b", 95.0)]), 0);
    let ns = ev.evaluate(&r, &partial(&[("a", 10.0), ("c", 99.0)]), 30_000);
    assert_eq!(
        brief(&ns),
        [(Resolved, 0, Some(10.0)), (Firing, 30_000, Some(99.0))]
    );
    let active: Vec<String> = ev
        .active()
        .into_iter()
        .map(|(_, s)| s.labels[0].1.clone())
        .collect();
    assert_eq!(
        active,
        ["b", "c"],
        "b is absent from a partial answer: kept"
    );
}

#[test]
fn notifications_have_the_documented_json_shape() {
    let r = rule("");
    let mut ev = Evaluator::new();
    let ns = ev.evaluate(&r, &answer(&[("a", 95.5)]), 1_700_000_000_000);
    let json = serde_json::to_value(&ns[0]).unwrap_or_default();
    let want = serde_json::json!({
        "id": 1, "rule": "r", "state": "firing", "labels": {"host": "a", "team": "web"},
        "value": 95.5, "threshold": 90.0, "severity": "critical",
        "ts_unix_ms": 1_700_000_000_000_i64, "since_unix_ms": 1_700_000_000_000_i64,
        "annotation": "a cpu at 95.5"
    });
    assert_eq!(json, want);
    // Not-finite values are null, not invalid JSON.
    let ns = ev.evaluate(&r, &answer(&[("a", f64::NAN)]), 1_700_000_001_000);
    assert_eq!(
        serde_json::to_value(&ns[0]).unwrap_or_default()["value"],
        serde_json::Value::Null
    );
}

#[test]
fn restore_resumes_timers_and_does_not_renotify() {
    let r = rule(r#"for = "1m""#);
    let mut ev = Evaluator::new();
    ev.evaluate(&r, &answer(&[("a", 95.0), ("b", 95.0)]), 0);
    ev.evaluate(&r, &answer(&[("a", 95.0), ("b", 95.0)]), 60_000);
    ev.evaluate(
        &r,
        &answer(&[("a", 95.0), ("b", 95.0), ("c", 95.0)]),
        90_000,
    );
    let stored = serde_json::to_string(&ev.snapshot()).unwrap_or_default();
    // kill -9, restart.
    let snap: Snapshot = serde_json::from_str(&stored).unwrap_or_else(|e| panic!("{e}"));
    let mut back = Evaluator::restore(snap);
    assert_eq!(back, ev);
    assert_eq!(back.next_id(), 6);
    // a and b stay firing silently; c's timer runs from 90 s, not from the restart.
    assert!(
        back.evaluate(
            &r,
            &answer(&[("a", 95.0), ("b", 95.0), ("c", 95.0)]),
            120_000
        )
        .is_empty()
    );
    let ns = back.evaluate(&r, &answer(&[("a", 95.0), ("c", 95.0)]), 150_000);
    assert_eq!(
        brief(&ns),
        [(Resolved, 60_000, None), (Firing, 150_000, Some(95.0))]
    );
    assert_eq!(ns.iter().map(|n| n.id).collect::<Vec<_>>(), [6, 7]);
}

#[test]
fn rules_are_due_every_interval_and_across_restarts() {
    let r = rule(r#"every = "1m""#);
    let mut ev = Evaluator::new();
    assert!(ev.due(&r, 0));
    ev.evaluate(&r, &answer(&[]), 0);
    assert!(!ev.due(&r, 59_999));
    let back = Evaluator::restore(ev.snapshot());
    assert!(back.due(&r, 60_000));
}

#[test]
fn removed_rules_are_forgotten() {
    let r = rule("");
    let mut ev = Evaluator::new();
    ev.evaluate(&r, &answer(&[("a", 95.0)]), 0);
    assert_eq!(ev.retain_rules(&RuleSet::default()), ["r"]);
    assert!(ev.active().is_empty());
}

/// One generated round: a value (or absence) per series and whether the answer is partial.
#[derive(Debug, Clone)]
struct Round {
    dt_ms: i64,
    values: [Option<f64>; 2],
    partial: bool,
}

fn round() -> impl Strategy<Value = Round> {
    let value = prop_oneof![
        Just(None),
        Just(Some(70.0)),
        Just(Some(85.0)),
        Just(Some(95.0)),
        Just(Some(f64::NAN)),
    ];
    // Round steps of 15 s often land exactly on the `for` / `keep_firing_for` boundaries.
    let dt = prop_oneof![1i64..40_000, Just(15_000)];
    (dt, [value.clone(), value], proptest::bool::weighted(0.25)).prop_map(
        |(dt_ms, values, partial)| Round {
            dt_ms,
            values,
            partial,
        },
    )
}

fn rule_variant() -> impl Strategy<Value = Rule> {
    let for_ = prop_oneof![Just("0s"), Just("30s"), Just("1m")];
    let kff = prop_oneof![Just("0s"), Just("45s")];
    let clear = prop_oneof![Just(""), Just("clear_threshold = 80")];
    (for_, kff, clear)
        .prop_map(|(f, k, c)| rule(&format!("for = \"{f}\"\nkeep_firing_for = \"{k}\"\n{c}")))
}

/// Runs the rounds from `ev`, starting at round `from`; returns (round index, notification).
fn run(ev: &mut Evaluator, r: &Rule, rounds: &[Round], from: usize) -> Vec<(usize, Notification)> {
    let mut now = 1_000_000;
    let mut out = Vec::new();
    for (i, rd) in rounds.iter().enumerate() {
        now += rd.dt_ms;
        if i < from {
            continue;
        }
        let mut values = BTreeMap::new();
        for (h, v) in ["a", "b"].iter().zip(rd.values) {
            if let Some(v) = v {
                values.insert(host(h), v);
            }
        }
        let a = Answer {
            partial: rd.partial,
            missing: if rd.partial {
                vec!["w2".to_owned()]
            } else {
                Vec::new()
            },
            values,
        };
        out.extend(ev.evaluate(r, &a, now).into_iter().map(|n| (i, n)));
    }
    out
}

proptest! {
    /// Per series, notifications follow (pending? firing? resolved)*: never two firings without
    /// a resolved between, one firing and one resolved per episode; partial rounds move nothing
    /// and say unknown once per stretch; ids count up from 1 without gaps.
    #[test]
    fn notifications_alternate_per_series(r in rule_variant(), rounds in proptest::collection::vec(round(), 1..60)) {
        let out = run(&mut Evaluator::new(), &r, &rounds, 0);
        for (k, (_, n)) in out.iter().enumerate() {
            prop_assert_eq!(n.id, k as u64 + 1);
        }
        let mut phase: BTreeMap<String, AlertState> = BTreeMap::new();
        for (i, n) in &out {
            let partial_round = rounds[*i].partial;
            if n.state == Unknown {
                prop_assert!(partial_round);
                prop_assert!(*i == 0 || !rounds[*i - 1].partial, "unknown once per stretch");
                continue;
            }
            prop_assert!(!partial_round, "{:?} on a partial round", n.state);
            let key = n.labels.get("host").cloned().unwrap_or_default();
            let was = phase.get(&key).copied().unwrap_or(Resolved);
            let ok = matches!((was, n.state), (Resolved, Pending) | (Resolved, Firing) | (Pending, Firing) | (Pending, Resolved) | (Firing, Resolved));
            prop_assert!(ok, "{:?} -> {:?} for {}", was, n.state, key);
            if n.state == Firing {
                prop_assert_eq!(n.value, Some(95.0), "fires only on a value over the threshold");
            }
            phase.insert(key, n.state);
        }
        let stretches = rounds.iter().enumerate().filter(|(i, rd)| rd.partial && (*i == 0 || !rounds[*i - 1].partial)).count();
        prop_assert_eq!(out.iter().filter(|(_, n)| n.state == Unknown).count(), stretches);
    }

    /// A restart at any round (snapshot through JSON, restore, continue) sends exactly what an
    /// uninterrupted evaluator sends from that round on.
    #[test]
    fn restoring_at_any_round_changes_nothing(r in rule_variant(), rounds in proptest::collection::vec(round(), 1..40), cut in 0usize..40) {
        let cut = cut % rounds.len();
        let whole = run(&mut Evaluator::new(), &r, &rounds, 0);
        let mut first = Evaluator::new();
        let before = run(&mut first, &r, &rounds[..cut], 0);
        let stored = serde_json::to_string(&first.snapshot()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let snap: Snapshot = serde_json::from_str(&stored).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut second = Evaluator::restore(snap);
        let after = run(&mut second, &r, &rounds, cut);
        let resumed: Vec<_> = before.into_iter().chain(after).collect();
        prop_assert_eq!(whole, resumed);
    }
}

/// The documented semantics, written as a check of each round's transition of each series
/// (an oracle independent of `step`'s structure).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Idle,
    Pending { since: i64 },
    Firing { last_true: i64 },
}

fn check_transition(r: &Rule, before: Seen, after: Seen, v: Option<f64>, now: i64) -> bool {
    let (trig, holds) = (r.triggers(v), r.still_holds(v));
    match (before, after) {
        (Seen::Idle, Seen::Idle) => !trig,
        (Seen::Idle, Seen::Pending { since }) => trig && r.for_ms > 0 && since == now,
        (Seen::Idle, Seen::Firing { .. }) => trig && r.for_ms == 0,
        (Seen::Pending { since: a }, Seen::Pending { since: b }) => {
            trig && a == b && now - a < r.for_ms
        }
        (Seen::Pending { since }, Seen::Firing { .. }) => trig && now - since >= r.for_ms,
        (Seen::Pending { .. }, Seen::Idle) => !trig,
        (Seen::Firing { last_true }, Seen::Firing { .. }) => {
            holds || now - last_true < r.keep_firing_for_ms
        }
        (Seen::Firing { last_true }, Seen::Idle) => {
            !holds && now - last_true >= r.keep_firing_for_ms
        }
        (Seen::Firing { .. }, Seen::Pending { .. }) => false,
    }
}

proptest! {
    /// Every series moves exactly as documented: pending only while the trigger holds and for
    /// less than `for`, firing once it held for `for`, resolved only when the clear condition
    /// failed for `keep_firing_for`; nothing moves on a partial round.
    #[test]
    fn series_move_as_documented(r in rule_variant(), rounds in proptest::collection::vec(round(), 1..60)) {
        let out = run(&mut Evaluator::new(), &r, &rounds, 0);
        let mut seen = [Seen::Idle; 2];
        let mut now = 1_000_000;
        for (i, rd) in rounds.iter().enumerate() {
            now += rd.dt_ms;
            for (s, h) in ["a", "b"].iter().enumerate() {
                let before = seen[s];
                let mut after = before;
                for (_, n) in out.iter().filter(|(j, n)| *j == i && n.labels.get("host").map(String::as_str) == Some(*h)) {
                    after = match n.state {
                        Pending => Seen::Pending { since: n.since_unix_ms },
                        Firing => Seen::Firing { last_true: now },
                        Resolved | Unknown => Seen::Idle,
                    };
                }
                if rd.partial {
                    prop_assert_eq!(before, after, "moved on a partial round {}", i);
                    continue;
                }
                let v = rd.values[s];
                prop_assert!(check_transition(&r, before, after, v, now), "round {}: {:?} -> {:?} on {:?} at {}", i, before, after, v, now);
                if let (Seen::Firing { .. }, true) = (after, r.still_holds(v)) {
                    after = Seen::Firing { last_true: now };
                }
                seen[s] = after;
            }
        }
    }
}

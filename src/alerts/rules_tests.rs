//! Tests of the rules file: the sample config, defaults, and every kind of error at once.

use super::*;

fn messages(text: &str) -> Vec<String> {
    match parse("rules.toml", text) {
        Ok(set) => panic!("expected errors, got {} rules", set.rules.len()),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn parsed(text: &str) -> RuleSet {
    parse("rules.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_sample_config_loads() {
    let set = parsed(include_str!("../../config/rules.toml"));
    let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cpu-high",
            "disk-free-low",
            "worker_dead",
            "client_error",
            "client_backlog_old",
            "shard_unanswered"
        ]
    );
    let cpu = &set.rules[0];
    assert_eq!(
        (cpu.op, cpu.threshold, cpu.clear_threshold),
        (Op::Gt, 90.0, Some(80.0))
    );
    assert_eq!(
        (cpu.for_ms, cpu.keep_firing_for_ms, cpu.every_ms),
        (120_000, 300_000, 30_000)
    );
    let Source::Query(q) = &cpu.source else {
        panic!("not a query rule")
    };
    assert_eq!(
        (q.selector.metric.as_str(), q.agg, q.window_ms),
        ("cpu_percent", Agg::Avg, 300_000)
    );
    assert_eq!(q.selector.matchers.len(), 2);
    assert_eq!(q.by, ["host"]);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let set = parsed(
        r#"
        [[rule]]
        name = "x"
        metric = "m"
        agg = "last"
        window = "1m"
        op = "<="
        threshold = 1.5
        "#,
    );
    let r = &set.rules[0];
    assert_eq!(
        (r.for_ms, r.keep_firing_for_ms, r.every_ms),
        (0, 0, DEFAULT_EVERY_MS)
    );
    assert_eq!(r.severity, DEFAULT_SEVERITY);
    assert!(!r.allow_partial && r.labels.is_empty() && r.clear_threshold.is_none());
    assert_eq!(
        set.rules.len(),
        1 + Builtin::ALL.len(),
        "built-ins on by default"
    );
}

/// One file with every kind of mistake, each rule broken in its own ways.
const MANY_ERRORS: &str = r#"
        colour = "blue"

        [[rule]]
        name = "ok-rule"
        metric = "m"
        agg = "avg"
        window = "1m"
        op = ">"
        threshold = 1

        [[rule]]
        name = "cpu-high"
        metric = "cpu"
        where = ["host=~(", "nonsense"]
        agg = "mean"
        window = "0s"
        by = ["host", "bad-label"]
        op = "=>"
        threshold = "90"
        for = "5 minutes"
        every = 30
        fro = "1m"
        labels = { severity = "x", team = 1 }
        annotation = "{{ $labels.host }} at {{ $valeu }}"
        allow_partial = "yes"

        [[rule]]
        metric = "m"
        agg = "avg"
        window = "1m"
        op = ">"
        threshold = 5
        clear_threshold = 6

        [[rule]]
        name = "ok-rule"
        metric = "m"
        agg = "avg"
        window = "1m"
        op = "<"
        threshold = 5
        clear_threshold = 6
        annotation = "{{ $labels.zone }}"

        [[rule]]
        name = "worker_dead"
        metric = "m"
        agg = "avg"
        window = "1m"
        op = "=="
        threshold = 5
        clear_threshold = 4

        [builtin]
        worker_dead = "off"
        wroker_dead = false
    "#;

#[test]
fn every_error_is_reported_at_once() {
    let text = MANY_ERRORS;
    let want = [
        r#"rules.toml: rule 2 "cpu-high": key "fro": unknown key (known: name, metric, where, agg, window, by, op, threshold, clear_threshold, for, keep_firing_for, every, severity, labels, annotation, allow_partial)"#,
        r#"rules.toml: rule 2 "cpu-high": key "by": bad label name "bad-label" (use [A-Za-z_][A-Za-z0-9_]*)"#,
        r#"rules.toml: rule 2 "cpu-high": key "where[0]": bad regular expression in "host=~(": "#,
        r#"rules.toml: rule 2 "cpu-high": key "where[1]": bad matcher "nonsense": write NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"#,
        r#"rules.toml: rule 2 "cpu-high": key "agg": unknown aggregation "mean"; use one of avg, min, max, sum, count, last, first"#,
        r#"rules.toml: rule 2 "cpu-high": key "window": must be more than 0s"#,
        r#"rules.toml: rule 2 "cpu-high": key "op": unknown operator "=>" (use >, >=, <, <=, ==, !=)"#,
        r#"rules.toml: rule 2 "cpu-high": key "threshold": expected a number, found string"#,
        r#"rules.toml: rule 2 "cpu-high": key "for": bad duration "5 minutes" (use 30s, 5m, 1h30m)"#,
        r#"rules.toml: rule 2 "cpu-high": key "every": expected a duration string like "30s", found integer"#,
        r#"rules.toml: rule 2 "cpu-high": key "labels.severity": label "severity" is set by sqd and cannot be set here"#,
        r#"rules.toml: rule 2 "cpu-high": key "labels.team": expected a string, found integer"#,
        r#"rules.toml: rule 2 "cpu-high": key "annotation": unknown placeholder "{{ $valeu }}" (use $value, $threshold, $rule or $labels.NAME)"#,
        r#"rules.toml: rule 2 "cpu-high": key "allow_partial": expected a boolean, found string"#,
        r#"rules.toml: rule 3: key "name": missing (required)"#,
        r#"rules.toml: rule 3: key "clear_threshold": clear_threshold 6 is on the wrong side of threshold 5: with op ">" it must be at most the threshold"#,
        r#"rules.toml: rule 4 "ok-rule": key "annotation": placeholder $labels.zone reads a label this alert does not carry (add it to "by" or "labels")"#,
        r#"rules.toml: rule 4 "ok-rule": key "name": duplicate rule name "ok-rule" (first used by rule 1)"#,
        r#"rules.toml: rule 5 "worker_dead": key "clear_threshold": clear_threshold needs op >, >=, < or <= (got "==")"#,
        r#"rules.toml: rule 5 "worker_dead": key "name": "worker_dead" is a built-in rule; rename this rule or turn the built-in off with [builtin] worker_dead = false"#,
        r#"rules.toml: key "builtin.worker_dead": expected a boolean, found string"#,
        r#"rules.toml: key "builtin.wroker_dead": unknown key (known: worker_dead, client_error, client_backlog_old, shard_unanswered)"#,
        r#"rules.toml: key "colour": unknown key (known: rule, builtin)"#,
    ];
    let got = messages(text);
    for (g, w) in got.iter().zip(&want) {
        assert!(g.starts_with(w), "\n got: {g}\nwant: {w}");
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn duplicate_and_builtin_names_are_refused() {
    let rule = |name: &str| {
        format!(
            "[[rule]]\nname = \"{name}\"\nmetric = \"m\"\nagg = \"avg\"\nwindow = \"1m\"\nop = \">\"\nthreshold = 1\n"
        )
    };
    let text = [rule("a"), rule("b"), rule("a"), rule("shard_unanswered")].concat();
    assert_eq!(
        messages(&text),
        [
            r#"rules.toml: rule 3 "a": key "name": duplicate rule name "a" (first used by rule 1)"#,
            r#"rules.toml: rule 4 "shard_unanswered": key "name": "shard_unanswered" is a built-in rule; rename this rule or turn the built-in off with [builtin] shard_unanswered = false"#,
        ]
    );
    // Turning the built-in off frees its name.
    let set = parsed(&format!(
        "{}[builtin]\nshard_unanswered = false\nworker_dead = false\n",
        rule("shard_unanswered")
    ));
    let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["shard_unanswered", "client_error", "client_backlog_old"]
    );
    assert!(matches!(set.rules[0].source, Source::Query(_)));
}

#[test]
fn syntax_errors_name_line_and_column() {
    let got = messages("[[rule]]\nname = \"x\"\nthreshold = = 3\n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("rules.toml: line 3 column "),
        "{}",
        got[0]
    );
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    assert_eq!(
        messages("rule = 3\nbuiltin = []\n"),
        [
            r#"rules.toml: key "rule": expected an array of tables ([[rule]]), found integer"#,
            r#"rules.toml: key "builtin": expected a table, found array"#,
        ]
    );
    assert_eq!(
        messages("rule = [1]\n"),
        [r#"rules.toml: rule 1: expected a table, found integer"#]
    );
    let got = messages(
        "[[rule]]\nname = \"bad name\"\nmetric = \"\"\nwhere = \"a=b\"\nagg = \"avg\"\nwindow = \"1m\"\nop = \">\"\nthreshold = nan\nby = [\"a\", \"a\"]\nlabels = { a = \"x\" }\n",
    );
    assert_eq!(
        got,
        [
            r#"rules.toml: rule 1: key "name": bad rule name "bad name" (use letters, digits, '-', '_' and '.', at most 128)"#,
            r#"rules.toml: rule 1: key "by": label "a" appears twice"#,
            r#"rules.toml: rule 1: key "metric": must not be empty"#,
            r#"rules.toml: rule 1: key "where": expected an array of strings, found string"#,
            r#"rules.toml: rule 1: key "threshold": must be a finite number"#,
        ]
    );
}

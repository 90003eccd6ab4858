//! The rules file (TOML) and the validated [`Rule`]s it yields. A manual walk over the parsed
//! table rather than `deny_unknown_fields`: serde stops at the first error, and users should
//! see every mistake at once, each naming file, rule and key (see [`super::error`]).

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

use crate::stats::partial::Agg;
use crate::stats::query::{Matcher, Selector};

use super::builtin::{self, Builtin};
use super::duration;
use super::error::{Problem, RuleError, RulesErrors};
use super::template::{Template, is_label_name};

/// Evaluation interval when a rule gives no `every`.
pub const DEFAULT_EVERY_MS: i64 = 30_000;
/// Severity when a rule gives none.
pub const DEFAULT_SEVERITY: &str = "warning";
/// Labels sqd sets itself on every alert.
pub const RESERVED_LABELS: [&str; 2] = ["alertname", "severity"];

const RULE_KEYS: [&str; 16] = [
    "name",
    "metric",
    "where",
    "agg",
    "window",
    "by",
    "op",
    "threshold",
    "clear_threshold",
    "for",
    "keep_firing_for",
    "every",
    "severity",
    "labels",
    "annotation",
    "allow_partial",
];

/// A comparison between the series value and a threshold: the same operators as PromQL's
/// filters. NaN never holds for an alert (it never fires and counts as "clear"), see
/// [`Rule::triggers`].
pub use crate::stats::promql::lower::CmpOp as Op;

/// What a rule watches: a query over the shards.
#[derive(Debug, Clone)]
pub struct Query {
    pub selector: Selector,
    pub agg: Agg,
    pub window_ms: i64,
    /// Labels the answer is grouped by; a series of the answer carries exactly these.
    pub by: Vec<String>,
}

/// Where a rule's per-series values come from.
#[derive(Debug, Clone)]
pub enum Source {
    Query(Query),
    /// A rule about sqd itself, fed from the leader's facts (see [`super::builtin`]).
    Builtin(Builtin),
}

/// One validated alert rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub source: Source,
    pub op: Op,
    pub threshold: f64,
    /// Hysteresis: once firing, the alert stays while `value op clear_threshold` holds.
    pub clear_threshold: Option<f64>,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub every_ms: i64,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub annotation: Template,
    pub allow_partial: bool,
}

impl Rule {
    /// The condition that starts an episode (pending, then firing).
    pub fn triggers(&self, value: Option<f64>) -> bool {
        value.is_some_and(|v| !v.is_nan() && self.op.holds(v, self.threshold))
    }

    /// The condition that keeps a firing alert firing: the clear threshold when there is one.
    pub fn still_holds(&self, value: Option<f64>) -> bool {
        let limit = self.clear_threshold.unwrap_or(self.threshold);
        value.is_some_and(|v| !v.is_nan() && self.op.holds(v, limit))
    }
}

/// The rules of one file plus the built-in rules left on.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Collects errors with the file and the current rule filled in.
pub(crate) struct Errors<'a> {
    file: &'a str,
    rule: Option<(usize, Option<String>)>,
    list: Vec<RuleError>,
}

impl Errors<'_> {
    fn push(&mut self, key: Option<&str>, problem: Problem) {
        self.list.push(RuleError {
            file: self.file.to_owned(),
            rule: self.rule.clone(),
            key: key.map(str::to_owned),
            problem,
        });
    }

    fn key(&mut self, key: &str, problem: Problem) {
        self.push(Some(key), problem);
    }
}

/// Parses and validates a rules file. `file` names it in messages; the caller reads it.
pub fn parse(file: &str, contents: &str) -> Result<RuleSet, RulesErrors> {
    let mut errs = Errors {
        file,
        rule: None,
        list: Vec::new(),
    };
    let top: Table = match toml::from_str(contents) {
        Ok(t) => t,
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(contents, s.start));
            let message = e.message().trim().to_owned();
            errs.push(
                None,
                Problem::Syntax {
                    line,
                    column,
                    message,
                },
            );
            return Err(RulesErrors(errs.list));
        }
    };
    let mut rules = (Vec::new(), Vec::new());
    let mut enabled: BTreeSet<Builtin> = Builtin::ALL.into_iter().collect();
    // A fixed order (the parsed table is sorted by key, not in file order): rules in file
    // order, then the built-ins, then unknown top-level keys.
    if let Some(value) = top.get("rule") {
        rules = parse_rules(&mut errs, value);
    }
    if let Some(value) = top.get("builtin") {
        enabled = parse_builtins(&mut errs, value);
    }
    for key in top
        .keys()
        .filter(|k| !["rule", "builtin"].contains(&k.as_str()))
    {
        let known = "rule, builtin".to_owned();
        errs.key(key, Problem::UnknownKey { known });
    }
    check_names(&mut errs, &rules.1, &enabled);
    // Group by rule (stable: each rule's keys keep their order), file-wide ones last.
    errs.list
        .sort_by_key(|e| e.rule.as_ref().map_or(usize::MAX, |(index, _)| *index));
    if !errs.list.is_empty() {
        return Err(RulesErrors(errs.list));
    }
    let mut all = rules.0;
    all.extend(enabled.into_iter().map(builtin::rule));
    Ok(RuleSet { rules: all })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The rules that parsed, and the (index, name) of every rule with a readable name (for the
/// duplicate check, which also covers rules with other errors).
type Parsed = (Vec<Rule>, Vec<(usize, String)>);

fn parse_rules(errs: &mut Errors<'_>, value: &Value) -> Parsed {
    let Value::Array(items) = value else {
        errs.key("rule", wrong("an array of tables ([[rule]])", value));
        return (Vec::new(), Vec::new());
    };
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        errs.rule = Some((i + 1, None));
        match item {
            Value::Table(t) => {
                rules.extend(parse_rule(errs, t));
                if let Some((index, Some(name))) = &errs.rule {
                    names.push((*index, name.clone()));
                }
            }
            other => errs.push(None, wrong("a table", other)),
        }
    }
    errs.rule = None;
    (rules, names)
}

fn parse_builtins(errs: &mut Errors<'_>, value: &Value) -> BTreeSet<Builtin> {
    let mut enabled: BTreeSet<Builtin> = Builtin::ALL.into_iter().collect();
    let Value::Table(t) = value else {
        errs.key("builtin", wrong("a table", value));
        return enabled;
    };
    for (key, v) in t {
        let dotted = format!("builtin.{key}");
        let Some(which) = Builtin::ALL.into_iter().find(|b| b.name() == key) else {
            let known = Builtin::ALL.map(Builtin::name).join(", ");
            errs.key(&dotted, Problem::UnknownKey { known });
            continue;
        };
        match v {
            Value::Boolean(true) => {}
            Value::Boolean(false) => {
                enabled.remove(&which);
            }
            other => errs.key(&dotted, wrong("a boolean", other)),
        }
    }
    enabled
}

/// Duplicate names, and names a built-in rule that is on already uses.
fn check_names(errs: &mut Errors<'_>, names: &[(usize, String)], enabled: &BTreeSet<Builtin>) {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, name) in names {
        errs.rule = Some((*index, Some(name.clone())));
        if let Some(&f) = first.get(name.as_str()) {
            let p = Problem::DuplicateName {
                name: name.clone(),
                first: f,
            };
            errs.key("name", p);
        } else {
            first.insert(name, *index);
        }
        if enabled.iter().any(|b| b.name() == name) {
            let p = Problem::BuiltinNameTaken { name: name.clone() };
            errs.key("name", p);
        }
    }
    errs.rule = None;
}

fn wrong(expected: &'static str, found: &Value) -> Problem {
    Problem::WrongType {
        expected,
        found: found.type_str(),
    }
}

/// Walks one `[[rule]]`; `None` when anything in it is wrong (the errors are in `errs`).
fn parse_rule(errs: &mut Errors<'_>, t: &Table) -> Option<Rule> {
    let before = errs.list.len();
    let name = read_name(errs, t);
    if let Some(n) = &name {
        errs.rule = errs.rule.take().map(|(i, _)| (i, Some(n.clone())));
    }
    for key in t.keys() {
        if !RULE_KEYS.contains(&key.as_str()) {
            let known = RULE_KEYS.join(", ");
            errs.key(key, Problem::UnknownKey { known });
        }
    }
    let by = read_by(errs, t);
    let query = read_query(errs, t, by.clone());
    let cond = read_condition(errs, t);
    let out = read_output(errs, t, by.as_deref());
    if errs.list.len() != before {
        return None;
    }
    let (query, cond, out) = (query?, cond?, out?);
    Some(Rule {
        name: name?,
        source: Source::Query(query),
        op: cond.op,
        threshold: cond.threshold,
        clear_threshold: cond.clear_threshold,
        for_ms: cond.for_ms,
        keep_firing_for_ms: cond.keep_firing_for_ms,
        every_ms: cond.every_ms,
        severity: out.severity,
        labels: out.labels,
        annotation: out.annotation,
        allow_partial: out.allow_partial,
    })
}

fn read_name(errs: &mut Errors<'_>, t: &Table) -> Option<String> {
    let name = req(errs, t, "name", get_str)?;
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errs.key("name", Problem::BadName(name.chars().take(40).collect()));
        return None;
    }
    Some(name.to_owned())
}

fn read_query(errs: &mut Errors<'_>, t: &Table, by: Option<Vec<String>>) -> Option<Query> {
    let metric = req(errs, t, "metric", get_str);
    if metric.is_some_and(str::is_empty) {
        errs.key("metric", Problem::Empty);
    }
    let mut matchers = Some(Vec::new());
    for (i, text) in opt(errs, t, "where", get_str_list)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match Matcher::parse(text) {
            Ok(m) => {
                if let Some(v) = matchers.as_mut() {
                    v.push(m);
                }
            }
            Err(e) => {
                errs.key(&format!("where[{i}]"), e.into());
                matchers = None;
            }
        }
    }
    let agg = req(errs, t, "agg", get_str).and_then(|s| match s.parse::<Agg>() {
        Ok(a) => Some(a),
        Err(e) => {
            errs.key("agg", e.into());
            None
        }
    });
    let window_ms = req(errs, t, "window", get_duration).and_then(|w| positive(errs, "window", w));
    Some(Query {
        selector: Selector {
            metric: metric?.to_owned(),
            matchers: matchers?,
        },
        agg: agg?,
        window_ms: window_ms?,
        by: by?,
    })
}

fn read_by(errs: &mut Errors<'_>, t: &Table) -> Option<Vec<String>> {
    if !t.contains_key("by") {
        return Some(Vec::new());
    }
    let list = opt(errs, t, "by", get_str_list)?;
    let mut ok = true;
    let mut seen = BTreeSet::new();
    for name in &list {
        if !is_label_name(name) {
            errs.key("by", Problem::BadLabelName(name.chars().take(40).collect()));
            ok = false;
        } else if !seen.insert(name.as_str()) {
            errs.key("by", Problem::RepeatedLabel(name.clone()));
            ok = false;
        }
    }
    ok.then_some(list)
}

fn positive(errs: &mut Errors<'_>, key: &str, ms: i64) -> Option<i64> {
    if ms > 0 {
        Some(ms)
    } else {
        errs.key(key, Problem::NotPositive);
        None
    }
}

/// The threshold part of a rule.
struct Condition {
    op: Op,
    threshold: f64,
    clear_threshold: Option<f64>,
    for_ms: i64,
    keep_firing_for_ms: i64,
    every_ms: i64,
}

fn read_condition(errs: &mut Errors<'_>, t: &Table) -> Option<Condition> {
    let op = req(errs, t, "op", get_str).and_then(|s| {
        let op = Op::ALL.into_iter().find(|o| o.as_str() == s);
        if op.is_none() {
            errs.key("op", Problem::BadOp(s.chars().take(20).collect()));
        }
        op
    });
    let threshold = req(errs, t, "threshold", get_number);
    let clear = opt(errs, t, "clear_threshold", get_number);
    if let (Some(op), Some(threshold), Some(clear)) = (op, threshold, clear) {
        check_clear(errs, op, threshold, clear);
    }
    let for_ms = opt(errs, t, "for", get_duration).unwrap_or(0);
    let keep_firing_for_ms = opt(errs, t, "keep_firing_for", get_duration).unwrap_or(0);
    let every_ms = match opt(errs, t, "every", get_duration) {
        Some(e) => positive(errs, "every", e)?,
        None => DEFAULT_EVERY_MS,
    };
    Some(Condition {
        op: op?,
        threshold: threshold?,
        clear_threshold: clear,
        for_ms,
        keep_firing_for_ms,
        every_ms,
    })
}

/// The clear threshold must sit on the "not firing" side: below for `>`/`>=`, above for `<`/`<=`.
fn check_clear(errs: &mut Errors<'_>, op: Op, threshold: f64, clear: f64) {
    let (ok, side) = match op {
        Op::Gt | Op::Ge => (clear <= threshold, "at most"),
        Op::Lt | Op::Le => (clear >= threshold, "at least"),
        Op::Eq | Op::Ne => {
            errs.key("clear_threshold", Problem::ClearNeedsOrder(op.as_str()));
            return;
        }
    };
    if !ok {
        let op = op.as_str();
        let p = Problem::ClearWrongSide {
            op,
            threshold,
            clear,
            side,
        };
        errs.key("clear_threshold", p);
    }
}

/// What a rule's alerts carry.
struct Output {
    severity: String,
    labels: BTreeMap<String, String>,
    annotation: Template,
    allow_partial: bool,
}

fn read_output(errs: &mut Errors<'_>, t: &Table, by: Option<&[String]>) -> Option<Output> {
    let severity = opt(errs, t, "severity", get_str).unwrap_or(DEFAULT_SEVERITY);
    if severity.is_empty() {
        errs.key("severity", Problem::Empty);
    }
    let labels = read_labels(errs, t, by.unwrap_or_default());
    let annotation = opt(errs, t, "annotation", get_str).and_then(|s| match Template::parse(s) {
        Ok(tpl) => Some(tpl),
        Err(e) => {
            errs.key("annotation", e.into());
            None
        }
    });
    // Only check placeholders against labels when `by` itself was readable (no double errors).
    if let (Some(tpl), Some(by), Some(labels)) = (&annotation, by, &labels) {
        for name in tpl.label_names() {
            if !by.iter().any(|b| b == name) && !labels.contains_key(name) {
                errs.key("annotation", Problem::UnknownTemplateLabel(name.to_owned()));
            }
        }
    }
    let allow_partial = opt(errs, t, "allow_partial", get_bool).unwrap_or(false);
    Some(Output {
        severity: severity.to_owned(),
        labels: labels?,
        annotation: annotation.unwrap_or_default(),
        allow_partial,
    })
}

fn read_labels(
    errs: &mut Errors<'_>,
    t: &Table,
    by: &[String],
) -> Option<BTreeMap<String, String>> {
    let Some(value) = t.get("labels") else {
        return Some(BTreeMap::new());
    };
    let Value::Table(table) = value else {
        errs.key("labels", wrong("a table of strings", value));
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, v) in table {
        let key = format!("labels.{name}");
        let problem = if !is_label_name(name) {
            Some(Problem::BadLabelName(name.chars().take(40).collect()))
        } else if RESERVED_LABELS.contains(&name.as_str()) {
            Some(Problem::ReservedLabel(name.clone()))
        } else if by.contains(name) {
            Some(Problem::LabelInBy(name.clone()))
        } else if let Value::String(s) = v {
            out.insert(name.clone(), s.clone());
            None
        } else {
            Some(wrong("a string", v))
        };
        if let Some(p) = problem {
            errs.key(&key, p);
            ok = false;
        }
    }
    ok.then_some(out)
}

/// Reads a key that must be there.
fn req<'t, T>(
    errs: &mut Errors<'_>,
    t: &'t Table,
    key: &str,
    get: impl Fn(&'t Value) -> Result<T, Problem>,
) -> Option<T> {
    match t.get(key) {
        None => {
            errs.key(key, Problem::Missing);
            None
        }
        Some(v) => get(v).map_err(|p| errs.key(key, p)).ok(),
    }
}

/// Reads a key that may be absent (`None` then, as after an error: callers default it).
fn opt<'t, T>(
    errs: &mut Errors<'_>,
    t: &'t Table,
    key: &str,
    get: impl Fn(&'t Value) -> Result<T, Problem>,
) -> Option<T> {
    let v = t.get(key)?;
    get(v).map_err(|p| errs.key(key, p)).ok()
}

fn get_str(v: &Value) -> Result<&str, Problem> {
    v.as_str().ok_or_else(|| wrong("a string", v))
}

fn get_bool(v: &Value) -> Result<bool, Problem> {
    v.as_bool().ok_or_else(|| wrong("a boolean", v))
}

/// Integers are accepted where numbers are (users write `threshold = 90`).
fn get_number(v: &Value) -> Result<f64, Problem> {
    let n = match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        other => return Err(wrong("a number", other)),
    };
    if n.is_finite() {
        Ok(n)
    } else {
        Err(Problem::NotFinite)
    }
}

fn get_duration(v: &Value) -> Result<i64, Problem> {
    let s = v
        .as_str()
        .ok_or_else(|| wrong("a duration string like \"30s\"", v))?;
    duration::parse_ms(s).ok_or_else(|| Problem::BadDuration(s.chars().take(40).collect()))
}

fn get_str_list(v: &Value) -> Result<Vec<String>, Problem> {
    let Value::Array(items) = v else {
        return Err(wrong("an array of strings", v));
    };
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong("an array of strings", i))
        })
        .collect()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;

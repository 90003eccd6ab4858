//! Load errors of the rules file: one [`RuleError`] per problem, each naming the file, the rule
//! (1-based index and name) and the key, gathered into [`RulesErrors`] so a user fixes every
//! mistake in one pass.

use std::fmt;

use crate::stats::partial::UnknownAgg;
use crate::stats::query::QueryError;

use super::template::TemplateError;

/// What is wrong with one key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("line {line} column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("unknown key (known: {known})")]
    UnknownKey { known: String },
    #[error("missing (required)")]
    Missing,
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("bad duration {0:?} (use 30s, 5m, 1h30m)")]
    BadDuration(String),
    #[error("must be more than 0s")]
    NotPositive,
    #[error("must be a finite number")]
    NotFinite,
    #[error("must not be empty")]
    Empty,
    #[error("{0}")]
    BadQuery(#[from] QueryError),
    #[error("{0}")]
    BadAgg(#[from] UnknownAgg),
    #[error("unknown operator {0:?} (use >, >=, <, <=, ==, !=)")]
    BadOp(String),
    #[error("bad rule name {0:?} (use letters, digits, '-', '_' and '.', at most 128)")]
    BadName(String),
    #[error("duplicate rule name {name:?} (first used by rule {first})")]
    DuplicateName { name: String, first: usize },
    #[error(
        "{name:?} is a built-in rule; rename this rule or turn the built-in off with [builtin] {name} = false"
    )]
    BuiltinNameTaken { name: String },
    #[error(
        "clear_threshold {clear} is on the wrong side of threshold {threshold}: with op \"{op}\" it must be {side} the threshold"
    )]
    ClearWrongSide {
        op: &'static str,
        threshold: f64,
        clear: f64,
        side: &'static str,
    },
    #[error("clear_threshold needs op >, >=, < or <= (got \"{0}\")")]
    ClearNeedsOrder(&'static str),
    #[error("{0}")]
    BadTemplate(#[from] TemplateError),
    #[error(
        "placeholder $labels.{0} reads a label this alert does not carry (add it to \"by\" or \"labels\")"
    )]
    UnknownTemplateLabel(String),
    #[error("bad label name {0:?} (use [A-Za-z_][A-Za-z0-9_]*)")]
    BadLabelName(String),
    #[error("label {0:?} is set by sqd and cannot be set here")]
    ReservedLabel(String),
    #[error("label {0:?} is also a \"by\" label: the series value would be overwritten")]
    LabelInBy(String),
    #[error("label {0:?} appears twice")]
    RepeatedLabel(String),
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: String,
    /// 1-based index of the `[[rule]]` and its name when it has a usable one.
    pub rule: Option<(usize, Option<String>)>,
    /// The key, dotted below the rule (`labels.team`) or at the top (`builtin.worker_dead`).
    pub key: Option<String>,
    pub problem: Problem,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        match &self.rule {
            Some((index, Some(name))) => write!(f, "rule {index} {name:?}: ")?,
            Some((index, None)) => write!(f, "rule {index}: ")?,
            None => {}
        }
        if let Some(key) = &self.key {
            write!(f, "key {key:?}: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for RuleError {}

/// Every problem found in one rules file — by rule in file order (each rule's keys in the
/// documented order), then `[builtin]` and unknown top-level keys; one per line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", join(.0))]
pub struct RulesErrors(pub Vec<RuleError>);

fn join(errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

//! sqd's PromQL subset: a pure planner and evaluator over mergeable partials (M2).
//!
//! A query string plus `(start, end, step)` becomes a [`Plan`]: one [`Selector`] and one shard
//! [`Range`] that the leader asks of every shard, and an [`Eval`] that turns the merged
//! [`SeriesPartials`] into a [`Matrix`]. No I/O.
//!
//! - [`lower`]: promql-parser's AST → the supported subset ([`lower::Node`]), or a typed
//!   [`PlanError::Unsupported`] naming the construct.
//! - [`plan`]: the step grid, the window per step and the shard buckets whose unions are
//!   exactly those windows.
//! - [`window`]: one window's value from its buckets (`*_over_time`, instant selector,
//!   `rate`/`increase` with Prometheus's extrapolation).
//! - [`eval`]: the expression tree over all steps (aggregations, comparison filters, labels).
//!
//! Semantics follow Prometheus 3: windows and the lookback are left-open `(t - d, t]`; a range
//! query evaluates at every `t = start + i * step <= end`. The differences from Prometheus are
//! listed in [`window`] (counter resets inside one shard bucket) and [`eval`] (no staleness
//! markers).
//!
//! [`Selector`]: crate::stats::query::Selector
//! [`Range`]: crate::stats::query::Range
//! [`SeriesPartials`]: crate::stats::query::SeriesPartials

pub mod eval;
pub mod lower;
pub mod plan;
pub mod window;

#[cfg(test)]
pub(crate) mod reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_props;

pub use eval::{Eval, EvalError, ResultKind};
pub use plan::{DEFAULT_LOOKBACK_MS, Fetch, MAX_SHARD_BUCKETS, Plan, PlanError, QueryTimes};

use crate::stats::query::Labels;

/// The name of the label that carries the metric name in results.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// One output series: its labels sorted by name (with `__name__` where Prometheus keeps it) and
/// its points `(t_ms, value)` in time order; only steps with a value are present.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// A query's result: series sorted by labels.
pub type Matrix = Vec<Series>;

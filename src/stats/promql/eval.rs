//! Evaluation of a planned query over the merged per-bucket partials, step by step.
//!
//! Each series of the merge yields one row of optional values, one per step; aggregations
//! group rows per step, comparison filters drop values; rows without any value are dropped.
//! Labels follow Prometheus: an instant selector and `last_over_time` keep `__name__`, other
//! functions drop it; `by (l…)` keeps only the listed labels (`__name__` too if listed),
//! `without (l…)` drops the listed labels and `__name__`; comparison filters keep labels and
//! values. Aggregations: `sum`, `avg` (`sum / count`; Prometheus uses a compensated
//! incremental mean, equal up to rounding), `min`/`max` (NaN only if every value is NaN),
//! `count`.
//!
//! Difference from Prometheus: sqd has no staleness markers, so an instant selector shows a
//! series until the lookback delta has passed since its last sample, where Prometheus stops at
//! a staleness marker written when a scrape target disappears.

use std::collections::BTreeMap;

use super::lower::{AggOp, Grouping, Leaf, Node, RangeFn};
use super::window;
use super::{METRIC_NAME_LABEL, Matrix, Series};
use crate::stats::partial::Partial;
use crate::stats::query::{Labels, SeriesPartials};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(
        "a shard answered a bucket at {bucket_ms} ms, not on the planned grid [{from_ms}, {to_ms}) by {width_ms} ms"
    )]
    OffGrid {
        bucket_ms: i64,
        from_ms: i64,
        to_ms: i64,
        width_ms: i64,
    },
}

/// What an instant query returns (a range query always returns a matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    Scalar,
    Vector,
}

/// The evaluation steps `start + i * step`, `i < count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub start_ms: i64,
    pub step_ms: i64,
    pub count: i64,
}

impl Steps {
    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.count).map(|i| self.start_ms + i * self.step_ms)
    }
}

/// The shard buckets the plan asked for: `[from, to)` by `width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub from_ms: i64,
    pub to_ms: i64,
    pub width_ms: i64,
    /// Each step reads the buckets starting in `[t - reach + 1, t]`.
    pub reach_ms: i64,
    /// The window `(t - window, t]` (the range, or the lookback delta).
    pub window_ms: i64,
}

/// The part of a plan run after the merge.
#[derive(Debug, Clone)]
pub struct Eval {
    node: Node,
    /// The selector's metric name, for the `__name__` label.
    metric: String,
    steps: Steps,
    grid: Option<Grid>,
}

/// One series during evaluation: labels (with `__name__` while kept) and a value per step.
struct Row {
    labels: Labels,
    values: Vec<Option<f64>>,
}

impl Eval {
    pub(super) fn new(node: Node, metric: String, steps: Steps, grid: Option<Grid>) -> Self {
        Eval {
            node,
            metric,
            steps,
            grid,
        }
    }

    /// The expression tree being evaluated.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `Scalar` for a bare number, else `Vector`.
    pub fn result_kind(&self) -> ResultKind {
        match self.node {
            Node::Number(_) => ResultKind::Scalar,
            _ => ResultKind::Vector,
        }
    }

    /// Evaluates the query over the merged partials of every series the selector matched
    /// (for a bare number, `merged` is ignored).
    pub fn evaluate(&self, merged: &[SeriesPartials]) -> Result<Matrix, EvalError> {
        if let Some(grid) = self.grid {
            check_grid(&grid, merged)?;
        }
        let rows = self.eval_node(&self.node, merged);
        let times: Vec<i64> = self.steps.times().collect();
        let mut out: Matrix = rows
            .into_iter()
            .filter_map(|row| {
                let points: Vec<(i64, f64)> = times
                    .iter()
                    .zip(&row.values)
                    .filter_map(|(t, v)| v.map(|v| (*t, v)))
                    .collect();
                (!points.is_empty()).then_some(Series {
                    labels: row.labels,
                    points,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    fn eval_node(&self, node: &Node, merged: &[SeriesPartials]) -> Vec<Row> {
        let count = usize::try_from(self.steps.count).unwrap_or(0);
        match node {
            Node::Number(v) => vec![Row {
                labels: Vec::new(),
                values: vec![Some(*v); count],
            }],
            Node::Leaf(leaf) => merged.iter().map(|s| self.leaf_row(*leaf, s)).collect(),
            Node::Aggregate {
                op,
                grouping,
                inner,
            } => aggregate(*op, grouping, self.eval_node(inner, merged), count),
            Node::Filter { inner, op, scalar } => {
                let mut rows = self.eval_node(inner, merged);
                for row in &mut rows {
                    for v in &mut row.values {
                        *v = v.filter(|x| op.holds(*x, *scalar));
                    }
                }
                rows
            }
        }
    }

    fn leaf_row(&self, leaf: Leaf, series: &SeriesPartials) -> Row {
        // A leaf exists only with a fetch, which comes with its grid.
        let (reach, window) = self.grid.map_or((1, 1), |g| (g.reach_ms, g.window_ms));
        let keeps_name = match leaf {
            Leaf::Instant => true,
            Leaf::Range { func, .. } => func.keeps_metric_name(),
        };
        let mut labels = series.labels.clone();
        if keeps_name {
            with_metric_name(&mut labels, &self.metric);
        }
        let values = self
            .steps
            .times()
            .map(|t| {
                // Buckets are aligned: those starting in [t - reach + 1, t] end by t + 1, and
                // tile (t - d, t] when reach = d.
                let buckets = series.buckets.range(t - reach + 1..=t).map(|(_, p)| p);
                window_value(leaf, buckets, t, window)
            })
            .collect();
        Row { labels, values }
    }
}

fn window_value<'a>(
    leaf: Leaf,
    buckets: impl DoubleEndedIterator<Item = &'a Partial>,
    t_ms: i64,
    window_ms: i64,
) -> Option<f64> {
    match leaf {
        Leaf::Instant
        | Leaf::Range {
            func: RangeFn::LastOverTime,
            ..
        } => window::newest(buckets, t_ms, window_ms),
        Leaf::Range { func, range_ms } => window::range_fn(func, buckets, t_ms, range_ms),
    }
}

fn with_metric_name(labels: &mut Labels, metric: &str) {
    let pair = (METRIC_NAME_LABEL.to_owned(), metric.to_owned());
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(METRIC_NAME_LABEL)) {
        Ok(at) => labels[at] = pair,
        Err(at) => labels.insert(at, pair),
    }
}

fn check_grid(grid: &Grid, merged: &[SeriesPartials]) -> Result<(), EvalError> {
    let off = merged.iter().flat_map(|s| s.buckets.keys()).find(|b| {
        **b < grid.from_ms || **b >= grid.to_ms || (**b - grid.from_ms) % grid.width_ms != 0
    });
    match off {
        Some(b) => Err(EvalError::OffGrid {
            bucket_ms: *b,
            from_ms: grid.from_ms,
            to_ms: grid.to_ms,
            width_ms: grid.width_ms,
        }),
        None => Ok(()),
    }
}

/// The labels a row contributes to its group.
pub fn group_labels(labels: &Labels, grouping: &Grouping) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| match grouping {
            Grouping::By(keep) => keep.contains(k),
            Grouping::Without(drop) => k != METRIC_NAME_LABEL && !drop.contains(k),
        })
        .cloned()
        .collect()
}

fn aggregate(op: AggOp, grouping: &Grouping, rows: Vec<Row>, count: usize) -> Vec<Row> {
    let mut groups: BTreeMap<Labels, Vec<Row>> = BTreeMap::new();
    for row in rows {
        groups
            .entry(group_labels(&row.labels, grouping))
            .or_default()
            .push(row);
    }
    groups
        .into_iter()
        .map(|(labels, members)| {
            let values = (0..count)
                .map(|i| combine(op, members.iter().filter_map(|r| r.values[i])))
                .collect();
            Row { labels, values }
        })
        .collect()
}

/// One aggregation over the values present at one step; `None` when there are none.
pub fn combine(op: AggOp, mut values: impl Iterator<Item = f64>) -> Option<f64> {
    let first = values.next()?;
    let (mut acc, mut n) = (first, 1u64);
    for v in values {
        n += 1;
        acc = match op {
            AggOp::Sum | AggOp::Avg => acc + v,
            // Prometheus replaces a NaN by any number, so NaN wins only when alone.
            AggOp::Min if v < acc || acc.is_nan() => v,
            AggOp::Max if v > acc || acc.is_nan() => v,
            AggOp::Min | AggOp::Max | AggOp::Count => acc,
        };
    }
    Some(match op {
        AggOp::Avg => acc / n as f64,
        AggOp::Count => n as f64,
        _ => acc,
    })
}

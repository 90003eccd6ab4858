//! Lowers promql-parser's AST into the subset sqd evaluates, or names what is not supported.
//!
//! The subset: one vector selector with a metric name and label matchers (`=`, `!=`, `=~`,
//! `!~`), used as an instant vector or inside one of `avg|min|max|sum|count|last_over_time`,
//! `rate`, `increase`; aggregations `sum|avg|min|max|count` with `by`/`without`; comparison
//! filters against a number (`>`, `>=`, `<`, `<=`, `==`, `!=`, no `bool`); number literals and
//! arithmetic between numbers (folded: Grafana's health check asks `1+1`).
//! Everything else is [`PlanError::Unsupported`] with the construct's name, so the HTTP layer
//! can answer 422 `bad_data` saying exactly what to remove.
//!
//! Because vector/vector binary operations are not supported, a query holds at most one
//! selector; the tree above it is a chain of aggregations and filters.

use std::time::Duration;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::token::{
    self, T_ADD, T_AVG, T_COUNT, T_DIV, T_EQLC, T_GTE, T_GTR, T_LSS, T_LTE, T_MAX, T_MIN, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, T_SUM,
};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector, VectorSelector,
};

use super::METRIC_NAME_LABEL;
use super::plan::PlanError;
use crate::stats::query::{MatchOp, Matcher, Selector};

/// A function over the samples of a range window `(t - d, t]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFn {
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    Rate,
    Increase,
}

impl RangeFn {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "avg_over_time" => RangeFn::AvgOverTime,
            "min_over_time" => RangeFn::MinOverTime,
            "max_over_time" => RangeFn::MaxOverTime,
            "sum_over_time" => RangeFn::SumOverTime,
            "count_over_time" => RangeFn::CountOverTime,
            "last_over_time" => RangeFn::LastOverTime,
            "rate" => RangeFn::Rate,
            "increase" => RangeFn::Increase,
            _ => return None,
        })
    }

    /// Prometheus drops the metric name from every function result except `last_over_time`.
    pub fn keeps_metric_name(self) -> bool {
        self == RangeFn::LastOverTime
    }

    /// Functions whose accuracy depends on seeing counter resets between buckets.
    pub fn is_counter(self) -> bool {
        matches!(self, RangeFn::Rate | RangeFn::Increase)
    }
}

/// Where the one selector enters the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// The selector as an instant vector: the last sample within the lookback delta.
    Instant,
    /// A function over the window `(t - range_ms, t]`.
    Range { func: RangeFn, range_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

/// `by (labels)` keeps only the listed labels; `without (labels)` drops them and `__name__`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

/// A comparison, always with the vector on the left (`90 < x` is lowered to `x > 90`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    pub const ALL: [CmpOp; 6] = [
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Eq,
        CmpOp::Ne,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    /// `value op scalar` as PromQL's filter computes it (`NaN != x` holds).
    pub fn holds(self, value: f64, scalar: f64) -> bool {
        match self {
            CmpOp::Gt => value > scalar,
            CmpOp::Ge => value >= scalar,
            CmpOp::Lt => value < scalar,
            CmpOp::Le => value <= scalar,
            CmpOp::Eq => value == scalar,
            CmpOp::Ne => value != scalar,
        }
    }

    /// The same comparison with its operands swapped.
    fn flipped(self) -> Self {
        match self {
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            other => other,
        }
    }
}

/// The supported expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Number(f64),
    Leaf(Leaf),
    Aggregate {
        op: AggOp,
        grouping: Grouping,
        inner: Box<Node>,
    },
    /// Keeps the samples of `inner` for which `value op scalar` holds, values unchanged.
    Filter {
        inner: Box<Node>,
        op: CmpOp,
        scalar: f64,
    },
}

impl Node {
    /// The leaf of the tree, if it has a selector.
    pub fn leaf(&self) -> Option<Leaf> {
        match self {
            Node::Number(_) => None,
            Node::Leaf(leaf) => Some(*leaf),
            Node::Aggregate { inner, .. } | Node::Filter { inner, .. } => inner.leaf(),
        }
    }
}

/// A parsed query: its tree and the selector its leaf reads (none for a bare number).
#[derive(Debug, Clone)]
pub struct Lowered {
    pub node: Node,
    pub selector: Option<Selector>,
}

fn unsupported(construct: impl Into<String>) -> PlanError {
    PlanError::Unsupported {
        construct: construct.into(),
    }
}

/// Parses `query` and lowers it into the supported subset.
pub fn lower(query: &str) -> Result<Lowered, PlanError> {
    let expr = promql_parser::parser::parse(query).map_err(PlanError::Parse)?;
    let mut selector = None;
    let node = lower_expr(&expr, &mut selector)?;
    Ok(Lowered { node, selector })
}

fn lower_expr(expr: &Expr, selector: &mut Option<Selector>) -> Result<Node, PlanError> {
    match expr {
        Expr::NumberLiteral(n) => Ok(Node::Number(n.val)),
        Expr::Paren(p) => lower_expr(&p.expr, selector),
        Expr::Unary(u) => match lower_expr(&u.expr, selector)? {
            // Unary minus is the only unary operator PromQL has.
            Node::Number(v) => Ok(Node::Number(-v)),
            _ => Err(unsupported("unary minus on a vector")),
        },
        Expr::VectorSelector(vs) => {
            *selector = Some(lower_selector(vs)?);
            Ok(Node::Leaf(Leaf::Instant))
        }
        Expr::MatrixSelector(_) => Err(unsupported(
            "range vector selector outside rate/increase/*_over_time",
        )),
        Expr::Call(call) => lower_call(call, selector),
        Expr::Aggregate(agg) => lower_aggregate(agg, selector),
        Expr::Binary(bin) => lower_binary(bin, selector),
        Expr::Subquery(_) => Err(unsupported("subquery")),
        Expr::StringLiteral(_) => Err(unsupported("string literal")),
        Expr::Extension(_) => Err(unsupported("extension expression")),
    }
}

fn lower_selector(vs: &VectorSelector) -> Result<Selector, PlanError> {
    if vs.offset.is_some() {
        return Err(unsupported("offset modifier"));
    }
    if vs.at.is_some() {
        return Err(unsupported("@ modifier"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` between label matchers"));
    }
    let mut metric = vs.name.clone();
    let mut matchers = Vec::new();
    for m in &vs.matchers.matchers {
        let op = match &m.op {
            PMatchOp::Equal => MatchOp::Eq,
            PMatchOp::NotEqual => MatchOp::Ne,
            PMatchOp::Re(_) => MatchOp::Re,
            PMatchOp::NotRe(_) => MatchOp::NotRe,
        };
        if m.name == METRIC_NAME_LABEL {
            // A shard answers for one metric name, so the name must be one `=` value.
            match (op, &metric) {
                (MatchOp::Eq, None) => metric = Some(m.value.clone()),
                (MatchOp::Eq, Some(name)) if *name == m.value => {}
                (MatchOp::Eq, Some(_)) => {
                    return Err(unsupported("two different metric names in one selector"));
                }
                _ => return Err(unsupported(format!("__name__{} matcher", op.as_str()))),
            }
            continue;
        }
        matchers.push(Matcher::new(&m.name, op, &m.value)?);
    }
    let metric = metric.ok_or_else(|| unsupported("selector without a metric name"))?;
    Ok(Selector { metric, matchers })
}

fn duration_ms(d: &Duration) -> Result<i64, PlanError> {
    i64::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| PlanError::BadRangeDuration(format!("{d:?}")))
}

fn lower_call(call: &Call, selector: &mut Option<Selector>) -> Result<Node, PlanError> {
    let name = call.func.name;
    let func = RangeFn::from_name(name).ok_or_else(|| unsupported(format!("function {name}")))?;
    let [arg] = call.args.args.as_slice() else {
        return Err(unsupported(format!("{name} with other than one argument")));
    };
    let mut arg: &Expr = arg;
    while let Expr::Paren(p) = arg {
        arg = &p.expr;
    }
    let ms: &MatrixSelector = match arg {
        Expr::MatrixSelector(ms) => ms,
        Expr::Subquery(_) => return Err(unsupported("subquery")),
        _ => {
            return Err(unsupported(format!(
                "{name} over other than a range selector"
            )));
        }
    };
    *selector = Some(lower_selector(&ms.vs)?);
    Ok(Node::Leaf(Leaf::Range {
        func,
        range_ms: duration_ms(&ms.range)?,
    }))
}

fn lower_aggregate(
    agg: &AggregateExpr,
    selector: &mut Option<Selector>,
) -> Result<Node, PlanError> {
    let op = match agg.op.id() {
        T_SUM => AggOp::Sum,
        T_AVG => AggOp::Avg,
        T_MIN => AggOp::Min,
        T_MAX => AggOp::Max,
        T_COUNT => AggOp::Count,
        _ => return Err(unsupported(format!("aggregation {}", agg.op))),
    };
    if agg.param.is_some() {
        return Err(unsupported(format!("parameter of aggregation {}", agg.op)));
    }
    let grouping = match &agg.modifier {
        None => Grouping::By(Vec::new()),
        Some(LabelModifier::Include(l)) => Grouping::By(l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => Grouping::Without(l.labels.clone()),
    };
    let inner = lower_expr(&agg.expr, selector)?;
    if matches!(inner, Node::Number(_)) {
        return Err(unsupported(format!("aggregation {} over a number", agg.op)));
    }
    Ok(Node::Aggregate {
        op,
        grouping,
        inner: Box::new(inner),
    })
}

fn cmp_op(op: token::TokenType) -> Option<CmpOp> {
    Some(match op.id() {
        T_GTR => CmpOp::Gt,
        T_GTE => CmpOp::Ge,
        T_LSS => CmpOp::Lt,
        T_LTE => CmpOp::Le,
        T_EQLC => CmpOp::Eq,
        T_NEQ => CmpOp::Ne,
        _ => return None,
    })
}

/// Arithmetic between two numbers, as Prometheus computes it on scalars.
fn fold_numbers(op: token::TokenType, a: f64, b: f64) -> Option<f64> {
    Some(match op.id() {
        T_ADD => a + b,
        T_SUB => a - b,
        T_MUL => a * b,
        T_DIV => a / b,
        // Go's math.Mod and Rust's `%` both take the dividend's sign.
        T_MOD => a % b,
        T_POW => a.powf(b),
        _ => return None,
    })
}

fn lower_binary(bin: &BinaryExpr, selector: &mut Option<Selector>) -> Result<Node, PlanError> {
    let Some(op) = cmp_op(bin.op) else {
        let sides = (
            lower_expr(&bin.lhs, selector),
            lower_expr(&bin.rhs, selector),
        );
        if let (Ok(Node::Number(a)), Ok(Node::Number(b))) = sides
            && let Some(v) = fold_numbers(bin.op, a, b)
        {
            return Ok(Node::Number(v));
        }
        let kind = if bin.op.is_set_operator() {
            "set operator"
        } else if bin.op.id() == T_SUB || bin.op.is_operator() {
            "arithmetic operator"
        } else {
            "operator"
        };
        return Err(unsupported(format!("{kind} {}", bin.op)));
    };
    if bin.modifier.as_ref().is_some_and(|m| m.return_bool) {
        return Err(unsupported(format!("bool modifier on {}", bin.op)));
    }
    let lhs = lower_expr(&bin.lhs, selector)?;
    let rhs = lower_expr(&bin.rhs, selector)?;
    match (lhs, rhs) {
        (Node::Number(_), Node::Number(_)) => Err(unsupported(format!(
            "comparison {} between two numbers",
            bin.op
        ))),
        (inner, Node::Number(scalar)) => Ok(Node::Filter {
            inner: Box::new(inner),
            op,
            scalar,
        }),
        (Node::Number(scalar), inner) => Ok(Node::Filter {
            inner: Box::new(inner),
            op: op.flipped(),
            scalar,
        }),
        _ => Err(unsupported(format!(
            "comparison {} between two vectors",
            bin.op
        ))),
    }
}

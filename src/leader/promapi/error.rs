//! The errors of the Prometheus HTTP API: Prometheus's `errorType`s and HTTP statuses, and the
//! mapping from sqd's planner, evaluator and cluster errors onto them. Pure.

use crate::stats::cluster::ClusterError;
use crate::stats::promql::{EvalError, PlanError};

/// Prometheus's `errorType` values that sqd answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    BadData,
    Internal,
    Unavailable,
    NotFound,
}

impl ErrorType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
            ErrorType::NotFound => "not_found",
        }
    }
}

/// An error answer: `{"status":"error","errorType":…,"error":…}` with `status` as HTTP code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub kind: ErrorType,
    pub status: u16,
    pub message: String,
}

impl ApiError {
    /// 400 `bad_data`: the request is malformed.
    pub(crate) fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorType::BadData,
            status: 400,
            message: message.into(),
        }
    }

    /// 400 `bad_data` naming the parameter, in Prometheus's words.
    pub(crate) fn bad_param(name: &str, why: impl std::fmt::Display) -> Self {
        ApiError::bad_data(format!("invalid parameter {name:?}: {why}"))
    }

    /// 422 `bad_data`: well-formed PromQL outside sqd's subset.
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorType::BadData,
            status: 422,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(path: &str) -> Self {
        ApiError {
            kind: ErrorType::NotFound,
            status: 404,
            message: format!(
                "{path} is not served: sqd answers /api/v1/query, query_range, series, labels, label/<name>/values and status/buildinfo"
            ),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        match &e {
            PlanError::Unsupported { .. } => ApiError::unsupported(e.to_string()),
            PlanError::Parse(_) => ApiError::bad_param("query", e),
            // Prometheus's own text, as its clients may match on it.
            PlanError::Query(q) => ApiError::bad_data(q.to_string()),
            _ => ApiError::bad_data(e.to_string()),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::BadQuery(why) => ApiError::bad_data(why),
            ClusterError::Unavailable(_) => ApiError {
                kind: ErrorType::Unavailable,
                status: 503,
                message: format!("{e}; retry when the leader is up"),
            },
        }
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        // A shard answered outside the plan's grid: a bug (or a version skew) in sqd, not in
        // the request.
        ApiError {
            kind: ErrorType::Internal,
            status: 500,
            message: format!(
                "{e}; this is a bug in sqd, or a worker runs another version: check `sqdctl status`"
            ),
        }
    }
}
